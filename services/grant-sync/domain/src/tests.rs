//! Given/when/then tests of clients, leases and upstream imports.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::grants::*;
use contracts::issuance::{BundleDef, LicenseKind, LicenseStatus};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::upstream::CallResult;
use super::*;

use domain_kit::FixedClock;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn services() -> GrantServices {
    GrantServices {
        clock: Arc::new(FixedClock(now())),
    }
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0192_f5c4_0000_7000_8000_0000_0000_2000 + n)
}

fn license_id() -> Uuid {
    id(1)
}

fn grant() -> Grant {
    Grant {
        license_id: license_id(),
        product: "integration-platform".into(),
        edition: Some("enterprise".into()),
        kind: LicenseKind::Formal,
        status: LicenseStatus::Active,
        modules: vec!["data-integration".into()],
        features: vec![
            "datasource-mgmt".into(),
            "data-access".into(),
            "data-preprocess".into(),
            "smart-scheduling".into(),
        ],
        seats: BTreeMap::from([
            ("datasource-mgmt".into(), 2),
            ("data-access".into(), 10),
            ("data-preprocess".into(), 2),
            ("smart-scheduling".into(), 2),
        ]),
        expires_at: Some(now() + Duration::days(30)),
        offline_grace_hours: 72,
        lease_ttl_secs: 60,
        lease_grace_secs: 30,
        require_client_time: false,
        domain: None,
        version: 1,
    }
}

fn bundles() -> Vec<BundleDef> {
    vec![
        BundleDef {
            code: "data-integration".into(),
            name: "Data integration".into(),
            requires: vec![
                "datasource-mgmt".into(),
                "data-access".into(),
                "data-preprocess".into(),
                "smart-scheduling".into(),
            ],
            optional: vec!["cdc".into()],
        },
        BundleDef {
            code: "real-time".into(),
            name: "Real-time".into(),
            requires: vec!["data-access".into(), "cdc".into()],
            optional: vec![],
        },
    ]
}

fn checkout(lease: u128, client: u128, feature: &str, quantity: u32) -> LeasesCommand {
    LeasesCommand::Checkout {
        lease_id: id(100 + lease),
        client_id: id(200 + client),
        grant: Box::new(grant()),
        bundles: bundles(),
        feature: feature.into(),
        quantity,
    }
}

fn granted(lease: u128, client: u128, feature: &str, features: &[&str], q: u32) -> LeasesEvent {
    LeasesEvent::LeaseGranted(LeaseGranted {
        lease_id: id(100 + lease),
        license_id: license_id(),
        client_id: id(200 + client),
        feature: feature.into(),
        features: features.iter().map(|f| f.to_string()).collect(),
        quantity: q,
        ttl_secs: 60,
        grace_secs: 30,
        granted_at: now(),
    })
}

fn leases() -> TestFramework<Leases> {
    TestFramework::with(services())
}

#[test]
fn a_checkout_within_the_seats_is_granted() {
    leases()
        .given(vec![granted(1, 1, "data-access", &["data-access"], 4)])
        .when(checkout(2, 2, "data-access", 6))
        .then_expect_events(vec![granted(2, 2, "data-access", &["data-access"], 6)]);
}

#[test]
fn a_checkout_beyond_the_seats_fails_with_no_seats_available() {
    leases()
        .given(vec![granted(1, 1, "data-access", &["data-access"], 8)])
        .when(checkout(2, 2, "data-access", 3))
        .then_expect_error(LeasesError::NoSeats {
            feature: "data-access".into(),
            seats: 10,
            used: 8,
        });
}

#[test]
fn released_expired_and_revoked_leases_free_their_seats() {
    let ended = vec![
        granted(1, 1, "data-access", &["data-access"], 4),
        granted(2, 1, "data-access", &["data-access"], 3),
        granted(3, 1, "data-access", &["data-access"], 3),
        LeasesEvent::LeaseReleased(LeaseReleased {
            lease_id: id(101),
            license_id: license_id(),
            client_id: id(201),
            released_at: now(),
        }),
        LeasesEvent::LeaseExpired(LeaseExpired {
            lease_id: id(102),
            license_id: license_id(),
            client_id: id(201),
            deadline: now(),
            expired_at: now(),
        }),
        LeasesEvent::LeasesRevoked(LeasesRevoked {
            license_id: license_id(),
            lease_ids: vec![id(103)],
            reason: LeaseEndReason::ClientRevoked,
            license_version: None,
            revoked_at: now(),
        }),
    ];
    leases()
        .given(ended)
        .when(checkout(4, 2, "data-access", 10))
        .then_expect_events(vec![granted(4, 2, "data-access", &["data-access"], 10)]);
}

