//! HTTP API of grant sync. License clients (credentials from
//! `POST /v1/clients`, scope `sync-client`) check out leases, heartbeat
//! and sync; operators register clients (`issuer`) and upstreams (`admin`);
//! the JWKS is open.

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use contracts::grants::*;
use service_kit::auth::{require, Principal};
use service_kit::command::Caller;
use service_kit::{Json, Problem};
use uuid::Uuid;

use crate::app::{client_view, resources_of, upstream_view, GrantSync};
use crate::domain::Lease;
use crate::heartbeat::Beat;
use crate::store::{self, ClientRow};

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

fn path_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw)
        .map_err(|_| Problem::bad_request("INVALID_ID", "id must be a UUID").with_field("id"))
}

fn lease_body(
    license_id: Uuid,
    l: &Lease,
    deadline: Option<chrono::DateTime<chrono::Utc>>,
) -> serde_json::Value {
    serde_json::json!({
        "lease_id": l.lease_id,
        "license_id": license_id,
        "client_id": l.client_id,
        "feature": l.feature,
        "features": l.features,
        "quantity": l.quantity,
        "status": l.status,
        "ttl_secs": l.ttl_secs,
        "grace_secs": l.grace_secs,
        "granted_at": l.granted_at,
        "deadline": deadline.unwrap_or(contracts::time::add_secs(l.granted_at, i64::from(l.ttl_secs))),
        "ended_at": l.ended_at,
    })
}

async fn register_client(
    app: web::Data<GrantSync>,
    caller: Caller,
    Json(req): Json<RegisterClient>,
) -> Result<HttpResponse, Problem> {
    let ctx = caller.context(REGISTER_CLIENT, &req);
    let (state, token) = app.register_client(&ctx, req).await?;
    Ok(HttpResponse::Created().json(client_view(&state, token)))
}

async fn get_client(
    app: web::Data<GrantSync>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let state = app.client_state(path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(client_view(&state, None)))
}

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

async fn me(app: web::Data<GrantSync>, principal: Principal) -> Result<HttpResponse, Problem> {
    let c = client_of(&app, &principal).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "client_id": c.client_id, "name": c.name, "licenses": c.licenses,
    })))
}

async fn catalog(app: web::Data<GrantSync>, principal: Principal) -> Result<HttpResponse, Problem> {
    let c = client_of(&app, &principal).await?;
    let products = app.catalog(&c).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "products": products })))
}

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
    Ok(HttpResponse::Ok().json(app.sync(&c, req, cursor).await?))
}

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
    Ok(HttpResponse::Created().json(lease_body(license_id, &lease, None)))
}

async fn client_lease(
    app: &GrantSync,
    principal: &Principal,
    id: &str,
) -> Result<(ClientRow, Uuid), Problem> {
    let lease_id = path_id(id)?;
    Ok((client_of(app, principal).await?, lease_id))
}

async fn get_lease(
    app: web::Data<GrantSync>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (c, lease_id) = client_lease(&app, &principal, &id).await?;
    let (license_id, deadline, lease) = app.lease(&c, lease_id).await?;
    Ok(HttpResponse::Ok().json(lease_body(license_id, &lease, Some(deadline))))
}

async fn release(
    app: web::Data<GrantSync>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (c, lease_id) = client_lease(&app, &caller.principal, &id).await?;
    let ctx = caller.context(RELEASE_LEASE, &(c.client_id, lease_id));
    let (license_id, lease) = app.release(&ctx, &c, lease_id).await?;
    Ok(HttpResponse::Ok().json(lease_body(license_id, &lease, None)))
}

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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "lease_id": lease_id, "deadline": deadline,
    })))
}

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
    let live: Vec<serde_json::Value> = leases
        .live()
        .map(|l| lease_body(license_id, l, None))
        .collect();
    let seats: serde_json::Map<String, serde_json::Value> = grant
        .seats
        .iter()
        .map(|(f, n)| {
            (
                f.clone(),
                serde_json::json!({"seats": n, "in_use": leases.used(f)}),
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "license_id": license_id, "status": grant.status, "seats": seats, "leases": live,
    })))
}

async fn register_upstream(
    app: web::Data<GrantSync>,
    caller: Caller,
    Json(req): Json<RegisterUpstream>,
) -> Result<HttpResponse, Problem> {
    let ctx = caller.context(REGISTER_UPSTREAM, &req);
    let u = app.register_upstream(&ctx, req).await?;
    Ok(HttpResponse::Created().json(upstream_view(&u)))
}

async fn get_upstream(
    app: web::Data<GrantSync>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let u = app.upstream(path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(upstream_view(&u)))
}

async fn check_upstream(
    app: web::Data<GrantSync>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = path_id(&id)?;
    let ctx = caller.context(CHECK_UPSTREAM, &id);
    let u = app.check_upstream(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(upstream_view(&u)))
}

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
    Ok(HttpResponse::Ok().json(upstream_view(&u)))
}
