//! HTTP API of activation. Every route but the JWKS needs an API key with
//! the `activator` scope.

use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use contracts::activation::*;
use contracts::text::{Name, Text};
use serde::{Deserialize, Serialize};
use service_kit::auth::require;
use service_kit::command::Caller;
use service_kit::{Json, Problem};
use uuid::Uuid;

use crate::app::{db_problem, Activation, Issued, ValidateRequest};
use crate::domain::TrialStatus;
use crate::store;

pub const ACTIVATOR: &str = "activator";

/// A license key as typed (the check character decides if it is one).
pub type LicenseKeyText = Text<64>;
/// A signed file (compact JWS) as a caller sends it back.
pub type FileText = Text<16384>;

/// How long `POST /v1/trials` waits for issuance before answering 202.
#[derive(Clone, Copy)]
pub struct TrialWait(pub Duration);

pub fn routes(cfg: &mut web::ServiceConfig) {
    let activator = || from_fn(require(ACTIVATOR));
    cfg.service(
        web::resource("/v1/activations")
            .wrap(activator())
            .route(web::post().to(activate)),
    )
    .service(
        web::resource("/v1/activations/offline")
            .wrap(activator())
            .route(web::post().to(activate_offline)),
    )
    .service(
        web::resource("/v1/activations/search")
            .wrap(activator())
            .route(web::post().to(search)),
    )
    .service(
        web::resource("/v1/activations/verify")
            .wrap(activator())
            .route(web::post().to(verify)),
    )
    .service(
        web::resource("/v1/activations/{id}")
            .wrap(activator())
            .route(web::get().to(get_activation)),
    )
    .service(
        web::resource("/v1/activations/{id}/file")
            .wrap(activator())
            .route(web::get().to(get_file)),
    )
    .service(
        web::resource("/v1/activations/{id}/uninstall")
            .wrap(activator())
            .route(web::post().to(uninstall)),
    )
    .service(
        web::resource("/v1/activations/{id}/migrate")
            .wrap(activator())
            .route(web::post().to(migrate)),
    )
    .service(
        web::resource("/v1/licenses/{id}/activations")
            .wrap(activator())
            .route(web::get().to(license_activations)),
    )
    .service(
        web::resource("/v1/trials")
            .wrap(activator())
            .route(web::post().to(start_trial)),
    )
    .service(
        web::resource("/v1/trials/{id}")
            .wrap(activator())
            .route(web::get().to(get_trial)),
    )
    .service(
        web::resource("/v1/validate")
            .wrap(activator())
            .route(web::post().to(validate)),
    );
}

fn id_of(raw: &str, field: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::bad_request("INVALID_ID", format!("{field} must be a UUID")).with_field(field)
    })
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    pub license_key: LicenseKeyText,
    pub fingerprint: Fingerprint,
    #[serde(default, with = "contracts::time::strict_option")]
    pub client_time: Option<DateTime<Utc>>,
}

/// The offline request file: what a device without network writes out.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRequest {
    pub license_key: LicenseKeyText,
    pub fingerprint: Fingerprint,
    pub nonce: Text<128>,
    #[serde(with = "contracts::time::strict")]
    pub client_time: DateTime<Utc>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateBody {
    pub fingerprint: Fingerprint,
    #[serde(default, with = "contracts::time::strict_option")]
    pub client_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrialBody {
    pub product: Name,
    pub fingerprint: Fingerprint,
    #[serde(default, with = "contracts::time::strict_option")]
    pub client_time: Option<DateTime<Utc>>,
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
    Json(body): Json<ActivateBody>,
) -> Result<HttpResponse, Problem> {
    let license = app.license_by_key(&body.license_key).await?;
    let policy = crate::domain::seats::policy(&license);
    let device = app
        .device(&body.fingerprint, body.client_time, &policy)
        .await?;
    let ctx = caller.context(ACTIVATE, &body);
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
    let license = app.license_by_key(&req.license_key).await?;
    let policy = crate::domain::seats::policy(&license);
    let device = app
        .device(&req.fingerprint, Some(req.client_time), &policy)
        .await?;
    let ctx = caller.context(ACTIVATE, &req);
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
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let seat = store::seat(&app.pool, id)
        .await
        .map_err(db_problem)?
        .ok_or_else(|| Problem::not_found("ACTIVATION_NOT_FOUND", "no such activation"))?;
    Ok(HttpResponse::Ok().json(seat))
}

async fn get_file(
    app: web::Data<Activation>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let issued = app.file(id_of(&id, "id")?).await?;
    Ok(HttpResponse::Ok().json(issued_body(&issued)))
}

async fn uninstall(
    app: web::Data<Activation>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let ctx = caller.context(UNINSTALL, &id);
    let receipt = app.uninstall(&ctx, id).await?;
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
    Json(body): Json<MigrateBody>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let ctx = caller.context(MIGRATE, &(id, &body));
    let issued = app
        .migrate(&ctx, id, &body.fingerprint, body.client_time)
        .await?;
    let mut body = issued_body(&issued);
    body["migrated_from"] = serde_json::json!(id);
    Ok(HttpResponse::Created().json(body))
}

async fn license_activations(
    app: web::Data<Activation>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id_of(&id, "id")?;
    let seats = store::seats_of_license(&app.pool, id)
        .await
        .map_err(db_problem)?;
    let revoked: Vec<Uuid> = seats
        .iter()
        .filter(|s| s.status != "live")
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
    Json(body): Json<DeviceBody>,
) -> Result<HttpResponse, Problem> {
    let seats = app.by_device(&body.fingerprint).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "activations": seats })))
}

