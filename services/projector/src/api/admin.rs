//! Operator routes: start a blue/green rebuild, watch checkpoints and
//! progress.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use service_kit::json::Json;
use service_kit::Problem;
use uuid::Uuid;

use super::unavailable;
use crate::rebuild::{ModelStatus, RebuildError};
use crate::App;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Default: every model.
    #[serde(default)]
    pub models: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RebuildStarted {
    pub rebuild_id: Uuid,
    pub models: Vec<String>,
    pub status: &'static str,
}

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
            status: "running",
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

#[derive(Debug, Serialize)]
pub struct Projections {
    pub models: Vec<ModelStatus>,
}

pub async fn projections(app: web::Data<App>) -> Result<HttpResponse, Problem> {
    let models = app.projections.status().await.map_err(|e| {
        tracing::error!(error = %e, "projection status failed");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "STATUS_UNAVAILABLE",
            "Checkpoints or watermarks cannot be read",
        )
    })?;
    Ok(HttpResponse::Ok().json(Projections { models }))
}
