//! `loadgen events` (bench/projector.sh): a synthetic but contract-valid
//! history of licenses, written as the four contexts' event topics would
//! carry it, for Kafka's console producer to load.
//!
//! Output: `--out-dir DIR` gets `issuance.tsv`, `activation.tsv`,
//! `domain.tsv` and `grants.tsv`, one event a line: `<key>\t<json>`, the
//! key being the aggregate id (the license id for every aggregate here, as
//! the services key them) and the JSON a `contracts::EventEnvelope` whose
//! payload is one of the contracts' event structs, serialised by serde.
//!
//! The history: `--licenses N` licenses (default 100,000), each issued
//! (`LicenseIssued`, sequence 1 of `License/<id>`) and then given a share of
//! `--events` (default 1,000,000 in all) drawn from a mix of device
//! activations and uninstalls, domain bindings and changes, lease grants,
//! releases and expiries, renewals, and suspensions (with the activation
//! and grant-sync revocations they cause) followed by reinstatements; plus
//! one "hot" license of `--hot-license-events` events (default 10,000:
//! renewals moving its expiry a day forward each, activate/uninstall and
//! grant/release pairs), spread through the whole history. Every
//! aggregate's sequence is contiguous from 1 and its hashes chained as the
//! event store chains them (`SHA-256(prev_hash ‖ canonical bytes)`, over the
//! payload's and metadata's JSON text as published); `global_position`
//! rises per context; events are `--step-ms` (default 1000) apart from
//! `--base` (default 2026-01-01T00:00:00Z), `recorded_at` = `occurred_at`,
//! and event ids are UUIDv7 of that instant, so id order is time order.
//! Deterministic for a given `--seed` (default 1).
//!
//! Also: `--hot-file FILE` gets `name=value` lines about the hot license
//! (its id; `mid_as_of`, an instant between its middle event and the next
//! event of the history, with its expiry, status and license version then;
//! `end_as_of`, after the last event, likewise), `--ids-out FILE` a random
//! sample of `--ids-count` (default 1000) ordinary license ids, one a line.
//! `hot_license=<id>` goes to stderr; the summary (counts per context and
//! event type, bytes, seconds) to stdout.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration as Span, SecondsFormat, Utc};
use contracts::activation::{
    ActivationUninstalled, ActivationsRevoked, DeviceActivated, RevocationReason,
    ACTIVATIONS_AGGREGATE, ACTIVATIONS_REVOKED, ACTIVATION_UNINSTALLED, DEVICE_ACTIVATED,
};
use contracts::domain::{
    DomainBound, DomainChanged, BINDING_AGGREGATE, DOMAIN_BOUND, DOMAIN_CHANGED,
};
use contracts::grants::{
    LeaseEndReason, LeaseExpired, LeaseGranted, LeaseReleased, LeasesRevoked, LEASES_AGGREGATE,
    LEASES_REVOKED, LEASE_EXPIRED, LEASE_GRANTED, LEASE_RELEASED,
};
use contracts::issuance::{
    LicenseIssued, LicenseKind, LicenseReinstated, LicenseRenewed, LicenseStatus, LicenseSuspended,
    Policy, LICENSE_AGGREGATE, LICENSE_ISSUED, LICENSE_REINSTATED, LICENSE_RENEWED,
    LICENSE_SUSPENDED, V1,
};
use contracts::topics::{ACTIVATION, DOMAIN, GRANTS, ISSUANCE};
use contracts::{Actor, ActorKind, EventEnvelope, EventMetadata};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Opts;

/// The contexts in the order of their files.
pub const CONTEXTS: [&str; 4] = [ISSUANCE, ACTIVATION, DOMAIN, GRANTS];
const ISS: usize = 0;
const ACT: usize = 1;
const DOM: usize = 2;
const GRA: usize = 3;

const PRODUCT: &str = "integration-platform";
const FEATURES: [&str; 2] = ["data-access", "datasource-mgmt"];

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub licenses: u64,
    pub events: u64,
    pub hot_events: u64,
    pub ids_count: usize,
    pub seed: u64,
    pub base: DateTime<Utc>,
    pub step: Span,
}

/// The hot license and the instants the bench asks its state at.
#[derive(Debug, Clone, Default)]
pub struct Hot {
    pub id: Uuid,
    pub events: u64,
    /// Between its middle event and the next event of the history.
    pub mid_as_of: Option<DateTime<Utc>>,
    pub mid: Option<Snapshot>,
    /// After the last event of the history.
    pub end_as_of: Option<DateTime<Utc>>,
    pub end: Option<Snapshot>,
}

/// A license's state as its issuance events left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub expires_at: DateTime<Utc>,
    pub status: LicenseStatus,
    /// Sequence of its last `License` event (the view's `version`).
    pub version: u64,
    /// Its events so far, every aggregate.
    pub events: u64,
}

