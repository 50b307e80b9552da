//! HAProxy as a test peer: a TCP-mode configuration with `send-proxy-v2` to health-checked
//! weft instances, and the running process (killed when dropped).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running HAProxy, killed when dropped.
pub struct Haproxy(Child);

impl Haproxy {
    /// Checks the configuration at `cfg` (`haproxy -c`), then starts `program` on it in the
    /// foreground (`-db`).
    pub fn start(program: &str, cfg: &Path) -> Self {
        let check = Command::new(program)
            .arg("-c")
            .arg("-f")
            .arg(cfg)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        Self(
            Command::new(program)
                .arg("-db")
                .arg("-f")
                .arg(cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP-mode configuration: `global_extra` lines under `global`, a frontend bound to
/// `binds`, and a round-robin backend of servers `w1`, `w2`, ... at `(address, health port)`,
/// each sent a PROXY v2 header and checked with `GET /health` every 100 ms (one failure
/// marks it down).
pub fn config(global_extra: &str, binds: &[SocketAddr], servers: &[(SocketAddr, u16)]) -> String {
    let mut c = format!(
        "global\n    maxconn 4000\n{global_extra}\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
         \x20   retries 3\n    option redispatch 1\n\
         frontend front\n"
    );
    for b in binds {
        c.push_str(&format!("    bind {b}\n"));
    }
    c.push_str(
        "    default_backend weft\n\
         backend weft\n    balance roundrobin\n    option httpchk GET /health\n\
         \x20   default-server inter 100ms fall 1 rise 1\n",
    );
    for (i, (addr, health)) in servers.iter().enumerate() {
        c.push_str(&format!(
            "    server w{} {addr} send-proxy-v2 check port {health}\n",
            i + 1
        ));
    }
    c
}
