//! One shard's keys: string values, expiry (lazy on access, and an active sweep that samples
//! keys with a TTL), deterministic memory accounting and `maxmemory` with `noeviction` or a
//! sampled `allkeys-lru`.
//!
//! The keyspace reads no clock and draws no entropy: the caller passes `now` (Unix time in
//! milliseconds) to every call, the hasher of its tables, and the seed of the generator that
//! picks samples.

use std::borrow::Cow;
use std::hash::BuildHasher;

use indexmap::set::MutableValues;
use indexmap::{IndexMap, IndexSet};

use crate::proto::kv::command::{
    Command, Condition, Deadline, ExpireCondition, NOT_AN_INTEGER, Scan, Set, TtlKind, invalid_expire,
};
use crate::proto::kv::record::Record;
use crate::proto::kv::session::glob_match;
use crate::proto::resp::{MAX_BULK_LEN, Reply, RespVersion, encode_bulk, push_int, string2ll};

/// What one key costs besides its name and value bytes, in the memory accounting: a fixed
/// figure for its table slot, headers and expiry, so that the accounting is deterministic.
pub const ENTRY_OVERHEAD: usize = 64;
/// Keys sampled per eviction (redis's `maxmemory-samples`).
pub const EVICTION_SAMPLES: usize = 5;
/// Keys with a TTL sampled per round of the active expiry sweep (redis's
/// `ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP`).
pub const EXPIRE_SAMPLES: usize = 20;
/// The percentage of a sample's keys that may be found expired for the sweep to stop
/// (redis's `ACTIVE_EXPIRE_CYCLE_ACCEPTABLE_STALE`): above it, another round follows.
pub const EXPIRE_ACCEPTABLE_STALE: usize = 10;

/// What [`Keyspace::expire_cycle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireCycle {
    /// Rounds of samples taken.
    pub rounds: usize,
    /// Keys removed.
    pub removed: usize,
    /// The last round still found more than [`EXPIRE_ACCEPTABLE_STALE`] percent of its sample
    /// expired (it stopped at `max_rounds`): more rounds are worth it.
    pub unfinished: bool,
}

/// `-OOM command not allowed when used memory > 'maxmemory'.`
pub const OOM: Reply = Reply::error("OOM command not allowed when used memory > 'maxmemory'.");

/// What happens to writes once the memory limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Commands that may add memory are refused with `-OOM`.
    #[default]
    NoEviction,
    /// The least recently used of a few sampled keys is evicted until memory is under the
    /// limit.
    AllKeysLru,
}

impl EvictionPolicy {
    /// The name redis gives the policy.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoEviction => "noeviction",
            Self::AllKeysLru => "allkeys-lru",
        }
    }

    /// The policy named `name` (`noeviction` or `allkeys-lru`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "noeviction" => Some(Self::NoEviction),
            "allkeys-lru" => Some(Self::AllKeysLru),
            _ => None,
        }
    }
}

/// A keyspace's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyspaceConfig {
    /// Accounted bytes above which the policy applies; 0 for no limit.
    pub maxmemory: usize,
    /// The policy.
    pub policy: EvictionPolicy,
    /// This keyspace's place when `maxmemory` is a share of a limit split over shards:
    /// `(shard, shards)`, named in the `-OOM` error so that it agrees with `INFO`.
    pub shard: Option<(usize, usize)>,
    /// Longest value `APPEND` may make (redis's `proto-max-bulk-len`, which bounds a value
    /// sent whole too): [`MAX_BULK_LEN`] by default.
    pub max_value: usize,
}

impl Default for KeyspaceConfig {
    fn default() -> Self {
        Self {
            maxmemory: 0,
            policy: EvictionPolicy::default(),
            shard: None,
            max_value: MAX_BULK_LEN,
        }
    }
}

/// A keyspace's figures, for `INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyspaceStats {
    /// Keys held (some may have expired and not been collected yet).
    pub keys: u64,
    /// Keys with a TTL.
    pub expires: u64,
    /// Estimated average TTL of keys with one, in milliseconds (from the sweep's samples).
    pub avg_ttl: u64,
    /// Accounted bytes: name, value and [`ENTRY_OVERHEAD`] of every key.
    pub used_memory: u64,
    /// The most accounted bytes held at once (summed over shards: each shard's own peak).
    pub used_memory_peak: u64,
    /// The memory limit (0: none).
    pub maxmemory: u64,
    /// Keys removed because they expired.
    pub expired_keys: u64,
    /// Keys evicted for memory.
    pub evicted_keys: u64,
    /// Commands refused with [`OOM`]: memory over the limit under `noeviction`.
    pub oom_refusals: u64,
    /// Reads that found their key.
    pub keyspace_hits: u64,
    /// Reads that did not.
    pub keyspace_misses: u64,
}

impl KeyspaceStats {
    /// Adds another shard's figures (the average TTL is weighted by keys with a TTL).
    pub fn add(&mut self, o: &KeyspaceStats) {
        let with_ttl = self.expires + o.expires;
        if with_ttl > 0 {
            let sum = u128::from(self.avg_ttl) * u128::from(self.expires)
                + u128::from(o.avg_ttl) * u128::from(o.expires);
            self.avg_ttl = u64::try_from(sum / u128::from(with_ttl)).unwrap_or(u64::MAX);
        }
        self.keys += o.keys;
        self.expires = with_ttl;
        self.used_memory += o.used_memory;
        self.used_memory_peak += o.used_memory_peak;
        self.maxmemory += o.maxmemory;
        self.expired_keys += o.expired_keys;
        self.evicted_keys += o.evicted_keys;
        self.oom_refusals += o.oom_refusals;
        self.keyspace_hits += o.keyspace_hits;
        self.keyspace_misses += o.keyspace_misses;
    }
}

