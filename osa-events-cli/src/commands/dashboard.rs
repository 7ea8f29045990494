//! `dashboard`: serves the web dashboard (`osa_events::dashboard`) of the store until Ctrl-C.

use osa_events::AnyStore;
use osa_events::dashboard::{self, DashboardOptions};

use crate::cli::DashboardArgs;
use crate::error::CliError;

/// The dashboard's options from the command line, checked against the address: a refusal (no
/// token for a public address, a short token) is a usage error.
///
/// # Errors
///
/// A usage error saying why.
pub(crate) fn options(args: &DashboardArgs) -> Result<DashboardOptions, CliError> {
    let mut options = DashboardOptions::new()
        .read_only(args.read_only)
        .refresh(args.refresh);
    if let Some(token) = args.token.as_deref().filter(|token| !token.is_empty()) {
        options = options.token(token);
    }
    options
        .check_listen(args.listen)
        .map_err(|error| CliError::usage(error.to_string()))?;
    Ok(options)
}

/// Runs `dashboard`.
pub(crate) async fn run(store: AnyStore, args: &DashboardArgs) -> Result<(), CliError> {
    let options = options(args)?;
    let described = store.describe();
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let access = match (&args.token, args.read_only) {
        (Some(_), true) => " (token required, read-only)",
        (Some(_), false) => " (token required)",
        (None, true) => " (this machine only, read-only)",
        (None, false) => " (this machine only)",
    };
    let host = if args.listen.ip().is_unspecified() {
        "localhost".to_owned()
    } else if args.listen.is_ipv6() {
        format!("[{}]", args.listen.ip())
    } else {
        args.listen.ip().to_string()
    };
    // Printed once listening would be better, but `serve` binds and serves in one: a bind
    // error follows this line at once.
    println!(
        "dashboard of {described}: http://{host}:{}/{access}; Ctrl-C stops it",
        args.listen.port()
    );
    dashboard::serve(store, args.listen, options, shutdown)
        .await
        .map_err(|error| CliError::op(error.to_string()))
}
