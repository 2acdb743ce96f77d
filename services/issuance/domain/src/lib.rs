//! The issuance domain: pure, no IO. Effects (the clock, key derivation)
//! come in through `IssuanceServices`, so tests are deterministic.

pub mod api_key;
pub mod license;
pub use contracts::license_key;
pub mod product;

use std::sync::Arc;

use uuid::Uuid;

pub use api_key::{ApiKey, ApiKeyCommand, ApiKeyError, ApiKeyEvent};
pub use license::{License, LicenseCommand, LicenseError, LicenseEvent};
pub use product::{Product, ProductCommand, ProductError, ProductEvent, ProductState};

pub use domain_kit::{Clock, SystemClock};

/// Where a license's key comes from. Keys are derived, not stored: a
/// database leak alone reveals none, yet the owner can always recover one.
pub trait KeySource: Send + Sync {
    /// The printable key of a license.
    fn key_for(&self, license_id: Uuid) -> String;
}

#[derive(Clone)]
pub struct IssuanceServices {
    pub clock: Arc<dyn Clock>,
    pub keys: Arc<dyn KeySource>,
}

/// Codes of products, editions, features and modules.
pub fn valid_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

#[cfg(test)]
pub mod test_support {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};

    pub use domain_kit::FixedClock;

    pub struct FixedKeys;

    impl KeySource for FixedKeys {
        fn key_for(&self, license_id: Uuid) -> String {
            license_key::format(&license_id.as_u128().to_be_bytes().repeat(2))
        }
    }

    pub fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    pub fn services() -> IssuanceServices {
        services_at(now())
    }

    pub fn services_at(at: DateTime<Utc>) -> IssuanceServices {
        IssuanceServices {
            clock: Arc::new(FixedClock(at)),
            keys: Arc::new(FixedKeys),
        }
    }
}
