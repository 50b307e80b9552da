//! A connection's own commands, which touch no key: `PING`, `ECHO`, `QUIT`, `SELECT`,
//! `HELLO`, `AUTH`, `COMMAND`, `CONFIG GET`.

use crate::proto::kv::command::{COMMANDS, Command, CommandQuery, NOT_AN_INTEGER, Spec};
use crate::proto::resp::{Protocol, Reply};

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
    protocol: Protocol,
}

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
            name: None,
            protocol: Protocol::Resp2,
        }
    }

    /// The protocol the connection speaks (RESP2 until `HELLO 3`).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Sets the client name as redis's `clientSetName`: an empty name removes it; a name
    /// with spaces, newlines or other bytes outside `!`..`~` is refused.
    fn set_name(&mut self, name: Vec<u8>) -> Result<(), Reply> {
        if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
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
    /// crate::proto::kv::command::Target::Connection)); others answer an error.
    pub fn execute(&mut self, cmd: Command, facts: &ServerFacts) -> Outcome {
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
                    Some(3) => self.protocol = Protocol::Resp3,
                    Some(2) => self.protocol = Protocol::Resp2,
                    _ => {}
                }
                self.hello()
            }
            Command::Command(query) => command_reply(query),
            Command::ConfigGet(patterns) => config_get(&patterns, facts),
            _ => Reply::error("ERR not a connection command"),
        })
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
                glob_match(pattern, name.as_bytes())
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

/// Redis's `stringmatchlen` without case: `*`, `?`, `[abc]`, `[^a-z]`, and `\` escapes.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    fn eq(a: u8, b: u8) -> bool {
        a.eq_ignore_ascii_case(&b)
    }
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
                        let c = text[t].to_ascii_lowercase();
                        matched |= (lo.to_ascii_lowercase()..=hi.to_ascii_lowercase()).contains(&c);
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
            Ok(cmd) => s.execute(cmd, &facts),
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
        assert_eq!(s.protocol(), Protocol::Resp3);
        assert_eq!(s.name(), Some(&b"x"[..]));
        let bytes = String::from_utf8(hello.to_bytes_as(Protocol::Resp3)).unwrap();
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
        assert_eq!(s.protocol(), Protocol::Resp3);
        reply(&mut s, "hello 2 auth nobody x");
        assert_eq!(s.protocol(), Protocol::Resp3);
        reply(&mut s, "hello 2");
        assert_eq!(s.protocol(), Protocol::Resp2);
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
            assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), want, "{p} {t}");
        }
    }
}
