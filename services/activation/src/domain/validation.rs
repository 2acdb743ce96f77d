//! `POST /v1/validate` as a pure function of the license, its seats and the
//! request: a read, so it appends nothing, whatever it answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use contracts::issuance::LicenseStatus;
use contracts::license_view::LicenseView;
use uuid::Uuid;

use super::seats::policy;
use super::Seats;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Validation {
    pub valid: bool,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_features: Vec<String>,
}

impl Validation {
    pub fn with_code(mut self, code: &str) -> Self {
        self.valid = code == "VALID";
        self.code = code.into();
        self
    }
}

/// What the caller asks about.
#[derive(Debug, Clone, Default)]
pub struct Check<'a> {
    /// Component digests of the device, when one is named.
    pub device: Option<&'a BTreeMap<String, String>>,
    pub features: &'a [String],
    pub client_time: Option<DateTime<Utc>>,
}

pub fn validate(
    license: &LicenseView,
    seats: &Seats,
    check: &Check<'_>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Validation {
    let mut v = Validation {
        license_id: Some(license.id),
        expires_at: license.expires_at,
        ..Validation::default()
    };
    let status = match license.status {
        LicenseStatus::Suspended => Some("SUSPENDED"),
        LicenseStatus::Revoked | LicenseStatus::Reclaimed => Some("REVOKED"),
        LicenseStatus::Expired => Some("EXPIRED"),
        LicenseStatus::Deleted => Some("NOT_FOUND"),
        LicenseStatus::Active if license.expires_at.is_some_and(|t| t <= now) => Some("EXPIRED"),
        LicenseStatus::Active => None,
    };
    if let Some(code) = status {
        return v.with_code(code);
    }
    let policy = policy(license);
    if let Some(device) = check.device {
        let live = seats.live().count() as u32;
        let Some(seat) = seats.seat_of(device, policy.fingerprint_min_matches) else {
            return v.with_code(match live {
                0 => "NO_ACTIVATION",
                n if n >= policy.max_activations => "TOO_MANY_ACTIVATIONS",
                _ => "FINGERPRINT_MISMATCH",
            });
        };
        v.activation_id = Some(seat.activation_id);
        // A policy lowered below the seats in use.
        if live > policy.max_activations {
            return v.with_code("TOO_MANY_ACTIVATIONS");
        }
        if let (Some(t), Some(last)) = (check.client_time, seat.last_client_time) {
            if t + tolerance < last {
                return v.with_code("CLOCK_ROLLBACK");
            }
        }
    }
    let missing: Vec<String> = check
        .features
        .iter()
        .filter(|f| !license.features.contains(f))
        .cloned()
        .collect();
    if !missing.is_empty() {
        v.missing_features = missing;
        return v.with_code("FEATURES_MISSING");
    }
    v.with_code("VALID")
}
