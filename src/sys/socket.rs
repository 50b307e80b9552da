//! Sockets: the listening socket every shard binds, the reuseport program that moves a closing
//! listener's queue, accepts outside the reactor, a listener's shutdown, and a Unix peer's
//! credentials.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// A non-blocking listening socket on `addr` with SO_REUSEADDR and SO_REUSEPORT (and
/// IPV6_V6ONLY for IPv6): what every shard, and a successor process, binds.
pub(crate) fn listen_socket(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let sock = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(sock)
}

/// Whether a socket listens on `addr` already: a bind there without SO_REUSEPORT (with
/// SO_REUSEADDR, so that connections in TIME_WAIT do not count) fails with `EADDRINUSE`
/// exactly then. The probe is closed before it listens. Port 0 (any free port) never has one.
pub(crate) fn has_listener(addr: SocketAddr) -> io::Result<bool> {
    if addr.port() == 0 {
        return Ok(false);
    }
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    match sock.bind(&SockAddr::from(addr)) {
        Ok(()) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(true),
        Err(e) => Err(e),
    }
}

/// `bpf(2)` command that loads a program.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_SK_REUSEPORT`: a program that picks the listener of a reuseport group.
const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
/// `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`: the program is also asked where the queue of a
/// closing listener goes, which turns that migration on for the group (Linux >= 5.14).
const BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: u32 = 40;
/// `SO_ATTACH_REUSEPORT_EBPF`: its asm-generic value, which these architectures use; the
/// others (alpha, mips, parisc, sparc) number it their own way, and go without.
const SO_ATTACH_REUSEPORT_EBPF: Option<libc::c_int> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "s390x",
    target_arch = "powerpc64"
)) {
    Some(52)
} else {
    None
};

/// `struct bpf_insn`: an opcode, the destination and source registers (4 bits each), an
/// offset and an immediate.
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The head of `union bpf_attr` as `BPF_PROG_LOAD` reads it, up to `expected_attach_type`;
/// the kernel zero-fills the rest.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Attaches to `listener`'s SO_REUSEPORT group an eBPF program of the
/// `SELECT_OR_MIGRATE` kind that selects nothing (`return SK_PASS`): connections keep
/// being spread by hash, and when a listener of the group closes (its process exits, even
/// by SIGKILL) the kernel moves its queued and half-open connections to another listener of
/// the group instead of resetting them, as `net.ipv4.tcp_migrate_req=1` does, without the
/// sysctl. The group keeps the program after this process is gone.
///
/// # Errors
///
/// Loading needs CAP_BPF (or CAP_SYS_ADMIN): `EPERM` without it; `EINVAL` on kernels before
/// 5.14.
pub(crate) fn attach_migrate_program(listener: BorrowedFd<'_>) -> io::Result<()> {
    let Some(option) = SO_ATTACH_REUSEPORT_EBPF else {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    };
    // r0 = SK_PASS (1); exit.
    let insns = [
        Insn {
            code: 0xb7, // BPF_ALU64 | BPF_MOV | BPF_K
            regs: 0,
            off: 0,
            imm: 1,
        },
        Insn {
            code: 0x95, // BPF_JMP | BPF_EXIT
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"MIT";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"weft_migrate");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SK_REUSEPORT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
    };
    // SAFETY: bpf(BPF_PROG_LOAD) reads `attr` (its size passed) and the instructions and
    // license it points to, all alive for the call; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is the program descriptor just returned, owned here only.
    let prog = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let prog_fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: setsockopt reads the c_int it is given, alive for the call; the group
    // takes its own reference to the program, so `prog` may close after.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&prog_fd as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The IP address a socket is bound to, if it is an IP socket and the kernel says.
pub(crate) fn local_ip_addr(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    SockRef::from(&fd).local_addr().ok().and_then(|a| a.as_socket())
}

/// SO_ACCEPTCONN: the socket is listening.
pub(crate) fn is_listening(fd: BorrowedFd<'_>) -> bool {
    SockRef::from(&fd).is_listener().unwrap_or(false)
}

/// Non-blocking `accept4(2)` on `listener`: the new connection, non-blocking and close on
/// exec, and its peer's address; `WouldBlock` when none is queued.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, SocketAddr)> {
    let (sock, addr) = SockRef::from(&listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let owned = OwnedFd::from(sock);
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP socket"))?;
    Ok((owned, peer))
}

/// shutdown(2) on a listener: the kernel refuses new connections and fails the accept in
/// flight. Errors are ignored (the listener closes next anyway).
pub(crate) fn shutdown_listener(listener: BorrowedFd<'_>) {
    let _ = SockRef::from(&listener).shutdown(Shutdown::Both);
}

/// shutdown(2) both ways on a connection: its peer reads the end of the stream while the
/// descriptor stays open. Errors are ignored (a peer already gone has nothing to read).
pub(crate) fn shutdown_stream(conn: BorrowedFd<'_>) {
    let _ = SockRef::from(&conn).shutdown(Shutdown::Both);
}

/// The user id of the process at the other end of a Unix socket (SO_PEERCRED).
pub(crate) fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for SO_PEERCRED's size and live for the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}
