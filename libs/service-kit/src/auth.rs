//! Authentication and scope checks, the same in every service.
//!
//! Two kinds of caller. The vendor's own services and operators carry
//! `Authorization: Bearer <SecretId>.<SecretKey>`, an API key whose scopes
//! name what it may do, on every license. An installed product carries its
//! license key, `Authorization: License <key>`, and reaches that license
//! only (see [`Principal::reach`]); the routes that take it say so by
//! using [`require_or_license`].
//!
//! For API keys, the
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
use actix_web::dev::{Payload, ServiceRequest};
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
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};

use crate::cache::TtlCache;
use crate::problem::Problem;
use crate::server::Middleware;

const CACHE_TTL: Duration = Duration::from_secs(1);
pub const ADMIN: &str = "admin";

/// The authenticated caller, available to handlers as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub scopes: Vec<String>,
    /// An installed product's credential (its license key, or a file of
    /// its license): it reaches this license and nothing else.
    pub license: Option<uuid::Uuid>,
}

impl Principal {
    /// The credential of an installed product holding `license`.
    pub fn of_license(license: uuid::Uuid) -> Self {
        Self {
            key_id: format!("license:{license}"),
            scopes: Vec::new(),
            license: Some(license),
        }
    }

    pub fn actor(&self) -> Actor {
        match self.license {
            Some(id) => Actor::new(ActorKind::License, id.to_string()),
            None => Actor::new(ActorKind::ApiKey, self.key_id.clone()),
        }
    }

    /// Whether this caller may act on `license`: an API key with the
    /// route's scope reaches every license, a license credential its own.
    /// Refused as 404 `not_found` (the caller's own code for the thing it
    /// asked about), so a product cannot even learn that another
    /// customer's license or activation exists.
    pub fn reach<E>(&self, license: uuid::Uuid, not_found: impl FnOnce() -> E) -> Result<(), E> {
        match self.license {
            Some(own) if own != license => Err(not_found()),
            _ => Ok(()),
        }
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
    /// None when an entry does not parse: the key is then refused
    /// everywhere rather than usable from anywhere.
    allowlist: Option<Vec<Cidr>>,
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

pub use domain_kit::split_token;

/// The bootstrap admin keys: from configuration, and from a file read
/// again within a second of a change, so that a key can be rotated or
/// revoked without restarting anything. Only `(SecretId, digest)` pairs.
#[derive(Default)]
struct BootstrapKeys {
    inline: Vec<(String, String)>,
    file: Option<std::path::PathBuf>,
    read: std::sync::Mutex<FileKeys>,
}

#[derive(Default)]
struct FileKeys {
    checked: Option<std::time::Instant>,
    keys: Vec<(String, String)>,
}

/// `(SecretId, digest)` of each well-formed token in `text` (commas or
/// lines between them, `#` comments); the malformed ones are counted.
fn parse_tokens(text: &str) -> (Vec<(String, String)>, usize) {
    let mut keys = Vec::new();
    let mut bad = 0;
    for token in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        match split_token(token) {
            Some((id, secret)) => keys.push((id.to_string(), secret_digest(secret))),
            None => bad += 1,
        }
    }
    (keys, bad)
}

impl BootstrapKeys {
    fn matches(&self, key_id: &str, digest: &str) -> bool {
        let hit =
            |keys: &[(String, String)]| keys.iter().any(|(id, d)| id == key_id && same(d, digest));
        hit(&self.inline) || self.file.is_some() && hit(&self.file_keys())
    }

    /// The file's keys, read again once a second (it is a few lines).
    fn file_keys(&self) -> Vec<(String, String)> {
        let Some(path) = &self.file else {
            return Vec::new();
        };
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if read.checked.is_some_and(|t| t.elapsed() < CACHE_TTL) {
            return read.keys.clone();
        }
        read.checked = Some(std::time::Instant::now());
        // A regular file of a few lines: anything else (a FIFO that would
        // block, a directory, something huge) holds no key.
        let readable = std::fs::metadata(path)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                if !m.is_file() {
                    Err("not a regular file".to_string())
                } else if m.len() > 64 * 1024 {
                    Err("larger than 64 KiB".to_string())
                } else {
                    Ok(())
                }
            });
        let keys = match readable
            .and_then(|()| std::fs::read_to_string(path).map_err(|e| e.to_string()))
        {
            Ok(text) => {
                let (keys, bad) = parse_tokens(&text);
                if bad > 0 && keys != read.keys {
                    tracing::warn!(file = %path.display(), bad, "admin key file holds malformed keys; ignored");
                }
                keys
            }
            Err(e) => {
                if !read.keys.is_empty() {
                    tracing::warn!(file = %path.display(), error = %e, "admin key file unreadable: no bootstrap key");
                }
                Vec::new()
            }
        };
        if keys != read.keys {
            tracing::info!(file = %path.display(), keys = keys.len(), "bootstrap admin keys changed");
            read.keys = keys;
        }
        read.keys.clone()
    }
}

