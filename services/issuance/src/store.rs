//! Issuance's tables: the license lookup table, kept inline with the
//! License's events, and the replica of activation facts (activations and
//! the keys their files are signed with) used for key recovery. Every query
//! of the service is here; the scheduler's run in its transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::InlineProjection;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{ApiKey, License};

/// An API key's webhook endpoint, kept inline with the key's events: the
/// sender reads it, the webhook consumer matches events against it.
pub struct WebhookEndpoints;

pub fn endpoint_of(key_id: &str) -> String {
    format!("api-key:{key_id}")
}

#[async_trait]
impl InlineProjection<ApiKey> for WebhookEndpoints {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        key: &ApiKey,
    ) -> Result<(), sqlx::Error> {
        let Some(s) = &key.state else {
            return Ok(());
        };
        // A key made before webhooks has a URL and no events: it receives
        // nothing until its callback is set (PUT …/callback).
        let endpoint = match (&s.callback_url, s.revoked, s.callback_events.is_empty()) {
            (Some(url), false, false) => Some(service_kit::webhooks::Endpoint {
                url,
                events: &s.callback_events,
                disabled: s.callback_disabled,
            }),
            _ => None,
        };
        service_kit::webhooks::put_endpoint(tx, &endpoint_of(&s.key_id), endpoint).await
    }
}

/// The license lookup table, kept inline with the License's events.
pub struct LicenseLookup;

#[async_trait]
impl InlineProjection<License> for LicenseLookup {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        license: &License,
    ) -> Result<(), sqlx::Error> {
        let Some(s) = &license.state else {
            return Ok(());
        };
        let status = serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO license_lookup \
               (license_id, key_digest, contract, product, customer, status, expires_at, reclaim_at, \
                fingerprint_min_matches) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (license_id) DO UPDATE SET status = EXCLUDED.status, \
               expires_at = EXCLUDED.expires_at, reclaim_at = EXCLUDED.reclaim_at, \
               fingerprint_min_matches = EXCLUDED.fingerprint_min_matches",
        )
        .bind(s.id)
        .bind(&s.key_digest)
        .bind(&s.contract)
        .bind(&s.product)
        .bind(&s.customer)
        .bind(status)
        .bind(s.expires_at)
        .bind(s.reclaim_at())
        .bind(i32::try_from(s.policy.fingerprint_min_matches).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// The license a key digest names.
pub async fn license_by_key_digest(
    pool: &PgPool,
    digest: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT license_id FROM license_lookup WHERE key_digest = $1")
        .bind(digest)
        .fetch_optional(pool)
        .await
}

/// The licenses of a contract number (at most 100, deleted ones left out).
pub async fn licenses_by_contract(pool: &PgPool, contract: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT license_id FROM license_lookup WHERE contract = $1 AND status <> 'deleted' \
         ORDER BY license_id LIMIT 100",
    )
    .bind(contract)
    .fetch_all(pool)
    .await
}

/// Whether this transaction took the advisory lock `key` (held until it
/// ends); false when another one holds it.
pub async fn try_xact_lock(tx: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(key)
        .fetch_one(&mut *tx)
        .await
}

/// Active or suspended licenses whose `expires_at` has come, earliest first.
pub async fn expiring_licenses(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT license_id FROM license_lookup \
         WHERE status IN ('active', 'suspended') AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// Expired licenses whose `reclaim_at` has come, earliest first.
pub async fn reclaimable_licenses(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT license_id FROM license_lookup \
         WHERE status = 'expired' AND reclaim_at <= $1 ORDER BY reclaim_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// Records a live activation in the replica (once per activation).
pub async fn insert_replica_activation(
    tx: &mut PgConnection,
    activation_id: Uuid,
    license_id: Uuid,
    components: &std::collections::BTreeMap<String, String>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO activation_replica (activation_id, license_id, components, component_digests, status) \
         VALUES ($1, $2, $3, $4, 'live') ON CONFLICT (activation_id) DO NOTHING",
    )
    .bind(activation_id)
    .bind(license_id)
    .bind(serde_json::to_value(components).unwrap_or_default())
    .bind(components.values().cloned().collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Sets the status of replicated activations.
pub async fn set_replica_status(
    tx: &mut PgConnection,
    ids: &[Uuid],
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE activation_replica SET status = $2 WHERE activation_id = ANY($1)")
        .bind(ids)
        .bind(status)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records a public key of activation's (once per `kid`).
pub async fn insert_activation_key(
    tx: &mut PgConnection,
    kid: &str,
    jwk: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO activation_keys (kid, jwk) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
    )
    .bind(kid)
    .bind(jwk)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Every public key of activation's seen so far, as JWK values.
pub async fn activation_keys(pool: &PgPool) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT jwk FROM activation_keys")
        .fetch_all(pool)
        .await
}

/// The license of a replicated activation.
pub async fn replica_license(
    pool: &PgPool,
    activation_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT license_id FROM activation_replica WHERE activation_id = $1")
        .bind(activation_id)
        .fetch_optional(pool)
        .await
}

/// A live replicated activation with its components and its license's
/// `fingerprint_min_matches` (None when the license is not in the lookup).
pub struct LiveActivation {
    pub license_id: Uuid,
    pub components: serde_json::Value,
    pub min: Option<i32>,
}

/// Live activations sharing at least one component digest with `digests`.
pub async fn live_activations_sharing(
    pool: &PgPool,
    digests: Vec<String>,
) -> Result<Vec<LiveActivation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.license_id, a.components, l.fingerprint_min_matches AS min \
         FROM activation_replica a LEFT JOIN license_lookup l USING (license_id) \
         WHERE a.status = 'live' AND a.component_digests && $1",
    )
    .bind(digests)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(LiveActivation {
                components: r.try_get("components")?,
                license_id: r.try_get("license_id")?,
                min: r.try_get("min")?,
            })
        })
        .collect()
}
