//! Operator routes: start a blue/green rebuild, watch checkpoints and
//! progress.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use service_kit::json::Json;
use service_kit::Problem;
use uuid::Uuid;

use super::unavailable;
use crate::rebuild::{ModelStatus, RebuildError, RebuildState};
use crate::App;

/// Body of `POST /v1/admin/rebuild`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Read models to rebuild (default: every model).
    #[serde(default)]
    #[schema(value_type = Vec<ModelName>, max_items = 16)]
    pub models: Vec<String>,
}

/// A read model's name, in an OpenAPI document: one of the projector's
/// models. A schema only: the request reads a string.
pub struct ModelName;

impl utoipa::PartialSchema for ModelName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names: Vec<&str> = crate::models::all().iter().map(|m| m.name()).collect();
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl utoipa::ToSchema for ModelName {}

/// A rebuild, started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RebuildStarted {
    pub rebuild_id: Uuid,
    /// The models it rebuilds.
    pub models: Vec<String>,
    /// `running`: follow it at `GET /v1/admin/projections`.
    pub status: RebuildState,
}

/// Starts a blue/green rebuild of read models from the full history; the
/// live models serve until each rebuilt one is swapped in.
#[utoipa::path(post, path = "/v1/admin/rebuild",
    request_body = RebuildRequest,
    responses((status = 202, description = "The rebuild started.", body = RebuildStarted), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::Conflict, super::Unavailable),
    security(("api_key" = ["admin"])))]
pub async fn rebuild(
    app: web::Data<App>,
    body: Json<RebuildRequest>,
) -> Result<HttpResponse, Problem> {
    let names = body.0.models;
    if names.len() > 16 {
        return Err(
            Problem::unprocessable("INVALID_MODELS", "at most 16 models").with_field("models"),
        );
    }
    match app.projections.start(&names).await {
        Ok((id, models)) => Ok(HttpResponse::Accepted().json(RebuildStarted {
            rebuild_id: id,
            models,
            status: RebuildState::Running,
        })),
        Err(RebuildError::InProgress) => Err(Problem::conflict(
            "REBUILD_IN_PROGRESS",
            "a rebuild is already running; follow it at /v1/admin/projections",
        )),
        Err(RebuildError::UnknownModel(name)) => Err(Problem::unprocessable(
            "UNKNOWN_MODEL",
            format!("no read model named {name:.64}"),
        )
        .with_field("models")),
        Err(RebuildError::Db(e)) => Err(unavailable(e)),
    }
}

/// Every read model's consumer checkpoints and lag, and its latest
/// rebuild.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Projections {
    pub models: Vec<ModelStatus>,
}

/// The read models' progress: consumer lag per partition, and each
/// model's latest rebuild.
#[utoipa::path(get, path = "/v1/admin/projections",
    responses((status = 200, description = "Each model's status.", body = Projections), service_kit::openapi::Denied, super::Unavailable),
    security(("api_key" = ["admin"])))]
pub async fn projections(app: web::Data<App>) -> Result<HttpResponse, Problem> {
    let models = app.projections.status().await.map_err(|e| {
        bus::outage::error("projection status", &e);
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "STATUS_UNAVAILABLE",
            "Checkpoints or watermarks cannot be read",
        )
    })?;
    Ok(HttpResponse::Ok().json(Projections { models }))
}
