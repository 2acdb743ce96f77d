//! Layered configuration: `base.toml`, then `<service>.toml`, then
//! `LICENSING_*` environment variables, later layers winning.
//!
//! Files hold the shared local defaults that are checked in; environment
//! variables are how deployments (and tests) inject addresses and secrets, so
//! nothing environment-specific is ever a literal in code.

use std::fmt;
use std::path::{Path, PathBuf};

use contracts::net::Cidr;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Prefix of every environment variable this loader reads.
pub const ENV_PREFIX: &str = "LICENSING_";
/// Variable naming the directory of the TOML files (default `config`).
pub const CONFIG_DIR_VAR: &str = "LICENSING_CONFIG_DIR";

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The merged layers do not fit the service's config type.
    #[error("invalid config at `{field}`: {message}")]
    Invalid { field: String, message: String },
}

/// Loads the config of `service` from files and the process environment.
///
/// Files: `$LICENSING_CONFIG_DIR/base.toml` then
/// `$LICENSING_CONFIG_DIR/<service>.toml`, both optional. Environment:
/// `LICENSING_<KEY>` sets top-level key `<key>` (lower-cased);
/// `LICENSING_<A>__<B>` sets `b` inside table `a`. Values are read as TOML
/// when they parse as a number, boolean, array or inline table, else as a
/// plain string; quote a value (`'"8080"'`) to force a string.
pub fn load<T: DeserializeOwned>(service: &str) -> Result<T, ConfigError> {
    let dir = std::env::var_os(CONFIG_DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config"));
    // vars_os: a single non-UTF-8 variable must not make the service panic.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    load_from(&dir, service, env)
}

/// [`load`] with the directory and environment given explicitly, so tests
/// need not mutate process-global state.
pub fn load_from<T: DeserializeOwned>(
    dir: &Path,
    service: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut merged = toml::Table::new();
    for file in [dir.join("base.toml"), dir.join(format!("{service}.toml"))] {
        if let Some(layer) = read_layer(&file)? {
            merge(&mut merged, layer);
        }
    }
    merge(&mut merged, env_layer(env));
    serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|err| {
        ConfigError::Invalid {
            field: err.path().to_string(),
            message: err.into_inner().message().to_owned(),
        }
    })
}

fn read_layer(path: &Path) -> Result<Option<toml::Table>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
}

fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> toml::Table {
    let mut layer = toml::Table::new();
    for (name, raw) in env {
        if name == CONFIG_DIR_VAR {
            continue;
        }
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        let nested = nest(&path, env_value(&raw));
        merge(&mut layer, nested);
    }
    layer
}

fn nest(path: &[String], value: toml::Value) -> toml::Table {
    let mut table = toml::Table::new();
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            table.insert(first.clone(), toml::Value::Table(nest(rest, value)));
        }
    }
    table
}

/// Typed when TOML says so (numbers, booleans, arrays, inline tables),
/// otherwise the raw string. Datetimes stay strings: a field typed as a
/// string must not break because its value happens to look like a date.
fn env_value(raw: &str) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| if t.len() == 1 { t.remove("v") } else { None });
    match parsed {
        Some(toml::Value::Datetime(_)) | None => toml::Value::String(raw.to_owned()),
        Some(value) => value,
    }
}

