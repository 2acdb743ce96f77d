//! The seats of one license: its device activations, the consistency
//! boundary for max activations, uninstall and migration.

use contracts::decision::{self, client_clock, Admission, ClientClock, StatusRefusal};
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use contracts::activation::*;
use contracts::issuance::{LicenseKind, LicenseStatus};
use contracts::license_view::LicenseView;
use domain_kit::{CodedError, ErrorKind, Refusal, Refused};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ActivationServices;

/// A seat's state: live, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeatStatus {
    Live,
    Uninstalled,
    Migrated,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seat {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub product: String,
    pub kind: LicenseKind,
    pub fingerprint: String,
    pub components: BTreeMap<String, String>,
    pub status: SeatStatus,
    pub activated_at: DateTime<Utc>,
    /// Sequence of the event that granted the seat.
    pub granted_at_sequence: u64,
    pub last_client_time: Option<DateTime<Utc>>,
    pub offline: bool,
    pub ended_at: Option<DateTime<Utc>>,
}

/// What stays of an ended seat: how it ended, which a command on it
/// answers with (`ACTIVATION_REVOKED`, not `ACTIVATION_NOT_FOUND`). The
/// whole seat stays in the `activations` table, which the routes read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EndedSeat {
    pub status: SeatStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seats {
    pub license_id: Option<Uuid>,
    /// The live seats.
    pub seats: BTreeMap<Uuid, Seat>,
    /// Every ended seat, by id.
    #[serde(default)]
    pub ended: BTreeMap<Uuid, EndedSeat>,
    pub migrations_used: u32,
    /// Nonces of the offline requests the license answered, whatever seat
    /// they were for (an uninstalled or migrated one included): a request
    /// file answers once.
    pub nonces: BTreeSet<String>,
    /// Events folded so far (the next event's sequence is this plus one).
    pub version: u64,
    /// Seats the current command changed: the inline index rewrites only
    /// these, not a license's whole history.
    #[serde(skip)]
    pub changed: std::collections::BTreeSet<Uuid>,
    /// The seats the current command ended, whole: for the inline index
    /// and the command's answer.
    #[serde(skip)]
    pub just_ended: BTreeMap<Uuid, Seat>,
}

/// A device as a request presents it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub fingerprint: String,
    pub components: BTreeMap<String, String>,
    pub client_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SeatsCommand {
    Activate {
        license: LicenseView,
        device: Device,
        /// The id a new seat gets.
        activation_id: Uuid,
        offline: bool,
        nonce: Option<String>,
    },
    Uninstall {
        license: LicenseView,
        activation_id: Uuid,
    },
    Migrate {
        license: LicenseView,
        activation_id: Uuid,
        device: Device,
        new_activation_id: Uuid,
    },
    /// The license left service: every live seat is revoked.
    RevokeAll {
        license_id: Uuid,
        reason: RevocationReason,
    },
    RevokeOne {
        activation_id: Uuid,
        reason: RevocationReason,
    },
}

domain_kit::events! {
    pub enum SeatsEvent {
        DeviceActivated => DEVICE_ACTIVATED,
        DeviceSeen => DEVICE_SEEN,
        OfflineResponseIssued => OFFLINE_RESPONSE_ISSUED,
        ClockRollbackDetected => CLOCK_ROLLBACK_DETECTED,
        ActivationUninstalled => ACTIVATION_UNINSTALLED,
        ActivationMigrated => ACTIVATION_MIGRATED,
        ActivationsRevoked => ACTIVATIONS_REVOKED,
    }
}

impl Refusal for SeatsEvent {
    fn refusal(&self) -> Option<Refused> {
        match self {
            Self::ClockRollbackDetected(e) => Some(Refused::new(
                CLOCK_ROLLBACK,
                ErrorKind::Conflict,
                format!(
                    "the device's clock reads {}, before {} it reported earlier",
                    e.client_time.to_rfc3339(),
                    e.last_seen.to_rfc3339()
                ),
            )),
            _ => None,
        }
    }
}

