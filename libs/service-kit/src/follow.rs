//! Keeping an in-memory copy of tables exactly in step with them, for
//! answers served from memory (activation's validation index).
//!
//! A trigger on each copied table names the changed row's key on a channel
//! (`pg_notify`); PostgreSQL delivers it when, and only if, the transaction
//! commits. The follower LISTENs first and loads everything second, so no
//! commit falls between the two; afterwards it reloads the keys each batch
//! of notifications names. Notifications sent while its connection is down
//! are lost, so a lost connection marks the copy not live (callers then
//! read the tables) until a new session has listened and reloaded it all.
//! The copy thus trails a commit by one notification and one reload
//! (milliseconds), never by a missed change; a connection that died
//! silently is found by a probe after 5 s without a notification (the
//! copy is then not live within 8 s).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

/// Pause before a new session after a failed one.
const RETRY: Duration = Duration::from_secs(1);
/// A connection that died without a reset (a failover, a dropped NAT
/// entry) delivers nothing and reports nothing: after this much silence
/// the session asks the server for an answer, and ends if none comes
/// within `PROBE_TIMEOUT`.
const QUIET: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[async_trait::async_trait]
pub trait Follower: Send + Sync + 'static {
    /// Reloads the rows of these keys (every row when None).
    async fn reload(&self, keys: Option<Vec<String>>) -> Result<(), sqlx::Error>;
    /// Whether the copy is complete and followed, so answers may come from it.
    fn set_live(&self, live: bool);
}

/// Follows `channel` until shutdown, one session after another.
pub async fn follow<F: Follower>(
    pool: PgPool,
    channel: &'static str,
    follower: Arc<F>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        let ended = session(&pool, channel, &*follower, &mut shutdown, &mut failing).await;
        follower.set_live(false);
        match ended {
            Ok(()) => return,
            Err(e) if !failing => {
                tracing::warn!(channel, error = %e, "in-memory copy not live, reading tables");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection's worth of following; Ok at shutdown.
async fn session<F: Follower>(
    pool: &PgPool,
    channel: &'static str,
    follower: &F,
    shutdown: &mut watch::Receiver<bool>,
    failing: &mut bool,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    follower.reload(None).await?;
    follower.set_live(true);
    *failing = false;
    tracing::info!(channel, "in-memory copy loaded and followed");
    loop {
        let first = tokio::select! {
            n = listener.try_recv() => n?,
            _ = tokio::time::sleep(QUIET) => {
                let probe = sqlx::query("SELECT 1").execute(&mut listener);
                match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(sqlx::Error::PoolTimedOut),
                }
            }
            _ = shutdown.changed() => return Ok(()),
        };
        let Some(first) = first else {
            return Err(sqlx::Error::Protocol("notification connection lost".into()));
        };
        let mut keys = BTreeSet::from([first.payload().to_string()]);
        while let Some(n) = listener.next_buffered() {
            keys.insert(n.payload().to_string());
        }
        follower.reload(Some(keys.into_iter().collect())).await?;
    }
}
