//! Blue/green rebuilds. A rebuild of a model fills `<table>_next` from the
//! start of the event topics with its own consumer group (offsets committed
//! with each batch, so a restarted projector resumes where it stopped), while
//! the live tables keep serving and the live consumer keeps writing. Once the
//! rebuild's consumer is at or past the live one's offsets on every
//! partition, one transaction swaps the tables and hands the live consumer
//! the rebuild's offsets; a replayed event changes nothing on either side.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bus::{ConsumerConfig, Watermarks};
use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

use crate::models::{ModelConsumer, ReadModel, NEXT};

const POLL: Duration = Duration::from_millis(250);
/// A remainder up to this many offsets may be commit markers alone.
const MARKER_SLACK: i64 = 16;

pub struct Projections {
    pub pool: PgPool,
    pub dlq: FutureProducer,
    pub kafka: bus::Kafka,
    pub topics: Vec<String>,
    pub contexts: Arc<HashMap<String, String>>,
    /// `<group prefix>.projector`: consumer names are `<this>.<model>`.
    pub group_base: String,
    pub models: Vec<Arc<dyn ReadModel>>,
    /// Messages per rebuild transaction: large, since nothing waits on them.
    pub batch: usize,
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

#[derive(Debug, Serialize)]
pub struct Checkpoint {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

#[derive(Debug, Serialize)]
pub struct RebuildStatus {
    pub id: Uuid,
    pub status: String,
    pub table: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Offsets consumed (a transactional producer's commit markers count).
    pub events: i64,
    pub events_per_sec: f64,
    pub lag: i64,
    pub eta_secs: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelStatus {
    pub name: String,
    pub table: String,
    pub consumer: String,
    pub lag: i64,
    pub checkpoints: Vec<Checkpoint>,
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
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM projection_rebuilds WHERE status = 'running'")
                .fetch_one(&mut *tx)
                .await?;
        if running > 0 {
            return Err(RebuildError::InProgress);
        }
        for m in &models {
            for table in m.tables() {
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}{NEXT}"))
                    .execute(&mut *tx)
                    .await?;
                // The primary key now (it is the duplicate guard), the other
                // indexes once the rows are in: building an index in one
                // pass is far cheaper than maintaining it row by row.
                sqlx::query(&format!(
                    "CREATE TABLE {table}{NEXT} (LIKE {table} INCLUDING ALL EXCLUDING INDEXES)"
                ))
                .execute(&mut *tx)
                .await?;
                let key: Vec<String> = sqlx::query_scalar(
                    "SELECT a.attname::text FROM pg_index i \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = $1::regclass AND i.indisprimary \
                     ORDER BY array_position(i.indkey::int2[], a.attnum)",
                )
                .bind(*table)
                .fetch_all(&mut *tx)
                .await?;
                if !key.is_empty() {
                    sqlx::query(&format!(
                        "ALTER TABLE {table}{NEXT} ADD PRIMARY KEY ({})",
                        key.join(", ")
                    ))
                    .execute(&mut *tx)
                    .await?;
                }
            }
            // The partial unique index allows one running rebuild per model,
            // whichever projector instance started it.
            let inserted = sqlx::query(
                "INSERT INTO projection_rebuilds (rebuild_id, model, status) \
                 VALUES ($1, $2, 'running') ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(m.name())
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() != 1 {
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
        let rows = sqlx::query(
            "SELECT rebuild_id, model FROM projection_rebuilds WHERE status = 'running'",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let id: Uuid = r.try_get("rebuild_id")?;
            let name: String = r.try_get("model")?;
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
                fail(&this.pool, id, name, &e.to_string()).await;
            }
        });
    }

    async fn run(&self, id: Uuid, model: Arc<dyn ReadModel>) -> Result<(), sqlx::Error> {
        let name = model.name();
        let group = self.rebuild_group(name, id);
        let mut shutdown = self.shutdown.clone();
        loop {
            let (stop, stop_rx) = watch::channel(false);
            let mut config = ConsumerConfig::new(&group, &self.kafka, self.topics.clone());
            config.batch_max = self.batch;
            let handler = Arc::new(ModelConsumer {
                model: model.clone(),
                contexts: self.contexts.clone(),
                suffix: NEXT,
            });
            let mut consumer = tokio::spawn(bus::run_consumer(
                self.pool.clone(),
                self.dlq.clone(),
                config,
                handler,
                stop_rx,
            ));
            // Consume until at or past the live consumer everywhere.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.changed() => {}
                    ended = &mut consumer => {
                        let why = match ended {
                            Ok(Err(e)) => e.to_string(),
                            _ => "the rebuild's consumer stopped".to_string(),
                        };
                        return Err(sqlx::Error::Protocol(format!("kafka: {why}")));
                    }
                }
                if *shutdown.borrow() {
                    let _ = stop.send(true);
                    let _ = consumer.await;
                    return Ok(());
                }
                // A failed read is retried at the next poll, not fatal.
                if let Err(e) = self.record_progress(id, name, &group).await {
                    tracing::warn!(rebuild = %id, model = name, error = %e, "progress not recorded");
                    continue;
                }
                match self.behind(&group, name).await {
                    Ok(b) if b.is_empty() => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(rebuild = %id, model = name, error = %e, "offsets unreadable");
                    }
                }
            }
            // Stop the rebuild's consumer so nothing writes the next tables
            // while they are indexed and become the live ones.
            let _ = stop.send(true);
            let _ = consumer.await;
            for table in model.tables() {
                index_next(&self.pool, table).await?;
            }
            match self.swap(id, model.as_ref(), &group).await {
                Ok(Swap::Done) => {
                    tracing::info!(rebuild = %id, model = name, "rebuild swapped in");
                    return Ok(());
                }
                // Another task took this rebuild over or ended it.
                Ok(Swap::NotOurs) => return Ok(()),
                Ok(Swap::Behind) => {}
                // Lock timeout (a long export, a busy live batch) or a
                // deadlock: nothing changed; try again after more consuming.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("55P03" | "40P01")) =>
                {
                    tracing::info!(rebuild = %id, model = name, "swap postponed: {e}");
                }
                Err(e) => return Err(e),
            }
            // The live consumer moved ahead meanwhile: consume some more.
        }
    }

