//! Pure folds of events into read models: the same functions build the live
//! model, a rebuild and an as-of view. No IO.

pub mod license_view;

pub use license_view::{FoldError, LicenseView};
