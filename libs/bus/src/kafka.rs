//! How a client reaches the cluster: bootstrap servers plus the librdkafka
//! properties of its identity (security protocol, SASL mechanism and
//! credentials, CA). Every producer, consumer and admin client of the
//! project starts from one of these, so a principal is configured once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

/// librdkafka properties whose values are secrets: never logged or shown.
const SECRET_KEYS: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
];

/// The context of every client the project creates
/// (`create_with_context(Quiet)`; [`Producer`] for producers).
///
/// rdkafka's default context logs every error event at ERROR and every
/// librdkafka log line at its level: during a broker outage that is dozens
/// of lines a second per service (`AllBrokersDown`, `Connection refused`),
/// and a reader of partitions to their end (`enable.partition.eof`) logs
/// each end as an error (rdkafka hands it to `error` before `poll` returns
/// it as `PartitionEOF`). This one logs a partition's end at debug, tells
/// every other error through the broker's [`outage`](crate::outage)
/// tracker (one ERROR, summaries, one INFO at the end), and keeps
/// librdkafka's warnings to debug while the broker is known down.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

/// A producer whose errors are told as [`Quiet`] tells them.
pub type Producer = rdkafka::producer::FutureProducer<Quiet>;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        quiet_error(error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        quiet_log(level, fac, message);
    }
}

impl ConsumerContext for Quiet {}

/// [`Quiet`]'s `error`, for contexts of their own.
pub fn quiet_error(error: KafkaError, reason: &str) {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
        tracing::debug!(target: "rdkafka::client", "librdkafka: end of partition: {reason}");
    } else {
        crate::outage::kafka().failed("librdkafka", &format_args!("{error}: {reason}"));
    }
}

/// [`Quiet`]'s `log`, for contexts of their own.
pub fn quiet_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => {
            crate::outage::kafka().failed("librdkafka", &format_args!("{fac}: {message}"));
        }
        Warning if !crate::outage::kafka().is_down() => {
            tracing::warn!(target: "rdkafka::client", "librdkafka: {fac}: {message}");
        }
        Warning | Notice | Info | Debug => {
            tracing::debug!(target: "rdkafka::client", "librdkafka: {fac}: {message}");
        }
    }
}

/// Bootstrap servers and security properties of one principal.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Kafka {
    props: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("cannot read Kafka properties file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kafka properties file {path}, line {line}: expected key=value")]
    Syntax { path: String, line: usize },
}

impl Kafka {
    /// A client of `brokers` (comma-separated) with no security settings.
    pub fn new(brokers: &str) -> Self {
        Self::default().set("bootstrap.servers", brokers)
    }

    /// Sets one librdkafka property (later calls win).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.props.insert(key.to_string(), value.to_string());
        self
    }

    /// The properties of a librdkafka `.properties` file (`key=value`
    /// lines, `#` comments) added to these; the file's `bootstrap.servers`
    /// wins over the one set before.
    pub fn with_file(mut self, path: &Path) -> Result<Self, KafkaConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KafkaConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        for (k, v) in parse_properties(&text).map_err(|line| KafkaConfigError::Syntax {
            path: shown.clone(),
            line,
        })? {
            self.props.insert(k, v);
        }
        Ok(self)
    }

    /// A fresh librdkafka client configuration holding every property.
    ///
    /// A client waits at most a second between reconnection attempts
    /// (librdkafka's default grows to ten), so a service works again about
    /// a second after its broker returns; a property set here wins.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("reconnect.backoff.max.ms", "1000");
        for (k, v) in &self.props {
            c.set(k, v);
        }
        c
    }

    pub fn brokers(&self) -> &str {
        self.get("bootstrap.servers").unwrap_or_default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// The SASL user name, when the client authenticates with one.
    pub fn username(&self) -> Option<&str> {
        self.get("sasl.username")
    }

    /// The properties as a librdkafka `.properties` file (secrets included:
    /// for files written with mode 0600 only).
    pub fn to_properties(&self) -> String {
        self.props
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }
}

impl fmt::Debug for Kafka {
    // Configs are logged at start-up; passwords must not be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.props {
            if SECRET_KEYS.contains(&k.as_str()) {
                m.entry(k, &"REDACTED");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// `key=value` lines; blank lines and `#`/`!` comments skipped. The line
/// number of the first malformed line on error.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or(i + 1)?;
        let k = k.trim();
        if k.is_empty() {
            return Err(i + 1);
        }
        out.push((k.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn properties_files_parse_and_secrets_stay_out_of_debug() {
        let parsed =
            parse_properties("# c\n\nbootstrap.servers = a:1\nsasl.password=p=w\n").unwrap();
        assert_eq!(
            parsed,
            vec![
                ("bootstrap.servers".into(), "a:1".into()),
                ("sasl.password".into(), "p=w".into())
            ]
        );
        assert_eq!(parse_properties("a=1\nnot a property\n"), Err(2));
        let k = Kafka::new("b:9092")
            .set("sasl.username", "u")
            .set("sasl.password", "hunter2");
        let shown = format!("{k:?}");
        assert!(shown.contains("REDACTED") && !shown.contains("hunter2"));
        assert_eq!(k.brokers(), "b:9092");
        assert_eq!(k.username(), Some("u"));
        assert!(k.to_properties().contains("sasl.password=hunter2\n"));
    }
}

#[cfg(test)]
mod quiet_tests {
    use std::sync::{Arc, Mutex};

    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    use super::*;

    /// Level and target of every event logged.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(Level, String)>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((*event.metadata().level(), event.metadata().target().into()));
            }
        }
    }

    #[test]
    fn the_end_of_a_partition_is_logged_at_debug_and_an_outage_once() {
        let _tracing = crate::TRACING.lock().unwrap_or_else(|e| e.into_inner());
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            Quiet.error(
                KafkaError::Global(RDKafkaErrorCode::PartitionEOF),
                "Fetch from broker 1 reached end of partition at offset 3",
            );
            for _ in 0..50 {
                Quiet.error(
                    KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
                    "1/1 brokers are down",
                );
                Quiet.log(
                    RDKafkaLogLevel::Error,
                    "FAIL",
                    "Connect to 127.0.0.1:9092 failed",
                );
                Quiet.log(RDKafkaLogLevel::Warning, "REQTMOUT", "timed out");
            }
        });
        let seen = seen.0.lock().map(|s| s.clone()).unwrap_or_default();
        let at_warn_or_above = seen.iter().filter(|(l, _)| *l <= Level::WARN).count();
        assert_eq!(seen[0], (Level::DEBUG, "rdkafka::client".to_string()));
        assert_eq!(at_warn_or_above, 1, "{seen:?}");
    }
}
