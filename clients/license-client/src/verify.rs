//! Offline verification of what the servers sign — activation files,
//! uninstall receipts, grant documents — against pinned keys, and the
//! rules a product applies to them. Pure: every function takes `now`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use contracts::activation::{
    ActivationClaims, FeatureGrant, Fingerprint, ReceiptClaims, ACTIVATION_TYP, RECEIPT_JWS_TYP,
    RECEIPT_TYP,
};
use contracts::grants::{Grant, GrantClaims};
use serde_json::Value;
use signing::{Jwks, SigningError, VerifyingKey};
use uuid::Uuid;

use crate::error::{Error, Result};

/// `typ` claim of a grant document.
pub const GRANT_DOCUMENT_TYP: &str = "grant-document";

/// Pinned public keys (a JWKS), looked up by `kid`. A product ships them,
/// or fetches them once and keeps them (trust on first use).
#[derive(Debug, Clone)]
pub struct Keys {
    jwks: Jwks,
    keys: Vec<(String, VerifyingKey)>,
}

impl Keys {
    /// Every P-256 key of `jwks`; keys of other types are skipped.
    pub fn from_jwks(jwks: Jwks) -> Result<Self> {
        let keys: Vec<(String, VerifyingKey)> = jwks
            .keys
            .iter()
            .filter_map(|k| {
                signing::verifying_key(k)
                    .ok()
                    .map(|key| (k.kid.clone(), key))
            })
            .collect();
        if keys.is_empty() {
            return Err(Error::Missing("a P-256 key in the JWKS"));
        }
        Ok(Self { jwks, keys })
    }

    /// Reads a JWKS document (`{"keys": […]}`).
    pub fn from_json(json: &str) -> Result<Self> {
        let jwks: Jwks =
            serde_json::from_str(json).map_err(|e| Error::Protocol(format!("not a JWKS: {e}")))?;
        Self::from_jwks(jwks)
    }

    /// The JWKS, to store beside the activation file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.jwks).unwrap_or_default()
    }

    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    fn key(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, key)| *key)
    }

    /// The verified payload and the JWS header's `typ`.
    fn verify(&self, jws: &str) -> Result<(Value, Option<String>)> {
        let payload =
            signing::verify_with(jws.trim(), |kid| self.key(kid)).map_err(|e| match e {
                SigningError::UnknownKid(kid) => {
                    Error::BadSignature(format!("signed by key {kid:?}, which is not pinned"))
                }
                other => Error::BadSignature(other.to_string()),
            })?;
        Ok((payload, header_typ(jws.trim())))
    }
}

/// The `typ` of a compact JWS's header (None when absent or unreadable).
fn header_typ(jws: &str) -> Option<String> {
    let header = jws.split('.').next()?;
    let header: Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
    header.get("typ")?.as_str().map(str::to_string)
}

fn at(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or(contracts::time::max())
}

/// The fingerprint digest of a device's components, exactly as the
/// activation service computes it (`contracts::activation::Fingerprint`).
pub fn fingerprint_digest(components: &BTreeMap<String, String>) -> Result<String> {
    Ok(Fingerprint(components.clone()).digest()?)
}

/// Whether `device` is the file's: by the server's rule when the file
/// carries the seat's component digests (enough of them equal, so a
/// replaced part keeps the seat offline too), else by the whole
/// fingerprint's digest (files made before they were added).
fn same_device(claims: &ActivationClaims, device: &BTreeMap<String, String>) -> Result<bool> {
    match claims.min_matches {
        Some(min) if !claims.components.is_empty() => Ok(contracts::activation::same_device(
            &claims.components,
            &Fingerprint(device.clone()).components()?,
            min,
        )),
        _ => Ok(claims.fingerprint == fingerprint_digest(device)?),
    }
}

/// A verified activation file: its claims, and the file itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub file: String,
    pub claims: ActivationClaims,
}

