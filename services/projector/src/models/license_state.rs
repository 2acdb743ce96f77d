//! `license_state`: one row per license, the fold of every context's events
//! about it (domain::LicenseState), its activations one row each in
//! `license_activations`. A batch touches each license once: its row locked
//! and read with the activations its events name, its events folded, the
//! changed states and those activations written back (`store::licenses`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use bus::HandleError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Decoded, ReadModel};
use crate::domain::state::activations_of;
use crate::domain::LicenseState;
use crate::store::licenses::{self as store, Updates};

pub struct LicenseStates;

pub const NAME: &str = "license_state";

#[async_trait]
impl ReadModel for LicenseStates {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["license_state", "license_activations"]
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
