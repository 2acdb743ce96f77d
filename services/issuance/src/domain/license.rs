use chrono::{DateTime, Utc};
use contracts::issuance::{
    IssueLicense, LicenseIssued, LicenseKind, LICENSE_AGGREGATE, LICENSE_ISSUED, LICENSE_ISSUED_V1,
};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use eventstore::CodedError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::IssuanceServices;

pub const MAX_FEATURES: usize = 200;
const MAX_CODE_LEN: usize = 64;
const MAX_CUSTOMER_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    Active,
}

/// A sold (or trial) license. `None` until issued.
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
    pub kind: LicenseKind,
    pub features: Vec<String>,
    pub status: LicenseStatus,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LicenseCommand {
    Issue {
        license_id: Uuid,
        spec: IssueLicense,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LicenseEvent {
    LicenseIssued(LicenseIssued),
}

impl DomainEvent for LicenseEvent {
    fn event_type(&self) -> String {
        match self {
            Self::LicenseIssued(_) => LICENSE_ISSUED.to_string(),
        }
    }

    fn event_version(&self) -> String {
        match self {
            Self::LicenseIssued(_) => LICENSE_ISSUED_V1.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("license already exists")]
    AlreadyExists,
    #[error(
        "{field} must be 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    InvalidCode { field: &'static str },
    #[error("customer must be 1-200 characters without control characters")]
    InvalidCustomer,
    #[error("features must be at most 200 distinct codes")]
    InvalidFeatures,
    #[error("{0:?} licenses must have an expiry")]
    ExpiryRequired(LicenseKind),
    #[error("expires_at must be in the future")]
    ExpiryInPast,
}

impl CodedError for LicenseError {
    fn code(&self) -> &'static str {
        match self {
            Self::AlreadyExists => "LICENSE_EXISTS",
            Self::InvalidCode { field: "product" } => "INVALID_PRODUCT",
            Self::InvalidCode { field: "edition" } => "INVALID_EDITION",
            Self::InvalidCode { .. } => "INVALID_FEATURES",
            Self::InvalidCustomer => "INVALID_CUSTOMER",
            Self::InvalidFeatures => "INVALID_FEATURES",
            Self::ExpiryRequired(_) => "EXPIRY_REQUIRED",
            Self::ExpiryInPast => "EXPIRY_IN_PAST",
        }
    }

    /// The request field a rejection is about, for problem+json.
    fn field(&self) -> Option<&'static str> {
        match self {
            Self::AlreadyExists => None,
            Self::InvalidCode { field } => Some(field),
            Self::InvalidCustomer => Some("customer"),
            Self::InvalidFeatures => Some("features"),
            Self::ExpiryRequired(_) | Self::ExpiryInPast => Some("expires_at"),
        }
    }
}

fn valid_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CODE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

fn validate(spec: &IssueLicense, now: DateTime<Utc>) -> Result<(), LicenseError> {
    if !valid_code(&spec.product) {
        return Err(LicenseError::InvalidCode { field: "product" });
    }
    if spec.edition.as_deref().is_some_and(|e| !valid_code(e)) {
        return Err(LicenseError::InvalidCode { field: "edition" });
    }
    let customer = spec.customer.trim();
    if customer.is_empty()
        || spec.customer.chars().count() > MAX_CUSTOMER_LEN
        || spec.customer.chars().any(char::is_control)
    {
        return Err(LicenseError::InvalidCustomer);
    }
    let mut seen = std::collections::HashSet::new();
    if spec.features.len() > MAX_FEATURES
        || !spec
            .features
            .iter()
            .all(|f| valid_code(f) && seen.insert(f.as_str()))
    {
        return Err(LicenseError::InvalidFeatures);
    }
    match (spec.kind, spec.expires_at) {
        (LicenseKind::Trial | LicenseKind::Temporary, None) => {
            Err(LicenseError::ExpiryRequired(spec.kind))
        }
        (_, Some(at)) if at <= now => Err(LicenseError::ExpiryInPast),
        _ => Ok(()),
    }
}

impl Aggregate for License {
    const TYPE: &'static str = LICENSE_AGGREGATE;
    type Command = LicenseCommand;
    type Event = LicenseEvent;
    type Error = LicenseError;
    type Services = IssuanceServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            LicenseCommand::Issue { license_id, spec } => {
                if self.state.is_some() {
                    return Err(LicenseError::AlreadyExists);
                }
                let now = services.clock.now();
                validate(&spec, now)?;
                let event = LicenseIssued {
                    license_id,
                    product: spec.product,
                    edition: spec.edition,
                    customer: spec.customer.trim().to_string(),
                    kind: spec.kind,
                    features: spec.features,
                    issued_at: now,
                    expires_at: spec.expires_at,
                };
                sink.write(LicenseEvent::LicenseIssued(event), self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            LicenseEvent::LicenseIssued(e) => {
                self.state = Some(LicenseState {
                    id: e.license_id,
                    product: e.product,
                    edition: e.edition,
                    customer: e.customer,
                    kind: e.kind,
                    features: e.features,
                    status: LicenseStatus::Active,
                    issued_at: e.issued_at,
                    expires_at: e.expires_at,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::domain::Clock;

    struct FixedClock(DateTime<Utc>);

    impl Clock for FixedClock {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    fn framework() -> TestFramework<License> {
        TestFramework::with(IssuanceServices {
            clock: Arc::new(FixedClock(now())),
        })
    }

    fn spec(kind: LicenseKind, expires_at: Option<DateTime<Utc>>) -> IssueLicense {
        IssueLicense {
            product: "integration-platform".into(),
            edition: Some("mainland".into()),
            customer: "ACME Corp".into(),
            kind,
            features: vec!["data-access".into(), "cdc-realtime".into()],
            expires_at,
        }
    }

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn issued(kind: LicenseKind, expires_at: Option<DateTime<Utc>>) -> LicenseEvent {
        LicenseEvent::LicenseIssued(LicenseIssued {
            license_id: id(),
            product: "integration-platform".into(),
            edition: Some("mainland".into()),
            customer: "ACME Corp".into(),
            kind,
            features: vec!["data-access".into(), "cdc-realtime".into()],
            issued_at: now(),
            expires_at,
        })
    }

    fn issue(spec: IssueLicense) -> LicenseCommand {
        LicenseCommand::Issue {
            license_id: id(),
            spec,
        }
    }

    #[test]
    fn issuing_a_perpetual_formal_license() {
        framework()
            .given_no_previous_events()
            .when(issue(spec(LicenseKind::Formal, None)))
            .then_expect_events(vec![issued(LicenseKind::Formal, None)]);
    }

    #[test]
    fn issuing_a_dated_temporary_license() {
        let exp = Some(now() + Duration::days(30));
        framework()
            .given_no_previous_events()
            .when(issue(spec(LicenseKind::Temporary, exp)))
            .then_expect_events(vec![issued(LicenseKind::Temporary, exp)]);
    }

    #[test]
    fn a_license_is_issued_only_once() {
        framework()
            .given(vec![issued(LicenseKind::Formal, None)])
            .when(issue(spec(LicenseKind::Formal, None)))
            .then_expect_error(LicenseError::AlreadyExists);
    }

    #[test]
    fn trial_and_temporary_licenses_need_an_expiry() {
        for kind in [LicenseKind::Trial, LicenseKind::Temporary] {
            framework()
                .given_no_previous_events()
                .when(issue(spec(kind, None)))
                .then_expect_error(LicenseError::ExpiryRequired(kind));
        }
    }

    #[test]
    fn an_expiry_in_the_past_is_rejected() {
        framework()
            .given_no_previous_events()
            .when(issue(spec(
                LicenseKind::Formal,
                Some(now() - Duration::seconds(1)),
            )))
            .then_expect_error(LicenseError::ExpiryInPast);
    }

    #[test]
    fn a_malformed_product_code_is_rejected() {
        let mut s = spec(LicenseKind::Formal, None);
        s.product = "Bad Product".into();
        framework()
            .given_no_previous_events()
            .when(issue(s))
            .then_expect_error(LicenseError::InvalidCode { field: "product" });
    }

    #[test]
    fn a_malformed_edition_is_rejected() {
        let mut s = spec(LicenseKind::Formal, None);
        s.edition = Some(String::new());
        framework()
            .given_no_previous_events()
            .when(issue(s))
            .then_expect_error(LicenseError::InvalidCode { field: "edition" });
    }

    #[test]
    fn a_blank_customer_is_rejected() {
        let mut s = spec(LicenseKind::Formal, None);
        s.customer = "  ".into();
        framework()
            .given_no_previous_events()
            .when(issue(s))
            .then_expect_error(LicenseError::InvalidCustomer);
    }

    #[test]
    fn duplicate_or_malformed_features_are_rejected() {
        for features in [
            vec!["a".to_string(), "a".to_string()],
            vec!["UPPER".to_string()],
            (0..=MAX_FEATURES).map(|i| format!("f{i}")).collect(),
        ] {
            let mut s = spec(LicenseKind::Formal, None);
            s.features = features;
            framework()
                .given_no_previous_events()
                .when(issue(s))
                .then_expect_error(LicenseError::InvalidFeatures);
        }
    }

    #[test]
    fn rejection_codes_are_stable() {
        assert_eq!(LicenseError::AlreadyExists.code(), "LICENSE_EXISTS");
        assert_eq!(
            LicenseError::InvalidCode { field: "product" }.code(),
            "INVALID_PRODUCT"
        );
        assert_eq!(LicenseError::ExpiryInPast.code(), "EXPIRY_IN_PAST");
        assert_eq!(LicenseError::ExpiryInPast.field(), Some("expires_at"));
    }
}
