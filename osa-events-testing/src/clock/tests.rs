//! Every test here runs on fake time only: none of them waits on the wall clock.

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use osa_events::Clock;

use super::FakeClock;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn time_stands_still_until_advanced() {
    let clock = FakeClock::new();
    let start = clock.now();
    std::thread::yield_now();
    assert_eq!(clock.now(), start);
    clock.advance(SECOND * 90);
    assert_eq!(clock.now() - start, SECOND * 90);
    clock.advance_to(start + SECOND * 100);
    assert_eq!(clock.now() - start, SECOND * 100);
}

#[test]
fn clones_share_one_time() {
    let clock = FakeClock::new();
    let twin = clock.clone();
    twin.advance(SECOND);
    assert_eq!(clock.now(), twin.now());
    assert_eq!(Clock::now(&clock), twin.now());
}

#[test]
fn a_sleep_completes_exactly_at_its_deadline() {
    let clock = FakeClock::new();
    let mut nap = clock.sleep(SECOND * 10);
    assert!((&mut nap).now_or_never().is_none());
    clock.advance(SECOND * 9);
    assert!((&mut nap).now_or_never().is_none(), "one second early");
    clock.advance(SECOND);
    assert!(nap.now_or_never().is_some(), "due at its deadline");
}

#[test]
fn the_deadline_is_fixed_when_sleep_is_called() {
    let clock = FakeClock::new();
    let nap = clock.sleep(SECOND * 2);
    clock.advance(SECOND * 2); // before the first poll
    assert!(nap.now_or_never().is_some());
}

#[test]
fn a_zero_sleep_completes_at_once() {
    let clock = FakeClock::new();
    assert!(clock.sleep(Duration::ZERO).now_or_never().is_some());
    assert_eq!(clock.sleepers(), 0);
}

#[test]
fn advance_wakes_every_due_sleep_in_deadline_order() {
    let clock = FakeClock::new();
    let mut naps: FuturesUnordered<_> = [3_u64, 1, 4, 2]
        .into_iter()
        .map(|secs| {
            clock
                .sleep(SECOND * u32::try_from(secs).unwrap())
                .map(move |()| secs)
        })
        .collect();
    // Poll once so that every sleep has a waker registered before time moves.
    assert!(naps.next().now_or_never().is_none());
    assert_eq!(clock.sleepers(), 4);
    assert_eq!(clock.next_deadline(), Some(clock.now() + SECOND));

    clock.advance(SECOND * 3);
    let mut woken = Vec::new();
    while let Some(Some(secs)) = naps.next().now_or_never() {
        woken.push(secs);
    }
    assert_eq!(
        woken,
        [1, 2, 3],
        "woken earliest first, the 4 s sleep still waits"
    );
    assert_eq!(clock.sleepers(), 1);
}

#[test]
fn dropping_a_sleep_unregisters_it() {
    let clock = FakeClock::new();
    let nap = clock.sleep(SECOND);
    let other = clock.sleep(SECOND * 2);
    assert_eq!(clock.sleepers(), 2);
    drop(nap);
    assert_eq!(clock.sleepers(), 1);
    assert_eq!(clock.next_deadline(), Some(clock.now() + SECOND * 2));
    drop(other);
    assert_eq!(clock.next_deadline(), None);
}

#[test]
fn advancing_to_now_wakes_only_what_is_due() {
    let clock = FakeClock::new();
    let nap = clock.sleep(SECOND);
    clock.advance_to(clock.now());
    assert!(nap.now_or_never().is_none());
}

#[test]
#[should_panic(expected = "time never goes back")]
fn advance_to_the_past_panics() {
    let clock = FakeClock::new();
    let start = clock.now();
    clock.advance(SECOND);
    clock.advance_to(start);
}

#[tokio::test(flavor = "current_thread")]
async fn a_spawned_sleeper_runs_after_advance_and_a_yield() {
    let clock = FakeClock::new();
    let nap = tokio::spawn(clock.sleep(SECOND * 300));
    tokio::task::yield_now().await;
    assert_eq!(clock.sleepers(), 1);
    clock.advance(SECOND * 300);
    tokio::time::timeout(SECOND * 5, nap)
        .await
        .expect("woken by advance, not by the wall clock")
        .unwrap();
}