    /// Partitions where the live consumer is ahead of `group`.
    async fn behind(&self, group: &str, model: &str) -> Result<Vec<(String, i32)>, sqlx::Error> {
        behind(&self.pool, group, &self.live_group(model)).await
    }

    async fn record_progress(&self, id: Uuid, model: &str, group: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE projection_rebuilds SET events = \
               (SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer = $3) \
             WHERE rebuild_id = $1 AND model = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(model)
        .bind(group)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The swap: one transaction, under locks that hold the live consumer
    /// off the live tables. False (and nothing changed) when the live
    /// consumer got ahead again.
    async fn swap(
        &self,
        id: Uuid,
        model: &dyn ReadModel,
        group: &str,
    ) -> Result<Swap, sqlx::Error> {
        let live = self.live_group(model.name());
        for table in model.tables() {
            sqlx::query(&format!("ANALYZE {table}{NEXT}"))
                .execute(&self.pool)
                .await?;
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM projection_rebuilds WHERE rebuild_id = $1 AND model = $2 FOR UPDATE",
        )
        .bind(id)
        .bind(model.name())
        .fetch_optional(&mut *tx)
        .await?;
        if status.as_deref() != Some("running") {
            return Ok(Swap::NotOurs);
        }
        // The live consumer's offset rows first, as each of its batches
        // takes them (then the tables): waiting for a batch rather than
        // deadlocking with it, and the offsets read below cannot move.
        sqlx::query(
            "SELECT 1 FROM consumer_offsets WHERE consumer = $1 ORDER BY topic, partition FOR UPDATE",
        )
        .bind(&live)
        .execute(&mut *tx)
        .await?;
        let tables = model.tables().join(", ");
        sqlx::query(&format!("LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *tx)
            .await?;
        if !behind(&mut *tx, group, &live).await?.is_empty() {
            tx.rollback().await?;
            return Ok(Swap::Behind);
        }
        for table in model.tables() {
            replace_table(&mut tx, table).await?;
        }
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) \
             SELECT $1, topic, partition, next_offset FROM consumer_offsets WHERE consumer = $2 \
             ON CONFLICT (consumer, topic, partition) DO UPDATE \
               SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset), \
                   updated_at = now()",
        )
        .bind(&live)
        .bind(group)
        .execute(&mut *tx)
        .await?;
        // Each aggregate's last sequence goes with the offsets.
        sqlx::query(
            "INSERT INTO consumer_sequences (consumer, topic, aggregate_type, aggregate_id, last_sequence) \
             SELECT $1, topic, aggregate_type, aggregate_id, last_sequence FROM consumer_sequences \
             WHERE consumer = $2 \
             ON CONFLICT (consumer, topic, aggregate_type, aggregate_id) DO UPDATE \
               SET last_sequence = GREATEST(consumer_sequences.last_sequence, EXCLUDED.last_sequence)",
        )
        .bind(&live)
        .bind(group)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM consumer_sequences WHERE consumer = $1")
            .bind(group)
            .execute(&mut *tx)
            .await?;
        let events: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer = $1",
        )
        .bind(group)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM consumer_offsets WHERE consumer = $1")
            .bind(group)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE projection_rebuilds SET status = 'done', finished_at = clock_timestamp(), events = $3 \
             WHERE rebuild_id = $1 AND model = $2",
        )
        .bind(id)
        .bind(model.name())
        .bind(events)
        .execute(&mut *tx)
        .await?;
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
        let Some(r) = sqlx::query(
            "SELECT rebuild_id, status, started_at, finished_at, events, error, \
               clock_timestamp() AS now FROM projection_rebuilds \
             WHERE model = $1 ORDER BY started_at DESC LIMIT 1",
        )
        .bind(model)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let id: Uuid = r.try_get("rebuild_id")?;
        let status: String = r.try_get("status")?;
        let started_at: DateTime<Utc> = r.try_get("started_at")?;
        let finished_at: Option<DateTime<Utc>> = r.try_get("finished_at")?;
        let now: DateTime<Utc> = r.try_get("now")?;
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
            (r.try_get("events")?, 0)
        };
        let secs = (finished_at.unwrap_or(now) - started_at).num_milliseconds() as f64 / 1000.0;
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
            started_at,
            finished_at,
            events,
            events_per_sec: rate,
            lag,
            error: r.try_get("error")?,
        }))
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

