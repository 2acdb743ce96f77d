//! Every SQL statement of the projector, as typed functions over a pool or a
//! connection (a transaction, when the caller's statements must commit
//! together): the audit trail, the license states and a license's events,
//! the services' checkpoints, and the rebuilds' bookkeeping and DDL.

pub mod audit;
pub mod checkpoints;
pub mod licenses;
pub mod rebuild;

use sqlx::{Encode, Postgres, QueryBuilder, Type};

/// A row that does not read as its type.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Hex(#[from] hex::FromHexError),
}

impl bus::outage::Unreachable for RowError {
    fn outage(&self) -> Option<&'static bus::outage::Outage> {
        match self {
            RowError::Db(e) => e.outage(),
            _ => None,
        }
    }
}

/// A list filter: ` AND <condition>$n`, bound to `v`, when it is given.
fn and<'a, T>(sql: &mut QueryBuilder<'a, Postgres>, condition: &str, v: Option<T>)
where
    T: 'a + Encode<'a, Postgres> + Type<Postgres>,
{
    if let Some(v) = v {
        sql.push(" AND ").push(condition).push_bind(v);
    }
}