fn released(lease: u128, client: u128) -> LeasesEvent {
    LeasesEvent::LeaseReleased(LeaseReleased {
        lease_id: id(100 + lease),
        license_id: license_id(),
        client_id: id(200 + client),
        released_at: now(),
    })
}

#[test]
fn an_ended_lease_leaves_only_its_client_and_how_it_ended_in_the_state() {
    let mut state = Leases::default();
    for n in 0..1_000 {
        state.evolve(granted(n, 1, "data-access", &["data-access"], 1));
        state.evolve(released(n, 1));
    }
    state.evolve(granted(1_000, 1, "data-access", &["data-access"], 2));
    assert_eq!(state.live().count(), 1);
    assert_eq!(state.used("data-access"), 2);
    assert_eq!(state.ended.len(), 1_000);
    let first = state.ended[&id(100)];
    assert_eq!(
        (first.client_id, first.status),
        (id(201), LeaseStatus::Released)
    );
    // What a thousand ended leases weigh in a snapshot: their ids, clients
    // and ends, not their features, quantities and times.
    let bytes = serde_json::to_vec(&state).expect("json").len();
    let whole = serde_json::to_vec(&state.leases[&id(1_100)])
        .expect("json")
        .len();
    assert!(
        bytes < whole * 1_000 / 2,
        "{bytes} bytes, a whole lease {whole}"
    );
}

#[test]
fn releasing_an_ended_lease_answers_how_it_ended_and_another_clients_is_not_found() {
    let history = || {
        vec![
            granted(1, 1, "data-access", &["data-access"], 1),
            released(1, 1),
        ]
    };
    leases()
        .given(history())
        .when(LeasesCommand::Release {
            lease_id: id(101),
            client_id: id(201),
        })
        .then_expect_error(LeasesError::LeaseEnded("released"));
    leases()
        .given(history())
        .when(LeasesCommand::Release {
            lease_id: id(101),
            client_id: id(202),
        })
        .then_expect_error(LeasesError::LeaseNotFound);
}

#[test]
fn a_module_checkout_leases_every_required_feature() {
    let all = [
        "datasource-mgmt",
        "data-access",
        "data-preprocess",
        "smart-scheduling",
    ];
    leases()
        .given_no_previous_events()
        .when(checkout(1, 1, "data-integration", 1))
        .then_expect_events(vec![granted(1, 1, "data-integration", &all, 1)]);
    // The module's seats are its scarcest feature's: 2.
    leases()
        .given(vec![
            granted(1, 1, "data-integration", &all, 1),
            granted(2, 1, "smart-scheduling", &["smart-scheduling"], 1),
        ])
        .when(checkout(3, 2, "data-integration", 1))
        .then_expect_error(LeasesError::NoSeats {
            feature: "smart-scheduling".into(),
            seats: 2,
            used: 2,
        });
}

#[test]
fn a_module_whose_features_are_not_all_granted_is_refused_naming_them() {
    leases()
        .given_no_previous_events()
        .when(checkout(1, 1, "real-time", 1))
        .then_expect_error(LeasesError::FeaturesMissing {
            module: "real-time".into(),
            missing: "cdc".into(),
        });
    leases()
        .given_no_previous_events()
        .when(checkout(1, 1, "cdc", 1))
        .then_expect_error(LeasesError::NotGranted("cdc".into()));
}

#[test]
fn quantities_are_bounded() {
    for q in [0, MAX_QUANTITY + 1] {
        leases()
            .given_no_previous_events()
            .when(checkout(1, 1, "data-access", q))
            .then_expect_error(LeasesError::InvalidQuantity);
    }
}

