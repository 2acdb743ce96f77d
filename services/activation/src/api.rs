//! HTTP API of activation. An installed product authenticates with its
//! own license — `Authorization: License <key>`, or `Authorization:
//! Activation <file>` with a live activation file of the license — and
//! reaches that license only; the vendor's services hold an API key with
//! the `activator` scope and reach every license. Trials, which a device
//! asks for before it holds any license, need the API key.

use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage, HttpResponse};
use chrono::{DateTime, Utc};
use contracts::activation::*;
use contracts::decision::Validation;
use contracts::issuance::LicenseKind;
use contracts::text::Text;
use serde::{Deserialize, Serialize};
use service_kit::auth::{require, require_or_license, Principal};
use service_kit::command::Caller;
use service_kit::openapi::WRITE_SIDE;
use service_kit::{Json, Problem};
use uuid::Uuid;

use crate::app::{Activation, FileCode, Issued, ValidateRequest};
use crate::domain::TrialStatus;
use crate::store::SeatRow;

pub const ACTIVATOR: &str = "activator";

/// A license key as typed (the check character decides if it is one).
pub type LicenseKeyText = Text<64>;
/// A signed file (compact JWS) as a caller sends it back.
pub type FileText = Text<16384>;

/// How long `POST /v1/trials` waits for issuance before answering 202.
#[derive(Clone, Copy)]
pub struct TrialWait(pub Duration);

/// Middleware, outside [`require_or_license`]: `Authorization: Activation
/// <file>` makes the caller the holder of the file's license.
async fn file_credential(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let file = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Activation "))
        .map(|f| f.trim().to_owned());
    if let Some(file) = file {
        let Some(app) = req.app_data::<web::Data<Activation>>().cloned() else {
            return Err(Problem::internal().into());
        };
        if file.len() > 16_384 {
            return Err(Problem::unauthorized(
                "BAD_CREDENTIALS",
                "the activation file is not valid",
            )
            .into());
        }
        let license = app
            .holder_of_file(&file)
            .await
            .map_err(Problem::from)?
            .ok_or_else(|| {
                Problem::unauthorized("BAD_CREDENTIALS", "the activation file is not valid")
            })?;
        req.extensions_mut().insert(Principal::of_license(license));
    }
    next.call(req).await
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Routes an installed product calls for its own license.
    macro_rules! product {
        ($path:expr, $route:expr) => {
            web::resource($path)
                .wrap(from_fn(require_or_license(ACTIVATOR)))
                .wrap(from_fn(file_credential))
                .route($route)
        };
    }
    let activator = || from_fn(require(ACTIVATOR));
    // The hottest route first: actix tries resources in order, and every
    // pattern with a `{segment}` before it costs a regex match.
    cfg.service(product!("/v1/validate", web::post().to(validate)))
        .service(product!("/v1/activations", web::post().to(activate)))
        .service(product!(
            "/v1/activations/offline",
            web::post().to(activate_offline)
        ))
        .service(product!("/v1/activations/search", web::post().to(search)))
        .service(product!("/v1/activations/verify", web::post().to(verify)))
        .service(product!(
            "/v1/activations/{id}",
            web::get().to(get_activation)
        ))
        .service(product!(
            "/v1/activations/{id}/file",
            web::get().to(get_file)
        ))
        .service(product!(
            "/v1/activations/{id}/uninstall",
            web::post().to(uninstall)
        ))
        .service(product!(
            "/v1/activations/{id}/migrate",
            web::post().to(migrate)
        ))
        .service(product!(
            "/v1/licenses/{id}/activations",
            web::get().to(license_activations)
        ))
        .service(
            web::resource("/v1/trials")
                .wrap(activator())
                .route(web::post().to(start_trial)),
        )
        .service(
            web::resource("/v1/trials/{id}")
                .wrap(activator())
                .route(web::get().to(get_trial)),
        );
}

/// This service's OpenAPI document, generated from its handlers and types
/// (checked in as `schemas/openapi/activation.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Activation", description = "Device activations with signed activation files, offline activation, uninstall and migration, trials, validation."),
    paths(validate, activate, activate_offline, search, verify, get_activation, get_file, uninstall, migrate, license_activations, start_trial, get_trial),
    components(schemas(service_kit::ProblemBody, contracts::text::Text<512>)),
    modifiers(&WRITE_SIDE, &FileScheme, &PROBLEM_CODES),
)]
pub struct ApiDoc;