/// One shard's keys.
#[derive(Debug)]
pub struct Keyspace<S> {
    /// The keys and their values, in an order that `swap_remove` keeps dense, so that a key
    /// can be sampled by index.
    records: IndexSet<Record, S>,
    /// The keys with a TTL and when they expire (Unix time in milliseconds), to look up for a
    /// record that has one and to sample for the sweep.
    expiring: IndexMap<Box<[u8]>, i64, S>,
    config: KeyspaceConfig,
    used: usize,
    /// The most `used` has been.
    peak: usize,
    /// Counts accesses: the LRU clock.
    clock: u64,
    rng: u64,
    stats: KeyspaceStats,
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// `-ERR key too long`, for a key past [`MAX_KEY_LEN`](crate::proto::kv::record::MAX_KEY_LEN) (only reachable with parser limits
/// raised above redis's).
const KEY_TOO_LONG: Reply = Reply::error("ERR key too long");

impl<S: BuildHasher + Clone> Keyspace<S> {
    /// An empty keyspace whose tables hash with `hasher` (give it a seeded one: keys come
    /// from peers), drawing samples from a generator seeded with `seed`.
    pub fn new(config: KeyspaceConfig, hasher: S, seed: u64) -> Self {
        Self {
            records: IndexSet::with_hasher(hasher.clone()),
            expiring: IndexMap::with_hasher(hasher),
            config,
            used: 0,
            peak: 0,
            clock: 0,
            // xorshift needs a non-zero state.
            rng: seed | 1,
            stats: KeyspaceStats::default(),
        }
    }

