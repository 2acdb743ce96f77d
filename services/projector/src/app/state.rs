//! The license's state at an instant, folded from its events, and what
//! the activation service would have answered a request made then.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::activation::Fingerprint;
use contracts::issuance::LicenseStatus;
use contracts::text::Name;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{App, Error};
use crate::domain::decision::{self, Decision, Kind};
use crate::domain::LicenseState;
use crate::store::licenses as store;

#[derive(Debug, Serialize)]
pub struct AsOf {
    pub license_id: Uuid,
    pub as_of: DateTime<Utc>,
    /// False when the license had no event yet at `as_of`.
    pub exists: bool,
    pub events_folded: u64,
    /// The status in force at `as_of` (an active license past its expiry is
    /// expired, whether or not the scheduler had recorded it yet).
    pub effective_status: Option<LicenseStatus>,
    pub state: Option<LicenseState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum DecisionKind {
    Validation,
    Activation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub kind: DecisionKind,
    /// The instant the request was (or would have been) made.
    #[serde(with = "contracts::time::strict")]
    pub at: DateTime<Utc>,
    /// The device's components as the client reports them (hashed here as
    /// the activation service hashes them).
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    #[serde(default)]
    pub features: Vec<Name>,
    #[serde(default, with = "contracts::time::strict_option")]
    pub client_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct DecisionAnswer {
    pub license_id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    pub decision: Decision,
    pub effective_status: Option<LicenseStatus>,
    pub events_folded: u64,
    /// Activations of the license live at `at`.
    pub live_activations: u32,
}

const MAX_FEATURES: usize = 64;

fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        code,
        field,
        message: message.into(),
    }
}

/// Every event of the license recorded up to `at`, folded with the live
/// model's own function. Events come ordered by aggregate and sequence: the
/// fold depends only on each aggregate's order.
async fn state_at(
    pool: &PgPool,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<LicenseState>, Error> {
    let mut events = store::events_until(pool, id, at).await?;
    if events.is_empty() {
        return Ok(None);
    }
    // Sorted here rather than by the database: a long history would not
    // fit the server's sort memory and spill to disk.
    events.sort_unstable_by(|(c1, a), (c2, b)| {
        (c1, &a.aggregate_type, &a.aggregate_id, a.sequence).cmp(&(
            c2,
            &b.aggregate_type,
            &b.aggregate_id,
            b.sequence,
        ))
    });
    let mut state = LicenseState::new(id);
    for (context, e) in &events {
        // The live model dead-letters an event off its contract and goes
        // on without it; so does this fold.
        if let Err(err) = state.apply(context, e) {
            tracing::warn!(event_id = %e.event_id, error = %err, "event skipped by the as-of fold");
        }
    }
    Ok(Some(state))
}

async fn known(pool: &PgPool, id: Uuid) -> Result<(), Error> {
    if store::has_events(pool, id).await? {
        Ok(())
    } else {
        Err(Error::NotFound)
    }
}

impl App {
    /// The license folded from its events up to `at` (default: now).
    pub async fn as_of(&self, id: Uuid, at: Option<DateTime<Utc>>) -> Result<AsOf, Error> {
        let at = at.unwrap_or_else(|| self.clock.now());
        let state = state_at(&self.pool, id, at).await?;
        if state.is_none() {
            known(&self.pool, id).await?;
        }
        Ok(AsOf {
            license_id: id,
            as_of: at,
            exists: state.is_some(),
            events_folded: state.as_ref().map_or(0, |s| s.events),
            effective_status: state.as_ref().and_then(|s| s.status_at(at)),
            state,
        })
    }

    /// What the activation service would have answered `req` with, from
    /// the license's state at `req.at`.
    pub async fn decision(&self, id: Uuid, req: DecisionRequest) -> Result<DecisionAnswer, Error> {
        if req.features.len() > MAX_FEATURES || req.features.iter().any(|f| f.len() > 64) {
            return Err(invalid(
                "INVALID_FEATURES",
                "features",
                "at most 64 features of at most 64 characters",
            ));
        }
        let device: Option<BTreeMap<String, String>> = match &req.fingerprint {
            Some(f) => Some(
                f.components()
                    .map_err(|e| invalid("INVALID_FINGERPRINT", "fingerprint", e.to_string()))?,
            ),
            None => None,
        };
        let (kind, kind_name) = match req.kind {
            DecisionKind::Validation => (Kind::Validation, "validation"),
            DecisionKind::Activation => (Kind::Activation, "activation"),
        };
        if kind == Kind::Activation && device.is_none() {
            return Err(invalid(
                "FINGERPRINT_REQUIRED",
                "fingerprint",
                "an activation names the device's fingerprint",
            ));
        }
        let state = match state_at(&self.pool, id, req.at).await? {
            Some(s) => s,
            None => {
                known(&self.pool, id).await?;
                LicenseState::new(id)
            }
        };
        let decision = decision::reevaluate(
            &state,
            kind,
            device.as_ref(),
            &req.features,
            req.client_time,
            req.at,
            self.tolerance,
        );
        Ok(DecisionAnswer {
            license_id: id,
            at: req.at,
            kind: kind_name,
            decision,
            effective_status: state.status_at(req.at),
            events_folded: state.events,
            live_activations: state.live_activations,
        })
    }
}
