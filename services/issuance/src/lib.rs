//! Issuance: products, policies, licenses and API keys — the control plane.
//! `start` wires the service so tests can run it in-process.

pub mod api;
pub mod commands;
pub mod consumers;
pub mod domain;

use std::sync::Arc;

use actix_web::web;
use contracts::topics::ISSUANCE;
use serde::Deserialize;
use service_kit::platform::{Platform, PlatformError, Running};
use service_kit::CommonConfig;

use crate::commands::Issuance;
use crate::consumers::CommandConsumer;
use crate::domain::IssuanceServices;

pub const SERVICE: &str = "issuance";

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

pub struct Options {
    pub handle_signals: bool,
    pub services: IssuanceServices,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            handle_signals: true,
            services: IssuanceServices::system(),
        }
    }
}

pub async fn start(config: Config, options: Options) -> Result<Running, PlatformError> {
    let mut platform = Platform::start(SERVICE, config.common, None).await?;
    if !options.handle_signals {
        platform = platform.without_signals();
    }
    let issuance = Arc::new(Issuance::new(platform.pool.clone(), options.services));
    platform.spawn_relay(ISSUANCE);
    platform.spawn_consumer(
        "commands",
        vec![platform.topics.commands(ISSUANCE)],
        1,
        CommandConsumer {
            issuance: issuance.clone(),
            producer: platform.producer.clone(),
            outcomes_topic: platform.topics.outcomes(),
        },
    );
    let data = web::Data::from(issuance);
    platform
        .serve(move |cfg| {
            cfg.app_data(data.clone());
            api::routes(cfg);
        })
        .await
}
