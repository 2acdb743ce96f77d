//! One license as every context sees it, folded from their events. Pure: the
//! live read model, a rebuild and an as-of answer call the same `apply`.
//!
//! Each part is written by one aggregate only (the license by issuance's
//! `License`, activations by `LicenseActivations`, the domain by
//! `DomainBinding`, leases by `LicenseLeases`), and the other fields are
//! counts and maxima. So the result depends on each aggregate's order, which
//! Kafka keeps, and not on how the topics interleave, which it does not.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use contracts::activation::*;
use contracts::domain::*;
use contracts::grants::{
    LeaseExpired, LeaseGranted, LeaseReleased, LeasesRevoked, LEASES_AGGREGATE, LEASES_REVOKED,
    LEASE_EXPIRED, LEASE_GRANTED, LEASE_RELEASED,
};
use contracts::issuance::{LicenseStatus, LICENSE_AGGREGATE};
use contracts::license_view::{decode, FoldError, LicenseView, Payload};
use contracts::EventEnvelope;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Bumped whenever `apply` makes something else of an event, or the shape
/// of `LicenseState` (or of `LicenseView`, flattened into it) changes: a
/// snapshot of another version is not used. A field added with a serde
/// default would otherwise read old snapshots as if the fold had left it
/// at its default.
pub const FOLD_VERSION: i32 = 1;

