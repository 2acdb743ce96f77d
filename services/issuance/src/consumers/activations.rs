//! Replica of activation facts (`<prefix>.activation.events`) for key
//! recovery by activation file or by device: each activation's license and
//! component digests, and the public keys files are signed with. Written in
//! the consumer offset's transaction.

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::activation::*;
use sqlx::PgConnection;

use crate::store::{insert_activation_key, insert_replica_activation, set_replica_status};

pub struct ActivationReplica;

#[async_trait]
impl TxHandler for ActivationReplica {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let e = msg.event()?;
        let db = HandleError::from;
        match e.event_type.as_str() {
            DEVICE_ACTIVATED => {
                let p: DeviceActivated = bus::payload(&e)?;
                insert_replica_activation(tx, p.activation_id, p.license_id, &p.components)
                    .await
                    .map_err(db)?;
            }
            ACTIVATION_MIGRATED => {
                let p: ActivationMigrated = bus::payload(&e)?;
                set_replica_status(tx, &[p.from_activation_id], "migrated")
                    .await
                    .map_err(db)?;
                insert_replica_activation(tx, p.activation_id, p.license_id, &p.components)
                    .await
                    .map_err(db)?;
            }
            ACTIVATION_UNINSTALLED => {
                let p: ActivationUninstalled = bus::payload(&e)?;
                set_replica_status(tx, &[p.activation_id], "uninstalled")
                    .await
                    .map_err(db)?;
            }
            ACTIVATIONS_REVOKED => {
                let p: ActivationsRevoked = bus::payload(&e)?;
                set_replica_status(tx, &p.activation_ids, "revoked")
                    .await
                    .map_err(db)?;
            }
            SIGNING_KEY_PUBLISHED => {
                let p: SigningKeyPublished = bus::payload(&e)?;
                insert_activation_key(tx, &p.kid, p.jwk())
                    .await
                    .map_err(db)?;
            }
            _ => {}
        }
        Ok(())
    }
}
