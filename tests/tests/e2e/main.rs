//! End-to-end tests of the foundation: real Postgres, real Kafka, services
//! in-process on port 0 or as processes where a test kills them.

mod activation;
mod checkpoints;
mod client;
mod commands;
mod crash;
mod credentials;
mod domain;
mod grants;
mod hostile;
mod issuance;
mod logs;
mod openapi;
mod projector;
mod review;
mod scale;
mod store;
mod trust;
mod upstreams;
mod webhooks;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use contracts::{Actor, ActorKind, CommandEnvelope, CommandOutcome, OutcomeStatus};
use e2e::*;
use serde_json::{json, Value};
use uuid::Uuid;

pub(crate) fn license_body() -> Value {
    json!({
        "product": "integration-platform",
        "edition": "enterprise",
        "customer": "ACME Corp",
        "kind": "formal",
        "features": ["datasource-mgmt", "data-access"],
    })
}

async fn issue(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    client
        .post(format!("{url}/v1/licenses"))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issued_license_is_served_by_the_projector_with_its_audit_trail() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let client = admin_client();

    let correlation = Uuid::now_v7().to_string();
    let started = std::time::Instant::now();
    let res = client
        .post(format!("{}/v1/licenses", issuance.url()))
        .header("X-Correlation-Id", &correlation)
        .json(&license_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["x-correlation-id"].to_str().ok(),
        Some(correlation.as_str())
    );
    let license: Value = res.json().await.expect("json");
    let id = license["id"].as_str().expect("id").to_string();
    assert_eq!(license["status"], "active");

    let url = format!("{}/v1/licenses/{id}", projector.url());
    let served = wait_until(Duration::from_secs(5), || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(served, "projector did not serve the license within 5 s");
    println!("commit -> projector row: {:?}", started.elapsed());
    let view: Value = client
        .get(&url)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(view["id"], license["id"]);
    assert_eq!(view["customer"], "ACME Corp");
    assert_eq!(view["features"], json!(["datasource-mgmt", "data-access"]));

    // Each read model has its own consumer: the audit row may follow the
    // license row by a batch.
    let audit_url = format!("{}/v1/audit?license_id={id}", projector.url());
    let audited = wait_until(Duration::from_secs(5), || async {
        call(&client, "GET", &audit_url, None).await.1["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
    })
    .await;
    assert!(audited, "the audit trail has the event within 5 s");
    let (_, audit) = call(&client, "GET", &audit_url, None).await;
    let items = audit["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event_type"], "LicenseIssued");
    assert_eq!(
        items[0]["actor"],
        json!({"kind": "api_key", "id": "AKIDtestadmin"})
    );
    assert_eq!(items[0]["correlation_id"], correlation.as_str());
    assert_eq!(items[0]["context"], "issuance");
    assert_eq!(items[0]["sequence"], 1);
    assert_eq!(items[0]["prev_hash"], "00".repeat(32));

    issuance.running.stop().await;
    projector.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_command_over_http_and_over_kafka_is_applied_once_with_identical_outcomes() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let client = admin_client();
    let topics = contracts::Topics::new(&prefix);
    let command_id = Uuid::now_v7();

    let res = client
        .post(format!("{}/v1/licenses", issuance.url()))
        .header("Idempotency-Key", command_id.to_string())
        .json(&license_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["idempotent-replayed"], "false");
    let license: Value = res.json().await.expect("json");
    let id = license["id"].as_str().expect("id").to_string();

    let env = CommandEnvelope {
        command_id,
        command_type: "IssueLicense".into(),
        aggregate_id: id.clone(),
        issued_at: Utc::now(),
        actor: Actor::new(ActorKind::Service, "crm"),
        correlation_id: Uuid::now_v7().to_string(),
        causation_id: None,
        payload: license_body(),
    };
    send_command(&infra.caller(), &topics.commands("issuance"), &env).await;

    let outcomes = read_topic(
        &infra.operator(),
        &topics.outcomes(),
        1,
        Duration::from_secs(30),
    )
    .await;
    let over_kafka: Vec<CommandOutcome> = outcomes
        .iter()
        .filter_map(|m| serde_json::from_value(json_of(m)).ok())
        .filter(|o: &CommandOutcome| o.command_id == command_id)
        .collect();
    assert_eq!(
        over_kafka.len(),
        1,
        "one outcome message for the Kafka copy"
    );
    let over_http: CommandOutcome = client
        .get(format!("{}/v1/commands/{command_id}", issuance.url()))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(over_kafka[0], over_http);
    assert_eq!(over_http.status, OutcomeStatus::Accepted);
    assert_eq!(over_http.aggregate_id, id);

    // The same request again over HTTP: replayed, not re-applied.
    let again = client
        .post(format!("{}/v1/licenses", issuance.url()))
        .header("Idempotency-Key", command_id.to_string())
        .json(&license_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], license["id"]);

    // The same key with a different request is refused.
    let mut other = license_body();
    other["customer"] = json!("Someone Else");
    let clash = client
        .post(format!("{}/v1/licenses", issuance.url()))
        .header("Idempotency-Key", command_id.to_string())
        .json(&other)
        .send()
        .await
        .expect("sent");
    assert_eq!(clash.status(), 422);
    let problem: Value = clash.json().await.expect("json");
    assert_eq!(problem["code"], "IDEMPOTENCY_KEY_REUSED");

    let db = pool(&issuance.db).await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM events WHERE aggregate_type = 'License'"
        )
        .await,
        1
    );
    let events = read_topic(
        &infra.operator(),
        &topics.events("issuance"),
        1,
        Duration::from_secs(30),
    )
    .await;
    let licenses: Vec<_> = events
        .iter()
        .filter(|m| json_of(m)["aggregate_type"] == "License")
        .collect();
    assert_eq!(licenses.len(), 1, "one license event message on Kafka");
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_problem_naming_it_and_stores_nothing() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let client = admin_client();
    let url = format!("{}/v1/licenses", issuance.url());
    let mut unknown = license_body();
    unknown["colour"] = json!("red");
    let mut wrong_type = license_body();
    wrong_type["features"] = json!("data-access");
    let mut bad_kind = license_body();
    bad_kind["kind"] = json!("forever");
    let mut past = license_body();
    past["expires_at"] = json!("2001-01-01T00:00:00Z");
    let mut bad_product = license_body();
    bad_product["product"] = json!("Not A Code");
    let big = json!({"customer": "x".repeat(70_000)});

    // (case, body, content type, status, code, field)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            "malformed",
            b"{\"product\": ".to_vec(),
            "application/json",
            400,
            "MALFORMED_JSON",
            None,
        ),
        (
            "unknown field",
            unknown.to_string().into_bytes(),
            "application/json",
            422,
            "UNKNOWN_FIELD",
            Some("colour"),
        ),
        (
            "wrong type",
            wrong_type.to_string().into_bytes(),
            "application/json",
            422,
            "INVALID_FIELD",
            Some("features"),
        ),
        (
            "bad enum",
            bad_kind.to_string().into_bytes(),
            "application/json",
            422,
            "INVALID_FIELD",
            Some("kind"),
        ),
        (
            "missing field",
            b"{\"product\":\"p\"}".to_vec(),
            "application/json",
            422,
            "MISSING_FIELD",
            None,
        ),
        (
            "oversize",
            big.to_string().into_bytes(),
            "application/json",
            413,
            "BODY_TOO_LARGE",
            None,
        ),
        (
            "not json",
            b"product=x".to_vec(),
            "text/plain",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            None,
        ),
        (
            "expiry in past",
            past.to_string().into_bytes(),
            "application/json",
            422,
            "EXPIRY_IN_PAST",
            Some("expires_at"),
        ),
        (
            "bad product",
            bad_product.to_string().into_bytes(),
            "application/json",
            422,
            "INVALID_PRODUCT",
            Some("product"),
        ),
    ];
    for (name, body, content_type, status, code, field) in cases {
        let res = client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status().as_u16(), status, "{name}");
        assert_eq!(
            res.headers()["content-type"].to_str().ok(),
            Some("application/problem+json"),
            "{name}"
        );
        let p: Value = res.json().await.expect("problem json");
        assert_eq!(p["code"], code, "{name}: {p}");
        if let Some(f) = field {
            assert_eq!(p["field"], f, "{name}: {p}");
        }
    }
    let res = client
        .post(&url)
        .header("Idempotency-Key", "not-a-uuid")
        .json(&license_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);
    let res = client
        .get(format!("{}/v1/licenses/not-a-uuid", issuance.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);
    let res = client
        .get(format!("{}/v1/licenses/{}", issuance.url(), Uuid::now_v7()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 404);

    let db = pool(&issuance.db).await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM events WHERE aggregate_type = 'License'"
        )
        .await,
        0,
        "nothing stored"
    );
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_altered_stored_event_is_reported_by_verify() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let client = admin_client();
    let license: Value = issue(&client, &issuance.url(), &license_body())
        .await
        .json()
        .await
        .expect("json");
    let id = license["id"].as_str().expect("id");
    let db = pool(&issuance.db).await;

    let report = eventstore::chain::verify(&db, "License", id)
        .await
        .expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 1);

    let tamper = format!(
        "UPDATE events SET payload = replace(payload::text, 'ACME Corp', 'ACME Crop')::json \
         WHERE aggregate_id = '{id}'"
    );
    rewrite_history(&db, &[&tamper]).await;
    let report = eventstore::chain::verify(&db, "License", id)
        .await
        .expect("verify");
    assert_eq!(
        report.problems,
        vec![eventstore::ChainProblem::HashMismatch { sequence: 1 }]
    );

    // The operators' CLI reports it too, and exits non-zero.
    let out = std::process::Command::new(bin_path("licensectl"))
        .args([
            "verify",
            "--database-url",
            &issuance.db,
            "--aggregate-type",
            "License",
            "--aggregate-id",
            id,
        ])
        .output()
        .expect("licensectl runs");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hash_mismatch"), "{stdout}");
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_command_is_dead_lettered_and_the_next_one_still_applies() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let topics = contracts::Topics::new(&prefix);
    let producer = infra.caller().client().create().expect("producer");
    let id = Uuid::now_v7().to_string();
    send_raw(&producer, &topics.commands("issuance"), &id, b"{not json").await;
    let env = CommandEnvelope {
        command_id: Uuid::now_v7(),
        command_type: "IssueLicense".into(),
        aggregate_id: id.clone(),
        issued_at: Utc::now(),
        actor: Actor::new(ActorKind::Service, "crm"),
        correlation_id: "c-poison".into(),
        causation_id: None,
        payload: license_body(),
    };
    send_command(&infra.caller(), &topics.commands("issuance"), &env).await;

    let dlq = read_topic(
        &infra.operator(),
        &contracts::Topics::dlq(&topics.commands("issuance")),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dlq.len(), 1);
    let headers: HashMap<String, String> = {
        use rdkafka::message::{Headers, Message};
        dlq[0]
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        headers["dlq_reason"].contains("not a command envelope"),
        "{headers:?}"
    );
    let outcomes = read_topic(
        &infra.operator(),
        &topics.outcomes(),
        1,
        Duration::from_secs(30),
    )
    .await;
    let outcome: CommandOutcome = serde_json::from_value(json_of(&outcomes[0])).expect("outcome");
    assert_eq!(outcome.command_id, env.command_id);
    assert_eq!(outcome.status, OutcomeStatus::Accepted);

    // A well-formed envelope with a bad payload gets a rejected outcome instead.
    let mut bad = env.clone();
    bad.command_id = Uuid::now_v7();
    bad.aggregate_id = Uuid::now_v7().to_string();
    bad.payload = json!({"product": "x"});
    send_command(&infra.caller(), &topics.commands("issuance"), &bad).await;
    let outcomes = read_topic(
        &infra.operator(),
        &topics.outcomes(),
        2,
        Duration::from_secs(30),
    )
    .await;
    let rejected: CommandOutcome = outcomes
        .iter()
        .filter_map(|m| serde_json::from_value::<CommandOutcome>(json_of(m)).ok())
        .find(|o| o.command_id == bad.command_id)
        .expect("outcome of the bad command");
    assert_eq!(rejected.status, OutcomeStatus::Rejected);
    // Read as strictly as the HTTP body, the field named in the envelope.
    let error = rejected.error.expect("error");
    assert_eq!(
        (error.code.as_str(), error.field.as_deref(), error.kind),
        (
            "MISSING_FIELD",
            Some("payload.customer"),
            Some(contracts::ErrorKind::Invalid)
        )
    );
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_serves_health_readiness_and_metrics() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let activation = start_activation(&infra, &prefix).await.running;
    let domain = start_domain_binding(&infra, &prefix).await.running;
    let grants = start_grant_sync(&infra, &prefix).await.running;
    let client = admin_client();
    for url in [
        issuance.url(),
        projector.url(),
        activation.url(),
        domain.url(),
        grants.url(),
    ] {
        assert!(
            becomes_ready(&url, Duration::from_secs(30)).await,
            "{url}/readyz"
        );
        for path in ["/healthz", "/readyz", "/metrics"] {
            let res = client
                .get(format!("{url}{path}"))
                .send()
                .await
                .expect("sent");
            assert_eq!(res.status(), 200, "{url}{path}");
        }
        let metrics = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("text");
        assert!(metrics.contains("http_requests_total"), "{url}: {metrics}");
    }
    for r in [
        issuance.running,
        projector.running,
        activation,
        domain,
        grants,
    ] {
        r.stop().await;
    }
}
