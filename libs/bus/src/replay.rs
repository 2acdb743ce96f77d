//! A rebuild's reader: event topics read from where a consumer name's
//! stored offsets stand (the beginning, for a new one) in chunks that span
//! every partition, each chunk applied in one Postgres transaction with the
//! offsets it reaches — the same exactly-once effect as `run_consumer`, at a
//! fraction of its cost per event when there is a whole history to read.
//!
//! What makes it cheaper: one transaction per chunk (thousands of messages
//! of every partition, where a live lane commits what one partition had
//! queued), and the per-aggregate sequence guard kept in memory — loaded
//! once, checked without a query, each chunk's last sequences written back
//! as one row (`replay_sequences`), which a restarted replay reads back
//! and a rebuild's swap hands to the live consumer
//! (`hand_over_sequences`).
//!
//! The guard's verdicts are `run_consumer`'s: an event applied before is
//! skipped, one that is not its aggregate's next is dead-lettered, and one
//! the handler refuses (poison, or a panic) is dead-lettered but counts as
//! seen. A refused event inside a chunk is found by halving the chunk under
//! savepoints, so the rest of the chunk still applies in order.
//!
//! Partitions are assigned, not balanced by a group: every instance running
//! the same replay reads everything, and a transaction-scoped advisory lock
//! on the name plus a check of the stored offsets against the ones its state
//! was read at makes the second writer reload rather than apply twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use crate::consumer::{handle_guarded, publish_dead_letter, sequence_columns, Position, Refusal};
use crate::{HandleError, Incoming, Kafka, TxHandler};

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a chunk waits for more messages once it has some.
const FILL_WAIT: Duration = Duration::from_millis(50);
/// The longest a chunk fills once it has a message. A backlog fills one in
/// a moment; a chunk still short after this is the tail of live traffic,
/// and a short chunk commits its window, so a replay tailing a busy topic
/// still stores its progress this often (a rebuild's swap waits on it).
const FILL_MAX: Duration = Duration::from_secs(2);
/// How often an idle replay looks for partitions added to its topics.
const METADATA_EVERY: Duration = Duration::from_secs(10);
/// The advisory-lock class of replays (`pg_advisory_xact_lock(class, key)`).
const LOCK_CLASS: i32 = 0x5245_504c; // "REPL"

#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// The key of its offsets and sequences (`consumer_offsets`,
    /// `consumer_sequences`) and of its dead letters' `dlq_consumer`.
    pub name: String,
    pub kafka: Kafka,
    pub topics: Vec<String>,
    /// Most messages read and applied at a time.
    pub chunk: usize,
    /// Most messages one transaction spans (at least `chunk`): a window of
    /// chunks applied in one transaction, committed with the offsets it
    /// reaches when it is full or the replay has caught up. A handler that
    /// keeps its writes in memory (`TxHandler::flush`) writes each row once
    /// per window rather than once per chunk; a crash loses at most the
    /// window's work, which the restarted replay reads again.
    pub window: usize,
    /// Past this many stored chunk rows, the next chunk replaces them all
    /// with one (`MAX_CHUNK_ROWS` is a good default): a replay tailing a
    /// busy topic in small chunks would otherwise pile them up for every
    /// reload and the hand-over to read.
    pub compact_after: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// (topic, aggregate type, aggregate id)
type Aggregate = (String, String, String);

/// What the replay has applied, as stored: read at (re)start, advanced by
/// each committed chunk.
#[derive(Default)]
struct Applied {
    offsets: HashMap<(String, i32), i64>,
    sequences: HashMap<Aggregate, i64>,
    /// Rows of `replay_sequences` stored for it.
    rows: usize,
}

/// The default of `ReplayConfig::compact_after`.
pub const MAX_CHUNK_ROWS: usize = 1_024;

/// The transaction a window of chunks is applied in, and what it has
/// applied so far.
struct Window {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The guard's last sequences in this window.
    last: HashMap<Aggregate, i64>,
    /// The next offset of each partition read in this window.
    next: HashMap<(String, i32), i64>,
    messages: usize,
    chunks: usize,
}

/// Why a chunk was not applied.
enum ChunkError {
    /// Retry the same chunk.
    Transient(String),
    /// Another writer moved the stored offsets: reload and read again.
    Moved,
    /// PostgreSQL refused a row the handler wrote in `flush`, outside the
    /// savepoints that find the event behind it: read the window again
    /// with each chunk's writes under them (`TxHandler::write_through`).
    Refused(String),
}

