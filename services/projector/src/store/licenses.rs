//! The licenses' rows: `license_state` (each license's fold and its filter
//! columns, written by the model and read by the license routes) with its
//! activations one row each in `license_activations`, and a
//! license's events in `audit_trail` — for its state at an instant, its
//! history and its dispute bundle.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use contracts::{Actor, ActorKind, EventEnvelope};
use eventstore::chain::StoredEvent;
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::{and, RowError};
use crate::domain::state::ActivationView;
use crate::domain::LicenseState;

/// Makes sure each license has a row, then locks and reads them; a license
/// whose row holds no state yet reads as None.
pub async fn lock_states(
    tx: &mut PgConnection,
    suffix: &str,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Option<LicenseState>)>, sqlx::Error> {
    // Rows first, then locks, both in license order: lanes of other
    // topics touching the same licenses wait rather than deadlock, and a
    // concurrent first event of a license cannot overwrite this one's.
    sqlx::query(&format!(
        "INSERT INTO license_state{suffix} (license_id) \
         SELECT id FROM unnest($1::uuid[]) AS u(id) ORDER BY id ON CONFLICT DO NOTHING"
    ))
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(&format!(
        "SELECT license_id, state FROM license_state{suffix} \
         WHERE license_id = ANY($1) ORDER BY license_id FOR UPDATE"
    ))
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|r| {
            let id: Uuid = r.try_get("license_id")?;
            let state: Option<Json<LicenseState>> = r.try_get("state")?;
            Ok((id, state.map(|s| s.0)))
        })
        .collect()
}

/// The stored activations among `(license, activation)` pairs, each with its
/// license.
pub async fn activations(
    tx: &mut PgConnection,
    suffix: &str,
    pairs: &[(Uuid, Uuid)],
) -> Result<Vec<(Uuid, ActivationView)>, sqlx::Error> {
    let (licenses, ids): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    // One key look-up per pair (LATERAL): a plan prepared while the table
    // was small, or a rebuild's table without statistics, would otherwise
    // scan it per batch.
    let rows: Vec<(Uuid, Json<ActivationView>)> = sqlx::query_as(&format!(
        "SELECT a.license_id, a.view FROM unnest($1::uuid[], $2::uuid[]) AS k(l, i) \
         CROSS JOIN LATERAL (SELECT license_id, view FROM license_activations{suffix} \
           WHERE license_id = k.l AND activation_id = k.i) a"
    ))
    .bind(licenses)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|(l, v)| (l, v.0)).collect())
}

/// Every stored activation of the licenses, each with its license.
pub async fn all_activations(
    tx: &mut PgConnection,
    suffix: &str,
    licenses: &[Uuid],
) -> Result<Vec<(Uuid, ActivationView)>, sqlx::Error> {
    // A key look-up per license, as `activations` does.
    let rows: Vec<(Uuid, Json<ActivationView>)> = sqlx::query_as(&format!(
        "SELECT a.license_id, a.view FROM unnest($1::uuid[]) AS k(l) \
         CROSS JOIN LATERAL (SELECT license_id, view FROM license_activations{suffix} \
           WHERE license_id = k.l) a"
    ))
    .bind(licenses)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|(l, v)| (l, v.0)).collect())
}

/// The filter columns of a state, as stored beside it.
#[derive(Default)]
pub struct Updates {
    id: Vec<Uuid>,
    state: Vec<serde_json::Value>,
    status: Vec<Option<String>>,
    kind: Vec<Option<String>>,
    product: Vec<Option<String>>,
    edition: Vec<Option<String>>,
    customer: Vec<Option<String>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    live_activations: Vec<i32>,
    leases_in_use: Vec<i32>,
    domain: Vec<Option<String>>,
    updated_at: Vec<Option<DateTime<Utc>>>,
    activation_id: Vec<Uuid>,
    activation_license: Vec<Uuid>,
    activation_view: Vec<serde_json::Value>,
}

