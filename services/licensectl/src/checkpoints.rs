//! `licensectl verify … --checkpoints`: compares a service's stored events
//! with the checkpoints it signed and published. The hash chain catches an
//! edit by anyone who does not recompute it; a checkpoint, once published,
//! catches one by anyone who does: every event it covers must still give
//! its Merkle root.
//!
//! The events are taken in the relay's publication order
//! ((tx_id, global_position)), leaf input = each event's stored chain hash.
//! When a checkpoint is contradicted, the store's own copy of the leaves as
//! they were appended (`merkle_leaves`) names the events: if that copy still
//! gives the signed root it is authentic, and every event that differs from
//! it is reported; if it was rewritten too, the events between the last
//! checkpoint that still holds and the first that does not are.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use contracts::checkpoint::{CheckpointClaims, CheckpointMessage, CHECKPOINT_TYP};
use eventstore::merkle::{leaf_hash, Frontier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::{PgPool, Row};

/// Where the checkpoints come from.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// JSON lines (or one JSON array) of checkpoint messages, or bare JWS.
    File(PathBuf),
    /// `<prefix>.checkpoints`, read to its end as the given principal.
    Kafka { config: PathBuf, prefix: String },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub source: Source,
    pub context: String,
    pub jwks: Vec<PathBuf>,
}

/// One stored event, as the verifier sees it.
struct Leaf {
    global_position: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    hash: Vec<u8>,
}

#[derive(Debug, Serialize)]
pub struct EventRef {
    pub leaf_index: u64,
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    /// The chain hash the store holds now.
    pub stored_hash: String,
    /// The one the checkpoint covered, when the witness still shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_hash: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CheckpointReport {
    pub context: String,
    pub tree_size: u64,
    pub root_hash: String,
    pub signed_at: chrono::DateTime<chrono::Utc>,
    pub kid: Option<String>,
    /// `consistent`, `contradicted`, or `unverified` (its signature does not
    /// verify under the given keys: it proves nothing and is skipped).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The stored events that contradict it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inconsistent_events: Vec<EventRef>,
    /// When the witness was rewritten too: the leaves where history departs
    /// from what was signed, `[from, to)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverges_between: Option<(u64, u64)>,
}

/// The JWS of each checkpoint the source holds. A line that is not one is
/// said on stderr and left out: one bad line must not hide the others.
async fn load(source: &Source) -> anyhow::Result<Vec<String>> {
    match source {
        Source::File(path) => {
            let text = crate::read_bounded(path, crate::MAX_DATA_FILE)?;
            let trimmed = text.trim_start();
            if trimmed.starts_with('[') {
                let all: Vec<CheckpointMessage> = serde_json::from_str(trimmed)
                    .with_context(|| format!("{}: not an array of checkpoints", path.display()))?;
                return Ok(all.into_iter().map(|m| m.checkpoint).collect());
            }
            Ok(text
                .lines()
                .enumerate()
                .map(|(i, l)| (i + 1, l.trim()))
                .filter(|(_, l)| !l.is_empty())
                .filter_map(|(n, l)| {
                    let jws = if l.starts_with('{') {
                        serde_json::from_str::<CheckpointMessage>(l)
                            .map(|m| m.checkpoint)
                            .map_err(|e| e.to_string())
                    } else {
                        signing::peek(l)
                            .map(|_| l.to_string())
                            .map_err(|e| e.to_string())
                    };
                    jws.map_err(|e| {
                        eprintln!(
                            "licensectl: {} line {n} is not a checkpoint ({e}); skipped",
                            path.display()
                        )
                    })
                    .ok()
                })
                .collect())
        }
        Source::Kafka { config, prefix } => {
            let kafka = bus::Kafka::default()
                .with_file(config)
                .with_context(|| format!("reading {}", config.display()))?;
            let topic = contracts::Topics::new(prefix).checkpoints();
            let group = format!(
                "{prefix}.operator.licensectl-{}",
                uuid::Uuid::new_v4().simple()
            );
            tokio::task::spawn_blocking(move || read_topic(&kafka, &topic, &group))
                .await
                .context("reader thread")?
        }
    }
}

