//! The hash chain: `hash = SHA-256(prev_hash ‖ canonical bytes)`, per
//! aggregate. The database computes it at write time (trigger in the first
//! migration); this module reproduces it, so that a verifier needs only the
//! stored rows — or an exported bundle of them — and no trust in the database.

use chrono::{DateTime, Utc};
use contracts::{EventEnvelope, EventMetadata};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const ZERO_HASH: [u8; 32] = [0; 32];

/// One row of the `events` table, with `payload` and `metadata` exactly as
/// stored (their text is what the hash covers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredEvent {
    pub global_position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String)]
    pub prev_hash: Vec<u8>,
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String)]
    pub hash: Vec<u8>,
}

impl StoredEvent {
    /// The bytes hashed after `prev_hash`; must match the SQL trigger exactly.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        [
            self.event_id.hyphenated().to_string(),
            self.aggregate_type.clone(),
            self.aggregate_id.clone(),
            self.sequence.to_string(),
            self.event_type.clone(),
            self.event_version.clone(),
            self.recorded_at.timestamp_micros().to_string(),
            self.payload.clone(),
            self.metadata.clone(),
        ]
        .join("\n")
        .into_bytes()
    }

    pub fn compute_hash(&self, prev_hash: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev_hash);
        h.update(self.canonical_bytes());
        h.finalize().into()
    }

    /// The envelope with the payload parsed.
    pub fn to_envelope(&self) -> Result<EventEnvelope, serde_json::Error> {
        let raw = self.to_raw_envelope()?;
        let payload = serde_json::from_str(raw.payload.get())?;
        Ok(raw.with_payload(payload))
    }

    /// The envelope published on Kafka: the payload is the stored text
    /// verbatim, so a reader can re-hash the event from the message alone.
    pub fn to_raw_envelope(&self) -> Result<EventEnvelope<Box<RawValue>>, serde_json::Error> {
        let meta: EventMetadata = serde_json::from_str(&self.metadata)?;
        Ok(EventEnvelope {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            event_version: self.event_version.clone(),
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: u64::try_from(self.sequence).unwrap_or_default(),
            global_position: self.global_position,
            occurred_at: meta.occurred_at,
            recorded_at: self.recorded_at,
            command_id: meta.command_id,
            correlation_id: meta.correlation_id,
            causation_id: meta.causation_id,
            actor: meta.actor,
            payload: RawValue::from_string(self.payload.clone())?,
            prev_hash: hex::encode(&self.prev_hash),
            hash: hex::encode(&self.hash),
        })
    }

    /// The stored row back from a published envelope. The metadata text is
    /// re-serialised from its struct, as the event store wrote it; a
    /// verifier of the result is what proves the round trip exact.
    pub fn from_raw_envelope(e: &EventEnvelope<Box<RawValue>>) -> Result<Self, StoredEventError> {
        let metadata = metadata_text(e)?;
        Ok(Self {
            global_position: e.global_position,
            event_id: e.event_id,
            aggregate_type: e.aggregate_type.clone(),
            aggregate_id: e.aggregate_id.clone(),
            sequence: i64::try_from(e.sequence).map_err(|_| StoredEventError::Sequence)?,
            event_type: e.event_type.clone(),
            event_version: e.event_version.clone(),
            payload: e.payload.get().to_string(),
            metadata,
            recorded_at: e.recorded_at,
            prev_hash: hex::decode(&e.prev_hash).map_err(|_| StoredEventError::Hash)?,
            hash: hex::decode(&e.hash).map_err(|_| StoredEventError::Hash)?,
        })
    }
}

