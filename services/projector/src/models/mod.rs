//! Read models. Each has its own consumer group, offsets and tables, so one
//! can be added and backfilled over the full history — or rebuilt — without
//! touching the others. The same `apply` writes the live tables and a
//! rebuild's (`suffix`), which is what makes a rebuild equal to the live rows.
//! A model folds and batches; its statements are in `crate::store`.

pub mod audit;
pub mod license_state;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::EventEnvelope;
use serde_json::value::RawValue;
use sqlx::PgConnection;
use uuid::Uuid;

use contracts::issuance::LICENSE_AGGREGATE;

/// The tables of a model being rebuilt carry this suffix until the swap.
pub const NEXT: &str = "_next";

/// One event as the models receive it: the exact stored payload text (for
/// the audit trail and its hash chain), which folds read into their types.
pub struct Decoded {
    pub context: String,
    pub license_id: Option<Uuid>,
    /// Its leaf in the service's Merkle tree (the relay's header).
    pub leaf_index: Option<i64>,
    pub raw: EventEnvelope<Box<RawValue>>,
}

/// The one payload field every model needs, read without building a tree.
#[derive(serde::Deserialize)]
struct LicenseRef {
    #[serde(default)]
    license_id: Option<serde_json::Value>,
}

impl Decoded {
    pub fn from_message(context: &str, msg: &Incoming) -> Result<Self, HandleError> {
        let raw: EventEnvelope<Box<RawValue>> = msg.json("an event envelope")?;
        // As `contracts::license_view::license_of`, on the raw text.
        let license_id = if raw.aggregate_type == LICENSE_AGGREGATE {
            Uuid::parse_str(&raw.aggregate_id).ok()
        } else {
            serde_json::from_str::<LicenseRef>(raw.payload.get())
                .ok()
                .and_then(|r| r.license_id)
                .and_then(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
        };
        Ok(Self {
            context: context.to_string(),
            license_id,
            leaf_index: msg.header("leaf_index").and_then(|v| v.parse().ok()),
            raw,
        })
    }
}

#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// Also the consumer name and the model's name in the admin API.
    fn name(&self) -> &'static str;
    /// Its tables, live names; a rebuild writes `<table>_next`.
    fn tables(&self) -> &'static [&'static str];
    /// Applies a batch's events (each partition's in order) inside the consumer's
    /// transaction. Must be idempotent: a replayed event changes nothing.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        suffix: &str,
        events: &[Decoded],
    ) -> Result<(), HandleError>;

    /// The instance a rebuild's replay applies with: the same model, which
    /// may keep up to `cached` aggregates' states in memory across the
    /// replay's chunks (`TxHandler::committed`).
    fn for_replay(&self, cached: usize) -> Arc<dyn ReadModel>;

    /// See `TxHandler::flush`: writes what the replay's window kept in
    /// memory.
    async fn flush(&self, _tx: &mut PgConnection, _suffix: &str) -> Result<(), HandleError> {
        Ok(())
    }

    /// See `TxHandler::write_through`.
    fn write_through(&self) {}

    /// See `TxHandler::committed` and `TxHandler::abandoned`.
    fn committed(&self) {}
    fn abandoned(&self, _stale: bool) {}
}

/// Every read model this projector maintains.
pub fn all() -> Vec<Arc<dyn ReadModel>> {
    vec![
        Arc::new(audit::AuditTrail),
        Arc::new(license_state::LicenseStates::live()),
    ]
}

/// Feeds one model from the event topics.
pub struct ModelConsumer {
    pub model: Arc<dyn ReadModel>,
    /// Event topic → the context that owns it.
    pub contexts: Arc<HashMap<String, String>>,
    pub suffix: &'static str,
}

#[async_trait]
impl TxHandler for ModelConsumer {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        self.handle_batch(tx, &[msg]).await
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        msgs: &[&Incoming],
    ) -> Result<(), HandleError> {
        let events = msgs
            .iter()
            .map(|m| {
                let context = self.contexts.get(&m.topic).unwrap_or(&m.topic);
                Decoded::from_message(context, m)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.model.apply(tx, self.suffix, &events).await
    }

    async fn flush(&self, tx: &mut PgConnection) -> Result<(), HandleError> {
        self.model.flush(tx, self.suffix).await
    }

    fn write_through(&self) {
        self.model.write_through();
    }

    fn committed(&self) {
        self.model.committed();
    }

    fn abandoned(&self, stale: bool) {
        self.model.abandoned(stale);
    }
}
