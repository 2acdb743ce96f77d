//! HTTP API of issuance. Handlers turn requests into command envelopes and
//! call the same handler as the Kafka consumer; API keys, whose secrets
//! must never travel through Kafka, are managed over HTTP only.

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use contracts::issuance::*;
use contracts::text::{Name, Text};
use contracts::{CommandEnvelope, CommandOutcome, OutcomeStatus};
use eventstore::StoreError;
use serde::{Deserialize, Serialize};
use service_kit::auth::{require, secret_digest, ADMIN};
use service_kit::command::{store_problem, Caller};
use service_kit::openapi::{codes_of, ProblemCodes, RouteCodes, WRITE_SIDE};
use service_kit::webhooks::WebhookConfig;
use service_kit::{Json, Problem};
use uuid::Uuid;

use crate::commands::{Dispatched, Empty, Issuance};
use crate::domain::api_key::ApiKeyState;
use crate::domain::license::LicenseState;
use crate::domain::{ApiKeyCommand, License, ProductState};
use crate::store::endpoint_of;

const ISSUER: &str = "issuer";

pub fn routes(cfg: &mut web::ServiceConfig) {
    let issuer = || from_fn(require(ISSUER));
    let admin = || from_fn(require(ADMIN));
    cfg.service(
        web::resource("/v1/products")
            .wrap(admin())
            .route(web::post().to(create_product)),
    )
    .service(
        web::resource("/v1/products/{code}")
            .wrap(issuer())
            .route(web::get().to(get_product)),
    )
    .service(
        web::resource("/v1/products/{code}/policy")
            .wrap(admin())
            .route(web::put().to(set_policy)),
    )
    .service(
        web::resource("/v1/licenses")
            .wrap(issuer())
            .route(web::post().to(issue_license)),
    )
    .service(
        web::resource("/v1/licenses/recover")
            .wrap(issuer())
            .route(web::post().to(recover)),
    )
    .service(
        web::resource("/v1/licenses/lookup")
            .wrap(issuer())
            .route(web::post().to(lookup)),
    )
    .service(
        web::resource("/v1/licenses/{id}")
            .wrap(issuer())
            .route(web::get().to(get_license))
            .route(web::delete().to(delete_license)),
    )
    .service(
        web::resource("/v1/licenses/{id}/renew")
            .wrap(issuer())
            .route(web::post().to(renew_license)),
    )
    .service(
        web::resource("/v1/licenses/{id}/features")
            .wrap(issuer())
            .route(web::post().to(amend_features)),
    )
    .service(
        web::resource("/v1/licenses/{id}/suspend")
            .wrap(issuer())
            .route(web::post().to(suspend_license)),
    )
    .service(
        web::resource("/v1/licenses/{id}/reinstate")
            .wrap(issuer())
            .route(web::post().to(reinstate_license)),
    )
    .service(
        web::resource("/v1/licenses/{id}/revoke")
            .wrap(issuer())
            .route(web::post().to(revoke_license)),
    )
    .service(
        web::resource("/v1/commands/{id}")
            .wrap(issuer())
            .route(web::get().to(get_outcome)),
    )
    .service(
        web::resource("/v1/api-keys")
            .wrap(admin())
            .route(web::post().to(create_api_key)),
    )
    .service(
        web::resource("/v1/api-keys/{id}")
            .wrap(admin())
            .route(web::get().to(get_api_key)),
    )
    .service(
        web::resource("/v1/api-keys/{id}/revoke")
            .wrap(admin())
            .route(web::post().to(revoke_api_key)),
    )
    .service(
        web::resource("/v1/api-keys/{id}/rotate")
            .wrap(admin())
            .route(web::post().to(rotate_api_key)),
    )
    .service(
        web::resource("/v1/api-keys/{id}/allowlist")
            .wrap(admin())
            .route(web::put().to(set_allowlist)),
    )
    .service(
        web::resource("/v1/api-keys/{id}/callback")
            .wrap(admin())
            .route(web::put().to(set_callback))
            .route(web::delete().to(remove_callback)),
    )
    .service(
        web::resource("/v1/api-keys/{id}/deliveries")
            .wrap(admin())
            .route(web::get().to(deliveries)),
    )
    .service(
        web::resource("/v1/api-keys/{id}/deliveries/{delivery}/redeliver")
            .wrap(admin())
            .route(web::post().to(redeliver)),
    );
}

