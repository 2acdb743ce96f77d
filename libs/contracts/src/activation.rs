//! Activation context: device fingerprints, the seats of a license
//! (`LicenseActivations`, one stream per license), trials (`Trial`, one stream
//! per product and device) and the public signing keys (`SigningKey`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::issuance::LicenseKind;

pub const ACTIVATIONS_AGGREGATE: &str = "LicenseActivations";
pub const TRIAL_AGGREGATE: &str = "Trial";
pub const SIGNING_KEY_AGGREGATE: &str = "SigningKey";

// Command types (named in command outcomes).
pub const ACTIVATE: &str = "Activate";
pub const UNINSTALL: &str = "Uninstall";
pub const MIGRATE: &str = "Migrate";
pub const REVOKE_ACTIVATIONS: &str = "RevokeActivations";
pub const START_TRIAL: &str = "StartTrial";
pub const COMPLETE_TRIAL: &str = "CompleteTrial";
pub const END_TRIAL: &str = "EndTrial";
pub const FAIL_TRIAL: &str = "FailTrial";
pub const PUBLISH_SIGNING_KEY: &str = "PublishSigningKey";

// Event types; every one is at version "1".
pub const DEVICE_ACTIVATED: &str = "DeviceActivated";
pub const DEVICE_SEEN: &str = "DeviceSeen";
pub const OFFLINE_RESPONSE_ISSUED: &str = "OfflineResponseIssued";
pub const CLOCK_ROLLBACK_DETECTED: &str = "ClockRollbackDetected";
pub const ACTIVATION_UNINSTALLED: &str = "ActivationUninstalled";
pub const ACTIVATION_MIGRATED: &str = "ActivationMigrated";
pub const ACTIVATIONS_REVOKED: &str = "ActivationsRevoked";
pub const TRIAL_STARTED: &str = "TrialStarted";
pub const TRIAL_ACTIVATED: &str = "TrialActivated";
pub const TRIAL_ENDED: &str = "TrialEnded";
pub const TRIAL_FAILED: &str = "TrialFailed";
pub const SIGNING_KEY_PUBLISHED: &str = "SigningKeyPublished";

pub const MAX_COMPONENTS: usize = 16;

/// `typ` of an activation file's claims (and of an offline response).
pub const ACTIVATION_TYP: &str = "activation";
/// `typ` of an uninstall receipt's claims.
pub const RECEIPT_TYP: &str = "uninstall-receipt";
/// JWS header `typ` of an uninstall receipt (activation files keep `JWT`):
/// a receipt is never taken for a file, by us or by a JOSE library
/// checking the header.
pub const RECEIPT_JWS_TYP: &str = "uninstall-receipt+jwt";

/// Hardware components as a client reports them, e.g.
/// `{"machine_id": "…", "disk": "…", "board": "…", "mac": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub BTreeMap<String, String>);

/// A fingerprint in an OpenAPI document: an object of component names to
/// values.
impl utoipa::PartialSchema for Fingerprint {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .description(Some(
                "Hardware components, name to value, e.g. `{\"machine_id\": \"…\", \
                 \"disk\": \"…\", \"board\": \"…\", \"mac\": \"…\"}`: 1 to 16 of \
                 them, names of 1-32 characters of a-z 0-9 _ - (case and surrounding \
                 spaces ignored), values of 1-256 characters; at least as many as the \
                 product's policy compares. Only their digests are kept.",
            ))
            .min_properties(Some(1))
            .max_properties(Some(MAX_COMPONENTS))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1)),
            ))
            .into()
    }
}

impl utoipa::ToSchema for Fingerprint {}

/// Why a fingerprint cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    #[error("a fingerprint needs 1 to {MAX_COMPONENTS} components")]
    Count,
    #[error("this product identifies a device by at least {0} components")]
    TooFew(u32),
    #[error("component names are 1-32 characters of a-z 0-9 _ -")]
    Name,
    #[error("component values are 1-256 characters")]
    Value,
}

