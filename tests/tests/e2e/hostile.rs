//! The HTTP and Kafka surfaces as a hostile caller tries them (issue 15):
//! every text of every route with a NUL byte, years no RFC 3339 reader
//! takes, invented methods, idempotency keys reused on another target, an
//! export cut in the middle, a handler that panics on a Kafka message, a
//! rebuild's replay fed refusals and run twice at once, and a seeded fuzzer
//! over the route table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use contracts::{Actor, ActorKind, CommandEnvelope, CommandOutcome, OutcomeStatus};
use e2e::routes::{self, Route, Svc, Targets};
use e2e::*;
use serde_json::{json, Value};
use uuid::Uuid;

/// All five services on one prefix, with a license, an activation and a
/// grant-sync client to aim at.
struct Targeted {
    stack: Stack,
    targets: Targets,
    client_token: String,
}

impl Targeted {
    async fn start() -> Self {
        let stack = Stack::builder()
            // Trials answer 202 at once rather than waiting for issuance.
            .activation(|c| c.trial_wait_ms = 100)
            .with(Svc::Domain)
            // Long polls are answered within a second, whatever a request asks.
            .grants(|c| {
                c.sync_wait_ms = 200;
                c.sync_max_wait_ms = 1_000;
            })
            .with(Svc::Projector)
            .start()
            .await;
        let url = |s: Svc| stack.url(s);
        let admin = admin_client();
        let (s, license) = call(
            &admin,
            "POST",
            &format!("{}/v1/licenses", url(Svc::Issuance)),
            Some(&json!({
                "product": "integration-platform", "edition": "enterprise",
                "customer": "Target Co", "kind": "formal",
                "features": ["datasource-mgmt", "data-access"], "seats": {"data-access": 5},
            })),
        )
        .await;
        assert_eq!(s, 201, "{license}");
        let license_id = license["id"].as_str().expect("id").to_string();
        let key = license["key"].as_str().expect("key").to_string();
        let activate = format!("{}/v1/activations", url(Svc::Activation));
        let body = json!({"license_key": key, "fingerprint": routes::device(90)});
        let activated = wait_until(Duration::from_secs(15), || async {
            call(&admin, "POST", &activate, Some(&body)).await.0 == 201
        })
        .await;
        assert!(activated, "the license reached activation");
        let (_, seat) = call(&admin, "POST", &activate, Some(&body)).await;
        let leases = format!("{}/v1/licenses/{license_id}/leases", url(Svc::Grants));
        let known = wait_until(Duration::from_secs(15), || async {
            call(&admin, "GET", &leases, None).await.0 == 200
        })
        .await;
        assert!(known, "the license reached grant sync");
        let (s, client) = call(
            &admin,
            "POST",
            &format!("{}/v1/clients", url(Svc::Grants)),
            Some(&json!({"name": "target client", "licenses": [license_id]})),
        )
        .await;
        assert_eq!(s, 201, "{client}");
        let client_token = client["token"].as_str().expect("token").to_string();
        let (s, lease) = call(
            &client_with(&client_token),
            "POST",
            &format!("{}/v1/leases", url(Svc::Grants)),
            Some(&json!({"license_id": license_id, "feature": "data-access"})),
        )
        .await;
        assert_eq!(s, 201, "{lease}");
        let targets = Targets::default()
            .with("license", license_id.clone())
            .with("license_key", key)
            .with("activation", seat["activation_id"].as_str().expect("id"))
            .with("file", seat["activation_file"].as_str().expect("file"))
            .with("code", "integration-platform")
            .with("key", "AKIDtestadmin")
            .with(
                "trial",
                "integration-platform:0000000000000000000000000000000000000000000000000000000000000000",
            )
            .with("client", client["client_id"].as_str().expect("client"))
            .with("lease", lease["lease_id"].as_str().expect("lease"))
            .with("command", Uuid::now_v7().to_string());
        Self {
            stack,
            targets,
            client_token,
        }
    }

    fn base(&self, svc: Svc) -> String {
        self.stack.url(svc)
    }

    /// The client a route's scope calls for (the admin key holds every
    /// operator scope; grant sync's client routes need a client's token).
    fn client_for(&self, route: &Route) -> reqwest::Client {
        if route.scope == "client" {
            client_with(&self.client_token)
        } else {
            admin_client()
        }
    }

    /// Events and command outcomes stored by every event-sourced service.
    async fn stored(&self) -> Vec<(Svc, i64, i64)> {
        let mut out = Vec::new();
        for svc in [Svc::Issuance, Svc::Activation, Svc::Domain, Svc::Grants] {
            let pool = self.stack.pool(svc).await;
            let events = count(&pool, "SELECT count(*) FROM events").await;
            let outcomes = count(&pool, "SELECT count(*) FROM command_outcomes").await;
            pool.close().await;
            out.push((svc, events, outcomes));
        }
        out
    }