/// Every committed message of `topic`, read to the end of each partition.
fn read_topic(kafka: &bus::Kafka, topic: &str, group: &str) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer<bus::Quiet> = kafka
        .client()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create_with_context(bus::Quiet)
        .context("Kafka consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(15))
        .context("topic metadata")?;
    let parts = md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .with_context(|| format!("{topic} not readable with these credentials"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, i32::try_from(p)?, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut out, mut ended) = (Vec::new(), std::collections::HashSet::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while ended.len() < parts {
        if Instant::now() > deadline {
            bail!("{topic}: not read to its end within 120 s");
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => match m.payload().map(serde_json::from_slice::<CheckpointMessage>) {
                Some(Ok(c)) => out.push(c.checkpoint),
                _ => eprintln!(
                    "licensectl: {topic} offset {} is not a checkpoint; skipped",
                    m.offset()
                ),
            },
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(out)
}

async fn events(pool: &PgPool) -> anyhow::Result<Vec<Leaf>> {
    let rows = sqlx::query(
        "SELECT global_position, aggregate_type, aggregate_id, sequence, hash FROM events \
         ORDER BY tx_id, global_position",
    )
    .fetch_all(pool)
    .await
    .context("reading the events")?;
    rows.iter()
        .map(|r| {
            Ok(Leaf {
                global_position: r.try_get("global_position")?,
                aggregate_type: r.try_get("aggregate_type")?,
                aggregate_id: r.try_get("aggregate_id")?,
                sequence: r.try_get("sequence")?,
                hash: r.try_get("hash")?,
            })
        })
        .collect()
}

/// (global_position, event hash) of each leaf as appended.
async fn witness(pool: &PgPool) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
    sqlx::query_as("SELECT global_position, event_hash FROM merkle_leaves ORDER BY leaf_index")
        .fetch_all(pool)
        .await
        .context("reading the Merkle leaves")
}

/// Roots of `inputs` at each of `sizes` (ascending), in one pass.
fn roots_at(inputs: &[&[u8]], sizes: &[u64]) -> Vec<Option<String>> {
    let mut f = Frontier::default();
    let mut out = Vec::with_capacity(sizes.len());
    let mut it = inputs.iter();
    for &n in sizes {
        while f.size() < n {
            match it.next() {
                Some(h) => f.push(leaf_hash(h)),
                None => break,
            }
        }
        out.push((f.size() == n).then(|| hex::encode(f.root())));
    }
    out
}

/// Checks every checkpoint of the source against the store; the reports,
/// and whether all verified ones hold (and at least one verified).
pub async fn run(pool: &PgPool, a: &Args) -> anyhow::Result<(Vec<CheckpointReport>, bool)> {
    let keys = crate::read_jwks(&a.jwks)?;
    let mut verified: Vec<(CheckpointClaims, Option<String>)> = Vec::new();
    let mut reports = Vec::new();
    for jws in load(&a.source).await? {
        let (kid, peeked) = match signing::peek(&jws) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let Ok(claims) = serde_json::from_value::<CheckpointClaims>(peeked) else {
            continue;
        };
        if claims.context != a.context || claims.typ != CHECKPOINT_TYP {
            continue;
        }
        match verify_claims(&keys, &jws) {
            Ok(c) if c == claims && c.is_of(&a.context) => verified.push((claims, kid)),
            outcome => reports.push(CheckpointReport {
                context: claims.context.clone(),
                tree_size: claims.tree_size,
                root_hash: claims.root_hash.clone(),
                signed_at: claims.signed_at,
                kid,
                status: "unverified",
                reason: Some(match outcome {
                    Err(e) => e,
                    Ok(c) if c == claims => format!(
                        "signed by {:?}, not by the service that owns {}",
                        c.iss, a.context
                    ),
                    Ok(_) => "signed claims differ".into(),
                }),
                inconsistent_events: vec![],
                diverges_between: None,
            }),
        }
    }
    verified.sort_by_key(|(c, _)| c.tree_size);
    verified.dedup_by(|a, b| a.0 == b.0);
    let leaves = events(pool).await?;
    let witness = witness(pool).await?;
    let sizes: Vec<u64> = verified.iter().map(|(c, _)| c.tree_size).collect();
    let stored: Vec<&[u8]> = leaves.iter().map(|l| l.hash.as_slice()).collect();
    let appended: Vec<&[u8]> = witness.iter().map(|(_, h)| h.as_slice()).collect();
    let store_roots = roots_at(&stored, &sizes);
    let witness_roots = roots_at(&appended, &sizes);
    let mut all_hold = !verified.is_empty();
    let mut last_good = 0u64;
    for (i, (c, kid)) in verified.iter().enumerate() {
        let holds = store_roots[i].as_deref() == Some(c.root_hash.as_str());
        let mut r = CheckpointReport {
            context: c.context.clone(),
            tree_size: c.tree_size,
            root_hash: c.root_hash.clone(),
            signed_at: c.signed_at,
            kid: kid.clone(),
            status: if holds { "consistent" } else { "contradicted" },
            reason: None,
            inconsistent_events: vec![],
            diverges_between: None,
        };
        if holds {
            last_good = c.tree_size;
        } else {
            all_hold = false;
            let n = usize::try_from(c.tree_size).unwrap_or(usize::MAX);
            if leaves.len() < n {
                r.reason = Some(format!(
                    "it covers {} events; the store holds {}",
                    c.tree_size,
                    leaves.len()
                ));
            }
            if witness_roots[i].as_deref() == Some(c.root_hash.as_str()) {
                // The witness is what was signed: name each event that differs.
                for (idx, (pos, signed)) in witness.iter().take(n).enumerate() {
                    let now = leaves.get(idx);
                    if now.is_some_and(|l| l.global_position == *pos && l.hash == *signed) {
                        continue;
                    }
                    let by_position = leaves.iter().find(|l| l.global_position == *pos);
                    let shown = by_position.or(now);
                    r.inconsistent_events.push(EventRef {
                        leaf_index: idx as u64,
                        global_position: *pos,
                        aggregate_type: shown.map(|l| l.aggregate_type.clone()).unwrap_or_default(),
                        aggregate_id: shown.map(|l| l.aggregate_id.clone()).unwrap_or_default(),
                        sequence: shown.map_or(0, |l| l.sequence),
                        stored_hash: by_position
                            .map(|l| hex::encode(&l.hash))
                            .unwrap_or_default(),
                        signed_hash: Some(hex::encode(signed)),
                    });
                }
            } else {
                r.reason.get_or_insert_with(|| {
                    "the store's Merkle leaves were rewritten too: the events between the last \
                     checkpoint that holds and this one are suspect"
                        .into()
                });
                r.diverges_between = Some((last_good, c.tree_size));
                for (idx, l) in leaves
                    .iter()
                    .enumerate()
                    .take(n)
                    .skip(usize::try_from(last_good).unwrap_or(0))
                {
                    r.inconsistent_events.push(EventRef {
                        leaf_index: idx as u64,
                        global_position: l.global_position,
                        aggregate_type: l.aggregate_type.clone(),
                        aggregate_id: l.aggregate_id.clone(),
                        sequence: l.sequence,
                        stored_hash: hex::encode(&l.hash),
                        signed_hash: None,
                    });
                }
            }
        }
        reports.push(r);
    }
    Ok((reports, all_hold))
}

/// The claims of a checkpoint whose signature verifies under `keys`.
fn verify_claims(
    keys: &[(String, p256::ecdsa::VerifyingKey)],
    jws: &str,
) -> Result<CheckpointClaims, String> {
    let v = signing::verify_with(jws, |kid| {
        keys.iter().find(|(k, _)| k == kid).map(|(_, v)| *v)
    })
    .map_err(|e| e.to_string())?;
    serde_json::from_value(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_taken_at_every_size_in_one_pass() {
        let inputs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 32]).collect();
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let leaves: Vec<_> = refs.iter().map(|h| leaf_hash(h)).collect();
        let mut t = eventstore::merkle::Tree::new(&leaves);
        let got = roots_at(&refs, &[1, 4, 7, 10, 11]);
        assert_eq!(got[0], Some(hex::encode(t.root(1))));
        assert_eq!(got[2], Some(hex::encode(t.root(7))));
        assert_eq!(got[3], Some(hex::encode(t.root(10))));
        assert_eq!(got[4], None, "more leaves signed than stored");
    }
}
