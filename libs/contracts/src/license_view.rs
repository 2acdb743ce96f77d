//! A license folded from the issuance events: the read side's view and
//! every other context's replica of the facts it needs. Pure, no IO, so the
//! live model, a rebuild and an as-of answer fold alike.

use crate::issuance::*;
use crate::EventEnvelope;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A license as the read side shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LicenseView {
    pub id: Uuid,
    pub product: String,
    #[schema(required = true)]
    pub edition: Option<String>,
    pub customer: String,
    #[serde(default)]
    #[schema(required = true)]
    pub contract: Option<String>,
    pub kind: LicenseKind,
    #[serde(default)]
    #[schema(required = true)]
    pub modules: Vec<String>,
    pub features: Vec<String>,
    /// Floating seats set by the license (others: the policy's).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub seats: std::collections::BTreeMap<String, u32>,
    pub status: LicenseStatus,
    pub issued_at: DateTime<Utc>,
    /// Null: perpetual.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(required = true)]
    pub reclaim_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the normalised key (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key_digest: Option<String>,
    /// The edition's policy as it stood at issue time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = PolicyView)]
    pub policy: Option<Policy>,
    /// Sequence of the last issuance event folded in.
    pub version: u64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FoldError {
    #[error("{event_type} v{version} payload does not match its contract: {reason}")]
    BadPayload {
        event_type: String,
        version: String,
        reason: String,
    },
}

/// The license an event is about, if any.
pub fn license_of(e: &EventEnvelope) -> Option<Uuid> {
    if e.aggregate_type == LICENSE_AGGREGATE {
        return Uuid::parse_str(&e.aggregate_id).ok();
    }
    e.payload
        .get("license_id")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
}

impl LicenseView {
    /// Folds one issuance event into the view. Event types this projector
    /// does not know (yet) leave the view unchanged.
    pub fn fold<P: Payload>(
        view: Option<Self>,
        e: &EventEnvelope<P>,
    ) -> Result<Option<Self>, FoldError> {
        if e.event_type == LICENSE_ISSUED {
            let p: LicenseIssued = decode(e)?;
            // Events recorded before policies were read as the default
            // policy, as issuance does.
            let reclaim_at = p
                .expires_at
                .map(|at| p.policy.clone().unwrap_or_default().reclaim_at(at));
            return Ok(Some(Self {
                id: p.license_id,
                product: p.product,
                edition: p.edition,
                customer: p.customer,
                contract: p.contract,
                kind: p.kind,
                modules: p.modules,
                features: p.features,
                seats: p.seats,
                status: LicenseStatus::Active,
                issued_at: p.issued_at,
                expires_at: p.expires_at,
                reclaim_at,
                key_digest: p.key_digest,
                policy: p.policy,
                version: e.sequence,
                updated_at: e.recorded_at,
            }));
        }
        let Some(mut v) = view else {
            return Ok(None);
        };
        match e.event_type.as_str() {
            LICENSE_RENEWED => {
                let p: LicenseRenewed = decode(e)?;
                let policy = v.policy.clone().unwrap_or_default();
                v.reclaim_at = Some(policy.reclaim_at(p.expires_at));
                v.expires_at = Some(p.expires_at);
                if v.status == LicenseStatus::Expired {
                    v.status = LicenseStatus::Active;
                }
            }
            LICENSE_FEATURES_AMENDED => {
                let p: LicenseFeaturesAmended = decode(e)?;
                v.modules = p.modules;
                v.features = p.features;
            }
            LICENSE_SUSPENDED => v.status = LicenseStatus::Suspended,
            LICENSE_REINSTATED => v.status = LicenseStatus::Active,
            LICENSE_REVOKED => v.status = LicenseStatus::Revoked,
            LICENSE_EXPIRED => {
                let p: LicenseExpired = decode(e)?;
                v.status = LicenseStatus::Expired;
                v.reclaim_at = Some(p.reclaim_at);
            }
            LICENSE_RECLAIMED => v.status = LicenseStatus::Reclaimed,
            LICENSE_DELETED => v.status = LicenseStatus::Deleted,
            _ => {}
        }
        v.version = e.sequence;
        v.updated_at = e.recorded_at;
        Ok(Some(v))
    }

    /// Concurrent quantity of `feature`: the license's own, else the
    /// policy's floating seats.
    pub fn seats_of(&self, feature: &str) -> u32 {
        self.seats
            .get(feature)
            .copied()
            .unwrap_or_else(|| self.policy.as_ref().map_or(1, |p| p.floating_seats))
    }

    pub fn status_text(&self) -> String {
        serde_json::to_value(self.status)
            .ok()
            .and_then(|s| s.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A payload a fold can read: a parsed value, or the text as published
/// (read straight into the contract type, with no value tree between: folds
/// over long histories decode thousands).
pub trait Payload {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error>;
}

impl Payload for serde_json::Value {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self)
    }
}

impl Payload for Box<serde_json::value::RawValue> {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.get())
    }
}

/// An event's payload as its contract type.
pub fn decode<T: serde::de::DeserializeOwned, P: Payload>(
    e: &EventEnvelope<P>,
) -> Result<T, FoldError> {
    e.payload.decode().map_err(|err| FoldError::BadPayload {
        event_type: e.event_type.clone(),
        version: e.event_version.clone(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use crate::{Actor, ActorKind};
    use serde_json::json;

    use super::*;

    fn envelope(event_type: &str, sequence: u64, payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            event_version: "1".into(),
            aggregate_type: LICENSE_AGGREGATE.into(),
            aggregate_id: "0192f5c4-0000-7000-8000-000000000001".into(),
            sequence,
            global_position: 1,
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
            command_id: Uuid::now_v7(),
            correlation_id: "c1".into(),
            causation_id: None,
            actor: Actor::new(ActorKind::Service, "test"),
            payload,
            prev_hash: "00".repeat(32),
            hash: "11".repeat(32),
        }
    }

    const ID: &str = "0192f5c4-0000-7000-8000-000000000001";

    fn issued() -> serde_json::Value {
        json!({
            "license_id": ID,
            "product": "integration-platform",
            "customer": "ACME",
            "kind": "formal",
            "features": ["data-access"],
            "issued_at": "2026-11-01T00:00:00Z",
            "expires_at": "2027-11-01T00:00:00Z",
            "policy": Policy::default(),
        })
    }

    fn view() -> Option<LicenseView> {
        LicenseView::fold(None, &envelope(LICENSE_ISSUED, 1, issued())).expect("folds")
    }

    #[test]
    fn license_issued_creates_an_active_view() {
        let v = view().expect("view exists");
        assert_eq!(v.status, LicenseStatus::Active);
        assert_eq!(v.product, "integration-platform");
        assert_eq!(v.version, 1);
        assert_eq!(
            v.reclaim_at.map(|r| r.to_rfc3339()),
            Some("2028-01-30T00:00:00+00:00".into())
        );
    }

    #[test]
    fn the_lifecycle_moves_the_status() {
        let mut v = view();
        let steps = [
            (
                LICENSE_SUSPENDED,
                json!({"license_id": ID, "reason": "r", "suspended_at": "2026-11-02T00:00:00Z"}),
                LicenseStatus::Suspended,
            ),
            (
                LICENSE_REINSTATED,
                json!({"license_id": ID, "reinstated_at": "2026-11-03T00:00:00Z"}),
                LicenseStatus::Active,
            ),
            (
                LICENSE_EXPIRED,
                json!({"license_id": ID, "expires_at": "2027-11-01T00:00:00Z", "expired_at": "2027-11-01T00:00:00Z", "existing_grants_continue": true, "new_grants_allowed": false, "reclaim_at": "2028-01-30T00:00:00Z"}),
                LicenseStatus::Expired,
            ),
            (
                LICENSE_RENEWED,
                json!({"license_id": ID, "previous_expires_at": "2027-11-01T00:00:00Z", "expires_at": "2028-11-01T00:00:00Z", "order_ref": "PO", "renewed_at": "2027-11-02T00:00:00Z"}),
                LicenseStatus::Active,
            ),
            (
                LICENSE_REVOKED,
                json!({"license_id": ID, "reason": "r", "revoked_at": "2027-11-03T00:00:00Z"}),
                LicenseStatus::Revoked,
            ),
        ];
        for (i, (t, p, status)) in steps.into_iter().enumerate() {
            v = LicenseView::fold(v, &envelope(t, i as u64 + 2, p)).expect("folds");
            assert_eq!(v.as_ref().map(|v| v.status), Some(status), "{t}");
        }
        let v = v.expect("view");
        assert_eq!(v.version, 6);
        assert_eq!(
            v.expires_at.map(|r| r.to_rfc3339()),
            Some("2028-11-01T00:00:00+00:00".into())
        );
    }

    /// Renewal moves the reclaim date by the policy's one rule, saturating
    /// at the last instant of year 9999 like every date sum.
    #[test]
    fn a_renewal_reclaims_by_the_policys_rule_even_near_the_end_of_time() {
        let mut p = issued();
        p["expires_at"] = json!("9999-11-01T00:00:00Z");
        let v = LicenseView::fold(None, &envelope(LICENSE_ISSUED, 1, p)).expect("folds");
        let last = v.as_ref().and_then(|v| v.reclaim_at);
        assert!(
            last.is_some_and(|r| r.to_rfc3339().starts_with("9999-12-31T23:59:59")),
            "{last:?}"
        );
        let renewed = json!({"license_id": ID, "previous_expires_at": "9999-11-01T00:00:00Z",
            "expires_at": "9999-12-01T00:00:00Z", "order_ref": "PO",
            "renewed_at": "2027-11-02T00:00:00Z"});
        let v = LicenseView::fold(v, &envelope(LICENSE_RENEWED, 2, renewed))
            .expect("folds")
            .expect("view");
        assert_eq!(v.reclaim_at, last);
        let policy = Policy::default();
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("date")
                .with_timezone(&Utc)
        };
        assert_eq!(
            policy.reclaim_at(at("2028-11-01T00:00:00Z")),
            at("2029-01-30T00:00:00Z")
        );
    }

    #[test]
    fn unknown_event_types_leave_the_view_unchanged_but_for_its_version() {
        let v = view();
        let after = LicenseView::fold(v.clone(), &envelope("SomethingNew", 2, json!({})))
            .expect("folds")
            .expect("view");
        assert_eq!(after.status, LicenseStatus::Active);
        assert_eq!(after.features, v.expect("view").features);
    }

    #[test]
    fn a_payload_off_contract_is_an_error() {
        let err = LicenseView::fold(None, &envelope(LICENSE_ISSUED, 1, json!({"x": 1})))
            .expect_err("bad payload");
        assert!(matches!(err, FoldError::BadPayload { .. }));
    }

    #[test]
    fn events_name_their_license() {
        let e = envelope(LICENSE_ISSUED, 1, issued());
        assert_eq!(license_of(&e), Uuid::parse_str(&e.aggregate_id).ok());
    }
}