impl Fingerprint {
    /// Each component as `name → hex SHA-256(name ‖ 0 ‖ value)`, values
    /// trimmed and lower-cased so `AA:BB` and `aa:bb ` are one MAC. Only
    /// these digests are ever stored or published.
    pub fn components(&self) -> Result<BTreeMap<String, String>, FingerprintError> {
        if self.0.is_empty() || self.0.len() > MAX_COMPONENTS {
            return Err(FingerprintError::Count);
        }
        let mut out = BTreeMap::new();
        for (name, value) in &self.0 {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_lowercase();
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(FingerprintError::Name);
            }
            if value.is_empty() || value.chars().count() > 256 {
                return Err(FingerprintError::Value);
            }
            let mut h = Sha256::new();
            h.update(name.as_bytes());
            h.update([0]);
            h.update(value.as_bytes());
            out.insert(name, hex::encode(h.finalize()));
        }
        Ok(out)
    }

    /// [`Fingerprint::components`] of a device as a product's policy
    /// identifies devices: at least `min_matches` components, since two
    /// devices are one only when that many are equal.
    pub fn components_for(
        &self,
        min_matches: u32,
    ) -> Result<BTreeMap<String, String>, FingerprintError> {
        let components = self.components()?;
        if components.len() < min_matches.max(1) as usize {
            return Err(FingerprintError::TooFew(min_matches.max(1)));
        }
        Ok(components)
    }

    /// The fingerprint digest: SHA-256 over the sorted `name=digest` lines.
    pub fn digest(&self) -> Result<String, FingerprintError> {
        Ok(digest_of(&self.components()?))
    }
}

/// The fingerprint digest of component digests (see [`Fingerprint::digest`]).
pub fn digest_of(components: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (name, digest) in components {
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(digest.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Whether two devices are one: at least `min_matches` components equal —
/// never fewer, whatever the devices report, so one shared component (a
/// MAC address) never makes two machines one.
///
/// One pass over both (each sorted by name), ending as soon as the answer
/// is known: a validation compares the device with every live seat of the
/// license, and most of them differ from the second component on.
pub fn same_device(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    min_matches: u32,
) -> bool {
    let need = min_matches.max(1) as usize;
    let (mut ia, mut ib) = (a.iter(), b.iter());
    let (mut x, mut y) = (ia.next(), ib.next());
    // Components not yet passed on each side, the current one included.
    let (mut left_a, mut left_b, mut equal) = (a.len(), b.len(), 0);
    while let (Some((ka, va)), Some((kb, vb))) = (x, y) {
        if equal + left_a.min(left_b) < need {
            return false;
        }
        match ka.cmp(kb) {
            std::cmp::Ordering::Less => {
                x = ia.next();
                left_a -= 1;
            }
            std::cmp::Ordering::Greater => {
                y = ib.next();
                left_b -= 1;
            }
            std::cmp::Ordering::Equal => {
                if va == vb {
                    equal += 1;
                    if equal >= need {
                        return true;
                    }
                }
                (x, y) = (ia.next(), ib.next());
                (left_a, left_b) = (left_a - 1, left_b - 1);
            }
        }
    }
    false
}

// ---------------------------------------------------------------- events

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceActivated {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub product: String,
    pub kind: LicenseKind,
    /// Fingerprint digest.
    pub fingerprint: String,
    /// Component name → component digest.
    pub components: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_time: Option<DateTime<Utc>>,
    /// Activated from an offline request file.
    pub offline: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub activated_at: DateTime<Utc>,
}

/// A device came back (re-activation of its seat) and told its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSeen {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub client_time: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
}

/// A device reported a time earlier than one it reported before, beyond
/// the tolerance; the request was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRollbackDetected {
    pub license_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<Uuid>,
    pub fingerprint: String,
    pub client_time: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub tolerance_secs: u32,
    pub detected_at: DateTime<Utc>,
}

/// An offline request of a device that holds its seat was answered: the
/// nonce is spent (a request file answers once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineResponseIssued {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub nonce: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_time: Option<DateTime<Utc>>,
    pub issued_at: DateTime<Utc>,
}

/// The seat is free again; the activation id is revoked for ever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationUninstalled {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub uninstalled_at: DateTime<Utc>,
}

