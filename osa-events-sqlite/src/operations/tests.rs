//! The plans of the statements that read deliveries: each reaches them through an index or the
//! primary key, never by reading the whole table, whatever the number of rows (SQLite plans
//! these without statistics: nobody runs `ANALYZE` on the file).

use crate::SqliteStore;

/// Every statement of the operations that reads `deliveries` (as `d`, or by its name).
const STATEMENTS: &[(&str, &str)] = &[
    ("status", super::status::STATUS_SQL),
    ("list", super::deliveries::LIST_SQL),
    ("show", super::deliveries::SHOW_SQL),
    ("retry", super::deliveries::RETRY_SQL),
    ("purge", super::deliveries::PURGE_SQL),
    ("cancel", super::deliveries::CANCEL_SQL),
    ("copy", super::replay::COPY_SQL),
    ("backfill open", super::backfill::OPEN_SQL),
    ("prune dead", super::prune::DEAD_SQL),
    ("prune events", super::prune::DELETE_SQL),
    ("subscriptions", super::lifecycle::SUBSCRIPTIONS_SQL),
    ("retire", super::lifecycle::DELETE_WORK_SQL),
];

/// The lines of the plan of `sql`, as `explain query plan` gives them.
async fn plan(store: &SqliteStore, sql: &str) -> Vec<String> {
    let rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("explain query plan {sql}")))
            .fetch_all(store.pool())
            .await
            .expect("a statement of the operations plans");
    rows.into_iter().map(|row| row.3).collect()
}

#[tokio::test]
async fn no_statement_reads_every_delivery() {
    let store = SqliteStore::temporary().await.expect("a temporary file");
    store.migrate().await.expect("the migrations run");
    for (name, sql) in STATEMENTS {
        let plan = plan(&store, sql).await;
        let scans: Vec<&String> = plan
            .iter()
            .filter(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some("SCAN") && matches!(words.next(), Some("d" | "deliveries"))
            })
            .collect();
        assert!(scans.is_empty(), "{name} reads every delivery: {plan:#?}");
    }
}

/// The activity history's delete and read are ranges of its key (which leads with the minute),
/// so neither reads the whole table.
#[tokio::test]
async fn the_activity_statements_search_the_key() {
    let store = SqliteStore::temporary().await.expect("a temporary file");
    store.migrate().await.expect("the migrations run");
    for (name, sql) in [
        ("forget", super::activity::FORGET_SQL),
        ("list", super::activity::LIST_SQL),
    ] {
        let plan = plan(&store, sql).await;
        assert!(
            plan.iter()
                .any(|line| line.starts_with("SEARCH activity USING INDEX")
                    && line.contains("(minute")),
            "{name} does not search the key: {plan:#?}"
        );
    }
}
