//! The write path: load an aggregate from its events, run a command, and
//! append the resulting events together with the command's outcome in one
//! transaction. The outcome row (keyed by `command_id`) is the idempotency
//! record: a duplicate command — over HTTP, over Kafka, concurrently or after
//! a crash — returns the first outcome and appends nothing.

use std::borrow::Cow;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use contracts::{Actor, CommandOutcome, ErrorKind, EventMetadata, OutcomeError, OutcomeStatus};
use cqrs_es::{Aggregate, DomainEvent};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Retries of a command whose aggregate moved on between load and append.
const MAX_ATTEMPTS: usize = 8;

pub use domain_kit::{CodedError, Folding, Refusal, Refused};

/// Events between two snapshots of an aggregate, unless configured
/// (`snapshot_every`): loading then reads a snapshot and fewer events than
/// this, whatever the stream's length, for one row written per this many
/// events.
pub const DEFAULT_SNAPSHOT_EVERY: u32 = 50;

static SNAPSHOT_EVERY: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(DEFAULT_SNAPSHOT_EVERY);

/// Sets the snapshot interval of the repositories made after it (the
/// process's `snapshot_every` setting; 0 turns snapshots off).
pub fn set_snapshot_every(events: u32) {
    SNAPSHOT_EVERY.store(events, std::sync::atomic::Ordering::Relaxed);
}

/// Digest of a command's type and (re-serialised, typed) payload: the same
/// command sent over HTTP or Kafka has the same digest.
pub fn request_digest<T: serde::Serialize>(command_type: &str, payload: &T) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(command_type.as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_vec(payload).unwrap_or_default());
    hex::encode(h.finalize())
}

/// A command id fixed by what caused the command (an event id and the
/// reaction's name): a reaction replayed after a crash or redelivery sends
/// the same id again, and the outcome record makes it a no-op.
pub fn derived_id(source: Uuid, purpose: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update(purpose.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

pub const DIGEST_MISMATCH_CODE: &str = "IDEMPOTENCY_KEY_REUSED";

/// A command's stored outcome and what identifies the command it answers.
struct Stored {
    outcome: CommandOutcome,
    digest: String,
    command_type: String,
}

impl Stored {
    /// Whether a command id used again is the same command: the same type,
    /// the same payload (digest) and, when the caller names its target
    /// (`target`), the same aggregate. A key reused for another license
    /// must not answer with the first license's outcome and skip the
    /// second's command.
    fn is_for(&self, ctx: &CommandContext, target: Option<&str>) -> bool {
        self.digest == ctx.request_digest
            && self.command_type == ctx.command_type
            && target.is_none_or(|id| id == self.outcome.aggregate_id)
    }
}

/// What the caller of a command fixes: identity, provenance and time.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub command_id: Uuid,
    pub command_type: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: Actor,
    pub occurred_at: DateTime<Utc>,
    /// Digest of the command's type and payload: a reused command id with a
    /// different request is refused rather than answered with a stale outcome.
    pub request_digest: String,
}

impl CommandContext {
    /// The context of a command that reacts to event `e`: its id derived
    /// from the event and the reaction's `purpose`, so a redelivered event
    /// repeats nothing; correlated with the event, caused by it, acted by
    /// `service`.
    pub fn reaction(
        e: &contracts::EventEnvelope,
        command_type: &str,
        purpose: &str,
        service: &str,
    ) -> Self {
        Self {
            command_id: derived_id(e.event_id, purpose),
            command_type: command_type.into(),
            correlation_id: e.correlation_id.clone(),
            causation_id: Some(e.event_id.to_string()),
            actor: Actor::new(contracts::ActorKind::Service, service),
            occurred_at: Utc::now(),
            request_digest: request_digest(command_type, &(e.event_id, purpose)),
        }
    }
}

/// The result of a command: its outcome (accepted or rejected) and the
/// aggregate's state afterwards.
#[derive(Debug)]
pub struct Executed<A> {
    pub outcome: CommandOutcome,
    pub aggregate: A,
    /// Sequence and hash (hex) of each event this execution appended (none
    /// for a replayed answer or a refusal stored without events).
    pub appended: Vec<(u64, String)>,
    /// True when this is the stored answer to an earlier identical command.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("command id reused with a different request")]
    DigestMismatch,
    #[error("aggregate {0} kept changing concurrently")]
    Conflict(String),
    #[error("stored event cannot be read: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("serialisation error: {0}")]
    Serde(#[from] serde_json::Error),
}

impl bus::outage::Unreachable for StoreError {
    fn outage(&self) -> Option<&'static bus::outage::Outage> {
        match self {
            StoreError::Database(e) => e.outage(),
            _ => None,
        }
    }
}

/// A read table kept by the writing service itself, updated in the same
/// transaction as the events (lookups the command side needs right away:
/// keys by digest, licenses due for expiry). Never a published read model.
#[async_trait::async_trait]
pub trait InlineProjection<A: Aggregate>: Send + Sync {
    async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        aggregate_id: &str,
        aggregate: &A,
    ) -> Result<(), sqlx::Error>;

    /// Takes what the aggregate's new state holds to the exclusion of every
    /// other aggregate (a registrable domain per product), first thing in
    /// the append's transaction. `Ok(Err(refused))` when another aggregate
    /// holds it: the transaction is rolled back, so no event, projection or
    /// claim is stored, and the command is rejected with `refused` like a
    /// rule of the aggregate (its outcome recorded). An aggregate alone
    /// cannot decide this: it sees only its own stream.
    async fn claim(
        &self,
        _tx: &mut sqlx::PgConnection,
        _aggregate_id: &str,
        _aggregate: &A,
    ) -> Result<Result<(), Refused>, sqlx::Error> {
        Ok(Ok(()))
    }

    /// Called once the append's transaction committed, with the state it
    /// stored: an in-memory copy of this service's own writes is current
    /// the moment the command is answered (read-your-writes), without
    /// waiting for the copy's follower to hear of the commit.
    fn committed(&self, _aggregate_id: &str, _aggregate: &A) {}
}

