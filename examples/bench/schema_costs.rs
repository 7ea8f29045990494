//! What the schema's guarantees cost, each measured on and off in the same run: numbering commits
//! for the log's causal order (issue #12 item 1), and the foreign keys of `deliveries` (item 15,
//! dropped; measured by adding them back). And the projection latency that commit order buys:
//! with a transaction open elsewhere, a reader by transaction id waits for it; ours does not.

use std::time::{Duration, Instant};

use osa_events::__private::sql::PUBLISH_SQL;
use osa_events::store::ProjectionStore;
use osa_events_fixtures::pg::TestDatabase;
use sqlx::PgPool;

use super::handlers::Job;
use super::report::{Row, median, percentile};
use super::scenarios::BoxError;
use super::{Bench, baseline};

/// Turns the commit numbering off in a bench database: no commit row, no trigger, no lock. What
/// publishing cost before commit order.
const COMMIT_ORDER_OFF_SQL: &str = r#"
alter table osa_events.events alter column commit_id drop not null;
alter table osa_events.events alter column commit_id drop default;
alter table osa_events.commits disable trigger commits_sequenced_at_commit;
"#;

/// The foreign keys `deliveries` had before they were dropped, to measure what they cost.
const FOREIGN_KEYS_ON_SQL: &str = r#"
alter table osa_events.deliveries
    add foreign key (subscription_id) references osa_events.subscriptions (id) on delete cascade,
    add foreign key (event_position) references osa_events.events (position) on delete cascade;
"#;

/// The publish statement without the commit row (for [`COMMIT_ORDER_OFF_SQL`]).
fn publish_sql_without_commit_order() -> String {
    let without = PUBLISH_SQL
        .replace(", commit_id, ordering_key)", ", ordering_key)")
        .replace(",\n           (select osa_events.current_commit())", "");
    assert!(
        !without.contains("commit"),
        "the bench's copy of the publish statement is out of date"
    );
    without
}

