//! Seccomp filters for tests: a list of system call numbers, each with its answer (allow, or
//! an errno), and a default answer; installed in a child between fork and exec, so that the
//! program it runs meets the filter a container runtime would install.

use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, sock_filter};

/// The answer that lets a call through.
pub const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

/// The answer that fails a call with `errno`.
pub fn errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// A classic-BPF program: `(number, answer)` rules checked in order, then `default`. Each
/// rule is a compare and a return, so that no jump needs more than the 8 bits BPF allows.
/// It does not check the architecture: numbers are this machine's native ones.
pub fn program(rules: &[(u32, u32)], default: u32) -> Vec<sock_filter> {
    let insn = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // seccomp_data.nr, at offset 0.
    let mut prog = vec![insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0)];
    for &(nr, answer) in rules {
        prog.push(insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, nr));
        prog.push(insn(BPF_RET | BPF_K, 0, 0, answer));
    }
    prog.push(insn(BPF_RET | BPF_K, 0, 0, default));
    prog
}

/// Installs `prog` on the calling process (and what it execs), after `PR_SET_NO_NEW_PRIVS`.
/// Async-signal-safe (prctl and seccomp only), so it may run in `pre_exec`.
pub fn install(prog: &[sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: prctl and seccomp(2) read only `fprog` and the program it points to, both
    // alive for the calls; the filter applies to this process and what it execs.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
