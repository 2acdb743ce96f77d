//! `/healthz` (the process is alive) and `/readyz` (its dependencies are
//! reachable, so a load balancer may route to it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use rdkafka::producer::{BaseProducer, Producer};

use crate::problem::Problem;

/// How long one check may take before it counts as failed; probes are
/// usually given a few seconds in total.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency `/readyz` verifies.
#[derive(Clone)]
pub enum ReadyCheck {
    /// `SELECT 1` on the pool.
    Postgres(sqlx::PgPool),
    /// Broker metadata round trip, as the service's principal.
    Kafka { kafka: bus::Kafka },
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
}

/// The checks of one service, with the state they keep between probes.
pub(crate) struct Readiness {
    checks: Vec<Runner>,
}

enum Runner {
    Postgres(sqlx::PgPool),
    Kafka {
        kafka: bus::Kafka,
        // Created on first probe and reused: a client per probe would open
        // fresh broker connections (and threads) every few seconds.
        producer: Mutex<Option<Arc<BaseProducer>>>,
    },
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(Runner::name).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

impl Readiness {
    pub(crate) fn new(checks: Vec<ReadyCheck>) -> Self {
        let checks = checks
            .into_iter()
            .map(|check| match check {
                ReadyCheck::Postgres(pool) => Runner::Postgres(pool),
                ReadyCheck::Kafka { kafka } => Runner::Kafka {
                    kafka,
                    producer: Mutex::new(None),
                },
            })
            .collect();
        Self { checks }
    }

    /// Names of the checks that failed, in registration order.
    pub(crate) async fn failures(&self) -> Vec<&'static str> {
        let results = futures::future::join_all(self.checks.iter().map(Runner::run)).await;
        results.into_iter().flatten().collect()
    }
}

impl Runner {
    fn name(&self) -> &'static str {
        match self {
            Runner::Postgres(_) => "postgres",
            Runner::Kafka { .. } => "kafka",
        }
    }

    /// `None` when healthy, else the check's name. The cause is logged here
    /// and never returned, so it cannot reach a client.
    async fn run(&self) -> Option<&'static str> {
        let result = match self {
            Runner::Postgres(pool) => check_postgres(pool).await,
            Runner::Kafka { kafka, producer } => match kafka_producer(kafka, producer) {
                Ok(producer) => check_kafka(producer).await,
                Err(err) => Err(err),
            },
        };
        match result {
            Ok(()) => None,
            Err(error) => {
                tracing::warn!(check = self.name(), %error, "readiness check failed");
                Some(self.name())
            }
        }
    }
}

async fn check_postgres(pool: &sqlx::PgPool) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

fn kafka_producer(
    kafka: &bus::Kafka,
    slot: &Mutex<Option<Arc<BaseProducer>>>,
) -> Result<Arc<BaseProducer>, String> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(producer) = slot.as_ref() {
        return Ok(Arc::clone(producer));
    }
    let producer: BaseProducer = kafka.client().create().map_err(|err| err.to_string())?;
    let producer = Arc::new(producer);
    *slot = Some(Arc::clone(&producer));
    Ok(producer)
}

async fn check_kafka(producer: Arc<BaseProducer>) -> Result<(), String> {
    // fetch_metadata blocks the calling thread for up to the timeout.
    let fetch = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, CHECK_TIMEOUT)
            .map(|_| ())
            .map_err(|err| err.to_string())
    });
    match fetch.await {
        Ok(result) => result,
        Err(err) => Err(format!("metadata task failed: {err}")),
    }
}

/// `GET /healthz`: answers as long as the process can serve HTTP.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when every check passes, else 503 `NOT_READY`
/// naming the failed checks.
pub(crate) async fn readyz(readiness: web::Data<Readiness>) -> Result<HttpResponse, Problem> {
    let failed = readiness.failures().await;
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
