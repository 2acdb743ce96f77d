use chrono::{DateTime, Utc};
use contracts::issuance::{LicenseIssued, LicenseKind, LICENSE_AGGREGATE, LICENSE_ISSUED};
use contracts::EventEnvelope;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A license as the read side shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseView {
    pub id: Uuid,
    pub product: String,
    pub edition: Option<String>,
    pub customer: String,
    pub kind: LicenseKind,
    pub features: Vec<String>,
    pub status: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
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
    pub fn fold(view: Option<Self>, e: &EventEnvelope) -> Result<Option<Self>, FoldError> {
        match e.event_type.as_str() {
            LICENSE_ISSUED => {
                let p: LicenseIssued = decode(e)?;
                Ok(Some(Self {
                    id: p.license_id,
                    product: p.product,
                    edition: p.edition,
                    customer: p.customer,
                    kind: p.kind,
                    features: p.features,
                    status: "active".into(),
                    issued_at: p.issued_at,
                    expires_at: p.expires_at,
                    version: e.sequence,
                    updated_at: e.recorded_at,
                }))
            }
            _ => Ok(view),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(e: &EventEnvelope) -> Result<T, FoldError> {
    serde_json::from_value(e.payload.clone()).map_err(|err| FoldError::BadPayload {
        event_type: e.event_type.clone(),
        version: e.event_version.clone(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use contracts::{Actor, ActorKind};
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

    fn issued() -> serde_json::Value {
        json!({
            "license_id": "0192f5c4-0000-7000-8000-000000000001",
            "product": "integration-platform",
            "customer": "ACME",
            "kind": "formal",
            "features": ["data-access"],
            "issued_at": "2026-11-01T00:00:00Z"
        })
    }

    #[test]
    fn license_issued_creates_an_active_view() {
        let v = LicenseView::fold(None, &envelope(LICENSE_ISSUED, 1, issued()))
            .expect("folds")
            .expect("view exists");
        assert_eq!(v.status, "active");
        assert_eq!(v.product, "integration-platform");
        assert_eq!(v.version, 1);
        assert_eq!(v.expires_at, None);
    }

    #[test]
    fn unknown_event_types_leave_the_view_unchanged() {
        let v = LicenseView::fold(None, &envelope(LICENSE_ISSUED, 1, issued())).expect("folds");
        let after =
            LicenseView::fold(v.clone(), &envelope("SomethingNew", 2, json!({}))).expect("folds");
        assert_eq!(v, after);
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
