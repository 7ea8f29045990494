//! SCAFFOLD (replaced by the projections helper before landing): projections on SQLite.

use std::time::Duration;

use futures_util::future::BoxFuture;
use osa_events_core::store::{Leadership, ProjectionStatus, ProjectionStore, ResetTo};
use osa_events_core::{Error, Result};

use crate::SqliteStore;

fn scaffold<T>() -> BoxFuture<'static, Result<T>> {
    Box::pin(async { Err(Error::Config("SCAFFOLD: not written yet".into())) })
}

impl ProjectionStore for SqliteStore {
    fn try_lead<'a>(
        &'a self,
        _name: &'static str,
        _holder: &'a str,
        _wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Leadership>>>> {
        scaffold()
    }
    fn status<'a>(
        &'a self,
        _name: &'a str,
        _event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<ProjectionStatus>> {
        scaffold()
    }
    fn reset<'a>(&'a self, _name: &'a str, _to: ResetTo) -> BoxFuture<'a, Result<()>> {
        scaffold()
    }
    fn record_event_types<'a>(
        &'a self,
        _name: &'a str,
        _event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<()>> {
        scaffold()
    }
    fn acknowledge_event_types<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<()>> {
        scaffold()
    }
}
