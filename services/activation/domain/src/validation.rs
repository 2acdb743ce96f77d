//! `POST /v1/validate` as a pure function of the license, its seats and the
//! request: a read, so it appends nothing, whatever it answers. The rules
//! live in `contracts::decision`, shared with the projector's re-evaluation
//! of past requests.

use std::collections::{BTreeMap, HashMap};

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

/// A license's live seats by component digest. A device is a seat only when
/// some of their components are equal, and a component's digest covers its
/// name: so the seats a device can be are those holding one of its digests,
/// found without comparing it with every seat of a license that has
/// hundreds.
#[derive(Debug, Clone, Default)]
pub struct ByComponent(HashMap<String, Vec<Uuid>>);

impl ByComponent {
    pub fn of(seats: &Seats) -> Self {
        let mut by: HashMap<String, Vec<Uuid>> = HashMap::new();
        for seat in seats.live() {
            for digest in seat.components.values() {
                by.entry(digest.clone())
                    .or_default()
                    .push(seat.activation_id);
            }
        }
        Self(by)
    }

    /// The live seats holding one of `device`'s component digests, in the
    /// order of [`Seats::live`] (by id): a device two seats would match
    /// gets the one a scan of every seat finds first.
    pub fn candidates<'a>(
        &self,
        seats: &'a Seats,
        device: &BTreeMap<String, String>,
    ) -> Vec<&'a Seat> {
        let mut ids: Vec<Uuid> = device
            .values()
            .filter_map(|d| self.0.get(d))
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.iter().filter_map(|id| seats.seats.get(id)).collect()
    }
}

/// [`validate`], the device sought among the seats `by` names for it.
pub fn validate_indexed(
    license: &LicenseView,
    seats: &Seats,
    by: &ByComponent,
    check: &Check<'_>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Validation {
    let candidates = check
        .device
        .map(|d| by.candidates(seats, d))
        .unwrap_or_default();
    let in_use = u32::try_from(seats.seats.len()).unwrap_or(u32::MAX);
    decision::validate_among(license, in_use, &candidates, check, now, tolerance)
}
