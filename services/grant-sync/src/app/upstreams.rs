//! Upstreams: registering, checking and pulling from the license servers
//! this one syncs from (ADR 0005), the rules of what an upstream may define
//! or import here (never this server's own licenses and products, nor
//! another upstream's), and its secret, sealed at rest.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use contracts::grants::*;
use eventstore::{derived_id, CommandContext};
use service_kit::command::Failure;
use sqlx::PgPool;
use uuid::Uuid;

use super::{checked, GrantSync};
use crate::domain::*;
use crate::remote::Target;
use crate::secrets::SecretBox;
use crate::store::{self, StoredSecret};

/// How a resource's last pull from an upstream went: `never` before the
/// first.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceStatus {
    Never,
    Ok,
    Unreachable,
    BadCredentials,
    AddressNotAllowed,
    MemberMismatch,
    UpstreamError,
}

impl From<UpstreamStatus> for ResourceStatus {
    fn from(s: UpstreamStatus) -> Self {
        match s {
            UpstreamStatus::Ok => Self::Ok,
            UpstreamStatus::Unreachable => Self::Unreachable,
            UpstreamStatus::BadCredentials => Self::BadCredentials,
            UpstreamStatus::AddressNotAllowed => Self::AddressNotAllowed,
            UpstreamStatus::MemberMismatch => Self::MemberMismatch,
            UpstreamStatus::UpstreamError => Self::UpstreamError,
        }
    }
}

/// A resource's last pull from an upstream.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ResourceSync {
    /// Null before the first pull.
    #[schema(required = true)]
    pub last_sync_at: Option<DateTime<Utc>>,
    pub status: ResourceStatus,
    /// Items that changed here; absent before the first pull.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub items: Option<u32>,
    /// Absent before the first pull.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
}

/// The last pull of each resource (a field per `SyncResource`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ResourcesView {
    pub catalog: ResourceSync,
    pub licenses: ResourceSync,
    pub revocations: ResourceSync,
}

/// An upstream as the HTTP answer and a command's outcome show it (never
/// its secret).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UpstreamView {
    pub upstream_id: Uuid,
    pub name: String,
    /// This server's client id at the upstream.
    pub member_id: Uuid,
    pub endpoint: String,
    /// Hex SHA-256 of the secret: shows which secret is in use.
    pub secret_digest: String,
    pub price_protection: bool,
    #[schema(required = true)]
    pub remark: Option<String>,
    pub registered_at: DateTime<Utc>,
    /// The last check; null before the first.
    #[schema(required = true)]
    pub last_check: Option<UpstreamChecked>,
    pub resources: ResourcesView,
    /// The codes of the products imported from it.
    pub products: Vec<String>,
}

/// An upstream as the HTTP answer and a command's outcome show it (never
/// its secret); none before it is registered.
pub fn upstream_view(u: &Upstream) -> Option<UpstreamView> {
    let r = u.registered.as_ref()?;
    let sync = |res: SyncResource| match u.syncs.get(&res) {
        None => ResourceSync {
            last_sync_at: None,
            status: ResourceStatus::Never,
            items: None,
            message: None,
        },
        Some(s) => ResourceSync {
            last_sync_at: Some(s.synced_at),
            status: s.status.into(),
            items: Some(s.items),
            message: Some(s.message.clone()),
        },
    };
    Some(UpstreamView {
        upstream_id: r.upstream_id,
        name: r.name.clone(),
        member_id: r.member_id,
        endpoint: r.endpoint.clone(),
        secret_digest: r.secret_digest.clone(),
        price_protection: r.price_protection,
        remark: r.remark.clone(),
        registered_at: r.registered_at,
        last_check: u.last_check.clone(),
        resources: ResourcesView {
            catalog: sync(SyncResource::Catalog),
            licenses: sync(SyncResource::Licenses),
            revocations: sync(SyncResource::Revocations),
        },
        products: u.products.keys().cloned().collect(),
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

impl GrantSync {
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

    /// The products an upstream may define here: not this server's own,
    /// not another upstream's. And how many were left out.
    async fn own_products(
        &self,
        upstream_id: Uuid,
        products: Vec<CatalogProduct>,
    ) -> Result<(Vec<CatalogProduct>, u32), Failure> {
        let codes: Vec<String> = products.iter().map(|p| p.code.clone()).collect();
        let held = store::product_holders(&self.pool, &codes).await?;
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
        let holders = store::grant_holders(&self.pool, &ids).await?;
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
