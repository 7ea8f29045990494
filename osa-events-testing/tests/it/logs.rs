//! Capturing what the runtime logs, to count and read its lines.

use std::io;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// The log lines written on this thread while it lives (everything at DEBUG and above, without
/// time or target: `LEVEL span: message fields`). Tests that use it run the runtime on the test's
/// own thread (`#[tokio::test]`'s current-thread runtime).
pub(crate) struct Logs {
    written: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn capture() -> Self {
        let written = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer(Arc::clone(&written));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(move || writer.clone())
            .finish();
        Self {
            written,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every line, trimmed.
    pub(crate) fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.written.lock().unwrap())
            .lines()
            .map(|line| line.trim().to_owned())
            .collect()
    }

    /// The lines that contain `text`.
    pub(crate) fn lines_with(&self, text: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.contains(text))
            .collect()
    }

    /// The lines at `level` (`"WARN"`, `"ERROR"`, ...).
    pub(crate) fn at(&self, level: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.split_whitespace().next() == Some(level))
            .collect()
    }
}