/// What was generated.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub per_context: [u64; 4],
    pub bytes: [u64; 4],
    pub event_types: BTreeMap<&'static str, u64>,
    pub hot: Hot,
    /// A random sample of ordinary license ids.
    pub sample: Vec<Uuid>,
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
}

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        out
    }
    fn uuid_v4(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.bytes()).into_uuid()
    }
    fn hex32(&mut self) -> String {
        hex::encode(self.bytes::<32>())
    }
}

/// One aggregate's stream: its last sequence and hash.
#[derive(Default)]
struct Stream {
    seq: u64,
    hash: Option<[u8; 32]>,
}

/// What the event store's hash covers after `prev_hash`: the fields of
/// `eventstore::chain::StoredEvent::canonical_bytes`, joined by newlines,
/// the payload and metadata as their JSON text (the text published, so a
/// reader of the topic can re-hash the event).
pub struct Canonical<'a> {
    pub event_id: Uuid,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: u64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub recorded_at: DateTime<Utc>,
    pub payload: &'a [u8],
    pub metadata: &'a [u8],
}

/// `SHA-256(prev_hash ‖ canonical bytes)`, as the event store chains events.
pub fn chain_hash(prev_hash: &[u8; 32], c: &Canonical<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    let mut id = Uuid::encode_buffer();
    let sequence = c.sequence.to_string();
    let micros = c.recorded_at.timestamp_micros().to_string();
    let fields: [&[u8]; 9] = [
        c.event_id.hyphenated().encode_lower(&mut id).as_bytes(),
        c.aggregate_type.as_bytes(),
        c.aggregate_id.as_bytes(),
        sequence.as_bytes(),
        c.event_type.as_bytes(),
        c.event_version.as_bytes(),
        micros.as_bytes(),
        c.payload,
        c.metadata,
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            h.update(b"\n");
        }
        h.update(f);
    }
    h.finalize().into()
}

struct License {
    id: Uuid,
    key: String,
    streams: [Stream; 4],
    expires_at: DateTime<Utc>,
    suspended: bool,
    active: Vec<Uuid>,
    /// (lease id, client id, granted at)
    live: Vec<(Uuid, Uuid, DateTime<Utc>)>,
    domain: Option<String>,
    domain_changes: u32,
    clients: [Uuid; 2],
    events: u64,
    hot: bool,
}

impl License {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            expires_at: self.expires_at,
            status: if self.suspended {
                LicenseStatus::Suspended
            } else {
                LicenseStatus::Active
            },
            version: self.streams[ISS].seq,
            events: self.events,
        }
    }
}

/// The cause an event is recorded under.
struct Cause {
    correlation: String,
    causation: Option<String>,
    actor: Actor,
}

struct Gen<W: Write> {
    outs: [W; 4],
    positions: [i64; 4],
    /// Events written so far, every context: the clock.
    tick: u64,
    base: DateTime<Utc>,
    step: Span,
    rng: Rng,
    line: Vec<u8>,
    /// The payload's and the metadata's JSON text, as hashed.
    text: Vec<u8>,
    summary: Summary,
}

impl<W: Write> Gen<W> {
    fn now(&self) -> DateTime<Utc> {
        self.base + self.step * i32::try_from(self.tick).unwrap_or(i32::MAX)
    }

    fn cause(&mut self, kind: ActorKind, id: &str) -> Cause {
        Cause {
            correlation: self.rng.uuid_v4().to_string(),
            causation: None,
            actor: Actor::new(kind, id),
        }
    }

