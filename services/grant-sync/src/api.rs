//! HTTP API of grant sync. License clients (credentials from
//! `POST /v1/clients`, scope `sync-client`) check out leases, heartbeat
//! and sync; operators register clients (`issuer`) and upstreams (`admin`);
//! the JWKS is open.

use std::collections::BTreeMap;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use contracts::grants::*;
use contracts::issuance::LicenseStatus;
use serde::Serialize;
use service_kit::auth::{require, Principal, ADMIN};
use service_kit::command::{Caller, Failure};
use service_kit::openapi::WRITE_SIDE;
use service_kit::{Json, Problem};
use uuid::Uuid;

use crate::app::{
    client_view, resources_of, upstream_view, ClientView, GrantSync, SyncAnswer, UpstreamView,
};
use crate::domain::{Lease, LeaseStatus, Upstream};
use crate::heartbeat::Beat;
use crate::store::{self, ClientRow};
use service_kit::webhooks::WebhookConfig;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let client = || from_fn(require("sync-client"));
    let issuer = || from_fn(require("issuer"));
    let admin = || from_fn(require("admin"));
    cfg.service(
        web::resource("/v1/clients")
            .wrap(issuer())
            .route(web::post().to(register_client)),
    )
    .service(
        web::resource("/v1/clients/me")
            .wrap(client())
            .route(web::get().to(me)),
    )
    .service(
        web::resource("/v1/clients/{id}")
            .wrap(issuer())
            .route(web::get().to(get_client)),
    )
    .service(
        web::resource("/v1/clients/{id}/revoke")
            .wrap(issuer())
            .route(web::post().to(revoke_client)),
    )
    .service(
        web::resource("/v1/clients/{id}/callback")
            .wrap(admin())
            .route(web::put().to(set_callback))
            .route(web::delete().to(remove_callback)),
    )
    .service(
        web::resource("/v1/clients/{id}/deliveries")
            .wrap(admin())
            .route(web::get().to(deliveries)),
    )
    .service(
        web::resource("/v1/clients/{id}/deliveries/{delivery}/redeliver")
            .wrap(admin())
            .route(web::post().to(redeliver)),
    )
    .service(
        web::resource("/v1/catalog")
            .wrap(client())
            .route(web::get().to(catalog)),
    )
    .service(
        web::resource("/v1/sync")
            .wrap(client())
            .route(web::post().to(sync)),
    )
    .service(
        web::resource("/v1/leases")
            .wrap(client())
            .route(web::post().to(checkout)),
    )
    .service(
        web::resource("/v1/leases/{id}")
            .wrap(client())
            .route(web::get().to(get_lease))
            .route(web::delete().to(release)),
    )
    .service(
        web::resource("/v1/leases/{id}/heartbeat")
            .wrap(client())
            .route(web::post().to(heartbeat)),
    )
    .service(
        web::resource("/v1/licenses/{id}/leases")
            .wrap(issuer())
            .route(web::get().to(license_leases)),
    )
    .service(
        web::resource("/v1/upstreams")
            .wrap(admin())
            .route(web::post().to(register_upstream)),
    )
    .service(
        web::resource("/v1/upstreams/{id}")
            .wrap(admin())
            .route(web::get().to(get_upstream)),
    )
    .service(
        web::resource("/v1/upstreams/{id}/check")
            .wrap(admin())
            .route(web::post().to(check_upstream)),
    )
    .service(
        web::resource("/v1/upstreams/{id}/sync")
            .wrap(admin())
            .route(web::post().to(sync_upstream)),
    );
}

/// This service's OpenAPI document, generated from its handlers and types
/// (checked in as `schemas/openapi/grant-sync.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Grant sync", description = "The license server products connect to: license clients, feature leases with heartbeats and grace, the sync protocol with signed grant documents, and the upstream license servers this one syncs from."),
    paths(register_client, me, get_client, revoke_client, set_callback, remove_callback, deliveries, redeliver, catalog, sync, checkout, get_lease, release, heartbeat, license_leases, register_upstream, get_upstream, check_upstream, sync_upstream),
    components(schemas(service_kit::ProblemBody)),
    modifiers(&WRITE_SIDE, &ClientScheme, &OptionalHeartbeat, &PROBLEM_CODES),
)]
pub struct ApiDoc;