/// This service's OpenAPI document, generated from its handlers and types
/// (checked in as `schemas/openapi/issuance.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Issuance", description = "The control plane: products and their policies, licenses and their lifecycle, API keys."),
    paths(
        create_product, get_product, set_policy,
        issue_license, recover, lookup, get_license, delete_license, renew_license,
        amend_features, suspend_license, reinstate_license, revoke_license,
        get_outcome,
        create_api_key, get_api_key, revoke_api_key, rotate_api_key, set_allowlist,
        set_callback, remove_callback, deliveries, redeliver
    ),
    components(schemas(
        service_kit::ProblemBody,
        contracts::text::Text<64>,
        contracts::text::Text<200>,
        contracts::text::Text<1000>,
        contracts::text::Text<2048>,
        contracts::text::Text<16384>
    )),
    modifiers(&WRITE_SIDE, &PROBLEM_CODES)
)]
pub struct ApiDoc;

const PROBLEM_CODES: ProblemCodes = ProblemCodes {
    table: problem_codes,
};

/// What each route answers beyond what its shape implies (see
/// [`ProblemCodes`]).
fn problem_codes() -> Vec<RouteCodes> {
    use crate::domain::{ApiKeyError, LicenseError, ProductError};
    let license = |method, path| codes_of(method, path).refusals::<LicenseError>();
    let key = |method, path| codes_of(method, path).refusals::<ApiKeyError>();
    let key_not_found = (404, "API_KEY_NOT_FOUND");
    vec![
        codes_of("post", "/v1/products").refusals::<ProductError>(),
        codes_of("get", "/v1/products/{code}").codes(&[(404, "PRODUCT_NOT_FOUND")]),
        codes_of("put", "/v1/products/{code}/policy").refusals::<ProductError>(),
        license("post", "/v1/licenses"),
        codes_of("post", "/v1/licenses/recover").codes(&[
            (400, "INVALID_IDEMPOTENCY_KEY"),
            (404, "NO_LICENSES"),
            (409, "CONCURRENT_MODIFICATION"),
            (422, "INVALID_ACTIVATION_FILE"),
            (422, "INVALID_FINGERPRINT"),
            (422, "INVALID_RECOVERY"),
        ]),
        codes_of("post", "/v1/licenses/lookup").codes(&[
            (404, "LICENSE_NOT_FOUND"),
            (422, "INVALID_LICENSE_KEY"),
            (422, "KEY_CHECK_FAILED"),
        ]),
        codes_of("get", "/v1/licenses/{id}").codes(&[(404, "LICENSE_NOT_FOUND")]),
        license("delete", "/v1/licenses/{id}"),
        license("post", "/v1/licenses/{id}/renew"),
        license("post", "/v1/licenses/{id}/features"),
        license("post", "/v1/licenses/{id}/suspend"),
        license("post", "/v1/licenses/{id}/reinstate"),
        license("post", "/v1/licenses/{id}/revoke"),
        codes_of("get", "/v1/commands/{id}").codes(&[(404, "COMMAND_NOT_FOUND")]),
        key("post", "/v1/api-keys"),
        codes_of("get", "/v1/api-keys/{id}").codes(&[key_not_found]),
        key("post", "/v1/api-keys/{id}/revoke"),
        key("post", "/v1/api-keys/{id}/rotate"),
        key("put", "/v1/api-keys/{id}/allowlist"),
        key("put", "/v1/api-keys/{id}/callback"),
        key("delete", "/v1/api-keys/{id}/callback"),
        codes_of("get", "/v1/api-keys/{id}/deliveries")
            .codes(&[key_not_found, (422, "INVALID_LIMIT")]),
        codes_of("post", "/v1/api-keys/{id}/deliveries/{delivery}/redeliver").codes(&[
            key_not_found,
            (400, "INVALID_ID"),
            (404, "DELIVERY_NOT_FOUND"),
            (409, "NO_CALLBACK"),
        ]),
    ]
}

