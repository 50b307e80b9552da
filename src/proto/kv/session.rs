//! A connection's own commands, which touch no key: `PING`, `ECHO`, `QUIT`, `SELECT`,
//! `HELLO`, `AUTH`, `COMMAND`, `CONFIG GET`, `CONFIG HELP`, `CLIENT`, `TIME`, and the
//! bookkeeping of `MULTI` / `DISCARD` (the queued commands run at `EXEC`, by the protocol).

use crate::proto::kv::command::{
    COMMANDS, ClientQuery, Command, CommandQuery, NOT_AN_INTEGER, Spec, is_client_text,
};
use crate::proto::resp::{Reply, RespVersion};

/// The redis-server version whose behaviour the kv server follows, reported by `HELLO` and
/// `INFO`.
pub const REDIS_VERSION: &str = "7.0.15";

/// What a session's commands may tell about the server.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    /// The settings `CONFIG GET` reports, in order: `(name, value)`.
    pub config: Vec<(String, String)>,
}

/// One connection's state.
#[derive(Debug, Clone, Default)]
pub struct Session {
    id: u64,
    name: Option<Vec<u8>>,
    protocol: RespVersion,
    /// `CLIENT SETINFO LIB-NAME` and `LIB-VER`.
    lib: (Vec<u8>, Vec<u8>),
    /// The peer's and the local address, as `CLIENT INFO` shows them.
    addrs: (String, String),
    /// When the connection came and when it last sent a command (Unix milliseconds).
    created_ms: i64,
    last_ms: i64,
    /// Inside `MULTI`: the commands queued, and whether one was refused (EXEC then aborts).
    transaction: Option<Transaction>,
}

/// Most commands one transaction may queue: past it the transaction is refused (redis has no
/// such limit; real transactions are far smaller). Their bytes are bounded too:
/// [`MAX_QUEUED_BYTES`] by default.
pub const MAX_QUEUED: usize = 10_000;

/// Most bytes the commands one transaction queues may hold by default (each argument's bytes
/// plus [`ARG_OVERHEAD`](crate::proto::resp::ARG_OVERHEAD), as the request limit counts them): past it the transaction is
/// refused, so that a client cannot hold more than this in a shard's memory inside `MULTI`,
/// outside `--maxmemory` (redis has no such limit).
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// The answer to the command past [`MAX_QUEUED`].
const TOO_MANY_QUEUED: &str =
    "ERR transaction too large: weft queues at most 10000 commands after MULTI (EXEC will abort)";

/// The answer to the command that would take a transaction's queued bytes past `max`.
fn too_many_bytes(max: usize) -> Reply {
    Reply::err(format!(
        "transaction too large: weft queues at most {max} bytes of commands after MULTI (EXEC \
         will abort; send large values outside MULTI, or raise the server's --kv-max-transaction)"
    ))
}

/// The commands queued since `MULTI`.
#[derive(Debug, Clone, Default)]
struct Transaction {
    queued: Vec<Command>,
    /// Their bytes, as [`Session::queue`] was told them.
    bytes: usize,
    /// A command was refused: `EXEC` aborts, and nothing more is kept.
    failed: bool,
}

impl Transaction {
    /// Refuses the transaction: `EXEC` will abort, so its commands go now.
    fn fail(&mut self) {
        self.failed = true;
        self.queued = Vec::new();
        self.bytes = 0;
    }
}

/// `CONFIG HELP`'s lines, as redis 7.0 gives them.
const CONFIG_HELP: [&str; 11] = [
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Prints this help.",
];

/// What the connection does after a command of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer, and go on.
    Reply(Reply),
    /// Answer, then close (`QUIT`).
    ReplyAndClose(Reply),
    /// Close without an answer.
    Close,
}

impl Session {
    /// A session with the client id `id` (what `HELLO` reports).
    pub fn new(id: u64) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    /// The connection's peer and local addresses, and the time it came (Unix milliseconds).
    pub fn connected(&mut self, peer: String, local: String, now_ms: i64) {
        self.addrs = (peer, local);
        self.created_ms = now_ms;
        self.last_ms = now_ms;
    }

