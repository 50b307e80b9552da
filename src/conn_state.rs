//! A connection's life, free of I/O: the peer's EOF, our write shutdown, the lingering close,
//! the drain, the idle, write-stall and protocol deadlines, and which close reason wins.
//!
//! Shaped like quinn-proto's `Connection`: the driver reports facts with the `handle_*`
//! methods (bytes read, EOF, errors, bytes flushed, the timer), asks [`ConnState::poll`] what
//! to do next, carries that [`Action`] out, and arms one timer at
//! [`ConnState::poll_timeout`]. The machine reads the protocol's requests (close, half-close,
//! pause, deadline, forced close) from the [`Transport`], which is itself free of I/O, and
//! never reads the clock: when a round's bookkeeping needs the time it answers
//! [`Action::ReadClock`], so a round with no deadline to watch (an echo's every request)
//! costs no clock read at all.
//!
//! # Rounds and the poll order
//!
//! The driver works in rounds: a round begins when the driver is woken (socket readiness, a
//! transport change, the timer) and ends with [`Action::Wait`] or [`Action::Close`]. Within a
//! round, `poll` makes passes, each in this order:
//!
//! 1. A close already decided: [`Action::Close`], again and forever.
//! 2. A close forced on the transport (abort, output cap, engine shutdown):
//!    `Close(reason)`.
//! 3. The shard's drain, not yet passed on: [`Action::CallDrainRequested`], then the pass
//!    starts over.
//! 4. [`Action::Flush`], answered with [`handle_flushed`](ConnState::handle_flushed) or
//!    [`handle_write_error`](ConnState::handle_write_error).
//! 5. With nothing left queued:
//!    - a `lose_write_connection` not carried out yet: [`Action::ShutdownWrite`],
//!      [`Action::CallWriteConnectionLost`], then `Close(PeerEof)` if the peer's EOF was
//!      read, else a new pass;
//!    - a `lose_connection`: `Close(PeerEof)` if the peer's EOF was read; otherwise
//!      [`Action::ShutdownWrite`] (once) and the lingering close: [`Action::Linger`] reads
//!      (read and discard, so that the peer reads our last bytes instead of a reset) until
//!      the peer's EOF or a read error (`Close(LocalClose)`), the budget
//!      ([`Action::Yield`]), or a read that would block (the round settles).
//! 6. Reading: none while closing, after the peer's EOF or while the transport may not read
//!    (paused by the protocol or by output flow control); past the round's read budget,
//!    [`Action::Yield`]; otherwise [`Action::Read`]. Data starts a new pass; the peer's EOF
//!    gives [`Action::CallReadConnectionLost`], then `Close(PeerEof)` if our write side is
//!    shut and nothing is queued, else a new pass.
//! 7. Settling, once nothing more can happen without waiting: [`Action::ReadClock`] if a
//!    deadline is being watched; then the earliest expired deadline, if any:
//!    `Close(IdleTimeout)`, `Close(WriteStall)`, `Close(LocalClose)` when lingering, or
//!    [`Action::CallDeadlineExpired`] for the protocol's, after which the machine calls
//!    `lose_connection` and makes a new pass; otherwise [`Action::Wait`].
//!
//! # Which close reason wins
//!
//! The first reason decided is final. A forced close is seen at the start of every pass, so
//! it wins over anything that comes after the callback that forced it. An orderly close the
//! machine started for an expired protocol deadline reports
//! [`CloseReason::DeadlineExpired`] instead of `PeerEof` or `LocalClose`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use crate::config::ConnectionConfig;
use crate::{CloseReason, Transport};

