//! `audit_trail`: one row per event of every context, keyed by event id (a
//! re-published event is skipped). The model's batch insert, and the
//! filtered reads of `GET /v1/audit` — a page, or the whole trail as a
//! stream of rows.

use bus::HandleError;
use chrono::{DateTime, Utc};
use eventstore::chain::metadata_text;
use futures::{Stream, TryStreamExt};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::and;
use crate::models::Decoded;

/// The rows of one batch, column by column, as the insert binds them.
#[derive(Default)]
pub struct Columns {
    event_id: Vec<Uuid>,
    context: Vec<String>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    global_position: Vec<i64>,
    license_id: Vec<Option<Uuid>>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
    recorded_at: Vec<DateTime<Utc>>,
    actor_kind: Vec<String>,
    actor_id: Vec<String>,
    command_id: Vec<Uuid>,
    correlation_id: Vec<String>,
    causation_id: Vec<Option<String>>,
    payload: Vec<String>,
    metadata: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
    actor_via: Vec<Option<String>>,
    leaf_index: Vec<Option<i64>>,
}

impl Columns {
    /// Adds an event's row; an event whose metadata cannot be written as
    /// the event store hashed it, or whose sequence is out of range, is
    /// poison.
    pub fn push(&mut self, d: &Decoded) -> Result<(), HandleError> {
        let e = &d.raw;
        // The metadata text the event store hashed.
        let metadata = metadata_text(e).map_err(|err| HandleError::Poison(err.to_string()))?;
        self.event_id.push(e.event_id);
        self.context.push(d.context.clone());
        self.aggregate_type.push(e.aggregate_type.clone());
        self.aggregate_id.push(e.aggregate_id.clone());
        self.sequence.push(
            i64::try_from(e.sequence)
                .map_err(|_| HandleError::Poison("sequence out of range".into()))?,
        );
        self.global_position.push(e.global_position);
        self.license_id.push(d.license_id);
        self.event_type.push(e.event_type.clone());
        self.event_version.push(e.event_version.clone());
        self.occurred_at.push(e.occurred_at);
        self.recorded_at.push(e.recorded_at);
        self.actor_kind.push(actor_kind(&e.actor));
        self.actor_id.push(e.actor.id.clone());
        self.command_id.push(e.command_id);
        self.correlation_id.push(e.correlation_id.clone());
        self.causation_id.push(e.causation_id.clone());
        self.payload.push(e.payload.get().to_string());
        self.metadata.push(metadata);
        self.prev_hash.push(e.prev_hash.clone());
        self.hash.push(e.hash.clone());
        self.actor_via.push(e.actor.via.clone());
        self.leaf_index.push(d.leaf_index);
        Ok(())
    }
}

/// The actor's kind as its JSON name (`actor_kind`).
pub fn actor_kind(a: &contracts::Actor) -> String {
    serde_json::to_value(a.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Inserts a batch into `audit_trail<suffix>`; an event already there is
/// left as it is.
pub async fn insert(tx: &mut PgConnection, suffix: &str, cols: Columns) -> Result<(), sqlx::Error> {
    // One statement per batch: the arrays are unnested server-side.
    let sql = format!(
        "INSERT INTO audit_trail{suffix} ({INSERTED}) \
         SELECT u.event_id, u.context, u.aggregate_type, u.aggregate_id, u.sequence, \
           u.global_position, u.license_id, u.event_type, u.event_version, u.occurred_at, \
           u.recorded_at, u.actor_kind, u.actor_id, u.command_id, u.correlation_id, \
           u.causation_id, u.payload::json, u.metadata::json, u.prev_hash, u.hash, u.actor_via, \
           u.leaf_index \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
           $7::uuid[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
           $12::text[], $13::text[], $14::uuid[], $15::text[], $16::text[], $17::text[], \
           $18::text[], $19::text[], $20::text[], $21::text[], $22::int8[]) \
           AS u(event_id, context, aggregate_type, aggregate_id, sequence, global_position, \
           license_id, event_type, event_version, occurred_at, recorded_at, actor_kind, \
           actor_id, command_id, correlation_id, causation_id, payload, metadata, prev_hash, hash, \
           actor_via, leaf_index) \
         ON CONFLICT (event_id) DO NOTHING"
    );
    sqlx::query(&sql)
        .bind(cols.event_id)
        .bind(cols.context)
        .bind(cols.aggregate_type)
        .bind(cols.aggregate_id)
        .bind(cols.sequence)
        .bind(cols.global_position)
        .bind(cols.license_id)
        .bind(cols.event_type)
        .bind(cols.event_version)
        .bind(cols.occurred_at)
        .bind(cols.recorded_at)
        .bind(cols.actor_kind)
        .bind(cols.actor_id)
        .bind(cols.command_id)
        .bind(cols.correlation_id)
        .bind(cols.causation_id)
        .bind(cols.payload)
        .bind(cols.metadata)
        .bind(cols.prev_hash)
        .bind(cols.hash)
        .bind(cols.actor_via)
        .bind(cols.leaf_index)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Loads a rebuild's batch into `audit_trail<suffix>` with one binary
/// `COPY`, which PostgreSQL ingests at a fraction of the insert's cost: no
/// arrays to unnest, no conflict check beyond the primary key. The replay's
/// sequence guard has already dropped every event applied before, so an
/// event id already in the table is a second event reusing it — one of the
/// two forged: poison, where the live insert skips it. Either reader keeps
/// whichever of the two it read first; across partitions that order is not
/// the same for both (an id unique per context would settle it; not done).
pub async fn copy(tx: &mut PgConnection, suffix: &str, cols: Columns) -> Result<(), HandleError> {
    let data = binary_copy(&cols)?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY audit_trail{suffix} ({INSERTED}) FROM STDIN WITH (FORMAT binary)"
        ))
        .await?;
    copy.send(data).await?;
    match copy.finish().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") => Err(
            HandleError::Poison(format!("event id already in the audit trail: {e}")),
        ),
        Err(e) => Err(e.into()),
    }
}

