//! What blue/green rebuilds read and write: `projection_rebuilds`, the
//! consumers' offsets and per-aggregate sequences, and the DDL that creates
//! a model's `<table>_next`, indexes it and swaps it in.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::models::NEXT;

/// How many rebuilds are running.
pub async fn running_count(tx: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM projection_rebuilds WHERE status = 'running'")
        .fetch_one(&mut *tx)
        .await
}

/// (Re)creates `<table>_next` empty, shaped as `table`, with its primary key.
pub async fn create_next(tx: &mut PgConnection, table: &str) -> Result<(), sqlx::Error> {
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
    .bind(table)
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
    Ok(())
}

/// Records a running rebuild of `model`; false when one is already running.
pub async fn insert_running(
    tx: &mut PgConnection,
    id: Uuid,
    model: &str,
) -> Result<bool, sqlx::Error> {
    // The partial unique index allows one running rebuild per model,
    // whichever projector instance started it.
    let inserted = sqlx::query(
        "INSERT INTO projection_rebuilds (rebuild_id, model, status) \
         VALUES ($1, $2, 'running') ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(model)
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The running rebuilds: each id and model.
pub async fn running(pool: &PgPool) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT rebuild_id, model FROM projection_rebuilds WHERE status = 'running'")
        .fetch_all(pool)
        .await
}

/// Sets a running rebuild's `events` to the offsets its consumer `group`
/// has committed; false when the rebuild is no longer running.
pub async fn record_progress(
    pool: &PgPool,
    id: Uuid,
    model: &str,
    group: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE projection_rebuilds SET events = \
           (SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer = $3) \
         WHERE rebuild_id = $1 AND model = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(model)
    .bind(group)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes consumer `group`'s offsets and sequences.
pub async fn forget_consumer(tx: &mut PgConnection, group: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM consumer_offsets WHERE consumer = $1")
        .bind(group)
        .execute(&mut *tx)
        .await?;
    bus::replay::forget_sequences(tx, group).await
}

/// Refreshes the planner's statistics of `<table>_next` and marks its
/// loaded pages all-visible: index-only scans of a table just loaded would
/// otherwise visit the heap for every row until autovacuum came by (an
/// as-of answer counts a license's audit rows that way), and autovacuum
/// would then scan it beside the live writes.
pub async fn vacuum_next(pool: &PgPool, table: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("VACUUM (ANALYZE) {table}{NEXT}"))
        .execute(pool)
        .await?;
    Ok(())
}

/// Bounds the transaction's waits for locks to three seconds: longer than
/// PostgreSQL's `deadlock_timeout` (1 s), after which a waiter cancels the
/// autovacuum that blocks it. With one second the swap gave up at the very
/// moment it would have got the lock, and an autovacuum of a freshly loaded
/// live table postponed it for 40 s (docs/benchmarks.md).
pub async fn set_lock_timeout(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL lock_timeout = '3s'")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Locks a rebuild's row and reads its status; None when there is none.
pub async fn lock_rebuild(
    tx: &mut PgConnection,
    id: Uuid,
    model: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT status FROM projection_rebuilds WHERE rebuild_id = $1 AND model = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(model)
    .fetch_optional(&mut *tx)
    .await
}

/// Locks a consumer's offset rows, in the order each of its batches takes
/// them.
pub async fn lock_offsets(tx: &mut PgConnection, consumer: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT 1 FROM consumer_offsets WHERE consumer = $1 ORDER BY topic, partition FOR UPDATE",
    )
    .bind(consumer)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Locks the tables against every other access until the transaction ends.
pub async fn lock_tables(tx: &mut PgConnection, tables: &[&str]) -> Result<(), sqlx::Error> {
    let tables = tables.join(", ");
    sqlx::query(&format!("LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Hands the rebuild consumer `group`'s offsets and sequences to the live
/// consumer (never moving it back) and deletes them; answers the offsets
/// `group` had consumed.
pub async fn hand_over(tx: &mut PgConnection, live: &str, group: &str) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) \
         SELECT $1, topic, partition, next_offset FROM consumer_offsets WHERE consumer = $2 \
         ON CONFLICT (consumer, topic, partition) DO UPDATE \
           SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset), \
               updated_at = now()",
    )
    .bind(live)
    .bind(group)
    .execute(&mut *tx)
    .await?;
    // Each aggregate's last sequence goes with the offsets.
    bus::replay::hand_over_sequences(tx, live, group).await?;
    let events: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer = $1",
    )
    .bind(group)
    .fetch_one(&mut *tx)
    .await?;
    forget_consumer(tx, group).await?;
    Ok(events)
}

/// Ends a rebuild as done, with the offsets it consumed.
pub async fn mark_done(
    tx: &mut PgConnection,
    id: Uuid,
    model: &str,
    events: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_rebuilds SET status = 'done', finished_at = clock_timestamp(), events = $3 \
         WHERE rebuild_id = $1 AND model = $2",
    )
    .bind(id)
    .bind(model)
    .bind(events)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A model's latest rebuild, and the database's clock when it was read.
pub struct RebuildRow {
    pub rebuild_id: Uuid,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Offsets consumed, as last recorded.
    pub events: i64,
    pub error: Option<String>,
    pub now: DateTime<Utc>,
}

/// The rebuild of `model` started last, if any.
pub async fn latest(pool: &PgPool, model: &str) -> Result<Option<RebuildRow>, sqlx::Error> {
    let Some(r) = sqlx::query(
        "SELECT rebuild_id, status, started_at, finished_at, events, error, \
           clock_timestamp() AS now FROM projection_rebuilds \
         WHERE model = $1 ORDER BY started_at DESC LIMIT 1",
    )
    .bind(model)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(RebuildRow {
        rebuild_id: r.try_get("rebuild_id")?,
        status: r.try_get("status")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        events: r.try_get("events")?,
        error: r.try_get("error")?,
        now: r.try_get("now")?,
    }))
}

/// A consumer's committed offsets, by topic and partition.
pub async fn offsets(
    pool: &PgPool,
    consumer: &str,
) -> Result<BTreeMap<(String, i32), i64>, sqlx::Error> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, next)| ((topic, partition), next))
        .collect())
}

/// Partitions where the `live` consumer is ahead of `group`.
pub async fn behind<'e, E>(
    db: E,
    group: &str,
    live: &str,
) -> Result<Vec<(String, i32)>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query_as(
        "SELECT l.topic, l.partition FROM consumer_offsets l \
         LEFT JOIN consumer_offsets r \
           ON r.consumer = $1 AND r.topic = l.topic AND r.partition = l.partition \
         WHERE l.consumer = $2 AND l.next_offset > coalesce(r.next_offset, 0)",
    )
    .bind(group)
    .bind(live)
    .fetch_all(db)
    .await
}

/// Gives `table_next` every index of `table` but its primary key (kept from
/// the start), under the live names plus `_next`.
pub async fn index_next(pool: &PgPool, table: &str) -> Result<(), sqlx::Error> {
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
pub async fn replace_table(tx: &mut PgConnection, table: &str) -> Result<(), sqlx::Error> {
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

/// Ends a running rebuild as failed, with the reason.
pub async fn mark_failed(
    pool: &PgPool,
    id: Uuid,
    model: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_rebuilds SET status = 'failed', finished_at = clock_timestamp(), error = $3 \
         WHERE rebuild_id = $1 AND model = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(model)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
