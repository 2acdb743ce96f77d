//! The client library of installed products (`license-client`) against
//! the real services: online and offline activation, offline verification
//! under keys fetched once and pinned, suspension seen at the next
//! validate and sync, the grant document's offline grace once grant sync
//! is gone (and none without grace), floating leases, uninstall receipts,
//! another product's file refused, and server problems as typed errors.

use std::time::Duration;

use chrono::Utc;
use e2e::routes::Svc;
use e2e::stack::{machine, Stack};
use e2e::*;
use license_client::{Client, Components, Error, Store};
use serde_json::{json, Value};
use uuid::Uuid;

/// Nothing listens on port 1: a server that cannot be reached.
const NOWHERE: &str = "http://127.0.0.1:1";

fn device(n: u32) -> Components {
    serde_json::from_value(machine(n)).expect("components")
}

fn temp_store() -> Store {
    Store::open(std::env::temp_dir().join(format!("license-client-e2e-{}", Uuid::new_v4())))
        .expect("store")
}

/// A client of `product` and `key` against activation, its store and the
/// activation JWKS fetched once and pinned.
async fn activation_client(
    act: &str,
    grants: &str,
    product: &str,
    key: &str,
    store: &Store,
) -> Client {
    let mut client = Client::new(act, grants, product, key)
        .expect("client")
        .with_store(store.clone())
        .expect("store");
    let keys = client
        .fetch_activation_keys()
        .await
        .expect("activation JWKS");
    client.pin_activation_keys(keys).expect("pinned");
    client
}