pub struct Repository<A: Aggregate> {
    pool: PgPool,
    services: A::Services,
    projection: Option<std::sync::Arc<dyn InlineProjection<A>>>,
    stripes: Option<std::sync::Arc<[tokio::sync::Mutex<()>]>>,
    snapshot_every: i64,
    _aggregate: PhantomData<A>,
}

/// An aggregate as loaded: its state, its last sequence, and the sequence
/// of the snapshot it was loaded from (0 when none).
struct Loaded<A> {
    aggregate: A,
    sequence: i64,
    snapshot_at: i64,
}

/// Stripes of in-process command serialisation (see `with_local_serialisation`).
const STRIPES: usize = 64;

impl<A> Repository<A>
where
    A: Aggregate + Folding,
    A::Command: Clone,
    A::Error: CodedError,
    A::Event: Refusal,
{
    pub fn new(pool: PgPool, services: A::Services) -> Self {
        Self {
            pool,
            services,
            projection: None,
            stripes: None,
            snapshot_every: i64::from(SNAPSHOT_EVERY.load(std::sync::atomic::Ordering::Relaxed)),
            _aggregate: PhantomData,
        }
    }

    pub fn with_projection(mut self, projection: std::sync::Arc<dyn InlineProjection<A>>) -> Self {
        self.projection = Some(projection);
        self
    }

    /// Runs the commands of one aggregate one at a time within this process.
    /// For hot aggregates (fifty devices racing for the ten seats of one
    /// license): optimistic retries alone would exhaust their attempts.
    /// Other processes still meet at the append's unique key.
    pub fn with_local_serialisation(mut self) -> Self {
        self.stripes = Some((0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect());
        self
    }

    pub fn services(&self) -> &A::Services {
        &self.services
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The aggregate as its events leave it, with its last sequence (0 and
    /// the default state when it has none): from its snapshot and the
    /// events after it when there is a usable one.
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, i64), StoreError> {
        let l = self.load_latest(aggregate_id).await?;
        Ok((l.aggregate, l.sequence))
    }

    /// The aggregate folded from every event, ignoring any snapshot.
    pub async fn replay_all(&self, aggregate_id: &str) -> Result<(A, i64), StoreError> {
        let l = fold::<A>(&self.pool, aggregate_id, false).await?;
        Ok((l.aggregate, l.sequence))
    }

    /// Snapshots every `events` events (0: none) instead of the process's
    /// `snapshot_every`.
    pub fn with_snapshot_every(mut self, events: u32) -> Self {
        self.snapshot_every = i64::from(events);
        self
    }

    async fn load_latest(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        fold(&self.pool, aggregate_id, self.snapshot_every > 0).await
    }

    /// The stored outcome of the command `ctx` describes: None when its id
    /// was never stored, `DigestMismatch` when it was, for another command.
    pub async fn outcome_of(
        &self,
        ctx: &CommandContext,
    ) -> Result<Option<CommandOutcome>, StoreError> {
        match self.stored_outcome(ctx.command_id).await? {
            None => Ok(None),
            Some(stored) if stored.is_for(ctx, None) => Ok(Some(stored.outcome)),
            Some(_) => Err(StoreError::DigestMismatch),
        }
    }

    /// The stored outcome of a command, if it was ever handled.
    pub async fn outcome(&self, command_id: Uuid) -> Result<Option<CommandOutcome>, StoreError> {
        Ok(self.stored_outcome(command_id).await?.map(|s| s.outcome))
    }

    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Executed<A>, StoreError> {
        self.run(aggregate_id, command, ctx, false).await
    }

    /// `execute` for an aggregate id the caller just generated (a fresh
    /// UUIDv7): it cannot have events yet, so the first attempt skips the
    /// load. Should the id be taken after all, the append collides and the
    /// retry loads as usual.
    pub async fn execute_new(
        &self,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Executed<A>, StoreError> {
        self.run(aggregate_id, command, ctx, true).await
    }

    async fn run(
        &self,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
        fresh: bool,
    ) -> Result<Executed<A>, StoreError> {
        let _turn = match &self.stripes {
            Some(stripes) => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                aggregate_id.hash(&mut h);
                Some(stripes[(h.finish() as usize) % stripes.len()].lock().await)
            }
            None => None,
        };
        // No look-up of the command id first: duplicates are rare, and the
        // outcome row committed with the events is what makes them safe — a
        // duplicate that reaches the append collides on it and is answered
        // from it; one the aggregate refuses finds it when recording.
        for attempt in 0..MAX_ATTEMPTS {
            let mut loaded = if fresh && attempt == 0 {
                Loaded {
                    aggregate: A::default(),
                    sequence: 0,
                    snapshot_at: 0,
                }
            } else {
                self.load_latest(aggregate_id).await?
            };
            let sink = cqrs_es::event_sink::EventSink::default();
            if let Err(e) = loaded
                .aggregate
                .handle(command.clone(), &self.services, &sink)
                .await
            {
                return self
                    .rejected(aggregate_id, ctx, &Refused::of(&e), !fresh)
                    .await;
            }
            let events = sink.collect().await;
            let sequence = loaded.sequence + events.len() as i64;
            let refusal = events.iter().find_map(Refusal::refusal);
            let outcome = CommandOutcome {
                command_id: ctx.command_id,
                status: if refusal.is_some() {
                    OutcomeStatus::Rejected
                } else {
                    OutcomeStatus::Accepted
                },
                error: refusal.map(|r| OutcomeError {
                    code: r.code.to_string(),
                    message: r.message,
                    field: r.field.map(Cow::into_owned),
                    kind: Some(r.kind),
                }),
                aggregate_id: aggregate_id.to_string(),
                sequence: u64::try_from(sequence).ok(),
                result: None,
            };
            match self
                .append(aggregate_id, &loaded, &events, ctx, &outcome)
                .await
            {
                Ok(appended) => {
                    let aggregate = loaded.aggregate;
                    if let Some(p) = &self.projection {
                        p.committed(aggregate_id, &aggregate);
                    }
                    return Ok(Executed {
                        outcome,
                        aggregate,
                        appended,
                        replayed: false,
                    });
                }
                Err(AppendError::SequenceTaken) => {
                    // Another writer won this sequence; spread the retries so
                    // hot contenders do not collide again in lockstep.
                    let jitter = (Uuid::new_v4().as_u128() % 5) as u64 + 1;
                    tokio::time::sleep(std::time::Duration::from_millis(
                        jitter * (attempt as u64 + 1),
                    ))
                    .await;
                    continue;
                }
                Err(AppendError::CommandTaken) => {
                    let target = (!fresh).then_some(aggregate_id);
                    if let Some(done) = self.replay(ctx, target).await? {
                        return Ok(done);
                    }
                }
                Err(AppendError::Refused(refused)) => {
                    return self.rejected(aggregate_id, ctx, &refused, !fresh).await;
                }
                Err(AppendError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Conflict(aggregate_id.to_string()))
    }

    /// Records `refused` as the command's outcome and answers it with the
    /// aggregate as stored (the first outcome, when the command id was
    /// used before).
    async fn rejected(
        &self,
        aggregate_id: &str,
        ctx: &CommandContext,
        refused: &Refused,
        named: bool,
    ) -> Result<Executed<A>, StoreError> {
        let (outcome, fresh) = self
            .record_rejection(aggregate_id, ctx, refused, named)
            .await?;
        let (aggregate, _) = self.load(&outcome.aggregate_id).await?;
        Ok(Executed {
            outcome,
            aggregate,
            appended: vec![],
            replayed: !fresh,
        })
    }

    /// Records a rejection for a command that never reached the aggregate (its
    /// payload did not parse, say), or that the aggregate refused. Returns the
    /// first outcome when the command id was already used.
    pub async fn reject(
        &self,
        aggregate_id: &str,
        ctx: &CommandContext,
        refused: &Refused,
    ) -> Result<CommandOutcome, StoreError> {
        Ok(self
            .record_rejection(aggregate_id, ctx, refused, true)
            .await?
            .0)
    }

    /// `named`: the caller chose `aggregate_id` (it was not generated for
    /// this request), so a reused command id must name it too.
    async fn record_rejection(
        &self,
        aggregate_id: &str,
        ctx: &CommandContext,
        refused: &Refused,
        named: bool,
    ) -> Result<(CommandOutcome, bool), StoreError> {
        let (code, kind, field) = (refused.code, refused.kind, refused.field.as_deref());
        // Rejection texts may quote what a caller sent (a serde message, a
        // code it named): stored and published bounded and printable.
        let message: String = refused
            .message
            .chars()
            .filter(|c| !c.is_control())
            .take(500)
            .collect();
        let message = message.as_str();
        let inserted = sqlx::query(
            "INSERT INTO command_outcomes \
               (command_id, command_type, request_digest, aggregate_id, status, error_code, \
                error_message, error_field, error_kind) \
             VALUES ($1, $2, $3, $4, 'rejected', $5, $6, $7, $8) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(ctx.command_id)
        .bind(&ctx.command_type)
        .bind(&ctx.request_digest)
        .bind(aggregate_id)
        .bind(code)
        .bind(message)
        .bind(field)
        .bind(kind.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            let outcome = CommandOutcome {
                command_id: ctx.command_id,
                status: OutcomeStatus::Rejected,
                error: Some(OutcomeError {
                    code: code.to_string(),
                    message: message.to_string(),
                    field: field.map(str::to_string),
                    kind: Some(kind),
                }),
                aggregate_id: aggregate_id.to_string(),
                sequence: None,
                result: None,
            };
            return Ok((outcome, true));
        }
        match self.stored_outcome(ctx.command_id).await? {
            Some(stored) if stored.is_for(ctx, named.then_some(aggregate_id)) => {
                Ok((stored.outcome, false))
            }
            Some(_) => Err(StoreError::DigestMismatch),
            None => Err(StoreError::Corrupt("outcome vanished".into())),
        }
    }

    /// The stored answer to a command id used before, when it was used for
    /// this same command (see [`Stored::is_for`]).
    async fn replay(
        &self,
        ctx: &CommandContext,
        target: Option<&str>,
    ) -> Result<Option<Executed<A>>, StoreError> {
        let Some(stored) = self.stored_outcome(ctx.command_id).await? else {
            return Ok(None);
        };
        if !stored.is_for(ctx, target) {
            return Err(StoreError::DigestMismatch);
        }
        let outcome = stored.outcome;
        let (aggregate, _) = self.load(&outcome.aggregate_id).await?;
        Ok(Some(Executed {
            outcome,
            aggregate,
            appended: vec![],
            replayed: true,
        }))
    }

    async fn stored_outcome(&self, command_id: Uuid) -> Result<Option<Stored>, StoreError> {
        let row = sqlx::query(
            "SELECT aggregate_id, status, error_code, error_message, error_field, error_kind, sequence, \
               request_digest, command_type \
             FROM command_outcomes WHERE command_id = $1",
        )
        .bind(command_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status")?;
        let code: Option<String> = row.try_get("error_code")?;
        let message: Option<String> = row.try_get("error_message")?;
        let field: Option<String> = row.try_get("error_field")?;
        let kind: Option<String> = row.try_get("error_kind")?;
        let sequence: Option<i64> = row.try_get("sequence")?;
        let outcome = CommandOutcome {
            command_id,
            status: if status == "accepted" {
                OutcomeStatus::Accepted
            } else {
                OutcomeStatus::Rejected
            },
            error: code.map(|code| OutcomeError {
                code,
                message: message.unwrap_or_default(),
                field,
                kind: kind.as_deref().and_then(ErrorKind::parse),
            }),
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: sequence.and_then(|s| u64::try_from(s).ok()),
            result: None,
        };
        Ok(Some(Stored {
            outcome,
            digest: row.try_get("request_digest")?,
            command_type: row.try_get("command_type")?,
        }))
    }

    /// Appends `events` to the aggregate `loaded` was, which they already
    /// changed; each appended event's sequence and hash (hex).
    async fn append(
        &self,
        aggregate_id: &str,
        loaded: &Loaded<A>,
        events: &[A::Event],
        ctx: &CommandContext,
        outcome: &CommandOutcome,
    ) -> Result<Vec<(u64, String)>, AppendError> {
        let (last, aggregate) = (loaded.sequence, &loaded.aggregate);
        let sequence = last + events.len() as i64;
        let snapshot =
            self.snapshot_every > 0 && sequence - loaded.snapshot_at >= self.snapshot_every;
        let metadata = serde_json::to_string(&EventMetadata {
            occurred_at: ctx.occurred_at,
            command_id: ctx.command_id,
            correlation_id: ctx.correlation_id.clone(),
            causation_id: ctx.causation_id.clone(),
            actor: ctx.actor.clone(),
        })
        .map_err(StoreError::from)?;
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        if let Some(p) = &self.projection {
            if let Err(refused) = p
                .claim(&mut tx, aggregate_id, aggregate)
                .await
                .map_err(classify)?
            {
                // Dropping the transaction rolls it back.
                return Err(AppendError::Refused(refused));
            }
        }
        let error = outcome.error.as_ref();
        let status = if error.is_some() {
            "rejected"
        } else {
            "accepted"
        };
        let payloads = events
            .iter()
            .map(encode_event)
            .collect::<Result<Vec<_>, _>>()?;
        // Events and outcome in one statement (one round trip); the hash
        // chain's trigger sees each earlier row of the statement, and the
        // hashes it computed come back.
        // A command without events inserts none: even an empty INSERT
        // would fire the relay's statement trigger.
        let appending = if events.is_empty() {
            "SELECT NULL::bigint AS sequence, NULL::bytea AS hash WHERE false"
        } else {
            "INSERT INTO events \
               (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT $1, $2, u.s, u.t, u.v, u.p::json, $7::text::json \
             FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[]) AS u(s, t, v, p) \
             ORDER BY u.s \
             RETURNING sequence, hash"
        };
        let statement = format!(
            "WITH ev AS ({appending}), \
             oc AS ( \
               INSERT INTO command_outcomes \
                 (command_id, command_type, request_digest, aggregate_id, status, sequence, \
                  error_code, error_message, error_field, error_kind) \
               VALUES ($8, $9, $10, $2, $11, $12, $13, $14, $15, $16)) \
             SELECT sequence, encode(hash, 'hex') FROM ev ORDER BY sequence"
        );
        let hashes: Vec<(i64, String)> = sqlx::query_as(&statement)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind((last + 1..=sequence).collect::<Vec<i64>>())
            .bind(
                events
                    .iter()
                    .map(DomainEvent::event_type)
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(DomainEvent::event_version)
                    .collect::<Vec<_>>(),
            )
            .bind(payloads)
            .bind(&metadata)
            .bind(ctx.command_id)
            .bind(&ctx.command_type)
            .bind(&ctx.request_digest)
            .bind(status)
            .bind(outcome.sequence.and_then(|s| i64::try_from(s).ok()))
            .bind(error.map(|e| e.code.as_str()))
            .bind(error.map(|e| e.message.as_str()))
            .bind(error.and_then(|e| e.field.as_deref()))
            .bind(error.and_then(|e| e.kind).map(ErrorKind::as_str))
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        if let Some(p) = &self.projection {
            p.apply(&mut tx, aggregate_id, aggregate)
                .await
                .map_err(classify)?;
        }
        // In the events' transaction, so a snapshot never runs ahead of
        // the stream; it names its last event's hash, so it is used only
        // while that event is the stream's. A state that does not
        // serialise costs the snapshot, never the command.
        let last_hash = hashes.last().map(|(_, h)| h.as_str());
        let state = match (snapshot, last_hash) {
            (true, Some(_)) => serde_json::to_string(aggregate)
                .map_err(|e| {
                    tracing::warn!(aggregate_type = A::TYPE, aggregate_id, error = %e,
                        "aggregate state not serialisable; no snapshot")
                })
                .ok(),
            _ => None,
        };
        if let (Some(state), Some(hash)) = (state, last_hash) {
            sqlx::query(
                "INSERT INTO snapshots \
                   (aggregate_type, aggregate_id, fold_version, sequence, event_hash, state) \
                 VALUES ($1, $2, $3, $4, decode($5, 'hex'), $6::text::json) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
                   fold_version = EXCLUDED.fold_version, sequence = EXCLUDED.sequence, \
                   event_hash = EXCLUDED.event_hash, state = EXCLUDED.state",
            )
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(fold_version::<A>())
            .bind(sequence)
            .bind(hash)
            .bind(state)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(hashes
            .into_iter()
            .map(|(seq, hash)| (u64::try_from(seq).unwrap_or(0), hash))
            .collect())
    }
}

/// Loads an aggregate in one query: the snapshot of this fold version
/// (when `snapshots`), then the events after it. A snapshot that no longer
/// reads as the state (a fold changed without its version) is ignored: the
/// stream is folded whole.
async fn fold<A: Aggregate + Folding>(
    pool: &PgPool,
    aggregate_id: &str,
    snapshots: bool,
) -> Result<Loaded<A>, StoreError> {
    let rows = sqlx::query(
        "WITH s AS (SELECT n.sequence, n.state FROM snapshots n \
                    JOIN events e ON e.aggregate_type = n.aggregate_type \
                     AND e.aggregate_id = n.aggregate_id AND e.sequence = n.sequence \
                     AND e.hash = n.event_hash \
                    WHERE $4 AND n.aggregate_type = $1 AND n.aggregate_id = $2 \
                      AND n.fold_version = $3) \
         SELECT sequence, NULL::text AS event_type, state::text AS payload FROM s \
         UNION ALL \
         SELECT sequence, event_type, payload::text FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 \
           AND sequence > COALESCE((SELECT sequence FROM s), 0) \
         ORDER BY sequence",
    )
    .bind(A::TYPE)
    .bind(aggregate_id)
    .bind(fold_version::<A>())
    .bind(snapshots)
    .fetch_all(pool)
    .await?;
    let mut loaded = Loaded {
        aggregate: A::default(),
        sequence: 0,
        snapshot_at: 0,
    };
    for row in rows {
        let event_type: Option<String> = row.try_get("event_type")?;
        let payload: String = row.try_get("payload")?;
        let sequence: i64 = row.try_get("sequence")?;
        match event_type {
            Some(event_type) => loaded
                .aggregate
                .apply(decode_event::<A::Event>(&event_type, &payload)?),
            None => match serde_json::from_str(&payload) {
                Ok(state) => {
                    loaded.aggregate = state;
                    loaded.snapshot_at = sequence;
                }
                Err(e) => {
                    tracing::warn!(aggregate_type = A::TYPE, aggregate_id, error = %e,
                        "snapshot unreadable; folding the whole stream");
                    return Box::pin(fold(pool, aggregate_id, false)).await;
                }
            },
        }
        loaded.sequence = sequence;
    }
    Ok(loaded)
}

fn fold_version<A: Folding>() -> i32 {
    i32::try_from(A::FOLD_VERSION).unwrap_or(i32::MAX)
}

/// The aggregates of type `A` whose state loaded through their snapshot is
/// not what their whole stream folds to: what the snapshot tests assert
/// empty for every aggregate type.
pub async fn snapshot_mismatches<A: Aggregate + Folding>(
    pool: &PgPool,
) -> Result<Vec<String>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM snapshots WHERE aggregate_type = $1 AND fold_version = $2",
    )
    .bind(A::TYPE)
    .bind(fold_version::<A>())
    .fetch_all(pool)
    .await?;
    let mut differ = vec![];
    for id in ids {
        let snapshotted = fold::<A>(pool, &id, true).await?;
        let replayed = fold::<A>(pool, &id, false).await?;
        if snapshotted.snapshot_at == 0
            || snapshotted.sequence != replayed.sequence
            || serde_json::to_value(&snapshotted.aggregate)?
                != serde_json::to_value(&replayed.aggregate)?
        {
            differ.push(id);
        }
    }
    Ok(differ)
}

enum AppendError {
    SequenceTaken,
    CommandTaken,
    Refused(Refused),
    Store(StoreError),
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn classify(e: sqlx::Error) -> AppendError {
    let constraint = e
        .as_database_error()
        .filter(|d| d.is_unique_violation())
        .and_then(|d| d.constraint().map(str::to_string));
    match constraint.as_deref() {
        Some("events_pkey") => AppendError::SequenceTaken,
        Some("command_outcomes_pkey") => AppendError::CommandTaken,
        _ => AppendError::Store(StoreError::Database(e)),
    }
}

/// Events are stored as their contract payload alone (the enum's variant is
/// the `event_type` column), so the table holds exactly what is published.
pub fn encode_event<E: DomainEvent>(event: &E) -> Result<String, StoreError> {
    let value = serde_json::to_value(event)?;
    let inner = match value {
        serde_json::Value::Object(mut map) if map.len() == 1 => map
            .remove(&event.event_type())
            .unwrap_or(serde_json::Value::Null),
        other => other,
    };
    Ok(serde_json::to_string(&inner)?)
}

pub fn decode_event<E: DomainEvent>(event_type: &str, payload: &str) -> Result<E, StoreError> {
    let inner: serde_json::Value = serde_json::from_str(payload)?;
    let mut map = serde_json::Map::new();
    map.insert(event_type.to_string(), inner);
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| StoreError::Corrupt(format!("{event_type}: {e}")))
}
