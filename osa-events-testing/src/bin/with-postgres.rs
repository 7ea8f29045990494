//! `with-postgres -- <command> [args...]`: runs a command with a PostgreSQL server in
//! `DATABASE_URL`.
//!
//! If `DATABASE_URL` is set, the command runs as is. Otherwise this starts a
//! [`ThrowawayCluster`] (installing PostgreSQL with apt first when the binaries are missing and
//! this runs as root), runs the command with `DATABASE_URL` pointing at it, then stops and
//! deletes the cluster, also on Ctrl-C, SIGTERM and SIGHUP (which it forwards to the command).
//!
//! It exits with the command's exit code (128 + the signal number if the command or this
//! program was ended by a signal, 127 if the command could not be started, 1 if no server
//! could be had). `scripts/test.sh` runs the whole test suite under it. By hand (the single
//! quotes keep the outer shell from expanding `$DATABASE_URL` before it is set):
//!
//! ```text
//! cargo run -q -p osa-events-testing --bin with-postgres -- sh -c 'psql "$DATABASE_URL" -c "select 1"'
//! ```

use std::env;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, ExitStatus};
use std::thread;
use std::time::Duration;

use osa_events_testing::pg::{ThrowawayCluster, database_url_or_throwaway};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How long the command gets to exit after a forwarded signal before it is killed.
const GRACE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let command = match args.split_first() {
        Some((dashes, rest)) if dashes == "--" => rest,
        _ => &args[..],
    };
    let Some((program, program_args)) = command.split_first() else {
        eprintln!("usage: with-postgres -- <command> [args...]");
        return ExitCode::from(2);
    };

    let cluster: Option<ThrowawayCluster> = match database_url_or_throwaway() {
        Ok((_, cluster)) => cluster,
        Err(err) => {
            eprintln!("with-postgres: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(program_args);
    if let Some(cluster) = &cluster {
        cmd.env("DATABASE_URL", cluster.url());
    }

    let code = match run_forwarding_signals(cmd) {
        Ok(code) => code,
        Err(err) => {
            eprintln!(
                "with-postgres: could not run `{}`: {err}",
                program.to_string_lossy()
            );
            127
        }
    };
    // Stop and delete the cluster before exiting (`ExitCode` lets destructors run anyway;
    // this makes the order explicit).
    drop(cluster);
    ExitCode::from(code)
}

/// Runs `cmd` to completion and returns its exit code. On SIGINT, SIGTERM or SIGHUP, forwards
/// the signal to it, waits up to [`GRACE`] (or until a second signal) for it to exit, kills it
/// if needed, and returns 128 + the signal number, so that the caller can clean up.
fn run_forwarding_signals(mut cmd: Command) -> io::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Listen before spawning, so that no early signal kills us without cleanup.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;

        let mut child = cmd.spawn()?;
        let pid = child.id();
        let (exited_tx, mut exited) = oneshot::channel();
        thread::spawn(move || exited_tx.send(child.wait()));

        let (name, number) = tokio::select! {
            status = &mut exited => {
                let status = status.expect("the waiting thread sends the exit status before it ends")?;
                return Ok(exit_code(status));
            }
            _ = interrupt.recv() => ("INT", 2),
            _ = terminate.recv() => ("TERM", 15),
            _ = hangup.recv() => ("HUP", 1),
        };
        eprintln!("with-postgres: got SIG{name}; stopping the command, then PostgreSQL");
        send_signal(pid, name);
        let exited_in_time = tokio::select! {
            _ = &mut exited => true,
            _ = tokio::time::sleep(GRACE) => false,
            _ = interrupt.recv() => false,
            _ = terminate.recv() => false,
        };
        if !exited_in_time {
            send_signal(pid, "KILL");
            let _ = exited.await;
        }
        Ok(128 + number)
    })
}

/// Sends signal `name` to process `pid` with the shell's `kill` builtin (std can only SIGKILL
/// a `Child`, and this crate does without libc).
fn send_signal(pid: u32, name: &str) {
    let _ = Command::new("sh")
        .args([
            "-c",
            "kill -s \"$0\" \"$1\" 2>/dev/null",
            name,
            &pid.to_string(),
        ])
        .status();
}

/// The shell's view of an exit status: the code, or 128 + the signal that ended the process.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}
