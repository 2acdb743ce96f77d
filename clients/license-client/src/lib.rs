//! The client library of installed products: what a product links to
//! activate (online, or offline through a request file another machine
//! carries), keep its activation file, verify it offline against pinned
//! keys, check features and expiry, detect a clock set back, sync grant
//! documents with an offline grace, lease floating seats and uninstall.
//!
//! Verification is pure and takes `now` explicitly ([`verify`]); files live
//! in a directory the product chooses ([`Store`]); the network side is
//! [`Client`] (async, reqwest). Errors are one [`Error`] type whose
//! [`Error::Server`] carries the server's stable problem code.
//!
//! ```no_run
//! # async fn run(activation_url: &str, grants_url: &str, license_key: &str, jwks: &str)
//! # -> license_client::Result<()> {
//! use license_client::{Client, Components, Keys, Store};
//!
//! let device: Components = [("machine_id", "m-1"), ("disk", "d-1"), ("board", "b-1")]
//!     .map(|(k, v)| (k.to_string(), v.to_string()))
//!     .into();
//! // The product's code: another product's activation file is refused.
//! let mut client = Client::new(activation_url, grants_url, "my-product", license_key)?
//!     .with_store(Store::open("/var/lib/product/license")?)?;
//! client.pin_activation_keys(Keys::from_json(jwks)?)?;
//! client.activate(&device, chrono::Utc::now()).await?; // stored
//! let activation = client.load_activation(&device, chrono::Utc::now())?; // offline
//! if activation.may_start("data-access", chrono::Utc::now()) { /* start a job */ }
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
pub mod store;
pub mod verify;

pub use client::{
    fetch_keys, submit_offline_request, Client, Components, FileCheck, Lease, OfflineRequest,
    Receipt, Synced, Validation, DEFAULT_TOLERANCE,
};
pub use contracts::activation::{ActivationClaims, FeatureGrant, ReceiptClaims};
pub use contracts::grants::{Grant, GrantClaims};
pub use error::{Error, Result};
pub use store::Store;
pub use verify::{Activation, GrantDocument, Keys};
