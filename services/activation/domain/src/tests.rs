//! Given/when/then tests of the seats and trial rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::activation::*;
use contracts::issuance::{LicenseKind, LicenseStatus, Policy};
use contracts::license_view::LicenseView;
use cqrs_es::test::TestFramework;
use domain_kit::Refusal;
use uuid::Uuid;

use super::*;

use domain_kit::FixedClock;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn services() -> ActivationServices {
    ActivationServices {
        clock: Arc::new(FixedClock(now())),
        clock_tolerance: Duration::minutes(10),
    }
}

fn seats() -> TestFramework<Seats> {
    TestFramework::with(services())
}

fn license_id() -> Uuid {
    Uuid::from_u128(0x0192_f5c4_0000_7000_8000_0000_0000_0001)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0192_f5c4_0000_7000_8000_0000_0000_1000 + n)
}

fn license(kind: LicenseKind, max: u32) -> LicenseView {
    LicenseView {
        id: license_id(),
        product: "integration-platform".into(),
        edition: Some("standard".into()),
        customer: "ACME".into(),
        contract: None,
        kind,
        modules: vec![],
        features: vec!["data-access".into()],
        seats: Default::default(),
        status: LicenseStatus::Active,
        issued_at: now() - Duration::days(10),
        expires_at: Some(now() + Duration::days(100)),
        reclaim_at: None,
        key_digest: None,
        policy: Some(Policy {
            max_activations: max,
            max_migrations: 1,
            ..Policy::default()
        }),
        version: 1,
        updated_at: now(),
    }
}

fn formal() -> LicenseView {
    license(LicenseKind::Formal, 2)
}

/// Device `n` with four components; `changed` replaces that many of them.
fn device_of(n: u32, changed: usize, client_time: Option<DateTime<Utc>>) -> Device {
    let names = ["machine_id", "disk", "board", "mac"];
    let fp = Fingerprint(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let v = if i >= names.len() - changed {
                    format!("{name}-{n}-new")
                } else {
                    format!("{name}-{n}")
                };
                (name.to_string(), v)
            })
            .collect::<BTreeMap<_, _>>(),
    );
    let components = fp.components().expect("valid fingerprint");
    Device {
        fingerprint: digest_of(&components),
        components,
        client_time,
    }
}

fn device(n: u32) -> Device {
    device_of(n, 0, None)
}

fn activated(n: u32, seat: Uuid, kind: LicenseKind) -> SeatsEvent {
    let d = device(n);
    SeatsEvent::DeviceActivated(DeviceActivated {
        activation_id: seat,
        license_id: license_id(),
        product: "integration-platform".into(),
        kind,
        fingerprint: d.fingerprint,
        components: d.components,
        client_time: None,
        offline: false,
        nonce: None,
        activated_at: now(),
    })
}

fn activate(l: LicenseView, d: Device, seat: Uuid) -> SeatsCommand {
    SeatsCommand::Activate {
        license: l,
        device: d,
        activation_id: seat,
        offline: false,
        nonce: None,
    }
}

#[test]
fn a_new_device_gets_a_seat() {
    seats()
        .given_no_previous_events()
        .when(activate(formal(), device(1), id(1)))
        .then_expect_events(vec![activated(1, id(1), LicenseKind::Formal)]);
}

#[test]
fn the_same_device_keeps_its_seat_even_with_one_part_replaced() {
    let events = seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(activate(formal(), device_of(1, 1, None), id(2)))
        .inspect_result()
        .expect("accepted");
    assert!(events.is_empty(), "no new seat: {events:?}");
}

#[test]
fn a_device_with_a_new_board_and_disk_is_a_new_device() {
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(activate(formal(), device_of(1, 2, None), id(2)))
        .then_expect_events(vec![SeatsEvent::DeviceActivated(DeviceActivated {
            activation_id: id(2),
            fingerprint: device_of(1, 2, None).fingerprint,
            components: device_of(1, 2, None).components,
            ..match activated(1, id(1), LicenseKind::Formal) {
                SeatsEvent::DeviceActivated(e) => e,
                _ => unreachable!("built above"),
            }
        })]);
}

