//! Grant sync's tables: the inline indexes of its aggregates (clients,
//! leases, imported licenses and products), the grants it serves, the
//! change feed clients sync from, and the sealed upstream secrets. Every
//! query of the service is here, the heartbeats' and the lease reclaim's
//! too.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::grants::*;
use contracts::issuance::BundleDef;
use eventstore::InlineProjection;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{Client, ImportedLicense, Lease, LeaseStatus, Leases, Upstream};
use crate::secrets::Sealed;

/// The channel every change-feed row is announced on (payload: license id);
/// `pg_notify` delivers at commit, to every instance.
pub const CHANNEL: &str = "grant_sync_changes";

fn kind_text(kind: ChangeKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Appends to the change feed and announces it, in the caller's transaction.
pub async fn record_change(
    tx: &mut PgConnection,
    license_id: Uuid,
    client_id: Option<Uuid>,
    kind: ChangeKind,
    at: DateTime<Utc>,
    detail: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync_changes (license_id, client_id, kind, at, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(license_id)
    .bind(client_id)
    .bind(kind_text(kind))
    .bind(at)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(license_id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub struct ClientIndex;

/// A license client's webhook endpoint.
pub fn endpoint_of(client_id: Uuid) -> String {
    format!("client:{client_id}")
}

/// The audience of a license's events: the live clients it is assigned to.
pub struct ClientsOfLicense;

#[async_trait]
impl service_kit::webhooks::Audience for ClientsOfLicense {
    async fn of_license(
        &self,
        tx: &mut PgConnection,
        license: Uuid,
    ) -> Result<Vec<String>, sqlx::Error> {
        let clients: Vec<Uuid> = sqlx::query_scalar(
            "SELECT client_id FROM clients WHERE licenses @> ARRAY[$1]::uuid[] AND NOT revoked",
        )
        .bind(license)
        .fetch_all(&mut *tx)
        .await?;
        Ok(clients.into_iter().map(endpoint_of).collect())
    }
}

#[async_trait]
impl InlineProjection<Client> for ClientIndex {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        c: &Client,
    ) -> Result<(), sqlx::Error> {
        let Some(s) = &c.state else { return Ok(()) };
        // A client registered before webhooks has a URL and no events: it
        // receives nothing until its callback is set.
        let endpoint = match (&s.callback_url, s.revoked, s.callback_events.is_empty()) {
            (Some(url), false, false) => Some(service_kit::webhooks::Endpoint {
                url,
                events: &s.callback_events,
                disabled: s.callback_disabled,
            }),
            _ => None,
        };
        service_kit::webhooks::put_endpoint(tx, &endpoint_of(s.client_id), endpoint).await?;
        sqlx::query(
            "INSERT INTO clients (client_id, key_id, name, licenses, revoked, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (client_id) DO UPDATE SET revoked = EXCLUDED.revoked",
        )
        .bind(s.client_id)
        .bind(&s.key_id)
        .bind(&s.name)
        .bind(&s.licenses)
        .bind(s.revoked)
        .bind(s.registered_at)
        .execute(&mut *tx)
        .await?;
        // The credentials: an API key with scope sync-client, checked by the
        // same authenticator as every other key.
        sqlx::query(
            "INSERT INTO api_keys (key_id, secret_digest, scopes, allowlist, revoked, last_sequence) \
             VALUES ($1, $2, ARRAY['sync-client'], $3, $4, 0) \
             ON CONFLICT (key_id) DO UPDATE SET revoked = EXCLUDED.revoked, updated_at = now()",
        )
        .bind(&s.key_id)
        .bind(&s.secret_digest)
        .bind(&s.allowlist)
        .bind(s.revoked)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

pub struct LeaseIndex;

#[async_trait]
impl InlineProjection<Leases> for LeaseIndex {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        leases: &Leases,
    ) -> Result<(), sqlx::Error> {
        let Some(license_id) = leases.license_id else {
            return Ok(());
        };
        for l in leases.changed.iter().filter_map(|id| leases.touched(id)) {
            let deadline = contracts::time::add_secs(l.granted_at, i64::from(l.ttl_secs));
            sqlx::query(
                "INSERT INTO leases (lease_id, license_id, client_id, feature, features, quantity, \
                   status, ttl_secs, grace_secs, granted_at, deadline, ended_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (lease_id) DO UPDATE SET status = EXCLUDED.status, \
                   ended_at = EXCLUDED.ended_at",
            )
            .bind(l.lease_id)
            .bind(license_id)
            .bind(l.client_id)
            .bind(&l.feature)
            .bind(&l.features)
            .bind(i32::try_from(l.quantity).unwrap_or(i32::MAX))
            .bind(l.status.as_str())
            .bind(i32::try_from(l.ttl_secs).unwrap_or(i32::MAX))
            .bind(i32::try_from(l.grace_secs).unwrap_or(i32::MAX))
            .bind(l.granted_at)
            .bind(deadline)
            .bind(l.ended_at)
            .execute(&mut *tx)
            .await?;
            if l.status == LeaseStatus::Revoked {
                record_change(
                    tx,
                    license_id,
                    Some(l.client_id),
                    ChangeKind::LeaseRevoked,
                    l.ended_at.unwrap_or(l.granted_at),
                    serde_json::json!({"lease_id": l.lease_id, "feature": l.feature}),
                )
                .await?;
            }
        }
        Ok(())
    }
}

pub struct UpstreamIndex;

#[async_trait]
impl InlineProjection<Upstream> for UpstreamIndex {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        u: &Upstream,
    ) -> Result<(), sqlx::Error> {
        let Some(reg) = &u.registered else {
            return Ok(());
        };
        for p in u.imported.iter().filter_map(|c| u.products.get(c)) {
            upsert_product(tx, p, Some(reg.upstream_id)).await?;
        }
        Ok(())
    }
}

pub async fn upsert_product(
    tx: &mut PgConnection,
    p: &CatalogProduct,
    upstream_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO products (code, name, features, bundles, upstream_id) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, features = EXCLUDED.features, \
           bundles = EXCLUDED.bundles, upstream_id = EXCLUDED.upstream_id \
         WHERE EXCLUDED.upstream_id IS NULL OR products.upstream_id = EXCLUDED.upstream_id",
    )
    .bind(&p.code)
    .bind(&p.name)
    .bind(serde_json::to_value(&p.features).unwrap_or_default())
    .bind(serde_json::to_value(&p.bundles).unwrap_or_default())
    .bind(upstream_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub struct ImportedIndex;

#[async_trait]
impl InlineProjection<ImportedLicense> for ImportedIndex {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        l: &ImportedLicense,
    ) -> Result<(), sqlx::Error> {
        if let (Some(kind), Some(g)) = (l.grant_changed, &l.grant) {
            sqlx::query(
                "INSERT INTO grants (license_id, upstream_id, product, grant_doc) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (license_id) DO UPDATE SET grant_doc = EXCLUDED.grant_doc, updated_at = now() \
                 WHERE grants.upstream_id = EXCLUDED.upstream_id",
            )
            .bind(g.license_id)
            .bind(l.upstream_id)
            .bind(&g.product)
            .bind(serde_json::to_value(g).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
            record_change(
                tx,
                g.license_id,
                None,
                kind,
                Utc::now(),
                serde_json::to_value(g).unwrap_or_default(),
            )
            .await?;
        }
        for r in &l.new_revocations {
            insert_revocation(tx, r, l.upstream_id).await?;
        }
        Ok(())
    }
}

/// Records a revoked activation and announces it (once).
pub async fn insert_revocation(
    tx: &mut PgConnection,
    r: &Revocation,
    upstream_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO revocations (activation_id, license_id, reason, revoked_at, upstream_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (activation_id) DO NOTHING",
    )
    .bind(r.activation_id)
    .bind(r.license_id)
    .bind(&r.reason)
    .bind(r.revoked_at)
    .bind(upstream_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        record_change(
            tx,
            r.license_id,
            None,
            ChangeKind::ActivationRevoked,
            r.revoked_at,
            serde_json::to_value(r).unwrap_or_default(),
        )
        .await?;
    }
    Ok(())
}

/// Serialises, until the transaction ends, every writer of one license's
/// grant (license events and domain events arrive on different
/// partitions, even before the grant row exists).
async fn lock_license(tx: &mut PgConnection, license_id: Uuid) -> Result<(), sqlx::Error> {
    // The two-key form: a lock space apart from the relays' one-key locks.
    sqlx::query("SELECT pg_advisory_xact_lock(1196642131, hashtext($1::text))")
        .bind(license_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Writes the grant of a license this server's issuance owns and announces
/// how it changed.
pub async fn upsert_local_grant(
    tx: &mut PgConnection,
    view: &contracts::license_view::LicenseView,
) -> Result<Grant, sqlx::Error> {
    lock_license(tx, view.id).await?;
    let domain: Option<String> =
        sqlx::query_scalar("SELECT domain FROM license_domains WHERE license_id = $1")
            .bind(view.id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    let before: Option<Value> =
        sqlx::query_scalar("SELECT grant_doc FROM grants WHERE license_id = $1 FOR UPDATE")
            .bind(view.id)
            .fetch_optional(&mut *tx)
            .await?;
    let before: Option<Grant> = before.and_then(|v| serde_json::from_value(v).ok());
    let grant = Grant::from_view(view, domain);
    sqlx::query(
        "INSERT INTO grants (license_id, upstream_id, product, grant_doc) VALUES ($1, NULL, $2, $3) \
         ON CONFLICT (license_id) DO UPDATE SET upstream_id = NULL, grant_doc = EXCLUDED.grant_doc, \
           updated_at = now()",
    )
    .bind(grant.license_id)
    .bind(&grant.product)
    .bind(serde_json::to_value(&grant).unwrap_or_default())
    .execute(&mut *tx)
    .await?;
    // Events that leave the grant as it was (a key recovery) tell clients
    // nothing.
    let same = before.as_ref().is_some_and(|b| {
        Grant {
            version: grant.version,
            ..b.clone()
        } == grant
    });
    if same {
        return Ok(grant);
    }
    record_change(
        tx,
        grant.license_id,
        None,
        grant.change_from(before.as_ref()),
        view.updated_at,
        serde_json::to_value(&grant).unwrap_or_default(),
    )
    .await?;
    Ok(grant)
}

/// Applies a domain-binding event: the license's domain is now `domain`.
pub async fn set_domain(
    tx: &mut PgConnection,
    license_id: Uuid,
    domain: Option<String>,
    version: i64,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    lock_license(tx, license_id).await?;
    let applied = sqlx::query(
        "INSERT INTO license_domains (license_id, domain, version) VALUES ($1, $2, $3) \
         ON CONFLICT (license_id) DO UPDATE SET domain = EXCLUDED.domain, version = EXCLUDED.version \
         WHERE license_domains.version < EXCLUDED.version",
    )
    .bind(license_id)
    .bind(&domain)
    .bind(version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if applied == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE grants SET grant_doc = CASE WHEN $2::text IS NULL THEN grant_doc - 'domain' \
           ELSE jsonb_set(grant_doc, '{domain}', to_jsonb($2::text)) END, updated_at = now() \
         WHERE license_id = $1 AND upstream_id IS NULL",
    )
    .bind(license_id)
    .bind(&domain)
    .execute(&mut *tx)
    .await?;
    record_change(
        tx,
        license_id,
        None,
        ChangeKind::DomainRebound,
        at,
        serde_json::json!({"license_id": license_id, "domain": domain}),
    )
    .await
}

fn grants_from(rows: Vec<Value>) -> Vec<Grant> {
    rows.into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

pub async fn grants_of(pool: &PgPool, licenses: &[Uuid]) -> Result<Vec<Grant>, sqlx::Error> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT grant_doc FROM grants WHERE license_id = ANY($1) ORDER BY license_id",
    )
    .bind(licenses)
    .fetch_all(pool)
    .await?;
    Ok(grants_from(rows))
}

pub async fn grant(pool: &PgPool, license_id: Uuid) -> Result<Option<Grant>, sqlx::Error> {
    Ok(grants_of(pool, &[license_id]).await?.pop())
}

/// Which of `ids` this server can grant.
pub async fn known_licenses(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT license_id FROM grants WHERE license_id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Who holds each of `ids` here: None for this server's own licenses,
/// an upstream's id for imported ones; absent when unknown.
pub async fn grant_holders(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Option<Uuid>>, sqlx::Error> {
    let rows: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT license_id, upstream_id FROM grants WHERE license_id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Who defines each of the products `codes` here: None for this server's
/// own, an upstream's id for imported ones; absent when unknown.
pub async fn product_holders(
    pool: &PgPool,
    codes: &[String],
) -> Result<HashMap<String, Option<Uuid>>, sqlx::Error> {
    Ok(
        sqlx::query_as("SELECT code, upstream_id FROM products WHERE code = ANY($1)")
            .bind(codes)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect(),
    )
}

pub async fn bundles_of(pool: &PgPool, product: &str) -> Result<Vec<BundleDef>, sqlx::Error> {
    let v: Option<Value> = sqlx::query_scalar("SELECT bundles FROM products WHERE code = $1")
        .bind(product)
        .fetch_optional(pool)
        .await?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

/// The products of the given licenses.
pub async fn catalog_of(
    pool: &PgPool,
    licenses: &[Uuid],
) -> Result<Vec<CatalogProduct>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT code, name, features, bundles FROM products WHERE code IN \
           (SELECT product FROM grants WHERE license_id = ANY($1)) ORDER BY code",
    )
    .bind(licenses)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let features: Value = r.try_get("features")?;
        let bundles: Value = r.try_get("bundles")?;
        out.push(CatalogProduct {
            code: r.try_get("code")?,
            name: r.try_get("name")?,
            features: serde_json::from_value(features).unwrap_or_default(),
            bundles: serde_json::from_value(bundles).unwrap_or_default(),
        });
    }
    Ok(out)
}

pub async fn revocations_of(
    pool: &PgPool,
    licenses: &[Uuid],
) -> Result<Vec<Revocation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT activation_id, license_id, reason, revoked_at FROM revocations \
         WHERE license_id = ANY($1) ORDER BY revoked_at, activation_id",
    )
    .bind(licenses)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Revocation {
                activation_id: r.try_get("activation_id")?,
                license_id: r.try_get("license_id")?,
                reason: r.try_get("reason")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect()
}

/// A client's live leases.
pub async fn live_leases(pool: &PgPool, client_id: Uuid) -> Result<Vec<LeaseSummary>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT lease_id, license_id, feature, features, quantity, deadline FROM leases \
         WHERE client_id = $1 AND status = 'live' ORDER BY granted_at",
    )
    .bind(client_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(LeaseSummary {
                lease_id: r.try_get("lease_id")?,
                license_id: r.try_get("license_id")?,
                feature: r.try_get("feature")?,
                features: r.try_get("features")?,
                quantity: u32::try_from(r.try_get::<i32, _>("quantity")?).unwrap_or(0),
                deadline: r.try_get("deadline")?,
            })
        })
        .collect()
}

/// The license and heartbeat deadline of one of a client's leases.
pub async fn lease_of_client(
    pool: &PgPool,
    lease_id: Uuid,
    client_id: Uuid,
) -> Result<Option<(Uuid, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT license_id, deadline FROM leases WHERE lease_id = $1 AND client_id = $2")
        .bind(lease_id)
        .bind(client_id)
        .fetch_optional(pool)
        .await
}

/// A lease as the inline index holds it, live or ended (`expiring`, marked
/// by the reclaim scheduler, is live until its expiry is recorded).
pub async fn lease(pool: &PgPool, lease_id: Uuid) -> Result<Option<Lease>, sqlx::Error> {
    type Row = (
        Uuid,
        Uuid,
        String,
        Vec<String>,
        i32,
        String,
        i32,
        i32,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT lease_id, client_id, feature, features, quantity, status, ttl_secs, grace_secs, \
           granted_at, ended_at FROM leases WHERE lease_id = $1",
    )
    .bind(lease_id)
    .fetch_optional(pool)
    .await?;
    let Some((
        lease_id,
        client_id,
        feature,
        features,
        quantity,
        status,
        ttl,
        grace,
        granted_at,
        ended_at,
    )) = row
    else {
        return Ok(None);
    };
    let status = match status.as_str() {
        "released" => LeaseStatus::Released,
        "expired" => LeaseStatus::Expired,
        "revoked" => LeaseStatus::Revoked,
        "live" | "expiring" => LeaseStatus::Live,
        other => {
            return Err(sqlx::Error::Decode(
                format!("a lease's status reads {other:?}").into(),
            ))
        }
    };
    Ok(Some(Lease {
        lease_id,
        client_id,
        feature,
        features,
        quantity: u32::try_from(quantity).unwrap_or(0),
        ttl_secs: u32::try_from(ttl).unwrap_or(0),
        grace_secs: u32::try_from(grace).unwrap_or(0),
        granted_at,
        status,
        ended_at,
    }))
}

/// A lease to reclaim: `(lease_id, license_id, deadline)`.
pub type DueLease = (Uuid, Uuid, DateTime<Utc>);

/// Marks `expiring` the live leases (at most 500) whose deadline plus
/// grace has passed at `now`, skipping rows another instance holds; the
/// leases it marked.
pub async fn mark_due_leases_expiring(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<Vec<DueLease>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (SELECT lease_id FROM leases WHERE status = 'live' \
           AND deadline + make_interval(secs => grace_secs) <= $1 \
           ORDER BY deadline LIMIT 500 FOR UPDATE SKIP LOCKED) \
         UPDATE leases l SET status = 'expiring' FROM due WHERE l.lease_id = due.lease_id \
         RETURNING l.lease_id, l.license_id, l.deadline",
    )
    .bind(now)
    .fetch_all(pool)
    .await
}

/// Leases left `expiring` (at most 500).
pub async fn expiring_leases(pool: &PgPool) -> Result<Vec<DueLease>, sqlx::Error> {
    sqlx::query_as(
        "SELECT lease_id, license_id, deadline FROM leases WHERE status = 'expiring' LIMIT 500",
    )
    .fetch_all(pool)
    .await
}

/// A lease a heartbeat renewed, and its new deadline.
pub struct Renewed {
    pub lease_id: Uuid,
    pub client_id: Uuid,
    pub deadline: DateTime<Utc>,
}

/// Moves the deadline of each live lease among `ids` (paired with
/// `clients`, in lease-id order) still within its grace at `now` to `now`
/// plus its TTL, in one statement.
pub async fn renew_leases(
    pool: &PgPool,
    ids: &[Uuid],
    clients: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<Renewed>, sqlx::Error> {
    // `lease_id = ANY` keeps the look-up on the primary key whatever the
    // statistics say; the client must be the lease's own.
    let rows = sqlx::query(
        "WITH b AS (SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS b(lease_id, client_id)), \
         due AS (SELECT l.lease_id FROM leases l JOIN b ON b.lease_id = l.lease_id \
                   AND b.client_id = l.client_id \
                 WHERE l.lease_id = ANY($1) AND l.status = 'live' \
                   AND l.deadline + make_interval(secs => l.grace_secs) > $3 \
                 ORDER BY l.lease_id FOR UPDATE OF l) \
         UPDATE leases l SET deadline = $3 + make_interval(secs => l.ttl_secs) \
         FROM due WHERE l.lease_id = due.lease_id AND l.lease_id = ANY($1) \
         RETURNING l.lease_id, l.client_id, l.deadline",
    )
    .bind(ids)
    .bind(clients)
    .bind(now)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Renewed {
                lease_id: r.try_get("lease_id")?,
                client_id: r.try_get("client_id")?,
                deadline: r.try_get("deadline")?,
            })
        })
        .collect()
}

