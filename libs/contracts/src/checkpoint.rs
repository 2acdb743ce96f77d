//! Signed checkpoints: a service's tree head over every event it ever
//! published, RFC 6962/9162 style. The compact JWS (ES256, `kid` of a key
//! the service published as `SigningKeyPublished`) is what is trusted; the
//! message around it only says what it is about.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The `typ` claim of a checkpoint.
pub const CHECKPOINT_TYP: &str = "licensing-checkpoint";

/// The service whose checkpoints cover a context's events: the only one
/// whose signature is evidence for it.
pub fn service_of(context: &str) -> Option<&'static str> {
    match context {
        crate::topics::ISSUANCE => Some("issuance"),
        crate::topics::ACTIVATION => Some("activation"),
        crate::topics::DOMAIN => Some("domain-binding"),
        crate::topics::GRANTS => Some("grant-sync"),
        _ => None,
    }
}

/// The claims of a checkpoint (schema `files/CheckpointClaims.v1.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointClaims {
    /// The service that signed it.
    pub iss: String,
    /// Always [`CHECKPOINT_TYP`].
    pub typ: String,
    /// The context whose event store it covers (`issuance`, `activation`,
    /// `domain`, `grants`): the events of `<prefix>.<context>.events`.
    pub context: String,
    /// How many events the tree holds: leaves 0 .. tree_size - 1, in the
    /// order the relay publishes them.
    pub tree_size: u64,
    /// Hex RFC 6962 Merkle tree hash over the events' chain hashes.
    pub root_hash: String,
    /// Event-store global position of the last leaf (None when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_position: Option<i64>,
    /// JWT NumericDate of signing.
    pub iat: i64,
    pub signed_at: DateTime<Utc>,
}

impl CheckpointClaims {
    /// A checkpoint of a known context, signed by that context's service.
    pub fn is_of(&self, context: &str) -> bool {
        self.typ == CHECKPOINT_TYP
            && self.context == context
            && service_of(context) == Some(self.iss.as_str())
    }
}

/// A checkpoint as published on `<prefix>.checkpoints` (key = context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMessage {
    pub context: String,
    pub tree_size: u64,
    pub root_hash: String,
    /// The compact JWS whose claims are [`CheckpointClaims`]: the only part
    /// a reader trusts, once its signature verifies.
    pub checkpoint: String,
}
