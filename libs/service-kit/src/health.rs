//! `/healthz` (the process is alive) and `/readyz` (its dependencies are
//! reachable, so a load balancer may route to it).
//!
//! `/readyz` never waits on a dependency: each one is probed in the
//! background (every [`EVERY_WHEN_UP`], or [`EVERY_WHEN_DOWN`] while it
//! fails) and `/readyz` answers from the last result. A probe that fails
//! marks its dependency down at once and tells the outage's story
//! ([`bus::outage`]); the first one that succeeds marks it up again. The
//! database's state also decides whether a request waits for it at all
//! (see [`fail_fast`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use rdkafka::producer::Producer;
use sqlx::Connection;
use tokio::sync::watch;

use crate::problem::Problem;

/// How often a reachable dependency is probed.
pub const EVERY_WHEN_UP: Duration = Duration::from_millis(500);
/// How often an unreachable one is: its return is seen within about this
/// plus a probe's round trip.
pub const EVERY_WHEN_DOWN: Duration = Duration::from_millis(200);
/// How long one probe may take. A probe that fails outright (a refused
/// connection) marks its dependency down at once; one that only runs out
/// of time does so when the probe before it failed too, so a busy machine
/// does not flap readiness. The database's probe has a connection of its
/// own, so a saturated pool never fails it; the broker's asks for one
/// topic's metadata, not the whole cluster's.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The broker probe's client reconnects within this of the broker's
/// return (librdkafka's default backoff grows to 10 s).
const KAFKA_RECONNECT_MAX_MS: &str = "200";
/// A dependency `/readyz` verifies.
#[derive(Clone)]
pub enum ReadyCheck {
    /// `SELECT 1` on a connection of the probe's own, to the pool's server.
    Postgres(sqlx::PgPool),
    /// A metadata round trip for `topic` (one the service uses), as the
    /// service's principal.
    Kafka { kafka: bus::Kafka, topic: String },
}

impl std::fmt::Debug for ReadyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No connection details: broker lists may embed credentials.
        f.write_str(self.name())
    }
}

impl ReadyCheck {
    /// The name `/readyz` reports when the check fails.
    pub fn name(&self) -> &'static str {
        match self {
            ReadyCheck::Postgres(_) => "postgres",
            ReadyCheck::Kafka { .. } => "kafka",
        }
    }

    fn outage(&self) -> &'static bus::outage::Outage {
        match self {
            ReadyCheck::Postgres(_) => bus::outage::postgres(),
            ReadyCheck::Kafka { .. } => bus::outage::kafka(),
        }
    }
}

/// What the last probe of a dependency found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// Not probed yet.
    Unknown,
    Up,
    Down,
}

