//! Issuance end to end: the license lifecycle with the scheduler on a test
//! clock, API keys enforced by every service, secrets kept out of events
//! and logs.

use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{json, Value};

fn temporary(days: i64, clock: &ManualClock) -> Value {
    use issuance::domain::Clock;
    json!({
        "product": "integration-platform",
        "edition": "enterprise",
        "customer": "ACME Corp",
        "contract": "C-2026-042",
        "kind": "temporary",
        "modules": ["data-integration"],
        "features": ["datasource-mgmt", "data-access", "data-preprocess", "smart-scheduling"],
        "expires_at": (clock.now() + chrono::Duration::days(days)).to_rfc3339(),
    })
}

async fn audit_types(
    client: &reqwest::Client,
    projector: &str,
    id: &str,
    want: usize,
) -> Vec<Value> {
    let url = format!("{projector}/v1/audit?license_id={id}");
    let fetch = || async {
        let (_, body) = call(client, "GET", &url, None).await;
        body["items"].as_array().cloned().unwrap_or_default()
    };
    wait_until(Duration::from_secs(10), || async {
        fetch().await.len() >= want
    })
    .await;
    fetch().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_license_lifecycle_end_to_end_with_the_scheduler_on_a_test_clock() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let clock = ManualClock::new();
    let issuance = start_issuance_on(&infra, &prefix, clock.clone()).await;
    let projector = start_projector(&infra, &prefix).await;
    let client = admin_client();
    let base = issuance.url();

    // Each kind issues; a trial gets the policy's 180 days.
    let (s, trial) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses"),
        Some(&json!({
        "product": "integration-platform", "customer": "Trial Co", "kind": "trial",
        "features": ["data-access"]})),
    )
    .await;
    assert_eq!(s, 201, "{trial}");
    assert_eq!(trial["kind"], "trial");
    assert!(trial["expires_at"].is_string());
    let (s, formal) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses"),
        Some(&json!({
        "product": "cloud-engine", "edition": "mainland", "customer": "Web Co", "kind": "formal",
        "features": ["site-engine"]})),
    )
    .await;
    assert_eq!(s, 201, "{formal}");
    assert_eq!(formal["expires_at"], Value::Null, "perpetual");
    assert_eq!(formal["policy"]["requires_domain"], true);
    let (s, license) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses"),
        Some(&temporary(10, &clock)),
    )
    .await;
    assert_eq!(s, 201, "{license}");
    let id = license["id"].as_str().expect("id").to_string();
    let key = license["key"]
        .as_str()
        .expect("key shown at issue")
        .to_string();
    assert_eq!(key.split('-').count(), 7);

    let lic = |path: &str| format!("{base}/v1/licenses/{id}{path}");
    let (s, b) = call(
        &client,
        "POST",
        &lic("/renew"),
        Some(&json!({
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(20)).to_rfc3339(),
        "order_ref": "PO-1001"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &client,
        "POST",
        &lic("/suspend"),
        Some(&json!({"reason": "payment overdue"})),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("suspended")), "{b}");
    let (s, b) = call(
        &client,
        "POST",
        &lic("/suspend"),
        Some(&json!({"reason": "again"})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("LICENSE_SUSPENDED")));
    let (s, b) = call(&client, "POST", &lic("/reinstate"), None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("active")), "{b}");
    let (s, b) = call(&client, "DELETE", &lic(""), None).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("LICENSE_NOT_EXPIRED")));

    // Expiry fires from the scheduler once the clock passes expires_at.
    clock.advance(chrono::Duration::days(21));
    let expired = wait_until(Duration::from_secs(10), || async {
        call(&client, "GET", &lic(""), None).await.1["status"] == "expired"
    })
    .await;
    assert!(expired, "scheduler expired the license");
    let (s, b) = call(
        &client,
        "POST",
        &lic("/suspend"),
        Some(&json!({"reason": "x"})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("LICENSE_EXPIRED")));
    // ... and reclaim once the reclaim delay (90 days) has passed too.
    clock.advance(chrono::Duration::days(91));
    let reclaimed = wait_until(Duration::from_secs(10), || async {
        call(&client, "GET", &lic(""), None).await.1["status"] == "reclaimed"
    })
    .await;
    assert!(reclaimed, "scheduler reclaimed the license");
    let (s, b) = call(&client, "POST", &lic("/reinstate"), None).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("LICENSE_RECLAIMED")));

    // Revoking the trial destroys it for good.
    let trial_id = trial["id"].as_str().expect("id");
    let (s, b) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses/{trial_id}/revoke"),
        Some(&json!({"reason": "abuse"})),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("revoked")), "{b}");
    let (s, b) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses/{trial_id}/reinstate"),
        None,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("LICENSE_REVOKED")));

    // Every step is in the projector's audit trail with actor and correlation.
    let items = audit_types(&client, &projector.url(), &id, 7).await;
    let types: Vec<&str> = items
        .iter()
        .filter_map(|i| i["event_type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "LicenseIssued",
            "LicenseRenewed",
            "LicenseSuspended",
            "LicenseReinstated",
            "LicenseExpired",
            "LicenseReclaimed"
        ],
    );
    for item in &items {
        let scheduled = matches!(
            item["event_type"].as_str(),
            Some("LicenseExpired" | "LicenseReclaimed")
        );
        let actor = if scheduled {
            json!({"kind": "scheduler", "id": "issuance-scheduler"})
        } else {
            json!({"kind": "api_key", "id": "AKIDtestadmin"})
        };
        assert_eq!(item["actor"], actor, "{item}");
        assert!(item["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty()));
    }
    let expired_event = &items[4]["payload"];
    assert_eq!(expired_event["existing_grants_continue"], true);
    assert_eq!(expired_event["new_grants_allowed"], false);
    let view = call(
        &client,
        "GET",
        &format!("{}/v1/licenses/{id}", projector.url()),
        None,
    )
    .await
    .1;
    assert_eq!(view["status"], "reclaimed");

    // The owner recovers the key by contract number; the recovery is audited.
    let (s, b) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses/recover"),
        Some(&json!({"contract": "C-2026-042"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["licenses"][0]["key"], key.as_str());
    let items = audit_types(&client, &projector.url(), &id, 7).await;
    assert_eq!(
        items.last().and_then(|i| i["event_type"].as_str()),
        Some("LicenseKeyRecovered")
    );

    // Deleting is the way out of reclaimed.
    let (s, b) = call(&client, "DELETE", &lic(""), None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("deleted")), "{b}");

    issuance.running.stop().await;
    projector.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_rules_and_key_checks_over_http() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let client = admin_client();
    let base = issuance.url();

    let (s, b) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses"),
        Some(&json!({
        "product": "integration-platform", "customer": "ACME", "kind": "formal",
        "modules": ["data-integration"], "features": ["datasource-mgmt", "data-access"]})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (422, Some("MODULE_FEATURES_MISSING"), Some("modules"))
    );
    let detail = b["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("data-preprocess") && detail.contains("smart-scheduling"),
        "{detail}"
    );
    let (s, b) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses"),
        Some(&json!({
        "product": "no-such-product", "customer": "ACME", "kind": "formal"})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (422, Some("PRODUCT_NOT_FOUND")));
    let (s, b) = call(
        &client,
        "GET",
        &format!("{base}/v1/products/integration-platform"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["bundles"][0]["code"], "data-integration");

    let (s, license) = call(&client, "POST", &format!("{base}/v1/licenses"), Some(&json!({
        "product": "integration-platform", "customer": "ACME", "kind": "formal", "features": ["asset-market"]}))).await;
    assert_eq!(s, 201);
    let key = license["key"].as_str().expect("key").to_string();
    let (s, found) = call(
        &client,
        "POST",
        &format!("{base}/v1/licenses/lookup"),
        Some(&json!({"key": key.to_lowercase()})),
    )
    .await;
    assert_eq!((s, &found["id"]), (200, &license["id"]));
    // One character changed anywhere: refused by the check character.
    for i in [0usize, 7, 20, 33] {
        let mut typo: Vec<char> = key.chars().collect();
        if typo[i] == '-' {
            continue;
        }
        typo[i] = if typo[i] == '7' { '8' } else { '7' };
        let typo: String = typo.into_iter().collect();
        let (s, b) = call(
            &client,
            "POST",
            &format!("{base}/v1/licenses/lookup"),
            Some(&json!({"key": typo})),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (422, Some("KEY_CHECK_FAILED")),
            "{typo}"
        );
    }
    issuance.running.stop().await;
}

/// Every protected route of every service, and how it answers each caller.
fn routes(
    issuance: &str,
    projector: &str,
    activation: &str,
    domain: &str,
    grants: &str,
) -> Vec<(&'static str, String, &'static str)> {
    let id = "0192f5c4-0000-7000-8000-000000000001";
    let key = "AKIDnosuchkey";
    vec![
        // Grant sync's operator routes; its client routes are held to the
        // client's own credentials in grants.rs.
        ("POST", format!("{grants}/v1/clients"), "issuer"),
        ("GET", format!("{grants}/v1/clients/{id}"), "issuer"),
        ("POST", format!("{grants}/v1/clients/{id}/revoke"), "issuer"),
        ("GET", format!("{grants}/v1/licenses/{id}/leases"), "issuer"),
        ("POST", format!("{grants}/v1/upstreams"), "admin"),
        ("GET", format!("{grants}/v1/upstreams/{id}"), "admin"),
        ("POST", format!("{grants}/v1/upstreams/{id}/check"), "admin"),
        ("POST", format!("{grants}/v1/upstreams/{id}/sync"), "admin"),
        (
            "GET",
            format!("{domain}/v1/registrable-domain?host=example.com"),
            "issuer",
        ),
        ("GET", format!("{domain}/v1/licenses/{id}/domain"), "issuer"),
        ("PUT", format!("{domain}/v1/licenses/{id}/domain"), "issuer"),
        (
            "DELETE",
            format!("{domain}/v1/licenses/{id}/domain"),
            "domain-admin",
        ),
        (
            "POST",
            format!("{domain}/v1/licenses/{id}/domain/change"),
            "issuer",
        ),
        (
            "GET",
            format!("{domain}/v1/domain-check?license_key=x&host=example.com"),
            "activator",
        ),
        ("POST", format!("{activation}/v1/activations"), "activator"),
        (
            "POST",
            format!("{activation}/v1/activations/offline"),
            "activator",
        ),
        (
            "POST",
            format!("{activation}/v1/activations/search"),
            "activator",
        ),
        (
            "POST",
            format!("{activation}/v1/activations/verify"),
            "activator",
        ),
        (
            "GET",
            format!("{activation}/v1/activations/{id}"),
            "activator",
        ),
        (
            "GET",
            format!("{activation}/v1/activations/{id}/file"),
            "activator",
        ),
        (
            "POST",
            format!("{activation}/v1/activations/{id}/uninstall"),
            "activator",
        ),
        (
            "POST",
            format!("{activation}/v1/activations/{id}/migrate"),
            "activator",
        ),
        (
            "GET",
            format!("{activation}/v1/licenses/{id}/activations"),
            "activator",
        ),
        ("POST", format!("{activation}/v1/trials"), "activator"),
        ("GET", format!("{activation}/v1/trials/x"), "activator"),
        ("POST", format!("{activation}/v1/validate"), "activator"),
        ("POST", format!("{issuance}/v1/products"), "admin"),
        (
            "GET",
            format!("{issuance}/v1/products/integration-platform"),
            "issuer",
        ),
        (
            "PUT",
            format!("{issuance}/v1/products/integration-platform/policy"),
            "admin",
        ),
        ("POST", format!("{issuance}/v1/licenses"), "issuer"),
        ("POST", format!("{issuance}/v1/licenses/recover"), "issuer"),
        ("POST", format!("{issuance}/v1/licenses/lookup"), "issuer"),
        ("GET", format!("{issuance}/v1/licenses/{id}"), "issuer"),
        ("DELETE", format!("{issuance}/v1/licenses/{id}"), "issuer"),
        (
            "POST",
            format!("{issuance}/v1/licenses/{id}/renew"),
            "issuer",
        ),
        (
            "POST",
            format!("{issuance}/v1/licenses/{id}/features"),
            "issuer",
        ),
        (
            "POST",
            format!("{issuance}/v1/licenses/{id}/suspend"),
            "issuer",
        ),
        (
            "POST",
            format!("{issuance}/v1/licenses/{id}/reinstate"),
            "issuer",
        ),
        (
            "POST",
            format!("{issuance}/v1/licenses/{id}/revoke"),
            "issuer",
        ),
        ("GET", format!("{issuance}/v1/commands/{id}"), "issuer"),
        ("POST", format!("{issuance}/v1/api-keys"), "admin"),
        ("GET", format!("{issuance}/v1/api-keys/{key}"), "admin"),
        (
            "POST",
            format!("{issuance}/v1/api-keys/{key}/revoke"),
            "admin",
        ),
        (
            "POST",
            format!("{issuance}/v1/api-keys/{key}/rotate"),
            "admin",
        ),
        (
            "PUT",
            format!("{issuance}/v1/api-keys/{key}/allowlist"),
            "admin",
        ),
        ("GET", format!("{projector}/v1/licenses/{id}"), "auditor"),
        ("GET", format!("{projector}/v1/audit"), "auditor"),
        ("GET", format!("{projector}/v1/licenses"), "auditor"),
        (
            "GET",
            format!("{projector}/v1/licenses/{id}/state"),
            "auditor",
        ),
        (
            "GET",
            format!("{projector}/v1/licenses/{id}/history"),
            "auditor",
        ),
        (
            "GET",
            format!("{projector}/v1/licenses/{id}/dispute-bundle"),
            "auditor",
        ),
        (
            "POST",
            format!("{projector}/v1/licenses/{id}/decisions"),
            "auditor",
        ),
        ("POST", format!("{projector}/v1/admin/rebuild"), "admin"),
        ("GET", format!("{projector}/v1/admin/projections"), "admin"),
        ("GET", format!("{projector}/v1/checkpoints"), "auditor"),
        (
            "GET",
            format!("{projector}/v1/checkpoints/consistency?context=issuance&from=0&to=0"),
            "auditor",
        ),
        // Every service that publishes events signs checkpoints on demand.
        ("POST", format!("{issuance}/v1/admin/checkpoints"), "admin"),
        (
            "POST",
            format!("{activation}/v1/admin/checkpoints"),
            "admin",
        ),
        ("POST", format!("{domain}/v1/admin/checkpoints"), "admin"),
        ("POST", format!("{grants}/v1/admin/checkpoints"), "admin"),
    ]
}

async fn new_key(
    admin: &reqwest::Client,
    issuance: &str,
    scopes: &[&str],
    allowlist: &[&str],
) -> (String, String) {
    let (s, b) = call(
        admin,
        "POST",
        &format!("{issuance}/v1/api-keys"),
        Some(&json!({
        "scopes": scopes, "allowlist": allowlist, "remark": "access test"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    (
        b["key_id"].as_str().expect("id").to_string(),
        b["token"].as_str().expect("token").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_of_every_service_enforces_api_keys() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let db = infra.fresh_db("issuance_access").await;
    let port = free_port();
    let service = ServiceProcess::spawn("issuance", &infra, &db, &prefix, port).await;
    seed_products(&service.url).await;
    let projector = start_projector(&infra, &prefix).await;
    let others = [
        start_activation(&infra, &prefix).await.running,
        start_domain_binding(&infra, &prefix).await.running,
        start_grant_sync(&infra, &prefix).await.running,
    ];
    let admin = admin_client();
    let (base, proj) = (service.url.clone(), projector.url());

    let (_, issuer) = new_key(&admin, &base, &["issuer"], &[]).await;
    let (_, auditor) = new_key(&admin, &base, &["auditor"], &[]).await;
    let (_, fenced) = new_key(&admin, &base, &["admin"], &["10.9.9.9", "192.0.2.0/24"]).await;
    let (revoked_id, revoked) = new_key(&admin, &base, &["admin"], &[]).await;
    let (s, _) = call(
        &admin,
        "POST",
        &format!("{base}/v1/api-keys/{revoked_id}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Keys reach the projector's replica over Kafka.
    let auditor_client = client_with(&auditor);
    let replicated = wait_until(Duration::from_secs(10), || async {
        call(&auditor_client, "GET", &format!("{proj}/v1/audit"), None)
            .await
            .0
            == 200
    })
    .await;
    assert!(replicated, "auditor key reached the projector");
    let revocation_seen = wait_until(Duration::from_secs(10), || async {
        call(
            &client_with(&revoked),
            "GET",
            &format!("{proj}/v1/audit"),
            None,
        )
        .await
        .1["code"]
            == "API_KEY_REVOKED"
    })
    .await;
    assert!(revocation_seen, "the revocation reached the projector");
    let act = others[0].url();
    let revocation_seen = wait_until(Duration::from_secs(10), || async {
        call(
            &client_with(&revoked),
            "GET",
            &format!("{act}/v1/trials/x"),
            None,
        )
        .await
        .1["code"]
            == "API_KEY_REVOKED"
    })
    .await;
    assert!(revocation_seen, "the revocation reached activation");
    let dom = others[1].url();
    let revocation_seen = wait_until(Duration::from_secs(10), || async {
        call(
            &client_with(&revoked),
            "GET",
            &format!("{dom}/v1/licenses/x/domain"),
            None,
        )
        .await
        .1["code"]
            == "API_KEY_REVOKED"
    })
    .await;
    assert!(revocation_seen, "the revocation reached domain binding");
    let grants = others[2].url();
    let revocation_seen = wait_until(Duration::from_secs(10), || async {
        call(
            &client_with(&revoked),
            "GET",
            &format!("{grants}/v1/upstreams/x"),
            None,
        )
        .await
        .1["code"]
            == "API_KEY_REVOKED"
    })
    .await;
    assert!(revocation_seen, "the revocation reached grant sync");

    let anonymous = reqwest::Client::new();
    for (method, url, scope) in routes(&base, &proj, &act, &dom, &grants) {
        let wrong = if scope == "auditor" {
            &issuer
        } else {
            &auditor
        };
        let good = match scope {
            "auditor" => auditor.clone(),
            "issuer" => issuer.clone(),
            _ => ADMIN_TOKEN.to_string(),
        };
        let cases: [(&str, reqwest::Client, u16, &str); 4] = [
            ("no key", anonymous.clone(), 401, "UNAUTHENTICATED"),
            ("revoked key", client_with(&revoked), 401, "API_KEY_REVOKED"),
            ("wrong scope", client_with(wrong), 403, "INSUFFICIENT_SCOPE"),
            (
                "off-allowlist address",
                client_with(&fenced),
                403,
                "ADDRESS_NOT_ALLOWED",
            ),
        ];
        for (case, client, status, code) in cases {
            let (s, b) = call(&client, method, &url, Some(&json!({}))).await;
            assert_eq!(
                (s, b["code"].as_str()),
                (status, Some(code)),
                "{case}: {method} {url}"
            );
        }
        let (s, b) = call(&client_with(&good), method, &url, Some(&json!({}))).await;
        assert!(s != 401 && s != 403, "good key: {method} {url} -> {s} {b}");
    }
    // Open endpoints stay open on every service.
    let urls: Vec<String> = [base.clone(), proj.clone()]
        .into_iter()
        .chain(others.iter().map(|r| r.url()))
        .collect();
    for url in &urls {
        assert!(
            becomes_ready(url, Duration::from_secs(30)).await,
            "{url}/readyz"
        );
        for path in ["/healthz", "/readyz", "/metrics"] {
            let (s, _) = call(&anonymous, "GET", &format!("{url}{path}"), None).await;
            assert_eq!(s, 200, "{url}{path}");
        }
    }
    for url in [
        format!("{act}/.well-known/jwks.json"),
        format!("{dom}/v1/license-query?domain=example.com"),
    ] {
        let (s, _) = call(&anonymous, "GET", &url, None).await;
        assert_eq!(s, 200, "{url} is open");
    }

    // A revocation takes effect everywhere within 2 s.
    let (victim_id, victim) = new_key(&admin, &base, &["admin"], &[]).await;
    let victim_client = client_with(&victim);
    let ready = wait_until(Duration::from_secs(10), || async {
        call(&victim_client, "GET", &format!("{proj}/v1/audit"), None)
            .await
            .0
            == 200
    })
    .await;
    assert!(ready);
    let (s, _) = call(
        &admin,
        "POST",
        &format!("{base}/v1/api-keys/{victim_id}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let revoked_at = Instant::now();
    for url in [
        format!("{base}/v1/commands/{victim_id}"),
        format!("{proj}/v1/audit"),
        format!("{act}/v1/trials/x"),
    ] {
        let gone = wait_until(Duration::from_secs(2), || async {
            call(&victim_client, "GET", &url, None).await.0 == 401
        })
        .await;
        assert!(gone, "{url} still accepted the key 2 s after revocation");
    }
    println!(
        "revocation effective everywhere after {:?}",
        revoked_at.elapsed()
    );

    // Secrets never reach events or logs.
    let token_secret = issuer.split('.').nth(1).expect("secret").to_string();
    let admin_secret = ADMIN_TOKEN.split('.').nth(1).expect("secret");
    let (_, license) = call(
        &client_with(&issuer),
        "POST",
        &format!("{base}/v1/licenses"),
        Some(&json!({
        "product": "integration-platform", "customer": "ACME", "kind": "formal"})),
    )
    .await;
    let license_key = license["key"].as_str().expect("key").replace('-', "");
    let pool = pool(&db).await;
    for secret in [token_secret.as_str(), admin_secret, license_key.as_str()] {
        let hits = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%' OR metadata::text LIKE '%' || $1 || '%'",
        )
        .bind(secret)
        .fetch_one(&pool)
        .await
        .expect("scan");
        assert_eq!(hits, 0, "a secret is in the event store");
    }
    drop(service);
    let log =
        std::fs::read_to_string(std::env::temp_dir().join(format!("{prefix}-issuance-{port}.log")))
            .unwrap_or_default();
    assert!(log.contains("relay active"), "the service log was captured");
    for secret in [
        token_secret.as_str(),
        admin_secret,
        license_key.as_str(),
        KEY_SECRET,
    ] {
        assert!(!log.contains(secret), "a secret is in the service log");
    }
    for r in others {
        r.stop().await;
    }
    projector.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_show_their_secret_once_rotate_and_bound_their_allowlist() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let admin = admin_client();
    let base = issuance.url();
    let (id, token) = new_key(&admin, &base, &["issuer"], &["127.0.0.1"]).await;
    let (s, b) = call(&admin, "GET", &format!("{base}/v1/api-keys/{id}"), None).await;
    assert_eq!(s, 200);
    assert!(
        b.get("secret_key").is_none() && b.get("token").is_none(),
        "secret shown once only"
    );
    let works = wait_until(Duration::from_secs(10), || async {
        call(
            &client_with(&token),
            "GET",
            &format!("{base}/v1/products/integration-platform"),
            None,
        )
        .await
        .0 == 200
    })
    .await;
    assert!(works, "the new key works from an allowed address");

    let (s, rotated) = call(
        &admin,
        "POST",
        &format!("{base}/v1/api-keys/{id}/rotate"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let new_token = rotated["token"].as_str().expect("new token").to_string();
    let swapped = wait_until(Duration::from_secs(10), || async {
        call(
            &client_with(&token),
            "GET",
            &format!("{base}/v1/products/integration-platform"),
            None,
        )
        .await
        .0 == 401
            && call(
                &client_with(&new_token),
                "GET",
                &format!("{base}/v1/products/integration-platform"),
                None,
            )
            .await
            .0 == 200
    })
    .await;
    assert!(swapped, "the old secret stops working, the new one works");

    let ten: Vec<String> = (1..=10).map(|i| format!("10.0.0.{i}")).collect();
    let (s, b) = call(
        &admin,
        "PUT",
        &format!("{base}/v1/api-keys/{id}/allowlist"),
        Some(&json!({"allowlist": ten})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let mut eleven = ten.clone();
    eleven.push("10.0.0.11".into());
    let (s, b) = call(
        &admin,
        "PUT",
        &format!("{base}/v1/api-keys/{id}/allowlist"),
        Some(&json!({"allowlist": eleven})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (422, Some("ALLOWLIST_TOO_LONG"), Some("allowlist"))
    );
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{base}/v1/api-keys"),
        Some(&json!({"scopes": ["root"]})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (422, Some("INVALID_SCOPES")));
    issuance.running.stop().await;
}
