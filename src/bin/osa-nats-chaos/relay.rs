//! `osa-nats-chaos relay`: the relay `chaos` of the `chaos.item` events, as an application would
//! run it, in a process of its own that the tests SIGKILL.

use std::time::Duration;

use osa_events::PgStore;
use osa_events::nats::{Connect, Relay};
use osa_events_suite::chaos_events::Item;

use crate::Failure;

/// The relay's name: its checkpoint is `relay:chaos`. The tests read its status under the same
/// name.
pub(crate) const NAME: &str = "chaos";

/// Relays until `shutdown` is cancelled.
pub(crate) async fn run(
    database_url: &str,
    nats_url: &str,
    batch: u32,
    window: usize,
    shutdown: osa_events::CancellationToken,
) -> Result<(), Failure> {
    let store = tokio::select! {
        store = PgStore::connect(database_url) => store?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let relay = Relay::builder(NAME)
        .events::<Item>()
        .batch(batch)
        .window(window)
        .poll(Duration::from_millis(50))
        .build()?;
    relay.run(&store, Connect::url(nats_url), shutdown).await?;
    Ok(())
}
