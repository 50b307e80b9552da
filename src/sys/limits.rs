//! Resource limits (`getrlimit`/`setrlimit`).

/// A resource limit the engine raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// RLIMIT_MEMLOCK: locked memory, which io_uring's rings need.
    MemLock,
    /// RLIMIT_NOFILE: open descriptors, one per connection.
    NoFile,
}

/// Raises the soft limit of `limit` to its hard limit (which needs no privilege); returns
/// `(soft, hard)` after, or `(0, 0)` if the limit cannot be read.
pub(crate) fn raise_soft(limit: Limit) -> (u64, u64) {
    let resource = match limit {
        Limit::MemLock => libc::RLIMIT_MEMLOCK,
        Limit::NoFile => libc::RLIMIT_NOFILE,
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only `lim` and `raised`, live for the calls.
    unsafe {
        if libc::getrlimit(resource, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(resource, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}
