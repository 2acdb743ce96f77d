//! Signed checkpoints: history anchored outside the database, attacked by
//! someone with superuser rights who rewrites an event and recomputes every
//! hash after it.

use std::process::Command;
use std::time::Duration;

use e2e::*;
use serde_json::{json, Value};

use crate::license_body;

/// Rewrites the first event of a License chain as a forger with database
/// access would: the payload changed, its hash and every later link and
/// hash of the chain recomputed exactly as the store's trigger computes
/// them (so the chain verifies), and with `witness` the Merkle leaves too.
fn forge_chain(license: &str, witness: bool) -> Vec<String> {
    let mut sql = vec![format!(
        "DO $$ DECLARE r record; prev bytea := decode(repeat('00', 32), 'hex'); \
         BEGIN FOR r IN SELECT global_position, sequence FROM events \
           WHERE aggregate_type = 'License' AND aggregate_id = '{license}' ORDER BY sequence LOOP \
           UPDATE events SET prev_hash = prev, payload = CASE WHEN r.sequence = 1 \
               THEN replace(payload::text, 'ACME Corp', 'Evil Corp')::json ELSE payload END \
             WHERE global_position = r.global_position; \
           UPDATE events SET hash = sha256(prev || convert_to(concat_ws(E'\\n', event_id::text, \
               aggregate_type, aggregate_id, sequence::text, event_type, event_version, \
               (extract(epoch FROM recorded_at) * 1000000)::bigint::text, payload::text, \
               metadata::text), 'UTF8')) \
             WHERE global_position = r.global_position RETURNING hash INTO prev; \
         END LOOP; END $$"
    )];
    if witness {
        sql.push(
            "UPDATE merkle_leaves m SET event_hash = e.hash FROM events e \
             WHERE e.global_position = m.global_position"
                .into(),
        );
    }
    sql
}

/// `licensectl verify` against the store with `extra` arguments.
fn licensectl_verify(db: &str, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin_path("licensectl"))
        .args(["--json", "verify", "--database-url", db])
        .args(extra)
        .output()
        .expect("licensectl runs");
    let code = out.status.code();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        code == Some(0) || code == Some(1),
        "exit {code:?}: {stderr}"
    );
    (out.status.success(), stdout, stderr)
}

