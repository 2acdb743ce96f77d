//! The outbox relay: publishes committed events from the `events` table to the
//! context's Kafka topic, in commit order, exactly once.
//!
//! Only rows of transactions below `pg_snapshot_xmin(pg_current_snapshot())`
//! are read: every such transaction has ended, so no row can still appear
//! behind the checkpoint — a slow commit delays the relay, it is never
//! skipped.
//!
//! Each batch is one Kafka transaction that also writes the relay's
//! checkpoint to a compacted topic; a new session resumes from the last
//! committed checkpoint there, so a crash at any point neither loses nor
//! repeats a message for read-committed consumers. The checkpoint is mirrored
//! to `relay_checkpoints` for lag reporting. One relay per database holds an
//! advisory lock; its transactional id also fences a zombie predecessor at
//! the broker.
//!
//! The relay sleeps until a commit wakes it: the `events_appended` trigger
//! NOTIFYs at every commit that appended events, and `idle_wait` is only the
//! fallback poll. Committed events the watermark still holds back (an older
//! transaction is open somewhere in the cluster) are polled for until they
//! show.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;

use crate::chain::{StoredEvent, STORED_EVENT_COLUMNS};

/// The channel the `events_appended` trigger notifies at commit.
pub const EVENTS_APPENDED: &str = "events_appended";
/// How often the relay polls for committed events the watermark holds back.
const HELD_BACK_POLL: Duration = Duration::from_millis(10);
/// How long the relay waits, once woken, for more commits to publish in
/// the same Kafka transaction: each transaction writes a marker to every
/// partition it touched, and each wakes every consumer group of the topic.
const LINGER: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Checkpoint and lock name, one per event table (e.g. "issuance").
    pub name: String,
    pub kafka: bus::Kafka,
    pub topic: String,
    /// This relay's compacted, single-partition checkpoint topic; no other
    /// relay may write it (its open transactions would hide ours, and its
    /// records could move ours).
    pub checkpoint_topic: String,
    /// Kafka transactional id; unique per relay and deployment.
    pub transactional_id: String,
    /// Group id of the checkpoint reader (it only assigns; librdkafka wants
    /// one): under the service's granted group prefix.
    pub reader_group: String,
    pub batch_size: i64,
    /// How long to wait for a commit's notification before polling anyway
    /// (a lost notification costs at most this much latency).
    pub idle_wait: Duration,
}

impl RelayConfig {
    pub fn new(
        name: impl Into<String>,
        kafka: &bus::Kafka,
        topic: impl Into<String>,
        checkpoint_topic: impl Into<String>,
    ) -> Self {
        let topic = topic.into();
        Self {
            name: name.into(),
            kafka: kafka.clone(),
            transactional_id: format!("relay.{topic}"),
            reader_group: format!("{topic}.relay-reader"),
            topic,
            checkpoint_topic: checkpoint_topic.into(),
            batch_size: 10_000,
            idle_wait: Duration::from_millis(500),
        }
    }
}

/// Live figures of a relay, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub active: AtomicBool,
    pub published: AtomicU64,
    pub position: AtomicI64,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("stored event {0} cannot be published: {1}")]
    Corrupt(i64, serde_json::Error),
    #[error("background task cancelled")]
    Cancelled,
}

impl bus::outage::Unreachable for RelayError {
    fn outage(&self) -> Option<&'static bus::outage::Outage> {
        match self {
            RelayError::Database(e) => e.outage(),
            RelayError::Kafka(e) => e.outage(),
            RelayError::Corrupt(..) => None,
            RelayError::Cancelled => bus::outage::down(),
        }
    }
}

/// What the checkpoint topic holds for a relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    tx_id: String,
    global_position: i64,
    /// Events published so far: the next event's leaf index in the store's
    /// Merkle tree (the same order: see `service_kit::checkpoints`).
    #[serde(default)]
    leaves: Option<u64>,
}

pub struct Relay {
    pool: PgPool,
    config: RelayConfig,
    stats: Arc<RelayStats>,
}

