//! Activation end to end: issuance and activation in-process on real
//! Postgres and Kafka; license facts reach activation only over Kafka.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use e2e::routes::Svc;
use e2e::*;
use serde_json::{json, Value};

struct Seats {
    stack: Stack,
    iss: String,
    act: String,
    product: String,
    /// Activation's database.
    pool: sqlx::PgPool,
}

impl std::ops::Deref for Seats {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

/// Issuance with the seed catalog plus a product of its own (max 10 seats,
/// one migration), and activation, sharing a topic prefix.
async fn stack(clock: Option<Arc<ManualClock>>) -> Seats {
    let builder = Stack::builder().with(Svc::Activation);
    let stack = match clock {
        Some(c) => builder.activation_clock(c),
        None => builder,
    }
    .start()
    .await;
    let product = stack
        .product(json!({"max_activations": 10, "max_migrations": 1}))
        .await;
    Seats {
        iss: stack.url(Svc::Issuance),
        act: stack.url(Svc::Activation),
        pool: stack.pool(Svc::Activation).await,
        product,
        stack,
    }
}

impl Seats {
    /// Issues a license; its id and key, once activation has the license.
    async fn issue(&self, kind: &str, extra: Value) -> (String, String) {
        let body = merged(
            json!({
                "product": self.product, "customer": "ACME", "kind": kind, "features": ["f1"],
            }),
            extra,
        );
        let l = self.stack.issue(&body).await;
        self.stack.until_activation_knows(&l.key).await;
        (l.id, l.key)
    }

    async fn activate(&self, key: &str, device: &Value) -> (u16, Value) {
        call(
            &self.admin,
            "POST",
            &format!("{}/v1/activations", self.act),
            Some(&json!({"license_key": key, "fingerprint": device})),
        )
        .await
    }

