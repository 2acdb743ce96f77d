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
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// Header carrying the correlation id in both directions.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Installs the global subscriber: JSON lines (`format = "json"`, the
/// default) or human-readable (`"pretty"`), filtered by `RUST_LOG`
/// (default `info`).
///
/// Calling it again is a no-op, because integration tests start several
/// services in one process and only the first subscriber can be global.
pub fn init(service: &str, format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = if format.eq_ignore_ascii_case("pretty") {
        tracing_subscriber::fmt()
            .pretty()
            .with_env_filter(filter)
            .try_init()
            .is_ok()
    } else {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .try_init()
            .is_ok()
    };
    if installed {
        tracing::info!(service, log_format = format, "telemetry initialised");
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
