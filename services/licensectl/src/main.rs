//! licensectl — the operators' and auditors' command line.
//!
//! `licensectl verify --database-url URL [--aggregate-type T --aggregate-id ID]`
//! re-hashes an aggregate's stored events (or every aggregate's) and prints
//! one JSON report per aggregate; exits 1 when any chain is broken.

use std::process::ExitCode;

use anyhow::{bail, Context};
use sqlx::PgPool;

const USAGE: &str =
    "usage: licensectl verify --database-url URL [--aggregate-type TYPE --aggregate-id ID]";

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("licensectl: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Vec<String>) -> anyhow::Result<bool> {
    match args.first().map(String::as_str) {
        Some("verify") => {}
        _ => bail!(USAGE),
    }
    let url = flag(&args, "--database-url")
        .or_else(|| std::env::var("LICENSING_DATABASE_URL").ok())
        .context(USAGE)?;
    let pool = PgPool::connect(&url)
        .await
        .context("connecting to the event store")?;
    let targets: Vec<(String, String)> = match (
        flag(&args, "--aggregate-type"),
        flag(&args, "--aggregate-id"),
    ) {
        (Some(t), Some(id)) => vec![(t, id)],
        (None, None) => {
            sqlx::query_as("SELECT DISTINCT aggregate_type, aggregate_id FROM events ORDER BY 1, 2")
                .fetch_all(&pool)
                .await?
        }
        _ => bail!(USAGE),
    };
    let mut intact = true;
    for (t, id) in targets {
        let report = eventstore::chain::verify(&pool, &t, &id).await?;
        intact &= report.is_intact();
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(intact)
}
