//! The services' signed checkpoints: the latest of each context, one by
//! size or by the position it covers, and consistency proofs between two.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use contracts::text::Name;
use contracts::topics::{ACTIVATION, DOMAIN, GRANTS, ISSUANCE};
use serde::{Deserialize, Serialize};
use service_kit::{Problem, Query};

use super::unavailable;
use crate::checkpoints::{keys_of, leaves, matches_events, signature, Signature};
use crate::store::checkpoints::{select, Select, Stored};
use crate::App;

const CONTEXTS: [&str; 4] = [ISSUANCE, ACTIVATION, DOMAIN, GRANTS];

/// A context whose services sign checkpoints, in an OpenAPI document: one
/// of [`CONTEXTS`]. A schema only: the queries read a [`Name`].
pub struct Context;

impl utoipa::PartialSchema for Context {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(CONTEXTS))
            .description(Some("A context, named as its events topic names it."))
            .into()
    }
}

impl utoipa::ToSchema for Context {}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// The context (default: the latest of each).
    #[param(value_type = Option<Context>)]
    pub context: Option<Name>,
    /// The checkpoint of this many events (with `context`).
    pub tree_size: Option<u64>,
    /// An event-store global position: the first checkpoint covering it
    /// (with `context`).
    pub position: Option<i64>,
}

/// A service's signed checkpoint as the projector received it, and what
/// the projector makes of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SignedCheckpoint)]
pub struct Item {
    #[serde(flatten)]
    pub checkpoint: Stored,
    /// Under the keys the service published on its own events topic.
    pub signature: Signature,
    /// Whether the projector's copy of the events gives this root; null
    /// while it does not hold every event the checkpoint covers.
    #[schema(required = true)]
    pub matches_events: Option<bool>,
}

/// The checkpoints asked for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checkpoints {
    pub items: Vec<Item>,
}

fn context(c: &str) -> Result<String, Problem> {
    if CONTEXTS.contains(&c) {
        Ok(c.to_string())
    } else {
        Err(Problem::unprocessable(
            "INVALID_CONTEXT",
            format!("context must be one of {}", CONTEXTS.join(", ")),
        )
        .with_field("context"))
    }
}

/// A tree size the store can hold (a BIGINT); past it, the caller's
/// mistake, not an empty answer.
fn size(field: &str, n: u64) -> Result<u64, Problem> {
    if i64::try_from(n).is_ok() {
        Ok(n)
    } else {
        Err(Problem::unprocessable(
            "INVALID_TREE_SIZE",
            format!("{field} must be at most {}", i64::MAX),
        )
        .with_field(field))
    }
}

fn needs_context(field: &str) -> Problem {
    Problem::unprocessable("INVALID_FILTER", format!("{field} needs a context"))
        .with_field("context")
}

