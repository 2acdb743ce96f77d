//! The one error type of the crate.

use chrono::{DateTime, Utc};

/// Everything that can go wrong, by what the product should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a problem (`application/problem+json`):
    /// `code` is its stable code (`BAD_CREDENTIALS`, `TOO_MANY_ACTIVATIONS`,
    /// `LICENSE_SUSPENDED`, …), `field` the input it names, if any.
    #[error("server answered {status} {code}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Server {
        status: u16,
        code: String,
        field: Option<String>,
        detail: Option<String>,
    },
    /// The server could not be reached (connection refused, timeout, DNS).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server answered something this crate cannot read.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// A signed document does not verify under the pinned keys (altered,
    /// signed by an unknown key, or not a compact JWS at all).
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    /// A signed document of another kind: a receipt given as an activation
    /// file, a grant document of another client, …
    #[error("not {expected}")]
    WrongDocument { expected: &'static str },
    /// The document's `exp` (an activation file's license expiry, a grant
    /// document's `valid_until`) has passed.
    #[error("{document} expired at {at}")]
    Expired {
        document: &'static str,
        at: DateTime<Utc>,
    },
    /// The document's `nbf` is later than now (beyond the clock tolerance).
    #[error("{document} is not valid before {at}")]
    NotYetValid {
        document: &'static str,
        at: DateTime<Utc>,
    },
    /// `now` is earlier than the latest time seen before, beyond the
    /// tolerance: the local clock was set back.
    #[error("clock rollback: now {now} is before {high_water}, the latest time seen")]
    ClockRollback {
        now: DateTime<Utc>,
        high_water: DateTime<Utc>,
    },
    /// The activation file is of another product (one activation service
    /// signs the files of every product).
    #[error("the activation file is of product {found:?}, not {expected:?}")]
    WrongProduct { expected: String, found: String },
    /// The activation file is of another license than the one stored.
    #[error("the activation file is of license {found}, not {expected}")]
    WrongLicense {
        expected: uuid::Uuid,
        found: uuid::Uuid,
    },
    /// The activation file was issued to another device.
    #[error("the activation file belongs to another device")]
    WrongDevice,
    /// An offline response that answers another request (its nonce).
    #[error("the offline response does not answer the pending request")]
    NonceMismatch,
    /// The fingerprint cannot be read (see `contracts::activation::Fingerprint`).
    #[error("bad fingerprint: {0}")]
    Fingerprint(#[from] contracts::activation::FingerprintError),
    /// Nothing stored yet (no activation file, no grant document, no
    /// pending offline request), no keys pinned, or a record the offline
    /// checks rely on (the clock's high-water mark, the latest grant
    /// document's `iat`) is gone while documents are kept: an online
    /// activation or sync is needed.
    #[error("missing: {0}")]
    Missing(&'static str),
    /// The client is not configured for this call (no sync token, no
    /// grant-sync client id, …).
    #[error("not configured: {0}")]
    NotConfigured(&'static str),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The server's stable problem code, if this is a server problem.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
