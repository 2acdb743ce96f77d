//! Domain-binding context: a license bound to one registrable domain
//! (`DomainBinding`, one stream per license).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::text::{Note, Text};

/// A host or domain as a caller writes it (253 octets at most once in
/// punycode; the Unicode form may be longer).
pub type HostText = Text<1024>;

pub const BINDING_AGGREGATE: &str = "DomainBinding";

// Command types (named in command outcomes).
pub const BIND_DOMAIN: &str = "BindDomain";
pub const CHANGE_DOMAIN: &str = "ChangeDomain";
pub const RESET_DOMAIN: &str = "ResetDomain";
pub const RELEASE_DOMAIN: &str = "ReleaseDomain";

// Event types; every one is at version "1".
pub const DOMAIN_BOUND: &str = "DomainBound";
pub const DOMAIN_CHANGED: &str = "DomainChanged";
pub const DOMAIN_CHANGE_CHARGED: &str = "DomainChangeCharged";
pub const DOMAIN_RESET: &str = "DomainReset";
pub const DOMAIN_RELEASED: &str = "DomainReleased";

/// Body of `PUT /v1/licenses/{id}/domain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindDomain {
    /// Any host of the domain; the registrable domain is what gets bound.
    pub domain: HostText,
}

/// Body of `POST /v1/licenses/{id}/domain/change`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeDomain {
    pub domain: HostText,
    /// Required once the policy's free changes are used up.
    #[serde(default)]
    pub accept_fee: bool,
}

/// Body of `DELETE /v1/licenses/{id}/domain` (operator reset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetDomain {
    pub reason: Note,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainBound {
    pub license_id: Uuid,
    pub product: String,
    /// The registrable domain (eTLD+1, punycode).
    pub domain: String,
    /// What the caller submitted, normalised (it may be a subdomain).
    pub requested_host: String,
    /// What the operator must do next (DNS, callback address).
    pub follow_up: Vec<String>,
    pub bound_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainChanged {
    pub license_id: Uuid,
    pub product: String,
    pub from_domain: String,
    pub domain: String,
    pub requested_host: String,
    /// Changes of this license so far, this one included.
    pub changes_used: u32,
    /// Within the policy's free changes; otherwise a `DomainChangeCharged`
    /// event follows in the same command.
    pub free: bool,
    pub follow_up: Vec<String>,
    pub changed_at: DateTime<Utc>,
}

/// A billable domain change; money in integer minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainChangeCharged {
    pub license_id: Uuid,
    pub change_number: u32,
    pub amount_minor: i64,
    pub currency: String,
    pub charged_at: DateTime<Utc>,
}

/// An operator unbound the domain; not counted as a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainReset {
    pub license_id: Uuid,
    pub domain: String,
    pub reason: String,
    pub reset_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    LicenseRevoked,
    LicenseReclaimed,
    LicenseDeleted,
}

/// The license left service; its domain is free for another license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainReleased {
    pub license_id: Uuid,
    pub domain: String,
    pub reason: ReleaseReason,
    pub released_at: DateTime<Utc>,
}