pub struct Authenticator {
    pool: PgPool,
    admin: BootstrapKeys,
    enabled: bool,
    cache: TtlCache<String, Option<KeyEntry>>,
    /// License key digest → the license it opens (None: no such live
    /// license), from the service's license replica.
    licenses: TtlCache<String, Option<uuid::Uuid>>,
}

impl Authenticator {
    /// `admin_key` is the bootstrap token (`<SecretId>.<SecretKey>`) that
    /// holds every scope; with `enabled` false every route is open (for
    /// measuring auth's own cost only — logged loudly).
    pub fn new(pool: PgPool, admin_key: Option<&str>, enabled: bool) -> Self {
        let (inline, bad) = parse_tokens(admin_key.unwrap_or_default());
        if bad > 0 {
            tracing::warn!(bad, "admin key is malformed and is ignored");
        }
        let admin = BootstrapKeys {
            inline,
            ..BootstrapKeys::default()
        };
        if !enabled {
            tracing::warn!("AUTHENTICATION IS DISABLED: every endpoint is open");
        }
        Self {
            pool,
            admin,
            enabled,
            cache: TtlCache::new(CACHE_TTL),
            licenses: TtlCache::new(CACHE_TTL),
        }
    }

    /// Bootstrap admin keys also from `file` (see `admin_key_file`).
    pub fn with_admin_key_file(mut self, file: Option<&str>) -> Self {
        self.admin.file = file.map(std::path::PathBuf::from);
        self
    }

    async fn entry(&self, key_id: &str) -> Result<Option<KeyEntry>, Problem> {
        if let Some(entry) = self.cache.get(&key_id.to_string()) {
            return Ok(entry);
        }
        let row = sqlx::query(
            "SELECT secret_digest, scopes, allowlist, revoked FROM api_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(auth_unavailable)?;
        let entry = match row {
            Some(r) => {
                let allowlist: Vec<String> = r.try_get("allowlist").unwrap_or_default();
                Some(KeyEntry {
                    secret_digest: r.try_get("secret_digest").unwrap_or_default(),
                    scopes: r.try_get("scopes").unwrap_or_default(),
                    allowlist: allowlist.iter().map(|c| Cidr::parse(c)).collect(),
                    revoked: r.try_get("revoked").unwrap_or(true),
                })
            }
            None => None,
        };
        self.cache.insert(key_id.to_string(), entry.clone());
        Ok(entry)
    }

    /// The license a license key opens, for an installed product's
    /// credential: 401 `BAD_CREDENTIALS` for a key no live license has
    /// here (mistyped, unknown, deleted), so the header never tells a
    /// guesser more than that.
    pub async fn license(&self, key: &str) -> Result<Principal, Problem> {
        let bad = || Problem::unauthorized("BAD_CREDENTIALS", "the license key is not valid");
        if key.len() > 64 {
            return Err(bad());
        }
        let digest = crate::replica::key_digest(key, "Authorization").map_err(|_| bad())?;
        let id = match self.licenses.get(&digest) {
            Some(id) => id,
            None => {
                let view = crate::replica::license_by_digest(&self.pool, &digest)
                    .await
                    .map_err(auth_unavailable)?;
                let id = view
                    .filter(|l| l.status != contracts::issuance::LicenseStatus::Deleted)
                    .map(|l| l.id);
                self.licenses.insert(digest, id);
                id
            }
        };
        id.map(Principal::of_license).ok_or_else(bad)
    }

    /// Checks a request for `scope`, or — where `license_ok` — for a
    /// license credential; the principal on success.
    pub async fn credential(
        &self,
        req: &HttpRequest,
        scope: &str,
        license_ok: bool,
    ) -> Result<Principal, Problem> {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if license_ok {
            if let Some(key) = header.and_then(|v| v.strip_prefix("License ")) {
                return self.license(key.trim()).await;
            }
        }
        self.check(req, scope).await
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
        if self.admin.matches(key_id, &secret_digest(secret)) {
            return Ok(Principal {
                key_id: key_id.to_string(),
                scopes: vec![ADMIN.to_string()],
                license: None,
            });
        }
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
        let allowed = match &entry.allowlist {
            None => false,
            Some(list) if list.is_empty() => true,
            Some(list) => {
                // Behind a trusted proxy, the address it vouches for.
                let client: Option<IpAddr> = crate::client_addr::client_ip(req);
                client.is_some_and(|ip| list.iter().any(|c| c.contains(ip)))
            }
        };
        if !allowed {
            return Err(Problem::forbidden(
                "ADDRESS_NOT_ALLOWED",
                "this API key may not be used from this address",
            ));
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
            license: None,
        })
    }
}