pub const CLOCK_ROLLBACK: &str = "CLOCK_ROLLBACK";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeatsError {
    #[error("no license has this key")]
    LicenseNotFound,
    #[error("the license is suspended")]
    Suspended,
    #[error("the license is revoked")]
    Revoked,
    #[error("the license has expired")]
    Expired,
    #[error("the license was reclaimed")]
    Reclaimed,
    #[error("the license allows {0} activations and all are in use")]
    TooManyActivations(u32),
    #[error("no activation with this id on this license")]
    ActivationNotFound,
    #[error("the activation is no longer live ({0:?})")]
    ActivationEnded(SeatStatus),
    #[error("only formal licenses whose policy allows it can be uninstalled")]
    UninstallNotAllowed,
    #[error("only formal licenses whose policy allows it can be migrated")]
    MigrationNotAllowed,
    #[error("the license's {0} migrations are used up")]
    MigrationLimitReached(u32),
    #[error("the new device is the device the activation is on")]
    SameDevice,
    #[error("the new device already holds a seat of this license")]
    DeviceAlreadyActivated,
    #[error("this product's policy requires the device's clock (client_time)")]
    ClientTimeRequired,
    #[error("this offline request was answered before: a request file answers once")]
    NonceReused,
}

impl CodedError for SeatsError {
    domain_kit::coded! {
        Self::LicenseNotFound => "LICENSE_NOT_FOUND", NotFound;
        Self::Suspended => "LICENSE_SUSPENDED", Conflict;
        Self::Revoked => "LICENSE_REVOKED", Conflict;
        Self::Expired => "LICENSE_EXPIRED", Conflict;
        Self::Reclaimed => "LICENSE_RECLAIMED", Conflict;
        Self::TooManyActivations(_) => "TOO_MANY_ACTIVATIONS", Conflict;
        Self::ActivationNotFound => "ACTIVATION_NOT_FOUND", NotFound;
        Self::ActivationEnded(_) => "ACTIVATION_REVOKED", Conflict;
        Self::UninstallNotAllowed => "UNINSTALL_NOT_ALLOWED", Invalid;
        Self::MigrationNotAllowed => "MIGRATION_NOT_ALLOWED", Invalid;
        Self::MigrationLimitReached(_) => "MIGRATION_LIMIT_REACHED", Conflict;
        Self::SameDevice => "SAME_DEVICE", Invalid;
        Self::DeviceAlreadyActivated => "DEVICE_ALREADY_ACTIVATED", Conflict;
        Self::ClientTimeRequired => "CLIENT_TIME_REQUIRED", Invalid;
        Self::NonceReused => "NONCE_REUSED", Conflict;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::SameDevice | Self::DeviceAlreadyActivated => Some("fingerprint"),
            Self::ClientTimeRequired => Some("client_time"),
            Self::NonceReused => Some("nonce"),
            _ => None,
        }
    }
}

impl From<StatusRefusal> for SeatsError {
    fn from(r: StatusRefusal) -> Self {
        match r {
            StatusRefusal::Suspended => Self::Suspended,
            StatusRefusal::Revoked => Self::Revoked,
            StatusRefusal::Expired => Self::Expired,
            StatusRefusal::Reclaimed => Self::Reclaimed,
            StatusRefusal::Deleted => Self::LicenseNotFound,
        }
    }
}

/// Whether a license can take new activations at `now`.
pub fn usable(license: &LicenseView, now: DateTime<Utc>) -> Result<(), SeatsError> {
    contracts::decision::status_refusal(license, now).map_or(Ok(()), |r| Err(r.into()))
}

pub use contracts::decision::policy;

impl Seats {
    pub fn live(&self) -> impl Iterator<Item = &Seat> {
        self.seats.values()
    }

    /// A seat the current command granted, changed or ended.
    pub fn touched(&self, activation_id: &Uuid) -> Option<&Seat> {
        self.seats
            .get(activation_id)
            .or_else(|| self.just_ended.get(activation_id))
    }

