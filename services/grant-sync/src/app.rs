//! Grant-sync use cases behind the HTTP API, the consumers and the
//! scheduler: register clients, check out and renew leases, answer syncs
//! with signed grant documents, pull from upstreams.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::grants::*;
use contracts::ErrorKind;
use eventstore::{derived_id, CommandContext, Executed, Repository};
use service_kit::auth::Principal;
use service_kit::cache::TtlCache;
use service_kit::command::Failure;
use service_kit::keys::Signer;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::*;
use crate::flight::SingleFlight;
use crate::heartbeat::{Beat, Heartbeats};
use crate::notify::Notifier;
use crate::remote::{Remote, Target};
use crate::secrets::SecretBox;
use crate::store::{self, ClientRow, Cursor, StoredSecret};

/// Settings the use cases need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub clock_tolerance_secs: u32,
    pub sync_wait: Duration,
    pub sync_max_wait: Duration,
}

pub struct GrantSync {
    pub pool: PgPool,
    pub clients: Repository<Client>,
    pub leases: Repository<Leases>,
    pub upstreams: Repository<Upstream>,
    pub imported: Repository<ImportedLicense>,
    pub signer: Arc<Signer>,
    pub heartbeats: Heartbeats,
    pub notifier: Notifier,
    pub remote: Remote,
    pub settings: Settings,
    secrets: SecretBox,
    clock: Arc<dyn Clock>,
    clients_seen: TtlCache<String, ClientRow>,
    feeds: SingleFlight<FeedKey, Arc<(Vec<store::FeedRow>, Cursor)>>,
    grant_sets: SingleFlight<FeedKey, Arc<Vec<Grant>>>,
}

/// A set of licenses read from a cursor: what single-flight reads share.
type FeedKey = (Vec<Uuid>, Cursor);

impl AsRef<Signer> for GrantSync {
    fn as_ref(&self) -> &Signer {
        &self.signer
    }
}

/// A client's licenses never change after registration, and its
/// revocation is enforced by its API key (checked on every request), so
/// the client row can be kept long.
const CLIENT_CACHE: Duration = Duration::from_secs(300);

fn flight_failure(e: String) -> Failure {
    tracing::error!(error = %e, "sync read failed");
    Failure::Store(eventstore::StoreError::Corrupt(
        "the grant store is unavailable".into(),
    ))
}

fn checked<A>(done: Result<Executed<A>, eventstore::StoreError>) -> Result<Executed<A>, Failure> {
    let done = done?;
    if done.outcome.status == contracts::OutcomeStatus::Rejected {
        return Err(Failure::Rejected(Box::new(done.outcome)));
    }
    Ok(done)
}

/// A client as the HTTP answer and a command's outcome show it (the token
/// only once, on registration).
pub fn client_view(s: &client::ClientState, token: Option<String>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "client_id": s.client_id,
        "name": s.name,
        "key_id": s.key_id,
        "licenses": s.licenses,
        "allowlist": s.allowlist,
        "callback_url": s.callback_url,
        "registered_at": s.registered_at,
        "revoked": s.revoked,
        "scopes": ["sync-client"],
    });
    if let Some(t) = token {
        v["token"] = t.into();
    }
    v
}

/// An upstream as the HTTP answer and a command's outcome show it (never
/// its secret).
pub fn upstream_view(u: &Upstream) -> serde_json::Value {
    let Some(r) = &u.registered else {
        return serde_json::Value::Null;
    };
    let syncs: serde_json::Map<String, serde_json::Value> = SyncResource::ALL
        .iter()
        .map(|res| {
            let key = serde_json::to_value(res)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let v = u.syncs.get(res).map_or(
                serde_json::json!({"last_sync_at": null, "status": "never"}),
                |s| {
                    serde_json::json!({
                        "last_sync_at": s.synced_at, "status": s.status,
                        "items": s.items, "message": s.message,
                    })
                },
            );
            (key, v)
        })
        .collect();
    serde_json::json!({
        "upstream_id": r.upstream_id,
        "name": r.name,
        "member_id": r.member_id,
        "endpoint": r.endpoint,
        "secret_digest": r.secret_digest,
        "price_protection": r.price_protection,
        "remark": r.remark,
        "registered_at": r.registered_at,
        "last_check": u.last_check,
        "resources": syncs,
        "products": u.products.keys().collect::<Vec<_>>(),
    })
}