/// The routes answered without the database: served while it is down.
pub const FROM_MEMORY: &[&str] = &["/v1/validate"];

/// `modifiers(…)` takes a name only.
const PROBLEM_CODES: service_kit::openapi::ProblemCodes = service_kit::openapi::ProblemCodes {
    table: problem_codes,
};

/// What each route answers beyond what its shape implies (see
/// [`service_kit::openapi::ProblemCodes`]), in the order of [`routes`].
fn problem_codes() -> Vec<service_kit::openapi::RouteCodes> {
    use crate::domain::seats::CLOCK_ROLLBACK;
    use crate::domain::{SeatsError, TrialError};
    use service_kit::openapi::codes_of;
    // `Authorization: Activation <file>` (`file_credential`): a file that
    // is not a live activation file of ours.
    const FILE_AUTH: &[(u16, &str)] = &[(401, "BAD_CREDENTIALS")];
    // The license a body names (`Activation::license_for`): its key, and
    // for a product's credential its own license.
    const LICENSE_FOR: &[(u16, &str)] = &[
        (403, "LICENSE_MISMATCH"),
        (422, "INVALID_LICENSE_KEY"),
        (422, "KEY_CHECK_FAILED"),
    ];
    // A fingerprint read under a policy (`fingerprint_refused`).
    const FINGERPRINT: &[(u16, &str)] =
        &[(422, "FINGERPRINT_TOO_SMALL"), (422, "INVALID_FINGERPRINT")];
    // The license's state, when a live seat's file is signed again
    // (`seats::usable` in `Activation::file`).
    const LICENSE_STATE: &[(u16, &str)] = &[
        (404, "LICENSE_NOT_FOUND"),
        (409, "LICENSE_SUSPENDED"),
        (409, "LICENSE_REVOKED"),
        (409, "LICENSE_EXPIRED"),
        (409, "LICENSE_RECLAIMED"),
    ];
    let id = (400, "INVALID_ID");
    // A product's route: the file credential beside the shared ones.
    let product = |method, path| codes_of(method, path).codes(FILE_AUTH);
    // A seats command: every refusal of the aggregate. Where the command
    // reads the device's clock, a rollback is an event recorded and
    // answered as its refusal, 409 `CLOCK_ROLLBACK`.
    let seats = |method, path| product(method, path).refusals::<SeatsError>();
    vec![
        product("post", "/v1/validate")
            .codes(LICENSE_FOR)
            .codes(FINGERPRINT),
        seats("post", "/v1/activations")
            .codes(LICENSE_FOR)
            .codes(FINGERPRINT)
            .codes(&[(409, CLOCK_ROLLBACK)]),
        seats("post", "/v1/activations/offline")
            .codes(LICENSE_FOR)
            .codes(FINGERPRINT)
            .codes(&[(409, CLOCK_ROLLBACK), (422, "INVALID_NONCE")]),
        product("post", "/v1/activations/search")
            .codes(FINGERPRINT)
            .codes(&[(404, "LICENSE_NOT_FOUND")]),
        product("post", "/v1/activations/verify"),
        product("get", "/v1/activations/{id}").codes(&[id, (404, "ACTIVATION_NOT_FOUND")]),
        product("get", "/v1/activations/{id}/file")
            .codes(LICENSE_STATE)
            .codes(&[
                id,
                (404, "ACTIVATION_NOT_FOUND"),
                (409, "ACTIVATION_REVOKED"),
            ]),
        seats("post", "/v1/activations/{id}/uninstall").codes(&[id]),
        seats("post", "/v1/activations/{id}/migrate")
            .codes(FINGERPRINT)
            .codes(&[id, (409, CLOCK_ROLLBACK)]),
        product("get", "/v1/licenses/{id}/activations").codes(&[id, (404, "LICENSE_NOT_FOUND")]),
        codes_of("post", "/v1/trials")
            .refusals::<TrialError>()
            .codes(FINGERPRINT)
            // The trial's file, signed once it is active.
            .codes(LICENSE_STATE)
            .codes(&[
                (404, "PRODUCT_NOT_FOUND"),
                (409, "ACTIVATION_REVOKED"),
                (409, "TRIAL_FAILED"),
                (422, "CLIENT_TIME_REQUIRED"),
            ]),
        codes_of("get", "/v1/trials/{id}").codes(&[(404, "TRIAL_NOT_FOUND")]),
    ]
}