#[test]
fn new_work_is_refused_once_the_license_expired_or_ended() {
    let cases = [
        (LicenseStatus::Expired, LeasesError::Expired),
        (LicenseStatus::Suspended, LeasesError::Suspended),
        (LicenseStatus::Revoked, LeasesError::Revoked),
        (LicenseStatus::Reclaimed, LeasesError::Reclaimed),
        (LicenseStatus::Deleted, LeasesError::Deleted),
    ];
    for (status, error) in cases {
        let mut g = grant();
        g.status = status;
        leases()
            .given_no_previous_events()
            .when(LeasesCommand::Checkout {
                lease_id: id(101),
                client_id: id(201),
                grant: Box::new(g),
                bundles: vec![],
                feature: "data-access".into(),
                quantity: 1,
            })
            .then_expect_error(error);
    }
    // Active, but its expiry has passed before the scheduler said so.
    let mut g = grant();
    g.expires_at = Some(now() - Duration::seconds(1));
    leases()
        .given_no_previous_events()
        .when(LeasesCommand::Checkout {
            lease_id: id(101),
            client_id: id(201),
            grant: Box::new(g),
            bundles: vec![],
            feature: "data-access".into(),
            quantity: 1,
        })
        .then_expect_error(LeasesError::Expired);
}

#[test]
fn only_the_owner_releases_a_live_lease_once() {
    let given = vec![granted(1, 1, "data-access", &["data-access"], 1)];
    let release = |client: u128| LeasesCommand::Release {
        lease_id: id(101),
        client_id: id(200 + client),
    };
    let released = LeasesEvent::LeaseReleased(LeaseReleased {
        lease_id: id(101),
        license_id: license_id(),
        client_id: id(201),
        released_at: now(),
    });
    leases()
        .given(given.clone())
        .when(release(1))
        .then_expect_events(vec![released.clone()]);
    leases()
        .given(given.clone())
        .when(release(2))
        .then_expect_error(LeasesError::LeaseNotFound);
    leases()
        .given(vec![given[0].clone(), released])
        .when(release(1))
        .then_expect_error(LeasesError::LeaseEnded("released"));
}

#[test]
fn expiry_ends_only_a_live_lease() {
    let given = vec![granted(1, 1, "data-access", &["data-access"], 1)];
    let expire = LeasesCommand::Expire {
        lease_id: id(101),
        deadline: now() - Duration::seconds(31),
    };
    leases()
        .given(given.clone())
        .when(expire.clone())
        .then_expect_events(vec![LeasesEvent::LeaseExpired(LeaseExpired {
            lease_id: id(101),
            license_id: license_id(),
            client_id: id(201),
            deadline: now() - Duration::seconds(31),
            expired_at: now(),
        })]);
    let released = LeasesEvent::LeaseReleased(LeaseReleased {
        lease_id: id(101),
        license_id: license_id(),
        client_id: id(201),
        released_at: now(),
    });
    leases()
        .given(vec![given[0].clone(), released])
        .when(expire)
        .then_expect_events(vec![]);
}

#[test]
fn revocation_ends_every_live_lease_or_one_clients() {
    let given = vec![
        granted(1, 1, "data-access", &["data-access"], 1),
        granted(2, 2, "data-access", &["data-access"], 1),
    ];
    leases()
        .given(given.clone())
        .when(LeasesCommand::Revoke {
            license_id: license_id(),
            reason: LeaseEndReason::LicenseSuspended,
            client_id: None,
            license_version: Some(2),
        })
        .then_expect_events(vec![LeasesEvent::LeasesRevoked(LeasesRevoked {
            license_id: license_id(),
            lease_ids: vec![id(101), id(102)],
            reason: LeaseEndReason::LicenseSuspended,
            license_version: Some(2),
            revoked_at: now(),
        })]);
    leases()
        .given(given)
        .when(LeasesCommand::Revoke {
            license_id: license_id(),
            reason: LeaseEndReason::ClientRevoked,
            client_id: Some(id(202)),
            license_version: None,
        })
        .then_expect_events(vec![LeasesEvent::LeasesRevoked(LeasesRevoked {
            license_id: license_id(),
            lease_ids: vec![id(102)],
            reason: LeaseEndReason::ClientRevoked,
            license_version: None,
            revoked_at: now(),
        })]);
    // A revoked client without leases: nothing to record.
    leases()
        .given_no_previous_events()
        .when(LeasesCommand::Revoke {
            license_id: license_id(),
            reason: LeaseEndReason::ClientRevoked,
            client_id: Some(id(202)),
            license_version: None,
        })
        .then_expect_events(vec![]);
}

