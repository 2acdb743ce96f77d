//! What the domains of every service share, free of the database, the
//! broker and HTTP: the clock they read time from, and how a refusal is
//! told — a coded error with its kind, or an event that records one; and
//! the `SigningKey` aggregate of every service that signs.

pub mod signing_key;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
pub use contracts::ErrorKind;

/// The clock every domain reads time from, injectable so the scheduler and
/// tests can move it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still: for given/when/then tests.
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The version of an aggregate's fold: its `evolve` and the shape of its
/// state. Stored snapshots carry it. Raise it with any change after which a
/// snapshot taken by the old fold could differ from a replay by the new
/// one; the old snapshots are then ignored (the next command folds the
/// whole stream and stores a new one).
pub trait Folding {
    const FOLD_VERSION: u32;
}

/// An aggregate's error: a stable code, the kind of refusal it is (its
/// HTTP status follows from this) and the field it is about.
pub trait CodedError: std::error::Error {
    fn code(&self) -> &'static str;
    /// What kind of refusal it is (its HTTP status follows from this).
    fn kind(&self) -> ErrorKind;
    /// The payload field the failure is about, when there is one.
    fn field(&self) -> Option<&'static str> {
        None
    }
    /// Every code this error answers, with its kind: what an API document
    /// lists for the routes whose commands reach this aggregate.
    fn codes() -> Vec<(&'static str, ErrorKind)>
    where
        Self: Sized;
}

/// Implements [`CodedError`]'s `code`, `kind` and `codes` from one table
/// (`Self::Variant { .. } => "CODE", Kind;`), so the codes an API document
/// lists are the ones the matches answer, and a new variant cannot be left
/// out of either.
#[macro_export]
macro_rules! coded {
    ($($pat:pat => $code:literal, $kind:ident;)+) => {
        fn code(&self) -> &'static str {
            match self {
                $($pat => $code,)+
            }
        }

        fn kind(&self) -> $crate::ErrorKind {
            match self {
                $($pat => $crate::ErrorKind::$kind,)+
            }
        }

        fn codes() -> Vec<(&'static str, $crate::ErrorKind)> {
            vec![$(($code, $crate::ErrorKind::$kind)),+]
        }
    };
}

/// An event that records a refusal (a detected clock rollback, say): the
/// command's outcome is `rejected` with the event's code, and the event is
/// stored all the same, so the refusal is part of the audited history.
pub trait Refusal {
    fn refusal(&self) -> Option<Refused> {
        None
    }
}

/// Why a command is refused: by its aggregate (a [`CodedError`]), by an
/// event that records the refusal ([`Refusal`]), inside its append's
/// transaction by a rule across aggregates that only the database can
/// decide, or before it reached an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<Cow<'static, str>>,
}

impl Refused {
    pub fn new(code: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            code,
            kind,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn of<E: CodedError>(e: &E) -> Self {
        Self {
            code: e.code(),
            kind: e.kind(),
            message: e.to_string(),
            field: e.field().map(Cow::Borrowed),
        }
    }
}

/// `<SecretId>.<SecretKey>`: both 1-128 characters of `[A-Za-z0-9_-]`.
/// The one reading of a bearer token, for the services that check one and
/// the domains that store one (an upstream's secret).
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    (ok(id) && ok(secret)).then_some((id, secret))
}

/// The version every event type is recorded under today; a changed payload
/// gets a new version and an upcaster, not a silent reinterpretation.
pub const EVENT_VERSION: &str = contracts::issuance::V1;

/// Declares an aggregate's event enum and its `cqrs_es::DomainEvent`
/// impl from one table: each variant wraps the `contracts` payload of the
/// same name and is recorded under the published event type beside it.
/// The crate calling it depends on `serde` and `cqrs_es`.
#[macro_export]
macro_rules! events {
    ($(#[$attr:meta])* $vis:vis enum $name:ident {
        $($variant:ident => $event_type:expr),+ $(,)?
    }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        $vis enum $name {
            $($variant($variant)),+
        }

        impl ::cqrs_es::DomainEvent for $name {
            fn event_type(&self) -> String {
                match self {
                    $(Self::$variant(_) => $event_type),+
                }
                .into()
            }
            fn event_version(&self) -> String {
                $crate::EVENT_VERSION.into()
            }
        }
    };
}

/// Implements `cqrs_es::Aggregate` for an aggregate written as two plain
/// functions: `decide(&mut self, command, &services) -> Result<Vec<Event>,
/// Error>` (what a command records, judged on the state as it stands) and
/// `evolve(&mut self, event)` (how a recorded event changes the state). The
/// aggregate stays free of the framework's sink and of `async`, and every
/// aggregate is wired alike. The crate calling it depends on `cqrs_es`.
///
/// `fold = N` sets the aggregate's [`Folding::FOLD_VERSION`] (1 unless
/// given).
#[macro_export]
macro_rules! aggregate {
    ($aggregate:ty, $type_name:expr, $command:ty, $event:ty, $error:ty, $services:ty) => {
        $crate::aggregate!(
            $aggregate,
            $type_name,
            $command,
            $event,
            $error,
            $services,
            fold = 1
        );
    };
    ($aggregate:ty, $type_name:expr, $command:ty, $event:ty, $error:ty, $services:ty, fold = $fold:expr) => {
        impl $crate::Folding for $aggregate {
            const FOLD_VERSION: u32 = $fold;
        }

        impl ::cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = $type_name;
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = $services;

            async fn handle(
                &mut self,
                command: $command,
                services: &$services,
                sink: &::cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), $error> {
                for event in self.decide(command, services)? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: $event) {
                self.evolve(event)
            }
        }
    };
}
