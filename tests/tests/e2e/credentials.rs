//! Installed products as hostile customers (issue 15): license-scoped
//! credentials, fingerprints that must identify a device, client clocks
//! that cannot lock a device out, offline nonces that answer once, and
//! uninstall receipts that never pass for activation files.

use std::time::Duration;

use e2e::routes::Svc;
use e2e::*;
use serde_json::{json, Value};
use uuid::Uuid;

/// Issuance, activation and domain binding on one prefix, with a product
/// of the test's own.
struct Products {
    stack: Stack,
    iss: String,
    act: String,
    product: String,
}

impl Products {
    async fn start(policy: Value) -> Self {
        let stack = Stack::start(&[Svc::Activation, Svc::Domain]).await;
        let product = stack.product(policy).await;
        Self {
            iss: stack.url(Svc::Issuance),
            act: stack.url(Svc::Activation),
            product,
            stack,
        }
    }

    /// A customer's license: its id and key, once activation knows it.
    async fn license(&self, customer: &str) -> (String, String) {
        let l = self.stack.license(&self.product, customer, json!({})).await;
        (l.id, l.key)
    }

    async fn events(&self) -> i64 {
        self.stack.events(Svc::Activation).await
    }

    async fn stop(self) {
        self.stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cross_customer_migrate_is_refused_and_a_license_reaches_only_itself() {
    let p = Products::start(json!({"max_activations": 2, "max_migrations": 3})).await;
    let act = p.act.clone();
    let (victim_license, victim_key) = p.license("Victim Co").await;
    let (_, attacker_key) = p.license("Attacker Co").await;
    let victim = license_client(&victim_key);
    let attacker = license_client(&attacker_key);

    // Each product activates its own license with its own key alone.
    let (s, seat) = call(
        &victim,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(1)})),
    )
    .await;
    assert_eq!(s, 201, "{seat}");
    let victim_seat = seat["activation_id"].as_str().expect("id").to_string();
    let (s, own) = call(
        &attacker,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(2)})),
    )
    .await;
    assert_eq!(s, 201, "{own}");
    let before = p.events().await;

    // With the victim's MAC, search shows the attacker nothing of theirs.
    let (s, found) = call(
        &attacker,
        "POST",
        &format!("{act}/v1/activations/search"),
        Some(&json!({"fingerprint": machine(1)})),
    )
    .await;
    assert_eq!(
        (s, found["activations"].clone()),
        (200, json!([])),
        "{found}"
    );
    // The victim's activation, by id, does not exist for the attacker.
    let not_found = Some("ACTIVATION_NOT_FOUND");
    for (method, path, body) in [
        (
            "POST",
            format!("/v1/activations/{victim_seat}/migrate"),
            Some(json!({"fingerprint": machine(3)})),
        ),
        (
            "POST",
            format!("/v1/activations/{victim_seat}/uninstall"),
            None,
        ),
        ("GET", format!("/v1/activations/{victim_seat}/file"), None),
        ("GET", format!("/v1/activations/{victim_seat}"), None),
    ] {
        let (s, b) = call(&attacker, method, &format!("{act}{path}"), body.as_ref()).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (404, not_found),
            "{method} {path}: {b}"
        );
    }
    let (s, b) = call(
        &attacker,
        "GET",
        &format!("{act}/v1/licenses/{victim_license}/activations"),
        None,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("LICENSE_NOT_FOUND")),
        "{b}"
    );
    // Nor can the attacker name the victim's key while holding its own.
    let (s, b) = call(
        &attacker,
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({"license_key": victim_key, "fingerprint": machine(1)})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("LICENSE_MISMATCH")),
        "{b}"
    );
    // The attacker's activation file opens the attacker's license only.
    let file = own["activation_file"].as_str().expect("file");
    let holder = client_authorized(&format!("Activation {file}"));
    let (s, b) = call(
        &holder,
        "POST",
        &format!("{act}/v1/activations/{victim_seat}/migrate"),
        Some(&json!({"fingerprint": machine(3)})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (404, not_found), "{b}");
    assert_eq!(
        p.events().await,
        before,
        "a refused request stored an event"
    );

    // The victim's seat is untouched and still valid.
    let (s, b) = call(
        &victim,
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({"fingerprint": machine(1)})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (200, Some("VALID")), "{b}");
    // The file is a credential for its own license: the product recovers
    // its file and migrates its own seat with it.
    let (s, b) = call(
        &holder,
        "GET",
        &format!(
            "{act}/v1/activations/{}/file",
            own["activation_id"].as_str().expect("id")
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &holder,
        "POST",
        &format!(
            "{act}/v1/activations/{}/migrate",
            own["activation_id"].as_str().expect("id")
        ),
        Some(&json!({"fingerprint": machine(4)})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // Its old file opens nothing any more (the activation moved on).
    let (s, b) = call(
        &holder,
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (401, Some("BAD_CREDENTIALS")),
        "{b}"
    );
    // A key nobody holds, or a mistyped one, opens nothing either.
    for bad in ["AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG", "not a key"] {
        let (s, b) = call(
            &license_client(bad),
            "POST",
            &format!("{act}/v1/validate"),
            Some(&json!({})),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (401, Some("BAD_CREDENTIALS")),
            "{bad}: {b}"
        );
    }
    // The vendor's own service, with an activator key, reaches every license.
    let (s, b) = call(
        &admin_client(),
        "GET",
        &format!("{act}/v1/activations/{victim_seat}"),
        None,
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("live")), "{b}");
    // Events a product caused name its license as the actor.
    let pool = p.stack.pool(Svc::Activation).await;
    let actor: Value = sqlx::query_scalar(
        "SELECT metadata -> 'actor' FROM events WHERE event_type = 'DeviceActivated' \
         AND payload ->> 'activation_id' = $1",
    )
    .bind(&victim_seat)
    .fetch_one(&pool)
    .await
    .expect("event");
    assert_eq!(actor, json!({"kind": "license", "id": victim_license}));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_component_fingerprint_neither_takes_a_seat_nor_matches_a_device() {
    let p = Products::start(json!({"max_activations": 1})).await;
    let act = p.act.clone();
    let (_, key) = p.license("One Seat Co").await;
    let product = license_client(&key);
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(1)})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let mac = json!({"mac": machine(1)["mac"]});
    for path in ["/v1/activations", "/v1/validate", "/v1/activations/search"] {
        let (s, b) = call(
            &product,
            "POST",
            &format!("{act}{path}"),
            Some(&json!({"fingerprint": mac})),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (422, Some("FINGERPRINT_TOO_SMALL"), Some("fingerprint")),
            "{path}: {b}"
        );
    }
    // Two components shared with the seated machine are still another
    // machine (the policy compares three): no second seat, no VALID.
    let two = json!({"mac": machine(1)["mac"], "disk": machine(1)["disk"], "board": "other-board"});
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": two})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("TOO_MANY_ACTIVATIONS")),
        "{b}"
    );
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({"fingerprint": two})),
    )
    .await;
    assert_eq!((s, b["valid"].as_bool()), (200, Some(false)), "{b}");
    // An operator's search by a MAC alone finds no device either.
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{act}/v1/activations/search"),
        Some(&json!({"fingerprint": mac})),
    )
    .await;
    assert_eq!((s, b["activations"].clone()), (200, json!([])), "{b}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_year_9999_client_time_does_not_lock_the_device_out() {
    let p = Products::start(json!({"max_activations": 2, "require_client_time": true})).await;
    let act = p.act.clone();
    let (_, key) = p.license("Clock Co").await;
    let product = license_client(&key);
    let now = chrono::Utc::now().to_rfc3339();
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(1), "client_time": "9999-12-31T23:59:59Z"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // The true time afterwards is fine, for activation and validation.
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(1), "client_time": now})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({"fingerprint": machine(1), "client_time": now})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (200, Some("VALID")), "{b}");
    // What was kept is the server's bound, not year 9999.
    let pool = p.stack.pool(Svc::Activation).await;
    let kept: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(last_client_time) FROM activations")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert!(
        kept < chrono::Utc::now() + chrono::Duration::hours(1),
        "{kept}"
    );
    // A clock set back an hour is still a rollback.
    let back = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(1), "client_time": back})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("CLOCK_ROLLBACK")),
        "{b}"
    );
    // This policy wants the clock: without it, no check is skipped.
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(2)})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (422, Some("CLIENT_TIME_REQUIRED"), Some("client_time")),
        "{b}"
    );
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({"fingerprint": machine(1)})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (200, Some("CLIENT_TIME_REQUIRED")),
        "{b}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_nonce_replay_is_refused_and_each_response_binds_its_nonce() {
    let p = Products::start(json!({"max_activations": 2})).await;
    let act = p.act.clone();
    let (_, key) = p.license("Air Gap Co").await;
    let operator = admin_client();
    let offline = |nonce: &str| {
        json!({"license_key": key, "fingerprint": machine(1), "nonce": nonce,
               "client_time": chrono::Utc::now().to_rfc3339()})
    };
    let url = format!("{act}/v1/activations/offline");
    let (s, first) = call(&operator, "POST", &url, Some(&offline("n-1"))).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(
        claims(first["response_file"].as_str().expect("file"))["nonce"],
        "n-1"
    );
    let (s, b) = call(&operator, "POST", &url, Some(&offline("n-1"))).await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (409, Some("NONCE_REUSED"), Some("nonce")),
        "{b}"
    );
    let (s, second) = call(&operator, "POST", &url, Some(&offline("n-2"))).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["activation_id"], first["activation_id"]);
    assert_eq!(
        claims(second["response_file"].as_str().expect("file"))["nonce"],
        "n-2"
    );
    let (s, b) = call(&operator, "POST", &url, Some(&offline("n-2"))).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("NONCE_REUSED")), "{b}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_presented_as_an_activation_file_is_refused_everywhere() {
    let p = Products::start(json!({"max_activations": 2})).await;
    let act = p.act.clone();
    let (_, key) = p.license("Receipt Co").await;
    let product = license_client(&key);
    let (s, seat) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(1)})),
    )
    .await;
    assert_eq!(s, 201, "{seat}");
    let id = seat["activation_id"].as_str().expect("id");
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations/{id}/uninstall"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let receipt = b["receipt"].as_str().expect("receipt").to_string();
    // Its own header typ and claims.
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(receipt.split('.').next().expect("header"))
            .expect("base64"),
    )
    .expect("json");
    assert_eq!(header["typ"], "uninstall-receipt+jwt");
    let c = claims(&receipt);
    assert_eq!(c["typ"], "uninstall-receipt");
    assert!(c.get("exp").is_none() && c.get("features").is_none(), "{c}");
    // Refused as a file: by verify, by key recovery, as a credential.
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations/verify"),
        Some(&json!({"activation_file": receipt})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (200, Some("NOT_AN_ACTIVATION_FILE")),
        "{b}"
    );
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/licenses/recover", p.iss),
        Some(&json!({"activation_file": receipt})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("INVALID_ACTIVATION_FILE")),
        "{b}"
    );
    let holder = client_authorized(&format!("Activation {receipt}"));
    let (s, b) = call(
        &holder,
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (401, Some("BAD_CREDENTIALS")),
        "{b}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_migration_returns_its_first_outcome() {
    let p = Products::start(json!({"max_activations": 1, "max_migrations": 3})).await;
    let act = p.act.clone();
    let (_, key) = p.license("Retry Co").await;
    let product = license_client(&key);
    let (s, seat) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(1)})),
    )
    .await;
    assert_eq!(s, 201, "{seat}");
    let id = seat["activation_id"].as_str().expect("id");
    let idem = Uuid::now_v7().to_string();
    let migrate = || {
        product
            .post(format!("{act}/v1/activations/{id}/migrate"))
            .header("Idempotency-Key", &idem)
            .json(&json!({"fingerprint": machine(2)}))
            .send()
    };
    let first = migrate().await.expect("sent");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let again = migrate().await.expect("sent");
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["activation_id"], first["activation_id"]);
    assert_eq!(again["migrated_from"], first["migrated_from"]);
    let pool = p.stack.pool(Svc::Activation).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'ActivationMigrated'"
        )
        .await,
        1
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_product_checks_its_host_with_its_key_in_a_header_not_the_url() {
    let p = Products::start(json!({"max_activations": 1})).await;
    let dom = p.stack.url(Svc::Domain);
    let (_, key) = p.license("Host Co").await;
    let (_, other_key) = p.license("Other Co").await;
    let url = format!("{dom}/v1/domain-check?host=www.example.com");
    let product = license_client(&key);
    let answered = wait_until(Duration::from_secs(15), || async {
        call(&product, "GET", &url, None).await.1["code"] == "NOT_BOUND"
    })
    .await;
    assert!(answered, "the license reached domain binding");
    let (s, b) = call(&product, "GET", &url, None).await;
    assert_eq!((s, b["authorized"].as_bool()), (200, Some(false)), "{b}");
    // No key in the URL beside this credential, not even its own.
    for k in [&other_key, &key] {
        let (s, b) = call(&product, "GET", &format!("{url}&license_key={k}"), None).await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (422, Some("INVALID_QUERY"), Some("license_key")),
            "{b}"
        );
    }
    // The vendor's service with an activator key still names the key.
    let (s, b) = call(
        &admin_client(),
        "GET",
        &format!("{url}&license_key={key}"),
        None,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (200, Some("NOT_BOUND")), "{b}");
    let (s, b) = call(&admin_client(), "GET", &url, None).await;
    assert_eq!((s, b["field"].as_str()), (422, Some("license_key")), "{b}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bootstrap_admin_key_rotates_and_is_revoked_without_a_restart() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let db = infra.fresh_db("issuance").await;
    let file = std::env::temp_dir().join(format!("{prefix}-admin.key"));
    let first = format!("AKIDboot1.{}", "a".repeat(64));
    let second = format!("AKIDboot2.{}", "b".repeat(64));
    std::fs::write(&file, format!("{first}\n")).expect("key file");
    let mut config = issuance_config(&infra, &db, &prefix);
    config.common.admin_key = None;
    config.common.admin_key_file = Some(file.display().to_string());
    let options = issuance::Options {
        handle_signals: false,
        ..Default::default()
    };
    let running = issuance::start(config, options)
        .await
        .expect("issuance starts");
    let url = format!("{}/v1/api-keys", running.url());
    let status = |token: String| {
        let url = url.clone();
        async move {
            call(
                &client_with(&token),
                "POST",
                &url,
                Some(&json!({"scopes": ["auditor"]})),
            )
            .await
            .0
        }
    };
    assert_eq!(status(first.clone()).await, 201);
    assert_eq!(status(second.clone()).await, 401);
    // Rotated: the old key stops, the new one works, no restart.
    std::fs::write(&file, format!("{second}\n")).expect("key file");
    let rotated = wait_until(Duration::from_secs(5), || async {
        status(first.clone()).await == 401 && status(second.clone()).await == 201
    })
    .await;
    assert!(rotated, "the rotation took effect");
    // Revoked: an empty file holds no key.
    std::fs::write(&file, "").expect("key file");
    let revoked = wait_until(Duration::from_secs(5), || async {
        status(second.clone()).await == 401
    })
    .await;
    assert!(revoked, "the revocation took effect");
    let _ = std::fs::remove_file(&file);
    running.stop().await;
}
