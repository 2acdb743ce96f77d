//! License keys derived from a server secret: `HMAC-SHA256(secret, id)`
//! formatted as a checked key. Nothing key-like is stored; the events carry
//! only the key's SHA-256 digest.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::{license_key, KeySource};

pub const MIN_SECRET_LEN: usize = 32;

pub struct HmacKeys {
    secret: Vec<u8>,
}

impl HmacKeys {
    /// None when the secret is too short to be one.
    pub fn new(secret: &str) -> Option<Self> {
        (secret.len() >= MIN_SECRET_LEN).then(|| Self {
            secret: secret.as_bytes().to_vec(),
        })
    }
}

impl KeySource for HmacKeys {
    fn key_for(&self, license_id: Uuid) -> String {
        // new_from_slice accepts any length for HMAC; the fallback is unreachable.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return String::new();
        };
        mac.update(b"licensing/license-key/v1/");
        mac.update(license_id.as_bytes());
        license_key::format(&mac.finalize().into_bytes()[..17])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_per_license_and_secret_and_valid() {
        let a = HmacKeys::new(&"s".repeat(32)).expect("secret");
        let b = HmacKeys::new(&"t".repeat(32)).expect("secret");
        let id = Uuid::from_u128(1);
        assert_eq!(a.key_for(id), a.key_for(id));
        assert_ne!(a.key_for(id), a.key_for(Uuid::from_u128(2)));
        assert_ne!(a.key_for(id), b.key_for(id));
        assert!(license_key::normalize(&a.key_for(id)).is_ok());
        assert!(HmacKeys::new("short").is_none());
    }
}
