//! Happy eyeballs (RFC 8305): connecting to a name with several addresses by racing them,
//! not trying them in turn, so that an address that does not answer (a broken IPv6 route, a
//! full accept queue) costs a quarter of a second rather than a whole connect timeout.
//!
//! The addresses are ordered IPv6 first, then alternating families. The first attempt starts
//! at once; each further one starts when the previous one has had its head start (the
//! connection attempt delay, 250 ms by default) or as soon as any attempt fails, whichever
//! comes first. Attempts already started keep running: the first to connect wins and the
//! driver closes the others. When every attempt has failed, the race fails with the last
//! error.
//!
//! I/O-free: the driver (`driver::connector`) starts and polls the sockets and tells the race
//! what happened and when; the race answers which address to try next and until when to
//! wait.

use std::time::{Duration, Instant};

use crate::addr::Address;

/// RFC 8305's recommended connection attempt delay.
pub(crate) const DEFAULT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The state of one connection race (see the module docs). `E` is the attempts' error.
#[derive(Debug)]
pub(crate) struct Race<E> {
    /// Every address, in attempt order.
    order: Vec<Address>,
    /// How many attempts have started (the next one is `order[started]`).
    started: usize,
    /// Attempts started and not yet failed.
    in_flight: usize,
    /// When the next attempt may start: `None` at once (nothing started yet, or an attempt
    /// just failed), else the latest start plus the delay.
    next_due: Option<Instant>,
    delay: Duration,
    last_error: Option<E>,
    won: bool,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<E> {
    /// Start attempt `index` to this address now (then ask again).
    Start(usize, Address),
    /// Wait for an attempt's outcome, or until this instant (`None`: no deadline, the
    /// attempts in flight are all that is left).
    Wait(Option<Instant>),
    /// Every attempt failed; this is the last error.
    Failed(E),
    /// No address to try at all.
    Empty,
    /// An attempt won; nothing more to do.
    Done,
}

impl<E> Race<E> {
    /// A race over `addrs` (in the resolver's order) with this head start per attempt.
    pub(crate) fn new(addrs: Vec<Address>, delay: Duration) -> Self {
        Self {
            order: interleave(addrs),
            started: 0,
            in_flight: 0,
            next_due: None,
            delay,
            last_error: None,
            won: false,
        }
    }

    /// What to do at `now`: start the next attempt, wait, or give up.
    pub(crate) fn next(&mut self, now: Instant) -> Next<E> {
        if self.won {
            return Next::Done;
        }
        let remaining = self.started < self.order.len();
        if remaining {
            match self.next_due {
                Some(due) if now < due => return Next::Wait(Some(due)),
                _ => {
                    let index = self.started;
                    self.started += 1;
                    self.in_flight += 1;
                    self.next_due = Some(now + self.delay);
                    return Next::Start(index, self.order[index]);
                }
            }
        }
        if self.in_flight > 0 {
            return Next::Wait(None);
        }
        match self.last_error.take() {
            Some(e) => Next::Failed(e),
            None => Next::Empty,
        }
    }

    /// Attempt `index` failed with `error` (kept if it is the last): the next attempt may
    /// start at once, whatever is still in flight (RFC 8305 section 5).
    pub(crate) fn failed(&mut self, index: usize, error: E) {
        debug_assert!(index < self.started);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_error = Some(error);
        self.next_due = None;
    }

    /// Attempt `index` connected: it wins, and the driver closes every other one.
    pub(crate) fn connected(&mut self, index: usize) {
        debug_assert!(index < self.started);
        self.won = true;
    }
}

/// RFC 8305 section 4: IPv6 first, then the families alternate, each in the resolver's
/// order (which RFC 6724 has already sorted).
fn interleave(addrs: Vec<Address>) -> Vec<Address> {
    let (v6, v4): (Vec<Address>, Vec<Address>) = addrs.into_iter().partition(|a| a.ip().is_ipv6());
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ipv6_first_then_alternating() {
        let order = interleave(vec![
            addr("127.0.0.1:1"),
            addr("127.0.0.2:1"),
            addr("127.0.0.3:1"),
            addr("[::1]:1"),
            addr("[::2]:1"),
        ]);
        let text: Vec<String> = order.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["[::1]:1", "127.0.0.1:1", "[::2]:1", "127.0.0.2:1", "127.0.0.3:1"]
        );
        assert!(interleave(Vec::new()).is_empty());
    }

