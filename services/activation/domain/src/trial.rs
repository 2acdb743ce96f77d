//! A trial: one per product and device, ever (a trial that failed, whose
//! license issuance refused, never ran and may be started again). Started
//! here, issued by issuance over Kafka, completed when its license
//! arrives, failed when issuance's outcome refuses it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::activation::*;
use contracts::issuance::LicenseKind;
use domain_kit::{CodedError, Refusal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ActivationServices;

/// A trial's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Waiting for issuance to issue the license.
    Pending,
    Active,
    Ended,
    /// Issuance refused its license; the device may start it again.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialState {
    pub trial_id: String,
    pub product: String,
    pub fingerprint: String,
    pub components: BTreeMap<String, String>,
    pub license_id: Uuid,
    pub issue_command_id: Uuid,
    pub features: Vec<String>,
    pub client_time: Option<DateTime<Utc>>,
    pub status: TrialStatus,
    pub activation_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    /// Issuance's refusal, when the trial failed.
    pub failure: Option<TrialFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialFailure {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub state: Option<TrialState>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrialCommand {
    Start {
        trial_id: String,
        product: String,
        fingerprint: String,
        components: BTreeMap<String, String>,
        features: Vec<String>,
        client_time: Option<DateTime<Utc>>,
        license_id: Uuid,
        issue_command_id: Uuid,
        /// Another trial of this product on a device that matches this one.
        similar_trial: Option<String>,
        /// The device holds a live temporary or formal seat of the product.
        holds_paid_seat: bool,
    },
    Complete {
        activation_id: Uuid,
    },
    End {
        superseded_by: Uuid,
    },
    /// Issuance refused `IssueLicense` number `issue_command_id`.
    Fail {
        issue_command_id: Uuid,
        code: String,
        message: String,
    },
}

domain_kit::events! {
    pub enum TrialEvent {
        TrialStarted => TRIAL_STARTED,
        TrialActivated => TRIAL_ACTIVATED,
        TrialEnded => TRIAL_ENDED,
        TrialFailed => TRIAL_FAILED,
    }
}

impl Refusal for TrialEvent {}

/// No mixing: on one device, a live seat of `held` kind and a new one of
/// `incoming` kind of the same product exclude each other when exactly one
/// of them is a trial. A trial is refused beside a paid seat
/// (`holds_paid_seat` of `TrialCommand::Start`); a paid seat ends the
/// device's trial seats of the product.
pub fn excludes(held: LicenseKind, incoming: LicenseKind) -> bool {
    (held == LicenseKind::Trial) != (incoming == LicenseKind::Trial)
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrialError {
    #[error("this device already had a trial of this product")]
    AlreadyUsed,
    #[error("a trial cannot be mixed with a temporary or formal license on one device")]
    NotMixable,
    #[error("no such trial")]
    NotFound,
}

impl CodedError for TrialError {
    domain_kit::coded! {
        Self::AlreadyUsed => "TRIAL_ALREADY_USED", Conflict;
        Self::NotMixable => "TRIAL_NOT_ALLOWED", Conflict;
        Self::NotFound => "TRIAL_NOT_FOUND", NotFound;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::AlreadyUsed | Self::NotMixable => Some("fingerprint"),
            Self::NotFound => None,
        }
    }
}

domain_kit::aggregate!(
    Trial,
    TRIAL_AGGREGATE,
    TrialCommand,
    TrialEvent,
    TrialError,
    ActivationServices
);

impl Trial {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: TrialCommand,
        services: &ActivationServices,
    ) -> Result<Vec<TrialEvent>, TrialError> {
        let now = services.clock.now();
        let event = match (command, &self.state) {
            (
                TrialCommand::Start {
                    trial_id,
                    product,
                    fingerprint,
                    components,
                    features,
                    client_time,
                    license_id,
                    issue_command_id,
                    similar_trial,
                    holds_paid_seat,
                },
                None,
            )
            | (
                TrialCommand::Start {
                    trial_id,
                    product,
                    fingerprint,
                    components,
                    features,
                    client_time,
                    license_id,
                    issue_command_id,
                    similar_trial,
                    holds_paid_seat,
                },
                Some(TrialState {
                    status: TrialStatus::Failed,
                    ..
                }),
            ) => {
                if similar_trial.is_some() {
                    return Err(TrialError::AlreadyUsed);
                }
                if holds_paid_seat {
                    return Err(TrialError::NotMixable);
                }
                TrialEvent::TrialStarted(TrialStarted {
                    trial_id,
                    product,
                    fingerprint,
                    components,
                    license_id,
                    issue_command_id,
                    features,
                    client_time,
                    started_at: now,
                })
            }
            (TrialCommand::Start { .. }, Some(_)) => return Err(TrialError::AlreadyUsed),
            (_, None) => return Err(TrialError::NotFound),
            (TrialCommand::Complete { activation_id }, Some(s)) => {
                if s.status != TrialStatus::Pending {
                    return Ok(vec![]);
                }
                TrialEvent::TrialActivated(TrialActivated {
                    trial_id: s.trial_id.clone(),
                    license_id: s.license_id,
                    activation_id,
                    activated_at: now,
                })
            }
            (TrialCommand::End { superseded_by }, Some(s)) => {
                if s.status == TrialStatus::Ended {
                    return Ok(vec![]);
                }
                TrialEvent::TrialEnded(TrialEnded {
                    trial_id: s.trial_id.clone(),
                    license_id: s.license_id,
                    superseded_by,
                    ended_at: now,
                })
            }
            (
                TrialCommand::Fail {
                    issue_command_id,
                    code,
                    message,
                },
                Some(s),
            ) => {
                // Only the outcome of the command this run sent counts: a
                // late outcome of an earlier run changes nothing.
                if s.status != TrialStatus::Pending || s.issue_command_id != issue_command_id {
                    return Ok(vec![]);
                }
                TrialEvent::TrialFailed(TrialFailed {
                    trial_id: s.trial_id.clone(),
                    license_id: s.license_id,
                    code,
                    message,
                    failed_at: now,
                })
            }
        };
        Ok(vec![event])
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: TrialEvent) {
        match event {
            TrialEvent::TrialStarted(e) => {
                self.state = Some(TrialState {
                    trial_id: e.trial_id,
                    product: e.product,
                    fingerprint: e.fingerprint,
                    components: e.components,
                    license_id: e.license_id,
                    issue_command_id: e.issue_command_id,
                    features: e.features,
                    client_time: e.client_time,
                    status: TrialStatus::Pending,
                    activation_id: None,
                    started_at: e.started_at,
                    failure: None,
                })
            }
            TrialEvent::TrialActivated(e) => {
                if let Some(s) = &mut self.state {
                    s.status = TrialStatus::Active;
                    s.activation_id = Some(e.activation_id);
                }
            }
            TrialEvent::TrialEnded(_) => {
                if let Some(s) = &mut self.state {
                    s.status = TrialStatus::Ended;
                }
            }
            TrialEvent::TrialFailed(e) => {
                if let Some(s) = &mut self.state {
                    s.status = TrialStatus::Failed;
                    s.failure = Some(TrialFailure {
                        code: e.code,
                        message: e.message,
                    });
                }
            }
        }
    }
}
