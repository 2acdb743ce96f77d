//! Issuance context: the `Product` catalog, `License` and `ApiKey`
//! aggregates — their command payloads and event payloads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::text::{Name, Note, Text};

pub const LICENSE_AGGREGATE: &str = "License";
pub const PRODUCT_AGGREGATE: &str = "Product";
pub const API_KEY_AGGREGATE: &str = "ApiKey";

// Command types.
pub const CREATE_PRODUCT: &str = "CreateProduct";
pub const SET_POLICY: &str = "SetPolicy";
pub const ISSUE_LICENSE: &str = "IssueLicense";
pub const RENEW_LICENSE: &str = "RenewLicense";
pub const AMEND_FEATURES: &str = "AmendFeatures";
pub const SUSPEND_LICENSE: &str = "SuspendLicense";
pub const REINSTATE_LICENSE: &str = "ReinstateLicense";
pub const REVOKE_LICENSE: &str = "RevokeLicense";
pub const DELETE_LICENSE: &str = "DeleteLicense";

// Event types; every one is at version "1".
pub const PRODUCT_CREATED: &str = "ProductCreated";
pub const POLICY_SET: &str = "PolicySet";
pub const LICENSE_ISSUED: &str = "LicenseIssued";
pub const LICENSE_RENEWED: &str = "LicenseRenewed";
pub const LICENSE_FEATURES_AMENDED: &str = "LicenseFeaturesAmended";
pub const LICENSE_SUSPENDED: &str = "LicenseSuspended";
pub const LICENSE_REINSTATED: &str = "LicenseReinstated";
pub const LICENSE_REVOKED: &str = "LicenseRevoked";
pub const LICENSE_EXPIRED: &str = "LicenseExpired";
pub const LICENSE_RECLAIMED: &str = "LicenseReclaimed";
pub const LICENSE_DELETED: &str = "LicenseDeleted";
pub const LICENSE_KEY_RECOVERED: &str = "LicenseKeyRecovered";
pub const API_KEY_CREATED: &str = "ApiKeyCreated";
pub const API_KEY_ROTATED: &str = "ApiKeyRotated";
pub const API_KEY_REVOKED: &str = "ApiKeyRevoked";
pub const API_KEY_ALLOWLIST_CHANGED: &str = "ApiKeyAllowlistChanged";
pub const API_KEY_CALLBACK_CHANGED: &str = "ApiKeyCallbackChanged";
pub const API_KEY_CALLBACK_DISABLED: &str = "ApiKeyCallbackDisabled";
pub const V1: &str = "1";
/// Kept for code that named the first event's version explicitly.
pub const LICENSE_ISSUED_V1: &str = V1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LicenseKind {
    /// Pre-license on install: time-limited, never uninstalled or migrated.
    Trial,
    /// Time-limited, never uninstalled or migrated.
    Temporary,
    /// Purchased: perpetual or dated; uninstall and migration per policy.
    Formal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    Active,
    Suspended,
    Expired,
    Reclaimed,
    Revoked,
    Deleted,
}

impl LicenseStatus {
    /// The standing in force at `now` of a license recorded with this
    /// status and `expires_at`: an active license past its expiry is
    /// expired even before the scheduler's event records it. Every context
    /// judges a license by this one rule.
    pub fn at(
        self,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        match self {
            Self::Active if expires_at.is_some_and(|t| t <= now) => Self::Expired,
            standing => standing,
        }
    }
}

// ---------------------------------------------------------------- catalog

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureDef {
    pub code: String,
    pub name: String,
}

/// A product module: usable only when every required feature is granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleDef {
    pub code: String,
    pub name: String,
    pub requires: Vec<String>,
    /// Features a module may use in some modes (e.g. CDC for real-time jobs);
    /// not needed to grant the module.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<String>,
}

fn d_trial_days() -> u32 {
    180
}
fn d_max_activations() -> u32 {
    1
}
fn d_true() -> bool {
    true
}
fn d_max_migrations() -> u32 {
    3
}
fn d_offline_grace_hours() -> u32 {
    72
}
fn d_free_domain_changes() -> u32 {
    1
}
fn d_fee_minor() -> i64 {
    500_000
}
fn d_currency() -> String {
    "CNY".into()
}
fn d_reclaim_days() -> u32 {
    90
}
fn d_fingerprint_min_matches() -> u32 {
    3
}
fn d_floating_seats() -> u32 {
    1
}
fn d_lease_ttl_secs() -> u32 {
    300
}
fn d_lease_grace_secs() -> u32 {
    60
}

