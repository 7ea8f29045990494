use std::env;

use sqlx::{Connection, PgConnection};

use super::*;

/// Starts a cluster, or panics with the reason. The one exception: outside CI, when
/// `DATABASE_URL` already names a server and this machine has no server binaries, the
/// throwaway cluster is not needed, so its test is skipped with a note.
fn start_cluster() -> Option<ThrowawayCluster> {
    match ThrowawayCluster::start() {
        Ok(cluster) => Some(cluster),
        Err(err @ FixtureError::BinariesNotFound { .. })
            if env::var_os("DATABASE_URL").is_some() && env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!(
                "skipping: DATABASE_URL is set, and no throwaway cluster can be started: {err}"
            );
            None
        }
        Err(err) => panic!("{err}"),
    }
}

async fn show(conn: &mut PgConnection, setting: &str) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn started_cluster_accepts_connections_with_test_settings() {
    let Some(cluster) = start_cluster() else {
        return;
    };
    assert_eq!(
        cluster.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port())
    );

    let mut conn = PgConnection::connect(cluster.url()).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert_eq!(show(&mut conn, "fsync").await, "off");
    assert_eq!(show(&mut conn, "full_page_writes").await, "off");
    assert_eq!(show(&mut conn, "max_connections").await, "400");
    assert_eq!(show(&mut conn, "shared_buffers").await, "128MB");
    assert_eq!(show(&mut conn, "server_encoding").await, "UTF8");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn dropping_the_cluster_stops_the_server_and_removes_its_directory() {
    let Some(cluster) = start_cluster() else {
        return;
    };
    let dir = cluster.dir().to_owned();
    let url = cluster.url().to_owned();
    assert!(dir.join("data").join("PG_VERSION").is_file());

    drop(cluster);

    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "{url} still accepts connections"
    );
}
