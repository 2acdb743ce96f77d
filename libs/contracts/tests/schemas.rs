//! The JSON Schemas under `schemas/events` and `schemas/commands` against the
//! serde types they describe: every instance serde writes is valid, and every
//! document the schema rejects for shape (unknown field, missing field, wrong
//! enum value) serde rejects too.
//!
//! Every schema file must be listed in [`contracts`]; the generic tests run
//! over that list and `every_schema_file_is_covered` fails for a file that is
//! not in it.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use contracts::issuance::{
    IssueLicense, LicenseIssued, LicenseKind, ISSUE_LICENSE, LICENSE_AGGREGATE, LICENSE_ISSUED,
    LICENSE_ISSUED_V1,
};
use contracts::{
    Actor, ActorKind, CommandEnvelope, CommandOutcome, EventEnvelope, OutcomeError, OutcomeStatus,
};
use jsonschema::Validator;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The schema files and the types they describe.

const EVENT_ENVELOPE: &str = "events/envelope.v1.json";
const LICENSE_ISSUED_SCHEMA: &str = "events/issuance/LicenseIssued.v1.json";
const COMMAND_ENVELOPE: &str = "commands/envelope.v1.json";
const COMMAND_OUTCOME: &str = "commands/outcome.v1.json";
const ISSUE_LICENSE_SCHEMA: &str = "commands/issuance/IssueLicense.v1.json";

/// Folders under `schemas/` whose every `*.json` must be covered here.
const SCHEMA_DIRS: &[&str] = &["events", "commands"];

struct Contract {
    /// Path of the schema under `schemas/`.
    schema: &'static str,
    /// Serialised instances: the first sets every optional field, the
    /// second none.
    samples: fn() -> Vec<Value>,
    /// Whether serde accepts a document as the Rust type.
    parses: fn(&Value) -> bool,
}

