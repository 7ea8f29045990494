//! 6. Security: no SQL built from strings, hostile strings stored as data, passwords never
//!    printed, and workers and publishers that run with the documented minimal grants.

use std::time::Duration;

use osa_events::{ConnectRetry, Event, Outgoing, PgStore, Resources, Runtime};

use osa_events::store::{ClaimRequest, Failure, Store, Subscription};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

use osa_events_suite::chaos_events::Keyed;

use super::{Scene, count_lines, eventually, report, serial};

/// The keyed events the documented-grants test sends through `chaos.ordered`: 5 keys.
const KEYED: i64 = 50;

/// SQL metacharacters, quoting, placeholders, LIKE wildcards, a backslash and non-ASCII text.
const HOSTILE: &str = r#"x'); drop table osa_events.events; -- "quoted" $1 %_ \' ü✓"#;

/// An event whose registered name is hostile (a hand-written impl: the derive would refuse it).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Hostile {
    text: String,
}

impl Event for Hostile {
    const NAME: &'static str = "hostile'; delete from osa_events.subscriptions; --";
    const VERSION: u32 = 1;
}

#[test]
fn the_runtime_builds_no_sql_from_strings() {
    // sqlx 0.9 accepts only `&'static str` as SQL text, unless the caller wraps a string in
    // `AssertSqlSafe` or builds one with `raw_sql` or `QueryBuilder`. None of them appears in
    // the runtime, so every statement it sends is a constant, and every value is a parameter.
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = 0;
    let mut offenders = Vec::new();
    let mut stack: Vec<_> = [
        "osa-events/src",
        "osa-events-core/src",
        "osa-events-postgres/src",
    ]
    .iter()
    .map(|crate_src| workspace.join(crate_src))
    .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a crate's src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files += 1;
                let source = std::fs::read_to_string(&path).expect("read a source file");
                // `PgUnnamed` forwards sqlx's executor methods, whose signatures name `SqlStr`;
                // it builds no SQL (the other needles still apply to it).
                let forwards = path.ends_with("osa-events-postgres/src/store/unnamed.rs");
                for needle in ["AssertSqlSafe", "raw_sql", "QueryBuilder", "SqlStr"] {
                    if source.contains(needle) && !(forwards && needle == "SqlStr") {
                        offenders.push(format!("{}: {needle}", path.display()));
                    }
                }
            }
        }
    }
    assert!(files > 10, "found only {files} source files");
    assert!(
        offenders.is_empty(),
        "dynamic SQL in the runtime: {offenders:?}"
    );
}

