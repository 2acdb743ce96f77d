//! Blue/green rebuilds. A rebuild of a model fills `<table>_next` from the
//! start of the event topics under its own consumer name (`bus::run_replay`:
//! chunks spanning every partition, offsets and the sequence guard's last
//! sequences committed with each chunk, so a restarted projector resumes
//! where it stopped), while the live tables keep serving and the live
//! consumer keeps writing. Once the rebuild is at or past the live
//! consumer's offsets on every partition, one transaction swaps the tables
//! and hands the live consumer the rebuild's offsets and sequences; a
//! replayed event changes nothing on either side.
//! The statements are `store::rebuild`'s; this module decides when each
//! runs, and in which transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bus::{ReplayConfig, Watermarks};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::models::{ModelConsumer, ReadModel, NEXT};
use crate::store::rebuild as store;

const POLL: Duration = Duration::from_millis(250);
/// Longest the live consumer is held at a swap for the replay to catch up.
const CATCH_UP: Duration = Duration::from_secs(5);
/// A remainder up to this many offsets may be commit markers alone.
const MARKER_SLACK: i64 = 16;

pub struct Projections {
    pub pool: PgPool,
    pub dlq: bus::Producer,
    pub kafka: bus::Kafka,
    pub topics: Vec<String>,
    pub contexts: Arc<HashMap<String, String>>,
    /// `<group prefix>.projector`: consumer names are `<this>.<model>`.
    pub group_base: String,
    pub models: Vec<Arc<dyn ReadModel>>,
    /// Messages per rebuild chunk, across partitions: large, since
    /// nothing waits on them.
    pub batch: usize,
    /// See `Config::rebuild_cached_states`.
    pub cached_states: usize,
    /// Messages per rebuild transaction (`Config::rebuild_window`, bounded).
    pub window: usize,
    pub watermarks: Watermarks,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("a rebuild is already running")]
    InProgress,
    #[error("no read model named {0}")]
    UnknownModel(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A consumer's position in one partition.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsumerCheckpoint)]
pub struct Checkpoint {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

/// Where a rebuild stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RebuildState {
    Running,
    Done,
    Failed,
}

/// A model's latest rebuild.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RebuildStatus {
    pub id: Uuid,
    #[schema(value_type = RebuildState)]
    pub status: String,
    /// The table it writes (`<model>_next` while running).
    pub table: String,
    pub started_at: DateTime<Utc>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Offsets consumed (a transactional producer's commit markers count).
    pub events: i64,
    pub events_per_sec: f64,
    pub lag: i64,
    /// Null unless running with progress to extrapolate.
    #[schema(required = true)]
    pub eta_secs: Option<f64>,
    /// Why it failed; null otherwise.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// A read model's live consumer and latest rebuild.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelStatus {
    pub name: String,
    pub table: String,
    pub consumer: String,
    pub lag: i64,
    pub checkpoints: Vec<Checkpoint>,
    /// Null while the model was never rebuilt.
    #[schema(required = true)]
    pub rebuild: Option<RebuildStatus>,
}

impl Projections {
    pub fn live_group(&self, model: &str) -> String {
        format!("{}.{model}", self.group_base)
    }

    fn rebuild_group(&self, model: &str, id: Uuid) -> String {
        format!("{}.rebuild.{model}.{}", self.group_base, id.simple())
    }

    fn model(&self, name: &str) -> Result<Arc<dyn ReadModel>, RebuildError> {
        self.models
            .iter()
            .find(|m| m.name() == name)
            .cloned()
            .ok_or_else(|| RebuildError::UnknownModel(name.to_string()))
    }

    /// Creates the next tables and the rebuild's rows in one transaction,
    /// then starts rebuilding. `names` empty means every model.
    pub async fn start(
        self: &Arc<Self>,
        names: &[String],
    ) -> Result<(Uuid, Vec<String>), RebuildError> {
        let models: Vec<Arc<dyn ReadModel>> = if names.is_empty() {
            self.models.clone()
        } else {
            let mut unique: Vec<&String> = names.iter().collect();
            unique.sort();
            unique.dedup();
            unique
                .into_iter()
                .map(|n| self.model(n))
                .collect::<Result<_, _>>()?
        };
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        if store::running_count(&mut tx).await? > 0 {
            return Err(RebuildError::InProgress);
        }
        for m in &models {
            for table in m.tables() {
                store::create_next(&mut tx, table).await?;
            }
            if !store::insert_running(&mut tx, id, m.name()).await? {
                return Err(RebuildError::InProgress);
            }
        }
        tx.commit().await?;
        let started = models.iter().map(|m| m.name().to_string()).collect();
        for m in models {
            self.spawn(id, m);
        }
        Ok((id, started))
    }

    /// Resumes rebuilds a stopped projector left running.
    pub async fn resume(self: &Arc<Self>) -> Result<(), sqlx::Error> {
        for (id, name) in store::running(&self.pool).await? {
            // A model this instance does not serve is another instance's.
            if let Ok(m) = self.model(&name) {
                tracing::info!(rebuild = %id, model = %name, "resuming rebuild");
                self.spawn(id, m);
            }
        }
        Ok(())
    }

    fn spawn(self: &Arc<Self>, id: Uuid, model: Arc<dyn ReadModel>) {
        let this = self.clone();
        tokio::spawn(async move {
            let name = model.name();
            if let Err(e) = this.run(id, model).await {
                tracing::error!(rebuild = %id, model = name, error = %e, "rebuild failed");
                let _ = store::mark_failed(&this.pool, id, name, &e.to_string()).await;
                // A failed rebuild is not resumed: its checkpoint goes.
                let group = this.rebuild_group(name, id);
                let forgotten = async {
                    let mut tx = this.pool.begin().await?;
                    store::forget_consumer(&mut tx, &group).await?;
                    tx.commit().await
                };
                if let Err(e) = forgotten.await {
                    tracing::warn!(rebuild = %id, model = name, error = %e, "checkpoint not deleted");
                }
            }
        });
    }

    async fn run(&self, id: Uuid, model: Arc<dyn ReadModel>) -> Result<(), sqlx::Error> {
        let name = model.name();
        let group = self.rebuild_group(name, id);
        let mut shutdown = self.shutdown.clone();
        // A pool of its own: at a swap the live consumer's lanes wait on
        // their frozen offsets, each holding one of the shared pool's
        // connections, while the replay must go on to catch up.
        let replay_pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut replay = Replay::default();
        let mut indexed = false;
        let result = loop {
            if !replay.running() {
                replay.start(self, &replay_pool, model.clone(), &group);
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
                why = replay.ended() => {
                    break Err(sqlx::Error::Protocol(format!("kafka: {why}")));
                }
            }
            if *shutdown.borrow() {
                break Ok(());
            }
            // A failed read is retried at the next poll, not fatal.
            match self.record_progress(id, name, &group).await {
                Ok(true) => {}
                // Another instance swapped it in, or it was ended.
                Ok(false) => break Ok(()),
                Err(e) => {
                    tracing::warn!(rebuild = %id, model = name, error = %e, "progress not recorded");
                    continue;
                }
            }
            match self.behind(&group, name).await {
                Ok(b) if b.is_empty() => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(rebuild = %id, model = name, error = %e, "offsets unreadable");
                    continue;
                }
            }
            if !indexed {
                // Caught up once: the other indexes now, in one pass each.
                // The replay goes on; each build holds its writes until done.
                for table in model.tables() {
                    store::index_next(&self.pool, table).await?;
                    // Only a head start on autovacuum: the rebuild goes on without.
                    if let Err(e) = store::vacuum_next(&self.pool, table).await {
                        tracing::warn!(rebuild = %id, table, error = %e, "next table not vacuumed");
                    }
                }
                indexed = true;
                continue;
            }
            match self.swap(id, model.as_ref(), &group, &mut replay).await {
                Ok(Swap::Done) => {
                    tracing::info!(rebuild = %id, model = name, "rebuild swapped in");
                    break Ok(());
                }
                // Another task took this rebuild over or ended it.
                Ok(Swap::NotOurs) => break Ok(()),
                Ok(Swap::Behind) => {}
                // Lock timeout (a long export, a busy live batch) or a
                // deadlock: nothing changed; try again after more consuming.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("55P03" | "40P01")) =>
                {
                    tracing::info!(rebuild = %id, model = name, "swap postponed: {e}");
                }
                Err(sqlx::Error::PoolTimedOut) => {
                    tracing::info!(rebuild = %id, model = name, "swap postponed: no connection");
                }
                Err(e) => break Err(e),
            }
        };
        replay.stop().await;
        result
    }

    /// Partitions where the live consumer is ahead of `group`.
    async fn behind(&self, group: &str, model: &str) -> Result<Vec<(String, i32)>, sqlx::Error> {
        store::behind(&self.pool, group, &self.live_group(model)).await
    }

    /// False when the rebuild is no longer running.
    async fn record_progress(
        &self,
        id: Uuid,
        model: &str,
        group: &str,
    ) -> Result<bool, sqlx::Error> {
        store::record_progress(&self.pool, id, model, group).await
    }

    /// The swap: one transaction, under locks that hold the live consumer
    /// off the live tables. It first freezes the live consumer's offsets and
    /// lets the replay, still running, catch up to them (at most
    /// `CATCH_UP`: the live projection pauses that long at most); chasing a
    /// live consumer that never stops would otherwise never end under
    /// steady traffic. Behind (and nothing changed) when the replay did not
    /// catch up in time.
    async fn swap(
        &self,
        id: Uuid,
        model: &dyn ReadModel,
        group: &str,
        replay: &mut Replay,
    ) -> Result<Swap, sqlx::Error> {
        let live = self.live_group(model.name());
        let mut tx = self.pool.begin().await?;
        store::set_lock_timeout(&mut tx).await?;
        let status = store::lock_rebuild(&mut tx, id, model.name()).await?;
        if status.as_deref() != Some("running") {
            return Ok(Swap::NotOurs);
        }
        // The live consumer's offset rows first, as each of its batches
        // takes them (then the tables): waiting for a batch rather than
        // deadlocking with it, and the offsets read below cannot move.
        store::lock_offsets(&mut tx, &live).await?;
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        // On the swap's own connection (each statement sees the replay's
        // new commits): the shared pool may be held by waiting lanes.
        while !store::behind(&mut *tx, group, &live).await?.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                tx.rollback().await?;
                return Ok(Swap::Behind);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Nothing writes the next tables from here; should the swap fail,
        // the caller starts the replay again.
        replay.stop().await;
        // And no chunk of a replay of it elsewhere (another instance).
        bus::replay::lock(&mut tx, group).await?;
        store::lock_tables(&mut tx, model.tables()).await?;
        // A live partition that had no offset row yet was not frozen.
        if !store::behind(&mut *tx, group, &live).await?.is_empty() {
            tx.rollback().await?;
            return Ok(Swap::Behind);
        }
        for table in model.tables() {
            store::replace_table(&mut tx, table).await?;
        }
        if model.tables().contains(&crate::models::audit::NAME) {
            // As-of snapshots were counted against the old audit trail.
            crate::store::licenses::drop_all_snapshots(&mut tx).await?;
        }
        let events = store::hand_over(&mut tx, &live, group).await?;
        store::mark_done(&mut tx, id, model.name(), events).await?;
        tx.commit().await?;
        Ok(Swap::Done)
    }

    /// Every model's checkpoints, lag and the latest rebuild's progress.
    pub async fn status(&self) -> Result<Vec<ModelStatus>, StatusError> {
        let marks = self.watermarks.of(&self.topics).await?;
        let mut out = Vec::new();
        for m in &self.models {
            let consumer = self.live_group(m.name());
            let checkpoints = self.checkpoints(&consumer, &marks).await?;
            let lag = checkpoints.iter().map(|c| c.lag).sum();
            let rebuild = self.latest_rebuild(m.name(), &marks).await?;
            out.push(ModelStatus {
                name: m.name().to_string(),
                table: m.tables().join(","),
                consumer,
                lag,
                checkpoints,
                rebuild,
            });
        }
        Ok(out)
    }

    /// A consumer's checkpoints; a small remainder below the high watermark
    /// is checked for being only commit markers, which are not lag.
    async fn checkpoints(
        &self,
        consumer: &str,
        marks: &[bus::PartitionMarks],
    ) -> Result<Vec<Checkpoint>, StatusError> {
        let mut cps = checkpoints(&self.pool, consumer, marks).await?;
        let small: Vec<bus::PartitionRange> = cps
            .iter()
            .filter(|c| (1..=MARKER_SLACK).contains(&c.lag))
            .map(|c| {
                (
                    c.topic.clone(),
                    c.partition,
                    c.next_offset,
                    c.high_watermark,
                )
            })
            .collect();
        if !small.is_empty() {
            let unread = self.watermarks.unread(small).await?;
            for c in cps
                .iter_mut()
                .filter(|c| (1..=MARKER_SLACK).contains(&c.lag))
            {
                if !unread.contains(&(c.topic.clone(), c.partition)) {
                    c.lag = 0;
                }
            }
        }
        Ok(cps)
    }

    async fn latest_rebuild(
        &self,
        model: &str,
        marks: &[bus::PartitionMarks],
    ) -> Result<Option<RebuildStatus>, StatusError> {
        let Some(r) = store::latest(&self.pool, model).await? else {
            return Ok(None);
        };
        let (id, status) = (r.rebuild_id, r.status);
        let (events, lag) = if status == "running" {
            let cps = self
                .checkpoints(&self.rebuild_group(model, id), marks)
                .await?;
            let consumed: i64 = cps.iter().map(|c| c.next_offset).sum();
            let low: i64 = marks.iter().map(|m| m.2).sum();
            (
                consumed - low.min(consumed),
                cps.iter().map(|c| c.lag).sum(),
            )
        } else {
            (r.events, 0)
        };
        let secs =
            (r.finished_at.unwrap_or(r.now) - r.started_at).num_milliseconds() as f64 / 1000.0;
        let rate = if secs > 0.0 {
            events as f64 / secs
        } else {
            0.0
        };
        Ok(Some(RebuildStatus {
            id,
            table: format!("{model}{}", if status == "running" { NEXT } else { "" }),
            eta_secs: (status == "running" && rate > 0.0).then(|| lag as f64 / rate),
            status,
            started_at: r.started_at,
            finished_at: r.finished_at,
            events,
            events_per_sec: rate,
            lag,
            error: r.error,
        }))
    }
}

