//! The wall clock the I/O-free HTTP encoder is given: its `Date` header reads it here.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::proto::http::ResponseEncoder;

/// Unix seconds now (0 before 1970).
pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ResponseEncoder {
    /// An encoder whose `Date` is the system clock's.
    pub fn new() -> Self {
        Self::with_clock(unix_seconds)
    }
}

impl Default for ResponseEncoder {
    fn default() -> Self {
        Self::new()
    }
}