/// What the driver does next for its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send everything queued on the transport until the socket is full, then report
    /// [`handle_flushed`](ConnState::handle_flushed) or
    /// [`handle_write_error`](ConnState::handle_write_error).
    Flush,
    /// Read once and pass the bytes to the protocol's `data_received`, then report
    /// [`handle_read`](ConnState::handle_read), [`handle_read_eof`](ConnState::handle_read_eof),
    /// [`handle_read_error`](ConnState::handle_read_error) or
    /// [`handle_read_blocked`](ConnState::handle_read_blocked).
    Read,
    /// Read once and discard the bytes (the lingering close), then report as for
    /// [`Action::Read`].
    Linger,
    /// Shut down the socket's write side (our FIN).
    ShutdownWrite,
    /// Call the protocol's `drain_requested`.
    CallDrainRequested,
    /// Call the protocol's `read_connection_lost`.
    CallReadConnectionLost,
    /// Call the protocol's `write_connection_lost`.
    CallWriteConnectionLost,
    /// Call the protocol's `deadline_expired` (the machine has cleared the deadline).
    CallDeadlineExpired,
    /// Read the clock and report it with [`handle_now`](ConnState::handle_now).
    ReadClock,
    /// The round's read budget is spent: wake the task again, so that the shard's other
    /// connections run first, then poll on.
    Yield,
    /// Nothing more can happen before a wake-up: wait for the socket, the transport, or the
    /// timer at [`poll_timeout`](ConnState::poll_timeout).
    Wait,
    /// The connection is over: close the socket and report this reason.
    Close(CloseReason),
}

/// Where the machine is in its round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A pass begins: a forced close, the drain, then a flush.
    Begin,
    /// [`Action::Flush`] was handed out.
    Flush,
    /// The output was flushed: shut down, close, linger or read.
    Flushed,
    /// The write side was shut for `lose_write_connection`: the protocol is told next.
    WriteShut,
    /// [`Action::CallWriteConnectionLost`] was handed out.
    WriteLost,
    /// The lingering close: [`Action::Linger`] reads.
    Linger,
    /// [`Action::Read`] was handed out.
    Read,
    /// The peer's EOF was read: the protocol is told next.
    ReadEof,
    /// [`Action::CallReadConnectionLost`] was handed out.
    ReadLost,
    /// [`Action::CallDeadlineExpired`] was handed out: close, then a new pass.
    DeadlineLost,
    /// Nothing more can happen without waiting: stamp the round's I/O, check the deadlines.
    Settle,
    /// [`Action::Wait`] was handed out: the next poll begins a new round.
    Wait,
    /// The connection ended with this reason.
    Closed(CloseReason),
}

/// A deadline, as the settling step sees it.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    Idle,
    Stall,
    Protocol,
}

/// One connection's life as a state machine: facts in, [`Action`]s and a deadline out. The
/// module documentation gives the poll order.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Close after this long with nothing read or written.
    idle: Option<Duration>,
    /// Close after queued output made no progress for this long.
    stall: Option<Duration>,
    /// How long the lingering close waits for the peer's EOF.
    linger: Duration,
    /// Reads per round (data, or discarded while lingering) before yielding.
    budget: usize,

    step: Step,
    /// The peer's EOF was read.
    read_eof: bool,
    /// Our write side is shut (FIN sent).
    write_shut: bool,
    /// The shard is draining.
    draining: bool,
    /// `drain_requested` was handed out.
    drain_seen: bool,
    /// The machine started an orderly close for an expired protocol deadline.
    deadline_close: bool,
    /// When the lingering close stops waiting; set once it begins.
    linger_until: Option<Instant>,
    /// When a byte was last read or written.
    last_io: Instant,
    /// When queued output last made progress, or became pending.
    last_progress: Instant,
    /// Output was pending when the last round settled.
    was_pending: bool,

    /// The round's time, once read.
    now: Option<Instant>,
    /// Reads this round (or this linger pass).
    reads: usize,
    /// Bytes moved (read or sent) this round.
    moved: bool,
    /// Queued output moved since the last settle.
    progressed: bool,
    /// The earliest deadline being watched, as of the last settle.
    timeout: Option<Instant>,
}

impl ConnState {
    /// A connection opened at `now`, with `config`'s deadlines and read budget.
    pub(crate) fn new(config: &ConnectionConfig, now: Instant) -> Self {
        Self {
            idle: config.idle_timeout,
            stall: config.write_stall_timeout,
            linger: config.linger,
            budget: config.reads_per_wakeup,
            step: Step::Begin,
            read_eof: false,
            write_shut: false,
            draining: false,
            drain_seen: false,
            deadline_close: false,
            linger_until: None,
            last_io: now,
            last_progress: now,
            was_pending: false,
            now: None,
            reads: 0,
            moved: false,
            progressed: false,
            timeout: None,
        }
    }

