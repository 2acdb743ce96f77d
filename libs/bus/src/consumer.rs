//! A consumer with exactly-once effect: each partition's messages are handled
//! in order, in batches, inside one Postgres transaction that also advances
//! that partition's stored offset. A message below the stored offset was
//! already applied and is skipped, whatever Kafka's own committed offset says.
//!
//! Kafka's committed offsets only choose where fetching starts. When a
//! partition is (re)assigned, the first message is compared with the stored
//! offset and the partition is sought back if Kafka started past it (a
//! restored database, a new read model on an old group): nothing is skipped.
//!
//! A message the handler cannot ever apply (poison) goes to `<topic>.dlq`
//! with the reason in its headers and is skipped; an infrastructure failure
//! is retried with backoff and never skips anything.
//!
//! Consumers of event topics also guard every aggregate's sequence
//! (`consumer_sequences`, in the same transaction): an event that is not
//! the next of its aggregate is dead-lettered (a gap or jump: a forged or
//! misrouted message cannot freeze what follows), one already applied is
//! skipped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use contracts::Topics;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Lanes of one consumer that batches: each applies the messages of the
/// partitions it was dealt, one transaction at a time. Two let one lane's
/// commit overlap the other's work; a lane per partition had a busy stack
/// commit a transaction per message in every consumer (tens of
/// partitions, each seeing a message every few tens of milliseconds).
/// The price: a partition whose batch waits (a retry, a swap's freeze)
/// holds up the others of its lane.
const LANES: usize = 2;

/// How long a lane waits for more messages after the first of a batch:
/// under load, a transaction (with its commit and offset writes) per few
/// messages rather than per message, for a few milliseconds of latency.
const LINGER: Duration = Duration::from_millis(5);

/// One Kafka message, owned, as handed to a handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Incoming {
    pub(crate) fn from_message<M: Message>(msg: &M) -> Self {
        Self {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers: msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The message as an event envelope; a message that is not one is poison.
    pub fn event(&self) -> Result<contracts::EventEnvelope, HandleError> {
        self.json("an event envelope")
    }

    /// The JSON value of the message; unreadable (or empty) is poison.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, HandleError> {
        let payload = self
            .payload
            .as_deref()
            .ok_or_else(|| HandleError::Poison("empty message".into()))?;
        serde_json::from_slice(payload).map_err(|e| HandleError::Poison(format!("not {what}: {e}")))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message can never be applied (malformed, unknown type): dead-letter it.
    #[error("poison message: {0}")]
    Poison(String),
    /// Something outside the message failed (database, broker): retry it.
    #[error("transient failure: {0}")]
    Transient(String),
}

impl crate::outage::Unreachable for HandleError {
    fn outage(&self) -> Option<&'static crate::outage::Outage> {
        match self {
            HandleError::Transient(_) => crate::outage::down(),
            HandleError::Poison(_) => None,
        }
    }
}

/// A failure a handler hit: transient, unless it is a database error the
/// message's data caused (see `From<sqlx::Error>`), which is poison.
pub fn transient<E: std::fmt::Display + 'static>(e: E) -> HandleError {
    let any: &dyn std::any::Any = &e;
    match any.downcast_ref::<sqlx::Error>() {
        Some(db) if caused_by_data(db) => {
            HandleError::Poison(format!("the database refuses its data: {db}"))
        }
        _ => HandleError::Transient(e.to_string()),
    }
}

/// SQLSTATE classes 22 (data exception: a NUL byte, a date or number out
/// of range) and 54 (program limit exceeded: a value too large to index).
fn caused_by_data(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("22") || c.starts_with("54"))
}

/// An event's payload as its contract type; a mismatch is poison.
pub fn payload<T: serde::de::DeserializeOwned>(
    e: &contracts::EventEnvelope,
) -> Result<T, HandleError> {
    serde_json::from_value(e.payload.clone())
        .map_err(|err| HandleError::Poison(format!("{}: {err}", e.event_type)))
}

