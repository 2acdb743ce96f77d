//! The validation index: every license's replica view and its live seats
//! in memory, so `POST /v1/validate` answers without touching PostgreSQL.
//!
//! It follows `license_replica` and `activations` through the
//! `activation_index` notifications (`service_kit::follow`): a committed
//! change is here one notification and one reload later (milliseconds). A
//! seat command of this instance puts its result here itself when it
//! commits (`SeatIndex::committed`), so a device validating right after
//! its activation is answered by the state that activated it. Versions
//! order the two paths: a license's view by its issuance sequence, its
//! seats by the `LicenseActivations` version, and an older reading never
//! replaces a newer one.
//!
//! While the follower is not live (starting, or its connection lost) and
//! for a license it does not hold (issued a moment ago), validation reads
//! the tables as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use contracts::license_view::LicenseView;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::validation::ByComponent;
use crate::domain::Seats;
use crate::store;

/// The channel the tables' triggers notify (migration `validation_index`).
pub const CHANNEL: &str = "activation_index";

/// What a request names a license by.
pub enum Wanted {
    Id(Uuid),
    /// A key's digest; `own` when a license credential came with it.
    Key {
        digest: String,
        own: Option<Uuid>,
    },
}

#[derive(Default)]
struct Inner {
    licenses: HashMap<Uuid, LicenseView>,
    by_key: HashMap<String, Uuid>,
    /// Live seats only, per license, and by component digest.
    seats: HashMap<Uuid, (Seats, ByComponent)>,
}

impl Inner {
    fn put_license(&mut self, view: LicenseView) {
        if self
            .licenses
            .get(&view.id)
            .is_some_and(|known| known.version > view.version)
        {
            return;
        }
        if let Some(digest) = &view.key_digest {
            self.by_key.insert(digest.clone(), view.id);
        }
        self.licenses.insert(view.id, view);
    }

    fn put_seats(&mut self, license_id: Uuid, seats: Seats) {
        if self
            .seats
            .get(&license_id)
            .is_some_and(|(known, _)| known.version > seats.version)
        {
            return;
        }
        if seats.seats.is_empty() {
            // Nothing live: only the version is worth keeping.
            let version = Seats {
                version: seats.version,
                ..Seats::default()
            };
            self.seats
                .insert(license_id, (version, ByComponent::default()));
        } else {
            let by = ByComponent::of(&seats);
            self.seats.insert(license_id, (seats, by));
        }
    }
}

#[derive(Default)]
pub struct ValidationIndex {
    inner: RwLock<Inner>,
    live: AtomicBool,
    /// Validations answered from memory, and from the tables.
    answered: AtomicU64,
    fell_back: AtomicU64,
}

impl ValidationIndex {
    /// `answer` over the license `wanted` names and its live seats; None
    /// when the index cannot answer (not live, or the license unknown to
    /// it) and the tables must. Counted as a validation.
    pub fn read<R>(
        &self,
        wanted: &Wanted,
        answer: impl FnOnce(&LicenseView, &Seats, &ByComponent) -> R,
    ) -> Option<R> {
        let answered = self.lookup(wanted, answer);
        let counter = match answered {
            Some(_) => &self.answered,
            None => &self.fell_back,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answered
    }

    /// The license `wanted` names, when the index holds it.
    pub fn license(&self, wanted: &Wanted) -> Option<LicenseView> {
        self.lookup(wanted, |license, _, _| license.clone())
    }

    fn lookup<R>(
        &self,
        wanted: &Wanted,
        answer: impl FnOnce(&LicenseView, &Seats, &ByComponent) -> R,
    ) -> Option<R> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let inner = self.inner.read().ok()?;
        let id = match wanted {
            Wanted::Id(id) => *id,
            Wanted::Key { digest, .. } => *inner.by_key.get(digest)?,
        };
        let license = inner.licenses.get(&id)?;
        let none = (Seats::default(), ByComponent::default());
        let (seats, by) = inner.seats.get(&id).unwrap_or(&none);
        Some(answer(license, seats, by))
    }

    /// The state a command of this instance committed.
    pub fn committed(&self, seats: &Seats) {
        let Some(license_id) = seats.license_id else {
            return;
        };
        let live = Seats {
            license_id: Some(license_id),
            seats: seats.live().map(|s| (s.activation_id, s.clone())).collect(),
            version: seats.version,
            ..Seats::default()
        };
        if let Ok(mut inner) = self.inner.write() {
            inner.put_seats(license_id, live);
        }
    }

    /// Reads `ids`' rows and keeps what is newer; with None, reads every
    /// row and replaces the whole index (a change a racing command put in
    /// meanwhile comes back with its notification).
    pub async fn reload(&self, pool: &PgPool, ids: Option<&[Uuid]>) -> Result<(), sqlx::Error> {
        let rows = store::index_rows(pool, ids).await?;
        let mut seats: HashMap<Uuid, Seats> = rows
            .versions
            .into_iter()
            .map(|(id, version)| {
                let s = Seats {
                    license_id: Some(id),
                    version,
                    ..Seats::default()
                };
                (id, s)
            })
            .collect();
        for seat in rows.live {
            if let Some(s) = seats.get_mut(&seat.license_id) {
                s.seats.insert(seat.activation_id, seat);
            }
        }
        let mut inner = self.inner.write().map_err(|_| sqlx::Error::PoolClosed)?;
        match ids {
            None => *inner = Inner::default(),
            // A view that no longer reads is no answer (the tables say
            // NOT_FOUND for it too).
            Some(ids) => {
                let read: std::collections::HashSet<Uuid> =
                    rows.licenses.iter().map(|v| v.id).collect();
                for id in ids.iter().filter(|id| !read.contains(id)) {
                    inner.licenses.remove(id);
                }
            }
        }
        for view in rows.licenses {
            inner.put_license(view);
        }
        for (id, s) in seats {
            inner.put_seats(id, s);
        }
        Ok(())
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
    }
}

/// The index with its pool, as `service_kit::follow` drives it.
pub struct Followed {
    pub index: std::sync::Arc<ValidationIndex>,
    pub pool: PgPool,
}

#[async_trait::async_trait]
impl service_kit::follow::Follower for Followed {
    async fn reload(&self, keys: Option<Vec<String>>) -> Result<(), sqlx::Error> {
        match keys {
            None => self.index.reload(&self.pool, None).await,
            Some(keys) => {
                // Payloads come from this database's own triggers; anything
                // else on the channel is skipped.
                let ids: Vec<Uuid> = keys.iter().filter_map(|k| k.parse().ok()).collect();
                self.index.reload(&self.pool, Some(&ids)).await
            }
        }
    }

    fn set_live(&self, live: bool) {
        self.index.set_live(live);
    }
}

/// Copies the index's counters into the service's metrics every second
/// (atomics on the request path, the registry's lock off it).
pub async fn export(
    index: std::sync::Arc<ValidationIndex>,
    metrics: service_kit::Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    const ANSWERS: &str = "validations_total";
    metrics.describe(
        ANSWERS,
        "Validations answered, by where the answer came from.",
    );
    metrics.describe(
        "validation_index_live",
        "1 while the validation index is followed.",
    );
    let mut seen = (0, 0);
    loop {
        let now = (
            index.answered.load(Ordering::Relaxed),
            index.fell_back.load(Ordering::Relaxed),
        );
        metrics.inc_counter(ANSWERS, &[("source", "index")], now.0 - seen.0);
        metrics.inc_counter(ANSWERS, &[("source", "tables")], now.1 - seen.1);
        metrics.set_gauge("validation_index_live", &[], i64::from(index.is_live()));
        seen = now;
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
