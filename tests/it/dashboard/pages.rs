//! What each page shows.

use osa_events::dashboard::DashboardOptions;

use super::*;

#[tokio::test]
async fn the_overview_shows_every_handler_and_projection_with_its_figures() {
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 5, "fine").await;
    assert_eq!(kill(&db, a, 2, "backend down").await, 2);
    checkpoint(&db, "dash.totals").await;
    let app = app(&db, DashboardOptions::new());

    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.starts_with("<!doctype html>"), "{}", page.body);
    // dash.a: 3 due, 2 dead, linked to its dead letters, coloured unhealthy.
    let row_a = row(&page.body, "data-handler=\"dash.a\"");
    assert!(row_a.contains("health-bad"), "{row_a}");
    assert!(row_a.contains("<td class=\"num due\">3</td>"), "{row_a}");
    assert!(
        row_a.contains("href=\"/dead?handler=dash.a\">2</a>"),
        "{row_a}"
    );
    assert!(row_a.contains("<svg class=\"chart\""), "{row_a}");
    // dash.b: 5 due, nothing dead; no node runs it, so it is only worth a look.
    let row_b = row(&page.body, "data-handler=\"dash.b\"");
    assert!(row_b.contains("<td class=\"num due\">5</td>"), "{row_b}");
    assert!(row_b.contains("health-warn"), "{row_b}");
    assert!(page.body.contains(">dash.totals</a>"), "{}", page.body);
    // Live refresh is wired, and its fragment is the main element's content alone.
    assert!(
        page.body.contains("<main data-refresh=\"5000\">"),
        "{}",
        page.body
    );
    let fragment = get_with(&app, "/", &[("x-osa-live", "1")]).await;
    assert_eq!(fragment.status, StatusCode::OK);
    assert!(!fragment.body.contains("<html"), "{}", fragment.body);
    assert!(
        fragment.body.contains("data-handler=\"dash.a\""),
        "{}",
        fragment.body
    );
}

/// The `<tr>` that holds `marker`.
fn row<'a>(body: &'a str, marker: &str) -> &'a str {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("`{marker}` in {body}"));
    let start = body[..at].rfind("<tr").unwrap();
    let end = at + body[at..].find("</tr>").unwrap();
    &body[start..end]
}

#[tokio::test]
async fn a_handler_page_groups_its_errors_and_lists_its_oldest_pending() {
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 6, "fine").await;
    assert_eq!(
        kill(&db, a, 2, "timeout calling the index\nat line 3").await,
        2
    );
    assert_eq!(kill(&db, a, 1, "bad payload").await, 1);
    let app = app(&db, DashboardOptions::new());

    let page = get(&app, "/handlers/dash.a").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<dd id=\"due\">3</dd>"), "{}", page.body);
    assert!(
        page.body
            .contains("<dd id=\"dead\"><a href=\"/dead?handler=dash.a\">3</a>")
    );
    let errors = &page.body[page.body.find("id=\"errors\"").expect("an errors table")..];
    // Grouped by first line, the most frequent first, linked to the dead letters it names.
    let timeout = errors.find("timeout calling the index").unwrap();
    let bad = errors.find("bad payload").unwrap();
    assert!(timeout < bad, "{errors}");
    assert!(
        errors.contains(
            "href=\"/dead?handler=dash.a&amp;error=timeout%20calling%20the%20index\">2</a>"
        ),
        "{errors}"
    );
    // Pause is offered; the oldest pending are listed.
    assert!(page.body.contains("id=\"pause\""), "{}", page.body);
    assert!(page.body.contains("Oldest pending"), "{}", page.body);

    let unknown = get(&app, "/handlers/nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown
            .body
            .contains("no handler is stored as `nope` (known: dash.a, dash.b)"),
        "{}",
        unknown.body
    );
    assert!(
        unknown.body.contains("<nav>"),
        "errors are framed pages: {}",
        unknown.body
    );
}

