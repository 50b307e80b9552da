//! Runs `weft serve` as a child process whose log tells its addresses, and drives whoami
//! connections at a steady rate against it. Builds on `tests/util` (declare both modules).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running `weft serve`, killed when dropped.
pub struct Weft {
    child: Child,
    lines: Receiver<String>,
    /// Every stderr line seen so far.
    pub log: Vec<String>,
}

impl Weft {
    /// Starts `weft serve ARGS` (logs at info level).
    pub fn serve(args: &[&str]) -> Self {
        Self::serve_with_env(args, &[])
    }

    /// Starts `weft serve ARGS` with extra environment variables.
    pub fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = crate::util::weft_command(&[&["serve"], args].concat())
            .env("WEFT_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start weft");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {needle:?} within {timeout:?}; log: {:#?}", self.log)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("weft exited before {needle:?}; log: {:#?}", self.log)
                }
            }
        }
    }

    /// Waits until serving; returns the first listen address.
    pub fn ready(&mut self) -> SocketAddr {
        let line = self.wait_for("serving ", Duration::from_secs(10));
        addr_after(&line, " on ")
    }

    /// Waits for the health-check line; returns its address.
    pub fn health_addr(&mut self) -> SocketAddr {
        let line = self.wait_for("health check on ", Duration::from_secs(10));
        addr_after(&line, "health check on ")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, signal) };
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Keep the rest of the log.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.log.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "weft still running after {timeout:?}; log: {:#?}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address printed after `marker` in a log line.
fn addr_after(line: &str, marker: &str) -> SocketAddr {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    let token = rest.split([' ', ',']).next().expect("address");
    token.parse().unwrap_or_else(|_| panic!("no address in {line:?}"))
}

/// How the connections of a load run ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadResult {
    /// Answered as expected.
    pub ok: u64,
    /// Connection refused.
    pub refused: u64,
    /// Reset during connect or read.
    pub reset: u64,
    /// Closed without the expected answer.
    pub wrong: u64,
    /// Timed out or any other error.
    pub other: u64,
}

impl LoadResult {
    /// Connections that did not get their answer.
    pub fn failures(&self) -> u64 {
        self.refused + self.reset + self.wrong + self.other
    }

    fn add(&mut self, o: &Self) {
        self.ok += o.ok;
        self.refused += o.refused;
        self.reset += o.reset;
        self.wrong += o.wrong;
        self.other += o.other;
    }
}

/// One connection: connect, read the answer to EOF, judge it with `expect(client_addr)`.
pub fn whoami_once(target: SocketAddr, result: &mut LoadResult) {
    let mut s = match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => {
            match e.kind() {
                ErrorKind::ConnectionRefused => result.refused += 1,
                ErrorKind::ConnectionReset => result.reset += 1,
                _ => result.other += 1,
            }
            return;
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let me = s.local_addr().expect("local address");
    let mut out = String::new();
    match s.read_to_string(&mut out) {
        Ok(_) if out == format!("{me}\n") => result.ok += 1,
        Ok(_) => result.wrong += 1,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => result.reset += 1,
        Err(_) => result.other += 1,
    }
}

/// Opens `rate` whoami connections per second against `target` for `duration`, spread over
/// worker threads, each checking that the answer names the client's own address.
pub fn whoami_load(target: SocketAddr, rate: u32, duration: Duration) -> JoinHandle<LoadResult> {
    const WORKERS: u32 = 8;
    std::thread::spawn(move || {
        let start = Instant::now();
        let interval = Duration::from_secs(1) * WORKERS / rate.max(1);
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                std::thread::spawn(move || {
                    let mut result = LoadResult::default();
                    let mut next = start + interval * w / WORKERS;
                    while next < start + duration {
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        whoami_once(target, &mut result);
                        next += interval;
                    }
                    result
                })
            })
            .collect();
        let mut total = LoadResult::default();
        for w in workers {
            total.add(&w.join().expect("load worker"));
        }
        total
    })
}
