//! One stack of in-process services for an end-to-end test: a fresh
//! database each, one topic prefix, admin clients per service and the
//! common steps (a product of the test's own, a license that has reached
//! the services replicating it). The services' tasks belong to the test's
//! runtime, so they end with the test; `stop` ends them earlier, gracefully.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::routes::Svc;
use crate::*;

type Configure<C> = Box<dyn FnOnce(&mut C) + Send>;

/// Which services to start and how; issuance always runs.
#[derive(Default)]
pub struct StackBuilder {
    services: Vec<Svc>,
    issuance_clock: Option<Arc<ManualClock>>,
    activation_clock: Option<Arc<ManualClock>>,
    issuance: Option<Configure<issuance::Config>>,
    activation: Option<Configure<activation::Config>>,
    grants: Option<Configure<grant_sync::Config>>,
    projector: Option<Configure<projector::Config>>,
}

impl StackBuilder {
    pub fn with(mut self, svc: Svc) -> Self {
        if svc != Svc::Issuance && !self.services.contains(&svc) {
            self.services.push(svc);
        }
        self
    }

    /// Issuance's scheduler and commands read `clock`.
    pub fn issuance_clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.issuance_clock = Some(clock);
        self
    }

    /// Activation reads `clock`.
    pub fn activation_clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.activation_clock = Some(clock);
        self.with(Svc::Activation)
    }

    pub fn issuance(mut self, f: impl FnOnce(&mut issuance::Config) + Send + 'static) -> Self {
        self.issuance = Some(Box::new(f));
        self
    }

    pub fn activation(mut self, f: impl FnOnce(&mut activation::Config) + Send + 'static) -> Self {
        self.activation = Some(Box::new(f));
        self.with(Svc::Activation)
    }

    pub fn grants(mut self, f: impl FnOnce(&mut grant_sync::Config) + Send + 'static) -> Self {
        self.grants = Some(Box::new(f));
        self.with(Svc::Grants)
    }

    pub fn projector(mut self, f: impl FnOnce(&mut projector::Config) + Send + 'static) -> Self {
        self.projector = Some(Box::new(f));
        self.with(Svc::Projector)
    }

    pub async fn start(mut self) -> Stack {
        let infra = Infra::get();
        let prefix = infra.prefix().await;
        let mut services = HashMap::new();
        let db = infra.fresh_db("issuance").await;
        let mut options = issuance::Options {
            handle_signals: false,
            ..Default::default()
        };
        if let Some(c) = self.issuance_clock.take() {
            options.clock = c;
        }
        let mut config = issuance_config(&infra, &db, &prefix);
        if let Some(f) = self.issuance.take() {
            f(&mut config);
        }
        services.insert(
            Svc::Issuance,
            start_issuance_configured(config, db, options).await,
        );
        let mut stack = Stack {
            infra,
            prefix,
            admin: admin_client(),
            services,
        };
        for svc in std::mem::take(&mut self.services) {
            let started = self.start_one(&stack, svc).await;
            stack.services.insert(svc, started);
        }
        stack
    }

    async fn start_one(&mut self, stack: &Stack, svc: Svc) -> InProcess {
        let (infra, prefix) = (&stack.infra, stack.prefix.as_str());
        match svc {
            Svc::Activation => self.start_activation(stack).await,
            Svc::Grants => {
                let configure = self.grants.take().unwrap_or_else(|| Box::new(|_| {}));
                start_grant_sync_configured(infra, prefix, configure).await
            }
            Svc::Domain => start_domain_binding(infra, prefix).await,
            Svc::Projector => {
                let db = infra.fresh_db("projector").await;
                let mut config = projector_config(infra, &db, prefix);
                if let Some(f) = self.projector.take() {
                    f(&mut config);
                }
                start_projector_with(config, db).await
            }
            Svc::Issuance => start_issuance(infra, prefix).await,
        }
    }

    async fn start_activation(&mut self, stack: &Stack) -> InProcess {
        let (infra, prefix) = (&stack.infra, stack.prefix.as_str());
        let db = infra.fresh_db("activation").await;
        let mut config = activation_config(infra, &db, prefix, &signing_key_path(prefix));
        if let Some(f) = self.activation.take() {
            f(&mut config);
        }
        let mut options = activation::Options {
            handle_signals: false,
            ..Default::default()
        };
        if let Some(c) = self.activation_clock.take() {
            options.clock = c;
        }
        let running = activation::start(config, options)
            .await
            .expect("activation starts");
        InProcess { running, db }
    }
}

/// Services started on one prefix.
pub struct Stack {
    pub infra: Infra,
    pub prefix: String,
    /// Sends the bootstrap admin key.
    pub admin: reqwest::Client,
    services: HashMap<Svc, InProcess>,
}

/// A license the test issued: its id and key.
#[derive(Debug, Clone)]
pub struct License {
    pub id: String,
    pub key: String,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// Issuance and `services`, default configuration.
    pub async fn start(services: &[Svc]) -> Self {
        services
            .iter()
            .fold(Self::builder(), |b, s| b.with(*s))
            .start()
            .await
    }

    /// Starts `svc` on the stack's prefix now (a late joiner).
    pub async fn add(&mut self, svc: Svc) -> String {
        let started = StackBuilder::default().start_one(self, svc).await;
        let url = started.url();
        self.services.insert(svc, started);
        url
    }

