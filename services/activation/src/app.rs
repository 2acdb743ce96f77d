//! The activation use cases behind the HTTP API and the Kafka reactions:
//! find the license and the device, run the seat or trial command, sign
//! the file.

use chrono::{DateTime, Utc};
use contracts::activation::*;
use contracts::issuance::{LicenseKind, LicenseStatus, Policy};
use contracts::license_view::LicenseView;
use contracts::{ErrorKind, OutcomeStatus};
use eventstore::{CommandContext, Executed, Repository};
use service_kit::auth::Principal;
use service_kit::command::Failure;
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

use crate::domain::validation::{self, ByComponent, Check, Validation};
use crate::domain::{
    trial, ActivationServices, Device, Seat, SeatStatus, Seats, SeatsCommand, Trial, TrialCommand,
};
use crate::index::{ValidationIndex, Wanted};
use crate::store::{self, SeatIndex, TrialIndex};
use service_kit::keys::Signer;

pub struct Activation {
    pub pool: PgPool,
    /// Licenses and live seats in memory, for validation.
    pub index: Arc<ValidationIndex>,
    pub seats: Repository<Seats>,
    pub trials: Repository<Trial>,
    /// Signs the files; publishes and serves the keys (`SigningKey`).
    pub signer: Arc<Signer>,
    pub issuer: String,
}

/// What `verify_file` found.
pub struct FileVerdict {
    pub code: FileCode,
    /// The activation and license the file names, once it was read.
    pub ids: Option<(Uuid, Uuid)>,
}

/// Whether a file may be installed, as `POST /v1/activations/verify`
/// answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FileCode {
    /// Signed by this service, an activation file, its activation live.
    Valid,
    /// Its activation ended (uninstalled, migrated, revoked).
    Revoked,
    /// No such activation, or another license's for a product's credential.
    NotFound,
    BadSignature,
    /// Signed by this service but not an activation file (a receipt).
    NotAnActivationFile,
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

/// The digest of a trial request in the shape it has always had (every
/// field written, `client_time` null when absent), so a retry across an
/// upgrade is the same request; over HTTP and Kafka alike.
pub fn trial_digest(body: &StartTrial) -> String {
    #[derive(serde::Serialize)]
    struct Shape<'a> {
        product: &'a contracts::text::Name,
        fingerprint: &'a Fingerprint,
        #[serde(with = "contracts::time::strict_option")]
        client_time: Option<DateTime<Utc>>,
    }
    eventstore::request_digest(
        START_TRIAL,
        &Shape {
            product: &body.product,
            fingerprint: &body.fingerprint,
            client_time: body.client_time,
        },
    )
}

fn accepted<A>(done: Executed<A>) -> Result<A, Failure> {
    if done.outcome.status == OutcomeStatus::Rejected {
        return Err(Failure::Rejected(Box::new(done.outcome)));
    }
    Ok(done.aggregate)
}

pub fn fingerprint_refused(e: FingerprintError) -> Failure {
    let code = match e {
        FingerprintError::TooFew(_) => "FINGERPRINT_TOO_SMALL",
        _ => "INVALID_FINGERPRINT",
    };
    Failure::invalid(code, e.to_string()).with_field("fingerprint")
}

/// A replayed request whose activation has ended since its first run.
fn ended() -> Failure {
    Failure::conflict(
        "ACTIVATION_REVOKED",
        "the activation this request made has ended since",
    )
}

fn activation_not_found() -> Failure {
    Failure::not_found("ACTIVATION_NOT_FOUND", "no such activation")
}

fn license_not_found() -> Failure {
    Failure::not_found("LICENSE_NOT_FOUND", "no such license")
}

/// The license a request is about. An API key names it by the body's
/// `license_key`; an installed product's credential is its license, and a
/// key in the body must then be that license's.
fn wanted(caller: &Principal, key: Option<&str>) -> Result<Wanted, Failure> {
    let digest = |key| service_kit::replica::key_digest(key, "license_key");
    match (caller.license, key) {
        (None, None) => Err(Failure::invalid(
            "MISSING_FIELD",
            "license_key is required unless the request carries a license credential",
        )
        .with_field("license_key")),
        (own, Some(key)) => Ok(Wanted::Key {
            digest: digest(key)?,
            own,
        }),
        (Some(own), None) => Ok(Wanted::Id(own)),
    }
}

