//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod haproxy;
pub mod seccomp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft::{Cores, Engine, EngineConfig, Factory, ListenerConfig, ShardInfo};

/// Serializes the tests of one binary that measure latency or load the machine, so that
/// they do not disturb each other's figures (cargo runs a binary's tests in parallel).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A deterministic xorshift generator: reproducible "random" payloads without a crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Starts an engine on 127.0.0.1:0 with `shards` shards.
pub fn engine<F, M>(shards: usize, make: M) -> (Engine, SocketAddr)
where
    F: Factory,
    M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
{
    engine_with(shards, |_| {}, make)
}

/// Like [`engine`], with a hook to adjust the configuration.
pub fn engine_with<F, M>(
    shards: usize,
    tweak: impl FnOnce(&mut EngineConfig),
    make: M,
) -> (Engine, SocketAddr)
where
    F: Factory,
    M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
{
    engine_at(shards, "127.0.0.1:0".parse::<SocketAddr>().unwrap(), tweak, make)
}

/// Like [`engine_with`], listening on `listener` (a plain address, or one with options).
pub fn engine_at<F, M>(
    shards: usize,
    listener: impl Into<ListenerConfig>,
    tweak: impl FnOnce(&mut EngineConfig),
    make: M,
) -> (Engine, SocketAddr)
where
    F: Factory,
    M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
{
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(shards);
    tweak(&mut config);
    let engine = Engine::builder(config)
        .listen(listener, make)
        .start()
        .expect("engine starts");
    let addr = engine.local_addrs()[0];
    (engine, addr)
}

