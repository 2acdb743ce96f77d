//! The projector end to end: every context's events over real Kafka into
//! the read models in real Postgres; as-of state and re-evaluated decisions
//! at instants of a scripted lifecycle; blue/green rebuilds (equal rows, a
//! restart mid-rebuild, a model added later); dispute bundles verified
//! offline by `licensectl`, tampered ones refused by name.

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use e2e::routes::Svc;
use e2e::*;
use serde_json::{json, Value};
use uuid::Uuid;

fn device(n: u32) -> Value {
    json!({"machine_id": format!("m-{n}"), "disk": format!("d-{n}"),
           "board": format!("b-{n}"), "mac": format!("aa:bb:{n}")})
}

/// Polls the live row until `cond` holds; the row.
async fn live_until(proj: &str, id: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let admin = admin_client();
    let url = format!("{proj}/v1/licenses/{id}");
    let (s, b) = eventually(
        Duration::from_secs(15),
        || call(&admin, "GET", &url, None),
        |(s, b)| *s == 200 && cond(b),
    )
    .await;
    assert!(s == 200 && cond(&b), "projector never showed {what}: {b}");
    b
}

async fn as_of(proj: &str, id: &str, at: DateTime<Utc>) -> Value {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (s, b) = call(
        &admin_client(),
        "GET",
        &format!(
            "{proj}/v1/licenses/{id}/state?as_of={}",
            at.replace('+', "%2B")
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn decide(proj: &str, id: &str, body: Value) -> Value {
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{proj}/v1/licenses/{id}/decisions"),
        Some(&body),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

/// The activation service's own answer, now.
async fn validate_now(act: &str, key: &str, fingerprint: &Value) -> String {
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{act}/v1/validate"),
        Some(&json!({"license_key": key, "fingerprint": fingerprint})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["code"].as_str().unwrap_or_default().to_string()
}

/// A moment strictly after everything recorded so far, and before anything
/// recorded next.
async fn instant() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn as_of_state_and_decisions_follow_a_scripted_lifecycle() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let clock = ManualClock::new();
    let issuance = start_issuance_on(&infra, &prefix, clock.clone()).await;
    let activation = start_activation(&infra, &prefix).await;
    let domain = start_domain_binding(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let (iss, act, dom, proj) = (
        issuance.url(),
        activation.url(),
        domain.url(),
        projector.url(),
    );
    let admin = admin_client();
    let (a, b) = (device(1), device(2));

    let t0 = instant().await;
    use issuance::domain::Clock;
    let expires = clock.now() + chrono::Duration::hours(1);
    let (s, lic) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/licenses"),
        Some(
            &json!({"product": "cloud-engine", "edition": "mainland", "customer": "Lifecycle Ltd",
                     "kind": "formal", "features": ["site-engine"],
                     "expires_at": expires.to_rfc3339()}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{lic}");
    let id = lic["id"].as_str().expect("id").to_string();
    let key = lic["key"].as_str().expect("key").to_string();
    live_until(&proj, &id, "the issued license", |v| {
        v["status"] == "active"
    })
    .await;
    let ready = wait_until(Duration::from_secs(15), || async {
        validate_now(&act, &key, &a).await == "NO_ACTIVATION"
    })
    .await;
    assert!(ready, "the license reached activation");
    let t1 = instant().await;
    let live_t1 = validate_now(&act, &key, &a).await;

    let (s, body) = call(
        &admin,
        "POST",
        &format!("{act}/v1/activations"),
        Some(&json!({"license_key": key, "fingerprint": a})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let activation_id = body["activation_id"].as_str().expect("id").to_string();
    live_until(&proj, &id, "the activation", |v| v["live_activations"] == 1).await;
    let t2 = instant().await;
    let live_t2 = (
        validate_now(&act, &key, &a).await,
        validate_now(&act, &key, &b).await,
    );

    let bound = wait_until(Duration::from_secs(15), || async {
        call(
            &admin,
            "PUT",
            &format!("{dom}/v1/licenses/{id}/domain"),
            Some(&json!({"domain": "www.lifecycle-one.com"})),
        )
        .await
        .0 == 200
    })
    .await;
    assert!(bound, "the domain was bound");
    live_until(&proj, &id, "the binding", |v| {
        v["domain"]["domain"] == "lifecycle-one.com"
    })
    .await;
    let t3 = instant().await;

    let (s, body) = call(
        &admin,
        "POST",
        &format!("{dom}/v1/licenses/{id}/domain/change"),
        Some(&json!({"domain": "lifecycle-two.com", "accept_fee": false})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    live_until(&proj, &id, "the domain change", |v| {
        v["domain"]["domain"] == "lifecycle-two.com"
    })
    .await;
    let t4 = instant().await;

    clock.advance(chrono::Duration::minutes(61));
    live_until(&proj, &id, "the expiry", |v| v["status"] == "expired").await;
    let expired = wait_until(Duration::from_secs(15), || async {
        validate_now(&act, &key, &a).await == "EXPIRED"
    })
    .await;
    assert!(expired, "activation saw the expiry");
    let t5 = instant().await;

    let renewed_to = clock.now() + chrono::Duration::days(365);
    let (s, body) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/licenses/{id}/renew"),
        Some(&json!({"expires_at": renewed_to.to_rfc3339(), "order_ref": "PO-LIFE-2"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let live_row = live_until(&proj, &id, "the renewal", |v| v["status"] == "active").await;
    let renewed = wait_until(Duration::from_secs(15), || async {
        validate_now(&act, &key, &a).await == "VALID"
    })
    .await;
    assert!(renewed, "activation saw the renewal");
    let t6 = instant().await;
    // The audit trail (which as-of folds) has its own consumer: let it
    // catch up with the live row before reading the past from it.
    let live_events = live_until(&proj, &id, "the live row", |_| true).await["events"].clone();
    let folded_now = eventually(
        Duration::from_secs(5),
        || async { as_of(&proj, &id, Utc::now()).await["events_folded"].clone() },
        |f| *f == live_events,
    )
    .await;
    assert_eq!(folded_now, live_events);

    // Hand-computed expectations at each instant.
    let s0 = as_of(&proj, &id, t0).await;
    assert_eq!(
        (s0["exists"].clone(), s0["state"].clone()),
        (json!(false), Value::Null)
    );
    let s1 = as_of(&proj, &id, t1).await;
    assert_eq!(s1["state"]["status"], "active");
    assert_eq!(s1["state"]["live_activations"], 0);
    assert_eq!(s1["state"]["domain"], Value::Null);
    assert_eq!(s1["state"]["feature_grants"][0]["code"], "site-engine");
    let s2 = as_of(&proj, &id, t2).await;
    assert_eq!(s2["state"]["live_activations"], 1);
    assert_eq!(s2["state"]["activations"][&activation_id]["status"], "live");
    assert_eq!(s2["state"]["domain"], Value::Null);
    let s3 = as_of(&proj, &id, t3).await;
    assert_eq!(s3["state"]["domain"]["domain"], "lifecycle-one.com");
    assert_eq!(s3["state"]["domain"]["changes_used"], 0);
    let s4 = as_of(&proj, &id, t4).await;
    assert_eq!(s4["state"]["domain"]["domain"], "lifecycle-two.com");
    assert_eq!(s4["state"]["domain"]["changes_used"], 1);
    assert_eq!(s4["state"]["status"], "active");
    let s5 = as_of(&proj, &id, t5).await;
    assert_eq!(s5["state"]["status"], "expired");
    assert_eq!(s5["effective_status"], "expired");
    assert_eq!(
        s5["state"]["expires_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().ok()),
        Some(Some(expires))
    );
    let s6 = as_of(&proj, &id, t6).await;
    assert_eq!(s6["state"]["status"], "active");
    assert_eq!(
        s6["state"]["expires_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().ok()),
        Some(Some(renewed_to))
    );
    // Events only grow along the timeline.
    let folded: Vec<u64> = [&s1, &s2, &s3, &s4, &s5, &s6]
        .iter()
        .map(|s| s["events_folded"].as_u64().unwrap_or(0))
        .collect();
    assert!(folded.windows(2).all(|w| w[0] < w[1]), "{folded:?}");
    // as_of = now is the live row, field for field.
    // (Each read model has its own consumer, so wait for both to settle.)
    let live_now = live_until(&proj, &id, "the live row", |_| true).await;
    let now = eventually(
        Duration::from_secs(5),
        || as_of(&proj, &id, Utc::now()),
        |n| n["state"] == live_now,
    )
    .await;
    assert_eq!(now["state"], live_now);
    assert_eq!(live_now["status"], live_row["status"]);

    // Re-evaluated validations answer what the activation service answered.
    let at =
        |t: DateTime<Utc>, fp: &Value| json!({"kind": "validation", "at": t, "fingerprint": fp});
    assert_eq!(
        decide(&proj, &id, at(t0, &a)).await["decision"]["code"],
        "NOT_FOUND"
    );
    assert_eq!(
        decide(&proj, &id, at(t1, &a)).await["decision"]["code"],
        live_t1.as_str()
    );
    assert_eq!(
        decide(&proj, &id, at(t2, &a)).await["decision"]["code"],
        live_t2.0.as_str()
    );
    assert_eq!(
        decide(&proj, &id, at(t2, &b)).await["decision"]["code"],
        live_t2.1.as_str()
    );
    assert_eq!(
        live_t2,
        ("VALID".to_string(), "TOO_MANY_ACTIVATIONS".to_string())
    );
    let d5 = decide(&proj, &id, at(t5, &a)).await;
    assert_eq!(
        (
            d5["decision"]["code"].as_str(),
            d5["decision"]["allowed"].as_bool()
        ),
        (Some("EXPIRED"), Some(false))
    );
    let d6 = decide(&proj, &id, at(t6, &a)).await;
    assert_eq!(d6["decision"]["code"], "VALID");
    assert_eq!(d6["decision"]["activation_id"], activation_id.as_str());
    let missing = decide(
        &proj,
        &id,
        json!({"kind": "validation", "at": t6, "features": ["cdn-accel"]}),
    )
    .await;
    assert_eq!(missing["decision"]["code"], "FEATURES_MISSING");
    // And activations: another device was refused while A held the seat, and
    // nothing activates on an expired license.
    let act_at =
        |t: DateTime<Utc>, fp: &Value| json!({"kind": "activation", "at": t, "fingerprint": fp});
    assert_eq!(
        decide(&proj, &id, act_at(t1, &b)).await["decision"]["code"],
        "ACTIVATED"
    );
    assert_eq!(
        decide(&proj, &id, act_at(t2, &b)).await["decision"]["code"],
        "TOO_MANY_ACTIVATIONS"
    );
    assert_eq!(
        decide(&proj, &id, act_at(t2, &a)).await["decision"]["code"],
        "ALREADY_ACTIVATED"
    );
    assert_eq!(
        decide(&proj, &id, act_at(t5, &b)).await["decision"]["code"],
        "LICENSE_EXPIRED"
    );

    // The list filters and pages.
    let list = |q: String| {
        let admin = admin.clone();
        let proj = proj.clone();
        async move { call(&admin, "GET", &format!("{proj}/v1/licenses?{q}"), None).await }
    };
    let (s, page) = list("product=cloud-engine&status=active".into()).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["items"][0]["id"], id.as_str());
    let (_, none) = list("status=expired".into()).await;
    assert_eq!(none["items"], json!([]));
    let soon = (renewed_to + chrono::Duration::days(1))
        .to_rfc3339()
        .replace('+', "%2B");
    let (_, expiring) = list(format!("expiring_before={soon}&customer=Lifecycle%20Ltd")).await;
    assert_eq!(expiring["items"].as_array().map(Vec::len), Some(1));
    let early = renewed_to.to_rfc3339().replace('+', "%2B");
    let (_, not_yet) = list(format!("expiring_before={early}")).await;
    assert_eq!(not_yet["items"], json!([]));

    // Bad input: named, 4xx, nothing changed.
    for (q, code, field) in [
        ("status=bogus", "INVALID_STATUS", "status"),
        ("limit=0", "INVALID_LIMIT", "limit"),
    ] {
        let (s, b) = list(q.into()).await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (422, Some(code), Some(field)),
            "{q}: {b}"
        );
    }
    let (s, b) = list("colour=red".into()).await;
    assert!((400..500).contains(&s), "{b}");
    let (s, b) = call(
        &admin,
        "GET",
        &format!("{proj}/v1/licenses/{id}/state?as_of=yesterday"),
        None,
    )
    .await;
    assert!((400..500).contains(&s) && b["code"].is_string(), "{s} {b}");
    let (s, b) = call(
        &admin,
        "GET",
        &format!("{proj}/v1/licenses/{}/state", Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("LICENSE_NOT_FOUND")));
    for (body, code, field) in [
        (
            json!({"kind": "activation", "at": t2}),
            "FINGERPRINT_REQUIRED",
            "fingerprint",
        ),
        (
            json!({"kind": "validation", "at": t2, "fingerprint": {}}),
            "INVALID_FINGERPRINT",
            "fingerprint",
        ),
        (
            json!({"kind": "validation", "at": t2, "colour": 1}),
            "UNKNOWN_FIELD",
            "colour",
        ),
        (json!({"kind": "guess", "at": t2}), "INVALID_FIELD", "kind"),
    ] {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{proj}/v1/licenses/{id}/decisions"),
            Some(&body),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (422, Some(code), Some(field)),
            "{body}: {b}"
        );
    }

    // The live row, its activations read from their own rows, is the
    // fold of the whole history; a rebuild of the model makes the same rows.
    let live = live_until(&proj, &id, "the live row", |_| true).await;
    assert_eq!(live, as_of(&proj, &id, Utc::now()).await["state"]);
    assert!(
        live["activations"]
            .as_object()
            .is_some_and(|a| !a.is_empty()),
        "{live}"
    );
    let pool = pool(&projector.db).await;
    let before = rows(&pool).await;
    let (s, started) = call(
        &admin,
        "POST",
        &format!("{proj}/v1/admin/rebuild"),
        Some(&json!({"models": ["license_state"]})),
    )
    .await;
    assert_eq!(s, 202, "{started}");
    let rid = started["rebuild_id"].clone();
    let state_model_done = |status: &Value| {
        status["models"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["name"] == "license_state"
                    && m["rebuild"]["id"] == rid
                    && m["rebuild"]["status"] == "done"
            })
        })
    };
    let status = eventually(
        Duration::from_secs(60),
        || projections(&proj),
        state_model_done,
    )
    .await;
    assert!(state_model_done(&status), "{status}");
    assert_eq!(
        rows(&pool).await.0,
        before.0,
        "license_state rebuilt row for row"
    );
    pool.close().await;

    projector.running.stop().await;
    domain.running.stop().await;
    activation.running.stop().await;
    issuance.running.stop().await;
}

/// Every row of both read models (a license's activation rows with its
/// state), in a stable order.
async fn rows(pool: &sqlx::PgPool) -> (Vec<Value>, Vec<Value>) {
    let states: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(t) || jsonb_build_object('activation_rows', (SELECT coalesce(\
           jsonb_agg(to_jsonb(a) ORDER BY a.activation_id), '[]') FROM license_activations a \
           WHERE a.license_id = t.license_id)) FROM license_state t ORDER BY license_id",
    )
    .fetch_all(pool)
    .await
    .expect("states");
    let audit: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(t) || jsonb_build_object('payload', payload::text, 'metadata', metadata::text) \
         FROM audit_trail t ORDER BY event_id",
    )
    .fetch_all(pool)
    .await
    .expect("audit");
    (states, audit)
}

/// Issues `n` licenses with a suspension each (two issuance events apiece).
async fn issue_many(iss: &str, n: usize) -> Vec<String> {
    let admin = admin_client();
    let mut ids = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (admin, iss) = (admin.clone(), iss.to_string());
        tasks.spawn(async move {
            let (s, b) = call(
                &admin,
                "POST",
                &format!("{iss}/v1/licenses"),
                Some(
                    &json!({"product": "integration-platform", "edition": "enterprise",
                             "customer": format!("Customer {}", i % 7), "kind": "formal",
                             "features": ["data-access"]}),
                ),
            )
            .await;
            assert_eq!(s, 201, "{b}");
            let id = b["id"].as_str().expect("id").to_string();
            let (s, b) = call(
                &admin,
                "POST",
                &format!("{iss}/v1/licenses/{id}/suspend"),
                Some(&json!({"reason": "review"})),
            )
            .await;
            assert_eq!(s, 200, "{b}");
            id
        });
        if tasks.len() >= 16 {
            if let Some(r) = tasks.join_next().await {
                ids.push(r.expect("issued"));
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        ids.push(r.expect("issued"));
    }
    ids
}

async fn projections(proj: &str) -> Value {
    let (s, b) = call(
        &admin_client(),
        "GET",
        &format!("{proj}/v1/admin/projections"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Waits until every model's latest rebuild `id` is done.
async fn rebuild_done(proj: &str, id: &str, timeout: Duration) -> Value {
    let done = |status: &Value| {
        status["models"].as_array().is_some_and(|ms| {
            ms.iter()
                .all(|m| m["rebuild"]["id"] == id && m["rebuild"]["status"] == "done")
        })
    };
    let status = eventually(timeout, || projections(proj), done).await;
    assert!(done(&status), "rebuild {id} did not finish: {status}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_swaps_in_tables_identical_row_for_row_while_the_live_ones_serve() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let (iss, proj) = (issuance.url(), projector.url());
    let ids = issue_many(&iss, 200).await;
    let pool = pool(&projector.db).await;
    let caught_up = wait_for_count(
        &pool,
        "SELECT count(*) FROM license_state WHERE status = 'suspended'",
        200,
        Duration::from_secs(30),
    )
    .await;
    assert!(caught_up, "live license_state caught up");
    let audited = wait_for_count(
        &pool,
        "SELECT count(*) FROM audit_trail WHERE license_id IS NOT NULL",
        400,
        Duration::from_secs(30),
    )
    .await;
    assert!(audited, "live audit trail caught up");
    let before = rows(&pool).await;
    let indexes = || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, String)>(
                "SELECT indexname::text, regexp_replace(indexdef, ' ON \\S+ ', ' ON t ') FROM pg_indexes \
                 WHERE tablename IN ('audit_trail', 'license_state') ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .expect("indexes")
        }
    };
    let indexes_before = indexes().await;
    assert!(indexes_before.len() >= 10, "{indexes_before:?}");
    let licensed = |rows: &[Value]| rows.iter().filter(|r| !r["license_id"].is_null()).count();
    assert_eq!(licensed(&before.1), 400);

    // The CLI starts the rebuild and follows it to the end.
    let out = Command::new(bin_path("licensectl"))
        .args([
            "--json",
            "rebuild",
            "--url",
            &proj,
            "--api-key",
            ADMIN_TOKEN,
            "--poll-ms",
            "100",
            "--timeout-secs",
            "120",
        ])
        .output()
        .expect("licensectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "licensectl rebuild: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout).expect("summary JSON");
    assert_eq!(summary["status"], "done", "{summary}");
    let status = projections(&proj).await;
    for m in status["models"].as_array().expect("models") {
        assert_eq!(m["rebuild"]["status"], "done", "{m}");
        assert!(m["rebuild"]["events"].as_i64().unwrap_or(0) >= 400, "{m}");
        assert_eq!(m["lag"], 0, "{m}");
    }
    let after = rows(&pool).await;
    assert_eq!(after.0, before.0, "license_state equal row for row");
    assert_eq!(after.1, before.1, "audit_trail equal row for row");
    assert_eq!(
        indexes().await,
        indexes_before,
        "the same indexes under the same names"
    );
    let next: i64 = count(
        &pool,
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_next'",
    )
    .await;
    assert_eq!(next, 0, "no next table left behind");

    // While a second rebuild runs, the live tables keep serving and the
    // live consumer keeps projecting; a second start is refused.
    let rid = start_rebuild(&proj).await;
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{proj}/v1/admin/rebuild"),
        Some(&json!({"models": ["audit_trail"]})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("REBUILD_IN_PROGRESS")));
    let (s, b) = call(
        &admin_client(),
        "GET",
        &format!("{proj}/v1/licenses/{}", ids[0]),
        None,
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("suspended")));
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{iss}/v1/licenses/{}/reinstate", ids[1]),
        Some(&json!({})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    rebuild_done(&proj, &rid, Duration::from_secs(60)).await;
    live_until(&proj, &ids[1], "the reinstatement", |v| {
        v["status"] == "active"
    })
    .await;
    let grown = before.1.len() as i64 + 1;
    let audited = wait_for_count(
        &pool,
        "SELECT count(*) FROM audit_trail",
        grown,
        Duration::from_secs(30),
    )
    .await;
    assert!(audited, "the reinstatement reached the audit trail");
    let rebuilt = rows(&pool).await;
    assert_eq!(rebuilt.1.len(), before.1.len() + 1);

    // One model named twice is rebuilt once.
    let (s, one) = call(
        &admin_client(),
        "POST",
        &format!("{proj}/v1/admin/rebuild"),
        Some(&json!({"models": ["audit_trail", "audit_trail"]})),
    )
    .await;
    assert_eq!(
        (s, one["models"].clone()),
        (202, json!(["audit_trail"])),
        "{one}"
    );
    let audit_done = wait_until(Duration::from_secs(60), || async {
        projections(&proj).await["models"]
            .as_array()
            .is_some_and(|ms| {
                ms.iter().any(|m| {
                    m["name"] == "audit_trail"
                        && m["rebuild"]["id"] == one["rebuild_id"]
                        && m["rebuild"]["status"] == "done"
                })
            })
    })
    .await;
    assert!(audit_done, "the audit trail rebuilt alone");
    let rebuilt_once = count(
        &pool,
        "SELECT count(*) FROM projection_rebuilds WHERE status = 'running'",
    )
    .await;
    assert_eq!(rebuilt_once, 0);
    assert_eq!(
        rows(&pool).await.1,
        rebuilt.1,
        "audit_trail equal row for row"
    );

    // A fresh projector of its own on the same topics agrees, row for row.
    let mut config = projector_config(&infra, &infra.fresh_db("projector_fresh").await, &prefix);
    let group = format!("{prefix}-fresh");
    infra.provision(&prefix, &group).await;
    config.common.consumer_group_prefix = Some(group);
    let fresh_db = config.common.database_url.clone();
    let fresh = start_projector_with(config, fresh_db.clone()).await;
    let fresh_pool = e2e::pool(&fresh_db).await;
    let total = rebuilt.1.len() as i64;
    let done = wait_for_count(
        &fresh_pool,
        "SELECT count(*) FROM audit_trail",
        total,
        Duration::from_secs(30),
    )
    .await;
    assert!(done, "fresh projector caught up");
    // Each model has its own consumer: wait for the other one too.
    let live_rows = rows(&pool).await;
    let fresh_rows = eventually(
        Duration::from_secs(10),
        || rows(&fresh_pool),
        |r| *r == live_rows,
    )
    .await;
    assert_eq!(fresh_rows, live_rows);

    // Bad input changes nothing.
    for (body, code) in [
        (json!({"models": ["no-such-model"]}), "UNKNOWN_MODEL"),
        (json!({"models": "audit_trail"}), "INVALID_FIELD"),
        (json!({"colour": 1}), "UNKNOWN_FIELD"),
    ] {
        let (s, b) = call(
            &admin_client(),
            "POST",
            &format!("{proj}/v1/admin/rebuild"),
            Some(&body),
        )
        .await;
        assert_eq!((s, b["code"].as_str()), (422, Some(code)), "{body}: {b}");
    }
    fresh.running.stop().await;
    projector.running.stop().await;
    issuance.running.stop().await;
}

/// Starts a rebuild of every model; its id.
async fn start_rebuild(proj: &str) -> String {
    let (s, started) = call(
        &admin_client(),
        "POST",
        &format!("{proj}/v1/admin/rebuild"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(s, 202, "{started}");
    started["rebuild_id"].as_str().expect("id").to_string()
}

/// Rebuilds every model and waits (up to a minute) for both to be done.
async fn rebuild_all(proj: &str) {
    let rid = start_rebuild(proj).await;
    rebuild_done(proj, &rid, Duration::from_secs(60)).await;
}

/// Issues a license every `every` until told to stop; answers how many.
fn steady_writer(
    iss: String,
    every: Duration,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<usize>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let admin = admin_client();
        let mut n = 0;
        while !*stopped.borrow() {
            let (s, b) = call(
                &admin,
                "POST",
                &format!("{iss}/v1/licenses"),
                Some(
                    &json!({"product": "integration-platform", "customer": "Steady",
                             "kind": "formal", "features": ["data-access"]}),
                ),
            )
            .await;
            assert_eq!(s, 201, "{b}");
            n += 1;
            tokio::time::sleep(every).await;
        }
        n
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_swaps_in_under_steady_traffic_and_equals_a_quiet_one() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let (iss, proj) = (issuance.url(), projector.url());
    issue_many(&iss, 100).await;
    let pool = pool(&projector.db).await;
    assert!(
        wait_for_count(
            &pool,
            "SELECT count(*) FROM license_state WHERE status = 'suspended'",
            100,
            Duration::from_secs(30),
        )
        .await,
        "live license_state caught up"
    );
    // A new license every 20 ms throughout: the live consumer never
    // stands still, so the swap must hold it to catch up.
    let (stop, writer) = steady_writer(iss.clone(), Duration::from_millis(20));
    rebuild_all(&proj).await;
    let _ = stop.send(true);
    let written = writer.await.expect("writer") as i64;
    assert!(
        written > 20,
        "traffic ran throughout the rebuild ({written})"
    );
    assert!(
        wait_for_count(
            &pool,
            "SELECT count(*) FROM license_state WHERE status = 'active'",
            written,
            Duration::from_secs(30),
        )
        .await,
        "every license issued during the rebuild projected after the swap"
    );
    let live = rows(&pool).await;
    assert_eq!(
        live.1.iter().filter(|r| !r["license_id"].is_null()).count() as i64,
        200 + written,
        "each event in the trail once"
    );

    // A rebuild without traffic reproduces the tables the first one left.
    rebuild_all(&proj).await;
    let quiet = rows(&pool).await;
    assert_eq!(quiet.0, live.0, "license_state equal row for row");
    assert_eq!(quiet.1, live.1, "audit_trail equal row for row");
    projector.running.stop().await;
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_interrupted_by_sigkill_resumes_from_its_checkpoint_and_ends_identical() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let ids = issue_many(&issuance.url(), 400).await;
    assert_eq!(ids.len(), 400);
    // A third event of each license, recorded well after its first two:
    // the rebuild is killed among the first events, so after the restart
    // these continue aggregates whose earlier events it applied before the
    // kill — only the sequences it stored let them through.
    let admin = admin_client();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let (admin, iss) = (admin.clone(), issuance.url());
        tasks.spawn(async move {
            let (s, b) = call(
                &admin,
                "POST",
                &format!("{iss}/v1/licenses/{id}/reinstate"),
                Some(&json!({})),
            )
            .await;
            assert_eq!(s, 200, "{b}");
        });
        if tasks.len() >= 16 {
            tasks
                .join_next()
                .await
                .expect("a task")
                .expect("reinstated");
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("reinstated");
    }
    let db = infra.fresh_db("projector_resume").await;
    let port = free_port();
    let spawn = |batch: &'static str| {
        let (db, prefix) = (db.clone(), prefix.clone());
        async move {
            ServiceProcess::spawn_with(
                "projector",
                &Infra::get(),
                &db,
                &prefix,
                port,
                &[
                    ("LICENSING_REBUILD_BATCH", batch),
                    ("LICENSING_REBUILD_WINDOW", batch),
                ],
            )
            .await
        }
    };
    // One message per chunk and per window (a checkpoint), so the rebuild
    // takes long enough to be interrupted in the middle.
    let mut projector = spawn("1").await;
    let proj = projector.url.clone();
    let pool = pool(&db).await;
    let caught_up = wait_for_count(
        &pool,
        "SELECT count(*) FROM audit_trail WHERE license_id IS NOT NULL",
        1200,
        Duration::from_secs(60),
    )
    .await;
    assert!(caught_up, "live audit trail caught up");
    // The other model has its own consumer: wait for it too.
    let states = wait_for_count(
        &pool,
        "SELECT count(*) FROM license_state WHERE status = 'active'",
        400,
        Duration::from_secs(60),
    )
    .await;
    assert!(states, "live license_state caught up");
    let before = rows(&pool).await;

    let rid = start_rebuild(&proj).await;
    let mid = wait_until(Duration::from_secs(60), || async {
        count(&pool, "SELECT count(*) FROM audit_trail_next").await > 50
    })
    .await;
    assert!(mid, "the rebuild made progress");
    projector.kill();
    let at_kill = count(&pool, "SELECT count(*) FROM audit_trail_next").await;
    assert!(
        at_kill < 400,
        "killed among the first events ({at_kill} of 1200 rebuilt)"
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM projection_rebuilds WHERE model = 'audit_trail'")
            .fetch_one(&pool)
            .await
            .expect("status");
    assert_eq!(status, "running");
    let checkpoint: i64 = count(&pool, &format!(
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer LIKE '%rebuild.audit_trail.{}'",
        rid.replace('-', "")
    )).await;
    assert!(checkpoint > 0, "a checkpoint was committed before the kill");
    drop(projector);

    let projector = spawn("500").await;
    rebuild_done(&projector.url, &rid, Duration::from_secs(90)).await;
    let after = rows(&pool).await;
    assert_eq!(after.0, before.0, "license_state equal row for row");
    assert_eq!(after.1, before.1, "audit_trail equal row for row");
    drop(projector);
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_model_added_later_is_backfilled_without_touching_the_others() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    issue_many(&issuance.url(), 50).await;
    let db = infra.fresh_db("projector_added").await;
    let mut config = projector_config(&infra, &db, &prefix);
    config.models = Some(vec!["audit_trail".into()]);
    let only_audit = start_projector_with(config.clone(), db.clone()).await;
    let pool = pool(&db).await;
    let audited = wait_for_count(
        &pool,
        "SELECT count(*) FROM audit_trail WHERE license_id IS NOT NULL",
        100,
        Duration::from_secs(30),
    )
    .await;
    assert!(audited, "audit trail projected");
    // Every message consumed (products too), so the restart has nothing
    // left to give this model.
    let url = only_audit.url();
    let idle = wait_until(Duration::from_secs(30), || async {
        projections(&url).await["models"][0]["lag"] == 0
    })
    .await;
    assert!(idle, "the audit trail's consumer caught up");
    assert_eq!(count(&pool, "SELECT count(*) FROM license_state").await, 0);
    only_audit.running.stop().await;
    let offsets = |model: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, i32, i64, DateTime<Utc>)>(&format!(
                "SELECT topic, partition, next_offset, updated_at FROM consumer_offsets \
                 WHERE consumer LIKE '%.projector.{model}' ORDER BY 1, 2"
            ))
            .fetch_all(&pool)
            .await
            .expect("offsets")
        }
    };
    let audit_offsets = offsets("audit_trail").await;
    let audit_rows = rows(&pool).await.1;

    config.models = None;
    let all = start_projector_with(config, db.clone()).await;
    let backfilled = wait_for_count(
        &pool,
        "SELECT count(*) FROM license_state WHERE status = 'suspended'",
        50,
        Duration::from_secs(30),
    )
    .await;
    assert!(backfilled, "license_state backfilled over the full history");
    assert_eq!(
        offsets("audit_trail").await,
        audit_offsets,
        "audit_trail's consumer untouched"
    );
    assert_eq!(
        rows(&pool).await.1,
        audit_rows,
        "audit_trail's rows untouched"
    );
    all.running.stop().await;
    issuance.running.stop().await;
}

fn write(path: &std::path::Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("json")).expect("write");
}

/// `licensectl verify-bundle` with the projector's `jwks` and each
/// `(context, jwks)` of `services`: success and the stderr text.
fn verify_bundle(
    bundle: &Value,
    jwks: &Value,
    services: &[(&str, &Value)],
    dir: &std::path::Path,
) -> (bool, String) {
    let (b, k) = (dir.join("bundle.json"), dir.join("jwks.json"));
    write(&b, bundle);
    write(&k, jwks);
    let mut cmd = Command::new(bin_path("licensectl"));
    cmd.arg("--json")
        .arg("verify-bundle")
        .arg("--bundle")
        .arg(&b)
        .arg("--jwks")
        .arg(&k);
    if !services.is_empty() {
        let pairs: Vec<String> = services
            .iter()
            .map(|(context, keys)| {
                let f = dir.join(format!("{context}-jwks.json"));
                write(&f, keys);
                format!("{context}={}", f.display())
            })
            .collect();
        cmd.arg("--service-jwks").arg(pairs.join(","));
    }
    let out = cmd.output().expect("licensectl runs");
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "exit {code:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dispute_bundle_verifies_offline_and_every_tampering_is_named() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let activation = start_activation(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let (iss, act, proj) = (issuance.url(), activation.url(), projector.url());
    let admin = admin_client();
    let (s, lic) = call(&admin, "POST", &format!("{iss}/v1/licenses"),
        Some(&json!({"product": "integration-platform", "edition": "enterprise",
                     "customer": "Dispute GmbH \u{e9}", "kind": "formal", "features": ["data-access"],
                     "expires_at": (Utc::now() + chrono::Duration::days(30)).to_rfc3339()}))).await;
    assert_eq!(s, 201, "{lic}");
    let id = lic["id"].as_str().expect("id").to_string();
    let key = lic["key"].as_str().expect("key").to_string();
    for (n, days) in [(1, 365), (2, 730)] {
        let body = json!({"expires_at": (Utc::now() + chrono::Duration::days(days)).to_rfc3339(),
                          "order_ref": format!("PO-DISPUTE-{n}")});
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{iss}/v1/licenses/{id}/renew"),
            Some(&body),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    let activated = wait_until(Duration::from_secs(15), || async {
        call(
            &admin,
            "POST",
            &format!("{act}/v1/activations"),
            Some(&json!({"license_key": key, "fingerprint": device(7)})),
        )
        .await
        .0 == 201
    })
    .await;
    assert!(activated, "activated");
    live_until(&proj, &id, "the activation", |v| {
        v["live_activations"] == 1 && v["status"] == "active"
    })
    .await;

    // The history: every event with its links, every chain intact. (The
    // audit trail has its own consumer: wait for it too.)
    let url = format!("{proj}/v1/licenses/{id}/history");
    let (s, history) = eventually(
        Duration::from_secs(10),
        || call(&admin, "GET", &url, None),
        |(_, h)| h["chains"].as_array().map(Vec::len) == Some(2),
    )
    .await;
    assert_eq!(s, 200, "{history}");
    let events = history["events"].as_array().expect("events");
    assert!(events.len() >= 4, "{history}");
    assert!(events.iter().all(|e| e["link_ok"] == true), "{history}");
    let chains = history["chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 2, "License and LicenseActivations: {history}");
    assert!(
        chains.iter().all(|c| c["problems"] == json!([])),
        "{history}"
    );
    let times: Vec<&str> = events
        .iter()
        .filter_map(|e| e["recorded_at"].as_str())
        .collect();
    let mut sorted: Vec<DateTime<Utc>> = times.iter().filter_map(|t| t.parse().ok()).collect();
    sorted.sort();
    assert_eq!(
        sorted,
        times
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect::<Vec<DateTime<Utc>>>()
    );

    // Exported once both services' checkpoints cover the license's events
    // (they sign every second here), so that every event is proven.
    let bundle_url = format!("{proj}/v1/licenses/{id}/dispute-bundle");
    let covered = wait_until(Duration::from_secs(30), || async {
        let (s, b) = call(&admin, "GET", &bundle_url, None).await;
        s == 200
            && b["chains"].as_array().is_some_and(|cs| {
                cs.iter().all(|c| {
                    c["proofs"].as_array().map(Vec::len) == c["events"].as_array().map(Vec::len)
                })
            })
    })
    .await;
    assert!(
        covered,
        "the bundle proves every event under its service's checkpoint"
    );
    let (s, bundle) = call(&admin, "GET", &bundle_url, None).await;
    assert_eq!(s, 200, "{bundle}");
    let exported: usize = bundle["chains"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["events"].as_array())
                .map(Vec::len)
                .sum()
        })
        .unwrap_or_default();
    let (s, jwks) = call(
        &reqwest::Client::new(),
        "GET",
        &format!("{proj}/.well-known/jwks.json"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{jwks}");
    // The checkpoint is a JWS any JOSE library verifies.
    let claims = python_verify(&jwks, false, bundle["checkpoint"].as_str().expect("jws"))
        .expect("jwcrypto verifies the checkpoint");
    assert_eq!(claims["license_id"], id.as_str());
    assert_eq!(claims["chains"].as_array().map(Vec::len), Some(2));

    let dir = std::env::temp_dir().join(format!("{prefix}-bundle"));
    std::fs::create_dir_all(&dir).expect("dir");
    // The services' own checkpoints verify under their keys, each given
    // for its own context.
    let mut service_keys = Vec::new();
    for service in [&iss, &act] {
        let (_, k) = call(
            &reqwest::Client::new(),
            "GET",
            &format!("{service}/.well-known/jwks.json"),
            None,
        )
        .await;
        service_keys.push(k);
    }
    let services = [
        ("issuance", &service_keys[0]),
        ("activation", &service_keys[1]),
    ];
    let (ok, msg) = verify_bundle(&bundle, &jwks, &services, &dir);
    assert!(ok, "the untouched bundle verifies: {msg}");
    assert!(
        msg.contains(&format!("{exported} events ({exported} proven")),
        "every event proven: {msg}"
    );
    // The projector's key does not vouch for a service's history, nor one
    // service's key for another's.
    let mut merged = jwks.clone();
    for k in &service_keys {
        if let (Some(into), Some(from)) = (merged["keys"].as_array_mut(), k["keys"].as_array()) {
            into.extend(from.iter().cloned());
        }
    }
    let (ok, msg) = verify_bundle(&bundle, &merged, &[], &dir);
    assert!(
        !ok && msg.contains("issuance: service checkpoint does not verify"),
        "service checkpoints under the exporter's keys only: {msg}"
    );
    let swapped = [
        ("issuance", &service_keys[1]),
        ("activation", &service_keys[0]),
    ];
    let (ok, msg) = verify_bundle(&bundle, &jwks, &swapped, &dir);
    assert!(!ok, "service keys given for the wrong contexts: {msg}");

    let license_chain = bundle["chains"]
        .as_array()
        .and_then(|cs| cs.iter().position(|c| c["aggregate_type"] == "License"))
        .expect("license chain");
    let tampered = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut b = bundle.clone();
        if let Some(events) = b["chains"][license_chain]["events"].as_array_mut() {
            f(events);
        }
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "edited",
            tampered(&|es| {
                es[1]["payload"] = json!(es[1]["payload"]
                    .as_str()
                    .unwrap_or_default()
                    .replace("PO-DISPUTE-1", "PO-FORGED-1"));
            }),
            "edited",
        ),
        (
            "removed",
            tampered(&|es| {
                es.remove(1);
            }),
            "removed",
        ),
        (
            "removed last",
            tampered(&|es| {
                es.pop();
            }),
            "removed",
        ),
        ("reordered", tampered(&|es| es.swap(1, 2)), "reordered"),
        (
            "inserted",
            tampered(&|es| {
                let copy = es[1].clone();
                es.insert(2, copy);
            }),
            "inserted",
        ),
    ];
    for (case, b, word) in cases {
        let (ok, msg) = verify_bundle(&b, &jwks, &services, &dir);
        assert!(!ok, "{case} bundle refused");
        assert!(
            msg.to_lowercase().contains(word),
            "{case}: the message names it: {msg}"
        );
    }
    // Another key with the same kid: the signature fails, by name.
    let other = serde_json::to_value(
        signing::KeyRing::generate(jwks["keys"][0]["kid"].as_str().expect("kid"))
            .expect("ring")
            .jwks(),
    )
    .expect("jwks");
    let (ok, msg) = verify_bundle(&bundle, &other, &services, &dir);
    assert!(
        !ok && msg.to_lowercase().contains("signature"),
        "wrong key: {msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let (s, b) = call(
        &admin,
        "GET",
        &format!("{proj}/v1/licenses/{}/dispute-bundle", Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("LICENSE_NOT_FOUND")));
    projector.running.stop().await;
    activation.running.stop().await;
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_trail_filters_pages_streams_exports_and_follows_a_trial_across_services() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let activation = start_activation(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let (iss, act, proj) = (issuance.url(), activation.url(), projector.url());
    let admin = admin_client();
    let from = instant().await;
    let ids = issue_many(&iss, 30).await;
    let to = instant().await;

    // A trial: activation asks issuance over Kafka, then activates.
    let trials = format!("{act}/v1/trials");
    let body = json!({"product": "integration-platform", "fingerprint": device(9)});
    let trial = eventually(
        Duration::from_secs(10),
        || call(&admin, "POST", &trials, Some(&body)),
        |t| t.0 == 201,
    )
    .await;
    assert_eq!(trial.0, 201, "{}", trial.1);
    let trial_license = trial.1["license_id"].as_str().expect("license").to_string();
    let pool = pool(&projector.db).await;
    let projected = wait_until(Duration::from_secs(30), || async {
        count(
            &pool,
            "SELECT count(*) FROM audit_trail WHERE event_type = 'LicenseSuspended'",
        )
        .await
            == 30
            && count(
                &pool,
                "SELECT count(*) FROM audit_trail WHERE event_type = 'TrialActivated'",
            )
            .await
                == 1
    })
    .await;
    assert!(projected, "events projected");
    let correlation: String = sqlx::query_scalar(
        "SELECT correlation_id FROM audit_trail WHERE event_type = 'TrialStarted'",
    )
    .fetch_one(&pool)
    .await
    .expect("trial started");
    let (s, chain) = call(
        &admin,
        "GET",
        &format!("{proj}/v1/audit?correlation_id={correlation}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{chain}");
    let mut steps: Vec<(String, String, String)> = chain["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["recorded_at"].as_str().unwrap_or_default().to_string(),
                e["context"].as_str().unwrap_or_default().to_string(),
                e["event_type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    steps.sort();
    let path: Vec<(&str, &str)> = steps
        .iter()
        .map(|(_, c, t)| (c.as_str(), t.as_str()))
        .collect();
    let started = path
        .iter()
        .position(|p| *p == ("activation", "TrialStarted"))
        .expect("started");
    let issued = path
        .iter()
        .position(|p| *p == ("issuance", "LicenseIssued"))
        .expect("issued");
    let activated = path
        .iter()
        .position(|p| *p == ("activation", "TrialActivated"))
        .expect("activated");
    assert!(
        started < issued && issued < activated,
        "activation -> issuance -> activation: {path:?}"
    );
    let (_, by_license) = call(
        &admin,
        "GET",
        &format!("{proj}/v1/audit?license_id={trial_license}"),
        None,
    )
    .await;
    assert!(
        by_license["items"].as_array().is_some_and(|i| i.len() >= 3),
        "{by_license}"
    );

    // Filters: event type and time range, actor; pages by cursor.
    let range = |t: DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
    let base = format!(
        "{proj}/v1/audit?event_type=LicenseSuspended&from={}&to={}",
        range(from),
        range(to)
    );
    let mut seen = Vec::new();
    let mut url = format!("{base}&limit=7");
    loop {
        let (s, page) = call(&admin, "GET", &url, None).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 7);
        seen.extend(
            items
                .iter()
                .map(|i| i["license_id"].as_str().unwrap_or_default().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{base}&limit=7&cursor={c}"),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "every suspension once, across pages");
    let (_, none) = call(
        &admin,
        "GET",
        &format!(
            "{proj}/v1/audit?event_type=LicenseSuspended&to={}",
            range(from)
        ),
        None,
    )
    .await;
    assert_eq!(none["items"], json!([]));
    let (_, by_actor) = call(
        &admin,
        "GET",
        &format!("{proj}/v1/audit?actor=AKIDtestadmin&event_type=LicenseIssued&limit=1000"),
        None,
    )
    .await;
    assert_eq!(
        by_actor["items"].as_array().map(Vec::len),
        Some(30),
        "the trial's license was issued by a service"
    );

    // Exports stream every matching row.
    let client = admin_client();
    let ndjson = client
        .get(format!("{base}&format=ndjson"))
        .send()
        .await
        .expect("sent");
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let text = ndjson.text().await.expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 30);
    assert!(lines.iter().all(|l| l["event_type"] == "LicenseSuspended"));
    let csv = client
        .get(format!("{base}&format=csv"))
        .send()
        .await
        .expect("sent");
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/csv"));
    let text = csv.text().await.expect("body");
    let mut rows = text.lines();
    assert!(rows
        .next()
        .is_some_and(|h| h.starts_with("event_id,context,")));
    assert_eq!(rows.filter(|r| r.contains("LicenseSuspended")).count(), 30);

    for (q, code, field) in [
        ("limit=5000", "INVALID_LIMIT", "limit"),
        ("format=ndjson&limit=5", "EXPORT_NOT_PAGED", "limit"),
        ("actor=", "INVALID_FILTER", "actor"),
    ] {
        let (s, b) = call(&admin, "GET", &format!("{proj}/v1/audit?{q}"), None).await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (422, Some(code), Some(field)),
            "{q}: {b}"
        );
    }
    let (s, b) = call(
        &admin,
        "GET",
        &format!("{proj}/v1/audit?from={}&to={}", range(to), range(from)),
        None,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (422, Some("INVALID_RANGE")), "{b}");
    let (s, _) = call(&admin, "GET", &format!("{proj}/v1/audit?format=xml"), None).await;
    assert!((400..500).contains(&s));
    projector.running.stop().await;
    activation.running.stop().await;
    issuance.running.stop().await;
}

/// The sum of a metric's series whose line starts with `series`.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn metrics_of(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The state at each instant as the projector answered before snapshots:
/// every audit row of the license recorded up to it, sorted by context,
/// aggregate and sequence, folded from the first — computed here, from the
/// projector's tables, with the live model's own fold.
async fn full_folds(pool: &sqlx::PgPool, id: &str, at: &[DateTime<Utc>]) -> Vec<Value> {
    let license = Uuid::parse_str(id).expect("uuid");
    let mut out = Vec::new();
    for t in at {
        let mut events = projector::store::licenses::events_until(pool, license, *t)
            .await
            .expect("audit rows");
        events.sort_by(|(c1, a), (c2, b)| {
            (c1, &a.aggregate_type, &a.aggregate_id, a.sequence).cmp(&(
                c2,
                &b.aggregate_type,
                &b.aggregate_id,
                b.sequence,
            ))
        });
        let mut state = projector::domain::LicenseState::new(license);
        for (context, e) in &events {
            let _ = state.apply(context, e);
        }
        out.push(serde_json::to_value(&state).expect("json"));
    }
    out
}

/// The `state` of each answer.
fn states(answers: &[Value]) -> Vec<Value> {
    answers.iter().map(|a| a["state"].clone()).collect()
}

async fn snapshots(pool: &sqlx::PgPool, id: &str) -> i64 {
    count(
        pool,
        &format!("SELECT count(*) FROM license_state_snapshots WHERE license_id = '{id}'"),
    )
    .await
}

/// The suite's projector snapshots every 2 events. A late event is one a
/// stalled relay publishes long after it was recorded: here the domain
/// context's own Kafka identity publishes a binding recorded in the middle
/// of the license's history, after snapshots past that instant exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn as_of_folds_from_snapshots_equal_to_a_full_fold_and_a_late_event_invalidates_them() {
    let stack = Stack::start(&[Svc::Projector]).await;
    let proj = stack.url(Svc::Projector);
    let pool = stack.pool(Svc::Projector).await;
    let admin = admin_client();
    let product = stack.product(json!({})).await;
    let lic = stack
        .issue(
            &json!({"product": product, "customer": "Snapshot Ltd", "kind": "formal",
                       "features": ["f1"]}),
        )
        .await;
    let id = lic.id.clone();
    let url = |what: &str| format!("{}/v1/licenses/{id}/{what}", stack.url(Svc::Issuance));
    // Issued, then four suspensions and reinstatements: nine events, and
    // an instant after each.
    let mut instants = vec![instant().await];
    let mut late_at = None;
    for round in 0..4 {
        let (s, b) = call(
            &admin,
            "POST",
            &url("suspend"),
            Some(&json!({"reason": "unpaid"})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        if round == 1 {
            late_at = Some(instant().await);
        }
        instants.push(instant().await);
        let (s, b) = call(&admin, "POST", &url("reinstate"), None).await;
        assert_eq!(s, 200, "{b}");
        instants.push(instant().await);
    }
    let late_at = late_at.expect("an instant for the late event");
    live_until(&proj, &id, "every event", |v| v["status"] == "active").await;
    // The audit trail has its own consumer: it may trail the live row.
    let state = format!("{proj}/v1/licenses/{id}/state");
    let projected = wait_until(Duration::from_secs(15), || async {
        let (s, b) = call(&admin, "GET", &state, None).await;
        s == 200 && b["events_folded"] == 9
    })
    .await;
    assert!(projected, "nine events projected");

    // Answers through snapshots equal the folds from the first event.
    let stored = wait_until(Duration::from_secs(5), || async {
        snapshots(&pool, &id).await >= 4
    })
    .await;
    assert!(stored, "the fold from the first event left snapshots");
    let before = metrics_of(&proj).await;
    let mut through = Vec::new();
    for t in &instants {
        through.push(as_of(&proj, &id, *t).await);
    }
    let after = metrics_of(&proj).await;
    let from_snapshot = r#"as_of_folds_total{from="snapshot"}"#;
    assert!(
        metric(&after, from_snapshot) >= metric(&before, from_snapshot) + instants.len() as u64 - 1,
        "every answer past the first snapshot folded from one"
    );
    assert_eq!(states(&through), full_folds(&pool, &id, &instants).await);
    let statuses: Vec<_> = through
        .iter()
        .map(|a| a["effective_status"].clone())
        .collect();
    assert_eq!(statuses[1], "suspended");
    assert_eq!(statuses[2], "active");

    // Snapshots past `late_at` exist when the late event arrives.
    for t in &instants {
        as_of(&proj, &id, *t).await;
    }
    let stored = wait_until(Duration::from_secs(5), || async {
        count(
            &pool,
            &format!(
                "SELECT count(*) FROM license_state_snapshots WHERE license_id = '{id}' \
                 AND upto > '{}'",
                late_at.to_rfc3339()
            ),
        )
        .await
            >= 2
    })
    .await;
    assert!(stored, "snapshots after the late event's instant");
    let late = contracts::EventEnvelope {
        event_id: Uuid::now_v7(),
        event_type: contracts::domain::DOMAIN_BOUND.into(),
        event_version: "1".into(),
        aggregate_type: contracts::domain::BINDING_AGGREGATE.into(),
        aggregate_id: id.clone(),
        sequence: 1,
        global_position: 1,
        occurred_at: late_at,
        recorded_at: late_at,
        command_id: Uuid::now_v7(),
        correlation_id: "late".into(),
        causation_id: None,
        actor: contracts::Actor::new(contracts::ActorKind::Service, "domain-binding"),
        payload: json!({"license_id": id, "product": product, "domain": "late.example",
                        "requested_host": "late.example", "follow_up": [],
                        "bound_at": late_at}),
        prev_hash: "00".repeat(32),
        hash: "11".repeat(32),
    };
    let producer: rdkafka::producer::FutureProducer = stack
        .infra
        .kafka("domain-binding")
        .client()
        .create()
        .expect("producer");
    send_raw(
        &producer,
        &contracts::Topics::new(&stack.prefix).events("domain"),
        &id,
        &serde_json::to_vec(&late).expect("json"),
    )
    .await;
    let arrived = wait_until(Duration::from_secs(15), || async {
        count(
            &pool,
            &format!(
                "SELECT count(*) FROM audit_trail WHERE event_id = '{}'",
                late.event_id
            ),
        )
        .await
            == 1
    })
    .await;
    assert!(arrived, "the late event reached the audit trail");

    let before = metrics_of(&proj).await;
    let mut through = Vec::new();
    for t in &instants {
        through.push(as_of(&proj, &id, *t).await);
    }
    let after = metrics_of(&proj).await;
    let invalidated = "as_of_snapshots_invalidated_total";
    assert!(
        metric(&after, invalidated) >= metric(&before, invalidated) + 2,
        "the snapshots the late event contradicts were dropped"
    );
    for (t, a) in instants.iter().zip(&through) {
        let bound = a["state"]["domain"]["domain"].as_str();
        if *t >= late_at {
            assert_eq!(bound, Some("late.example"), "at {t}: {a}");
        } else {
            assert_eq!(bound, None, "at {t}: {a}");
        }
    }
    assert_eq!(through.last().expect("answers")["events_folded"], 10);
    assert_eq!(states(&through), full_folds(&pool, &id, &instants).await);

    // Snapshot rows that do not read as this license's state (written by
    // someone with database access) are dropped when met, and the answers
    // stay the folds from the first event.
    let stored = wait_until(Duration::from_secs(5), || async {
        snapshots(&pool, &id).await >= 2
    })
    .await;
    assert!(stored, "the answers after the late event left snapshots");
    let forged = sqlx::query(
        "UPDATE license_state_snapshots SET state = json_build_object('license_id', gen_random_uuid()) \
         WHERE license_id = $1::uuid",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .expect("forge snapshots")
    .rows_affected();
    assert!(forged >= 2, "{forged} snapshots forged");
    let before = metrics_of(&proj).await;
    let mut through = Vec::new();
    for t in &instants {
        through.push(as_of(&proj, &id, *t).await);
    }
    let after = metrics_of(&proj).await;
    assert!(
        metric(&after, invalidated) > metric(&before, invalidated),
        "the forged snapshots were dropped"
    );
    assert_eq!(states(&through), full_folds(&pool, &id, &instants).await);
    let left = count(
        &pool,
        &format!(
            "SELECT count(*) FROM license_state_snapshots WHERE license_id = '{id}' \
             AND (state->>'license_id')::uuid <> license_id"
        ),
    )
    .await;
    // Those the answers met: a snapshot is read only when an answer starts
    // from it.
    assert!(
        left < forged as i64,
        "{left} of {forged} forged snapshots left"
    );

    // A plausible forgery (this license's state, another customer) is not
    // detectable by the snapshot (docs/architecture.md); but once its row
    // is gone, no answer starts from what was read of it, even when a fold
    // cuts a snapshot again at the same instant with the same count. Two
    // more events, so that the cut at the last one was never read before.
    for (path, body) in [
        ("suspend", Some(json!({"reason": "unpaid"}))),
        ("reinstate", None),
    ] {
        let (s, b) = call(&admin, "POST", &url(path), body.as_ref()).await;
        assert_eq!(s, 200, "{b}");
    }
    let projected = wait_until(Duration::from_secs(15), || async {
        let (s, b) = call(&admin, "GET", &state, None).await;
        s == 200 && b["events_folded"] == 12
    })
    .await;
    assert!(projected, "twelve events projected");
    let last = instant().await;
    as_of(&proj, &id, last).await;
    let cut = latest_snapshot(&pool, &id, last, |(_, n)| n == 12).await;
    sqlx::query(
        "UPDATE license_state_snapshots \
         SET state = jsonb_set(state::jsonb, '{customer}', '\"Forged Ltd\"')::json \
         WHERE license_id = $1::uuid AND upto = $2",
    )
    .bind(&id)
    .bind(cut.0)
    .execute(&pool)
    .await
    .expect("forge");
    // The answer follows the row as it now stands, not a state kept in
    // memory from before it was rewritten (the polls of the live state
    // above read this snapshot already).
    let forged = as_of(&proj, &id, last).await;
    assert_eq!(forged["state"]["customer"], "Forged Ltd", "{forged}");
    sqlx::query("DELETE FROM license_state_snapshots WHERE license_id = $1::uuid")
        .bind(&id)
        .execute(&pool)
        .await
        .expect("repair");
    as_of(&proj, &id, last).await;
    latest_snapshot(&pool, &id, last, |c| c == cut).await;
    let answer = as_of(&proj, &id, last).await;
    assert_ne!(answer["state"]["customer"], "Forged Ltd", "{answer}");
    assert_eq!(
        vec![answer["state"].clone()],
        full_folds(&pool, &id, &[last]).await
    );
    pool.close().await;
    stack.stop().await;
}

/// The instant and event count of the license's latest snapshot at or
/// before `at`, once there is one that `wanted` accepts, within 5 s.
async fn latest_snapshot(
    pool: &sqlx::PgPool,
    id: &str,
    at: DateTime<Utc>,
    wanted: impl Fn((DateTime<Utc>, i64)) -> bool,
) -> (DateTime<Utc>, i64) {
    for _ in 0..50 {
        let found: Option<(DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT upto, events_covered FROM license_state_snapshots \
             WHERE license_id = $1::uuid AND upto <= $2 ORDER BY upto DESC LIMIT 1",
        )
        .bind(id)
        .bind(at)
        .fetch_optional(pool)
        .await
        .expect("snapshot");
        if let Some(f) = found.filter(|f| wanted(*f)) {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no such snapshot at or before {at}");
}

/// A rebuild loads the audit trail with `COPY`, which has no `ON CONFLICT`:
/// an event reusing another's id must neither stall it nor change what it
/// ends with. The forgery sits behind the genuine event in its partition,
/// so both readers see the genuine one first: the live trail skips the
/// forgery, the rebuild refuses it by name, and both end row for row alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_event_reusing_an_event_id_is_skipped_live_and_dead_lettered_by_a_rebuild() {
    use rdkafka::message::Message;
    let stack = Stack::start(&[Svc::Projector]).await;
    let proj = stack.url(Svc::Projector);
    let pool = stack.pool(Svc::Projector).await;
    let product = stack.product(json!({})).await;
    let lic = stack
        .issue(
            &json!({"product": product, "customer": "Forged Ltd", "kind": "formal",
                       "features": ["f1"]}),
        )
        .await;
    let id = lic.id.clone();
    live_until(&proj, &id, "issued", |v| v["status"] == "active").await;
    let sql = format!("SELECT count(*) FROM audit_trail WHERE license_id = '{id}'");
    let audited = wait_for_count(&pool, &sql, 1, Duration::from_secs(15)).await;
    assert!(audited, "the issuance event reached the audit trail");
    let taken: Uuid = sqlx::query_scalar(&format!(
        "SELECT event_id FROM audit_trail WHERE license_id = '{id}'"
    ))
    .fetch_one(&pool)
    .await
    .expect("the issued event's id");
    let topic = contracts::Topics::new(&stack.prefix).events("issuance");
    let partition = read_topic(&stack.infra.operator(), &topic, 1, Duration::from_secs(30))
        .await
        .iter()
        .find(|m| {
            m.payload()
                .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                .is_some_and(|e| e["event_id"] == taken.to_string())
        })
        .map(|m| m.partition())
        .expect("the issued event's partition");
    let now = Utc::now();
    // An aggregate the license model counts without folding: the live
    // consumer and the rebuild apply it alike.
    let forged = contracts::EventEnvelope {
        event_id: taken,
        event_type: "Forged".into(),
        event_version: "1".into(),
        aggregate_type: "Forgery".into(),
        aggregate_id: Uuid::now_v7().to_string(),
        sequence: 1,
        global_position: 1,
        occurred_at: now,
        recorded_at: now,
        command_id: Uuid::now_v7(),
        correlation_id: "forged".into(),
        causation_id: None,
        actor: contracts::Actor::new(contracts::ActorKind::Service, "issuance"),
        payload: json!({"license_id": id}),
        prev_hash: "00".repeat(32),
        hash: "11".repeat(32),
    };
    let producer: rdkafka::producer::FutureProducer = stack
        .infra
        .kafka("issuance")
        .client()
        .create()
        .expect("producer");
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&topic)
                .partition(partition)
                .key(&id)
                .payload(&serde_json::to_vec(&forged).expect("json")),
            Duration::from_secs(10),
        )
        .await
        .expect("forgery sent");
    // The license model counts it; the trail keeps the first event under
    // that id.
    live_until(&proj, &id, "the forged event counted", |v| v["events"] == 2).await;
    let trail: String = sqlx::query_scalar(&format!(
        "SELECT event_type FROM audit_trail WHERE event_id = '{taken}'"
    ))
    .fetch_one(&pool)
    .await
    .expect("the taken id's row");
    assert_eq!(trail, contracts::issuance::LICENSE_ISSUED);
    let before = rows(&pool).await;

    rebuild_all(&proj).await;
    assert_eq!(
        rows(&pool).await,
        before,
        "the rebuild equals the live tables"
    );
    let dead = read_topic(
        &stack.infra.operator(),
        &contracts::Topics::dlq(&topic),
        1,
        Duration::from_secs(30),
    )
    .await;
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|m| {
            (
                header(m, "dlq_consumer").unwrap_or_default(),
                header(m, "dlq_reason").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 1, "dead-lettered once: {reasons:?}");
    assert!(
        reasons[0].0.contains(".rebuild.audit_trail."),
        "by the audit trail's rebuild: {reasons:?}"
    );
    assert!(
        reasons[0].1.contains("event id already in the audit trail"),
        "{reasons:?}"
    );
    pool.close().await;
    stack.stop().await;
}

/// `licensectl export` writes what `GET /v1/audit?format=…` streams, byte
/// for byte, reports the rows with `--json`, and leaves no file behind
/// when the projector refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn licensectl_export_writes_the_filtered_trail_and_nothing_when_refused() {
    let stack = Stack::start(&[Svc::Projector]).await;
    let proj = stack.url(Svc::Projector);
    let pool = stack.pool(Svc::Projector).await;
    let product = stack.product(json!({})).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let lic = stack
            .issue(
                &json!({"product": product, "customer": format!("Export {n}"),
                           "kind": "formal", "features": ["f1"]}),
            )
            .await;
        ids.push(lic.id.clone());
    }
    let audited = wait_for_count(
        &pool,
        "SELECT count(*) FROM audit_trail WHERE license_id IS NOT NULL",
        3,
        Duration::from_secs(15),
    )
    .await;
    assert!(audited, "the issuance events reached the audit trail");
    let dir = std::env::temp_dir().join(format!("licensectl-export-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let export = |key: &str, file: &std::path::Path, extra: &[&str]| {
        let out = Command::new(bin_path("licensectl"))
            .args([
                "--json",
                "export",
                "--url",
                &proj,
                "--api-key",
                key,
                "--output",
            ])
            .arg(file)
            .args(extra)
            .output()
            .expect("licensectl runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let all = dir.join("all.ndjson");
    let (code, stdout, stderr) = export(ADMIN_TOKEN, &all, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).expect("summary JSON");
    let direct = admin_client()
        .get(format!("{proj}/v1/audit?format=ndjson"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    let written = std::fs::read_to_string(&all).expect("the export");
    assert_eq!(written, direct, "the file is the stream, byte for byte");
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(summary["rows"], direct.lines().count(), "{summary}");
    assert_eq!(summary["bytes"], direct.len(), "{summary}");

    let one = dir.join("one.csv");
    let (code, _, stderr) = export(
        ADMIN_TOKEN,
        &one,
        &["--format", "csv", "--license-id", &ids[1]],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let csv = std::fs::read_to_string(&one).expect("the CSV export");
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .is_some_and(|h| h.starts_with("event_id,context,")));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(rows[0].contains(&ids[1]), "{csv}");

    // A refused export (a key without the auditor scope) is an error
    // naming the projector's code, and writes nothing.
    let refused = dir.join("refused.ndjson");
    let (code, _, stderr) = export("AKIDnobody.0000000000000000", &refused, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("GET /v1/audit refused"), "{stderr}");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(left.len(), 2, "only the two exports: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
    pool.close().await;
    stack.stop().await;
}

/// A rebuild keeps license states in memory across its chunks and writes
/// each changed one with only the activations its events name. Here every
/// chunk is one message and the cache holds two states (so a window, which
/// the cache bounds, is two chunks): chunks both continue states from
/// memory and read evicted ones back with all their stored activations;
/// the rebuilt rows equal the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_in_one_message_chunks_with_a_tiny_state_cache_equals_the_live_rows() {
    let stack = Stack::builder()
        .with(Svc::Activation)
        .projector(|c| {
            c.rebuild_batch = 1;
            c.rebuild_cached_states = 2;
        })
        .start()
        .await;
    let proj = stack.url(Svc::Projector);
    let act = stack.url(Svc::Activation);
    let pool = stack.pool(Svc::Projector).await;
    let admin = admin_client();
    let product = stack.product(json!({"max_activations": 3})).await;
    let mut licenses = Vec::new();
    for n in 0..3 {
        licenses.push(
            stack
                .license(&product, &format!("Cache {n}"), json!({}))
                .await,
        );
    }
    // Interleaved across licenses, so that each license's events fall in
    // chunks apart: two seats each, one uninstalled, a third activated.
    let mut seats: Vec<Vec<String>> = vec![Vec::new(); licenses.len()];
    for round in 0..2u32 {
        for (n, l) in licenses.iter().enumerate() {
            let (s, b) = call(
                &admin,
                "POST",
                &format!("{act}/v1/activations"),
                Some(&json!({"license_key": l.key, "fingerprint": device(10 * n as u32 + round)})),
            )
            .await;
            assert_eq!(s, 201, "{b}");
            seats[n].push(b["activation_id"].as_str().expect("id").to_string());
        }
    }
    for (n, l) in licenses.iter().enumerate() {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{act}/v1/activations/{}/uninstall", seats[n][0]),
            None,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{act}/v1/activations"),
            Some(&json!({"license_key": l.key, "fingerprint": device(10 * n as u32 + 5)})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    for l in &licenses {
        live_until(&proj, &l.id, "three seats, one ended", |v| {
            v["live_activations"] == 2 && v["activations"].as_object().is_some_and(|a| a.len() == 3)
        })
        .await;
    }
    let activation_rows = wait_for_count(
        &pool,
        "SELECT count(*) FROM license_activations",
        9,
        Duration::from_secs(15),
    )
    .await;
    assert!(activation_rows, "every activation projected");
    // Both models caught up: the audit trail trails the states a little.
    let trail = "SELECT count(*) FROM audit_trail WHERE license_id IS NOT NULL";
    let settled = wait_until(Duration::from_secs(15), || async {
        let a = count(&pool, trail).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        a > 0 && count(&pool, trail).await == a
    })
    .await;
    assert!(settled, "the audit trail settled");
    let before = rows(&pool).await;
    rebuild_all(&proj).await;
    let after = rows(&pool).await;
    assert_eq!(
        after.0, before.0,
        "license_state and its activations equal row for row"
    );
    assert_eq!(after.1, before.1, "audit_trail equal row for row");
    pool.close().await;
    stack.stop().await;
}