fn suspended_at(version: u64, lease_ids: Vec<Uuid>) -> LeasesEvent {
    LeasesEvent::LeasesRevoked(LeasesRevoked {
        license_id: license_id(),
        lease_ids,
        reason: LeaseEndReason::LicenseSuspended,
        license_version: Some(version),
        revoked_at: now(),
    })
}

#[test]
fn a_suspension_without_live_leases_is_still_recorded_once() {
    let suspend = |version| LeasesCommand::Revoke {
        license_id: license_id(),
        reason: LeaseEndReason::LicenseSuspended,
        client_id: None,
        license_version: Some(version),
    };
    leases()
        .given_no_previous_events()
        .when(suspend(3))
        .then_expect_events(vec![suspended_at(3, vec![])]);
    leases()
        .given(vec![suspended_at(3, vec![])])
        .when(suspend(3))
        .then_expect_events(vec![]);
}

#[test]
fn a_checkout_decided_on_a_grant_older_than_a_recorded_suspension_is_refused() {
    // The checkout read the grant (version 1, active) before the
    // suspension (version 2) reached the grants table; the suspension's
    // reaction found no lease yet.
    leases()
        .given(vec![suspended_at(2, vec![])])
        .when(checkout(1, 1, "data-access", 1))
        .then_expect_error(LeasesError::Suspended);
    // After a reinstatement (version 3) the grant is newer: allowed.
    let mut g = grant();
    g.version = 3;
    leases()
        .given(vec![suspended_at(2, vec![])])
        .when(LeasesCommand::Checkout {
            lease_id: id(101),
            client_id: id(201),
            grant: Box::new(g),
            bundles: vec![],
            feature: "data-access".into(),
            quantity: 1,
        })
        .then_expect_events(vec![granted(1, 1, "data-access", &["data-access"], 1)]);
}

#[tokio::test]
async fn the_inline_index_sees_only_what_the_command_changed() {
    let mut a = Leases::default();
    for e in [
        granted(1, 1, "data-access", &["data-access"], 1),
        granted(2, 1, "data-access", &["data-access"], 1),
    ] {
        a.evolve(e);
    }
    let sink = cqrs_es::event_sink::EventSink::default();
    a.handle(checkout(3, 1, "data-access", 1), &services(), &sink)
        .await
        .expect("granted");
    assert_eq!(a.changed, BTreeSet::from([id(103)]));
}

// ---------------------------------------------------------------- clients

fn register(licenses: Vec<Uuid>, known: &[Uuid]) -> ClientCommand {
    ClientCommand::Register {
        client_id: id(201),
        key_id: "SC1".into(),
        secret_digest: "ab".repeat(32),
        spec: RegisterClient {
            name: "Plant 7 scheduler".try_into().expect("valid text"),
            licenses,
            allowlist: vec!["10.0.0.0/8".try_into().expect("valid text")],
            callback_url: Some(
                "https://plant7.example/licensing"
                    .try_into()
                    .expect("valid text"),
            ),
            callback_events: None,
        },
        known: known.iter().copied().collect(),
    }
}

fn registered() -> ClientEvent {
    ClientEvent::ClientRegistered(ClientRegistered {
        client_id: id(201),
        name: "Plant 7 scheduler".into(),
        key_id: "SC1".into(),
        secret_digest: "ab".repeat(32),
        licenses: vec![license_id()],
        allowlist: vec!["10.0.0.0/8".into()],
        callback_url: Some("https://plant7.example/licensing".into()),
        callback_events: contracts::webhooks::default_events(),
        registered_at: now(),
    })
}

