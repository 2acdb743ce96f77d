//! Signs activation files with the configured key and verifies them with
//! every key ever published (the `signing_keys` index of `SigningKey`
//! events), so files signed before a rotation keep verifying.

use std::time::{Duration, Instant};

use signing::{Jwk, Jwks, KeyRing, SigningError};
use sqlx::PgPool;
use tokio::sync::RwLock;

/// How long a read of the published keys is reused.
const CACHE: Duration = Duration::from_secs(1);

pub struct Signer {
    ring: KeyRing,
    pool: PgPool,
    cache: RwLock<Option<(Instant, Vec<Jwk>)>>,
}

impl Signer {
    pub fn new(ring: KeyRing, pool: PgPool) -> Self {
        Self {
            ring,
            pool,
            cache: RwLock::new(None),
        }
    }

    /// The active key's JWK, published before its first signature.
    pub fn active_jwk(&self) -> Option<Jwk> {
        let kid = self.ring.active_kid();
        self.ring.jwks().keys.into_iter().find(|k| k.kid == kid)
    }

    pub fn sign<T: serde::Serialize>(&self, payload: &T) -> Result<String, SigningError> {
        self.ring.sign(payload)
    }

    pub async fn jwks(&self) -> Result<Jwks, sqlx::Error> {
        if let Some((at, keys)) = &*self.cache.read().await {
            if at.elapsed() < CACHE {
                return Ok(Jwks { keys: keys.clone() });
            }
        }
        let keys = crate::store::jwks(&self.pool).await?;
        *self.cache.write().await = Some((Instant::now(), keys.clone()));
        Ok(Jwks { keys })
    }

    /// The payload of a file this service signed, under any published key.
    pub async fn verify(&self, jws: &str) -> Result<serde_json::Value, VerifyError> {
        let jwks = self.jwks().await.map_err(VerifyError::Store)?;
        signing::verify_with(jws, |kid| {
            jwks.keys
                .iter()
                .find(|k| k.kid == kid)
                .and_then(|k| signing::verifying_key(k).ok())
        })
        .map_err(VerifyError::Signature)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Signature(SigningError),
    #[error("database: {0}")]
    Store(sqlx::Error),
}