/// The problem codes of every route (`modifiers` takes a path, not a call).
const PROBLEM_CODES: service_kit::openapi::ProblemCodes = service_kit::openapi::ProblemCodes {
    table: problem_codes,
};

/// What each route answers beyond what its shape implies (see
/// [`service_kit::openapi::ProblemCodes`]): the refusals of the aggregates
/// its commands reach, its own checks, and — the `client` scheme being
/// this service's own — what the client credentials' check answers.
fn problem_codes() -> Vec<service_kit::openapi::RouteCodes> {
    use crate::domain::{ClientError, LeasesError, UpstreamError};
    use service_kit::openapi::codes_of;
    // The `client` scheme: `require("sync-client")` (an API key's checks),
    // then `client_of` (the license client behind the key).
    const CLIENT: &[(u16, &str)] = &[
        (401, "UNAUTHENTICATED"),
        (401, "BAD_CREDENTIALS"),
        (401, "API_KEY_REVOKED"),
        (401, "CLIENT_REVOKED"),
        (403, "ADDRESS_NOT_ALLOWED"),
        (403, "INSUFFICIENT_SCOPE"),
        (403, "NOT_A_CLIENT"),
        (503, "AUTH_UNAVAILABLE"),
    ];
    // `check_clock`: a clock a policy requires and the client left out, or
    // one set back (recorded as a command of the client's aggregate).
    const CLOCK: &[(u16, &str)] = &[
        (409, "CLOCK_ROLLBACK"),
        (409, "CONCURRENT_MODIFICATION"),
        (422, "CLIENT_TIME_REQUIRED"),
    ];
    // An upstream's stored secret, read before each call to it.
    const SECRET: &[(u16, &str)] = &[
        (409, "UPSTREAM_SECRET_MISSING"),
        (409, "UPSTREAM_SECRET_UNREADABLE"),
    ];
    let invalid_id = (400, "INVALID_ID");
    let client_not_found = (404, "CLIENT_NOT_FOUND");
    vec![
        codes_of("post", "/v1/clients")
            .refusals::<ClientError>()
            .codes(&[(422, "INVALID_CALLBACK_URL")]),
        codes_of("get", "/v1/clients/me").codes(CLIENT),
        codes_of("get", "/v1/clients/{id}").codes(&[invalid_id, client_not_found]),
        codes_of("post", "/v1/clients/{id}/revoke")
            .refusals::<ClientError>()
            .codes(&[invalid_id]),
        codes_of("put", "/v1/clients/{id}/callback")
            .refusals::<ClientError>()
            .codes(&[invalid_id, (422, "INVALID_CALLBACK_URL")]),
        codes_of("delete", "/v1/clients/{id}/callback")
            .refusals::<ClientError>()
            .codes(&[invalid_id]),
        codes_of("get", "/v1/clients/{id}/deliveries").codes(&[
            invalid_id,
            client_not_found,
            (422, "INVALID_LIMIT"),
        ]),
        codes_of("post", "/v1/clients/{id}/deliveries/{delivery}/redeliver").codes(&[
            invalid_id,
            client_not_found,
            (404, "DELIVERY_NOT_FOUND"),
            (409, "NO_CALLBACK"),
        ]),
        codes_of("get", "/v1/catalog").codes(CLIENT),
        codes_of("post", "/v1/sync")
            .codes(CLIENT)
            .codes(CLOCK)
            .codes(&[(400, "INVALID_CURSOR")]),
        codes_of("post", "/v1/leases")
            .refusals::<LeasesError>()
            .codes(CLIENT)
            .codes(CLOCK)
            .codes(&[(403, "LICENSE_NOT_ASSIGNED"), (404, "LICENSE_NOT_FOUND")]),
        codes_of("get", "/v1/leases/{id}")
            .codes(CLIENT)
            .codes(&[invalid_id, (404, "LEASE_NOT_FOUND")]),
        codes_of("delete", "/v1/leases/{id}")
            .refusals::<LeasesError>()
            .codes(CLIENT)
            .codes(&[invalid_id]),
        // The body is read as bytes whatever its media type: one that
        // cannot be read answers actix's 400, normalised as `BAD_REQUEST`
        // (the 415 and `MALFORMED_BODY` its shape implies are never answered).
        codes_of("post", "/v1/leases/{id}/heartbeat")
            .not(&[(415, "UNSUPPORTED_MEDIA_TYPE"), (400, "MALFORMED_BODY")])
            .codes(CLIENT)
            .codes(CLOCK)
            .codes(&[
                invalid_id,
                (400, "BAD_REQUEST"),
                (404, "LEASE_NOT_FOUND"),
                (409, "LEASE_ENDED"),
                (410, "LEASE_EXPIRED"),
            ]),
        codes_of("get", "/v1/licenses/{id}/leases")
            .codes(&[invalid_id, (404, "LICENSE_NOT_FOUND")]),
        codes_of("post", "/v1/upstreams").refusals::<UpstreamError>(),
        codes_of("get", "/v1/upstreams/{id}").codes(&[invalid_id, (404, "UPSTREAM_NOT_FOUND")]),
        codes_of("post", "/v1/upstreams/{id}/check")
            .refusals::<UpstreamError>()
            .codes(SECRET)
            .codes(&[invalid_id]),
        // Its imports are commands of imported licenses, whose refusals
        // are `UpstreamError`s too.
        codes_of("post", "/v1/upstreams/{id}/sync")
            .refusals::<UpstreamError>()
            .codes(SECRET)
            .codes(&[invalid_id, (422, "INVALID_RESOURCE")]),
    ]
}

