//! One key's record in a keyspace: its name and value in a single allocation, with its LRU
//! stamp and whether it has a TTL, in 32 bytes beside the bytes themselves.
//!
//! A record hashes and compares as its key alone, so a table of records is looked up by
//! `&[u8]` ([`Borrow`]). Keeping the key and the value in one buffer saves an allocation and a
//! cache miss per key against a separate key and value, and lets an overwritten value reuse
//! the buffer when it fits.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// The longest key a record holds (its length is kept in 32 bits).
pub const MAX_KEY_LEN: usize = u32::MAX as usize;

/// The bit of `stamp` that says the key has a TTL; the other 31 are the LRU stamp.
const TTL_BIT: u32 = 1 << 31;

/// A key and its value.
#[derive(Debug, Clone)]
pub struct Record {
    /// The key, then the value.
    bytes: Vec<u8>,
    key_len: u32,
    /// [`TTL_BIT`], and the access clock (31 bits, wrapping) when the key was last used.
    stamp: u32,
}

impl Record {
    /// A record of `key` and `value` touched at `clock`; `None` for a key longer than
    /// [`MAX_KEY_LEN`].
    pub fn new(key: &[u8], value: &[u8], clock: u64) -> Option<Self> {
        let key_len = u32::try_from(key.len()).ok()?;
        let mut bytes = Vec::with_capacity(key.len() + value.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        let mut record = Self {
            bytes,
            key_len,
            stamp: 0,
        };
        record.touch(clock);
        Some(record)
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.bytes[self.key_len as usize..]
    }

    /// Replaces the value, reusing the buffer unless it would stay more than twice too big.
    pub fn set_value(&mut self, value: &[u8]) {
        let len = self.key_len as usize + value.len();
        if self.bytes.capacity() > 2 * len.max(16) {
            let mut bytes = Vec::with_capacity(len);
            bytes.extend_from_slice(self.key());
            self.bytes = bytes;
        } else {
            self.bytes.truncate(self.key_len as usize);
        }
        self.bytes.extend_from_slice(value);
    }

    /// Appends to the value (amortized: the buffer grows geometrically).
    pub fn append(&mut self, tail: &[u8]) {
        self.bytes.extend_from_slice(tail);
    }

    /// True if the key has a TTL (kept by the keyspace).
    pub fn has_ttl(&self) -> bool {
        self.stamp & TTL_BIT != 0
    }

    /// Marks whether the key has a TTL.
    pub fn set_has_ttl(&mut self, ttl: bool) {
        self.stamp = if ttl {
            self.stamp | TTL_BIT
        } else {
            self.stamp & !TTL_BIT
        };
    }

    /// Marks the key used at `clock`.
    pub fn touch(&mut self, clock: u64) {
        // The low 31 bits of the clock: ages are told apart up to 2^31 accesses.
        self.stamp = (self.stamp & TTL_BIT) | (clock as u32 & !TTL_BIT);
    }

    /// Accesses since the key was last used, by the access clock at `clock` (modulo 2^31).
    pub fn idle(&self, clock: u64) -> u32 {
        (clock as u32).wrapping_sub(self.stamp) & !TTL_BIT
    }
}

impl Hash for Record {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, so that a table of records is looked up by `&[u8]`.
        self.key().hash(state);
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Record {}

impl Borrow<[u8]> for Record {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn key_and_value_live_apart_in_one_buffer() {
        let mut r = Record::new(b"key", b"value", 1).unwrap();
        assert_eq!((r.key(), r.value()), (&b"key"[..], &b"value"[..]));
        r.set_value(b"");
        assert_eq!((r.key(), r.value()), (&b"key"[..], &b""[..]));
        r.append(b"ab");
        r.append(b"c");
        assert_eq!(r.value(), b"abc");
        let long = vec![7u8; 4096];
        r.set_value(&long);
        assert_eq!(r.value(), &long[..]);
        r.set_value(b"x");
        assert_eq!((r.key(), r.value()), (&b"key"[..], &b"x"[..]));
        assert!(r.bytes.capacity() < 64, "a buffer far too big is given back");
        assert_eq!(size_of::<Record>(), 32);
    }

    #[test]
    fn hashes_and_compares_as_its_key() {
        let state = RandomState::new();
        let r = Record::new(b"k", b"v1", 0).unwrap();
        assert_eq!(state.hash_one(&r), state.hash_one(&b"k"[..]));
        assert_eq!(r, Record::new(b"k", b"v2", 9).unwrap());
        assert_ne!(r, Record::new(b"kv", b"1", 0).unwrap());
    }

    #[test]
    fn ttl_flag_and_lru_stamp_share_a_word() {
        let mut r = Record::new(b"k", b"v", 5).unwrap();
        assert!(!r.has_ttl());
        assert_eq!(r.idle(8), 3);
        r.set_has_ttl(true);
        assert!(r.has_ttl());
        assert_eq!(r.idle(8), 3, "the flag does not age the key");
        r.touch(u64::from(u32::MAX) + 10);
        assert!(r.has_ttl(), "touching keeps the flag");
        assert_eq!(r.idle(u64::from(u32::MAX) + 12), 2, "the clock wraps");
        r.set_has_ttl(false);
        assert!(!r.has_ttl());
    }
}
