//! Projector: read models built from every context's events — license state
//! and the audit trail — with blue/green rebuilds, as-of state, history and
//! signed dispute bundles. `app` holds the use cases over a license's
//! events, `api` serves the reads, `models` and `checkpoints` consume the
//! topics, `rebuild` swaps models in, and `store` holds all of their SQL.
//! `start` wires it so tests can run it in-process.

pub mod api;
pub mod app;
pub mod checkpoints;
pub use projector_domain as domain;
pub mod models;
pub mod rebuild;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::web;
use contracts::topics::{ACTIVATION, DOMAIN, GRANTS, ISSUANCE};
use serde::Deserialize;
use service_kit::clock::{Clock, SystemClock};
use service_kit::platform::{Platform, PlatformError, Running};
use service_kit::CommonConfig;
use sqlx::migrate::Migrator;

pub use crate::app::App;
use crate::models::ModelConsumer;
use crate::rebuild::Projections;

pub const SERVICE: &str = "projector";

/// Messages per live transaction.
const LIVE_BATCH: usize = 1_000;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

fn d_issuer() -> String {
    "licensing-projector".into()
}

fn d_tolerance() -> u32 {
    600
}

fn d_rebuild_batch() -> usize {
    10_000
}

fn d_rebuild_cached_states() -> usize {
    250_000
}

fn d_rebuild_window() -> usize {
    250_000
}

fn d_export_timeout() -> u64 {
    600
}

fn d_as_of_snapshot_every() -> usize {
    500
}

fn d_as_of_snapshot_min_age() -> u32 {
    60
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// `iss` of checkpoints.
    #[serde(default = "d_issuer")]
    pub issuer: String,
    /// The read models to maintain (default: all). A model added here later
    /// is backfilled over the full history by its own consumer.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Clock tolerance of re-evaluated validations (the activation
    /// service's `clock_tolerance_secs`).
    #[serde(default = "d_tolerance")]
    pub clock_tolerance_secs: u32,
    /// Most messages, of all partitions, per rebuild transaction (a
    /// checkpoint).
    #[serde(default = "d_rebuild_batch")]
    pub rebuild_batch: usize,
    /// Most license states a rebuild keeps in memory across its chunks;
    /// past it they are dropped and read back as chunks need them.
    #[serde(default = "d_rebuild_cached_states")]
    pub rebuild_cached_states: usize,
    /// Most messages one rebuild transaction spans (a window of chunks;
    /// each license state is written once per window). At most
    /// `rebuild_cached_states`, since a window's states stay in memory
    /// until it commits; at least `rebuild_batch`.
    #[serde(default = "d_rebuild_window")]
    pub rebuild_window: usize,
    /// Longest an audit export may stream, however slowly its client
    /// reads; past it the export ends with an error line.
    #[serde(default = "d_export_timeout")]
    pub export_timeout_secs: u64,
    /// An as-of answer stores a snapshot of the license's state every this
    /// many events it folds, and later answers fold from the nearest one.
    #[serde(default = "d_as_of_snapshot_every")]
    pub as_of_snapshot_every: usize,
    /// Events recorded less than this long ago are not snapshotted: an
    /// event of another context recorded before them may still arrive.
    #[serde(default = "d_as_of_snapshot_min_age")]
    pub as_of_snapshot_min_age_secs: u32,
}

impl AsRef<CommonConfig> for Config {
    fn as_ref(&self) -> &CommonConfig {
        &self.common
    }
}

/// Its migrations, and the read models' tables, which its serving role owns:
/// a rebuild swaps them.
pub fn schema() -> service_kit::platform::Schema {
    service_kit::platform::Schema {
        migrator: Some(&MIGRATOR),
        owned: models::all()
            .iter()
            .flat_map(|m| m.tables().iter().copied())
            .collect(),
    }
}

pub async fn start(config: Config, handle_signals: bool) -> Result<Running, PlatformError> {
    let mut platform = Platform::start(SERVICE, config.common.clone(), &schema()).await?;
    if !handle_signals {
        platform = platform.without_signals();
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The key of dispute bundles' checkpoints.
    let signer = platform.signer(clock.clone()).await?;

    let contexts: HashMap<String, String> = [ISSUANCE, ACTIVATION, DOMAIN, GRANTS]
        .iter()
        .map(|c| (platform.topics.events(c), (*c).to_string()))
        .collect();
    let mut topics: Vec<String> = contexts.keys().cloned().collect();
    topics.sort();
    let contexts = Arc::new(contexts);
    if let Some(names) = &config.models {
        let known: Vec<&str> = models::all().iter().map(|m| m.name()).collect();
        if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(PlatformError::Config(format!(
                "models: no read model named {bad} (known: {})",
                known.join(", ")
            )));
        }
    }
    let models: Vec<_> = models::all()
        .into_iter()
        .filter(|m| {
            config
                .models
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == m.name()))
        })
        .collect();
    for m in &models {
        platform.spawn_consumer(
            m.name(),
            topics.clone(),
            LIVE_BATCH,
            ModelConsumer {
                model: m.clone(),
                contexts: contexts.clone(),
                suffix: "",
            },
        );
    }
    platform.spawn_unsequenced_consumer(
        "checkpoints",
        vec![platform.topics.checkpoints()],
        200,
        checkpoints::CheckpointConsumer,
    );
    platform.spawn(checkpoints::verify_pending(
        platform.pool.clone(),
        platform.shutdown_signal(),
    ));
    let group = platform
        .config
        .consumer_group_prefix
        .clone()
        .unwrap_or_else(|| platform.topics.prefix().to_string());
    let projections = Arc::new(Projections {
        pool: platform.pool.clone(),
        dlq: platform.producer.clone(),
        kafka: platform.kafka.clone(),
        topics,
        contexts,
        group_base: format!("{group}.{SERVICE}"),
        models,
        batch: config.rebuild_batch.max(1),
        cached_states: config.rebuild_cached_states,
        window: config
            .rebuild_window
            .min(config.rebuild_cached_states)
            .max(config.rebuild_batch.max(1)),
        watermarks: bus::Watermarks::new(&platform.kafka, &platform.group("watermarks"))
            .map_err(|e| PlatformError::Config(format!("kafka: {e}")))?,
        shutdown: platform.shutdown_signal(),
    });
    projections
        .resume()
        .await
        .map_err(|e| PlatformError::Config(format!("resuming rebuilds: {e}")))?;
    let app = web::Data::new(App {
        pool: platform.pool.clone(),
        signer,
        projections,
        clock,
        issuer: config.issuer,
        tolerance: chrono::Duration::seconds(i64::from(config.clock_tolerance_secs)),
        export_timeout: std::time::Duration::from_secs(config.export_timeout_secs.max(1)),
        snapshot_every: config.as_of_snapshot_every.max(1),
        snapshot_min_age: chrono::Duration::seconds(i64::from(config.as_of_snapshot_min_age_secs)),
        snapshots: Default::default(),
        metrics: platform.metrics.clone(),
    });
    app::describe_metrics(&platform.metrics);
    platform.document(<api::ApiDoc as utoipa::OpenApi>::openapi())?;
    platform
        .serve(move |cfg| {
            cfg.app_data(app.clone());
            api::routes(cfg);
        })
        .await
}
