//! Calls to an upstream license server's grant-sync API, as one of its
//! clients: who am I (`GET /v1/clients/me`) and its signing keys
//! (`GET /.well-known/jwks.json`, pinned at each check), the catalog
//! (`GET /v1/catalog`) and the grants and revocations (`POST /v1/sync`),
//! taken from its signed grant document only.
//!
//! Every call goes through `service_kit::outbound`: TLS verified, no
//! redirects, bounded time and answers, no private address unless allowed.
//! Error messages name what went wrong, never the secret.

use std::time::Instant;

use chrono::{DateTime, Utc};
use contracts::grants::{
    CatalogProduct, Grant, GrantClaims, PinnedKey, Revocation, UpstreamStatus,
};
use serde_json::Value;
use service_kit::outbound::{self, OutboundConfig};
use uuid::Uuid;

use crate::domain::upstream::CallResult;

pub struct Remote {
    http: reqwest::Client,
    allowed: Vec<contracts::net::Cidr>,
}

/// What an upstream sent for the grants of this member, as its signed
/// grant document says.
pub struct Pulled {
    pub grants: Vec<Grant>,
    pub revocations: Vec<Revocation>,
}

/// How to reach one upstream.
pub struct Target<'a> {
    pub endpoint: &'a str,
    pub token: &'a str,
    pub allow_http: bool,
}

fn failure(
    status: UpstreamStatus,
    http_status: Option<u16>,
    message: String,
    latency_ms: u64,
) -> CallResult {
    CallResult {
        status,
        http_status,
        message: message.chars().take(300).collect(),
        latency_ms,
        keys: vec![],
    }
}

