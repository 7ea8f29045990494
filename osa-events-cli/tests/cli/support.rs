//! A migrated database with subscriptions and dead letters made through the library, and the
//! CLI run on it as a process.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use osa_events::operations::{DeliveryQuery, DeliveryState, Operations, Selector, StartFrom};
use osa_events::store::{ClaimRequest, Failure, Fence, Store, Subscription, SubscriptionId};
use osa_events::{Event, Outgoing, PgStore};
use osa_events_fixtures::pg::TestDatabase;
use serde::{Deserialize, Serialize};

/// The event every test publishes.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "cli.job")]
pub(crate) struct Job {
    pub(crate) n: u32,
}

/// A fresh, migrated database.
pub(crate) struct Scene {
    pub(crate) store: PgStore,
    database: TestDatabase,
}

impl Scene {
    /// A fresh database with the osa-events schema.
    pub(crate) async fn new() -> Scene {
        let scene = Scene::unmigrated().await;
        scene.store.migrate().await.expect("migrations apply");
        scene
    }

    /// A fresh database without the schema.
    pub(crate) async fn unmigrated() -> Scene {
        let database = TestDatabase::create()
            .await
            .unwrap_or_else(|error| panic!("no test database: {error}"));
        let store = PgStore::from_pool(database.pool().clone());
        Scene { store, database }
    }

    /// The database's url, for the CLI.
    pub(crate) fn url(&self) -> &str {
        self.database.url()
    }

    /// The operations API, to check what a command did.
    pub(crate) fn ops(&self) -> &dyn Operations {
        self.store.operations().expect("PgStore offers operations")
    }

    /// Registers a handler `name` for [`Job`].
    pub(crate) async fn subscribe(&self, name: &str) -> SubscriptionId {
        let subscription = Subscription {
            name: name.into(),
            event_type: Job::NAME.into(),
            routing_key: None,
            config: serde_json::json!({}),
            revision: 1,
            start_from: StartFrom::Now,
            ordered: None,
        };
        self.store
            .register(&[subscription])
            .await
            .expect("register")[0]
    }

    /// Publishes `Job`s numbered `range`.
    pub(crate) async fn publish(&self, range: std::ops::Range<u32>) {
        let batch: Vec<Outgoing> = range
            .map(|n| Outgoing::new(&Job { n }).expect("an outgoing job"))
            .collect();
        osa_events::publish_batch(self.store.pool(), &batch)
            .await
            .expect("publish");
    }

    async fn claim(&self, subscription: SubscriptionId, limit: u32) -> Vec<Fence> {
        self.store
            .claim(ClaimRequest {
                subscription,
                limit,
                claim_timeout: Duration::from_secs(60),
                worker: "cli-test",
            })
            .await
            .expect("claim")
            .iter()
            .map(|delivery| delivery.fence)
            .collect()
    }

    /// Claims up to `limit` deliveries of `subscription` and dead-letters them with `error`.
    pub(crate) async fn kill(&self, subscription: SubscriptionId, limit: u32, error: &str) {
        let failures: Vec<Failure> = self
            .claim(subscription, limit)
            .await
            .into_iter()
            .map(|fence| Failure {
                fence,
                error: error.to_owned(),
                retry_in: None,
            })
            .collect();
        self.store
            .fail(subscription, &failures)
            .await
            .expect("fail");
    }

    /// Claims up to `limit` deliveries of `subscription` and completes them.
    pub(crate) async fn handle(&self, subscription: SubscriptionId, limit: u32) {
        let done = self.claim(subscription, limit).await;
        self.store
            .complete(subscription, &done)
            .await
            .expect("complete");
    }

    /// How many deliveries of `handler` (every handler: `None`) are in `state`.
    pub(crate) async fn count(&self, handler: Option<&str>, state: DeliveryState) -> usize {
        let mut query = DeliveryQuery {
            selector: Selector {
                handler: handler.map(str::to_owned),
                ..Selector::default()
            },
            state: Some(state),
            after: None,
            page_size: 1000,
        };
        let mut count = 0;
        loop {
            let page = self.ops().deliveries(&query).await.expect("deliveries");
            count += page.deliveries.len();
            match page.next {
                Some(next) => query.after = Some(next),
                None => return count,
            }
        }
    }

    /// Runs `osa-events args…` on this database.
    pub(crate) fn cli(&self, args: &[&str]) -> Run {
        run(args, &[("DATABASE_URL", self.url())])
    }
}

/// What a run of the CLI printed, and how it ended.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts that it exited with `code`; returns it for more checks.
    #[track_caller]
    pub(crate) fn exits(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code of a run that printed {self:#?}");
        self
    }

    /// The stdout as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {}", self.stdout))
    }
}

/// Runs `osa-events args…` with `env` (and `NO_COLOR`; nothing inherited of `DATABASE_URL`),
/// stdin closed: not a terminal, as in a script.
pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_osa-events"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the osa-events binary runs");
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}