/// Verifies an activation file offline: an ES256 JWS under a pinned key,
/// an activation file (claims `typ: "activation"`, header `typ` `JWT` or
/// none — never an uninstall receipt) of `product` (and of `license`, when
/// one is known), within `nbf` (less `tolerance`) and `exp`, issued to the
/// device whose components are `device`.
pub fn verify_activation_file(
    file: &str,
    keys: &Keys,
    product: &str,
    license: Option<Uuid>,
    device: &BTreeMap<String, String>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<Activation> {
    let claims = signed_activation(file, keys, product)?;
    if let Some(expected) = license.filter(|l| *l != claims.license_id) {
        return Err(Error::WrongLicense {
            expected,
            found: claims.license_id,
        });
    }
    let t = now.timestamp();
    if claims.nbf > t + tolerance.num_seconds() {
        return Err(Error::NotYetValid {
            document: "the activation file",
            at: at(claims.nbf),
        });
    }
    if let Some(exp) = claims.exp.filter(|exp| t >= *exp) {
        return Err(Error::Expired {
            document: "the activation file",
            at: at(exp),
        });
    }
    if !same_device(&claims, device)? {
        return Err(Error::WrongDevice);
    }
    Ok(Activation {
        file: file.trim().to_string(),
        claims,
    })
}

/// The claims of an activation file of `product` signed under `keys`,
/// whatever its times and device. One activation service signs the files
/// of every product, so the signature alone does not make it ours.
pub(crate) fn signed_activation(
    file: &str,
    keys: &Keys,
    product: &str,
) -> Result<ActivationClaims> {
    let expected = "an activation file";
    let (payload, typ) = keys.verify(file)?;
    if typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(Error::WrongDocument { expected });
    }
    let claims: ActivationClaims =
        serde_json::from_value(payload).map_err(|_| Error::WrongDocument { expected })?;
    if claims.typ != ACTIVATION_TYP {
        return Err(Error::WrongDocument { expected });
    }
    if claims.product != product {
        return Err(Error::WrongProduct {
            expected: product.to_string(),
            found: claims.product,
        });
    }
    Ok(claims)
}

impl Activation {
    pub fn activation_id(&self) -> Uuid {
        self.claims.activation_id
    }

    pub fn license_id(&self) -> Uuid {
        self.claims.license_id
    }

    /// The features the file grants, each with its expiry.
    pub fn features(&self) -> &[FeatureGrant] {
        &self.claims.features
    }

    fn feature(&self, code: &str) -> Option<&FeatureGrant> {
        self.claims.features.iter().find(|f| f.code == code)
    }

    /// Whether new work using `feature` may start at `now`: the feature is
    /// granted and `now` is before its expiry (none: perpetual).
    pub fn may_start(&self, feature: &str, now: DateTime<Utc>) -> bool {
        self.feature(feature)
            .is_some_and(|f| f.expires_at.is_none_or(|exp| now < exp))
    }

    /// Whether work using `feature` that started at `started_at` may go on:
    /// it started while the feature was granted (before its expiry). Expiry
    /// never stops running work — "running work continues, new work is
    /// refused" — so the current time does not enter.
    pub fn may_continue(&self, feature: &str, started_at: DateTime<Utc>) -> bool {
        self.may_start(feature, started_at)
    }
}

/// Verifies an uninstall receipt: an ES256 JWS under a pinned key, header
/// `typ` `uninstall-receipt+jwt`, claims `typ` `uninstall-receipt`. It has
/// no `exp`: the proof does not lapse.
pub fn verify_receipt(receipt: &str, keys: &Keys) -> Result<ReceiptClaims> {
    let expected = "an uninstall receipt";
    let (payload, typ) = keys.verify(receipt)?;
    if typ.as_deref() != Some(RECEIPT_JWS_TYP) {
        return Err(Error::WrongDocument { expected });
    }
    let claims: ReceiptClaims =
        serde_json::from_value(payload).map_err(|_| Error::WrongDocument { expected })?;
    if claims.typ != RECEIPT_TYP {
        return Err(Error::WrongDocument { expected });
    }
    Ok(claims)
}

/// A verified grant document: what the client may use while offline,
/// until `valid_until`.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantDocument {
    pub document: String,
    pub claims: GrantClaims,
}

