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
use service_kit::{Json, Problem};
use uuid::Uuid;

use crate::commands::{Dispatched, Empty, Issuance};
use crate::domain::api_key::ApiKeyState;
use crate::domain::license::LicenseState;
use crate::domain::{ApiKeyCommand, License};

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
            .route(web::delete().to(|i, c, id| license_action(i, c, id, DELETE_LICENSE, Empty {}))),
    )
    .service(
        web::resource("/v1/licenses/{id}/renew")
            .wrap(issuer())
            .route(web::post().to(|i, c, id, Json(p): Json<RenewLicense>| {
                license_action(i, c, id, RENEW_LICENSE, p)
            })),
    )
    .service(
        web::resource("/v1/licenses/{id}/features")
            .wrap(issuer())
            .route(web::post().to(|i, c, id, Json(p): Json<AmendFeatures>| {
                license_action(i, c, id, AMEND_FEATURES, p)
            })),
    )
    .service(
        web::resource("/v1/licenses/{id}/suspend")
            .wrap(issuer())
            .route(web::post().to(|i, c, id, Json(p): Json<Reason>| {
                license_action(i, c, id, SUSPEND_LICENSE, p)
            })),
    )
    .service(
        web::resource("/v1/licenses/{id}/reinstate")
            .wrap(issuer())
            .route(
                web::post().to(|i, c, id| license_action(i, c, id, REINSTATE_LICENSE, Empty {})),
            ),
    )
    .service(
        web::resource("/v1/licenses/{id}/revoke")
            .wrap(issuer())
            .route(
                web::post().to(|i, c, id, Json(p): Json<Reason>| {
                    license_action(i, c, id, REVOKE_LICENSE, p)
                }),
            ),
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
    );
}

/// A license as answered by issuance. `key` only on issue and recovery.
#[derive(Debug, Serialize)]
pub struct LicenseBody {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub product: String,
    pub edition: Option<String>,
    pub customer: String,
    pub contract: Option<String>,
    pub kind: LicenseKind,
    pub modules: Vec<String>,
    pub features: Vec<String>,
    pub status: LicenseStatus,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reclaim_at: Option<DateTime<Utc>>,
    pub policy: Policy,
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

async fn create_product(
    issuance: web::Data<Issuance>,
    caller: Caller,
    Json(p): Json<CreateProduct>,
) -> Result<HttpResponse, Problem> {
    let env = caller.envelope(CREATE_PRODUCT, p.code.to_string(), &p)?;
    run(&issuance, env, StatusCode::CREATED, false).await
}

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

async fn set_policy(
    issuance: web::Data<Issuance>,
    caller: Caller,
    code: web::Path<Name>,
    Json(p): Json<SetPolicy>,
) -> Result<HttpResponse, Problem> {
    let env = caller.envelope(SET_POLICY, code.into_inner().into(), &p)?;
    run(&issuance, env, StatusCode::OK, false).await
}

async fn issue_license(
    issuance: web::Data<Issuance>,
    caller: Caller,
    Json(spec): Json<IssueLicense>,
) -> Result<HttpResponse, Problem> {
    let env = caller.envelope(ISSUE_LICENSE, Uuid::now_v7().to_string(), &spec)?;
    run(&issuance, env, StatusCode::CREATED, true).await
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    pub key: Text<64>,
}

/// Finds a license by its key. A mistyped key fails its check character
/// and is refused before any lookup.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    pub contract: Option<Name>,
    pub activation_file: Option<Text<16384>>,
    /// The device's hardware components, as at activation.
    pub fingerprint: Option<contracts::activation::Fingerprint>,
}

#[derive(Debug, Serialize)]
struct Recovered {
    licenses: Vec<LicenseBody>,
}

/// Shows the keys of a customer's licenses again; each recovery is an event.
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

#[derive(Debug, Serialize)]
struct ApiKeyBody {
    key_id: String,
    scopes: Vec<String>,
    allowlist: Vec<String>,
    callback_url: Option<String>,
    remark: Option<String>,
    revoked: bool,
    created_at: DateTime<Utc>,
    /// Only when created or rotated: shown once, stored nowhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_key: Option<String>,
    /// `<SecretId>.<SecretKey>`, the bearer token; shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl ApiKeyBody {
    fn of(s: &ApiKeyState, secret: Option<String>) -> Self {
        Self {
            key_id: s.key_id.clone(),
            scopes: s.scopes.clone(),
            allowlist: s.allowlist.clone(),
            callback_url: s.callback_url.clone(),
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

async fn create_api_key(
    issuance: web::Data<Issuance>,
    caller: Caller,
    Json(spec): Json<CreateApiKey>,
) -> Result<HttpResponse, Problem> {
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
