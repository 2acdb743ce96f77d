//! `licensectl verify`: re-hashes an aggregate's stored events (or every
//! aggregate's) and reports each chain; exits 1 when any is broken. With
//! checkpoints (`--checkpoints FILE` or `--kafka-config FILE`, `--context`,
//! `--jwks`) it also checks every stored event against the service's
//! signed checkpoints (see `checkpoints`).

use std::path::PathBuf;

use anyhow::Context;
use eventstore::ChainReport;
use sqlx::PgPool;

use crate::checkpoints::{self, CheckpointReport};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service's event store.
    #[arg(long, env = "LICENSING_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Only this aggregate's chain (with --aggregate-id); every one when
    /// both are left out.
    #[arg(long, requires = "aggregate_id")]
    pub aggregate_type: Option<String>,
    /// The aggregate's id (with --aggregate-type).
    #[arg(long, requires = "aggregate_type")]
    pub aggregate_id: Option<String>,
    /// Checkpoint messages (JSON lines, one JSON array, or bare JWS) to
    /// check the stored events against.
    #[arg(long, conflicts_with = "kafka_config", requires_all = ["context", "jwks"])]
    pub checkpoints: Option<PathBuf>,
    /// librdkafka properties of a principal that may read
    /// `<prefix>.checkpoints`: the checkpoints are read from Kafka.
    #[arg(long, requires_all = ["context", "jwks"])]
    pub kafka_config: Option<PathBuf>,
    #[command(flatten)]
    pub prefix: crate::Prefix,
    /// The context whose checkpoints are checked (issuance, activation,
    /// domain, grants).
    #[arg(long)]
    pub context: Option<String>,
    /// The service's JWKS files, comma-separated (current and retired keys).
    #[arg(long, value_delimiter = ',', num_args = 1.., value_parser = crate::file_path)]
    pub jwks: Vec<PathBuf>,
}

impl Args {
    fn checkpoints(&self) -> Option<checkpoints::Args> {
        let source = match (&self.checkpoints, &self.kafka_config) {
            (Some(p), _) => checkpoints::Source::File(p.clone()),
            (None, Some(c)) => checkpoints::Source::Kafka {
                config: c.clone(),
                prefix: self.prefix.prefix.clone(),
            },
            (None, None) => return None,
        };
        Some(checkpoints::Args {
            source,
            // Both required with a source (clap's `requires_all`).
            context: self.context.clone().unwrap_or_default(),
            jwks: self.jwks.clone(),
        })
    }
}

pub async fn run(a: &Args, json: bool) -> anyhow::Result<bool> {
    let against = a.checkpoints();
    let pool = PgPool::connect(&a.database_url)
        .await
        .context("connecting to the event store")?;
    let targets: Vec<(String, String)> = match (&a.aggregate_type, &a.aggregate_id) {
        (Some(t), Some(id)) => vec![(t.clone(), id.clone())],
        _ => {
            sqlx::query_as("SELECT DISTINCT aggregate_type, aggregate_id FROM events ORDER BY 1, 2")
                .fetch_all(&pool)
                .await?
        }
    };
    let bar = crate::bar(
        Some(targets.len() as u64),
        "[{bar:32}] {pos}/{len} chains {per_sec} ETA {eta}",
    );
    let (mut chains, mut broken) = (0usize, 0usize);
    for (t, id) in targets {
        let report = eventstore::chain::verify(&pool, &t, &id).await?;
        chains += 1;
        if !report.is_intact() {
            broken += 1;
        }
        bar.suspend(|| print_chain(&report, json))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !json {
        println!("{chains} chains verified, {broken} broken");
    }
    let mut intact = broken == 0;
    if let Some(a) = against {
        let (reports, hold) = checkpoints::run(&pool, &a).await?;
        for r in &reports {
            print_checkpoint(r, json)?;
        }
        let verified = reports.iter().filter(|r| r.status != "unverified").count();
        if verified == 0 {
            eprintln!(
                "licensectl: no checkpoint of {} verifies under the given keys",
                a.context
            );
        }
        intact &= hold;
    }
    Ok(intact)
}

/// A chain's report: every one as JSON; as text, only the broken ones (an
/// intact store of a million aggregates is one summary line).
fn print_chain(r: &ChainReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else if !r.is_intact() {
        let problems: Vec<String> = r
            .problems
            .iter()
            .map(|p| {
                let v = serde_json::to_value(p).unwrap_or_default();
                let name = v["problem"].as_str().unwrap_or("problem").to_string();
                match (v.get("sequence"), v.get("expected"), v.get("found")) {
                    (Some(s), _, _) => format!("{name} at sequence {s}"),
                    (_, Some(e), Some(f)) => format!("{name}: expected {e}, found {f}"),
                    _ => name,
                }
            })
            .collect();
        println!(
            "BROKEN {}/{} ({} events): {}",
            r.aggregate_type,
            r.aggregate_id,
            r.events,
            problems.join("; ")
        );
    }
    Ok(())
}

fn print_checkpoint(r: &CheckpointReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "checkpoint": r }))?
        );
    } else {
        println!(
            "checkpoint of {} ({} events, signed {}): {}{}",
            r.context,
            r.tree_size,
            r.signed_at,
            r.status,
            r.reason
                .as_deref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        );
    }
    if r.status == "contradicted" {
        for e in &r.inconsistent_events {
            eprintln!(
                "licensectl: {} {} #{} (position {}) contradicts the {} checkpoint of {} events signed {}",
                e.aggregate_type, e.aggregate_id, e.sequence, e.global_position,
                r.context, r.tree_size, r.signed_at
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::tests::parse;
    use crate::Command;

    fn verify(line: &str) -> Result<super::Args, clap::Error> {
        match parse(line)?.command {
            Command::Verify(a) => Ok(a),
            other => panic!("not verify: {other:?}"),
        }
    }

    #[test]
    fn parses_a_chain_and_checkpoint_sources() {
        let a = verify("verify --database-url u --aggregate-type License --aggregate-id x")
            .expect("one chain");
        assert_eq!(a.aggregate_id.as_deref(), Some("x"));
        assert!(a.checkpoints().is_none());
        let a =
            verify("verify --database-url u --checkpoints c.jsonl --context issuance --jwks a,b")
                .expect("file");
        let c = a.checkpoints().expect("checkpoints");
        assert_eq!(c.context, "issuance");
        assert_eq!(c.jwks.len(), 2);
    }

    #[test]
    fn refuses_half_given_arguments() {
        // An aggregate type without its id, a source without its keys or
        // context, two sources, an empty key list, a typo.
        for line in [
            "verify --database-url u --aggregate-type License",
            "verify --database-url u --checkpoints c --context issuance",
            "verify --database-url u --checkpoints c --jwks k",
            "verify --database-url u --checkpoints c --kafka-config k --context i --jwks k",
            "verify --database-url u --checkpoints c --context i --jwks ,",
            "verify --database-url u --aggregate-typ License",
        ] {
            assert!(verify(line).is_err(), "{line}");
        }
    }
}
