//! The license replica every context keeps from `<prefix>.issuance.events`
//! (table `license_replica`, created by the event store's migrations): the
//! shared fold of `contracts::license_view`, written in the consumer
//! offset's transaction, and its look-ups.

use bus::{transient, HandleError};
use contracts::license_view::LicenseView;
use contracts::EventEnvelope;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// Folds a License event into the replica; the new view, or None when the
/// event was applied before (or the license is unknown and the event is
/// not its first).
pub async fn fold_license(
    tx: &mut PgConnection,
    e: &EventEnvelope,
) -> Result<Option<LicenseView>, HandleError> {
    let id = Uuid::parse_str(&e.aggregate_id)
        .map_err(|_| HandleError::Poison("license id is not a UUID".into()))?;
    let row =
        sqlx::query("SELECT view, version FROM license_replica WHERE license_id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(transient)?;
    let current =
        match row {
            Some(r) => {
                let version: i64 = r.try_get("version").map_err(transient)?;
                if u64::try_from(version).unwrap_or(0) >= e.sequence {
                    return Ok(None);
                }
                let view: Value = r.try_get("view").map_err(transient)?;
                Some(serde_json::from_value::<LicenseView>(view).map_err(|err| {
                    HandleError::Poison(format!("stored replica unreadable: {err}"))
                })?)
            }
            None => None,
        };
    let Some(view) =
        LicenseView::fold(current, e).map_err(|err| HandleError::Poison(err.to_string()))?
    else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO license_replica (license_id, key_digest, product, version, view) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (license_id) DO UPDATE SET \
           version = EXCLUDED.version, view = EXCLUDED.view, \
           rev = nextval('license_replica_rev')",
    )
    .bind(id)
    .bind(&view.key_digest)
    .bind(&view.product)
    .bind(i64::try_from(e.sequence).unwrap_or(i64::MAX))
    .bind(serde_json::to_value(&view).map_err(transient)?)
    .execute(&mut *tx)
    .await
    .map_err(transient)?;
    Ok(Some(view))
}

/// The digest a license is found by, from a typed key in `field`; a
/// mistyped key fails its check character (422 `KEY_CHECK_FAILED`) before
/// any look-up.
pub fn key_digest(raw: &str, field: &'static str) -> Result<String, eventstore::Refused> {
    use contracts::license_key::{digest, normalize, KeyError};
    let key = normalize(raw).map_err(|e| {
        let code = match e {
            KeyError::Check => "KEY_CHECK_FAILED",
            _ => "INVALID_LICENSE_KEY",
        };
        eventstore::Refused::new(code, eventstore::ErrorKind::Invalid, e.to_string())
            .with_field(field)
    })?;
    Ok(digest(&key))
}

fn view_of(v: Value) -> Option<LicenseView> {
    serde_json::from_value(v).ok()
}

pub async fn license_by_digest(
    pool: &PgPool,
    key_digest: &str,
) -> Result<Option<LicenseView>, sqlx::Error> {
    let v: Option<Value> =
        sqlx::query_scalar("SELECT view FROM license_replica WHERE key_digest = $1")
            .bind(key_digest)
            .fetch_optional(pool)
            .await?;
    Ok(v.and_then(view_of))
}

pub async fn license(pool: &PgPool, id: Uuid) -> Result<Option<LicenseView>, sqlx::Error> {
    let v: Option<Value> =
        sqlx::query_scalar("SELECT view FROM license_replica WHERE license_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(v.and_then(view_of))
}