#[test]
fn a_clients_callback_is_changed_removed_and_disabled_once() {
    let url = "https://plant7.example/v2";
    let changed = |url: Option<&str>, events: Vec<String>| {
        ClientEvent::ClientCallbackChanged(ClientCallbackChanged {
            client_id: id(201),
            callback_url: url.map(String::from),
            callback_events: events,
            changed_at: now(),
        })
    };
    clients()
        .given(vec![registered()])
        .when(ClientCommand::SetCallback(Some(SetClientCallback {
            callback_url: url.try_into().expect("valid text"),
            callback_events: Some(vec!["LeaseExpired".try_into().expect("valid text")]),
        })))
        .then_expect_events(vec![changed(Some(url), vec!["LeaseExpired".into()])]);
    clients()
        .given(vec![registered()])
        .when(ClientCommand::SetCallback(None))
        .then_expect_events(vec![changed(None, vec![])]);
    clients()
        .given(vec![registered(), changed(None, vec![])])
        .when(ClientCommand::SetCallback(None))
        .then_expect_error(ClientError::NoCallback);
    let disabled = ClientEvent::ClientCallbackDisabled(ClientCallbackDisabled {
        client_id: id(201),
        callback_url: "https://plant7.example/licensing".into(),
        failures: 3,
        disabled_at: now(),
    });
    clients()
        .given(vec![registered()])
        .when(ClientCommand::DisableCallback { failures: 3 })
        .then_expect_events(vec![disabled.clone()]);
    clients()
        .given(vec![registered(), disabled])
        .when(ClientCommand::DisableCallback { failures: 4 })
        .then_expect_error(ClientError::NoCallback);
}

fn clients() -> TestFramework<Client> {
    TestFramework::with(services())
}

#[test]
fn a_client_registers_with_known_licenses_only() {
    clients()
        .given_no_previous_events()
        .when(register(vec![license_id()], &[license_id()]))
        .then_expect_events(vec![registered()]);
    clients()
        .given_no_previous_events()
        .when(register(vec![license_id(), id(9)], &[license_id()]))
        .then_expect_error(ClientError::UnknownLicenses(id(9).to_string()));
    clients()
        .given(vec![registered()])
        .when(register(vec![license_id()], &[license_id()]))
        .then_expect_error(ClientError::AlreadyExists);
}

#[test]
fn bad_registrations_name_their_field() {
    let with = |f: &dyn Fn(&mut RegisterClient)| {
        let ClientCommand::Register {
            client_id,
            key_id,
            secret_digest,
            mut spec,
            known,
        } = register(vec![license_id()], &[license_id()])
        else {
            unreachable!()
        };
        f(&mut spec);
        ClientCommand::Register {
            client_id,
            key_id,
            secret_digest,
            spec,
            known,
        }
    };
    let eleven: Vec<String> = (0..11).map(|i| format!("10.0.0.{i}")).collect();
    let cases: Vec<(ClientCommand, ClientError)> = vec![
        (
            with(&|s| s.name = " ".try_into().expect("valid text")),
            ClientError::InvalidName,
        ),
        (with(&|s| s.licenses = vec![]), ClientError::InvalidLicenses),
        (
            with(&|s| s.licenses = vec![license_id(), license_id()]),
            ClientError::InvalidLicenses,
        ),
        (
            with(&|s| {
                s.allowlist = eleven
                    .clone()
                    .into_iter()
                    .map(|s| s.try_into().expect("valid text"))
                    .collect::<Vec<_>>()
            }),
            ClientError::AllowlistTooLong,
        ),
        (
            with(&|s| s.allowlist = vec!["plant7.example".try_into().expect("valid text")]),
            ClientError::InvalidAllowlistEntry("plant7.example".into()),
        ),
        (
            with(&|s| s.callback_url = Some("ftp://x".try_into().expect("valid text"))),
            ClientError::InvalidCallbackUrl,
        ),
    ];
    for (command, error) in cases {
        use domain_kit::CodedError;
        assert!(error.field().is_some(), "{error:?} names a field");
        clients()
            .given_no_previous_events()
            .when(command)
            .then_expect_error(error);
    }
}