async fn checkpoints(
    pool: &PgPool,
    consumer: &str,
    marks: &[bus::PartitionMarks],
) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let stored: BTreeMap<(String, i32), i64> = sqlx::query(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok((
            (r.try_get("topic")?, r.try_get("partition")?),
            r.try_get("next_offset")?,
        ))
    })
    .collect::<Result<_, sqlx::Error>>()?;
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

async fn behind<'e, E>(db: E, group: &str, live: &str) -> Result<Vec<(String, i32)>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query(
        "SELECT l.topic, l.partition FROM consumer_offsets l \
         LEFT JOIN consumer_offsets r \
           ON r.consumer = $1 AND r.topic = l.topic AND r.partition = l.partition \
         WHERE l.consumer = $2 AND l.next_offset > coalesce(r.next_offset, 0)",
    )
    .bind(group)
    .bind(live)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("topic")?, r.try_get("partition")?)))
    .collect()
}

/// Gives `table_next` every index of `table` but its primary key (kept from
/// the start), under the live names plus `_next`.
async fn index_next(pool: &PgPool, table: &str) -> Result<(), sqlx::Error> {
    let indexes: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisunique, \
           regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE (UNIQUE )?INDEX \\S+ ON \\S+ ', '\\1') \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = $1::regclass AND NOT i.indisprimary",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    for (name, unique, shape) in indexes {
        let unique = if unique { "UNIQUE " } else { "" };
        sqlx::query(&format!(
            "CREATE {unique}INDEX IF NOT EXISTS {name}{NEXT} ON {table}{NEXT} {shape}"
        ))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Drops `table` and renames `table_next` to it, its indexes taking the old
/// indexes' names (matched by definition), so every generation looks alike.
async fn replace_table(tx: &mut PgConnection, table: &str) -> Result<(), sqlx::Error> {
    let shapes = |t: String| {
        sqlx::query_as::<_, (String, String)>(
            "SELECT indexname, regexp_replace(indexdef, '^CREATE (UNIQUE )?INDEX \\S+ ON \\S+ ', '\\1') \
             FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1",
        )
        .bind(t)
    };
    let old: HashMap<String, String> = shapes(table.to_string())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(name, shape)| (shape, name))
        .collect();
    let new = shapes(format!("{table}{NEXT}")).fetch_all(&mut *tx).await?;
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("ALTER TABLE {table}{NEXT} RENAME TO {table}"))
        .execute(&mut *tx)
        .await?;
    for (name, shape) in new {
        if let Some(old_name) = old.get(&shape) {
            sqlx::query(&format!("ALTER INDEX {name} RENAME TO {old_name}"))
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

async fn fail(pool: &PgPool, id: Uuid, model: &str, error: &str) {
    let _ = sqlx::query(
        "UPDATE projection_rebuilds SET status = 'failed', finished_at = clock_timestamp(), error = $3 \
         WHERE rebuild_id = $1 AND model = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(model)
    .bind(error)
    .execute(pool)
    .await;
}