/// A license as answered by issuance. `key` only on issue and recovery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = License)]
pub struct LicenseBody {
    pub id: Uuid,
    /// The license key: only in the answer to issuing and recovering it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key: Option<String>,
    pub product: String,
    #[schema(required = true)]
    pub edition: Option<String>,
    pub customer: String,
    #[schema(required = true)]
    pub contract: Option<String>,
    pub kind: LicenseKind,
    pub modules: Vec<String>,
    pub features: Vec<String>,
    pub status: LicenseStatus,
    pub issued_at: DateTime<Utc>,
    /// Null: perpetual.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When an expired license is reclaimed unless renewed first; null
    /// while it never expires.
    #[schema(required = true)]
    pub reclaim_at: Option<DateTime<Utc>>,
    /// The edition's policy as it stood at issue time.
    #[schema(value_type = PolicyView)]
    pub policy: Policy,
    /// The sequence of the license's last event.
    #[schema(minimum = 0)]
    pub version: i64,
}

impl LicenseBody {
    fn of(s: &LicenseState, version: i64) -> Self {
        Self {
            id: s.id,
            key: None,
            product: s.product.clone(),
            edition: s.edition.clone(),
            customer: s.customer.clone(),
            contract: s.contract.clone(),
            kind: s.kind,
            modules: s.modules.clone(),
            features: s.features.clone(),
            status: s.status,
            issued_at: s.issued_at,
            expires_at: s.expires_at,
            reclaim_at: s.reclaim_at(),
            policy: s.policy.clone(),
            version,
        }
    }
}

fn rejection(outcome: &CommandOutcome) -> Problem {
    service_kit::command::rejection(outcome).unwrap_or_else(Problem::internal)
}

/// Runs an envelope and renders the outcome: `status` on success.
async fn run(
    issuance: &Issuance,
    env: CommandEnvelope,
    status: StatusCode,
    with_key: bool,
) -> Result<HttpResponse, Problem> {
    // Issuing over HTTP names a license id nobody can have used yet.
    let done = if with_key {
        issuance.dispatch_new(&env).await
    } else {
        issuance.dispatch(&env).await
    }
    .map_err(store_problem)?;
    let outcome = done.outcome().clone();
    if outcome.status == OutcomeStatus::Rejected {
        return Err(rejection(&outcome));
    }
    let version = outcome
        .sequence
        .and_then(|s| i64::try_from(s).ok())
        .unwrap_or(0);
    let (body, replayed) = match done {
        Dispatched::License(e) => {
            let s = e.aggregate.state.as_ref().ok_or_else(Problem::internal)?;
            let mut body = LicenseBody::of(s, version);
            if with_key {
                body.key = Some(crate::domain::KeySource::key_for(
                    &*issuance.licenses.services().keys,
                    s.id,
                ));
            }
            (serde_json::to_value(body), e.replayed)
        }
        Dispatched::Product(e) => (serde_json::to_value(&e.aggregate.state), e.replayed),
        Dispatched::Refused(_) => return Err(Problem::internal()),
    };
    let mut res = HttpResponse::build(status);
    res.insert_header((
        "Idempotent-Replayed",
        if replayed { "true" } else { "false" },
    ))
    .insert_header(("X-Command-Id", outcome.command_id.to_string()));
    Ok(res.json(body.map_err(|_| Problem::internal())?))
}

/// Adds a product to the catalog, with its editions, features, modules
/// and policies.
#[utoipa::path(post, path = "/v1/products", params(service_kit::openapi::Idempotency),
    request_body = CreateProduct,
    responses((status = 201, description = "The product as created.", body = ProductState, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["admin"])))]
async fn create_product(
    issuance: web::Data<Issuance>,
    caller: Caller,
    Json(p): Json<CreateProduct>,
) -> Result<HttpResponse, Problem> {
    let env = caller.envelope(CREATE_PRODUCT, p.code.to_string(), &p)?;
    run(&issuance, env, StatusCode::CREATED, false).await
}

/// A product of the catalog.
#[utoipa::path(get, path = "/v1/products/{code}", params(("code" = String, Path, max_length = 200, description = "The product's code")),
    responses((status = 200, description = "The product.", body = ProductState)),
    security(("api_key" = ["issuer"])))]
async fn get_product(
    issuance: web::Data<Issuance>,
    code: web::Path<Name>,
) -> Result<HttpResponse, Problem> {
    let product = issuance
        .product(&code)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::not_found("PRODUCT_NOT_FOUND", "no such product"))?;
    Ok(HttpResponse::Ok().json(product))
}

