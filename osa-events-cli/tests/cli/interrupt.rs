//! Ctrl-C (SIGINT): `status --watch` stops cleanly, and a chunked retry stops between chunks,
//! reporting what it did, with every chunk either done or not.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use osa_events::operations::DeliveryState;

use crate::support::Scene;

/// Starts `osa-events args…` on `scene`'s database, stdout piped.
fn spawn(scene: &Scene, args: &[&str]) -> Child {
    spawn_with(scene, args, &[])
}

/// Starts `osa-events args…` on `scene`'s database with `env` set, stdout piped.
pub(crate) fn spawn_with(scene: &Scene, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_osa-events"))
        .args(args)
        .envs(env.iter().copied())
        .env("DATABASE_URL", scene.url())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the osa-events binary starts")
}

/// Sends SIGINT, as Ctrl-C does (with the shell's `kill`, as the repository's other tests do:
/// no binary beyond `sh` needed).
pub(crate) fn interrupt(child: &Child) {
    let status = Command::new("sh")
        .args(["-c", "kill -s INT \"$1\"", "sh", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s INT {} failed", child.id());
}

/// Reads stdout lines until one contains `marker`; returns what was read.
pub(crate) fn read_until(out: &mut impl BufRead, marker: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read stdout");
        assert!(n > 0, "stdout ended before `{marker}`: {seen}");
        seen.push_str(&line);
        if line.contains(marker) {
            return seen;
        }
    }
}

#[tokio::test]
async fn watch_refreshes_until_ctrl_c() {
    let scene = Scene::new().await;
    scene.subscribe("cli.a").await;
    let mut child = spawn(&scene, &["status", "--watch", "100ms"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut out, "cli.a");
    read_until(&mut out, "cli.a"); // a second refresh
    interrupt(&child);
    let status = child.wait().expect("it exits");
    assert_eq!(status.code(), Some(0), "Ctrl-C ends --watch with success");
}

#[tokio::test]
async fn watch_json_prints_one_document_a_line() {
    let scene = Scene::new().await;
    scene.subscribe("cli.a").await;
    let mut child = spawn(&scene, &["status", "--watch", "100ms", "--json"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..2 {
        let line = read_until(&mut out, "cli.a");
        let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON document");
        assert_eq!(json["handlers"][0]["name"], "cli.a");
    }
    interrupt(&child);
    assert_eq!(child.wait().expect("it exits").code(), Some(0));
}

#[tokio::test]
async fn ctrl_c_stops_a_retry_between_chunks_and_reports_what_it_did() {
    const DEAD: u32 = 3000;
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.a").await;
    scene.publish(0..DEAD).await;
    for _ in 0..DEAD / 1000 {
        scene.kill(a, 1000, "down").await;
    }
    assert_eq!(
        scene.count(Some("cli.a"), DeliveryState::Dead).await,
        DEAD as usize
    );

    let mut child = spawn(&scene, &["dead", "retry", "--all", "--chunk", "1", "--yes"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let plan = read_until(&mut out, "cli.a:");
    assert!(
        plan.contains(&format!("{DEAD} dead letters match")),
        "{plan}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    interrupt(&child);
    let status = child.wait().expect("it exits");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{rest}{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");

    // "interrupted: retried N of 3000 dead letters; ..."
    let retried: usize = rest
        .split("retried ")
        .nth(1)
        .and_then(|tail| tail.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {rest:?}"));
    assert!(retried < DEAD as usize, "stopped before the end: {rest}");
    // Exactly what it reported, no more and no less: each chunk was done whole.
    let pending = scene.count(Some("cli.a"), DeliveryState::Pending).await;
    assert_eq!(pending, retried, "{rest}");
    let dead = scene.count(Some("cli.a"), DeliveryState::Dead).await;
    assert_eq!(dead, DEAD as usize - retried, "{rest}");
}
