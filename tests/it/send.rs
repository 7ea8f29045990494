//! Every public async fn returns a `Send` future, so it can be awaited inside `tokio::spawn` and
//! `async-trait` methods. A fn that breaks this fails to compile this module, and the binary.
//!
//! The contract suite's rules (`osa_events_testing::contract`) are left out: they are generic
//! over the store under test and run by `store_contract_tests!`, never spawned by users.

use osa_events::__private::Stepper;
use osa_events::store::{Store, WakeUps};
use osa_events::{Outgoing, PgStore, ResetTo, Resources, Runtime};
use osa_events_testing::pg::{Partition, TestDatabase};
use osa_events_testing::sim::{Probe, SimulationBuilder};
use osa_events_testing::{Harness, HarnessBuilder, InMemoryStore};
use serde::{Deserialize, Serialize};

#[derive(osa_events::Event, Serialize, Deserialize, Debug)]
#[event(name = "test.send.ping")]
struct Ping;

fn assert_send<T: Send>(_: T) {}

/// Builds every future and asserts it is `Send`; never called (the futures would need a
/// database), only compiled.
#[allow(clippy::too_many_arguments)]
async fn osa_events_fns(
    store: PgStore,
    runtime: Runtime,
    other_runtime: Runtime,
    stepper: &mut Stepper,
    wake_ups: &mut WakeUps,
    conn: &mut sqlx::PgConnection,
    batch: &[Outgoing],
) {
    assert_send(PgStore::connect("postgres://localhost/app"));
    assert_send(PgStore::connect_with(
        "postgres://localhost/app",
        osa_events::ConnectRetry::default(),
    ));
    assert_send(store.migrate());
    assert_send(store.projection_status());
    assert_send(osa_events::run_all_handlers(
        store.clone(),
        Resources::new(),
    ));
    assert_send(osa_events::publish(&mut *conn, &Ping));
    assert_send(osa_events::publish_routed(&mut *conn, "key", &Ping));
    assert_send(osa_events::publish_batch(&mut *conn, batch));
    assert_send(osa_events::reset_projection(
        &mut *conn,
        "name",
        ResetTo::Beginning,
    ));
    assert_send(runtime.register());
    assert_send(runtime.run());
    assert_send(other_runtime.into_stepper(0));
    assert_send(stepper.step("handler"));
    assert_send(stepper.project("projection"));
    assert_send(wake_ups.next());
    assert_send(store.claim(osa_events::store::ClaimRequest {
        subscription: osa_events::store::SubscriptionId(1),
        limit: 1,
        claim_timeout: std::time::Duration::from_secs(1),
        worker: "send",
    }));
}

/// As [`osa_events_fns`], for `osa-events-testing`.
async fn testing_fns(
    harness: &mut Harness,
    builder: HarnessBuilder,
    simulation: SimulationBuilder,
    probe: &Probe,
    ctx: &osa_events::Ctx,
    memory: &InMemoryStore,
    pool: &sqlx::PgPool,
) {
    assert_send(TestDatabase::create());
    assert_send(TestDatabase::create_on("postgres://localhost/postgres"));
    assert_send(Partition::cut_session(pool, 1));
    assert_send(builder.build());
    assert_send(simulation.build());
    assert_send(probe.call(ctx));
    assert_send(memory.projection_status());
    assert_send(harness.step("handler"));
    assert_send(harness.project("projection"));
    assert_send(harness.drain());
}

#[test]
fn public_async_fns_return_send_futures() {
    // Referenced so they are compiled (and not dead code); the assertions are the bounds above,
    // checked by the compiler: this test fails by not building.
    let _ = osa_events_fns;
    let _ = testing_fns;
}
