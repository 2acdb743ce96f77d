//! Test harness: the Postgres server and Kafka broker that `make test`
//! started (reused, never mocked), a fresh database and a unique topic
//! prefix per test, services in-process on port 0 or as killable processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use contracts::CommandEnvelope;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use service_kit::platform::Running;
use service_kit::CommonConfig;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub mod routes;
pub mod stack;

pub use stack::{machine, merged, License, Stack};

/// The bootstrap admin key every test service is configured with.
pub const ADMIN_TOKEN: &str = "AKIDtestadmin.0123456789abcdef0123456789abcdef";
/// The license-key secret of test issuance services.
pub const KEY_SECRET: &str = "test-license-key-secret-0123456789abcdef";

/// An HTTP client that sends the admin key on every request.
pub fn admin_client() -> reqwest::Client {
    client_with(ADMIN_TOKEN)
}

/// A client with `token`, trusting the tests' CA (services a test serves
/// over HTTPS have certificates from [`test_ca`]).
pub fn client_with(token: &str) -> reqwest::Client {
    client_authorized(&format!("Bearer {token}"))
}

/// An installed product's client: `Authorization: License <key>`.
pub fn license_client(key: &str) -> reqwest::Client {
    client_authorized(&format!("License {key}"))
}

/// A client sending `Authorization: <value>` on every request.
pub fn client_authorized(value: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        value.parse().expect("header value"),
    );
    let pem = std::fs::read(&test_ca().ca_file).expect("CA file");
    reqwest::Client::builder()
        .default_headers(headers)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The CA of the certificates tests serve HTTPS with (one per test process).
pub fn test_ca() -> &'static TestCa {
    static CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| TestCa::new("e2e"))
}

