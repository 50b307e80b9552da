//! Requests to typed commands: the command table (names, arities, flags, key positions, as
//! redis-server 7.0 describes them), the arity and syntax checks, and the errors redis gives
//! for unknown commands and wrong arguments, byte for byte.

use crate::proto::resp::{Reply, Request, string2ll};

/// One command's entry in the table: what `COMMAND INFO` tells about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Full name in lower case (`command|info` for a subcommand).
    pub name: &'static str,
    /// Argument count with the name: `n` exactly, or `-n` at least n.
    pub arity: i64,
    /// Flags such as `write`, `denyoom`, `readonly`, `fast`.
    pub flags: &'static [&'static str],
    /// Position of the first key, of the last (-1: the last argument), and the step.
    pub keys: (i64, i64, i64),
    /// ACL categories (`@read`, `@string`...).
    pub categories: &'static [&'static str],
    /// Subcommands of a container command (`COMMAND`, `CONFIG`).
    pub subcommands: &'static [Spec],
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    categories: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        categories,
        subcommands: &[],
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const RO_FAST: &[&str] = &["readonly", "fast"];
const W_OOM: &[&str] = &["write", "denyoom"];
const W_OOM_FAST: &[&str] = &["write", "denyoom", "fast"];
const W_FAST: &[&str] = &["write", "fast"];
const READ_STRING_FAST: &[&str] = &["@read", "@string", "@fast"];
const WRITE_STRING_FAST: &[&str] = &["@write", "@string", "@fast"];
const WRITE_STRING_SLOW: &[&str] = &["@write", "@string", "@slow"];
const KEYSPACE_WRITE_FAST: &[&str] = &["@keyspace", "@write", "@fast"];
const KEYSPACE_READ_FAST: &[&str] = &["@keyspace", "@read", "@fast"];
const CONNECTION_FAST: &[&str] = &["@fast", "@connection"];
const NO_AUTH: &[&str] = &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"];
const LOADING_STALE: &[&str] = &["loading", "stale"];
const SLOW_CONNECTION: &[&str] = &["@slow", "@connection"];
const ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];
const ADMIN_SLOW: &[&str] = &["@admin", "@slow", "@dangerous"];

/// `COMMAND`'s subcommands that weft answers.
pub static COMMAND_SUBCOMMANDS: &[Spec] = &[
    spec("command|docs", -2, LOADING_STALE, NO_KEYS, SLOW_CONNECTION),
    spec("command|count", 2, LOADING_STALE, NO_KEYS, SLOW_CONNECTION),
    spec("command|list", -2, LOADING_STALE, NO_KEYS, SLOW_CONNECTION),
    spec("command|info", -2, LOADING_STALE, NO_KEYS, SLOW_CONNECTION),
];

/// `CONFIG`'s subcommands that weft answers.
pub static CONFIG_SUBCOMMANDS: &[Spec] = &[
    spec("config|get", -3, ADMIN, NO_KEYS, ADMIN_SLOW),
    spec("config|help", 2, LOADING_STALE, NO_KEYS, &["@slow"]),
];

const CLIENT_FLAGS: &[&str] = &["noscript", "loading", "stale"];
const TRANSACTION: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];
const FAST_TRANSACTION: &[&str] = &["@fast", "@transaction"];

/// `CLIENT`'s subcommands that weft answers (`SETINFO` as redis 7.2 has it).
pub static CLIENT_SUBCOMMANDS: &[Spec] = &[
    spec("client|getname", 2, CLIENT_FLAGS, NO_KEYS, SLOW_CONNECTION),
    spec("client|id", 2, CLIENT_FLAGS, NO_KEYS, SLOW_CONNECTION),
    spec("client|info", 2, CLIENT_FLAGS, NO_KEYS, SLOW_CONNECTION),
    spec(
        "client|list",
        -2,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
        &["@admin", "@slow", "@dangerous", "@connection"],
    ),
    spec("client|setinfo", 4, CLIENT_FLAGS, NO_KEYS, SLOW_CONNECTION),
    spec("client|setname", 3, CLIENT_FLAGS, NO_KEYS, SLOW_CONNECTION),
];

/// Every command weft serves, in the order `COMMAND` lists them (sorted by name).
pub static COMMANDS: &[Spec] = &COMMAND_TABLE;

const COMMAND_COUNT: usize = 50;

