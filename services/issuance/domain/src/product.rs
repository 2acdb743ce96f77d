//! The product catalog: what can be sold — editions, features, modules
//! (bundles of required features) and the policy of each edition.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use contracts::issuance::{
    BundleDef, CreateProduct, FeatureDef, Policy, PolicySet, ProductCreated, SetPolicy, POLICY_SET,
    PRODUCT_AGGREGATE, PRODUCT_CREATED,
};
use domain_kit::CodedError;
use serde::{Deserialize, Serialize};

use super::{valid_code, IssuanceServices};

const MAX_ITEMS: usize = 200;
const MAX_NAME_LEN: usize = 200;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub state: Option<ProductState>,
}

/// The catalog facts a license is checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Product)]
pub struct ProductState {
    pub code: String,
    pub name: String,
    pub editions: Vec<String>,
    pub features: Vec<FeatureDef>,
    /// Modules: each usable only with every feature it requires.
    pub bundles: Vec<BundleDef>,
    /// The policy of editions without one of their own.
    #[schema(value_type = contracts::issuance::PolicyView)]
    pub policy: Policy,
    /// Per-edition policies.
    #[schema(value_type = BTreeMap<String, contracts::issuance::PolicyView>)]
    pub edition_policies: BTreeMap<String, Policy>,
    pub created_at: DateTime<Utc>,
}

impl ProductState {
    /// The policy that governs licenses of `edition`.
    pub fn policy_for(&self, edition: Option<&str>) -> &Policy {
        edition
            .and_then(|e| self.edition_policies.get(e))
            .unwrap_or(&self.policy)
    }

    pub fn has_feature(&self, code: &str) -> bool {
        self.features.iter().any(|f| f.code == code)
    }

