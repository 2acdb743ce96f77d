//! An upstream license server is trusted only as far as its TLS
//! certificate and its signature go: attacked through a proxy that
//! redirects, tampers with answers or presents another CA's certificate,
//! and with destinations the operator did not allow.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use e2e::*;
use serde_json::{json, Value};

/// What the proxy does to what it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Answers 307 to the upstream itself.
    Redirect,
    /// Changes the unsigned `grants` of a sync answer.
    TamperPlain,
    /// Changes a grant inside the signed grant document, signature kept.
    TamperSigned,
}

struct Proxy {
    url: String,
    mode: Arc<Mutex<Mode>>,
}

impl Proxy {
    fn set(&self, m: Mode) {
        *self.mode.lock().expect("mode") = m;
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// A proxy in front of `target` (HTTPS, trusted by the tests' client),
/// over plain HTTP or with `tls`.
async fn proxy(target: String, tls: Option<(String, String)>) -> Proxy {
    let mode = Arc::new(Mutex::new(Mode::Pass));
    let state = (mode.clone(), target, client_with("unused"));
    let handler = move |req: HttpRequest, body: web::Bytes| {
        let (mode, target, client) = state.clone();
        async move {
            let m = *mode.lock().expect("mode");
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string();
            if m == Mode::Redirect {
                return HttpResponse::TemporaryRedirect()
                    .insert_header(("Location", format!("{target}{path}")))
                    .finish();
            }
            let method =
                reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
            let mut fwd = client
                .request(method, format!("{target}{path}"))
                .body(body.to_vec());
            if let Some(a) = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
            {
                fwd = fwd.header("authorization", a);
            }
            if let Some(c) = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
            {
                fwd = fwd.header("content-type", c);
            }
            let res = fwd.send().await.expect("forwarded");
            let status = res.status().as_u16();
            let mut answer: Value = res.json().await.unwrap_or(Value::Null);
            if path.starts_with("/v1/sync") {
                match m {
                    Mode::TamperPlain => {
                        answer["grants"][0]["features"] = json!(["forged-feature"]);
                    }
                    Mode::TamperSigned => {
                        let doc = answer["grant_document"]
                            .as_str()
                            .expect("document")
                            .to_string();
                        let parts: Vec<&str> = doc.split('.').collect();
                        let mut claims: Value =
                            serde_json::from_slice(&b64().decode(parts[1]).expect("b64"))
                                .expect("claims");
                        claims["grants"][0]["features"] = json!(["forged-feature"]);
                        let forged = b64().encode(serde_json::to_vec(&claims).expect("json"));
                        answer["grant_document"] =
                            json!(format!("{}.{forged}.{}", parts[0], parts[2]));
                    }
                    _ => {}
                }
            }
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
                .json(answer)
        }
    };
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().default_service(web::to(handler.clone()))
    })
    .workers(1)
    .disable_signals();
    let server = match &tls {
        Some((cert, key)) => server
            .bind_rustls_0_23(
                "127.0.0.1:0",
                service_kit::server::tls_config(cert, key).expect("tls"),
            )
            .expect("bind"),
        None => server.bind("127.0.0.1:0").expect("bind"),
    };
    let addr = server.addrs()[0];
    tokio::spawn(server.run());
    let scheme = if tls.is_some() { "https" } else { "http" };
    Proxy {
        url: format!("{scheme}://{addr}"),
        mode,
    }
}

async fn register_upstream(
    d: &str,
    member: &Value,
    endpoint: &str,
    insecure: bool,
) -> (u16, Value) {
    let token = format!(
        "{}.{}",
        member["key_id"].as_str().expect("key id"),
        member["secret"].as_str().expect("secret")
    );
    call(
        &admin_client(),
        "POST",
        &format!("{d}/v1/upstreams"),
        Some(&json!({"name": "Vendor via proxy", "member_id": member["client_id"], "endpoint": endpoint,
                     "secret": token, "allow_insecure_http": insecure})),
    )
    .await
}

