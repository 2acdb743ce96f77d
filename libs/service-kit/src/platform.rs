//! What every service runs besides its routes: the database with the event
//! store migrated, the Kafka producer and topics, the outbox relay, the
//! transactional consumers, and the HTTP server — started together and
//! stopped together.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web;
use bus::TxHandler;
use contracts::Topics;
use eventstore::relay::{Relay, RelayConfig};
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::{ApiKeyReplica, Authenticator};
use crate::checkpoints::{CheckpointConfig, Checkpointer};
use crate::clock::Clock;
use crate::config::CommonConfig;
use crate::health::ReadyCheck;
use crate::keys::Signer;
use crate::metrics::Metrics;
use crate::server::{serve, ServiceApp};

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topics: {0}")]
    Bus(#[from] bus::BusError),
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
}

/// How a service is started: tests run services in-process without signal
/// handlers and on a clock they move.
pub struct Options {
    pub handle_signals: bool,
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            handle_signals: true,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
        }
    }
}

pub struct Platform {
    pub name: String,
    pub config: CommonConfig,
    pub pool: PgPool,
    /// This service's Kafka principal: every client it creates uses it.
    pub kafka: bus::Kafka,
    pub producer: bus::Producer,
    pub topics: Topics,
    pub metrics: Metrics,
    pub auth: web::Data<Authenticator>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    handle_signals: bool,
    /// Topics read or written so far, checked at start-up.
    used_topics: Vec<String>,
    signer: Option<Arc<Signer>>,
    checkpointer: Option<Arc<Checkpointer>>,
    openapi: Option<web::Bytes>,
    from_memory: &'static [&'static str],
}

impl Platform {
    /// Connects, and migrates when given the owner's URL (or, without one,
    /// when migrations are pending and the serving role may apply them:
    /// development). Topics are not created here: a service's principal may
    /// not; provisioning (`licensectl kafka provision`) does, and `serve`
    /// checks that every topic the service uses is there.
    pub async fn start(
        name: &str,
        config: CommonConfig,
        schema: &Schema,
    ) -> Result<Self, PlatformError> {
        // Migrated and granted first: until then the serving role may not
        // even connect to a database the owner has locked down.
        if config.database_migration_url.is_some() {
            migrate(&config, schema).await?;
        }
        let pool = eventstore::connect(&config.database_url, config.db_pool_size).await?;
        eventstore::set_snapshot_every(config.snapshot_every);
        if config.database_migration_url.is_none()
            && !eventstore::is_migrated(&pool, schema.migrator).await?
        {
            migrate_all(&pool, schema.migrator).await.map_err(|e| {
                PlatformError::Config(format!(
                    "migrations are pending and this database role cannot apply them ({e}); \
                     run `{name} migrate` with database_migration_url set to the owner's"
                ))
            })?;
        }
        if eventstore::can_rewrite_history(&pool).await? {
            tracing::warn!(
                "the database role this service serves as can change or delete events: \
                 give it a role of its own and migrate as the owner (database_migration_url)"
            );
        }
        let kafka = config
            .kafka()
            .map_err(|e| PlatformError::Config(e.to_string()))?;
        let producer = bus::producer(&kafka)?;
        let topics = Topics::new(config.topic_prefix.clone());
        let (shutdown, _) = watch::channel(false);
        let auth = web::Data::new(
            Authenticator::new(
                pool.clone(),
                config.admin_key.as_deref(),
                config.auth_enabled,
            )
            .with_admin_key_file(config.admin_key_file.as_deref()),
        );
        let mut platform = Self {
            name: name.to_string(),
            config,
            pool,
            kafka,
            producer,
            topics,
            metrics: Metrics::new(),
            auth,
            shutdown,
            tasks: JoinSet::new(),
            handle_signals: true,
            used_topics: Vec::new(),
            signer: None,
            checkpointer: None,
            openapi: None,
            from_memory: &[],
        };
        // Every service enforces API keys from its own replica of them.
        let issuance_events = platform.topics.events(contracts::topics::ISSUANCE);
        platform.spawn_consumer("api-keys", vec![issuance_events], 200, ApiKeyReplica);
        Ok(platform)
    }

