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
    /// What `callback_url` receives (empty with a URL: a client registered
    /// before webhooks, which receives nothing until its callback is set).
    #[serde(default)]
    pub callback_events: Vec<String>,
    /// The callback kept failing; nothing is sent until it is set again.
    #[serde(default)]
    pub callback_disabled: bool,
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
    /// None removes the callback.
    SetCallback(Option<SetClientCallback>),
    /// By the webhook sender: the callback failed `failures` times in a row.
    DisableCallback {
        failures: u32,
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
        ClientCallbackChanged => CLIENT_CALLBACK_CHANGED,
        ClientCallbackDisabled => CLIENT_CALLBACK_DISABLED,
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
    #[error("callback events: {0}")]
    InvalidCallbackEvents(String),
    #[error("the client has no callback (or it is disabled already)")]
    NoCallback,
    #[error("a reason is required (1-500 characters)")]
    InvalidReason,
}

impl CodedError for ClientError {
    domain_kit::coded! {
        Self::AlreadyExists => "CLIENT_EXISTS", Conflict;
        Self::NotFound => "CLIENT_NOT_FOUND", NotFound;
        Self::Revoked => "CLIENT_REVOKED", Conflict;
        Self::InvalidName => "INVALID_NAME", Invalid;
        Self::InvalidLicenses => "INVALID_LICENSES", Invalid;
        Self::UnknownLicenses(_) => "LICENSE_NOT_FOUND", NotFound;
        Self::AllowlistTooLong => "ALLOWLIST_TOO_LONG", Invalid;
        Self::InvalidAllowlistEntry(_) => "INVALID_ALLOWLIST_ENTRY", Invalid;
        Self::InvalidCallbackUrl => "INVALID_CALLBACK_URL", Invalid;
        Self::InvalidCallbackEvents(_) => "INVALID_CALLBACK_EVENTS", Invalid;
        Self::NoCallback => "NO_CALLBACK", Conflict;
        Self::InvalidReason => "INVALID_REASON", Invalid;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidName => Some("name"),
            Self::InvalidLicenses | Self::UnknownLicenses(_) => Some("licenses"),
            Self::AllowlistTooLong | Self::InvalidAllowlistEntry(_) => Some("allowlist"),
            Self::InvalidCallbackUrl => Some("callback_url"),
            Self::InvalidCallbackEvents(_) => Some("callback_events"),
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
    callback_events(
        spec.callback_url.as_deref(),
        spec.callback_events.as_deref(),
        &[],
    )?;
    Ok(())
}

/// The events of a callback set to `url` with `events` named or not.
fn callback_events(
    url: Option<&str>,
    events: Option<&[contracts::text::Text<64>]>,
    current: &[String],
) -> Result<Vec<String>, ClientError> {
    contracts::webhooks::callback_events(url, events, current).map_err(|e| match e {
        contracts::webhooks::CallbackError::Url => ClientError::InvalidCallbackUrl,
        contracts::webhooks::CallbackError::Events(why) => ClientError::InvalidCallbackEvents(why),
    })
}

domain_kit::aggregate!(
    Client,
    CLIENT_AGGREGATE,
    ClientCommand,
    ClientEvent,
    ClientError,
    GrantServices,
    fold = 2
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
                    callback_events: callback_events(
                        spec.callback_url.as_deref(),
                        spec.callback_events.as_deref(),
                        &[],
                    )?,
                    callback_url: spec.callback_url.map(String::from),
                    registered_at: now,
                })
            }
            ClientCommand::SetCallback(c) => {
                let s = self.state.as_ref().ok_or(ClientError::NotFound)?;
                if s.revoked {
                    return Err(ClientError::Revoked);
                }
                let (url, events) = match c {
                    Some(c) => (Some(c.callback_url), c.callback_events),
                    None if s.callback_url.is_none() => return Err(ClientError::NoCallback),
                    None => (None, None),
                };
                let events =
                    callback_events(url.as_deref(), events.as_deref(), &s.callback_events)?;
                ClientEvent::ClientCallbackChanged(ClientCallbackChanged {
                    client_id: s.client_id,
                    callback_url: url.map(String::from),
                    callback_events: events,
                    changed_at: now,
                })
            }
            ClientCommand::DisableCallback { failures } => {
                let s = self.state.as_ref().ok_or(ClientError::NotFound)?;
                let url = match (&s.callback_url, s.callback_disabled, s.revoked) {
                    (Some(url), false, false) => url.clone(),
                    _ => return Err(ClientError::NoCallback),
                };
                ClientEvent::ClientCallbackDisabled(ClientCallbackDisabled {
                    client_id: s.client_id,
                    callback_url: url,
                    failures,
                    disabled_at: now,
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
                    callback_events: e.callback_events,
                    callback_disabled: false,
                    registered_at: e.registered_at,
                    revoked: false,
                });
            }
            ClientEvent::ClientCallbackChanged(e) => {
                if let Some(s) = &mut self.state {
                    s.callback_url = e.callback_url;
                    s.callback_events = e.callback_events;
                    s.callback_disabled = false;
                }
            }
            ClientEvent::ClientCallbackDisabled(_) => {
                if let Some(s) = &mut self.state {
                    s.callback_disabled = true;
                }
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
