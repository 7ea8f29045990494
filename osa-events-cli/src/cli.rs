//! The command line, as clap parses it: every command, its arguments and their help.

use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};

use crate::parse::{parse_duration, parse_reset_to, parse_time};

/// Operate osa-events handlers on PostgreSQL or SQLite: status, dead letters, replay, pause,
/// retirement, retention, and the web dashboard.
#[derive(Debug, Parser)]
#[command(name = "osa-events", version, propagate_version = true)]
pub(crate) struct Cli {
    /// The database, as a PostgreSQL url (postgres://user:password@host/db).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or upgrade the store's tables (the osa_events schema on PostgreSQL).
    Migrate,
    /// Every handler's and projection's figures.
    Status(StatusArgs),
    /// Dead letters: list, show, retry, purge.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Pending deliveries: cancel.
    #[command(subcommand)]
    Pending(PendingCommand),
    /// Deliver a stretch of the log again to one handler.
    Replay(ReplayArgs),
    /// Stop a handler on every node (deliveries accumulate).
    Pause(HandlerArg),
    /// Restart a paused handler.
    Resume(HandlerArg),
    /// Every subscription, orphans (renamed or removed handlers) marked.
    Subscriptions(JsonArg),
    /// Retire a handler: delete its open deliveries and dead letters, deliver it nothing more.
    Retire(RetireArgs),
    /// Delete old events nothing refers to any more.
    Prune(PruneArgs),
    /// The runtime instances seen recently.
    Nodes(JsonArg),
    /// Projections: status, reset.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Serve the web dashboard until Ctrl-C (this machine only, unless given a token).
    Dashboard(DashboardArgs),
}

/// `dashboard`.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// The address to listen on. Any address but a loopback one needs a token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// The token every request must present (at least 16 characters). Prefer the environment
    /// variable: a flag shows in the process list.
    #[arg(long, env = "OSA_EVENTS_DASHBOARD_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Hide every action (pause, resume, retry, purge, reset): for looking only.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// How often open pages refresh their figures.
    #[arg(long, value_name = "INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub(crate) refresh: Duration,
}

/// `--json`.
#[derive(Debug, Args)]
pub(crate) struct JsonArg {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// One handler, by its stored name.
#[derive(Debug, Args)]
pub(crate) struct HandlerArg {
    /// The handler's stored name (`namespace@name` in a namespace).
    pub(crate) handler: String,
}

/// `status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Refresh every INTERVAL (default 2s) until Ctrl-C.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s",
          value_parser = parse_duration)]
    pub(crate) watch: Option<Duration>,
    /// Print JSON instead of tables (one document per refresh with --watch).
    #[arg(long)]
    pub(crate) json: bool,
}

/// `dead ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadCommand {
    /// List dead letters, oldest key first.
    List(DeadListArgs),
    /// Show one delivery in full: payload, metadata, attempts, last error, timestamps.
    Show(DeadShowArgs),
    /// Put dead letters back into work: attempts reset, due now.
    Retry(ChangeArgs),
    /// Delete dead letters.
    Purge(ChangeArgs),
}

/// `pending ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum PendingCommand {
    /// Delete pending deliveries (never a claimed one).
    Cancel(ChangeArgs),
}

/// Filters every listing and selection shares.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct Filters {
    /// Only this handler's (its stored name).
    #[arg(long)]
    pub(crate) handler: Option<String>,
    /// Only events of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Option<String>,
    /// Only deliveries whose last error contains TEXT (case-sensitive).
    #[arg(long, value_name = "TEXT")]
    pub(crate) error: Option<String>,
    /// Only deliveries that last changed at or after TIME (RFC 3339, or a duration ago: 1h).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) since: Option<SystemTime>,
    /// Only deliveries that last changed before TIME (RFC 3339, or a duration ago: 10m).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) until: Option<SystemTime>,
}