    /// Runs a background task until shutdown (it gets `shutdown_signal()`).
    pub fn spawn<F>(&mut self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Turns true when the service stops.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// For tests that start many services in one process.
    pub fn without_signals(mut self) -> Self {
        self.handle_signals = false;
        self
    }

    /// A consumer group id of this service: `<group prefix>.<service>.<name>`,
    /// what its Kafka principal is granted.
    pub fn group(&self, name: &str) -> String {
        let prefix = self
            .config
            .consumer_group_prefix
            .as_deref()
            .unwrap_or(self.topics.prefix());
        format!("{prefix}.{}.{name}", self.name)
    }

    /// The service's signer: the key of `signing_key_file`, recorded as
    /// `SigningKeyPublished` before anything is signed with it, and served
    /// at `/.well-known/jwks.json`.
    pub async fn signer(&mut self, clock: Arc<dyn Clock>) -> Result<Arc<Signer>, PlatformError> {
        if let Some(s) = &self.signer {
            return Ok(s.clone());
        }
        let file = self.config.signing_key_file.as_deref().ok_or_else(|| {
            PlatformError::Config("signing_key_file is required: this service signs".into())
        })?;
        let ring = crate::keys::load_ring(Path::new(file), self.config.signing_key_generate)?;
        let signer = Arc::new(Signer::new(ring, self.pool.clone(), clock));
        signer.publish_at_startup(&self.name).await?;
        self.signer = Some(signer.clone());
        Ok(signer)
    }

    /// Publishes this service's events to `<prefix>.<context>.events`, and
    /// signs checkpoints of them (so [`Platform::signer`] comes first).
    pub fn spawn_relay(&mut self, context: &str) -> Result<(), PlatformError> {
        let signer = self.signer.clone().ok_or_else(|| {
            PlatformError::Config("the relay's checkpoints need the service's signer".into())
        })?;
        if !self.config.checkpoints_enabled {
            tracing::warn!("CHECKPOINTS ARE DISABLED: this history is anchored nowhere");
        }
        let checkpointer = Arc::new(Checkpointer::new(
            self.pool.clone(),
            signer,
            self.producer.clone(),
            CheckpointConfig {
                service: self.name.clone(),
                context: context.to_string(),
                topic: self.topics.checkpoints(),
                interval: Duration::from_millis(self.config.checkpoint_interval_ms.max(10)),
            },
        ));
        self.used_topics.push(self.topics.checkpoints());
        if self.config.checkpoints_enabled {
            self.tasks
                .spawn(checkpointer.clone().run(self.shutdown.subscribe()));
        }
        self.checkpointer = Some(checkpointer);
        let mut config = RelayConfig::new(
            context,
            &self.kafka,
            self.topics.events(context),
            self.topics.relay_checkpoints(context),
        );
        config.reader_group = self.group(&format!("relay-{context}"));
        self.used_topics
            .extend([config.topic.clone(), config.checkpoint_topic.clone()]);
        let relay = Relay::new(self.pool.clone(), config);
        let stats = relay.stats();
        self.tasks.spawn(relay.run(self.shutdown.subscribe()));
        let metrics = self.metrics.clone();
        metrics.describe(
            "relay_published_total",
            "Events published to Kafka by the outbox relay.",
        );
        metrics.describe(
            "relay_position",
            "Global position of the last published event.",
        );
        metrics.describe("relay_active", "1 when this instance holds the relay lock.");
        let context = context.to_string();
        let mut published = 0;
        self.every_second(move || {
            let labels = [("relay", context.as_str())];
            let now = stats.published.load(Ordering::Relaxed);
            metrics.inc_counter("relay_published_total", &labels, now - published);
            published = now;
            metrics.set_gauge(
                "relay_position",
                &labels,
                stats.position.load(Ordering::Relaxed),
            );
            metrics.set_gauge(
                "relay_active",
                &labels,
                i64::from(stats.active.load(Ordering::Relaxed)),
            );
        });
        Ok(())
    }

    /// Runs `update` every second until shutdown: how the counters kept by
    /// the relay and the consumers reach the metrics.
    fn every_second(&mut self, mut update: impl FnMut() + Send + 'static) {
        let mut shutdown = self.shutdown.subscribe();
        self.tasks.spawn(async move {
            loop {
                update();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    /// A consumer of event topics: a consumer group named `<group
    /// prefix>.<service>.<consumer>`, applying `topics` through `handler`
    /// with offsets (and each aggregate's last sequence) stored beside its
    /// effect.
    ///
    /// `batch_max` bounds how many messages share one transaction: large for
    /// read models, small where a handler does slow work (commands), since
    /// the open transaction holds back the relay's xmin watermark.
    pub fn spawn_consumer<H: TxHandler>(
        &mut self,
        consumer: &str,
        topics: Vec<String>,
        batch_max: usize,
        handler: H,
    ) {
        self.spawn_any_consumer(consumer, topics, batch_max, handler, true);
    }

    /// The consumer of a context's command topics: `<prefix>.<context>.commands`
    /// and, with `admin`, `<prefix>.<context>.admin-commands` (whose
    /// commands carry the admin authority: only administrators write it),
    /// each envelope through `dispatcher`, each outcome on
    /// `<prefix>.command-outcomes` (see [`crate::command_topic`]).
    pub fn spawn_command_topics<D: crate::command_topic::Dispatch>(
        &mut self,
        context: &str,
        admin: bool,
        batch_max: usize,
        dispatcher: std::sync::Arc<D>,
    ) {
        let admin_topic = admin.then(|| self.topics.admin_commands(context));
        let topics = std::iter::once(self.topics.commands(context))
            .chain(admin_topic.clone())
            .collect();
        let handler = crate::command_topic::CommandTopic {
            service: self.name.clone(),
            dispatcher,
            producer: self.producer.clone(),
            outcomes_topic: self.topics.outcomes(),
            admin_topic,
        };
        self.spawn_unsequenced_consumer("commands", topics, batch_max, handler);
    }

    /// A consumer of topics that carry no event streams (commands,
    /// checkpoints): no per-aggregate sequences to guard.
    pub fn spawn_unsequenced_consumer<H: TxHandler>(
        &mut self,
        consumer: &str,
        topics: Vec<String>,
        batch_max: usize,
        handler: H,
    ) {
        self.spawn_any_consumer(consumer, topics, batch_max, handler, false);
    }

    fn spawn_any_consumer<H: TxHandler>(
        &mut self,
        consumer: &str,
        topics: Vec<String>,
        batch_max: usize,
        handler: H,
        sequenced: bool,
    ) {
        let name = self.group(consumer);
        self.used_topics.extend(topics.iter().cloned());
        let mut config = bus::ConsumerConfig::new(name.clone(), &self.kafka, topics);
        config.batch_max = batch_max;
        config.sequenced = sequenced;
        let stats = config.stats.clone();
        let metrics = self.metrics.clone();
        metrics.describe(
            "consumer_applied_total",
            "Messages this instance's consumer applied (each once across instances).",
        );
        metrics.describe(
            "consumer_partitions",
            "Partitions the consumer group assigns this instance.",
        );
        let consumer = consumer.to_string();
        let mut applied = 0;
        self.every_second(move || {
            let labels = [("consumer", consumer.as_str())];
            let now = stats.applied.load(Ordering::Relaxed);
            metrics.inc_counter("consumer_applied_total", &labels, now - applied);
            applied = now;
            metrics.set_gauge(
                "consumer_partitions",
                &labels,
                stats.partitions.load(Ordering::Relaxed),
            );
        });
        let run = bus::run_consumer(
            self.pool.clone(),
            self.producer.clone(),
            config,
            Arc::new(handler),
            self.shutdown.subscribe(),
        );
        self.tasks.spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(consumer = %name, error = %e, "consumer stopped");
            }
        });
    }

    /// The service's OpenAPI document, served openly at `/openapi.json`.
    pub fn document(&mut self, doc: utoipa::openapi::OpenApi) -> Result<(), PlatformError> {
        let json = doc
            .to_json()
            .map_err(|e| PlatformError::Config(format!("the OpenAPI document: {e}")))?;
        self.openapi = Some(web::Bytes::from(json));
        Ok(())
    }

    /// Binds the HTTP server (health, readiness, metrics and `routes`) and
    /// starts it with everything spawned so far.
    /// Routes the service answers without its database: they are served
    /// while it is down, when every other `/v1/…` route answers 503
    /// `STORE_UNAVAILABLE` at once (see `health::fail_fast`). The same list
    /// the service gives its document's [`ProblemCodes`](crate::openapi::ProblemCodes).
    pub fn from_memory(&mut self, paths: &'static [&'static str]) {
        self.from_memory = paths;
    }

    pub async fn serve<F>(self, routes: F) -> Result<Running, PlatformError>
    where
        F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        let mut used = self.used_topics.clone();
        used.sort();
        used.dedup();
        let probed_topic = used.first().cloned().unwrap_or_default();
        let missing = bus::topics::unavailable(&self.kafka, used).await?;
        if !missing.is_empty() {
            return Err(PlatformError::Config(format!(
                "topics missing or not granted to this service's principal: {} \
                 (provision the cluster: licensectl kafka provision)",
                missing.join(", ")
            )));
        }
        let mut app = ServiceApp::from_config(self.name.clone(), &self.config)?
            .with_metrics(self.metrics.clone())
            .with_routes_from_memory(self.from_memory)
            .with_ready_check(ReadyCheck::Postgres(self.pool.clone()))
            .with_ready_check(ReadyCheck::Kafka {
                kafka: self.kafka.clone(),
                topic: probed_topic,
            });
        if !self.handle_signals {
            app = app.disable_signals();
        }
        let auth = self.auth.clone();
        let signer = self.signer.clone().map(web::Data::from);
        let checkpointer = self.checkpointer.clone().map(web::Data::from);
        let openapi = self.openapi.clone();
        let routes = move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(auth.clone());
            if let Some(json) = &openapi {
                crate::openapi::route(cfg, json.clone());
            }
            if let Some(s) = &signer {
                cfg.app_data(s.clone());
                crate::keys::routes::<Signer>(cfg);
            }
            if let Some(c) = &checkpointer {
                cfg.app_data(c.clone()).service(
                    web::resource(CHECKPOINTS_PATH)
                        .wrap(actix_web::middleware::from_fn(crate::auth::require(
                            crate::auth::ADMIN,
                        )))
                        .route(web::post().to(checkpoint_now)),
                );
            }
            routes(cfg);
        };
        let tls = app.is_tls();
        let (server, addr) = serve(app, &self.config.http_addr, routes).await?;
        let handle = server.handle();
        Ok(Running {
            addr,
            tls,
            handle,
            server: tokio::spawn(server),
            shutdown: self.shutdown,
            tasks: self.tasks,
        })
    }
}

