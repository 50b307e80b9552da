//! `weft serve --proto kv` against a real redis-server: the same requests, the same answers
//! byte for byte (through raw sockets and through redis-cli), the same answers to malformed
//! input; then what only a sharded server must show: consistency across shards and
//! connections, answers in order, expiry, maxmemory, the drain, and redis-benchmark.
//!
//! Every server listens on loopback; every loop is bounded in count and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;
mod weft_process;

// Every test takes `util::serial()`: servers started in parallel on free ports picked by
// bind-and-release can collide (weft binds with SO_REUSEPORT), which made a full run flaky.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use util::{Peer, Scratch, free_port, require_peer, serve_command, wait_exit, wait_listening};

/// Shards of the weft server (the keys of every script spread over both).
const SHARDS: &str = "2";

/// A server child, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// `weft serve --proto kv --cores SHARDS ARGS...`.
    fn weft(args: &[&str]) -> Self {
        Self::weft_with(SHARDS, args)
    }

    /// `weft serve --proto kv --cores SHARDS ARGS...` with `shards` shards.
    fn weft_with(shards: &str, args: &[&str]) -> Self {
        let mut all = vec!["--proto", "kv"];
        all.extend_from_slice(args);
        let (mut cmd, addr) = serve_command(shards, &all);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn weft");
        wait_listening(addr, &mut child);
        Self { child, addr }
    }

    /// `redis-server` with one database, no persistence, on a free loopback port.
    fn redis(dir: &Scratch) -> Self {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args([
                "--appendonly",
                "no",
                "--databases",
                "1",
                "--dir",
                dir.0.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, &mut child);
        Self { child, addr }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP client over a plain socket.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let s = util::connect(addr);
        Self {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Sends one command and reads its answer's bytes.
    fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&encode(args));
        self.reply()
    }

    /// `call` with text arguments split at spaces.
    fn cmd(&mut self, line: &str) -> Vec<u8> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.call(&args)
    }

    /// Reads one whole answer.
    fn reply(&mut self) -> Vec<u8> {
        read_reply(&mut self.reader).unwrap()
    }
}

/// A request as RESP: an array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The bytes of one RESP answer.
fn read_reply(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let n: i64 = std::str::from_utf8(&line[1..line.len().saturating_sub(2)])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1);
    match line[0] {
        // Bulk and RESP3 verbatim strings.
        b'$' | b'=' if n >= 0 => {
            let mut body = vec![0; n as usize + 2];
            r.read_exact(&mut body)?;
            line.extend_from_slice(&body);
        }
        // Arrays, RESP3 sets and maps (two per entry).
        b'*' | b'~' | b'%' if n >= 0 => {
            let n = if line[0] == b'%' { 2 * n } else { n };
            for _ in 0..n {
                line.extend_from_slice(&read_reply(r)?);
            }
        }
        _ => {}
    }
    Ok(line)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The script run against both servers, one command per line (arguments split at spaces),
/// every answer compared byte for byte. Keys fall on both shards.
const SCRIPT: &str = "\
FLUSHALL
PING
PING hello
ECHO hi
GET missing
SET k1 v1
GET k1
SET k1 v2 GET
SET k1 v3 NX
SET k1 v3 XX GET
SET k2 v NX
SETNX k2 x
GETSET k2 y
GETDEL k2
GETDEL k2
SET n 10
INCR n
INCRBY n 5
DECR n
DECRBY n 3
INCRBY n abc
INCR k1
SET big 9223372036854775807
INCR big
DECRBY n -9223372036854775808
APPEND s hello
APPEND s world
STRLEN s
STRLEN nope
MSET a 1 b 2 c 3 d 4 e 5 f 6
MGET a b c d e f g k1
MSET a
MSET a 1 b
DEL a b zz
EXISTS a b c c d zz
SET t v EX 100
TTL t
EXPIRE t 200
TTL t
EXPIRE t 50 GT
EXPIRE t 50 LT
TTL t
EXPIRE t 10 NX
EXPIRE t 10 XX
PERSIST t
PERSIST t
TTL t
TTL nope
PTTL nope
PTTL t
EXPIRETIME t
PEXPIRETIME nope
PEXPIRE t 100000
SET far 1
PEXPIREAT far 9223372036854775807
EXPIRETIME far
PEXPIRETIME far
PEXPIRE far 9223372036854775807
DEL far
EXPIRE nope 10
EXPIRE t abc
EXPIRE t 10 foo
EXPIRE t 10 NX XX
EXPIRE t 10 GT LT
EXPIRE t 9223372036854776
EXPIRE t -1
EXISTS t
SET e v PX 100000
SET e v2 KEEPTTL
TTL e
SET e v3
TTL e
EXPIREAT e 1
EXISTS e
SET x y EX 0
SET x y EX abc
SET x y PX -5
SET x y EX 9223372036854776
SET x y NX XX
SET x y KEEPTTL EX 10
SET x y EX 10 PX 10
SET x y BADOPT
SET x y EX
SETEX x 0 v
SETEX x 100 v
TTL x
PSETEX x 0 v
PSETEX x 100000 v
TTL x
DBSIZE
SELECT 0
SELECT 1
SELECT abc
GET
GET a b
SET a
FOO bar baz
FOO
COMMAND FOO
CONFIG
CONFIG GET
CONFIG GET maxmemory
CONFIG GET save
CONFIG GET appendonly
CONFIG FOO
COMMAND COUNT x
AUTH x
AUTH default x
AUTH nobody x
AUTH a b c
HELLO 1
HELLO abc
HELLO 2 FOO
HELLO 2 AUTH nobody x
HELLO 2 AUTH a
FLUSHALL FOO
FLUSHALL ASYNC a
FLUSHDB
DBSIZE
ECHO
PING a b
QUIT";

/// More commands that clients send on connect or in normal use, compared the same way:
/// `TYPE UNLINK GETEX KEYS SCAN`'s errors, `CONFIG HELP`, `CLIENT`, and transactions on keys
/// of one shard (`{t}`: one hash tag).
const SCRIPT_MORE: &str = "\
FLUSHALL
SET a 1
TYPE a
TYPE nope
UNLINK a nope
UNLINK
SET a 1
GETEX a EX 100
TTL a
GETEX a PERSIST
TTL a
GETEX a PX 100000
GETEX a EXAT 1
EXISTS a
SET a 1
GETEX a
GETEX a EX 0
GETEX a EX -1
GETEX a FOO
GETEX a EX 10 PX 10
GETEX a PERSIST EX 1
GETEX a EX
GETEX nope EX 10
GETEX a EX 9223372036854776
GETEX a PX abc
KEYS a
KEYS nope*
KEYS a b
SCAN x
SCAN 0 COUNT 0
SCAN 0 COUNT abc
SCAN 0 MATCH
SCAN 0 FOO 1
SCAN 18446744073709551616
SCAN -x
CONFIG HELP
CONFIG HELP x
CLIENT
CLIENT FOO
CLIENT SETNAME a b
CLIENT GETNAME
CLIENT SETNAME app
CLIENT GETNAME
CLIENT SETNAME 
CLIENT GETNAME
CLIENT LIST TYPE master
CLIENT LIST TYPE pubsub
CLIENT LIST TYPE foo
CLIENT LIST ID abc
CLIENT LIST ID 0
CLIENT LIST ID 999999
CLIENT LIST FOO
CLIENT LIST TYPE
CLIENT ID x
TIME x
DISCARD
EXEC
MULTI
MULTI
SET {t}x 1
GET {t}x
INCR {t}x
GET {t}nope
MGET {t}x {t}y
SET {t}y a
INCR {t}y
DEL {t}y
TYPE {t}x
GETEX {t}x PERSIST
PING
ECHO hi
EXEC
EXEC
DISCARD
MULTI
SET {t}x
GET {t}x
EXEC
MULTI
FOO
EXEC
MULTI
WATCH {t}x
PING
DISCARD
UNWATCH
MULTI
EXEC
MULTI
EXISTS {t}x {t}y
UNLINK {t}x {t}y
SET a b
DISCARD
GET a
DBSIZE
QUIT";

/// The script's requests.
fn script() -> Vec<Vec<Vec<u8>>> {
    lines_of(SCRIPT)
}