    /// Writes one event of `lic`'s stream of context `ctx`; its id and time.
    fn emit<P: serde::Serialize>(
        &mut self,
        lic: &mut License,
        ctx: usize,
        event_type: &'static str,
        cause: &Cause,
        payload: &P,
    ) -> Result<(Uuid, DateTime<Utc>)> {
        let at = self.now();
        let millis = u64::try_from(at.timestamp_millis()).context("time before 1970")?;
        // rand_a/rand_b: the clock (monotonic within a millisecond), then noise.
        let mut tail = [0u8; 10];
        tail[..8].copy_from_slice(&self.tick.to_be_bytes());
        tail[8..].copy_from_slice(&self.rng.bytes::<2>());
        let event_id = uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid();
        let aggregate_type = match ctx {
            ISS => LICENSE_AGGREGATE,
            ACT => ACTIVATIONS_AGGREGATE,
            DOM => BINDING_AGGREGATE,
            _ => LEASES_AGGREGATE,
        };
        let payload = serde_json::to_value(payload)?;
        let metadata = EventMetadata {
            occurred_at: at,
            command_id: self.rng.uuid_v4(),
            correlation_id: cause.correlation.clone(),
            causation_id: cause.causation.clone(),
            actor: cause.actor.clone(),
        };
        let stream = &mut lic.streams[ctx];
        stream.seq += 1;
        let prev_hash = stream.hash.unwrap_or([0; 32]);
        self.text.clear();
        serde_json::to_writer(&mut self.text, &payload)?;
        let payload_len = self.text.len();
        serde_json::to_writer(&mut self.text, &metadata)?;
        let hash = chain_hash(
            &prev_hash,
            &Canonical {
                event_id,
                aggregate_type,
                aggregate_id: &lic.key,
                sequence: stream.seq,
                event_type,
                event_version: V1,
                recorded_at: at,
                payload: &self.text[..payload_len],
                metadata: &self.text[payload_len..],
            },
        );
        stream.hash = Some(hash);
        self.positions[ctx] += 1;
        let envelope = EventEnvelope {
            event_id,
            event_type: event_type.to_string(),
            event_version: V1.to_string(),
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: lic.key.clone(),
            sequence: stream.seq,
            global_position: self.positions[ctx],
            occurred_at: metadata.occurred_at,
            recorded_at: at,
            command_id: metadata.command_id,
            correlation_id: metadata.correlation_id,
            causation_id: metadata.causation_id,
            actor: metadata.actor,
            payload,
            prev_hash: hex::encode(prev_hash),
            hash: hex::encode(hash),
        };
        self.line.clear();
        self.line.extend_from_slice(lic.key.as_bytes());
        self.line.push(b'\t');
        serde_json::to_writer(&mut self.line, &envelope)?;
        self.line.push(b'\n');
        self.outs[ctx].write_all(&self.line)?;
        self.summary.bytes[ctx] += self.line.len() as u64;
        self.summary.per_context[ctx] += 1;
        *self.summary.event_types.entry(event_type).or_default() += 1;
        self.summary.first_at.get_or_insert(at);
        self.summary.last_at = Some(at);
        self.tick += 1;
        lic.events += 1;
        Ok((event_id, at))
    }

