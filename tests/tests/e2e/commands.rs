//! One command path: every command activation takes over HTTP it takes
//! over Kafka (`<prefix>.activation.commands`, sent as another team's
//! service), through the same use case, with the same answer.

use std::time::Duration;

use chrono::Utc;
use contracts::{Actor, ActorKind, CommandEnvelope, CommandOutcome, ErrorKind, OutcomeStatus};
use e2e::routes::Svc;
use e2e::*;
use serde_json::{json, Value};
use uuid::Uuid;

struct Commands {
    stack: Stack,
    product: String,
    /// Activation's database.
    pool: sqlx::PgPool,
}

impl std::ops::Deref for Commands {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

impl Commands {
    async fn start() -> Self {
        let stack = Stack::start(&[Svc::Activation]).await;
        let product = stack
            .product(json!({"max_activations": 10, "max_migrations": 2}))
            .await;
        Self {
            pool: stack.pool(Svc::Activation).await,
            product,
            stack,
        }
    }

    /// A formal license of the product, once activation's replica has it.
    async fn license(&self) -> (String, String) {
        let l = self.stack.license(&self.product, "Acme", json!({})).await;
        (l.id, l.key)
    }

    async fn http(&self, path: &str, key: Uuid, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.url(Svc::Activation));
        http(reqwest::Method::POST, &url, key, body).await
    }

    async fn kafka(
        &self,
        id: Uuid,
        command_type: &str,
        aggregate: &str,
        payload: Value,
    ) -> CommandOutcome {
        let topic = contracts::Topics::new(&self.prefix).commands("activation");
        let env = envelope(id, command_type, aggregate, payload);
        send_and_await(
            &self.infra,
            &self.prefix,
            &self.infra.caller(),
            &topic,
            &env,
        )
        .await
    }

    /// One command on both channels, each under a fresh id: the HTTP
    /// answer and the Kafka outcome, asserted to say the same.
    async fn twins(
        &self,
        what: &str,
        (path, body): (&str, Value),
        (command_type, aggregate, payload): (&str, &str, Value),
    ) -> ((u16, Value), CommandOutcome) {
        let http = self.http(path, Uuid::now_v7(), &body).await;
        let kafka = self
            .kafka(Uuid::now_v7(), command_type, aggregate, payload)
            .await;
        assert_same(what, &http, &kafka);
        (http, kafka)
    }

    async fn events(&self) -> i64 {
        count(&self.pool, "SELECT count(*) FROM events").await
    }
}