/// A script's requests, one a line, arguments split at spaces.
fn lines_of(script: &str) -> Vec<Vec<Vec<u8>>> {
    script
        .lines()
        .map(|l| l.split(' ').map(|a| a.as_bytes().to_vec()).collect())
        .collect()
}

/// Runs the script on `addr`, one command at a time; the answers.
/// A redis-server and a `weft serve --proto kv` (two shards) to compare, on free ports, and
/// redis's scratch folder (kept while they run).
fn beside_redis(name: &str) -> (Scratch, Server, Server) {
    require_peer(Peer::Program("redis-server"));
    let dir = Scratch::new(name);
    let redis = Server::redis(&dir);
    (dir, redis, Server::weft(&[]))
}

/// The lines of `script` whose answers differ, each with both answers, after `label`.
fn script_diffs(label: &str, script: &str, want: &[Vec<u8>], got: &[Vec<u8>]) -> Vec<String> {
    script
        .lines()
        .zip(want)
        .zip(got)
        .filter(|((_, w), g)| w != g)
        .map(|((line, w), g)| format!("{label}{line}\n  redis: {:?}\n  weft:  {:?}", text(w), text(g)))
        .collect()
}

/// Fails with every difference listed.
fn assert_same(diffs: &[String]) {
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn run_script(addr: SocketAddr) -> Vec<Vec<u8>> {
    run_script_in(addr, 2)
}

/// Runs the script on `addr` in RESP `protocol` (after `HELLO 3` for 3), one command at a
/// time; the answers.
fn run_script_in(addr: SocketAddr, protocol: u8) -> Vec<Vec<u8>> {
    run_lines(addr, protocol, SCRIPT)
}

/// Runs `script` (one command a line) on `addr` in RESP `protocol`; the answers.
fn run_lines(addr: SocketAddr, protocol: u8, script: &str) -> Vec<Vec<u8>> {
    let mut c = Client::connect(addr);
    if protocol == 3 {
        assert!(c.cmd("HELLO 3").starts_with(b"%7\r\n"));
    }
    lines_of(script)
        .iter()
        .map(|req| {
            let args: Vec<&[u8]> = req.iter().map(Vec::as_slice).collect();
            c.call(&args)
        })
        .collect()
}

/// Runs the script on `addr` as one pipeline; everything read up to the close.
fn run_script_pipelined(addr: SocketAddr) -> Vec<u8> {
    let mut c = Client::connect(addr);
    let all: Vec<u8> = script()
        .iter()
        .flat_map(|req| encode(&req.iter().map(Vec::as_slice).collect::<Vec<_>>()))
        .collect();
    c.send(&all);
    let mut out = Vec::new();
    c.reader.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn same_answers_as_redis_server_byte_for_byte() {
    let _serial = util::serial();
    let (_dir, redis, weft) = beside_redis("kv-redis-script");
    let want = run_script(redis.addr);
    let got = run_script(weft.addr);
    assert_same(&script_diffs("", SCRIPT, &want, &got));
    // The same script as one pipeline: the same bytes, in order, then the close after QUIT.
    let want = run_script_pipelined(redis.addr);
    let got = run_script_pipelined(weft.addr);
    assert_eq!(text(&got), text(&want));
}

/// The script again after `HELLO 3`: every answer in RESP3 as redis-server gives it (nulls
/// `_`, maps for CONFIG GET and HELLO, sets in COMMAND INFO), byte for byte.
#[test]
fn same_answers_as_redis_server_in_resp3() {
    let _serial = util::serial();
    let (_dir, redis, weft) = beside_redis("kv-redis-resp3");
    let want = run_script_in(redis.addr, 3);
    let got = run_script_in(weft.addr, 3);
    assert_same(&script_diffs("", SCRIPT, &want, &got));
    assert!(want.iter().any(|w| w == b"_\r\n"), "RESP3 nulls compared");
    // HELLO, INFO and answers from the other shard, in each protocol.
    let mut r = Client::connect(redis.addr);
    let mut w = Client::connect(weft.addr);
    let mask_id = |reply: Vec<u8>| {
        let text = text(&reply);
        let at = text.find("$2\r\nid\r\n:").expect("id") + 9;
        let end = at + text[at..].find("\r\n").unwrap();
        format!("{}N{}", &text[..at], &text[end..])
    };
    for line in [
        "HELLO 3",
        "HELLO",
        "HELLO 2",
        "HELLO",
        "HELLO 3 SETNAME app",
        "HELLO 3 AUTH default x",
    ] {
        assert_eq!(mask_id(w.cmd(line)), mask_id(r.cmd(line)), "{line}");
    }
    assert_eq!(w.cmd("HELLO 3 SETNAME a\nb"), r.cmd("HELLO 3 SETNAME a\nb"));
    assert_eq!(w.cmd("INFO nosuchsection"), r.cmd("INFO nosuchsection"));
    let info = w.cmd("INFO keyspace");
    assert!(
        info.starts_with(b"=") && text(&info).contains("\r\ntxt:# Keyspace\r\n"),
        "{}",
        text(&info)
    );
    assert_eq!(w.cmd("COMMAND DOCS"), b"%0\r\n");
    // COMMAND INFO: flags and categories are sets in RESP3; redis's first seven fields.
    for name in ["get", "set", "getex", "unlink", "client", "multi", "scan"] {
        let ours = elements(&w.cmd(&format!("COMMAND INFO {name}")));
        let theirs = elements(&r.cmd(&format!("COMMAND INFO {name}")));
        assert_eq!(elements(&ours[0])[..7], elements(&theirs[0])[..7], "{name}");
    }
    assert_eq!(w.cmd("COMMAND INFO nosuch"), r.cmd("COMMAND INFO nosuch"));
    // A pipeline whose answers come from both shards, some nil, across a switch of protocols:
    // each answered in the protocol of its time.
    let keys = keys_on_both_shards("p3", 2);
    let mut req = Vec::new();
    for line in [
        "HELLO 2",
        "GET {k0}",
        "MGET {k0} {k1} {k2} {k3}",
        "HELLO 3",
        "GET {k0}",
        "MGET {k0} {k1} {k2} {k3}",
        "SET {k1} v NX",
        "SET {k1} v NX",
    ] {
        let mut l = line.to_owned();
        for (i, k) in keys.iter().enumerate() {
            l = l.replace(&format!("{{k{i}}}"), k);
        }
        let args: Vec<&[u8]> = l.split(' ').map(str::as_bytes).collect();
        req.extend(encode(&args));
    }
    let answers = |c: &mut Client| {
        c.send(&req);
        (0..8).map(|_| mask_id_or(c.reply())).collect::<Vec<_>>()
    };
    fn mask_id_or(reply: Vec<u8>) -> String {
        let t = text(&reply);
        match t.find("$2\r\nid\r\n:") {
            Some(at) => {
                let at = at + 9;
                let end = at + t[at..].find("\r\n").unwrap();
                format!("{}N{}", &t[..at], &t[end..])
            }
            None => t,
        }
    }
    assert_eq!(answers(&mut w), answers(&mut r));
}

/// `SCRIPT_MORE` in RESP2 and RESP3, on a server of two shards and on one of one.
#[test]
fn more_commands_answer_as_redis_server() {
    let _serial = util::serial();
    let (_dir, redis, two) = beside_redis("kv-redis-more");
    let one = Server::weft_with("1", &[]);
    let mut diffs = Vec::new();
    for protocol in [2, 3] {
        let want = run_lines(redis.addr, protocol, SCRIPT_MORE);
        for (weft, shards) in [(&two, 2), (&one, 1)] {
            let got = run_lines(weft.addr, protocol, SCRIPT_MORE);
            assert_eq!(got.len(), want.len());
            let label = format!("RESP{protocol}, {shards} shards: ");
            diffs.extend(script_diffs(&label, SCRIPT_MORE, &want, &got));
        }
    }
    assert_same(&diffs);
}

/// What differs from one redis-server by design: SCAN and KEYS over both shards, CLIENT
/// LIST of every shard's connections, transactions refused across shards; and redis-cli's
/// `--scan` and `--bigkeys` complete.
#[test]
fn scan_keys_client_list_and_transactions_across_shards() {
    let _serial = util::serial();
    require_peer(Peer::Program("redis-cli"));
    let weft = Server::weft(&[]);
    let mut c = Client::connect(weft.addr);
    let keys = keys_on_both_shards("scan:", 300);
    let mut mset = vec![b"MSET".to_vec()];
    for k in &keys {
        mset.push(k.as_bytes().to_vec());
        mset.push(b"v".to_vec());
    }
    mset.push(b"other".to_vec());
    mset.push(b"v".to_vec());
    let args: Vec<&[u8]> = mset.iter().map(Vec::as_slice).collect();
    assert_eq!(c.call(&args), b"+OK\r\n");
    // SCAN until the cursor is 0 again: every key once, MATCH with case.
    let mut seen = std::collections::HashMap::<Vec<u8>, usize>::new();
    let mut cursor = b"0".to_vec();
    for round in 0.. {
        assert!(round < 10_000, "SCAN did not end");
        let reply = c.call(&[b"SCAN", &cursor, b"COUNT", b"7", b"MATCH", b"scan:*"]);
        let parts = elements(&reply);
        assert_eq!(parts.len(), 2, "{}", text(&reply));
        let next = parts[0].split(|&b| b == b'\n').nth(1).unwrap();
        cursor = next[..next.len() - 1].to_vec();
        for key in elements(&parts[1]) {
            *seen.entry(key).or_default() += 1;
        }
        if cursor == b"0" {
            break;
        }
    }
    assert_eq!(seen.len(), keys.len());
    assert!(seen.values().all(|&n| n == 1));
    assert_eq!(elements(&c.cmd("SCAN 0 MATCH SCAN:* COUNT 1000"))[1], b"*0\r\n");
    assert_eq!(elements(&c.cmd("SCAN 0 TYPE hash COUNT 1000"))[1], b"*0\r\n");
    assert_eq!(elements(&c.cmd("KEYS scan:*")).len(), keys.len());
    assert_eq!(elements(&c.cmd("KEYS *")).len(), keys.len() + 1);
    // CLIENT LIST: the connections of both shards, by id; CLIENT INFO: this one's.
    let others: Vec<Client> = (0..4).map(|_| Client::connect(weft.addr)).collect();
    assert_eq!(c.cmd("CLIENT SETNAME lister"), b"+OK\r\n");
    let id = text(&c.cmd("CLIENT ID"));
    let id = id.trim_start_matches(':').trim();
    // The others' accepts may lag their connects a little.
    let deadline = Instant::now() + Duration::from_secs(5);
    let list = loop {
        let list = text(&c.cmd("CLIENT LIST"));
        let n = list.lines().filter(|l| l.starts_with("id=")).count();
        if n == 1 + others.len() || Instant::now() >= deadline {
            break list;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let n = list.lines().filter(|l| l.starts_with("id=")).count();
    assert_eq!(n, 1 + others.len(), "{list}");
    assert!(list.contains(&format!("id={id} addr=127.0.0.1:")), "{list}");
    assert!(list.contains(" name=lister "), "{list}");
    let info = text(&c.cmd("CLIENT INFO"));
    assert!(
        info.contains(&format!("id={id} ")) && info.contains(" resp=2 "),
        "{info}"
    );
    assert_eq!(c.cmd("CLIENT SETINFO LIB-NAME weft-test"), b"+OK\r\n");
    assert!(text(&c.cmd(&format!("CLIENT LIST ID {id}"))).contains("lib-name=weft-test"));
    drop(others);
    // A transaction on keys of two shards is refused at EXEC, as Redis Cluster refuses
    // keys of two slots; with a hash tag it runs.
    let (k0, k1) = (&keys[0], &keys[keys.len() - 1]);
    assert_ne!(shard_of(k0), shard_of(k1));
    for line in ["MULTI", &format!("SET {k0} 1"), &format!("SET {k1} 1")] {
        c.cmd(line);
    }
    assert_eq!(
        c.cmd("EXEC"),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        c.cmd("GET other"),
        b"$1\r\nv\r\n",
        "nothing ran, no transaction left"
    );
    c.cmd("MULTI");
    c.cmd("DBSIZE");
    assert!(text(&c.cmd("EXEC")).starts_with("-CROSSSLOT "));
    // A pipelined transaction on one shard's keys (what redis-py's pipeline() sends).
    let mut req = encode(&[b"MULTI"]);
    for i in 0..100 {
        req.extend(encode(&[b"INCR", b"{user1}:n"]));
        req.extend(encode(&[
            b"APPEND",
            format!("{{user1}}:{}", i % 3).as_bytes(),
            b"x",
        ]));
    }
    req.extend(encode(&[b"EXEC"]));
    c.send(&req);
    assert_eq!(c.reply(), b"+OK\r\n");
    for _ in 0..200 {
        assert_eq!(c.reply(), b"+QUEUED\r\n");
    }
    let exec = elements(&c.reply());
    assert_eq!(exec.len(), 200);
    assert_eq!(exec[198], b":100\r\n");
    assert_eq!(c.cmd("GET {user1}:n"), b"$3\r\n100\r\n");
    assert_eq!(c.cmd("WATCH a").first(), Some(&b'-'));
    // redis-cli's key walks finish.
    let cli = |args: &[&str]| {
        let child = Command::new("redis-cli")
            .args(["-p", &weft.port()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = util::output_within(child, Duration::from_secs(30));
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let scanned = cli(&["--scan", "--pattern", "scan:*"]);
    assert_eq!(scanned.lines().count(), keys.len(), "{scanned}");
    let big = cli(&["--bigkeys"]);
    assert!(
        big.contains("keys with 6 bytes") || big.contains("Sampled"),
        "{big}"
    );
}

/// redis-py as an application uses it, with its defaults (redis-py 8: RESP3, `HELLO 3` and
/// `CLIENT SETINFO` on connect, `pipeline()` a transaction).
#[test]
fn redis_py_with_its_defaults() {
    let _serial = util::serial();
    require_peer(Peer::Python("redis"));
    let weft = Server::weft(&[]);
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), client_name="app")
assert r.set("a", "1") and r.get("a") == b"1" and r.get("nope") is None
assert r.mget("a", "b", "c", "d") == [b"1", None, None, None]
p = r.pipeline(transaction=False)
for i in range(20): p.set(f"k{i}", i)
p.get("k3"); p.incr("n"); p.expire("k1", 100); p.ttl("k1")
assert p.execute()[20:] == [b"3", 1, True, 100]
assert r.incr("n") == 2 and r.expire("a", 10) and r.ttl("a") == 10
assert r.getex("a", ex=50) == b"1" and r.ttl("a") == 50 and r.type("a") == b"string"
assert r.unlink("a", "zz") == 1
assert sorted(r.scan_iter(match="k1*", count=3)) == sorted(r.keys("k1*")) and len(r.keys("k1*")) == 11
info = r.info()
assert info["redis_version"] == "7.0.15" and info["role"] == "master" and info["db0"]["keys"] == 21
assert r.config_get("maxmemory*")["maxmemory-policy"] == "noeviction"
assert r.client_getname() == "app" and r.client_info()["resp"] == "3"
p = r.pipeline(); p.set("{u}a", 1); p.incr("{u}a"); p.get("{u}a")
assert p.execute() == [True, 2, b"2"]
r2 = redis.Redis(port=int(sys.argv[1]), protocol=2)
assert r2.get("nope") is None and r2.config_get("hz") == {"hz": "10"}
hello = r2.execute_command("HELLO")
assert hello[hello.index(b"proto") + 1] == 2
print("ok")
"#;
    let child = Command::new("python3")
        .args(["-c", script, &weft.port()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = util::output_within(child, Duration::from_secs(30));
    assert!(
        out.status.success() && out.stdout.starts_with(b"ok"),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn redis_cli_sees_the_same_answers() {
    let _serial = util::serial();
    require_peer(Peer::Program("redis-cli"));
    let (_dir, redis, weft) = beside_redis("kv-redis-cli");
    // redis-cli reads commands from stdin, splits them with its own quoting, and prints the
    // answers without a terminal's decoration.
    let input = format!(
        "{SCRIPT}\n",
        SCRIPT = SCRIPT
            .replace("ECHO hi", "ECHO \"hi there\" ")
            .replace("APPEND s world", "APPEND s \" w\\x6frld\"")
    );
    let cli = |server: &Server| {
        let mut child = Command::new("redis-cli")
            .args(["-p", &server.port()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = util::output_within(child, Duration::from_secs(20));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let want = cli(&redis);
    let got = cli(&weft);
    assert!(want.lines().count() > 100, "redis-cli printed: {want}");
    assert_eq!(got, want);
    // One command per redis-cli run, as a user types them.
    for args in [
        vec!["set", "greeting", "hello world"],
        vec!["get", "greeting"],
        vec!["mget", "greeting", "nope"],
        vec!["incr", "visits"],
        vec!["del", "greeting", "visits"],
        vec!["dbsize"],
        vec!["ping"],
        vec!["nosuchcommand", "x"],
    ] {
        let run = |server: &Server| {
            let out = Command::new("redis-cli")
                .args(["-p", &server.port()])
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                out.status.code(),
            )
        };
        assert_eq!(run(&weft), run(&redis), "redis-cli {args:?}");
    }
}

/// An array's elements, each a whole answer.
fn elements(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut r = BufReader::new(reply);
    let mut header = Vec::new();
    r.read_until(b'\n', &mut header).unwrap();
    assert_eq!(header[0], b'*', "not an array: {}", text(reply));
    let n: usize = text(&header[1..header.len() - 2]).parse().unwrap();
    (0..n).map(|_| read_reply(&mut r).unwrap()).collect()
}

#[test]
fn hello_info_and_command_have_redis_shapes() {
    let _serial = util::serial();
    let (_dir, redis, weft) = beside_redis("kv-redis-shapes");
    let mut r = Client::connect(redis.addr);
    let mut w = Client::connect(weft.addr);
    // HELLO 2: the same fourteen elements but the client id.
    let mask_id = |reply: Vec<u8>| {
        let mut e = elements(&reply);
        assert_eq!(e.len(), 14);
        assert_eq!(e[6], b"$2\r\nid\r\n");
        e[7] = b":N\r\n".to_vec();
        e
    };
    assert_eq!(mask_id(w.cmd("HELLO 2")), mask_id(r.cmd("HELLO 2")));
    assert_eq!(mask_id(w.cmd("HELLO")), mask_id(r.cmd("HELLO")));
    assert_eq!(w.cmd("HELLO 4"), r.cmd("HELLO 4"));
    // COMMAND DOCS: an array (empty: weft has no docs); COMMAND COUNT: an integer.
    assert_eq!(w.cmd("COMMAND DOCS"), b"*0\r\n");
    assert!(w.cmd("COMMAND COUNT").starts_with(b":"));
    // COMMAND INFO: redis's first seven fields, exactly.
    for name in ["get", "set", "mset", "del", "ping", "expire", "command"] {
        let ours = elements(&w.cmd(&format!("COMMAND INFO {name}")));
        let theirs = elements(&r.cmd(&format!("COMMAND INFO {name}")));
        assert_eq!(elements(&ours[0])[..7], elements(&theirs[0])[..7], "{name}");
    }
    assert_eq!(w.cmd("COMMAND INFO nosuch"), r.cmd("COMMAND INFO nosuch"));
    // INFO: the sections asked for, in redis's layout.
    w.cmd("SET a 1");
    w.cmd("SET b 2 EX 100");
    let info = text(&w.cmd("INFO"));
    for field in [
        "# Server\r\nredis_version:7.0.15\r\n",
        "\r\n\r\n# Clients\r\nconnected_clients:",
        "# Memory\r\nused_memory:",
        "maxmemory_policy:noeviction\r\n",
        "# Stats\r\n",
        "# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=",
        "weft_shards:2\r\n",
    ] {
        assert!(info.contains(field), "{field:?} in {info}");
    }
    let keyspace = w.cmd("INFO keyspace");
    assert!(text(&keyspace).starts_with("$"), "{}", text(&keyspace));
    assert!(text(&keyspace).contains("\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl="));
    assert_eq!(w.cmd("INFO nosuchsection"), r.cmd("INFO nosuchsection"));
    let both = text(&w.cmd("INFO keyspace server"));
    assert!(
        both.find("# Server") < both.find("# Keyspace"),
        "redis's order: {both}"
    );
    // What monitoring tools read, in the sections where redis has them.
    let info = text(&w.cmd("INFO"));
    let theirs = text(&r.cmd("INFO"));
    for (section, name) in [
        ("# Clients", "blocked_clients"),
        ("# Memory", "used_memory_rss"),
        ("# Memory", "used_memory_peak"),
        ("# Memory", "mem_fragmentation_ratio"),
        ("# Persistence", "loading"),
        ("# Stats", "total_commands_processed"),
        ("# Stats", "instantaneous_ops_per_sec"),
        ("# Stats", "rejected_connections"),
        ("# Replication", "role"),
        ("# CPU", "used_cpu_user"),
    ] {
        let field = format!("\r\n{name}:");
        for (who, text) in [("weft", &info), ("redis", &theirs)] {
            let at = text
                .find(&field)
                .unwrap_or_else(|| panic!("{who}: {name} in {text}"));
            let header = text[..at].rfind("# ").unwrap();
            assert!(
                text[header..].starts_with(section),
                "{who}: {name} under {section}"
            );
        }
    }
    assert!(info.contains("\r\nrole:master\r\n") && info.contains("\r\nloading:0\r\n"));
    assert!(info_field(&info, "total_commands_processed") >= 15, "{info}");
    assert!(info_field(&info, "used_memory_rss") > 1 << 20, "{info}");
    assert!(info_field(&info, "used_memory_peak") >= info_field(&info, "used_memory"));
    // redis-cli --stat prints figures, not the minimum of an integer it could not read.
    // (stdbuf: redis-cli buffers its output to a pipe, and is killed.)
    require_peer(Peer::Program("redis-cli"));
    require_peer(Peer::Program("stdbuf"));
    let mut stat = Command::new("stdbuf")
        .args(["-oL", "redis-cli", "-p", &weft.port(), "--stat", "-i", "0.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(700));
    stat.kill().unwrap();
    let out = util::output_within(stat, Duration::from_secs(5));
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("requests") && out.lines().count() >= 3, "{out}");
    assert!(!out.contains("-9223372036854775808"), "{out}");
}

/// Sends `input` and reads until the server closes or stays quiet for a while: what came
/// back, and whether it closed.
fn exchange(addr: SocketAddr, input: &[u8]) -> (Vec<u8>, bool) {
    let mut s = util::connect(addr);
    s.write_all(input).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return (out, false);
            }
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

#[test]
fn malformed_input_is_answered_as_redis_answers_it() {
    let _serial = util::serial();
    let (_dir, redis, weft) = beside_redis("kv-redis-bad");
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/resp");
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 40, "corpus missing");
    // Beyond the limits: a 70 KB line without its end, an endless count line, a long unknown
    // command's quoted arguments.
    inputs.push(("too_big_inline".into(), vec![b'a'; 70_000]));
    inputs.push((
        "too_big_mbulk_count".into(),
        [b"*".as_slice(), &[b'1'; 70_000]].concat(),
    ));
    inputs.push((
        "too_big_bulk_count".into(),
        [b"*1\r\n$".as_slice(), &[b'1'; 70_000]].concat(),
    ));
    let long: Vec<&[u8]> = vec![b"nosuch", &[b'x'; 100], &[b'y'; 100], b"z"];
    inputs.push(("unknown_long_args".into(), encode(&long)));
    let mut diffs = Vec::new();
    for (name, input) in &inputs {
        let want = exchange(redis.addr, input);
        let got = exchange(weft.addr, input);
        if got != want {
            diffs.push(format!(
                "{name}: redis {:?} closed={}, weft {:?} closed={}",
                text(&want.0),
                want.1,
                text(&got.0),
                got.1
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} differ:\n{}",
        diffs.len(),
        inputs.len(),
        diffs.join("\n")
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    util::rss_kib(pid)
}

#[test]
fn announced_lengths_are_not_allocated_and_connections_stay_bounded() {
    let _serial = util::serial();
    let weft = Server::weft(&[]);
    let before = rss_kib(weft.child.id());
    // Twenty connections each announce a 512 MB bulk and a 2^31-1 element array, and send a
    // little of it.
    let mut held = Vec::new();
    for i in 0..20 {
        let mut s = util::connect(weft.addr);
        if i % 2 == 0 {
            s.write_all(b"*2\r\n$3\r\nSET\r\n$536870912\r\nabc").unwrap();
        } else {
            s.write_all(b"*2147483647\r\n$1\r\na\r\n").unwrap();
        }
        held.push(s);
    }
    let mut c = Client::connect(weft.addr);
    assert_eq!(c.cmd("PING"), b"+PONG\r\n");
    let after = rss_kib(weft.child.id());
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // A bulk over 512 MB is refused as soon as it is announced.
    let (out, closed) = exchange(weft.addr, b"*1\r\n$536870913\r\n");
    assert_eq!(
        (text(&out).as_str(), closed),
        ("-ERR Protocol error: invalid bulk length\r\n", true)
    );
}

#[test]
fn answers_past_max_output_close_the_connection() {
    let _serial = util::serial();
    let big = vec![b'v'; 5 << 20];
    let ask = |addr: SocketAddr| {
        let mut c = Client::connect(addr);
        let keys = keys_on_both_shards("big", 1);
        for k in &keys {
            assert_eq!(c.call(&[b"SET", k.as_bytes(), &big]), b"+OK\r\n");
        }
        // Four 5 MiB answers asked for at once, read only later.
        let mut req = Vec::new();
        for _ in 0..2 {
            for k in &keys {
                req.extend(encode(&[b"GET", k.as_bytes()]));
            }
        }
        c.send(&req);
        thread::sleep(Duration::from_millis(300));
        let mut answers = 0;
        while let Ok(reply) = read_reply(&mut c.reader) {
            assert_eq!(reply.len(), (5 << 20) + 12);
            answers += 1;
            if answers == 4 {
                break;
            }
        }
        answers
    };
    // A cap of 4 MiB (the engine's default; kv's is the bulk limit + 4 MiB): the connection
    // is closed, the server goes on and says why at INFO.
    let mut weft = weft_process::Weft::serve(&[
        "--proto",
        "kv",
        "--cores",
        SHARDS,
        "--listen",
        "127.0.0.1:0",
        "--max-output",
        "4MiB",
    ]);
    let addr = weft.ready();
    assert!(ask(addr) < 4);
    assert_eq!(Client::connect(addr).cmd("PING"), b"+PONG\r\n");
    let line = weft.wait_for("reset: queued output passed max_output", Duration::from_secs(5));
    assert!(
        line.contains("INFO")
            && line.contains("1 connection reset: queued output passed max_output (4194304 bytes)"),
        "{line}"
    );
    // kv's default cap: every answer.
    let roomy = Server::weft(&[]);
    assert_eq!(ask(roomy.addr), 4);
}

#[test]
fn big_answers_reach_a_reading_client_whole() {
    let _serial = util::serial();
    // Under the default --max-output, both answers below are past the engine's 4 MiB; a
    // client that reads them gets them whole, as from redis.
    let weft = Server::weft(&[]);
    let mut c = Client::connect(weft.addr);
    // A value of 20 MiB built with APPEND, read back with GET.
    let chunk = vec![b'a'; 5 << 20];
    for i in 1..=4 {
        let want = format!(":{}\r\n", i * chunk.len());
        assert_eq!(text(&c.call(&[b"APPEND", b"big", &chunk])), want);
    }
    let got = c.cmd("GET big");
    assert_eq!(got.len(), (20 << 20) + 13);
    assert!(got.starts_with(b"$20971520\r\naaaa") && got.ends_with(b"aa\r\n"));
    // KEYS over 40,000 names of 120 bytes: an answer of about 5 MB.
    let name = |i: usize| format!("{i:0>120}");
    for batch in (0..40_000).collect::<Vec<_>>().chunks(1000) {
        let mut req = Vec::new();
        for &i in batch {
            req.extend(encode(&[b"SET", name(i).as_bytes(), b"v"]));
        }
        c.send(&req);
        for _ in batch {
            assert_eq!(c.reply(), b"+OK\r\n");
        }
    }
    let keys = c.cmd("KEYS *");
    assert!(keys.len() > 4 << 20, "{} bytes", keys.len());
    assert_eq!(elements(&keys).len(), 40_001);
    assert_eq!(c.cmd("PING"), b"+PONG\r\n");
}

#[test]
fn pipelined_answers_from_the_other_shard_stay_under_max_output() {
    let _serial = util::serial();
    // --max-output is then 5 MiB: room for any one value, not for eight of them at once.
    let weft = Server::weft(&["--kv-max-bulk", "1MiB"]);
    let mut c = Client::connect(weft.addr);
    // Eight 1 MiB values on each shard, each of its own byte; and a small one on each.
    let keys = keys_on_both_shards("v", 8);
    let value = |i: usize| vec![b'a' + i as u8; 1 << 20];
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.call(&[b"SET", k.as_bytes(), &value(i)]), b"+OK\r\n");
    }
    let small = keys_on_both_shards("small", 1);
    for k in &small {
        assert_eq!(c.call(&[b"SET", k.as_bytes(), b"s"]), b"+OK\r\n");
    }
    let (on0, on1) = keys.split_at(8);
    // Whichever shard the connection is on, one of these runs eight GETs of the other
    // shard's values in one call (they were all sent at once: 8 MiB of answers together,
    // reset), and one of them holds eight answers of this shard's values behind a GET on the
    // other shard (held together: reset).
    let pipelines: [Vec<&String>; 2] = [
        on0.iter().chain(on1).collect(),
        [&small[0]]
            .into_iter()
            .chain(on1)
            .chain([&small[1]])
            .chain(on0)
            .collect(),
    ];
    for pipeline in pipelines {
        let mut req = Vec::new();
        for k in &pipeline {
            req.extend(encode(&[b"GET", k.as_bytes()]));
        }
        c.send(&req);
        // A slow reader.
        thread::sleep(Duration::from_millis(300));
        for (n, k) in pipeline.iter().enumerate() {
            let want = match keys.iter().position(|key| key == *k) {
                Some(i) => [
                    format!("${}\r\n", 1 << 20).into_bytes(),
                    value(i),
                    b"\r\n".to_vec(),
                ]
                .concat(),
                None => b"$1\r\ns\r\n".to_vec(),
            };
            let got = read_reply(&mut c.reader).unwrap_or_else(|e| panic!("answer {n} ({k}): {e}"));
            assert!(
                got == want,
                "answer {n} ({k}): {} bytes, not its value",
                got.len()
            );
        }
    }
    assert_eq!(c.cmd("PING"), b"+PONG\r\n");
}

#[test]
fn transactions_are_bounded_in_bytes() {
    let _serial = util::serial();
    // The default bound, 64 MiB: a client queueing 1 MiB values is refused at the 64th,
    // the transaction is discarded, and the connection goes on.
    let weft = Server::weft(&[]);
    let mut c = Client::connect(weft.addr);
    assert_eq!(c.cmd("MULTI"), b"+OK\r\n");
    let value = vec![b'v'; 1 << 20];
    for i in 0..70 {
        c.send(&encode(&[b"SET", format!("{{t}}k{i}").as_bytes(), &value]));
    }
    let replies: Vec<String> = (0..70).map(|_| text(&c.reply())).collect();
    let refused: Vec<usize> = (0..70).filter(|&i| replies[i] != "+QUEUED\r\n").collect();
    assert_eq!(refused, [63], "{:?}", &replies[63]);
    assert!(
        replies[63].starts_with(
            "-ERR transaction too large: weft queues at most 67108864 bytes of commands after MULTI"
        ),
        "{}",
        replies[63]
    );
    assert_eq!(
        text(&c.cmd("EXEC")),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(c.cmd("EXISTS {t}k0"), b":0\r\n");
    assert_eq!(c.cmd("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmd("SET {t}k0 1"), b"+QUEUED\r\n");
    assert_eq!(c.cmd("EXEC"), b"*1\r\n+OK\r\n");
}

#[test]
fn the_kv_limit_flags_apply() {
    let _serial = util::serial();
    let weft = Server::weft(&[
        "--kv-max-bulk",
        "1MiB",
        "--kv-max-inline",
        "1KiB",
        "--kv-max-transaction",
        "4KiB",
        "--kv-max-request",
        "600KiB",
    ]);
    let mut c = Client::connect(weft.addr);
    assert_eq!(
        text(&c.cmd("CONFIG GET proto-max-bulk-len")),
        "*2\r\n$18\r\nproto-max-bulk-len\r\n$7\r\n1048576\r\n"
    );
    // APPEND stops at the bulk limit, as redis's does at proto-max-bulk-len.
    let half = vec![b'a'; 512 << 10];
    assert_eq!(c.call(&[b"APPEND", b"s", &half]), b":524288\r\n");
    assert_eq!(c.call(&[b"APPEND", b"s", &half]), b":1048576\r\n");
    assert_eq!(
        text(&c.cmd("APPEND s x")),
        "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
    );
    // A transaction past 4 KiB.
    assert_eq!(c.cmd("MULTI"), b"+OK\r\n");
    let refused = text(&c.call(&[b"SET", b"k", &[b'v'; 5000]]));
    assert!(refused.contains("at most 4096 bytes"), "{refused}");
    assert!(text(&c.cmd("EXEC")).starts_with("-EXECABORT"));
    // Requests past the parser's limits.
    let (out, closed) = exchange(weft.addr, b"*2\r\n$3\r\nGET\r\n$1048577\r\n");
    assert_eq!(
        (text(&out).as_str(), closed),
        ("-ERR Protocol error: invalid bulk length\r\n", true)
    );
    let (out, closed) = exchange(weft.addr, &[b'x'; 2000]);
    assert_eq!(
        (text(&out).as_str(), closed),
        ("-ERR Protocol error: too big inline request\r\n", true)
    );
    // Under the bulk limit, over the request limit: closed without an answer, as redis frees
    // a client past client-query-buffer-limit.
    let mut big = b"*2\r\n$3\r\nGET\r\n$716800\r\n".to_vec();
    big.extend(vec![b'k'; 700 << 10]);
    let (out, closed) = exchange(weft.addr, &big);
    assert_eq!((text(&out).as_str(), closed), ("", true));
}

/// The shard (of two) that owns `key`, as weft places keys (Redis Cluster's slots).
fn shard_of(key: &str) -> usize {
    weft::kv::route::shard_of(key.as_bytes(), 2)
}

/// Keys named `prefix{i}`, `count` of them on each of the two shards.
fn keys_on_both_shards(prefix: &str, count: usize) -> Vec<String> {
    let (mut on0, mut on1) = (Vec::new(), Vec::new());
    for i in 0..10_000 {
        let k = format!("{prefix}{i}");
        match shard_of(&k) {
            0 if on0.len() < count => on0.push(k),
            1 if on1.len() < count => on1.push(k),
            _ => {}
        }
        if on0.len() == count && on1.len() == count {
            break;
        }
    }
    on0.into_iter().chain(on1).collect()
}

#[test]
fn a_hundred_connections_on_two_shards_agree() {
    let _serial = util::serial();
    let weft = Server::weft(&[]);
    let mut conns: Vec<Client> = (0..100).map(|_| Client::connect(weft.addr)).collect();
    // A SET on one connection is read by every other, whichever shard owns the key.
    for key in keys_on_both_shards("shared", 2) {
        assert_eq!(conns[0].cmd(&format!("SET {key} value-of-{key}")), b"+OK\r\n");
        for c in &mut conns[1..] {
            let want = format!("${}\r\nvalue-of-{key}\r\n", format!("value-of-{key}").len());
            assert_eq!(text(&c.cmd(&format!("GET {key}"))), want);
        }
    }
    // INCR from every connection at once sums exactly, on a key of each shard.
    let counters = keys_on_both_shards("counter", 1);
    let barrier = Arc::new(Barrier::new(conns.len()));
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let barrier = barrier.clone();
            let counters = counters.clone();
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..50 {
                    // Pipelined: both counters, then both answers.
                    let mut req = Vec::new();
                    for k in &counters {
                        req.extend(encode(&[b"INCR", k.as_bytes()]));
                    }
                    c.send(&req);
                    for _ in &counters {
                        assert!(c.reply().starts_with(b":"));
                    }
                }
                c
            })
        })
        .collect();
    let mut conns: Vec<Client> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for k in &counters {
        assert_eq!(conns[7].cmd(&format!("GET {k}")), b"$4\r\n5000\r\n", "{k}");
    }
    // MSET on keys of both shards, from every connection with its own values; each reads
    // its own back with MGET, and the last one's values win everywhere.
    let keys = keys_on_both_shards("multi", 3);
    let handles: Vec<_> = conns
        .drain(..)
        .enumerate()
        .map(|(i, mut c)| {
            let keys = keys.clone();
            thread::spawn(move || {
                let mut mset = vec!["MSET".to_owned()];
                let mut own = Vec::new();
                for k in &keys {
                    mset.push(format!("own{i}:{k}"));
                    mset.push(format!("v{i}"));
                    own.push(format!("own{i}:{k}"));
                }
                let args: Vec<&[u8]> = mset.iter().map(|a| a.as_bytes()).collect();
                assert_eq!(c.call(&args), b"+OK\r\n");
                let mut mget = vec![b"MGET".as_slice()];
                mget.extend(own.iter().map(|k| k.as_bytes()));
                let want: Vec<u8> = format!("*{}\r\n", own.len())
                    .into_bytes()
                    .into_iter()
                    .chain(
                        own.iter()
                            .flat_map(|_| format!("${}\r\nv{i}\r\n", format!("v{i}").len()).into_bytes()),
                    )
                    .collect();
                assert_eq!(text(&c.call(&mget)), text(&want));
                c
            })
        })
        .collect();
    let mut conns: Vec<Client> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut c = conns.pop().unwrap();
    // Every key of every connection: 100 connections × 6 keys, plus the shared and counters.
    assert_eq!(c.cmd("DBSIZE"), b":606\r\n");
    let mut exists = vec![b"EXISTS".to_vec()];
    exists.extend((0..100).flat_map(|i| keys.iter().map(move |k| format!("own{i}:{k}").into_bytes())));
    let args: Vec<&[u8]> = exists.iter().map(Vec::as_slice).collect();
    assert_eq!(c.call(&args), b":600\r\n");
    let mut del = vec![b"DEL".as_slice()];
    del.extend(args[1..].iter().copied());
    assert_eq!(c.call(&del), b":600\r\n");
    assert_eq!(c.cmd("DBSIZE"), b":6\r\n");
}

#[test]
fn pipelines_of_a_thousand_mixed_commands_come_back_in_order() {
    let _serial = util::serial();
    let weft = Server::weft(&[]);
    let handles: Vec<_> = (0..8)
        .map(|conn| {
            let addr = weft.addr;
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut req = Vec::new();
                let mut want = Vec::new();
                let mut counter = 0;
                for i in 0..1000 {
                    let key = format!("p{conn}:{}", i % 37);
                    let (args, answer): (Vec<String>, String) = match i % 6 {
                        0 => (vec!["SET".into(), key.clone(), format!("v{i}")], "+OK\r\n".into()),
                        1 => {
                            let v = format!("v{}", i - 1);
                            (
                                vec!["GET".into(), format!("p{conn}:{}", (i - 1) % 37)],
                                format!("${}\r\n{v}\r\n", v.len()),
                            )
                        }
                        2 => {
                            counter += 1;
                            (
                                vec!["INCR".into(), format!("p{conn}:ctr")],
                                format!(":{counter}\r\n"),
                            )
                        }
                        3 => (
                            vec!["ECHO".into(), format!("e{i}")],
                            format!("${}\r\ne{i}\r\n", format!("e{i}").len()),
                        ),
                        4 => (
                            vec![
                                "MGET".into(),
                                format!("p{conn}:fresh{i}"),
                                format!("p{conn}:nope{i}"),
                            ],
                            "*2\r\n$-1\r\n$-1\r\n".into(),
                        ),
                        _ => (vec!["EXISTS".into(), format!("p{conn}:ctr")], ":1\r\n".into()),
                    };
                    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                    req.extend(encode(&refs));
                    want.push(answer);
                }
                c.send(&req);
                for (i, w) in want.iter().enumerate() {
                    assert_eq!(text(&c.reply()), *w, "connection {conn}, command {i}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // A FLUSHALL in a pipeline is not overtaken by the commands after it, nor overtakes those
    // before it.
    let mut c = Client::connect(weft.addr);
    let keys = keys_on_both_shards("order", 2);
    let mut req = encode(&[b"FLUSHALL"]);
    for k in &keys {
        req.extend(encode(&[b"SET", k.as_bytes(), b"1"]));
    }
    req.extend(encode(&[b"DBSIZE"]));
    req.extend(encode(&[b"FLUSHALL"]));
    for k in &keys {
        req.extend(encode(&[b"GET", k.as_bytes()]));
    }
    req.extend(encode(&[b"DBSIZE"]));
    c.send(&req);
    let answers: Vec<String> = (0..keys.len() * 2 + 4).map(|_| text(&c.reply())).collect();
    let mut want = vec!["+OK\r\n".to_owned()];
    want.extend(keys.iter().map(|_| "+OK\r\n".to_owned()));
    want.push(":4\r\n".into());
    want.push("+OK\r\n".into());
    want.extend(keys.iter().map(|_| "$-1\r\n".to_owned()));
    want.push(":0\r\n".into());
    assert_eq!(answers, want);
}

#[test]
fn keys_expire_lazily_and_by_the_sweep() {
    let _serial = util::serial();
    let weft = Server::weft(&[]);
    let mut c = Client::connect(weft.addr);
    let keys = keys_on_both_shards("exp", 200);
    let mut req = Vec::new();
    for k in &keys {
        req.extend(encode(&[b"SET", k.as_bytes(), b"v", b"PX", b"100"]));
    }
    req.extend(encode(&[b"SET", b"lasting", b"v", b"EX", b"100"]));
    c.send(&req);
    for _ in 0..=keys.len() {
        assert_eq!(c.reply(), b"+OK\r\n");
    }
    assert_eq!(c.cmd("DBSIZE"), b":401\r\n");
    // Nothing touches the keys: the sweep of each shard removes them.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = c.cmd("DBSIZE");
        if n == b":1\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "still {} keys after 5 s", text(&n));
        thread::sleep(Duration::from_millis(50));
    }
    let info = text(&c.cmd("INFO stats"));
    assert!(info.contains("expired_keys:400\r\n"), "{info}");
    // Lazy: a key read after its time is gone, even before a sweep.
    assert_eq!(c.cmd("SET soon v PX 30"), b"+OK\r\n");
    thread::sleep(Duration::from_millis(60));
    assert_eq!(c.cmd("GET soon"), b"$-1\r\n");
    assert_eq!(c.cmd("TTL soon"), b":-2\r\n");
    // Rounded as redis rounds: 100 until half a second has gone by (a loaded machine may
    // take that long over the lines above).
    let ttl = c.cmd("TTL lasting");
    assert!(
        ttl == b":100\r\n" || ttl == b":99\r\n",
        "{}",
        String::from_utf8_lossy(&ttl)
    );
}

/// Keys written with a short TTL and never touched again: the sweep keeps up with far more
/// than a fixed number of samples a second (redis's adaptive active expiry), and the shard
/// keeps answering meanwhile.
#[test]
fn the_sweep_keeps_up_with_many_expiring_keys() {
    let _serial = util::serial();
    let weft = Server::weft(&[]);
    let mut c = Client::connect(weft.addr);
    const KEYS: usize = 100_000;
    const BATCH: usize = 1_000;
    for b in 0..KEYS / BATCH {
        let mut req = Vec::new();
        for i in 0..BATCH {
            let key = format!("ttl:{}", b * BATCH + i);
            req.extend(encode(&[b"SET", key.as_bytes(), b"v", b"PX", b"100"]));
        }
        c.send(&req);
        for _ in 0..BATCH {
            assert_eq!(c.reply(), b"+OK\r\n");
        }
    }
    // A sweep of 20 keys x 16 rounds, 10 times a second, removed 3,200 keys a second per
    // shard: 100k keys took half a minute. Now they go within a few seconds (generous bound).
    let started = Instant::now();
    let deadline = started + Duration::from_secs(6);
    let mut slowest_ping = Duration::ZERO;
    let left = loop {
        let asked = Instant::now();
        assert_eq!(c.cmd("PING"), b"+PONG\r\n");
        slowest_ping = slowest_ping.max(asked.elapsed());
        let n = text(&c.cmd("DBSIZE"));
        if n == ":0\r\n" || Instant::now() >= deadline {
            break n;
        }
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "{KEYS} keys PX 100: DBSIZE {} after {:?}, slowest PING {slowest_ping:?}",
        left.trim(),
        started.elapsed()
    );
    assert_eq!(left, ":0\r\n", "keys left after {:?}", started.elapsed());
    // The sweep gives the shard back between its rounds: PING never waits long.
    assert!(slowest_ping < Duration::from_secs(1), "{slowest_ping:?}");
    let info = text(&c.cmd("INFO stats"));
    assert!(info.contains(&format!("expired_keys:{KEYS}\r\n")), "{info}");
}

#[test]
fn maxmemory_noeviction_refuses_writes() {
    let _serial = util::serial();
    // 256 KiB over two shards: 128 KiB each.
    let weft = Server::weft(&["--maxmemory", "256KiB", "--maxmemory-policy", "noeviction"]);
    let mut c = Client::connect(weft.addr);
    let value = "x".repeat(1000);
    let mut refused = 0;
    let mut written = Vec::new();
    // Redis's words, then which shard refused and its share.
    let oom = b"-OOM command not allowed when used memory > 'maxmemory'. The key's shard (";
    for i in 0..1000 {
        let key = format!("fill{i}");
        let reply = c.call(&[b"SET", key.as_bytes(), value.as_bytes()]);
        match reply.as_slice() {
            b"+OK\r\n" => written.push(key),
            r if r.starts_with(oom) => refused += 1,
            other => panic!("{}", text(other)),
        }
    }
    // Both shards filled up: about 256 KiB / (1000 + 64 + key) per key, then refusals.
    assert!((230..260).contains(&written.len()), "{} written", written.len());
    assert!(refused > 700, "{refused} refused");
    let refusal = text(&c.cmd("INCR fill0"));
    assert!(refusal.as_bytes().starts_with(oom), "{refusal}");
    assert!(refusal.contains(" of 2) holds "), "{refusal}");
    assert!(
        refusal.contains("over its share of maxmemory, 131072 bytes"),
        "{refusal}"
    );
    // INFO says the same: each shard's share, and the fullest shard past it.
    let info = text(&c.cmd("INFO memory"));
    assert!(info.contains("weft_maxmemory_per_shard:131072\r\n"), "{info}");
    assert!(
        info_field(&info, "weft_used_memory_fullest_shard") > 131_072,
        "{info}"
    );
    // Reads and deletes still run, and free room.
    assert_eq!(c.call(&[b"GET", written[0].as_bytes()]).len(), 1000 + 9);
    let mut del = vec![b"DEL".as_slice()];
    del.extend(written.iter().map(|k| k.as_bytes()));
    assert_eq!(text(&c.call(&del)), format!(":{}\r\n", written.len()));
    assert_eq!(c.call(&[b"SET", b"again", value.as_bytes()]), b"+OK\r\n");
    let info = text(&c.cmd("INFO memory"));
    assert!(
        info.contains("maxmemory:262144\r\n") && info.contains("maxmemory_policy:noeviction\r\n"),
        "{info}"
    );
}

/// A weft server with `--maxmemory 256KiB` under `policy`, and its `--metrics` address.
fn weft_with_metrics(policy: &str) -> (Server, SocketAddr) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let args = [
        "--maxmemory",
        "256KiB",
        "--maxmemory-policy",
        policy,
        "--metrics",
        &metrics,
    ];
    (Server::weft(&args), metrics.parse().unwrap())
}

/// The field `name` of an `INFO` answer.
fn info_field(info: &str, name: &str) -> u64 {
    let prefix = format!("{name}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// Scrapes `at` until `done` holds for the body (the shards report once a second): the body.
fn scrape_until(at: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = util::scrape(at);
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The sum over shards of the series `name` (with a label containing `with`), or 0.
fn series(body: &str, name: &str, with: &str) -> u64 {
    util::scraped(body, name, with).unwrap_or(0.0) as u64
}

#[test]
fn metrics_show_what_info_counts() {
    let _serial = util::serial();
    require_peer(Peer::Program("promtool"));
    let (weft, at) = weft_with_metrics("noeviction");
    let mut c = Client::connect(weft.addr);
    // Three keys that expire at once, read after they did: three expiries, three misses.
    for k in ["gone1", "gone2", "gone3"] {
        assert_eq!(c.call(&[b"SET", k.as_bytes(), b"v", b"PX", b"1"]), b"+OK\r\n");
    }
    thread::sleep(Duration::from_millis(20));
    for k in ["gone1", "gone2", "gone3"] {
        assert_eq!(c.call(&[b"GET", k.as_bytes()]), b"$-1\r\n");
    }
    // Fill both shards' memory until writes are refused.
    let value = "x".repeat(1000);
    let mut refused = 0;
    for i in 0..400 {
        let reply = c.call(&[b"SET", format!("fill{i}").as_bytes(), value.as_bytes()]);
        if reply.starts_with(b"-OOM") {
            refused += 1;
        }
    }
    assert!(refused > 100, "{refused} refused");
    assert_eq!(c.call(&[b"GET", b"fill0"]).len(), 1000 + 9);
    let keys: u64 = text(&c.cmd("DBSIZE"))[1..].trim().parse().unwrap();
    let info = text(&c.cmd("INFO"));

    let body = scrape_until(at, |b| {
        series(b, "weft_kv_keys", "") == keys
            && series(b, "weft_kv_oom_refusals_total", "") == refused
            && series(b, "weft_kv_commands_total", "family=\"server\"") == 2
    });
    assert_eq!(series(&body, "weft_kv_keys", ""), keys, "{body}");
    assert_eq!(
        series(&body, "weft_kv_used_memory_bytes", ""),
        info_field(&info, "used_memory"),
        "{body}"
    );
    assert_eq!(series(&body, "weft_kv_maxmemory_bytes", ""), 262_144);
    assert_eq!(series(&body, "weft_kv_expired_keys_total", ""), 3);
    assert_eq!(info_field(&info, "expired_keys"), 3);
    assert_eq!(series(&body, "weft_kv_evicted_keys_total", ""), 0);
    assert_eq!(series(&body, "weft_kv_oom_refusals_total", ""), refused);
    assert_eq!(
        series(&body, "weft_kv_keyspace_hits_total", ""),
        info_field(&info, "keyspace_hits")
    );
    assert_eq!(
        series(&body, "weft_kv_keyspace_misses_total", ""),
        info_field(&info, "keyspace_misses")
    );
    let commands = |family: &str| series(&body, "weft_kv_commands_total", &format!("family=\"{family}\""));
    assert_eq!(commands("write"), 3 + 400, "{body}");
    assert_eq!(commands("read"), 3 + 1);
    assert_eq!((commands("server"), commands("connection")), (2, 0));
    for family in [
        "# TYPE weft_kv_commands_total counter",
        "# TYPE weft_kv_keys gauge",
    ] {
        assert!(body.contains(family), "{family}: {body}");
    }
    assert!(body.contains("weft_kv_keys{shard=\"1\"} "), "per shard: {body}");
    util::promtool_check(&body);
}

#[test]
fn maxmemory_allkeys_lru_evicts() {
    let _serial = util::serial();
    let (weft, metrics) = weft_with_metrics("allkeys-lru");
    let mut c = Client::connect(weft.addr);
    let value = "x".repeat(1000);
    // A hot key on each shard, read between writes.
    let hot = keys_on_both_shards("hot", 1);
    for k in &hot {
        assert_eq!(c.call(&[b"SET", k.as_bytes(), b"keep"]), b"+OK\r\n");
    }
    let mut req = Vec::new();
    for i in 0..2000 {
        req.extend(encode(&[b"SET", format!("lru{i}").as_bytes(), value.as_bytes()]));
        for k in &hot {
            req.extend(encode(&[b"GET", k.as_bytes()]));
        }
    }
    c.send(&req);
    for i in 0..2000 {
        assert_eq!(c.reply(), b"+OK\r\n", "write {i} never refused");
        for _ in &hot {
            assert_eq!(c.reply(), b"$4\r\nkeep\r\n", "the hot keys stay");
        }
    }
    let keys: i64 = text(&c.cmd("DBSIZE"))[1..].trim().parse().unwrap();
    assert!((200..300).contains(&keys), "{keys} keys left in 256 KiB");
    let info = text(&c.cmd("INFO"));
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(used <= 262_144 + 2 * 1100, "used_memory {used}");
    assert!(info.contains("maxmemory_policy:allkeys-lru\r\n"), "{info}");
    let evicted: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(evicted >= 1700, "{evicted} evicted");
    let body = scrape_until(metrics, |b| {
        series(b, "weft_kv_evicted_keys_total", "") == evicted
    });
    assert_eq!(series(&body, "weft_kv_evicted_keys_total", ""), evicted, "{body}");
    assert_eq!(series(&body, "weft_kv_keys", ""), keys as u64);
}

#[test]
fn drain_answers_pipelined_cross_shard_commands() {
    let _serial = util::serial();
    let weft = Server::weft(&[]);
    let keys = keys_on_both_shards("drain", 20);
    let mut conns: Vec<(Client, usize)> = Vec::new();
    for conn in 0..20 {
        let mut c = Client::connect(weft.addr);
        let mut req = Vec::new();
        let mut count = 0;
        // About 12 KB: the server reads it at once.
        for i in 0..150 {
            let k = &keys[(conn + i) % keys.len()];
            match i % 3 {
                0 => req.extend(encode(&[b"INCR", k.as_bytes()])),
                1 => req.extend(encode(&[b"GET", k.as_bytes()])),
                _ => req.extend(encode(&[
                    b"MGET",
                    k.as_bytes(),
                    keys[(i * 7) % keys.len()].as_bytes(),
                ])),
            }
            count += 1;
        }
        c.send(&req);
        conns.push((c, count));
    }
    // Every connection's first answer is back: its pipeline is read; many calls are in flight.
    for (c, _) in &mut conns {
        let first = c.reply();
        assert!(first.starts_with(b":"), "{}", text(&first));
    }
    weft.signal(libc::SIGTERM);
    for (i, (c, count)) in conns.iter_mut().enumerate() {
        for n in 1..*count {
            let reply = read_reply(&mut c.reader)
                .unwrap_or_else(|e| panic!("connection {i}: answer {n} of {count} lost: {e}"));
            assert!(!reply.starts_with(b"-"), "{}", text(&reply));
        }
        let mut rest = Vec::new();
        assert_eq!(c.reader.read_to_end(&mut rest).unwrap(), 0, "then the close");
    }
    let mut weft = weft;
    let status = wait_exit(&mut weft.child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

#[test]
fn redis_benchmark_runs_clean() {
    let _serial = util::serial();
    require_peer(Peer::Program("redis-benchmark"));
    let weft = Server::weft(&[]);
    let child = Command::new("redis-benchmark")
        .args(["-p", &weft.port(), "-t", "set,get", "-n", "100000", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = util::output_within(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for test in ["SET: ", "GET: "] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(test) && l.contains("requests per second")),
            "{test} missing: {stdout}"
        );
    }
    let all = format!("{stdout}{stderr}").to_lowercase();
    assert!(
        !all.contains("error") && !all.contains("err "),
        "{stdout}\n{stderr}"
    );
    let mut c = Client::connect(weft.addr);
    // Its SETs stored their 3-byte value under its one key.
    assert!(c.cmd("GET key:__rand_int__").starts_with(b"$3\r\n"));
}