impl From<sqlx::Error> for HandleError {
    /// A database error the message's own data caused (a NUL byte, a date
    /// or number out of range, a value too large to index: SQLSTATE
    /// classes 22 and 54) will fail the same way every time: poison, so one
    /// hostile message cannot stall its partition. Anything else may pass.
    fn from(e: sqlx::Error) -> Self {
        if caused_by_data(&e) {
            Self::Poison(format!("the database refuses its data: {e}"))
        } else {
            Self::Transient(e.to_string())
        }
    }
}

/// The text of a panic's payload (`panic!("…")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Applies one message inside the caller's transaction. It must not commit.
#[async_trait]
pub trait TxHandler: Send + Sync + 'static {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError>;

    /// A batch's messages in one transaction: from one or more partitions,
    /// each partition's in order. Handlers that
    /// can write a batch in fewer statements than one per message override it.
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        msgs: &[&Incoming],
    ) -> Result<(), HandleError> {
        for m in msgs {
            self.handle(tx, m).await?;
        }
        Ok(())
    }

    /// A replay's window (of chunks, one transaction) is about to commit:
    /// a handler that kept what it applied in memory writes it now, each
    /// row once however many of the window's chunks changed it.
    async fn flush(&self, _tx: &mut PgConnection) -> Result<(), HandleError> {
        Ok(())
    }

    /// PostgreSQL refused a row `flush` wrote: from now on write in
    /// `handle_batch`, under the savepoints that isolate a refused event,
    /// and keep nothing for `flush`.
    fn write_through(&self) {}

    /// A replay's window committed: what the handler applied for it is
    /// stored. A handler keeping state across a replay's windows keeps it.
    fn committed(&self) {}

    /// A replay's chunk or window did not commit: what the handler applied
    /// since the last commit is not stored. `stale`: the stored rows may
    /// since have been written by another writer (a reload), so nothing
    /// kept from earlier windows holds.
    fn abandoned(&self, _stale: bool) {}
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Consumer group id, and the key of its offsets in `consumer_offsets`.
    pub name: String,
    pub kafka: crate::Kafka,
    pub topics: Vec<String>,
    /// Most messages applied in one transaction. With 1 (commands: slow
    /// work), each partition has a lane of its own, so partitions are
    /// worked on side by side and one that waits holds up no other.
    pub batch_max: usize,
    /// The topics carry event envelopes whose per-aggregate sequences are
    /// guarded (every consumer but a command topic's).
    pub sequenced: bool,
    /// What this instance of the consumer does, for its metrics.
    pub stats: Arc<ConsumerStats>,
}

/// One instance's share of a consumer group's work: with several instances
/// of a service, each applies the messages of the partitions it holds, and
/// the instances' counts add up to each message once.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages this instance applied and committed (neither those the
    /// stored offsets or the sequence guard skipped, nor dead letters).
    pub applied: AtomicU64,
    /// Partitions the group assigns this instance now.
    pub partitions: AtomicI64,
}

impl ConsumerConfig {
    pub fn new(name: impl Into<String>, kafka: &crate::Kafka, topics: Vec<String>) -> Self {
        Self {
            name: name.into(),
            kafka: kafka.clone(),
            topics,
            batch_max: 200,
            sequenced: true,
            stats: Arc::default(),
        }
    }
}

/// Remembers partitions assigned since their last message, so the consumer
/// loop can check where Kafka started them against Postgres, and counts
/// what the group assigns this instance.
#[derive(Default)]
pub struct AssignTracker {
    fresh: Mutex<HashSet<(String, i32)>>,
    stats: Arc<ConsumerStats>,
}

impl ClientContext for AssignTracker {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::quiet_error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka::quiet_log(level, fac, message);
    }
}

