//! `osa-events`: the command-line tool of [osa-events](https://docs.rs/osa-events), for
//! operating handlers on PostgreSQL.
//!
//! A thin client of the operations API (`osa_events::operations`): it never writes SQL of its
//! own, so what it does is exactly what the store's contract suite proves. Install it with
//! `cargo install osa-events-cli`, or run it in the repository with
//! `cargo run -p osa-events-cli -- <command>`.
//!
#![doc = include_str!("../docs/cli.md")]

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

mod cli;
mod commands;
mod error;
mod format;
mod parse;
mod store;
mod term;

use crate::error::CliError;
use crate::term::{Stream, Style, paint};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage(&error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return report(&CliError::op(format!("cannot start tokio: {error}"))),
    };
    match runtime.block_on(commands::run(cli.database_url.as_deref(), &cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

/// A clap error: help and version as clap prints them; anything else as its first line (the
/// rest is clap's tips and usage, which `--help` shows), exit code 2.
fn usage(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            // `osa-events` alone prints the help, but as a usage error.
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // clap's message, its details and tips, on one line; without the usage and the
            // pointer to --help, which follow.
            let rendered = error.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|line| {
                    !line.starts_with("Usage:") && !line.starts_with("For more information")
                })
                .filter(|line| !line.is_empty())
                .collect();
            let message = message.join(" ");
            let message = message.trim_start_matches("error: ");
            report(&CliError::usage(format!(
                "{message} (see `osa-events --help`)"
            )))
        }
    }
}

/// Prints `error` as one line on stderr and returns its exit code.
fn report(error: &CliError) -> ExitCode {
    eprintln!(
        "{} {}",
        paint(Stream::Stderr, Style::Red, "error:"),
        error.line()
    );
    error.code()
}
