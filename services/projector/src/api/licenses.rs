//! Licenses: the live row, the filtered list, the state at an instant, the
//! history with its hash-chain links, the signed dispute bundle, and the
//! re-evaluation of a past request. The row and the list come from
//! `store::licenses`; the other reads are `crate::app`'s use cases, whose
//! errors are answered here.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use contracts::issuance::LicenseStatus;
use contracts::text::Name;
use serde::{Deserialize, Serialize};
use service_kit::json::Json;
use service_kit::{Problem, Query};
use uuid::Uuid;

use super::unavailable;
use crate::app::{AsOf, DecisionAnswer, DecisionRequest, Error, History};
use crate::domain::LicenseState;
use crate::store::licenses::{self as store, ListFilter};
use crate::App;
use eventstore::bundle::DisputeBundle;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1_000;

fn not_found() -> Problem {
    Problem::not_found("LICENSE_NOT_FOUND", "no such license")
}

/// A license's live state, as the read model holds it.
#[utoipa::path(get, path = "/v1/licenses/{id}", operation_id = "get_license", params(("id" = Uuid, Path, description = "The license")),
    responses((status = 200, description = "The license's state.", body = LicenseState), super::BadPath, service_kit::openapi::Denied, service_kit::openapi::NotFound, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn get(app: web::Data<App>, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let state = store::state(&app.pool, *id).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(state.ok_or_else(not_found)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(value_type = Option<LicenseStatus>)]
    pub status: Option<Name>,
    /// A product's code.
    pub product: Option<Name>,
    pub customer: Option<Name>,
    /// Licenses expiring before this instant.
    #[serde(default, with = "contracts::time::strict_option")]
    pub expiring_before: Option<DateTime<Utc>>,
    /// The last `license_id` of the previous page.
    pub cursor: Option<Uuid>,
    /// Licenses per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A page of licenses, in `license_id` order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LicensePage {
    /// Each license's state as the read model holds it.
    #[schema(value_type = Vec<LicenseState>)]
    pub items: Vec<serde_json::Value>,
    /// The `cursor` of the next page; null on the last one.
    #[schema(required = true, value_type = Option<Uuid>)]
    pub next_cursor: Option<String>,
}

pub fn limit_of(limit: Option<i64>) -> Result<i64, Problem> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            Problem::unprocessable("INVALID_LIMIT", "limit must be 1-1000").with_field("limit"),
        );
    }
    Ok(limit)
}

/// Licenses, filtered and a page at a time.
#[utoipa::path(get, path = "/v1/licenses", operation_id = "list_licenses", params(ListQuery),
    responses((status = 200, description = "A page of licenses.", body = LicensePage), super::Refused, service_kit::openapi::Denied, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn list(app: web::Data<App>, q: Query<ListQuery>) -> Result<HttpResponse, Problem> {
    let limit = limit_of(q.limit)?;
    if let Some(s) = &q.status {
        if serde_json::from_value::<LicenseStatus>(serde_json::Value::String(s.to_string()))
            .is_err()
        {
            return Err(Problem::unprocessable(
                "INVALID_STATUS",
                "status must be active, suspended, expired, revoked, reclaimed or deleted",
            )
            .with_field("status"));
        }
    }
    let filter = ListFilter {
        status: q.status.as_ref().map(|v| v.to_string()),
        product: q.product.as_ref().map(|v| v.to_string()),
        customer: q.customer.as_ref().map(|v| v.to_string()),
        expiring_before: q.expiring_before,
        cursor: q.cursor,
    };
    let rows = store::list(&app.pool, &filter, limit)
        .await
        .map_err(unavailable)?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|(id, _)| id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(LicensePage {
        items: rows.into_iter().map(|(_, s)| s).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    /// The instant (default: now).
    #[serde(default, with = "contracts::time::strict_option")]
    pub as_of: Option<DateTime<Utc>>,
}

fn inconsistent(detail: String) -> Problem {
    tracing::error!(%detail, "history contradicts itself or a signed checkpoint");
    Problem::new(
        StatusCode::CONFLICT,
        "HISTORY_INCONSISTENT",
        "The recorded history does not verify",
    )
    .with_detail(detail)
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound => not_found(),
            Error::Invalid {
                code,
                field,
                message,
            } => Problem::unprocessable(code, message).with_field(field),
            Error::Inconsistent(detail) => inconsistent(detail),
            Error::Unavailable(e) => unavailable(e),
            Error::Signing(e) => {
                tracing::error!(error = %e, "signing a dispute checkpoint failed");
                Problem::internal()
            }
        }
    }
}

/// The license's state at an instant, folded from its events recorded up
/// to then.
#[utoipa::path(get, path = "/v1/licenses/{id}/state", params(("id" = Uuid, Path, description = "The license"), AsOfQuery),
    responses((status = 200, description = "The state at the instant.", body = AsOf), service_kit::openapi::Invalid, service_kit::openapi::Denied, service_kit::openapi::NotFound, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn as_of(
    app: web::Data<App>,
    id: web::Path<Uuid>,
    q: Query<AsOfQuery>,
) -> Result<HttpResponse, Problem> {
    let answer = app.as_of(*id, q.as_of).await?;
    // Sized up front: an answer can list thousands of activations (about
    // 650 bytes each), and a buffer grown from empty copies itself a dozen
    // times on the way to a megabyte.
    let activations = answer.state.as_ref().map_or(0, |s| s.activations.len());
    let mut body = Vec::with_capacity(4096 + 700 * activations);
    serde_json::to_writer(&mut body, &answer).map_err(|e| {
        tracing::error!(license_id = %id, error = %e, "as-of answer not serialised");
        Problem::internal()
    })?;
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body))
}