impl Updates {
    /// No state to write.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// How many states it holds.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Adds a state's row and its activations' rows (the state's own
    /// `activations` stay empty); an error when one does not serialise.
    pub fn push(
        &mut self,
        s: &LicenseState,
        activations: impl IntoIterator<Item = ActivationView>,
    ) -> Result<(), serde_json::Error> {
        for a in activations {
            self.activation_view.push(serde_json::to_value(&a)?);
            self.activation_id.push(a.activation_id);
            self.activation_license.push(s.license_id);
        }
        let l = s.license.as_ref();
        self.id.push(s.license_id);
        self.state.push(serde_json::to_value(s)?);
        self.status.push(l.map(|l| l.status_text()));
        self.kind.push(l.and_then(|l| text(&l.kind)));
        self.product.push(l.map(|l| l.product.clone()));
        self.edition.push(l.and_then(|l| l.edition.clone()));
        self.customer.push(l.map(|l| l.customer.clone()));
        self.expires_at.push(l.and_then(|l| l.expires_at));
        self.live_activations
            .push(i32::try_from(s.live_activations).unwrap_or(i32::MAX));
        self.leases_in_use
            .push(i32::try_from(s.leases_in_use).unwrap_or(i32::MAX));
        self.domain
            .push(s.domain.as_ref().and_then(|d| d.domain.clone()));
        self.updated_at.push(s.last_event_at);
        Ok(())
    }
}

fn text<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|s| s.as_str().map(str::to_string))
}

/// Writes the states and their filter columns, one statement per batch.
pub async fn upsert(tx: &mut PgConnection, suffix: &str, out: Updates) -> Result<(), sqlx::Error> {
    // An upsert, not UPDATE … FROM unnest: the planner cannot see how
    // few rows the arrays hold and would join by scanning the table.
    sqlx::query(&format!(
        "INSERT INTO license_state{suffix} (license_id, state, status, kind, product, edition, \
           customer, expires_at, live_activations, leases_in_use, domain, updated_at) \
         SELECT * FROM unnest($1::uuid[], $2::jsonb[], $3::text[], $4::text[], $5::text[], \
           $6::text[], $7::text[], $8::timestamptz[], $9::int4[], $10::int4[], $11::text[], \
           $12::timestamptz[]) \
         ON CONFLICT (license_id) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status, \
           kind = EXCLUDED.kind, product = EXCLUDED.product, edition = EXCLUDED.edition, \
           customer = EXCLUDED.customer, expires_at = EXCLUDED.expires_at, \
           live_activations = EXCLUDED.live_activations, leases_in_use = EXCLUDED.leases_in_use, \
           domain = EXCLUDED.domain, updated_at = EXCLUDED.updated_at"
    ))
    .bind(out.id)
    .bind(out.state)
    .bind(out.status)
    .bind(out.kind)
    .bind(out.product)
    .bind(out.edition)
    .bind(out.customer)
    .bind(out.expires_at)
    .bind(out.live_activations)
    .bind(out.leases_in_use)
    .bind(out.domain)
    .bind(out.updated_at)
    .execute(&mut *tx)
    .await?;
    if !out.activation_id.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO license_activations{suffix} (license_id, activation_id, view) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[]) \
             ON CONFLICT (license_id, activation_id) DO UPDATE SET view = EXCLUDED.view"
        ))
        .bind(out.activation_license)
        .bind(out.activation_id)
        .bind(out.activation_view)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// `state` with its activations put back, by license id column `id`.
const WITH_ACTIVATIONS: &str = "jsonb_set(state, '{activations}', coalesce((\
       SELECT jsonb_object_agg(a.activation_id::text, a.view) FROM license_activations a \
       WHERE a.license_id = license_state.license_id), '{}'::jsonb))";

/// The live state of a license that has been issued.
pub async fn state(pool: &PgPool, id: Uuid) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT {WITH_ACTIVATIONS} FROM license_state WHERE license_id = $1 AND status IS NOT NULL"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The filters of the license list; each one given narrows it.
#[derive(Debug, Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub product: Option<String>,
    pub customer: Option<String>,
    pub expiring_before: Option<DateTime<Utc>>,
    /// The last `license_id` of the previous page.
    pub cursor: Option<Uuid>,
}

