//! Re-run the build when a migration changes, so `sqlx::migrate!` embeds the new set.
//! `migrations` links to the workspace's `migrations/sqlite`, the one source of the SQL.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
