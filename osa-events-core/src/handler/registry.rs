//! Reading the inventories of handlers and projections, with the builder's handler instances:
//! sorted, filtered by the builder, checked.

use super::{HandlerSpec, Invoker, Registration};
use crate::projection::ProjectionRegistration;
use crate::{Error, Resources, Result};

/// A handler the runtime may run: a registration from the inventory, or an instance from
/// [`RuntimeBuilder::handler_instance`](crate::RuntimeBuilder::handler_instance).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Its spec, before the `configure` and environment overrides.
    pub(crate) spec: HandlerSpec,
    pub(crate) bind: fn(&Resources) -> Result<Invoker>,
    /// Where it is defined, for duplicate names: the function's Rust path, with
    /// ` (handler_instance)` for an instance.
    pub(crate) origin: &'static str,
    /// For an instance, the name of its template's spec, which the template's `bind` reports
    /// in its errors.
    pub(crate) template: Option<&'static str>,
}

impl Candidate {
    fn registered(registration: &'static Registration) -> Self {
        Self {
            spec: registration.spec,
            bind: registration.bind,
            origin: registration.spec.rust_path(),
            template: None,
        }
    }

    /// Binds the extractors; an instance's missing resource is reported under the instance's
    /// name, not its template's.
    pub(crate) fn bind(&self, resources: &Resources) -> Result<Invoker> {
        (self.bind)(resources).map_err(|error| match (error, self.template) {
            (Error::MissingResource { handler, type_name }, Some(template))
                if handler == template =>
            {
                Error::MissingResource {
                    handler: self.spec.name().to_owned(),
                    type_name,
                }
            }
            (error, _) => error,
        })
    }
}

/// What a runtime runs, and every name it knows.
pub(crate) struct Selection {
    pub(crate) handlers: Vec<Candidate>,
    pub(crate) projections: Vec<&'static ProjectionRegistration>,
    /// Every handler's name, selected or not, sorted.
    pub(crate) handler_names: Vec<&'static str>,
    /// Every projection's name, selected or not, sorted.
    pub(crate) projection_names: Vec<&'static str>,
}

/// The registered handlers and `instances`, and the registered projections, named in `only` (all
/// when empty) minus those in `exclude`, sorted by name (inventory's order is unspecified), then
/// checked: unique names across handlers, instances and projections, at least one of them.
///
/// A name that nothing has is an error, so a typo in a deployment's selection is caught at
/// start-up. Duplicates are checked among the selected, so a deployment that excludes one of two
/// same-named handlers is still refused (the name selects both). The specs are validated later,
/// once overridden.
pub(crate) fn select(
    only: &[String],
    exclude: &[String],
    instances: Vec<Candidate>,
) -> Result<Selection> {
    let mut handlers: Vec<Candidate> = inventory::iter::<Registration>
        .into_iter()
        .map(Candidate::registered)
        .chain(instances)
        .collect();
    handlers.sort_by_key(|c| (c.spec.name(), c.origin));
    let mut projections: Vec<&'static ProjectionRegistration> =
        inventory::iter::<ProjectionRegistration>
            .into_iter()
            .collect();
    projections.sort_by_key(|r| (r.spec.name(), r.spec.rust_path()));

    let mut known: Vec<(&'static str, &'static str)> = handlers
        .iter()
        .map(|c| (c.spec.name(), c.origin))
        .chain(
            projections
                .iter()
                .map(|r| (r.spec.name(), r.spec.rust_path())),
        )
        .collect();
    for name in only.iter().chain(exclude) {
        if !known.iter().any(|(known, _)| known == name) {
            return Err(Error::UnknownHandler {
                name: name.clone(),
                known: known
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut handler_names: Vec<&'static str> = handlers.iter().map(|c| c.spec.name()).collect();
    handler_names.dedup();
    let mut projection_names: Vec<&'static str> =
        projections.iter().map(|r| r.spec.name()).collect();
    projection_names.dedup();
    let wanted = |name: &str| {
        (only.is_empty() || only.iter().any(|n| n == name)) && !exclude.iter().any(|n| n == name)
    };
    handlers.retain(|c| wanted(c.spec.name()));
    projections.retain(|r| wanted(r.spec.name()));
    if handlers.is_empty() && projections.is_empty() {
        return Err(Error::NoHandlers);
    }
    known.retain(|(name, _)| wanted(name));
    // Sorted by (name, origin): duplicates are neighbours, reported in a stable order.
    known.sort_unstable();
    if let Some(pair) = known.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(Error::DuplicateHandlerName {
            name: pair[0].0.to_owned(),
            first: pair[0].1,
            second: pair[1].1,
        });
    }
    Ok(Selection {
        handlers,
        projections,
        handler_names,
        projection_names,
    })
}
