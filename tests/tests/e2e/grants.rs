//! Grant sync end to end: license clients and their credentials, floating
//! seats under concurrency, heartbeats and reclaim, expiry semantics on a
//! test clock, the sync protocol with signed grant documents checked by a
//! non-Rust JOSE library, and a distributor instance syncing from a vendor
//! instance.

use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{json, Value};
use uuid::Uuid;

/// Issues a license at issuance; its id and key.
async fn issue(issuance: &str, body: Value) -> (String, String) {
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{issuance}/v1/licenses"),
        Some(&body),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    (
        b["id"].as_str().expect("id").to_string(),
        b["key"].as_str().expect("key").to_string(),
    )
}

fn floating(seats: u32) -> Value {
    json!({
        "product": "integration-platform", "edition": "enterprise",
        "customer": "Plant Co", "kind": "formal",
        "modules": ["data-integration"],
        "features": ["datasource-mgmt", "data-access", "data-preprocess", "smart-scheduling"],
        "seats": {"data-access": seats},
    })
}

/// Sets the enterprise edition's policy (before licenses are issued: a
/// license keeps the policy it was issued under).
async fn set_policy(issuance: &str, policy: Value) {
    let (s, b) = call(
        &admin_client(),
        "PUT",
        &format!("{issuance}/v1/products/integration-platform/policy"),
        Some(&json!({"edition": "enterprise", "policy": policy})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// Waits until grant sync knows the license; its seats view.
async fn wait_for_grant(grants: &str, license_id: &str) -> Value {
    let url = format!("{grants}/v1/licenses/{license_id}/leases");
    let admin = admin_client();
    let known = wait_until(Duration::from_secs(15), || async {
        call(&admin, "GET", &url, None).await.0 == 200
    })
    .await;
    assert!(known, "license {license_id} reached grant sync");
    call(&admin, "GET", &url, None).await.1
}

/// Registers a client for `licenses`; its body (with the token).
async fn register(grants: &str, name: &str, licenses: &[&str], allowlist: &[&str]) -> Value {
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{grants}/v1/clients"),
        Some(&json!({"name": name, "licenses": licenses, "allowlist": allowlist})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    b
}

fn token(client: &Value) -> String {
    client["token"].as_str().expect("token").to_string()
}

async fn checkout(grants: &str, token: &str, license_id: &str, feature: &str) -> (u16, Value) {
    call(
        &client_with(token),
        "POST",
        &format!("{grants}/v1/leases"),
        Some(&json!({"license_id": license_id, "feature": feature})),
    )
    .await
}

async fn heartbeat(grants: &str, token: &str, lease_id: &str) -> (u16, Value) {
    call(
        &client_with(token),
        "POST",
        &format!("{grants}/v1/leases/{lease_id}/heartbeat"),
        None,
    )
    .await
}

async fn sync(grants: &str, token: &str, body: Value) -> (u16, Value) {
    call(
        &client_with(token),
        "POST",
        &format!("{grants}/v1/sync"),
        Some(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_connect_with_their_credentials_only_and_get_clear_errors() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let grants = start_grant_sync(&infra, &prefix).await;
    let (g, iss) = (grants.url(), issuance.url());
    let (license, _) = issue(&iss, floating(5)).await;
    let (other, _) = issue(&iss, floating(5)).await;
    wait_for_grant(&g, &license).await;
    wait_for_grant(&g, &other).await;

    let client = register(&g, "Plant 7", &[&license], &[]).await;
    assert_eq!(client["scopes"], json!(["sync-client"]));
    let good = token(&client);
    let (s, me) = call(
        &client_with(&good),
        "GET",
        &format!("{g}/v1/clients/me"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["client_id"], client["client_id"]);

    // Wrong secret, unknown id, no key.
    let key_id = client["key_id"].as_str().expect("key id");
    for bad in [
        format!("{key_id}.{}", "0".repeat(64)),
        "SCnosuch.abc".into(),
    ] {
        let (s, b) = call(
            &client_with(&bad),
            "POST",
            &format!("{g}/v1/sync"),
            Some(&json!({})),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (401, Some("BAD_CREDENTIALS")),
            "{b}"
        );
    }
    let (s, b) = call(
        &reqwest::Client::new(),
        "POST",
        &format!("{g}/v1/sync"),
        Some(&json!({})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    // Off the allowlist.
    let fenced = register(&g, "Fenced", &[&license], &["10.9.9.9", "192.0.2.0/24"]).await;
    let (s, b) = sync(&g, &token(&fenced), json!({})).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("ADDRESS_NOT_ALLOWED")));
    let local = register(&g, "Local", &[&license], &["127.0.0.1"]).await;
    assert_eq!(sync(&g, &token(&local), json!({"wait_ms": 0})).await.0, 200);
    // A license not assigned to the client.
    let (s, b) = checkout(&g, &good, &other, "data-access").await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("LICENSE_NOT_ASSIGNED")),
        "{b}"
    );
    assert_eq!(b["field"], "license_id");
    // A key of another scope, and the admin key (no client), are refused.
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{g}/v1/sync"),
        Some(&json!({})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("NOT_A_CLIENT")));
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{iss}/v1/api-keys"),
        Some(&json!({"scopes": ["auditor"]})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let auditor = b["token"].as_str().expect("token").to_string();
    let refused = wait_until(Duration::from_secs(10), || async {
        call(
            &client_with(&auditor),
            "POST",
            &format!("{g}/v1/sync"),
            Some(&json!({})),
        )
        .await
        .1["code"]
            == "INSUFFICIENT_SCOPE"
    })
    .await;
    assert!(refused, "a key without sync-client is refused");

    // Bad registrations change nothing.
    let before = stored_events(&grants.db, "ClientRegistered").await;
    let eleven: Vec<String> = (0..11).map(|i| format!("10.0.0.{i}")).collect();
    let nosuch = uuid::Uuid::now_v7().to_string();
    for (body, code, field) in [
        (
            json!({"name": "x", "licenses": [license], "allowlist": eleven}),
            "ALLOWLIST_TOO_LONG",
            "allowlist",
        ),
        (
            json!({"name": "x", "licenses": [nosuch]}),
            "LICENSE_NOT_FOUND",
            "licenses",
        ),
        (
            json!({"name": "", "licenses": [license]}),
            "INVALID_NAME",
            "name",
        ),
        (
            json!({"name": "x", "licenses": [license], "callback_url": "ftp://x"}),
            "INVALID_CALLBACK_URL",
            "callback_url",
        ),
        (
            json!({"name": "x", "licenses": [license], "extra": 1}),
            "UNKNOWN_FIELD",
            "extra",
        ),
    ] {
        let (s, b) = call(
            &admin_client(),
            "POST",
            &format!("{g}/v1/clients"),
            Some(&body),
        )
        .await;
        assert!((400..500).contains(&s), "{body} -> {s} {b}");
        assert_eq!(
            (b["code"].as_str(), b["field"].as_str()),
            (Some(code), Some(field)),
            "{b}"
        );
    }
    assert_eq!(stored_events(&grants.db, "ClientRegistered").await, before);

    // A revoked client is locked out at once, and its leases end.
    let (s, lease) = checkout(&g, &good, &license, "data-access").await;
    assert_eq!(s, 201, "{lease}");
    let lease_id = lease["lease_id"].as_str().expect("lease").to_string();
    let client_id = client["client_id"].as_str().expect("id");
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{g}/v1/clients/{client_id}/revoke"),
        Some(&json!({"reason": "decommissioned"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let locked = wait_until(Duration::from_secs(3), || async {
        sync(&g, &good, json!({})).await.1["code"] == "API_KEY_REVOKED"
    })
    .await;
    assert!(locked, "the revoked client's credentials stop working");
    let p = pool(&grants.db).await;
    let sql =
        format!("SELECT count(*) FROM leases WHERE lease_id = '{lease_id}' AND status = 'revoked'");
    let ended = wait_for_count(&p, &sql, 1, Duration::from_secs(15)).await;
    assert!(ended, "the revoked client's lease ended");
    let reason: String = sqlx::query_scalar(
        "SELECT payload->>'reason' FROM events WHERE event_type = 'LeasesRevoked'",
    )
    .fetch_one(&p)
    .await
    .expect("event");
    assert_eq!(reason, "client_revoked");

    issuance.running.stop().await;
    grants.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_clients_racing_for_ten_seats_get_exactly_ten_leases() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let grants = start_grant_sync(&infra, &prefix).await;
    let g = grants.url();
    let (license, _) = issue(&issuance.url(), floating(10)).await;
    let seats = wait_for_grant(&g, &license).await;
    assert_eq!(seats["seats"]["data-access"]["seats"], 10);
    let mut tokens = Vec::new();
    for i in 0..30 {
        tokens.push(token(
            &register(&g, &format!("worker {i}"), &[&license], &[]).await,
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for t in tokens {
        let (g, license) = (g.clone(), license.clone());
        tasks.spawn(async move { checkout(&g, &t, &license, "data-access").await });
    }
    assert_eq!(tally(tasks, "NO_SEATS_AVAILABLE").await, (10, 20));
    assert_eq!(stored_events(&grants.db, "LeaseGranted").await, 10);
    let (_, view) = call(
        &admin_client(),
        "GET",
        &format!("{g}/v1/licenses/{license}/leases"),
        None,
    )
    .await;
    assert_eq!(view["seats"]["data-access"]["in_use"], 10);
    assert_eq!(view["leases"].as_array().map(Vec::len), Some(10));
    let p = pool(&grants.db).await;
    assert_eq!(
        count(&p, "SELECT count(*) FROM leases WHERE status = 'live'").await,
        10
    );

    issuance.running.stop().await;
    grants.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_whose_heartbeats_stop_is_reclaimed_after_ttl_and_grace() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let grants = start_grant_sync(&infra, &prefix).await;
    let g = grants.url();
    set_policy(
        &issuance.url(),
        json!({"floating_seats": 1, "lease_ttl_secs": 2, "lease_grace_secs": 1}),
    )
    .await;
    let (license, _) = issue(
        &issuance.url(),
        json!({"product": "integration-platform", "edition": "enterprise",
               "customer": "Plant Co", "kind": "formal", "features": ["data-access"]}),
    )
    .await;
    wait_for_grant(&g, &license).await;
    let a = token(&register(&g, "a", &[&license], &[]).await);
    let b = token(&register(&g, "b", &[&license], &[]).await);
    let (s, lease) = checkout(&g, &a, &license, "data-access").await;
    assert_eq!(s, 201, "{lease}");
    assert_eq!(
        (lease["ttl_secs"].as_u64(), lease["grace_secs"].as_u64()),
        (Some(2), Some(1))
    );
    let lease_id = lease["lease_id"].as_str().expect("id").to_string();
    assert_eq!(
        checkout(&g, &b, &license, "data-access").await.1["code"],
        "NO_SEATS_AVAILABLE"
    );

    // Heartbeats keep it alive well past TTL + grace.
    let mut last = String::new();
    let mut last_beat = Instant::now();
    for _ in 0..8 {
        last_beat = Instant::now();
        let (s, hb) = heartbeat(&g, &a, &lease_id).await;
        assert_eq!(s, 200, "{hb}");
        let deadline = hb["deadline"].as_str().expect("deadline").to_string();
        assert!(deadline >= last, "deadlines move forward");
        last = deadline;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, l) = call(
        &client_with(&a),
        "GET",
        &format!("{g}/v1/leases/{lease_id}"),
        None,
    )
    .await;
    assert_eq!(l["status"], "live");
    assert_eq!(
        stored_events(&grants.db, "LeaseGranted").await,
        1,
        "no event per heartbeat"
    );

    // Heartbeats stop: reclaimed once TTL + grace has passed since the last
    // one (sent after `last_beat`), not before.
    let stopped = last_beat;
    let reclaimed = wait_until(Duration::from_secs(15), || async {
        call(
            &client_with(&a),
            "GET",
            &format!("{g}/v1/leases/{lease_id}"),
            None,
        )
        .await
        .1["status"]
            == "expired"
    })
    .await;
    assert!(reclaimed, "the lease was reclaimed");
    assert!(
        // TTL 2 s + grace 1 s, less 50 ms for wall clock against monotonic.
        stopped.elapsed() >= Duration::from_millis(2_950),
        "reclaimed after {:?}, before TTL + grace",
        stopped.elapsed()
    );
    assert_eq!(stored_events(&grants.db, "LeaseExpired").await, 1);
    let (s, late) = heartbeat(&g, &a, &lease_id).await;
    assert_eq!(
        (s, late["code"].as_str()),
        (410, Some("LEASE_EXPIRED")),
        "{late}"
    );
    // The seat is free again.
    let (s, again) = checkout(&g, &b, &license, "data-access").await;
    assert_eq!(s, 201, "{again}");

    issuance.running.stop().await;
    grants.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_expiry_live_leases_keep_renewing_while_new_checkouts_fail_and_suspension_ends_them()
{
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let clock = ManualClock::new();
    let issuance = start_issuance_on(&infra, &prefix, clock.clone()).await;
    let grants = start_grant_sync_with(
        &infra,
        &prefix,
        grant_sync::Options {
            handle_signals: false,
            clock: clock.clone(),
        },
    )
    .await;
    let (g, iss) = (grants.url(), issuance.url());
    set_policy(
        &iss,
        json!({"floating_seats": 5, "lease_ttl_secs": 7200, "lease_grace_secs": 60}),
    )
    .await;
    use issuance::domain::Clock;
    let (license, _) = issue(
        &iss,
        json!({"product": "integration-platform", "edition": "enterprise",
               "customer": "Plant Co", "kind": "temporary", "features": ["data-access"],
               "expires_at": (clock.now() + chrono::Duration::hours(1)).to_rfc3339()}),
    )
    .await;
    wait_for_grant(&g, &license).await;
    let a = token(&register(&g, "a", &[&license], &[]).await);
    let (s, lease) = checkout(&g, &a, &license, "data-access").await;
    assert_eq!(s, 201, "{lease}");
    let lease_id = lease["lease_id"].as_str().expect("id").to_string();

    // The license expires (the issuance scheduler, on the test clock).
    clock.advance(chrono::Duration::minutes(61));
    let expired = wait_until(Duration::from_secs(15), || async {
        call(
            &admin_client(),
            "GET",
            &format!("{g}/v1/licenses/{license}/leases"),
            None,
        )
        .await
        .1["status"]
            == "expired"
    })
    .await;
    assert!(expired, "grant sync saw the expiry");
    // Work already granted continues: the lease renews ...
    let (s, hb) = heartbeat(&g, &a, &lease_id).await;
    assert_eq!(s, 200, "{hb}");
    // ... while new work is refused.
    let (s, b) = checkout(&g, &a, &license, "data-access").await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("LICENSE_EXPIRED")),
        "{b}"
    );
    let (_, doc) = sync(&g, &a, json!({"wait_ms": 0})).await;
    assert_eq!(doc["grants"][0]["status"], "expired");
    assert_eq!(
        doc["grant_document"]
            .as_str()
            .map(claims)
            .map(|c| c["leases"][0]["lease_id"].clone()),
        Some(json!(lease_id))
    );

    // Renewed, then suspended: suspension ends the lease at once.
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{iss}/v1/licenses/{license}/renew"),
        Some(&json!({"expires_at": (clock.now() + chrono::Duration::days(30)).to_rfc3339(), "order_ref": "PO-1"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let live = wait_until(Duration::from_secs(15), || async {
        checkout(&g, &a, &license, "data-access").await.0 == 201
    })
    .await;
    assert!(live, "new work is allowed again after the renewal");
    let (_, first) = sync(&g, &a, json!({"wait_ms": 0})).await;
    let cursor = first["next_cursor"].as_str().expect("cursor").to_string();
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{iss}/v1/licenses/{license}/suspend"),
        Some(&json!({"reason": "unpaid invoice"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ended = wait_until(Duration::from_secs(15), || async {
        heartbeat(&g, &a, &lease_id).await.0 == 409
    })
    .await;
    assert!(ended, "the suspension ended the lease");
    let (_, hb) = heartbeat(&g, &a, &lease_id).await;
    assert_eq!(hb["code"], "LEASE_ENDED");
    // The client learns both: its grant changed, its lease was revoked.
    let mut kinds: Vec<String> = Vec::new();
    let mut cursor = cursor;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !kinds.iter().any(|k| k == "lease_revoked") {
        let (_, delta) = sync(&g, &a, json!({"cursor": cursor, "wait_ms": 2000})).await;
        cursor = delta["next_cursor"].as_str().expect("cursor").to_string();
        kinds.extend(
            delta["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .filter_map(|c| c["kind"].as_str().map(str::to_string)),
        );
    }
    assert!(kinds.iter().any(|k| k == "grant_changed"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "lease_revoked"), "{kinds:?}");
    assert_eq!(stored_events(&grants.db, "LeasesRevoked").await, 1);

    issuance.running.stop().await;
    grants.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grant_document_verifies_with_python_jose_and_stops_being_valid_at_valid_until() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    // Grant sync's clock stands 72 h minus 15 s behind: with the policy's 72 h
    // of offline grace, its documents expire 15 s from now in real time
    // (room for the set-up below on a loaded machine).
    let clock = ManualClock::new();
    clock.advance(chrono::Duration::seconds(15) - chrono::Duration::hours(72));
    let grants = start_grant_sync_with(
        &infra,
        &prefix,
        grant_sync::Options {
            handle_signals: false,
            clock: clock.clone(),
        },
    )
    .await;
    let g = grants.url();
    let (license, _) = issue(&issuance.url(), floating(3)).await;
    wait_for_grant(&g, &license).await;
    let client = register(&g, "Plant 7", &[&license], &[]).await;
    let (s, answer) = sync(&g, &token(&client), json!({})).await;
    assert_eq!(s, 200, "{answer}");
    let doc = answer["grant_document"]
        .as_str()
        .expect("document")
        .to_string();
    let (_, jwks) = call(
        &reqwest::Client::new(),
        "GET",
        &format!("{g}/.well-known/jwks.json"),
        None,
    )
    .await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");

    let payload = python_verify(&jwks, true, &doc).expect("jwcrypto verifies the document");
    assert_eq!(payload["typ"], "grant-document");
    assert_eq!(payload["client_id"], client["client_id"]);
    assert_eq!(payload["grants"][0]["license_id"], license.as_str());
    assert_eq!(payload["grants"][0]["seats"]["data-access"], 3);
    assert_eq!(payload["valid_until"], answer["valid_until"]);
    let valid_until =
        chrono::DateTime::parse_from_rfc3339(answer["valid_until"].as_str().expect("t"))
            .expect("rfc3339");
    assert_eq!(payload["exp"].as_i64(), Some(valid_until.timestamp()));
    // Any altered byte fails.
    let mut altered = doc.clone().into_bytes();
    let i = doc.find('.').expect("dot") + 5;
    altered[i] = altered_b64url(altered[i]);
    assert!(python_verify(&jwks, false, &String::from_utf8(altered).expect("utf8")).is_none());

    // Past valid_until it no longer holds.
    let wait = (valid_until.timestamp() + 1 - chrono::Utc::now().timestamp()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;
    assert!(
        python_verify(&jwks, false, &doc).is_some(),
        "the signature still verifies"
    );
    assert!(
        python_verify(&jwks, true, &doc).is_none(),
        "but the document is no longer valid"
    );

    issuance.running.stop().await;
    grants.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_long_polls_for_domain_rebinding_revocations_and_grant_changes() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let activation = start_activation(&infra, &prefix).await;
    let domain = start_domain_binding(&infra, &prefix).await;
    let grants = start_grant_sync(&infra, &prefix).await;
    let (g, iss) = (grants.url(), issuance.url());
    let (license, key) = issue(
        &iss,
        json!({"product": "cloud-engine", "edition": "mainland", "customer": "Web Co",
               "kind": "formal", "features": ["site-engine"],
               "expires_at": "2030-01-01T00:00:00Z"}),
    )
    .await;
    wait_for_grant(&g, &license).await;
    let t = token(&register(&g, "Web Co cluster", &[&license], &[]).await);
    let (s, first) = sync(&g, &t, json!({})).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["changes"][0]["kind"], "grant_added");
    assert_eq!(first["revocations"], json!([]));
    let mut cursor = first["next_cursor"].as_str().expect("cursor").to_string();

    // Nothing changes: the long poll waits its full time.
    let started = Instant::now();
    let (_, idle) = sync(&g, &t, json!({"cursor": cursor, "wait_ms": 700})).await;
    assert_eq!(idle["changes"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(650));
    assert_eq!(idle["next_cursor"].as_str(), Some(cursor.as_str()));

    // A domain binding wakes a waiting sync.
    let waiting = {
        let (g, t, cursor) = (g.clone(), t.clone(), cursor.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = sync(&g, &t, json!({"cursor": cursor, "wait_ms": 18000})).await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, b) = call(
        &admin_client(),
        "PUT",
        &format!("{}/v1/licenses/{license}/domain", domain.url()),
        Some(&json!({"domain": "shop.example.com"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ((s, woke), took) = waiting.await.expect("task");
    assert_eq!(s, 200, "{woke}");
    assert!(took < Duration::from_secs(15), "woke after {took:?}");
    assert_eq!(woke["changes"][0]["kind"], "domain_rebound", "{woke}");
    assert_eq!(woke["changes"][0]["detail"]["domain"], "example.com");
    assert_eq!(woke["grants"][0]["domain"], "example.com");
    assert_eq!(
        claims(woke["grant_document"].as_str().expect("doc"))["grants"][0]["domain"],
        "example.com"
    );
    cursor = woke["next_cursor"].as_str().expect("cursor").to_string();

    // A migrated activation enters the revocation list.
    let device = |n: u32| json!({"machine_id": format!("m{n}"), "disk": format!("d{n}"), "board": format!("b{n}"), "mac": format!("a{n}")});
    let (s, act) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/activations", activation.url()),
        Some(&json!({"license_key": key, "fingerprint": device(1)})),
    )
    .await;
    assert_eq!(s, 201, "{act}");
    let old = act["activation_id"].as_str().expect("id").to_string();
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/activations/{old}/migrate", activation.url()),
        Some(&json!({"fingerprint": device(2)})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let mut revoked = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (_, d) = sync(&g, &t, json!({"cursor": cursor, "wait_ms": 2000})).await;
        if d["revocations"].as_array().is_some_and(|r| !r.is_empty()) {
            revoked = d;
            break;
        }
    }
    assert!(!revoked.is_null(), "the revocation reached the client");
    assert_eq!(revoked["revocations"][0]["activation_id"], old.as_str());
    assert_eq!(revoked["revocations"][0]["reason"], "migrated");
    assert_eq!(revoked["changes"][0]["kind"], "activation_revoked");
    // A first sync lists the whole revocation list.
    assert_eq!(
        sync(&g, &t, json!({})).await.1["revocations"][0]["activation_id"],
        old.as_str()
    );
    cursor = revoked["next_cursor"].as_str().expect("cursor").to_string();

    // A renewal is a grant change.
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{iss}/v1/licenses/{license}/renew"),
        Some(&json!({"expires_at": "2031-01-01T00:00:00Z", "order_ref": "PO-9"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, d) = sync(&g, &t, json!({"cursor": cursor, "wait_ms": 15000})).await;
    assert_eq!(d["changes"][0]["kind"], "grant_changed", "{d}");
    assert_eq!(
        d["changes"][0]["detail"]["expires_at"],
        "2031-01-01T00:00:00Z"
    );
    assert_eq!(d["grants"][0]["expires_at"], "2031-01-01T00:00:00Z");

    // A clock set back beyond the tolerance is refused and recorded.
    let now = chrono::Utc::now();
    assert_eq!(
        sync(
            &g,
            &t,
            json!({"client_time": now.to_rfc3339(), "wait_ms": 0})
        )
        .await
        .0,
        200
    );
    let back = now - chrono::Duration::hours(1);
    let (s, b) = sync(
        &g,
        &t,
        json!({"client_time": back.to_rfc3339(), "wait_ms": 0}),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("CLOCK_ROLLBACK")),
        "{b}"
    );
    assert_eq!(
        stored_events(&grants.db, "ClientClockRollbackDetected").await,
        1
    );
    // A bad cursor is a 400 naming the field.
    let (s, b) = sync(&g, &t, json!({"cursor": "nonsense"})).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("cursor")));

    for r in [issuance, activation, domain, grants] {
        r.running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_distributor_syncs_from_the_vendor_and_serves_its_own_clients() {
    let infra = Infra::get();
    // Two instances on one broker: the vendor's and the distributor's.
    let (vendor_prefix, dist_prefix) = (infra.prefix().await, infra.prefix().await);
    let issuance = start_issuance(&infra, &vendor_prefix).await;
    // The vendor serves HTTPS, with a certificate of the test CA.
    let vendor = start_grant_sync_configured(&infra, &vendor_prefix, |c| {
        let (cert, key) = test_ca().server("vendor");
        c.common.tls_cert_file = Some(cert);
        c.common.tls_key_file = Some(key);
    })
    .await;
    // The distributor sells products of its own too: the same catalog codes.
    // It trusts the test CA and may reach its upstream on loopback.
    let dist_issuance = start_issuance(&infra, &dist_prefix).await;
    let dist = start_grant_sync_configured(&infra, &dist_prefix, |c| {
        c.upstream_ca_file = Some(test_ca().ca_file.display().to_string());
        c.upstream_allowed_networks = vec!["127.0.0.0/8".into()];
    })
    .await;
    let (v, d) = (vendor.url(), dist.url());
    assert!(v.starts_with("https://127.0.0.1:"), "{v}");
    let (license, _) = issue(&issuance.url(), floating(4)).await;
    wait_for_grant(&v, &license).await;
    let dp = pool(&dist.db).await;
    let own_catalog = wait_until(Duration::from_secs(15), || async {
        count(
            &dp,
            "SELECT count(*) FROM products WHERE upstream_id IS NULL",
        )
        .await
            == 2
    })
    .await;
    assert!(
        own_catalog,
        "the distributor's own catalog reached its grant sync"
    );
    // The vendor knows the distributor as one of its clients.
    let member = register(&v, "Distributor East", &[&license], &[]).await;
    let member_id = member["client_id"].as_str().expect("id").to_string();
    let admin = admin_client();

    // A wrong secret is recorded as such by the check.
    let (s, bad) = call(
        &admin,
        "POST",
        &format!("{d}/v1/upstreams"),
        Some(&json!({"name": "Vendor (bad)", "member_id": member_id, "endpoint": v,
                     "secret": format!("{}.{}", member["key_id"].as_str().expect("k"), "f".repeat(64))})),
    )
    .await;
    assert_eq!(s, 201, "{bad}");
    let bad_id = bad["upstream_id"].as_str().expect("id");
    let (_, checked) = call(
        &admin,
        "POST",
        &format!("{d}/v1/upstreams/{bad_id}/check"),
        None,
    )
    .await;
    assert_eq!(
        checked["last_check"]["status"], "bad_credentials",
        "{checked}"
    );

    let (s, up) = call(
        &admin,
        "POST",
        &format!("{d}/v1/upstreams"),
        Some(
            &json!({"name": "Vendor", "member_id": member_id, "endpoint": v,
                     "secret": token(&member), "price_protection": true, "remark": "east"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{up}");
    assert!(up.get("secret").is_none());
    let up_id = up["upstream_id"].as_str().expect("id").to_string();
    let (_, checked) = call(
        &admin,
        "POST",
        &format!("{d}/v1/upstreams/{up_id}/check"),
        None,
    )
    .await;
    assert_eq!(checked["last_check"]["status"], "ok", "{checked}");
    assert!(
        checked["last_check"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("signing keys pinned")),
        "{checked}"
    );
    assert_eq!(checked["resources"]["licenses"]["status"], "never");

    let (s, synced) = call(
        &admin,
        "POST",
        &format!("{d}/v1/upstreams/{up_id}/sync"),
        Some(&json!({"resource": "all"})),
    )
    .await;
    assert_eq!(s, 200, "{synced}");
    for r in ["catalog", "licenses", "revocations"] {
        assert_eq!(synced["resources"][r]["status"], "ok", "{r}: {synced}");
        assert!(synced["resources"][r]["last_sync_at"].is_string());
    }
    // The vendor's product of the same code does not replace the
    // distributor's own.
    assert_eq!(synced["resources"]["catalog"]["items"], 0, "{synced}");
    assert!(
        synced["resources"]["catalog"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 skipped")),
        "{synced}"
    );
    assert_eq!(synced["resources"]["licenses"]["items"], 1);
    let (_, shown) = call(&admin, "GET", &format!("{d}/v1/upstreams/{up_id}"), None).await;
    assert_eq!(shown["resources"], synced["resources"]);
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{d}/v1/upstreams/{up_id}/sync"),
        Some(&json!({"resource": "everything"})),
    )
    .await;
    assert_eq!((s, b["field"].as_str()), (422, Some("resource")));

    // The same commands over Kafka, from the admin topic only: the check
    // answers its stored outcome to a duplicate without calling the
    // upstream again; the outcome names the upstream and nothing of its
    // state (which is an administrator's to read).
    let admin_topic = contracts::Topics::new(&dist_prefix).admin_commands("grants");
    let checks = || {
        count(
            &dp,
            "SELECT count(*) FROM events WHERE event_type = 'UpstreamChecked'",
        )
    };
    let before = checks().await;
    let check = envelope(Uuid::now_v7(), "CheckUpstream", &up_id, json!({}));
    let k = send_and_await(
        &infra,
        &dist_prefix,
        &infra.kafka("admin"),
        &admin_topic,
        &check,
    )
    .await;
    assert_eq!(k.status, contracts::OutcomeStatus::Accepted, "{k:?}");
    assert_eq!(k.result, Some(json!({"upstream_id": up_id})));
    assert_eq!(checks().await, before + 1);
    let again = send_and_await(
        &infra,
        &dist_prefix,
        &infra.kafka("admin"),
        &admin_topic,
        &check,
    )
    .await;
    assert_eq!((again.status, again.sequence), (k.status, k.sequence));
    assert_eq!(
        checks().await,
        before + 1,
        "a duplicate check calls nothing"
    );
    let sync_env = envelope(
        Uuid::now_v7(),
        "SyncUpstream",
        &up_id,
        json!({"resource": "licenses"}),
    );
    let k = send_and_await(
        &infra,
        &dist_prefix,
        &infra.kafka("admin"),
        &admin_topic,
        &sync_env,
    )
    .await;
    assert_eq!(k.status, contracts::OutcomeStatus::Accepted, "{k:?}");
    assert_eq!(k.result, Some(json!({"upstream_id": up_id})));
    // On the callers' topic both are refused before any call.
    let callers = contracts::Topics::new(&dist_prefix).commands("grants");
    for (command_type, payload) in [
        ("CheckUpstream", json!({})),
        ("SyncUpstream", json!({"resource": "all"})),
    ] {
        let env = envelope(Uuid::now_v7(), command_type, &up_id, payload);
        let k = send_and_await(&infra, &dist_prefix, &infra.caller(), &callers, &env).await;
        assert_eq!(
            k.error.as_ref().map(|e| e.code.as_str()),
            Some("INSUFFICIENT_SCOPE"),
            "{command_type}"
        );
    }
    assert_eq!(checks().await, before + 1);

    // What came from the vendor entered as the distributor's own events.
    let p = pool(&dist.db).await;
    let imported: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, payload FROM events WHERE event_type LIKE 'Upstream%Imported' ORDER BY global_position",
    )
    .fetch_all(&p)
    .await
    .expect("events");
    assert!(imported.iter().any(|(t, p)| t == "UpstreamLicenseImported"
        && p["upstream_id"] == up_id.as_str()
        && p["grant"]["license_id"] == license.as_str()));
    assert!(!imported.iter().any(|(t, _)| t == "UpstreamProductImported"));
    let upstream_products: i64 =
        sqlx::query_scalar("SELECT count(*) FROM products WHERE upstream_id IS NOT NULL")
            .fetch_one(&p)
            .await
            .expect("count");
    assert_eq!(upstream_products, 0);
    let secret = token(&member);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%'")
            .bind(secret.split('.').nth(1).expect("secret"))
            .fetch_one(&p)
            .await
            .expect("count");
    assert_eq!(stored, 0, "the upstream secret is in no event");

    // A client of the distributor syncs and leases from the vendor's license.
    let plant = register(&d, "Plant 9", &[&license], &[]).await;
    let pt = token(&plant);
    let (s, first) = sync(&d, &pt, json!({})).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["grants"][0]["license_id"], license.as_str());
    let (_, jwks) = call(
        &reqwest::Client::new(),
        "GET",
        &format!("{d}/.well-known/jwks.json"),
        None,
    )
    .await;
    let payload = python_verify(&jwks, true, first["grant_document"].as_str().expect("doc"))
        .expect("the distributor's document verifies against its JWKS");
    assert_eq!(payload["iss"], "licensing.grant-sync");
    let (s, lease) = checkout(&d, &pt, &license, "data-integration").await;
    assert_eq!(s, 201, "{lease}");
    assert_eq!(lease["features"].as_array().map(Vec::len), Some(4));
    let lease_id = lease["lease_id"].as_str().expect("id").to_string();
    let cursor = first["next_cursor"].as_str().expect("cursor").to_string();

    // The vendor suspends the license; the next pull ends the lease downstream.
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{}/v1/licenses/{license}/suspend", issuance.url()),
        Some(&json!({"reason": "distributor contract paused"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let suspended = wait_until(Duration::from_secs(15), || async {
        call(
            &admin,
            "POST",
            &format!("{d}/v1/upstreams/{up_id}/sync"),
            Some(&json!({"resource": "licenses"})),
        )
        .await;
        call(
            &admin,
            "GET",
            &format!("{d}/v1/licenses/{license}/leases"),
            None,
        )
        .await
        .1["status"]
            == "suspended"
    })
    .await;
    assert!(suspended, "the distributor took over the suspension");
    let (_, delta) = sync(&d, &pt, json!({"cursor": cursor, "wait_ms": 5000})).await;
    assert_eq!(delta["changes"][0]["kind"], "grant_changed", "{delta}");
    assert_eq!(delta["changes"][0]["detail"]["status"], "suspended");
    let ended = wait_until(Duration::from_secs(15), || async {
        heartbeat(&d, &pt, &lease_id).await.0 == 409
    })
    .await;
    assert!(ended, "the downstream lease ended");

    issuance.running.stop().await;
    vendor.running.stop().await;
    dist_issuance.running.stop().await;
    dist.running.stop().await;
}
