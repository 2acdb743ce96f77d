//! ES256 signing for everything the backend signs (activation files, grant
//! documents, dispute bundles, audit checkpoints): compact JWS (RFC 7515)
//! with a `kid`, public keys as a JWKS (RFC 7517), and rotation that keeps
//! every older public key so what it signed still verifies.
//!
//! Private keys never leave this module: no `Debug`, no serialisation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};

/// The public key type every verifier here works with.
pub use p256::ecdsa::VerifyingKey;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("the private key cannot be read (PKCS#8 PEM P-256 expected)")]
    BadKey,
    #[error("kid must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadKid,
    #[error("not a compact JWS")]
    Malformed,
    #[error("unsupported JWS header (ES256 with a kid required)")]
    Header,
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("payload is not JSON")]
    Payload,
}

/// One public key of a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn jwk(kid: &str, key: &VerifyingKey) -> Jwk {
    // Uncompressed SEC1: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
    let point = key.to_sec1_bytes();
    Jwk {
        kty: "EC".into(),
        crv: "P-256".into(),
        x: B64.encode(&point[1..33]),
        y: B64.encode(&point[33..65]),
        kid: kid.into(),
        use_: "sig".into(),
        alg: "ES256".into(),
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of a P-256 public key.
pub fn thumbprint(key: &VerifyingKey) -> String {
    use sha2::{Digest, Sha256};
    let j = jwk("", key);
    // The required members in lexicographic order, no whitespace.
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        j.x, j.y
    );
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

/// A new P-256 private key as PKCS#8 PEM, for a key file.
pub fn generate_pem() -> Result<String, SigningError> {
    use p256::elliptic_curve::Generate;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let key = SigningKey::generate();
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|_| SigningError::BadKey)
}

/// Reads a JWK's public key.
pub fn verifying_key(jwk: &Jwk) -> Result<VerifyingKey, SigningError> {
    if jwk.kty != "EC" || jwk.crv != "P-256" {
        return Err(SigningError::BadKey);
    }
    let x = B64.decode(&jwk.x).map_err(|_| SigningError::BadKey)?;
    let y = B64.decode(&jwk.y).map_err(|_| SigningError::BadKey)?;
    if x.len() != 32 || y.len() != 32 {
        return Err(SigningError::BadKey);
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(4);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| SigningError::BadKey)
}

/// The active signing key and every public key that ever signed.
pub struct KeyRing {
    kid: String,
    active: SigningKey,
    public: Vec<(String, VerifyingKey)>,
}

