//! The hash chain as stored: reading whole events from the `events` table.
//! The rule itself (canonical bytes, hashing, verification) lives in the
//! `evidence` crate, which an offline verifier links without the database.

pub use evidence::chain::*;
use sqlx::{PgPool, Row};

/// The columns of `StoredEvent`, for every query that reads whole events.
pub const STORED_EVENT_COLUMNS: &str = "global_position, event_id, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload::text AS payload, metadata::text AS metadata, \
     recorded_at, prev_hash, hash";

/// Reads one whole event selected with `STORED_EVENT_COLUMNS`.
pub fn from_row(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        global_position: row.try_get("global_position")?,
        event_id: row.try_get("event_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Loads an aggregate's stored events in the order the store keeps them.
pub async fn load_stored(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Verifies one aggregate's chain as stored in the database.
pub async fn verify(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<ChainReport, sqlx::Error> {
    let events = load_stored(pool, aggregate_type, aggregate_id).await?;
    Ok(verify_chain(aggregate_type, aggregate_id, &events))
}