/// Every event about the license, with each hash-chain link and each
/// aggregate's chain checked.
#[utoipa::path(get, path = "/v1/licenses/{id}/history", params(("id" = Uuid, Path, description = "The license")),
    responses((status = 200, description = "The history.", body = History), super::BadPath, service_kit::openapi::Denied, service_kit::openapi::NotFound, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn history(app: web::Data<App>, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(app.history(*id).await?))
}

/// The license's whole history with the services' checkpoints proving
/// it, signed by the projector: checkable offline with the public keys.
#[utoipa::path(get, path = "/v1/licenses/{id}/dispute-bundle", params(("id" = Uuid, Path, description = "The license")),
    responses((status = 200, description = "The signed bundle, as a download.", body = DisputeBundle,
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"dispute-<id>.json\"`"))),
        super::BadPath, service_kit::openapi::Denied, service_kit::openapi::NotFound, super::Inconsistent, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn dispute_bundle(
    app: web::Data<App>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let bundle = app.dispute_bundle(*id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"dispute-{id}.json\""),
        ))
        .json(bundle))
}

/// What the activation service would have answered a validation or an
/// activation at an instant, under the license's state then.
#[utoipa::path(post, path = "/v1/licenses/{id}/decisions", params(("id" = Uuid, Path, description = "The license")),
    request_body = DecisionRequest,
    responses((status = 200, description = "The re-evaluated decision.", body = DecisionAnswer), service_kit::openapi::Invalid, service_kit::openapi::Body, service_kit::openapi::Denied, service_kit::openapi::NotFound, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn decision(
    app: web::Data<App>,
    id: web::Path<Uuid>,
    body: Json<DecisionRequest>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(app.decision(*id, body.0).await?))
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use service_kit::Problem;

    use crate::app::Error;
    use crate::store::RowError;

    fn same(e: Error, expected: Problem) {
        let got = Problem::from(e);
        assert_eq!(got.status(), expected.status());
        assert_eq!(got.to_json(), expected.to_json());
    }

    #[test]
    fn use_case_errors_are_answered_as_their_problems() {
        same(
            Error::NotFound,
            Problem::not_found("LICENSE_NOT_FOUND", "no such license"),
        );
        same(
            Error::Invalid {
                code: "FINGERPRINT_REQUIRED",
                field: "fingerprint",
                message: "an activation names the device's fingerprint".into(),
            },
            Problem::unprocessable(
                "FINGERPRINT_REQUIRED",
                "an activation names the device's fingerprint",
            )
            .with_field("fingerprint"),
        );
        same(
            Error::Inconsistent("a b (issuance): []".into()),
            Problem::new(
                StatusCode::CONFLICT,
                "HISTORY_INCONSISTENT",
                "The recorded history does not verify",
            )
            .with_detail("a b (issuance): []"),
        );
        same(
            Error::Unavailable(RowError::Db(sqlx::Error::PoolTimedOut)),
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "READ_MODEL_UNAVAILABLE",
                "The read model is unavailable",
            ),
        );
        same(
            Error::Signing(signing::SigningError::BadKey),
            Problem::internal(),
        );
    }
}
