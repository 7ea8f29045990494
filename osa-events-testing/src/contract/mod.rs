//! The store contract suite: the rules of the claim protocol, of publishing, of projections and
//! of the operations API that every [`Store`] (and its [`ProjectionStore`]) must follow, one
//! function per rule.
//!
//! **Not a stable public API.** Rules are added, renamed and tightened as the protocol evolves,
//! in any release. It is public so that every store, in this workspace or outside it, runs the
//! same rules.
//!
//! Each rule is a `pub async fn rule<S: StoreUnderTest>(subject: &S)` that panics when the store
//! breaks it. The [`StoreUnderTest`] trait gives the rules what the [`Store`] trait does not:
//! publishing, inspecting rows, and letting time pass. Run them all with
//! [`store_contract_tests!`](crate::store_contract_tests), which stamps out one `#[tokio::test]`
//! per rule, so each rule passes or fails on its own:
//!
//! ```no_run
//! use osa_events_testing::contract::MemoryUnderTest;
//! use osa_events_testing::store_contract_tests;
//!
//! mod memory {
//!     super::store_contract_tests!(super::MemoryUnderTest::new());
//! }
//! # fn main() {}
//! ```
//!
//! Another store implements [`StoreUnderTest`] for a subject that owns a fresh, empty store
//! (a fresh database, for a database-backed one), and invokes the macro the same way, in a
//! module of its own.
//!
//! The rules that involve time (claim expiry, heartbeats, backoff) use short durations, 100 ms to
//! 500 ms, with wide margins, so a store on real time (PostgreSQL) passes them reliably while a
//! store on a [`FakeClock`](crate::FakeClock) passes them instantly.

use std::future::Future;
use std::time::Duration;

use osa_events::{Event, Outgoing};

use osa_events::store::{
    ClaimRequest, Delivery, ProjectionStore, Store, Subscription, SubscriptionId,
};
use serde::{Deserialize, Serialize};

pub use crate::memory::DeliveryStatus;

mod claims;
mod fences;
mod operations;
mod ordering;
mod projections;
mod publish;
mod registration;
mod subjects;
mod transactions;

