//! `PgStore::connect`: a bounded wait, with backoff, for a database that is not up yet.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osa_events::{ConnectRetry, Error, PgStore};
use tokio::net::{TcpListener, TcpStream};

/// `DATABASE_URL` with its host and port replaced by `127.0.0.1:port`.
fn url_on_port(port: u16) -> String {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (run scripts/test.sh)");
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (credentials, rest) = match rest.split_once('@') {
        Some((credentials, rest)) => (format!("{credentials}@"), rest),
        None => (String::new(), rest),
    };
    let path = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
    format!("{scheme}://{credentials}127.0.0.1:{port}{path}")
}

/// A port nothing listens on (bound, then released).
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Log lines, captured for the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A regression test: `PgStore::connect` failed at once when the server was not listening yet,
/// the normal case for containers started together. Now it waits (by default up to 30 s) with
/// backoff, logging each attempt's cause, and connects once the server is there: here a proxy to
/// the test server that starts listening 600 ms later.
#[tokio::test(flavor = "current_thread")]
async fn connect_waits_for_a_database_that_comes_up_later() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _logs = tracing::subscriber::set_default(subscriber);

    let port = free_port().await;
    let upstream: sqlx::postgres::PgConnectOptions =
        std::env::var("DATABASE_URL").unwrap().parse().unwrap();
    let upstream = format!("{}:{}", upstream.get_host(), upstream.get_port());
    let proxy = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut server = TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });

    let started = Instant::now();
    let store = PgStore::connect(&url_on_port(port))
        .await
        .expect("connects once the server listens");
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(started.elapsed() < Duration::from_secs(10));
    let (one,): (i32,) = sqlx::query_as("select 1")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(one, 1);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let retries: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("cannot connect to the database yet; retrying"))
        .collect();
    assert!(!retries.is_empty(), "no attempt was logged: {logs}");
    assert!(
        retries
            .iter()
            .all(|line| line.contains("WARN") && line.to_lowercase().contains("refused")),
        "each attempt is logged with its cause: {logs}"
    );
    proxy.abort();
}

/// The wait is bounded: with nothing listening, `connect` gives up after `max_wait` with the
/// last attempt's cause.
#[tokio::test]
async fn connect_gives_up_after_its_bounded_wait() {
    let url = url_on_port(free_port().await);
    let started = Instant::now();
    let error = PgStore::connect_with(
        &url,
        ConnectRetry::default()
            .max_wait(Duration::from_millis(400))
            .delays(Duration::from_millis(50), Duration::from_millis(100)),
    )
    .await
    .expect_err("nothing listens");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert!(
        matches!(&error, Error::Database(_))
            && matches!(error.backend::<sqlx::Error>(), Some(sqlx::Error::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused),
        "{error:?}"
    );
}

/// What no wait can cure fails at once: here a database that does not exist.
#[tokio::test]
async fn connect_does_not_wait_for_an_unknown_database() {
    let url = std::env::var("DATABASE_URL").unwrap();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
    let started = Instant::now();
    let error = PgStore::connect(&format!("{base}/osa_no_such_database"))
        .await
        .expect_err("no such database");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("does not exist"), "{error}");
}
