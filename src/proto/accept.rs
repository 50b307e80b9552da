//! The accept path's policy, free of I/O: bounded bursts, the errno policy, EMFILE recovery
//! with a reserved descriptor, and rate-limited logging (Twisted's `_accept`,
//! `_IFileDescriptorReservation`, `_BuffersLogs` and `_ACCEPT_ERRORS`).
//!
//! The shard's port drives it with a real listener; the tests below drive it with scripted
//! errnos.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Something that accepts one connection per call without blocking.
pub(crate) trait AcceptSource {
    /// An accepted connection; dropping it closes it.
    type Conn;
    /// Accepts one pending connection, or fails with `WouldBlock` when none is queued.
    fn accept(&mut self) -> io::Result<(Self::Conn, SocketAddr)>;
}

/// The emergency slots in the process's descriptor table (Twisted's
/// `_IFileDescriptorReservation`), as one shard sees them: on EMFILE one is freed so that one
/// more `accept` can succeed. `C` is an accepted connection, which can take a missing slot's
/// place.
pub(crate) trait Reservation<C> {
    /// True while a slot is missing: one was freed (for a recovery under way, or lost to a
    /// race) and not taken back yet.
    fn missing(&self) -> bool;
    /// Frees one slot; false if none is held.
    fn release(&mut self) -> bool;
    /// Takes a missing slot back (a descriptor opened for the purpose). Does nothing if none
    /// is missing.
    ///
    /// # Errors
    ///
    /// The OS error when no slot can be taken (the table is full).
    fn reserve(&mut self) -> io::Result<()>;
    /// While a slot is missing, sheds `conn` (its peer reads the end of the stream) and keeps
    /// its descriptor as the slot; otherwise gives it back.
    fn keep(&mut self, conn: C) -> Option<C>;
}

/// A reservation that never holds anything (Twisted's `_NullFileDescriptorReservation`), for
/// engines configured without one.
#[derive(Debug, Default)]
pub(crate) struct NullReservation;

impl<C> Reservation<C> for NullReservation {
    fn missing(&self) -> bool {
        false
    }
    fn release(&mut self) -> bool {
        false
    }
    fn reserve(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn keep(&mut self, conn: C) -> Option<C> {
        Some(conn)
    }
}

/// The reserved descriptors of all of an engine's shards (one each), in one place: the table
/// they stand in is the process's, so a slot one shard frees may be taken by another, and
/// only a count they all see can make it come back.
///
/// Why the queues drain when shards race for freed slots:
/// - [`take`](Self::take) publishes that a slot is missing before its caller closes the
///   descriptor. The kernel's descriptor-table lock orders that close before whichever
///   `accept` gets the slot, so that `accept`'s caller sees the count.
/// - Every shard, after every `accept` that succeeds while a slot is missing, keeps the new
///   connection as the slot ([`Reservation::keep`]): the client is shed, the slot is back.
///   The recovering shard does the same with what it accepts, so it never has to open a
///   descriptor again once it has shed something.
/// - So a slot freed on EMFILE ends up reserved again whichever shard's `accept` wins it,
///   each freed slot sheds one queued client, and while a shard recovers the others still
///   have their slots to recover with: a shard that sees EMFILE finds a slot, or finds every
///   slot out with another shard's recovery and tries again after its back-off.
/// - A descriptor opened outside the accept path (a side thread, a protocol's own
///   connection) can still take a freed slot; the count stays short until a slot frees
///   anywhere, and every shard asks for it first ([`Reservation::reserve`] at each burst and
///   after each back-off, [`Reservation::keep`] at each accept) before it serves anyone.
#[derive(Debug)]
pub(crate) struct Spares<F> {
    held: Mutex<Vec<F>>,
    /// How many slots the engine holds when none is missing.
    target: usize,
    /// `target` less the slots held, updated under `held`'s lock and read without it.
    missing: AtomicUsize,
}

impl<F> Spares<F> {
    /// No slot held yet, `target` wanted.
    pub(crate) fn new(target: usize) -> Self {
        Self {
            held: Mutex::new(Vec::with_capacity(target)),
            target,
            missing: AtomicUsize::new(target),
        }
    }

    /// True while fewer than `target` slots are held.
    pub(crate) fn missing(&self) -> bool {
        self.missing.load(Ordering::SeqCst) > 0
    }

