//! The license's state at an instant, folded from its events, and what
//! the activation service would have answered a request made then.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use contracts::activation::Fingerprint;
use contracts::issuance::LicenseStatus;
use contracts::text::Name;
use contracts::EventEnvelope;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::PgPool;
use uuid::Uuid;

use super::{App, Error};
use crate::domain::decision::{self, Decision, Kind};
use crate::domain::state::FOLD_VERSION;
use crate::domain::LicenseState;
use crate::store::licenses as store;
use contracts::issuance::LICENSE_AGGREGATE;

/// A license's state at an instant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AsOf {
    pub license_id: Uuid,
    pub as_of: DateTime<Utc>,
    /// False when the license had no event yet at `as_of`.
    pub exists: bool,
    pub events_folded: u64,
    /// The status in force at `as_of` (an active license past its expiry is
    /// expired, whether or not the scheduler had recorded it yet); null
    /// before the license was issued.
    #[schema(required = true)]
    pub effective_status: Option<LicenseStatus>,
    /// The state folded up to `as_of`; null when `exists` is false.
    #[schema(required = true, value_type = Option<LicenseStateAt>)]
    pub state: Option<LicenseState>,
}

/// [`LicenseState`] at an instant, in an OpenAPI document: issuance's
/// fields may be absent. A schema only: answers serialise the state.
pub struct LicenseStateAt;

impl utoipa::PartialSchema for LicenseStateAt {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use crate::domain::LicenseView;
        use utoipa::openapi::schema::{AllOf, Schema};
        use utoipa::openapi::RefOr;
        let mut schema = <LicenseState as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::AllOf(AllOf {
            items, description, ..
        })) = &mut schema
        {
            // Issuance's part, its fields typed but none required (they
            // are all there, or none is).
            let mut issuance = <LicenseView as utoipa::PartialSchema>::schema();
            if let RefOr::T(Schema::Object(o)) = &mut issuance {
                o.required.clear();
                o.description = None;
            }
            for item in items.iter_mut() {
                if matches!(item, RefOr::Ref(r) if r.ref_location.ends_with("/LicenseView")) {
                    *item = issuance.clone();
                }
            }
            *description = Some(
                "A license's state at an instant: a `LicenseState` whose issuance fields \
                 (`LicenseView`'s) are all absent until an issuance event about the license \
                 was folded (a trial's license before issuance issued it, or one issuance \
                 refused)."
                    .into(),
            );
        }
        schema
    }
}

impl utoipa::ToSchema for LicenseStateAt {}

/// Which request to re-evaluate.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum DecisionKind {
    Validation,
    Activation,
}

/// Body of `POST /v1/licenses/{id}/decisions`: a request as a client made
/// it (or would have).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub kind: DecisionKind,
    /// The instant the request was (or would have been) made.
    #[serde(with = "contracts::time::strict")]
    pub at: DateTime<Utc>,
    /// The device's components as the client reports them (hashed here as
    /// the activation service hashes them); an activation needs them.
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    /// Features the request asks for.
    #[serde(default)]
    #[schema(value_type = Vec<contracts::text::Text<64>>, max_items = 64)]
    pub features: Vec<Name>,
    /// The device's clock as it reported it, for the rollback check.
    #[serde(default, with = "contracts::time::strict_option")]
    pub client_time: Option<DateTime<Utc>>,
}

/// A re-evaluated request and the state it was judged under.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DecisionAnswer {
    pub license_id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: DecisionKind,
    pub decision: Decision,
    /// The status in force at `at`; null before the license was issued.
    #[schema(required = true)]
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

type Event = (String, EventEnvelope<Box<RawValue>>);

/// The live model dead-letters an event off its contract and goes on
/// without it; so do the as-of folds.
fn fold_one(state: &mut LicenseState, (context, e): &Event) {
    if let Err(err) = state.apply(context, e) {
        tracing::warn!(event_id = %e.event_id, error = %err, "event skipped by the as-of fold");
    }
}

/// A snapshot an answer folds from: its instant, its event count, its state.
type Base = (DateTime<Utc>, i64, LicenseState);

/// A stored snapshot's state, as read.
enum Snapshot {
    Read(Arc<LicenseState>),
    Gone,
    Unreadable,
}

/// Most snapshots kept per license (the newest).
const KEPT_SNAPSHOTS: i64 = 64;

/// Whether a snapshot's state is one the fold could have made of this
/// license: its id, and its license part present once issuance's events
/// were folded (a flattened part that did not decode reads as absent).
fn plausible(state: &LicenseState, id: Uuid) -> bool {
    state.license_id == id
        && (state.license.is_some()
            || !state
                .sequences
                .keys()
                .any(|k| k.starts_with(&format!("{LICENSE_AGGREGATE}/"))))
}

