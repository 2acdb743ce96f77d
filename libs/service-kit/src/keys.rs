//! The signing keys of a service that signs documents (ES256 compact JWS):
//! the PKCS#8 PEM key file, the `signing_keys` index of the `SigningKey`
//! aggregate's events (the aggregate itself is pure and lives in
//! `domain_kit::signing_key`), the `Signer` that signs with the configured
//! key and verifies with every key ever published, so files signed before a
//! rotation keep verifying and the JWKS never drops a key that signed a
//! live document, and the JWKS route.
//!
//! A service using it:
//! - creates the table in its own migration (each service's history
//!   already holds it, and a migration is never rewritten, so the table is
//!   not moved into the event store's migrations):
//!   `CREATE TABLE signing_keys (kid text PRIMARY KEY, jwk jsonb NOT NULL,
//!   published_at timestamptz NOT NULL);`
//! - loads its ring with [`load_ring`] before starting the platform, builds
//!   a [`Signer`] on the platform's pool and clock, and calls
//!   [`Signer::publish_at_startup`] before serving or signing anything;
//! - mounts [`routes`] (`GET /.well-known/jwks.json`) for its state type.
//!
//! The events are the published contracts of `contracts::activation`
//! (`SigningKey` aggregate, `PublishSigningKey`, `SigningKeyPublished` v1),
//! whichever service records them in its own event store.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use async_trait::async_trait;
use chrono::Utc;
use contracts::activation::PUBLISH_SIGNING_KEY;
use contracts::{Actor, ActorKind};
use eventstore::{
    derived_id, request_digest, CommandContext, InlineProjection, Repository, StoreError,
};
use rand::RngCore;
use serde::Serialize;
use signing::{Jwk, Jwks, KeyRing, SigningError};
use sqlx::{PgConnection, PgPool};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::clock::Clock;
use crate::command::store_problem;
use crate::platform::PlatformError;
use crate::Problem;

/// Where every service serves the public keys it signs with.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How long a read of the published keys is reused.
const CACHE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// The key file

/// The key ring of the PKCS#8 PEM file at `path` (P-256; its kid is its
/// RFC 7638 thumbprint). With `generate`, a missing file is first created
/// with a new key (mode 0600, never overwriting a file that appears
/// meanwhile): for development; in production the key is provisioned.
/// Errors name the file, never its content.
pub fn load_ring(path: &Path, generate: bool) -> Result<KeyRing, PlatformError> {
    if !path.exists() && generate {
        let pem = signing::generate_pem()
            .map_err(|e| PlatformError::Config(format!("generating a signing key: {e}")))?;
        write_private(path, &pem)
            .map_err(|e| PlatformError::Config(format!("writing {}: {e}", path.display())))?;
    }
    let pem = std::fs::read_to_string(path)
        .map_err(|e| PlatformError::Config(format!("signing_key_file {}: {e}", path.display())))?;
    KeyRing::from_pem_thumbprint(&pem)
        .map_err(|e| PlatformError::Config(format!("signing_key_file {}: {e}", path.display())))
}

/// The 32-byte secret key in the file at `path`: 64 hexadecimal digits
/// (surrounding whitespace ignored). With `generate`, a missing file is
/// first created with 32 random bytes from the operating system, mode
/// 0600, like [`load_ring`]'s key. Errors name the file, never its content.
pub fn load_secret_key(path: &Path, generate: bool) -> Result<[u8; 32], PlatformError> {
    let named =
        |e: &dyn std::fmt::Display| PlatformError::Config(format!("{}: {e}", path.display()));
    if !path.exists() && generate {
        let mut key = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut key)
            .map_err(|e| named(&format!("generating a key: {e}")))?;
        write_private(path, &format!("{}\n", hex::encode(key))).map_err(|e| named(&e))?;
    }
    let text = std::fs::read_to_string(path).map_err(|e| named(&e))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|_| named(&"not 32 bytes written as 64 hexadecimal digits"))?;
    Ok(key)
}

fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pem.as_bytes())
}

pub use domain_kit::signing_key::{
    KeyServices, PublishSigningKey, SigningKey, SigningKeyError, SigningKeyEvent,
};

// ---------------------------------------------------------------------------
// The index

/// Keeps table `signing_keys` (kid, jwk, published_at) in the transaction
/// of the `SigningKey` events.
pub struct KeyIndex;

#[async_trait]
impl InlineProjection<SigningKey> for KeyIndex {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        _aggregate_id: &str,
        key: &SigningKey,
    ) -> Result<(), sqlx::Error> {
        let Some(p) = &key.published else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO signing_keys (kid, jwk, published_at) VALUES ($1, $2, $3) \
             ON CONFLICT (kid) DO NOTHING",
        )
        .bind(&p.kid)
        .bind(p.jwk())
        .bind(p.published_at)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Every published key, oldest first.
