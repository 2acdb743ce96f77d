//! `audit_trail`: one row per event of every context, keyed by event id, so a
//! re-published event is recognised and skipped.

use std::collections::HashSet;

use async_trait::async_trait;
use bus::HandleError;
use chrono::{DateTime, Utc};
use eventstore::chain::metadata_text;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Decoded, ReadModel};

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

    async fn apply(
        &self,
        tx: &mut PgConnection,
        suffix: &str,
        events: &[Decoded],
    ) -> Result<(), HandleError> {
        let mut cols = Columns::default();
        let mut seen = HashSet::new();
        for d in events.iter().filter(|d| seen.insert(d.raw.event_id)) {
            cols.push(d)?;
        }
        // One statement per batch: the arrays are unnested server-side.
        let sql = format!(
            "INSERT INTO audit_trail{suffix} (event_id, context, aggregate_type, aggregate_id, sequence, \
               global_position, license_id, event_type, event_version, occurred_at, recorded_at, \
               actor_kind, actor_id, command_id, correlation_id, causation_id, payload, metadata, \
               prev_hash, hash, actor_via, leaf_index) \
             SELECT u.event_id, u.context, u.aggregate_type, u.aggregate_id, u.sequence, \
               u.global_position, u.license_id, u.event_type, u.event_version, u.occurred_at, \
               u.recorded_at, u.actor_kind, u.actor_id, u.command_id, u.correlation_id, \
               u.causation_id, u.payload::json, u.metadata::json, u.prev_hash, u.hash, u.actor_via, \
               u.leaf_index \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
               $7::uuid[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
               $12::text[], $13::text[], $14::uuid[], $15::text[], $16::text[], $17::text[], \
               $18::text[], $19::text[], $20::text[], $21::text[], $22::int8[]) \
               AS u(event_id, context, aggregate_type, aggregate_id, sequence, global_position, \
               license_id, event_type, event_version, occurred_at, recorded_at, actor_kind, \
               actor_id, command_id, correlation_id, causation_id, payload, metadata, prev_hash, hash, \
               actor_via, leaf_index) \
             ON CONFLICT (event_id) DO NOTHING"
        );
        sqlx::query(&sql)
            .bind(cols.event_id)
            .bind(cols.context)
            .bind(cols.aggregate_type)
            .bind(cols.aggregate_id)
            .bind(cols.sequence)
            .bind(cols.global_position)
            .bind(cols.license_id)
            .bind(cols.event_type)
            .bind(cols.event_version)
            .bind(cols.occurred_at)
            .bind(cols.recorded_at)
            .bind(cols.actor_kind)
            .bind(cols.actor_id)
            .bind(cols.command_id)
            .bind(cols.correlation_id)
            .bind(cols.causation_id)
            .bind(cols.payload)
            .bind(cols.metadata)
            .bind(cols.prev_hash)
            .bind(cols.hash)
            .bind(cols.actor_via)
            .bind(cols.leaf_index)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[derive(Default)]
struct Columns {
    event_id: Vec<Uuid>,
    context: Vec<String>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    global_position: Vec<i64>,
    license_id: Vec<Option<Uuid>>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
    recorded_at: Vec<DateTime<Utc>>,
    actor_kind: Vec<String>,
    actor_id: Vec<String>,
    command_id: Vec<Uuid>,
    correlation_id: Vec<String>,
    causation_id: Vec<Option<String>>,
    payload: Vec<String>,
    metadata: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
    actor_via: Vec<Option<String>>,
    leaf_index: Vec<Option<i64>>,
}

impl Columns {
    fn push(&mut self, d: &Decoded) -> Result<(), HandleError> {
        let e = &d.raw;
        // The metadata text the event store hashed.
        let metadata = metadata_text(e).map_err(|err| HandleError::Poison(err.to_string()))?;
        self.event_id.push(e.event_id);
        self.context.push(d.context.clone());
        self.aggregate_type.push(e.aggregate_type.clone());
        self.aggregate_id.push(e.aggregate_id.clone());
        self.sequence.push(
            i64::try_from(e.sequence)
                .map_err(|_| HandleError::Poison("sequence out of range".into()))?,
        );
        self.global_position.push(e.global_position);
        self.license_id.push(d.license_id);
        self.event_type.push(e.event_type.clone());
        self.event_version.push(e.event_version.clone());
        self.occurred_at.push(e.occurred_at);
        self.recorded_at.push(e.recorded_at);
        self.actor_kind.push(actor_kind(&e.actor));
        self.actor_id.push(e.actor.id.clone());
        self.command_id.push(e.command_id);
        self.correlation_id.push(e.correlation_id.clone());
        self.causation_id.push(e.causation_id.clone());
        self.payload.push(e.payload.get().to_string());
        self.metadata.push(metadata);
        self.prev_hash.push(e.prev_hash.clone());
        self.hash.push(e.hash.clone());
        self.actor_via.push(e.actor.via.clone());
        self.leaf_index.push(d.leaf_index);
        Ok(())
    }
}

pub fn actor_kind(a: &contracts::Actor) -> String {
    serde_json::to_value(a.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
