//! `license_state`: one row per license, the fold of every context's events
//! about it (domain::LicenseState). A batch touches each license once.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bus::HandleError;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{Decoded, ReadModel};
use crate::domain::LicenseState;

pub struct LicenseStates;

pub const NAME: &str = "license_state";

#[async_trait]
impl ReadModel for LicenseStates {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["license_state"]
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
        // Rows first, then locks, both in license order: lanes of other
        // topics touching the same licenses wait rather than deadlock, and a
        // concurrent first event of a license cannot overwrite this one's.
        sqlx::query(&format!(
            "INSERT INTO license_state{suffix} (license_id) \
             SELECT id FROM unnest($1::uuid[]) AS u(id) ORDER BY id ON CONFLICT DO NOTHING"
        ))
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT license_id, state FROM license_state{suffix} \
             WHERE license_id = ANY($1) ORDER BY license_id FOR UPDATE"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut current: BTreeMap<Uuid, LicenseState> = BTreeMap::new();
        for r in rows {
            let id: Uuid = r.try_get("license_id")?;
            let state: Option<Json<LicenseState>> = r.try_get("state")?;
            let state = state.map_or_else(|| LicenseState::new(id), |s| s.0);
            current.insert(id, state);
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
                out.push(state)?;
            }
        }
        if out.id.is_empty() {
            return Ok(());
        }
        // An upsert, not UPDATE … FROM unnest: the planner cannot see how
        // few rows the arrays hold and would join by scanning the table.
        sqlx::query(&format!(
            "INSERT INTO license_state{suffix} (license_id, state, status, kind, product, edition, \
               customer, expires_at, live_activations, leases_in_use, domain, updated_at) \
             SELECT * FROM unnest($1::uuid[], $2::jsonb[], $3::text[], $4::text[], $5::text[], \
               $6::text[], $7::text[], $8::timestamptz[], $9::int4[], $10::int4[], $11::text[], \
               $12::timestamptz[]) \
             ON CONFLICT (license_id) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status, \
               kind = EXCLUDED.kind, product = EXCLUDED.product, edition = EXCLUDED.edition, \
               customer = EXCLUDED.customer, expires_at = EXCLUDED.expires_at, \
               live_activations = EXCLUDED.live_activations, leases_in_use = EXCLUDED.leases_in_use, \
               domain = EXCLUDED.domain, updated_at = EXCLUDED.updated_at"
        ))
        .bind(out.id)
        .bind(out.state)
        .bind(out.status)
        .bind(out.kind)
        .bind(out.product)
        .bind(out.edition)
        .bind(out.customer)
        .bind(out.expires_at)
        .bind(out.live_activations)
        .bind(out.leases_in_use)
        .bind(out.domain)
        .bind(out.updated_at)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// The filter columns of a state, as stored beside it.
#[derive(Default)]
struct Updates {
    id: Vec<Uuid>,
    state: Vec<serde_json::Value>,
    status: Vec<Option<String>>,
    kind: Vec<Option<String>>,
    product: Vec<Option<String>>,
    edition: Vec<Option<String>>,
    customer: Vec<Option<String>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    live_activations: Vec<i32>,
    leases_in_use: Vec<i32>,
    domain: Vec<Option<String>>,
    updated_at: Vec<Option<DateTime<Utc>>>,
}

impl Updates {
    fn push(&mut self, s: &LicenseState) -> Result<(), HandleError> {
        let l = s.license.as_ref();
        self.id.push(s.license_id);
        self.state
            .push(serde_json::to_value(s).map_err(|e| HandleError::Transient(e.to_string()))?);
        self.status.push(l.map(|l| l.status_text()));
        self.kind.push(l.and_then(|l| text(&l.kind)));
        self.product.push(l.map(|l| l.product.clone()));
        self.edition.push(l.and_then(|l| l.edition.clone()));
        self.customer.push(l.map(|l| l.customer.clone()));
        self.expires_at.push(l.and_then(|l| l.expires_at));
        self.live_activations
            .push(i32::try_from(s.live_activations).unwrap_or(i32::MAX));
        self.leases_in_use
            .push(i32::try_from(s.leases_in_use).unwrap_or(i32::MAX));
        self.domain
            .push(s.domain.as_ref().and_then(|d| d.domain.clone()));
        self.updated_at.push(s.last_event_at);
        Ok(())
    }
}

fn text<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|s| s.as_str().map(str::to_string))
}