/// Asks the service for a checkpoint of everything so far.
pub(crate) async fn checkpoint_now(service: &str) -> Value {
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{service}/v1/admin/checkpoints"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rewrite_that_recomputes_every_hash_is_caught_by_the_signed_checkpoints() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let iss = issuance.url();
    let admin = admin_client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{iss}/v1/licenses"),
            Some(&license_body()),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        ids.push(b["id"].as_str().expect("id").to_string());
    }
    let victim = ids[1].clone();
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/licenses/{victim}/suspend"),
        Some(&json!({"reason": "audit"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let p = pool(&issuance.db).await;
    let events = count(&p, "SELECT count(*) FROM events").await;
    // Published once the relay has them all (the checkpoint covers what
    // is committed below the watermark, as the relay does).
    let cp = eventually(
        Duration::from_secs(15),
        || checkpoint_now(&iss),
        |cp| cp["tree_size"].as_i64() == Some(events),
    )
    .await;
    assert_eq!(cp["tree_size"].as_i64(), Some(events), "{cp}");
    assert_eq!(cp["root_hash"].as_str().map(str::len), Some(64));

    // It is on Kafka, readable by the operator, and any JOSE library
    // verifies it against the service's JWKS.
    let topic = contracts::Topics::new(&prefix).checkpoints();
    let published = wait_until(Duration::from_secs(20), || async {
        read_topic(&infra.operator(), &topic, 1, Duration::from_secs(3))
            .await
            .iter()
            .any(|m| json_of(m)["tree_size"] == cp["tree_size"])
    })
    .await;
    assert!(published, "the checkpoint reached {topic}");
    let (_, jwks) = call(&admin, "GET", &format!("{iss}/.well-known/jwks.json"), None).await;
    let claims = python_verify(&jwks, false, cp["checkpoint"].as_str().expect("jws"))
        .expect("jwcrypto verifies the checkpoint");
    assert_eq!(claims["typ"], "licensing-checkpoint");
    assert_eq!(claims["context"], "issuance");
    assert_eq!(claims["iss"], "issuance");
    assert_eq!(claims["tree_size"], cp["tree_size"]);
    assert_eq!(claims["root_hash"], cp["root_hash"]);

    let dir = temp_dir("checkpoints");
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).expect("write jwks");
    let jwks_arg = jwks_file.display().to_string();
    let operator = infra.kafka_file("operator").display().to_string();
    let from_kafka = [
        "--context",
        "issuance",
        "--jwks",
        &jwks_arg,
        "--kafka-config",
        &operator,
        "--prefix",
        &prefix,
    ];
    let (ok, out, err) = licensectl_verify(&issuance.db, &from_kafka);
    assert!(ok, "an untouched store passes: {out}{err}");
    assert!(out.contains("\"status\":\"consistent\""), "{out}");
    // From a file too (the messages as read from Kafka).
    let file = dir.join("checkpoints.jsonl");
    let lines: String = read_topic(&infra.operator(), &topic, 1, Duration::from_secs(5))
        .await
        .iter()
        .map(|m| format!("{}\n", json_of(m)))
        .collect();
    // Unreadable lines are named and skipped, not fatal and not silent.
    std::fs::write(&file, format!("not-a-jws\n{{\"context\":1}}\n{lines}"))
        .expect("write checkpoints");
    let file_arg = file.display().to_string();
    let from_file = [
        "--context",
        "issuance",
        "--jwks",
        &jwks_arg,
        "--checkpoints",
        &file_arg,
    ];
    let (ok, out, err) = licensectl_verify(&issuance.db, &from_file);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("line 1 is not a checkpoint") && err.contains("line 2 is not a checkpoint"),
        "{err}"
    );

    // The rewrite: every hash recomputed, so the chains alone still verify.
    rewrite_history(
        &p,
        &forge_chain(&victim, false)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    let report = eventstore::chain::verify(&p, "License", &victim)
        .await
        .expect("verify");
    assert!(
        report.is_intact(),
        "the forged chain is self-consistent: {report:?}"
    );
    let (ok, _, _) = licensectl_verify(&issuance.db, &[]);
    assert!(ok, "without checkpoints the rewrite goes unnoticed");

    // The checkpoints catch it and name the events and the checkpoint.
    for args in [&from_kafka[..], &from_file[..]] {
        let (ok, out, err) = licensectl_verify(&issuance.db, args);
        assert!(!ok, "the rewrite is caught");
        let report: Value = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["checkpoint"]["status"] == "contradicted")
            .unwrap_or_else(|| panic!("no contradicted checkpoint in {out}"));
        assert_eq!(report["checkpoint"]["tree_size"], cp["tree_size"]);
        let named: Vec<(String, i64)> = report["checkpoint"]["inconsistent_events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["aggregate_id"].as_str().unwrap_or_default().to_string(),
                    e["sequence"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
        // The edited event, and the later one whose hash was recomputed.
        assert_eq!(
            named,
            vec![(victim.clone(), 1), (victim.clone(), 2)],
            "{out}"
        );
        assert!(err.contains(&format!("License {victim} #1")), "{err}");
    }

    // A forger who rewrites the Merkle leaves too is still caught; the
    // report then bounds where history departs from what was signed.
    rewrite_history(
        &p,
        &forge_chain(&victim, true)[1..]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    let (ok, out, _) = licensectl_verify(&issuance.db, &from_file);
    assert!(!ok);
    let report: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["checkpoint"]["status"] == "contradicted")
        .unwrap_or_else(|| panic!("no contradicted checkpoint in {out}"));
    let (from, to) = (
        &report["checkpoint"]["diverges_between"][0],
        &report["checkpoint"]["diverges_between"][1],
    );
    assert!(
        from.as_u64() < to.as_u64() && *to == cp["tree_size"],
        "{out}"
    );
    assert!(report["checkpoint"]["inconsistent_events"]
        .as_array()
        .expect("suspects")
        .iter()
        .any(|e| e["aggregate_id"] == victim.as_str()));
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dispute_bundles_carry_inclusion_proofs_that_verify_offline_and_fail_after_an_edit() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let projector = start_projector(&infra, &prefix).await;
    let (iss, proj) = (issuance.url(), projector.url());
    let admin = admin_client();
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/licenses"),
        Some(&license_body()),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().expect("id").to_string();
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{iss}/v1/licenses/{id}/suspend"),
        Some(&json!({"reason": "audit"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let p = pool(&issuance.db).await;
    let events = count(&p, "SELECT count(*) FROM events").await;
    let first = eventually(
        Duration::from_secs(15),
        || checkpoint_now(&iss),
        |cp| cp["tree_size"].as_i64() == Some(events),
    )
    .await;
    assert_eq!(first["tree_size"].as_i64(), Some(events), "{first}");

    // The projector serves it, its signature checked against the keys
    // issuance published, its root checked against the projector's own
    // copy of the events.
    let url = format!(
        "{proj}/v1/checkpoints?context=issuance&tree_size={}",
        first["tree_size"]
    );
    let served = wait_until(Duration::from_secs(20), || async {
        let (s, b) = call(&admin, "GET", &url, None).await;
        s == 200 && b["items"][0]["signature"] == "valid" && b["items"][0]["matches_events"] == true
    })
    .await;
    assert!(served, "the projector serves the verified checkpoint");
    let (_, latest) = call(&admin, "GET", &format!("{proj}/v1/checkpoints"), None).await;
    assert_eq!(latest["items"][0]["context"], "issuance");
    let (_, iss_jwks) = call(&admin, "GET", &format!("{iss}/.well-known/jwks.json"), None).await;
    let served_jws = latest["items"][0]["checkpoint"]
        .as_str()
        .expect("jws")
        .to_string();
    assert!(python_verify(&iss_jwks, false, &served_jws).is_some());
    let (s, b) = call(
        &admin,
        "GET",
        &format!("{proj}/v1/checkpoints?context=nowhere"),
        None,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (422, Some("INVALID_CONTEXT"), Some("context"))
    );
    for (query, field) in [
        (
            "?context=issuance&tree_size=9223372036854775808",
            "tree_size",
        ),
        (
            "/consistency?context=issuance&from=1&to=18446744073709551615",
            "to",
        ),
    ] {
        let (s, b) = call(
            &admin,
            "GET",
            &format!("{proj}/v1/checkpoints{query}"),
            None,
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (422, Some("INVALID_TREE_SIZE"), Some(field)),
            "{query}"
        );
    }

    // Two checkpoints are consistent: the projector's proof verifies
    // against both signed roots.
    for _ in 0..2 {
        call(
            &admin,
            "POST",
            &format!("{iss}/v1/licenses"),
            Some(&license_body()),
        )
        .await;
    }
    let events = count(&p, "SELECT count(*) FROM events").await;
    let second = eventually(
        Duration::from_secs(15),
        || checkpoint_now(&iss),
        |cp| cp["tree_size"].as_i64() == Some(events),
    )
    .await;
    assert_eq!(second["tree_size"].as_i64(), Some(events), "{second}");
    let (m, n) = (
        first["tree_size"].as_u64().expect("m"),
        second["tree_size"].as_u64().expect("n"),
    );
    let consistency = format!("{proj}/v1/checkpoints/consistency?context=issuance&from={m}&to={n}");
    let answered = wait_until(Duration::from_secs(20), || async {
        call(&admin, "GET", &consistency, None).await.0 == 200
    })
    .await;
    assert!(answered);
    let (_, proof) = call(&admin, "GET", &consistency, None).await;
    let hash = |v: &Value| -> [u8; 32] {
        hex::decode(v.as_str().expect("hex"))
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    };
    let path: Vec<[u8; 32]> = proof["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(hash)
        .collect();
    assert!(eventstore::merkle::verify_consistency(
        m,
        n,
        &path,
        &hash(&first["root_hash"]),
        &hash(&second["root_hash"])
    ));

    // The bundle proves the license's events under the service's checkpoint.
    let bundle_url = format!("{proj}/v1/licenses/{id}/dispute-bundle");
    let proven = wait_until(Duration::from_secs(20), || async {
        let (s, b) = call(&admin, "GET", &bundle_url, None).await;
        s == 200
            && b["service_checkpoints"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    })
    .await;
    assert!(proven, "the bundle carries issuance's checkpoint");
    let (_, bundle) = call(&admin, "GET", &bundle_url, None).await;
    let chain = bundle["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .find(|c| c["aggregate_type"] == "License")
        .expect("the License chain")
        .clone();
    assert_eq!(chain["proofs"].as_array().map(Vec::len), Some(2), "{chain}");
    let (_, proj_jwks) = call(
        &admin,
        "GET",
        &format!("{proj}/.well-known/jwks.json"),
        None,
    )
    .await;
    let dir = temp_dir("bundle");
    let files = [("projector.json", &proj_jwks), ("issuance.json", &iss_jwks)];
    for (f, v) in files {
        std::fs::write(dir.join(f), v.to_string()).expect("write jwks");
    }
    let jwks_arg = dir.join(files[0].0).display().to_string();
    let service_arg = format!("issuance={}", dir.join(files[1].0).display());
    let verify = |b: &Value| {
        let file = dir.join(format!("{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, b.to_string()).expect("write bundle");
        let out = Command::new(bin_path("licensectl"))
            .args([
                "--json",
                "verify-bundle",
                "--bundle",
                &file.display().to_string(),
                "--jwks",
                &jwks_arg,
                "--service-jwks",
                &service_arg,
            ])
            .output()
            .expect("licensectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = verify(&bundle);
    assert!(ok, "{err}");
    assert!(err.contains("2 proven"), "{err}");

    // One event edited and its hash recomputed (so its chain link is the
    // only other witness): the inclusion proof no longer verifies.
    let mut edited = bundle.clone();
    let c = edited["chains"]
        .as_array_mut()
        .expect("chains")
        .iter_mut()
        .find(|c| c["aggregate_type"] == "License")
        .expect("License chain");
    let mut e: eventstore::StoredEvent =
        serde_json::from_value(c["events"][1].clone()).expect("stored event");
    e.payload = e.payload.replace("audit", "nothing to see");
    e.hash = e.compute_hash(&e.prev_hash).to_vec();
    c["events"][1] = serde_json::to_value(&e).expect("json");
    let (ok, out, err) = verify(&edited);
    assert!(!ok, "an edited bundle fails");
    assert!(out.contains("not_in_checkpoint"), "{out}");
    assert!(
        err.contains("is not the event the service's checkpoint"),
        "{err}"
    );

    // The projector refuses to sign a history its own copy contradicts:
    // its audit row rewritten with a recomputed hash (chain intact).
    let pp = pool(&projector.db).await;
    let rehash = format!(
        "UPDATE audit_trail SET payload = replace(payload::text, 'audit', 'forged')::json \
         WHERE aggregate_id = '{id}' AND sequence = 2"
    );
    sqlx::query(&rehash)
        .execute(&pp)
        .await
        .expect("rewrite the projector's copy");
    let row: (String, String, String, String, String, String, i64, chrono::DateTime<chrono::Utc>, String, String) =
        sqlx::query_as(
            "SELECT event_id::text, aggregate_type, aggregate_id, event_type, event_version, prev_hash, \
             sequence, recorded_at, payload::text, metadata::text FROM audit_trail \
             WHERE aggregate_id = $1 AND sequence = 2",
        )
        .bind(&id)
        .fetch_one(&pp)
        .await
        .expect("row");
    let stored = eventstore::StoredEvent {
        global_position: 0,
        event_id: row.0.parse().expect("uuid"),
        aggregate_type: row.1,
        aggregate_id: row.2,
        sequence: row.6,
        event_type: row.3,
        event_version: row.4,
        payload: row.8,
        metadata: row.9,
        recorded_at: row.7,
        prev_hash: hex::decode(&row.5).expect("hex"),
        hash: vec![],
    };
    let new_hash = hex::encode(stored.compute_hash(&stored.prev_hash));
    sqlx::query("UPDATE audit_trail SET hash = $2 WHERE aggregate_id = $1 AND sequence = 2")
        .bind(&id)
        .bind(&new_hash)
        .execute(&pp)
        .await
        .expect("recompute the hash");
    let (s, b) = call(&admin, "GET", &bundle_url, None).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("HISTORY_INCONSISTENT")),
        "{b}"
    );
    issuance.running.stop().await;
    projector.running.stop().await;
}