pub async fn published_keys(pool: &PgPool) -> Result<Vec<Jwk>, sqlx::Error> {
    let rows: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT jwk FROM signing_keys ORDER BY published_at")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect())
}

// ---------------------------------------------------------------------------
// The signer

/// Signs with the configured key; verifies and publishes with every key
/// recorded in the service's own event store.
pub struct Signer {
    ring: KeyRing,
    pool: PgPool,
    keys: Repository<SigningKey>,
    cache: RwLock<Option<(Instant, Vec<Jwk>)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Signature(SigningError),
    #[error("database: {0}")]
    Store(sqlx::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no active key")]
    NoActiveKey,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{code}: {message}")]
    Rejected { code: String, message: String },
}

impl Signer {
    /// A signer with `ring`'s active key, publishing into the event store
    /// behind `pool` (the `SigningKey` repository with its `KeyIndex`).
    pub fn new(ring: KeyRing, pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        let keys = Repository::new(pool.clone(), KeyServices { clock })
            .with_projection(Arc::new(KeyIndex));
        Self {
            ring,
            pool,
            keys,
            cache: RwLock::new(None),
        }
    }

    pub fn active_kid(&self) -> &str {
        self.ring.active_kid()
    }

    /// The active key's JWK, published before its first signature.
    pub fn active_jwk(&self) -> Option<Jwk> {
        let kid = self.ring.active_kid();
        self.ring.jwks().keys.into_iter().find(|k| k.kid == kid)
    }

    pub fn sign<T: Serialize>(&self, payload: &T) -> Result<String, SigningError> {
        self.ring.sign(payload)
    }

    /// [`Signer::sign`] with another JWS header `typ`.
    pub fn sign_typed<T: Serialize>(&self, payload: &T, typ: &str) -> Result<String, SigningError> {
        self.ring.sign_typed(payload, typ)
    }

    /// A detached JWS over `body` ([`KeyRing::sign_detached`]).
    pub fn sign_detached(&self, body: &[u8], typ: &str) -> Result<String, SigningError> {
        self.ring.sign_detached(body, typ)
    }

    /// Every published key (read at most once a second).
    pub async fn jwks(&self) -> Result<Jwks, sqlx::Error> {
        if let Some((at, keys)) = &*self.cache.read().await {
            if at.elapsed() < CACHE {
                return Ok(Jwks { keys: keys.clone() });
            }
        }
        let keys = published_keys(&self.pool).await?;
        *self.cache.write().await = Some((Instant::now(), keys.clone()));
        Ok(Jwks { keys })
    }

    /// The payload of a document this service signed, under any published
    /// key.
    pub async fn verify(&self, jws: &str) -> Result<serde_json::Value, VerifyError> {
        let jwks = self.jwks().await.map_err(VerifyError::Store)?;
        verify_under(&jwks, jws).map_err(VerifyError::Signature)
    }

    /// Records the active key (`PublishSigningKey`, stream = kid) under
    /// `ctx`; a key already published is accepted without a new event.
    pub async fn publish(&self, ctx: &CommandContext) -> Result<(), PublishError> {
        let jwk = self.active_jwk().ok_or(PublishError::NoActiveKey)?;
        let kid = jwk.kid.clone();
        let done = self.keys.execute(&kid, PublishSigningKey(jwk), ctx).await?;
        match done.outcome.error {
            Some(e) => Err(PublishError::Rejected {
                code: e.code,
                message: e.message,
            }),
            None => Ok(()),
        }
    }

    /// Publishes the active key at startup, acted by `service`, before
    /// anything is signed with it (see [`startup_context`]).
    pub async fn publish_at_startup(&self, service: &str) -> Result<(), PlatformError> {
        let ctx = startup_context(service, self.active_kid());
        self.publish(&ctx)
            .await
            .map_err(|e| PlatformError::Config(e.to_string()))
    }
}

impl AsRef<Signer> for Signer {
    fn as_ref(&self) -> &Signer {
        self
    }
}

/// The context of publishing key `kid` at startup: its command id derived
/// from the kid, so every restart with the same key repeats the same
/// command (answered from its stored outcome).
pub fn startup_context(service: &str, kid: &str) -> CommandContext {
    CommandContext {
        command_id: derived_id(Uuid::nil(), &format!("publish-key:{kid}")),
        command_type: PUBLISH_SIGNING_KEY.into(),
        correlation_id: format!("startup-{kid}"),
        causation_id: None,
        actor: Actor::new(ActorKind::System, service),
        occurred_at: Utc::now(),
        request_digest: request_digest(PUBLISH_SIGNING_KEY, &kid),
    }
}

/// The payload of `jws` if one key of `jwks` (by its kid) signed it.
pub fn verify_under(jwks: &Jwks, jws: &str) -> Result<serde_json::Value, SigningError> {
    signing::verify_with(jws, |kid| {
        jwks.keys
            .iter()
            .find(|k| k.kid == kid)
            .and_then(|k| signing::verifying_key(k).ok())
    })
}

// ---------------------------------------------------------------------------
// HTTP

/// `GET /.well-known/jwks.json` for a service whose app data is
/// `web::Data<S>` (`S` = `Signer` itself, or a state holding one).
pub fn routes<S: AsRef<Signer> + 'static>(cfg: &mut web::ServiceConfig) {
    cfg.route(JWKS_PATH, web::get().to(jwks::<S>));
}