/// What a service keeps in its database: its own migrations (applied after
/// the event store's) and the tables its serving role owns because it
/// rebuilds them (drops and renames).
#[derive(Clone, Default)]
pub struct Schema {
    pub migrator: Option<&'static Migrator>,
    pub owned: Vec<&'static str>,
}

impl Schema {
    pub fn of(migrator: &'static Migrator) -> Self {
        Self {
            migrator: Some(migrator),
            owned: vec![],
        }
    }
}

/// Migrates as the owner (`database_migration_url`), then grants the
/// serving role (`database_url`'s) what it may do: what `<service>
/// migrate` does, so that a serving process need never hold the owner's
/// password.
pub async fn migrate(config: &CommonConfig, schema: &Schema) -> Result<(), PlatformError> {
    let url = config.database_migration_url.as_deref().ok_or_else(|| {
        PlatformError::Config("migrating needs database_migration_url (the owner's)".into())
    })?;
    let owner = eventstore::connect(url, 2).await?;
    migrate_all(&owner, schema.migrator).await?;
    let role = config
        .database_url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .get_username()
        .to_string();
    let owner_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&owner)
        .await?;
    // One role for both (development): nothing to grant, nothing to take.
    if role != owner_role {
        eventstore::grant_serving(&owner, &role, &schema.owned).await?;
    }
    owner.close().await;
    Ok(())
}

