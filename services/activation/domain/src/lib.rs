//! The activation domain: pure, no IO. Time comes in through
//! `ActivationServices` so tests are deterministic.

pub mod seats;
pub mod trial;
pub mod validation;

use std::sync::Arc;

pub use domain_kit::{Clock, SystemClock};
pub use seats::{Device, Seat, SeatStatus, Seats, SeatsCommand, SeatsError, SeatsEvent};
pub use trial::{Trial, TrialCommand, TrialError, TrialEvent, TrialStatus};

#[derive(Clone)]
pub struct ActivationServices {
    pub clock: Arc<dyn Clock>,
    /// How far a device's clock may fall behind a time it reported before.
    pub clock_tolerance: chrono::Duration,
}

#[cfg(test)]
mod tests;
