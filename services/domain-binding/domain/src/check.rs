//! The host check as a pure function of what the cache knows: a read, no
//! event.

use chrono::{DateTime, Utc};
use contracts::issuance::LicenseStatus;
use serde::Serialize;
use uuid::Uuid;

use super::host::{HostError, Registrable};

/// What the host check needs of a license.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub license_id: Uuid,
    pub product: String,
    pub edition: Option<String>,
    pub status: LicenseStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub domain: Option<String>,
}

impl Entry {
    /// Active and not past its expiry.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.status.at(self.expires_at, now) == LicenseStatus::Active
    }
}

/// The answer of `GET /v1/domain-check`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HostCheck {
    pub authorized: bool,
    /// `OK`, or why not: `NOT_FOUND`, `LICENSE_SUSPENDED`,
    /// `LICENSE_REVOKED`, `LICENSE_EXPIRED`, `NOT_BOUND`, `DOMAIN_MISMATCH`,
    /// or the host's own refusal (`INVALID_HOST`, …).
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub registrable_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub bound_domain: Option<String>,
}

pub fn check(
    entry: Option<&Entry>,
    host: &Result<Registrable, HostError>,
    now: DateTime<Utc>,
) -> HostCheck {
    let registrable = host.as_ref().ok().map(|h| h.domain.clone());
    let answer = |code, bound: Option<&String>| HostCheck {
        authorized: code == "OK",
        code,
        registrable_domain: registrable.clone(),
        bound_domain: bound.cloned(),
    };
    let Some(e) = entry else {
        return answer("NOT_FOUND", None);
    };
    let code = match e.status.at(e.expires_at, now) {
        LicenseStatus::Deleted => Some("NOT_FOUND"),
        LicenseStatus::Suspended => Some("LICENSE_SUSPENDED"),
        LicenseStatus::Revoked | LicenseStatus::Reclaimed => Some("LICENSE_REVOKED"),
        LicenseStatus::Expired => Some("LICENSE_EXPIRED"),
        LicenseStatus::Active => None,
    };
    if let Some(code) = code {
        return answer(code, e.domain.as_ref());
    }
    let h = match host {
        Ok(h) => h,
        Err(err) => return answer(err.code(), e.domain.as_ref()),
    };
    match &e.domain {
        None => answer("NOT_BOUND", None),
        Some(d) if *d == h.domain => answer("OK", Some(d)),
        Some(d) => answer("DOMAIN_MISMATCH", Some(d)),
    }
}
