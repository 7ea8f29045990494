use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};

use super::*;
use crate::pg::{TestDatabase, ThrowawayCluster, database_url_or_throwaway, unless_unavailable};

/// Cuts `pid`'s connection, or panics with the reason. Outside CI, a machine where connections
/// cannot be cut (not root, no iptables, no netfilter) skips the test with a note.
async fn cut(pool: &PgPool, pid: i32) -> Option<Partition> {
    unless_unavailable(
        Partition::cut_session(pool, pid).await,
        "cutting a connection",
    )
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// The rules of this fixture that mention `port`, as `iptables -S` prints them.
fn rules_for(port: u16) -> Vec<String> {
    let program = IPTABLES
        .find()
        .expect("iptables, found when the rules were added");
    let mut cmd = Command::new(program);
    cmd.args(["-w", "10", "-S"]);
    let listed = run(&mut cmd, PARTITION_HINT).unwrap();
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|line| line.contains(COMMENT) && line.contains(&format!(" {port} ")))
        .map(str::to_owned)
        .collect()
}

/// A fresh database, a pool on it, and one more connection: the one a test cuts. Fields drop in
/// order: the connections before the database, the database before the cluster.
struct Scene {
    pool: PgPool,
    victim: PgConnection,
    /// The victim's server process id.
    pid: i32,
    /// The victim's local TCP port.
    client_port: u16,
    _db: TestDatabase,
    _cluster: Option<ThrowawayCluster>,
}

async fn scene() -> Scene {
    let (admin_url, cluster) = database_url_or_throwaway().unwrap();
    let db = TestDatabase::create_on(&admin_url).await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    let mut victim = PgConnection::connect(db.url()).await.unwrap();
    let pid = backend_pid(&mut victim).await;
    let client_port: i32 =
        sqlx::query_scalar("select client_port from pg_stat_activity where pid = $1")
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
    Scene {
        pool,
        victim,
        pid,
        client_port: u16::try_from(client_port).expect("a TCP session"),
        _db: db,
        _cluster: cluster,
    }
}

#[tokio::test]
async fn a_cut_connection_is_silent_until_healed_and_others_are_untouched() {
    // Keeps the database and cluster alive to the end; `victim` is moved out of it.
    let scene = scene().await;
    let (pool, mut victim, pid, client_port) =
        (&scene.pool, scene.victim, scene.pid, scene.client_port);
    let Some(partition) = cut(pool, pid).await else {
        return;
    };
    assert_eq!(rules_for(client_port).len(), 2, "one rule each way");

    let query = tokio::spawn(async move {
        let answer: i32 = sqlx::query_scalar("select 41 + 1")
            .fetch_one(&mut victim)
            .await
            .expect("the query, once the partition healed");
        (answer, victim)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!query.is_finished(), "the cut connection answered");
    let started = Instant::now();
    let other: i32 = sqlx::query_scalar("select 1")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(other, 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "another connection was slowed down: {:?}",
        started.elapsed()
    );

    partition.heal().unwrap();
    assert_eq!(rules_for(client_port), Vec::<String>::new());
    // TCP retransmits the query (after at most a few seconds of backoff): it arrives, and the
    // session, which never noticed the cut, answers.
    let (answer, victim) = tokio::time::timeout(Duration::from_secs(20), query)
        .await
        .expect("the query completes after the partition healed")
        .unwrap();
    assert_eq!(answer, 42);
    victim.close().await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn dropping_a_partition_heals_it() {
    // Keeps the database and cluster alive to the end; `victim` is moved out of it.
    let scene = scene().await;
    let (pool, mut victim, pid, client_port) =
        (&scene.pool, scene.victim, scene.pid, scene.client_port);
    let Some(partition) = cut(pool, pid).await else {
        return;
    };
    assert_eq!(rules_for(client_port).len(), 2);
    drop(partition);
    assert_eq!(rules_for(client_port), Vec::<String>::new());
    assert_eq!(
        backend_pid(&mut victim).await,
        pid,
        "the connection still works"
    );
    victim.close().await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn a_session_that_does_not_exist_cannot_be_cut() {
    let scene = scene().await;
    let pool = &scene.pool;
    // No session has process id 0.
    let error = Partition::cut_session(pool, 0).await.unwrap_err();
    assert!(
        matches!(error, FixtureError::NotTcpSession { pid: 0 }),
        "{error}"
    );
    assert!(error.to_string().contains("Unix socket"), "{error}");
    pool.close().await;
}