/// Verifies a kept grant document, to use it offline: as
/// [`verify_fresh_grant_document`], and before `exp` (`valid_until`).
pub fn verify_grant_document(
    document: &str,
    keys: &Keys,
    client: Uuid,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<GrantDocument> {
    let verified = verify_fresh_grant_document(document, keys, client, now, tolerance)?;
    if now.timestamp() >= verified.claims.exp {
        return Err(Error::Expired {
            document: "the grant document",
            at: at(verified.claims.exp),
        });
    }
    Ok(verified)
}

/// Verifies a grant document grant sync has just answered: an ES256 JWS
/// under a pinned key, claims `typ` `grant-document` naming `client` as
/// `client_id` and `sub`, within `nbf` (less `tolerance`). Not `exp`: the
/// server sets it to now plus the shortest offline grace of the client's
/// licenses, which may be none (0 hours, or no grants) — the answer itself
/// is current; `exp` bounds only how long a kept copy serves offline.
pub fn verify_fresh_grant_document(
    document: &str,
    keys: &Keys,
    client: Uuid,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<GrantDocument> {
    let expected = "a grant document of this client";
    let (payload, _) = keys.verify(document)?;
    let claims: GrantClaims =
        serde_json::from_value(payload).map_err(|_| Error::WrongDocument { expected })?;
    if claims.typ != GRANT_DOCUMENT_TYP
        || claims.client_id != client
        || claims.sub != client.to_string()
    {
        return Err(Error::WrongDocument { expected });
    }
    if claims.nbf > now.timestamp() + tolerance.num_seconds() {
        return Err(Error::NotYetValid {
            document: "the grant document",
            at: at(claims.nbf),
        });
    }
    Ok(GrantDocument {
        document: document.trim().to_string(),
        claims,
    })
}

impl GrantDocument {
    pub fn client_id(&self) -> Uuid {
        self.claims.client_id
    }

    /// Until when the client may work on this document without the server.
    pub fn valid_until(&self) -> DateTime<Utc> {
        self.claims.valid_until
    }

    pub fn grant(&self, license_id: Uuid) -> Option<&Grant> {
        self.claims
            .grants
            .iter()
            .find(|g| g.license_id == license_id)
    }

    /// Whether new work using `feature` of the license may start at `now`:
    /// granted, the license active and not past its expiry.
    pub fn may_start(&self, license_id: Uuid, feature: &str, now: DateTime<Utc>) -> bool {
        self.grant(license_id).is_some_and(|g| {
            g.features.iter().any(|f| f == feature) && g.new_work_refusal(now).is_none()
        })
    }

    /// Whether running work using `feature` of the license may go on: the
    /// feature is granted and the license was not suspended, revoked,
    /// reclaimed or deleted (expiry does not stop running work).
    pub fn may_continue(&self, license_id: Uuid, feature: &str) -> bool {
        self.grant(license_id)
            .is_some_and(|g| g.features.iter().any(|f| f == feature) && !g.ends_leases())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::activation::EventPosition;
    use contracts::issuance::{LicenseKind, LicenseStatus};
    use serde_json::json;
    use signing::KeyRing;

    fn device() -> BTreeMap<String, String> {
        [("machine_id", "m-1"), ("disk", "d-1"), ("board", "b-1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn event() -> EventPosition {
        EventPosition {
            aggregate_type: "LicenseActivations".into(),
            aggregate_id: Uuid::nil().to_string(),
            sequence: 1,
            hash: "00".repeat(32),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        contracts::time::parse(s).expect("time")
    }

    fn claims(expires: Option<&str>) -> ActivationClaims {
        ActivationClaims {
            typ: ACTIVATION_TYP.into(),
            iss: "activation".into(),
            activation_id: Uuid::new_v4(),
            license_id: Uuid::new_v4(),
            product: "p".into(),
            edition: None,
            kind: LicenseKind::Formal,
            features: vec![FeatureGrant {
                code: "f1".into(),
                expires_at: expires.map(t),
            }],
            fingerprint: fingerprint_digest(&device()).expect("digest"),
            components: BTreeMap::new(),
            min_matches: None,
            iat: t("2030-01-01T00:00:00Z").timestamp(),
            nbf: t("2030-01-01T00:00:00Z").timestamp(),
            exp: expires.map(|e| t(e).timestamp()),
            event: event(),
            nonce: None,
        }
    }

    fn ring() -> (KeyRing, Keys) {
        let ring = KeyRing::generate("k1").expect("ring");
        let keys = Keys::from_jwks(ring.jwks()).expect("keys");
        (ring, keys)
    }

    const TOL: Duration = Duration::seconds(600);

    #[test]
    fn a_signed_file_verifies_for_its_device_and_grants_its_features() {
        let (ring, keys) = ring();
        let file = ring.sign(&claims(None)).expect("sign");
        let a = verify_activation_file(
            &file,
            &keys,
            "p",
            None,
            &device(),
            t("2031-01-01T00:00:00Z"),
            TOL,
        )
        .expect("verifies");
        assert!(a.may_start("f1", t("2031-01-01T00:00:00Z")));
        assert!(!a.may_start("f2", t("2031-01-01T00:00:00Z")));
    }

    #[test]
    fn an_altered_file_another_key_or_another_device_is_refused() {
        let (ring, keys) = ring();
        let file = ring.sign(&claims(None)).expect("sign");
        let now = t("2031-01-01T00:00:00Z");
        let i = file.find('.').expect("dot") + 3;
        let mut altered = file.clone().into_bytes();
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(matches!(
            verify_activation_file(&altered, &keys, "p", None, &device(), now, TOL),
            Err(Error::BadSignature(_))
        ));
        let (_, other) = ring_other();
        assert!(matches!(
            verify_activation_file(&file, &other, "p", None, &device(), now, TOL),
            Err(Error::BadSignature(_))
        ));
        let mut elsewhere = device();
        elsewhere.insert("disk".into(), "d-2".into());
        assert!(matches!(
            verify_activation_file(&file, &keys, "p", None, &elsewhere, now, TOL),
            Err(Error::WrongDevice)
        ));
        // Case and spacing of values do not make another device.
        let mut spaced = device();
        spaced.insert("disk".into(), " D-1 ".into());
        assert!(verify_activation_file(&file, &keys, "p", None, &spaced, now, TOL).is_ok());
    }

    #[test]
    fn a_file_with_component_digests_keeps_a_device_with_a_replaced_part() {
        let (ring, keys) = ring();
        let now = t("2031-01-01T00:00:00Z");
        let mut with_parts = claims(None);
        let four = |disk: &str, board: &str| {
            let mut d = device();
            d.insert("mac".into(), "aa:bb".into());
            d.insert("disk".into(), disk.into());
            d.insert("board".into(), board.into());
            d
        };
        with_parts.fingerprint = fingerprint_digest(&four("d-1", "b-1")).expect("digest");
        with_parts.components = Fingerprint(four("d-1", "b-1"))
            .components()
            .expect("components");
        with_parts.min_matches = Some(3);
        let file = ring.sign(&with_parts).expect("sign");
        let verify = |d: &BTreeMap<String, String>| {
            verify_activation_file(&file, &keys, "p", None, d, now, TOL)
        };
        assert!(verify(&four("d-1", "b-1")).is_ok());
        // One part replaced: still the device, as the server says.
        assert!(verify(&four("d-2", "b-1")).is_ok());
        // Two: another device.
        assert!(matches!(
            verify(&four("d-2", "b-2")),
            Err(Error::WrongDevice)
        ));
    }

    fn ring_other() -> (KeyRing, Keys) {
        // Same kid, another key: the signature decides, not the name.
        ring()
    }

    #[test]
    fn a_file_of_another_product_or_another_license_is_refused() {
        let (ring, keys) = ring();
        let c = claims(None);
        let file = ring.sign(&c).expect("sign");
        let now = t("2031-01-01T00:00:00Z");
        match verify_activation_file(&file, &keys, "q", None, &device(), now, TOL) {
            Err(Error::WrongProduct { expected, found }) => {
                assert_eq!((expected.as_str(), found.as_str()), ("q", "p"))
            }
            other => panic!("another product's file is refused, got {other:?}"),
        }
        let other = Uuid::new_v4();
        assert!(matches!(
            verify_activation_file(&file, &keys, "p", Some(other), &device(), now, TOL),
            Err(Error::WrongLicense { expected, found }) if expected == other && found == c.license_id
        ));
        let l = Some(c.license_id);
        assert!(verify_activation_file(&file, &keys, "p", l, &device(), now, TOL).is_ok());
    }

    #[test]
    fn exp_and_nbf_are_checked() {
        let (ring, keys) = ring();
        let file = ring
            .sign(&claims(Some("2032-01-01T00:00:00Z")))
            .expect("sign");
        let ok = t("2031-12-31T23:59:59Z");
        assert!(verify_activation_file(&file, &keys, "p", None, &device(), ok, TOL).is_ok());
        assert!(matches!(
            verify_activation_file(
                &file,
                &keys,
                "p",
                None,
                &device(),
                t("2032-01-01T00:00:00Z"),
                TOL
            ),
            Err(Error::Expired { .. })
        ));
        // Ten minutes of tolerance before nbf, not more.
        assert!(verify_activation_file(
            &file,
            &keys,
            "p",
            None,
            &device(),
            t("2029-12-31T23:51:00Z"),
            TOL
        )
        .is_ok());
        assert!(matches!(
            verify_activation_file(
                &file,
                &keys,
                "p",
                None,
                &device(),
                t("2029-12-31T23:49:00Z"),
                TOL
            ),
            Err(Error::NotYetValid { .. })
        ));
    }

    #[test]
    fn a_receipt_never_passes_for_an_activation_file_nor_a_file_for_a_receipt() {
        let (ring, keys) = ring();
        let c = claims(None);
        let receipt = ReceiptClaims {
            typ: RECEIPT_TYP.into(),
            iss: "activation".into(),
            activation_id: c.activation_id,
            license_id: c.license_id,
            fingerprint: c.fingerprint.clone(),
            uninstalled_at: c.iat,
            iat: c.iat,
            event: event(),
        };
        let signed = ring.sign_typed(&receipt, RECEIPT_JWS_TYP).expect("sign");
        let now = t("2031-01-01T00:00:00Z");
        assert!(matches!(
            verify_activation_file(&signed, &keys, "p", None, &device(), now, TOL),
            Err(Error::WrongDocument { .. })
        ));
        assert_eq!(verify_receipt(&signed, &keys).expect("receipt"), receipt);
        // Activation claims under the receipt's header typ are refused too,
        // and a receipt's claims under `JWT` are no receipt.
        let as_receipt = ring.sign_typed(&c, RECEIPT_JWS_TYP).expect("sign");
        assert!(
            verify_activation_file(&as_receipt, &keys, "p", None, &device(), now, TOL).is_err()
        );
        let file = ring.sign(&c).expect("sign");
        assert!(matches!(
            verify_receipt(&file, &keys),
            Err(Error::WrongDocument { .. })
        ));
        let plain = ring.sign(&receipt).expect("sign");
        assert!(verify_receipt(&plain, &keys).is_err());
    }

    #[test]
    fn new_work_stops_at_expiry_while_running_work_continues() {
        let (ring, keys) = ring();
        let file = ring
            .sign(&claims(Some("2032-01-01T00:00:00Z")))
            .expect("sign");
        let a = verify_activation_file(
            &file,
            &keys,
            "p",
            None,
            &device(),
            t("2031-06-01T00:00:00Z"),
            TOL,
        )
        .expect("verifies");
        let started = t("2031-12-31T23:00:00Z");
        let after = t("2032-01-01T00:00:01Z");
        assert!(a.may_start("f1", started));
        assert!(!a.may_start("f1", after));
        assert!(a.may_continue("f1", started));
        assert!(!a.may_continue("f1", after), "started after expiry");
        assert!(!a.may_continue("f2", started), "never granted");
    }

    fn grant(status: LicenseStatus, expires: Option<&str>) -> Grant {
        Grant {
            license_id: Uuid::from_u128(7),
            product: "p".into(),
            edition: None,
            kind: LicenseKind::Formal,
            status,
            modules: vec![],
            features: vec!["f1".into()],
            seats: BTreeMap::from([("f1".to_string(), 1)]),
            expires_at: expires.map(t),
            offline_grace_hours: 72,
            lease_ttl_secs: 300,
            lease_grace_secs: 60,
            require_client_time: false,
            domain: None,
            version: 1,
        }
    }

    fn document(ring: &KeyRing, client: Uuid, grants: Vec<Grant>) -> String {
        document_until(ring, client, grants, "2031-01-04T00:00:00Z")
    }

    fn document_until(ring: &KeyRing, client: Uuid, grants: Vec<Grant>, until: &str) -> String {
        let now = t("2031-01-01T00:00:00Z");
        let until = t(until);
        ring.sign(&json!({
            "iss": "grant-sync", "sub": client.to_string(), "iat": now.timestamp(),
            "nbf": now.timestamp(), "exp": until.timestamp(), "typ": GRANT_DOCUMENT_TYP,
            "client_id": client, "server_time": now, "valid_until": until,
            "grants": grants, "leases": [],
        }))
        .expect("sign")
    }

    #[test]
    fn a_grant_document_holds_until_valid_until_and_names_its_client() {
        let (ring, keys) = ring();
        let client = Uuid::new_v4();
        let doc = document(&ring, client, vec![grant(LicenseStatus::Active, None)]);
        let inside = t("2031-01-03T23:59:59Z");
        let d = verify_grant_document(&doc, &keys, client, inside, TOL).expect("verifies");
        assert_eq!(d.valid_until(), t("2031-01-04T00:00:00Z"));
        assert!(d.may_start(Uuid::from_u128(7), "f1", inside));
        assert!(matches!(
            verify_grant_document(&doc, &keys, client, t("2031-01-04T00:00:00Z"), TOL),
            Err(Error::Expired { .. })
        ));
        assert!(matches!(
            verify_grant_document(&doc, &keys, Uuid::new_v4(), inside, TOL),
            Err(Error::WrongDocument { .. })
        ));
        // An activation file is no grant document.
        let file = ring.sign(&claims(None)).expect("sign");
        assert!(matches!(
            verify_grant_document(&file, &keys, client, inside, TOL),
            Err(Error::WrongDocument { .. })
        ));
    }

    #[test]
    fn a_fresh_document_without_grace_verifies_but_a_kept_one_serves_nothing() {
        // Zero grace (or no grants): grant sync signs exp == now.
        let (ring, keys) = ring();
        let client = Uuid::new_v4();
        let now = t("2031-01-01T00:00:00Z");
        let doc = document_until(&ring, client, vec![], "2031-01-01T00:00:00Z");
        let fresh = verify_fresh_grant_document(&doc, &keys, client, now, TOL).expect("fresh");
        assert_eq!(fresh.claims.exp, now.timestamp());
        assert!(matches!(
            verify_grant_document(&doc, &keys, client, now, TOL),
            Err(Error::Expired { .. })
        ));
        // Fresh or kept, it must name this client and not be from the future.
        assert!(matches!(
            verify_fresh_grant_document(&doc, &keys, Uuid::new_v4(), now, TOL),
            Err(Error::WrongDocument { .. })
        ));
        assert!(matches!(
            verify_fresh_grant_document(&doc, &keys, client, t("2030-12-31T23:49:00Z"), TOL),
            Err(Error::NotYetValid { .. })
        ));
    }

    #[test]
    fn a_document_whose_sub_is_another_client_is_refused() {
        let (ring, keys) = ring();
        let client = Uuid::new_v4();
        let now = t("2031-01-01T00:00:00Z");
        let doc = ring
            .sign(&json!({
                "iss": "grant-sync", "sub": Uuid::new_v4().to_string(), "iat": now.timestamp(),
                "nbf": now.timestamp(), "exp": now.timestamp() + 3600, "typ": GRANT_DOCUMENT_TYP,
                "client_id": client, "server_time": now, "valid_until": "2031-01-01T01:00:00Z",
                "grants": [], "leases": [],
            }))
            .expect("sign");
        assert!(matches!(
            verify_grant_document(&doc, &keys, client, now, TOL),
            Err(Error::WrongDocument { .. })
        ));
    }

    #[test]
    fn grant_rules_expiry_stops_new_work_suspension_stops_all() {
        let (ring, keys) = ring();
        let client = Uuid::new_v4();
        let now = t("2031-01-02T00:00:00Z");
        let lic = Uuid::from_u128(7);
        let expiring = document(
            &ring,
            client,
            vec![grant(LicenseStatus::Active, Some("2031-01-01T12:00:00Z"))],
        );
        let d = verify_grant_document(&expiring, &keys, client, now, TOL).expect("verifies");
        assert!(!d.may_start(lic, "f1", now));
        assert!(d.may_continue(lic, "f1"));
        let suspended = document(&ring, client, vec![grant(LicenseStatus::Suspended, None)]);
        let d = verify_grant_document(&suspended, &keys, client, now, TOL).expect("verifies");
        assert!(!d.may_start(lic, "f1", now));
        assert!(!d.may_continue(lic, "f1"));
        assert!(!d.may_start(Uuid::from_u128(8), "f1", now), "no such grant");
    }
}
