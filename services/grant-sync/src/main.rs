#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::platform::run_main(grant_sync::SERVICE, grant_sync::schema(), |c| {
        grant_sync::start(c, grant_sync::Options::default())
    })
    .await
}