/// A lease's client and status.
pub struct LeaseOwner {
    pub lease_id: Uuid,
    pub client_id: Uuid,
    pub status: String,
}

/// The client and status of each of `ids` that exists.
pub async fn lease_owners(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<LeaseOwner>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT lease_id, client_id, status FROM leases WHERE lease_id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|r| {
            Ok(LeaseOwner {
                lease_id: r.try_get("lease_id")?,
                client_id: r.try_get("client_id")?,
                status: r.try_get("status")?,
            })
        })
        .collect()
}

/// A registered client, as requests need it.
#[derive(Debug, Clone)]
pub struct ClientRow {
    pub client_id: Uuid,
    pub name: String,
    pub licenses: Vec<Uuid>,
    pub revoked: bool,
}

pub async fn client_by_key(pool: &PgPool, key_id: &str) -> Result<Option<ClientRow>, sqlx::Error> {
    let row =
        sqlx::query("SELECT client_id, name, licenses, revoked FROM clients WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(pool)
            .await?;
    row.map(|r| {
        Ok(ClientRow {
            client_id: r.try_get("client_id")?,
            name: r.try_get("name")?,
            licenses: r.try_get("licenses")?,
            revoked: r.try_get("revoked")?,
        })
    })
    .transpose()
}

/// The licenses of a client (None when there is no such client).
pub async fn client_licenses(
    pool: &PgPool,
    client_id: Uuid,
) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
    sqlx::query_scalar("SELECT licenses FROM clients WHERE client_id = $1")
        .bind(client_id)
        .fetch_optional(pool)
        .await
}

