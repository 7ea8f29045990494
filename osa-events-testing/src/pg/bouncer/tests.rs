use std::env;

use sqlx::{Connection, PgConnection};

use super::*;
use crate::pg::{TestDatabase, database_url_or_throwaway};

fn upstream(url: &str) -> Upstream {
    Upstream::parse(url).unwrap()
}

#[test]
fn config_points_the_database_at_the_url_and_pools_in_transaction_mode() {
    let ini = upstream("postgres://app:s%40cret@db.example:6543/orders?sslmode=disable")
        .config(7000, Path::new("/tmp/x/userlist.txt"));
    assert!(
        ini.starts_with(
            "[databases]\norders = host='db.example' port=6543 dbname='orders' user='app'\n"
        ),
        "{ini}"
    );
    for line in [
        "pool_mode = transaction",
        "auth_type = trust",
        "listen_addr = 127.0.0.1",
        "listen_port = 7000",
        "auth_file = /tmp/x/userlist.txt",
        "server_reset_query =",
        "ignore_startup_parameters = extra_float_digits",
        &format!("default_pool_size = {POOL_SIZE}"),
    ] {
        assert!(ini.lines().any(|l| l == line), "no `{line}` in:\n{ini}");
    }
}

#[test]
fn userlist_holds_the_decoded_password_for_the_server_login() {
    assert_eq!(
        upstream("postgres://app:s%40cret@h/db").userlist(),
        "\"app\" \"s@cret\"\n"
    );
    assert_eq!(upstream("postgres://app@h/db").userlist(), "\"app\" \"\"\n");
}

#[test]
fn url_through_keeps_user_and_database_and_drops_host_port_and_query() {
    assert_eq!(
        upstream("postgres://app:pw@db.example:6543/orders?sslmode=require").url_through(7000),
        "postgres://app:pw@127.0.0.1:7000/orders"
    );
    assert_eq!(
        upstream("postgres://h/orders").url_through(7000),
        "postgres://127.0.0.1:7000/orders"
    );
}

#[test]
fn a_missing_database_is_the_users() {
    let upstream = upstream("postgres://app@h:5432");
    assert_eq!(upstream.database, "app");
}

#[test]
fn names_and_values_are_quoted_when_needed() {
    assert_eq!(ini_name("osa_test_1f"), "osa_test_1f");
    assert_eq!(ini_name("my-db"), "\"my-db\"");
    assert_eq!(ini_name("a\"b"), "\"a\"\"b\"");
    assert_eq!(conn_value("o'k"), "'o''k'");
}

#[test]
fn percent_decode_keeps_invalid_escapes() {
    assert_eq!(percent_decode("a%40b%2Fc"), "a@b/c");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz%+1"), "%zz%+1");
}

#[test]
fn an_invalid_url_is_reported_without_its_password() {
    let Err(err) = PgBouncer::start_transaction_mode("postgres://u:secret@h:notaport/db") else {
        panic!("started on an invalid url");
    };
    let message = err.to_string();
    assert!(
        message.starts_with("invalid database url postgres://u:***@h:notaport/db: "),
        "{message}"
    );
}

/// Starts pgbouncer, or panics with the reason. Outside CI, a machine without pgbouncer that
/// cannot install it skips the test with a note.
fn start_bouncer(url: &str) -> Option<PgBouncer> {
    match PgBouncer::start_transaction_mode(url) {
        Ok(bouncer) => Some(bouncer),
        Err(err @ FixtureError::PgBouncerNotFound { .. })
            if env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!("skipping: {err}");
            None
        }
        Err(err) => panic!("{err}"),
    }
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    // Not prepared: outside a transaction, a prepared statement's parse and execution may land
    // on different server sessions.
    let row = sqlx::raw_sql("select pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap();
    sqlx::Row::get(&row, 0)
}

#[tokio::test]
async fn sqlx_connects_through_it_and_each_transaction_may_change_server_session() {
    let (admin_url, _cluster) = database_url_or_throwaway().unwrap();
    let db = TestDatabase::create_on(&admin_url).await.unwrap();
    let Some(bouncer) = start_bouncer(db.url()) else {
        return;
    };
    assert_eq!(
        bouncer.url(),
        format!(
            "postgres://{}127.0.0.1:{}/{}",
            db.url()
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .map_or(String::new(), |(userinfo, _)| format!("{userinfo}@")),
            bouncer.port(),
            db.name()
        )
    );

    // sqlx's startup packet (extra_float_digits, application_name, …) is accepted.
    let options: PgConnectOptions = bouncer.url().parse().unwrap();
    let mut client = PgConnection::connect_with(&options.application_name("bouncer-test"))
        .await
        .unwrap();
    let row = sqlx::raw_sql("select current_database()")
        .fetch_one(&mut client)
        .await
        .unwrap();
    assert_eq!(sqlx::Row::get::<String, _>(&row, 0), db.name());

    // The server session `client` just used is idle again; another client's transaction takes
    // it, so `client`'s next statement runs on another one.
    let first = backend_pid(&mut client).await;
    let mut other = PgConnection::connect(bouncer.url()).await.unwrap();
    let mut pinned = other.begin().await.unwrap();
    assert_eq!(backend_pid(&mut pinned).await, first);
    let second = backend_pid(&mut client).await;
    assert_ne!(second, first, "pgbouncer is not in transaction mode");
    pinned.rollback().await.unwrap();
    other.close().await.unwrap();
    client.close().await.unwrap();

    let dir = bouncer.dir().to_owned();
    let url = bouncer.url().to_owned();
    drop(bouncer);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "{url} still accepts connections"
    );
}
