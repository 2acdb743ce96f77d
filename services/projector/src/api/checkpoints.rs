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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    pub context: Option<Name>,
    pub tree_size: Option<u64>,
    /// An event-store global position: the first checkpoint covering it.
    pub position: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Item {
    #[serde(flatten)]
    pub checkpoint: Stored,
    /// Under the keys the service published on its own events topic.
    pub signature: Signature,
    /// Whether the projector's copy of the events gives this root; null
    /// while it does not hold every event the checkpoint covers.
    pub matches_events: Option<bool>,
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    pub context: Name,
    pub from: u64,
    pub to: u64,
}

/// RFC 9162 consistency proof that the tree of `from` events is a prefix
/// of the tree of `to`, from the projector's copy of the events; the
/// caller checks it against the two signed roots.
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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "context": c,
        "from": q.from,
        "to": q.to,
        "from_root": hex::encode(tree.root(q.from)),
        "to_root": hex::encode(tree.root(q.to)),
        "proof": tree.consistency_proof(q.from, q.to).iter().map(hex::encode).collect::<Vec<_>>(),
    })))
}
