//! A license client: a product installation or downstream server that
//! draws grants and leases from the licenses assigned to it.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use contracts::grants::*;
use contracts::net;
use domain_kit::{CodedError, ErrorKind, Refusal, Refused};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{valid_text, GrantServices};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub state: Option<ClientState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientState {
    pub client_id: Uuid,
    pub name: String,
    pub key_id: String,
    pub secret_digest: String,
    pub licenses: Vec<Uuid>,
    pub allowlist: Vec<String>,
    pub callback_url: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientCommand {
    Register {
        client_id: Uuid,
        key_id: String,
        secret_digest: String,
        spec: RegisterClient,
        /// Which of the requested licenses this server knows.
        known: BTreeSet<Uuid>,
    },
    Revoke {
        reason: String,
    },
    /// A reported time fell back beyond the tolerance: record the refusal.
    ClockRollback {
        reported: DateTime<Utc>,
        last: DateTime<Utc>,
        tolerance_secs: u32,
    },
}

domain_kit::events! {
    pub enum ClientEvent {
        ClientRegistered => CLIENT_REGISTERED,
        ClientRevoked => CLIENT_REVOKED,
        ClientClockRollbackDetected => CLIENT_CLOCK_ROLLBACK_DETECTED,
    }
}

impl Refusal for ClientEvent {
    fn refusal(&self) -> Option<Refused> {
        match self {
            Self::ClientClockRollbackDetected(e) => Some(Refused::new(
                "CLOCK_ROLLBACK",
                ErrorKind::Conflict,
                format!(
                    "the client's time {} is before {} it reported earlier",
                    e.reported_time.to_rfc3339(),
                    e.last_reported_time.to_rfc3339()
                ),
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("the client exists already")]
    AlreadyExists,
    #[error("no such client")]
    NotFound,
    #[error("the client is revoked")]
    Revoked,
    #[error("name must be 1-200 characters without control characters")]
    InvalidName,
    #[error("licenses must list 1-100 distinct license ids")]
    InvalidLicenses,
    #[error("unknown licenses: {0}")]
    UnknownLicenses(String),
    #[error("an allowlist holds at most 10 addresses or CIDRs")]
    AllowlistTooLong,
    #[error("{0:?} is not an IP address or CIDR block")]
    InvalidAllowlistEntry(String),
    #[error("callback_url must be an http(s) URL of at most 2048 characters")]
    InvalidCallbackUrl,
    #[error("a reason is required (1-500 characters)")]
    InvalidReason,
}

impl CodedError for ClientError {
    fn code(&self) -> &'static str {
        match self {
            Self::AlreadyExists => "CLIENT_EXISTS",
            Self::NotFound => "CLIENT_NOT_FOUND",
            Self::Revoked => "CLIENT_REVOKED",
            Self::InvalidName => "INVALID_NAME",
            Self::InvalidLicenses => "INVALID_LICENSES",
            Self::UnknownLicenses(_) => "LICENSE_NOT_FOUND",
            Self::AllowlistTooLong => "ALLOWLIST_TOO_LONG",
            Self::InvalidAllowlistEntry(_) => "INVALID_ALLOWLIST_ENTRY",
            Self::InvalidCallbackUrl => "INVALID_CALLBACK_URL",
            Self::InvalidReason => "INVALID_REASON",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound | Self::UnknownLicenses(_) => ErrorKind::NotFound,
            Self::AlreadyExists | Self::Revoked => ErrorKind::Conflict,
            _ => ErrorKind::Invalid,
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidName => Some("name"),
            Self::InvalidLicenses | Self::UnknownLicenses(_) => Some("licenses"),
            Self::AllowlistTooLong | Self::InvalidAllowlistEntry(_) => Some("allowlist"),
            Self::InvalidCallbackUrl => Some("callback_url"),
            Self::InvalidReason => Some("reason"),
            _ => None,
        }
    }
}

fn check_spec(spec: &RegisterClient, known: &BTreeSet<Uuid>) -> Result<(), ClientError> {
    if !valid_text(&spec.name, 200) {
        return Err(ClientError::InvalidName);
    }
    let distinct: BTreeSet<&Uuid> = spec.licenses.iter().collect();
    if spec.licenses.is_empty()
        || spec.licenses.len() > MAX_CLIENT_LICENSES
        || distinct.len() != spec.licenses.len()
    {
        return Err(ClientError::InvalidLicenses);
    }
    let unknown: Vec<String> = spec
        .licenses
        .iter()
        .filter(|l| !known.contains(l))
        .map(Uuid::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(ClientError::UnknownLicenses(unknown.join(", ")));
    }
    net::check_allowlist(&spec.allowlist).map_err(|e| match e {
        net::AllowlistError::TooLong => ClientError::AllowlistTooLong,
        net::AllowlistError::Invalid(bad) => ClientError::InvalidAllowlistEntry(bad),
    })?;
    if spec
        .callback_url
        .as_deref()
        .is_some_and(|u| !net::is_http_url(u))
    {
        return Err(ClientError::InvalidCallbackUrl);
    }
    Ok(())
}

domain_kit::aggregate!(
    Client,
    CLIENT_AGGREGATE,
    ClientCommand,
    ClientEvent,
    ClientError,
    GrantServices
);

impl Client {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: ClientCommand,
        services: &GrantServices,
    ) -> Result<Vec<ClientEvent>, ClientError> {
        let now = services.clock.now();
        let event = match command {
            ClientCommand::Register {
                client_id,
                key_id,
                secret_digest,
                spec,
                known,
            } => {
                if self.state.is_some() {
                    return Err(ClientError::AlreadyExists);
                }
                check_spec(&spec, &known)?;
                ClientEvent::ClientRegistered(ClientRegistered {
                    client_id,
                    name: spec.name.trim().to_string(),
                    key_id,
                    secret_digest,
                    licenses: spec.licenses,
                    allowlist: contracts::text::strings(spec.allowlist),
                    callback_url: spec.callback_url.map(String::from),
                    registered_at: now,
                })
            }
            ClientCommand::Revoke { reason } => {
                let s = self.state.as_ref().ok_or(ClientError::NotFound)?;
                if s.revoked {
                    return Err(ClientError::Revoked);
                }
                if !valid_text(&reason, 500) {
                    return Err(ClientError::InvalidReason);
                }
                ClientEvent::ClientRevoked(ClientRevoked {
                    client_id: s.client_id,
                    key_id: s.key_id.clone(),
                    reason: reason.trim().to_string(),
                    revoked_at: now,
                })
            }
            ClientCommand::ClockRollback {
                reported,
                last,
                tolerance_secs,
            } => {
                let s = self.state.as_ref().ok_or(ClientError::NotFound)?;
                ClientEvent::ClientClockRollbackDetected(ClientClockRollbackDetected {
                    client_id: s.client_id,
                    reported_time: reported,
                    last_reported_time: last,
                    tolerance_secs,
                    detected_at: now,
                })
            }
        };
        Ok(vec![event])
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::ClientRegistered(e) => {
                self.state = Some(ClientState {
                    client_id: e.client_id,
                    name: e.name,
                    key_id: e.key_id,
                    secret_digest: e.secret_digest,
                    licenses: e.licenses,
                    allowlist: e.allowlist,
                    callback_url: e.callback_url,
                    registered_at: e.registered_at,
                    revoked: false,
                });
            }
            ClientEvent::ClientRevoked(_) => {
                if let Some(s) = &mut self.state {
                    s.revoked = true;
                }
            }
            ClientEvent::ClientClockRollbackDetected(_) => {}
        }
    }
}
