//! One tracing subscriber per process, and the per-request correlation id.

use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use tracing::field::{Field, Visit};
use tracing::{Event, Instrument, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Header carrying the correlation id in both directions.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Installs the global subscriber: JSON lines (`format = "json"`, the
/// default) or human-readable (`"pretty"`), filtered by `RUST_LOG`
/// (default `info`). Requests actix-http's parser rejects are not logged
/// unless `RUST_LOG` asks for debug everywhere or names `actix_http` (see
/// [`CallerErrors`]).
///
/// Calling it again is a no-op, because integration tests start several
/// services in one process and only the first subscriber can be global.
pub fn init(service: &str, format: &str) {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.trim().is_empty());
    let spec = rust_log.as_deref().unwrap_or("info");
    let filter = EnvFilter::try_new(with_outage_quiet(spec))
        .or_else(|_| EnvFilter::try_new(with_outage_quiet("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let quiet = CallerErrors::unless_wanted(rust_log.as_deref());
    let installed = if format.eq_ignore_ascii_case("pretty") {
        tracing_subscriber::fmt()
            .pretty()
            .with_env_filter(filter)
            .finish()
            .with(quiet)
            .try_init()
            .is_ok()
    } else {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .finish()
            .with(quiet)
            .try_init()
            .is_ok()
    };
    if installed {
        tracing::info!(service, log_format = format, "telemetry initialised");
    }
}

/// sqlx's own lines about a database going away: one WARN per pooled
/// connection for the server's "terminating connection" notice, one per
/// connection failing its check on release, one per slow acquire. The
/// outage tracker (`bus::outage`) tells that story once; these targets
/// carry nothing else of ours (a server notice is never an error, and a
/// failed acquire reaches the caller as an error). `RUST_LOG` naming a
/// target keeps the operator's choice for it.
const OUTAGE_QUIET: &[&str] = &[
    "sqlx::postgres::notice=error",
    "sqlx_core::pool::connection=error",
    "sqlx::pool::acquire=error",
];

fn with_outage_quiet(spec: &str) -> String {
    let mut spec = spec.to_owned();
    for directive in OUTAGE_QUIET {
        let target = directive.split('=').next().unwrap_or_default();
        if !spec.contains(target) {
            spec.push(',');
            spec.push_str(directive);
        }
    }
    spec
}

/// Drops actix-http's `stream error: …` events, which it logs at ERROR for
/// every connection that ends in a dispatch error: a malformed request
/// line or header, a body that breaks off, a slow or vanished client. All
/// of them are the caller's doing, answered 400/408 or not at all, and any
/// client could fill the log with them at will. tracing cannot lower an
/// event's level, and an `EnvFilter` directive could only silence the whole
/// `actix_http::h1::dispatcher` target, which would hide its other ERROR
/// events too (a response body stream failing, actix's own internal
/// errors); so this looks at the one message, before any layer formats it.
/// Not installed when `RUST_LOG` asks for debug everywhere or names
/// `actix_http`: then they are shown, as debugging output.
#[derive(Debug, Clone, Copy)]
pub struct CallerErrors;

/// The module whose dispatch errors [`CallerErrors`] drops.
const DISPATCHER: &str = "actix_http::h1::dispatcher";

impl CallerErrors {
    /// The layer, unless `rust_log` wants these messages.
    pub fn unless_wanted(rust_log: Option<&str>) -> Option<Self> {
        let shown = rust_log.is_some_and(|spec| {
            spec.split(',').map(str::trim).any(|directive| {
                directive.starts_with("actix_http")
                    || ["debug", "trace"]
                        .iter()
                        .any(|level| directive.eq_ignore_ascii_case(level))
            })
        });
        (!shown).then_some(Self)
    }
}

impl<S: Subscriber> Layer<S> for CallerErrors {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || meta.target() != DISPATCHER {
            return true;
        }
        let mut message = MessageStart(false);
        event.record(&mut message);
        !message.0
    }
}

/// Whether an event's message starts with `stream error`.
struct MessageStart(bool);

impl Visit for MessageStart {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}").starts_with("stream error");
        }
    }
}

/// The id tying together the logs, events and replies of one request.
///
/// Take it as a handler argument to stamp it on commands and events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(pub String);

