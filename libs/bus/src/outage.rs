//! How a service speaks of a dependency that went away: one ERROR when it
//! is first seen unreachable, a WARN summary (how long, how many failed
//! operations, the last cause) at most every [`SUMMARY_EVERY`] while it
//! stays away, and one INFO when it answers again. Without this, every
//! failed poll, send and query logs its own line: tens of lines a second
//! per service during a broker outage, which bury the one that matters.
//!
//! One tracker per dependency and process ([`kafka`], [`postgres`]): a
//! process is one service, and an outage is the dependency's, not a
//! client's. Whether a service answers requests while a dependency is down
//! is not decided here but by its readiness probes.

use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest interval between two summaries of one outage.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);
/// How long no failure may be reported before an outage counts as over:
/// when a dependency returns, a probe reaches it a little before every
/// client has reconnected, and their last failures belong to the outage
/// that is ending, not to a new one.
pub const QUIET_FOR: Duration = Duration::from_secs(3);

/// The outage state of one dependency.
#[derive(Debug)]
pub struct Outage {
    name: &'static str,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    down_since: Option<Instant>,
    last_failure: Option<Instant>,
    last_summary: Option<Instant>,
    failures: u64,
    since_summary: u64,
    last_error: String,
}

/// What a call to [`Outage::failed`] or [`Outage::recovered`] logged, for
/// tests and for callers that add their own context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// The first failure: one ERROR.
    Began,
    /// A summary of the failures since the last one: one WARN.
    Summary,
    /// Counted, not logged.
    Counted,
    /// The dependency answers again: one INFO.
    Ended,
    /// It was not down: nothing.
    Nothing,
}

static KAFKA: Outage = Outage::new("kafka");
static POSTGRES: Outage = Outage::new("postgres");

/// The broker's tracker.
pub fn kafka() -> &'static Outage {
    &KAFKA
}

/// The database's tracker.
pub fn postgres() -> &'static Outage {
    &POSTGRES
}

/// The outage a failure belongs to, if any: the error's own kind says a
/// dependency is unreachable, or (the default, for errors that carry no
/// kind) a dependency is already known to be down.
pub trait Unreachable {
    fn outage(&self) -> Option<&'static Outage> {
        down()
    }
}

/// The dependency known to be down, if one is.
pub fn down() -> Option<&'static Outage> {
    [postgres(), kafka()].into_iter().find(|o| o.is_down())
}

/// Logs a failure of `what` at WARN, unless it belongs to an outage, whose
/// tracker tells it instead.
pub fn warn<E: Unreachable + Display + ?Sized>(what: &str, error: &E) {
    match error.outage() {
        Some(o) => {
            o.failed(what, &error);
        }
        None => tracing::warn!(%error, "{what}"),
    }
}

/// [`warn`] at ERROR.
pub fn error<E: Unreachable + Display + ?Sized>(what: &str, error: &E) {
    match error.outage() {
        Some(o) => {
            o.failed(what, &error);
        }
        None => tracing::error!(%error, "{what}"),
    }
}

impl Unreachable for sqlx::Error {
    fn outage(&self) -> Option<&'static Outage> {
        use sqlx::Error::*;
        let lost = match self {
            Io(_) | Tls(_) | PoolTimedOut | PoolClosed | WorkerCrashed | Protocol(_) => true,
            // Connection exceptions (class 08), the server shutting down or
            // starting (57P01-57P03), too many connections.
            Database(e) => e
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
            _ => false,
        };
        // Anything else is the query's own (a refused write, a denied
        // permission): logged as it comes, unless the database is away,
        // when it is part of that outage. Never part of the broker's.
        (lost || postgres().is_down()).then(postgres)
    }
}

impl Unreachable for rdkafka::error::KafkaError {
    fn outage(&self) -> Option<&'static Outage> {
        // What a client of a healthy cluster meets (authorisation, an
        // unknown topic, a fenced producer, too few in-sync replicas) is
        // logged as it comes, unless the broker is away, when it is part of
        // that outage; anything else is the broker's. Never the database's.
        use rdkafka::types::RDKafkaErrorCode::*;
        match self.rdkafka_error_code() {
            Some(
                TopicAuthorizationFailed
                | GroupAuthorizationFailed
                | ClusterAuthorizationFailed
                | TransactionalIdAuthorizationFailed
                | SaslAuthenticationFailed
                | Authentication
                | UnknownTopicOrPartition
                | UnknownTopic
                | MessageSizeTooLarge
                | InvalidMessage
                | InvalidRecord
                | ProducerFenced
                | Fenced
                | InvalidProducerEpoch
                | NotEnoughReplicas
                | NotEnoughReplicasAfterAppend
                | InvalidReplicationFactor
                | InvalidConfig
                | PolicyViolation,
            ) => kafka().is_down().then(kafka),
            _ => Some(kafka()),
        }
    }
}