const COMMAND_TABLE: [Spec; COMMAND_COUNT] = [
    spec("append", 3, W_OOM_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec("auth", -2, NO_AUTH, NO_KEYS, CONNECTION_FAST),
    Spec {
        subcommands: CLIENT_SUBCOMMANDS,
        ..spec("client", -2, &[], NO_KEYS, &["@slow"])
    },
    Spec {
        subcommands: COMMAND_SUBCOMMANDS,
        ..spec("command", -1, LOADING_STALE, NO_KEYS, SLOW_CONNECTION)
    },
    Spec {
        subcommands: CONFIG_SUBCOMMANDS,
        ..spec("config", -2, &[], NO_KEYS, &["@slow"])
    },
    spec("dbsize", 1, RO_FAST, NO_KEYS, KEYSPACE_READ_FAST),
    spec("decr", 2, W_OOM_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec("decrby", 3, W_OOM_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec("del", -2, &["write"], ALL_KEYS, &["@keyspace", "@write", "@slow"]),
    spec("discard", 1, TRANSACTION, NO_KEYS, FAST_TRANSACTION),
    spec("echo", 2, &["loading", "stale", "fast"], NO_KEYS, CONNECTION_FAST),
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        NO_KEYS,
        &["@slow", "@transaction"],
    ),
    spec("exists", -2, RO_FAST, ALL_KEYS, KEYSPACE_READ_FAST),
    spec("expire", -3, W_FAST, ONE_KEY, KEYSPACE_WRITE_FAST),
    spec("expireat", -3, W_FAST, ONE_KEY, KEYSPACE_WRITE_FAST),
    spec("expiretime", 2, RO_FAST, ONE_KEY, KEYSPACE_READ_FAST),
    spec(
        "flushall",
        -1,
        &["write"],
        NO_KEYS,
        &["@keyspace", "@write", "@slow", "@dangerous"],
    ),
    spec(
        "flushdb",
        -1,
        &["write"],
        NO_KEYS,
        &["@keyspace", "@write", "@slow", "@dangerous"],
    ),
    spec("get", 2, RO_FAST, ONE_KEY, READ_STRING_FAST),
    spec("getdel", 2, W_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec("getex", -2, W_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec("getset", 3, W_OOM_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec(
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        NO_KEYS,
        CONNECTION_FAST,
    ),
    spec("incr", 2, W_OOM_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec("incrby", 3, W_OOM_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec("info", -1, LOADING_STALE, NO_KEYS, &["@slow", "@dangerous"]),
    spec(
        "keys",
        2,
        &["readonly"],
        NO_KEYS,
        &["@keyspace", "@read", "@slow", "@dangerous"],
    ),
    spec("mget", -2, RO_FAST, ALL_KEYS, READ_STRING_FAST),
    spec("mset", -3, W_OOM, (1, -1, 2), WRITE_STRING_SLOW),
    spec("multi", 1, TRANSACTION, NO_KEYS, FAST_TRANSACTION),
    spec("persist", 2, W_FAST, ONE_KEY, KEYSPACE_WRITE_FAST),
    spec("pexpire", -3, W_FAST, ONE_KEY, KEYSPACE_WRITE_FAST),
    spec("pexpireat", -3, W_FAST, ONE_KEY, KEYSPACE_WRITE_FAST),
    spec("pexpiretime", 2, RO_FAST, ONE_KEY, KEYSPACE_READ_FAST),
    spec("ping", -1, &["fast"], NO_KEYS, CONNECTION_FAST),
    spec("psetex", 4, W_OOM, ONE_KEY, WRITE_STRING_SLOW),
    spec("pttl", 2, RO_FAST, ONE_KEY, KEYSPACE_READ_FAST),
    spec("quit", -1, NO_AUTH, NO_KEYS, CONNECTION_FAST),
    spec(
        "scan",
        -2,
        &["readonly"],
        NO_KEYS,
        &["@keyspace", "@read", "@slow"],
    ),
    spec(
        "select",
        2,
        &["loading", "stale", "fast"],
        NO_KEYS,
        CONNECTION_FAST,
    ),
    spec("set", -3, W_OOM, ONE_KEY, WRITE_STRING_SLOW),
    spec("setex", 4, W_OOM, ONE_KEY, WRITE_STRING_SLOW),
    spec("setnx", 3, W_OOM_FAST, ONE_KEY, WRITE_STRING_FAST),
    spec("strlen", 2, RO_FAST, ONE_KEY, READ_STRING_FAST),
    spec("time", 1, &["loading", "stale", "fast"], NO_KEYS, &["@fast"]),
    spec("ttl", 2, RO_FAST, ONE_KEY, KEYSPACE_READ_FAST),
    spec("type", 2, RO_FAST, ONE_KEY, KEYSPACE_READ_FAST),
    spec("unlink", -2, W_FAST, ALL_KEYS, KEYSPACE_WRITE_FAST),
    spec("unwatch", 1, TRANSACTION, NO_KEYS, FAST_TRANSACTION),
    spec("watch", -2, TRANSACTION, ALL_KEYS, FAST_TRANSACTION),
];

/// No command's name is longer: a name fits in a `u128`.
const MAX_NAME: usize = 16;

/// The first [`MAX_NAME`] bytes of a name, lower-cased, as one integer (big-endian,
/// zero-padded), so that names compare in two integer compares. Built in registers: bytes
/// stored one by one and read back as an integer stall the load.
const fn packed(name: &[u8]) -> u128 {
    let mut key = 0u128;
    let mut i = 0;
    while i < MAX_NAME {
        key <<= 8;
        if i < name.len() {
            key |= name[i].to_ascii_lowercase() as u128;
        }
        i += 1;
    }
    key
}

/// The names of [`COMMANDS`], packed, in the same order.
static KEYS: [u128; COMMAND_COUNT] = {
    let mut keys = [0; COMMAND_COUNT];
    let mut i = 0;
    while i < COMMAND_COUNT {
        keys[i] = packed(COMMAND_TABLE[i].name.as_bytes());
        i += 1;
    }
    keys
};

/// Where the names of each first letter start in the table (sorted by name): `a` to `z`,
/// then its end. A name that does not start with a lower-case letter fails to compile here.
static BY_FIRST_LETTER: [usize; 27] = {
    let mut starts = [COMMAND_COUNT; 27];
    let mut i = COMMAND_COUNT;
    while i > 0 {
        i -= 1;
        let letter = (COMMAND_TABLE[i].name.as_bytes()[0] - b'a') as usize;
        let mut l = 0;
        while l <= letter {
            if starts[l] > i {
                starts[l] = i;
            }
            l += 1;
        }
    }
    starts
};

/// The table entry of a top-level command, by name in any case: the name lower-cased into
/// one integer and compared with the few packed names of its first letter. (A `memcmp`
/// binary search of the names was a fifth of the server's CPU at `redis-benchmark -P 16`.)
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let letter = usize::from(name.first()?.to_ascii_lowercase().checked_sub(b'a')?);
    let (&start, &end) = (BY_FIRST_LETTER.get(letter)?, BY_FIRST_LETTER.get(letter + 1)?);
    if name.len() > MAX_NAME {
        return None;
    }
    let key = packed(name);
    let i = start + KEYS.get(start..end)?.iter().position(|&k| k == key)?;
    // A name with trailing NUL bytes packs like the name without them.
    COMMANDS.get(i).filter(|spec| spec.name.len() == name.len())
}

fn find(table: &'static [Spec], name: &[u8], prefix: &str) -> Option<&'static Spec> {
    table.iter().find(|s| {
        s.name
            .strip_prefix(prefix)
            .is_some_and(|short| short.as_bytes().eq_ignore_ascii_case(name))
    })
}

/// A key, as given.
pub type Key = Vec<u8>;

/// When an expiry set by `SET`, `EXPIRE` and their kin falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// This many milliseconds from the time the command runs (`EX`, `PX`, `EXPIRE`).
    In(i64),
    /// At this Unix time in milliseconds (`EXAT`, `PXAT`, `EXPIREAT`).
    At(i64),
}

/// `SET`'s NX / XX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Set in any case.
    #[default]
    Always,
    /// Only if the key does not exist (NX).
    IfMissing,
    /// Only if it exists (XX).
    IfExists,
}

/// A `SET` and the commands that are one (`SETNX`, `SETEX`, `PSETEX`, `GETSET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// The key.
    pub key: Key,
    /// The value.
    pub value: Vec<u8>,
    /// A new expiry (otherwise the key's is removed, unless `keep_ttl`).
    pub expire: Option<Deadline>,
    /// NX or XX.
    pub condition: Condition,
    /// GET: answer the old value.
    pub get: bool,
    /// KEEPTTL: keep the key's expiry.
    pub keep_ttl: bool,
    /// `SETNX`'s answer (`:1` / `:0`) instead of `+OK` / nil.
    pub integer_reply: bool,
    /// The command's name, for its errors.
    pub name: &'static str,
}

/// `EXPIRE`'s NX / XX / GT / LT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireCondition {
    /// Only if the key has no expiry.
    pub nx: bool,
    /// Only if it has one.
    pub xx: bool,
    /// Only if the new one is later.
    pub gt: bool,
    /// Only if the new one is sooner.
    pub lt: bool,
}

/// What `TTL` and its kin answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlKind {
    /// Seconds left, rounded (`TTL`).
    Seconds,
    /// Milliseconds left (`PTTL`).
    Millis,
    /// The Unix time in seconds (`EXPIRETIME`).
    AtSeconds,
    /// The Unix time in milliseconds (`PEXPIRETIME`).
    AtMillis,
}

/// What `COMMAND` is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandQuery {
    /// `COMMAND`, `COMMAND INFO` (no names: every command).
    Info(Vec<Vec<u8>>),
    /// `COMMAND COUNT`.
    Count,
    /// `COMMAND LIST`.
    List,
    /// `COMMAND DOCS`: weft has no docs to give, an empty answer.
    Docs,
}

/// A parsed request, checked for arity and syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    // ---- the connection's own ----
    /// `PING [message]`.
    Ping(Option<Vec<u8>>),
    /// `ECHO message`.
    Echo(Vec<u8>),
    /// `QUIT`: `+OK`, then close.
    Quit,
    /// `SELECT index`.
    Select(i64),
    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
    Hello {
        /// The protocol version asked for.
        version: Option<i64>,
        /// AUTH's username and password.
        auth: Option<(Vec<u8>, Vec<u8>)>,
        /// SETNAME's name.
        name: Option<Vec<u8>>,
    },
    /// `AUTH [username] password`.
    Auth {
        /// The username, if given.
        user: Option<Vec<u8>>,
    },
    /// `COMMAND ...`.
    Command(CommandQuery),
    /// `CONFIG GET pattern...`.
    ConfigGet(Vec<Vec<u8>>),
    /// `CONFIG HELP`.
    ConfigHelp,
    /// `CLIENT ...`.
    Client(ClientQuery),
    /// `TIME`.
    Time,
    /// `MULTI`: the commands after it are queued until `EXEC`.
    Multi,
    /// `EXEC`: runs the queued commands.
    Exec,
    /// `DISCARD`: drops them.
    Discard,
    /// `WATCH key...`: refused (weft has no optimistic locking).
    Watch,
    /// `UNWATCH`: nothing is watched, `+OK`.
    Unwatch,
    /// A request refused before it ran (unknown command, wrong arguments): its error, answered
    /// in order, and failing the transaction it is part of, as in redis.
    Invalid(Reply),
    /// `POST` or `Host:`: an HTTP request sent to the port, closed without an answer (redis's
    /// defence against cross-protocol scripting).
    Refuse,
    // ---- one key ----
    /// `GET key`.
    Get(Key),
    /// `SET` and kin.
    Set(Set),
    /// `GETDEL key`.
    GetDel(Key),
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`.
    IncrBy(Key, i64),
    /// `APPEND key value`.
    Append(Key, Vec<u8>),
    /// `STRLEN key`.
    Strlen(Key),
    /// `TYPE key`.
    Type(Key),
    /// `GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]`.
    GetEx {
        /// The key.
        key: Key,
        /// A new expiry.
        expire: Option<Deadline>,
        /// PERSIST: remove the expiry.
        persist: bool,
    },
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`.
    Expire {
        /// The key.
        key: Key,
        /// The new expiry, in milliseconds.
        at: Deadline,
        /// NX / XX / GT / LT.
        condition: ExpireCondition,
        /// The command's name, for its errors.
        name: &'static str,
    },
    /// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`.
    Ttl(Key, TtlKind),
    /// `PERSIST key`.
    Persist(Key),
    // ---- several keys ----
    /// `MGET key...`.
    MGet(Vec<Key>),
    /// `MSET key value...`.
    MSet(Vec<(Key, Vec<u8>)>),
    /// `DEL key...`.
    Del(Vec<Key>),
    /// `EXISTS key...`.
    Exists(Vec<Key>),
    // ---- the whole keyspace ----
    /// `DBSIZE`.
    DbSize,
    /// `FLUSHALL` / `FLUSHDB`.
    FlushAll,
    /// `INFO [section...]`.
    Info(Vec<Vec<u8>>),
    /// `KEYS pattern`.
    Keys(Vec<u8>),
    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`: on the shard the cursor names.
    Scan(Scan),
}

/// What `CLIENT` is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientQuery {
    /// `CLIENT SETNAME name`.
    SetName(Vec<u8>),
    /// `CLIENT GETNAME`.
    GetName,
    /// `CLIENT ID`.
    Id,
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value` (redis 7.2): whether it is the version, and
    /// the value.
    SetInfo {
        /// LIB-VER rather than LIB-NAME.
        version: bool,
        /// The value.
        value: Vec<u8>,
    },
    /// `CLIENT INFO`: this connection's line.
    Info,
    /// `CLIENT LIST [TYPE type] [ID id...]`: every connection's line, of every shard.
    List {
        /// Only these client ids (none: all).
        ids: Vec<u64>,
        /// TYPE other than `normal`: no client is of it.
        none: bool,
    },
}