/// Rehost: the old activation is revoked by the same event that creates
/// the new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationMigrated {
    pub license_id: Uuid,
    pub from_activation_id: Uuid,
    pub activation_id: Uuid,
    pub fingerprint: String,
    pub components: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_time: Option<DateTime<Utc>>,
    /// Migrations of this license so far, this one included.
    pub migrations_used: u32,
    pub migrated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    LicenseSuspended,
    LicenseRevoked,
    LicenseReclaimed,
    LicenseDeleted,
    /// The device activated a temporary or formal license: no mixing.
    TrialEnded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationsRevoked {
    pub license_id: Uuid,
    pub activation_ids: Vec<Uuid>,
    pub reason: RevocationReason,
    pub revoked_at: DateTime<Utc>,
}

/// Payload of `Activate`: `POST /v1/activations`, or an envelope on
/// `<prefix>.activation.commands` whose aggregate id is the license's id
/// (a `license_key` beside it must be that license's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// Optional with a license credential (which names the license).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_key: Option<crate::text::Text<64>>,
    pub fingerprint: Fingerprint,
    /// The device's clock; required where the product's policy says so.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::strict_option"
    )]
    pub client_time: Option<DateTime<Utc>>,
}

/// Payload of `Migrate`: `POST /v1/activations/{id}/migrate`, or an
/// envelope whose aggregate id is the activation's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    /// The new device.
    pub fingerprint: Fingerprint,
    /// The new device's clock; required where the product's policy says so.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::strict_option"
    )]
    pub client_time: Option<DateTime<Utc>>,
}

/// Payload of `StartTrial`: `POST /v1/trials`, or an envelope whose
/// aggregate id is the product's code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTrial {
    /// The product's code.
    pub product: crate::text::Name,
    pub fingerprint: Fingerprint,
    /// The device's clock; required where the product's policy says so.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::strict_option"
    )]
    pub client_time: Option<DateTime<Utc>>,
}

/// Payload of `Uninstall` (`POST /v1/activations/{id}/uninstall`, or an
/// envelope whose aggregate id is the activation's id): nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uninstall {}

/// A trial was asked for; `issue_command_id` is the `IssueLicense` command
/// sent to issuance for `license_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialStarted {
    pub trial_id: String,
    pub product: String,
    pub fingerprint: String,
    pub components: BTreeMap<String, String>,
    pub license_id: Uuid,
    pub issue_command_id: Uuid,
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_time: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
}

/// Issuance issued the trial license and the device holds its seat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialActivated {
    pub trial_id: String,
    pub license_id: Uuid,
    pub activation_id: Uuid,
    pub activated_at: DateTime<Utc>,
}

/// The trial's device activated a temporary or formal license.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialEnded {
    pub trial_id: String,
    pub license_id: Uuid,
    /// The license whose activation ended the trial.
    pub superseded_by: Uuid,
    pub ended_at: DateTime<Utc>,
}

/// Issuance refused the trial's license (its `IssueLicense` outcome): the
/// trial never ran. The device may start it again once the cause is fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialFailed {
    pub trial_id: String,
    pub license_id: Uuid,
    /// Issuance's stable code and message for the refusal.
    pub code: String,
    pub message: String,
    pub failed_at: DateTime<Utc>,
}

/// A public key that signs activation files, recorded before its first
/// signature so the JWKS can always serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyPublished {
    pub kid: String,
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub published_at: DateTime<Utc>,
}

impl SigningKeyPublished {
    /// The key as an RFC 7517 JWK (what a JWKS lists).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": self.kty, "crv": self.crv, "x": self.x, "y": self.y,
            "kid": self.kid, "use": "sig", "alg": "ES256",
        })
    }
}

/// What an activation file (JWS payload) says. Times are JWT NumericDates
/// (`iat`, `nbf`, `exp`) so standard JOSE libraries check them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationClaims {
    /// "activation" or "uninstall-receipt".
    pub typ: String,
    pub iss: String,
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    pub kind: LicenseKind,
    #[serde(default)]
    pub features: Vec<FeatureGrant>,
    pub fingerprint: String,
    /// The seat's component digests (name → digest) and how many must
    /// match: a device with a part replaced since is still this one, as
    /// the server decides (`same_device`), also offline. Absent in files
    /// made before they were added: then only `fingerprint` identifies it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_matches: Option<u32>,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// The event that granted (or, for a receipt, ended) the activation.
    pub event: EventPosition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// What an uninstall receipt (JWS payload, header `typ`
