//! Read API of the projector: its routes and the role each needs. Handlers
//! call `crate::app`'s use cases or read through `crate::store` (and the
//! checkpoint and rebuild modules), and answer a failed read as 503
//! `READ_MODEL_UNAVAILABLE`.

mod admin;
mod audit;
mod checkpoints;
mod licenses;

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::web;
use service_kit::auth::require;
use service_kit::Problem;

pub use crate::store::audit::AuditRecord;

const AUDITOR: &str = "auditor";
const ADMIN: &str = "admin";

pub fn routes(cfg: &mut web::ServiceConfig) {
    let auditor = || from_fn(require(AUDITOR));
    let admin = || from_fn(require(ADMIN));
    cfg.service(
        web::resource("/v1/licenses")
            .wrap(auditor())
            .route(web::get().to(licenses::list)),
    )
    .service(
        web::resource("/v1/licenses/{id}")
            .wrap(auditor())
            .route(web::get().to(licenses::get)),
    )
    .service(
        web::resource("/v1/licenses/{id}/state")
            .wrap(auditor())
            .route(web::get().to(licenses::as_of)),
    )
    .service(
        web::resource("/v1/licenses/{id}/history")
            .wrap(auditor())
            .route(web::get().to(licenses::history)),
    )
    .service(
        web::resource("/v1/licenses/{id}/dispute-bundle")
            .wrap(auditor())
            .route(web::get().to(licenses::dispute_bundle)),
    )
    .service(
        web::resource("/v1/licenses/{id}/decisions")
            .wrap(auditor())
            .route(web::post().to(licenses::decision)),
    )
    .service(
        web::resource("/v1/checkpoints")
            .wrap(auditor())
            .route(web::get().to(checkpoints::list)),
    )
    .service(
        web::resource("/v1/checkpoints/consistency")
            .wrap(auditor())
            .route(web::get().to(checkpoints::consistency)),
    )
    .service(
        web::resource("/v1/audit")
            .wrap(auditor())
            .route(web::get().to(audit::query)),
    )
    .service(
        web::resource("/v1/admin/rebuild")
            .wrap(admin())
            .route(web::post().to(admin::rebuild)),
    )
    .service(
        web::resource("/v1/admin/projections")
            .wrap(admin())
            .route(web::get().to(admin::projections)),
    );
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "read model query failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "READ_MODEL_UNAVAILABLE",
        "The read model is unavailable",
    )
}
