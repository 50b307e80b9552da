//! The outgoing byte queue of one connection (I/O-free).

/// Capacity an emptied buffer may keep; a larger one is freed so that an idle connection
/// does not pin the memory of its busiest moment.
const RETAIN: usize = 4096;

/// Bytes queued for the socket: appended at the back, consumed from the front.
///
/// It is one contiguous `Vec` with a read offset, so a flush is one `send` of one slice; the
/// consumed prefix is reclaimed when it is half the buffer or the buffer empties.
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    head: usize,
}

impl OutBuf {
    /// Queues `data` after everything already queued.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.append_with(|buf| buf.extend_from_slice(data));
    }

    /// Queues the bytes `fill` appends to the buffer, which holds what is queued already:
    /// `fill` must only append.
    pub(crate) fn append_with<R>(&mut self, fill: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        fill(&mut self.buf)
    }

    /// The queued bytes, oldest first.
    pub(crate) fn chunk(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Marks `n` bytes from the front as sent.
    pub(crate) fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.buf.len());
        if self.head == self.buf.len() {
            self.clear();
        }
    }

    /// Number of queued bytes.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything queued, and frees a large allocation.
    pub(crate) fn clear(&mut self) {
        self.head = 0;
        if self.buf.capacity() > RETAIN {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_partial_consume() {
        let mut b = OutBuf::default();
        b.push(b"hello ");
        b.push(b"world");
        assert_eq!(b.chunk(), b"hello world");
        b.consume(6);
        assert_eq!(b.chunk(), b"world");
        b.push(b"!");
        assert_eq!(b.chunk(), b"world!");
        b.consume(6);
        assert!(b.is_empty());
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn frees_large_buffers_when_drained() {
        let mut b = OutBuf::default();
        b.push(&vec![7u8; 100_000]);
        assert!(b.buf.capacity() >= 100_000);
        b.consume(100_000);
        assert_eq!(b.buf.capacity(), 0);
        b.push(b"x");
        b.consume(1);
        assert!(b.buf.capacity() > 0 && b.buf.capacity() <= RETAIN);
    }

    #[test]
    fn reclaims_consumed_prefix() {
        let mut b = OutBuf::default();
        b.push(&[1; 1000]);
        b.consume(600);
        b.push(&[2; 10]);
        assert_eq!(b.len(), 410);
        assert_eq!(b.chunk()[..400], [1; 400]);
        assert_eq!(b.chunk()[400..], [2; 10]);
        b.consume(1000);
        assert!(b.is_empty());
    }
}
