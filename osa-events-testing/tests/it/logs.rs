//! Capturing what the runtime logs, to count and read its lines.
//!
//! One global subscriber (installed by the first capture) formats `osa_events`' events at DEBUG
//! and above on the threads that capture, and writes each line to that thread's capture. Not a
//! scoped subscriber per test (`tracing::subscriber::set_default`): `tracing` caches per call site,
//! for all threads, whether it is enabled, so a call site first reached by a test on another
//! thread would be cached as off for the tests that capture. Here every `osa_events` call site's
//! interest is "sometimes", decided per event.

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex, Once};

use tracing::Level;
use tracing::subscriber::Interest;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::prelude::*;

thread_local! {
    static CAPTURE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// The log lines of `osa_events` written on this thread while it lives (DEBUG and above, without
/// time or target: `LEVEL span: message fields`). Tests that use it run the runtime on the test's
/// own thread (`#[tokio::test]`'s current-thread runtime).
pub(crate) struct Logs {
    written: Arc<Mutex<Vec<u8>>>,
}

/// Writes to the capture of the current thread, or nowhere.
struct ThreadCapture;

impl io::Write for ThreadCapture {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(written) = &*capture.borrow() {
                written.lock().unwrap().extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn capture() -> Self {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            // Decided per event, by the thread (costing the other tests a thread-local lookup),
            // so a call site's interest is "sometimes": never cached as on or off.
            let capturing = dynamic_filter_fn(|metadata, _| {
                CAPTURE.with(|capture| capture.borrow().is_some())
                    && metadata.target().starts_with("osa_events")
            })
            .with_callsite_filter(|metadata| {
                if metadata.target().starts_with("osa_events") && *metadata.level() <= Level::DEBUG
                {
                    Interest::sometimes()
                } else {
                    Interest::never()
                }
            });
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_writer(|| ThreadCapture)
                .with_filter(capturing);
            tracing_subscriber::registry()
                .with(layer)
                .try_init()
                .expect("no other global subscriber in this test binary");
        });
        let written = Arc::new(Mutex::new(Vec::new()));
        CAPTURE.with(|capture| *capture.borrow_mut() = Some(Arc::clone(&written)));
        // A call site first reached by another test while the subscriber was being installed can
        // have cached "disabled" from before it: ask every call site again.
        tracing::callsite::rebuild_interest_cache();
        Self { written }
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

impl Drop for Logs {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}
