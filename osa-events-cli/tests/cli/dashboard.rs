//! `dashboard`: refuses what would be unsafe before connecting, serves the pages on the address
//! it is given, and stops on Ctrl-C.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;

use crate::interrupt::{interrupt, read_until, spawn_with};
use crate::support::{Scene, run};

#[test]
fn a_public_address_without_a_token_is_refused_before_connecting() {
    // No database at all: the refusal comes first.
    let out = run(&["dashboard", "--listen", "0.0.0.0:8080"], &[]).exits(2);
    assert!(
        out.stderr
            .contains("refusing to listen on 0.0.0.0:8080 without a token"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("OSA_EVENTS_DASHBOARD_TOKEN"),
        "{}",
        out.stderr
    );
    let out = run(
        &["dashboard", "--listen", "0.0.0.0:8080"],
        &[("OSA_EVENTS_DASHBOARD_TOKEN", "short")],
    )
    .exits(2);
    assert!(
        out.stderr.contains("at least 16 characters"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("short"),
        "the token is not echoed: {}",
        out.stderr
    );
}

/// A free port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `port` with `headers`; the whole response.
fn get(port: u16, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the dashboard listens");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test]
async fn it_serves_the_pages_until_ctrl_c() {
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.a").await;
    scene.publish(0..2).await;
    scene.kill(a, 1, "boom").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = spawn_with(
        &scene,
        &["dashboard", "--listen", &listen, "--read-only"],
        &[],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let banner = read_until(&mut out, "Ctrl-C stops it");
    assert!(
        banner.contains(&format!(
            "http://127.0.0.1:{port}/ (this machine only, read-only)"
        )),
        "{banner}"
    );
    assert!(
        !banner.contains(scene.url()),
        "no url with credentials: {banner}"
    );

    let page = wait_for_page(port, "/", "Host: localhost\r\n");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains(">cli.a</a>"), "{page}");
    assert!(page.contains("read-only"), "{page}");
    let dead = get(port, "/dead", "Host: localhost\r\n");
    assert!(dead.contains("boom"), "{dead}");
    let foreign = get(port, "/", "Host: evil.example\r\n");
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");

    interrupt(&child);
    let status = child.wait().expect("it exits");
    assert_eq!(
        status.code(),
        Some(0),
        "Ctrl-C stops the dashboard with success"
    );
}

#[tokio::test]
async fn with_a_token_every_page_needs_it() {
    let scene = Scene::new().await;
    scene.subscribe("cli.a").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "a-token-of-enough-length";
    let mut child = spawn_with(
        &scene,
        &["dashboard", "--listen", &listen],
        &[("OSA_EVENTS_DASHBOARD_TOKEN", token)],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let banner = read_until(&mut out, "Ctrl-C stops it");
    assert!(banner.contains("(token required)"), "{banner}");
    assert!(!banner.contains(token), "{banner}");

    let anonymous = wait_for_page(port, "/", "Host: localhost\r\n");
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    let with_token = get(
        port,
        "/",
        &format!("Host: localhost\r\nAuthorization: Bearer {token}\r\n"),
    );
    assert!(with_token.starts_with("HTTP/1.1 200"), "{with_token}");
    interrupt(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `GET path`, retried while the server is still binding (the banner comes just before).
fn wait_for_page(port: u16, path: &str, headers: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => return get(port, path, headers),
            Err(error) if std::time::Instant::now() > deadline => {
                panic!("the dashboard never listened on {port}: {error}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}