/// The services' signed checkpoints: the latest of each context, or one
/// context's latest, by size, or covering a position.
#[utoipa::path(get, path = "/v1/checkpoints", operation_id = "list_checkpoints", params(CheckpointQuery),
    responses((status = 200, description = "The checkpoints (none yet: an empty list, without `context`).", body = Checkpoints), super::Refused, service_kit::openapi::Denied, service_kit::openapi::NotFound, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn list(app: web::Data<App>, q: Query<CheckpointQuery>) -> Result<HttpResponse, Problem> {
    let q = q.into_inner();
    let s = match (
        q.context.as_deref().map(context).transpose()?,
        q.tree_size.map(|n| size("tree_size", n)).transpose()?,
        q.position,
    ) {
        (_, Some(_), Some(_)) => {
            return Err(Problem::unprocessable(
                "INVALID_FILTER",
                "give tree_size or position, not both",
            )
            .with_field("position"))
        }
        (None, None, None) => Select::Latest,
        (None, Some(_), _) => return Err(needs_context("tree_size")),
        (None, _, Some(_)) => return Err(needs_context("position")),
        (Some(c), None, None) => Select::LatestOf(c),
        (Some(c), Some(n), None) => Select::Size(c, n),
        (Some(_), None, Some(p)) if p < 1 => {
            return Err(
                Problem::unprocessable("INVALID_POSITION", "position starts at 1")
                    .with_field("position"),
            )
        }
        (Some(c), None, Some(p)) => Select::Covering(c, p),
    };
    let found = select(&app.pool, &s).await.map_err(unavailable)?;
    let mut items = Vec::with_capacity(found.len());
    for c in found {
        let keys = keys_of(&app.pool, &c.context).await.map_err(unavailable)?;
        items.push(Item {
            signature: signature(&keys, &c),
            matches_events: matches_events(&app.pool, &c).await.map_err(unavailable)?,
            checkpoint: c,
        });
    }
    if items.is_empty() && !matches!(s, Select::Latest) {
        return Err(Problem::not_found(
            "CHECKPOINT_NOT_FOUND",
            "no such checkpoint",
        ));
    }
    Ok(HttpResponse::Ok().json(Checkpoints { items }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    #[param(value_type = Context)]
    pub context: Name,
    /// The smaller tree's size.
    pub from: u64,
    /// The larger tree's size.
    pub to: u64,
}

/// An RFC 9162 consistency proof between two trees of a context's events;
/// hashes in hex. Fields in the order the answer has always had them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    pub context: String,
    pub from: u64,
    /// The root of the first `from` events.
    pub from_root: String,
    pub proof: Vec<String>,
    pub to: u64,
    /// The root of the first `to` events.
    pub to_root: String,
}

/// RFC 9162 consistency proof that the tree of `from` events is a prefix
/// of the tree of `to`, from the projector's copy of the events; the
/// caller checks it against the two signed roots.
#[utoipa::path(get, path = "/v1/checkpoints/consistency", params(ConsistencyQuery),
    responses((status = 200, description = "The proof.", body = ConsistencyProof), super::Refused, service_kit::openapi::Denied, super::NotYetProjected, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn consistency(
    app: web::Data<App>,
    q: Query<ConsistencyQuery>,
) -> Result<HttpResponse, Problem> {
    let q = q.into_inner();
    let c = context(&q.context)?;
    size("from", q.from)?;
    size("to", q.to)?;
    if q.from > q.to {
        return Err(
            Problem::unprocessable("INVALID_RANGE", "from must not exceed to").with_field("from"),
        );
    }
    let Some(l) = leaves(&app.pool, &c, q.to).await.map_err(unavailable)? else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "NOT_YET_PROJECTED",
            "The projector does not hold these events yet",
        )
        .with_field("to"));
    };
    let mut tree = eventstore::merkle::Tree::new(&l);
    Ok(HttpResponse::Ok().json(ConsistencyProof {
        context: c,
        from: q.from,
        from_root: hex::encode(tree.root(q.from)),
        proof: tree
            .consistency_proof(q.from, q.to)
            .iter()
            .map(hex::encode)
            .collect(),
        to: q.to,
        to_root: hex::encode(tree.root(q.to)),
    }))
}

#[cfg(test)]
mod tests {
    use super::{Checkpoints, ConsistencyProof};

    fn json<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string(v).expect("json")
    }

    /// The typed answers serialise as the JSON values they replaced.
    #[test]
    fn answers_serialise_as_before() {
        assert_eq!(
            json(&Checkpoints { items: vec![] }),
            serde_json::json!({ "items": [] }).to_string()
        );
        let proof = ConsistencyProof {
            context: "issuance".into(),
            from: 1,
            from_root: "aa".into(),
            proof: vec!["bb".into()],
            to: 2,
            to_root: "cc".into(),
        };
        assert_eq!(
            json(&proof),
            serde_json::json!({
                "context": "issuance",
                "from": 1,
                "to": 2,
                "from_root": "aa",
                "to_root": "cc",
                "proof": ["bb"],
            })
            .to_string()
        );
    }
}