impl Relay {
    pub fn new(pool: PgPool, config: RelayConfig) -> Self {
        Self {
            pool,
            config,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` turns true. Failures (database restart, broker
    /// outage) end the session; a new one resumes from the checkpoint.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            tokio::select! {
                r = self.session() => {
                    self.stats.active.store(false, Ordering::Relaxed);
                    if let Err(e) = r {
                        bus::outage::warn(&format!("{}: relay session ended", self.config.name), &e);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                _ = shutdown.changed() => {}
            }
        }
        self.stats.active.store(false, Ordering::Relaxed);
    }

    async fn session(&self) -> Result<(), RelayError> {
        // A connection of its own: the advisory lock lives as long as it does.
        let mut conn = self.pool.acquire().await?.detach();
        let key = lock_key(&self.config.name);
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
            if got {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let producer = self.transactional_producer().await?;
        let mut at = self.committed_checkpoint().await?;
        if at.leaves.is_none() {
            // A checkpoint written before leaves were counted.
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE (tx_id, global_position) <= ($1::text::xid8, $2)",
            )
            .bind(&at.tx_id)
            .bind(at.global_position)
            .fetch_one(&mut conn)
            .await?;
            at.leaves = Some(u64::try_from(n).unwrap_or_default());
        }
        let mut commits = PgListener::connect_with(&self.pool).await?;
        commits.listen(EVENTS_APPENDED).await?;
        self.stats.active.store(true, Ordering::Relaxed);
        tracing::info!(relay = %self.config.name, topic = %self.config.topic,
            tx_id = %at.tx_id, position = at.global_position, "relay active");
        loop {
            let batch = self.pending(&mut conn, &at).await?;
            let first_leaf = at.leaves.unwrap_or_default();
            let Some(next) = batch.last().map(|(tx_id, e)| Checkpoint {
                tx_id: tx_id.clone(),
                global_position: e.global_position,
                leaves: Some(first_leaf + batch.len() as u64),
            }) else {
                if self.held_back(&mut conn, &at).await? {
                    // Committed, but an older transaction (anywhere in the
                    // cluster, so no notification of ours announces its
                    // end) still holds the watermark: poll until it passes.
                    tokio::time::sleep(HELD_BACK_POLL).await;
                } else {
                    tokio::select! {
                        n = commits.recv() => {
                            n?;
                            tokio::time::sleep(LINGER).await;
                            // One read covers every commit notified so far;
                            // left unread, each would wake a cycle of its own.
                            while let Ok(n) =
                                tokio::time::timeout(Duration::ZERO, commits.recv()).await
                            {
                                n?;
                            }
                        }
                        _ = tokio::time::sleep(self.config.idle_wait) => {}
                    }
                }
                continue;
            };
            if let Err(e) = self.publish(&producer, &batch, first_leaf, &next).await {
                let p = producer.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    p.abort_transaction(Duration::from_secs(10))
                })
                .await;
                return Err(e);
            }
            sqlx::query(
                "INSERT INTO relay_checkpoints (relay, tx_id, global_position) \
                 VALUES ($1, $2::text::xid8, $3) \
                 ON CONFLICT (relay) DO UPDATE \
                 SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position, updated_at = now()",
            )
            .bind(&self.config.name)
            .bind(&next.tx_id)
            .bind(next.global_position)
            .execute(&mut conn)
            .await?;
            self.stats
                .published
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.stats
                .position
                .store(next.global_position, Ordering::Relaxed);
            at = next;
        }
    }

    async fn transactional_producer(&self) -> Result<bus::Producer, RelayError> {
        let producer: bus::Producer = self
            .config
            .kafka
            .client()
            .set("transactional.id", &self.config.transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "200000")
            .set("transaction.timeout.ms", "60000")
            .create_with_context(bus::Quiet)?;
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(30)))
            .await
            .map_err(|_| RelayError::Cancelled)??;
        Ok(producer)
    }

    /// The last checkpoint committed to this relay's checkpoint topic.
    /// Called after `init_transactions`, so every transaction this relay's
    /// id ever began has ended; nobody else writes the topic, so reading it
    /// (read-committed) to its end sees them all.
    async fn committed_checkpoint(&self) -> Result<Checkpoint, RelayError> {
        let kafka = self.config.kafka.clone();
        let topic = self.config.checkpoint_topic.clone();
        let partition = 0;
        let key = self.config.name.clone();
        let group = self.config.reader_group.clone();
        tokio::task::spawn_blocking(move || -> Result<Checkpoint, RelayError> {
            let consumer: BaseConsumer<bus::Quiet> = kafka
                .client()
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .set("enable.partition.eof", "true")
                .create_with_context(bus::Quiet)?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            let mut found = Checkpoint {
                tx_id: "0".into(),
                global_position: 0,
                leaves: Some(0),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) if m.key() == Some(key.as_bytes()) => {
                        if let Some(cp) = m.payload().and_then(|p| serde_json::from_slice(p).ok()) {
                            found = cp;
                        }
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(KafkaError::PartitionEOF(_))) => return Ok(found),
                    Some(Err(e)) => return Err(e.into()),
                }
            }
            Err(RelayError::Kafka(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            )))
        })
        .await
        .map_err(|_| RelayError::Cancelled)?
    }

    /// Whether committed events wait behind the watermark (an older
    /// transaction is still open): the rows this session can see beyond
    /// the checkpoint are committed ones.
    async fn held_back(
        &self,
        conn: &mut PgConnection,
        at: &Checkpoint,
    ) -> Result<bool, RelayError> {
        // In index order with LIMIT 1: a bare EXISTS was planned as a
        // sequential scan that met the newest rows last (4.7 ms a call
        // in bench/activation.sh's pg_stat_statements).
        let next: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM events WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
             ORDER BY tx_id, global_position LIMIT 1",
        )
        .bind(&at.tx_id)
        .bind(at.global_position)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(next.is_some())
    }

    async fn pending(
        &self,
        conn: &mut PgConnection,
        at: &Checkpoint,
    ) -> Result<Vec<(String, StoredEvent)>, RelayError> {
        let sql = format!(
            // The text copy of tx_id gets its own name: an alias `tx_id`
            // would make ORDER BY sort by text ('1000000' < '999999') and
            // miss the (tx_id, global_position) index.
            "SELECT events.tx_id::text AS tx_id_text, {STORED_EVENT_COLUMNS} FROM events \
             WHERE (events.tx_id, events.global_position) > ($1::text::xid8, $2) \
               AND events.tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY events.tx_id, events.global_position LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(&at.tx_id)
            .bind(at.global_position)
            .bind(self.config.batch_size)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tx_id_text")?, crate::chain::from_row(r)?)))
            .collect()
    }

    /// One Kafka transaction: the whole batch, sent before awaiting any
    /// acknowledgement (pipelined), plus the checkpoint record.
    async fn publish(
        &self,
        producer: &bus::Producer,
        batch: &[(String, StoredEvent)],
        first_leaf: u64,
        checkpoint: &Checkpoint,
    ) -> Result<(), RelayError> {
        producer.begin_transaction()?;
        let mut pending = Vec::with_capacity(batch.len() + 1);
        for (leaf, (_, event)) in (first_leaf..).zip(batch) {
            let envelope = event
                .to_raw_envelope()
                .map_err(|e| RelayError::Corrupt(event.global_position, e))?;
            let body = serde_json::to_vec(&envelope)
                .map_err(|e| RelayError::Corrupt(event.global_position, e))?;
            let record = FutureRecord::to(&self.config.topic)
                .key(envelope.aggregate_id.as_bytes())
                .payload(body.as_slice())
                .headers(envelope_headers(&envelope, leaf));
            send(producer, record, &mut pending).await?;
        }
        let body = serde_json::to_vec(checkpoint)
            .map_err(|e| RelayError::Corrupt(checkpoint.global_position, e))?;
        let record = FutureRecord::to(&self.config.checkpoint_topic)
            .partition(0)
            .key(self.config.name.as_bytes())
            .payload(body.as_slice());
        send(producer, record, &mut pending).await?;
        for d in pending {
            d.await
                .map_err(|_| RelayError::Cancelled)?
                .map_err(|(e, _)| e)?;
        }
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.commit_transaction(Duration::from_secs(30)))
            .await
            .map_err(|_| RelayError::Cancelled)??;
        Ok(())
    }
}

async fn send(
    producer: &bus::Producer,
    mut record: FutureRecord<'_, [u8], [u8]>,
    pending: &mut Vec<DeliveryFuture>,
) -> Result<(), RelayError> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => {
                pending.push(delivery);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                // Drain what is in flight, then try again.
                for d in pending.drain(..) {
                    d.await
                        .map_err(|_| RelayError::Cancelled)?
                        .map_err(|(e, _)| e)?;
                }
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

fn envelope_headers<P>(e: &contracts::EventEnvelope<P>, leaf: u64) -> OwnedHeaders {
    let sequence = e.sequence.to_string();
    let event_id = e.event_id.to_string();
    let leaf = leaf.to_string();
    let mut h = OwnedHeaders::new_with_capacity(9);
    for (key, value) in [
        ("event_id", event_id.as_str()),
        ("event_type", e.event_type.as_str()),
        ("event_version", e.event_version.as_str()),
        ("aggregate_type", e.aggregate_type.as_str()),
        ("aggregate_id", e.aggregate_id.as_str()),
        ("sequence", sequence.as_str()),
        ("correlation_id", e.correlation_id.as_str()),
        ("causation_id", e.causation_id.as_deref().unwrap_or("")),
        ("leaf_index", leaf.as_str()),
    ] {
        h = h.insert(Header {
            key,
            value: Some(value),
        });
    }
    h
}

fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("licensing-relay:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}
