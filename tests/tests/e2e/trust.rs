//! The trust model, attacked: Kafka principals and ACLs, command-topic
//! authority, defensive consumers.

use std::time::Duration;

use chrono::Utc;
use contracts::{Actor, ActorKind, CommandEnvelope, CommandOutcome, OutcomeStatus};
use e2e::*;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::checkpoints::checkpoint_now;
use crate::license_body;

/// Sends one message as `kafka`; the broker's answer.
async fn produce(
    kafka: &bus::Kafka,
    topic: &str,
    key: &str,
    body: &[u8],
) -> Result<(), KafkaError> {
    let producer: FutureProducer = kafka
        .client()
        .set("message.timeout.ms", "8000")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(body),
            Duration::from_secs(10),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

fn denied(r: &Result<(), KafkaError>) -> bool {
    matches!(
        r,
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::TopicAuthorizationFailed
        ))
    )
}

/// An `ApiKeyCreated` granting `admin` to a secret the forger knows.
fn forged_api_key(secret: &str) -> (String, Vec<u8>) {
    let key_id = "AKIDforged";
    let envelope = json!({
        "event_id": Uuid::now_v7(),
        "event_type": "ApiKeyCreated",
        "event_version": "1",
        "aggregate_type": "ApiKey",
        "aggregate_id": key_id,
        "sequence": 1,
        "global_position": 1,
        "occurred_at": Utc::now(),
        "recorded_at": Utc::now(),
        "command_id": Uuid::now_v7(),
        "correlation_id": "forgery",
        "actor": {"kind": "system", "id": "forger"},
        "payload": {
            "key_id": key_id,
            "secret_digest": service_kit::auth::secret_digest(secret),
            "scopes": ["admin"],
            "allowlist": [],
            "created_at": Utc::now(),
        },
        "prev_hash": "00".repeat(32),
        "hash": "11".repeat(32),
    });
    (
        key_id.to_string(),
        serde_json::to_vec(&envelope).expect("json"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_refuses_anonymous_clients_and_other_services_principals() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let topics = contracts::Topics::new(&prefix);
    let issuance = start_issuance(&infra, &prefix).await;
    let activation = start_activation(&infra, &prefix).await;
    let events = topics.events("issuance");
    let secret = "0123456789abcdef0123456789abcdef";
    let (key_id, forged) = forged_api_key(secret);

    // No credentials: the listener speaks only SASL over TLS.
    let anonymous = bus::Kafka::new(&infra.brokers)
        .set("security.protocol", "SSL")
        .set(
            "ssl.ca.location",
            infra
                .operator()
                .get("ssl.ca.location")
                .expect("the CA of the test broker"),
        );
    let r = produce(&anonymous, &events, &key_id, &forged).await;
    assert!(r.is_err(), "an anonymous client produced: {r:?}");
    let plaintext = bus::Kafka::new(&infra.brokers);
    assert!(produce(&plaintext, &events, &key_id, &forged)
        .await
        .is_err());
    // Right user, wrong password.
    let wrong = infra.kafka("issuance").set("sasl.password", "guessed");
    assert!(produce(&wrong, &events, &key_id, &forged).await.is_err());

    // Another service's credentials: authenticated, not authorised.
    for role in [
        "activation",
        "domain-binding",
        "grant-sync",
        "projector",
        "operator",
        "caller",
    ] {
        let r = produce(&infra.kafka(role), &events, &key_id, &forged).await;
        assert!(denied(&r), "{role} wrote issuance's events: {r:?}");
    }
    // Nor may a service write another's relay checkpoint.
    let r = produce(
        &infra.kafka("activation"),
        &topics.relay_checkpoints("issuance"),
        "issuance",
        br#"{"tx_id":"999999999","global_position":999999999}"#,
    )
    .await;
    assert!(denied(&r), "activation moved issuance's relay: {r:?}");
    // Its own topic it may write.
    let own = produce(
        &infra.kafka("activation"),
        &contracts::Topics::dlq(&events),
        "x",
        b"{}",
    )
    .await;
    assert!(
        own.is_ok(),
        "activation writes the DLQ of what it consumes: {own:?}"
    );

    // So the forged key works nowhere.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let forger = client_with(&format!("{key_id}.{secret}"));
    for url in [
        format!("{}/v1/products/integration-platform", issuance.url()),
        format!(
            "{}/v1/licenses/{}/activations",
            activation.url(),
            Uuid::now_v7()
        ),
    ] {
        let (s, b) = call(&forger, "GET", &url, None).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (401, Some("BAD_CREDENTIALS")),
            "{url}"
        );
    }
    let p = pool(&activation.db).await;
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM api_keys WHERE key_id = 'AKIDforged'"
        )
        .await,
        0
    );
    issuance.running.stop().await;
    activation.running.stop().await;
}

