//! [`State<T>`]: a shared resource registered in [`Resources`].

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::{Call, FromBatchArg, FromEventArg};
use crate::{Error, Resources, Result};

/// A shared resource of type `T`, registered with [`Resources::with`]: a client, an index, a pool.
///
/// Dereferences to `T`, so `state.method()` calls `T`'s methods. Cloning is an `Arc` clone. A
/// handler that takes `State<T>` when `Resources` has no `T` fails start-up with
/// [`Error::MissingResource`].
///
/// The `Arc` inside is private. To call a handler directly (in a unit test), build the argument
/// with [`State::new`] or from an `Arc` with `State::from`; [`State::as_arc`] and
/// [`State::into_arc`] give the `Arc` back. These are associated functions, not methods, so they
/// never shadow a method of `T` (as `Arc::strong_count` does).
///
/// # Examples
///
/// ```
/// use osa_events::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "record.published")]
/// # struct RecordPublished { srn: String }
///
/// struct SearchClient;
/// impl SearchClient {
///     async fn index(&self, _srn: &str) -> std::io::Result<()> { Ok(()) }
/// }
///
/// #[event_handler(name = "search.index")]
/// async fn index(event: RecordPublished, search: State<SearchClient>) -> Result<(), HandlerError> {
///     search.index(&event.srn).await?;
///     Ok(())
/// }
///
/// let resources = Resources::new().with(SearchClient);
/// # let _ = resources;
///
/// // In a unit test, call the handler with a state of your own:
/// # let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # let handled = runtime.block_on(async {
/// index(RecordPublished { srn: "srn:1".into() }, State::new(SearchClient)).await
/// # });
/// # assert!(handled.is_ok());
/// ```
pub struct State<T: ?Sized>(Arc<T>);

impl<T> State<T> {
    /// Wraps `value`, as [`Resources::with`] does for handlers run by the runtime.
    pub fn new(value: T) -> Self {
        Self(Arc::new(value))
    }
}

impl<T: ?Sized> State<T> {
    /// The shared `Arc`, e.g. to keep a clone beyond the handler call.
    pub fn as_arc(this: &Self) -> &Arc<T> {
        &this.0
    }

    /// The shared `Arc`, taking the state apart.
    pub fn into_arc(this: Self) -> Arc<T> {
        this.0
    }
}

impl<T: ?Sized> From<Arc<T>> for State<T> {
    fn from(shared: Arc<T>) -> Self {
        Self(shared)
    }
}

impl<T: ?Sized> Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> Clone for State<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&&*self.0).finish()
    }
}

fn lookup<T: Send + Sync + 'static>(
    resources: &Resources,
    handler: &'static str,
) -> Result<Arc<T>> {
    resources.get::<T>().ok_or_else(|| Error::MissingResource {
        handler: handler.to_owned(),
        type_name: std::any::type_name::<T>(),
    })
}

impl<T: Send + Sync + 'static> FromEventArg for State<T> {
    type Bound = Arc<T>;

    fn bind(resources: &Resources, handler: &'static str) -> Result<Arc<T>> {
        lookup(resources, handler)
    }

    fn extract(bound: &Arc<T>, _call: &mut Call<'_>) -> Self {
        State(Arc::clone(bound))
    }
}

impl<T: Send + Sync + 'static> FromBatchArg for State<T> {
    type Bound = Arc<T>;

    fn bind(resources: &Resources, handler: &'static str) -> Result<Arc<T>> {
        lookup(resources, handler)
    }

    fn extract(bound: &Arc<T>, _call: &mut Call<'_>) -> Self {
        State(Arc::clone(bound))
    }
}
