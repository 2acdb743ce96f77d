//! The JSON Schemas under `schemas/events`, `schemas/commands` and
//! `schemas/files` against the serde types they describe: every instance serde writes is valid, and every
//! document the schema rejects for shape (unknown field, missing field, wrong
//! type, wrong enum value, malformed id or timestamp) serde rejects too.
//!
//! Every schema file must be listed in [`contracts`]; the generic tests run
//! over that list and `every_schema_file_is_covered` fails for a file that is
//! not in it. They walk each sample together with its schema, so nested
//! objects (an actor, a policy, a module) get the same checks as the payload.
//! Where a schema is stricter than serde (null for an omitted option, value
//! formats serde leaves to the domain), the tests pin it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use contracts::activation::*;
use contracts::domain::*;
use contracts::grants::*;
use contracts::issuance::*;
use contracts::{
    Actor, ActorKind, CommandEnvelope, CommandOutcome, ErrorKind, EventEnvelope, OutcomeError,
    OutcomeStatus,
};
use jsonschema::Validator;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The schema files and the types they describe.

const EVENT_ENVELOPE: &str = "events/envelope.v1.json";
const LICENSE_ISSUED_SCHEMA: &str = "events/issuance/LicenseIssued.v1.json";
const COMMAND_ENVELOPE: &str = "commands/envelope.v1.json";
const COMMAND_OUTCOME: &str = "commands/outcome.v1.json";
const ISSUE_LICENSE_SCHEMA: &str = "commands/issuance/IssueLicense.v1.json";
const EMPTY_SCHEMA: &str = "commands/issuance/Empty.v1.json";
const LICENSE_KEY_RECOVERED_SCHEMA: &str = "events/issuance/LicenseKeyRecovered.v1.json";
const DEVICE_ACTIVATED_SCHEMA: &str = "events/activation/DeviceActivated.v1.json";
const ACTIVATIONS_REVOKED_SCHEMA: &str = "events/activation/ActivationsRevoked.v1.json";
const ACTIVATION_CLAIMS_SCHEMA: &str = "files/ActivationClaims.v1.json";
const DOMAIN_RELEASED_SCHEMA: &str = "events/domain/DomainReleased.v1.json";
const BIND_DOMAIN_SCHEMA: &str = "commands/domain/BindDomain.v1.json";
const LEASE_GRANTED_SCHEMA: &str = "events/grants/LeaseGranted.v1.json";
const LEASES_REVOKED_SCHEMA: &str = "events/grants/LeasesRevoked.v1.json";
const UPSTREAM_CHECKED_SCHEMA: &str = "events/grants/UpstreamChecked.v1.json";
const UPSTREAM_SYNCED_SCHEMA: &str = "events/grants/UpstreamSynced.v1.json";
const CHECKOUT_LEASE_SCHEMA: &str = "commands/grants/CheckoutLease.v1.json";
const SYNC_SCHEMA: &str = "commands/grants/Sync.v1.json";
const HEARTBEAT_SCHEMA: &str = "commands/grants/Heartbeat.v1.json";
const GRANT_CLAIMS_SCHEMA: &str = "files/GrantClaims.v1.json";
const CHECKPOINT_CLAIMS_SCHEMA: &str = "files/CheckpointClaims.v1.json";
const RECEIPT_CLAIMS_SCHEMA: &str = "files/ReceiptClaims.v1.json";

/// The pattern of a hex SHA-256 digest; every `*digest`, `*hash` and
/// `fingerprint` has it, and every digest in a map of `components`.
const SHA256: &str = "^[0-9a-f]{64}$";

/// Whether the value at `pointer` is a hex SHA-256 digest by its name.
fn is_sha256(pointer: &str) -> bool {
    let mut segments = pointer.rsplit('/');
    let last = segments.next().unwrap_or_default();
    last.ends_with("digest")
        || last.ends_with("hash")
        || last == "fingerprint"
        || segments.next() == Some("components")
}

/// The pattern of a host or domain name as the domain events record it,
/// as the domain-binding service normalises it: lower-case ASCII (punycode
/// for IDNs), labels of 1 to 63 characters of a-z, 0-9, '-' and '_', at
/// least two; `maxLength` 253 beside it, and [`NUMERIC_TLD`] under `not`.
/// The service keeps underscores and hyphens at either end of a label (the
/// WHATWG URL parser does), so the labels are not strictly LDH. Every
/// `*domain` and `requested_host` of an event or of a file the server signs
/// (a grant document's bound domain) has it; in a command body the same
/// fields are free text of 1 to 253 characters, which the server
/// normalises.
const DOMAIN_NAME: &str = r"^(?:[a-z0-9_-]{1,63}\.)+[a-z0-9_-]{1,63}$";

/// A name whose last label is a number: an IPv4 address to the WHATWG URL
/// parser, which the service refuses to bind.
const NUMERIC_TLD: &str = r"\.(?:[0-9]+|0x[0-9a-f]*)$";

/// The longest domain name, in characters.
const MAX_DOMAIN_CHARS: usize = 253;

/// Whether the value at `pointer` is a domain name or host by its name.
fn is_domain(pointer: &str) -> bool {
    let last = pointer.rsplit('/').next().unwrap_or_default();
    last.ends_with("domain") || last == "requested_host"
}

/// The pattern of an ISO 4217 alphabetic code; every `currency` has it (a
/// policy's `fee_currency` is free: the Product aggregate checks it).
const CURRENCY: &str = "^[A-Z]{3}$";

/// Folders under `schemas/` whose every `*.json` must be covered here.
const SCHEMA_DIRS: &[&str] = &["events", "commands", "files"];

/// Members serde reads as any JSON value (`serde_json::Value`, or any
/// object): only the schema checks them.
const ANY_JSON: &[(&str, &str)] = &[
    (EVENT_ENVELOPE, "/payload"),
    (COMMAND_ENVELOPE, "/payload"),
    (COMMAND_OUTCOME, "/result"),
];

/// The bounded contexts that publish events: each names the folder of its
/// payload schemas under `events/`.
const ISSUANCE: &str = "issuance";
const ACTIVATION: &str = "activation";
const DOMAIN: &str = contracts::topics::DOMAIN;
const GRANTS: &str = contracts::topics::GRANTS;

/// Every event type, with its context and aggregate type.
const EVENT_TYPES: &[(&str, &str, &str)] = &[
    (ISSUANCE, PRODUCT_CREATED, PRODUCT_AGGREGATE),
    (ISSUANCE, POLICY_SET, PRODUCT_AGGREGATE),
    (ISSUANCE, LICENSE_ISSUED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_RENEWED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_FEATURES_AMENDED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_SUSPENDED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_REINSTATED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_REVOKED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_EXPIRED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_RECLAIMED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_DELETED, LICENSE_AGGREGATE),
    (ISSUANCE, LICENSE_KEY_RECOVERED, LICENSE_AGGREGATE),
    (ISSUANCE, API_KEY_CREATED, API_KEY_AGGREGATE),
    (ISSUANCE, API_KEY_ROTATED, API_KEY_AGGREGATE),
    (ISSUANCE, API_KEY_REVOKED, API_KEY_AGGREGATE),
    (ISSUANCE, API_KEY_ALLOWLIST_CHANGED, API_KEY_AGGREGATE),
    (ISSUANCE, API_KEY_CALLBACK_CHANGED, API_KEY_AGGREGATE),
    (ISSUANCE, API_KEY_CALLBACK_DISABLED, API_KEY_AGGREGATE),
    (ACTIVATION, DEVICE_ACTIVATED, ACTIVATIONS_AGGREGATE),
    (ACTIVATION, DEVICE_SEEN, ACTIVATIONS_AGGREGATE),
    (ACTIVATION, OFFLINE_RESPONSE_ISSUED, ACTIVATIONS_AGGREGATE),
    (ACTIVATION, CLOCK_ROLLBACK_DETECTED, ACTIVATIONS_AGGREGATE),
    (ACTIVATION, ACTIVATION_UNINSTALLED, ACTIVATIONS_AGGREGATE),
    (ACTIVATION, ACTIVATION_MIGRATED, ACTIVATIONS_AGGREGATE),
    (ACTIVATION, ACTIVATIONS_REVOKED, ACTIVATIONS_AGGREGATE),
    (ACTIVATION, TRIAL_STARTED, TRIAL_AGGREGATE),
    (ACTIVATION, TRIAL_ACTIVATED, TRIAL_AGGREGATE),
    (ACTIVATION, TRIAL_ENDED, TRIAL_AGGREGATE),
    (ACTIVATION, TRIAL_FAILED, TRIAL_AGGREGATE),
    (ACTIVATION, SIGNING_KEY_PUBLISHED, SIGNING_KEY_AGGREGATE),
    (DOMAIN, DOMAIN_BOUND, BINDING_AGGREGATE),
    (DOMAIN, DOMAIN_CHANGED, BINDING_AGGREGATE),
    (DOMAIN, DOMAIN_CHANGE_CHARGED, BINDING_AGGREGATE),
    (DOMAIN, DOMAIN_RESET, BINDING_AGGREGATE),
    (DOMAIN, DOMAIN_RELEASED, BINDING_AGGREGATE),
    (GRANTS, CLIENT_REGISTERED, CLIENT_AGGREGATE),
    (GRANTS, CLIENT_REVOKED, CLIENT_AGGREGATE),
    (GRANTS, CLIENT_CLOCK_ROLLBACK_DETECTED, CLIENT_AGGREGATE),
    (GRANTS, CLIENT_CALLBACK_CHANGED, CLIENT_AGGREGATE),
    (GRANTS, CLIENT_CALLBACK_DISABLED, CLIENT_AGGREGATE),
    (GRANTS, LEASE_GRANTED, LEASES_AGGREGATE),
    (GRANTS, LEASE_RELEASED, LEASES_AGGREGATE),
    (GRANTS, LEASE_EXPIRED, LEASES_AGGREGATE),
    (GRANTS, LEASES_REVOKED, LEASES_AGGREGATE),
    (GRANTS, UPSTREAM_REGISTERED, UPSTREAM_AGGREGATE),
    (GRANTS, UPSTREAM_CHECKED, UPSTREAM_AGGREGATE),
    (GRANTS, UPSTREAM_SYNCED, UPSTREAM_AGGREGATE),
    (GRANTS, UPSTREAM_PRODUCT_IMPORTED, UPSTREAM_AGGREGATE),
    (
        GRANTS,
        UPSTREAM_LICENSE_IMPORTED,
        UPSTREAM_LICENSE_AGGREGATE,
    ),
    (
        GRANTS,
        UPSTREAM_REVOCATIONS_IMPORTED,
        UPSTREAM_LICENSE_AGGREGATE,
    ),
];

/// Every command type that carries a payload, with its context. The API-key
/// commands come only over HTTP and are named by the issuance service
/// (contracts has no constants for them); rotating and revoking a key take
/// no body, and neither does releasing a domain (`RELEASE_DOMAIN`). The
/// other grant-sync command types (recording a client's clock, releasing,
/// expiring and revoking leases, checking an upstream, importing a license)
/// name commands the service makes itself, or from a request without a body
/// (releasing a lease is a DELETE): contracts has no payload type for them.
const COMMAND_TYPES: &[(&str, &str)] = &[
    (ISSUANCE, CREATE_PRODUCT),
    (ISSUANCE, SET_POLICY),
    (ISSUANCE, ISSUE_LICENSE),
    (ISSUANCE, RENEW_LICENSE),
    (ISSUANCE, AMEND_FEATURES),
    (ISSUANCE, SUSPEND_LICENSE),
    (ISSUANCE, REINSTATE_LICENSE),
    (ISSUANCE, REVOKE_LICENSE),
    (ISSUANCE, DELETE_LICENSE),
    (ISSUANCE, "CreateApiKey"),
    (ISSUANCE, "SetAllowlist"),
    (ISSUANCE, "SetCallback"),
    (ACTIVATION, ACTIVATE),
    (ACTIVATION, MIGRATE),
    (ACTIVATION, UNINSTALL),
    (ACTIVATION, START_TRIAL),
    (DOMAIN, BIND_DOMAIN),
    (DOMAIN, CHANGE_DOMAIN),
    (DOMAIN, RESET_DOMAIN),
    (GRANTS, REGISTER_CLIENT),
    (GRANTS, SET_CLIENT_CALLBACK),
    (GRANTS, REVOKE_CLIENT),
    (GRANTS, CHECKOUT_LEASE),
    (GRANTS, REGISTER_UPSTREAM),
    (GRANTS, SYNC_UPSTREAM),
    (GRANTS, CHECK_UPSTREAM),
];

/// HTTP request bodies under `commands/` that are no command's payload
/// (contracts has no command type for them: a sync reads the change feed, a
/// heartbeat renews a lease), with their context, name and route. Their
/// schemas describe themselves as "Body of <route>".
const REQUEST_BODIES: &[(&str, &str, &str)] = &[
    (GRANTS, "Sync", "POST /v1/sync"),
    (GRANTS, "Heartbeat", "POST /v1/leases/{id}/heartbeat"),
];

/// The schema of an event's payload, named by its context, type and
/// version.
fn event_payload_schema(context: &str, event_type: &str, version: &str) -> String {
    format!("events/{context}/{event_type}.v{version}.json")
}

/// The context and aggregate type of an event type, from [`EVENT_TYPES`].
fn event_type_info(event_type: &str) -> (&'static str, &'static str) {
    EVENT_TYPES
        .iter()
        .find(|(_, t, _)| *t == event_type)
        .map(|&(context, _, aggregate)| (context, aggregate))
        .unwrap_or_else(|| panic!("{event_type} is not listed in EVENT_TYPES"))
}

/// The payload schema of an event of a type listed in [`EVENT_TYPES`].
fn payload_schema_of(event_type: &str, version: &str) -> String {
    event_payload_schema(event_type_info(event_type).0, event_type, version)
}

/// The context of a command type, from [`COMMAND_TYPES`].
fn command_context(command_type: &str) -> &'static str {
    COMMAND_TYPES
        .iter()
        .find(|(_, t)| *t == command_type)
        .map(|&(context, _)| context)
        .unwrap_or_else(|| panic!("{command_type} is not listed in COMMAND_TYPES"))
}

/// The schema of a command's payload, named by its context and type; the
/// issuance commands that carry nothing share one.
fn command_payload_schema(command_type: &str) -> String {
    match command_type {
        REINSTATE_LICENSE | DELETE_LICENSE => EMPTY_SCHEMA.to_string(),
        _ => format!(
            "commands/{}/{command_type}.v1.json",
            command_context(command_type)
        ),
    }
}

/// The schema of a request body listed in [`REQUEST_BODIES`].
fn request_body_schema(name: &str) -> String {
    let (context, ..) = REQUEST_BODIES
        .iter()
        .find(|(_, n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not listed in REQUEST_BODIES"));
    format!("commands/{context}/{name}.v1.json")
}

/// Mirror of the issuance service's `commands::Empty`, the payload of
/// `ReinstateLicense` and `DeleteLicense` (contracts cannot depend on the
/// service).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

struct Contract {
    /// Path of the schema under `schemas/`.
    schema: String,
    /// Serialised instances: the first sets every optional field, the
    /// second none.
    samples: Box<dyn Fn() -> Vec<Value>>,
    /// Serde's reading of a document, written back out; `None` when serde
    /// refuses the document.
    read: fn(&Value) -> Option<Value>,
    /// Round-trips the typed instances through the schema.
    round_trip: Box<dyn Fn()>,
}

impl Contract {
    /// Whether serde accepts a document as the Rust type.
    fn parses(&self, doc: &Value) -> bool {
        (self.read)(doc).is_some()
    }
}

fn typed<T>(schema: impl Into<String>, instances: fn() -> Vec<T>) -> Contract
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    let schema = schema.into();
    let path = schema.clone();
    Contract {
        schema,
        samples: Box::new(move || to_values(&instances())),
        read: read::<T>,
        round_trip: Box::new(move || assert_round_trips(&path, &instances())),
    }
}

fn event<T>(event_type: &str, instances: fn() -> Vec<T>) -> Contract
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    typed(payload_schema_of(event_type, V1), instances)
}

fn command<T>(command_type: &str, instances: fn() -> Vec<T>) -> Contract
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    typed(command_payload_schema(command_type), instances)
}

fn request_body<T>(name: &str, instances: fn() -> Vec<T>) -> Contract
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    typed(request_body_schema(name), instances)
}

fn contracts() -> Vec<Contract> {
    vec![
        typed(EVENT_ENVELOPE, event_envelopes),
        typed(COMMAND_ENVELOPE, command_envelopes),
        typed(COMMAND_OUTCOME, command_outcomes),
        // Events.
        event(PRODUCT_CREATED, products_created),
        event(POLICY_SET, policies_set),
        event(LICENSE_ISSUED, licenses_issued),
        event(LICENSE_RENEWED, licenses_renewed),
        event(LICENSE_FEATURES_AMENDED, features_amended),
        event(LICENSE_SUSPENDED, licenses_suspended),
        event(LICENSE_REINSTATED, licenses_reinstated),
        event(LICENSE_REVOKED, licenses_revoked),
        event(LICENSE_EXPIRED, licenses_expired),
        event(LICENSE_RECLAIMED, licenses_reclaimed),
        event(LICENSE_DELETED, licenses_deleted),
        event(LICENSE_KEY_RECOVERED, keys_recovered),
        event(API_KEY_CREATED, api_keys_created),
        event(API_KEY_ROTATED, api_keys_rotated),
        event(API_KEY_REVOKED, api_keys_revoked),
        event(API_KEY_ALLOWLIST_CHANGED, allowlists_changed),
        event(API_KEY_CALLBACK_CHANGED, callbacks_changed),
        event(API_KEY_CALLBACK_DISABLED, callbacks_disabled),
        event(DEVICE_ACTIVATED, devices_activated),
        event(DEVICE_SEEN, devices_seen),
        event(OFFLINE_RESPONSE_ISSUED, offline_responses_issued),
        event(CLOCK_ROLLBACK_DETECTED, clock_rollbacks),
        event(ACTIVATION_UNINSTALLED, activations_uninstalled),
        event(ACTIVATION_MIGRATED, activations_migrated),
        event(ACTIVATIONS_REVOKED, activations_revoked),
        event(TRIAL_STARTED, trials_started),
        event(TRIAL_ACTIVATED, trials_activated),
        event(TRIAL_ENDED, trials_ended),
        event(TRIAL_FAILED, trials_failed),
        event(SIGNING_KEY_PUBLISHED, signing_keys_published),
        event(DOMAIN_BOUND, domains_bound),
        event(DOMAIN_CHANGED, domains_changed),
        event(DOMAIN_CHANGE_CHARGED, domain_changes_charged),
        event(DOMAIN_RESET, domains_reset),
        event(DOMAIN_RELEASED, domains_released),
        event(CLIENT_REGISTERED, clients_registered),
        event(CLIENT_REVOKED, clients_revoked),
        event(CLIENT_CLOCK_ROLLBACK_DETECTED, client_clock_rollbacks),
        event(CLIENT_CALLBACK_CHANGED, client_callbacks_changed),
        event(CLIENT_CALLBACK_DISABLED, client_callbacks_disabled),
        event(LEASE_GRANTED, leases_granted),
        event(LEASE_RELEASED, leases_released),
        event(LEASE_EXPIRED, leases_expired),
        event(LEASES_REVOKED, leases_revoked),
        event(UPSTREAM_REGISTERED, upstreams_registered),
        event(UPSTREAM_CHECKED, upstreams_checked),
        event(UPSTREAM_SYNCED, upstreams_synced),
        event(UPSTREAM_PRODUCT_IMPORTED, upstream_products_imported),
        event(UPSTREAM_LICENSE_IMPORTED, upstream_licenses_imported),
        event(UPSTREAM_REVOCATIONS_IMPORTED, upstream_revocations_imported),
        // Commands.
        command(CREATE_PRODUCT, product_specs),
        command(SET_POLICY, policy_changes),
        command(ISSUE_LICENSE, issue_licenses),
        command(RENEW_LICENSE, renewals),
        command(AMEND_FEATURES, amendments),
        command(SUSPEND_LICENSE, suspensions),
        command(REVOKE_LICENSE, revocations),
        command(REINSTATE_LICENSE, empties),
        command("CreateApiKey", api_key_specs),
        command("SetAllowlist", allowlists),
        command("SetCallback", callbacks),
        command(ACTIVATE, activates),
        command(MIGRATE, migrates),
        command(UNINSTALL, uninstalls),
        command(START_TRIAL, trial_starts),
        command(CHECK_UPSTREAM, upstream_checks),
        command(BIND_DOMAIN, domain_bindings),
        command(CHANGE_DOMAIN, domain_changes),
        command(RESET_DOMAIN, domain_resets),
        command(REGISTER_CLIENT, client_registrations),
        command(SET_CLIENT_CALLBACK, callbacks),
        command(REVOKE_CLIENT, client_revocations),
        command(CHECKOUT_LEASE, lease_checkouts),
        command(REGISTER_UPSTREAM, upstream_registrations),
        command(SYNC_UPSTREAM, upstream_syncs),
        // Request bodies that are no command.
        request_body("Sync", sync_requests),
        request_body("Heartbeat", heartbeats),
        // Files.
        typed(ACTIVATION_CLAIMS_SCHEMA, activation_claims),
        typed(RECEIPT_CLAIMS_SCHEMA, receipt_claims),
        typed(GRANT_CLAIMS_SCHEMA, grant_claims),
        typed(CHECKPOINT_CLAIMS_SCHEMA, checkpoint_claims),
    ]
}

fn checkpoint_claims() -> Vec<contracts::checkpoint::CheckpointClaims> {
    use contracts::checkpoint::{CheckpointClaims, CHECKPOINT_TYP};
    vec![
        CheckpointClaims {
            iss: "issuance".into(),
            typ: CHECKPOINT_TYP.into(),
            context: "issuance".into(),
            tree_size: 1_204,
            root_hash: DIGEST_1.into(),
            last_position: Some(1_311),
            iat: 1_783_065_900,
            signed_at: at("2026-07-03T08:05:00Z"),
        },
        // An empty store: no last position, the empty tree's hash.
        CheckpointClaims {
            iss: "domain-binding".into(),
            typ: CHECKPOINT_TYP.into(),
            context: "domain".into(),
            tree_size: 0,
            root_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            last_position: None,
            iat: 1_783_065_901,
            signed_at: at("2026-07-03T08:05:01.25Z"),
        },
    ]
}

// ---------------------------------------------------------------------------
// Realistic instances.

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test timestamp is RFC 3339")
        .with_timezone(&Utc)
}

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).expect("test uuid is valid")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const LICENSE_1: &str = "01956a3e-7b1c-7d2e-8f90-1a2b3c4d5e6f";
const LICENSE_2: &str = "01956a41-0c2d-7e3f-9a01-b2c3d4e5f607";
const LICENSE_3: &str = "01956a44-5555-7aaa-bbbb-cccccccccccc";
const KEY_1: &str = "AKID7f3a9c2e4b5d4e6f8a9b0c1d2e3f4a5b";
const KEY_2: &str = "AKIDc0ffee00d15ea5e0b16b00b5deadbeef";
/// SHA-256 digests of "hello" and "abc".
const DIGEST_1: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
const DIGEST_2: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/// Two licenses, each with a moment something happened to it.
fn license_moments() -> [(Uuid, DateTime<Utc>); 2] {
    [
        (uuid(LICENSE_1), at("2026-05-04T09:30:00Z")),
        (uuid(LICENSE_2), at("2026-05-05T17:45:12.5Z")),
    ]
}

