//! The attacks of the security review of issue 15 ("Hardening against
//! callers"), as a hostile customer, a hostile installed product or a
//! hostile Kafka caller would run them; each failed on the reviewed code
//! and holds since the fix named in its comment.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use contracts::{Actor, ActorKind, CommandEnvelope, CommandOutcome};
use e2e::routes::Svc;
use e2e::*;
use serde_json::{json, Value};
use uuid::Uuid;

/// Issuance and activation on one prefix (grant sync on demand), with a
/// product of the test's own.
struct Review {
    stack: Stack,
    act: String,
    product: String,
}

impl Review {
    async fn start(policy: Value, with_grants: bool) -> Self {
        let mut services = vec![Svc::Activation];
        if with_grants {
            services.push(Svc::Grants);
        }
        let stack = Stack::start(&services).await;
        let product = stack.product(policy).await;
        Self {
            act: stack.url(Svc::Activation),
            product,
            stack,
        }
    }

    /// The projector on the stack's prefix.
    async fn with_projector(&mut self) -> String {
        self.stack.add(Svc::Projector).await
    }

    /// A formal license of the test's product (two seats of `f1`), once
    /// activation knows it.
    async fn license(&self, customer: &str) -> (String, String) {
        let seats = json!({"seats": {"f1": 2}});
        let l = self.stack.license(&self.product, customer, seats).await;
        (l.id, l.key)
    }

    async fn stop(self) {
        self.stack.stop().await;
    }
}