/// Connects with a read timeout so that no test can hang on a read.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until EOF (or an error, returned as such).
pub fn read_to_end(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A free loopback port for a child process to listen on (bound here and released). It is
/// taken below the kernel's ephemeral range (`ip_local_port_range`), so that no outgoing
/// connection of a concurrent test can be given it before the child binds it (as a port
/// from `bind(0)` could), and never twice in one test binary.
pub fn free_port() -> u16 {
    const SPAN: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if ephemeral_low > SPAN + 1024 {
        let first = ephemeral_low - SPAN;
        // Test binaries run one after another; a per-process start spreads them anyway.
        let start = std::process::id().wrapping_mul(7919) % SPAN;
        for _ in 0..SPAN {
            let port = first + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
            let port = u16::try_from(port).unwrap();
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts on `addr`.
pub fn wait_listening(addr: SocketAddr, child: &mut Child) {
    if let Err(e) = listening(addr, child) {
        panic!("{e}");
    }
}

/// Spawns the server that `command` makes for a free loopback address and waits until it
/// listens; returns it and the address. A port taken between its choice and the bind (the
/// server exits, the port's holder answered the probe) is tried again with another.
pub fn serving(mut command: impl FnMut(SocketAddr) -> Command) -> (Child, SocketAddr) {
    let mut tries = 0;
    loop {
        let addr = free_addr();
        let mut child = command(addr).spawn().expect("spawn the server");
        match listening(addr, &mut child) {
            Ok(()) => return (child, addr),
            Err(e) if tries < 3 => {
                eprintln!("{e}; trying another port");
                let _ = child.kill();
                let _ = child.wait();
                tries += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Waits until something answers on `addr` and `child` still runs a moment later: a server
/// that found its port taken (`weft serve` refuses a port in use) exits at once, while
/// whatever holds the port answers the probe.
fn listening(addr: SocketAddr, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            std::thread::sleep(Duration::from_millis(30));
            return match child.try_wait() {
                Ok(Some(status)) => Err(format!(
                    "the server exited ({status}) while something else answered on {addr}: its port was taken"
                )),
                _ => Ok(()),
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("server exited early: {status}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("server never listened on {addr}"))
}

/// The `weft` binary with `args`, stdout/stderr captured.
pub fn weft_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts the `weft` binary with `args`, stdout/stderr captured.
pub fn weft(args: &[&str]) -> Child {
    weft_command(args).spawn().expect("spawn weft")
}

/// `weft serve --listen ADDR --cores CORES ARGS...` on a free loopback port: the command
/// (output captured), and the address.
pub fn serve_command(cores: &str, args: &[&str]) -> (Command, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let mut all = vec!["serve", "--listen", &listen, "--cores", cores];
    all.extend_from_slice(args);
    (weft_command(&all), addr)
}

/// `weft serve --proto echo --cores 1` on a free loopback port: the command, and the address.
pub fn echo_server_command() -> (Command, SocketAddr) {
    serve_command("1", &["--proto", "echo"])
}

/// Spawns a server command and waits until it listens on `addr`.
pub fn spawn_listening(mut cmd: Command, addr: SocketAddr) -> Child {
    let mut child = cmd.spawn().expect("spawn weft");
    wait_listening(addr, &mut child);
    child
}

/// Waits for a child with a bound; kills it and panics on timeout.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shared, thread-safe event log for protocols built on shard threads.
pub struct Log<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Default for Log<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Clone + std::fmt::Debug> Log<T> {
    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }
    pub fn items(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
    /// Waits (bounded) until `pred` holds over the items.
    pub fn wait_until(&self, what: &str, pred: impl Fn(&[T]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if pred(&self.0.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let items = self.items();
        panic!("timed out waiting for {what}: {items:?}");
    }
}

/// Writes `data` in chunks of random sizes.
pub fn write_in_pieces(s: &mut TcpStream, data: &[u8], rng: &mut Rng, max_piece: usize) {
    let mut pos = 0;
    while pos < data.len() {
        let n = (1 + rng.below(max_piece as u64) as usize).min(data.len() - pos);
        s.write_all(&data[pos..pos + n]).unwrap();
        pos += n;
    }
}

/// Waits (bounded) for a child started with [`weft`] and collects its output.
pub fn output_within(mut child: Child, limit: Duration) -> std::process::Output {
    let status = wait_exit(&mut child, limit);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut stdout).unwrap();
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_end(&mut stderr).unwrap();
    }
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// Core lists for a server and a load generator: two different cores when this process may
/// use two, else the same one.
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

/// A `weft serve` child on a free loopback port; on drop it is continued (in case a test
/// stopped it) and killed.
pub struct ServeChild {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServeChild {
    /// `weft serve --proto PROTO --cores CORES`, listening.
    pub fn start(proto: &str, cores: &str) -> Self {
        let (child, addr) = serving(|addr| {
            let listen = addr.to_string();
            let mut cmd = weft_command(&["serve", "--listen", &listen, "--cores", cores, "--proto", proto]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            cmd
        });
        Self { child, addr }
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of a latency table as `weft load` and `weft hist` print them, as
/// `(label, nanoseconds)`: `p50`, ..., `max`, `min`, `mean`, `stddev`.
pub fn latency_rows(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let label = f.next()?;
            if !(label.starts_with('p') || ["max", "min", "mean", "stddev"].contains(&label)) {
                return None;
            }
            let value = weft::hdr::parse_ns(&format!("{} {}", f.next()?, f.next()?))?;
            Some((label.to_owned(), value))
        })
        .collect()
}

/// Runs `weft ARGS` to its end (bounded) and collects its output.
pub fn run_weft(args: &[&str], limit: Duration) -> std::process::Output {
    output_within(weft(args), limit)
}

/// A scratch folder under the system's temporary one, removed on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    /// A fresh folder named after `name` and this process.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The path of `file` in the folder, as a string (for command lines).
    pub fn file(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a JSON file.
pub fn read_json(path: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// An external peer that an interop test talks to; `.ci/install-deps` installs them all.
#[derive(Clone, Copy, Debug)]
pub enum Peer<'a> {
    /// A program, looked up on PATH (or a path to it).
    Program(&'a str),
    /// A Python package, imported by `python3`.
    Python(&'a str),
}

/// Fails the calling test with one line if `peer` is missing: call it first in an interop
/// test, before any server starts. A missing peer is a failure, not a skip (CI installs them).
#[track_caller]
pub fn require_peer(peer: Peer) {
    let missing = match peer {
        Peer::Program(name) if !on_path(name) => format!("{name} (not on PATH)"),
        Peer::Python(_) if !on_path("python3") => "python3 (not on PATH)".to_owned(),
        Peer::Python(module)
            if !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()) =>
        {
            format!("Python module {module} (python3 cannot import it)")
        }
        _ => return,
    };
    panic!("missing test peer: {missing}; install the test peers with: bash .ci/install-deps");
}

/// Whether `name` is an executable file on PATH (or, if it names a path, at that path).
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        return executable(Path::new(name));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| executable(&dir.join(name))))
}

/// An example binary (built by `cargo test`, or `cargo build --release --examples`, which
/// `.ci/run` runs first, beside the test binaries) with `args`: stdout piped, stderr dropped.
pub fn example_command(name: &str, args: &[String]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().join("examples");
    let mut cmd = Command::new(dir.join(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// A free loopback address (see [`free_port`]).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Sends SIGTERM to a child.
pub fn sigterm(child: &Child) {
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Replays the fuzz corpus `fuzz/corpus/NAME` (at least `min_files` inputs) through a fuzz
/// target's `check`, at every chunk size up to 33 as the target picks them; `check` answers
/// how many frames an input made and whether it ended in an error, and the corpus must hold
/// both.
pub fn replay_corpus(name: &str, min_files: usize, mut check: impl FnMut(&[u8], usize) -> (usize, bool)) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let (mut seen, mut frames, mut errors) = (0, 0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for step in 1..=33 {
            let (n, error) = check(&data, step);
            frames += n;
            errors += usize::from(error);
        }
        seen += 1;
    }
    assert!(
        seen >= min_files,
        "corpus missing: {seen} files in {}",
        dir.display()
    );
    assert!(frames > 0 && errors > 0, "{frames} frames, {errors} errors");
}

/// Sends `request` raw to `addr` and reads until the server closes.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    // The server may have answered and closed already.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of `GET /metrics` from a Prometheus exporter at `addr`.
pub fn scrape(addr: SocketAddr) -> String {
    let text = http_exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The sum over shards (and labels) of the samples of `name` whose labels contain `with`
/// (`name{...with...} value` lines of a scrape), if there is any.
pub fn scraped(body: &str, name: &str, with: &str) -> Option<f64> {
    let samples: Vec<f64> = body
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| match rest.strip_prefix('{') {
            Some(labeled) => labeled
                .split_once('}')
                .is_some_and(|(labels, _)| labels.contains(with)),
            None => rest.starts_with(' ') && with.is_empty(),
        })
        .filter_map(|rest| rest.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// Fails unless `promtool check metrics` accepts `body` without a word.
pub fn promtool_check(body: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
}

/// Runs `f` on a fresh glommio executor thread (no engine) and returns its result.
pub fn on_executor<T, Fut>(f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}