    fn issue(&mut self, hot: bool) -> Result<License> {
        let at = self.now();
        let millis = u64::try_from(at.timestamp_millis()).context("time before 1970")?;
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &self.rng.bytes()).into_uuid();
        let mut lic = License {
            id,
            key: id.to_string(),
            streams: Default::default(),
            expires_at: at + Span::days(365),
            suspended: false,
            active: Vec::new(),
            live: Vec::new(),
            domain: None,
            domain_changes: 0,
            clients: [self.rng.uuid_v4(), self.rng.uuid_v4()],
            events: 0,
            hot,
        };
        let n = self.summary.per_context[ISS];
        let payload = LicenseIssued {
            license_id: id,
            product: PRODUCT.into(),
            edition: Some("enterprise".into()),
            customer: if hot {
                "Hot Bench Customer".into()
            } else {
                format!("Bench Customer {}", n % 5000)
            },
            contract: Some(format!("CT-BENCH-{n:08}")),
            kind: LicenseKind::Formal,
            modules: Vec::new(),
            features: FEATURES.iter().map(|f| (*f).to_string()).collect(),
            seats: [("data-access".to_string(), 5u32)].into_iter().collect(),
            issued_at: at,
            expires_at: Some(lic.expires_at),
            key_digest: Some(self.rng.hex32()),
            policy: Some(Policy {
                max_activations: 5,
                ..Policy::default()
            }),
        };
        let cause = self.cause(ActorKind::ApiKey, "AKIDbenchissuer");
        self.emit(&mut lic, ISS, LICENSE_ISSUED, &cause, &payload)?;
        Ok(lic)
    }

    /// One action of `lic`'s life using at most `budget` events (>= 1).
    fn step(&mut self, lic: &mut License, budget: u64) -> Result<()> {
        let at = self.now();
        if lic.suspended {
            let cause = self.cause(ActorKind::ApiKey, "AKIDbenchissuer");
            let p = LicenseReinstated {
                license_id: lic.id,
                reinstated_at: at,
            };
            self.emit(lic, ISS, LICENSE_REINSTATED, &cause, &p)?;
            lic.suspended = false;
            return Ok(());
        }
        let cascade = 1 + u64::from(!lic.active.is_empty()) + u64::from(!lic.live.is_empty());
        let can_suspend = budget > cascade;
        let (act, unin, bind, change, grant, release, expire, renew, suspend) = if lic.hot {
            (
                if lic.active.len() < 3 { 16 } else { 0 },
                if lic.active.is_empty() { 0 } else { 16 },
                0,
                0,
                if lic.live.len() < 3 { 15 } else { 0 },
                if lic.live.is_empty() { 0 } else { 13 },
                if lic.live.is_empty() { 0 } else { 2 },
                34,
                if can_suspend { 1 } else { 0 },
            )
        } else {
            (
                if lic.active.len() < 5 { 30 } else { 0 },
                if lic.active.is_empty() { 0 } else { 8 },
                if lic.domain.is_none() { 10 } else { 0 },
                if lic.domain.is_some() { 3 } else { 0 },
                if lic.live.len() < 5 { 25 } else { 0 },
                if lic.live.is_empty() { 0 } else { 12 },
                if lic.live.is_empty() { 0 } else { 3 },
                8,
                if can_suspend { 2 } else { 0 },
            )
        };
        let weights = [
            act, unin, bind, change, grant, release, expire, renew, suspend,
        ];
        let total: u64 = weights.iter().sum();
        let mut pick = self.rng.below(total);
        let mut choice = 0;
        for (i, w) in weights.iter().enumerate() {
            if pick < *w {
                choice = i;
                break;
            }
            pick -= w;
        }
        match choice {
            0 => {
                let cause = self.cause(ActorKind::ApiKey, "AKIDbenchactivator");
                let components: BTreeMap<String, String> = ["board", "disk", "mac", "machine_id"]
                    .iter()
                    .map(|c| ((*c).to_string(), self.rng.hex32()))
                    .collect();
                let p = DeviceActivated {
                    activation_id: self.rng.uuid_v4(),
                    license_id: lic.id,
                    product: PRODUCT.into(),
                    kind: LicenseKind::Formal,
                    fingerprint: contracts::activation::digest_of(&components),
                    components,
                    client_time: Some(at),
                    offline: false,
                    nonce: None,
                    activated_at: at,
                };
                self.emit(lic, ACT, DEVICE_ACTIVATED, &cause, &p)?;
                lic.active.push(p.activation_id);
            }
            1 => {
                let cause = self.cause(ActorKind::ApiKey, "AKIDbenchactivator");
                let activation_id = lic.active.remove(0);
                let p = ActivationUninstalled {
                    activation_id,
                    license_id: lic.id,
                    uninstalled_at: at,
                };
                self.emit(lic, ACT, ACTIVATION_UNINSTALLED, &cause, &p)?;
            }
            2 => {
                let cause = self.cause(ActorKind::ApiKey, "AKIDbenchdomains");
                let domain = format!("bench-{}.example.com", &lic.key[24..]);
                let p = DomainBound {
                    license_id: lic.id,
                    product: PRODUCT.into(),
                    domain: domain.clone(),
                    requested_host: format!("www.{domain}"),
                    follow_up: vec![format!("add a TXT record at _licensing.{domain}")],
                    bound_at: at,
                };
                self.emit(lic, DOM, DOMAIN_BOUND, &cause, &p)?;
                lic.domain = Some(domain);
            }
            3 => {
                let cause = self.cause(ActorKind::ApiKey, "AKIDbenchdomains");
                lic.domain_changes += 1;
                let domain = format!(
                    "bench-{}-{}.example.org",
                    &lic.key[24..],
                    lic.domain_changes
                );
                let p = DomainChanged {
                    license_id: lic.id,
                    product: PRODUCT.into(),
                    from_domain: lic.domain.clone().unwrap_or_default(),
                    domain: domain.clone(),
                    requested_host: domain.clone(),
                    changes_used: lic.domain_changes,
                    free: lic.domain_changes <= 1,
                    follow_up: vec![format!("add a TXT record at _licensing.{domain}")],
                    changed_at: at,
                };
                self.emit(lic, DOM, DOMAIN_CHANGED, &cause, &p)?;
                lic.domain = Some(domain);
            }
            4 => {
                let client = lic.clients[usize::from(self.rng.below(2) == 1)];
                let cause = self.cause(ActorKind::ApiKey, &format!("AKIDc{}", client.simple()));
                let p = LeaseGranted {
                    lease_id: self.rng.uuid_v4(),
                    license_id: lic.id,
                    client_id: client,
                    feature: "data-access".into(),
                    features: vec!["data-access".into()],
                    quantity: 1,
                    ttl_secs: 300,
                    grace_secs: 60,
                    granted_at: at,
                };
                self.emit(lic, GRA, LEASE_GRANTED, &cause, &p)?;
                lic.live.push((p.lease_id, client, at));
            }
            5 => {
                let (lease_id, client_id, _) = lic.live.remove(0);
                let cause = self.cause(ActorKind::ApiKey, &format!("AKIDc{}", client_id.simple()));
                let p = LeaseReleased {
                    lease_id,
                    license_id: lic.id,
                    client_id,
                    released_at: at,
                };
                self.emit(lic, GRA, LEASE_RELEASED, &cause, &p)?;
            }
            6 => {
                let (lease_id, client_id, granted) = lic.live.remove(0);
                let cause = self.cause(ActorKind::Scheduler, "grant-sync");
                let p = LeaseExpired {
                    lease_id,
                    license_id: lic.id,
                    client_id,
                    deadline: granted + Span::seconds(300),
                    expired_at: at,
                };
                self.emit(lic, GRA, LEASE_EXPIRED, &cause, &p)?;
            }
            7 => {
                let cause = self.cause(ActorKind::ApiKey, "AKIDbenchissuer");
                let previous = lic.expires_at;
                lic.expires_at = previous + Span::days(if lic.hot { 1 } else { 365 });
                let p = LicenseRenewed {
                    license_id: lic.id,
                    previous_expires_at: Some(previous),
                    expires_at: lic.expires_at,
                    order_ref: format!("PO-BENCH-{}", self.tick),
                    renewed_at: at,
                };
                self.emit(lic, ISS, LICENSE_RENEWED, &cause, &p)?;
            }
            _ => {
                let mut cause = self.cause(ActorKind::ApiKey, "AKIDbenchissuer");
                let p = LicenseSuspended {
                    license_id: lic.id,
                    reason: "payment overdue".into(),
                    suspended_at: at,
                };
                let (cause_id, _) = self.emit(lic, ISS, LICENSE_SUSPENDED, &cause, &p)?;
                lic.suspended = true;
                let version = lic.streams[ISS].seq;
                cause.causation = Some(cause_id.to_string());
                if !lic.active.is_empty() {
                    cause.actor = Actor::new(ActorKind::Service, "activation");
                    let p = ActivationsRevoked {
                        license_id: lic.id,
                        activation_ids: std::mem::take(&mut lic.active),
                        reason: RevocationReason::LicenseSuspended,
                        revoked_at: self.now(),
                    };
                    self.emit(lic, ACT, ACTIVATIONS_REVOKED, &cause, &p)?;
                }
                if !lic.live.is_empty() {
                    cause.actor = Actor::new(ActorKind::Service, "grant-sync");
                    let p = LeasesRevoked {
                        license_id: lic.id,
                        lease_ids: lic.live.drain(..).map(|l| l.0).collect(),
                        reason: LeaseEndReason::LicenseSuspended,
                        license_version: Some(version),
                        revoked_at: self.now(),
                    };
                    self.emit(lic, GRA, LEASES_REVOKED, &cause, &p)?;
                }
            }
        }
        Ok(())
    }

    /// Steps the hot license until it has `target` events (or more, by a
    /// suspension's cascade), noting its middle.
    fn hot_until(&mut self, hot: &mut License, target: u64, total: u64) -> Result<()> {
        while hot.events < target {
            let budget = total - hot.events;
            self.step(hot, budget)?;
            if self.summary.hot.mid.is_none() && hot.events >= total.div_ceil(2) {
                self.summary.hot.mid = Some(hot.snapshot());
                self.summary.hot.mid_as_of = Some(self.now() - self.step / 2);
            }
        }
        Ok(())
    }
}