    pub fn service(&self, svc: Svc) -> &InProcess {
        self.services
            .get(&svc)
            .unwrap_or_else(|| panic!("{svc:?} is not part of this stack"))
    }

    pub fn url(&self, svc: Svc) -> String {
        self.service(svc).url()
    }

    /// `{url of svc}{path}`.
    pub fn at(&self, svc: Svc, path: &str) -> String {
        format!("{}{path}", self.url(svc))
    }

    /// A pool on `svc`'s database (as its owner).
    pub async fn pool(&self, svc: Svc) -> PgPool {
        pool(&self.service(svc).db).await
    }

    /// Every event `svc` stored.
    pub async fn events(&self, svc: Svc) -> i64 {
        let pool = self.pool(svc).await;
        let n = count(&pool, "SELECT count(*) FROM events").await;
        pool.close().await;
        n
    }

    /// An admin request to `svc`: status and JSON body.
    pub async fn call(
        &self,
        svc: Svc,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        call(&self.admin, method, &self.at(svc, path), body).await
    }

    pub async fn get(&self, svc: Svc, path: &str) -> (u16, Value) {
        self.call(svc, "GET", path, None).await
    }

    pub async fn post(&self, svc: Svc, path: &str, body: &Value) -> (u16, Value) {
        self.call(svc, "POST", path, Some(body)).await
    }

    /// A product of the test's own (features `f1` and `f2`) under `policy`.
    pub async fn product(&self, policy: Value) -> String {
        let code = format!("p-{}", &Uuid::new_v4().simple().to_string()[..10]);
        let (s, b) = self
            .post(
                Svc::Issuance,
                "/v1/products",
                &json!({
                    "code": code, "name": "Test product",
                    "features": [{"code": "f1", "name": "F1"}, {"code": "f2", "name": "F2"}],
                    "policy": policy,
                }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        code
    }

    /// Issues `body` (answer 201 asserted).
    pub async fn issue(&self, body: &Value) -> License {
        let (s, b) = self.post(Svc::Issuance, "/v1/licenses", body).await;
        assert_eq!(s, 201, "{b}");
        License {
            id: b["id"].as_str().expect("id").to_string(),
            key: b["key"].as_str().expect("key").to_string(),
        }
    }

    /// A formal license of `product` with feature `f1` (plus `extra`
    /// fields), once activation validates it.
    pub async fn license(&self, product: &str, customer: &str, extra: Value) -> License {
        let body = json!({"product": product, "customer": customer, "kind": "formal",
                          "features": ["f1"]});
        let license = self.issue(&merged(body, extra)).await;
        self.until_activation_knows(&license.key).await;
        license
    }

    /// Waits until activation's replica answers for `key` (facts reach it
    /// over Kafka).
    pub async fn until_activation_knows(&self, key: &str) {
        let validate = self.at(Svc::Activation, "/v1/validate");
        let holder = license_client(key);
        let known = wait_until(Duration::from_secs(15), || async {
            call(&holder, "POST", &validate, Some(&json!({}))).await.0 == 200
        })
        .await;
        assert!(known, "the license reached activation");
    }

    /// Stops every service, then checks that each aggregate they
    /// snapshotted loads through its snapshot to what its whole stream
    /// folds to (every aggregate type, on the streams the test made).
    pub async fn stop(self) {
        let mut stopped = vec![];
        for (svc, s) in self.services {
            s.running.stop().await;
            stopped.push((svc, s.db));
        }
        // Once nothing appends any more: a snapshot and a replay read the
        // same stream.
        for (svc, db) in stopped {
            let pool = pool(&db).await;
            let differ = snapshot_mismatches(svc, &pool).await;
            pool.close().await;
            assert!(
                differ.is_empty(),
                "{svc:?}: snapshots differ from replays: {differ:?}"
            );
        }
    }
}

/// Aggregates of `svc` whose snapshot does not load to their replay.
pub async fn snapshot_mismatches(svc: Svc, pool: &PgPool) -> Vec<String> {
    use eventstore::snapshot_mismatches as check;
    let results = match svc {
        Svc::Issuance => vec![
            check::<issuance::domain::License>(pool).await,
            check::<issuance::domain::Product>(pool).await,
            check::<issuance::domain::ApiKey>(pool).await,
        ],
        Svc::Activation => vec![
            check::<activation::domain::Seats>(pool).await,
            check::<activation::domain::Trial>(pool).await,
        ],
        Svc::Domain => vec![check::<domain_binding::domain::Binding>(pool).await],
        Svc::Grants => vec![
            check::<grant_sync::domain::Client>(pool).await,
            check::<grant_sync::domain::Leases>(pool).await,
            check::<grant_sync::domain::Upstream>(pool).await,
            check::<grant_sync::domain::ImportedLicense>(pool).await,
        ],
        Svc::Projector => vec![],
    };
    let mut differ: Vec<String> = results
        .into_iter()
        .flat_map(|r| r.expect("snapshots readable"))
        .collect();
    differ.extend(
        check::<domain_kit::signing_key::SigningKey>(pool)
            .await
            .expect("snapshots readable"),
    );
    differ
}

/// A device's fingerprint components, distinct per `n`.
pub fn machine(n: u32) -> Value {
    json!({"machine_id": format!("m-{n}"), "disk": format!("d-{n}"), "board": format!("b-{n}"),
           "mac": format!("aa:bb:cc:00:00:{n:02x}")})
}

/// `body` with the fields of `extra` set over it.
pub fn merged(mut body: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}
