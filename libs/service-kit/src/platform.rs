//! What every service runs besides its routes: the database with the event
//! store migrated, the Kafka producer and topics, the outbox relay, the
//! transactional consumers, and the HTTP server — started together and
//! stopped together.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web;
use bus::TxHandler;
use contracts::Topics;
use eventstore::relay::{Relay, RelayConfig};
use rdkafka::producer::FutureProducer;
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::{ApiKeyReplica, Authenticator};
use crate::config::CommonConfig;
use crate::health::ReadyCheck;
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
    pub producer: FutureProducer,
    pub topics: Topics,
    pub metrics: Metrics,
    pub auth: web::Data<Authenticator>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    handle_signals: bool,
}

impl Platform {
    /// Connects, migrates (event store, then the service's own `migrator`),
    /// and makes sure the topics exist.
    pub async fn start(
        name: &str,
        config: CommonConfig,
        migrator: Option<&Migrator>,
    ) -> Result<Self, PlatformError> {
        let pool = eventstore::connect(&config.database_url, config.db_pool_size).await?;
        eventstore::migrate(&pool).await?;
        if let Some(m) = migrator {
            let mut m = Migrator {
                migrations: m.migrations.clone(),
                ..Migrator::DEFAULT
            };
            m.set_ignore_missing(true);
            m.run(&pool).await?;
        }
        let producer = bus::producer(&config.kafka_brokers)?;
        let topics = Topics::new(config.topic_prefix.clone());
        bus::ensure_topics(
            &config.kafka_brokers,
            &topics,
            Some(config.topic_partitions),
        )
        .await?;
        let (shutdown, _) = watch::channel(false);
        let auth = web::Data::new(Authenticator::new(
            pool.clone(),
            config.admin_key.as_deref(),
            config.auth_enabled,
        ));
        let mut platform = Self {
            name: name.to_string(),
            config,
            pool,
            producer,
            topics,
            metrics: Metrics::new(),
            auth,
            shutdown,
            tasks: JoinSet::new(),
            handle_signals: true,
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

    /// Publishes this service's events to `<prefix>.<context>.events`.
    pub fn spawn_relay(&mut self, context: &str) {
        let relay = Relay::new(
            self.pool.clone(),
            RelayConfig::new(
                context,
                self.config.kafka_brokers.clone(),
                self.topics.events(context),
                self.topics.named("relay-checkpoints"),
                contracts::topics::checkpoint_partition(context),
            ),
        );
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
        let mut shutdown = self.shutdown.subscribe();
        let context = context.to_string();
        self.tasks.spawn(async move {
            let mut published = 0;
            loop {
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
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    /// A consumer group named `<group prefix>.<service>.<consumer>`, applying
    /// `topics` through `handler` with offsets stored beside its effect.
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
        let group = self
            .config
            .consumer_group_prefix
            .as_deref()
            .unwrap_or(self.topics.prefix());
        let name = format!("{group}.{}.{consumer}", self.name);
        let mut config =
            bus::ConsumerConfig::new(name.clone(), self.config.kafka_brokers.clone(), topics);
        config.batch_max = batch_max;
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

    /// Binds the HTTP server (health, readiness, metrics and `routes`) and
    /// starts it with everything spawned so far.
    pub async fn serve<F>(self, routes: F) -> Result<Running, PlatformError>
    where
        F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        let mut app = ServiceApp::from_config(self.name.clone(), &self.config)
            .with_metrics(self.metrics.clone())
            .with_ready_check(ReadyCheck::Postgres(self.pool.clone()))
            .with_ready_check(ReadyCheck::Kafka {
                brokers: self.config.kafka_brokers.clone(),
            });
        if !self.handle_signals {
            app = app.disable_signals();
        }
        let auth = self.auth.clone();
        let routes = move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(auth.clone());
            routes(cfg);
        };
        let (server, addr) = serve(app, &self.config.http_addr, routes).await?;
        let handle = server.handle();
        Ok(Running {
            addr,
            handle,
            server: tokio::spawn(server),
            shutdown: self.shutdown,
            tasks: self.tasks,
        })
    }
}

/// A started service.
pub struct Running {
    pub addr: SocketAddr,
    handle: ServerHandle,
    server: JoinHandle<std::io::Result<()>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
/// SIGTERM.
pub async fn run_main<C, F, Fut>(service: &str, start: F) -> anyhow::Result<()>
where
    C: serde::de::DeserializeOwned + AsRef<CommonConfig>,
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = Result<Running, PlatformError>>,
{
    let config: C = crate::config::load(service)?;
    crate::telemetry::init(service, &config.as_ref().log_format);
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
    let mut platform = Platform::start(name, config, None).await?;
    if !handle_signals {
        platform = platform.without_signals();
    }
    platform.serve(|_| {}).await
}
