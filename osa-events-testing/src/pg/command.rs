//! Running helper programs (`initdb`, `pg_ctl`, `apt-get`, …) with their output captured.

use std::process::{Command, Output};

use super::FixtureError;

/// How many lines of a program's output, or of the server log, an error quotes.
pub(crate) const TAIL_LINES: usize = 20;

/// Runs `cmd` to completion with stdin closed and stdout and stderr captured.
///
/// # Errors
///
/// [`FixtureError::Spawn`] if it cannot be started, [`FixtureError::CommandFailed`] (quoting
/// the end of its output) if it exits unsuccessfully. `hint` says what to do about either.
pub(crate) fn run(cmd: &mut Command, hint: &'static str) -> Result<Output, FixtureError> {
    let output = cmd.output().map_err(|source| FixtureError::Spawn {
        command: describe(cmd),
        source,
        hint,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(FixtureError::CommandFailed {
            command: describe(cmd),
            status: output.status,
            output: output_tail(&output),
            hint,
        })
    }
}

/// The command line of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            line.push_str(&format!("'{arg}'"));
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// The last [`TAIL_LINES`] lines of a program's stdout followed by its stderr.
pub(crate) fn output_tail(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    tail(&text)
}

/// The last [`TAIL_LINES`] non-empty lines of `text`, or `(no output)`.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(no output)".to_owned();
    }
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n\n")).collect();
        let tail = tail(&text);
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.starts_with("line 11\n"), "{tail}");
        assert!(tail.ends_with("line 30"), "{tail}");
    }

    #[test]
    fn tail_of_nothing_says_so() {
        assert_eq!(tail(" \n\n"), "(no output)");
    }

    #[test]
    fn describe_joins_program_and_args() {
        let mut cmd = Command::new("pg_ctl");
        cmd.args(["-D", "/tmp/x", "-o", "-p 5432", "start"]);
        assert_eq!(describe(&cmd), "pg_ctl -D /tmp/x -o '-p 5432' start");
    }

    #[test]
    fn run_reports_a_missing_program_with_the_hint() {
        let err = run(&mut Command::new("osa-no-such-program"), "do something").unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("could not run `osa-no-such-program`: "),
            "{message}"
        );
        assert!(message.ends_with("; do something"), "{message}");
    }

    #[test]
    fn run_reports_a_failure_with_the_output_tail() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let message = run(&mut cmd, "do something").unwrap_err().to_string();
        assert!(
            message.starts_with(
                "`sh -c 'echo out; echo err >&2; exit 3'` failed (exit status: 3); do something"
            ),
            "{message}"
        );
        assert!(message.ends_with("out\nerr"), "{message}");
    }
}