/// The checks of one service and what their probes last found.
pub(crate) struct Readiness {
    probes: Vec<(ReadyCheck, watch::Sender<Probed>)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.probes.iter().map(|(c, _)| c.name()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

impl Readiness {
    /// The checks, probed from now on in the background of the current
    /// Tokio runtime (when there is one) until the readiness is dropped.
    pub(crate) fn start(checks: Vec<ReadyCheck>) -> Arc<Self> {
        let readiness = Arc::new(Self {
            probes: checks
                .into_iter()
                .map(|c| (c, watch::channel(Probed::Unknown).0))
                .collect(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for i in 0..readiness.probes.len() {
                runtime.spawn(probe(Arc::downgrade(&readiness), i));
            }
        }
        readiness
    }

    /// Names of the checks whose dependency is not known to be up, in
    /// registration order.
    pub(crate) fn failures(&self) -> Vec<String> {
        self.probes
            .iter()
            .filter_map(|(c, state)| match *state.borrow() {
                Probed::Up => None,
                Probed::Down => Some(c.name().to_owned()),
                Probed::Unknown => Some(format!("{} (not yet probed)", c.name())),
            })
            .collect()
    }

    /// The database probe's findings, when the service has one.
    pub(crate) fn database(&self) -> Option<watch::Receiver<Probed>> {
        self.probes
            .iter()
            .find(|(c, _)| matches!(c, ReadyCheck::Postgres(_)))
            .map(|(_, state)| state.subscribe())
    }
}

/// Probes check `i` of `readiness` until it is dropped.
async fn probe(readiness: Weak<Readiness>, i: usize) {
    let mut prober = match readiness.upgrade() {
        Some(r) => Prober::of(&r.probes[i].0),
        None => return,
    };
    let mut timed_out_before = false;
    loop {
        let result = prober.run().await;
        let Some(r) = readiness.upgrade() else { return };
        let (check, state) = &r.probes[i];
        let was = *state.borrow();
        let now = match result {
            Ok(()) => {
                check.outage().recovered();
                timed_out_before = false;
                Probed::Up
            }
            Err(Failure::TimedOut(error)) if !timed_out_before && was != Probed::Down => {
                timed_out_before = true;
                tracing::debug!(check = check.name(), %error, "readiness probe timed out once");
                was
            }
            Err(Failure::TimedOut(error) | Failure::Failed(error)) => {
                check.outage().failed("readiness probe", &error);
                Probed::Down
            }
        };
        state.send_if_modified(|s| std::mem::replace(s, now) != now);
        drop(r);
        tokio::time::sleep(match now {
            Probed::Up => EVERY_WHEN_UP,
            _ => EVERY_WHEN_DOWN,
        })
        .await;
    }
}

/// Why a probe failed (the cause is logged by the outage tracker, never
/// shown to a client).
enum Failure {
    TimedOut(String),
    Failed(String),
}

/// One dependency's probe, with the client it keeps between probes.
enum Prober {
    Postgres {
        options: Box<sqlx::postgres::PgConnectOptions>,
        conn: Option<sqlx::PgConnection>,
    },
    Kafka {
        kafka: bus::Kafka,
        topic: String,
        producer: Option<Arc<bus::Producer>>,
    },
}

impl Prober {
    fn of(check: &ReadyCheck) -> Self {
        match check {
            ReadyCheck::Postgres(pool) => Prober::Postgres {
                options: Box::new((*pool.connect_options()).clone()),
                conn: None,
            },
            ReadyCheck::Kafka { kafka, topic } => Prober::Kafka {
                kafka: kafka.clone(),
                topic: topic.clone(),
                producer: None,
            },
        }
    }

    /// Ok when the dependency answered in time.
    async fn run(&mut self) -> Result<(), Failure> {
        match self {
            Prober::Postgres { options, conn } => {
                let probe = async {
                    if conn.is_none() {
                        *conn = Some(sqlx::PgConnection::connect_with(options).await?);
                    }
                    let c = conn.as_mut().expect("connected above");
                    sqlx::query("SELECT 1").execute(c).await.map(|_| ())
                };
                let result = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                    Ok(r) => r.map_err(|e| Failure::Failed(e.to_string())),
                    Err(_) => Err(Failure::TimedOut(format!(
                        "no answer within {PROBE_TIMEOUT:?}"
                    ))),
                };
                if result.is_err() {
                    // A fresh connection next time: this one may be dead.
                    *conn = None;
                }
                result
            }
            Prober::Kafka {
                kafka,
                topic,
                producer,
            } => {
                let client = match producer {
                    Some(p) => Arc::clone(p),
                    None => {
                        let p: bus::Producer = kafka
                            .client()
                            .set("reconnect.backoff.ms", "50")
                            .set("reconnect.backoff.max.ms", KAFKA_RECONNECT_MAX_MS)
                            .create_with_context(bus::Quiet)
                            .map_err(|e| Failure::Failed(e.to_string()))?;
                        Arc::clone(producer.insert(Arc::new(p)))
                    }
                };
                // fetch_metadata blocks its thread for up to the timeout.
                let topic = topic.clone();
                tokio::task::spawn_blocking(move || {
                    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
                    let one = (!topic.is_empty()).then_some(topic.as_str());
                    match client.client().fetch_metadata(one, PROBE_TIMEOUT) {
                        Ok(_) => Ok(()),
                        Err(e @ KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut)) => {
                            Err(Failure::TimedOut(e.to_string()))
                        }
                        Err(e) => Err(Failure::Failed(e.to_string())),
                    }
                })
                .await
                .unwrap_or_else(|e| Err(Failure::Failed(format!("metadata task failed: {e}"))))
            }
        }
    }
}

/// `GET /healthz`: answers as long as the process can serve HTTP.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when every dependency's last probe reached it, else
/// 503 `NOT_READY` naming the others. Never waits on a dependency.
pub(crate) async fn readyz(readiness: web::Data<Readiness>) -> Result<HttpResponse, Problem> {
    let failed = readiness.failures();
    if failed.is_empty() {
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })));
    }
    Err(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "NOT_READY",
        "Service Unavailable",
    )
    .with_detail(format!("failed checks: {}", failed.join(", "))))
}

/// The answer of a request the database cannot serve now.
fn store_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "STORE_UNAVAILABLE",
        "The event store is unavailable",
    )
    .with_detail("the database is unreachable; retry later")
}

/// Longest a route served from memory may take while the database is
/// down: past it, the request is waiting for the database after all (a
/// credential or a license not in memory yet) and is answered as any other.
const FROM_MEMORY_WHILE_DOWN: Duration = Duration::from_secs(1);

/// Middleware (every service's App has it): while the database's probe
/// finds it down, a request to one of the service's own routes (`/v1/…`
/// and the JWKS) is answered 503 `STORE_UNAVAILABLE` with `Retry-After` at
/// once instead of after the pool's acquire timeout.
/// - A reading request already waiting is answered so as soon as the probe
///   finds the database down (its work is dropped, as when a client hangs
///   up); a writing one runs to its end, since it may have committed, and
///   an answer of "unavailable" must mean it did nothing.
/// - Routes in `from_memory` (which append nothing) keep serving, within
///   [`FROM_MEMORY_WHILE_DOWN`].
///
/// While the database is up, nothing changes.
pub(crate) async fn fail_fast(
    database: Option<watch::Receiver<Probed>>,
    from_memory: Arc<[&'static str]>,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // The path the router matches: percent-decoded, so no spelling of a
    // route escapes the guard or its list.
    let path = req.match_info().as_str();
    let own = path.starts_with("/v1/") || path == crate::keys::JWKS_PATH;
    let Some(mut database) = database.filter(|_| own) else {
        return next.call(req).await;
    };
    let down = *database.borrow_and_update() == Probed::Down;
    if from_memory.contains(&path) {
        if !down {
            return next.call(req).await;
        }
        return match tokio::time::timeout(FROM_MEMORY_WHILE_DOWN, next.call(req)).await {
            Ok(res) => res,
            Err(_) => Err(store_unavailable().into()),
        };
    }
    if down {
        // A path no route serves keeps its 404.
        if req.resource_map().match_pattern(path).is_none() {
            return next.call(req).await;
        }
        let refusal = store_unavailable().error_response();
        return Ok(req.into_response(refusal));
    }
    if !req.method().is_safe() {
        return next.call(req).await;
    }
    tokio::select! {
        res = next.call(req) => res,
        Ok(_) = database.wait_for(|p| *p == Probed::Down) => Err(store_unavailable().into()),
    }
}
