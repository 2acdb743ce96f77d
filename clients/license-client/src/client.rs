//! The HTTP side: activation (online and offline), validation, uninstall,
//! grant sync with offline grace, and floating leases.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use contracts::activation::ReceiptClaims;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::{self, Store};
use crate::verify::{self, Activation, GrantDocument, Keys};

/// A device's hardware components, name to value, e.g. `{"machine_id": …,
/// "disk": …, "board": …, "mac": …}`. Only their digests leave the server.
pub type Components = BTreeMap<String, String>;

/// The clock tolerance the servers apply by default
/// (`LICENSING_CLOCK_TOLERANCE_SECS`).
pub const DEFAULT_TOLERANCE: Duration = Duration::seconds(600);

/// What `POST /v1/validate` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Validation {
    pub valid: bool,
    /// `VALID`, `SUSPENDED`, `EXPIRED`, `REVOKED`, `FINGERPRINT_MISMATCH`, …
    pub code: String,
    #[serde(default)]
    pub license_id: Option<Uuid>,
    #[serde(default)]
    pub activation_id: Option<Uuid>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub missing_features: Vec<String>,
}

/// What `POST /v1/activations/verify` answers about a file: may it be
/// installed (`VALID`, `REVOKED`, `NOT_FOUND`, `BAD_SIGNATURE`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileCheck {
    pub valid: bool,
    pub code: String,
}

/// A verified uninstall receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub receipt: String,
    pub claims: ReceiptClaims,
}

/// A floating lease as checkout answers it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Lease {
    pub lease_id: Uuid,
    /// The features it holds seats of.
    pub features: Vec<String>,
    pub quantity: u32,
    pub ttl_secs: u32,
    pub grace_secs: u32,
    /// Until when it holds without another heartbeat.
    pub deadline: DateTime<Utc>,
}

/// The outcome of [`Client::sync`].
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    pub document: GrantDocument,
    /// False when grant sync gave no answer of its own (unreachable, 5xx,
    /// a proxy's or captive portal's page, …) and the last verified
    /// document, still within its `valid_until`, was used instead.
    pub online: bool,
}

/// An offline activation request, as written for another machine to carry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineRequest {
    pub license_key: String,
    pub fingerprint: Components,
    pub nonce: String,
    pub client_time: DateTime<Utc>,
}

/// What Debug shows of a credential: products log their errors and state.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for OfflineRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfflineRequest")
            .field("license_key", &REDACTED)
            .field("fingerprint", &self.fingerprint)
            .field("nonce", &self.nonce)
            .field("client_time", &self.client_time)
            .finish()
    }
}

/// The client of one installed product: its product and license key, the
/// servers it talks to, the keys it trusts and the directory it keeps its
/// files in.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    activation_url: String,
    grants_url: String,
    product: String,
    license_key: String,
    sync_token: Option<String>,
    client_id: Option<Uuid>,
    store: Option<Store>,
    activation_keys: Option<Keys>,
    grant_keys: Option<Keys>,
    tolerance: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("activation_url", &self.activation_url)
            .field("grants_url", &self.grants_url)
            .field("product", &self.product)
            .field("license_key", &REDACTED)
            .field("sync_token", &self.sync_token.as_ref().map(|_| REDACTED))
            .field("client_id", &self.client_id)
            .field("store", &self.store)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

fn base(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

fn http() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(StdDuration::from_secs(10))
        .timeout(StdDuration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Protocol(format!("HTTP client: {e}")))
}

/// The most of an answer read. Every answer of these services is far
/// smaller; a proxy or a hostile server must not fill the memory.
const MAX_ANSWER: usize = 1 << 20;

/// The most characters of a problem's texts kept in [`Error::Server`],
/// which products display and log.
const MAX_TEXT: usize = 512;

/// An answer: its status, whether it is a problem
/// (`application/problem+json`), and its body as JSON (null if not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    problem: bool,
    json: Value,
}

impl Answer {
    /// [`Error::Server`] with the problem's code (`HTTP_<status>` if none).
    fn error(&self) -> Error {
        let text = |k: &str| {
            self.json
                .get(k)
                .and_then(Value::as_str)
                .map(|s| s.chars().take(MAX_TEXT).collect::<String>())
        };
        Error::Server {
            status: self.status,
            code: text("code").unwrap_or_else(|| format!("HTTP_{}", self.status)),
            field: text("field"),
            detail: text("detail").or_else(|| text("title")),
        }
    }

    /// The body of a 2xx answer, [`Answer::error`] otherwise.
    fn into_value(self) -> Result<Value> {
        match self.status {
            200..=299 => Ok(self.json),
            _ => Err(self.error()),
        }
    }

    /// A refusal the service itself made about this request: a problem
    /// with a code and a 4xx status (bad token, revoked client, rejected
    /// clock, …). Not 408 nor 429, which say "not now", nor any answer
    /// without the services' problem shape — a proxy's or captive
    /// portal's page is no word of the service's.
    fn is_refusal(&self) -> bool {
        self.problem
            && (400..=499).contains(&self.status)
            && !matches!(self.status, 408 | 429)
            && self.json.get("code").is_some_and(Value::is_string)
    }
}

