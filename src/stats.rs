//! Per-shard counters: plain `Cell`s, touched only by their own shard (no atomics, no locks).

use std::cell::{Cell, RefCell};

use crate::proto::close::{CLOSE_LABELS, CloseReason};
use crate::proto::tls::{HANDSHAKE_LABELS, HandshakeResult};

/// The live counters of one shard.
#[derive(Debug, Default)]
pub(crate) struct ShardStats {
    pub(crate) accepted: Cell<u64>,
    pub(crate) refused: Cell<u64>,
    pub(crate) shed: Cell<u64>,
    pub(crate) bytes_in: Cell<u64>,
    pub(crate) bytes_out: Cell<u64>,
    pub(crate) emfile_recoveries: Cell<u64>,
    pub(crate) proxy_untrusted: Cell<u64>,
    pub(crate) proxy_invalid: Cell<u64>,
    pub(crate) proxy_timeouts: Cell<u64>,
    pub(crate) calls_sent: Cell<u64>,
    pub(crate) calls_received: Cell<u64>,
    pub(crate) tls_errors: Cell<u64>,
    closed: [Cell<u64>; CLOSE_LABELS.len()],
    tls_handshakes: [Cell<u64>; HANDSHAKE_LABELS.len()],
    accept_errors: RefCell<Vec<(i32, u64)>>,
}

impl ShardStats {
    pub(crate) fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get().wrapping_add(n));
    }

    pub(crate) fn closed(&self, reason: &CloseReason) {
        Self::add(&self.closed[reason.index()], 1);
    }

    pub(crate) fn tls_handshake(&self, result: HandshakeResult) {
        Self::add(&self.tls_handshakes[result.index()], 1);
    }

    pub(crate) fn accept_error(&self, errno: i32) {
        let mut errors = self.accept_errors.borrow_mut();
        match errors.iter_mut().find(|(e, _)| *e == errno) {
            Some((_, n)) => *n += 1,
            None => errors.push((errno, 1)),
        }
    }

    /// A copy of every counter; `active` is the shard's count of live connections (the size
    /// of its registry, not a counter kept beside it).
    pub(crate) fn snapshot(&self, active: usize) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.get(),
            refused: self.refused.get(),
            shed: self.shed.get(),
            active: active as u64,
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            emfile_recoveries: self.emfile_recoveries.get(),
            proxy_untrusted: self.proxy_untrusted.get(),
            proxy_invalid: self.proxy_invalid.get(),
            proxy_timeouts: self.proxy_timeouts.get(),
            calls_sent: self.calls_sent.get(),
            calls_received: self.calls_received.get(),
            calls_queued: 0,
            tls_errors: self.tls_errors.get(),
            closed: std::array::from_fn(|i| self.closed[i].get()),
            tls_handshakes: std::array::from_fn(|i| self.tls_handshakes[i].get()),
            accept_errors: self.accept_errors.borrow().clone(),
        }
    }
}

/// One shard's counters at one moment (or their sum over shards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections accepted and handed to a protocol.
    pub accepted: u64,
    /// Connections the factory refused (`build_protocol` returned `None`).
    pub refused: u64,
    /// Connections accepted and closed at once because the shard was at its cap.
    pub shed: u64,
    /// Connections open now.
    pub active: u64,
    /// Bytes read from peers.
    pub bytes_in: u64,
    /// Bytes written to peers.
    pub bytes_out: u64,
    /// Times the shard released its reserved descriptor to drain the queue on EMFILE.
    pub emfile_recoveries: u64,
    /// Connections to a PROXY-protocol listener closed unread: the peer is not trusted.
    pub proxy_untrusted: u64,
    /// Connections to a PROXY-protocol listener closed because the header was malformed or
    /// too long, or the peer closed or failed before finishing it.
    pub proxy_invalid: u64,
    /// Connections to a PROXY-protocol listener closed at the header deadline.
    pub proxy_timeouts: u64,
    /// Cross-shard calls this shard sent ([`shard::submit_to`](crate::shard::submit_to)).
    pub calls_sent: u64,
    /// Cross-shard calls this shard ran for others (shards and outside threads).
    pub calls_received: u64,
    /// Calls queued for this shard, not run yet, when the snapshot was taken.
    pub calls_queued: u64,
    /// TLS connections closed for a TLS error after their handshake (a bad record, a fatal
    /// alert from the peer).
    pub tls_errors: u64,
    /// Connections closed, by reason, in the order of [`CLOSE_LABELS`].
    pub closed: [u64; CLOSE_LABELS.len()],
    /// TLS handshakes, by result, in the order of
    /// [`HANDSHAKE_LABELS`](crate::tls::HANDSHAKE_LABELS).
    pub tls_handshakes: [u64; HANDSHAKE_LABELS.len()],
    /// Accept errors by errno.
    pub accept_errors: Vec<(i32, u64)>,
}

impl StatsSnapshot {
    /// Adds `other` into `self` (merging shards).
    pub fn merge(&mut self, other: &Self) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.shed += other.shed;
        self.active += other.active;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.emfile_recoveries += other.emfile_recoveries;
        self.proxy_untrusted += other.proxy_untrusted;
        self.proxy_invalid += other.proxy_invalid;
        self.proxy_timeouts += other.proxy_timeouts;
        self.calls_sent += other.calls_sent;
        self.calls_received += other.calls_received;
        self.calls_queued += other.calls_queued;
        self.tls_errors += other.tls_errors;
        for (a, b) in self.closed.iter_mut().zip(other.closed) {
            *a += b;
        }
        for (a, b) in self.tls_handshakes.iter_mut().zip(other.tls_handshakes) {
            *a += b;
        }
        for &(errno, n) in &other.accept_errors {
            match self.accept_errors.iter_mut().find(|(e, _)| *e == errno) {
                Some((_, m)) => *m += n,
                None => self.accept_errors.push((errno, n)),
            }
        }
    }

    /// The sum of `snapshots` (merging shards).
    pub fn sum<'a>(snapshots: impl IntoIterator<Item = &'a Self>) -> Self {
        let mut total = Self::default();
        for s in snapshots {
            total.merge(s);
        }
        total
    }

    /// Connections closed for `label` (one of [`CLOSE_LABELS`]).
    pub fn closed_for(&self, label: &str) -> u64 {
        CLOSE_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.closed[i])
    }

    /// TLS handshakes that ended with `label` (one of
    /// [`HANDSHAKE_LABELS`](crate::tls::HANDSHAKE_LABELS)).
    pub fn tls_handshakes_for(&self, label: &str) -> u64 {
        HANDSHAKE_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.tls_handshakes[i])
    }

    /// Total connections closed, every reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_merges() {
        let s = ShardStats::default();
        ShardStats::add(&s.accepted, 2);
        s.closed(&CloseReason::Reset);
        s.accept_error(libc::EMFILE);
        s.accept_error(libc::EMFILE);
        let a = s.snapshot(1);
        assert_eq!((a.accepted, a.active), (2, 1));
        assert_eq!(a.closed_for("reset"), 1);
        assert_eq!(a.accept_errors, vec![(libc::EMFILE, 2)]);
        let mut total = a.clone();
        total.merge(&a);
        assert_eq!(total.accepted, 4);
        assert_eq!(total.closed_total(), 2);
        assert_eq!(total.accept_errors, vec![(libc::EMFILE, 4)]);
    }
}
