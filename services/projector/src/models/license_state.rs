//! `license_state`: one row per license, the fold of every context's events
//! about it (domain::LicenseState), its activations one row each in
//! `license_activations`. A batch touches each license once: its row locked
//! and read with the activations its events name, its events folded, the
//! changed states and those activations written back (`store::licenses`).
//! A rebuild's replay keeps its states in memory across chunks instead of
//! reading them back each chunk, and writes each state it changed once per
//! window of chunks (`TxHandler::flush`) rather than once per chunk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bus::HandleError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Decoded, ReadModel};
use crate::domain::state::activations_of;
use crate::domain::LicenseState;
use crate::store::licenses::{self as store, Updates};

pub struct LicenseStates {
    /// A rebuild's states across its chunks (None live: lanes of several
    /// topics write the same rows, so each batch reads them under lock).
    cache: Option<Mutex<Cache>>,
    /// Most states the cache keeps; past it they are dropped, and read
    /// again as chunks need them (every one is stored).
    cached: usize,
    /// Each batch writes the states it changed (under the replay's
    /// savepoints) instead of leaving them to `flush`: set once a flush
    /// was refused.
    write_through: AtomicBool,
}

/// A rebuild's states, activations included, so that a chunk reads only
/// licenses it has not seen: the replay is the next tables' one writer.
#[derive(Default)]
struct Cache {
    /// As stored by the windows committed so far.
    committed: HashMap<Uuid, LicenseState>,
    /// As applied by the window not yet committed.
    pending: HashMap<Uuid, LicenseState>,
    /// The licenses the open window changed, each with the activations its
    /// events named: what `flush` writes.
    changed: BTreeMap<Uuid, BTreeSet<Uuid>>,
}

impl LicenseStates {
    pub fn live() -> Self {
        Self {
            cache: None,
            cached: 0,
            write_through: AtomicBool::new(false),
        }
    }

    fn cache(&self) -> Option<std::sync::MutexGuard<'_, Cache>> {
        self.cache
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub const NAME: &str = "license_state";

/// Most states one statement of a flush writes.
const FLUSH_ROWS: usize = 2_000;

#[async_trait]
impl ReadModel for LicenseStates {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["license_state", "license_activations"]
    }

    fn for_replay(&self, cached: usize) -> Arc<dyn ReadModel> {
        Arc::new(Self {
            cache: Some(Mutex::default()),
            cached,
            write_through: AtomicBool::new(false),
        })
    }

    fn committed(&self) {
        if let Some(mut c) = self.cache() {
            let pending = std::mem::take(&mut c.pending);
            c.committed.extend(pending);
            if c.committed.len() > self.cached {
                c.committed.clear();
            }
        }
    }

    fn abandoned(&self, stale: bool) {
        if let Some(mut c) = self.cache() {
            c.pending.clear();
            c.changed.clear();
            if stale {
                c.committed.clear();
            }
        }
    }

    async fn flush(&self, tx: &mut PgConnection, suffix: &str) -> Result<(), HandleError> {
        // A slice at a time: serialised under the cache's (std) lock,
        // written after it, so a window that changed a million states
        // holds only one slice's rows beside them.
        loop {
            let out = {
                let Some(mut c) = self.cache() else {
                    return Ok(());
                };
                let c = &mut *c;
                let mut out = Updates::default();
                while out.len() < FLUSH_ROWS {
                    let Some((id, named)) = c.changed.pop_first() else {
                        break;
                    };
                    if let Some(state) = c.pending.get_mut(&id) {
                        push(&mut out, state, &named)?;
                    }
                }
                out
            };
            if out.is_empty() {
                return Ok(());
            }
            store::upsert(tx, suffix, out).await?;
        }
    }

