//! `licensectl kafka provision`: creates a deployment's topics
//! (`schemas/topics.toml`) and the ACLs of every principal
//! (`schemas/acls.toml`) on a cluster, as an administrator. Idempotent: run
//! it at every start, as `make run` does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::{flags, USAGE};

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub config: PathBuf,
    pub brokers: Option<String>,
    pub prefix: String,
    pub group_prefix: Option<String>,
    pub partitions: Option<i32>,
    pub users: BTreeMap<String, String>,
}

pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Args> {
    match args.first().map(String::as_str) {
        Some("provision") => {}
        _ => bail!(USAGE),
    }
    let mut f = flags(
        &args[1..],
        &[
            "--config",
            "--brokers",
            "--prefix",
            "--group-prefix",
            "--partitions",
            "--users",
        ],
    )?;
    let config = f
        .remove("--config")
        .or_else(|| env("LICENSING_KAFKA_ADMIN_CONFIG"))
        .with_context(|| {
            format!("--config (the administrator's librdkafka properties) is required\n{USAGE}")
        })?;
    let partitions = match f.remove("--partitions") {
        None => None,
        Some(v) => match v.parse::<i32>() {
            Ok(n) if (1..=1000).contains(&n) => Some(n),
            _ => bail!("--partitions must be 1..1000, not {v:?}"),
        },
    };
    let mut users = BTreeMap::new();
    if let Some(list) = f.remove("--users") {
        for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((role, user)) = pair.split_once('=') else {
                bail!("--users takes role=user pairs, not {pair:?}");
            };
            users.insert(role.trim().to_string(), user.trim().to_string());
        }
    }
    Ok(Args {
        config: PathBuf::from(config),
        brokers: f.remove("--brokers"),
        prefix: f
            .remove("--prefix")
            .or_else(|| env("LICENSING_TOPIC_PREFIX"))
            .unwrap_or_else(|| "licensing".into()),
        group_prefix: f.remove("--group-prefix"),
        partitions,
        users,
    })
}

pub async fn run(a: &Args) -> anyhow::Result<bool> {
    let known: Vec<String> = bus::acl::roles()?.into_iter().map(|r| r.role).collect();
    if let Some(bad) = a.users.keys().find(|r| !known.contains(r)) {
        bail!("no role {bad:?} in acls.toml (roles: {})", known.join(", "));
    }
    let mut admin = bus::Kafka::default()
        .with_file(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    if let Some(b) = &a.brokers {
        admin = admin.set("bootstrap.servers", b);
    }
    let mut d = bus::Deployment::new(contracts::Topics::new(&a.prefix));
    d.partitions = a.partitions;
    if let Some(g) = &a.group_prefix {
        d.group_prefix = g.clone();
    }
    d.users = a.users.clone();
    let done = bus::provision(&admin, &d).await?;
    if done.authorizer {
        println!(
            "provisioned prefix {}: topics present, {} ACL bindings applied",
            a.prefix, done.acls
        );
    } else {
        println!(
            "provisioned prefix {}: topics present; the cluster has no authorizer, no ACLs applied",
            a.prefix
        );
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn provision_arguments() {
        let none = |_: &str| None;
        let a = parse(
            &args("provision --config a.properties --prefix p --users issuance=x,caller=y --partitions 3"),
            none,
        )
        .expect("parses");
        assert_eq!(a.prefix, "p");
        assert_eq!(a.partitions, Some(3));
        assert_eq!(a.users["issuance"], "x");
        assert_eq!(a.users["caller"], "y");
        assert!(parse(&args("provision"), none).is_err());
        assert!(parse(&args("provision --config a --partitions 0"), none).is_err());
        assert!(parse(&args("provision --config a --users issuance"), none).is_err());
        assert!(parse(&args("frobnicate --config a"), none).is_err());
        let env =
            |k: &str| (k == "LICENSING_KAFKA_ADMIN_CONFIG").then(|| "e.properties".to_string());
        assert_eq!(
            parse(&args("provision"), env).expect("env").config,
            PathBuf::from("e.properties")
        );
    }
}