    /// The live seat of a device, if it holds one.
    pub fn seat_of(&self, components: &BTreeMap<String, String>, min: u32) -> Option<&Seat> {
        self.live()
            .find(|s| same_device(&s.components, components, min))
    }

    /// The device's clock under the shared rule: the time to record
    /// (capped), or the refusal — a rollback is an event, recorded. Only
    /// the time the device reported under this license counts: another
    /// customer who knows a device's components must neither learn when it
    /// last reported nor lock it out by reporting for it.
    fn clock(
        &self,
        license: &LicenseView,
        activation_id: Option<Uuid>,
        device: &Device,
        last_seen: Option<DateTime<Utc>>,
        services: &ActivationServices,
    ) -> Result<Result<Option<DateTime<Utc>>, SeatsEvent>, SeatsError> {
        let now = services.clock.now();
        Ok(Ok(
            match client_clock(
                device.client_time,
                last_seen,
                now,
                services.clock_tolerance,
                policy(license).require_client_time,
            ) {
                ClientClock::Unreported => None,
                ClientClock::Fine { record } => Some(record),
                ClientClock::Missing => return Err(SeatsError::ClientTimeRequired),
                ClientClock::RolledBack { last_seen } => {
                    return Ok(Err(SeatsEvent::ClockRollbackDetected(
                        ClockRollbackDetected {
                            license_id: license.id,
                            activation_id,
                            fingerprint: device.fingerprint.clone(),
                            client_time: device.client_time.unwrap_or(now),
                            last_seen,
                            tolerance_secs: u32::try_from(services.clock_tolerance.num_seconds())
                                .unwrap_or(0),
                            detected_at: now,
                        },
                    )))
                }
            },
        ))
    }

    fn activate(
        &self,
        license: &LicenseView,
        device: &Device,
        activation_id: Uuid,
        offline: bool,
        nonce: Option<String>,
        services: &ActivationServices,
    ) -> Result<Vec<SeatsEvent>, SeatsError> {
        let now = services.clock.now();
        // The projector's re-evaluation of past activations admits through
        // the same rule, so both answer alike for the same facts.
        let live: Vec<&Seat> = self.live().collect();
        let admission = decision::admit(license, &live, &device.components, now);
        let existing = match admission {
            Admission::Refused(r) => return Err(r.into()),
            Admission::Existing(id) => self.seats.get(&id),
            Admission::New | Admission::TooManyActivations(_) => None,
        };
        let client_time = match self.clock(
            license,
            existing.map(|s| s.activation_id),
            device,
            existing.and_then(|s| s.last_client_time),
            services,
        )? {
            Ok(t) => t,
            Err(rollback) => return Ok(vec![rollback]),
        };
        // An offline request spends its nonce, once per license.
        if offline && nonce.as_ref().is_some_and(|n| self.nonces.contains(n)) {
            return Err(SeatsError::NonceReused);
        }
        if let Some(seat) = existing {
            // The same device again: its seat, not a new one.
            if offline {
                let nonce = nonce.unwrap_or_default();
                return Ok(vec![SeatsEvent::OfflineResponseIssued(
                    OfflineResponseIssued {
                        activation_id: seat.activation_id,
                        license_id: license.id,
                        nonce,
                        client_time,
                        issued_at: now,
                    },
                )]);
            }
            return Ok(match client_time {
                Some(t) if seat.last_client_time.is_none_or(|last| t > last) => {
                    vec![SeatsEvent::DeviceSeen(DeviceSeen {
                        activation_id: seat.activation_id,
                        license_id: license.id,
                        client_time: t,
                        seen_at: now,
                    })]
                }
                _ => vec![],
            });
        }
        if let Admission::TooManyActivations(max) = admission {
            return Err(SeatsError::TooManyActivations(max));
        }
        Ok(vec![SeatsEvent::DeviceActivated(DeviceActivated {
            activation_id,
            license_id: license.id,
            product: license.product.clone(),
            kind: license.kind,
            fingerprint: device.fingerprint.clone(),
            components: device.components.clone(),
            client_time,
            offline,
            nonce,
            activated_at: now,
        })])
    }