/// Records the time a client reported (at most `ceiling`); the latest
/// time it had reported before (None the first time).
/// Whether a license among `licenses` has a policy that requires the
/// client's clock (its grant's `require_client_time`).
pub async fn clock_required(pool: &PgPool, licenses: &[Uuid]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(bool_or((grant_doc ->> 'require_client_time')::boolean), false) \
         FROM grants WHERE license_id = ANY($1)",
    )
    .bind(licenses)
    .fetch_one(pool)
    .await
}

/// Keeps `record` as the client's latest time unless it had a later one;
/// the time it had before.
pub async fn report_client_time(
    pool: &PgPool,
    client_id: Uuid,
    record: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH old AS (SELECT last_client_time FROM clients WHERE client_id = $1 FOR UPDATE) \
         UPDATE clients SET last_client_time = greatest(old.last_client_time, $2) \
         FROM old WHERE client_id = $1 RETURNING old.last_client_time",
    )
    .bind(client_id)
    .bind(record)
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}

/// A position in the change feed: `(tx_id, position)` of the last row seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    pub tx: u64,
    pub position: i64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("c1.{}.{}", self.tx, self.position)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.strip_prefix("c1.")?.split('.');
        let tx = parts.next()?.parse().ok()?;
        let position = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self { tx, position })
    }
}

