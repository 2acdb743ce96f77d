//! `GET /v1/audit`: filtered pages of the audit trail, or the whole filtered
//! trail streamed as NDJSON or CSV, row by row, without holding it in memory.
//! The rows, and the stream of them, are `store::audit`'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use contracts::text::Text;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use service_kit::{Problem, Query};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};
use uuid::Uuid;

use super::licenses::limit_of;
use super::unavailable;
use crate::store::audit::{self as store, AuditRecord, Filter};
use crate::App;

const MAX_TEXT: usize = 256;

/// How the trail is answered: a page of JSON, or the whole filtered trail
/// streamed as NDJSON or CSV.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Ndjson,
    Csv,
}

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub license_id: Option<Uuid>,
    /// The actor's id (an API key's id, a service, a license id), 1-256
    /// characters.
    #[param(value_type = Option<Text<256>>)]
    pub actor: Option<Text<MAX_TEXT>>,
    /// 1-256 characters.
    #[param(value_type = Option<Text<256>>)]
    pub event_type: Option<Text<MAX_TEXT>>,
    /// 1-256 characters.
    #[param(value_type = Option<Text<256>>)]
    pub correlation_id: Option<Text<MAX_TEXT>>,
    /// Recorded at or after.
    #[serde(default, with = "contracts::time::strict_option")]
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    #[serde(default, with = "contracts::time::strict_option")]
    pub to: Option<DateTime<Utc>>,
    /// The last `event_id` of the previous page (pages only).
    pub cursor: Option<Uuid>,
    /// Events per page (pages only; default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `json` (default): a page; `ndjson`, `csv`: every matching event.
    #[serde(default)]
    #[param(inline)]
    pub format: Format,
}

/// A page of the audit trail, in `event_id` order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    /// The `cursor` of the next page; null on the last one.
    #[schema(required = true, value_type = Option<Uuid>)]
    pub next_cursor: Option<String>,
}

/// CSV header; `payload` is the event's JSON text.
const CSV_HEADER: &str = "event_id,context,aggregate_type,aggregate_id,sequence,license_id,\
     event_type,event_version,occurred_at,recorded_at,actor_kind,actor_id,actor_via,command_id,\
     correlation_id,causation_id,payload,prev_hash,hash\n";

fn check(q: &AuditQuery) -> Result<(), Problem> {
    for (field, v) in [
        ("actor", &q.actor),
        ("event_type", &q.event_type),
        ("correlation_id", &q.correlation_id),
    ] {
        if v.as_ref().is_some_and(|v| v.is_empty()) {
            return Err(Problem::unprocessable(
                "INVALID_FILTER",
                format!("{field} must be 1-{MAX_TEXT} characters"),
            )
            .with_field(field));
        }
    }
    if let (Some(from), Some(to)) = (q.from, q.to) {
        if from > to {
            return Err(
                Problem::unprocessable("INVALID_RANGE", "from must not be after to")
                    .with_field("from"),
            );
        }
    }
    if q.format != Format::Json && (q.cursor.is_some() || q.limit.is_some()) {
        return Err(Problem::unprocessable(
            "EXPORT_NOT_PAGED",
            "exports stream every matching event; cursor and limit are for pages",
        )
        .with_field(if q.cursor.is_some() {
            "cursor"
        } else {
            "limit"
        }));
    }
    Ok(())
}

fn filter(q: &AuditQuery) -> Filter {
    Filter {
        license_id: q.license_id,
        actor: q.actor.as_ref().map(|v| v.to_string()),
        event_type: q.event_type.as_ref().map(|v| v.to_string()),
        correlation_id: q.correlation_id.as_ref().map(|v| v.to_string()),
        from: q.from,
        to: q.to,
        cursor: q.cursor,
    }
}

/// The audit trail of every context, filtered: a page of it, or all of it
/// streamed (`format`).
///
/// An export that cannot reach its last row (a failure, or the export's
/// time bound) ends with an error line — NDJSON
/// `{"error": {"code": "EXPORT_INCOMPLETE", "message": …}}`, CSV
/// `#error,EXPORT_INCOMPLETE,…` — and an unclean end of the chunked body.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses((status = 200, description = "A page (`json`), or the export: NDJSON, one event per line as in a page's `items`; or CSV with a header row, `payload` as JSON text.", content(
            (AuditPage = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"))),
        super::Refused, service_kit::openapi::Denied, super::Unavailable),
    security(("api_key" = ["auditor"])))]
pub async fn query(app: web::Data<App>, q: Query<AuditQuery>) -> Result<HttpResponse, Problem> {
    let q = q.into_inner();
    check(&q)?;
    if q.format != Format::Json {
        return export(app.pool.clone(), q, app.export_timeout).await;
    }
    let limit = limit_of(q.limit)?;
    let items = store::page(&app.pool, &filter(&q), limit)
        .await
        .map_err(unavailable)?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.event_id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}