    /// Takes a slot out, counted as missing before it is returned: the caller frees it.
    pub(crate) fn take(&self) -> Option<F> {
        let mut held = self.lock();
        let slot = held.pop();
        self.publish(&held);
        slot
    }

    /// Holds `slot` if one is missing, after `prepare`; otherwise gives it back.
    pub(crate) fn put(&self, slot: F, prepare: impl FnOnce(&F)) -> Option<F> {
        let mut held = self.lock();
        if held.len() >= self.target {
            return Some(slot);
        }
        prepare(&slot);
        held.push(slot);
        self.publish(&held);
        None
    }

    fn lock(&self) -> MutexGuard<'_, Vec<F>> {
        // The vector is whole whatever panicked while it was locked.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, held: &[F]) {
        self.missing
            .store(self.target.saturating_sub(held.len()), Ordering::SeqCst);
    }
}

/// What the port does about an accept error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorAction {
    /// A per-connection failure (ECONNABORTED, EPERM from a firewall): skip it and go on.
    Skip,
    /// Out of descriptors: free the reservation and drain the queue, if it is held.
    Emfile,
    /// A resource shortage (ENFILE, ENOBUFS, ENOMEM): pause accepting briefly, never stop.
    Backoff,
    /// Anything else: the listener is broken, stop this port.
    Fatal,
}

/// Classifies an accept error by errno.
pub(crate) fn classify(err: &io::Error) -> ErrorAction {
    match err.raw_os_error() {
        Some(libc::ECONNABORTED | libc::EPERM | libc::EINTR | libc::EPROTO) => ErrorAction::Skip,
        Some(libc::EMFILE) => ErrorAction::Emfile,
        Some(libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => ErrorAction::Backoff,
        _ => ErrorAction::Fatal,
    }
}

/// Something that happened during a burst, logged after it (nothing on the accept path may
/// open a descriptor, and a log sink might).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptEvent {
    /// An accept failed with this errno.
    Error(i32),
    /// EMFILE: the reservation was released and this many queued connections were closed.
    EmfileRecovered(usize),
    /// The reservation could not be taken again (errno).
    ReserveFailed(i32),
}

/// The result of one burst.
#[derive(Debug, Default)]
pub(crate) struct Burst {
    /// Connections handed on.
    pub(crate) accepted: usize,
    /// Connections accepted and closed during EMFILE recovery.
    pub(crate) recovered: usize,
    /// Pause before the next accept.
    pub(crate) backoff: bool,
    /// The listener failed for good.
    pub(crate) fatal: Option<io::Error>,
    /// Events to log and count once the burst is over.
    pub(crate) events: Vec<AcceptEvent>,
}

