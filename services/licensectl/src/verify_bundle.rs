//! `licensectl verify-bundle`: checks a dispute bundle with nothing but
//! trusted public keys, so an auditor needs no access to our systems: the
//! projector's (`--jwks` or `--public-key`: its checkpoint of the chain
//! heads) and, per context, the owning service's (`--service-jwks
//! issuance=FILE,...`: their own checkpoints, against which the bundle's
//! inclusion proofs are checked). The two are kept apart so that the
//! exporter's key can never stand in for a service's.

use std::path::PathBuf;

use anyhow::Context;
use evidence::bundle::{verify_bundle, BundleReport, DisputeBundle};
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;

use crate::{read_bounded, read_jwks, MAX_DATA_FILE, MAX_JWKS_FILE};

#[derive(Debug, PartialEq, Eq)]
pub enum KeySource {
    Jwks(Vec<PathBuf>),
    PublicKey(PathBuf),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("key").required(true).args(["jwks", "public_key"])))]
pub struct Args {
    /// The dispute bundle (`GET /v1/licenses/{id}/dispute-bundle`).
    #[arg(long)]
    pub bundle: PathBuf,
    /// The projector's JWKS files, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_parser = crate::file_path)]
    pub jwks: Vec<PathBuf>,
    /// The projector's public key as a PEM file, instead of a JWKS.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// Each service's JWKS, as CONTEXT=FILE pairs, comma-separated
    /// (contexts: issuance, activation, domain, grants): the bundle's
    /// inclusion proofs are checked against their own checkpoints.
    #[arg(long, value_delimiter = ',', value_parser = service_jwks)]
    pub service_jwks: Vec<(String, PathBuf)>,
}

impl Args {
    fn key(&self) -> KeySource {
        match &self.public_key {
            Some(p) => KeySource::PublicKey(p.clone()),
            None => KeySource::Jwks(self.jwks.clone()),
        }
    }
}

/// `CONTEXT=FILE`, the context one whose service signs checkpoints.
fn service_jwks(pair: &str) -> Result<(String, PathBuf), String> {
    match pair.split_once('=') {
        Some((ctx, file)) if contracts::checkpoint::service_of(ctx).is_some() && !file.is_empty() => {
            Ok((ctx.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "wants CONTEXT=FILE with CONTEXT one of issuance, activation, domain, grants; got {pair:?}"
        )),
    }
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

pub fn run(args: &Args, json: bool) -> anyhow::Result<bool> {
    let keys = Keys::load(&args.key())?;
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
    let lines = summary(&report).join("\n");
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        eprintln!("{lines}");
    } else {
        println!("{lines}");
    }
    Ok(report.valid)
}

/// The text lines for a report.
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

    fn parse(line: &str) -> Result<Args, clap::Error> {
        match crate::tests::parse(&format!("verify-bundle {line}"))?.command {
            crate::Command::VerifyBundle(a) => Ok(a),
            other => panic!("not verify-bundle: {other:?}"),
        }
    }

    #[test]
    fn parses_one_key_source() {
        let a = parse("--bundle b.json --jwks k.json").expect("jwks");
        assert_eq!(a.bundle, PathBuf::from("b.json"));
        assert_eq!(a.key(), KeySource::Jwks(vec!["k.json".into()]));
        assert!(a.service_jwks.is_empty());
        assert_eq!(
            parse("--bundle b --jwks p --service-jwks issuance=i.json,activation=a.json")
                .expect("services")
                .service_jwks,
            vec![
                ("issuance".to_string(), PathBuf::from("i.json")),
                ("activation".to_string(), PathBuf::from("a.json"))
            ]
        );
        assert!(parse("--bundle b --jwks p --service-jwks i.json").is_err());
        assert!(parse("--bundle b --jwks p --service-jwks projector=p.json").is_err());
        assert!(parse("--bundle b --jwks ,").is_err());
        assert_eq!(
            parse("--public-key k.pem --bundle b.json")
                .expect("pem")
                .key(),
            KeySource::PublicKey("k.pem".into())
        );
        assert!(parse("--bundle b.json").is_err());
        assert!(parse("--bundle b.json --jwks a --public-key b").is_err());
        assert!(parse("--jwks k.json").is_err());
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
            run(
                &Args {
                    bundle: path.clone(),
                    jwks: vec![jwks.clone()],
                    public_key: None,
                    service_jwks: vec![],
                },
                true,
            )
        };

        let mut b = sample_bundle(&ring);
        assert!(run_on(&serde_json::to_string(&b).expect("json")).expect("runs"));
        b.chains[0].events[0].payload = "{\"seats\":9}".into();
        assert!(!run_on(&serde_json::to_string(&b).expect("json")).expect("runs"));
        assert!(run_on("{\"format\": 1}").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn summarises_in_a_line() {
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
