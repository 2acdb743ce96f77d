//! The activation use cases behind the HTTP API and the Kafka reactions:
//! find the license and the device, run the seat or trial command, sign
//! the file.

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use contracts::activation::*;
use contracts::issuance::{LicenseStatus, Policy};
use contracts::license_view::LicenseView;
use contracts::{CommandOutcome, OutcomeStatus};
use eventstore::{CommandContext, Executed, Repository, StoreError};
use service_kit::command::store_problem;
use service_kit::Problem;
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

use crate::domain::validation::{self, Check, Validation};
use crate::domain::{
    ActivationServices, Device, Seat, SeatStatus, Seats, SeatsCommand, Trial, TrialCommand,
};
use crate::store::{self, SeatIndex, TrialIndex};
use service_kit::keys::Signer;

pub struct Activation {
    pub pool: PgPool,
    pub seats: Repository<Seats>,
    pub trials: Repository<Trial>,
    /// Signs the files; publishes and serves the keys (`SigningKey`).
    pub signer: Arc<Signer>,
    pub issuer: String,
}

/// A seat and its freshly signed file.
pub struct Issued {
    pub seat: Seat,
    pub license: LicenseView,
    pub file: String,
    /// False when the device already held this seat.
    pub created: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

pub fn db_problem(e: sqlx::Error) -> Problem {
    store_problem(StoreError::Database(e))
}

/// The HTTP answer to a refused command.
fn status_of(code: &str, _field: Option<&str>) -> StatusCode {
    if code.ends_with("_NOT_FOUND") {
        StatusCode::NOT_FOUND
    } else if code.ends_with("_NOT_ALLOWED") && code != "TRIAL_NOT_ALLOWED" || code == "SAME_DEVICE"
    {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::CONFLICT
    }
}

pub fn rejection(outcome: &CommandOutcome) -> Problem {
    service_kit::command::rejection(outcome, status_of).unwrap_or_else(Problem::internal)
}

fn accepted<A>(done: Executed<A>) -> Result<A, Problem> {
    if done.outcome.status == OutcomeStatus::Rejected {
        return Err(rejection(&done.outcome));
    }
    Ok(done.aggregate)
}

pub fn fingerprint_problem(e: FingerprintError) -> Problem {
    Problem::unprocessable("INVALID_FINGERPRINT", e.to_string()).with_field("fingerprint")
}

impl AsRef<Signer> for Activation {
    fn as_ref(&self) -> &Signer {
        &self.signer
    }
}

impl Activation {
    pub fn new(
        pool: PgPool,
        services: ActivationServices,
        signer: Arc<Signer>,
        issuer: String,
    ) -> Self {
        Self {
            seats: Repository::new(pool.clone(), services.clone())
                .with_projection(Arc::new(SeatIndex))
                .with_local_serialisation(),
            trials: Repository::new(pool.clone(), services).with_projection(Arc::new(TrialIndex)),
            pool,
            signer,
            issuer,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.seats.services().clock.now()
    }

    /// The license a typed key names; a mistyped key is caught by its check
    /// character before any look-up.
    pub async fn license_by_key(&self, key: &str) -> Result<LicenseView, Problem> {
        let digest = service_kit::replica::key_digest(key, "license_key")?;
        match store::license_by_digest(&self.pool, &digest).await {
            Ok(Some(l)) if l.status != LicenseStatus::Deleted => Ok(l),
            Ok(_) => Err(Problem::not_found(
                "LICENSE_NOT_FOUND",
                "no license has this key",
            )),
            Err(e) => Err(db_problem(e)),
        }
    }

    /// The device a request describes, with the latest time it reported
    /// under any license.
    pub async fn device(
        &self,
        fingerprint: &Fingerprint,
        client_time: Option<DateTime<Utc>>,
        policy: &Policy,
    ) -> Result<Device, Problem> {
        let components = fingerprint.components().map_err(fingerprint_problem)?;
        let seen = store::seats_of_device(&self.pool, &components, policy.fingerprint_min_matches)
            .await
            .map_err(db_problem)?;
        Ok(Device {
            fingerprint: digest_of(&components),
            last_seen: seen.iter().filter_map(|s| s.last_client_time).max(),
            components,
            client_time,
        })
    }

    pub async fn activate(
        &self,
        ctx: &CommandContext,
        license: LicenseView,
        device: Device,
        offline: bool,
        nonce: Option<String>,
    ) -> Result<Issued, Problem> {
        let min = crate::domain::seats::policy(&license).fingerprint_min_matches;
        let components = device.components.clone();
        let new_id = Uuid::now_v7();
        let command = SeatsCommand::Activate {
            license: license.clone(),
            device,
            activation_id: new_id,
            offline,
            nonce,
        };
        let done = self
            .seats
            .execute(&license.id.to_string(), command, ctx)
            .await
            .map_err(store_problem)?;
        let seats = accepted(done)?;
        let seat = seats
            .seat_of(&components, min)
            .cloned()
            .ok_or_else(Problem::internal)?;
        let created = seat.activation_id == new_id;
        self.issued(license, seat, created).await
    }

    /// Signs the file of a live seat with the license as it stands now (a
    /// renewal shows in the next file).
    pub async fn issued(
        &self,
        license: LicenseView,
        seat: Seat,
        created: bool,
    ) -> Result<Issued, Problem> {
        let file = self
            .sign(&license, &seat, "activation", seat.granted_at_sequence)
            .await?;
        Ok(Issued {
            expires_at: license.expires_at,
            seat,
            license,
            file,
            created,
        })
    }

    async fn sign(
        &self,
        license: &LicenseView,
        seat: &Seat,
        typ: &str,
        sequence: u64,
    ) -> Result<String, Problem> {
        let aggregate_id = license.id.to_string();
        let hash = store::event_hash(&self.pool, ACTIVATIONS_AGGREGATE, &aggregate_id, sequence)
            .await
            .map_err(db_problem)?
            .ok_or_else(Problem::internal)?;
        let now = self.now().timestamp();
        let claims = ActivationClaims {
            typ: typ.into(),
            iss: self.issuer.clone(),
            activation_id: seat.activation_id,
            license_id: license.id,
            product: license.product.clone(),
            edition: license.edition.clone(),
            kind: license.kind,
            features: license
                .features
                .iter()
                .map(|code| FeatureGrant {
                    code: code.clone(),
                    expires_at: license.expires_at,
                })
                .collect(),
            fingerprint: seat.fingerprint.clone(),
            iat: now,
            nbf: now,
            exp: if typ == "activation" {
                license.expires_at.map(|t| t.timestamp())
            } else {
                None
            },
            event: EventPosition {
                aggregate_type: ACTIVATIONS_AGGREGATE.into(),
                aggregate_id,
                sequence,
                hash,
            },
            nonce: seat.nonce.clone(),
        };
        self.signer.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            Problem::internal()
        })
    }