/// One page of issued licenses in `license_id` order: each id and its state.
pub async fn list(
    pool: &PgPool,
    f: &ListFilter,
    limit: i64,
) -> Result<Vec<(Uuid, serde_json::Value)>, sqlx::Error> {
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "SELECT license_id, {WITH_ACTIVATIONS} FROM license_state WHERE status IS NOT NULL"
    ));
    and(&mut sql, "status = ", f.status.clone());
    and(&mut sql, "product = ", f.product.clone());
    and(&mut sql, "customer = ", f.customer.clone());
    and(&mut sql, "expires_at < ", f.expiring_before);
    and(&mut sql, "license_id > ", f.cursor);
    sql.push(" ORDER BY license_id LIMIT ").push_bind(limit);
    sql.build_query_as().fetch_all(pool).await
}

/// The audit columns every event query reads, `payload` and `metadata` as
/// their exact stored text.
const EVENT_COLUMNS: &str = "event_id, context, aggregate_type, aggregate_id, sequence, \
     global_position, license_id, event_type, event_version, occurred_at, recorded_at, actor_kind, \
     actor_id, actor_via, command_id, correlation_id, causation_id, payload::text AS payload, \
     metadata::text AS metadata, prev_hash, hash";

/// What an as-of fold reads: the envelope without the metadata text.
const ENVELOPE_COLUMNS: &str = "event_id, context, aggregate_type, aggregate_id, sequence, \
     global_position, event_type, event_version, occurred_at, recorded_at, actor_kind, actor_id, actor_via, \
     command_id, correlation_id, causation_id, payload::text AS payload, prev_hash, hash";

/// One audit row: the event as the event store holds it, and its context.
pub struct EventRow {
    pub context: String,
    pub stored: StoredEvent,
}

impl EventRow {
    fn from_row(r: &PgRow) -> Result<Self, RowError> {
        let prev_hash: &str = r.try_get("prev_hash")?;
        let hash: &str = r.try_get("hash")?;
        Ok(Self {
            context: r.try_get("context")?,
            stored: StoredEvent {
                global_position: r.try_get("global_position")?,
                event_id: r.try_get("event_id")?,
                aggregate_type: r.try_get("aggregate_type")?,
                aggregate_id: r.try_get("aggregate_id")?,
                sequence: r.try_get("sequence")?,
                event_type: r.try_get("event_type")?,
                event_version: r.try_get("event_version")?,
                payload: r.try_get("payload")?,
                metadata: r.try_get("metadata")?,
                recorded_at: r.try_get("recorded_at")?,
                prev_hash: hex::decode(prev_hash)?,
                hash: hex::decode(hash)?,
            },
        })
    }
}

/// The envelope of an audit row (the columns of `ENVELOPE_COLUMNS`).
fn envelope_of(r: &PgRow) -> Result<EventEnvelope<Box<RawValue>>, RowError> {
    let payload: String = r.try_get("payload")?;
    let sequence: i64 = r.try_get("sequence")?;
    let kind: &str = r.try_get("actor_kind")?;
    Ok(EventEnvelope {
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        event_version: r.try_get("event_version")?,
        aggregate_type: r.try_get("aggregate_type")?,
        aggregate_id: r.try_get("aggregate_id")?,
        sequence: u64::try_from(sequence).unwrap_or_default(),
        global_position: r.try_get("global_position")?,
        occurred_at: r.try_get("occurred_at")?,
        recorded_at: r.try_get("recorded_at")?,
        command_id: r.try_get("command_id")?,
        correlation_id: r.try_get("correlation_id")?,
        causation_id: r.try_get("causation_id")?,
        actor: Actor {
            kind: serde_json::from_value::<ActorKind>(serde_json::Value::String(kind.into()))?,
            id: r.try_get("actor_id")?,
            via: r.try_get("actor_via")?,
        },
        payload: RawValue::from_string(payload)?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Every event of the license recorded up to `at`, with its context, in no
/// particular order: the caller sorts them.
pub async fn events_until(
    pool: &PgPool,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Vec<(String, EventEnvelope<Box<RawValue>>)>, RowError> {
    let sql = format!(
        "SELECT {ENVELOPE_COLUMNS} FROM audit_trail WHERE license_id = $1 AND recorded_at <= $2"
    );
    let rows = sqlx::query(&sql).bind(id).bind(at).fetch_all(pool).await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>("context")?, envelope_of(r)?)))
        .collect()
}

/// A stored snapshot, as an as-of read found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotRef {
    pub upto: DateTime<Utc>,
    pub events_covered: i64,
    /// The row's version (its `xmin`): any write of the row changes it, so
    /// a state kept in memory is the one this row holds.
    pub version: i64,
    /// Whether the audit trail still holds exactly the events it covers.
    pub valid: bool,
}

