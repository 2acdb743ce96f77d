//! `licensectl kafka provision`: creates a deployment's topics
//! (`schemas/topics.toml`) and the ACLs of every principal
//! (`schemas/acls.toml`) on a cluster, as an administrator. Idempotent: run
//! it at every start, as `make run` does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the deployment's topics and every principal's ACLs
    /// (idempotent: `make run` runs it at every start).
    Provision(Args),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The administrator's librdkafka properties.
    #[arg(long, env = "LICENSING_KAFKA_ADMIN_CONFIG", hide_env_values = true)]
    pub config: PathBuf,
    /// Bootstrap servers, overriding the properties' own.
    #[arg(long)]
    pub brokers: Option<String>,
    #[command(flatten)]
    pub prefix: crate::Prefix,
    /// The consumer-group prefix the ACLs allow (the topic prefix when left out).
    #[arg(long)]
    pub group_prefix: Option<String>,
    /// Partitions of each topic created (the topic file's when left out).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: Option<i32>,
    /// Replicas of each topic created (the topic file's, 1, when left out;
    /// 3 in production).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=32))]
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of each topic created (the broker's when left
    /// out; 2 with 3 replicas in production).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=32))]
    pub min_insync_replicas: Option<i32>,
    /// The user of each role, as ROLE=USER pairs, comma-separated (roles:
    /// schemas/acls.toml).
    #[arg(long, value_delimiter = ',', value_parser = role_user)]
    pub users: Vec<(String, String)>,
}

/// `ROLE=USER`.
fn role_user(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((role, user)) if !role.trim().is_empty() && !user.trim().is_empty() => {
            Ok((role.trim().to_string(), user.trim().to_string()))
        }
        _ => Err(format!("takes ROLE=USER pairs, not {pair:?}")),
    }
}

pub async fn run(a: &Args, json: bool) -> anyhow::Result<bool> {
    let known: Vec<String> = bus::acl::roles()?.into_iter().map(|r| r.role).collect();
    let users: BTreeMap<String, String> = a.users.iter().cloned().collect();
    if users.len() < a.users.len() {
        bail!("--users names a role twice");
    }
    if let Some(bad) = users.keys().find(|r| !known.contains(r)) {
        bail!("no role {bad:?} in acls.toml (roles: {})", known.join(", "));
    }
    let mut admin = bus::Kafka::default()
        .with_file(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    if let Some(b) = &a.brokers {
        admin = admin.set("bootstrap.servers", b);
    }
    let mut d = bus::Deployment::new(contracts::Topics::new(&a.prefix.prefix));
    d.partitions = a.partitions;
    d.replication_factor = a.replication_factor;
    d.min_insync_replicas = a.min_insync_replicas;
    if let Some(g) = &a.group_prefix {
        d.group_prefix = g.clone();
    }
    d.users = users;
    let done = bus::provision(&admin, &d).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"prefix": a.prefix.prefix, "authorizer": done.authorizer, "acls": done.acls})
        );
    } else if done.authorizer {
        println!(
            "provisioned prefix {}: topics present, {} ACL bindings applied",
            a.prefix.prefix, done.acls
        );
    } else {
        println!(
            "provisioned prefix {}: topics present; the cluster has no authorizer, no ACLs applied",
            a.prefix.prefix
        );
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, clap::Error> {
        match crate::tests::parse(line)?.command {
            crate::Command::Kafka(Command::Provision(a)) => Ok(a),
            other => panic!("not kafka provision: {other:?}"),
        }
    }

    #[test]
    fn provision_arguments() {
        let a = parse(
            "kafka provision --config a.properties --prefix p --users issuance=x,caller=y --partitions 3",
        )
        .expect("parses");
        assert_eq!(a.prefix.prefix, "p");
        assert_eq!(a.partitions, Some(3));
        assert_eq!(
            a.users,
            [
                ("issuance".into(), "x".into()),
                ("caller".into(), "y".into())
            ]
        );
        assert!(parse("kafka provision --config a --partitions 0").is_err());
        assert!(parse("kafka provision --config a --users issuance").is_err());
        assert!(parse("kafka frobnicate --config a").is_err());
        assert!(parse("kafka provision --config a --partition 3").is_err());
    }
}
