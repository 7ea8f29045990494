//! The dashboard in a real browser: a headless Chromium of each test's own
//! (`osa_events_fixtures::browser`) against the dashboard served on a free port, as
//! `axum::serve` serves it. A dead letter appears live while a runtime runs, is followed through
//! the pages, retried and handled; the read-only dashboard works with JavaScript off; so does a
//! retry. Under `CI=true` a test fails when no browser can be had; elsewhere it skips with a note.
//!
//! These tests take the dashboard's screenshots: with `OSA_EVENTS_UPDATE_SCREENSHOTS=1` they
//! replace the pictures in `docs/dashboard/` (its README says which test takes which).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use fantoccini::{Client, Locator};
use osa_events::operations::NodeRecord;
use osa_events::{Batch, HandlerError, Resources, State, event_handler, projection};
use osa_events_fixtures::browser::{Javascript, browser_or_skip, save_screenshot, wait_for_text};
use serde_json::json;
use tokio::net::TcpListener;

use super::*;
use crate::support::eventually;

/// How long a test waits for a page to show something, a live refresh to bring it, a handler to
/// handle or a heartbeat to record it: generous, for a loaded machine.
const WAIT: Duration = Duration::from_secs(20);

/// The refresh of the live pages: the shortest the dashboard allows.
const REFRESH: Duration = Duration::from_secs(1);

/// The note of the job that dead-letters: markup, which every page must show as text.
const MARKUP: &str = "<script>alert('x')</script>";

const INDEX: &str = "dash.browser.index";
const RECEIPTS: &str = "dash.browser.receipts";
const AUDIT: &str = "dash.browser.audit";
const TOTALS: &str = "dash.browser.totals";

/// The search index `dash.browser.index` writes to: while it is `broken`, every job fails for
/// good.
#[derive(Debug, Default)]
struct SearchIndex {
    broken: AtomicBool,
}

#[event_handler(name = "dash.browser.index", poll = "250ms")]
async fn index(job: Job, search: State<SearchIndex>) -> Result<(), HandlerError> {
    if search.broken.load(Ordering::SeqCst) {
        return Err(HandlerError::permanent(format!(
            "search index is read-only (disk full): job {} not indexed",
            job.n
        )));
    }
    Ok(())
}

#[event_handler(name = "dash.browser.receipts", batch = 16, poll = "250ms")]
async fn receipts(jobs: Batch<Job>) -> Result<(), HandlerError> {
    tracing::debug!(jobs = jobs.len(), "receipts sent");
    Ok(())
}

#[event_handler(name = "dash.browser.audit", poll = "250ms")]
async fn audit(job: Job) -> Result<(), HandlerError> {
    tracing::debug!(job = job.n, "audited");
    Ok(())
}

/// Jobs seen: the projection's read model, in memory.
#[derive(Debug, Default)]
struct Totals(AtomicU64);