    /// The limits.
    pub fn config(&self) -> KeyspaceConfig {
        self.config
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True with no keys.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Accounted bytes.
    pub fn used_memory(&self) -> usize {
        self.used
    }

    /// The figures for `INFO`.
    pub fn stats(&self) -> KeyspaceStats {
        KeyspaceStats {
            keys: self.records.len() as u64,
            expires: self.expiring.len() as u64,
            used_memory: self.used as u64,
            used_memory_peak: self.peak.max(self.used) as u64,
            maxmemory: self.config.maxmemory as u64,
            ..self.stats
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn random_below(&mut self, n: usize) -> usize {
        (self.random() % n.max(1) as u64) as usize
    }

    /// Removes the key at `index`; its record.
    fn remove_index(&mut self, index: usize) -> Option<Record> {
        let record = self.records.swap_remove_index(index)?;
        self.used -= cost(record.key(), record.value());
        if record.has_ttl() {
            self.expiring.swap_remove(record.key());
        }
        Some(record)
    }

    /// When the key at `index` expires, if it has a TTL.
    fn expiry(&self, index: usize) -> Option<i64> {
        let record = self.records.get_index(index)?;
        if !record.has_ttl() {
            return None;
        }
        self.expiring.get(record.key()).copied()
    }

    /// The index of `key` if it exists and has not expired (an expired key is removed);
    /// `touch` marks it used for LRU.
    fn find(&mut self, key: &[u8], now: i64, touch: bool) -> Option<usize> {
        let index = self.records.get_index_of(key)?;
        if self.expiry(index).is_some_and(|at| at <= now) {
            self.remove_index(index);
            self.stats.expired_keys += 1;
            return None;
        }
        if touch {
            self.clock += 1;
            let clock = self.clock;
            self.records.get_index_mut2(index)?.touch(clock);
        }
        Some(index)
    }

    fn record(&mut self, index: usize) -> Option<&mut Record> {
        self.records.get_index_mut2(index)
    }

    /// A read of `key`: its record, counted as a hit or a miss.
    fn read(&mut self, key: &[u8], now: i64) -> Option<&Record> {
        match self.find(key, now, true) {
            Some(index) => {
                self.stats.keyspace_hits += 1;
                self.records.get_index(index)
            }
            None => {
                self.stats.keyspace_misses += 1;
                None
            }
        }
    }

    /// The value of `key` as a bulk reply, or nil.
    fn read_bulk(&mut self, key: &[u8], now: i64) -> Reply {
        match self.read(key, now) {
            Some(r) => Reply::Bulk(r.value().to_vec()),
            None => Reply::Nil,
        }
    }

    /// `MGET`'s values, unless together they pass the value limit: a request of a few KiB
    /// naming one large key many times would otherwise copy it as many times (the answer is
    /// refused once the copies pass the limit, before the next one is made).
    fn mget(&mut self, keys: &[Vec<u8>], now: i64) -> Reply {
        let mut bytes = 0usize;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.read_bulk(key, now);
            if let Reply::Bulk(v) = &value {
                bytes = bytes.saturating_add(v.len());
                if bytes > self.config.max_value {
                    return Reply::Error(Cow::Owned(
                        format!(
                            "ERR MGET answer over {} bytes (the value limit, proto-max-bulk-len): ask for fewer keys at once",
                            self.config.max_value
                        )
                        .into_bytes(),
                    ));
                }
            }
            values.push(value);
        }
        Reply::Array(values)
    }

    /// Replaces the value at `index`, keeping its expiry.
    fn overwrite(&mut self, index: usize, value: &[u8]) {
        if let Some(record) = self.records.get_index_mut2(index) {
            self.used = self.used - record.value().len() + value.len();
            record.set_value(value);
        }
        self.peak = self.peak.max(self.used);
    }

    /// Sets or clears the expiry of the key at `index`.
    fn set_expiry(&mut self, index: usize, at: Option<i64>) {
        let Some(record) = self.records.get_index_mut2(index) else {
            return;
        };
        let had = record.has_ttl();
        record.set_has_ttl(at.is_some());
        match at {
            Some(at) => {
                self.expiring.insert(record.key().into(), at);
            }
            None if had => {
                self.expiring.swap_remove(record.key());
            }
            None => {}
        }
    }

    /// Adds a new key (that does not exist), touched now; returns its index, or `None` for
    /// a key too long to hold.
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Option<usize> {
        self.clock += 1;
        let record = Record::new(key, value, self.clock)?;
        self.used += cost(key, value);
        self.peak = self.peak.max(self.used);
        Some(self.records.insert_full(record).0)
    }

    /// Sets `key` to `value`: a new key, or a new value for an existing one (its expiry
    /// kept if `keep_ttl`, removed otherwise). Returns its index (`None`: key too long).
    fn store(&mut self, key: &[u8], value: &[u8], now: i64, keep_ttl: bool) -> Option<usize> {
        match self.find(key, now, true) {
            Some(index) => {
                self.overwrite(index, value);
                if !keep_ttl {
                    self.set_expiry(index, None);
                }
                Some(index)
            }
            None => self.insert(key, value),
        }
    }

    /// Evicts keys until memory is under the limit, if the policy allows; false if it is
    /// still over.
    fn make_room(&mut self) -> bool {
        let limit = self.config.maxmemory;
        if limit == 0 || self.used <= limit {
            return true;
        }
        if self.config.policy == EvictionPolicy::NoEviction {
            return false;
        }
        while self.used > limit && !self.records.is_empty() {
            let mut oldest: Option<(u32, usize)> = None;
            for _ in 0..EVICTION_SAMPLES.min(self.records.len()) {
                let i = self.random_below(self.records.len());
                let idle = self.records.get_index(i).map_or(0, |r| r.idle(self.clock));
                if oldest.is_none_or(|(most, _)| idle > most) {
                    oldest = Some((idle, i));
                }
            }
            let Some((_, victim)) = oldest else { break };
            self.remove_index(victim);
            self.stats.evicted_keys += 1;
        }
        self.used <= limit
    }

    /// Rounds of the active expiry sweep, as redis's `activeExpireCycle`: each samples up to
    /// [`EXPIRE_SAMPLES`] keys with a TTL and removes the expired ones; another round follows
    /// while more than [`EXPIRE_ACCEPTABLE_STALE`] percent of a round's sample had expired, at
    /// most `max_rounds` in all. The caller bounds the time spent over several calls (see
    /// [`ExpireCycle::unfinished`]).
    pub fn expire_cycle(&mut self, now: i64, max_rounds: usize) -> ExpireCycle {
        let mut cycle = ExpireCycle::default();
        for _ in 0..max_rounds {
            let sample = EXPIRE_SAMPLES.min(self.expiring.len());
            if sample == 0 {
                cycle.unfinished = false;
                break;
            }
            let (mut expired, mut ttl_sum, mut ttl_count) = (0, 0u64, 0u64);
            for _ in 0..sample {
                if self.expiring.is_empty() {
                    break;
                }
                let i = self.random_below(self.expiring.len());
                let Some((key, &at)) = self.expiring.get_index(i) else {
                    break;
                };
                if at > now {
                    ttl_sum = ttl_sum.saturating_add(u64::try_from(at - now).unwrap_or(0));
                    ttl_count += 1;
                    continue;
                }
                match self.records.get_index_of(&**key) {
                    Some(index) => {
                        self.remove_index(index);
                        self.stats.expired_keys += 1;
                        expired += 1;
                    }
                    // Not in the table: a stale entry (never expected); drop it.
                    None => {
                        self.expiring.swap_remove_index(i);
                    }
                }
            }
            if let Some(avg) = ttl_sum.checked_div(ttl_count) {
                // Redis's running estimate: each sample weighs a fiftieth.
                self.stats.avg_ttl = if self.stats.avg_ttl == 0 {
                    avg
                } else {
                    self.stats.avg_ttl / 50 * 49 + avg / 50
                };
            }
            cycle.rounds += 1;
            cycle.removed += expired;
            cycle.unfinished = expired * 100 > sample * EXPIRE_ACCEPTABLE_STALE;
            if !cycle.unfinished {
                break;
            }
        }
        if self.expiring.is_empty() {
            self.stats.avg_ttl = 0;
            cycle.unfinished = false;
        }
        cycle
    }

    /// Removes every key.
    pub fn flush(&mut self) {
        self.records.clear();
        self.expiring.clear();
        self.used = 0;
    }

    /// Runs a keyspace command as [`execute`](Self::execute) does and appends the answer's
    /// bytes in `protocol` to `out`; a `GET` is encoded straight from the stored value, with no copy of
    /// it in between.
    pub fn execute_into(&mut self, cmd: Command, now: i64, protocol: RespVersion, out: &mut Vec<u8>) {
        if !self.admit(&cmd) {
            return self.oom().encode(out);
        }
        match cmd {
            Command::Get(key) => match self.read(&key, now) {
                Some(r) => encode_bulk(out, r.value()),
                None => out.extend_from_slice(protocol.nil()),
            },
            cmd => self.run(cmd, now).encode_as(protocol, out),
        }
    }

    /// Runs a keyspace command at `now` (Unix time in milliseconds) and answers it as redis
    /// does. Commands of other kinds (the connection's own, `INFO`) answer an error.
    pub fn execute(&mut self, cmd: Command, now: i64) -> Reply {
        if !self.admit(&cmd) {
            return self.oom();
        }
        self.run(cmd, now)
    }

    /// Runs keyspace commands in order at `now` as [`execute`](Self::execute) does, stopping
    /// once their answers take `budget` bytes ([`Reply::max_encoded_len`]); the first always
    /// runs. Returns the answers and the commands not run, both in order: a batch of `GET`s
    /// of large values for a connection that can take only so much runs a part at a time.
    pub fn execute_within(
        &mut self,
        cmds: Vec<Command>,
        now: i64,
        budget: usize,
    ) -> (Vec<Reply>, Vec<Command>) {
        let mut cmds = cmds.into_iter();
        let mut replies = Vec::with_capacity(cmds.len());
        let mut used = 0usize;
        for cmd in cmds.by_ref() {
            let reply = self.execute(cmd, now);
            used = used.saturating_add(reply.max_encoded_len());
            replies.push(reply);
            if used >= budget {
                break;
            }
        }
        (replies, cmds.collect())
    }

    /// The `-OOM` error: redis's, and on a shard of several, which shard and what its share
    /// is (a shard refuses once it passes its part of `maxmemory`, while the whole may be
    /// below `INFO`'s `maxmemory`).
    fn oom(&self) -> Reply {
        match self.config.shard {
            Some((shard, shards)) if shards > 1 => Reply::Error(
                format!(
                    "OOM command not allowed when used memory > 'maxmemory'. The key's shard \
                     ({} of {shards}) holds {} bytes, over its share of maxmemory, {} bytes \
                     (INFO memory: weft_maxmemory_per_shard, weft_used_memory_fullest_shard).",
                    shard + 1,
                    self.used,
                    self.config.maxmemory
                )
                .into_bytes()
                .into(),
            ),
            _ => OOM,
        }
    }

    /// Applies the memory policy before a command: false if the command must be refused
    /// with [`OOM`].
    fn admit(&mut self, cmd: &Command) -> bool {
        let refused = self.config.maxmemory > 0 && !self.make_room() && cmd.denies_oom();
        if refused {
            self.stats.oom_refusals += 1;
        }
        !refused
    }

    /// Runs an admitted command.
    fn run(&mut self, cmd: Command, now: i64) -> Reply {
        match cmd {
            Command::Get(key) => self.read_bulk(&key, now),
            Command::Set(set) => self.set(set, now),
            Command::GetDel(key) => match self.find(&key, now, false) {
                Some(index) => self
                    .remove_index(index)
                    .map_or(Reply::Nil, |r| Reply::Bulk(r.value().to_vec())),
                None => Reply::Nil,
            },
            Command::IncrBy(key, by) => self.incr_by(&key, by, now),
            Command::Append(key, tail) => match self.find(&key, now, true) {
                None => match self.insert(&key, &tail) {
                    Some(_) => Reply::Integer(tail.len() as i64),
                    None => KEY_TOO_LONG,
                },
                Some(index) => {
                    let max_value = self.config.max_value;
                    let Some(record) = self.record(index) else {
                        return Reply::Integer(0);
                    };
                    let len = record.value().len();
                    if len + tail.len() > max_value {
                        return Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
                    }
                    record.append(&tail);
                    self.used += tail.len();
                    self.peak = self.peak.max(self.used);
                    Reply::Integer((len + tail.len()) as i64)
                }
            },
            Command::Strlen(key) => {
                Reply::Integer(self.read(&key, now).map_or(0, |r| r.value().len() as i64))
            }
            Command::Expire {
                key,
                at,
                condition,
                name,
            } => self.expire(&key, at, condition, name, now),
            Command::Ttl(key, kind) => self.ttl(&key, kind, now),
            Command::Persist(key) => match self.find(&key, now, true) {
                Some(index) if self.expiry(index).is_some() => {
                    self.set_expiry(index, None);
                    Reply::Integer(1)
                }
                _ => Reply::Integer(0),
            },
            Command::MGet(keys) => self.mget(&keys, now),
            Command::MSet(pairs) => {
                for (key, value) in pairs {
                    if self.store(&key, &value, now, false).is_none() {
                        return KEY_TOO_LONG;
                    }
                }
                Reply::OK
            }
            Command::Del(keys) => {
                let mut n = 0;
                for key in keys {
                    if let Some(index) = self.find(&key, now, false) {
                        self.remove_index(index);
                        n += 1;
                    }
                }
                Reply::Integer(n)
            }
            Command::Exists(keys) => {
                Reply::Integer(keys.iter().filter(|k| self.find(k, now, true).is_some()).count() as i64)
            }
            Command::Type(key) => Reply::Status(match self.find(&key, now, false) {
                Some(_) => "string".into(),
                None => "none".into(),
            }),
            Command::GetEx { key, expire, persist } => self.getex(&key, expire, persist, now),
            Command::Keys(pattern) => Reply::Array(
                (0..self.records.len())
                    .rev()
                    .filter_map(|i| self.live_key(i, now, Some(&pattern)))
                    .map(Reply::Bulk)
                    .collect(),
            ),
            Command::Scan(scan) => self.scan(&scan, now),
            Command::DbSize => Reply::Integer(self.records.len() as i64),
            Command::FlushAll => {
                self.flush();
                Reply::OK
            }
            _ => Reply::error("ERR not a keyspace command"),
        }
    }

    fn set(&mut self, set: Set, now: i64) -> Reply {
        let Set {
            key,
            value,
            expire,
            condition,
            get,
            keep_ttl,
            integer_reply,
            name,
        } = set;
        let expire = match expire {
            None => None,
            Some(Deadline::At(at)) => Some(at),
            Some(Deadline::In(ms)) => match now.checked_add(ms) {
                Some(at) => Some(at),
                None => return invalid_expire(name),
            },
        };
        let old = get.then(|| self.read_bulk(&key, now));
        let found = self.find(&key, now, false).is_some();
        if (condition == Condition::IfMissing && found) || (condition == Condition::IfExists && !found) {
            return match old {
                Some(old) => old,
                None if integer_reply => Reply::Integer(0),
                None => Reply::Nil,
            };
        }
        let Some(index) = self.store(&key, &value, now, keep_ttl) else {
            return KEY_TOO_LONG;
        };
        if expire.is_some() {
            self.set_expiry(index, expire);
        }
        match old {
            Some(old) => old,
            None if integer_reply => Reply::Integer(1),
            None => Reply::OK,
        }
    }

    /// The name of the key at `index` if it has not expired and matches `pattern` (case
    /// counts, as in `KEYS`); expired keys are left for the sweep, so that indices stay put.
    fn live_key(&self, index: usize, now: i64, pattern: Option<&[u8]>) -> Option<Vec<u8>> {
        let record = self.records.get_index(index)?;
        if self.expiry(index).is_some_and(|at| at <= now) {
            return None;
        }
        let key = record.key();
        pattern
            .is_none_or(|p| glob_match(p, key, false))
            .then(|| key.to_vec())
    }

    /// `SCAN` on this shard, the shard `scan.shard` names of `shards`: looks at about `count`
    /// keys downward from the place the cursor names (the shard's last key at its start),
    /// and answers the next cursor (the next shard's start once this one is done, 0 after
    /// the last) and the live keys that match. Going downward, a key removed meanwhile
    /// moves the last key to its index, which was either looked at or will be: every key
    /// present for the whole scan is answered at least once, as in redis.
    pub fn scan(&self, scan: &Scan, now: i64) -> Reply {
        let (shard, shards) = (scan.shard.0 as u64, scan.shard.1.max(1) as u64);
        let place = scan.cursor / shards;
        let len = self.records.len();
        let mut below = match usize::try_from(place) {
            Ok(0) => len,
            Ok(p) => p.min(len),
            Err(_) => len,
        };
        let mut keys = Vec::new();
        for _ in 0..scan.count {
            if below == 0 {
                break;
            }
            below -= 1;
            if let Some(key) = self.live_key(below, now, scan.pattern.as_deref()) {
                keys.push(Reply::Bulk(key));
            }
        }
        if scan.none {
            keys.clear();
        }
        let next = match below {
            0 if shard + 1 < shards => shard + 1,
            0 => 0,
            b => (b as u64).saturating_mul(shards).saturating_add(shard),
        };
        Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(keys)])
    }

