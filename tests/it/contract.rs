//! The store contract suite (`osa_events_testing::contract`) against every store: one test per
//! rule and store, so each rule fails on its own. The PostgreSQL subject is the repo's own
//! (`osa_events_fixtures::contract::PgUnderTest`).

/// `PgStore` in a fresh, migrated database per test, on real time.
mod pg {
    osa_events_testing::store_contract_tests!(
        osa_events_fixtures::contract::PgUnderTest::create().await
    );
}

/// `InMemoryStore` on a `FakeClock`: the same rules, with time advanced instead of slept.
mod memory {
    osa_events_testing::store_contract_tests!(osa_events_testing::contract::MemoryUnderTest::new());
}

/// `SqliteStore` on a temporary file per test, on real time.
mod sqlite {
    osa_events_testing::store_contract_tests!(
        osa_events_fixtures::contract_sqlite::SqliteUnderTest::create().await
    );
}