impl Remote {
    pub fn new(config: &OutboundConfig) -> Result<Self, String> {
        Ok(Self {
            http: outbound::client(config)?,
            allowed: config.allowed_networks.clone(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        t: &Target<'_>,
        path: &str,
        body: Option<Value>,
        max_bytes: usize,
    ) -> (Result<Value, CallResult>, u64) {
        let started = Instant::now();
        let ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let url = format!("{}{path}", t.endpoint);
        if let Err(refused) = outbound::check_url(&url, t.allow_http, &self.allowed) {
            let m = ms();
            return (
                Err(failure(
                    UpstreamStatus::Unreachable,
                    None,
                    format!("refused: {refused}"),
                    m,
                )),
                m,
            );
        }
        let mut req = self.http.request(method, &url).bearer_auth(t.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let m = ms();
                return (
                    Err(failure(
                        UpstreamStatus::Unreachable,
                        None,
                        format!("{}: {url}", outbound::describe(&e)),
                        m,
                    )),
                    m,
                );
            }
        };
        let code = res.status().as_u16();
        if res.status().is_redirection() {
            let m = ms();
            return (
                Err(failure(
                    UpstreamStatus::UpstreamError,
                    Some(code),
                    format!("{url} answered {code}: redirects are not followed"),
                    m,
                )),
                m,
            );
        }
        let body = read_json(res, max_bytes).await;
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
            Err(failure(
                status,
                Some(code),
                format!("{url} answered {code} {problem}")
                    .trim()
                    .to_string(),
                latency_ms,
            )),
            latency_ms,
        )
    }

    fn ok(message: String, latency_ms: u64) -> CallResult {
        CallResult {
            status: UpstreamStatus::Ok,
            http_status: Some(200),
            message,
            latency_ms,
            keys: vec![],
        }
    }

    /// Tests the connection and the credentials (the upstream must know
    /// this server as `member_id`) and fetches the keys to pin.
    pub async fn check(&self, t: &Target<'_>, member_id: Uuid) -> CallResult {
        let (me, ms) = match self
            .call(
                reqwest::Method::GET,
                t,
                "/v1/clients/me",
                None,
                MAX_SMALL_ANSWER,
            )
            .await
        {
            (Err(r), _) => return r,
            (Ok(me), ms) => (me, ms),
        };
        if me["client_id"].as_str() != Some(member_id.to_string().as_str()) {
            return failure(
                UpstreamStatus::MemberMismatch,
                Some(200),
                format!(
                    "the credentials belong to member {}, not {member_id}",
                    me["client_id"].as_str().unwrap_or("?")
                ),
                ms,
            );
        }
        let (jwks, ms) = match self
            .call(
                reqwest::Method::GET,
                t,
                "/.well-known/jwks.json",
                None,
                MAX_SMALL_ANSWER,
            )
            .await
        {
            (Err(r), _) => return r,
            (Ok(v), ms) => (v, ms),
        };
        let keys = pinnable(&jwks);
        if keys.is_empty() {
            return failure(
                UpstreamStatus::UpstreamError,
                Some(200),
                "its JWKS lists no P-256 signing key: nothing to verify its grant documents with"
                    .into(),
                ms,
            );
        }
        let mut r = Self::ok(
            format!(
                "connected as member {member_id}; {} signing keys pinned",
                keys.len()
            ),
            ms,
        );
        r.keys = keys;
        r
    }

    pub async fn catalog(
        &self,
        t: &Target<'_>,
    ) -> Result<(Vec<CatalogProduct>, CallResult), CallResult> {
        let (body, ms) = self
            .call(
                reqwest::Method::GET,
                t,
                "/v1/catalog",
                None,
                MAX_ANSWER_BYTES,
            )
            .await;
        let products: Vec<CatalogProduct> = serde_json::from_value(body?["products"].take())
            .map_err(|e| bad_answer(&format!("catalog cannot be read: {e}"), ms))?;
        let n = products.len();
        Ok((products, Self::ok(format!("{n} products"), ms)))
    }

    /// The grants and revocations of this member, from the upstream's grant
    /// document, which must verify under `pinned` and be addressed to
    /// `member_id` and valid at `now`; the answer's unsigned fields are
    /// ignored.
    pub async fn pull(
        &self,
        t: &Target<'_>,
        member_id: Uuid,
        pinned: &[PinnedKey],
        now: DateTime<Utc>,
    ) -> Result<(Pulled, CallResult), CallResult> {
        if pinned.is_empty() {
            return Err(bad_answer(
                "no signing key of the upstream is pinned: check the upstream first",
                0,
            ));
        }
        let (body, ms) = self
            .call(
                reqwest::Method::POST,
                t,
                "/v1/sync",
                Some(serde_json::json!({"wait_ms": 0})),
                MAX_ANSWER_BYTES,
            )
            .await;
        let body = body?;
        let claims =
            verified_document(&body, member_id, pinned, now).map_err(|why| bad_answer(&why, ms))?;
        let message = format!(
            "{} grants, {} revocations (signed by the upstream)",
            claims.grants.len(),
            claims.revocations.len()
        );
        Ok((
            Pulled {
                grants: claims.grants,
                revocations: claims.revocations,
            },
            Self::ok(message, ms),
        ))
    }
}

/// The key a pinned JWK stands for, if it is a valid P-256 point.
fn key_of(k: &PinnedKey) -> Option<signing::VerifyingKey> {
    signing::verifying_key(&signing::Jwk {
        kty: k.kty.clone(),
        crv: k.crv.clone(),
        x: k.x.clone(),
        y: k.y.clone(),
        kid: k.kid.clone(),
        use_: "sig".into(),
        alg: "ES256".into(),
    })
    .ok()
}

/// The P-256 keys of a JWKS that verify something, bounded: a key that is
/// no point on the curve is not pinned (and so not counted as one).
fn pinnable(jwks: &Value) -> Vec<PinnedKey> {
    jwks["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter(|k| k["kty"] == "EC" && k["crv"] == "P-256")
                .filter_map(|k| {
                    let s = |f: &str| {
                        k[f].as_str()
                            .filter(|v| !v.is_empty() && v.len() <= 128)
                            .map(str::to_string)
                    };
                    Some(PinnedKey {
                        kid: s("kid")?,
                        kty: s("kty")?,
                        crv: s("crv")?,
                        x: s("x")?,
                        y: s("y")?,
                    })
                })
                .filter(|k| key_of(k).is_some())
                .take(32)
                .collect()
        })
        .unwrap_or_default()
}

