//! API keys: SecretId (public) + SecretKey (shown once). The aggregate holds
//! only the SecretKey's digest, scopes, an allowlist of at most 10 addresses
//! or CIDRs, a callback URL and a remark.

use chrono::{DateTime, Utc};
use contracts::issuance::*;
use contracts::{net, text};
use domain_kit::CodedError;
use serde::{Deserialize, Serialize};

use super::IssuanceServices;

const MAX_REMARK_LEN: usize = 500;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub state: Option<ApiKeyState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyState {
    pub key_id: String,
    pub secret_digest: String,
    pub scopes: Vec<String>,
    pub allowlist: Vec<String>,
    pub callback_url: Option<String>,
    /// What `callback_url` receives (empty with a URL: a key made before
    /// webhooks, which receives the default set).
    #[serde(default)]
    pub callback_events: Vec<String>,
    /// The callback kept failing; nothing is sent until it is set again.
    #[serde(default)]
    pub callback_disabled: bool,
    pub remark: Option<String>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    /// The caller generates the secret and passes only its digest.
    Create {
        key_id: String,
        secret_digest: String,
        spec: CreateApiKey,
    },
    Rotate {
        secret_digest: String,
    },
    Revoke,
    SetAllowlist(SetAllowlist),
    /// None removes the callback.
    SetCallback(Option<SetCallback>),
    /// By the webhook sender: the callback failed `failures` times in a row.
    DisableCallback {
        failures: u32,
    },
}

domain_kit::events! {
    pub enum ApiKeyEvent {
        ApiKeyCreated => API_KEY_CREATED,
        ApiKeyRotated => API_KEY_ROTATED,
        ApiKeyRevoked => API_KEY_REVOKED,
        ApiKeyAllowlistChanged => API_KEY_ALLOWLIST_CHANGED,
        ApiKeyCallbackChanged => API_KEY_CALLBACK_CHANGED,
        ApiKeyCallbackDisabled => API_KEY_CALLBACK_DISABLED,
    }
}

impl domain_kit::Refusal for ApiKeyEvent {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("API key already exists")]
    AlreadyExists,
    #[error("no such API key")]
    NotFound,
    #[error("the API key is revoked")]
    Revoked,
    #[error("scopes must be a non-empty set of: admin, issuer, activator, domain-admin, sync-client, auditor")]
    InvalidScopes,
    #[error("an allowlist holds at most 10 addresses or CIDRs")]
    AllowlistTooLong,
    #[error("{0:?} is not an IP address or CIDR block")]
    InvalidAllowlistEntry(String),
    #[error("callback_url must be an http(s) URL of at most 2048 characters")]
    InvalidCallbackUrl,
    #[error("callback events: {0}")]
    InvalidCallbackEvents(String),
    #[error("the key has no callback (or it is disabled already)")]
    NoCallback,
    #[error("remark must be at most 500 characters without control characters")]
    InvalidRemark,
}

impl CodedError for ApiKeyError {
    domain_kit::coded! {
        Self::AlreadyExists => "API_KEY_EXISTS", Conflict;
        Self::NotFound => "API_KEY_NOT_FOUND", NotFound;
        Self::Revoked => "API_KEY_REVOKED", Conflict;
        Self::InvalidScopes => "INVALID_SCOPES", Invalid;
        Self::AllowlistTooLong => "ALLOWLIST_TOO_LONG", Invalid;
        Self::InvalidAllowlistEntry(_) => "INVALID_ALLOWLIST_ENTRY", Invalid;
        Self::InvalidCallbackUrl => "INVALID_CALLBACK_URL", Invalid;
        Self::InvalidCallbackEvents(_) => "INVALID_CALLBACK_EVENTS", Invalid;
        Self::NoCallback => "NO_CALLBACK", Conflict;
        Self::InvalidRemark => "INVALID_REMARK", Invalid;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidScopes => Some("scopes"),
            Self::AllowlistTooLong | Self::InvalidAllowlistEntry(_) => Some("allowlist"),
            Self::InvalidCallbackUrl => Some("callback_url"),
            Self::InvalidCallbackEvents(_) => Some("callback_events"),
            Self::InvalidRemark => Some("remark"),
            _ => None,
        }
    }
}

