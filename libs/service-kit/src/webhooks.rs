//! Webhooks: events delivered to the callback URL of an API key (or, later,
//! a license client), driven from the events, never from a request.
//!
//! A consumer of the events topics decides which endpoints want an event
//! and writes one `webhook_deliveries` row per endpoint in its offset's
//! transaction ([`enqueue`]): a crash loses none and a replay adds none.
//! [`run`] sends what is due: it claims a batch (the claim is committed, so
//! a second instance skips it and a crash hands it on once the claim
//! lapses), POSTs each body signed with the service's key (a detached ES256
//! JWS, `kid` from its JWKS), and records the outcome. A failure is retried
//! with exponential backoff and jitter until the retry window closes; an
//! endpoint failing without a success for long enough is disabled by its
//! owner, as an event. Delivery is at least once: a crash after the
//! receiver answered and before the outcome is recorded sends the same
//! delivery again, under the same id.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::EventEnvelope;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::keys::Signer;
use crate::outbound::{self, OutboundConfig};
use crate::problem::Problem;

/// The JWS header `typ` of a delivery's signature: it passes for no other
/// document.
pub const TYP: &str = "webhook+jws";
/// The request header carrying the detached JWS.
pub const SIGNATURE_HEADER: &str = "Licensing-Signature";
/// The request header carrying the delivery id (also in the body).
pub const DELIVERY_HEADER: &str = "Licensing-Delivery";

/// How deliveries are sent, retried and given up on.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub outbound: OutboundConfig,
    /// Plain `http://` callback URLs (development: `make run`).
    pub allow_http: bool,
    /// A delivery is retried until this long after its first attempt.
    pub retry_for: Duration,
    /// The wait after the first failure; doubled after each one.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// An endpoint is disabled after this many failed attempts in a row...
    pub disable_after_failures: u32,
    /// ...spanning at least this long (one bad minute disables nothing).
    pub disable_after: Duration,
    /// How often due deliveries are looked for.
    pub poll: Duration,
}

impl WebhookConfig {
    pub fn from_common(c: &crate::config::CommonConfig) -> Result<Self, String> {
        let allowed_networks = outbound::networks(&c.webhook_allowed_networks)
            .map_err(|bad| format!("webhook_allowed_networks: {bad:?} is no CIDR"))?;
        // Bounded, so that every interval the database computes stays
        // representable.
        const DAY: u64 = 86_400;
        Ok(Self {
            outbound: OutboundConfig {
                timeout: Duration::from_millis(c.webhook_timeout_ms.clamp(1, 300_000)),
                ca_file: None,
                allowed_networks,
            },
            allow_http: c.webhook_allow_http,
            retry_for: Duration::from_secs(c.webhook_retry_secs.min(30 * DAY)),
            backoff: Duration::from_millis(c.webhook_backoff_ms.clamp(1, DAY * 1000)),
            backoff_max: Duration::from_millis(c.webhook_backoff_max_ms.clamp(1, DAY * 1000)),
            disable_after_failures: c.webhook_disable_after_failures.max(1),
            disable_after: Duration::from_secs(c.webhook_disable_after_secs.min(30 * DAY)),
            poll: Duration::from_millis(250),
        })
    }

    /// Whether `url` may be registered: the scheme and a literal address
    /// (names are checked again as they resolve, at every delivery).
    pub fn check(&self, url: &str) -> Result<(), outbound::Refused> {
        outbound::check_url(url, self.allow_http, &self.outbound.allowed_networks).map(|_| ())
    }

    /// A callback URL this deployment may call (scheme, literal address):
    /// 422 `INVALID_CALLBACK_URL` otherwise. The owner's domain checks its
    /// form, this its destination.
    pub fn check_callback(&self, url: Option<&str>) -> Result<(), Problem> {
        match url {
            Some(url) => self.check(url).map_err(|e| {
                Problem::unprocessable("INVALID_CALLBACK_URL", e.to_string())
                    .with_field("callback_url")
            }),
            None => Ok(()),
        }
    }

    /// The wait before attempt `attempts + 1`: exponential, capped, with
    /// "equal jitter" (half fixed, half random) so that endpoints failing
    /// together do not retry together.
    pub fn backoff_after(&self, attempts: u32) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(30)));
        let d = exp.min(self.backoff_max);
        let half = d / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }
}

