//! The terminal: colours, tables, the progress line, confirmation and Ctrl-C.
//!
//! Colours are ANSI escapes, used only on a terminal and never with `NO_COLOR` set
//! (<https://no-color.org>); the progress line is drawn on stderr, only when it is a terminal, so
//! pipes and scripts see the results alone.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use crate::cli::Confirm;
use crate::error::CliError;

/// A colour or weight for [`paint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// No styling.
    Plain,
    /// Bold: headers.
    Bold,
    /// Dim: nothing to see.
    Dim,
    /// Red: dead letters, orphans, errors.
    Red,
    /// Yellow: paused, lagging, warnings.
    Yellow,
    /// Green: running.
    Green,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Self::Plain => "",
            Self::Bold => "1",
            Self::Dim => "2",
            Self::Red => "31",
            Self::Yellow => "33",
            Self::Green => "32",
        }
    }
}

/// Which stream a text is for: colours are decided per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Whether `stream` gets colours: it is a terminal and `NO_COLOR` is unset or empty.
pub(crate) fn colours(stream: Stream) -> bool {
    let terminal = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// `text` in `style`, for `stream`.
pub(crate) fn paint(stream: Stream, style: Style, text: &str) -> String {
    if style == Style::Plain || !colours(stream) {
        text.to_owned()
    } else {
        format!("\x1b[{}m{text}\x1b[0m", style.code())
    }
}

/// Whether standard output is a terminal (the screen is cleared between `--watch` refreshes).
pub(crate) fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// A table: a header row, then rows of cells, columns padded to their widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<(String, Style)>>,
}

impl Table {
    /// An empty table with these column headers.
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of cells, each with its style.
    pub(crate) fn styled_row(&mut self, cells: Vec<(String, Style)>) {
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text for standard output, each line ending in a newline.
    pub(crate) fn render(&self) -> String {
        let width = |text: &str| text.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|header| width(header)).collect();
        for row in &self.rows {
            for (column, (cell, _)) in row.iter().enumerate() {
                if let Some(widest) = widths.get_mut(column) {
                    *widest = (*widest).max(width(cell));
                }
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<(&str, Style)>| {
            let last = cells.len().saturating_sub(1);
            let mut text = String::new();
            for (column, (cell, style)) in cells.into_iter().enumerate() {
                // Pad before painting: escapes take no room on screen.
                let padding = if column == last {
                    String::new()
                } else {
                    " ".repeat(widths[column] - width(cell) + 2)
                };
                text.push_str(&paint(Stream::Stdout, style, cell));
                text.push_str(&padding);
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(
            self.headers
                .iter()
                .map(|header| (*header, Style::Bold))
                .collect(),
        );
        for row in &self.rows {
            line(
                row.iter()
                    .map(|(cell, style)| (cell.as_str(), *style))
                    .collect(),
            );
        }
        out
    }
}

/// A progress line on stderr, redrawn at most ten times a second: what is done, the total when
/// it is known, and the rate. Drawn only when stderr is a terminal.
#[derive(Debug)]
pub(crate) struct Progress {
    label: &'static str,
    enabled: bool,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    /// A progress line for `label` (`retried`, `replayed`).
    pub(crate) fn new(label: &'static str) -> Self {
        Self {
            label,
            enabled: std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: None,
        }
    }

    /// Redraws it: `done` of `total` so far.
    pub(crate) fn update(&mut self, done: u64, total: Option<u64>, unit: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .drawn
            .is_some_and(|drawn| now.duration_since(drawn).as_millis() < 100)
        {
            return;
        }
        self.drawn = Some(now);
        let seconds = now.duration_since(self.started).as_secs_f64().max(0.001);
        let rate = done as f64 / seconds;
        let of = total.map(|total| format!("/{total}")).unwrap_or_default();
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2K{} {done}{of} {unit} ({rate:.0}/s)",
            self.label
        );
        let _ = stderr.flush();
    }

    /// Clears the line, so the summary that follows stands alone.
    pub(crate) fn finish(&mut self) {
        if self.enabled && self.drawn.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

/// Ctrl-C, noted between chunks: once installed, Ctrl-C no longer kills the process; the loop
/// finishes the chunk in flight (its transaction commits or rolls back whole), then stops.
#[derive(Debug, Clone)]
pub(crate) struct Interrupt {
    pressed: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    /// Starts listening for Ctrl-C, and returns once the listener is in place.
    pub(crate) async fn install() -> Self {
        let interrupt = Self {
            pressed: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
        };
        let (listening, ready) = tokio::sync::oneshot::channel();
        let set = interrupt.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            tokio::pin!(ctrl_c);
            // One poll registers the handler; then say so.
            let first = futures_poll_once(ctrl_c.as_mut()).await;
            let _ = listening.send(());
            let pressed = match first {
                Some(result) => result.is_ok(),
                None => ctrl_c.await.is_ok(),
            };
            if pressed {
                set.pressed.store(true, Ordering::SeqCst);
                set.notify.notify_waiters();
            }
        });
        let _ = ready.await;
        interrupt
    }

    /// Whether Ctrl-C was pressed.
    pub(crate) fn pressed(&self) -> bool {
        self.pressed.load(Ordering::SeqCst)
    }

    /// Waits for Ctrl-C.
    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        if self.pressed() {
            return;
        }
        notified.await;
    }
}

/// Polls `future` once: its output if it is ready, `None` otherwise.
async fn futures_poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut future).poll(cx) {
        std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// What to do after a destructive command showed its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Do it.
    Proceed,
    /// Only show (`--dry-run`): the plan is all.
    DryRun,
}

/// Asks whether to `action` (`purge 12 dead letters`), unless `--yes` or `--dry-run` decide.
///
/// # Errors
///
/// Without a terminal on stdin and without `--yes`, refuses (nothing may change unconfirmed);
/// on a terminal, an answer other than yes aborts.
pub(crate) fn confirm(confirm: Confirm, action: &str) -> Result<Decision, CliError> {
    if confirm.dry_run {
        println!("dry run: would {action}; nothing was changed");
        return Ok(Decision::DryRun);
    }
    if confirm.yes {
        return Ok(Decision::Proceed);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::op(format!(
            "refusing to {action} without confirmation: stdin is not a terminal \
             (pass --yes to go ahead, or --dry-run to only show what would be done)"
        )));
    }
    eprint!("{action}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|error| CliError::op(format!("cannot read the answer: {error}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(Decision::Proceed),
        _ => Err(CliError::op("aborted: nothing was changed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell_and_lines_trimmed() {
        let mut table = Table::new(&["NAME", "DEAD", "LAST ERROR"]);
        table.styled_row(vec![
            ("billing.invoice".into(), Style::Plain),
            ("≥10000".into(), Style::Plain),
            ("-".into(), Style::Plain),
        ]);
        table.styled_row(vec![
            ("a".into(), Style::Plain),
            ("2".into(), Style::Plain),
            ("".into(), Style::Plain),
        ]);
        let text = table.render();
        // Headers are bold on a terminal: compare what remains without escapes.
        let plain: String = text
            .split('\x1b')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    part.split_once('m').map_or(part, |(_, rest)| rest)
                }
            })
            .collect();
        assert_eq!(
            plain,
            "NAME             DEAD    LAST ERROR\n\
             billing.invoice  ≥10000  -\n\
             a                2\n"
        );
    }
}
