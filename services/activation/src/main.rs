#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::platform::run_main(activation::SERVICE, |c| activation::start(c, true)).await
}