/// Loads the seed catalog (`infra/seed/*.json`) into an issuance service.
pub async fn seed_products(issuance_url: &str) {
    let client = admin_client();
    for name in ["integration-platform", "cloud-engine"] {
        let body = std::fs::read_to_string(repo_root().join(format!("infra/seed/{name}.json")))
            .expect("seed file");
        let res = client
            .post(format!("{issuance_url}/v1/products"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("seed request");
        assert!(
            res.status().is_success() || res.status() == reqwest::StatusCode::CONFLICT,
            "seeding {name}: {}",
            res.status()
        );
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Where the project's own infra scripts put Postgres and Kafka.
#[derive(Debug, Clone)]
pub struct Infra {
    pub pg_base: String,
    pub brokers: String,
    /// The librdkafka properties of each principal (`<role>.properties`),
    /// written by `infra/kafka/up.sh`.
    pub kafka_clients: PathBuf,
    /// Passwords of the database owner and the services' login roles
    /// (`.run/pg-roles.env`, written by `infra/postgres/up.sh`).
    pub pg_roles: HashMap<String, String>,
}

impl Infra {
    /// From `LICENSING_DATABASE_BASE_URL` / `LICENSING_KAFKA_BROKERS` /
    /// `LICENSING_KAFKA_CLIENTS`, else from `.run/infra.env` written by
    /// `infra/up.sh`.
    pub fn get() -> Self {
        let mut vars: HashMap<String, String> = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(repo_root().join(".run/infra.env")) {
            for line in text.lines() {
                let line = line.trim().trim_start_matches("export ");
                if let Some((k, v)) = line.split_once('=') {
                    vars.insert(k.to_string(), v.trim_matches(['"', '\'']).to_string());
                }
            }
        }
        let pick = |k: &str, default: &str| {
            std::env::var(k)
                .ok()
                .or_else(|| vars.get(k).cloned())
                .unwrap_or_else(|| default.to_string())
        };
        Self {
            pg_base: pick(
                "LICENSING_DATABASE_BASE_URL",
                "postgres://licensing:licensing@127.0.0.1:5432",
            ),
            brokers: pick("LICENSING_KAFKA_BROKERS", "127.0.0.1:9092"),
            kafka_clients: PathBuf::from(pick(
                "LICENSING_KAFKA_CLIENTS",
                &repo_root().join(".run/kafka/clients").display().to_string(),
            )),
            pg_roles: std::fs::read_to_string(pick(
                "LICENSING_PG_ROLES_FILE",
                &repo_root().join(".run/pg-roles.env").display().to_string(),
            ))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    /// `db` (a URL of the administrator's) as `role` sees it.
    pub fn as_role(&self, role: &str, db: &str) -> String {
        let password = self
            .pg_roles
            .get(role)
            .unwrap_or_else(|| panic!("no password for {role} (run `make infra-up`)"));
        let host_and_db = db.rsplit_once('@').map_or(db, |(_, rest)| rest);
        format!("postgres://{role}:{password}@{host_and_db}")
    }

    /// The login role a service serves as.
    pub fn service_role(service: &str) -> String {
        format!("licensing_{}", service.replace('-', "_"))
    }

    /// The database URL `service` serves with (its own role) and the one it
    /// migrates with (the owner's).
    pub fn service_db(&self, service: &str, db: &str) -> (String, String) {
        (
            self.as_role(&Self::service_role(service), db),
            self.as_role("licensing_owner", db),
        )
    }

    /// The properties file of a principal (`issuance`, `operator`, `admin`, ...).
    pub fn kafka_file(&self, role: &str) -> PathBuf {
        self.kafka_clients.join(format!("{role}.properties"))
    }

    /// The client settings of a principal.
    pub fn kafka(&self, role: &str) -> bus::Kafka {
        bus::Kafka::default()
            .with_file(&self.kafka_file(role))
            .expect("Kafka credentials (run `make infra-up`)")
    }

    /// Reads every topic.
    pub fn operator(&self) -> bus::Kafka {
        self.kafka("operator")
    }

    /// Another team's service: sends non-admin commands.
    pub fn caller(&self) -> bus::Kafka {
        self.kafka("caller")
    }

    /// A topic prefix no other test uses, provisioned (topics and ACLs) as
    /// `licensectl kafka provision` does it.
    pub async fn prefix(&self) -> String {
        self.prefix_with_partitions(3).await
    }

    /// As [`Infra::prefix`], its topics with `partitions` partitions.
    pub async fn prefix_with_partitions(&self, partitions: i32) -> String {
        let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        self.provision_with(&prefix, &prefix, partitions).await;
        prefix
    }

    /// Provisions `prefix` with consumer groups under `group_prefix` (a
    /// second read side over the same topics has groups of its own).
    pub async fn provision(&self, prefix: &str, group_prefix: &str) {
        self.provision_with(prefix, group_prefix, 3).await;
    }

    async fn provision_with(&self, prefix: &str, group_prefix: &str, partitions: i32) {
        let mut d = bus::Deployment::new(contracts::Topics::new(prefix));
        d.partitions = Some(partitions);
        d.group_prefix = group_prefix.to_string();
        bus::provision(&self.kafka("admin"), &d)
            .await
            .expect("provision the test prefix");
    }

    /// A new, empty database; its name carries `tag` for debugging.
    pub async fn fresh_db(&self, tag: &str) -> String {
        let name = format!("t_{}_{}", tag.replace('-', "_"), Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{}/postgres", self.pg_base))
            .await
            .expect("connect to the test Postgres (run `make infra-up`)");
        sqlx::query(&format!("CREATE DATABASE {name} OWNER licensing_owner"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        format!("{}/{name}", self.pg_base)
    }

    /// The configuration of `service`, serving as its own database role
    /// (migrating as the owner) and its own Kafka principal.
    pub fn config(&self, service: &str, database_url: &str, prefix: &str) -> CommonConfig {
        let (serving, owner) = self.service_db(service, database_url);
        serde_json::from_value(serde_json::json!({
            "database_url": serving,
            "database_migration_url": owner,
            // Every service signs (checkpoints at least): a key of its own.
            "signing_key_file": signing_key_path(prefix),
            "signing_key_generate": true,
            "checkpoint_interval_ms": 1000,
            "kafka_brokers": self.brokers,
            "kafka_properties_file": self.kafka_file(service),
            "topic_prefix": prefix,
            "topic_partitions": 3,
            "log_format": "pretty",
            "db_pool_size": 16,
            // Every other command stores a snapshot, so the suite's
            // commands load aggregates through snapshots (and through the
            // events after one); `Stack::stop` checks them against replays.
            "snapshot_every": 2,
            "admin_key": ADMIN_TOKEN,
        }))
        .expect("valid config")
    }
}

pub async fn pool(url: &str) -> PgPool {
    PgPool::connect(url).await.expect("connect")
}

pub struct InProcess {
    pub running: Running,
    pub db: String,
}

impl InProcess {
    pub fn url(&self) -> String {
        self.running.url()
    }
}

pub async fn start_issuance(infra: &Infra, prefix: &str) -> InProcess {
    let db = infra.fresh_db("issuance").await;
    start_issuance_with(
        infra,
        prefix,
        db,
        issuance::Options {
            handle_signals: false,
            ..Default::default()
        },
    )
    .await
}

pub fn issuance_config(infra: &Infra, db: &str, prefix: &str) -> issuance::Config {
    issuance::Config {
        common: infra.config("issuance", db, prefix),
        license_key_secret: KEY_SECRET.into(),
        scheduler_interval_ms: 100,
    }
}

/// Issuance with the seed catalog loaded.
/// Issuance on a fresh database whose scheduler runs on `clock`.
pub async fn start_issuance_on(
    infra: &Infra,
    prefix: &str,
    clock: std::sync::Arc<ManualClock>,
) -> InProcess {
    let db = infra.fresh_db("issuance").await;
    let options = issuance::Options {
        handle_signals: false,
        clock,
    };
    start_issuance_with(infra, prefix, db, options).await
}

pub async fn start_issuance_with(
    infra: &Infra,
    prefix: &str,
    db: String,
    options: issuance::Options,
) -> InProcess {
    start_issuance_configured(issuance_config(infra, &db, prefix), db, options).await
}

pub async fn start_issuance_configured(
    config: issuance::Config,
    db: String,
    options: issuance::Options,
) -> InProcess {
    let running = issuance::start(config, options)
        .await
        .expect("issuance starts");
    seed_products(&running.url()).await;
    InProcess { running, db }
}

/// A signing key file of its own for each test (generated on first start).
pub fn signing_key_path(prefix: &str) -> String {
    std::env::temp_dir()
        .join(format!("{prefix}-{}-signing.pem", Uuid::new_v4().simple()))
        .display()
        .to_string()
}

pub fn activation_config(
    infra: &Infra,
    db: &str,
    prefix: &str,
    key_file: &str,
) -> activation::Config {
    let mut common = infra.config("activation", db, prefix);
    common.signing_key_file = Some(key_file.into());
    activation::Config {
        common,
        clock_tolerance_secs: 600,
        trial_wait_ms: 15_000,
        issuer: "licensing.activation".into(),
    }
}

pub async fn start_activation(infra: &Infra, prefix: &str) -> InProcess {
    let db = infra.fresh_db("activation").await;
    let config = activation_config(infra, &db, prefix, &signing_key_path(prefix));
    let running = activation::start(
        config,
        activation::Options {
            handle_signals: false,
            ..Default::default()
        },
    )
    .await
    .expect("activation starts");
    InProcess { running, db }
}

pub fn domain_config(infra: &Infra, db: &str, prefix: &str) -> domain_binding::Config {
    domain_binding::Config {
        common: infra.config("domain-binding", db, prefix),
        cache_refresh_ms: 100,
        license_query_rate: 5,
        license_query_burst: 10,
    }
}

pub async fn start_domain_binding(infra: &Infra, prefix: &str) -> InProcess {
    let db = infra.fresh_db("domain").await;
    let running = domain_binding::start(
        domain_config(infra, &db, prefix),
        domain_binding::Options {
            handle_signals: false,
            ..Default::default()
        },
    )
    .await
    .expect("domain binding starts");
    InProcess { running, db }
}

pub async fn start_projector(infra: &Infra, prefix: &str) -> InProcess {
    start_projector_on(infra, prefix, infra.fresh_db("projector").await).await
}

pub fn projector_config(infra: &Infra, db: &str, prefix: &str) -> projector::Config {
    projector::Config {
        common: infra.config("projector", db, prefix),
        issuer: "licensing-projector".into(),
        models: None,
        clock_tolerance_secs: 600,
        // Windows of many chunks in every rebuild of the suite: each
        // state written once per window, not once per chunk.
        rebuild_batch: 100,
        rebuild_cached_states: 250_000,
        rebuild_window: 250_000,
        export_timeout_secs: 600,
        // Every as-of answer of the suite folds through snapshots.
        as_of_snapshot_every: 2,
        as_of_snapshot_min_age_secs: 0,
    }
}

pub async fn start_projector_on(infra: &Infra, prefix: &str, db: String) -> InProcess {
    start_projector_with(projector_config(infra, &db, prefix), db).await
}

pub async fn start_projector_with(config: projector::Config, db: String) -> InProcess {
    let running = projector::start(config, false)
        .await
        .expect("projector starts");
    InProcess { running, db }
}

/// A service binary run as a process, so that a test can SIGKILL it.
pub struct ServiceProcess {
    child: Child,
    pub url: String,
    pub port: u16,
}

pub fn bin_path(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    target.join("debug").join(name)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl ServiceProcess {
    pub async fn spawn(bin: &str, infra: &Infra, db: &str, prefix: &str, port: u16) -> Self {
        Self::spawn_with(bin, infra, db, prefix, port, &[]).await
    }

    /// As `spawn`, with extra environment variables (configuration).
    pub async fn spawn_with(
        bin: &str,
        infra: &Infra,
        db: &str,
        prefix: &str,
        port: u16,
        env: &[(&str, &str)],
    ) -> Self {
        let path = bin_path(bin);
        assert!(
            path.exists(),
            "{} missing: `make test` builds the binaries first",
            path.display()
        );
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("{prefix}-{bin}-{port}.log")))
                .expect("log file");
        let (serving, owner) = infra.service_db(bin, db);
        let child = Command::new(path)
            .env("LICENSING_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LICENSING_DATABASE_URL", serving)
            .env("LICENSING_DATABASE_MIGRATION_URL", owner)
            .env("LICENSING_KAFKA_BROKERS", &infra.brokers)
            .env("LICENSING_KAFKA_PROPERTIES_FILE", infra.kafka_file(bin))
            .env("LICENSING_TOPIC_PREFIX", prefix)
            .env("LICENSING_TOPIC_PARTITIONS", "3")
            .env("LICENSING_DB_POOL_SIZE", "40")
            .env("LICENSING_CONFIG_DIR", "/nonexistent")
            .env("LICENSING_ADMIN_KEY", ADMIN_TOKEN)
            .env("LICENSING_LICENSE_KEY_SECRET", KEY_SECRET)
            .env(
                "LICENSING_SIGNING_KEY_FILE",
                std::env::temp_dir().join(format!("{prefix}-signing.pem")),
            )
            .env("LICENSING_SIGNING_KEY_GENERATE", "true")
            .env(
                "LICENSING_UPSTREAM_SECRET_KEY_FILE",
                std::env::temp_dir().join(format!("{prefix}-upstream-secret.key")),
            )
            .env("LICENSING_UPSTREAM_SECRET_KEY_GENERATE", "true")
            .env("RUST_LOG", "info,sqlx=warn,actix_web=warn")
            .envs(env.iter().copied())
            .stdout(
                log.try_clone()
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .stderr(log)
            .spawn()
            .expect("spawn service");
        let url = format!("http://127.0.0.1:{port}");
        let ready = becomes_ready(&url, Duration::from_secs(90)).await;
        let mut spawned = Self { child, url, port };
        if !ready {
            // Killed here: a process left running would load the machine
            // for the rest of the suite.
            spawned.kill();
            panic!("{bin} did not become ready");
        }
        spawned
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The one polling helper of the suite: calls `attempt` every 50 ms until
/// `done` holds for its answer or `timeout` passes, and returns the last
/// answer either way, so the caller's assertion shows what was seen.
pub async fn eventually<T, F, Fut>(
    timeout: Duration,
    mut attempt: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let answer = attempt().await;
        if done(&answer) || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it holds or `timeout` passes.
/// Whether `url`'s `/readyz` answers 200 within `timeout`. A service's
/// first probes run after it binds its port, and on a loaded machine one
/// may time out once before it counts (see `service_kit::health`).
pub async fn becomes_ready(url: &str, timeout: Duration) -> bool {
    let client = reqwest::Client::new();
    wait_until(timeout, || async {
        client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await
}

pub async fn wait_until<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(timeout, check, |ok| *ok).await
}

pub async fn send_command(kafka: &bus::Kafka, topic: &str, env: &CommandEnvelope) {
    let producer: FutureProducer = kafka.client().create().expect("producer");
    send_raw(
        &producer,
        topic,
        &env.aggregate_id,
        &serde_json::to_vec(env).expect("json"),
    )
    .await;
}

pub async fn send_raw(producer: &FutureProducer, topic: &str, key: &str, body: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(body),
            Duration::from_secs(10),
        )
        .await
        .expect("message sent");
}

/// A message's header as text (a dead letter's `dlq_consumer`, `dlq_reason`).
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).to_string())
}

/// Every committed message of `topic` (all partitions, from the beginning),
/// read until at least `min` arrived and every partition hit its end, or
/// until `timeout`.
pub async fn read_topic(
    kafka: &bus::Kafka,
    topic: &str,
    min: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let kafka = kafka.clone();
    let topic = topic.to_string();
    // The operator's groups: `<prefix>.operator.*`.
    let prefix = topic.split('.').next().unwrap_or_default().to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<bus::Quiet> = kafka
            .client()
            .set(
                "group.id",
                format!("{prefix}.operator.reader-{}", Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create_with_context(bus::Quiet)
            .expect("consumer");
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = md.topics()[0].partitions().len();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p as i32, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let mut at_end = std::collections::HashSet::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    at_end.remove(&m.partition());
                    out.push(m.detach());
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(_)) | None => {}
            }
            if out.len() >= min && at_end.len() == partitions {
                break;
            }
        }
        out
    })
    .await
    .expect("reader thread")
}

pub fn json_of(m: &OwnedMessage) -> serde_json::Value {
    m.payload()
        .and_then(|p| serde_json::from_slice(p).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Runs `statements` as the administrator through the explicit
/// maintenance path that lets history be rewritten (what an attacker with
/// superuser rights can do).
pub async fn rewrite_history(admin: &PgPool, statements: &[&str]) {
    let mut tx = admin.begin().await.expect("begin");
    sqlx::query("SET LOCAL licensing.maintenance = 'rewrite-history'")
        .execute(&mut *tx)
        .await
        .expect("maintenance path");
    for sql in statements {
        sqlx::query(sql).execute(&mut *tx).await.expect("rewrite");
    }
    tx.commit().await.expect("commit");
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count query")
}

/// A clock the test moves by hand (the scheduler and the domain read it).
pub struct ManualClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl ManualClock {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::Mutex::new(chrono::Utc::now())))
    }

    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
}

impl issuance::domain::Clock for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| chrono::Utc::now())
    }
}

/// GET/POST/PUT/DELETE with an optional JSON body; the status and body.
pub async fn call(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The claims of a compact JWS (not verified).
pub fn claims(jws: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jws.split('.').nth(1).expect("payload part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json claims")
}

/// Alters one base64url character so the decoded bytes change too.
/// Flipping the lowest bits of a segment's last character may touch only
/// its padding bits, which lenient decoders (Python's among them) ignore,
/// so the top bit of the character's six is flipped instead.
pub fn altered_b64url(c: u8) -> u8 {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let i = ALPHABET
        .iter()
        .position(|a| *a == c)
        .expect("a base64url character");
    ALPHABET[i ^ 32]
}

/// Runs the Python JOSE verifier (jwcrypto) on a compact JWS against a
/// JWKS; the payload when it verifies. With `check_time`, it is read as a
/// JWT whose `exp` and `nbf` must hold now (no leeway).
pub fn python_verify(
    jwks: &serde_json::Value,
    check_time: bool,
    jws: &str,
) -> Option<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("jose-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (k, t) = (dir.join("jwks.json"), dir.join("file.jws"));
    std::fs::write(&k, jwks.to_string()).expect("write jwks");
    std::fs::write(&t, jws).expect("write jws");
    let script = repo_root().join("tests/python/verify_jws.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(&k).arg(&t);
    if check_time {
        cmd.arg("--check-time");
    }
    let out = cmd
        .output()
        .expect("python3 runs (make test installs jwcrypto)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "jwcrypto missing: run `make python-deps`: {stderr}"
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("payload json"))
}

pub fn grant_sync_config(
    infra: &Infra,
    db: &str,
    prefix: &str,
    key_file: &str,
) -> grant_sync::Config {
    let mut common = infra.config("grant-sync", db, prefix);
    common.signing_key_file = Some(key_file.into());
    grant_sync::Config {
        common,
        issuer: "licensing.grant-sync".into(),
        clock_tolerance_secs: 600,
        sync_wait_ms: 10_000,
        sync_max_wait_ms: 30_000,
        scheduler_interval_ms: 100,
        heartbeat_batch_max: 512,
        upstream_timeout_ms: 5_000,
        upstream_ca_file: None,
        upstream_allowed_networks: vec![],
        upstream_secret_key_file: Some(upstream_secret_key_path(prefix)),
        upstream_secret_key_generate: true,
    }
}

/// An upstream secret key file of its own for each grant sync a test
/// configures (generated on first start).
pub fn upstream_secret_key_path(prefix: &str) -> String {
    std::env::temp_dir()
        .join(format!(
            "{prefix}-{}-upstream-secret.key",
            Uuid::new_v4().simple()
        ))
        .display()
        .to_string()
}

pub async fn start_grant_sync(infra: &Infra, prefix: &str) -> InProcess {
    start_grant_sync_with(
        infra,
        prefix,
        grant_sync::Options {
            handle_signals: false,
            ..Default::default()
        },
    )
    .await
}

/// Grant sync with its configuration adjusted by `adjust`.
pub async fn start_grant_sync_configured(
    infra: &Infra,
    prefix: &str,
    adjust: impl FnOnce(&mut grant_sync::Config),
) -> InProcess {
    let db = infra.fresh_db("grants").await;
    let mut config = grant_sync_config(infra, &db, prefix, &signing_key_path(prefix));
    adjust(&mut config);
    let options = grant_sync::Options {
        handle_signals: false,
        ..Default::default()
    };
    let running = grant_sync::start(config, options)
        .await
        .expect("grant-sync starts");
    InProcess { running, db }
}

pub async fn start_grant_sync_with(
    infra: &Infra,
    prefix: &str,
    options: grant_sync::Options,
) -> InProcess {
    let db = infra.fresh_db("grants").await;
    let config = grant_sync_config(infra, &db, prefix, &signing_key_path(prefix));
    let running = grant_sync::start(config, options)
        .await
        .expect("grant-sync starts");
    InProcess { running, db }
}

/// How many `event_type` events the database `db` stored.
pub async fn stored_events(db: &str, event_type: &str) -> i64 {
    let pool = pool(db).await;
    let n = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    n
}

/// How a race for a limited resource ended: the requests answered 201
/// and those refused 409 with `refusal`; any other answer fails the test.
pub async fn tally(
    mut racing: tokio::task::JoinSet<(u16, serde_json::Value)>,
    refusal: &str,
) -> (usize, usize) {
    let (mut granted, mut refused) = (0, 0);
    while let Some(r) = racing.join_next().await {
        let (s, b) = r.expect("task");
        match s {
            201 => granted += 1,
            409 if b["code"] == refusal => refused += 1,
            other => panic!("unexpected {other}: {b}"),
        }
    }
    (granted, refused)
}

/// Waits until `sql` (a `count(*)`) answers `want`.
pub async fn wait_for_count(pool: &PgPool, sql: &str, want: i64, timeout: Duration) -> bool {
    wait_until(timeout, || async { count(pool, sql).await == want }).await
}

/// How many of `messages` carry an event envelope of `event_type`.
pub fn events_of_type(messages: &[OwnedMessage], event_type: &str) -> usize {
    messages
        .iter()
        .filter(|m| json_of(m)["event_type"] == event_type)
        .count()
}

/// Every log of `bin` run as a [`ServiceProcess`] under `prefix`, joined.
pub fn service_logs(prefix: &str, bin: &str) -> String {
    let start = format!("{prefix}-{bin}-");
    std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with(&start) && name.ends_with(".log")
        })
        .map(|e| std::fs::read_to_string(e.path()).expect("service log"))
        .collect()
}

/// Fails when any line of the signing key that service processes under
/// `prefix` generated appears in `log`.
pub fn assert_signing_key_not_in(log: &str, prefix: &str) {
    let pem = std::fs::read_to_string(std::env::temp_dir().join(format!("{prefix}-signing.pem")))
        .expect("the generated key file");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !log.contains(line),
            "a line of the private key is in the log"
        );
    }
    assert!(!log.contains("PRIVATE KEY"));
}