/// A `SCAN`: the cursor as given and its options. The cursor names a shard and a place in
/// it: `place * shards + shard`, place 0 being the shard's start (see
/// [`Keyspace::scan`](crate::proto::kv::keyspace::Keyspace::scan)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The cursor (0: the start of the first shard).
    pub cursor: u64,
    /// MATCH: only keys that match this glob pattern.
    pub pattern: Option<Vec<u8>>,
    /// COUNT: about how many keys to look at (10 by default).
    pub count: usize,
    /// TYPE other than `string`: no key is of it.
    pub none: bool,
    /// The shard that runs it and the shard count (set where the command is routed).
    pub shard: (usize, usize),
}

impl Scan {
    /// The shard (of `shards`) the cursor names.
    pub fn shard_of_cursor(cursor: u64, shards: usize) -> usize {
        let shards = shards.max(1) as u64;
        (cursor % shards) as usize
    }
}

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// On the connection: no key.
    Connection,
    /// On the shard that owns this key.
    Key(&'a [u8]),
    /// On the shards that own its keys, each with its part ([`Command::MGet`],
    /// [`Command::MSet`], [`Command::Del`], [`Command::Exists`]).
    Keys,
    /// On every shard ([`Command::DbSize`], [`Command::FlushAll`], [`Command::Info`],
    /// [`Command::Keys`], `CLIENT LIST`; and [`Command::Exec`], which waits for the commands
    /// before it).
    All,
    /// On the shard a `SCAN` cursor names.
    Cursor(u64),
}

