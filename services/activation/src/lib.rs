//! Activation: device activations with signed activation files, offline
//! activation, uninstall and migration, trials, validation. `start` wires
//! the service so tests can run it in-process.

pub mod api;
pub mod app;
pub mod commands;
pub mod consumers;
pub mod index;
pub use activation_domain as domain;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use contracts::topics::{ACTIVATION, ISSUANCE};
use serde::Deserialize;

use service_kit::platform::{Platform, PlatformError, Running};
use service_kit::CommonConfig;
use sqlx::migrate::Migrator;

use crate::app::Activation;
use crate::consumers::{OutcomeConsumer, ReactionConsumer, ReplicaConsumer};
use crate::domain::ActivationServices;

pub const SERVICE: &str = "activation";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Its migrations; it owns no table.
pub fn schema() -> service_kit::platform::Schema {
    service_kit::platform::Schema::of(&MIGRATOR)
}

fn d_tolerance() -> u32 {
    600
}
fn d_trial_wait() -> u64 {
    10_000
}
fn d_issuer() -> String {
    "licensing.activation".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// How far a device's clock may fall behind a time it reported before.
    #[serde(default = "d_tolerance")]
    pub clock_tolerance_secs: u32,
    /// How long `POST /v1/trials` waits for issuance before answering 202.
    #[serde(default = "d_trial_wait")]
    pub trial_wait_ms: u64,
    /// `iss` of the files this service signs.
    #[serde(default = "d_issuer")]
    pub issuer: String,
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
    let services = ActivationServices {
        clock: options.clock.clone(),
        clock_tolerance: chrono::Duration::seconds(i64::from(config.clock_tolerance_secs)),
    };
    // The key of activation files (and checkpoints), recorded before
    // anything is signed with it.
    let signer = platform.signer(options.clock).await?;
    let app = Arc::new(Activation::new(
        platform.pool.clone(),
        services,
        signer,
        config.issuer,
    ));
    platform.spawn(service_kit::follow::follow(
        platform.pool.clone(),
        index::CHANNEL,
        Arc::new(index::Followed {
            index: app.index.clone(),
            pool: platform.pool.clone(),
        }),
        platform.shutdown_signal(),
    ));
    platform.spawn(index::export(
        app.index.clone(),
        platform.metrics.clone(),
        platform.shutdown_signal(),
    ));
    platform.spawn_relay(ACTIVATION)?;
    platform.spawn_consumer(
        "replica",
        vec![platform.topics.events(ISSUANCE)],
        200,
        ReplicaConsumer { app: app.clone() },
    );
    platform.spawn_consumer(
        "reactions",
        vec![platform.topics.events(ACTIVATION)],
        50,
        ReactionConsumer {
            app: app.clone(),
            producer: platform.producer.clone(),
            issuance_commands: platform.topics.commands(ISSUANCE),
        },
    );
    platform.spawn_command_topics(ACTIVATION, false, 50, app.clone());
    platform.spawn_unsequenced_consumer(
        "outcomes",
        vec![platform.topics.outcomes()],
        200,
        OutcomeConsumer { app: app.clone() },
    );
    let data = web::Data::from(app);
    let wait = web::Data::new(api::TrialWait(Duration::from_millis(config.trial_wait_ms)));
    platform.document(<api::ApiDoc as utoipa::OpenApi>::openapi())?;
    platform.from_memory(api::FROM_MEMORY);
    platform
        .serve(move |cfg| {
            cfg.app_data(data.clone()).app_data(wait.clone());
            api::routes(cfg);
        })
        .await
}
