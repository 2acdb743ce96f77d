//! Kafka plumbing shared by every service: an idempotent producer, topic
//! creation from `schemas/topics.toml`, and a consumer whose offsets live in
//! Postgres, committed in the same transaction as the consumer's effect.

pub mod acl;
pub mod consumer;
pub mod kafka;
pub mod outage;
pub mod provision;
pub mod replay;
pub mod scram;
pub mod topics;
pub mod wire;

/// Held by the unit tests that log through `outage`'s callsites: tracing
/// caches each callsite's interest globally, and a test logging with no
/// subscriber while another registers its own can leave the other's
/// events unseen.
#[cfg(test)]
pub(crate) static TRACING: std::sync::Mutex<()> = std::sync::Mutex::new(());

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde::Serialize;

pub use consumer::{
    panic_message, payload, run_consumer, transient, ConsumerConfig, ConsumerStats, HandleError,
    Incoming, TxHandler,
};
pub use kafka::{Kafka, Producer, Quiet};
pub use provision::{provision, Deployment};
pub use replay::{run_replay, ReplayConfig, ReplayError};
pub use topics::ensure_topics;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
    #[error("topics.toml: {0}")]
    TopicsFile(String),
    #[error("provisioning: {0}")]
    Provision(String),
}

/// An idempotent producer (`acks=all`, `enable.idempotence=true`): broker-side
/// de-duplication of retries and per-partition order.
pub fn producer(kafka: &Kafka) -> Result<Producer, KafkaError> {
    kafka
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", "30000")
        .create_with_context(Quiet)
}

/// Publishes one JSON message and waits for the broker's acknowledgement.
pub async fn publish_json<T: Serialize>(
    producer: &Producer,
    topic: &str,
    key: &str,
    value: &T,
    headers: &[(&str, &str)],
) -> Result<(), BusError> {
    let body = serde_json::to_vec(value)?;
    let mut h = OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in headers {
        h = h.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let record = FutureRecord::to(topic).key(key).payload(&body).headers(h);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| BusError::Kafka(e))?;
    Ok(())
}

/// Reads partitions' low and high watermarks: how far a consumer is behind.
///
/// Both questions are asked of long-lived clients (a new client costs a
/// TLS and SASL handshake), all partitions at once, and what the log below
/// a high watermark holds is remembered: it never changes.
pub struct Watermarks {
    client: std::sync::Arc<rdkafka::consumer::BaseConsumer<Quiet>>,
    peek: std::sync::Arc<std::sync::Mutex<rdkafka::consumer::BaseConsumer<Quiet>>>,
    /// `(topic, partition, from, high)` → whether a message (not only
    /// commit markers) sits in `from..high`.
    verdicts: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<PartitionRange, bool>>>,
}

/// One partition: `(topic, partition, low, high)`.
pub type PartitionMarks = (String, i32, i64, i64);
/// `(topic, partition, from, high)`.
pub type PartitionRange = (String, i32, i64, i64);

/// Verdicts remembered before the memory is cleared.
const MAX_VERDICTS: usize = 10_000;

impl Watermarks {
    /// `group`: the id its peeking consumer uses (it only assigns, but
    /// librdkafka wants one), under the principal's granted groups.
    pub fn new(kafka: &Kafka, group: &str) -> Result<Self, KafkaError> {
        let client = kafka.client().create_with_context(Quiet)?;
        let peek = kafka
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            // An empty fetch at a partition's end answers at once.
            .set("fetch.wait.max.ms", "10")
            .create_with_context(Quiet)?;
        let watermarks = Self {
            client: std::sync::Arc::new(client),
            peek: std::sync::Arc::new(std::sync::Mutex::new(peek)),
            verdicts: Default::default(),
        };
        // Connected ahead of the first question, off the caller's thread.
        let (client, peek) = (watermarks.client.clone(), watermarks.peek.clone());
        std::thread::spawn(move || {
            use rdkafka::consumer::Consumer;
            let _ = client.fetch_metadata(None, Duration::from_secs(10));
            let peek = peek.lock().unwrap_or_else(|e| e.into_inner());
            let _ = peek.fetch_metadata(None, Duration::from_secs(10));
        });
        Ok(watermarks)
    }