impl App {
    /// Every event of the license recorded up to `at`, folded with the live
    /// model's own function: from the nearest earlier snapshot that still
    /// covers exactly the events recorded up to its instant, in recorded
    /// order, taking snapshots on the way. None when the license had no
    /// event yet.
    async fn state_at(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<LicenseState>, Error> {
        // A snapshot found stale or unreadable is dropped and the fold
        // starts from the first event, or from the next snapshot found
        // when the stale one did not read; after a few rounds the fold
        // starts from the first event.
        for round in 0..3 {
            let now = self.clock.now();
            let read = store::as_of_read(&self.pool, id, at, now, FOLD_VERSION, round < 2).await?;
            let base = match read.snapshot {
                None => None,
                Some(found) if !found.valid => {
                    // The events read are every one up to `at`.
                    let dropped = store::drop_snapshots(&self.pool, id, None).await?;
                    self.metrics.inc_counter(INVALIDATED, &[], dropped);
                    None
                }
                Some(found) => match self.snapshot_state(id, &found).await? {
                    Snapshot::Read(state) => Some((
                        found.upto,
                        found.events_covered,
                        Arc::unwrap_or_clone(state),
                    )),
                    // Replaced or dropped since the read: read again.
                    Snapshot::Gone => continue,
                    Snapshot::Unreadable => {
                        let dropped =
                            store::drop_snapshots(&self.pool, id, Some(found.upto)).await?;
                        self.metrics.inc_counter(INVALIDATED, &[], dropped);
                        continue;
                    }
                },
            };
            return self.fold(id, at, base, read.events).await;
        }
        Ok(None)
    }

    /// The state of the valid snapshot `found` (from memory when this
    /// version of its row was read lately).
    async fn snapshot_state(
        &self,
        id: Uuid,
        found: &store::SnapshotRef,
    ) -> Result<Snapshot, Error> {
        let key = (id, *found);
        if let Some(state) = self.snapshots.get(&key) {
            return Ok(Snapshot::Read(state));
        }
        let Some(text) = store::snapshot_state(&self.pool, id, found, FOLD_VERSION).await? else {
            return Ok(Snapshot::Gone);
        };
        match serde_json::from_str::<LicenseState>(&text) {
            Ok(state) if plausible(&state, id) => {
                let state = Arc::new(state);
                self.snapshots.put(key, state.clone(), text.len());
                Ok(Snapshot::Read(state))
            }
            _ => {
                tracing::warn!(license_id = %id, upto = %found.upto, "as-of snapshot unreadable; dropped");
                Ok(Snapshot::Unreadable)
            }
        }
    }

    /// Folds `events` (those recorded after the base's instant) onto the
    /// base, in recorded order, and stores snapshots on the way.
    async fn fold(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        base: Option<Base>,
        mut events: Vec<Event>,
    ) -> Result<Option<LicenseState>, Error> {
        let from = if base.is_some() { "snapshot" } else { "start" };
        let (mut state, covered) = match base {
            Some((_, covered, state)) => (state, covered),
            None if events.is_empty() => return Ok(None),
            None => (LicenseState::new(id), 0),
        };
        events.sort_unstable_by(|(c1, a), (c2, b)| {
            (
                a.recorded_at,
                c1,
                &a.aggregate_type,
                &a.aggregate_id,
                a.sequence,
            )
                .cmp(&(
                    b.recorded_at,
                    c2,
                    &b.aggregate_type,
                    &b.aggregate_id,
                    b.sequence,
                ))
        });
        if !state.continues_in_order(events.iter().map(|(_, e)| e)) {
            // An aggregate's events were recorded out of its order: fold
            // them all grouped by aggregate instead, and keep nothing.
            tracing::info!(license_id = %id, "as-of folded from the first event: events recorded out of their aggregate's order");
            return self.fold_grouped(id, at).await;
        }
        self.metrics.inc_counter(FOLDS, &[("from", from)], 1);
        self.metrics.inc_counter(FOLDED, &[], events.len() as u64);
        // Events of the last moments may still arrive late from another
        // context's topic, which would make a snapshot of them stale.
        let now = self.clock.now();
        let settled = now - self.snapshot_min_age;
        let mut cuts = Vec::new();
        let mut since_cut = 0;
        for (i, ev) in events.iter().enumerate() {
            fold_one(&mut state, ev);
            since_cut += 1;
            let folded = covered + i as i64 + 1;
            // Cuts grow apart with the history (an eighth of it at least),
            // so a license keeps a few dozen snapshots, not one per
            // `snapshot_every` events of a long life — and one more at the
            // answer's own last event, where the next answer about the
            // same moment starts; only where the next event was recorded
            // later: a snapshot covers every event up to its instant.
            let spacing = self
                .snapshot_every
                .max(usize::try_from(folded / 8).unwrap_or(usize::MAX));
            let last = i + 1 == events.len();
            let boundary = events
                .get(i + 1)
                .is_none_or(|(_, next)| next.recorded_at > ev.1.recorded_at);
            let due = since_cut >= spacing || (last && since_cut >= self.snapshot_every);
            if boundary && due && ev.1.recorded_at <= settled {
                since_cut = 0;
                match serde_json::to_string(&state) {
                    Ok(json) => cuts.push(store::Snapshot {
                        upto: ev.1.recorded_at,
                        events_covered: folded,
                        state: json,
                    }),
                    Err(e) => {
                        tracing::warn!(license_id = %id, error = %e, "as-of snapshot not serialised")
                    }
                }
            }
        }
        if !cuts.is_empty() {
            // Off the answer's path: a snapshot is only ever a shortcut.
            let pool = self.pool.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    store::save_snapshots(&pool, id, now, FOLD_VERSION, cuts, KEPT_SNAPSHOTS).await
                {
                    tracing::warn!(license_id = %id, error = %e, "as-of snapshots not stored");
                }
            });
        }
        Ok(Some(state))
    }

    /// Every event up to `at` sorted by aggregate and sequence and folded,
    /// without snapshots.
    async fn fold_grouped(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<LicenseState>, Error> {
        let mut events = store::events_until(&self.pool, id, at).await?;
        if events.is_empty() {
            return Ok(None);
        }
        // Sorted here rather than by the database: a long history would
        // not fit the server's sort memory and spill to disk.
        events.sort_unstable_by(|(c1, a), (c2, b)| {
            (c1, &a.aggregate_type, &a.aggregate_id, a.sequence).cmp(&(
                c2,
                &b.aggregate_type,
                &b.aggregate_id,
                b.sequence,
            ))
        });
        self.metrics.inc_counter(FOLDS, &[("from", "start")], 1);
        self.metrics.inc_counter(FOLDED, &[], events.len() as u64);
        let mut state = LicenseState::new(id);
        for ev in &events {
            fold_one(&mut state, ev);
        }
        Ok(Some(state))
    }
}

