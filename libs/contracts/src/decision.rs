//! The rules that decide a validation and whether a device may activate, as
//! pure functions of a license and its live seats. The activation service
//! answers requests with them; the projector re-evaluates a past request
//! with them against the state in force at an instant.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::activation::same_device;
use crate::issuance::{LicenseStatus, Policy};
use crate::license_view::LicenseView;

/// A live seat as the rules need it.
pub trait LiveSeat {
    fn activation_id(&self) -> Uuid;
    fn components(&self) -> &BTreeMap<String, String>;
    fn last_client_time(&self) -> Option<DateTime<Utc>>;
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
    pub features: &'a [crate::text::Name],
    pub client_time: Option<DateTime<Utc>>,
}

/// Why a license takes no new activation (and fails validation) at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusRefusal {
    Suspended,
    Revoked,
    Expired,
    Reclaimed,
    Deleted,
}

/// The status in force at `now`: the expiry date decides even before the
/// scheduler's event has been recorded.
pub fn status_refusal(license: &LicenseView, now: DateTime<Utc>) -> Option<StatusRefusal> {
    match license.status.at(license.expires_at, now) {
        LicenseStatus::Suspended => Some(StatusRefusal::Suspended),
        LicenseStatus::Revoked => Some(StatusRefusal::Revoked),
        LicenseStatus::Expired => Some(StatusRefusal::Expired),
        LicenseStatus::Reclaimed => Some(StatusRefusal::Reclaimed),
        LicenseStatus::Deleted => Some(StatusRefusal::Deleted),
        LicenseStatus::Active => None,
    }
}

pub fn policy(license: &LicenseView) -> Policy {
    license.policy.clone().unwrap_or_default()
}

/// What a device's reported clock means, against the latest time it
/// reported before (`last_seen`). The one rule of every context that
/// takes a client's time (activation, validation, leases, sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClock {
    /// No time reported, and the policy does not ask for one: nothing to
    /// check, nothing to record.
    Unreported,
    /// Believable: `record` is what to keep as the device's latest time —
    /// the report, but never beyond the server's time, so a wrong reading
    /// ahead cannot lock the device out once its clock is put right.
    Fine { record: DateTime<Utc> },
    /// Earlier than a time the device reported before, beyond the
    /// tolerance: refused (and recorded by the caller).
    RolledBack { last_seen: DateTime<Utc> },
    /// The policy demands a time and the request has none.
    Missing,
}

/// The time to keep of a report `reported` at `now`: never beyond the
/// server's time ([`client_clock`]'s `record`).
pub fn recordable(reported: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    reported.min(now)
}

pub fn client_clock(
    reported: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    tolerance: Duration,
    required: bool,
) -> ClientClock {
    let Some(t) = reported else {
        return if required {
            ClientClock::Missing
        } else {
            ClientClock::Unreported
        };
    };
    // A recorded time beyond the server's cannot have been believable
    // when recorded (stored before the cap existed): it is held to that
    // bound, so it locks no device out.
    if let Some(last) = last_seen.map(|l| l.min(now)) {
        if crate::time::add(t, tolerance) < last {
            return ClientClock::RolledBack { last_seen: last };
        }
    }
    ClientClock::Fine {
        record: recordable(t, now),
    }
}

/// The live seat a device holds, if any.
pub fn seat_of<'a, S: LiveSeat>(
    live: &[&'a S],
    device: &BTreeMap<String, String>,
    min_matches: u32,
) -> Option<&'a S> {
    live.iter()
        .copied()
        .find(|s| same_device(s.components(), device, min_matches))
}

pub fn validate<S: LiveSeat>(
    license: &LicenseView,
    live: &[&S],
    check: &Check<'_>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Validation {
    validate_among(license, live.len() as u32, live, check, now, tolerance)
}