/// An HTTP request with an idempotency key, as the admin.
async fn http(method: reqwest::Method, url: &str, key: Uuid, body: &Value) -> (u16, Value) {
    let res = admin_client()
        .request(method, url)
        .header("Idempotency-Key", key.to_string())
        .json(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn device(n: u32) -> Value {
    json!({"machine_id": format!("m-{n}"), "disk": format!("d-{n}"),
           "board": format!("b-{n}"), "mac": format!("aa:bb:cc:dd:ee:{n:02x}")})
}

/// The status an HTTP answer has for an outcome's kind.
fn status_of(o: &CommandOutcome) -> u16 {
    match o.error.as_ref().and_then(|e| e.kind) {
        None => 200,
        Some(ErrorKind::Invalid) => 422,
        Some(ErrorKind::NotFound) => 404,
        Some(ErrorKind::Conflict) => 409,
        Some(ErrorKind::Forbidden) => 403,
        Some(ErrorKind::PaymentRequired) => 402,
    }
}

/// An HTTP answer and a Kafka outcome say the same: both accepted, or
/// both refused with the same code, field and status.
fn assert_same(what: &str, http: &(u16, Value), kafka: &CommandOutcome) {
    let (status, body) = http;
    match &kafka.error {
        None => {
            assert_eq!(kafka.status, OutcomeStatus::Accepted, "{what}: {kafka:?}");
            assert!((200..300).contains(status), "{what}: HTTP {status} {body}");
        }
        Some(e) => {
            assert_eq!(kafka.status, OutcomeStatus::Rejected, "{what}");
            assert_eq!(
                (Some(e.code.as_str()), e.field.as_deref(), status_of(kafka)),
                (body["code"].as_str(), body["field"].as_str(), *status),
                "{what}: HTTP {body} / Kafka {kafka:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_activation_command_answers_the_same_over_kafka_as_over_http() {
    let st = Commands::start().await;
    let (a, key_a) = st.license().await;
    let (b, key_b) = st.license().await;

    // Activate: accepted on both channels, one seat each.
    let http = st
        .http(
            "/v1/activations",
            Uuid::now_v7(),
            &json!({"license_key": key_a, "fingerprint": device(1)}),
        )
        .await;
    let kafka_id = Uuid::now_v7();
    let before = st.events().await;
    let kafka = st
        .kafka(
            kafka_id,
            "Activate",
            &b,
            json!({"license_key": key_b, "fingerprint": device(1)}),
        )
        .await;
    assert_same("Activate", &http, &kafka);
    assert_eq!(
        st.events().await,
        before + 1,
        "one event for one accepted command"
    );
    let result = kafka.result.clone().expect("result");
    assert_eq!(result["license_id"], b);
    let activation_b = result["activation_id"]
        .as_str()
        .expect("activation id")
        .to_string();
    // The file is read over HTTP by the activation id the outcome names.
    let (s, f) = call(
        &st.admin,
        "GET",
        &format!(
            "{}/v1/activations/{activation_b}/file",
            st.url(Svc::Activation)
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(
        claims(f["activation_file"].as_str().expect("file"))["license_id"],
        b
    );
    // The same command id again: the same outcome, nothing appended.
    let again = st
        .kafka(
            kafka_id,
            "Activate",
            &b,
            json!({"license_key": key_b, "fingerprint": device(1)}),
        )
        .await;
    assert_eq!(
        (again.status, again.result.clone()),
        (kafka.status, kafka.result.clone())
    );
    assert_eq!(st.events().await, before + 1, "a duplicate appends nothing");

    // Refusals, each with the same code, field and status on both sides.
    let small = json!({"mac": "aa:bb:cc:dd:ee:ff"});
    let (_, kafka) = st
        .twins(
            "Activate, one component",
            (
                "/v1/activations",
                json!({"license_key": key_a, "fingerprint": small}),
            ),
            (
                "Activate",
                &b,
                json!({"license_key": key_b, "fingerprint": small}),
            ),
        )
        .await;
    assert_eq!(
        kafka.error.as_ref().map(|e| e.code.as_str()),
        Some("FINGERPRINT_TOO_SMALL")
    );
    let missing = Uuid::now_v7();
    let (_, kafka) = st
        .twins(
            "Uninstall of no activation",
            (&format!("/v1/activations/{missing}/uninstall"), json!({})),
            ("Uninstall", &missing.to_string(), json!({})),
        )
        .await;
    assert_eq!(status_of(&kafka), 404);

    // Migrate: accepted on both channels, the new activation named.
    let activation_a = {
        let (s, body) = call(
            &st.admin,
            "GET",
            &format!("{}/v1/licenses/{a}/activations", st.url(Svc::Activation)),
            None,
        )
        .await;
        assert_eq!(s, 200, "{body}");
        body["activations"][0]["activation_id"]
            .as_str()
            .expect("seat")
            .to_string()
    };
    let http = st
        .http(
            &format!("/v1/activations/{activation_a}/migrate"),
            Uuid::now_v7(),
            &json!({"fingerprint": device(2)}),
        )
        .await;
    let before = st.events().await;
    let kafka = st
        .kafka(
            Uuid::now_v7(),
            "Migrate",
            &activation_b,
            json!({"fingerprint": device(2)}),
        )
        .await;
    assert_same("Migrate", &http, &kafka);
    assert_eq!(st.events().await, before + 1);
    let migrated = kafka.result.clone().expect("result");
    assert_eq!(migrated["migrated_from"], activation_b);
    let new_b = migrated["activation_id"]
        .as_str()
        .expect("new activation")
        .to_string();
    assert_ne!(new_b, activation_b);

    // Uninstall: accepted on both, with a receipt.
    let new_a = http.1["activation_id"]
        .as_str()
        .expect("new activation")
        .to_string();
    let (_, kafka) = st
        .twins(
            "Uninstall",
            (&format!("/v1/activations/{new_a}/uninstall"), json!({})),
            ("Uninstall", &new_b, json!({})),
        )
        .await;
    let receipt = kafka
        .result
        .as_ref()
        .and_then(|r| r["receipt"].as_str())
        .expect("receipt");
    assert_eq!(claims(receipt)["activation_id"], new_b);

    // StartTrial: accepted on both (the trial itself runs over Kafka).
    let (_, kafka) = st
        .twins(
            "StartTrial",
            (
                "/v1/trials",
                json!({"product": st.product, "fingerprint": device(7)}),
            ),
            (
                "StartTrial",
                &st.product,
                json!({"product": st.product, "fingerprint": device(8)}),
            ),
        )
        .await;
    let trial = kafka.result.clone().expect("result");
    let url = format!(
        "{}/v1/trials/{}",
        st.url(Svc::Activation),
        trial["trial_id"].as_str().expect("id")
    );
    let admin = st.admin.clone();
    let active = wait_until(Duration::from_secs(20), || {
        let (admin, url) = (admin.clone(), url.clone());
        async move { call(&admin, "GET", &url, None).await.1["status"] == "active" }
    })
    .await;
    assert!(active, "the trial sent over Kafka ran");
    // And refused alike: a second trial for the device.
    let (_, kafka) = st
        .twins(
            "StartTrial again",
            (
                "/v1/trials",
                json!({"product": st.product, "fingerprint": device(7)}),
            ),
            (
                "StartTrial",
                &st.product,
                json!({"product": st.product, "fingerprint": device(8)}),
            ),
        )
        .await;
    assert_eq!(
        kafka.error.as_ref().map(|e| e.code.as_str()),
        Some("TRIAL_ALREADY_USED")
    );

    st.stack.stop().await;
}

/// A command id is one idempotency key across HTTP and Kafka; a payload
/// Kafka cannot read is refused naming the field, and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_id_is_one_key_across_channels_and_bad_commands_are_named() {
    let st = Commands::start().await;
    let (a, key_a) = st.license().await;
    let id = Uuid::now_v7();
    let body = json!({"license_key": key_a, "fingerprint": device(3)});
    let (s, first) = st.http("/v1/activations", id, &body).await;
    assert_eq!(s, 201, "{first}");
    let before = st.events().await;
    let kafka = st.kafka(id, "Activate", &a, body.clone()).await;
    assert_eq!(kafka.status, OutcomeStatus::Accepted, "{kafka:?}");
    assert_eq!(
        kafka.result.as_ref().map(|r| r["activation_id"].clone()),
        Some(first["activation_id"].clone())
    );
    assert_eq!(
        st.events().await,
        before,
        "the HTTP command's replay appends nothing"
    );
    // The same id for another device is another command.
    let reused = st
        .kafka(
            id,
            "Activate",
            &a,
            json!({"license_key": key_a, "fingerprint": device(4)}),
        )
        .await;
    assert_eq!(
        reused
            .error
            .as_ref()
            .map(|e| (e.code.as_str(), e.field.as_deref())),
        Some(("IDEMPOTENCY_KEY_REUSED", Some("command_id")))
    );
    // A license key of another license than the aggregate's.
    let (_, key_b) = st.license().await;
    let kafka = st
        .kafka(
            Uuid::now_v7(),
            "Activate",
            &a,
            json!({"license_key": key_b, "fingerprint": device(5)}),
        )
        .await;
    assert_eq!(
        kafka.error.as_ref().map(|e| (e.code.as_str(), e.kind)),
        Some(("LICENSE_MISMATCH", Some(ErrorKind::Forbidden)))
    );
    // Kafka first, then HTTP with the same key: the uninstall of the
    // activation above, answered once, appended once.
    let activation = first["activation_id"].as_str().expect("activation");
    let uninstall = Uuid::now_v7();
    let before = st.events().await;
    let kafka = st
        .kafka(uninstall, "Uninstall", activation, json!({}))
        .await;
    assert_eq!(kafka.status, OutcomeStatus::Accepted, "{kafka:?}");
    let (s, h) = st
        .http(
            &format!("/v1/activations/{activation}/uninstall"),
            uninstall,
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, h["activation_id"].as_str()),
        (200, Some(activation)),
        "{h}"
    );
    assert_eq!(
        st.events().await,
        before + 1,
        "one uninstall for one command id"
    );
    // Over Kafka too a license is named by its key, never by its id alone.
    let kafka = st
        .kafka(
            Uuid::now_v7(),
            "Activate",
            &a,
            json!({"fingerprint": device(9)}),
        )
        .await;
    assert_eq!(
        kafka
            .error
            .as_ref()
            .map(|e| (e.code.as_str(), e.field.as_deref())),
        Some(("MISSING_FIELD", Some("payload.license_key")))
    );
    // Unreadable payloads, aggregate ids and command types.
    let cases = [
        (
            "Activate",
            a.clone(),
            json!({"fingerprint": device(6), "extra": 1}),
            "UNKNOWN_FIELD",
            "payload.extra",
        ),
        (
            "Activate",
            a.clone(),
            json!({}),
            "MISSING_FIELD",
            "payload.fingerprint",
        ),
        (
            "Activate",
            "not-a-uuid".to_string(),
            json!({"fingerprint": device(6)}),
            "INVALID_AGGREGATE_ID",
            "aggregate_id",
        ),
        (
            "StartTrial",
            "other".to_string(),
            json!({"product": st.product, "fingerprint": device(6)}),
            "INVALID_AGGREGATE_ID",
            "aggregate_id",
        ),
        (
            "RevokeActivations",
            a.clone(),
            json!({}),
            "UNKNOWN_COMMAND",
            "command_type",
        ),
    ];
    let before = st.events().await;
    for (command_type, aggregate, payload, code, field) in cases {
        let id = Uuid::now_v7();
        let o = st
            .kafka(id, command_type, &aggregate, payload.clone())
            .await;
        assert_eq!(
            o.error
                .as_ref()
                .map(|e| (e.code.as_str(), e.field.as_deref(), e.kind)),
            Some((code, Some(field), Some(ErrorKind::Invalid))),
            "{command_type} {payload}"
        );
        // Refused before any aggregate: answered, not stored (as over
        // HTTP), and a duplicate is evaluated again to the same answer.
        let stored = count(
            &st.pool,
            &format!("SELECT count(*) FROM command_outcomes WHERE command_id = '{id}'"),
        )
        .await;
        assert_eq!(stored, 0, "{command_type} {payload}");
        let again = st.kafka(id, command_type, &aggregate, payload).await;
        assert_eq!(again.error, o.error);
    }
    assert_eq!(
        st.events().await,
        before,
        "no refused command appended an event"
    );
    st.stack.stop().await;
}

/// Activation SIGKILLed while its command topic is being consumed: once it
/// is back every command sent has exactly one effect and one stored
/// outcome, and every outcome published for a command id says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_of_activation_mid_batch_loses_no_command_and_repeats_no_effect() {
    const COMMANDS: usize = 120;
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let admin = admin_client();
    let product = format!("cmdkill-{prefix}");
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{}/v1/products", issuance.url()),
        Some(
            &json!({"code": product, "name": "Kill", "features": [{"code": "f1", "name": "F1"}],
                     "policy": {"max_activations": 1000}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{}/v1/licenses", issuance.url()),
        Some(
            &json!({"product": product, "customer": "Acme", "kind": "formal", "features": ["f1"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let license = b["id"].as_str().expect("id").to_string();
    let key = b["key"].as_str().expect("key").to_string();
    let db = infra.fresh_db("activation_cmdkill").await;
    let mut service = ServiceProcess::spawn("activation", &infra, &db, &prefix, free_port()).await;
    let pool = pool(&db).await;
    let replicated = wait_for_count(
        &pool,
        &format!("SELECT count(*) FROM license_replica WHERE license_id = '{license}'"),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(replicated, "the license reached activation");

    let producer: rdkafka::producer::FutureProducer =
        infra.caller().client().create().expect("producer");
    let topic = contracts::Topics::new(&prefix).commands("activation");
    let ids: Vec<Uuid> = (0..COMMANDS).map(|_| Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        let env = CommandEnvelope {
            command_id: *id,
            command_type: "Activate".into(),
            aggregate_id: license.clone(),
            issued_at: Utc::now(),
            actor: Actor::new(ActorKind::Service, "orders"),
            correlation_id: format!("kill-{i}"),
            causation_id: None,
            payload: json!({"license_key": key, "fingerprint": device(i as u32 + 10)}),
        };
        send_raw(
            &producer,
            &topic,
            &license,
            &serde_json::to_vec(&env).expect("json"),
        )
        .await;
    }
    let activated = "SELECT count(*) FROM events WHERE event_type = 'DeviceActivated'";
    let mut at_kill = 0;
    for _ in 0..3000 {
        at_kill = count(&pool, activated).await;
        if at_kill >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.kill();
    assert!(
        (10..COMMANDS as i64).contains(&at_kill),
        "killed mid-stream ({at_kill} applied)"
    );
    let _service = ServiceProcess::spawn("activation", &infra, &db, &prefix, free_port()).await;
    let all = wait_for_count(&pool, activated, COMMANDS as i64, Duration::from_secs(60)).await;
    assert!(all, "every command applied after the restart");
    assert_eq!(
        count(&pool, activated).await,
        COMMANDS as i64,
        "no effect twice"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM (SELECT metadata::jsonb->>'command_id' FROM events \
             WHERE event_type = 'DeviceActivated' GROUP BY 1 HAVING count(*) > 1) twice"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM command_outcomes WHERE command_type = 'Activate' AND status = 'accepted'"
        )
        .await,
        COMMANDS as i64
    );
    // Published at least once each; a repeat after the kill says the same.
    let outcomes = read_topic(
        &infra.operator(),
        &contracts::Topics::new(&prefix).outcomes(),
        COMMANDS,
        Duration::from_secs(30),
    )
    .await;
    let mut by_id: std::collections::HashMap<Uuid, Vec<CommandOutcome>> = Default::default();
    for o in outcomes
        .iter()
        .filter_map(|m| serde_json::from_value::<CommandOutcome>(json_of(m)).ok())
    {
        by_id.entry(o.command_id).or_default().push(o);
    }
    for id in &ids {
        let seen = by_id
            .get(id)
            .unwrap_or_else(|| panic!("no outcome for {id}"));
        assert!(
            seen.iter().all(|o| o.status == OutcomeStatus::Accepted
                && o.result.as_ref().map(|r| &r["activation_id"])
                    == seen[0].result.as_ref().map(|r| &r["activation_id"])),
            "{id}: {seen:?}"
        );
    }
    issuance.running.stop().await;
}

/// Domain binding's commands over Kafka answer as their HTTP twins; the
/// operator reset is taken only from the admin topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_domain_command_answers_the_same_over_kafka_as_over_http() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let domain = start_domain_binding(&infra, &prefix).await;
    let pool = pool(&domain.db).await;
    let admin = admin_client();
    let license = || async {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{}/v1/licenses", issuance.url()),
            Some(
                &json!({"product": "cloud-engine", "edition": "mainland", "customer": "Acme",
                         "kind": "formal", "features": ["site-engine"]}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        let id = b["id"].as_str().expect("id").to_string();
        let known = wait_for_count(
            &pool,
            &format!("SELECT count(*) FROM license_replica WHERE license_id = '{id}'"),
            1,
            Duration::from_secs(15),
        )
        .await;
        assert!(known, "the license reached domain binding");
        id
    };
    let (a, b, c, d) = (
        license().await,
        license().await,
        license().await,
        license().await,
    );
    let url = |id: &str, tail: &str| format!("{}/v1/licenses/{id}/domain{tail}", domain.url());
    let topic = contracts::Topics::new(&prefix).commands("domain");
    let admin_topic = contracts::Topics::new(&prefix).admin_commands("domain");
    let kafka = |id: Uuid, command_type: &'static str, aggregate: &str, payload: Value| {
        let env = envelope(id, command_type, aggregate, payload);
        let (infra, prefix, topic) = (&infra, &prefix, topic.clone());
        async move { send_and_await(infra, prefix, &infra.caller(), &topic, &env).await }
    };
    let events = || count(&pool, "SELECT count(*) FROM events");
    let tag = Uuid::new_v4().simple().to_string()[..10].to_string();
    let host = |n: &str| format!("www.{n}-{tag}.com");
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;

    // Bind: accepted on both, the registrable domain bound.
    let h = http(
        put.clone(),
        &url(&a, ""),
        Uuid::now_v7(),
        &json!({"domain": host("a")}),
    )
    .await;
    let before = events().await;
    let id = Uuid::now_v7();
    let k = kafka(id, "BindDomain", &b, json!({"domain": host("b")})).await;
    assert_same("BindDomain", &h, &k);
    assert_eq!(events().await, before + 1);
    let bound = format!("b-{tag}.com");
    assert_eq!(
        k.result.as_ref().map(|r| r["domain"].clone()),
        Some(json!(bound))
    );
    let again = kafka(id, "BindDomain", &b, json!({"domain": host("b")})).await;
    assert_eq!((again.status, &again.result), (k.status, &k.result));
    assert_eq!(events().await, before + 1, "a duplicate appends nothing");

    // Refused alike: a second bind, another license's domain (refused in
    // the append's transaction), a URL for a host.
    // (what, HTTP target and body, Kafka target and payload)
    type Side = (String, Value);
    let cases: Vec<(&str, Side, Side)> = vec![
        (
            "already bound",
            (a.clone(), json!({"domain": host("x")})),
            (b.clone(), json!({"domain": host("y")})),
        ),
        (
            "taken",
            (c.clone(), json!({"domain": host("b")})),
            (d.clone(), json!({"domain": host("a")})),
        ),
        (
            "a URL",
            (c.clone(), json!({"domain": "https://x.example.org"})),
            (d.clone(), json!({"domain": "https://x.example.org"})),
        ),
    ];
    let before = events().await;
    for (what, (ha, hb), (ka, kb)) in cases {
        let h = http(put.clone(), &url(&ha, ""), Uuid::now_v7(), &hb).await;
        let k = kafka(Uuid::now_v7(), "BindDomain", &ka, kb).await;
        assert_same(what, &h, &k);
        assert_eq!(k.status, OutcomeStatus::Rejected, "{what}");
    }
    assert_eq!(events().await, before, "no refused bind appended an event");

    // Change: accepted on both; the same domain again refused alike.
    let h = http(
        post.clone(),
        &url(&a, "/change"),
        Uuid::now_v7(),
        &json!({"domain": host("a2")}),
    )
    .await;
    let k = kafka(
        Uuid::now_v7(),
        "ChangeDomain",
        &b,
        json!({"domain": host("b2")}),
    )
    .await;
    assert_same("ChangeDomain", &h, &k);
    let h = http(
        post.clone(),
        &url(&a, "/change"),
        Uuid::now_v7(),
        &json!({"domain": host("a2")}),
    )
    .await;
    let k = kafka(
        Uuid::now_v7(),
        "ChangeDomain",
        &b,
        json!({"domain": host("b2")}),
    )
    .await;
    assert_same("ChangeDomain to the same domain", &h, &k);
    assert_eq!(
        k.error.as_ref().map(|e| e.code.as_str()),
        Some("SAME_DOMAIN")
    );

    // The operator reset: refused on the callers' topic, taken on the
    // admin topic (which only administrators write).
    let reset = json!({"reason": "customer asked"});
    let k = kafka(Uuid::now_v7(), "ResetDomain", &b, reset.clone()).await;
    assert_eq!(
        k.error.as_ref().map(|e| (e.code.as_str(), e.kind)),
        Some(("INSUFFICIENT_SCOPE", Some(ErrorKind::Forbidden)))
    );
    let h = http(
        reqwest::Method::DELETE,
        &url(&a, ""),
        Uuid::now_v7(),
        &reset,
    )
    .await;
    let env = envelope(Uuid::now_v7(), "ResetDomain", &b, reset);
    let k = send_and_await(&infra, &prefix, &infra.kafka("admin"), &admin_topic, &env).await;
    assert_same("ResetDomain", &h, &k);
    assert_eq!(
        k.result.as_ref().map(|r| r["domain"].clone()),
        Some(Value::Null)
    );

    issuance.running.stop().await;
    domain.running.stop().await;
}

/// Grant sync's commands over Kafka answer as their HTTP twins; upstream
/// commands are taken only from the admin topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_grant_sync_command_answers_the_same_over_kafka_as_over_http() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let grants = start_grant_sync(&infra, &prefix).await;
    let pool = pool(&grants.db).await;
    let g = grants.url();
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/licenses", issuance.url()),
        Some(
            &json!({"product": "integration-platform", "edition": "enterprise",
                     "customer": "Plant Co", "kind": "formal", "features": ["data-access"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let license = b["id"].as_str().expect("id").to_string();
    let url = format!("{g}/v1/licenses/{license}/leases");
    let admin = admin_client();
    let known = wait_until(Duration::from_secs(15), || async {
        call(&admin, "GET", &url, None).await.0 == 200
    })
    .await;
    assert!(known, "the license reached grant sync");
    let register = |name: &'static str| {
        let (g, license) = (g.clone(), license.clone());
        async move {
            let (s, b) = call(
                &admin_client(),
                "POST",
                &format!("{g}/v1/clients"),
                Some(&json!({"name": name, "licenses": [license]})),
            )
            .await;
            assert_eq!(s, 201, "{b}");
            b["client_id"].as_str().expect("client").to_string()
        }
    };
    let (a, b) = (register("plant-a").await, register("plant-b").await);
    let topic = contracts::Topics::new(&prefix).commands("grants");
    let admin_topic = contracts::Topics::new(&prefix).admin_commands("grants");
    let kafka = |id: Uuid, command_type: &'static str, aggregate: &str, payload: Value| {
        let env = envelope(id, command_type, aggregate, payload);
        let (infra, prefix, topic) = (&infra, &prefix, topic.clone());
        async move { send_and_await(infra, prefix, &infra.caller(), &topic, &env).await }
    };
    let events = || count(&pool, "SELECT count(*) FROM events");
    let post = reqwest::Method::POST;
    let reason = json!({"reason": "contract ended"});

    // RevokeClient: accepted on both; a duplicate appends nothing.
    let h = http(
        post.clone(),
        &format!("{g}/v1/clients/{a}/revoke"),
        Uuid::now_v7(),
        &reason,
    )
    .await;
    let before = events().await;
    let id = Uuid::now_v7();
    let k = kafka(id, "RevokeClient", &b, reason.clone()).await;
    assert_same("RevokeClient", &h, &k);
    assert_eq!(events().await, before + 1);
    assert_eq!(
        k.result.as_ref().map(|r| r["revoked"].clone()),
        Some(json!(true))
    );
    assert!(k.result.as_ref().is_some_and(|r| r.get("token").is_none()));
    let again = kafka(id, "RevokeClient", &b, reason.clone()).await;
    assert_eq!((again.status, &again.result), (k.status, &k.result));
    assert_eq!(events().await, before + 1, "a duplicate appends nothing");
    // Refused alike: revoked again, and no such client.
    let h = http(
        post.clone(),
        &format!("{g}/v1/clients/{a}/revoke"),
        Uuid::now_v7(),
        &reason,
    )
    .await;
    let k = kafka(Uuid::now_v7(), "RevokeClient", &b, reason.clone()).await;
    assert_same("RevokeClient again", &h, &k);
    let missing = Uuid::now_v7();
    let h = http(
        post.clone(),
        &format!("{g}/v1/clients/{missing}/revoke"),
        Uuid::now_v7(),
        &reason,
    )
    .await;
    let k = kafka(
        Uuid::now_v7(),
        "RevokeClient",
        &missing.to_string(),
        reason.clone(),
    )
    .await;
    assert_same("RevokeClient of no client", &h, &k);

    // Upstream commands: refused on the callers' topic, run from the admin
    // topic (here on an upstream that does not exist, answered as over HTTP).
    let k = kafka(
        Uuid::now_v7(),
        "CheckUpstream",
        &missing.to_string(),
        json!({}),
    )
    .await;
    assert_eq!(
        k.error.as_ref().map(|e| (e.code.as_str(), e.kind)),
        Some(("INSUFFICIENT_SCOPE", Some(ErrorKind::Forbidden)))
    );
    for (command_type, tail, payload) in [
        ("CheckUpstream", "check", json!({})),
        ("SyncUpstream", "sync", json!({"resource": "all"})),
    ] {
        let h = http(
            post.clone(),
            &format!("{g}/v1/upstreams/{missing}/{tail}"),
            Uuid::now_v7(),
            &payload,
        )
        .await;
        let env = envelope(Uuid::now_v7(), command_type, &missing.to_string(), payload);
        let k = send_and_await(&infra, &prefix, &infra.kafka("admin"), &admin_topic, &env).await;
        assert_same(command_type, &h, &k);
        assert_eq!(
            k.error.as_ref().map(|e| e.code.as_str()),
            Some("UPSTREAM_NOT_FOUND")
        );
    }
    issuance.running.stop().await;
    grants.running.stop().await;
}

/// The README's example of another team's service (Python, confluent-kafka
/// from PyPI, the caller principal's properties file) sends a command and
/// reads its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_example_sends_a_command_and_reads_its_outcome_with_another_client() {
    let st = Commands::start().await;
    let (a, key_a) = st.license().await;
    let payload = json!({"license_key": key_a, "fingerprint": device(11)}).to_string();
    let args = (
        st.infra.kafka_file("caller"),
        format!("{}.activation.commands", st.prefix),
        a.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(repo_root().join("examples/send_command.py"))
            .arg(&args.0)
            .arg(&args.1)
            .arg("Activate")
            .arg(&args.2)
            .arg(&payload)
            .output()
            .expect("python3 runs (make test installs confluent-kafka)")
    })
    .await
    .expect("example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "confluent-kafka missing: run `make python-deps`: {stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["headers"]["source"], "activation", "{answer}");
    assert_eq!(answer["headers"]["stored"], "true", "{answer}");
    assert_eq!(answer["outcome"]["status"], "accepted", "{answer}");
    assert_eq!(answer["outcome"]["result"]["license_id"], a.as_str());
    let activation = answer["outcome"]["result"]["activation_id"]
        .as_str()
        .expect("activation id");
    let (s, f) = call(
        &st.admin,
        "GET",
        &format!(
            "{}/v1/activations/{activation}/file",
            st.url(Svc::Activation)
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{f}");
    st.stack.stop().await;
}
