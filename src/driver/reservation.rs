//! The real reserved descriptors (Twisted's `_FileDescriptorReservation`), one per shard,
//! shared by the engine's shards (see [`Spares`] for why).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::proto::accept::{Reservation, Spares};
use crate::sys;

/// A shard's view of the engine's reserved descriptors: `/dev/null` opened for the purpose,
/// or connections shed on EMFILE and kept, shut down, in their place.
#[derive(Debug)]
pub(crate) struct FdReservation {
    spares: Arc<Spares<OwnedFd>>,
}

impl FdReservation {
    /// Takes this shard's slot. If the table is already full it stays missing and is taken
    /// at the next chance.
    pub(crate) fn new(spares: Arc<Spares<OwnedFd>>) -> Self {
        let mut r = Self { spares };
        let _ = r.reserve();
        r
    }
}

impl Reservation<OwnedFd> for FdReservation {
    fn missing(&self) -> bool {
        self.spares.missing()
    }

    fn release(&mut self) -> bool {
        // Counted as missing before the descriptor closes here.
        self.spares.take().is_some()
    }

    fn reserve(&mut self) -> io::Result<()> {
        if self.spares.missing() {
            // std opens with O_CLOEXEC. Closed at once if another shard filled the slot first.
            drop(self.spares.put(File::open("/dev/null")?.into(), |_| {}));
        }
        Ok(())
    }

    fn keep(&mut self, conn: OwnedFd) -> Option<OwnedFd> {
        if !self.spares.missing() {
            return Some(conn);
        }
        // Shut down first: a kept connection may stay open until the next recovery, and its
        // client must read the end of the stream now.
        self.spares
            .put(conn, |conn| sys::socket::shutdown_stream(conn.as_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn reserve_release_cycle() {
        let spares = Arc::new(Spares::new(1));
        let mut r = FdReservation::new(spares.clone());
        assert!(!r.missing());
        r.reserve().unwrap();
        assert!(!r.missing(), "reserve is idempotent");
        assert!(r.release());
        assert!(r.missing());
        assert!(!r.release(), "nothing left to free");
        r.reserve().unwrap();
        assert!(!r.missing());
        let other = FdReservation::new(spares);
        assert!(!other.missing(), "the shards share their slots");
    }

    #[test]
    fn a_kept_connection_is_shut_down() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut r = FdReservation::new(Arc::new(Spares::new(1)));
        let conn = r.keep(OwnedFd::from(conn)).expect("nothing missing: served");
        assert!(r.release());
        assert!(r.keep(conn).is_none(), "kept as the missing slot");
        assert!(!r.missing());
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!(client.read(&mut b).unwrap(), 0, "the client reads EOF");
    }
}
