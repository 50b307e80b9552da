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
//! 3. [`Action::Flush`] if anything is queued, answered with
//!    [`handle_flushed`](ConnState::handle_flushed) or
//!    [`handle_write_error`](ConnState::handle_write_error).
//! 4. With nothing left queued:
//!    - a `lose_write_connection` not carried out yet: [`Action::ShutdownWrite`],
//!      [`Action::CallWriteConnectionLost`], then `Close(PeerEof)` if the peer's EOF was
//!      read, else a new pass;
//!    - a `lose_connection`: `Close(PeerEof)` if the peer's EOF was read; otherwise
//!      [`Action::ShutdownWrite`] (once) and the lingering close: [`Action::Linger`] reads
//!      and discards (closing a socket with unread input sends a reset, and the peer would
//!      lose our last bytes) until the peer's EOF or a read error (`Close(LocalClose)`), the
//!      budget ([`Action::Yield`]), or a read that would block (the round settles).
//! 5. Reading: none while closing, after the peer's EOF or while the transport may not read
//!    (paused by the protocol or by output flow control); past the round's read budget,
//!    [`Action::Yield`]; otherwise [`Action::Read`]. Data starts a new pass; the peer's EOF
//!    gives [`Action::CallReadConnectionLost`], then `Close(PeerEof)` if our write side is
//!    shut and nothing is queued, else a new pass.
//! 6. The shard's drain, not yet passed on, once the round has read what had arrived (a
//!    read would block, reading is off, or the budget is spent): [`Action::CallDrainRequested`],
//!    then a new pass. So a request already received is delivered before the protocol
//!    decides whether its connection is idle and may close at once.
//! 7. Settling, once nothing more can happen without waiting: [`Action::ReadClock`] if a
//!    deadline is being watched; then the earliest expired deadline, if any:
//!    `Close(IdleTimeout)`, `Close(WriteStall)`, `Close(LocalClose)` when lingering, or
//!    [`Action::CallDeadlineExpired`] for the protocol's, after which the machine calls
//!    `lose_connection` and makes a new pass; otherwise [`Action::Wait`].
//!
//! # Which close reason wins
//!
//! The first reason decided is final. A forced close is seen at the start of every pass, so
//! it wins over what later passes would decide; but a `read_connection_lost` after our FIN,
//! or a `write_connection_lost` after the peer's EOF, ends the connection as `PeerEof` when
//! it returns (both directions are closed), whatever it did. An orderly close the machine
//! started for an expired protocol deadline reports [`CloseReason::DeadlineExpired`]
//! instead of `PeerEof` or `LocalClose`.

use std::time::{Duration, Instant};

use crate::proto::close::CloseReason;
use crate::proto::transport::{ConnectionConfig, Transport};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
                    if transport.buffered() == 0 {
                        self.step = Step::Flushed;
                        continue;
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
                    if !self.reads_next(transport) {
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
                // The drain is passed on once the round read what had arrived: a request
                // already received is seen before the protocol decides whether its
                // connection is idle (and closes it).
                Step::Settle if self.draining && !self.drain_seen => {
                    self.drain_seen = true;
                    self.step = Step::Begin;
                    return Action::CallDrainRequested;
                }
                Step::Settle => return self.settle(transport),
            }
        }
    }

    /// True when, once its queued output is sent, the connection only waits for input: no
    /// shutdown, close or paused producer waits for that output, reading is on, and the
    /// shard is not draining. The send that carries the last of the output then needs no
    /// prompt completion.
    pub(crate) fn reads_on(&self, transport: &Transport) -> bool {
        self.reads_next(transport)
            && !self.draining
            && !transport.write_closing()
            && !transport.is_output_full()
    }

    /// True when the machine reads once its output is flushed: not closing, no EOF yet, and
    /// reading is not paused.
    fn reads_next(&self, transport: &Transport) -> bool {
        !transport.closing() && !self.read_eof && transport.may_read()
    }

    /// The instant the driver's timer should fire at, once [`Action::Wait`] was handed out:
    /// the earliest deadline being watched. `None` when there is none.
    #[inline]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// The shard began draining: `drain_requested` is handed out once, at the next pass.
    #[inline]
    pub(crate) fn handle_drain(&mut self) {
        self.draining = true;
    }

    /// The time, read for [`Action::ReadClock`]; it stands for the rest of the round.
    #[inline]
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
    #[inline]
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

    /// After a flush the producer was resumed (the output came down to the low-water mark):
    /// what it wrote from its `resume_producing` is flushed in this round, since its writes
    /// woke nobody (the driver was polling).
    pub(crate) fn handle_resumed(&mut self) {
        if self.step == Step::Flushed {
            self.step = Step::Begin;
        }
    }

    /// [`Action::Flush`] failed: the connection ends with `reason`.
    pub(crate) fn handle_write_error(&mut self, reason: CloseReason) {
        if self.step == Step::Flush {
            self.close(reason);
        }
    }

    /// [`Action::Read`] or [`Action::Linger`] read `n` bytes (`n > 0`).
    #[inline]
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
    #[inline]
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
        // Bytes moved, or an answer is being made (`Transport::hold_idle`): not idle.
        if self.idle.is_some() && (transport.idle_held_since_asked() || self.moved) {
            self.last_io = now;
        }
        if pending && self.stall.is_some() && (!self.was_pending || self.progressed) {
            self.last_progress = now;
        }
        self.was_pending = pending;
        self.progressed = false;
        let idle = self
            .idle
            .filter(|_| !transport.has_idle_hold())
            .map(|d| (self.last_io + d, Deadline::Idle));
        let stall = self
            .stall
            .filter(|_| pending)
            .map(|d| (self.last_progress + d, Deadline::Stall));
        let protocol = protocol.map(|at| (at, Deadline::Protocol));
        // The first of equal deadlines wins: idle, then stall, then the protocol's. (Straight
        // comparisons: `min_by_key` over a flattened array was 3% of a shard's user time at
        // echo depth 1, where the stall watch runs every round.)
        let earliest = earlier(earlier(idle, stall), protocol);
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

