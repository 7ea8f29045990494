//! [`FatalStop`]: how a claim loop whose handler returned
//! [`HandlerError::fatal`](crate::HandlerError::fatal) stops the runtime, and hands it the error
//! that [`Runtime::run`](crate::Runtime::run) returns.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::Error;

/// Shared by every claim loop of one runtime: the first fatal error, and the token whose
/// cancellation is the runtime's graceful shutdown.
#[derive(Debug, Clone)]
pub(crate) struct FatalStop {
    first: Arc<Mutex<Option<Error>>>,
    stopping: CancellationToken,
}

impl FatalStop {
    /// A stop that cancels `stopping`.
    pub(crate) fn new(stopping: CancellationToken) -> Self {
        Self {
            first: Arc::default(),
            stopping,
        }
    }

    /// Keeps `error` (unless an earlier one was kept: that one is what the runtime returns, and
    /// this one is only logged) and starts the graceful shutdown.
    pub(crate) fn raise(&self, error: Error) {
        let mut first = self
            .first
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if first.is_none() {
            tracing::error!(%error, "fatal handler error: stopping the runtime");
            *first = Some(error);
        } else {
            tracing::error!(%error, "another fatal handler error while the runtime stops");
        }
        drop(first);
        self.stopping.cancel();
    }

    /// The first fatal error raised, if any; taken, so a second call returns `None`.
    pub(crate) fn take(&self) -> Option<Error> {
        self.first
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fatal(handler: &str) -> Error {
        Error::Fatal {
            handler: handler.to_owned(),
            event_type: "test.job".to_owned(),
            event_id: uuid::Uuid::nil(),
            position: 7,
            source: "schema mismatch".into(),
        }
    }

    #[test]
    fn the_first_fatal_error_is_kept_and_shutdown_starts() {
        let stopping = CancellationToken::new();
        let stop = FatalStop::new(stopping.clone());
        assert!(stop.take().is_none());
        stop.raise(fatal("first"));
        assert!(stopping.is_cancelled());
        stop.raise(fatal("second"));
        let Some(Error::Fatal { handler, .. }) = stop.take() else {
            panic!("no fatal error kept");
        };
        assert_eq!(handler, "first");
        assert!(stop.take().is_none(), "taken once");
    }

    #[test]
    fn the_message_names_the_handler_the_event_and_the_cause() {
        assert_eq!(
            fatal("index.vector").to_string(),
            "handler `index.vector` stopped the runtime with a fatal error at `test.job` event \
             00000000-0000-0000-0000-000000000000 (position 7); its deliveries were given back, \
             not failed: schema mismatch"
        );
    }
}
