//! systemd's readiness protocol (`sd_notify`): a service of `Type=notify` says when it serves,
//! and a successor taking over says that it is the main process now, so that systemd follows
//! it (its exit is the service's, and `$MAINPID` names it at the next reload).

use std::os::unix::net::UnixDatagram;

/// Tells systemd that this process serves and is the service's main process. Nothing happens
/// outside systemd (no `NOTIFY_SOCKET`).
pub(crate) fn ready() {
    send(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving\n",
        std::process::id()
    ));
}

/// Tells systemd that the service is stopping (draining).
pub(crate) fn stopping() {
    send("STOPPING=1\nSTATUS=draining\n");
}

/// Sends `state` to `$NOTIFY_SOCKET`, a path or (`@name`) an abstract socket. A failure is
/// logged, not fatal: the service runs as well without the notice.
fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        }
        None => socket.send_to(state.as_bytes(), &path),
    });
    if let Err(e) = sent {
        tracing::warn!(
            "cannot notify systemd ({}): {e}",
            state.lines().next().unwrap_or(state)
        );
    }
}