/// The id of the delivery of `event_id` to `endpoint`: the same however
/// often the event is read.
pub fn delivery_id(endpoint: &str, event_id: Uuid) -> Uuid {
    let mut h = Sha256::new();
    h.update(endpoint.as_bytes());
    h.update([0]);
    h.update(event_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

/// What a receiver gets (README, "Webhooks").
#[derive(Serialize)]
struct Body<'a, P> {
    delivery_id: Uuid,
    endpoint: &'a str,
    event: &'a EventEnvelope<P>,
}

/// An endpoint as its owner's state has it.
pub struct Endpoint<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub disabled: bool,
}

/// Writes `endpoint` as its owner's state has it (None: it has no callback
/// any more, and what waited is given up). Disabled, what waits is parked;
/// enabled again or pointed elsewhere, what waits is due at once with a
/// fresh retry window, and the count of failures starts afresh. An
/// endpoint receives the events recorded from when it was first set.
pub async fn put_endpoint(
    tx: &mut PgConnection,
    endpoint: &str,
    state: Option<Endpoint<'_>>,
) -> Result<(), sqlx::Error> {
    let Some(state) = state else {
        // Deliveries before the endpoint: the order `record` locks them in.
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', \
               last_error = 'the endpoint has no callback URL any more' \
             WHERE endpoint = $1 AND status = 'pending'",
        )
        .bind(endpoint)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM webhook_endpoints WHERE endpoint = $1")
            .bind(endpoint)
            .execute(&mut *tx)
            .await?;
        return Ok(());
    };
    // Deliveries before the endpoint, as `record` locks them.
    sqlx::query(
        "SELECT id FROM webhook_deliveries WHERE endpoint = $1 AND status = 'pending' \
         ORDER BY id FOR UPDATE",
    )
    .bind(endpoint)
    .execute(&mut *tx)
    .await?;
    let before: Option<(String, bool)> = sqlx::query_as(
        "SELECT url, disabled FROM webhook_endpoints WHERE endpoint = $1 FOR UPDATE",
    )
    .bind(endpoint)
    .fetch_optional(&mut *tx)
    .await?;
    let fresh = match &before {
        Some((url, disabled)) => url != state.url || (*disabled && !state.disabled),
        None => false,
    };
    if state.disabled {
        sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = 'infinity' \
             WHERE endpoint = $1 AND status = 'pending'",
        )
        .bind(endpoint)
        .execute(&mut *tx)
        .await?;
    } else if fresh {
        sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = now(), attempts = 0, \
               first_attempt_at = NULL \
             WHERE endpoint = $1 AND status = 'pending'",
        )
        .bind(endpoint)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO webhook_endpoints AS e (endpoint, url, events, disabled) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (endpoint) DO UPDATE SET \
           consecutive_failures = CASE WHEN $5 THEN 0 ELSE e.consecutive_failures END, \
           failing_since = CASE WHEN $5 THEN NULL ELSE e.failing_since END, \
           url = EXCLUDED.url, events = EXCLUDED.events, disabled = EXCLUDED.disabled, \
           updated_at = now()",
    )
    .bind(endpoint)
    .bind(state.url)
    .bind(state.events)
    .bind(state.disabled)
    .bind(fresh)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Of `candidates`, the endpoints subscribed to `event_type` that were
/// set before it was recorded (a callback does not receive the history
/// before it; disabled ones count: their deliveries wait for them).
pub async fn subscribers(
    tx: &mut PgConnection,
    event_type: &str,
    recorded_at: DateTime<Utc>,
    candidates: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT endpoint FROM webhook_endpoints \
         WHERE endpoint = ANY($1) AND $2 = ANY(events) AND since <= $3 ORDER BY endpoint",
    )
    .bind(candidates)
    .bind(event_type)
    .bind(recorded_at)
    .fetch_all(&mut *tx)
    .await
}

