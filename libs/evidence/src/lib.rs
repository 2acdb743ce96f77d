//! The evidence of the audit trail, checkable offline: the per-aggregate
//! hash chain, the Merkle tree the signed checkpoints commit to, and the
//! dispute bundle that carries both to an auditor. Pure: it reads exported
//! rows and keys, never the database (see "Audit trail" in docs/architecture.md).

pub mod bundle;
pub mod chain;
pub mod merkle;

pub use chain::{verify_chain, ChainProblem, ChainReport, StoredEvent};