    fn live_seat(&self, activation_id: Uuid) -> Result<&Seat, SeatsError> {
        if let Some(seat) = self.seats.get(&activation_id) {
            return Ok(seat);
        }
        Err(match self.ended.get(&activation_id) {
            Some(e) => SeatsError::ActivationEnded(e.status),
            None => SeatsError::ActivationNotFound,
        })
    }

    fn uninstall(
        &self,
        license: &LicenseView,
        activation_id: Uuid,
        services: &ActivationServices,
    ) -> Result<Vec<SeatsEvent>, SeatsError> {
        let now = services.clock.now();
        self.live_seat(activation_id)?;
        if license.kind != LicenseKind::Formal || !policy(license).allow_uninstall {
            return Err(SeatsError::UninstallNotAllowed);
        }
        // An expired license is deleted at issuance, never uninstalled.
        if matches!(
            license.status.at(license.expires_at, now),
            LicenseStatus::Expired | LicenseStatus::Reclaimed
        ) {
            return Err(SeatsError::Expired);
        }
        usable(license, now)?;
        Ok(vec![SeatsEvent::ActivationUninstalled(
            ActivationUninstalled {
                activation_id,
                license_id: license.id,
                uninstalled_at: now,
            },
        )])
    }

    fn migrate(
        &self,
        license: &LicenseView,
        activation_id: Uuid,
        device: &Device,
        new_activation_id: Uuid,
        services: &ActivationServices,
    ) -> Result<Vec<SeatsEvent>, SeatsError> {
        let now = services.clock.now();
        let seat = self.live_seat(activation_id)?;
        let policy = policy(license);
        if license.kind != LicenseKind::Formal || !policy.allow_migration {
            return Err(SeatsError::MigrationNotAllowed);
        }
        usable(license, now)?;
        if self.migrations_used >= policy.max_migrations {
            return Err(SeatsError::MigrationLimitReached(policy.max_migrations));
        }
        let min = policy.fingerprint_min_matches;
        if same_device(&seat.components, &device.components, min) {
            return Err(SeatsError::SameDevice);
        }
        if self.seat_of(&device.components, min).is_some() {
            return Err(SeatsError::DeviceAlreadyActivated);
        }
        let client_time = match self.clock(license, None, device, None, services)? {
            Ok(t) => t,
            Err(rollback) => return Ok(vec![rollback]),
        };
        Ok(vec![SeatsEvent::ActivationMigrated(ActivationMigrated {
            license_id: license.id,
            from_activation_id: activation_id,
            activation_id: new_activation_id,
            fingerprint: device.fingerprint.clone(),
            components: device.components.clone(),
            client_time,
            migrations_used: self.migrations_used + 1,
            migrated_at: now,
        })])
    }

    fn revoke(
        &self,
        license_id: Uuid,
        ids: Vec<Uuid>,
        reason: RevocationReason,
        services: &ActivationServices,
    ) -> Vec<SeatsEvent> {
        if ids.is_empty() {
            return vec![];
        }
        vec![SeatsEvent::ActivationsRevoked(ActivationsRevoked {
            license_id,
            activation_ids: ids,
            reason,
            revoked_at: services.clock.now(),
        })]
    }

    /// Moves live seats to the ended ones (an ended seat stays as it ended).
    fn end(&mut self, ids: &[Uuid], status: SeatStatus, at: DateTime<Utc>) {
        for id in ids {
            if let Some(mut s) = self.seats.remove(id) {
                s.status = status;
                s.ended_at = Some(at);
                self.ended.insert(*id, EndedSeat { status });
                self.changed.insert(*id);
                self.just_ended.insert(*id, s);
            }
        }
    }
}

// 2: ended seats moved out of `seats` into `ended`.
domain_kit::aggregate!(
    Seats,
    ACTIVATIONS_AGGREGATE,
    SeatsCommand,
    SeatsEvent,
    SeatsError,
    ActivationServices,
    fold = 2
);

