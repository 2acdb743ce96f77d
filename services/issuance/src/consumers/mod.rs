//! Kafka inputs of issuance beside its command topics (which the shared
//! `service_kit::command_topic` consumer serves through [`Issuance`]'s
//! dispatcher): activation's events, replicated for key recovery; every
//! context's events, matched against API keys' callbacks.

pub mod activations;
pub mod webhooks;

use async_trait::async_trait;
use contracts::CommandEnvelope;
use eventstore::StoreError;
use service_kit::command_topic::{Answer, Dispatch};

use crate::commands::{Authority, Issuance};

#[async_trait]
impl Dispatch for Issuance {
    async fn dispatch(&self, env: &CommandEnvelope, admin: bool) -> Result<Answer, StoreError> {
        let authority = if admin {
            Authority::Admin
        } else {
            Authority::Issuer
        };
        // Every outcome of issuance's dispatcher is stored, refusals before
        // an aggregate too (their targets are the aggregates' own ids).
        Ok(Answer {
            outcome: self.dispatch_as(env, authority).await?.outcome().clone(),
            stored: true,
        })
    }
}
