//! Activation: device activations with signed activation files, offline
//! activation, uninstall and migration, trials, validation. `start` wires
//! the service so tests can run it in-process.

pub mod api;
pub mod app;
pub mod consumers;
pub mod domain;
pub mod signer;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use chrono::Utc;
use contracts::topics::{ACTIVATION, ISSUANCE};
use contracts::{Actor, ActorKind};
use eventstore::{derived_id, request_digest, CommandContext};
use serde::Deserialize;
use service_kit::platform::{Platform, PlatformError, Running};
use service_kit::CommonConfig;
use sqlx::migrate::Migrator;
use uuid::Uuid;

use crate::app::Activation;
use crate::consumers::{ReactionConsumer, ReplicaConsumer};
use crate::domain::ActivationServices;
use crate::signer::Signer;

pub const SERVICE: &str = "activation";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

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
    /// PKCS#8 PEM file of the P-256 key that signs activation files. Its kid
    /// is its RFC 7638 thumbprint; to rotate, point this at a new file (every
    /// key ever used stays in the JWKS).
    pub signing_key_file: String,
    /// Create `signing_key_file` (mode 0600) when it does not exist: for
    /// development; in production the key is provisioned.
    #[serde(default)]
    pub signing_key_generate: bool,
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

fn signing_key(config: &Config) -> Result<String, PlatformError> {
    let path = std::path::Path::new(&config.signing_key_file);
    if !path.exists() && config.signing_key_generate {
        let pem = signing::generate_pem()
            .map_err(|e| PlatformError::Config(format!("generating a signing key: {e}")))?;
        write_private(path, &pem)
            .map_err(|e| PlatformError::Config(format!("writing {}: {e}", path.display())))?;
    }
    // The error names the file, never its content.
    std::fs::read_to_string(path)
        .map_err(|e| PlatformError::Config(format!("signing_key_file {}: {e}", path.display())))
}

fn write_private(path: &std::path::Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pem.as_bytes())
}

pub async fn start(config: Config, options: Options) -> Result<Running, PlatformError> {
    let pem = signing_key(&config)?;
    let ring = signing::KeyRing::from_pem_thumbprint(&pem).map_err(|e| {
        PlatformError::Config(format!("signing_key_file {}: {e}", config.signing_key_file))
    })?;
    drop(pem);
    let mut platform = Platform::start(SERVICE, config.common, Some(&MIGRATOR)).await?;
    if !options.handle_signals {
        platform = platform.without_signals();
    }
    let services = ActivationServices {
        clock: options.clock,
        clock_tolerance: chrono::Duration::seconds(i64::from(config.clock_tolerance_secs)),
    };
    let kid = ring.active_kid().to_string();
    let signer = Signer::new(ring, platform.pool.clone());
    let app = Arc::new(Activation::new(
        platform.pool.clone(),
        services,
        signer,
        config.issuer,
    ));
    let ctx = CommandContext {
        command_id: derived_id(Uuid::nil(), &format!("publish-key:{kid}")),
        command_type: contracts::activation::PUBLISH_SIGNING_KEY.into(),
        correlation_id: format!("startup-{kid}"),
        causation_id: None,
        actor: Actor::new(ActorKind::System, SERVICE),
        occurred_at: Utc::now(),
        request_digest: request_digest(contracts::activation::PUBLISH_SIGNING_KEY, &kid),
    };
    app.publish_key(&ctx).await.map_err(PlatformError::Config)?;
    platform.spawn_relay(ACTIVATION);
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
    let data = web::Data::from(app);
    let wait = web::Data::new(api::TrialWait(Duration::from_millis(config.trial_wait_ms)));
    platform
        .serve(move |cfg| {
            cfg.app_data(data.clone()).app_data(wait.clone());
            api::routes(cfg);
        })
        .await
}