fn check_allowlist<S: AsRef<str>>(list: &[S]) -> Result<(), ApiKeyError> {
    net::check_allowlist(list).map_err(|e| match e {
        net::AllowlistError::TooLong => ApiKeyError::AllowlistTooLong,
        net::AllowlistError::Invalid(bad) => ApiKeyError::InvalidAllowlistEntry(bad),
    })
}

fn check_spec(spec: &CreateApiKey) -> Result<(), ApiKeyError> {
    let mut seen = std::collections::BTreeSet::new();
    if spec.scopes.is_empty()
        || !spec
            .scopes
            .iter()
            .all(|s| SCOPES.contains(&s.as_str()) && seen.insert(s.as_str()))
    {
        return Err(ApiKeyError::InvalidScopes);
    }
    check_allowlist(&spec.allowlist)?;
    callback_events(
        spec.callback_url.as_deref(),
        spec.callback_events.as_deref(),
        &[],
    )?;
    if let Some(r) = &spec.remark {
        if r.chars().count() > MAX_REMARK_LEN || r.chars().any(char::is_control) {
            return Err(ApiKeyError::InvalidRemark);
        }
    }
    Ok(())
}

/// The events of a callback set to `url` with `events` named or not.
fn callback_events(
    url: Option<&str>,
    events: Option<&[text::Text<64>]>,
    current: &[String],
) -> Result<Vec<String>, ApiKeyError> {
    contracts::webhooks::callback_events(url, events, current).map_err(|e| match e {
        contracts::webhooks::CallbackError::Url => ApiKeyError::InvalidCallbackUrl,
        contracts::webhooks::CallbackError::Events(why) => ApiKeyError::InvalidCallbackEvents(why),
    })
}

impl ApiKey {
    fn live(&self) -> Result<&ApiKeyState, ApiKeyError> {
        let s = self.state.as_ref().ok_or(ApiKeyError::NotFound)?;
        if s.revoked {
            return Err(ApiKeyError::Revoked);
        }
        Ok(s)
    }
}

domain_kit::aggregate!(
    ApiKey,
    API_KEY_AGGREGATE,
    ApiKeyCommand,
    ApiKeyEvent,
    ApiKeyError,
    IssuanceServices,
    fold = 2
);