/// Whether a file may be installed: signed by us, and its activation live.
async fn verify(
    app: web::Data<Activation>,
    Json(body): Json<VerifyBody>,
) -> Result<HttpResponse, Problem> {
    let invalid =
        |code: &str| HttpResponse::Ok().json(serde_json::json!({ "valid": false, "code": code }));
    let claims = match app.signer.verify(&body.activation_file).await {
        Ok(c) => c,
        Err(service_kit::keys::VerifyError::Store(e)) => return Err(db_problem(e)),
        Err(_) => return Ok(invalid("BAD_SIGNATURE")),
    };
    let Ok(claims) = serde_json::from_value::<ActivationClaims>(claims) else {
        return Ok(invalid("NOT_AN_ACTIVATION_FILE"));
    };
    if claims.typ != "activation" {
        return Ok(invalid("NOT_AN_ACTIVATION_FILE"));
    }
    let seat = store::seat(&app.pool, claims.activation_id)
        .await
        .map_err(db_problem)?;
    let code = match seat.as_ref().map(|s| s.status.as_str()) {
        Some("live") => "VALID",
        Some(_) => "REVOKED",
        None => "NOT_FOUND",
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "valid": code == "VALID",
        "code": code,
        "activation_id": claims.activation_id,
        "license_id": claims.license_id,
    })))
}

fn trial_body(t: &crate::domain::trial::TrialState) -> serde_json::Value {
    serde_json::json!({
        "trial_id": t.trial_id,
        "product": t.product,
        "license_id": t.license_id,
        "status": t.status,
        "activation_id": t.activation_id,
    })
}

async fn start_trial(
    app: web::Data<Activation>,
    wait: web::Data<TrialWait>,
    caller: Caller,
    Json(body): Json<TrialBody>,
) -> Result<HttpResponse, Problem> {
    let ctx = caller.context(START_TRIAL, &body);
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
                match app.file(activation_id).await {
                    Ok(issued) => {
                        let mut body = issued_body(&issued);
                        body["trial_id"] = serde_json::json!(s.trial_id);
                        return Ok(HttpResponse::Created().json(body));
                    }
                    Err(p) if p.code() == "ACTIVATION_NOT_FOUND" => {}
                    Err(p) => return Err(p),
                }
            }
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
    id: web::Path<Text<512>>,
) -> Result<HttpResponse, Problem> {
    let t = app.trial(&id).await?;
    let s = t.state.ok_or_else(Problem::internal)?;
    let mut body = trial_body(&s);
    if let (TrialStatus::Active, Some(activation_id)) = (s.status, s.activation_id) {
        if let Ok(issued) = app.file(activation_id).await {
            body["activation_file"] = serde_json::json!(issued.file);
        }
    }
    Ok(HttpResponse::Ok().json(body))
}

async fn validate(
    app: web::Data<Activation>,
    Json(body): Json<ValidateRequest>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(app.validate(&body).await?))
}
