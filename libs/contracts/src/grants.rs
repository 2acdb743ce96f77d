//! Grant-sync context: license clients (`LicenseClient`), feature leases
//! (`LicenseLeases`, one stream per license), upstream license servers
//! (`Upstream`) and what they sent (`UpstreamLicense`, one stream per
//! imported license) — command bodies, event payloads, and the sync
//! protocol's documents.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::issuance::{BundleDef, FeatureDef, LicenseKind, LicenseStatus};
use crate::text::{Name, Note, Text};

pub const CLIENT_AGGREGATE: &str = "LicenseClient";
pub const LEASES_AGGREGATE: &str = "LicenseLeases";
pub const UPSTREAM_AGGREGATE: &str = "Upstream";
pub const UPSTREAM_LICENSE_AGGREGATE: &str = "UpstreamLicense";

// Command types (named in command outcomes).
pub const REGISTER_CLIENT: &str = "RegisterClient";
pub const REVOKE_CLIENT: &str = "RevokeClient";
pub const RECORD_CLIENT_CLOCK: &str = "RecordClientClock";
pub const SET_CLIENT_CALLBACK: &str = "SetClientCallback";
pub const CHECKOUT_LEASE: &str = "CheckoutLease";
pub const RELEASE_LEASE: &str = "ReleaseLease";
pub const EXPIRE_LEASE: &str = "ExpireLease";
pub const REVOKE_LEASES: &str = "RevokeLeases";
pub const REGISTER_UPSTREAM: &str = "RegisterUpstream";
pub const CHECK_UPSTREAM: &str = "CheckUpstream";
pub const SYNC_UPSTREAM: &str = "SyncUpstream";
pub const IMPORT_LICENSE: &str = "ImportLicense";

// Event types; every one is at version "1".
pub const CLIENT_REGISTERED: &str = "ClientRegistered";
pub const CLIENT_REVOKED: &str = "ClientRevoked";
pub const CLIENT_CLOCK_ROLLBACK_DETECTED: &str = "ClientClockRollbackDetected";
pub const CLIENT_CALLBACK_CHANGED: &str = "ClientCallbackChanged";
pub const CLIENT_CALLBACK_DISABLED: &str = "ClientCallbackDisabled";
pub const LEASE_GRANTED: &str = "LeaseGranted";
pub const LEASE_RELEASED: &str = "LeaseReleased";
pub const LEASE_EXPIRED: &str = "LeaseExpired";
pub const LEASES_REVOKED: &str = "LeasesRevoked";
pub const UPSTREAM_REGISTERED: &str = "UpstreamRegistered";
pub const UPSTREAM_CHECKED: &str = "UpstreamChecked";
pub const UPSTREAM_SYNCED: &str = "UpstreamSynced";
pub const UPSTREAM_PRODUCT_IMPORTED: &str = "UpstreamProductImported";
pub const UPSTREAM_LICENSE_IMPORTED: &str = "UpstreamLicenseImported";
pub const UPSTREAM_REVOCATIONS_IMPORTED: &str = "UpstreamRevocationsImported";

pub const MAX_CLIENT_LICENSES: usize = 100;
pub const MAX_QUANTITY: u32 = 10_000;

// ---------------------------------------------------------------- clients

/// Body of `POST /v1/clients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterClient {
    pub name: Name,
    /// The licenses the client may draw grants and leases from.
    pub licenses: Vec<Uuid>,
    /// Addresses or CIDRs the client may connect from (at most 10); empty
    /// means anywhere.
    #[serde(default)]
    pub allowlist: Vec<Text<64>>,
    /// Where the events of its licenses are delivered (signed webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<Text<2048>>,
    /// The event types delivered there; default: the licenses' lifecycle,
    /// activations, domain changes and leases ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 32)]
    pub callback_events: Option<Vec<Text<64>>>,
}