#[test]
fn beyond_max_activations_is_refused() {
    seats()
        .given(vec![
            activated(1, id(1), LicenseKind::Formal),
            activated(2, id(2), LicenseKind::Formal),
        ])
        .when(activate(formal(), device(3), id(3)))
        .then_expect_error(SeatsError::TooManyActivations(2));
}

#[test]
fn a_license_out_of_service_refuses_activation_with_its_own_code() {
    for (status, error) in [
        (LicenseStatus::Suspended, SeatsError::Suspended),
        (LicenseStatus::Revoked, SeatsError::Revoked),
        (LicenseStatus::Expired, SeatsError::Expired),
        (LicenseStatus::Reclaimed, SeatsError::Reclaimed),
        (LicenseStatus::Deleted, SeatsError::LicenseNotFound),
    ] {
        let l = LicenseView { status, ..formal() };
        seats()
            .given_no_previous_events()
            .when(activate(l, device(1), id(1)))
            .then_expect_error(error);
    }
}

#[test]
fn a_license_past_its_expiry_is_expired_before_the_scheduler_says_so() {
    let l = LicenseView {
        expires_at: Some(now() - Duration::seconds(1)),
        ..formal()
    };
    seats()
        .given_no_previous_events()
        .when(activate(l, device(1), id(1)))
        .then_expect_error(SeatsError::Expired);
}

#[test]
fn a_clock_set_back_is_refused_and_recorded() {
    let seen = SeatsEvent::DeviceSeen(DeviceSeen {
        activation_id: id(1),
        license_id: license_id(),
        client_time: now(),
        seen_at: now(),
    });
    let events = seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal), seen])
        .when(activate(
            formal(),
            device_of(1, 0, Some(now() - Duration::hours(2))),
            id(2),
        ))
        .inspect_result()
        .expect("recorded, not an error");
    assert_eq!(events.len(), 1);
    let SeatsEvent::ClockRollbackDetected(e) = &events[0] else {
        panic!("expected ClockRollbackDetected, got {events:?}");
    };
    assert_eq!(e.last_seen, now());
    assert_eq!(
        events[0].refusal().map(|r| r.code),
        Some(CLOCK_ROLLBACK_CODE)
    );
}

#[test]
fn a_clock_within_tolerance_is_fine_and_a_later_time_is_remembered() {
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(activate(
            formal(),
            device_of(1, 0, Some(now() - Duration::minutes(5))),
            id(2),
        ))
        .then_expect_events(vec![SeatsEvent::DeviceSeen(DeviceSeen {
            activation_id: id(1),
            license_id: license_id(),
            client_time: now() - Duration::minutes(5),
            seen_at: now(),
        })]);
}

fn uninstall(l: LicenseView, seat: Uuid) -> SeatsCommand {
    SeatsCommand::Uninstall {
        license: l,
        activation_id: seat,
    }
}

#[test]
fn a_formal_license_uninstalls_and_the_device_gets_a_new_id_afterwards() {
    let gone = SeatsEvent::ActivationUninstalled(ActivationUninstalled {
        activation_id: id(1),
        license_id: license_id(),
        uninstalled_at: now(),
    });
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(uninstall(formal(), id(1)))
        .then_expect_events(vec![gone.clone()]);
    // Never installed again: the same device comes back under a new id.
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal), gone.clone()])
        .when(activate(formal(), device(1), id(2)))
        .then_expect_events(vec![activated(1, id(2), LicenseKind::Formal)]);
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal), gone])
        .when(uninstall(formal(), id(1)))
        .then_expect_error(SeatsError::ActivationEnded(SeatStatus::Uninstalled));
}

