//! What a caller sends, read strictly and refused with a problem naming
//! the field: JSON bodies ([`Json`]), query strings ([`Query`]), path
//! segments ([`path_config`]), and control characters anywhere in a URL
//! ([`refuse_control_in_url`]). Strings are [`contracts::text::Text`]s in
//! the request types; control characters are refused in every string of
//! every body here, whatever its type, so none reaches a database.

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

/// Parses `bytes` into `T`, mapping serde's errors onto problem codes. A
/// control character in any string (key or value) is refused first, as
/// 422 `INVALID_FIELD` naming where it is.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if let Some(field) = contracts::text::control_in_json(bytes).filter(|f| !f.is_empty()) {
        return Err(control_problem(field));
    }
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
    let (code, detail, field) = classify_parts(&err, path);
    if code == "MALFORMED_JSON" {
        return Problem::bad_request(code, detail);
    }
    let problem = Problem::unprocessable(code, detail);
    match field {
        Some(field) => problem.with_field(field),
        None => problem,
    }
}

/// Serde's error as a stable code, a bounded message and the field it is
/// about (`MALFORMED_JSON` when the bytes are no JSON document at all).
fn classify_parts(
    err: &serde_json::Error,
    path: Option<&serde_path_to_error::Path>,
) -> (&'static str, String, Option<String>) {
    let message = err.to_string();
    let detail = truncate(&message);
    if !err.is_data() {
        // Syntax, EOF (including an empty body) and I/O all mean the bytes
        // are not one JSON document.
        return ("MALFORMED_JSON", detail, None);
    }
    let base = path.map(path_string).unwrap_or_default();
    let (code, field) = if let Some(name) = quoted_after(&message, "unknown field `") {
        ("UNKNOWN_FIELD", Some(with_leaf(&base, name)))
    } else if let Some(name) = quoted_after(&message, "missing field `") {
        ("MISSING_FIELD", Some(with_leaf(&base, name)))
    } else {
        ("INVALID_FIELD", (!base.is_empty()).then_some(base))
    };
    (code, detail, field)
}

/// A command's payload, read as strictly as a request body: a control
/// character, an unknown or missing field or a value of the wrong shape is
/// refused (kind invalid) naming `payload.<field>`.
pub fn decode_payload<T: DeserializeOwned>(
    payload: &serde_json::Value,
) -> Result<T, eventstore::Refused> {
    use eventstore::{ErrorKind, Refused};
    let in_payload = |field: String| {
        if field.is_empty() {
            "payload".to_string()
        } else {
            format!("payload.{field}")
        }
    };
    if let Some(field) = contracts::text::control_in_value(payload) {
        return Err(Refused::new(
            "INVALID_FIELD",
            ErrorKind::Invalid,
            "must not contain control characters",
        )
        .with_field(in_payload(field)));
    }
    serde_path_to_error::deserialize(payload).map_err(|err| {
        let path = err.path().clone();
        let (code, detail, field) = classify_parts(err.inner(), Some(&path));
        Refused::new(code, ErrorKind::Invalid, detail)
            .with_field(in_payload(field.unwrap_or_default()))
    })
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

fn control_problem(field: String) -> Problem {
    Problem::unprocessable("INVALID_FIELD", "must not contain control characters").with_field(field)
}

/// `web::PathConfig` turning bad path segments into 400 `INVALID_PATH`,
/// naming the segment (the route's one, or the first that is not text).
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, req| {
        let segments: Vec<(&str, &str)> = req.match_info().iter().collect();
        let field = match segments.as_slice() {
            [(name, _)] => Some(*name),
            _ => segments
                .iter()
                .find(|(_, v)| v.chars().any(char::is_control))
                .map(|(name, _)| *name),
        };
        let problem = Problem::bad_request("INVALID_PATH", truncate(&err.to_string()));
        match field {
            Some(f) => problem.with_field(f).into(),
            None => problem.into(),
        }
    })
}

