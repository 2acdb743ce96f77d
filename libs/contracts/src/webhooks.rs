//! Webhooks: the events a callback URL can subscribe to. Each names a
//! license (`license_id` in its payload, or the License aggregate itself);
//! an endpoint receives those of the licenses its owner issued.

use crate::{activation, domain, grants, issuance, topics};

/// Every event type a callback may subscribe to, with the context whose
/// events topic alone may carry it.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    // A license's lifecycle.
    (topics::ISSUANCE, issuance::LICENSE_ISSUED),
    (topics::ISSUANCE, issuance::LICENSE_RENEWED),
    (topics::ISSUANCE, issuance::LICENSE_FEATURES_AMENDED),
    (topics::ISSUANCE, issuance::LICENSE_SUSPENDED),
    (topics::ISSUANCE, issuance::LICENSE_REINSTATED),
    (topics::ISSUANCE, issuance::LICENSE_REVOKED),
    (topics::ISSUANCE, issuance::LICENSE_EXPIRED),
    (topics::ISSUANCE, issuance::LICENSE_RECLAIMED),
    (topics::ISSUANCE, issuance::LICENSE_DELETED),
    // Its activations.
    (topics::ACTIVATION, activation::DEVICE_ACTIVATED),
    (topics::ACTIVATION, activation::ACTIVATION_UNINSTALLED),
    (topics::ACTIVATION, activation::ACTIVATION_MIGRATED),
    (topics::ACTIVATION, activation::ACTIVATIONS_REVOKED),
    (topics::ACTIVATION, activation::CLOCK_ROLLBACK_DETECTED),
    // Its domain.
    (topics::DOMAIN, domain::DOMAIN_BOUND),
    (topics::DOMAIN, domain::DOMAIN_CHANGED),
    (topics::DOMAIN, domain::DOMAIN_RESET),
    (topics::DOMAIN, domain::DOMAIN_RELEASED),
    // Its floating leases, as they end.
    (topics::GRANTS, grants::LEASE_RELEASED),
    (topics::GRANTS, grants::LEASE_EXPIRED),
    (topics::GRANTS, grants::LEASES_REVOKED),
];

fn subscribable(event_type: &str) -> bool {
    EVENT_TYPES.iter().any(|(_, t)| *t == event_type)
}

/// What a callback registered without a list receives: the lifecycle,
/// activations, domain changes and leases ended (everything but the clock
/// reports).
pub fn default_events() -> Vec<String> {
    EVENT_TYPES
        .iter()
        .filter(|(_, t)| *t != activation::CLOCK_ROLLBACK_DETECTED)
        .map(|(_, t)| (*t).to_string())
        .collect()
}

/// Why a list of event types is refused.
pub fn check_events<S: AsRef<str>>(events: &[S]) -> Result<(), String> {
    if events.is_empty() {
        return Err("name at least one event type".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in events {
        let e = e.as_ref();
        if !subscribable(e) {
            let shown: String = e.chars().take(64).collect();
            return Err(format!(
                "{shown:?} is not an event type a callback can receive"
            ));
        }
        if !seen.insert(e) {
            return Err(format!("{e} is named twice"));
        }
    }
    Ok(())
}

/// Why a callback is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackError {
    /// Not an http(s) URL of at most 2048 characters.
    Url,
    Events(String),
}

/// The events a callback receives once set to `url` (None: removed, so
/// none) with `events` named, or not (then those it had, `current`, or the
/// default set for a first one). The rule of every owner of callbacks.
pub fn callback_events<S: AsRef<str>>(
    url: Option<&str>,
    events: Option<&[S]>,
    current: &[String],
) -> Result<Vec<String>, CallbackError> {
    let Some(url) = url else {
        return match events {
            Some(_) => Err(CallbackError::Events("events need a callback_url".into())),
            None => Ok(vec![]),
        };
    };
    if !crate::net::is_http_url(url) {
        return Err(CallbackError::Url);
    }
    match events {
        Some(events) => {
            check_events(events).map_err(CallbackError::Events)?;
            Ok(events.iter().map(|e| e.as_ref().to_string()).collect())
        }
        None if !current.is_empty() => Ok(current.to_vec()),
        None => Ok(default_events()),
    }
}

/// The license an event read from `context`'s events topic is about, if
/// it is one a callback can receive there: an event type read from another
/// context's topic is none (that context's writer cannot speak for the
/// owner of the type).
pub fn license_of(context: &str, event: &crate::EventEnvelope) -> Option<uuid::Uuid> {
    if !EVENT_TYPES
        .iter()
        .any(|(c, t)| *c == context && *t == event.event_type)
    {
        return None;
    }
    event
        .payload
        .get("license_id")
        .and_then(|v| v.as_str())
        .or_else(|| {
            (event.aggregate_type == issuance::LICENSE_AGGREGATE)
                .then_some(event.aggregate_id.as_str())
        })
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_distinct_event_types_are_taken() {
        assert!(check_events(&default_events()).is_ok());
        assert!(check_events::<&str>(&[]).is_err());
        assert!(check_events(&["LicenseIssued", "LicenseIssued"]).is_err());
        assert!(check_events(&["ApiKeyCreated"]).is_err());
        assert!(!default_events().contains(&"ClockRollbackDetected".to_string()));
    }

    #[test]
    fn an_event_counts_only_on_its_own_contexts_topic() {
        let license = uuid::Uuid::now_v7();
        let event = crate::EventEnvelope {
            event_id: uuid::Uuid::now_v7(),
            event_type: issuance::LICENSE_REVOKED.into(),
            event_version: "1".into(),
            aggregate_type: issuance::LICENSE_AGGREGATE.into(),
            aggregate_id: license.to_string(),
            sequence: 1,
            global_position: 1,
            occurred_at: chrono::Utc::now(),
            recorded_at: chrono::Utc::now(),
            command_id: uuid::Uuid::now_v7(),
            correlation_id: "c".into(),
            causation_id: None,
            actor: crate::Actor::new(crate::ActorKind::System, "s"),
            payload: serde_json::json!({}),
            prev_hash: String::new(),
            hash: String::new(),
        };
        assert_eq!(license_of(topics::ISSUANCE, &event), Some(license));
        assert_eq!(license_of(topics::ACTIVATION, &event), None);
        assert_eq!(license_of(topics::GRANTS, &event), None);
    }
}
