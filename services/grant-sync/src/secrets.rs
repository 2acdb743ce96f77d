//! The secrets this server presents to upstreams, sealed at rest with
//! AES-256-GCM under `upstream_secret_key_file`: a random 96-bit nonce per
//! secret, stored beside the ciphertext (which ends in the 128-bit tag),
//! and the upstream's id as associated data, so that a ciphertext copied
//! into another upstream's row does not open there.

use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
use aes_gcm::Aes256Gcm;
use uuid::Uuid;

/// Bound into every seal beside the upstream id: these bytes belong to this
/// use of the key and no other.
const CONTEXT: &[u8] = b"licensing.grant-sync.upstream-secret.v1";

/// A secret as stored: nonce and ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no random nonce could be drawn")]
    Random,
    #[error("the secret cannot be sealed")]
    Seal,
    /// The wrong key, a row moved from another upstream, or altered bytes:
    /// AES-GCM cannot tell which.
    #[error("the stored secret does not open under the configured key")]
    Unreadable,
}

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(REDACTED)")
    }
}

fn aad(upstream_id: Uuid) -> Vec<u8> {
    [CONTEXT, upstream_id.as_bytes()].concat()
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&(*key).into()),
        }
    }

    pub fn seal(&self, upstream_id: Uuid, secret: &str) -> Result<Sealed, SecretError> {
        let nonce = Nonce::<Aes256Gcm>::try_generate().map_err(|_| SecretError::Random)?;
        let aad = aad(upstream_id);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Seal)?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn open(&self, upstream_id: Uuid, sealed: &Sealed) -> Result<String, SecretError> {
        let nonce = Nonce::<Aes256Gcm>::try_from(sealed.nonce.as_slice())
            .map_err(|_| SecretError::Unreadable)?;
        let aad = aad(upstream_id);
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Unreadable)?;
        String::from_utf8(plain).map_err(|_| SecretError::Unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "SCabc.0123456789abcdef0123456789abcdef";

    #[test]
    fn a_sealed_secret_opens_for_its_upstream_only() {
        let b = SecretBox::new(&[7; 32]);
        let (a, other) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = b.seal(a, TOKEN).expect("sealed");
        assert_eq!(sealed.nonce.len(), 12);
        assert_eq!(sealed.ciphertext.len(), TOKEN.len() + 16);
        assert!(!sealed
            .ciphertext
            .windows(5)
            .any(|w| TOKEN.as_bytes().windows(5).any(|t| t == w)));
        assert_eq!(b.open(a, &sealed).as_deref(), Ok(TOKEN));
        assert_eq!(b.open(other, &sealed), Err(SecretError::Unreadable));
    }

    #[test]
    fn every_seal_draws_its_own_nonce() {
        let b = SecretBox::new(&[7; 32]);
        let id = Uuid::new_v4();
        let (x, y) = (b.seal(id, TOKEN).expect("x"), b.seal(id, TOKEN).expect("y"));
        assert_ne!(x.nonce, y.nonce);
        assert_ne!(x.ciphertext, y.ciphertext);
    }

    #[test]
    fn another_key_or_altered_bytes_do_not_open() {
        let id = Uuid::new_v4();
        let sealed = SecretBox::new(&[7; 32]).seal(id, TOKEN).expect("sealed");
        let b = SecretBox::new(&[8; 32]);
        assert_eq!(b.open(id, &sealed), Err(SecretError::Unreadable));
        let right = SecretBox::new(&[7; 32]);
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(right.open(id, &flipped), Err(SecretError::Unreadable));
        let short = Sealed {
            nonce: sealed.nonce[..11].to_vec(),
            ciphertext: sealed.ciphertext.clone(),
        };
        assert_eq!(right.open(id, &short), Err(SecretError::Unreadable));
    }
}