impl CorrelationId {
    /// A fresh id (UUIDv7, so ids sort by creation time).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts a client-supplied id when it is a UUID or 1–64 characters of
    /// `[A-Za-z0-9._-]`. Anything else is refused: the id is echoed in a
    /// header and written to logs, so it must not carry arbitrary text.
    pub fn parse(raw: &str) -> Option<Self> {
        if !contracts::envelope::is_trace_id(raw) {
            return None;
        }
        // Braced and URN forms are UUIDs too; store them canonically.
        Some(match uuid::Uuid::parse_str(raw) {
            Ok(id) if raw.len() > 36 || raw.contains(['{', ':']) => {
                Self(id.hyphenated().to_string())
            }
            _ => Self(raw.to_owned()),
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromRequest for CorrelationId {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        // Without the middleware (an App built by hand) there is no stored
        // id; a fresh one still lets the handler correlate what it emits.
        let id = req
            .extensions()
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(CorrelationId::generate);
        ready(Ok(id))
    }
}

/// Middleware: assigns the correlation id, runs the request inside a span
/// carrying it, logs one line per request and echoes the id.
///
/// Only method, path (without query string), status and latency are logged:
/// headers, query strings and bodies may hold API keys and license keys.
/// A successful read (GET/HEAD below 400) logs at debug: host checks and
/// other hot reads would otherwise spend ~40 % of their CPU formatting log
/// lines, and `/metrics` counts and times them anyway. Writes and failures
/// log at info.
pub(crate) async fn correlate(
    service: Arc<str>,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(CorrelationId::parse)
        .unwrap_or_else(CorrelationId::generate);
    req.extensions_mut().insert(id.clone());
    let read = req.method() == actix_web::http::Method::GET
        || req.method() == actix_web::http::Method::HEAD;
    let method = req.method().clone();
    let path = req.path().to_string();
    let span = if read {
        tracing::debug_span!(
            "http_request",
            service = %service,
            correlation_id = %id,
            method = %method,
            path = %path,
        )
    } else {
        tracing::info_span!(
            "http_request",
            service = %service,
            correlation_id = %id,
            method = %method,
            path = %path,
        )
    };
    let result = next.call(req).instrument(span.clone()).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if read && status.as_u16() < 400 {
        span.in_scope(|| {
            tracing::debug!(status = status.as_u16(), latency_ms, "request completed");
        });
    } else {
        tracing::info!(
            service = %service,
            correlation_id = %id,
            method = %method,
            path = %path,
            status = status.as_u16(),
            latency_ms,
            "request completed"
        );
    }
    match result {
        Ok(mut res) => {
            insert_header(res.headers_mut(), &id);
            Ok(res)
        }
        Err(err) => Err(Correlated { inner: err, id }.into()),
    }
}

fn insert_header(headers: &mut HeaderMap, id: &CorrelationId) {
    // Always valid: `CorrelationId::parse` admits only header-safe bytes.
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        headers.insert(HeaderName::from_static(CORRELATION_HEADER), value);
    }
}

/// An error that escaped the inner services (a scope middleware failed):
/// there is no response yet to put the header on, so the error carries the
/// id into the response actix renders from it.
#[derive(Debug)]
struct Correlated {
    inner: actix_web::Error,
    id: CorrelationId,
}

impl std::fmt::Display for Correlated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

impl ResponseError for Correlated {
    fn status_code(&self) -> StatusCode {
        self.inner.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut res = self.inner.error_response();
        insert_header(res.headers_mut(), &self.id);
        res
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn caller_errors_are_dropped_unless_rust_log_wants_them() {
        for spec in [
            None,
            Some("info"),
            Some("warn,sqlx=warn"),
            Some("info,projector=debug"),
        ] {
            assert!(CallerErrors::unless_wanted(spec).is_some(), "{spec:?}");
        }
        for spec in [
            "debug",
            "TRACE",
            "info,actix_http=debug",
            "actix_http::h1=trace",
        ] {
            assert!(CallerErrors::unless_wanted(Some(spec)).is_none(), "{spec}");
        }
    }

    /// Levels of the events that reach a layer behind [`CallerErrors`].
    #[derive(Clone, Default)]
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<(Level, String)>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((*event.metadata().level(), event.metadata().target().into()));
            }
        }
    }

    #[test]
    fn only_the_dispatchers_stream_errors_are_dropped() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(CallerErrors)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: {}", "parse error");
            tracing::error!(target: "actix_http::h1::dispatcher", "Response payload stream error: x");
            tracing::error!(target: "actix_http::h1::dispatcher", "Internal server error: unexpected eof");
            tracing::error!(target: "elsewhere", "stream error: ours");
            tracing::debug!(target: "actix_http::h1::dispatcher", "stream error: at debug");
        });
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (Level::ERROR, DISPATCHER.to_string()),
                (Level::ERROR, DISPATCHER.to_string()),
                (Level::ERROR, "elsewhere".to_string()),
                (Level::DEBUG, DISPATCHER.to_string()),
            ]
        );
    }

    #[test]
    fn accepts_only_safe_ids() {
        assert_eq!(
            CorrelationId::parse("abc-123_x.y").unwrap().0,
            "abc-123_x.y"
        );
        assert!(CorrelationId::parse(&"a".repeat(64)).is_some());
        assert!(CorrelationId::parse(&"a".repeat(65)).is_none());
        assert!(CorrelationId::parse("").is_none());
        assert!(CorrelationId::parse("has space").is_none());
        assert!(CorrelationId::parse("a\nb").is_none());
        assert_eq!(
            CorrelationId::parse("{67e55044-10b1-426f-9247-bb680e5fe0c8}")
                .unwrap()
                .0,
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
    }
}

#[cfg(test)]
mod outage_quiet_tests {
    use super::*;

    #[test]
    fn sqlx_outage_lines_are_quiet_unless_rust_log_names_their_target() {
        let spec = with_outage_quiet("info,sqlx=warn");
        assert!(spec.starts_with("info,sqlx=warn,"));
        for d in OUTAGE_QUIET {
            assert!(spec.contains(d), "{spec}");
        }
        assert!(EnvFilter::try_new(&spec).is_ok());
        let chosen = with_outage_quiet("info,sqlx::postgres::notice=warn");
        assert!(!chosen.contains("sqlx::postgres::notice=error"), "{chosen}");
        assert!(chosen.contains("sqlx::pool::acquire=error"));
    }
}
