//! `audit_trail`: one row per event of every context, keyed by event id, so a
//! re-published event is recognised and skipped. A batch is one insert
//! (`store::audit`), each event once; a rebuild's is one binary `COPY`.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use bus::HandleError;
use sqlx::PgConnection;

use super::{Decoded, ReadModel, NEXT};
use crate::store::audit::{self as store, Columns};

pub struct AuditTrail;

pub const NAME: &str = "audit_trail";

#[async_trait]
impl ReadModel for AuditTrail {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_trail"]
    }

    fn for_replay(&self, _cached: usize) -> Arc<dyn ReadModel> {
        Arc::new(Self)
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        suffix: &str,
        events: &[Decoded],
    ) -> Result<(), HandleError> {
        let mut cols = Columns::default();
        if suffix == NEXT {
            // Each id once, or the `COPY` fails and the replay isolates the
            // event that reused one.
            for d in events {
                cols.push(d)?;
            }
            return store::copy(tx, suffix, cols).await;
        }
        let mut seen = HashSet::new();
        for d in events.iter().filter(|d| seen.insert(d.raw.event_id)) {
            cols.push(d)?;
        }
        Ok(store::insert(tx, suffix, cols).await?)
    }
}