/// Deep merge: tables merge key by key, anything else is replaced.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming);
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Settings every service has. Flatten it into the service's own config:
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// struct IssuanceConfig {
///     #[serde(flatten)]
///     common: service_kit::CommonConfig,
///     #[serde(default)]
///     reclaim_after_days: u32,
/// }
/// ```
///
/// Do not combine it with `deny_unknown_fields` (serde cannot, with
/// flatten) — stray `LICENSING_*` variables are simply ignored.
#[derive(Clone, Deserialize)]
pub struct CommonConfig {
    /// Listen address; port 0 picks a free one.
    #[serde(default = "default_http_addr")]
    pub http_addr: String,
    /// Postgres DSN. Required: there is no sane default for a database, and
    /// it may carry a password, hence the redacting `Debug`.
    pub database_url: String,
    /// DSN of the database's owner, for migrations (and the grants that
    /// follow) at start-up only; the service then serves as the role of
    /// `database_url`, which may append events but never change them.
    /// Unset: migrations run as `database_url`'s role (development).
    #[serde(default)]
    pub database_migration_url: Option<String>,
    /// Comma-separated bootstrap servers.
    #[serde(default = "default_kafka_brokers")]
    pub kafka_brokers: String,
    /// A librdkafka `.properties` file with this service's identity
    /// (`security.protocol`, `sasl.*`, `ssl.*`, ...); the settings below
    /// and `kafka_brokers` win over it.
    #[serde(default)]
    pub kafka_properties_file: Option<String>,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub kafka_security_protocol: Option<String>,
    /// SASL mechanism, e.g. `SCRAM-SHA-512`.
    #[serde(default)]
    pub kafka_sasl_mechanism: Option<String>,
    /// This service's SASL user (its own principal).
    #[serde(default)]
    pub kafka_username: Option<String>,
    /// Its password; a secret, never logged.
    #[serde(default)]
    pub kafka_password: Option<String>,
    /// PEM file of the CA that signed the brokers' certificates (default:
    /// the system's roots).
    #[serde(default)]
    pub kafka_ca_file: Option<String>,
    /// Prefix of every topic name, so tests can isolate themselves.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Partitions per topic when topics are created.
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
    /// `json` (default) or `pretty`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Upper bound of a JSON request body.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Prefix of Kafka consumer group ids (default: the topic prefix). A
    /// second deployment reading the same topics (a rebuild, a replica read
    /// model) sets its own.
    #[serde(default)]
    pub consumer_group_prefix: Option<String>,
    /// Bootstrap admin API keys (`<SecretId>.<SecretKey>`, several separated
    /// by commas while one replaces another), holding every scope; secrets,
    /// never logged.
    #[serde(default)]
    pub admin_key: Option<String>,
    /// A file of bootstrap admin keys, one per line, read again within a
    /// second of any change: rotating (write the new key) or revoking
    /// (empty the file) takes effect without a restart. A file that cannot
    /// be read holds no key.
    #[serde(default)]
    pub admin_key_file: Option<String>,
    /// False opens every endpoint; only for measuring auth's cost.
    #[serde(default = "default_true")]
    pub auth_enabled: bool,
    /// Postgres connections per instance.
    #[serde(default = "default_db_pool_size")]
    pub db_pool_size: u32,
    /// Events between two snapshots of an aggregate (stored in the
    /// command's transaction; loading reads the snapshot and the events
    /// after it). 0 turns snapshots off.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u32,
    /// PKCS#8 PEM file of the P-256 key this service signs with (its
    /// checkpoints, and its documents: activation files, grant documents,
    /// dispute bundles). Its kid is its RFC 7638 thumbprint; to rotate,
    /// point this at a new file (every key ever used stays in the JWKS).
    #[serde(default)]
    pub signing_key_file: Option<String>,
    /// Create `signing_key_file` (mode 0600) when it does not exist: for
    /// development; in production the key is provisioned.
    #[serde(default)]
    pub signing_key_generate: bool,
    /// PEM certificate chain to serve HTTPS with (with `tls_key_file`);
    /// unset: plain HTTP (behind a TLS-terminating proxy).
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<String>,
    /// Least time between two signed checkpoints while events arrive.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// False stops signing checkpoints; exists only to measure their cost.
    #[serde(default = "default_true")]
    pub checkpoints_enabled: bool,
    /// Proxies (addresses or CIDRs) whose `X-Forwarded-For` names the
    /// client (see [`crate::client_addr::client_ip`]): a list, or one
    /// comma-separated string. Empty: the header is never believed, the
    /// peer is the client.
    #[serde(default, deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<Cidr>,
    /// Webhooks (a service that delivers them): plain `http://` callback
    /// URLs are refused unless this is set (`make run` sets it).
    #[serde(default)]
    pub webhook_allow_http: bool,
    /// Networks callbacks may reach although not public (`make run`:
    /// loopback); empty, only public addresses are called.
    #[serde(default)]
    pub webhook_allowed_networks: Vec<String>,
    /// Time for one delivery: connecting, sending, the answer's headers.
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// A failing delivery is retried for this long after its first attempt.
    #[serde(default = "default_webhook_retry_secs")]
    pub webhook_retry_secs: u64,
    /// The wait after a delivery's first failure, doubled after each.
    #[serde(default = "default_webhook_backoff_ms")]
    pub webhook_backoff_ms: u64,
    #[serde(default = "default_webhook_backoff_max_ms")]
    pub webhook_backoff_max_ms: u64,
    /// An endpoint is disabled (an event) after this many failed attempts
    /// in a row...
    #[serde(default = "default_webhook_disable_after_failures")]
    pub webhook_disable_after_failures: u32,
    /// ...spanning at least this long.
    #[serde(default = "default_webhook_retry_secs")]
    pub webhook_disable_after_secs: u64,
}

