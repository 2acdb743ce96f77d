//! Crash safety: processes are SIGKILLed mid-stream and restarted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::Value;
use uuid::Uuid;

use crate::license_body;

const COMMANDS: usize = 2_000;
const CLIENTS: usize = 32;

/// Issues `COMMANDS` licenses from `CLIENTS` concurrent clients, each command
/// with its own idempotency key, retried with the same key until answered.
async fn issue_many(
    url: Arc<Mutex<String>>,
    accepted: Arc<Mutex<HashMap<Uuid, String>>>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) {
    let client = admin_client();
    while next.fetch_add(1, Ordering::SeqCst) < COMMANDS {
        let key = Uuid::now_v7();
        loop {
            assert!(
                Instant::now() < deadline,
                "command {key} never got an answer"
            );
            let base = url.lock().expect("url").clone();
            let res = client
                .post(format!("{base}/v1/licenses"))
                .header("Idempotency-Key", key.to_string())
                .json(&license_body())
                .send()
                .await;
            match res {
                Ok(r) if r.status() == 201 => {
                    let body: Value = r.json().await.expect("json");
                    let id = body["id"].as_str().expect("id").to_string();
                    accepted.lock().expect("lock").insert(key, id);
                    break;
                }
                Ok(r) if r.status().is_client_error() => panic!("rejected: {}", r.status()),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_issuance_under_load_loses_nothing_and_duplicates_nothing() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let db = infra.fresh_db("issuance_kill").await;
    let port = free_port();
    let mut service = ServiceProcess::spawn("issuance", &infra, &db, &prefix, port).await;
    seed_products(&service.url).await;
    let projector = start_projector(&infra, &prefix).await;

    let url = Arc::new(Mutex::new(service.url.clone()));
    let accepted = Arc::new(Mutex::new(HashMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(240);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(issue_many(
                url.clone(),
                accepted.clone(),
                next.clone(),
                deadline,
            ))
        })
        .collect();

    // Kill while commands are in flight, then restart on the same port.
    let killed_at = loop {
        let n = accepted.lock().expect("lock").len();
        if n >= COMMANDS / 4 {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    service.kill();
    println!("SIGKILL after {killed_at} accepted commands");
    drop(service);
    let service = ServiceProcess::spawn("issuance", &infra, &db, &prefix, port).await;
    for c in clients {
        c.await.expect("client task");
    }
    let accepted = accepted.lock().expect("lock").clone();
    assert_eq!(
        accepted.len(),
        COMMANDS,
        "every command got a success answer"
    );
    let ids: HashSet<&String> = accepted.values().collect();
    assert_eq!(ids.len(), COMMANDS, "one license per command");

    // Postgres: exactly one event per accepted command.
    let pool = pool(&db).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE aggregate_type = 'License'"
        )
        .await,
        COMMANDS as i64
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM (SELECT aggregate_id FROM events WHERE aggregate_type = 'License' GROUP BY aggregate_id HAVING count(*) > 1) d").await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM command_outcomes WHERE command_type = 'IssueLicense'"
        )
        .await,
        COMMANDS as i64
    );

    // Kafka: exactly one message per event.
    let topics = contracts::Topics::new(&prefix);
    let messages: Vec<_> = read_topic(
        &infra.operator(),
        &topics.events("issuance"),
        COMMANDS,
        Duration::from_secs(60),
    )
    .await
    .into_iter()
    .filter(|m| json_of(m)["aggregate_type"] == "License")
    .collect();
    let mut per_license: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        let e = json_of(m);
        *per_license
            .entry(e["aggregate_id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        messages.len(),
        COMMANDS,
        "no message lost or repeated on Kafka"
    );
    for id in &ids {
        assert_eq!(per_license.get(*id), Some(&1), "license {id} on Kafka once");
    }

    // Projector: one row per license, one audit record per event.
    let read = pool_of(&projector.db).await;
    let caught_up = wait_until(Duration::from_secs(60), || async {
        count(&read, "SELECT count(*) FROM license_state").await == COMMANDS as i64
    })
    .await;
    assert!(caught_up, "projector did not catch up");
    assert_eq!(
        count(
            &read,
            "SELECT count(*) FROM audit_trail WHERE aggregate_type = 'License'"
        )
        .await,
        COMMANDS as i64
    );
    drop(service);
    projector.running.stop().await;
}

async fn pool_of(url: &str) -> sqlx::PgPool {
    pool(url).await
}

async fn snapshot(
    pool: &sqlx::PgPool,
) -> (Vec<(Uuid, Value, String)>, Vec<(Uuid, String, i64, String)>) {
    let states: Vec<(Uuid, Value, String)> =
        sqlx::query_as("SELECT license_id, state, status FROM license_state ORDER BY license_id")
            .fetch_all(pool)
            .await
            .expect("states");
    let audit: Vec<(Uuid, String, i64, String)> = sqlx::query_as(
        "SELECT event_id, aggregate_id, sequence, hash FROM audit_trail WHERE aggregate_type = 'License' ORDER BY event_id",
    )
    .fetch_all(pool)
    .await
    .expect("audit");
    (states, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_projector_mid_stream_ends_identical_to_a_fresh_rebuild() {
    const LICENSES: usize = 1_500;
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let url = Arc::new(Mutex::new(issuance.url()));
    let accepted = Arc::new(Mutex::new(HashMap::new()));
    // Reuse the load generator for the first LICENSES commands only.
    let next = Arc::new(AtomicUsize::new(COMMANDS - LICENSES));
    let deadline = Instant::now() + Duration::from_secs(120);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(issue_many(
                url.clone(),
                accepted.clone(),
                next.clone(),
                deadline,
            ))
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }

    let db = infra.fresh_db("projector_kill").await;
    let port = free_port();
    let mut projector = ServiceProcess::spawn("projector", &infra, &db, &prefix, port).await;
    let read = pool(&db).await;
    let mid = wait_until(Duration::from_secs(60), || async {
        count(&read, "SELECT count(*) FROM audit_trail").await > 100
    })
    .await;
    assert!(mid, "projector never started projecting");
    projector.kill();
    let at_kill = count(&read, "SELECT count(*) FROM audit_trail").await;
    println!("SIGKILL with {at_kill} of {LICENSES} events projected");
    drop(projector);
    let projector = ServiceProcess::spawn("projector", &infra, &db, &prefix, port).await;
    let done = wait_until(Duration::from_secs(60), || async {
        count(&read, "SELECT count(*) FROM license_state").await == LICENSES as i64
    })
    .await;
    assert!(done, "restarted projector did not finish");

    // A fresh rebuild: another database, its own consumer group, same topics.
    let mut config = projector_config(&infra, &infra.fresh_db("projector_rebuild").await, &prefix);
    let group = format!("{prefix}-rebuild");
    infra.provision(&prefix, &group).await;
    config.common.consumer_group_prefix = Some(group);
    let rebuild_db = config.common.database_url.clone();
    let rebuild = projector::start(config, false)
        .await
        .expect("rebuild starts");
    let rebuilt = pool(&rebuild_db).await;
    let done = wait_until(Duration::from_secs(60), || async {
        count(&rebuilt, "SELECT count(*) FROM license_state").await == LICENSES as i64
    })
    .await;
    assert!(done, "rebuild did not finish");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (live_states, live_audit) = snapshot(&read).await;
    let (fresh_states, fresh_audit) = snapshot(&rebuilt).await;
    assert_eq!(live_audit.len(), LICENSES);
    assert_eq!(
        live_states, fresh_states,
        "license_state equals a fresh rebuild"
    );
    assert_eq!(
        live_audit, fresh_audit,
        "audit_trail equals a fresh rebuild"
    );
    drop(projector);
    rebuild.stop().await;
    issuance.running.stop().await;
}

/// One request (`method` on the path under the service's current URL),
/// retried with the same idempotency key until the service answers below
/// 500 — across a SIGKILL and a restart on another port. The status and
/// body of the answer.
async fn until_answered(
    client: reqwest::Client,
    url: Arc<Mutex<String>>,
    method: reqwest::Method,
    path: String,
    body: Value,
    deadline: Instant,
    answered: Arc<AtomicUsize>,
) -> (u16, Value) {
    let idempotency = Uuid::now_v7().to_string();
    loop {
        assert!(Instant::now() < deadline, "{path} never answered");
        let base = url.lock().expect("url").clone();
        let res = client
            .request(method.clone(), format!("{base}{path}"))
            .header("Idempotency-Key", &idempotency)
            .json(&body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().as_u16() < 500 => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                answered.fetch_add(1, Ordering::SeqCst);
                return (status, body);
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_activation_loses_no_seat_oversells_none_and_replays_reactions() {
    const LICENSES: usize = 12;
    const DEVICES: usize = 8;
    const SEATS: i64 = 5;
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let iss = issuance.running.url();
    let admin = admin_client();
    let product = format!("kill-{prefix}");
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/products"),
        Some(&serde_json::json!({
            "code": product, "name": "Kill test", "features": [{"code": "f1", "name": "F1"}],
            "policy": {"max_activations": SEATS},
        })),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let db = infra.fresh_db("activation_kill").await;
    let mut service = ServiceProcess::spawn("activation", &infra, &db, &prefix, free_port()).await;
    let url = Arc::new(Mutex::new(service.url.clone()));
    let mut keys = Vec::new();
    for _ in 0..LICENSES {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{iss}/v1/licenses"),
            Some(&serde_json::json!({
                "product": product, "customer": "ACME", "kind": "formal", "features": ["f1"],
            })),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        keys.push((
            b["id"].as_str().expect("id").to_string(),
            b["key"].as_str().expect("key").to_string(),
        ));
    }
    let act = service.url.clone();
    // Licenses arrive over Kafka on several partitions: wait for every one.
    let known = wait_until(Duration::from_secs(30), || async {
        for (_, key) in &keys {
            let body = serde_json::json!({ "license_key": key });
            let url = format!("{act}/v1/validate");
            if call(&admin, "POST", &url, Some(&body)).await.1["code"] == "NOT_FOUND" {
                return false;
            }
        }
        true
    })
    .await;
    assert!(known, "licenses reached activation");

    // Every license gets DEVICES devices racing for SEATS seats, while the
    // service is SIGKILLed and restarted on another port.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    let progress = Arc::new(AtomicUsize::new(0));
    for (l, (_, key)) in keys.iter().enumerate() {
        for d in 0..DEVICES {
            let device = serde_json::json!({"machine_id": format!("m-{l}-{d}"), "disk": format!("d-{l}-{d}"),
                "board": format!("b-{l}-{d}"), "mac": format!("mac-{l}-{d}")});
            let (url, progress, key) = (url.clone(), progress.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let (s, b) = until_answered(
                    admin_client(),
                    url,
                    reqwest::Method::POST,
                    "/v1/activations".into(),
                    serde_json::json!({"license_key": key, "fingerprint": device}),
                    deadline,
                    progress,
                )
                .await;
                (s, b["activation_id"].as_str().map(str::to_string))
            }));
        }
    }
    let started = wait_until(Duration::from_secs(30), || async {
        progress.load(Ordering::SeqCst) >= 20
    })
    .await;
    assert!(started, "activations are being answered");
    service.kill();
    let at_kill = progress.load(Ordering::SeqCst);
    assert!(
        at_kill < LICENSES * DEVICES,
        "killed mid-stream ({at_kill} answered)"
    );
    let service = ServiceProcess::spawn("activation", &infra, &db, &prefix, free_port()).await;
    *url.lock().expect("url") = service.url.clone();
    let mut answered = Vec::new();
    for t in tasks {
        answered.push(t.await.expect("task"));
    }
    let ok: Vec<&String> = answered
        .iter()
        .filter(|(s, _)| *s == 201 || *s == 200)
        .filter_map(|(_, id)| id.as_ref())
        .collect();
    let refused = answered.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(
        ok.len() as i64,
        LICENSES as i64 * SEATS,
        "answers: {answered:?}"
    );
    assert_eq!(refused, LICENSES * DEVICES - ok.len());
    let distinct: HashSet<&String> = ok.iter().copied().collect();
    assert_eq!(distinct.len(), ok.len(), "one seat per device");

    let pool = pool(&db).await;
    for (license_id, _) in &keys {
        let live = count(&pool, &format!(
            "SELECT count(*) FROM activations WHERE license_id = '{license_id}' AND status = 'live'")).await;
        assert_eq!(live, SEATS, "license {license_id}");
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'DeviceActivated'"
        )
        .await,
        LICENSES as i64 * SEATS,
        "no lost and no duplicated activation"
    );
    for id in &ok {
        let found = count(
            &pool,
            &format!(
                "SELECT count(*) FROM activations WHERE activation_id = '{id}' AND status = 'live'"
            ),
        )
        .await;
        assert_eq!(found, 1, "answered activation {id} is stored");
    }
    // Each activation event reaches Kafka once.
    let topic = format!("{prefix}.activation.events");
    let expected = LICENSES * SEATS as usize;
    let messages = read_topic(
        &infra.operator(),
        &topic,
        expected + 1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        events_of_type(&messages, "DeviceActivated"),
        expected,
        "one Kafka message per activation"
    );

    // A suspension while activation is down is applied once after restart.
    let mut service = service;
    service.kill();
    let (suspended, _) = &keys[0];
    let (s, _) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/licenses/{suspended}/suspend"),
        Some(&serde_json::json!({"reason": "unpaid"})),
    )
    .await;
    assert_eq!(s, 200);
    let restarted = ServiceProcess::spawn("activation", &infra, &db, &prefix, free_port()).await;
    let revoked_sql = format!(
        "SELECT count(*) FROM activations WHERE license_id = '{suspended}' AND status = 'revoked'"
    );
    let revoked = wait_for_count(&pool, &revoked_sql, SEATS, Duration::from_secs(20)).await;
    assert!(
        revoked,
        "the suspension revoked the seats after the restart"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(&pool, &format!(
            "SELECT count(*) FROM events WHERE event_type = 'ActivationsRevoked' AND aggregate_id = '{suspended}'")).await,
        1
    );
    // The private signing key never reaches a log (of any of the runs).
    drop(restarted);
    assert_signing_key_not_in(&service_logs(&prefix, "activation"), &prefix);
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_domain_binding_loses_no_binding_and_leaves_no_claim_behind() {
    const LICENSES: usize = 40;
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let iss = issuance.running.url();
    let admin = admin_client();
    let db = infra.fresh_db("domain_kill").await;
    let mut service =
        ServiceProcess::spawn("domain-binding", &infra, &db, &prefix, free_port()).await;
    let mut ids = Vec::new();
    for _ in 0..LICENSES {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{iss}/v1/licenses"),
            Some(
                &serde_json::json!({"product": "cloud-engine", "customer": "ACME",
                "kind": "formal", "features": ["site-engine"]}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        ids.push(b["id"].as_str().expect("id").to_string());
    }
    let dom = service.url.clone();
    let urls: Vec<String> = ids
        .iter()
        .map(|id| format!("{dom}/v1/licenses/{id}/domain"))
        .collect();
    let known = wait_all_found(&admin, &urls, Duration::from_secs(30)).await;
    assert!(known, "licenses reached domain binding");

    // Each license binds its own domain; licenses 2k and 2k+1 race for
    // one domain. The service is SIGKILLed mid-stream and restarted.
    let url = Arc::new(Mutex::new(service.url.clone()));
    let progress = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            tokio::spawn(until_answered(
                admin_client(),
                url.clone(),
                reqwest::Method::PUT,
                format!("/v1/licenses/{id}/domain"),
                serde_json::json!({ "domain": format!("www.kill{}-{prefix}.com", i / 2) }),
                deadline,
                progress.clone(),
            ))
        })
        .collect();
    let started = wait_until(Duration::from_secs(30), || async {
        progress.load(Ordering::SeqCst) >= 5
    })
    .await;
    assert!(started);
    service.kill();
    let at_kill = progress.load(Ordering::SeqCst);
    assert!(at_kill < LICENSES, "killed mid-stream ({at_kill} answered)");
    let restarted =
        ServiceProcess::spawn("domain-binding", &infra, &db, &prefix, free_port()).await;
    *url.lock().expect("url") = restarted.url.clone();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task").0);
    }
    let won = statuses.iter().filter(|s| **s == 200).count();
    let lost = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((won, lost), (LICENSES / 2, LICENSES / 2), "{statuses:?}");

    let pool = pool(&db).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'DomainBound'"
        )
        .await,
        (LICENSES / 2) as i64,
        "one binding event per won bind, none lost, none doubled"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT domain) FROM bindings WHERE domain IS NOT NULL"
        )
        .await,
        (LICENSES / 2) as i64
    );
    // Every claim belongs to the license holding the domain.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM domain_claims c LEFT JOIN bindings b \
             ON b.license_id = c.license_id AND b.domain = c.domain WHERE b.license_id IS NULL"
        )
        .await,
        0,
        "no claim without its binding"
    );
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_grant_sync_loses_no_lease_oversells_no_seat_and_revokes_once() {
    const LICENSES: usize = 6;
    const CLIENTS: usize = 8;
    const SEATS: i64 = 4;
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let iss = issuance.running.url();
    let admin = admin_client();
    let db = infra.fresh_db("grants_kill").await;
    let mut service = ServiceProcess::spawn("grant-sync", &infra, &db, &prefix, free_port()).await;
    let url = Arc::new(Mutex::new(service.url.clone()));
    let mut licenses = Vec::new();
    for _ in 0..LICENSES {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{iss}/v1/licenses"),
            Some(&serde_json::json!({
                "product": "integration-platform", "edition": "enterprise", "customer": "ACME",
                "kind": "formal", "features": ["data-access"], "seats": {"data-access": SEATS},
            })),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        licenses.push(b["id"].as_str().expect("id").to_string());
    }
    let gs = service.url.clone();
    let urls: Vec<String> = licenses
        .iter()
        .map(|id| format!("{gs}/v1/licenses/{id}/leases"))
        .collect();
    let known = wait_all_found(&admin, &urls, Duration::from_secs(30)).await;
    assert!(known, "licenses reached grant sync");
    let mut tokens = Vec::new();
    for id in &licenses {
        for c in 0..CLIENTS {
            let (s, b) = call(
                &admin,
                "POST",
                &format!("{gs}/v1/clients"),
                Some(&serde_json::json!({"name": format!("worker {c}"), "licenses": [id]})),
            )
            .await;
            assert_eq!(s, 201, "{b}");
            tokens.push((id.clone(), b["token"].as_str().expect("token").to_string()));
        }
    }

    // Every client of every license races for a seat while grant sync is
    // SIGKILLed and restarted on another port.
    let deadline = Instant::now() + Duration::from_secs(120);
    let progress = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (license, token) in &tokens {
        let (url, progress, token, license) = (
            url.clone(),
            progress.clone(),
            token.clone(),
            license.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (s, b) = until_answered(
                client_with(&token),
                url,
                reqwest::Method::POST,
                "/v1/leases".into(),
                serde_json::json!({"license_id": license, "feature": "data-access"}),
                deadline,
                progress,
            )
            .await;
            (s, b["lease_id"].as_str().map(str::to_string))
        }));
    }
    let started = wait_until(Duration::from_secs(30), || async {
        progress.load(Ordering::SeqCst) >= 8
    })
    .await;
    assert!(started, "checkouts are being answered");
    service.kill();
    let at_kill = progress.load(Ordering::SeqCst);
    assert!(
        at_kill < tokens.len(),
        "killed mid-stream ({at_kill} answered)"
    );
    let service = ServiceProcess::spawn("grant-sync", &infra, &db, &prefix, free_port()).await;
    *url.lock().expect("url") = service.url.clone();
    let mut answered = Vec::new();
    for t in tasks {
        answered.push(t.await.expect("task"));
    }
    let granted: Vec<&String> = answered
        .iter()
        .filter(|(s, _)| *s == 201)
        .filter_map(|(_, id)| id.as_ref())
        .collect();
    let refused = answered.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(
        granted.len() as i64,
        LICENSES as i64 * SEATS,
        "{answered:?}"
    );
    assert_eq!(refused, tokens.len() - granted.len(), "{answered:?}");

    let pool = pool(&db).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'LeaseGranted'"
        )
        .await,
        LICENSES as i64 * SEATS,
        "no lost and no duplicated lease"
    );
    for license in &licenses {
        let live = count(
            &pool,
            &format!(
                "SELECT count(*) FROM leases WHERE license_id = '{license}' AND status = 'live'"
            ),
        )
        .await;
        assert_eq!(live, SEATS, "license {license}");
    }
    // Every answered lease is stored and renews after the restart.
    let by_lease: HashMap<&String, &String> = answered
        .iter()
        .zip(&tokens)
        .filter_map(|((s, id), (_, token))| (*s == 201).then_some((id.as_ref()?, token)))
        .collect();
    for (lease, token) in &by_lease {
        let (s, b) = call(
            &client_with(token),
            "POST",
            &format!("{}/v1/leases/{lease}/heartbeat", service.url),
            None,
        )
        .await;
        assert_eq!(s, 200, "lease {lease}: {b}");
    }
    // Each lease event reaches Kafka once.
    let topic = format!("{prefix}.grants.events");
    let expected = LICENSES * SEATS as usize;
    // Every event of the topic: the registrations, the key, the leases.
    let all = tokens.len() + 1 + expected;
    let messages = read_topic(&infra.operator(), &topic, all, Duration::from_secs(20)).await;
    assert_eq!(
        events_of_type(&messages, "LeaseGranted"),
        expected,
        "one Kafka message per lease"
    );

    // A suspension while grant sync is down ends that license's leases
    // once, after the restart.
    let mut service = service;
    service.kill();
    let suspended = &licenses[0];
    let (s, _) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/licenses/{suspended}/suspend"),
        Some(&serde_json::json!({"reason": "unpaid"})),
    )
    .await;
    assert_eq!(s, 200);
    let restarted = ServiceProcess::spawn("grant-sync", &infra, &db, &prefix, free_port()).await;
    let revoked_sql = format!(
        "SELECT count(*) FROM leases WHERE license_id = '{suspended}' AND status = 'revoked'"
    );
    let revoked = wait_for_count(&pool, &revoked_sql, SEATS, Duration::from_secs(20)).await;
    assert!(revoked, "the suspension ended the leases after the restart");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(&pool, &format!(
            "SELECT count(*) FROM events WHERE event_type = 'LeasesRevoked' AND aggregate_id = '{suspended}'")).await,
        1
    );
    // Neither the signing key nor a client secret reaches the logs of the
    // three runs (the first registered the clients).
    drop(restarted);
    let log = service_logs(&prefix, "grant-sync");
    assert!(log.contains("started"), "the service logs were read");
    assert_signing_key_not_in(&log, &prefix);
    for (_, token) in &tokens {
        let secret = token.split('.').nth(1).expect("secret");
        assert!(!log.contains(secret), "a client secret is in the log");
    }
    issuance.running.stop().await;
}