/// Waits until grant sync knows the license, then registers a sync client
/// for it: its token and id.
async fn register_sync_client(grants: &str, license_id: &str) -> (String, Uuid) {
    let admin = admin_client();
    let url = format!("{grants}/v1/licenses/{license_id}/leases");
    let known = wait_until(Duration::from_secs(15), || async {
        call(&admin, "GET", &url, None).await.0 == 200
    })
    .await;
    assert!(known, "license {license_id} reached grant sync");
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{grants}/v1/clients"),
        Some(&json!({"name": "Plant 7", "licenses": [license_id]})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    (
        b["token"].as_str().expect("token").to_string(),
        b["client_id"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .expect("client id"),
    )
}

/// A client of grant sync with its token, id and pinned grant-sync JWKS.
async fn sync_client(grants: &str, product: &str, token: &str, id: Uuid, store: &Store) -> Client {
    let mut client = Client::new(NOWHERE, grants, product, "unused")
        .expect("client")
        .with_sync_token(token)
        .with_client_id(id)
        .with_store(store.clone())
        .expect("store");
    let keys = client.fetch_grant_keys().await.expect("grant-sync JWKS");
    client.pin_grant_keys(keys).expect("pinned");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_activation_verifies_offline_under_the_pinned_jwks_and_a_tampered_file_does_not()
{
    let stack = Stack::start(&[Svc::Activation]).await;
    let act = stack.url(Svc::Activation);
    let product = stack.product(json!({"max_activations": 5})).await;
    let license = stack.license(&product, "ACME", json!({})).await;
    let store = temp_store();
    let client = activation_client(&act, NOWHERE, &product, &license.key, &store).await;

    let now = Utc::now();
    let activated = client.activate(&device(1), now).await.expect("activated");
    assert_eq!(activated.license_id().to_string(), license.id);
    assert!(activated.may_start("f1", now));
    assert!(!activated.may_start("f2", now), "f2 was never granted");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path(license_client::store::ACTIVATION_FILE))
            .expect("stored")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Offline: a new client on the same store, no server anywhere, finds
    // the pinned keys and verifies the file.
    let offline = Client::new(NOWHERE, NOWHERE, &product, &license.key)
        .expect("client")
        .with_store(store.clone())
        .expect("store");
    let loaded = offline
        .load_activation(&device(1), Utc::now())
        .expect("verifies offline");
    assert_eq!(loaded, activated);
    assert!(matches!(
        offline.load_activation(&device(2), Utc::now()),
        Err(Error::WrongDevice)
    ));
    // A replaced disk: the server keeps the seat, and so does the client
    // offline (the file carries the seat's component digests and the
    // policy's minimum).
    let mut new_disk = device(1);
    new_disk.insert("disk".into(), "d-replaced".into());
    assert!(
        offline.load_activation(&new_disk, Utc::now()).is_ok(),
        "a device with one part replaced is still the file's"
    );
    let again = client
        .activate(&new_disk, Utc::now())
        .await
        .expect("re-activated with a replaced part");
    assert_eq!(
        again.claims.activation_id, activated.claims.activation_id,
        "the same seat"
    );

    // One activation service signs every product's files: a client of
    // another product refuses this one, offline from its store and online
    // as activation answers it, and keeps nothing.
    let elsewhere = Client::new(NOWHERE, NOWHERE, "another-product", &license.key)
        .expect("client")
        .with_store(store.clone())
        .expect("store");
    match elsewhere.load_activation(&device(1), Utc::now()) {
        Err(Error::WrongProduct { expected, found }) => {
            assert_eq!(
                (expected.as_str(), found.as_str()),
                ("another-product", product.as_str())
            )
        }
        other => panic!("another product's file is refused, got {other:?}"),
    }
    let other_store = temp_store();
    let other =
        activation_client(&act, NOWHERE, "another-product", &license.key, &other_store).await;
    assert!(matches!(
        other.activate(&device(1), Utc::now()).await,
        Err(Error::WrongProduct { .. })
    ));
    assert!(matches!(
        other.load_activation(&device(1), Utc::now()),
        Err(Error::Missing(_))
    ));
    let _ = std::fs::remove_dir_all(other_store.dir());

    // A file whose claims were edited (f2 added) keeps its signature but
    // no longer verifies.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts: Vec<String> = activated.file.split('.').map(str::to_string).collect();
    let mut edited = claims(&activated.file);
    edited["features"]
        .as_array_mut()
        .expect("features")
        .push(json!({"code": "f2"}));
    parts[1] = b64.encode(edited.to_string());
    store
        .write(
            license_client::store::ACTIVATION_FILE,
            parts.join(".").as_bytes(),
        )
        .expect("write");
    assert!(matches!(
        offline.load_activation(&device(1), Utc::now()),
        Err(Error::BadSignature(_))
    ));
    let _ = std::fs::remove_dir_all(store.dir());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_activation_round_trip_stores_the_file_answering_the_request_once() {
    let stack = Stack::start(&[Svc::Activation]).await;
    let act = stack.url(Svc::Activation);
    let product = stack.product(json!({"max_activations": 5})).await;
    let license = stack.license(&product, "ACME", json!({})).await;
    let store = temp_store();
    // The product's machine has no network: only the pinned keys.
    let mut offline = Client::new(NOWHERE, NOWHERE, &product, &license.key)
        .expect("client")
        .with_store(store.clone())
        .expect("store");
    let keys = license_client::fetch_keys(&act).await.expect("JWKS");
    offline.pin_activation_keys(keys).expect("pinned");

    let request_path = store.dir().join("carry-me.json");
    offline
        .write_offline_request(&request_path, &device(3), Utc::now())
        .expect("request written");
    let request = std::fs::read_to_string(&request_path).expect("request file");
    let nonce = serde_json::from_str::<Value>(&request).expect("json")["nonce"]
        .as_str()
        .expect("nonce")
        .to_string();

    // Another machine carries it to activation and the response back.
    let response = license_client::submit_offline_request(&act, &request)
        .await
        .expect("answered");
    let activation = offline
        .read_offline_response(&response, &device(3), Utc::now())
        .expect("accepted");
    assert_eq!(activation.claims.nonce.as_deref(), Some(nonce.as_str()));
    assert_eq!(activation.license_id().to_string(), license.id);
    assert_eq!(
        offline
            .load_activation(&device(3), Utc::now())
            .expect("stored"),
        activation
    );
    // The seat is live at the server for this device.
    let online = Client::new(&act, NOWHERE, &product, &license.key).expect("client");
    let v = online
        .validate(Some(&device(3)), &["f1"], Utc::now())
        .await
        .expect("validated");
    assert_eq!(
        (v.code.as_str(), v.activation_id),
        ("VALID", Some(activation.activation_id()))
    );
    // The same request again: the nonce was answered.
    match license_client::submit_offline_request(&act, &request).await {
        Err(Error::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (409, "NONCE_REUSED"))
        }
        other => panic!("a reused nonce is refused, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(store.dir());
    stack.stop().await;
}

/// `action` (`suspend`, `revoke`) on license `id` at issuance; the
/// client's next validations of device 4 until one answers `code` (or 15 s).
async fn change_and_validate(
    stack: &Stack,
    client: &Client,
    id: &str,
    action: &str,
    reason: &str,
    code: &str,
) -> license_client::Validation {
    let (s, b) = stack
        .post(
            Svc::Issuance,
            &format!("/v1/licenses/{id}/{action}"),
            &json!({ "reason": reason }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    eventually(
        Duration::from_secs(15),
        || async {
            client
                .validate(Some(&device(4)), &[], Utc::now())
                .await
                .expect("validate answers")
        },
        |v| v.code == code,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_license_suspended_then_revoked_at_issuance_is_seen_at_the_next_validate_and_sync() {
    let stack = Stack::start(&[Svc::Activation, Svc::Grants]).await;
    let (act, g) = (stack.url(Svc::Activation), stack.url(Svc::Grants));
    let product = stack.product(json!({"max_activations": 5})).await;
    let license = stack.license(&product, "ACME", json!({})).await;
    let license_id: Uuid = license.id.parse().expect("uuid");
    let (token, client_id) = register_sync_client(&g, &license.id).await;
    let store = temp_store();
    let client = activation_client(&act, &g, &product, &license.key, &store).await;
    client
        .activate(&device(4), Utc::now())
        .await
        .expect("activated");
    let sync_store = temp_store();
    let grants = sync_client(&g, &product, &token, client_id, &sync_store).await;
    let before = grants.sync(Utc::now()).await.expect("synced");
    assert!(before.online);
    assert!(before.document.may_start(license_id, "f1", Utc::now()));

    let validated = change_and_validate(
        &stack,
        &client,
        &license.id,
        "suspend",
        "unpaid invoice",
        "SUSPENDED",
    )
    .await;
    assert!(!validated.valid, "{validated:?}");
    let synced = eventually(
        Duration::from_secs(15),
        || async { grants.sync(Utc::now()).await.expect("synced") },
        |s| {
            s.document
                .grant(license_id)
                .is_some_and(|g| g.status != contracts::issuance::LicenseStatus::Active)
        },
    )
    .await;
    let grant = synced.document.grant(license_id).expect("grant");
    assert_eq!(grant.status, contracts::issuance::LicenseStatus::Suspended);
    assert!(!synced.document.may_start(license_id, "f1", Utc::now()));
    assert!(!synced.document.may_continue(license_id, "f1"));

    // Revoked next: the seat ends, and validate, the file check and the
    // grant document all say so.
    let validated = change_and_validate(
        &stack,
        &client,
        &license.id,
        "revoke",
        "contract ended",
        "REVOKED",
    )
    .await;
    assert_eq!(validated.code, "REVOKED");
    let file = client
        .load_activation(&device(4), Utc::now())
        .expect("the file still verifies offline")
        .file;
    let check = eventually(
        Duration::from_secs(15),
        || async { client.check_file_online(&file).await.expect("checked") },
        |c| c.code == "REVOKED",
    )
    .await;
    assert_eq!((check.valid, check.code.as_str()), (false, "REVOKED"));
    let synced = eventually(
        Duration::from_secs(15),
        || async { grants.sync(Utc::now()).await.expect("synced") },
        |s| {
            s.document
                .grant(license_id)
                .is_some_and(|g| g.status == contracts::issuance::LicenseStatus::Revoked)
        },
    )
    .await;
    assert_eq!(
        synced.document.grant(license_id).map(|g| g.status),
        Some(contracts::issuance::LicenseStatus::Revoked)
    );
    let _ = std::fs::remove_dir_all(store.dir());
    let _ = std::fs::remove_dir_all(sync_store.dir());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_grant_sync_stopped_the_last_document_serves_until_valid_until_and_not_after() {
    let stack = Stack::start(&[]).await;
    let grants = start_grant_sync(&stack.infra, &stack.prefix).await;
    let g = grants.url();
    let product = stack.product(json!({"offline_grace_hours": 24})).await;
    let license = stack
        .issue(
            &json!({"product": product, "customer": "ACME", "kind": "formal",
                       "features": ["f1"]}),
        )
        .await;
    let license_id: Uuid = license.id.parse().expect("uuid");
    let (token, client_id) = register_sync_client(&g, &license.id).await;
    let store = temp_store();
    let client = sync_client(&g, &product, &token, client_id, &store).await;

    let now = Utc::now();
    let online = client.sync(now).await.expect("synced");
    assert!(online.online);
    assert_eq!(online.document.client_id(), client_id);
    assert!(online.document.may_start(license_id, "f1", now));
    let valid_until = online.document.valid_until();
    let minutes = (valid_until - now).num_minutes();
    assert!((23 * 60..=24 * 60).contains(&minutes), "{valid_until}");

    grants.running.stop().await;
    // An hour later, grant sync gone: the kept document, verified again.
    let later = now + chrono::Duration::hours(1);
    let cached = client.sync(later).await.expect("within grace");
    assert!(!cached.online);
    assert_eq!(cached.document, online.document);
    assert!(cached.document.may_start(license_id, "f1", later));
    // A second before valid_until it still holds; at valid_until (its
    // `exp`, whole seconds) it is refused.
    let last = valid_until - chrono::Duration::seconds(1);
    assert!(!client.sync(last).await.expect("still in grace").online);
    match client.sync(valid_until).await {
        Err(Error::Expired { at, .. }) => {
            assert_eq!(at.timestamp(), valid_until.timestamp())
        }
        other => panic!("at valid_until the document is refused, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(store.dir());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_offline_grace_an_online_sync_succeeds_and_the_kept_document_serves_nothing() {
    let stack = Stack::start(&[Svc::Grants]).await;
    let g = stack.url(Svc::Grants);
    let product = stack.product(json!({"offline_grace_hours": 0})).await;
    let license = stack
        .issue(
            &json!({"product": product, "customer": "ACME", "kind": "formal",
                       "features": ["f1"]}),
        )
        .await;
    let license_id: Uuid = license.id.parse().expect("uuid");
    let (token, client_id) = register_sync_client(&g, &license.id).await;
    let store = temp_store();
    let client = sync_client(&g, &product, &token, client_id, &store).await;

    // Grant sync signs exp == now: the answer is current all the same.
    let now = Utc::now();
    let synced = client.sync(now).await.expect("online sync");
    assert!(synced.online);
    assert!(synced.document.may_start(license_id, "f1", now));
    let valid_until = synced.document.valid_until();
    assert!(valid_until <= Utc::now(), "{valid_until}");
    let again = client.sync(Utc::now()).await.expect("online again");
    assert!(again.online);
    // Offline it serves nothing.
    let after = again.document.valid_until() + chrono::Duration::seconds(1);
    assert!(matches!(
        client.cached_grants(after),
        Err(Error::Expired { .. })
    ));
    let _ = std::fs::remove_dir_all(store.dir());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_floating_seat_is_checked_out_renewed_by_heartbeat_and_freed_by_release() {
    let stack = Stack::start(&[Svc::Grants]).await;
    let g = stack.url(Svc::Grants);
    let product = stack.product(json!({"lease_ttl_secs": 300})).await;
    let license = stack
        .issue(
            &json!({"product": product, "customer": "ACME", "kind": "formal",
                       "features": ["f1"], "seats": {"f1": 1}}),
        )
        .await;
    let license_id: Uuid = license.id.parse().expect("uuid");
    let (token, client_id) = register_sync_client(&g, &license.id).await;
    let store = temp_store();
    let client = sync_client(&g, &product, &token, client_id, &store).await;

    let lease = client
        .checkout(license_id, "f1", Utc::now())
        .await
        .expect("checked out");
    assert_eq!(
        (lease.features.clone(), lease.quantity, lease.ttl_secs),
        (vec!["f1".to_string()], 1, 300)
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deadline = client
        .heartbeat(lease.lease_id, Utc::now())
        .await
        .expect("renewed");
    assert!(
        deadline > lease.deadline,
        "{deadline} after {}",
        lease.deadline
    );
    // The one seat is taken.
    match client.checkout(license_id, "f1", Utc::now()).await {
        Err(Error::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (409, "NO_SEATS_AVAILABLE"))
        }
        other => panic!("the second checkout is refused, got {other:?}"),
    }
    // The signed document lists the lease.
    let synced = client.sync(Utc::now()).await.expect("synced");
    assert!(synced
        .document
        .claims
        .leases
        .iter()
        .any(|l| l.lease_id == lease.lease_id));
    client.release(lease.lease_id).await.expect("released");
    let again = client
        .checkout(license_id, "f1", Utc::now())
        .await
        .expect("the seat is free again");
    assert_ne!(again.lease_id, lease.lease_id);
    let _ = std::fs::remove_dir_all(store.dir());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uninstall_returns_a_receipt_that_verifies_and_the_file_no_longer_validates_online() {
    let stack = Stack::start(&[Svc::Activation]).await;
    let act = stack.url(Svc::Activation);
    let product = stack.product(json!({"max_activations": 5})).await;
    let license = stack.license(&product, "ACME", json!({})).await;
    let store = temp_store();
    let client = activation_client(&act, NOWHERE, &product, &license.key, &store).await;
    let activation = client
        .activate(&device(5), Utc::now())
        .await
        .expect("activated");
    let check = client
        .check_file_online(&activation.file)
        .await
        .expect("checked");
    assert_eq!((check.valid, check.code.as_str()), (true, "VALID"));

    let receipt = client
        .uninstall(activation.activation_id())
        .await
        .expect("uninstalled");
    assert_eq!(receipt.claims.activation_id, activation.activation_id());
    assert_eq!(receipt.claims.license_id, activation.license_id());
    assert_eq!(receipt.claims.fingerprint, activation.claims.fingerprint);
    // The receipt verifies on its own under the pinned keys, and is never
    // taken for an activation file.
    let keys = client.activation_keys().expect("pinned");
    assert!(license_client::verify::verify_receipt(&receipt.receipt, keys).is_ok());
    assert!(matches!(
        client.verify_file(&receipt.receipt, &device(5), Utc::now()),
        Err(Error::WrongDocument { .. })
    ));
    // The stored file is gone, and the old file is revoked at the server.
    assert!(matches!(
        client.load_activation(&device(5), Utc::now()),
        Err(Error::Missing(_))
    ));
    let check = client
        .check_file_online(&activation.file)
        .await
        .expect("checked");
    assert_eq!((check.valid, check.code.as_str()), (false, "REVOKED"));
    let v = client
        .validate(Some(&device(5)), &[], Utc::now())
        .await
        .expect("validated");
    assert_eq!(v.code, "NO_ACTIVATION");
    let _ = std::fs::remove_dir_all(store.dir());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_problems_surface_as_server_errors_with_their_stable_code() {
    let stack = Stack::start(&[Svc::Activation]).await;
    let act = stack.url(Svc::Activation);
    let product = stack.product(json!({"max_activations": 1})).await;
    let license = stack.license(&product, "ACME", json!({})).await;

    // A well-formed key that opens no license.
    let unknown = contracts::license_key::format(&[7u8; 17]);
    let stranger_store = temp_store();
    let stranger = activation_client(&act, NOWHERE, &product, &unknown, &stranger_store).await;
    match stranger.activate(&device(6), Utc::now()).await {
        Err(Error::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (401, "BAD_CREDENTIALS"))
        }
        other => panic!("an unknown key is refused, got {other:?}"),
    }
    // One seat: the second device is refused with the seat limit's code.
    let store = temp_store();
    let client = activation_client(&act, NOWHERE, &product, &license.key, &store).await;
    client
        .activate(&device(7), Utc::now())
        .await
        .expect("first device");
    let err = client
        .activate(&device(8), Utc::now())
        .await
        .expect_err("second device refused");
    assert_eq!(err.code(), Some("TOO_MANY_ACTIVATIONS"), "{err}");
    // A fingerprint too small for the policy names its field.
    let one: Components = [("mac".to_string(), "aa:bb".to_string())].into();
    match client.activate(&one, Utc::now()).await {
        Err(Error::Server {
            status,
            code,
            field,
            ..
        }) => assert_eq!(
            (status, code.as_str(), field.as_deref()),
            (422, "FINGERPRINT_TOO_SMALL", Some("fingerprint"))
        ),
        other => panic!("a one-component fingerprint is refused, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(store.dir());
    let _ = std::fs::remove_dir_all(stranger_store.dir());
    stack.stop().await;
}