impl Filters {
    /// Whether any filter is given.
    pub(crate) fn any(&self) -> bool {
        self.handler.is_some()
            || self.event_type.is_some()
            || self.error.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

/// `dead list`.
#[derive(Debug, Args)]
pub(crate) struct DeadListArgs {
    #[command(flatten)]
    pub(crate) filters: Filters,
    /// Show at most N.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) limit: u64,
    /// Print JSON (an array) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `dead show`.
#[derive(Debug, Args)]
pub(crate) struct DeadShowArgs {
    /// The handler's stored name.
    pub(crate) handler: String,
    /// The event's position in the log.
    pub(crate) position: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Confirmation of a destructive command.
#[derive(Debug, Args, Clone, Copy)]
pub(crate) struct Confirm {
    /// Go ahead without asking.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    /// Only show what would be done.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// `dead retry`, `dead purge`, `pending cancel`: a selection, worked through in chunks.
#[derive(Debug, Args)]
pub(crate) struct ChangeArgs {
    #[command(flatten)]
    pub(crate) filters: Filters,
    /// Only the delivery of the event at this position (with --handler).
    #[arg(long, value_name = "P", requires = "handler")]
    pub(crate) position: Option<i64>,
    /// Select every one (required when no filter is given).
    #[arg(long, conflicts_with_all = ["handler", "event_type", "error", "since", "until", "position"])]
    pub(crate) all: bool,
    /// How many one transaction changes.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) chunk: u64,
    #[command(flatten)]
    pub(crate) confirm: Confirm,
}

/// `replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The handler's stored name.
    pub(crate) handler: String,
    /// Start at this position of the log (inclusive).
    #[arg(long, value_name = "P", conflicts_with = "since")]
    pub(crate) from_position: Option<i64>,
    /// Only events published at or after TIME (RFC 3339, or a duration ago: 1h).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) since: Option<SystemTime>,
    /// End at this position of the log (inclusive; default: the head as the replay starts).
    #[arg(long, value_name = "P")]
    pub(crate) through_position: Option<i64>,
    /// Only events published before TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) until: Option<SystemTime>,
    /// Only events of this type (the handler's own).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Option<String>,
    /// Only events published with this routing key.
    #[arg(long, value_name = "KEY")]
    pub(crate) routing_key: Option<String>,
    /// How many events of the log one transaction reads.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) chunk: u32,
    #[command(flatten)]
    pub(crate) confirm: Confirm,
}

/// `retire`.
#[derive(Debug, Args)]
pub(crate) struct RetireArgs {
    /// The handler's stored name.
    pub(crate) handler: String,
    /// Also when a live node still runs it.
    #[arg(long)]
    pub(crate) even_if_running: bool,
    #[command(flatten)]
    pub(crate) confirm: Confirm,
}

/// `prune`.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Only events published longer ago than this (30days, 12h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) older_than: Duration,
    /// Also delete dead letters of those events (kept by default).
    #[arg(long)]
    pub(crate) include_dead: bool,
    /// How many events of the log one transaction examines (small steps keep publishers'
    /// latency low: each step's WAL is flushed ahead of their commits).
    #[arg(long, value_name = "N", default_value_t = osa_events::operations::Prune::DEFAULT_BATCH,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) batch: u32,
    #[command(flatten)]
    pub(crate) confirm: Confirm,
}

/// `projections ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// Every projection's checkpoint, lag, leader and last error.
    Status(JsonArg),
    /// Rewind (or fast-forward) a projection.
    Reset(ResetArgs),
}

/// `projections reset`.
#[derive(Debug, Args)]
pub(crate) struct ResetArgs {
    /// The projection's name.
    pub(crate) name: String,
    /// Where to: `beginning` (apply the whole log again), `end` (only what commits from now on),
    /// or a position (apply what follows it).
    #[arg(long, value_name = "beginning|end|POSITION", default_value = "beginning",
          value_parser = parse_reset_to)]
    pub(crate) to: osa_events::ResetTo,
    #[command(flatten)]
    pub(crate) confirm: Confirm,
}
