//! Issuance: products, policies, licenses and API keys — the control plane.
//! `start` wires the service so tests can run it in-process.

pub mod api;
pub mod commands;
pub mod consumers;
pub use issuance_domain as domain;
pub mod keys;
pub mod recovery;
pub mod scheduler;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use contracts::topics::{ACTIVATION, ISSUANCE};
use serde::Deserialize;
use service_kit::platform::{Platform, PlatformError, Running};
use service_kit::CommonConfig;
use sqlx::migrate::Migrator;

use crate::commands::Issuance;
use crate::domain::IssuanceServices;
use crate::keys::HmacKeys;

pub const SERVICE: &str = "issuance";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Its migrations; it owns no table.
pub fn schema() -> service_kit::platform::Schema {
    service_kit::platform::Schema::of(&MIGRATOR)
}

fn default_scheduler_interval_ms() -> u64 {
    1_000
}

#[derive(Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Secret from which license keys are derived (at least 32 characters).
    /// Changing it changes every key: keep it like a signing key.
    pub license_key_secret: String,
    #[serde(default = "default_scheduler_interval_ms")]
    pub scheduler_interval_ms: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("common", &self.common)
            .field("license_key_secret", &"REDACTED")
            .field("scheduler_interval_ms", &self.scheduler_interval_ms)
            .finish()
    }
}

impl AsRef<CommonConfig> for Config {
    fn as_ref(&self) -> &CommonConfig {
        &self.common
    }
}

pub use service_kit::platform::Options;

pub async fn start(config: Config, options: Options) -> Result<Running, PlatformError> {
    let keys = HmacKeys::new(&config.license_key_secret).ok_or_else(|| {
        PlatformError::Config(format!(
            "license_key_secret must be at least {} characters",
            keys::MIN_SECRET_LEN
        ))
    })?;
    let webhooks = service_kit::webhooks::WebhookConfig::from_common(&config.common)
        .map_err(PlatformError::Config)?;
    let mut platform = Platform::start(SERVICE, config.common, &schema()).await?;
    if !options.handle_signals {
        platform = platform.without_signals();
    }
    let services = IssuanceServices {
        clock: options.clock,
        keys: Arc::new(keys),
    };
    // Its key signs the checkpoints of its events, and webhook deliveries.
    let signer = platform.signer(services.clock.clone()).await?;
    let issuance = Arc::new(Issuance::new(platform.pool.clone(), services));
    platform.spawn_relay(ISSUANCE)?;
    platform.spawn_command_topics(ISSUANCE, true, 1, issuance.clone());
    platform.spawn_consumer(
        "activation-replica",
        vec![platform.topics.events(ACTIVATION)],
        200,
        consumers::activations::ActivationReplica,
    );
    let webhooks_in = service_kit::webhooks::Enqueuer::of_every_context(
        &platform.topics,
        consumers::webhooks::IssuingKey,
    );
    platform.spawn_consumer("webhooks", webhooks_in.topic_names(), 200, webhooks_in);
    platform.spawn(service_kit::webhooks::run(
        platform.pool.clone(),
        signer,
        webhooks.clone(),
        Arc::new(CallbackOwner(issuance.clone())),
        platform.shutdown_signal(),
    ));
    platform.spawn(scheduler::run(
        issuance.clone(),
        Duration::from_millis(config.scheduler_interval_ms.max(10)),
        platform.shutdown_signal(),
    ));
    let data = web::Data::from(issuance);
    let webhooks = web::Data::new(webhooks);
    platform.document(<api::ApiDoc as utoipa::OpenApi>::openapi())?;
    platform
        .serve(move |cfg| {
            cfg.app_data(data.clone()).app_data(webhooks.clone());
            api::routes(cfg);
        })
        .await
}

/// Disables an API key's callback that keeps failing, as the key's event.
struct CallbackOwner(Arc<Issuance>);

#[async_trait::async_trait]
impl service_kit::webhooks::Owner for CallbackOwner {
    async fn disable(&self, endpoint: &str, failures: i32) -> Result<(), String> {
        let Some(key_id) = endpoint.strip_prefix("api-key:") else {
            return Err(format!("{endpoint} is no API key's"));
        };
        let failures = u32::try_from(failures).unwrap_or(0);
        let now = self.0.api_keys.services().clock.now();
        let ctx = eventstore::CommandContext {
            command_id: uuid::Uuid::now_v7(),
            command_type: "DisableCallback".into(),
            correlation_id: format!("webhooks-{}", uuid::Uuid::now_v7()),
            causation_id: None,
            actor: contracts::Actor::new(contracts::ActorKind::System, "issuance-webhooks"),
            occurred_at: now,
            request_digest: eventstore::request_digest("DisableCallback", &(key_id, failures)),
        };
        self.0
            .api_keys
            .execute(
                key_id,
                crate::domain::ApiKeyCommand::DisableCallback { failures },
                &ctx,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
