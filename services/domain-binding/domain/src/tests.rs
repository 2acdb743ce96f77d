//! Given/when/then tests of the binding rules and the host check.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::domain::*;
use contracts::issuance::{LicenseKind, LicenseStatus, Policy};
use contracts::license_view::LicenseView;
use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::binding::follow_up;
use super::check::{check, Entry};
use super::host::registrable;
use super::*;

use domain_kit::FixedClock;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn fw() -> TestFramework<Binding> {
    TestFramework::with(BindingServices {
        clock: Arc::new(FixedClock(now())),
    })
}

fn id() -> Uuid {
    Uuid::from_u128(0x0192_f5c4_0000_7000_8000_0000_0000_0001)
}

fn license() -> LicenseView {
    LicenseView {
        id: id(),
        product: "cloud-engine".into(),
        edition: Some("mainland".into()),
        customer: "ACME".into(),
        contract: None,
        kind: LicenseKind::Formal,
        modules: vec![],
        features: vec![],
        seats: Default::default(),
        status: LicenseStatus::Active,
        issued_at: now() - Duration::days(1),
        expires_at: Some(now() + Duration::days(365)),
        reclaim_at: None,
        key_digest: None,
        policy: Some(Policy {
            requires_domain: true,
            ..Policy::default()
        }),
        version: 1,
        updated_at: now(),
    }
}

fn host(h: &str) -> host::Registrable {
    registrable(h).expect("valid host")
}

fn bound(domain: &str) -> BindingEvent {
    BindingEvent::DomainBound(DomainBound {
        license_id: id(),
        product: "cloud-engine".into(),
        domain: domain.into(),
        requested_host: format!("cloud.{domain}"),
        follow_up: follow_up(domain),
        bound_at: now(),
    })
}

fn changed(from: &str, to: &str, n: u32, free: bool) -> BindingEvent {
    BindingEvent::DomainChanged(DomainChanged {
        license_id: id(),
        product: "cloud-engine".into(),
        from_domain: from.into(),
        domain: to.into(),
        requested_host: to.into(),
        changes_used: n,
        free,
        follow_up: follow_up(to),
        changed_at: now(),
    })
}

fn change(to: &str, accept_fee: bool) -> BindingCommand {
    BindingCommand::Change {
        license: license(),
        host: host(to),
        accept_fee,
    }
}

#[test]
fn binding_a_subdomain_binds_its_registrable_domain() {
    fw().given_no_previous_events()
        .when(BindingCommand::Bind {
            license: license(),
            host: host("cloud.example.com"),
        })
        .then_expect_events(vec![bound("example.com")]);
    fw().given(vec![bound("example.com")])
        .when(BindingCommand::Bind {
            license: license(),
            host: host("example.org"),
        })
        .then_expect_error(BindingError::AlreadyBound("example.com".into()));
}

#[test]
fn only_live_licenses_of_domain_products_bind() {
    for (status, error) in [
        (LicenseStatus::Suspended, BindingError::Suspended),
        (LicenseStatus::Revoked, BindingError::Revoked),
        (LicenseStatus::Expired, BindingError::Expired),
        (LicenseStatus::Reclaimed, BindingError::Reclaimed),
        (LicenseStatus::Deleted, BindingError::LicenseNotFound),
    ] {
        fw().given_no_previous_events()
            .when(BindingCommand::Bind {
                license: LicenseView {
                    status,
                    ..license()
                },
                host: host("example.com"),
            })
            .then_expect_error(error);
    }
    fw().given_no_previous_events()
        .when(BindingCommand::Bind {
            license: LicenseView {
                policy: Some(Policy::default()),
                ..license()
            },
            host: host("example.com"),
        })
        .then_expect_error(BindingError::NotRequired);
}

