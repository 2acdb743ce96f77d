//! Sync: the long poll of `POST /v1/sync` (changes since a cursor, woken
//! by the change feed's notifications, reads shared among the clients
//! asking the same) and the signed grant document it answers with.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::grants::*;
use service_kit::command::Failure;

use super::GrantSync;
use crate::store::{self, ClientRow, Cursor};

/// The answer of `POST /v1/sync`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SyncAnswer {
    /// Changes since the cursor (on a first sync, every grant as
    /// `grant_added`); empty when none came within the wait.
    pub changes: Vec<Change>,
    /// Activations revoked since the cursor (on a first sync, all of the
    /// client's licenses').
    pub revocations: Vec<Revocation>,
    /// Every grant of the client's licenses, as they stand.
    pub grants: Vec<Grant>,
    pub server_time: DateTime<Utc>,
    /// The cursor of the next sync.
    pub next_cursor: String,
    /// The grant document: a compact JWS (ES256) under a key of this
    /// service's JWKS, whose claims hold the grants, live leases and
    /// revocations; valid offline until `valid_until`.
    pub grant_document: String,
    pub valid_until: DateTime<Utc>,
}

fn flight_failure(e: String) -> Failure {
    bus::outage::error("sync read", &e);
    Failure::Store(eventstore::StoreError::Corrupt(
        "the grant store is unavailable".into(),
    ))
}

impl GrantSync {
    /// The grant document of a client: its grants and live leases, signed,
    /// valid offline for the shortest grace of its licenses.
    pub fn grant_document(
        &self,
        client: &ClientRow,
        grants: &[Grant],
        leases: Vec<LeaseSummary>,
        revocations: &[Revocation],
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), Failure> {
        let grace = grants
            .iter()
            .map(|g| g.offline_grace_hours)
            .min()
            .unwrap_or(0);
        let valid_until = chrono::Duration::try_hours(i64::from(grace))
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(now);
        let claims = GrantClaims {
            iss: self.settings.issuer.clone(),
            sub: client.client_id.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: valid_until.timestamp(),
            typ: "grant-document".into(),
            client_id: client.client_id,
            server_time: now,
            valid_until,
            grants: grants.to_vec(),
            leases,
            revocations: revocations.to_vec(),
        };
        let jws = self
            .signer
            .sign(&claims)
            .map_err(|e| Failure::internal(&format!("signing a grant document failed: {e}")))?;
        Ok((jws, valid_until))
    }

    /// Answers `POST /v1/sync`: changes since the cursor (waiting up to the
    /// long-poll time when there are none), the revocation list, and the
    /// grant document.
    pub async fn sync(
        &self,
        client: &ClientRow,
        req: SyncRequest,
        cursor: Option<Cursor>,
    ) -> Result<SyncAnswer, Failure> {
        self.check_clock(client, req.client_time, None).await?;
        let wait = req
            .wait_ms
            .map_or(self.settings.sync_wait, Duration::from_millis)
            .min(self.settings.sync_max_wait);
        let (changes, revocations, next) = match cursor {
            None => {
                // Head first: anything after it shows as a change next time.
                let head = store::head(&self.pool).await?;
                let revocations = store::revocations_of(&self.pool, &client.licenses).await?;
                (Vec::new(), revocations, head)
            }
            Some(cursor) => {
                let (changes, next) = self.wait_for_changes(client, cursor, wait).await?;
                let revocations = changes
                    .iter()
                    .filter(|c| c.kind == ChangeKind::ActivationRevoked)
                    .filter_map(|c| serde_json::from_value(c.detail.clone()).ok())
                    .collect::<Vec<Revocation>>();
                (changes, revocations, next)
            }
        };
        let now = self.now();
        // Every client of these licenses answering from this cursor needs
        // the same grants.
        let (pool, licenses) = (self.pool.clone(), client.licenses.clone());
        let grants = self
            .grant_sets
            .run((client.licenses.clone(), next), move || async move {
                store::grants_of(&pool, &licenses)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(flight_failure)?;
        let changes = if req.cursor.is_none() {
            grants
                .iter()
                .map(|g| Change {
                    kind: ChangeKind::GrantAdded,
                    license_id: g.license_id,
                    at: now,
                    detail: serde_json::to_value(g).unwrap_or_default(),
                })
                .collect()
        } else {
            changes
        };
        let leases = store::live_leases(&self.pool, client.client_id).await?;
        let (document, valid_until) =
            self.grant_document(client, &grants, leases, &revocations, now)?;
        Ok(SyncAnswer {
            changes,
            revocations,
            grants: grants.to_vec(),
            server_time: now,
            next_cursor: next.encode(),
            grant_document: document,
            valid_until,
        })
    }

    async fn wait_for_changes(
        &self,
        client: &ClientRow,
        mut cursor: Cursor,
        wait: Duration,
    ) -> Result<(Vec<Change>, Cursor), Failure> {
        let mut rx = self.notifier.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        // After a relevant announcement, its row may still be below an older
        // open transaction's watermark: look again soon, for a while.
        let mut eager_until = tokio::time::Instant::now();
        loop {
            let (pool, licenses) = (self.pool.clone(), client.licenses.clone());
            let feed = self
                .feeds
                .run((client.licenses.clone(), cursor), move || async move {
                    store::changes_since(&pool, &licenses, cursor, 500)
                        .await
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(flight_failure)?;
            let next = feed.1;
            let changes: Vec<Change> = feed
                .0
                .iter()
                .filter(|(only, _)| only.is_none_or(|c| c == client.client_id))
                .map(|(_, c)| c.clone())
                .collect();
            let now = tokio::time::Instant::now();
            if !changes.is_empty() || now >= deadline {
                return Ok((changes, next));
            }
            if next != cursor {
                // Only other clients' rows (their leases): read on at once.
                cursor = next;
                continue;
            }
            // Notifications wake a waiter; the slow tick is only a safety net.
            let tick = if now < eager_until {
                Duration::from_millis(25)
            } else {
                Duration::from_secs(5)
            };
            let wake = (now + tick).min(deadline);
            loop {
                tokio::select! {
                    n = rx.recv() => match n {
                        Ok(id) if id.is_nil() || client.licenses.contains(&id) => {
                            eager_until = tokio::time::Instant::now() + Duration::from_secs(2);
                            break;
                        }
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(wake).await;
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(wake) => break,
                }
            }
        }
    }
}
