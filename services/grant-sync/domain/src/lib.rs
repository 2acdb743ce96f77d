//! The grant-sync domain: pure, no IO. License clients, the feature leases
//! of each license, and the upstream license servers this one syncs from.

pub mod client;
pub mod leases;
pub mod upstream;

use std::sync::Arc;

pub use client::{Client, ClientCommand, ClientError, ClientEvent};
pub use domain_kit::{Clock, SystemClock};
pub use leases::{Lease, LeaseStatus, Leases, LeasesCommand, LeasesError, LeasesEvent};
pub use upstream::{
    ImportedLicense, ImportedLicenseCommand, ImportedLicenseEvent, Upstream, UpstreamCommand,
    UpstreamError, UpstreamEvent,
};

#[derive(Clone)]
pub struct GrantServices {
    pub clock: Arc<dyn Clock>,
}

/// 1-200 characters, no control characters.
pub(crate) fn valid_text(s: &str, max: usize) -> bool {
    let n = s.trim().chars().count();
    n >= 1 && n <= max && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests;
