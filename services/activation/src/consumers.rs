//! Kafka inputs of activation.
//!
//! - `ReplicaConsumer` folds `<prefix>.issuance.events` into the license and
//!   product replicas (in the offset's transaction) and reacts: a license
//!   leaving service revokes its seats; a trial's license being issued
//!   completes the trial.
//! - `ReactionConsumer` follows activation's own events: a started trial
//!   sends `IssueLicense` to issuance; a temporary or formal activation ends
//!   the device's trial of that product (no mixing).
//! - `OutcomeConsumer` follows `<prefix>.command-outcomes`: a trial whose
//!   `IssueLicense` issuance refused fails with issuance's reason.
//!
//! Reactions run as commands with ids derived from the causing event, so a
//! redelivered event repeats nothing.

use std::sync::Arc;

use async_trait::async_trait;
use bus::{transient, HandleError, Incoming, TxHandler};
use contracts::activation::*;
use contracts::issuance::*;
use contracts::license_view::LicenseView;
use contracts::{Actor, ActorKind, CommandEnvelope, EventEnvelope, OutcomeStatus};
use eventstore::{derived_id, CommandContext, StoreError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::Activation;
use crate::domain::{trial, Device, SeatStatus, SeatsCommand, TrialCommand, TrialStatus};
use crate::store;
use service_kit::command_topic::{SOURCE_HEADER, STORED_HEADER};

/// The context of a command caused by event `e`.
pub fn reaction(e: &EventEnvelope, command_type: &str, purpose: &str) -> CommandContext {
    CommandContext::reaction(e, command_type, purpose, crate::SERVICE)
}

fn refused(what: &str, outcome: &contracts::CommandOutcome) {
    if outcome.status == OutcomeStatus::Rejected {
        tracing::warn!(what, error = ?outcome.error, "reaction refused");
    }
}

pub struct ReplicaConsumer {
    pub app: Arc<Activation>,
}

#[async_trait]
impl TxHandler for ReplicaConsumer {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let e = msg.event()?;
        match e.aggregate_type.as_str() {
            PRODUCT_AGGREGATE if e.event_type == PRODUCT_CREATED => {
                let p: ProductCreated = bus::payload(&e)?;
                let features: Vec<String> = p.features.into_iter().map(|f| f.code).collect();
                store::upsert_product(tx, &p.code, Some(&features), &p.policy)
                    .await
                    .map_err(transient)
            }
            // A trial is issued under the product's default policy.
            PRODUCT_AGGREGATE if e.event_type == POLICY_SET => {
                let p: PolicySet = bus::payload(&e)?;
                if p.edition.is_some() {
                    return Ok(());
                }
                store::upsert_product(tx, &p.product, None, &p.policy)
                    .await
                    .map_err(transient)
            }
            LICENSE_AGGREGATE => {
                let Some(view) = service_kit::replica::fold_license(tx, &e).await? else {
                    return Ok(());
                };
                self.react(tx, &e, view).await
            }
            _ => Ok(()),
        }
    }
}

impl ReplicaConsumer {
    async fn react(
        &self,
        tx: &mut PgConnection,
        e: &EventEnvelope,
        view: LicenseView,
    ) -> Result<(), HandleError> {
        let reason = match e.event_type.as_str() {
            LICENSE_SUSPENDED => RevocationReason::LicenseSuspended,
            LICENSE_REVOKED => RevocationReason::LicenseRevoked,
            LICENSE_RECLAIMED => RevocationReason::LicenseReclaimed,
            LICENSE_DELETED => RevocationReason::LicenseDeleted,
            LICENSE_ISSUED => return self.complete_trial(tx, e, view).await,
            _ => return Ok(()),
        };
        let done = self
            .app
            .seats
            .execute(
                &view.id.to_string(),
                SeatsCommand::RevokeAll {
                    license_id: view.id,
                    reason,
                },
                &reaction(e, REVOKE_ACTIVATIONS, "revoke-seats"),
            )
            .await
            .map_err(transient)?;
        refused("revoke seats", &done.outcome);
        Ok(())
    }