fn per_license<T>(make: impl Fn(Uuid, DateTime<Utc>) -> T) -> Vec<T> {
    license_moments()
        .into_iter()
        .map(|(id, at)| make(id, at))
        .collect()
}

/// An event per license with a reason: suspended or revoked.
fn per_license_with<T>(reasons: Vec<Reason>, make: fn(Uuid, String, DateTime<Utc>) -> T) -> Vec<T> {
    license_moments()
        .into_iter()
        .zip(reasons)
        .map(|((id, at), r)| make(id, String::from(r.reason), at))
        .collect()
}

/// Two API keys, each with the digest of its secret and a moment.
fn per_key<T>(make: impl Fn(String, String, DateTime<Utc>) -> T) -> Vec<T> {
    [
        (KEY_1, DIGEST_1, at("2026-02-27T08:00:00Z")),
        (KEY_2, DIGEST_2, at("2026-03-03T16:20:45.123Z")),
    ]
    .into_iter()
    .map(|(key, digest, at)| make(key.into(), digest.into(), at))
    .collect()
}

fn feature(code: &str, name: &str) -> FeatureDef {
    FeatureDef {
        code: code.into(),
        name: name.into(),
    }
}

fn bundle(code: &str, name: &str, requires: &[&str], optional: &[&str]) -> BundleDef {
    BundleDef {
        code: code.into(),
        name: name.into(),
        requires: strings(requires),
        optional: strings(optional),
    }
}

fn standard_policy() -> Policy {
    Policy {
        max_activations: 3,
        ..Policy::default()
    }
}

/// Every field away from its default.
fn enterprise_policy() -> Policy {
    Policy {
        trial_days: 30,
        max_activations: 25,
        allow_uninstall: false,
        allow_migration: false,
        max_migrations: 0,
        offline_grace_hours: 168,
        free_domain_changes: 3,
        domain_change_fee_minor: 1_200_000,
        fee_currency: "USD".into(),
        reclaim_after_days: 180,
        requires_domain: true,
        fingerprint_min_matches: 2,
        floating_seats: 5,
        lease_ttl_secs: 900,
        lease_grace_secs: 120,
        require_client_time: true,
    }
}

