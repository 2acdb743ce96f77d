//! Webhooks of API keys: the audience of a license's events is the key
//! that issued it (`service_kit::webhooks::Enqueuer` does the rest).

use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::endpoint_of;

pub struct IssuingKey;

#[async_trait]
impl service_kit::webhooks::Audience for IssuingKey {
    async fn of_license(
        &self,
        tx: &mut PgConnection,
        license: Uuid,
    ) -> Result<Vec<String>, sqlx::Error> {
        // The actor of the license's first event, in this service's own
        // store (committed before anything about the license was published
        // anywhere), authenticated over HTTP (an actor a Kafka command names
        // is its sender's claim).
        let issuer: Option<String> = sqlx::query_scalar(
            "SELECT metadata -> 'actor' ->> 'id' FROM events \
             WHERE aggregate_type = 'License' AND aggregate_id = $1 AND sequence = 1 \
               AND metadata -> 'actor' ->> 'kind' = 'api_key' \
               AND metadata -> 'actor' -> 'via' IS NULL",
        )
        .bind(license.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        Ok(issuer.iter().map(|k| endpoint_of(k)).collect())
    }
}