impl Seats {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: SeatsCommand,
        services: &ActivationServices,
    ) -> Result<Vec<SeatsEvent>, SeatsError> {
        self.changed.clear();
        self.just_ended.clear();
        let events = match command {
            SeatsCommand::Activate {
                license,
                device,
                activation_id,
                offline,
                nonce,
            } => self.activate(&license, &device, activation_id, offline, nonce, services)?,
            SeatsCommand::Uninstall {
                license,
                activation_id,
            } => self.uninstall(&license, activation_id, services)?,
            SeatsCommand::Migrate {
                license,
                activation_id,
                device,
                new_activation_id,
            } => self.migrate(
                &license,
                activation_id,
                &device,
                new_activation_id,
                services,
            )?,
            SeatsCommand::RevokeAll { license_id, reason } => {
                let ids = self.live().map(|s| s.activation_id).collect();
                self.revoke(license_id, ids, reason, services)
            }
            SeatsCommand::RevokeOne {
                activation_id,
                reason,
            } => match (self.license_id, self.live_seat(activation_id)) {
                (Some(license_id), Ok(_)) => {
                    self.revoke(license_id, vec![activation_id], reason, services)
                }
                _ => vec![],
            },
        };
        Ok(events)
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: SeatsEvent) {
        self.version += 1;
        let sequence = self.version;
        match event {
            SeatsEvent::DeviceActivated(e) => {
                self.license_id = Some(e.license_id);
                self.changed.insert(e.activation_id);
                if let Some(n) = &e.nonce {
                    self.nonces.insert(n.clone());
                }
                self.seats.insert(
                    e.activation_id,
                    Seat {
                        activation_id: e.activation_id,
                        license_id: e.license_id,
                        product: e.product,
                        kind: e.kind,
                        fingerprint: e.fingerprint,
                        components: e.components,
                        status: SeatStatus::Live,
                        activated_at: e.activated_at,
                        granted_at_sequence: sequence,
                        last_client_time: e.client_time,
                        offline: e.offline,
                        ended_at: None,
                    },
                );
            }
            SeatsEvent::DeviceSeen(e) => {
                self.changed.insert(e.activation_id);
                if let Some(s) = self.seats.get_mut(&e.activation_id) {
                    s.last_client_time = Some(e.client_time);
                }
            }
            SeatsEvent::OfflineResponseIssued(e) => {
                self.changed.insert(e.activation_id);
                self.nonces.insert(e.nonce);
                if let Some(s) = self.seats.get_mut(&e.activation_id) {
                    if let Some(t) = e.client_time {
                        s.last_client_time = Some(s.last_client_time.map_or(t, |last| last.max(t)));
                    }
                }
            }
            SeatsEvent::ClockRollbackDetected(_) => {}
            SeatsEvent::ActivationUninstalled(e) => self.end(
                &[e.activation_id],
                SeatStatus::Uninstalled,
                e.uninstalled_at,
            ),
            SeatsEvent::ActivationMigrated(e) => {
                let from = self.seats.get(&e.from_activation_id).cloned();
                self.end(&[e.from_activation_id], SeatStatus::Migrated, e.migrated_at);
                self.migrations_used = e.migrations_used;
                self.changed.insert(e.activation_id);
                if let Some(from) = from {
                    self.seats.insert(
                        e.activation_id,
                        Seat {
                            activation_id: e.activation_id,
                            fingerprint: e.fingerprint,
                            components: e.components,
                            status: SeatStatus::Live,
                            activated_at: e.migrated_at,
                            granted_at_sequence: sequence,
                            last_client_time: e.client_time,
                            offline: false,
                            ended_at: None,
                            ..from
                        },
                    );
                }
            }
            SeatsEvent::ActivationsRevoked(e) => {
                self.end(&e.activation_ids, SeatStatus::Revoked, e.revoked_at)
            }
        }
    }
}
