//! `licensectl verify-bundle`: checks a dispute bundle with nothing but
//! trusted public keys, so an auditor needs no access to our systems: the
//! projector's (`--jwks` or `--public-key`: its checkpoint of the chain
//! heads) and, per context, the owning service's (`--service-jwks
//! issuance=FILE,...`: their own checkpoints, against which the bundle's
//! inclusion proofs are checked). The two are kept apart so that the
//! exporter's key can never stand in for a service's.

use std::path::PathBuf;

use anyhow::{bail, Context};
use evidence::bundle::{verify_bundle, BundleReport, DisputeBundle};
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;

use crate::{file_list, flags, read_bounded, read_jwks, MAX_DATA_FILE, MAX_JWKS_FILE, USAGE};

#[derive(Debug, PartialEq, Eq)]
pub enum KeySource {
    Jwks(Vec<PathBuf>),
    PublicKey(PathBuf),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub bundle: PathBuf,
    pub key: KeySource,
    /// (context, JWKS file) of each service whose checkpoints are trusted.
    pub service_jwks: Vec<(String, PathBuf)>,
}

pub fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut f = flags(
        args,
        &["--bundle", "--jwks", "--public-key", "--service-jwks"],
    )?;
    let bundle = f
        .remove("--bundle")
        .with_context(|| format!("--bundle is required\n{USAGE}"))?;
    let key = match (f.remove("--jwks"), f.remove("--public-key")) {
        (Some(p), None) => KeySource::Jwks(file_list("--jwks", &p)?),
        (None, Some(p)) => KeySource::PublicKey(p.into()),
        _ => bail!("exactly one of --jwks and --public-key is required\n{USAGE}"),
    };
    let service_jwks = match f.remove("--service-jwks") {
        None => vec![],
        Some(v) => v
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((ctx, file))
                    if contracts::checkpoint::service_of(ctx).is_some() && !file.is_empty() =>
                {
                    Ok((ctx.to_string(), PathBuf::from(file)))
                }
                _ => bail!(
                    "--service-jwks wants CONTEXT=FILE with CONTEXT one of issuance, \
                     activation, domain, grants; got {pair:?}\n{USAGE}"
                ),
            })
            .collect::<anyhow::Result<_>>()?,
    };
    Ok(Args {
        bundle: bundle.into(),
        key,
        service_jwks,
    })
}

enum Keys {
    ByKid(Vec<(String, VerifyingKey)>),
    /// A bare PEM carries no kid, so it answers for any.
    Single(VerifyingKey),
}

