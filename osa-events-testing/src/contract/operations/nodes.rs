//! Rules of the nodes' records and of liveness.

use std::time::Duration;

use osa_events::operations::{Liveness, NodeRecord};

use super::super::{StoreUnderTest, subscribe};
use super::{node, ops};

/// The heartbeat of a node the rules let fall silent: alive for three of these (450 ms, a wide
/// margin for the calls between recording it and looking)...
const QUICK: Duration = Duration::from_millis(150);
/// ...and gone after this much silence.
const SILENT: Duration = Duration::from_millis(500);

/// Nodes are recorded and refreshed by id, listed by name, alive until
/// [`NodeRecord::MISSED_HEARTBEATS`](osa_events::operations::NodeRecord::MISSED_HEARTBEATS)
/// heartbeats pass without a refresh, and forgotten when removed.
pub async fn nodes_are_recorded_refreshed_reported_alive_and_removed<S: StoreUnderTest>(
    subject: &S,
) {
    let ops = ops(subject);
    let quick = node("b-quick", None, &["h"], QUICK);
    let slow = node("a-slow", Some("billing"), &[], Duration::from_secs(60));
    ops.record_node(&quick).await.expect("record a node");
    ops.record_node(&slow).await.expect("record a node");
    let nodes = ops.nodes().await.expect("nodes");
    let seen: Vec<(&str, bool)> = nodes
        .iter()
        .map(|status| (status.record.name.as_str(), status.alive))
        .collect();
    assert_eq!(
        seen,
        [("a-slow", true), ("b-quick", true)],
        "by name, alive"
    );
    let shown = &nodes[1].record;
    let started_apart = shown
        .started_at
        .duration_since(quick.started_at)
        .unwrap_or_else(|error| error.duration());
    assert!(
        started_apart < Duration::from_millis(1),
        "the start time as recorded (to a store's precision), {started_apart:?} apart"
    );
    let same_start = NodeRecord {
        started_at: quick.started_at,
        ..shown.clone()
    };
    assert_eq!(same_start, quick, "the record as recorded");
    let first_seen = nodes[1].last_seen;

    subject.pass(SILENT).await;
    let nodes = ops.nodes().await.expect("nodes");
    let seen: Vec<bool> = nodes.iter().map(|status| status.alive).collect();
    assert_eq!(seen, [true, false], "three quick heartbeats missed");

    ops.record_node(&quick).await.expect("refresh a node");
    let nodes = ops.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 2, "refreshed, not added");
    assert!(nodes[1].alive, "alive again");
    assert!(nodes[1].last_seen > first_seen, "seen again");

    ops.remove_node(quick.id).await.expect("remove a node");
    let nodes = ops.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].record.id, slow.id);
    let status = ops.status().await.expect("status");
    assert_eq!(status.nodes, nodes, "status shows the nodes");
}

/// A handler runs where a live node of its namespace lists it; with live nodes of its namespace
/// and none running it, it is an orphan; with none alive, stopped.
pub async fn liveness_follows_the_live_nodes_of_the_namespace<S: StoreUnderTest>(subject: &S) {
    subscribe(subject, "live.a", None).await;
    subscribe(subject, "billing@live.b", None).await;
    let ops = ops(subject);
    let liveness = async |name: &str| {
        let listed = ops.subscriptions().await.expect("subscriptions");
        let info = listed
            .iter()
            .find(|info| info.name == name)
            .expect("listed");
        let status = ops.status().await.expect("status");
        assert_eq!(
            status.handler(name).expect("listed").liveness,
            info.liveness,
            "status and subscriptions agree"
        );
        info.liveness
    };
    assert_eq!(liveness("live.a").await, Liveness::Stopped);
    assert_eq!(liveness("billing@live.b").await, Liveness::Stopped);

    let beat = Duration::from_secs(60);
    ops.record_node(&node("x", None, &["live.a"], beat))
        .await
        .unwrap();
    assert_eq!(liveness("live.a").await, Liveness::Running { nodes: 1 });
    assert_eq!(
        liveness("billing@live.b").await,
        Liveness::Stopped,
        "no node of its namespace"
    );
    ops.record_node(&node("y", Some("billing"), &[], beat))
        .await
        .unwrap();
    assert_eq!(liveness("billing@live.b").await, Liveness::Orphan);
    ops.record_node(&node("z", None, &["live.a"], beat))
        .await
        .unwrap();
    assert_eq!(liveness("live.a").await, Liveness::Running { nodes: 2 });

    let gone = node("w", Some("billing"), &["billing@live.b"], QUICK);
    ops.record_node(&gone).await.unwrap();
    assert_eq!(
        liveness("billing@live.b").await,
        Liveness::Running { nodes: 1 }
    );
    subject.pass(SILENT).await;
    assert_eq!(
        liveness("billing@live.b").await,
        Liveness::Orphan,
        "a node that stopped heartbeating runs nothing"
    );
}
