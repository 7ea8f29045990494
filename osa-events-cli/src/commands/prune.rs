//! `prune`: delete old events nothing refers to any more, step by step (one short transaction
//! each), with a progress line, until done or Ctrl-C.

use std::time::{Duration, SystemTime};

use osa_events::operations::{DeliveryState, Operations, Prune, Selector};

use crate::cli::PruneArgs;
use crate::commands::dead::scan;
use crate::error::CliError;
use crate::format::{age, time};
use crate::term::{Decision, Interrupt, Progress, confirm};

/// How long a step waits for another prune's retention lock before giving up.
const BUSY_FOR: Duration = Duration::from_secs(30);

/// Runs `prune`.
pub(crate) async fn run(ops: &dyn Operations, args: &PruneArgs) -> Result<(), CliError> {
    let cutoff = SystemTime::now()
        .checked_sub(args.older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let head = ops.status().await?.head;
    println!(
        "events published before {} (older than {}) that no open delivery or dead letter refers \
         to and every projection has passed would be deleted; the log's head is {head}",
        time(cutoff),
        age(args.older_than)
    );
    let action = if args.include_dead {
        // Dead letters of events older than the cutoff: they go with their events.
        let mut dead = 0u64;
        scan(
            ops,
            &Selector::default(),
            DeliveryState::Dead,
            u64::MAX,
            |page| {
                dead += page.iter().filter(|d| d.published_at < cutoff).count() as u64;
            },
        )
        .await?;
        println!("{dead} dead letters of those events would be deleted with them");
        format!(
            "prune events older than {} and {dead} dead letters",
            age(args.older_than)
        )
    } else {
        println!("dead letters and their events are kept (--include-dead deletes them too)");
        format!("prune events older than {}", age(args.older_than))
    };
    if confirm(args.confirm, &action)? == Decision::DryRun {
        return Ok(());
    }

    let prune = Prune {
        older_than: args.older_than,
        include_dead: args.include_dead,
        batch: args.batch,
    };
    let interrupt = Interrupt::install().await;
    let mut progress = Progress::new("examined");
    let (mut events, mut dead, mut kept) = (0u64, 0u64, 0u64);
    let mut after = 0i64;
    let mut busy_since: Option<tokio::time::Instant> = None;
    loop {
        let step = match ops.prune(&prune, after).await {
            Ok(step) => step,
            Err(error) => {
                progress.finish();
                if events > 0 {
                    eprintln!("deleted {events} events before the error");
                }
                return Err(error.into());
            }
        };
        if step.busy {
            let since = *busy_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > BUSY_FOR {
                progress.finish();
                return Err(CliError::op(format!(
                    "another prune holds the retention lock (waited {}): try again later",
                    age(BUSY_FOR)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        } else {
            busy_since = None;
            events += step.events;
            dead += step.dead;
            kept += step.kept;
            after = step.through;
            progress.update(
                after.max(0) as u64,
                Some(head.max(after) as u64),
                "positions",
            );
            if step.done {
                break;
            }
        }
        if interrupt.pressed() {
            progress.finish();
            println!(
                "interrupted at position {after}: deleted {events} events and {dead} dead \
                 letters, kept {kept}; run the command again for the rest"
            );
            return Err(CliError::op("interrupted by Ctrl-C"));
        }
    }
    progress.finish();
    println!(
        "deleted {events} events and {dead} dead letters; kept {kept} still referred to or not \
         yet passed by every projection (examined through position {after})"
    );
    Ok(())
}
