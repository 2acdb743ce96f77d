//! Grant-sync use cases behind the HTTP API, the consumers and the
//! scheduler: register clients, check out and renew leases, answer syncs
//! with signed grant documents, pull from upstreams.
//!
//! This file holds the `GrantSync` struct, its construction and what every
//! use case shares; the use cases are `impl GrantSync` blocks, one file
//! per part of the API they serve:
//! - `clients`: registration, the clients behind requests' credentials
//!   (and their cache), the client-clock rule;
//! - `leases`: checkout, heartbeat, release and revocation of leases, and
//!   the scheduler reclaiming those whose heartbeats stopped;
//! - `sync`: the long poll of `POST /v1/sync` and its signed grant document;
//! - `upstreams`: registering, checking and pulling from upstream servers,
//!   the rules of what an upstream may import, its secrets at rest.
//!
//! What the parts share is here (the struct's fields, `checked`,
//! `system_context`); one part uses another only through `GrantSync`'s
//! methods (a checkout or a sync checks the client's clock).

mod clients;
mod leases;
mod sync;
mod upstreams;

pub use clients::{client_view, ClientScope, ClientView};
pub use leases::reclaim_scheduler;
pub use sync::SyncAnswer;
pub use upstreams::{
    resources_of, seal_stored_secrets, upstream_view, ResourceStatus, ResourceSync, ResourcesView,
    UpstreamView,
};

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::grants::Grant;
use eventstore::{derived_id, CommandContext, Executed, Repository};
use service_kit::cache::TtlCache;
use service_kit::command::Failure;
use service_kit::keys::Signer;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::*;
use crate::flight::SingleFlight;
use crate::heartbeat::Heartbeats;
use crate::notify::Notifier;
use crate::remote::Remote;
use crate::secrets::SecretBox;
use crate::store::{self, ClientRow, Cursor};

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

fn checked<A>(done: Result<Executed<A>, eventstore::StoreError>) -> Result<Executed<A>, Failure> {
    let done = done?;
    if done.outcome.status == contracts::OutcomeStatus::Rejected {
        return Err(Failure::Rejected(Box::new(done.outcome)));
    }
    Ok(done)
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
            clients_seen: TtlCache::new(clients::CLIENT_CACHE),
            feeds: SingleFlight::default(),
            grant_sets: SingleFlight::default(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