#[projection(name = "dash.browser.totals", batch = 50, poll = "250ms")]
async fn totals(jobs: Batch<Job>, totals: State<Totals>) -> Result<(), HandlerError> {
    totals.0.fetch_add(jobs.len() as u64, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn a_dead_letter_appears_live_is_retried_and_handled() {
    let Some(browser) = browser_or_skip().await else {
        return;
    };
    let db = Db::new().await;
    let search = Arc::new(SearchIndex::default());
    let totals = Arc::new(Totals::default());
    let running = db
        .start_with(
            &[INDEX, RECEIPTS, AUDIT, TOTALS],
            Resources::new()
                .with_arc(Arc::clone(&search))
                .with_arc(Arc::clone(&totals)),
            // Charts fill from the heartbeats.
            |runtime| runtime.node_heartbeat(Duration::from_millis(500)),
        )
        .await;
    // The three handlers and the projection see the same jobs: the same history.
    let seeded = seed_history(&db, "handler", INDEX, 18).await;
    for name in [RECEIPTS, AUDIT] {
        seed_history(&db, "handler", name, 0).await;
    }
    seed_history(&db, "projection", TOTALS, 0).await;
    let jobs = 12;
    publish(&db, jobs, "fine").await;
    eventually(WAIT, "the projection applies the jobs", || async {
        totals.0.load(Ordering::SeqCst) == u64::from(jobs)
    })
    .await;
    let base = serve(&db, DashboardOptions::new().refresh(REFRESH)).await;
    let client = browser.session(Javascript::On).await.unwrap();

    // The overview, once every chart counts the jobs (a heartbeat recorded them).
    open(&client, &format!("{base}/"), &row(INDEX), INDEX).await;
    let handled = seeded + u64::from(jobs);
    for name in [INDEX, RECEIPTS, AUDIT] {
        until(
            &format!("{name}'s chart counts {handled} handled"),
            || async { chart(&client, &row(name)).await.0 >= handled },
        )
        .await;
    }
    until("the projection's chart counts the jobs", || async {
        chart(
            &client,
            &format!("#projections tr[data-projection=\"{TOTALS}\"]"),
        )
        .await
        .0 >= handled
    })
    .await;
    let live = shows(&client, "#live", "live ·").await;
    let clock = live.strip_prefix("live · ").unwrap_or_default();
    assert!(
        clock.len() == 8
            && clock.char_indices().all(|(i, c)| if i % 3 == 2 {
                c == ':'
            } else {
                c.is_ascii_digit()
            }),
        "the live refresh's time is not HH:MM:SS: {live:?}"
    );
    save_screenshot(&client, "overview").await.unwrap();

    // The index breaks; a job with markup in it dead-letters, and the open page shows it.
    client
        .execute("window.osaNotReloaded = true;", vec![])
        .await
        .unwrap();
    search.broken.store(true, Ordering::SeqCst);
    let markup = Outgoing::new(&Job {
        n: jobs,
        note: MARKUP.to_owned(),
    })
    .unwrap();
    osa_events::publish_batch(db.pool(), &[markup])
        .await
        .unwrap();
    let dead = format!("{} td.dead", row(INDEX));
    shows(&client, &dead, "1").await;
    assert_eq!(text_of(&client, &dead).await, "1");
    assert_eq!(
        client
            .execute("return window.osaNotReloaded === true;", vec![])
            .await
            .unwrap(),
        json!(true),
        "the page was reloaded: the dead letter did not come with a live refresh"
    );
    let (handled_before, _) = chart(&client, &row(INDEX)).await;

    // Its dead letters, its handler, and the dead letter in full: the markup is text.
    click(&client, &format!("{dead} a")).await;
    shows(&client, "#dead-letters", INDEX).await;
    assert_eq!(count(&client, "#dead-letters tbody tr").await, 1);
    assert!(
        url(&client)
            .await
            .ends_with(&format!("/dead?handler={INDEX}")),
        "{}",
        url(&client).await
    );
    shows(&client, "#live", "live ·").await;
    save_screenshot(&client, "dead-letters").await.unwrap();

    click(&client, "#dead-letters a[href^=\"/handlers/\"]").await;
    shows(&client, "#dead", "1").await;
    shows(&client, ".verdict", "1 dead letter;").await;
    shows(&client, "#errors", "search index is read-only (disk full)").await;
    shows(&client, "#live", "live ·").await;
    save_screenshot(&client, "handler").await.unwrap();
    client.back().await.unwrap();

    click(&client, "#dead-letters a[href^=\"/dead/\"]").await;
    shows(&client, "#state", "dead").await;
    shows(
        &client,
        "#last-error",
        "search index is read-only (disk full)",
    )
    .await;
    let payload = text_of(&client, "#payload").await;
    assert!(payload.contains(MARKUP), "{payload}");
    assert_eq!(count(&client, "#payload script").await, 0);
    let alert = client.get_alert_text().await;
    assert!(
        alert.as_ref().is_err_and(|error| error.is_no_such_alert()),
        "the payload's script ran: {alert:?}"
    );
    save_screenshot(&client, "dead-letter").await.unwrap();

    // Fixed, retried after a confirmation, and handled.
    search.broken.store(false, Ordering::SeqCst);
    click(&client, "#retry").await;
    shows(&client, "#confirm-what", "Retry 1 dead letter").await;
    save_screenshot(&client, "confirm-retry").await.unwrap();
    click(&client, "#confirm").await;
    shows(&client, "p.notice", "retried 1 dead letter").await;

    client.goto(&format!("{base}/")).await.unwrap();
    shows(&client, &dead, "0").await;
    until("the index's chart counts the retried job", || async {
        chart(&client, &row(INDEX)).await.0 > handled_before
    })
    .await;

    // The projection, led by the runtime, and the runtime's node.
    eventually(WAIT, "the runtime leads the projection", || async {
        leader_of(&db, TOTALS).await.is_some()
    })
    .await;
    let leader = leader_of(&db, TOTALS).await.expect("a leader");
    let projection = format!("tr[data-projection=\"{TOTALS}\"]");
    open(
        &client,
        &format!("{base}/projections"),
        &projection,
        &leader,
    )
    .await;
    shows(&client, &projection, &(jobs + 1).to_string()).await;
    shows(&client, "#live", "live ·").await;
    save_screenshot(&client, "projections").await.unwrap();

    open(&client, &format!("{base}/nodes"), "#nodes", INDEX).await;
    shows(&client, "#nodes", TOTALS).await;
    shows(&client, "#live", "live ·").await;
    save_screenshot(&client, "nodes").await.unwrap();

    running.stop().await;
}

#[tokio::test]
async fn read_only_pages_work_with_javascript_off() {
    let Some(browser) = browser_or_skip().await else {
        return;
    };
    let (db, a, b) = db_with_handlers().await;
    publish(&db, 8, "fine").await;
    kill(&db, a, 3, "search cluster timed out after 2s").await;
    kill(&db, b, 1, "customer 42 is unknown").await;
    checkpoint(&db, "dash.totals").await;
    record_node(&db).await;
    seed_history(&db, "handler", "dash.a", 4).await;
    seed_history(&db, "handler", "dash.b", 0).await;
    seed_history(&db, "projection", "dash.totals", 0).await;
    let base = serve(
        &db,
        DashboardOptions::new().read_only(true).refresh(REFRESH),
    )
    .await;
    let client = browser.session(Javascript::Off).await.unwrap();

    open(&client, &format!("{base}/"), &row("dash.a"), "dash.a").await;
    assert_eq!(
        text_of(&client, &format!("{} td.due", row("dash.a"))).await,
        "5"
    );
    assert_eq!(
        text_of(&client, &format!("{} td.dead", row("dash.a"))).await,
        "3"
    );
    assert_eq!(
        text_of(&client, &format!("{} td.due", row("dash.b"))).await,
        "7"
    );
    assert_eq!(
        text_of(&client, &format!("{} td.dead", row("dash.b"))).await,
        "1"
    );
    shows(
        &client,
        &format!("{} td.state", row("dash.a")),
        "running on 1 node",
    )
    .await;
    shows(&client, "#projections", "dash.totals").await;
    shows(&client, "header .badge", "read-only").await;
    // A live page: with JavaScript on, its script would fill `#live` at once.
    assert_eq!(count(&client, "main[data-refresh]").await, 1);
    assert_no_action_and_no_script(&client).await;
    save_screenshot(&client, "read-only-no-js").await.unwrap();

    open(&client, &format!("{base}/handlers/dash.a"), "#due", "5").await;
    shows(&client, "#dead", "3").await;
    shows(&client, "#errors", "search cluster timed out after 2s").await;
    assert_eq!(count(&client, "#pause").await, 0);
    assert_no_action_and_no_script(&client).await;

    open(&client, &format!("{base}/dead"), "#dead-letters", "dash.b").await;
    assert_eq!(count(&client, "#dead-letters tbody tr").await, 4);
    assert_eq!(count(&client, "#retry-all").await, 0);
    assert_no_action_and_no_script(&client).await;
    // The filters are a GET form: they work without the script.
    client
        .find(Locator::Css("#filters select[name=handler]"))
        .await
        .unwrap()
        .select_by_value("dash.b")
        .await
        .unwrap();
    click(&client, "#filters button[type=submit]").await;
    until("the filtered list loads", || async {
        url(&client).await.contains("?handler=dash.b")
    })
    .await;
    shows(&client, "#dead-letters", "customer 42 is unknown").await;
    assert_eq!(count(&client, "#dead-letters tbody tr").await, 1);
    let rows = text_of(&client, "#dead-letters tbody").await;
    assert!(!rows.contains("dash.a"), "{rows}");
    assert_no_action_and_no_script(&client).await;

    click(&client, "#dead-letters a[href^=\"/dead/\"]").await;
    shows(&client, "#state", "dead").await;
    shows(&client, "#last-error", "customer 42 is unknown").await;
    shows(&client, "#payload", "\"note\": \"fine\"").await;
    shows(&client, "#metadata", "{").await;
    assert_eq!(count(&client, "#retry").await, 0);
    assert_no_action_and_no_script(&client).await;

    let projection = "tr[data-projection=\"dash.totals\"]";
    open(
        &client,
        &format!("{base}/projections"),
        projection,
        "dash.totals",
    )
    .await;
    // Reset to the end: the checkpoint is the last event's position.
    shows(&client, projection, "8").await;
    assert_no_action_and_no_script(&client).await;

    open(&client, &format!("{base}/nodes"), "#nodes", "worker-1").await;
    shows(&client, "#nodes", "dash.a, dash.b").await;
    assert_no_action_and_no_script(&client).await;
}

#[tokio::test]
async fn retry_works_with_javascript_off() {
    let Some(browser) = browser_or_skip().await else {
        return;
    };
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 2, "fine").await;
    kill(&db, a, 1, "boom").await;
    let base = serve(&db, DashboardOptions::new().refresh(REFRESH)).await;
    let client = browser.session(Javascript::Off).await.unwrap();

    open(&client, &format!("{base}/dead/dash.a/1"), "#state", "dead").await;
    click(&client, "#retry").await;
    shows(
        &client,
        "#confirm-what",
        "Retry 1 dead letter: the dead letter of the event at position 1 to dash.a.",
    )
    .await;
    assert_eq!(state_of(&db, "dash.a", 1).await, Some(DeliveryState::Dead));
    click(&client, "#confirm").await;
    shows(&client, "p.notice", "retried 1 dead letter").await;
    shows(&client, "#state", "pending").await;
    assert_eq!(
        state_of(&db, "dash.a", 1).await,
        Some(DeliveryState::Pending)
    );
}

/// Serves the dashboard of `db` on a free port of 127.0.0.1 until the test's runtime ends, with
/// the peer's address (the dashboard checks it is local). Returns its root as the browser opens
/// it, `http://localhost:<port>`: without a token, the dashboard answers only loopback names.
async fn serve(db: &Db, options: DashboardOptions) -> String {
    let app = app(db, options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://localhost:{port}")
}

/// The overview's row of handler `name`.
fn row(name: &str) -> String {
    format!("tr[data-handler=\"{name}\"]")
}

/// Opens `url` and waits until `css` shows `text`, so the page has loaded.
async fn open(client: &Client, url: &str, css: &str, text: &str) {
    client.goto(url).await.unwrap();
    shows(client, css, text).await;
}

/// Waits up to [`WAIT`] until `css` shows `text`; returns all it shows.
async fn shows(client: &Client, css: &str, text: &str) -> String {
    wait_for_text(client, css, text, WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The text of the first element matching `css`, which must be there.
async fn text_of(client: &Client, css: &str) -> String {
    read(client, css, None).await
}

/// The text of the first element matching `css`, or its attribute `attribute` (empty when it has
/// none), looking again while the element was replaced between the look and the read (a live
/// refresh swaps the page's content every second). The element must be there.
async fn read(client: &Client, css: &str, attribute: Option<&str>) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let read = match client.find(Locator::Css(css)).await {
            Ok(element) => match attribute {
                None => element.text().await,
                Some(name) => element.attr(name).await.map(Option::unwrap_or_default),
            },
            Err(error) => Err(error),
        };
        match read {
            Ok(value) => return value,
            Err(error)
                if error.is_stale_element_reference() && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("`{css}` on {}: {error}", url(client).await),
        }
    }
}

/// How many elements match `css`.
async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.unwrap().len()
}

/// The page's address.
async fn url(client: &Client) -> String {
    client.current_url().await.unwrap().to_string()
}

/// Clicks the first element matching `css`, looking again while it is missing or was replaced
/// between the look and the click (a live refresh swaps the page's content every second).
async fn click(client: &Client, css: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let clicked = match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await,
            Err(error) => Err(error),
        };
        match clicked {
            Ok(()) => return,
            Err(error)
                if (error.is_stale_element_reference() || error.is_no_such_element())
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("click `{css}` on {}: {error}", url(client).await),
        }
    }
}