/// The rules of one product edition. Money is in integer minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "d_trial_days")]
    pub trial_days: u32,
    #[serde(default = "d_max_activations")]
    pub max_activations: u32,
    /// Formal licenses only; trial and temporary never uninstall.
    #[serde(default = "d_true")]
    pub allow_uninstall: bool,
    /// Formal licenses only; trial and temporary never migrate.
    #[serde(default = "d_true")]
    pub allow_migration: bool,
    #[serde(default = "d_max_migrations")]
    pub max_migrations: u32,
    #[serde(default = "d_offline_grace_hours")]
    pub offline_grace_hours: u32,
    #[serde(default = "d_free_domain_changes")]
    pub free_domain_changes: u32,
    #[serde(default = "d_fee_minor")]
    pub domain_change_fee_minor: i64,
    #[serde(default = "d_currency")]
    pub fee_currency: String,
    #[serde(default = "d_reclaim_days")]
    pub reclaim_after_days: u32,
    #[serde(default)]
    pub requires_domain: bool,
    /// How many hardware components of a device must match for it to be the
    /// same device (one replaced disk keeps the seat; a new board and disk
    /// make a new device).
    #[serde(default = "d_fingerprint_min_matches")]
    pub fingerprint_min_matches: u32,
    /// Concurrent leases of each feature a license allows when the license
    /// does not set its own `seats`.
    #[serde(default = "d_floating_seats")]
    pub floating_seats: u32,
    /// A feature lease lives this long after its last heartbeat ...
    #[serde(default = "d_lease_ttl_secs")]
    pub lease_ttl_secs: u32,
    /// ... and is reclaimed this long after that.
    #[serde(default = "d_lease_grace_secs")]
    pub lease_grace_secs: u32,
    /// Devices must report their clock (`client_time`) on activation,
    /// validation, leases and sync: a request without it is refused rather
    /// than let past the rollback check.
    #[serde(default)]
    pub require_client_time: bool,
}

impl Policy {
    /// When a license expiring at `expires_at` under this policy is
    /// reclaimed: the one statement of the rule (issuance's scheduler and
    /// every license view compute it here).
    pub fn reclaim_at(
        &self,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        crate::time::add_days(expires_at, self.reclaim_after_days)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            trial_days: d_trial_days(),
            max_activations: d_max_activations(),
            allow_uninstall: true,
            allow_migration: true,
            max_migrations: d_max_migrations(),
            offline_grace_hours: d_offline_grace_hours(),
            free_domain_changes: d_free_domain_changes(),
            domain_change_fee_minor: d_fee_minor(),
            fee_currency: d_currency(),
            reclaim_after_days: d_reclaim_days(),
            requires_domain: false,
            fingerprint_min_matches: d_fingerprint_min_matches(),
            floating_seats: d_floating_seats(),
            lease_ttl_secs: d_lease_ttl_secs(),
            lease_grace_secs: d_lease_grace_secs(),
            require_client_time: false,
        }
    }
}

/// [`Policy`] in an OpenAPI document as answers show it, every field
/// present (a request may leave any out for its default). A schema only:
/// answers serialise the `Policy` itself.
pub struct PolicyView;

impl utoipa::PartialSchema for PolicyView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::RefOr;
        let mut schema = <Policy as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(o)) = &mut schema {
            o.required = o.properties.keys().cloned().collect();
            o.description = Some(
                "The rules of one product edition, as answers show them. Money is in integer \
                 minor units."
                    .into(),
            );
        }
        schema
    }
}

impl utoipa::ToSchema for PolicyView {}

/// Command payload of `CreateProduct`; body of `POST /v1/products`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub code: Name,
    pub name: Name,
    #[serde(default)]
    pub editions: Vec<Name>,
    #[serde(default)]
    pub features: Vec<FeatureDef>,
    #[serde(default)]
    pub bundles: Vec<BundleDef>,
    /// The policy of editions without one of their own.
    #[serde(default)]
    pub policy: Policy,
    /// Per-edition policies.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub edition_policies: std::collections::BTreeMap<String, Policy>,
}

/// Event payload of `ProductCreated` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductCreated {
    pub code: String,
    pub name: String,
    pub editions: Vec<String>,
    pub features: Vec<FeatureDef>,
    pub bundles: Vec<BundleDef>,
    pub policy: Policy,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub edition_policies: std::collections::BTreeMap<String, Policy>,
    pub created_at: DateTime<Utc>,
}

/// Command payload of `SetPolicy`; body of `PUT /v1/products/{code}/policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    /// None sets the product's default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<Name>,
    pub policy: Policy,
}

/// Event payload of `PolicySet` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    pub policy: Policy,
    pub set_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- licenses

