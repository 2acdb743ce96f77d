//! Issuance context: commands and events of the `License` aggregate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const LICENSE_AGGREGATE: &str = "License";

pub const ISSUE_LICENSE: &str = "IssueLicense";
pub const LICENSE_ISSUED: &str = "LicenseIssued";
pub const LICENSE_ISSUED_V1: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseKind {
    /// Pre-license on install: time-limited, never uninstalled or migrated.
    Trial,
    /// Time-limited, never uninstalled or migrated.
    Temporary,
    /// Purchased: perpetual or dated; uninstall and migration per policy.
    Formal,
}

/// Command payload of `IssueLicense`; also the body of `POST /v1/licenses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueLicense {
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    pub customer: String,
    pub kind: LicenseKind,
    #[serde(default)]
    pub features: Vec<String>,
    /// None means perpetual (formal licenses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Event payload of `LicenseIssued` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseIssued {
    pub license_id: Uuid,
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    pub customer: String,
    pub kind: LicenseKind,
    pub features: Vec<String>,
    pub issued_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}
