//! The public half of every key that signs activation files, recorded as an
//! event before the key's first signature: the JWKS is read from these, so
//! a key dropped from configuration still verifies what it signed, and
//! auditors see when each key came into use.

use contracts::activation::*;
use cqrs_es::{Aggregate, DomainEvent};
use eventstore::{CodedError, Refusal};
use serde::{Deserialize, Serialize};

use super::ActivationServices;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SigningKey {
    pub published: Option<SigningKeyPublished>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PublishSigningKey(pub signing::Jwk);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SigningKeyEvent {
    SigningKeyPublished(SigningKeyPublished),
}

impl DomainEvent for SigningKeyEvent {
    fn event_type(&self) -> String {
        SIGNING_KEY_PUBLISHED.into()
    }
    fn event_version(&self) -> String {
        contracts::issuance::V1.into()
    }
}

impl Refusal for SigningKeyEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("kid {0} already names another key")]
    KidTaken(String),
}

impl CodedError for SigningKeyError {
    fn code(&self) -> &'static str {
        "KID_TAKEN"
    }
}

impl Aggregate for SigningKey {
    const TYPE: &'static str = SIGNING_KEY_AGGREGATE;
    type Command = PublishSigningKey;
    type Event = SigningKeyEvent;
    type Error = SigningKeyError;
    type Services = ActivationServices;

    async fn handle(
        &mut self,
        PublishSigningKey(jwk): Self::Command,
        services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(p) = &self.published {
            if p.x == jwk.x && p.y == jwk.y {
                return Ok(());
            }
            return Err(SigningKeyError::KidTaken(jwk.kid));
        }
        let event = SigningKeyEvent::SigningKeyPublished(SigningKeyPublished {
            kid: jwk.kid,
            kty: jwk.kty,
            crv: jwk.crv,
            x: jwk.x,
            y: jwk.y,
            published_at: services.clock.now(),
        });
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, SigningKeyEvent::SigningKeyPublished(e): Self::Event) {
        self.published = Some(e);
    }
}