/// One delivery of `event` to `endpoint`, once however often it is asked.
pub async fn enqueue<P: Serialize>(
    tx: &mut PgConnection,
    endpoint: &str,
    event: &EventEnvelope<P>,
) -> Result<(), sqlx::Error> {
    let id = delivery_id(endpoint, event.event_id);
    let body = serde_json::to_vec(&Body {
        delivery_id: id,
        endpoint,
        event,
    })
    .map_err(|e| sqlx::Error::Protocol(format!("a delivery's body: {e}")))?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint, event_id, event_type, body) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(endpoint)
    .bind(event.event_id)
    .bind(&event.event_type)
    .bind(body)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A delivery as its endpoint's log shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending` (waiting or being sent), `delivered`, or `failed` (retries
    /// exhausted, or the callback removed): redeliver to try again.
    pub status: String,
    pub attempts: i32,
    /// The receiver's HTTP status at the last attempt; null when none
    /// answered.
    #[schema(required = true)]
    pub last_status: Option<i32>,
    /// Why the last attempt failed; null after a success.
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending only).
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub delivered_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "id, event_id, event_type, status, attempts, last_status, \
     last_error, created_at, \
     CASE WHEN status = 'pending' AND next_attempt_at <> 'infinity' \
       THEN next_attempt_at END AS next_attempt_at, delivered_at";

/// `endpoint`'s deliveries, newest first.
pub async fn deliveries(
    pool: &PgPool,
    endpoint: &str,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint = $1 \
         ORDER BY created_at DESC, id LIMIT $2"
    ))
    .bind(endpoint)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What a redelivery found.
pub enum Redelivered {
    Queued(Delivery),
    /// The endpoint has no such delivery.
    NotFound,
    /// The endpoint has no callback (removed, or its owner revoked).
    NoCallback,
}

/// Sends delivery `id` of `endpoint` again, now, with a new retry window
/// (parked while the endpoint is disabled).
pub async fn redeliver(
    pool: &PgPool,
    endpoint: &str,
    id: Uuid,
) -> Result<Redelivered, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let disabled: Option<bool> =
        sqlx::query_scalar("SELECT disabled FROM webhook_endpoints WHERE endpoint = $1 FOR SHARE")
            .bind(endpoint)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(disabled) = disabled else {
        return Ok(Redelivered::NoCallback);
    };
    let d: Option<Delivery> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
           next_attempt_at = CASE WHEN $3 THEN 'infinity' ELSE now() END, \
           first_attempt_at = NULL, delivered_at = NULL \
         WHERE endpoint = $1 AND id = $2 RETURNING {DELIVERY_COLUMNS}"
    ))
    .bind(endpoint)
    .bind(id)
    .bind(disabled)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(d.map_or(Redelivered::NotFound, Redelivered::Queued))
}

/// `?limit=` of a delivery log.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// At most this many, newest first (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u16>,
}

/// An endpoint's deliveries, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryLog {
    items: Vec<Delivery>,
}

fn unavailable(e: sqlx::Error) -> Problem {
    crate::command::store_problem(eventstore::StoreError::from(e))
}

/// The answer of `GET …/deliveries`: `endpoint`'s log.
pub async fn log_answer(
    pool: &PgPool,
    endpoint: &str,
    q: &LogQuery,
) -> Result<actix_web::HttpResponse, Problem> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(
            Problem::unprocessable("INVALID_LIMIT", "limit is 1 to 500").with_field("limit")
        );
    }
    let items = deliveries(pool, endpoint, limit.into())
        .await
        .map_err(unavailable)?;
    Ok(actix_web::HttpResponse::Ok().json(DeliveryLog { items }))
}

/// The answer of `POST …/deliveries/{delivery}/redeliver`.
pub async fn redeliver_answer(
    pool: &PgPool,
    endpoint: &str,
    delivery: &str,
) -> Result<actix_web::HttpResponse, Problem> {
    let delivery = Uuid::parse_str(delivery).map_err(|_| {
        Problem::bad_request("INVALID_ID", "delivery must be a UUID").with_field("delivery")
    })?;
    match redeliver(pool, endpoint, delivery)
        .await
        .map_err(unavailable)?
    {
        Redelivered::Queued(d) => Ok(actix_web::HttpResponse::Accepted().json(d)),
        Redelivered::NotFound => Err(Problem::not_found(
            "DELIVERY_NOT_FOUND",
            "no such delivery of this endpoint",
        )),
        Redelivered::NoCallback => Err(Problem::conflict(
            "NO_CALLBACK",
            "there is no callback to deliver to: set it first",
        )),
    }
}

/// Finished deliveries are kept this long in the log.
const RETENTION_DAYS: f64 = 30.0;

