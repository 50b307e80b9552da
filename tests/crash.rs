#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A crash loses no connection: two `weft serve` processes share one SO_REUSEPORT port
//! (`--share-port`), clients connect at a steady rate, and one process dies by SIGKILL. The
//! connections queued on its listeners (the kernel keeps them open for a few milliseconds
//! after the process is gone, while it tears the io_uring down) move to the survivor's
//! listener when `net.ipv4.tcp_migrate_req` is 1; with 0 they are reset, which the control
//! reports.
//!
//! The same with HAProxy in front (`send-proxy-v2`, one server entry per instance, both on
//! the shared port, each health-checked on its own `--health`): what a balancer's clients see.
//!
//! Each run happens in a network namespace of its own (loopback only), whose sysctl the test
//! sets: the host's own settings are never touched. Needs root (CAP_SYS_ADMIN) to create the
//! namespace; without it the test says so and checks nothing.

mod util;
mod weft_process;

use std::process::Command;
use std::time::{Duration, Instant};

use weft_process::{LoadResult, Weft, whoami_load, whoami_once};

/// 1,000 connections per run: 500/s for 2 s.
const RATE: u32 = 500;
const LOAD: Duration = Duration::from_secs(2);
/// When, into the load, one instance is killed.
const KILL_AT: Duration = Duration::from_millis(600);

/// Runs `f` on a thread of its own that has entered a new network namespace with loopback
/// up and `net.ipv4.tcp_migrate_req` set to `migrate`; processes and threads it starts
/// inherit the namespace. `None` where namespaces cannot be created (not root).
fn in_netns<T: Send + 'static>(migrate: bool, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) moves only this thread into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            eprintln!("NOTE: cannot create a network namespace ({e}): run as root to measure crashes");
            return None;
        }
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip (iproute2)");
        assert!(up.success());
        // /proc/sys/net is the namespace of the thread that opens it.
        let knob = "/proc/sys/net/ipv4/tcp_migrate_req";
        std::fs::write(knob, if migrate { "1" } else { "0" }).unwrap();
        assert_eq!(
            std::fs::read_to_string(knob).unwrap().trim(),
            if migrate { "1" } else { "0" }
        );
        Some(f())
    })
    .join()
    .unwrap()
}

/// Two whoami instances on one port (each given `extra` flags), steady load, SIGKILL to the
/// first; how the 1,000 connections ended.
fn crash_under_load(extra: &'static [&'static str]) -> LoadResult {
    two_on_one_port_killed(extra, None)
}

/// [`crash_under_load`], the victim first frozen for `freeze`.
fn two_on_one_port_killed(extra: &'static [&'static str], freeze: Option<Duration>) -> LoadResult {
    let common = [&["--proto", "whoami", "--cores", "1"][..], extra].concat();
    let mut first = Weft::serve(&[&common[..], &["--listen", "127.0.0.1:0"]].concat());
    let addr = first.ready();
    let mut second = Weft::serve(&[&common[..], &["--listen", &addr.to_string(), "--share-port"]].concat());
    assert_eq!(second.ready(), addr);
    kill_first_under_load(first, second, addr, freeze)
}

/// Steady load at `target` (the instances' port, or a balancer in front), SIGKILL to `first`
/// at `KILL_AT` (after `freeze` stopped with SIGSTOP, if given: a hung process that a
/// watchdog kills, its queue filling meanwhile), then a clean stop of `second`; how the 1,000
/// connections ended.
fn kill_first_under_load(
    mut first: Weft,
    mut second: Weft,
    target: std::net::SocketAddr,
    freeze: Option<Duration>,
) -> LoadResult {
    let load = whoami_load(target, RATE, LOAD);
    std::thread::sleep(KILL_AT);
    if let Some(hung) = freeze {
        first.signal(libc::SIGSTOP);
        std::thread::sleep(hung);
    }
    first.signal(libc::SIGKILL);
    let _ = first.wait(Duration::from_secs(5));
    let result = load.join().unwrap();
    second.signal(libc::SIGTERM);
    assert!(second.wait(Duration::from_secs(10)).success());
    result
}

/// The connections the kernel held for the killed process (queued or half-open) are the
/// ones a migration saves: none may be refused, reset or left hanging. Those the killed
/// process had already accepted (answered by EOF, `wrong`) die with it whatever the kernel
/// does; at 500 connects/s that is at most one or two per kill, the instant between accept
/// and answer.
fn assert_none_reset(what: &str, runs: &[LoadResult]) {
    for r in runs {
        assert_eq!(r.refused + r.reset + r.other, 0, "{what}: {runs:?}");
        assert!(r.wrong <= 3, "{what}: {runs:?}");
        assert!(r.ok >= 900, "about 1,000 connections per run: {runs:?}");
    }
}