/// Streams rows as the database sends them; the bounded channel holds the
/// query back while the client reads slowly.
///
/// The answer starts only once the query has produced its first row (or
/// its end), so a query that fails at once is a 503, not a `200 OK` with
/// an empty body. Past that, a failure or the end of `limit` (the export's
/// time bound, however slowly the client reads) ends the body with an
/// error line (NDJSON `{"error": …}`, CSV `#error,…`) once the client has
/// read what was already queued, and always with an unclean chunked end:
/// only an export that reached its last row ends cleanly.
async fn export(pool: PgPool, q: AuditQuery, limit: Duration) -> Result<HttpResponse, Problem> {
    let format = q.format;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (started, first) = oneshot::channel::<Result<(), Problem>>();
    let complete = Arc::new(AtomicBool::new(false));
    let done = complete.clone();
    tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        let mut started = Some(started);
        let mut trail = store::export(pool, &filter(&q));
        let mut rows = trail.rows();
        if format == Format::Csv {
            let _ = tx.try_send(Bytes::from(CSV_HEADER));
        }
        let failure = loop {
            let row = match timeout_at(deadline, rows.try_next()).await {
                Err(_) => break "the export took longer than its time bound".to_string(),
                Ok(Err(e)) => {
                    if let Some(s) = started.take() {
                        let _ = s.send(Err(unavailable(e)));
                        return;
                    }
                    tracing::error!(error = %e, "audit export failed mid-stream");
                    break "the audit trail could not be read to the end".to_string();
                }
                Ok(Ok(None)) => {
                    done.store(true, Ordering::SeqCst);
                    if let Some(s) = started.take() {
                        let _ = s.send(Ok(()));
                    }
                    return;
                }
                Ok(Ok(Some(r))) => r,
            };
            if let Some(s) = started.take() {
                let _ = s.send(Ok(()));
            }
            let line = match row
                .map_err(|e| e.to_string())
                .and_then(|r| line_of(format, &r))
            {
                Ok(line) => line,
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed mid-stream");
                    break "a row of the audit trail could not be read".to_string();
                }
            };
            match timeout_at(deadline, tx.send(Bytes::from(line))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return, // the client went away
                Err(_) => break "the export took longer than its time bound".to_string(),
            }
        };
        // The client may be behind by a channel's worth of rows: give it
        // a moment to take them and then the reason, never past the bound.
        let grace = deadline.min(Instant::now() + Duration::from_secs(30));
        let _ = timeout_at(grace, tx.send(Bytes::from(error_line(format, &failure)))).await;
    });
    match first.await {
        Ok(Ok(())) => {}
        Ok(Err(p)) => return Err(p),
        Err(_) => return Err(Problem::internal()),
    }
    let body = futures::stream::unfold((rx, false), move |(mut rx, cut)| {
        let complete = complete.clone();
        async move {
            if cut {
                return None;
            }
            match rx.recv().await {
                Some(bytes) => Some((Ok(bytes), (rx, false))),
                // The sender is gone: a clean end only after the last row.
                None if complete.load(Ordering::SeqCst) => None,
                None => {
                    // A moment for what is queued (the error line) to reach
                    // the socket: the server cuts the connection at once.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let cut = std::io::Error::other("audit export cut short");
                    Some((Err(cut), (rx, true)))
                }
            }
        }
    });
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        _ => "application/x-ndjson",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .streaming(body))
}

/// The last line of an export that did not reach its end.
fn error_line(format: Format, message: &str) -> String {
    match format {
        Format::Csv => format!("#error,EXPORT_INCOMPLETE,{}\n", csv_field(message)),
        _ => format!(
            "{}\n",
            serde_json::json!({"error": {"code": "EXPORT_INCOMPLETE", "message": message}})
        ),
    }
}

fn line_of(format: Format, r: &AuditRecord) -> Result<String, String> {
    match format {
        Format::Csv => {
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            let fields = [
                r.event_id.to_string(),
                r.context.clone(),
                r.aggregate_type.clone(),
                r.aggregate_id.clone(),
                r.sequence.to_string(),
                r.license_id.map(|v| v.to_string()).unwrap_or_default(),
                r.event_type.clone(),
                r.event_version.clone(),
                r.occurred_at.to_rfc3339(),
                r.recorded_at.to_rfc3339(),
                r.actor.kind.clone(),
                r.actor.id.clone(),
                r.actor.via.clone().unwrap_or_default(),
                r.command_id.to_string(),
                r.correlation_id.clone(),
                opt(&r.causation_id),
                r.payload.to_string(),
                r.prev_hash.clone(),
                r.hash.clone(),
            ];
            let mut line = fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(",");
            line.push('\n');
            Ok(line)
        }
        _ => {
            let mut line = serde_json::to_string(r).map_err(|e| e.to_string())?;
            line.push('\n');
            Ok(line)
        }
    }
}

/// RFC 4180 quoting; a leading formula character is quoted behind an
/// apostrophe so a spreadsheet shows the value rather than running it.
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("{\"a\":1}"), "\"{\"\"a\"\":1}\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
