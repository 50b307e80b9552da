// WEFT PATCH (see WEFT-PATCH.md): a ring of provided buffers for socket receives.
//
// A receive submitted with `IOSQE_BUFFER_SELECT` names a buffer group instead of a buffer;
// the kernel takes a buffer from the group only when data arrives and says which one in the
// completion. So a connection waiting for data holds no buffer, and the data lands without a
// `recv` system call. The group is a ring shared with the kernel
// (`IORING_REGISTER_PBUF_RING`, Linux 5.19): we publish free buffers by advancing its tail,
// the kernel consumes them from its head.

use std::{
    cell::Cell,
    fmt, io,
    os::unix::io::RawFd,
    ptr,
    sync::atomic::{AtomicU16, Ordering},
};

use crate::uring_sys;

const IORING_REGISTER_PBUF_RING: libc::c_uint = 22;
/// The completion carries a buffer id (in its upper 16 bits).
pub(crate) const IORING_CQE_F_BUFFER: u32 = 1 << 0;
const IORING_CQE_BUFFER_SHIFT: u32 = 16;

/// `struct io_uring_buf_reg`.
#[repr(C)]
struct BufReg {
    ring_addr: u64,
    ring_entries: u32,
    bgid: u16,
    flags: u16,
    resv: [u64; 3],
}

/// `struct io_uring_buf`; the `resv` field of entry 0 is the ring's tail.
#[repr(C)]
struct Buf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// The buffer id a completion with these flags carries, if any.
pub(crate) fn buffer_id(cqe_flags: u32) -> Option<u16> {
    (cqe_flags & IORING_CQE_F_BUFFER != 0).then_some((cqe_flags >> IORING_CQE_BUFFER_SHIFT) as u16)
}

/// Anonymous private memory, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are those of a mapping this value owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A group of `count` buffers of `size` bytes registered with one ring.
///
/// It is never unregistered: it lives as long as its reactor, and closing the ring releases
/// the registration (unregistering in `drop` could reach a reused descriptor number once the
/// ring is closed). Its memory is unmapped when the last receive that names it is gone.
pub(crate) struct BufRing {
    bgid: u16,
    count: u16,
    size: u32,
    entries: Mapping,
    data: Mapping,
    /// Our copy of the tail: buffers published so far (wrapping).
    tail: Cell<u16>,
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("bgid", &self.bgid)
            .field("count", &self.count)
            .field("size", &self.size)
            .finish()
    }
}

impl BufRing {
    /// Registers `count` buffers (a power of two, at most 32768) of `size` bytes as group
    /// `bgid` of the ring `ring_fd`, all of them free.
    pub(crate) fn register(ring_fd: RawFd, bgid: u16, count: u16, size: u32) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 1 << 15 || size == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let entries = Mapping::new(usize::from(count) * std::mem::size_of::<Buf>())?;
        let data = Mapping::new(usize::from(count) * size as usize)?;
        let reg = BufReg {
            ring_addr: entries.ptr as u64,
            ring_entries: u32::from(count),
            bgid,
            flags: 0,
            resv: [0; 3],
        };
        // SAFETY: `reg` describes a page-aligned mapping of `count` entries that outlives the
        // registration (unregistered in `drop` before the mapping goes).
        let rc = unsafe {
            uring_sys::syscalls::io_uring_register(
                ring_fd,
                IORING_REGISTER_PBUF_RING,
                (&reg as *const BufReg).cast(),
                1,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let ring = Self {
            bgid,
            count,
            size,
            entries,
            data,
            tail: Cell::new(0),
        };
        for bid in 0..count {
            ring.push(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// The group id to name in a receive.
    pub(crate) fn group(&self) -> u16 {
        self.bgid
    }

    /// The size of each buffer.
    pub(crate) fn buffer_size(&self) -> usize {
        self.size as usize
    }

    /// The first `len` bytes of buffer `bid`, as the kernel filled them.
    pub(crate) fn filled(&self, bid: u16, len: usize) -> &[u8] {
        // `count` is a power of two (checked in `register`): a mask, not a division.
        let bid = bid & (self.count - 1);
        let len = len.min(self.size as usize);
        // SAFETY: buffer `bid` lies within `data`; it belongs to the caller (the kernel gave
        // it in a completion and it is not back in the ring until `recycle`).
        unsafe {
            std::slice::from_raw_parts(
                self.data.ptr.add(usize::from(bid) * self.size as usize),
                len,
            )
        }
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&self, bid: u16) {
        self.push(bid & (self.count - 1));
        self.publish();
    }

    /// Writes buffer `bid` into the entry at our tail (not visible to the kernel yet).
    fn push(&self, bid: u16) {
        let tail = self.tail.get();
        let slot = usize::from(tail & (self.count - 1));
        // SAFETY: `slot` is within the `count` entries; the kernel reads an entry only once
        // the tail passes it, and entry 0's `resv` (the tail) is not written here.
        unsafe {
            let entry = self.entries.ptr.cast::<Buf>().add(slot);
            ptr::addr_of_mut!((*entry).addr).write(
                self.data.ptr.add(usize::from(bid) * self.size as usize) as u64,
            );
            ptr::addr_of_mut!((*entry).len).write(self.size);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail.set(tail.wrapping_add(1));
    }

    /// Makes the entries pushed so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is the u16 at offset 14 of the ring (entry 0's `resv`), aligned
        // and shared with the kernel, which reads it with acquire semantics.
        unsafe {
            let tail = &*self.entries.ptr.add(14).cast::<AtomicU16>();
            tail.store(self.tail.get(), Ordering::Release);
        }
    }
}
