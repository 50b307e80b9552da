//! The calling thread's CPU and the process's user.

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
