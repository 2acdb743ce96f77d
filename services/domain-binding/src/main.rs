use domain_binding::{start, Options, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::platform::run_main(SERVICE, |c| start(c, Options::default())).await
}