/// POST with an Idempotency-Key; status and JSON body.
async fn post_keyed(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> (u16, Value) {
    let res = client
        .post(url)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("an answer");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

// ------------------------------------------------------------ idempotency

/// A product retries its activation (same Idempotency-Key, same body) after
/// the seat it got has ended (uninstalled here; a suspension or a migration
/// does the same). The replay finds the seat by its first run's events and,
/// that seat being gone, answers 409 `ACTIVATION_REVOKED` (it answered 500:
/// the handler looked for the device's live seat and found none).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_activation_retried_after_its_seat_ended_answers_409_not_500() {
    let p = Review::start(json!({"max_activations": 2}), false).await;
    let act = p.act.clone();
    let (_, key) = p.license("Retry Ended Co").await;
    let product = license_client(&key);
    let idem = Uuid::now_v7().to_string();
    let body = json!({"fingerprint": machine(1)});
    let url = format!("{act}/v1/activations");
    let (s, first) = post_keyed(&product, &url, &idem, &body).await;
    assert_eq!(s, 201, "{first}");
    let id = first["activation_id"].as_str().expect("id").to_string();
    let (s, b) = call(
        &product,
        "POST",
        &format!("{act}/v1/activations/{id}/uninstall"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // The same request again, as a client library retries a lost answer.
    let (s, again) = post_keyed(&product, &url, &idem, &body).await;
    p.stop().await;
    assert_eq!(
        (s, again["code"].as_str()),
        (409, Some("ACTIVATION_REVOKED")),
        "activation {id} ended; its replay answered {s} {again}"
    );
}

/// The same retry while the seat is still live answers as the first run
/// did, 201 (it answered 200: `created` was recomputed from the current
/// state, so a client could not tell a replay of its own creation from
/// "this device already held a seat").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_activation_answers_201_as_its_first_run_did() {
    let p = Review::start(json!({"max_activations": 2}), false).await;
    let act = p.act.clone();
    let (_, key) = p.license("Replay Status Co").await;
    let product = license_client(&key);
    let idem = Uuid::now_v7().to_string();
    let body = json!({"fingerprint": machine(1)});
    let url = format!("{act}/v1/activations");
    let (s1, first) = post_keyed(&product, &url, &idem, &body).await;
    let (s2, again) = post_keyed(&product, &url, &idem, &body).await;
    p.stop().await;
    assert_eq!(s1, 201, "{first}");
    assert_eq!(again["activation_id"], first["activation_id"]);
    assert_eq!(
        s2, 201,
        "a replay should answer the first outcome (201); got {s2}"
    );
}

/// A device retries its activation with the same Idempotency-Key; its
/// clock has moved on by a second, so `client_time` differs. The clock
/// reading is no part of the request digest (it was, and the retry was 422
/// IDEMPOTENCY_KEY_REUSED), so the retry answers the first outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_activation_retry_with_the_devices_next_clock_reading_answers_the_first_outcome() {
    let p = Review::start(json!({"max_activations": 2}), false).await;
    let act = p.act.clone();
    let (_, key) = p.license("Retry Clock Co").await;
    let product = license_client(&key);
    let idem = Uuid::now_v7().to_string();
    let url = format!("{act}/v1/activations");
    let t0 = Utc::now();
    let body = |t: chrono::DateTime<Utc>| json!({"fingerprint": machine(1), "client_time": t.to_rfc3339()});
    let (s1, first) = post_keyed(&product, &url, &idem, &body(t0)).await;
    let (s2, again) = post_keyed(
        &product,
        &url,
        &idem,
        &body(t0 + chrono::Duration::seconds(2)),
    )
    .await;
    p.stop().await;
    assert_eq!(s1, 201, "{first}");
    assert!(
        s2 < 300 && again["activation_id"] == first["activation_id"],
        "a retry differing only in its clock reading should answer the first outcome; got {s2} {again}"
    );
}

// ------------------------------------------------------------ offline nonces

/// An offline request file (nonce N) is answered, the seat uninstalled,
/// and the very same request file is refused: nonces are kept per license
/// (they were per seat, so the file was answered again with a new seat).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_request_file_answers_once_even_after_its_seat_is_uninstalled() {
    let p = Review::start(json!({"max_activations": 2}), false).await;
    let act = p.act.clone();
    let (_, key) = p.license("Nonce Replay Co").await;
    let operator = admin_client();
    let request = json!({"license_key": key, "fingerprint": machine(7), "nonce": "req-file-1",
                         "client_time": Utc::now().to_rfc3339()});
    let url = format!("{act}/v1/activations/offline");
    let (s, first) = call(&operator, "POST", &url, Some(&request)).await;
    assert_eq!(s, 201, "{first}");
    let id = first["activation_id"].as_str().expect("id").to_string();
    let (s, b) = call(
        &operator,
        "POST",
        &format!("{act}/v1/activations/{id}/uninstall"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, again) = call(&operator, "POST", &url, Some(&request)).await;
    p.stop().await;
    assert_eq!(
        (s, again["code"].as_str()),
        (409, Some("NONCE_REUSED")),
        "the same request file was answered again: {s} {again}"
    );
}

// ------------------------------------------------------------ clock rule

/// Two customers of one product. The victim's device reported its clock
/// under the victim's license; the attacker, who knows three of that
/// device's component values (cloned VM images share machine id, board and
/// disk), activates them under its own license with an old `client_time`.
/// A device's clock is judged under one license only, so nothing of the
/// victim's report shows (it was looked up across licenses and echoed in
/// the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_customers_report_for_a_device_reveals_nothing_to_a_rollback_probe() {
    let p = Review::start(json!({"max_activations": 2}), false).await;
    let act = p.act.clone();
    let (_, victim_key) = p.license("Victim Co").await;
    let (_, attacker_key) = p.license("Attacker Co").await;
    let victim_time = Utc::now() - chrono::Duration::hours(2);
    let victim_time = victim_time
        - chrono::Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&victim_time)));
    let (s, b) = call(
        &license_client(&victim_key),
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(9), "client_time": victim_time.to_rfc3339()})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let probe = (Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    let (s, answer) = call(
        &license_client(&attacker_key),
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(9), "client_time": probe})),
    )
    .await;
    p.stop().await;
    let leaked = answer.to_string().contains(&victim_time.to_rfc3339());
    assert!(
        !leaked,
        "the attacker's own activation answered {s} and names the victim's last report \
         ({}): {answer}",
        victim_time.to_rfc3339()
    );
}

/// The same coupling used to deny service: a customer who knows three
/// component values of another customer's device reports "now" for it
/// under its own license; the victim's offline request file, written on the
/// air-gapped device two hours earlier and submitted now, is still answered
/// (it was refused as CLOCK_ROLLBACK under the victim's untouched license).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_customer_cannot_lock_a_device_out_of_offline_activation() {
    let p = Review::start(json!({"max_activations": 2}), false).await;
    let act = p.act.clone();
    let (_, victim_key) = p.license("Air Gap Victim Co").await;
    let (_, attacker_key) = p.license("Squatter Co").await;
    let (s, b) = call(
        &license_client(&attacker_key),
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"fingerprint": machine(11), "client_time": Utc::now().to_rfc3339()})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let written = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let (s, answer) = call(
        &license_client(&victim_key),
        "POST",
        &format!("{act}/v1/activations/offline"),
        Some(&json!({"fingerprint": machine(11), "nonce": "victim-req-1", "client_time": written})),
    )
    .await;
    p.stop().await;
    assert_eq!(
        s, 201,
        "the victim's first offline activation on its own license was refused: {answer}"
    );
}