    /// The next thing to do, given the protocol's requests on `transport`. Each call hands an
    /// action out once; the driver carries it out and reports what happened before it polls
    /// again (an action whose report is missing is handed out again).
    pub(crate) fn poll(&mut self, transport: &Transport) -> Action {
        loop {
            match &self.step {
                Step::Closed(reason) => return Action::Close(reason.clone()),
                Step::Wait => self.begin_round(None),
                Step::Begin => {
                    if let Some(reason) = transport.forced() {
                        return self.close(reason);
                    }
                    if self.draining && !self.drain_seen {
                        self.drain_seen = true;
                        return Action::CallDrainRequested;
                    }
                    self.step = Step::Flush;
                    return Action::Flush;
                }
                Step::Flush => return Action::Flush,
                Step::Flushed => {
                    let empty = transport.buffered() == 0;
                    if empty && transport.write_closing() && !self.write_shut {
                        self.write_shut = true;
                        self.step = Step::WriteShut;
                        return Action::ShutdownWrite;
                    }
                    if empty && transport.closing() {
                        if self.read_eof {
                            return self.close(CloseReason::PeerEof);
                        }
                        self.step = Step::Linger;
                        self.reads = 0;
                        if !self.write_shut {
                            self.write_shut = true;
                            return Action::ShutdownWrite;
                        }
                        continue;
                    }
                    if transport.closing() || self.read_eof || !transport.may_read() {
                        self.step = Step::Settle;
                        continue;
                    }
                    return self.read(Step::Read, Action::Read);
                }
                Step::WriteShut => {
                    self.step = Step::WriteLost;
                    return Action::CallWriteConnectionLost;
                }
                Step::WriteLost => {
                    if self.read_eof {
                        return self.close(CloseReason::PeerEof);
                    }
                    self.step = Step::Begin;
                }
                Step::Linger => {
                    if self.linger_until.is_none() {
                        let Some(now) = self.now else {
                            return Action::ReadClock;
                        };
                        self.linger_until = Some(now + self.linger);
                    }
                    return self.read(Step::Linger, Action::Linger);
                }
                Step::Read => return Action::Read,
                Step::ReadEof => {
                    self.step = Step::ReadLost;
                    return Action::CallReadConnectionLost;
                }
                Step::ReadLost => {
                    if self.write_shut && transport.buffered() == 0 {
                        return self.close(CloseReason::PeerEof);
                    }
                    self.step = Step::Begin;
                }
                Step::DeadlineLost => {
                    transport.lose_connection();
                    self.reads = 0;
                    self.step = Step::Begin;
                }
                Step::Settle => return self.settle(transport),
            }
        }
    }

    /// The instant the driver's timer should fire at, once [`Action::Wait`] was handed out:
    /// the earliest deadline being watched. `None` when there is none.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// The shard began draining: `drain_requested` is handed out once, at the next pass.
    pub(crate) fn handle_drain(&mut self) {
        self.draining = true;
    }