/// Sets the policy of a product, or of one of its editions; licenses
/// issued later follow it.
#[utoipa::path(put, path = "/v1/products/{code}/policy", params(("code" = String, Path, max_length = 200, description = "The product's code"), service_kit::openapi::Idempotency),
    request_body = SetPolicy,
    responses((status = 200, description = "The product as the command left it.", body = ProductState, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["admin"])))]
async fn set_policy(
    issuance: web::Data<Issuance>,
    caller: Caller,
    code: web::Path<Name>,
    Json(p): Json<SetPolicy>,
) -> Result<HttpResponse, Problem> {
    let env = caller.envelope(SET_POLICY, code.into_inner().into(), &p)?;
    run(&issuance, env, StatusCode::OK, false).await
}

/// Issues a license of a product to a customer.
#[utoipa::path(post, path = "/v1/licenses", params(service_kit::openapi::Idempotency),
    request_body = IssueLicense,
    responses((status = 201, description = "The license as issued, with its `key`.", body = LicenseBody, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["issuer"])))]
async fn issue_license(
    issuance: web::Data<Issuance>,
    caller: Caller,
    Json(spec): Json<IssueLicense>,
) -> Result<HttpResponse, Problem> {
    let env = caller.envelope(ISSUE_LICENSE, Uuid::now_v7().to_string(), &spec)?;
    run(&issuance, env, StatusCode::CREATED, true).await
}

/// A license.
#[utoipa::path(get, path = "/v1/licenses/{id}", params(("id" = Uuid, Path, description = "The license")),
    responses((status = 200, description = "The license (without its key).", body = LicenseBody)),
    security(("api_key" = ["issuer"])))]
async fn get_license(
    issuance: web::Data<Issuance>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let (license, version): (License, i64) = issuance
        .licenses
        .load(&id.to_string())
        .await
        .map_err(store_problem)?;
    let s = license
        .state
        .ok_or_else(|| Problem::not_found("LICENSE_NOT_FOUND", "no such license"))?;
    Ok(HttpResponse::Ok().json(LicenseBody::of(&s, version)))
}

/// Deletes a license: it leaves service for good.
#[utoipa::path(delete, path = "/v1/licenses/{id}", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The license as the command left it.", body = LicenseBody, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["issuer"])))]
async fn delete_license(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    license_action(issuance, caller, id, DELETE_LICENSE, Empty {}).await
}

/// Moves a dated license's expiry later (an expired one is active again).
#[utoipa::path(post, path = "/v1/licenses/{id}/renew", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    request_body = RenewLicense,
    responses((status = 200, description = "The license as the command left it.", body = LicenseBody, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["issuer"])))]
async fn renew_license(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<Uuid>,
    Json(p): Json<RenewLicense>,
) -> Result<HttpResponse, Problem> {
    license_action(issuance, caller, id, RENEW_LICENSE, p).await
}

/// Replaces the modules and features a license grants.
#[utoipa::path(post, path = "/v1/licenses/{id}/features", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    request_body = AmendFeatures,
    responses((status = 200, description = "The license as the command left it.", body = LicenseBody, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["issuer"])))]
async fn amend_features(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<Uuid>,
    Json(p): Json<AmendFeatures>,
) -> Result<HttpResponse, Problem> {
    license_action(issuance, caller, id, AMEND_FEATURES, p).await
}

/// Suspends a license until it is reinstated.
#[utoipa::path(post, path = "/v1/licenses/{id}/suspend", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    request_body = Reason,
    responses((status = 200, description = "The license as the command left it.", body = LicenseBody, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["issuer"])))]
async fn suspend_license(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<Uuid>,
    Json(p): Json<Reason>,
) -> Result<HttpResponse, Problem> {
    license_action(issuance, caller, id, SUSPEND_LICENSE, p).await
}

/// Reinstates a suspended license.
#[utoipa::path(post, path = "/v1/licenses/{id}/reinstate", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The license as the command left it.", body = LicenseBody, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["issuer"])))]
async fn reinstate_license(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    license_action(issuance, caller, id, REINSTATE_LICENSE, Empty {}).await
}

/// Revokes a license: nothing brings it back.
#[utoipa::path(post, path = "/v1/licenses/{id}/revoke", params(("id" = Uuid, Path, description = "The license"), service_kit::openapi::Idempotency),
    request_body = Reason,
    responses((status = 200, description = "The license as the command left it.", body = LicenseBody, headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry with the first outcome, else `false`."), ("X-Command-Id" = Uuid, description = "The command's id, for `GET /v1/commands/{id}`.")))),
    security(("api_key" = ["issuer"])))]