type ReplayTask = JoinHandle<Result<(), bus::ReplayError>>;

/// A rebuild's replay task, started and stopped as the rebuild goes.
#[derive(Default)]
struct Replay {
    running: Option<(watch::Sender<bool>, ReplayTask)>,
}

impl Replay {
    fn running(&self) -> bool {
        self.running.is_some()
    }

    fn start(&mut self, p: &Projections, pool: &PgPool, model: Arc<dyn ReadModel>, group: &str) {
        let (stop, stop_rx) = watch::channel(false);
        let config = ReplayConfig {
            name: group.to_string(),
            kafka: p.kafka.clone(),
            topics: p.topics.clone(),
            chunk: p.batch,
            window: p.window,
            compact_after: bus::replay::MAX_CHUNK_ROWS,
        };
        let handler = Arc::new(ModelConsumer {
            model: model.for_replay(p.cached_states),
            contexts: p.contexts.clone(),
            suffix: NEXT,
        });
        let task = tokio::spawn(bus::run_replay(
            pool.clone(),
            p.dlq.clone(),
            config,
            handler,
            stop_rx,
        ));
        self.running = Some((stop, task));
    }

    /// Why the task ended on its own; pending while it runs (or there is none).
    async fn ended(&mut self) -> String {
        let Some((_, task)) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let why = match task.await {
            Ok(Err(e)) => e.to_string(),
            _ => "the rebuild's replay stopped".to_string(),
        };
        self.running = None;
        why
    }

    /// Stops the task once its chunk in flight is applied.
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

enum Swap {
    Done,
    /// The live consumer is ahead on some partition.
    Behind,
    /// The rebuild is no longer running (another task finished it).
    NotOurs,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl bus::outage::Unreachable for StatusError {
    fn outage(&self) -> Option<&'static bus::outage::Outage> {
        match self {
            StatusError::Kafka(e) => e.outage(),
            StatusError::Db(e) => e.outage(),
        }
    }
}

async fn checkpoints(
    pool: &PgPool,
    consumer: &str,
    marks: &[bus::PartitionMarks],
) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let stored = store::offsets(pool, consumer).await?;
    Ok(marks
        .iter()
        .map(|(topic, partition, low, high)| {
            let next = stored
                .get(&(topic.clone(), *partition))
                .copied()
                .unwrap_or(*low);
            Checkpoint {
                topic: topic.clone(),
                partition: *partition,
                next_offset: next,
                high_watermark: *high,
                lag: (high - next).max(0),
            }
        })
        .collect())
}
