//! The `weft` binary: argument errors, bind errors, and the SIGTERM drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use util::{echo_server_command, serve_command, spawn_listening, wait_exit, weft};

fn stderr_of(child: std::process::Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_are_one_line_and_exit_two() {
    for args in [
        vec!["serve", "--listen", "nonsense"],
        vec!["serve", "--listen", "127.0.0.1:1", "--proto", "gopher"],
        vec!["serve", "--listen", "127.0.0.1:1", "--drain-timeout", "ten"],
        vec!["serve", "--listen", "127.0.0.1:1", "--cores", "0"],
        vec!["serve"],
        vec!["frobnicate"],
        // Contradictions, refused before anything starts (and by --check).
        vec![
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--low-water",
            "1MiB",
            "--high-water",
            "64KiB",
        ],
        vec!["serve", "--listen", "127.0.0.1:1", "--max-output", "1KiB"],
        vec!["serve", "--listen", "127.0.0.1:1", "--maxmemory", "1MiB"],
        vec!["serve", "--listen", "127.0.0.1:1", "--health", "127.0.0.1:1"],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--proxy-listen",
            "127.0.0.1:1",
            "--proxy-trusted",
            "127.0.0.1",
            "--check",
        ],
    ] {
        let (code, err) = stderr_of(weft(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn kv_limits_are_flags_refused_by_name() {
    let kv = ["serve", "--listen", "127.0.0.1:1", "--proto", "kv", "--check"];
    for (extra, says) in [
        (
            ["--kv-max-bulk", "10"],
            "--kv-max-bulk 10 would refuse the arguments of ordinary commands: give at least 1024",
        ),
        (["--kv-max-inline", "0"], "--kv-max-inline 0 would refuse"),
        (["--kv-max-request", "1000"], "--kv-max-request 1000 would refuse"),
        (
            ["--kv-max-transaction", "1"],
            "--kv-max-transaction 1 would refuse",
        ),
        (["--kv-max-bulk", "ten"], "--kv-max-bulk"),
    ] {
        let args: Vec<&str> = kv.iter().copied().chain(extra).collect();
        let (code, err) = stderr_of(weft(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, err) = stderr_of(weft(&[
        "serve",
        "--listen",
        "127.0.0.1:1",
        "--kv-max-request",
        "1MiB",
        "--check",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--kv-max-request applies to --proto kv only"),
        "{err}"
    );
    let mut args = kv.to_vec();
    args.extend([
        "--kv-max-bulk",
        "1MiB",
        "--kv-max-inline",
        "4KiB",
        "--kv-max-request",
        "2MiB",
        "--kv-max-transaction",
        "8MiB",
    ]);
    let (code, err) = stderr_of(weft(&args));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_refuses_what_the_start_would() {
    let missing = std::env::temp_dir().join(format!("weft-no-such-dir-{}", std::process::id()));
    let hdr_log = missing.join("x.hlog");
    let handoff = missing.join("handoff.sock");
    let cert = missing.join("cert.pem");
    let many_cores = (0..=weft::Cores::allowed().into_iter().max().unwrap_or(0) + 1)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for (extra, says) in [
        (vec!["--cores", many_cores.as_str()], "not available"),
        (
            vec!["--hdr-log", hdr_log.to_str().unwrap()],
            "directory does not exist",
        ),
        // A directory where no file can be created: the check tries as the start does.
        (
            vec!["--hdr-log", "/proc/x.hlog"],
            "--hdr-log /proc/x.hlog: cannot create it: ",
        ),
        (
            vec!["--handoff-socket", handoff.to_str().unwrap()],
            "its directory does not exist: create it (systemd: RuntimeDirectory=)",
        ),
        (
            vec![
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                cert.to_str().unwrap(),
            ],
            "cannot set up TLS",
        ),
    ] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:1", "--check"];
        args.extend(extra);
        let (code, err) = stderr_of(weft(&args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn address_in_use_names_the_address_and_exits_one() {
    // A listener without SO_REUSEPORT makes the port unavailable to weft.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = stderr_of(weft(&["serve", "--listen", &addr, "--cores", "1"]));
    assert_eq!(code, 1, "{err}");
    let line = err.trim_end();
    assert_eq!(line.lines().count(), 1, "{err}");
    assert!(line.contains(&addr) && line.contains("in use"), "{line}");
    // Not a weft serving handoffs: nothing to take over.
    assert!(!line.contains("--takeover"), "{line}");
}

/// Every duration flag goes through one parser: a negative one is refused as such (not taken
/// for an unknown flag), and a number without its unit is refused with the units, but for 0.
#[test]
fn durations_need_a_unit_and_cannot_be_negative() {
    let serve = ["serve", "--listen", "127.0.0.1:1", "--check"];
    for (args, says) in [
        (
            [&serve[..], &["--drain-timeout", "-1s"]].concat(),
            "invalid value '-1s' for '--drain-timeout <DRAIN_TIMEOUT>': invalid duration \"-1s\": \
             a duration cannot be negative",
        ),
        (
            [&serve[..], &["--idle-timeout", "-5ms"]].concat(),
            "invalid duration \"-5ms\": a duration cannot be negative",
        ),
        (
            [&serve[..], &["--drain-timeout", "10"]].concat(),
            "invalid duration \"10\": give its unit, e.g. 10s or 10ms (units: ns, us, ms, s, m, h)",
        ),
        (
            [&serve[..], &["--stats-interval", "1"]].concat(),
            "invalid duration \"1\": give its unit",
        ),
        (
            vec!["load", "--target", "127.0.0.1:1", "--duration", "5"],
            "invalid value '5' for '--duration <DURATION>': invalid duration \"5\": give its unit",
        ),
        (vec!["demo", "--duration", "-3s"], "a duration cannot be negative"),
    ] {
        let (code, err) = stderr_of(weft(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, err) = stderr_of(weft(&[&serve[..], &["--write-stall-timeout", "0"]].concat()));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_second_instance_on_a_port_in_use_is_refused_unless_it_shares_the_port() {
    // SO_REUSEPORT would let the second bind and silently take half of the connections.
    let (cmd, addr) = echo_server_command();
    let mut first = spawn_listening(cmd, addr);
    let listen = addr.to_string();
    let (code, err) = stderr_of(weft(&["serve", "--listen", &listen, "--cores", "1"]));
    assert_eq!(code, 1, "{err}");
    let line = err.trim_end();
    assert_eq!(line.lines().count(), 1, "{err}");
    assert!(line.contains(&listen) && line.contains("--share-port"), "{line}");

    // Asked for, the port is shared: the second serves beside the first.
    let mut cmd = util::weft_command(&["serve", "--listen", &listen, "--cores", "1", "--share-port"]);
    let mut second = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        second.try_wait().unwrap().is_none(),
        "the sharing instance exited"
    );
    for child in [&mut second, &mut first] {
        util::sigterm(child);
        assert!(wait_exit(child, Duration::from_secs(10)).success());
    }
}

#[test]
fn a_metrics_port_in_use_is_refused_naming_the_metrics() {
    let metrics_addr = util::free_addr();
    let metrics = metrics_addr.to_string();
    let (cmd, addr) = serve_command("1", &["--proto", "echo", "--metrics", &metrics]);
    let mut first = spawn_listening(cmd, addr);
    util::wait_listening(metrics_addr, &mut first);
    let (mut cmd, _) = serve_command("1", &["--proto", "echo", "--metrics", &metrics]);
    let (code, err) = stderr_of(cmd.spawn().unwrap());
    assert_eq!(code, 1, "{err}");
    // Refused before the start says it serves: one line, with what to do.
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot serve the metrics on {metrics}: address in use"))
            && err.contains("pick another address"),
        "{err}"
    );
    util::sigterm(&first);
    assert!(wait_exit(&mut first, Duration::from_secs(10)).success());
}

#[test]
fn sigterm_closes_listeners_at_once_and_drains_mid_stream_connections() {
    let (cmd, addr) = echo_server_command();
    let mut server = spawn_listening(cmd, addr);

    const CLIENTS: usize = 20;
    const HALF: usize = 512 * 1024;
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let resume = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (barrier, resume) = (barrier.clone(), resume.clone());
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..2 * HALF).map(|j| (i * 31 + j % 253) as u8).collect();
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                let mut r = s.try_clone().unwrap();
                let reader = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    r.read_to_end(&mut got).map(|_| got)
                });
                s.write_all(&data[..HALF]).unwrap();
                barrier.wait();
                resume.wait();
                s.write_all(&data[HALF..]).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let got = reader.join().unwrap().expect("no reset during the drain");
                assert!(
                    got == data,
                    "client {i} got {} of {} bytes",
                    got.len(),
                    data.len()
                );
            })
        })
        .collect();
    barrier.wait();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    // Listeners close at once: a new connect is refused, it does not hang.
    let t0 = Instant::now();
    let refused = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break true,
            Err(_) => break false,
            Ok(_) if t0.elapsed() > Duration::from_secs(1) => break false,
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert!(refused, "new connects must be refused once SIGTERM arrives");
    assert!(t0.elapsed() < Duration::from_secs(1));
    resume.wait();
    for c in clients {
        c.join().unwrap();
    }
    let status = wait_exit(&mut server, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_locked_memory_limit_too_low_for_io_uring_is_one_clear_line() {
    use std::os::unix::process::CommandExt;
    let (mut cmd, _addr) = echo_server_command();
    // SAFETY: setrlimit is async-signal-safe; the closure runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, err) = stderr_of(cmd.spawn().unwrap());
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("locked-memory limit") && err.contains("ulimit -l"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// In a container whose seccomp profile blocks io_uring (Docker's default), `weft serve`
/// stops before binding anything, with one line that names seccomp and the profile to use.
#[test]
fn io_uring_blocked_by_seccomp_is_one_line_naming_the_profile() {
    use std::os::unix::process::CommandExt;
    let (mut cmd, addr) = serve_command("1", &["--proto", "echo", "--health", "127.0.0.1:0"]);
    // EPERM for the three io_uring calls, as Docker's default profile answers them.
    let eperm = util::seccomp::errno(libc::EPERM);
    let rules = [
        (libc::SYS_io_uring_setup as u32, eperm),
        (libc::SYS_io_uring_enter as u32, eperm),
        (libc::SYS_io_uring_register as u32, eperm),
    ];
    let filter = util::seccomp::program(&rules, util::seccomp::ALLOW);
    // SAFETY: the closure makes only async-signal-safe calls, in the child before exec.
    unsafe { cmd.pre_exec(move || util::seccomp::install(&filter)) };
    let (code, err) = stderr_of(cmd.spawn().unwrap());
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("weft: cannot start an io_uring reactor: a seccomp filter blocks io_uring")
            && err.contains("deploy/seccomp-weft.json"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing was bound: no partial start"
    );
}

#[test]
fn proxy_listen_requires_the_header_on_its_own_port_only() {
    let plain: std::net::SocketAddr = format!("127.0.0.1:{}", util::free_port()).parse().unwrap();
    let proxied: std::net::SocketAddr = format!("127.0.0.1:{}", util::free_port()).parse().unwrap();
    let cmd = util::weft_command(&[
        "serve",
        "--proto",
        "whoami",
        "--cores",
        "1",
        "--listen",
        &plain.to_string(),
        "--proxy-listen",
        &proxied.to_string(),
        "--proxy-trusted",
        "127.0.0.0/8",
    ]);
    let mut server = spawn_listening(cmd, plain);
    let mut direct = TcpStream::connect(plain).unwrap();
    let mut seen = String::new();
    direct.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, format!("{}\n", direct.local_addr().unwrap()));
    let mut balanced = TcpStream::connect(proxied).unwrap();
    balanced
        .write_all(b"PROXY TCP4 192.0.2.7 192.0.2.1 5555 80\r\n")
        .unwrap();
    let mut claimed = String::new();
    balanced.read_to_string(&mut claimed).unwrap();
    assert_eq!(claimed, "192.0.2.7:5555\n");
    drop((direct, balanced));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut server, Duration::from_secs(15)).code(), Some(0));
}

/// A self-signed `localhost` certificate and its key, written to `dir`.
fn self_signed(dir: &util::Scratch) -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.file("cert.pem"), dir.file("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// What `weft serve ARGS --tls-cert CERT --tls-key KEY --check` prints, with a self-signed
/// certificate; fails the test if it exits non-zero.
fn tls_check(dir: &util::Scratch, args: &[&str]) -> String {
    let (cert, key) = self_signed(dir);
    let tls = ["--tls-cert", &cert, "--tls-key", &key, "--check"];
    let out = util::run_weft(&[&["serve"], args, &tls[..]].concat(), Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn check_lists_every_listener_with_its_role() {
    let dir = util::Scratch::new("check-roles");
    let text = tls_check(
        &dir,
        &[
            "--listen",
            "127.0.0.1:7000",
            "--tls-listen",
            "127.0.0.1:7443",
            "--proxy-listen",
            "127.0.0.1:7001",
            "--proxy-trusted",
            "127.0.0.1",
        ],
    );
    let expected = "listen 127.0.0.1:7000\ntls-listen 127.0.0.1:7443\nproxy-listen 127.0.0.1:7001\n";
    assert!(text.starts_with(expected), "{text}");
    // Without --tls-listen, every --listen port is TLS; with --proxy-protocol, PROXY too.
    let text = tls_check(
        &dir,
        &[
            "--listen",
            "127.0.0.1:7000",
            "--proxy-protocol",
            "--proxy-trusted",
            "127.0.0.1",
        ],
    );
    assert!(text.starts_with("proxy-tls-listen 127.0.0.1:7000\n"), "{text}");
}

#[test]
fn tls_settings_that_fail_every_handshake_are_usage_errors() {
    let long = "x".repeat(300);
    // The files are never read: the flags are refused first.
    let tls = ["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"];
    for (extra, says) in [
        (vec!["--alpn", ""], "empty protocol name"),
        (vec!["--alpn", "http/1.1,,h2"], "empty protocol name"),
        (vec!["--alpn", &long], "is 300 bytes"),
        (
            vec!["--proto", "http", "--alpn", "h2,http/1.1"],
            "--proto http speaks only http/1.1",
        ),
        (
            vec!["--tls-handshake-timeout", "0s"],
            "would fail every handshake",
        ),
    ] {
        for check in [false, true] {
            let mut args = vec!["serve", "--listen", "127.0.0.1:1"];
            args.extend(tls);
            args.extend(&extra);
            if check {
                args.push("--check");
            }
            let (code, err) = stderr_of(weft(&args));
            assert_eq!(code, 2, "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}

/// Values that would make a service that serves nothing (every connection closed at once,
/// every request or handshake failed), that the kernel would refuse on every connection, or
/// absurd bounds: usage errors naming the flag, what the value does and what to give.
#[test]
fn values_that_serve_nothing_are_usage_errors() {
    let proxy = ["--proxy-protocol", "--proxy-trusted", "127.0.0.1"];
    let tls = ["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"];
    let keepalive = ["--keepalive-idle", "10s"];
    for (extra, says) in [
        (
            vec!["--max-conns-per-core", "0"],
            "--max-conns-per-core 0 would close every connection",
        ),
        (
            vec!["--idle-timeout", "0s"],
            "--idle-timeout 0s would close every connection",
        ),
        (
            vec!["--header-timeout", "0s"],
            "--header-timeout 0s would answer every HTTP request 408",
        ),
        (
            [&proxy[..], &["--proxy-header-timeout", "0s"]].concat(),
            "--proxy-header-timeout 0s would close every connection",
        ),
        (
            [&proxy[..], &["--proxy-max-header", "51"]].concat(),
            "give at least 52 bytes",
        ),
        (
            vec!["--keepalive-idle", "0s"],
            "--keepalive-idle 0s would be refused by the kernel",
        ),
        (vec!["--keepalive-idle", "1.5s"], "give whole seconds"),
        (
            [&keepalive[..], &["--keepalive-interval", "0s"]].concat(),
            "--keepalive-interval 0s would be refused",
        ),
        (
            [&keepalive[..], &["--keepalive-count", "128"]].concat(),
            "give 1 to 127",
        ),
        (
            [&keepalive[..], &["--keepalive-count", "0"]].concat(),
            "give 1 to 127",
        ),
        (
            vec!["--drain-delay", "99999h"],
            "--drain-delay 359996400s is too long: at most 3600s",
        ),
        (vec!["--drain-timeout", "2h"], "--drain-timeout 7200s is too long"),
        (
            vec!["--spin-before-park", "10s"],
            "--spin-before-park 10s is too long: at most 10ms",
        ),
        (
            vec!["--high-water", "0", "--low-water", "0", "--max-output", "0"],
            "--max-output 0 would close every connection",
        ),
        (
            [&tls[..], &["--tls-tickets", "100000"]].concat(),
            "--tls-tickets 100000 would make every handshake send that many tickets",
        ),
        (vec!["--cores", "0"], "for core 0 alone, write a list: 0,"),
    ] {
        for check in [false, true] {
            let mut args = vec!["serve", "--listen", "127.0.0.1:1"];
            args.extend(&extra);
            if check {
                args.push("--check");
            }
            let (code, err) = stderr_of(weft(&args));
            assert_eq!(code, 2, "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
    // Accepted: 0s turns the write-stall timeout off, and Linux queues one connection on a
    // backlog of 0; at the bounds, the values are served.
    for extra in [
        vec!["--write-stall-timeout", "0s"],
        vec!["--backlog", "0"],
        vec!["--max-conns-per-core", "1"],
        vec!["--keepalive-idle", "1s", "--keepalive-count", "127"],
        vec!["--spin-before-park", "10ms"],
        vec!["--drain-delay", "1h"],
        vec!["--cores", "0,"],
    ] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:1", "--check"];
        args.extend(&extra);
        let (code, err) = stderr_of(weft(&args));
        assert_eq!(code, 0, "{args:?}: {err}");
    }
}

/// The health check's port and the handoff socket's path are checked before the start says
/// it serves: one line, naming what could not be bound and what to do.
#[test]
fn side_ports_that_cannot_be_bound_fail_before_serving() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let health = taken.local_addr().unwrap().to_string();
    let missing = std::env::temp_dir().join(format!("weft-no-such-dir-{}", std::process::id()));
    let socket = missing.join("handoff.sock");
    let long = std::env::temp_dir().join("h".repeat(120));
    for (extra, says) in [
        (
            vec!["--health", health.as_str()],
            format!("cannot serve the health check on {health}: address in use"),
        ),
        (
            vec!["--handoff-socket", socket.to_str().unwrap()],
            "its directory does not exist".to_owned(),
        ),
        (
            vec!["--handoff-socket", long.to_str().unwrap()],
            "give a shorter path".to_owned(),
        ),
    ] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--cores", "1"];
        args.extend(&extra);
        let (code, err) = stderr_of(weft(&args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "nothing logged before: {err}");
        assert!(err.contains(&says), "{args:?}: {err}");
    }
}

/// A privileged port without the right to bind it says what to do. Needs root, to drop to
/// `nobody` with setpriv; skipped otherwise.
#[test]
fn a_privileged_port_says_how_to_bind_it() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = std::path::Path::new("/usr/bin/setpriv").exists();
    if !root
        || !setpriv
        || std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .is_ok_and(|v| v.trim().parse::<u32>().is_ok_and(|p| p <= 80))
    {
        eprintln!("skipped: needs root, setpriv and port 80 privileged");
        return;
    }
    let out = std::process::Command::new("/usr/bin/setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_weft"))
        .args(["serve", "--listen", "127.0.0.1:80", "--cores", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for says in [
        "cannot listen on 127.0.0.1:80: ",
        "port 80 is privileged",
        "a port >= 1024",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "net.ipv4.ip_unprivileged_port_start",
    ] {
        assert!(err.contains(says), "{err}");
    }
}

/// A descriptor limit too low for the connection cap is warned about at start, with what to
/// do; as `nobody` (no CAP_BPF), crash migration off is said once at info level.
#[test]
fn start_warns_about_a_low_descriptor_limit_and_crash_migration_off() {
    use std::os::unix::process::CommandExt;
    let (mut cmd, addr) = serve_command("1", &["--proto", "echo", "--max-conns-per-core", "500"]);
    // SAFETY: setrlimit is async-signal-safe; the closure runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 200,
                rlim_max: 200,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = spawn_listening(cmd, addr);
    util::sigterm(&server);
    assert!(wait_exit(&mut server, Duration::from_secs(10)).success());
    let (_, err) = stderr_of(server);
    assert!(
        err.contains("WARN the descriptor limit is 200")
            && err.contains("need about 580")
            && err.contains("LimitNOFILE="),
        "{err}"
    );

    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let migrating =
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").map_or(true, |v| v.trim() == "1");
    if !root || migrating || !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("crash migration part skipped: needs root, setpriv and tcp_migrate_req=0");
        return;
    }
    let addr = util::free_addr();
    let mut cmd = std::process::Command::new("/usr/bin/setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_weft"))
        .args(["serve", "--listen", &addr.to_string(), "--cores", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut server = spawn_listening(cmd, addr);
    util::sigterm(&server);
    assert!(wait_exit(&mut server, Duration::from_secs(10)).success());
    let (_, err) = stderr_of(server);
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("crash migration is off"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].contains("INFO")
            && said[0].contains("are reset")
            && said[0].contains("sysctl net.ipv4.tcp_migrate_req=1")
            && said[0].contains("CAP_BPF"),
        "{err}"
    );
}

/// A client that never reads is reset at the write-stall timeout, and the server says so at
/// INFO (the metrics alone would not tell an operator why clients see resets).
#[test]
fn write_stall_resets_are_logged_with_what_to_do() {
    let (cmd, addr) = serve_command("1", &["--proto", "echo", "--write-stall-timeout", "1s"]);
    let server = spawn_listening(cmd, addr);
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    // Echoed back into a socket that is never read: the output fills, then stalls.
    let chunk = vec![b'x'; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && s.write_all(&chunk).is_ok() {}
    // Past the stall timeout with nothing read, the connection has been reset.
    std::thread::sleep(Duration::from_millis(2500));
    let mut b = [0u8; 64 * 1024];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let end = loop {
        match s.read(&mut b) {
            Ok(0) => break None,
            Ok(_) => continue,
            Err(e) => break Some(e.kind()),
        }
    };
    assert_eq!(
        end,
        Some(ErrorKind::ConnectionReset),
        "reset at the stall timeout"
    );
    util::sigterm(&server);
    let out = util::output_within(server, Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INFO") && err.contains("1 connection reset: the peer read none of its queued output"),
        "{err}"
    );
}
