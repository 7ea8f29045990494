//! Integration tests against a real PostgreSQL, one binary (see STYLE.md). Each test creates its
//! own database, so they run in parallel; run them with `scripts/test.sh`, which provides a server
//! when `DATABASE_URL` is unset. A randomized test prints its seed: `OSA_TEST_SEED=<seed>` replays
//! it (the reliability tests: `OSA_RELIABILITY_SEED`).

mod browser;
mod claim;
mod commit_order;
mod connect;
mod contract;
mod dashboard;
mod failures;
mod fatal;
mod heartbeat;
mod instances;
mod key_turns;
mod linger;
mod metrics;
mod migrate;
mod nats;
mod nul;
mod observability;
mod operations;
mod options;
mod overrides;
mod pooler;
mod projections;
mod publish;
mod reliability;
mod runtime;
mod send;
mod sqlite;
mod sqlite_order;
mod support;
mod transactional;
mod versions;
