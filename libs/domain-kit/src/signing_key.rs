//! The `SigningKey` aggregate every signing service records its keys with:
//! one stream per kid, `SigningKeyPublished` before the key's first
//! signature, so a verifier can always be told which key signed what. The
//! key file, the index and the JWKS route are `service_kit::keys`'s.

use std::sync::Arc;

use contracts::activation::{SigningKeyPublished, SIGNING_KEY_AGGREGATE, SIGNING_KEY_PUBLISHED};
use serde::{Deserialize, Serialize};
use signing::Jwk;

use crate::{Clock, CodedError, Refusal};

/// What the `SigningKey` aggregate needs from outside: the time a key is
/// published at.
#[derive(Clone)]
pub struct KeyServices {
    pub clock: Arc<dyn Clock>,
}

/// One public key (one stream per kid), recorded before its first signature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SigningKey {
    pub published: Option<SigningKeyPublished>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PublishSigningKey(pub Jwk);

crate::events! {
    pub enum SigningKeyEvent {
        SigningKeyPublished => SIGNING_KEY_PUBLISHED,
    }
}

impl Refusal for SigningKeyEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("kid {0} already names another key")]
    KidTaken(String),
}

impl CodedError for SigningKeyError {
    crate::coded! {
        _ => "KID_TAKEN", Conflict;
    }
}

crate::aggregate!(
    SigningKey,
    SIGNING_KEY_AGGREGATE,
    PublishSigningKey,
    SigningKeyEvent,
    SigningKeyError,
    KeyServices
);

impl SigningKey {
    /// The events `command` records, decided on the state as it stands.
    pub fn decide(
        &mut self,
        PublishSigningKey(jwk): PublishSigningKey,
        services: &KeyServices,
    ) -> Result<Vec<SigningKeyEvent>, SigningKeyError> {
        if let Some(p) = &self.published {
            if p.x == jwk.x && p.y == jwk.y {
                return Ok(vec![]);
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
        Ok(vec![event])
    }

    /// Folds one recorded event into the state.
    pub fn evolve(&mut self, SigningKeyEvent::SigningKeyPublished(e): SigningKeyEvent) {
        self.published = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use cqrs_es::test::TestFramework;
    use cqrs_es::{Aggregate, DomainEvent};
    use signing::KeyRing;

    use super::*;
    use crate::FixedClock;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    fn jwk(ring: &KeyRing) -> Jwk {
        ring.jwks()
            .keys
            .into_iter()
            .find(|k| k.kid == ring.active_kid())
            .expect("active key")
    }

    fn ring() -> KeyRing {
        let pem = signing::generate_pem().expect("pem");
        KeyRing::from_pem_thumbprint(&pem).expect("ring")
    }

    fn published(jwk: &Jwk) -> SigningKeyEvent {
        SigningKeyEvent::SigningKeyPublished(SigningKeyPublished {
            kid: jwk.kid.clone(),
            kty: jwk.kty.clone(),
            crv: jwk.crv.clone(),
            x: jwk.x.clone(),
            y: jwk.y.clone(),
            published_at: now(),
        })
    }

    fn keys() -> TestFramework<SigningKey> {
        TestFramework::with(KeyServices {
            clock: Arc::new(FixedClock(now())),
        })
    }

    #[test]
    fn a_new_key_is_published_at_the_clock_time() {
        let jwk = jwk(&ring());
        keys()
            .given_no_previous_events()
            .when(PublishSigningKey(jwk.clone()))
            .then_expect_events(vec![published(&jwk)]);
    }

    #[test]
    fn publishing_the_same_key_again_records_nothing() {
        let jwk = jwk(&ring());
        keys()
            .given(vec![published(&jwk)])
            .when(PublishSigningKey(jwk))
            .then_expect_events(vec![]);
    }

    #[test]
    fn another_key_under_a_published_kid_is_refused() {
        let first = jwk(&ring());
        let other = Jwk {
            kid: first.kid.clone(),
            ..jwk(&ring())
        };
        keys()
            .given(vec![published(&first)])
            .when(PublishSigningKey(other))
            .then_expect_error(SigningKeyError::KidTaken(first.kid.clone()));
        assert_eq!(SigningKeyError::KidTaken(first.kid).code(), "KID_TAKEN");
    }

    #[test]
    fn the_published_event_keeps_its_contract_names() {
        let e = published(&jwk(&ring()));
        assert_eq!(e.event_type(), "SigningKeyPublished");
        assert_eq!(e.event_version(), "1");
        assert_eq!(SigningKey::TYPE, "SigningKey");
    }
}
