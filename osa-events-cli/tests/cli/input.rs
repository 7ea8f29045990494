//! Bad input: the command line, the url, names that do not exist.

use crate::support::{Scene, run};

#[test]
fn a_malformed_since_names_the_flag_and_the_expected_form() {
    let out = run(
        &["dead", "list", "--since", "yesterday"],
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
    )
    .exits(2);
    assert!(out.stderr.contains("--since"), "{}", out.stderr);
    assert!(out.stderr.contains("RFC 3339"), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
}

#[test]
fn a_bare_purge_asks_for_a_filter_or_all_before_connecting() {
    // No database at all: the command line is refused first.
    let out = run(&["dead", "purge"], &[]).exits(2);
    assert!(out.stderr.contains("--all"), "{}", out.stderr);
    let out = run(&["dead", "purge", "--all", "--handler", "x"], &[]).exits(2);
    assert!(out.stderr.contains("--all"), "{}", out.stderr);
}

#[test]
fn without_a_url_it_says_where_to_give_one() {
    let out = run(&["status"], &[]).exits(2);
    assert!(out.stderr.contains("DATABASE_URL"), "{}", out.stderr);
}

#[test]
fn a_refused_connection_says_why_without_the_password() {
    let out = run(
        &[
            "status",
            "--database-url",
            "postgres://app:hunter2@127.0.0.1:1/app",
        ],
        &[],
    )
    .exits(1);
    assert!(
        out.stderr
            .contains("cannot connect to postgres://app:***@127.0.0.1:1/app"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("refused"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("hunter2") && !out.stdout.contains("hunter2"),
        "{out:?}"
    );
}

#[tokio::test]
async fn an_unknown_database_says_so_without_the_password() {
    let scene = Scene::new().await;
    // The test server's address and user, a password, and a database that does not exist.
    let (base, _) = scene.url().rsplit_once('/').expect("a url with a database");
    let (scheme, rest) = base.split_once("://").expect("a scheme");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://postgres:s3cr%40t@{rest}/osa_no_such_database");
    let out = run(&["status"], &[("DATABASE_URL", &url)]).exits(1);
    assert!(out.stderr.contains("postgres:***@"), "{}", out.stderr);
    assert!(!out.stderr.contains("s3cr"), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
}

#[tokio::test]
async fn an_unknown_handler_lists_the_known_names() {
    let scene = Scene::new().await;
    scene.subscribe("billing.invoice").await;
    scene.subscribe("search.index").await;
    for args in [
        &["pause", "billing.invoic"][..],
        &["dead", "list", "--handler", "billing.invoic"],
        &["dead", "show", "billing.invoic", "1"],
        &["dead", "retry", "--handler", "billing.invoic", "--yes"],
        &["replay", "billing.invoic", "--yes"],
        &["retire", "billing.invoic", "--yes"],
    ] {
        let out = scene.cli(args).exits(1);
        assert!(
            out.stderr
                .contains("no handler is named `billing.invoic` (known handlers: billing.invoice, search.index)"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn an_unmigrated_database_points_at_migrate() {
    let scene = Scene::unmigrated().await;
    let out = scene.cli(&["status"]).exits(1);
    assert!(out.stderr.contains("osa-events migrate"), "{}", out.stderr);
    scene.cli(&["migrate"]).exits(0);
    scene.cli(&["status"]).exits(0);
}

#[test]
fn a_position_without_a_handler_names_the_missing_flag() {
    let out = run(&["dead", "retry", "--position", "3"], &[]).exits(2);
    assert!(out.stderr.contains("--handler <HANDLER>"), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
}
