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
    let mut platform = Platform::start(SERVICE, config.common, &schema()).await?;
    if !options.handle_signals {
        platform = platform.without_signals();
    }
    let services = IssuanceServices {
        clock: options.clock,
        keys: Arc::new(keys),
    };
    // Its key signs the checkpoints of its events.
    platform.signer(services.clock.clone()).await?;
    let issuance = Arc::new(Issuance::new(platform.pool.clone(), services));
    platform.spawn_relay(ISSUANCE)?;
    platform.spawn_command_topics(ISSUANCE, true, 1, issuance.clone());
    platform.spawn_consumer(
        "activation-replica",
        vec![platform.topics.events(ACTIVATION)],
        200,
        consumers::activations::ActivationReplica,
    );
    platform.spawn(scheduler::run(
        issuance.clone(),
        Duration::from_millis(config.scheduler_interval_ms.max(10)),
        platform.shutdown_signal(),
    ));
    let data = web::Data::from(issuance);
    platform
        .serve(move |cfg| {
            cfg.app_data(data.clone());
            api::routes(cfg);
        })
        .await
}
