//! `replay`: deliver a stretch of the log again to one handler, step by step (one transaction
//! each), with a progress line, until done or Ctrl-C.

use osa_events::operations::{Operations, Replay};

use crate::cli::ReplayArgs;
use crate::error::CliError;
use crate::format::time;
use crate::store::subscription;
use crate::term::{Decision, Interrupt, Progress, confirm};

/// Runs `replay`.
pub(crate) async fn run(ops: &dyn Operations, args: &ReplayArgs) -> Result<(), CliError> {
    let info = subscription(ops, &args.handler).await?;
    // The store refuses these too, but only at the first step: say so before asking.
    if info.retired_at.is_some() {
        return Err(CliError::op(format!(
            "handler `{}` is retired: nothing is delivered to it",
            info.name
        )));
    }
    if let Some(asked) = args.event_type.as_deref().filter(|t| *t != info.event_type) {
        return Err(CliError::op(format!(
            "handler `{}` receives `{}` events, not `{asked}` (--type)",
            info.name, info.event_type
        )));
    }
    let after = args.from_position.map_or(0, |from| (from - 1).max(0));
    let head = ops.status().await?.head;
    let end = args.through_position.unwrap_or(head).min(head);
    let replay = Replay {
        handler: args.handler.clone(),
        after_position: after,
        through_position: args.through_position,
        published_after: args.since,
        published_before: args.until,
        event_type: args.event_type.clone(),
        routing_key: args.routing_key.clone(),
        chunk: args.chunk,
    };

    let mut plan = format!(
        "replay to `{}` the `{}` events",
        info.name,
        args.event_type.as_deref().unwrap_or(&info.event_type)
    );
    if let Some(key) = args.routing_key.as_deref().or(info.routing_key.as_deref()) {
        plan.push_str(&format!(" with routing key `{key}`"));
    }
    plan.push_str(&format!(" at positions {}..={end} of the log", after + 1));
    if let Some(since) = args.since {
        plan.push_str(&format!(", published since {}", time(since)));
    }
    if let Some(until) = args.until {
        plan.push_str(&format!(", published before {}", time(until)));
    }
    if end <= after {
        println!("nothing to replay: the log ends at position {head}");
        return Ok(());
    }
    println!("{} positions of the log to read (head {head})", end - after);
    if confirm(args.confirm, &plan)? == Decision::DryRun {
        return Ok(());
    }

    let interrupt = Interrupt::install().await;
    let mut progress = Progress::new("replayed");
    let (mut delivered, mut skipped) = (0u64, 0u64);
    let mut through = after;
    let mut end = None;
    loop {
        let step = match ops.replay(&replay, through, end).await {
            Ok(step) => step,
            Err(error) => {
                progress.finish();
                if delivered > 0 {
                    eprintln!("delivered {delivered} events again before the error");
                }
                return Err(error.into());
            }
        };
        delivered += step.delivered;
        skipped += step.skipped;
        through = step.through;
        end = Some(step.end);
        let read = (through - after).max(0) as u64;
        let total = (step.end - after).max(0) as u64;
        progress.update(read, Some(total), "positions");
        if step.done {
            break;
        }
        if interrupt.pressed() {
            progress.finish();
            println!(
                "interrupted at position {through}: delivered {delivered} events again \
                 ({skipped} skipped); continue with --from-position {}",
                through + 1
            );
            return Err(CliError::op("interrupted by Ctrl-C"));
        }
    }
    progress.finish();
    println!(
        "delivered {delivered} events again to `{}` through position {through}",
        info.name
    );
    if skipped > 0 {
        println!(
            "skipped {skipped}: the handler still had an open delivery or a dead letter of them \
             (retry those with `osa-events dead retry --handler {}`)",
            info.name
        );
    }
    Ok(())
}