/// A license as every context sees it: issuance's fields (those of
/// `LicenseView`) at the top level, beside the other contexts' parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LicenseState {
    pub license_id: Uuid,
    /// What issuance says, its fields at the top level (the first form of
    /// this read model); none until issuance's first event has arrived
    /// (another context's topic may deliver first).
    #[serde(flatten)]
    #[schema(value_type = LicenseView)]
    pub license: Option<LicenseView>,
    /// Features with the date they lapse (the license's expiry).
    pub feature_grants: Vec<FeatureGrant>,
    /// Every activation ever made, live or ended, by id.
    pub activations: BTreeMap<Uuid, ActivationView>,
    pub live_activations: u32,
    /// Null while no domain was ever bound.
    #[schema(required = true)]
    pub domain: Option<DomainView>,
    /// Live feature leases by id.
    pub leases: BTreeMap<Uuid, LeaseView>,
    /// Seats held by live leases.
    pub leases_in_use: u32,
    /// The last sequence folded per aggregate (`type/id`): the guard that
    /// makes a duplicated or replayed message change nothing.
    pub sequences: BTreeMap<String, u64>,
    /// The highest event-store position folded per context.
    pub positions: BTreeMap<String, i64>,
    pub events: u64,
    /// The latest `recorded_at` folded, whatever the context.
    #[schema(required = true)]
    pub last_event_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureGrant {
    pub code: String,
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActivationStatus {
    Live,
    Uninstalled,
    Migrated,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActivationView {
    pub activation_id: Uuid,
    pub fingerprint: String,
    /// Component digests: what a re-evaluated request is matched against.
    pub components: BTreeMap<String, String>,
    pub status: ActivationStatus,
    // Written by hand: a state lists thousands of activations.
    #[serde(serialize_with = "contracts::time::written")]
    pub activated_at: DateTime<Utc>,
    #[schema(required = true)]
    #[serde(serialize_with = "contracts::time::written_option")]
    pub ended_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    #[serde(serialize_with = "contracts::time::written_option")]
    pub last_client_time: Option<DateTime<Utc>>,
    pub offline: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainView {
    /// Null once reset or released.
    #[schema(required = true)]
    pub domain: Option<String>,
    pub bound_at: DateTime<Utc>,
    pub changes_used: u32,
    #[schema(required = true)]
    pub changed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseView {
    pub lease_id: Uuid,
    pub client_id: Uuid,
    pub feature: String,
    pub features: Vec<String>,
    pub quantity: u32,
    pub granted_at: DateTime<Utc>,
}

/// The activation ids an activation event names, whatever its type.
#[derive(Default, Deserialize)]
struct ActivationRefs {
    #[serde(default)]
    activation_id: Option<Uuid>,
    #[serde(default)]
    from_activation_id: Option<Uuid>,
    #[serde(default)]
    activation_ids: Vec<Uuid>,
}

/// The activations an event reads or changes. A license's activations are
/// stored apart from the rest of its state, one row each: the live model
/// loads only these before folding the event, so a license's thousandth
/// activation costs what its first did.
pub fn activations_of<P: Payload>(e: &EventEnvelope<P>) -> Vec<Uuid> {
    if e.aggregate_type != ACTIVATIONS_AGGREGATE {
        return Vec::new();
    }
    // One that does not decode is refused by `apply` too.
    let r: ActivationRefs = decode(e).unwrap_or_default();
    r.activation_ids
        .into_iter()
        .chain(r.activation_id)
        .chain(r.from_activation_id)
        .collect()
}

impl LicenseState {
    pub fn new(license_id: Uuid) -> Self {
        Self {
            license_id,
            license: None,
            feature_grants: Vec::new(),
            activations: BTreeMap::new(),
            live_activations: 0,
            domain: None,
            leases: BTreeMap::new(),
            leases_in_use: 0,
            sequences: BTreeMap::new(),
            positions: BTreeMap::new(),
            events: 0,
            last_event_at: None,
        }
    }

    /// Folds one event of `context` about this license. False when the
    /// event was already folded (its aggregate's sequence is not ahead).
    pub fn apply<P: Payload>(
        &mut self,
        context: &str,
        e: &EventEnvelope<P>,
    ) -> Result<bool, FoldError> {
        let key = format!("{}/{}", e.aggregate_type, e.aggregate_id);
        if self
            .sequences
            .get(&key)
            .is_some_and(|last| *last >= e.sequence)
        {
            return Ok(false);
        }
        match e.aggregate_type.as_str() {
            LICENSE_AGGREGATE => {
                // A payload that does not decode leaves the state as it was.
                self.license = LicenseView::fold(self.license.clone(), e)?;
                self.refresh_grants();
            }
            ACTIVATIONS_AGGREGATE => self.activation(e)?,
            BINDING_AGGREGATE => self.binding(e)?,
            LEASES_AGGREGATE => self.lease(e)?,
            // Trials, clients, upstream imports: audited, counted, no state.
            _ => {}
        }
        self.sequences.insert(key, e.sequence);
        match self.positions.get_mut(context) {
            Some(pos) => *pos = (*pos).max(e.global_position),
            None => {
                self.positions
                    .insert(context.to_string(), e.global_position);
            }
        }
        self.events += 1;
        self.last_event_at = self.last_event_at.max(Some(e.recorded_at));
        Ok(true)
    }

    /// Whether folding `events`, in the order given, onto this state folds
    /// each aggregate in its own order: every event's sequence above the
    /// last this state folded of its aggregate and above the previous event
    /// of its aggregate in the list. Since the fold depends only on each
    /// aggregate's order, the result then equals the fold of this state's
    /// events and these sorted by aggregate and sequence.
    pub fn continues_in_order<'a, P: 'a>(
        &self,
        events: impl IntoIterator<Item = &'a EventEnvelope<P>>,
    ) -> bool {
        let mut last: HashMap<(&str, &str), u64> = HashMap::new();
        for e in events {
            let key = (e.aggregate_type.as_str(), e.aggregate_id.as_str());
            let before = last.get(&key).copied().or_else(|| {
                self.sequences
                    .get(&format!("{}/{}", e.aggregate_type, e.aggregate_id))
                    .copied()
            });
            if before.is_some_and(|b| b >= e.sequence) {
                return false;
            }
            last.insert(key, e.sequence);
        }
        true
    }

    /// Recomputed per license event only: a fold over thousands of
    /// activation or lease events must stay linear.
    fn refresh_grants(&mut self) {
        self.feature_grants = self.license.as_ref().map_or_else(Vec::new, |l| {
            l.features
                .iter()
                .map(|code| FeatureGrant {
                    code: code.clone(),
                    expires_at: l.expires_at,
                })
                .collect()
        });
    }

    fn add_activation(&mut self, a: ActivationView) {
        if let Some(old) = self.activations.insert(a.activation_id, a) {
            if old.status == ActivationStatus::Live {
                self.live_activations = self.live_activations.saturating_sub(1);
            }
        }
        self.live_activations += 1;
    }

    fn add_lease(&mut self, l: LeaseView) {
        self.leases_in_use = self.leases_in_use.saturating_add(l.quantity);
        if let Some(old) = self.leases.insert(l.lease_id, l) {
            self.leases_in_use = self.leases_in_use.saturating_sub(old.quantity);
        }
    }

    fn remove_lease(&mut self, id: &Uuid) {
        if let Some(old) = self.leases.remove(id) {
            self.leases_in_use = self.leases_in_use.saturating_sub(old.quantity);
        }
    }

    fn activation<P: Payload>(&mut self, e: &EventEnvelope<P>) -> Result<(), FoldError> {
        match e.event_type.as_str() {
            DEVICE_ACTIVATED => {
                let p: DeviceActivated = decode(e)?;
                self.add_activation(ActivationView {
                    activation_id: p.activation_id,
                    fingerprint: p.fingerprint,
                    components: p.components,
                    status: ActivationStatus::Live,
                    activated_at: p.activated_at,
                    ended_at: None,
                    last_client_time: p.client_time,
                    offline: p.offline,
                });
            }
            DEVICE_SEEN => {
                let p: DeviceSeen = decode(e)?;
                if let Some(a) = self.activations.get_mut(&p.activation_id) {
                    a.last_client_time = a.last_client_time.max(Some(p.client_time));
                }
            }
            // The device's clock as an offline request reported it: the
            // activation service judges later reports against it too.
            OFFLINE_RESPONSE_ISSUED => {
                let p: OfflineResponseIssued = decode(e)?;
                if let Some(a) = self.activations.get_mut(&p.activation_id) {
                    a.last_client_time = a.last_client_time.max(p.client_time);
                }
            }
            ACTIVATION_UNINSTALLED => {
                let p: ActivationUninstalled = decode(e)?;
                self.end(
                    p.activation_id,
                    ActivationStatus::Uninstalled,
                    p.uninstalled_at,
                );
            }
            ACTIVATION_MIGRATED => {
                let p: ActivationMigrated = decode(e)?;
                self.end(
                    p.from_activation_id,
                    ActivationStatus::Migrated,
                    p.migrated_at,
                );
                self.add_activation(ActivationView {
                    activation_id: p.activation_id,
                    fingerprint: p.fingerprint,
                    components: p.components,
                    status: ActivationStatus::Live,
                    activated_at: p.migrated_at,
                    ended_at: None,
                    last_client_time: p.client_time,
                    offline: false,
                });
            }
            ACTIVATIONS_REVOKED => {
                let p: ActivationsRevoked = decode(e)?;
                for id in p.activation_ids {
                    self.end(id, ActivationStatus::Revoked, p.revoked_at);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self, id: Uuid, status: ActivationStatus, at: DateTime<Utc>) {
        if let Some(a) = self.activations.get_mut(&id) {
            if a.status == ActivationStatus::Live {
                a.status = status;
                a.ended_at = Some(at);
                self.live_activations = self.live_activations.saturating_sub(1);
            }
        }
    }

    fn binding<P: Payload>(&mut self, e: &EventEnvelope<P>) -> Result<(), FoldError> {
        match e.event_type.as_str() {
            DOMAIN_BOUND => {
                let p: DomainBound = decode(e)?;
                let changes_used = self.domain.as_ref().map_or(0, |d| d.changes_used);
                self.domain = Some(DomainView {
                    domain: Some(p.domain),
                    bound_at: p.bound_at,
                    changes_used,
                    changed_at: None,
                });
            }
            DOMAIN_CHANGED => {
                let p: DomainChanged = decode(e)?;
                let bound_at = self.domain.as_ref().map_or(p.changed_at, |d| d.bound_at);
                self.domain = Some(DomainView {
                    domain: Some(p.domain),
                    bound_at,
                    changes_used: p.changes_used,
                    changed_at: Some(p.changed_at),
                });
            }
            DOMAIN_RESET | DOMAIN_RELEASED => {
                if let Some(d) = self.domain.as_mut() {
                    d.domain = None;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn lease<P: Payload>(&mut self, e: &EventEnvelope<P>) -> Result<(), FoldError> {
        match e.event_type.as_str() {
            LEASE_GRANTED => {
                let p: LeaseGranted = decode(e)?;
                self.add_lease(LeaseView {
                    lease_id: p.lease_id,
                    client_id: p.client_id,
                    feature: p.feature,
                    features: p.features,
                    quantity: p.quantity,
                    granted_at: p.granted_at,
                });
            }
            LEASE_RELEASED => {
                let p: LeaseReleased = decode(e)?;
                self.remove_lease(&p.lease_id);
            }
            LEASE_EXPIRED => {
                let p: LeaseExpired = decode(e)?;
                self.remove_lease(&p.lease_id);
            }
            LEASES_REVOKED => {
                let p: LeasesRevoked = decode(e)?;
                for id in p.lease_ids {
                    self.remove_lease(&id);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn status(&self) -> Option<LicenseStatus> {
        self.license.as_ref().map(|l| l.status)
    }

    /// The status in force at `at`: an active license past its expiry is
    /// expired even before the scheduler's event says so.
    pub fn status_at(&self, at: DateTime<Utc>) -> Option<LicenseStatus> {
        let l = self.license.as_ref()?;
        Some(l.status.at(l.expires_at, at))
    }
}

#[cfg(test)]
mod tests {
    use contracts::{Actor, ActorKind};
    use serde_json::json;

    use super::*;

    const ID: &str = "0192f5c4-0000-7000-8000-000000000001";

    fn id() -> Uuid {
        Uuid::parse_str(ID).expect("uuid")
    }

    fn ev(aggregate: &str, sequence: u64, t: &str, payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: t.into(),
            event_version: "1".into(),
            aggregate_type: aggregate.into(),
            aggregate_id: ID.into(),
            sequence,
            global_position: sequence as i64 * 10,
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
            command_id: Uuid::now_v7(),
            correlation_id: "c".into(),
            causation_id: None,
            actor: Actor::new(ActorKind::Service, "t"),
            payload,
            prev_hash: "00".repeat(32),
            hash: "11".repeat(32),
        }
    }

    const ACT: &str = "0192f5c4-0000-7000-8000-0000000000a1";
    const LEASE: &str = "0192f5c4-0000-7000-8000-0000000000b1";

    /// Per context, in each aggregate's order.
    fn streams() -> Vec<(&'static str, Vec<EventEnvelope>)> {
        vec![
            (
                "issuance",
                vec![
                    ev(
                        LICENSE_AGGREGATE,
                        1,
                        "LicenseIssued",
                        json!({
                        "license_id": ID, "product": "p", "customer": "ACME", "kind": "formal",
                        "features": ["a", "b"], "issued_at": "2026-01-01T00:00:00Z",
                        "expires_at": "2027-01-01T00:00:00Z"}),
                    ),
                    ev(
                        LICENSE_AGGREGATE,
                        2,
                        "LicenseSuspended",
                        json!({
                        "license_id": ID, "reason": "r", "suspended_at": "2026-02-01T00:00:00Z"}),
                    ),
                ],
            ),
            (
                "activation",
                vec![
                    ev(
                        ACTIVATIONS_AGGREGATE,
                        1,
                        DEVICE_ACTIVATED,
                        json!({
                        "activation_id": ACT, "license_id": ID, "product": "p", "kind": "formal",
                        "fingerprint": "f", "components": {"disk": "d1"}, "offline": false,
                        "activated_at": "2026-01-02T00:00:00Z"}),
                    ),
                    ev(
                        ACTIVATIONS_AGGREGATE,
                        2,
                        ACTIVATION_UNINSTALLED,
                        json!({
                        "activation_id": ACT, "license_id": ID,
                        "uninstalled_at": "2026-01-03T00:00:00Z"}),
                    ),
                ],
            ),
            (
                "domain",
                vec![
                    ev(
                        BINDING_AGGREGATE,
                        1,
                        DOMAIN_BOUND,
                        json!({
                        "license_id": ID, "product": "p", "domain": "a.com",
                        "requested_host": "www.a.com", "follow_up": [],
                        "bound_at": "2026-01-02T00:00:00Z"}),
                    ),
                    ev(
                        BINDING_AGGREGATE,
                        2,
                        DOMAIN_CHANGED,
                        json!({
                        "license_id": ID, "product": "p", "from_domain": "a.com", "domain": "b.com",
                        "requested_host": "b.com", "changes_used": 1, "free": true,
                        "follow_up": [], "changed_at": "2026-01-04T00:00:00Z"}),
                    ),
                ],
            ),
            (
                "grants",
                vec![ev(
                    LEASES_AGGREGATE,
                    1,
                    LEASE_GRANTED,
                    json!({
                    "lease_id": LEASE, "license_id": ID, "client_id": ACT, "feature": "a",
                    "features": ["a"], "quantity": 2, "ttl_secs": 60, "grace_secs": 30,
                    "granted_at": "2026-01-02T00:00:00Z"}),
                )],
            ),
        ]
    }

    fn fold(order: impl Iterator<Item = (&'static str, EventEnvelope)>) -> LicenseState {
        let mut s = LicenseState::new(id());
        for (c, e) in order {
            s.apply(c, &e).expect("folds");
        }
        s
    }

    #[test]
    fn every_context_lands_in_its_part() {
        let s = fold(
            streams()
                .into_iter()
                .flat_map(|(c, es)| es.into_iter().map(move |e| (c, e))),
        );
        assert_eq!(s.status(), Some(LicenseStatus::Suspended));
        assert_eq!(s.feature_grants.len(), 2);
        assert_eq!(
            s.activations[&Uuid::parse_str(ACT).expect("id")].status,
            ActivationStatus::Uninstalled
        );
        assert_eq!(s.live_activations, 0);
        let d = s.domain.as_ref().expect("domain");
        assert_eq!((d.domain.as_deref(), d.changes_used), (Some("b.com"), 1));
        assert_eq!(s.leases_in_use, 2);
        assert_eq!(s.events, 7);
        assert_eq!(s.positions["issuance"], 20);
    }

    #[test]
    fn how_the_topics_interleave_does_not_change_the_result() {
        let all = streams();
        let forward = fold(
            all.iter()
                .flat_map(|(c, es)| es.iter().map(move |e| (*c, e.clone()))),
        );
        // Contexts in reverse, and each one's first event before any second.
        let mut interleaved = Vec::new();
        for round in 0..2 {
            for (c, es) in all.iter().rev() {
                if let Some(e) = es.get(round) {
                    interleaved.push((*c, e.clone()));
                }
            }
        }
        assert_eq!(fold(interleaved.into_iter()), forward);
    }

    #[test]
    fn a_snapshot_read_back_and_continued_in_order_equals_the_whole_fold() {
        let all: Vec<(&str, EventEnvelope)> = streams()
            .into_iter()
            .flat_map(|(c, es)| es.into_iter().map(move |e| (c, e)))
            .collect();
        let whole = fold(all.clone().into_iter());
        // The first event of each context, then the rest: a cut in time.
        let (head, tail): (Vec<_>, Vec<_>) =
            all.iter().cloned().partition(|(_, e)| e.sequence == 1);
        let snapshot = fold(head.into_iter());
        let mut state: LicenseState =
            serde_json::from_str(&serde_json::to_string(&snapshot).expect("json")).expect("reads");
        assert!(state.continues_in_order(tail.iter().map(|(_, e)| e)));
        for (c, e) in &tail {
            state.apply(c, e).expect("folds");
        }
        assert_eq!(state, whole);
    }

    #[test]
    fn an_aggregate_behind_the_snapshot_or_out_of_its_order_is_not_continued() {
        let all = streams();
        let issuance = &all[0].1;
        let mut snapshot = LicenseState::new(id());
        snapshot.apply("issuance", &issuance[0]).expect("folds");
        // Its own first event again, or the second before the first.
        assert!(!snapshot.continues_in_order([&issuance[0]]));
        let fresh = LicenseState::new(id());
        assert!(!fresh.continues_in_order([&issuance[1], &issuance[0]]));
        assert!(fresh.continues_in_order([&issuance[0], &all[1].1[0], &issuance[1]]));
    }

    #[test]
    fn counts_equal_a_recount_after_every_event_of_a_migration_and_leases() {
        const B: &str = "0192f5c4-0000-7000-8000-0000000000a2";
        const L2: &str = "0192f5c4-0000-7000-8000-0000000000b2";
        let activated = |seq, act: &str| {
            ev(
                ACTIVATIONS_AGGREGATE,
                seq,
                DEVICE_ACTIVATED,
                json!({
            "activation_id": act, "license_id": ID, "product": "p", "kind": "formal",
            "fingerprint": "f", "components": {"disk": "d1"}, "offline": false,
            "activated_at": "2026-01-02T00:00:00Z"}),
            )
        };
        let granted = |seq, lease: &str, q: u32| {
            ev(
                LEASES_AGGREGATE,
                seq,
                LEASE_GRANTED,
                json!({
            "lease_id": lease, "license_id": ID, "client_id": ACT, "feature": "a",
            "features": ["a"], "quantity": q, "ttl_secs": 60, "grace_secs": 30,
            "granted_at": "2026-01-02T00:00:00Z"}),
            )
        };
        let events = vec![
            ("activation", activated(1, ACT)),
            (
                "activation",
                ev(
                    ACTIVATIONS_AGGREGATE,
                    2,
                    ACTIVATION_MIGRATED,
                    json!({
                "license_id": ID, "from_activation_id": ACT, "activation_id": B,
                "fingerprint": "g", "components": {"disk": "d2"}, "migrations_used": 1,
                "migrated_at": "2026-01-03T00:00:00Z"}),
                ),
            ),
            ("grants", granted(1, LEASE, 2)),
            ("grants", granted(2, L2, 3)),
            (
                "activation",
                ev(
                    ACTIVATIONS_AGGREGATE,
                    3,
                    ACTIVATION_UNINSTALLED,
                    json!({
                "activation_id": B, "license_id": ID, "uninstalled_at": "2026-01-04T00:00:00Z"}),
                ),
            ),
            (
                "grants",
                ev(
                    LEASES_AGGREGATE,
                    3,
                    LEASE_RELEASED,
                    json!({
                "lease_id": LEASE, "license_id": ID, "client_id": ACT,
                "released_at": "2026-01-04T00:00:00Z"}),
                ),
            ),
            ("activation", activated(4, ACT)),
        ];
        let mut s = LicenseState::new(id());
        for (c, e) in &events {
            s.apply(c, e).expect("folds");
            let live = s
                .activations
                .values()
                .filter(|a| a.status == ActivationStatus::Live)
                .count();
            let seats: u32 = s.leases.values().map(|l| l.quantity).sum();
            assert_eq!(
                s.live_activations as usize, live,
                "after {} #{}",
                e.event_type, e.sequence
            );
            assert_eq!(
                s.leases_in_use, seats,
                "after {} #{}",
                e.event_type, e.sequence
            );
        }
        assert_eq!((s.live_activations, s.leases_in_use), (1, 3));
    }

    #[test]
    fn folding_with_only_the_activations_an_event_names_equals_the_whole_fold() {
        const B: &str = "0192f5c4-0000-7000-8000-0000000000a2";
        const C: &str = "0192f5c4-0000-7000-8000-0000000000a3";
        let act = |seq, t: &str, payload: serde_json::Value| {
            ("activation", ev(ACTIVATIONS_AGGREGATE, seq, t, payload))
        };
        let activated = |seq, a: &str| {
            act(
                seq,
                DEVICE_ACTIVATED,
                json!({"activation_id": a, "license_id": ID, "product": "p", "kind": "formal",
                       "fingerprint": "f", "components": {"disk": a}, "offline": false,
                       "activated_at": "2026-01-02T00:00:00Z"}),
            )
        };
        let mut events = streams()
            .into_iter()
            .flat_map(|(c, es)| es.into_iter().map(move |e| (c, e)))
            .filter(|(_, e)| e.aggregate_type != ACTIVATIONS_AGGREGATE)
            .collect::<Vec<_>>();
        events.extend([
            activated(1, ACT),
            activated(2, B),
            act(3, DEVICE_SEEN, json!({"activation_id": B, "license_id": ID,
                                       "client_time": "2026-01-05T00:00:00Z",
                                       "seen_at": "2026-01-05T00:00:00Z"})),
            act(4, ACTIVATION_MIGRATED, json!({
                "license_id": ID, "from_activation_id": ACT, "activation_id": C,
                "fingerprint": "g", "components": {"disk": "d2"}, "migrations_used": 1,
                "migrated_at": "2026-01-03T00:00:00Z"})),
            act(5, ACTIVATIONS_REVOKED, json!({"license_id": ID, "activation_ids": [B],
                                              "reason": "license_suspended", "revoked_at": "2026-01-06T00:00:00Z"})),
            activated(6, ACT),
            act(7, ACTIVATION_UNINSTALLED, json!({"activation_id": C, "license_id": ID,
                                                 "uninstalled_at": "2026-01-07T00:00:00Z"})),
            act(8, OFFLINE_RESPONSE_ISSUED, json!({"activation_id": ACT, "license_id": ID,
                                                  "nonce": "n", "client_time": "2026-01-08T00:00:00Z",
                                                  "issued_at": "2026-01-08T00:00:00Z"})),
        ]);
        let whole = fold(events.clone().into_iter());
        // As the live model keeps it: the state without its activations,
        // and the activations apart, loaded per event by name.
        let mut rest = LicenseState::new(id());
        let mut rows: BTreeMap<Uuid, ActivationView> = BTreeMap::new();
        for (c, e) in &events {
            rest.activations = activations_of(e)
                .iter()
                .filter_map(|a| rows.get(a).map(|v| (*a, v.clone())))
                .collect();
            rest.apply(c, e).expect("folds");
            rows.extend(std::mem::take(&mut rest.activations));
        }
        rest.activations = rows;
        assert_eq!(rest, whole);
        assert_eq!(whole.live_activations, 1);
        assert!(whole.activations[&Uuid::parse_str(B).expect("uuid")]
            .last_client_time
            .is_some());
    }

    #[test]
    fn a_payload_off_contract_changes_nothing() {
        let mut s = fold(
            streams()
                .into_iter()
                .take(1)
                .flat_map(|(c, es)| es.into_iter().take(1).map(move |e| (c, e))),
        );
        let before = s.clone();
        let bad = ev(
            LICENSE_AGGREGATE,
            2,
            "LicenseRenewed",
            json!({"license_id": ID}),
        );
        assert!(s.apply("issuance", &bad).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn a_replayed_event_changes_nothing() {
        let events: Vec<_> = streams()
            .into_iter()
            .flat_map(|(c, es)| es.into_iter().map(move |e| (c, e)))
            .collect();
        let mut s = fold(events.clone().into_iter());
        let before = s.clone();
        for (c, e) in &events {
            assert!(
                !s.apply(c, e).expect("folds"),
                "{} #{} applied twice",
                e.event_type,
                e.sequence
            );
        }
        assert_eq!(s, before);
    }

    #[test]
    fn the_state_reads_back_as_stored_with_or_without_its_license() {
        let empty = LicenseState::new(id());
        let back: LicenseState =
            serde_json::from_value(serde_json::to_value(&empty).expect("json")).expect("reads");
        assert_eq!(back, empty);
        let full = fold(
            streams()
                .into_iter()
                .flat_map(|(c, es)| es.into_iter().map(move |e| (c, e))),
        );
        let json = serde_json::to_value(&full).expect("json");
        // The license's own fields stay at the top level, as before.
        assert_eq!(json["customer"], "ACME");
        assert_eq!(json["features"], json!(["a", "b"]));
        let back: LicenseState = serde_json::from_value(json).expect("reads");
        assert_eq!(back, full);
    }

    #[test]
    fn an_active_license_past_its_expiry_is_expired_at_that_instant() {
        let s = fold(
            streams()
                .into_iter()
                .take(1)
                .flat_map(|(c, es)| es.into_iter().take(1).map(move |e| (c, e))),
        );
        let before = "2026-12-31T00:00:00Z".parse().expect("time");
        let after = "2027-01-02T00:00:00Z".parse().expect("time");
        assert_eq!(s.status_at(before), Some(LicenseStatus::Active));
        assert_eq!(s.status_at(after), Some(LicenseStatus::Expired));
    }
}