/// Polls `condition` every 100 ms (each look is a round trip to the browser) until it holds;
/// panics with `what` after [`WAIT`].
async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the chart in `row` counts, handled and failed, as its label says
/// (`last hour: 1,234 handled, 5 failed`).
async fn chart(client: &Client, row: &str) -> (u64, u64) {
    let label = read(client, &format!("{row} svg.chart"), Some("aria-label")).await;
    let number = |text: &str| text.replace(',', "").parse::<u64>().ok();
    label
        .strip_prefix("last hour: ")
        .and_then(|rest| rest.strip_suffix(" failed"))
        .and_then(|rest| rest.split_once(" handled, "))
        .and_then(|(handled, failed)| Some((number(handled)?, number(failed)?)))
        .unwrap_or_else(|| panic!("a chart's label reads {label:?}"))
}

/// Checks that the page offers no action (no form posts) and ran no script: `#live` is empty,
/// which the script fills as it starts on a live page (`main[data-refresh]`).
async fn assert_no_action_and_no_script(client: &Client) {
    let at = url(client).await;
    assert_eq!(
        count(client, "form[method=post]").await,
        0,
        "a form posts on {at}"
    );
    assert_eq!(text_of(client, "#live").await, "", "a script ran on {at}");
}

/// Fills the activity history of `name` (`kind` `handler` or `projection`) as a runtime running
/// it for the last hour would have: 38 to 80 handled a minute, and `failed` failed attempts a
/// minute 20 to 22 minutes ago. Returns how many it handled. The pictures in `docs/dashboard/`
/// then show a system that has been running, not one just started.
///
/// The minutes are 2 to 55 before now: within the charts' hour for a few minutes more, whatever
/// the test's speed, and apart from the minutes the test's own runtime records into.
async fn seed_history(db: &Db, kind: &str, name: &str, failed: i64) -> u64 {
    let minutes: Vec<i32> = (2..=55).collect();
    let handled: Vec<i64> = minutes
        .iter()
        .map(|&m| 40 + i64::from(m * 7 % 11) * 4 - i64::from(m % 3))
        .collect();
    let failures: Vec<i64> = minutes
        .iter()
        .map(|m| if (20..=22).contains(m) { failed } else { 0 })
        .collect();
    sqlx::query(
        "insert into osa_events.activity (kind, name, minute, handled, failed) \
         select $1, $2, date_trunc('minute', now()) - make_interval(mins => m), h, f \
         from unnest($3::int[], $4::bigint[], $5::bigint[]) as t(m, h, f)",
    )
    .bind(kind)
    .bind(name)
    .bind(&minutes)
    .bind(&handled)
    .bind(&failures)
    .execute(db.pool())
    .await
    .expect("seed the activity history");
    handled.iter().map(|&h| h.unsigned_abs()).sum()
}

/// The runtime instance that leads projection `name`, if one does.
async fn leader_of(db: &Db, name: &str) -> Option<String> {
    ops(db)
        .projections()
        .await
        .unwrap()
        .into_iter()
        .find(|projection| projection.name == name)
        .and_then(|projection| projection.leader)
}

/// Records a node that runs `dash.a`, `dash.b` and `dash.totals`, as a runtime's heartbeat does.
async fn record_node(db: &Db) {
    ops(db)
        .record_node(&NodeRecord {
            id: uuid::Uuid::new_v4(),
            name: "worker-1".to_owned(),
            namespace: None,
            host: "app-host-1".to_owned(),
            pid: 4242,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            handlers: vec!["dash.a".to_owned(), "dash.b".to_owned()],
            projections: vec!["dash.totals".to_owned()],
            started_at: SystemTime::now() - Duration::from_secs(3 * 3600),
            // Alive for the whole test, however slow.
            heartbeat: Duration::from_secs(600),
        })
        .await
        .expect("record a node");
}
