//! The kit's HTTP behaviour as a client sees it, driven in-process.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::{test, web, HttpResponse};
use serde::Deserialize;
use service_kit::{CorrelationId, Json, Problem, ReadyCheck, ServiceApp};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLicense {
    product: String,
    payload: Payload,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    seats: u32,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: u32,
}

async fn create(body: Json<CreateLicense>) -> HttpResponse {
    HttpResponse::Created().json(serde_json::json!({
        "product": body.product,
        "seats": body.payload.seats,
    }))
}

async fn get_one(id: web::Path<u64>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "id": id.into_inner() }))
}

async fn list(q: web::Query<ListQuery>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "limit": q.limit }))
}

async fn echo_correlation(id: CorrelationId) -> HttpResponse {
    HttpResponse::Ok().body(id.0)
}

async fn conflict() -> Result<HttpResponse, Problem> {
    Err(Problem::conflict("LICENSE_EXISTS", "already issued"))
}

async fn leaky() -> Result<HttpResponse, actix_web::Error> {
    Err(actix_web::error::ErrorInternalServerError(
        "password authentication failed for user app",
    ))
}

/// A request that takes its time (a slow query, a long poll).
async fn slow() -> HttpResponse {
    tokio::time::sleep(Duration::from_secs(5)).await;
    HttpResponse::Ok().finish()
}

#[allow(clippy::panic)]
async fn panicking() -> HttpResponse {
    panic!("a bug in a handler")
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/licenses", web::post().to(create))
        .route("/v1/panic", web::get().to(panicking))
        .route("/v1/licenses", web::get().to(list))
        .route("/v1/licenses/{id}", web::get().to(get_one))
        .route("/v1/correlation", web::get().to(echo_correlation))
        .route("/v1/conflict", web::post().to(conflict))
        .route("/v1/leaky", web::get().to(leaky))
        .route("/v1/slow", web::get().to(slow))
        .route("/v1/slow", web::post().to(slow))
        .service(web::resource("/v1/things/{id}").route(web::get().to(get_one)));
}

/// The app as `serve` would run it, without a socket.
macro_rules! service {
    ($app:expr) => {
        test::init_service($app.app(routes)).await
    };
}

/// Status, content type and parsed body of a problem response.
async fn problem(res: ServiceResponse<BoxBody>) -> (StatusCode, String, serde_json::Value) {
    let status = res.status();
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: serde_json::Value =
        serde_json::from_slice(&test::read_body(res).await).unwrap_or(serde_json::Value::Null);
    (status, ct, body)
}

fn post_json(body: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri("/v1/licenses")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_owned())
}

async fn assert_problem(
    app: &ServiceApp,
    req: test::TestRequest,
    status: u16,
    code: &str,
    field: Option<&str>,
) -> serde_json::Value {
    let svc = service!(app);
    let res = test::call_service(&svc, req.to_request()).await;
    let (got_status, ct, body) = problem(res).await;
    assert_eq!(got_status.as_u16(), status, "{body}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:problem:{code}"));
    assert!(body["title"].is_string());
    assert_eq!(body["field"].as_str(), field, "{body}");
    body
}

#[actix_web::test]
async fn valid_json_reaches_the_handler() {
    let app = ServiceApp::new("test");
    let svc = service!(app);
    let req = post_json(r#"{"product":"p","payload":{"seats":3}}"#).to_request();
    let res = test::call_service(&svc, req).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["seats"], 3);
}

