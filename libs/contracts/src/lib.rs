//! The published language of the licensing backend: envelopes, payloads and
//! topic names shared by every service. Nothing here does IO.
//!
//! Event-type strings and versions are constants: once published they never
//! change; a new payload shape is a new version.

pub mod activation;
pub mod checkpoint;
pub mod decision;
pub mod domain;
pub mod envelope;
pub mod grants;
pub mod issuance;
pub mod license_key;
pub mod license_view;
pub mod net;
pub mod text;
pub mod time;
pub mod topics;
pub mod webhooks;

pub use envelope::{
    Actor, ActorKind, CommandEnvelope, CommandOutcome, ErrorKind, EventEnvelope, EventMetadata,
    OutcomeError, OutcomeStatus,
};
pub use topics::Topics;
