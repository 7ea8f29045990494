//! Integration tests against a real PostgreSQL, one binary (see STYLE.md). Each test creates its
//! own database, so they run in parallel; run them with `scripts/test.sh`, which provides a server
//! when `DATABASE_URL` is unset.

mod claim;
mod contract;
mod failures;
/// The log capture of the harness tests, shared rather than copied.
#[path = "../../osa-events-testing/tests/it/logs.rs"]
mod logs;
mod options;
mod pooler;
mod projections;
mod publish;
mod reliability;
mod runtime;
mod support;
mod transactional;
