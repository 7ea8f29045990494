//! [`SqliteStore::migrate`]: the schema, from the SQL files of `migrations/sqlite`, embedded.

use super::SqliteStore;
use osa_events_core::Result;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl SqliteStore {
    /// Creates or updates the store's tables; run it on every start.
    ///
    /// Several processes may run it at once: each migration is applied in a transaction of its
    /// own, and a run that fails because another process applied the same migration meanwhile
    /// runs again, finding it applied.
    ///
    /// # Errors
    ///
    /// [`Error::Migrate`](osa_events_core::Error::Migrate) when a migration fails, or the file was
    /// migrated by a newer version with migrations this one does not know.
    pub async fn migrate(&self) -> Result<()> {
        self.timed(async {
            if MIGRATOR.run(self.pool()).await.is_err() {
                MIGRATOR.run(self.pool()).await?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
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
