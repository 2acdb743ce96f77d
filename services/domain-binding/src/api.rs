//! HTTP API of domain binding. Binding and changing need `issuer`, the
//! operator reset `domain-admin`, the host check `activator`; the public
//! license query is open and rate-limited per address.

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use contracts::domain::*;
use contracts::text::Text;
use serde::Deserialize;
use service_kit::auth::{require, require_or_license, Principal};
use service_kit::command::Caller;
use service_kit::rate_limit::{limit, RateLimiter};
use service_kit::{Json, Problem, Query};
use uuid::Uuid;

use crate::app::{parse_host, view, DomainBinding};
use crate::domain::{check, host, BindingCommand};

pub fn routes(cfg: &mut web::ServiceConfig, public_limit: Arc<RateLimiter>) {
    let issuer = || from_fn(require("issuer"));
    cfg.service(
        web::resource("/v1/registrable-domain")
            .wrap(issuer())
            .route(web::get().to(registrable)),
    )
    .service(
        web::resource("/v1/licenses/{id}/domain")
            .route(web::get().to(get_binding).wrap(issuer()))
            .route(web::put().to(bind).wrap(issuer()))
            .route(
                web::delete()
                    .to(reset)
                    .wrap(from_fn(require("domain-admin"))),
            ),
    )
    .service(
        web::resource("/v1/licenses/{id}/domain/change")
            .wrap(issuer())
            .route(web::post().to(change)),
    )
    .service(
        web::resource("/v1/domain-check")
            .wrap(from_fn(require_or_license("activator")))
            .route(web::get().to(domain_check)),
    )
    .service(
        web::resource("/v1/license-query")
            .wrap(from_fn(limit(public_limit)))
            .route(web::get().to(license_query)),
    );
}

fn license_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw)
        .map_err(|_| Problem::bad_request("INVALID_ID", "id must be a UUID").with_field("id"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostQuery {
    host: HostText,
}

async fn registrable(q: Query<HostQuery>) -> Result<HttpResponse, Problem> {
    let r = parse_host(&q.host, "host")?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "host": r.host, "registrable_domain": r.domain, "suffix": r.suffix,
    })))
}

async fn get_binding(
    app: web::Data<DomainBinding>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = license_id(&id)?;
    app.license(id).await?;
    let b = app.binding(id).await?;
    Ok(HttpResponse::Ok().json(view(id, &b)))
}

async fn bind(
    app: web::Data<DomainBinding>,
    caller: Caller,
    id: web::Path<String>,
    Json(req): Json<BindDomain>,
) -> Result<HttpResponse, Problem> {
    let id = license_id(&id)?;
    let ctx = caller.context(BIND_DOMAIN, &(id, &req));
    let b = app.bind(&ctx, id, &req.domain).await?;
    Ok(HttpResponse::Ok().json(view(id, &b)))
}

async fn change(
    app: web::Data<DomainBinding>,
    caller: Caller,
    id: web::Path<String>,
    Json(req): Json<ChangeDomain>,
) -> Result<HttpResponse, Problem> {
    let id = license_id(&id)?;
    let ctx = caller.context(CHANGE_DOMAIN, &(id, &req));
    let b = app.change(&ctx, id, &req.domain, req.accept_fee).await?;
    Ok(HttpResponse::Ok().json(view(id, &b)))
}

async fn reset(
    app: web::Data<DomainBinding>,
    caller: Caller,
    id: web::Path<String>,
    Json(req): Json<ResetDomain>,
) -> Result<HttpResponse, Problem> {
    let id = license_id(&id)?;
    let ctx = caller.context(RESET_DOMAIN, &(id, &req));
    let b = app
        .unbind(
            &ctx,
            id,
            BindingCommand::Reset {
                reason: req.reason.into(),
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(view(id, &b)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckQuery {
    /// For an API key; a product sends its key in `Authorization: License`
    /// instead, out of URLs and the logs that keep them.
    #[serde(default)]
    license_key: Option<Text<64>>,
    host: HostText,
}

/// The hot path: memory only, no event.
async fn domain_check(
    app: web::Data<DomainBinding>,
    principal: Principal,
    q: Query<CheckQuery>,
) -> Result<HttpResponse, Problem> {
    let entry =
        match (principal.license, &q.license_key) {
            (Some(own), None) => app.cache.by_id(own),
            // The point of the header is to keep keys out of URLs (and the
            // logs and proxies that keep URLs): a second one there is refused.
            (Some(_), Some(_)) => return Err(Problem::unprocessable(
                "INVALID_QUERY",
                "a request authenticated by its license names it in the Authorization header only",
            )
            .with_field("license_key")),
            (None, Some(key)) => {
                let digest = service_kit::replica::key_digest(key, "license_key")?;
                app.cache.by_key(&digest)
            }
            (None, None) => {
                return Err(Problem::unprocessable(
                    "MISSING_FIELD",
                    "license_key is required unless the request carries a license credential",
                )
                .with_field("license_key"))
            }
        };
    let host = host::registrable(&q.host);
    Ok(HttpResponse::Ok().json(check::check(entry.as_ref(), &host, Utc::now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainQuery {
    domain: HostText,
}

/// Open: whether a domain holds a live license — never the key or customer.
async fn license_query(
    app: web::Data<DomainBinding>,
    q: Query<DomainQuery>,
) -> Result<HttpResponse, Problem> {
    let r = parse_host(&q.domain, "domain")?;
    let licenses = app.cache.live_licenses_of(&r.domain, Utc::now());
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "domain": r.domain,
        "licensed": !licenses.is_empty(),
        "licenses": licenses,
    })))
}
