//! The actions: pause and resume, retry and purge (one, or the filtered set, after a
//! confirmation), and a projection's reset.

use osa_events::dashboard::DashboardOptions;

use super::*;

#[tokio::test]
async fn retrying_one_dead_letter_asks_first_then_makes_it_due() {
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 2, "fine").await;
    kill(&db, a, 2, "boom").await;
    let app = app(&db, DashboardOptions::new());
    let detail = get(&app, "/dead/dash.a/1").await;
    let csrf = detail.csrf();

    let ask = post(
        &app,
        "/dead/retry",
        &[("csrf", &csrf), ("handler", "dash.a"), ("position", "1")],
    )
    .await;
    assert_eq!(ask.status, StatusCode::OK, "{}", ask.body);
    assert!(
        ask.body
            .contains("Retry 1 dead letter: the dead letter of the event at position 1 to dash.a."),
        "{}",
        ask.body
    );
    // Asking changed nothing.
    assert_eq!(state_of(&db, "dash.a", 1).await, Some(DeliveryState::Dead));

    let done = post(
        &app,
        "/dead/retry",
        &[
            ("csrf", &csrf),
            ("handler", "dash.a"),
            ("position", "1"),
            ("confirmed", "1"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        done.location()
            .starts_with("/dead/dash.a/1?done=retried%201%20dead%20letter")
    );
    assert_eq!(
        state_of(&db, "dash.a", 1).await,
        Some(DeliveryState::Pending)
    );
    assert_eq!(state_of(&db, "dash.a", 2).await, Some(DeliveryState::Dead));
    let after = get(&app, done.location()).await;
    assert!(
        after
            .body
            .contains("retried 1 dead letter: they are due now"),
        "{}",
        after.body
    );
}

#[tokio::test]
async fn a_retried_dead_letter_handled_before_its_page_loads_still_shows_the_notice() {
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 1, "fine").await;
    kill(&db, a, 1, "boom").await;
    let app = app(&db, DashboardOptions::new());
    let csrf = get(&app, "/dead/dash.a/1").await.csrf();
    let done = post(
        &app,
        "/dead/retry",
        &[
            ("csrf", &csrf),
            ("handler", "dash.a"),
            ("position", "1"),
            ("confirmed", "1"),
        ],
    )
    .await;
    // A running handler takes the delivery and handles it before the redirect is followed.
    let claimed = db
        .store
        .claim(ClaimRequest {
            subscription: a,
            limit: 1,
            claim_timeout: Duration::from_secs(60),
            worker: "dashboard-test",
        })
        .await
        .unwrap();
    let fences: Vec<_> = claimed.iter().map(|delivery| delivery.fence).collect();
    assert_eq!(db.store.complete(a, &fences).await.unwrap(), 1);

    let after = get(&app, done.location()).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    assert!(
        after
            .body
            .contains("retried 1 dead letter: they are due now"),
        "{}",
        after.body
    );
    assert!(
        after
            .body
            .contains("has no delivery of the event at position 1 any more"),
        "{}",
        after.body
    );
    // Without an action's notice, a missing delivery is still not found.
    let missing = get(&app, "/dead/dash.a/1").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
}

#[tokio::test]
async fn purging_a_filtered_set_changes_at_most_what_was_confirmed() {
    let (db, a, b) = db_with_handlers().await;
    publish(&db, 6, "fine").await;
    kill(&db, a, 3, "timeout").await;
    kill(&db, b, 2, "timeout").await;
    let app = app(&db, DashboardOptions::new());
    let csrf = get(&app, "/dead").await.csrf();

    let ask = post(
        &app,
        "/dead/purge",
        &[("csrf", &csrf), ("error", "timeout")],
    )
    .await;
    assert!(
        ask.body
            .contains("Purge 5 dead letters: dead letters with an error containing “timeout”."),
        "{}",
        ask.body
    );
    assert!(ask.body.contains("cannot be undone"), "{}", ask.body);
    // What was confirmed was 2: only 2 go, in key order (dash.a's first).
    let done = post(
        &app,
        "/dead/purge",
        &[("csrf", &csrf), ("error", "timeout"), ("confirmed", "2")],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        done.location().contains("purged%202%20dead%20letters"),
        "{}",
        done.location()
    );
    assert!(
        done.location().ends_with("&error=timeout"),
        "{}",
        done.location()
    );
    assert_eq!(dead_of(&db, "dash.a").await, 1);
    assert_eq!(dead_of(&db, "dash.b").await, 2);

    let nothing = post(
        &app,
        "/dead/purge",
        &[("csrf", &csrf), ("error", "no such")],
    )
    .await;
    assert!(nothing.body.contains("Nothing matches"), "{}", nothing.body);
    let bad = post(&app, "/dead/purge", &[("csrf", &csrf), ("position", "3")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("named by its handler and position"),
        "{}",
        bad.body
    );
}

#[tokio::test]
async fn pause_and_resume_switch_a_handler_on_every_node() {
    let (db, _, _) = db_with_handlers().await;
    let app = app(&db, DashboardOptions::new());
    let csrf = get(&app, "/handlers/dash.a").await.csrf();
    let paused = post(&app, "/handlers/dash.a/pause", &[("csrf", &csrf)]).await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    let status = ops(&db).status().await.unwrap();
    assert!(status.handler("dash.a").unwrap().paused_at.is_some());
    let page = get(&app, paused.location()).await;
    assert!(
        page.body.contains("paused dash.a on every node"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"resume\""), "{}", page.body);

    let resumed = post(&app, "/handlers/dash.a/resume", &[("csrf", &csrf)]).await;
    assert_eq!(resumed.status, StatusCode::SEE_OTHER);
    let status = ops(&db).status().await.unwrap();
    assert!(status.handler("dash.a").unwrap().paused_at.is_none());
    let unknown = post(&app, "/handlers/nope/pause", &[("csrf", &csrf)]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
}

#[tokio::test]
async fn a_projection_resets_after_a_confirmation() {
    let (db, _, _) = db_with_handlers().await;
    publish(&db, 3, "fine").await;
    checkpoint(&db, "dash.totals").await;
    let at = position_of(&db, "dash.totals").await;
    assert!(at > 0, "at the end of a log of 3 events");
    let app = app(&db, DashboardOptions::new());
    let csrf = get(&app, "/projections").await.csrf();

    let ask = post(
        &app,
        "/projections/dash.totals/reset",
        &[("csrf", &csrf), ("to", "beginning")],
    )
    .await;
    assert!(
        ask.body
            .contains("Reset projection dash.totals, now at position"),
        "{}",
        ask.body
    );
    assert_eq!(position_of(&db, "dash.totals").await, at);
    let done = post(
        &app,
        "/projections/dash.totals/reset",
        &[("csrf", &csrf), ("to", "beginning"), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(position_of(&db, "dash.totals").await, 0);

    let unknown = post(
        &app,
        "/projections/nope/reset",
        &[("csrf", &csrf), ("to", "end"), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    // Known: those the store has a checkpoint of; not the ones this test binary registers and
    // nothing ran.
    assert!(
        unknown.body.contains("(known: dash.totals)"),
        "{}",
        unknown.body
    );
    let no_position = post(
        &app,
        "/projections/dash.totals/reset",
        &[("csrf", &csrf), ("to", "position"), ("position", "x")],
    )
    .await;
    assert_eq!(no_position.status, StatusCode::BAD_REQUEST);
}

/// Where projection `name` stands.
async fn position_of(db: &Db, name: &str) -> i64 {
    let projections = Store::projections(&db.store).expect("PgStore runs projections");
    projections.status(name, &[]).await.unwrap().position
}