async fn revoke_license(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<Uuid>,
    Json(p): Json<Reason>,
) -> Result<HttpResponse, Problem> {
    license_action(issuance, caller, id, REVOKE_LICENSE, p).await
}

/// A lifecycle command on one license, answered with the license.
async fn license_action<P: Serialize>(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<Uuid>,
    command_type: &'static str,
    payload: P,
) -> Result<HttpResponse, Problem> {
    let env = caller.envelope(command_type, id.to_string(), &payload)?;
    run(&issuance, env, StatusCode::OK, false).await
}

/// The stored outcome of a command, by its id (the `Idempotency-Key` it
/// was sent with, or the envelope's `command_id`).
#[utoipa::path(get, path = "/v1/commands/{id}", params(("id" = Uuid, Path, description = "The command")),
    responses((status = 200, description = "The command's outcome.", body = CommandOutcome)),
    security(("api_key" = ["issuer"])))]
async fn get_outcome(
    issuance: web::Data<Issuance>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let outcome = issuance
        .licenses
        .outcome(*id)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::not_found("COMMAND_NOT_FOUND", "no such command"))?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// Body of `POST /v1/licenses/lookup`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// A license key as printed (dashes and case do not matter).
    pub key: Text<64>,
}

/// Finds a license by its key. A mistyped key fails its check character
/// and is refused before any lookup.
#[utoipa::path(post, path = "/v1/licenses/lookup",
    request_body = Lookup,
    responses((status = 200, description = "The license (without its key).", body = LicenseBody)),
    security(("api_key" = ["issuer"])))]
async fn lookup(
    issuance: web::Data<Issuance>,
    Json(l): Json<Lookup>,
) -> Result<HttpResponse, Problem> {
    let normalized = crate::domain::license_key::normalize(&l.key).map_err(|e| {
        let code = match e {
            crate::domain::license_key::KeyError::Check => "KEY_CHECK_FAILED",
            _ => "INVALID_LICENSE_KEY",
        };
        Problem::unprocessable(code, e.to_string()).with_field("key")
    })?;
    let digest = crate::domain::license_key::digest(&normalized);
    let id = crate::store::license_by_key_digest(&issuance.pool, &digest)
        .await
        .map_err(|e| store_problem(StoreError::Database(e)))?;
    let id =
        id.ok_or_else(|| Problem::not_found("LICENSE_NOT_FOUND", "no license has this key"))?;
    let (license, version) = issuance
        .licenses
        .load(&id.to_string())
        .await
        .map_err(store_problem)?;
    let s = license
        .state
        .ok_or_else(|| Problem::not_found("LICENSE_NOT_FOUND", "no license has this key"))?;
    Ok(HttpResponse::Ok().json(LicenseBody::of(&s, version)))
}

/// Body of `POST /v1/licenses/recover`: exactly one of the three.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// The sales contract the licenses were issued under.
    pub contract: Option<Name>,
    /// An activation file this installation signed.
    pub activation_file: Option<Text<16384>>,
    /// The device's hardware components, as at activation.
    pub fingerprint: Option<contracts::activation::Fingerprint>,
}

/// The licenses a recovery found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Recovered {
    /// Each with its `key`, but for a deleted license.
    licenses: Vec<LicenseBody>,
}

/// Shows the keys of a customer's licenses again; each recovery is an event.
#[utoipa::path(post, path = "/v1/licenses/recover",
    request_body = Recover,
    responses((status = 200, description = "The licenses found.", body = Recovered)),
    security(("api_key" = ["issuer"])))]
