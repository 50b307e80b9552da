//! The io_uring probe: whether this process may set up a ring at all.

use std::io;

/// Creates and closes a one-entry ring; the error is `io_uring_setup(2)`'s (`ENOSYS` with no
/// io_uring, `EPERM` or `EACCES` where it is disabled).
pub(crate) fn probe() -> io::Result<()> {
    // struct io_uring_params is 120 bytes; the kernel fills it in.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup(2) with 1 entry writes only into `params`, which is large enough.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is the ring descriptor just created, owned here and closed once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}
