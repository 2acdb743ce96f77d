//! The issuance domain: pure, no IO. Effects (the clock) come in through
//! `IssuanceServices`, so tests are deterministic.

pub mod license;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use license::{License, LicenseCommand, LicenseError, LicenseEvent, LicenseStatus};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Clone)]
pub struct IssuanceServices {
    pub clock: Arc<dyn Clock>,
}

impl IssuanceServices {
    pub fn system() -> Self {
        Self {
            clock: Arc::new(SystemClock),
        }
    }
}