/// What a command does, in broad strokes: how the kv store counts the commands it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Reads keys (`GET`, `MGET`, `TTL`, ...).
    Read = 0,
    /// Writes keys (`SET`, `DEL`, `EXPIRE`, `FLUSHALL`, ...).
    Write = 1,
    /// Reads figures of every shard (`DBSIZE`, `INFO`).
    Server = 2,
    /// The connection's own (`PING`, `HELLO`, `SELECT`, `QUIT`, ...).
    Connection = 3,
}

impl Family {
    /// The families' names, by [`index`](Self::index).
    pub const NAMES: [&'static str; 4] = ["read", "write", "server", "connection"];

    /// The family's place in [`NAMES`](Self::NAMES).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Command {
    /// The command's family.
    pub fn family(&self) -> Family {
        if self.writes() {
            return Family::Write;
        }
        match self.target() {
            Target::Key(_) | Target::Keys | Target::Cursor(_) => Family::Read,
            Target::All => Family::Server,
            Target::Connection => Family::Connection,
        }
    }

    /// Where the command runs.
    pub fn target(&self) -> Target<'_> {
        match self {
            Command::Get(k)
            | Command::GetDel(k)
            | Command::IncrBy(k, _)
            | Command::Append(k, _)
            | Command::Strlen(k)
            | Command::Type(k)
            | Command::GetEx { key: k, .. }
            | Command::Ttl(k, _)
            | Command::Persist(k)
            | Command::Expire { key: k, .. } => Target::Key(k),
            Command::Set(s) => Target::Key(&s.key),
            Command::MGet(_) | Command::MSet(_) | Command::Del(_) | Command::Exists(_) => Target::Keys,
            Command::DbSize
            | Command::FlushAll
            | Command::Info(_)
            | Command::Keys(_)
            | Command::Exec
            | Command::Client(ClientQuery::List { .. }) => Target::All,
            Command::Scan(scan) => Target::Cursor(scan.cursor),
            _ => Target::Connection,
        }
    }

    /// Whether it may add memory, so that `maxmemory` refuses it (`-OOM`) or evicts first
    /// (redis's `denyoom` flag).
    pub fn denies_oom(&self) -> bool {
        matches!(
            self,
            Command::Set(_) | Command::IncrBy(..) | Command::Append(..) | Command::MSet(_)
        )
    }

    /// Whether it writes: eviction runs before a write.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Command::Set(_)
                | Command::GetDel(_)
                | Command::GetEx { .. }
                | Command::IncrBy(..)
                | Command::Append(..)
                | Command::Expire { .. }
                | Command::Persist(_)
                | Command::MSet(_)
                | Command::Del(_)
                | Command::FlushAll
        )
    }

    /// Whether it runs on a shard's keyspace ([`Keyspace::execute`](
    /// crate::proto::kv::keyspace::Keyspace::execute)): a command on keys, and `DBSIZE`,
    /// `FLUSHALL` and `KEYS` on each shard's.
    pub fn on_keyspace(&self) -> bool {
        match self.target() {
            Target::Key(_) | Target::Keys | Target::Cursor(_) => true,
            Target::All => matches!(self, Command::DbSize | Command::FlushAll | Command::Keys(_)),
            Target::Connection => false,
        }
    }

    /// The command as shard `shard` of `shards` runs it: a `SCAN` learns where it runs (to
    /// write its next cursor); others are unchanged.
    pub fn routed(self, shard: usize, shards: usize) -> Command {
        match self {
            Command::Scan(scan) => Command::Scan(Scan {
                shard: (shard, shards),
                ..scan
            }),
            other => other,
        }
    }

    /// Whether, inside `MULTI`, it is queued rather than run (all but `EXEC`, `DISCARD`,
    /// `MULTI`, `WATCH`, `QUIT`, and requests refused before they ran, as in redis).
    pub fn queues(&self) -> bool {
        !matches!(
            self,
            Command::Exec
                | Command::Discard
                | Command::Multi
                | Command::Watch
                | Command::Quit
                | Command::Invalid(_)
        )
    }
}

/// `-ERR syntax error`.
pub const SYNTAX_ERROR: Reply = Reply::error("ERR syntax error");
/// `-ERR value is not an integer or out of range`.
pub const NOT_AN_INTEGER: Reply = Reply::error("ERR value is not an integer or out of range");

/// `-ERR invalid expire time in 'set' command`.
pub fn invalid_expire(name: &str) -> Reply {
    Reply::err(format!("invalid expire time in '{name}' command"))
}

/// `-ERR wrong number of arguments for 'get' command`.
pub fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// The bytes of `arg` before its first NUL: what redis's C string functions see.
fn c_str(arg: &[u8]) -> &[u8] {
    arg.iter().position(|&b| b == 0).map_or(arg, |nul| &arg[..nul])
}

/// `-ERR unknown command 'x', with args beginning with: 'a' 'b' `, formatted as redis does:
/// the name cut at 128 bytes, arguments quoted while the list is under 128 bytes (each cut to
/// what is left of 128), each value cut at a NUL byte.
pub fn unknown_command(args: &[Vec<u8>]) -> Reply {
    let mut line = b"ERR unknown command '".to_vec();
    let name = args.first().map_or(&[][..], |n| c_str(n));
    line.extend_from_slice(&name[..name.len().min(128)]);
    line.extend_from_slice(b"', with args beginning with: ");
    let mut list: Vec<u8> = Vec::new();
    for arg in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        let arg = c_str(arg);
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(&arg[..arg.len().min(room)]);
        list.extend_from_slice(b"' ");
    }
    line.extend_from_slice(&list);
    Reply::Error(line.into())
}

/// `-ERR unknown subcommand 'x'. Try COMMAND HELP.`
fn unknown_subcommand(container: &[u8], sub: &[u8]) -> Reply {
    let mut line = b"ERR unknown subcommand '".to_vec();
    let sub = c_str(sub);
    line.extend_from_slice(&sub[..sub.len().min(128)]);
    line.extend_from_slice(b"'. Try ");
    line.extend(c_str(container).iter().map(u8::to_ascii_uppercase));
    line.extend_from_slice(b" HELP.");
    Reply::Error(line.into())
}

fn int(arg: &[u8]) -> Result<i64, Reply> {
    string2ll(arg).ok_or(NOT_AN_INTEGER)
}