/// The resources a `SyncUpstream` names (`all`, or one of them).
pub fn resources_of(req: &SyncUpstream) -> Result<Vec<SyncResource>, Failure> {
    if req.resource.as_str() == "all" {
        return Ok(SyncResource::ALL.to_vec());
    }
    let one = serde_json::from_value(serde_json::Value::String(req.resource.to_string())).map_err(
        |_| {
            Failure::invalid(
                "INVALID_RESOURCE",
                "resource must be catalog, licenses, revocations or all",
            )
            .with_field("resource")
        },
    )?;
    Ok(vec![one])
}

/// A command this server gives itself (scheduler, reactions without a
/// causing event), its id derived from what it is about.
pub fn system_context(command_type: &str, about: &str) -> CommandContext {
    CommandContext {
        command_id: derived_id(Uuid::nil(), about),
        command_type: command_type.into(),
        correlation_id: about.into(),
        causation_id: None,
        actor: contracts::Actor::new(contracts::ActorKind::System, crate::SERVICE),
        occurred_at: Utc::now(),
        request_digest: eventstore::request_digest(command_type, &about),
    }
}

impl GrantSync {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: PgPool,
        services: GrantServices,
        signer: Arc<Signer>,
        heartbeats: Heartbeats,
        notifier: Notifier,
        remote: Remote,
        settings: Settings,
        secrets: SecretBox,
    ) -> Self {
        let clock = services.clock.clone();
        Self {
            clients: Repository::new(pool.clone(), services.clone())
                .with_projection(Arc::new(store::ClientIndex)),
            leases: Repository::new(pool.clone(), services.clone())
                .with_projection(Arc::new(store::LeaseIndex))
                .with_local_serialisation(),
            upstreams: Repository::new(pool.clone(), services.clone())
                .with_projection(Arc::new(store::UpstreamIndex)),
            imported: Repository::new(pool.clone(), services)
                .with_projection(Arc::new(store::ImportedIndex))
                .with_local_serialisation(),
            pool,
            signer,
            heartbeats,
            notifier,
            remote,
            settings,
            secrets,
            clock,
            clients_seen: TtlCache::new(CLIENT_CACHE),
            feeds: SingleFlight::default(),
            grant_sets: SingleFlight::default(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    // ------------------------------------------------------------ clients

    /// Registers a client; its state and its bearer token (shown once).
    pub async fn register_client(
        &self,
        ctx: &CommandContext,
        spec: RegisterClient,
    ) -> Result<(client::ClientState, Option<String>), Failure> {
        let client_id = Uuid::now_v7();
        let key_id = format!("SC{}", client_id.simple());
        let secret = service_kit::auth::new_secret();
        let known: BTreeSet<Uuid> = store::known_licenses(&self.pool, &spec.licenses)
            .await?
            .into_iter()
            .collect();
        let command = ClientCommand::Register {
            client_id,
            key_id: key_id.clone(),
            secret_digest: service_kit::auth::secret_digest(&secret),
            spec,
            known,
        };
        let done = checked(
            self.clients
                .execute_new(&client_id.to_string(), command, ctx)
                .await,
        )?;
        let state = done
            .aggregate
            .state
            .ok_or_else(|| Failure::internal("state the command just stored"))?;
        // A replayed registration cannot show the secret again.
        let token = (!done.replayed).then(|| format!("{}.{secret}", state.key_id));
        Ok((state, token))
    }

    pub async fn client_state(&self, client_id: Uuid) -> Result<client::ClientState, Failure> {
        let (c, _) = self.clients.load(&client_id.to_string()).await?;
        c.state
            .ok_or_else(|| Failure::not_found("CLIENT_NOT_FOUND", "no such client"))
    }

    pub async fn revoke_client(
        &self,
        ctx: &CommandContext,
        client_id: Uuid,
        reason: String,
    ) -> Result<client::ClientState, Failure> {
        let done = checked(
            self.clients
                .execute(
                    &client_id.to_string(),
                    ClientCommand::Revoke { reason },
                    ctx,
                )
                .await,
        )?;
        done.aggregate
            .state
            .ok_or_else(|| Failure::internal("state the command just stored"))
    }

    /// The client behind a request's credentials, if any (revoked ones
    /// included: the API tells them apart; only live ones are cached).
    pub async fn client(&self, principal: &Principal) -> Result<Option<ClientRow>, Failure> {
        if let Some(c) = self.clients_seen.get(&principal.key_id) {
            return Ok(Some(c));
        }
        let row = store::client_by_key(&self.pool, &principal.key_id).await?;
        if let Some(live) = row.as_ref().filter(|r| !r.revoked) {
            self.clients_seen
                .insert(principal.key_id.clone(), live.clone());
        }
        Ok(row)
    }

    /// The products of the client's licenses.
    pub async fn catalog(&self, client: &ClientRow) -> Result<Vec<CatalogProduct>, Failure> {
        Ok(store::catalog_of(&self.pool, &client.licenses).await?)
    }

    pub fn assigned(client: &ClientRow, license_id: Uuid) -> Result<(), Failure> {
        if client.licenses.contains(&license_id) {
            Ok(())
        } else {
            Err(Failure::refused(
                "LICENSE_NOT_ASSIGNED",
                ErrorKind::Forbidden,
                "this license is not assigned to this client",
            )
            .with_field("license_id"))
        }
    }

    /// The client's reported clock under the rule every context shares
    /// (`contracts::decision::client_clock`): kept as its latest time (a
    /// time ahead of the server's is kept as the server's, so one wrong
    /// reading locks nothing out), refused and recorded when set back;
    /// refused when missing where `required` — given for a checkout (its
    /// license's policy); for a sync or a heartbeat, when any license of
    /// the client requires it (so a client cannot keep a lease alive by
    /// no longer telling its time).
    pub async fn check_clock(
        &self,
        client: &ClientRow,
        time: Option<DateTime<Utc>>,
        required: Option<bool>,
    ) -> Result<(), Failure> {
        use contracts::decision::{client_clock, recordable, ClientClock};
        let tolerance = chrono::Duration::seconds(i64::from(self.settings.clock_tolerance_secs));
        let now = self.now();
        let Some(time) = time else {
            let required = match required {
                Some(r) => r,
                None => store::clock_required(&self.pool, &client.licenses).await?,
            };
            if required {
                return Err(Failure::invalid(
                    "CLIENT_TIME_REQUIRED",
                    "this license's policy requires the client's clock (client_time)",
                )
                .with_field("client_time"));
            }
            return Ok(());
        };
        let last =
            store::report_client_time(&self.pool, client.client_id, recordable(time, now)).await?;
        let ClientClock::RolledBack { last_seen: last } =
            client_clock(Some(time), last, now, tolerance, false)
        else {
            return Ok(());
        };
        // One record per time fallen back from: a client stuck behind it is
        // refused each time, recorded once.
        let ctx = system_context(
            RECORD_CLIENT_CLOCK,
            &format!("clock:{}:{}", client.client_id, last.timestamp_micros()),
        );
        let command = ClientCommand::ClockRollback {
            reported: time,
            last,
            tolerance_secs: self.settings.clock_tolerance_secs,
        };
        let done = self
            .clients
            .execute(&client.client_id.to_string(), command, &ctx)
            .await?;
        if done.outcome.status == contracts::OutcomeStatus::Rejected {
            return Err(Failure::Rejected(Box::new(done.outcome)));
        }
        Err(Failure::conflict(
            "CLOCK_ROLLBACK",
            "the client's clock went backwards",
        ))
    }

    // ------------------------------------------------------------ leases

    pub async fn grant(&self, license_id: Uuid) -> Result<Grant, Failure> {
        store::grant(&self.pool, license_id)
            .await?
            .ok_or_else(|| Failure::not_found("LICENSE_NOT_FOUND", "no such license"))
    }

    pub async fn checkout(
        &self,
        ctx: &CommandContext,
        client: &ClientRow,
        req: CheckoutLease,
    ) -> Result<Lease, Failure> {
        Self::assigned(client, req.license_id)?;
        let grant = self.grant(req.license_id).await?;
        self.check_clock(client, req.client_time, Some(grant.require_client_time))
            .await?;
        let bundles = store::bundles_of(&self.pool, &grant.product).await?;
        let lease_id = derived_id(ctx.command_id, "lease");
        let command = LeasesCommand::Checkout {
            lease_id,
            client_id: client.client_id,
            grant: Box::new(grant),
            bundles,
            feature: req.feature.into(),
            quantity: req.quantity,
        };
        let done = checked(
            self.leases
                .execute(&req.license_id.to_string(), command, ctx)
                .await,
        )?;
        done.aggregate
            .leases
            .get(&lease_id)
            .cloned()
            .ok_or_else(|| Failure::internal("state the command just stored"))
    }

    pub async fn heartbeat(&self, client: &ClientRow, lease_id: Uuid) -> Result<Beat, Failure> {
        self.heartbeats
            .beat(lease_id, client.client_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "heartbeat failed");
                Failure::Store(eventstore::StoreError::Corrupt(
                    "the lease store is unavailable".into(),
                ))
            })
    }

    /// The license and heartbeat deadline of one of the client's leases.
    async fn lease_row(
        &self,
        client: &ClientRow,
        lease_id: Uuid,
    ) -> Result<(Uuid, DateTime<Utc>), Failure> {
        sqlx::query_as(
            "SELECT license_id, deadline FROM leases WHERE lease_id = $1 AND client_id = $2",
        )
        .bind(lease_id)
        .bind(client.client_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Failure::not_found("LEASE_NOT_FOUND", "no such lease"))
    }

    /// One of the client's leases: its license, its deadline, its state.
    pub async fn lease(
        &self,
        client: &ClientRow,
        lease_id: Uuid,
    ) -> Result<(Uuid, DateTime<Utc>, Lease), Failure> {
        let (license_id, deadline) = self.lease_row(client, lease_id).await?;
        let (leases, _) = self.leases.load(&license_id.to_string()).await?;
        let lease = leases
            .leases
            .get(&lease_id)
            .cloned()
            .ok_or_else(|| Failure::not_found("LEASE_NOT_FOUND", "no such lease"))?;
        Ok((license_id, deadline, lease))
    }

    pub async fn release(
        &self,
        ctx: &CommandContext,
        client: &ClientRow,
        lease_id: Uuid,
    ) -> Result<(Uuid, Lease), Failure> {
        let (license_id, _) = self.lease_row(client, lease_id).await?;
        let command = LeasesCommand::Release {
            lease_id,
            client_id: client.client_id,
        };
        let done = checked(
            self.leases
                .execute(&license_id.to_string(), command, ctx)
                .await,
        )?;
        let lease = done
            .aggregate
            .leases
            .get(&lease_id)
            .cloned()
            .ok_or_else(|| Failure::internal("state the command just stored"))?;
        Ok((license_id, lease))
    }

    /// Ends every live lease of a license (of one client, when given);
    /// with `license_version`, checkouts decided on older versions of the
    /// license are refused from now on.
    pub async fn revoke_leases(
        &self,
        ctx: &CommandContext,
        license_id: Uuid,
        reason: LeaseEndReason,
        client_id: Option<Uuid>,
        license_version: Option<u64>,
    ) -> Result<(), Failure> {
        let command = LeasesCommand::Revoke {
            license_id,
            reason,
            client_id,
            license_version,
        };
        checked(
            self.leases
                .execute(&license_id.to_string(), command, ctx)
                .await,
        )?;
        Ok(())
    }

    /// Reclaims leases whose heartbeats stopped: marks them `expiring` (no
    /// heartbeat is accepted from then on) and records `LeaseExpired`. A
    /// crash in between leaves them `expiring`, and the next round
    /// finishes them; the derived command id makes a repeat a no-op.
    pub async fn reclaim_due(&self) -> Result<usize, Failure> {
        let now = self.now();
        let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
            "WITH due AS (SELECT lease_id FROM leases WHERE status = 'live' \
               AND deadline + make_interval(secs => grace_secs) <= $1 \
               ORDER BY deadline LIMIT 500 FOR UPDATE SKIP LOCKED) \
             UPDATE leases l SET status = 'expiring' FROM due WHERE l.lease_id = due.lease_id \
             RETURNING l.lease_id, l.license_id, l.deadline",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut pending: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT lease_id, license_id, deadline FROM leases WHERE status = 'expiring' LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        pending.extend(rows);
        pending.sort();
        pending.dedup();
        for (lease_id, license_id, deadline) in &pending {
            let ctx = system_context(EXPIRE_LEASE, &format!("expire-lease:{lease_id}"));
            let command = LeasesCommand::Expire {
                lease_id: *lease_id,
                deadline: *deadline,
            };
            let done = self
                .leases
                .execute(&license_id.to_string(), command, &ctx)
                .await?;
            // Ended meanwhile (released, revoked): the index already says so.
            if done.aggregate.leases.get(lease_id).map(|l| l.status) == Some(LeaseStatus::Live) {
                tracing::warn!(%lease_id, "lease still live after expiry");
            }
        }
        Ok(pending.len())
    }

    // ------------------------------------------------------------ sync

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
    ) -> Result<serde_json::Value, Failure> {
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
        let grants: &[Grant] = &grants;
        Ok(serde_json::json!({
            "changes": changes,
            "revocations": revocations,
            "grants": grants,
            "server_time": now,
            "next_cursor": next.encode(),
            "grant_document": document,
            "valid_until": valid_until,
        }))
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

    // ------------------------------------------------------------ upstreams

    pub async fn register_upstream(
        &self,
        ctx: &CommandContext,
        spec: RegisterUpstream,
    ) -> Result<Upstream, Failure> {
        let upstream_id = derived_id(ctx.command_id, "upstream");
        let secret_digest = service_kit::auth::secret_digest(&spec.secret);
        let sealed = self
            .secrets
            .seal(upstream_id, &spec.secret)
            .map_err(|e| Failure::internal(&format!("sealing an upstream secret failed: {e}")))?;
        // The secret is kept apart from the events; a registration that
        // fails leaves a row nothing refers to.
        store::insert_upstream_secret(&self.pool, upstream_id, &sealed).await?;
        let command = UpstreamCommand::Register {
            upstream_id,
            spec,
            secret_digest,
        };
        let done = checked(
            self.upstreams
                .execute(&upstream_id.to_string(), command, ctx)
                .await,
        );
        if done.is_err() {
            let _ = store::delete_orphan_secret(&self.pool, upstream_id).await;
        }
        Ok(done?.aggregate)
    }

    pub async fn upstream(&self, upstream_id: Uuid) -> Result<Upstream, Failure> {
        let (u, _) = self.upstreams.load(&upstream_id.to_string()).await?;
        if u.registered.is_none() {
            return Err(Failure::not_found("UPSTREAM_NOT_FOUND", "no such upstream"));
        }
        Ok(u)
    }

    async fn credentials(
        &self,
        upstream_id: Uuid,
    ) -> Result<(UpstreamRegistered, String, Vec<PinnedKey>), Failure> {
        let u = self.upstream(upstream_id).await?;
        let pinned = u.pinned_keys.clone();
        let reg = u
            .registered
            .ok_or_else(|| Failure::internal("state the command just stored"))?;
        let stored = store::upstream_secret(&self.pool, upstream_id)
            .await?
            .ok_or_else(|| {
                Failure::conflict(
                    "UPSTREAM_SECRET_MISSING",
                    "the upstream's secret is not stored here",
                )
            })?;
        let secret = match stored {
            StoredSecret::Sealed(sealed) => {
                self.secrets.open(upstream_id, &sealed).map_err(|e| {
                    tracing::error!(upstream = %upstream_id, error = %e,
                        "an upstream secret does not open: wrong upstream_secret_key_file, \
                         or the row was altered or copied from another upstream");
                    Failure::conflict(
                        "UPSTREAM_SECRET_UNREADABLE",
                        "the upstream's stored secret does not open under this server's \
                         upstream secret key; register the upstream again",
                    )
                })?
            }
            StoredSecret::Plaintext(secret) => secret,
        };
        Ok((reg, secret, pinned))
    }

    pub async fn check_upstream(
        &self,
        ctx: &CommandContext,
        upstream_id: Uuid,
    ) -> Result<Upstream, Failure> {
        let (reg, secret, _) = self.credentials(upstream_id).await?;
        let target = Target {
            endpoint: &reg.endpoint,
            token: &secret,
            allow_http: reg.allow_insecure_http,
        };
        let result = self.remote.check(&target, reg.member_id).await;
        let done = checked(
            self.upstreams
                .execute(
                    &upstream_id.to_string(),
                    UpstreamCommand::RecordCheck(result),
                    ctx,
                )
                .await,
        )?;
        Ok(done.aggregate)
    }

    /// Pulls `resources` from an upstream, one recorded sync each.
    pub async fn sync_upstream(
        &self,
        ctx: &CommandContext,
        upstream_id: Uuid,
        resources: &[SyncResource],
    ) -> Result<Upstream, Failure> {
        let (reg, secret, pinned) = self.credentials(upstream_id).await?;
        let target = Target {
            endpoint: &reg.endpoint,
            token: &secret,
            allow_http: reg.allow_insecure_http,
        };
        let mut last = None;
        for (i, resource) in resources.iter().enumerate() {
            let (mut result, items, products, skipped) = match resource {
                SyncResource::Catalog => match self.remote.catalog(&target).await {
                    Ok((products, r)) => {
                        let (products, skipped) = self.own_products(upstream_id, products).await?;
                        (r, 0, products, skipped)
                    }
                    Err(r) => (r, 0, vec![], 0),
                },
                SyncResource::Licenses | SyncResource::Revocations => {
                    match self
                        .remote
                        .pull(&target, reg.member_id, &pinned, self.now())
                        .await
                    {
                        Ok((pulled, r)) => {
                            let (n, skipped) =
                                self.import(ctx, upstream_id, *resource, pulled).await?;
                            (r, n, vec![], skipped)
                        }
                        Err(r) => (r, 0, vec![], 0),
                    }
                }
            };
            if skipped > 0 {
                result.message = format!(
                    "{}; {skipped} skipped: held here or by another upstream",
                    result.message
                );
            }
            // One command per resource: its own id, derived from the request's.
            let mut step = ctx.clone();
            step.command_id = derived_id(ctx.command_id, &format!("sync:{i}"));
            let command = UpstreamCommand::RecordSync {
                resource: *resource,
                result,
                items,
                products,
            };
            let done = checked(
                self.upstreams
                    .execute(&upstream_id.to_string(), command, &step)
                    .await,
            )?;
            last = Some(done.aggregate);
        }
        last.ok_or_else(|| Failure::internal("state the command just stored"))
    }

    /// Who holds each of `ids` here: None for this server's own licenses,
    /// an upstream's id for imported ones; absent when unknown.
    async fn holders(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Option<Uuid>>, Failure> {
        let rows: Vec<(Uuid, Option<Uuid>)> =
            sqlx::query_as("SELECT license_id, upstream_id FROM grants WHERE license_id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// The products an upstream may define here: not this server's own,
    /// not another upstream's. And how many were left out.
    async fn own_products(
        &self,
        upstream_id: Uuid,
        products: Vec<CatalogProduct>,
    ) -> Result<(Vec<CatalogProduct>, u32), Failure> {
        let codes: Vec<String> = products.iter().map(|p| p.code.clone()).collect();
        let held: HashMap<String, Option<Uuid>> =
            sqlx::query_as("SELECT code, upstream_id FROM products WHERE code = ANY($1)")
                .bind(&codes)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        let total = products.len();
        let kept: Vec<CatalogProduct> = products
            .into_iter()
            .filter(|p| held.get(&p.code).is_none_or(|h| *h == Some(upstream_id)))
            .collect();
        let skipped = u32::try_from(total - kept.len()).unwrap_or(u32::MAX);
        Ok((kept, skipped))
    }

    /// Imports grants (or revocations) from an upstream: how many changed,
    /// and how many were left out (a license held here or by another
    /// upstream; a revocation of a license not imported from this one).
    async fn import(
        &self,
        ctx: &CommandContext,
        upstream_id: Uuid,
        resource: SyncResource,
        pulled: crate::remote::Pulled,
    ) -> Result<(u32, u32), Failure> {
        let mut changed = 0;
        let mut skipped = 0;
        let ids: Vec<Uuid> = match resource {
            SyncResource::Licenses => pulled.grants.iter().map(|g| g.license_id).collect(),
            _ => pulled.revocations.iter().map(|r| r.license_id).collect(),
        };
        let holders = self.holders(&ids).await?;
        let ours = |id: &Uuid| holders.get(id) == Some(&Some(upstream_id));
        let mut by_license: HashMap<Uuid, Vec<Revocation>> = HashMap::new();
        if resource == SyncResource::Revocations {
            for r in pulled.revocations {
                if ours(&r.license_id) {
                    by_license.entry(r.license_id).or_default().push(r);
                } else {
                    skipped += 1;
                }
            }
        }
        let grants: Vec<Grant> = pulled
            .grants
            .into_iter()
            .filter(|_| resource == SyncResource::Licenses)
            .filter(|g| {
                let free = !holders.contains_key(&g.license_id) || ours(&g.license_id);
                if !free {
                    skipped += 1;
                }
                free
            })
            .collect();
        let items: Vec<(Uuid, Option<Grant>, Vec<Revocation>)> = match resource {
            SyncResource::Licenses => grants
                .into_iter()
                .map(|g| (g.license_id, Some(g), vec![]))
                .collect(),
            _ => by_license
                .into_iter()
                .map(|(id, rs)| (id, None, rs))
                .collect(),
        };
        for (license_id, grant, revocations) in items {
            let mut step = ctx.clone();
            step.command_id = derived_id(
                ctx.command_id,
                &format!(
                    "import:{license_id}:{}",
                    serde_json::to_string(&grant).unwrap_or_default()
                ),
            );
            step.command_type = IMPORT_LICENSE.into();
            let command = ImportedLicenseCommand::Import {
                upstream_id,
                grant,
                revocations,
            };
            let done = checked(
                self.imported
                    .execute(&license_id.to_string(), command, &step)
                    .await,
            )?;
            let a = &done.aggregate;
            if a.grant_changed.is_some() || !a.new_revocations.is_empty() {
                changed += 1;
            }
        }
        Ok((changed, skipped))
    }
}

/// Seals every upstream secret still stored in plaintext (from before
/// secrets were sealed), once the key is known to be the one the sealed
/// ones were sealed with: a wrong key would otherwise seal them under a key
/// nothing else opens with. Refuses when no sealed secret opens; names the
/// upstreams of single ones that do not (altered or moved rows).
pub async fn seal_stored_secrets(
    pool: &PgPool,
    secrets: &SecretBox,
    key_file: &str,
) -> Result<(), service_kit::platform::PlatformError> {
    use service_kit::platform::PlatformError;
    let stored = store::upstream_secrets(pool).await?;
    let (mut sealed, mut unreadable) = (0usize, Vec::new());
    for (id, s) in &stored {
        if let StoredSecret::Sealed(s) = s {
            sealed += 1;
            if secrets.open(*id, s).is_err() {
                unreadable.push(*id);
            }
        }
    }
    if sealed > 0 && unreadable.len() == sealed {
        return Err(PlatformError::Config(format!(
            "upstream_secret_key_file {key_file} opens none of the {sealed} stored upstream \
             secrets: it is not the key they were sealed with"
        )));
    }
    for id in &unreadable {
        tracing::error!(upstream = %id,
            "an upstream secret does not open under upstream_secret_key_file \
             (altered, or copied from another upstream); register the upstream again");
    }
    let mut converted = 0;
    for (id, s) in &stored {
        if let StoredSecret::Plaintext(secret) = s {
            let s = secrets
                .seal(*id, secret)
                .map_err(|e| PlatformError::Config(format!("sealing upstream secrets: {e}")))?;
            if store::seal_plaintext_secret(pool, *id, &s).await? {
                converted += 1;
            }
        }
    }
    if converted > 0 {
        tracing::info!(
            count = converted,
            "sealed upstream secrets stored in plaintext"
        );
    }
    Ok(())
}
