//! Grant sync: the license server products connect to. License clients,
//! feature leases with heartbeats and grace, the sync protocol with signed
//! grant documents, and upstream license servers this one syncs from.
//! `start` wires the service so tests can run it in-process.

pub mod api;
pub mod app;
pub mod commands;
pub mod consumers;
pub use grant_sync_domain as domain;
pub mod flight;
pub mod heartbeat;
pub mod notify;
pub mod remote;
pub mod secrets;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use contracts::topics::{ACTIVATION, DOMAIN, GRANTS, ISSUANCE};
use serde::Deserialize;
use service_kit::outbound::OutboundConfig;
use service_kit::platform::{Platform, PlatformError, Running};
use service_kit::CommonConfig;
use sqlx::migrate::Migrator;

use crate::app::{GrantSync, Settings};
use crate::consumers::{ReactionConsumer, ReplicaConsumer};
use crate::domain::GrantServices;
use crate::heartbeat::Heartbeats;
use crate::notify::Notifier;
use crate::remote::Remote;
use crate::secrets::SecretBox;

pub const SERVICE: &str = "grant-sync";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Its migrations; it owns no table.
pub fn schema() -> service_kit::platform::Schema {
    service_kit::platform::Schema::of(&MIGRATOR)
}

fn d_issuer() -> String {
    "licensing.grant-sync".into()
}
fn d_tolerance() -> u32 {
    600
}
fn d_wait() -> u64 {
    25_000
}
fn d_max_wait() -> u64 {
    60_000
}
fn d_interval() -> u64 {
    1_000
}
fn d_batch() -> usize {
    512
}
fn d_upstream_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// `iss` of grant documents.
    #[serde(default = "d_issuer")]
    pub issuer: String,
    /// How far a client's reported time may fall behind one it reported before.
    #[serde(default = "d_tolerance")]
    pub clock_tolerance_secs: u32,
    /// How long a sync waits for a change when a client names no `wait_ms`,
    /// and the most it may ask for.
    #[serde(default = "d_wait")]
    pub sync_wait_ms: u64,
    #[serde(default = "d_max_wait")]
    pub sync_max_wait_ms: u64,
    /// How often the scheduler reclaims leases whose heartbeats stopped.
    #[serde(default = "d_interval")]
    pub scheduler_interval_ms: u64,
    /// Most heartbeats renewed by one statement.
    #[serde(default = "d_batch")]
    pub heartbeat_batch_max: usize,
    #[serde(default = "d_upstream_timeout")]
    pub upstream_timeout_ms: u64,
    /// PEM file of a CA trusted for upstreams' certificates besides the
    /// system roots.
    #[serde(default)]
    pub upstream_ca_file: Option<String>,
    /// Networks (CIDRs) upstreams may be reached in although not public:
    /// loopback, private and link-local addresses are refused otherwise.
    #[serde(default)]
    pub upstream_allowed_networks: Vec<String>,
    /// The key upstream secrets are sealed with at rest (AES-256-GCM): a
    /// file holding 32 bytes as 64 hexadecimal digits. Required.
    #[serde(default)]
    pub upstream_secret_key_file: Option<String>,
    /// Create `upstream_secret_key_file` (32 random bytes, mode 0600) when
    /// it does not exist: for development; in production it is provisioned.
    #[serde(default)]
    pub upstream_secret_key_generate: bool,
}

impl AsRef<CommonConfig> for Config {
    fn as_ref(&self) -> &CommonConfig {
        &self.common
    }
}

pub use service_kit::platform::Options;

