//! API-key authentication and scope checks, the same in every service.
//!
//! A request carries `Authorization: Bearer <SecretId>.<SecretKey>`. The
//! key is looked up in the service's replica of issuance's API keys (table
//! `api_keys`, fed by [`ApiKeyReplica`]) or matched against the bootstrap
//! admin key from configuration; only SHA-256 digests are compared, in
//! constant time. Entries are cached for at most one second, so a
//! revocation takes effect everywhere within the relay and consumer delay
//! plus one second.

use std::future::{ready, Ready};
use std::net::IpAddr;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::issuance::{
    ApiKeyAllowlistChanged, ApiKeyCreated, ApiKeyRevoked, ApiKeyRotated, API_KEY_ALLOWLIST_CHANGED,
    API_KEY_CREATED, API_KEY_REVOKED, API_KEY_ROTATED,
};
use contracts::net::Cidr;
use contracts::{Actor, ActorKind, EventEnvelope};
use futures::future::LocalBoxFuture;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};

use crate::cache::TtlCache;
use crate::problem::Problem;

const CACHE_TTL: Duration = Duration::from_secs(1);
pub const ADMIN: &str = "admin";

/// The authenticated caller, available to handlers as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor::new(ActorKind::ApiKey, self.key_id.clone())
    }
}

impl FromRequest for Principal {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| Problem::unauthorized("UNAUTHENTICATED", "an API key is required")),
        )
    }
}

#[derive(Debug, Clone)]
struct KeyEntry {
    secret_digest: String,
    scopes: Vec<String>,
    allowlist: Vec<Cidr>,
    revoked: bool,
}

/// A new SecretKey: 256 random bits, hex.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Hex SHA-256 of a SecretKey: what events, tables and comparisons hold.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Splits a bearer token `<SecretId>.<SecretKey>`.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    (ok(id) && ok(secret)).then_some((id, secret))
}

pub struct Authenticator {
    pool: PgPool,
    admin: Option<(String, String)>,
    enabled: bool,
    cache: TtlCache<String, Option<KeyEntry>>,
}

impl Authenticator {
    /// `admin_key` is the bootstrap token (`<SecretId>.<SecretKey>`) that
    /// holds every scope; with `enabled` false every route is open (for
    /// measuring auth's own cost only — logged loudly).
    pub fn new(pool: PgPool, admin_key: Option<&str>, enabled: bool) -> Self {
        let admin = admin_key
            .and_then(split_token)
            .map(|(id, secret)| (id.to_string(), secret_digest(secret)));
        if admin_key.is_some() && admin.is_none() {
            tracing::warn!("admin key is malformed and is ignored");
        }
        if !enabled {
            tracing::warn!("AUTHENTICATION IS DISABLED: every endpoint is open");
        }
        Self {
            pool,
            admin,
            enabled,
            cache: TtlCache::new(CACHE_TTL),
        }
    }

    async fn entry(&self, key_id: &str) -> Result<Option<KeyEntry>, Problem> {
        if let Some((id, digest)) = &self.admin {
            if id == key_id {
                return Ok(Some(KeyEntry {
                    secret_digest: digest.clone(),
                    scopes: vec![ADMIN.to_string()],
                    allowlist: Vec::new(),
                    revoked: false,
                }));
            }
        }
        if let Some(entry) = self.cache.get(&key_id.to_string()) {
            return Ok(entry);
        }
        let row = sqlx::query(
            "SELECT secret_digest, scopes, allowlist, revoked FROM api_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "api key lookup failed");
            Problem::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "AUTH_UNAVAILABLE",
                "API keys cannot be checked right now",
            )
        })?;
        let entry = match row {
            Some(r) => {
                let allowlist: Vec<String> = r.try_get("allowlist").unwrap_or_default();
                Some(KeyEntry {
                    secret_digest: r.try_get("secret_digest").unwrap_or_default(),
                    scopes: r.try_get("scopes").unwrap_or_default(),
                    allowlist: allowlist.iter().filter_map(|c| Cidr::parse(c)).collect(),
                    revoked: r.try_get("revoked").unwrap_or(true),
                })
            }
            None => None,
        };
        self.cache.insert(key_id.to_string(), entry.clone());
        Ok(entry)
    }

    /// Checks a request for `scope`; the principal on success.
    pub async fn check(&self, req: &HttpRequest, scope: &str) -> Result<Principal, Problem> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| Problem::unauthorized("UNAUTHENTICATED", "an API key is required"))?;
        let (key_id, secret) = split_token(token)
            .ok_or_else(|| Problem::unauthorized("BAD_CREDENTIALS", "the API key is not valid"))?;
        let entry = self
            .entry(key_id)
            .await?
            .filter(|e| same(&e.secret_digest, &secret_digest(secret)))
            .ok_or_else(|| Problem::unauthorized("BAD_CREDENTIALS", "the API key is not valid"))?;
        if entry.revoked {
            return Err(Problem::unauthorized(
                "API_KEY_REVOKED",
                "the API key was revoked",
            ));
        }
        if !entry.allowlist.is_empty() {
            let peer: Option<IpAddr> = req.peer_addr().map(|a| a.ip());
            if !peer.is_some_and(|ip| entry.allowlist.iter().any(|c| c.contains(ip))) {
                return Err(Problem::forbidden(
                    "ADDRESS_NOT_ALLOWED",
                    "this API key may not be used from this address",
                ));
            }
        }
        if !entry.scopes.iter().any(|s| s == scope || s == ADMIN) {
            return Err(Problem::forbidden(
                "INSUFFICIENT_SCOPE",
                format!("this endpoint needs the {scope} scope"),
            )
            .with_field("scope"));
        }
        Ok(Principal {
            key_id: key_id.to_string(),
            scopes: entry.scopes,
        })
    }
}

