//! The feature leases of one license (one stream per license: the
//! consistency boundary of its floating seats). Heartbeats are not events:
//! they move a deadline in a plain table; only grants, releases, expiries
//! and revocations are recorded.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use contracts::grants::*;
use contracts::issuance::{BundleDef, LicenseStatus};
use domain_kit::{CodedError, Refusal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::GrantServices;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseStatus {
    Live,
    Released,
    Expired,
    Revoked,
}

impl LeaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub lease_id: Uuid,
    pub client_id: Uuid,
    pub feature: String,
    pub features: Vec<String>,
    pub quantity: u32,
    pub ttl_secs: u32,
    pub grace_secs: u32,
    pub granted_at: DateTime<Utc>,
    pub status: LeaseStatus,
    pub ended_at: Option<DateTime<Utc>>,
}

/// What an ended lease leaves in the state: enough to answer a late
/// release of it as ended rather than unknown. The whole lease stays in
/// the `leases` table (the inline index), not in every fold and snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedLease {
    pub client_id: Uuid,
    pub status: LeaseStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Leases {
    pub license_id: Option<Uuid>,
    /// The live leases.
    pub leases: BTreeMap<Uuid, Lease>,
    /// Every ended lease, by id.
    #[serde(default)]
    pub ended: BTreeMap<Uuid, EndedLease>,
    /// The newest license version known to end leases, and why: a
    /// checkout decided on a grant no newer than it is refused, whatever
    /// that (stale) grant says.
    pub ended_at_version: Option<(u64, LeaseEndReason)>,
    /// Leases the current command changed: the inline index rewrites only these.
    #[serde(skip)]
    pub changed: BTreeSet<Uuid>,
    /// The leases the current command ended, whole: for the inline index
    /// and the command's answer.
    #[serde(skip)]
    pub just_ended: BTreeMap<Uuid, Lease>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LeasesCommand {
    Checkout {
        lease_id: Uuid,
        client_id: Uuid,
        grant: Box<Grant>,
        /// The product's modules, for a checkout named by module.
        bundles: Vec<BundleDef>,
        feature: String,
        quantity: u32,
    },
    Release {
        lease_id: Uuid,
        client_id: Uuid,
    },
    /// The scheduler found no heartbeat before `deadline` plus grace.
    Expire {
        lease_id: Uuid,
        deadline: DateTime<Utc>,
    },
    /// End every live lease (of one client only, when given). With
    /// `license_version`, the license's version that ends them is recorded
    /// even when no lease is live.
    Revoke {
        license_id: Uuid,
        reason: LeaseEndReason,
        client_id: Option<Uuid>,
        license_version: Option<u64>,
    },
}

domain_kit::events! {
    pub enum LeasesEvent {
        LeaseGranted => LEASE_GRANTED,
        LeaseReleased => LEASE_RELEASED,
        LeaseExpired => LEASE_EXPIRED,
        LeasesRevoked => LEASES_REVOKED,
    }
}

impl Refusal for LeasesEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LeasesError {
    #[error("the license is suspended")]
    Suspended,
    #[error("the license is revoked")]
    Revoked,
    #[error("the license was reclaimed")]
    Reclaimed,
    #[error("the license is deleted")]
    Deleted,
    #[error("the license has expired: work already granted continues, new work is refused")]
    Expired,
    #[error("the license does not grant {0}")]
    NotGranted(String),
    #[error("module {module} needs features the license does not grant: {missing}")]
    FeaturesMissing { module: String, missing: String },
    #[error("quantity must be 1-10000")]
    InvalidQuantity,
    #[error("all {seats} seats of {feature} are in use ({used} leased)")]
    NoSeats {
        feature: String,
        seats: u32,
        used: u32,
    },
    #[error("no such lease")]
    LeaseNotFound,
    #[error("the lease is {0} already")]
    LeaseEnded(&'static str),
}

impl CodedError for LeasesError {
    domain_kit::coded! {
        Self::Suspended => "LICENSE_SUSPENDED", Conflict;
        Self::Revoked => "LICENSE_REVOKED", Conflict;
        Self::Reclaimed => "LICENSE_RECLAIMED", Conflict;
        Self::Deleted => "LICENSE_DELETED", Conflict;
        Self::Expired => "LICENSE_EXPIRED", Conflict;
        Self::NotGranted(_) => "FEATURE_NOT_GRANTED", Invalid;
        Self::FeaturesMissing { .. } => "FEATURES_MISSING", Invalid;
        Self::InvalidQuantity => "INVALID_QUANTITY", Invalid;
        Self::NoSeats { .. } => "NO_SEATS_AVAILABLE", Conflict;
        Self::LeaseNotFound => "LEASE_NOT_FOUND", NotFound;
        Self::LeaseEnded(_) => "LEASE_ENDED", Conflict;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::NotGranted(_) | Self::FeaturesMissing { .. } | Self::NoSeats { .. } => {
                Some("feature")
            }
            Self::InvalidQuantity => Some("quantity"),
            _ => None,
        }
    }
}

/// Whether new work may start under `grant` at `now`.
pub fn may_start(grant: &Grant, now: DateTime<Utc>) -> Result<(), LeasesError> {
    match grant.new_work_refusal(now) {
        None => Ok(()),
        Some(LicenseStatus::Expired) => Err(LeasesError::Expired),
        Some(LicenseStatus::Suspended) => Err(LeasesError::Suspended),
        Some(LicenseStatus::Reclaimed) => Err(LeasesError::Reclaimed),
        Some(LicenseStatus::Deleted) => Err(LeasesError::Deleted),
        Some(_) => Err(LeasesError::Revoked),
    }
}

fn ended_error(reason: LeaseEndReason) -> LeasesError {
    match reason {
        LeaseEndReason::LicenseSuspended => LeasesError::Suspended,
        LeaseEndReason::LicenseReclaimed => LeasesError::Reclaimed,
        LeaseEndReason::LicenseDeleted => LeasesError::Deleted,
        LeaseEndReason::LicenseRevoked | LeaseEndReason::ClientRevoked => LeasesError::Revoked,
    }
}

/// The features a checkout of `feature` needs: the feature itself, or every
/// feature a module of that code requires.
pub fn features_for(
    grant: &Grant,
    bundles: &[BundleDef],
    feature: &str,
) -> Result<Vec<String>, LeasesError> {
    if grant.features.iter().any(|f| f == feature) {
        return Ok(vec![feature.to_string()]);
    }
    let Some(bundle) = bundles.iter().find(|b| b.code == feature) else {
        return Err(LeasesError::NotGranted(feature.chars().take(64).collect()));
    };
    let missing: Vec<&str> = bundle
        .requires
        .iter()
        .filter(|f| !grant.features.contains(f))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(LeasesError::FeaturesMissing {
            module: bundle.code.clone(),
            missing: missing.join(", "),
        });
    }
    Ok(bundle.requires.clone())
}

