//! Projector: read models built from every context's events — license state
//! and the audit trail. `start` wires it so tests can run it in-process.

pub mod api;
pub mod consumers;
pub mod domain;

use std::collections::HashMap;

use actix_web::web;
use contracts::topics::{ACTIVATION, DOMAIN, GRANTS, ISSUANCE};
use serde::Deserialize;
use service_kit::platform::{Platform, PlatformError, Running};
use service_kit::CommonConfig;
use sqlx::migrate::Migrator;

use crate::consumers::EventProjector;

pub const SERVICE: &str = "projector";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
}

impl AsRef<CommonConfig> for Config {
    fn as_ref(&self) -> &CommonConfig {
        &self.common
    }
}

pub async fn start(config: Config, handle_signals: bool) -> Result<Running, PlatformError> {
    let mut platform = Platform::start(SERVICE, config.common, Some(&MIGRATOR)).await?;
    if !handle_signals {
        platform = platform.without_signals();
    }
    let contexts: HashMap<String, String> = [ISSUANCE, ACTIVATION, DOMAIN, GRANTS]
        .iter()
        .map(|c| (platform.topics.events(c), (*c).to_string()))
        .collect();
    let topics = contexts.keys().cloned().collect();
    platform.spawn_consumer("read-models", topics, 500, EventProjector { contexts });
    let pool = web::Data::new(platform.pool.clone());
    platform
        .serve(move |cfg| {
            cfg.app_data(pool.clone());
            api::routes(cfg);
        })
        .await
}
