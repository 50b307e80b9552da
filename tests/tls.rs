#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS listeners end to end, against `weft serve --tls-cert ...`: interop with curl, openssl
//! s_client (TLS 1.2 and 1.3, SNI, ALPN) and wrk; weft's own client (`weft load https://`);
//! certificate reload under load; bad input (garbage, plaintext HTTP, a truncated
//! ClientHello, a client that stops mid-handshake, renegotiation) closed and counted with the
//! server up and no descriptor leaked; a PROXY header before the ClientHello; close_notify,
//! the idle timeout and the drain on SIGTERM. Certificates are made here with rcgen (a test
//! CA and leaves signed by it); no key is committed. Needs curl, openssl and wrk
//! (.ci/install-deps).

mod util;
mod weft_process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use util::{Peer, Scratch, require_peer};
use weft_process::Weft;

/// A test CA and the files of the leaves it signed, in a scratch folder.
struct Pki {
    dir: Scratch,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = Scratch::new(name);
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "weft test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.file("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca, ca_key }
    }

    fn ca_file(&self) -> String {
        self.dir.file("ca.pem")
    }

    /// Writes `FILE.pem` and `FILE.key` for a leaf (ECDSA P-256) named `cn` with these
    /// names; returns their paths.
    fn leaf(&self, file: &str, cn: &str, names: &[&str]) -> (String, String) {
        self.leaf_with(file, cn, names, |_| {})
    }

    /// As [`leaf`](Self::leaf), with `adjust` changing the parameters (validity, say) first.
    fn leaf_with(
        &self,
        file: &str,
        cn: &str,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.file(&format!("{file}.pem")),
            self.dir.file(&format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// `weft serve` over TLS with a `localhost` certificate from `pki` and extra `args`;
/// returns it, its address and its metrics address.
fn serve_tls(pki: &Pki, proto: &str, args: &[&str]) -> (Weft, SocketAddr, SocketAddr) {
    let (cert, key) = pki.leaf("server", "localhost", &["localhost", "127.0.0.1"]);
    let mut all = vec![
        "--proto",
        proto,
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--metrics",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let mut w = Weft::serve(&all);
    let addr = w.ready();
    let line = w.wait_for("metrics at http://", Duration::from_secs(10));
    let metrics = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("metrics address");
    (w, addr, metrics)
}

/// The value of a metric line that starts with `series` (summed over shards), waiting up to
/// 3 s for it to reach at least `at_least` (shards report their metrics every second).
fn metric_at_least(metrics: SocketAddr, series: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut s = TcpStream::connect(metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let value: u64 = text
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of a metric line that starts with `series` once it has stopped changing: the
/// same in two reads 1.1 s apart (shards report every second), within 6 s.
fn settled(metrics: SocketAddr, series: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut last = metric_at_least(metrics, series, 0);
    loop {
        std::thread::sleep(Duration::from_millis(1100));
        let now = metric_at_least(metrics, series, 0);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn handshakes(metrics: SocketAddr, result: &str, at_least: u64) -> u64 {
    metric_at_least(
        metrics,
        &format!("weft_tls_handshakes_total{{shard=\"0\",result=\"{result}\"}}"),
        at_least,
    )
}

/// A rustls client configuration trusting `ca`, offering `alpn`.
fn client_config(ca: &str, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A blocking TLS connection over `tcp` (already connected; anything written on it before
/// stays ahead of the ClientHello).
fn tls_over(tcp: TcpStream, config: &Arc<rustls::ClientConfig>) -> TlsStream {
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s
}

fn tls_connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> TlsStream {
    tls_over(TcpStream::connect(addr).unwrap(), config)
}

/// The subject CN of the leaf the server presents to `openssl s_client` with this SNI.
fn openssl(addr: SocketAddr, ca: &str, extra: &[&str]) -> String {
    let out = Command::new("timeout")
        .args([
            "5",
            "openssl",
            "s_client",
            "-connect",
            &addr.to_string(),
            "-CAfile",
            ca,
        ])
        .args(["-verify_return_error"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn interop_with_curl_openssl_and_wrk() {
    for p in ["curl", "openssl", "wrk"] {
        require_peer(Peer::Program(p));
    }
    let _serial = util::serial();
    let pki = Pki::new("tls-interop");
    let (api_cert, api_key) = pki.leaf("api", "api.test", &["api.test"]);
    let sni = format!("api.test={api_cert},{api_key}");
    let (_w, addr, metrics) = serve_tls(&pki, "http", &["--tls-sni", &sni, "--alpn", "http/1.1,http/1.0"]);
    let ca = pki.ca_file();

    let url = format!("https://localhost:{}/", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    for version in ["--tlsv1.2", "--tlsv1.3"] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert", &ca, "--resolve", &resolve])
            // curl offers h2 and http/1.1; weft's http, which speaks no h2, offers only
            // HTTP/1.x, so curl speaks HTTP/1.1.
            .args([version, &url, "-w", " %{http_code}"])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            body,
            "Hello, World! 200",
            "curl {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    for version in ["-tls1_2", "-tls1_3"] {
        let out = openssl(
            addr,
            &ca,
            &[version, "-servername", "localhost", "-alpn", "http/1.1"],
        );
        assert!(out.contains("Verify return code: 0 (ok)"), "{version}: {out}");
        let expect = if version == "-tls1_2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(out.contains(&format!("New, {expect}")), "{version}: {out}");
        assert!(out.contains("ALPN protocol: http/1.1"), "{version}: {out}");
        assert!(out.contains("subject=CN = localhost"), "{version}: {out}");
    }
    let out = openssl(addr, &ca, &["-servername", "api.test", "-alpn", "h2,http/1.1"]);
    assert!(
        out.contains("subject=CN = api.test"),
        "SNI picks the api.test certificate: {out}"
    );
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");

    let wrk = Command::new("wrk")
        .args([
            "-t1",
            "-c4",
            "-d1s",
            &format!("https://127.0.0.1:{}/", addr.port()),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&wrk.stdout);
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(requests > 0, "wrk over https: {text}");
    assert!(
        !text.contains("Socket errors") && !text.contains("Non-2xx"),
        "{text}"
    );
    assert!(
        handshakes(metrics, "ok", 9) >= 9,
        "curl x2, openssl x3, wrk x4 counted"
    );
}

#[test]
fn bad_input_is_closed_counted_and_leaks_nothing() {
    require_peer(Peer::Program("openssl"));
    let pki = Pki::new("tls-bad");
    let began = Instant::now();
    let (mut w, addr, metrics) = serve_tls(
        &pki,
        "echo",
        &["--tls-handshake-timeout", "1s", "--idle-timeout", "1s"],
    );
    let config = client_config(&pki.ca_file(), &[]);
    // One good connection first, so that every lazily made buffer exists.
    let mut s = tls_connect(addr, &config);
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let fds = open_fds(w.pid());

    /// Sends `bytes` (then our FIN if `fin`) and returns how long the server took to close.
    fn closed_after(addr: SocketAddr, bytes: &[u8], fin: bool) -> Duration {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(bytes).unwrap();
        if fin {
            tcp.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut sink = Vec::new();
        // An alert, then EOF (or a reset); never a timeout.
        match tcp.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        started.elapsed()
    }

    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
    assert!(closed_after(addr, &garbage, false) < Duration::from_millis(900));
    assert!(closed_after(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false) < Duration::from_millis(900));
    assert_eq!(handshakes(metrics, "invalid", 2), 2, "garbage and plaintext HTTP");
    // Failures are summed up at INFO, at most once a second per shard.
    let line = w.wait_for("TLS handshake failed;", Duration::from_secs(3));
    assert!(
        line.contains("INFO") && line.contains("1 TLS handshake failed; the last from 127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains(": invalid ("), "{line}");

    // A real ClientHello, cut short, then our FIN.
    let mut hello = Vec::new();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    conn.write_tls(&mut hello).unwrap();
    assert!(closed_after(addr, &hello[..hello.len() / 2], true) < Duration::from_millis(900));
    assert_eq!(handshakes(metrics, "eof", 1), 1, "truncated ClientHello");

    // The whole ClientHello, then silence: closed at the handshake deadline.
    let took = closed_after(addr, &hello, false);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(handshakes(metrics, "timeout", 1), 1);

    // A TLS 1.2 client asking to renegotiate (s_client's "R" command).
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-tls1_2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = stdin.write_all(b"R\n");
    let _ = stdin.flush();
    assert_eq!(handshakes(metrics, "renegotiation_refused", 1), 1);
    drop(stdin);
    util::wait_exit(&mut child, Duration::from_secs(5));

    // The idle timeout closes an established TLS connection like a plain one.
    let mut idle = tls_connect(addr, &config);
    let started = Instant::now();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest)
        .expect("a close_notify at the idle timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed by --idle-timeout"
    );

    // Many more bad connections leave no memory behind.
    let rss0 = util::rss_kib(w.pid());
    for i in 0..200 {
        let bad: &[u8] = if i % 2 == 0 {
            &garbage
        } else {
            &hello[..hello.len() / 2]
        };
        closed_after(addr, bad, true);
    }
    let grown = util::rss_kib(w.pid()).saturating_sub(rss0);
    assert!(grown < 2048, "{grown} KiB more after 200 bad connections");

    // The server is up, and every descriptor of the failed connections is closed.
    let mut s = tls_connect(addr, &config);
    s.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(3);
    while open_fds(w.pid()) > fds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_fds(w.pid()), fds, "no descriptor leaked");
    w.signal(libc::SIGTERM);
    w.wait(Duration::from_secs(10));
    let summaries = w
        .log
        .iter()
        .filter(|l| l.contains("handshakes failed in the last"))
        .count();
    let secs = began.elapsed().as_secs();
    assert!(
        (1..=secs + 1).contains(&(summaries as u64)),
        "{summaries} summaries in {secs} s"
    );
}

#[test]
fn proxy_header_before_the_client_hello() {
    let pki = Pki::new("tls-proxy");
    let (_w, addr, _) = serve_tls(
        &pki,
        "whoami",
        &["--proxy-protocol", "--proxy-trusted", "127.0.0.1"],
    );
    let config = client_config(&pki.ca_file(), &[]);
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 443\r\n")
        .unwrap();
    let mut s = tls_over(tcp, &config);
    let mut answer = String::new();
    // whoami closes with close_notify: a clean TLS EOF, not an UnexpectedEof error.
    s.read_to_string(&mut answer)
        .expect("a close_notify before the FIN");
    assert_eq!(answer, "192.0.2.7:40000\n");
}

#[test]
fn echo_flow_control_and_drain_on_sigterm() {
    let pki = Pki::new("tls-drain");
    let (mut w, addr, _) = serve_tls(&pki, "echo", &["--drain-timeout", "5s"]);
    let config = client_config(&pki.ca_file(), &[]);
    let mut s = tls_connect(addr, &config);
    // 2 MiB through the echo: more than the high-water mark, so reading pauses and resumes.
    let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut got = vec![0u8; data.len()];
    let mut sent = 0;
    let mut read = 0;
    while read < data.len() {
        if sent < data.len() {
            let end = (sent + 64 * 1024).min(data.len());
            s.write_all(&data[sent..end]).unwrap();
            sent = end;
        }
        let n = s.read(&mut got[read..]).unwrap();
        assert!(n > 0, "echo ended early");
        read += n;
    }
    assert!(got == data, "echoed intact");
    // A TLS 1.3 key update the client asks the server to answer: the echo goes on.
    s.conn.refresh_traffic_keys().unwrap();
    s.write_all(b"new keys").unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"new keys");

    w.signal(libc::SIGTERM);
    w.wait_for("draining open connections", Duration::from_secs(5));
    // The open connection still works during the drain.
    s.write_all(b"during drain").unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"during drain");
    // Our close_notify: the echo's default read_connection_lost closes with nothing queued,
    // and its close_notify must still come before the FIN.
    s.conn.send_close_notify();
    s.flush().unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("a close_notify from the server, not a bare FIN");
    assert!(rest.is_empty());
    drop(s);
    let status = w.wait(Duration::from_secs(4));
    assert!(status.success(), "{status:?}");
}

/// `weft load` against an `https://` `target` trusting `ca`, a new connection per request,
/// with `conns` connections for `duration`, its report in the JSON file `json`.
fn https_load(target: &str, ca: &str, conns: &str, duration: &str, json: &str, extra: &[&str]) -> Child {
    let mut args = vec![
        "load",
        "--target",
        target,
        "--tls-ca",
        ca,
        "--conns",
        conns,
        "--duration",
        duration,
        "--new-conn-per-request",
        "--json",
        json,
    ];
    args.extend_from_slice(extra);
    util::weft(&args)
}

#[test]
fn own_client_and_reload_under_load() {
    require_peer(Peer::Program("openssl"));
    let _serial = util::serial();
    let pki = Pki::new("tls-reload");
    let (mut w, addr, _) = serve_tls(&pki, "http", &[]);
    let cert = pki.dir.file("server.pem");
    let key = pki.dir.file("server.key");
    let ca = pki.ca_file();
    let json = pki.dir.file("load.json");
    let target = format!("https://localhost:{}/", addr.port());
    // A full handshake per request, so that every request after the reload meets (and
    // checks) the new certificate.
    let load = https_load(&target, &ca, "4", "3s", &json, &["--tls-no-resume"]);
    std::thread::sleep(Duration::from_millis(1200));
    // New files in place (renamed over, as deployment tools do), then SIGHUP.
    let (next_cert, next_key) = pki.leaf("next", "localhost-next", &["localhost", "127.0.0.1"]);
    std::fs::rename(&next_cert, &cert).unwrap();
    std::fs::rename(&next_key, &key).unwrap();
    w.signal(libc::SIGHUP);
    w.wait_for("TLS certificates reloaded", Duration::from_secs(5));
    assert!(openssl(addr, &ca, &[]).contains("subject=CN = localhost-next"));
    // A broken file: logged, and the certificate in use stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    w.signal(libc::SIGHUP);
    w.wait_for("not reloaded", Duration::from_secs(5));
    assert!(openssl(addr, &ca, &[]).contains("subject=CN = localhost-next"));

    let out = util::output_within(load, Duration::from_secs(15));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = util::read_json(&json);
    let requests = doc["requests"].as_u64().unwrap_or(0);
    assert!(requests > 10, "{doc}");
    assert_eq!(
        doc["errors"]["total"].as_u64(),
        Some(0),
        "no failed request across the reloads: {doc}"
    );
}

#[test]
fn full_and_resumed_handshakes_are_counted_apart() {
    // `weft load --tls-no-resume` makes a full handshake for every connection; without it,
    // each new connection resumes the session its predecessor was given a ticket for.
    let _serial = util::serial();
    let pki = Pki::new("tls-kinds");
    let (_w, addr, metrics) = serve_tls(&pki, "http", &[]);
    let ca = pki.ca_file();
    let target = format!("https://localhost:{}/", addr.port());
    let requests = |extra: &[&str], name: &str| -> u64 {
        let json = pki.dir.file(name);
        let load = https_load(&target, &ca, "1", "1s", &json, extra);
        let out = util::output_within(load, Duration::from_secs(10));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc = util::read_json(&json);
        assert_eq!(doc["errors"]["total"].as_u64(), Some(0), "{doc}");
        doc["requests"].as_u64().unwrap_or(0)
    };
    let full = requests(&["--tls-no-resume"], "full.json");
    assert!(full >= 5, "{full} requests");
    // Every handshake of the run counted (a connection the run's end cut off included).
    let ok = settled(metrics, "weft_tls_handshakes_total{shard=\"0\",result=\"ok\"}");
    assert!(ok >= full, "{ok} full handshakes for {full} requests");
    assert_eq!(
        handshakes(metrics, "resumed", 0),
        0,
        "--tls-no-resume resumed nothing"
    );

    let n = requests(&[], "resumed.json");
    assert!(n >= 5, "{n} requests");
    let resumed = handshakes(metrics, "resumed", n - 1);
    assert!(resumed >= n - 1, "{resumed} resumed handshakes for {n} requests");
    let ok_after = handshakes(metrics, "ok", 0);
    assert!(
        ok_after <= ok + 1,
        "only the first connection makes a full handshake: {ok} then {ok_after} ({resumed} resumed, {n} requests)"
    );
}

/// Memory per idle connection, TLS beside plain: each connection first echoes 16 KiB (a
/// full TLS record each way, so that every buffer has grown), then sits idle. Prints both
/// figures; the bound is loose (the point is that buffers do not stay at their largest).
#[test]
fn idle_tls_connections_hold_little_memory() {
    const CONNS: usize = 300;
    let _serial = util::serial();
    let pki = Pki::new("tls-memory");
    let config = client_config(&pki.ca_file(), &[]);
    let payload = vec![b'm'; 16 * 1024];

    let per_conn = |w: &Weft, open: &mut dyn FnMut() -> Box<dyn ReadWrite>| {
        std::thread::sleep(Duration::from_millis(200));
        let rss0 = util::rss_kib(w.pid());
        let mut held = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            let mut s = open();
            s.write_all(&payload).unwrap();
            let mut back = vec![0u8; payload.len()];
            s.read_exact(&mut back).unwrap();
            held.push(s);
        }
        std::thread::sleep(Duration::from_millis(300));
        let grown = util::rss_kib(w.pid()).saturating_sub(rss0);
        drop(held);
        grown * 1024 / CONNS as u64
    };

    let mut plain = Weft::serve(&["--proto", "echo", "--cores", "1", "--listen", "127.0.0.1:0"]);
    let plain_addr = plain.ready();
    let plain_bytes = per_conn(&plain, &mut || Box::new(TcpStream::connect(plain_addr).unwrap()));
    let (tls, addr, _) = serve_tls(&pki, "echo", &[]);
    let tls_bytes = per_conn(&tls, &mut || Box::new(tls_connect(addr, &config)));
    eprintln!("memory per idle connection: plain {plain_bytes} B, TLS {tls_bytes} B ({CONNS} connections)");
    assert!(tls_bytes < 24 * 1024, "{tls_bytes} B per idle TLS connection");
}

/// A blocking stream, plain or TLS.
trait ReadWrite: Read + Write {}

impl<T: Read + Write> ReadWrite for T {}

/// Flow control and the write-stall timeout on TLS: a client that writes and never reads
/// pauses the echo's reading, then is closed for the stall; `--tls-listen` serves TLS beside
/// a plain port; `weft load --proto echo --tls` drives it.
#[test]
fn write_stall_tls_beside_plain_and_echo_load() {
    let pki = Pki::new("tls-stall");
    let (cert, key) = pki.leaf("server", "localhost", &["localhost", "127.0.0.1"]);
    let mut w = Weft::serve(&[
        "--proto",
        "echo",
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--write-stall-timeout",
        "1s",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let line = w.wait_for("serving ", Duration::from_secs(10));
    let addrs: Vec<SocketAddr> = line
        .split(" on ")
        .nth(1)
        .unwrap()
        .split(" (")
        .next()
        .unwrap()
        .split(", ")
        .map(|a| a.parse().unwrap())
        .collect();
    let (plain, tls) = (addrs[0], addrs[1]);
    let metrics_line = w.wait_for("metrics at http://", Duration::from_secs(10));
    let metrics: SocketAddr = metrics_line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let mut p = TcpStream::connect(plain).unwrap();
    p.write_all(b"plain").unwrap();
    let mut buf = [0u8; 5];
    p.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"plain", "the --listen port stays plain");

    let config = client_config(&pki.ca_file(), &[]);
    let mut s = tls_connect(tls, &config);
    s.sock
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![b's'; 64 * 1024];
    let started = Instant::now();
    // Writes until the server's reading pauses and the socket fills (or the server closes).
    while started.elapsed() < Duration::from_secs(5) && s.write_all(&chunk).is_ok() {}
    let stalled = metric_at_least(
        metrics,
        "weft_connections_closed_total{shard=\"0\",reason=\"write_stall\"}",
        1,
    );
    assert_eq!(stalled, 1, "closed for the write stall");
    drop(s);

    let ca = pki.ca_file();
    let out = util::run_weft(
        &[
            "load",
            "--target",
            &tls.to_string(),
            "--proto",
            "echo",
            "--tls",
            "--tls-ca",
            &ca,
            "--tls-server-name",
            "localhost",
            "--conns",
            "2",
            "--duration",
            "1s",
        ],
        Duration::from_secs(15),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("errors      none"), "{text}");
    assert!(text.contains("echo over TLS"), "{text}");
}

/// A zero-downtime restart of a TLS listener: the successor takes the listening socket over
/// (with its own certificate), while a TLS connection to the old process goes on until it
/// closes; the old process then exits.
#[test]
fn handoff_of_a_tls_listener() {
    let pki = Pki::new("tls-handoff");
    let sock = pki.dir.file("handoff.sock");
    let (new_cert, new_key) = pki.leaf("new", "localhost-new", &["localhost"]);
    let (mut old, addr, _) = serve_tls(
        &pki,
        "echo",
        &["--handoff-socket", &sock, "--drain-timeout", "5s"],
    );
    let config = client_config(&pki.ca_file(), &[]);
    let mut kept = tls_connect(addr, &config);

    let mut new = Weft::serve(&[
        "--proto",
        "echo",
        "--cores",
        "1",
        "--takeover",
        &sock,
        "--tls-cert",
        &new_cert,
        "--tls-key",
        &new_key,
    ]);
    new.wait_for("took over the listeners", Duration::from_secs(10));
    // The old process's one accept in flight may take a connect or two; then the successor
    // answers every new connection, with its certificate.
    let served_by_new = (0..5).any(|_| {
        let s = tls_connect(addr, &config);
        let cert = s.conn.peer_certificates().unwrap()[0].clone();
        x509_cn(&cert) == "localhost-new"
    });
    assert!(served_by_new, "the successor serves new connections");

    kept.write_all(b"still the old one").unwrap();
    let mut buf = [0u8; 17];
    kept.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still the old one");
    kept.conn.send_close_notify();
    kept.flush().unwrap();
    drop(kept);
    assert!(
        old.wait(Duration::from_secs(5)).success(),
        "the old process drains and exits"
    );
}

/// A handoff keeps each port's role: a successor given the predecessor's flags again serves
/// the TLS port with TLS and the plain one plain; one without TLS flags is refused (exit 1,
/// one line naming the TLS port) and the predecessor goes on serving both.
#[test]
fn handoff_keeps_each_port_tls_or_plain() {
    let pki = Pki::new("tls-handoff-roles");
    let sock = pki.dir.file("roles.sock");
    let (cert, key) = pki.leaf("server", "localhost", &["localhost"]);
    let (plain, tls) = (util::free_addr(), util::free_addr());
    let (plain_arg, tls_arg) = (plain.to_string(), tls.to_string());
    let flags = [
        "--proto",
        "echo",
        "--cores",
        "1",
        "--drain-timeout",
        "1s",
        "--listen",
        &plain_arg,
        "--tls-listen",
        &tls_arg,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--handoff-socket",
        &sock,
    ];
    let mut old = Weft::serve(&flags);
    let line = old.wait_for("serving echo on ", Duration::from_secs(10));
    assert!(
        line.contains(&format!("on {plain}, {tls} (TLS) (")),
        "each address says whether it is TLS: {line}"
    );
    old.wait_for("handoffs to a successor on", Duration::from_secs(10));
    let config = client_config(&pki.ca_file(), &[]);
    let echoes = |addr: SocketAddr| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"plain").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).is_ok() && &buf == b"plain"
    };
    let tls_echoes = |addr: SocketAddr| {
        let mut s = tls_connect(addr, &config);
        s.write_all(b"sealed").unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).unwrap();
        &buf == b"sealed"
    };

    let out = util::run_weft(
        &["serve", "--proto", "echo", "--cores", "1", "--takeover", &sock],
        Duration::from_secs(15),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{tls} is a TLS port in the running weft and would be plain here"
        )),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        echoes(plain) && tls_echoes(tls),
        "the predecessor still serves both"
    );

    let mut new = Weft::serve(&[&flags[..], &["--takeover", &sock]].concat());
    new.wait_for("took over the listeners", Duration::from_secs(10));
    assert!(
        old.wait(Duration::from_secs(5)).success(),
        "the old process drains and exits"
    );
    assert!(echoes(plain), "plain stays plain");
    assert!(tls_echoes(tls), "TLS stays TLS");
}

/// The certificates' subject and expiry are logged at start and at each reload, and exported
/// (`weft_tls_certificate_expiry_seconds`, `weft_tls_reloads_total{result}`); an expired one
/// is served with a warning. Two TLS listeners sharing their files reload once per SIGHUP.
#[test]
fn certificate_expiry_and_reloads_are_logged_and_exported() {
    let pki = Pki::new("tls-expiry");
    let (mut w, _, metrics) = serve_tls(&pki, "echo", &["--listen", "127.0.0.1:0"]);
    let (cert, key) = (pki.dir.file("server.pem"), pki.dir.file("server.key"));
    let line = w.wait_for("TLS certificate ", Duration::from_secs(5));
    assert!(
        line.contains(&format!("{cert} (CN=localhost, valid until ")),
        "{line}"
    );
    let expiry = |cn: &str| {
        let series = format!(
            "weft_tls_certificate_expiry_seconds{{name=\"default\",file=\"{cert}\",subject=\"CN={cn}\"}}"
        );
        metric_at_least(metrics, &series, 0)
    };
    // rcgen's default validity ends in 4096.
    assert_eq!(expiry("localhost"), 67_090_118_400, "notAfter of 4096-01-01");
    let reloads = |result: &str| {
        metric_at_least(
            metrics,
            &format!("weft_tls_reloads_total{{result=\"{result}\"}}"),
            0,
        )
    };
    assert_eq!((reloads("ok"), reloads("failed")), (0, 0));

    // Renewed with an expired certificate: loaded and served, with a warning.
    let (c, k) = pki.leaf_with("expired", "old.localhost", &["localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    std::fs::rename(c, &cert).unwrap();
    std::fs::rename(k, &key).unwrap();
    w.signal(libc::SIGHUP);
    let line = w.wait_for("SIGHUP: TLS certificates reloaded", Duration::from_secs(5));
    assert!(
        line.contains("CN=old.localhost, valid until 2021-01-01T00:00:00Z"),
        "{line}"
    );
    let warning = w.wait_for("expired at 2021-01-01T00:00:00Z", Duration::from_secs(5));
    assert!(warning.contains("WARN"), "{warning}");
    assert_eq!(expiry("old.localhost"), 1_609_459_200, "notAfter of 2021-01-01");
    assert_eq!(reloads("ok"), 1);

    std::fs::write(&cert, "garbage").unwrap();
    w.signal(libc::SIGHUP);
    w.wait_for("TLS certificates not reloaded", Duration::from_secs(5));
    assert_eq!((reloads("ok"), reloads("failed")), (1, 1));
    // Two listeners share the files: one reload, one line, per SIGHUP.
    std::thread::sleep(Duration::from_millis(300));
    w.signal(libc::SIGTERM);
    w.wait(Duration::from_secs(10));
    let count = |needle: &str| w.log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("SIGHUP: TLS certificates reloaded"), 1, "{:#?}", w.log);
    assert_eq!(count("TLS certificates not reloaded"), 1, "{:#?}", w.log);
}

/// Keys weft cannot use are refused at start (and by --check) with what to do: an encrypted
/// one (PKCS#8 or OpenSSL's legacy form), an RSA key under 2048 bits; keys made by openssl.
#[test]
fn unusable_keys_say_what_to_do() {
    require_peer(Peer::Program("openssl"));
    let dir = Scratch::new("tls-keys");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (cert, key) = (dir.file("rsa1024.pem"), dir.file("rsa1024.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &cert,
        "-subj",
        "/CN=localhost",
        "-days",
        "1",
    ]);
    let (enc8, legacy) = (dir.file("enc8.key"), dir.file("legacy.key"));
    openssl(&[
        "pkey", "-in", &key, "-aes128", "-passout", "pass:x", "-out", &enc8,
    ]);
    openssl(&[
        "rsa",
        "-in",
        &key,
        "-aes128",
        "-traditional",
        "-passout",
        "pass:x",
        "-out",
        &legacy,
    ]);
    for (k, says) in [
        (&key, "an RSA key of 1024 bits: rustls needs at least 2048"),
        (
            &enc8,
            "the key is encrypted: weft needs an unencrypted key (openssl pkey -in KEY -out PLAIN",
        ),
        (&legacy, "the key is encrypted: weft needs an unencrypted key"),
    ] {
        let out = util::run_weft(
            &[
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--tls-cert",
                &cert,
                "--tls-key",
                k,
                "--check",
            ],
            Duration::from_secs(10),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{k}: {err}");
    }
}

/// The subject CN of a DER certificate, found by its OID (2.5.4.3) and read as a UTF-8 or
/// printable string: enough for the test certificates made here.
fn x509_cn(der: &[u8]) -> String {
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der
        .windows(oid.len())
        .rposition(|w| w == oid)
        .expect("a CN in the certificate");
    let len = der[at + oid.len() + 1] as usize;
    let start = at + oid.len() + 2;
    String::from_utf8_lossy(&der[start..start + len]).into_owned()
}

/// A client session store that counts the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, value: rustls::client::Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: rustls::client::Tls13ClientSessionValue) {
        self.tickets.fetch_add(1, Ordering::Relaxed);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

#[test]
fn sessions_resume_with_one_ticket_per_handshake() {
    // One TLS 1.3 ticket per handshake (DEFAULT_TLS13_TICKETS): a client that reconnects one
    // connection at a time resumes every time, on the ticket its previous connection got.
    let _serial = util::serial();
    let pki = Pki::new("tls-resume");
    let (_w, addr, _metrics) = serve_tls(&pki, "echo", &[]);
    let store = Arc::new(CountingStore {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        tickets: AtomicUsize::new(0),
    });
    let mut config = Arc::unwrap_or_clone(client_config(&pki.ca_file(), &[]));
    config.resumption = rustls::client::Resumption::store(store.clone());
    let config = Arc::new(config);
    for i in 0..5 {
        let mut s = tls_connect(addr, &config);
        s.write_all(b"ping").unwrap();
        // The ticket comes before the echo: reading the echo takes it in.
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        let kind = s.conn.handshake_kind();
        let expected = if i == 0 {
            rustls::HandshakeKind::Full
        } else {
            rustls::HandshakeKind::Resumed
        };
        assert_eq!(kind, Some(expected), "connection {i}");
        assert_eq!(store.tickets.load(Ordering::Relaxed), i + 1, "connection {i}");
    }
}