/// An envelope for `topic`'s command consumer.
fn command(command_type: &str, aggregate_id: &str, payload: Value) -> CommandEnvelope {
    CommandEnvelope {
        command_id: Uuid::now_v7(),
        command_type: command_type.into(),
        aggregate_id: aggregate_id.into(),
        issued_at: Utc::now(),
        // What the sender claims: recorded, and so is the topic.
        actor: Actor::new(ActorKind::ApiKey, "AKIDtestadmin"),
        correlation_id: Uuid::now_v7().to_string(),
        causation_id: None,
        payload,
    }
}

async fn outcome_of(infra: &Infra, topics: &contracts::Topics, id: Uuid) -> CommandOutcome {
    let mut found = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while found.is_none() && std::time::Instant::now() < deadline {
        let msgs = read_topic(
            &infra.operator(),
            &topics.outcomes(),
            1,
            Duration::from_secs(5),
        )
        .await;
        found = msgs
            .iter()
            .filter_map(|m| serde_json::from_value::<CommandOutcome>(json_of(m)).ok())
            .find(|o| o.command_id == id);
    }
    found.expect("an outcome on command-outcomes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_commands_are_accepted_only_from_the_admin_topic_and_the_topic_is_recorded() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let topics = contracts::Topics::new(&prefix);
    let issuance = start_issuance(&infra, &prefix).await;
    let mut product: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("infra/seed/cloud-engine.json")).expect("seed"),
    )
    .expect("json");
    product["code"] = json!("kafka-made");

    // A caller (another team's service) may send license commands only.
    let env = command("CreateProduct", "kafka-made", product.clone());
    send_command(&infra.caller(), &topics.commands("issuance"), &env).await;
    let o = outcome_of(&infra, &topics, env.command_id).await;
    assert_eq!(o.status, OutcomeStatus::Rejected);
    assert_eq!(
        o.error.as_ref().map(|e| e.code.as_str()),
        Some("INSUFFICIENT_SCOPE")
    );
    let (s, _) = call(
        &admin_client(),
        "GET",
        &format!("{}/v1/products/kafka-made", issuance.url()),
        None,
    )
    .await;
    assert_eq!(s, 404, "a refused admin command created nothing");
    // And may not write the admin topic at all.
    let body = serde_json::to_vec(&env).expect("json");
    let r = produce(
        &infra.caller(),
        &topics.admin_commands("issuance"),
        "kafka-made",
        &body,
    )
    .await;
    assert!(denied(&r), "the caller wrote the admin topic: {r:?}");

    // An administrator's copy on the admin topic applies.
    let env = command("CreateProduct", "kafka-made", product);
    send_command(
        &infra.kafka("admin"),
        &topics.admin_commands("issuance"),
        &env,
    )
    .await;
    let o = outcome_of(&infra, &topics, env.command_id).await;
    assert_eq!(o.status, OutcomeStatus::Accepted, "{o:?}");

    // A license command over the caller's topic applies, and every stored
    // actor names the topic beside what the envelope claimed.
    let id = Uuid::now_v7().to_string();
    let env = command("IssueLicense", &id, license_body());
    send_command(&infra.caller(), &topics.commands("issuance"), &env).await;
    let o = outcome_of(&infra, &topics, env.command_id).await;
    assert_eq!(o.status, OutcomeStatus::Accepted, "{o:?}");
    let p = pool(&issuance.db).await;
    let actors: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, (metadata::jsonb)->'actor' FROM events \
         WHERE event_type IN ('ProductCreated', 'LicenseIssued') ORDER BY global_position",
    )
    .fetch_all(&p)
    .await
    .expect("events");
    let via = |t: &str| {
        actors
            .iter()
            .filter(|(e, _)| e == t)
            .map(|(_, a)| a["via"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert!(via("ProductCreated").contains(&format!("kafka:{}", topics.admin_commands("issuance"))));
    assert_eq!(
        via("LicenseIssued"),
        vec![format!("kafka:{}", topics.commands("issuance"))]
    );
    assert!(actors.iter().all(|(_, a)| a["id"] == "AKIDtestadmin"));
    issuance.running.stop().await;
}

async fn status_in(db: &str, sql: &str) -> Option<String> {
    let p = pool(db).await;
    let s: Option<String> = sqlx::query_scalar(sql)
        .fetch_optional(&p)
        .await
        .ok()
        .flatten();
    p.close().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_with_a_jumped_sequence_is_dead_lettered_everywhere_and_later_events_still_fold() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let topics = contracts::Topics::new(&prefix);
    let issuance = start_issuance(&infra, &prefix).await;
    let activation = start_activation(&infra, &prefix).await;
    let domain = start_domain_binding(&infra, &prefix).await;
    let grants = start_grant_sync(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let admin = admin_client();

    let (s, license) = call(
        &admin,
        "POST",
        &format!("{}/v1/licenses", issuance.url()),
        Some(&license_body()),
    )
    .await;
    assert_eq!(s, 201, "{license}");
    let id = license["id"].as_str().expect("id").to_string();
    let replica = format!("SELECT view->>'status' FROM license_replica WHERE license_id = '{id}'");
    let state = format!("SELECT status FROM license_state WHERE license_id = '{id}'");
    let replicas = [
        (activation.db.as_str(), replica.as_str()),
        (domain.db.as_str(), replica.as_str()),
        (grants.db.as_str(), replica.as_str()),
        (projector.db.as_str(), state.as_str()),
    ];
    for (db, sql) in replicas {
        let there = wait_until(Duration::from_secs(20), || async {
            status_in(db, sql).await.as_deref() == Some("active")
        })
        .await;
        assert!(there, "the license reached {db}");
    }

    // A forged event far ahead of the stream, as if from the event topic.
    let genuine = read_topic(
        &infra.operator(),
        &topics.events("issuance"),
        1,
        Duration::from_secs(10),
    )
    .await
    .into_iter()
    .find(|m| json_of(m)["aggregate_id"] == id.as_str())
    .expect("the LicenseIssued message");
    let mut forged = json_of(&genuine);
    forged["event_id"] = json!(Uuid::now_v7());
    forged["event_type"] = json!("LicenseRevoked");
    forged["sequence"] = json!(1000);
    forged["payload"] = json!({"license_id": id, "reason": "forged", "revoked_at": Utc::now()});
    produce(
        &infra.kafka("admin"),
        &topics.events("issuance"),
        &id,
        &serde_json::to_vec(&forged).expect("json"),
    )
    .await
    .expect("the administrator may write anything");

    // The genuine next event still folds everywhere.
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{}/v1/licenses/{id}/suspend", issuance.url()),
        Some(&json!({"reason": "late payment"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for (db, sql) in replicas {
        let folded = wait_until(Duration::from_secs(20), || async {
            status_in(db, sql).await.as_deref() == Some("suspended")
        })
        .await;
        assert!(folded, "the genuine suspension was folded in {db}");
    }

    // Every consumer of the topic dead-lettered the forgery, with a reason.
    let dlq = read_topic(
        &infra.operator(),
        &contracts::Topics::dlq(&topics.events("issuance")),
        1,
        Duration::from_secs(10),
    )
    .await;
    let mut by: Vec<String> = dlq
        .iter()
        .filter(|m| json_of(m)["sequence"] == 1000)
        .filter_map(|m| {
            let get = |k: &str| header(m, k);
            assert!(
                get("dlq_reason").is_some_and(|r| r.contains("expected 2, got 1000")),
                "{:?}",
                get("dlq_reason")
            );
            get("dlq_consumer")
        })
        .collect();
    by.sort();
    for consumer in [
        "issuance.api-keys",
        "activation.api-keys",
        "activation.replica",
        "domain-binding.api-keys",
        "domain-binding.replica",
        "grant-sync.api-keys",
        "grant-sync.replica",
        "projector.audit_trail",
        "projector.license_state",
    ] {
        assert!(
            by.iter().any(|c| c == &format!("{prefix}.{consumer}")),
            "{consumer} did not dead-letter the forgery: {by:?}"
        );
    }
    let p = pool(&projector.db).await;
    assert_eq!(
        count(&p, "SELECT count(*) FROM audit_trail WHERE sequence = 1000").await,
        0,
        "the forgery is not in the audit trail"
    );
    for s in [issuance, activation, domain, grants, projector] {
        s.running.stop().await;
    }
}

/// The SQLSTATE of what `sql` answered, None when it succeeded.
async fn sqlstate(url: &str, sql: &str) -> Option<String> {
    let p = pool(url).await;
    let r = sqlx::query(sql).execute(&p).await;
    p.close().await;
    match r {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => Some(e.code().map(|c| c.to_string()).unwrap_or_default()),
        Err(e) => panic!("{sql}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_roles_append_events_but_postgres_refuses_to_change_them() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let (s, license) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/licenses", issuance.url()),
        Some(&license_body()),
    )
    .await;
    assert_eq!(s, 201, "the service appended as its own role: {license}");
    let id = license["id"].as_str().expect("id");

    for (service, db) in [("issuance", &issuance.db), ("projector", &projector.db)] {
        let (role_url, _) = infra.service_db(service, db);
        let p = pool(&role_url).await;
        let (superuser, user): (bool, String) = sqlx::query_as(
            "SELECT rolsuper, current_user::text FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&p)
        .await
        .expect("role");
        p.close().await;
        assert!(!superuser, "{service} serves as a superuser");
        assert_eq!(user, Infra::service_role(service));
        for sql in [
            format!(
                "UPDATE events SET payload = '{{\"forged\":true}}' WHERE aggregate_id = '{id}'"
            ),
            "UPDATE events SET payload = payload".to_string(),
            "DELETE FROM events".to_string(),
            "TRUNCATE events".to_string(),
            "UPDATE command_outcomes SET status = 'rejected'".to_string(),
            "DELETE FROM command_outcomes".to_string(),
            "DELETE FROM _sqlx_migrations".to_string(),
            "CREATE TABLE IF NOT EXISTS events_shadow (x int)".to_string(),
        ] {
            let refused = sqlstate(&role_url, &sql).await;
            let allowed_ddl = service == "projector" && sql.starts_with("CREATE");
            if allowed_ddl {
                // The projector rebuilds its read models: it may create tables.
                assert_eq!(refused, None, "{service}: {sql}");
            } else {
                assert_eq!(refused.as_deref(), Some("42501"), "{service}: {sql}");
            }
        }
    }
    // Not even the owner or a superuser, but by the explicit maintenance path.
    let (_, owner_url) = infra.service_db("issuance", &issuance.db);
    for url in [owner_url.as_str(), issuance.db.as_str()] {
        assert_eq!(
            sqlstate(url, "UPDATE events SET payload = payload")
                .await
                .as_deref(),
            Some("42501")
        );
        assert_eq!(
            sqlstate(url, "DELETE FROM command_outcomes")
                .await
                .as_deref(),
            Some("42501")
        );
    }
    let p = pool(&issuance.db).await;
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM events WHERE aggregate_type = 'License'"
        )
        .await,
        1
    );
    issuance.running.stop().await;
    projector.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_migrates_as_the_owner_then_serves_without_the_owners_password() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let db = infra.fresh_db("issuance").await;
    let (serving, owner) = infra.service_db("issuance", &db);
    let mut config = issuance_config(&infra, &db, &prefix);
    config.common.database_migration_url = None;
    let options = || issuance::Options {
        handle_signals: false,
        ..Default::default()
    };

    // Never migrated: the serving role cannot, and says what to run.
    let refused = issuance::start(config.clone(), options()).await;
    let Err(e) = refused else {
        panic!("issuance served an unmigrated database as its own role");
    };
    assert!(e.to_string().contains("issuance migrate"), "{e}");

    // `issuance migrate`, as the operator would run it, then exits.
    let empty = std::env::temp_dir().join(format!("{prefix}-no-config"));
    let out = std::process::Command::new(bin_path("issuance"))
        .arg("migrate")
        .env(service_kit::config::CONFIG_DIR_VAR, &empty)
        .env("LICENSING_DATABASE_URL", &serving)
        .env("LICENSING_DATABASE_MIGRATION_URL", &owner)
        .env("LICENSING_LICENSE_KEY_SECRET", "x".repeat(64))
        .env("LICENSING_LOG_FORMAT", "json")
        .output()
        .expect("issuance runs");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{logs}");
    assert!(logs.contains("migrated"), "{logs}");
    assert!(
        !logs.contains(owner.rsplit_once('@').map_or("", |(cred, _)| cred)),
        "the owner's credentials are not logged: {logs}"
    );
    let out = std::process::Command::new(bin_path("issuance"))
        .arg("serve-everything")
        .env(service_kit::config::CONFIG_DIR_VAR, &empty)
        .output()
        .expect("issuance runs");
    assert!(!out.status.success(), "an unknown mode is refused");

    // Now it serves with nothing but its own role.
    let running = issuance::start(config, options())
        .await
        .expect("issuance serves a migrated database as its own role");
    seed_products(&running.url()).await;
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/licenses", running.url()),
        Some(&license_body()),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    // Only its role may connect to its database: another service's is
    // refused at the door.
    let (other, _) = infra.service_db("activation", &db);
    let err = sqlx::PgPool::connect(&other)
        .await
        .expect_err("another service's role cannot connect");
    assert!(
        matches!(&err, sqlx::Error::Database(d) if d.code().as_deref() == Some("42501")),
        "{err}"
    );
    running.stop().await;
}

/// A checkpoint message of `context` whose claims name `iss`, signed by
/// `ring`.
fn checkpoint_message(
    ring: &signing::KeyRing,
    context: &str,
    iss: &str,
    tree_size: u64,
    root_hash: &str,
) -> Vec<u8> {
    let now = Utc::now();
    let claims = contracts::checkpoint::CheckpointClaims {
        iss: iss.into(),
        typ: contracts::checkpoint::CHECKPOINT_TYP.into(),
        context: context.into(),
        tree_size,
        root_hash: root_hash.into(),
        last_position: Some(1),
        iat: now.timestamp(),
        signed_at: now,
    };
    serde_json::to_vec(&contracts::checkpoint::CheckpointMessage {
        context: context.into(),
        tree_size,
        root_hash: root_hash.into(),
        checkpoint: ring.sign(&claims).expect("sign"),
    })
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_projector_serves_only_checkpoints_their_contexts_service_signed() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let topics = contracts::Topics::new(&prefix);
    let issuance = start_issuance(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let (iss, proj) = (issuance.url(), projector.url());
    let admin = admin_client();
    let pp = pool(&projector.db).await;
    assert!(
        wait_for_count(
            &pp,
            "SELECT count(*) FROM audit_trail WHERE context = 'issuance' \
             AND event_type = 'SigningKeyPublished'",
            1,
            Duration::from_secs(30),
        )
        .await,
        "the projector holds issuance's key"
    );
    let (_, jwks) = call(&admin, "GET", &format!("{iss}/.well-known/jwks.json"), None).await;
    let kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_string();
    let root = |b: u8| hex::encode([b; 32]);

    // A compromised service writing to the checkpoints topic.
    let attacker = infra.kafka("activation");
    let topic = topics.checkpoints();
    let stranger = signing::KeyRing::generate("stranger").expect("ring");
    let poison: Vec<(&str, Vec<u8>)> = vec![
        // Issuance's kid, another key.
        (
            "issuance's kid, another key",
            checkpoint_message(
                &signing::KeyRing::generate(&kid).expect("ring"),
                "issuance",
                "issuance",
                7,
                &root(7),
            ),
        ),
        // Issuance's claims filed under activation.
        (
            "another service's claims",
            checkpoint_message(&stranger, "activation", "issuance", 9, &root(9)),
        ),
        // A NUL byte PostgreSQL cannot store: refused, not retried forever.
        (
            "a NUL byte",
            checkpoint_message(&stranger, "activation", "activation", 8, "ab\u{0}cd"),
        ),
        ("not JSON", b"{not json".to_vec()),
    ];
    for (case, body) in &poison {
        produce(&attacker, &topic, "issuance", body)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    }
    // A checkpoint of domain binding's, under a key the projector has not
    // seen yet: kept aside, not served.
    let pem = signing::generate_pem().expect("pem");
    let key_file = std::env::temp_dir().join(format!("{prefix}-domain-signing.pem"));
    std::fs::write(&key_file, &pem).expect("write key");
    let domain_ring = signing::KeyRing::from_pem_thumbprint(&pem).expect("ring");
    produce(
        &infra.kafka("domain-binding"),
        &topic,
        "domain",
        &checkpoint_message(&domain_ring, "domain", "domain-binding", 3, &root(3)),
    )
    .await
    .expect("produce");

    // The genuine one, after all of them, is served.
    let genuine = checkpoint_now(&iss).await;
    let url =
        |context: &str, n: u64| format!("{proj}/v1/checkpoints?context={context}&tree_size={n}");
    let n = genuine["tree_size"].as_u64().expect("tree_size");
    let served = wait_until(Duration::from_secs(30), || async {
        let (s, b) = call(&admin, "GET", &url("issuance", n), None).await;
        s == 200 && b["items"][0]["signature"] == "valid"
    })
    .await;
    assert!(served, "the genuine checkpoint is served after the poison");
    for (context, n) in [
        ("issuance", 7),
        ("activation", 9),
        ("activation", 8),
        ("domain", 3),
    ] {
        let (s, b) = call(&admin, "GET", &url(context, n), None).await;
        assert_eq!(s, 404, "{context} {n} is not served: {b}");
    }
    let dead = read_topic(
        &infra.operator(),
        &contracts::Topics::dlq(&topic),
        poison.len(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(dead.len(), poison.len(), "each forgery is dead-lettered");
    assert_eq!(
        count(
            &pp,
            "SELECT count(*) FROM service_checkpoints WHERE context = 'domain' AND verified IS NULL"
        )
        .await,
        1,
        "the one under an unknown key waits"
    );

    // Its key arrives (domain binding starts with it and publishes it on
    // its events topic): now it verifies, and is served.
    let mut config = domain_config(&infra, &infra.fresh_db("domain").await, &prefix);
    config.common.signing_key_file = Some(key_file.display().to_string());
    config.common.signing_key_generate = false;
    let domain = domain_binding::start(
        config,
        domain_binding::Options {
            handle_signals: false,
            ..Default::default()
        },
    )
    .await
    .expect("domain binding starts");
    let verified = wait_until(Duration::from_secs(30), || async {
        let (s, b) = call(&admin, "GET", &url("domain", 3), None).await;
        s == 200 && b["items"][0]["signature"] == "valid"
    })
    .await;
    assert!(verified, "verified once its key was projected");
    let _ = std::fs::remove_file(&key_file);
    domain.stop().await;
    issuance.running.stop().await;
    projector.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_command_envelope_is_answered_and_stores_nothing_and_later_commands_apply() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let topics = contracts::Topics::new(&prefix);
    let issuance = start_issuance(&infra, &prefix).await;
    let p = pool(&issuance.db).await;
    let stored_before = count(&p, "SELECT count(*) FROM command_outcomes").await;
    let id = Uuid::now_v7().to_string();
    let cases: Vec<(&str, CommandEnvelope)> = vec![
        ("correlation_id", {
            let mut e = command("IssueLicense", &id, license_body());
            e.correlation_id = "trace\u{0}id".into();
            e
        }),
        ("causation_id", {
            let mut e = command("IssueLicense", &id, license_body());
            e.causation_id = Some("x".repeat(65));
            e
        }),
        ("actor.id", {
            let mut e = command("IssueLicense", &id, license_body());
            e.actor = Actor::new(ActorKind::ApiKey, "AKID\u{7}bell");
            e
        }),
        (
            "aggregate_id",
            command("IssueLicense", &"l".repeat(201), license_body()),
        ),
    ];
    for (field, env) in &cases {
        send_command(&infra.caller(), &topics.commands("issuance"), env).await;
        let o = outcome_of(&infra, &topics, env.command_id).await;
        assert_eq!(o.status, OutcomeStatus::Rejected, "{field}: {o:?}");
        let e = o.error.expect("error");
        assert_eq!(
            (e.code.as_str(), e.field.as_deref()),
            ("INVALID_ENVELOPE", Some(*field)),
            "{field}"
        );
    }
    // The same partition goes on: the next command of the aggregate applies.
    let env = command("IssueLicense", &id, license_body());
    send_command(&infra.caller(), &topics.commands("issuance"), &env).await;
    let o = outcome_of(&infra, &topics, env.command_id).await;
    assert_eq!(o.status, OutcomeStatus::Accepted, "{o:?}");
    assert_eq!(
        count(&p, "SELECT count(*) FROM command_outcomes").await,
        stored_before + 1,
        "only the valid command was stored"
    );
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM events WHERE metadata::text LIKE '%\\\\u0000%' OR metadata::text LIKE '%bell%'"
        )
        .await,
        0
    );
    issuance.running.stop().await;
}
