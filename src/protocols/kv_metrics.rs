//! What the [kv](super::kv) store shows in the engine's metrics (see [`crate::metrics`]):
//! each shard's keys and memory as gauges, its expiries, evictions, `-OOM` refusals, hits
//! and misses as counters (the figures `INFO` adds up, published from the shard's
//! [`KeyspaceStats`] on every expiry sweep, so the two agree), and the commands its
//! connections received, by [`Family`], counted as they arrive.

use std::cell::Cell;

use crate::metrics::{CounterMetric, GaugeMetric};
use crate::proto::kv::command::Family;
use crate::proto::kv::keyspace::KeyspaceStats;

/// Keys the shard holds: `weft_kv_keys`.
pub static KEYS: GaugeMetric = GaugeMetric::new(
    "kv_keys",
    "Keys the shard holds (some may have expired and not been collected yet), as INFO counts them.",
);
/// Accounted bytes of the shard's keys, as `--maxmemory` counts them:
/// `weft_kv_used_memory_bytes`.
pub static USED_MEMORY: GaugeMetric = GaugeMetric::new(
    "kv_used_memory_bytes",
    "Accounted memory of the shard's keys (name, value and 64 bytes per key), as --maxmemory counts it.",
);
/// The shard's part of `--maxmemory` (0: none): `weft_kv_maxmemory_bytes`.
pub static MAXMEMORY: GaugeMetric = GaugeMetric::new(
    "kv_maxmemory_bytes",
    "The shard's part of --maxmemory, in accounted bytes (0: no limit).",
);
/// Keys removed because they expired: `weft_kv_expired_keys_total`.
pub static EXPIRED_KEYS: CounterMetric = CounterMetric::new(
    "kv_expired_keys",
    "Keys removed because they expired (when touched or by the sweep).",
);
/// Keys evicted for memory: `weft_kv_evicted_keys_total`.
pub static EVICTED_KEYS: CounterMetric = CounterMetric::new(
    "kv_evicted_keys",
    "Keys evicted to keep memory under --maxmemory (allkeys-lru).",
);
/// Commands refused with `-OOM`: `weft_kv_oom_refusals_total`.
pub static OOM_REFUSALS: CounterMetric = CounterMetric::new(
    "kv_oom_refusals",
    "Commands refused with -OOM: memory over --maxmemory under noeviction.",
);
/// Reads that found their key: `weft_kv_keyspace_hits_total`.
pub static KEYSPACE_HITS: CounterMetric =
    CounterMetric::new("kv_keyspace_hits", "Key lookups that found their key.");
/// Reads that did not: `weft_kv_keyspace_misses_total`.
pub static KEYSPACE_MISSES: CounterMetric =
    CounterMetric::new("kv_keyspace_misses", "Key lookups that did not find their key.");
/// Commands received, by family: `weft_kv_commands_total{family="read"}`, counted on the
/// shard of the connection (wherever their keys live).
pub static COMMANDS: CounterMetric = CounterMetric::labeled(
    "kv_commands",
    "Commands received on the shard's connections, by family (read, write, server, connection).",
    "family",
    &Family::NAMES,
);

/// Counts a command of `family`, received on this shard.
#[inline]
pub(crate) fn command(family: Family) {
    COMMANDS.inc_at(family.index());
}

/// What a shard last published, so that its counters grow by what its keyspace's grew.
#[derive(Debug, Default)]
pub(crate) struct Published(Cell<KeyspaceStats>);

impl Published {
    /// Sets the gauges to `now`, and adds to the counters what they grew since the last call.
    pub(crate) fn publish(&self, now: KeyspaceStats) {
        let last = self.0.replace(now);
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        KEYS.set(gauge(now.keys));
        USED_MEMORY.set(gauge(now.used_memory));
        MAXMEMORY.set(gauge(now.maxmemory));
        for (counter, now, last) in [
            (&EXPIRED_KEYS, now.expired_keys, last.expired_keys),
            (&EVICTED_KEYS, now.evicted_keys, last.evicted_keys),
            (&OOM_REFUSALS, now.oom_refusals, last.oom_refusals),
            (&KEYSPACE_HITS, now.keyspace_hits, last.keyspace_hits),
            (&KEYSPACE_MISSES, now.keyspace_misses, last.keyspace_misses),
        ] {
            counter.add(now.saturating_sub(last));
        }
    }
}