/// A heartbeat's body may be left out: not required (`Option<Heartbeat>`
/// would say `null` is one, which is refused).
struct OptionalHeartbeat;

impl utoipa::Modify for OptionalHeartbeat {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let body = doc
            .paths
            .paths
            .get_mut("/v1/leases/{id}/heartbeat")
            .and_then(|p| p.post.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(body) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// The `client` security scheme: a license client's credentials.
struct ClientScheme;

impl utoipa::Modify for ClientScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "client",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "A license client's credentials, `Authorization: Bearer \
                             <key_id>.<secret>`: the `token` `POST /v1/clients` answers once \
                             (an API key with the `sync-client` scope). It reaches the \
                             client's licenses only.",
                        ))
                        .build(),
                ),
            );
    }
}

service_kit::problem_responses! {
    Gone => [(
        "410",
        "The lease expired: no heartbeat came within its TTL and grace, and its seats were reclaimed (`LEASE_EXPIRED`).",
    )];
    // A heartbeat's body is read whatever its media type: no 415.
    TooLarge => [("413", "The body is larger than the service takes (`BODY_TOO_LARGE`).")];
}

fn path_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw)
        .map_err(|_| Problem::bad_request("INVALID_ID", "id must be a UUID").with_field("id"))
}

/// A lease.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaseView {
    pub lease_id: Uuid,
    pub license_id: Uuid,
    pub client_id: Uuid,
    /// What was asked for: a feature or a module.
    pub feature: String,
    /// The features it holds seats of.
    pub features: Vec<String>,
    pub quantity: u32,
    pub status: LeaseStatus,
    /// Each heartbeat renews the lease for `ttl_secs`.
    pub ttl_secs: u32,
    /// How long after its deadline a lease without heartbeat is reclaimed.
    pub grace_secs: u32,
    pub granted_at: DateTime<Utc>,
    /// Until when it holds without another heartbeat (grace aside).
    pub deadline: DateTime<Utc>,
    /// Null while live.
    #[schema(required = true)]
    pub ended_at: Option<DateTime<Utc>>,
}

fn lease_view(license_id: Uuid, l: &Lease, deadline: Option<DateTime<Utc>>) -> LeaseView {
    LeaseView {
        lease_id: l.lease_id,
        license_id,
        client_id: l.client_id,
        feature: l.feature.clone(),
        features: l.features.clone(),
        quantity: l.quantity,
        status: l.status,
        ttl_secs: l.ttl_secs,
        grace_secs: l.grace_secs,
        granted_at: l.granted_at,
        deadline: deadline.unwrap_or(contracts::time::add_secs(
            l.granted_at,
            i64::from(l.ttl_secs),
        )),
        ended_at: l.ended_at,
    }
}

/// An upstream's view, which every registered upstream has.
fn upstream_answer(u: &Upstream) -> Result<UpstreamView, Problem> {
    upstream_view(u).ok_or_else(|| Failure::internal("a registered upstream's state").into())
}

