//! Kafka inputs of issuance beside its command topics (which the shared
//! `service_kit::command_topic` consumer serves through [`Issuance`]'s
//! dispatcher): activation's events, replicated for key recovery.

pub mod activations;

use async_trait::async_trait;
use contracts::{CommandEnvelope, CommandOutcome};
use eventstore::StoreError;
use service_kit::command_topic::Dispatch;

use crate::commands::{Authority, Issuance};

#[async_trait]
impl Dispatch for Issuance {
    async fn dispatch(
        &self,
        env: &CommandEnvelope,
        admin: bool,
    ) -> Result<CommandOutcome, StoreError> {
        let authority = if admin {
            Authority::Admin
        } else {
            Authority::Issuer
        };
        Ok(self.dispatch_as(env, authority).await?.outcome().clone())
    }
}