#[test]
fn an_ended_seat_leaves_only_how_it_ended_in_the_state() {
    let mut state = Seats::default();
    for n in 0..1_000u32 {
        state.evolve(activated(n, id(u128::from(n)), LicenseKind::Formal));
        state.evolve(SeatsEvent::ActivationUninstalled(ActivationUninstalled {
            activation_id: id(u128::from(n)),
            license_id: license_id(),
            uninstalled_at: now(),
        }));
    }
    state.evolve(activated(1_000, id(1_000), LicenseKind::Formal));
    assert_eq!(state.live().count(), 1);
    assert_eq!(state.ended.len(), 1_000);
    assert_eq!(state.ended[&id(0)].status, SeatStatus::Uninstalled);
    // The command that ended a seat still has it whole, for the index
    // and its answer.
    let last = state.touched(&id(999)).expect("just ended");
    assert_eq!(
        (last.status, last.ended_at),
        (SeatStatus::Uninstalled, Some(now()))
    );
    // What a thousand ended seats weigh in a snapshot: their ids and how
    // they ended, not their devices and times.
    let bytes = serde_json::to_vec(&state).expect("json").len();
    let whole = serde_json::to_vec(&state.seats[&id(1_000)])
        .expect("json")
        .len();
    assert!(
        bytes < whole * 1_000 / 2,
        "{bytes} bytes, a whole seat {whole}"
    );
}

#[test]
fn a_command_on_an_ended_seat_answers_how_it_ended_and_an_unknown_one_is_not_found() {
    let history = || {
        vec![
            activated(1, id(1), LicenseKind::Formal),
            SeatsEvent::ActivationsRevoked(ActivationsRevoked {
                activation_ids: vec![id(1)],
                license_id: license_id(),
                reason: RevocationReason::LicenseRevoked,
                revoked_at: now(),
            }),
        ]
    };
    seats()
        .given(history())
        .when(uninstall(formal(), id(1)))
        .then_expect_error(SeatsError::ActivationEnded(SeatStatus::Revoked));
    seats()
        .given(history())
        .when(uninstall(formal(), id(2)))
        .then_expect_error(SeatsError::ActivationNotFound);
}

#[test]
fn trial_and_temporary_never_uninstall_and_expired_is_deleted_instead() {
    for kind in [LicenseKind::Trial, LicenseKind::Temporary] {
        seats()
            .given(vec![activated(1, id(1), kind)])
            .when(uninstall(license(kind, 2), id(1)))
            .then_expect_error(SeatsError::UninstallNotAllowed);
    }
    let expired = LicenseView {
        status: LicenseStatus::Expired,
        ..formal()
    };
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(uninstall(expired, id(1)))
        .then_expect_error(SeatsError::Expired);
    let mut no = formal();
    if let Some(p) = &mut no.policy {
        p.allow_uninstall = false;
    }
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(uninstall(no, id(1)))
        .then_expect_error(SeatsError::UninstallNotAllowed);
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(uninstall(formal(), id(9)))
        .then_expect_error(SeatsError::ActivationNotFound);
}

fn migrate(l: LicenseView, from: Uuid, to_device: u32, to: Uuid) -> SeatsCommand {
    SeatsCommand::Migrate {
        license: l,
        activation_id: from,
        device: device(to_device),
        new_activation_id: to,
    }
}

fn migrated(from: Uuid, to_device: u32, to: Uuid, used: u32) -> SeatsEvent {
    let d = device(to_device);
    SeatsEvent::ActivationMigrated(ActivationMigrated {
        license_id: license_id(),
        from_activation_id: from,
        activation_id: to,
        fingerprint: d.fingerprint,
        components: d.components,
        client_time: None,
        migrations_used: used,
        migrated_at: now(),
    })
}

#[test]
fn a_formal_license_migrates_within_its_limit() {
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(migrate(formal(), id(1), 2, id(2)))
        .then_expect_events(vec![migrated(id(1), 2, id(2), 1)]);
    seats()
        .given(vec![
            activated(1, id(1), LicenseKind::Formal),
            migrated(id(1), 2, id(2), 1),
        ])
        .when(migrate(formal(), id(2), 3, id(3)))
        .then_expect_error(SeatsError::MigrationLimitReached(1));
    // The old activation was revoked by the same event.
    seats()
        .given(vec![
            activated(1, id(1), LicenseKind::Formal),
            migrated(id(1), 2, id(2), 1),
        ])
        .when(uninstall(formal(), id(1)))
        .then_expect_error(SeatsError::ActivationEnded(SeatStatus::Migrated));
}

