//! HTTP API of domain binding. Binding and changing need `issuer`, the
//! operator reset `domain-admin`, the host check `activator`; the public
//! license query is open and rate-limited per address.

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use contracts::domain::*;
use contracts::text::Text;
use domain_kit::CodedError;
use serde::Deserialize;
use service_kit::auth::{require, require_or_license, Principal};
use service_kit::command::{status_of, Caller};
use service_kit::openapi::{codes_of, ProblemCodes, RouteCodes, WRITE_SIDE};
use service_kit::rate_limit::{limit, RateLimiter};
use service_kit::{Json, Problem, Query};
use uuid::Uuid;

use crate::app::{parse_host, view, BindingView, DomainBinding};
use crate::cache::PublicLicense;
use crate::domain::check::HostCheck;
use crate::domain::{check, host, BindingCommand, BindingError};

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

/// This service's OpenAPI document, generated from its handlers and types
/// (checked in as `schemas/openapi/domain-binding.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Domain binding", description = "Binds a license to its customer's registrable domain and answers host checks."),
    paths(registrable, get_binding, bind, change, reset, domain_check, license_query),
    components(schemas(service_kit::ProblemBody, contracts::text::Text<64>)),
    modifiers(&WRITE_SIDE, &PROBLEM_CODES),
)]
pub struct ApiDoc;

/// The routes answered without the database: served while it is down.
pub const FROM_MEMORY: &[&str] = &[
    "/v1/registrable-domain",
    "/v1/domain-check",
    "/v1/license-query",
];

const PROBLEM_CODES: ProblemCodes = ProblemCodes {
    table: problem_codes,
};

/// What each route answers beyond what its shape implies (see
/// [`ProblemCodes`]): its own checks, and of the binding aggregate's
/// refusals only those its command can meet (`LICENSE_NOT_FOUND` also
/// before the aggregate, from the license replica; `DOMAIN_TAKEN` from
/// the domain claim in the append's transaction, `store::BindingIndex`).
fn problem_codes() -> Vec<RouteCodes> {
    use BindingError::*;
    let bad_id = (400, "INVALID_ID");
    let no_license = (404, "LICENSE_NOT_FOUND");
    let taken = (409, "DOMAIN_TAKEN");
    let live = || vec![Suspended, Revoked, Expired, Reclaimed, LicenseNotFound];
    vec![
        codes_of("get", "/v1/registrable-domain").codes(&host_codes()),
        codes_of("get", "/v1/licenses/{id}/domain").codes(&[bad_id, no_license]),
        codes_of("put", "/v1/licenses/{id}/domain")
            .codes(&[bad_id, no_license, taken])
            .codes(&host_codes())
            .codes(&refusals(
                [NotRequired, AlreadyBound(String::new())]
                    .into_iter()
                    .chain(live()),
            )),
        codes_of("delete", "/v1/licenses/{id}/domain")
            .codes(&[bad_id])
            .codes(&refusals([Reason, NotBound])),
        codes_of("post", "/v1/licenses/{id}/domain/change")
            .codes(&[bad_id, no_license, taken])
            .codes(&host_codes())
            .codes(&refusals(
                [
                    NotBound,
                    SameDomain(String::new()),
                    FeeNotAccepted {
                        amount_minor: 0,
                        currency: String::new(),
                    },
                ]
                .into_iter()
                .chain(live()),
            )),
        codes_of("get", "/v1/domain-check").codes(&[
            (422, "MISSING_FIELD"),
            (422, "INVALID_LICENSE_KEY"),
            (422, "KEY_CHECK_FAILED"),
        ]),
        codes_of("get", "/v1/license-query")
            .codes(&[(429, "RATE_LIMITED")])
            .codes(&host_codes()),
    ]
}

/// The binding aggregate's `errors`, at the statuses their kinds answer.
fn refusals(errors: impl IntoIterator<Item = BindingError>) -> Vec<(u16, &'static str)> {
    errors
        .into_iter()
        .map(|e| (status_of(Some(e.kind())).as_u16(), e.code()))
        .collect()
}