/// Publishes `count` events, `per_tx` per transaction, from `publishers` tasks with a connection
/// each, through `statement` (bound like `osa_events::publish_batch`); the events per second.
async fn publish_rate(
    url: &str,
    count: u64,
    per_tx: u64,
    publishers: u64,
    statement: &str,
) -> Result<f64, BoxError> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|publisher| {
            let url = url.to_owned();
            let statement = statement.to_owned();
            tokio::spawn(async move {
                let pool = PgPool::connect(&url).await?;
                let share = count / publishers;
                let (mut n, end) = (publisher * share, (publisher + 1) * share);
                while n < end {
                    let next = end.min(n + per_tx);
                    let mut tx = pool.begin().await?;
                    baseline::publish_jobs_through(&mut tx, &statement, n..next).await?;
                    tx.commit().await?;
                    n = next;
                }
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

impl Bench {
    /// Publishing with commit order on and off: 1 and 100 events per transaction, 1 and 8
    /// publishers, one subscription.
    pub(crate) async fn commit_order_cost(&self) -> Result<Vec<Row>, BoxError> {
        let mut rows = Vec::new();
        for per_tx in [1_u64, 100] {
            for publishers in [1_u64, 8] {
                let scenario = format!(
                    "publish {per_tx}/tx, {publishers} publisher(s), 1 subscription: commit order off (baseline) / on"
                );
                if !self.wants(&[&scenario]) {
                    continue;
                }
                let count = if per_tx == 1 {
                    self.plan.publish_single
                } else {
                    self.plan.publish_batched
                };
                let (mut offs, mut ons) = (Vec::new(), Vec::new());
                for _ in 0..self.plan.repetitions {
                    let (on, _) = self.fresh_publish_db(1).await?;
                    ons.push(publish_rate(on.url(), count, per_tx, publishers, PUBLISH_SQL).await?);
                    let (off, _) = self.fresh_publish_db(1).await?;
                    sqlx::raw_sql(COMMIT_ORDER_OFF_SQL)
                        .execute(off.pool())
                        .await?;
                    let statement = publish_sql_without_commit_order();
                    offs.push(
                        publish_rate(off.url(), count, per_tx, publishers, &statement).await?,
                    );
                }
                let row = Row {
                    scenario,
                    minimal: None,
                    own: Some(median(offs)),
                    osa: median(ons),
                    unit: "ev/s",
                };
                println!("{row}");
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Publishing 100 events per transaction to 1 and 100 subscriptions, with the old foreign
    /// keys of `deliveries` (baseline) and without them (as migrated now).
    pub(crate) async fn foreign_key_cost(&self) -> Result<Vec<Row>, BoxError> {
        let mut rows = Vec::new();
        for subscriptions in [1_usize, 100] {
            let scenario = format!(
                "publish 100/tx to {subscriptions} subscription(s): foreign keys on (baseline) / off"
            );
            if !self.wants(&[&scenario]) {
                continue;
            }
            // Every event reaches every subscription: fewer events for more fan-out.
            let count = self.plan.publish_batched / subscriptions as u64 * 2;
            let count = count.max(200) / 100 * 100;
            let (mut withs, mut withouts) = (Vec::new(), Vec::new());
            for _ in 0..self.plan.repetitions {
                let (with, _) = self.fresh_publish_db(subscriptions).await?;
                sqlx::raw_sql(FOREIGN_KEYS_ON_SQL)
                    .execute(with.pool())
                    .await?;
                withs.push(publish_rate(with.url(), count, 100, 1, PUBLISH_SQL).await?);
                let (without, _) = self.fresh_publish_db(subscriptions).await?;
                withouts.push(publish_rate(without.url(), count, 100, 1, PUBLISH_SQL).await?);
            }
            let row = Row {
                scenario,
                minimal: None,
                own: Some(median(withs)),
                osa: median(withouts),
                unit: "ev/s",
            };
            println!("{row}");
            rows.push(row);
        }
        Ok(rows)
    }

    /// How soon a projection reads an event, polling every 5 ms, while another transaction that
    /// has taken an id stays open for the whole measurement.
    pub(crate) async fn projection_latency_beside_a_long_transaction(
        &self,
    ) -> Result<Vec<Row>, BoxError> {
        const TYPES: &[&str] = &[<Job as osa_events::Event>::NAME];
        let names = ["p50", "p95", "max"].map(|label| {
            format!(
                "projection read latency {label}, poll 5 ms, another transaction open {} s ({} events)",
                self.plan.long_transaction.as_secs(),
                self.plan.latency_events
            )
        });
        if !self.wants(&names.each_ref().map(String::as_str)) {
            return Ok(Vec::new());
        }
        let (database, store) = self.fresh_publish_db(0).await?;
        let mut long = database.pool().begin().await?;
        sqlx::query("select pg_current_xact_id()")
            .execute(&mut *long)
            .await?;
        let held_since = Instant::now();
        let mut leadership = store
            .try_lead("bench.latency", "bench", Duration::ZERO)
            .await?
            .ok_or("somebody else leads the bench projection")?;
        let mut latencies = Vec::new();
        // Spread over the transaction's life, so it stays open at least `long_transaction`.
        let gap = self.plan.long_transaction / u32::try_from(self.plan.latency_events.max(1))?;
        for n in 0..self.plan.latency_events as u64 {
            tokio::time::sleep(gap).await;
            osa_events::publish(database.pool(), &Job::now(n)).await?;
            let published = Instant::now();
            loop {
                let batch = leadership.next_batch(TYPES, 10).await?;
                let read = !batch.events.is_empty();
                leadership.commit(batch.advance, batch.transaction).await?;
                if read {
                    break;
                }
                if published.elapsed() > Duration::from_secs(5) {
                    return Err("a projection did not read an event within 5 s".into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            latencies.push(published.elapsed());
        }
        let held = held_since.elapsed();
        long.rollback().await?;
        leadership.resign().await;
        println!(
            "  (the other transaction was open {:.1} s)",
            held.as_secs_f64()
        );
        let rows: Vec<Row> = [0.5, 0.95, 1.0]
            .into_iter()
            .zip(names)
            .map(|(fraction, scenario)| Row {
                scenario,
                minimal: None,
                own: None,
                osa: percentile(&latencies, fraction),
                unit: "ms",
            })
            .collect();
        for row in &rows {
            println!("{row}");
        }
        Ok(rows)
    }

    /// A fresh migrated database with `subscriptions` subscriptions of the bench's job type.
    async fn fresh_publish_db(
        &self,
        subscriptions: usize,
    ) -> Result<(TestDatabase, osa_events::PgStore), BoxError> {
        let database = TestDatabase::create_on(&self.admin_url).await?;
        let store = osa_events::PgStore::connect(database.url()).await?;
        store.migrate().await?;
        sqlx::query(
            "insert into osa_events.subscriptions (name, event_type) \
             select 'bench.sub.' || n, $1 from generate_series(1, $2) as n",
        )
        .bind(<Job as osa_events::Event>::NAME)
        .bind(i32::try_from(subscriptions)?)
        .execute(database.pool())
        .await?;
        Ok((database, store))
    }
}
