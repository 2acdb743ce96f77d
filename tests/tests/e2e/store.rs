//! The event store and relay against real Postgres and Kafka: idempotency
//! races, concurrent writers, and the xid8 watermark that never skips a
//! late commit.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use contracts::{Actor, ActorKind, OutcomeStatus, Topics};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use e2e::*;
use eventstore::relay::{Relay, RelayConfig};
use eventstore::{CodedError, CommandContext, Repository};
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use uuid::Uuid;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    total: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum CounterCommand {
    Add(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Added {
    by: u64,
    total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added(Added),
}

impl eventstore::Refusal for CounterEvent {}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Added".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum CounterError {
    #[error("zero is not an amount")]
    Zero,
}

impl CodedError for CounterError {
    fn code(&self) -> &'static str {
        "ZERO"
    }
    fn kind(&self) -> eventstore::ErrorKind {
        eventstore::ErrorKind::Invalid
    }
    fn field(&self) -> Option<&'static str> {
        Some("by")
    }
    fn codes() -> Vec<(&'static str, eventstore::ErrorKind)> {
        vec![("ZERO", eventstore::ErrorKind::Invalid)]
    }
}

impl eventstore::Folding for Counter {
    const FOLD_VERSION: u32 = 1;
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        c: CounterCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        let CounterCommand::Add(by) = c;
        if by == 0 {
            return Err(CounterError::Zero);
        }
        let total = self.total + by;
        sink.write(CounterEvent::Added(Added { by, total }), self)
            .await;
        Ok(())
    }

    fn apply(&mut self, e: CounterEvent) {
        let CounterEvent::Added(a) = e;
        self.total = a.total;
    }
}

fn ctx(command_id: Uuid, by: u64) -> CommandContext {
    CommandContext {
        command_id,
        command_type: "Add".into(),
        correlation_id: "store-test".into(),
        causation_id: None,
        actor: Actor::new(ActorKind::System, "test"),
        occurred_at: Utc::now(),
        request_digest: eventstore::request_digest("Add", &by),
    }
}

