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
use service_kit::openapi::{codes_of, ProblemCodes, RouteCodes, READ_SIDE};
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

/// This service's OpenAPI document, generated from its handlers and types
/// (checked in as `schemas/openapi/projector.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Projector", description = "The read side: every context's events as license states and an audit trail, with as-of states, verified histories, signed dispute bundles and the services' checkpoints."),
    paths(
        licenses::list, licenses::get, licenses::as_of, licenses::history,
        licenses::dispute_bundle, licenses::decision,
        checkpoints::list, checkpoints::consistency,
        audit::query,
        admin::rebuild, admin::projections
    ),
    components(schemas(
        service_kit::ProblemBody,
        contracts::text::Text<64>,
        contracts::text::Text<200>,
        contracts::text::Text<256>,
        contracts::issuance::LicenseStatus,
        checkpoints::Context
    )),
    modifiers(&READ_SIDE, &PROBLEM_CODES)
)]
pub struct ApiDoc;

const PROBLEM_CODES: ProblemCodes = ProblemCodes {
    table: problem_codes,
};

/// What each route answers beyond what its shape implies (see
/// [`ProblemCodes`]): the read side stores no events, so no aggregate's
/// refusals; its own checks, and 503 `READ_MODEL_UNAVAILABLE` wherever it
/// reads its tables.
fn problem_codes() -> Vec<RouteCodes> {
    let read = (503, "READ_MODEL_UNAVAILABLE");
    let license_not_found = (404, "LICENSE_NOT_FOUND");
    vec![
        codes_of("get", "/v1/licenses").codes(&[
            (422, "INVALID_LIMIT"),
            (422, "INVALID_STATUS"),
            read,
        ]),
        codes_of("get", "/v1/licenses/{id}").codes(&[license_not_found, read]),
        codes_of("get", "/v1/licenses/{id}/state").codes(&[license_not_found, read]),
        codes_of("get", "/v1/licenses/{id}/history").codes(&[license_not_found, read]),
        codes_of("get", "/v1/licenses/{id}/dispute-bundle").codes(&[
            license_not_found,
            (409, "HISTORY_INCONSISTENT"),
            read,
        ]),
        codes_of("post", "/v1/licenses/{id}/decisions").codes(&[
            license_not_found,
            (422, "INVALID_FEATURES"),
            (422, "INVALID_FINGERPRINT"),
            (422, "FINGERPRINT_REQUIRED"),
            read,
        ]),
        codes_of("get", "/v1/checkpoints").codes(&[
            (404, "CHECKPOINT_NOT_FOUND"),
            (422, "INVALID_CONTEXT"),
            (422, "INVALID_TREE_SIZE"),
            (422, "INVALID_FILTER"),
            (422, "INVALID_POSITION"),
            read,
        ]),
        codes_of("get", "/v1/checkpoints/consistency").codes(&[
            (409, "NOT_YET_PROJECTED"),
            (422, "INVALID_CONTEXT"),
            (422, "INVALID_TREE_SIZE"),
            (422, "INVALID_RANGE"),
            read,
        ]),
        codes_of("get", "/v1/audit").codes(&[
            (422, "INVALID_FILTER"),
            (422, "INVALID_RANGE"),
            (422, "EXPORT_NOT_PAGED"),
            (422, "INVALID_LIMIT"),
            read,
        ]),
        codes_of("post", "/v1/admin/rebuild").codes(&[
            (409, "REBUILD_IN_PROGRESS"),
            (422, "INVALID_MODELS"),
            (422, "UNKNOWN_MODEL"),
            read,
        ]),
        codes_of("get", "/v1/admin/projections").codes(&[(503, "STATUS_UNAVAILABLE")]),
    ]
}

service_kit::problem_responses! {
    // The read side's own 503 codes (each route's are listed on it).
    Unavailable => [
        ("500", "A fault of the service (`INTERNAL`)."),
        (
            "503",
            "The read model or a dependency is unreachable: retry later.",
        ),
    ];
    // `Invalid`'s halves, for routes that answer only one of them.
    BadPath => [(
        "400",
        "The path cannot be read: the license id is not a UUID (`INVALID_PATH`, `field` names it).",
    )];
    Refused => [(
        "422",
        "The query cannot be read (`INVALID_QUERY`) or is refused by a rule (`code` and `field` name it).",
    )];
    Inconsistent => [(
        "409",
        "The recorded history contradicts itself or a signed checkpoint (`HISTORY_INCONSISTENT`): nothing is signed.",
    )];
    NotYetProjected => [(
        "409",
        "The projector does not hold these events yet (`NOT_YET_PROJECTED`): retry later.",
    )];
}

fn unavailable(e: impl std::fmt::Display + bus::outage::Unreachable) -> Problem {
    bus::outage::error("read model query", &e);
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "READ_MODEL_UNAVAILABLE",
        "The read model is unavailable",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_openapi_document_is_the_generated_one() {
        service_kit::openapi::assert_checked_in(
            <super::ApiDoc as utoipa::OpenApi>::openapi(),
            "projector",
        );
    }
}