/// What was found for `wanted`, by the same rules from the tables and from
/// the index: a deleted license is not found, and a key must name the
/// credential's own license.
fn found_as<'a>(
    wanted: &Wanted,
    found: Option<&'a LicenseView>,
) -> Result<&'a LicenseView, Failure> {
    let license = match (found, wanted) {
        (Some(l), _) if l.status != LicenseStatus::Deleted => l,
        (_, Wanted::Id(_)) => return Err(license_not_found()),
        (_, Wanted::Key { .. }) => {
            return Err(Failure::not_found(
                "LICENSE_NOT_FOUND",
                "no license has this key",
            ))
        }
    };
    if let Wanted::Key { own: Some(own), .. } = wanted {
        if license.id != *own {
            return Err(Failure::refused(
                "LICENSE_MISMATCH",
                ErrorKind::Forbidden,
                "the license key is not the one the request is authenticated with",
            )
            .with_field("license_key"));
        }
    }
    Ok(license)
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
        let index = Arc::new(ValidationIndex::default());
        Self {
            seats: Repository::new(pool.clone(), services.clone())
                .with_projection(Arc::new(SeatIndex(index.clone())))
                .with_local_serialisation(),
            trials: Repository::new(pool.clone(), services).with_projection(Arc::new(TrialIndex)),
            pool,
            index,
            signer,
            issuer,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.seats.services().clock.now()
    }

    /// The license a typed key names; a mistyped key is caught by its check
    /// character before any look-up.
    pub async fn license_by_key(&self, key: &str) -> Result<LicenseView, Failure> {
        let digest = service_kit::replica::key_digest(key, "license_key")?;
        let wanted = Wanted::Key { digest, own: None };
        self.fetch(&wanted).await
    }

    /// A license by id (a product's own, named by its credential).
    pub async fn license(&self, id: Uuid) -> Result<LicenseView, Failure> {
        self.fetch(&Wanted::Id(id)).await
    }

    /// The license a request is about.
    pub async fn license_for(
        &self,
        caller: &Principal,
        key: Option<&str>,
    ) -> Result<LicenseView, Failure> {
        self.fetch(&wanted(caller, key)?).await
    }

    /// From the validation index when it holds the license (it trails
    /// the replica by milliseconds, the replica trails issuance by its
    /// Kafka delay), else from the replica table.
    async fn fetch(&self, wanted: &Wanted) -> Result<LicenseView, Failure> {
        let found = match self.index.license(wanted) {
            Some(l) => Some(l),
            None => match wanted {
                Wanted::Id(id) => store::license(&self.pool, *id).await?,
                Wanted::Key { digest, .. } => store::license_by_digest(&self.pool, digest).await?,
            },
        };
        found_as(wanted, found.as_ref()).cloned()
    }

    /// The license an activation file opens, for a product authenticating
    /// with `Authorization: Activation <file>`: a file we signed, an
    /// activation file (never a receipt), not expired, whose activation is
    /// live. None for anything else (the API answers 401).
    pub async fn holder_of_file(&self, file: &str) -> Result<Option<Uuid>, Failure> {
        let claims = match self.signer.verify(file).await {
            Ok(c) => c,
            Err(service_kit::keys::VerifyError::Store(e)) => return Err(e.into()),
            Err(_) => return Ok(None),
        };
        let Ok(claims) = serde_json::from_value::<ActivationClaims>(claims) else {
            return Ok(None);
        };
        if claims.typ != ACTIVATION_TYP
            || claims.exp.is_some_and(|exp| exp <= self.now().timestamp())
        {
            return Ok(None);
        }
        let seat = store::seat(&self.pool, claims.activation_id).await?;
        Ok(seat
            .filter(|s| s.status == SeatStatus::Live && s.license_id == claims.license_id)
            .map(|s| s.license_id))
    }

    /// Whether a file may be installed: `VALID` (signed by us, an
    /// activation file, its activation live), `REVOKED`, `NOT_FOUND` (no
    /// such activation, or another license's for a product's credential),
    /// `BAD_SIGNATURE` or `NOT_AN_ACTIVATION_FILE`; with its ids once read.
    pub async fn verify_file(
        &self,
        caller: &Principal,
        file: &str,
    ) -> Result<FileVerdict, Failure> {
        let verdict = |code| FileVerdict { code, ids: None };
        let claims = match self.signer.verify(file).await {
            Ok(c) => c,
            Err(service_kit::keys::VerifyError::Store(e)) => return Err(e.into()),
            Err(_) => return Ok(verdict(FileCode::BadSignature)),
        };
        let Some(claims) = serde_json::from_value::<ActivationClaims>(claims)
            .ok()
            .filter(|c| c.typ == ACTIVATION_TYP)
        else {
            return Ok(verdict(FileCode::NotAnActivationFile));
        };
        // A product asks about its own license's files only.
        if caller.reach(claims.license_id, || ()).is_err() {
            return Ok(verdict(FileCode::NotFound));
        }
        let seat = store::seat(&self.pool, claims.activation_id).await?;
        let code = match seat.map(|s| s.status) {
            Some(SeatStatus::Live) => FileCode::Valid,
            Some(_) => FileCode::Revoked,
            None => FileCode::NotFound,
        };
        Ok(FileVerdict {
            code,
            ids: Some((claims.activation_id, claims.license_id)),
        })
    }

    /// The device a request describes, with at least as many components
    /// as the license's policy compares. Its clock is judged against what
    /// it reported under this license only (the seats aggregate's rule).
    pub fn device(
        &self,
        fingerprint: &Fingerprint,
        client_time: Option<DateTime<Utc>>,
        policy: &Policy,
    ) -> Result<Device, Failure> {
        let components = fingerprint
            .components_for(policy.fingerprint_min_matches)
            .map_err(fingerprint_refused)?;
        Ok(Device {
            fingerprint: digest_of(&components),
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
    ) -> Result<Issued, Failure> {
        let min = crate::domain::seats::policy(&license).fingerprint_min_matches;
        let components = device.components.clone();
        let new_id = Uuid::now_v7();
        let command = SeatsCommand::Activate {
            license: license.clone(),
            device,
            activation_id: new_id,
            offline,
            nonce: nonce.clone(),
        };
        let done = self
            .seats
            .execute(&license.id.to_string(), command, ctx)
            .await?;
        let replayed = done.replayed;
        let appended = done.appended.clone();
        let seats = accepted(done)?;
        let (seat, created) = if replayed {
            // The answer of the first run: the seat its events name (its
            // DeviceActivated, or the seat it found), live or not by now.
            let first = store::command_seat(&self.pool, license.id, ctx.command_id).await?;
            let seat = match first {
                Some((id, _)) => seats.seats.get(&id),
                None => seats.seat_of(&components, min),
            };
            let seat = seat.cloned().ok_or_else(ended)?;
            if seat.status != SeatStatus::Live {
                return Err(ended());
            }
            (seat, first.is_some_and(|(_, created)| created))
        } else {
            let seat = seats
                .seat_of(&components, min)
                .cloned()
                .ok_or_else(|| Failure::internal("a seat or event the command just stored"))?;
            let created = seat.activation_id == new_id;
            (seat, created)
        };
        // An offline response binds the nonce of the request it answers.
        let nonce = if offline { nonce } else { None };
        self.issued_with(license, seat, created, nonce, &appended)
            .await
    }

    /// Signs the file of a live seat with the license as it stands now (a
    /// renewal shows in the next file).
    pub async fn issued(
        &self,
        license: LicenseView,
        seat: Seat,
        created: bool,
    ) -> Result<Issued, Failure> {
        self.issued_with(license, seat, created, None, &[]).await
    }

    async fn issued_with(
        &self,
        license: LicenseView,
        seat: Seat,
        created: bool,
        nonce: Option<String>,
        appended: &[(u64, String)],
    ) -> Result<Issued, Failure> {
        let file = self.sign(&license, &seat, nonce, appended).await?;
        Ok(Issued {
            expires_at: license.expires_at,
            seat,
            license,
            file,
            created,
        })
    }

    /// The position of the stored event at `sequence` of a license's seats.
    /// `appended`: the events the command at hand stored, whose hashes
    /// need no look-up.
    async fn position(
        &self,
        license: Uuid,
        sequence: u64,
        appended: &[(u64, String)],
    ) -> Result<EventPosition, Failure> {
        let aggregate_id = license.to_string();
        let hash = match appended.iter().find(|(s, _)| *s == sequence) {
            Some((_, hash)) => hash.clone(),
            None => store::event_hash(&self.pool, ACTIVATIONS_AGGREGATE, &aggregate_id, sequence)
                .await?
                .ok_or_else(|| Failure::internal("a seat or event the command just stored"))?,
        };
        Ok(EventPosition {
            aggregate_type: ACTIVATIONS_AGGREGATE.into(),
            aggregate_id,
            sequence,
            hash,
        })
    }

    async fn sign(
        &self,
        license: &LicenseView,
        seat: &Seat,
        nonce: Option<String>,
        appended: &[(u64, String)],
    ) -> Result<String, Failure> {
        let event = self
            .position(license.id, seat.granted_at_sequence, appended)
            .await?;
        let now = self.now().timestamp();
        let claims = ActivationClaims {
            typ: ACTIVATION_TYP.into(),
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
            // So that a reader offline recognises the device as this
            // service does, a replaced part and all.
            components: seat.components.clone(),
            min_matches: Some(crate::domain::seats::policy(license).fingerprint_min_matches),
            iat: now,
            nbf: now,
            exp: license.expires_at.map(|t| t.timestamp()),
            event,
            nonce,
        };
        self.signer
            .sign(&claims)
            .map_err(|e| Failure::internal(&format!("signing failed: {e}")))
    }

    /// An uninstall receipt: its own claims and JWS `typ`, citing the
    /// event that ended the seat.
    async fn receipt(
        &self,
        license: &LicenseView,
        activation_id: Uuid,
        fingerprint: &str,
        ended_at: Option<DateTime<Utc>>,
        sequence: u64,
    ) -> Result<String, Failure> {
        let now = self.now().timestamp();
        let claims = ReceiptClaims {
            typ: RECEIPT_TYP.into(),
            iss: self.issuer.clone(),
            activation_id,
            license_id: license.id,
            fingerprint: fingerprint.to_string(),
            uninstalled_at: ended_at.map_or(now, |t| t.timestamp()),
            iat: now,
            event: self.position(license.id, sequence, &[]).await?,
        };
        self.signer
            .sign_typed(&claims, RECEIPT_JWS_TYP)
            .map_err(|e| Failure::internal(&format!("signing failed: {e}")))
    }

    /// The license an activation belongs to (from the seat index), if the
    /// caller reaches it: another license's activation is not found.
    async fn license_of(
        &self,
        caller: &Principal,
        activation_id: Uuid,
    ) -> Result<LicenseView, Failure> {
        let row = store::seat(&self.pool, activation_id)
            .await?
            .ok_or_else(activation_not_found)?;
        caller.reach(row.license_id, activation_not_found)?;
        store::license(&self.pool, row.license_id)
            .await?
            .ok_or_else(activation_not_found)
    }

    /// An activation as the index holds it, if the caller reaches it.
    pub async fn seat_row(
        &self,
        caller: &Principal,
        activation_id: Uuid,
    ) -> Result<store::SeatRow, Failure> {
        let row = store::seat(&self.pool, activation_id)
            .await?
            .ok_or_else(activation_not_found)?;
        caller.reach(row.license_id, activation_not_found)?;
        Ok(row)
    }

    /// A license's seats, if the caller reaches it.
    pub async fn seats_of_license(
        &self,
        caller: &Principal,
        license_id: Uuid,
    ) -> Result<Vec<store::SeatRow>, Failure> {
        caller.reach(license_id, license_not_found)?;
        Ok(store::seats_of_license(&self.pool, license_id).await?)
    }

    /// The license and live seat behind an activation id; an ended one is
    /// refused, naming how it ended.
    async fn live_seat(
        &self,
        caller: &Principal,
        activation_id: Uuid,
    ) -> Result<(LicenseView, Seat), Failure> {
        let license = self.license_of(caller, activation_id).await?;
        let (seats, _) = self.seats.load(&license.id.to_string()).await?;
        if let Some(seat) = seats.seats.get(&activation_id) {
            return Ok((license, seat.clone()));
        }
        match seats.ended.get(&activation_id) {
            Some(e) => Err(Failure::conflict(
                "ACTIVATION_REVOKED",
                format!("the activation is {:?}", e.status).to_lowercase(),
            )),
            None => Err(activation_not_found()),
        }
    }

    /// Re-issues the file of a live activation (recovery).
    pub async fn file(&self, caller: &Principal, activation_id: Uuid) -> Result<Issued, Failure> {
        let (license, seat) = self.live_seat(caller, activation_id).await?;
        crate::domain::seats::usable(&license, self.now())
            .map_err(|e| Failure::Refused(eventstore::Refused::of(&e)))?;
        self.issued(license, seat, false).await
    }

    /// Uninstalls; the signed receipt cites the event that ended the seat.
    pub async fn uninstall(
        &self,
        ctx: &CommandContext,
        caller: &Principal,
        activation_id: Uuid,
    ) -> Result<String, Failure> {
        let license = self.license_of(caller, activation_id).await?;
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
            .await?;
        let sequence = done.outcome.sequence.unwrap_or_default();
        let seats = accepted(done)?;
        // This run ended the seat; a replayed command finds it in the
        // index, as the first run left it.
        let (fingerprint, ended_at) = match seats.touched(&activation_id) {
            Some(s) => (s.fingerprint.clone(), s.ended_at),
            None => store::seat(&self.pool, activation_id)
                .await?
                .map(|s| (s.fingerprint, s.ended_at))
                .ok_or_else(|| Failure::internal("a seat or event the command just stored"))?,
        };
        self.receipt(&license, activation_id, &fingerprint, ended_at, sequence)
            .await
    }

    pub async fn migrate(
        &self,
        ctx: &CommandContext,
        caller: &Principal,
        activation_id: Uuid,
        fingerprint: &Fingerprint,
        client_time: Option<DateTime<Utc>>,
    ) -> Result<Issued, Failure> {
        let license = self.license_of(caller, activation_id).await?;
        let device = self.device(
            fingerprint,
            client_time,
            &crate::domain::seats::policy(&license),
        )?;
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
            .await?;
        let granted_at = done.outcome.sequence;
        let seats = accepted(done)?;
        // A replayed command answers with the seat its first run granted:
        // the one whose event is the outcome's, if it is still live.
        let seat = seats
            .live()
            .find(|s| s.activation_id == new_id || Some(s.granted_at_sequence) == granted_at)
            .cloned()
            .ok_or_else(ended)?;
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
    ) -> Result<Trial, Failure> {
        let (features, policy) = store::product(&self.pool, product).await?.ok_or_else(|| {
            Failure::not_found("PRODUCT_NOT_FOUND", "no such product").with_field("product")
        })?;
        // A trial's license is issued under the product's default policy:
        // its device rules decide.
        let min = policy.fingerprint_min_matches;
        let components = fingerprint
            .components_for(min)
            .map_err(fingerprint_refused)?;
        if policy.require_client_time && client_time.is_none() {
            return Err(Failure::invalid(
                "CLIENT_TIME_REQUIRED",
                "this product's policy requires the device's clock (client_time)",
            )
            .with_field("client_time"));
        }
        let fp = digest_of(&components);
        let trial_id = format!("{product}:{fp}");
        let similar = store::similar_trial(&self.pool, product, &components, min)
            .await?
            .filter(|t| *t != trial_id);
        let paid = store::seats_of_device(&self.pool, &components)
            .await?
            .iter()
            .any(|s| {
                s.product == product
                    && s.status == SeatStatus::Live
                    && trial::excludes(s.kind, LicenseKind::Trial)
            });
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
        let done = self.trials.execute(&trial_id, command, ctx).await?;
        accepted(done)
    }

    pub async fn trial(&self, trial_id: &str) -> Result<Trial, Failure> {
        let (t, _) = self.trials.load(trial_id).await?;
        if t.state.is_none() {
            return Err(Failure::not_found("TRIAL_NOT_FOUND", "no such trial"));
        }
        Ok(t)
    }

    /// Read-only validation: no event, whatever the answer. From the
    /// validation index when it holds the license, else from the tables.
    pub async fn validate(
        &self,
        caller: &Principal,
        req: &ValidateRequest,
    ) -> Result<Validation, Failure> {
        let wanted = wanted(caller, req.license_key.as_deref())?;
        let (now, tolerance) = (self.now(), self.seats.services().clock_tolerance);
        // `by`: the index's seats by component (the tables' answer has none).
        let answer =
            |license: Result<&LicenseView, Failure>, seats: &Seats, by: Option<&ByComponent>| {
                let license = match license {
                    Ok(l) => l,
                    Err(f) if f.code() == Some("LICENSE_NOT_FOUND") => {
                        return Ok(Validation::default().with_code("NOT_FOUND"))
                    }
                    Err(f) => return Err(f),
                };
                let device = device_of(license, req)?;
                let check = Check {
                    device: device.as_ref(),
                    features: &req.features,
                    client_time: req.client_time,
                };
                Ok(match by {
                    Some(by) => {
                        validation::validate_indexed(license, seats, by, &check, now, tolerance)
                    }
                    None => validation::validate(license, seats, &check, now, tolerance),
                })
            };
        if let Some(done) = self.index.read(&wanted, |license, seats, by| {
            answer(found_as(&wanted, Some(license)), seats, Some(by))
        }) {
            return done;
        }
        let license = match self.fetch(&wanted).await {
            Ok(l) => l,
            Err(f) => return answer(Err(f), &Seats::default(), None),
        };
        let seats = match req.fingerprint {
            Some(_) => store::live_seats(&self.pool, license.id).await?,
            None => Seats::default(),
        };
        answer(Ok(&license), &seats, None)
    }

    /// Recovery by device: every activation of a device — of any license
    /// for an API key, of its own license for a product (whose fingerprint
    /// must then have as many components as its policy compares). Each
    /// seat matches under its own license's policy.
    pub async fn by_device(
        &self,
        caller: &Principal,
        fingerprint: &Fingerprint,
    ) -> Result<Vec<store::SeatRow>, Failure> {
        let components = match caller.license {
            Some(own) => {
                let min =
                    crate::domain::seats::policy(&self.license(own).await?).fingerprint_min_matches;
                fingerprint.components_for(min)
            }
            None => fingerprint.components(),
        }
        .map_err(fingerprint_refused)?;
        let seats = store::seats_of_device(&self.pool, &components).await?;
        Ok(seats
            .into_iter()
            .filter(|s| caller.license.is_none_or(|own| own == s.license_id))
            .collect())
    }
}

/// The device a validation asks about, compared as the license's policy says.
fn device_of(
    license: &LicenseView,
    req: &ValidateRequest,
) -> Result<Option<std::collections::BTreeMap<String, String>>, Failure> {
    let min = crate::domain::seats::policy(license).fingerprint_min_matches;
    req.fingerprint
        .as_ref()
        .map(|f| f.components_for(min).map_err(fingerprint_refused))
        .transpose()
}

/// Body of `POST /v1/validate`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// Optional with a license credential (which names the license).
    #[serde(default)]
    pub license_key: Option<crate::api::LicenseKeyText>,
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    #[serde(default)]
    pub features: Vec<contracts::text::Name>,
    #[serde(default, with = "contracts::time::strict_option")]
    pub client_time: Option<DateTime<Utc>>,
}