/// The JWKS of every published key (`application/jwk-set+json`); a
/// database failure is a 503 `STORE_UNAVAILABLE`.
pub async fn jwks<S: AsRef<Signer> + 'static>(
    state: web::Data<S>,
) -> Result<HttpResponse, Problem> {
    let signer: &Signer = (**state).as_ref();
    let jwks = signer
        .jwks()
        .await
        .map_err(|e| store_problem(StoreError::Database(e)))?;
    Ok(HttpResponse::Ok()
        .content_type("application/jwk-set+json")
        .json(jwks))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn ring() -> KeyRing {
        let pem = signing::generate_pem().expect("pem");
        KeyRing::from_pem_thumbprint(&pem).expect("ring")
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir()
            .join(format!("service-kit-keys-{}", Uuid::now_v7()))
            .join(name)
    }

    #[test]
    fn a_generated_key_file_is_private_and_read_back_the_same() {
        let path = temp_path("key.pem");
        let ring = load_ring(&path, true).expect("generated");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_ring(&path, true).expect("read back");
        assert_eq!(ring.active_kid(), again.active_kid());
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn a_missing_file_is_not_generated_unless_asked() {
        let path = temp_path("absent.pem");
        let Err(e) = load_ring(&path, false) else {
            panic!("a missing file loads");
        };
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn a_bad_key_file_is_named_without_its_content() {
        let path = temp_path("bad.pem");
        let dir = path.parent().expect("dir");
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(&path, "SECRET-CONTENT-NOT-A-KEY").expect("write");
        let Err(e) = load_ring(&path, true) else {
            panic!("a bad file loads");
        };
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains("SECRET-CONTENT"), "{msg}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_generated_secret_key_is_private_hex_and_read_back_the_same() {
        let path = temp_path("secret.key");
        let key = load_secret_key(&path, true).expect("generated");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("file");
        assert_eq!(text.trim(), hex::encode(key));
        assert_eq!(load_secret_key(&path, true).expect("read back"), key);
        assert_ne!(key, [0u8; 32]);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn a_secret_key_file_that_is_not_64_hex_digits_is_named_without_its_content() {
        let path = temp_path("bad.key");
        let dir = path.parent().expect("dir");
        std::fs::create_dir_all(dir).expect("dir");
        for content in ["SECRET-CONTENT", &"ab".repeat(31), &"zz".repeat(32)] {
            std::fs::write(&path, content).expect("write");
            let Err(e) = load_secret_key(&path, true) else {
                panic!("{content:?} loads");
            };
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(!msg.contains("SECRET-CONTENT"), "{msg}");
        }
        let absent = dir.join("absent.key");
        assert!(load_secret_key(&absent, false).is_err());
        assert!(!absent.exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_document_verifies_under_the_key_that_signed_it_only() {
        let (a, b) = (ring(), ring());
        let jws = a.sign(&serde_json::json!({"n": 1})).expect("signed");
        let payload = verify_under(&a.jwks(), &jws).expect("verifies");
        assert_eq!(payload["n"], 1);
        assert!(verify_under(&b.jwks(), &jws).is_err());
        let both = Jwks {
            keys: [b.jwks().keys, a.jwks().keys].concat(),
        };
        assert!(verify_under(&both, &jws).is_ok());
    }

    #[test]
    fn the_startup_command_id_follows_the_kid() {
        let a = startup_context("svc", "kid-a");
        assert_eq!(a.command_id, startup_context("other", "kid-a").command_id);
        assert_ne!(a.command_id, startup_context("svc", "kid-b").command_id);
        assert_eq!(a.command_type, PUBLISH_SIGNING_KEY);
        assert_eq!(a.actor, Actor::new(ActorKind::System, "svc"));
    }
}