/// True if `arg`, read as a C string, is `word` in any case (redis's `strcasecmp`).
fn is(arg: &[u8], word: &str) -> bool {
    c_str(arg).eq_ignore_ascii_case(word.as_bytes())
}

/// Checks a request against the table and turns it into a [`Command`], or the error redis
/// answers it with (unknown command, wrong arity, syntax, a bad integer). Errors that depend
/// on the keyspace or the clock come later, from the keyspace.
pub fn parse(mut args: Request) -> Result<Command, Reply> {
    let Some(name) = args.first() else {
        return Err(unknown_command(&args));
    };
    let Some(mut spec) = lookup(name) else {
        // An HTTP request sent to the port (redis lists these two words as commands that
        // close the connection). Looked for only after the lookup failed, off the path of
        // every command.
        if is(name, "host:") || is(name, "post") {
            return Ok(Command::Refuse);
        }
        return Err(unknown_command(&args));
    };
    if !spec.subcommands.is_empty() && args.len() >= 2 {
        let prefix = format!("{}|", spec.name);
        match find(spec.subcommands, &args[1], &prefix) {
            Some(sub) => spec = sub,
            None => return Err(unknown_subcommand(&args[0], &args[1])),
        }
    }
    let argc = args.len() as i64;
    if (spec.arity > 0 && spec.arity != argc) || argc < -spec.arity {
        return Err(wrong_arity(spec.name));
    }
    let arg = |args: &mut Request, i: usize| std::mem::take(&mut args[i]);
    Ok(match spec.name {
        "ping" if argc > 2 => return Err(wrong_arity("ping")),
        "ping" => Command::Ping((argc == 2).then(|| arg(&mut args, 1))),
        "echo" => Command::Echo(arg(&mut args, 1)),
        "quit" => Command::Quit,
        "select" => Command::Select(int(&args[1])?),
        "hello" => parse_hello(args)?,
        "auth" if argc > 3 => return Err(SYNTAX_ERROR),
        "auth" => Command::Auth {
            user: (argc == 3).then(|| arg(&mut args, 1)),
        },
        "command" => Command::Command(CommandQuery::Info(Vec::new())),
        "command|count" => Command::Command(CommandQuery::Count),
        "command|list" => Command::Command(CommandQuery::List),
        "command|docs" => Command::Command(CommandQuery::Docs),
        "command|info" => Command::Command(CommandQuery::Info(args.split_off(2))),
        "config|get" => Command::ConfigGet(args.split_off(2)),
        "config|help" => Command::ConfigHelp,
        "client|setname" => Command::Client(ClientQuery::SetName(arg(&mut args, 2))),
        "client|getname" => Command::Client(ClientQuery::GetName),
        "client|id" => Command::Client(ClientQuery::Id),
        "client|info" => Command::Client(ClientQuery::Info),
        "client|setinfo" => parse_setinfo(args)?,
        "client|list" => parse_client_list(&args)?,
        "time" => Command::Time,
        "multi" => Command::Multi,
        "exec" => Command::Exec,
        "discard" => Command::Discard,
        "watch" => Command::Watch,
        "unwatch" => Command::Unwatch,
        "type" => Command::Type(arg(&mut args, 1)),
        "getex" => parse_getex(args)?,
        "keys" => Command::Keys(arg(&mut args, 1)),
        "scan" => parse_scan(args)?,
        "get" => Command::Get(arg(&mut args, 1)),
        "getdel" => Command::GetDel(arg(&mut args, 1)),
        "strlen" => Command::Strlen(arg(&mut args, 1)),
        "persist" => Command::Persist(arg(&mut args, 1)),
        "incr" => Command::IncrBy(arg(&mut args, 1), 1),
        "decr" => Command::IncrBy(arg(&mut args, 1), -1),
        "incrby" => {
            let by = int(&args[2])?;
            Command::IncrBy(arg(&mut args, 1), by)
        }
        "decrby" => match int(&args[2])? {
            i64::MIN => return Err(Reply::error("ERR decrement would overflow")),
            by => Command::IncrBy(arg(&mut args, 1), -by),
        },
        "append" => {
            let value = arg(&mut args, 2);
            Command::Append(arg(&mut args, 1), value)
        }
        "set" => parse_set(args)?,
        "setnx" => Command::Set(Set {
            condition: Condition::IfMissing,
            integer_reply: true,
            ..plain_set(args, "setnx")
        }),
        "getset" => Command::Set(Set {
            get: true,
            ..plain_set(args, "getset")
        }),
        "setex" | "psetex" => {
            let ms = spec.name == "psetex";
            let ttl = expire_arg(&args[2], ms, spec.name)?;
            args.swap(2, 3);
            Command::Set(Set {
                expire: Some(Deadline::In(ttl)),
                ..plain_set(args, spec.name)
            })
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => parse_expire(args, spec.name)?,
        "ttl" => Command::Ttl(arg(&mut args, 1), TtlKind::Seconds),
        "pttl" => Command::Ttl(arg(&mut args, 1), TtlKind::Millis),
        "expiretime" => Command::Ttl(arg(&mut args, 1), TtlKind::AtSeconds),
        "pexpiretime" => Command::Ttl(arg(&mut args, 1), TtlKind::AtMillis),
        "mget" => Command::MGet(args.split_off(1)),
        "del" | "unlink" => Command::Del(args.split_off(1)),
        "exists" => Command::Exists(args.split_off(1)),
        "mset" if argc % 2 == 0 => return Err(wrong_arity("mset")),
        "mset" => {
            let mut pairs = Vec::with_capacity(args.len() / 2);
            let mut rest = args.into_iter().skip(1);
            while let (Some(k), Some(v)) = (rest.next(), rest.next()) {
                pairs.push((k, v));
            }
            Command::MSet(pairs)
        }
        "dbsize" => Command::DbSize,
        "flushall" | "flushdb" => {
            if argc > 2 || (argc == 2 && !is(&args[1], "sync") && !is(&args[1], "async")) {
                return Err(SYNTAX_ERROR);
            }
            Command::FlushAll
        }
        "info" => Command::Info(args.split_off(1)),
        // A container without a subcommand that has arity 1 or less: only CONFIG, refused by
        // its arity above.
        _ => return Err(unknown_command(&args)),
    })
}

/// A `SET key value` from the first three arguments.
fn plain_set(mut args: Request, name: &'static str) -> Set {
    let value = std::mem::take(&mut args[2]);
    Set {
        key: std::mem::take(&mut args[1]),
        value,
        expire: None,
        condition: Condition::Always,
        get: false,
        keep_ttl: false,
        integer_reply: false,
        name,
    }
}

/// An expiry in milliseconds from `EX`/`PX`-style arguments: positive, and not overflowing
/// when seconds become milliseconds.
fn expire_arg(arg: &[u8], millis: bool, name: &str) -> Result<i64, Reply> {
    let n = int(arg)?;
    if n <= 0 || (!millis && n > i64::MAX / 1000) {
        return Err(invalid_expire(name));
    }
    Ok(if millis { n } else { n * 1000 })
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`, with redis's rules on
/// which options combine (a repeated option is allowed, the last value wins).
fn parse_set(args: Request) -> Result<Command, Reply> {
    #[derive(Clone, Copy, PartialEq)]
    enum Unit {
        Ex,
        Px,
        ExAt,
        PxAt,
    }
    let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
    let mut expire: Option<(Unit, usize)> = None;
    let mut j = 3;
    while j < args.len() {
        let opt = c_str(&args[j]);
        let has_next = j + 1 < args.len();
        let unit = match opt.to_ascii_lowercase().as_slice() {
            b"nx" if !xx => {
                nx = true;
                None
            }
            b"xx" if !nx => {
                xx = true;
                None
            }
            b"get" => {
                get = true;
                None
            }
            b"keepttl" if expire.is_none() => {
                keep_ttl = true;
                None
            }
            b"ex" => Some(Unit::Ex),
            b"px" => Some(Unit::Px),
            b"exat" => Some(Unit::ExAt),
            b"pxat" => Some(Unit::PxAt),
            _ => return Err(SYNTAX_ERROR),
        };
        if let Some(unit) = unit {
            // Another unit than the one given, KEEPTTL, or no value: a syntax error.
            if keep_ttl || !has_next || expire.is_some_and(|(u, _)| u != unit) {
                return Err(SYNTAX_ERROR);
            }
            expire = Some((unit, j + 1));
            j += 1;
        }
        j += 1;
    }
    let expire = match expire {
        None => None,
        Some((unit, at)) => {
            let ms = expire_arg(&args[at], matches!(unit, Unit::Px | Unit::PxAt), "set")?;
            Some(match unit {
                Unit::Ex | Unit::Px => Deadline::In(ms),
                Unit::ExAt | Unit::PxAt => Deadline::At(ms),
            })
        }
    };
    Ok(Command::Set(Set {
        expire,
        condition: match (nx, xx) {
            (true, _) => Condition::IfMissing,
            (_, true) => Condition::IfExists,
            _ => Condition::Always,
        },
        get,
        keep_ttl,
        ..plain_set(args, "set")
    }))
}

/// `EXPIRE key n [NX|XX|GT|LT]...` and kin: options first, then the time, as redis checks.
fn parse_expire(mut args: Request, name: &'static str) -> Result<Command, Reply> {
    let mut condition = ExpireCondition::default();
    for opt in &args[3..] {
        match c_str(opt).to_ascii_lowercase().as_slice() {
            b"nx" => condition.nx = true,
            b"xx" => condition.xx = true,
            b"gt" => condition.gt = true,
            b"lt" => condition.lt = true,
            _ => {
                let mut line = b"ERR Unsupported option ".to_vec();
                line.extend_from_slice(c_str(opt));
                return Err(Reply::Error(line.into()));
            }
        }
    }
    let ExpireCondition { nx, xx, gt, lt } = condition;
    if nx && (xx || gt || lt) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let mut when = int(&args[2])?;
    if name == "expire" || name == "expireat" {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return Err(invalid_expire(name));
        }
        when *= 1000;
    }
    let at = if name.ends_with("at") {
        Deadline::At(when)
    } else {
        Deadline::In(when)
    };
    Ok(Command::Expire {
        key: std::mem::take(&mut args[1]),
        at,
        condition,
        name,
    })
}

/// `GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]`: one of them at most, as redis checks.
fn parse_getex(mut args: Request) -> Result<Command, Reply> {
    let (mut expire, mut persist) = (None, false);
    let mut j = 2;
    while j < args.len() {
        let opt = c_str(&args[j]).to_ascii_lowercase();
        let next = args.get(j + 1);
        let (ms, at) = match opt.as_slice() {
            b"persist" if expire.is_none() => {
                persist = true;
                j += 1;
                continue;
            }
            b"ex" => (false, false),
            b"px" => (true, false),
            b"exat" => (false, true),
            b"pxat" => (true, true),
            _ => return Err(SYNTAX_ERROR),
        };
        let Some(value) = next.filter(|_| expire.is_none() && !persist) else {
            return Err(SYNTAX_ERROR);
        };
        expire = Some((value.clone(), ms, at));
        j += 2;
    }
    let expire = match expire {
        None => None,
        Some((value, ms, at)) => {
            let n = expire_arg(&value, ms, "getex")?;
            Some(if at { Deadline::At(n) } else { Deadline::In(n) })
        }
    };
    Ok(Command::GetEx {
        key: std::mem::take(&mut args[1]),
        expire,
        persist,
    })
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`, checked as redis does: the cursor
/// first (an unsigned decimal, `-n` wrapping as `strtoull` does), then the options.
fn parse_scan(mut args: Request) -> Result<Command, Reply> {
    let invalid = || Reply::error("ERR invalid cursor");
    let text = &args[1];
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, &text[..]),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let cursor = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or_else(invalid)?;
    let cursor = if negative { cursor.wrapping_neg() } else { cursor };
    let mut scan = Scan {
        cursor,
        pattern: None,
        count: 10,
        none: false,
        shard: (0, 1),
    };
    let mut j = 2;
    while j < args.len() {
        if j + 1 >= args.len() {
            return Err(SYNTAX_ERROR);
        }
        let value = std::mem::take(&mut args[j + 1]);
        match c_str(&args[j]).to_ascii_lowercase().as_slice() {
            b"count" => match int(&value)? {
                n if n < 1 => return Err(SYNTAX_ERROR),
                n => scan.count = usize::try_from(n).unwrap_or(usize::MAX),
            },
            // `*` matches everything: no need to test each key.
            b"match" => scan.pattern = (value != b"*").then_some(value),
            b"type" => scan.none = !c_str(&value).eq_ignore_ascii_case(b"string"),
            _ => return Err(SYNTAX_ERROR),
        }
        j += 2;
    }
    Ok(Command::Scan(scan))
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`, as redis 7.2: names and versions without
/// spaces, newlines or special characters.
fn parse_setinfo(mut args: Request) -> Result<Command, Reply> {
    let version = match c_str(&args[2]).to_ascii_lowercase().as_slice() {
        b"lib-name" => false,
        b"lib-ver" => true,
        _ => {
            let mut line = b"ERR Unrecognized option '".to_vec();
            line.extend_from_slice(c_str(&args[2]));
            line.push(b'\'');
            return Err(Reply::Error(line.into()));
        }
    };
    let value = std::mem::take(&mut args[3]);
    if !is_client_text(&value) {
        let mut line = b"ERR ".to_vec();
        line.extend_from_slice(c_str(&args[2]));
        line.extend_from_slice(b" cannot contain spaces, newlines or special characters.");
        return Err(Reply::Error(line.into()));
    }
    Ok(Command::Client(ClientQuery::SetInfo { version, value }))
}

/// Whether `text` may be a client's name or library info: bytes `!`..`~` only (no spaces,
/// newlines or other special characters), as redis checks them.
pub(crate) fn is_client_text(text: &[u8]) -> bool {
    text.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// `CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id...]`.
fn parse_client_list(args: &Request) -> Result<Command, Reply> {
    let (mut ids, mut none) = (Vec::new(), false);
    match args.get(2) {
        None => {}
        Some(opt) if is(opt, "type") && args.len() == 4 => {
            let kind = c_str(&args[3]).to_ascii_lowercase();
            match kind.as_slice() {
                b"normal" => {}
                b"master" | b"replica" | b"slave" | b"pubsub" => none = true,
                _ => {
                    let mut line = b"ERR Unknown client type '".to_vec();
                    line.extend_from_slice(c_str(&args[3]));
                    line.push(b'\'');
                    return Err(Reply::Error(line.into()));
                }
            }
        }
        Some(opt) if is(opt, "id") && args.len() >= 4 => {
            for id in &args[3..] {
                match string2ll(id) {
                    // Ids are positive: another integer matches no client.
                    Some(n) => ids.push(u64::try_from(n).unwrap_or(0)),
                    None => return Err(Reply::error("ERR Invalid client ID")),
                }
            }
        }
        Some(_) => return Err(SYNTAX_ERROR),
    }
    Ok(Command::Client(ClientQuery::List { ids, none }))
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
fn parse_hello(mut args: Request) -> Result<Command, Reply> {
    let mut version = None;
    let mut j = 1;
    if args.len() >= 2 {
        let v = string2ll(&args[1]).ok_or(Reply::error(
            "ERR Protocol version is not an integer or out of range",
        ))?;
        if !(2..=3).contains(&v) {
            return Err(Reply::error("NOPROTO unsupported protocol version"));
        }
        version = Some(v);
        j = 2;
    }
    let (mut auth, mut name) = (None, None);
    while j < args.len() {
        let more = args.len() - 1 - j;
        if is(&args[j], "auth") && more >= 2 {
            auth = Some((std::mem::take(&mut args[j + 1]), std::mem::take(&mut args[j + 2])));
            j += 3;
        } else if is(&args[j], "setname") && more >= 1 {
            name = Some(std::mem::take(&mut args[j + 1]));
            j += 2;
        } else {
            let mut line = b"ERR Syntax error in HELLO option '".to_vec();
            line.extend_from_slice(c_str(&args[j]));
            line.push(b'\'');
            return Err(Reply::Error(line.into()));
        }
    }
    Ok(Command::Hello { version, auth, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, Reply> {
        parse(line.split(' ').map(|a| a.as_bytes().to_vec()).collect())
    }

    fn error(line: &str) -> Vec<u8> {
        parse_str(line).expect_err(line).to_bytes()
    }

    #[test]
    fn unknown_commands_as_redis_words_them() {
        assert_eq!(
            error("FOO a b"),
            b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
        );
        assert_eq!(
            error("FOO"),
            b"-ERR unknown command 'FOO', with args beginning with: \r\n"
        );
        assert_eq!(
            parse(vec![b"foo".to_vec(), b"a".to_vec(), b"".to_vec()])
                .unwrap_err()
                .to_bytes(),
            b"-ERR unknown command 'foo', with args beginning with: 'a' '' \r\n"
        );
        // CR and LF become spaces; NUL ends a value.
        assert_eq!(
            parse(vec![b"f\r\no".to_vec(), b"a\0b".to_vec()])
                .unwrap_err()
                .to_bytes(),
            b"-ERR unknown command 'f  o', with args beginning with: 'a' \r\n"
        );
        // The list stops once it reaches 128 bytes; each argument is cut to what is left.
        let long = "x".repeat(200);
        let got = error(&format!("nope {long} b"));
        let want = format!(
            "-ERR unknown command 'nope', with args beginning with: '{}' \r\n",
            "x".repeat(128)
        );
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let got = error(&format!("nope {} {} c", "y".repeat(100), "z".repeat(100)));
        let want = format!(
            "-ERR unknown command 'nope', with args beginning with: '{}' '{}' \r\n",
            "y".repeat(100),
            "z".repeat(25)
        );
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let got = error(&format!("{} a", "n".repeat(300)));
        assert!(got.starts_with(format!("-ERR unknown command '{}'", "n".repeat(128)).as_bytes()));
    }

    #[test]
    fn arity_errors() {
        for (line, name) in [
            ("get", "get"),
            ("GET a b", "get"),
            ("set a", "set"),
            ("ping a b", "ping"),
            ("echo", "echo"),
            ("mset a", "mset"),
            ("mset a 1 b", "mset"),
            ("dbsize x", "dbsize"),
            ("config", "config"),
            ("config get", "config|get"),
            ("command count x", "command|count"),
            ("expire a", "expire"),
        ] {
            let want = format!("-ERR wrong number of arguments for '{name}' command\r\n");
            assert_eq!(String::from_utf8(error(line)).unwrap(), want, "{line}");
        }
        assert_eq!(
            error("command foo"),
            b"-ERR unknown subcommand 'foo'. Try COMMAND HELP.\r\n"
        );
        assert_eq!(
            error("Config foo"),
            b"-ERR unknown subcommand 'foo'. Try CONFIG HELP.\r\n"
        );
    }

    #[test]
    fn set_options() {
        let set = |line: &str| match parse_str(line) {
            Ok(Command::Set(s)) => s,
            other => panic!("{line}: {other:?}"),
        };
        let s = set("set k v");
        assert_eq!(
            (s.key, s.value, s.expire, s.condition),
            (b"k".to_vec(), b"v".to_vec(), None, Condition::Always)
        );
        assert_eq!(set("set k v ex 10").expire, Some(Deadline::In(10_000)));
        assert_eq!(set("set k v PX 10").expire, Some(Deadline::In(10)));
        assert_eq!(set("set k v exat 10").expire, Some(Deadline::At(10_000)));
        assert_eq!(set("set k v pxat 10").expire, Some(Deadline::At(10)));
        assert_eq!(set("set k v ex 10 ex 20").expire, Some(Deadline::In(20_000)));
        assert_eq!(set("set k v nx").condition, Condition::IfMissing);
        assert_eq!(set("set k v xx xx").condition, Condition::IfExists);
        assert!(set("set k v get nx").get);
        assert!(set("set k v keepttl").keep_ttl);
        for bad in [
            "set k v nx xx",
            "set k v xx nx",
            "set k v ex 10 px 10",
            "set k v keepttl ex 1",
            "set k v ex 1 keepttl",
            "set k v foo",
            "set k v ex",
            "set k v ex abc nx xx",
        ] {
            assert_eq!(error(bad), b"-ERR syntax error\r\n", "{bad}");
        }
        assert_eq!(
            error("set k v ex abc"),
            b"-ERR value is not an integer or out of range\r\n"
        );
        for bad in [
            "set k v ex 0",
            "set k v ex -1",
            "set k v ex 9223372036854776",
            "set k v px 0",
        ] {
            assert_eq!(
                error(bad),
                b"-ERR invalid expire time in 'set' command\r\n",
                "{bad}"
            );
        }
        assert_eq!(
            error("setex k 0 v"),
            b"-ERR invalid expire time in 'setex' command\r\n"
        );
        assert_eq!(
            error("psetex k 0 v"),
            b"-ERR invalid expire time in 'psetex' command\r\n"
        );
        let s = set("setex k 10 v");
        assert_eq!((s.value, s.expire), (b"v".to_vec(), Some(Deadline::In(10_000))));
        assert!(set("setnx k v").integer_reply);
        assert!(set("getset k v").get);
    }

    #[test]
    fn integers_and_expire_options() {
        assert_eq!(parse_str("incrby k -5"), Ok(Command::IncrBy(b"k".to_vec(), -5)));
        assert_eq!(parse_str("decrby k 5"), Ok(Command::IncrBy(b"k".to_vec(), -5)));
        assert_eq!(
            error("incrby k x"),
            b"-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            error("incrby k 01"),
            b"-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            error("decrby k -9223372036854775808"),
            b"-ERR decrement would overflow\r\n"
        );
        assert_eq!(
            error("expire k 1 nx xx"),
            b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
        );
        assert_eq!(
            error("expire k 1 gt lt"),
            b"-ERR GT and LT options at the same time are not compatible\r\n"
        );
        assert_eq!(error("expire k 1 foo"), b"-ERR Unsupported option foo\r\n");
        assert_eq!(
            error("expire k abc"),
            b"-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            error("expire k 9223372036854776"),
            b"-ERR invalid expire time in 'expire' command\r\n"
        );
        assert!(matches!(
            parse_str("pexpire k -5"),
            Ok(Command::Expire {
                at: Deadline::In(-5),
                ..
            })
        ));
        assert!(matches!(
            parse_str("expireat k 1"),
            Ok(Command::Expire {
                at: Deadline::At(1000),
                ..
            })
        ));
        assert_eq!(
            error("select abc"),
            b"-ERR value is not an integer or out of range\r\n"
        );
    }

    #[test]
    fn hello_and_friends() {
        assert_eq!(error("hello 1"), b"-NOPROTO unsupported protocol version\r\n");
        assert_eq!(
            error("hello abc"),
            b"-ERR Protocol version is not an integer or out of range\r\n"
        );
        assert_eq!(
            error("hello 2 foo"),
            b"-ERR Syntax error in HELLO option 'foo'\r\n"
        );
        assert_eq!(
            error("hello 2 auth a"),
            b"-ERR Syntax error in HELLO option 'auth'\r\n"
        );
        assert!(matches!(
            parse_str("hello 3"),
            Ok(Command::Hello { version: Some(3), .. })
        ));
        assert_eq!(parse_str("post / HTTP/1.1"), Ok(Command::Refuse));
        assert_eq!(parse_str("Host: x"), Ok(Command::Refuse));
        assert_eq!(error("flushall foo"), b"-ERR syntax error\r\n");
        assert_eq!(parse_str("FLUSHDB async"), Ok(Command::FlushAll));
        assert_eq!(parse_str("QUIT a b"), Ok(Command::Quit));
        assert_eq!(
            parse_str("command"),
            Ok(Command::Command(CommandQuery::Info(vec![])))
        );
        assert_eq!(
            parse_str("COMMAND DOCS"),
            Ok(Command::Command(CommandQuery::Docs))
        );
    }

    #[test]
    fn targets() {
        assert_eq!(parse_str("get k").unwrap().target(), Target::Key(b"k"));
        assert_eq!(parse_str("set k v").unwrap().target(), Target::Key(b"k"));
        assert_eq!(parse_str("mget a b").unwrap().target(), Target::Keys);
        assert_eq!(parse_str("dbsize").unwrap().target(), Target::All);
        assert_eq!(parse_str("ping").unwrap().target(), Target::Connection);
        assert_eq!(
            parse_str("mset a 1 b 2"),
            Ok(Command::MSet(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]))
        );
        assert!(parse_str("set k v").unwrap().denies_oom());
        let family = |line| parse_str(line).unwrap().family();
        assert_eq!(family("get k"), Family::Read);
        assert_eq!(family("exists a b"), Family::Read);
        assert_eq!(family("del a b"), Family::Write);
        assert_eq!(family("flushall"), Family::Write);
        assert_eq!(family("info"), Family::Server);
        assert_eq!(family("ping"), Family::Connection);
        assert_eq!(Family::NAMES[Family::Server.index()], "server");
        assert!(!parse_str("del k").unwrap().denies_oom());
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name), "sorted");
    }

    #[test]
    fn lookup_finds_every_command_in_any_case() {
        for spec in COMMANDS {
            assert!(
                spec.name.bytes().all(|b| !b.is_ascii_uppercase()),
                "{}",
                spec.name
            );
            let upper = spec.name.to_ascii_uppercase();
            assert_eq!(lookup(upper.as_bytes()).map(|s| s.name), Some(spec.name));
            assert_eq!(lookup(spec.name.as_bytes()).map(|s| s.name), Some(spec.name));
        }
        for missing in [
            &b""[..],
            b"ge",
            b"gett",
            b"\xffget",
            b"zzz",
            b"get\0",
            &[b'g'; 40],
        ] {
            assert!(lookup(missing).is_none());
        }
    }
}
