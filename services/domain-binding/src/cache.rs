//! The host-check cache: every license's status, expiry and bound domain in
//! memory, so `GET /v1/domain-check` and the public license query answer
//! without touching Postgres.
//!
//! It follows `license_replica.rev` and `bindings.rev`, which rise on every
//! change. A transaction can commit a lower `rev` after a higher one is
//! seen, so each poll re-reads an overlap window below the highest `rev`
//! seen (upserts are idempotent), and a full reload runs every minute as a
//! backstop. A command of this instance refreshes its license at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use contracts::license_view::LicenseView;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::check::Entry;
use crate::store;

/// Revisions re-read below the highest seen, for late commits.
const OVERLAP: i64 = 1_000;
const FULL_RELOAD: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Inner {
    by_id: HashMap<Uuid, Entry>,
    by_key: HashMap<String, Uuid>,
    by_domain: HashMap<String, BTreeSet<Uuid>>,
    license_rev: i64,
    binding_rev: i64,
}

impl Inner {
    fn set_domain(&mut self, id: Uuid, domain: Option<String>) {
        let Some(e) = self.by_id.get_mut(&id) else {
            return;
        };
        if e.domain == domain {
            return;
        }
        if let Some(old) = e.domain.take() {
            if let Some(set) = self.by_domain.get_mut(&old) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_domain.remove(&old);
                }
            }
        }
        if let Some(new) = &domain {
            self.by_domain.entry(new.clone()).or_default().insert(id);
        }
        e.domain = domain;
    }

    fn upsert_license(&mut self, key_digest: Option<String>, v: LicenseView) {
        let domain = self.by_id.get(&v.id).and_then(|e| e.domain.clone());
        if let Some(k) = key_digest {
            self.by_key.insert(k, v.id);
        }
        self.by_id.insert(
            v.id,
            Entry {
                license_id: v.id,
                product: v.product,
                edition: v.edition,
                status: v.status,
                expires_at: v.expires_at,
                domain: None,
            },
        );
        self.set_domain(v.id, domain);
    }
}

pub struct Cache {
    pool: PgPool,
    inner: RwLock<Inner>,
    /// Bindings seen before their license: applied when it arrives.
    pending: RwLock<HashMap<Uuid, Option<String>>>,
    last_full: RwLock<Option<Instant>>,
}

/// A live license of a domain, as the public query shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PublicLicense {
    pub product: String,
    #[schema(required = true)]
    pub edition: Option<String>,
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl Cache {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            inner: RwLock::new(Inner::default()),
            pending: RwLock::new(HashMap::new()),
            last_full: RwLock::new(None),
        }
    }

    /// The entry of a license by id (a product's own, named by its
    /// credential).
    pub fn by_id(&self, id: Uuid) -> Option<Entry> {
        let inner = self.inner.read().ok()?;
        inner.by_id.get(&id).cloned()
    }

    pub fn by_key(&self, key_digest: &str) -> Option<Entry> {
        let inner = self.inner.read().ok()?;
        let id = inner.by_key.get(key_digest)?;
        inner.by_id.get(id).cloned()
    }

    pub fn live_licenses_of(&self, domain: &str, now: DateTime<Utc>) -> Vec<PublicLicense> {
        let Ok(inner) = self.inner.read() else {
            return vec![];
        };
        inner
            .by_domain
            .get(domain)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.by_id.get(id))
            .filter(|e| e.live(now))
            .map(|e| PublicLicense {
                product: e.product.clone(),
                edition: e.edition.clone(),
                expires_at: e.expires_at,
            })
            .collect()
    }

    /// Reads what changed (everything, on the first call and every minute).
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let full = self
            .last_full
            .read()
            .map(|t| t.is_none_or(|t| t.elapsed() >= FULL_RELOAD))
            .unwrap_or(true);
        let (lrev, brev) = match (full, self.inner.read()) {
            (false, Ok(i)) => (i.license_rev - OVERLAP, i.binding_rev - OVERLAP),
            _ => (i64::MIN, i64::MIN),
        };
        let licenses = store::licenses_since(&self.pool, lrev).await?;
        let bindings = store::bindings_since(&self.pool, brev).await?;
        let mut pending = self.pending.write().map_err(|_| sqlx::Error::PoolClosed)?;
        let mut inner = self.inner.write().map_err(|_| sqlx::Error::PoolClosed)?;
        for r in licenses {
            let Ok(view) = serde_json::from_value::<LicenseView>(r.view) else {
                continue;
            };
            let id = view.id;
            inner.upsert_license(r.key_digest, view);
            if let Some(domain) = pending.remove(&id) {
                inner.set_domain(id, domain);
            }
            inner.license_rev = inner.license_rev.max(r.rev);
        }
        for r in bindings {
            let id = r.license_id;
            let released = r.released;
            let domain = r.domain.filter(|_| !released);
            if inner.by_id.contains_key(&id) {
                inner.set_domain(id, domain);
            } else {
                pending.insert(id, domain);
            }
            inner.binding_rev = inner.binding_rev.max(r.rev);
        }
        if full {
            if let Ok(mut t) = self.last_full.write() {
                *t = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Sets a license's binding right after this instance changed it.
    pub fn set_domain(&self, license_id: Uuid, domain: Option<String>) {
        // Same lock order as `refresh`: pending, then inner.
        let (Ok(mut pending), Ok(mut inner)) = (self.pending.write(), self.inner.write()) else {
            return;
        };
        if inner.by_id.contains_key(&license_id) {
            inner.set_domain(license_id, domain);
        } else {
            pending.insert(license_id, domain);
        }
    }
}

/// Polls until shutdown.
pub async fn run(
    cache: std::sync::Arc<Cache>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = cache.refresh().await {
            bus::outage::warn("host-check cache refresh", &e);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
