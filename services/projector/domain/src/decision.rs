//! Re-evaluating a past request: what a validation or an activation would
//! have answered at an instant, under the state folded up to it. The rules
//! are the activation service's own (`contracts::decision`).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use contracts::decision::{self, Admission, Check, LiveSeat, StatusRefusal};
use serde::Serialize;
use uuid::Uuid;

use super::state::{ActivationStatus, ActivationView, LicenseState};

impl LiveSeat for ActivationView {
    fn activation_id(&self) -> Uuid {
        self.activation_id
    }
    fn components(&self) -> &BTreeMap<String, String> {
        &self.components
    }
    fn last_client_time(&self) -> Option<DateTime<Utc>> {
        self.last_client_time
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Validation,
    Activation,
}

/// What the activation service would have answered.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// VALID or a validation code; ACTIVATED, ALREADY_ACTIVATED or an
    /// activation refusal code.
    pub code: String,
    pub allowed: bool,
    /// The seat the device holds (or held) under the license.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub activation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_features: Vec<String>,
}

/// `device` holds component digests. Clock rollback is judged against the
/// seat's own last reported time only (the activation service also looks
/// at the device under other licenses, which this license's history lacks).
pub fn reevaluate(
    state: &LicenseState,
    kind: Kind,
    device: Option<&BTreeMap<String, String>>,
    features: &[contracts::text::Name],
    client_time: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
    tolerance: Duration,
) -> Decision {
    let Some(license) = state.license.as_ref() else {
        return refused("NOT_FOUND");
    };
    let live: Vec<&ActivationView> = state
        .activations
        .values()
        .filter(|a| a.status == ActivationStatus::Live)
        .collect();
    match kind {
        Kind::Validation => {
            let check = Check {
                device,
                features,
                client_time,
            };
            let v = decision::validate(license, &live, &check, at, tolerance);
            Decision {
                allowed: v.valid,
                code: v.code,
                activation_id: v.activation_id,
                missing_features: v.missing_features,
            }
        }
        Kind::Activation => {
            let Some(device) = device else {
                return refused("FINGERPRINT_REQUIRED");
            };
            match decision::admit(license, &live, device, at) {
                Admission::Existing(id) => Decision {
                    code: "ALREADY_ACTIVATED".into(),
                    allowed: true,
                    activation_id: Some(id),
                    missing_features: vec![],
                },
                Admission::New => Decision {
                    code: "ACTIVATED".into(),
                    allowed: true,
                    activation_id: None,
                    missing_features: vec![],
                },
                Admission::TooManyActivations(_) => refused("TOO_MANY_ACTIVATIONS"),
                Admission::Refused(r) => refused(match r {
                    StatusRefusal::Suspended => "LICENSE_SUSPENDED",
                    StatusRefusal::Revoked => "LICENSE_REVOKED",
                    StatusRefusal::Expired => "LICENSE_EXPIRED",
                    StatusRefusal::Reclaimed => "LICENSE_RECLAIMED",
                    StatusRefusal::Deleted => "LICENSE_NOT_FOUND",
                }),
            }
        }
    }
}

fn refused(code: &str) -> Decision {
    Decision {
        code: code.into(),
        allowed: false,
        activation_id: None,
        missing_features: vec![],
    }
}
