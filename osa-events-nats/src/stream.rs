//! Streams: the relay's start-up check that one takes its subjects, and a helper that makes one
//! for tests and examples.
//!
//! Setting up streams (retention, replicas, limits, the duplicate window) is the operator's job,
//! done declaratively with the `nats` tool or your infrastructure code; the relay only checks
//! that its subjects land somewhere.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::TryStreamExt;

use crate::relay::RelayError;
use crate::subjects::{Subjects, covers};

/// Creates the stream `name` taking every subject under `subjects`' prefix (`osa.>`) and the
/// dead letters of the JetStream store's default prefix (`osa-dead.>`), with a two-minute
/// duplicate window, or returns it when it exists: for tests and examples. Production streams are
/// set up by the operator.
///
/// # Errors
///
/// [`osa_events_core::Error::Broker`] when JetStream refuses (e.g. another stream already takes
/// those subjects).
pub async fn create(
    context: &jetstream::Context,
    name: &str,
    subjects: &Subjects,
) -> osa_events_core::Result<stream::Stream> {
    context
        .get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![
                subjects.all(),
                format!("{}.>", crate::source::DEFAULT_DEAD_LETTER_PREFIX),
            ],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(crate::source::broker)
}

/// Checks that for each of `event_types`, some stream's subjects cover all of its subjects.
pub(crate) async fn check_covered(
    context: &jetstream::Context,
    subjects: &Subjects,
    event_types: &[&str],
) -> Result<(), RelayError> {
    let patterns: Vec<String> = context
        .streams()
        .map_ok(|info| info.config.subjects)
        .try_collect::<Vec<Vec<String>>>()
        .await
        .map_err(|error| {
            RelayError::Unavailable(format!("cannot list the JetStream streams: {error}"))
        })?
        .into_iter()
        .flatten()
        .collect();
    for event_type in event_types {
        let filter = subjects.filter(event_type, None);
        if !patterns.iter().any(|pattern| covers(pattern, &filter)) {
            return Err(RelayError::NoStream {
                event_type: (*event_type).to_owned(),
                subject: filter,
                suggestion: subjects.all(),
            });
        }
    }
    Ok(())
}