    #[test]
    fn the_second_family_starts_after_the_head_start_and_the_first_to_connect_wins() {
        let t0 = Instant::now();
        let mut race: Race<&str> = Race::new(vec![addr("127.0.0.1:7"), addr("[::1]:7")], ms(250));
        assert_eq!(race.next(t0), Next::Start(0, addr("[::1]:7")));
        // IPv6 has its head start: nothing else before 250 ms.
        assert_eq!(race.next(t0), Next::Wait(Some(t0 + ms(250))));
        assert_eq!(race.next(t0 + ms(249)), Next::Wait(Some(t0 + ms(250))));
        assert_eq!(race.next(t0 + ms(250)), Next::Start(1, addr("127.0.0.1:7")));
        // Both run in parallel now; nothing is left to start.
        assert_eq!(race.next(t0 + ms(300)), Next::Wait(None));
        race.connected(1);
        assert_eq!(race.next(t0 + ms(301)), Next::Done);
    }

    #[test]
    fn a_failure_starts_the_next_attempt_at_once() {
        let t0 = Instant::now();
        let addrs = vec![addr("[::1]:7"), addr("127.0.0.1:7"), addr("[::2]:7")];
        let mut race: Race<&str> = Race::new(addrs, ms(250));
        assert_eq!(race.next(t0), Next::Start(0, addr("[::1]:7")));
        race.failed(0, "refused");
        assert_eq!(race.next(t0 + ms(3)), Next::Start(1, addr("127.0.0.1:7")));
        // The next one waits for its head start again, counted from the latest start.
        assert_eq!(race.next(t0 + ms(4)), Next::Wait(Some(t0 + ms(253))));
        assert_eq!(race.next(t0 + ms(253)), Next::Start(2, addr("[::2]:7")));
        race.failed(2, "unreachable");
        assert_eq!(race.next(t0 + ms(260)), Next::Wait(None));
        race.failed(1, "timed out");
        assert_eq!(race.next(t0 + ms(270)), Next::Failed("timed out"));
    }

    #[test]
    fn a_failure_does_not_wait_for_a_hanging_attempt() {
        let t0 = Instant::now();
        let addrs = vec![addr("[::1]:7"), addr("127.0.0.1:7"), addr("[::2]:7")];
        let mut race: Race<&str> = Race::new(addrs, ms(250));
        assert_eq!(race.next(t0), Next::Start(0, addr("[::1]:7")));
        assert_eq!(race.next(t0 + ms(250)), Next::Start(1, addr("127.0.0.1:7")));
        // The IPv4 attempt is refused at 260 ms while IPv6 still hangs: the third starts now,
        // not at 500 ms.
        race.failed(1, "refused");
        assert_eq!(race.next(t0 + ms(260)), Next::Start(2, addr("[::2]:7")));
        race.connected(0);
        assert_eq!(race.next(t0 + ms(270)), Next::Done);
    }

    #[test]
    fn every_attempt_failing_fails_with_the_last_error() {
        let t0 = Instant::now();
        let mut race: Race<u32> = Race::new(vec![addr("127.0.0.1:7")], ms(250));
        assert_eq!(race.next(t0), Next::Start(0, addr("127.0.0.1:7")));
        assert_eq!(race.next(t0 + ms(500)), Next::Wait(None));
        race.failed(0, 111);
        assert_eq!(race.next(t0 + ms(501)), Next::Failed(111));
        let mut empty: Race<u32> = Race::new(Vec::new(), ms(250));
        assert_eq!(empty.next(t0), Next::Empty);
    }

    #[test]
    fn a_slow_first_address_does_not_delay_the_others_beyond_their_turn() {
        // Four addresses none of which answers: attempts start at 0, 250, 500, 750 ms, all
        // in flight together.
        let t0 = Instant::now();
        let addrs = vec![
            addr("[::1]:7"),
            addr("[::2]:7"),
            addr("127.0.0.1:7"),
            addr("127.0.0.2:7"),
        ];
        let mut race: Race<()> = Race::new(addrs, ms(250));
        let mut starts = Vec::new();
        let mut now = t0;
        while now < t0 + ms(2000) {
            match race.next(now) {
                Next::Start(i, _) => starts.push((i, now - t0)),
                Next::Wait(Some(at)) => now = at,
                Next::Wait(None) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(starts, [(0, ms(0)), (1, ms(250)), (2, ms(500)), (3, ms(750))]);
    }
}
