//! The engine's error types.

use std::io;
use std::net::SocketAddr;

use crate::addr::Address;
use crate::config::CoresError;

/// Why an [`Engine`](crate::Engine) could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Binding or listening on an address failed (Twisted's `CannotListenError`).
    #[error("cannot listen on {addr}: {}", bind_failure(addr.socket_addr(), source))]
    CannotListen {
        /// The address that could not be bound.
        addr: Address,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another socket already listens on the address, and the listener does not share it
    /// ([`ListenerConfig::share_port`](crate::ListenerConfig::share_port)). A weft that serves
    /// handoffs is replaced without losing a connection by taking its sockets over
    /// ([`Service::takeover`](crate::Service::takeover)); `weft serve` says so where a handoff
    /// socket exists.
    #[error(
        "cannot listen on {0}: {IN_USE}; to share the port and its connections with it, set \
         share_port (weft serve --share-port)"
    )]
    AddressInUse(Address),
    /// A setting would make an engine that serves nothing, or one the kernel refuses
    /// ([`EngineConfig::validate`](crate::EngineConfig::validate),
    /// [`ListenerConfig::validate`](crate::ListenerConfig::validate)).
    #[error(transparent)]
    Config(#[from] crate::proto::settings::ConfigError),
    /// Neither a listener nor a shard task was configured: the engine would have nothing
    /// to do.
    #[error("no listen address given: add at least one (e.g. --listen 127.0.0.1:7000)")]
    NoListenAddress,
    /// Two listeners name the same address: which factory serves it would be ambiguous.
    #[error("{0} is configured twice: give each listener its own address")]
    DuplicateListener(Address),
    /// The core selection does not fit the CPUs this process may run on.
    #[error(transparent)]
    Cores(#[from] CoresError),
    /// RLIMIT_MEMLOCK is too low for io_uring and could not be raised.
    #[error(
        "locked-memory limit too low for io_uring: soft {soft} B, hard {hard} B, need {need} B; \
         raise it (ulimit -l, systemd LimitMEMLOCK=, docker --ulimit memlock=)"
    )]
    MemLock {
        /// Soft limit after the attempt to raise it.
        soft: u64,
        /// Hard limit.
        hard: u64,
        /// What glommio needs per executor.
        need: u64,
    },
    /// io_uring cannot run here (kernel too old, disabled by sysctl, or blocked by seccomp),
    /// or a shard's ring could not be set up. The message is one line that says what to do.
    #[error("cannot start an io_uring reactor: {0}")]
    IoUring(#[source] IoUringError),
    /// A listener's TLS settings were refused.
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] crate::tls::TlsError),
    /// Listening sockets handed over by another process could not be adopted.
    #[error("cannot adopt the inherited listening sockets: {0}")]
    Inherited(#[source] InheritedError),
    /// A shard thread could not be created, or it failed.
    #[error("shard {shard} failed: {source}")]
    Shard {
        /// Shard index.
        shard: usize,
        /// What went wrong.
        #[source]
        source: ShardError,
    },
    /// The metrics collector thread could not be started.
    #[error("cannot start the metrics collector thread: {0}")]
    Metrics(#[source] io::Error),
}

/// Why io_uring is not available (see [`EngineError::IoUring`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoUringError {
    /// The running kernel predates the io_uring features glommio uses.
    #[error("kernel {release} is older than 5.8, the oldest weft's reactor runs on: upgrade the kernel")]
    KernelTooOld {
        /// The kernel release, as `uname -r` prints it.
        release: String,
    },
    /// The kernel was built without io_uring (`ENOSYS`, no seccomp filter in place).
    #[error("this kernel was built without io_uring (CONFIG_IO_URING): weft needs a kernel with it")]
    Unsupported,
    /// A seccomp filter refuses the io_uring system calls, as Docker's default profile and
    /// containerd's `RuntimeDefault` do since 2023.
    #[error(
        "a seccomp filter blocks io_uring in this process ({0}), as the default profiles of Docker \
         and containerd do: run with deploy/seccomp-weft.json, the default profile plus io_uring \
         (docker run --security-opt seccomp=deploy/seccomp-weft.json; Kubernetes: seccompProfile \
         type Localhost)"
    )]
    Seccomp(#[source] io::Error),
    /// The `kernel.io_uring_disabled` sysctl refuses io_uring: 2 to everyone, 1 to processes
    /// outside the `kernel.io_uring_group` group (and without CAP_SYS_ADMIN).
    #[error(
        "io_uring is disabled by the sysctl kernel.io_uring_disabled={value}: set it to 0 \
         (sysctl -w kernel.io_uring_disabled=0){}",
        if *.value == 1 { ", or run weft in the group that kernel.io_uring_group names" } else { "" }
    )]
    DisabledBySysctl {
        /// The sysctl's value (1 or 2).
        value: u32,
    },
    /// io_uring is refused to this process (`EPERM`/`EACCES`) with neither the sysctl nor a
    /// seccomp filter in place: a security module, most likely.
    #[error(
        "io_uring is refused to this process ({0}): check security modules (SELinux, AppArmor) \
         and kernel.io_uring_disabled"
    )]
    Disabled(#[source] io::Error),
    /// Setting up a ring failed for another reason.
    #[error("io_uring setup failed on shard {shard}: {source}{}", setup_hint(.source))]
    Setup {
        /// The shard whose ring failed (0 for the probe before any shard starts).
        shard: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why an inherited listening socket could not be adopted (see
/// [`EngineError::Inherited`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InheritedError {
    /// The descriptor is not a socket, or cannot be queried.
    #[error("descriptor {fd} is not a socket ({source})")]
    NotASocket {
        /// The descriptor number.
        fd: i32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The descriptor is a socket, but not a listening TCP one bound to an IP address.
    #[error("descriptor {fd} is not a listening TCP socket bound to an IP address")]
    NotListening {
        /// The descriptor number.
        fd: i32,
    },
    /// The socket cannot be made non-blocking.
    #[error("descriptor {fd} cannot be made non-blocking ({source})")]
    Blocking {
        /// The descriptor number.
        fd: i32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An inherited socket is bound to an address no listener names.
    #[error(
        "the inherited listener on {0} matches no listen address (listen on it too, or leave it \
         to the old process)"
    )]
    Unmatched(Address),
}

/// Why a shard failed (see [`EngineError::Shard`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The shard's thread or its control socket could not be created.
    #[error("cannot start the shard: {0}")]
    Start(#[source] io::Error),
    /// The shard's thread panicked or its reactor failed while running.
    #[error("the shard's reactor stopped with an error: {0}")]
    Failed(String),
    /// The shard ended before it reported ready, without an error of its own.
    #[error("the shard stopped before it was ready")]
    StoppedEarly,
}

/// Why [`EngineControl::stop_listening`](crate::EngineControl::stop_listening) refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopListeningError {
    /// No listener has this index.
    #[error(
        "no listener {listener}: the engine has {listeners}, numbered from 0 in the order \
         they were added (Engine::local_addrs)"
    )]
    UnknownListener {
        /// The index asked for.
        listener: usize,
        /// How many listeners the engine has.
        listeners: usize,
    },
    /// The listener was stopped before; the first stop goes on.
    #[error("the listener on {0} is already stopped")]
    AlreadyStopped(Address),
    /// A shutdown, abort or handoff started: every listener stops with it.
    #[error("the engine is stopping: its listeners stop with it")]
    EngineStopping,
}

