//! Domain binding: licenses bound to a registrable domain, host checks,
//! domain changes with a free quota and fees, the public license query.
//! `start` wires the service so tests can run it in-process.

pub mod api;
pub mod app;
pub mod cache;
pub mod commands;
pub mod consumers;
pub use domain_binding_domain as domain;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use contracts::topics::ISSUANCE;
use serde::Deserialize;
use service_kit::platform::{Platform, PlatformError, Running};
use service_kit::rate_limit::RateLimiter;
use service_kit::CommonConfig;
use sqlx::migrate::Migrator;

use crate::app::DomainBinding;
use crate::cache::Cache;
use crate::consumers::ReplicaConsumer;
use crate::domain::BindingServices;

pub const SERVICE: &str = "domain-binding";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Its migrations; it owns no table.
pub fn schema() -> service_kit::platform::Schema {
    service_kit::platform::Schema::of(&MIGRATOR)
}

fn d_refresh() -> u64 {
    200
}
fn d_rate() -> u32 {
    10
}
fn d_burst() -> u32 {
    20
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// How often the host-check cache reads what changed.
    #[serde(default = "d_refresh")]
    pub cache_refresh_ms: u64,
    /// Public license query: requests per second per address, and burst.
    #[serde(default = "d_rate")]
    pub license_query_rate: u32,
    #[serde(default = "d_burst")]
    pub license_query_burst: u32,
}

impl AsRef<CommonConfig> for Config {
    fn as_ref(&self) -> &CommonConfig {
        &self.common
    }
}

pub use service_kit::platform::Options;

pub async fn start(config: Config, options: Options) -> Result<Running, PlatformError> {
    let mut platform = Platform::start(SERVICE, config.common, &schema()).await?;
    if !options.handle_signals {
        platform = platform.without_signals();
    }
    let cache = Arc::new(Cache::new(platform.pool.clone()));
    cache
        .refresh()
        .await
        .map_err(|e| PlatformError::Config(format!("loading the host-check cache: {e}")))?;
    let app = Arc::new(DomainBinding::new(
        platform.pool.clone(),
        BindingServices {
            clock: options.clock,
        },
        cache.clone(),
    ));
    // Its key signs the checkpoints of its events.
    platform
        .signer(Arc::new(service_kit::clock::SystemClock))
        .await?;
    platform.spawn_relay(contracts::topics::DOMAIN)?;
    platform.spawn_consumer(
        "replica",
        vec![platform.topics.events(ISSUANCE)],
        200,
        ReplicaConsumer { app: app.clone() },
    );
    platform.spawn_command_topics(contracts::topics::DOMAIN, true, 50, app.clone());
    platform.spawn(cache::run(
        cache,
        Duration::from_millis(config.cache_refresh_ms.max(10)),
        platform.shutdown_signal(),
    ));
    let limiter = Arc::new(RateLimiter::new(
        config.license_query_rate,
        config.license_query_burst,
    ));
    let data = web::Data::from(app);
    platform.document(<api::ApiDoc as utoipa::OpenApi>::openapi())?;
    platform.from_memory(api::FROM_MEMORY);
    platform
        .serve(move |cfg| {
            cfg.app_data(data.clone());
            api::routes(cfg, limiter.clone());
        })
        .await
}