pub use claims::{
    a_claim_carries_the_event, a_failure_error_with_nul_is_kept_with_a_replacement_character,
    a_held_claim_is_not_claimed_again, an_expired_claim_is_claimed_again_with_the_next_attempt,
    attempts_are_counted_at_claim, backoff_delays_the_next_claim,
    batch_writes_touch_only_their_own_fences, claims_come_in_run_at_then_position_order,
    claims_never_overlap_under_concurrency, complete_and_claim_completes_then_claims,
    completed_deliveries_are_gone, dead_deliveries_keep_their_error_and_are_never_claimed,
    defer_gives_back_the_attempt_and_delays_the_next_claim,
    defer_without_a_delay_makes_the_delivery_due_now_and_keeps_its_error,
    every_claim_gets_a_fresh_token, extending_a_claim_keeps_it_from_expiring,
    release_gives_back_the_attempt_and_makes_the_delivery_due_now,
};
pub use fences::{
    a_stale_complete_is_refused, a_stale_extend_is_refused, a_stale_fail_is_refused,
    a_stale_release_is_refused, fences_belong_to_their_subscription,
    writes_need_a_claimed_delivery,
};
pub use operations::{
    a_copy_of_a_delayed_event_is_not_due_before_its_time, a_delivery_is_shown_with_its_event,
    a_new_subscription_starting_from_its_history_is_backfilled_first_in_log_order,
    a_paused_handler_claims_nothing_until_resumed,
    a_retired_handler_registered_again_starts_afresh,
    a_retired_subscription_gets_nothing_loses_its_deliveries_and_claims_nothing,
    a_start_from_now_subscription_has_no_backfill,
    activity_since_filters_by_minute_and_orders_by_kind_name_minute,
    an_unknown_handler_is_refused_naming_the_known_ones,
    backfill_keeps_at_most_two_chunks_open_and_ends_with_done,
    buckets_older_than_kept_are_deleted_by_the_next_record, concurrent_records_lose_no_counts,
    deliveries_are_listed_by_each_filter_in_keyset_pages, empty_and_all_zero_deltas_write_nothing,
    liveness_follows_the_live_nodes_of_the_namespace,
    nodes_are_recorded_refreshed_reported_alive_and_removed,
    prune_deletes_old_events_nothing_refers_to_and_stops_at_younger_ones,
    prune_keeps_events_a_projection_has_not_passed,
    purge_dead_deletes_only_dead_letters_and_cancel_pending_only_pending_ones,
    recorded_activity_adds_up_per_kind_and_name,
    replay_delivers_a_range_in_log_order_due_now_skipping_existing_rows,
    replay_filters_by_publish_time_and_routing_key,
    replay_refuses_another_event_type_a_retired_handler_and_a_bad_chunk,
    retiring_a_handler_a_live_node_runs_needs_even_if_running,
    retry_and_purge_select_by_handler_error_time_event_type_position_and_limit,
    retry_dead_resets_attempts_makes_due_now_and_keeps_the_last_error,
    retry_resume_and_replay_wake_listening_workers, status_counts_due_scheduled_claimed_and_dead,
    status_lists_every_projection_with_a_checkpoint,
    status_shows_lag_oldest_due_oldest_claim_claimed_by_and_last_error,
};
pub use ordering::{
    a_dead_head_blocks_its_key_until_retried_or_purged,
    a_dead_head_under_skip_lets_its_key_go_on_and_rejoins_at_the_end,
    a_delayed_delivery_keeps_its_due_time_in_its_key,
    a_replay_into_an_ordered_handler_joins_each_key_at_its_end,
    a_retrying_head_holds_back_only_its_key, an_invalid_ordering_key_is_refused_before_publishing,
    an_ordered_key_is_due_one_delivery_at_a_time_in_publish_order,
    cancelled_and_listed_waiting_deliveries_keep_their_keys_order,
    keys_order_each_ordered_subscription_on_its_own,
};
pub use projections::{
    a_changed_event_type_set_is_refused_until_reset_or_acknowledged,
    a_deposed_leader_writes_nothing, a_leadership_that_ends_passes_on,
    a_new_leader_resumes_from_the_checkpoint, a_reset_during_a_batch_stands,
    a_reset_rewinds_the_checkpoint, a_waiting_candidate_takes_over_when_the_leadership_ends,
    an_uncommitted_batch_leaves_the_checkpoint, batches_follow_the_log_after_the_checkpoint,
    one_leader_per_projection, the_status_shows_checkpoint_lag_and_leader,
};
pub use publish::{
    a_delayed_delivery_is_claimable_only_once_due, deliveries_are_created_at_publish_time,
    each_subscription_gets_its_own_delivery, other_event_types_are_not_delivered,
    payloads_come_back_as_jsonb_returns_them, positions_follow_publish_order,
    publish_wakes_listening_workers, publishing_an_existing_id_is_a_noop,
    routing_keys_select_subscriptions, subscriptions_are_upserted_by_name_with_stable_ids,
};
pub use registration::{
    a_conflicting_registration_is_refused_and_changes_nothing,
    a_higher_revision_repoints_and_a_lower_one_cannot_revert,
};
pub use subjects::MemoryUnderTest;
pub use transactions::{
    a_claim_lost_before_its_completion_rolls_the_transaction_back,
    a_delivery_completed_in_an_open_transaction_is_not_handled_twice,
    a_dropped_transaction_publishes_and_completes_nothing,
    a_transactions_publishes_appear_once_when_it_commits,
    a_tx_batch_whose_claims_are_taken_over_while_it_runs_commits_nothing,
    completing_in_a_transaction_counts_only_held_claims,
};

/// A store under test, with what the rules need beyond the [`Store`] trait.
///
/// Implementations panic when the store fails: a store error fails the rule.
pub trait StoreUnderTest: Send + Sync + 'static {
    /// The store whose [`Store`] and [`ProjectionStore`] methods the rules call.
    type Store: Store + ProjectionStore + Clone;

    /// The store.
    fn store(&self) -> &Self::Store;

    /// Publishes `batch` at once, through the store's own publishing path (one transaction for
    /// PostgreSQL), and returns how many events were new.
    fn publish(&self, batch: &[Outgoing]) -> impl Future<Output = u64> + Send;

    /// Lets `duration` pass on the store's clock: advances a fake clock, sleeps on a real one.
    fn pass(&self, duration: Duration) -> impl Future<Output = ()> + Send;

    /// Moves the store's clock `duration` ahead at once, for the rules about hours of store time
    /// (the activity history keeps two): returns whether it could. A store on real time cannot
    /// (the default, `false`), and those rules are skipped for it, saying so.
    fn leap(&self, duration: Duration) -> impl Future<Output = bool> + Send {
        let _ = duration;
        std::future::ready(false)
    }

    /// Every delivery row of `subscription` (completed ones are gone), by position.
    fn rows(&self, subscription: SubscriptionId) -> impl Future<Output = Vec<Row>> + Send;

    /// How many events the log holds.
    fn event_count(&self) -> impl Future<Output = u64> + Send;

    /// Ends the leadership of `projection` from outside, as the database ending the leader's
    /// session would; returns whether anyone led it.
    fn depose(&self, projection: &str) -> impl Future<Output = bool> + Send;
}

