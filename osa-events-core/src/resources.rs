//! [`Resources`]: the shared values handlers reach through `State<T>`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A type map of shared resources (clients, indexes, pools), one value per type.
///
/// Handlers take them as [`State<T>`](crate::State). Missing ones are found at start-up: the
/// runtime refuses to start a handler whose `State<T>` has no `T` here.
///
/// # Examples
///
/// ```
/// use osa_events::Resources;
///
/// struct VectorIndex;
/// let resources = Resources::new().with(VectorIndex).with(String::from("config"));
/// assert!(resources.get::<VectorIndex>().is_some());
/// assert!(resources.get::<u32>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct Resources {
    values: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
}

impl Resources {
    /// No resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value`, replacing an earlier value of the same type.
    #[must_use]
    pub fn with<T: Send + Sync + 'static>(self, value: T) -> Self {
        self.with_arc(Arc::new(value))
    }

    /// Adds a value that is already shared, e.g. one the application also uses elsewhere.
    #[must_use]
    pub fn with_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.values
            .insert(TypeId::of::<T>(), (value, std::any::type_name::<T>()));
        self
    }

    /// The value of type `T`, if one was added.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let (value, _) = self.values.get(&TypeId::of::<T>())?;
        Arc::clone(value).downcast::<T>().ok()
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.values.values().map(|(_, name)| *name).collect();
        names.sort_unstable();
        f.debug_struct("Resources").field("types", &names).finish()
    }
}
