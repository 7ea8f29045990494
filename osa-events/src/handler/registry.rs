//! Reading the inventory of handlers: sorted, filtered by the builder, checked for duplicates.

use super::Registration;
use crate::{Error, Result};

/// Every registered handler, sorted by name then Rust path (inventory's order is unspecified).
pub(crate) fn all() -> Vec<&'static Registration> {
    let mut registrations: Vec<&'static Registration> =
        inventory::iter::<Registration>.into_iter().collect();
    registrations.sort_by_key(|r| (r.spec.name(), r.spec.rust_path()));
    registrations
}

/// Keeps the handlers named in `only` (all when empty) minus those in `exclude`, then checks
/// what is left: valid specs, unique names, at least one handler.
///
/// A name that no handler has is an error, so a typo in a deployment's selection is caught at
/// start-up. Duplicates are checked among the selected handlers, so a deployment that excludes
/// one of two same-named handlers is still refused (the name selects both).
pub(crate) fn select(
    registrations: Vec<&'static Registration>,
    only: &[String],
    exclude: &[String],
) -> Result<Vec<&'static Registration>> {
    for name in only.iter().chain(exclude) {
        if !registrations.iter().any(|r| r.spec.name() == name) {
            return Err(Error::UnknownHandler {
                name: name.clone(),
                known: registrations
                    .iter()
                    .map(|r| r.spec.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let selected: Vec<_> = registrations
        .into_iter()
        .filter(|r| only.is_empty() || only.iter().any(|name| name == r.spec.name()))
        .filter(|r| !exclude.iter().any(|name| name == r.spec.name()))
        .collect();
    if selected.is_empty() {
        return Err(Error::NoHandlers);
    }
    for registration in &selected {
        registration.spec.validate()?;
    }
    // Sorted by (name, path): duplicates are neighbours, reported in a stable order.
    if let Some(pair) = selected
        .windows(2)
        .find(|pair| pair[0].spec.name() == pair[1].spec.name())
    {
        return Err(Error::DuplicateHandlerName {
            name: pair[0].spec.name().to_owned(),
            first: pair[0].spec.rust_path(),
            second: pair[1].spec.rust_path(),
        });
    }
    Ok(selected)
}