async fn recover(
    issuance: web::Data<Issuance>,
    caller: Caller,
    Json(r): Json<Recover>,
) -> Result<HttpResponse, Problem> {
    let db = |e: sqlx::Error| store_problem(StoreError::Database(e));
    let (method, ids, field) = match (&r.contract, &r.activation_file, &r.fingerprint) {
        (Some(c), None, None) if !c.trim().is_empty() && c.len() <= 200 => {
            let ids = crate::store::licenses_by_contract(&issuance.pool, c.trim())
                .await
                .map_err(db)?;
            (RecoveryMethod::Contract, ids, "contract")
        }
        (None, Some(file), None) => {
            let ids = crate::recovery::by_activation_file(&issuance.pool, file)
                .await
                .map_err(db)?
                .ok_or_else(|| {
                    Problem::unprocessable(
                        "INVALID_ACTIVATION_FILE",
                        "not an activation file signed by this installation",
                    )
                    .with_field("activation_file")
                })?;
            (RecoveryMethod::ActivationFile, ids, "activation_file")
        }
        (None, None, Some(fp)) => {
            let components = fp.components().map_err(|e| {
                Problem::unprocessable("INVALID_FINGERPRINT", e.to_string())
                    .with_field("fingerprint")
            })?;
            let ids = crate::recovery::by_device(&issuance.pool, &components)
                .await
                .map_err(db)?;
            (RecoveryMethod::Fingerprint, ids, "fingerprint")
        }
        _ => {
            return Err(Problem::unprocessable(
                "INVALID_RECOVERY",
                "give exactly one of contract, activation_file, fingerprint",
            ))
        }
    };
    if ids.is_empty() {
        return Err(Problem::not_found("NO_LICENSES", "no license matches").with_field(field));
    }
    let mut licenses = Vec::with_capacity(ids.len());
    for id in ids {
        // One audited event per license shown; a distinct command id each.
        let mut ctx = caller.context("RecordKeyRecovery", &(id, method));
        ctx.command_id = Uuid::now_v7();
        let done = issuance
            .licenses
            .execute(
                &id.to_string(),
                crate::domain::LicenseCommand::RecordKeyRecovery(method),
                &ctx,
            )
            .await
            .map_err(store_problem)?;
        if let Some(s) = done.aggregate.state.as_ref() {
            let mut body = LicenseBody::of(
                s,
                done.outcome
                    .sequence
                    .and_then(|v| i64::try_from(v).ok())
                    .unwrap_or(0),
            );
            if done.outcome.status == OutcomeStatus::Accepted {
                body.key = Some(crate::domain::KeySource::key_for(
                    &*issuance.licenses.services().keys,
                    s.id,
                ));
            }
            licenses.push(body);
        }
    }
    Ok(HttpResponse::Ok().json(Recovered { licenses }))
}

// ---------------------------------------------------------------- API keys

/// An API key as answered by issuance: its secret only when created or
/// rotated.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ApiKey)]
struct ApiKeyBody {
    key_id: String,
    #[schema(value_type = Vec<Scope>)]
    scopes: Vec<String>,
    /// Addresses or CIDRs allowed to use the key; empty = anywhere.
    allowlist: Vec<String>,
    /// Where the events of the licenses it issued are delivered, signed.
    #[schema(required = true)]
    callback_url: Option<String>,
    /// The event types delivered there (empty without a callback, or for
    /// a key made before webhooks, whose URL receives nothing until set
    /// again).
    callback_events: Vec<String>,
    /// The callback kept failing: nothing is sent until it is set again.
    callback_disabled: bool,
    #[schema(required = true)]
    remark: Option<String>,
    revoked: bool,
    created_at: DateTime<Utc>,
    /// Only when created or rotated: shown once, stored nowhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    secret_key: Option<String>,
    /// `<SecretId>.<SecretKey>`, the bearer token; shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    token: Option<String>,
}

impl ApiKeyBody {
    fn of(s: &ApiKeyState, secret: Option<String>) -> Self {
        Self {
            key_id: s.key_id.clone(),
            scopes: s.scopes.clone(),
            allowlist: s.allowlist.clone(),
            callback_url: s.callback_url.clone(),
            callback_events: s.callback_events.clone(),
            callback_disabled: s.callback_disabled,
            remark: s.remark.clone(),
            revoked: s.revoked,
            created_at: s.created_at,
            token: secret.as_ref().map(|k| format!("{}.{k}", s.key_id)),
            secret_key: secret,
        }
    }
}