#[test]
fn a_revoked_client_stays_revoked_and_a_rollback_is_recorded() {
    let revoked = ClientEvent::ClientRevoked(ClientRevoked {
        client_id: id(201),
        key_id: "SC1".into(),
        reason: "decommissioned".into(),
        revoked_at: now(),
    });
    clients()
        .given(vec![registered()])
        .when(ClientCommand::Revoke {
            reason: "decommissioned".into(),
        })
        .then_expect_events(vec![revoked.clone()]);
    clients()
        .given(vec![registered(), revoked])
        .when(ClientCommand::Revoke {
            reason: "again".into(),
        })
        .then_expect_error(ClientError::Revoked);
    let last = now();
    let reported = now() - Duration::hours(2);
    let detected = ClientEvent::ClientClockRollbackDetected(ClientClockRollbackDetected {
        client_id: id(201),
        reported_time: reported,
        last_reported_time: last,
        tolerance_secs: 600,
        detected_at: now(),
    });
    use domain_kit::Refusal;
    assert_eq!(detected.refusal().map(|r| r.code), Some("CLOCK_ROLLBACK"));
    clients()
        .given(vec![registered()])
        .when(ClientCommand::ClockRollback {
            reported,
            last,
            tolerance_secs: 600,
        })
        .then_expect_events(vec![detected]);
}

// ---------------------------------------------------------------- upstreams

#[tokio::test]
async fn an_upstream_registers_without_its_secret_in_the_event() {
    let mut u = Upstream::default();
    let sink = cqrs_es::event_sink::EventSink::default();
    u.handle(
        UpstreamCommand::Register {
            upstream_id: id(300),
            spec: upstream_spec(),
            secret_digest: "cd".repeat(32),
        },
        &services(),
        &sink,
    )
    .await
    .expect("registered");
    let stored = serde_json::to_string(&sink.collect().await).expect("json");
    assert!(stored.contains(&"cd".repeat(32)), "{stored}");
    assert!(
        !stored.contains("0123abcd"),
        "the secret is in the event: {stored}"
    );
}

fn upstream_spec() -> RegisterUpstream {
    RegisterUpstream {
        name: "Vendor pool".try_into().expect("valid text"),
        member_id: id(201),
        endpoint: "https://vendor.example/".try_into().expect("valid text"),
        secret: "SC1.0123abcd".try_into().expect("valid text"),
        price_protection: true,
        remark: Some("east region".try_into().expect("valid text")),
        allow_insecure_http: false,
    }
}

fn upstream_registered() -> UpstreamEvent {
    UpstreamEvent::UpstreamRegistered(UpstreamRegistered {
        upstream_id: id(300),
        name: "Vendor pool".into(),
        member_id: id(201),
        endpoint: "https://vendor.example".into(),
        secret_digest: "cd".repeat(32),
        price_protection: true,
        remark: Some("east region".into()),
        registered_at: now(),
        allow_insecure_http: false,
    })
}

fn upstreams() -> TestFramework<Upstream> {
    TestFramework::with(services())
}

#[test]
fn an_upstream_registers_with_valid_fields_only() {
    upstreams()
        .given_no_previous_events()
        .when(UpstreamCommand::Register {
            upstream_id: id(300),
            spec: upstream_spec(),
            secret_digest: "cd".repeat(32),
        })
        .then_expect_events(vec![upstream_registered()]);
    for (spec, error) in [
        (
            RegisterUpstream {
                endpoint: "vendor.example".try_into().expect("valid text"),
                ..upstream_spec()
            },
            UpstreamError::InvalidEndpoint,
        ),
        (
            RegisterUpstream {
                secret: "no-dot".try_into().expect("valid text"),
                ..upstream_spec()
            },
            UpstreamError::InvalidSecret,
        ),
        // Plain http only by the operator's explicit choice.
        (
            RegisterUpstream {
                endpoint: "http://vendor.example".try_into().expect("valid text"),
                ..upstream_spec()
            },
            UpstreamError::InsecureEndpoint,
        ),
        (
            RegisterUpstream {
                name: "".try_into().expect("valid text"),
                ..upstream_spec()
            },
            UpstreamError::InvalidName,
        ),
    ] {
        upstreams()
            .given_no_previous_events()
            .when(UpstreamCommand::Register {
                upstream_id: id(300),
                spec,
                secret_digest: "cd".repeat(32),
            })
            .then_expect_error(error);
    }
}

