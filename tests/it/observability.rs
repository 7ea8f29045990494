//! Observability across processes: with the `opentelemetry` feature, a request's trace runs
//! through publish and commit in one process and on into the handlers of another, through the
//! W3C trace context stored in the events' metadata (the SDK's in-memory exporter on both sides:
//! `src/bin/osa-traced.rs`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::Db;

/// A finished span, as `osa-traced` prints it.
#[derive(Debug, Deserialize)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: String,
    attributes: BTreeMap<String, String>,
    links: Vec<Link>,
}

#[derive(Debug, Deserialize)]
struct Link {
    trace_id: String,
    span_id: String,
}

impl Span {
    fn attribute(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .unwrap_or_else(|| panic!("no `{key}` on {self:#?}"))
    }
}

fn parse(lines: &[String]) -> Vec<Span> {
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|span| span.name == name).collect()
}

const EVENTS: usize = 5;
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn one_trace_runs_from_a_request_through_publish_and_commit_to_the_handlers_of_another_process()
 {
    let db = Db::new().await;
    let url = db.url().await;
    let events = EVENTS.to_string();

    let mut consumer = Command::new(env!("CARGO_BIN_EXE_osa-traced"))
        .args(["consume", &url, &events])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the consumer");
    let mut consumed = BufReader::new(consumer.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(DEADLINE, consumed.next_line())
        .await
        .expect("the consumer registers in time")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));

    let published = tokio::time::timeout(
        DEADLINE,
        Command::new(env!("CARGO_BIN_EXE_osa-traced"))
            .args(["publish", &url, &events])
            .output(),
    )
    .await
    .expect("the publisher finishes in time")
    .unwrap();
    assert!(published.status.success(), "{published:?}");
    let publisher = parse(
        &String::from_utf8(published.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    );

    let mut lines = Vec::new();
    let consuming = async {
        while let Some(line) = consumed.next_line().await.unwrap() {
            lines.push(line);
        }
        consumer.wait().await.unwrap()
    };
    let status = tokio::time::timeout(DEADLINE, consuming)
        .await
        .expect("the consumer finishes in time");
    assert!(status.success(), "the consumer failed: {status}");
    let consumer = parse(&lines);

    // The publisher: the request, and its two publishes as its children.
    let requests = named(&publisher, "POST /orders");
    assert_eq!(requests.len(), 1, "{publisher:#?}");
    let request = requests[0];
    let trace = &request.trace_id;
    assert_eq!(request.kind, "Server");
    let publishes = named(&publisher, "publish traced.order");
    assert_eq!(publishes.len(), 2, "{publisher:#?}");
    for publish in &publishes {
        assert_eq!(&publish.trace_id, trace);
        assert_eq!(publish.parent_span_id, request.span_id);
        assert_eq!(publish.kind, "Producer");
        assert_eq!(publish.attribute("messaging.system"), "osa_events");
        assert_eq!(publish.attribute("messaging.operation.type"), "send");
        assert_eq!(
            publish.attribute("messaging.destination.name"),
            "traced.order"
        );
    }
    let publish_ids: Vec<&str> = publishes.iter().map(|span| span.span_id.as_str()).collect();

    // The stored envelopes carry the publish spans' context.
    let stored: Vec<Option<String>> = sqlx::query_scalar(
        "select metadata->>'traceparent' from osa_events.events order by position",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(stored.len(), EVENTS);
    for traceparent in &stored {
        let traceparent = traceparent
            .as_deref()
            .expect("every event carries a traceparent");
        assert!(traceparent.contains(trace.as_str()), "{traceparent}");
    }

    // The per-event handler: each call a child of the publish that sent its event.
    let processes = named(&consumer, "process traced.each");
    assert_eq!(processes.len(), EVENTS, "{consumer:#?}");
    for process in &processes {
        assert_eq!(
            &process.trace_id, trace,
            "one trace across the hop: {process:#?}"
        );
        assert!(
            publish_ids.contains(&process.parent_span_id.as_str()),
            "a child of a publish span: {process:#?}"
        );
        assert_eq!(process.kind, "Consumer");
        assert_eq!(process.attribute("messaging.system"), "osa_events");
        assert_eq!(process.attribute("messaging.operation.type"), "process");
        assert_eq!(
            process.attribute("messaging.destination.name"),
            "traced.each"
        );
        assert_eq!(process.attribute("osa_events.outcome"), "completed");
    }

    // The batches: linked to every event's context.
    let linked = |name: &str| -> usize {
        named(&consumer, name)
            .iter()
            .flat_map(|span| &span.links)
            .inspect(|link| {
                assert_eq!(&link.trace_id, trace);
                assert!(publish_ids.contains(&link.span_id.as_str()), "{link:?}");
            })
            .count()
    };
    assert_eq!(linked("receive traced.each"), EVENTS);
    assert_eq!(linked("receive traced.batch"), EVENTS);
    assert_eq!(linked("process traced.batch"), EVENTS);
    for receive in named(&consumer, "receive traced.batch") {
        assert_eq!(receive.kind, "Consumer");
        assert_eq!(receive.attribute("messaging.operation.type"), "receive");
    }
}