/// Registers a license client; its token is shown once, in this answer.
#[utoipa::path(post, path = "/v1/clients", params(service_kit::openapi::Idempotency),
    request_body = RegisterClient,
    responses((status = 201, description = "The client, with its `token` (not on a replay).", body = ClientView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["issuer"])))]
async fn register_client(
    app: web::Data<GrantSync>,
    webhooks: web::Data<WebhookConfig>,
    principal: Principal,
    caller: Caller,
    Json(req): Json<RegisterClient>,
) -> Result<HttpResponse, Problem> {
    if req.callback_url.is_some() && !principal.scopes.iter().any(|s| s == ADMIN) {
        // A callback receives every event of the client's licenses, some
        // beyond what the issuer scope reads (activations): as an API
        // key's, the administrator's to set.
        return Err(Problem::forbidden(
            "INSUFFICIENT_SCOPE",
            "a callback_url needs the admin scope",
        )
        .with_field("callback_url"));
    }
    webhooks.check_callback(req.callback_url.as_deref())?;
    let ctx = caller.context(REGISTER_CLIENT, &req);
    let (state, token) = app.register_client(&ctx, req).await?;
    Ok(HttpResponse::Created().json(client_view(&state, token)))
}

/// A license client.
#[utoipa::path(get, path = "/v1/clients/{id}", params(("id" = Uuid, Path, description = "The client")),
    responses((status = 200, description = "The client.", body = ClientView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["issuer"])))]
async fn get_client(
    app: web::Data<GrantSync>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let state = app.client_state(path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(client_view(&state, None)))
}

/// Revokes a license client: its credentials stop working, its leases end.
#[utoipa::path(post, path = "/v1/clients/{id}/revoke", params(("id" = Uuid, Path, description = "The client"), service_kit::openapi::Idempotency),
    request_body = RevokeClient,
    responses((status = 200, description = "The client as the command left it.", body = ClientView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["issuer"])))]
async fn revoke_client(
    app: web::Data<GrantSync>,
    caller: Caller,
    id: web::Path<String>,
    Json(req): Json<RevokeClient>,
) -> Result<HttpResponse, Problem> {
    let id = path_id(&id)?;
    let ctx = caller.context(REVOKE_CLIENT, &(id, &req.reason));
    let state = app.revoke_client(&ctx, id, req.reason.into()).await?;
    Ok(HttpResponse::Ok().json(client_view(&state, None)))
}

/// Sets or changes the client's callback; it is enabled again.
#[utoipa::path(put, path = "/v1/clients/{id}/callback", params(("id" = Uuid, Path, description = "The client"), service_kit::openapi::Idempotency),
    request_body = SetClientCallback,
    responses((status = 200, description = "The client as the command left it.", body = ClientView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["admin"])))]
async fn set_callback(
    app: web::Data<GrantSync>,
    webhooks: web::Data<WebhookConfig>,
    caller: Caller,
    id: web::Path<String>,
    Json(req): Json<SetClientCallback>,
) -> Result<HttpResponse, Problem> {
    let id = path_id(&id)?;
    webhooks.check_callback(Some(&req.callback_url))?;
    let ctx = caller.context(SET_CLIENT_CALLBACK, &(id, &req));
    let state = app.set_client_callback(&ctx, id, Some(req)).await?;
    Ok(HttpResponse::Ok().json(client_view(&state, None)))
}

/// Removes the client's callback; deliveries still waiting are given up.
#[utoipa::path(delete, path = "/v1/clients/{id}/callback", params(("id" = Uuid, Path, description = "The client"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The client as the command left it.", body = ClientView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["admin"])))]
async fn remove_callback(
    app: web::Data<GrantSync>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = path_id(&id)?;
    let ctx = caller.context("RemoveClientCallback", &id);
    let state = app.set_client_callback(&ctx, id, None).await?;
    Ok(HttpResponse::Ok().json(client_view(&state, None)))
}

/// The delivery log of a client's callback: status, attempts and last
/// error of each delivery.
#[utoipa::path(get, path = "/v1/clients/{id}/deliveries", params(("id" = Uuid, Path, description = "The client"), service_kit::webhooks::LogQuery),
    responses((status = 200, description = "Its deliveries, newest first.", body = service_kit::webhooks::DeliveryLog), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["admin"])))]