fn ok() -> CallResult {
    CallResult {
        status: UpstreamStatus::Ok,
        http_status: Some(200),
        message: "1 products".into(),
        latency_ms: 3,
        keys: vec![],
    }
}

#[test]
fn a_catalog_sync_imports_what_changed_and_records_the_sync() {
    let product = CatalogProduct {
        code: "integration-platform".into(),
        name: "Integration platform".into(),
        features: vec![],
        bundles: bundles(),
    };
    let imported = UpstreamEvent::UpstreamProductImported(UpstreamProductImported {
        upstream_id: id(300),
        product: product.clone(),
        imported_at: now(),
    });
    let synced = |items| {
        UpstreamEvent::UpstreamSynced(UpstreamSynced {
            upstream_id: id(300),
            resource: SyncResource::Catalog,
            status: UpstreamStatus::Ok,
            items,
            message: "1 products".into(),
            synced_at: now(),
        })
    };
    let sync = UpstreamCommand::RecordSync {
        resource: SyncResource::Catalog,
        result: ok(),
        items: 0,
        products: vec![product],
    };
    upstreams()
        .given(vec![upstream_registered()])
        .when(sync.clone())
        .then_expect_events(vec![imported.clone(), synced(1)]);
    upstreams()
        .given(vec![upstream_registered(), imported])
        .when(sync)
        .then_expect_events(vec![synced(0)]);
    upstreams()
        .given_no_previous_events()
        .when(UpstreamCommand::RecordCheck(ok()))
        .then_expect_error(UpstreamError::NotFound);
}

#[test]
fn an_imported_license_records_only_changes_and_new_revocations() {
    let import =
        |grant: Option<Grant>, revocations: Vec<Revocation>| ImportedLicenseCommand::Import {
            upstream_id: id(300),
            grant,
            revocations,
        };
    let imported = |g: Grant| {
        ImportedLicenseEvent::UpstreamLicenseImported(UpstreamLicenseImported {
            upstream_id: id(300),
            grant: g,
            imported_at: now(),
        })
    };
    let fw = || TestFramework::<ImportedLicense>::with(services());
    fw().given_no_previous_events()
        .when(import(Some(grant()), vec![]))
        .then_expect_events(vec![imported(grant())]);
    fw().given(vec![imported(grant())])
        .when(import(Some(grant()), vec![]))
        .then_expect_events(vec![]);
    let revocation = Revocation {
        activation_id: id(400),
        license_id: license_id(),
        reason: "uninstalled".into(),
        revoked_at: now(),
    };
    let revoked = ImportedLicenseEvent::UpstreamRevocationsImported(UpstreamRevocationsImported {
        upstream_id: id(300),
        license_id: license_id(),
        revocations: vec![revocation.clone()],
        imported_at: now(),
    });
    fw().given(vec![imported(grant())])
        .when(import(None, vec![revocation.clone()]))
        .then_expect_events(vec![revoked.clone()]);
    fw().given(vec![imported(grant()), revoked])
        .when(import(None, vec![revocation]))
        .then_expect_events(vec![]);
    fw().given(vec![imported(grant())])
        .when(ImportedLicenseCommand::Import {
            upstream_id: id(301),
            grant: Some(grant()),
            revocations: vec![],
        })
        .then_expect_error(UpstreamError::OtherUpstream(license_id()));
}

#[test]
fn grants_say_how_they_changed() {
    let g = grant();
    assert_eq!(g.change_from(None), ChangeKind::GrantAdded);
    assert_eq!(g.change_from(Some(&g)), ChangeKind::GrantChanged);
    let mut revoked = grant();
    revoked.status = LicenseStatus::Revoked;
    assert_eq!(revoked.change_from(Some(&g)), ChangeKind::GrantRevoked);
    let mut suspended = grant();
    suspended.status = LicenseStatus::Suspended;
    assert_eq!(suspended.change_from(Some(&g)), ChangeKind::GrantChanged);
    assert!(suspended.ends_leases());
    let mut expired = grant();
    expired.status = LicenseStatus::Expired;
    assert!(!expired.ends_leases(), "expiry never stops granted work");
}
