//! Assertions on a [`Harness`]'s journal whose failure messages show what was found.

use std::fmt::Write as _;

use osa_events::Event;

use super::{Attempt, Harness};
use crate::DeliveryStatus;

impl Harness {
    /// The events `handler` handled successfully, decoded, in the order it handled them.
    ///
    /// # Panics
    ///
    /// When the harness runs no handler of that name, or one of them is not an `E`.
    #[track_caller]
    pub fn handled_events<E: Event>(&self, handler: &str) -> Vec<E> {
        self.handled(handler)
            .into_iter()
            .map(Attempt::event)
            .collect()
    }

    /// Asserts that `handler` handled exactly `expected` events successfully.
    ///
    /// # Panics
    ///
    /// When it did not, with the handler's journal in the message; when the harness runs no
    /// handler of that name.
    #[track_caller]
    pub fn assert_handled(&self, handler: &str, expected: usize) {
        let found = self.handled(handler);
        if found.len() != expected {
            self.fail(handler, expected, "handled event(s)", &found);
        }
    }

    /// Asserts that `handler` had exactly `expected` failed attempts that were retried.
    ///
    /// # Panics
    ///
    /// As for [`assert_handled`](Self::assert_handled).
    #[track_caller]
    pub fn assert_retried(&self, handler: &str, expected: usize) {
        let found = self.retries(handler);
        if found.len() != expected {
            self.fail(handler, expected, "retried attempt(s)", &found);
        }
    }

    /// Asserts that `handler` dead-lettered exactly `expected` events.
    ///
    /// # Panics
    ///
    /// When it did not, with the dead letters it did find (and their errors) and the handler's
    /// journal in the message; when the harness runs no handler of that name.
    #[track_caller]
    pub fn assert_dead_lettered(&self, handler: &str, expected: usize) {
        let found = self.dead_letters(handler);
        if found.len() != expected {
            self.fail(handler, expected, "dead letter(s)", &found);
        }
    }

    /// Asserts that no delivery of any of the harness's handlers is pending or claimed: every
    /// event was handled or dead-lettered.
    ///
    /// # Panics
    ///
    /// When one is, with the open deliveries in the message.
    #[track_caller]
    pub fn assert_idle(&self) {
        let open = self.open_deliveries();
        if open.is_empty() {
            return;
        }
        let mut message = format!(
            "expected no open deliveries, found {} (call `drain` first?):\n",
            open.len()
        );
        for delivery in &open {
            let due = match delivery.status {
                DeliveryStatus::Claimed => "claim expires",
                _ => "due",
            };
            let _ = writeln!(
                message,
                "  subscription {}  position {}  {:?}  attempts {}  {due} at +{}  last error: {}",
                delivery.subscription.0,
                delivery.position,
                delivery.status,
                delivery.attempts,
                super::journal::seconds(delivery.run_at.saturating_duration_since(self.started)),
                delivery.last_error.as_deref().unwrap_or("none"),
            );
        }
        panic!("{message}");
    }

    #[track_caller]
    fn fail(&self, handler: &str, expected: usize, what: &str, found: &[&Attempt]) -> ! {
        let mut message = format!(
            "handler `{handler}`: expected {expected} {what}, found {}",
            found.len()
        );
        message.push_str(if found.is_empty() { "\n" } else { ":\n" });
        for attempt in found {
            let _ = writeln!(message, "  {attempt}");
        }
        let journal = self.attempts(handler);
        let _ = writeln!(
            message,
            "journal of `{handler}` ({} attempt(s)):",
            journal.len()
        );
        for attempt in journal {
            let _ = writeln!(message, "  {attempt}");
        }
        panic!("{message}");
    }
}