/// The `activation_file` security scheme: `Authorization: Activation
/// <file>` (see [`file_credential`]).
struct FileScheme;

impl utoipa::Modify for FileScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "activation_file",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "Authorization",
                    "An installed product's live activation file, `Authorization: Activation \
                     <file>`: it reaches the file's license only.",
                ))),
            );
    }
}

fn id_of(raw: &str, field: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::bad_request("INVALID_ID", format!("{field} must be a UUID")).with_field(field)
    })
}

/// The offline request file: what a device without network writes out.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineRequest {
    /// Optional with a license credential (which names the license).
    #[serde(default)]
    pub license_key: Option<LicenseKeyText>,
    pub fingerprint: Fingerprint,
    /// The request file's own value (1-128 characters): a response file
    /// answers it once.
    pub nonce: Text<128>,
    #[serde(with = "contracts::time::strict")]
    pub client_time: DateTime<Utc>,
}

/// Body of `POST /v1/activations/search`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    pub fingerprint: Fingerprint,
}

/// Body of `POST /v1/activations/verify`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// An activation file (compact JWS) as this service signed it.
    pub activation_file: FileText,
}

/// An activation and its activation file, signed now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedView {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub kind: LicenseKind,
    /// The device's fingerprint digest.
    pub fingerprint: String,
    /// When the license expires; null for a perpetual one.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The activation file: a compact JWS (ES256) under a key of this
    /// service's JWKS.
    pub activation_file: String,
}

fn issued_view(i: &Issued) -> IssuedView {
    IssuedView {
        activation_id: i.seat.activation_id,
        license_id: i.license.id,
        kind: i.license.kind,
        fingerprint: i.seat.fingerprint.clone(),
        expires_at: i.expires_at,
        activation_file: i.file.clone(),
    }
}

/// The activation a migration made, and the one it ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MigratedView {
    #[serde(flatten)]
    pub issued: IssuedView,
    pub migrated_from: Uuid,
}

/// A trial's activation and its activation file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrialIssuedView {
    #[serde(flatten)]
    pub issued: IssuedView,
    /// `<product>:<fingerprint digest>`.
    pub trial_id: String,
}

/// The answer to an offline request file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OfflineView {
    pub activation_id: Uuid,
    /// The request file's nonce, which the response file binds.
    pub nonce: String,
    /// The offline response file: an activation file (compact JWS, ES256)
    /// whose claims carry the request's `nonce`.
    pub response_file: String,
}

/// What an uninstall leaves the activation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Uninstalled {
    Uninstalled,
}

/// An uninstalled activation and the proof of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UninstalledView {
    pub activation_id: Uuid,
    pub status: Uninstalled,
    /// The uninstall receipt: a compact JWS (ES256, header `typ`
    /// `uninstall-receipt+jwt`) citing the event that freed the seat.
    pub receipt: String,
}

/// A license's activations, live and ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LicenseActivationsView {
    pub license_id: Uuid,
    pub activations: Vec<SeatRow>,
    /// The activations that are no longer live.
    pub revoked: Vec<Uuid>,
}

/// A device's activations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchView {
    pub activations: Vec<SeatRow>,
}

/// Whether a file may be installed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyView {
    /// `code` is `VALID`.
    pub valid: bool,
    pub code: FileCode,
    /// The activation the file names, once it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub activation_id: Option<Uuid>,
    /// The license the file names, once it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub license_id: Option<Uuid>,
}

/// Issuance's refusal of a trial's license.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrialFailureView {
    pub code: String,
    pub message: String,
}

/// A trial.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrialView {
    /// `<product>:<fingerprint digest>`.
    pub trial_id: String,
    pub product: String,
    /// The license issuance issues (or issued) for the trial.
    pub license_id: Uuid,
    pub status: TrialStatus,
    /// The device's activation, once the trial is active.
    #[schema(required = true)]
    pub activation_id: Option<Uuid>,
    /// Why issuance refused the trial's license; null unless failed.
    #[schema(required = true)]
    pub failure: Option<TrialFailureView>,
    /// The activation file, on `GET /v1/trials/{id}` once the trial is
    /// active and its file can be signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub activation_file: Option<String>,
}