async fn deliveries(
    app: web::Data<GrantSync>,
    id: web::Path<String>,
    q: service_kit::Query<service_kit::webhooks::LogQuery>,
) -> Result<HttpResponse, Problem> {
    let id = path_id(&id)?;
    app.client_state(id).await?;
    service_kit::webhooks::log_answer(&app.pool, &store::endpoint_of(id), &q).await
}

/// Sends a delivery again now, with a new retry window.
#[utoipa::path(post, path = "/v1/clients/{id}/deliveries/{delivery}/redeliver", params(("id" = Uuid, Path, description = "The client"), ("delivery" = Uuid, Path, description = "The delivery")),
    responses((status = 202, description = "Queued: it is sent within a second (once the callback is enabled again, when disabled).", body = service_kit::webhooks::Delivery), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["admin"])))]
async fn redeliver(
    app: web::Data<GrantSync>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (id, delivery) = path.into_inner();
    let id = path_id(&id)?;
    app.client_state(id).await?;
    service_kit::webhooks::redeliver_answer(&app.pool, &store::endpoint_of(id), &delivery).await
}

/// The license client a request's credentials belong to: 403 for
/// credentials of no client, 401 for a revoked one.
async fn client_of(app: &GrantSync, principal: &Principal) -> Result<ClientRow, Problem> {
    match app.client(principal).await? {
        None => Err(Problem::forbidden(
            "NOT_A_CLIENT",
            "these credentials belong to no license client; register one with POST /v1/clients",
        )),
        Some(c) if c.revoked => Err(Problem::unauthorized(
            "CLIENT_REVOKED",
            "this license client was revoked",
        )),
        Some(c) => Ok(c),
    }
}

/// The license client these credentials belong to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeView {
    pub client_id: Uuid,
    pub name: String,
    pub licenses: Vec<Uuid>,
}

/// The license client calling, and its licenses.
#[utoipa::path(get, path = "/v1/clients/me",
    responses((status = 200, description = "The client.", body = MeView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::Unavailable),
    security(("client" = [])))]
async fn me(app: web::Data<GrantSync>, principal: Principal) -> Result<HttpResponse, Problem> {
    let c = client_of(&app, &principal).await?;
    Ok(HttpResponse::Ok().json(MeView {
        client_id: c.client_id,
        name: c.name,
        licenses: c.licenses,
    }))
}

/// The products of a client's licenses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogView {
    pub products: Vec<CatalogProduct>,
}

/// The products of the client's licenses: features and modules.
#[utoipa::path(get, path = "/v1/catalog",
    responses((status = 200, description = "The catalog.", body = CatalogView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::Unavailable),
    security(("client" = [])))]
async fn catalog(app: web::Data<GrantSync>, principal: Principal) -> Result<HttpResponse, Problem> {
    let c = client_of(&app, &principal).await?;
    let products = app.catalog(&c).await?;
    Ok(HttpResponse::Ok().json(CatalogView { products }))
}

/// Syncs a client: changes since its cursor, revocations, and a signed
/// grant document.
///
/// A long poll: with a `cursor` and nothing changed since, it waits for a
/// change up to `wait_ms` (the server's default when absent, capped by its
/// maximum; 0 answers at once), then answers 200 all the same — `changes`
/// and `revocations` empty, a fresh grant document, and a `next_cursor`
/// to sync from. Without a cursor it answers at once, every grant as
/// `grant_added`.
#[utoipa::path(post, path = "/v1/sync",
    request_body = SyncRequest,
    responses((status = 200, description = "The changes (none when the wait ran out), the grants and the signed grant document.", body = SyncAnswer), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("client" = [])))]
async fn sync(
    app: web::Data<GrantSync>,
    principal: Principal,
    Json(req): Json<SyncRequest>,
) -> Result<HttpResponse, Problem> {
    let c = client_of(&app, &principal).await?;
    let cursor = match req.cursor.as_deref() {
        None => None,
        Some(raw) => Some(store::Cursor::decode(raw).ok_or_else(|| {
            Problem::bad_request(
                "INVALID_CURSOR",
                "cursor must be a next_cursor this server returned",
            )
            .with_field("cursor")
        })?),
    };
    let answer: SyncAnswer = app.sync(&c, req, cursor).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// Checks out a lease: seats of a feature (or of every feature a module
/// needs) of one of the client's licenses.
#[utoipa::path(post, path = "/v1/leases", params(service_kit::openapi::Idempotency),
    request_body = CheckoutLease,
    responses((status = 201, description = "The lease.", body = LeaseView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("client" = [])))]
