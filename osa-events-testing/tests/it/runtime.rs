//! The runtime on the in-memory store: what an application sees of it without a database.

use std::time::Duration;

use osa_events::{CancellationToken, Runtime};
use osa_events_testing::InMemoryStore;

/// An application keeps the runtime's shutdown token in its own state, typed through the
/// re-export: this crate does not depend on tokio-util (a regression test: the type was
/// tokio-util's and not re-exported, so naming it needed a direct dependency).
struct App {
    shutdown: CancellationToken,
}

#[tokio::test]
async fn the_reexported_shutdown_token_stops_the_runtime() {
    let runtime = Runtime::builder(InMemoryStore::new())
        .only(["harness.picky"])
        .handle_signals(false)
        .build()
        .expect("the runtime builds");
    let app = App {
        shutdown: runtime.shutdown_token(),
    };
    let running = tokio::spawn(runtime.run());
    app.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the runtime stops")
        .expect("no panic")
        .expect("a graceful stop");
}