fn auth_unavailable(e: sqlx::Error) -> Problem {
    bus::outage::error("credential lookup", &e);
    Problem::new(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "AUTH_UNAVAILABLE",
        "Credentials cannot be checked right now",
    )
}

/// Middleware body for a resource or scope — `.wrap(from_fn(require("issuer")))`:
/// only callers holding `scope` (or `admin`) get through.
pub fn require(scope: &'static str) -> impl Middleware {
    guard(scope, false)
}

/// [`require`], or an installed product's license credential
/// (`Authorization: License <key>`), which reaches its own license only:
/// the handler checks the target with [`Principal::reach`].
pub fn require_or_license(scope: &'static str) -> impl Middleware {
    guard(scope, true)
}

fn guard(scope: &'static str, license_ok: bool) -> impl Middleware {
    move |req: ServiceRequest, next: Next<BoxBody>| {
        Box::pin(async move {
            // A credential another layer already established (a service's
            // own scheme, e.g. activation files) stands.
            if req.extensions().get::<Principal>().is_none() {
                let principal = authenticate(&req, scope, license_ok).await?;
                req.extensions_mut().insert(principal);
            }
            next.call(req).await
        })
    }
}

/// The principal of a request for `scope` (or its license credential).
pub async fn authenticate(
    req: &ServiceRequest,
    scope: &str,
    license_ok: bool,
) -> Result<Principal, Problem> {
    let Some(auth) = req.app_data::<web::Data<Authenticator>>().cloned() else {
        return Err(Problem::internal());
    };
    if !auth.enabled {
        return Ok(Principal {
            key_id: "auth-disabled".into(),
            scopes: vec![ADMIN.into()],
            license: None,
        });
    }
    auth.credential(req.request(), scope, license_ok).await
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
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
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
    fn bootstrap_keys_follow_their_file() {
        let path = std::env::temp_dir().join(format!("admin-{}.key", uuid::Uuid::new_v4()));
        let keys = BootstrapKeys {
            file: Some(path.clone()),
            ..BootstrapKeys::default()
        };
        let old = secret_digest("old");
        let new = secret_digest("new");
        assert!(!keys.matches("AKIDa", &old), "no file, no key");
        std::fs::write(&path, "# bootstrap\nAKIDa.old\n").unwrap();
        keys.read.lock().unwrap().checked = None;
        assert!(keys.matches("AKIDa", &old));
        // Rotated: within a second the old key is gone, the new one works.
        std::fs::write(&path, "AKIDb.new, not-a-key\n").unwrap();
        keys.read.lock().unwrap().checked = None;
        assert!(!keys.matches("AKIDa", &old));
        assert!(keys.matches("AKIDb", &new));
        assert!(!keys.matches("AKIDb", &old), "the id alone is nothing");
        // Revoked: an empty file holds no key.
        std::fs::write(&path, "").unwrap();
        keys.read.lock().unwrap().checked = None;
        assert!(!keys.matches("AKIDb", &new));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn digests_compare_in_full() {
        let d = secret_digest("abc");
        assert!(same(&d, &secret_digest("abc")));
        assert!(!same(&d, &secret_digest("abd")));
        assert!(!same(&d, &d[..10]));
    }
}
