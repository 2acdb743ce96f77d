use issuance::{schema, start, Options, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::platform::run_main(SERVICE, schema(), |c| start(c, Options::default())).await
}
