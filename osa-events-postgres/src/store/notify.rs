//! Wake-ups from `LISTEN osa_events`: publishers `NOTIFY` the subscription ids they created work for.

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::publish::NOTIFY_CHANNEL;
use osa_events_core::Result;
use osa_events_core::store::{SubscriptionId, WakeSource, WakeUps};

/// One listening connection per process, shared by every handler (see `worker::wake`).
struct PgWakeSource {
    listener: PgListener,
}

pub(super) async fn listen(pool: &PgPool) -> Result<WakeUps> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(WakeUps::new(PgWakeSource { listener }))
}

/// Listens on a connection of its own to `options`, for a pool that cannot `LISTEN` (behind a
/// transaction-mode pooler). PgListener keeps the (lazy, one-connection) pool to reconnect from.
pub(super) async fn listen_at(options: PgConnectOptions) -> Result<WakeUps> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(super::keepalive::after_connect)
        .connect_lazy_with(options);
    listen(&pool).await
}

impl WakeSource for PgWakeSource {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<SubscriptionId>>> {
        Box::pin(async move {
            loop {
                // `None` means the connection dropped: notifications sent meanwhile are lost, so
                // report "look everywhere". PgListener reconnects and re-listens on the next call.
                let Some(notification) = self.listener.try_recv().await? else {
                    return Ok(None);
                };
                if let Ok(id) = notification.payload().parse() {
                    return Ok(Some(SubscriptionId(id)));
                }
                tracing::debug!(
                    payload = notification.payload(),
                    "ignored a foreign notification"
                );
            }
        })
    }
}