/// A query string read into `T`, refused with 422 `INVALID_QUERY` naming
/// the parameter. Unlike `web::Query`, whose errors do not say which
/// parameter failed. Put `#[serde(deny_unknown_fields)]` on `T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<T>(pub T);

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> Query<T> {
    /// Reads a raw query string (without the `?`).
    pub fn parse(query: &str) -> Result<Self, Problem> {
        let de = serde_urlencoded::Deserializer::new(url_form(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|err| {
                let path = path_string(err.path());
                let message = err.inner().to_string();
                let field = quoted_after(&message, "missing field `")
                    .or_else(|| quoted_after(&message, "unknown field `"))
                    .map(str::to_owned)
                    .or((!path.is_empty()).then_some(path));
                let problem = Problem::unprocessable("INVALID_QUERY", truncate(&message));
                match field {
                    Some(field) => problem.with_field(field),
                    None => problem,
                }
            })
    }
}

fn url_form(bytes: &[u8]) -> url::form_urlencoded::Parse<'_> {
    url::form_urlencoded::parse(bytes)
}

impl<T: DeserializeOwned + 'static> FromRequest for Query<T> {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Self::parse(req.query_string()))
    }
}

/// Middleware (every service's App has it): a URL whose path or query
/// string decodes to a control character (`%00`, `%0A`, …) or to bytes
/// that are not UTF-8 is refused before routing, naming the query
/// parameter (or `path`), so no handler or database sees it.
pub(crate) async fn refuse_control_in_url(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<actix_web::body::BoxBody>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if let Some(problem) = url_problem(req.path(), req.query_string()) {
        use actix_web::ResponseError;
        return Ok(req.into_response(problem.error_response()));
    }
    next.call(req).await
}

fn url_problem(path: &str, query: &str) -> Option<Problem> {
    let bad = |s: &str| s.chars().any(char::is_control);
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8();
    if !decoded.is_ok_and(|p| !bad(&p)) {
        return Some(
            Problem::bad_request(
                "INVALID_PATH",
                "the path must be text without control characters",
            )
            .with_field("path"),
        );
    }
    if query.is_empty() {
        return None;
    }
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let text = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .ok()
                .filter(|t| !bad(t))
                .map(|t| t.into_owned())
        };
        let Some(name_text) = text(name) else {
            return Some(
                Problem::unprocessable("INVALID_QUERY", "a parameter name is not text")
                    .with_field("query"),
            );
        };
        if text(value).is_none() {
            return Some(
                Problem::unprocessable("INVALID_QUERY", "must be text without control characters")
                    .with_field(truncate(&name_text)),
            );
        }
    }
    None
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

    #[test]
    fn control_characters_in_bodies_are_refused_by_field() {
        let p = err(r#"{"id":1,"payload":{"seats":1,"items":[{"sku":"a\u0000"}]}}"#);
        assert_eq!(
            (p.code(), p.field()),
            ("INVALID_FIELD", Some("payload.items[0].sku"))
        );
    }

    #[test]
    fn urls_with_control_characters_are_refused_by_parameter() {
        assert!(url_problem("/v1/products/abc", "a=1&b=x%20y").is_none());
        let p = url_problem("/v1/products/%00", "").unwrap();
        assert_eq!((p.code(), p.field()), ("INVALID_PATH", Some("path")));
        let p = url_problem("/v1/audit", "format=ndjson&actor=%00").unwrap();
        assert_eq!((p.code(), p.field()), ("INVALID_QUERY", Some("actor")));
        let p = url_problem("/v1/audit", "actor=%ff").unwrap();
        assert_eq!(p.field(), Some("actor"));
        let p = url_problem("/v1/audit", "a%0Ab=1").unwrap();
        assert_eq!(p.field(), Some("query"));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Filter {
        actor: Option<contracts::text::Text<4>>,
        limit: Option<u32>,
    }

    #[test]
    fn queries_name_the_parameter() {
        assert!(Query::<Filter>::parse("actor=ab&limit=2").is_ok());
        let p = Query::<Filter>::parse("actor=abcdef").unwrap_err();
        assert_eq!((p.code(), p.field()), ("INVALID_QUERY", Some("actor")));
        let p = Query::<Filter>::parse("limit=x").unwrap_err();
        assert_eq!(p.field(), Some("limit"));
        let p = Query::<Filter>::parse("nope=1").unwrap_err();
        assert_eq!(p.field(), Some("nope"));
    }

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
