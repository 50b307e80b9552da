//! The system layer: every libc call and every `unsafe` block of the crate, each behind a
//! safe function that states what its callers promise.
//!
//! Files are named after what they reach in the OS: [`fd`] (descriptors crossing into and
//! out of types that know them only by number), [`socket`] (listening sockets, accepts,
//! peer credentials), [`fdpass`] (descriptors over a Unix socket), [`poll`] (the side
//! threads' blocking wait), [`ifname`] (interface names and indexes), [`limits`] (resource
//! limits), [`uring`] (the io_uring probe) and [`process`] (the calling thread's CPU, the
//! process's user, clock ticks and page size). Nothing here knows glommio or weft's types:
//! the driver and the side threads call in, this layer calls nothing of the crate.

pub(crate) mod fd;
pub(crate) mod fdpass;
pub(crate) mod ifname;
pub(crate) mod limits;
pub(crate) mod poll;
pub(crate) mod process;
pub(crate) mod socket;
pub(crate) mod uring;