/// What an as-of fold starts from: the latest snapshot at or before the
/// instant, and the events to fold on it.
pub struct AsOfRead {
    pub snapshot: Option<SnapshotRef>,
    /// Recorded after a valid snapshot's instant, or from the first event
    /// when there is none or it is stale; in no particular order.
    pub events: Vec<(String, EventEnvelope<Box<RawValue>>)>,
}

/// The snapshot of fold `fold` an as-of answer at `at` starts from (none
/// unless `snapshots`; never one dated after `now`, which no fold takes),
/// its validity and the events after it, in one statement: one view of the
/// database, so a late event committed meanwhile is either counted and read
/// or neither, and one round trip.
pub async fn as_of_read(
    pool: &PgPool,
    id: Uuid,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    fold: i32,
    snapshots: bool,
) -> Result<AsOfRead, RowError> {
    let sql = format!(
        "WITH s AS (SELECT s.upto, s.events_covered, s.version, c.n = s.events_covered AS valid \
           FROM (SELECT upto, events_covered, xmin::text::bigint AS version \
                 FROM license_state_snapshots \
                 WHERE license_id = $1 AND upto <= least($2, $5) AND fold = $3 AND $4 \
                 ORDER BY upto DESC LIMIT 1) s \
           CROSS JOIN LATERAL (SELECT count(*) AS n FROM audit_trail \
                 WHERE license_id = $1 AND recorded_at <= s.upto) c) \
         SELECT s.upto AS snapshot_upto, s.events_covered AS snapshot_covered, \
                s.version AS snapshot_version, s.valid AS snapshot_valid, e.* \
         FROM (VALUES (1)) one (x) LEFT JOIN s ON true \
         LEFT JOIN LATERAL (SELECT {ENVELOPE_COLUMNS} FROM audit_trail \
               WHERE license_id = $1 AND recorded_at <= $2 AND recorded_at > \
                 CASE WHEN s.valid THEN s.upto ELSE '-infinity'::timestamptz END) e ON true"
    );
    let rows = sqlx::query(&sql)
        .bind(id)
        .bind(at)
        .bind(fold)
        .bind(snapshots)
        .bind(now)
        .fetch_all(pool)
        .await?;
    let snapshot = match rows.first() {
        Some(r) => match r.try_get::<Option<DateTime<Utc>>, _>("snapshot_upto")? {
            Some(upto) => Some(SnapshotRef {
                upto,
                events_covered: r.try_get("snapshot_covered")?,
                version: r.try_get("snapshot_version")?,
                valid: r.try_get("snapshot_valid")?,
            }),
            None => None,
        },
        None => None,
    };
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        // The one row of an answer with no events to fold.
        if r.try_get::<Option<Uuid>, _>("event_id")?.is_none() {
            continue;
        }
        events.push((r.try_get::<String, _>("context")?, envelope_of(r)?));
    }
    Ok(AsOfRead { snapshot, events })
}

/// A stored as-of snapshot: the license's state folded from every event
/// recorded up to `upto`, `events_covered` of them.
pub struct Snapshot {
    pub upto: DateTime<Utc>,
    pub events_covered: i64,
    pub state: String,
}

