//! Activation's tables: the inline indexes of its aggregates (seats by id
//! and by device, trials) and the replica of issuance facts. The signing
//! keys' index is `service_kit::keys::KeyIndex`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::activation::same_device;
use contracts::license_view::LicenseView;
use eventstore::InlineProjection;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{Seat, SeatStatus, Seats, Trial};

fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn digests(components: &BTreeMap<String, String>) -> Vec<String> {
    components.values().cloned().collect()
}

/// The seats' inline table, and the validation index a command of this
/// instance updates once it commits.
pub struct SeatIndex(pub std::sync::Arc<crate::index::ValidationIndex>);

#[async_trait]
impl InlineProjection<Seats> for SeatIndex {
    fn committed(&self, _aggregate_id: &str, seats: &Seats) {
        self.0.committed(seats);
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        seats: &Seats,
    ) -> Result<(), sqlx::Error> {
        for s in seats.changed.iter().filter_map(|id| seats.touched(id)) {
            sqlx::query(
                "INSERT INTO activations (activation_id, license_id, product, kind, fingerprint, \
                   components, component_digests, status, activated_at, granted_at_sequence, \
                   last_client_time, ended_at, seats_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (activation_id) DO UPDATE SET status = EXCLUDED.status, \
                   last_client_time = EXCLUDED.last_client_time, ended_at = EXCLUDED.ended_at, \
                   seats_version = EXCLUDED.seats_version",
            )
            .bind(s.activation_id)
            .bind(s.license_id)
            .bind(&s.product)
            .bind(text(&s.kind))
            .bind(&s.fingerprint)
            .bind(serde_json::to_value(&s.components).unwrap_or_default())
            .bind(digests(&s.components))
            .bind(text(&s.status))
            .bind(s.activated_at)
            .bind(i64::try_from(s.granted_at_sequence).unwrap_or(i64::MAX))
            .bind(s.last_client_time)
            .bind(s.ended_at)
            .bind(i64::try_from(seats.version).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

pub struct TrialIndex;

#[async_trait]
impl InlineProjection<Trial> for TrialIndex {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        trial: &Trial,
    ) -> Result<(), sqlx::Error> {
        let Some(t) = &trial.state else { return Ok(()) };
        sqlx::query(
            "INSERT INTO trials (trial_id, product, fingerprint, components, component_digests, \
               license_id, issue_command_id, status, activation_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (trial_id) DO UPDATE SET status = EXCLUDED.status, \
               activation_id = EXCLUDED.activation_id, license_id = EXCLUDED.license_id, \
               issue_command_id = EXCLUDED.issue_command_id",
        )
        .bind(&t.trial_id)
        .bind(&t.product)
        .bind(&t.fingerprint)
        .bind(serde_json::to_value(&t.components).unwrap_or_default())
        .bind(digests(&t.components))
        .bind(t.license_id)
        .bind(t.issue_command_id)
        .bind(text(&t.status))
        .bind(t.activation_id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// A seat as the index holds it (and the API shows it).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Activation)]
pub struct SeatRow {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub product: String,
    pub kind: contracts::issuance::LicenseKind,
    /// The device's fingerprint digest.
    pub fingerprint: String,
    #[serde(skip)]
    pub components: BTreeMap<String, String>,
    pub status: crate::domain::SeatStatus,
    pub activated_at: DateTime<Utc>,
    /// The latest clock reading the device reported, if any.
    #[schema(required = true)]
    pub last_client_time: Option<DateTime<Utc>>,
    /// When the seat ended; null while live.
    #[schema(required = true)]
    pub ended_at: Option<DateTime<Utc>>,
}

const SEAT_COLUMNS: &str = "activation_id, license_id, product, kind, fingerprint, components, \
     status, activated_at, last_client_time, ended_at";

/// A snake_case enum stored as text (a seat's kind or status).
fn stored_enum<T: serde::de::DeserializeOwned>(text: String) -> Result<T, sqlx::Error> {
    serde_json::from_value(Value::String(text)).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn seat_row(r: &sqlx::postgres::PgRow) -> Result<SeatRow, sqlx::Error> {
    let components: Value = r.try_get("components")?;
    Ok(SeatRow {
        activation_id: r.try_get("activation_id")?,
        license_id: r.try_get("license_id")?,
        product: r.try_get("product")?,
        kind: stored_enum(r.try_get("kind")?)?,
        fingerprint: r.try_get("fingerprint")?,
        components: serde_json::from_value(components).unwrap_or_default(),
        status: stored_enum(r.try_get("status")?)?,
        activated_at: r.try_get("activated_at")?,
        last_client_time: r.try_get("last_client_time")?,
        ended_at: r.try_get("ended_at")?,
    })
}

pub async fn seat(pool: &PgPool, activation_id: Uuid) -> Result<Option<SeatRow>, sqlx::Error> {
    let q = format!("SELECT {SEAT_COLUMNS} FROM activations WHERE activation_id = $1");
    sqlx::query(&q)
        .bind(activation_id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(seat_row)
        .transpose()
}

pub async fn seats_of_license(
    pool: &PgPool,
    license_id: Uuid,
) -> Result<Vec<SeatRow>, sqlx::Error> {
    let q = format!(
        "SELECT {SEAT_COLUMNS} FROM activations WHERE license_id = $1 ORDER BY activated_at"
    );
    sqlx::query(&q)
        .bind(license_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(seat_row)
        .collect()
}

fn live_seat(r: &sqlx::postgres::PgRow) -> Result<Seat, sqlx::Error> {
    let row = seat_row(r)?;
    let granted: i64 = r.try_get("granted_at_sequence")?;
    Ok(Seat {
        activation_id: row.activation_id,
        license_id: row.license_id,
        product: row.product,
        kind: row.kind,
        fingerprint: row.fingerprint,
        components: row.components,
        status: SeatStatus::Live,
        activated_at: row.activated_at,
        granted_at_sequence: u64::try_from(granted).unwrap_or(0),
        last_client_time: row.last_client_time,
        offline: false,
        ended_at: None,
    })
}

/// The live seats of a license as the domain sees them (validation reads
/// these instead of folding the license's whole history).
pub async fn live_seats(pool: &PgPool, license_id: Uuid) -> Result<Seats, sqlx::Error> {
    let q = format!(
        "SELECT {SEAT_COLUMNS}, granted_at_sequence FROM activations \
         WHERE license_id = $1 AND status = 'live'"
    );
    let rows = sqlx::query(&q).bind(license_id).fetch_all(pool).await?;
    let mut seats = Seats {
        license_id: Some(license_id),
        ..Seats::default()
    };
    for r in &rows {
        let seat = live_seat(r)?;
        seats.seats.insert(seat.activation_id, seat);
    }
    Ok(seats)
}

/// What the validation index copies of some licenses (of all when `ids` is
/// None): their replica views, their live seats, and per license with
/// seats the `LicenseActivations` version the rows were last written at.
pub struct IndexRows {
    pub licenses: Vec<LicenseView>,
    pub live: Vec<Seat>,
    pub versions: Vec<(Uuid, u64)>,
}

pub async fn index_rows(pool: &PgPool, ids: Option<&[Uuid]>) -> Result<IndexRows, sqlx::Error> {
    // Separate texts for all and some, so neither plan is a compromise.
    let filter = if ids.is_some() {
        "license_id = ANY($1)"
    } else {
        "$1::uuid[] IS NULL"
    };
    let ids = ids.map(<[Uuid]>::to_vec);
    let views: Vec<Value> =
        sqlx::query_scalar(&format!("SELECT view FROM license_replica WHERE {filter}"))
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    let versions: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
        "SELECT license_id, max(seats_version) FROM activations WHERE {filter} GROUP BY license_id"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let live = sqlx::query(&format!(
        "SELECT {SEAT_COLUMNS}, granted_at_sequence FROM activations \
         WHERE {filter} AND status = 'live'"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?
    .iter()
    .map(live_seat)
    .collect::<Result<_, _>>()?;
    Ok(IndexRows {
        licenses: views
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        live,
        versions: versions
            .into_iter()
            .map(|(id, v)| (id, u64::try_from(v).unwrap_or(0)))
            .collect(),
    })
}

/// Every seat, of any license, on a device matching `components`: each
/// seat is the device's when as many components match as its own
/// license's policy asks (the rule of `contracts::activation::same_device`).
pub async fn seats_of_device(
    pool: &PgPool,
    components: &BTreeMap<String, String>,
) -> Result<Vec<SeatRow>, sqlx::Error> {
    let q = format!(
        "SELECT s.*, (l.view -> 'policy' ->> 'fingerprint_min_matches')::bigint AS min \
         FROM (SELECT {SEAT_COLUMNS} FROM activations WHERE component_digests && $1) s \
         LEFT JOIN license_replica l ON l.license_id = s.license_id \
         ORDER BY s.activated_at"
    );
    let rows = sqlx::query(&q)
        .bind(digests(components))
        .fetch_all(pool)
        .await?;
    let default = contracts::issuance::Policy::default().fingerprint_min_matches;
    let mut out = Vec::new();
    for r in &rows {
        let s = seat_row(r)?;
        let min: Option<i64> = r.try_get("min")?;
        let min = min.and_then(|m| u32::try_from(m).ok()).unwrap_or(default);
        if same_device(&s.components, components, min) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Another trial of `product` on a device matching `components`.
pub async fn similar_trial(
    pool: &PgPool,
    product: &str,
    components: &BTreeMap<String, String>,
    min_matches: u32,
) -> Result<Option<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT trial_id, components FROM trials \
         WHERE product = $1 AND component_digests && $2 AND status <> 'failed'",
    )
    .bind(product)
    .bind(digests(components))
    .fetch_all(pool)
    .await?;
    for r in rows {
        let theirs: BTreeMap<String, String> =
            serde_json::from_value(r.try_get("components")?).unwrap_or_default();
        if same_device(&theirs, components, min_matches) {
            return Ok(Some(r.try_get("trial_id")?));
        }
    }
    Ok(None)
}

pub async fn trial_of_license(
    pool: &PgPool,
    license_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT trial_id FROM trials WHERE license_id = $1")
        .bind(license_id)
        .fetch_optional(pool)
        .await
}

pub async fn trial_by_issue_command(
    conn: &mut PgConnection,
    command_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT trial_id FROM trials WHERE issue_command_id = $1")
        .bind(command_id)
        .fetch_optional(conn)
        .await
}

pub use service_kit::replica::{license, license_by_digest};

/// A product's features and default policy (a trial's license is issued
/// under it); products replicated before policies were kept have the
/// default one.
pub async fn product(
    pool: &PgPool,
    code: &str,
) -> Result<Option<(Vec<String>, contracts::issuance::Policy)>, sqlx::Error> {
    let row = sqlx::query("SELECT features, policy FROM product_replica WHERE code = $1")
        .bind(code)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let features: Value = row.try_get("features")?;
    let policy: Option<Value> = row.try_get("policy")?;
    Ok(serde_json::from_value(features).ok().map(|f| {
        let policy = policy
            .and_then(|p| serde_json::from_value(p).ok())
            .unwrap_or_default();
        (f, policy)
    }))
}

/// Keeps a product's features and default policy.
pub async fn upsert_product(
    conn: &mut PgConnection,
    code: &str,
    features: Option<&[String]>,
    policy: &contracts::issuance::Policy,
) -> Result<(), sqlx::Error> {
    let policy = serde_json::to_value(policy).unwrap_or_default();
    match features {
        Some(features) => sqlx::query(
            "INSERT INTO product_replica (code, features, policy) VALUES ($1, $2, $3) \
             ON CONFLICT (code) DO NOTHING",
        )
        .bind(code)
        .bind(serde_json::to_value(features).unwrap_or_default())
        .bind(policy),
        None => sqlx::query("UPDATE product_replica SET policy = $2 WHERE code = $1")
            .bind(code)
            .bind(policy),
    }
    .execute(conn)
    .await?;
    Ok(())
}

/// The seat a command's events name — `(activation id, whether it created
/// it)` — for a replay of that command; None when it appended no event.
pub async fn command_seat(
    pool: &PgPool,
    license_id: Uuid,
    command_id: Uuid,
) -> Result<Option<(Uuid, bool)>, sqlx::Error> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT event_type, payload ->> 'activation_id' FROM events \
         WHERE aggregate_type = 'LicenseActivations' AND aggregate_id = $1 \
           AND metadata ->> 'command_id' = $2 AND payload ->> 'activation_id' IS NOT NULL \
         ORDER BY sequence LIMIT 1",
    )
    .bind(license_id.to_string())
    .bind(command_id.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(event_type, id)| {
        let id = Uuid::parse_str(&id?).ok()?;
        Some((id, event_type == contracts::activation::DEVICE_ACTIVATED))
    }))
}

/// The hash of one stored event (the position an activation file cites).
pub async fn event_hash(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT encode(hash, 'hex') FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
    .fetch_optional(pool)
    .await
}
