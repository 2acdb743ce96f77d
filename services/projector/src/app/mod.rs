//! Projector use cases behind the read API, over a license's events as the
//! projector holds them. Rows come from `store::licenses` and
//! `store::checkpoints`; the folds, chain checks and proofs are here. Each
//! use case answers an [`Error`] instead of its result; the API says how
//! each is answered over HTTP.
//!
//! This file holds `App`, which the use cases and the handlers share, and
//! the use cases' `Error`; the use cases are `impl App` blocks:
//! - `state`: the license's state at an instant (`as_of`) and the
//!   re-evaluation of a past request against it (`decision`);
//! - `chains`: the license's history with its hash-chain links checked
//!   (`history`) and the signed dispute bundle with the services'
//!   checkpoints proving it (`dispute_bundle`).

mod chains;
mod state;

pub use chains::{ChainSummary, History, HistoryEvent};
pub use state::{
    describe_metrics, AsOf, DecisionAnswer, DecisionKind, DecisionRequest, SnapshotCache,
};

use std::sync::Arc;

use service_kit::clock::Clock;
use service_kit::keys::Signer;

use crate::rebuild::Projections;
use crate::store::RowError;

/// What the use cases and the HTTP handlers share.
pub struct App {
    pub pool: sqlx::PgPool,
    pub signer: Arc<Signer>,
    pub projections: Arc<Projections>,
    pub clock: Arc<dyn Clock>,
    pub issuer: String,
    pub tolerance: chrono::Duration,
    pub export_timeout: std::time::Duration,
    /// Events an as-of fold folds between two snapshots it takes.
    pub snapshot_every: usize,
    /// Events younger than this are not snapshotted (they may still be
    /// joined by late ones).
    pub snapshot_min_age: chrono::Duration,
    pub snapshots: SnapshotCache,
    pub metrics: service_kit::Metrics,
}

impl AsRef<Signer> for App {
    fn as_ref(&self) -> &Signer {
        &self.signer
    }
}

/// What a use case answers instead of its result.
#[derive(Debug)]
pub enum Error {
    /// No event names the license.
    NotFound,
    /// The request breaks a rule: its code, the field at fault and why.
    Invalid {
        code: &'static str,
        field: &'static str,
        message: String,
    },
    /// The history contradicts itself or a signed checkpoint: what does
    /// not verify.
    Inconsistent(String),
    /// A read of the projector's tables failed.
    Unavailable(RowError),
    /// Signing the dispute bundle's checkpoint failed.
    Signing(signing::SigningError),
}

impl From<RowError> for Error {
    fn from(e: RowError) -> Self {
        Self::Unavailable(e)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(RowError::Db(e))
    }
}