    async fn validate(&self, body: Value) -> Value {
        let (s, b) = call(
            &self.admin,
            "POST",
            &format!("{}/v1/validate", self.act),
            Some(&body),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        call(&self.admin, "POST", &format!("{}{path}", self.act), body).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        call(&self.admin, "GET", &format!("{}{path}", self.act), None).await
    }

    async fn events(&self) -> i64 {
        count(&self.pool, "SELECT count(*) FROM events").await
    }

    async fn stop(self) {
        self.stack.stop().await;
    }
}

/// Device `n`; `changed` of its four components replaced.
fn device(n: u32, changed: usize) -> Value {
    let names = ["machine_id", "disk", "board", "mac"];
    let mut m = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let v = if i >= names.len() - changed {
            format!("{name}-{n}-replaced")
        } else {
            format!("{name}-{n}")
        };
        m.insert(name.to_string(), json!(v));
    }
    Value::Object(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_activation_file_verifies_with_python_jose_and_any_flipped_byte_fails() {
    let st = stack(None).await;
    let (license_id, key) = st.issue("formal", json!({})).await;
    let (s, b) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201, "{b}");
    let file = b["activation_file"].as_str().expect("file").to_string();
    // The JWKS is open: no API key.
    let (s, jwks) = call(
        &reqwest::Client::new(),
        "GET",
        &format!("{}/.well-known/jwks.json", st.act),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let payload = python_verify(&jwks, false, &file).expect("jwcrypto verifies the file");
    assert_eq!(payload["license_id"], license_id.as_str());
    assert_eq!(payload["activation_id"], b["activation_id"]);
    assert_eq!(payload["kind"], "formal");
    assert_eq!(payload["features"][0]["code"], "f1");
    assert_eq!(payload["event"]["sequence"], 1);
    assert_eq!(payload["event"]["aggregate_type"], "LicenseActivations");
    let hash: String = sqlx::query_scalar(
        "SELECT encode(hash, 'hex') FROM events WHERE aggregate_type = 'LicenseActivations' AND sequence = 1",
    )
    .fetch_one(&st.pool)
    .await
    .expect("granting event");
    assert_eq!(payload["event"]["hash"], hash.as_str());
    for field in ["iat", "nbf", "fingerprint", "product"] {
        assert!(!payload[field].is_null(), "{field} in the file");
    }
    // Flip one byte at a time across the payload and the signature.
    let (head, rest) = file.split_at(file.find('.').expect("dot") + 1);
    let positions: Vec<usize> = (0..rest.len())
        .filter(|i| rest.as_bytes()[*i] != b'.')
        .step_by(9)
        .collect();
    assert!(positions.len() > 20);
    for i in positions {
        let mut bytes = rest.as_bytes().to_vec();
        bytes[i] = altered_b64url(bytes[i]);
        let altered = format!("{head}{}", String::from_utf8(bytes).expect("ascii"));
        assert!(
            python_verify(&jwks, false, &altered).is_none(),
            "altered byte {i} still verified"
        );
    }
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_devices_get_exactly_the_ten_seats() {
    let st = stack(None).await;
    let (license_id, key) = st.issue("formal", json!({})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..50 {
        let (admin, act, key) = (st.admin.clone(), st.act.clone(), key.clone());
        tasks.spawn(async move {
            call(
                &admin,
                "POST",
                &format!("{act}/v1/activations"),
                Some(&json!({"license_key": key, "fingerprint": device(100 + n, 0)})),
            )
            .await
        });
    }
    assert_eq!(tally(tasks, "TOO_MANY_ACTIVATIONS").await, (10, 40));
    let (_, list) = st
        .get(&format!("/v1/licenses/{license_id}/activations"))
        .await;
    let live = list["activations"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|a| a["status"] == "live")
        .count();
    assert_eq!(live, 10);
    assert_eq!(
        count(
            &st.pool,
            "SELECT count(*) FROM events WHERE event_type = 'DeviceActivated'"
        )
        .await,
        10
    );
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactivation_uninstall_and_migration_keep_the_seats_honest() {
    let st = stack(None).await;
    let (license_id, key) = st.issue("formal", json!({})).await;
    let (s, first) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201, "{first}");
    let id1 = first["activation_id"].as_str().expect("id").to_string();
    // The same device, one disk replaced: the same seat.
    let (s, again) = st.activate(&key, &device(1, 1)).await;
    assert_eq!((s, &again["activation_id"]), (200, &first["activation_id"]));
    // Recovery: the file again, and the device's activations.
    let (s, f) = st.get(&format!("/v1/activations/{id1}/file")).await;
    assert_eq!(s, 200);
    assert_eq!(
        claims(f["activation_file"].as_str().expect("file"))["activation_id"],
        id1.as_str()
    );
    let (s, found) = st
        .post(
            "/v1/activations/search",
            Some(&json!({"fingerprint": device(1, 1)})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(found["activations"][0]["activation_id"], id1.as_str());

    // Uninstall: a signed receipt; the old file is revoked for ever.
    let (s, u) = st
        .post(&format!("/v1/activations/{id1}/uninstall"), None)
        .await;
    assert_eq!(s, 200, "{u}");
    let receipt = claims(u["receipt"].as_str().expect("receipt"));
    assert_eq!(receipt["typ"], "uninstall-receipt");
    assert_eq!(receipt["activation_id"], id1.as_str());
    let old_file = first["activation_file"].as_str().expect("file");
    let (_, v) = st
        .post(
            "/v1/activations/verify",
            Some(&json!({"activation_file": old_file})),
        )
        .await;
    assert_eq!(
        (v["valid"].clone(), v["code"].clone()),
        (json!(false), json!("REVOKED"))
    );
    let (s, _) = st.get(&format!("/v1/activations/{id1}/file")).await;
    assert_eq!(s, 409);
    let (s, _) = st
        .post(&format!("/v1/activations/{id1}/uninstall"), None)
        .await;
    assert_eq!(s, 409);
    let (_, list) = st
        .get(&format!("/v1/licenses/{license_id}/activations"))
        .await;
    assert_eq!(list["revoked"], json!([id1]));
    // The device comes back under a new id.
    let (s, back) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201);
    let id2 = back["activation_id"].as_str().expect("id").to_string();
    assert_ne!(id2, id1);
    let (_, v) = st
        .post(
            "/v1/activations/verify",
            Some(&json!({"activation_file": back["activation_file"]})),
        )
        .await;
    assert_eq!(v["code"], "VALID");

    // Migration: the old activation revoked by the same event; one allowed.
    let (s, m) = st
        .post(
            &format!("/v1/activations/{id2}/migrate"),
            Some(&json!({"fingerprint": device(2, 0)})),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let id3 = m["activation_id"].as_str().expect("id").to_string();
    assert_eq!(m["migrated_from"], id2.as_str());
    let (_, old) = st.get(&format!("/v1/activations/{id2}")).await;
    assert_eq!(old["status"], "migrated");
    let (s, m) = st
        .post(
            &format!("/v1/activations/{id3}/migrate"),
            Some(&json!({"fingerprint": device(3, 0)})),
        )
        .await;
    assert_eq!(
        (s, m["code"].as_str()),
        (409, Some("MIGRATION_LIMIT_REACHED"))
    );

    // Temporary and trial licenses neither uninstall nor migrate.
    let expires = (Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let (_, temp_key) = st.issue("temporary", json!({"expires_at": expires})).await;
    let (s, t) = st.activate(&temp_key, &device(4, 0)).await;
    assert_eq!(s, 201);
    let tid = t["activation_id"].as_str().expect("id");
    let (s, b) = st
        .post(&format!("/v1/activations/{tid}/uninstall"), None)
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("UNINSTALL_NOT_ALLOWED"))
    );
    let (s, b) = st
        .post(
            &format!("/v1/activations/{tid}/migrate"),
            Some(&json!({"fingerprint": device(5, 0)})),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("MIGRATION_NOT_ALLOWED"))
    );
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_activation_follows_the_online_rules() {
    let st = stack(None).await;
    let (license_id, key) = st.issue("formal", json!({})).await;
    let request = json!({
        "license_key": key, "fingerprint": device(1, 0),
        "nonce": "n-123", "client_time": Utc::now().to_rfc3339(),
    });
    let (s, b) = st.post("/v1/activations/offline", Some(&request)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["nonce"], "n-123");
    let c = claims(b["response_file"].as_str().expect("response file"));
    assert_eq!(
        (c["nonce"].as_str(), c["license_id"].as_str()),
        (Some("n-123"), Some(license_id.as_str()))
    );
    // Mistyped key and a request without its nonce: refused, nothing stored.
    let before = st.events().await;
    let mut typo = request.clone();
    let mut k: Vec<char> = key.chars().collect();
    k[0] = if k[0] == '0' { '1' } else { '0' };
    typo["license_key"] = json!(k.into_iter().collect::<String>());
    let (s, b) = st.post("/v1/activations/offline", Some(&typo)).await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (422, Some("KEY_CHECK_FAILED"), Some("license_key"))
    );
    let mut no_nonce = request.clone();
    no_nonce.as_object_mut().expect("object").remove("nonce");
    let (s, b) = st.post("/v1/activations/offline", Some(&no_nonce)).await;
    assert_eq!((s, b["field"].as_str()), (422, Some("nonce")));
    assert_eq!(st.events().await, before);
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_named_4xx_and_changes_nothing() {
    let st = stack(None).await;
    let (_, key) = st.issue("formal", json!({})).await;
    let before = st.events().await;
    for (body, code, field) in [
        (
            json!({"license_key": key, "fingerprint": {}}),
            "INVALID_FINGERPRINT",
            "fingerprint",
        ),
        (
            json!({"license_key": key, "fingerprint": {"Bad Name": "x"}}),
            "INVALID_FINGERPRINT",
            "fingerprint",
        ),
        (
            json!({"license_key": key, "fingerprint": {"disk": "   "}}),
            "INVALID_FINGERPRINT",
            "fingerprint",
        ),
        (
            json!({"license_key": key, "fingerprint": "abc"}),
            "INVALID_FIELD",
            "fingerprint",
        ),
        (json!({"license_key": key}), "MISSING_FIELD", "fingerprint"),
        (
            json!({"license_key": key, "fingerprint": device(1, 0), "extra": 1}),
            "UNKNOWN_FIELD",
            "extra",
        ),
        (
            json!({"license_key": "short", "fingerprint": device(1, 0)}),
            "INVALID_LICENSE_KEY",
            "license_key",
        ),
        (
            json!({"license_key": key, "fingerprint": device(1, 0), "client_time": "yesterday"}),
            "INVALID_FIELD",
            "client_time",
        ),
    ] {
        let (s, b) = st.post("/v1/activations", Some(&body)).await;
        assert!((400..500).contains(&s), "{body}: {s} {b}");
        assert_eq!(
            (b["code"].as_str(), b["field"].as_str()),
            (Some(code), Some(field)),
            "{body}"
        );
    }
    let (s, b) = st.get("/v1/activations/not-a-uuid").await;
    assert_eq!((s, b["code"].as_str()), (400, Some("INVALID_ID")));
    let (s, b) = st
        .post(
            "/v1/trials",
            Some(&json!({"product": "no-such-product", "fingerprint": device(1, 0)})),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (404, Some("PRODUCT_NOT_FOUND"), Some("product"))
    );
    assert_eq!(st.events().await, before);
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clock_set_back_is_refused_recorded_and_reported_by_validate() {
    let st = stack(None).await;
    let (_, key) = st.issue("formal", json!({})).await;
    let now = Utc::now();
    let at = |t: DateTime<Utc>| json!({"license_key": key, "fingerprint": device(1, 0), "client_time": t.to_rfc3339()});
    let (s, b) = st.post("/v1/activations", Some(&at(now))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = st
        .post(
            "/v1/activations",
            Some(&at(now + chrono::Duration::hours(1))),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = st
        .post(
            "/v1/activations",
            Some(&at(now - chrono::Duration::hours(3))),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("CLOCK_ROLLBACK")),
        "{b}"
    );
    assert_eq!(
        count(
            &st.pool,
            "SELECT count(*) FROM events WHERE event_type = 'ClockRollbackDetected'"
        )
        .await,
        1
    );
    // Validation reports it but records nothing.
    let before = st.events().await;
    let v = st
        .validate(json!({"license_key": key, "fingerprint": device(1, 0),
            "client_time": (now - chrono::Duration::hours(3)).to_rfc3339()}))
        .await;
    assert_eq!(
        (v["valid"].as_bool(), v["code"].as_str()),
        (Some(false), Some("CLOCK_ROLLBACK"))
    );
    assert_eq!(st.events().await, before);
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validate_answers_every_code_and_appends_nothing() {
    let clock = ManualClock::new();
    let st = stack(Some(clock.clone())).await;
    let (license_id, key) = st.issue("formal", json!({"features": ["f1"]})).await;
    let v = |fp: Option<Value>, features: Value| {
        let mut b = json!({"license_key": key, "features": features});
        if let Some(f) = fp {
            b["fingerprint"] = f;
        }
        b
    };
    assert_eq!(
        st.validate(v(Some(device(1, 0)), json!([]))).await["code"],
        "NO_ACTIVATION"
    );
    let (s, _) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201);
    let before = st.events().await;
    let ok = st.validate(v(Some(device(1, 1)), json!(["f1"]))).await;
    assert_eq!(
        (ok["valid"].as_bool(), ok["code"].as_str()),
        (Some(true), Some("VALID"))
    );
    assert_eq!(ok["license_id"], license_id.as_str());
    assert_eq!(st.validate(v(None, json!([]))).await["code"], "VALID");
    assert_eq!(
        st.validate(v(Some(device(2, 0)), json!([]))).await["code"],
        "FINGERPRINT_MISMATCH"
    );
    let missing = st
        .validate(v(Some(device(1, 0)), json!(["f1", "f2"])))
        .await;
    assert_eq!(
        (missing["code"].as_str(), &missing["missing_features"]),
        (Some("FEATURES_MISSING"), &json!(["f2"]))
    );
    let unknown = contracts::license_key::format(&[7u8; 17]);
    assert_eq!(
        st.validate(json!({"license_key": unknown})).await["code"],
        "NOT_FOUND"
    );
    for n in 2..=10 {
        let (s, _) = st.activate(&key, &device(n, 0)).await;
        assert_eq!(s, 201);
    }
    assert_eq!(
        st.validate(v(Some(device(11, 0)), json!([]))).await["code"],
        "TOO_MANY_ACTIVATIONS"
    );
    let (s, b) = st.activate(&key, &device(11, 0)).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("TOO_MANY_ACTIVATIONS")));
    // Expired by date, as activation's clock sees it.
    let (_, temp_key) = st
        .issue(
            "temporary",
            json!({"expires_at": (Utc::now() + chrono::Duration::days(2)).to_rfc3339()}),
        )
        .await;
    clock.advance(chrono::Duration::days(3));
    assert_eq!(
        st.validate(json!({"license_key": temp_key})).await["code"],
        "EXPIRED"
    );
    let (s, b) = st.activate(&temp_key, &device(20, 0)).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("LICENSE_EXPIRED")));
    // Suspended, then revoked, at issuance: activation hears it over Kafka.
    let (s, _) = call(
        &st.admin,
        "POST",
        &format!("{}/v1/licenses/{license_id}/suspend", st.iss),
        Some(&json!({"reason": "unpaid"})),
    )
    .await;
    assert_eq!(s, 200);
    let (act, admin, k) = (st.act.clone(), st.admin.clone(), key.clone());
    let code_is = |want: &'static str| {
        let (act, admin, k) = (act.clone(), admin.clone(), k.clone());
        async move {
            wait_until(Duration::from_secs(10), || {
                let (act, admin, k) = (act.clone(), admin.clone(), k.clone());
                async move {
                    call(
                        &admin,
                        "POST",
                        &format!("{act}/v1/validate"),
                        Some(&json!({"license_key": k})),
                    )
                    .await
                    .1["code"]
                        == want
                }
            })
            .await
        }
    };
    assert!(code_is("SUSPENDED").await);
    let (s, b) = st.activate(&key, &device(30, 0)).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("LICENSE_SUSPENDED")));
    let (s, _) = call(
        &st.admin,
        "POST",
        &format!("{}/v1/licenses/{license_id}/revoke", st.iss),
        Some(&json!({"reason": "fraud"})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(code_is("REVOKED").await);
    // Validation appended nothing; the suspension revoked the ten seats.
    let revoked = count(
        &st.pool,
        "SELECT count(*) FROM events WHERE event_type = 'ActivationsRevoked'",
    )
    .await;
    assert_eq!(
        revoked, 1,
        "suspension revoked the seats once; revocation found none live"
    );
    let (_, list) = st
        .get(&format!("/v1/licenses/{license_id}/activations"))
        .await;
    assert!(list["activations"]
        .as_array()
        .expect("list")
        .iter()
        .all(|a| a["status"] == "revoked"));
    let validations_appended = st.events().await - before - 9 - revoked;
    assert_eq!(validations_appended, 0);
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewal_shows_in_the_next_file() {
    let st = stack(None).await;
    let expires = Utc::now() + chrono::Duration::days(30);
    let (license_id, key) = st
        .issue("temporary", json!({"expires_at": expires.to_rfc3339()}))
        .await;
    let (s, b) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201);
    let id = b["activation_id"].as_str().expect("id").to_string();
    assert_eq!(
        claims(b["activation_file"].as_str().expect("file"))["exp"],
        expires.timestamp()
    );
    let later = expires + chrono::Duration::days(365);
    let (s, r) = call(
        &st.admin,
        "POST",
        &format!("{}/v1/licenses/{license_id}/renew", st.iss),
        Some(&json!({"expires_at": later.to_rfc3339(), "order_ref": "PO-1"})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let (act, admin) = (st.act.clone(), st.admin.clone());
    let renewed = wait_until(Duration::from_secs(10), || {
        let (act, admin, id) = (act.clone(), admin.clone(), id.clone());
        async move {
            let (_, f) = call(
                &admin,
                "GET",
                &format!("{act}/v1/activations/{id}/file"),
                None,
            )
            .await;
            f["activation_file"]
                .as_str()
                .map(claims)
                .is_some_and(|c| c["exp"] == later.timestamp())
        }
    })
    .await;
    assert!(renewed, "the recovered file carries the new expiry");
    st.stop().await;
}

/// Activation's product replica holds a product issuance does not (a
/// replica restored from another backup than the catalogue, say):
/// activation starts the trial, issuance refuses its `IssueLicense` over
/// Kafka, and the outcome on `command-outcomes` fails the trial with
/// issuance's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trial_issuance_refuses_fails_with_its_reason_and_may_be_asked_for_again() {
    let st = stack(None).await;
    let product = format!("ghost-{}", st.prefix);
    sqlx::query("INSERT INTO product_replica (code, features) VALUES ($1, '[\"f1\"]')")
        .bind(&product)
        .execute(&st.pool)
        .await
        .expect("replica row");
    let fingerprint = device(3, 0);
    let body = json!({"product": product, "fingerprint": fingerprint});
    let (s, b) = st.post("/v1/trials", Some(&body)).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("TRIAL_FAILED")), "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("PRODUCT_NOT_FOUND"),
        "{b}"
    );
    let components: std::collections::BTreeMap<String, String> =
        serde_json::from_value::<contracts::activation::Fingerprint>(fingerprint)
            .expect("fingerprint")
            .components()
            .expect("components");
    let trial_id = format!(
        "{product}:{}",
        contracts::activation::digest_of(&components)
    );
    let (s, t) = st.get(&format!("/v1/trials/{trial_id}")).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["failure"]["code"], "PRODUCT_NOT_FOUND", "{t}");
    assert!(t["activation_file"].is_null());
    // Recorded once, caused by issuance's outcome; no license, no seat.
    let failed = "SELECT count(*) FROM events WHERE event_type = 'TrialFailed'";
    assert_eq!(count(&st.pool, failed).await, 1);
    assert_eq!(
        count(&st.pool, "SELECT count(*) FROM activations").await,
        0,
        "no seat for a failed trial"
    );
    // The trial never ran: the device may ask again, and fails again
    // for the same reason (a second, distinct failure).
    let (s, b) = st.post("/v1/trials", Some(&body)).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("TRIAL_FAILED")), "{b}");
    assert_eq!(count(&st.pool, failed).await, 2);
    assert_eq!(
        count(
            &st.pool,
            "SELECT count(*) FROM events WHERE event_type = 'TrialStarted'"
        )
        .await,
        2
    );
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trial_runs_over_kafka_once_per_device_and_ends_when_a_formal_license_arrives() {
    let st = stack(None).await;
    let body = json!({"product": st.product, "fingerprint": device(1, 0)});
    // The product reaches activation's replica over Kafka; until then the
    // trial is refused (404) and nothing is recorded.
    let (s, t) = eventually(
        Duration::from_secs(10),
        || st.post("/v1/trials", Some(&body)),
        |a| a.1["code"] != "PRODUCT_NOT_FOUND",
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let c = claims(t["activation_file"].as_str().expect("file"));
    assert_eq!(c["kind"], "trial");
    let trial_id = t["trial_id"].as_str().expect("trial id").to_string();
    let trial_license = t["license_id"].as_str().expect("license").to_string();
    // Issuance issued it: a 180-day trial with the product's features.
    let (s, l) = call(
        &st.admin,
        "GET",
        &format!("{}/v1/licenses/{trial_license}", st.iss),
        None,
    )
    .await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["kind"], "trial");
    let days = (DateTime::parse_from_rfc3339(l["expires_at"].as_str().expect("expiry"))
        .expect("date")
        .with_timezone(&Utc)
        - Utc::now())
    .num_days();
    assert!((179..=180).contains(&days), "{days}");
    // Once per product and device, ever — a replaced disk changes nothing.
    for fp in [device(1, 0), device(1, 1)] {
        let (s, b) = st
            .post(
                "/v1/trials",
                Some(&json!({"product": st.product, "fingerprint": fp})),
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (409, Some("TRIAL_ALREADY_USED")),
            "{b}"
        );
    }
    // A formal license on the device ends the trial (no mixing).
    let (_, key) = st.issue("formal", json!({})).await;
    let (s, _) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201);
    let (act, admin) = (st.act.clone(), st.admin.clone());
    let ended = wait_until(Duration::from_secs(10), || {
        let (act, admin, trial_id) = (act.clone(), admin.clone(), trial_id.clone());
        async move {
            call(&admin, "GET", &format!("{act}/v1/trials/{trial_id}"), None)
                .await
                .1["status"]
                == "ended"
        }
    })
    .await;
    assert!(ended, "the trial ended");
    let trial_activation = t["activation_id"].as_str().expect("activation");
    let (_, a) = st.get(&format!("/v1/activations/{trial_activation}")).await;
    assert_eq!(a["status"], "revoked");
    // And a device holding a formal seat gets no trial of that product.
    let (s, b) = st
        .post(
            "/v1/trials",
            Some(&json!({"product": st.product, "fingerprint": device(9, 0)})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, key2) = st.issue("formal", json!({})).await;
    let (s, _) = st.activate(&key2, &device(10, 0)).await;
    assert_eq!(s, 201);
    let (s, b) = st
        .post(
            "/v1/trials",
            Some(&json!({"product": st.product, "fingerprint": device(10, 0)})),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("TRIAL_NOT_ALLOWED")),
        "{b}"
    );
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn license_keys_are_recovered_by_activation_file_and_by_device() {
    let st = stack(None).await;
    let (license_id, key) = st.issue("formal", json!({})).await;
    let (s, b) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201);
    let file = b["activation_file"].as_str().expect("file").to_string();
    let recover = |body: Value| {
        let (admin, iss) = (st.admin.clone(), st.iss.clone());
        async move {
            call(
                &admin,
                "POST",
                &format!("{iss}/v1/licenses/recover"),
                Some(&body),
            )
            .await
        }
    };
    // Issuance learns activations over Kafka.
    let (s, b) = eventually(
        Duration::from_secs(10),
        || recover(json!({"activation_file": file})),
        |a| a.0 == 200,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["licenses"][0]["id"], license_id.as_str());
    assert_eq!(b["licenses"][0]["key"], key.as_str());
    // By device: one replaced disk still finds it.
    let (s, b) = recover(json!({"fingerprint": device(1, 1)})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["licenses"][0]["key"], key.as_str());
    let (s, b) = recover(json!({"fingerprint": device(2, 0)})).await;
    assert_eq!((s, b["code"].as_str()), (404, Some("NO_LICENSES")));
    // A forged file: the payload altered, the signature kept.
    let mut parts: Vec<String> = file.split('.').map(str::to_string).collect();
    parts[1] = parts[1].chars().rev().collect();
    let (s, b) = recover(json!({"activation_file": parts.join(".")})).await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (
            422,
            Some("INVALID_ACTIVATION_FILE"),
            Some("activation_file")
        )
    );
    // Every recovery is an audited event.
    let issuance_pool = st.pool(Svc::Issuance).await;
    let recovered = count(
        &issuance_pool,
        "SELECT count(*) FROM events WHERE event_type = 'LicenseKeyRecovered'",
    )
    .await;
    assert_eq!(recovered, 2);
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_key_keeps_older_files_valid_and_the_jwks_serves_both() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let db = infra.fresh_db("activation_rotate").await;
    let (key_a, key_b) = (signing_key_path(&prefix), signing_key_path(&prefix));
    let start = |key_file: String| {
        let (infra, db, prefix) = (Infra::get(), db.clone(), prefix.clone());
        async move {
            activation::start(
                activation_config(&infra, &db, &prefix, &key_file),
                activation::Options {
                    handle_signals: false,
                    ..Default::default()
                },
            )
            .await
            .expect("activation starts")
        }
    };
    let admin = admin_client();
    let iss = issuance.running.url();
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/licenses"),
        Some(
            &json!({"product": "integration-platform", "customer": "ACME", "kind": "formal",
            "features": ["data-access"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let key = b["key"].as_str().expect("key").to_string();
    let first = start(key_a.clone()).await;
    let act = first.url();
    let body = json!({"license_key": key, "fingerprint": device(1, 0)});
    let activations = format!("{act}/v1/activations");
    let answer = eventually(
        Duration::from_secs(10),
        || call(&admin, "POST", &activations, Some(&body)),
        |a| a.0 == 201,
    )
    .await;
    assert_eq!(answer.0, 201, "{}", answer.1);
    let old_file = answer.1["activation_file"]
        .as_str()
        .expect("file")
        .to_string();
    let old_id = answer.1["activation_id"].as_str().expect("id").to_string();
    first.stop().await;

    // Same database, a new key file: a rotation.
    let second = start(key_b).await;
    let act = second.url();
    let (_, jwks) = call(
        &reqwest::Client::new(),
        "GET",
        &format!("{act}/.well-known/jwks.json"),
        None,
    )
    .await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2), "{jwks}");
    assert!(
        python_verify(&jwks, false, &old_file).is_some(),
        "the old file still verifies"
    );
    let (_, v) = call(
        &admin,
        "POST",
        &format!("{act}/v1/activations/verify"),
        Some(&json!({"activation_file": old_file})),
    )
    .await;
    assert_eq!(v["code"], "VALID");
    let kid = |jws: &str| {
        use base64::Engine;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jws.split('.').next().expect("header"))
            .expect("b64");
        serde_json::from_slice::<Value>(&h).expect("header json")["kid"].clone()
    };
    let (s, f) = call(
        &admin,
        "GET",
        &format!("{act}/v1/activations/{old_id}/file"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let new_file = f["activation_file"].as_str().expect("file");
    assert_ne!(kid(new_file), kid(&old_file), "re-issued under the new key");
    assert!(python_verify(&jwks, false, new_file).is_some());
    // The private key is never served.
    for k in jwks["keys"].as_array().expect("keys") {
        assert!(k.get("d").is_none());
    }
    second.stop().await;
    issuance.running.stop().await;
    let _ = std::fs::remove_file(key_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activation_events_reach_the_audit_trail_with_their_actor() {
    let st = stack(None).await;
    let projector = start_projector(&st.infra, &st.prefix).await;
    let (license_id, key) = st.issue("formal", json!({})).await;
    let (s, _) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201);
    let url = format!(
        "{}/v1/audit?license_id={license_id}&event_type=DeviceActivated",
        projector.running.url()
    );
    let admin = st.admin.clone();
    let (_, page) = eventually(
        Duration::from_secs(10),
        || call(&admin, "GET", &url, None),
        |(_, b)| b["items"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let row = page["items"][0].clone();
    assert_eq!(row["context"], "activation", "{row}");
    assert_eq!(row["actor"]["kind"], "api_key", "{row}");
    projector.running.stop().await;
    st.stop().await;
}

/// Only issuance's stored verdict on a trial's own `IssueLicense` fails
/// the trial: an outcome without a source, another service's answer under
/// that id (any writer of a command topic can make one), an answer that is
/// not the command's stored outcome, or a refusal naming another aggregate
/// changes nothing, even from a principal that may write
/// `command-outcomes`. (Issuance is not running
/// here, so the trial stays pending until an outcome arrives.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_issuances_own_refusal_of_a_trials_license_fails_the_trial() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let db = infra.fresh_db("activation").await;
    let mut config = activation_config(&infra, &db, &prefix, &signing_key_path(&prefix));
    config.trial_wait_ms = 200;
    let running = activation::start(
        config,
        activation::Options {
            handle_signals: false,
            ..Default::default()
        },
    )
    .await
    .expect("activation starts");
    let act = InProcess { running, db };
    let pool = pool(&act.db).await;
    let product = format!("pending-{prefix}");
    sqlx::query("INSERT INTO product_replica (code, features) VALUES ($1, '[\"f1\"]')")
        .bind(&product)
        .execute(&pool)
        .await
        .expect("replica row");
    let (s, t) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/trials", act.url()),
        Some(&json!({"product": product, "fingerprint": device(4, 0)})),
    )
    .await;
    assert_eq!((s, t["status"].as_str()), (202, Some("pending")), "{t}");
    let trial_id = t["trial_id"].as_str().expect("trial id").to_string();
    let license_id = t["license_id"].as_str().expect("license id").to_string();
    let command_id: uuid::Uuid =
        sqlx::query_scalar("SELECT issue_command_id FROM trials WHERE trial_id = $1")
            .bind(&trial_id)
            .fetch_one(&pool)
            .await
            .expect("trial row");
    let producer: bus::Producer = infra
        .kafka("issuance")
        .client()
        .create_with_context(bus::Quiet)
        .expect("producer");
    let topic = contracts::Topics::new(&prefix).outcomes();
    let rejected = |code: &str, aggregate: &str| {
        json!({
            "command_id": command_id,
            "status": "rejected",
            "error": {"code": code, "message": "refused", "kind": "invalid"},
            "aggregate_id": aggregate,
        })
    };
    // (body, source header, stored header); the same key, so one
    // partition: read in this order. Only the last is issuance's stored
    // verdict on the trial's own license.
    let messages = [
        (rejected("LICENSE_NOT_FOUND", &license_id), None, None),
        (
            rejected("LICENSE_NOT_FOUND", &license_id),
            Some("activation"),
            Some("true"),
        ),
        (
            rejected("IDEMPOTENCY_KEY_REUSED", &license_id),
            Some("issuance"),
            Some("false"),
        ),
        (
            rejected("UNKNOWN_FEATURES", "another-aggregate"),
            Some("issuance"),
            Some("true"),
        ),
        (
            rejected("UNKNOWN_FEATURES", &license_id),
            Some("issuance"),
            Some("true"),
        ),
    ];
    for (body, source, stored) in messages {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        headers.extend(source.map(|s| ("source", s)));
        headers.extend(stored.map(|s| ("stored", s)));
        bus::publish_json(&producer, &topic, &command_id.to_string(), &body, &headers)
            .await
            .expect("published");
    }
    let admin = admin_client();
    let url = format!("{}/v1/trials/{trial_id}", act.url());
    let failed = wait_until(Duration::from_secs(15), || {
        let (admin, url) = (admin.clone(), url.clone());
        async move { call(&admin, "GET", &url, None).await.1["status"] == "failed" }
    })
    .await;
    assert!(failed, "the trial failed");
    let (_, t) = call(&admin, "GET", &url, None).await;
    assert_eq!(t["failure"]["code"], "UNKNOWN_FEATURES", "{t}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'TrialFailed'"
        )
        .await,
        1
    );
    act.running.stop().await;
}

/// How long after `committed` first holds `seen` holds too (both polled
/// every 5 ms from the same start; zero when `seen` came first).
async fn lag<C, S>(committed: impl Fn() -> C, seen: impl Fn() -> S) -> Duration
where
    C: std::future::Future<Output = bool>,
    S: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    let (t0, t1) = tokio::time::timeout(
        Duration::from_secs(15),
        futures::future::join(first_time(start, committed), first_time(start, seen)),
    )
    .await
    .expect("the change was committed and seen within 15 s");
    t1.saturating_sub(t0)
}

/// When, after `start`, `check` first holds (polled every 5 ms).
async fn first_time<F: std::future::Future<Output = bool>>(
    start: std::time::Instant,
    check: impl Fn() -> F,
) -> Duration {
    loop {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Validation answers from activation's in-memory index (issue 17): a seat
/// command is there when it is answered, and every change committed by
/// anyone else (another activation instance's seats, issuance's renewal,
/// suspension and revocation arriving in the replica) within the index's
/// bound of one second after it committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validation_answers_from_memory_and_follows_every_change_within_its_bound() {
    const BOUND: Duration = Duration::from_secs(1);
    let st = stack(None).await;
    let (license_id, key) = st.issue("formal", json!({})).await;
    let expires = Utc::now() + chrono::Duration::days(30);
    let (temp_id, temp_key) = st
        .issue("temporary", json!({"expires_at": expires.to_rfc3339()}))
        .await;
    // A second instance on the same database: its writes reach the first
    // instance's index only through the notifications.
    let other = activation::start(
        activation_config(
            &st.infra,
            &st.service(Svc::Activation).db,
            &st.prefix,
            &signing_key_path(&st.prefix),
        ),
        activation::Options {
            handle_signals: false,
            ..Default::default()
        },
    )
    .await
    .expect("a second activation instance starts");
    let asked = std::sync::atomic::AtomicU64::new(0);
    let validate_a = |body: Value| {
        asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (admin, url) = (st.admin.clone(), format!("{}/v1/validate", st.act));
        async move { call(&admin, "POST", &url, Some(&body)).await.1 }
    };
    let seat = |n| json!({"license_key": key, "fingerprint": device(n, 0)});

    // This instance's own commands: there when answered.
    let (s, a) = st.activate(&key, &device(1, 0)).await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(validate_a(seat(1)).await["code"], "VALID");
    let id = a["activation_id"].as_str().expect("id");
    let (s, _) = st
        .post(&format!("/v1/activations/{id}/uninstall"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(validate_a(seat(1)).await["code"], "NO_ACTIVATION");

    // The other instance's seats.
    let at_b = |path: String, body: Option<Value>| {
        let (admin, url) = (st.admin.clone(), format!("{}{path}", other.url()));
        async move { call(&admin, "POST", &url, body.as_ref()).await }
    };
    let (s, b) = at_b("/v1/activations".into(), Some(seat(2))).await;
    assert_eq!(s, 201, "{b}");
    let activated = lag(
        || async { true },
        || async { validate_a(seat(2)).await["code"] == "VALID" },
    )
    .await;
    let id = b["activation_id"].as_str().expect("id").to_string();
    let (s, _) = at_b(format!("/v1/activations/{id}/uninstall"), None).await;
    assert_eq!(s, 200);
    let uninstalled = lag(
        || async { true },
        || async { validate_a(seat(2)).await["code"] == "NO_ACTIVATION" },
    )
    .await;

    // Issuance's changes, from the moment they are in the replica table.
    let replica = |id: String, field: &'static str| {
        let pool = st.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(&format!(
                "SELECT view->>'{field}' FROM license_replica WHERE license_id = $1::uuid"
            ))
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("replica row")
        }
    };
    let later = expires + chrono::Duration::days(365);
    let (s, r) = call(
        &st.admin,
        "POST",
        &format!("{}/v1/licenses/{temp_id}/renew", st.iss),
        Some(&json!({"expires_at": later.to_rfc3339(), "order_ref": "PO-1"})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let is_later = |v: &Value| {
        v.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t.timestamp() == later.timestamp())
    };
    let renewed = lag(
        || async { is_later(&json!(replica(temp_id.clone(), "expires_at").await)) },
        || async { is_later(&validate_a(json!({"license_key": temp_key})).await["expires_at"]) },
    )
    .await;
    let mut changes = vec![];
    for (action, status, code) in [
        ("suspend", "suspended", "SUSPENDED"),
        ("revoke", "revoked", "REVOKED"),
    ] {
        let (s, r) = call(
            &st.admin,
            "POST",
            &format!("{}/v1/licenses/{license_id}/{action}", st.iss),
            Some(&json!({"reason": "issue 17"})),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        let took = lag(
            || async { replica(license_id.clone(), "status").await.as_deref() == Some(status) },
            || async { validate_a(json!({"license_key": key})).await["code"] == code },
        )
        .await;
        changes.push((action, took));
    }
    eprintln!(
        "validation index lag after commit: activated {activated:?}, uninstalled \
         {uninstalled:?}, renewed {renewed:?}, {changes:?}"
    );
    for (what, took) in [
        ("activation at the other instance", activated),
        ("uninstall at the other instance", uninstalled),
        ("renewal", renewed),
    ]
    .into_iter()
    .chain(changes)
    {
        assert!(
            took <= BOUND,
            "{what} reached the index {took:?} after it committed"
        );
    }

    // The answers came from memory.
    let asked = asked.load(std::sync::atomic::Ordering::Relaxed);
    let metrics = eventually(
        Duration::from_secs(5),
        || async {
            reqwest::get(format!("{}/metrics", st.act))
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        },
        |text| from_index(text) >= asked,
    )
    .await;
    assert!(
        from_index(&metrics) >= asked,
        "{asked} validations, {} from the index",
        from_index(&metrics)
    );
    other.stop().await;
    st.stop().await;
}

/// `validations_total{source="index"}` in a metrics text.
fn from_index(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("validations_total{source=\"index\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