/// Dispute resolution re-evaluates a validation with the same rule from the
/// events: the projector's fold keeps the `client_time` of
/// `OfflineResponseIssued` as activation does (it ignored the event), so
/// after a second offline request a validation with the clock set back one
/// hour is CLOCK_ROLLBACK at activation and in the re-evaluation alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_projectors_reevaluation_keeps_the_clock_of_offline_responses() {
    let mut p = Review::start(json!({"max_activations": 2}), false).await;
    let projector = p.with_projector().await;
    let act = p.act.clone();
    let (license_id, key) = p.license("Offline Clock Co").await;
    let operator = admin_client();
    let now = Utc::now();
    let offline = |nonce: &str, t: chrono::DateTime<Utc>| {
        json!({"license_key": key, "fingerprint": machine(5), "nonce": nonce,
               "client_time": t.to_rfc3339()})
    };
    let url = format!("{act}/v1/activations/offline");
    let (s, b) = call(
        &operator,
        "POST",
        &url,
        Some(&offline("n-1", now - chrono::Duration::hours(3))),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(&operator, "POST", &url, Some(&offline("n-2", now))).await;
    assert_eq!(s, 200, "{b}");
    let at = Utc::now();
    let back = (now - chrono::Duration::hours(1)).to_rfc3339();
    let (s, live) = call(
        &operator,
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({"license_key": key, "fingerprint": machine(5), "client_time": back})),
    )
    .await;
    assert_eq!(
        (s, live["code"].as_str()),
        (200, Some("CLOCK_ROLLBACK")),
        "{live}"
    );
    // Wait until the projector holds both offline events.
    let history = format!("{projector}/v1/licenses/{license_id}/history");
    let projected = wait_until(Duration::from_secs(20), || async {
        let (s, b) = call(&operator, "GET", &history, None).await;
        s == 200 && b.to_string().contains("OfflineResponseIssued")
    })
    .await;
    assert!(projected, "the projector holds the offline response");
    let (s, reevaluated) = call(
        &operator,
        "POST",
        &format!("{projector}/v1/licenses/{license_id}/decisions"),
        Some(&json!({"kind": "validation", "at": at.to_rfc3339(),
                     "fingerprint": machine(5), "client_time": back})),
    )
    .await;
    p.stop().await;
    assert_eq!(s, 200, "{reevaluated}");
    assert_eq!(
        reevaluated["decision"]["code"].as_str(),
        Some("CLOCK_ROLLBACK"),
        "activation answered CLOCK_ROLLBACK at {at}; the projector's re-evaluation of the same \
         request at the same instant answers {reevaluated}"
    );
}

/// Grant sync: a license whose policy has `require_client_time`. The
/// checkout needs the time, and so do heartbeats and syncs of a client
/// holding such a license (they were answered, so a client whose clock was
/// set back could stop sending it and keep its lease for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_and_syncs_without_client_time_are_refused_under_require_client_time() {
    let p = Review::start(
        json!({"max_activations": 2, "require_client_time": true, "floating_seats": 2}),
        true,
    )
    .await;
    let grants = p.stack.url(Svc::Grants);
    let (license_id, _) = p.license("Clockless Co").await;
    let admin = admin_client();
    let leases = format!("{grants}/v1/licenses/{license_id}/leases");
    let known = wait_until(Duration::from_secs(15), || async {
        call(&admin, "GET", &leases, None).await.0 == 200
    })
    .await;
    assert!(known, "the license reached grant sync");
    let (s, c) = call(
        &admin,
        "POST",
        &format!("{grants}/v1/clients"),
        Some(&json!({"name": "clockless", "licenses": [license_id]})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let client = client_with(c["token"].as_str().expect("token"));
    let checkout = format!("{grants}/v1/leases");
    let (s, b) = call(
        &client,
        "POST",
        &checkout,
        Some(&json!({"license_id": license_id, "feature": "f1"})),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("CLIENT_TIME_REQUIRED")),
        "checkout enforces the policy: {b}"
    );
    let (s, lease) = call(
        &client,
        "POST",
        &checkout,
        Some(&json!({"license_id": license_id, "feature": "f1",
                     "client_time": Utc::now().to_rfc3339()})),
    )
    .await;
    assert_eq!(s, 201, "{lease}");
    let lease_id = lease["lease_id"].as_str().expect("lease");
    let (hs, hb) = call(
        &client,
        "POST",
        &format!("{grants}/v1/leases/{lease_id}/heartbeat"),
        None,
    )
    .await;
    let (ss, sb) = call(
        &client,
        "POST",
        &format!("{grants}/v1/sync"),
        Some(&json!({"wait_ms": 0})),
    )
    .await;
    p.stop().await;
    assert!(
        hs == 422 && ss == 422,
        "without client_time under require_client_time: heartbeat answered {hs} {}, \
         sync answered {ss} {}; expected 422 CLIENT_TIME_REQUIRED for both",
        hb["code"],
        sb["code"]
    );
}

