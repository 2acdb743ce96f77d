//! What hostile callers and Kafka's routine answers leave in a service's
//! log: nothing at ERROR. Run as a process, so the log is the binary's own
//! (JSON lines, its real subscriber and filter).

use std::time::Duration;

use e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests actix-http's parser refuses, each on its own connection.
const MALFORMED: [&[u8]; 3] = [
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n",
];

/// Sends every malformed request; each must be answered 400.
async fn send_malformed(port: u16) {
    for raw in MALFORMED {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(raw).await.expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{:?}: {answer}",
            String::from_utf8_lossy(raw)
        );
    }
}

/// Waits until the service's relay holds its lock: it has read its
/// checkpoint topic to the end (a partition EOF) before.
async fn relay_active(url: &str) -> bool {
    wait_until(Duration::from_secs(30), || async {
        let Ok(res) = reqwest::get(format!("{url}/metrics")).await else {
            return false;
        };
        res.text().await.is_ok_and(|t| {
            t.lines()
                .any(|l| l.starts_with("relay_active{") && l.ends_with(" 1"))
        })
    })
    .await
}

fn log_of(prefix: &str, port: u16) -> String {
    std::fs::read_to_string(
        std::env::temp_dir().join(format!("{prefix}-domain-binding-{port}.log")),
    )
    .expect("service log")
}

fn lines_at<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    let field = format!("\"level\":\"{level}\"");
    log.lines().filter(|l| l.contains(&field)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_and_partition_ends_log_nothing_at_error() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let db = infra.fresh_db("logs").await;

    // As deployed (RUST_LOG at info).
    let port = free_port();
    let mut service = ServiceProcess::spawn("domain-binding", &infra, &db, &prefix, port).await;
    assert!(relay_active(&service.url).await, "the relay started");
    send_malformed(port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    service.kill();
    let log = log_of(&prefix, port);
    assert!(
        log.contains("\"started\""),
        "the log is the service's: {log}"
    );
    let errors = lines_at(&log, "ERROR");
    assert!(errors.is_empty(), "{errors:#?}");

    // With RUST_LOG=debug the same run shows both, as debugging output:
    // proof that the requests and the partition end did happen above.
    let port = free_port();
    let mut service = ServiceProcess::spawn_with(
        "domain-binding",
        &infra,
        &db,
        &prefix,
        port,
        &[("RUST_LOG", "debug")],
    )
    .await;
    assert!(relay_active(&service.url).await, "the relay started again");
    send_malformed(port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    service.kill();
    let log = log_of(&prefix, port);
    let debug = lines_at(&log, "DEBUG");
    assert!(
        debug.iter().any(|l| l.contains("end of partition")),
        "no partition end was read"
    );
    let shown = lines_at(&log, "ERROR");
    assert_eq!(
        shown.iter().filter(|l| l.contains("stream error")).count(),
        MALFORMED.len(),
        "{shown:#?}"
    );
    assert!(
        !shown.iter().any(|l| l.contains("Partition EOF")),
        "{shown:#?}"
    );
}