#[test]
fn migration_needs_a_formal_license_and_another_device() {
    for kind in [LicenseKind::Trial, LicenseKind::Temporary] {
        seats()
            .given(vec![activated(1, id(1), kind)])
            .when(migrate(license(kind, 2), id(1), 2, id(2)))
            .then_expect_error(SeatsError::MigrationNotAllowed);
    }
    seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(migrate(formal(), id(1), 1, id(2)))
        .then_expect_error(SeatsError::SameDevice);
    seats()
        .given(vec![
            activated(1, id(1), LicenseKind::Formal),
            activated(2, id(2), LicenseKind::Formal),
        ])
        .when(migrate(formal(), id(1), 2, id(3)))
        .then_expect_error(SeatsError::DeviceAlreadyActivated);
}

#[test]
fn a_license_leaving_service_revokes_every_live_seat() {
    seats()
        .given(vec![
            activated(1, id(1), LicenseKind::Formal),
            activated(2, id(2), LicenseKind::Formal),
        ])
        .when(SeatsCommand::RevokeAll {
            license_id: license_id(),
            reason: RevocationReason::LicenseSuspended,
        })
        .then_expect_events(vec![SeatsEvent::ActivationsRevoked(ActivationsRevoked {
            license_id: license_id(),
            activation_ids: vec![id(1), id(2)],
            reason: RevocationReason::LicenseSuspended,
            revoked_at: now(),
        })]);
    seats()
        .given_no_previous_events()
        .when(SeatsCommand::RevokeAll {
            license_id: license_id(),
            reason: RevocationReason::LicenseRevoked,
        })
        .then_expect_events(vec![]);
}

const CLOCK_ROLLBACK_CODE: &str = seats::CLOCK_ROLLBACK;

fn trials() -> TestFramework<Trial> {
    TestFramework::with(services())
}

fn start(similar: Option<&str>, paid: bool) -> TrialCommand {
    let d = device(1);
    TrialCommand::Start {
        trial_id: format!("integration-platform:{}", d.fingerprint),
        product: "integration-platform".into(),
        fingerprint: d.fingerprint,
        components: d.components,
        features: vec!["data-access".into()],
        client_time: None,
        license_id: license_id(),
        issue_command_id: id(50),
        similar_trial: similar.map(str::to_string),
        holds_paid_seat: paid,
    }
}

fn started() -> TrialEvent {
    let d = device(1);
    TrialEvent::TrialStarted(TrialStarted {
        trial_id: format!("integration-platform:{}", d.fingerprint),
        product: "integration-platform".into(),
        fingerprint: d.fingerprint,
        components: d.components,
        license_id: license_id(),
        issue_command_id: id(50),
        features: vec!["data-access".into()],
        client_time: None,
        started_at: now(),
    })
}

#[test]
fn one_trial_per_product_and_device_ever() {
    trials()
        .given_no_previous_events()
        .when(start(None, false))
        .then_expect_events(vec![started()]);
    trials()
        .given(vec![started()])
        .when(start(None, false))
        .then_expect_error(TrialError::AlreadyUsed);
    trials()
        .given_no_previous_events()
        .when(start(Some("integration-platform:other"), false))
        .then_expect_error(TrialError::AlreadyUsed);
}

#[test]
fn a_device_with_a_paid_seat_gets_no_trial() {
    trials()
        .given_no_previous_events()
        .when(start(None, true))
        .then_expect_error(TrialError::NotMixable);
}

#[test]
fn a_trial_completes_once_and_ends_once() {
    let trial_id = match started() {
        TrialEvent::TrialStarted(e) => e.trial_id,
        _ => unreachable!("built above"),
    };
    let done = TrialEvent::TrialActivated(TrialActivated {
        trial_id: trial_id.clone(),
        license_id: license_id(),
        activation_id: id(7),
        activated_at: now(),
    });
    trials()
        .given(vec![started()])
        .when(TrialCommand::Complete {
            activation_id: id(7),
        })
        .then_expect_events(vec![done.clone()]);
    trials()
        .given(vec![started(), done.clone()])
        .when(TrialCommand::Complete {
            activation_id: id(7),
        })
        .then_expect_events(vec![]);
    let ended = TrialEvent::TrialEnded(TrialEnded {
        trial_id,
        license_id: license_id(),
        superseded_by: id(99),
        ended_at: now(),
    });
    trials()
        .given(vec![started(), done.clone()])
        .when(TrialCommand::End {
            superseded_by: id(99),
        })
        .then_expect_events(vec![ended.clone()]);
    trials()
        .given(vec![started(), done, ended])
        .when(TrialCommand::End {
            superseded_by: id(99),
        })
        .then_expect_events(vec![]);
    trials()
        .given_no_previous_events()
        .when(TrialCommand::Complete {
            activation_id: id(7),
        })
        .then_expect_error(TrialError::NotFound);
}