    /// The time, read for [`Action::ReadClock`]; it stands for the rest of the round.
    pub(crate) fn handle_now(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// The timer fired at `now`. After [`Action::Wait`] this begins a new round at `now`; a
    /// deadline that has passed is acted on when the round settles, so a timer that fires
    /// early (or at any other time) changes nothing.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.step == Step::Wait {
            self.begin_round(Some(now));
        }
    }

    /// [`Action::Flush`] sent `sent` bytes; what it left is still queued on the transport.
    pub(crate) fn handle_flushed(&mut self, sent: usize) {
        if self.step != Step::Flush {
            return;
        }
        if sent > 0 {
            self.moved = true;
            self.progressed = true;
        }
        self.step = Step::Flushed;
    }

    /// [`Action::Flush`] failed: the connection ends with `reason`.
    pub(crate) fn handle_write_error(&mut self, reason: CloseReason) {
        if self.step == Step::Flush {
            self.close(reason);
        }
    }

    /// [`Action::Read`] or [`Action::Linger`] read `n` bytes (`n > 0`).
    pub(crate) fn handle_read(&mut self, n: usize) {
        match self.step {
            Step::Read => {
                self.reads += 1;
                self.moved |= n > 0;
                self.step = Step::Begin;
            }
            Step::Linger => self.reads += 1,
            _ => {}
        }
    }

    /// [`Action::Read`] or [`Action::Linger`] read the peer's EOF.
    pub(crate) fn handle_read_eof(&mut self) {
        match self.step {
            Step::Read => {
                self.read_eof = true;
                self.step = Step::ReadEof;
            }
            Step::Linger => {
                self.close(CloseReason::LocalClose);
            }
            _ => {}
        }
    }

    /// [`Action::Read`] or [`Action::Linger`] failed with `reason`. While lingering the close
    /// is already under way, and the connection ends as a clean local close.
    pub(crate) fn handle_read_error(&mut self, reason: CloseReason) {
        match self.step {
            Step::Read => {
                self.close(reason);
            }
            Step::Linger => {
                self.close(CloseReason::LocalClose);
            }
            _ => {}
        }
    }

    /// [`Action::Read`] or [`Action::Linger`] would block: the round settles.
    pub(crate) fn handle_read_blocked(&mut self) {
        if matches!(self.step, Step::Read | Step::Linger) {
            self.step = Step::Settle;
        }
    }

    /// Starts a round, at `now` if the time is known already.
    fn begin_round(&mut self, now: Option<Instant>) {
        self.step = Step::Begin;
        self.now = now;
        self.reads = 0;
        self.moved = false;
    }

    /// Hands out a read of kind `action`, or [`Action::Yield`] once the budget is spent.
    fn read(&mut self, step: Step, action: Action) -> Action {
        if self.reads >= self.budget {
            self.step = Step::Settle;
            return Action::Yield;
        }
        self.step = step;
        action
    }

    /// Ends the connection with `reason`, or with `DeadlineExpired` for an orderly close the
    /// machine started for the protocol's deadline.
    fn close(&mut self, reason: CloseReason) -> Action {
        let reason = match reason {
            CloseReason::PeerEof | CloseReason::LocalClose if self.deadline_close => {
                CloseReason::DeadlineExpired
            }
            reason => reason,
        };
        self.timeout = None;
        self.step = Step::Closed(reason.clone());
        Action::Close(reason)
    }

    /// Nothing more can happen without waiting: stamps the round's I/O, acts on the earliest
    /// expired deadline, or waits for the earliest one. While lingering only the linger time
    /// counts. Asks for the time only when a deadline is watched.
    fn settle(&mut self, transport: &Transport) -> Action {
        if let Some(until) = self.linger_until {
            let Some(now) = self.now else {
                return Action::ReadClock;
            };
            if until <= now {
                return self.close(CloseReason::LocalClose);
            }
            return self.wait(Some(until));
        }
        let pending = transport.buffered() > 0;
        let protocol = transport.deadline();
        let watched = self.idle.is_some() || (pending && self.stall.is_some()) || protocol.is_some();
        let now = match self.now {
            Some(now) => now,
            None if watched => return Action::ReadClock,
            None => {
                // No deadline, so no clock: what the stamps below would record is unused.
                self.was_pending = pending;
                self.progressed = false;
                return self.wait(None);
            }
        };
        if self.moved && self.idle.is_some() {
            self.last_io = now;
        }
        if pending && self.stall.is_some() && (!self.was_pending || self.progressed) {
            self.last_progress = now;
        }
        self.was_pending = pending;
        self.progressed = false;
        let idle = self.idle.map(|d| (self.last_io + d, Deadline::Idle));
        let stall = self
            .stall
            .filter(|_| pending)
            .map(|d| (self.last_progress + d, Deadline::Stall));
        let protocol = protocol.map(|at| (at, Deadline::Protocol));
        // The first of equal deadlines wins: idle, then stall, then the protocol's.
        let earliest = [idle, stall, protocol]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at);
        match earliest {
            Some((at, Deadline::Idle)) if at <= now => self.close(CloseReason::IdleTimeout),
            Some((at, Deadline::Stall)) if at <= now => self.close(CloseReason::WriteStall),
            Some((at, Deadline::Protocol)) if at <= now => {
                transport.clear_deadline();
                self.deadline_close = true;
                self.timeout = None;
                self.step = Step::DeadlineLost;
                Action::CallDeadlineExpired
            }
            earliest => self.wait(earliest.map(|(at, _)| at)),
        }
    }

    /// Ends the round, with the timer due at `timeout`.
    fn wait(&mut self, timeout: Option<Instant>) -> Action {
        self.timeout = timeout;
        self.step = Step::Wait;
        Action::Wait
    }
}

