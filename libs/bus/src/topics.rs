use std::time::Duration;

use contracts::Topics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

use crate::{BusError, Kafka};

/// The checked-in topic catalogue, compiled in so a service needs no files.
const TOPICS_TOML: &str = include_str!("../../../schemas/topics.toml");

#[derive(Debug, Deserialize)]
struct Catalogue {
    defaults: Defaults,
    topic: Vec<TopicSpec>,
}

#[derive(Debug, Deserialize)]
struct Defaults {
    partitions: i32,
    replication_factor: i32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub retention_ms: i64,
    pub cleanup_policy: String,
    #[serde(default)]
    pub partitions: Option<i32>,
}

/// The catalogue's topics with their full (prefixed) names and partitions.
pub fn catalogue(
    topics: &Topics,
    partitions: Option<i32>,
) -> Result<Vec<(String, i32, i32, TopicSpec)>, BusError> {
    let c: Catalogue =
        toml::from_str(TOPICS_TOML).map_err(|e| BusError::TopicsFile(e.to_string()))?;
    Ok(c.topic
        .into_iter()
        .map(|t| {
            // A topic that fixes its partitions (a single-partition log) keeps them.
            let p = t.partitions.or(partitions).unwrap_or(c.defaults.partitions);
            (topics.named(&t.name), p, c.defaults.replication_factor, t)
        })
        .collect())
}

/// Creates every catalogue topic of the deployment that does not exist yet;
/// existing ones are left as they are. The deployment's partitions,
/// replication factor and `min.insync.replicas` override the catalogue
/// (tests use few partitions, production 3 replicas). Needs a principal
/// allowed to create topics (provisioning).
pub async fn ensure_topics(kafka: &Kafka, d: &crate::Deployment) -> Result<(), BusError> {
    let admin: AdminClient<crate::Quiet> = kafka.client().create_with_context(crate::Quiet)?;
    let specs = catalogue(&d.topics, d.partitions)?;
    let retention: Vec<String> = specs.iter().map(|s| s.3.retention_ms.to_string()).collect();
    let min_insync = d.min_insync_replicas.map(|n| n.to_string());
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention)
        .map(|((name, p, rf, spec), retention)| {
            let rf = d.replication_factor.unwrap_or(*rf);
            let topic = NewTopic::new(name, *p, TopicReplication::Fixed(rf))
                .set("retention.ms", retention)
                .set("cleanup.policy", &spec.cleanup_policy);
            match &min_insync {
                Some(n) => topic.set("min.insync.replicas", n),
                None => topic,
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(BusError::TopicsFile(format!("creating {topic}: {code}")))
            }
        }
    }
    Ok(())
}

/// Of `names`, those this principal cannot see: missing, or not granted.
/// A service checks its topics at start-up instead of creating them.
pub async fn unavailable(kafka: &Kafka, names: Vec<String>) -> Result<Vec<String>, BusError> {
    let client: BaseConsumer<crate::Quiet> = kafka.client().create_with_context(crate::Quiet)?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for name in names {
            let md = client.fetch_metadata(Some(&name), Duration::from_secs(10))?;
            let ok = md
                .topics()
                .iter()
                .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty());
            if !ok {
                out.push(name);
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| BusError::TopicsFile(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_prefixed_and_include_the_outcomes_topic() {
        let specs = catalogue(&Topics::new("t1"), Some(3)).expect("catalogue parses");
        let names: Vec<&str> = specs.iter().map(|s| s.0.as_str()).collect();
        assert!(names.contains(&"t1.issuance.events"));
        assert!(names.contains(&"t1.command-outcomes"));
        let parts = |n: &str| specs.iter().find(|s| s.0 == n).map(|s| s.1);
        assert_eq!(parts("t1.issuance.events"), Some(3));
        assert_eq!(parts("t1.issuance.relay-checkpoints"), Some(1));
    }
}
