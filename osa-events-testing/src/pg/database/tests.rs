use sqlx::{Connection, PgConnection};

use super::*;
use crate::pg::database_url_or_throwaway;

async fn database_exists(admin_url: &str, name: &str) -> bool {
    let mut admin = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

async fn current_database(conn: impl sqlx::PgExecutor<'_>) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn database_is_created_fresh_and_dropped_on_a_current_thread_runtime() {
    let (admin_url, _cluster) = database_url_or_throwaway().unwrap();
    let db = TestDatabase::create_on(&admin_url).await.unwrap();
    let name = db.name().to_owned();
    assert!(name.starts_with("osa_test_"), "{name}");
    assert_eq!(current_database(db.pool()).await, name);
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    assert_eq!(current_database(&mut conn).await, name);
    assert!(database_exists(&admin_url, &name).await);

    drop(db); // with `conn` still open: FORCE terminates it

    assert!(
        !database_exists(&admin_url, &name).await,
        "{name} was not dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_distinct_and_dropped_on_a_multi_thread_runtime() {
    let (admin_url, _cluster) = database_url_or_throwaway().unwrap();
    let a = TestDatabase::create_on(&admin_url).await.unwrap();
    let b = TestDatabase::create_on(&admin_url).await.unwrap();
    assert_ne!(a.name(), b.name());
    sqlx::query("CREATE TABLE only_in_a (id int)")
        .execute(a.pool())
        .await
        .unwrap();
    let in_b: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_in_a')::text")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(in_b, None);

    let names = [a.name().to_owned(), b.name().to_owned()];
    drop((a, b));
    for name in names {
        assert!(
            !database_exists(&admin_url, &name).await,
            "{name} was not dropped"
        );
    }
}

#[test]
fn with_database_replaces_only_the_path() {
    let cases = [
        ("postgres://u:p@h:5432/postgres", "postgres://u:p@h:5432/x"),
        (
            "postgres://h/postgres?sslmode=disable",
            "postgres://h/x?sslmode=disable",
        ),
        ("postgres://h:5432", "postgres://h:5432/x"),
        (
            "postgres://h?sslmode=disable",
            "postgres://h/x?sslmode=disable",
        ),
        ("postgresql:///db?host=/tmp", "postgresql:///x?host=/tmp"),
    ];
    for (url, expected) in cases {
        assert_eq!(with_database(url, "x"), expected, "{url}");
    }
}

#[test]
fn redact_hides_only_the_password() {
    assert_eq!(
        redact("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact("postgres://u:s@cr:t@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("postgres://u@h:5432/db"), "postgres://u@h:5432/db");
    assert_eq!(
        redact("postgres://h:5432/db?x=a:b@c"),
        "postgres://h:5432/db?x=a:b@c"
    );
}

#[test]
fn unset_database_url_message_points_at_the_test_script() {
    let message = FixtureError::DatabaseUrlUnset.to_string();
    assert!(message.contains("scripts/test.sh"), "{message}");
    assert!(message.contains("set DATABASE_URL"), "{message}");
}