/// Drops finished deliveries past [`RETENTION_DAYS`].
async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM webhook_deliveries WHERE status <> 'pending' \
           AND created_at < now() - make_interval(days => $1::int)",
    )
    .bind(RETENTION_DAYS as i32)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

/// Which endpoints may receive the events of a license: its owner's rule
/// (the API key that issued it; the license clients it is assigned to).
#[async_trait::async_trait]
pub trait Audience: Send + Sync + 'static {
    async fn of_license(
        &self,
        tx: &mut PgConnection,
        license: Uuid,
    ) -> Result<Vec<String>, sqlx::Error>;
}

/// The consumer that turns events into deliveries: every event a callback
/// can receive, read from its own context's topic, becomes one delivery per
/// subscribed endpoint of its license's audience, in the consumer offset's
/// transaction.
pub struct Enqueuer<A> {
    /// The events topics read, each with its context.
    pub topics: Vec<(String, &'static str)>,
    pub audience: A,
}

impl<A: Audience> Enqueuer<A> {
    /// Reading the events topic of every context under `topics`.
    pub fn of_every_context(topics: &contracts::Topics, audience: A) -> Self {
        use contracts::topics::{ACTIVATION, DOMAIN, GRANTS, ISSUANCE};
        Self {
            topics: [ISSUANCE, ACTIVATION, DOMAIN, GRANTS]
                .map(|c| (topics.events(c), c))
                .to_vec(),
            audience,
        }
    }

    pub fn topic_names(&self) -> Vec<String> {
        self.topics.iter().map(|(t, _)| t.clone()).collect()
    }
}

#[async_trait::async_trait]
impl<A: Audience> bus::TxHandler for Enqueuer<A> {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &bus::Incoming,
    ) -> Result<(), bus::HandleError> {
        let Some((_, context)) = self.topics.iter().find(|(t, _)| *t == msg.topic) else {
            return Ok(());
        };
        let event = msg.event()?;
        let Some(license) = contracts::webhooks::license_of(context, &event) else {
            return Ok(());
        };
        let candidates = self.audience.of_license(tx, license).await?;
        if candidates.is_empty() {
            return Ok(());
        }
        let endpoints = subscribers(tx, &event.event_type, event.recorded_at, &candidates).await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        // The envelope as published, its payload byte for byte (what its
        // hash covers).
        let exact: EventEnvelope<Box<serde_json::value::RawValue>> =
            msg.json("an event envelope")?;
        for endpoint in endpoints {
            enqueue(tx, &endpoint, &exact).await?;
        }
        Ok(())
    }
}

/// The owner of the endpoints: disables one that keeps failing, as an
/// event of its own (which [`put_endpoint`] writes inline).
#[async_trait::async_trait]
pub trait Owner: Send + Sync + 'static {
    async fn disable(&self, endpoint: &str, failures: i32) -> Result<(), String>;
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    endpoint: String,
    url: String,
    body: Vec<u8>,
    /// The attempt this claim is: its outcome is recorded only while the
    /// delivery is still this attempt.
    attempts: i32,
}

/// Sends due deliveries until shutdown.
pub async fn run(
    pool: PgPool,
    signer: Arc<Signer>,
    config: WebhookConfig,
    owner: Arc<dyn Owner>,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = match outbound::client(&config.outbound) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client; nothing will be delivered");
            return;
        }
    };
    let mut failing = false;
    let mut pruned_at: Option<std::time::Instant> = None;
    loop {
        if pruned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
            pruned_at = Some(std::time::Instant::now());
            if let Err(e) = prune(&pool).await {
                tracing::debug!(error = %e, "webhooks: pruning failed");
            }
        }
        let sent = match claim(&pool, &config).await {
            Ok(batch) => {
                if failing {
                    failing = false;
                    tracing::info!("webhooks: claiming deliveries again");
                }
                // At once: a slow receiver holds up only its own (at most
                // two) deliveries, for at most the timeout.
                let n = batch.len();
                futures::future::join_all(batch.into_iter().map(|d| {
                    let (pool, http, signer, config, owner) =
                        (&pool, &http, &signer, &config, &owner);
                    async move {
                        let outcome = send(http, signer, config, &d).await;
                        if let Err(e) = record(pool, config, owner.as_ref(), &d, outcome).await {
                            // The claim lapses and the delivery is sent again.
                            tracing::warn!(error = %e, delivery = %d.id, "webhooks: outcome not recorded");
                        }
                    }
                }))
                .await;
                n
            }
            Err(e) => {
                // Once per outage, not every poll.
                if !failing {
                    failing = true;
                    tracing::warn!(error = %e, "webhooks: cannot claim deliveries");
                }
                0
            }
        };
        if sent == 0 {
            tokio::select! {
                _ = tokio::time::sleep(config.poll) => {}
                _ = shutdown.changed() => return,
            }
        } else if *shutdown.borrow() {
            return;
        }
    }
}

