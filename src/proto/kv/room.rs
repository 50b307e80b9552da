//! How much a connection may start while its answers wait to be sent: the rule that keeps a
//! pipeline's answers under the output cap when some of its commands run on other shards.
//!
//! A command run on the connection's own shard is answered at once, and the engine stops
//! handing over requests once the output passes its high-water mark: past the mark the
//! answers grow by one answer at most. A command sent to another shard is answered later,
//! and a pipeline's commands for that shard go in one call: were they all run at once,
//! eight `GET`s of 1 MiB values would come back as 8 MiB of answers together, however slowly
//! the client reads. So commands start only while the connection's answers (written and not
//! sent, held until the ones before them come, and promised to the call under way) are within
//! the high-water mark, and a call to another shard carries a budget: the shard runs its
//! commands until their answers fill it and sends back the rest, which wait for the output to
//! drain (see [`Keyspace::execute_within`](super::keyspace::Keyspace::execute_within)).
//!
//! Past the mark the answers grow by at most two answers: the one run here that crossed it,
//! and the first command of a call that had no room left, which runs alone when it is the
//! oldest unanswered command (the answers held behind it cannot go before it does). The
//! oldest command always starts unless the output is full (then the transport tells when it
//! drains), so a pipeline never stalls.
//!
//! ```
//! use weft::kv::room::Room;
//!
//! let room = Room { high_water: 64 * 1024, written: 0, held: 0, promised: 0, output_full: false };
//! assert!(room.may_start(false));
//! // A call may take half of what is left; commands run here meanwhile the other half.
//! assert_eq!(room.call_budget(false), Some(32 * 1024));
//! // 64 KiB of answers held behind a command on another shard: only that command goes.
//! let held = Room { held: 64 * 1024 + 1, ..room };
//! assert_eq!(held.call_budget(false), None);
//! assert_eq!(held.call_budget(true), Some(0));
//! // The output is full: nothing starts until it drains.
//! let full = Room { written: 1 << 20, output_full: true, ..room };
//! assert!(!full.may_start(true));
//! ```

/// A connection's answers now, against its output's high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// The output's high-water mark
    /// ([`FlowConfig::high_water`](crate::FlowConfig::high_water)).
    pub high_water: usize,
    /// Answers in the output and not sent yet.
    pub written: usize,
    /// Answers ready and held until the answers before them come.
    pub held: usize,
    /// The budget of the call under way to another shard.
    pub promised: usize,
    /// The output passed its high-water mark and has not drained to its low-water mark
    /// since ([`Transport::is_output_full`](crate::Transport::is_output_full)): the
    /// transport tells the protocol when it does.
    pub output_full: bool,
}

impl Room {
    /// The answers' bytes, counted against the high-water mark.
    fn used(&self) -> usize {
        self.written
            .saturating_add(self.held)
            .saturating_add(self.promised)
    }

    /// True when a command may start (run here, or be queued for a call to its shard):
    /// while the output is not full, the oldest unanswered command (`oldest`), or any while
    /// the answers are within the high-water mark.
    pub fn may_start(&self, oldest: bool) -> bool {
        !self.output_full && (oldest || self.used() <= self.high_water)
    }

    /// The budget of a call to another shard whose first command is the oldest unanswered
    /// one when `oldest` is set, if it [may start](Self::may_start): half of the room left
    /// (the other half stays for the commands that run here meanwhile), 0 when none is left
    /// (its first command runs alone). `None`: the call waits.
    pub fn call_budget(&self, oldest: bool) -> Option<usize> {
        self.may_start(oldest)
            .then(|| self.high_water.saturating_sub(self.used()) / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIGH: usize = 64 * 1024;

    fn room(written: usize, held: usize, promised: usize) -> Room {
        Room {
            high_water: HIGH,
            written,
            held,
            promised,
            output_full: written > HIGH,
        }
    }

    #[test]
    fn commands_start_while_the_answers_are_within_the_high_water() {
        assert!(room(0, 0, 0).may_start(false));
        assert!(room(HIGH / 2, HIGH / 4, HIGH / 4).may_start(false));
        assert!(!room(HIGH / 2, HIGH, 0).may_start(false));
        // A call's budget counts as its answers until it comes back.
        assert!(!room(0, 0, HIGH + 1).may_start(false));
    }

    #[test]
    fn the_oldest_command_starts_unless_the_output_is_full() {
        assert!(room(HIGH / 2, HIGH, 0).may_start(true));
        assert!(!room(HIGH + 1, 0, 0).may_start(true));
        // Written past the mark as the transport does not count it (bytes a TLS layer
        // holds): the transport will not say when it drains, so the oldest goes.
        let tls = Room {
            output_full: false,
            ..room(HIGH + 1, 0, 0)
        };
        assert!(tls.may_start(true) && !tls.may_start(false));
    }

    #[test]
    fn a_call_takes_half_the_room_left() {
        assert_eq!(room(0, 0, 0).call_budget(false), Some(HIGH / 2));
        assert_eq!(room(HIGH / 2, 0, 0).call_budget(false), Some(HIGH / 4));
        assert_eq!(room(HIGH, 0, 0).call_budget(false), Some(0));
        // No room: the oldest command runs alone, the others wait.
        assert_eq!(room(HIGH / 2, HIGH, 0).call_budget(true), Some(0));
        assert_eq!(room(HIGH / 2, HIGH, 0).call_budget(false), None);
        assert_eq!(room(HIGH + 1, 0, 0).call_budget(true), None);
    }

    #[test]
    fn huge_counts_saturate() {
        assert!(!room(usize::MAX, usize::MAX, 1).may_start(false));
        assert_eq!(room(HIGH, usize::MAX, 0).call_budget(true), Some(0));
    }
}