    async fn complete_trial(
        &self,
        tx: &mut PgConnection,
        e: &EventEnvelope,
        view: LicenseView,
    ) -> Result<(), HandleError> {
        let Some(trial_id) = store::trial_by_issue_command(tx, e.command_id)
            .await
            .map_err(transient)?
        else {
            return Ok(());
        };
        let (trial, _) = self.app.trials.load(&trial_id).await.map_err(transient)?;
        let Some(t) = trial.state else {
            return Ok(());
        };
        // A trial that failed (or already ran) takes no seat from a late
        // license.
        if t.status != TrialStatus::Pending || t.issue_command_id != e.command_id {
            return Ok(());
        }
        let device = Device {
            fingerprint: t.fingerprint.clone(),
            components: t.components.clone(),
            client_time: t.client_time,
        };
        let done = self
            .app
            .seats
            .execute(
                &view.id.to_string(),
                SeatsCommand::Activate {
                    license: view,
                    device,
                    activation_id: derived_id(e.event_id, "trial-seat"),
                    offline: false,
                    nonce: None,
                },
                &reaction(e, ACTIVATE, "trial-activate"),
            )
            .await
            .map_err(transient)?;
        refused("trial activation", &done.outcome);
        let Some(seat) = done
            .aggregate
            .live()
            .find(|s| s.fingerprint == t.fingerprint)
        else {
            return Ok(());
        };
        let done = self
            .app
            .trials
            .execute(
                &trial_id,
                TrialCommand::Complete {
                    activation_id: seat.activation_id,
                },
                &reaction(e, COMPLETE_TRIAL, "trial-complete"),
            )
            .await
            .map_err(transient)?;
        refused("trial completion", &done.outcome);
        Ok(())
    }
}

pub struct ReactionConsumer {
    pub app: Arc<Activation>,
    pub producer: bus::Producer,
    /// `<prefix>.issuance.commands`.
    pub issuance_commands: String,
}

