//! The engine's drain barrier: connections that other shards write to (followers, see
//! [`Transport::follow_drain`](crate::Transport::follow_drain)) are told to drain only once
//! no shard has other work left, so that what that work still writes reaches them.
//!
//! ```text
//!   shard 0  leads ──drain──▶ its leaders end ──▶ done ─┐
//!   shard 1  leads ──drain──────────▶ its leaders end ──▶ done ─▶ passed: followers told
//! ```
//!
//! Every shard leads from the engine's start. A draining shard reports, as it polls, whether
//! it still has leader work (connections that do not follow, handshakes, accepts, tasks,
//! calls in flight); when it has none it is done, and the engine-wide count of leading shards
//! goes down. Work that comes back before the barrier passes (a task spawned by a call from a
//! shard still leading) makes it lead again. The barrier passes when no shard leads, and
//! stays passed. A shard that stops (its drain timed out, or it was aborted) leaves for good.
//! However slow the others, a shard tells its followers at the latest at [`release_at`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The engine-wide count of shards that still lead (have work other than followers).
#[derive(Debug)]
pub(crate) struct DrainBarrier {
    leading: AtomicUsize,
}

/// Where one shard stands at the barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Leg {
    /// Counted as leading: serving, or draining with leader work left.
    #[default]
    Leading,
    /// Draining with no leader work left: not counted.
    Done,
    /// Stopped: never counted again.
    Left,
}

impl DrainBarrier {
    /// A barrier for `shards` shards, every one of them leading.
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            leading: AtomicUsize::new(shards),
        }
    }

    /// True once no shard leads; then true for good.
    pub(crate) fn passed(&self) -> bool {
        self.leading.load(Ordering::Acquire) == 0
    }

    /// A shard in `leg` has leader work now (`leading`) or not: its leg after the report.
    /// A done shard leads again only while the barrier has not passed.
    pub(crate) fn report(&self, leg: Leg, leading: bool) -> Leg {
        match (leg, leading) {
            (Leg::Leading, false) => {
                self.leading.fetch_sub(1, Ordering::AcqRel);
                Leg::Done
            }
            (Leg::Done, true) => {
                let rejoined = self
                    .leading
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > 0).then(|| n + 1));
                if rejoined.is_ok() { Leg::Leading } else { Leg::Done }
            }
            _ => leg,
        }
    }

    /// A shard in `leg` stops: it no longer holds the barrier, and never will again.
    pub(crate) fn leave(&self, leg: Leg) -> Leg {
        if leg == Leg::Leading {
            self.leading.fetch_sub(1, Ordering::AcqRel);
        }
        Leg::Left
    }
}

/// When a shard whose drain started at `start` and ends at `start + timeout` tells its
/// followers at the latest, whatever the other shards: with a quarter of the timeout left, so
/// that they have time to flush and close before the rest is aborted.
pub(crate) fn release_at(start: Instant, timeout: Duration) -> Instant {
    start + (timeout - timeout / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_once_every_shard_is_done() {
        let b = DrainBarrier::new(2);
        let a = b.report(Leg::Leading, false);
        assert_eq!(a, Leg::Done);
        assert!(!b.passed(), "shard 1 still leads");
        let c = b.report(Leg::Leading, true);
        assert_eq!(c, Leg::Leading);
        assert!(!b.passed());
        assert_eq!(b.report(c, false), Leg::Done);
        assert!(b.passed());
    }

    #[test]
    fn a_single_shard_passes_when_its_leaders_end() {
        let b = DrainBarrier::new(1);
        let leg = b.report(Leg::Leading, true);
        assert!(!b.passed());
        b.report(leg, false);
        assert!(b.passed());
    }

    #[test]
    fn reports_repeat_without_counting_twice() {
        let b = DrainBarrier::new(2);
        let mut leg = Leg::Leading;
        for _ in 0..3 {
            leg = b.report(leg, false);
        }
        assert_eq!(leg, Leg::Done);
        assert!(!b.passed(), "one shard done three times is still one");
    }

    #[test]
    fn work_that_comes_back_holds_the_barrier_until_it_ends() {
        let b = DrainBarrier::new(2);
        let mut first = b.report(Leg::Leading, false);
        // A call from the shard still leading spawned a task on the one that was done.
        first = b.report(first, true);
        assert_eq!(first, Leg::Leading);
        let second = b.report(Leg::Leading, false);
        assert!(!b.passed(), "the task still runs");
        b.report(first, false);
        assert!(b.passed());
        assert_eq!(b.report(second, false), Leg::Done);
    }

    #[test]
    fn once_passed_it_stays_passed() {
        let b = DrainBarrier::new(2);
        let first = b.report(Leg::Leading, false);
        let second = b.report(Leg::Leading, false);
        assert!(b.passed());
        // Followers may already be told: work that starts now does not hold them back.
        assert_eq!(b.report(first, true), Leg::Done);
        assert_eq!(b.report(second, true), Leg::Done);
        assert!(b.passed());
    }

    #[test]
    fn a_shard_that_leaves_holds_nothing_and_never_leads_again() {
        let b = DrainBarrier::new(3);
        // Aborted while leading, and stopped after it was done.
        let aborted = b.leave(Leg::Leading);
        let done = b.report(Leg::Leading, false);
        assert_eq!(b.leave(done), Leg::Left);
        assert!(!b.passed(), "the third still leads");
        assert_eq!(b.report(aborted, true), Leg::Left);
        assert_eq!(b.leave(aborted), Leg::Left);
        assert!(!b.passed(), "leaving twice counts once");
        b.report(Leg::Leading, false);
        assert!(b.passed());
    }

    #[test]
    fn followers_are_told_with_a_quarter_of_the_timeout_left() {
        let start = Instant::now();
        assert_eq!(
            release_at(start, Duration::from_secs(10)),
            start + Duration::from_millis(7500)
        );
        assert_eq!(release_at(start, Duration::ZERO), start);
    }
}
