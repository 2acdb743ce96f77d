//! Config layering: base file, service file, environment.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use service_kit::config::{load_from, ConfigError};
use service_kit::{load, CommonConfig};

#[derive(Debug, Deserialize)]
struct IssuanceConfig {
    #[serde(flatten)]
    common: CommonConfig,
    reclaim_after_days: u32,
    #[serde(default)]
    relay: Relay,
}

#[derive(Debug, Default, Deserialize)]
struct Relay {
    #[serde(default)]
    batch_size: u32,
    #[serde(default)]
    enabled: bool,
}

/// A fresh directory with the given files, removed on drop (no tempfile
/// crate needed).
struct ConfigDir(PathBuf);

impl std::ops::Deref for ConfigDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_dir(files: &[(&str, &str)]) -> ConfigDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "service-kit-config-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    ConfigDir(dir)
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn layers_base_then_service_then_env() {
    let dir = config_dir(&[
        (
            "base.toml",
            r#"
            database_url = "postgres://base@db/base"
            kafka_brokers = "base:9092"
            topic_prefix = "base"
            reclaim_after_days = 1
            [relay]
            batch_size = 10
            enabled = false
            "#,
        ),
        (
            "issuance.toml",
            r#"
            topic_prefix = "svc"
            reclaim_after_days = 90
            [relay]
            enabled = true
            "#,
        ),
        // Another service's file is not read.
        ("activation.toml", "reclaim_after_days = 7"),
    ]);
    let cfg: IssuanceConfig = load_from(
        &dir,
        "issuance",
        env(&[
            (
                "LICENSING_DATABASE_URL",
                "postgres://app:s3cret@127.0.0.1:5432/issuance",
            ),
            ("LICENSING_TOPIC_PARTITIONS", "3"),
            ("LICENSING_RELAY__BATCH_SIZE", "500"),
            ("LICENSING_CONFIG_DIR", "/elsewhere"),
            ("UNRELATED", "x"),
            ("LICENSING_SOMETHING_ELSE", "ignored by serde"),
        ]),
    )
    .unwrap();
    assert_eq!(
        cfg.common.database_url,
        "postgres://app:s3cret@127.0.0.1:5432/issuance"
    );
    assert_eq!(cfg.common.kafka_brokers, "base:9092");
    assert_eq!(cfg.common.topic_prefix, "svc");
    assert_eq!(cfg.common.topic_partitions, 3);
    assert_eq!(cfg.reclaim_after_days, 90);
    assert_eq!(cfg.relay.batch_size, 500);
    assert!(cfg.relay.enabled);
    // Defaults for what no layer set.
    assert_eq!(cfg.common.http_addr, "127.0.0.1:0");
    assert_eq!(cfg.common.log_format, "json");
    assert_eq!(cfg.common.max_body_bytes, 65536);
}

#[test]
fn files_are_optional() {
    let dir = config_dir(&[]);
    let cfg: CommonConfig = load_from(
        &dir,
        "issuance",
        env(&[("LICENSING_DATABASE_URL", "postgres://db/x")]),
    )
    .unwrap();
    assert_eq!(cfg.kafka_brokers, "127.0.0.1:9092");
    assert_eq!(cfg.topic_prefix, "licensing");
    assert_eq!(cfg.topic_partitions, 12);
}

#[test]
fn debug_redacts_the_database_password() {
    let dir = config_dir(&[("base.toml", "reclaim_after_days = 90")]);
    let cfg: IssuanceConfig = load_from(
        &dir,
        "issuance",
        env(&[(
            "LICENSING_DATABASE_URL",
            "postgres://app:s3cret@127.0.0.1:5432/issuance",
        )]),
    )
    .unwrap();
    let printed = format!("{cfg:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(
        printed.contains("postgres://app:REDACTED@127.0.0.1:5432/issuance"),
        "{printed}"
    );
    let pretty = format!("{cfg:#?}");
    assert!(!pretty.contains("s3cret"), "{pretty}");
}