async fn checkout(
    app: web::Data<GrantSync>,
    caller: Caller,
    Json(req): Json<CheckoutLease>,
) -> Result<HttpResponse, Problem> {
    let c = client_of(&app, &caller.principal).await?;
    // The client is part of the request (one client's key never answers
    // another's); its clock reading is not.
    let ctx = caller.context(
        CHECKOUT_LEASE,
        &(c.client_id, req.license_id, &req.feature, req.quantity),
    );
    let license_id = req.license_id;
    let lease = app.checkout(&ctx, &c, req).await?;
    Ok(HttpResponse::Created().json(lease_view(license_id, &lease, None)))
}

async fn client_lease(
    app: &GrantSync,
    principal: &Principal,
    id: &str,
) -> Result<(ClientRow, Uuid), Problem> {
    let lease_id = path_id(id)?;
    Ok((client_of(app, principal).await?, lease_id))
}

/// One of the client's leases, live or ended.
#[utoipa::path(get, path = "/v1/leases/{id}", params(("id" = Uuid, Path, description = "The lease")),
    responses((status = 200, description = "The lease, with its current deadline.", body = LeaseView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("client" = [])))]
async fn get_lease(
    app: web::Data<GrantSync>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (c, lease_id) = client_lease(&app, &principal, &id).await?;
    let (license_id, deadline, lease) = app.lease(&c, lease_id).await?;
    Ok(HttpResponse::Ok().json(lease_view(license_id, &lease, Some(deadline))))
}

/// Releases a lease: its seats are free again.
#[utoipa::path(delete, path = "/v1/leases/{id}", params(("id" = Uuid, Path, description = "The lease"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The lease as the command left it.", body = LeaseView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("client" = [])))]
async fn release(
    app: web::Data<GrantSync>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (c, lease_id) = client_lease(&app, &caller.principal, &id).await?;
    let ctx = caller.context(RELEASE_LEASE, &(c.client_id, lease_id));
    let (license_id, lease) = app.release(&ctx, &c, lease_id).await?;
    Ok(HttpResponse::Ok().json(lease_view(license_id, &lease, None)))
}

/// A renewed lease's new deadline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeartbeatView {
    pub lease_id: Uuid,
    pub deadline: DateTime<Utc>,
}

/// Renews a lease for its TTL (no event: a deadline moves).
#[utoipa::path(post, path = "/v1/leases/{id}/heartbeat", params(("id" = Uuid, Path, description = "The lease")),
    request_body(content = Heartbeat, description = "Optional: an empty body reports no clock. Read as JSON whatever its media type."),
    responses((status = 200, description = "The lease's new deadline.", body = HeartbeatView), service_kit::openapi::Invalid, TooLarge, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, Gone, service_kit::openapi::Unavailable),
    security(("client" = [])))]
async fn heartbeat(
    app: web::Data<GrantSync>,
    principal: Principal,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let (c, lease_id) = client_lease(&app, &principal, &id).await?;
    let beat: Heartbeat = if body.iter().all(u8::is_ascii_whitespace) {
        Heartbeat::default()
    } else {
        service_kit::json::parse(&body)?
    };
    app.check_clock(&c, beat.client_time, None).await?;
    let deadline = match app.heartbeat(&c, lease_id).await? {
        Beat::Renewed(deadline) => deadline,
        Beat::NotFound => return Err(Problem::not_found("LEASE_NOT_FOUND", "no such lease")),
        Beat::Expired => {
            return Err(Problem::new(
                actix_web::http::StatusCode::GONE,
                "LEASE_EXPIRED",
                "the lease expired (no heartbeat within its TTL and grace) and its seats were reclaimed",
            ))
        }
        Beat::Ended(status) => {
            return Err(Problem::conflict(
                "LEASE_ENDED",
                format!("the lease is {status}"),
            ))
        }
    };
    Ok(HttpResponse::Ok().json(HeartbeatView { lease_id, deadline }))
}

