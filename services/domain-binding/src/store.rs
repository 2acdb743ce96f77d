//! Domain binding's tables, both written in the transaction of a
//! `DomainBinding`'s events: the `bindings` index and the domain claims
//! that keep one live license per registrable domain and product. The
//! host-check cache's reads of the license replica and of `bindings`
//! (by `rev`) are here too.

use async_trait::async_trait;
use eventstore::{ErrorKind, InlineProjection, Refused};
use serde_json::Value;
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

    /// The license's claim follows its binding: the bound domain's row is
    /// taken, any other row of the license is let go. The primary key
    /// (product, domain) decides between licenses: this insert waits for
    /// another transaction inserting the same row, then inserts (that one
    /// rolled back) or, as `DO UPDATE`, locks the committed row and
    /// answers its holder, so the read cannot be overtaken before this
    /// transaction ends. Taking comes before letting go, so two licenses
    /// swapping domains never wait on each other's old row.
    async fn claim(
        &self,
        tx: &mut PgConnection,
        aggregate_id: &str,
        b: &Binding,
    ) -> Result<Result<(), Refused>, sqlx::Error> {
        let Ok(license_id) = Uuid::parse_str(aggregate_id) else {
            return Ok(Ok(()));
        };
        if let Some(domain) = &b.domain {
            let holder: Uuid = sqlx::query_scalar(
                "INSERT INTO domain_claims (product, domain, license_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (product, domain) DO UPDATE SET license_id = domain_claims.license_id \
                 RETURNING license_id",
            )
            .bind(&b.product)
            .bind(domain)
            .bind(license_id)
            .fetch_one(&mut *tx)
            .await?;
            if holder != license_id {
                return Ok(Err(Refused::new(
                    "DOMAIN_TAKEN",
                    ErrorKind::Conflict,
                    format!("{domain} is bound to another license of {}", b.product),
                )
                .with_field("domain")));
            }
        }
        sqlx::query(
            "DELETE FROM domain_claims WHERE license_id = $1 AND domain IS DISTINCT FROM $2",
        )
        .bind(license_id)
        .bind(&b.domain)
        .execute(&mut *tx)
        .await?;
        Ok(Ok(()))
    }
}

/// A row of the license replica, as the host-check cache reads it.
pub struct ReplicaRow {
    pub key_digest: Option<String>,
    pub view: Value,
    pub rev: i64,
}

/// License replica rows with a `rev` above `rev`, in `rev` order.
pub async fn licenses_since(pool: &PgPool, rev: i64) -> Result<Vec<ReplicaRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT key_digest, view, rev FROM license_replica WHERE rev > $1 ORDER BY rev",
    )
    .bind(rev)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ReplicaRow {
                key_digest: r.try_get("key_digest")?,
                view: r.try_get("view")?,
                rev: r.try_get("rev")?,
            })
        })
        .collect()
}

/// A row of `bindings`, as the host-check cache reads it.
pub struct BindingRow {
    pub license_id: Uuid,
    pub domain: Option<String>,
    pub released: bool,
    pub rev: i64,
}

/// `bindings` rows with a `rev` above `rev`, in `rev` order.
pub async fn bindings_since(pool: &PgPool, rev: i64) -> Result<Vec<BindingRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT license_id, domain, released, rev FROM bindings WHERE rev > $1 ORDER BY rev",
    )
    .bind(rev)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(BindingRow {
                license_id: r.try_get("license_id")?,
                domain: r.try_get("domain")?,
                released: r.try_get("released")?,
                rev: r.try_get("rev")?,
            })
        })
        .collect()
}