/// Generates the history of `spec` into the four writers (in CONTEXTS order).
pub fn generate<W: Write>(spec: &Spec, outs: [W; 4]) -> Result<(Summary, [W; 4])> {
    if spec.hot_events < 1 {
        bail!("--hot-license-events must be at least 1 (its LicenseIssued)");
    }
    let Some(ordinary) = spec.events.checked_sub(spec.hot_events) else {
        bail!("--events must be at least --hot-license-events");
    };
    if ordinary < spec.licenses {
        bail!(
            "--events {} leaves {ordinary} events for {} licenses: each needs at least one",
            spec.events,
            spec.licenses
        );
    }
    if spec.licenses == 0 && ordinary > 0 {
        bail!("--licenses 0: every event is the hot license's (--events = --hot-license-events)");
    }
    if spec.step <= Span::zero() {
        bail!("--step-ms must be positive");
    }
    let mut g = Gen {
        outs,
        positions: [0; 4],
        tick: 0,
        base: spec.base,
        step: spec.step,
        rng: Rng(spec.seed),
        line: Vec::with_capacity(4096),
        text: Vec::with_capacity(4096),
        summary: Summary::default(),
    };
    let mut hot = g.issue(true)?;
    g.summary.hot.id = hot.id;
    if spec.hot_events == 1 {
        g.summary.hot.mid = Some(hot.snapshot());
        g.summary.hot.mid_as_of = Some(g.now() - g.step / 2);
    }
    let l = spec.licenses;
    for j in 0..l {
        // License j's share of the ordinary events (exact in total).
        let share = (u128::from(ordinary) * u128::from(j + 1) / u128::from(l)
            - u128::from(ordinary) * u128::from(j) / u128::from(l)) as u64;
        let mut lic = g.issue(false)?;
        while lic.events < share {
            let budget = share - lic.events;
            g.step(&mut lic, budget)?;
        }
        // Reservoir sample of ids.
        if g.summary.sample.len() < spec.ids_count {
            g.summary.sample.push(lic.id);
        } else {
            let r = g.rng.below(j + 1) as usize;
            if r < spec.ids_count {
                g.summary.sample[r] = lic.id;
            }
        }
        // Spread the hot license's events through the history.
        let target = (u128::from(spec.hot_events) * u128::from(j + 1) / u128::from(l)) as u64;
        g.hot_until(&mut hot, target.max(1), spec.hot_events)?;
    }
    g.hot_until(&mut hot, spec.hot_events, spec.hot_events)?;
    g.summary.hot.events = hot.events;
    g.summary.hot.end = Some(hot.snapshot());
    g.summary.hot.end_as_of = Some(g.now() - g.step / 2);
    for o in &mut g.outs {
        o.flush()?;
    }
    Ok((g.summary, g.outs))
}