#[tokio::test]
async fn dead_letters_filter_and_show_in_full() {
    let (db, a, b) = db_with_handlers().await;
    publish(&db, 4, "fine").await;
    kill(&db, a, 2, "timeout").await;
    kill(&db, b, 1, "refused").await;
    let app = app(&db, DashboardOptions::new());

    let all = get(&app, "/dead").await;
    assert_eq!(
        all.body.matches("<tr><td><a href=\"/handlers/").count(),
        3,
        "{}",
        all.body
    );
    let only_b = get(&app, "/dead?handler=dash.b").await;
    assert_eq!(
        only_b.body.matches("<tr><td><a href=\"/handlers/").count(),
        1,
        "{}",
        only_b.body
    );
    let by_error = get(&app, "/dead?error=time").await;
    assert_eq!(
        by_error
            .body
            .matches("<tr><td><a href=\"/handlers/")
            .count(),
        2
    );
    let none = get(&app, "/dead?since=2999-01-01T00%3A00").await;
    assert!(
        none.body.contains("No dead letter matches these filters."),
        "{}",
        none.body
    );
    let bad_time = get(&app, "/dead?since=yesterday").await;
    assert_eq!(bad_time.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_time.body.contains("`since` must be a time"),
        "{}",
        bad_time.body
    );

    let detail = get(&app, "/dead/dash.a/1").await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert!(
        detail
            .body
            .contains("<span class=\"state\" id=\"state\">dead</span>")
    );
    // Pretty-printed payload, the metadata, the error.
    assert!(
        detail.body.contains("\"note\": &quot;fine&quot;")
            || detail.body.contains("&quot;note&quot;: &quot;fine&quot;"),
        "{}",
        detail.body
    );
    assert!(
        detail
            .body
            .contains("<pre class=\"error\" id=\"last-error\">timeout</pre>")
    );
    assert!(detail.body.contains("id=\"metadata\""));
    let missing = get(&app, "/dead/dash.a/999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn projections_and_nodes_have_their_pages() {
    let (db, _, _) = db_with_handlers().await;
    checkpoint(&db, "dash.totals").await;
    let app = app(&db, DashboardOptions::new());
    let projections = get(&app, "/projections").await;
    assert_eq!(projections.status, StatusCode::OK);
    assert!(projections.body.contains("data-projection=\"dash.totals\""));
    assert!(projections.body.contains("Reset…"));
    let nodes = get(&app, "/nodes").await;
    assert_eq!(nodes.status, StatusCode::OK);
    assert!(
        nodes
            .body
            .contains("No runtime instance has recorded itself"),
        "{}",
        nodes.body
    );
    let nowhere = get(&app, "/nowhere").await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn links_follow_where_the_dashboard_is_mounted() {
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 1, "fine").await;
    kill(&db, a, 1, "boom").await;
    let app = Router::new().nest("/osa", super::app(&db, DashboardOptions::new()));
    let page = get(&app, "/osa").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("href=\"/osa/handlers/dash.a\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<a class=\"brand\" href=\"/osa\">"),
        "{}",
        page.body
    );
    let handler = get(&app, "/osa/handlers/dash.a").await;
    assert!(
        handler
            .body
            .contains("action=\"/osa/handlers/dash.a/pause\""),
        "{}",
        handler.body
    );
    assert!(
        page.body.contains("href=\"/osa/assets/dashboard.css?v="),
        "{}",
        page.body
    );
    let css = get(&app, "/osa/assets/dashboard.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    let js = get(&app, "/osa/assets/dashboard.js").await;
    assert!(js.body.contains("X-Osa-Live"), "{}", js.body);
}

#[tokio::test]
async fn the_dashboard_runs_on_sqlite_too() {
    let store = osa_events::AnyStore::from(osa_events::SqliteStore::temporary().await.unwrap());
    store.migrate().await.unwrap();
    let ids = store.register(&[subscription("dash.lite")]).await.unwrap();
    let event = Outgoing::new(&Job {
        n: 1,
        note: "<b>lite</b>".to_owned(),
    })
    .unwrap();
    store.publish_batch(&[event]).await.unwrap();
    let claimed = store
        .claim(ClaimRequest {
            subscription: ids[0],
            limit: 1,
            claim_timeout: Duration::from_secs(60),
            worker: "dashboard-test",
        })
        .await
        .unwrap();
    let failure = Failure {
        fence: claimed[0].fence,
        error: "refused".to_owned(),
        retry_in: None,
    };
    store.fail(ids[0], &[failure]).await.unwrap();
    let position = claimed[0].fence.position;

    let app = dashboard::router(store, DashboardOptions::new()).unwrap();
    let overview = get(&app, "/").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    assert!(
        overview
            .body
            .contains("href=\"/dead?handler=dash.lite\">1</a>"),
        "{}",
        overview.body
    );
    let detail = get(&app, &format!("/dead/dash.lite/{position}")).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert!(
        detail.body.contains("&lt;b&gt;lite&lt;/b&gt;"),
        "{}",
        detail.body
    );
}
