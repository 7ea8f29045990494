//! Tests of the harness and the simulator, on the in-memory store and a fake clock: no database,
//! no sleeping. One binary (see STYLE.md); the handlers they run are registered here.

mod activity;
mod contract;
mod delay;
mod envelope;
mod fatal;
mod harness;
mod health;
mod inputs;
mod metrics;
mod ordering;
mod overrides;
mod panics;
mod projections;
mod registration;
mod retry_after;
mod runtime;
mod sim;
mod spans;
mod tx;
mod versions;