    /// A command arrived at `now_ms` (for `CLIENT INFO`'s idle time).
    pub fn active(&mut self, now_ms: i64) {
        self.last_ms = now_ms;
    }

    /// True inside `MULTI`.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Inside `MULTI`, queues a command that [queues](Command::queues), of `bytes` bytes (its
    /// request's), and answers `+QUEUED`; otherwise gives the command back, to run now. A
    /// command past [`MAX_QUEUED`] commands, or past `max_bytes` bytes queued, is refused with
    /// an error and the transaction with it (`EXEC` aborts); after a refusal, commands answer
    /// `+QUEUED` as redis answers them, and are dropped.
    pub fn queue(&mut self, cmd: Command, bytes: usize, max_bytes: usize) -> Result<Reply, Command> {
        let Some(t) = self.transaction.as_mut().filter(|_| cmd.queues()) else {
            return Err(cmd);
        };
        if t.failed {
            return Ok(Reply::Status("QUEUED".into()));
        }
        if t.queued.len() >= MAX_QUEUED {
            t.fail();
            return Ok(Reply::error(TOO_MANY_QUEUED));
        }
        if t.bytes.saturating_add(bytes) > max_bytes {
            t.fail();
            return Ok(too_many_bytes(max_bytes));
        }
        t.bytes += bytes;
        t.queued.push(cmd);
        Ok(Reply::Status("QUEUED".into()))
    }

    /// `EXEC`: the queued commands, ending the transaction; or the error redis gives
    /// (without `MULTI`, or after a refused command).
    pub fn take_transaction(&mut self) -> Result<Vec<Command>, Reply> {
        match self.transaction.take() {
            None => Err(Reply::error("ERR EXEC without MULTI")),
            Some(t) if t.failed => Err(Reply::error(
                "EXECABORT Transaction discarded because of previous errors.",
            )),
            Some(t) => Ok(t.queued),
        }
    }

    /// The connection's line in `CLIENT INFO` and `CLIENT LIST` (redis's fields that weft
    /// knows, in redis's order, and 7.2's `lib-name` / `lib-ver`), at `now_ms`.
    pub fn client_line(&self, now_ms: i64) -> String {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let multi = self.transaction.as_ref().map_or(-1, |t| t.queued.len() as i64);
        format!(
            "id={} addr={} laddr={} name={} age={} idle={} flags={} db=0 sub=0 psub=0 ssub=0 \
             multi={multi} user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.addrs.0,
            self.addrs.1,
            text(self.name.as_deref().unwrap_or_default()),
            (now_ms - self.created_ms).max(0) / 1000,
            (now_ms - self.last_ms).max(0) / 1000,
            if self.transaction.is_some() { "x" } else { "N" },
            self.protocol.version(),
            text(&self.lib.0),
            text(&self.lib.1),
        )
    }

    /// The protocol the connection speaks (RESP2 until `HELLO 3`).
    pub fn protocol(&self) -> RespVersion {
        self.protocol
    }