/// `event` ready for [`StoreUnderTest::publish`], with a fresh id.
fn outgoing<E: Event>(event: &E) -> Outgoing {
    Outgoing::new(event).expect("a contract event serializes")
}

/// One delivery row as the store holds it, for the rules to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The event's position.
    pub position: i64,
    /// Pending, claimed, dead or waiting.
    pub status: DeliveryStatus,
    /// Attempts so far, counted at claim.
    pub attempts: u32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
}

/// Stamps out one `#[tokio::test]` per rule of the [contract suite](crate::contract), each
/// running the rule against a fresh subject built by `$subject`: an expression of a type that
/// implements [`StoreUnderTest`], which may `.await`. Invoke it inside a module of its own, once
/// per store; the calling crate needs `tokio` (with the `macros` and `rt-multi-thread` features).
///
/// ```no_run
/// mod memory {
///     use osa_events_testing::contract::MemoryUnderTest;
///     osa_events_testing::store_contract_tests!(MemoryUnderTest::new());
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_contract_tests {
    ($subject:expr $(,)?) => {
        $crate::store_contract_tests!(@tests ["multi_thread"] $subject;
            claims_never_overlap_under_concurrency,
            concurrent_records_lose_no_counts,
        );
        $crate::store_contract_tests!(@tests ["current_thread"] $subject;
            a_held_claim_is_not_claimed_again,
            a_claim_carries_the_event,
            attempts_are_counted_at_claim,
            every_claim_gets_a_fresh_token,
            an_expired_claim_is_claimed_again_with_the_next_attempt,
            extending_a_claim_keeps_it_from_expiring,
            claims_come_in_run_at_then_position_order,
            backoff_delays_the_next_claim,
            dead_deliveries_keep_their_error_and_are_never_claimed,
            a_failure_error_with_nul_is_kept_with_a_replacement_character,
            release_gives_back_the_attempt_and_makes_the_delivery_due_now,
            defer_gives_back_the_attempt_and_delays_the_next_claim,
            defer_without_a_delay_makes_the_delivery_due_now_and_keeps_its_error,
            completed_deliveries_are_gone,
            batch_writes_touch_only_their_own_fences,
            complete_and_claim_completes_then_claims,
            a_stale_complete_is_refused,
            a_stale_fail_is_refused,
            a_stale_extend_is_refused,
            a_stale_release_is_refused,
            writes_need_a_claimed_delivery,
            fences_belong_to_their_subscription,
            subscriptions_are_upserted_by_name_with_stable_ids,
            a_conflicting_registration_is_refused_and_changes_nothing,
            a_higher_revision_repoints_and_a_lower_one_cannot_revert,
            publishing_an_existing_id_is_a_noop,
            positions_follow_publish_order,
            each_subscription_gets_its_own_delivery,
            routing_keys_select_subscriptions,
            other_event_types_are_not_delivered,
            payloads_come_back_as_jsonb_returns_them,
            deliveries_are_created_at_publish_time,
            publish_wakes_listening_workers,
            a_delayed_delivery_is_claimable_only_once_due,
            one_leader_per_projection,
            a_leadership_that_ends_passes_on,
            a_waiting_candidate_takes_over_when_the_leadership_ends,
            batches_follow_the_log_after_the_checkpoint,
            an_uncommitted_batch_leaves_the_checkpoint,
            a_new_leader_resumes_from_the_checkpoint,
            a_deposed_leader_writes_nothing,
            a_reset_rewinds_the_checkpoint,
            a_reset_during_a_batch_stands,
            the_status_shows_checkpoint_lag_and_leader,
            a_changed_event_type_set_is_refused_until_reset_or_acknowledged,
            a_transactions_publishes_appear_once_when_it_commits,
            a_dropped_transaction_publishes_and_completes_nothing,
            completing_in_a_transaction_counts_only_held_claims,
            a_claim_lost_before_its_completion_rolls_the_transaction_back,
            a_delivery_completed_in_an_open_transaction_is_not_handled_twice,
            a_tx_batch_whose_claims_are_taken_over_while_it_runs_commits_nothing,
            status_counts_due_scheduled_claimed_and_dead,
            status_shows_lag_oldest_due_oldest_claim_claimed_by_and_last_error,
            deliveries_are_listed_by_each_filter_in_keyset_pages,
            a_delivery_is_shown_with_its_event,
            retry_dead_resets_attempts_makes_due_now_and_keeps_the_last_error,
            retry_and_purge_select_by_handler_error_time_event_type_position_and_limit,
            purge_dead_deletes_only_dead_letters_and_cancel_pending_only_pending_ones,
            an_unknown_handler_is_refused_naming_the_known_ones,
            a_paused_handler_claims_nothing_until_resumed,
            a_retired_subscription_gets_nothing_loses_its_deliveries_and_claims_nothing,
            retiring_a_handler_a_live_node_runs_needs_even_if_running,
            a_retired_handler_registered_again_starts_afresh,
            replay_delivers_a_range_in_log_order_due_now_skipping_existing_rows,
            replay_filters_by_publish_time_and_routing_key,
            replay_refuses_another_event_type_a_retired_handler_and_a_bad_chunk,
            a_copy_of_a_delayed_event_is_not_due_before_its_time,
    a_new_subscription_starting_from_its_history_is_backfilled_first_in_log_order,
            backfill_keeps_at_most_two_chunks_open_and_ends_with_done,
            a_start_from_now_subscription_has_no_backfill,
            prune_deletes_old_events_nothing_refers_to_and_stops_at_younger_ones,
            prune_keeps_events_a_projection_has_not_passed,
            nodes_are_recorded_refreshed_reported_alive_and_removed,
            liveness_follows_the_live_nodes_of_the_namespace,
            retry_resume_and_replay_wake_listening_workers,
            status_lists_every_projection_with_a_checkpoint,
            recorded_activity_adds_up_per_kind_and_name,
            empty_and_all_zero_deltas_write_nothing,
            activity_since_filters_by_minute_and_orders_by_kind_name_minute,
            buckets_older_than_kept_are_deleted_by_the_next_record,
            an_ordered_key_is_due_one_delivery_at_a_time_in_publish_order,
            a_retrying_head_holds_back_only_its_key,
            a_dead_head_blocks_its_key_until_retried_or_purged,
            a_dead_head_under_skip_lets_its_key_go_on_and_rejoins_at_the_end,
            cancelled_and_listed_waiting_deliveries_keep_their_keys_order,
            keys_order_each_ordered_subscription_on_its_own,
            a_replay_into_an_ordered_handler_joins_each_key_at_its_end,
            a_delayed_delivery_keeps_its_due_time_in_its_key,
            an_invalid_ordering_key_is_refused_before_publishing,
        );
    };
    (@tests [$flavor:literal] $subject:expr; $($rule:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = $flavor)]
            async fn $rule() {
                let subject = $subject;
                $crate::contract::$rule(&subject).await;
            }
        )*
    };
}

