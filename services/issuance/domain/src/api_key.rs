//! API keys: SecretId (public) + SecretKey (shown once). The aggregate holds
//! only the SecretKey's digest, scopes, an allowlist of at most 10 addresses
//! or CIDRs, a callback URL and a remark.

use chrono::{DateTime, Utc};
use contracts::issuance::*;
use contracts::{net, text};
use domain_kit::{CodedError, ErrorKind};
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
}

domain_kit::events! {
    pub enum ApiKeyEvent {
        ApiKeyCreated => API_KEY_CREATED,
        ApiKeyRotated => API_KEY_ROTATED,
        ApiKeyRevoked => API_KEY_REVOKED,
        ApiKeyAllowlistChanged => API_KEY_ALLOWLIST_CHANGED,
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
    #[error("remark must be at most 500 characters without control characters")]
    InvalidRemark,
}

impl CodedError for ApiKeyError {
    fn code(&self) -> &'static str {
        match self {
            Self::AlreadyExists => "API_KEY_EXISTS",
            Self::NotFound => "API_KEY_NOT_FOUND",
            Self::Revoked => "API_KEY_REVOKED",
            Self::InvalidScopes => "INVALID_SCOPES",
            Self::AllowlistTooLong => "ALLOWLIST_TOO_LONG",
            Self::InvalidAllowlistEntry(_) => "INVALID_ALLOWLIST_ENTRY",
            Self::InvalidCallbackUrl => "INVALID_CALLBACK_URL",
            Self::InvalidRemark => "INVALID_REMARK",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::AlreadyExists | Self::Revoked => ErrorKind::Conflict,
            _ => ErrorKind::Invalid,
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidScopes => Some("scopes"),
            Self::AllowlistTooLong | Self::InvalidAllowlistEntry(_) => Some("allowlist"),
            Self::InvalidCallbackUrl => Some("callback_url"),
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
    if let Some(url) = &spec.callback_url {
        if !net::is_http_url(url) {
            return Err(ApiKeyError::InvalidCallbackUrl);
        }
    }
    if let Some(r) = &spec.remark {
        if r.chars().count() > MAX_REMARK_LEN || r.chars().any(char::is_control) {
            return Err(ApiKeyError::InvalidRemark);
        }
    }
    Ok(())
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
    IssuanceServices
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
