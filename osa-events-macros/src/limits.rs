// The one table of `#[event_handler]` option limits, read by the macro (compile errors) and by the
// runtime (`HandlerSpec::validate`, which gets these items from `osa_events_macros::__option_limits!`
// so that no crate reads a file outside its own package), so the two cannot drift apart. Plain
// items only, with full paths: they are compiled in both crates.

/// Largest `batch`.
pub(crate) const MAX_BATCH: u32 = 1000;
/// Largest `concurrency`: claim loops of one handler per process.
pub(crate) const MAX_CONCURRENCY: u32 = 256;
/// Largest `retries`.
pub(crate) const MAX_RETRIES: u32 = 100;
/// Default `claim_timeout`: how long a claim lasts without a heartbeat.
pub(crate) const DEFAULT_CLAIM_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(60);
/// Shortest `claim_timeout`.
pub(crate) const MIN_CLAIM_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(1);
/// Longest `claim_timeout`: one day. Claims are set with `now() + make_interval(secs => ..)`, and
/// an extreme value overflows the timestamp so that every claim fails; a handler that runs longer
/// keeps its claim alive through heartbeats anyway.
pub(crate) const MAX_CLAIM_TIMEOUT: core::time::Duration =
    core::time::Duration::from_secs(24 * 60 * 60);
/// Heartbeats per claim timeout: while a batch runs, its claims are extended every
/// `claim_timeout / HEARTBEATS_PER_CLAIM_TIMEOUT`. It also bounds `linger`, which may be at most
/// that interval: the deliveries held while lingering are claimed, and the first heartbeat comes
/// one interval after the handler is called, so a claim is at most two intervals old (two thirds
/// of the timeout) when it is first extended, well before the worker would give it up (at nine
/// tenths).
pub(crate) const HEARTBEATS_PER_CLAIM_TIMEOUT: u32 = 3;
/// Shortest `poll`, `timeout`, `backoff` and `max_backoff`.
pub(crate) const MIN_DURATION: core::time::Duration = core::time::Duration::from_millis(1);
/// The longest allowed handler name, event name or routing key.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// The rule of names (handler names, event names, routing keys): 1 to [`MAX_NAME_LEN`] ASCII
/// letters, digits and `. _ - : /`. `Err` holds the message, naming the option `key`.
pub(crate) fn check_name(value: &str, key: &str) -> Result<(), std::string::String> {
    if value.is_empty() {
        return Err(format!("`{key}` must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(format!("`{key}` must be at most {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')))
    {
        return Err(format!(
            "`{key}` may contain only ASCII letters, digits and `. _ - : /`, found {bad:?}"
        ));
    }
    Ok(())
}
