//! Upstream license servers (resource pools) this server syncs from, and
//! the licenses they grant it. What an upstream sends enters as events of
//! this server, so the audit trail shows what came from where.

use std::collections::{BTreeMap, BTreeSet};

use contracts::grants::*;
use contracts::net;
use domain_kit::{CodedError, Refusal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{valid_text, GrantServices};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    pub registered: Option<UpstreamRegistered>,
    pub last_check: Option<UpstreamChecked>,
    pub syncs: BTreeMap<SyncResource, UpstreamSynced>,
    pub products: BTreeMap<String, CatalogProduct>,
    /// The upstream's signing keys as of its last successful check: what
    /// its grant documents must verify under.
    #[serde(default)]
    pub pinned_keys: Vec<PinnedKey>,
    /// Products the current command imported.
    #[serde(skip)]
    pub imported: Vec<String>,
}

/// What a call to the upstream found (filled in by the application, which
/// does the IO).
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub status: UpstreamStatus,
    pub http_status: Option<u16>,
    pub message: String,
    pub latency_ms: u64,
    /// A check's: the upstream's signing keys (its JWKS), to pin.
    pub keys: Vec<PinnedKey>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamCommand {
    Register {
        upstream_id: Uuid,
        spec: RegisterUpstream,
        secret_digest: String,
    },
    RecordCheck(CallResult),
    RecordSync {
        resource: SyncResource,
        result: CallResult,
        items: u32,
        /// Catalog syncs: the products the upstream serves.
        products: Vec<CatalogProduct>,
    },
}

domain_kit::events! {
    pub enum UpstreamEvent {
        UpstreamRegistered => UPSTREAM_REGISTERED,
        UpstreamChecked => UPSTREAM_CHECKED,
        UpstreamProductImported => UPSTREAM_PRODUCT_IMPORTED,
        UpstreamSynced => UPSTREAM_SYNCED,
    }
}

impl Refusal for UpstreamEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream exists already")]
    AlreadyExists,
    #[error("no such upstream")]
    NotFound,
    #[error("name must be 1-200 characters without control characters")]
    InvalidName,
    #[error("endpoint must be an http(s) URL of at most 2048 characters")]
    InvalidEndpoint,
    #[error("endpoint must be an https:// URL (plain http only with allow_insecure_http)")]
    InsecureEndpoint,
    #[error("secret must be the token the upstream issued (<SecretId>.<SecretKey>)")]
    InvalidSecret,
    #[error("remark must be at most 500 characters without control characters")]
    InvalidRemark,
    #[error("license {0} comes from another upstream")]
    OtherUpstream(Uuid),
}

impl CodedError for UpstreamError {
    domain_kit::coded! {
        Self::AlreadyExists => "UPSTREAM_EXISTS", Conflict;
        Self::NotFound => "UPSTREAM_NOT_FOUND", NotFound;
        Self::InvalidName => "INVALID_NAME", Invalid;
        Self::InvalidEndpoint => "INVALID_ENDPOINT", Invalid;
        Self::InsecureEndpoint => "INSECURE_ENDPOINT", Invalid;
        Self::InvalidSecret => "INVALID_SECRET", Invalid;
        Self::InvalidRemark => "INVALID_REMARK", Invalid;
        Self::OtherUpstream(_) => "LICENSE_FROM_OTHER_UPSTREAM", Conflict;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidName => Some("name"),
            Self::InvalidEndpoint | Self::InsecureEndpoint => Some("endpoint"),
            Self::InvalidSecret => Some("secret"),
            Self::InvalidRemark => Some("remark"),
            _ => None,
        }
    }
}

fn check_spec(spec: &RegisterUpstream) -> Result<(), UpstreamError> {
    if !valid_text(&spec.name, 200) {
        return Err(UpstreamError::InvalidName);
    }
    if !net::is_http_url(&spec.endpoint) {
        return Err(UpstreamError::InvalidEndpoint);
    }
    if !spec.endpoint.starts_with("https://") && !spec.allow_insecure_http {
        return Err(UpstreamError::InsecureEndpoint);
    }
    if domain_kit::split_token(&spec.secret).is_none() {
        return Err(UpstreamError::InvalidSecret);
    }
    if spec
        .remark
        .as_deref()
        .is_some_and(|r| r.chars().count() > 500 || r.chars().any(char::is_control))
    {
        return Err(UpstreamError::InvalidRemark);
    }
    Ok(())
}

domain_kit::aggregate!(
    Upstream,
    UPSTREAM_AGGREGATE,
    UpstreamCommand,
    UpstreamEvent,
    UpstreamError,
    GrantServices
);