impl KeyRing {
    /// A ring whose active key is read from a PKCS#8 PEM.
    pub fn from_pem(kid: &str, pem: &str) -> Result<Self, SigningError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|_| SigningError::BadKey)?;
        Self::with_key(kid, key)
    }

    /// A ring with a freshly generated key (tests, first start of a dev box).
    pub fn generate(kid: &str) -> Result<Self, SigningError> {
        use p256::elliptic_curve::Generate;
        Self::with_key(kid, SigningKey::generate())
    }

    fn with_key(kid: &str, key: SigningKey) -> Result<Self, SigningError> {
        if !valid_kid(kid) {
            return Err(SigningError::BadKid);
        }
        let public = vec![(kid.to_string(), *key.verifying_key())];
        Ok(Self {
            kid: kid.to_string(),
            active: key,
            public,
        })
    }

    /// A ring whose active key is read from a PKCS#8 PEM, named by its RFC
    /// 7638 thumbprint: the kid follows from the key, nothing to configure.
    pub fn from_pem_thumbprint(pem: &str) -> Result<Self, SigningError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|_| SigningError::BadKey)?;
        let kid = thumbprint(key.verifying_key());
        Self::with_key(&kid, key)
    }

    /// Makes `pem` the signing key under `kid`; older keys keep verifying.
    pub fn rotate(&mut self, kid: &str, pem: &str) -> Result<(), SigningError> {
        let next = Self::from_pem(kid, pem)?;
        if self.public.iter().any(|(k, _)| k == kid) {
            return Err(SigningError::BadKid);
        }
        self.public
            .push((kid.to_string(), *next.active.verifying_key()));
        self.kid = next.kid;
        self.active = next.active;
        Ok(())
    }

    /// Trusts a public key (one retired from another instance, say).
    pub fn add_public(&mut self, jwk: &Jwk) -> Result<(), SigningError> {
        if !valid_kid(&jwk.kid) || self.public.iter().any(|(k, _)| *k == jwk.kid) {
            return Err(SigningError::BadKid);
        }
        self.public.push((jwk.kid.clone(), verifying_key(jwk)?));
        Ok(())
    }

    pub fn active_kid(&self) -> &str {
        &self.kid
    }

    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.public.iter().map(|(kid, k)| jwk(kid, k)).collect(),
        }
    }

    /// Compact JWS of `payload` (JSON), header `{alg: ES256, kid, typ: JWT}`.
    pub fn sign<T: Serialize>(&self, payload: &T) -> Result<String, SigningError> {
        self.sign_typed(payload, "JWT")
    }

    /// [`KeyRing::sign`] with another header `typ` (RFC 7515 §4.1.9), for
    /// documents that must never pass for one another.
    pub fn sign_typed<T: Serialize>(&self, payload: &T, typ: &str) -> Result<String, SigningError> {
        let header = Header {
            alg: "ES256".into(),
            kid: Some(self.kid.clone()),
            typ: Some(typ.into()),
        };
        let header = serde_json::to_vec(&header).map_err(|_| SigningError::Payload)?;
        let body = serde_json::to_vec(payload).map_err(|_| SigningError::Payload)?;
        let input = format!("{}.{}", B64.encode(header), B64.encode(body));
        let signature: Signature = self.active.sign(input.as_bytes());
        Ok(format!("{input}.{}", B64.encode(signature.to_bytes())))
    }

    /// A JWS with a detached payload (RFC 7515 appendix F): `header..signature`
    /// over `body` as sent, for a receiver that holds the bytes already (a
    /// webhook's body). Put `base64url(body)` between the dots to get the
    /// compact JWS any JOSE library verifies.
    pub fn sign_detached(&self, body: &[u8], typ: &str) -> Result<String, SigningError> {
        let compact = self.sign_typed(
            &serde_json::value::RawValue::from_string(
                String::from_utf8(body.to_vec()).map_err(|_| SigningError::Payload)?,
            )
            .map_err(|_| SigningError::Payload)?,
            typ,
        )?;
        let (h, rest) = compact.split_once('.').ok_or(SigningError::Malformed)?;
        let (_, s) = rest.split_once('.').ok_or(SigningError::Malformed)?;
        Ok(format!("{h}..{s}"))
    }

    /// Verifies a compact JWS against the ring's keys; its JSON payload.
    pub fn verify(&self, jws: &str) -> Result<serde_json::Value, SigningError> {
        verify_with(jws, |kid| {
            self.public
                .iter()
                .find(|(k, _)| k == kid)
                .map(|(_, key)| *key)
        })
    }
}

/// The kid and payload of a compact JWS, **not verified**: only to file a
/// document (by what it says it is) before its signature is checked.
pub fn peek(jws: &str) -> Result<(Option<String>, serde_json::Value), SigningError> {
    let (header, _, p, _) = split(jws)?;
    Ok((header.kid, payload_of(p)?))
}

/// The three parts of a compact JWS, the header decoded.
fn split(jws: &str) -> Result<(Header, &str, &str, &str), SigningError> {
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SigningError::Malformed);
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(SigningError::Malformed)?;
    Ok((header, h, p, s))
}

fn payload_of(p: &str) -> Result<serde_json::Value, SigningError> {
    let body = B64.decode(p).map_err(|_| SigningError::Malformed)?;
    serde_json::from_slice(&body).map_err(|_| SigningError::Payload)
}

