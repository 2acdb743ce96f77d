use std::time::Duration;

use contracts::Topics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
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

/// Refuses a deployment no write could succeed in: more replicas than the
/// cluster has brokers, or more in-sync replicas required than there are.
fn check_replication(brokers: usize, rf: i32, min_insync: Option<i32>) -> Result<(), BusError> {
    if rf < 1 || usize::try_from(rf).map_or(true, |rf| rf > brokers) {
        return Err(BusError::Provision(format!(
            "replication factor {rf} needs {rf} brokers; the cluster has {brokers}"
        )));
    }
    match min_insync {
        Some(min) if min > rf => Err(BusError::Provision(format!(
            "min.insync.replicas {min} exceeds the replication factor {rf}: no write could ever succeed"
        ))),
        _ => Ok(()),
    }
}

/// What an existing topic has that the deployment asked otherwise: its
/// replication factor (when one was asked for) and its
/// `min.insync.replicas` (likewise).
fn differences(
    name: &str,
    has: (i32, Option<&str>),
    wanted_rf: Option<i32>,
    wanted_min: Option<i32>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rf) = wanted_rf.filter(|rf| *rf != has.0) {
        out.push(format!("{name}: replication factor {}, not {rf}", has.0));
    }
    if let Some(min) = wanted_min.filter(|m| has.1 != Some(m.to_string().as_str())) {
        out.push(format!(
            "{name}: min.insync.replicas {}, not {min}",
            has.1.unwrap_or("unknown")
        ));
    }
    out
}

/// Creates every catalogue topic of the deployment that does not exist yet.
/// The deployment's partitions, replication factor and
/// `min.insync.replicas` override the catalogue (tests use few partitions,
/// production 3 replicas). A replication the cluster cannot hold is
/// refused before anything is created, and an existing topic whose
/// replication differs from what the deployment asks is an error naming
/// it: this never changes an existing topic, and never says a deployment
/// is in place when it is not. Needs a principal allowed to create topics
/// (provisioning).
pub async fn ensure_topics(kafka: &Kafka, d: &crate::Deployment) -> Result<(), BusError> {
    let admin: AdminClient<crate::Quiet> = kafka.client().create_with_context(crate::Quiet)?;
    let specs = catalogue(&d.topics, d.partitions)?;
    let metadata = |topic: Option<String>| {
        let client: BaseConsumer<crate::Quiet> =
            kafka.client().create_with_context(crate::Quiet)?;
        let blocking = move || {
            let md = client.fetch_metadata(topic.as_deref(), Duration::from_secs(30))?;
            let brokers = md.brokers().len();
            let replicas = md
                .topics()
                .first()
                .and_then(|t| t.partitions().first())
                .map_or(0, |p| i32::try_from(p.replicas().len()).unwrap_or(i32::MAX));
            Ok::<_, BusError>((brokers, replicas))
        };
        Ok::<_, BusError>(tokio::task::spawn_blocking(blocking))
    };
    let join = |e: tokio::task::JoinError| BusError::Provision(e.to_string());
    let (brokers, _) = metadata(None)?.await.map_err(join)??;
    for (_, _, rf, _) in &specs {
        check_replication(
            brokers,
            d.replication_factor.unwrap_or(*rf),
            d.min_insync_replicas,
        )?;
    }
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
    let mut existing = Vec::new();
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) => {}
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => existing.push(topic),
            Err((topic, code)) => {
                return Err(BusError::TopicsFile(format!("creating {topic}: {code}")))
            }
        }
    }
    if d.replication_factor.is_none() && d.min_insync_replicas.is_none() {
        return Ok(());
    }
    let mut differ = Vec::new();
    for topic in existing {
        let (_, replicas) = metadata(Some(topic.clone()))?.await.map_err(join)??;
        let spec = ResourceSpecifier::Topic(&topic);
        let configs = admin.describe_configs([&spec], &opts).await?;
        let min = configs
            .into_iter()
            .next()
            .and_then(Result::ok)
            .and_then(|c| c.get("min.insync.replicas").and_then(|e| e.value.clone()));
        differ.extend(differences(
            &topic,
            (replicas, min.as_deref()),
            d.replication_factor,
            d.min_insync_replicas,
        ));
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(BusError::Provision(format!(
            "existing topics differ from this deployment (change them with the Kafka tools, \
             then run this again): {}",
            differ.join("; ")
        )))
    }
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
    fn a_replication_the_cluster_cannot_hold_is_refused() {
        assert!(check_replication(3, 3, Some(2)).is_ok());
        assert!(check_replication(1, 1, None).is_ok());
        let more_than_brokers = check_replication(1, 3, None)
            .expect_err("3 replicas on 1 broker")
            .to_string();
        assert!(
            more_than_brokers.contains("the cluster has 1"),
            "{more_than_brokers}"
        );
        // The catalogue's factor (1) counts when only the minimum is given.
        let min_over_rf = check_replication(3, 1, Some(2))
            .expect_err("2 in sync of 1")
            .to_string();
        assert!(
            min_over_rf.contains("exceeds the replication factor 1"),
            "{min_over_rf}"
        );
        assert!(check_replication(3, 0, None).is_err());
    }

    #[test]
    fn an_existing_topic_differs_only_in_what_was_asked() {
        assert!(differences("t", (1, Some("1")), None, None).is_empty());
        assert!(differences("t", (3, Some("2")), Some(3), Some(2)).is_empty());
        assert_eq!(
            differences("t", (1, Some("1")), Some(3), Some(2)),
            vec![
                "t: replication factor 1, not 3".to_string(),
                "t: min.insync.replicas 1, not 2".to_string()
            ]
        );
        assert_eq!(
            differences("t", (3, None), None, Some(2)),
            vec!["t: min.insync.replicas unknown, not 2".to_string()]
        );
    }

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
