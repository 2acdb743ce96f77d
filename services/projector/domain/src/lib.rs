//! Pure folds of events into read models: the same functions build the live
//! model, a rebuild and an as-of view. No IO. The license fold is shared with
//! the other contexts' replicas, so it lives in `contracts`.

pub mod decision;
pub mod state;

pub use contracts::license_view::{license_of, FoldError, LicenseView};
pub use state::LicenseState;