async fn migrate_all(pool: &PgPool, migrator: Option<&Migrator>) -> Result<(), PlatformError> {
    eventstore::migrate(pool).await?;
    if let Some(m) = migrator {
        let mut m = Migrator {
            migrations: m.migrations.clone(),
            ..Migrator::DEFAULT
        };
        m.set_ignore_missing(true);
        m.run(pool).await?;
    }
    Ok(())
}

/// Where an administrator asks for a checkpoint now.
pub const CHECKPOINTS_PATH: &str = "/v1/admin/checkpoints";

/// `POST /v1/admin/checkpoints` (admin): signs and publishes a checkpoint
/// of every event committed so far, and answers it (the latest one when
/// nothing was appended since).
async fn checkpoint_now(
    c: web::Data<Checkpointer>,
) -> Result<actix_web::HttpResponse, crate::Problem> {
    match c.round(true).await {
        Ok(Some(signed)) => Ok(actix_web::HttpResponse::Ok().json(signed)),
        Ok(None) => Err(crate::Problem::internal()),
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint on demand failed");
            Err(crate::Problem::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "Service Unavailable",
            ))
        }
    }
}

/// A started service.
pub struct Running {
    pub addr: SocketAddr,
    /// Serves HTTPS.
    pub tls: bool,
    handle: ServerHandle,
    server: JoinHandle<std::io::Result<()>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Runs until the HTTP server stops (SIGTERM/SIGINT), then stops the
    /// relay and consumers, letting in-flight batches finish.
    pub async fn wait(mut self) -> std::io::Result<()> {
        let result = (&mut self.server).await;
        self.stop_tasks().await;
        result.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Stops everything gracefully (used by in-process tests).
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        let _ = (&mut self.server).await;
        self.stop_tasks().await;
    }