fn default_webhook_timeout_ms() -> u64 {
    10_000
}
fn default_webhook_retry_secs() -> u64 {
    86_400
}
fn default_webhook_backoff_ms() -> u64 {
    1_000
}
fn default_webhook_backoff_max_ms() -> u64 {
    3_600_000
}
fn default_webhook_disable_after_failures() -> u32 {
    20
}

/// Every entry must parse: a proxy list silently shortened by a typo would
/// make the service rate-limit (and later allowlist) the proxy instead of
/// its clients.
fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    /// A TOML array, or (what an environment variable more easily holds)
    /// one string of comma-separated entries.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entries {
        List(Vec<String>),
        Text(String),
    }
    let entries = match Entries::deserialize(d).map_err(|_| {
        serde::de::Error::custom("trusted_proxies: expected a list of IP addresses or CIDRs")
    })? {
        Entries::List(list) => list,
        Entries::Text(text) if text.trim().is_empty() => vec![],
        Entries::Text(text) => text.split(',').map(str::to_string).collect(),
    };
    entries
        .iter()
        .map(|e| {
            Cidr::parse(e.trim()).ok_or_else(|| {
                let shown: String = e.chars().take(64).collect();
                serde::de::Error::custom(format!(
                    "trusted_proxies: {shown:?} is not an IP address or CIDR"
                ))
            })
        })
        .collect()
}

fn default_http_addr() -> String {
    "127.0.0.1:0".into()
}
fn default_kafka_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_topic_prefix() -> String {
    "licensing".into()
}
fn default_topic_partitions() -> i32 {
    12
}
fn default_log_format() -> String {
    "json".into()
}
fn default_true() -> bool {
    true
}
fn default_db_pool_size() -> u32 {
    32
}
fn default_snapshot_every() -> u32 {
    eventstore::DEFAULT_SNAPSHOT_EVERY
}
fn default_checkpoint_interval_ms() -> u64 {
    5_000
}
fn default_max_body_bytes() -> usize {
    crate::json::DEFAULT_BODY_LIMIT
}

