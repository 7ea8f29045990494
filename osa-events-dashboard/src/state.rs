//! [`Dashboard`]: what every request of one router shares.

use std::sync::Arc;

use osa_events_core::operations::Operations;
use osa_events_core::store::{ProjectionStore, Store};

use crate::DashboardOptions;

/// The store, the options, and this router's CSRF token.
pub(crate) struct Dashboard {
    store: Arc<dyn Store>,
    pub(crate) options: DashboardOptions,
    /// Put in every action's form and checked on its POST: another site cannot read the
    /// dashboard's pages (same-origin policy, and the `Host` check against DNS rebinding), so it
    /// cannot learn this. 122 random bits, new for every router.
    pub(crate) csrf: String,
}

impl Dashboard {
    /// A dashboard of `store`, which must offer the operations API (the router checks).
    pub(crate) fn new(store: Arc<dyn Store>, options: DashboardOptions) -> Self {
        Self {
            store,
            options,
            csrf: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The store's operations API.
    pub(crate) fn ops(&self) -> &dyn Operations {
        self.store
            .operations()
            .expect("the router is built only over a store with the operations API")
    }

    /// The store's projections, when it runs any.
    pub(crate) fn projections(&self) -> Option<Arc<dyn ProjectionStore>> {
        self.store.projections()
    }
}