/// The newest position every transaction below it has settled: a first
/// sync starts here.
pub async fn head(pool: &PgPool) -> Result<Cursor, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tx_id::text AS tx, position FROM sync_changes \
         WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY tx_id DESC, position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(r) => Cursor {
            tx: r.try_get::<String, _>("tx")?.parse().unwrap_or(0),
            position: r.try_get("position")?,
        },
        None => Cursor::default(),
    })
}

/// A change-feed row: the change, and the one client it concerns (None:
/// every client of the license).
pub type FeedRow = (Option<Uuid>, Change);

/// Changes of `licenses` after `cursor`, at most `limit`, and the cursor
/// after the last one. Every client of these licenses asks the same, so the
/// rows of one client's leases come too and callers keep their own.
pub async fn changes_since(
    pool: &PgPool,
    licenses: &[Uuid],
    cursor: Cursor,
    limit: i64,
) -> Result<(Vec<FeedRow>, Cursor), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tx_id::text AS tx, position, license_id, client_id, kind, at, detail \
         FROM sync_changes \
         WHERE license_id = ANY($1) AND (tx_id, position) > ($2::text::xid8, $3) \
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY tx_id, position LIMIT $4",
    )
    .bind(licenses)
    .bind(cursor.tx.to_string())
    .bind(cursor.position)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut next = cursor;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        next = Cursor {
            tx: r.try_get::<String, _>("tx")?.parse().unwrap_or(next.tx),
            position: r.try_get("position")?,
        };
        let kind: String = r.try_get("kind")?;
        let Ok(kind) = serde_json::from_value(Value::String(kind)) else {
            continue;
        };
        out.push((
            r.try_get("client_id")?,
            Change {
                kind,
                license_id: r.try_get("license_id")?,
                at: r.try_get("at")?,
                detail: r.try_get("detail")?,
            },
        ));
    }
    Ok((out, next))
}