async fn api_key_command(
    issuance: &Issuance,
    caller: &Caller,
    key_id: &str,
    command: ApiKeyCommand,
    digest_of: &impl Serialize,
    secret: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, Problem> {
    let command_type = match &command {
        ApiKeyCommand::Create { .. } => "CreateApiKey",
        ApiKeyCommand::Rotate { .. } => "RotateApiKey",
        ApiKeyCommand::Revoke => "RevokeApiKey",
        ApiKeyCommand::SetAllowlist(_) => "SetAllowlist",
        ApiKeyCommand::SetCallback(Some(_)) => "SetCallback",
        ApiKeyCommand::SetCallback(None) => "RemoveCallback",
        ApiKeyCommand::DisableCallback { .. } => "DisableCallback",
    };
    let ctx = caller.context(command_type, digest_of);
    let done = issuance
        .api_keys
        .execute(key_id, command, &ctx)
        .await
        .map_err(store_problem)?;
    if done.outcome.status == OutcomeStatus::Rejected {
        return Err(rejection(&done.outcome));
    }
    let s = done
        .aggregate
        .state
        .as_ref()
        .ok_or_else(Problem::internal)?;
    // A replayed create or rotate cannot show the secret again.
    let secret = if done.replayed { None } else { secret };
    Ok(HttpResponse::build(status).json(ApiKeyBody::of(s, secret)))
}

/// Creates an API key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/api-keys", params(service_kit::openapi::Idempotency),
    request_body = CreateApiKey,
    responses((status = 201, description = "The key, with `secret_key` and `token` (none when this answers a retry).", body = ApiKeyBody)),
    security(("api_key" = ["admin"])))]
async fn create_api_key(
    issuance: web::Data<Issuance>,
    caller: Caller,
    Json(spec): Json<CreateApiKey>,
    webhooks: web::Data<WebhookConfig>,
) -> Result<HttpResponse, Problem> {
    webhooks.check_callback(spec.callback_url.as_deref())?;
    let key_id = format!("AKID{}", Uuid::new_v4().simple());
    let secret = service_kit::auth::new_secret();
    let command = ApiKeyCommand::Create {
        key_id: key_id.clone(),
        secret_digest: secret_digest(&secret),
        spec: spec.clone(),
    };
    api_key_command(
        &issuance,
        &caller,
        &key_id,
        command,
        &spec,
        Some(secret),
        StatusCode::CREATED,
    )
    .await
}

fn check_key_id(id: &str) -> Result<(), Problem> {
    if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(Problem::bad_request("INVALID_PATH", "not an API key id").with_field("id"))
    }
}

/// An API key (never its secret).
#[utoipa::path(get, path = "/v1/api-keys/{id}", params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9]+$", description = "The key's id (`AKID…`)")),
    responses((status = 200, description = "The key.", body = ApiKeyBody)),
    security(("api_key" = ["admin"])))]
async fn get_api_key(
    issuance: web::Data<Issuance>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    check_key_id(&id)?;
    let (key, _) = issuance.api_keys.load(&id).await.map_err(store_problem)?;
    let s = key
        .state
        .ok_or_else(|| Problem::not_found("API_KEY_NOT_FOUND", "no such API key"))?;
    Ok(HttpResponse::Ok().json(ApiKeyBody::of(&s, None)))
}

/// Revokes an API key: it authenticates nothing from now on.
#[utoipa::path(post, path = "/v1/api-keys/{id}/revoke", params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9]+$", description = "The key's id (`AKID…`)"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The key as the command left it.", body = ApiKeyBody)),
    security(("api_key" = ["admin"])))]
async fn revoke_api_key(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    check_key_id(&id)?;
    api_key_command(
        &issuance,
        &caller,
        &id,
        ApiKeyCommand::Revoke,
        &id.as_str(),
        None,
        StatusCode::OK,
    )
    .await
}

/// Gives an API key a new secret; the old one stops working.
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9]+$", description = "The key's id (`AKID…`)"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The key, with its new `secret_key` and `token` (none when this answers a retry).", body = ApiKeyBody)),
    security(("api_key" = ["admin"])))]
async fn rotate_api_key(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    check_key_id(&id)?;
    let secret = service_kit::auth::new_secret();
    let command = ApiKeyCommand::Rotate {
        secret_digest: secret_digest(&secret),
    };
    api_key_command(
        &issuance,
        &caller,
        &id,
        command,
        &caller.command_id,
        Some(secret),
        StatusCode::OK,
    )
    .await
}

