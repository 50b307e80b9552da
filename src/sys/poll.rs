//! The blocking wait of the side threads (health check, metrics exporter, handoff server):
//! a listener to accept from, and a socket that says stop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Blocks until `listener` has a connection to accept (`Ok(true)`) or `stop` is readable or
/// hung up (`Ok(false)`, which wins when both are). Interrupted waits are retried.
pub(crate) fn wait_for_accept(listener: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [listener, stop].map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        // SAFETY: `fds` is an array of two pollfd, live for the call, whose descriptors the
        // borrows keep open.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc >= 0 {
            return Ok(fds[1].revents == 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