impl fmt::Debug for CommonConfig {
    // Configs get logged at start-up and end up in panic messages; the
    // database password must not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonConfig")
            .field("http_addr", &self.http_addr)
            .field("database_url", &redact_url(&self.database_url))
            .field(
                "database_migration_url",
                &self.database_migration_url.as_deref().map(redact_url),
            )
            .field("kafka_brokers", &redact_url(&self.kafka_brokers))
            .field("kafka_properties_file", &self.kafka_properties_file)
            .field("kafka_security_protocol", &self.kafka_security_protocol)
            .field("kafka_sasl_mechanism", &self.kafka_sasl_mechanism)
            .field("kafka_username", &self.kafka_username)
            .field(
                "kafka_password",
                &self.kafka_password.as_ref().map(|_| REDACTED),
            )
            .field("kafka_ca_file", &self.kafka_ca_file)
            .field("topic_prefix", &self.topic_prefix)
            .field("topic_partitions", &self.topic_partitions)
            .field("log_format", &self.log_format)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("db_pool_size", &self.db_pool_size)
            .field("snapshot_every", &self.snapshot_every)
            .field("consumer_group_prefix", &self.consumer_group_prefix)
            .field("admin_key", &self.admin_key.as_ref().map(|_| REDACTED))
            .field("admin_key_file", &self.admin_key_file)
            .field("auth_enabled", &self.auth_enabled)
            .field("signing_key_file", &self.signing_key_file)
            .field("signing_key_generate", &self.signing_key_generate)
            .field("checkpoint_interval_ms", &self.checkpoint_interval_ms)
            .field("checkpoints_enabled", &self.checkpoints_enabled)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

const REDACTED: &str = "REDACTED";

impl CommonConfig {
    /// The Kafka client settings of this service's principal.
    pub fn kafka(&self) -> Result<bus::Kafka, bus::kafka::KafkaConfigError> {
        let mut k = bus::Kafka::default();
        if let Some(f) = &self.kafka_properties_file {
            k = k.with_file(Path::new(f))?;
        }
        k = k.set("bootstrap.servers", &self.kafka_brokers);
        for (key, value) in [
            ("security.protocol", &self.kafka_security_protocol),
            ("sasl.mechanism", &self.kafka_sasl_mechanism),
            ("sasl.username", &self.kafka_username),
            ("sasl.password", &self.kafka_password),
            ("ssl.ca.location", &self.kafka_ca_file),
        ] {
            if let Some(v) = value {
                k = k.set(key, v);
            }
        }
        Ok(k)
    }
}

/// Hides the password of a connection string, for logs and `Debug`.
///
/// Handles `scheme://user:password@host/...`, a `password=` query parameter
/// and libpq `key=value` strings (`host=x password=y`).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| authority_start + i);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = authority_start..authority_start + at;
            if let Some(colon) = out[userinfo.clone()].find(':') {
                out.replace_range(userinfo.start + colon + 1..userinfo.end, REDACTED);
            }
        }
    }
    redact_param(&out, "password=")
}

/// Replaces the value after every `name` that starts a parameter.
fn redact_param(s: &str, name: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = find_param(rest, name) {
        let value_start = pos + name.len();
        out.push_str(&rest[..value_start]);
        let value_len = rest[value_start..]
            .find(['&', ' ', '#'])
            .unwrap_or(rest.len() - value_start);
        out.push_str(REDACTED);
        rest = &rest[value_start + value_len..];
    }
    out.push_str(rest);
    out
}

fn find_param(s: &str, name: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let pos = from + i;
        let at_boundary = pos == 0 || matches!(s.as_bytes()[pos - 1], b'?' | b'&' | b' ');
        if at_boundary {
            return Some(pos);
        }
        from = pos + name.len();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cr3t@db:5432/issuance"),
            "postgres://app:REDACTED@db:5432/issuance"
        );
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x?sslmode=require"),
            "postgres://app:REDACTED@db/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/x?password=hunter2&sslmode=disable"),
            "postgres://app@db/x?password=REDACTED&sslmode=disable"
        );
        assert_eq!(
            redact_url("host=db user=app password=hunter2 dbname=x"),
            "host=db user=app password=REDACTED dbname=x"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact_url("127.0.0.1:9092"), "127.0.0.1:9092");
        // Not a parameter boundary: left alone.
        assert_eq!(
            redact_url("postgres://db/mypassword=1"),
            "postgres://db/mypassword=1"
        );
    }

    #[test]
    fn env_values_are_typed_when_toml_says_so() {
        assert_eq!(env_value("42"), toml::Value::Integer(42));
        assert_eq!(env_value("true"), toml::Value::Boolean(true));
        assert_eq!(env_value("1.5"), toml::Value::Float(1.5));
        assert_eq!(
            env_value("postgres://u:p@h/db"),
            toml::Value::String("postgres://u:p@h/db".into())
        );
        assert_eq!(env_value("\"8080\""), toml::Value::String("8080".into()));
        assert_eq!(
            env_value("2024-01-01"),
            toml::Value::String("2024-01-01".into())
        );
        // A newline must not smuggle in extra keys.
        assert_eq!(
            env_value("1\nx = 2"),
            toml::Value::String("1\nx = 2".into())
        );
    }
}