async fn act(d: &str, upstream: &str, what: &str) -> Value {
    let body = (what == "sync").then(|| json!({"resource": "licenses"}));
    let (s, b) = call(
        &admin_client(),
        "POST",
        &format!("{d}/v1/upstreams/{upstream}/{what}"),
        body.as_ref(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_is_trusted_only_as_far_as_its_certificate_and_its_signature() {
    let infra = Infra::get();
    let (vendor_prefix, dist_prefix) = (infra.prefix().await, infra.prefix().await);
    let issuance = start_issuance(&infra, &vendor_prefix).await;
    let vendor = start_grant_sync_configured(&infra, &vendor_prefix, |c| {
        let (cert, key) = test_ca().server("vendor");
        c.common.tls_cert_file = Some(cert);
        c.common.tls_key_file = Some(key);
    })
    .await;
    let dist = start_grant_sync_configured(&infra, &dist_prefix, |c| {
        c.upstream_ca_file = Some(test_ca().ca_file.display().to_string());
        c.upstream_allowed_networks = vec!["127.0.0.0/8".into()];
    })
    .await;
    let (v, d) = (vendor.url(), dist.url());
    let admin = admin_client();
    let (s, lic) = call(
        &admin,
        "POST",
        &format!("{}/v1/licenses", issuance.url()),
        Some(&crate::license_body()),
    )
    .await;
    assert_eq!(s, 201, "{lic}");
    let license = lic["id"].as_str().expect("id").to_string();
    let known = wait_until(Duration::from_secs(15), || async {
        call(
            &admin,
            "GET",
            &format!("{v}/v1/licenses/{license}/leases"),
            None,
        )
        .await
        .0 == 200
    })
    .await;
    assert!(known, "the vendor knows the license");
    let (s, member) = call(
        &admin,
        "POST",
        &format!("{v}/v1/clients"),
        Some(&json!({"name": "Distributor West", "licenses": [license]})),
    )
    .await;
    assert_eq!(s, 201, "{member}");
    let member = json!({
        "client_id": member["client_id"],
        "key_id": member["token"].as_str().and_then(|t| t.split('.').next()),
        "secret": member["token"].as_str().and_then(|t| t.split('.').nth(1)),
    });

    // Plain http only by explicit choice.
    let p = proxy(v.clone(), None).await;
    let (s, b) = register_upstream(&d, &member, &p.url, false).await;
    assert_eq!(
        (s, b["code"].as_str(), b["field"].as_str()),
        (422, Some("INSECURE_ENDPOINT"), Some("endpoint")),
        "{b}"
    );
    let (s, up) = register_upstream(&d, &member, &p.url, true).await;
    assert_eq!(s, 201, "{up}");
    let up = up["upstream_id"].as_str().expect("id").to_string();

    // A redirect is not followed: the upstream behind it is never asked.
    p.set(Mode::Redirect);
    let b = act(&d, &up, "check").await;
    assert_eq!(b["last_check"]["status"], "upstream_error", "{b}");
    assert!(
        b["last_check"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("redirects are not followed")),
        "{b}"
    );

    // Through, the check pins the upstream's keys.
    p.set(Mode::Pass);
    let b = act(&d, &up, "check").await;
    assert_eq!(b["last_check"]["status"], "ok", "{b}");
    let pinned: Vec<String> = b["last_check"]["pinned_keys"]
        .as_array()
        .expect("pinned keys")
        .iter()
        .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
        .collect();
    let (_, jwks) = call(&admin, "GET", &format!("{v}/.well-known/jwks.json"), None).await;
    let served: Vec<String> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(pinned, served);

    // A grant changed inside the signed document: refused, nothing imported.
    p.set(Mode::TamperSigned);
    let b = act(&d, &up, "sync").await;
    assert_eq!(
        b["resources"]["licenses"]["status"], "upstream_error",
        "{b}"
    );
    assert!(
        b["resources"]["licenses"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not verify")),
        "{b}"
    );
    let (s, _) = call(
        &admin,
        "GET",
        &format!("{d}/v1/licenses/{license}/leases"),
        None,
    )
    .await;
    assert_eq!(s, 404, "a refused answer imported nothing");

    // The unsigned fields changed: ignored, what is imported is what the
    // upstream signed.
    p.set(Mode::TamperPlain);
    let b = act(&d, &up, "sync").await;
    assert_eq!(b["resources"]["licenses"]["status"], "ok", "{b}");
    let pd = pool(&dist.db).await;
    let features: Value = sqlx::query_scalar(
        "SELECT payload->'grant'->'features' FROM events WHERE event_type = 'UpstreamLicenseImported'",
    )
    .fetch_one(&pd)
    .await
    .expect("imported");
    assert_eq!(
        features,
        crate::license_body()["features"],
        "the signed grant was imported"
    );

    // Another CA's certificate is not trusted.
    let rogue = TestCa::new("rogue");
    let impostor = proxy(v.clone(), Some(rogue.server("impostor"))).await;
    let (s, imp) = register_upstream(&d, &member, &impostor.url, false).await;
    assert_eq!(s, 201, "{imp}");
    let b = act(&d, imp["upstream_id"].as_str().expect("id"), "check").await;
    assert_eq!(b["last_check"]["status"], "unreachable", "{b}");
    assert!(
        b["last_check"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("certificate")),
        "{b}"
    );

    // Destinations the operator did not allow are never dialled.
    for endpoint in [
        "https://10.255.255.1:9",
        "https://169.254.169.254",
        "https://[::1]:9",
    ] {
        let (s, u) = register_upstream(&d, &member, endpoint, false).await;
        assert_eq!(s, 201, "{u}");
        let b = act(&d, u["upstream_id"].as_str().expect("id"), "check").await;
        assert_eq!(b["last_check"]["status"], "unreachable", "{b}");
        assert!(
            b["last_check"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("refused:")),
            "{endpoint}: {b}"
        );
    }
    issuance.running.stop().await;
    vendor.running.stop().await;
    dist.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_secrets_are_sealed_at_rest_and_a_wrong_key_is_named() {
    let infra = Infra::get();
    let (vendor_prefix, dist_prefix) = (infra.prefix().await, infra.prefix().await);
    let issuance = start_issuance(&infra, &vendor_prefix).await;
    let vendor = start_grant_sync_configured(&infra, &vendor_prefix, |c| {
        let (cert, key) = test_ca().server("vendor");
        c.common.tls_cert_file = Some(cert);
        c.common.tls_key_file = Some(key);
    })
    .await;
    // The distributor, on a database and key file this test restarts it on.
    let dist_db = infra.fresh_db("grants").await;
    let key_file = upstream_secret_key_path(&dist_prefix);
    let signing = signing_key_path(&dist_prefix);
    let dist_config = |key_file: &str| {
        let mut c = grant_sync_config(&infra, &dist_db, &dist_prefix, &signing);
        c.upstream_ca_file = Some(test_ca().ca_file.display().to_string());
        c.upstream_allowed_networks = vec!["127.0.0.0/8".into()];
        c.upstream_secret_key_file = Some(key_file.to_string());
        c
    };
    let options = || grant_sync::Options {
        handle_signals: false,
        ..Default::default()
    };
    let dist = grant_sync::start(dist_config(&key_file), options())
        .await
        .expect("grant sync starts");
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&key_file).expect("the key file was generated");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&key_file).expect("key file");
        assert!(
            text.trim().len() == 64 && text.trim().chars().all(|c| c.is_ascii_hexdigit()),
            "32 bytes as hex"
        );
    }
    let (v, d) = (vendor.url(), dist.url());
    let admin = admin_client();
    let (s, lic) = call(
        &admin,
        "POST",
        &format!("{}/v1/licenses", issuance.url()),
        Some(&crate::license_body()),
    )
    .await;
    assert_eq!(s, 201, "{lic}");
    let license = lic["id"].as_str().expect("id").to_string();
    let known = wait_until(Duration::from_secs(15), || async {
        call(
            &admin,
            "GET",
            &format!("{v}/v1/licenses/{license}/leases"),
            None,
        )
        .await
        .0 == 200
    })
    .await;
    assert!(known, "the vendor knows the license");
    let (s, member) = call(
        &admin,
        "POST",
        &format!("{v}/v1/clients"),
        Some(&json!({"name": "Distributor North", "licenses": [license]})),
    )
    .await;
    assert_eq!(s, 201, "{member}");
    let token = member["token"].as_str().expect("token").to_string();
    let secret_part = token.split('.').nth(1).expect("secret").to_string();
    let member = json!({
        "client_id": member["client_id"],
        "key_id": token.split('.').next(),
        "secret": secret_part,
    });
    let (s, up) = register_upstream(&d, &member, &v, false).await;
    assert_eq!(s, 201, "{up}");
    let up = up["upstream_id"].as_str().expect("id").to_string();

    // The row holds a nonce and a ciphertext, never the secret.
    let pd = pool(&dist_db).await;
    let row = |id: String| {
        let pd = pd.clone();
        async move {
            sqlx::query_as::<_, (String, Option<Vec<u8>>, Option<Vec<u8>>)>(
                "SELECT row_to_json(c)::text, nonce, ciphertext FROM upstream_credentials c \
                 WHERE upstream_id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&pd)
            .await
            .expect("credentials row")
        }
    };
    let (text, nonce, ciphertext) = row(up.clone()).await;
    assert!(
        !text.contains(&secret_part) && !text.contains(&hex::encode(&secret_part)),
        "the secret is stored in the clear: {text}"
    );
    assert_eq!(nonce.as_ref().map(Vec::len), Some(12), "{text}");
    assert_eq!(
        ciphertext.as_ref().map(Vec::len),
        Some(token.len() + 16),
        "{text}"
    );
    assert!(text.contains("\"plaintext_secret\":null"), "{text}");

    // The sealed secret still opens: check and sync work.
    assert_eq!(act(&d, &up, "check").await["last_check"]["status"], "ok");
    let b = act(&d, &up, "sync").await;
    assert_eq!(b["resources"]["licenses"]["status"], "ok", "{b}");
    assert_eq!(b["resources"]["licenses"]["items"], 1, "{b}");

    // A ciphertext copied into another upstream's row does not open there
    // (the upstream id is its associated data): a clear refusal.
    let (s, other) = register_upstream(&d, &member, &v, false).await;
    assert_eq!(s, 201, "{other}");
    let other = other["upstream_id"].as_str().expect("id").to_string();
    sqlx::query(
        "UPDATE upstream_credentials SET nonce = $2, ciphertext = $3 WHERE upstream_id = $1::uuid",
    )
    .bind(&other)
    .bind(&nonce)
    .bind(&ciphertext)
    .execute(&pd)
    .await
    .expect("move the ciphertext");
    let (s, b) = call(
        &admin,
        "POST",
        &format!("{d}/v1/upstreams/{other}/check"),
        None,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("UPSTREAM_SECRET_UNREADABLE")),
        "{b}"
    );
    assert!(!b.to_string().contains(&secret_part), "{b}");

    // A secret stored in plaintext before sealing existed is sealed at the
    // next start-up, and still works.
    sqlx::query(
        "UPDATE upstream_credentials SET nonce = NULL, ciphertext = NULL, plaintext_secret = $2 \
         WHERE upstream_id = $1::uuid",
    )
    .bind(&other)
    .bind(&token)
    .execute(&pd)
    .await
    .expect("a legacy plaintext row");
    dist.stop().await;
    let dist = grant_sync::start(dist_config(&key_file), options())
        .await
        .expect("grant sync restarts");
    let d = dist.url();
    let (text, nonce, _) = row(other.clone()).await;
    assert!(
        !text.contains(&secret_part),
        "not sealed at start-up: {text}"
    );
    assert_eq!(nonce.as_ref().map(Vec::len), Some(12), "{text}");
    assert_eq!(act(&d, &other, "check").await["last_check"]["status"], "ok");
    dist.stop().await;

    // Another key opens none of the stored secrets: the service refuses to
    // start and says why, naming the file and nothing secret.
    let wrong = upstream_secret_key_path(&dist_prefix);
    let Err(e) = grant_sync::start(dist_config(&wrong), options()).await else {
        panic!("grant sync started with the wrong upstream secret key");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("upstream_secret_key_file")
            && msg.contains(&wrong)
            && msg.contains("opens none"),
        "{msg}"
    );
    assert!(!msg.contains(&secret_part), "{msg}");
    let (text, _, _) = row(other.clone()).await;
    assert!(text.contains("\"plaintext_secret\":null"), "{text}");

    issuance.running.stop().await;
    vendor.running.stop().await;
}