    async fn stop_tasks(&mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The whole `main` of a service: layered config, logging, start, run until
/// SIGTERM; or, as `<service> migrate`, migrate and exit.
pub async fn run_main<C, F, Fut>(service: &str, schema: Schema, start: F) -> anyhow::Result<()>
where
    C: serde::de::DeserializeOwned + AsRef<CommonConfig>,
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = Result<Running, PlatformError>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let migrate_only = match args.as_slice() {
        [] => false,
        [m] if m == "migrate" => true,
        _ => anyhow::bail!(
            "usage: {service} [migrate]\n  migrate: apply the migrations as the owner \
             (database_migration_url), grant the serving role (database_url), and exit"
        ),
    };
    let config: C = crate::config::load(service)?;
    crate::telemetry::init(service, &config.as_ref().log_format);
    if migrate_only {
        migrate(config.as_ref(), &schema).await?;
        tracing::info!(service, "migrated");
        return Ok(());
    }
    tracing::info!(service, config = ?config.as_ref(), "starting");
    let running = start(config).await?;
    tracing::info!(service, url = %running.url(), "started");
    running.wait().await?;
    tracing::info!(service, "stopped");
    Ok(())
}

/// A service with nothing of its own yet: event store, API-key replica,
/// health, readiness and metrics.
pub async fn start_bare(
    name: &str,
    config: CommonConfig,
    handle_signals: bool,
) -> Result<Running, PlatformError> {
    let mut platform = Platform::start(name, config, &Schema::default()).await?;
    if !handle_signals {
        platform = platform.without_signals();
    }
    platform.serve(|_| {}).await
}
