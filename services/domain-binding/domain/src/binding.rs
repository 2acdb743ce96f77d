//! The binding of one license to one registrable domain.

use chrono::{DateTime, Utc};
use contracts::domain::*;
use contracts::issuance::LicenseStatus;
use contracts::license_view::LicenseView;
use domain_kit::{CodedError, Refusal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::host::Registrable;
use super::BindingServices;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub license_id: Option<Uuid>,
    pub product: String,
    pub domain: Option<String>,
    pub changes_used: u32,
    pub bound_at: Option<DateTime<Utc>>,
    /// The license left service: nothing binds it again.
    pub released: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BindingCommand {
    Bind {
        license: LicenseView,
        host: Registrable,
    },
    Change {
        license: LicenseView,
        host: Registrable,
        accept_fee: bool,
    },
    Reset {
        reason: String,
    },
    Release {
        license_id: Uuid,
        reason: ReleaseReason,
    },
}

domain_kit::events! {
    pub enum BindingEvent {
        DomainBound => DOMAIN_BOUND,
        DomainChanged => DOMAIN_CHANGED,
        DomainChangeCharged => DOMAIN_CHANGE_CHARGED,
        DomainReset => DOMAIN_RESET,
        DomainReleased => DOMAIN_RELEASED,
    }
}

impl Refusal for BindingEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BindingError {
    #[error("no such license")]
    LicenseNotFound,
    #[error("the license is suspended")]
    Suspended,
    #[error("the license is revoked")]
    Revoked,
    #[error("the license has expired")]
    Expired,
    #[error("the license was reclaimed")]
    Reclaimed,
    #[error("the product of this license is not bound to domains")]
    NotRequired,
    #[error("the license is already bound to {0}; change it instead")]
    AlreadyBound(String),
    #[error("the license is not bound to a domain")]
    NotBound,
    #[error("the license is already bound to {0}")]
    SameDomain(String),
    #[error(
        "this change costs {amount_minor} (minor units) {currency}; resend with accept_fee: true"
    )]
    FeeNotAccepted { amount_minor: i64, currency: String },
    #[error("a reason is required (1-500 characters)")]
    Reason,
}

impl CodedError for BindingError {
    domain_kit::coded! {
        Self::LicenseNotFound => "LICENSE_NOT_FOUND", NotFound;
        Self::Suspended => "LICENSE_SUSPENDED", Conflict;
        Self::Revoked => "LICENSE_REVOKED", Conflict;
        Self::Expired => "LICENSE_EXPIRED", Conflict;
        Self::Reclaimed => "LICENSE_RECLAIMED", Conflict;
        Self::NotRequired => "DOMAIN_NOT_REQUIRED", Invalid;
        Self::AlreadyBound(_) => "DOMAIN_ALREADY_BOUND", Conflict;
        Self::NotBound => "NOT_BOUND", Conflict;
        Self::SameDomain(_) => "SAME_DOMAIN", Invalid;
        Self::FeeNotAccepted { .. } => "FEE_NOT_ACCEPTED", PaymentRequired;
        Self::Reason => "INVALID_REASON", Invalid;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::SameDomain(_) => Some("domain"),
            Self::FeeNotAccepted { .. } => Some("accept_fee"),
            Self::Reason => Some("reason"),
            _ => None,
        }
    }
}

/// Whether a license may be bound or rebound at `now`.
fn live(license: &LicenseView, now: DateTime<Utc>) -> Result<(), BindingError> {
    match license.status.at(license.expires_at, now) {
        LicenseStatus::Active => Ok(()),
        LicenseStatus::Suspended => Err(BindingError::Suspended),
        LicenseStatus::Revoked => Err(BindingError::Revoked),
        LicenseStatus::Expired => Err(BindingError::Expired),
        LicenseStatus::Reclaimed => Err(BindingError::Reclaimed),
        LicenseStatus::Deleted => Err(BindingError::LicenseNotFound),
    }
}

/// What the operator must do after a (re)binding: the product's own console
/// asks for both.
pub fn follow_up(domain: &str) -> Vec<String> {
    vec![
        format!(
            "Point the DNS A record of {domain} (or of the subdomain you serve) at your server; \
             a later change of the server's IP needs no new binding."
        ),
        format!("Set the product's callback address to a host under {domain}."),
    ]
}

