//! The sharded-service examples, run as their users run them: a chat whose rooms span the
//! shards, a key-value service whose keys live on their owning shards, an HTTP counter API on
//! `weft::http`, a gateway that calls an upstream, and TLS on both sides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use util::{connect, example_command, sigterm, wait_exit};

/// Starts example `name` on a free port and waits until it listens (another port if that one
/// was taken); returns it and the address. Its log goes to the test's stderr, so that a
/// failure shows what the example said. The examples are built by `cargo test`.
fn example(name: &str) -> (Child, SocketAddr) {
    util::serving(|addr| {
        let mut cmd = example_command(name, &[addr.to_string()]);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env("NO_COLOR", "1");
        cmd
    })
}

/// Runs example `name` with `args` to its end (bounded) and returns its output, checking that
/// it succeeded.
fn run_example(name: &str, args: &[String]) -> String {
    let out = util::output_within(
        example_command(name, args)
            .spawn()
            .expect("the examples are built by cargo test"),
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    stdout
}

fn stop(mut child: Child) {
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

/// Reads lines until one satisfies `want` (bounded by a deadline).
fn read_until(r: &mut BufReader<TcpStream>, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if want(line.trim_end()) {
            return line.trim_end().to_owned();
        }
    }
    panic!("no wanted line; last {line:?}");
}

#[test]
fn chat_rooms_span_the_shards() {
    let (child, addr) = example("chat");
    let mut clients: Vec<(TcpStream, BufReader<TcpStream>)> = (0..8)
        .map(|_| {
            let s = connect(addr);
            let r = BufReader::new(s.try_clone().unwrap());
            (s, r)
        })
        .collect();
    for (i, (s, r)) in clients.iter_mut().enumerate() {
        read_until(r, |l| l.starts_with("welcome"));
        write!(s, "/nick n{i}\n/join lobby\n").unwrap();
        // Each sees its own join, so it is in the room before the next one speaks.
        read_until(r, |l| l == format!("n{i}: joined"));
    }
    clients[0].0.write_all(b"hello everyone\n").unwrap();
    for (_, r) in &mut clients {
        read_until(r, |l| l == "n0: hello everyone");
    }
    drop(clients);
    stop(child);
}

#[test]
fn kv_keys_live_on_their_shards_and_pipelines_answer_in_order() {
    let (child, addr) = example("kv");
    let mut writer = connect(addr);
    let mut reader = BufReader::new(writer.try_clone().unwrap());
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&format!("SET k{i} v{i}\n"));
    }
    writer.write_all(batch.as_bytes()).unwrap();
    for _ in 0..50 {
        assert_eq!(read_until(&mut reader, |_| true), "OK");
    }
    // Another connection (maybe another shard) reads them back, pipelined, in order.
    let mut other = connect(addr);
    let mut other_reader = BufReader::new(other.try_clone().unwrap());
    let mut batch = String::new();
    for i in (0..50).rev() {
        batch.push_str(&format!("GET k{i}\nDEL k{i}\n"));
    }
    batch.push_str("GET k7\nBOGUS\n");
    other.write_all(batch.as_bytes()).unwrap();
    for i in (0..50).rev() {
        assert_eq!(read_until(&mut other_reader, |_| true), format!("v{i}"));
        assert_eq!(read_until(&mut other_reader, |_| true), "1");
    }
    assert_eq!(read_until(&mut other_reader, |_| true), "(nil)");
    assert!(read_until(&mut other_reader, |_| true).starts_with("ERR"));
    drop((writer, reader, other, other_reader));
    stop(child);
}

