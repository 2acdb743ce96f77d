//! Signed checkpoints: a service's tree head over every event it ever
//! published, RFC 6962/9162 style. The compact JWS (ES256, `kid` of a key
//! the service published as `SigningKeyPublished`) is what is trusted; the
//! message around it only says what it is about.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The `typ` claim of a checkpoint.
pub const CHECKPOINT_TYP: &str = "licensing-checkpoint";

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