impl From<InheritedError> for EngineError {
    fn from(e: InheritedError) -> Self {
        Self::Inherited(e)
    }
}

/// How an address in use is told, by every listener.
const IN_USE: &str = "address in use (another socket listens on it: a second instance, or \
                      another server); stop it or pick another address";

/// Why `addr` could not be bound, and what to do about it: the one wording of every bind
/// failure (the engine's listeners, the health check's and the metrics exporter's). An
/// address in use, a privileged port without the right to bind it, and an address no
/// interface has get their remedies; other errors are told as the OS says them.
pub fn bind_failure(addr: SocketAddr, source: &io::Error) -> String {
    match source.raw_os_error() {
        Some(libc::EADDRINUSE) => IN_USE.to_owned(),
        Some(libc::EACCES | libc::EPERM) if addr.port() != 0 => format!(
            "{source}: port {} is privileged (below net.ipv4.ip_unprivileged_port_start, 1024 \
             by default) and this process may not bind it; use a port >= 1024, grant \
             CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE), or \
             lower the sysctl (sysctl net.ipv4.ip_unprivileged_port_start={})",
            addr.port(),
            addr.port()
        ),
        Some(libc::EADDRNOTAVAIL) => format!(
            "{source}: no interface of this host has that address; use one it has, or \
             0.0.0.0 / [::] for all of them"
        ),
        _ => source.to_string(),
    }
}

/// What to do about a ring that could not be set up: ENOMEM is the locked-memory limit or the
/// memory cgroup.
fn setup_hint(source: &io::Error) -> &'static str {
    if source.raw_os_error() == Some(libc::ENOMEM) {
        " (locked memory or the memory cgroup's limit: raise ulimit -l / systemd \
         LimitMEMLOCK= / docker --ulimit memlock=, or the container's memory limit)"
    } else {
        ""
    }
}

impl EngineError {
    pub(crate) fn cannot_listen(addr: SocketAddr, source: io::Error) -> Self {
        Self::CannotListen {
            addr: addr.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cannot_listen_names_the_address() {
        let e = EngineError::cannot_listen(
            "127.0.0.1:80".parse().unwrap(),
            io::Error::from_raw_os_error(libc::EADDRINUSE),
        );
        let text = e.to_string();
        assert!(text.starts_with("cannot listen on 127.0.0.1:80: "), "{text}");
        assert!(text.contains("address in use"), "{text}");
    }

    #[test]
    fn bind_failures_say_what_to_do() {
        let at = |a: &str, errno| bind_failure(a.parse().unwrap(), &io::Error::from_raw_os_error(errno));
        let privileged = at("127.0.0.1:80", libc::EACCES);
        for says in [
            "port 80 is privileged",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "net.ipv4.ip_unprivileged_port_start=80",
            "a port >= 1024",
        ] {
            assert!(privileged.contains(says), "{privileged}");
        }
        assert!(at("127.0.0.1:7000", libc::EADDRINUSE).starts_with("address in use"));
        assert!(at("192.0.2.1:7000", libc::EADDRNOTAVAIL).contains("no interface"));
    }
}