#[test]
fn the_first_change_is_free_the_next_costs_and_needs_consent() {
    fw().given(vec![bound("example.com")])
        .when(change("example.org", false))
        .then_expect_events(vec![changed("example.com", "example.org", 1, true)]);
    let after_one = || {
        vec![
            bound("example.com"),
            changed("example.com", "example.org", 1, true),
        ]
    };
    fw().given(after_one())
        .when(change("example.net", false))
        .then_expect_error(BindingError::FeeNotAccepted {
            amount_minor: 500_000,
            currency: "CNY".into(),
        });
    fw().given(after_one())
        .when(change("example.net", true))
        .then_expect_events(vec![
            changed("example.org", "example.net", 2, false),
            BindingEvent::DomainChangeCharged(DomainChangeCharged {
                license_id: id(),
                change_number: 2,
                amount_minor: 500_000,
                currency: "CNY".into(),
                charged_at: now(),
            }),
        ]);
    fw().given(after_one())
        .when(change("www.example.org", true))
        .then_expect_error(BindingError::SameDomain("example.org".into()));
    fw().given_no_previous_events()
        .when(change("example.org", true))
        .then_expect_error(BindingError::NotBound);
}

#[test]
fn a_reset_unbinds_without_counting_a_change() {
    let reset = BindingEvent::DomainReset(DomainReset {
        license_id: id(),
        domain: "example.com".into(),
        reason: "customer moved".into(),
        reset_at: now(),
    });
    fw().given(vec![bound("example.com")])
        .when(BindingCommand::Reset {
            reason: " customer moved ".into(),
        })
        .then_expect_events(vec![reset.clone()]);
    fw().given(vec![bound("example.com")])
        .when(BindingCommand::Reset { reason: " ".into() })
        .then_expect_error(BindingError::Reason);
    // Bound again after the reset: still the first change is free.
    fw().given(vec![bound("example.com"), reset, bound("example.net")])
        .when(change("example.org", false))
        .then_expect_events(vec![changed("example.net", "example.org", 1, true)]);
}

#[test]
fn a_license_leaving_service_releases_its_domain_for_good() {
    let released = BindingEvent::DomainReleased(DomainReleased {
        license_id: id(),
        domain: "example.com".into(),
        reason: ReleaseReason::LicenseRevoked,
        released_at: now(),
    });
    fw().given(vec![bound("example.com")])
        .when(BindingCommand::Release {
            license_id: id(),
            reason: ReleaseReason::LicenseRevoked,
        })
        .then_expect_events(vec![released.clone()]);
    fw().given(vec![bound("example.com"), released.clone()])
        .when(BindingCommand::Release {
            license_id: id(),
            reason: ReleaseReason::LicenseRevoked,
        })
        .then_expect_events(vec![]);
    fw().given(vec![bound("example.com"), released])
        .when(BindingCommand::Bind {
            license: license(),
            host: host("example.com"),
        })
        .then_expect_error(BindingError::Revoked);
}

fn entry(status: LicenseStatus, domain: Option<&str>) -> Entry {
    Entry {
        license_id: id(),
        product: "cloud-engine".into(),
        edition: None,
        status,
        expires_at: Some(now() + Duration::days(1)),
        domain: domain.map(str::to_string),
    }
}

#[test]
fn the_host_check_answers_each_code() {
    let ok = entry(LicenseStatus::Active, Some("example.com"));
    let code = |e: Option<&Entry>, h: &str| check(e, &registrable(h), now()).code;
    assert_eq!(code(Some(&ok), "a.b.example.com"), "OK");
    assert!(check(Some(&ok), &registrable("example.com"), now()).authorized);
    assert_eq!(code(Some(&ok), "example.org"), "DOMAIN_MISMATCH");
    assert_eq!(code(Some(&ok), "1.2.3.4"), "IP_NOT_ALLOWED");
    assert_eq!(code(Some(&ok), "[::1]"), "IP_NOT_ALLOWED");
    assert_eq!(code(None, "example.com"), "NOT_FOUND");
    let unbound = entry(LicenseStatus::Active, None);
    assert_eq!(code(Some(&unbound), "example.com"), "NOT_BOUND");
    for (status, want) in [
        (LicenseStatus::Expired, "LICENSE_EXPIRED"),
        (LicenseStatus::Revoked, "LICENSE_REVOKED"),
        (LicenseStatus::Reclaimed, "LICENSE_REVOKED"),
        (LicenseStatus::Suspended, "LICENSE_SUSPENDED"),
        (LicenseStatus::Deleted, "NOT_FOUND"),
    ] {
        assert_eq!(
            code(Some(&entry(status, Some("example.com"))), "example.com"),
            want
        );
    }
    let past = Entry {
        expires_at: Some(now() - Duration::seconds(1)),
        ..ok
    };
    assert_eq!(code(Some(&past), "example.com"), "LICENSE_EXPIRED");
}