/// A feature's seats and how many live leases hold.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeatUse {
    pub seats: u32,
    pub in_use: u32,
}

/// A license's leases and seats.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LicenseLeasesView {
    pub license_id: Uuid,
    pub status: LicenseStatus,
    /// Each granted feature's seats.
    pub seats: BTreeMap<String, SeatUse>,
    /// The live leases (`deadline` here is one TTL after the grant).
    pub leases: Vec<LeaseView>,
}

/// A license's live leases and the use of its seats.
#[utoipa::path(get, path = "/v1/licenses/{id}/leases", params(("id" = Uuid, Path, description = "The license")),
    responses((status = 200, description = "The license's leases.", body = LicenseLeasesView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["issuer"])))]
async fn license_leases(
    app: web::Data<GrantSync>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let license_id = path_id(&id)?;
    let grant = app.grant(license_id).await?;
    let (leases, _) = app
        .leases
        .load(&license_id.to_string())
        .await
        .map_err(service_kit::command::store_problem)?;
    let live: Vec<LeaseView> = leases
        .live()
        .map(|l| lease_view(license_id, l, None))
        .collect();
    let seats: BTreeMap<String, SeatUse> = grant
        .seats
        .iter()
        .map(|(f, n)| {
            (
                f.clone(),
                SeatUse {
                    seats: *n,
                    in_use: leases.used(f),
                },
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(LicenseLeasesView {
        license_id,
        status: grant.status,
        seats,
        leases: live,
    }))
}

/// Registers an upstream license server this one syncs from (its secret is
/// kept sealed, never shown).
#[utoipa::path(post, path = "/v1/upstreams", params(service_kit::openapi::Idempotency),
    request_body = RegisterUpstream,
    responses((status = 201, description = "The upstream.", body = UpstreamView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["admin"])))]
async fn register_upstream(
    app: web::Data<GrantSync>,
    caller: Caller,
    Json(req): Json<RegisterUpstream>,
) -> Result<HttpResponse, Problem> {
    let ctx = caller.context(REGISTER_UPSTREAM, &req);
    let u = app.register_upstream(&ctx, req).await?;
    Ok(HttpResponse::Created().json(upstream_answer(&u)?))
}

/// An upstream.
#[utoipa::path(get, path = "/v1/upstreams/{id}", params(("id" = Uuid, Path, description = "The upstream")),
    responses((status = 200, description = "The upstream.", body = UpstreamView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["admin"])))]
async fn get_upstream(
    app: web::Data<GrantSync>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let u = app.upstream(path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(upstream_answer(&u)?))
}

/// Checks an upstream: calls it and records how that went (a successful
/// check pins its signing keys).
#[utoipa::path(post, path = "/v1/upstreams/{id}/check", params(("id" = Uuid, Path, description = "The upstream"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The upstream with the check's result in `last_check` (a failed call included).", body = UpstreamView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["admin"])))]
async fn check_upstream(
    app: web::Data<GrantSync>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = path_id(&id)?;
    let ctx = caller.context(CHECK_UPSTREAM, &id);
    let u = app.check_upstream(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(upstream_answer(&u)?))
}

/// Pulls one resource (or all) from an upstream.
#[utoipa::path(post, path = "/v1/upstreams/{id}/sync", params(("id" = Uuid, Path, description = "The upstream"), service_kit::openapi::Idempotency),
    request_body = SyncUpstream,
    responses((status = 200, description = "The upstream with each pull's result in `resources` (a failed call included).", body = UpstreamView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["admin"])))]
async fn sync_upstream(
    app: web::Data<GrantSync>,
    caller: Caller,
    id: web::Path<String>,
    Json(req): Json<SyncUpstream>,
) -> Result<HttpResponse, Problem> {
    let id = path_id(&id)?;
    let resources = resources_of(&req)?;
    let ctx = caller.context(SYNC_UPSTREAM, &(id, &req));
    let u = app.sync_upstream(&ctx, id, &resources).await?;
    Ok(HttpResponse::Ok().json(upstream_answer(&u)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_openapi_document_is_the_generated_one() {
        service_kit::openapi::assert_checked_in(
            <super::ApiDoc as utoipa::OpenApi>::openapi(),
            "grant-sync",
        );
    }
}
