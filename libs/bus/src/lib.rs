//! Kafka plumbing shared by every service: an idempotent producer, topic
//! creation from `schemas/topics.toml`, and a consumer whose offsets live in
//! Postgres, committed in the same transaction as the consumer's effect.

pub mod acl;
pub mod consumer;
pub mod kafka;
pub mod provision;
pub mod scram;
pub mod topics;
pub mod wire;

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

pub use consumer::{
    payload, run_consumer, transient, ConsumerConfig, HandleError, Incoming, TxHandler,
};
pub use kafka::Kafka;
pub use provision::{provision, Deployment};
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
pub fn producer(kafka: &Kafka) -> Result<FutureProducer, KafkaError> {
    kafka
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", "30000")
        .create()
}

/// Publishes one JSON message and waits for the broker's acknowledgement.
pub async fn publish_json<T: Serialize>(
    producer: &FutureProducer,
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
pub struct Watermarks {
    client: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    kafka: Kafka,
    group: String,
}

/// One partition: `(topic, partition, low, high)`.
pub type PartitionMarks = (String, i32, i64, i64);

impl Watermarks {
    /// `group`: the id its peeking consumers use (they only assign, but
    /// librdkafka wants one), under the principal's granted groups.
    pub fn new(kafka: &Kafka, group: &str) -> Result<Self, KafkaError> {
        let client = kafka.client().create()?;
        Ok(Self {
            client: std::sync::Arc::new(client),
            kafka: kafka.clone(),
            group: group.to_string(),
        })
    }

    /// Of `(topic, partition, offset)`, the partitions holding a message at
    /// or after `offset`. A transactional producer's commit markers take
    /// offsets too, so a consumer that applied every message still sits
    /// below the high watermark; reading on to the partition's end tells a
    /// marker from a message.
    pub async fn unread(
        &self,
        from: Vec<(String, i32, i64)>,
    ) -> Result<std::collections::HashSet<(String, i32)>, KafkaError> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Message, Offset, TopicPartitionList};
        let mut unread = std::collections::HashSet::new();
        if from.is_empty() {
            return Ok(unread);
        }
        let kafka = self.kafka.clone();
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || {
            // One consumer per topic: an end-of-partition event names only
            // the partition number.
            let mut topics: Vec<&str> = from.iter().map(|(t, _, _)| t.as_str()).collect();
            topics.sort();
            topics.dedup();
            for topic in topics {
                let consumer: BaseConsumer = kafka
                    .client()
                    .set("group.id", &group)
                    .set("enable.auto.commit", "false")
                    .set("enable.partition.eof", "true")
                    .set("isolation.level", "read_committed")
                    .create()?;
                let mut tpl = TopicPartitionList::new();
                let mut open = std::collections::HashSet::new();
                for (_, p, o) in from.iter().filter(|(t, _, _)| t == topic) {
                    tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
                    open.insert(*p);
                }
                consumer.assign(&tpl)?;
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while !open.is_empty() && std::time::Instant::now() < deadline {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) if open.remove(&m.partition()) => {
                            unread.insert((topic.to_string(), m.partition()));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(KafkaError::PartitionEOF(p))) => {
                            open.remove(&p);
                        }
                        Some(Err(e)) => return Err(e),
                        None => {}
                    }
                }
                // Unresolved within the deadline: counted as unread.
                unread.extend(open.into_iter().map(|p| (topic.to_string(), p)));
            }
            Ok(unread)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    /// Every partition of `topics` (blocking calls, run off the runtime).
    pub async fn of(&self, topics: &[String]) -> Result<Vec<PartitionMarks>, KafkaError> {
        use rdkafka::consumer::Consumer;
        let client = self.client.clone();
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let mut out = Vec::new();
            for topic in topics {
                let meta = client.fetch_metadata(Some(&topic), timeout)?;
                for t in meta.topics() {
                    for p in t.partitions() {
                        let (low, high) = client.fetch_watermarks(&topic, p.id(), timeout)?;
                        out.push((topic.clone(), p.id(), low, high));
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}