// ------------------------------------------------------------ Kafka

/// The Kafka command consumer refused control characters in the payload
/// only when the first control character of the whole envelope was in the
/// payload, and nobody checked `actor.via`: one BEL there, and a payload's
/// ESC or NUL reached the domain, its outcome message and PostgreSQL. Now
/// `actor.via` is part of the envelope check, the payload is scanned on its
/// own, and outcome messages are stored printable and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kafka_command_cannot_smuggle_control_characters_past_the_payload_check() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let topics = contracts::Topics::new(&prefix);
    let payload = |seat_key: &str| {
        json!({"product": "integration-platform", "edition": "enterprise",
               "customer": "Via Co", "kind": "formal",
               "features": ["datasource-mgmt", "data-access"], "seats": {seat_key: 1}})
    };
    let envelope = |via: Option<&str>, seat_key: &str| CommandEnvelope {
        command_id: Uuid::now_v7(),
        command_type: "IssueLicense".into(),
        aggregate_id: Uuid::now_v7().to_string(),
        issued_at: Utc::now(),
        actor: Actor {
            via: via.map(str::to_string),
            ..Actor::new(ActorKind::Service, "crm")
        },
        correlation_id: "c-review-via".into(),
        causation_id: None,
        payload: payload(seat_key),
    };
    let esc_key = "data-access\u{1b}[2J";
    let control = envelope(None, esc_key);
    let smuggled = envelope(Some("x\u{7}"), esc_key);
    let nul = envelope(Some("x\u{7}"), "data-access\u{0}");
    for env in [&control, &smuggled, &nul] {
        send_command(&infra.caller(), &topics.commands("issuance"), env).await;
    }
    let outcomes = read_topic(
        &infra.operator(),
        &topics.outcomes(),
        3,
        Duration::from_secs(30),
    )
    .await;
    let by_id: HashMap<Uuid, CommandOutcome> = outcomes
        .iter()
        .filter_map(|m| serde_json::from_value::<CommandOutcome>(json_of(m)).ok())
        .map(|o| (o.command_id, o))
        .collect();
    let code = |env: &CommandEnvelope| {
        by_id
            .get(&env.command_id)
            .and_then(|o| o.error.as_ref())
            .map(|e| (e.code.clone(), e.field.clone()))
    };
    let pool = pool(&issuance.db).await;
    let stored_esc = count(
        &pool,
        "SELECT count(*) FROM command_outcomes WHERE strpos(error_message, chr(27)) > 0",
    )
    .await;
    pool.close().await;
    let dlq = read_topic(
        &infra.operator(),
        &contracts::Topics::dlq(&topics.commands("issuance")),
        0,
        Duration::from_secs(3),
    )
    .await;
    issuance.running.stop().await;
    // Without the trick the payload's ESC is refused, naming the field.
    let control_code = code(&control);
    assert_eq!(
        control_code.as_ref().map(|c| c.0.as_str()),
        Some("INVALID_FIELD"),
        "{control_code:?}"
    );
    let refused = |c: &Option<(String, Option<String>)>| {
        matches!(c, Some((code, Some(field)))
            if code == "INVALID_ENVELOPE" && field == "actor.via"
            || code == "INVALID_FIELD" && field.starts_with("payload.seats"))
    };
    let (smuggled_code, nul_code) = (code(&smuggled), code(&nul));
    assert!(
        refused(&smuggled_code) && refused(&nul_code) && stored_esc == 0 && dlq.is_empty(),
        "with a BEL in actor.via: the ESC payload answered {smuggled_code:?}, the NUL payload \
         {nul_code:?}; {stored_esc} command_outcomes rows hold an ESC; {} message(s) dead-lettered",
        dlq.len()
    );
}