/// The earlier of two deadlines, `a` when they are equal.
#[inline]
fn earlier(a: Option<(Instant, Deadline)>, b: Option<(Instant, Deadline)>) -> Option<(Instant, Deadline)> {
    match (a, b) {
        (Some(a), Some(b)) if b.0 < a.0 => Some(b),
        (None, b) => b,
        (a, _) => a,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::proto::transport::IdleHold;

    /// What one read of the socket finds.
    #[derive(Debug, Clone, Copy)]
    enum In {
        Data(usize),
        Eof,
        Reset,
    }

    /// One step of a case; the driver then runs the machine until it waits or closes (but
    /// for [`Do::Sleep`]).
    #[derive(Clone, Copy)]
    enum Do {
        /// Nothing new: a wake-up (the connection's first poll, or a spurious one).
        Wake,
        /// The peer sent: the socket's next reads find these, then it would block.
        Input(&'static [In]),
        /// As `Input`, but nothing wakes the driver (the bytes arrive as something else
        /// does, and the next step's round finds them).
        Arrive(&'static [In]),
        /// Something outside a callback used the transport (a timer task, a relayed peer).
        Call(fn(&Transport)),
        /// The socket has room for this many more bytes; `None`: for everything.
        Room(Option<usize>),
        /// Flushes fail with a reset from now on.
        BrokenPipe,
        /// The protocol arms its deadline this far from now (on the fake clock).
        Deadline(Duration),
        /// The shard starts draining.
        Drain,
        /// Time passes; nothing runs.
        Sleep(Duration),
        /// Time passes and the timer fires.
        Fire(Duration),
        /// An answer is being made: the idle timeout is held off (`Transport::hold_idle`).
        HoldIdle,
        /// The answer is made: the hold is dropped.
        ReleaseIdle,
    }

    /// The protocol's callbacks, as plain functions.
    #[derive(Clone, Copy)]
    struct Proto {
        data: fn(&Transport, usize),
        eof: fn(&Transport),
        drain: fn(&Transport),
        deadline: fn(&Transport),
    }

    fn nothing(_: &Transport) {}

    fn ignore(_: &Transport, _: usize) {}

    fn close(t: &Transport) {
        t.lose_connection();
    }

    fn echo(t: &Transport, n: usize) {
        t.write(&vec![b'x'; n]);
    }

    /// The trait's defaults: `read_connection_lost` closes, the rest do nothing.
    const DEFAULT: Proto = Proto {
        data: ignore,
        eof: close,
        drain: nothing,
        deadline: nothing,
    };

    const ECHO: Proto = Proto {
        data: echo,
        ..DEFAULT
    };

    /// Keeps its side open after the peer's EOF.
    const HALF_CLOSE: Proto = Proto {
        eof: nothing,
        ..DEFAULT
    };

    /// A case: the configuration, the protocol, and each step with the log it must produce.
    struct Case<'a> {
        name: &'a str,
        config: fn(&mut ConnectionConfig),
        proto: Proto,
        steps: &'a [(Do, &'a [&'a str])],
    }

    fn defaults(_: &mut ConnectionConfig) {}

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A driver over a scripted socket and a fake clock, logging what it does.
    struct World {
        state: ConnState,
        t: Transport,
        proto: Proto,
        /// The fake clock.
        now: Instant,
        input: VecDeque<In>,
        /// Room in the socket's send buffer; `None`: unlimited.
        room: Option<usize>,
        broken: bool,
        hold: Option<IdleHold>,
        log: Vec<String>,
    }

    impl World {
        fn new(config: fn(&mut ConnectionConfig), proto: Proto) -> Self {
            let mut c = ConnectionConfig::default();
            config(&mut c);
            let now = Instant::now();
            Self {
                state: ConnState::new(&c, now),
                t: Transport::detached(),
                proto,
                now,
                input: VecDeque::new(),
                room: None,
                broken: false,
                hold: None,
                log: Vec::new(),
            }
        }

        fn step(&mut self, what: Do) {
            match what {
                Do::Wake => {}
                Do::Input(reads) => self.input.extend(reads),
                Do::Arrive(reads) => {
                    self.input.extend(reads);
                    return;
                }
                Do::Call(f) => f(&self.t),
                Do::HoldIdle => self.hold = Some(self.t.hold_idle()),
                Do::ReleaseIdle => self.hold = None,
                Do::Room(room) => self.room = room,
                Do::BrokenPipe => self.broken = true,
                Do::Deadline(d) => self.t.set_deadline_at(self.now + d),
                Do::Drain => self.state.handle_drain(),
                Do::Sleep(d) => {
                    self.now += d;
                    return;
                }
                Do::Fire(d) => {
                    self.now += d;
                    self.log.push("timer".into());
                    self.state.handle_timeout(self.now);
                }
            }
            self.run();
        }

        /// Carries out actions until the machine waits or closes, as the glommio driver does,
        /// logging one line per action: `flush N` (a flush that sent nothing is not logged),
        /// `read N|eof|reset|blocked`, `linger ...` likewise, `shutdown`, the callbacks by
        /// name, `clock`, `yield`, `wait [TIME]` with the timer's wait, `close LABEL`.
        fn run(&mut self) {
            for _ in 0..100 {
                let action = self.state.poll(&self.t);
                let line = match action {
                    Action::Flush => {
                        if self.broken {
                            self.state.handle_write_error(CloseReason::Reset);
                            continue;
                        }
                        let n = self.t.buffered().min(self.room.unwrap_or(usize::MAX));
                        self.t.out().consume(n);
                        self.room = self.room.map(|r| r - n);
                        let resumed = self.t.output_drained();
                        self.state.handle_flushed(n);
                        if resumed {
                            self.state.handle_resumed();
                        }
                        if n == 0 {
                            continue;
                        }
                        format!("flush {n}")
                    }
                    Action::Read | Action::Linger => {
                        let kind = if action == Action::Read { "read" } else { "linger" };
                        match self.input.pop_front() {
                            Some(In::Data(n)) => {
                                self.state.handle_read(n);
                                if action == Action::Read {
                                    (self.proto.data)(&self.t, n);
                                }
                                format!("{kind} {n}")
                            }
                            Some(In::Eof) => {
                                self.state.handle_read_eof();
                                format!("{kind} eof")
                            }
                            Some(In::Reset) => {
                                self.state.handle_read_error(CloseReason::Reset);
                                format!("{kind} reset")
                            }
                            None => {
                                self.state.handle_read_blocked();
                                format!("{kind} blocked")
                            }
                        }
                    }
                    Action::ShutdownWrite => "shutdown".into(),
                    Action::CallDrainRequested => {
                        (self.proto.drain)(&self.t);
                        "drain_requested".into()
                    }
                    Action::CallReadConnectionLost => {
                        (self.proto.eof)(&self.t);
                        "read_connection_lost".into()
                    }
                    Action::CallWriteConnectionLost => "write_connection_lost".into(),
                    Action::CallDeadlineExpired => {
                        (self.proto.deadline)(&self.t);
                        "deadline_expired".into()
                    }
                    Action::ReadClock => {
                        self.state.handle_now(self.now);
                        "clock".into()
                    }
                    Action::Yield => "yield".into(),
                    Action::Wait => {
                        let line = match self.state.poll_timeout() {
                            Some(at) => format!("wait {}", span(at.saturating_duration_since(self.now))),
                            None => "wait".into(),
                        };
                        self.log.push(line);
                        return;
                    }
                    Action::Close(reason) => {
                        self.log.push(format!("close {}", reason.label()));
                        return;
                    }
                };
                self.log.push(line);
            }
            panic!("no Wait or Close after 100 actions: {:?}", self.log);
        }
    }

    /// A timer's wait, as the logs show it: `2s`, `1500ms`.
    fn span(d: Duration) -> String {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    fn check(cases: &[Case<'_>]) {
        for case in cases {
            let mut w = World::new(case.config, case.proto);
            for (i, (what, expect)) in case.steps.iter().enumerate() {
                w.log.clear();
                w.step(*what);
                assert_eq!(w.log, *expect, "{}: step {i}", case.name);
            }
        }
    }

    /// The first poll of an idle connection: try to read, then wait.
    const START: (Do, &[&str]) = (Do::Wake, &["read blocked", "wait"]);

    #[test]
    fn output_is_idle_only_while_the_connection_reads_on() {
        type Case = (&'static str, fn(&Transport), fn(&mut ConnState, &Transport), bool);
        let cases: [Case; 7] = [
            ("reading", |_| {}, |_, _| {}, true),
            ("closing", |t| t.lose_connection(), |_, _| {}, false),
            ("half-closing", |t| t.lose_write_connection(), |_, _| {}, false),
            ("reading paused", |t| t.pause_reading(), |_, _| {}, false),
            (
                "over the high-water mark",
                |t| t.write(&vec![0; 1 << 20]),
                |_, _| {},
                false,
            ),
            ("draining", |_| {}, |s, _| s.handle_drain(), false),
            (
                "after the peer's EOF",
                |_| {},
                |s, t| {
                    assert_eq!(s.poll(t), Action::Read);
                    s.handle_read_eof();
                },
                false,
            ),
        ];
        for (name, use_transport, event, idle) in cases {
            let mut state = ConnState::new(&ConnectionConfig::default(), Instant::now());
            let t = Transport::detached();
            use_transport(&t);
            event(&mut state, &t);
            assert_eq!(state.reads_on(&t), idle, "{name}");
        }
    }

    #[test]
    fn reads_and_echoes_without_the_clock() {
        check(&[
            Case {
                name: "echo: no clock read, no timer",
                config: defaults,
                proto: ECHO,
                steps: &[
                    START,
                    (
                        Do::Input(&[In::Data(5), In::Data(3)]),
                        &["read 5", "flush 5", "read 3", "flush 3", "read blocked", "wait"],
                    ),
                ],
            },
            Case {
                name: "the read budget yields, and the next round reads on",
                config: |c| c.reads_per_wakeup = 2,
                proto: DEFAULT,
                steps: &[
                    (
                        Do::Input(&[In::Data(1), In::Data(1), In::Data(1)]),
                        &["read 1", "read 1", "yield", "wait"],
                    ),
                    (Do::Wake, &["read 1", "read blocked", "wait"]),
                ],
            },
            Case {
                name: "paused reading reads nothing until resumed",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (Do::Call(|t| t.pause_reading()), &["wait"]),
                    (Do::Input(&[In::Data(3)]), &["wait"]),
                    (
                        Do::Call(|t| t.resume_reading()),
                        &["read 3", "read blocked", "wait"],
                    ),
                ],
            },
            Case {
                name: "output above the high-water mark stops reading until it drains",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (Do::Room(Some(0)), &["read blocked", "wait"]),
                    (Do::Call(|t| t.write(&[0; 70 * 1024])), &["clock", "wait 30s"]),
                    (Do::Input(&[In::Data(3)]), &["clock", "wait 30s"]),
                    (
                        Do::Room(Some(60 * 1024)),
                        &["flush 61440", "read 3", "read blocked", "clock", "wait 30s"],
                    ),
                ],
            },
            Case {
                name: "a read error ends the connection",
                config: defaults,
                proto: DEFAULT,
                steps: &[START, (Do::Input(&[In::Reset]), &["read reset", "close reset"])],
            },
            Case {
                name: "a write error ends the connection",
                config: defaults,
                proto: ECHO,
                steps: &[
                    (Do::BrokenPipe, &["read blocked", "wait"]),
                    (Do::Input(&[In::Data(2)]), &["read 2", "close reset"]),
                ],
            },
        ]);
    }

    #[test]
    fn peer_eof_and_half_close() {
        check(&[
            Case {
                name: "EOF with nothing queued: the default closes at once",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    START,
                    (
                        Do::Input(&[In::Eof]),
                        &["read eof", "read_connection_lost", "close eof"],
                    ),
                ],
            },
            Case {
                name: "EOF with output queued: flushed first, then closed as PeerEof",
                config: defaults,
                proto: ECHO,
                steps: &[
                    (Do::Room(Some(2)), &["read blocked", "wait"]),
                    (
                        Do::Input(&[In::Data(5), In::Eof]),
                        &[
                            "read 5",
                            "flush 2",
                            "read eof",
                            "read_connection_lost",
                            "clock",
                            "wait 30s",
                        ],
                    ),
                    (Do::Room(Some(1)), &["flush 1", "clock", "wait 30s"]),
                    (Do::Room(None), &["flush 2", "close eof"]),
                ],
            },
            Case {
                name: "half-close: our FIN first, then the peer's EOF",
                config: defaults,
                proto: HALF_CLOSE,
                steps: &[
                    (
                        Do::Call(|t| {
                            t.write(b"last");
                            t.lose_write_connection();
                        }),
                        &[
                            "flush 4",
                            "shutdown",
                            "write_connection_lost",
                            "read blocked",
                            "wait",
                        ],
                    ),
                    (Do::Call(|t| t.write(b"dropped")), &["read blocked", "wait"]),
                    (
                        Do::Input(&[In::Data(3), In::Eof]),
                        &["read 3", "read eof", "read_connection_lost", "close eof"],
                    ),
                ],
            },
            Case {
                name: "half-close: the peer's EOF first, then our FIN",
                config: defaults,
                proto: HALF_CLOSE,
                steps: &[
                    (
                        Do::Input(&[In::Eof]),
                        &["read eof", "read_connection_lost", "wait"],
                    ),
                    (Do::Call(|t| t.write(b"more")), &["flush 4", "wait"]),
                    (
                        Do::Call(|t| t.lose_write_connection()),
                        &["shutdown", "write_connection_lost", "close eof"],
                    ),
                ],
            },
            Case {
                name: "half-close waits for its output before the FIN",
                config: defaults,
                proto: HALF_CLOSE,
                steps: &[
                    (Do::Room(Some(0)), &["read blocked", "wait"]),
                    (
                        Do::Call(|t| {
                            t.write(b"abc");
                            t.lose_write_connection();
                        }),
                        &["read blocked", "clock", "wait 30s"],
                    ),
                    (
                        Do::Room(None),
                        &[
                            "flush 3",
                            "shutdown",
                            "write_connection_lost",
                            "read blocked",
                            "wait",
                        ],
                    ),
                ],
            },
            Case {
                name: "a close after the peer's EOF is a PeerEof, without linger",
                config: defaults,
                proto: HALF_CLOSE,
                steps: &[
                    (
                        Do::Input(&[In::Eof]),
                        &["read eof", "read_connection_lost", "wait"],
                    ),
                    (
                        Do::Call(|t| {
                            t.write(b"bye");
                            t.lose_connection();
                        }),
                        &["flush 3", "close eof"],
                    ),
                ],
            },
        ]);
    }

    #[test]
    fn orderly_close_lingers() {
        const BYE: Do = Do::Call(|t| {
            t.write(b"bye");
            t.lose_connection();
        });
        const LINGER: (Do, &[&str]) = (
            BYE,
            &["flush 3", "shutdown", "clock", "linger blocked", "wait 2s"],
        );
        check(&[
            Case {
                name: "FIN, then discard until the peer's EOF",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    START,
                    LINGER,
                    (
                        Do::Input(&[In::Data(7), In::Data(1), In::Eof]),
                        &["linger 7", "linger 1", "linger eof", "close local"],
                    ),
                ],
            },
            Case {
                name: "FIN, then the linger time runs out",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    LINGER,
                    (Do::Fire(ms(500)), &["timer", "linger blocked", "wait 1500ms"]),
                    (
                        Do::Input(&[In::Data(1)]),
                        &["linger 1", "linger blocked", "clock", "wait 1500ms"],
                    ),
                    (Do::Fire(ms(1500)), &["timer", "linger blocked", "close local"]),
                ],
            },
            Case {
                name: "a read error while lingering is still a local close",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    LINGER,
                    (Do::Input(&[In::Reset]), &["linger reset", "close local"]),
                ],
            },
            Case {
                name: "lingering reads are budgeted",
                config: |c| c.reads_per_wakeup = 1,
                proto: DEFAULT,
                steps: &[
                    (
                        BYE,
                        &["flush 3", "shutdown", "clock", "linger blocked", "wait 2s"],
                    ),
                    (
                        Do::Input(&[In::Data(1), In::Data(1)]),
                        &["linger 1", "yield", "clock", "wait 2s"],
                    ),
                    (Do::Wake, &["linger 1", "yield", "clock", "wait 2s"]),
                    (Do::Wake, &["linger blocked", "clock", "wait 2s"]),
                ],
            },
            Case {
                name: "while lingering only the linger time counts",
                config: |c| c.idle_timeout = Some(Duration::from_secs(1)),
                proto: DEFAULT,
                steps: &[
                    (Do::Wake, &["read blocked", "clock", "wait 1s"]),
                    (Do::Deadline(ms(100)), &["read blocked", "clock", "wait 100ms"]),
                    (
                        Do::Call(|t| t.lose_connection()),
                        &["shutdown", "clock", "linger blocked", "wait 2s"],
                    ),
                    (Do::Fire(secs(1)), &["timer", "linger blocked", "wait 1s"]),
                    (Do::Fire(secs(1)), &["timer", "linger blocked", "close local"]),
                ],
            },
        ]);
    }

    #[test]
    fn forced_close_wins() {
        check(&[
            Case {
                name: "abort drops the output and closes at once",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    START,
                    (
                        Do::Call(|t| {
                            t.write(b"lost");
                            t.abort_connection();
                        }),
                        &["close aborted"],
                    ),
                ],
            },
            Case {
                name: "abort wins over input not read yet",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (
                        Do::Call(|t| {
                            t.lose_connection();
                            t.abort_connection();
                        }),
                        &["close aborted"],
                    ),
                    (Do::Input(&[In::Eof]), &["close aborted"]),
                ],
            },
            Case {
                name: "abort from data_received wins over the EOF read after it",
                config: defaults,
                proto: Proto {
                    data: |t, _| t.abort_connection(),
                    ..DEFAULT
                },
                steps: &[(Do::Input(&[In::Data(1), In::Eof]), &["read 1", "close aborted"])],
            },
            Case {
                name: "but both directions closed is a PeerEof, even if the callback aborts",
                config: defaults,
                proto: Proto {
                    eof: |t| t.abort_connection(),
                    ..DEFAULT
                },
                steps: &[
                    (
                        Do::Call(|t| t.lose_write_connection()),
                        &["shutdown", "write_connection_lost", "read blocked", "wait"],
                    ),
                    (
                        Do::Input(&[In::Eof]),
                        &["read eof", "read_connection_lost", "close eof"],
                    ),
                ],
            },
            Case {
                name: "abort while lingering",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (
                        Do::Call(|t| t.lose_connection()),
                        &["shutdown", "clock", "linger blocked", "wait 2s"],
                    ),
                    (Do::Call(|t| t.abort_connection()), &["close aborted"]),
                ],
            },
            Case {
                name: "the output cap",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (Do::Room(Some(0)), &["read blocked", "wait"]),
                    (Do::Call(|t| t.write(&[0; 5 << 20])), &["close output_limit"]),
                ],
            },
            Case {
                name: "an engine shutdown during a stall",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (Do::Room(Some(0)), &["read blocked", "wait"]),
                    (
                        Do::Call(|t| t.write(b"x")),
                        &["read blocked", "clock", "wait 30s"],
                    ),
                    (
                        Do::Call(|t| t.force_close(CloseReason::Shutdown)),
                        &["close shutdown"],
                    ),
                    (Do::Fire(secs(30)), &["timer", "close shutdown"]),
                ],
            },
            Case {
                name: "abort from deadline_expired is not a deadline close",
                config: defaults,
                proto: Proto {
                    deadline: |t| t.abort_connection(),
                    ..DEFAULT
                },
                steps: &[(
                    Do::Deadline(Duration::ZERO),
                    &["read blocked", "clock", "deadline_expired", "close aborted"],
                )],
            },
        ]);
    }

    #[test]
    fn idle_and_write_stall_timeouts() {
        check(&[
            Case {
                name: "idle: reset by traffic, then expires",
                config: |c| c.idle_timeout = Some(Duration::from_secs(10)),
                proto: ECHO,
                steps: &[
                    (Do::Wake, &["read blocked", "clock", "wait 10s"]),
                    (Do::Sleep(secs(4)), &[]),
                    (
                        Do::Input(&[In::Data(1)]),
                        &["read 1", "flush 1", "read blocked", "clock", "wait 10s"],
                    ),
                    (Do::Fire(secs(6)), &["timer", "read blocked", "wait 4s"]),
                    (
                        Do::Fire(secs(4)),
                        &["timer", "read blocked", "close idle_timeout"],
                    ),
                ],
            },
            Case {
                name: "idle: held off while an answer is made, then counted from its end",
                config: |c| c.idle_timeout = Some(Duration::from_secs(10)),
                proto: DEFAULT,
                steps: &[
                    (Do::Wake, &["read blocked", "clock", "wait 10s"]),
                    (Do::HoldIdle, &["read blocked", "clock", "wait"]),
                    (Do::Fire(secs(10)), &["timer", "read blocked", "wait"]),
                    (Do::Sleep(secs(60)), &[]),
                    (Do::ReleaseIdle, &["read blocked", "clock", "wait 10s"]),
                    (
                        Do::Fire(secs(10)),
                        &["timer", "read blocked", "close idle_timeout"],
                    ),
                ],
            },
            Case {
                name: "no idle timeout configured: no clock, no timer",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    START,
                    (Do::Sleep(secs(3600)), &[]),
                    (Do::Wake, &["read blocked", "wait"]),
                ],
            },
            Case {
                name: "write stall: watched only while output is pending, reset by progress",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (Do::Room(Some(0)), &["read blocked", "wait"]),
                    (
                        Do::Call(|t| t.write(b"12345")),
                        &["read blocked", "clock", "wait 30s"],
                    ),
                    (Do::Sleep(secs(20)), &[]),
                    (
                        Do::Room(Some(2)),
                        &["flush 2", "read blocked", "clock", "wait 30s"],
                    ),
                    (Do::Fire(secs(25)), &["timer", "read blocked", "wait 5s"]),
                    (Do::Fire(secs(5)), &["timer", "read blocked", "close write_stall"]),
                ],
            },
            Case {
                name: "write stall: output drained in time stops the watch",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (Do::Room(Some(0)), &["read blocked", "wait"]),
                    (
                        Do::Call(|t| t.write(b"12345")),
                        &["read blocked", "clock", "wait 30s"],
                    ),
                    (Do::Room(None), &["flush 5", "read blocked", "wait"]),
                    (Do::Fire(secs(30)), &["timer", "read blocked", "wait"]),
                ],
            },
            Case {
                name: "write stall off: pending output is not watched",
                config: |c| c.write_stall_timeout = None,
                proto: DEFAULT,
                steps: &[
                    (Do::Room(Some(0)), &["read blocked", "wait"]),
                    (Do::Call(|t| t.write(b"12345")), &["read blocked", "wait"]),
                ],
            },
            Case {
                name: "idle and stall: the earlier fires",
                config: |c| {
                    c.idle_timeout = Some(Duration::from_secs(10));
                    c.write_stall_timeout = Some(Duration::from_secs(5));
                },
                proto: DEFAULT,
                steps: &[
                    (Do::Room(Some(0)), &["read blocked", "clock", "wait 10s"]),
                    (Do::Call(|t| t.write(b"x")), &["read blocked", "clock", "wait 5s"]),
                    (Do::Fire(secs(5)), &["timer", "read blocked", "close write_stall"]),
                ],
            },
        ]);
    }

    #[test]
    fn protocol_deadline() {
        check(&[
            Case {
                name: "deadline_expired, a last answer, then a close reported as DeadlineExpired",
                config: defaults,
                proto: Proto {
                    deadline: |t| t.write(b"408"),
                    ..DEFAULT
                },
                steps: &[
                    (Do::Deadline(secs(5)), &["read blocked", "clock", "wait 5s"]),
                    (
                        Do::Fire(secs(5)),
                        &[
                            "timer",
                            "read blocked",
                            "deadline_expired",
                            "flush 3",
                            "shutdown",
                            "linger blocked",
                            "wait 2s",
                        ],
                    ),
                    (Do::Input(&[In::Eof]), &["linger eof", "close deadline"]),
                ],
            },
            Case {
                name: "the deadline's close reports DeadlineExpired over the peer's EOF",
                config: defaults,
                proto: HALF_CLOSE,
                steps: &[
                    (
                        Do::Input(&[In::Eof]),
                        &["read eof", "read_connection_lost", "wait"],
                    ),
                    (
                        Do::Deadline(Duration::ZERO),
                        &["clock", "deadline_expired", "close deadline"],
                    ),
                ],
            },
            Case {
                name: "a cleared deadline is not watched",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (Do::Deadline(secs(5)), &["read blocked", "clock", "wait 5s"]),
                    (Do::Call(|t| t.clear_deadline()), &["read blocked", "wait"]),
                    (Do::Fire(secs(5)), &["timer", "read blocked", "wait"]),
                ],
            },
            Case {
                name: "a close of our own is a plain LocalClose",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (
                        Do::Call(|t| t.lose_connection()),
                        &["shutdown", "clock", "linger blocked", "wait 2s"],
                    ),
                    (Do::Input(&[In::Eof]), &["linger eof", "close local"]),
                ],
            },
        ]);
    }

    #[test]
    fn drain() {
        check(&[
            Case {
                name: "drain_requested exactly once",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    START,
                    (
                        Do::Drain,
                        &["read blocked", "drain_requested", "read blocked", "wait"],
                    ),
                    (Do::Drain, &["read blocked", "wait"]),
                    (Do::Input(&[In::Data(1)]), &["read 1", "read blocked", "wait"]),
                ],
            },
            Case {
                name: "a protocol that closes on drain",
                config: defaults,
                proto: Proto {
                    drain: close,
                    ..DEFAULT
                },
                steps: &[(
                    Do::Drain,
                    &[
                        "read blocked",
                        "drain_requested",
                        "shutdown",
                        "clock",
                        "linger blocked",
                        "wait 2s",
                    ],
                )],
            },
            Case {
                name: "what arrived before the drain is read before drain_requested",
                config: defaults,
                proto: Proto {
                    drain: close,
                    ..DEFAULT
                },
                steps: &[
                    START,
                    (Do::Arrive(&[In::Data(5)]), &[]),
                    (
                        Do::Drain,
                        &[
                            "read 5",
                            "read blocked",
                            "drain_requested",
                            "shutdown",
                            "clock",
                            "linger blocked",
                            "wait 2s",
                        ],
                    ),
                ],
            },
            Case {
                name: "a forced close comes before the drain",
                config: defaults,
                proto: DEFAULT,
                steps: &[
                    (Do::Call(|t| t.abort_connection()), &["close aborted"]),
                    (Do::Drain, &["close aborted"]),
                ],
            },
        ]);
    }

    /// A state to put the machine in: its name, its configuration and the steps there.
    struct State<'a> {
        name: &'a str,
        config: fn(&mut ConnectionConfig),
        steps: &'a [Do],
    }

    /// Of two deadlines the earlier is acted on, and of equal ones the first (idle before
    /// stall before the protocol's).
    #[test]
    fn the_earliest_deadline_wins_and_the_first_of_equal_ones() {
        use Deadline::{Idle, Stall};
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        assert_eq!(earlier(None, None), None);
        assert_eq!(earlier(Some((t, Idle)), None), Some((t, Idle)));
        assert_eq!(earlier(None, Some((t, Stall))), Some((t, Stall)));
        assert_eq!(earlier(Some((later, Idle)), Some((t, Stall))), Some((t, Stall)));
        assert_eq!(earlier(Some((t, Idle)), Some((later, Stall))), Some((t, Idle)));
        assert_eq!(earlier(Some((t, Idle)), Some((t, Stall))), Some((t, Idle)));
    }

    /// A timer that fires before any deadline does what a plain wake-up does (a new round
    /// that finds nothing to do), and leaves the deadline as it was.
    #[test]
    fn spurious_timers_change_nothing() {
        let states = [
            State {
                name: "idle, no deadline",
                config: defaults,
                steps: &[Do::Wake],
            },
            State {
                name: "idle timeout",
                config: |c| c.idle_timeout = Some(Duration::from_secs(10)),
                steps: &[Do::Wake],
            },
            State {
                name: "stalled output",
                config: defaults,
                steps: &[Do::Room(Some(0)), Do::Call(|t| t.write(b"x"))],
            },
            State {
                name: "protocol deadline",
                config: defaults,
                steps: &[Do::Deadline(secs(10))],
            },
            State {
                name: "lingering",
                config: defaults,
                steps: &[Do::Call(|t| t.lose_connection())],
            },
            State {
                name: "half-closed",
                config: defaults,
                steps: &[Do::Call(|t| t.lose_write_connection())],
            },
        ];
        for state in &states {
            let mut fired = World::new(state.config, DEFAULT);
            let mut woken = World::new(state.config, DEFAULT);
            woken.now = fired.now;
            for s in state.steps {
                fired.step(*s);
                woken.step(*s);
            }
            let deadline = fired.state.poll_timeout();
            for _ in 0..5 {
                fired.log.clear();
                woken.log.clear();
                fired.step(Do::Fire(ms(100)));
                woken.step(Do::Sleep(ms(100)));
                woken.step(Do::Wake);
                // The timer brings the time with it; a wake-up reads it if it needs it.
                let mut expect = vec!["timer".to_owned()];
                expect.extend(woken.log.iter().filter(|l| *l != "clock").cloned());
                assert_eq!(fired.log, expect, "{}", state.name);
                assert!(
                    fired.log.last().is_some_and(|l| l.starts_with("wait")),
                    "{}",
                    state.name
                );
                assert_eq!(fired.state.poll_timeout(), deadline, "{}", state.name);
            }
        }
    }

    /// An action whose report is missing is handed out again, and a timer in mid-round
    /// changes nothing.
    #[test]
    fn unreported_actions_are_handed_out_again() {
        let t = Transport::detached();
        let now = Instant::now();
        let mut s = ConnState::new(&ConnectionConfig::default(), now);
        t.write(b"abc");
        assert_eq!(s.poll(&t), Action::Flush);
        s.handle_timeout(now);
        assert_eq!(s.poll(&t), Action::Flush);
        s.handle_read(3);
        t.out().consume(3);
        s.handle_flushed(3);
        assert_eq!(s.poll(&t), Action::Read);
        s.handle_timeout(now);
        s.handle_flushed(3);
        assert_eq!(s.poll(&t), Action::Read);
        s.handle_read_blocked();
        assert_eq!(s.poll(&t), Action::Wait);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.poll(&t), Action::Read, "a poll after Wait begins a new round");
    }

    #[test]
    fn facts_after_the_close_change_nothing() {
        let t = Transport::detached();
        let now = Instant::now();
        let mut s = ConnState::new(&ConnectionConfig::default(), now);
        t.write(b"abc");
        assert_eq!(s.poll(&t), Action::Flush);
        s.handle_write_error(CloseReason::Reset);
        assert_eq!(s.poll(&t), Action::Close(CloseReason::Reset));
        s.handle_flushed(3);
        s.handle_read(1);
        s.handle_read_eof();
        s.handle_read_error(CloseReason::Aborted);
        s.handle_read_blocked();
        s.handle_write_error(CloseReason::Aborted);
        s.handle_drain();
        s.handle_now(now);
        s.handle_timeout(now + Duration::from_secs(60));
        t.abort_connection();
        assert_eq!(
            s.poll(&t),
            Action::Close(CloseReason::Reset),
            "the first reason stays"
        );
        assert_eq!(s.poll_timeout(), None);
    }
}