#[async_trait]
impl TxHandler for ReactionConsumer {
    async fn handle(&self, _tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let e = msg.event()?;
        match e.event_type.as_str() {
            TRIAL_STARTED => self.issue_trial(&e).await,
            DEVICE_ACTIVATED => {
                let p: DeviceActivated = bus::payload(&e)?;
                self.end_trials(&e, p.kind, &p.product, &p.components, p.license_id)
                    .await
            }
            ACTIVATION_MIGRATED => {
                let p: ActivationMigrated = bus::payload(&e)?;
                let license = store::license(&self.app.pool, p.license_id)
                    .await
                    .map_err(transient)?;
                match license {
                    Some(l) => {
                        self.end_trials(&e, l.kind, &l.product, &p.components, p.license_id)
                            .await
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

impl ReactionConsumer {
    async fn issue_trial(&self, e: &EventEnvelope) -> Result<(), HandleError> {
        let p: TrialStarted = bus::payload(e)?;
        let name = |s: String| {
            contracts::text::Name::parse(s)
                .map_err(|err| HandleError::Poison(format!("{}: {err}", e.event_type)))
        };
        let spec = IssueLicense {
            product: name(p.product)?,
            edition: None,
            customer: name(format!(
                "trial:{}",
                p.fingerprint.chars().take(16).collect::<String>()
            ))?,
            contract: None,
            kind: LicenseKind::Trial,
            modules: vec![],
            features: p.features.into_iter().map(name).collect::<Result<_, _>>()?,
            seats: Default::default(),
            expires_at: None,
        };
        let command = CommandEnvelope {
            command_id: p.issue_command_id,
            command_type: ISSUE_LICENSE.into(),
            aggregate_id: p.license_id.to_string(),
            issued_at: e.occurred_at,
            actor: Actor::new(ActorKind::Service, crate::SERVICE),
            correlation_id: e.correlation_id.clone(),
            causation_id: Some(e.event_id.to_string()),
            payload: serde_json::to_value(&spec).map_err(transient)?,
        };
        bus::publish_json(
            &self.producer,
            &self.issuance_commands,
            &command.aggregate_id,
            &command,
            &[("correlation_id", e.correlation_id.as_str())],
        )
        .await
        .map_err(transient)
    }

    /// No mixing (`trial::excludes`): the seats of `product` on this
    /// device that a new seat of `kind` excludes — trial seats, when it is
    /// paid — are revoked and their trials ended.
    async fn end_trials(
        &self,
        e: &EventEnvelope,
        kind: LicenseKind,
        product: &str,
        components: &std::collections::BTreeMap<String, String>,
        superseded_by: Uuid,
    ) -> Result<(), HandleError> {
        if !trial::excludes(LicenseKind::Trial, kind) {
            return Ok(());
        }
        // Each trial seat matches under its own license's policy.
        let seats = store::seats_of_device(&self.app.pool, components)
            .await
            .map_err(transient)?;
        for s in seats.iter().filter(|s| {
            // Only trial seats give way: a paid seat is never ended by one.
            s.kind == LicenseKind::Trial
                && trial::excludes(s.kind, kind)
                && s.status == SeatStatus::Live
                && s.product == product
        }) {
            let purpose = format!("end-trial-seat:{}", s.activation_id);
            let done = self
                .app
                .seats
                .execute(
                    &s.license_id.to_string(),
                    SeatsCommand::RevokeOne {
                        activation_id: s.activation_id,
                        reason: RevocationReason::TrialEnded,
                    },
                    &reaction(e, REVOKE_ACTIVATIONS, &purpose),
                )
                .await
                .map_err(transient)?;
            refused("trial seat revocation", &done.outcome);
            if let Some(trial_id) = store::trial_of_license(&self.app.pool, s.license_id)
                .await
                .map_err(transient)?
            {
                let purpose = format!("end-trial:{trial_id}");
                let done = self
                    .app
                    .trials
                    .execute(
                        &trial_id,
                        TrialCommand::End { superseded_by },
                        &reaction(e, END_TRIAL, &purpose),
                    )
                    .await
                    .map_err(|err: StoreError| transient(err))?;
                refused("trial end", &done.outcome);
            }
        }
        Ok(())
    }
}

/// The service whose stored outcomes decide a trial (`source` header).
const ISSUANCE_SERVICE: &str = "issuance";

/// Follows `<prefix>.command-outcomes` for the commands activation sent:
/// a trial whose `IssueLicense` issuance refused ends as `TrialFailed`
/// with issuance's code and message. Every other outcome is ignored.
pub struct OutcomeConsumer {
    pub app: Arc<Activation>,
}

#[async_trait]
impl TxHandler for OutcomeConsumer {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        // Outcomes are keyed by command id: only ours are read further.
        let Some(command_id) = msg
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| Uuid::parse_str(k).ok())
        else {
            return Ok(());
        };
        let Some(trial_id) = store::trial_by_issue_command(tx, command_id)
            .await
            .map_err(transient)?
        else {
            return Ok(());
        };
        let outcome: contracts::CommandOutcome = match msg.json("a command outcome") {
            Ok(o) => o,
            Err(err) => {
                tracing::warn!(%command_id, error = %err, "unreadable outcome of a trial's license");
                return Ok(());
            }
        };
        if outcome.command_id != command_id || outcome.status != OutcomeStatus::Rejected {
            return Ok(());
        }
        // Only issuance's stored verdict on our command counts: any
        // service answers under whatever id a command it takes carries
        // (and answers to a message that merely reused the id are not
        // stored), so outcomes from another source, answers that are not
        // the command's stored outcome, outcomes about another aggregate
        // and refusals of a license that exists all the same fail nothing.
        let (trial, _) = self.app.trials.load(&trial_id).await.map_err(transient)?;
        let Some(t) = trial.state else {
            return Ok(());
        };
        if msg.header(SOURCE_HEADER) != Some(ISSUANCE_SERVICE)
            || msg.header(STORED_HEADER) != Some("true")
            || outcome.aggregate_id != t.license_id.to_string()
            || store::license(&self.app.pool, t.license_id)
                .await
                .map_err(transient)?
                .is_some()
        {
            tracing::warn!(%command_id, source = ?msg.header(SOURCE_HEADER),
                "an outcome that does not fail the trial");
            return Ok(());
        }
        let (code, message) = outcome
            .error
            .map(|e| (e.code, e.message))
            .unwrap_or_else(|| ("REJECTED".into(), String::new()));
        // Stored as issuance said it, but printable and bounded: the
        // message reaches an event and the trial's answer.
        let printable = |s: String, max: usize| -> String {
            s.chars().filter(|c| !c.is_control()).take(max).collect()
        };
        let correlation = msg
            .header("correlation_id")
            .filter(|c| contracts::envelope::is_trace_id(c))
            .map_or_else(|| command_id.to_string(), str::to_string);
        let ctx = CommandContext {
            command_id: derived_id(command_id, "trial-failed"),
            command_type: FAIL_TRIAL.into(),
            correlation_id: correlation,
            causation_id: Some(command_id.to_string()),
            actor: Actor::new(ActorKind::Service, crate::SERVICE),
            occurred_at: chrono::Utc::now(),
            request_digest: eventstore::request_digest(FAIL_TRIAL, &command_id),
        };
        let done = self
            .app
            .trials
            .execute(
                &trial_id,
                TrialCommand::Fail {
                    issue_command_id: command_id,
                    code: printable(code, 100),
                    message: printable(message, 500),
                },
                &ctx,
            )
            .await
            .map_err(transient)?;
        refused("trial failure", &done.outcome);
        Ok(())
    }
}
