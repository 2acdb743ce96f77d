//! Replica of activation facts (`<prefix>.activation.events`) for key
//! recovery by activation file or by device: each activation's license and
//! component digests, and the public keys files are signed with. Written in
//! the consumer offset's transaction.

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::activation::*;
use sqlx::PgConnection;
use uuid::Uuid;

pub struct ActivationReplica;

async fn insert(
    tx: &mut PgConnection,
    activation_id: Uuid,
    license_id: Uuid,
    components: &std::collections::BTreeMap<String, String>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO activation_replica (activation_id, license_id, components, component_digests, status) \
         VALUES ($1, $2, $3, $4, 'live') ON CONFLICT (activation_id) DO NOTHING",
    )
    .bind(activation_id)
    .bind(license_id)
    .bind(serde_json::to_value(components).unwrap_or_default())
    .bind(components.values().cloned().collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn set_status(tx: &mut PgConnection, ids: &[Uuid], status: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE activation_replica SET status = $2 WHERE activation_id = ANY($1)")
        .bind(ids)
        .bind(status)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[async_trait]
impl TxHandler for ActivationReplica {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let e = msg.event()?;
        let db = HandleError::from;
        match e.event_type.as_str() {
            DEVICE_ACTIVATED => {
                let p: DeviceActivated = bus::payload(&e)?;
                insert(tx, p.activation_id, p.license_id, &p.components)
                    .await
                    .map_err(db)?;
            }
            ACTIVATION_MIGRATED => {
                let p: ActivationMigrated = bus::payload(&e)?;
                set_status(tx, &[p.from_activation_id], "migrated")
                    .await
                    .map_err(db)?;
                insert(tx, p.activation_id, p.license_id, &p.components)
                    .await
                    .map_err(db)?;
            }
            ACTIVATION_UNINSTALLED => {
                let p: ActivationUninstalled = bus::payload(&e)?;
                set_status(tx, &[p.activation_id], "uninstalled")
                    .await
                    .map_err(db)?;
            }
            ACTIVATIONS_REVOKED => {
                let p: ActivationsRevoked = bus::payload(&e)?;
                set_status(tx, &p.activation_ids, "revoked")
                    .await
                    .map_err(db)?;
            }
            SIGNING_KEY_PUBLISHED => {
                let p: SigningKeyPublished = bus::payload(&e)?;
                sqlx::query(
                    "INSERT INTO activation_keys (kid, jwk) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
                )
                .bind(&p.kid)
                .bind(p.jwk())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            _ => {}
        }
        Ok(())
    }
}
