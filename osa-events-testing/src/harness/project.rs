//! Projections in the harness: [`Harness::project`].

use std::fmt;

use super::Harness;

/// A projection batch that failed in [`Harness::project`]: its checkpoint did not move, and the
/// error is the projection's [`last_error`](osa_events::ProjectionStatus::last_error).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionFailed {
    /// The projection's name.
    pub projection: String,
    /// Events applied by the batches before the failed one, in this call.
    pub applied: usize,
    /// Why the batch failed.
    pub error: String,
}

impl fmt::Display for ProjectionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "projection `{}` failed after applying {} events: {}",
            self.projection, self.applied, self.error
        )
    }
}

impl std::error::Error for ProjectionFailed {}

impl Harness {
    /// Applies projection `name` until it has caught up with every event published so far, batch
    /// by batch, as its leader would (the harness leads every projection it runs); returns how many
    /// events it applied. Call it again after publishing more: it continues from its checkpoint.
    ///
    /// [`drain`](Self::drain) runs the handlers only, so a test decides when its projections catch
    /// up; handlers that publish are drained first.
    ///
    /// # Errors
    ///
    /// [`ProjectionFailed`] at the first batch that fails (the projection returned an error or
    /// panicked, or an event did not decode): its checkpoint did not move, the error is recorded
    /// in the projection's status, and the next call retries that batch.
    ///
    /// # Panics
    ///
    /// When the harness runs no projection of that name.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use std::sync::Mutex;
    /// use osa_events::prelude::*;
    /// use osa_events_testing::Harness;
    /// # use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Event, Serialize, Deserialize)]
    /// #[event(name = "order.placed")]
    /// struct OrderPlaced { customer: String, cents: i64 }
    ///
    /// /// The read model: totals per customer.
    /// #[derive(Default)]
    /// struct Totals {
    ///     by_customer: Mutex<BTreeMap<String, i64>>,
    /// }
    ///
    /// #[projection(name = "order_totals")]
    /// async fn order_totals(orders: Batch<OrderPlaced>, totals: State<Totals>) -> Result<(), HandlerError> {
    ///     let mut totals = totals.by_customer.lock().unwrap();
    ///     for order in orders.iter() {
    ///         *totals.entry(order.customer.clone()).or_default() += order.cents;
    ///     }
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let totals = std::sync::Arc::new(Totals::default());
    /// let mut harness = Harness::builder()
    ///     .resources(Resources::new().with_arc(totals.clone()))
    ///     .only(["order_totals"])
    ///     .build()
    ///     .await?;
    /// harness.publish(&OrderPlaced { customer: "ada".into(), cents: 500 });
    /// harness.publish(&OrderPlaced { customer: "ada".into(), cents: 250 });
    /// assert_eq!(harness.project("order_totals").await?, 2);
    /// assert_eq!(totals.by_customer.lock().unwrap()["ada"], 750);
    /// assert_eq!(harness.project("order_totals").await?, 0, "caught up");
    /// # Ok(()) }
    /// ```
    pub async fn project(&mut self, name: &str) -> Result<usize, ProjectionFailed> {
        let mut applied = 0;
        loop {
            let step = self
                .stepper
                .project(name)
                .await
                .unwrap_or_else(|error| panic!("cannot run projection `{name}`: {error}"));
            if let Some(error) = step.failed {
                return Err(ProjectionFailed {
                    projection: name.to_owned(),
                    applied,
                    error,
                });
            }
            if step.applied == 0 {
                return Ok(applied);
            }
            applied += step.applied;
        }
    }

    /// The names of the projections this harness runs, sorted.
    pub fn projection_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.stepper.projections().map(|spec| spec.name())
    }
}