#[actix_web::test]
async fn charset_parameter_is_accepted() {
    let app = ServiceApp::new("test");
    let svc = service!(app);
    let req = test::TestRequest::post()
        .uri("/v1/licenses")
        .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
        .set_payload(r#"{"product":"p","payload":{"seats":3}}"#)
        .to_request();
    assert_eq!(
        test::call_service(&svc, req).await.status(),
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn json_errors_are_problems_naming_the_field() {
    let app = ServiceApp::new("test");
    let cases: [(&str, u16, &str, Option<&str>); 7] = [
        ("{", 400, "MALFORMED_JSON", None),
        ("", 400, "MALFORMED_JSON", None),
        (
            r#"{"product":"p","payload":{"seats":1,"foo":1}}"#,
            422,
            "UNKNOWN_FIELD",
            Some("payload.foo"),
        ),
        (
            r#"{"product":"p","payload":{}}"#,
            422,
            "MISSING_FIELD",
            Some("payload.seats"),
        ),
        (
            r#"{"payload":{"seats":1}}"#,
            422,
            "MISSING_FIELD",
            Some("product"),
        ),
        (
            r#"{"product":"p","payload":{"seats":"many"}}"#,
            422,
            "INVALID_FIELD",
            Some("payload.seats"),
        ),
        (
            r#"{"product":"p","payload":{"seats":-1}}"#,
            422,
            "INVALID_FIELD",
            Some("payload.seats"),
        ),
    ];
    for (body, status, code, field) in cases {
        let problem = assert_problem(&app, post_json(body), status, code, field).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.is_empty() && detail.chars().count() <= 201,
            "{problem}"
        );
    }
}

#[actix_web::test]
async fn wrong_or_missing_content_type_is_415() {
    let app = ServiceApp::new("test");
    let body = r#"{"product":"p","payload":{"seats":3}}"#;
    let plain = test::TestRequest::post()
        .uri("/v1/licenses")
        .insert_header((header::CONTENT_TYPE, "text/plain"))
        .set_payload(body);
    assert_problem(&app, plain, 415, "UNSUPPORTED_MEDIA_TYPE", None).await;
    let missing = test::TestRequest::post()
        .uri("/v1/licenses")
        .set_payload(body);
    assert_problem(&app, missing, 415, "UNSUPPORTED_MEDIA_TYPE", None).await;
}

#[actix_web::test]
async fn oversized_bodies_are_413() {
    let app = ServiceApp::new("test").with_body_limit(48);
    let big = format!(
        r#"{{"product":"{}","payload":{{"seats":3}}}}"#,
        "p".repeat(64)
    );
    // Announced by Content-Length.
    assert_problem(&app, post_json(&big), 413, "BODY_TOO_LARGE", None).await;
    // Not announced (as with chunked encoding, or a lying client): caught
    // while reading.
    let lying = post_json(&big).insert_header((header::CONTENT_LENGTH, "10"));
    assert_problem(&app, lying, 413, "BODY_TOO_LARGE", None).await;
    // Within the limit still works.
    let svc = service!(app);
    let ok = post_json(r#"{"product":"p","payload":{"seats":3}}"#).to_request();
    assert_eq!(
        test::call_service(&svc, ok).await.status(),
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn path_and_query_errors_are_problems() {
    let app = ServiceApp::new("test");
    let bad_path = test::TestRequest::get().uri("/v1/licenses/abc");
    assert_problem(&app, bad_path, 400, "INVALID_PATH", Some("id")).await;
    let missing = test::TestRequest::get().uri("/v1/licenses");
    assert_problem(&app, missing, 422, "INVALID_QUERY", Some("limit")).await;
    let invalid = test::TestRequest::get().uri("/v1/licenses?limit=x");
    assert_problem(&app, invalid, 422, "INVALID_QUERY", None).await;

    let svc = service!(app);
    let ok = test::TestRequest::get().uri("/v1/licenses/7").to_request();
    assert_eq!(test::call_service(&svc, ok).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn unknown_route_and_wrong_method_are_problems() {
    let app = ServiceApp::new("test");
    let unknown = test::TestRequest::get().uri("/nope");
    assert_problem(&app, unknown, 404, "NOT_FOUND", None).await;

    // Method guard on the resource (`App::route` style).
    let wrong_method = test::TestRequest::delete().uri("/v1/licenses/7");
    assert_problem(&app, wrong_method, 405, "METHOD_NOT_ALLOWED", None).await;

    // Method guard on a route inside a resource (`web::resource` style):
    // actix answers itself, and the Allow header survives the rewrite.
    let svc = service!(app);
    let req = test::TestRequest::delete().uri("/v1/things/7").to_request();
    let res = test::call_service(&svc, req).await;
    assert_eq!(res.headers().get(header::ALLOW).unwrap(), "GET");
    let (status, ct, body) = problem(res).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["code"], "METHOD_NOT_ALLOWED");

    let post_health = test::TestRequest::post().uri("/healthz");
    assert_problem(&app, post_health, 405, "METHOD_NOT_ALLOWED", None).await;
}

#[actix_web::test]
async fn handler_problems_pass_through_and_internal_text_never_leaks() {
    let app = ServiceApp::new("test");
    let conflict = test::TestRequest::post().uri("/v1/conflict");
    let body = assert_problem(&app, conflict, 409, "LICENSE_EXISTS", None).await;
    assert_eq!(body["detail"], "already issued");

    let leaky = test::TestRequest::get().uri("/v1/leaky");
    let body = assert_problem(&app, leaky, 500, "INTERNAL", None).await;
    assert!(!body.to_string().contains("password"), "{body}");
}

#[actix_web::test]
async fn correlation_id_is_echoed_replaced_or_generated() {
    let app = ServiceApp::new("test");
    let svc = service!(app);
    let call = |id: Option<&str>| {
        let mut req = test::TestRequest::get().uri("/v1/correlation");
        if let Some(id) = id {
            req = req.insert_header(("X-Correlation-Id", id));
        }
        req.to_request()
    };

    // Given a valid one: echoed, and the handler sees the same.
    let res = test::call_service(&svc, call(Some("req-42.a_b"))).await;
    assert_eq!(res.headers().get("x-correlation-id").unwrap(), "req-42.a_b");
    assert_eq!(test::read_body(res).await, "req-42.a_b");

    let uuid = "0190a5f2-6a4c-7c3e-8f5e-0a1b2c3d4e5f";
    let res = test::call_service(&svc, call(Some(uuid))).await;
    assert_eq!(res.headers().get("x-correlation-id").unwrap(), uuid);

    // Given an invalid one: replaced by a fresh UUIDv7.
    for bad in ["has spaces", &"x".repeat(65), "<script>"] {
        let res = test::call_service(&svc, call(Some(bad))).await;
        let echoed = res
            .headers()
            .get("x-correlation-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(echoed, bad);
        assert_eq!(uuid::Uuid::parse_str(&echoed).unwrap().get_version_num(), 7);
        let handler_saw = test::read_body(res).await;
        assert_eq!(handler_saw, echoed.as_bytes().to_vec());
    }

    // Absent: generated, also on error responses.
    let res = test::call_service(&svc, call(None)).await;
    let generated = res
        .headers()
        .get("x-correlation-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(generated).unwrap().get_version_num(),
        7
    );
    let res = test::call_service(&svc, test::TestRequest::get().uri("/nope").to_request()).await;
    assert!(res.headers().contains_key("x-correlation-id"));
}

#[actix_web::test]
async fn metrics_use_the_route_pattern() {
    let app = ServiceApp::new("issuance");
    let svc = service!(app);
    for uri in ["/v1/licenses/123", "/v1/licenses/456", "/no/such/thing/789"] {
        test::call_service(&svc, test::TestRequest::get().uri(uri).to_request()).await;
    }
    app.metrics().inc_counter("licenses_issued_total", &[], 2);

    let res = test::call_service(&svc, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res
        .headers()
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(
        text.contains("# TYPE http_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_requests_total{service="issuance",method="GET",route="/v1/licenses/{id}",status="200"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_requests_total{service="issuance",method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    assert!(text.contains(
        r#"http_request_duration_seconds_count{service="issuance",method="GET",route="/v1/licenses/{id}"} 2"#
    ));
    assert!(text.contains("licenses_issued_total 2"));
    // Raw paths (ids) never become labels; bare digits may appear in values.
    assert!(
        !text.contains("licenses/123") && !text.contains("thing/789"),
        "{text}"
    );
}

#[actix_web::test]
async fn healthz_is_always_ok() {
    let app = ServiceApp::new("test");
    let svc = service!(app);
    let res = test::call_service(&svc, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body, serde_json::json!({ "status": "ok" }));
}

#[actix_web::test]
async fn readyz_without_checks_is_ready() {
    let app = ServiceApp::new("test");
    let svc = service!(app);
    let res = test::call_service(&svc, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[actix_web::test]
async fn readyz_names_an_unreachable_postgres() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://app:hunter2@127.0.0.1:1/issuance")
        .unwrap();
    let app = ServiceApp::new("test").with_ready_check(ReadyCheck::Postgres(pool));
    let svc = service!(app);
    let started = Instant::now();
    let res = test::call_service(&svc, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, ct, body) = problem(res).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["code"], "NOT_READY");
    assert!(body["detail"].as_str().unwrap().contains("postgres"));
    let text = body.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("refused"),
        "{text}"
    );
}

#[actix_web::test]
async fn while_the_database_is_down_its_routes_answer_503_at_once_and_the_others_serve() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://app:hunter2@127.0.0.1:1/issuance")
        .unwrap();
    let app = ServiceApp::new("test")
        .with_ready_check(ReadyCheck::Postgres(pool))
        .with_routes_from_memory(&["/v1/correlation", "/v1/slow"]);
    let svc = service!(app);
    // The probe finds it down (not merely not probed yet).
    let mut known = false;
    for _ in 0..100 {
        let res =
            test::call_service(&svc, test::TestRequest::get().uri("/readyz").to_request()).await;
        let (_, _, body) = problem(res).await;
        if body["detail"] == "failed checks: postgres" {
            known = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(known, "the probe never found the database down");
    let started = Instant::now();
    let res = test::call_service(
        &svc,
        test::TestRequest::get().uri("/v1/licenses").to_request(),
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    let (status, ct, body) = problem(res).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["code"], "STORE_UNAVAILABLE");
    // Every spelling of a route the router accepts is guarded; a path no
    // route serves keeps its 404.
    for (uri, status) in [
        ("/%761/licenses", StatusCode::SERVICE_UNAVAILABLE),
        ("/v1/%6Cicenses/7", StatusCode::SERVICE_UNAVAILABLE),
        ("/v1/nothing-here", StatusCode::NOT_FOUND),
    ] {
        let res = test::call_service(&svc, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), status, "{uri}");
    }
    // A route served from memory and the platform's own still answer.
    for uri in ["/v1/correlation", "/healthz"] {
        let res = test::call_service(&svc, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
    }
    // One served from memory that waits after all (for what is not in
    // memory yet) is answered as the others after a second.
    let started = Instant::now();
    let err = test::try_call_service(&svc, test::TestRequest::get().uri("/v1/slow").to_request())
        .await
        .expect_err("refused");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let res = err.error_response();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
}

#[actix_web::test]
async fn once_the_database_is_found_down_a_waiting_read_is_answered_503_and_a_write_runs_to_its_end(
) {
    // A "server" that accepts and never answers: each probe times out,
    // and the second timeout in a row finds the database down.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(&format!("postgres://app:hunter2@127.0.0.1:{port}/issuance"))
        .unwrap();
    let app = ServiceApp::new("test").with_ready_check(ReadyCheck::Postgres(pool));
    let svc = service!(app);
    let started = Instant::now();
    // What the server sends: the response, or an error rendered by actix
    // (rendered again by the metrics and problem layers first: the
    // rendering must not consume the answer).
    let timed = |req: test::TestRequest| {
        let call = test::try_call_service(&svc, req.uri("/v1/slow").to_request());
        async move {
            let res: HttpResponse = match call.await {
                Ok(res) => res.into(),
                Err(e) => e.error_response(),
            };
            (res, started.elapsed())
        }
    };
    let ((read, read_at), (write, write_at)) = futures::join!(
        timed(test::TestRequest::get()),
        timed(test::TestRequest::post())
    );
    assert!(read_at < Duration::from_secs(4), "{read_at:?}");
    // The read was dropped when the probe found the database down (about
    // 2 s), with the whole refusal: a problem, and when to come back.
    assert_eq!(read.headers().get("retry-after").unwrap(), "1");
    let (status, ct) = (
        read.status(),
        read.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
    );
    let body: serde_json::Value =
        serde_json::from_slice(&actix_web::body::to_bytes(read.into_body()).await.unwrap())
            .unwrap_or_default();
    assert_eq!(
        (status, ct.as_str(), body["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/problem+json",
            Some("STORE_UNAVAILABLE")
        ),
        "{body}"
    );
    // The write may have committed: it is never told "unavailable" for it.
    assert_eq!(write.status(), StatusCode::OK);
    assert!(write_at >= Duration::from_secs(5), "{write_at:?}");
    held.abort();
}

#[actix_web::test]
async fn serve_binds_port_zero_and_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = ServiceApp::new("test").disable_signals();
    let (server, addr) = service_kit::serve(app, "127.0.0.1:0", routes)
        .await
        .unwrap();
    assert_ne!(addr.port(), 0);
    let handle = server.handle();
    let running = tokio::spawn(server);

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_ascii_lowercase().contains("x-correlation-id:"));
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");

    handle.stop(true).await;
    running.await.unwrap().unwrap();
}

#[actix_web::test]
async fn a_panicking_handler_answers_500_and_is_counted() {
    let app = ServiceApp::new("test");
    let svc = service!(app);
    for _ in 0..2 {
        // A panic becomes an error that actix renders (the request itself
        // cannot be kept aside while routing needs it).
        let err =
            test::try_call_service(&svc, test::TestRequest::get().uri("/v1/panic").to_request())
                .await
                .expect_err("an error for actix to render");
        let res = err.error_response();
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body: serde_json::Value =
            serde_json::from_slice(&actix_web::body::to_bytes(res.into_body()).await.unwrap())
                .unwrap();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ct, "application/problem+json");
        assert_eq!(body["code"], "INTERNAL");
        assert!(!body.to_string().contains("a bug"), "{body}");
    }
    // The worker lives on.
    let res = test::call_service(&svc, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = app.metrics().render();
    assert!(
        text.contains("http_panics_total{service=\"test\"} 2"),
        "{text}"
    );
}

#[actix_web::test]
async fn invented_methods_add_no_metric_series() {
    let app = ServiceApp::new("test");
    let svc = service!(app);
    let series = |text: String| text.lines().filter(|l| !l.starts_with('#')).count();
    let mut sizes = Vec::new();
    for i in 0..50 {
        let method =
            actix_web::http::Method::from_bytes(format!("INVENTED{i}X").as_bytes()).unwrap();
        let req = test::TestRequest::default()
            .method(method)
            .uri(&format!("/v1/unrouted/{i}"))
            .to_request();
        let res = test::call_service(&svc, req).await;
        assert!(res.status().is_client_error(), "{}", res.status());
        sizes.push(series(app.metrics().render()));
    }
    let text = app.metrics().render();
    assert!(!text.contains("INVENTED"), "{text}");
    assert!(text.contains("method=\"OTHER\""), "{text}");
    assert_eq!(
        sizes[1], sizes[49],
        "the exposition grew with invented methods"
    );
}

#[actix_web::test]
async fn control_characters_in_urls_are_refused_before_routing() {
    let app = ServiceApp::new("test");
    assert_problem(
        &app,
        test::TestRequest::get().uri("/v1/licenses/%00"),
        400,
        "INVALID_PATH",
        Some("path"),
    )
    .await;
    assert_problem(
        &app,
        test::TestRequest::get().uri("/v1/licenses?limit=1&x=%00"),
        422,
        "INVALID_QUERY",
        Some("x"),
    )
    .await;
    assert_problem(
        &app,
        post_json(r#"{"product":"p\u0000","payload":{"seats":3}}"#),
        422,
        "INVALID_FIELD",
        Some("product"),
    )
    .await;
}

#[actix_web::test]
async fn the_rate_limit_keys_on_the_client_behind_trusted_proxies_and_on_ipv6_64s() {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use actix_web::middleware::from_fn;
    use contracts::net::Cidr;
    use service_kit::rate_limit::{limit, RateLimiter};

    let limiter = Arc::new(RateLimiter::new(1, 2));
    let app =
        ServiceApp::new("test").with_trusted_proxies(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
    let svc = test::init_service(app.app(move |cfg| {
        cfg.service(
            web::resource("/open")
                .wrap(from_fn(limit(limiter)))
                .route(web::get().to(|| async { HttpResponse::Ok().finish() })),
        );
    }))
    .await;
    // The statuses of requests `(peer, X-Forwarded-For)`, in order.
    macro_rules! statuses {
        ($requests:expr) => {{
            let mut out = Vec::new();
            for (peer, xff) in $requests {
                let peer: &str = peer;
                let xff: Option<&str> = xff;
                let mut req = test::TestRequest::get()
                    .uri("/open")
                    .peer_addr(SocketAddr::new(peer.parse().unwrap(), 5000));
                if let Some(xff) = xff {
                    req = req.insert_header(("X-Forwarded-For", xff));
                }
                out.push(
                    test::call_service(&svc, req.to_request())
                        .await
                        .status()
                        .as_u16(),
                );
            }
            out
        }};
    }
    // Two clients behind one trusted proxy: a burst each.
    for client in ["198.51.100.1", "198.51.100.2"] {
        let hop = format!("6.6.6.6, {client}");
        assert_eq!(
            statuses!([("10.0.0.2", Some(hop.as_str())); 3]),
            [200, 200, 429],
            "{client}"
        );
    }
    // An untrusted peer inventing a new X-Forwarded-For each time is still
    // one client.
    assert_eq!(
        statuses!([
            ("203.0.113.7", Some("1.1.1.1")),
            ("203.0.113.7", Some("1.1.1.2")),
            ("203.0.113.7", Some("1.1.1.3")),
        ]),
        [200, 200, 429]
    );
    // So is an IPv6 client rotating through its /64, and a mapped address
    // is its IPv4 client.
    assert_eq!(
        statuses!([
            ("2001:db8:5:6::1", None),
            ("2001:db8:5:6::2", None),
            ("2001:db8:5:6:ffff::3", None),
            ("2001:db8:5:7::1", None),
        ]),
        [200, 200, 429, 200]
    );
    assert_eq!(
        statuses!([
            ("192.0.2.10", None),
            ("::ffff:192.0.2.10", None),
            ("192.0.2.10", None),
        ]),
        [200, 200, 429]
    );
}
