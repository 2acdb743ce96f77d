//! Provisioning a deployment on a cluster: the topics of
//! `schemas/topics.toml` and the ACLs of `schemas/acls.toml`, both
//! idempotent. Runs with an administrator's credentials (`licensectl kafka
//! provision`, the tests' harness); the services themselves hold only
//! their own least-privilege principals and never create anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use contracts::Topics;

use crate::acl::{self, Binding};
use crate::wire::{Connection, WireError, SECURITY_DISABLED};
use crate::{BusError, Kafka};

#[derive(Debug, Clone)]
pub struct Deployment {
    pub topics: Topics,
    /// Partitions of new topics (None: the catalogue's).
    pub partitions: Option<i32>,
    /// Replicas of each new topic (None: the catalogue's, 1). A production
    /// cluster wants 3.
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of each new topic (None: the broker's). With
    /// `acks=all`, 2 of 3 keeps every acknowledged write through the loss
    /// of one broker.
    pub min_insync_replicas: Option<i32>,
    /// Prefix of consumer group ids (the services' `consumer_group_prefix`).
    pub group_prefix: String,
    /// Role → user name, for roles not run as their default user.
    pub users: BTreeMap<String, String>,
}

impl Deployment {
    pub fn new(topics: Topics) -> Self {
        Self {
            group_prefix: topics.prefix().to_string(),
            topics,
            partitions: None,
            replication_factor: None,
            min_insync_replicas: None,
            users: BTreeMap::new(),
        }
    }
}

/// What provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// ACL bindings applied; 0 on a cluster without an authorizer.
    pub acls: usize,
    /// False when the cluster has no authorizer (every client may do
    /// everything there: only for benchmarks and local experiments).
    pub authorizer: bool,
}

/// Creates the deployment's missing topics and ACLs, and waits until the
/// broker enforces the ACLs (a service started right after is let in).
pub async fn provision(admin: &Kafka, d: &Deployment) -> Result<Provisioned, BusError> {
    let bindings = acl::bindings(d.topics.prefix(), &d.group_prefix, &d.users)?;
    let wire = |e: WireError| BusError::Provision(e.to_string());
    // First: it fails fast on wrong credentials, where librdkafka retries.
    let mut conn = Connection::open(admin).await.map_err(wire)?;
    crate::topics::ensure_topics(admin, d).await?;
    match conn.create_acls(&bindings).await {
        Ok(()) => {}
        Err(WireError::Broker { code, .. }) if code == SECURITY_DISABLED => {
            tracing::warn!("the cluster has no authorizer: ACLs not applied");
            return Ok(Provisioned {
                acls: 0,
                authorizer: false,
            });
        }
        Err(e) => return Err(wire(e)),
    }
    let principals: BTreeSet<&str> = bindings.iter().map(|b| b.principal.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in principals {
        let want: BTreeSet<&Binding> = bindings.iter().filter(|b| b.principal == p).collect();
        loop {
            let have: BTreeSet<Binding> =
                conn.acls_of(p).await.map_err(wire)?.into_iter().collect();
            if want.iter().all(|b| have.contains(*b)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(BusError::Provision(format!(
                    "ACLs of {p} not visible at the broker after 20 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Provisioned {
        acls: bindings.len(),
        authorizer: true,
    })
}