impl Upstream {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: UpstreamCommand,
        services: &GrantServices,
    ) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        self.imported.clear();
        let now = services.clock.now();
        let mut events = vec![];
        match command {
            UpstreamCommand::Register {
                upstream_id,
                spec,
                secret_digest,
            } => {
                if self.registered.is_some() {
                    return Err(UpstreamError::AlreadyExists);
                }
                check_spec(&spec)?;
                events.push(UpstreamEvent::UpstreamRegistered(UpstreamRegistered {
                    upstream_id,
                    name: spec.name.trim().to_string(),
                    member_id: spec.member_id,
                    endpoint: spec.endpoint.trim_end_matches('/').to_string(),
                    secret_digest,
                    price_protection: spec.price_protection,
                    remark: spec.remark.map(String::from),
                    registered_at: now,
                    allow_insecure_http: spec.allow_insecure_http,
                }));
            }
            UpstreamCommand::RecordCheck(r) => {
                let reg = self.registered.as_ref().ok_or(UpstreamError::NotFound)?;
                events.push(UpstreamEvent::UpstreamChecked(UpstreamChecked {
                    upstream_id: reg.upstream_id,
                    status: r.status,
                    http_status: r.http_status,
                    message: r.message,
                    latency_ms: r.latency_ms,
                    checked_at: now,
                    pinned_keys: if r.status == UpstreamStatus::Ok {
                        r.keys
                    } else {
                        vec![]
                    },
                }));
            }
            UpstreamCommand::RecordSync {
                resource,
                result,
                items,
                products,
            } => {
                let reg = self.registered.as_ref().ok_or(UpstreamError::NotFound)?;
                let upstream_id = reg.upstream_id;
                let mut changed = 0;
                for p in products {
                    if self.products.get(&p.code) != Some(&p) {
                        changed += 1;
                        events.push(UpstreamEvent::UpstreamProductImported(
                            UpstreamProductImported {
                                upstream_id,
                                product: p,
                                imported_at: now,
                            },
                        ));
                    }
                }
                events.push(UpstreamEvent::UpstreamSynced(UpstreamSynced {
                    upstream_id,
                    resource,
                    status: result.status,
                    items: items + changed,
                    message: result.message,
                    synced_at: now,
                }));
            }
        }
        Ok(events)
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: UpstreamEvent) {
        match event {
            UpstreamEvent::UpstreamRegistered(e) => self.registered = Some(e),
            UpstreamEvent::UpstreamChecked(e) => {
                if e.status == UpstreamStatus::Ok && !e.pinned_keys.is_empty() {
                    self.pinned_keys = e.pinned_keys.clone();
                }
                self.last_check = Some(e);
            }
            UpstreamEvent::UpstreamProductImported(e) => {
                self.imported.push(e.product.code.clone());
                self.products.insert(e.product.code.clone(), e.product);
            }
            UpstreamEvent::UpstreamSynced(e) => {
                self.syncs.insert(e.resource, e);
            }
        }
    }
}

/// A license an upstream grants this server: its latest grant and the
/// activations the upstream revoked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportedLicense {
    pub upstream_id: Option<Uuid>,
    pub grant: Option<Grant>,
    pub revoked: BTreeSet<Uuid>,
    /// What the current command changed, for the inline index and the
    /// change feed.
    #[serde(skip)]
    pub grant_changed: Option<ChangeKind>,
    #[serde(skip)]
    pub new_revocations: Vec<Revocation>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImportedLicenseCommand {
    Import {
        upstream_id: Uuid,
        grant: Option<Grant>,
        revocations: Vec<Revocation>,
    },
}

domain_kit::events! {
    pub enum ImportedLicenseEvent {
        UpstreamLicenseImported => UPSTREAM_LICENSE_IMPORTED,
        UpstreamRevocationsImported => UPSTREAM_REVOCATIONS_IMPORTED,
    }
}

impl Refusal for ImportedLicenseEvent {}

domain_kit::aggregate!(
    ImportedLicense,
    UPSTREAM_LICENSE_AGGREGATE,
    ImportedLicenseCommand,
    ImportedLicenseEvent,
    UpstreamError,
    GrantServices
);

impl ImportedLicense {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        ImportedLicenseCommand::Import {
            upstream_id,
            grant,
            revocations,
        }: ImportedLicenseCommand,
        services: &GrantServices,
    ) -> Result<Vec<ImportedLicenseEvent>, UpstreamError> {
        self.grant_changed = None;
        self.new_revocations.clear();
        let license_id = grant
            .as_ref()
            .map(|g| g.license_id)
            .or_else(|| revocations.first().map(|r| r.license_id))
            .unwrap_or_default();
        if self.upstream_id.is_some_and(|u| u != upstream_id) {
            return Err(UpstreamError::OtherUpstream(license_id));
        }
        let now = services.clock.now();
        let mut events = vec![];
        if let Some(g) = grant.filter(|g| self.grant.as_ref() != Some(g)) {
            events.push(ImportedLicenseEvent::UpstreamLicenseImported(
                UpstreamLicenseImported {
                    upstream_id,
                    grant: g,
                    imported_at: now,
                },
            ));
        }
        let fresh: Vec<Revocation> = revocations
            .into_iter()
            .filter(|r| r.license_id == license_id && !self.revoked.contains(&r.activation_id))
            .collect();
        if !fresh.is_empty() {
            events.push(ImportedLicenseEvent::UpstreamRevocationsImported(
                UpstreamRevocationsImported {
                    upstream_id,
                    license_id,
                    revocations: fresh,
                    imported_at: now,
                },
            ));
        }
        Ok(events)
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: ImportedLicenseEvent) {
        match event {
            ImportedLicenseEvent::UpstreamLicenseImported(e) => {
                self.upstream_id = Some(e.upstream_id);
                self.grant_changed = Some(e.grant.change_from(self.grant.as_ref()));
                self.grant = Some(e.grant);
            }
            ImportedLicenseEvent::UpstreamRevocationsImported(e) => {
                self.upstream_id = Some(e.upstream_id);
                for r in e.revocations {
                    self.revoked.insert(r.activation_id);
                    self.new_revocations.push(r);
                }
            }
        }
    }
}