/// [`validate`] of a license with `in_use` live seats, the device sought
/// among `candidates` only: at least every live seat sharing a component
/// with it (no other can be it), in the order of the live seats.
pub fn validate_among<S: LiveSeat>(
    license: &LicenseView,
    in_use: u32,
    candidates: &[&S],
    check: &Check<'_>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Validation {
    let v = Validation {
        license_id: Some(license.id),
        expires_at: license.expires_at,
        ..Validation::default()
    };
    if let Some(refusal) = status_refusal(license, now) {
        return v.with_code(match refusal {
            StatusRefusal::Suspended => "SUSPENDED",
            StatusRefusal::Revoked | StatusRefusal::Reclaimed => "REVOKED",
            StatusRefusal::Expired => "EXPIRED",
            StatusRefusal::Deleted => "NOT_FOUND",
        });
    }
    let mut v = v;
    let policy = policy(license);
    if policy.require_client_time && check.client_time.is_none() {
        return v.with_code("CLIENT_TIME_REQUIRED");
    }
    if let Some(device) = check.device {
        let Some(seat) = seat_of(candidates, device, policy.fingerprint_min_matches) else {
            return v.with_code(match in_use {
                0 => "NO_ACTIVATION",
                n if n >= policy.max_activations => "TOO_MANY_ACTIVATIONS",
                _ => "FINGERPRINT_MISMATCH",
            });
        };
        v.activation_id = Some(seat.activation_id());
        // A policy lowered below the seats in use.
        if in_use > policy.max_activations {
            return v.with_code("TOO_MANY_ACTIVATIONS");
        }
        match client_clock(
            check.client_time,
            seat.last_client_time(),
            now,
            tolerance,
            policy.require_client_time,
        ) {
            ClientClock::RolledBack { .. } => return v.with_code("CLOCK_ROLLBACK"),
            ClientClock::Fine { .. } | ClientClock::Unreported | ClientClock::Missing => {}
        }
    }
    let missing: Vec<String> = check
        .features
        .iter()
        .filter(|f| !license.features.iter().any(|g| g == *f))
        .map(|f| f.to_string())
        .collect();
    if !missing.is_empty() {
        v.missing_features = missing;
        return v.with_code("FEATURES_MISSING");
    }
    v.with_code("VALID")
}

/// Whether a device activating at `now` gets a seat: its existing one, a new
/// one, or a refusal. (Clock-rollback refusals need the device's history
/// under every license and are left to the activation service.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Existing(Uuid),
    New,
    Refused(StatusRefusal),
    TooManyActivations(u32),
}

pub fn admit<S: LiveSeat>(
    license: &LicenseView,
    live: &[&S],
    device: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Admission {
    if let Some(r) = status_refusal(license, now) {
        return Admission::Refused(r);
    }
    let policy = policy(license);
    if let Some(seat) = seat_of(live, device, policy.fingerprint_min_matches) {
        return Admission::Existing(seat.activation_id());
    }
    if live.len() as u32 >= policy.max_activations {
        return Admission::TooManyActivations(policy.max_activations);
    }
    Admission::New
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        crate::time::parse(s).expect("valid")
    }

    #[test]
    fn a_clock_ahead_is_recorded_capped_and_never_locks_the_device_out() {
        let now = t("2026-12-06T12:00:00Z");
        let tol = Duration::minutes(10);
        let far = t("9999-12-31T23:59:59Z");
        let ClientClock::Fine { record } = client_clock(Some(far), None, now, tol, false) else {
            panic!("a time ahead is not a rollback");
        };
        assert_eq!(record, now);
        // The true time afterwards is no rollback from the capped record,
        // nor from one recorded uncapped before the rule existed.
        assert_eq!(
            client_clock(Some(now), Some(record), now, tol, false),
            ClientClock::Fine { record: now }
        );
        assert_eq!(
            client_clock(Some(now), Some(far), now, tol, false),
            ClientClock::Fine { record: now }
        );
    }

    #[test]
    fn a_clock_set_back_beyond_the_tolerance_is_a_rollback() {
        let now = t("2026-12-06T12:00:00Z");
        let tol = Duration::minutes(10);
        let last = t("2026-12-06T11:00:00Z");
        assert_eq!(
            client_clock(Some(t("2026-12-06T10:49:59Z")), Some(last), now, tol, false),
            ClientClock::RolledBack { last_seen: last }
        );
        assert!(matches!(
            client_clock(Some(t("2026-12-06T10:50:00Z")), Some(last), now, tol, false),
            ClientClock::Fine { .. }
        ));
    }

    #[test]
    fn a_missing_time_is_refused_only_where_the_policy_demands_one() {
        let now = t("2026-12-06T12:00:00Z");
        let tol = Duration::minutes(10);
        assert_eq!(
            client_clock(None, Some(now), now, tol, false),
            ClientClock::Unreported
        );
        assert_eq!(
            client_clock(None, None, now, tol, true),
            ClientClock::Missing
        );
    }
}
