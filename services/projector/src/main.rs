// A rebuild spent about 45% of the projector's time in glibc's malloc and
// free (perf, docs/benchmarks.md): folding and decoding allocate and drop
// many small values per event.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::platform::run_main(projector::SERVICE, projector::schema(), |c| {
        projector::start(c, true)
    })
    .await
}