fn product_specs() -> Vec<CreateProduct> {
    vec![
        // Every optional field set.
        CreateProduct {
            code: "integration-platform".try_into().expect("valid text"),
            name: "Integration Platform".try_into().expect("valid text"),
            editions: strings(&["standard", "enterprise"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            features: vec![
                feature("datasource-mgmt", "Data source management"),
                feature("data-access", "Data access"),
                feature("cdc-realtime", "Change data capture (real-time jobs)"),
                feature("topic-mgmt", "Topic management"),
                feature("pub-sub", "Publish/subscribe"),
            ],
            bundles: vec![
                bundle(
                    "data-integration",
                    "Data integration",
                    &["datasource-mgmt", "data-access"],
                    &["cdc-realtime"],
                ),
                bundle(
                    "message-integration",
                    "Message integration",
                    &["topic-mgmt", "pub-sub"],
                    &[],
                ),
            ],
            policy: standard_policy(),
            edition_policies: BTreeMap::from([("enterprise".into(), enterprise_policy())]),
        },
        // None set: what serde fills in.
        CreateProduct {
            code: "cloud-engine".try_into().expect("valid text"),
            name: "Cloud Engine".try_into().expect("valid text"),
            editions: vec![],
            features: vec![],
            bundles: vec![],
            policy: Policy::default(),
            edition_policies: BTreeMap::new(),
        },
    ]
}

fn products_created() -> Vec<ProductCreated> {
    let times = [at("2026-01-12T09:00:00Z"), at("2026-01-12T09:05:31.25Z")];
    product_specs()
        .into_iter()
        .zip(times)
        .map(|(c, created_at)| ProductCreated {
            code: String::from(c.code),
            name: String::from(c.name),
            editions: contracts::text::strings(c.editions),
            features: c.features,
            bundles: c.bundles,
            policy: c.policy,
            edition_policies: c.edition_policies,
            created_at,
        })
        .collect()
}

fn policy_changes() -> Vec<SetPolicy> {
    vec![
        SetPolicy {
            edition: Some("enterprise".try_into().expect("valid text")),
            policy: enterprise_policy(),
        },
        SetPolicy {
            edition: None,
            policy: Policy::default(),
        },
    ]
}

fn policies_set() -> Vec<PolicySet> {
    let times = [at("2026-02-01T12:00:00Z"), at("2026-02-01T12:00:07.9Z")];
    policy_changes()
        .into_iter()
        .zip(times)
        .map(|(p, set_at)| PolicySet {
            product: "integration-platform".into(),
            edition: p.edition.map(String::from),
            policy: p.policy,
            set_at,
        })
        .collect()
}

/// The floating seats the first sample license sets for two of its
/// features; its third gets the enterprise policy's.
fn license_seats() -> BTreeMap<String, u32> {
    BTreeMap::from([("datasource-mgmt".into(), 20), ("cdc-realtime".into(), 2)])
}

fn issue_licenses() -> Vec<IssueLicense> {
    vec![
        // Every optional field set.
        IssueLicense {
            product: "integration-platform".try_into().expect("valid text"),
            edition: Some("enterprise".try_into().expect("valid text")),
            customer: "Acme Engineering GmbH".try_into().expect("valid text"),
            contract: Some("HT-2026-0142".try_into().expect("valid text")),
            kind: LicenseKind::Formal,
            modules: strings(&["data-integration"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            features: strings(&["datasource-mgmt", "data-access", "cdc-realtime"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            seats: license_seats(),
            expires_at: Some(at("2027-06-30T23:59:59Z")),
        },
        // None set: a perpetual formal license without features.
        IssueLicense {
            product: "cad-suite".try_into().expect("valid text"),
            edition: None,
            customer: "Jane Doe".try_into().expect("valid text"),
            contract: None,
            kind: LicenseKind::Formal,
            modules: vec![],
            features: vec![],
            seats: BTreeMap::new(),
            expires_at: None,
        },
        IssueLicense {
            product: "viewer".try_into().expect("valid text"),
            edition: None,
            customer: "Müller & Söhne KG".try_into().expect("valid text"),
            contract: None,
            kind: LicenseKind::Trial,
            modules: vec![],
            features: strings(&["watermark"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            seats: BTreeMap::new(),
            expires_at: Some(at("2026-04-01T00:00:00Z")),
        },
        IssueLicense {
            product: "cad-suite".try_into().expect("valid text"),
            edition: Some("edu".try_into().expect("valid text")),
            customer: "TU Example".try_into().expect("valid text"),
            contract: Some("RA-7731".try_into().expect("valid text")),
            kind: LicenseKind::Temporary,
            modules: vec![],
            features: vec![],
            seats: BTreeMap::new(),
            expires_at: Some(at("2026-09-30T12:00:00.5Z")),
        },
    ]
}

fn licenses_issued() -> Vec<LicenseIssued> {
    vec![
        // Every optional field set.
        LicenseIssued {
            license_id: uuid(LICENSE_1),
            product: "integration-platform".into(),
            edition: Some("enterprise".into()),
            customer: "Acme Engineering GmbH".into(),
            contract: Some("HT-2026-0142".into()),
            kind: LicenseKind::Formal,
            modules: strings(&["data-integration"]),
            features: strings(&["datasource-mgmt", "data-access", "cdc-realtime"]),
            seats: license_seats(),
            issued_at: at("2026-03-01T10:15:30.123456789Z"),
            expires_at: Some(at("2027-06-30T23:59:59Z")),
            key_digest: Some(DIGEST_1.into()),
            policy: Some(enterprise_policy()),
        },
        // None set: as written before keys and policies were recorded.
        LicenseIssued {
            license_id: uuid(LICENSE_2),
            product: "cad-suite".into(),
            edition: None,
            customer: "Jane Doe".into(),
            contract: None,
            kind: LicenseKind::Formal,
            modules: vec![],
            features: vec![],
            seats: BTreeMap::new(),
            issued_at: at("2026-03-01T10:16:00Z"),
            expires_at: None,
            key_digest: None,
            policy: None,
        },
        LicenseIssued {
            license_id: uuid(LICENSE_3),
            product: "viewer".into(),
            edition: None,
            customer: "Müller & Söhne KG".into(),
            contract: None,
            kind: LicenseKind::Trial,
            modules: vec![],
            features: strings(&["watermark"]),
            seats: BTreeMap::new(),
            issued_at: at("2026-03-02T08:00:00.000001Z"),
            expires_at: Some(at("2026-04-01T00:00:00Z")),
            key_digest: Some(DIGEST_2.into()),
            policy: Some(Policy::default()),
        },
    ]
}

fn renewals() -> Vec<RenewLicense> {
    vec![
        RenewLicense {
            expires_at: at("2028-06-30T23:59:59Z"),
            order_ref: "PO-2026-0815".try_into().expect("valid text"),
        },
        RenewLicense {
            expires_at: at("2026-12-31T00:00:00.25Z"),
            order_ref: "INV 77131 / line 2".try_into().expect("valid text"),
        },
    ]
}

fn licenses_renewed() -> Vec<LicenseRenewed> {
    let previous = [Some(at("2027-06-30T23:59:59Z")), None];
    license_moments()
        .into_iter()
        .zip(renewals().into_iter().zip(previous))
        .map(
            |((license_id, renewed_at), (r, previous_expires_at))| LicenseRenewed {
                license_id,
                previous_expires_at,
                expires_at: r.expires_at,
                order_ref: String::from(r.order_ref),
                renewed_at,
            },
        )
        .collect()
}

fn amendments() -> Vec<AmendFeatures> {
    vec![
        AmendFeatures {
            modules: strings(&["data-integration", "message-integration"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            features: strings(&["datasource-mgmt", "data-access", "topic-mgmt", "pub-sub"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
        },
        // No modules; serde still writes the empty list.
        AmendFeatures {
            modules: vec![],
            features: vec![],
        },
    ]
}

fn features_amended() -> Vec<LicenseFeaturesAmended> {
    let changes = [
        (&["topic-mgmt", "pub-sub"][..], &["cdc-realtime"][..]),
        (&[][..], &["watermark"][..]),
    ];
    license_moments()
        .into_iter()
        .zip(amendments().into_iter().zip(changes))
        .map(
            |((license_id, amended_at), (a, (added, removed)))| LicenseFeaturesAmended {
                license_id,
                modules: contracts::text::strings(a.modules),
                features: contracts::text::strings(a.features),
                added: strings(added),
                removed: strings(removed),
                amended_at,
            },
        )
        .collect()
}

fn reasons(texts: [&str; 2]) -> Vec<Reason> {
    texts
        .iter()
        .map(|r| Reason {
            reason: r.to_string().try_into().expect("valid text"),
        })
        .collect()
}

fn suspensions() -> Vec<Reason> {
    reasons([
        "Invoice 2026-0142 overdue by 60 days",
        "Suspected key sharing — under review (ticket #4411)",
    ])
}

fn revocations() -> Vec<Reason> {
    reasons([
        "Contract HT-2026-0142 terminated",
        "Issued to the wrong customer",
    ])
}

fn empties() -> Vec<Empty> {
    // With no fields, "every field set" and "none set" are the same document.
    vec![Empty {}, Empty {}]
}

fn licenses_suspended() -> Vec<LicenseSuspended> {
    per_license_with(suspensions(), |license_id, reason, suspended_at| {
        LicenseSuspended {
            license_id,
            reason,
            suspended_at,
        }
    })
}

fn licenses_revoked() -> Vec<LicenseRevoked> {
    per_license_with(revocations(), |license_id, reason, revoked_at| {
        LicenseRevoked {
            license_id,
            reason,
            revoked_at,
        }
    })
}

fn licenses_reinstated() -> Vec<LicenseReinstated> {
    per_license(|license_id, reinstated_at| LicenseReinstated {
        license_id,
        reinstated_at,
    })
}

fn licenses_reclaimed() -> Vec<LicenseReclaimed> {
    per_license(|license_id, reclaimed_at| LicenseReclaimed {
        license_id,
        reclaimed_at,
    })
}

fn licenses_deleted() -> Vec<LicenseDeleted> {
    per_license(|license_id, deleted_at| LicenseDeleted {
        license_id,
        deleted_at,
    })
}

fn licenses_expired() -> Vec<LicenseExpired> {
    vec![
        // A formal license, reclaimed after the policy's 90 days.
        LicenseExpired {
            license_id: uuid(LICENSE_1),
            expires_at: at("2027-06-30T23:59:59Z"),
            expired_at: at("2027-07-01T00:05:00.042Z"),
            existing_grants_continue: true,
            new_grants_allowed: false,
            reclaim_at: at("2027-09-28T23:59:59Z"),
        },
        // A trial, swept the moment it expired.
        LicenseExpired {
            license_id: uuid(LICENSE_3),
            expires_at: at("2026-04-01T00:00:00Z"),
            expired_at: at("2026-04-01T00:00:00Z"),
            existing_grants_continue: true,
            new_grants_allowed: false,
            reclaim_at: at("2026-06-30T00:00:00Z"),
        },
    ]
}

fn keys_recovered() -> Vec<LicenseKeyRecovered> {
    recovery_methods()
        .into_iter()
        .zip(license_moments().into_iter().cycle())
        .map(|(method, (license_id, recovered_at))| LicenseKeyRecovered {
            license_id,
            method,
            recovered_at,
        })
        .collect()
}

fn api_key_specs() -> Vec<CreateApiKey> {
    vec![
        // Every optional field set.
        CreateApiKey {
            scopes: strings(&["issuer", "auditor"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            allowlist: strings(&["10.0.0.0/8", "203.0.113.7", "2001:db8::/32"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            callback_url: Some(
                "https://billing.example.com/hooks/licensing"
                    .try_into()
                    .expect("valid text"),
            ),
            callback_events: Some(
                strings(&["LicenseIssued", "DeviceActivated"])
                    .into_iter()
                    .map(|s| s.try_into().expect("valid text"))
                    .collect(),
            ),
            remark: Some("Billing system (prod)".try_into().expect("valid text")),
        },
        // None set: usable from anywhere; serde still writes the empty list.
        CreateApiKey {
            scopes: strings(&["admin"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            allowlist: vec![],
            callback_url: None,
            callback_events: None,
            remark: None,
        },
    ]
}

fn api_keys_created() -> Vec<ApiKeyCreated> {
    per_key(|key_id, secret_digest, created_at| (key_id, secret_digest, created_at))
        .into_iter()
        .zip(api_key_specs())
        .map(|((key_id, secret_digest, created_at), s)| ApiKeyCreated {
            key_id,
            secret_digest,
            scopes: contracts::text::strings(s.scopes),
            allowlist: contracts::text::strings(s.allowlist),
            callback_url: s.callback_url.map(String::from),
            callback_events: s
                .callback_events
                .map(contracts::text::strings)
                .unwrap_or_default(),
            remark: s.remark.map(String::from),
            created_at,
        })
        .collect()
}

fn api_keys_rotated() -> Vec<ApiKeyRotated> {
    per_key(|key_id, secret_digest, rotated_at| ApiKeyRotated {
        key_id,
        secret_digest,
        rotated_at,
    })
}

fn api_keys_revoked() -> Vec<ApiKeyRevoked> {
    per_key(|key_id, _, revoked_at| ApiKeyRevoked { key_id, revoked_at })
}

fn allowlists() -> Vec<SetAllowlist> {
    vec![
        SetAllowlist {
            allowlist: strings(&["192.0.2.10", "198.51.100.0/24"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
        },
        // Anywhere again.
        SetAllowlist { allowlist: vec![] },
    ]
}

fn allowlists_changed() -> Vec<ApiKeyAllowlistChanged> {
    per_key(|key_id, _, changed_at| (key_id, changed_at))
        .into_iter()
        .zip(allowlists())
        .map(|((key_id, changed_at), a)| ApiKeyAllowlistChanged {
            key_id,
            allowlist: contracts::text::strings(a.allowlist),
            changed_at,
        })
        .collect()
}

fn callbacks() -> Vec<SetCallback> {
    vec![
        SetCallback {
            callback_url: "https://billing.example.com/hooks/v2"
                .try_into()
                .expect("valid text"),
            callback_events: Some(
                strings(&["LicenseSuspended", "LeaseExpired"])
                    .into_iter()
                    .map(|s| s.try_into().expect("valid text"))
                    .collect(),
            ),
        },
        // The events as they were.
        SetCallback {
            callback_url: "https://billing.example.com/hooks/v3"
                .try_into()
                .expect("valid text"),
            callback_events: None,
        },
    ]
}

fn callbacks_changed() -> Vec<ApiKeyCallbackChanged> {
    per_key(|key_id, _, changed_at| (key_id, changed_at))
        .into_iter()
        .zip(callbacks())
        .map(|((key_id, changed_at), c)| ApiKeyCallbackChanged {
            key_id,
            callback_url: Some(c.callback_url.into()),
            callback_events: c
                .callback_events
                .map(contracts::text::strings)
                .unwrap_or_default(),
            changed_at,
        })
        // Removed.
        .chain(per_key(|key_id, _, changed_at| ApiKeyCallbackChanged {
            key_id,
            callback_url: None,
            callback_events: vec![],
            changed_at,
        }))
        .collect()
}

fn callbacks_disabled() -> Vec<ApiKeyCallbackDisabled> {
    per_key(|key_id, _, disabled_at| ApiKeyCallbackDisabled {
        key_id,
        callback_url: "https://billing.example.com/hooks/licensing".into(),
        failures: 20,
        disabled_at,
    })
}

// Activation.

const ACTIVATION_1: &str = "01956a3f-1a2b-7c3d-8e4f-506172839405";
const ACTIVATION_2: &str = "01956a50-aaaa-7bbb-8ccc-dddddddddddd";
const ACTIVATION_3: &str = "01956b20-0f0e-7d0c-9b0a-090807060504";
const TRIAL_LICENSE: &str = "01956a60-7777-7888-9999-aaaaaaaaaaaa";

/// A device's components as stored, from the raw values a client reports.
fn components(raw: &[(&str, &str)]) -> BTreeMap<String, String> {
    Fingerprint(
        raw.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
    )
    .components()
    .expect("test fingerprint is valid")
}

/// A workstation reporting the four usual components.
fn workstation() -> BTreeMap<String, String> {
    components(&[
        ("machine_id", "4c4c4544-0052-3510-8052-b4c04f4e3432"),
        ("disk", "S4EWNX0R123456"),
        ("board", "/7XZ9K12/CNWS200123001G/"),
        ("mac", "3C:52:82:1A:2B:3C"),
    ])
}

/// The workstation after its disk was replaced: still the same device.
fn workstation_new_disk() -> BTreeMap<String, String> {
    let mut c = workstation();
    c.extend(components(&[("disk", "WD-WX12A3456789")]));
    c
}

/// A container that reports only its machine id.
fn container() -> BTreeMap<String, String> {
    components(&[("machine_id", "b7d1c4e2a9f04c3e8d6b5a4f3e2d1c0b")])
}

fn devices_activated() -> Vec<DeviceActivated> {
    vec![
        // Every optional field set: offline, from a request file.
        DeviceActivated {
            activation_id: uuid(ACTIVATION_1),
            license_id: uuid(LICENSE_1),
            product: "integration-platform".into(),
            kind: LicenseKind::Formal,
            fingerprint: digest_of(&workstation()),
            components: workstation(),
            client_time: Some(at("2026-03-02T09:14:58+08:00")),
            offline: true,
            nonce: Some("n-5f0c1e7a2b".into()),
            activated_at: at("2026-03-02T01:15:02.417Z"),
        },
        // None set.
        DeviceActivated {
            activation_id: uuid(ACTIVATION_2),
            license_id: uuid(TRIAL_LICENSE),
            product: "viewer".into(),
            kind: LicenseKind::Trial,
            fingerprint: digest_of(&container()),
            components: container(),
            client_time: None,
            offline: false,
            nonce: None,
            activated_at: at("2026-03-05T12:00:00Z"),
        },
    ]
}

fn devices_seen() -> Vec<DeviceSeen> {
    vec![
        DeviceSeen {
            activation_id: uuid(ACTIVATION_1),
            license_id: uuid(LICENSE_1),
            client_time: at("2026-04-10T08:00:03+08:00"),
            seen_at: at("2026-04-10T00:00:04.25Z"),
        },
        DeviceSeen {
            activation_id: uuid(ACTIVATION_2),
            license_id: uuid(TRIAL_LICENSE),
            client_time: at("2026-03-06T12:00:00Z"),
            seen_at: at("2026-03-06T11:59:58Z"),
        },
    ]
}

fn clock_rollbacks() -> Vec<ClockRollbackDetected> {
    vec![
        // Every optional field set: the device holds a seat.
        ClockRollbackDetected {
            license_id: uuid(LICENSE_1),
            activation_id: Some(uuid(ACTIVATION_1)),
            fingerprint: digest_of(&workstation()),
            client_time: at("2026-01-01T00:00:00Z"),
            last_seen: at("2026-04-10T00:00:03Z"),
            tolerance_secs: 86_400,
            detected_at: at("2026-04-11T07:30:00.5Z"),
        },
        // None set: a device without a seat asked to activate.
        ClockRollbackDetected {
            license_id: uuid(TRIAL_LICENSE),
            activation_id: None,
            fingerprint: digest_of(&container()),
            client_time: at("2026-03-01T00:00:00Z"),
            last_seen: at("2026-03-06T12:00:00Z"),
            tolerance_secs: 0,
            detected_at: at("2026-03-07T09:00:00Z"),
        },
    ]
}

fn activations_uninstalled() -> Vec<ActivationUninstalled> {
    vec![
        ActivationUninstalled {
            activation_id: uuid(ACTIVATION_1),
            license_id: uuid(LICENSE_1),
            uninstalled_at: at("2026-06-01T10:00:00Z"),
        },
        ActivationUninstalled {
            activation_id: uuid(ACTIVATION_3),
            license_id: uuid(LICENSE_2),
            uninstalled_at: at("2026-06-02T16:45:30.001Z"),
        },
    ]
}

fn activations_migrated() -> Vec<ActivationMigrated> {
    vec![
        // Every optional field set.
        ActivationMigrated {
            license_id: uuid(LICENSE_1),
            from_activation_id: uuid(ACTIVATION_1),
            activation_id: uuid(ACTIVATION_3),
            fingerprint: digest_of(&workstation_new_disk()),
            components: workstation_new_disk(),
            client_time: Some(at("2026-05-20T14:02:11+02:00")),
            migrations_used: 1,
            migrated_at: at("2026-05-20T12:02:12Z"),
        },
        // None set.
        ActivationMigrated {
            license_id: uuid(LICENSE_2),
            from_activation_id: uuid(ACTIVATION_2),
            activation_id: uuid(ACTIVATION_1),
            fingerprint: digest_of(&container()),
            components: container(),
            client_time: None,
            migrations_used: 3,
            migrated_at: at("2026-05-21T00:00:00Z"),
        },
    ]
}

fn activations_revoked() -> Vec<ActivationsRevoked> {
    let seats = [
        (LICENSE_1, vec![ACTIVATION_1, ACTIVATION_3]),
        (TRIAL_LICENSE, vec![ACTIVATION_2]),
    ];
    revocation_reasons()
        .into_iter()
        .zip(seats.iter().cycle())
        .zip(license_moments().into_iter().cycle())
        .map(
            |((reason, (license, ids)), (_, revoked_at))| ActivationsRevoked {
                license_id: uuid(license),
                activation_ids: ids.iter().map(|id| uuid(id)).collect(),
                reason,
                revoked_at,
            },
        )
        .collect()
}

fn trial_id(product: &str, components: &BTreeMap<String, String>) -> String {
    format!("{product}:{}", digest_of(components))
}

fn trials_started() -> Vec<TrialStarted> {
    vec![
        // Every optional field set.
        TrialStarted {
            trial_id: trial_id("viewer", &container()),
            product: "viewer".into(),
            fingerprint: digest_of(&container()),
            components: container(),
            license_id: uuid(TRIAL_LICENSE),
            issue_command_id: uuid("01956a60-7000-7000-8000-0000000000c1"),
            features: strings(&["watermark", "export-pdf"]),
            client_time: Some(at("2026-03-05T11:59:59Z")),
            started_at: at("2026-03-05T11:59:59.8Z"),
        },
        // None set.
        TrialStarted {
            trial_id: trial_id("cad-suite", &workstation()),
            product: "cad-suite".into(),
            fingerprint: digest_of(&workstation()),
            components: workstation(),
            license_id: uuid(LICENSE_3),
            issue_command_id: uuid("01956a60-7000-7000-8000-0000000000c2"),
            features: vec![],
            client_time: None,
            started_at: at("2026-03-06T08:00:00Z"),
        },
    ]
}

fn trials_activated() -> Vec<TrialActivated> {
    vec![
        TrialActivated {
            trial_id: trial_id("viewer", &container()),
            license_id: uuid(TRIAL_LICENSE),
            activation_id: uuid(ACTIVATION_2),
            activated_at: at("2026-03-05T12:00:00Z"),
        },
        TrialActivated {
            trial_id: trial_id("cad-suite", &workstation()),
            license_id: uuid(LICENSE_3),
            activation_id: uuid(ACTIVATION_3),
            activated_at: at("2026-03-06T08:00:01.5Z"),
        },
    ]
}

fn trials_ended() -> Vec<TrialEnded> {
    vec![
        TrialEnded {
            trial_id: trial_id("viewer", &container()),
            license_id: uuid(TRIAL_LICENSE),
            superseded_by: uuid(LICENSE_2),
            ended_at: at("2026-03-20T09:00:00Z"),
        },
        TrialEnded {
            trial_id: trial_id("cad-suite", &workstation()),
            license_id: uuid(LICENSE_3),
            superseded_by: uuid(LICENSE_1),
            ended_at: at("2026-04-01T00:00:00.75Z"),
        },
    ]
}

fn trials_failed() -> Vec<TrialFailed> {
    vec![
        TrialFailed {
            trial_id: trial_id("viewer", &container()),
            license_id: uuid(TRIAL_LICENSE),
            code: "INVALID_FEATURES".into(),
            message: "features must be unique codes, at most 200".into(),
            failed_at: at("2026-03-20T09:00:00Z"),
        },
        TrialFailed {
            trial_id: trial_id("cad-suite", &workstation()),
            license_id: uuid(LICENSE_3),
            code: "UNKNOWN_PRODUCT".into(),
            message: String::new(),
            failed_at: at("2026-04-01T00:00:00.75Z"),
        },
    ]
}

fn fingerprint() -> Fingerprint {
    Fingerprint(
        [
            ("machine_id", "4c4c4544-0042-3510-8052-b4c04f4e4432"),
            ("disk", "S4EWNX0R123456"),
            ("board", "PF2ABCDE"),
            ("mac", "AA:BB:CC:DD:EE:01"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
}

fn activates() -> Vec<Activate> {
    vec![
        Activate {
            license_key: Some(
                contracts::text::Text::parse("ACME-7Q2K-9XPD-4MWT-HB3R-2").expect("text"),
            ),
            fingerprint: fingerprint(),
            client_time: Some(at("2026-03-06T08:00:00Z")),
        },
        Activate {
            license_key: None,
            fingerprint: fingerprint(),
            client_time: None,
        },
    ]
}

fn migrates() -> Vec<Migrate> {
    vec![
        Migrate {
            fingerprint: fingerprint(),
            client_time: Some(at("2026-03-07T09:30:00.25Z")),
        },
        Migrate {
            fingerprint: fingerprint(),
            client_time: None,
        },
    ]
}

fn upstream_checks() -> Vec<CheckUpstream> {
    vec![CheckUpstream {}, CheckUpstream {}]
}

fn uninstalls() -> Vec<Uninstall> {
    vec![Uninstall {}, Uninstall {}]
}

fn trial_starts() -> Vec<StartTrial> {
    vec![
        StartTrial {
            product: contracts::text::Name::parse("cad-suite").expect("name"),
            fingerprint: fingerprint(),
            client_time: Some(at("2026-03-06T08:00:00Z")),
        },
        StartTrial {
            product: contracts::text::Name::parse("viewer").expect("name"),
            fingerprint: fingerprint(),
            client_time: None,
        },
    ]
}

fn signing_keys_published() -> Vec<SigningKeyPublished> {
    vec![
        // The P-256 key of RFC 7515, appendix A.3.
        SigningKeyPublished {
            kid: "activation-2026-01".into(),
            kty: "EC".into(),
            crv: "P-256".into(),
            x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into(),
            y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into(),
            published_at: at("2026-01-01T00:00:00Z"),
        },
        // A key named by its RFC 7638 thumbprint.
        SigningKeyPublished {
            kid: "26fpH9PRSdgL6nEgoRd-E8CIKvviJbvQWnBj_AlzJsk".into(),
            kty: "EC".into(),
            crv: "P-256".into(),
            x: "bmr9dcGcRuEOjAtWGRuTcIQ2haLnOoacmvE5sn46d2M".into(),
            y: "-C0l-3PnAL0sb0Xo3KT_muenju6WYGWeMtLG599W_yA".into(),
            published_at: at("2026-07-01T00:00:00.5Z"),
        },
    ]
}

fn activation_claims() -> Vec<ActivationClaims> {
    vec![
        // Every optional field set.
        ActivationClaims {
            typ: "activation".into(),
            iss: "https://licensing.example.com".into(),
            activation_id: uuid(ACTIVATION_1),
            license_id: uuid(LICENSE_1),
            product: "integration-platform".into(),
            edition: Some("enterprise".into()),
            kind: LicenseKind::Formal,
            features: vec![
                FeatureGrant {
                    code: "datasource-mgmt".into(),
                    expires_at: None,
                },
                FeatureGrant {
                    code: "cdc-realtime".into(),
                    expires_at: Some(at("2026-12-31T23:59:59Z")),
                },
            ],
            fingerprint: digest_of(&workstation()),
            components: workstation(),
            min_matches: Some(3),
            iat: 1_772_414_102,
            nbf: 1_772_414_042,
            exp: Some(1_814_399_999),
            event: EventPosition {
                aggregate_type: ACTIVATIONS_AGGREGATE.into(),
                aggregate_id: LICENSE_1.into(),
                sequence: 2,
                hash: DIGEST_1.into(),
            },
            nonce: Some("n-5f0c1e7a2b".into()),
        },
        // None set: a temporary license's file, without features.
        ActivationClaims {
            typ: "activation".into(),
            iss: "https://licensing.example.com".into(),
            activation_id: uuid(ACTIVATION_3),
            license_id: uuid(LICENSE_2),
            product: "cad-suite".into(),
            edition: None,
            kind: LicenseKind::Temporary,
            features: vec![],
            fingerprint: digest_of(&container()),
            components: BTreeMap::new(),
            min_matches: None,
            iat: 1_780_418_730,
            nbf: 1_780_418_730,
            exp: None,
            event: EventPosition {
                aggregate_type: ACTIVATIONS_AGGREGATE.into(),
                aggregate_id: LICENSE_2.into(),
                sequence: 5,
                hash: DIGEST_2.into(),
            },
            nonce: None,
        },
    ]
}

fn offline_responses_issued() -> Vec<OfflineResponseIssued> {
    vec![
        OfflineResponseIssued {
            activation_id: uuid(ACTIVATION_1),
            license_id: uuid(LICENSE_1),
            nonce: "n-5f0c1e7a2b".into(),
            client_time: Some(at("2026-03-02T01:14:00Z")),
            issued_at: at("2026-03-02T01:15:02Z"),
        },
        OfflineResponseIssued {
            activation_id: uuid(ACTIVATION_3),
            license_id: uuid(LICENSE_2),
            nonce: "7d1c".into(),
            client_time: None,
            issued_at: at("2026-06-02T16:45:30Z"),
        },
    ]
}

fn receipt_claims() -> Vec<ReceiptClaims> {
    vec![
        ReceiptClaims {
            typ: RECEIPT_TYP.into(),
            iss: "https://licensing.example.com".into(),
            activation_id: uuid(ACTIVATION_3),
            license_id: uuid(LICENSE_2),
            fingerprint: digest_of(&container()),
            uninstalled_at: 1_780_418_730,
            iat: 1_780_418_731,
            event: EventPosition {
                aggregate_type: ACTIVATIONS_AGGREGATE.into(),
                aggregate_id: LICENSE_2.into(),
                sequence: 5,
                hash: DIGEST_2.into(),
            },
        },
        ReceiptClaims {
            typ: RECEIPT_TYP.into(),
            iss: "licensing.activation".into(),
            activation_id: uuid(ACTIVATION_1),
            license_id: uuid(LICENSE_1),
            fingerprint: digest_of(&workstation()),
            uninstalled_at: 1_772_414_102,
            iat: 1_772_414_102,
            event: EventPosition {
                aggregate_type: ACTIVATIONS_AGGREGATE.into(),
                aggregate_id: LICENSE_1.into(),
                sequence: 9,
                hash: DIGEST_1.into(),
            },
        },
    ]
}

// Domain binding.

const MUELLER_DE: &str = "xn--mller-kva.de";

/// What the domain-binding service asks of the operator after a binding or
/// a change (`follow_up` in its binding module).
fn follow_up(domain: &str) -> Vec<String> {
    vec![
        format!(
            "Point the DNS A record of {domain} (or of the subdomain you serve) at your server; \
             a later change of the server's IP needs no new binding."
        ),
        format!("Set the product's callback address to a host under {domain}."),
    ]
}

fn domain_bindings() -> Vec<BindDomain> {
    vec![
        // As callers write hosts: the server normalises them.
        BindDomain {
            domain: "Shop.Example.COM".try_into().expect("valid text"),
        },
        BindDomain {
            domain: "müller.de".try_into().expect("valid text"),
        },
    ]
}

fn domains_bound() -> Vec<DomainBound> {
    vec![
        DomainBound {
            license_id: uuid(LICENSE_1),
            product: "integration-platform".into(),
            domain: "example.com".into(),
            requested_host: "shop.example.com".into(),
            follow_up: follow_up("example.com"),
            bound_at: at("2026-05-06T08:00:00Z"),
        },
        // Bound by its registrable domain, in punycode.
        DomainBound {
            license_id: uuid(LICENSE_2),
            product: "cad-suite".into(),
            domain: MUELLER_DE.into(),
            requested_host: MUELLER_DE.into(),
            follow_up: follow_up(MUELLER_DE),
            bound_at: at("2026-05-06T09:12:45.5Z"),
        },
    ]
}

fn domain_changes() -> Vec<ChangeDomain> {
    vec![
        // Every optional field set: past the free changes.
        ChangeDomain {
            domain: "WWW.Mueller-Shop.co.uk".try_into().expect("valid text"),
            accept_fee: true,
        },
        // None set.
        ChangeDomain {
            domain: "portal.example.org".try_into().expect("valid text"),
            accept_fee: false,
        },
    ]
}

fn domains_changed() -> Vec<DomainChanged> {
    vec![
        // A billable change: DomainChangeCharged follows.
        DomainChanged {
            license_id: uuid(LICENSE_2),
            product: "cad-suite".into(),
            from_domain: MUELLER_DE.into(),
            domain: "mueller-shop.co.uk".into(),
            requested_host: "www.mueller-shop.co.uk".into(),
            changes_used: 4,
            free: false,
            follow_up: follow_up("mueller-shop.co.uk"),
            changed_at: at("2026-06-10T14:30:00Z"),
        },
        // The first change, free.
        DomainChanged {
            license_id: uuid(LICENSE_1),
            product: "integration-platform".into(),
            from_domain: "example.com".into(),
            domain: "example.org".into(),
            requested_host: "portal.example.org".into(),
            changes_used: 1,
            free: true,
            follow_up: follow_up("example.org"),
            changed_at: at("2026-05-20T10:00:00.25Z"),
        },
    ]
}

fn domain_changes_charged() -> Vec<DomainChangeCharged> {
    vec![
        DomainChangeCharged {
            license_id: uuid(LICENSE_2),
            change_number: 4,
            amount_minor: 4_900,
            currency: "EUR".into(),
            charged_at: at("2026-06-10T14:30:00Z"),
        },
        // The enterprise policy's fee.
        DomainChangeCharged {
            license_id: uuid(LICENSE_1),
            change_number: 5,
            amount_minor: 1_200_000,
            currency: "USD".into(),
            charged_at: at("2026-11-02T16:05:09.875Z"),
        },
    ]
}

fn domain_resets() -> Vec<ResetDomain> {
    vec![
        ResetDomain {
            reason: "Customer moved the shop to a new agency (ticket #5120)"
                .try_into()
                .expect("valid text"),
        },
        ResetDomain {
            reason: "Bound to the staging host by mistake — see audit note"
                .try_into()
                .expect("valid text"),
        },
    ]
}

fn domains_reset() -> Vec<DomainReset> {
    let domains = ["example.org", "mueller-shop.co.uk"];
    license_moments()
        .into_iter()
        .zip(domain_resets().into_iter().zip(domains))
        .map(|((license_id, reset_at), (r, domain))| DomainReset {
            license_id,
            domain: domain.into(),
            reason: String::from(r.reason),
            reset_at,
        })
        .collect()
}

fn domains_released() -> Vec<DomainReleased> {
    let bindings = [
        (LICENSE_1, "example.org", at("2027-07-02T00:00:00Z")),
        (
            LICENSE_2,
            "mueller-shop.co.uk",
            at("2027-09-28T23:59:59.5Z"),
        ),
        // bücher.example
        (
            LICENSE_3,
            "xn--bcher-kva.example",
            at("2026-06-30T00:00:01Z"),
        ),
    ];
    release_reasons()
        .into_iter()
        .zip(bindings)
        .map(|(reason, (license, domain, released_at))| DomainReleased {
            license_id: uuid(license),
            domain: domain.into(),
            reason,
            released_at,
        })
        .collect()
}

// Grant sync.

const CLIENT_1: &str = "01957a10-1c1e-7a11-8b22-c0ffee000001";
const CLIENT_2: &str = "01957a12-2d2f-7b33-9c44-c0ffee000002";
const CLIENT_KEY_1: &str = "AKID5e1f0c3a9b8d4e7f6a5b4c3d2e1f0a9b";
const CLIENT_KEY_2: &str = "AKID0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const LEASE_1: &str = "01957b00-0001-7c00-8d00-000000000001";
const LEASE_2: &str = "01957b00-0002-7c00-8d00-000000000002";
const LEASE_3: &str = "01957b05-0003-7c00-8d00-000000000003";
const LEASE_4: &str = "01957b06-0004-7c00-8d00-000000000004";
const UPSTREAM_1: &str = "01957c00-aaaa-7000-8000-0000000000f1";
const UPSTREAM_2: &str = "01957c02-bbbb-7000-8000-0000000000f2";
/// This server's client ids at the upstreams.
const MEMBER_1: &str = "0195601a-1111-7222-8333-444455556666";
const MEMBER_2: &str = "0195601b-7777-7888-9999-aaaabbbbcccc";
/// Licenses the upstreams grant this server.
const IMPORTED_1: &str = "01956f00-1234-7567-89ab-cdef01234567";
const IMPORTED_2: &str = "01956f01-fedc-7ba9-8765-43210fedcba9";

fn client_registrations() -> Vec<RegisterClient> {
    vec![
        // Every optional field set.
        RegisterClient {
            name: "Acme build farm (Shanghai)".try_into().expect("valid text"),
            licenses: vec![uuid(LICENSE_1), uuid(LICENSE_3)],
            allowlist: strings(&["10.20.0.0/16", "203.0.113.7"])
                .into_iter()
                .map(|s| s.try_into().expect("valid text"))
                .collect::<Vec<_>>(),
            callback_url: Some(
                "https://buildfarm.acme.example/hooks/licensing"
                    .try_into()
                    .expect("valid text"),
            ),
            callback_events: Some(
                strings(&["LicenseSuspended", "LeaseExpired"])
                    .into_iter()
                    .map(|s| s.try_into().expect("valid text"))
                    .collect(),
            ),
        },
        // None set: from anywhere; serde still writes the empty list.
        RegisterClient {
            name: "Jane's workstation".try_into().expect("valid text"),
            licenses: vec![uuid(LICENSE_2)],
            allowlist: vec![],
            callback_url: None,
            callback_events: None,
        },
    ]
}

fn client_callbacks_changed() -> Vec<ClientCallbackChanged> {
    callbacks()
        .into_iter()
        .map(|c| ClientCallbackChanged {
            client_id: uuid(CLIENT_1),
            callback_url: Some(c.callback_url.into()),
            callback_events: c
                .callback_events
                .map(contracts::text::strings)
                .unwrap_or_default(),
            changed_at: at("2026-07-03T10:00:00Z"),
        })
        // Removed.
        .chain([ClientCallbackChanged {
            client_id: uuid(CLIENT_2),
            callback_url: None,
            callback_events: vec![],
            changed_at: at("2026-07-04T10:00:00Z"),
        }])
        .collect()
}

fn client_callbacks_disabled() -> Vec<ClientCallbackDisabled> {
    vec![
        ClientCallbackDisabled {
            client_id: uuid(CLIENT_1),
            callback_url: "https://buildfarm.acme.example/hooks/licensing".into(),
            failures: 20,
            disabled_at: at("2026-07-05T10:00:00Z"),
        },
        ClientCallbackDisabled {
            client_id: uuid(CLIENT_2),
            callback_url: "https://ws.example/hook".into(),
            failures: 4_000,
            disabled_at: at("2026-07-06T10:00:00.25Z"),
        },
    ]
}

fn clients_registered() -> Vec<ClientRegistered> {
    let keys = [
        (CLIENT_1, CLIENT_KEY_1, DIGEST_1, at("2026-07-01T09:00:00Z")),
        (
            CLIENT_2,
            CLIENT_KEY_2,
            DIGEST_2,
            at("2026-07-02T14:30:15.5Z"),
        ),
    ];
    client_registrations()
        .into_iter()
        .zip(keys)
        .map(
            |(r, (client, key, digest, registered_at))| ClientRegistered {
                client_id: uuid(client),
                name: String::from(r.name),
                key_id: key.into(),
                secret_digest: digest.into(),
                licenses: r.licenses,
                allowlist: contracts::text::strings(r.allowlist),
                callback_url: r.callback_url.map(String::from),
                callback_events: r
                    .callback_events
                    .map(contracts::text::strings)
                    .unwrap_or_default(),
                registered_at,
            },
        )
        .collect()
}

fn client_revocations() -> Vec<RevokeClient> {
    vec![
        RevokeClient {
            reason: "Build farm decommissioned (change request CR-2291)"
                .try_into()
                .expect("valid text"),
        },
        RevokeClient {
            reason: "Credentials leaked in a public repository — rotate and re-register"
                .try_into()
                .expect("valid text"),
        },
    ]
}

fn clients_revoked() -> Vec<ClientRevoked> {
    let clients = [
        (CLIENT_1, CLIENT_KEY_1, at("2026-12-01T08:00:00Z")),
        (CLIENT_2, CLIENT_KEY_2, at("2026-08-15T22:10:05.25Z")),
    ];
    client_revocations()
        .into_iter()
        .zip(clients)
        .map(|(r, (client, key, revoked_at))| ClientRevoked {
            client_id: uuid(client),
            key_id: key.into(),
            reason: String::from(r.reason),
            revoked_at,
        })
        .collect()
}

fn client_clock_rollbacks() -> Vec<ClientClockRollbackDetected> {
    vec![
        ClientClockRollbackDetected {
            client_id: uuid(CLIENT_1),
            reported_time: at("2026-06-01T00:00:00Z"),
            last_reported_time: at("2026-07-03T07:59:58.5Z"),
            tolerance_secs: 300,
            detected_at: at("2026-07-03T08:00:01Z"),
        },
        // No tolerance at all.
        ClientClockRollbackDetected {
            client_id: uuid(CLIENT_2),
            reported_time: at("2026-07-04T09:59:59+02:00"),
            last_reported_time: at("2026-07-04T08:00:00Z"),
            tolerance_secs: 0,
            detected_at: at("2026-07-04T08:00:02.75Z"),
        },
    ]
}

fn lease_checkouts() -> Vec<CheckoutLease> {
    vec![
        // Every optional field set: two seats of a module's features.
        CheckoutLease {
            license_id: uuid(LICENSE_1),
            feature: "data-integration".try_into().expect("valid text"),
            quantity: 2,
            client_time: Some(at("2026-07-03T16:00:00+08:00")),
        },
        // None set: one seat; serde still writes the quantity.
        CheckoutLease {
            license_id: uuid(LICENSE_1),
            feature: "cdc-realtime".try_into().expect("valid text"),
            quantity: 1,
            client_time: None,
        },
        CheckoutLease {
            license_id: uuid(LICENSE_3),
            feature: "watermark".try_into().expect("valid text"),
            quantity: MAX_QUANTITY,
            client_time: Some(at("2026-03-10T09:00:00Z")),
        },
    ]
}

fn heartbeats() -> Vec<Heartbeat> {
    vec![
        Heartbeat {
            client_time: Some(at("2026-07-03T16:04:59.9+08:00")),
        },
        // The body may be left out: {}.
        Heartbeat::default(),
    ]
}

fn leases_granted() -> Vec<LeaseGranted> {
    vec![
        // A module: every feature it requires, under the enterprise policy.
        LeaseGranted {
            lease_id: uuid(LEASE_1),
            license_id: uuid(LICENSE_1),
            client_id: uuid(CLIENT_1),
            feature: "data-integration".into(),
            features: strings(&["datasource-mgmt", "data-access"]),
            quantity: 2,
            ttl_secs: 900,
            grace_secs: 120,
            granted_at: at("2026-07-03T08:00:00.125Z"),
        },
        LeaseGranted {
            lease_id: uuid(LEASE_2),
            license_id: uuid(LICENSE_1),
            client_id: uuid(CLIENT_1),
            feature: "cdc-realtime".into(),
            features: strings(&["cdc-realtime"]),
            quantity: 1,
            ttl_secs: 900,
            grace_secs: 120,
            granted_at: at("2026-07-03T08:00:03Z"),
        },
        // Under the default policy, with no grace.
        LeaseGranted {
            lease_id: uuid(LEASE_3),
            license_id: uuid(LICENSE_3),
            client_id: uuid(CLIENT_1),
            feature: "watermark".into(),
            features: strings(&["watermark"]),
            quantity: 1,
            ttl_secs: 300,
            grace_secs: 0,
            granted_at: at("2026-03-10T01:00:00Z"),
        },
        LeaseGranted {
            lease_id: uuid(LEASE_4),
            license_id: uuid(LICENSE_3),
            client_id: uuid(CLIENT_1),
            feature: "watermark".into(),
            features: strings(&["watermark"]),
            quantity: 1,
            ttl_secs: 300,
            grace_secs: 0,
            granted_at: at("2026-03-12T09:00:00Z"),
        },
    ]
}

fn leases_released() -> Vec<LeaseReleased> {
    vec![
        LeaseReleased {
            lease_id: uuid(LEASE_1),
            license_id: uuid(LICENSE_1),
            client_id: uuid(CLIENT_1),
            released_at: at("2026-07-03T17:30:00Z"),
        },
        LeaseReleased {
            lease_id: uuid(LEASE_4),
            license_id: uuid(LICENSE_3),
            client_id: uuid(CLIENT_1),
            released_at: at("2026-03-12T09:04:12.5Z"),
        },
    ]
}

fn leases_expired() -> Vec<LeaseExpired> {
    vec![
        // The last heartbeat at 08:15:00 set 08:30:00; reclaimed after the
        // two minutes' grace.
        LeaseExpired {
            lease_id: uuid(LEASE_2),
            license_id: uuid(LICENSE_1),
            client_id: uuid(CLIENT_1),
            deadline: at("2026-07-03T08:30:00Z"),
            expired_at: at("2026-07-03T08:32:00.4Z"),
        },
        LeaseExpired {
            lease_id: uuid(LEASE_3),
            license_id: uuid(LICENSE_3),
            client_id: uuid(CLIENT_1),
            deadline: at("2026-03-10T01:05:00Z"),
            expired_at: at("2026-03-10T01:05:00Z"),
        },
    ]
}

fn leases_revoked() -> Vec<LeasesRevoked> {
    let leases = [
        (LICENSE_1, vec![LEASE_1, LEASE_2]),
        (LICENSE_3, vec![LEASE_4]),
    ];
    let times = [
        at("2026-07-04T09:30:00Z"),
        at("2026-03-12T09:01:00.5Z"),
        at("2027-09-28T23:59:59Z"),
        at("2026-07-01T00:00:00Z"),
        at("2026-07-05T11:00:00.25Z"),
    ];
    lease_end_reasons()
        .into_iter()
        .zip(leases.iter().cycle())
        .zip(times)
        .enumerate()
        .map(
            |(i, ((reason, (license, ids)), revoked_at))| LeasesRevoked {
                license_id: uuid(license),
                lease_ids: ids.iter().map(|id| uuid(id)).collect(),
                reason,
                license_version: (i == 0).then_some(4),
                revoked_at,
            },
        )
        .collect()
}

/// Hex SHA-256 of a secret, as the Upstream aggregate records it.
fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn upstream_registrations() -> Vec<RegisterUpstream> {
    vec![
        // Every optional field set.
        RegisterUpstream {
            name: "Vendor licensing (EU)".try_into().expect("valid text"),
            member_id: uuid(MEMBER_1),
            endpoint: "https://licensing.vendor.example/v1"
                .try_into()
                .expect("valid text"),
            secret: "gs_live_8c1f7a0e5d2b4c93a6e1f0d7b2c5a9e4"
                .try_into()
                .expect("valid text"),
            price_protection: true,
            remark: Some(
                "Contract VND-2026-07, renewed yearly"
                    .try_into()
                    .expect("valid text"),
            ),
            allow_insecure_http: true,
        },
        // None set: serde still writes price_protection.
        RegisterUpstream {
            name: "Regional distributor".try_into().expect("valid text"),
            member_id: uuid(MEMBER_2),
            endpoint: "http://10.0.8.20:8080".try_into().expect("valid text"),
            secret: "dist-4f2a91".try_into().expect("valid text"),
            price_protection: false,
            remark: None,
            allow_insecure_http: false,
        },
    ]
}

fn upstreams_registered() -> Vec<UpstreamRegistered> {
    let ids = [
        (UPSTREAM_1, at("2026-06-20T10:00:00Z")),
        (UPSTREAM_2, at("2026-06-21T11:11:11.111Z")),
    ];
    upstream_registrations()
        .into_iter()
        .zip(ids)
        .map(|(r, (upstream, registered_at))| UpstreamRegistered {
            upstream_id: uuid(upstream),
            name: String::from(r.name),
            member_id: r.member_id,
            endpoint: String::from(r.endpoint),
            secret_digest: secret_digest(&r.secret),
            price_protection: r.price_protection,
            remark: r.remark.map(String::from),
            registered_at,
            allow_insecure_http: r.allow_insecure_http,
        })
        .collect()
}

fn upstreams_checked() -> Vec<UpstreamChecked> {
    vec![
        // Every optional field set.
        UpstreamChecked {
            upstream_id: uuid(UPSTREAM_1),
            status: UpstreamStatus::Ok,
            http_status: Some(200),
            message: String::new(),
            latency_ms: 84,
            checked_at: at("2026-06-20T10:00:01Z"),
            pinned_keys: vec![PinnedKey {
                kid: "Z0tC4Wwy8znEvIRgxmiMqyAIn86grVgyD3uJRY1QtDk".into(),
                kty: "EC".into(),
                crv: "P-256".into(),
                x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into(),
                y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into(),
            }],
        },
        // None set: no answer came.
        UpstreamChecked {
            upstream_id: uuid(UPSTREAM_2),
            status: UpstreamStatus::Unreachable,
            http_status: None,
            message: "connect to 10.0.8.20:8080 timed out after 5 s".into(),
            latency_ms: 5_000,
            checked_at: at("2026-06-21T11:11:16.2Z"),
            pinned_keys: vec![],
        },
        UpstreamChecked {
            upstream_id: uuid(UPSTREAM_2),
            status: UpstreamStatus::BadCredentials,
            http_status: Some(401),
            message: "the upstream refused the secret".into(),
            latency_ms: 37,
            checked_at: at("2026-06-22T09:00:00Z"),
            pinned_keys: vec![],
        },
    ]
}

fn upstream_syncs() -> Vec<SyncUpstream> {
    vec![
        SyncUpstream {
            resource: "all".try_into().expect("valid text"),
        },
        SyncUpstream {
            resource: "revocations".try_into().expect("valid text"),
        },
    ]
}

fn upstreams_synced() -> Vec<UpstreamSynced> {
    let runs = [
        (UpstreamStatus::Ok, 2, ""),
        (UpstreamStatus::Ok, 0, "nothing changed"),
        (
            UpstreamStatus::MemberMismatch,
            0,
            "the secret belongs to another member",
        ),
    ];
    sync_resources()
        .into_iter()
        .zip(runs)
        .zip([
            at("2026-07-01T02:00:00Z"),
            at("2026-07-01T02:00:01.5Z"),
            at("2026-07-01T02:00:02Z"),
        ])
        .map(
            |((resource, (status, items, message)), synced_at)| UpstreamSynced {
                upstream_id: uuid(UPSTREAM_1),
                resource,
                status,
                items,
                message: message.into(),
                synced_at,
            },
        )
        .collect()
}

fn upstream_products_imported() -> Vec<UpstreamProductImported> {
    vec![
        UpstreamProductImported {
            upstream_id: uuid(UPSTREAM_1),
            product: CatalogProduct {
                code: "integration-platform".into(),
                name: "Integration Platform".into(),
                features: vec![
                    feature("datasource-mgmt", "Data source management"),
                    feature("data-access", "Data access"),
                    feature("cdc-realtime", "Change data capture (real-time jobs)"),
                ],
                bundles: vec![bundle(
                    "data-integration",
                    "Data integration",
                    &["datasource-mgmt", "data-access"],
                    &["cdc-realtime"],
                )],
            },
            imported_at: at("2026-07-01T02:00:00Z"),
        },
        // A product without features or modules yet.
        UpstreamProductImported {
            upstream_id: uuid(UPSTREAM_2),
            product: CatalogProduct {
                code: "cloud-engine".into(),
                name: "Cloud Engine".into(),
                features: vec![],
                bundles: vec![],
            },
            imported_at: at("2026-07-01T02:05:00.5Z"),
        },
    ]
}

/// What the sample licenses grant: the first sets every optional field,
/// the second none.
fn grants() -> Vec<Grant> {
    vec![
        // The enterprise license: its own seats, and the policy's for the
        // feature it sets none for.
        Grant {
            license_id: uuid(LICENSE_1),
            product: "integration-platform".into(),
            edition: Some("enterprise".into()),
            kind: LicenseKind::Formal,
            status: LicenseStatus::Active,
            modules: strings(&["data-integration"]),
            features: strings(&["datasource-mgmt", "data-access", "cdc-realtime"]),
            seats: BTreeMap::from([
                ("datasource-mgmt".into(), 20),
                ("data-access".into(), 5),
                ("cdc-realtime".into(), 2),
            ]),
            expires_at: Some(at("2027-06-30T23:59:59Z")),
            offline_grace_hours: 168,
            lease_ttl_secs: 900,
            lease_grace_secs: 120,
            require_client_time: true,
            domain: Some("example.com".into()),
            version: 4,
        },
        // A perpetual license without features, bound to no domain.
        Grant {
            license_id: uuid(LICENSE_2),
            product: "cad-suite".into(),
            edition: None,
            kind: LicenseKind::Formal,
            status: LicenseStatus::Active,
            modules: vec![],
            features: vec![],
            seats: BTreeMap::new(),
            expires_at: None,
            offline_grace_hours: 72,
            lease_ttl_secs: 300,
            lease_grace_secs: 60,
            require_client_time: false,
            domain: None,
            version: 1,
        },
        // An expired trial: its leases continue, new ones are refused.
        Grant {
            license_id: uuid(LICENSE_3),
            product: "viewer".into(),
            edition: None,
            kind: LicenseKind::Trial,
            status: LicenseStatus::Expired,
            modules: vec![],
            features: strings(&["watermark"]),
            seats: BTreeMap::from([("watermark".into(), 1)]),
            expires_at: Some(at("2026-04-01T00:00:00Z")),
            offline_grace_hours: 72,
            lease_ttl_secs: 300,
            lease_grace_secs: 0,
            require_client_time: false,
            domain: None,
            version: 2,
        },
    ]
}

fn upstream_licenses_imported() -> Vec<UpstreamLicenseImported> {
    grants()
        .into_iter()
        .zip([IMPORTED_1, IMPORTED_2])
        .zip([at("2026-07-01T02:00:01Z"), at("2026-07-01T02:00:01.25Z")])
        .map(|((grant, license), imported_at)| UpstreamLicenseImported {
            upstream_id: uuid(UPSTREAM_1),
            grant: Grant {
                license_id: uuid(license),
                ..grant
            },
            imported_at,
        })
        .collect()
}

fn upstream_revocations_imported() -> Vec<UpstreamRevocationsImported> {
    vec![
        UpstreamRevocationsImported {
            upstream_id: uuid(UPSTREAM_1),
            license_id: uuid(IMPORTED_1),
            revocations: vec![
                Revocation {
                    activation_id: uuid(ACTIVATION_1),
                    license_id: uuid(IMPORTED_1),
                    reason: "uninstalled".into(),
                    revoked_at: at("2026-06-01T10:00:00Z"),
                },
                Revocation {
                    activation_id: uuid(ACTIVATION_3),
                    license_id: uuid(IMPORTED_1),
                    reason: "migrated".into(),
                    revoked_at: at("2026-06-20T12:02:12.5Z"),
                },
            ],
            imported_at: at("2026-07-01T02:00:02Z"),
        },
        UpstreamRevocationsImported {
            upstream_id: uuid(UPSTREAM_1),
            license_id: uuid(IMPORTED_2),
            revocations: vec![Revocation {
                activation_id: uuid(ACTIVATION_2),
                license_id: uuid(IMPORTED_2),
                reason: "license_revoked".into(),
                revoked_at: at("2026-06-30T23:00:00Z"),
            }],
            imported_at: at("2026-07-01T02:00:02.5Z"),
        },
    ]
}

fn sync_requests() -> Vec<SyncRequest> {
    vec![
        // Every optional field set: a long poll from where the last sync
        // ended.
        SyncRequest {
            cursor: Some("c1.913.8f3a".try_into().expect("valid text")),
            client_time: Some(at("2026-07-03T16:00:00.5+08:00")),
            wait_ms: Some(25_000),
        },
        // None set: a first sync, answered at once.
        SyncRequest::default(),
    ]
}

fn grant_claims() -> Vec<GrantClaims> {
    let all = grants();
    let leased = leases_granted();
    vec![
        // Every optional field set (in its first grant): the build farm's
        // document, with the leases it holds.
        GrantClaims {
            iss: "https://licensing.example.com".into(),
            sub: CLIENT_1.into(),
            iat: 1_783_065_900,
            nbf: 1_783_065_900,
            exp: 1_783_325_100,
            typ: "grant-document".into(),
            client_id: uuid(CLIENT_1),
            server_time: at("2026-07-03T08:05:00Z"),
            // The shortest offline grace of its grants: 72 hours.
            valid_until: at("2026-07-06T08:05:00Z"),
            grants: vec![all[0].clone(), all[2].clone()],
            leases: leased[..2]
                .iter()
                .map(|l| LeaseSummary {
                    lease_id: l.lease_id,
                    license_id: l.license_id,
                    feature: l.feature.clone(),
                    features: l.features.clone(),
                    quantity: l.quantity,
                    // Their last heartbeat came at 08:05:00.
                    deadline: at("2026-07-03T08:20:00Z"),
                })
                .collect(),
            revocations: vec![Revocation {
                activation_id: uuid(LICENSE_3),
                license_id: uuid(LICENSE_1),
                reason: "uninstalled".into(),
                revoked_at: at("2026-07-02T16:00:00Z"),
            }],
        },
        // None set: a client whose licenses all left service; without a
        // grant there is nothing to work on offline.
        GrantClaims {
            iss: "https://licensing.example.com".into(),
            sub: CLIENT_2.into(),
            iat: 1_783_275_600,
            nbf: 1_783_275_600,
            exp: 1_783_275_600,
            typ: "grant-document".into(),
            client_id: uuid(CLIENT_2),
            server_time: at("2026-07-05T18:20:00Z"),
            valid_until: at("2026-07-05T18:20:00Z"),
            grants: vec![],
            leases: vec![],
            revocations: vec![],
        },
    ]
}

fn payload<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("payload serialises")
}

fn event_envelopes() -> Vec<EventEnvelope> {
    let issued = licenses_issued();
    let expired = licenses_expired();
    let activated = devices_activated();
    let charged = domain_changes_charged();
    let leased = leases_granted();
    vec![
        // Every optional field set.
        EventEnvelope {
            event_id: uuid("01956a3e-7b20-7000-8000-000000000001"),
            event_type: LICENSE_ISSUED.into(),
            event_version: LICENSE_ISSUED_V1.into(),
            aggregate_type: LICENSE_AGGREGATE.into(),
            aggregate_id: LICENSE_1.into(),
            sequence: 1,
            global_position: 42,
            occurred_at: at("2026-03-01T10:15:30.123456789Z"),
            recorded_at: at("2026-03-01T10:15:30.130001Z"),
            command_id: uuid("01956a3e-7a00-7bcd-8ef0-123456789abc"),
            correlation_id: "req-7f3a9c2e".into(),
            causation_id: Some("01956a3e-7900-7000-8000-00000000beef".into()),
            actor: Actor::new(ActorKind::ApiKey, "key_2xYw9QpL"),
            payload: payload(&issued[0]),
            prev_hash: "0".repeat(64),
            hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        },
        // None set.
        EventEnvelope {
            event_id: uuid("01956a41-0c40-7000-8000-000000000002"),
            event_type: LICENSE_ISSUED.into(),
            event_version: LICENSE_ISSUED_V1.into(),
            aggregate_type: LICENSE_AGGREGATE.into(),
            aggregate_id: LICENSE_2.into(),
            sequence: 1,
            global_position: 43,
            occurred_at: at("2026-03-01T10:16:00Z"),
            recorded_at: at("2026-03-01T10:16:00.004Z"),
            command_id: uuid("01956a41-0c00-7000-8000-0000000000aa"),
            correlation_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            causation_id: None,
            actor: Actor::new(ActorKind::Service, "grant-sync"),
            payload: payload(&issued[1]),
            prev_hash: "0".repeat(64),
            hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        },
        // A later event of an aggregate, caused by the scheduler.
        EventEnvelope {
            event_id: uuid("01956b00-0000-7000-8000-000000000003"),
            event_type: LICENSE_EXPIRED.into(),
            event_version: V1.into(),
            aggregate_type: LICENSE_AGGREGATE.into(),
            aggregate_id: LICENSE_1.into(),
            sequence: 7,
            global_position: i64::MAX,
            occurred_at: expired[0].expired_at,
            recorded_at: at("2027-07-01T00:05:01Z"),
            command_id: uuid("01956b00-0000-7000-8000-0000000000ff"),
            correlation_id: "expiry-sweep-2027-07-01".into(),
            causation_id: None,
            actor: Actor::new(ActorKind::Scheduler, "expiry"),
            payload: payload(&expired[0]),
            prev_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            hash: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
        },
        // An event of the activation context.
        EventEnvelope {
            event_id: uuid("01956a3f-1a40-7000-8000-000000000004"),
            event_type: DEVICE_ACTIVATED.into(),
            event_version: V1.into(),
            aggregate_type: ACTIVATIONS_AGGREGATE.into(),
            aggregate_id: LICENSE_1.into(),
            sequence: 2,
            global_position: 57,
            occurred_at: activated[0].activated_at,
            recorded_at: at("2026-03-02T01:15:02.421Z"),
            command_id: uuid("01956a3f-1a00-7000-8000-0000000000d1"),
            correlation_id: "req-a1b2c3d4".into(),
            causation_id: None,
            actor: Actor::new(ActorKind::Service, "activation"),
            payload: payload(&activated[0]),
            prev_hash: DIGEST_2.into(),
            hash: DIGEST_1.into(),
        },
        // An event of the domain context, after the change it charges for.
        EventEnvelope {
            event_id: uuid("01956d20-3333-7000-8000-000000000005"),
            event_type: DOMAIN_CHANGE_CHARGED.into(),
            event_version: V1.into(),
            aggregate_type: BINDING_AGGREGATE.into(),
            aggregate_id: LICENSE_2.into(),
            sequence: 6,
            global_position: 913,
            occurred_at: charged[0].charged_at,
            recorded_at: at("2026-06-10T14:30:00.006Z"),
            command_id: uuid("01956d20-3300-7000-8000-0000000000e1"),
            correlation_id: "req-d0ma1n42".into(),
            causation_id: None,
            actor: Actor::new(ActorKind::ApiKey, KEY_2),
            payload: payload(&charged[0]),
            prev_hash: DIGEST_1.into(),
            hash: DIGEST_2.into(),
        },
        // An event of the grants context, for the client's checkout.
        EventEnvelope {
            event_id: uuid("01957b00-0001-7000-8000-000000000006"),
            event_type: LEASE_GRANTED.into(),
            event_version: V1.into(),
            aggregate_type: LEASES_AGGREGATE.into(),
            aggregate_id: LICENSE_1.into(),
            sequence: 1,
            global_position: 1_204,
            occurred_at: leased[0].granted_at,
            recorded_at: at("2026-07-03T08:00:00.131Z"),
            command_id: uuid("01957b00-0001-7000-8000-0000000000c1"),
            correlation_id: "req-1ea5e001".into(),
            causation_id: None,
            actor: Actor::new(ActorKind::ApiKey, CLIENT_KEY_1),
            payload: payload(&leased[0]),
            prev_hash: "0".repeat(64),
            hash: DIGEST_1.into(),
        },
    ]
}

fn command_envelopes() -> Vec<CommandEnvelope> {
    let specs = issue_licenses();
    vec![
        // Every optional field set.
        CommandEnvelope {
            command_id: uuid("01956a3e-7a00-7bcd-8ef0-123456789abc"),
            command_type: ISSUE_LICENSE.into(),
            aggregate_id: LICENSE_1.into(),
            issued_at: at("2026-03-01T10:15:30.100Z"),
            actor: Actor::new(ActorKind::ApiKey, "key_2xYw9QpL"),
            correlation_id: "req-7f3a9c2e".into(),
            causation_id: Some("01956a3e-7900-7000-8000-00000000beef".into()),
            payload: payload(&specs[0]),
        },
        // None set.
        CommandEnvelope {
            command_id: uuid("01956a41-0c00-7000-8000-0000000000aa"),
            command_type: ISSUE_LICENSE.into(),
            aggregate_id: LICENSE_2.into(),
            issued_at: at("2026-03-01T10:15:59Z"),
            actor: Actor::new(ActorKind::System, "bootstrap"),
            correlation_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            causation_id: None,
            payload: payload(&specs[1]),
        },
        // A command without a payload, over HTTP.
        CommandEnvelope {
            command_id: uuid("01956c10-1111-7000-8000-0000000000b1"),
            command_type: REINSTATE_LICENSE.into(),
            aggregate_id: LICENSE_1.into(),
            issued_at: at("2026-05-06T11:00:00Z"),
            actor: Actor::new(ActorKind::ApiKey, KEY_1),
            correlation_id: "req-0b1c2d3e".into(),
            causation_id: None,
            payload: payload(&Empty {}),
        },
        // Sent by another service over Kafka.
        CommandEnvelope {
            command_id: uuid("01956c10-2222-7000-8000-0000000000b2"),
            command_type: SUSPEND_LICENSE.into(),
            aggregate_id: LICENSE_1.into(),
            issued_at: at("2026-05-04T09:29:59.9Z"),
            actor: Actor::new(ActorKind::Service, "billing"),
            correlation_id: "dunning-run-2026-05-04".into(),
            causation_id: Some("invoice-2026-0142-overdue".into()),
            payload: payload(&suspensions()[0]),
        },
        // A command of the domain context, over HTTP.
        CommandEnvelope {
            command_id: uuid("01956d20-3300-7000-8000-0000000000e1"),
            command_type: CHANGE_DOMAIN.into(),
            aggregate_id: LICENSE_2.into(),
            issued_at: at("2026-06-10T14:29:59.97Z"),
            actor: Actor::new(ActorKind::ApiKey, KEY_2),
            correlation_id: "req-d0ma1n42".into(),
            causation_id: None,
            payload: payload(&domain_changes()[0]),
        },
        // A command of the grants context, over HTTP.
        CommandEnvelope {
            command_id: uuid("01957b00-0001-7000-8000-0000000000c1"),
            command_type: CHECKOUT_LEASE.into(),
            aggregate_id: LICENSE_1.into(),
            issued_at: at("2026-07-03T08:00:00.118Z"),
            actor: Actor::new(ActorKind::ApiKey, CLIENT_KEY_1),
            correlation_id: "req-1ea5e001".into(),
            causation_id: None,
            payload: payload(&lease_checkouts()[0]),
        },
    ]
}

fn command_outcomes() -> Vec<CommandOutcome> {
    vec![
        // Every optional field set (the shape allows both at once).
        CommandOutcome {
            command_id: uuid("01956a3e-7a00-7bcd-8ef0-123456789abc"),
            status: OutcomeStatus::Rejected,
            error: Some(OutcomeError {
                code: "INVALID_PRODUCT".into(),
                message: "product must be 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit".into(),
                field: Some("product".into()),
                kind: Some(ErrorKind::Invalid),
            }),
            aggregate_id: LICENSE_1.into(),
            sequence: Some(3),
            result: Some(json!({"activation_id": ACTIVATION_1, "license_id": LICENSE_1})),
        },
        // None set.
        CommandOutcome {
            command_id: uuid("01956a41-0c00-7000-8000-0000000000aa"),
            status: OutcomeStatus::Accepted,
            error: None,
            aggregate_id: LICENSE_2.into(),
            sequence: None,
            result: None,
        },
        CommandOutcome {
            command_id: uuid("01956a41-0c00-7000-8000-0000000000ab"),
            status: OutcomeStatus::Accepted,
            error: None,
            aggregate_id: LICENSE_2.into(),
            sequence: Some(1),
            result: None,
        },
        CommandOutcome {
            command_id: uuid("01956a41-0c00-7000-8000-0000000000ac"),
            status: OutcomeStatus::Rejected,
            error: Some(OutcomeError {
                code: "LICENSE_EXISTS".into(),
                message: "license already exists".into(),
                field: None,
                kind: None,
            }),
            aggregate_id: LICENSE_2.into(),
            sequence: None,
            result: None,
        },
    ]
}

// ---------------------------------------------------------------------------
// Helpers.

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn schema(path: &str) -> Value {
    assert!(
        contracts().iter().any(|c| c.schema == path),
        "{path} is not listed in contracts()"
    );
    let file = schemas_dir().join(path);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn validator(path: &str) -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema(path))
        .unwrap_or_else(|e| panic!("{path} does not compile: {e}"))
}

fn errors(validator: &Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn assert_valid(validator: &Validator, doc: &Value, path: &str) {
    let errors = errors(validator, doc);
    assert!(errors.is_empty(), "{path} rejects {doc}: {errors:?}");
}

fn parses<T: DeserializeOwned>(doc: &Value) -> bool {
    serde_json::from_str::<T>(&doc.to_string()).is_ok()
}

/// Serde's reading of `doc` as a `T`, written back out.
fn read<T: Serialize + DeserializeOwned>(doc: &Value) -> Option<Value> {
    let typed: T = serde_json::from_str(&doc.to_string()).ok()?;
    Some(serde_json::to_value(typed).expect("what serde read serialises"))
}

fn to_values<T: Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).expect("sample serialises"))
        .collect()
}

/// Serialises each instance, validates the JSON, and deserialises it back to
/// an equal value.
fn assert_round_trips<T>(path: &str, originals: &[T])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    assert!(originals.len() >= 2, "{path}: at least two instances");
    let validator = validator(path);
    for original in originals {
        let text = serde_json::to_string(original).expect("serialises");
        let doc: Value = serde_json::from_str(&text).expect("serde wrote JSON");
        assert_valid(&validator, &doc, path);
        let back: T = serde_json::from_str(&text).expect("deserialises what it wrote");
        assert_eq!(&back, original);
    }
}

/// Both the schema and serde refuse `doc`.
fn assert_rejected_by_both<T: DeserializeOwned + Debug>(path: &str, doc: &Value, what: &str) {
    assert!(
        !validator(path).is_valid(doc),
        "{path} accepts {what}: {doc}"
    );
    let parsed = serde_json::from_str::<T>(&doc.to_string());
    assert!(
        parsed.is_err(),
        "serde accepts {what} as {}: {parsed:?}",
        std::any::type_name::<T>()
    );
}

/// Both the schema and serde take `doc`.
fn assert_accepted_by_both<T: DeserializeOwned + Debug>(path: &str, doc: &Value, what: &str) {
    assert_valid(&validator(path), doc, path);
    let parsed = serde_json::from_str::<T>(&doc.to_string());
    assert!(parsed.is_ok(), "serde refuses {what}: {parsed:?}");
}

/// The schema refuses `doc` although serde takes it: a documented place where
/// the schema is the stricter of the two.
fn assert_only_schema_rejects<T: DeserializeOwned + Debug>(path: &str, doc: &Value, what: &str) {
    assert!(
        !validator(path).is_valid(doc),
        "{path} accepts {what}: {doc}"
    );
    let parsed = serde_json::from_str::<T>(&doc.to_string());
    assert!(
        parsed.is_ok(),
        "serde now refuses {what}; move the case to the strict tests: {parsed:?}"
    );
}

/// `doc` with the value at JSON pointer `pointer` replaced, or added to its
/// parent object.
fn with(doc: &Value, pointer: &str, value: Value) -> Value {
    let mut doc = doc.clone();
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = value;
        return doc;
    }
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a '/'");
    doc.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent}"))
        .insert(key.to_string(), value);
    doc
}

/// `doc` without the member at JSON pointer `pointer`.
fn without(doc: &Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a '/'");
    let mut doc = doc.clone();
    let removed = doc
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|o| o.remove(key));
    assert!(removed.is_some(), "nothing at {pointer}");
    doc
}

fn keys(doc: &Value) -> BTreeSet<String> {
    doc.as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// The `required` of an object schema; none when it has no such keyword.
fn required_of(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .map_or_else(BTreeSet::new, |r| string_set(Some(r), "required"))
}

fn string_set(value: Option<&Value>, what: &str) -> BTreeSet<String> {
    value
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{what} is not an array"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// A value in a sample document, with the schema node describing it.
struct Part {
    /// JSON pointer of the value ("" for the document).
    pointer: String,
    value: Value,
    /// The node as written where it is used: a `$ref`, perhaps with a
    /// `default` beside it.
    node: Value,
    /// The node with its `$ref` followed.
    schema: Value,
    /// For a member of an object with `properties`: whether it is required.
    required: Option<bool>,
}

impl Part {
    fn is_member(&self) -> bool {
        self.required.is_some()
    }

    /// An object the schema describes field by field (not a map, not a
    /// free-form payload).
    fn is_record(&self) -> bool {
        self.value.is_object() && self.schema.get("properties").is_some()
    }
}

/// Every value of `doc` that `root` describes, found by walking both
/// together: members of objects with `properties`, values of maps
/// (`additionalProperties`) and array items, and the document itself.
fn parts(root: &Value, doc: &Value) -> Vec<Part> {
    let mut out = Vec::new();
    walk(root, root, doc, String::new(), None, &mut out);
    out
}

fn walk(
    root: &Value,
    node: &Value,
    value: &Value,
    pointer: String,
    required: Option<bool>,
    out: &mut Vec<Part>,
) {
    let schema = match node.get("$ref").and_then(Value::as_str) {
        Some(r) => root
            .pointer(r.strip_prefix('#').expect("a local $ref"))
            .unwrap_or_else(|| panic!("{r} resolves to nothing")),
        None => node,
    };
    match value {
        Value::Object(members) => {
            let properties = schema.get("properties");
            let needed = required_of(schema);
            let map_values = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, member) in members {
                assert!(!key.contains(['/', '~']), "{key} needs escaping");
                let at = format!("{pointer}/{key}");
                match (properties.and_then(|p| p.get(key)), map_values) {
                    (Some(child), _) => {
                        walk(root, child, member, at, Some(needed.contains(key)), out)
                    }
                    (None, Some(child)) => walk(root, child, member, at, None, out),
                    (None, None) => {}
                }
            }
        }
        Value::Array(items) => {
            let child = schema
                .get("items")
                .unwrap_or_else(|| panic!("the array at {pointer:?} has no items schema"));
            for (i, item) in items.iter().enumerate() {
                walk(root, child, item, format!("{pointer}/{i}"), None, out);
            }
        }
        _ => {}
    }
    out.push(Part {
        pointer,
        value: value.clone(),
        node: node.clone(),
        schema: schema.clone(),
        required,
    });
}

/// Calls `check` with every part of every sample of every contract.
fn each_part(mut check: impl FnMut(&Contract, &Validator, &Value, &Part)) {
    for c in contracts() {
        let root = schema(&c.schema);
        let validator = validator(&c.schema);
        for doc in (c.samples)() {
            for part in parts(&root, &doc) {
                check(&c, &validator, &doc, &part);
            }
        }
    }
}

/// Asserts whether the schema and serde each take `doc`.
fn expect(
    c: &Contract,
    validator: &Validator,
    doc: &Value,
    schema_ok: bool,
    serde_ok: bool,
    what: &str,
) {
    assert_eq!(
        validator.is_valid(doc),
        schema_ok,
        "{}: the schema on {what}: {doc}",
        c.schema
    );
    assert_eq!(
        c.parses(doc),
        serde_ok,
        "{}: serde on {what}: {doc}",
        c.schema
    );
}

fn is_any_json(c: &Contract, pointer: &str) -> bool {
    ANY_JSON.contains(&(c.schema.as_str(), pointer))
}

/// A value of another JSON type than `value`.
fn of_another_type(value: &Value) -> Value {
    match value {
        Value::String(_) => json!(17),
        Value::Number(_) => json!("7"),
        Value::Bool(_) => json!("true"),
        Value::Array(_) | Value::Object(_) => json!("x"),
        Value::Null => json!({}),
    }
}

/// "activation_file" as PascalCase: "ActivationFile".
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn json_files(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            json_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            let rel = path.strip_prefix(root).expect("under schemas/");
            let parts: Vec<_> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect();
            out.insert(parts.join("/"));
        }
    }
}

/// Every variant, as serde writes it. The matches make a new variant a
/// compile error here until it is listed.
fn actor_kinds() -> Vec<ActorKind> {
    let all = vec![
        ActorKind::ApiKey,
        ActorKind::Service,
        ActorKind::Scheduler,
        ActorKind::System,
        ActorKind::License,
    ];
    for k in &all {
        match k {
            ActorKind::ApiKey
            | ActorKind::Service
            | ActorKind::Scheduler
            | ActorKind::System
            | ActorKind::License => {}
        }
    }
    all
}

fn license_kinds() -> Vec<LicenseKind> {
    let all = vec![
        LicenseKind::Trial,
        LicenseKind::Temporary,
        LicenseKind::Formal,
    ];
    for k in &all {
        match k {
            LicenseKind::Trial | LicenseKind::Temporary | LicenseKind::Formal => {}
        }
    }
    all
}

fn recovery_methods() -> Vec<RecoveryMethod> {
    let all = vec![
        RecoveryMethod::Contract,
        RecoveryMethod::ActivationFile,
        RecoveryMethod::Fingerprint,
    ];
    for m in &all {
        match m {
            RecoveryMethod::Contract
            | RecoveryMethod::ActivationFile
            | RecoveryMethod::Fingerprint => {}
        }
    }
    all
}

fn revocation_reasons() -> Vec<RevocationReason> {
    let all = vec![
        RevocationReason::LicenseSuspended,
        RevocationReason::LicenseRevoked,
        RevocationReason::LicenseReclaimed,
        RevocationReason::LicenseDeleted,
        RevocationReason::TrialEnded,
    ];
    for r in &all {
        match r {
            RevocationReason::LicenseSuspended
            | RevocationReason::LicenseRevoked
            | RevocationReason::LicenseReclaimed
            | RevocationReason::LicenseDeleted
            | RevocationReason::TrialEnded => {}
        }
    }
    all
}

fn release_reasons() -> Vec<ReleaseReason> {
    let all = vec![
        ReleaseReason::LicenseRevoked,
        ReleaseReason::LicenseReclaimed,
        ReleaseReason::LicenseDeleted,
    ];
    for r in &all {
        match r {
            ReleaseReason::LicenseRevoked
            | ReleaseReason::LicenseReclaimed
            | ReleaseReason::LicenseDeleted => {}
        }
    }
    all
}

fn license_statuses() -> Vec<LicenseStatus> {
    let all = vec![
        LicenseStatus::Active,
        LicenseStatus::Suspended,
        LicenseStatus::Expired,
        LicenseStatus::Reclaimed,
        LicenseStatus::Revoked,
        LicenseStatus::Deleted,
    ];
    for s in &all {
        match s {
            LicenseStatus::Active
            | LicenseStatus::Suspended
            | LicenseStatus::Expired
            | LicenseStatus::Reclaimed
            | LicenseStatus::Revoked
            | LicenseStatus::Deleted => {}
        }
    }
    all
}

fn lease_end_reasons() -> Vec<LeaseEndReason> {
    let all = vec![
        LeaseEndReason::LicenseSuspended,
        LeaseEndReason::LicenseRevoked,
        LeaseEndReason::LicenseReclaimed,
        LeaseEndReason::LicenseDeleted,
        LeaseEndReason::ClientRevoked,
    ];
    for r in &all {
        match r {
            LeaseEndReason::LicenseSuspended
            | LeaseEndReason::LicenseRevoked
            | LeaseEndReason::LicenseReclaimed
            | LeaseEndReason::LicenseDeleted
            | LeaseEndReason::ClientRevoked => {}
        }
    }
    all
}

fn upstream_statuses() -> Vec<UpstreamStatus> {
    let all = vec![
        UpstreamStatus::Ok,
        UpstreamStatus::Unreachable,
        UpstreamStatus::BadCredentials,
        UpstreamStatus::AddressNotAllowed,
        UpstreamStatus::MemberMismatch,
        UpstreamStatus::UpstreamError,
    ];
    for s in &all {
        match s {
            UpstreamStatus::Ok
            | UpstreamStatus::Unreachable
            | UpstreamStatus::BadCredentials
            | UpstreamStatus::AddressNotAllowed
            | UpstreamStatus::MemberMismatch
            | UpstreamStatus::UpstreamError => {}
        }
    }
    all
}

fn sync_resources() -> Vec<SyncResource> {
    let all = SyncResource::ALL.to_vec();
    for r in &all {
        match r {
            SyncResource::Catalog | SyncResource::Licenses | SyncResource::Revocations => {}
        }
    }
    all
}

fn outcome_statuses() -> Vec<OutcomeStatus> {
    let all = vec![OutcomeStatus::Accepted, OutcomeStatus::Rejected];
    for s in &all {
        match s {
            OutcomeStatus::Accepted | OutcomeStatus::Rejected => {}
        }
    }
    all
}

// ---------------------------------------------------------------------------
// Tests over every schema.

#[test]
fn every_schema_file_is_covered() {
    let root = schemas_dir();
    let mut on_disk = BTreeSet::new();
    for dir in SCHEMA_DIRS {
        json_files(&root.join(dir), &root, &mut on_disk);
    }
    let covered: BTreeSet<String> = contracts().into_iter().map(|c| c.schema).collect();
    let untested: Vec<_> = on_disk.difference(&covered).collect();
    let missing: Vec<_> = covered.difference(&on_disk).collect();
    assert!(
        untested.is_empty(),
        "schema files without tests (add them to contracts()): {untested:?}"
    );
    assert!(
        missing.is_empty(),
        "listed schemas not on disk: {missing:?}"
    );
}

/// Each event and command type has its payload schema, and each payload
/// schema under `events/` and `commands/` belongs to one, or is a request
/// body listed in [`REQUEST_BODIES`]; an event's schema names its context,
/// type, version and aggregate, a request body's its route.
#[test]
fn every_message_type_has_a_payload_schema() {
    let root = schemas_dir();
    let mut on_disk = BTreeSet::new();
    json_files(&root.join("events"), &root, &mut on_disk);
    json_files(&root.join("commands"), &root, &mut on_disk);
    for envelope in [EVENT_ENVELOPE, COMMAND_ENVELOPE, COMMAND_OUTCOME] {
        assert!(on_disk.remove(envelope), "{envelope} is not on disk");
    }
    let mut named = BTreeSet::new();
    for (context, event_type, aggregate) in EVENT_TYPES {
        let path = event_payload_schema(context, event_type, V1);
        let s = schema(&path);
        let description = s["description"].as_str().unwrap_or_default();
        let expected = format!(
            r#"Payload of the {context} event {event_type}, event_version "{V1}", aggregate_type "{aggregate}"."#
        );
        assert!(
            description.starts_with(&expected),
            "{path} does not start with {expected:?}: {description}"
        );
        assert!(named.insert(path), "{event_type} is listed twice");
    }
    for (context, command_type) in COMMAND_TYPES {
        let path = command_payload_schema(command_type);
        if path != EMPTY_SCHEMA {
            let s = schema(&path);
            let description = s["description"].as_str().unwrap_or_default();
            let expected = format!("Payload of the {context} command {command_type}");
            assert!(
                description.starts_with(&expected),
                "{path} does not start with {expected:?}: {description}"
            );
        }
        named.insert(path);
    }
    for (_, name, route) in REQUEST_BODIES {
        let path = request_body_schema(name);
        let s = schema(&path);
        let description = s["description"].as_str().unwrap_or_default();
        let expected = format!("Body of {route}");
        assert!(
            description.starts_with(&expected),
            "{path} does not start with {expected:?}: {description}"
        );
        assert!(named.insert(path), "{name} is also a command's payload");
    }
    assert_eq!(named, on_disk);
}

#[test]
fn schemas_are_draft_2020_12_with_id_and_description() {
    for c in contracts() {
        let s = schema(&c.schema);
        if let Err(e) = jsonschema::draft202012::meta::validate(&s) {
            panic!("{} is not a valid 2020-12 schema: {e}", c.schema);
        }
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{}",
            c.schema
        );
        let expected_id = format!(
            "urn:licensing:schemas:{}",
            c.schema.trim_end_matches(".json").replace(['/', '.'], ":")
        );
        assert_eq!(s["$id"], Value::String(expected_id), "{}", c.schema);
        assert!(
            s["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{} has no description",
            c.schema
        );
        assert_eq!(s["type"], "object", "{}", c.schema);
        assert_eq!(s["additionalProperties"], false, "{}", c.schema);
        // Compiles with format validation on.
        validator(&c.schema);
    }
}

#[test]
fn every_contract_round_trips() {
    for c in contracts() {
        (c.round_trip)();
    }
}

#[test]
fn samples_are_valid_and_the_first_sets_every_field() {
    for c in contracts() {
        let s = schema(&c.schema);
        let validator = validator(&c.schema);
        let samples = (c.samples)();
        assert!(samples.len() >= 2, "{}: at least two samples", c.schema);
        for doc in &samples {
            assert_valid(&validator, doc, &c.schema);
            assert!(c.parses(doc), "serde refuses its own {doc}");
        }
        let properties = keys(&s["properties"]);
        assert_eq!(
            keys(&samples[0]),
            properties,
            "{}: the first sample sets every field the schema declares",
            c.schema
        );
        let required = required_of(&s);
        assert!(required.is_subset(&properties), "{}", c.schema);
        // Each field serde may leave out, some sample leaves out.
        for key in properties.difference(&required) {
            let written_anyway = (c.read)(&without(&samples[0], &format!("/{key}")))
                .is_some_and(|back| back.get(key).is_some());
            assert!(
                written_anyway || samples.iter().any(|d| d.get(key).is_none()),
                "{}: no sample leaves out {key}",
                c.schema
            );
        }
    }
}

/// `required` lists exactly the fields serde cannot do without: removing a
/// required field fails both, removing any other passes both. The same for
/// the objects inside (an actor, a policy, a module).
#[test]
fn required_fields_match_serde() {
    each_part(|c, validator, doc, part| {
        if let Some(required) = part.required {
            let cut = without(doc, &part.pointer);
            let what = format!("no {}", part.pointer);
            expect(c, validator, &cut, !required, !required, &what);
        }
    });
}

#[test]
fn unknown_fields_fail_both() {
    each_part(|c, validator, doc, part| {
        let is_map = part.schema["additionalProperties"].is_object();
        assert!(
            !part.value.is_object() || part.is_record() || is_map || is_any_json(c, &part.pointer),
            "{}: the object at {:?} is not described",
            c.schema,
            part.pointer
        );
        if part.is_record() {
            for extra in ["extra", "Product", "schema_version"] {
                let bad = with(doc, &format!("{}/{extra}", part.pointer), json!("x"));
                let what = format!("{extra} in {:?}", part.pointer);
                expect(c, validator, &bad, false, false, &what);
            }
        }
    });
}

#[test]
fn values_of_another_json_type_fail_both() {
    each_part(|c, validator, doc, part| {
        if !part.pointer.is_empty() {
            let bad = with(doc, &part.pointer, of_another_type(&part.value));
            let what = format!("another type at {}", part.pointer);
            expect(
                c,
                validator,
                &bad,
                false,
                is_any_json(c, &part.pointer),
                &what,
            );
        }
    });
}

/// The schemas never take null: an absent option is left out. Serde takes
/// null exactly for the optional fields without a serde default (the
/// `Option`s), which is where the schema is stricter; a field with a serde
/// default carries the same `default` in its schema.
#[test]
fn null_fails_the_schema_and_serde_takes_it_only_for_options() {
    each_part(|c, validator, doc, part| {
        if part.is_member() {
            let bad = with(doc, &part.pointer, Value::Null);
            let option = part.required == Some(false) && part.node.get("default").is_none();
            let what = format!("null at {}", part.pointer);
            expect(
                c,
                validator,
                &bad,
                false,
                option || is_any_json(c, &part.pointer),
                &what,
            );
        }
    });
}

/// A field's schema `default` means to serde what leaving it out means.
#[test]
fn defaults_mean_what_serde_fills_in() {
    let mut seen = 0;
    each_part(|c, _, doc, part| {
        if let Some(default) = part.node.get("default") {
            assert_eq!(
                part.required,
                Some(false),
                "{}: a required default",
                c.schema
            );
            let left_out = (c.read)(&without(doc, &part.pointer));
            let given = (c.read)(&with(doc, &part.pointer, default.clone()));
            assert!(
                left_out.is_some(),
                "{}: serde needs {}",
                c.schema,
                part.pointer
            );
            assert_eq!(left_out, given, "{}: default of {}", c.schema, part.pointer);
            seen += 1;
        }
    });
    assert!(seen > 0);
}

/// Strings of `n` characters (two bytes each in UTF-8: lengths count
/// characters).
fn chars(n: usize) -> String {
    "é".repeat(n)
}

/// A domain name of `n` characters (at least 4) that is valid but for its
/// length: labels of up to 63 characters under `.example`.
fn long_domain(n: usize) -> String {
    let mut name = String::from("example");
    while name.len() < n {
        let label = (n - name.len() - 1).clamp(1, 63);
        name = format!("{}.{name}", "a".repeat(label));
    }
    assert_eq!(name.len(), n);
    name
}

/// Malformed ids, timestamps, digests, domain names and currency codes fail
/// the schema; serde refuses the ones its types parse (`Uuid`, `DateTime`),
/// not the forms it accepts or the values it reads as plain strings. Free
/// text fails only outside its `minLength` and `maxLength`. A string the
/// schema leaves free is free to serde too, so no `Uuid` or `DateTime` lacks
/// its format.
#[test]
fn formats_are_checked() {
    each_part(|c, validator, doc, part| {
        let Some(text) = part.value.as_str() else {
            return;
        };
        let format = part.schema.get("format").and_then(Value::as_str);
        let pattern = part.schema.get("pattern").and_then(Value::as_str);
        let length = |k: &str| {
            part.schema
                .get(k)
                .and_then(Value::as_u64)
                .map(|n| usize::try_from(n).expect("a length fits usize"))
        };
        let (min, max) = (length("minLength"), length("maxLength"));
        let at = format!("{} {}", c.schema, part.pointer);
        if is_sha256(&part.pointer) {
            assert_eq!(pattern, Some(SHA256), "{at}");
        }
        if is_domain(&part.pointer) {
            if !c.schema.starts_with("commands/") {
                assert_eq!(
                    (pattern, min, max),
                    (Some(DOMAIN_NAME), None, Some(MAX_DOMAIN_CHARS)),
                    "{at}"
                );
                assert_eq!(part.schema["not"], json!({"pattern": NUMERIC_TLD}), "{at}");
            } else {
                assert_eq!(
                    (pattern, min, max),
                    (None, Some(1), Some(MAX_DOMAIN_CHARS)),
                    "{at}"
                );
            }
        }
        if part.pointer.rsplit('/').next() == Some("currency") {
            assert_eq!(pattern, Some(CURRENCY), "{at}");
        }
        // (value, whether the schema takes it, whether serde does)
        let cases: Vec<(Value, bool, bool)> = match (format, pattern) {
            (None, None) if part.schema.get("enum").is_none() => {
                let (min, max) = (min.unwrap_or(0), max.unwrap_or(usize::MAX));
                let mut lengths = BTreeSet::from([0, 1, min.saturating_sub(1), min]);
                if max < usize::MAX {
                    lengths.extend([max, max + 1]);
                }
                let fits = |n: usize| (min..=max).contains(&n);
                let mut cases = vec![(json!("?"), fits(1), true)];
                cases.extend(
                    lengths
                        .into_iter()
                        .map(|n| (json!(chars(n)), fits(n), true)),
                );
                cases
            }
            (Some("uuid"), _) => vec![
                (json!("not-a-uuid"), false, false),
                (json!(&text[..8]), false, false),
                (json!(text.to_uppercase()), false, true),
                (json!(text.replace('-', "")), false, true),
            ],
            (Some("date-time"), _) => vec![
                (json!("yesterday"), false, false),
                (json!("2026-13-01T00:00:00Z"), false, false),
                (json!("2026-03-01T10:15:30"), false, false),
                (json!("2026-03-01"), false, false),
            ],
            (None, Some(SHA256)) => vec![
                (json!(text.to_uppercase()), false, true),
                (json!(format!("{}F", &text[..63])), false, true),
                (json!(&text[..62]), false, true),
                (json!(format!("{text}0")), false, true),
            ],
            (None, Some(DOMAIN_NAME)) => {
                let mut cases: Vec<(Value, bool, bool)> = [
                    text.to_uppercase(),
                    "localhost".into(),
                    "192.0.2.1".into(),
                    "example.123".into(),
                    "example.0x7f".into(),
                    "bücher.example".into(),
                    format!("{text}."),
                    format!(".{text}"),
                    format!("www..{text}"),
                    format!("my shop.{text}"),
                    format!("my%20shop.{text}"),
                    format!("{text}:8443"),
                    format!("https://{text}"),
                    format!("*.{text}"),
                    format!("{}.{text}", "a".repeat(64)),
                    long_domain(MAX_DOMAIN_CHARS + 1),
                    String::new(),
                ]
                .into_iter()
                .map(|bad| (json!(bad), false, true))
                .collect();
                cases.extend(
                    [
                        "a.io".into(),
                        "xn--bcher-kva.example".into(),
                        "shop-1.example.co.uk".into(),
                        "xn--80ak6aa92e.xn--p1ai".into(),
                        "example.1com".into(),
                        format!("www.{text}"),
                        format!("my_app.{text}"),
                        format!("-www.{text}"),
                        format!("{}.{text}", "a".repeat(63)),
                        long_domain(MAX_DOMAIN_CHARS),
                    ]
                    .into_iter()
                    .map(|good| (json!(good), true, true)),
                );
                cases
            }
            (None, Some(CURRENCY)) => ["usd", "Eur", "US", "USDT", "US1", "€", ""]
                .into_iter()
                .map(|bad| (json!(bad), false, true))
                .chain([(json!("CHF"), true, true)])
                .collect(),
            (None, None) => return, // an enum: see enum_values_are_exact
            other => panic!("{at}: no cases for {other:?}"),
        };
        for (value, schema_ok, serde_ok) in cases.into_iter().filter(|(v, ..)| v != &part.value) {
            let what = format!("{value} at {}", part.pointer);
            let doc = with(doc, &part.pointer, value);
            expect(c, validator, &doc, schema_ok, serde_ok, &what);
        }
    });
}

/// Enum values are the snake_case variant names, nothing else.
#[test]
fn enum_values_are_exact() {
    each_part(|c, validator, doc, part| {
        if let (Some(_), Some(name)) = (part.schema.get("enum"), part.value.as_str()) {
            for bad in [
                pascal(name),
                name.to_uppercase(),
                "unknown".into(),
                String::new(),
            ] {
                let what = format!("{bad:?} at {}", part.pointer);
                expect(
                    c,
                    validator,
                    &with(doc, &part.pointer, json!(bad)),
                    false,
                    false,
                    &what,
                );
            }
        }
    });
}

/// Each file is standalone, so shared definitions are copied: the copies
/// must agree (their own descriptions may differ).
#[test]
fn shared_definitions_agree() {
    let mut seen: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for c in contracts() {
        let s = schema(&c.schema);
        let Some(defs) = s.get("$defs").and_then(Value::as_object) else {
            continue;
        };
        for (name, def) in defs {
            let def = without(def, "/description");
            match seen.get(name) {
                Some((first, earlier)) => {
                    assert_eq!(&def, earlier, "$defs/{name}: {} and {first}", c.schema)
                }
                None => {
                    seen.insert(name.clone(), (c.schema.clone(), def));
                }
            }
        }
    }
}

/// Each enum in a schema lists exactly the snake_case names serde writes.
#[test]
fn enums_list_serde_variant_names() {
    fn names<T: Serialize>(all: &[T]) -> BTreeSet<String> {
        all.iter()
            .map(|v| match serde_json::to_value(v).expect("serialises") {
                Value::String(s) => s,
                other => panic!("not a string: {other}"),
            })
            .collect()
    }
    let cases = [
        (
            EVENT_ENVELOPE,
            "/$defs/actor/properties/kind/enum",
            names(&actor_kinds()),
        ),
        (
            COMMAND_ENVELOPE,
            "/$defs/actor/properties/kind/enum",
            names(&actor_kinds()),
        ),
        (
            LICENSE_ISSUED_SCHEMA,
            "/$defs/license_kind/enum",
            names(&license_kinds()),
        ),
        (
            ISSUE_LICENSE_SCHEMA,
            "/properties/kind/enum",
            names(&license_kinds()),
        ),
        (
            COMMAND_OUTCOME,
            "/properties/status/enum",
            names(&outcome_statuses()),
        ),
        (
            LICENSE_KEY_RECOVERED_SCHEMA,
            "/$defs/recovery_method/enum",
            names(&recovery_methods()),
        ),
        (
            DEVICE_ACTIVATED_SCHEMA,
            "/$defs/license_kind/enum",
            names(&license_kinds()),
        ),
        (
            ACTIVATIONS_REVOKED_SCHEMA,
            "/$defs/revocation_reason/enum",
            names(&revocation_reasons()),
        ),
        (
            ACTIVATION_CLAIMS_SCHEMA,
            "/$defs/license_kind/enum",
            names(&license_kinds()),
        ),
        (
            DOMAIN_RELEASED_SCHEMA,
            "/$defs/release_reason/enum",
            names(&release_reasons()),
        ),
        (
            LEASES_REVOKED_SCHEMA,
            "/$defs/lease_end_reason/enum",
            names(&lease_end_reasons()),
        ),
        (
            UPSTREAM_CHECKED_SCHEMA,
            "/$defs/upstream_status/enum",
            names(&upstream_statuses()),
        ),
        (
            UPSTREAM_SYNCED_SCHEMA,
            "/$defs/sync_resource/enum",
            names(&sync_resources()),
        ),
        (
            GRANT_CLAIMS_SCHEMA,
            "/$defs/license_kind/enum",
            names(&license_kinds()),
        ),
        (
            GRANT_CLAIMS_SCHEMA,
            "/$defs/license_status/enum",
            names(&license_statuses()),
        ),
    ];
    for (path, pointer, expected) in cases {
        let s = schema(path);
        assert_eq!(
            string_set(s.pointer(pointer), pointer),
            expected,
            "{path} {pointer}"
        );
        for name in &expected {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is not snake_case"
            );
        }
    }
    assert_eq!(
        names(&actor_kinds()),
        ["api_key", "service", "scheduler", "system", "license"]
            .map(String::from)
            .into()
    );
}

// ---------------------------------------------------------------------------
// Per type: typed round trips and nested strictness.

/// The payload of each sample envelope matches the schema its type and
/// version name.
#[test]
fn event_payloads_match_their_schemas() {
    for e in event_envelopes() {
        let (_, aggregate) = event_type_info(&e.event_type);
        assert_eq!(e.aggregate_type, aggregate, "{}", e.event_type);
        let path = payload_schema_of(&e.event_type, &e.event_version);
        assert_valid(&validator(&path), &e.payload, &path);
    }
}

#[test]
fn event_envelope_is_strict() {
    let doc = to_values(&event_envelopes()).remove(0);
    let p = EVENT_ENVELOPE;
    type T = EventEnvelope;
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/actor/role", json!("admin")),
        "an unknown actor field",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/actor/kind", json!("robot")),
        "an unknown actor kind",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/actor/kind", json!("ApiKey")),
        "a PascalCase actor kind",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/actor/kind", json!("API_KEY")),
        "an upper-case actor kind",
    );
    assert_rejected_by_both::<T>(p, &without(&doc, "/actor/id"), "an actor without id");
    assert_rejected_by_both::<T>(p, &without(&doc, "/actor/kind"), "an actor without kind");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/event_id", json!("not-a-uuid")),
        "a malformed event_id",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/command_id", json!(17)),
        "a numeric command_id",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/occurred_at", json!("yesterday")),
        "a malformed occurred_at",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/recorded_at", json!("2026-13-01T00:00:00Z")),
        "month 13",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/sequence", json!(-1)),
        "a negative sequence",
    );
    assert_rejected_by_both::<T>(p, &with(&doc, "/sequence", json!("1")), "a string sequence");
    assert_rejected_by_both::<T>(
        p,
        &with(
            &doc,
            "/global_position",
            json!(9_223_372_036_854_775_808_u64),
        ),
        "a global_position past i64",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/causation_id", json!(5)),
        "a numeric causation_id",
    );
    assert_rejected_by_both::<T>(p, &with(&doc, "/hash", json!(null)), "a null hash");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/event_version", json!(1)),
        "a numeric event_version",
    );
}

#[test]
fn license_issued_is_strict() {
    let doc = to_values(&licenses_issued()).remove(0);
    let p = LICENSE_ISSUED_SCHEMA;
    type T = LicenseIssued;
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/kind", json!("perpetual")),
        "an unknown kind",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/kind", json!("Formal")),
        "a PascalCase kind",
    );
    // Unlike the command, the event always carries its features.
    assert_rejected_by_both::<T>(p, &without(&doc, "/features"), "no features");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/features", json!("a,b")),
        "features as a string",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/features", json!(["a", 2])),
        "a numeric feature",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/license_id", json!("01956a3e7b1c")),
        "a short license_id",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/expires_at", json!("2027-06-30")),
        "a date without time",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/issued_at", json!(1_772_360_130)),
        "a unix timestamp",
    );
}

#[test]
fn command_payloads_match_their_schemas() {
    for e in command_envelopes() {
        let path = command_payload_schema(&e.command_type);
        assert_valid(&validator(&path), &e.payload, &path);
    }
}

#[test]
fn command_envelope_is_strict() {
    let doc = to_values(&command_envelopes()).remove(0);
    let p = COMMAND_ENVELOPE;
    type T = CommandEnvelope;
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/actor/tenant", json!("t1")),
        "an unknown actor field",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/actor/kind", json!("user")),
        "an unknown actor kind",
    );
    assert_rejected_by_both::<T>(p, &without(&doc, "/actor/id"), "an actor without id");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/command_id", json!("")),
        "an empty command_id",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/issued_at", json!("2026-03-01T10:15:30")),
        "a timestamp without offset",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/correlation_id", json!(null)),
        "a null correlation_id",
    );
}

#[test]
fn command_outcome_is_strict() {
    let doc = to_values(&command_outcomes()).remove(0);
    let p = COMMAND_OUTCOME;
    type T = CommandOutcome;
    assert_rejected_by_both::<T>(p, &with(&doc, "/status", json!("ok")), "an unknown status");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/status", json!("Accepted")),
        "a PascalCase status",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/error/detail", json!("…")),
        "an unknown error field",
    );
    assert_rejected_by_both::<T>(
        p,
        &without(&doc, "/error/message"),
        "an error without message",
    );
    assert_rejected_by_both::<T>(p, &without(&doc, "/error/code"), "an error without code");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/error/kind", json!("teapot")),
        "an unknown error kind",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/error", json!("INVALID_PRODUCT")),
        "an error as a string",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/sequence", json!(-1)),
        "a negative sequence",
    );
    // The error's optional field may go.
    let cut = without(&doc, "/error/field");
    assert_valid(&validator(p), &cut, p);
    assert!(parses::<T>(&cut));
}

#[test]
fn issue_license_is_strict() {
    let doc = to_values(&issue_licenses()).remove(0);
    let p = ISSUE_LICENSE_SCHEMA;
    type T = IssueLicense;
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/kind", json!("perpetual")),
        "an unknown kind",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/kind", json!("TRIAL")),
        "an upper-case kind",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/license_id", json!(LICENSE_1)),
        "a license_id",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/features", json!("a,b")),
        "features as a string",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/expires_at", json!("next year")),
        "a malformed expires_at",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/customer", json!(["Acme"])),
        "a customer list",
    );
    // modules and features may be left out: serde defaults them to none.
    let bare = json!({"product": "cad-suite", "customer": "Jane Doe", "kind": "formal"});
    assert_valid(&validator(p), &bare, p);
    let spec: T = serde_json::from_value(bare).expect("modules, features and seats default");
    assert!(spec.modules.is_empty() && spec.features.is_empty() && spec.seats.is_empty());
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/seats", json!(["cdc-realtime"])),
        "seats as a list of features",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/seats/cdc-realtime", json!("2")),
        "seats as a string",
    );
}

/// Where the schemas are deliberately stricter than serde: explicit nulls
/// for omitted options, and value formats serde leaves to the domain.
#[test]
fn schemas_are_stricter_than_serde_where_documented() {
    let event = to_values(&event_envelopes()).remove(1);
    type E = EventEnvelope;
    assert_only_schema_rejects::<E>(
        EVENT_ENVELOPE,
        &with(&event, "/causation_id", json!(null)),
        "a null causation_id",
    );
    assert_only_schema_rejects::<E>(
        EVENT_ENVELOPE,
        &with(&event, "/sequence", json!(0)),
        "sequence 0",
    );
    assert_only_schema_rejects::<E>(
        EVENT_ENVELOPE,
        &with(&event, "/global_position", json!(0)),
        "global_position 0",
    );
    assert_only_schema_rejects::<E>(
        EVENT_ENVELOPE,
        &with(
            &event,
            "/hash",
            json!("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"),
        ),
        "an upper-case hash",
    );
    assert_only_schema_rejects::<E>(
        EVENT_ENVELOPE,
        &with(&event, "/prev_hash", json!("00")),
        "a short prev_hash",
    );
    assert_only_schema_rejects::<E>(
        EVENT_ENVELOPE,
        &with(
            &event,
            "/event_id",
            json!("01956A41-0C40-7000-8000-000000000002"),
        ),
        "an upper-case uuid",
    );
    assert_only_schema_rejects::<E>(
        EVENT_ENVELOPE,
        &with(
            &event,
            "/event_id",
            json!("01956a410c4070008000000000000002"),
        ),
        "a uuid without hyphens",
    );
    assert_only_schema_rejects::<E>(
        EVENT_ENVELOPE,
        &with(&event, "/payload", json!([1, 2])),
        "a non-object payload",
    );

    let command = to_values(&command_envelopes()).remove(1);
    assert_only_schema_rejects::<CommandEnvelope>(
        COMMAND_ENVELOPE,
        &with(&command, "/causation_id", json!(null)),
        "a null causation_id",
    );
    assert_only_schema_rejects::<CommandEnvelope>(
        COMMAND_ENVELOPE,
        &with(&command, "/payload", json!("IssueLicense")),
        "a non-object payload",
    );

    let outcome = to_values(&command_outcomes()).remove(1);
    assert_only_schema_rejects::<CommandOutcome>(
        COMMAND_OUTCOME,
        &with(&outcome, "/error", json!(null)),
        "a null error",
    );
    assert_only_schema_rejects::<CommandOutcome>(
        COMMAND_OUTCOME,
        &with(&outcome, "/sequence", json!(null)),
        "a null sequence",
    );

    let issued = to_values(&licenses_issued()).remove(1);
    assert_only_schema_rejects::<LicenseIssued>(
        LICENSE_ISSUED_SCHEMA,
        &with(&issued, "/edition", json!(null)),
        "a null edition",
    );
    assert_only_schema_rejects::<LicenseIssued>(
        LICENSE_ISSUED_SCHEMA,
        &with(&issued, "/expires_at", json!(null)),
        "a null expires_at",
    );

    let spec = to_values(&issue_licenses()).remove(1);
    assert_only_schema_rejects::<IssueLicense>(
        ISSUE_LICENSE_SCHEMA,
        &with(&spec, "/edition", json!(null)),
        "a null edition",
    );
    assert_only_schema_rejects::<IssueLicense>(
        ISSUE_LICENSE_SCHEMA,
        &with(&spec, "/expires_at", json!(null)),
        "a null expires_at",
    );

    // Components are as Fingerprint::components writes them: 1 to
    // MAX_COMPONENTS, named in lower case.
    let activated = to_values(&devices_activated()).remove(1);
    type D = DeviceActivated;
    assert_only_schema_rejects::<D>(
        DEVICE_ACTIVATED_SCHEMA,
        &with(&activated, "/client_time", json!(null)),
        "a null client_time",
    );
    assert_only_schema_rejects::<D>(
        DEVICE_ACTIVATED_SCHEMA,
        &with(&activated, "/components", json!({})),
        "no components",
    );
    let many: serde_json::Map<String, Value> = (0..=MAX_COMPONENTS)
        .map(|i| (format!("c{i}"), json!(DIGEST_1)))
        .collect();
    assert_only_schema_rejects::<D>(
        DEVICE_ACTIVATED_SCHEMA,
        &with(&activated, "/components", Value::Object(many)),
        "too many components",
    );
    assert_only_schema_rejects::<D>(
        DEVICE_ACTIVATED_SCHEMA,
        &with(&activated, "/components/Machine_ID", json!(DIGEST_2)),
        "an upper-case component name",
    );
    assert_only_schema_rejects::<D>(
        DEVICE_ACTIVATED_SCHEMA,
        &with(&activated, "/components/network card", json!(DIGEST_2)),
        "a component name with a space",
    );
    assert_only_schema_rejects::<D>(
        DEVICE_ACTIVATED_SCHEMA,
        &with(
            &activated,
            &format!("/components/{}", "x".repeat(33)),
            json!(DIGEST_2),
        ),
        "a component name of 33 characters",
    );

    let claims = to_values(&activation_claims()).remove(1);
    type A = ActivationClaims;
    assert_only_schema_rejects::<A>(
        ACTIVATION_CLAIMS_SCHEMA,
        &with(&claims, "/exp", json!(null)),
        "a null exp",
    );
    assert_only_schema_rejects::<A>(
        ACTIVATION_CLAIMS_SCHEMA,
        &with(&claims, "/event/sequence", json!(0)),
        "event sequence 0",
    );

    // Domain events record registrable domains and hosts as the
    // domain-binding service normalised them: lower-case ASCII (punycode),
    // at least two labels, at most 253 characters, never an IP address.
    let bound = to_values(&domains_bound()).remove(0);
    let p = &event_payload_schema(DOMAIN, DOMAIN_BOUND, V1);
    type B = DomainBound;
    for field in ["/domain", "/requested_host"] {
        let at = |v: &str| with(&bound, field, json!(v));
        assert_only_schema_rejects::<B>(p, &at("Example.COM"), "an upper-case domain");
        assert_only_schema_rejects::<B>(p, &at("bücher.example"), "a Unicode domain");
        assert_only_schema_rejects::<B>(p, &at("localhost"), "a single label");
        assert_only_schema_rejects::<B>(p, &at("192.0.2.1"), "an IP address");
        assert_only_schema_rejects::<B>(p, &at("example.0x7f"), "a hex IPv4 spelling");
        assert_only_schema_rejects::<B>(p, &at("example.com."), "a trailing dot");
        assert_only_schema_rejects::<B>(p, &at("example.com:443"), "a port");
        assert_only_schema_rejects::<B>(p, &at(""), "an empty domain");
        assert_only_schema_rejects::<B>(
            p,
            &at(&long_domain(MAX_DOMAIN_CHARS + 1)),
            "a domain of 254 characters",
        );
    }
    let changed = to_values(&domains_changed()).remove(1);
    let p = &event_payload_schema(DOMAIN, DOMAIN_CHANGED, V1);
    type C = DomainChanged;
    assert_only_schema_rejects::<C>(
        p,
        &with(&changed, "/from_domain", json!("Example.com")),
        "an upper-case from_domain",
    );
    // A change counts itself.
    assert_only_schema_rejects::<C>(
        p,
        &with(&changed, "/changes_used", json!(0)),
        "changes_used 0",
    );
    let charged = to_values(&domain_changes_charged()).remove(1);
    let p = &event_payload_schema(DOMAIN, DOMAIN_CHANGE_CHARGED, V1);
    type G = DomainChangeCharged;
    assert_only_schema_rejects::<G>(
        p,
        &with(&charged, "/change_number", json!(0)),
        "change_number 0",
    );
    assert_only_schema_rejects::<G>(
        p,
        &with(&charged, "/currency", json!("usd")),
        "a lower-case currency",
    );
    assert_only_schema_rejects::<G>(
        p,
        &with(&charged, "/currency", json!("US$")),
        "a currency symbol",
    );
    let reset = to_values(&domains_reset()).remove(1);
    assert_only_schema_rejects::<DomainReset>(
        &event_payload_schema(DOMAIN, DOMAIN_RESET, V1),
        &with(&reset, "/reason", json!("")),
        "an empty reason",
    );
    let released = to_values(&domains_released()).remove(2);
    assert_only_schema_rejects::<DomainReleased>(
        DOMAIN_RELEASED_SCHEMA,
        &with(&released, "/domain", json!("xn--bcher-kva.example.")),
        "a fully qualified domain with its root dot",
    );

    // Request bodies take any host the server can normalise, but not none
    // and not more than a domain name's 253 characters; a reset needs a
    // reason.
    let bind = to_values(&domain_bindings()).remove(1);
    assert_only_schema_rejects::<BindDomain>(
        BIND_DOMAIN_SCHEMA,
        &with(&bind, "/domain", json!("")),
        "an empty domain",
    );
    assert_only_schema_rejects::<BindDomain>(
        BIND_DOMAIN_SCHEMA,
        &with(&bind, "/domain", json!(chars(MAX_DOMAIN_CHARS + 1))),
        "254 characters",
    );
    let change = to_values(&domain_changes()).remove(1);
    assert_only_schema_rejects::<ChangeDomain>(
        &command_payload_schema(CHANGE_DOMAIN),
        &with(&change, "/domain", json!("")),
        "an empty domain",
    );
    let reset = to_values(&domain_resets()).remove(0);
    assert_only_schema_rejects::<ResetDomain>(
        &command_payload_schema(RESET_DOMAIN),
        &with(&reset, "/reason", json!("")),
        "an empty reason",
    );

    // Floating seats are 1 to 1000000 of a feature named by its code (1-64
    // characters of a-z, 0-9 and '-', not starting with '-'), as the License
    // aggregate accepts them.
    let spec = to_values(&issue_licenses()).remove(0);
    let issued = to_values(&licenses_issued()).remove(0);
    for (p, doc) in [
        (ISSUE_LICENSE_SCHEMA, &spec),
        (LICENSE_ISSUED_SCHEMA, &issued),
    ] {
        let seats = |pointer: &str, v: Value| with(doc, &format!("/seats/{pointer}"), v);
        let seat = |n: Value| seats("cdc-realtime", n);
        if p == ISSUE_LICENSE_SCHEMA {
            type T = IssueLicense;
            assert_only_schema_rejects::<T>(p, &seat(json!(0)), "no seats");
            assert_only_schema_rejects::<T>(p, &seat(json!(1_000_001)), "1000001 seats");
            assert_only_schema_rejects::<T>(p, &seats("CDC", json!(1)), "an upper-case code");
            assert_only_schema_rejects::<T>(
                p,
                &seats("-cdc", json!(1)),
                "a code with a leading '-'",
            );
            assert_only_schema_rejects::<T>(
                p,
                &seats(&"a".repeat(65), json!(1)),
                "a code of 65 characters",
            );
            assert_accepted_by_both::<T>(p, &seat(json!(1_000_000)), "1000000 seats");
            assert_accepted_by_both::<T>(
                p,
                &seats(&"a".repeat(64), json!(1)),
                "a code of 64 characters",
            );
            assert_rejected_by_both::<T>(p, &seat(json!(-1)), "negative seats");
        } else {
            type T = LicenseIssued;
            assert_only_schema_rejects::<T>(p, &seat(json!(0)), "no seats");
            assert_only_schema_rejects::<T>(p, &seat(json!(1_000_001)), "1000001 seats");
            assert_only_schema_rejects::<T>(
                p,
                &seats("cdc realtime", json!(1)),
                "a code with a space",
            );
            assert_accepted_by_both::<T>(p, &seat(json!(1_000_000)), "1000000 seats");
            assert_rejected_by_both::<T>(p, &seat(json!(4_294_967_296_u64)), "seats past u32");
        }
    }

    // Grant sync: a client draws from at most MAX_CLIENT_LICENSES licenses;
    // a lease holds 1 to MAX_QUANTITY seats and lives at least a second.
    let registered = to_values(&clients_registered()).remove(1);
    let too_many: Vec<String> = (0..=MAX_CLIENT_LICENSES)
        .map(|i| format!("01957a20-0000-7000-8000-{i:012x}"))
        .collect();
    let p = &event_payload_schema(GRANTS, CLIENT_REGISTERED, V1);
    type CR = ClientRegistered;
    let licenses = |v: Value| with(&registered, "/licenses", v);
    assert_only_schema_rejects::<CR>(p, &licenses(json!(too_many)), "101 licenses");
    assert_only_schema_rejects::<CR>(p, &licenses(json!([])), "no license");
    assert_only_schema_rejects::<CR>(
        p,
        &licenses(json!([LICENSE_1, LICENSE_1])),
        "a license twice",
    );
    assert_accepted_by_both::<CR>(
        p,
        &licenses(json!(too_many[..MAX_CLIENT_LICENSES])),
        "MAX_CLIENT_LICENSES licenses",
    );
    let granted = to_values(&leases_granted()).remove(1);
    type LG = LeaseGranted;
    let p = LEASE_GRANTED_SCHEMA;
    assert_only_schema_rejects::<LG>(p, &with(&granted, "/quantity", json!(0)), "no seats");
    assert_only_schema_rejects::<LG>(
        p,
        &with(&granted, "/quantity", json!(MAX_QUANTITY + 1)),
        "more than MAX_QUANTITY seats",
    );
    assert_only_schema_rejects::<LG>(p, &with(&granted, "/ttl_secs", json!(0)), "a TTL of 0");
    let checkout = to_values(&lease_checkouts()).remove(1);
    type CL = CheckoutLease;
    let p = CHECKOUT_LEASE_SCHEMA;
    assert_only_schema_rejects::<CL>(p, &with(&checkout, "/quantity", json!(0)), "no seats");
    assert_only_schema_rejects::<CL>(
        p,
        &with(&checkout, "/quantity", json!(MAX_QUANTITY + 1)),
        "more than MAX_QUANTITY seats",
    );
    assert_only_schema_rejects::<CL>(
        p,
        &with(&checkout, "/client_time", json!(null)),
        "a null client_time",
    );
    assert_only_schema_rejects::<SyncRequest>(
        SYNC_SCHEMA,
        &with(&to_values(&sync_requests())[0], "/cursor", json!(null)),
        "a null cursor",
    );

    // A grant document, like the events, names its domain as the
    // domain-binding service normalised it.
    let claims = to_values(&grant_claims()).remove(0);
    type T = GrantClaims;
    let p = GRANT_CLAIMS_SCHEMA;
    let grant = |pointer: &str, v: Value| with(&claims, &format!("/grants/0/{pointer}"), v);
    assert_only_schema_rejects::<T>(
        p,
        &grant("domain", json!("Example.COM")),
        "an upper-case domain",
    );
    assert_only_schema_rejects::<T>(p, &grant("domain", json!("192.0.2.1")), "an IP address");
    assert_only_schema_rejects::<T>(p, &grant("version", json!(0)), "version 0");
    assert_only_schema_rejects::<T>(p, &grant("lease_ttl_secs", json!(0)), "a lease TTL of 0");
    assert_only_schema_rejects::<T>(p, &grant("seats/data-access", json!(0)), "no seats");
    assert_only_schema_rejects::<T>(p, &grant("seats/Data_Access", json!(5)), "a malformed code");
    assert_only_schema_rejects::<T>(
        p,
        &with(&claims, "/leases/0/quantity", json!(0)),
        "a lease of no seats",
    );
    assert_only_schema_rejects::<T>(p, &grant("edition", json!(null)), "a null edition");
}

// ---------------------------------------------------------------------------
// Products, policies and the rest of the issuance payloads.

/// Every copy of `$defs/policy` gives `Policy::default()` as its defaults,
/// and `{}` is that policy.
#[test]
fn policy_defaults_are_serdes() {
    let expected = serde_json::to_value(Policy::default()).expect("serialises");
    let mut copies = BTreeSet::new();
    for c in contracts() {
        let s = schema(&c.schema);
        let Some(properties) = s
            .pointer("/$defs/policy/properties")
            .and_then(Value::as_object)
        else {
            continue;
        };
        let defaults: serde_json::Map<String, Value> = properties
            .iter()
            .map(|(field, p)| (field.clone(), p["default"].clone()))
            .collect();
        assert_eq!(Value::Object(defaults), expected, "{}", c.schema);
        copies.insert(c.schema);
    }
    let expected_copies: BTreeSet<String> = [
        event_payload_schema(ISSUANCE, PRODUCT_CREATED, V1),
        event_payload_schema(ISSUANCE, POLICY_SET, V1),
        event_payload_schema(ISSUANCE, LICENSE_ISSUED, V1),
        command_payload_schema(CREATE_PRODUCT),
        command_payload_schema(SET_POLICY),
    ]
    .into();
    assert_eq!(copies, expected_copies);
    let empty: Policy = serde_json::from_value(json!({})).expect("every field defaults");
    assert_eq!(empty, Policy::default());
}

#[test]
fn policies_may_be_partial() {
    let p = &command_payload_schema(SET_POLICY);
    assert_accepted_by_both::<SetPolicy>(p, &json!({"policy": {}}), "the default policy");
    assert_accepted_by_both::<SetPolicy>(
        p,
        &json!({"edition": "enterprise", "policy": {"max_activations": 5}}),
        "one field of a policy",
    );
    let issued = with(&to_values(&licenses_issued())[0], "/policy", json!({}));
    assert_accepted_by_both::<LicenseIssued>(
        &event_payload_schema(ISSUANCE, LICENSE_ISSUED, V1),
        &issued,
        "an empty policy",
    );
    let mut product = to_values(&product_specs()).remove(1);
    product["edition_policies"] = json!({"standard": {}, "enterprise": {"requires_domain": true}});
    assert_accepted_by_both::<CreateProduct>(
        &command_payload_schema(CREATE_PRODUCT),
        &product,
        "partial edition policies",
    );
}

/// A policy's numbers fit their Rust types, in the default policy and in an
/// edition's; values inside those ranges are the Product aggregate's to
/// check, except that the schema, too, wants fingerprint_min_matches,
/// floating_seats and lease_ttl_secs of at least 1.
#[test]
fn policy_numbers_stay_in_their_rust_types() {
    let doc = to_values(&product_specs()).remove(0);
    let p = &command_payload_schema(CREATE_PRODUCT);
    type T = CreateProduct;
    let counts = [
        "trial_days",
        "max_activations",
        "max_migrations",
        "offline_grace_hours",
        "free_domain_changes",
        "reclaim_after_days",
        "lease_grace_secs",
    ];
    for policy in ["/policy", "/edition_policies/enterprise"] {
        for field in counts {
            let at = |v: Value| with(&doc, &format!("{policy}/{field}"), v);
            assert_rejected_by_both::<T>(p, &at(json!(-1)), "a negative count");
            assert_rejected_by_both::<T>(p, &at(json!(4_294_967_296_u64)), "a count past u32");
            assert_rejected_by_both::<T>(p, &at(json!(1.5)), "a fractional count");
            assert_accepted_by_both::<T>(p, &at(json!(u32::MAX)), "u32::MAX");
            assert_accepted_by_both::<T>(p, &at(json!(0)), "zero");
        }
        let fee = |v: Value| with(&doc, &format!("{policy}/domain_change_fee_minor"), v);
        assert_rejected_by_both::<T>(
            p,
            &fee(json!(9_223_372_036_854_775_808_u64)),
            "a fee past i64",
        );
        assert_accepted_by_both::<T>(p, &fee(json!(i64::MIN)), "i64::MIN");
        // Refused by the aggregate, not by the shape.
        assert_accepted_by_both::<T>(p, &fee(json!(-1)), "a negative fee");
        let currency = with(&doc, &format!("{policy}/fee_currency"), json!("yuan"));
        assert_accepted_by_both::<T>(p, &currency, "a currency that is not ISO 4217");
        // At least one component must match; the schema says so too.
        let matches = |v: Value| with(&doc, &format!("{policy}/fingerprint_min_matches"), v);
        assert_rejected_by_both::<T>(p, &matches(json!(-1)), "a negative match count");
        assert_rejected_by_both::<T>(
            p,
            &matches(json!(4_294_967_296_u64)),
            "a match count past u32",
        );
        assert_rejected_by_both::<T>(p, &matches(json!(2.5)), "a fractional match count");
        assert_accepted_by_both::<T>(p, &matches(json!(u32::MAX)), "u32::MAX matches");
        assert_accepted_by_both::<T>(p, &matches(json!(1)), "one match");
        assert_only_schema_rejects::<T>(p, &matches(json!(0)), "no match needed");
        // A feature has at least one floating seat, and a lease lives at
        // least a second after its heartbeat.
        for field in ["floating_seats", "lease_ttl_secs"] {
            let at = |v: Value| with(&doc, &format!("{policy}/{field}"), v);
            assert_rejected_by_both::<T>(p, &at(json!(-1)), "a negative count");
            assert_rejected_by_both::<T>(p, &at(json!(4_294_967_296_u64)), "a count past u32");
            assert_rejected_by_both::<T>(p, &at(json!(1.5)), "a fractional count");
            assert_accepted_by_both::<T>(p, &at(json!(u32::MAX)), "u32::MAX");
            assert_accepted_by_both::<T>(p, &at(json!(1)), "one");
            assert_only_schema_rejects::<T>(p, &at(json!(0)), "zero");
        }
    }
}

/// Serde also reads a struct from a JSON array of its fields in order; the
/// schemas take objects only.
#[test]
fn positional_arrays_fail_the_schema_only() {
    assert_only_schema_rejects::<Reason>(
        &command_payload_schema(REVOKE_LICENSE),
        &json!(["Contract terminated"]),
        "a reason as an array",
    );
    assert_only_schema_rejects::<Empty>(EMPTY_SCHEMA, &json!([]), "an empty array");
    assert_only_schema_rejects::<LicenseReinstated>(
        &event_payload_schema(ISSUANCE, LICENSE_REINSTATED, V1),
        &json!([LICENSE_1, "2026-05-04T09:30:00Z"]),
        "an event as an array",
    );
    assert_only_schema_rejects::<DeviceSeen>(
        &event_payload_schema(ACTIVATION, DEVICE_SEEN, V1),
        &json!([
            ACTIVATION_1,
            LICENSE_1,
            "2026-04-10T08:00:03+08:00",
            "2026-04-10T00:00:04.25Z"
        ]),
        "an activation event as an array",
    );
    assert_only_schema_rejects::<ActivationClaims>(
        ACTIVATION_CLAIMS_SCHEMA,
        &with(
            &to_values(&activation_claims())[0],
            "/event",
            json!([ACTIVATIONS_AGGREGATE, LICENSE_1, 2, DIGEST_1]),
        ),
        "an event position as an array",
    );
}

/// The product seeds under `infra/seed` are valid CreateProduct payloads.
#[test]
fn seed_products_are_valid_create_product_payloads() {
    let dir = schemas_dir().join("../infra/seed");
    let path = command_payload_schema(CREATE_PRODUCT);
    let validator = validator(&path);
    let mut seeds = BTreeSet::new();
    json_files(&dir, &dir, &mut seeds);
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    for seed in seeds {
        let text = std::fs::read_to_string(dir.join(&seed)).expect("seed is readable");
        let doc: Value = serde_json::from_str(&text).expect("seed is JSON");
        assert_valid(&validator, &doc, &path);
        if let Err(e) = serde_json::from_value::<CreateProduct>(doc) {
            panic!("serde refuses seed {seed}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// Activation payloads and the activation file.

#[test]
fn device_activated_is_strict() {
    let doc = to_values(&devices_activated()).remove(0);
    let p = DEVICE_ACTIVATED_SCHEMA;
    type T = DeviceActivated;
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/kind", json!("Formal")),
        "a PascalCase kind",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/components", json!([DIGEST_1, DIGEST_2])),
        "components as a list",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/components/disk", json!(7)),
        "a numeric component digest",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/offline", json!("true")),
        "offline as a string",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/activation_id", json!("01956a3f1a2b")),
        "a short activation_id",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/client_time", json!(1_772_414_098)),
        "a unix client_time",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/activated_at", json!("2026-03-02")),
        "a date without time",
    );
}

#[test]
fn activation_events_are_strict() {
    let revoked = to_values(&activations_revoked()).remove(0);
    let p = ACTIVATIONS_REVOKED_SCHEMA;
    type R = ActivationsRevoked;
    assert_rejected_by_both::<R>(
        p,
        &with(&revoked, "/activation_ids", json!(ACTIVATION_1)),
        "one activation id, not a list",
    );
    assert_rejected_by_both::<R>(
        p,
        &with(&revoked, "/activation_ids/0", json!("seat-1")),
        "a malformed activation id",
    );
    assert_rejected_by_both::<R>(
        p,
        &with(&revoked, "/reason", json!("suspended")),
        "an unknown reason",
    );
    // No activations is a shape both take; the aggregate never writes it.
    assert_accepted_by_both::<R>(
        p,
        &with(&revoked, "/activation_ids", json!([])),
        "no activations",
    );

    let rollback = to_values(&clock_rollbacks()).remove(0);
    let p = &event_payload_schema(ACTIVATION, CLOCK_ROLLBACK_DETECTED, V1);
    type C = ClockRollbackDetected;
    assert_rejected_by_both::<C>(
        p,
        &with(&rollback, "/tolerance_secs", json!(-60)),
        "a negative tolerance",
    );
    assert_rejected_by_both::<C>(
        p,
        &with(&rollback, "/tolerance_secs", json!(4_294_967_296_u64)),
        "a tolerance past u32",
    );
    assert_accepted_by_both::<C>(
        p,
        &with(&rollback, "/tolerance_secs", json!(u32::MAX)),
        "u32::MAX seconds",
    );

    let migrated = to_values(&activations_migrated()).remove(0);
    let p = &event_payload_schema(ACTIVATION, ACTIVATION_MIGRATED, V1);
    type M = ActivationMigrated;
    assert_rejected_by_both::<M>(
        p,
        &with(&migrated, "/migrations_used", json!(1.5)),
        "a fractional count",
    );
    assert_rejected_by_both::<M>(
        p,
        &without(&migrated, "/from_activation_id"),
        "no previous activation",
    );

    let started = to_values(&trials_started()).remove(0);
    let p = &event_payload_schema(ACTIVATION, TRIAL_STARTED, V1);
    type S = TrialStarted;
    // Unlike the activation file, the event always carries its features.
    assert_rejected_by_both::<S>(p, &without(&started, "/features"), "no features");
    assert_rejected_by_both::<S>(
        p,
        &with(&started, "/features", json!([{"code": "watermark"}])),
        "features as grants",
    );
}

#[test]
fn activation_claims_are_strict() {
    let doc = to_values(&activation_claims()).remove(0);
    let p = ACTIVATION_CLAIMS_SCHEMA;
    type T = ActivationClaims;
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/iat", json!("2026-03-02T01:15:02Z")),
        "an RFC 3339 iat",
    );
    assert_rejected_by_both::<T>(p, &with(&doc, "/nbf", json!(1.5)), "a fractional nbf");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/exp", json!(9_223_372_036_854_775_808_u64)),
        "an exp past i64",
    );
    assert_accepted_by_both::<T>(
        p,
        &with(&doc, "/nbf", json!(i64::MIN)),
        "i64::MIN (JOSE libraries judge the time)",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/features", json!(["datasource-mgmt"])),
        "features as codes",
    );
    assert_rejected_by_both::<T>(
        p,
        &without(&doc, "/features/0/code"),
        "a grant without code",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/features/1/expires_at", json!(1_798_761_599)),
        "a NumericDate expires_at",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/event/sequence", json!(-1)),
        "a negative sequence",
    );
    assert_rejected_by_both::<T>(p, &without(&doc, "/event/hash"), "an event without hash");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/kind", json!("TEMPORARY")),
        "an upper-case kind",
    );
    // Features may be left out: serde defaults them to none.
    let bare = without(&to_values(&activation_claims())[1], "/features");
    assert_valid(&validator(p), &bare, p);
    let claims: T = serde_json::from_value(bare).expect("features default");
    assert!(claims.features.is_empty());
}

/// The sample devices are what the fingerprint functions make: the
/// fingerprint is the digest of the components, and a replaced disk keeps
/// the device.
#[test]
fn activation_samples_are_consistent() {
    for e in devices_activated() {
        assert_eq!(e.fingerprint, digest_of(&e.components));
    }
    for e in activations_migrated() {
        assert_eq!(e.fingerprint, digest_of(&e.components));
    }
    for e in trials_started() {
        assert_eq!(e.fingerprint, digest_of(&e.components));
        assert_eq!(e.trial_id, trial_id(&e.product, &e.components));
    }
    let min = Policy::default().fingerprint_min_matches;
    assert!(same_device(&workstation(), &workstation_new_disk(), min));
    assert!(!same_device(&workstation(), &container(), min));
}

// ---------------------------------------------------------------------------
// Domain-binding payloads.

#[test]
fn domain_events_are_strict() {
    let bound = to_values(&domains_bound()).remove(0);
    let p = &event_payload_schema(DOMAIN, DOMAIN_BOUND, V1);
    type B = DomainBound;
    assert_rejected_by_both::<B>(
        p,
        &with(
            &bound,
            "/follow_up",
            json!("Point the DNS A record at your server"),
        ),
        "follow_up as a string",
    );
    assert_rejected_by_both::<B>(
        p,
        &with(&bound, "/follow_up", json!([{"dns": "A"}])),
        "a follow-up as an object",
    );
    // Always carried; empty is a shape both take, though the service always
    // has something to ask.
    assert_rejected_by_both::<B>(p, &without(&bound, "/follow_up"), "no follow_up");
    assert_accepted_by_both::<B>(p, &with(&bound, "/follow_up", json!([])), "no follow-ups");
    assert_rejected_by_both::<B>(
        p,
        &with(&bound, "/domain", json!(["example.com"])),
        "a domain list",
    );
    assert_rejected_by_both::<B>(
        p,
        &with(&bound, "/license_id", json!("01956a3e7b1c")),
        "a short license_id",
    );
    assert_rejected_by_both::<B>(
        p,
        &with(&bound, "/bound_at", json!("2026-05-06")),
        "a date without time",
    );
    // Names the service writes, underscores and all.
    for domain in ["a.io", "xn--80ak6aa92e.xn--p1ai", "shop-1.example.co.uk"] {
        assert_accepted_by_both::<B>(p, &with(&bound, "/domain", json!(domain)), domain);
    }
    for host in ["my_app.example.com", "_dmarc.example.com"] {
        assert_accepted_by_both::<B>(p, &with(&bound, "/requested_host", json!(host)), host);
    }

    let changed = to_values(&domains_changed()).remove(0);
    let p = &event_payload_schema(DOMAIN, DOMAIN_CHANGED, V1);
    type C = DomainChanged;
    let used = |v: Value| with(&changed, "/changes_used", v);
    assert_rejected_by_both::<C>(p, &used(json!(-1)), "a negative count");
    assert_rejected_by_both::<C>(p, &used(json!(4_294_967_296_u64)), "a count past u32");
    assert_rejected_by_both::<C>(p, &used(json!(1.5)), "a fractional count");
    assert_accepted_by_both::<C>(p, &used(json!(u32::MAX)), "u32::MAX changes");
    assert_rejected_by_both::<C>(
        p,
        &with(&changed, "/free", json!("false")),
        "free as a string",
    );
    assert_rejected_by_both::<C>(p, &without(&changed, "/from_domain"), "no from_domain");

    let charged = to_values(&domain_changes_charged()).remove(0);
    let p = &event_payload_schema(DOMAIN, DOMAIN_CHANGE_CHARGED, V1);
    type G = DomainChangeCharged;
    let amount = |v: Value| with(&charged, "/amount_minor", v);
    assert_rejected_by_both::<G>(
        p,
        &amount(json!(9_223_372_036_854_775_808_u64)),
        "an amount past i64",
    );
    assert_rejected_by_both::<G>(p, &amount(json!(49.5)), "a fractional amount");
    assert_rejected_by_both::<G>(p, &amount(json!("4900")), "an amount as a string");
    assert_accepted_by_both::<G>(p, &amount(json!(i64::MAX)), "i64::MAX");
    // The value is the policy's, judged by the aggregate, not by the shape.
    assert_accepted_by_both::<G>(p, &amount(json!(-1)), "a negative amount");
    let number = |v: Value| with(&charged, "/change_number", v);
    assert_rejected_by_both::<G>(p, &number(json!(-4)), "a negative change number");
    assert_rejected_by_both::<G>(
        p,
        &number(json!(4_294_967_296_u64)),
        "a change number past u32",
    );
    assert_accepted_by_both::<G>(p, &number(json!(u32::MAX)), "u32::MAX");
    assert_rejected_by_both::<G>(
        p,
        &with(&charged, "/currency", json!(978)),
        "a numeric ISO 4217 code",
    );

    let reset = to_values(&domains_reset()).remove(0);
    let p = &event_payload_schema(DOMAIN, DOMAIN_RESET, V1);
    type R = DomainReset;
    assert_rejected_by_both::<R>(
        p,
        &with(&reset, "/reason", json!(["moved"])),
        "a reason list",
    );
    assert_rejected_by_both::<R>(p, &without(&reset, "/domain"), "no domain");

    let released = to_values(&domains_released()).remove(0);
    let p = DOMAIN_RELEASED_SCHEMA;
    type L = DomainReleased;
    assert_rejected_by_both::<L>(
        p,
        &with(&released, "/reason", json!("license_suspended")),
        "a suspension (it keeps the domain)",
    );
    assert_rejected_by_both::<L>(
        p,
        &with(&released, "/reason", json!("trial_ended")),
        "an activation revocation reason",
    );
    assert_rejected_by_both::<L>(
        p,
        &with(&released, "/reason", json!("LICENSE_REVOKED")),
        "an upper-case reason",
    );
}

#[test]
fn domain_commands_are_strict() {
    let bind = to_values(&domain_bindings()).remove(0);
    let p = BIND_DOMAIN_SCHEMA;
    type B = BindDomain;
    assert_rejected_by_both::<B>(
        p,
        &with(&bind, "/domain", json!(["example.com", "example.org"])),
        "a domain list",
    );
    assert_rejected_by_both::<B>(
        p,
        &with(&bind, "/license_id", json!(LICENSE_1)),
        "a license_id (it is in the path)",
    );
    assert_rejected_by_both::<B>(
        p,
        &with(&bind, "/accept_fee", json!(true)),
        "accept_fee on a binding",
    );
    // Free text: the server normalises it, or rejects it with its own code.
    for host in [
        "https://Shop.Example.COM/path",
        "bücher.example",
        "localhost",
        " example.com ",
    ] {
        assert_accepted_by_both::<B>(p, &with(&bind, "/domain", json!(host)), host);
    }
    assert_accepted_by_both::<B>(
        p,
        &with(&bind, "/domain", json!(chars(MAX_DOMAIN_CHARS))),
        "253 characters",
    );

    let change = to_values(&domain_changes()).remove(0);
    let p = &command_payload_schema(CHANGE_DOMAIN);
    type C = ChangeDomain;
    assert_rejected_by_both::<C>(
        p,
        &with(&change, "/accept_fee", json!("yes")),
        "accept_fee as a string",
    );
    assert_rejected_by_both::<C>(
        p,
        &with(&change, "/accept_fee", json!(1)),
        "accept_fee as a number",
    );
    assert_rejected_by_both::<C>(
        p,
        &with(&change, "/from_domain", json!("example.com")),
        "a from_domain",
    );
    // accept_fee may be left out: serde defaults it to false.
    let bare = json!({"domain": "portal.example.org"});
    assert_valid(&validator(p), &bare, p);
    let spec: C = serde_json::from_value(bare).expect("accept_fee defaults");
    assert!(!spec.accept_fee);

    let reset = to_values(&domain_resets()).remove(0);
    let p = &command_payload_schema(RESET_DOMAIN);
    type R = ResetDomain;
    assert_rejected_by_both::<R>(p, &json!({}), "no reason");
    assert_rejected_by_both::<R>(
        p,
        &with(&reset, "/domain", json!("example.com")),
        "a domain",
    );
    assert_only_schema_rejects::<R>(p, &json!(["moved"]), "a reason as an array");
}

/// The sample bindings are what the DomainBinding aggregate writes: a
/// requested host is the domain or under it, a change moves to another
/// domain, a change past the free ones is charged under its own number, and
/// a change's request names its host and accepts the fee when it is not
/// free.
#[test]
fn domain_samples_are_consistent() {
    let under = |host: &str, domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    for e in domains_bound() {
        assert!(under(&e.requested_host, &e.domain), "{e:?}");
        assert_eq!(e.follow_up, follow_up(&e.domain));
    }
    let charges = domain_changes_charged();
    for (e, request) in domains_changed().into_iter().zip(domain_changes()) {
        assert!(under(&e.requested_host, &e.domain), "{e:?}");
        assert_ne!(e.from_domain, e.domain);
        assert_eq!(e.follow_up, follow_up(&e.domain));
        assert!(e.changes_used >= 1);
        assert_eq!(request.domain.to_ascii_lowercase(), e.requested_host);
        assert_eq!(request.accept_fee, !e.free);
        let charged = charges
            .iter()
            .any(|g| g.license_id == e.license_id && g.change_number == e.changes_used);
        assert_eq!(charged, !e.free, "{e:?}");
    }
    for e in domains_reset() {
        assert!(!e.reason.is_empty());
    }
}

// ---------------------------------------------------------------------------
// Grant-sync payloads, request bodies and the grant document.

#[test]
fn grant_events_are_strict() {
    let registered = to_values(&clients_registered()).remove(0);
    let p = &event_payload_schema(GRANTS, CLIENT_REGISTERED, V1);
    type R = ClientRegistered;
    assert_rejected_by_both::<R>(
        p,
        &with(&registered, "/licenses", json!(LICENSE_1)),
        "one license, not a list",
    );
    assert_rejected_by_both::<R>(
        p,
        &with(&registered, "/licenses/0", json!("LIC-0142")),
        "a malformed license id",
    );
    // The allowlist is always written; an event without it is not one.
    assert_rejected_by_both::<R>(p, &without(&registered, "/allowlist"), "no allowlist");

    let rollback = to_values(&client_clock_rollbacks()).remove(0);
    let p = &event_payload_schema(GRANTS, CLIENT_CLOCK_ROLLBACK_DETECTED, V1);
    type C = ClientClockRollbackDetected;
    let tolerance = |v: Value| with(&rollback, "/tolerance_secs", v);
    assert_rejected_by_both::<C>(p, &tolerance(json!(-1)), "a negative tolerance");
    assert_rejected_by_both::<C>(
        p,
        &tolerance(json!(4_294_967_296_u64)),
        "a tolerance past u32",
    );
    assert_accepted_by_both::<C>(p, &tolerance(json!(u32::MAX)), "u32::MAX seconds");

    let granted = to_values(&leases_granted()).remove(0);
    let p = LEASE_GRANTED_SCHEMA;
    type G = LeaseGranted;
    let quantity = |v: Value| with(&granted, "/quantity", v);
    assert_rejected_by_both::<G>(p, &quantity(json!(-1)), "a negative quantity");
    assert_rejected_by_both::<G>(
        p,
        &quantity(json!(4_294_967_296_u64)),
        "a quantity past u32",
    );
    assert_rejected_by_both::<G>(p, &quantity(json!(1.5)), "a fractional quantity");
    assert_accepted_by_both::<G>(p, &quantity(json!(MAX_QUANTITY)), "MAX_QUANTITY");
    assert_rejected_by_both::<G>(
        p,
        &with(&granted, "/features", json!("datasource-mgmt,data-access")),
        "features as a string",
    );
    // No grace is a policy's choice.
    assert_accepted_by_both::<G>(p, &with(&granted, "/grace_secs", json!(0)), "no grace");

    let revoked = to_values(&leases_revoked()).remove(0);
    let p = LEASES_REVOKED_SCHEMA;
    type L = LeasesRevoked;
    assert_rejected_by_both::<L>(
        p,
        &with(&revoked, "/lease_ids", json!(LEASE_1)),
        "one lease id, not a list",
    );
    assert_rejected_by_both::<L>(
        p,
        &with(&revoked, "/reason", json!("trial_ended")),
        "an activation revocation reason",
    );
    assert_rejected_by_both::<L>(
        p,
        &with(&revoked, "/reason", json!("lease_expired")),
        "an expiry (it is LeaseExpired)",
    );
    // No leases is a shape both take; the aggregate never writes it.
    assert_accepted_by_both::<L>(p, &with(&revoked, "/lease_ids", json!([])), "no leases");

    let checked = to_values(&upstreams_checked()).remove(0);
    let p = UPSTREAM_CHECKED_SCHEMA;
    type K = UpstreamChecked;
    let http = |v: Value| with(&checked, "/http_status", v);
    assert_rejected_by_both::<K>(p, &http(json!(65_536)), "an HTTP status past u16");
    assert_rejected_by_both::<K>(p, &http(json!(-1)), "a negative HTTP status");
    assert_rejected_by_both::<K>(p, &http(json!("200 OK")), "an HTTP status line");
    assert_rejected_by_both::<K>(
        p,
        &with(&checked, "/latency_ms", json!(-84)),
        "a negative latency",
    );
    assert_rejected_by_both::<K>(
        p,
        &with(&checked, "/status", json!("timeout")),
        "an unknown status",
    );

    let synced = to_values(&upstreams_synced()).remove(0);
    let p = UPSTREAM_SYNCED_SCHEMA;
    type S = UpstreamSynced;
    // A sync request may ask for "all"; what was synced is one resource.
    assert_rejected_by_both::<S>(p, &with(&synced, "/resource", json!("all")), "all");
    assert_rejected_by_both::<S>(
        p,
        &with(&synced, "/resource", json!(["catalog"])),
        "a resource list",
    );
    assert_rejected_by_both::<S>(p, &with(&synced, "/items", json!(-3)), "negative items");

    let product = to_values(&upstream_products_imported()).remove(0);
    let p = &event_payload_schema(GRANTS, UPSTREAM_PRODUCT_IMPORTED, V1);
    type P = UpstreamProductImported;
    assert_rejected_by_both::<P>(
        p,
        &with(&product, "/product/policy", json!({})),
        "a policy (the catalog serves none)",
    );
    assert_rejected_by_both::<P>(
        p,
        &without(&product, "/product/bundles/0/requires"),
        "a module without requires",
    );
    assert_rejected_by_both::<P>(
        p,
        &with(&product, "/product/features", json!(["datasource-mgmt"])),
        "features as codes",
    );

    let imported = to_values(&upstream_licenses_imported()).remove(0);
    let p = &event_payload_schema(GRANTS, UPSTREAM_LICENSE_IMPORTED, V1);
    type I = UpstreamLicenseImported;
    assert_rejected_by_both::<I>(
        p,
        &with(&imported, "/grant/status", json!("Active")),
        "a PascalCase status",
    );
    assert_rejected_by_both::<I>(
        p,
        &with(&imported, "/grant/seats", json!([["datasource-mgmt", 20]])),
        "seats as pairs",
    );
    assert_rejected_by_both::<I>(
        p,
        &with(&imported, "/grant/version", json!(-1)),
        "a negative version",
    );
    assert_rejected_by_both::<I>(p, &without(&imported, "/grant/seats"), "no seats");
    assert_accepted_by_both::<I>(
        p,
        &with(&imported, "/grant/seats", json!({})),
        "no seats of any feature",
    );
    // Modules may be left out: serde defaults them to none.
    let bare = without(&imported, "/grant/modules");
    assert_valid(&validator(p), &bare, p);
    let e: I = serde_json::from_value(bare).expect("modules default");
    assert!(e.grant.modules.is_empty());

    let revocations = to_values(&upstream_revocations_imported()).remove(0);
    let p = &event_payload_schema(GRANTS, UPSTREAM_REVOCATIONS_IMPORTED, V1);
    type V = UpstreamRevocationsImported;
    assert_rejected_by_both::<V>(
        p,
        &with(&revocations, "/revocations", json!([ACTIVATION_1])),
        "revocations as activation ids",
    );
    assert_rejected_by_both::<V>(
        p,
        &without(&revocations, "/revocations/0/activation_id"),
        "a revocation without activation",
    );
    // The reason is the upstream's text: uninstalled, migrated, or the
    // reason of a mass revocation.
    assert_accepted_by_both::<V>(
        p,
        &with(&revocations, "/revocations/0/reason", json!("trial_ended")),
        "a mass revocation's reason",
    );
}

#[test]
fn grant_commands_are_strict() {
    let register = to_values(&client_registrations()).remove(0);
    let p = &command_payload_schema(REGISTER_CLIENT);
    type R = RegisterClient;
    assert_rejected_by_both::<R>(p, &without(&register, "/licenses"), "no licenses");
    assert_rejected_by_both::<R>(
        p,
        &with(&register, "/key_id", json!(CLIENT_KEY_1)),
        "a key_id (the server makes the key)",
    );
    assert_rejected_by_both::<R>(
        p,
        &with(&register, "/allowlist", json!("10.20.0.0/16")),
        "an allowlist as a string",
    );
    // allowlist may be left out: serde defaults it to anywhere.
    let bare = json!({"name": "ci", "licenses": [LICENSE_2]});
    assert_valid(&validator(p), &bare, p);
    let spec: R = serde_json::from_value(bare).expect("allowlist defaults");
    assert!(spec.allowlist.is_empty());

    let checkout = to_values(&lease_checkouts()).remove(0);
    let p = CHECKOUT_LEASE_SCHEMA;
    type C = CheckoutLease;
    assert_rejected_by_both::<C>(
        p,
        &with(
            &checkout,
            "/feature",
            json!(["datasource-mgmt", "data-access"]),
        ),
        "a feature list",
    );
    assert_rejected_by_both::<C>(
        p,
        &with(&checkout, "/quantity", json!(-2)),
        "a negative quantity",
    );
    assert_rejected_by_both::<C>(
        p,
        &with(&checkout, "/quantity", json!("2")),
        "a quantity as a string",
    );
    assert_rejected_by_both::<C>(
        p,
        &with(&checkout, "/client_time", json!(1_783_065_600)),
        "a unix client_time",
    );
    assert_rejected_by_both::<C>(
        p,
        &with(&checkout, "/client_id", json!(CLIENT_1)),
        "a client_id (the credentials name it)",
    );
    // quantity may be left out: serde defaults it to one seat.
    let bare = json!({"license_id": LICENSE_1, "feature": "cdc-realtime"});
    assert_valid(&validator(p), &bare, p);
    let spec: C = serde_json::from_value(bare).expect("quantity defaults");
    assert_eq!(spec.quantity, 1);

    let upstream = to_values(&upstream_registrations()).remove(0);
    let p = &command_payload_schema(REGISTER_UPSTREAM);
    type U = RegisterUpstream;
    assert_rejected_by_both::<U>(p, &without(&upstream, "/secret"), "no secret");
    assert_rejected_by_both::<U>(
        p,
        &with(&upstream, "/secret_digest", json!(DIGEST_1)),
        "a digest instead of the secret",
    );
    assert_rejected_by_both::<U>(
        p,
        &with(&upstream, "/member_id", json!("member-1")),
        "a malformed member_id",
    );
    assert_rejected_by_both::<U>(
        p,
        &with(&upstream, "/price_protection", json!("yes")),
        "price_protection as a string",
    );
    let bare = without(&without(&upstream, "/price_protection"), "/remark");
    assert_valid(&validator(p), &bare, p);
    let spec: U = serde_json::from_value(bare).expect("price_protection defaults");
    assert!(!spec.price_protection);

    let sync = to_values(&upstream_syncs()).remove(0);
    let p = &command_payload_schema(SYNC_UPSTREAM);
    type S = SyncUpstream;
    assert_rejected_by_both::<S>(p, &json!({}), "no resource");
    assert_rejected_by_both::<S>(
        p,
        &with(&sync, "/resource", json!(["catalog", "licenses"])),
        "a resource list",
    );
    // Free text: the Upstream aggregate knows the resources.
    for resource in ["all", "catalog", "licenses", "revocations", "everything"] {
        assert_accepted_by_both::<S>(p, &with(&sync, "/resource", json!(resource)), resource);
    }
}

#[test]
fn grant_request_bodies_are_strict() {
    let sync = to_values(&sync_requests()).remove(0);
    let p = SYNC_SCHEMA;
    type S = SyncRequest;
    assert_rejected_by_both::<S>(p, &with(&sync, "/wait_ms", json!(-1)), "a negative wait");
    assert_rejected_by_both::<S>(p, &with(&sync, "/wait_ms", json!(2.5)), "a fractional wait");
    assert_accepted_by_both::<S>(p, &with(&sync, "/wait_ms", json!(u64::MAX)), "u64::MAX");
    assert_accepted_by_both::<S>(p, &with(&sync, "/wait_ms", json!(0)), "no wait");
    assert_rejected_by_both::<S>(p, &with(&sync, "/cursor", json!(913)), "a numeric cursor");
    assert_rejected_by_both::<S>(
        p,
        &with(&sync, "/client_id", json!(CLIENT_1)),
        "a client_id (the credentials name it)",
    );
    assert_accepted_by_both::<S>(p, &json!({}), "a first sync");

    let beat = to_values(&heartbeats()).remove(0);
    let p = HEARTBEAT_SCHEMA;
    type H = Heartbeat;
    assert_rejected_by_both::<H>(
        p,
        &with(&beat, "/client_time", json!("16:04:59")),
        "a time without date",
    );
    assert_rejected_by_both::<H>(
        p,
        &with(&beat, "/lease_id", json!(LEASE_1)),
        "a lease_id (it is in the path)",
    );
    assert_accepted_by_both::<H>(p, &json!({}), "no client time");
}

#[test]
fn grant_claims_are_strict() {
    let doc = to_values(&grant_claims()).remove(0);
    let p = GRANT_CLAIMS_SCHEMA;
    type T = GrantClaims;
    // Unlike an activation file, a grant document always expires.
    assert_rejected_by_both::<T>(p, &without(&doc, "/exp"), "no exp");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/iat", json!("2026-07-03T08:05:00Z")),
        "an RFC 3339 iat",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/exp", json!(9_223_372_036_854_775_808_u64)),
        "an exp past i64",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/valid_until", json!(1_783_325_100)),
        "a NumericDate valid_until",
    );
    assert_rejected_by_both::<T>(p, &without(&doc, "/leases"), "no leases");
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/grants/0/kind", json!("perpetual")),
        "an unknown kind",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/grants/0/status", json!("cancelled")),
        "an unknown status",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/grants/0/seats/datasource-mgmt", json!(-1)),
        "negative seats",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(
            &doc,
            "/grants/0/seats/datasource-mgmt",
            json!(4_294_967_296_u64),
        ),
        "seats past u32",
    );
    assert_rejected_by_both::<T>(
        p,
        &with(&doc, "/leases/0/deadline", json!("2026-07-03T08:20:00")),
        "a deadline without offset",
    );
    assert_rejected_by_both::<T>(
        p,
        &without(&doc, "/leases/0/features"),
        "a lease without features",
    );
}

