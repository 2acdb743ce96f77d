//! Grant-sync: license clients, feature leases, the sync protocol, upstream pools.
//!
//! Not built yet beyond the platform: it starts, migrates its event store,
//! and serves health, readiness and metrics.

use serde::Deserialize;
use service_kit::platform::{PlatformError, Running};
use service_kit::CommonConfig;

pub const SERVICE: &str = "grant-sync";

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
    service_kit::platform::start_bare(SERVICE, config.common, handle_signals).await
}