    /// Of `(topic, partition, from, high)`, the partitions holding a message
    /// in `from..high`. A transactional producer's commit markers take
    /// offsets too, so a consumer that applied every message still sits
    /// below the high watermark; reading on to the partition's end tells a
    /// marker from a message.
    pub async fn unread(
        &self,
        ranges: Vec<PartitionRange>,
    ) -> Result<std::collections::HashSet<(String, i32)>, KafkaError> {
        use rdkafka::consumer::Consumer;
        use rdkafka::{Message, Offset, TopicPartitionList};
        let mut unread = std::collections::HashSet::new();
        let mut todo = Vec::new();
        {
            let known = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
            for r in ranges {
                match known.get(&r) {
                    Some(true) => {
                        unread.insert((r.0.clone(), r.1));
                    }
                    Some(false) => {}
                    None => todo.push(r),
                }
            }
        }
        if todo.is_empty() {
            return Ok(unread);
        }
        let peek = self.peek.clone();
        let verdicts = self.verdicts.clone();
        let found = tokio::task::spawn_blocking(move || {
            let consumer = peek.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = std::collections::HashSet::new();
            // One topic at a time: an end-of-partition event names only
            // the partition number.
            let mut topics: Vec<String> = todo.iter().map(|r| r.0.clone()).collect();
            topics.sort();
            topics.dedup();
            for topic in topics {
                let mut tpl = TopicPartitionList::new();
                let mut open = std::collections::HashSet::new();
                for (_, p, from, _) in todo.iter().filter(|r| r.0 == topic) {
                    tpl.add_partition_offset(&topic, *p, Offset::Offset(*from))?;
                    open.insert(*p);
                }
                consumer.assign(&tpl)?;
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                let mut decided = std::collections::HashSet::new();
                while !open.is_empty() && std::time::Instant::now() < deadline {
                    match consumer.poll(Duration::from_millis(20)) {
                        Some(Ok(m)) if open.remove(&m.partition()) => {
                            found.insert((topic.clone(), m.partition()));
                            decided.insert(m.partition());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(KafkaError::PartitionEOF(p))) if open.remove(&p) => {
                            decided.insert(p);
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) => {}
                        Some(Err(e)) => {
                            let _ = consumer.unassign();
                            return Err(e);
                        }
                        None => {}
                    }
                }
                let _ = consumer.unassign();
                // Unresolved within the deadline: unread, and not remembered.
                found.extend(open.iter().map(|p| (topic.clone(), *p)));
                let mut known = verdicts.lock().unwrap_or_else(|e| e.into_inner());
                if known.len() > MAX_VERDICTS {
                    known.clear();
                }
                for r in todo
                    .iter()
                    .filter(|r| r.0 == topic && decided.contains(&r.1))
                {
                    known.insert(r.clone(), found.contains(&(r.0.clone(), r.1)));
                }
            }
            Ok(found)
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        unread.extend(found);
        Ok(unread)
    }

    /// Every partition of `topics`: one metadata request, then one offsets
    /// request for every low and one for every high watermark (blocking
    /// calls, run off the runtime).
    pub async fn of(&self, topics: &[String]) -> Result<Vec<PartitionMarks>, KafkaError> {
        use rdkafka::consumer::Consumer;
        use rdkafka::{Offset, TopicPartitionList};
        let client = self.client.clone();
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let meta = client.fetch_metadata(None, timeout)?;
            let mut wanted = TopicPartitionList::new();
            for t in meta
                .topics()
                .iter()
                .filter(|t| topics.iter().any(|n| n == t.name()))
            {
                for p in t.partitions() {
                    wanted.add_partition(t.name(), p.id());
                }
            }
            // ListOffsets' special timestamps: -2 the earliest offset, -1
            // the latest (the high watermark).
            let at = |ts: Offset| -> Result<TopicPartitionList, KafkaError> {
                let mut tpl = wanted.clone();
                tpl.set_all_offsets(ts)?;
                client.offsets_for_times(tpl, timeout)
            };
            let (lows, highs) = (at(Offset::Beginning)?, at(Offset::End)?);
            let mut out = Vec::new();
            for e in lows.elements() {
                let high = highs
                    .find_partition(e.topic(), e.partition())
                    .and_then(|h| h.offset().to_raw())
                    .unwrap_or(0);
                let low = e.offset().to_raw().unwrap_or(0);
                out.push((e.topic().to_string(), e.partition(), low, high));
            }
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}
