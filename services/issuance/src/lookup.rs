//! The license lookup table, kept inline with the License's events.

use async_trait::async_trait;
use eventstore::InlineProjection;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::License;

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
pub async fn by_key_digest(pool: &PgPool, digest: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT license_id FROM license_lookup WHERE key_digest = $1")
        .bind(digest)
        .fetch_optional(pool)
        .await
}

/// The licenses of a contract number (at most 100, deleted ones left out).
pub async fn by_contract(pool: &PgPool, contract: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT license_id FROM license_lookup WHERE contract = $1 AND status <> 'deleted' \
         ORDER BY license_id LIMIT 100",
    )
    .bind(contract)
    .fetch_all(pool)
    .await
}