#[test]
fn errors_name_the_field_or_file() {
    let dir = config_dir(&[("base.toml", "reclaim_after_days = 90")]);
    let err = load_from::<IssuanceConfig>(&dir, "issuance", env(&[])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { message, .. } if message.contains("database_url")),
        "{err}"
    );

    let err = load_from::<IssuanceConfig>(
        &dir,
        "issuance",
        env(&[
            ("LICENSING_DATABASE_URL", "postgres://db/x"),
            ("LICENSING_RELAY__BATCH_SIZE", "lots"),
        ]),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { field, .. } if field == "relay.batch_size"),
        "{err}"
    );

    let dir = config_dir(&[("issuance.toml", "this is = = not toml")]);
    let err = load_from::<IssuanceConfig>(&dir, "issuance", env(&[])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Parse { path, .. } if path.ends_with("issuance.toml")),
        "{err}"
    );
}

#[test]
fn trusted_proxies_are_addresses_or_cidrs_and_a_bad_entry_fails_the_load() {
    use contracts::net::Cidr;
    let dir = config_dir(&[("base.toml", "reclaim_after_days = 90")]);
    let db = ("LICENSING_DATABASE_URL", "postgres://db/x");
    let cfg: IssuanceConfig = load_from(&dir, "issuance", env(&[db])).unwrap();
    assert!(cfg.common.trusted_proxies.is_empty());
    let cfg: IssuanceConfig = load_from(
        &dir,
        "issuance",
        env(&[
            db,
            (
                "LICENSING_TRUSTED_PROXIES",
                r#"["10.0.0.0/8", "2001:db8::1"]"#,
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        cfg.common.trusted_proxies,
        vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("2001:db8::1").unwrap()
        ]
    );
    for bad in [
        r#"["10.0.0.0/8", "10.0.0.0/33"]"#,
        r#"["proxy.internal"]"#,
        r#"[""]"#,
    ] {
        let err = load_from::<IssuanceConfig>(
            &dir,
            "issuance",
            env(&[db, ("LICENSING_TRUSTED_PROXIES", bad)]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, ConfigError::Invalid { .. }) && text.contains("trusted_proxies"),
            "{bad}: {text}"
        );
        assert!(
            text.contains("10.0.0.0/33")
                || text.contains("proxy.internal")
                || text.contains("\"\""),
            "{bad}: {text}"
        );
    }
    // One string of comma-separated entries, as an environment variable
    // most easily holds them.
    let cfg: IssuanceConfig = load_from(
        &dir,
        "issuance",
        env(&[db, ("LICENSING_TRUSTED_PROXIES", "10.0.0.1, fd00::/8")]),
    )
    .unwrap();
    assert_eq!(
        cfg.common.trusted_proxies,
        vec![
            Cidr::parse("10.0.0.1").unwrap(),
            Cidr::parse("fd00::/8").unwrap()
        ]
    );
    let err = load_from::<IssuanceConfig>(
        &dir,
        "issuance",
        env(&[db, ("LICENSING_TRUSTED_PROXIES", "10.0.0.1,,10.0.0.2")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("trusted_proxies"), "{err}");
    let err = load_from::<IssuanceConfig>(
        &dir,
        "issuance",
        env(&[db, ("LICENSING_TRUSTED_PROXIES", "7")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("trusted_proxies"), "{err}");
}

/// The only test here touching the process environment, so no other test
/// can observe it.
#[test]
fn load_reads_the_process_environment() {
    let dir = config_dir(&[("base.toml", "topic_prefix = \"from-file\"")]);
    std::env::set_var("LICENSING_CONFIG_DIR", &dir.0);
    std::env::set_var("LICENSING_DATABASE_URL", "postgres://u:pw@h/db");
    std::env::set_var("LICENSING_MAX_BODY_BYTES", "1024");
    let cfg: CommonConfig = load("issuance").unwrap();
    assert_eq!(cfg.topic_prefix, "from-file");
    assert_eq!(cfg.database_url, "postgres://u:pw@h/db");
    assert_eq!(cfg.max_body_bytes, 1024);
}