/// The grant-sync samples are what its aggregates write: a module's lease
/// holds seats of the features the module requires, a lease ends after its
/// deadline plus grace, an upstream keeps its secret's digest, a grant
/// document's NumericDates are its times and its subject is its client, and
/// a grant's seats are the license's own, else the policy's.
#[test]
fn grant_samples_are_consistent() {
    let products = product_specs();
    let granted = leases_granted();
    for l in &granted {
        assert!((1..=MAX_QUANTITY).contains(&l.quantity), "{}", l.lease_id);
        let module = products
            .iter()
            .flat_map(|p| &p.bundles)
            .find(|b| b.code == l.feature);
        match module {
            Some(b) => assert_eq!(l.features, b.requires, "{}", l.lease_id),
            None => assert_eq!(
                l.features,
                std::slice::from_ref(&l.feature),
                "{}",
                l.lease_id
            ),
        }
    }
    for e in leases_expired() {
        let g = granted
            .iter()
            .find(|g| g.lease_id == e.lease_id)
            .expect("an expired lease was granted");
        assert_eq!((g.license_id, g.client_id), (e.license_id, e.client_id));
        assert!(e.deadline >= g.granted_at + chrono::Duration::seconds(g.ttl_secs.into()));
        assert!(e.expired_at >= e.deadline + chrono::Duration::seconds(g.grace_secs.into()));
    }
    for e in leases_released() {
        let g = granted
            .iter()
            .find(|g| g.lease_id == e.lease_id)
            .expect("a released lease was granted");
        assert_eq!((g.license_id, g.client_id), (e.license_id, e.client_id));
        assert!(e.released_at > g.granted_at);
    }
    for (e, r) in upstreams_registered()
        .into_iter()
        .zip(upstream_registrations())
    {
        assert_eq!(e.secret_digest, secret_digest(&r.secret));
        assert_ne!(e.secret_digest, r.secret);
    }
    for c in grant_claims() {
        assert_eq!(c.sub, c.client_id.to_string());
        assert_eq!(c.iat, c.server_time.timestamp());
        assert_eq!(c.exp, c.valid_until.timestamp());
        assert!(c.nbf <= c.iat && c.iat <= c.exp);
        for l in &c.leases {
            assert!(c.grants.iter().any(|g| g.license_id == l.license_id));
            assert!(l.deadline > c.server_time);
        }
    }
    // The enterprise license as issued, under its edition's policy.
    let issued = &licenses_issued()[0];
    let policy = issued.policy.clone().expect("recorded");
    let grant = &grants()[0];
    assert_eq!(grant.license_id, issued.license_id);
    assert_eq!(grant.features, issued.features);
    for f in &grant.features {
        let expected = issued
            .seats
            .get(f)
            .copied()
            .unwrap_or(policy.floating_seats);
        assert_eq!(grant.seats.get(f), Some(&expected), "{f}");
    }
    assert_eq!(
        (
            grant.offline_grace_hours,
            grant.lease_ttl_secs,
            grant.lease_grace_secs
        ),
        (
            policy.offline_grace_hours,
            policy.lease_ttl_secs,
            policy.lease_grace_secs
        )
    );
}

#[test]
fn a_receipt_is_never_read_as_an_activation_file_nor_a_file_as_a_receipt() {
    for receipt in to_values(&receipt_claims()) {
        assert!(serde_json::from_value::<ActivationClaims>(receipt).is_err());
    }
    for file in to_values(&activation_claims()) {
        assert!(serde_json::from_value::<ReceiptClaims>(file).is_err());
    }
}