/// The snapshot states read lately, by license and snapshot row version: a
/// license asked about again folds from memory. Bounded by the bytes of
/// the text they were read from (a state can weigh megabytes), the least
/// used going first: a history's few dozen snapshots fit, so answers
/// rotating over its instants do not read and parse a snapshot each (with
/// 16 entries they did, for half the answers).
pub struct SnapshotCache(moka::sync::Cache<SnapshotKey, Cached>);

type SnapshotKey = (Uuid, store::SnapshotRef);

#[derive(Clone)]
struct Cached {
    state: Arc<LicenseState>,
    bytes: u32,
}

/// The stored text the cache holds states of, at most (about as much again
/// in memory).
const CACHED_SNAPSHOT_BYTES: u64 = 32 << 20;

impl Default for SnapshotCache {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(CACHED_SNAPSHOT_BYTES)
                .weigher(|_, c: &Cached| c.bytes)
                .build(),
        )
    }
}

impl SnapshotCache {
    fn get(&self, key: &SnapshotKey) -> Option<Arc<LicenseState>> {
        self.0.get(key).map(|c| c.state)
    }

    fn put(&self, key: SnapshotKey, state: Arc<LicenseState>, text_bytes: usize) {
        let bytes = u32::try_from(text_bytes).unwrap_or(u32::MAX);
        // Heavier than the whole budget: not kept.
        if u64::from(bytes) < CACHED_SNAPSHOT_BYTES {
            self.0.insert(key, Cached { state, bytes });
        }
    }
}

const FOLDS: &str = "as_of_folds_total";
const FOLDED: &str = "as_of_events_folded_total";
const INVALIDATED: &str = "as_of_snapshots_invalidated_total";

/// Describes the as-of metrics.
pub fn describe_metrics(metrics: &service_kit::Metrics) {
    metrics.describe(
        FOLDS,
        "As-of folds (state and decisions), by where they started: a snapshot or the first event.",
    );
    metrics.describe(FOLDED, "Events folded by as-of answers.");
    metrics.describe(
        INVALIDATED,
        "As-of snapshots dropped because an event recorded before their instant arrived after them.",
    );
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
        let state = self.state_at(id, at).await?;
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
        let kind = match req.kind {
            DecisionKind::Validation => Kind::Validation,
            DecisionKind::Activation => Kind::Activation,
        };
        if kind == Kind::Activation && device.is_none() {
            return Err(invalid(
                "FINGERPRINT_REQUIRED",
                "fingerprint",
                "an activation names the device's fingerprint",
            ));
        }
        let state = match self.state_at(id, req.at).await? {
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
            kind: req.kind,
            decision,
            effective_status: state.status_at(req.at),
            events_folded: state.events,
            live_activations: state.live_activations,
        })
    }
}