impl Binding {
    fn bind(
        &self,
        license: &LicenseView,
        host: &Registrable,
        now: DateTime<Utc>,
    ) -> Result<Vec<BindingEvent>, BindingError> {
        if self.released {
            return Err(BindingError::Revoked);
        }
        live(license, now)?;
        if !license.policy.as_ref().is_some_and(|p| p.requires_domain) {
            return Err(BindingError::NotRequired);
        }
        if let Some(d) = &self.domain {
            return Err(BindingError::AlreadyBound(d.clone()));
        }
        Ok(vec![BindingEvent::DomainBound(DomainBound {
            license_id: license.id,
            product: license.product.clone(),
            domain: host.domain.clone(),
            requested_host: host.host.clone(),
            follow_up: follow_up(&host.domain),
            bound_at: now,
        })])
    }

    fn change(
        &self,
        license: &LicenseView,
        host: &Registrable,
        accept_fee: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<BindingEvent>, BindingError> {
        if self.released {
            return Err(BindingError::Revoked);
        }
        live(license, now)?;
        let from = self.domain.clone().ok_or(BindingError::NotBound)?;
        if from == host.domain {
            return Err(BindingError::SameDomain(from));
        }
        let policy = license.policy.clone().unwrap_or_default();
        let number = self.changes_used + 1;
        let free = number <= policy.free_domain_changes;
        if !free && !accept_fee {
            return Err(BindingError::FeeNotAccepted {
                amount_minor: policy.domain_change_fee_minor,
                currency: policy.fee_currency,
            });
        }
        let mut events = vec![BindingEvent::DomainChanged(DomainChanged {
            license_id: license.id,
            product: license.product.clone(),
            from_domain: from,
            domain: host.domain.clone(),
            requested_host: host.host.clone(),
            changes_used: number,
            free,
            follow_up: follow_up(&host.domain),
            changed_at: now,
        })];
        if !free {
            events.push(BindingEvent::DomainChangeCharged(DomainChangeCharged {
                license_id: license.id,
                change_number: number,
                amount_minor: policy.domain_change_fee_minor,
                currency: policy.fee_currency,
                charged_at: now,
            }));
        }
        Ok(events)
    }
}

domain_kit::aggregate!(
    Binding,
    BINDING_AGGREGATE,
    BindingCommand,
    BindingEvent,
    BindingError,
    BindingServices
);

impl Binding {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: BindingCommand,
        services: &BindingServices,
    ) -> Result<Vec<BindingEvent>, BindingError> {
        let now = services.clock.now();
        let events = match command {
            BindingCommand::Bind { license, host } => self.bind(&license, &host, now)?,
            BindingCommand::Change {
                license,
                host,
                accept_fee,
            } => self.change(&license, &host, accept_fee, now)?,
            BindingCommand::Reset { reason } => {
                let reason = reason.trim().to_string();
                if reason.is_empty() || reason.chars().count() > 500 {
                    return Err(BindingError::Reason);
                }
                let (Some(license_id), Some(domain)) = (self.license_id, self.domain.clone())
                else {
                    return Err(BindingError::NotBound);
                };
                vec![BindingEvent::DomainReset(DomainReset {
                    license_id,
                    domain,
                    reason,
                    reset_at: now,
                })]
            }
            BindingCommand::Release { license_id, reason } => match &self.domain {
                Some(domain) if !self.released => {
                    vec![BindingEvent::DomainReleased(DomainReleased {
                        license_id,
                        domain: domain.clone(),
                        reason,
                        released_at: now,
                    })]
                }
                _ => vec![],
            },
        };
        Ok(events)
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: BindingEvent) {
        match event {
            BindingEvent::DomainBound(e) => {
                self.license_id = Some(e.license_id);
                self.product = e.product;
                self.domain = Some(e.domain);
                self.bound_at = Some(e.bound_at);
            }
            BindingEvent::DomainChanged(e) => {
                self.domain = Some(e.domain);
                self.changes_used = e.changes_used;
                self.bound_at = Some(e.changed_at);
            }
            BindingEvent::DomainChangeCharged(_) => {}
            BindingEvent::DomainReset(_) => {
                self.domain = None;
                self.bound_at = None;
            }
            BindingEvent::DomainReleased(_) => {
                self.domain = None;
                self.released = true;
            }
        }
    }
}
