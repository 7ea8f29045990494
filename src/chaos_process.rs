//! What every chaos binary (`osa-chaos`, `osa-sqlite-chaos`, `osa-nats-chaos`) does as a process
//! the reliability tests start, signal and kill.

use tokio_util::sync::CancellationToken;

/// The line a chaos process logs once SIGTERM is a graceful stop. Before it, SIGTERM's default
/// action ends the process at once (killed by signal 15), so a test that stops a process it has
/// only just started waits for this line first.
pub const LISTENING_FOR_SIGTERM: &str = "listening for SIGTERM";

/// Cancels `shutdown` on SIGTERM or SIGINT, so a test's SIGTERM is a graceful stop (and a
/// SIGKILL the crash); logs [`LISTENING_FOR_SIGTERM`] once the handlers are in place.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub fn spawn_sigterm_listener(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tracing::info!("{LISTENING_FOR_SIGTERM}");
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        shutdown.cancel();
    });
    Ok(())
}

/// Logs to stderr, without colours, at the level `OSA_CHAOS_LOG` says (`info` by default): what
/// the tests read back from each process.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OSA_CHAOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