/// The event the rules publish and claim.
#[derive(osa_events::Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "contract.job", version = 3)]
struct Job {
    n: u32,
}

/// An event type no subscription of the rules receives.
#[derive(osa_events::Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "contract.other")]
struct Other {
    n: u32,
}

/// Long enough never to expire during a rule.
const LONG: Duration = Duration::from_secs(60);
/// A claim timeout meant to expire...
const SHORT: Duration = Duration::from_millis(100);
/// ...after this much time has passed.
const EXPIRED: Duration = Duration::from_millis(250);

/// Registers a subscription to [`Job`] named `name`, with a routing-key filter.
async fn subscribe<S: StoreUnderTest>(
    subject: &S,
    name: &str,
    routing_key: Option<&str>,
) -> SubscriptionId {
    let subscription = Subscription {
        name: name.to_owned(),
        event_type: Job::NAME.to_owned(),
        routing_key: routing_key.map(str::to_owned),
        config: serde_json::json!({ "rule": name }),
        revision: 1,
        start_from: Default::default(),
        ordered: None,
    };
    let ids = subject
        .store()
        .register(std::slice::from_ref(&subscription))
        .await
        .expect("register a subscription");
    ids[0]
}

/// Publishes jobs `0..count` in one batch.
async fn publish_jobs<S: StoreUnderTest>(subject: &S, count: u32) {
    let batch: Vec<Outgoing> = (0..count).map(|n| outgoing(&Job { n })).collect();
    assert_eq!(subject.publish(&batch).await, u64::from(count));
}

/// Claims up to `limit` deliveries of `subscription` for `timeout`.
async fn claim<S: StoreUnderTest>(
    subject: &S,
    subscription: SubscriptionId,
    limit: u32,
    timeout: Duration,
) -> Vec<Delivery> {
    subject
        .store()
        .claim(ClaimRequest {
            subscription,
            limit,
            claim_timeout: timeout,
            worker: "contract",
        })
        .await
        .expect("claim")
}

/// Claims exactly one delivery.
async fn claim_one<S: StoreUnderTest>(
    subject: &S,
    subscription: SubscriptionId,
    timeout: Duration,
) -> Delivery {
    let mut claimed = claim(subject, subscription, 1, timeout).await;
    assert_eq!(claimed.len(), 1, "expected one delivery to be due");
    claimed.remove(0)
}

fn positions(deliveries: &[Delivery]) -> Vec<i64> {
    deliveries
        .iter()
        .map(|delivery| delivery.fence.position)
        .collect()
}