    /// The license an activation belongs to (from the seat index).
    async fn license_of(&self, activation_id: Uuid) -> Result<LicenseView, Problem> {
        let not_found = || Problem::not_found("ACTIVATION_NOT_FOUND", "no such activation");
        let row = store::seat(&self.pool, activation_id)
            .await
            .map_err(db_problem)?
            .ok_or_else(not_found)?;
        store::license(&self.pool, row.license_id)
            .await
            .map_err(db_problem)?
            .ok_or_else(not_found)
    }

    /// The license and seat behind an activation id.
    pub async fn seat(&self, activation_id: Uuid) -> Result<(LicenseView, Seat), Problem> {
        let license = self.license_of(activation_id).await?;
        let (seats, _) = self
            .seats
            .load(&license.id.to_string())
            .await
            .map_err(store_problem)?;
        let seat = seats
            .seats
            .get(&activation_id)
            .cloned()
            .ok_or_else(|| Problem::not_found("ACTIVATION_NOT_FOUND", "no such activation"))?;
        Ok((license, seat))
    }

    /// Re-issues the file of a live activation (recovery).
    pub async fn file(&self, activation_id: Uuid) -> Result<Issued, Problem> {
        let (license, seat) = self.seat(activation_id).await?;
        if seat.status != SeatStatus::Live {
            return Err(Problem::conflict(
                "ACTIVATION_REVOKED",
                format!("the activation is {:?}", seat.status).to_lowercase(),
            ));
        }
        crate::domain::seats::usable(&license, self.now())
            .map_err(|e| Problem::conflict(eventstore::CodedError::code(&e), e.to_string()))?;
        self.issued(license, seat, false).await
    }

    /// Uninstalls; the signed receipt cites the event that ended the seat.
    pub async fn uninstall(
        &self,
        ctx: &CommandContext,
        activation_id: Uuid,
    ) -> Result<String, Problem> {
        let license = self.license_of(activation_id).await?;
        let done = self
            .seats
            .execute(
                &license.id.to_string(),
                SeatsCommand::Uninstall {
                    license: license.clone(),
                    activation_id,
                },
                ctx,
            )
            .await
            .map_err(store_problem)?;
        let sequence = done.outcome.sequence.unwrap_or_default();
        let seats = accepted(done)?;
        let seat = seats
            .seats
            .get(&activation_id)
            .cloned()
            .ok_or_else(Problem::internal)?;
        self.sign(&license, &seat, "uninstall-receipt", sequence)
            .await
    }