fn contracts() -> Vec<Contract> {
    vec![
        Contract {
            schema: EVENT_ENVELOPE,
            samples: || to_values(&event_envelopes()),
            parses: parses::<EventEnvelope>,
        },
        Contract {
            schema: LICENSE_ISSUED_SCHEMA,
            samples: || to_values(&licenses_issued()),
            parses: parses::<LicenseIssued>,
        },
        Contract {
            schema: COMMAND_ENVELOPE,
            samples: || to_values(&command_envelopes()),
            parses: parses::<CommandEnvelope>,
        },
        Contract {
            schema: COMMAND_OUTCOME,
            samples: || to_values(&command_outcomes()),
            parses: parses::<CommandOutcome>,
        },
        Contract {
            schema: ISSUE_LICENSE_SCHEMA,
            samples: || to_values(&issue_licenses()),
            parses: parses::<IssueLicense>,
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

const LICENSE_1: &str = "01956a3e-7b1c-7d2e-8f90-1a2b3c4d5e6f";
const LICENSE_2: &str = "01956a41-0c2d-7e3f-9a01-b2c3d4e5f607";

fn issue_licenses() -> Vec<IssueLicense> {
    vec![
        // Every optional field set.
        IssueLicense {
            product: "cad-suite".into(),
            edition: Some("pro".into()),
            customer: "Acme Engineering GmbH".into(),
            kind: LicenseKind::Formal,
            features: vec!["export-step".into(), "cloud-render".into()],
            expires_at: Some(at("2027-06-30T23:59:59Z")),
        },
        // None set: a perpetual formal license without features.
        IssueLicense {
            product: "cad-suite".into(),
            edition: None,
            customer: "Jane Doe".into(),
            kind: LicenseKind::Formal,
            features: vec![],
            expires_at: None,
        },
        IssueLicense {
            product: "viewer".into(),
            edition: None,
            customer: "Müller & Söhne KG".into(),
            kind: LicenseKind::Trial,
            features: vec!["watermark".into()],
            expires_at: Some(at("2026-04-01T00:00:00Z")),
        },
        IssueLicense {
            product: "cad-suite".into(),
            edition: Some("edu".into()),
            customer: "TU Example".into(),
            kind: LicenseKind::Temporary,
            features: vec![],
            expires_at: Some(at("2026-09-30T12:00:00.5Z")),
        },
    ]
}

fn licenses_issued() -> Vec<LicenseIssued> {
    vec![
        // Every optional field set.
        LicenseIssued {
            license_id: uuid(LICENSE_1),
            product: "cad-suite".into(),
            edition: Some("pro".into()),
            customer: "Acme Engineering GmbH".into(),
            kind: LicenseKind::Formal,
            features: vec!["export-step".into(), "cloud-render".into()],
            issued_at: at("2026-03-01T10:15:30.123456789Z"),
            expires_at: Some(at("2027-06-30T23:59:59Z")),
        },
        // None set.
        LicenseIssued {
            license_id: uuid(LICENSE_2),
            product: "cad-suite".into(),
            edition: None,
            customer: "Jane Doe".into(),
            kind: LicenseKind::Formal,
            features: vec![],
            issued_at: at("2026-03-01T10:16:00Z"),
            expires_at: None,
        },
        LicenseIssued {
            license_id: uuid("01956a44-5555-7aaa-bbbb-cccccccccccc"),
            product: "viewer".into(),
            edition: None,
            customer: "Müller & Söhne KG".into(),
            kind: LicenseKind::Trial,
            features: vec!["watermark".into()],
            issued_at: at("2026-03-02T08:00:00.000001Z"),
            expires_at: Some(at("2026-04-01T00:00:00Z")),
        },
    ]
}

fn payload<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("payload serialises")
}

fn event_envelopes() -> Vec<EventEnvelope> {
    let issued = licenses_issued();
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
            event_type: LICENSE_ISSUED.into(),
            event_version: LICENSE_ISSUED_V1.into(),
            aggregate_type: LICENSE_AGGREGATE.into(),
            aggregate_id: LICENSE_1.into(),
            sequence: 7,
            global_position: i64::MAX,
            occurred_at: at("2026-03-02T08:00:00.000001Z"),
            recorded_at: at("2026-03-02T08:00:01Z"),
            command_id: uuid("01956b00-0000-7000-8000-0000000000ff"),
            correlation_id: "expiry-sweep-2026-03-02".into(),
            causation_id: None,
            actor: Actor::new(ActorKind::Scheduler, "expiry"),
            payload: payload(&issued[2]),
            prev_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            hash: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
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
            }),
            aggregate_id: LICENSE_1.into(),
            sequence: Some(3),
        },
        // None set.
        CommandOutcome {
            command_id: uuid("01956a41-0c00-7000-8000-0000000000aa"),
            status: OutcomeStatus::Accepted,
            error: None,
            aggregate_id: LICENSE_2.into(),
            sequence: None,
        },
        CommandOutcome {
            command_id: uuid("01956a41-0c00-7000-8000-0000000000ab"),
            status: OutcomeStatus::Accepted,
            error: None,
            aggregate_id: LICENSE_2.into(),
            sequence: Some(1),
        },
        CommandOutcome {
            command_id: uuid("01956a41-0c00-7000-8000-0000000000ac"),
            status: OutcomeStatus::Rejected,
            error: Some(OutcomeError {
                code: "LICENSE_EXISTS".into(),
                message: "license already exists".into(),
                field: None,
            }),
            aggregate_id: LICENSE_2.into(),
            sequence: None,
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

/// `doc` with the value at JSON pointer `pointer` set (its parent must exist).
fn with(doc: &Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a '/'");
    let mut doc = doc.clone();
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

fn string_set(value: Option<&Value>, what: &str) -> BTreeSet<String> {
    value
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{what} is not an array"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
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
    ];
    for k in &all {
        match k {
            ActorKind::ApiKey | ActorKind::Service | ActorKind::Scheduler | ActorKind::System => {}
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
    let covered: BTreeSet<String> = contracts().iter().map(|c| c.schema.to_string()).collect();
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

#[test]
fn schemas_are_draft_2020_12_with_id_and_description() {
    for c in contracts() {
        let s = schema(c.schema);
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
        validator(c.schema);
    }
}

#[test]
fn samples_are_valid_and_the_first_sets_every_field() {
    for c in contracts() {
        let s = schema(c.schema);
        let validator = validator(c.schema);
        let samples = (c.samples)();
        assert!(samples.len() >= 2, "{}: at least two samples", c.schema);
        for doc in &samples {
            assert_valid(&validator, doc, c.schema);
            assert!((c.parses)(doc), "serde refuses its own {}", doc);
        }
        let properties = keys(&s["properties"]);
        assert_eq!(
            keys(&samples[0]),
            properties,
            "{}: the first sample sets every field the schema declares",
            c.schema
        );
        let required = string_set(s.get("required"), "required");
        assert!(
            keys(&samples[1]).len() < properties.len(),
            "{}: the second sample leaves optional fields out",
            c.schema
        );
        assert!(required.is_subset(&properties), "{}", c.schema);
    }
}

/// `required` lists exactly the fields serde cannot do without: removing a
/// required field fails both, removing any other passes both.
#[test]
fn required_fields_match_serde() {
    for c in contracts() {
        let s = schema(c.schema);
        let validator = validator(c.schema);
        let required = string_set(s.get("required"), "required");
        for doc in (c.samples)() {
            for key in keys(&doc) {
                let cut = without(&doc, &format!("/{key}"));
                let schema_ok = validator.is_valid(&cut);
                let serde_ok = (c.parses)(&cut);
                assert_eq!(
                    schema_ok, serde_ok,
                    "{}: without {key}, schema says {schema_ok} and serde {serde_ok}",
                    c.schema
                );
                assert_eq!(
                    schema_ok,
                    !required.contains(&key),
                    "{}: {key} required-ness",
                    c.schema
                );
            }
        }
    }
}

#[test]
fn unknown_top_level_fields_fail_both() {
    for c in contracts() {
        let validator = validator(c.schema);
        for doc in (c.samples)() {
            for extra in ["extra", "Product", "schema_version"] {
                let bad = with(&doc, &format!("/{extra}"), json!("x"));
                assert!(!validator.is_valid(&bad), "{} accepts {extra}", c.schema);
                assert!(!(c.parses)(&bad), "serde accepts {extra} for {}", c.schema);
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
        ["api_key", "service", "scheduler", "system"]
            .map(String::from)
            .into()
    );
}

// ---------------------------------------------------------------------------
// Per type: typed round trips and nested strictness.

#[test]
fn event_envelope_round_trips() {
    let envelopes = event_envelopes();
    assert_round_trips(EVENT_ENVELOPE, &envelopes);
    // The payload of each matches the schema its type and version name.
    let payload_schema = validator(LICENSE_ISSUED_SCHEMA);
    for e in &envelopes {
        assert_eq!(
            (e.event_type.as_str(), e.event_version.as_str()),
            (LICENSE_ISSUED, "1")
        );
        assert_valid(&payload_schema, &e.payload, LICENSE_ISSUED_SCHEMA);
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
fn license_issued_round_trips() {
    assert_round_trips(LICENSE_ISSUED_SCHEMA, &licenses_issued());
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
fn command_envelope_round_trips() {
    let envelopes = command_envelopes();
    assert_round_trips(COMMAND_ENVELOPE, &envelopes);
    let payload_schema = validator(ISSUE_LICENSE_SCHEMA);
    for e in &envelopes {
        assert_eq!(e.command_type, ISSUE_LICENSE);
        assert_valid(&payload_schema, &e.payload, ISSUE_LICENSE_SCHEMA);
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
fn command_outcome_round_trips() {
    assert_round_trips(COMMAND_OUTCOME, &command_outcomes());
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
fn issue_license_round_trips() {
    assert_round_trips(ISSUE_LICENSE_SCHEMA, &issue_licenses());
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
    // features may be left out: serde defaults it to none.
    let bare = json!({"product": "cad-suite", "customer": "Jane Doe", "kind": "formal"});
    assert_valid(&validator(p), &bare, p);
    let spec: T = serde_json::from_value(bare).expect("features default");
    assert!(spec.features.is_empty());
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
}
