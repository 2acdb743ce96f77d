//! Domain binding end to end: issuance and domain binding in-process on
//! real Postgres and Kafka; license facts reach domain binding over Kafka.

use std::sync::Arc;
use std::time::Duration;

use e2e::routes::Svc;
use e2e::*;
use serde_json::{json, Value};

struct Bindings {
    stack: Stack,
    iss: String,
    dom: String,
    /// Domain binding's database.
    pool: sqlx::PgPool,
}

impl std::ops::Deref for Bindings {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

async fn stack(clock: Option<Arc<ManualClock>>) -> Bindings {
    let builder = Stack::builder().with(Svc::Domain);
    let stack = match clock {
        Some(c) => builder.issuance_clock(c),
        None => builder,
    }
    .start()
    .await;
    Bindings {
        iss: stack.url(Svc::Issuance),
        dom: stack.url(Svc::Domain),
        pool: stack.pool(Svc::Domain).await,
        stack,
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Bindings {
    /// A cloud-engine license, once domain binding knows it: id and key.
    async fn issue(&self, extra: Value) -> (String, String) {
        let body = merged(
            json!({"product": "cloud-engine", "edition": "mainland",
            "customer": "ACME", "kind": "formal", "features": ["site-engine"]}),
            extra,
        );
        let License { id, key } = self.stack.issue(&body).await;
        let url = format!("{}/v1/licenses/{id}/domain", self.dom);
        let known = wait_until(Duration::from_secs(15), || async {
            call(&self.admin, "GET", &url, None).await.0 == 200
        })
        .await;
        assert!(known, "the license reached domain binding over Kafka");
        let cached = wait_until(Duration::from_secs(5), || async {
            self.check(&key, "example.com").await["code"] != "NOT_FOUND"
        })
        .await;
        assert!(cached, "the host-check cache has the license");
        (id, key)
    }

    async fn bind(&self, id: &str, domain: &str) -> (u16, Value) {
        call(
            &self.admin,
            "PUT",
            &format!("{}/v1/licenses/{id}/domain", self.dom),
            Some(&json!({"domain": domain})),
        )
        .await
    }

    async fn change(&self, id: &str, domain: &str, accept_fee: bool) -> (u16, Value) {
        call(
            &self.admin,
            "POST",
            &format!("{}/v1/licenses/{id}/domain/change", self.dom),
            Some(&json!({"domain": domain, "accept_fee": accept_fee})),
        )
        .await
    }

    async fn check(&self, key: &str, host: &str) -> Value {
        let (s, b) = call(
            &self.admin,
            "GET",
            &format!(
                "{}/v1/domain-check?license_key={}&host={}",
                self.dom,
                enc(key),
                enc(host)
            ),
            None,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// Waits until the host check answers `code` (the cache follows Kafka).
    async fn check_becomes(&self, key: &str, host: &str, code: &str) -> bool {
        wait_until(Duration::from_secs(15), || async {
            self.check(key, host).await["code"] == code
        })
        .await
    }

    async fn events(&self, event_type: &str) -> i64 {
        count(
            &self.pool,
            &format!("SELECT count(*) FROM events WHERE event_type = '{event_type}'"),
        )
        .await
    }

    async fn stop(self) {
        self.stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_public_suffix_list_test_cases_pass_through_the_api() {
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let domain = start_domain_binding(&infra, &prefix).await;
    let admin = admin_client();
    let cases = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../services/domain-binding/domain/src/psl_cases.txt"),
    )
    .expect("psl cases");
    let mut n = 0;
    for line in cases
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut parts = line.split_whitespace();
        let (Some(host), Some(expected)) = (parts.next(), parts.next()) else {
            panic!("bad case line {line:?}");
        };
        let (s, b) = call(
            &admin,
            "GET",
            &format!(
                "{}/v1/registrable-domain?host={}",
                domain.running.url(),
                enc(host)
            ),
            None,
        )
        .await;
        if expected == "null" {
            assert!((400..500).contains(&s), "{host}: {s} {b}");
            assert_eq!(b["field"], "host", "{host}: {b}");
        } else {
            assert_eq!(
                (s, b["registrable_domain"].as_str()),
                (200, Some(expected)),
                "{host}: {b}"
            );
        }
        n += 1;
    }
    assert!(n >= 60, "only {n} cases");
    for (host, code) in [
        ("1.2.3.4", "IP_NOT_ALLOWED"),
        ("[::1]", "IP_NOT_ALLOWED"),
        ("0x7f.1", "IP_NOT_ALLOWED"),
        ("::ffff:1.2.3.4", "IP_NOT_ALLOWED"),
        ("example.com:443", "PORT_NOT_ALLOWED"),
        ("example.com/x", "PATH_NOT_ALLOWED"),
        ("user@example.com", "USERINFO_NOT_ALLOWED"),
        ("co.uk", "PUBLIC_SUFFIX"),
        ("公司.cn", "PUBLIC_SUFFIX"),
        (".example.com", "INVALID_HOST"),
    ] {
        let (s, b) = call(
            &admin,
            "GET",
            &format!(
                "{}/v1/registrable-domain?host={}",
                domain.running.url(),
                enc(host)
            ),
            None,
        )
        .await;
        assert_eq!((s, b["code"].as_str()), (422, Some(code)), "{host}");
    }
    domain.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn twenty_concurrent_binds_of_one_domain_leave_exactly_one_winner() {
    let st = stack(None).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(st.issue(json!({})).await.0);
    }
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (admin, dom, id) = (st.admin.clone(), st.dom.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            call(
                &admin,
                "PUT",
                &format!("{dom}/v1/licenses/{id}/domain"),
                Some(&json!({"domain": format!("node{i}.race.example.com")})),
            )
            .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        let (s, b) = t.await.expect("task");
        match s {
            200 => won += 1,
            409 => assert_eq!(b["code"], "DOMAIN_TAKEN", "{b}"),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(st.events("DomainBound").await, 1);
    assert_eq!(
        count(
            &st.pool,
            "SELECT count(*) FROM domain_claims WHERE domain = 'example.com'"
        )
        .await,
        1
    );
    // The refused binds stored nothing but their outcome: one binding, and
    // a refusal replayed under its key answers the same.
    assert_eq!(
        count(
            &st.pool,
            "SELECT count(*) FROM bindings WHERE domain = 'example.com'"
        )
        .await,
        1
    );
    let (late, _) = st.issue(json!({})).await;
    let key = uuid::Uuid::now_v7().to_string();
    for _ in 0..2 {
        let res = st
            .admin
            .put(format!("{}/v1/licenses/{late}/domain", st.dom))
            .header("Idempotency-Key", &key)
            .json(&json!({"domain": "www.example.com"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 409);
        let b: Value = res.json().await.expect("problem");
        assert_eq!(
            (b["code"].as_str(), b["field"].as_str()),
            (Some("DOMAIN_TAKEN"), Some("domain")),
            "{b}"
        );
    }
    assert_eq!(st.events("DomainBound").await, 1);
    st.stop().await;
}

/// A small deterministic generator: the same interleavings each run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Licenses bound to one registrable domain, per the bindings table (what
/// host checks follow), with claims that are not exactly the bindings.
async fn doubled_or_stray(pool: &sqlx::PgPool) -> (i64, i64) {
    let doubled = count(
        pool,
        "SELECT count(*) FROM (SELECT product, domain FROM bindings WHERE domain IS NOT NULL \
         GROUP BY product, domain HAVING count(*) > 1) d",
    )
    .await;
    let stray = count(
        pool,
        "SELECT count(*) FROM domain_claims c FULL JOIN \
           (SELECT * FROM bindings WHERE domain IS NOT NULL) b \
           ON b.license_id = c.license_id AND b.product = c.product AND b.domain = c.domain \
         WHERE b.license_id IS NULL OR c.license_id IS NULL",
    )
    .await;
    (doubled, stray)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_licenses_never_end_bound_to_one_domain_under_concurrent_binds_changes_and_resets() {
    const LICENSES: usize = 4;
    const WORKERS_PER_LICENSE: usize = 2;
    const STEPS: usize = 25;
    let st = Arc::new(stack(None).await);
    let mut ids = Vec::new();
    for _ in 0..LICENSES {
        ids.push(st.issue(json!({})).await.0);
    }
    // Watched throughout: the tables are written in the transaction that
    // decides, so no snapshot may show a domain twice.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (st, watching) = (st.clone(), watching.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                seen.push(doubled_or_stray(&st.pool).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };
    let domains = ["alpha.example", "beta.example", "gamma.example"];
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for w in 0..WORKERS_PER_LICENSE {
            let (st, id) = (st.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Lcg((i * WORKERS_PER_LICENSE + w) as u64 + 7);
                let mut codes = Vec::new();
                for _ in 0..STEPS {
                    let domain = format!("www.{}", domains[rng.below(domains.len())]);
                    let (s, b) = match rng.below(5) {
                        0 | 1 => st.bind(&id, &domain).await,
                        2 | 3 => st.change(&id, &domain, true).await,
                        _ => {
                            call(
                                &st.admin,
                                "DELETE",
                                &format!("{}/v1/licenses/{id}/domain", st.dom),
                                Some(&json!({"reason": "race"})),
                            )
                            .await
                        }
                    };
                    assert!(s == 200 || (400..500).contains(&s), "{s}: {b}");
                    codes.push(if s == 200 {
                        "OK".to_string()
                    } else {
                        b["code"].as_str().unwrap_or_default().to_string()
                    });
                }
                codes
            }));
        }
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.extend(t.await.expect("task"));
    }
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await.expect("watcher");
    assert!(seen.len() > 5, "the tables were watched during the race");
    assert!(
        seen.iter().all(|(doubled, _)| *doubled == 0),
        "a domain was bound twice at some instant: {seen:?}"
    );
    // The race did race: domains were won and refused as taken.
    let taken = codes.iter().filter(|c| *c == "DOMAIN_TAKEN").count();
    let won = codes.iter().filter(|c| *c == "OK").count();
    assert!(taken > 0 && won > 0, "{codes:?}");
    for c in &codes {
        assert!(
            [
                "OK",
                "DOMAIN_TAKEN",
                "DOMAIN_ALREADY_BOUND",
                "NOT_BOUND",
                "SAME_DOMAIN",
                "CONCURRENT_MODIFICATION"
            ]
            .contains(&c.as_str()),
            "unexpected {c}"
        );
    }
    // At rest: no domain twice, every claim exactly a binding, and each
    // license's stream (folded from its events) agrees.
    assert_eq!(doubled_or_stray(&st.pool).await, (0, 0));
    let mut bound = std::collections::HashMap::new();
    for id in &ids {
        let (s, b) = call(
            &st.admin,
            "GET",
            &format!("{}/v1/licenses/{id}/domain", st.dom),
            None,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        if let Some(d) = b["domain"].as_str() {
            let row: Option<String> =
                sqlx::query_scalar("SELECT domain FROM bindings WHERE license_id = $1::uuid")
                    .bind(id)
                    .fetch_one(&st.pool)
                    .await
                    .expect("binding row");
            assert_eq!(row.as_deref(), Some(d), "{id}");
            assert!(
                bound.insert(d.to_string(), id.clone()).is_none(),
                "{d} bound twice"
            );
        }
    }
    match Arc::try_unwrap(st) {
        Ok(st) => st.stop().await,
        Err(_) => panic!("the stack is still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn free_paid_and_refused_changes_reset_and_host_checks() {
    let st = stack(None).await;
    let (id, key) = st.issue(json!({})).await;
    let (other, _) = st.issue(json!({})).await;
    assert_eq!(st.check(&key, "example.com").await["code"], "NOT_BOUND");
    let (s, b) = st.bind(&id, "cloud.Example.COM.").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["domain"], "example.com");
    assert!(
        b["follow_up"][0]
            .as_str()
            .is_some_and(|f| f.contains("DNS A record")),
        "{b}"
    );
    // Every subdomain works; raw IPs and other domains do not.
    for (host, code) in [
        ("example.com", "OK"),
        ("a.b.example.com", "OK"),
        ("example.org", "DOMAIN_MISMATCH"),
        ("203.0.113.7", "IP_NOT_ALLOWED"),
        ("[2001:db8::1]", "IP_NOT_ALLOWED"),
    ] {
        let c = st.check(&key, host).await;
        assert_eq!(c["code"], code, "{host}: {c}");
        assert_eq!(c["authorized"], json!(code == "OK"));
    }
    // The public query: which product and edition, never the key or customer.
    let (s, q) = call(
        &reqwest::Client::new(),
        "GET",
        &format!("{}/v1/license-query?domain=www.example.com", st.dom),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            q["licensed"].as_bool(),
            q["licenses"][0]["product"].as_str(),
            q["licenses"][0]["edition"].as_str()
        ),
        (Some(true), Some("cloud-engine"), Some("mainland"))
    );
    let text = q.to_string();
    assert!(!text.contains(&key) && !text.contains("ACME"), "{text}");
    // Another license of the product cannot take it.
    let (s, b) = st.bind(&other, "shop.example.com").await;
    assert_eq!((s, b["code"].as_str()), (409, Some("DOMAIN_TAKEN")));

    // First change: free.
    let (s, b) = st.change(&id, "example.org", false).await;
    assert_eq!((s, b["changes_used"].as_i64()), (200, Some(1)), "{b}");
    assert_eq!(st.check(&key, "www.example.org").await["code"], "OK");
    assert_eq!(
        st.check(&key, "example.com").await["code"],
        "DOMAIN_MISMATCH"
    );
    // The old domain is free again.
    let (s, _) = st.bind(&other, "example.com").await;
    assert_eq!(s, 200);
    // Second change: refused without consent, nothing recorded.
    let before = count(&st.pool, "SELECT count(*) FROM events").await;
    let (s, b) = st.change(&id, "example.net", false).await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (402, Some("FEE_NOT_ACCEPTED"), Some("accept_fee")),
        "{b}"
    );
    assert_eq!(count(&st.pool, "SELECT count(*) FROM events").await, before);
    assert_eq!(st.check(&key, "example.org").await["code"], "OK");
    // ... and charged with it.
    let (s, b) = st.change(&id, "example.net", true).await;
    assert_eq!((s, b["changes_used"].as_i64()), (200, Some(2)), "{b}");
    let charge: Value = sqlx::query_scalar(
        "SELECT payload::jsonb FROM events WHERE event_type = 'DomainChangeCharged'",
    )
    .fetch_one(&st.pool)
    .await
    .expect("charge event");
    assert_eq!(
        (charge["amount_minor"].as_i64(), charge["currency"].as_str()),
        (Some(500_000), Some("CNY"))
    );

    // Operator reset (domain-admin): unbound, not counted as a change.
    let (s, b) = call(
        &st.admin,
        "DELETE",
        &format!("{}/v1/licenses/{id}/domain", st.dom),
        Some(&json!({"reason": "customer moved hosting"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["domain"].clone(), b["changes_used"].as_i64()),
        (Value::Null, Some(2))
    );
    assert_eq!(st.check(&key, "example.net").await["code"], "NOT_BOUND");
    assert_eq!(st.events("DomainReset").await, 1);
    // Bad input: a clear 4xx naming the field, nothing stored.
    let before = count(&st.pool, "SELECT count(*) FROM events").await;
    for (domain, code) in [
        ("1.2.3.4", "IP_NOT_ALLOWED"),
        ("com", "PUBLIC_SUFFIX"),
        ("example.com:8080", "PORT_NOT_ALLOWED"),
    ] {
        let (s, b) = st.bind(&id, domain).await;
        assert_eq!(
            (s, b["code"].as_str(), b["field"].as_str()),
            (422, Some(code), Some("domain")),
            "{domain}"
        );
    }
    assert_eq!(count(&st.pool, "SELECT count(*) FROM events").await, before);
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_keeps_the_binding_revoke_and_reclaim_release_it() {
    let clock = ManualClock::new();
    let st = stack(Some(clock.clone())).await;
    let expires = {
        use issuance::domain::Clock;
        (clock.now() + chrono::Duration::days(10)).to_rfc3339()
    };
    let (id, key) = st
        .issue(json!({"kind": "temporary", "expires_at": expires}))
        .await;
    let (s, _) = st.bind(&id, "expiring.example").await;
    assert_eq!(s, 200);
    assert_eq!(st.check(&key, "www.expiring.example").await["code"], "OK");
    // Expired by issuance's scheduler: checks say so, the binding stays.
    clock.advance(chrono::Duration::days(11));
    assert!(
        st.check_becomes(&key, "www.expiring.example", "LICENSE_EXPIRED")
            .await
    );
    let (_, b) = call(
        &st.admin,
        "GET",
        &format!("{}/v1/licenses/{id}/domain", st.dom),
        None,
    )
    .await;
    assert_eq!(b["domain"], "expiring.example");
    // Reclaimed 90 days later: released, free for another license.
    clock.advance(chrono::Duration::days(91));
    assert!(
        st.check_becomes(&key, "www.expiring.example", "LICENSE_REVOKED")
            .await
    );
    let released = wait_until(Duration::from_secs(10), || async {
        st.events("DomainReleased").await == 1
    })
    .await;
    assert!(released);
    let (next, _) = st.issue(json!({})).await;
    let (s, b) = st.bind(&next, "expiring.example").await;
    assert_eq!(s, 200, "{b}");
    // Revoked: released at once, the check answers LICENSE_REVOKED.
    let (s, _) = call(
        &st.admin,
        "POST",
        &format!("{}/v1/licenses/{next}/revoke", st.iss),
        Some(&json!({"reason": "fraud"})),
    )
    .await;
    assert_eq!(s, 200);
    let released = wait_until(Duration::from_secs(10), || async {
        st.events("DomainReleased").await == 2
    })
    .await;
    assert!(released);
    let (_, b) = call(
        &st.admin,
        "GET",
        &format!("{}/v1/licenses/{next}/domain", st.dom),
        None,
    )
    .await;
    assert_eq!(
        (b["domain"].clone(), b["released"].as_bool()),
        (Value::Null, Some(true))
    );
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_public_license_query_is_rate_limited_per_address() {
    let infra = Infra::get();
    let domain = start_domain_binding(&infra, &infra.prefix().await).await;
    let anonymous = reqwest::Client::new();
    let url = format!(
        "{}/v1/license-query?domain=example.com",
        domain.running.url()
    );
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let res = anonymous.get(&url).send().await.expect("request");
        statuses.push((
            res.status().as_u16(),
            res.headers().get("retry-after").is_some(),
        ));
    }
    // Burst 10 (tests' config), then 429 with Retry-After.
    assert!(
        statuses[..10].iter().all(|(s, _)| *s == 200),
        "{statuses:?}"
    );
    let limited = statuses[10..]
        .iter()
        .filter(|(s, r)| *s == 429 && *r)
        .count();
    assert!(limited >= 3, "{statuses:?}");
    let (s, b) = call(&anonymous, "GET", &url, None).await;
    assert_eq!((s, b["code"].as_str()), (429, Some("RATE_LIMITED")));
    domain.running.stop().await;
}
