//! The event store of every service: checked-in migrations, the command
//! handler that appends events and the command's outcome in one transaction,
//! reading the hash chain back (its rule and verifier are the `evidence`
//! crate's), and the outbox relay to Kafka.
//!
//! Domain types come from cqrs-es (`Aggregate`, `DomainEvent`), so aggregates
//! are tested with its `TestFramework`; the write path is ours because the
//! idempotency record must commit atomically with the events (see
//! docs/adr/0001-event-store-write-path.md).

pub mod chain;
pub mod db;
pub mod relay;
pub mod store;

pub use chain::{verify_chain, ChainProblem, ChainReport, StoredEvent};
pub use contracts::ErrorKind;
pub use db::{can_rewrite_history, connect, grant_serving, is_migrated, migrate};
pub use evidence::{bundle, merkle};
pub use store::{
    derived_id, request_digest, set_snapshot_every, snapshot_mismatches, CodedError,
    CommandContext, Executed, Folding, InlineProjection, Refusal, Refused, Repository, StoreError,
    DEFAULT_SNAPSHOT_EVERY, DIGEST_MISMATCH_CODE,
};