impl ConsumerContext for AssignTracker {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if let Ok(mut fresh) = self.fresh.lock() {
                for e in tpl.elements() {
                    fresh.insert((e.topic().to_string(), e.partition()));
                }
            }
        }
        // Counted from the rebalance itself: asking the consumer for its
        // assignment here waits on the thread running this callback (a
        // deadlock when the consumer closes).
        let count =
            |tpl: &rdkafka::TopicPartitionList| i64::try_from(tpl.count()).unwrap_or(i64::MAX);
        let partitions = &self.stats.partitions;
        match rebalance {
            Rebalance::Assign(tpl) => partitions.fetch_add(count(tpl), Ordering::Relaxed),
            Rebalance::Revoke(tpl) => partitions.fetch_sub(count(tpl), Ordering::Relaxed),
            // rdkafka then unassigns every partition.
            Rebalance::Error(_) => partitions.swap(0, Ordering::Relaxed),
        };
    }
}

impl AssignTracker {
    /// Checks the partition against Postgres again before its next message
    /// (after a failed seek or an unreadable stored offset).
    fn recheck(&self, topic: &str, partition: i32) {
        if let Ok(mut f) = self.fresh.lock() {
            f.insert((topic.to_string(), partition));
        }
    }

    fn take(&self, topic: &str, partition: i32) -> bool {
        self.fresh
            .lock()
            .map(|mut f| f.remove(&(topic.to_string(), partition)))
            .unwrap_or(false)
    }
}

