//! Safe by default: payloads escaped, actions CSRF-checked, read-only hides and refuses, a token
//! guards every page, and without one only local requests get in.

use osa_events::dashboard::DashboardOptions;

use super::*;

#[tokio::test]
async fn a_payload_with_a_script_shows_as_text() {
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 1, "<script>alert('owned')</script>").await;
    kill(&db, a, 1, "<img src=x onerror=alert(1)>").await;
    let app = app(&db, DashboardOptions::new());

    let detail = get(&app, "/dead/dash.a/1").await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert!(!detail.body.contains("<script>alert"), "{}", detail.body);
    assert!(!detail.body.contains("<img src=x"), "{}", detail.body);
    assert!(
        detail
            .body
            .contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;")
    );
    assert!(detail.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let list = get(&app, "/dead").await;
    assert!(!list.body.contains("<img src=x"), "{}", list.body);
    // And no inline script could run anyway.
    let policy = detail.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(detail.headers[header::X_FRAME_OPTIONS], "DENY");
}

#[tokio::test]
async fn an_action_without_the_pages_token_or_from_another_site_is_refused() {
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 1, "fine").await;
    kill(&db, a, 1, "boom").await;
    let app = app(&db, DashboardOptions::new());
    let confirmed = [("handler", "dash.a"), ("position", "1"), ("confirmed", "1")];

    let forged = post(
        &app,
        "/dead/purge",
        &[&[("csrf", "guessed")], &confirmed[..]].concat(),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.body.contains("CSRF check failed"), "{}", forged.body);

    let csrf = get(&app, "/").await.csrf_or_from(&app).await;
    let form = format!("csrf={csrf}&handler=dash.a&position=1&confirmed=1");
    let cross_site = send(
        &app,
        Request::post("/dead/purge")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, "http://evil.example")
            .body(Body::from(form.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let fetch_site = send(
        &app,
        Request::post("/dead/purge")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "cross-site")
            .body(Body::from(form))
            .unwrap(),
    )
    .await;
    assert_eq!(fetch_site.status, StatusCode::FORBIDDEN);
    assert_eq!(state_of(&db, "dash.a", 1).await, Some(DeliveryState::Dead));
    // A GET never changes anything: there is no GET route for an action.
    let get_purge = get(&app, "/dead/purge").await;
    assert_eq!(get_purge.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(state_of(&db, "dash.a", 1).await, Some(DeliveryState::Dead));
}

impl Reply {
    /// The CSRF token of this page, or of the dead letters page when this one has no form.
    async fn csrf_or_from(&self, app: &Router) -> String {
        if self.body.contains("name=\"csrf\"") {
            self.csrf()
        } else {
            get(app, "/dead").await.csrf()
        }
    }
}

#[tokio::test]
async fn read_only_hides_every_action_and_refuses_them() {
    let (db, a, _) = db_with_handlers().await;
    publish(&db, 1, "fine").await;
    kill(&db, a, 1, "boom").await;
    checkpoint(&db, "dash.totals").await;
    let writable = app(&db, DashboardOptions::new());
    let csrf = get(&writable, "/dead").await.csrf();
    let app = app(&db, DashboardOptions::new().read_only(true));
    for path in [
        "/",
        "/handlers/dash.a",
        "/dead",
        "/dead/dash.a/1",
        "/projections",
        "/nodes",
    ] {
        let page = get(&app, path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(
            !page.body.contains("<form method=\"post\""),
            "{path}: {}",
            page.body
        );
        assert!(page.body.contains("read-only"), "{path}");
    }
    // The read-only dashboard's own token is as good as any: it refuses all the same.
    let csrf_ro = {
        // It draws no form, so no token shows; try the writable one's and a made-up one.
        [csrf.clone(), "x".repeat(32)]
    };
    for csrf in csrf_ro {
        let refused = post(
            &app,
            "/dead/purge",
            &[
                ("csrf", &csrf),
                ("handler", "dash.a"),
                ("position", "1"),
                ("confirmed", "1"),
            ],
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(state_of(&db, "dash.a", 1).await, Some(DeliveryState::Dead));
}

#[tokio::test]
async fn a_token_guards_every_page_and_a_login_sets_a_cookie() {
    let (db, _, _) = db_with_handlers().await;
    let token = "0123456789abcdef-dashboard";
    let app = app(&db, DashboardOptions::new().token(token));

    let anonymous = get(&app, "/").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.body.contains("name=\"token\""),
        "a login form: {}",
        anonymous.body
    );
    assert!(!anonymous.body.contains(token));
    let live = get_with(&app, "/", &[("x-osa-live", "1")]).await;
    assert_eq!(live.status, StatusCode::UNAUTHORIZED);

    let bearer = get_with(
        &app,
        "/",
        &[(header::AUTHORIZATION.as_str(), &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(bearer.status, StatusCode::OK, "{}", bearer.body);

    let wrong = post(&app, "/login", &[("token", "not-the-token-at-all")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("That is not this dashboard"),
        "{}",
        wrong.body
    );
    let login = post(&app, "/login", &[("token", token)]).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    let cookie = login.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = get_with(&app, "/nodes", &[(header::COOKIE.as_str(), &pair)]).await;
    assert_eq!(with_cookie.status, StatusCode::OK);

    // A link with the token logs in and drops it from the address.
    let link = get(&app, &format!("/dead?handler=dash.a&token={token}")).await;
    assert_eq!(link.status, StatusCode::SEE_OTHER);
    assert_eq!(link.location(), "/dead?handler=dash.a");
    assert!(link.headers.contains_key(header::SET_COOKIE));
    // A token also opens a dashboard to other hosts.
    let remote = get_with(
        &app,
        "/",
        &[
            (header::HOST.as_str(), "ops.example.com"),
            (header::AUTHORIZATION.as_str(), &format!("Bearer {token}")),
        ],
    )
    .await;
    assert_eq!(remote.status, StatusCode::OK);
}

#[tokio::test]
async fn without_a_token_only_local_requests_get_in() {
    let (db, _, _) = db_with_handlers().await;
    let app = app(&db, DashboardOptions::new());
    for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080"] {
        let page = get_with(&app, "/", &[(header::HOST.as_str(), host)]).await;
        assert_eq!(page.status, StatusCode::OK, "{host}");
    }
    // A page of another site that resolves its name to 127.0.0.1 (DNS rebinding).
    let rebound = get_with(&app, "/", &[(header::HOST.as_str(), "evil.example:8080")]).await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN);
    assert!(rebound.body.contains("localhost only"), "{}", rebound.body);

    let error = dashboard::router(db.store.clone(), DashboardOptions::new().token("short"))
        .expect_err("a short token is refused");
    assert!(
        error.to_string().contains("at least 16 characters"),
        "{error}"
    );
    let refused = dashboard::serve(
        db.store.clone(),
        "0.0.0.0:0".parse().unwrap(),
        DashboardOptions::new(),
        async {},
    )
    .await
    .expect_err("no public address without a token");
    assert!(refused.to_string().contains("without a token"), "{refused}");
}

#[tokio::test]
async fn nothing_secret_is_shown() {
    let (db, _, _) = db_with_handlers().await;
    let url = db.url().await;
    let app = app(&db, DashboardOptions::new());
    for path in ["/", "/nodes", "/projections", "/dead"] {
        let page = get(&app, path).await;
        assert!(!page.body.contains(&url), "{path} shows the database url");
        assert!(!page.body.contains("postgres://"), "{path}: {}", page.body);
    }
}