#[tokio::test]
async fn hostile_names_keys_and_errors_are_stored_as_data() {
    let scene = Scene::new("security_sql").await;
    let store = PgStore::from_pool(scene.pool.clone());
    let subscriptions = [
        Subscription {
            name: HOSTILE.to_owned(),
            event_type: Hostile::NAME.to_owned(),
            routing_key: Some(HOSTILE.to_owned()),
            config: serde_json::json!({ "note": HOSTILE }),
            revision: 1,
            start_from: Default::default(),
            ordered: None,
        },
        // Filters that would match everything if they were pasted into SQL.
        Subscription {
            name: "widened' or '1'='1".to_owned(),
            event_type: Hostile::NAME.to_owned(),
            routing_key: Some("x' or '1'='1".to_owned()),
            config: serde_json::json!({}),
            revision: 1,
            start_from: Default::default(),
            ordered: None,
        },
        Subscription {
            name: "wildcard%".to_owned(),
            event_type: Hostile::NAME.to_owned(),
            routing_key: Some("%".to_owned()),
            config: serde_json::json!({}),
            revision: 1,
            start_from: Default::default(),
            ordered: None,
        },
    ];
    let ids = store.register(&subscriptions).await.expect("register");

    let event = Hostile {
        text: HOSTILE.to_owned(),
    };
    let outgoing = Outgoing::new(&event)
        .unwrap()
        .with_routing_key(HOSTILE)
        .with_metadata(osa_events::Metadata::new().with_extra(HOSTILE, HOSTILE))
        .unwrap();
    let published = osa_events::publish_batch(&scene.pool, std::slice::from_ref(&outgoing))
        .await
        .expect("publish");
    assert_eq!(published.events, 1);

    let claim = |subscription| ClaimRequest {
        subscription,
        limit: 10,
        claim_timeout: Duration::from_secs(60),
        worker: HOSTILE,
    };
    let claimed = store.claim(claim(ids[0])).await.expect("claim");
    assert_eq!(claimed.len(), 1, "the hostile routing key matched itself");
    let delivery = &claimed[0];
    assert_eq!(delivery.event_id, outgoing.id());
    assert_eq!(delivery.event_type, Hostile::NAME);
    assert_eq!(delivery.routing_key.as_deref(), Some(HOSTILE));
    assert_eq!(
        serde_json::from_str::<Hostile>(&delivery.payload).unwrap(),
        event
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&delivery.metadata).unwrap()[HOSTILE],
        HOSTILE
    );
    for other in &ids[1..] {
        assert!(
            store.claim(claim(*other)).await.unwrap().is_empty(),
            "a filter was read as SQL or as a pattern"
        );
    }
    let failed = store
        .fail(
            ids[0],
            &[Failure {
                fence: delivery.fence,
                error: HOSTILE.to_owned(),
                retry_in: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(failed, 1);

    let stored: (String, String, String, String, String) = sqlx::query_as(
        "select s.name, s.event_type, s.routing_key, d.claimed_by is null, d.last_error \
         from osa_events.subscriptions s join osa_events.deliveries d on d.subscription_id = s.id \
         where s.id = $1",
    )
    .bind(ids[0].0)
    .fetch_one(&scene.pool)
    .await
    .map(
        |(name, event_type, key, _, error): (String, String, String, bool, String)| {
            (name, event_type, key, String::new(), error)
        },
    )
    .unwrap();
    assert_eq!(
        stored,
        (
            HOSTILE.to_owned(),
            Hostile::NAME.to_owned(),
            HOSTILE.to_owned(),
            String::new(),
            HOSTILE.to_owned()
        )
    );
    let (events, subscriptions): (i64, i64) = sqlx::query_as(
        "select (select count(*) from osa_events.events), (select count(*) from osa_events.subscriptions)",
    )
    .fetch_one(&scene.pool)
    .await
    .expect("the tables are still there");
    assert_eq!((events, subscriptions), (1, 3));
}

const PASSWORD: &str = "s3cret-Pa55w0rd";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show_in_errors_or_debug_output() {
    let scene = Scene::new("security_debug").await;
    let live = with_credentials(scene.url(), "postgres", PASSWORD);
    let urls = [
        // Nothing listens (refused at once: no wait, see below).
        format!("postgres://u:{PASSWORD}@127.0.0.1:1/db?sslmode=disable&application_name=app"),
        // Malformed.
        format!("postgres://u:{PASSWORD}@127.0.0.1:notaport/db"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:1/db?sslmode=bogus"),
        format!("postgres://u:{PASSWORD}@[::1/db"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:1/db?statement_cache_capacity=many"),
        format!("u:{PASSWORD}@127.0.0.1:1/db"),
        // Refused by the server: an unknown role, an unknown database.
        with_credentials(scene.url(), "osa_no_such_role", PASSWORD),
        live.replace(scene.database_name(), "osa_no_such_database"),
    ];
    let attempts: Vec<_> = urls
        .iter()
        .cloned()
        .map(|url| {
            tokio::spawn(async move {
                // Without `connect`'s wait for a server to come up: the errors are the point.
                let connected = PgStore::connect_with(&url, ConnectRetry::none()).await;
                (connected.map(drop), url)
            })
        })
        .collect();
    let mut leaks = Vec::new();
    for attempt in attempts {
        let (result, url) = attempt.await.expect("a connect task");
        let error = result.expect_err(&url);
        for (form, text) in rendered(&error) {
            if text.contains(PASSWORD) {
                leaks.push(format!("{form} of the error for {url}: {text}"));
            }
        }
    }

    // A live store whose url carries a password (trust authentication ignores it).
    let store = PgStore::connect(&live)
        .await
        .expect("connect with a password in the url");
    let builder = Runtime::builder(store.clone()).resources(Resources::new());
    for (what, text) in [
        ("PgStore", format!("{store:?}")),
        ("RuntimeBuilder", format!("{builder:?}")),
        ("the PgPool of PgStore::pool", format!("{:?}", store.pool())),
    ] {
        if text.contains(PASSWORD) {
            leaks.push(format!("{what}: {text}"));
        }
    }
    report(
        "security_debug",
        &[
            ("urls_checked", (urls.len() + 1).to_string()),
            ("leaks", leaks.len().to_string()),
        ],
    );
    assert!(
        leaks.is_empty(),
        "the password leaked:\n{}",
        leaks.join("\n")
    );
}

/// `Display`, `Debug` and the `Display` of every source of an error.
fn rendered(error: &(dyn std::error::Error + 'static)) -> Vec<(&'static str, String)> {
    let mut forms = vec![
        ("Display", error.to_string()),
        ("Debug", format!("{error:?}")),
    ];
    let mut source = error.source();
    while let Some(cause) = source {
        forms.push(("a source's Display", cause.to_string()));
        source = cause.source();
    }
    forms
}

/// `url` with its user and password replaced.
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a url with a scheme");
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = match rest[..host_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}://{user}:{password}@{host}")
}

/// Every operation of the operations API, as a role with the documented operator grants.
async fn operate_with_the_documented_grants(store: &PgStore) {
    use osa_events::operations::{Prune, Replay, RetireMode, Selector};
    use osa_events::store::Store;
    let operations = store.operations().expect("PgStore offers operations");
    let status = operations
        .status()
        .await
        .expect("the operator reads the status");
    assert!(status.handler("chaos.ledger").is_some());
    operations
        .deliveries(&Default::default())
        .await
        .expect("the operator lists deliveries");
    operations
        .retry_dead(&Selector::default())
        .await
        .expect("the operator retries");
    operations
        .purge_dead(&Selector::default())
        .await
        .expect("the operator purges");
    operations
        .cancel_pending(&Selector::handler("chaos.slow"))
        .await
        .expect("the operator cancels");
    assert!(
        operations
            .pause("chaos.slow")
            .await
            .expect("the operator pauses")
    );
    assert!(
        operations
            .resume("chaos.slow")
            .await
            .expect("the operator resumes")
    );
    operations
        .replay(&Replay::everything("chaos.ledger"), 0, None)
        .await
        .expect("the operator replays");
    operations
        .prune(&Prune::older_than(Duration::ZERO), 0)
        .await
        .expect("the operator prunes");
    operations
        .retire("chaos.slow", RetireMode::EvenIfRunning)
        .await
        .expect("the operator retires");
    operations.nodes().await.expect("the operator lists nodes");
    operations
        .activity(std::time::SystemTime::UNIX_EPOCH)
        .await
        .expect("the operator reads the activity history");
}

/// The documented SQL block labelled `-- role: <label>` in docs/privileges.md.
fn documented(label: &str) -> String {
    const DOC: &str = include_str!("../../../docs/privileges.md");
    let marker = format!("```sql\n-- role: {label}\n");
    let start = DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/privileges.md has no block `-- role: {label}`"))
        + "```sql\n".len();
    let end = start + DOC[start..].find("```").expect("a closed block");
    DOC[start..end].to_owned()
}

/// Cluster-wide roles for one test, dropped when this is dropped: after the test database (declare
/// it first), so that nothing in any database depends on them any more.
struct Roles {
    owner: String,
    worker: String,
    publisher: String,
    operator: String,
}

impl Roles {
    fn new() -> Roles {
        let tag = &Uuid::new_v4().simple().to_string()[..10];
        Roles {
            owner: format!("osa_owner_{tag}"),
            worker: format!("osa_worker_{tag}"),
            publisher: format!("osa_publisher_{tag}"),
            operator: format!("osa_operator_{tag}"),
        }
    }

    /// A documented block with this test's names.
    fn sql(&self, label: &str, database: &str) -> String {
        documented(label)
            .replace("osa_owner", &self.owner)
            .replace("osa_worker", &self.worker)
            .replace("osa_publisher", &self.publisher)
            .replace("osa_operator", &self.operator)
            .replace("'change-me'", &format!("'{PASSWORD}'"))
            .replace("database app ", &format!("database \"{database}\" "))
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let names = [
            self.owner.clone(),
            self.worker.clone(),
            self.publisher.clone(),
            self.operator.clone(),
        ];
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let url = osa_events_fixtures::pg::require_database_url().ok()?;
                let mut admin = PgConnection::connect(&url).await.ok()?;
                for name in names {
                    let drop = format!("drop role if exists \"{name}\"");
                    if let Err(error) = sqlx::raw_sql(AssertSqlSafe(drop)).execute(&mut admin).await
                    {
                        eprintln!("could not drop role {name}: {error}");
                    }
                }
                Some(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the test roles");
        }
    }
}

async fn execute(conn: &mut PgConnection, sql: String) {
    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(conn)
        .await
        .unwrap_or_else(|error| panic!("{error}:\n{sql}"));
}

/// Asserts that `sql` fails for lack of privilege.
async fn denied(conn: &mut PgConnection, who: &str, sql: &'static str) {
    let error = sqlx::query(sql)
        .execute(conn)
        .await
        .expect_err(&format!("{who} may not run: {sql}"));
    let code = error
        .as_database_error()
        .and_then(|error| error.code().map(|code| code.into_owned()));
    assert_eq!(code.as_deref(), Some("42501"), "{who}: {sql}: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_publishers_run_with_the_documented_grants() {
    let roles = Roles::new(); // dropped after the database
    let _turn = serial().await;
    let scene = Scene::unmigrated("security_roles").await;
    let database = scene.database_name().to_owned();
    let mut admin = PgConnection::connect(scene.url())
        .await
        .expect("connect as the superuser");

    // The owner migrates.
    execute(&mut admin, roles.sql("owner", &database)).await;
    let owner_url = with_credentials(scene.url(), &roles.owner, PASSWORD);
    PgStore::connect(&owner_url)
        .await
        .expect("the owner connects")
        .migrate()
        .await
        .expect("the owner migrates");
    let owner: String = sqlx::query_scalar("select tableowner::text from pg_tables where schemaname = 'osa_events' and tablename = 'deliveries'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(owner, roles.owner);

    // Workers and publishers get exactly the documented grants, plus the application's table.
    scene.create_ledger().await;
    for label in ["worker", "worker (projections)", "publisher", "operator"] {
        execute(&mut admin, roles.sql(label, &database)).await;
    }
    execute(
        &mut admin,
        format!("grant insert on chaos_ledger to \"{}\"", roles.worker),
    )
    .await;

    let worker_url = with_credentials(scene.url(), &roles.worker, PASSWORD);
    let publisher_url = with_credentials(scene.url(), &roles.publisher, PASSWORD);
    let mut as_worker = PgConnection::connect(&worker_url)
        .await
        .expect("the worker connects");
    denied(
        &mut as_worker,
        "a worker",
        "create table osa_events.intruder (x int)",
    )
    .await;
    denied(&mut as_worker, "a worker", "delete from osa_events.events").await;
    denied(
        &mut as_worker,
        "a worker",
        "insert into osa_events.events (id, event_type, event_version, payload) \
         values (gen_random_uuid(), 'forged', 1, '{}')",
    )
    .await;
    let mut as_publisher = PgConnection::connect(&publisher_url)
        .await
        .expect("the publisher connects");
    denied(
        &mut as_publisher,
        "a publisher",
        "update osa_events.deliveries set attempts = 0",
    )
    .await;
    denied(
        &mut as_publisher,
        "a publisher",
        "delete from osa_events.events",
    )
    .await;
    denied(
        &mut as_publisher,
        "a publisher",
        "select * from osa_events.deliveries",
    )
    .await;
    assert!(
        PgStore::connect(&worker_url)
            .await
            .unwrap()
            .migrate()
            .await
            .is_err(),
        "a worker cannot migrate"
    );

    // Real processes under those roles, with the password in their urls.
    let events = 500;
    let mut worker = scene.worker_at(
        &worker_url,
        "worker",
        "chaos.ledger,chaos.tx,chaos.slow,chaos.ordered",
        &[],
    );
    scene
        .subscribed(&["chaos.ledger", "chaos.tx", "chaos.slow", "chaos.ordered"])
        .await;
    // Keyed events for the ordered handler, published as the publisher role: the keys'
    // bookkeeping (its triggers) needs no grant beyond the documented ones, for the publisher's
    // insert nor for the worker's completions and retries.
    let keyed: Vec<Outgoing> = (0..KEYED)
        .map(|n| {
            Outgoing::new(&Keyed {
                key: n % 5,
                n: n / 5,
            })
            .expect("a keyed event")
        })
        .collect();
    let publisher_pool = sqlx::PgPool::connect(&publisher_url)
        .await
        .expect("the publisher connects");
    osa_events::publish_batch(&publisher_pool, &keyed)
        .await
        .expect("the publisher role publishes keyed events");
    let mut publisher = scene.publisher_at(
        &publisher_url,
        "publisher",
        &[
            "--events",
            &events.to_string(),
            "--publishers",
            "4",
            "--batch",
            "20",
        ],
    );
    let status = publisher.exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "the publisher exited with {status}:\n{}",
        publisher.stderr_text()
    );
    eventually(
        Duration::from_secs(60),
        "every event handled by each handler",
        || async {
            let mut all = true;
            for handler in ["chaos.ledger", "chaos.tx", "chaos.slow"] {
                all &= scene.ledger(handler).await.1 == events;
            }
            all && scene.ledger("chaos.ordered").await.1 == KEYED
        },
    )
    .await;
    scene
        .drained(Duration::from_secs(30), "as the worker role")
        .await;
    let (status, _) = worker.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "the worker exited with {status}");
    // Its heartbeats and its stop added its counts to the activity history, as the worker role
    // (a delivery handled twice counts twice).
    let handled: i64 = sqlx::query_scalar(
        "select coalesce(sum(handled), 0)::int8 from osa_events.activity where kind = 'handler'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(
        handled >= 3 * events,
        "the worker recorded {handled} completions of 3 × {events}"
    );

    // An operator runs every operation with the documented grants.
    let operator_url = with_credentials(scene.url(), &roles.operator, PASSWORD);
    let operator = PgStore::connect(&operator_url)
        .await
        .expect("the operator connects");
    operate_with_the_documented_grants(&operator).await;

    // A process that cannot connect says so, without the password.
    let mut unreachable = scene.publisher_at(
        &format!(
            "postgres://{}:{PASSWORD}@127.0.0.1:1/{database}",
            roles.publisher
        ),
        "unreachable",
        &["--events", "1", "--connect-for-ms", "500"],
    );
    let status = unreachable.exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(1),
        "an unreachable database is a start-up error"
    );

    let logs = [
        ("worker", worker.stderr_text() + &worker.stdout_text()),
        (
            "publisher",
            publisher.stderr_text() + &publisher.stdout_text(),
        ),
        (
            "unreachable",
            unreachable.stderr_text() + &unreachable.stdout_text(),
        ),
    ];
    for (name, log) in &logs {
        assert!(
            !log.contains(PASSWORD),
            "{name} logged the password:\n{log}"
        );
        assert!(
            !log.contains("permission denied"),
            "{name} lacked a privilege:\n{log}"
        );
    }
    assert!(
        count_lines(&logs[2].1, &["cannot connect to the database"]) > 0,
        "the unreachable publisher said why:\n{}",
        logs[2].1
    );
    report(
        "security_roles",
        &[
            ("events", events.to_string()),
            ("worker_role_handlers", "3".to_owned()),
            ("denied_statements", "6".to_owned()),
            ("password_in_logs", "0".to_owned()),
        ],
    );
    drop(scene);
    drop(roles);
}

/// A regression test (RELIABILITY.md, "Issues these tests found"): `PgStore::migrate` used to run
/// `create schema if not exists osa_events` every time, and PostgreSQL checks `CREATE` on the
/// database before it looks for the schema, so an owner without that privilege could not re-run
/// migrations on an up-to-date schema it owns.
#[tokio::test]

async fn migrate_needs_create_on_the_database_only_the_first_time() {
    let roles = Roles::new(); // dropped after the database
    let scene = Scene::unmigrated("security_migrate").await;
    let database = scene.database_name().to_owned();
    let mut admin = PgConnection::connect(scene.url())
        .await
        .expect("connect as the superuser");
    execute(&mut admin, roles.sql("owner", &database)).await;
    let owner = PgStore::connect(&with_credentials(scene.url(), &roles.owner, PASSWORD))
        .await
        .expect("the owner connects");
    owner.migrate().await.expect("the first migration");
    // The documented revoke (docs/privileges.md), so the doc stays true.
    execute(
        &mut admin,
        roles.sql("owner (after the first migrate)", &database),
    )
    .await;
    owner
        .migrate()
        .await
        .expect("re-running applied migrations needs no CREATE on the database");
    drop(owner);
    drop(scene);
    drop(roles);
}

/// A regression test (RELIABILITY.md, "Issues these tests found"): `PgStore::connect` used to let
/// the pool make the first connection, which retried a refused connection until the 10 s acquire
/// timeout and then reported "pool timed out while waiting for an open connection", without the
/// cause.
#[tokio::test]

async fn a_refused_connection_is_reported_with_its_cause() {
    let started = std::time::Instant::now();
    // No wait (`connect` alone waits up to 30 s for a server to come up): the cause is the point.
    let error = PgStore::connect_with("postgres://u@127.0.0.1:1/db", ConnectRetry::none())
        .await
        .expect_err("nothing listens on port 1");
    let message = error.to_string().to_lowercase();
    assert!(
        message.contains("refused"),
        "the cause is missing: {message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
