//! Every service at two instances on one database and one broker, as an
//! operator scales them: what one instance does reaches the other, and
//! nothing happens twice. In-process instances, but for the relays' test,
//! which SIGKILLs processes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use e2e::routes::Svc;
use e2e::*;
use serde_json::{json, Value};

/// Two instances of one service.
type Pair = [InProcess; 2];

/// The options every service takes (one type, `service_kit`'s).
fn options(clock: Option<std::sync::Arc<ManualClock>>) -> issuance::Options {
    let mut options = issuance::Options {
        handle_signals: false,
        ..Default::default()
    };
    if let Some(clock) = clock {
        options.clock = clock;
    }
    options
}

/// Two instances started one after the other from one configuration, on
/// its database `db`.
async fn pair_of<C: Clone, F, Fut>(config: &C, db: &str, start: F) -> Pair
where
    F: Fn(C, issuance::Options) -> Fut,
    Fut: std::future::Future<
        Output = Result<service_kit::platform::Running, service_kit::platform::PlatformError>,
    >,
{
    let mut started = Vec::new();
    for _ in 0..2 {
        let running = start(config.clone(), options(None))
            .await
            .expect("the instance starts");
        started.push(InProcess {
            running,
            db: db.to_owned(),
        });
    }
    let second = started.pop().expect("two");
    let first = started.pop().expect("two");
    [first, second]
}

/// A `GET` with query parameters, as the admin.
async fn get_with(url: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let url = reqwest::Url::parse_with_params(url, query).expect("url");
    call(&admin_client(), "GET", url.as_str(), None).await
}