#[test]
fn a_refused_trial_fails_once_and_may_start_again() {
    let trial_id = match started() {
        TrialEvent::TrialStarted(e) => e.trial_id,
        _ => unreachable!("built above"),
    };
    let fail = |command_id| TrialCommand::Fail {
        issue_command_id: command_id,
        code: "INVALID_FEATURES".into(),
        message: "too many".into(),
    };
    let failed = TrialEvent::TrialFailed(TrialFailed {
        trial_id,
        license_id: license_id(),
        code: "INVALID_FEATURES".into(),
        message: "too many".into(),
        failed_at: now(),
    });
    trials()
        .given(vec![started()])
        .when(fail(id(50)))
        .then_expect_events(vec![failed.clone()]);
    // Another command's outcome, or a second one, changes nothing.
    trials()
        .given(vec![started()])
        .when(fail(id(51)))
        .then_expect_events(vec![]);
    trials()
        .given(vec![started(), failed.clone()])
        .when(fail(id(50)))
        .then_expect_events(vec![]);
    // A trial that never ran may be asked for again.
    trials()
        .given(vec![started(), failed])
        .when(start(None, false))
        .then_expect_events(vec![started()]);
}

fn check_of(license: LicenseView, given: Vec<SeatsEvent>, check: validation::Check<'_>) -> String {
    let mut seats = Seats::default();
    for e in given {
        cqrs_es::Aggregate::apply(&mut seats, e);
    }
    validation::validate(&license, &seats, &check, now(), Duration::minutes(10)).code
}

#[test]
fn validation_answers_each_code() {
    use validation::Check;
    let d1 = device(1).components;
    let d1_disk = device_of(1, 1, None).components;
    let d2 = device(2).components;
    let one = || vec![activated(1, id(1), LicenseKind::Formal)];
    let name = |s: &str| contracts::text::Name::parse(s).expect("valid text");
    let features = vec![name("data-access")];
    let more = vec![name("data-access"), name("cdc-realtime")];
    let at = |device, features, client_time| Check {
        device,
        features,
        client_time,
    };
    assert_eq!(
        check_of(formal(), one(), at(Some(&d1_disk), &features, None)),
        "VALID"
    );
    assert_eq!(check_of(formal(), vec![], at(None, &[], None)), "VALID");
    assert_eq!(
        check_of(formal(), vec![], at(Some(&d1), &[], None)),
        "NO_ACTIVATION"
    );
    assert_eq!(
        check_of(formal(), one(), at(Some(&d2), &[], None)),
        "FINGERPRINT_MISMATCH"
    );
    let full = vec![
        activated(1, id(1), LicenseKind::Formal),
        activated(3, id(3), LicenseKind::Formal),
    ];
    assert_eq!(
        check_of(formal(), full, at(Some(&d2), &[], None)),
        "TOO_MANY_ACTIVATIONS"
    );
    assert_eq!(
        check_of(formal(), one(), at(Some(&d1), &more, None)),
        "FEATURES_MISSING"
    );
    let seen = SeatsEvent::DeviceSeen(DeviceSeen {
        activation_id: id(1),
        license_id: license_id(),
        client_time: now(),
        seen_at: now(),
    });
    let back = Some(now() - Duration::hours(1));
    let mut given = one();
    given.push(seen);
    assert_eq!(
        check_of(formal(), given, at(Some(&d1), &[], back)),
        "CLOCK_ROLLBACK"
    );
    for (status, code) in [
        (LicenseStatus::Suspended, "SUSPENDED"),
        (LicenseStatus::Revoked, "REVOKED"),
        (LicenseStatus::Reclaimed, "REVOKED"),
        (LicenseStatus::Expired, "EXPIRED"),
        (LicenseStatus::Deleted, "NOT_FOUND"),
    ] {
        let l = LicenseView { status, ..formal() };
        assert_eq!(check_of(l, one(), at(Some(&d1), &[], None)), code);
    }
    let past = LicenseView {
        expires_at: Some(now() - Duration::seconds(1)),
        ..formal()
    };
    assert_eq!(check_of(past, one(), at(Some(&d1), &[], None)), "EXPIRED");
}