/// Claims up to 16 due deliveries of enabled endpoints, at most two of any
/// one: each counts an attempt and is out of reach of other senders until
/// the claim lapses.
async fn claim(pool: &PgPool, config: &WebhookConfig) -> Result<Vec<Claimed>, sqlx::Error> {
    // The batch is sent at once, each send taking at most the timeout; the
    // margin covers signing and recording. A claim that lapses while its
    // sender still records is not recorded over (`record` checks the
    // attempt) and sends the delivery again, under its id.
    let lease = config.outbound.timeout + Duration::from_secs(5);
    sqlx::query_as(
        "WITH due AS ( \
           SELECT d.id, d.endpoint, d.next_attempt_at FROM webhook_deliveries d \
           JOIN webhook_endpoints e ON e.endpoint = d.endpoint AND NOT e.disabled \
           WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
           ORDER BY d.next_attempt_at LIMIT 256 FOR UPDATE OF d SKIP LOCKED), \
         picked AS ( \
           SELECT id FROM ( \
             SELECT id, next_attempt_at, \
               row_number() OVER (PARTITION BY endpoint ORDER BY next_attempt_at) AS n \
             FROM due) r \
           WHERE n <= 2 ORDER BY next_attempt_at LIMIT 16) \
         UPDATE webhook_deliveries d SET attempts = d.attempts + 1, \
           next_attempt_at = now() + make_interval(secs => $1), \
           first_attempt_at = coalesce(d.first_attempt_at, now()) \
         FROM picked, webhook_endpoints e \
         WHERE d.id = picked.id AND e.endpoint = d.endpoint \
         RETURNING d.id, d.endpoint, e.url, d.body, d.attempts",
    )
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// A refused destination, as the delivery log shows it: which address a
/// name resolved to stays in the server's log, out of reach of the
/// endpoint's owner (who could map internal names with it).
fn refused(why: impl std::fmt::Display) -> String {
    tracing::debug!(why = %why, "webhooks: a destination refused");
    "refused: the destination is not allowed (loopback, private or otherwise non-public)".into()
}

/// The receiver's status, or why none answered.
type Outcome = Result<Answered, String>;

/// What a receiver answered: its status, and how long it asked us to wait
/// (`Retry-After` in seconds, on a 429 or 503).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Answered {
    status: u16,
    retry_after: Option<Duration>,
}

/// A `Retry-After` of delay-seconds (an HTTP date is not taken: the
/// receiver's clock is not ours).
fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

async fn send(
    http: &reqwest::Client,
    signer: &Signer,
    config: &WebhookConfig,
    d: &Claimed,
) -> Outcome {
    config.check(&d.url).map_err(refused)?;
    let signature = signer
        .sign_detached(&d.body, TYP)
        .map_err(|e| format!("not signed: {e}"))?;
    let res = http
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(DELIVERY_HEADER, d.id.to_string())
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| {
            let why = outbound::describe(&e);
            if why.starts_with("refused") {
                refused(why)
            } else {
                why
            }
        })?;
    // The answer's body is not read: a receiver cannot make us hold more
    // than its headers.
    let status = res.status().as_u16();
    let asked = matches!(status, 429 | 503)
        .then(|| {
            retry_after(
                res.headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            )
        })
        .flatten();
    Ok(Answered {
        status,
        retry_after: asked,
    })
}