/// Middleware body for a resource or scope — `.wrap(from_fn(require("issuer")))`:
/// only callers holding `scope` (or `admin`) get through.
pub fn require(
    scope: &'static str,
) -> impl Fn(
    ServiceRequest,
    Next<BoxBody>,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
       + Clone
       + 'static {
    move |req: ServiceRequest, next: Next<BoxBody>| {
        Box::pin(async move {
            let Some(auth) = req.app_data::<web::Data<Authenticator>>().cloned() else {
                return Err(Problem::internal().into());
            };
            if auth.enabled {
                let principal = auth.check(req.request(), scope).await?;
                req.extensions_mut().insert(principal);
            } else {
                req.extensions_mut().insert(Principal {
                    key_id: "auth-disabled".into(),
                    scopes: vec![ADMIN.into()],
                });
            }
            next.call(req).await
        })
    }
}

/// Keeps the `api_keys` replica from issuance's API key events.
pub struct ApiKeyReplica;

#[async_trait]
impl TxHandler for ApiKeyReplica {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let Some(event_type) = msg.header("event_type") else {
            return Ok(());
        };
        if !event_type.starts_with("ApiKey") {
            return Ok(());
        }
        let payload = msg.payload.as_deref().unwrap_or_default();
        let e: EventEnvelope = serde_json::from_slice(payload)
            .map_err(|err| HandleError::Poison(format!("not an event envelope: {err}")))?;
        let seq = i64::try_from(e.sequence).unwrap_or(i64::MAX);
        let bad = |err: serde_json::Error| HandleError::Poison(format!("{event_type}: {err}"));
        let sql = match e.event_type.as_str() {
            API_KEY_CREATED => {
                let p: ApiKeyCreated = serde_json::from_value(e.payload).map_err(bad)?;
                sqlx::query(
                    "INSERT INTO api_keys (key_id, secret_digest, scopes, allowlist, last_sequence) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id) DO NOTHING",
                )
                .bind(p.key_id)
                .bind(p.secret_digest)
                .bind(p.scopes)
                .bind(p.allowlist)
                .bind(seq)
            }
            API_KEY_ROTATED => {
                let p: ApiKeyRotated = serde_json::from_value(e.payload).map_err(bad)?;
                sqlx::query(
                    "UPDATE api_keys SET secret_digest = $2, last_sequence = $3, updated_at = now() \
                     WHERE key_id = $1 AND last_sequence < $3",
                )
                .bind(p.key_id)
                .bind(p.secret_digest)
                .bind(seq)
            }
            API_KEY_REVOKED => {
                let p: ApiKeyRevoked = serde_json::from_value(e.payload).map_err(bad)?;
                sqlx::query(
                    "UPDATE api_keys SET revoked = true, last_sequence = $2, updated_at = now() \
                     WHERE key_id = $1 AND last_sequence < $2",
                )
                .bind(p.key_id)
                .bind(seq)
            }
            API_KEY_ALLOWLIST_CHANGED => {
                let p: ApiKeyAllowlistChanged = serde_json::from_value(e.payload).map_err(bad)?;
                sqlx::query(
                    "UPDATE api_keys SET allowlist = $2, last_sequence = $3, updated_at = now() \
                     WHERE key_id = $1 AND last_sequence < $3",
                )
                .bind(p.key_id)
                .bind(p.allowlist)
                .bind(seq)
            }
            _ => return Ok(()),
        };
        sql.execute(&mut *tx).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_into_id_and_secret() {
        assert_eq!(split_token("AKID1.s3cr3t"), Some(("AKID1", "s3cr3t")));
        assert_eq!(split_token("nodot"), None);
        assert_eq!(split_token(".x"), None);
        assert_eq!(split_token("a.b c"), None);
    }

    #[test]
    fn digests_compare_in_full() {
        let d = secret_digest("abc");
        assert!(same(&d, &secret_digest("abc")));
        assert!(!same(&d, &secret_digest("abd")));
        assert!(!same(&d, &d[..10]));
    }
}
