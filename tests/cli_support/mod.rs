//! Helpers for the tests that run the `weft` binary: a `weft serve` child process on a free
//! loopback port, and the choice of cores that keeps server and load apart.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `weft` binary under test.
pub fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

/// Runs `weft ARGS` to its end, with a time limit.
pub fn run_weft(args: &[&str], limit: Duration) -> Output {
    let child = weft()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft");
    wait_output(child, limit)
}

/// Waits for `child` with a time limit (then kills it and fails the test).
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for weft"),
        Err(_) => {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("weft did not finish within {limit:?}");
        }
    }
}

/// Core ids for the server and the load generator: two different cores when the process
/// may use two, else the same one.
pub fn server_and_load_cores() -> (String, String) {
    let ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    match ids.as_slice() {
        [a, b, ..] => (format!("{a},"), format!("{b},")),
        [a] => (format!("{a},"), format!("{a},")),
        [] => ("1".into(), "1".into()),
    }
}

/// A `weft serve` child process; killed (after a SIGCONT, in case it was stopped) on drop.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `weft serve --proto PROTO` on 127.0.0.1, port 0, on `cores`.
    pub fn start(proto: &str, cores: &str) -> Self {
        let mut child = weft()
            .args([
                "serve",
                "--proto",
                proto,
                "--listen",
                "127.0.0.1:0",
                "--cores",
                cores,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weft serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("serving") {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("weft serve reports its address");
        let addr = line
            .split(" on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { child, addr }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of a latency table as `weft load` and `weft hist` print them:
/// `(label, nanoseconds)`.
pub fn latency_rows(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let label = f.next()?;
            if !(label.starts_with('p') || label == "max" || label == "mean") {
                return None;
            }
            let value = weft::hdr::parse_ns(&format!("{} {}", f.next()?, f.next()?))?;
            Some((label.to_owned(), value))
        })
        .collect()
}