impl From<sqlx::Error> for ChunkError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(e.to_string())
    }
}

impl From<HandleError> for ChunkError {
    fn from(e: HandleError) -> Self {
        Self::Transient(e.to_string())
    }
}

/// Replays until `shutdown` turns true (a chunk being applied is finished).
pub async fn run_replay<H: TxHandler>(
    pool: PgPool,
    dlq: crate::Producer,
    config: ReplayConfig,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ReplayError> {
    let chunk = config.chunk.max(1);
    let mut window_size = config.window;
    let mut backoff = Duration::from_millis(100);
    'reload: loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        handler.abandoned(true);
        let mut applied = match load(&pool, &config.name).await {
            Ok(a) => a,
            Err(e) => {
                crate::outage::warn(&format!("{}: stored offsets unreadable", config.name), &e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let consumer: Arc<StreamConsumer<crate::Quiet>> = Arc::new(
            config
                .kafka
                .client()
                .set("group.id", &config.name)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("isolation.level", "read_committed")
                .set("fetch.wait.max.ms", "100")
                .set("max.partition.fetch.bytes", "4194304")
                .create_with_context(crate::Quiet)?,
        );
        let mut partitions = match assign(&consumer, &config.topics, &applied.offsets).await {
            Ok(n) => n,
            Err(e) => {
                crate::outage::warn(&format!("{}: partitions unreadable", config.name), &e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut looked = Instant::now();
        let mut window: Option<Window> = None;
        loop {
            let mut msgs: Vec<Incoming> = Vec::new();
            // Fill a chunk: wait as long as it takes for the first message
            // (a moment only while a window is open), a moment for more,
            // up to FILL_MAX in all.
            let mut filling: Option<Instant> = None;
            while msgs.len() < chunk {
                let wait = match filling {
                    None if window.is_none() => METADATA_EVERY,
                    None => FILL_WAIT,
                    Some(t) => match FILL_MAX.checked_sub(t.elapsed()) {
                        Some(left) => left.min(FILL_WAIT),
                        None => break,
                    },
                };
                let got = tokio::select! {
                    m = tokio::time::timeout(wait, consumer.recv()) => m,
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            // The sender is gone: nobody can stop us later.
                            return Ok(());
                        }
                        break;
                    }
                };
                match got {
                    Ok(Ok(m)) => {
                        let m = Incoming::from_message(&m);
                        // After a reload, Kafka may hand over what the
                        // stored offsets already hold.
                        let next = applied.offsets.get(&(m.topic.clone(), m.partition));
                        if next.is_none_or(|n| m.offset >= *n) {
                            msgs.push(m);
                            filling.get_or_insert_with(Instant::now);
                        }
                    }
                    Ok(Err(e)) => {
                        crate::outage::warn(&format!("{}: kafka receive", config.name), &e);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(_) => break,
                }
            }
            // Not full: caught up (or stopping), so the window commits.
            let full = msgs.len() >= chunk && !*shutdown.borrow();
            if msgs.is_empty() {
                if let Some(w) = window.take() {
                    if let Err(e) = commit_window(
                        &config.name,
                        w,
                        handler.as_ref(),
                        &mut applied,
                        config.compact_after,
                    )
                    .await
                    {
                        // Nothing of it is left in memory.
                        failed(&config.name, handler.as_ref(), e, true, &mut window_size);
                        continue 'reload;
                    }
                    handler.committed();
                }
                if *shutdown.borrow() {
                    return Ok(());
                }
                if looked.elapsed() >= METADATA_EVERY {
                    looked = Instant::now();
                    // Unreadable metadata is asked again at the next look.
                    let now = partitions_of(&consumer, &config.topics)
                        .await
                        .map(|p| p.len());
                    if now.is_ok_and(|n| n != partitions) {
                        tracing::info!(replay = %config.name, "partitions added; reassigning");
                        match assign(&consumer, &config.topics, &applied.offsets).await {
                            Ok(n) => partitions = n,
                            Err(_) => continue 'reload,
                        }
                    }
                }
                continue;
            }
            let mut backoff = Duration::from_millis(50);
            loop {
                let applied_chunk = apply_chunk(
                    &pool,
                    &dlq,
                    &config.name,
                    handler.as_ref(),
                    &applied,
                    &mut window,
                    &msgs,
                )
                .await;
                // Err with whether chunks before this one were in the window.
                let result = match applied_chunk {
                    Ok(()) if full && window.as_ref().is_some_and(|w| w.messages < window_size) => {
                        break;
                    }
                    Ok(()) => {
                        let w = window.take().expect("a chunk was applied in it");
                        let earlier = w.chunks > 1;
                        commit_window(
                            &config.name,
                            w,
                            handler.as_ref(),
                            &mut applied,
                            config.compact_after,
                        )
                        .await
                        .map_err(|e| (e, earlier))
                    }
                    Err(e) => Err((e, window.take().is_some_and(|w| w.chunks > 0))),
                };
                match result {
                    Ok(()) => {
                        handler.committed();
                        break;
                    }
                    Err((e, earlier)) => {
                        let Some(retry) =
                            failed(&config.name, handler.as_ref(), e, earlier, &mut window_size)
                        else {
                            continue 'reload;
                        };
                        crate::outage::warn(
                            &format!("{}: chunk failed; retrying", config.name),
                            &retry,
                        );
                        if *shutdown.borrow() {
                            return Ok(());
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if *shutdown.borrow() {
                return Ok(());
            }
        }
    }
}

/// What a chunk or window that did not commit leaves to do: `Some` error
/// to retry the same chunk (a transient failure with nothing of the
/// window before it), `None` to reload from the stored offsets. `earlier`:
/// chunks applied before this one were in the failed transaction.
fn failed<H: TxHandler + ?Sized>(
    name: &str,
    handler: &H,
    e: ChunkError,
    earlier: bool,
    window_size: &mut usize,
) -> Option<String> {
    handler.abandoned(false);
    match e {
        ChunkError::Moved => {
            tracing::info!(replay = %name, "another writer moved the stored offsets; reloading");
        }
        // From now on (this run of the replay), chunks write what they
        // apply under their savepoints, and each is a window of its own: a
        // refused row is then found and its event dead-lettered as the
        // live consumer would, rather than refusing the same window forever.
        ChunkError::Refused(refusal) => {
            tracing::warn!(replay = %name, %refusal,
                "a row of the window was refused when written; reading it again, writing each chunk");
            *window_size = 0;
            handler.write_through();
        }
        // A commit whose outcome is unknown is retried, and the retry
        // finds the offsets moved: a reload.
        ChunkError::Transient(e) if !earlier => return Some(e),
        ChunkError::Transient(e) => {
            crate::outage::warn(&format!("{name}: window failed; reading it again"), &e);
        }
    }
    None
}

/// Takes the replay `name`'s lock until the transaction ends: no chunk of
/// it commits meanwhile.
pub async fn lock(tx: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The stored offsets and last sequences of `name`.
async fn load(pool: &PgPool, name: &str) -> Result<Applied, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let offsets: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Applied {
        offsets: offsets.into_iter().map(|(t, p, n)| ((t, p), n)).collect(),
        rows: sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM replay_sequences WHERE consumer = $1",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))?,
        sequences: sequences(&mut conn, name).await?,
    })
}

/// The chunk rows' shape: topic → aggregate type → aggregate id → last
/// sequence (each name once per chunk, not once per aggregate).
type Nested = BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>>;

/// The last sequences of `name`: its chunks' rows, and any per-aggregate
/// rows (a consumer's, or a rebuild begun before chunks were stored so).
async fn sequences(
    conn: &mut PgConnection,
    name: &str,
) -> Result<HashMap<Aggregate, i64>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT topic, aggregate_type, aggregate_id, last_sequence \
         FROM consumer_sequences WHERE consumer = $1",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<Aggregate, i64> = rows
        .into_iter()
        .map(|(tp, t, i, q)| ((tp, t, i), q))
        .collect();
    let chunks: Vec<Json<Nested>> =
        sqlx::query_scalar("SELECT sequences FROM replay_sequences WHERE consumer = $1")
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
    for Json(chunk) in chunks {
        for (topic, types) in chunk {
            for (ty, ids) in types {
                for (id, q) in ids {
                    let last = out.entry((topic.clone(), ty.clone(), id)).or_insert(q);
                    *last = (*last).max(q);
                }
            }
        }
    }
    Ok(out)
}

/// Gives the live consumer `live` the last sequences replay `group`
/// reached where they differ from its own, and deletes the replay's: in
/// the transaction that hands `live` the replay's offsets.
pub async fn hand_over_sequences(
    tx: &mut PgConnection,
    live: &str,
    group: &str,
) -> Result<(), sqlx::Error> {
    let all = sequences(tx, group).await?;
    let (tp, t, i, q) = sequence_columns(&all);
    // The replay's, not the greater: it has read every message the live
    // consumer has (its offsets are at or past them) and its guard is the
    // one that made the tables the live consumer goes on with. Most equal
    // the live consumer's: filtered out before the insert, since a
    // conflicting row is locked (written) even when its update is not.
    sqlx::query(
        "INSERT INTO consumer_sequences (consumer, topic, aggregate_type, aggregate_id, last_sequence) \
         SELECT $1, u.tp, u.t, u.i, u.q \
         FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[]) AS u(tp, t, i, q) \
         WHERE NOT EXISTS (SELECT 1 FROM consumer_sequences c WHERE c.consumer = $1 \
           AND c.topic = u.tp AND c.aggregate_type = u.t AND c.aggregate_id = u.i \
           AND c.last_sequence = u.q) \
         ON CONFLICT (consumer, topic, aggregate_type, aggregate_id) \
         DO UPDATE SET last_sequence = EXCLUDED.last_sequence",
    )
    .bind(live)
    .bind(&tp)
    .bind(&t)
    .bind(&i)
    .bind(&q)
    .execute(&mut *tx)
    .await?;
    forget_sequences(tx, group).await
}

/// Deletes every last sequence stored for `name`.
pub async fn forget_sequences(tx: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM consumer_sequences WHERE consumer = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM replay_sequences WHERE consumer = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The topics' partitions, from the broker's metadata.
async fn partitions_of(
    consumer: &Arc<StreamConsumer<crate::Quiet>>,
    topics: &[String],
) -> Result<Vec<(String, i32)>, rdkafka::error::KafkaError> {
    let (consumer, topics) = (consumer.clone(), topics.to_vec());
    // A blocking call of librdkafka's: off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for topic in &topics {
            let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            for t in meta.topics() {
                out.extend(
                    t.partitions()
                        .iter()
                        .map(|p| (t.name().to_string(), p.id())),
                );
            }
        }
        Ok(out)
    })
    .await
    .map_err(|_| rdkafka::error::KafkaError::Canceled)?
}

/// Assigns every partition of the topics, each from its stored offset (the
/// beginning when there is none); answers how many there are.
async fn assign(
    consumer: &Arc<StreamConsumer<crate::Quiet>>,
    topics: &[String],
    offsets: &HashMap<(String, i32), i64>,
) -> Result<usize, rdkafka::error::KafkaError> {
    let parts = partitions_of(consumer, topics).await?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in &parts {
        let from = offsets
            .get(&(topic.clone(), *partition))
            .map_or(Offset::Beginning, |n| Offset::Offset(*n));
        tpl.add_partition_offset(topic, *partition, from)?;
    }
    consumer.assign(&tpl)?;
    Ok(parts.len())
}

/// Applies one chunk in the window's transaction, opening one (and
/// checking the stored offsets under the replay's lock) when none is open.
async fn apply_chunk<H: TxHandler + ?Sized>(
    pool: &PgPool,
    dlq: &crate::Producer,
    name: &str,
    handler: &H,
    applied: &Applied,
    window: &mut Option<Window>,
    msgs: &[Incoming],
) -> Result<(), ChunkError> {
    // The guard, in memory: the chunk's verdicts and last sequences.
    let mut last: HashMap<Aggregate, i64> = HashMap::new();
    let mut kept: Vec<&Incoming> = Vec::with_capacity(msgs.len());
    let mut refused: Vec<(&Incoming, Refusal)> = Vec::new();
    for m in msgs {
        let p = match Position::of(m) {
            Ok(p) => p,
            Err(r) => {
                refused.push((m, Refusal::Poison(r)));
                continue;
            }
        };
        let key = (m.topic.clone(), p.aggregate_type, p.aggregate_id);
        let before = last
            .get(&key)
            .or_else(|| window.as_ref().and_then(|w| w.last.get(&key)))
            .or_else(|| applied.sequences.get(&key))
            .copied()
            .unwrap_or(0);
        let expected = before + 1;
        if p.sequence < expected {
            continue;
        }
        if p.sequence > expected {
            let reason = format!(
                "sequence out of order: {}/{} expected {expected}, got {}",
                key.1, key.2, p.sequence
            );
            refused.push((m, Refusal::OutOfSequence(reason)));
            continue;
        }
        last.insert(key, p.sequence);
        kept.push(m);
    }

    let w = match window {
        Some(w) => w,
        None => {
            let mut tx = pool.begin().await?;
            lock(&mut tx, name).await?;
            let stored: Vec<(String, i32, i64)> = sqlx::query_as(
                "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1",
            )
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
            let stored: HashMap<(String, i32), i64> =
                stored.into_iter().map(|(t, p, n)| ((t, p), n)).collect();
            if stored != applied.offsets {
                return Err(ChunkError::Moved);
            }
            window.insert(Window {
                tx,
                last: HashMap::new(),
                next: HashMap::new(),
                messages: 0,
                chunks: 0,
            })
        }
    };
    for (m, reason) in apply_isolating(&mut w.tx, handler, &kept).await? {
        refused.push((m, Refusal::Poison(reason)));
    }
    // Published before the commit: a failed commit republishes them (at
    // least once, as `run_consumer` does), a commit never skips one unsent.
    for (m, refusal) in &refused {
        publish_dead_letter(dlq, name, m, refusal.reason()).await?;
    }
    for m in msgs {
        let n = w.next.entry((m.topic.clone(), m.partition)).or_insert(0);
        *n = (*n).max(m.offset + 1);
    }
    w.last.extend(last);
    w.messages += msgs.len();
    w.chunks += 1;
    Ok(())
}

/// Commits a window: what the handler kept for it, the guard's last
/// sequences and the offsets reached; `applied` moves only once it
/// committed.
async fn commit_window<H: TxHandler + ?Sized>(
    name: &str,
    window: Window,
    handler: &H,
    applied: &mut Applied,
    compact_after: usize,
) -> Result<(), ChunkError> {
    let Window {
        mut tx, last, next, ..
    } = window;
    handler.flush(&mut tx).await.map_err(|e| match e {
        HandleError::Poison(reason) => ChunkError::Refused(reason),
        other => ChunkError::from(other),
    })?;
    let compact = applied.rows >= compact_after.max(1);
    if compact {
        sqlx::query("DELETE FROM replay_sequences WHERE consumer = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    if !last.is_empty() || compact {
        let mut rows = Nested::new();
        let every = compact.then_some(&applied.sequences);
        for ((topic, ty, id), seq) in every.into_iter().flatten().chain(&last) {
            rows.entry(topic.clone())
                .or_default()
                .entry(ty.clone())
                .or_default()
                .insert(id.clone(), *seq);
        }
        sqlx::query("INSERT INTO replay_sequences (consumer, sequences) VALUES ($1, $2)")
            .bind(name)
            .bind(Json(rows))
            .execute(&mut *tx)
            .await?;
    }
    let (mut topics, mut parts, mut offs) = (Vec::new(), Vec::new(), Vec::new());
    for ((topic, partition), n) in &next {
        topics.push(topic.as_str());
        parts.push(*partition);
        offs.push(*n);
    }
    sqlx::query(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) \
         SELECT $1, t, p, n FROM unnest($2::text[], $3::int4[], $4::int8[]) AS u(t, p, n) \
         ON CONFLICT (consumer, topic, partition) \
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
    )
    .bind(name)
    .bind(&topics)
    .bind(&parts)
    .bind(&offs)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    applied.rows = if compact {
        1
    } else {
        applied.rows + usize::from(!last.is_empty())
    };
    applied.sequences.extend(last);
    applied.offsets.extend(next);
    Ok(())
}

/// Applies the messages in order; those the handler refuses are found by
/// halving under savepoints and answered with the reason, the others
/// applied.
async fn apply_isolating<'a, H: TxHandler + ?Sized>(
    tx: &mut PgConnection,
    handler: &H,
    msgs: &[&'a Incoming],
) -> Result<Vec<(&'a Incoming, String)>, HandleError> {
    let mut refused = Vec::new();
    // The parts still to apply, the next one last.
    let mut todo: Vec<&[&Incoming]> = vec![msgs];
    while let Some(part) = todo.pop() {
        if part.is_empty() {
            continue;
        }
        sqlx::query("SAVEPOINT replay_part")
            .execute(&mut *tx)
            .await?;
        match handle_guarded(handler, tx, part).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT replay_part")
                    .execute(&mut *tx)
                    .await?;
            }
            Err(HandleError::Poison(reason)) => {
                sqlx::query("ROLLBACK TO SAVEPOINT replay_part")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT replay_part")
                    .execute(&mut *tx)
                    .await?;
                if let [one] = part {
                    refused.push((*one, reason));
                } else {
                    let (first, second) = part.split_at(part.len() / 2);
                    todo.push(second);
                    todo.push(first);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}