/// The claims of the answer's grant document, once they are the
/// upstream's and about this member now; why not, otherwise.
fn verified_document(
    body: &Value,
    member_id: Uuid,
    pinned: &[PinnedKey],
    now: DateTime<Utc>,
) -> Result<GrantClaims, String> {
    let doc = body["grant_document"]
        .as_str()
        .ok_or("the answer carries no grant document")?;
    let payload = signing::verify_with(doc, |kid| {
        pinned.iter().find(|k| k.kid == kid).and_then(key_of)
    })
    .map_err(|e| match e {
        signing::SigningError::UnknownKid(k) => {
            format!("the grant document is signed by key {k:?}, which is not pinned: re-check the upstream")
        }
        other => format!("the grant document does not verify: {other}"),
    })?;
    let claims: GrantClaims = serde_json::from_value(payload)
        .map_err(|e| format!("the grant document's claims cannot be read: {e}"))?;
    if claims.typ != "grant-document"
        || claims.client_id != member_id
        || claims.sub != member_id.to_string()
    {
        return Err(format!(
            "the grant document is not this member's (it names client {})",
            claims.client_id
        ));
    }
    let t = now.timestamp();
    // A minute of leeway either side for the two servers' clocks.
    if claims.nbf > t + 60 || claims.exp < t - 60 {
        return Err("the grant document is not valid now".into());
    }
    Ok(claims)
}

/// The most of an upstream's answer read: a catalog or the grants of a
/// member fit well within it.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The most of a JWKS or an identity answer read: 32 keys fit in 8 KiB.
const MAX_SMALL_ANSWER: usize = 64 * 1024;

/// The answer's JSON, Null when it is not JSON or larger than `max`.
async fn read_json(mut res: reqwest::Response, max: usize) -> Value {
    let mut buf = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) if buf.len() + chunk.len() <= max => buf.extend_from_slice(&chunk),
            Ok(Some(_)) | Err(_) => return Value::Null,
            Ok(None) => break,
        }
    }
    serde_json::from_slice(&buf).unwrap_or(Value::Null)
}

fn bad_answer(why: &str, latency_ms: u64) -> CallResult {
    failure(
        UpstreamStatus::UpstreamError,
        Some(200),
        format!("the upstream's answer is refused: {why}"),
        latency_ms,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn document(ring: &signing::KeyRing, member: Uuid, exp_in: i64) -> Value {
        let now = Utc::now();
        let claims = GrantClaims {
            iss: "vendor".into(),
            sub: member.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + exp_in,
            typ: "grant-document".into(),
            client_id: member,
            server_time: now,
            valid_until: now,
            grants: vec![],
            leases: vec![],
            revocations: vec![],
        };
        serde_json::json!({"grant_document": ring.sign(&claims).unwrap(), "grants": [{"forged": true}]})
    }

    #[test]
    fn grant_documents_are_trusted_only_under_pinned_keys_for_this_member_now() {
        let ring = signing::KeyRing::generate("vendor-1").unwrap();
        let pinned = pinnable(&serde_json::to_value(ring.jwks()).unwrap());
        assert_eq!(pinned.len(), 1);
        // A key that is no point on the curve is not pinned.
        let mut off_curve = serde_json::to_value(ring.jwks()).unwrap();
        off_curve["keys"][0]["y"] = off_curve["keys"][0]["x"].clone();
        assert!(pinnable(&off_curve).is_empty());
        let member = Uuid::now_v7();
        let now = Utc::now();
        assert!(verified_document(&document(&ring, member, 3600), member, &pinned, now).is_ok());
        // Someone else's document, an expired one, another key, no document.
        assert!(
            verified_document(&document(&ring, Uuid::now_v7(), 3600), member, &pinned, now)
                .is_err()
        );
        assert!(verified_document(&document(&ring, member, -3600), member, &pinned, now).is_err());
        let other = signing::KeyRing::generate("vendor-1").unwrap();
        let e =
            verified_document(&document(&other, member, 3600), member, &pinned, now).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let stranger = signing::KeyRing::generate("rogue").unwrap();
        let e = verified_document(&document(&stranger, member, 3600), member, &pinned, now)
            .unwrap_err();
        assert!(e.contains("not pinned"), "{e}");
        assert!(verified_document(&serde_json::json!({}), member, &pinned, now).is_err());
        // A changed byte of the signed payload.
        let mut d = document(&ring, member, 3600);
        let jws = d["grant_document"].as_str().unwrap().to_string();
        let mut parts: Vec<String> = jws.split('.').map(String::from).collect();
        parts[1] = parts[1].chars().rev().collect();
        d["grant_document"] = parts.join(".").into();
        assert!(verified_document(&d, member, &pinned, now).is_err());
    }
}