    /// Sets the client name as redis's `clientSetName`: an empty name removes it; a name
    /// with spaces, newlines or other bytes outside `!`..`~` is refused.
    fn set_name(&mut self, name: Vec<u8>) -> Result<(), Reply> {
        if !is_client_text(&name) {
            return Err(Reply::error(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        self.name = (!name.is_empty()).then_some(name);
        Ok(())
    }

    /// The client id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name set with `HELLO ... SETNAME`.
    pub fn name(&self) -> Option<&[u8]> {
        self.name.as_deref()
    }

    /// Runs a command of the connection's own ([`Target::Connection`](
    /// crate::proto::kv::command::Target::Connection)) at `now_ms`; others answer an error.
    pub fn execute(&mut self, cmd: Command, facts: &ServerFacts, now_ms: i64) -> Outcome {
        Outcome::Reply(match cmd {
            Command::Ping(None) => Reply::Status("PONG".into()),
            Command::Ping(Some(msg)) | Command::Echo(msg) => Reply::Bulk(msg),
            Command::Quit => return Outcome::ReplyAndClose(Reply::OK),
            Command::Refuse => return Outcome::Close,
            Command::Select(db) if i32::try_from(db).is_err() => NOT_AN_INTEGER,
            Command::Select(0) => Reply::OK,
            Command::Select(_) => Reply::error("ERR DB index is out of range"),
            Command::Auth { user: None } => Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            ),
            Command::Auth { user: Some(user) } => auth(&user).unwrap_or(Reply::OK),
            Command::Hello {
                version,
                auth: creds,
                name,
            } => {
                // As redis: authenticate, then name, then switch protocols.
                if let Some(error) = creds.and_then(|(user, _)| auth(&user)) {
                    return Outcome::Reply(error);
                }
                if let Some(Err(error)) = name.map(|n| self.set_name(n)) {
                    return Outcome::Reply(error);
                }
                match version {
                    Some(3) => self.protocol = RespVersion::Resp3,
                    Some(2) => self.protocol = RespVersion::Resp2,
                    _ => {}
                }
                self.hello()
            }
            Command::Command(query) => command_reply(query),
            Command::ConfigGet(patterns) => config_get(&patterns, facts),
            Command::ConfigHelp => {
                Reply::Array(CONFIG_HELP.iter().map(|l| Reply::Status((*l).into())).collect())
            }
            Command::Client(query) => self.client(query, now_ms),
            // The read's time, to the millisecond (the core reads no clock).
            Command::Time => Reply::Array(vec![
                Reply::bulk(now_ms.div_euclid(1000).to_string()),
                Reply::bulk((now_ms.rem_euclid(1000) * 1000).to_string()),
            ]),
            Command::Multi if self.transaction.is_some() => Reply::error("ERR MULTI calls can not be nested"),
            Command::Multi => {
                self.transaction = Some(Transaction::default());
                Reply::OK
            }
            Command::Discard => match self.transaction.take() {
                Some(_) => Reply::OK,
                None => Reply::error("ERR DISCARD without MULTI"),
            },
            Command::Watch if self.transaction.is_some() => {
                Reply::error("ERR WATCH inside MULTI is not allowed")
            }
            Command::Watch => Reply::error(
                "ERR WATCH is not supported by weft: a transaction on keys of one shard is atomic \
                 without it (see tuning.md)",
            ),
            Command::Unwatch => Reply::OK,
            Command::Invalid(error) => {
                if let Some(t) = &mut self.transaction {
                    t.fail();
                }
                error
            }
            _ => Reply::error("ERR not a connection command"),
        })
    }

    /// `CLIENT ...` but `LIST` (which the protocol gathers from every shard).
    fn client(&mut self, query: ClientQuery, now_ms: i64) -> Reply {
        match query {
            ClientQuery::SetName(name) => match self.set_name(name) {
                Ok(()) => Reply::OK,
                Err(e) => e,
            },
            ClientQuery::GetName => self.name.as_ref().map_or(Reply::Nil, Reply::bulk),
            ClientQuery::Id => Reply::Integer(self.id as i64),
            ClientQuery::SetInfo { version, value } => {
                if version {
                    self.lib.1 = value;
                } else {
                    self.lib.0 = value;
                }
                Reply::OK
            }
            ClientQuery::Info => Reply::Verbatim(self.client_line(now_ms).into_bytes()),
            ClientQuery::List { .. } => Reply::error("ERR not a connection command"),
        }
    }

    /// `HELLO`'s answer: the server, its version, the protocol now spoken, the client id,
    /// the mode, the role and the modules, as a map (a flat array in RESP2).
    fn hello(&self) -> Reply {
        let s = |t: &str| Reply::bulk(t);
        Reply::Map(vec![
            (s("server"), s("redis")),
            (s("version"), s(REDIS_VERSION)),
            (s("proto"), Reply::Integer(self.protocol.version())),
            (s("id"), Reply::Integer(self.id as i64)),
            (s("mode"), s("standalone")),
            (s("role"), s("master")),
            (s("modules"), Reply::Array(Vec::new())),
        ])
    }
}

/// Authenticates `user` (any password: the default user has none): `None` when it is the
/// default user, else the error.
fn auth(user: &[u8]) -> Option<Reply> {
    (user != b"default")
        .then(|| Reply::error("WRONGPASS invalid username-password pair or user is disabled."))
}

/// `COMMAND INFO`'s entry for a command.
fn info(spec: &Spec) -> Reply {
    let statuses = |items: &[&str]| {
        Reply::Set(
            items
                .iter()
                .map(|f| Reply::Status(f.to_string().into()))
                .collect(),
        )
    };
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Integer(spec.arity),
        statuses(spec.flags),
        Reply::Integer(spec.keys.0),
        Reply::Integer(spec.keys.1),
        Reply::Integer(spec.keys.2),
        statuses(spec.categories),
        Reply::Set(Vec::new()),
        Reply::Set(Vec::new()),
        Reply::Set(spec.subcommands.iter().map(info).collect()),
    ])
}

