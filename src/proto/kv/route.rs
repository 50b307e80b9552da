//! Which shard owns a key, and how a command on keys of several shards is split into one
//! part per shard and its answers gathered back into one.
//!
//! A key's shard is `slot % shards`, where the slot is Redis Cluster's: CRC16 (XMODEM) of the
//! key modulo 16384, hashing only the part between the first `{` and the next `}` when that
//! part is not empty (a hash tag), so that `{user1}.name` and `{user1}.mail` live on one
//! shard. The function is fixed: the same key lands on the same shard on every run with the
//! same shard count.

use crate::proto::kv::command::{Command, Key};
use crate::proto::resp::Reply;

/// Slots of the key space (Redis Cluster's 16384).
pub const SLOTS: u16 = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), the checksum of Redis Cluster.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC16 (XMODEM) of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// The key's slot, as Redis Cluster's `keyHashSlot` (hash tags included).
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) & (SLOTS - 1)
}

/// The shard (of `shards`) that owns `key` (with one shard, no checksum is taken).
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    usize::from(key_slot(key)) % shards
}

/// How the parts' answers of a split command become its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Merge {
    /// `MGET`: the elements back at the keys' places.
    Array { len: usize, places: Vec<Vec<usize>> },
    /// `DEL`, `EXISTS`: the sum.
    Sum,
    /// `MSET`: `+OK` if every part said so.
    Ok,
}

/// What is needed to put the parts' answers together, in the order of the parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather(Merge);

/// The shard owning each key of a multi-key command
/// ([`Target::Keys`](crate::proto::kv::command::Target::Keys)), in key order, without
/// taking the command apart (as [`split`] does); none for any other command.
pub fn key_owners(cmd: &Command, shards: usize) -> Vec<usize> {
    let owner = |k: &Key| shard_of(k, shards);
    match cmd {
        Command::MGet(keys) | Command::Del(keys) | Command::Exists(keys) => keys.iter().map(owner).collect(),
        Command::MSet(pairs) => pairs.iter().map(|(k, _)| owner(k)).collect(),
        _ => Vec::new(),
    }
}

/// Splits a multi-key command ([`Target::Keys`](crate::proto::kv::command::Target::Keys))
/// into one command per owning shard, in shard order, each with the keys that shard owns in
/// their order. Any other command comes back whole, as one part for shard 0.
pub fn split(cmd: Command, shards: usize) -> (Vec<(usize, Command)>, Gather) {
    fn by_shard<T>(
        items: Vec<T>,
        key: impl Fn(&T) -> &Key,
        shards: usize,
    ) -> Vec<(usize, Vec<T>, Vec<usize>)> {
        let mut parts: Vec<(usize, Vec<T>, Vec<usize>)> = Vec::new();
        for (place, item) in items.into_iter().enumerate() {
            let shard = shard_of(key(&item), shards);
            match parts.iter_mut().find(|(s, _, _)| *s == shard) {
                Some((_, items, places)) => {
                    items.push(item);
                    places.push(place);
                }
                None => parts.push((shard, vec![item], vec![place])),
            }
        }
        parts.sort_by_key(|(s, _, _)| *s);
        parts
    }
    match cmd {
        Command::MGet(keys) => {
            let len = keys.len();
            let parts = by_shard(keys, |k| k, shards);
            let places = parts.iter().map(|(_, _, p)| p.clone()).collect();
            let cmds = parts.into_iter().map(|(s, k, _)| (s, Command::MGet(k))).collect();
            (cmds, Gather(Merge::Array { len, places }))
        }
        Command::Del(keys) => {
            let parts = by_shard(keys, |k| k, shards);
            let cmds = parts.into_iter().map(|(s, k, _)| (s, Command::Del(k))).collect();
            (cmds, Gather(Merge::Sum))
        }
        Command::Exists(keys) => {
            let parts = by_shard(keys, |k| k, shards);
            let cmds = parts
                .into_iter()
                .map(|(s, k, _)| (s, Command::Exists(k)))
                .collect();
            (cmds, Gather(Merge::Sum))
        }
        Command::MSet(pairs) => {
            let parts = by_shard(pairs, |(k, _)| k, shards);
            let cmds = parts.into_iter().map(|(s, p, _)| (s, Command::MSet(p))).collect();
            (cmds, Gather(Merge::Ok))
        }
        other => (vec![(0, other)], Gather(Merge::Ok)),
    }
}

impl Gather {
    /// The whole command's answer from its parts' answers (in the order of the parts). The
    /// first error among them, if any, is the answer.
    pub fn merge(self, replies: Vec<Reply>) -> Reply {
        if let Some(e) = replies.iter().find(|r| r.is_error()) {
            return e.clone();
        }
        match self.0 {
            Merge::Array { len, places } => {
                let mut out = vec![Reply::Nil; len];
                for (reply, places) in replies.into_iter().zip(places) {
                    if let Reply::Array(items) = reply {
                        for (item, place) in items.into_iter().zip(places) {
                            if let Some(slot) = out.get_mut(place) {
                                *slot = item;
                            }
                        }
                    }
                }
                Reply::Array(out)
            }
            Merge::Sum => Reply::Integer(
                replies
                    .iter()
                    .map(|r| match r {
                        Reply::Integer(n) => *n,
                        _ => 0,
                    })
                    .sum(),
            ),
            Merge::Ok => replies.into_iter().next().unwrap_or(Reply::OK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // CLUSTER KEYSLOT answers from redis-server.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"{user1000}.followers"),
            key_slot(b"{user1000}.following")
        );
        // An empty tag hashes the whole key; only the first { counts.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(shard_of(b"foo", 1), 0);
        assert_eq!(shard_of(b"foo", 2), 0);
        assert_eq!(shard_of(b"bar", 2), 1);
    }

    #[test]
    fn keys_spread_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            counts[shard_of(format!("key:{i}").as_bytes(), 4)] += 1;
        }
        assert!(counts.iter().all(|&n| (2_200..2_800).contains(&n)), "{counts:?}");
    }

    #[test]
    fn mget_splits_and_merges_in_key_order() {
        let keys: Vec<Key> = ["foo", "bar", "hello", "x"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let (parts, gather) = split(Command::MGet(keys), 2);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, 0);
        // Each shard answers with its keys' values (here, the key itself).
        let replies = parts
            .iter()
            .map(|(_, cmd)| match cmd {
                Command::MGet(keys) => Reply::Array(keys.iter().map(Reply::bulk).collect()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            gather.merge(replies),
            Reply::Array(["foo", "bar", "hello", "x"].iter().map(Reply::bulk).collect())
        );
    }

    #[test]
    fn sums_and_errors() {
        let keys: Vec<Key> = (0..10).map(|i| format!("k{i}").into_bytes()).collect();
        let (parts, gather) = split(Command::Del(keys), 3);
        assert!(parts.len() > 1);
        let n = parts.len() as i64;
        assert_eq!(
            gather.merge(parts.iter().map(|_| Reply::Integer(2)).collect()),
            Reply::Integer(2 * n)
        );
        let pairs = vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())];
        let (parts, gather) = split(Command::MSet(pairs), 1);
        assert_eq!(parts.len(), 1);
        let oom = Reply::error("OOM no");
        assert_eq!(gather.merge(vec![oom.clone()]), oom);
    }
}
