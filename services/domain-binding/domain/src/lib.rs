//! The domain-binding domain: pure, no IO.

pub mod binding;
pub mod check;
pub mod host;

use std::sync::Arc;

pub use binding::{Binding, BindingCommand, BindingError, BindingEvent};
pub use domain_kit::{Clock, SystemClock};

#[derive(Clone)]
pub struct BindingServices {
    pub clock: Arc<dyn Clock>,
}

#[cfg(test)]
mod tests;
