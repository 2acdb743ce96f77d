//! RFC 7807 `application/problem+json` errors with a stable machine `code`.
//!
//! Clients branch on `code`, never on `title` or `detail`, so codes are part
//! of the API contract and must not change once published.

use std::borrow::Cow;
use std::fmt;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// Media type of every error body this kit produces.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An HTTP error as the client sees it.
///
/// Handlers return `Result<_, Problem>` (or convert their domain errors into
/// it); nothing else should reach a client as an error, which is how internal
/// error text is kept out of responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    status: StatusCode,
    code: Cow<'static, str>,
    title: String,
    detail: Option<String>,
    field: Option<String>,
}

impl Problem {
    /// A problem with an explicit status, stable `code` and human `title`.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        title: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            title: title.into(),
            detail: None,
            field: None,
        }
    }

    /// Adds the occurrence-specific explanation. Only put text here that is
    /// safe for the caller to read (never database or broker errors).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Names the offending input field (dotted path, e.g. `payload.seats`).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400 with the status' reason phrase as title.
    pub fn bad_request(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::for_status(StatusCode::BAD_REQUEST, code).with_detail(detail)
    }

    /// 401: missing or invalid credentials.
    pub fn unauthorized(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::for_status(StatusCode::UNAUTHORIZED, code).with_detail(detail)
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::for_status(StatusCode::FORBIDDEN, code).with_detail(detail)
    }

    /// 404.
    pub fn not_found(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::for_status(StatusCode::NOT_FOUND, code).with_detail(detail)
    }

    /// 409: the request conflicts with current state (including concurrency
    /// conflicts the client may retry).
    pub fn conflict(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::for_status(StatusCode::CONFLICT, code).with_detail(detail)
    }

    /// 422: well-formed input that breaks a validation or business rule.
    pub fn unprocessable(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::for_status(StatusCode::UNPROCESSABLE_ENTITY, code).with_detail(detail)
    }

    /// 500 with no detail at all: whatever went wrong is for the logs, not
    /// the client. Log the cause where it happened before returning this.
    pub fn internal() -> Self {
        Self::for_status(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
    }

    /// A problem for a bare status, with a code derived from it. Used to
    /// dress responses that actix (or a handler) produced without a body.
    pub fn from_status(status: StatusCode) -> Self {
        Self::for_status(status, default_code(status))
    }

    fn for_status(status: StatusCode, code: impl Into<Cow<'static, str>>) -> Self {
        Self::new(status, code, status.canonical_reason().unwrap_or("Error"))
    }

    /// HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Stable machine code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Short human summary.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// Occurrence-specific explanation, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Offending field path, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The response body as a JSON value (handy in tests and for Kafka
    /// command outcomes that mirror HTTP errors).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or(serde_json::Value::Null)
    }

    fn body(&self) -> ProblemBody<'_> {
        ProblemBody {
            kind: format!("urn:problem:{}", self.code),
            title: &self.title,
            status: self.status.as_u16(),
            code: &self.code,
            detail: self.detail.as_deref(),
            field: self.field.as_deref(),
        }
    }
}

/// A problem+json answer (RFC 9457) as every route writes it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    field: Option<&'a str>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        // Serialising a struct of strings and integers cannot fail; the
        // fallback only keeps the request path free of panics.
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| b"{}".to_vec());
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        // Every 503 is a dependency away for now: the caller may come back.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS)));
        }
        res.body(body)
    }
}

/// Code for a status that reached us without one (actix's bare 404/405,
/// a handler's `HttpResponse::BadRequest().finish()`, …).
fn default_code(status: StatusCode) -> Cow<'static, str> {
    match status {
        StatusCode::INTERNAL_SERVER_ERROR => "INTERNAL".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "BODY_TOO_LARGE".into(),
        StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE".into(),
        _ => status
            .canonical_reason()
            .map(|reason| {
                reason
                    .chars()
                    .filter_map(|c| match c {
                        ' ' | '-' => Some('_'),
                        c if c.is_ascii_alphanumeric() => Some(c.to_ascii_uppercase()),
                        _ => None,
                    })
                    .collect::<String>()
                    .into()
            })
            .unwrap_or_else(|| format!("HTTP_{}", status.as_u16()).into()),
    }
}

