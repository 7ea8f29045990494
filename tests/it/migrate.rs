//! `PgStore::migrate`: which error it reports when a migration fails.

use std::time::Duration;

use osa_events::{Error, PgStore};
use osa_events_fixtures::pg::TestDatabase;
use sqlx::postgres::PgPoolOptions;
use tokio::net::{TcpListener, TcpStream};

use crate::support::eventually;

/// The key `migrate()` serializes concurrent migrations on (osa-events-postgres/src/store/migrate.rs).
const MIGRATE_LOCK_KEY: i64 = 0x6f73_6165_7665_6e74;

/// A regression test: `migrate()` closed its connection with `?` before returning the migration's
/// result, so a migration that failed with its connection (reset while it waits for the migration
/// lock) was reported as the close's error (writing `Terminate` to the dead socket: broken pipe)
/// instead of its own (connection reset).
#[tokio::test]
async fn a_failed_migration_reports_the_migration_error_not_the_close_error() {
    let database = TestDatabase::create().await.expect("a test database");
    let pool = database.pool().clone();
    let mut holder = pool.acquire().await.expect("a connection");
    sqlx::query("select pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .expect("hold the migration lock");

    // `migrate()` opens its own connection from the pool's options: through a proxy the test
    // can reset. The lazy pool itself never connects.
    let proxy = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a proxy");
    let proxy_port = proxy.local_addr().expect("the proxy's address").port();
    let server = pool.connect_options();
    let server_addr = format!("{}:{}", server.get_host(), server.get_port());
    let through_proxy = (*server).clone().host("127.0.0.1").port(proxy_port);
    let store = PgStore::from_pool(PgPoolOptions::new().connect_lazy_with(through_proxy));
    let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
    let proxied = tokio::spawn(async move {
        let (mut client, _) = proxy.accept().await.expect("migrate() connects");
        let mut upstream = TcpStream::connect(server_addr)
            .await
            .expect("reach the server");
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = cut_rx => {}
        }
        // Reset, not close: the client's pending read fails, and so does any later write.
        client.set_zero_linger().expect("SO_LINGER 0");
        drop(client);
    });
    let migrating = tokio::spawn(async move { store.migrate().await });
    eventually(
        Duration::from_secs(10),
        "migrate() waits for the lock",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted \
             and database = (select oid from pg_database where datname = current_database())",
            )
            .fetch_one(&pool)
            .await
            .expect("read pg_locks")
                == 1
        },
    )
    .await;
    cut_tx.send(()).expect("the proxy runs");
    proxied.await.expect("the proxy resets the connection");

    let error = tokio::time::timeout(Duration::from_secs(10), migrating)
        .await
        .expect("migrate() returns")
        .expect("no panic")
        .expect_err("the migration's connection was reset");
    let kind = match (&error, error.backend::<sqlx::Error>()) {
        (Error::Database(_), Some(sqlx::Error::Io(io))) => Some(io.kind()),
        _ => None,
    };
    assert_eq!(
        kind,
        Some(std::io::ErrorKind::ConnectionReset),
        "expected the migration's own error, got: {error:?}"
    );
    drop(holder);
}
