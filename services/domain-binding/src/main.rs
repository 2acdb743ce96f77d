#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::platform::run_main(domain_binding::SERVICE, |c| domain_binding::start(c, true))
        .await
}