/// The state of the snapshot `at` refers to, if its row is still that
/// version (of fold `fold`).
pub async fn snapshot_state(
    pool: &PgPool,
    id: Uuid,
    at: &SnapshotRef,
    fold: i32,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT state::text FROM license_state_snapshots WHERE license_id = $1 AND upto = $2 \
           AND fold = $3 AND events_covered = $4 AND xmin::text::bigint = $5",
    )
    .bind(id)
    .bind(at.upto)
    .bind(fold)
    .bind(at.events_covered)
    .bind(at.version)
    .fetch_optional(pool)
    .await
}

/// Drops the license's snapshots that no longer cover exactly the events
/// recorded up to their instant (one arrived late), and the one at `upto`
/// when given (it does not read).
pub async fn drop_snapshots(
    pool: &PgPool,
    id: Uuid,
    upto: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM license_state_snapshots s WHERE s.license_id = $1 AND (s.upto = $2 \
           OR s.events_covered <> (SELECT count(*) FROM audit_trail a \
                                   WHERE a.license_id = $1 AND a.recorded_at <= s.upto))",
    )
    .bind(id)
    .bind(upto)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Stores snapshots of the license (replacing any at the same instant), one
/// statement each, then drops all but its newest `keep` at or before `now`.
pub async fn save_snapshots(
    pool: &PgPool,
    id: Uuid,
    now: DateTime<Utc>,
    fold: i32,
    snapshots: Vec<Snapshot>,
    keep: i64,
) -> Result<(), sqlx::Error> {
    for s in snapshots {
        sqlx::query(
            "INSERT INTO license_state_snapshots (license_id, upto, fold, events_covered, state) \
             VALUES ($1, $2, $3, $4, $5::json) \
             ON CONFLICT (license_id, upto) DO UPDATE SET fold = EXCLUDED.fold, \
               events_covered = EXCLUDED.events_covered, state = EXCLUDED.state",
        )
        .bind(id)
        .bind(s.upto)
        .bind(fold)
        .bind(s.events_covered)
        .bind(s.state)
        .execute(pool)
        .await?;
    }
    // Rows dated after `now` were taken by no fold: they would push every
    // genuine one out.
    sqlx::query(
        "DELETE FROM license_state_snapshots WHERE license_id = $1 AND (upto > $3 OR upto < ( \
           SELECT min(upto) FROM (SELECT upto FROM license_state_snapshots \
                                  WHERE license_id = $1 AND upto <= $3 \
                                  ORDER BY upto DESC LIMIT $2) newest))",
    )
    .bind(id)
    .bind(keep)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every as-of snapshot: the audit trail they were counted against is
/// being replaced by a rebuilt one.
pub async fn drop_all_snapshots(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM license_state_snapshots")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Whether the audit trail holds any event about the license.
pub async fn has_events(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_trail WHERE license_id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Every event of every aggregate that has an event about the license,
/// ordered by context, aggregate and sequence: each chain whole, from its
/// first event.
pub async fn chain_events(pool: &PgPool, id: Uuid) -> Result<Vec<EventRow>, RowError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM audit_trail WHERE (aggregate_type, aggregate_id) IN \
           (SELECT DISTINCT aggregate_type, aggregate_id FROM audit_trail WHERE license_id = $1) \
         ORDER BY context, aggregate_type, aggregate_id, sequence"
    );
    let rows = sqlx::query(&sql).bind(id).fetch_all(pool).await?;
    rows.iter().map(EventRow::from_row).collect()
}

/// Each event's leaf in its service's tree, for the license's chains, keyed
/// by context, aggregate type, aggregate id and sequence.
pub async fn leaf_indexes(
    pool: &PgPool,
    id: Uuid,
) -> Result<HashMap<(String, String, String, i64), u64>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT context, aggregate_type, aggregate_id, sequence, leaf_index FROM audit_trail \
         WHERE (aggregate_type, aggregate_id) IN \
           (SELECT DISTINCT aggregate_type, aggregate_id FROM audit_trail WHERE license_id = $1)",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(c, t, a, s, l)| Some(((c, t, a, s), u64::try_from(l?).ok()?)))
        .collect())
}