/// The table entry named `name` (`get`, or `config|get` for a subcommand), in any case.
fn spec_named(name: &[u8]) -> Option<&'static Spec> {
    let all = COMMANDS
        .iter()
        .flat_map(|s| std::iter::once(s).chain(s.subcommands));
    all.into_iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

fn command_reply(query: CommandQuery) -> Reply {
    match query {
        CommandQuery::Count => Reply::Integer(COMMANDS.len() as i64),
        CommandQuery::Docs => Reply::Map(Vec::new()),
        CommandQuery::List => Reply::Array(
            COMMANDS
                .iter()
                .flat_map(|s| std::iter::once(s).chain(s.subcommands))
                .map(|s| Reply::bulk(s.name))
                .collect(),
        ),
        CommandQuery::Info(names) if names.is_empty() => Reply::Array(COMMANDS.iter().map(info).collect()),
        CommandQuery::Info(names) => Reply::Array(
            names
                .iter()
                .map(|n| spec_named(n).map_or(Reply::Nil, info))
                .collect(),
        ),
    }
}

/// `CONFIG GET`: every setting a pattern names (exactly, under the name given; or by glob
/// pattern, under its own name), once each.
fn config_get(patterns: &[Vec<u8>], facts: &ServerFacts) -> Reply {
    let mut out: Vec<(Vec<u8>, &str)> = Vec::new();
    for pattern in patterns {
        let is_glob = pattern.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
        for (name, value) in &facts.config {
            let hit = if is_glob {
                glob_match(pattern, name.as_bytes(), true)
            } else {
                pattern.eq_ignore_ascii_case(name.as_bytes())
            };
            if !hit {
                continue;
            }
            let shown = if is_glob {
                name.as_bytes().to_vec()
            } else {
                pattern.clone()
            };
            if !out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())) {
                out.push((shown, value));
            }
        }
    }
    Reply::Map(
        out.into_iter()
            .map(|(n, v)| (Reply::Bulk(n), Reply::bulk(v)))
            .collect(),
    )
}