async fn record(
    pool: &PgPool,
    config: &WebhookConfig,
    owner: &dyn Owner,
    d: &Claimed,
    outcome: Outcome,
) -> Result<(), sqlx::Error> {
    let asked = outcome.as_ref().ok().and_then(|a| a.retry_after);
    let (status, error) = match outcome {
        Ok(a) if (200..300).contains(&a.status) => (Some(a.status), None),
        Ok(a) => (
            Some(a.status),
            Some(format!("the receiver answered HTTP {}", a.status)),
        ),
        Err(e) => (None, Some(e)),
    };
    let status = status.map(i32::from);
    let mut tx = pool.begin().await?;
    let Some(error) = error else {
        // Still this attempt, still pending: a lapsed claim's late outcome,
        // a removed callback or a redelivery since are not written over.
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), \
               last_status = $2, last_error = NULL \
             WHERE id = $1 AND status = 'pending' AND attempts = $3",
        )
        .bind(d.id)
        .bind(status)
        .bind(d.attempts)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return tx.commit().await;
        }
        sqlx::query(
            "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL \
             WHERE endpoint = $1",
        )
        .bind(&d.endpoint)
        .execute(&mut *tx)
        .await?;
        return tx.commit().await;
    };
    // A receiver asking for longer gets it, up to the backoff's cap.
    let wait = config
        .backoff_after(u32::try_from(d.attempts).unwrap_or(1))
        .max(asked.unwrap_or_default().min(config.backoff_max));
    let error: String = error.chars().take(500).collect();
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET last_status = $2, last_error = $3, \
           status = CASE WHEN first_attempt_at + make_interval(secs => $4) <= now() \
                         THEN 'failed' ELSE 'pending' END, \
           next_attempt_at = now() + make_interval(secs => $5) \
         WHERE id = $1 AND status = 'pending' AND attempts = $6",
    )
    .bind(d.id)
    .bind(status)
    .bind(&error)
    .bind(config.retry_for.as_secs_f64())
    .bind(wait.as_secs_f64())
    .bind(d.attempts)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return tx.commit().await;
    }
    let row: Option<(i32, bool, bool)> = sqlx::query_as(
        "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1, \
           failing_since = coalesce(failing_since, now()) WHERE endpoint = $1 \
         RETURNING consecutive_failures, disabled, \
           failing_since + make_interval(secs => $2) <= now()",
    )
    .bind(&d.endpoint)
    .bind(config.disable_after.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some((failures, disabled, long_enough)) = row {
        let threshold = i32::try_from(config.disable_after_failures).unwrap_or(i32::MAX);
        if !disabled && long_enough && failures >= threshold {
            tracing::info!(endpoint = %d.endpoint, failures, "webhooks: disabling an endpoint that keeps failing");
            if let Err(e) = owner.disable(&d.endpoint, failures).await {
                tracing::warn!(endpoint = %d.endpoint, error = %e, "webhooks: the endpoint was not disabled; tried again at its next failure");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebhookConfig {
        WebhookConfig {
            outbound: OutboundConfig::default(),
            allow_http: false,
            retry_for: Duration::from_secs(86_400),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3_600),
            disable_after_failures: 20,
            disable_after: Duration::from_secs(86_400),
            poll: Duration::from_millis(250),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_its_cap() {
        let c = config();
        for attempts in 1..=40u32 {
            let d = c.backoff_after(attempts);
            let full = Duration::from_secs(1)
                .saturating_mul(2u32.saturating_pow(attempts - 1))
                .min(c.backoff_max);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?} of {full:?}");
        }
    }

    #[test]
    fn retry_after_is_taken_in_seconds_only() {
        assert_eq!(retry_after(Some("120")), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(Some(" 5 ")), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(Some("-1")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn a_delivery_id_is_one_per_endpoint_and_event() {
        let e = Uuid::now_v7();
        assert_eq!(delivery_id("api-key:A", e), delivery_id("api-key:A", e));
        assert_ne!(delivery_id("api-key:A", e), delivery_id("api-key:B", e));
        assert_ne!(
            delivery_id("api-key:A", e),
            delivery_id("api-key:A", Uuid::now_v7())
        );
    }

    #[test]
    fn private_and_plain_http_callbacks_are_refused_unless_allowed() {
        let mut c = config();
        assert!(c.check("https://hooks.example.com/x").is_ok());
        assert!(c.check("http://hooks.example.com/x").is_err());
        assert!(c.check("https://127.0.0.1/x").is_err());
        assert!(c.check("https://10.1.2.3/x").is_err());
        c.allow_http = true;
        c.outbound.allowed_networks = outbound::networks(&["127.0.0.0/8".into()]).expect("cidr");
        assert!(c.check("http://127.0.0.1:8080/x").is_ok());
        assert!(c.check("http://10.1.2.3/x").is_err());
    }
}
