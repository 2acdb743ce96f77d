//! Domain binding's tables: the inline `bindings` index and the domain
//! claims that keep one live license per registrable domain and product.

use async_trait::async_trait;
use eventstore::InlineProjection;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::Binding;

pub struct BindingIndex;

#[async_trait]
impl InlineProjection<Binding> for BindingIndex {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        aggregate_id: &str,
        b: &Binding,
    ) -> Result<(), sqlx::Error> {
        let Ok(license_id) = Uuid::parse_str(aggregate_id) else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO bindings (license_id, product, domain, changes_used, released) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (license_id) DO UPDATE SET \
               domain = EXCLUDED.domain, changes_used = EXCLUDED.changes_used, \
               released = EXCLUDED.released, updated_at = now(), \
               rev = nextval('bindings_rev')",
        )
        .bind(license_id)
        .bind(&b.product)
        .bind(&b.domain)
        .bind(i32::try_from(b.changes_used).unwrap_or(i32::MAX))
        .bind(b.released)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// How long a claim whose holder has not bound the domain is honoured (the
/// holder's command is still running); after it, the claim is an orphan.
const CLAIM_GRACE_SECS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed by this call: release it if the binding fails.
    New,
    /// This license held it already.
    Held,
    /// Another license holds the domain.
    Taken(Uuid),
}

pub async fn claim(
    pool: &PgPool,
    product: &str,
    domain: &str,
    license_id: Uuid,
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO domain_claims (product, domain, license_id) VALUES ($1, $2, $3) \
         ON CONFLICT (product, domain) DO NOTHING",
    )
    .bind(product)
    .bind(domain)
    .bind(license_id)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let Some(row) = sqlx::query(
        "SELECT c.license_id, \
           (c.claimed_at < now() - make_interval(secs => $3)) AS stale, \
           (b.domain IS NOT DISTINCT FROM c.domain AND NOT coalesce(b.released, false) \
              AND b.license_id IS NOT NULL) AS bound \
         FROM domain_claims c LEFT JOIN bindings b ON b.license_id = c.license_id \
         WHERE c.product = $1 AND c.domain = $2",
    )
    .bind(product)
    .bind(domain)
    .bind(CLAIM_GRACE_SECS as f64)
    .fetch_optional(pool)
    .await?
    else {
        // Released between the two statements: try once more.
        return Box::pin(claim(pool, product, domain, license_id)).await;
    };
    let holder: Uuid = row.try_get("license_id")?;
    if holder == license_id {
        return Ok(Claim::Held);
    }
    let stale: bool = row.try_get("stale")?;
    let bound: bool = row.try_get("bound")?;
    if bound || !stale {
        return Ok(Claim::Taken(holder));
    }
    let taken_over = sqlx::query(
        "UPDATE domain_claims SET license_id = $3, claimed_at = now() \
         WHERE product = $1 AND domain = $2 AND license_id = $4",
    )
    .bind(product)
    .bind(domain)
    .bind(license_id)
    .bind(holder)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(if taken_over == 1 {
        Claim::New
    } else {
        Claim::Taken(holder)
    })
}

pub async fn release(
    pool: &PgPool,
    product: &str,
    domain: &str,
    license_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM domain_claims WHERE product = $1 AND domain = $2 AND license_id = $3")
        .bind(product)
        .bind(domain)
        .bind(license_id)
        .execute(pool)
        .await?;
    Ok(())
}
