//! Descriptors crossing type boundaries: glommio's sockets implement only `FromRawFd` and
//! `AsRawFd`, and some descriptors are known only by number (a listener a shard owns, a
//! connection's socket as its transport remembers it).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// Moves `fd` into a `T` that takes ownership of raw descriptors (glommio's `TcpListener`,
/// `TcpStream` and `UnixStream`). `fd` should be of the kind `T` serves: a wrong kind fails
/// `T`'s operations, nothing worse.
pub(crate) fn adopt<T: FromRawFd>(fd: OwnedFd) -> T {
    // SAFETY: `fd` is open and owned, and `into_raw_fd` gives that ownership up, so the new
    // `T` is the descriptor's only owner, which is all `from_raw_fd` asks.
    unsafe { T::from_raw_fd(fd.into_raw_fd()) }
}

/// Borrows the descriptor of `socket`, for socket2's option calls. Meant for types that own
/// their descriptor and close it only when dropped (glommio's sockets), so that it stays
/// open while `socket` is borrowed.
pub(crate) fn borrow<S: AsRawFd>(socket: &S) -> BorrowedFd<'_> {
    borrow_raw(socket, socket.as_raw_fd())
}

/// Borrows `fd`, a descriptor known only by number, for as long as `owner` is borrowed.
///
/// The caller's promise (every call site says why it holds): `fd` stays open while `owner`
/// is borrowed. This is about I/O safety, not memory: a broken promise makes socket calls act
/// on whatever descriptor holds that number then.
pub(crate) fn borrow_raw<O: ?Sized>(owner: &O, fd: RawFd) -> BorrowedFd<'_> {
    let _ = owner;
    // SAFETY: the caller keeps `fd` open for as long as `owner`, which the returned borrow
    // cannot outlive, is borrowed (see above).
    unsafe { BorrowedFd::borrow_raw(fd) }
}
