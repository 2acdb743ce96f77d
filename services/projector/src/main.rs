#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::platform::run_main(projector::SERVICE, projector::schema(), |c| {
        projector::start(c, true)
    })
    .await
}
