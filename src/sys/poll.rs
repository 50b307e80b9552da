//! The blocking waits of the side threads (health check, metrics exporter, handoff server):
//! a listener to accept from and a socket that says stop, or any few sockets with a time
//! limit.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Blocks until `listener` has a connection to accept (`Ok(true)`) or `stop` is readable or
/// hung up (`Ok(false)`, which wins when both are). Interrupted waits are retried.
pub(crate) fn wait_for_accept(listener: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> io::Result<bool> {
    let [_, stopped] = wait_readable([listener, stop], None)?;
    Ok(!stopped)
}

/// Blocks until one of `fds` is readable or hung up, or `timeout` has passed (`None`: no
/// limit); returns which are (none when the time is up). Interrupted waits are retried for
/// the time left.
pub(crate) fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut polled = fds.map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let deadline = timeout.map(|t| Instant::now() + t);
    let count = libc::nfds_t::try_from(N).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // Whole milliseconds, rounded up so that the wait does not end before the deadline.
        let ms = deadline.map_or(-1, |d| {
            let left = d.saturating_duration_since(Instant::now());
            i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        // SAFETY: `polled` is an array of N pollfd, live for the call, whose descriptors the
        // borrows keep open.
        let rc = unsafe { libc::poll(polled.as_mut_ptr(), count, ms) };
        if rc >= 0 {
            return Ok(polled.map(|p| p.revents != 0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