/// What `parse_host` refuses a host with (422, naming the field).
fn host_codes() -> Vec<(u16, &'static str)> {
    use crate::domain::host::HostError::*;
    [
        Empty,
        Scheme,
        Userinfo,
        Path,
        Port,
        Ip,
        Invalid,
        PublicSuffix,
    ]
    .iter()
    .map(|e| (422, e.code()))
    .collect()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HostQuery {
    /// Any host name.
    host: HostText,
}

/// A host's registrable domain (eTLD+1) and public suffix.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RegistrableView {
    host: String,
    registrable_domain: String,
    suffix: String,
}

/// The registrable domain of a host, as bindings key it.
#[utoipa::path(get, path = "/v1/registrable-domain", params(HostQuery),
    responses((status = 200, description = "The host's registrable domain.", body = RegistrableView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::Unavailable),
    security(("api_key" = ["issuer"])))]
async fn registrable(q: Query<HostQuery>) -> Result<HttpResponse, Problem> {
    let r = parse_host(&q.host, "host")?;
    Ok(HttpResponse::Ok().json(RegistrableView {
        host: r.host,
        registrable_domain: r.domain,
        suffix: r.suffix,
    }))
}

/// A license's binding.
#[utoipa::path(get, path = "/v1/licenses/{id}/domain", params(("id" = Uuid, Path, description = "The license")),
    responses((status = 200, description = "The binding.", body = BindingView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["issuer"])))]
async fn get_binding(
    app: web::Data<DomainBinding>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = license_id(&id)?;
    app.license(id).await?;
    let b = app.binding(id).await?;
    Ok(HttpResponse::Ok().json(view(id, &b)))
}

/// Binds the license to the registrable domain of `domain`.
#[utoipa::path(put, path = "/v1/licenses/{id}/domain", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    request_body = BindDomain,
    responses((status = 200, description = "The binding as the command left it.", body = BindingView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["issuer"])))]
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

/// Moves the binding to another registrable domain (a fee once the free
/// changes are used: `accept_fee`).
#[utoipa::path(post, path = "/v1/licenses/{id}/domain/change", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    request_body = ChangeDomain,
    responses((status = 200, description = "The binding as the command left it.", body = BindingView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::PaymentRequired, service_kit::openapi::Unavailable),
    security(("api_key" = ["issuer"])))]
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

/// The operator's reset: the license is bound to nothing.
#[utoipa::path(delete, path = "/v1/licenses/{id}/domain", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    request_body = ResetDomain,
    responses((status = 200, description = "The binding as the command left it.", body = BindingView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["domain-admin"])))]
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct CheckQuery {
    /// For an API key; a product sends its key in `Authorization: License`
    /// instead, out of URLs and the logs that keep them.
    #[serde(default)]
    license_key: Option<Text<64>>,
    host: HostText,
}

/// Whether a license may serve a host (the hot path: memory only, no
/// event).
#[utoipa::path(get, path = "/v1/domain-check", params(CheckQuery),
    responses((status = 200, description = "The verdict; `authorized` false names why in `code`.", body = HostCheck), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = [])))]
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DomainQuery {
    /// Any host of the domain.
    domain: HostText,
}

/// Whether a domain holds a live license, and which products.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct LicenseQueryView {
    domain: String,
    licensed: bool,
    licenses: Vec<PublicLicense>,
}

/// Open: whether a domain holds a live license — never the key or
/// customer. Rate-limited per client address.
#[utoipa::path(get, path = "/v1/license-query", params(DomainQuery),
    responses((status = 200, description = "Whether the domain is licensed.", body = LicenseQueryView), service_kit::openapi::Invalid, service_kit::openapi::RateLimited),
    security(()))]
async fn license_query(
    app: web::Data<DomainBinding>,
    q: Query<DomainQuery>,
) -> Result<HttpResponse, Problem> {
    let r = parse_host(&q.domain, "domain")?;
    let licenses = app.cache.live_licenses_of(&r.domain, Utc::now());
    Ok(HttpResponse::Ok().json(LicenseQueryView {
        domain: r.domain,
        licensed: !licenses.is_empty(),
        licenses,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_openapi_document_is_the_generated_one() {
        service_kit::openapi::assert_checked_in(
            <super::ApiDoc as utoipa::OpenApi>::openapi(),
            "domain-binding",
        );
    }
}
