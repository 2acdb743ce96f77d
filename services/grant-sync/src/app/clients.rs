//! Clients: registration and revocation, the client behind a request's
//! credentials (cached: every request asks), the catalog and licenses
//! assigned to it, and the rule for the clock a client reports. Every
//! other use case starts from the `ClientRow` these answer.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::grants::*;
use contracts::ErrorKind;
use eventstore::CommandContext;
use service_kit::auth::Principal;
use service_kit::command::Failure;
use uuid::Uuid;

use super::{checked, system_context, GrantSync};
use crate::domain::*;
use crate::store::{self, ClientRow};

/// A client's licenses never change after registration, and its
/// revocation is enforced by its API key (checked on every request), so
/// the client row can be kept long.
pub(super) const CLIENT_CACHE: Duration = Duration::from_secs(300);

/// The one scope a license client's credentials hold.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub enum ClientScope {
    #[serde(rename = "sync-client")]
    SyncClient,
}

/// A license client as the HTTP answer and a command's outcome show it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub client_id: Uuid,
    pub name: String,
    /// The id of its credentials (`<key_id>.<secret>`).
    pub key_id: String,
    pub licenses: Vec<Uuid>,
    /// Addresses or CIDRs it may connect from; empty means anywhere.
    pub allowlist: Vec<String>,
    /// Where the events of its licenses are delivered, signed.
    #[schema(required = true)]
    pub callback_url: Option<String>,
    /// The event types delivered there (empty without a callback, or for a
    /// client registered before webhooks, whose URL receives nothing until
    /// set again).
    pub callback_events: Vec<String>,
    /// The callback kept failing: nothing is sent until it is set again.
    pub callback_disabled: bool,
    pub registered_at: DateTime<Utc>,
    pub revoked: bool,
    pub scopes: Vec<ClientScope>,
    /// Its bearer token, `<key_id>.<secret>`: shown once, on registration
    /// (not on a replay of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub token: Option<String>,
}

/// A client as the HTTP answer and a command's outcome show it (the token
/// only once, on registration).
pub fn client_view(s: &client::ClientState, token: Option<String>) -> ClientView {
    ClientView {
        client_id: s.client_id,
        name: s.name.clone(),
        key_id: s.key_id.clone(),
        licenses: s.licenses.clone(),
        allowlist: s.allowlist.clone(),
        callback_url: s.callback_url.clone(),
        callback_events: s.callback_events.clone(),
        callback_disabled: s.callback_disabled,
        registered_at: s.registered_at,
        revoked: s.revoked,
        scopes: vec![ClientScope::SyncClient],
        token,
    }
}

impl GrantSync {
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

    /// Sets, changes or (None) removes the client's callback.
    pub async fn set_client_callback(
        &self,
        ctx: &CommandContext,
        client_id: Uuid,
        callback: Option<SetClientCallback>,
    ) -> Result<client::ClientState, Failure> {
        let done = checked(
            self.clients
                .execute(
                    &client_id.to_string(),
                    ClientCommand::SetCallback(callback),
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
}
