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
use contracts::text::Text;
use serde::{Deserialize, Serialize};
use service_kit::auth::{require, require_or_license, Principal};
use service_kit::command::Caller;
use service_kit::{Json, Problem};
use uuid::Uuid;

use crate::app::{Activation, Issued, ValidateRequest};
use crate::domain::TrialStatus;

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

fn id_of(raw: &str, field: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::bad_request("INVALID_ID", format!("{field} must be a UUID")).with_field(field)
    })
}

/// The offline request file: what a device without network writes out.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRequest {
    #[serde(default)]
    pub license_key: Option<LicenseKeyText>,
    pub fingerprint: Fingerprint,
    pub nonce: Text<128>,
    #[serde(with = "contracts::time::strict")]
    pub client_time: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    pub fingerprint: Fingerprint,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub activation_file: FileText,
}

fn issued_body(i: &Issued) -> serde_json::Value {
    serde_json::json!({
        "activation_id": i.seat.activation_id,
        "license_id": i.license.id,
        "kind": i.license.kind,
        "fingerprint": i.seat.fingerprint,
        "expires_at": i.expires_at,
        "activation_file": i.file,
    })
}

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
    Ok(res.json(issued_body(&issued)))
}

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
    Ok(res.json(serde_json::json!({
        "activation_id": issued.seat.activation_id,
        "nonce": req.nonce,
        "response_file": issued.file,
    })))
}

async fn get_activation(
    app: web::Data<Activation>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    Ok(HttpResponse::Ok().json(app.seat_row(&principal, id).await?))
}

async fn get_file(
    app: web::Data<Activation>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let issued = app.file(&principal, id_of(&id, "id")?).await?;
    Ok(HttpResponse::Ok().json(issued_body(&issued)))
}

async fn uninstall(
    app: web::Data<Activation>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let ctx = caller.context(UNINSTALL, &id);
    let receipt = app.uninstall(&ctx, &caller.principal, id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "activation_id": id,
        "status": "uninstalled",
        "receipt": receipt,
    })))
}

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
    let mut body = issued_body(&issued);
    body["migrated_from"] = serde_json::json!(id);
    Ok(HttpResponse::Created().json(body))
}

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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "license_id": id,
        "activations": seats,
        "revoked": revoked,
    })))
}

async fn search(
    app: web::Data<Activation>,
    principal: Principal,
    Json(body): Json<DeviceBody>,
) -> Result<HttpResponse, Problem> {
    let seats = app.by_device(&principal, &body.fingerprint).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "activations": seats })))
}

/// Whether a file may be installed: signed by us, and its activation live.
async fn verify(
    app: web::Data<Activation>,
    principal: Principal,
    Json(body): Json<VerifyBody>,
) -> Result<HttpResponse, Problem> {
    let v = app.verify_file(&principal, &body.activation_file).await?;
    let mut answer = serde_json::json!({ "valid": v.code == "VALID", "code": v.code });
    if let Some((activation_id, license_id)) = v.ids {
        answer["activation_id"] = serde_json::json!(activation_id);
        answer["license_id"] = serde_json::json!(license_id);
    }
    Ok(HttpResponse::Ok().json(answer))
}

fn trial_body(t: &crate::domain::trial::TrialState) -> serde_json::Value {
    serde_json::json!({
        "trial_id": t.trial_id,
        "product": t.product,
        "license_id": t.license_id,
        "status": t.status,
        "activation_id": t.activation_id,
        "failure": t.failure.as_ref().map(|f| serde_json::json!({
            "code": f.code,
            "message": f.message,
        })),
    })
}

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
                        let mut body = issued_body(&issued);
                        body["trial_id"] = serde_json::json!(s.trial_id);
                        return Ok(HttpResponse::Created().json(body));
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
                .json(trial_body(&s)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_trial(
    app: web::Data<Activation>,
    principal: Principal,
    id: web::Path<Text<512>>,
) -> Result<HttpResponse, Problem> {
    let t = app.trial(&id).await?;
    let s = t.state.ok_or_else(Problem::internal)?;
    let mut body = trial_body(&s);
    if let (TrialStatus::Active, Some(activation_id)) = (s.status, s.activation_id) {
        if let Ok(issued) = app.file(&principal, activation_id).await {
            body["activation_file"] = serde_json::json!(issued.file);
        }
    }
    Ok(HttpResponse::Ok().json(body))
}

async fn validate(
    app: web::Data<Activation>,
    principal: Principal,
    Json(body): Json<ValidateRequest>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(app.validate(&principal, &body).await?))
}