/// `(command type, status) → count` of the outcomes of `types`.
async fn outcomes(db: &str, types: &[&str]) -> HashMap<(String, String), i64> {
    let pool = pool(db).await;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT command_type, status, count(*) FROM command_outcomes \
         WHERE command_type = ANY($1) GROUP BY 1, 2",
    )
    .bind(types)
    .fetch_all(&pool)
    .await
    .expect("outcomes");
    pool.close().await;
    rows.into_iter().map(|(t, s, n)| ((t, s), n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_issuance_instances_fire_each_expiry_and_reclaim_once() {
    // Enough licenses that one scheduler pass outlasts the other
    // instance's 100 ms interval: without the scheduler's lock, both would
    // expire the same licenses and the second attempts would be refused.
    const LICENSES: usize = 60;
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let clock = ManualClock::new();
    let db = infra.fresh_db("issuance").await;
    let mut pair = Vec::new();
    for _ in 0..2 {
        let config = issuance_config(&infra, &db, &prefix);
        pair.push(
            start_issuance_configured(config, db.clone(), options(Some(clock.clone()))).await,
        );
    }
    let admin = admin_client();
    let expires = {
        use issuance::domain::Clock;
        clock.now() + chrono::Duration::days(10)
    };
    for i in 0..LICENSES {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{}/v1/licenses", pair[i % 2].url()),
            Some(&json!({
                "product": "integration-platform", "edition": "enterprise",
                "customer": "Scale Co", "kind": "temporary", "features": ["data-access"],
                "expires_at": expires.to_rfc3339(),
            })),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }

    for (event, advance) in [("LicenseExpired", 11), ("LicenseReclaimed", 91)] {
        clock.advance(chrono::Duration::days(advance));
        let all = wait_until(Duration::from_secs(60), || async {
            stored_events(&db, event).await == LICENSES as i64
        })
        .await;
        assert!(all, "every license got its {event}");
    }
    // Both schedulers keep ticking: nothing is fired again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fired = outcomes(&db, &["ExpireLicense", "ReclaimLicense"]).await;
    let once: HashMap<(String, String), i64> = [
        (("ExpireLicense".into(), "accepted".into()), LICENSES as i64),
        (
            ("ReclaimLicense".into(), "accepted".into()),
            LICENSES as i64,
        ),
    ]
    .into();
    assert_eq!(
        fired, once,
        "each expiry and reclaim fired once, none refused"
    );
    for event in ["LicenseExpired", "LicenseReclaimed"] {
        assert_eq!(stored_events(&db, event).await, LICENSES as i64);
    }
    for p in pair {
        p.running.stop().await;
    }
}

/// The host check of `url` for `key` at `host`: its code.
async fn host_check(url: &str, key: &str, host: &str) -> String {
    let (s, b) = get_with(
        &format!("{url}/v1/domain-check"),
        &[("license_key", key), ("host", host)],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_binding_at_one_domain_binding_instance_reaches_the_others_host_checks_within_the_refresh_bound(
) {
    // The default refresh; the documented bound is one refresh after the
    // commit, plus the read itself and this 2-core machine's scheduling.
    const REFRESH_MS: u64 = 200;
    const BOUND: Duration = Duration::from_millis(REFRESH_MS + 300);
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let db = infra.fresh_db("domain").await;
    let mut config = domain_config(&infra, &db, &prefix);
    config.cache_refresh_ms = REFRESH_MS;
    let pair = pair_of(&config, &db, domain_binding::start).await;
    let admin = admin_client();
    let mut licenses = Vec::new();
    for _ in 0..2 {
        let (s, b) = call(
            &admin,
            "POST",
            &format!("{}/v1/licenses", issuance.url()),
            Some(
                &json!({"product": "cloud-engine", "customer": "Web Co", "kind": "formal",
                         "features": ["site-engine"]}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        let key = b["key"].as_str().expect("key").to_owned();
        licenses.push((b["id"].as_str().expect("id").to_owned(), key));
    }
    // Both instances' caches hold both licenses, unbound.
    for p in &pair {
        for (_, key) in &licenses {
            let known = wait_until(Duration::from_secs(30), || async {
                host_check(&p.url(), key, "www.example.com").await == "NOT_BOUND"
            })
            .await;
            assert!(known, "the license reached every instance's cache");
        }
    }

    // License 0 bound at instance 0, checked at 1; license 1 the other way.
    let mut lags = Vec::new();
    for (i, (id, key)) in licenses.iter().enumerate() {
        let (at, other) = (&pair[i], &pair[1 - i]);
        let domain = format!("scale{i}-{prefix}.com");
        let (s, b) = call(
            &admin,
            "PUT",
            &format!("{}/v1/licenses/{id}/domain", at.url()),
            Some(&json!({ "domain": domain })),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let bound = Instant::now();
        let host = format!("app.{domain}");
        assert_eq!(
            host_check(&at.url(), key, &host).await,
            "OK",
            "at once where bound"
        );
        loop {
            if host_check(&other.url(), key, &host).await == "OK" {
                break;
            }
            assert!(bound.elapsed() < Duration::from_secs(10), "never seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lags.push(bound.elapsed());
        assert_eq!(
            host_check(&other.url(), key, "www.example.com").await,
            "DOMAIN_MISMATCH"
        );
    }
    println!("a binding reached the other instance's host checks after {lags:?}");
    for lag in lags {
        assert!(lag <= BOUND, "seen after {lag:?}, beyond {BOUND:?}");
    }
    issuance.running.stop().await;
    for p in pair {
        p.running.stop().await;
    }
}

/// Grant sync's admin and client calls used below.
async fn grants_call(
    url: &str,
    token: Option<&str>,
    method: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = token.map_or_else(admin_client, client_with);
    call(&client, method, url, body.as_ref()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_grant_sync_instances_wake_each_others_long_polls_oversell_no_seat_and_reclaim_each_lease_once(
) {
    const SEATS: usize = 10;
    const CLIENTS: usize = 30;
    let infra = Infra::get();
    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let iss = issuance.url();
    let (s, b) = call(
        &admin_client(),
        "PUT",
        &format!("{iss}/v1/products/integration-platform/policy"),
        Some(&json!({"edition": "enterprise", "policy":
            {"floating_seats": SEATS, "lease_ttl_secs": 2, "lease_grace_secs": 1}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, license) = call(
        &admin_client(),
        "POST",
        &format!("{iss}/v1/licenses"),
        Some(
            &json!({"product": "integration-platform", "edition": "enterprise",
                     "customer": "Plant Co", "kind": "formal", "features": ["data-access"],
                     "expires_at": "2030-01-01T00:00:00Z"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{license}");
    let license = license["id"].as_str().expect("id").to_owned();

    let db = infra.fresh_db("grants").await;
    let config = grant_sync_config(&infra, &db, &prefix, &signing_key_path(&prefix));
    let pair = pair_of(&config, &db, grant_sync::start).await;
    let urls: Vec<String> = pair.iter().map(InProcess::url).collect();
    for url in &urls {
        let known = wait_until(Duration::from_secs(30), || async {
            grants_call(
                &format!("{url}/v1/licenses/{license}/leases"),
                None,
                "GET",
                None,
            )
            .await
            .0 == 200
        })
        .await;
        assert!(known, "the license reached grant sync");
    }
    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        let (s, b) = grants_call(
            &format!("{}/v1/clients", urls[i % 2]),
            None,
            "POST",
            Some(json!({"name": format!("worker {i}"), "licenses": [license], "allowlist": []})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        tokens.push(b["token"].as_str().expect("token").to_owned());
    }

    // A long poll parked at each instance; the renewal's change is
    // committed by whichever instance's consumer holds the partition, so
    // at least one of the two wakes through the other's notification.
    let (s, first) = grants_call(
        &format!("{}/v1/sync", urls[0]),
        Some(&tokens[0]),
        "POST",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    let parked: Vec<_> = urls
        .iter()
        .map(|url| {
            let (url, token, cursor) = (url.clone(), tokens[0].clone(), cursor.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = grants_call(
                    &format!("{url}/v1/sync"),
                    Some(&token),
                    "POST",
                    Some(json!({"cursor": cursor, "wait_ms": 20000})),
                )
                .await;
                (answer, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let renewed = Instant::now();
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{iss}/v1/licenses/{license}/renew"),
        Some(&json!({"expires_at": "2031-01-01T00:00:00Z", "order_ref": "PO-2"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for (i, p) in parked.into_iter().enumerate() {
        let ((s, woke), _) = p.await.expect("task");
        let after = renewed.elapsed();
        assert_eq!(s, 200, "{woke}");
        assert_eq!(
            woke["changes"][0]["kind"], "grant_changed",
            "instance {i}: {woke}"
        );
        println!("instance {i}'s long poll answered {after:?} after the renewal");
        assert!(after < Duration::from_secs(10), "woke after {after:?}");
    }

    // Thirty clients race for the ten seats, half at each instance.
    let mut racing = tokio::task::JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let (url, token, license) = (urls[i % 2].clone(), token.clone(), license.clone());
        racing.spawn(async move {
            grants_call(
                &format!("{url}/v1/leases"),
                Some(&token),
                "POST",
                Some(json!({"license_id": license, "feature": "data-access"})),
            )
            .await
        });
    }
    assert_eq!(
        tally(racing, "NO_SEATS_AVAILABLE").await,
        (SEATS, CLIENTS - SEATS)
    );
    assert_eq!(stored_events(&db, "LeaseGranted").await, SEATS as i64);

    // No heartbeat comes: both instances' schedulers find every lease due
    // after TTL + grace, and each is reclaimed once.
    let reclaimed = wait_until(Duration::from_secs(30), || async {
        stored_events(&db, "LeaseExpired").await == SEATS as i64
    })
    .await;
    assert!(reclaimed, "every lease reclaimed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored_events(&db, "LeaseExpired").await, SEATS as i64);
    let fired = outcomes(&db, &[contracts::grants::EXPIRE_LEASE]).await;
    assert_eq!(
        fired,
        [(
            (
                contracts::grants::EXPIRE_LEASE.to_owned(),
                "accepted".to_owned()
            ),
            SEATS as i64
        )]
        .into(),
        "one reclaim per lease"
    );
    issuance.running.stop().await;
    for p in pair {
        p.running.stop().await;
    }
}

/// A metric's value in a metrics text (0 when absent).
fn metric(text: &str, series: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn metrics_of(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Each instance's `consumer_applied_total` of `model`.
async fn applied(pair: &Pair, model: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for p in pair {
        let text = metrics_of(&p.url()).await;
        out.push(metric(
            &text,
            &format!("consumer_applied_total{{consumer=\"{model}\"}}"),
        ));
    }
    out
}

const MODELS: [&str; 2] = ["audit_trail", "license_state"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projectors_apply_each_event_once_between_them_and_share_one_rebuild() {
    const LICENSES: usize = 40;
    let infra = Infra::get();
    // Enough partitions that the group gives each instance some.
    let prefix = infra.prefix_with_partitions(4).await;
    let issuance = start_issuance(&infra, &prefix).await;
    let iss = issuance.url();
    let db = infra.fresh_db("projector").await;
    let config = projector_config(&infra, &db, &prefix);
    let pair = pair_of(&config, &db, |c, _| projector::start(c, false)).await;
    // Each instance holds partitions of each model's group.
    for p in &pair {
        let url = p.url();
        for model in MODELS {
            let series = format!("consumer_partitions{{consumer=\"{model}\"}}");
            let text = eventually(
                Duration::from_secs(30),
                || metrics_of(&url),
                |t| metric(t, &series) > 0,
            )
            .await;
            assert!(metric(&text, &series) > 0, "{series} at {url}");
        }
    }
    let issue = |n: usize| {
        let iss = iss.clone();
        async move {
            for _ in 0..n {
                let (s, b) = call(
                    &admin_client(),
                    "POST",
                    &format!("{iss}/v1/licenses"),
                    Some(
                        &json!({"product": "integration-platform", "customer": "Scale Co",
                                 "kind": "formal", "features": ["data-access"]}),
                    ),
                )
                .await;
                assert_eq!(s, 201, "{b}");
            }
        }
    };
    issue(LICENSES).await;

    // Every event in each model once, applied by one instance or the other.
    let events = pool(&issuance.db).await;
    let read = pool(&db).await;
    let all_in = |licenses: usize| {
        let (events, read) = (&events, &read);
        async move {
            let stored = count(events, "SELECT count(*) FROM events").await;
            let audited = count(read, "SELECT count(*) FROM audit_trail").await;
            let states = count(read, "SELECT count(*) FROM license_state").await;
            audited == stored && states == licenses as i64
        }
    };
    assert!(
        wait_until(Duration::from_secs(60), || all_in(LICENSES)).await,
        "both models hold every event"
    );
    // The metrics are refreshed every second: each model's shares add up
    // to the events stored, never more.
    let shares_of = |stored: i64| {
        let pair = &pair;
        async move {
            let mut all = Vec::new();
            for model in MODELS {
                let shares = eventually(
                    Duration::from_secs(10),
                    || applied(pair, model),
                    |s| s.iter().sum::<i64>() >= stored,
                )
                .await;
                println!("{model}: {shares:?} of {stored} events applied by each instance");
                assert_eq!(
                    shares.iter().sum::<i64>(),
                    stored,
                    "{model}: each event once"
                );
                all.push(shares);
            }
            all
        }
    };
    let stored = count(&events, "SELECT count(*) FROM events").await;
    for (model, shares) in MODELS.iter().zip(shares_of(stored).await) {
        assert!(
            shares.iter().all(|n| *n > 0),
            "{model}: both instances applied"
        );
    }

    // A rebuild started at one instance: the other sees it and its end,
    // refuses a second one meanwhile, and it finishes once.
    let (s, started) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/admin/rebuild", pair[0].url()),
        Some(&json!({})),
    )
    .await;
    assert_eq!(s, 202, "{started}");
    let rid = started["rebuild_id"].as_str().expect("id").to_owned();
    // A rebuild takes at least its 250 ms polls to finish.
    let (s, second) = call(
        &admin_client(),
        "POST",
        &format!("{}/v1/admin/rebuild", pair[1].url()),
        Some(&json!({})),
    )
    .await;
    assert_eq!(
        (s, second["code"].as_str()),
        (409, Some("REBUILD_IN_PROGRESS")),
        "{second}"
    );
    let done = |status: &Value| {
        status["models"].as_array().is_some_and(|ms| {
            ms.iter()
                .all(|m| m["rebuild"]["id"] == rid.as_str() && m["rebuild"]["status"] == "done")
        })
    };
    let seen = eventually(
        Duration::from_secs(60),
        || async {
            call(
                &admin_client(),
                "GET",
                &format!("{}/v1/admin/projections", pair[1].url()),
                None,
            )
            .await
            .1
        },
        done,
    )
    .await;
    assert!(
        done(&seen),
        "the other instance saw rebuild {rid} finish: {seen}"
    );
    let rebuilds: Vec<(String, String)> =
        sqlx::query_as("SELECT model, status FROM projection_rebuilds ORDER BY model")
            .fetch_all(&read)
            .await
            .expect("rebuilds");
    assert_eq!(
        rebuilds,
        MODELS
            .iter()
            .map(|m| (m.to_string(), "done".to_string()))
            .collect::<Vec<_>>(),
        "one rebuild of each model, finished once"
    );

    // After the swap both instances' live consumers go on from the
    // rebuild's offsets: later events are applied once, none again.
    issue(10).await;
    assert!(
        wait_until(Duration::from_secs(60), || all_in(LICENSES + 10)).await,
        "both models hold every event after the swap"
    );
    shares_of(count(&events, "SELECT count(*) FROM events").await).await;
    issuance.running.stop().await;
    for p in pair {
        p.running.stop().await;
    }
}

/// Which of the two processes holds its relay's lock, from their metrics
/// (`relay_active` is refreshed every second).
async fn active_relay(pair: &[ServiceProcess; 2], context: &str) -> Option<usize> {
    let series = format!("relay_active{{relay=\"{context}\"}}");
    let mut active = Vec::new();
    for (i, p) in pair.iter().enumerate() {
        if let Ok(res) = reqwest::get(format!("{}/metrics", p.url)).await {
            if metric(&res.text().await.unwrap_or_default(), &series) == 1 {
                active.push(i);
            }
        }
    }
    assert!(active.len() <= 1, "both relays active: {active:?}");
    active.first().copied()
}

/// How each write service is made to append events over HTTP: the `n`th
/// event-making request, at `url`.
#[derive(Clone)]
enum Maker {
    Licenses,
    Activations(Vec<String>),
    Bindings(Vec<String>),
    Clients(String),
}

impl Maker {
    /// Whether the service at `url` knows every license this maker uses
    /// (they reach it over Kafka).
    async fn known(&self, url: &str) -> bool {
        let admin = admin_client();
        match self {
            Maker::Licenses => true,
            Maker::Activations(keys) => {
                for key in keys {
                    let validate = format!("{url}/v1/validate");
                    if call(&license_client(key), "POST", &validate, Some(&json!({})))
                        .await
                        .0
                        != 200
                    {
                        return false;
                    }
                }
                true
            }
            Maker::Bindings(ids) => {
                for id in ids {
                    let domain = format!("{url}/v1/licenses/{id}/domain");
                    if call(&admin, "GET", &domain, None).await.0 != 200 {
                        return false;
                    }
                }
                true
            }
            Maker::Clients(license) => {
                let leases = format!("{url}/v1/licenses/{license}/leases");
                call(&admin, "GET", &leases, None).await.0 == 200
            }
        }
    }

    async fn make(&self, url: &str, n: usize, prefix: &str) {
        let admin = admin_client();
        let (method, path, body) = match self {
            Maker::Licenses => (
                "POST",
                "/v1/licenses".to_owned(),
                json!({"product": "integration-platform", "customer": "Relay Co",
                       "kind": "formal", "features": ["data-access"]}),
            ),
            Maker::Activations(keys) => (
                "POST",
                "/v1/activations".to_owned(),
                json!({"license_key": keys[n], "fingerprint": machine(n as u32)}),
            ),
            Maker::Bindings(ids) => (
                "PUT",
                format!("/v1/licenses/{}/domain", ids[n]),
                json!({"domain": format!("relay{n}-{prefix}.com")}),
            ),
            Maker::Clients(license) => (
                "POST",
                "/v1/clients".to_owned(),
                json!({"name": format!("client {n}"), "licenses": [license], "allowlist": []}),
            ),
        };
        let (s, b) = call(&admin, method, &format!("{url}{path}"), Some(&body)).await;
        assert!(s == 200 || s == 201, "{method} {path}: {s} {b}");
    }
}

/// Two processes of `bin` on one database: the active relay is SIGKILLed
/// while both append events; the standby takes over, and every stored
/// event is on the topic exactly once (read committed).
async fn relay_failover(infra: &Infra, prefix: &str, bin: &str, context: &str, maker: Maker) {
    const EACH: usize = 10;
    let db = infra
        .fresh_db(&format!("relay_{}", bin.replace('-', "_")))
        .await;
    let first = ServiceProcess::spawn(bin, infra, &db, prefix, free_port()).await;
    let second = ServiceProcess::spawn(bin, infra, &db, prefix, free_port()).await;
    let mut pair = [first, second];
    if bin == "issuance" {
        seed_products(&pair[0].url).await;
    }
    let found = eventually(
        Duration::from_secs(30),
        || active_relay(&pair, context),
        Option::is_some,
    )
    .await;
    let active = found.unwrap_or_else(|| panic!("{bin}: no relay became active"));
    let standby = 1 - active;
    let known = wait_until(Duration::from_secs(60), || maker.known(&pair[0].url)).await;
    assert!(known, "{bin}: the licenses reached the service");

    // Events written at both instances, then the active one is killed
    // while more are written at the standby.
    for n in 0..EACH {
        maker.make(&pair[n % 2].url, n, prefix).await;
    }
    pair[active].kill();
    let killed = Instant::now();
    for n in EACH..2 * EACH {
        maker.make(&pair[standby].url, n, prefix).await;
    }
    let took_over = wait_until(Duration::from_secs(30), || async {
        active_relay(&pair, context).await == Some(standby)
    })
    .await;
    assert!(took_over, "{bin}: the standby's relay never took over");
    let takeover = killed.elapsed();

    let store = pool(&db).await;
    let stored: HashSet<String> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT event_id FROM events")
            .fetch_all(&store)
            .await
            .expect("events")
            .into_iter()
            .map(|id| id.to_string())
            .collect();
    store.close().await;
    let topic = contracts::Topics::new(prefix).events(context);
    let messages = read_topic(
        &infra.operator(),
        &topic,
        stored.len(),
        Duration::from_secs(60),
    )
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        let id = json_of(m)["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *seen.entry(id).or_default() += 1;
    }
    println!(
        "{bin}: standby active {takeover:?} after the SIGKILL; {} events stored, {} messages",
        stored.len(),
        messages.len()
    );
    let keys: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        keys, stored,
        "{bin}: the topic holds exactly the stored events"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "{bin}: an event published twice: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        takeover <= Duration::from_secs(15),
        "{bin}: took over after {takeover:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_relay_publishes_each_event_once_and_a_standby_takes_over_after_a_sigkill() {
    use contracts::topics::{ACTIVATION, DOMAIN, GRANTS, ISSUANCE};
    let infra = Infra::get();
    // Issuance on a prefix of its own: the licenses the other services
    // need come from an in-process issuance on theirs.
    let own = infra.prefix().await;
    relay_failover(&infra, &own, "issuance", ISSUANCE, Maker::Licenses).await;

    let prefix = infra.prefix().await;
    let issuance = start_issuance(&infra, &prefix).await;
    let admin = admin_client();
    let issue = |product: &'static str, feature: &'static str| {
        let (admin, iss) = (admin.clone(), issuance.url());
        async move {
            let (s, b) = call(
                &admin,
                "POST",
                &format!("{iss}/v1/licenses"),
                Some(
                    &json!({"product": product, "customer": "Relay Co", "kind": "formal",
                             "features": [feature]}),
                ),
            )
            .await;
            assert_eq!(s, 201, "{b}");
            (
                b["id"].as_str().expect("id").to_owned(),
                b["key"].as_str().expect("key").to_owned(),
            )
        }
    };
    let mut keys = Vec::new();
    let mut domains = Vec::new();
    for _ in 0..20 {
        keys.push(issue("integration-platform", "data-access").await.1);
        domains.push(issue("cloud-engine", "site-engine").await.0);
    }
    let (grants_license, _) = issue("integration-platform", "data-access").await;
    relay_failover(
        &infra,
        &prefix,
        "activation",
        ACTIVATION,
        Maker::Activations(keys),
    )
    .await;
    relay_failover(
        &infra,
        &prefix,
        "domain-binding",
        DOMAIN,
        Maker::Bindings(domains),
    )
    .await;
    relay_failover(
        &infra,
        &prefix,
        "grant-sync",
        GRANTS,
        Maker::Clients(grants_license),
    )
    .await;
    issuance.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_devices_at_two_activation_instances_get_exactly_the_ten_seats() {
    const SEATS: usize = 10;
    const DEVICES: usize = 30;
    let st = Stack::builder().with(Svc::Activation).start().await;
    let product = st.product(json!({ "max_activations": SEATS })).await;
    let license = st.license(&product, "ACME", json!({})).await;
    let config = activation_config(
        &st.infra,
        &st.service(Svc::Activation).db,
        &st.prefix,
        &signing_key_path(&st.prefix),
    );
    let other = activation::start(config, options(None))
        .await
        .expect("a second activation instance starts");
    let urls = [st.url(Svc::Activation), other.url()];
    let mut racing = tokio::task::JoinSet::new();
    for n in 0..DEVICES {
        let (url, key) = (urls[n % 2].clone(), license.key.clone());
        racing.spawn(async move {
            call(
                &admin_client(),
                "POST",
                &format!("{url}/v1/activations"),
                Some(&json!({"license_key": key, "fingerprint": machine(n as u32)})),
            )
            .await
        });
    }
    assert_eq!(
        tally(racing, "TOO_MANY_ACTIVATIONS").await,
        (SEATS, DEVICES - SEATS)
    );
    let pool = st.pool(Svc::Activation).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'DeviceActivated'"
        )
        .await,
        SEATS as i64
    );
    pool.close().await;
    other.stop().await;
    st.stop().await;
}

/// `licensectl kafka provision` for a fresh prefix on this one-broker
/// cluster: its exit status and what it printed.
fn provision(prefix: &str, extra: &[&str]) -> (bool, String) {
    let infra = Infra::get();
    let out = std::process::Command::new(bin_path("licensectl"))
        .args(["kafka", "provision", "--prefix", prefix, "--config"])
        .arg(infra.kafka_file("admin"))
        .args(extra)
        .output()
        .expect("licensectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_provision_refuses_a_replication_the_cluster_cannot_hold() {
    let infra = Infra::get();
    let prefix = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (ok, text) = provision(&prefix, &["--replication-factor", "3"]);
    assert!(!ok && text.contains("the cluster has 1"), "{text}");
    // The catalogue's one replica counts when only the minimum is given.
    let (ok, text) = provision(&prefix, &["--min-insync-replicas", "2"]);
    assert!(
        !ok && text.contains("exceeds the replication factor 1"),
        "{text}"
    );
    // Nothing was created by the refused runs.
    let events = contracts::Topics::new(&prefix).events("issuance");
    let operator = infra.operator();
    let missing = || bus::topics::unavailable(&operator, vec![events.clone()]);
    assert_eq!(missing().await.expect("metadata"), vec![events.clone()]);
    // What the cluster can hold is provisioned, and provisioned again with
    // the same replication asked for explicitly.
    let (ok, text) = provision(&prefix, &[]);
    assert!(ok, "{text}");
    assert!(missing().await.expect("metadata").is_empty());
    let (ok, text) = provision(
        &prefix,
        &["--replication-factor", "1", "--min-insync-replicas", "1"],
    );
    assert!(ok, "{text}");
}
