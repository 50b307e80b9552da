//! The calling thread's CPU, the process's user, and the system constants that read `/proc`.

/// The CPU the calling thread runs on now, or `None` if the kernel cannot say.
pub(crate) fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu(3) takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// The process's effective user id.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc`'s CPU times.
pub(crate) fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf(3) reads a system constant and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

/// The size of a memory page in bytes (`sysconf(_SC_PAGESIZE)`).
pub(crate) fn page_size() -> Option<u64> {
    // SAFETY: sysconf(3) reads a system constant and touches no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0)
}