/// Command payload of `IssueLicense`; also the body of `POST /v1/licenses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueLicense {
    pub product: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<Name>,
    pub customer: Name,
    /// The sales contract, for recovery by contract number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<Name>,
    pub kind: LicenseKind,
    /// Product modules granted; each needs all of its required features.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<Name>,
    #[serde(default)]
    pub features: Vec<Name>,
    /// Concurrent quantity (floating seats) of granted features; a feature
    /// not listed gets the policy's `floating_seats`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub seats: std::collections::BTreeMap<String, u32>,
    /// None means perpetual (formal), or the policy's trial length (trial).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::strict_option"
    )]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Event payload of `LicenseIssued` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseIssued {
    pub license_id: Uuid,
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    pub customer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    pub kind: LicenseKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub seats: std::collections::BTreeMap<String, u32>,
    pub issued_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the normalised license key: lets other contexts find
    /// a license by key without ever holding a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_digest: Option<String>,
    /// The edition's policy as it stood at issue time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// Body of `POST /v1/licenses/{id}/renew`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLicense {
    #[serde(with = "crate::time::strict")]
    pub expires_at: DateTime<Utc>,
    /// The purchase order or invoice behind the renewal.
    pub order_ref: Name,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseRenewed {
    pub license_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_expires_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub order_ref: String,
    pub renewed_at: DateTime<Utc>,
}

/// Body of `POST /v1/licenses/{id}/features`: the modules and features the
/// license grants from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmendFeatures {
    #[serde(default)]
    pub modules: Vec<Name>,
    pub features: Vec<Name>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseFeaturesAmended {
    pub license_id: Uuid,
    pub modules: Vec<String>,
    pub features: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub amended_at: DateTime<Utc>,
}

/// Body of `POST /v1/licenses/{id}/suspend` and `/revoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub reason: Note,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseSuspended {
    pub license_id: Uuid,
    pub reason: String,
    pub suspended_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseReinstated {
    pub license_id: Uuid,
    pub reinstated_at: DateTime<Utc>,
}

/// Revoking destroys a license: no transition leaves `revoked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseRevoked {
    pub license_id: Uuid,
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
}

/// Published so every context applies the same expiry semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseExpired {
    pub license_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub expired_at: DateTime<Utc>,
    /// Work already granted or dispatched keeps running.
    pub existing_grants_continue: bool,
    /// New grants, activations and dispatches are refused.
    pub new_grants_allowed: bool,
    /// When the license is reclaimed unless renewed first.
    pub reclaim_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseReclaimed {
    pub license_id: Uuid,
    pub reclaimed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseDeleted {
    pub license_id: Uuid,
    pub deleted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMethod {
    Contract,
    ActivationFile,
    Fingerprint,
}

/// A license key was shown again to its owner. The key is never in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseKeyRecovered {
    pub license_id: Uuid,
    pub method: RecoveryMethod,
    pub recovered_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- API keys

/// Scopes an API key can hold; `admin` implies every other.
pub const SCOPES: [&str; 6] = [
    "admin",
    "issuer",
    "activator",
    "domain-admin",
    "sync-client",
    "auditor",
];
pub const MAX_ALLOWLIST: usize = 10;

/// A scope in an OpenAPI document: one of [`SCOPES`]. A schema only:
/// requests read a [`Name`].
pub struct Scope;

impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(SCOPES))
            .description(Some(
                "A scope an API key can hold; `admin` implies every other.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Scope {}

/// Body of `POST /v1/api-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// Each at most once.
    #[schema(value_type = Vec<Scope>, min_items = 1)]
    pub scopes: Vec<Name>,
    /// Addresses or CIDRs allowed to use the key; empty = anywhere.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub allowlist: Vec<Text<64>>,
    /// Where the events of the licenses this key issues are delivered
    /// (signed webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<Text<2048>>,
    /// The event types delivered there; default: the licenses' lifecycle,
    /// activations, domain changes and leases ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 32)]
    pub callback_events: Option<Vec<Text<64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<Note>,
}

/// `secret_digest` is the hex SHA-256 of a 256-bit random secret: it cannot
/// be turned back into the secret, which is shown once and stored nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCreated {
    pub key_id: String,
    pub secret_digest: String,
    pub scopes: Vec<String>,
    pub allowlist: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The event types delivered to `callback_url` (absent: none is set,
    /// or the key predates webhooks and receives the default set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callback_events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRotated {
    pub key_id: String,
    pub secret_digest: String,
    pub rotated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRevoked {
    pub key_id: String,
    pub revoked_at: DateTime<Utc>,
}

/// Body of `PUT /v1/api-keys/{id}/allowlist`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAllowlist {
    /// Addresses or CIDRs allowed to use the key; empty = anywhere.
    #[schema(max_items = 10)]
    pub allowlist: Vec<Text<64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAllowlistChanged {
    pub key_id: String,
    pub allowlist: Vec<String>,
    pub changed_at: DateTime<Utc>,
}

/// Body of `PUT /v1/api-keys/{id}/callback` (`DELETE` removes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCallback {
    pub callback_url: Text<2048>,
    /// The event types delivered there; default: as before (the default
    /// set for a first callback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 32)]
    pub callback_events: Option<Vec<Text<64>>>,
}

/// The key's callback set, changed or removed; it is enabled again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCallbackChanged {
    pub key_id: String,
    /// Left out when removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callback_events: Vec<String>,
    pub changed_at: DateTime<Utc>,
}

/// The key's callback kept failing: nothing is sent to it until it is set
/// again; what waits stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCallbackDisabled {
    pub key_id: String,
    pub callback_url: String,
    /// Failed attempts in a row when it was disabled.
    pub failures: u32,
    pub disabled_at: DateTime<Utc>,
}