/// Sends `req` and reads the answer, at most [`MAX_ANSWER`] bytes
/// ([`Error::Protocol`] beyond); [`Error::Unreachable`] when nothing
/// answered.
async fn exchange(req: RequestBuilder) -> Result<Answer> {
    let mut res = req
        .send()
        .await
        .map_err(|e| Error::Unreachable(e.to_string()))?;
    let too_long = || Error::Protocol(format!("an answer longer than {MAX_ANSWER} bytes"));
    if res.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(too_long());
    }
    let status = res.status().as_u16();
    let problem = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/problem+json")
        });
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| Error::Unreachable(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        problem,
        json,
    })
}

/// Sends `req`; the JSON body of a 2xx answer, [`Error::Server`] with the
/// problem's code otherwise, [`Error::Unreachable`] when nothing answered.
async fn send(req: RequestBuilder) -> Result<Value> {
    exchange(req).await?.into_value()
}

fn read<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

fn string_at(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Protocol(format!("the answer has no {key}")))
}

/// The JWKS a service serves at `/.well-known/jwks.json` (open): keys to
/// pin once, for products that do not ship them.
pub async fn fetch_keys(base_url: &str) -> Result<Keys> {
    let v = send(http()?.get(format!("{}/.well-known/jwks.json", base(base_url)))).await?;
    Keys::from_jwks(read(v, "JWKS")?)
}

/// On a connected machine: posts an offline request file's contents to
/// activation and answers the response to carry back (the whole JSON
/// answer; [`Client::read_offline_response`] reads it).
pub async fn submit_offline_request(activation_url: &str, request: &str) -> Result<String> {
    let r: OfflineRequest = serde_json::from_str(request)
        .map_err(|e| Error::Protocol(format!("not an offline request: {e}")))?;
    let v = send(
        http()?
            .post(format!("{}/v1/activations/offline", base(activation_url)))
            .header("Authorization", format!("License {}", r.license_key))
            .json(&r),
    )
    .await?;
    Ok(v.to_string())
}

