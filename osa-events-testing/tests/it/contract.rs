//! The store contract suite on `InMemoryStore` and a `FakeClock`, so `cargo test -p
//! osa-events-testing` checks every rule without a database (the root package's `tests/it`
//! runs the same rules on PostgreSQL too).

osa_events_testing::store_contract_tests!(osa_events_testing::contract::MemoryUnderTest::new());
