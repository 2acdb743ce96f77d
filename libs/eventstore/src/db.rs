use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A pool with bounded waits: a request never hangs on a saturated database.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// After the migrations, run as the owner: what the serving `role` may do.
/// Read and write every table, except that the history (events, command
/// outcomes, the Merkle leaves and the signed checkpoints) can only be
/// appended (no UPDATE, DELETE or TRUNCATE), and the migrations table only
/// read. `owned`: tables the role rebuilds (drops and renames),
/// which it therefore owns, and may create tables beside.
pub async fn grant_serving(owner: &PgPool, role: &str, owned: &[&str]) -> Result<(), sqlx::Error> {
    let r = ident(role);
    let mut tx = owner.begin().await?;
    // Concurrent GRANTs of starting instances would collide.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('licensing-grants'))")
        .execute(&mut *tx)
        .await?;
    let db: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut *tx)
        .await?;
    let d = ident(&db);
    let mut statements = vec![
        // Every role may connect to a new database and make temporary
        // tables in it: only this service's may.
        format!("REVOKE CONNECT, TEMPORARY ON DATABASE {d} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {d} TO {r}"),
        format!("GRANT USAGE ON SCHEMA public TO {r}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}"),
        format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {r}"),
        format!(
            "REVOKE UPDATE, DELETE, TRUNCATE ON events, command_outcomes, merkle_leaves, \
             checkpoints FROM {r}"
        ),
        format!("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM {r}"),
    ];
    if !owned.is_empty() {
        statements.push(format!("GRANT CREATE ON SCHEMA public TO {r}"));
        for t in owned {
            statements.push(format!("ALTER TABLE {} OWNER TO {r}", ident(t)));
        }
    }
    for sql in statements {
        sqlx::query(&sql).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Whether every migration of the event store and of `service` is applied,
/// as it is now (same checksum): then a serving role that may not migrate
/// need not try.
pub async fn is_migrated(pool: &PgPool, service: Option<&Migrator>) -> Result<bool, sqlx::Error> {
    let applied: Vec<(i64, Vec<u8>)> =
        match sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            // undefined_table: a database never migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
    Ok(MIGRATOR
        .iter()
        .chain(service.into_iter().flat_map(|m| m.iter()))
        .filter(|m| m.migration_type.is_up_migration())
        .all(|m| {
            applied
                .iter()
                .any(|(v, c)| *v == m.version && c.as_slice() == m.checksum.as_ref())
        }))
}

/// Whether the pool's role could rewrite history: a superuser, or one
/// allowed to update or delete events.
pub async fn can_rewrite_history(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT rolsuper OR has_table_privilege('events', 'UPDATE') \
                OR has_table_privilege('events', 'DELETE') \
         FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Applies the event-store tables. Services run their own migrator over the
/// same database after this one, hence `ignore_missing`.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = Migrator {
        migrations: MIGRATOR.migrations.clone(),
        ..Migrator::DEFAULT
    };
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