#[test]
fn an_offline_activation_records_its_nonce_and_obeys_the_seat_limit() {
    let offline = |n: u32, seat: Uuid| SeatsCommand::Activate {
        license: formal(),
        device: device_of(n, 0, Some(now())),
        activation_id: seat,
        offline: true,
        nonce: Some("n-1".into()),
    };
    let events = seats()
        .given_no_previous_events()
        .when(offline(1, id(1)))
        .inspect_result()
        .expect("accepted");
    let SeatsEvent::DeviceActivated(e) = &events[0] else {
        panic!("expected DeviceActivated, got {events:?}");
    };
    assert!(e.offline);
    assert_eq!(e.nonce.as_deref(), Some("n-1"));
    seats()
        .given(vec![
            activated(1, id(1), LicenseKind::Formal),
            activated(2, id(2), LicenseKind::Formal),
        ])
        .when(offline(3, id(3)))
        .then_expect_error(SeatsError::TooManyActivations(2));
}

#[test]
fn a_clock_in_year_9999_is_recorded_at_the_servers_bound_and_locks_nothing_out() {
    let far = contracts::time::parse("9999-12-31T23:59:59Z").expect("valid");
    let events = seats()
        .given_no_previous_events()
        .when(activate(formal(), device_of(1, 0, Some(far)), id(1)))
        .inspect_result()
        .expect("accepted");
    let SeatsEvent::DeviceActivated(e) = &events[0] else {
        panic!("{events:?}");
    };
    assert_eq!(e.client_time, Some(now()));
    // The device's true time afterwards is no rollback, even from a time
    // recorded uncapped before the rule.
    let mut poisoned = activated(1, id(1), LicenseKind::Formal);
    if let SeatsEvent::DeviceActivated(e) = &mut poisoned {
        e.client_time = Some(far);
    }
    let events = seats()
        .given(vec![poisoned])
        .when(activate(formal(), device_of(1, 0, Some(now())), id(2)))
        .inspect_result()
        .expect("accepted");
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, SeatsEvent::ClockRollbackDetected(_))),
        "{events:?}"
    );
}

#[test]
fn a_policy_that_requires_the_clock_refuses_a_request_without_one() {
    let mut l = formal();
    if let Some(p) = l.policy.as_mut() {
        p.require_client_time = true;
    }
    seats()
        .given_no_previous_events()
        .when(activate(l.clone(), device(1), id(1)))
        .then_expect_error(SeatsError::ClientTimeRequired);
    let events = seats()
        .given_no_previous_events()
        .when(activate(l, device_of(1, 0, Some(now())), id(1)))
        .inspect_result()
        .expect("accepted");
    assert!(matches!(events[0], SeatsEvent::DeviceActivated(_)));
}

#[test]
fn an_offline_request_nonce_answers_once_per_seat() {
    let offline = |nonce: &str| SeatsCommand::Activate {
        license: formal(),
        device: device(1),
        activation_id: id(2),
        offline: true,
        nonce: Some(nonce.into()),
    };
    let mut first = activated(1, id(1), LicenseKind::Formal);
    if let SeatsEvent::DeviceActivated(e) = &mut first {
        e.offline = true;
        e.nonce = Some("n-1".into());
    }
    // The nonce of the activating request is spent, even once its seat
    // has gone...
    seats()
        .given(vec![first.clone()])
        .when(offline("n-1"))
        .then_expect_error(SeatsError::NonceReused);
    let gone = SeatsEvent::ActivationUninstalled(ActivationUninstalled {
        activation_id: id(1),
        license_id: license_id(),
        uninstalled_at: now(),
    });
    seats()
        .given(vec![first.clone(), gone])
        .when(offline("n-1"))
        .then_expect_error(SeatsError::NonceReused);
    // ... a new one is answered once, and recorded.
    let issued = SeatsEvent::OfflineResponseIssued(OfflineResponseIssued {
        activation_id: id(1),
        license_id: license_id(),
        nonce: "n-2".into(),
        client_time: None,
        issued_at: now(),
    });
    seats()
        .given(vec![first.clone()])
        .when(offline("n-2"))
        .then_expect_events(vec![issued.clone()]);
    seats()
        .given(vec![first, issued])
        .when(offline("n-2"))
        .then_expect_error(SeatsError::NonceReused);
}