async fn repository(infra: &Infra) -> (Arc<Repository<Counter>>, sqlx::PgPool) {
    let db = infra.fresh_db("store").await;
    let pool = eventstore::connect(&db, 32).await.expect("pool");
    eventstore::migrate(&pool).await.expect("migrate");
    (Arc::new(Repository::new(pool.clone(), ())), pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_of_one_command_append_once_and_share_one_outcome() {
    let infra = Infra::get();
    let (repo, pool) = repository(&infra).await;
    let id = Uuid::now_v7();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.execute("c1", CounterCommand::Add(5), &ctx(id, 5))
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut fresh = 0;
    for t in tasks {
        let done = t.await.expect("task").expect("executed");
        fresh += usize::from(!done.replayed);
        assert_eq!(done.aggregate.total, 5);
        outcomes.push(done.outcome);
    }
    assert_eq!(fresh, 1, "exactly one execution is not a replay");
    assert!(
        outcomes.windows(2).all(|w| w[0] == w[1]),
        "one outcome for all"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 1);

    // The same id with another request is refused, not answered.
    let clash = repo
        .execute("c1", CounterCommand::Add(6), &ctx(id, 6))
        .await;
    assert!(matches!(clash, Err(eventstore::StoreError::DigestMismatch)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_aggregate_all_apply_in_one_unbroken_chain() {
    let infra = Infra::get();
    let (repo, pool) = repository(&infra).await;
    let tasks: Vec<_> = (1..=8u64)
        .map(|by| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.execute("c2", CounterCommand::Add(by), &ctx(Uuid::now_v7(), by))
                    .await
            })
        })
        .collect();
    for t in tasks {
        let done = t.await.expect("task").expect("executed despite contention");
        assert_eq!(done.outcome.status, OutcomeStatus::Accepted);
    }
    let (counter, last) = repo.load("c2").await.expect("load");
    assert_eq!(counter.total, 36);
    assert_eq!(last, 8);
    let report = eventstore::chain::verify(&pool, "Counter", "c2")
        .await
        .expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejection_is_stored_and_answered_again_without_an_event() {
    let infra = Infra::get();
    let (repo, pool) = repository(&infra).await;
    let id = Uuid::now_v7();
    let first = repo
        .execute("c3", CounterCommand::Add(0), &ctx(id, 0))
        .await
        .expect("executed");
    assert_eq!(first.outcome.status, OutcomeStatus::Rejected);
    let err = first.outcome.error.clone().expect("error");
    assert_eq!(
        (err.code.as_str(), err.field.as_deref(), err.kind),
        ("ZERO", Some("by"), Some(eventstore::ErrorKind::Invalid))
    );
    assert!(!first.replayed);
    let again = repo
        .execute("c3", CounterCommand::Add(0), &ctx(id, 0))
        .await
        .expect("executed");
    assert!(again.replayed);
    // The replay answers from the stored row, kind included.
    assert_eq!(again.outcome, first.outcome);
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
}

const INSERT: &str = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
     VALUES ('Counter', $1, 1, 'Added', '1', '{\"by\":1,\"total\":1}', \
     json_build_object('occurred_at', '2026-11-01T00:00:00Z', 'command_id', gen_random_uuid(), \
       'correlation_id', 'relay-test', 'actor', json_build_object('kind', 'system', 'id', 'test')))";

/// A relay of its own over a fresh event store and a one-partition prefix
/// (the topic's order is the order of publication), running and active.
struct TestRelay {
    db: String,
    pool: sqlx::PgPool,
    topics: Topics,
    stats: Arc<eventstore::relay::RelayStats>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestRelay {
    async fn start(infra: &Infra, name: &str, idle_wait: Option<Duration>) -> Self {
        let db = infra.fresh_db(name).await;
        let pool = eventstore::connect(&db, 8).await.expect("pool");
        eventstore::migrate(&pool).await.expect("migrate");
        let prefix = infra.prefix_with_partitions(1).await;
        let topics = Topics::new(&prefix);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut config = RelayConfig::new(
            name,
            &infra.kafka("issuance"),
            topics.events("issuance"),
            topics.relay_checkpoints("issuance"),
        );
        config.reader_group = format!("{prefix}.issuance.relay-{name}");
        if let Some(wait) = idle_wait {
            config.idle_wait = wait;
        }
        let relay = Relay::new(pool.clone(), config);
        let stats = relay.stats();
        let task = tokio::spawn(relay.run(stopped));
        let active = wait_until(Duration::from_secs(30), || async {
            stats.active.load(std::sync::atomic::Ordering::Relaxed)
        })
        .await;
        assert!(active, "relay became active");
        Self {
            db,
            pool,
            topics,
            stats,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.send(true).expect("stop");
        self.task.await.expect("relay stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_waits_for_a_late_commit_instead_of_skipping_it() {
    let infra = Infra::get();
    // The relay runs first: the open transaction below holds back every
    // watermark of the cluster (other tests' too) and should do so briefly.
    let relay = TestRelay::start(&infra, "late", None).await;
    let (db, pool, topics) = (relay.db.clone(), relay.pool.clone(), &relay.topics);

    // An early transaction writes first but commits last.
    let mut early = sqlx::PgConnection::connect(&db).await.expect("connect");
    let mut tx = early.begin().await.expect("begin");
    sqlx::query(INSERT)
        .bind("early")
        .execute(&mut *tx)
        .await
        .expect("insert early");
    sqlx::query(INSERT)
        .bind("late")
        .execute(&pool)
        .await
        .expect("insert late");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = read_topic(
        &infra.operator(),
        &topics.events("issuance"),
        0,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        before.is_empty(),
        "nothing behind a running transaction is published"
    );

    tx.commit().await.expect("commit early");
    let after = read_topic(
        &infra.operator(),
        &topics.events("issuance"),
        2,
        Duration::from_secs(30),
    )
    .await;
    let order: Vec<String> = after
        .iter()
        .map(|m| {
            json_of(m)["aggregate_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        order,
        vec!["early", "late"],
        "published in commit-safe order, nothing skipped"
    );
    relay.stop().await;
}

/// The relay sleeps until a commit wakes it: with its fallback poll set to a
/// minute, a committed event still reaches Kafka at once (the
/// `events_appended` trigger's NOTIFY), and one held back by an older open
/// transaction follows that transaction's commit as promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_wakes_on_commit_rather_than_on_its_poll() {
    let infra = Infra::get();
    let relay = TestRelay::start(&infra, "wake", Some(Duration::from_secs(60))).await;
    let (db, pool, stats) = (relay.db.clone(), relay.pool.clone(), relay.stats.clone());
    // Past the relay's first (empty) poll: from here only a wake-up helps.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let published = |n: u64| {
        let stats = stats.clone();
        async move { stats.published.load(std::sync::atomic::Ordering::Relaxed) >= n }
    };
    let started = std::time::Instant::now();
    sqlx::query(INSERT)
        .bind("woken")
        .execute(&pool)
        .await
        .expect("insert");
    assert!(
        wait_until(Duration::from_secs(20), || published(1)).await,
        "published on commit"
    );
    let first = started.elapsed();

    // Held back by an older open transaction, then released by its commit.
    let mut older = sqlx::PgConnection::connect(&db).await.expect("connect");
    let mut tx = older.begin().await.expect("begin");
    sqlx::query(INSERT)
        .bind("older")
        .execute(&mut *tx)
        .await
        .expect("insert older");
    sqlx::query(INSERT)
        .bind("newer")
        .execute(&pool)
        .await
        .expect("insert newer");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!published(2).await, "nothing passes an open transaction");
    let released = std::time::Instant::now();
    tx.commit().await.expect("commit older");
    assert!(
        wait_until(Duration::from_secs(20), || published(3)).await,
        "both published after the older commit"
    );
    let second = released.elapsed();
    // Other tests' open transactions on the same server can hold the
    // watermark for seconds; a minute is what the poll alone would take.
    assert!(
        first < Duration::from_secs(20) && second < Duration::from_secs(20),
        "woken by commits, not by the minute-long poll ({first:?}, {second:?})"
    );
    println!("commit to published: {first:?}; after the older commit: {second:?}");
    relay.stop().await;
}

/// `Counter` after a change of its fold: it also counts its additions, a
/// field a snapshot of the old fold does not have.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CounterV2 {
    total: u64,
    #[serde(default)]
    adds: u64,
}

impl eventstore::Folding for CounterV2 {
    const FOLD_VERSION: u32 = 2;
}

impl Aggregate for CounterV2 {
    const TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        c: CounterCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        let CounterCommand::Add(by) = c;
        let total = self.total + by;
        sink.write(CounterEvent::Added(Added { by, total }), self)
            .await;
        Ok(())
    }

    fn apply(&mut self, e: CounterEvent) {
        let CounterEvent::Added(a) = e;
        self.total = a.total;
        self.adds += 1;
    }
}

/// The row of `snapshots` for aggregate `id`: fold version and sequence.
async fn snapshot_row(pool: &sqlx::PgPool, id: &str) -> Option<(i32, i64)> {
    sqlx::query_as("SELECT fold_version, sequence FROM snapshots WHERE aggregate_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .expect("snapshot row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_load_what_the_stream_replays_and_a_changed_fold_ignores_them() {
    let infra = Infra::get();
    let (_, pool) = repository(&infra).await;
    let v1 = Repository::<Counter>::new(pool.clone(), ()).with_snapshot_every(10);
    for n in 1..=25u64 {
        v1.execute("c", CounterCommand::Add(n), &ctx(Uuid::now_v7(), n))
            .await
            .expect("added");
    }
    // Taken in the commands' transactions, every ten events.
    assert_eq!(snapshot_row(&pool, "c").await, Some((1, 20)));
    let (loaded, at) = v1.load("c").await.expect("load");
    let (replayed, replayed_at) = v1.replay_all("c").await.expect("replay");
    assert_eq!((loaded.total, at), (325, 25));
    assert_eq!((replayed.total, replayed_at), (325, 25));
    assert!(eventstore::snapshot_mismatches::<Counter>(&pool)
        .await
        .expect("checked")
        .is_empty());

    // A new fold ignores the old fold's snapshot: folded from the first
    // event, it counts all 25 additions (the old snapshot would have
    // said 0 and 5), and its next command stores a snapshot of its own.
    let v2 = Repository::<CounterV2>::new(pool.clone(), ()).with_snapshot_every(10);
    let (state, at) = v2.load("c").await.expect("load");
    assert_eq!((state.total, state.adds, at), (325, 25, 25));
    v2.execute("c", CounterCommand::Add(1), &ctx(Uuid::now_v7(), 1))
        .await
        .expect("added");
    assert_eq!(snapshot_row(&pool, "c").await, Some((2, 26)));
    let (state, _) = v2.load("c").await.expect("load");
    assert_eq!((state.total, state.adds), (326, 26));
    assert!(eventstore::snapshot_mismatches::<CounterV2>(&pool)
        .await
        .expect("checked")
        .is_empty());

    // A snapshot that does not read as the state is ignored, and reported.
    sqlx::query("UPDATE snapshots SET state = '\"garbage\"' WHERE aggregate_id = 'c'")
        .execute(&pool)
        .await
        .expect("spoil");
    let (state, at) = v2.load("c").await.expect("load");
    assert_eq!((state.total, state.adds, at), (326, 26, 26));
    assert_eq!(
        eventstore::snapshot_mismatches::<CounterV2>(&pool)
            .await
            .expect("checked"),
        vec!["c".to_string()]
    );
}

/// Every service's migrations run after the event store's against one
/// `_sqlx_migrations` table: a version both use would read as the other's,
/// "previously applied but modified", and stop the service at start-up.
#[test]
fn no_service_migration_shares_a_version_with_the_event_stores() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let versions = |dir: std::path::PathBuf| -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|f| {
                let name = f.expect("entry").file_name().to_string_lossy().to_string();
                name.ends_with(".sql")
                    .then(|| name.split('_').next().unwrap_or_default().to_string())
            })
            .collect()
    };
    let store = versions(root.join("libs/eventstore/migrations"));
    assert!(!store.is_empty());
    for service in [
        "activation",
        "domain-binding",
        "grant-sync",
        "issuance",
        "projector",
    ] {
        let own = versions(root.join("services").join(service).join("migrations"));
        assert!(!own.is_empty(), "{service} has migrations");
        let shared: Vec<&String> = own.iter().filter(|v| store.contains(v)).collect();
        assert!(
            shared.is_empty(),
            "{service} reuses event-store versions {shared:?}"
        );
    }
}