/// A license client was registered. Its credentials are an API key with
/// scope `sync-client`: the secret is shown once and only its digest is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRegistered {
    pub client_id: Uuid,
    pub name: String,
    pub key_id: String,
    pub secret_digest: String,
    pub licenses: Vec<Uuid>,
    pub allowlist: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The event types delivered to `callback_url` (absent: none is set,
    /// or the client predates webhooks and receives nothing until set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callback_events: Vec<String>,
    pub registered_at: DateTime<Utc>,
}

/// Body of `PUT /v1/clients/{id}/callback` (`DELETE` removes it): as an
/// API key's.
pub type SetClientCallback = crate::issuance::SetCallback;

/// The client's callback set, changed or removed; it is enabled again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCallbackChanged {
    pub client_id: Uuid,
    /// Left out when removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callback_events: Vec<String>,
    pub changed_at: DateTime<Utc>,
}

/// The client's callback kept failing: nothing is sent to it until it is
/// set again; what waits stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCallbackDisabled {
    pub client_id: Uuid,
    pub callback_url: String,
    /// Failed attempts in a row when it was disabled.
    pub failures: u32,
    pub disabled_at: DateTime<Utc>,
}

/// Body of `POST /v1/clients/{id}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeClient {
    pub reason: Note,
}

/// The client's credentials stop working; its leases end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRevoked {
    pub client_id: Uuid,
    pub key_id: String,
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
}

/// A client reported a time earlier than one it reported before, by more
/// than the tolerance: the request was refused with `CLOCK_ROLLBACK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientClockRollbackDetected {
    pub client_id: Uuid,
    pub reported_time: DateTime<Utc>,
    pub last_reported_time: DateTime<Utc>,
    pub tolerance_secs: u32,
    pub detected_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- leases

fn one() -> u32 {
    1
}

/// Body of `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutLease {
    pub license_id: Uuid,
    /// A feature code, or a module code: a module's work needs every
    /// feature the module requires, and leases each of them.
    pub feature: Name,
    #[serde(default = "one")]
    pub quantity: u32,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::strict_option"
    )]
    pub client_time: Option<DateTime<Utc>>,
}

/// Body of `POST /v1/leases/{id}/heartbeat` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::strict_option"
    )]
    pub client_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseGranted {
    pub lease_id: Uuid,
    pub license_id: Uuid,
    pub client_id: Uuid,
    /// What was asked for: a feature or a module.
    pub feature: String,
    /// The features the lease holds seats of.
    pub features: Vec<String>,
    pub quantity: u32,
    /// Heartbeats renew the lease for `ttl_secs`; one that stops is
    /// reclaimed `grace_secs` after its deadline.
    pub ttl_secs: u32,
    pub grace_secs: u32,
    pub granted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseReleased {
    pub lease_id: Uuid,
    pub license_id: Uuid,
    pub client_id: Uuid,
    pub released_at: DateTime<Utc>,
}

/// Reclaimed by the scheduler: no heartbeat came before its deadline plus
/// the grace period. The seats are free again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseExpired {
    pub lease_id: Uuid,
    pub license_id: Uuid,
    pub client_id: Uuid,
    /// The deadline the last heartbeat had set.
    pub deadline: DateTime<Utc>,
    pub expired_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEndReason {
    LicenseSuspended,
    LicenseRevoked,
    LicenseReclaimed,
    LicenseDeleted,
    ClientRevoked,
}

/// Leases ended at once (suspension or revocation of the license, a
/// revoked client); their heartbeats are refused from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesRevoked {
    pub license_id: Uuid,
    /// Empty when the license had no live lease: the event still records
    /// that the license's version `license_version` ends leases, so a
    /// checkout decided on an older version of the license is refused.
    pub lease_ids: Vec<Uuid>,
    pub reason: LeaseEndReason,
    /// The license's version (issuance sequence) whose status ended them;
    /// none when a client was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_version: Option<u64>,
    pub revoked_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- upstreams

/// Body of `POST /v1/upstreams`: a license server this one syncs from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUpstream {
    pub name: Name,
    /// This server's client id at the upstream.
    pub member_id: Uuid,
    /// Base URL of the upstream's grant-sync API.
    pub endpoint: Text<2048>,
    /// The bearer token the upstream issued for `member_id`; never stored
    /// in an event.
    pub secret: Text<512>,
    #[serde(default)]
    pub price_protection: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<Note>,
    /// Let this upstream be called over plain `http://` (its secret and
    /// answers then cross the network in clear text): an explicit choice.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRegistered {
    pub upstream_id: Uuid,
    pub name: String,
    pub member_id: Uuid,
    pub endpoint: String,
    /// Hex SHA-256 of the secret: shows which secret is in use, reveals nothing.
    pub secret_digest: String,
    pub price_protection: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    pub registered_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
}