/// The columns both writes fill, in `Columns`' order.
const INSERTED: &str = "event_id, context, aggregate_type, aggregate_id, sequence, \
     global_position, license_id, event_type, event_version, occurred_at, recorded_at, \
     actor_kind, actor_id, command_id, correlation_id, causation_id, payload, metadata, \
     prev_hash, hash, actor_via, leaf_index";

/// PostgreSQL's binary `COPY` format: a header, then per row its field
/// count and each field as a length (-1 for null) and the type's binary
/// form — the same bytes the insert's binds carry.
fn binary_copy(c: &Columns) -> Result<Vec<u8>, HandleError> {
    /// A field's length and bytes; None is SQL null (length -1).
    fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) -> Result<(), HandleError> {
        let Some(bytes) = bytes else {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        };
        let len = i32::try_from(bytes.len())
            .map_err(|_| HandleError::Poison("a field over 2 GiB".into()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    }
    fn time(out: &mut Vec<u8>, t: &DateTime<Utc>) -> Result<(), HandleError> {
        // Microseconds since 2000-01-01, as sqlx encodes a bind.
        let epoch = DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_default();
        let micros = (*t - epoch)
            .num_microseconds()
            .ok_or_else(|| HandleError::Poison("a timestamp out of range".into()))?;
        field(out, Some(&micros.to_be_bytes()))
    }
    fn text(out: &mut Vec<u8>, s: Option<&str>) -> Result<(), HandleError> {
        field(out, s.map(str::as_bytes))
    }
    fn int8(out: &mut Vec<u8>, n: Option<i64>) -> Result<(), HandleError> {
        field(out, n.map(i64::to_be_bytes).as_ref().map(|b| &b[..]))
    }
    fn uuid(out: &mut Vec<u8>, u: Option<&Uuid>) -> Result<(), HandleError> {
        field(out, u.map(|u| &u.as_bytes()[..]))
    }

    let rows = c.event_id.len();
    let mut out = Vec::with_capacity(19 + rows * 1_024);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension
    for i in 0..rows {
        out.extend_from_slice(&22i16.to_be_bytes());
        uuid(&mut out, Some(&c.event_id[i]))?;
        text(&mut out, Some(&c.context[i]))?;
        text(&mut out, Some(&c.aggregate_type[i]))?;
        text(&mut out, Some(&c.aggregate_id[i]))?;
        int8(&mut out, Some(c.sequence[i]))?;
        int8(&mut out, Some(c.global_position[i]))?;
        uuid(&mut out, c.license_id[i].as_ref())?;
        text(&mut out, Some(&c.event_type[i]))?;
        text(&mut out, Some(&c.event_version[i]))?;
        time(&mut out, &c.occurred_at[i])?;
        time(&mut out, &c.recorded_at[i])?;
        text(&mut out, Some(&c.actor_kind[i]))?;
        text(&mut out, Some(&c.actor_id[i]))?;
        uuid(&mut out, Some(&c.command_id[i]))?;
        text(&mut out, Some(&c.correlation_id[i]))?;
        text(&mut out, c.causation_id[i].as_deref())?;
        // json's binary form is its text.
        text(&mut out, Some(&c.payload[i]))?;
        text(&mut out, Some(&c.metadata[i]))?;
        text(&mut out, Some(&c.prev_hash[i]))?;
        text(&mut out, Some(&c.hash[i]))?;
        text(&mut out, c.actor_via[i].as_deref())?;
        int8(&mut out, c.leaf_index[i])?;
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

/// One event of the audit trail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub event_id: Uuid,
    pub context: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    /// The license the event is about, if any.
    #[schema(required = true)]
    pub license_id: Option<Uuid>,
    pub event_type: String,
    pub event_version: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: AuditActor,
    pub command_id: Uuid,
    pub correlation_id: String,
    #[schema(required = true)]
    pub causation_id: Option<String>,
    /// The event's payload, as its type and version define it.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Hex SHA-256.
    pub prev_hash: String,
    /// Hex SHA-256.
    pub hash: String,
}

/// Who caused an event (its fields in the order the answer has always had
/// them).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditActor {
    /// The API key's id, the service, the license id, …
    pub id: String,
    #[schema(value_type = contracts::ActorKind)]
    pub kind: String,
    /// The Kafka topic a command came through (`kafka:<topic>`); absent for
    /// HTTP callers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub via: Option<String>,
}

const COLUMNS: &str = "event_id, context, aggregate_type, aggregate_id, sequence, license_id, \
     event_type, event_version, occurred_at, recorded_at, actor_kind, actor_id, actor_via, \
     command_id, correlation_id, causation_id, payload, prev_hash, hash";

fn record(r: &PgRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        event_id: r.try_get("event_id")?,
        context: r.try_get("context")?,
        aggregate_type: r.try_get("aggregate_type")?,
        aggregate_id: r.try_get("aggregate_id")?,
        sequence: r.try_get("sequence")?,
        license_id: r.try_get("license_id")?,
        event_type: r.try_get("event_type")?,
        event_version: r.try_get("event_version")?,
        occurred_at: r.try_get("occurred_at")?,
        recorded_at: r.try_get("recorded_at")?,
        actor: AuditActor {
            id: r.try_get("actor_id")?,
            kind: r.try_get("actor_kind")?,
            via: r.try_get("actor_via")?,
        },
        command_id: r.try_get("command_id")?,
        correlation_id: r.try_get("correlation_id")?,
        causation_id: r.try_get("causation_id")?,
        payload: r.try_get("payload")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// The filters of the audit trail; each one given narrows it.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub license_id: Option<Uuid>,
    pub actor: Option<String>,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// The last `event_id` of the previous page.
    pub cursor: Option<Uuid>,
}

/// The filtered trail in `event_id` order.
fn select(f: &Filter) -> QueryBuilder<'static, Postgres> {
    let mut sql: QueryBuilder<'static, Postgres> =
        QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit_trail WHERE true"));
    and(&mut sql, "license_id = ", f.license_id);
    and(&mut sql, "actor_id = ", f.actor.clone());
    and(&mut sql, "event_type = ", f.event_type.clone());
    and(&mut sql, "correlation_id = ", f.correlation_id.clone());
    and(&mut sql, "recorded_at >= ", f.from);
    and(&mut sql, "recorded_at < ", f.to);
    and(&mut sql, "event_id > ", f.cursor);
    sql.push(" ORDER BY event_id");
    sql
}