/// [`RECEIPT_JWS_TYP`]) says: that the activation ended, by which event.
/// Its own shape, so no reader of activation files takes it for one. It
/// has no `exp`: the proof of an uninstall does not lapse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptClaims {
    /// Always [`RECEIPT_TYP`].
    pub typ: String,
    pub iss: String,
    pub activation_id: Uuid,
    pub license_id: Uuid,
    /// The uninstalled device's fingerprint digest.
    pub fingerprint: String,
    /// When the seat was freed (JWT NumericDate).
    pub uninstalled_at: i64,
    pub iat: i64,
    /// The `ActivationUninstalled` event.
    pub event: EventPosition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureGrant {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPosition {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: u64,
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(pairs: &[(&str, &str)]) -> Fingerprint {
        Fingerprint(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn device() -> Fingerprint {
        fp(&[
            ("machine_id", "m-1"),
            ("disk", "d-1"),
            ("board", "b-1"),
            ("mac", "AA:BB:CC:DD:EE:01"),
        ])
    }

    #[test]
    fn the_digest_ignores_case_and_spacing_of_values() {
        let mut other = device();
        other.0.insert("mac".into(), " aa:bb:cc:dd:ee:01 ".into());
        assert_eq!(device().digest(), other.digest());
    }

    #[test]
    fn one_replaced_disk_is_the_same_device_a_new_board_and_disk_is_not() {
        let a = device().components().expect("valid");
        let mut disk = device();
        disk.0.insert("disk".into(), "d-2".into());
        let b = disk.components().expect("valid");
        assert_ne!(digest_of(&a), digest_of(&b));
        assert!(same_device(&a, &b, 3));
        disk.0.insert("board".into(), "b-2".into());
        let c = disk.components().expect("valid");
        assert!(!same_device(&a, &c, 3));
    }

    #[test]
    fn fewer_components_than_the_policy_match_never_make_one_device() {
        let mac = fp(&[("mac", "AA:BB:CC:DD:EE:01")])
            .components()
            .expect("valid");
        let full = device().components().expect("valid");
        // One shared MAC is not a device, nor are two equal components when
        // the policy wants three.
        assert!(!same_device(&mac, &full, 3));
        assert!(!same_device(&mac, &mac, 3));
        let two = fp(&[("machine_id", "m-1"), ("disk", "d-1")])
            .components()
            .expect("valid");
        assert!(!same_device(&two, &full, 3));
        assert!(same_device(&two, &full, 2));
        // A product whose policy asks for one component gets what it asked.
        assert!(same_device(&mac, &full, 1));
        assert_eq!(
            fp(&[("mac", "x")]).components_for(3),
            Err(FingerprintError::TooFew(3))
        );
        assert!(device().components_for(3).is_ok());
        assert!(device().components_for(5).is_err());
    }

    #[test]
    fn same_device_agrees_with_counting_every_equal_component() {
        // Every pair of devices over three names, each component absent or
        // one of two values, at every threshold: the early exits change no
        // answer.
        let names = ["board", "disk", "mac"];
        let devices: Vec<BTreeMap<String, String>> = (0..27u32)
            .map(|n| {
                names
                    .iter()
                    .enumerate()
                    .filter_map(|(i, name)| match n / 3u32.pow(i as u32) % 3 {
                        0 => None,
                        v => Some((name.to_string(), format!("v{v}"))),
                    })
                    .collect()
            })
            .collect();
        for a in &devices {
            for b in &devices {
                let equal = a.iter().filter(|(k, v)| b.get(*k) == Some(*v)).count();
                for min in 0..5 {
                    assert_eq!(
                        same_device(a, b, min),
                        equal >= min.max(1) as usize,
                        "{a:?} {b:?} {min}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_fingerprints_are_refused() {
        assert_eq!(fp(&[]).digest(), Err(FingerprintError::Count));
        assert_eq!(
            fp(&[("Bad Name", "x")]).digest(),
            Err(FingerprintError::Name)
        );
        assert_eq!(fp(&[("disk", "  ")]).digest(), Err(FingerprintError::Value));
        let many: Vec<(String, String)> = (0..17).map(|i| (format!("c{i}"), "v".into())).collect();
        let many = Fingerprint(many.into_iter().collect());
        assert_eq!(many.digest(), Err(FingerprintError::Count));
    }
}
