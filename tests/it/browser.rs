//! The browser fixture, end to end: a headless Chromium of each test's own (a throwaway
//! chromedriver, `osa_events_fixtures::browser`) against a tiny page served with axum. It runs
//! the page's script with JavaScript on and not with it off, posts a form with JavaScript off,
//! and saves a screenshot. Under `CI=true` a test fails when no browser can be had; elsewhere it
//! skips with a note.
//!
//! The screenshot goes to `<target dir>/screenshots/smoke-fixture.png`. A run with
//! `OSA_EVENTS_UPDATE_SCREENSHOTS=1` (which updates the dashboard's screenshots in the docs)
//! skips that test, so the docs get no picture of this page.

use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use fantoccini::{Client, Locator};
use osa_events_fixtures::browser::{Javascript, browser_or_skip, save_screenshot, wait_for_text};
use tokio::net::TcpListener;

/// The page: its script turns `off` into `on`; its form posts a word back to `/`.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>browser fixture</title></head>
<body>
  <h1>Browser fixture</h1>
  <p>JavaScript is <span id="js">off</span>.</p>
  <script>document.getElementById("js").textContent = "on";</script>
  <form method="post" action="/">
    <input name="word" value="hello">
    <button type="submit">Send</button>
  </form>
</body>
</html>
"#;

/// How long a test waits for the page to show something.
const WAIT: Duration = Duration::from_secs(10);

/// Serves the page on a free port of 127.0.0.1 until the test's runtime ends; returns its url.
async fn serve() -> String {
    let app = Router::new().route("/", get(page).post(posted));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The answer to the form: the body it posted (`word=hello`), form-encoded as it came.
async fn posted(body: String) -> Html<String> {
    Html(format!(
        "<!doctype html><title>posted</title><p id=\"posted\">the server got {body}</p>"
    ))
}

/// Opens `url` in `client` and waits for the heading, so the page has loaded.
async fn open(client: &Client, url: &str) {
    client.goto(url).await.unwrap();
    wait_for_text(client, "h1", "Browser fixture", WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn scripts_run_with_javascript_on_and_not_with_it_off() {
    let Some(browser) = browser_or_skip().await else {
        return;
    };
    let url = serve().await;
    let on = browser.session(Javascript::On).await.unwrap();
    let off = browser.session(Javascript::Off).await.unwrap();

    open(&on, &url).await;
    open(&off, &url).await;

    wait_for_text(&on, "#js", "on", WAIT).await.unwrap();
    assert_eq!(
        off.find(Locator::Css("#js"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "off",
        "the page's script ran with JavaScript off"
    );
}

#[tokio::test]
async fn a_form_posts_with_javascript_off() {
    let Some(browser) = browser_or_skip().await else {
        return;
    };
    let url = serve().await;
    let client = browser.session(Javascript::Off).await.unwrap();
    open(&client, &url).await;

    client
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    let posted = wait_for_text(&client, "#posted", "the server got", WAIT)
        .await
        .unwrap();
    assert_eq!(posted, "the server got word=hello");
    assert_eq!(client.title().await.unwrap(), "posted");
}

#[tokio::test]
async fn save_screenshot_writes_a_png_to_the_target_dir() {
    if std::env::var("OSA_EVENTS_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        eprintln!(
            "skipping: OSA_EVENTS_UPDATE_SCREENSHOTS=1 would put this test's picture in the docs"
        );
        return;
    }
    let Some(browser) = browser_or_skip().await else {
        return;
    };
    let url = serve().await;
    let client = browser.session(Javascript::On).await.unwrap();
    open(&client, &url).await;
    wait_for_text(&client, "#js", "on", WAIT).await.unwrap();

    let path = save_screenshot(&client, "smoke-fixture").await.unwrap();

    assert!(
        path.ends_with("screenshots/smoke-fixture.png"),
        "{}",
        path.display()
    );
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        path.display()
    );
}