    pub fn bundle(&self, code: &str) -> Option<&BundleDef> {
        self.bundles.iter().find(|b| b.code == code)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProductCommand {
    Create(CreateProduct),
    SetPolicy(SetPolicy),
}

domain_kit::events! {
    pub enum ProductEvent {
        ProductCreated => PRODUCT_CREATED,
        PolicySet => POLICY_SET,
    }
}

impl domain_kit::Refusal for ProductEvent {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product already exists")]
    AlreadyExists,
    #[error("no such product")]
    NotFound,
    #[error("{0} must be 1-64 characters of a-z, 0-9 and '-'")]
    InvalidCode(&'static str),
    #[error("{0} must be 1-200 characters")]
    InvalidName(&'static str),
    #[error("{0} has duplicates or more than 200 entries")]
    InvalidList(&'static str),
    #[error("module {module} requires unknown features: {missing}")]
    BundleUnknownFeature { module: String, missing: String },
    #[error("no edition {0}")]
    UnknownEdition(String),
    #[error("policy is invalid: {0}")]
    InvalidPolicy(&'static str),
}

impl CodedError for ProductError {
    domain_kit::coded! {
        Self::AlreadyExists => "PRODUCT_EXISTS", Conflict;
        Self::NotFound => "PRODUCT_NOT_FOUND", NotFound;
        Self::InvalidCode(_) => "INVALID_CODE", Invalid;
        Self::InvalidName(_) => "INVALID_NAME", Invalid;
        Self::InvalidList(_) => "INVALID_LIST", Invalid;
        Self::BundleUnknownFeature { .. } => "BUNDLE_UNKNOWN_FEATURE", Invalid;
        Self::UnknownEdition(_) => "UNKNOWN_EDITION", Invalid;
        Self::InvalidPolicy(_) => "INVALID_POLICY", Invalid;
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::AlreadyExists | Self::NotFound => Some("code"),
            Self::InvalidCode(f) | Self::InvalidName(f) | Self::InvalidList(f) => Some(f),
            Self::BundleUnknownFeature { .. } => Some("bundles"),
            Self::UnknownEdition(_) => Some("edition"),
            Self::InvalidPolicy(f) => Some(f),
        }
    }
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> bool {
    let mut seen = BTreeSet::new();
    let mut n = 0;
    items.into_iter().all(|i| {
        n += 1;
        n <= MAX_ITEMS && seen.insert(i)
    })
}

fn valid_name(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= MAX_NAME_LEN && !s.chars().any(char::is_control)
}

pub fn validate_policy(p: &Policy) -> Result<(), ProductError> {
    if p.trial_days == 0 || p.trial_days > 3_650 {
        return Err(ProductError::InvalidPolicy("policy.trial_days"));
    }
    if p.max_activations == 0 || p.max_activations > 1_000_000 {
        return Err(ProductError::InvalidPolicy("policy.max_activations"));
    }
    if p.domain_change_fee_minor < 0 {
        return Err(ProductError::InvalidPolicy(
            "policy.domain_change_fee_minor",
        ));
    }
    if p.fee_currency.len() != 3 || !p.fee_currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ProductError::InvalidPolicy("policy.fee_currency"));
    }
    if p.reclaim_after_days > 3_650 {
        return Err(ProductError::InvalidPolicy("policy.reclaim_after_days"));
    }
    if p.offline_grace_hours > 87_600 {
        return Err(ProductError::InvalidPolicy("policy.offline_grace_hours"));
    }
    if p.fingerprint_min_matches == 0 {
        return Err(ProductError::InvalidPolicy(
            "policy.fingerprint_min_matches",
        ));
    }
    if p.floating_seats == 0 || p.floating_seats > 1_000_000 {
        return Err(ProductError::InvalidPolicy("policy.floating_seats"));
    }
    if p.lease_ttl_secs == 0 || p.lease_ttl_secs > 31 * 86_400 {
        return Err(ProductError::InvalidPolicy("policy.lease_ttl_secs"));
    }
    if p.lease_grace_secs > 31 * 86_400 {
        return Err(ProductError::InvalidPolicy("policy.lease_grace_secs"));
    }
    Ok(())
}

fn validate(c: &CreateProduct) -> Result<(), ProductError> {
    if !valid_code(&c.code) {
        return Err(ProductError::InvalidCode("code"));
    }
    if !valid_name(&c.name) {
        return Err(ProductError::InvalidName("name"));
    }
    if !c.editions.iter().all(|e| valid_code(e)) || !unique(c.editions.iter().map(|e| e.as_str())) {
        return Err(ProductError::InvalidList("editions"));
    }
    if !c
        .features
        .iter()
        .all(|f| valid_code(&f.code) && valid_name(&f.name))
        || !unique(c.features.iter().map(|f| f.code.as_str()))
    {
        return Err(ProductError::InvalidList("features"));
    }
    if !c
        .bundles
        .iter()
        .all(|b| valid_code(&b.code) && valid_name(&b.name))
        || !unique(c.bundles.iter().map(|b| b.code.as_str()))
    {
        return Err(ProductError::InvalidList("bundles"));
    }
    let known: BTreeSet<&str> = c.features.iter().map(|f| f.code.as_str()).collect();
    for b in &c.bundles {
        let missing: Vec<&str> = b
            .requires
            .iter()
            .chain(&b.optional)
            .map(String::as_str)
            .filter(|f| !known.contains(f))
            .collect();
        if !missing.is_empty() {
            return Err(ProductError::BundleUnknownFeature {
                module: b.code.clone(),
                missing: missing.join(", "),
            });
        }
    }
    validate_policy(&c.policy)?;
    for (edition, p) in &c.edition_policies {
        if !c.editions.iter().any(|e| e == edition) {
            return Err(ProductError::UnknownEdition(edition.clone()));
        }
        validate_policy(p)?;
    }
    Ok(())
}

domain_kit::aggregate!(
    Product,
    PRODUCT_AGGREGATE,
    ProductCommand,
    ProductEvent,
    ProductError,
    IssuanceServices
);

impl Product {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        command: ProductCommand,
        services: &IssuanceServices,
    ) -> Result<Vec<ProductEvent>, ProductError> {
        let now = services.clock.now();
        let event = match command {
            ProductCommand::Create(c) => {
                if self.state.is_some() {
                    return Err(ProductError::AlreadyExists);
                }
                validate(&c)?;
                let event = ProductCreated {
                    code: c.code.into(),
                    name: c.name.trim().to_string(),
                    editions: contracts::text::strings(c.editions),
                    features: c.features,
                    bundles: c.bundles,
                    policy: c.policy,
                    edition_policies: c.edition_policies,
                    created_at: now,
                };
                ProductEvent::ProductCreated(event)
            }
            ProductCommand::SetPolicy(c) => {
                let state = self.state.as_ref().ok_or(ProductError::NotFound)?;
                if let Some(e) = &c.edition {
                    if !state.editions.iter().any(|x| x == e) {
                        return Err(ProductError::UnknownEdition(e.to_string()));
                    }
                }
                validate_policy(&c.policy)?;
                let event = PolicySet {
                    product: state.code.clone(),
                    edition: c.edition.map(String::from),
                    policy: c.policy,
                    set_at: now,
                };
                ProductEvent::PolicySet(event)
            }
        };
        Ok(vec![event])
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, event: ProductEvent) {
        match event {
            ProductEvent::ProductCreated(e) => {
                self.state = Some(ProductState {
                    code: e.code,
                    name: e.name,
                    editions: e.editions,
                    features: e.features,
                    bundles: e.bundles,
                    policy: e.policy,
                    edition_policies: e.edition_policies,
                    created_at: e.created_at,
                })
            }
            ProductEvent::PolicySet(e) => {
                if let Some(s) = self.state.as_mut() {
                    match e.edition {
                        Some(ed) => {
                            s.edition_policies.insert(ed, e.policy);
                        }
                        None => s.policy = e.policy,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::test_support::{now, services};

    pub fn integration_platform() -> CreateProduct {
        serde_json::from_str(include_str!(
            "../../../../infra/seed/integration-platform.json"
        ))
        .expect("seed parses")
    }

    fn created(c: &CreateProduct) -> ProductEvent {
        ProductEvent::ProductCreated(ProductCreated {
            code: String::from(c.code.clone()),
            name: String::from(c.name.clone()),
            editions: contracts::text::strings(c.editions.clone()),
            features: c.features.clone(),
            bundles: c.bundles.clone(),
            policy: c.policy.clone(),
            edition_policies: c.edition_policies.clone(),
            created_at: now(),
        })
    }

    fn fw() -> TestFramework<Product> {
        TestFramework::with(services())
    }

    #[test]
    fn creating_the_seed_product() {
        let c = integration_platform();
        fw().given_no_previous_events()
            .when(ProductCommand::Create(c.clone()))
            .then_expect_events(vec![created(&c)]);
    }

    #[test]
    fn a_product_is_created_once() {
        let c = integration_platform();
        fw().given(vec![created(&c)])
            .when(ProductCommand::Create(c))
            .then_expect_error(ProductError::AlreadyExists);
    }

    #[test]
    fn a_module_cannot_require_an_unknown_feature() {
        let mut c = integration_platform();
        c.bundles[0].requires.push("teleportation".into());
        fw().given_no_previous_events()
            .when(ProductCommand::Create(c.clone()))
            .then_expect_error(ProductError::BundleUnknownFeature {
                module: c.bundles[0].code.clone(),
                missing: "teleportation".into(),
            });
    }

    #[test]
    fn malformed_codes_names_and_lists_are_rejected() {
        let mut bad_code = integration_platform();
        bad_code.code = "Integration Platform".try_into().expect("valid text");
        let mut bad_name = integration_platform();
        bad_name.name = " ".try_into().expect("valid text");
        let mut dup = integration_platform();
        dup.editions.push(dup.editions[0].clone());
        for (c, e) in [
            (bad_code, ProductError::InvalidCode("code")),
            (bad_name, ProductError::InvalidName("name")),
            (dup, ProductError::InvalidList("editions")),
        ] {
            fw().given_no_previous_events()
                .when(ProductCommand::Create(c))
                .then_expect_error(e);
        }
    }

    #[test]
    fn policies_are_validated() {
        let mut c = integration_platform();
        c.policy.domain_change_fee_minor = -1;
        fw().given_no_previous_events()
            .when(ProductCommand::Create(c))
            .then_expect_error(ProductError::InvalidPolicy(
                "policy.domain_change_fee_minor",
            ));
        let mut c = integration_platform();
        c.edition_policies.insert("moon".into(), Policy::default());
        fw().given_no_previous_events()
            .when(ProductCommand::Create(c))
            .then_expect_error(ProductError::UnknownEdition("moon".into()));
    }

    #[test]
    fn setting_an_edition_policy() {
        let c = integration_platform();
        let policy = Policy {
            max_activations: 25,
            ..Policy::default()
        };
        let edition = c.editions[0].clone();
        fw().given(vec![created(&c)])
            .when(ProductCommand::SetPolicy(SetPolicy {
                edition: Some(edition.clone()),
                policy: policy.clone(),
            }))
            .then_expect_events(vec![ProductEvent::PolicySet(PolicySet {
                product: String::from(c.code.clone()),
                edition: Some(String::from(edition)),
                policy,
                set_at: now(),
            })]);
    }

    #[test]
    fn a_policy_needs_a_product_and_a_known_edition() {
        fw().given_no_previous_events()
            .when(ProductCommand::SetPolicy(SetPolicy {
                edition: None,
                policy: Policy::default(),
            }))
            .then_expect_error(ProductError::NotFound);
        let c = integration_platform();
        fw().given(vec![created(&c)])
            .when(ProductCommand::SetPolicy(SetPolicy {
                edition: Some("moon".try_into().expect("valid text")),
                policy: Policy::default(),
            }))
            .then_expect_error(ProductError::UnknownEdition("moon".into()));
    }
}
