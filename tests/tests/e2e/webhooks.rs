//! Webhooks (issue 18): an API key's callback URL receives the events of
//! the licenses it issued, signed with issuance's key (verified here and by
//! Python's jwcrypto), retried with backoff while the receiver fails,
//! disabled by an event when it keeps failing, redelivered on request; and
//! the default configuration calls no loopback address.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use e2e::routes::{device, Svc};
use e2e::*;
use serde_json::{json, Value};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    signature: String,
    body: Vec<u8>,
    at: std::time::Instant,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A receiver on 127.0.0.1: records every request, then answers 200, or
/// 503 while `fail` counts down from a positive number, or 500 for ever
/// while it is negative.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    fail: Arc<AtomicI64>,
    /// How long it takes to answer, once it has recorded a request.
    delay_ms: Arc<AtomicU64>,
    /// The `Retry-After` (seconds) of its 503s; 0: none.
    retry_after: Arc<AtomicU64>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let fail = Arc::new(AtomicI64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let retry_after = Arc::new(AtomicU64::new(0));
        let (g, f, d, ra) = (
            got.clone(),
            fail.clone(),
            delay_ms.clone(),
            retry_after.clone(),
        );
        let server = HttpServer::new(move || {
            let (g, f, d, ra) = (g.clone(), f.clone(), d.clone(), ra.clone());
            App::new().route(
                "/hook",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let (g, f, d, ra) = (g.clone(), f.clone(), d.clone(), ra.clone());
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        g.lock().expect("lock").push(Received {
                            delivery: header("licensing-delivery"),
                            signature: header("licensing-signature"),
                            body: body.to_vec(),
                            at: std::time::Instant::now(),
                        });
                        let delay = d.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let left = f.load(Ordering::SeqCst);
                        if left < 0 {
                            HttpResponse::InternalServerError().finish()
                        } else if left > 0 {
                            f.fetch_sub(1, Ordering::SeqCst);
                            let mut answer = HttpResponse::ServiceUnavailable();
                            let secs = ra.load(Ordering::SeqCst);
                            if secs > 0 {
                                answer.insert_header(("Retry-After", secs.to_string()));
                            }
                            answer.finish()
                        } else {
                            HttpResponse::Ok().finish()
                        }
                    }
                }),
            )
        })
        .workers(2)
        .bind(("127.0.0.1", 0))
        .expect("bind the receiver");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
            fail,
            delay_ms,
            retry_after,
            server: handle,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// The deliveries received of `event_type` for `license`.
    fn of(&self, event_type: &str, license: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| {
                let b = r.json();
                b["event"]["event_type"] == event_type
                    && (b["event"]["aggregate_id"] == license
                        || b["event"]["payload"]["license_id"] == license)
            })
            .collect()
    }

    async fn until(&self, event_type: &str, license: &str) -> Received {
        let got = wait_until(Duration::from_secs(20), || async {
            !self.of(event_type, license).is_empty()
        })
        .await;
        assert!(got, "{event_type} of {license} reached the receiver");
        self.of(event_type, license).remove(0)
    }
}

/// Issuance calling loopback receivers over plain HTTP, retrying fast.
fn webhooks_for_tests(c: &mut issuance::Config) {
    c.common.webhook_allow_http = true;
    c.common.webhook_allowed_networks = vec!["127.0.0.0/8".into()];
    c.common.webhook_backoff_ms = 200;
    c.common.webhook_backoff_max_ms = 1_000;
    c.common.webhook_timeout_ms = 2_000;
}

/// An API key with `scopes` and `callback` (a JSON object merged into the
/// request); its id and token.
async fn api_key(stack: &Stack, callback: Value) -> (String, String) {
    let mut body = json!({"scopes": ["issuer"]});
    if let (Some(b), Some(c)) = (body.as_object_mut(), callback.as_object()) {
        b.extend(c.clone());
    }
    let (s, b) = stack.post(Svc::Issuance, "/v1/api-keys", &body).await;
    assert_eq!(s, 201, "{b}");
    let token = b["token"].as_str().expect("token").to_string();
    // Keys reach the auth replica over Kafka.
    let probe = stack.at(
        Svc::Issuance,
        &format!("/v1/commands/{}", uuid::Uuid::nil()),
    );
    let known = wait_until(Duration::from_secs(15), || async {
        call(&client_with(&token), "GET", &probe, None).await.0 == 404
    })
    .await;
    assert!(known, "the key authenticates");
    (b["key_id"].as_str().expect("key_id").to_string(), token)
}

