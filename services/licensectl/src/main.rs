//! licensectl — the operators' and auditors' command line.
//!
//! `licensectl verify --database-url URL [--aggregate-type T --aggregate-id ID]`
//! re-hashes an aggregate's stored events (or every aggregate's) and prints
//! one JSON report per aggregate; exits 1 when any chain is broken. With
//! checkpoints (`--checkpoints FILE` or `--kafka-config FILE`, `--context`,
//! `--jwks`) it also checks every stored event against the service's
//! signed checkpoints (see `checkpoints`).
//!
//! `licensectl verify-bundle` checks a dispute bundle offline,
//! `licensectl rebuild` drives a projector rebuild, and `licensectl kafka
//! provision` creates a deployment's topics and ACLs; see `USAGE`.
//!
//! Exit codes: 0 success, 1 the check or the rebuild failed, 2 usage or IO.

mod checkpoints;
mod kafka;
mod rebuild;
mod verify_bundle;

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{bail, Context};
use sqlx::PgPool;

const USAGE: &str = "usage:
  licensectl verify --database-url URL [--aggregate-type TYPE --aggregate-id ID]
                    [--context C --jwks F1[,F2] (--checkpoints FILE | --kafka-config FILE [--prefix P])]
  licensectl verify-bundle --bundle FILE (--jwks F1[,F2] | --public-key PEM_FILE)
                           [--service-jwks CONTEXT=FILE[,CONTEXT=FILE]]
  licensectl rebuild --url BASE_URL --api-key KEY [--models M1,M2] [--poll-ms 500] [--timeout-secs 3600]
  licensectl kafka provision --config ADMIN_PROPERTIES [--brokers HOSTS] [--prefix licensing]
                             [--group-prefix G] [--partitions N] [--users role=user,...]
environment: LICENSING_DATABASE_URL, LICENSING_PROJECTOR_URL, LICENSING_API_KEY,
             LICENSING_KAFKA_ADMIN_CONFIG, LICENSING_TOPIC_PREFIX
exit codes: 0 ok, 1 chain broken / bundle invalid / rebuild failed, 2 usage or IO error";

/// Largest bundle or checkpoint file read: a dispute bundle of a license
/// with a long history is tens of MiB; beyond this it is not ours.
const MAX_DATA_FILE: u64 = 256 << 20;
/// Largest JWKS read.
const MAX_JWKS_FILE: u64 = 1 << 20;

/// A file's text, refused beyond `max` bytes rather than read into memory
/// whatever its size (a path may name a device or a pipe).
fn read_bounded(path: &std::path::Path, max: u64) -> anyhow::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// A comma-separated list of files; an empty one is a usage error, not "no
/// keys".
fn file_list(flag: &str, value: &str) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let files: Vec<std::path::PathBuf> = value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(Into::into)
        .collect();
    if files.is_empty() {
        bail!("{flag} names no file\n{USAGE}");
    }
    Ok(files)
}

/// The keys of JWKS files, each one checked to be a key we can verify
/// with: a file holding something else is an error, not silently fewer keys.
fn read_jwks(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<(String, p256::ecdsa::VerifyingKey)>> {
    let mut keys = Vec::new();
    for path in paths {
        let jwks: signing::Jwks = serde_json::from_str(&read_bounded(path, MAX_JWKS_FILE)?)
            .with_context(|| format!("{} is not a JWKS", path.display()))?;
        for k in &jwks.keys {
            let v = signing::verifying_key(k)
                .with_context(|| format!("key {:?} of {}", k.kid, path.display()))?;
            keys.push((k.kid.clone(), v));
        }
    }
    Ok(keys)
}

/// `--name value` pairs; unlike `flag`, refuses unknown, repeated and
/// value-less flags, so that a typo cannot silently fall back to a default.
fn flags(args: &[String], known: &[&str]) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        if !known.contains(&name.as_str()) {
            bail!("unknown argument {name:?}\n{USAGE}");
        }
        let value = it
            .next()
            .filter(|v| !v.starts_with("--"))
            .with_context(|| format!("{name} needs a value\n{USAGE}"))?;
        if out.insert(name.clone(), value.clone()).is_some() {
            bail!("{name} given twice\n{USAGE}");
        }
    }
    Ok(out)
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
        Some("verify") => verify(args).await,
        Some("verify-bundle") => verify_bundle::run(&verify_bundle::parse(&args[1..])?),
        Some("rebuild") => {
            let env = |k: &str| std::env::var(k).ok();
            rebuild::run(&rebuild::parse(&args[1..], env)?).await
        }
        Some("kafka") => {
            let env = |k: &str| std::env::var(k).ok();
            kafka::run(&kafka::parse(&args[1..], env)?).await
        }
        _ => bail!(USAGE),
    }
}