impl Client {
    /// A client of `product` (its code) and `license_key` against
    /// activation and grant sync at their base URLs. Activation files of
    /// another product are refused: one activation service signs every
    /// product's files. It sends `Authorization: License <key>` to
    /// activation; grant sync needs the client token and id an operator
    /// registered ([`Client::with_sync_token`], [`Client::with_client_id`]).
    pub fn new(
        activation_url: &str,
        grants_url: &str,
        product: &str,
        license_key: &str,
    ) -> Result<Self> {
        Ok(Self {
            http: http()?,
            activation_url: base(activation_url),
            grants_url: base(grants_url),
            product: product.trim().to_string(),
            license_key: license_key.trim().to_string(),
            sync_token: None,
            client_id: None,
            store: None,
            activation_keys: None,
            grant_keys: None,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Grant sync's credential (`SC….<secret>`), sent as a bearer token.
    pub fn with_sync_token(mut self, token: &str) -> Self {
        self.sync_token = Some(token.trim().to_string());
        self
    }

    /// The grant-sync client id, which [`Client::sync`] and
    /// [`Client::cached_grants`] need: grant documents naming another are
    /// refused.
    pub fn with_client_id(mut self, id: Uuid) -> Self {
        self.client_id = Some(id);
        self
    }

    /// Keeps files in `store`; keys pinned there before are loaded.
    pub fn with_store(mut self, store: Store) -> Result<Self> {
        if let Some(j) = store.read(store::ACTIVATION_JWKS)? {
            self.activation_keys = Some(Keys::from_json(&j)?);
        }
        if let Some(j) = store.read(store::GRANTS_JWKS)? {
            self.grant_keys = Some(Keys::from_json(&j)?);
        }
        self.store = Some(store);
        Ok(self)
    }

    /// How far the clock may stand behind a time seen before (and before a
    /// document's `nbf`); 600 s by default, as the servers.
    pub fn with_clock_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Trusts `keys` for activation files and receipts (kept in the store).
    pub fn pin_activation_keys(&mut self, keys: Keys) -> Result<()> {
        if let Some(s) = &self.store {
            s.write(store::ACTIVATION_JWKS, keys.to_json().as_bytes())?;
        }
        self.activation_keys = Some(keys);
        Ok(())
    }

    /// Trusts `keys` for grant documents (kept in the store).
    pub fn pin_grant_keys(&mut self, keys: Keys) -> Result<()> {
        if let Some(s) = &self.store {
            s.write(store::GRANTS_JWKS, keys.to_json().as_bytes())?;
        }
        self.grant_keys = Some(keys);
        Ok(())
    }

    /// Activation's JWKS, fetched now (to pin once: trust on first use).
    pub async fn fetch_activation_keys(&self) -> Result<Keys> {
        fetch_keys(&self.activation_url).await
    }

    /// Grant sync's JWKS, fetched now (to pin once).
    pub async fn fetch_grant_keys(&self) -> Result<Keys> {
        fetch_keys(&self.grants_url).await
    }

    /// The product code activation files must name.
    pub fn product(&self) -> &str {
        &self.product
    }

    pub fn activation_keys(&self) -> Option<&Keys> {
        self.activation_keys.as_ref()
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    fn store_or_missing(&self) -> Result<&Store> {
        self.store.as_ref().ok_or(Error::NotConfigured("a store"))
    }

    fn act_keys(&self) -> Result<&Keys> {
        self.activation_keys
            .as_ref()
            .ok_or(Error::Missing("pinned activation keys"))
    }

    fn grant_keys(&self) -> Result<&Keys> {
        self.grant_keys
            .as_ref()
            .ok_or(Error::Missing("pinned grant-sync keys"))
    }

    fn sync_client_id(&self) -> Result<Uuid> {
        self.client_id
            .ok_or(Error::NotConfigured("a grant-sync client id"))
    }

    /// Checks `now` against the store's high-water mark and the kept
    /// documents' `iat`, and moves the mark ([`Store::observe_clock`]);
    /// nothing without a store. Calls that use kept documents offline.
    pub fn check_clock(&self, now: DateTime<Utc>) -> Result<()> {
        match &self.store {
            Some(s) => s.observe_clock(now, self.tolerance),
            None => Ok(()),
        }
    }

    /// [`Client::check_clock`] before asking a server, which checks the
    /// client's time itself: a missing mark does not stop the call
    /// ([`Store::observe_clock_online`]).
    fn check_clock_online(&self, now: DateTime<Utc>) -> Result<()> {
        match &self.store {
            Some(s) => s.observe_clock_online(now, self.tolerance),
            None => Ok(()),
        }
    }

    /// After a server accepted `now` and answered with a document: the
    /// mark is re-established at `now` if it was lost.
    fn record_clock(&self, now: DateTime<Utc>) -> Result<()> {
        match &self.store {
            Some(s) => s.record_clock(now),
            None => Ok(()),
        }
    }

    fn to_activation(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.activation_url))
            .header("Authorization", format!("License {}", self.license_key))
    }

    fn to_grants(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let token = self
            .sync_token
            .as_ref()
            .ok_or(Error::NotConfigured("a grant-sync token"))?;
        Ok(self
            .http
            .request(method, format!("{}{path}", self.grants_url))
            .bearer_auth(token))
    }

    // ------------------------------------------------------------ activation

    /// Activates this device online, verifies the file it gets under the
    /// pinned keys (this product, the stored file's license if one is
    /// kept) and stores it (when there is a store). The same device again
    /// gets its seat back.
    pub async fn activate(&self, device: &Components, now: DateTime<Utc>) -> Result<Activation> {
        self.check_clock_online(now)?;
        let v = send(
            self.to_activation(Method::POST, "/v1/activations")
                .json(&json!({"fingerprint": device, "client_time": now})),
        )
        .await?;
        let file = string_at(&v, "activation_file")?;
        let activation = self.verify_file(&file, device, now)?;
        self.save_activation(&activation)?;
        self.record_clock(now)?;
        Ok(activation)
    }

    /// Verifies `file` offline for this device at `now` (pinned keys): of
    /// this product and, when an activation file is stored, of its license.
    pub fn verify_file(
        &self,
        file: &str,
        device: &Components,
        now: DateTime<Utc>,
    ) -> Result<Activation> {
        let license = self.stored_license()?;
        self.verify_for(file, license, device, now)
    }

    fn verify_for(
        &self,
        file: &str,
        license: Option<Uuid>,
        device: &Components,
        now: DateTime<Utc>,
    ) -> Result<Activation> {
        verify::verify_activation_file(
            file,
            self.act_keys()?,
            &self.product,
            license,
            device,
            now,
            self.tolerance,
        )
    }

    /// The license of the stored activation file, if one of this product
    /// is stored under the pinned keys (whatever its times and device): a
    /// file of another license must not replace it unnoticed.
    fn stored_license(&self) -> Result<Option<Uuid>> {
        let (Some(store), Ok(keys)) = (&self.store, self.act_keys()) else {
            return Ok(None);
        };
        Ok(store
            .read(store::ACTIVATION_FILE)?
            .and_then(|f| verify::signed_activation(&f, keys, &self.product).ok())
            .map(|claims| claims.license_id))
    }

    /// Writes the activation file to the store (atomically, 0600).
    pub fn save_activation(&self, activation: &Activation) -> Result<()> {
        if let Some(s) = &self.store {
            s.write(store::ACTIVATION_FILE, activation.file.as_bytes())?;
        }
        Ok(())
    }

    /// The stored activation file, verified offline for this device at
    /// `now`, after the clock check ([`Client::check_clock`]).
    pub fn load_activation(&self, device: &Components, now: DateTime<Utc>) -> Result<Activation> {
        self.check_clock(now)?;
        let file = self
            .store_or_missing()?
            .read(store::ACTIVATION_FILE)?
            .ok_or(Error::Missing("an activation file"))?;
        // The stored file is where the license is known from.
        self.verify_for(&file, None, device, now)
    }

    /// An offline activation request for this device (a new nonce), kept
    /// in the store as the pending request, as JSON text for the file.
    pub fn offline_request(&self, device: &Components, now: DateTime<Utc>) -> Result<String> {
        // An offline device's way to the server: a lost mark must not bar it.
        self.check_clock_online(now)?;
        verify::fingerprint_digest(device)?;
        let request = OfflineRequest {
            license_key: self.license_key.clone(),
            fingerprint: device.clone(),
            nonce: Uuid::new_v4().to_string(),
            client_time: now,
        };
        let text =
            serde_json::to_string_pretty(&request).map_err(|e| Error::Protocol(e.to_string()))?;
        self.store_or_missing()?
            .write(store::PENDING_OFFLINE, text.as_bytes())?;
        Ok(text)
    }

    /// [`Client::offline_request`] written (atomically, 0600) to `path`.
    pub fn write_offline_request(
        &self,
        path: &std::path::Path,
        device: &Components,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let text = self.offline_request(device, now)?;
        store::write_atomic(path, text.as_bytes())
    }

    /// Reads the response to the pending offline request (the JSON answer
    /// [`submit_offline_request`] returns, or the bare response file),
    /// verifies it for this device (this product, the stored file's
    /// license if one is kept), checks it carries the pending request's
    /// nonce, and stores it as the activation file. Like an online
    /// activation it re-establishes a lost clock mark: the server answered
    /// this request, and the file's `iat` is the server's time.
    pub fn read_offline_response(
        &self,
        response: &str,
        device: &Components,
        now: DateTime<Utc>,
    ) -> Result<Activation> {
        self.check_clock_online(now)?;
        let store = self.store_or_missing()?;
        let pending: OfflineRequest = store
            .read(store::PENDING_OFFLINE)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or(Error::Missing("a pending offline request"))?;
        let response = response.trim();
        let file = match serde_json::from_str::<Value>(response) {
            Ok(v) => string_at(&v, "response_file")?,
            Err(_) => response.to_string(),
        };
        let activation = self.verify_file(&file, device, now)?;
        if activation.claims.nonce.as_deref() != Some(pending.nonce.as_str()) {
            return Err(Error::NonceMismatch);
        }
        self.save_activation(&activation)?;
        store.remove(store::PENDING_OFFLINE)?;
        self.record_clock(now)?;
        Ok(activation)
    }

    /// Asks activation whether the license (and this device, and these
    /// features) is valid now: `SUSPENDED`, `REVOKED`, … show here first.
    pub async fn validate(
        &self,
        device: Option<&Components>,
        features: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Validation> {
        self.check_clock_online(now)?;
        let mut body = json!({"features": features, "client_time": now});
        if let Some(d) = device {
            body["fingerprint"] = json!(d);
        }
        let v = send(self.to_activation(Method::POST, "/v1/validate").json(&body)).await?;
        read(v, "validation")
    }

    /// Asks activation whether `file` may be installed (signed by it, its
    /// activation live).
    pub async fn check_file_online(&self, file: &str) -> Result<FileCheck> {
        let v = send(
            self.to_activation(Method::POST, "/v1/activations/verify")
                .json(&json!({"activation_file": file})),
        )
        .await?;
        read(v, "file check")
    }

    /// Uninstalls the activation: the seat is freed, the stored activation
    /// file removed, and the signed receipt verified (pinned keys) and
    /// returned. The file is removed as soon as the server has freed the
    /// seat, even if the receipt then fails to verify: the seat is gone.
    pub async fn uninstall(&self, activation_id: Uuid) -> Result<Receipt> {
        // Before asking: once the seat is freed, nothing may fail before
        // the stored file is gone.
        let keys = self.act_keys()?;
        let v = send(self.to_activation(
            Method::POST,
            &format!("/v1/activations/{activation_id}/uninstall"),
        ))
        .await?;
        if let Some(s) = &self.store {
            s.remove(store::ACTIVATION_FILE)?;
        }
        let receipt = string_at(&v, "receipt")?;
        let claims = verify::verify_receipt(&receipt, keys)?;
        if claims.activation_id != activation_id {
            return Err(Error::WrongDocument {
                expected: "the receipt of this activation",
            });
        }
        Ok(Receipt { receipt, claims })
    }

    // ------------------------------------------------------------ grant sync

    /// Syncs with grant sync: the signed grant document, verified (not its
    /// `exp`: it is current, even with no offline grace) and kept. Needs
    /// the sync token, the client id and the pinned grant-sync keys.
    ///
    /// Grant sync's own refusals — a problem+json 4xx with a code, but not
    /// 408 or 429 (bad credentials, a revoked client, a clock rollback) —
    /// are [`Error::Server`]. Any other outcome is no answer of grant
    /// sync's (unreachable, 3xx, 408, 429, 5xx, a portal's page, a document
    /// that does not verify or is older than one received before): the
    /// kept document is used until its `valid_until` (`online: false`),
    /// then the answer is [`Error::Expired`]; without one, the error.
    pub async fn sync(&self, now: DateTime<Utc>) -> Result<Synced> {
        self.check_clock_online(now)?;
        let client = self.sync_client_id()?;
        let keys = self.grant_keys()?;
        let req = self
            .to_grants(Method::POST, "/v1/sync")?
            .json(&json!({"wait_ms": 0, "client_time": now}));
        let fresh = match exchange(req).await {
            Ok(answer) if answer.is_refusal() => return Err(answer.error()),
            Ok(answer) => answer
                .into_value()
                .and_then(|v| self.fresh_grants(&v, keys, client, now)),
            Err(e) => Err(e),
        };
        match fresh {
            Ok(document) => {
                if let Some(s) = &self.store {
                    s.keep_grant_document(&document.document, document.claims.iat)?;
                    s.record_clock(now)?;
                }
                Ok(Synced {
                    document,
                    online: true,
                })
            }
            Err(e) => match self.kept_grants(now)? {
                Some(document) => Ok(Synced {
                    document,
                    online: false,
                }),
                None => Err(e),
            },
        }
    }

    /// The grant document of a 2xx sync answer, verified as current.
    fn fresh_grants(
        &self,
        answer: &Value,
        keys: &Keys,
        client: Uuid,
        now: DateTime<Utc>,
    ) -> Result<GrantDocument> {
        let doc = string_at(answer, "grant_document")?;
        let document =
            verify::verify_fresh_grant_document(&doc, keys, client, now, self.tolerance)?;
        let latest = match &self.store {
            Some(s) => s.grant_iat()?,
            None => None,
        };
        // Issued before one already received: a replay, not the present.
        if latest.is_some_and(|iat| document.claims.iat < iat) {
            return Err(Error::WrongDocument {
                expected: "a grant document no older than the last one",
            });
        }
        Ok(document)
    }

    /// The last grant document kept, verified at `now` (offline): valid
    /// until its `valid_until`, then [`Error::Expired`]. Needs the client
    /// id; checks the clock ([`Client::check_clock`]) and refuses a kept
    /// document older than the latest received (an old, more generous
    /// one restored).
    pub fn cached_grants(&self, now: DateTime<Utc>) -> Result<GrantDocument> {
        self.kept_grants(now)?
            .ok_or(Error::Missing("a grant document"))
    }

    /// [`Client::cached_grants`]; None when no document is kept.
    fn kept_grants(&self, now: DateTime<Utc>) -> Result<Option<GrantDocument>> {
        let client = self.sync_client_id()?;
        let Some(store) = &self.store else {
            return Ok(None);
        };
        store.observe_clock(now, self.tolerance)?;
        let Some(doc) = store.read(store::GRANT_DOCUMENT)? else {
            return Ok(None);
        };
        let document =
            verify::verify_grant_document(&doc, self.grant_keys()?, client, now, self.tolerance)?;
        match store.grant_iat()? {
            Some(latest) if document.claims.iat >= latest => Ok(Some(document)),
            Some(_) => Err(Error::WrongDocument {
                expected: "the latest grant document received",
            }),
            None => Err(Error::Missing(
                "the latest grant document's iat: an online sync is needed",
            )),
        }
    }

    /// Checks out `feature` (or a module) of the license: a floating seat.
    pub async fn checkout(
        &self,
        license_id: Uuid,
        feature: &str,
        now: DateTime<Utc>,
    ) -> Result<Lease> {
        self.check_clock_online(now)?;
        let v = send(
            self.to_grants(Method::POST, "/v1/leases")?
                .json(&json!({"license_id": license_id, "feature": feature, "client_time": now})),
        )
        .await?;
        read(v, "lease")
    }

    /// Renews a lease for its TTL; its new deadline.
    pub async fn heartbeat(&self, lease_id: Uuid, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        self.check_clock_online(now)?;
        let v = send(
            self.to_grants(Method::POST, &format!("/v1/leases/{lease_id}/heartbeat"))?
                .json(&json!({"client_time": now})),
        )
        .await?;
        let deadline = string_at(&v, "deadline")?;
        contracts::time::parse(&deadline).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Releases a lease: its seats are free again.
    pub async fn release(&self, lease_id: Uuid) -> Result<()> {
        send(self.to_grants(Method::DELETE, &format!("/v1/leases/{lease_id}"))?).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::activation::{ActivationClaims, EventPosition, FeatureGrant, ACTIVATION_TYP};
    use contracts::issuance::LicenseKind;
    use signing::KeyRing;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn t(s: &str) -> DateTime<Utc> {
        contracts::time::parse(s).expect("time")
    }

    fn temp_store() -> Store {
        Store::open(std::env::temp_dir().join(format!("license-client-{}", Uuid::new_v4())))
            .expect("store")
    }

    fn device() -> Components {
        [("machine_id", "m-1"), ("disk", "d-1"), ("board", "b-1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Nothing listens on port 1: every request is unreachable.
    const NOWHERE: &str = "http://127.0.0.1:1";

    /// A server on localhost answering every request with `head` (status
    /// line and headers) and `body`, then closing; its base URL.
    async fn serve_raw(head: String, body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (head, body) = (head.clone(), body.clone());
                tokio::spawn(async move {
                    // The request: its headers, then Content-Length bytes.
                    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                    loop {
                        let n = conn.read(&mut buf).await.unwrap_or(0);
                        seen.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                        let done = text.split_once("\r\n\r\n").is_some_and(|(h, b)| {
                            let len = h
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            b.len() >= len
                        });
                        if n == 0 || done {
                            break;
                        }
                    }
                    let head = format!("{head}\r\nConnection: close\r\n\r\n");
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        url
    }

    async fn serve(status: &str, content_type: &str, body: &str) -> String {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}",
            body.len()
        );
        serve_raw(head, body.into()).await
    }

    fn grant_document(ring: &KeyRing, client: Uuid, until: &str) -> String {
        grant_document_issued(ring, client, "2031-01-01T00:00:00Z", until)
    }

    fn grant_document_issued(ring: &KeyRing, client: Uuid, issued: &str, until: &str) -> String {
        let iat = t(issued);
        ring.sign(&json!({
            "iss": "grant-sync", "sub": client.to_string(), "iat": iat.timestamp(),
            "nbf": iat.timestamp(), "exp": t(until).timestamp(), "typ": "grant-document",
            "client_id": client, "server_time": iat, "valid_until": until,
            "grants": [], "leases": [],
        }))
        .expect("sign")
    }

    /// A grant-sync client of `client_id` at `url` on `store`, keys pinned.
    fn sync_client(url: &str, ring: &KeyRing, client_id: Uuid, store: &Store) -> Client {
        let mut client = Client::new(NOWHERE, url, "p", "KEY")
            .expect("client")
            .with_sync_token("SCx.secret")
            .with_client_id(client_id)
            .with_store(store.clone())
            .expect("store");
        client
            .pin_grant_keys(Keys::from_jwks(ring.jwks()).expect("keys"))
            .expect("pin");
        client
    }

    #[test]
    fn debug_output_shows_no_credential() {
        let client = Client::new(NOWHERE, NOWHERE, "p", "KEY-SECRET-1234")
            .expect("client")
            .with_sync_token("SCabc.token-secret");
        let shown = format!("{client:?}");
        assert!(!shown.contains("KEY-SECRET-1234"), "{shown}");
        assert!(!shown.contains("token-secret"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
        let request = OfflineRequest {
            license_key: "KEY-SECRET-1234".into(),
            fingerprint: device(),
            nonce: "n".into(),
            client_time: t("2031-01-01T00:00:00Z"),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("KEY-SECRET-1234"), "{shown}");
    }

    #[tokio::test]
    async fn answers_are_read_up_to_a_mebibyte_and_problem_texts_are_cut() {
        let http = http().expect("http");
        // Announced too long: refused before reading.
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}", MAX_ANSWER + 1);
        let url = serve_raw(head, Vec::new()).await;
        assert!(matches!(
            send(http.get(&url)).await,
            Err(Error::Protocol(_))
        ));
        // Not announced: read until the cap, then refused.
        let url = serve_raw("HTTP/1.1 200 OK".into(), vec![b' '; MAX_ANSWER + 4096]).await;
        assert!(matches!(
            send(http.get(&url)).await,
            Err(Error::Protocol(_))
        ));
        let body = json!({"code": "X", "detail": "d".repeat(100_000)}).to_string();
        let url = serve("400 Bad Request", "application/problem+json", &body).await;
        match send(http.get(&url)).await {
            Err(Error::Server { code, detail, .. }) => {
                assert_eq!(code, "X");
                assert_eq!(detail.map(|d| d.len()), Some(MAX_TEXT));
            }
            other => panic!("a problem, got {other:?}"),
        }
    }

    #[test]
    fn only_a_problem_with_a_code_and_a_4xx_status_is_a_refusal() {
        let answer = |status: u16, problem: bool, json: Value| Answer {
            status,
            problem,
            json,
        };
        let coded = || json!({"code": "BAD_CREDENTIALS"});
        for status in [400, 401, 403, 404, 409, 422] {
            assert!(answer(status, true, coded()).is_refusal(), "{status}");
        }
        for (status, problem, json) in [
            (302, true, coded()),
            (408, true, coded()),
            (429, true, coded()),
            (500, true, coded()),
            (503, true, coded()),
            (401, false, coded()),     // not problem+json: a proxy's
            (403, true, json!({})),    // no code
            (404, false, Value::Null), // an HTML page
            (200, false, Value::Null), // a captive portal
        ] {
            assert!(!answer(status, problem, json).is_refusal(), "{status}");
        }
    }

    #[tokio::test]
    async fn a_kept_document_serves_through_anything_but_a_refusal_of_grant_sync() {
        let ring = KeyRing::generate("g1").expect("ring");
        let store = temp_store();
        let client_id = Uuid::new_v4();
        let kept = grant_document(&ring, client_id, "2031-01-04T00:00:00Z");
        store
            .keep_grant_document(&kept, t("2031-01-01T00:00:00Z").timestamp())
            .expect("keep");
        store.record_clock(t("2031-01-01T00:00:00Z")).expect("mark");
        let now = t("2031-01-02T00:00:00Z");
        let problem = "application/problem+json";
        let another = grant_document(&ring, Uuid::new_v4(), "2031-01-09T00:00:00Z");
        let another = json!({ "grant_document": another }).to_string();
        let older = grant_document_issued(
            &ring,
            client_id,
            "2030-12-01T00:00:00Z",
            "2031-01-09T00:00:00Z",
        );
        let older = json!({ "grant_document": older }).to_string();
        let json = "application/json";
        for (status, content_type, body) in [
            ("302 Found", "text/html", "<a href=/login>"),
            ("200 OK", "text/html", "<html>Sign in to the Wi-Fi</html>"),
            ("408 Request Timeout", problem, r#"{"code":"TIMEOUT"}"#),
            (
                "429 Too Many Requests",
                problem,
                r#"{"code":"RATE_LIMITED"}"#,
            ),
            ("403 Forbidden", "text/html", "blocked by proxy"),
            (
                "503 Service Unavailable",
                problem,
                r#"{"code":"NOT_READY"}"#,
            ),
            ("200 OK", json, &another),
            ("200 OK", json, &older),
        ] {
            let url = serve(status, content_type, body).await;
            let synced = sync_client(&url, &ring, client_id, &store)
                .sync(now)
                .await
                .unwrap_or_else(|e| panic!("{status} {body}: {e}"));
            assert!(!synced.online, "{status}");
            assert_eq!(synced.document.document, kept);
        }
        for status in ["401 Unauthorized", "404 Not Found", "409 Conflict"] {
            let url = serve(status, problem, r#"{"code":"CLIENT_REVOKED"}"#).await;
            match sync_client(&url, &ring, client_id, &store).sync(now).await {
                Err(Error::Server { code, .. }) => assert_eq!(code, "CLIENT_REVOKED"),
                other => panic!("{status} is grant sync's refusal, got {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[tokio::test]
    async fn an_online_document_without_grace_is_current_but_does_not_serve_offline() {
        let ring = KeyRing::generate("g1").expect("ring");
        let store = temp_store();
        let client_id = Uuid::new_v4();
        let now = t("2031-01-01T00:00:00Z");
        // Zero offline grace: grant sync signs exp == iat == now.
        let doc = grant_document(&ring, client_id, "2031-01-01T00:00:00Z");
        let url = serve(
            "200 OK",
            "application/json",
            &json!({"grant_document": doc}).to_string(),
        )
        .await;
        let client = sync_client(&url, &ring, client_id, &store);
        let synced = client.sync(now).await.expect("online");
        assert!(synced.online);
        assert_eq!(synced.document.claims.exp, now.timestamp());
        assert!(matches!(
            client.cached_grants(now),
            Err(Error::Expired { .. })
        ));
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[tokio::test]
    async fn an_unreachable_server_leaves_the_last_document_in_force_until_valid_until() {
        let ring = KeyRing::generate("g1").expect("ring");
        let store = temp_store();
        let client_id = Uuid::new_v4();
        store
            .keep_grant_document(
                &grant_document(&ring, client_id, "2031-01-04T00:00:00Z"),
                t("2031-01-01T00:00:00Z").timestamp(),
            )
            .expect("keep");
        let client = sync_client(NOWHERE, &ring, client_id, &store);
        // A document kept without a clock mark (deleted): not served.
        assert!(matches!(
            client.sync(t("2031-01-03T23:59:59Z")).await,
            Err(Error::Missing(m)) if m.contains("online")
        ));
        store.record_clock(t("2031-01-01T00:00:00Z")).expect("mark");
        let inside = client.sync(t("2031-01-03T23:59:59Z")).await.expect("grace");
        assert!(!inside.online);
        assert_eq!(inside.document.client_id(), client_id);
        assert!(matches!(
            client.sync(t("2031-01-04T00:00:00Z")).await,
            Err(Error::Expired { .. })
        ));
        // Without a kept document, the unreachable server is the answer.
        store.remove(store::GRANT_DOCUMENT).expect("remove");
        assert!(matches!(
            client.sync(t("2031-01-04T00:00:01Z")).await,
            Err(Error::Unreachable(_))
        ));
        // The pinned keys were kept in the store: a new client finds them.
        let again = Client::new(NOWHERE, NOWHERE, "p", "KEY")
            .expect("client")
            .with_store(store.clone())
            .expect("store");
        assert!(again.grant_keys.is_some());
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[test]
    fn a_restored_older_grant_document_or_another_clients_is_refused() {
        let ring = KeyRing::generate("g1").expect("ring");
        let store = temp_store();
        let client_id = Uuid::new_v4();
        let now = t("2031-01-02T00:00:00Z");
        store.record_clock(now).expect("mark");
        let client = sync_client(NOWHERE, &ring, client_id, &store);
        let newer = grant_document_issued(
            &ring,
            client_id,
            "2031-01-01T12:00:00Z",
            "2031-01-03T00:00:00Z",
        );
        store
            .keep_grant_document(&newer, t("2031-01-01T12:00:00Z").timestamp())
            .expect("keep");
        assert!(client.cached_grants(now).is_ok());
        // An older, more generous document copied back over it.
        let older = grant_document(&ring, client_id, "2031-02-01T00:00:00Z");
        store
            .write(store::GRANT_DOCUMENT, older.as_bytes())
            .expect("restore");
        assert!(matches!(
            client.cached_grants(now),
            Err(Error::WrongDocument { .. })
        ));
        // Its iat record deleted too: not served without an online sync.
        store.remove(store::GRANT_IAT).expect("remove");
        assert!(matches!(client.cached_grants(now), Err(Error::Missing(_))));
        // Another client's document, and no client id at all.
        let theirs = grant_document(&ring, Uuid::new_v4(), "2031-02-01T00:00:00Z");
        store
            .keep_grant_document(&theirs, t("2031-01-01T12:00:00Z").timestamp())
            .expect("keep");
        assert!(matches!(
            client.cached_grants(now),
            Err(Error::WrongDocument { .. })
        ));
        let mut anonymous = Client::new(NOWHERE, NOWHERE, "p", "KEY")
            .expect("client")
            .with_sync_token("SCx.secret")
            .with_store(store.clone())
            .expect("store");
        anonymous
            .pin_grant_keys(Keys::from_jwks(ring.jwks()).expect("keys"))
            .expect("pin");
        assert!(matches!(
            anonymous.cached_grants(now),
            Err(Error::NotConfigured(_))
        ));
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[tokio::test]
    async fn a_clock_set_back_is_refused_before_any_request() {
        let ring = KeyRing::generate("g1").expect("ring");
        let store = temp_store();
        let client = sync_client(NOWHERE, &ring, Uuid::new_v4(), &store);
        // The first call records the time even though the server is away.
        assert!(matches!(
            client.sync(t("2031-01-02T00:00:00Z")).await,
            Err(Error::Unreachable(_))
        ));
        assert!(matches!(
            client.sync(t("2031-01-01T00:00:00Z")).await,
            Err(Error::ClockRollback { .. })
        ));
        assert!(matches!(
            client.load_activation(&device(), t("2031-01-01T00:00:00Z")),
            Err(Error::ClockRollback { .. })
        ));
        let _ = std::fs::remove_dir_all(store.dir());
    }

    fn activation_file(ring: &KeyRing, product: &str, license_id: Uuid, nonce: &str) -> String {
        let now = t("2031-01-01T00:00:00Z");
        let claims = ActivationClaims {
            typ: ACTIVATION_TYP.into(),
            iss: "activation".into(),
            activation_id: Uuid::new_v4(),
            license_id,
            product: product.into(),
            edition: None,
            kind: LicenseKind::Formal,
            features: vec![FeatureGrant {
                code: "f1".into(),
                expires_at: None,
            }],
            fingerprint: verify::fingerprint_digest(&device()).expect("digest"),
            components: BTreeMap::new(),
            min_matches: None,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: None,
            event: EventPosition {
                aggregate_type: "LicenseActivations".into(),
                aggregate_id: "x".into(),
                sequence: 1,
                hash: "00".repeat(32),
            },
            nonce: Some(nonce.into()),
        };
        ring.sign(&claims).expect("sign")
    }

    #[test]
    fn an_offline_response_must_answer_the_pending_request_for_this_product_and_license() {
        let ring = KeyRing::generate("a1").expect("ring");
        let store = temp_store();
        let mut client = Client::new(NOWHERE, NOWHERE, "p", "KEY")
            .expect("client")
            .with_store(store.clone())
            .expect("store");
        client
            .pin_activation_keys(Keys::from_jwks(ring.jwks()).expect("keys"))
            .expect("pin");
        let now = t("2031-01-01T00:00:00Z");
        let request: OfflineRequest =
            serde_json::from_str(&client.offline_request(&device(), now).expect("request"))
                .expect("json");
        assert_eq!(request.license_key, "KEY");
        let license = Uuid::new_v4();
        let response = |product: &str, license: Uuid, nonce: &str| {
            json!({"response_file": activation_file(&ring, product, license, nonce)}).to_string()
        };
        assert!(matches!(
            client.read_offline_response(&response("p", license, "another"), &device(), now),
            Err(Error::NonceMismatch)
        ));
        // One activation service signs every product's files.
        assert!(matches!(
            client.read_offline_response(&response("q", license, &request.nonce), &device(), now),
            Err(Error::WrongProduct { .. })
        ));
        assert_eq!(store.read(store::ACTIVATION_FILE).expect("read"), None);
        let a = client
            .read_offline_response(&response("p", license, &request.nonce), &device(), now)
            .expect("accepted");
        assert!(a.may_start("f1", now));
        assert_eq!(
            client.load_activation(&device(), now).expect("stored"),
            a,
            "stored, and it loads"
        );
        // The request is answered once.
        assert!(matches!(
            client.read_offline_response(&response("p", license, &request.nonce), &device(), now),
            Err(Error::Missing(_))
        ));
        // Once a file is stored, its license is the one expected.
        let request: OfflineRequest =
            serde_json::from_str(&client.offline_request(&device(), now).expect("request"))
                .expect("json");
        let other = response("p", Uuid::new_v4(), &request.nonce);
        assert!(matches!(
            client.read_offline_response(&other, &device(), now),
            Err(Error::WrongLicense { expected, .. }) if expected == license
        ));
        // Another product's file copied into the store does not load.
        store
            .write(
                store::ACTIVATION_FILE,
                activation_file(&ring, "q", license, "n").as_bytes(),
            )
            .expect("write");
        assert!(matches!(
            client.load_activation(&device(), now),
            Err(Error::WrongProduct { .. })
        ));
        // Nor does any file once the clock mark is gone, until the server
        // answers again.
        store
            .write(store::ACTIVATION_FILE, a.file.as_bytes())
            .expect("write");
        store.remove(store::HIGH_WATER).expect("remove");
        assert!(matches!(
            client.load_activation(&device(), now),
            Err(Error::Missing(_))
        ));
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[tokio::test]
    async fn uninstall_removes_the_stored_file_once_the_seat_is_freed_even_if_the_receipt_fails() {
        let ring = KeyRing::generate("a1").expect("ring");
        let store = temp_store();
        let file = activation_file(&ring, "p", Uuid::new_v4(), "n");
        store
            .write(store::ACTIVATION_FILE, file.as_bytes())
            .expect("write");
        let url = serve(
            "200 OK",
            "application/json",
            r#"{"receipt": "not.a.receipt"}"#,
        )
        .await;
        // No keys pinned: refused before the seat is freed; the file stays.
        let mut client = Client::new(&url, NOWHERE, "p", "KEY")
            .expect("client")
            .with_store(store.clone())
            .expect("store");
        assert!(matches!(
            client.uninstall(Uuid::new_v4()).await,
            Err(Error::Missing(_))
        ));
        assert!(store.read(store::ACTIVATION_FILE).expect("read").is_some());
        client
            .pin_activation_keys(Keys::from_jwks(ring.jwks()).expect("keys"))
            .expect("pin");
        assert!(matches!(
            client.uninstall(Uuid::new_v4()).await,
            Err(Error::BadSignature(_))
        ));
        assert_eq!(store.read(store::ACTIVATION_FILE).expect("read"), None);
        let _ = std::fs::remove_dir_all(store.dir());
    }
}