pub async fn start(config: Config, options: Options) -> Result<Running, PlatformError> {
    let remote = Remote::new(&OutboundConfig {
        timeout: Duration::from_millis(config.upstream_timeout_ms),
        ca_file: config.upstream_ca_file.clone(),
        allowed_networks: service_kit::outbound::networks(&config.upstream_allowed_networks)
            .map_err(|bad| {
                PlatformError::Config(format!("upstream_allowed_networks: {bad:?} is no CIDR"))
            })?,
    })
    .map_err(|e| PlatformError::Config(format!("upstream client: {e}")))?;
    let key_file = config.upstream_secret_key_file.clone().ok_or_else(|| {
        PlatformError::Config(
            "upstream_secret_key_file is required: upstream secrets are stored sealed under it"
                .into(),
        )
    })?;
    let secrets = SecretBox::new(&service_kit::keys::load_secret_key(
        std::path::Path::new(&key_file),
        config.upstream_secret_key_generate,
    )?);
    let webhooks = service_kit::webhooks::WebhookConfig::from_common(&config.common)
        .map_err(PlatformError::Config)?;
    let mut platform = Platform::start(SERVICE, config.common, &schema()).await?;
    app::seal_stored_secrets(&platform.pool, &secrets, &key_file).await?;
    if !options.handle_signals {
        platform = platform.without_signals();
    }
    let clock = options.clock;
    // Grant sync's own key (grant documents, checkpoints).
    let signer = platform.signer(clock.clone()).await?;
    let notifier = Notifier::new();
    let app = Arc::new(GrantSync::new(
        platform.pool.clone(),
        GrantServices {
            clock: clock.clone(),
        },
        signer.clone(),
        Heartbeats::start(platform.pool.clone(), clock, config.heartbeat_batch_max),
        notifier.clone(),
        remote,
        Settings {
            issuer: config.issuer,
            clock_tolerance_secs: config.clock_tolerance_secs,
            sync_wait: Duration::from_millis(config.sync_wait_ms),
            sync_max_wait: Duration::from_millis(config.sync_max_wait_ms),
        },
        secrets,
    ));
    platform.spawn_relay(GRANTS)?;
    platform.spawn_consumer(
        "replica",
        vec![
            platform.topics.events(ISSUANCE),
            platform.topics.events(ACTIVATION),
            platform.topics.events(DOMAIN),
        ],
        200,
        ReplicaConsumer { app: app.clone() },
    );
    platform.spawn_consumer(
        "reactions",
        vec![platform.topics.events(GRANTS)],
        50,
        ReactionConsumer { app: app.clone() },
    );
    platform.spawn(notifier.listen(platform.pool.clone(), platform.shutdown_signal()));
    platform.spawn(app::reclaim_scheduler(
        app.clone(),
        Duration::from_millis(config.scheduler_interval_ms.max(10)),
        platform.shutdown_signal(),
    ));
    let webhooks_in = service_kit::webhooks::Enqueuer::of_every_context(
        &platform.topics,
        store::ClientsOfLicense,
    );
    platform.spawn_consumer("webhooks", webhooks_in.topic_names(), 200, webhooks_in);
    platform.spawn(service_kit::webhooks::run(
        platform.pool.clone(),
        signer,
        webhooks.clone(),
        Arc::new(CallbackOwner(app.clone())),
        platform.shutdown_signal(),
    ));
    // One command a transaction: an upstream pull may take its timeouts.
    platform.spawn_command_topics(GRANTS, true, 1, app.clone());
    let data = web::Data::from(app);
    let webhooks = web::Data::new(webhooks);
    platform.document(<api::ApiDoc as utoipa::OpenApi>::openapi())?;
    platform
        .serve(move |cfg| {
            cfg.app_data(data.clone()).app_data(webhooks.clone());
            api::routes(cfg);
        })
        .await
}

/// Disables a license client's callback that keeps failing, as the
/// client's event.
struct CallbackOwner(Arc<GrantSync>);

#[async_trait::async_trait]
impl service_kit::webhooks::Owner for CallbackOwner {
    async fn disable(&self, endpoint: &str, failures: i32) -> Result<(), String> {
        let client = endpoint
            .strip_prefix("client:")
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .ok_or_else(|| format!("{endpoint} is no license client's"))?;
        let failures = u32::try_from(failures).unwrap_or(0);
        let ctx = app::system_context(
            "DisableClientCallback",
            &format!("webhooks-disable:{client}:{}", uuid::Uuid::now_v7()),
        );
        self.0
            .clients
            .execute(
                &client.to_string(),
                domain::ClientCommand::DisableCallback { failures },
                &ctx,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