/// The `metadata` text the event store wrote for an envelope's event.
pub fn metadata_text<P>(e: &EventEnvelope<P>) -> Result<String, StoredEventError> {
    serde_json::to_string(&EventMetadata {
        occurred_at: e.occurred_at,
        command_id: e.command_id,
        correlation_id: e.correlation_id.clone(),
        causation_id: e.causation_id.clone(),
        actor: e.actor.clone(),
    })
    .map_err(|_| StoredEventError::Metadata)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoredEventError {
    #[error("the envelope's metadata cannot be serialised")]
    Metadata,
    #[error("the envelope's sequence is out of range")]
    Sequence,
    #[error("the envelope's prev_hash or hash is not hex")]
    Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainProblem {
    /// The stored hash is not the hash of the stored content: altered in place.
    HashMismatch { sequence: i64 },
    /// `prev_hash` does not name the previous event: removed or reordered.
    BrokenLink { sequence: i64 },
    /// A sequence number is missing or out of place.
    SequenceGap { expected: i64, found: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainReport {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub events: usize,
    #[schema(required = true)]
    pub head_hash: Option<String>,
    pub problems: Vec<ChainProblem>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks one aggregate's events, given in stored sequence order.
pub fn verify_chain(
    aggregate_type: &str,
    aggregate_id: &str,
    events: &[StoredEvent],
) -> ChainReport {
    let mut problems = Vec::new();
    let mut prev: Vec<u8> = ZERO_HASH.to_vec();
    for (i, e) in events.iter().enumerate() {
        let expected = i as i64 + 1;
        if e.sequence != expected {
            problems.push(ChainProblem::SequenceGap {
                expected,
                found: e.sequence,
            });
        }
        if e.prev_hash != prev {
            problems.push(ChainProblem::BrokenLink {
                sequence: e.sequence,
            });
        }
        if e.compute_hash(&e.prev_hash)[..] != e.hash[..] {
            problems.push(ChainProblem::HashMismatch {
                sequence: e.sequence,
            });
        }
        prev = e.hash.clone();
    }
    ChainReport {
        aggregate_type: aggregate_type.to_string(),
        aggregate_id: aggregate_id.to_string(),
        events: events.len(),
        head_hash: events.last().map(|e| hex::encode(&e.hash)),
        problems,
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, prev: &[u8], payload: &str) -> StoredEvent {
        let mut e = StoredEvent {
            global_position: seq,
            event_id: Uuid::now_v7(),
            aggregate_type: "License".into(),
            aggregate_id: "a1".into(),
            sequence: seq,
            event_type: "LicenseIssued".into(),
            event_version: "1".into(),
            payload: payload.into(),
            metadata: "{}".into(),
            recorded_at: Utc::now(),
            prev_hash: prev.to_vec(),
            hash: vec![],
        };
        e.hash = e.compute_hash(prev).to_vec();
        e
    }

    fn chain(n: i64) -> Vec<StoredEvent> {
        let mut out: Vec<StoredEvent> = Vec::new();
        for s in 1..=n {
            let prev = out.last().map_or(ZERO_HASH.to_vec(), |e| e.hash.clone());
            out.push(event(s, &prev, &format!("{{\"n\":{s}}}")));
        }
        out
    }

    #[test]
    fn a_published_envelope_gives_back_the_stored_row_byte_for_byte() {
        let metadata = serde_json::to_string(&EventMetadata {
            occurred_at: Utc::now(),
            command_id: Uuid::now_v7(),
            correlation_id: "c1".into(),
            causation_id: None,
            actor: contracts::Actor::new(contracts::ActorKind::ApiKey, "AK1"),
        })
        .expect("metadata");
        // Keys out of alphabetical order and non-ASCII text: a parsed value
        // would come back sorted and the hash would no longer match.
        let mut e = event(
            1,
            &ZERO_HASH,
            "{\"z\":1,\"a\":\"é\\n\",\"m\":[1.5,{\"y\":null,\"b\":true}]}",
        );
        e.metadata = metadata;
        e.hash = e.compute_hash(&ZERO_HASH).to_vec();
        let wire = serde_json::to_vec(&e.to_raw_envelope().expect("envelope")).expect("json");
        let read: EventEnvelope<Box<RawValue>> = serde_json::from_slice(&wire).expect("parses");
        let back = StoredEvent::from_raw_envelope(&read).expect("row");
        assert_eq!(back, e);
        assert!(verify_chain("License", "a1", &[back]).is_intact());
    }

    #[test]
    fn an_untouched_chain_is_intact() {
        let r = verify_chain("License", "a1", &chain(3));
        assert!(r.is_intact(), "{r:?}");
        assert_eq!(r.events, 3);
    }

    #[test]
    fn an_altered_payload_is_a_hash_mismatch() {
        let mut c = chain(3);
        c[1].payload = "{\"n\":99}".into();
        let r = verify_chain("License", "a1", &c);
        assert_eq!(r.problems, vec![ChainProblem::HashMismatch { sequence: 2 }]);
    }

    #[test]
    fn a_removed_event_breaks_the_chain() {
        let mut c = chain(3);
        c.remove(1);
        let r = verify_chain("License", "a1", &c);
        assert!(r
            .problems
            .contains(&ChainProblem::BrokenLink { sequence: 3 }));
        assert!(r.problems.contains(&ChainProblem::SequenceGap {
            expected: 2,
            found: 3
        }));
    }

    #[test]
    fn reordered_events_break_the_chain() {
        let mut c = chain(3);
        c.swap(1, 2);
        let r = verify_chain("License", "a1", &c);
        assert!(r
            .problems
            .contains(&ChainProblem::BrokenLink { sequence: 3 }));
        assert!(!r.is_intact());
    }

    #[test]
    fn a_removed_last_event_is_not_detectable_from_rows_alone_but_changes_the_head() {
        // Truncation keeps a valid prefix; signed checkpoints of the head hash
        // (dispute bundles) are what expose it, so the report carries the head.
        let c = chain(3);
        let full = verify_chain("License", "a1", &c);
        let cut = verify_chain("License", "a1", &c[..2]);
        assert!(cut.is_intact());
        assert_ne!(full.head_hash, cut.head_hash);
    }
}