/// Headers worth keeping when an error body is replaced: they tell the
/// client how to recover.
const KEPT_HEADERS: [header::HeaderName; 3] =
    [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE];

/// Middleware making every error response problem+json.
///
/// actix answers some errors itself (405 from a resource, payload errors of
/// its own extractors) with empty or `text/plain` bodies, and a careless
/// `ErrorInternalServerError(e)` would put `e`'s text on the wire. Anything
/// with status >= 400 that is not already problem+json is replaced by a
/// detail-free problem for its status, so internal text never leaks and
/// clients see one error format.
pub(crate) async fn normalize_errors(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = match next.call(req).await {
        Ok(res) => res,
        // A middleware on a scope (e.g. authentication) failed. There is no
        // request left to build a response from, so normalise the error
        // itself; actix renders it later.
        Err(err) => return Err(normalize_error(err)),
    };
    if res.status().as_u16() < 400 || is_problem(res.headers()) {
        return Ok(res);
    }
    let status = res.status();
    let (req, old) = res.into_parts();
    if status.is_server_error() {
        if let Some(err) = old.error() {
            tracing::error!(error = %err, "request failed");
        }
    }
    let mut new = Problem::from_status(status).error_response();
    for name in KEPT_HEADERS {
        for value in old.headers().get_all(&name) {
            new.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(req, new))
}

/// Seconds a 503 answer asks the caller to wait (`Retry-After`): the
/// readiness probes look again within this while a dependency is away.
pub const RETRY_AFTER_SECS: u64 = 1;

fn normalize_error(err: actix_web::Error) -> actix_web::Error {
    if err.as_error::<Problem>().is_some() {
        return err;
    }
    // A problem answer carried as an error (a middleware's refusal) is
    // deliberate: nothing failed.
    if is_problem(err.error_response().headers()) {
        return err;
    }
    let status = err.as_response_error().status_code();
    if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
    }
    Problem::from_status(status).into()
}

fn is_problem(headers: &header::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(PROBLEM_JSON))
        })
}

/// Default service of the App, reached when no resource accepted the
/// request. `App::route` puts the method guard on the resource itself, so a
/// known path with the wrong method also lands here: the route table tells
/// the two apart.
pub(crate) async fn no_route(req: HttpRequest) -> HttpResponse {
    if req.match_pattern().is_some() {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "Method Not Allowed",
        )
        .with_detail(format!("{} is not allowed on this path", req.method()))
        .error_response()
    } else {
        Problem::not_found("NOT_FOUND", "no route matches this path").error_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn serialises_as_problem_json() {
        let p = Problem::unprocessable("INVALID_FIELD", "bad seats").with_field("payload.seats");
        let res = p.error_response();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(res.headers().get("content-type").unwrap(), PROBLEM_JSON);
        let body = to_bytes(res.into_body()).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "urn:problem:INVALID_FIELD",
                "title": "Unprocessable Entity",
                "status": 422,
                "code": "INVALID_FIELD",
                "detail": "bad seats",
                "field": "payload.seats",
            })
        );
    }

    #[test]
    fn internal_has_no_detail() {
        let v = Problem::internal().to_json();
        assert_eq!(v["code"], "INTERNAL");
        assert_eq!(v["status"], 500);
        assert!(v.get("detail").is_none());
    }

    #[test]
    fn default_codes() {
        assert_eq!(
            default_code(StatusCode::METHOD_NOT_ALLOWED),
            "METHOD_NOT_ALLOWED"
        );
        assert_eq!(default_code(StatusCode::NOT_FOUND), "NOT_FOUND");
        assert_eq!(default_code(StatusCode::IM_A_TEAPOT), "IM_A_TEAPOT");
        assert_eq!(
            default_code(StatusCode::PAYLOAD_TOO_LARGE),
            "BODY_TOO_LARGE"
        );
    }
}
