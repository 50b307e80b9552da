//! The only layer that touches glommio, sockets and the clock.

pub(crate) mod connection;
pub(crate) mod connector;
pub(crate) mod engine;
pub(crate) mod port;
pub(crate) mod reservation;
pub(crate) mod shard;

use std::os::fd::{AsRawFd, BorrowedFd};

/// Borrows a glommio socket's descriptor, for socket2's option calls.
pub(crate) fn borrow_fd<S: AsRawFd>(socket: &S) -> BorrowedFd<'_> {
    // SAFETY: the descriptor is open for as long as `socket` is borrowed.
    unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) }
}