/// A public key of an upstream's JWKS (RFC 7517), pinned when the upstream
/// is checked: its grant documents must verify under one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinnedKey {
    pub kid: String,
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
}

/// How a call to an upstream went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamStatus {
    Ok,
    Unreachable,
    BadCredentials,
    AddressNotAllowed,
    MemberMismatch,
    UpstreamError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamChecked {
    pub upstream_id: Uuid,
    pub status: UpstreamStatus,
    /// The upstream's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub http_status: Option<u16>,
    pub message: String,
    pub latency_ms: u64,
    pub checked_at: DateTime<Utc>,
    /// The upstream's signing keys as its JWKS served them at this check
    /// (a successful one): pinned until the next check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_keys: Vec<PinnedKey>,
}

/// A kind of resource pulled from an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncResource {
    /// Products: features and modules.
    Catalog,
    /// Licenses and their grants assigned to this member.
    Licenses,
    /// Activations the upstream revoked (uninstalled, migrated).
    Revocations,
}

impl SyncResource {
    pub const ALL: [Self; 3] = [Self::Catalog, Self::Licenses, Self::Revocations];
}

/// Payload of `CheckUpstream` (`POST /v1/upstreams/{id}/check`, or an
/// envelope on `<prefix>.grants.admin-commands` whose aggregate id is the
/// upstream's id): nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckUpstream {}

/// Body of `POST /v1/upstreams/{id}/sync`: one resource or `"all"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncUpstream {
    #[schema(schema_with = resource_names)]
    pub resource: Name,
}

/// `SyncUpstream::resource` in an OpenAPI document: the names it takes.
fn resource_names() -> utoipa::openapi::schema::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["catalog", "licenses", "revocations", "all"]))
        .build()
}

/// One resource pulled from an upstream: when, how it went, how many items
/// changed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSynced {
    pub upstream_id: Uuid,
    pub resource: SyncResource,
    pub status: UpstreamStatus,
    pub items: u32,
    pub message: String,
    pub synced_at: DateTime<Utc>,
}

/// A product as the catalog endpoint serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogProduct {
    pub code: String,
    pub name: String,
    pub features: Vec<FeatureDef>,
    pub bundles: Vec<BundleDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamProductImported {
    pub upstream_id: Uuid,
    pub product: CatalogProduct,
    pub imported_at: DateTime<Utc>,
}

/// A license the upstream grants this member, as it stood at the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLicenseImported {
    pub upstream_id: Uuid,
    pub grant: Grant,
    pub imported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRevocationsImported {
    pub upstream_id: Uuid,
    pub license_id: Uuid,
    pub revocations: Vec<Revocation>,
    pub imported_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- sync

/// What a license grants a client, as the sync protocol and grant
/// documents carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub license_id: Uuid,
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub edition: Option<String>,
    pub kind: LicenseKind,
    /// `expired`: work already granted continues, new work is refused.
    pub status: LicenseStatus,
    #[serde(default)]
    #[schema(required = true)]
    pub modules: Vec<String>,
    pub features: Vec<String>,
    /// Concurrent quantity of each feature.
    pub seats: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub expires_at: Option<DateTime<Utc>>,
    pub offline_grace_hours: u32,
    pub lease_ttl_secs: u32,
    pub lease_grace_secs: u32,
    /// The policy's `require_client_time`: leases and syncs for this
    /// license must report the client's clock. Omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_client_time: bool,
    /// The registrable domain the license is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub domain: Option<String>,
    /// The license's version at its issuer (issuance sequence).
    pub version: u64,
}