impl Leases {
    /// Seats of `feature` held by live leases.
    pub fn used(&self, feature: &str) -> u32 {
        self.live()
            .filter(|l| l.features.iter().any(|f| f == feature))
            .map(|l| l.quantity)
            .sum()
    }

    pub fn live(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// A lease the current command granted, changed or ended.
    pub fn touched(&self, lease_id: &Uuid) -> Option<&Lease> {
        self.leases
            .get(lease_id)
            .or_else(|| self.just_ended.get(lease_id))
    }

    fn owned(&self, lease_id: Uuid, client_id: Uuid) -> Result<&Lease, LeasesError> {
        if let Some(lease) = self
            .leases
            .get(&lease_id)
            .filter(|l| l.client_id == client_id)
        {
            return Ok(lease);
        }
        match self.ended.get(&lease_id) {
            Some(e) if e.client_id == client_id => Err(LeasesError::LeaseEnded(e.status.as_str())),
            _ => Err(LeasesError::LeaseNotFound),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn checkout(
        &self,
        lease_id: Uuid,
        client_id: Uuid,
        grant: &Grant,
        bundles: &[BundleDef],
        feature: String,
        quantity: u32,
        now: DateTime<Utc>,
    ) -> Result<LeasesEvent, LeasesError> {
        if let Some((version, reason)) = self.ended_at_version {
            if grant.version <= version {
                return Err(ended_error(reason));
            }
        }
        may_start(grant, now)?;
        if quantity == 0 || quantity > MAX_QUANTITY {
            return Err(LeasesError::InvalidQuantity);
        }
        let features = features_for(grant, bundles, &feature)?;
        for f in &features {
            let seats = grant.seats.get(f).copied().unwrap_or(0);
            let used = self.used(f);
            if used + quantity > seats {
                return Err(LeasesError::NoSeats {
                    feature: f.clone(),
                    seats,
                    used,
                });
            }
        }
        Ok(LeasesEvent::LeaseGranted(LeaseGranted {
            lease_id,
            license_id: grant.license_id,
            client_id,
            feature,
            features,
            quantity,
            ttl_secs: grant.lease_ttl_secs.max(1),
            grace_secs: grant.lease_grace_secs,
            granted_at: now,
        }))
    }

    /// Moves a live lease to the ended ones (an ended lease stays as it
    /// ended).
    fn end(&mut self, id: Uuid, status: LeaseStatus, at: DateTime<Utc>) {
        if let Some(mut l) = self.leases.remove(&id) {
            l.status = status;
            l.ended_at = Some(at);
            self.ended.insert(
                id,
                EndedLease {
                    client_id: l.client_id,
                    status,
                },
            );
            self.changed.insert(id);
            self.just_ended.insert(id, l);
        }
    }
}

// 2: ended leases moved out of `leases` into `ended`.
domain_kit::aggregate!(
    Leases,
    LEASES_AGGREGATE,
    LeasesCommand,
    LeasesEvent,
    LeasesError,
    GrantServices,
    fold = 2
);

impl Leases {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: LeasesCommand,
        services: &GrantServices,
    ) -> Result<Vec<LeasesEvent>, LeasesError> {
        self.changed.clear();
        self.just_ended.clear();
        let now = services.clock.now();
        let events = match command {
            LeasesCommand::Checkout {
                lease_id,
                client_id,
                grant,
                bundles,
                feature,
                quantity,
            } => vec![self.checkout(
                lease_id, client_id, &grant, &bundles, feature, quantity, now,
            )?],
            LeasesCommand::Release {
                lease_id,
                client_id,
            } => {
                let lease = self.owned(lease_id, client_id)?;
                vec![LeasesEvent::LeaseReleased(LeaseReleased {
                    lease_id,
                    license_id: self.license_id.unwrap_or_default(),
                    client_id: lease.client_id,
                    released_at: now,
                })]
            }
            LeasesCommand::Expire { lease_id, deadline } => match self.leases.get(&lease_id) {
                Some(l) if l.status == LeaseStatus::Live => {
                    vec![LeasesEvent::LeaseExpired(LeaseExpired {
                        lease_id,
                        license_id: self.license_id.unwrap_or_default(),
                        client_id: l.client_id,
                        deadline,
                        expired_at: now,
                    })]
                }
                _ => vec![],
            },
            LeasesCommand::Revoke {
                license_id,
                reason,
                client_id,
                license_version,
            } => {
                let lease_ids: Vec<Uuid> = self
                    .live()
                    .filter(|l| client_id.is_none_or(|c| c == l.client_id))
                    .map(|l| l.lease_id)
                    .collect();
                let newer = license_version
                    .is_some_and(|v| self.ended_at_version.is_none_or(|(known, _)| v > known));
                if lease_ids.is_empty() && !newer {
                    vec![]
                } else {
                    vec![LeasesEvent::LeasesRevoked(LeasesRevoked {
                        license_id,
                        lease_ids,
                        reason,
                        license_version: license_version.filter(|_| newer),
                        revoked_at: now,
                    })]
                }
            }
        };
        Ok(events)
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: LeasesEvent) {
        match event {
            LeasesEvent::LeaseGranted(e) => {
                self.license_id = Some(e.license_id);
                self.changed.insert(e.lease_id);
                self.leases.insert(
                    e.lease_id,
                    Lease {
                        lease_id: e.lease_id,
                        client_id: e.client_id,
                        feature: e.feature,
                        features: e.features,
                        quantity: e.quantity,
                        ttl_secs: e.ttl_secs,
                        grace_secs: e.grace_secs,
                        granted_at: e.granted_at,
                        status: LeaseStatus::Live,
                        ended_at: None,
                    },
                );
            }
            LeasesEvent::LeaseReleased(e) => {
                self.end(e.lease_id, LeaseStatus::Released, e.released_at)
            }
            LeasesEvent::LeaseExpired(e) => {
                self.end(e.lease_id, LeaseStatus::Expired, e.expired_at)
            }
            LeasesEvent::LeasesRevoked(e) => {
                self.license_id = Some(e.license_id);
                if let Some(v) = e.license_version {
                    self.ended_at_version = Some((v, e.reason));
                }
                for id in e.lease_ids {
                    self.end(id, LeaseStatus::Revoked, e.revoked_at);
                }
            }
        }
    }
}