/// Accepts up to `limit` connections, handing each to `on_conn`. `first` is an accept result
/// already in hand (from the reactor's wake-up); it counts as the first attempt. While a
/// reserved slot is missing, a connection accepted is shed and kept as the slot instead.
pub(crate) fn accept_burst<S: AcceptSource>(
    src: &mut S,
    reservation: &mut dyn Reservation<S::Conn>,
    first: Option<io::Result<(S::Conn, SocketAddr)>>,
    limit: usize,
    mut on_conn: impl FnMut(S::Conn, SocketAddr),
) -> Burst {
    let mut burst = Burst::default();
    if reservation.missing() {
        // Best effort: a descriptor may have been freed since the last failure.
        let _ = reservation.reserve();
    }
    let mut kept = 0;
    let mut next = first;
    for _ in 0..limit.max(1) {
        let err = match next.take().unwrap_or_else(|| src.accept()) {
            Ok((conn, peer)) => {
                match reservation.keep(conn) {
                    Some(conn) => {
                        burst.accepted += 1;
                        on_conn(conn, peer);
                    }
                    // The slot it took was a reserved one (freed by this shard or another,
                    // or lost to a race): it is reserved again, and this client is shed.
                    None => kept += 1,
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => e,
        };
        let errno = err.raw_os_error().unwrap_or(0);
        match classify(&err) {
            ErrorAction::Skip => burst.events.push(AcceptEvent::Error(errno)),
            ErrorAction::Emfile => {
                burst.events.push(AcceptEvent::Error(errno));
                kept += recover_from_emfile(src, reservation, limit, &mut burst);
                break;
            }
            ErrorAction::Backoff => {
                burst.events.push(AcceptEvent::Error(errno));
                burst.backoff = true;
                break;
            }
            ErrorAction::Fatal => {
                burst.fatal = Some(err);
                break;
            }
        }
    }
    burst.recovered += kept;
    if kept > 0 {
        burst.events.push(AcceptEvent::EmfileRecovered(kept));
    }
    burst
}

/// Sheds the queue one reserved slot at a time: frees a slot, accepts into it, and keeps the
/// connection (shut down) as the slot, until nothing is queued. Returns the connections shed.
fn recover_from_emfile<S: AcceptSource>(
    src: &mut S,
    reservation: &mut dyn Reservation<S::Conn>,
    limit: usize,
    burst: &mut Burst,
) -> usize {
    let mut shed = 0;
    for _ in 0..limit.max(1) {
        if !reservation.release() {
            // Every slot is out: with other shards' recoveries, or lost to another opener
            // of descriptors. They come back when those end (or a descriptor closes).
            burst.backoff = true;
            return shed;
        }
        match src.accept() {
            Ok((conn, _)) => {
                shed += 1;
                // Dropped (closed) only when the slot was taken back meanwhile.
                drop(reservation.keep(conn));
            }
            Err(e) => {
                let nothing_queued = e.kind() == io::ErrorKind::WouldBlock;
                if !nothing_queued {
                    // EMFILE again: a descriptor opened elsewhere (another shard's accept,
                    // which keeps it as the slot, or anything else) took the freed slot.
                    burst
                        .events
                        .push(AcceptEvent::Error(e.raw_os_error().unwrap_or(0)));
                }
                if let Err(e) = reservation.reserve()
                    && reservation.missing()
                {
                    // Still missing (another shard's accept may have kept the slot meanwhile,
                    // which is as good): every accept and back-off asks for it from now on.
                    burst
                        .events
                        .push(AcceptEvent::ReserveFailed(e.raw_os_error().unwrap_or(0)));
                    burst.backoff = true;
                }
                if !nothing_queued || shed == 0 {
                    // Linux allocates the descriptor before it looks at the queue, so a full
                    // table fails every accept with EMFILE, queued connection or not.
                    // Nothing was queued, or the slot was lost: wait a little instead of
                    // asking again at once.
                    burst.backoff = true;
                }
                return shed;
            }
        }
    }
    shed
}

/// Twisted's adaptive `numberAccepts`: the burst grows by 20 while bursts fill up and shrinks
/// to what was accepted otherwise, so that an accept storm cannot starve live connections.
#[derive(Debug, Clone)]
pub(crate) struct BurstSizer {
    current: usize,
    max: usize,
}

impl BurstSizer {
    /// Starts at `initial`, never above `max`.
    pub(crate) fn new(initial: usize, max: usize) -> Self {
        let max = max.max(1);
        Self {
            current: initial.clamp(1, max),
            max,
        }
    }

    /// The limit for the next burst.
    pub(crate) fn limit(&self) -> usize {
        self.current
    }

    /// Adapts after a burst that accepted `accepted` connections.
    pub(crate) fn record(&mut self, accepted: usize) {
        self.current = if accepted >= self.current {
            (self.current + 20).min(self.max)
        } else {
            accepted.max(1)
        };
    }
}

/// Prints an errno by its name (`EMFILE`), as operators search for it.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EPERM => "EPERM",
        libc::EINTR => "EINTR",
        libc::EPROTO => "EPROTO",
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        libc::ENOTSOCK => "ENOTSOCK",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

/// Rate-limits repeated log lines: one line per kind per interval. What it holds back is
/// summed (the events, and for EMFILE recoveries the connections closed) into the next line
/// of the kind, or into a line of its own from [`flush`](Self::flush) once the interval is
/// over, so that no count is lost when the events stop.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    seen: Vec<Held>,
}

/// What a kind of event has held back since its last line.
#[derive(Debug)]
struct Held {
    kind: AcceptEventKind,
    /// When its last line was logged.
    last: Instant,
    /// The latest event held back, if any.
    latest: Option<AcceptEvent>,
    /// Events held back.
    events: u64,
    /// Connections the EMFILE recoveries held back closed.
    closed: u64,
}

/// The kind an event is rate-limited under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptEventKind {
    Error(i32),
    EmfileRecovered,
    ReserveFailed,
}

/// What to do when the process runs out of descriptors.
const RAISE_NOFILE: &str = "raise the descriptor limit (systemd LimitNOFILE=, ulimit -n, docker \
                            --ulimit nofile=) or lower the connection cap (--max-conns-per-core)";

