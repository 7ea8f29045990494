//! The relay's connection cut while the nats-server stays up, so that reconnecting would succeed
//! at once.
//!
//! A TCP proxy of the test's own stands between the relay process and the server; the test
//! closes every connection through it, several times, while the relay publishes, and the proxy
//! goes on accepting new ones. What the relay had written into a cut connection is lost. A
//! client that reconnected by itself would then send the publishes still queued in it on the new
//! connection, ahead of the lost ones, which the relay re-sends only when their PubAcks time out:
//! out of order. Afterwards the stream holds every event of the log exactly once, in the log's
//! commit order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::super::{Scene, count_lines, replay_hint, report, scaled, seeded_rng, serial, tail};
use super::{StreamCheck, caught_up, publish_items};
use crate::nats::Nats;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_relay_connection_loses_no_event_and_keeps_the_commit_order() {
    let _turn = serial().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let scene = Scene::new("nats_connection_cut").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let events = scaled(20_000) as i64;
    let cuts = scaled(6);
    let started = Instant::now();

    let proxy = Proxy::start(nats.server.port()).await;
    let proxy_url = format!("nats://127.0.0.1:{}", proxy.port);
    let args = [
        "relay",
        "--nats-url",
        &proxy_url,
        "--batch",
        "500",
        "--window",
        "128",
    ];
    // A backlog, so that the relay publishes flat out when the cuts come.
    let transactions = publish_items(scene.pool.clone(), events, Duration::ZERO, seed).await;
    let mut relay = scene.nats_chaos("relay", &args);
    let mut cut_connections = 0;
    for _ in 0..cuts {
        tokio::time::sleep(rng.duration(Duration::from_millis(100)..Duration::from_millis(400)))
            .await;
        cut_connections += proxy.cut();
    }
    let published = Instant::now();
    caught_up(&scene, &nats, events, &format!("seed {seed}")).await;
    let caught_up_after_publishing = published.elapsed();
    let (status, _) = relay.stop(Duration::from_secs(20)).await;
    let check = StreamCheck::read(&scene, &nats).await;
    let log = relay.stderr_text();
    let failed_batches = count_lines(&log, &[" WARN ", "NATS unavailable"]);
    let reconnects = count_lines(&log, &["connected successfully"]).saturating_sub(1);

    let mut figures = vec![
        ("events", events.to_string()),
        ("transactions", transactions.to_string()),
        ("cuts", cuts.to_string()),
        ("connections_cut", cut_connections.to_string()),
        ("failed_batches", failed_batches.to_string()),
        ("reconnects", reconnects.to_string()),
    ];
    figures.extend(check.figures());
    figures.extend([
        (
            "caught_up_after_publishing",
            format!("{caught_up_after_publishing:.1?}"),
        ),
        ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
        ("seed", seed.to_string()),
    ]);
    report("nats_connection_cut", &figures);
    assert!(
        status.success(),
        "the relay exited with {status}: {}",
        tail(&log, 20)
    );
    assert!(
        cut_connections > 0,
        "the test cut no connection of the relay {replay}"
    );
    check.assert_exact(&replay);
}

/// A TCP proxy to the nats-server on `127.0.0.1:<port>` whose connections the test can cut.
struct Proxy {
    port: u16,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    async fn start(server_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted = connections.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let connection = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", server_port)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                accepted.lock().unwrap().push(connection);
            }
        });
        Proxy {
            port,
            connections,
            accepting,
        }
    }

    /// Closes every open connection through the proxy, both ways, at once, dropping what is in
    /// flight; returns how many were open.
    fn cut(&self) -> usize {
        let mut connections = self.connections.lock().unwrap();
        let open = connections
            .iter()
            .filter(|task| !task.is_finished())
            .count();
        for connection in connections.drain(..) {
            connection.abort();
        }
        open
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}