#[test]
fn one_shared_component_is_not_the_same_device() {
    // A MAC shared with a seated machine: a new device, not that seat.
    let fp = Fingerprint(
        [("mac".to_string(), "mac-1".to_string())]
            .into_iter()
            .collect(),
    );
    let components = fp.components().expect("valid");
    let mac_only = Device {
        fingerprint: digest_of(&components),
        components,
        client_time: None,
    };
    let events = seats()
        .given(vec![activated(1, id(1), LicenseKind::Formal)])
        .when(activate(formal(), mac_only, id(2)))
        .inspect_result()
        .expect("accepted");
    assert!(matches!(&events[0], SeatsEvent::DeviceActivated(e) if e.activation_id == id(2)));
}

#[test]
fn a_trial_and_a_paid_seat_exclude_each_other_and_nothing_else_does() {
    use LicenseKind::{Formal, Temporary, Trial};
    assert!(trial::excludes(Trial, Formal));
    assert!(trial::excludes(Formal, Trial));
    assert!(trial::excludes(Temporary, Trial));
    assert!(!trial::excludes(Trial, Trial));
    assert!(!trial::excludes(Formal, Temporary));
    assert!(!trial::excludes(Formal, Formal));
}

#[test]
fn a_validation_from_the_seats_by_component_answers_as_a_scan_of_every_seat() {
    // Seats of devices 0-2, each also with two and with all four parts
    // replaced: a device asked about below may match none, one or (under
    // a low threshold) several of them.
    let mut seats = Seats {
        license_id: Some(license_id()),
        ..Seats::default()
    };
    for n in 0..3u32 {
        for changed in [0, 2, 4] {
            let d = device_of(n, changed, None);
            // Ids against the devices' order: the first match by id is
            // not the first device.
            let activation_id = id(1_000 - u128::from(10 * n) - changed as u128);
            seats.seats.insert(
                activation_id,
                Seat {
                    activation_id,
                    license_id: license_id(),
                    product: "integration-platform".into(),
                    kind: LicenseKind::Formal,
                    fingerprint: d.fingerprint,
                    components: d.components,
                    status: SeatStatus::Live,
                    activated_at: now() - Duration::days(1),
                    granted_at_sequence: u64::from(n),
                    last_client_time: Some(now() - Duration::hours(i64::from(n))),
                    offline: false,
                    ended_at: None,
                },
            );
        }
    }
    let by = validation::ByComponent::of(&seats);
    let devices: Vec<Device> = (0..4)
        .flat_map(|n| (0..=4).map(move |changed| device_of(n, changed, None)))
        .collect();
    let mut answers = std::collections::BTreeSet::new();
    for min in 1..=4 {
        for max in [1, 9, 50] {
            let mut license = license(LicenseKind::Formal, max);
            if let Some(p) = license.policy.as_mut() {
                p.fingerprint_min_matches = min;
            }
            for device in devices.iter().map(|d| Some(&d.components)).chain([None]) {
                let check = validation::Check {
                    device,
                    features: &[],
                    client_time: Some(now() - Duration::hours(3)),
                };
                let tolerance = Duration::minutes(10);
                let scan = validation::validate(&license, &seats, &check, now(), tolerance);
                let indexed =
                    validation::validate_indexed(&license, &seats, &by, &check, now(), tolerance);
                assert_eq!(indexed, scan, "min {min}, max {max}, device {device:?}");
                answers.insert((scan.code.clone(), scan.activation_id));
            }
        }
    }
    // The cases compared cover matches of several seats, mismatches and
    // refusals.
    assert!(answers.len() >= 8, "{answers:?}");
}