impl Keys {
    fn load(source: &KeySource) -> anyhow::Result<Self> {
        match source {
            KeySource::Jwks(paths) => read_jwks(paths).map(Self::ByKid),
            KeySource::PublicKey(path) => {
                VerifyingKey::from_public_key_pem(&read_bounded(path, MAX_JWKS_FILE)?)
                    .map(Self::Single)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{} is not a P-256 public key (SPKI PEM expected): {e}",
                            path.display()
                        )
                    })
            }
        }
    }

    fn get(&self, kid: &str) -> Option<VerifyingKey> {
        match self {
            Self::ByKid(keys) => keys.iter().find(|(k, _)| k == kid).map(|(_, v)| *v),
            Self::Single(v) => Some(*v),
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<bool> {
    let keys = Keys::load(&args.key)?;
    let mut services: Vec<(String, String, VerifyingKey)> = Vec::new();
    for (context, file) in &args.service_jwks {
        for (kid, key) in read_jwks(std::slice::from_ref(file))? {
            services.push((context.clone(), kid, key));
        }
    }
    let bundle: DisputeBundle =
        serde_json::from_str(&read_bounded(&args.bundle, MAX_DATA_FILE)?)
            .with_context(|| format!("{} is not a dispute bundle", args.bundle.display()))?;
    let report = verify_bundle(
        &bundle,
        |kid| keys.get(kid),
        |context, kid| {
            services
                .iter()
                .find(|(c, k, _)| c == context && k == kid)
                .map(|(_, _, v)| *v)
        },
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("{}", summary(&report).join("\n"));
    Ok(report.valid)
}

/// The stderr lines for a report.
fn summary(report: &BundleReport) -> Vec<String> {
    if !report.valid {
        return report
            .failures
            .iter()
            .map(|f| format!("licensectl: bundle INVALID: {f}"))
            .collect();
    }
    let events: usize = report.chains.iter().map(|c| c.events).sum();
    let proven: usize = report.chains.iter().map(|c| c.proven).sum();
    vec![format!(
        "licensectl: bundle valid: {} chains, {events} events ({proven} proven in their \
         services' signed checkpoints), signed by kid {} at {}",
        report.chains.len(),
        report.kid.as_deref().unwrap_or("?"),
        report.exported_at.to_rfc3339(),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_one_key_source() {
        assert_eq!(
            parse(&args("--bundle b.json --jwks k.json")).expect("jwks"),
            Args {
                bundle: "b.json".into(),
                key: KeySource::Jwks(vec!["k.json".into()]),
                service_jwks: vec![],
            }
        );
        assert_eq!(
            parse(&args(
                "--bundle b --jwks p --service-jwks issuance=i.json,activation=a.json"
            ))
            .expect("services")
            .service_jwks,
            vec![
                ("issuance".to_string(), PathBuf::from("i.json")),
                ("activation".to_string(), PathBuf::from("a.json"))
            ]
        );
        assert!(parse(&args("--bundle b --jwks p --service-jwks i.json")).is_err());
        assert!(parse(&args("--bundle b --jwks p --service-jwks projector=p.json")).is_err());
        assert!(parse(&args("--bundle b --jwks ,")).is_err());
        assert_eq!(
            parse(&args("--public-key k.pem --bundle b.json"))
                .expect("pem")
                .key,
            KeySource::PublicKey("k.pem".into())
        );
        assert!(parse(&args("--bundle b.json")).is_err());
        assert!(parse(&args("--bundle b.json --jwks a --public-key b")).is_err());
        assert!(parse(&args("--jwks k.json")).is_err());
    }

    #[test]
    fn a_public_key_pem_is_read() {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let ring = signing::KeyRing::generate("k1").expect("ring");
        let key = signing::verifying_key(&ring.jwks().keys[0]).expect("key");
        let pem = key.to_public_key_pem(LineEnding::LF).expect("pem");
        let path = std::env::temp_dir().join(format!("licensectl-{}.pem", std::process::id()));
        std::fs::write(&path, pem).expect("write");
        let keys = Keys::load(&KeySource::PublicKey(path.clone())).expect("loads");
        let _ = std::fs::remove_file(&path);
        assert_eq!(keys.get("whatever"), Some(key));
    }

    fn sample_bundle(ring: &signing::KeyRing) -> DisputeBundle {
        let mut e = eventstore::StoredEvent {
            global_position: 1,
            event_id: uuid::Uuid::now_v7(),
            aggregate_type: "License".into(),
            aggregate_id: "l1".into(),
            sequence: 1,
            event_type: "LicenseIssued".into(),
            event_version: "1".into(),
            payload: "{}".into(),
            metadata: "{}".into(),
            recorded_at: chrono::Utc::now(),
            prev_hash: evidence::chain::ZERO_HASH.to_vec(),
            hash: vec![],
        };
        e.hash = e.compute_hash(&e.prev_hash).to_vec();
        let chain = evidence::bundle::BundleChain {
            context: "issuance".into(),
            aggregate_type: "License".into(),
            aggregate_id: "l1".into(),
            events: vec![e],
            proofs: vec![],
        };
        evidence::bundle::seal(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            vec![chain],
            vec![],
            "t",
            |c| ring.sign(c),
        )
        .expect("seal")
    }

    #[test]
    fn checks_bundle_files() {
        let ring = signing::KeyRing::generate("k1").expect("ring");
        let dir = std::env::temp_dir().join(format!("licensectl-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, serde_json::to_string(&ring.jwks()).expect("json")).expect("write");
        let path = dir.join("bundle.json");
        let run_on = |b: &str| {
            std::fs::write(&path, b).expect("write");
            run(&Args {
                bundle: path.clone(),
                key: KeySource::Jwks(vec![jwks.clone()]),
                service_jwks: vec![],
            })
        };

        let mut b = sample_bundle(&ring);
        assert!(run_on(&serde_json::to_string(&b).expect("json")).expect("runs"));
        b.chains[0].events[0].payload = "{\"seats\":9}".into();
        assert!(!run_on(&serde_json::to_string(&b).expect("json")).expect("runs"));
        assert!(run_on("{\"format\": 1}").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn summarises_on_stderr() {
        let ring = signing::KeyRing::generate("k1").expect("ring");
        let mut b = sample_bundle(&ring);
        let jwks = ring.jwks();
        let key = |_: &str| signing::verifying_key(&jwks.keys[0]).ok();
        let lines = summary(&verify_bundle(&b, key, |_, _| None));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0]
                .starts_with("licensectl: bundle valid: 1 chains, 1 events (0 proven in their services' signed checkpoints), signed by kid k1 at "),
            "{lines:?}"
        );
        b.chains.clear();
        let lines = summary(&verify_bundle(&b, key, |_, _| None));
        assert_eq!(
            lines,
            ["licensectl: bundle INVALID: License l1 (issuance): chain is in the signed checkpoint but missing from the bundle"]
        );
    }
}