    /// `GETEX`: the value, and the expiry changed (a past one deletes the key).
    fn getex(&mut self, key: &[u8], expire: Option<Deadline>, persist: bool, now: i64) -> Reply {
        let at = match expire {
            None => None,
            Some(Deadline::At(at)) => Some(at),
            Some(Deadline::In(ms)) => match now.checked_add(ms) {
                Some(at) => Some(at),
                None => return invalid_expire("getex"),
            },
        };
        let value = match self.read(key, now) {
            Some(r) => r.value().to_vec(),
            None => return Reply::Nil,
        };
        if let Some(index) = self.records.get_index_of(key) {
            match at {
                Some(at) if at <= now => {
                    self.remove_index(index);
                }
                Some(at) => self.set_expiry(index, Some(at)),
                None if persist => self.set_expiry(index, None),
                None => {}
            }
        }
        Reply::Bulk(value)
    }

    fn incr_by(&mut self, key: &[u8], by: i64, now: i64) -> Reply {
        let found = self.find(key, now, true);
        let current = match found {
            Some(index) => match self.record(index).and_then(|r| string2ll(r.value())) {
                Some(n) => n,
                None => return NOT_AN_INTEGER,
            },
            None => 0,
        };
        let Some(next) = current.checked_add(by) else {
            return Reply::error("ERR increment or decrement would overflow");
        };
        let mut text = Vec::with_capacity(20);
        push_int(&mut text, next);
        match found {
            Some(index) => self.overwrite(index, &text),
            None => {
                if self.insert(key, &text).is_none() {
                    return KEY_TOO_LONG;
                }
            }
        }
        Reply::Integer(next)
    }