/// Verifies a detached JWS (`header..signature`, see
/// [`KeyRing::sign_detached`]) of header `typ` over `body`; the body's
/// JSON. Another `typ` is refused: a signature the same key made over
/// another kind of document does not pass for this one.
pub fn verify_detached_with(
    detached: &str,
    body: &[u8],
    typ: &str,
    key_for: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<serde_json::Value, SigningError> {
    let (h, s) = detached.split_once("..").ok_or(SigningError::Malformed)?;
    let compact = format!("{h}.{}.{s}", B64.encode(body));
    let (header, ..) = split(&compact)?;
    if header.typ.as_deref() != Some(typ) {
        return Err(SigningError::Header);
    }
    verify_with(&compact, key_for)
}

/// Verifies a compact JWS with keys looked up by `kid` (for verifiers that
/// hold only a JWKS, such as `licensectl`).
pub fn verify_with(
    jws: &str,
    key_for: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<serde_json::Value, SigningError> {
    let (header, h, p, s) = split(jws)?;
    if header.alg != "ES256" {
        return Err(SigningError::Header);
    }
    let kid = header.kid.ok_or(SigningError::Header)?;
    let key = key_for(&kid).ok_or(SigningError::UnknownKid(kid))?;
    let sig = B64.decode(s).map_err(|_| SigningError::Malformed)?;
    let sig = Signature::from_slice(&sig).map_err(|_| SigningError::BadSignature)?;
    let input_len = h.len() + 1 + p.len();
    key.verify(&jws.as_bytes()[..input_len], &sig)
        .map_err(|_| SigningError::BadSignature)?;
    payload_of(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_detached_signature_verifies_over_its_body_only() {
        let ring = KeyRing::generate("k1").expect("ring");
        let body = br#"{"delivery_id":"d1","n":1}"#;
        let sig = ring.sign_detached(body, "webhook+jws").expect("sign");
        assert!(sig.contains(".."));
        let key = |kid: &str| (kid == "k1").then(|| *ring.active.verifying_key());
        assert_eq!(
            verify_detached_with(&sig, body, "webhook+jws", key),
            Ok(json!({"delivery_id": "d1", "n": 1}))
        );
        let altered = br#"{"delivery_id":"d1","n":2}"#;
        assert_eq!(
            verify_detached_with(&sig, altered, "webhook+jws", key),
            Err(SigningError::BadSignature)
        );
        // A document of another kind, signed by the same key, is refused.
        let jwt = ring
            .sign(&json!({"delivery_id": "d1", "n": 1}))
            .expect("sign");
        let (h, rest) = jwt.split_once('.').expect("compact");
        let (_, s) = rest.split_once('.').expect("compact");
        assert_eq!(
            verify_detached_with(&format!("{h}..{s}"), body, "webhook+jws", key),
            Err(SigningError::Header)
        );
    }

    #[test]
    fn peek_reads_without_verifying() {
        let ring = KeyRing::generate("k1").expect("ring");
        let jws = ring.sign(&json!({"n": 1})).expect("sign");
        let (kid, payload) = peek(&jws).expect("peek");
        assert_eq!((kid.as_deref(), payload), (Some("k1"), json!({"n": 1})));
        assert!(peek("a.b").is_err());
    }

    #[test]
    fn a_signed_payload_verifies_and_carries_its_kid() {
        let ring = KeyRing::generate("k1").expect("ring");
        let jws = ring
            .sign(&json!({"license_id": "L1", "seats": 3}))
            .expect("sign");
        assert_eq!(jws.split('.').count(), 3);
        assert_eq!(
            ring.verify(&jws),
            Ok(json!({"license_id": "L1", "seats": 3}))
        );
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(jws.split('.').next().expect("h")).expect("b64"))
                .expect("json");
        assert_eq!(header, json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}));
    }

    #[test]
    fn flipping_any_byte_of_payload_or_signature_fails() {
        let ring = KeyRing::generate("k1").expect("ring");
        let jws = ring.sign(&json!({"a": 1})).expect("sign");
        let first_dot = jws.find('.').expect("dot");
        for i in first_dot + 1..jws.len() {
            if jws.as_bytes()[i] == b'.' {
                continue;
            }
            let mut bytes = jws.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).expect("ascii");
            assert!(
                ring.verify(&tampered).is_err(),
                "byte {i} flipped still verifies"
            );
        }
    }

    #[test]
    fn rotation_keeps_older_signatures_valid_and_publishes_every_key() {
        let mut ring = KeyRing::generate("k1").expect("ring");
        let old = ring.sign(&json!({"v": 1})).expect("sign");
        let other = KeyRing::generate("x").expect("ring");
        // Rotate onto a PEM, as configuration would supply it.
        use p256::pkcs8::EncodePrivateKey;
        let pem = other
            .active
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem");
        ring.rotate("k2", &pem).expect("rotate");
        assert_eq!(ring.active_kid(), "k2");
        let new = ring.sign(&json!({"v": 2})).expect("sign");
        assert!(ring.verify(&old).is_ok());
        assert!(ring.verify(&new).is_ok());
        let kids: Vec<String> = ring.jwks().keys.into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, ["k1", "k2"]);
        assert_eq!(ring.rotate("k1", &pem), Err(SigningError::BadKid));
    }

    #[test]
    fn a_jwks_key_verifies_on_its_own() {
        let ring = KeyRing::generate("k1").expect("ring");
        let jws = ring.sign(&json!({"a": 1})).expect("sign");
        let jwks: Jwks = serde_json::from_str(&serde_json::to_string(&ring.jwks()).expect("json"))
            .expect("parse");
        let key = verifying_key(&jwks.keys[0]).expect("key");
        assert!(verify_with(&jws, |kid| (kid == "k1").then_some(key)).is_ok());
        assert_eq!(
            verify_with(&jws, |_| None),
            Err(SigningError::UnknownKid("k1".into()))
        );
    }

    /// RFC 7515 appendix A.3: an ES256 JWS made by another implementation.
    #[test]
    fn the_rfc_7515_es256_example_verifies() {
        let jwk = Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into(),
            y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into(),
            kid: "rfc".into(),
            use_: "sig".into(),
            alg: "ES256".into(),
        };
        let key = verifying_key(&jwk).expect("rfc key");
        // The RFC's header has no kid; add none and look the key up anyway.
        let jws = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
        let (input, sig) = jws.rsplit_once('.').expect("three parts");
        let sig = Signature::from_slice(&B64.decode(sig).expect("b64")).expect("sig");
        assert!(key.verify(input.as_bytes(), &sig).is_ok());
        let mut tampered = input.to_string();
        tampered.push('A');
        assert!(key.verify(tampered.as_bytes(), &sig).is_err());
    }

    #[test]
    fn bad_input_is_refused() {
        let ring = KeyRing::generate("k1").expect("ring");
        assert_eq!(ring.verify("a.b"), Err(SigningError::Malformed));
        assert_eq!(ring.verify("a.b.c.d"), Err(SigningError::Malformed));
        assert_eq!(
            KeyRing::from_pem("k", "not a pem").err(),
            Some(SigningError::BadKey)
        );
        assert_eq!(
            KeyRing::generate("bad kid!").err(),
            Some(SigningError::BadKid)
        );
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none","kid":"k1"}"#),
            B64.encode(b"{}")
        );
        assert_eq!(ring.verify(&none), Err(SigningError::Header));
    }

    #[test]
    fn a_generated_key_file_is_named_by_its_thumbprint() {
        let pem = generate_pem().expect("pem");
        let a = KeyRing::from_pem_thumbprint(&pem).expect("ring");
        let b = KeyRing::from_pem_thumbprint(&pem).expect("ring");
        assert_eq!(a.active_kid(), b.active_kid());
        assert_eq!(a.active_kid().len(), 43);
        let other = KeyRing::from_pem_thumbprint(&generate_pem().expect("pem")).expect("ring");
        assert_ne!(a.active_kid(), other.active_kid());
        let jws = a.sign(&serde_json::json!({"n": 1})).expect("signs");
        assert_eq!(b.verify(&jws).expect("verifies")["n"], 1);
    }
}