/// Waits until every one of `urls` answers 200 (facts replicated over
/// Kafka arrive on several partitions, in no order).
pub async fn wait_all_found(client: &reqwest::Client, urls: &[String], timeout: Duration) -> bool {
    wait_until(timeout, || async {
        for url in urls {
            if call(client, "GET", url, None).await.0 != 200 {
                return false;
            }
        }
        true
    })
    .await
}

/// A certificate authority made for one test, and certificates it signs
/// for 127.0.0.1 / localhost (PEM files in a temporary folder).
pub struct TestCa {
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ca-{name}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, issuer.pem()).expect("write CA");
        Self {
            dir,
            ca_file,
            issuer,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost: (cert, key) files.
    pub fn server(&self, name: &str) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c.display().to_string(), k.display().to_string())
    }
}

/// Sends `env` on `topic` as `sender` and waits for a new outcome of its id.
pub async fn send_and_await(
    infra: &Infra,
    prefix: &str,
    sender: &bus::Kafka,
    topic: &str,
    env: &CommandEnvelope,
) -> contracts::CommandOutcome {
    let before = outcomes_of(infra, prefix, env.command_id).await.len();
    send_command(sender, topic, env).await;
    for _ in 0..60 {
        let found = outcomes_of(infra, prefix, env.command_id).await;
        if found.len() > before {
            return found.into_iter().last().expect("outcome");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no outcome for {} {}", env.command_type, env.command_id);
}

/// Every outcome published for a command id, in order.
pub async fn outcomes_of(infra: &Infra, prefix: &str, id: Uuid) -> Vec<contracts::CommandOutcome> {
    read_topic(
        &infra.operator(),
        &contracts::Topics::new(prefix).outcomes(),
        0,
        Duration::from_secs(10),
    )
    .await
    .iter()
    .filter_map(|m| serde_json::from_value::<contracts::CommandOutcome>(json_of(m)).ok())
    .filter(|o| o.command_id == id)
    .collect()
}

pub fn envelope(
    id: Uuid,
    command_type: &str,
    aggregate: &str,
    payload: serde_json::Value,
) -> CommandEnvelope {
    CommandEnvelope {
        command_id: id,
        command_type: command_type.into(),
        aggregate_id: aggregate.into(),
        issued_at: chrono::Utc::now(),
        actor: contracts::Actor::new(contracts::ActorKind::Service, "orders"),
        correlation_id: format!("cmd-{}", id.simple()),
        causation_id: None,
        payload,
    }
}