/// Consumes until `shutdown` turns true, then finishes in-flight batches.
pub async fn run_consumer<H: TxHandler>(
    pool: PgPool,
    dlq: crate::Producer,
    config: ConsumerConfig,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), rdkafka::error::KafkaError> {
    let consumer: Arc<StreamConsumer<AssignTracker>> = Arc::new(
        config
            .kafka
            .client()
            .set("group.id", &config.name)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Kafka's committed offset is only a starting hint; Postgres decides.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            // How long the broker may hold an empty fetch: new records
            // answer it at once (fetch.min.bytes is 1), so a longer wait
            // costs no latency, while 20 ms had every idle consumer fetch
            // 50 times a second (a third of a core of broker CPU for an
            // idle stack on two cores).
            .set("fetch.wait.max.ms", "500")
            .set("isolation.level", "read_committed")
            .create_with_context(AssignTracker {
                fresh: Mutex::default(),
                stats: config.stats.clone(),
            })?,
    );
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;

    let worker = Arc::new(Worker {
        pool,
        dlq,
        consumer: consumer.clone(),
        name: config.name.clone(),
        handler,
        batch_max: config.batch_max.max(1),
        sequenced: config.sequenced,
        stats: config.stats.clone(),
        shutdown: shutdown.clone(),
    });
    // Partitions are dealt to the lanes in the order they are first seen.
    let mut dealt: HashMap<(String, i32), usize> = HashMap::new();
    let lane_count = if worker.batch_max > 1 {
        LANES
    } else {
        usize::MAX
    };
    let mut lanes: Vec<mpsc::Sender<Incoming>> = Vec::new();
    let mut tasks = JoinSet::new();
    loop {
        let msg = tokio::select! {
            m = consumer.recv() => m,
            _ = shutdown.changed() => break,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                crate::outage::warn(&format!("{}: kafka receive", config.name), &e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let incoming = Incoming::from_message(&msg);
        if consumer.context().take(&incoming.topic, incoming.partition) {
            match stored_offset(
                &worker.pool,
                &config.name,
                &incoming.topic,
                incoming.partition,
            )
            .await
            {
                Ok(Some(next)) if incoming.offset > next => {
                    tracing::info!(consumer = %config.name, topic = %incoming.topic,
                        partition = incoming.partition, from = incoming.offset, to = next,
                        "kafka started past the stored offset; seeking back");
                    if let Err(e) = consumer.seek(
                        &incoming.topic,
                        incoming.partition,
                        Offset::Offset(next),
                        Duration::from_secs(10),
                    ) {
                        tracing::warn!(consumer = %config.name, error = %e, "seek failed");
                        consumer
                            .context()
                            .recheck(&incoming.topic, incoming.partition);
                    }
                    continue;
                }
                Ok(None) if incoming.offset > 0 => {
                    // Nothing applied yet here: start from the very beginning.
                    if consumer
                        .seek(
                            &incoming.topic,
                            incoming.partition,
                            Offset::Beginning,
                            Duration::from_secs(10),
                        )
                        .is_ok()
                    {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    crate::outage::warn(&format!("{}: stored offset unreadable", config.name), &e);
                    consumer
                        .context()
                        .recheck(&incoming.topic, incoming.partition);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let seen = dealt.len();
        let lane = *dealt
            .entry((incoming.topic.clone(), incoming.partition))
            .or_insert(seen % lane_count);
        if lane == lanes.len() {
            let (tx, rx) = mpsc::channel(1_000);
            tasks.spawn(worker.clone().lane(rx));
            lanes.push(tx);
        }
        // A full lane applies back-pressure to the whole consumer.
        if lanes[lane].send(incoming).await.is_err() {
            break;
        }
    }
    drop(lanes);
    while tasks.join_next().await.is_some() {}
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Ok(())
}

struct Worker<H> {
    pool: PgPool,
    dlq: crate::Producer,
    consumer: Arc<StreamConsumer<AssignTracker>>,
    name: String,
    handler: Arc<H>,
    batch_max: usize,
    sequenced: bool,
    stats: Arc<ConsumerStats>,
    shutdown: watch::Receiver<bool>,
}

/// Where an event stands in its aggregate's stream, as read from its
/// envelope (the headers are not trusted: the body is what gets applied).
#[derive(serde::Deserialize)]
pub(crate) struct Position {
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
}

/// Longest aggregate type or id a consumer keeps a sequence for.
const MAX_AGGREGATE_NAME: usize = 256;

impl Position {
    /// The message's position, or why it cannot have one: a name the
    /// guard's own rows could not store (a NUL byte, a control character)
    /// or longer than any stream's would stall every reader of the topic
    /// on a database error, so it is refused like an unreadable message.
    pub(crate) fn of(m: &Incoming) -> Result<Self, String> {
        let p: Position = m.json("an event envelope").map_err(|e| match e {
            HandleError::Poison(r) | HandleError::Transient(r) => r,
        })?;
        for (what, name) in [
            ("aggregate_type", &p.aggregate_type),
            ("aggregate_id", &p.aggregate_id),
        ] {
            if name.len() > MAX_AGGREGATE_NAME || name.chars().any(char::is_control) {
                return Err(format!(
                    "{what} is longer than {MAX_AGGREGATE_NAME} bytes or holds a control character"
                ));
            }
        }
        Ok(p)
    }
}

/// Why a message was refused.
pub(crate) enum Refusal {
    /// By the handler (or unreadable): past it, the aggregate moves on.
    Poison(String),
    /// By the sequence guard: not the next event of its aggregate.
    OutOfSequence(String),
}

impl Refusal {
    pub(crate) fn reason(&self) -> &str {
        match self {
            Refusal::Poison(r) | Refusal::OutOfSequence(r) => r,
        }
    }
}

/// Publishes a refused message to `<topic>.dlq` with the reason and where it
/// came from in its headers; it may be skipped only once this succeeded.
pub(crate) async fn publish_dead_letter(
    dlq: &crate::Producer,
    consumer: &str,
    m: &Incoming,
    reason: &str,
) -> Result<(), HandleError> {
    tracing::warn!(consumer, topic = %m.topic, partition = m.partition,
        offset = m.offset, reason, "dead-lettering message");
    let mut headers = OwnedHeaders::new_with_capacity(m.headers.len() + 5);
    for (k, v) in &m.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    let partition = m.partition.to_string();
    let offset = m.offset.to_string();
    for (key, value) in [
        ("dlq_reason", reason),
        ("dlq_consumer", consumer),
        ("dlq_source_topic", m.topic.as_str()),
        ("dlq_source_partition", partition.as_str()),
        ("dlq_source_offset", offset.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let topic = Topics::dlq(&m.topic);
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
    if let Some(k) = &m.key {
        record = record.key(k.as_slice());
    }
    if let Some(p) = &m.payload {
        record = record.payload(p.as_slice());
    }
    dlq.send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| HandleError::Transient(format!("dead-letter publish: {e}")))?;
    Ok(())
}

impl<H: TxHandler> Worker<H> {
    /// Applies its partitions' messages, each partition's in order.
    async fn lane(self: Arc<Self>, mut rx: mpsc::Receiver<Incoming>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + LINGER;
            while batch.len() < self.batch_max {
                let next = match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        tokio::time::timeout_at(until, rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                };
                match next {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            let mut backoff = Duration::from_millis(50);
            loop {
                match self.apply_batch(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        crate::outage::warn(&format!("{}: batch failed; retrying", self.name), &e);
                        if *self.shutdown.borrow() {
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            // Lets Kafka's commit follow what Postgres already holds.
            for (topic, partition, next) in ends(&batch) {
                let _ = self.consumer.store_offset(topic, partition, next);
            }
        }
    }

    /// The whole batch in one transaction; on a refused message, falls back
    /// to one transaction per message so only that one is dead-lettered.
    async fn apply_batch(&self, batch: &[Incoming]) -> Result<(), HandleError> {
        match self.apply(batch).await? {
            Ok(()) => Ok(()),
            Err(_) if batch.len() > 1 => {
                for m in batch {
                    self.apply_one(m).await?;
                }
                Ok(())
            }
            Err(refusal) => self.dead_letter(&batch[0], refusal).await,
        }
    }

    async fn apply_one(&self, m: &Incoming) -> Result<(), HandleError> {
        match self.apply(std::slice::from_ref(m)).await? {
            Ok(()) => Ok(()),
            Err(refusal) => self.dead_letter(m, refusal).await,
        }
    }

    /// Ok(Err(_)) when a message is refused: nothing of the batch applied.
    async fn apply(&self, batch: &[Incoming]) -> Result<Result<(), Refusal>, HandleError> {
        if batch.is_empty() {
            return Ok(Ok(()));
        }
        let ends = ends(batch);
        let mut tx = self.pool.begin().await?;
        let mut next = lock_offsets(&mut tx, &self.name, &ends).await?;
        // Moving each partition's mark past what is kept also drops a
        // second copy in the batch (Kafka fetching a revoked and
        // reassigned partition again while the lane still held it).
        let mut fresh = Vec::with_capacity(batch.len());
        for m in batch {
            let mark = next_of(&mut next, m)?;
            if m.offset >= *mark {
                *mark = m.offset + 1;
                fresh.push(m);
            }
        }
        let mut applied = 0;
        if !fresh.is_empty() {
            if self.sequenced {
                fresh = match guard(&mut tx, &self.name, &fresh).await? {
                    Ok(kept) => kept,
                    Err(refusal) => return Ok(Err(refusal)),
                };
            }
            if !fresh.is_empty() {
                match handle_guarded(self.handler.as_ref(), &mut tx, &fresh).await {
                    Ok(()) => applied = fresh.len(),
                    Err(HandleError::Poison(reason)) => return Ok(Err(Refusal::Poison(reason))),
                    Err(e) => return Err(e),
                }
            }
            store_offsets(&mut tx, &self.name, &ends).await?;
        }
        tx.commit().await?;
        self.stats
            .applied
            .fetch_add(applied as u64, Ordering::Relaxed);
        Ok(Ok(()))
    }

    async fn dead_letter(&self, m: &Incoming, refusal: Refusal) -> Result<(), HandleError> {
        let in_sequence = matches!(refusal, Refusal::Poison(_));
        publish_dead_letter(&self.dlq, &self.name, m, refusal.reason()).await?;
        // Only now is it safe to move past the message.
        let ends = ends(std::slice::from_ref(m));
        let mut tx = self.pool.begin().await?;
        let mut next = lock_offsets(&mut tx, &self.name, &ends).await?;
        if m.offset >= *next_of(&mut next, m)? {
            // A genuine next event its handler could not apply still counts
            // as seen, so the aggregate's later events are not gaps.
            if self.sequenced && in_sequence {
                let _ = guard(&mut tx, &self.name, &[m]).await?;
            }
            store_offsets(&mut tx, &self.name, &ends).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The handler's answer for a batch, a panic turned into poison: a handler
/// that panics on a message would panic on it after every restart, so the
/// message is refused and the lane goes on.
pub(crate) async fn handle_guarded<H: TxHandler + ?Sized>(
    handler: &H,
    tx: &mut PgConnection,
    msgs: &[&Incoming],
) -> Result<(), HandleError> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(handler.handle_batch(tx, msgs))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(HandleError::Poison(format!(
                "the handler panicked: {}",
                panic_message(&*panic)
            )))
        })
}

/// The messages to apply: the next event of each aggregate, in order; an
/// event applied before is dropped. Records the new last sequences.
async fn guard<'a>(
    tx: &mut PgConnection,
    consumer: &str,
    msgs: &[&'a Incoming],
) -> Result<Result<Vec<&'a Incoming>, Refusal>, HandleError> {
    let mut positions = Vec::with_capacity(msgs.len());
    for m in msgs {
        let p = match Position::of(m) {
            Ok(p) => p,
            Err(r) => return Ok(Err(Refusal::Poison(r))),
        };
        positions.push(p);
    }
    let mut keys: Vec<(&str, &str, &str)> = msgs
        .iter()
        .zip(&positions)
        .map(|(m, p)| {
            (
                m.topic.as_str(),
                p.aggregate_type.as_str(),
                p.aggregate_id.as_str(),
            )
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let topics: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let types: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.2).collect();
    // One key look-up per aggregate, locked in the keys' (sorted) order,
    // so concurrent batches lock in one order. A join would do too, but
    // its plan is prepared once per connection, usually while the table
    // is still empty: a hash join over all of the consumer's rows, which
    // made every batch cost as much as the consumer had ever seen.
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT s.topic, s.aggregate_type, s.aggregate_id, s.last_sequence \
         FROM unnest($2::text[], $3::text[], $4::text[]) AS k(tp, t, i) \
         CROSS JOIN LATERAL (SELECT c.topic, c.aggregate_type, c.aggregate_id, c.last_sequence \
           FROM consumer_sequences c WHERE c.consumer = $1 AND c.topic = k.tp \
             AND c.aggregate_type = k.t AND c.aggregate_id = k.i FOR UPDATE) s",
    )
    .bind(consumer)
    .bind(&topics)
    .bind(&types)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut last: HashMap<(String, String, String), i64> = rows
        .into_iter()
        .map(|(tp, t, i, s)| ((tp, t, i), s))
        .collect();
    let mut kept = Vec::with_capacity(msgs.len());
    for (m, p) in msgs.iter().zip(&positions) {
        let key = (
            m.topic.clone(),
            p.aggregate_type.clone(),
            p.aggregate_id.clone(),
        );
        let expected = last.get(&key).copied().unwrap_or(0) + 1;
        if p.sequence < expected {
            continue;
        }
        if p.sequence > expected {
            return Ok(Err(Refusal::OutOfSequence(format!(
                "sequence out of order: {}/{} expected {expected}, got {}",
                p.aggregate_type, p.aggregate_id, p.sequence
            ))));
        }
        last.insert(key, p.sequence);
        kept.push(*m);
    }
    let (tp, t, i, q) = sequence_columns(&last);
    store_sequences(tx, consumer, &tp, &t, &i, &q).await?;
    Ok(Ok(kept))
}

/// Last sequences by (topic, aggregate type, aggregate id), as the four
/// columns the statements bind.
pub(crate) fn sequence_columns(
    last: &HashMap<(String, String, String), i64>,
) -> (Vec<&str>, Vec<&str>, Vec<&str>, Vec<i64>) {
    let (mut tp, mut t, mut i, mut q) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((topic, ty, id), seq) in last {
        tp.push(topic.as_str());
        t.push(ty.as_str());
        i.push(id.as_str());
        q.push(*seq);
    }
    (tp, t, i, q)
}

/// Sets aggregates' last sequences (`topic`, `aggregate_type`, `aggregate_id`,
/// `last_sequence`, column by column).
async fn store_sequences(
    tx: &mut PgConnection,
    consumer: &str,
    topics: &[&str],
    types: &[&str],
    ids: &[&str],
    sequences: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumer_sequences (consumer, topic, aggregate_type, aggregate_id, last_sequence) \
         SELECT $1, tp, t, i, q FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[]) AS u(tp, t, i, q) \
         ON CONFLICT (consumer, topic, aggregate_type, aggregate_id) \
         DO UPDATE SET last_sequence = EXCLUDED.last_sequence",
    )
    .bind(consumer)
    .bind(topics)
    .bind(types)
    .bind(ids)
    .bind(sequences)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn stored_offset(
    pool: &PgPool,
    consumer: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT next_offset FROM consumer_offsets \
         WHERE consumer = $1 AND topic = $2 AND partition = $3",
    )
    .bind(consumer)
    .bind(topic)
    .bind(partition)
    .fetch_optional(pool)
    .await
}

/// Each partition of a batch with the offset after its last message,
/// sorted: the order its offset rows are locked in.
fn ends(batch: &[Incoming]) -> Vec<(&str, i32, i64)> {
    let mut ends: HashMap<(&str, i32), i64> = HashMap::new();
    for m in batch {
        let next = ends.entry((m.topic.as_str(), m.partition)).or_default();
        *next = (*next).max(m.offset + 1);
    }
    let mut ends: Vec<(&str, i32, i64)> = ends.into_iter().map(|((t, p), n)| (t, p, n)).collect();
    ends.sort_unstable();
    ends
}

type Offsets = HashMap<(String, i32), i64>;

/// The stored offset of the message's partition. Every partition of the
/// batch was locked (a row is made for a new one); one missing is retried,
/// never taken for 0, which would apply its old messages again.
fn next_of<'a>(offsets: &'a mut Offsets, m: &Incoming) -> Result<&'a mut i64, HandleError> {
    offsets
        .get_mut(&(m.topic.clone(), m.partition))
        .ok_or_else(|| {
            HandleError::Transient(format!(
                "no stored offset locked for {}/{}",
                m.topic, m.partition
            ))
        })
}

/// Locks the stored offsets of the batch's partitions, in `ends`' order,
/// making a row at 0 for a partition seen for the first time: one
/// statement, whose no-op update locks an existing row and returns it.
async fn lock_offsets(
    tx: &mut PgConnection,
    consumer: &str,
    ends: &[(&str, i32, i64)],
) -> Result<Offsets, sqlx::Error> {
    let topics: Vec<&str> = ends.iter().map(|e| e.0).collect();
    let partitions: Vec<i32> = ends.iter().map(|e| e.1).collect();
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) \
         SELECT $1, tp, p, 0 FROM unnest($2::text[], $3::int4[]) WITH ORDINALITY AS k(tp, p, n) \
         ORDER BY n \
         ON CONFLICT (consumer, topic, partition) \
         DO UPDATE SET next_offset = consumer_offsets.next_offset \
         RETURNING topic, partition, next_offset",
    )
    .bind(consumer)
    .bind(&topics)
    .bind(&partitions)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|(t, p, n)| ((t, p), n)).collect())
}

/// Moves the batch's partitions' stored offsets past their last messages.
async fn store_offsets(
    tx: &mut PgConnection,
    consumer: &str,
    ends: &[(&str, i32, i64)],
) -> Result<(), sqlx::Error> {
    let topics: Vec<&str> = ends.iter().map(|e| e.0).collect();
    let partitions: Vec<i32> = ends.iter().map(|e| e.1).collect();
    let next: Vec<i64> = ends.iter().map(|e| e.2).collect();
    sqlx::query(
        "UPDATE consumer_offsets c SET next_offset = greatest(c.next_offset, u.n), updated_at = now() \
         FROM unnest($2::text[], $3::int4[], $4::int8[]) AS u(tp, p, n) \
         WHERE c.consumer = $1 AND c.topic = u.tp AND c.partition = u.p",
    )
    .bind(consumer)
    .bind(&topics)
    .bind(&partitions)
    .bind(&next)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