fn trial_view(t: &crate::domain::trial::TrialState) -> TrialView {
    TrialView {
        trial_id: t.trial_id.clone(),
        product: t.product.clone(),
        license_id: t.license_id,
        status: t.status,
        activation_id: t.activation_id,
        failure: t.failure.as_ref().map(|f| TrialFailureView {
            code: f.code.clone(),
            message: f.message.clone(),
        }),
        activation_file: None,
    }
}

/// The answer of `POST /v1/validate` (`contracts::decision::Validation`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValidationView {
    /// `code` is `VALID`.
    pub valid: bool,
    #[schema(schema_with = validation_codes)]
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub license_id: Option<Uuid>,
    /// The device's activation, when the request named a device that
    /// holds one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub activation_id: Option<Uuid>,
    /// Absent for a perpetual license (and a license not found).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The features asked for that the license does not grant
    /// (`FEATURES_MISSING`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_features: Vec<String>,
}

impl From<Validation> for ValidationView {
    fn from(v: Validation) -> Self {
        let Validation {
            valid,
            code,
            license_id,
            activation_id,
            expires_at,
            missing_features,
        } = v;
        Self {
            valid,
            code,
            license_id,
            activation_id,
            expires_at,
            missing_features,
        }
    }
}

/// The codes `contracts::decision::validate` answers (and `NOT_FOUND` for
/// a license not found).
fn validation_codes() -> utoipa::openapi::schema::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("`VALID`, or why not."))
        .enum_values(Some([
            "VALID",
            "NOT_FOUND",
            "SUSPENDED",
            "REVOKED",
            "EXPIRED",
            "CLIENT_TIME_REQUIRED",
            "NO_ACTIVATION",
            "TOO_MANY_ACTIVATIONS",
            "FINGERPRINT_MISMATCH",
            "CLOCK_ROLLBACK",
            "FEATURES_MISSING",
        ]))
        .build()
}