// ---------------------------------------------------------------- upstream secrets

/// An upstream's secret as stored: sealed, or in plaintext from before
/// secrets were sealed (until the next start-up seals it).
#[derive(Debug)]
pub enum StoredSecret {
    Sealed(Sealed),
    Plaintext(String),
}

fn stored_secret(r: &sqlx::postgres::PgRow) -> Result<StoredSecret, sqlx::Error> {
    let nonce: Option<Vec<u8>> = r.try_get("nonce")?;
    let ciphertext: Option<Vec<u8>> = r.try_get("ciphertext")?;
    Ok(match (nonce, ciphertext) {
        (Some(nonce), Some(ciphertext)) => StoredSecret::Sealed(Sealed { nonce, ciphertext }),
        // The table's check constraint leaves only the plaintext form.
        _ => StoredSecret::Plaintext(
            r.try_get::<Option<String>, _>("plaintext_secret")?
                .unwrap_or_default(),
        ),
    })
}

/// Stores a new upstream's sealed secret; a replayed registration keeps
/// the first.
pub async fn insert_upstream_secret(
    pool: &PgPool,
    upstream_id: Uuid,
    sealed: &Sealed,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO upstream_credentials (upstream_id, nonce, ciphertext) VALUES ($1, $2, $3) \
         ON CONFLICT (upstream_id) DO NOTHING",
    )
    .bind(upstream_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes the secret of a registration that recorded no event.
pub async fn delete_orphan_secret(pool: &PgPool, upstream_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM upstream_credentials WHERE upstream_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $2 AND aggregate_id = $3)",
    )
    .bind(upstream_id)
    .bind(UPSTREAM_AGGREGATE)
    .bind(upstream_id.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn upstream_secret(
    pool: &PgPool,
    upstream_id: Uuid,
) -> Result<Option<StoredSecret>, sqlx::Error> {
    sqlx::query(
        "SELECT nonce, ciphertext, plaintext_secret FROM upstream_credentials WHERE upstream_id = $1",
    )
    .bind(upstream_id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(stored_secret)
    .transpose()
}

/// Every stored secret, by upstream.
pub async fn upstream_secrets(pool: &PgPool) -> Result<Vec<(Uuid, StoredSecret)>, sqlx::Error> {
    sqlx::query(
        "SELECT upstream_id, nonce, ciphertext, plaintext_secret FROM upstream_credentials \
         ORDER BY upstream_id",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("upstream_id")?, stored_secret(r)?)))
    .collect()
}

/// Replaces a plaintext secret with its sealed form; false when another
/// instance did it first.
pub async fn seal_plaintext_secret(
    pool: &PgPool,
    upstream_id: Uuid,
    sealed: &Sealed,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE upstream_credentials SET nonce = $2, ciphertext = $3, plaintext_secret = NULL \
         WHERE upstream_id = $1 AND plaintext_secret IS NOT NULL",
    )
    .bind(upstream_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            tx: 7_000_123,
            position: 42,
        };
        assert_eq!(c.encode(), "c1.7000123.42");
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "", "c1.", "c1.1", "c1.1.2.3", "c2.1.2", "c1.-1.2", "c1.x.2", "nonsense",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
