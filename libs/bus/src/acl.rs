//! The Kafka ACLs of every principal, declared once in `schemas/acls.toml`
//! next to the topic catalogue, and turned into concrete bindings for one
//! deployment (topic prefix, consumer-group prefix, user names).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::BusError;

const ACLS_TOML: &str = include_str!("../../../schemas/acls.toml");

/// Kafka's resource type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Topic = 2,
    Group = 3,
    TransactionalId = 5,
}

/// Kafka's pattern type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    Literal = 3,
    Prefixed = 4,
}

/// Kafka's operation codes (those this project grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Read = 3,
    Write = 4,
    Describe = 8,
}

impl Resource {
    pub fn from_code(c: i8) -> Option<Self> {
        [Self::Topic, Self::Group, Self::TransactionalId]
            .into_iter()
            .find(|r| *r as i8 == c)
    }
}

impl Pattern {
    pub fn from_code(c: i8) -> Option<Self> {
        [Self::Literal, Self::Prefixed]
            .into_iter()
            .find(|p| *p as i8 == c)
    }
}

impl Operation {
    pub fn from_code(c: i8) -> Option<Self> {
        [Self::Read, Self::Write, Self::Describe]
            .into_iter()
            .find(|o| *o as i8 == c)
    }
}

/// One ALLOW rule for any host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub resource: Resource,
    pub name: String,
    pub pattern: Pattern,
    /// `User:<name>`.
    pub principal: String,
    pub operation: Operation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    principal: Vec<Role>,
}

/// What one kind of client may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// The service (or kind of client) the principal belongs to.
    pub role: String,
    /// Default SCRAM user name of the role.
    pub user: String,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub transactional_ids: Vec<String>,
}

/// Every role of `schemas/acls.toml`.
pub fn roles() -> Result<Vec<Role>, BusError> {
    let f: File = toml::from_str(ACLS_TOML).map_err(|e| BusError::TopicsFile(e.to_string()))?;
    Ok(f.principal)
}

/// `{prefix}` and `{group}` replaced; a trailing `*` makes the name a prefix.
fn resolve(spec: &str, prefix: &str, group: &str) -> (String, Pattern) {
    let s = spec.replace("{prefix}", prefix).replace("{group}", group);
    match s.strip_suffix('*') {
        Some(p) => (p.to_string(), Pattern::Prefixed),
        None => (s, Pattern::Literal),
    }
}

/// The bindings of every role for a deployment. `users` maps a role to
/// the user name it runs as there (default: the role's `user`).
pub fn bindings(
    prefix: &str,
    group_prefix: &str,
    users: &BTreeMap<String, String>,
) -> Result<Vec<Binding>, BusError> {
    let mut out = BTreeSet::new();
    for role in roles()? {
        let user = users.get(&role.role).unwrap_or(&role.user);
        let principal = format!("User:{user}");
        let mut add = |resource, spec: &str, operation, topic: bool| {
            let spec = if topic {
                format!("{{prefix}}.{spec}")
            } else {
                spec.to_string()
            };
            let (name, pattern) = resolve(&spec, prefix, group_prefix);
            out.insert(Binding {
                resource,
                name,
                pattern,
                principal: principal.clone(),
                operation,
            });
        };
        for t in &role.write {
            add(Resource::Topic, t, Operation::Write, true);
        }
        for t in &role.read {
            add(Resource::Topic, t, Operation::Read, true);
        }
        for g in &role.groups {
            add(Resource::Group, g, Operation::Read, false);
        }
        for t in &role.transactional_ids {
            add(Resource::TransactionalId, t, Operation::Write, false);
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_granted_is_in_the_catalogue_and_every_service_has_a_role() {
        let catalogue: BTreeSet<String> =
            crate::topics::catalogue(&contracts::Topics::new("p"), None)
                .unwrap()
                .into_iter()
                .map(|t| t.0)
                .collect();
        let b = bindings("p", "g", &BTreeMap::new()).unwrap();
        for x in b
            .iter()
            .filter(|x| x.resource == Resource::Topic && x.pattern == Pattern::Literal)
        {
            assert!(
                catalogue.contains(&x.name),
                "{} is not in topics.toml",
                x.name
            );
        }
        let roles: BTreeSet<String> = roles().unwrap().into_iter().map(|r| r.role).collect();
        for service in [
            "issuance",
            "activation",
            "domain-binding",
            "grant-sync",
            "projector",
        ] {
            assert!(roles.contains(service), "no ACLs for {service}");
        }
    }

    #[test]
    fn least_privilege_holds_for_the_events_topics() {
        let b = bindings("p", "g", &BTreeMap::new()).unwrap();
        let writers = |topic: &str| -> BTreeSet<String> {
            b.iter()
                .filter(|x| {
                    x.resource == Resource::Topic
                        && x.operation == Operation::Write
                        && match x.pattern {
                            Pattern::Literal => x.name == topic,
                            Pattern::Prefixed => topic.starts_with(&x.name),
                        }
                })
                .map(|x| x.principal.clone())
                .collect()
        };
        assert_eq!(
            writers("p.issuance.events"),
            BTreeSet::from(["User:licensing-issuance".to_string()])
        );
        assert_eq!(
            writers("p.activation.events"),
            BTreeSet::from(["User:licensing-activation".to_string()])
        );
        // Admin commands: nobody but the cluster's super users.
        assert!(writers("p.issuance.admin-commands").is_empty());
        assert!(writers("p.domain.admin-commands").is_empty());
        assert!(writers("p.grants.admin-commands").is_empty());
        // Another team's service may send each context its commands.
        for topic in [
            "p.issuance.commands",
            "p.activation.commands",
            "p.domain.commands",
        ] {
            assert!(writers(topic).contains("User:licensing-caller"), "{topic}");
        }
        // The operator reads everything and writes nothing.
        let operator: Vec<&Binding> = b
            .iter()
            .filter(|x| x.principal == "User:licensing-operator")
            .collect();
        assert!(operator.iter().any(|x| x.name == "p."
            && x.pattern == Pattern::Prefixed
            && x.operation == Operation::Read));
        assert!(operator.iter().all(|x| x.operation == Operation::Read));
        // Groups and transactional ids land under the deployment's prefixes.
        assert!(b.contains(&Binding {
            resource: Resource::Group,
            name: "g.issuance.".into(),
            pattern: Pattern::Prefixed,
            principal: "User:licensing-issuance".into(),
            operation: Operation::Read,
        }));
        assert!(b.contains(&Binding {
            resource: Resource::TransactionalId,
            name: "relay.p.issuance.events".into(),
            pattern: Pattern::Literal,
            principal: "User:licensing-issuance".into(),
            operation: Operation::Write,
        }));
        let renamed = bindings(
            "p",
            "g",
            &BTreeMap::from([("issuance".to_string(), "svc-iss".to_string())]),
        )
        .unwrap();
        assert!(renamed.iter().any(|x| x.principal == "User:svc-iss"));
        assert!(!renamed
            .iter()
            .any(|x| x.principal == "User:licensing-issuance"));
    }
}