fn rfc3339(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn status_text(s: LicenseStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `loadgen events --out-dir DIR [...]` (see the module header).
pub fn run(o: &Opts) -> Result<Value> {
    let dir = Path::new(o.req("out-dir")?);
    let base = match o.get("base") {
        Some(b) => DateTime::parse_from_rfc3339(b)
            .with_context(|| format!("--base {b}: not RFC 3339"))?
            .with_timezone(&Utc),
        None => DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?.with_timezone(&Utc),
    };
    let spec = Spec {
        licenses: o.num("licenses", 100_000)?,
        events: o.num("events", 1_000_000)?,
        hot_events: o.num("hot-license-events", 10_000)?,
        ids_count: o.num("ids-count", 1000)?,
        seed: o.num("seed", 1)?,
        base,
        step: Span::milliseconds(o.num("step-ms", 1000)?),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let open = |ctx: &str| -> Result<BufWriter<File>> {
        let path = dir.join(format!("{ctx}.tsv"));
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(BufWriter::with_capacity(1 << 20, f))
    };
    let outs = [
        open(CONTEXTS[0])?,
        open(CONTEXTS[1])?,
        open(CONTEXTS[2])?,
        open(CONTEXTS[3])?,
    ];
    let t0 = Instant::now();
    let (s, _) = generate(&spec, outs)?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("hot_license={}", s.hot.id);
    let snap = |v: &Option<Snapshot>| {
        v.as_ref().map(|v| {
            json!({
                "expires_at": rfc3339(Some(v.expires_at)), "status": status_text(v.status),
                "version": v.version, "events": v.events,
            })
        })
    };
    if let Some(path) = o.get("hot-file") {
        let mut f = BufWriter::new(File::create(path).with_context(|| format!("creating {path}"))?);
        writeln!(f, "hot_license={}", s.hot.id)?;
        writeln!(f, "hot_events={}", s.hot.events)?;
        for (name, at, v) in [
            ("mid", s.hot.mid_as_of, &s.hot.mid),
            ("end", s.hot.end_as_of, &s.hot.end),
        ] {
            writeln!(f, "{name}_as_of={}", rfc3339(at))?;
            if let Some(v) = v {
                writeln!(f, "{name}_expires_at={}", rfc3339(Some(v.expires_at)))?;
                writeln!(f, "{name}_status={}", status_text(v.status))?;
                writeln!(f, "{name}_version={}", v.version)?;
                writeln!(f, "{name}_events={}", v.events)?;
            }
        }
        f.flush()?;
    }
    if let Some(path) = o.get("ids-out") {
        let mut f = BufWriter::new(File::create(path).with_context(|| format!("creating {path}"))?);
        for id in &s.sample {
            writeln!(f, "{id}")?;
        }
        f.flush()?;
    }
    let total: u64 = s.per_context.iter().sum();
    let per_context: serde_json::Map<String, Value> = CONTEXTS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                (*c).to_string(),
                json!({
                    "events": s.per_context[i], "bytes": s.bytes[i],
                    "file": dir.join(format!("{c}.tsv")).display().to_string(),
                }),
            )
        })
        .collect();
    Ok(json!({
        "licenses": spec.licenses + 1,
        "events": total,
        "bytes": s.bytes.iter().sum::<u64>(),
        "seconds": crate::round(secs, 3),
        "events_per_s": crate::round(total as f64 / secs.max(1e-9), 0),
        "first_at": rfc3339(s.first_at),
        "last_at": rfc3339(s.last_at),
        "step_ms": spec.step.num_milliseconds(),
        "seed": spec.seed,
        "per_context": per_context,
        "event_types": s.event_types,
        "hot": {
            "license_id": s.hot.id, "events": s.hot.events,
            "mid_as_of": rfc3339(s.hot.mid_as_of), "mid": snap(&s.hot.mid),
            "end_as_of": rfc3339(s.hot.end_as_of), "end": snap(&s.hot.end),
        },
        "sampled_ids": s.sample.len(),
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use contracts::license_view::LicenseView;
    use serde::de::DeserializeOwned;

    use super::*;

    fn spec(licenses: u64, events: u64, hot: u64) -> Spec {
        Spec {
            licenses,
            events,
            hot_events: hot,
            ids_count: 10,
            seed: 7,
            base: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .expect("time")
                .with_timezone(&Utc),
            step: Span::milliseconds(1000),
        }
    }

    fn decodes<T: DeserializeOwned>(e: &EventEnvelope) {
        if let Err(err) = serde_json::from_value::<T>(e.payload.clone()) {
            panic!(
                "{} payload does not decode: {err}: {}",
                e.event_type, e.payload
            );
        }
    }

    fn check_payload(e: &EventEnvelope) {
        match e.event_type.as_str() {
            LICENSE_ISSUED => decodes::<LicenseIssued>(e),
            LICENSE_RENEWED => decodes::<LicenseRenewed>(e),
            LICENSE_SUSPENDED => decodes::<LicenseSuspended>(e),
            LICENSE_REINSTATED => decodes::<LicenseReinstated>(e),
            DEVICE_ACTIVATED => decodes::<DeviceActivated>(e),
            ACTIVATION_UNINSTALLED => decodes::<ActivationUninstalled>(e),
            ACTIVATIONS_REVOKED => decodes::<ActivationsRevoked>(e),
            DOMAIN_BOUND => decodes::<DomainBound>(e),
            DOMAIN_CHANGED => decodes::<DomainChanged>(e),
            LEASE_GRANTED => decodes::<LeaseGranted>(e),
            LEASE_RELEASED => decodes::<LeaseReleased>(e),
            LEASE_EXPIRED => decodes::<LeaseExpired>(e),
            LEASES_REVOKED => decodes::<LeasesRevoked>(e),
            other => panic!("unexpected event type {other}"),
        }
    }

    /// The event store's hash of a published envelope, the way
    /// eventstore::chain does it (StoredEvent::from_raw_envelope, then
    /// compute_hash): the fields joined by newlines after the raw prev_hash.
    fn rehash(e: &EventEnvelope) -> String {
        let metadata = serde_json::to_string(&EventMetadata {
            occurred_at: e.occurred_at,
            command_id: e.command_id,
            correlation_id: e.correlation_id.clone(),
            causation_id: e.causation_id.clone(),
            actor: e.actor.clone(),
        })
        .expect("metadata");
        let canonical = [
            e.event_id.hyphenated().to_string(),
            e.aggregate_type.clone(),
            e.aggregate_id.clone(),
            e.sequence.to_string(),
            e.event_type.clone(),
            e.event_version.clone(),
            e.recorded_at.timestamp_micros().to_string(),
            serde_json::to_string(&e.payload).expect("payload"),
            metadata,
        ]
        .join("\n");
        let mut h = Sha256::new();
        h.update(hex::decode(&e.prev_hash).expect("hex"));
        h.update(canonical.as_bytes());
        hex::encode(h.finalize())
    }

    fn run(spec: &Spec) -> (Summary, Vec<Vec<EventEnvelope>>) {
        let (summary, outs) =
            generate(spec, [Vec::new(), Vec::new(), Vec::new(), Vec::new()]).expect("generates");
        let mut all = Vec::new();
        for (ctx, out) in outs.iter().enumerate() {
            let text = std::str::from_utf8(out).expect("utf-8");
            let mut events = Vec::new();
            for line in text.lines() {
                let (key, json) = line.split_once('\t').expect("key and value");
                assert!(!json.contains('\t'), "one tab a line");
                let e: EventEnvelope = serde_json::from_str(json).expect("an EventEnvelope");
                assert_eq!(key, e.aggregate_id, "keyed by aggregate id");
                let want = match ctx {
                    ISS => LICENSE_AGGREGATE,
                    ACT => ACTIVATIONS_AGGREGATE,
                    DOM => BINDING_AGGREGATE,
                    _ => LEASES_AGGREGATE,
                };
                assert_eq!(
                    e.aggregate_type, want,
                    "{} on {}",
                    e.event_type, CONTEXTS[ctx]
                );
                events.push(e);
            }
            assert_eq!(events.len() as u64, summary.per_context[ctx]);
            all.push(events);
        }
        (summary, all)
    }

    #[test]
    fn every_event_is_on_contract_and_every_stream_contiguous() {
        let spec = spec(300, 4000, 700);
        let (summary, contexts) = run(&spec);
        let total: usize = contexts.iter().map(Vec::len).sum();
        assert_eq!(total as u64, spec.events);
        let mut streams: HashMap<(String, String), (u64, String)> = HashMap::new();
        let mut ids = HashSet::new();
        let mut per_license: HashMap<Uuid, u64> = HashMap::new();
        let mut views: HashMap<String, Option<LicenseView>> = HashMap::new();
        let mut times = Vec::new();
        for events in &contexts {
            let mut last_pos = 0;
            for e in events {
                check_payload(e);
                assert_eq!(e.event_version, "1");
                assert!(e.global_position > last_pos, "positions rise per context");
                last_pos = e.global_position;
                assert!(ids.insert(e.event_id), "unique event ids");
                assert_eq!(e.event_id.get_version_num(), 7);
                assert_eq!(e.hash.len(), 64);
                let k = (e.aggregate_type.clone(), e.aggregate_id.clone());
                let (seq, prev) = streams.entry(k).or_insert((0, "0".repeat(64)));
                assert_eq!(
                    e.sequence,
                    *seq + 1,
                    "contiguous {}/{}",
                    e.aggregate_type,
                    e.aggregate_id
                );
                assert_eq!(&e.prev_hash, prev, "hash chain");
                assert_eq!(e.hash, rehash(e), "the hash covers the event");
                *seq = e.sequence;
                *prev = e.hash.clone();
                let license = contracts::license_view::license_of(e).expect("names a license");
                assert_eq!(license.to_string(), e.aggregate_id);
                *per_license.entry(license).or_default() += 1;
                if e.aggregate_type == LICENSE_AGGREGATE {
                    let v = views.entry(e.aggregate_id.clone()).or_default();
                    *v = LicenseView::fold(v.take(), e).expect("folds");
                    assert!(v.is_some(), "LicenseIssued comes first");
                }
                times.push((e.recorded_at, e.event_id));
            }
        }
        // UUIDv7 order is time order.
        times.sort();
        assert!(times.windows(2).all(|w| w[0].1 < w[1].1 && w[0].0 < w[1].0));
        assert_eq!(per_license.len() as u64, spec.licenses + 1);
        assert_eq!(per_license[&summary.hot.id], spec.hot_events);
        assert_eq!(summary.hot.events, spec.hot_events);
        assert_eq!(
            per_license.values().filter(|n| **n >= 10).count() as u64,
            spec.licenses + 1
        );
        assert_eq!(summary.sample.len(), 10);
        assert!(!summary.sample.contains(&summary.hot.id));
        // What the hot file promises is what the fold says.
        let end = summary.hot.end.clone().expect("end");
        let view = views[&summary.hot.id.to_string()]
            .clone()
            .expect("hot view");
        assert_eq!(view.expires_at, Some(end.expires_at));
        assert_eq!(view.version, end.version);
        assert_eq!(view.status, end.status);
        let mid = summary.hot.mid.clone().expect("mid");
        let mid_at = summary.hot.mid_as_of.expect("mid instant");
        let mut folded: Option<LicenseView> = None;
        let mut hot_before = 0;
        for e in contexts.iter().flatten() {
            if e.aggregate_id == summary.hot.id.to_string() && e.recorded_at <= mid_at {
                hot_before += 1;
                if e.aggregate_type == LICENSE_AGGREGATE {
                    folded = LicenseView::fold(folded, e).expect("folds");
                }
            }
        }
        let folded = folded.expect("mid view");
        assert_eq!(hot_before, mid.events);
        assert_eq!(folded.expires_at, Some(mid.expires_at));
        assert_eq!(folded.version, mid.version);
        assert!(mid.events >= spec.hot_events / 2 && mid.events < spec.hot_events);
        // Every kind of event shows up.
        for t in [
            LICENSE_RENEWED,
            DEVICE_ACTIVATED,
            ACTIVATION_UNINSTALLED,
            DOMAIN_BOUND,
            LEASE_GRANTED,
            LEASE_RELEASED,
            LICENSE_SUSPENDED,
        ] {
            assert!(summary.event_types.get(t).copied().unwrap_or(0) > 0, "{t}");
        }
    }

    #[test]
    fn the_same_seed_writes_the_same_history() {
        let s = spec(20, 300, 50);
        let a = generate(&s, [Vec::new(), Vec::new(), Vec::new(), Vec::new()]).expect("a");
        let b = generate(&s, [Vec::new(), Vec::new(), Vec::new(), Vec::new()]).expect("b");
        assert_eq!(a.1, b.1);
    }

    #[test]
    fn too_few_events_is_an_error() {
        assert!(generate(
            &spec(100, 150, 100),
            [Vec::new(), Vec::new(), Vec::new(), Vec::new()]
        )
        .is_err());
        let (s, _) = run(&spec(0, 5, 5));
        assert_eq!(s.hot.events, 5);
    }
}
