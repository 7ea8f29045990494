//! Rules of the operations API ([`Operations`]): what operators see (status, listings, nodes,
//! the activity history) and what they do (dead letters, replay, backfill, pause, retirement,
//! retention).
//!
//! Every rule reaches the API through [`Store::operations`], so a store that offers none fails
//! them all, naming the gap. Times are store times: a rule that filters by time reads the store's
//! now from [`Operations::status`] (`Status::at`) between short passes of time.

use std::time::{Duration, SystemTime};

use osa_events::operations::{NodeRecord, Operations, StartFrom};
use osa_events::store::{Delivery, Failure, Store, Subscription, SubscriptionId};
use osa_events::{Error, Event};
use uuid::Uuid;

use super::{Job, LONG, StoreUnderTest, claim_one};

mod activity;
mod deliveries;
mod history;
mod lifecycle;
mod nodes;
mod prune;
mod status;
mod wakes;

pub use activity::{
    activity_since_filters_by_minute_and_orders_by_kind_name_minute,
    buckets_older_than_kept_are_deleted_by_the_next_record, concurrent_records_lose_no_counts,
    empty_and_all_zero_deltas_write_nothing, recorded_activity_adds_up_per_kind_and_name,
};
pub use deliveries::{
    a_delivery_is_shown_with_its_event, deliveries_are_listed_by_each_filter_in_keyset_pages,
    purge_dead_deletes_only_dead_letters_and_cancel_pending_only_pending_ones,
    retry_and_purge_select_by_handler_error_time_event_type_position_and_limit,
    retry_dead_resets_attempts_makes_due_now_and_keeps_the_last_error,
};
pub use history::{
    a_copy_of_a_delayed_event_is_not_due_before_its_time,
    a_new_subscription_starting_from_its_history_is_backfilled_first_in_log_order,
    a_start_from_now_subscription_has_no_backfill,
    backfill_keeps_at_most_two_chunks_open_and_ends_with_done,
    replay_delivers_a_range_in_log_order_due_now_skipping_existing_rows,
    replay_filters_by_publish_time_and_routing_key,
    replay_refuses_another_event_type_a_retired_handler_and_a_bad_chunk,
};
pub use lifecycle::{
    a_paused_handler_claims_nothing_until_resumed,
    a_retired_handler_registered_again_starts_afresh,
    a_retired_subscription_gets_nothing_loses_its_deliveries_and_claims_nothing,
    an_unknown_handler_is_refused_naming_the_known_ones,
    retiring_a_handler_a_live_node_runs_needs_even_if_running,
};
pub use nodes::{
    liveness_follows_the_live_nodes_of_the_namespace,
    nodes_are_recorded_refreshed_reported_alive_and_removed,
};
pub use prune::{
    prune_deletes_old_events_nothing_refers_to_and_stops_at_younger_ones,
    prune_keeps_events_a_projection_has_not_passed,
};
pub use status::{
    status_counts_due_scheduled_claimed_and_dead, status_lists_every_projection_with_a_checkpoint,
    status_shows_lag_oldest_due_oldest_claim_claimed_by_and_last_error,
};
pub use wakes::retry_resume_and_replay_wake_listening_workers;

/// The store's operations API.
fn ops<S: StoreUnderTest>(subject: &S) -> &dyn Operations {
    subject
        .store()
        .operations()
        .expect("the store offers the operations API (Store::operations)")
}

/// Registers a subscription to [`Job`] named `name` that starts from `start_from`.
async fn subscribe_from<S: StoreUnderTest>(
    subject: &S,
    name: &str,
    routing_key: Option<&str>,
    start_from: StartFrom,
) -> SubscriptionId {
    let subscription = Subscription {
        name: name.to_owned(),
        event_type: Job::NAME.to_owned(),
        routing_key: routing_key.map(str::to_owned),
        config: serde_json::json!({ "rule": name }),
        revision: 1,
        start_from,
        ordered: None,
    };
    subject
        .store()
        .register(std::slice::from_ref(&subscription))
        .await
        .expect("register a subscription")[0]
}

/// Fails `delivery` with `error`: dead when `retry_in` is `None`.
async fn fail<S: StoreUnderTest>(
    subject: &S,
    subscription: SubscriptionId,
    delivery: &Delivery,
    error: &str,
    retry_in: Option<Duration>,
) {
    let failure = Failure {
        fence: delivery.fence,
        error: error.to_owned(),
        retry_in,
    };
    let written = subject
        .store()
        .fail(subscription, &[failure])
        .await
        .expect("fail");
    assert_eq!(written, 1, "the failure of a held claim is written");
}

/// Claims the next due delivery and makes it a dead letter with `error`; returns its position.
async fn kill<S: StoreUnderTest>(subject: &S, subscription: SubscriptionId, error: &str) -> i64 {
    let delivery = claim_one(subject, subscription, LONG).await;
    fail(subject, subscription, &delivery, error, None).await;
    delivery.fence.position
}

/// The store's now, as [`Operations::status`] reports it.
async fn store_now<S: StoreUnderTest>(subject: &S) -> SystemTime {
    ops(subject).status().await.expect("status").at
}

/// A node of `namespace` running `handlers`, heartbeating every `heartbeat`.
fn node(name: &str, namespace: Option<&str>, handlers: &[&str], heartbeat: Duration) -> NodeRecord {
    NodeRecord {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
        host: "contract-host".to_owned(),
        pid: 4242,
        version: "0.0.0-contract".to_owned(),
        handlers: handlers.iter().map(|&handler| handler.to_owned()).collect(),
        projections: Vec::new(),
        started_at: SystemTime::now(),
        heartbeat,
    }
}

/// Panics unless `result` is [`Error::Config`]; returns its message.
fn expect_config<T: std::fmt::Debug>(result: osa_events::Result<T>, what: &str) -> String {
    match result {
        Err(Error::Config(message)) => message.into_owned(),
        other => panic!("{what}: expected Error::Config, got {other:?}"),
    }
}