async fn verify(args: Vec<String>) -> anyhow::Result<bool> {
    let mut f = flags(
        &args[1..],
        &[
            "--database-url",
            "--aggregate-type",
            "--aggregate-id",
            "--checkpoints",
            "--kafka-config",
            "--prefix",
            "--context",
            "--jwks",
        ],
    )?;
    let url = f
        .remove("--database-url")
        .or_else(|| std::env::var("LICENSING_DATABASE_URL").ok())
        .context(USAGE)?;
    let source = match (f.remove("--checkpoints"), f.remove("--kafka-config")) {
        (Some(_), Some(_)) => bail!("--checkpoints or --kafka-config, not both\n{USAGE}"),
        (Some(p), None) => Some(checkpoints::Source::File(p.into())),
        (None, Some(c)) => Some(checkpoints::Source::Kafka {
            config: c.into(),
            prefix: f
                .remove("--prefix")
                .or_else(|| std::env::var("LICENSING_TOPIC_PREFIX").ok())
                .unwrap_or_else(|| "licensing".into()),
        }),
        (None, None) => None,
    };
    let against = match source {
        Some(source) => Some(checkpoints::Args {
            source,
            context: f
                .remove("--context")
                .with_context(|| format!("checkpoints need --context\n{USAGE}"))?,
            jwks: file_list(
                "--jwks",
                &f.remove("--jwks").with_context(|| {
                    format!("checkpoints need --jwks (the service's keys)\n{USAGE}")
                })?,
            )?,
        }),
        None => None,
    };
    let pool = PgPool::connect(&url)
        .await
        .context("connecting to the event store")?;
    let targets: Vec<(String, String)> =
        match (f.remove("--aggregate-type"), f.remove("--aggregate-id")) {
            (Some(t), Some(id)) => vec![(t, id)],
            (None, None) => {
                sqlx::query_as(
                    "SELECT DISTINCT aggregate_type, aggregate_id FROM events ORDER BY 1, 2",
                )
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
    if let Some(a) = against {
        let (reports, hold) = checkpoints::run(&pool, &a).await?;
        for r in &reports {
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({ "checkpoint": r }))?
            );
            if r.status == "contradicted" {
                for e in &r.inconsistent_events {
                    eprintln!(
                        "licensectl: {} {} #{} (position {}) contradicts the {} checkpoint of {} events signed {}",
                        e.aggregate_type, e.aggregate_id, e.sequence, e.global_position,
                        r.context, r.tree_size, r.signed_at
                    );
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_are_pairs_of_known_names_and_values() {
        let f = flags(&args("--a 1 --b x"), &["--a", "--b"]).expect("parses");
        assert_eq!(f["--a"], "1");
        assert_eq!(f["--b"], "x");
        assert!(flags(&args("--c 1"), &["--a"]).is_err());
        assert!(flags(&args("--a"), &["--a"]).is_err());
        assert!(flags(&args("--a --b 1"), &["--a", "--b"]).is_err());
        assert!(flags(&args("--a 1 --a 2"), &["--a"]).is_err());
    }

    #[test]
    fn an_empty_file_list_is_a_usage_error() {
        assert!(file_list("--jwks", ",").is_err());
        assert!(file_list("--jwks", "").is_err());
        assert_eq!(file_list("--jwks", "a,,b").expect("two").len(), 2);
    }

    #[test]
    fn files_are_read_only_up_to_a_bound() {
        let path = std::env::temp_dir().join(format!("licensectl-bound-{}", std::process::id()));
        std::fs::write(&path, "x".repeat(11)).expect("write");
        assert!(read_bounded(&path, 10).is_err());
        assert_eq!(read_bounded(&path, 11).expect("fits").len(), 11);
        let _ = std::fs::remove_file(&path);
    }
}
