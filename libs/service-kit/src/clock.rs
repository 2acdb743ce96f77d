//! The clock every domain reads time from (see `domain_kit`).

pub use domain_kit::{Clock, FixedClock, SystemClock};
