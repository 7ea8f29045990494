//! How a failed attempt's error reads in a delivery's `last_error`, written in one place so
//! that operators' tools can take the cause back out of it.
//!
//! The runtime stores `` `order.placed` event 0192… (position 17), attempt 2 of 6: timed out ``:
//! what failed, and the handler's error after the first `: ` that follows the attempt. The
//! dashboard groups errors by that cause, which the prefix, unique per event, would otherwise
//! split one group per delivery.

use std::fmt::Display;

use uuid::Uuid;

/// The `last_error` of a failed attempt: which event, which attempt of how many, and `error`.
pub(crate) fn failure_message(
    event_type: &str,
    event_id: Uuid,
    position: i64,
    attempt: u32,
    max_attempts: u32,
    error: &dyn Display,
) -> String {
    format!(
        "`{event_type}` event {event_id} (position {position}), attempt {attempt} of {max_attempts}: {error}"
    )
}

/// The cause in a stored `last_error`: the handler's error without the runtime's prefix (which
/// event, which attempt). A message in another form (written by another tool) is returned whole.
///
/// # Examples
///
/// ```
/// use osa_events_core::operations::failure_cause;
///
/// let stored = "`order.placed` event 01a23796-cdad-769f-ab89-705e29d87d07 (position 4), \
///               attempt 1 of 6: search cluster timed out";
/// assert_eq!(failure_cause(stored), "search cluster timed out");
/// assert_eq!(failure_cause("written by hand"), "written by hand");
/// ```
pub fn failure_cause(last_error: &str) -> &str {
    let Some(after_type) = last_error.strip_prefix('`') else {
        return last_error;
    };
    after_type
        .find("), attempt ")
        .and_then(|at| {
            let attempt = &after_type[at..];
            attempt.find(": ").map(|colon| &attempt[colon + 2..])
        })
        .unwrap_or(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_what_follows_the_runtimes_prefix() {
        let id = Uuid::nil();
        let message = failure_message("order.placed", id, 17, 2, 6, &"db: connection refused");
        assert_eq!(
            message,
            "`order.placed` event 00000000-0000-0000-0000-000000000000 (position 17), attempt 2 \
             of 6: db: connection refused"
        );
        // The cause's own colons stay.
        assert_eq!(failure_cause(&message), "db: connection refused");
        assert_eq!(failure_cause("`odd but no attempt"), "`odd but no attempt");
        assert_eq!(failure_cause(""), "");
    }
}
