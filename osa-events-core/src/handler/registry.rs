//! Reading the inventories of handlers and projections: sorted, filtered by the builder, checked.

use super::Registration;
use crate::projection::ProjectionRegistration;
use crate::{Error, Result};

/// What a runtime runs.
pub(crate) struct Selection {
    pub(crate) handlers: Vec<&'static Registration>,
    pub(crate) projections: Vec<&'static ProjectionRegistration>,
}

/// The registered handlers and projections named in `only` (all when empty) minus those in
/// `exclude`, sorted by name (inventory's order is unspecified), then checked: valid specs, unique
/// names across handlers and projections, at least one of them.
///
/// A name that nothing has is an error, so a typo in a deployment's selection is caught at
/// start-up. Duplicates are checked among the selected, so a deployment that excludes one of two
/// same-named handlers is still refused (the name selects both).
pub(crate) fn select(only: &[String], exclude: &[String]) -> Result<Selection> {
    let mut handlers: Vec<&'static Registration> =
        inventory::iter::<Registration>.into_iter().collect();
    handlers.sort_by_key(|r| (r.spec.name(), r.spec.rust_path()));
    let mut projections: Vec<&'static ProjectionRegistration> =
        inventory::iter::<ProjectionRegistration>
            .into_iter()
            .collect();
    projections.sort_by_key(|r| (r.spec.name(), r.spec.rust_path()));

    let mut known: Vec<(&'static str, &'static str)> = handlers
        .iter()
        .map(|r| (r.spec.name(), r.spec.rust_path()))
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
    let wanted = |name: &str| {
        (only.is_empty() || only.iter().any(|n| n == name)) && !exclude.iter().any(|n| n == name)
    };
    handlers.retain(|r| wanted(r.spec.name()));
    projections.retain(|r| wanted(r.spec.name()));
    if handlers.is_empty() && projections.is_empty() {
        return Err(Error::NoHandlers);
    }
    for registration in &handlers {
        registration.spec.validate()?;
    }
    known.retain(|(name, _)| wanted(name));
    // Sorted by (name, path): duplicates are neighbours, reported in a stable order.
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
    })
}
