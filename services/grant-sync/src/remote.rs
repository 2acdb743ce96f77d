//! Calls to an upstream license server's grant-sync API, as one of its
//! clients: who am I (`GET /v1/clients/me`), the catalog (`GET /v1/catalog`)
//! and the grants and revocations (`POST /v1/sync`). Error messages name
//! what went wrong, never the secret.

use std::time::{Duration, Instant};

use contracts::grants::{CatalogProduct, Grant, Revocation, UpstreamStatus};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::upstream::CallResult;

pub struct Remote {
    http: reqwest::Client,
}

/// What an upstream sent for the grants of this member.
pub struct Pulled {
    pub grants: Vec<Grant>,
    pub revocations: Vec<Revocation>,
}

impl Remote {
    pub fn new(timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        token: &str,
        body: Option<Value>,
    ) -> (Result<Value, CallResult>, u64) {
        let started = Instant::now();
        let mut req = self.http.request(method, &url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await;
        let ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                let latency_ms = ms();
                return (
                    Err(CallResult {
                        status: UpstreamStatus::Unreachable,
                        http_status: None,
                        message: format!("{what}: {url}"),
                        latency_ms,
                    }),
                    latency_ms,
                );
            }
        };
        let code = res.status().as_u16();
        let body = read_json(res).await;
        let latency_ms = ms();
        if (200..300).contains(&code) {
            return (Ok(body), latency_ms);
        }
        // An upstream's words go into events: bounded, printable.
        let problem: String = body["code"]
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        let status = match (code, problem.as_str()) {
            (401, _) => UpstreamStatus::BadCredentials,
            (403, "ADDRESS_NOT_ALLOWED") => UpstreamStatus::AddressNotAllowed,
            _ => UpstreamStatus::UpstreamError,
        };
        (
            Err(CallResult {
                status,
                http_status: Some(code),
                message: format!("{url} answered {code} {problem}")
                    .trim()
                    .to_string(),
                latency_ms,
            }),
            latency_ms,
        )
    }

    fn ok(message: String, latency_ms: u64) -> CallResult {
        CallResult {
            status: UpstreamStatus::Ok,
            http_status: Some(200),
            message,
            latency_ms,
        }
    }

    /// Tests the connection and the credentials: the upstream must know
    /// this server as `member_id`.
    pub async fn check(&self, endpoint: &str, token: &str, member_id: Uuid) -> CallResult {
        let url = format!("{endpoint}/v1/clients/me");
        match self.call(reqwest::Method::GET, url, token, None).await {
            (Err(r), _) => r,
            (Ok(me), ms) => {
                if me["client_id"].as_str() == Some(member_id.to_string().as_str()) {
                    Self::ok(format!("connected as member {member_id}"), ms)
                } else {
                    CallResult {
                        status: UpstreamStatus::MemberMismatch,
                        http_status: Some(200),
                        message: format!(
                            "the credentials belong to member {}, not {member_id}",
                            me["client_id"].as_str().unwrap_or("?")
                        ),
                        latency_ms: ms,
                    }
                }
            }
        }
    }

    pub async fn catalog(
        &self,
        endpoint: &str,
        token: &str,
    ) -> Result<(Vec<CatalogProduct>, CallResult), CallResult> {
        let url = format!("{endpoint}/v1/catalog");
        let (body, ms) = self.call(reqwest::Method::GET, url, token, None).await;
        let products: Vec<CatalogProduct> = serde_json::from_value(body?["products"].take())
            .map_err(|e| bad_answer("catalog", &e, ms))?;
        let n = products.len();
        Ok((products, Self::ok(format!("{n} products"), ms)))
    }

    pub async fn pull(
        &self,
        endpoint: &str,
        token: &str,
    ) -> Result<(Pulled, CallResult), CallResult> {
        let url = format!("{endpoint}/v1/sync");
        let (body, ms) = self
            .call(
                reqwest::Method::POST,
                url,
                token,
                Some(serde_json::json!({"wait_ms": 0})),
            )
            .await;
        let mut body = body?;
        let grants: Vec<Grant> = serde_json::from_value(body["grants"].take())
            .map_err(|e| bad_answer("grants", &e, ms))?;
        let revocations: Vec<Revocation> = serde_json::from_value(body["revocations"].take())
            .map_err(|e| bad_answer("revocations", &e, ms))?;
        let message = format!("{} grants, {} revocations", grants.len(), revocations.len());
        Ok((
            Pulled {
                grants,
                revocations,
            },
            Self::ok(message, ms),
        ))
    }
}

/// The most of an upstream's answer read: a catalog or the grants of a
/// member fit well within it.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The answer's JSON, Null when it is not JSON or larger than
/// [`MAX_ANSWER_BYTES`].
async fn read_json(mut res: reqwest::Response) -> Value {
    let mut buf = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) if buf.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                buf.extend_from_slice(&chunk)
            }
            Ok(Some(_)) | Err(_) => return Value::Null,
            Ok(None) => break,
        }
    }
    serde_json::from_slice(&buf).unwrap_or(Value::Null)
}

fn bad_answer(what: &str, e: &serde_json::Error, latency_ms: u64) -> CallResult {
    CallResult {
        status: UpstreamStatus::UpstreamError,
        http_status: Some(200),
        message: format!("the upstream's {what} cannot be read: {e}")
            .chars()
            .take(300)
            .collect(),
        latency_ms,
    }
}
