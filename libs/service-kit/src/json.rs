//! A strict JSON body extractor whose errors name the offending field, and
//! problem+json handlers for actix's own `Path` and `Query` extractors.

use std::ops::{Deref, DerefMut};

use actix_web::dev::{Decompress, Payload};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::web::{self, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// Body limit used when the app registers no [`BodyLimit`].
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Longest serde message echoed to the client: enough to be useful, short
/// enough that a hostile payload is not reflected back in bulk.
const MAX_DETAIL_CHARS: usize = 200;

/// Largest JSON body [`Json`] accepts, in bytes (after decompression).
/// Register with `App::app_data(BodyLimit(n))` (or on a scope/resource to
/// override it locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

impl Default for BodyLimit {
    fn default() -> Self {
        Self(DEFAULT_BODY_LIMIT)
    }
}

/// JSON request body, rejected with a problem naming the field when it does
/// not fit `T`.
///
/// Unlike `actix_web::web::Json`, errors are problem+json with stable codes:
/// `UNSUPPORTED_MEDIA_TYPE` (415), `BODY_TOO_LARGE` (413), `MALFORMED_JSON`
/// (400), `UNKNOWN_FIELD` / `MISSING_FIELD` / `INVALID_FIELD` (422, with
/// `field`). Put `#[serde(deny_unknown_fields)]` on request types so unknown
/// fields are rejected rather than silently dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// Unwraps the body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<BodyLimit>().copied().unwrap_or_default().0;
        let checked = check_headers(req, limit);
        // Decompressing here (as actix's own extractors do) keeps the limit
        // on the decoded size, so a small compressed bomb cannot get past it.
        let body = Decompress::from_headers(payload.take(), req.headers());
        Box::pin(async move {
            checked?;
            let bytes = read_limited(body, limit).await?;
            parse(&bytes).map(Json)
        })
    }
}

fn check_headers(req: &HttpRequest, limit: usize) -> Result<(), Problem> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Unsupported Media Type",
        )
        .with_detail("Content-Type must be application/json"));
    }
    // Refuse early when the client announces an oversized body, without
    // reading (and buffering) any of it.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    Ok(())
}

async fn read_limited(mut body: Decompress<Payload>, limit: usize) -> Result<BytesMut, Problem> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| {
            // Transport-level failures (client hung up, bad chunking, bad
            // compression); the client already knows what it sent.
            tracing::debug!(error = %err, "reading request body failed");
            Problem::bad_request("MALFORMED_BODY", "the request body could not be read")
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "BODY_TOO_LARGE",
        "Payload Too Large",
    )
    .with_detail(format!("request body exceeds {limit} bytes"))
}

/// Parses `bytes` into `T`, mapping serde's errors onto problem codes.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().clone();
        classify(err.into_inner(), Some(&path))
    })?;
    // Trailing bytes after the document are a syntax error too.
    de.end().map_err(|err| classify(err, None))?;
    Ok(value)
}

fn classify(err: serde_json::Error, path: Option<&serde_path_to_error::Path>) -> Problem {
    let message = err.to_string();
    let detail = truncate(&message);
    if !err.is_data() {
        // Syntax, EOF (including an empty body) and I/O all mean the bytes
        // are not one JSON document.
        return Problem::bad_request("MALFORMED_JSON", detail);
    }
    let base = path.map(path_string).unwrap_or_default();
    let (code, field) = if let Some(name) = quoted_after(&message, "unknown field `") {
        ("UNKNOWN_FIELD", Some(with_leaf(&base, name)))
    } else if let Some(name) = quoted_after(&message, "missing field `") {
        ("MISSING_FIELD", Some(with_leaf(&base, name)))
    } else {
        ("INVALID_FIELD", (!base.is_empty()).then_some(base))
    };
    let problem = Problem::unprocessable(code, detail);
    match field {
        Some(field) => problem.with_field(field),
        None => problem,
    }
}

/// `payload.items[2].sku`; unknown segments (where serde_path_to_error could
/// not see the key yet) are dropped.
fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// The unknown/missing field's own name is in serde's message; the path may
/// or may not already end with it depending on where serde failed.
fn with_leaf(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else if base == name || base.ends_with(&format!(".{name}")) {
        base.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

/// `web::PathConfig` turning bad path segments into 400 `INVALID_PATH`.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        Problem::bad_request("INVALID_PATH", truncate(&err.to_string())).into()
    })
}

/// `web::QueryConfig` turning bad query strings into 422 `INVALID_QUERY`,
/// naming the parameter when serde's message does.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let message = err.to_string();
        let field = quoted_after(&message, "missing field `")
            .or_else(|| quoted_after(&message, "unknown field `"))
            .map(str::to_owned);
        let problem = Problem::unprocessable("INVALID_QUERY", truncate(&message));
        match field {
            Some(field) => problem.with_field(field).into(),
            None => problem.into(),
        }
    })
}

/// Registers [`path_config`] and [`query_config`] as app data. `serve` does
/// this already; call it yourself when building an `App` by hand.
pub fn configure_extractors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(path_config()).app_data(query_config());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        id: u32,
        payload: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        seats: u32,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
    }

    fn err(body: &str) -> Problem {
        parse::<Outer>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn classifies_serde_errors() {
        let p = err(r#"{"id":1,"payload":{"seats":1,"foo":2}}"#);
        assert_eq!(
            (p.code(), p.field()),
            ("UNKNOWN_FIELD", Some("payload.foo"))
        );

        let p = err(r#"{"id":1,"bar":true,"payload":{"seats":1}}"#);
        assert_eq!((p.code(), p.field()), ("UNKNOWN_FIELD", Some("bar")));

        let p = err(r#"{"id":1,"payload":{}}"#);
        assert_eq!(
            (p.code(), p.field()),
            ("MISSING_FIELD", Some("payload.seats"))
        );

        let p = err(r#"{"payload":{"seats":1}}"#);
        assert_eq!((p.code(), p.field()), ("MISSING_FIELD", Some("id")));

        let p = err(r#"{"id":"x","payload":{"seats":1}}"#);
        assert_eq!((p.code(), p.field()), ("INVALID_FIELD", Some("id")));

        let p = err(r#"{"id":1,"payload":{"seats":1,"items":[{"sku":"a"},{"sku":3}]}}"#);
        assert_eq!(
            (p.code(), p.field()),
            ("INVALID_FIELD", Some("payload.items[1].sku"))
        );

        let p = err(r#"{"id":1,"payload":{"seats":1,"items":[{"sku":"a","x":1}]}}"#);
        assert_eq!(
            (p.code(), p.field()),
            ("UNKNOWN_FIELD", Some("payload.items[0].x"))
        );

        let p = err("[]");
        assert_eq!((p.code(), p.field()), ("INVALID_FIELD", None));

        for body in [
            "",
            "{",
            "{\"id\":1,}",
            r#"{"id":1,"payload":{"seats":1}} {}"#,
            "nope",
        ] {
            let p = err(body);
            assert_eq!(p.code(), "MALFORMED_JSON", "{body:?}");
            assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn detail_is_truncated() {
        let long = "x".repeat(1000);
        let p = err(&format!(r#"{{"id":"{long}","payload":{{"seats":1}}}}"#));
        assert!(p.detail().unwrap().chars().count() <= MAX_DETAIL_CHARS + 1);
    }
}