impl ApiKey {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: ApiKeyCommand,
        services: &IssuanceServices,
    ) -> Result<Vec<ApiKeyEvent>, ApiKeyError> {
        let now = services.clock.now();
        let event = match command {
            ApiKeyCommand::Create {
                key_id,
                secret_digest,
                spec,
            } => {
                if self.state.is_some() {
                    return Err(ApiKeyError::AlreadyExists);
                }
                check_spec(&spec)?;
                ApiKeyEvent::ApiKeyCreated(ApiKeyCreated {
                    key_id,
                    secret_digest,
                    scopes: text::strings(spec.scopes),
                    allowlist: text::strings(spec.allowlist),
                    callback_events: callback_events(
                        spec.callback_url.as_deref(),
                        spec.callback_events.as_deref(),
                        &[],
                    )?,
                    callback_url: spec.callback_url.map(String::from),
                    remark: spec.remark.map(String::from),
                    created_at: now,
                })
            }
            ApiKeyCommand::Rotate { secret_digest } => {
                let s = self.live()?;
                ApiKeyEvent::ApiKeyRotated(ApiKeyRotated {
                    key_id: s.key_id.clone(),
                    secret_digest,
                    rotated_at: now,
                })
            }
            ApiKeyCommand::Revoke => {
                let s = self.live()?;
                ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
                    key_id: s.key_id.clone(),
                    revoked_at: now,
                })
            }
            ApiKeyCommand::SetAllowlist(a) => {
                let s = self.live()?;
                check_allowlist(&a.allowlist)?;
                ApiKeyEvent::ApiKeyAllowlistChanged(ApiKeyAllowlistChanged {
                    key_id: s.key_id.clone(),
                    allowlist: text::strings(a.allowlist),
                    changed_at: now,
                })
            }
            ApiKeyCommand::SetCallback(c) => {
                let s = self.live()?;
                let (url, events) = match c {
                    Some(c) => (Some(c.callback_url), c.callback_events),
                    None if s.callback_url.is_none() => return Err(ApiKeyError::NoCallback),
                    None => (None, None),
                };
                let events =
                    callback_events(url.as_deref(), events.as_deref(), &s.callback_events)?;
                ApiKeyEvent::ApiKeyCallbackChanged(ApiKeyCallbackChanged {
                    key_id: s.key_id.clone(),
                    callback_url: url.map(String::from),
                    callback_events: events,
                    changed_at: now,
                })
            }
            ApiKeyCommand::DisableCallback { failures } => {
                let s = self.live()?;
                let url = match (&s.callback_url, s.callback_disabled) {
                    (Some(url), false) => url.clone(),
                    _ => return Err(ApiKeyError::NoCallback),
                };
                ApiKeyEvent::ApiKeyCallbackDisabled(ApiKeyCallbackDisabled {
                    key_id: s.key_id.clone(),
                    callback_url: url,
                    failures,
                    disabled_at: now,
                })
            }
        };
        Ok(vec![event])
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: ApiKeyEvent) {
        if let ApiKeyEvent::ApiKeyCreated(e) = event {
            self.state = Some(ApiKeyState {
                key_id: e.key_id,
                secret_digest: e.secret_digest,
                scopes: e.scopes,
                allowlist: e.allowlist,
                callback_url: e.callback_url,
                callback_events: e.callback_events,
                callback_disabled: false,
                remark: e.remark,
                revoked: false,
                created_at: e.created_at,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            ApiKeyEvent::ApiKeyCreated(_) => {}
            ApiKeyEvent::ApiKeyRotated(e) => s.secret_digest = e.secret_digest,
            ApiKeyEvent::ApiKeyRevoked(_) => s.revoked = true,
            ApiKeyEvent::ApiKeyAllowlistChanged(e) => s.allowlist = e.allowlist,
            ApiKeyEvent::ApiKeyCallbackChanged(e) => {
                s.callback_url = e.callback_url;
                s.callback_events = e.callback_events;
                s.callback_disabled = false;
            }
            ApiKeyEvent::ApiKeyCallbackDisabled(_) => s.callback_disabled = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::test_support::{now, services};

    fn spec() -> CreateApiKey {
        CreateApiKey {
            scopes: vec![
                "issuer".try_into().expect("valid text"),
                "auditor".try_into().expect("valid text"),
            ],
            allowlist: vec![
                "10.0.0.0/8".try_into().expect("valid text"),
                "203.0.113.7".try_into().expect("valid text"),
            ],
            callback_url: Some(
                "https://billing.example/callback"
                    .try_into()
                    .expect("valid text"),
            ),
            callback_events: None,
            remark: Some("billing".try_into().expect("valid text")),
        }
    }

    fn create(spec: CreateApiKey) -> ApiKeyCommand {
        ApiKeyCommand::Create {
            key_id: "AKID1".into(),
            secret_digest: "d1".into(),
            spec,
        }
    }

    fn created() -> ApiKeyEvent {
        let s = spec();
        ApiKeyEvent::ApiKeyCreated(ApiKeyCreated {
            key_id: "AKID1".into(),
            secret_digest: "d1".into(),
            scopes: contracts::text::strings(s.scopes),
            allowlist: contracts::text::strings(s.allowlist),
            callback_url: s.callback_url.map(String::from),
            callback_events: contracts::webhooks::default_events(),
            remark: s.remark.map(String::from),
            created_at: now(),
        })
    }

    fn revoked() -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
            key_id: "AKID1".into(),
            revoked_at: now(),
        })
    }

    fn fw() -> TestFramework<ApiKey> {
        TestFramework::with(services())
    }

    #[test]
    fn creating_rotating_revoking_and_changing_the_allowlist() {
        fw().given_no_previous_events()
            .when(create(spec()))
            .then_expect_events(vec![created()]);
        fw().given(vec![created()])
            .when(ApiKeyCommand::Rotate {
                secret_digest: "d2".into(),
            })
            .then_expect_events(vec![ApiKeyEvent::ApiKeyRotated(ApiKeyRotated {
                key_id: "AKID1".into(),
                secret_digest: "d2".into(),
                rotated_at: now(),
            })]);
        fw().given(vec![created()])
            .when(ApiKeyCommand::Revoke)
            .then_expect_events(vec![revoked()]);
        fw().given(vec![created()])
            .when(ApiKeyCommand::SetAllowlist(SetAllowlist {
                allowlist: vec!["::1".try_into().expect("valid text")],
            }))
            .then_expect_events(vec![ApiKeyEvent::ApiKeyAllowlistChanged(
                ApiKeyAllowlistChanged {
                    key_id: "AKID1".into(),
                    allowlist: vec!["::1".into()],
                    changed_at: now(),
                },
            )]);
    }

    fn texts(list: &[&str]) -> Vec<contracts::text::Text<64>> {
        list.iter()
            .map(|t| (*t).try_into().expect("valid text"))
            .collect()
    }

    fn callback_changed(url: Option<&str>, events: Vec<String>) -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyCallbackChanged(ApiKeyCallbackChanged {
            key_id: "AKID1".into(),
            callback_url: url.map(String::from),
            callback_events: events,
            changed_at: now(),
        })
    }

    #[test]
    fn a_callback_is_changed_kept_removed_and_disabled_once() {
        let url = "https://hooks.example/in";
        let set = |url: Option<&str>, events: Option<&[&str]>| {
            ApiKeyCommand::SetCallback(url.map(|u| SetCallback {
                callback_url: u.try_into().expect("valid text"),
                callback_events: events.map(texts),
            }))
        };
        // A list replaces the events; no list keeps them.
        fw().given(vec![created()])
            .when(set(Some(url), Some(&["LicenseIssued"])))
            .then_expect_events(vec![callback_changed(
                Some(url),
                vec!["LicenseIssued".into()],
            )]);
        fw().given(vec![
            created(),
            callback_changed(Some(url), vec!["LicenseIssued".into()]),
        ])
        .when(set(Some("https://other.example/in"), None))
        .then_expect_events(vec![callback_changed(
            Some("https://other.example/in"),
            vec!["LicenseIssued".into()],
        )]);
        fw().given(vec![created()])
            .when(set(None, None))
            .then_expect_events(vec![callback_changed(None, vec![])]);
        fw().given(vec![created(), callback_changed(None, vec![])])
            .when(set(None, None))
            .then_expect_error(ApiKeyError::NoCallback);
        fw().given(vec![created()])
            .when(set(Some(url), Some(&["ApiKeyCreated"])))
            .then_expect_error(ApiKeyError::InvalidCallbackEvents(
                "\"ApiKeyCreated\" is not an event type a callback can receive".into(),
            ));
        let disabled = ApiKeyEvent::ApiKeyCallbackDisabled(ApiKeyCallbackDisabled {
            key_id: "AKID1".into(),
            callback_url: "https://billing.example/callback".into(),
            failures: 7,
            disabled_at: now(),
        });
        fw().given(vec![created()])
            .when(ApiKeyCommand::DisableCallback { failures: 7 })
            .then_expect_events(vec![disabled.clone()]);
        fw().given(vec![created(), disabled.clone()])
            .when(ApiKeyCommand::DisableCallback { failures: 8 })
            .then_expect_error(ApiKeyError::NoCallback);
        // Setting it again enables it.
        let mut key = ApiKey::default();
        for e in [created(), disabled, callback_changed(Some(url), vec![])] {
            key.evolve(e);
        }
        assert!(!key.state.expect("created").callback_disabled);
    }

    #[test]
    fn create_rejections() {
        let with = |f: &dyn Fn(&mut CreateApiKey)| {
            let mut s = spec();
            f(&mut s);
            create(s)
        };
        let eleven: Vec<String> = (1..=11).map(|i| format!("10.0.0.{i}")).collect();
        let cases = vec![
            (with(&|s| s.scopes.clear()), ApiKeyError::InvalidScopes),
            (
                with(&|s| s.scopes.push("root".try_into().expect("valid text"))),
                ApiKeyError::InvalidScopes,
            ),
            (
                with(&|s| s.scopes.push("issuer".try_into().expect("valid text"))),
                ApiKeyError::InvalidScopes,
            ),
            (
                with(&|s| {
                    s.allowlist = eleven
                        .clone()
                        .into_iter()
                        .map(|s| s.try_into().expect("valid text"))
                        .collect::<Vec<_>>()
                }),
                ApiKeyError::AllowlistTooLong,
            ),
            (
                with(&|s| s.allowlist = vec!["example.com".try_into().expect("valid text")]),
                ApiKeyError::InvalidAllowlistEntry("example.com".into()),
            ),
            (
                with(&|s| s.callback_url = Some("ftp://x".try_into().expect("valid text"))),
                ApiKeyError::InvalidCallbackUrl,
            ),
            (
                with(&|s| s.remark = Some("r".repeat(501).try_into().expect("valid text"))),
                ApiKeyError::InvalidRemark,
            ),
            (
                with(&|s| s.callback_events = Some(vec![])),
                ApiKeyError::InvalidCallbackEvents("name at least one event type".into()),
            ),
        ];
        for (c, e) in cases {
            fw().given_no_previous_events().when(c).then_expect_error(e);
        }
        fw().given(vec![created()])
            .when(create(spec()))
            .then_expect_error(ApiKeyError::AlreadyExists);
    }

    #[test]
    fn ten_allowlist_entries_are_fine_an_eleventh_is_not() {
        let ten: Vec<String> = (1..=10).map(|i| format!("10.0.0.{i}")).collect();
        let mut eleven = ten.clone();
        eleven.push("10.0.0.11".into());
        fw().given(vec![created()])
            .when(ApiKeyCommand::SetAllowlist(SetAllowlist {
                allowlist: ten
                    .clone()
                    .into_iter()
                    .map(|s| s.try_into().expect("valid text"))
                    .collect::<Vec<_>>(),
            }))
            .then_expect_events(vec![ApiKeyEvent::ApiKeyAllowlistChanged(
                ApiKeyAllowlistChanged {
                    key_id: "AKID1".into(),
                    allowlist: ten,
                    changed_at: now(),
                },
            )]);
        fw().given(vec![created()])
            .when(ApiKeyCommand::SetAllowlist(SetAllowlist {
                allowlist: eleven
                    .into_iter()
                    .map(|s| s.try_into().expect("valid text"))
                    .collect::<Vec<_>>(),
            }))
            .then_expect_error(ApiKeyError::AllowlistTooLong);
    }

    #[test]
    fn a_revoked_or_missing_key_changes_no_more() {
        for c in [
            ApiKeyCommand::Revoke,
            ApiKeyCommand::Rotate {
                secret_digest: "x".into(),
            },
            ApiKeyCommand::SetAllowlist(SetAllowlist { allowlist: vec![] }),
        ] {
            fw().given(vec![created(), revoked()])
                .when(c.clone())
                .then_expect_error(ApiKeyError::Revoked);
            fw().given_no_previous_events()
                .when(c)
                .then_expect_error(ApiKeyError::NotFound);
        }
    }
}