/// Activates a device for a license; an activation the device already
/// holds answers 200 with a fresh file.
#[utoipa::path(post, path = "/v1/activations", params(service_kit::openapi::Idempotency),
    request_body = Activate,
    responses((status = 201, description = "A new activation.", body = IssuedView), (status = 200, description = "The device's existing activation, its file signed again.", body = IssuedView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn activate(
    app: web::Data<Activation>,
    caller: Caller,
    Json(body): Json<Activate>,
) -> Result<HttpResponse, Problem> {
    let license = app
        .license_for(&caller.principal, body.license_key.as_deref())
        .await?;
    let policy = crate::domain::seats::policy(&license);
    let device = app.device(&body.fingerprint, body.client_time, &policy)?;
    // The device's clock reading is no part of what the request asks: a
    // retry a second later is the same request.
    let ctx = caller.context(ACTIVATE, &(&body.license_key, &body.fingerprint));
    let issued = app.activate(&ctx, license, device, false, None).await?;
    let mut res = if issued.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(res.json(issued_view(&issued)))
}

/// Answers an offline request file with a response file (once per nonce).
#[utoipa::path(post, path = "/v1/activations/offline", params(service_kit::openapi::Idempotency),
    request_body = OfflineRequest,
    responses((status = 201, description = "A new activation and its response file.", body = OfflineView), (status = 200, description = "The device's existing activation and a response file for this request.", body = OfflineView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn activate_offline(
    app: web::Data<Activation>,
    caller: Caller,
    Json(req): Json<OfflineRequest>,
) -> Result<HttpResponse, Problem> {
    if req.nonce.is_empty() {
        return Err(
            Problem::unprocessable("INVALID_NONCE", "nonce must be 1-128 characters")
                .with_field("nonce"),
        );
    }
    let license = app
        .license_for(&caller.principal, req.license_key.as_deref())
        .await?;
    let policy = crate::domain::seats::policy(&license);
    let device = app.device(&req.fingerprint, Some(req.client_time), &policy)?;
    let ctx = caller.context(ACTIVATE, &(&req.license_key, &req.fingerprint, &req.nonce));
    let issued = app
        .activate(&ctx, license, device, true, Some(req.nonce.to_string()))
        .await?;
    let mut res = if issued.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(res.json(OfflineView {
        activation_id: issued.seat.activation_id,
        nonce: req.nonce.into_string(),
        response_file: issued.file,
    }))
}

/// An activation.
#[utoipa::path(get, path = "/v1/activations/{id}", params(("id" = Uuid, Path, description = "The activation")),
    responses((status = 200, description = "The activation.", body = SeatRow), service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn get_activation(
    app: web::Data<Activation>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let row: SeatRow = app.seat_row(&principal, id).await?;
    Ok(HttpResponse::Ok().json(row))
}

/// The file of a live activation, signed again (recovery).
#[utoipa::path(get, path = "/v1/activations/{id}/file", params(("id" = Uuid, Path, description = "The activation")),
    responses((status = 200, description = "The activation and its file.", body = IssuedView), service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn get_file(
    app: web::Data<Activation>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let issued = app.file(&principal, id_of(&id, "id")?).await?;
    Ok(HttpResponse::Ok().json(issued_view(&issued)))
}

/// Uninstalls: the seat is free again, and a signed receipt proves it.
#[utoipa::path(post, path = "/v1/activations/{id}/uninstall", params(("id" = Uuid, Path, description = "The activation"), service_kit::openapi::Idempotency),
    responses((status = 200, description = "The activation is uninstalled.", body = UninstalledView), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn uninstall(
    app: web::Data<Activation>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let ctx = caller.context(UNINSTALL, &id);
    let receipt = app.uninstall(&ctx, &caller.principal, id).await?;
    Ok(HttpResponse::Ok().json(UninstalledView {
        activation_id: id,
        status: Uninstalled::Uninstalled,
        receipt,
    }))
}

/// Moves an activation to another device: the old one ends, a new one is
/// made.
#[utoipa::path(post, path = "/v1/activations/{id}/migrate", params(("id" = Uuid, Path, description = "The activation to move"), service_kit::openapi::Idempotency),
    request_body = Migrate,
    responses((status = 201, description = "The new activation and its file.", body = MigratedView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn migrate(
    app: web::Data<Activation>,
    caller: Caller,
    id: web::Path<String>,
    Json(body): Json<Migrate>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let ctx = caller.context(MIGRATE, &(id, &body.fingerprint));
    let issued = app
        .migrate(
            &ctx,
            &caller.principal,
            id,
            &body.fingerprint,
            body.client_time,
        )
        .await?;
    Ok(HttpResponse::Created().json(MigratedView {
        issued: issued_view(&issued),
        migrated_from: id,
    }))
}

/// A license's activations, live and ended.
#[utoipa::path(get, path = "/v1/licenses/{id}/activations", params(("id" = Uuid, Path, description = "The license")),
    responses((status = 200, description = "The license's activations.", body = LicenseActivationsView), service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn license_activations(
    app: web::Data<Activation>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let seats = app.seats_of_license(&principal, id).await?;
    let revoked: Vec<Uuid> = seats
        .iter()
        .filter(|s| s.status != crate::domain::SeatStatus::Live)
        .map(|s| s.activation_id)
        .collect();
    Ok(HttpResponse::Ok().json(LicenseActivationsView {
        license_id: id,
        activations: seats,
        revoked,
    }))
}

/// A device's activations (recovery): of any license for an API key, of
/// its own license for a product.
#[utoipa::path(post, path = "/v1/activations/search",
    request_body = DeviceBody,
    responses((status = 200, description = "The device's activations.", body = SearchView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn search(
    app: web::Data<Activation>,
    principal: Principal,
    Json(body): Json<DeviceBody>,
) -> Result<HttpResponse, Problem> {
    let activations = app.by_device(&principal, &body.fingerprint).await?;
    Ok(HttpResponse::Ok().json(SearchView { activations }))
}

/// Whether a file may be installed: signed by us, and its activation live.
#[utoipa::path(post, path = "/v1/activations/verify",
    request_body = VerifyBody,
    responses((status = 200, description = "The verdict; `valid` false names why in `code`.", body = VerifyView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn verify(
    app: web::Data<Activation>,
    principal: Principal,
    Json(body): Json<VerifyBody>,
) -> Result<HttpResponse, Problem> {
    let v = app.verify_file(&principal, &body.activation_file).await?;
    Ok(HttpResponse::Ok().json(VerifyView {
        valid: v.code == FileCode::Valid,
        code: v.code,
        activation_id: v.ids.map(|(activation_id, _)| activation_id),
        license_id: v.ids.map(|(_, license_id)| license_id),
    }))
}

/// Starts a device's trial of a product: issuance issues its license, and
/// the device is activated under it.
///
/// Waits for issuance a while (`trial_wait_ms`): 201 with the activation
/// file once the trial is active, else 202 with the trial to poll.
#[utoipa::path(post, path = "/v1/trials", params(service_kit::openapi::Idempotency),
    request_body = StartTrial,
    responses((status = 201, description = "The trial is active: its activation and file.", body = TrialIssuedView), (status = 202, description = "Issuance has not answered yet (or the trial ended): the trial, to poll at `Location`.", body = TrialView, headers(("Location" = String, description = "`/v1/trials/{trial_id}`"))), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Conflict, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"])))]
async fn start_trial(
    app: web::Data<Activation>,
    wait: web::Data<TrialWait>,
    caller: Caller,
    Json(body): Json<StartTrial>,
) -> Result<HttpResponse, Problem> {
    let mut ctx = caller.context(START_TRIAL, &body);
    ctx.request_digest = crate::app::trial_digest(&body);
    let trial = app
        .start_trial(&ctx, &body.product, &body.fingerprint, body.client_time)
        .await?;
    let trial_id = trial
        .state
        .as_ref()
        .map(|s| s.trial_id.clone())
        .ok_or_else(Problem::internal)?;
    let deadline = tokio::time::Instant::now() + wait.0;
    loop {
        let t = app.trial(&trial_id).await?;
        let s = t.state.ok_or_else(Problem::internal)?;
        if s.status == TrialStatus::Active {
            if let Some(activation_id) = s.activation_id {
                // The trial's seat commits just before the license replica
                // row of the same reaction: until then the file cannot be
                // built yet, which is a reason to wait, not a 404.
                match app.file(&caller.principal, activation_id).await {
                    Ok(issued) => {
                        return Ok(HttpResponse::Created().json(TrialIssuedView {
                            issued: issued_view(&issued),
                            trial_id: s.trial_id,
                        }));
                    }
                    Err(f) if f.code() == Some("ACTIVATION_NOT_FOUND") => {}
                    Err(f) => return Err(f.into()),
                }
            }
        }
        if let Some(f) = s
            .failure
            .as_ref()
            .filter(|_| s.status == TrialStatus::Failed)
        {
            return Err(Problem::conflict(
                "TRIAL_FAILED",
                format!(
                    "issuance refused the trial's license: {}: {}",
                    f.code, f.message
                ),
            ));
        }
        if s.status == TrialStatus::Ended || tokio::time::Instant::now() >= deadline {
            return Ok(HttpResponse::Accepted()
                .insert_header(("Location", format!("/v1/trials/{}", s.trial_id)))
                .json(trial_view(&s)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A trial, with its activation file once it is active.
#[utoipa::path(get, path = "/v1/trials/{id}", params(("id" = Text<512>, Path, description = "The trial: `<product>:<fingerprint digest>`")),
    responses((status = 200, description = "The trial.", body = TrialView), service_kit::openapi::Denied, service_kit::openapi::NotFound, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"])))]
async fn get_trial(
    app: web::Data<Activation>,
    principal: Principal,
    id: web::Path<Text<512>>,
) -> Result<HttpResponse, Problem> {
    let t = app.trial(&id).await?;
    let s = t.state.ok_or_else(Problem::internal)?;
    let mut body = trial_view(&s);
    if let (TrialStatus::Active, Some(activation_id)) = (s.status, s.activation_id) {
        if let Ok(issued) = app.file(&principal, activation_id).await {
            body.activation_file = Some(issued.file);
        }
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Whether a license is valid, for a device and features if named (a
/// read: it records nothing).
#[utoipa::path(post, path = "/v1/validate",
    request_body = ValidateRequest,
    responses((status = 200, description = "The verdict; `valid` false names why in `code` (a license not found is `NOT_FOUND`).", body = ValidationView), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::Unavailable),
    security(("api_key" = ["activator"]), ("license" = []), ("activation_file" = [])))]
async fn validate(
    app: web::Data<Activation>,
    principal: Principal,
    Json(body): Json<ValidateRequest>,
) -> Result<HttpResponse, Problem> {
    let v = app.validate(&principal, &body).await?;
    Ok(HttpResponse::Ok().json(ValidationView::from(v)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_openapi_document_is_the_generated_one() {
        service_kit::openapi::assert_checked_in(
            <super::ApiDoc as utoipa::OpenApi>::openapi(),
            "activation",
        );
    }
}