/// One page of the filtered trail.
pub async fn page(pool: &PgPool, f: &Filter, limit: i64) -> Result<Vec<AuditRecord>, sqlx::Error> {
    let mut sql = select(f);
    sql.push(" LIMIT ").push_bind(limit);
    sql.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(record)
        .collect()
}

/// The whole filtered trail, read as a stream (`rows`): it owns the query,
/// which the stream borrows.
pub struct Export {
    pool: PgPool,
    sql: QueryBuilder<'static, Postgres>,
}

/// The export of the filtered trail, in `event_id` order; nothing is read
/// before its `rows` are.
pub fn export(pool: PgPool, f: &Filter) -> Export {
    Export {
        pool,
        sql: select(f),
    }
}

impl Export {
    /// The rows as the database sends them; the query runs once the stream
    /// is first polled. The outer error is the query's (it ends the
    /// stream), the inner one a row that does not read as a record.
    pub fn rows(
        &mut self,
    ) -> impl Stream<Item = Result<Result<AuditRecord, sqlx::Error>, sqlx::Error>> + Send + Unpin + '_
    {
        self.sql.build().fetch(&self.pool).map_ok(|r| record(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::AuditActor;

    /// The actor is answered as it was when it was built as a JSON value.
    #[test]
    fn an_actor_serialises_as_before() {
        let json = |a: &AuditActor| serde_json::to_string(a).expect("json");
        let by_key = AuditActor {
            id: "AKID1".into(),
            kind: "api_key".into(),
            via: None,
        };
        assert_eq!(
            json(&by_key),
            serde_json::json!({"kind": "api_key", "id": "AKID1"}).to_string()
        );
        let by_topic = AuditActor {
            id: "activation".into(),
            kind: "service".into(),
            via: Some("kafka:t".into()),
        };
        assert_eq!(
            json(&by_topic),
            serde_json::json!({"kind": "service", "id": "activation", "via": "kafka:t"})
                .to_string()
        );
    }
}