/// A license of `product` issued with `token`; its id and key.
async fn issue_with(stack: &Stack, token: &str, product: &str) -> License {
    let (s, b) = call(
        &client_with(token),
        "POST",
        &stack.at(Svc::Issuance, "/v1/licenses"),
        Some(
            &json!({"product": product, "customer": "webhooks", "kind": "formal",
                     "features": ["f1"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    License {
        id: b["id"].as_str().expect("id").to_string(),
        key: b["key"].as_str().expect("key").to_string(),
    }
}

async fn suspend(stack: &Stack, license: &str) {
    let (s, b) = stack
        .post(
            Svc::Issuance,
            &format!("/v1/licenses/{license}/suspend"),
            &json!({"reason": "unpaid"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

/// The delivery log of `key_id`.
async fn log(stack: &Stack, key_id: &str) -> Vec<Value> {
    let (s, b) = stack
        .get(Svc::Issuance, &format!("/v1/api-keys/{key_id}/deliveries"))
        .await;
    assert_eq!(s, 200, "{b}");
    b["items"].as_array().cloned().unwrap_or_default()
}

fn logged<'a>(log: &'a [Value], event_type: &str) -> &'a Value {
    log.iter()
        .find(|d| d["event_type"] == event_type)
        .unwrap_or_else(|| panic!("{event_type} in the log: {log:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_receives_its_licenses_events_signed_and_python_verifies_them() {
    let receiver = Receiver::start().await;
    let stack = Stack::builder()
        .issuance(webhooks_for_tests)
        .with(Svc::Activation)
        .start()
        .await;
    let product = stack.product(json!({"max_activations": 3})).await;
    let (key_id, token) = api_key(&stack, json!({"callback_url": receiver.url})).await;
    let (_, other_token) = api_key(&stack, json!({})).await;
    let license = issue_with(&stack, &token, &product).await;
    let foreign = issue_with(&stack, &other_token, &product).await;

    stack.until_activation_knows(&license.key).await;
    let (s, b) = call(
        &license_client(&license.key),
        "POST",
        &stack.at(Svc::Activation, "/v1/activations"),
        Some(&json!({"license_key": license.key, "fingerprint": device(1)})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    suspend(&stack, &license.id).await;
    suspend(&stack, &foreign.id).await;

    let issued = receiver.until("LicenseIssued", &license.id).await;
    let activated = receiver.until("DeviceActivated", &license.id).await;
    let suspended = receiver.until("LicenseSuspended", &license.id).await;
    // Activation may write its own topic, not speak for issuance: a
    // LicenseRevoked it publishes is nobody's delivery.
    let producer = stack
        .infra
        .kafka("activation")
        .client()
        .create()
        .expect("producer");
    let forged = json!({
        "event_id": uuid::Uuid::now_v7(), "event_type": "LicenseRevoked", "event_version": "1",
        "aggregate_type": "Forged", "aggregate_id": uuid::Uuid::now_v7().to_string(),
        "sequence": 1, "global_position": 1, "occurred_at": chrono::Utc::now(),
        "recorded_at": chrono::Utc::now(), "command_id": uuid::Uuid::now_v7(),
        "correlation_id": "forged", "actor": {"kind": "service", "id": "activation"},
        "payload": {"license_id": license.id, "reason": "forged"},
        "prev_hash": "0".repeat(64), "hash": "0".repeat(64),
    });
    send_raw(
        &producer,
        &contracts::Topics::new(&stack.prefix).events("activation"),
        &license.id,
        forged.to_string().as_bytes(),
    )
    .await;
    // Another key's licenses are not this callback's business.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.of("LicenseRevoked", &license.id).is_empty(),
        "a LicenseRevoked from activation's topic was delivered"
    );
    for t in ["LicenseIssued", "LicenseSuspended"] {
        assert!(
            receiver.of(t, &foreign.id).is_empty(),
            "{t} of another key's license"
        );
    }

    let (jwks, key_for) = keys_of(&stack, Svc::Issuance).await;
    for r in [&issued, &activated, &suspended] {
        let body = r.json();
        assert_eq!(body["delivery_id"], r.delivery.as_str(), "header = body");
        assert_eq!(body["endpoint"], format!("api-key:{key_id}"));
        assert_eq!(
            signing::verify_detached_with(&r.signature, &r.body, "webhook+jws", &key_for),
            Ok(body.clone()),
            "signed by issuance"
        );
        // The envelope as published: its hash chain fields are there.
        assert_eq!(body["event"]["hash"].as_str().map(str::len), Some(64));
        let mut altered = r.body.clone();
        let at = altered.len() - 2;
        altered[at] ^= 1;
        assert!(
            signing::verify_detached_with(&r.signature, &altered, "webhook+jws", &key_for).is_err()
        );
        // A receiver in Python verifies it with jwcrypto.
        let endpoint = format!("api-key:{key_id}");
        let (ok, out) = python_verify_webhook(&jwks, &r.body, &r.signature, &endpoint);
        assert!(ok, "jwcrypto refused a delivery: {out}");
        assert_eq!(out.trim(), r.delivery);
        let (ok, _) = python_verify_webhook(&jwks, &altered, &r.signature, &endpoint);
        assert!(!ok, "jwcrypto took an altered body");
        let (ok, _) = python_verify_webhook(&jwks, &r.body, &r.signature, "api-key:AKIDother");
        assert!(!ok, "a delivery to another endpoint passed");
    }
    // The signature passes for no other document.
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(issued.signature.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("header json");
    assert_eq!(header["typ"], "webhook+jws");

    let log = log(&stack, &key_id).await;
    for t in ["LicenseIssued", "DeviceActivated", "LicenseSuspended"] {
        let d = logged(&log, t);
        assert_eq!(
            (
                d["status"].as_str(),
                d["attempts"].as_i64(),
                d["last_status"].as_i64()
            ),
            (Some("delivered"), Some(1), Some(200)),
            "{d}"
        );
    }
    receiver.server.stop(true).await;
    stack.stop().await;
}

/// `svc`'s JWKS, and its keys by kid, as a receiver pins them.
async fn keys_of(
    stack: &Stack,
    svc: Svc,
) -> (Value, impl Fn(&str) -> Option<signing::VerifyingKey>) {
    let (s, jwks) = stack.get(svc, "/.well-known/jwks.json").await;
    assert_eq!(s, 200);
    let keys: signing::Jwks = serde_json::from_value(jwks.clone()).expect("jwks");
    let key_for = move |kid: &str| {
        keys.keys
            .iter()
            .find(|k| k.kid == kid)
            .and_then(|k| signing::verifying_key(k).ok())
    };
    (jwks, key_for)
}

/// The Python receiver of the README (tests/python/verify_webhook.py).
fn python_verify_webhook(
    jwks: &Value,
    body: &[u8],
    signature: &str,
    endpoint: &str,
) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("webhook-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (k, b) = (dir.join("jwks.json"), dir.join("body"));
    std::fs::write(&k, jwks.to_string()).expect("write jwks");
    std::fs::write(&b, body).expect("write body");
    let out = std::process::Command::new("python3")
        .arg(repo_root().join("tests/python/verify_webhook.py"))
        .arg(&k)
        .arg(&b)
        .arg(signature)
        .arg(endpoint)
        .output()
        .expect("python3 runs (make test installs jwcrypto)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("ModuleNotFoundError"), "{text}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_receiver_is_retried_then_disabled_by_an_event_and_set_again_it_gets_everything()
{
    let receiver = Receiver::start().await;
    let stack = Stack::builder()
        .issuance(|c| {
            webhooks_for_tests(c);
            c.common.webhook_disable_after_failures = 4;
            c.common.webhook_disable_after_secs = 0;
            c.common.webhook_backoff_max_ms = 3_000;
        })
        .start()
        .await;
    let product = stack.product(json!({})).await;
    let (key_id, token) = api_key(
        &stack,
        json!({"callback_url": receiver.url, "callback_events": ["LicenseIssued", "LicenseSuspended"]}),
    )
    .await;

    // Two failures, then the third attempt lands.
    receiver.fail.store(2, Ordering::SeqCst);
    let license = issue_with(&stack, &token, &product).await;
    let issued = receiver.until("LicenseIssued", &license.id).await;
    let ok = wait_until(Duration::from_secs(15), || async {
        logged(&log(&stack, &key_id).await, "LicenseIssued")["status"] == "delivered"
    })
    .await;
    assert!(ok, "delivered after its retries");
    let tries = receiver.of("LicenseIssued", &license.id);
    assert_eq!(tries.len(), 3, "two failures and a success");
    assert!(
        tries.iter().all(|r| r.delivery == issued.delivery),
        "one delivery id"
    );
    let d = logged(&log(&stack, &key_id).await, "LicenseIssued").clone();
    assert_eq!(
        (d["attempts"].as_i64(), d["last_status"].as_i64()),
        (Some(3), Some(200))
    );

    // Failing for good: disabled by an event after 4 failures in a row,
    // and nothing more is sent.
    receiver.fail.store(-1, Ordering::SeqCst);
    suspend(&stack, &license.id).await;
    let disabled = wait_until(Duration::from_secs(20), || async {
        let (_, k) = stack
            .get(Svc::Issuance, &format!("/v1/api-keys/{key_id}"))
            .await;
        k["callback_disabled"] == true
    })
    .await;
    assert!(disabled, "the callback was disabled");
    let pool = stack.pool(Svc::Issuance).await;
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT count(*) FROM events WHERE aggregate_type = 'ApiKey' \
                 AND aggregate_id = '{key_id}' AND event_type = 'ApiKeyCallbackDisabled'"
            )
        )
        .await,
        1
    );
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let attempts = receiver.of("LicenseSuspended", &license.id).len();
    assert!(attempts >= 4, "{attempts} attempts before it was disabled");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.of("LicenseSuspended", &license.id).len(),
        attempts,
        "nothing is sent to a disabled callback"
    );
    let waiting = logged(&log(&stack, &key_id).await, "LicenseSuspended").clone();
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["last_status"], 500);

    // Set again: enabled, and what waited is delivered.
    receiver.fail.store(0, Ordering::SeqCst);
    let (s, b) = call(
        &admin_client(),
        "PUT",
        &stack.at(Svc::Issuance, &format!("/v1/api-keys/{key_id}/callback")),
        Some(&json!({"callback_url": receiver.url})),
    )
    .await;
    assert_eq!((s, &b["callback_disabled"]), (200, &json!(false)), "{b}");
    assert_eq!(
        b["callback_events"],
        json!(["LicenseIssued", "LicenseSuspended"])
    );
    let ok = wait_until(Duration::from_secs(15), || async {
        logged(&log(&stack, &key_id).await, "LicenseSuspended")["status"] == "delivered"
    })
    .await;
    assert!(ok, "the waiting delivery went out once enabled");

    // Redelivery on request: the same delivery, the same id, again.
    let before = receiver.of("LicenseIssued", &license.id).len();
    let (s, b) = call(
        &admin_client(),
        "POST",
        &stack.at(
            Svc::Issuance,
            &format!(
                "/v1/api-keys/{key_id}/deliveries/{}/redeliver",
                issued.delivery
            ),
        ),
        None,
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (202, Some("pending")), "{b}");
    let again = wait_until(Duration::from_secs(10), || async {
        receiver.of("LicenseIssued", &license.id).len() > before
    })
    .await;
    assert!(again, "redelivered");
    assert_eq!(
        receiver
            .of("LicenseIssued", &license.id)
            .last()
            .map(|r| r.delivery.clone()),
        Some(issued.delivery.clone())
    );
    // Another key's delivery, or none, is not found.
    let (s, b) = call(
        &admin_client(),
        "POST",
        &stack.at(
            Svc::Issuance,
            &format!(
                "/v1/api-keys/{key_id}/deliveries/{}/redeliver",
                uuid::Uuid::nil()
            ),
        ),
        None,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("DELIVERY_NOT_FOUND")));
    // Someone else's delivery id: another key's route neither shows nor
    // redelivers it.
    let (other_key, _) = api_key(
        &stack,
        json!({"callback_url": receiver.url, "callback_events": ["LicenseRevoked"]}),
    )
    .await;
    let (s, b) = call(
        &admin_client(),
        "POST",
        &stack.at(
            Svc::Issuance,
            &format!(
                "/v1/api-keys/{other_key}/deliveries/{}/redeliver",
                issued.delivery
            ),
        ),
        None,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("DELIVERY_NOT_FOUND")),
        "{b}"
    );
    assert!(log(&stack, &other_key).await.is_empty());

    // A receiver asking to be left alone (503, Retry-After: 2) is: the
    // next attempt waits 2 s, not the backoff's 200 ms.
    receiver.retry_after.store(2, Ordering::SeqCst);
    receiver.fail.store(1, Ordering::SeqCst);
    let renewed = issue_with(&stack, &token, &product).await;
    let ok = wait_until(Duration::from_secs(15), || async {
        receiver.of("LicenseIssued", &renewed.id).len() >= 2
    })
    .await;
    assert!(ok, "retried after Retry-After");
    let tries = receiver.of("LicenseIssued", &renewed.id);
    let gap = tries[1].at - tries[0].at;
    assert!(gap >= Duration::from_millis(1_900), "retried after {gap:?}");
    receiver.server.stop(true).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_configuration_refuses_callbacks_to_loopback_private_and_plain_http() {
    let stack = Stack::start(&[]).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.7/hook",
        "https://[::1]/hook",
        "http://hooks.example.com/in",
    ] {
        let (s, b) = stack
            .post(
                Svc::Issuance,
                "/v1/api-keys",
                &json!({"scopes": ["issuer"], "callback_url": url}),
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (422, Some("INVALID_CALLBACK_URL"), Some("callback_url")),
            "{url}: {b}"
        );
    }
    let (s, b) = stack
        .post(
            Svc::Issuance,
            "/v1/api-keys",
            &json!({"scopes": ["issuer"], "callback_url": "https://hooks.example.com/in",
                    "callback_events": ["LicenseIssued", "Nonsense"]}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (
            422,
            Some("INVALID_CALLBACK_EVENTS"),
            Some("callback_events")
        ),
        "{b}"
    );
    // A thousand event types (each known, all repeated): refused by name;
    // ten thousand: a body larger than any service takes.
    for (n, status, code) in [
        (1_000, 422, "INVALID_CALLBACK_EVENTS"),
        (10_000, 413, "BODY_TOO_LARGE"),
    ] {
        let many: Vec<&str> = std::iter::repeat_n("LicenseIssued", n).collect();
        let (s, b) = stack
            .post(
                Svc::Issuance,
                "/v1/api-keys",
                &json!({"scopes": ["issuer"], "callback_url": "https://hooks.example.com/in",
                        "callback_events": many}),
            )
            .await;
        assert_eq!((s, b["code"].as_str()), (status, Some(code)), "{n}: {b}");
    }
    let (s, b) = stack
        .post(
            Svc::Issuance,
            "/v1/api-keys",
            &json!({"scopes": ["issuer"], "callback_url": "https://hooks.example.com/in"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // Out-of-range, negative, huge and non-numeric limits: 422 naming it.
    let key_id = b["key_id"].as_str().expect("key_id").to_string();
    for limit in ["0", "501", "70000", "-1", "99999999999999999999", "abc", ""] {
        let (s, b) = stack
            .get(
                Svc::Issuance,
                &format!("/v1/api-keys/{key_id}/deliveries?limit={limit}"),
            )
            .await;
        assert_eq!(
            (s, b["field"].as_str()),
            (422, Some("limit")),
            "limit={limit}: {b}"
        );
    }
    assert!(
        b["callback_events"].as_array().is_some_and(
            |a| a.contains(&json!("LeaseExpired")) && a.contains(&json!("DomainChanged"))
        )
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_of_the_sender_mid_delivery_loses_none_and_repeats_only_a_delivery_id() {
    const LICENSES: usize = 30;
    let receiver = Receiver::start().await;
    // Slow answers: the kill finds deliveries in flight.
    receiver.delay_ms.store(150, Ordering::SeqCst);
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let db = infra.fresh_db("issuance").await;
    let port = free_port();
    let env = [
        ("LICENSING_WEBHOOK_ALLOW_HTTP", "true"),
        ("LICENSING_WEBHOOK_ALLOWED_NETWORKS", "[\"127.0.0.0/8\"]"),
        ("LICENSING_WEBHOOK_BACKOFF_MS", "200"),
        ("LICENSING_WEBHOOK_BACKOFF_MAX_MS", "1000"),
        ("LICENSING_WEBHOOK_TIMEOUT_MS", "2000"),
    ];
    let mut issuance =
        ServiceProcess::spawn_with("issuance", &infra, &db, &prefix, port, &env).await;
    let url = issuance.url.clone();
    seed_products(&url).await;
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{url}/v1/api-keys"),
        Some(&json!({"scopes": ["issuer"], "callback_url": receiver.url,
                     "callback_events": ["LicenseIssued"]})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let token = b["token"].as_str().expect("token").to_string();
    let issuer = client_with(&token);
    let probe = format!("{url}/v1/commands/{}", uuid::Uuid::nil());
    assert!(
        wait_until(Duration::from_secs(15), || async {
            call(&issuer, "GET", &probe, None).await.0 == 404
        })
        .await,
        "the key authenticates"
    );
    let mut ids = Vec::new();
    for i in 0..LICENSES {
        let (s, b) = call(
            &issuer,
            "POST",
            &format!("{url}/v1/licenses"),
            Some(
                &json!({"product": "integration-platform", "customer": format!("c{i}"),
                         "kind": "formal", "features": ["data-access"]}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        ids.push(b["id"].as_str().expect("id").to_string());
    }
    // Killed once the first deliveries are in, well before the last.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            receiver.received().len() >= 3
        })
        .await,
        "deliveries began"
    );
    issuance.kill();
    let at_kill = receiver.received().len();
    assert!(
        at_kill < LICENSES,
        "the kill came before the end ({at_kill})"
    );
    let issuance = ServiceProcess::spawn_with("issuance", &infra, &db, &prefix, port, &env).await;

    let all_in = wait_until(Duration::from_secs(60), || async {
        ids.iter()
            .all(|id| !receiver.of("LicenseIssued", id).is_empty())
    })
    .await;
    assert!(all_in, "every license's delivery arrived after the restart");
    // Each event is one delivery id; a repeat is the same id and the same
    // bytes, which the receiver's de-duplication absorbs.
    let mut by_id: std::collections::BTreeMap<String, Vec<Received>> = Default::default();
    for r in receiver.received() {
        by_id.entry(r.delivery.clone()).or_default().push(r);
    }
    assert_eq!(by_id.len(), LICENSES, "one delivery id per event");
    eprintln!(
        "{} requests for {LICENSES} deliveries ({at_kill} before the kill)",
        receiver.received().len()
    );
    for (id, copies) in &by_id {
        assert!(
            copies.iter().all(|c| c.body == copies[0].body),
            "{id}: same bytes"
        );
    }
    let pool = pool(&db).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM webhook_deliveries").await,
        LICENSES as i64
    );
    let delivered = wait_for_count(
        &pool,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'",
        LICENSES as i64,
        Duration::from_secs(20),
    )
    .await;
    assert!(delivered, "every delivery recorded delivered");
    pool.close().await;
    drop(issuance);
    receiver.server.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_license_clients_callback_receives_its_licenses_events_signed_by_grant_sync() {
    let receiver = Receiver::start().await;
    let stack = Stack::builder()
        .grants(|c| {
            c.common.webhook_allow_http = true;
            c.common.webhook_allowed_networks = vec!["127.0.0.0/8".into()];
            c.common.webhook_backoff_ms = 200;
        })
        .start()
        .await;
    let product = stack.product(json!({})).await;
    let body = json!({"product": product, "customer": "webhooks", "kind": "formal",
                      "features": ["f1"]});
    let license = stack.issue(&body).await;
    let other = stack.issue(&body).await;
    let grants = stack.url(Svc::Grants);
    let known = wait_until(Duration::from_secs(15), || async {
        let mut known = true;
        for l in [&license, &other] {
            known &= stack
                .get(Svc::Grants, &format!("/v1/licenses/{}/leases", l.id))
                .await
                .0
                == 200;
        }
        known
    })
    .await;
    assert!(known, "the licenses reached grant sync");
    // A callback receives events beyond the issuer scope: admin only.
    let (_, issuer_token) = api_key(&stack, json!({})).await;
    let issuer = client_with(&issuer_token);
    let body = json!({"name": "plant", "licenses": [license.id], "callback_url": receiver.url});
    let url = format!("{grants}/v1/clients");
    // Keys reach grant sync's replica over Kafka: until then, 401.
    let (s, b) = eventually(
        Duration::from_secs(15),
        || call(&issuer, "POST", &url, Some(&body)),
        |(s, _)| *s != 401,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (403, Some("INSUFFICIENT_SCOPE"), Some("callback_url")),
        "{b}"
    );
    // Refused destinations are refused here too, by the same rule.
    let (s, b) = stack
        .post(
            Svc::Grants,
            "/v1/clients",
            &json!({"name": "plant", "licenses": [license.id],
                    "callback_url": "https://10.0.0.7/hook"}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("INVALID_CALLBACK_URL")),
        "{b}"
    );
    let (s, client) = stack
        .post(
            Svc::Grants,
            "/v1/clients",
            &json!({"name": "plant", "licenses": [license.id], "callback_url": receiver.url,
                    "callback_events": ["LicenseSuspended", "LicenseRevoked"]}),
        )
        .await;
    assert_eq!(s, 201, "{client}");
    let client_id = client["client_id"].as_str().expect("client_id").to_string();
    assert_eq!(
        client["callback_events"],
        json!(["LicenseSuspended", "LicenseRevoked"])
    );

    suspend(&stack, &license.id).await;
    suspend(&stack, &other.id).await;
    let suspended = receiver.until("LicenseSuspended", &license.id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        receiver.of("LicenseSuspended", &other.id).is_empty(),
        "a license not assigned to the client"
    );
    assert!(
        receiver.of("LicenseIssued", &license.id).is_empty(),
        "an event type not subscribed"
    );
    let (jwks, key_for) = keys_of(&stack, Svc::Grants).await;
    let endpoint = format!("client:{client_id}");
    assert_eq!(suspended.json()["endpoint"], endpoint.as_str());
    assert!(signing::verify_detached_with(
        &suspended.signature,
        &suspended.body,
        "webhook+jws",
        key_for
    )
    .is_ok());
    let (ok, out) = python_verify_webhook(&jwks, &suspended.body, &suspended.signature, &endpoint);
    assert!(ok, "jwcrypto refused a grant sync delivery: {out}");

    let (s, b) = stack
        .get(Svc::Grants, &format!("/v1/clients/{client_id}/deliveries"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["items"][0]["status"], "delivered", "{b}");
    // Removed: nothing more is sent, and removing twice is a conflict.
    let url = format!("{grants}/v1/clients/{client_id}/callback");
    let (s, b) = call(&admin_client(), "DELETE", &url, None).await;
    assert_eq!((s, &b["callback_url"]), (200, &Value::Null), "{b}");
    let (s, b) = call(&admin_client(), "DELETE", &url, None).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("NO_CALLBACK")), "{b}");
    let (s, _) = stack
        .post(
            Svc::Issuance,
            &format!("/v1/licenses/{}/revoke", license.id),
            &json!({"reason": "fraud"}),
        )
        .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.of("LicenseRevoked", &license.id).is_empty(),
        "delivered to a removed callback"
    );
    receiver.server.stop(true).await;
    stack.stop().await;
}