impl AcceptEvent {
    fn kind(&self) -> AcceptEventKind {
        match *self {
            Self::Error(e) => AcceptEventKind::Error(e),
            Self::EmfileRecovered(_) => AcceptEventKind::EmfileRecovered,
            Self::ReserveFailed(_) => AcceptEventKind::ReserveFailed,
        }
    }

    /// Connections the event closed.
    fn closed(&self) -> u64 {
        match *self {
            Self::EmfileRecovered(n) => n as u64,
            _ => 0,
        }
    }

    /// The line for `events` events of this one's kind (this one the latest), which closed
    /// `closed` connections in all.
    fn describe(&self, events: u64, closed: u64) -> String {
        let times = if events > 1 {
            format!(" ({events} times since the last report)")
        } else {
            String::new()
        };
        match *self {
            Self::Error(e @ (libc::EMFILE | libc::ENFILE)) => format!(
                "could not accept a new connection ({}){times}: out of file descriptors; {RAISE_NOFILE}",
                errno_name(e)
            ),
            Self::Error(e) => format!("could not accept a new connection ({}){times}", errno_name(e)),
            Self::EmfileRecovered(_) => format!(
                "out of file descriptors{times}: closed {closed} queued connection(s) with the \
                 reserved descriptor; {RAISE_NOFILE}"
            ),
            Self::ReserveFailed(e) => format!(
                "could not re-take the reserved descriptor ({}){times}; backing off",
                errno_name(e)
            ),
        }
    }
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: Vec::new(),
        }
    }

    /// Returns the line to log for `event` at `now`, or `None` if it is held back.
    pub(crate) fn admit(&mut self, event: &AcceptEvent, now: Instant) -> Option<String> {
        let kind = event.kind();
        let Some(held) = self.seen.iter_mut().find(|h| h.kind == kind) else {
            self.seen.push(Held {
                kind,
                last: now,
                latest: None,
                events: 0,
                closed: 0,
            });
            return Some(event.describe(1, event.closed()));
        };
        held.events += 1;
        held.closed += event.closed();
        held.latest = Some(*event);
        if now.duration_since(held.last) < self.interval {
            return None;
        }
        Some(Self::report(held, now))
    }

    /// The lines for what each kind held back, for the kinds whose interval is over: called
    /// now and then, so that counts held back are told even when no event follows them.
    pub(crate) fn flush(&mut self, now: Instant) -> Vec<String> {
        let interval = self.interval;
        self.seen
            .iter_mut()
            .filter(|h| h.latest.is_some() && now.duration_since(h.last) >= interval)
            .map(|h| Self::report(h, now))
            .collect()
    }

    /// The line for what `held` holds, which it then forgets.
    fn report(held: &mut Held, now: Instant) -> String {
        let line = held
            .latest
            .map(|e| e.describe(held.events, held.closed))
            .unwrap_or_default();
        held.last = now;
        held.latest = None;
        held.events = 0;
        held.closed = 0;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Arc;

    /// A listener that replays a script: `Ok(n)` yields connection n, `Err(errno)` fails;
    /// after the script it reports `WouldBlock`.
    struct Scripted {
        script: VecDeque<Result<u32, i32>>,
        calls: usize,
    }

    impl Scripted {
        fn new(script: &[Result<u32, i32>]) -> Self {
            Self {
                script: script.iter().copied().collect(),
                calls: 0,
            }
        }
    }

    impl AcceptSource for Scripted {
        type Conn = u32;
        fn accept(&mut self) -> io::Result<(u32, SocketAddr)> {
            self.calls += 1;
            match self.script.pop_front() {
                Some(Ok(n)) => Ok((n, "127.0.0.1:1".parse().unwrap())),
                Some(Err(errno)) => Err(io::Error::from_raw_os_error(errno)),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    /// `/dev/null` in a fake slot; connections are numbered from 1.
    const DEV_NULL: u32 = 0;

    /// A shard's view of shared fake slots (connection numbers, or [`DEV_NULL`]); records
    /// its calls and can be told that the table is full (its re-take fails).
    struct FakeReservation {
        spares: Arc<Spares<u32>>,
        fail_reserve: bool,
        log: Vec<&'static str>,
    }

    impl FakeReservation {
        fn shared(spares: &Arc<Spares<u32>>) -> Self {
            Self {
                spares: spares.clone(),
                fail_reserve: false,
                log: Vec::new(),
            }
        }
        fn held(&self) -> bool {
            !self.spares.missing()
        }
    }

    impl Reservation<u32> for FakeReservation {
        fn missing(&self) -> bool {
            self.spares.missing()
        }
        fn release(&mut self) -> bool {
            self.log.push("release");
            self.spares.take().is_some()
        }
        fn reserve(&mut self) -> io::Result<()> {
            self.log.push("reserve");
            if !self.spares.missing() {
                return Ok(());
            }
            if self.fail_reserve {
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            assert_eq!(self.spares.put(DEV_NULL, |_| {}), None);
            Ok(())
        }
        fn keep(&mut self, conn: u32) -> Option<u32> {
            self.spares.put(conn, |_| self.log.push("shed"))
        }
    }

    /// One shard's slot, held.
    fn held() -> FakeReservation {
        let spares = Arc::new(Spares::new(1));
        assert_eq!(spares.put(DEV_NULL, |_| {}), None);
        FakeReservation::shared(&spares)
    }

    /// One shard's slot, missing, with a full table.
    fn lost() -> FakeReservation {
        FakeReservation {
            fail_reserve: true,
            ..FakeReservation::shared(&Arc::new(Spares::new(1)))
        }
    }

    fn run(script: &[Result<u32, i32>], res: &mut FakeReservation, limit: usize) -> (Burst, Vec<u32>) {
        let mut src = Scripted::new(script);
        let mut got = Vec::new();
        let burst = accept_burst(&mut src, res, None, limit, |c, _| got.push(c));
        (burst, got)
    }

    #[test]
    fn accepts_until_would_block() {
        let (b, got) = run(&[Ok(1), Ok(2), Ok(3)], &mut held(), 100);
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(b.accepted, 3);
        assert!(!b.backoff && b.fatal.is_none() && b.events.is_empty());
    }

    #[test]
    fn burst_is_bounded() {
        let script: Vec<_> = (0..50).map(Ok).collect();
        let (b, got) = run(&script, &mut held(), 10);
        assert_eq!(got.len(), 10);
        assert_eq!(b.accepted, 10);
    }

    #[test]
    fn first_result_counts_as_an_attempt() {
        let mut src = Scripted::new(&[Ok(2), Ok(3)]);
        let mut got = Vec::new();
        let first = Some(Ok((1, "127.0.0.1:1".parse().unwrap())));
        let b = accept_burst(&mut src, &mut held(), first, 2, |c, _| got.push(c));
        assert_eq!(got, vec![1, 2]);
        assert_eq!(b.accepted, 2);
    }

    #[test]
    fn skips_per_connection_errors() {
        for errno in [libc::ECONNABORTED, libc::EPERM] {
            let (b, got) = run(&[Err(errno), Ok(1), Err(errno), Ok(2)], &mut held(), 100);
            assert_eq!(got, vec![1, 2], "{}", errno_name(errno));
            assert!(!b.backoff);
            assert_eq!(b.events, vec![AcceptEvent::Error(errno); 2]);
        }
    }

    #[test]
    fn eperm_uses_up_slots() {
        let (b, got) = run(&[Err(libc::EPERM); 10], &mut held(), 5);
        assert!(got.is_empty());
        assert_eq!(b.events.len(), 5);
    }

    #[test]
    fn shortages_back_off_and_never_stop() {
        for errno in [libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            let mut res = held();
            let (b, got) = run(&[Ok(1), Err(errno), Ok(2)], &mut res, 100);
            assert_eq!(got, vec![1], "{}", errno_name(errno));
            assert!(b.backoff && b.fatal.is_none());
            assert_eq!(b.events, vec![AcceptEvent::Error(errno)]);
            assert!(
                res.log.is_empty(),
                "a shortage other than EMFILE leaves the reservation alone"
            );
        }
    }

    #[test]
    fn emfile_with_reservation_drains_and_closes() {
        let mut res = held();
        let (b, got) = run(&[Err(libc::EMFILE), Ok(7), Ok(8)], &mut res, 100);
        assert!(
            got.is_empty(),
            "connections accepted during recovery are closed, not served"
        );
        assert_eq!(b.recovered, 2);
        assert!(!b.backoff);
        // Each shed connection keeps the slot until the next one needs it freed.
        assert_eq!(
            res.log,
            vec!["release", "shed", "release", "shed", "release", "reserve"]
        );
        assert!(res.held());
        assert_eq!(
            b.events,
            vec![AcceptEvent::Error(libc::EMFILE), AcceptEvent::EmfileRecovered(2)]
        );
    }

    #[test]
    fn emfile_with_an_empty_queue_backs_off() {
        let mut res = held();
        let (b, got) = run(&[Err(libc::EMFILE)], &mut res, 100);
        assert!(got.is_empty());
        assert_eq!(b.recovered, 0);
        assert!(
            b.backoff,
            "a full table fails accept even with nothing queued: never spin"
        );
        assert!(res.held());
    }

    #[test]
    fn emfile_without_reservation_backs_off() {
        let mut res = lost();
        let (b, got) = run(&[Err(libc::EMFILE), Ok(1)], &mut res, 100);
        assert!(got.is_empty());
        assert!(b.backoff);
        assert_eq!(b.recovered, 0);
        // The best-effort re-take at the start of the burst, then no slot to free.
        assert_eq!(res.log, vec!["reserve", "release"]);
    }

    #[test]
    fn null_reservation_backs_off_on_emfile() {
        let mut src = Scripted::new(&[Err(libc::EMFILE), Ok(1)]);
        let b = accept_burst(&mut src, &mut NullReservation, None, 100, |_, _| {});
        assert!(b.backoff);
        assert_eq!(src.calls, 1);
        let mut n = NullReservation;
        assert!(!Reservation::<u32>::missing(&n));
        assert!(!Reservation::<u32>::release(&mut n));
        assert!(Reservation::<u32>::reserve(&mut n).is_ok());
        assert_eq!(n.keep(3), Some(3), "a connection is always served");
    }

    #[test]
    fn second_emfile_during_recovery_backs_off() {
        let mut res = held();
        let (b, _) = run(&[Err(libc::EMFILE), Ok(1), Err(libc::EMFILE)], &mut res, 100);
        assert_eq!(b.recovered, 1);
        assert!(b.backoff);
        assert!(res.held(), "the slot is taken again after the recovery");
    }

    #[test]
    fn failed_retake_backs_off() {
        let mut res = held();
        res.fail_reserve = true;
        let (b, _) = run(&[Err(libc::EMFILE), Ok(1)], &mut res, 100);
        assert!(b.backoff);
        assert!(!res.held());
        assert!(b.events.contains(&AcceptEvent::ReserveFailed(libc::EMFILE)));
    }

    #[test]
    fn spares_count_what_is_missing_before_it_is_freed() {
        let spares = Spares::new(2);
        assert!(spares.missing());
        assert_eq!(spares.put(1, |_| {}), None);
        assert_eq!(spares.put(2, |_| {}), None);
        assert!(!spares.missing());
        assert_eq!(spares.put(3, |_| panic!("not prepared")), Some(3), "full");
        let slot = spares.take();
        assert!(spares.missing(), "told while the caller still holds it");
        assert_eq!(slot, Some(2));
        assert_eq!(spares.take(), Some(1));
        assert_eq!(spares.take(), None);
    }

    #[test]
    fn a_slot_another_shard_freed_is_kept_by_the_accept_that_wins_it() {
        // Shard A frees a slot to recover; shard B's accept takes it before A's does (the
        // table is full again, so B's re-take fails). B sheds that client and keeps the slot,
        // then serves the rest: the slot count stays whole.
        let spares = Arc::new(Spares::new(2));
        let mut a = FakeReservation::shared(&spares);
        let mut b = FakeReservation::shared(&spares);
        a.reserve().unwrap();
        b.reserve().unwrap();
        assert!(a.release());
        b.fail_reserve = true;
        let (burst, got) = run(&[Ok(5), Ok(6), Ok(7)], &mut b, 100);
        assert_eq!(got, vec![6, 7]);
        assert_eq!(burst.recovered, 1);
        assert_eq!(burst.events, vec![AcceptEvent::EmfileRecovered(1)]);
        assert!(!spares.missing());
    }

    #[test]
    fn a_shard_whose_slot_was_lost_still_sheds_its_queue() {
        // The race of the report: shard A's slot went to a descriptor that stays open, and
        // the table is full. A recovers with the slot shard B holds, sheds its whole queue,
        // and the last connection it shed stands in the slot.
        let spares = Arc::new(Spares::new(2));
        let mut a = FakeReservation::shared(&spares);
        let mut b = FakeReservation::shared(&spares);
        a.reserve().unwrap();
        b.reserve().unwrap();
        assert!(spares.take().is_some(), "lost for good");
        a.fail_reserve = true;
        let queue: Vec<_> = std::iter::once(Err(libc::EMFILE))
            .chain((1..=30).map(Ok))
            .collect();
        let mut src = Scripted::new(&queue);
        let burst = accept_burst(&mut src, &mut a, None, 100, |_, _| {
            panic!("nothing to serve with")
        });
        assert_eq!(burst.recovered, 30, "every queued client is shed");
        assert!(burst.backoff, "the re-take failed");
        assert!(spares.missing(), "one slot is still out");
        // B, or A after its back-off, takes the next slot that frees before serving anyone.
        let (b_burst, got) = run(&[Ok(40), Ok(41)], &mut b, 100);
        assert_eq!((got, b_burst.recovered), (vec![41], 1));
        assert!(!spares.missing());
    }

    #[test]
    fn unknown_errors_are_fatal() {
        let (b, got) = run(&[Ok(1), Err(libc::EBADF), Ok(2)], &mut held(), 100);
        assert_eq!(got, vec![1]);
        assert_eq!(b.fatal.and_then(|e| e.raw_os_error()), Some(libc::EBADF));
    }

    #[test]
    fn classification_table() {
        let c = |e| classify(&io::Error::from_raw_os_error(e));
        assert_eq!(c(libc::EMFILE), ErrorAction::Emfile);
        for e in [libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(c(e), ErrorAction::Backoff);
        }
        for e in [libc::ECONNABORTED, libc::EPERM] {
            assert_eq!(c(e), ErrorAction::Skip);
        }
        assert_eq!(c(libc::EBADF), ErrorAction::Fatal);
    }

    #[test]
    fn burst_size_adapts_like_twisted() {
        // Twisted's test_acceptScaling: starting at 1, a full burst grows it to 21, a short
        // one shrinks it to what was accepted (never below 1).
        let mut s = BurstSizer::new(1, 1000);
        s.record(1);
        assert_eq!(s.limit(), 21);
        s.record(1);
        assert_eq!(s.limit(), 1);
        s.record(0);
        assert_eq!(s.limit(), 1);
        let mut capped = BurstSizer::new(100, 110);
        capped.record(100);
        assert_eq!(capped.limit(), 110);
        capped.record(110);
        assert_eq!(capped.limit(), 110);
    }

    #[test]
    fn log_limiter_holds_back_repeats() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let e = AcceptEvent::Error(libc::EMFILE);
        let first = l.admit(&e, t0).unwrap();
        assert!(
            first.contains("EMFILE") && first.contains("LimitNOFILE="),
            "{first}"
        );
        assert!(l.admit(&e, t0 + Duration::from_secs(1)).is_none());
        assert!(l.admit(&e, t0 + Duration::from_secs(2)).is_none());
        assert!(
            l.admit(&AcceptEvent::Error(libc::ENOBUFS), t0).is_some(),
            "kinds are separate"
        );
        let later = l.admit(&e, t0 + Duration::from_secs(11)).unwrap();
        assert!(later.contains("3 times since the last report"), "{later}");
    }

    #[test]
    fn emfile_recoveries_are_summed_and_flushed() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let first = l.admit(&AcceptEvent::EmfileRecovered(1), t0).unwrap();
        assert!(
            first.contains("closed 1 queued connection(s)") && first.contains("ulimit -n"),
            "{first}"
        );
        // 21 more recoveries within the interval, closing 2 connections each: held back.
        for k in 1..=21 {
            let at = t0 + Duration::from_millis(100 * k);
            assert!(l.admit(&AcceptEvent::EmfileRecovered(2), at).is_none());
        }
        assert!(
            l.flush(t0 + Duration::from_secs(5)).is_empty(),
            "the interval is not over"
        );
        let flushed = l.flush(t0 + Duration::from_secs(10));
        assert_eq!(flushed.len(), 1, "{flushed:?}");
        assert!(
            flushed[0].contains("21 times since the last report")
                && flushed[0].contains("closed 42 queued connection(s)")
                && flushed[0].contains("LimitNOFILE="),
            "{flushed:?}"
        );
        assert!(l.flush(t0 + Duration::from_secs(30)).is_empty(), "told once");
    }
}
