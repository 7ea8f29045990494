//! Running the embedded migrations into the `osa_events` schema.

use sqlx::{Connection, Executor, PgConnection};

use super::PgStore;
use osa_events_core::Result;

/// The SQL migrations of `migrations/` (a link to the workspace's `migrations/postgres`; the
/// package holds the files themselves), embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Serializes concurrent `migrate()` calls of several processes (`create schema if not exists`
/// is not race-free on its own). Any constant works; this one spells "osaevent".
const MIGRATE_LOCK_KEY: i64 = 0x6f73_6165_7665_6e74;

impl PgStore {
    /// Creates or upgrades the `osa_events` schema: tables, indexes, and sqlx's migration ledger
    /// (`osa_events._sqlx_migrations`), leaving the application's own schemas alone.
    ///
    /// Safe to call from every process at start-up: concurrent calls wait for each other, and
    /// applied migrations are skipped. The role needs `CREATE` on the database the first time (to
    /// create the schema), then only ownership of the schema (see `docs/privileges.md`).
    ///
    /// # Errors
    ///
    /// [`Error::Database`](osa_events_core::Error::Database) when the connection fails,
    /// [`Error::Migrate`](osa_events_core::Error::Migrate) when a migration fails or an applied one was edited.
    pub async fn migrate(&self) -> Result<()> {
        // A connection of its own, closed afterwards: the session-level search_path and advisory
        // lock must never leak into the pool.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let migrated = migrate_on(&mut conn).await;
        let closed = conn.close().await;
        // A failed migration often leaves a broken connection that cannot close cleanly either:
        // report why the migration failed, not that the close did.
        migrated?;
        closed?;
        Ok(())
    }
}

async fn migrate_on(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("select pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    // `create schema if not exists` checks the CREATE privilege even when the schema exists:
    // look first, so later migrations need only the schema's privileges.
    let (exists,): (bool,) =
        sqlx::query_as("select exists (select 1 from pg_namespace where nspname = 'osa_events')")
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        conn.execute("create schema osa_events").await?;
    }
    conn.execute("set search_path to osa_events").await?;
    // `run_direct`, not `run(&mut *conn)`: `run` is generic over `Acquire<'a>`, which makes this
    // future not `Send` ("implementation of `Acquire` is not general enough"), so `migrate()`
    // could not be awaited in `tokio::spawn`. `run_direct` is what `run` calls after acquiring.
    MIGRATOR.run_direct(None, &mut *conn, false).await?;
    // A constant, sent as a simple query: several statements, no parameters.
    conn.execute(REBASE_SEQUENCES_SQL).await?;
    Ok(())
}

/// Moves each sequence of the schema past the values already in its column, where it is behind:
/// after a logical replication or a partial restore, which carry the rows but not the sequences,
/// new events would collide with old positions and new commits be numbered below every
/// projection's checkpoint. Forward only, so it is a no-op on a healthy database.
const REBASE_SEQUENCES_SQL: &str = r#"
select setval(pg_get_serial_sequence('osa_events.events', 'position'), m)
from (select max(position) as m from osa_events.events) as x
where m > (select last_value from osa_events.events_position_seq);
select setval(pg_get_serial_sequence('osa_events.commits', 'id'), m)
from (select max(id) as m from osa_events.commits) as x
where m > (select last_value from osa_events.commits_id_seq);
select setval('osa_events.commit_seq', m)
from (select max(seq) as m from osa_events.commits) as x
where m > (select case when is_called then last_value else 0 end from osa_events.commit_seq);
"#;

#[cfg(test)]
mod tests {
    /// `sqlx::migrate!` skips subdirectories and embeds an empty set without complaint: a path
    /// one level off fails only at run time, on the first database.
    #[test]
    fn every_migration_is_embedded() {
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .expect("the migrations link")
            .filter(|entry| {
                entry
                    .as_ref()
                    .is_ok_and(|entry| entry.file_name().to_string_lossy().ends_with(".sql"))
            })
            .count();
        assert!(files > 0, "no migration files");
        assert_eq!(super::MIGRATOR.iter().count(), files);
    }
}
