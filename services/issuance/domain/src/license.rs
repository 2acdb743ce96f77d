//! A sold (or trial) license and its lifecycle:
//!
//! ```text
//! issue → active ⇄ suspended          (suspend / reinstate)
//!         active|suspended → expired   (scheduler at expires_at; renew → active)
//!         expired → reclaimed          (scheduler at expires_at + reclaim delay)
//!         expired|reclaimed → deleted  (an expired license is deleted, never uninstalled)
//!         any but revoked|deleted → revoked (destroyed)
//! ```

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use contracts::issuance::*;
use contracts::text::{self, Name};
use domain_kit::CodedError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::product::ProductState;
use super::{license_key, valid_code, IssuanceServices};

pub const MAX_FEATURES: usize = 200;
const MAX_TEXT_LEN: usize = 200;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct License {
    pub state: Option<LicenseState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseState {
    pub id: Uuid,
    pub product: String,
    pub edition: Option<String>,
    pub customer: String,
    pub contract: Option<String>,
    pub kind: LicenseKind,
    pub modules: Vec<String>,
    pub features: Vec<String>,
    pub status: LicenseStatus,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub policy: Policy,
    pub key_digest: Option<String>,
    pub renewals: u32,
}

impl LicenseState {
    pub fn reclaim_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at.map(|e| self.policy.reclaim_at(e))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LicenseCommand {
    Issue {
        license_id: Uuid,
        spec: IssueLicense,
        /// The catalog entry, looked up by the caller; None if unknown.
        product: Option<ProductState>,
    },
    Renew(RenewLicense),
    AmendFeatures {
        amend: AmendFeatures,
        product: Option<ProductState>,
    },
    Suspend(Reason),
    Reinstate,
    Revoke(Reason),
    /// Scheduler: at `expires_at`.
    Expire,
    /// Scheduler: at `expires_at` + the policy's reclaim delay.
    Reclaim,
    Delete,
    RecordKeyRecovery(RecoveryMethod),
}

domain_kit::events! {
    pub enum LicenseEvent {
        LicenseIssued => LICENSE_ISSUED,
        LicenseRenewed => LICENSE_RENEWED,
        LicenseFeaturesAmended => LICENSE_FEATURES_AMENDED,
        LicenseSuspended => LICENSE_SUSPENDED,
        LicenseReinstated => LICENSE_REINSTATED,
        LicenseRevoked => LICENSE_REVOKED,
        LicenseExpired => LICENSE_EXPIRED,
        LicenseReclaimed => LICENSE_RECLAIMED,
        LicenseDeleted => LICENSE_DELETED,
        LicenseKeyRecovered => LICENSE_KEY_RECOVERED,
    }
}

impl domain_kit::Refusal for LicenseEvent {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("license already exists")]
    AlreadyExists,
    #[error("no such license")]
    NotFound,
    #[error("no such product")]
    UnknownProduct,
    #[error("the product has no edition {0}")]
    UnknownEdition(String),
    #[error("the product has no features {0}")]
    UnknownFeatures(String),
    #[error("the product has no modules {0}")]
    UnknownModules(String),
    #[error("module {module} requires features not granted: {missing}")]
    ModuleFeaturesMissing { module: String, missing: String },
    #[error(
        "{field} must be 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    InvalidCode { field: &'static str },
    #[error("{field} must be 1-200 characters without control characters")]
    InvalidText { field: &'static str },
    #[error("features must be at most 200 distinct codes")]
    InvalidFeatures,
    #[error("seats must name granted features, each with 1-1000000 seats: {0}")]
    InvalidSeats(String),
    #[error("temporary licenses must have an expiry")]
    ExpiryRequired,
    #[error("expires_at must be in the future")]
    ExpiryInPast,
    #[error("a renewal must move the expiry later than {0}")]
    ExpiryNotExtended(DateTime<Utc>),
    #[error("a perpetual license needs no renewal")]
    Perpetual,
    #[error("the license is revoked")]
    Revoked,
    #[error("the license is deleted")]
    Deleted,
    #[error("the license was reclaimed")]
    Reclaimed,
    #[error("the license is suspended")]
    Suspended,
    #[error("the license is expired")]
    Expired,
    #[error("the license is not suspended")]
    NotSuspended,
    #[error("the license has not expired")]
    NotExpired,
    #[error("the license is not due for this transition yet")]
    NotDue,
}

impl CodedError for LicenseError {
    domain_kit::coded! {
        Self::AlreadyExists => "LICENSE_EXISTS", Conflict;
        Self::NotFound => "LICENSE_NOT_FOUND", NotFound;
        Self::UnknownProduct => "PRODUCT_NOT_FOUND", Invalid;
        Self::UnknownEdition(_) => "UNKNOWN_EDITION", Invalid;
        Self::UnknownFeatures(_) => "UNKNOWN_FEATURES", Invalid;
        Self::UnknownModules(_) => "UNKNOWN_MODULES", Invalid;
        Self::ModuleFeaturesMissing { .. } => "MODULE_FEATURES_MISSING", Invalid;
        Self::InvalidCode { field: "product" } => "INVALID_PRODUCT", Invalid;
        Self::InvalidCode { field: "edition" } => "INVALID_EDITION", Invalid;
        Self::InvalidCode { .. } => "INVALID_CODE", Invalid;
        Self::InvalidText { field: "customer" } => "INVALID_CUSTOMER", Invalid;
        Self::InvalidText { .. } => "INVALID_TEXT", Invalid;
        Self::InvalidFeatures => "INVALID_FEATURES", Invalid;
        Self::InvalidSeats(_) => "INVALID_SEATS", Invalid;
        Self::ExpiryRequired => "EXPIRY_REQUIRED", Invalid;
        Self::ExpiryInPast => "EXPIRY_IN_PAST", Invalid;
        Self::ExpiryNotExtended(_) => "EXPIRY_NOT_EXTENDED", Invalid;
        Self::Perpetual => "LICENSE_PERPETUAL", Conflict;
        Self::Revoked => "LICENSE_REVOKED", Conflict;
        Self::Deleted => "LICENSE_DELETED", Conflict;
        Self::Reclaimed => "LICENSE_RECLAIMED", Conflict;
        Self::Suspended => "LICENSE_SUSPENDED", Conflict;
        Self::Expired => "LICENSE_EXPIRED", Conflict;
        Self::NotSuspended => "LICENSE_NOT_SUSPENDED", Conflict;
        Self::NotExpired => "LICENSE_NOT_EXPIRED", Conflict;
        Self::NotDue => "LICENSE_NOT_DUE", Conflict;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::UnknownProduct => Some("product"),
            Self::UnknownEdition(_) => Some("edition"),
            Self::UnknownFeatures(_) | Self::InvalidFeatures => Some("features"),
            Self::InvalidSeats(_) => Some("seats"),
            Self::UnknownModules(_) | Self::ModuleFeaturesMissing { .. } => Some("modules"),
            Self::InvalidCode { field } | Self::InvalidText { field } => Some(field),
            Self::ExpiryRequired
            | Self::ExpiryInPast
            | Self::ExpiryNotExtended(_)
            | Self::Perpetual => Some("expires_at"),
            _ => None,
        }
    }
}

fn valid_text(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= MAX_TEXT_LEN && !s.chars().any(char::is_control)
}

/// Checks a grant of modules and features against the catalog.
fn check_grant(
    product: &ProductState,
    modules: &[Name],
    features: &[Name],
) -> Result<(), LicenseError> {
    let mut seen = BTreeSet::new();
    if features.len() > MAX_FEATURES
        || !features
            .iter()
            .all(|f| valid_code(f) && seen.insert(f.as_str()))
    {
        return Err(LicenseError::InvalidFeatures);
    }
    let unknown: Vec<&str> = features
        .iter()
        .filter(|f| !product.has_feature(f))
        .map(Name::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(LicenseError::UnknownFeatures(unknown.join(", ")));
    }
    let unknown: Vec<&str> = modules
        .iter()
        .filter(|m| product.bundle(m).is_none())
        .map(Name::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(LicenseError::UnknownModules(unknown.join(", ")));
    }
    for m in modules {
        let Some(bundle) = product.bundle(m) else {
            continue;
        };
        let missing: Vec<&str> = bundle
            .requires
            .iter()
            .filter(|f| !seen.contains(f.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(LicenseError::ModuleFeaturesMissing {
                module: m.to_string(),
                missing: missing.join(", "),
            });
        }
    }
    Ok(())
}

impl License {
    fn live(&self) -> Result<&LicenseState, LicenseError> {
        let s = self.state.as_ref().ok_or(LicenseError::NotFound)?;
        match s.status {
            LicenseStatus::Revoked => Err(LicenseError::Revoked),
            LicenseStatus::Deleted => Err(LicenseError::Deleted),
            LicenseStatus::Reclaimed => Err(LicenseError::Reclaimed),
            _ => Ok(s),
        }
    }

    fn issue(
        &self,
        license_id: Uuid,
        spec: IssueLicense,
        product: Option<ProductState>,
        services: &IssuanceServices,
    ) -> Result<LicenseEvent, LicenseError> {
        if self.state.is_some() {
            return Err(LicenseError::AlreadyExists);
        }
        let now = services.clock.now();
        if !valid_code(&spec.product) {
            return Err(LicenseError::InvalidCode { field: "product" });
        }
        if spec.edition.as_deref().is_some_and(|e| !valid_code(e)) {
            return Err(LicenseError::InvalidCode { field: "edition" });
        }
        if !valid_text(&spec.customer) {
            return Err(LicenseError::InvalidText { field: "customer" });
        }
        if spec.contract.as_deref().is_some_and(|c| !valid_text(c)) {
            return Err(LicenseError::InvalidText { field: "contract" });
        }
        let product = product.ok_or(LicenseError::UnknownProduct)?;
        if let Some(e) = &spec.edition {
            if !product.editions.iter().any(|x| x == e) {
                return Err(LicenseError::UnknownEdition(e.to_string()));
            }
        }
        check_grant(&product, &spec.modules, &spec.features)?;
        let bad_seats: Vec<&str> = spec
            .seats
            .iter()
            .filter(|(f, n)| {
                !spec.features.iter().any(|x| x == *f) || !(1..=1_000_000).contains(*n)
            })
            .map(|(f, _)| f.as_str())
            .collect();
        if !bad_seats.is_empty() {
            return Err(LicenseError::InvalidSeats(bad_seats.join(", ")));
        }
        let policy = product.policy_for(spec.edition.as_deref()).clone();
        let expires_at = match (spec.kind, spec.expires_at) {
            (LicenseKind::Trial, None) => Some(contracts::time::add_days(now, policy.trial_days)),
            (LicenseKind::Temporary, None) => return Err(LicenseError::ExpiryRequired),
            (_, Some(at)) if at <= now => return Err(LicenseError::ExpiryInPast),
            (_, at) => at,
        };
        let key = services.keys.key_for(license_id);
        let key_digest = license_key::normalize(&key)
            .map(|k| license_key::digest(&k))
            .ok();
        Ok(LicenseEvent::LicenseIssued(LicenseIssued {
            license_id,
            product: spec.product.into(),
            edition: spec.edition.map(String::from),
            customer: spec.customer.trim().to_string(),
            contract: spec.contract.map(|c| c.trim().to_string()),
            kind: spec.kind,
            modules: text::strings(spec.modules),
            features: text::strings(spec.features),
            seats: spec.seats,
            issued_at: now,
            expires_at,
            key_digest,
            policy: Some(policy),
        }))
    }

    fn transition(
        &self,
        command: LicenseCommand,
        services: &IssuanceServices,
    ) -> Result<LicenseEvent, LicenseError> {
        let now = services.clock.now();
        let s = self.live()?;
        let license_id = s.id;
        Ok(match command {
            LicenseCommand::Issue { .. } => return Err(LicenseError::AlreadyExists),
            LicenseCommand::Renew(r) => {
                let current = s.expires_at.ok_or(LicenseError::Perpetual)?;
                if !valid_text(&r.order_ref) {
                    return Err(LicenseError::InvalidText { field: "order_ref" });
                }
                if r.expires_at <= current {
                    return Err(LicenseError::ExpiryNotExtended(current));
                }
                if r.expires_at <= now {
                    return Err(LicenseError::ExpiryInPast);
                }
                LicenseEvent::LicenseRenewed(LicenseRenewed {
                    license_id,
                    previous_expires_at: Some(current),
                    expires_at: r.expires_at,
                    order_ref: r.order_ref.trim().to_string(),
                    renewed_at: now,
                })
            }
            LicenseCommand::AmendFeatures { amend, product } => {
                if s.status == LicenseStatus::Expired {
                    return Err(LicenseError::Expired);
                }
                let product = product.ok_or(LicenseError::UnknownProduct)?;
                check_grant(&product, &amend.modules, &amend.features)?;
                let before: BTreeSet<&str> = s.features.iter().map(String::as_str).collect();
                let after: BTreeSet<&str> = amend.features.iter().map(Name::as_str).collect();
                LicenseEvent::LicenseFeaturesAmended(LicenseFeaturesAmended {
                    license_id,
                    added: after.difference(&before).map(|f| f.to_string()).collect(),
                    removed: before.difference(&after).map(|f| f.to_string()).collect(),
                    modules: text::strings(amend.modules),
                    features: text::strings(amend.features),
                    amended_at: now,
                })
            }
            LicenseCommand::Suspend(r) => {
                match s.status {
                    LicenseStatus::Suspended => return Err(LicenseError::Suspended),
                    LicenseStatus::Expired => return Err(LicenseError::Expired),
                    _ => {}
                }
                if !valid_text(&r.reason) {
                    return Err(LicenseError::InvalidText { field: "reason" });
                }
                LicenseEvent::LicenseSuspended(LicenseSuspended {
                    license_id,
                    reason: r.reason.trim().to_string(),
                    suspended_at: now,
                })
            }
            LicenseCommand::Reinstate => {
                if s.status != LicenseStatus::Suspended {
                    return Err(LicenseError::NotSuspended);
                }
                LicenseEvent::LicenseReinstated(LicenseReinstated {
                    license_id,
                    reinstated_at: now,
                })
            }
            LicenseCommand::Revoke(r) => {
                if !valid_text(&r.reason) {
                    return Err(LicenseError::InvalidText { field: "reason" });
                }
                LicenseEvent::LicenseRevoked(LicenseRevoked {
                    license_id,
                    reason: r.reason.trim().to_string(),
                    revoked_at: now,
                })
            }
            LicenseCommand::Expire => {
                let expires_at = s.expires_at.ok_or(LicenseError::Perpetual)?;
                if s.status == LicenseStatus::Expired {
                    return Err(LicenseError::Expired);
                }
                if now < expires_at {
                    return Err(LicenseError::NotDue);
                }
                LicenseEvent::LicenseExpired(LicenseExpired {
                    license_id,
                    expires_at,
                    expired_at: now,
                    existing_grants_continue: true,
                    new_grants_allowed: false,
                    reclaim_at: s.reclaim_at().unwrap_or(expires_at),
                })
            }
            LicenseCommand::Reclaim => {
                if s.status != LicenseStatus::Expired {
                    return Err(LicenseError::NotExpired);
                }
                if s.reclaim_at().is_some_and(|at| now < at) {
                    return Err(LicenseError::NotDue);
                }
                LicenseEvent::LicenseReclaimed(LicenseReclaimed {
                    license_id,
                    reclaimed_at: now,
                })
            }
            LicenseCommand::Delete => {
                if s.status != LicenseStatus::Expired {
                    return Err(LicenseError::NotExpired);
                }
                LicenseEvent::LicenseDeleted(LicenseDeleted {
                    license_id,
                    deleted_at: now,
                })
            }
            LicenseCommand::RecordKeyRecovery(_) => return Err(LicenseError::NotFound),
        })
    }
}

domain_kit::aggregate!(
    License,
    LICENSE_AGGREGATE,
    LicenseCommand,
    LicenseEvent,
    LicenseError,
    IssuanceServices
);

impl License {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: LicenseCommand,
        services: &IssuanceServices,
    ) -> Result<Vec<LicenseEvent>, LicenseError> {
        let event = match command {
            // The owner may see the key of any license still on record.
            LicenseCommand::RecordKeyRecovery(method) => {
                let s = self.state.as_ref().ok_or(LicenseError::NotFound)?;
                if s.status == LicenseStatus::Deleted {
                    return Err(LicenseError::Deleted);
                }
                LicenseEvent::LicenseKeyRecovered(LicenseKeyRecovered {
                    license_id: s.id,
                    method,
                    recovered_at: services.clock.now(),
                })
            }
            // A reclaimed license can still be deleted (the record goes).
            LicenseCommand::Delete
                if self
                    .state
                    .as_ref()
                    .is_some_and(|s| s.status == LicenseStatus::Reclaimed) =>
            {
                let s = self.state.as_ref().ok_or(LicenseError::NotFound)?;
                LicenseEvent::LicenseDeleted(LicenseDeleted {
                    license_id: s.id,
                    deleted_at: services.clock.now(),
                })
            }
            LicenseCommand::Issue {
                license_id,
                spec,
                product,
            } => self.issue(license_id, spec, product, services)?,
            other => self.transition(other, services)?,
        };
        Ok(vec![event])
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: LicenseEvent) {
        if let LicenseEvent::LicenseIssued(e) = event {
            self.state = Some(LicenseState {
                id: e.license_id,
                product: e.product,
                edition: e.edition,
                customer: e.customer,
                contract: e.contract,
                kind: e.kind,
                modules: e.modules,
                features: e.features,
                status: LicenseStatus::Active,
                issued_at: e.issued_at,
                expires_at: e.expires_at,
                policy: e.policy.unwrap_or_default(),
                key_digest: e.key_digest,
                renewals: 0,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            LicenseEvent::LicenseIssued(_) | LicenseEvent::LicenseKeyRecovered(_) => {}
            LicenseEvent::LicenseRenewed(e) => {
                s.expires_at = Some(e.expires_at);
                s.renewals += 1;
                if s.status == LicenseStatus::Expired {
                    s.status = LicenseStatus::Active;
                }
            }
            LicenseEvent::LicenseFeaturesAmended(e) => {
                s.modules = e.modules;
                s.features = e.features;
            }
            LicenseEvent::LicenseSuspended(_) => s.status = LicenseStatus::Suspended,
            LicenseEvent::LicenseReinstated(_) => s.status = LicenseStatus::Active,
            LicenseEvent::LicenseRevoked(_) => s.status = LicenseStatus::Revoked,
            LicenseEvent::LicenseExpired(_) => s.status = LicenseStatus::Expired,
            LicenseEvent::LicenseReclaimed(_) => s.status = LicenseStatus::Reclaimed,
            LicenseEvent::LicenseDeleted(_) => s.status = LicenseStatus::Deleted,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::product::{Product, ProductCommand, ProductEvent};
    use crate::test_support::{now, services, services_at, FixedKeys};
    use crate::KeySource;

    fn catalog() -> ProductState {
        let seed: CreateProduct = serde_json::from_str(include_str!(
            "../../../../infra/seed/integration-platform.json"
        ))
        .expect("seed");
        let mut p = Product::default();
        p.evolve(ProductEvent::ProductCreated(ProductCreated {
            code: String::from(seed.code),
            name: String::from(seed.name),
            editions: contracts::text::strings(seed.editions),
            features: seed.features,
            bundles: seed.bundles,
            policy: seed.policy,
            edition_policies: seed.edition_policies,
            created_at: now(),
        }));
        let _ = ProductCommand::SetPolicy; // the catalog is built by events only
        p.state.expect("created")
    }

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn spec(kind: LicenseKind, expires_at: Option<DateTime<Utc>>) -> IssueLicense {
        IssueLicense {
            product: "integration-platform".try_into().expect("valid text"),
            edition: Some("enterprise".try_into().expect("valid text")),
            customer: "ACME Corp".try_into().expect("valid text"),
            contract: Some("C-2026-001".try_into().expect("valid text")),
            kind,
            modules: vec!["data-integration".try_into().expect("valid text")],
            features: vec![
                "datasource-mgmt".try_into().expect("valid text"),
                "data-access".try_into().expect("valid text"),
                "data-preprocess".try_into().expect("valid text"),
                "smart-scheduling".try_into().expect("valid text"),
            ],
            seats: Default::default(),
            expires_at,
        }
    }

    fn issue(spec: IssueLicense) -> LicenseCommand {
        LicenseCommand::Issue {
            license_id: id(),
            spec,
            product: Some(catalog()),
        }
    }

    fn issued_with(kind: LicenseKind, expires_at: Option<DateTime<Utc>>) -> LicenseEvent {
        let s = spec(kind, None);
        let key = license_key::normalize(&FixedKeys.key_for(id())).expect("key");
        LicenseEvent::LicenseIssued(LicenseIssued {
            license_id: id(),
            product: String::from(s.product),
            edition: s.edition.map(String::from),
            customer: String::from(s.customer),
            contract: s.contract.map(String::from),
            kind,
            modules: contracts::text::strings(s.modules),
            features: contracts::text::strings(s.features),
            seats: s.seats,
            issued_at: now(),
            expires_at,
            key_digest: Some(license_key::digest(&key)),
            policy: Some(catalog().policy),
        })
    }

    fn in_days(d: i64) -> DateTime<Utc> {
        now() + chrono::Duration::days(d)
    }

    fn formal() -> LicenseEvent {
        issued_with(LicenseKind::Formal, Some(in_days(30)))
    }

    fn fw() -> TestFramework<License> {
        TestFramework::with(services())
    }

    fn fw_at(at: DateTime<Utc>) -> TestFramework<License> {
        TestFramework::with(services_at(at))
    }

    fn reason() -> Reason {
        Reason {
            reason: "payment overdue".try_into().expect("valid text"),
        }
    }

    fn suspended() -> LicenseEvent {
        LicenseEvent::LicenseSuspended(LicenseSuspended {
            license_id: id(),
            reason: "payment overdue".into(),
            suspended_at: now(),
        })
    }

    fn expired() -> LicenseEvent {
        LicenseEvent::LicenseExpired(LicenseExpired {
            license_id: id(),
            expires_at: in_days(30),
            expired_at: in_days(30),
            existing_grants_continue: true,
            new_grants_allowed: false,
            reclaim_at: in_days(120),
        })
    }

    fn revoked() -> LicenseEvent {
        LicenseEvent::LicenseRevoked(LicenseRevoked {
            license_id: id(),
            reason: "payment overdue".into(),
            revoked_at: now(),
        })
    }

    // ---- issue

    #[test]
    fn issuing_each_kind() {
        fw().given_no_previous_events()
            .when(issue(spec(LicenseKind::Formal, None)))
            .then_expect_events(vec![issued_with(LicenseKind::Formal, None)]);
        fw().given_no_previous_events()
            .when(issue(spec(LicenseKind::Temporary, Some(in_days(30)))))
            .then_expect_events(vec![issued_with(LicenseKind::Temporary, Some(in_days(30)))]);
        // A trial without an expiry runs for the policy's trial length.
        fw().given_no_previous_events()
            .when(issue(spec(LicenseKind::Trial, None)))
            .then_expect_events(vec![issued_with(LicenseKind::Trial, Some(in_days(180)))]);
    }

    #[test]
    fn issue_rejections() {
        let with = |f: &dyn Fn(&mut IssueLicense)| {
            let mut s = spec(LicenseKind::Formal, None);
            f(&mut s);
            issue(s)
        };
        let cases: Vec<(LicenseCommand, LicenseError)> = vec![
            (
                with(&|s| s.product = "Bad Code".try_into().expect("valid text")),
                LicenseError::InvalidCode { field: "product" },
            ),
            (
                with(&|s| s.edition = Some(String::new().try_into().expect("valid text"))),
                LicenseError::InvalidCode { field: "edition" },
            ),
            (
                with(&|s| s.edition = Some("moon".try_into().expect("valid text"))),
                LicenseError::UnknownEdition("moon".into()),
            ),
            (
                with(&|s| s.customer = " ".try_into().expect("valid text")),
                LicenseError::InvalidText { field: "customer" },
            ),
            (
                with(&|s| s.contract = Some("   ".try_into().expect("valid text"))),
                LicenseError::InvalidText { field: "contract" },
            ),
            (
                with(&|s| {
                    s.features
                        .push("data-access".try_into().expect("valid text"))
                }),
                LicenseError::InvalidFeatures,
            ),
            (
                with(&|s| s.features.push("teleport".try_into().expect("valid text"))),
                LicenseError::UnknownFeatures("teleport".into()),
            ),
            (
                with(&|s| {
                    s.modules
                        .push("time-travel".try_into().expect("valid text"))
                }),
                LicenseError::UnknownModules("time-travel".into()),
            ),
            (
                with(&|s| {
                    s.features
                        .retain(|f| f != "smart-scheduling" && f != "data-access")
                }),
                LicenseError::ModuleFeaturesMissing {
                    module: "data-integration".into(),
                    missing: "data-access, smart-scheduling".into(),
                },
            ),
            (
                with(&|s| s.kind = LicenseKind::Temporary),
                LicenseError::ExpiryRequired,
            ),
            (
                with(&|s| s.expires_at = Some(now())),
                LicenseError::ExpiryInPast,
            ),
            (
                LicenseCommand::Issue {
                    license_id: id(),
                    spec: spec(LicenseKind::Formal, None),
                    product: None,
                },
                LicenseError::UnknownProduct,
            ),
        ];
        for (command, error) in cases {
            fw().given_no_previous_events()
                .when(command)
                .then_expect_error(error);
        }
        fw().given(vec![formal()])
            .when(issue(spec(LicenseKind::Formal, None)))
            .then_expect_error(LicenseError::AlreadyExists);
    }

    #[test]
    fn module_rejection_names_the_missing_features_in_its_code_and_message() {
        let e = LicenseError::ModuleFeaturesMissing {
            module: "data-integration".into(),
            missing: "data-access".into(),
        };
        assert_eq!(e.code(), "MODULE_FEATURES_MISSING");
        assert!(e.to_string().contains("data-access"));
        assert_eq!(e.field(), Some("modules"));
    }

    // ---- renew

    #[test]
    fn renewing_extends_the_expiry_and_revives_an_expired_license() {
        let renew = LicenseCommand::Renew(RenewLicense {
            expires_at: in_days(400),
            order_ref: "PO-77".try_into().expect("valid text"),
        });
        let renewed = |at| {
            vec![LicenseEvent::LicenseRenewed(LicenseRenewed {
                license_id: id(),
                previous_expires_at: Some(in_days(30)),
                expires_at: in_days(400),
                order_ref: "PO-77".into(),
                renewed_at: at,
            })]
        };
        fw().given(vec![formal()])
            .when(renew.clone())
            .then_expect_events(renewed(now()));
        fw_at(in_days(31))
            .given(vec![formal(), expired()])
            .when(renew)
            .then_expect_events(renewed(in_days(31)));
        let mut l = License::default();
        l.evolve(formal());
        l.evolve(expired());
        l.evolve(renewed(now()).remove(0));
        assert_eq!(l.state.map(|s| s.status), Some(LicenseStatus::Active));
    }

    #[test]
    fn renew_rejections() {
        let renew = |d, r: &str| {
            LicenseCommand::Renew(RenewLicense {
                expires_at: in_days(d),
                order_ref: r.try_into().expect("valid text"),
            })
        };
        fw().given_no_previous_events()
            .when(renew(400, "PO"))
            .then_expect_error(LicenseError::NotFound);
        fw().given(vec![issued_with(LicenseKind::Formal, None)])
            .when(renew(400, "PO"))
            .then_expect_error(LicenseError::Perpetual);
        fw().given(vec![formal()])
            .when(renew(10, "PO"))
            .then_expect_error(LicenseError::ExpiryNotExtended(in_days(30)));
        fw().given(vec![formal()])
            .when(renew(400, ""))
            .then_expect_error(LicenseError::InvalidText { field: "order_ref" });
        fw_at(in_days(500))
            .given(vec![formal(), expired()])
            .when(renew(400, "PO"))
            .then_expect_error(LicenseError::ExpiryInPast);
        fw().given(vec![formal(), revoked()])
            .when(renew(400, "PO"))
            .then_expect_error(LicenseError::Revoked);
    }

    // ---- amend features

    #[test]
    fn amending_features_records_what_changed() {
        let mut features = spec(LicenseKind::Formal, None).features;
        features.push("cdc-realtime".try_into().expect("valid text"));
        features.retain(|f| f != "data-preprocess");
        let amend = AmendFeatures {
            modules: vec![],
            features: features.clone(),
        };
        fw().given(vec![formal()])
            .when(LicenseCommand::AmendFeatures {
                amend,
                product: Some(catalog()),
            })
            .then_expect_events(vec![LicenseEvent::LicenseFeaturesAmended(
                LicenseFeaturesAmended {
                    license_id: id(),
                    modules: vec![],
                    features: contracts::text::strings(features),
                    added: vec!["cdc-realtime".into()],
                    removed: vec!["data-preprocess".into()],
                    amended_at: now(),
                },
            )]);
    }

    #[test]
    fn amend_rejections() {
        let amend = |modules: Vec<&str>, features: Vec<&str>| LicenseCommand::AmendFeatures {
            amend: AmendFeatures {
                modules: modules
                    .into_iter()
                    .map(|m| m.try_into().expect("valid text"))
                    .collect(),
                features: features
                    .into_iter()
                    .map(|f| f.try_into().expect("valid text"))
                    .collect(),
            },
            product: Some(catalog()),
        };
        fw().given(vec![formal()])
            .when(amend(vec!["message-integration"], vec!["topic-mgmt"]))
            .then_expect_error(LicenseError::ModuleFeaturesMissing {
                module: "message-integration".into(),
                missing: "pub-sub, message-trace, distributed-messaging".into(),
            });
        fw().given(vec![formal(), expired()])
            .when(amend(vec![], vec!["topic-mgmt"]))
            .then_expect_error(LicenseError::Expired);
        fw().given(vec![formal()])
            .when(LicenseCommand::AmendFeatures {
                amend: AmendFeatures {
                    modules: vec![],
                    features: vec![],
                },
                product: None,
            })
            .then_expect_error(LicenseError::UnknownProduct);
    }

    // ---- suspend / reinstate / revoke

    #[test]
    fn suspending_and_reinstating() {
        fw().given(vec![formal()])
            .when(LicenseCommand::Suspend(reason()))
            .then_expect_events(vec![suspended()]);
        fw().given(vec![formal(), suspended()])
            .when(LicenseCommand::Reinstate)
            .then_expect_events(vec![LicenseEvent::LicenseReinstated(LicenseReinstated {
                license_id: id(),
                reinstated_at: now(),
            })]);
    }

    #[test]
    fn suspend_and_reinstate_rejections() {
        fw().given(vec![formal(), suspended()])
            .when(LicenseCommand::Suspend(reason()))
            .then_expect_error(LicenseError::Suspended);
        fw().given(vec![formal(), expired()])
            .when(LicenseCommand::Suspend(reason()))
            .then_expect_error(LicenseError::Expired);
        fw().given(vec![formal()])
            .when(LicenseCommand::Suspend(Reason {
                reason: "".try_into().expect("valid text"),
            }))
            .then_expect_error(LicenseError::InvalidText { field: "reason" });
        fw().given(vec![formal()])
            .when(LicenseCommand::Reinstate)
            .then_expect_error(LicenseError::NotSuspended);
        fw().given(vec![formal(), revoked()])
            .when(LicenseCommand::Reinstate)
            .then_expect_error(LicenseError::Revoked);
    }

    #[test]
    fn revoking_destroys_for_good() {
        fw().given(vec![formal(), suspended()])
            .when(LicenseCommand::Revoke(reason()))
            .then_expect_events(vec![revoked()]);
        fw().given(vec![formal(), revoked()])
            .when(LicenseCommand::Revoke(reason()))
            .then_expect_error(LicenseError::Revoked);
        fw().given(vec![formal()])
            .when(LicenseCommand::Revoke(Reason {
                reason: " ".try_into().expect("valid text"),
            }))
            .then_expect_error(LicenseError::InvalidText { field: "reason" });
    }

    // ---- scheduler transitions

    #[test]
    fn expiry_fires_at_expires_at_and_publishes_its_semantics() {
        fw_at(in_days(30))
            .given(vec![formal()])
            .when(LicenseCommand::Expire)
            .then_expect_events(vec![expired()]);
        fw().given(vec![formal()])
            .when(LicenseCommand::Expire)
            .then_expect_error(LicenseError::NotDue);
        fw_at(in_days(31))
            .given(vec![formal(), expired()])
            .when(LicenseCommand::Expire)
            .then_expect_error(LicenseError::Expired);
        fw_at(in_days(31))
            .given(vec![issued_with(LicenseKind::Formal, None)])
            .when(LicenseCommand::Expire)
            .then_expect_error(LicenseError::Perpetual);
    }

    #[test]
    fn reclaim_fires_after_the_reclaim_delay() {
        let reclaimed = LicenseEvent::LicenseReclaimed(LicenseReclaimed {
            license_id: id(),
            reclaimed_at: in_days(120),
        });
        fw_at(in_days(120))
            .given(vec![formal(), expired()])
            .when(LicenseCommand::Reclaim)
            .then_expect_events(vec![reclaimed.clone()]);
        fw_at(in_days(119))
            .given(vec![formal(), expired()])
            .when(LicenseCommand::Reclaim)
            .then_expect_error(LicenseError::NotDue);
        fw_at(in_days(120))
            .given(vec![formal()])
            .when(LicenseCommand::Reclaim)
            .then_expect_error(LicenseError::NotExpired);
        fw_at(in_days(121))
            .given(vec![formal(), expired(), reclaimed])
            .when(LicenseCommand::Reclaim)
            .then_expect_error(LicenseError::Reclaimed);
    }

    #[test]
    fn only_an_expired_or_reclaimed_license_is_deleted() {
        let deleted = LicenseEvent::LicenseDeleted(LicenseDeleted {
            license_id: id(),
            deleted_at: now(),
        });
        fw().given(vec![formal(), expired()])
            .when(LicenseCommand::Delete)
            .then_expect_events(vec![deleted.clone()]);
        fw().given(vec![
            formal(),
            expired(),
            LicenseEvent::LicenseReclaimed(LicenseReclaimed {
                license_id: id(),
                reclaimed_at: now(),
            }),
        ])
        .when(LicenseCommand::Delete)
        .then_expect_events(vec![deleted.clone()]);
        fw().given(vec![formal()])
            .when(LicenseCommand::Delete)
            .then_expect_error(LicenseError::NotExpired);
        fw().given(vec![formal(), expired(), deleted])
            .when(LicenseCommand::Delete)
            .then_expect_error(LicenseError::Deleted);
    }

    #[test]
    fn a_key_recovery_is_recorded() {
        fw().given(vec![formal()])
            .when(LicenseCommand::RecordKeyRecovery(RecoveryMethod::Contract))
            .then_expect_events(vec![LicenseEvent::LicenseKeyRecovered(
                LicenseKeyRecovered {
                    license_id: id(),
                    method: RecoveryMethod::Contract,
                    recovered_at: now(),
                },
            )]);
        fw().given_no_previous_events()
            .when(LicenseCommand::RecordKeyRecovery(RecoveryMethod::Contract))
            .then_expect_error(LicenseError::NotFound);
    }
}