/// Redis's `stringmatchlen`: `*`, `?`, `[abc]`, `[^a-z]`, and `\` escapes; without case
/// if `nocase` (`CONFIG GET`), with it otherwise (`KEYS`, `SCAN MATCH`).
pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let fold = |c: u8| if nocase { c.to_ascii_lowercase() } else { c };
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern after it, text it has swallowed up to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => {
                let mut i = p + 1;
                let negate = pattern.get(i) == Some(&b'^');
                if negate {
                    i += 1;
                }
                let mut matched = false;
                while i < pattern.len() && pattern[i] != b']' {
                    if pattern[i] == b'\\' && i + 1 < pattern.len() {
                        matched |= eq(pattern[i + 1], text[t]);
                        i += 2;
                    } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
                        let (lo, hi) = (pattern[i].min(pattern[i + 2]), pattern[i].max(pattern[i + 2]));
                        let c = fold(text[t]);
                        matched |= (fold(lo)..=fold(hi)).contains(&c);
                        i += 3;
                    } else {
                        matched |= eq(pattern[i], text[t]);
                        i += 1;
                    }
                }
                (matched != negate).then_some(i + 1)
            }
            Some(b'\\') if p + 1 < pattern.len() => eq(pattern[p + 1], text[t]).then_some(p + 2),
            Some(&c) => eq(c, text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((after, swallowed))) => {
                p = after;
                t = swallowed + 1;
                star = Some((after, swallowed + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_is_bounded() {
        let queued = Some(Reply::Status("QUEUED".into()));
        let mut session = Session::default();
        let _ = session.execute(Command::Multi, &ServerFacts::default(), 0);
        for _ in 0..MAX_QUEUED {
            assert_eq!(session.queue(Command::Ping(None), 1, usize::MAX).ok(), queued);
        }
        assert_eq!(
            session.queue(Command::Ping(None), 1, usize::MAX).ok(),
            Some(Reply::error(TOO_MANY_QUEUED))
        );
        // Refused: later commands are answered as redis answers them, and not kept.
        assert_eq!(session.queue(Command::Ping(None), 1, usize::MAX).ok(), queued);
        assert!(session.client_line(0).contains(" multi=0 "));
        assert!(session.take_transaction().is_err(), "EXEC aborts");
    }

    #[test]
    fn a_transaction_is_bounded_in_bytes() {
        let queued = Some(Reply::Status("QUEUED".into()));
        let mut session = Session::default();
        let _ = session.execute(Command::Multi, &ServerFacts::default(), 0);
        assert_eq!(session.queue(Command::Ping(None), 600, 1000).ok(), queued);
        assert_eq!(session.queue(Command::Ping(None), 400, 1000).ok(), queued);
        let Ok(Reply::Error(refused)) = session.queue(Command::Ping(None), 1, 1000) else {
            panic!("the byte past the limit is refused")
        };
        assert!(
            refused.starts_with(b"ERR transaction too large: weft queues at most 1000 bytes"),
            "{}",
            String::from_utf8_lossy(&refused)
        );
        assert_eq!(session.queue(Command::Ping(None), 1, 1000).ok(), queued);
        assert_eq!(
            session.take_transaction(),
            Err(Reply::error(
                "EXECABORT Transaction discarded because of previous errors."
            ))
        );
        // The next transaction starts empty.
        let _ = session.execute(Command::Multi, &ServerFacts::default(), 0);
        assert_eq!(session.queue(Command::Ping(None), 1000, 1000).ok(), queued);
        assert_eq!(session.take_transaction().map(|q| q.len()), Ok(1));
    }

    use crate::proto::kv::command::parse;

    fn run(s: &mut Session, line: &str) -> Outcome {
        let facts = ServerFacts {
            config: vec![
                ("maxmemory".into(), "0".into()),
                ("maxmemory-policy".into(), "noeviction".into()),
                ("save".into(), String::new()),
            ],
        };
        match parse(line.split(' ').map(|a| a.as_bytes().to_vec()).collect()) {
            Ok(cmd) => s.execute(cmd, &facts, 0),
            Err(e) => Outcome::Reply(e),
        }
    }

    fn reply(s: &mut Session, line: &str) -> String {
        match run(s, line) {
            Outcome::Reply(r) => String::from_utf8(r.to_bytes()).unwrap(),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn connection_commands_byte_exact() {
        let mut s = Session::new(45);
        for (line, want) in [
            ("ping", "+PONG\r\n"),
            ("PING a", "$1\r\na\r\n"),
            ("echo hi", "$2\r\nhi\r\n"),
            ("select 0", "+OK\r\n"),
            ("select 1", "-ERR DB index is out of range\r\n"),
            (
                "select 4294967296",
                "-ERR value is not an integer or out of range\r\n",
            ),
            ("hello 4", "-NOPROTO unsupported protocol version\r\n"),
            (
                "hello 2 auth default x",
                "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:2\r\n\
                 $2\r\nid\r\n:45\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n\
                 $7\r\nmodules\r\n*0\r\n",
            ),
            (
                "hello 2 auth foo x",
                "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
            ),
            (
                "auth x",
                "-ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?\r\n",
            ),
            ("auth default x", "+OK\r\n"),
            ("auth a b c", "-ERR syntax error\r\n"),
            ("command count", &format!(":{}\r\n", COMMANDS.len())),
            ("command docs", "*0\r\n"),
            ("config get save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
            ("config get MAXMEMORY", "*2\r\n$9\r\nMAXMEMORY\r\n$1\r\n0\r\n"),
            (
                "config get maxmemory*",
                "*4\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n",
            ),
            ("config get nope", "*0\r\n"),
        ] {
            assert_eq!(reply(&mut s, line), want, "{line}");
        }
        assert_eq!(run(&mut s, "quit"), Outcome::ReplyAndClose(Reply::OK));
        assert_eq!(run(&mut s, "POST / HTTP/1.1"), Outcome::Close);
        reply(&mut s, "hello 2 setname app");
        assert_eq!(s.name(), Some(&b"app"[..]));
    }

    #[test]
    fn hello_3_switches_to_resp3() {
        let mut s = Session::new(7);
        let Outcome::Reply(hello) = run(&mut s, "hello 3 setname x") else {
            panic!("hello")
        };
        assert_eq!(s.protocol(), RespVersion::Resp3);
        assert_eq!(s.name(), Some(&b"x"[..]));
        let bytes = String::from_utf8(hello.to_bytes_as(RespVersion::Resp3)).unwrap();
        assert!(
            bytes.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
            "{bytes}"
        );
        assert!(
            bytes.contains("$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n"),
            "{bytes}"
        );
        // A refused name or password switches nothing.
        reply(&mut s, "hello 2 setname a\x01");
        assert_eq!(s.protocol(), RespVersion::Resp3);
        reply(&mut s, "hello 2 auth nobody x");
        assert_eq!(s.protocol(), RespVersion::Resp3);
        reply(&mut s, "hello 2");
        assert_eq!(s.protocol(), RespVersion::Resp2);
        // An empty name removes it.
        reply(&mut s, "hello 2 setname ");
        assert_eq!(s.name(), None);
    }

    #[test]
    fn command_info_as_redis_shapes_it() {
        let mut s = Session::new(1);
        assert_eq!(
            reply(&mut s, "command info get nosuch"),
            "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
             *3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n*0\r\n*0\r\n$-1\r\n"
        );
        assert!(reply(&mut s, "command").starts_with(&format!("*{}\r\n*10\r\n", COMMANDS.len())));
        assert!(reply(&mut s, "command list").contains("$12\r\ncommand|info\r\n"));
        assert!(reply(&mut s, "command info CONFIG|GET").contains("config|get"));
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "anything", true),
            ("max*", "maxmemory", true),
            ("MAX*", "maxmemory", true),
            ("*policy", "maxmemory-policy", true),
            ("m?x*", "maxmemory", true),
            ("m[a-c]x*", "maxmemory", true),
            ("m[^a]x*", "maxmemory", false),
            ("*mem*ory", "maxmemory", true),
            ("save", "save", true),
            ("sav", "save", false),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("", "", true),
            ("**", "", true),
        ] {
            assert_eq!(glob_match(p.as_bytes(), t.as_bytes(), true), want, "{p} {t}");
        }
        // With case, as KEYS and SCAN match.
        assert!(!glob_match(b"MAX*", b"maxmemory", false));
        assert!(glob_match(b"max*", b"maxmemory", false));
        assert!(!glob_match(b"[A-Z]*", b"abc", false));
    }
}