/// An activation that may never be installed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    /// `uninstalled`, `migrated` or the reason of a mass revocation.
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    GrantAdded,
    GrantChanged,
    GrantRevoked,
    ActivationRevoked,
    DomainRebound,
    LeaseRevoked,
}

/// One entry of the change feed a client syncs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub kind: ChangeKind,
    pub license_id: Uuid,
    pub at: DateTime<Utc>,
    /// The grant, revocation, domain or lease the change is about: a
    /// `Grant` (`grant_*`), a `Revocation` (`activation_revoked`),
    /// `{"license_id", "domain"}` (`domain_rebound`, `domain` null when
    /// unbound) or `{"lease_id", "feature"}` (`lease_revoked`).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Body of `POST /v1/sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// `next_cursor` of the previous answer; none for a first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Text<128>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::strict_option"
    )]
    pub client_time: Option<DateTime<Utc>>,
    /// How long to wait for a change when there is none (capped by the
    /// server); 0 answers at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// The claims of a grant document (a compact JWS, ES256): everything the
/// client holds, valid offline until `valid_until` (`exp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantClaims {
    pub iss: String,
    /// The client id.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub typ: String,
    pub client_id: Uuid,
    pub server_time: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub grants: Vec<Grant>,
    pub leases: Vec<LeaseSummary>,
    /// The revoked activations this answer reports (all of them on a sync
    /// without cursor): signed with the grants, so a downstream server
    /// takes both from the document only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<Revocation>,
}

/// A live lease as the client's grant document lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSummary {
    pub lease_id: Uuid,
    pub license_id: Uuid,
    pub feature: String,
    pub features: Vec<String>,
    pub quantity: u32,
    pub deadline: DateTime<Utc>,
}

impl Grant {
    /// The grant of a license as its issuer's events left it, bound to
    /// `domain` by the domain-binding context.
    pub fn from_view(v: &crate::license_view::LicenseView, domain: Option<String>) -> Self {
        let policy = v.policy.clone().unwrap_or_default();
        Self {
            license_id: v.id,
            product: v.product.clone(),
            edition: v.edition.clone(),
            kind: v.kind,
            status: v.status,
            modules: v.modules.clone(),
            features: v.features.clone(),
            seats: v
                .features
                .iter()
                .map(|f| (f.clone(), v.seats_of(f)))
                .collect(),
            expires_at: v.expires_at,
            offline_grace_hours: policy.offline_grace_hours,
            lease_ttl_secs: policy.lease_ttl_secs,
            lease_grace_secs: policy.lease_grace_secs,
            require_client_time: policy.require_client_time,
            domain,
            version: v.version,
        }
    }

    /// Whether new work may start at `now`: active and not past its expiry.
    /// Work already granted is not judged by this (expiry never stops it).
    pub fn new_work_refusal(&self, now: DateTime<Utc>) -> Option<LicenseStatus> {
        match self.status.at(self.expires_at, now) {
            LicenseStatus::Active => None,
            other => Some(other),
        }
    }

    /// How a client should read the move from `before` to this grant.
    pub fn change_from(&self, before: Option<&Grant>) -> ChangeKind {
        match (self.status, before) {
            (LicenseStatus::Revoked | LicenseStatus::Reclaimed | LicenseStatus::Deleted, _) => {
                ChangeKind::GrantRevoked
            }
            (_, None) => ChangeKind::GrantAdded,
            (_, Some(_)) => ChangeKind::GrantChanged,
        }
    }

    /// Suspension, revocation, reclaim and deletion end leases at once.
    pub fn ends_leases(&self) -> bool {
        matches!(
            self.status,
            LicenseStatus::Suspended
                | LicenseStatus::Revoked
                | LicenseStatus::Reclaimed
                | LicenseStatus::Deleted
        )
    }
}