    pub async fn migrate(
        &self,
        ctx: &CommandContext,
        activation_id: Uuid,
        fingerprint: &Fingerprint,
        client_time: Option<DateTime<Utc>>,
    ) -> Result<Issued, Problem> {
        let license = self.license_of(activation_id).await?;
        let device = self
            .device(
                fingerprint,
                client_time,
                &crate::domain::seats::policy(&license),
            )
            .await?;
        let new_id = Uuid::now_v7();
        let done = self
            .seats
            .execute(
                &license.id.to_string(),
                SeatsCommand::Migrate {
                    license: license.clone(),
                    activation_id,
                    device,
                    new_activation_id: new_id,
                },
                ctx,
            )
            .await
            .map_err(store_problem)?;
        let granted_at = done.outcome.sequence;
        let seats = accepted(done)?;
        // A replayed command answers with the seat its first run granted:
        // the one whose event is the outcome's.
        let seat = seats
            .seats
            .values()
            .find(|s| s.activation_id == new_id || Some(s.granted_at_sequence) == granted_at)
            .cloned()
            .ok_or_else(Problem::internal)?;
        if seat.status != SeatStatus::Live {
            return Err(Problem::conflict(
                "ACTIVATION_REVOKED",
                format!("the activation is {:?}", seat.status).to_lowercase(),
            ));
        }
        self.issued(license, seat, true).await
    }

    /// Starts a trial; issuance issues its license over Kafka and the
    /// replica consumer completes it.
    pub async fn start_trial(
        &self,
        ctx: &CommandContext,
        product: &str,
        fingerprint: &Fingerprint,
        client_time: Option<DateTime<Utc>>,
    ) -> Result<Trial, Problem> {
        let components = fingerprint.components().map_err(fingerprint_problem)?;
        let features = store::product_features(&self.pool, product)
            .await
            .map_err(db_problem)?
            .ok_or_else(|| {
                Problem::not_found("PRODUCT_NOT_FOUND", "no such product").with_field("product")
            })?;
        let min = Policy::default().fingerprint_min_matches;
        let fp = digest_of(&components);
        let trial_id = format!("{product}:{fp}");
        let similar = store::similar_trial(&self.pool, product, &components, min)
            .await
            .map_err(db_problem)?
            .filter(|t| *t != trial_id);
        let paid = store::seats_of_device(&self.pool, &components, min)
            .await
            .map_err(db_problem)?
            .iter()
            .any(|s| s.product == product && s.status == "live" && s.kind != "trial");
        let command = TrialCommand::Start {
            trial_id: trial_id.clone(),
            product: product.to_string(),
            fingerprint: fp,
            components,
            features,
            client_time,
            license_id: Uuid::now_v7(),
            issue_command_id: Uuid::now_v7(),
            similar_trial: similar,
            holds_paid_seat: paid,
        };
        let done = self
            .trials
            .execute(&trial_id, command, ctx)
            .await
            .map_err(store_problem)?;
        accepted(done)
    }

    pub async fn trial(&self, trial_id: &str) -> Result<Trial, Problem> {
        let (t, _) = self.trials.load(trial_id).await.map_err(store_problem)?;
        if t.state.is_none() {
            return Err(Problem::not_found("TRIAL_NOT_FOUND", "no such trial"));
        }
        Ok(t)
    }

    /// Read-only validation: no event, whatever the answer.
    pub async fn validate(&self, req: &ValidateRequest) -> Result<Validation, Problem> {
        let license = match self.license_by_key(&req.license_key).await {
            Ok(l) => l,
            Err(p) if p.code() == "LICENSE_NOT_FOUND" => {
                return Ok(Validation::default().with_code("NOT_FOUND"))
            }
            Err(p) => return Err(p),
        };
        let device = match &req.fingerprint {
            Some(f) => Some(f.components().map_err(fingerprint_problem)?),
            None => None,
        };
        let seats = match device {
            Some(_) => store::live_seats(&self.pool, license.id)
                .await
                .map_err(db_problem)?,
            None => Seats::default(),
        };
        let check = Check {
            device: device.as_ref(),
            features: &req.features,
            client_time: req.client_time,
        };
        Ok(validation::validate(
            &license,
            &seats,
            &check,
            self.now(),
            self.seats.services().clock_tolerance,
        ))
    }

    /// Recovery by device: every activation of a device, any license.
    pub async fn by_device(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Vec<store::SeatRow>, Problem> {
        let components = fingerprint.components().map_err(fingerprint_problem)?;
        store::seats_of_device(
            &self.pool,
            &components,
            Policy::default().fingerprint_min_matches,
        )
        .await
        .map_err(db_problem)
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub license_key: crate::api::LicenseKeyText,
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    #[serde(default)]
    pub features: Vec<contracts::text::Name>,
    #[serde(default, with = "contracts::time::strict_option")]
    pub client_time: Option<DateTime<Utc>>,
}