/// Replaces the addresses an API key may be used from.
#[utoipa::path(put, path = "/v1/api-keys/{id}/allowlist", params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9]+$", description = "The key's id (`AKID…`)"), service_kit::openapi::Idempotency),
    request_body = SetAllowlist,
    responses((status = 200, description = "The key as the command left it.", body = ApiKeyBody)),
    security(("api_key" = ["admin"])))]
async fn set_allowlist(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<String>,
    Json(a): Json<SetAllowlist>,
) -> Result<HttpResponse, Problem> {
    check_key_id(&id)?;
    let command = ApiKeyCommand::SetAllowlist(a.clone());
    api_key_command(&issuance, &caller, &id, command, &a, None, StatusCode::OK).await
}

/// Sets or changes the key's callback; it is enabled again.
#[utoipa::path(put, path = "/v1/api-keys/{id}/callback", params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9]+$", description = "The key's id (`AKID…`)"), service_kit::openapi::Idempotency),
    request_body = SetCallback,
    responses((status = 200, description = "The key as the command left it.", body = ApiKeyBody)),
    security(("api_key" = ["admin"])))]
async fn set_callback(
    issuance: web::Data<Issuance>,
    webhooks: web::Data<WebhookConfig>,
    caller: Caller,
    id: web::Path<String>,
    Json(c): Json<SetCallback>,
) -> Result<HttpResponse, Problem> {
    check_key_id(&id)?;
    webhooks.check_callback(Some(&c.callback_url))?;
    let command = ApiKeyCommand::SetCallback(Some(c.clone()));
    api_key_command(&issuance, &caller, &id, command, &c, None, StatusCode::OK).await
}

/// Removes the key's callback; deliveries still waiting are given up
/// (shown `failed` in its log).
#[utoipa::path(delete, path = "/v1/api-keys/{id}/callback", params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9]+$", description = "The key's id (`AKID…`)"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The key as the command left it.", body = ApiKeyBody)),
    security(("api_key" = ["admin"])))]
async fn remove_callback(
    issuance: web::Data<Issuance>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    check_key_id(&id)?;
    let command = ApiKeyCommand::SetCallback(None);
    api_key_command(
        &issuance,
        &caller,
        &id,
        command,
        &id.as_str(),
        None,
        StatusCode::OK,
    )
    .await
}

/// The delivery log of a key's callback: status, attempts and last error
/// of each delivery.
#[utoipa::path(get, path = "/v1/api-keys/{id}/deliveries", params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9]+$", description = "The key's id (`AKID…`)"), service_kit::webhooks::LogQuery),
    responses((status = 200, description = "Its deliveries, newest first.", body = service_kit::webhooks::DeliveryLog)),
    security(("api_key" = ["admin"])))]
async fn deliveries(
    issuance: web::Data<Issuance>,
    id: web::Path<String>,
    q: service_kit::Query<service_kit::webhooks::LogQuery>,
) -> Result<HttpResponse, Problem> {
    check_key_id(&id)?;
    let (key, _) = issuance.api_keys.load(&id).await.map_err(store_problem)?;
    if key.state.is_none() {
        return Err(Problem::not_found("API_KEY_NOT_FOUND", "no such API key"));
    }
    service_kit::webhooks::log_answer(&issuance.pool, &endpoint_of(&id), &q).await
}

/// Sends a delivery again now, with a new retry window (a receiver that
/// lost it, or one that failed for good).
#[utoipa::path(post, path = "/v1/api-keys/{id}/deliveries/{delivery}/redeliver", params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9]+$", description = "The key's id (`AKID…`)"), ("delivery" = Uuid, Path, description = "The delivery")),
    responses((status = 202, description = "Queued: it is sent within a second (once the callback is enabled again, when disabled).", body = service_kit::webhooks::Delivery)),
    security(("api_key" = ["admin"])))]
async fn redeliver(
    issuance: web::Data<Issuance>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (id, delivery) = path.into_inner();
    check_key_id(&id)?;
    let (key, _) = issuance.api_keys.load(&id).await.map_err(store_problem)?;
    if key.state.is_none() {
        return Err(Problem::not_found("API_KEY_NOT_FOUND", "no such API key"));
    }
    service_kit::webhooks::redeliver_answer(&issuance.pool, &endpoint_of(&id), &delivery).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_openapi_document_is_the_generated_one() {
        service_kit::openapi::assert_checked_in(
            <super::ApiDoc as utoipa::OpenApi>::openapi(),
            "issuance",
        );
    }
}
