//! Finding the licenses to recover from an activation file or a device,
//! through the replica of activation events.

use std::collections::BTreeMap;

use contracts::activation::{same_device, ActivationClaims, ACTIVATION_TYP};
use contracts::issuance::Policy;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store;

/// The license of an activation file signed by one of activation's
/// published keys; None when the file does not verify or names no known
/// activation of that license.
pub async fn by_activation_file(
    pool: &PgPool,
    file: &str,
) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
    let keys = store::activation_keys(pool).await?;
    let keys: Vec<signing::Jwk> = keys
        .into_iter()
        .filter_map(|k| serde_json::from_value(k).ok())
        .collect();
    let verified = signing::verify_with(file.trim(), |kid| {
        keys.iter()
            .find(|k| k.kid == kid)
            .and_then(|k| signing::verifying_key(k).ok())
    });
    // An activation file only: an uninstall receipt has claims of its
    // own and never parses as one.
    let Some(claims) = verified
        .ok()
        .and_then(|v| serde_json::from_value::<ActivationClaims>(v).ok())
        .filter(|c| c.typ == ACTIVATION_TYP)
    else {
        return Ok(None);
    };
    let license = store::replica_license(pool, claims.activation_id).await?;
    Ok(license.filter(|l| *l == claims.license_id).map(|l| vec![l]))
}

/// Licenses with a live activation on a device matching `components`,
/// each seat under its own license's policy.
pub async fn by_device(
    pool: &PgPool,
    components: &BTreeMap<String, String>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows =
        store::live_activations_sharing(pool, components.values().cloned().collect()).await?;
    let default = Policy::default().fingerprint_min_matches;
    let mut ids = Vec::new();
    for r in rows {
        let theirs: BTreeMap<String, String> =
            serde_json::from_value(r.components).unwrap_or_default();
        let id = r.license_id;
        let min = r.min.and_then(|m| u32::try_from(m).ok()).unwrap_or(default);
        if same_device(&theirs, components, min) && !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}