    fn expire(&mut self, key: &[u8], at: Deadline, c: ExpireCondition, name: &str, now: i64) -> Reply {
        let when = match at {
            Deadline::At(at) => at,
            Deadline::In(ms) => match now.checked_add(ms) {
                Some(at) => at,
                None => return invalid_expire(name),
            },
        };
        let Some(index) = self.find(key, now, true) else {
            return Reply::Integer(0);
        };
        let current = self.expiry(index);
        let refused = (c.nx && current.is_some())
            || (c.xx && current.is_none())
            || (c.gt && current.is_none_or(|cur| when <= cur))
            || (c.lt && current.is_some_and(|cur| when >= cur));
        if refused {
            return Reply::Integer(0);
        }
        if when <= now {
            self.remove_index(index);
        } else {
            self.set_expiry(index, Some(when));
        }
        Reply::Integer(1)
    }

    fn ttl(&mut self, key: &[u8], kind: TtlKind, now: i64) -> Reply {
        let Some(index) = self.find(key, now, false) else {
            return Reply::Integer(-2);
        };
        let Some(at) = self.expiry(index) else {
            return Reply::Integer(-1);
        };
        let (value, millis) = match kind {
            TtlKind::Seconds => (at - now, false),
            TtlKind::Millis => (at - now, true),
            TtlKind::AtSeconds => (at, false),
            TtlKind::AtMillis => (at, true),
        };
        let value = value.max(0);
        // Rounded to the nearest second, without overflow near i64::MAX (as redis answers).
        let seconds = || i64::try_from((i128::from(value) + 500) / 1000).unwrap_or(i64::MAX);
        Reply::Integer(if millis { value } else { seconds() })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::BuildHasherDefault;

    use super::*;
    use crate::proto::kv::command::parse;

    type Ks = Keyspace<BuildHasherDefault<DefaultHasher>>;

    const T0: i64 = 1_700_000_000_000;

    fn ks(config: KeyspaceConfig) -> Ks {
        Keyspace::new(config, BuildHasherDefault::default(), 7)
    }

    /// Runs `line` (arguments split at spaces) at `now`; the reply's bytes as text.
    fn run(ks: &mut Ks, line: &str, now: i64) -> String {
        let reply = match parse(line.split(' ').map(|a| a.as_bytes().to_vec()).collect()) {
            Ok(cmd) => ks.execute(cmd, now),
            Err(e) => e,
        };
        String::from_utf8(reply.to_bytes()).unwrap()
    }

    /// Runs each `(command, expected reply)` at `now`.
    fn script(ks: &mut Ks, now: i64, steps: &[(&str, &str)]) {
        for (line, want) in steps {
            assert_eq!(run(ks, line, now), *want, "{line}");
        }
    }

    #[test]
    fn answers_encoded_in_place_match_the_replies() {
        let limited = KeyspaceConfig {
            maxmemory: 1 << 20,
            ..KeyspaceConfig::default()
        };
        for config in [KeyspaceConfig::default(), limited] {
            // Two keyspaces with the same history: one answers in place, one with replies.
            let (mut in_place, mut replies) = (ks(config), ks(config));
            for line in [
                "get a",
                "set a hello",
                "get a",
                "append a !",
                "get a",
                "incr n",
                "del a",
                "get a",
            ] {
                let cmd = parse(line.split(' ').map(|a| a.as_bytes().to_vec()).collect()).unwrap();
                let mut out = b"before".to_vec();
                in_place.execute_into(cmd.clone(), T0, RespVersion::Resp2, &mut out);
                let want = [&b"before"[..], &replies.execute(cmd, T0).to_bytes()].concat();
                assert_eq!(out, want, "{line}");
            }
        }
    }

    #[test]
    fn a_batch_runs_in_order_until_its_answers_fill_the_budget() {
        let mut k = ks(KeyspaceConfig::default());
        let cmd = |line: &str| parse(line.split(' ').map(|a| a.as_bytes().to_vec()).collect()).unwrap();
        let big = "x".repeat(1000);
        run(&mut k, &format!("set a {big}"), T0);
        run(&mut k, &format!("set b {big}"), T0);
        let batch = || vec![cmd("incr n"), cmd("get a"), cmd("get b"), cmd("incr n")];
        // Room for one value: the commands up to the one that fills it run, the rest wait.
        let (replies, rest) = k.execute_within(batch(), T0, 1000);
        assert_eq!(replies, [Reply::Integer(1), Reply::bulk(&big)]);
        assert_eq!(rest, [cmd("get b"), cmd("incr n")]);
        // No room: the first still runs, so a batch always moves.
        let (replies, rest) = k.execute_within(rest, T0, 0);
        assert_eq!(replies, [Reply::bulk(&big)]);
        assert_eq!(rest, [cmd("incr n")]);
        // Room for all.
        let (replies, rest) = k.execute_within(batch(), T0, usize::MAX);
        assert_eq!(replies.len(), 4);
        assert_eq!(replies[3], Reply::Integer(3));
        assert!(rest.is_empty());
    }

    #[test]
    fn strings_byte_exact() {
        let mut k = ks(KeyspaceConfig::default());
        script(
            &mut k,
            T0,
            &[
                ("get a", "$-1\r\n"),
                ("set a 1", "+OK\r\n"),
                ("get a", "$1\r\n1\r\n"),
                ("set a 2 get", "$1\r\n1\r\n"),
                ("set a 3 get nx", "$1\r\n2\r\n"),
                ("set a 3 nx", "$-1\r\n"),
                ("set b 3 xx", "$-1\r\n"),
                ("set b 3 xx get", "$-1\r\n"),
                ("setnx a 9", ":0\r\n"),
                ("setnx b 9", ":1\r\n"),
                ("getset b 10", "$1\r\n9\r\n"),
                ("getdel b", "$2\r\n10\r\n"),
                ("getdel b", "$-1\r\n"),
                ("set a x", "+OK\r\n"),
                ("incr a", "-ERR value is not an integer or out of range\r\n"),
                ("incr n", ":1\r\n"),
                ("incrby n 41", ":42\r\n"),
                ("decr n", ":41\r\n"),
                ("decrby n 50", ":-9\r\n"),
                ("get n", "$2\r\n-9\r\n"),
                ("set c 9223372036854775807", "+OK\r\n"),
                ("incr c", "-ERR increment or decrement would overflow\r\n"),
                ("set c 01", "+OK\r\n"),
                ("incr c", "-ERR value is not an integer or out of range\r\n"),
                ("append d hello", ":5\r\n"),
                ("append d world", ":10\r\n"),
                ("strlen d", ":10\r\n"),
                ("strlen nope", ":0\r\n"),
                ("mset x 1 y 2", "+OK\r\n"),
                ("mget x y z", "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n"),
                ("del x x y z", ":2\r\n"),
                ("exists d d a nope", ":3\r\n"),
                ("dbsize", ":4\r\n"),
                ("flushall", "+OK\r\n"),
                ("dbsize", ":0\r\n"),
            ],
        );
        assert_eq!(k.used_memory(), 0);
    }

    #[test]
    fn expiry_lazy_and_ttls() {
        let mut k = ks(KeyspaceConfig::default());
        script(
            &mut k,
            T0,
            &[
                ("set a 1 ex 100", "+OK\r\n"),
                ("ttl a", ":100\r\n"),
                ("pttl a", ":100000\r\n"),
                ("expiretime a", &format!(":{}\r\n", (T0 + 100_000 + 500) / 1000)),
                ("pexpiretime a", &format!(":{}\r\n", T0 + 100_000)),
                ("ttl nope", ":-2\r\n"),
                ("set b 1", "+OK\r\n"),
                ("ttl b", ":-1\r\n"),
                ("expiretime b", ":-1\r\n"),
                ("expire b 100 xx", ":0\r\n"),
                ("expire b 100 nx", ":1\r\n"),
                ("expire b 100 nx", ":0\r\n"),
                ("expire b 50 gt", ":0\r\n"),
                ("expire b 50 lt", ":1\r\n"),
                ("expire b 200 gt", ":1\r\n"),
                ("persist b", ":1\r\n"),
                ("persist b", ":0\r\n"),
                ("expire b 10 gt", ":0\r\n"),
                ("expire b 10 lt", ":1\r\n"),
                ("expire nope 10", ":0\r\n"),
                ("set c 1 px 1500", "+OK\r\n"),
                ("ttl c", ":2\r\n"),
                ("set a 2 keepttl", "+OK\r\n"),
                ("ttl a", ":100\r\n"),
                ("set a 3", "+OK\r\n"),
                ("ttl a", ":-1\r\n"),
                (
                    "set a 1 ex 9223372036854775",
                    "-ERR invalid expire time in 'set' command\r\n",
                ),
                (
                    "pexpire a 9223372036854775807",
                    "-ERR invalid expire time in 'pexpire' command\r\n",
                ),
                ("set z 1", "+OK\r\n"),
                ("pexpireat z 9223372036854775807", ":1\r\n"),
                ("expiretime z", ":9223372036854776\r\n"),
                ("pexpiretime z", ":9223372036854775807\r\n"),
                ("del z", ":1\r\n"),
                ("incr i", ":1\r\n"),
                ("expire i 10", ":1\r\n"),
                ("incr i", ":2\r\n"),
                ("ttl i", ":10\r\n"),
            ],
        );
        // Later: c has expired, a has not.
        script(
            &mut k,
            T0 + 1500,
            &[
                ("get c", "$-1\r\n"),
                ("ttl c", ":-2\r\n"),
                ("pttl b", ":8500\r\n"),
                ("exists a b c", ":2\r\n"),
            ],
        );
        // A past expiry deletes at once; a negative one too.
        script(
            &mut k,
            T0 + 2000,
            &[
                ("expire b -1", ":1\r\n"),
                ("exists b", ":0\r\n"),
                ("set e 1 pxat 1", "+OK\r\n"),
                ("get e", "$-1\r\n"),
                ("set e 1", "+OK\r\n"),
                ("pexpireat e 1", ":1\r\n"),
                ("exists e", ":0\r\n"),
            ],
        );
        assert_eq!(k.stats().expired_keys, 2);
    }

    #[test]
    fn the_sweep_collects_expired_keys() {
        let mut k = ks(KeyspaceConfig::default());
        for i in 0..1000 {
            let ttl = if i % 2 == 0 { "px 10" } else { "ex 1000" };
            run(&mut k, &format!("set k{i} v {ttl}"), T0);
        }
        for i in 0..100 {
            run(&mut k, &format!("set p{i} v"), T0);
        }
        assert_eq!(k.stats().expires, 1000);
        let mut removed = 0;
        for _ in 0..200 {
            let cycle = k.expire_cycle(T0 + 20, 16);
            assert!(cycle.rounds <= 16);
            removed += cycle.removed;
        }
        // Sampling stops once at most a tenth of a sample expired: most of them go.
        assert!(removed >= 400, "{removed}");
        let stats = k.stats();
        assert_eq!(stats.keys, 1100 - removed as u64);
        assert_eq!(stats.expired_keys, removed as u64);
        assert!(
            stats.avg_ttl > 900_000 && stats.avg_ttl <= 1_000_000,
            "{}",
            stats.avg_ttl
        );
        // Lazy expiry finds the rest.
        for i in (0..1000).step_by(2) {
            assert_eq!(run(&mut k, &format!("get k{i}"), T0 + 20), "$-1\r\n");
        }
        assert_eq!(k.stats().keys, 600);
        assert_eq!(k.stats().expires, 500);
    }

    #[test]
    fn the_sweep_goes_on_while_most_samples_expired() {
        let mut k = ks(KeyspaceConfig::default());
        for i in 0..10_000 {
            run(&mut k, &format!("set k{i} v px 10"), T0);
        }
        // Every sample is all expired: each call takes its every round and says there is more.
        let cycle = k.expire_cycle(T0 + 20, 4);
        assert_eq!((cycle.rounds, cycle.removed, cycle.unfinished), (4, 80, true));
        // Called again while unfinished (as the shard does within its time budget), the
        // sweep empties the shard: the last rounds sample what is left.
        let mut calls = 1;
        while k.expire_cycle(T0 + 20, 16).unfinished {
            calls += 1;
            assert!(calls < 10_000, "bounded");
        }
        assert!(k.is_empty(), "{} left", k.len());
        assert_eq!(k.stats().expired_keys, 10_000);
        // Nothing with a TTL: nothing to do.
        run(&mut k, "set p v", T0);
        assert_eq!(k.expire_cycle(T0 + 20, 16), ExpireCycle::default());
    }

    #[test]
    fn scan_returns_every_key_present_throughout_despite_deletes() {
        let mut k = ks(KeyspaceConfig::default());
        for i in 0..1000 {
            run(&mut k, &format!("set k{i} v"), T0);
        }
        // Scan this keyspace as shard 1 of 3, deleting and adding keys between calls.
        let mut cursor = 1u64;
        let mut seen = std::collections::HashSet::new();
        let mut deleted = std::collections::HashSet::new();
        for call in 0..10_000 {
            let scan = Scan {
                cursor,
                pattern: Some(b"k*".to_vec()),
                count: 10,
                none: false,
                shard: (1, 3),
            };
            let Reply::Array(parts) = k.scan(&scan, T0) else {
                panic!("scan")
            };
            let (Reply::Bulk(next), Reply::Array(keys)) = (&parts[0], &parts[1]) else {
                panic!("{parts:?}")
            };
            for key in keys {
                if let Reply::Bulk(key) = key {
                    seen.insert(key.clone());
                }
            }
            cursor = std::str::from_utf8(next).unwrap().parse().unwrap();
            if cursor == 2 {
                break; // The next shard's start: this one is done.
            }
            assert_eq!(cursor % 3, 1, "the cursor stays on its shard");
            let victim = format!("k{}", (call * 37) % 1000);
            if run(&mut k, &format!("del {victim}"), T0) == ":1\r\n" {
                deleted.insert(victim.into_bytes());
            }
            run(&mut k, &format!("set new{call} v"), T0);
        }
        assert_eq!(cursor, 2);
        for i in 0..1000 {
            let key = format!("k{i}").into_bytes();
            assert!(deleted.contains(&key) || seen.contains(&key), "k{i} missed");
        }
        assert!(seen.iter().all(|key| key.starts_with(b"k")), "MATCH");
        // The last shard's end: cursor 0; TYPE other than string: nothing.
        let scan = Scan {
            cursor: 0,
            pattern: None,
            count: 100_000,
            none: true,
            shard: (0, 1),
        };
        assert_eq!(k.scan(&scan, T0).to_bytes(), b"*2\r\n$1\r\n0\r\n*0\r\n");
    }

    #[test]
    fn getex_type_and_keys() {
        let mut k = ks(KeyspaceConfig::default());
        script(
            &mut k,
            T0,
            &[
                ("set a 1", "+OK\r\n"),
                ("set b 2 px 10", "+OK\r\n"),
                ("type a", "+string\r\n"),
                ("type nope", "+none\r\n"),
                ("getex a ex 100", "$1\r\n1\r\n"),
                ("ttl a", ":100\r\n"),
                ("getex a persist", "$1\r\n1\r\n"),
                ("ttl a", ":-1\r\n"),
                ("getex a pxat 1", "$1\r\n1\r\n"),
                ("exists a", ":0\r\n"),
                ("getex nope ex 1", "$-1\r\n"),
                ("set A 1", "+OK\r\n"),
                ("keys a*", "*0\r\n"),
                ("keys [AB]", "*1\r\n$1\r\nA\r\n"),
                ("keys [ab]", "*1\r\n$1\r\nb\r\n"),
            ],
        );
        // An expired key is neither listed nor of a type.
        script(
            &mut k,
            T0 + 20,
            &[("keys *", "*1\r\n$1\r\nA\r\n"), ("type b", "+none\r\n")],
        );
    }

    #[test]
    fn memory_is_accounted_exactly() {
        let mut k = ks(KeyspaceConfig::default());
        run(&mut k, "set key value", T0);
        assert_eq!(k.used_memory(), 3 + 5 + ENTRY_OVERHEAD);
        run(&mut k, "append key 12", T0);
        assert_eq!(k.used_memory(), 3 + 7 + ENTRY_OVERHEAD);
        run(&mut k, "set key v ex 10", T0);
        assert_eq!(k.used_memory(), 3 + 1 + ENTRY_OVERHEAD);
        run(&mut k, "incrby n 100", T0);
        assert_eq!(k.used_memory(), 2 * ENTRY_OVERHEAD + 4 + 1 + 3);
        run(&mut k, "del key n", T0);
        assert_eq!(k.used_memory(), 0);
    }

    #[test]
    fn append_stops_at_the_configured_value_limit() {
        let mut k = ks(KeyspaceConfig {
            max_value: 8,
            ..KeyspaceConfig::default()
        });
        assert_eq!(run(&mut k, "append a 12345", T0), ":5\r\n");
        assert_eq!(run(&mut k, "append a 678", T0), ":8\r\n");
        // As redis with proto-max-bulk-len 8: refused, the value unchanged.
        assert_eq!(
            run(&mut k, "append a 9", T0),
            "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
        );
        assert_eq!(run(&mut k, "strlen a", T0), ":8\r\n");
    }

    #[test]
    fn an_mget_that_would_copy_more_than_the_value_limit_is_refused() {
        let mut k = ks(KeyspaceConfig {
            max_value: 8,
            ..KeyspaceConfig::default()
        });
        assert_eq!(run(&mut k, "set a 12345", T0), "+OK\r\n");
        assert_eq!(run(&mut k, "mget a nope", T0), "*2\r\n$5\r\n12345\r\n$-1\r\n");
        assert_eq!(
            run(&mut k, "mget a a", T0),
            "-ERR MGET answer over 8 bytes (the value limit, proto-max-bulk-len): ask for fewer keys at once\r\n"
        );
    }

    #[test]
    fn noeviction_refuses_writes_over_the_limit() {
        let mut k = ks(KeyspaceConfig {
            maxmemory: 1000,
            policy: EvictionPolicy::NoEviction,
            ..KeyspaceConfig::default()
        });
        let mut i = 0;
        while k.used_memory() <= 1000 {
            assert_eq!(run(&mut k, &format!("set key{i} 0123456789"), T0), "+OK\r\n");
            i += 1;
        }
        let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
        assert_eq!(run(&mut k, "set another 1", T0), oom);
        assert_eq!(run(&mut k, "append key0 1", T0), oom);
        assert_eq!(run(&mut k, "incr key0", T0), oom);
        assert_eq!(run(&mut k, "mset a 1", T0), oom);
        assert_eq!(k.stats().oom_refusals, 4);
        // Reads, deletes and expiry changes still run.
        assert_eq!(run(&mut k, "get key0", T0), "$10\r\n0123456789\r\n");
        assert_eq!(run(&mut k, "expire key0 10", T0), ":1\r\n");
        assert_eq!(run(&mut k, "del key0 key1", T0), ":2\r\n");
        assert_eq!(run(&mut k, "set another 1", T0), "+OK\r\n");
        assert_eq!(k.stats().oom_refusals, 4, "admitted commands are not counted");
        assert!(k.stats().used_memory_peak > 1000);
        // A shard of several names itself and its share.
        let mut shard = ks(KeyspaceConfig {
            maxmemory: 100,
            policy: EvictionPolicy::NoEviction,
            shard: Some((1, 2)),
            ..KeyspaceConfig::default()
        });
        run(&mut shard, "set a 0123456789012345678901234567890123456789", T0);
        assert_eq!(
            run(&mut shard, "set b 1", T0),
            "-OOM command not allowed when used memory > 'maxmemory'. The key's shard (2 of 2) \
             holds 105 bytes, over its share of maxmemory, 100 bytes (INFO memory: \
             weft_maxmemory_per_shard, weft_used_memory_fullest_shard).\r\n"
        );
    }

    #[test]
    fn allkeys_lru_evicts_the_least_recently_used() {
        let mut k = ks(KeyspaceConfig {
            maxmemory: 100 * (ENTRY_OVERHEAD + 10),
            policy: EvictionPolicy::AllKeysLru,
            ..KeyspaceConfig::default()
        });
        for i in 0..100 {
            run(&mut k, &format!("set k{i:03} 123456"), T0);
        }
        // Keep the first ten hot.
        for i in 0..10 {
            run(&mut k, &format!("get k{i:03}"), T0);
        }
        for i in 100..300 {
            assert_eq!(run(&mut k, &format!("set k{i:03} 123456"), T0), "+OK\r\n");
            for hot in 0..10 {
                run(&mut k, &format!("get k{hot:03}"), T0);
            }
        }
        assert!(k.used_memory() <= 100 * (ENTRY_OVERHEAD + 10) + ENTRY_OVERHEAD + 10);
        let stats = k.stats();
        assert!(stats.evicted_keys >= 190, "{stats:?}");
        let hot_left = (0..10)
            .filter(|i| run(&mut k, &format!("exists k{i:03}"), T0) == ":1\r\n")
            .count();
        assert!(hot_left >= 9, "hot keys survive: {hot_left}");
        let old_left = (10..100)
            .filter(|i| run(&mut k, &format!("exists k{i:03}"), T0) == ":1\r\n")
            .count();
        assert!(old_left < 45, "cold keys go first: {old_left} of 90 left");
    }

    #[test]
    fn stats_add_up() {
        let mut a = KeyspaceStats {
            keys: 2,
            expires: 1,
            avg_ttl: 100,
            ..Default::default()
        };
        a.add(&KeyspaceStats {
            keys: 3,
            expires: 3,
            avg_ttl: 300,
            ..Default::default()
        });
        assert_eq!((a.keys, a.expires, a.avg_ttl), (5, 4, 250));
    }
}