/// Three runs each: the host's `tcp_migrate_req=1` (weft's program off), weft's own
/// reuseport program with the sysctl at 0, and the control with neither (printed: what it
/// loses depends on the instant of the kill).
#[test]
fn sigkill_loses_no_queued_connection_with_migration() {
    let _serial = util::serial();
    const NO_PROGRAM: &[&str] = &["--migrate-queued", "false"];
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").ok();
    let Some(first) = in_netns(true, || crash_under_load(NO_PROGRAM)) else {
        return;
    };
    let mut sysctl = vec![first];
    let mut program = Vec::new();
    let mut control = Vec::new();
    for _ in 0..2 {
        sysctl.extend(in_netns(true, || crash_under_load(NO_PROGRAM)));
    }
    for _ in 0..3 {
        program.extend(in_netns(false, || crash_under_load(&[])));
        control.extend(in_netns(false, || crash_under_load(NO_PROGRAM)));
    }
    eprintln!("SIGKILL of one of two instances on one port, 1,000 connections per run:");
    eprintln!("  tcp_migrate_req=1: {sysctl:?}");
    eprintln!("  weft's reuseport program, tcp_migrate_req=0: {program:?}");
    eprintln!("  neither (control): {control:?}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").ok(),
        host_before,
        "the host's own setting is untouched"
    );
    assert_none_reset("tcp_migrate_req=1", &sysctl);
    assert_none_reset("weft's reuseport program", &program);
}

/// HAProxy in front of two whoami instances sharing one port (weft's own program off), steady
/// load through it, SIGKILL to the first instance; how the 1,000 connections ended.
fn crash_behind_haproxy() -> LoadResult {
    let common = [
        "--proto",
        "whoami",
        "--cores",
        "1",
        "--migrate-queued",
        "false",
        "--proxy-protocol",
        "--proxy-trusted",
        "127.0.0.1",
        "--health",
        "127.0.0.1:0",
    ];
    let mut first = Weft::serve(&[&common[..], &["--listen", "127.0.0.1:0"]].concat());
    let addr = first.ready();
    let h1 = first.health_addr();
    let mut second = Weft::serve(&[&common[..], &["--listen", &addr.to_string(), "--share-port"]].concat());
    assert_eq!(second.ready(), addr);
    let h2 = second.health_addr();
    let scratch = util::Scratch::new(&format!("crash-haproxy-{}", util::free_port()));
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], util::free_port()));
    let config = util::haproxy::config("", &[front], &[(addr, h1.port()), (addr, h2.port())]);
    let cfg = scratch.0.join("haproxy.cfg");
    std::fs::write(&cfg, config).unwrap();
    let _balancer = util::haproxy::Haproxy::start("haproxy", &cfg);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut probe = LoadResult::default();
        whoami_once(front, &mut probe);
        if probe.ok == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "HAProxy never answered: {probe:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_first_under_load(first, second, front, None)
}

/// Through HAProxy: three runs with `tcp_migrate_req=1`, none reset; the control without it
/// printed. A connection the killed instance had accepted reaches the client as an early
/// close from HAProxy (`wrong`), as without a balancer.
#[test]
fn sigkill_behind_haproxy_loses_no_queued_connection_with_tcp_migrate_req() {
    util::require_peer(util::Peer::Program("haproxy"));
    let _serial = util::serial();
    let Some(first) = in_netns(true, crash_behind_haproxy) else {
        return;
    };
    let mut migrated = vec![first];
    for _ in 0..2 {
        migrated.extend(in_netns(true, crash_behind_haproxy));
    }
    let control: Vec<LoadResult> = (0..3)
        .filter_map(|_| in_netns(false, crash_behind_haproxy))
        .collect();
    eprintln!("HAProxy in front, SIGKILL of one of two instances on one port, 1,000 connections per run:");
    eprintln!("  tcp_migrate_req=1: {migrated:?}");
    eprintln!("  tcp_migrate_req=0 (control): {control:?}");
    assert_none_reset("HAProxy, tcp_migrate_req=1", &migrated);
}

/// A hung instance killed after 100 ms (SIGSTOP, then SIGKILL): about a dozen connections
/// queue on its listener meanwhile. With weft's program or `tcp_migrate_req=1` none is
/// reset; without either (the control) some are, every time. What is lost with migration is
/// at most a connection the process had accepted just before it was stopped (a port waits
/// with a readiness poll and accepts with `accept4`, so no accept armed in the ring takes a
/// connection off the queue as the ring is torn down).
#[test]
fn a_hung_then_killed_instance_hands_its_queue_to_the_survivor() {
    let _serial = util::serial();
    const NO_PROGRAM: &[&str] = &["--migrate-queued", "false"];
    let hung = Some(Duration::from_millis(100));
    let Some(first) = in_netns(false, move || two_on_one_port_killed(&[], hung)) else {
        return;
    };
    let mut program = vec![first];
    program.extend(in_netns(false, move || two_on_one_port_killed(&[], hung)));
    let sysctl: Vec<LoadResult> = (0..2)
        .filter_map(|_| in_netns(true, move || two_on_one_port_killed(NO_PROGRAM, hung)))
        .collect();
    let control: Vec<LoadResult> = (0..2)
        .filter_map(|_| in_netns(false, move || two_on_one_port_killed(NO_PROGRAM, hung)))
        .collect();
    eprintln!("SIGSTOP, 100 ms, SIGKILL of one of two instances on one port, 1,000 connections:");
    eprintln!("  weft's reuseport program: {program:?}");
    eprintln!("  tcp_migrate_req=1: {sysctl:?}");
    eprintln!("  neither (control): {control:?}");
    for r in program.iter().chain(&sysctl) {
        assert_eq!(r.refused + r.reset + r.other, 0, "{program:?} {sysctl:?}");
        assert!(
            r.wrong <= 1,
            "only one accepted before the stop: {program:?} {sysctl:?}"
        );
    }
    assert!(
        control.iter().all(|r| r.reset > 0),
        "the control resets the hung instance's queue: {control:?}"
    );
}