impl Unreachable for str {}
impl Unreachable for String {}

impl Outage {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            state: Mutex::new(State {
                down_since: None,
                last_failure: None,
                last_summary: None,
                failures: 0,
                since_summary: 0,
                last_error: String::new(),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether a failure was seen and no success since.
    pub fn is_down(&self) -> bool {
        self.lock().down_since.is_some()
    }

    /// An operation on the dependency failed (`what` says which); logs
    /// only what the outage's story needs.
    pub fn failed(&self, what: &str, error: &dyn Display) -> Logged {
        self.failed_at(Instant::now(), what, error)
    }

    fn failed_at(&self, now: Instant, what: &str, error: &dyn Display) -> Logged {
        let mut s = self.lock();
        s.last_failure = Some(now);
        s.failures += 1;
        s.since_summary += 1;
        s.last_error = error.to_string();
        let Some(since) = s.down_since else {
            s.down_since = Some(now);
            s.last_summary = Some(now);
            s.since_summary = 0;
            tracing::error!(
                dependency = self.name,
                operation = what,
                %error,
                "{} unreachable",
                self.name
            );
            return Logged::Began;
        };
        if s.last_summary
            .is_some_and(|t| now.duration_since(t) < SUMMARY_EVERY)
        {
            return Logged::Counted;
        }
        tracing::warn!(
            dependency = self.name,
            down_for_s = now.duration_since(since).as_secs(),
            failures = s.since_summary,
            last_error = %s.last_error,
            "{} still unreachable",
            self.name
        );
        s.last_summary = Some(now);
        s.since_summary = 0;
        Logged::Summary
    }

    /// The dependency answered: the outage is over once no failure was
    /// reported for [`QUIET_FOR`] (a later call ends it).
    pub fn recovered(&self) -> Logged {
        self.recovered_at(Instant::now())
    }

    fn recovered_at(&self, now: Instant) -> Logged {
        let mut s = self.lock();
        let Some(since) = s.down_since else {
            return Logged::Nothing;
        };
        if s.last_failure
            .is_some_and(|t| now.duration_since(t) < QUIET_FOR)
        {
            return Logged::Nothing;
        }
        tracing::info!(
            dependency = self.name,
            down_for_ms = now.duration_since(since).as_millis() as u64,
            failures = s.failures,
            "{} reachable again",
            self.name
        );
        *s = State::default();
        Logged::Ended
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_logs_its_start_a_summary_per_interval_and_its_end() {
        let _tracing = crate::TRACING.lock().unwrap_or_else(|e| e.into_inner());
        let o = Outage::new("db");
        let t0 = Instant::now();
        assert_eq!(o.recovered_at(t0), Logged::Nothing);
        assert_eq!(o.failed_at(t0, "query", &"refused"), Logged::Began);
        assert!(o.is_down());
        for i in 1..100 {
            let t = t0 + Duration::from_millis(i * 100);
            assert_eq!(o.failed_at(t, "query", &"refused"), Logged::Counted);
        }
        let t = t0 + SUMMARY_EVERY;
        assert_eq!(o.failed_at(t, "query", &"refused"), Logged::Summary);
        assert_eq!(
            o.failed_at(t + Duration::from_secs(1), "q", &"x"),
            Logged::Counted
        );
        assert_eq!(o.failed_at(t + SUMMARY_EVERY, "q", &"x"), Logged::Summary);
        // Answered, but a failure came less than QUIET_FOR before.
        let last = t + SUMMARY_EVERY;
        assert_eq!(o.recovered_at(last + QUIET_FOR / 2), Logged::Nothing);
        assert!(o.is_down());
        assert_eq!(o.recovered_at(t + SUMMARY_EVERY * 2), Logged::Ended);
        assert!(!o.is_down());
        assert_eq!(o.recovered_at(t + SUMMARY_EVERY * 2), Logged::Nothing);
        // A new outage starts its own story.
        assert_eq!(o.failed_at(t + SUMMARY_EVERY * 3, "q", &"x"), Logged::Began);
    }
}