#[test]
fn chat_tells_its_chatters_at_shutdown_and_closes_without_waiting_for_the_timeout() {
    let (mut child, addr) = example("chat");
    let mut clients: Vec<BufReader<TcpStream>> = (0..4)
        .map(|i| {
            let mut r = BufReader::new(connect(addr));
            read_until(&mut r, |l| l.starts_with("welcome"));
            // Members follow the drain; one who never joined does not.
            if i > 0 {
                write!(r.get_mut(), "/nick n{i}\n/join lobby\n").unwrap();
                read_until(&mut r, |l| l == format!("n{i}: joined"));
            }
            r
        })
        .collect();
    let started = Instant::now();
    sigterm(&child);
    for r in &mut clients {
        read_until(r, |l| l == "server shutting down");
        let mut rest = String::new();
        assert_eq!(r.read_line(&mut rest).unwrap(), 0, "then the close: {rest:?}");
    }
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    // The drain timeout is 10 s: the idle chatters did not hold it up, and the members were
    // told once no line was on its way, not with a quarter of the timeout left.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn kv_answers_the_requests_it_received_before_closing_at_shutdown() {
    let (mut child, addr) = example("kv");
    let mut writer = connect(addr);
    let mut reader = BufReader::new(writer.try_clone().unwrap());
    writer.write_all(b"SET k v\n").unwrap();
    assert_eq!(read_until(&mut reader, |_| true), "OK");
    // 100 GETs of 5 ms each: half a second of answers still to come at the signal.
    writer.write_all("GET k\n".repeat(100).as_bytes()).unwrap();
    assert_eq!(read_until(&mut reader, |_| true), "v");
    sigterm(&child);
    for i in 1..100 {
        assert_eq!(read_until(&mut reader, |_| true), "v", "answer {i}");
    }
    let mut rest = String::new();
    assert_eq!(
        reader.read_line(&mut rest).unwrap(),
        0,
        "then the close: {rest:?}"
    );
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

/// A client that sends its requests and then half-closes (`printf ... | nc -N`) still gets
/// every answer: the ones that wait for a timer or another shard come after its EOF.
#[test]
fn kv_answers_a_client_that_half_closes_after_its_requests() {
    let (child, addr) = example("kv");
    let mut s = connect(addr);
    let mut batch = String::from("SET a 1\n");
    for _ in 0..50 {
        batch.push_str("GET a\n");
    }
    batch.push_str("DEL a\nGET a\n");
    s.write_all(batch.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answers = String::new();
    s.read_to_string(&mut answers).unwrap();
    let want = format!("OK\n{}1\n(nil)\n", "1\n".repeat(50));
    assert_eq!(answers, want);
    stop(child);
}

#[test]
fn client_awaits_its_connection_and_its_end() {
    let (server, addr) = util::engine(1, |_| weft::protocols::Echo::factory());
    let stdout = run_example("client", &[addr.to_string()]);
    assert!(
        stdout.contains("shard 0: answer \"hello from a weft shard\" (closed locally)"),
        "{stdout}"
    );
    server.shutdown();
}

/// `weft serve --proto echo` on `addr`, for the gateway to call.
fn echo_command(addr: SocketAddr) -> std::process::Command {
    let listen = addr.to_string();
    let mut cmd = util::weft_command(&["serve", "--listen", &listen, "--cores", "1", "--proto", "echo"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

/// The gateway in front of `weft serve --proto echo`: a client's pipelined lines come back in
/// order through its shard's one upstream connection; with the upstream gone a line is
/// answered with the error; once the upstream is back (on the same address) lines go through
/// again; and at SIGTERM the idle upstream connections do not hold the drain up to its
/// timeout.
#[test]
fn gateway_forwards_lines_answers_errors_recovers_and_drains() {
    let (mut upstream, upstream_addr) = util::serving(echo_command);
    let (mut child, addr) = util::serving(|addr| {
        let mut cmd = example_command("gateway", &[addr.to_string(), upstream_addr.to_string()]);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env("NO_COLOR", "1");
        cmd
    });
    let mut s = connect(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let batch: String = (0..50).map(|i| format!("line {i}\n")).collect();
    s.write_all(batch.as_bytes()).unwrap();
    for i in 0..50 {
        assert_eq!(read_until(&mut r, |_| true), format!("line {i}"));
    }
    // The upstream goes away: the line is answered with why it got no reply.
    upstream.kill().unwrap();
    upstream.wait().unwrap();
    s.write_all(b"while down\n").unwrap();
    let down = read_until(&mut r, |_| true);
    assert!(down.starts_with("ERR "), "{down}");
    // It comes back: within the reconnect policy's back-off (5 s at most), lines go through.
    let mut upstream = util::spawn_listening(echo_command(upstream_addr), upstream_addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        s.write_all(b"again\n").unwrap();
        let line = read_until(&mut r, |_| true);
        if line == "again" {
            break;
        }
        assert!(line.starts_with("ERR ") && Instant::now() < deadline, "{line}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    sigterm(&child);
    assert_eq!(rest(r), "", "the client's connection closes after its answers");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    // The drain timeout is 10 s: the upstream connections closed at once, idle.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    upstream.kill().unwrap();
    upstream.wait().unwrap();
}

/// A [::1] listener on `port` whose accept queue is full and never drained (backlog 0, one
/// connection queued): the kernel drops further SYNs, so a connect to it hangs. Returns the
/// listener and the connection that fills it; `None` without IPv6 loopback or if the port is
/// taken there.
fn hanging_ipv6_listener(port: u16) -> Option<(socket2::Socket, Vec<TcpStream>)> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let l = Socket::new(Domain::IPV6, Type::STREAM, None).ok()?;
    l.set_only_v6(true).ok()?;
    l.bind(&SockAddr::from(addr)).ok()?;
    l.listen(0).ok()?;
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => return Some((l, fillers)),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled");
}

/// `localhost` resolving to [::1] and 127.0.0.1, the IPv6 listener hanging: weft's client
/// tries IPv6 first, gives it its 250 ms head start, then connects over IPv4 while the IPv6
/// attempt still hangs. (Trying in turn, the attempt would have spent its whole 5 s timeout
/// on IPv6 and failed.) Where this host's `localhost` lacks an address family, the example
/// runs in a mount namespace whose /etc/hosts names both (root only).
#[test]
fn happy_eyeballs_connects_over_ipv4_while_ipv6_hangs() {
    let (v4, port, v6) = (0..20)
        .find_map(|_| {
            let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = v4.local_addr().unwrap().port();
            hanging_ipv6_listener(port).map(|v6| (v4, port, v6))
        })
        .expect("a port free on both 127.0.0.1 and [::1]");
    let dest = format!("localhost:{port}");
    let mut cmd = example_command("happy_eyeballs", std::slice::from_ref(&dest));
    let both_families = std::net::ToSocketAddrs::to_socket_addrs(&dest).is_ok_and(|a| {
        let a: Vec<SocketAddr> = a.collect();
        a.iter().any(SocketAddr::is_ipv6) && a.iter().any(SocketAddr::is_ipv4)
    });
    let scratch = util::Scratch::new("happy-eyeballs");
    if !both_families {
        let hosts = scratch.file("hosts");
        std::fs::write(&hosts, "::1 localhost\n127.0.0.1 localhost\n").unwrap();
        let example = cmd.get_program().to_owned();
        cmd = std::process::Command::new("unshare");
        cmd.args(["-m", "sh", "-c"])
            .arg(format!("mount --bind {hosts} /etc/hosts && exec \"$0\" \"$@\""))
            .arg(example)
            .arg(&dest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    let out = util::output_within(cmd.spawn().unwrap(), Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !both_families && stderr.contains("unshare") {
        eprintln!("NOTE: no mount namespace for a localhost with both families ({stderr}); run as root");
        return;
    }
    assert!(out.status.success(), "{stdout}{stderr}");
    let line = stdout.trim();
    let rest = line
        .strip_prefix(&format!("connected to 127.0.0.1:{port} after "))
        .unwrap_or_else(|| panic!("{line}"));
    let ms: u64 = rest.strip_suffix(" ms").unwrap().parse().unwrap();
    assert!(ms >= 250, "IPv6 goes first and gets its head start: {line}");
    drop((v4, v6));
}

#[test]
fn tls_example_echoes_over_tls_with_alpn() {
    let text = run_example("tls", &[]);
    assert!(
        text.contains("ALPN Some(\"http/1.1\"); hello over TLS (closed locally)"),
        "{text}"
    );
    assert!(
        text.contains("server: 1 full TLS handshake(s), 0 resumed, 1 connection(s) served"),
        "{text}"
    );
}

/// One HTTP response read from `r`: its status, headers (names lower-cased) and body (none
/// for a `HEAD`).
fn http_response(r: &mut BufReader<TcpStream>, head: bool) -> (u16, Vec<(String, String)>, String) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let Some((name, value)) = line.trim_end().split_once(": ") else {
            break;
        };
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; if head { 0 } else { length }];
    r.read_exact(&mut body).unwrap();
    (status, headers, String::from_utf8(body).unwrap())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Reads what is left until the server closes.
fn rest(mut r: BufReader<TcpStream>) -> String {
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    rest
}

/// At shutdown a request whose body is still arriving is not cut off: it is read whole,
/// answered, and the connection closes.
#[test]
fn http_api_reads_an_upload_in_progress_to_its_end_at_shutdown() {
    let (mut child, addr) = example("http_api");
    let mut s = connect(addr);
    s.write_all(b"POST /counter/up HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n4")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"2").unwrap();
    let mut r = BufReader::new(s);
    let (status, _, body) = http_response(&mut r, false);
    assert_eq!((status, body.as_str()), (200, r#"{"name":"up","value":42}"#));
    assert_eq!(rest(r), "");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn http_api_counts_across_shards_and_answers_bad_requests_then_closes() {
    let (child, addr) = example("http_api");
    // Keep-alive and pipelined: a length body, a chunked body with an extension, reads, and
    // the 404, 405 and 400 of the routes; answered in order on one connection.
    let mut s = connect(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(
        b"POST /counter/a HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n40\
          POST /counter/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;x=y\r\n2\r\n0\r\nT: 1\r\n\r\n\
          GET /counter/a HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /counter/a HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
          DELETE /counter/a HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /counter/b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    )
    .unwrap();
    let want = r#"{"name":"a","value":42}"#;
    assert_eq!(http_response(&mut r, false).2, r#"{"name":"a","value":40}"#);
    assert_eq!(http_response(&mut r, false).2, want);
    let (status, headers, body) = http_response(&mut r, false);
    assert_eq!((status, body.as_str()), (200, want));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert!(header(&headers, "date").is_some());
    let (status, headers, _) = http_response(&mut r, true);
    assert_eq!((status, header(&headers, "content-length")), (200, Some("23")));
    assert_eq!(http_response(&mut r, false).0, 404);
    let (status, headers, _) = http_response(&mut r, false);
    assert_eq!(
        (status, header(&headers, "allow")),
        (405, Some("GET, HEAD, POST"))
    );
    assert_eq!(http_response(&mut r, false).0, 400);
    // Expect: 100-continue: the body is sent only after the interim answer.
    s.write_all(b"POST /counter/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
        .unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    r.read_line(&mut line).unwrap();
    s.write_all(b"8").unwrap();
    assert_eq!(http_response(&mut r, false).2, r#"{"name":"a","value":50}"#);
    // Pipelined behind a request still being answered, the 100 comes right after its answer.
    s.write_all(b"GET /counter/a HTTP/1.1\r\nHost: h\r\n\r\nPOST /counter/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
        .unwrap();
    assert_eq!(http_response(&mut r, false).0, 200);
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    r.read_line(&mut line).unwrap();
    s.write_all(b"0").unwrap();
    assert_eq!(http_response(&mut r, false).2, r#"{"name":"a","value":50}"#);
    // Connection: close is answered, then the connection closes.
    s.write_all(b"GET /counter/a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (status, headers, _) = http_response(&mut r, false);
    assert_eq!((status, header(&headers, "connection")), (200, Some("close")));
    assert_eq!(rest(r), "");
    // HTTP/1.0 closes after its answer.
    let mut s = connect(addr);
    s.write_all(b"GET /counter/a HTTP/1.0\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let (status, headers, body) = http_response(&mut r, false);
    assert_eq!(
        (status, header(&headers, "connection"), body.as_str()),
        (200, Some("close"), r#"{"name":"a","value":50}"#)
    );
    assert_eq!(rest(r), "");
    // A malformed request after a good one: the good one is answered, then 400 and a close.
    let mut s = connect(addr);
    s.write_all(b"GET /counter/a HTTP/1.1\r\nHost: h\r\n\r\nNOT HTTP\r\n\r\nGET /counter/a HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(http_response(&mut r, false).0, 200);
    let (status, headers, _) = http_response(&mut r, false);
    assert_eq!((status, header(&headers, "connection")), (400, Some("close")));
    assert_eq!(rest(r), "");
    // A body over the limit is refused from its head (413), before it is sent.
    let mut s = connect(addr);
    s.write_all(b"POST /counter/a HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(http_response(&mut r, false).0, 413);
    assert_eq!(rest(r), "");
    stop(child);
}

/// `/lines/N` streams its body in its turn: chunked (the `Date` and headers of any response),
/// a `HEAD` without it, the pipelined requests after it answered in order on the same
/// connection; a body far over the output cap reaches a client that reads it slowly (the
/// connection would be reset at the cap otherwise); an HTTP/1.0 client reads it to the close.
#[test]
fn http_api_streams_lines_in_the_order_of_the_requests() {
    use weft::codec::{Decoder, Encoder, InBuf};
    use weft::http::{HttpLimits, Method, Request, ResponseDecoder};
    let (child, addr) = example("http_api");
    let mut decoder = ResponseDecoder::new(HttpLimits {
        max_body: 64 << 20,
        ..HttpLimits::default()
    });
    let mut encoder = decoder.request_encoder();
    let mut requests = Vec::new();
    for request in [
        Request::get("/lines/3"),
        Request::new(Method::Head, "/lines/3"),
        Request::get("/counter/streamed"),
        Request::get("/lines/1000000"),
        Request::get("/lines/2").with_header("Connection", "close"),
    ] {
        encoder
            .encode(request.with_header("Host", "t"), &mut requests)
            .unwrap();
    }
    let mut s = connect(addr);
    s.write_all(&requests).unwrap();
    // Read slowly: 16 KiB at a time, pausing every 64 reads.
    let mut got = InBuf::new();
    let mut buf = [0; 16 * 1024];
    for i in 0.. {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend(&buf[..n]);
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut responses = Vec::new();
    while let Some(r) = decoder.decode(&mut got).unwrap() {
        responses.push(r);
    }
    assert_eq!(got.len(), 0);
    let lines = |n: u32| -> Vec<u8> { (1..=n).flat_map(|i| format!("line {i}\n").into_bytes()).collect() };
    let [three, head, counter, million, two] = &responses[..] else {
        panic!("{} responses", responses.len())
    };
    assert_eq!((three.status, &three.body), (200, &lines(3)));
    for r in [three, head, million] {
        assert_eq!(r.header("transfer-encoding"), Some(&b"chunked"[..]));
        assert!(r.header("date").is_some() && r.keep_alive());
        assert_eq!(r.header("content-type"), Some(&b"text/plain"[..]));
    }
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(counter.body, br#"{"name":"streamed","value":0}"#);
    assert!(million.body == lines(1_000_000), "{} bytes", million.body.len());
    assert_eq!((&two.body, two.keep_alive()), (&lines(2), false));
    // HTTP/1.0: no chunks, the body ends with the connection.
    let mut s = connect(addr);
    s.write_all(b"GET /lines/2 HTTP/1.0\r\n\r\n").unwrap();
    let text = rest(BufReader::new(s));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Connection: close") && !head.contains("Transfer-Encoding"),
        "{head}"
    );
    assert!(
        !head.contains("Content-Length") && !head.contains("keep-alive"),
        "{head}"
    );
    assert_eq!(body, "line 1\nline 2\n");
    stop(child);
}

/// The HTTP client example against `weft serve --proto http`: a pipelined `HEAD` read
/// without its announced body, then `GET`s, each with its `Content-Length` body.
#[test]
fn http_client_calls_weft_serve() {
    let server = util::ServeChild::start("http", "1");
    let args = [server.addr.to_string(), "/".into(), "/missing".into()];
    let stdout = run_example("http_client", &args);
    let want = [
        "HEAD /: 200 OK, 0 bytes (length)",
        "GET /: 200 OK, 13 bytes (length)",
        "GET /missing: 404 Not Found, 13 bytes (length)",
        "closed: closed locally",
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want, "{stdout}");
}

/// The HTTP client example against nginx, whose SSI filter sends pages chunked (an answer to
/// `HEAD` announces no length at all): bodies of 125 KB in many chunks, pipelined.
#[test]
fn http_client_reads_nginx_chunked_responses() {
    util::require_peer(util::Peer::Program("nginx"));
    let scratch = util::Scratch::new("http-client-nginx");
    let www = scratch.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let page: String = (0..3000)
        .map(|i| format!("line {i} of a page nginx sends in chunks\n"))
        .collect();
    std::fs::write(www.join("page.html"), &page).unwrap();
    // nginx's workers read the page as nobody.
    use std::os::unix::fs::PermissionsExt;
    for dir in [&scratch.0, &www] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dir = scratch.0.to_str().unwrap().to_owned();
    let (nginx, addr) = util::serving(|addr| {
        let conf = format!(
            "daemon off; master_process off; pid {dir}/nginx.pid; error_log {dir}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};\n\
             fastcgi_temp_path {dir}; uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
             server {{ listen {addr}; root {dir}/www; ssi on; }} }}\n"
        );
        std::fs::write(scratch.0.join("nginx.conf"), conf).unwrap();
        let mut cmd = std::process::Command::new("nginx");
        cmd.args(["-c", &scratch.file("nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    });
    let args = [
        addr.to_string(),
        "/page.html".into(),
        "/missing".into(),
        "/page.html".into(),
    ];
    let stdout = run_example("http_client", &args);
    stop(nginx);
    let len = page.len();
    let lines: Vec<&str> = stdout.lines().collect();
    let [head, get, missing, again, closed] = lines.as_slice() else {
        panic!("{stdout}")
    };
    assert_eq!(*head, "HEAD /page.html: 200 OK, 0 bytes (no length)");
    assert_eq!(*get, format!("GET /page.html: 200 OK, {len} bytes (chunked)"));
    // Its error page names nginx's version: its length varies.
    assert!(
        missing.starts_with("GET /missing: 404 Not Found, ") && missing.ends_with("bytes (chunked)"),
        "{stdout}"
    );
    assert_eq!((*again, *closed), (*get, "closed: closed locally"));
}