    fn write_through(&self) {
        self.write_through.store(true, Ordering::Relaxed);
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        suffix: &str,
        events: &[Decoded],
    ) -> Result<(), HandleError> {
        let mut by_license: BTreeMap<Uuid, Vec<&Decoded>> = BTreeMap::new();
        for d in events {
            if let Some(id) = d.license_id {
                by_license.entry(id).or_default().push(d);
            }
        }
        if by_license.is_empty() {
            return Ok(());
        }
        if self.cache.is_some() {
            return self.apply_cached(tx, suffix, by_license).await;
        }
        let ids: Vec<Uuid> = by_license.keys().copied().collect();
        let mut current: BTreeMap<Uuid, LicenseState> = BTreeMap::new();
        for (id, state) in store::lock_states(tx, suffix, &ids).await? {
            current.insert(id, state.unwrap_or_else(|| LicenseState::new(id)));
        }
        // The license rows are locked: no other lane changes these.
        let mut named: Vec<(Uuid, Uuid)> = by_license
            .iter()
            .flat_map(|(id, evs)| {
                evs.iter()
                    .flat_map(|d| activations_of(&d.raw))
                    .map(move |a| (*id, a))
            })
            .collect();
        named.sort_unstable();
        named.dedup();
        if !named.is_empty() {
            for (license, a) in store::activations(tx, suffix, &named).await? {
                if let Some(state) = current.get_mut(&license) {
                    state.activations.insert(a.activation_id, a);
                }
            }
        }
        let mut out = Updates::default();
        for (id, evs) in by_license {
            let state = current.entry(id).or_insert_with(|| LicenseState::new(id));
            let mut changed = false;
            for d in evs {
                changed |= state
                    .apply(&d.context, &d.raw)
                    .map_err(|err| HandleError::Poison(err.to_string()))?;
            }
            if changed {
                let activations = std::mem::take(&mut state.activations);
                out.push(state, activations.into_values())
                    .map_err(|e| HandleError::Transient(e.to_string()))?;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        store::upsert(tx, suffix, out).await?;
        Ok(())
    }
}

/// Adds a state's row with the activations `named` (the state's others
/// are stored already), its own `activations` left as they were.
fn push(
    out: &mut Updates,
    state: &mut LicenseState,
    named: &BTreeSet<Uuid>,
) -> Result<(), HandleError> {
    let all = std::mem::take(&mut state.activations);
    let pushed = out.push(state, named.iter().filter_map(|a| all.get(a).cloned()));
    state.activations = all;
    pushed.map_err(|e| HandleError::Transient(e.to_string()))
}

impl LicenseStates {
    /// A rebuild's batch: the states from the cache, those it has not seen
    /// read once (with every stored activation), folded; the batch's states
    /// kept as pending, and those it changed noted with the activations its
    /// events name, until the replay's window flushes and commits.
    async fn apply_cached(
        &self,
        tx: &mut PgConnection,
        suffix: &str,
        by_license: BTreeMap<Uuid, Vec<&Decoded>>,
    ) -> Result<(), HandleError> {
        let mut working: BTreeMap<Uuid, LicenseState> = BTreeMap::new();
        let mut unseen = Vec::new();
        if let Some(c) = self.cache() {
            for id in by_license.keys() {
                match c.pending.get(id).or_else(|| c.committed.get(id)) {
                    Some(s) => {
                        working.insert(*id, s.clone());
                    }
                    None => unseen.push(*id),
                }
            }
        }
        if !unseen.is_empty() {
            let mut stored = Vec::new();
            for (id, state) in store::lock_states(tx, suffix, &unseen).await? {
                if state.is_some() {
                    stored.push(id);
                }
                working.insert(id, state.unwrap_or_else(|| LicenseState::new(id)));
            }
            if !stored.is_empty() {
                for (license, a) in store::all_activations(tx, suffix, &stored).await? {
                    if let Some(state) = working.get_mut(&license) {
                        state.activations.insert(a.activation_id, a);
                    }
                }
            }
        }
        let through = self.write_through.load(Ordering::Relaxed);
        let mut out = Updates::default();
        let mut changed_now: Vec<(Uuid, BTreeSet<Uuid>)> = Vec::new();
        for (id, evs) in &by_license {
            let state = working.entry(*id).or_insert_with(|| LicenseState::new(*id));
            let mut changed = false;
            let mut named = BTreeSet::new();
            for d in evs {
                named.extend(activations_of(&d.raw));
                changed |= state
                    .apply(&d.context, &d.raw)
                    .map_err(|err| HandleError::Poison(err.to_string()))?;
            }
            if changed && through {
                push(&mut out, state, &named)?;
            } else if changed {
                changed_now.push((*id, named));
            }
        }
        if !out.is_empty() {
            store::upsert(tx, suffix, out).await?;
        }
        // Only now, all of the batch folded (and written): a refused batch
        // (halved under savepoints by the replay) leaves the cache as it was.
        if let Some(mut c) = self.cache() {
            c.pending.extend(working);
            for (id, named) in changed_now {
                c.changed.entry(id).or_default().extend(named);
            }
        }
        Ok(())
    }
}