    async fn stop(self) {
        self.stack.stop().await;
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn query_string(query: &[(&str, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A problem+json answer: status, code, field.
async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> (u16, String, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let res = req
        .send()
        .await
        .expect("an answer, not a dropped connection");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, ct, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_bytes_in_every_text_of_every_route_get_a_named_4xx_and_store_nothing() {
    let stack = Targeted::start().await;
    let before = stack.stored().await;
    let mut tried = 0;
    for route in routes::all() {
        let client = stack.client_for(&route);
        let base = stack.base(route.svc);
        let path = stack.targets.fill(route.path);
        let query: Vec<(&str, String)> = route
            .query
            .iter()
            .map(|(k, v)| (*k, encode(&stack.targets.fill(v))))
            .collect();
        let body = route.body.as_ref().map(|b| stack.targets.fill_value(b));
        let bytes = |b: &Value| serde_json::to_vec(b).expect("json");

        // Each placeholder segment of the path, with a NUL appended.
        let filled: Vec<&str> = path.split('/').collect();
        for (i, template) in route.path.split('/').enumerate() {
            if !template.starts_with('{') {
                continue;
            }
            let mut segs = filled.clone();
            let bad = format!("{}%00", segs[i]);
            segs[i] = &bad;
            let url = format!("{base}{}?{}", segs.join("/"), query_string(&query));
            let (s, ct, p) = send(&client, route.method, &url, body.as_ref().map(bytes)).await;
            assert_eq!(
                (s, ct.as_str(), p["code"].as_str(), p["field"].as_str()),
                (
                    400,
                    "application/problem+json",
                    Some("INVALID_PATH"),
                    Some("path")
                ),
                "{} {}: {p}",
                route.method,
                route.path
            );
            tried += 1;
        }
        // Each query parameter.
        for (i, (name, _)) in query.iter().enumerate() {
            let mut bad = query.clone();
            bad[i].1.push_str("%00");
            let url = format!("{base}{path}?{}", query_string(&bad));
            let (s, ct, p) = send(&client, route.method, &url, body.as_ref().map(bytes)).await;
            assert_eq!(
                (s, ct.as_str(), p["code"].as_str(), p["field"].as_str()),
                (
                    422,
                    "application/problem+json",
                    Some("INVALID_QUERY"),
                    Some(*name)
                ),
                "{} {}?{name}: {p}",
                route.method,
                route.path
            );
            tried += 1;
        }
        // Each string of the body.
        if let Some(body) = &body {
            for leaf in routes::string_leaves(body) {
                let value = leaf_value(body, &leaf);
                let bad = routes::replace_at(body, &leaf, &format!("{value}\u{0}"));
                let url = format!("{base}{path}?{}", query_string(&query));
                let (s, ct, p) = send(&client, route.method, &url, Some(bytes(&bad))).await;
                assert_eq!(
                    (s, ct.as_str(), p["code"].as_str(), p["field"].as_str()),
                    (
                        422,
                        "application/problem+json",
                        Some("INVALID_FIELD"),
                        Some(leaf.as_str())
                    ),
                    "{} {} body {leaf}: {p}",
                    route.method,
                    route.path
                );
                tried += 1;
            }
        }
    }
    println!("{tried} requests with a NUL byte");
    assert!(tried > 100, "the table reached {tried} texts only");
    assert_eq!(
        stack.stored().await,
        before,
        "a refused request stored something"
    );
    stack.stop().await;
}

fn leaf_value(body: &Value, leaf: &str) -> String {
    let marker = "\u{1}marker";
    let replaced = routes::replace_at(body, leaf, marker);
    // The leaf's own value: the one string that differs.
    fn find(a: &Value, b: &Value) -> Option<String> {
        match (a, b) {
            (Value::String(x), Value::String(y)) if x != y => Some(x.clone()),
            (Value::Array(x), Value::Array(y)) => x.iter().zip(y).find_map(|(a, b)| find(a, b)),
            (Value::Object(x), Value::Object(y)) => x
                .iter()
                .find_map(|(k, a)| y.get(k).and_then(|b| find(a, b))),
            _ => None,
        }
    }
    find(body, &replaced).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_year_262142_license_is_refused_over_http_and_kafka_and_the_lane_keeps_consuming() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let base = issuance.url();
    let admin = admin_client();
    let body = |expires: &str| {
        json!({"product": "integration-platform", "customer": "Far Future", "kind": "temporary",
               "expires_at": expires})
    };
    for year in [
        "+262142-12-01T00:00:00Z",
        "200000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "9999-12-31T23:00:00-02:00",
    ] {
        let (s, p) = call(
            &admin,
            "POST",
            &format!("{base}/v1/licenses"),
            Some(&body(year)),
        )
        .await;
        assert_eq!(
            (s, p["code"].as_str(), p["field"].as_str()),
            (422, Some("INVALID_FIELD"), Some("expires_at")),
            "{year}: {p}"
        );
    }
    // The last instant there is works, and what is computed from it stays
    // a four-digit year.
    let (s, license) = call(
        &admin,
        "POST",
        &format!("{base}/v1/licenses"),
        Some(&body("9999-12-31T00:00:00Z")),
    )
    .await;
    assert_eq!(s, 201, "{license}");
    let reclaim = license["reclaim_at"].as_str().expect("reclaim_at");
    assert!(
        contracts::time::parse(reclaim).is_ok(),
        "reclaim_at {reclaim} is not strict RFC 3339"
    );
    let id = license["id"].as_str().expect("id");
    let (s, p) = call(
        &admin,
        "POST",
        &format!("{base}/v1/licenses/{id}/renew"),
        Some(&json!({"expires_at": "10000-01-01T00:00:00Z", "order_ref": "PO-far"})),
    )
    .await;
    assert_eq!((s, p["field"].as_str()), (422, Some("expires_at")), "{p}");

    // Over Kafka: a rejected outcome, and the next command on the same
    // partition still applies.
    let topics = contracts::Topics::new(&prefix);
    let aggregate = Uuid::now_v7().to_string();
    let envelope = |payload: Value| CommandEnvelope {
        command_id: Uuid::now_v7(),
        command_type: "IssueLicense".into(),
        aggregate_id: aggregate.clone(),
        issued_at: Utc::now(),
        actor: Actor::new(ActorKind::Service, "crm"),
        correlation_id: "c-far-future".into(),
        causation_id: None,
        payload,
    };
    let far = envelope(body("+262142-12-01T00:00:00Z"));
    let good = envelope(body("2031-01-01T00:00:00Z"));
    let mut nul = envelope(body("2031-01-01T00:00:00Z"));
    nul.payload["customer"] = json!("Far\u{0}Future");
    for env in [&far, &nul, &good] {
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
    let far_outcome = &by_id[&far.command_id];
    assert_eq!(far_outcome.status, OutcomeStatus::Rejected);
    assert!(
        far_outcome
            .error
            .as_ref()
            .is_some_and(|e| e.message.contains("four-digit year")),
        "{far_outcome:?}"
    );
    let nul_outcome = &by_id[&nul.command_id];
    assert_eq!(nul_outcome.status, OutcomeStatus::Rejected);
    assert_eq!(
        nul_outcome.error.as_ref().and_then(|e| e.field.as_deref()),
        Some("payload.customer")
    );
    assert_eq!(by_id[&good.command_id].status, OutcomeStatus::Accepted);
    let dlq = read_topic(
        &infra.operator(),
        &contracts::Topics::dlq(&topics.commands("issuance")),
        0,
        Duration::from_secs(2),
    )
    .await;
    assert!(dlq.is_empty(), "refused, not dead-lettered");
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_http_methods_leave_the_metrics_the_same_size() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let activation = start_activation(&infra, &prefix).await;
    let base = activation.url();
    let anonymous = reqwest::Client::new();
    let metrics = || async {
        anonymous
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let mut size = 0;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    for i in 0..200 {
        let method = format!("X{}{i}", "Q".repeat(1000));
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let res = anonymous
            .request(method, format!("{base}/v1/validate"))
            .send()
            .await
            .expect("an answer");
        assert!(res.status().is_client_error(), "{}", res.status());
        if i == 9 {
            // Twice: the first scrape adds its own series.
            metrics().await;
            size = series(&metrics().await);
        }
    }
    let text = metrics().await;
    assert_eq!(series(&text), size, "invented methods added series");
    assert!(!text.contains("QQQQ"), "a method reached a label");
    assert!(text.contains("method=\"OTHER\""), "{text}");
    activation.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_on_two_licenses_is_refused_not_answered_with_the_first() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let base = issuance.url();
    let admin = admin_client();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{base}/v1/licenses"),
            Some(&json!({"product": "integration-platform", "customer": "Twin", "kind": "formal"})),
        )
        .await;
        assert_eq!(s, 201);
        ids.push(b["id"].as_str().expect("id").to_string());
    }
    let key = Uuid::now_v7().to_string();
    let act = |path: String, body: Option<Value>| {
        let mut req = admin
            .post(format!("{base}{path}"))
            .header("Idempotency-Key", key.clone());
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let res = req.send().await.expect("sent");
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let reason = Some(json!({"reason": "x"}));
    let (s, a) = act(format!("/v1/licenses/{}/suspend", ids[0]), reason.clone()).await;
    assert_eq!((s, a["status"].as_str()), (200, Some("suspended")));
    // The same key and body on the other license.
    let (s, p) = act(format!("/v1/licenses/{}/suspend", ids[1]), reason.clone()).await;
    assert_eq!(
        (s, p["code"].as_str(), p["field"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED"), Some("Idempotency-Key")),
        "{p}"
    );
    // And for another command with an empty body on the first license.
    let (s, p) = act(format!("/v1/licenses/{}/reinstate", ids[0]), None).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED")),
        "{p}"
    );
    // The second license was not touched; a replay on the first still is one.
    let (_, b) = call(
        &admin,
        "GET",
        &format!("{base}/v1/licenses/{}", ids[1]),
        None,
    )
    .await;
    assert_eq!(b["status"], "active");
    let (s, again) = act(format!("/v1/licenses/{}/suspend", ids[0]), reason).await;
    assert_eq!((s, again["version"].clone()), (200, a["version"].clone()));
    let pool = pool(&issuance.db).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'LicenseSuspended'"
        )
        .await,
        1
    );
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audit_export_cut_mid_stream_ends_with_an_error_the_client_sees() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let projector = start_projector(&infra, &prefix).await;
    let base = projector.url();
    let admin = admin_client();
    // A long trail, written straight into the read model (the export is
    // what is under test, not the projection).
    let pool = pool(&projector.db).await;
    sqlx::query(
        "INSERT INTO audit_trail (event_id, context, aggregate_type, aggregate_id, sequence, \
           global_position, license_id, event_type, event_version, occurred_at, recorded_at, \
           actor_kind, actor_id, command_id, correlation_id, payload, metadata, prev_hash, hash) \
         SELECT gen_random_uuid(), 'issuance', 'License', 'padding', i, i, NULL, 'Padding', '1', \
           now(), now(), 'api_key', 'AKIDexport', gen_random_uuid(), 'c', \
           json_build_object('pad', repeat('x', 2000)), '{}'::json, repeat('0', 64), \
           repeat('0', 64) \
         FROM generate_series(1, 20000) AS i",
    )
    .execute(&pool)
    .await
    .expect("seed the trail");

    // A query that cannot run fails before the headers.
    let (s, p) = call(
        &admin,
        "GET",
        &format!("{base}/v1/audit?format=ndjson&limit=5"),
        None,
    )
    .await;
    assert_eq!((s, p["code"].as_str()), (422, Some("EXPORT_NOT_PAGED")));

    let mut res = admin
        .get(format!("{base}/v1/audit?format=ndjson&actor=AKIDexport"))
        .send()
        .await
        .expect("export starts");
    assert_eq!(res.status(), 200);
    let mut received = Vec::new();
    let first = res.chunk().await.expect("bytes").expect("a first chunk");
    received.extend_from_slice(&first);
    // The database connection serving the export goes away (this test's
    // database only: other tests run beside it on the same server).
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE '%FROM audit_trail%' AND pid <> pg_backend_pid() \
           AND datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .expect("terminate");
    assert!(killed >= 1, "the export's query was running");
    let mut cut = false;
    loop {
        match res.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => break,
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the body ended cleanly although the export failed");
    let text = String::from_utf8_lossy(&received);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() < 20_000, "the export was complete");
    let last: Value = serde_json::from_str(lines.last().expect("a line")).expect("json line");
    assert_eq!(last["error"]["code"], "EXPORT_INCOMPLETE", "{last}");
    projector.running.stop().await;
}

/// A handler that panics on one message.
struct Fragile {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl bus::TxHandler for Fragile {
    async fn handle(
        &self,
        _tx: &mut sqlx::PgConnection,
        msg: &bus::Incoming,
    ) -> Result<(), bus::HandleError> {
        let text = String::from_utf8_lossy(msg.payload.as_deref().unwrap_or_default()).to_string();
        if text.contains("boom") {
            panic!("cannot handle {text}");
        }
        self.seen.lock().expect("lock").push(text);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kafka_message_whose_handler_panics_is_dead_lettered_and_the_lane_goes_on() {
    let infra = Infra::get();
    let prefix = infra.prefix_with_partitions(1).await;
    let db = infra.fresh_db("fragile").await;
    let topics = contracts::Topics::new(&prefix);
    // Issuance's command topic, read by a consumer as issuance would.
    let topic = topics.commands("issuance");
    let kafka = infra.kafka("issuance");
    let service_pool = pool(&db).await;
    eventstore::migrate(&service_pool).await.expect("migrate");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut config = bus::ConsumerConfig::new(
        format!("{prefix}.issuance.fragile"),
        &kafka,
        vec![topic.clone()],
    );
    config.sequenced = false;
    let dlq = bus::producer(&kafka).expect("producer");
    let consumer = tokio::spawn(bus::run_consumer(
        service_pool.clone(),
        dlq,
        config,
        Arc::new(Fragile { seen: seen.clone() }),
        shutdown,
    ));
    let producer = infra.caller().client().create().expect("producer");
    for body in ["first", "boom", "after"] {
        send_raw(&producer, &topic, "k", body.as_bytes()).await;
    }
    // A batch is retried message by message after a refusal, so "first"
    // may have been handled (and rolled back) twice; the handler's own
    // memory is not transactional.
    let done = wait_until(Duration::from_secs(30), || async {
        seen.lock().expect("lock").iter().any(|m| m == "after")
    })
    .await;
    assert!(done, "the lane stopped at the panicking message");
    assert!(seen.lock().expect("lock").iter().any(|m| m == "first"));
    let dead = read_topic(
        &infra.operator(),
        &contracts::Topics::dlq(&topic),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1);
    use rdkafka::message::{Headers, Message};
    let reason = dead[0]
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|x| x.key == "dlq_reason")
                .map(|x| String::from_utf8_lossy(x.value.unwrap_or_default()).to_string())
        })
        .unwrap_or_default();
    assert!(
        reason.contains("panicked") && reason.contains("boom"),
        "{reason}"
    );
    let _ = stop.send(true);
    let _ = consumer.await;
}

/// Records each event it applies in `replay_seen`, in the transaction;
/// panics on the note "boom", refuses the note "poison".
struct Recording;

#[async_trait::async_trait]
impl bus::TxHandler for Recording {
    async fn handle(
        &self,
        tx: &mut sqlx::PgConnection,
        msg: &bus::Incoming,
    ) -> Result<(), bus::HandleError> {
        let note = note_of(msg)?;
        match note.as_str() {
            "boom" => panic!("cannot handle {note}"),
            "poison" => return Err(bus::HandleError::Poison("refused: poison".into())),
            _ => {}
        }
        insert_notes(tx, vec![note]).await
    }
}

/// The note an event of [`note_event`] carries.
fn note_of(msg: &bus::Incoming) -> Result<String, bus::HandleError> {
    let e: Value = msg.json("an event")?;
    Ok(e["payload"]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// A replay's ground: a provisioned prefix, its issuance events topic, a
/// migrated database of its own with `replay_seen`, a producer.
async fn replay_ground(
    tag: &str,
) -> (
    String,
    String,
    sqlx::PgPool,
    rdkafka::producer::FutureProducer,
) {
    let infra = Infra::get();
    let prefix = infra.prefix_with_partitions(2).await;
    let db = infra.fresh_db(tag).await;
    let topic = contracts::Topics::new(&prefix).events("issuance");
    let p = pool(&db).await;
    eventstore::migrate(&p).await.expect("migrate");
    sqlx::query("CREATE TABLE replay_seen (n bigserial PRIMARY KEY, note text NOT NULL)")
        .execute(&p)
        .await
        .expect("table");
    let producer = infra.kafka("admin").client().create().expect("producer");
    (prefix, topic, p, producer)
}

/// An event of aggregate `T/id` carrying `note`.
fn note_event(id: &str, sequence: i64, note: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"aggregate_type": "T", "aggregate_id": id,
        "sequence": sequence, "payload": {"note": note}}))
    .expect("json")
}

/// How many events the handler recorded.
async fn seen(p: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM replay_seen")
        .fetch_one(p)
        .await
        .expect("count")
}

/// The notes recorded, in the order they were.
async fn notes(p: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT note FROM replay_seen ORDER BY n")
        .fetch_all(p)
        .await
        .expect("notes")
}

/// Keeps each event's note in memory and writes the window's notes in
/// `flush`, as the license model keeps its states; after
/// `write_through`, writes each batch's at once.
#[derive(Default)]
struct Deferring {
    notes: std::sync::Mutex<Vec<String>>,
    through: std::sync::atomic::AtomicBool,
}

impl Deferring {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

async fn insert_notes(
    tx: &mut sqlx::PgConnection,
    notes: Vec<String>,
) -> Result<(), bus::HandleError> {
    sqlx::query("INSERT INTO replay_seen (note) SELECT * FROM unnest($1::text[])")
        .bind(notes)
        .execute(&mut *tx)
        .await
        .map_err(bus::transient)?;
    Ok(())
}

#[async_trait::async_trait]
impl bus::TxHandler for Deferring {
    async fn handle(
        &self,
        tx: &mut sqlx::PgConnection,
        msg: &bus::Incoming,
    ) -> Result<(), bus::HandleError> {
        let note = note_of(msg)?;
        if self.through.load(std::sync::atomic::Ordering::Relaxed) {
            return insert_notes(tx, vec![note]).await;
        }
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(note);
        Ok(())
    }

    async fn flush(&self, tx: &mut sqlx::PgConnection) -> Result<(), bus::HandleError> {
        insert_notes(tx, self.take()).await
    }

    fn write_through(&self) {
        self.through
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn committed(&self) {
        self.take();
    }

    fn abandoned(&self, _stale: bool) {
        self.take();
    }
}

/// A row PostgreSQL refuses when a window's kept writes are flushed is
/// outside the savepoints that find a refused event: the replay reads the
/// window again writing each chunk, dead-letters that event as the live
/// consumer would, and goes on, rather than refusing the window forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_refused_when_a_window_is_written_is_dead_lettered_and_the_replay_goes_on() {
    let infra = Infra::get();
    let (prefix, topic, p, producer) = replay_ground("replay_flush").await;
    for sequence in 1..=50 {
        // A text column cannot hold a NUL byte: the database refuses it.
        let note = if sequence == 20 {
            "d\u{0}20".to_string()
        } else {
            format!("d{sequence}")
        };
        send_raw(&producer, &topic, "d", &note_event("d", sequence, &note)).await;
    }
    let name = format!("{prefix}.projector.rebuild.flush");
    let kafka = infra.kafka("projector");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(bus::run_replay(
        p.clone(),
        bus::producer(&kafka).expect("producer"),
        bus::ReplayConfig {
            name: name.clone(),
            kafka: kafka.clone(),
            topics: vec![topic.clone()],
            chunk: 7,
            // Every event in one window: the refusal comes at its flush.
            window: 1_000,
            compact_after: bus::replay::MAX_CHUNK_ROWS,
        },
        Arc::new(Deferring::default()),
        shutdown,
    ));
    let done = wait_until(Duration::from_secs(60), || async { seen(&p).await >= 49 }).await;
    assert!(done, "the replay went on past the refused row");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    reader
        .await
        .expect("joined")
        .expect("the replay ended cleanly");
    let expected: Vec<String> = (1..=50)
        .filter(|n| *n != 20)
        .map(|n| format!("d{n}"))
        .collect();
    assert_eq!(
        notes(&p).await,
        expected,
        "every other event once, in order"
    );
    let dead = read_topic(
        &infra.operator(),
        &contracts::Topics::dlq(&topic),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1, "the refused event dead-lettered");
    let reason = header(&dead[0], "dlq_reason").unwrap_or_default();
    assert!(reason.contains("database refuses its data"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_applies_each_event_once_across_two_readers_and_dead_letters_what_live_would() {
    let infra = Infra::get();
    let (prefix, topic, p, producer) = replay_ground("replay").await;
    let event = note_event;
    // Aggregate a: a panic, a refusal, a duplicate and a jump among its
    // events; b: a message that is no event; c: enough for many chunks.
    let a = [
        (1, "a1"),
        (2, "boom"),
        (3, "poison"),
        (4, "a4"),
        (4, "a4 again"),
        (9, "a9 jumped"),
        (5, "a5"),
    ];
    for (sequence, note) in a {
        send_raw(&producer, &topic, "a", &event("a", sequence, note)).await;
    }
    // A name the guard's rows could not store: refused, not retried forever.
    send_raw(&producer, &topic, "b", &event("b\u{0}", 1, "nul")).await;
    send_raw(&producer, &topic, "b", &event("b", 1, "b1")).await;
    send_raw(&producer, &topic, "b", b"not json").await;
    send_raw(&producer, &topic, "b", &event("b", 2, "b2")).await;
    for sequence in 1..=300 {
        send_raw(
            &producer,
            &topic,
            "c",
            &event("c", sequence, &format!("c{sequence}")),
        )
        .await;
    }

    // Two readers under one name, in small chunks, as two projector
    // instances resuming the same rebuild would.
    let name = format!("{prefix}.projector.rebuild.test");
    let kafka = infra.kafka("projector");
    let mut readers = Vec::new();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let replay = |chunk: usize, shutdown: tokio::sync::watch::Receiver<bool>| {
        tokio::spawn(bus::run_replay(
            p.clone(),
            bus::producer(&kafka).expect("producer"),
            bus::ReplayConfig {
                name: name.clone(),
                kafka: kafka.clone(),
                topics: vec![topic.clone()],
                chunk,
                // Windows of three chunks: each reader holds the replay's
                // lock across them, and the other finds the offsets moved.
                window: 3 * chunk,
                // Compacted many times over, so that is tested too.
                compact_after: 5,
            },
            Arc::new(Recording),
            shutdown,
        ))
    };
    for _ in 0..2 {
        readers.push(replay(7, shutdown.clone()));
    }
    let expected = 3 + 2 + 300;
    let done = wait_until(Duration::from_secs(60), || async {
        seen(&p).await >= expected
    })
    .await;
    assert!(done, "the replay applied every event");
    // Long enough for a second application to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    for r in readers {
        r.await.expect("joined").expect("the replay ended cleanly");
    }
    let recorded = notes(&p).await;
    assert_eq!(recorded.len(), expected as usize, "each event applied once");
    let only = |prefix: &str| -> Vec<&str> {
        recorded
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with(prefix))
            .collect()
    };
    assert_eq!(only("a"), ["a1", "a4", "a5"], "in order, refusals skipped");
    assert_eq!(only("b"), ["b1", "b2"]);
    let c: Vec<String> = (1..=300).map(|i| format!("c{i}")).collect();
    assert_eq!(only("c"), c);
    let dead = read_topic(
        &infra.operator(),
        &contracts::Topics::dlq(&topic),
        5,
        Duration::from_secs(30),
    )
    .await;
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            assert_eq!(header(m, "dlq_consumer").as_deref(), Some(name.as_str()));
            header(m, "dlq_reason").unwrap_or_default()
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons.len(),
        5,
        "each refusal dead-lettered once: {reasons:?}"
    );
    assert!(reasons[0].contains("control character"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("not an event envelope"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("refused: poison"), "{reasons:?}");
    assert!(reasons[3].contains("expected 5, got 9"), "{reasons:?}");
    assert!(
        reasons[4].contains("panicked") && reasons[4].contains("boom"),
        "{reasons:?}"
    );

    // Restarted, it applies nothing again.
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let again = replay(1_000, shutdown);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(true);
    again.await.expect("joined").expect("ended cleanly");
    assert_eq!(
        seen(&p).await,
        expected,
        "a restarted replay applies nothing twice"
    );

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM replay_sequences")
        .fetch_one(&p)
        .await
        .expect("count");
    assert!((1..=5).contains(&rows), "chunk rows compacted: {rows}");

    // Handed over to a live consumer, the guard's last sequences replace
    // its own (the replay read everything it did, and made the tables it
    // goes on with): a refused event in sequence counts as seen, a jump
    // does not.
    let live = format!("{prefix}.projector.live");
    sqlx::query(
        "INSERT INTO consumer_sequences (consumer, topic, aggregate_type, aggregate_id, last_sequence) \
         VALUES ($1, $2, 'T', 'a', 7), ($1, $2, 'T', 'c', 100)",
    )
    .bind(&live)
    .bind(&topic)
    .execute(&p)
    .await
    .expect("live rows");
    let mut tx = p.begin().await.expect("tx");
    bus::replay::hand_over_sequences(&mut tx, &live, &name)
        .await
        .expect("handed over");
    tx.commit().await.expect("commit");
    let last: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT consumer, aggregate_id, last_sequence FROM consumer_sequences \
         ORDER BY consumer, aggregate_id",
    )
    .fetch_all(&p)
    .await
    .expect("sequences");
    assert_eq!(
        last,
        [
            (live.clone(), "a".into(), 5),
            (live.clone(), "b".into(), 2),
            (live.clone(), "c".into(), 300)
        ],
        "the live consumer's sequences, the replay's gone"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM replay_sequences")
        .fetch_one(&p)
        .await
        .expect("count");
    assert_eq!(left, 0, "the replay's chunk rows are deleted");
}

/// A small deterministic generator (xorshift), so a failing case can be
/// replayed from its seed and index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NASTY: [&str; 16] = [
    "",
    " ",
    "\u{0}",
    "\n",
    "\u{202e}evil",
    "%00",
    "../../etc/passwd",
    "' OR 1=1 --",
    "9999-12-31T23:59:59Z",
    "+262142-12-01T00:00:00Z",
    "0000-00-00T00:00:00Z",
    "-1",
    "1e999",
    "😀😀😀",
    "AKIDtestadmin",
    "00000000-0000-0000-0000-000000000000",
];

fn nasty(rng: &mut Rng) -> &'static str {
    NASTY[rng.below(NASTY.len())]
}

fn nasty_value(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => json!(null),
        1 => json!(rng.below(2) == 0),
        2 => json!(i64::MAX),
        3 => json!(-1),
        4 => json!(1.5e300),
        5 => json!([]),
        6 => json!({"nested": {"deeper": [1, "x"]}}),
        7 => json!("x".repeat(rng.below(70_000))),
        _ => json!(nasty(rng)),
    }
}

/// One mutation of a route's sample request.
fn mutate(rng: &mut Rng, route: &Route, targets: &Targets) -> (String, String, Option<Vec<u8>>) {
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW",
    ];
    let mut method = route.method.to_string();
    let mut path = targets.fill(route.path);
    let mut query: Vec<(String, String)> = route
        .query
        .iter()
        .map(|(k, v)| (k.to_string(), encode(&targets.fill(v))))
        .collect();
    let mut body = route.body.as_ref().map(|b| targets.fill_value(b));
    let mut raw: Option<Vec<u8>> = None;
    for _ in 0..1 + rng.below(3) {
        match rng.below(8) {
            0 => method = rng.pick(&methods).to_string(),
            1 => {
                let segs: Vec<String> = path.split('/').map(str::to_string).collect();
                let i = 1 + rng.below(segs.len().saturating_sub(1));
                let mut segs = segs;
                segs[i] = encode(nasty(rng));
                path = segs.join("/");
            }
            2 if !query.is_empty() => {
                let i = rng.below(query.len());
                query[i].1 = encode(nasty(rng));
            }
            3 => query.push((encode(nasty(rng)), encode(nasty(rng)))),
            4 => {
                if let Some(Value::Object(map)) = &mut body {
                    let keys: Vec<String> = map.keys().cloned().collect();
                    if !keys.is_empty() {
                        let k = keys[rng.below(keys.len())].clone();
                        if rng.below(3) == 0 {
                            map.remove(&k);
                        } else {
                            map.insert(k, nasty_value(rng));
                        }
                    }
                }
            }
            5 => {
                if let Some(Value::Object(map)) = &mut body {
                    map.insert(nasty(rng).to_string(), nasty_value(rng));
                }
            }
            6 => {
                raw = Some(match rng.below(4) {
                    0 => b"{".to_vec(),
                    1 => vec![0xff, 0xfe, 0x00],
                    2 => b"[]".to_vec(),
                    _ => format!("{{\"a\":{}}}", "[".repeat(200)).into_bytes(),
                })
            }
            _ => body = Some(nasty_value(rng)),
        }
    }
    let qs = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let url = if qs.is_empty() {
        path
    } else {
        format!("{path}?{qs}")
    };
    let bytes = raw.or_else(|| body.map(|b| serde_json::to_vec(&b).expect("json")));
    (method, url, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seeded_fuzz_over_the_route_table_gets_no_5xx_and_only_problem_json_4xx() {
    let stack = Targeted::start().await;
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1500);
    let count: usize = std::env::var("FUZZ_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    let mut rng = Rng(seed);
    let table = routes::all();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut slowest: HashMap<String, (Duration, Duration, u32)> = HashMap::new();
    for i in 0..count {
        let route = rng.pick(&table).clone();
        let (method, url, body) = mutate(&mut rng, &route, &stack.targets);
        let client = stack.client_for(&route);
        let full = format!("{}{url}", stack.base(route.svc));
        let method_v = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client.request(method_v, &full);
        if let Some(b) = body.clone() {
            req = req.header("content-type", "application/json").body(b);
        }
        let started = std::time::Instant::now();
        let res = req.send().await.unwrap_or_else(|e| {
            panic!("seed {seed:#x} case {i}: {method} {full} dropped the connection: {e}")
        });
        let status = res.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = res.text().await.unwrap_or_default();
        let took = started.elapsed();
        let slot = slowest
            .entry(format!("{} {}", route.method, route.path))
            .or_default();
        *slot = (slot.0.max(took), slot.1 + took, slot.2 + 1);
        let shown = || {
            format!(
                "seed {seed:#x} case {i}: {method} {full} {:?} -> {status} {text}",
                body.as_deref()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).to_string())
            )
        };
        assert!(status < 500, "{}", shown());
        if (400..500).contains(&status) && method != "HEAD" {
            assert!(ct.starts_with("application/problem+json"), "{}", shown());
            let p: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(
                p["code"].is_string() && p["status"] == status,
                "{}",
                shown()
            );
        }
    }
    println!("fuzz seed {seed:#x}, {count} requests: {statuses:?}");
    let mut slowest: Vec<_> = slowest.into_iter().collect();
    slowest.sort_by_key(|(_, (max, _, _))| std::cmp::Reverse(*max));
    for (route, (max, total, n)) in slowest.iter().take(5) {
        println!(
            "slowest: {route}: max {max:?}, mean {:?} of {n}",
            *total / *n
        );
    }
    stack.stop().await;
}
