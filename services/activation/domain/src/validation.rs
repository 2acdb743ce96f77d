//! `POST /v1/validate` as a pure function of the license, its seats and the
//! request: a read, so it appends nothing, whatever it answers. The rules
//! live in `contracts::decision`, shared with the projector's re-evaluation
//! of past requests.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use contracts::decision::{self, LiveSeat};
pub use contracts::decision::{Check, Validation};
use contracts::license_view::LicenseView;
use uuid::Uuid;

use super::seats::Seat;
use super::Seats;

impl LiveSeat for Seat {
    fn activation_id(&self) -> Uuid {
        self.activation_id
    }
    fn components(&self) -> &BTreeMap<String, String> {
        &self.components
    }
    fn last_client_time(&self) -> Option<DateTime<Utc>> {
        self.last_client_time
    }
}

pub fn validate(
    license: &LicenseView,
    seats: &Seats,
    check: &Check<'_>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Validation {
    let live: Vec<&Seat> = seats.live().collect();
    decision::validate(license, &live, check, now, tolerance)
}
