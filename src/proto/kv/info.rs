//! `INFO`: the server, clients, memory, persistence, stats, replication, cpu and keyspace
//! sections, in redis's text layout (`# Section` headers, `field:value` lines ended by CRLF,
//! sections apart by an empty line), with the fields monitoring tools read (`redis-cli
//! --stat`, exporters). weft keeps no data on disk and has no replicas: those sections say
//! so with redis's idle values.

use crate::proto::kv::keyspace::{EvictionPolicy, KeyspaceStats};
use crate::proto::kv::session::REDIS_VERSION;
use crate::proto::resp::Reply;

/// The facts about the server that `INFO` reports beside the keyspace's figures.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// weft's version.
    pub weft_version: String,
    /// The process id.
    pub process_id: u32,
    /// A random id of this run (40 hex digits in redis).
    pub run_id: String,
    /// The port the client connected to.
    pub tcp_port: u16,
    /// Now, in microseconds since the Unix epoch.
    pub server_time_usec: i64,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// How often each shard sweeps expired keys, per second.
    pub hz: u32,
    /// The shards (one per core).
    pub shards: usize,
    /// The path of the executable.
    pub executable: String,
    /// Open client connections.
    pub connected_clients: u64,
    /// Connections accepted since the start.
    pub total_connections_received: u64,
    /// The eviction policy.
    pub policy: EvictionPolicy,
    /// Commands run since the start, on every shard.
    pub total_commands_processed: u64,
    /// Commands a second lately (about the last 1.5 s), on every shard.
    pub instantaneous_ops_per_sec: u64,
    /// Connections refused or shed at the connection cap.
    pub rejected_connections: u64,
    /// Bytes read from clients.
    pub total_net_input_bytes: u64,
    /// Bytes written to clients.
    pub total_net_output_bytes: u64,
    /// The process's resident memory, in bytes (0 if unknown).
    pub used_memory_rss: u64,
    /// Each shard's part of `maxmemory` (0: no limit).
    pub maxmemory_per_shard: u64,
    /// The accounted bytes of the fullest shard: it refuses writes (or evicts) once this
    /// passes [`maxmemory_per_shard`](Self::maxmemory_per_shard).
    pub used_memory_fullest_shard: u64,
    /// The process's user and system CPU time, in seconds.
    pub cpu_user_system: (f64, f64),
    /// When the server started, in Unix seconds.
    pub started_unix: i64,
}

/// The sections in the order redis prints them; `default` and `all` give them all.
const SECTIONS: [&str; 8] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "keyspace",
];

/// Redis's `bytesToHuman`: `1023B`, `1.00K`, `1.54M`, ...
pub fn bytes_to_human(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "P"),
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            return format!("{:.2}{unit}", n as f64 / size as f64);
        }
    }
    format!("{n}B")
}

/// The `INFO` answer for the `sections` asked for (none: all; unknown names are ignored, as
/// redis does), with the keyspace figures of every shard added up.
pub fn render(sections: &[Vec<u8>], server: &ServerInfo, keyspace: &KeyspaceStats) -> Reply {
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                s.eq_ignore_ascii_case(name.as_bytes())
                    || [&b"default"[..], b"all", b"everything"]
                        .iter()
                        .any(|w| s.eq_ignore_ascii_case(w))
            })
    };
    let mut out = String::new();
    for section in SECTIONS.iter().filter(|s| wanted(s)) {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let mut field = |name: &str, value: &dyn std::fmt::Display| {
            out.push_str(&format!("{name}:{value}\r\n"));
        };
        match *section {
            "server" => {
                field("# Server\r\nredis_version", &REDIS_VERSION);
                field("redis_mode", &"standalone");
                field("weft_version", &server.weft_version);
                field("weft_shards", &server.shards);
                field("arch_bits", &(usize::BITS));
                field("multiplexing_api", &"io_uring");
                field("process_id", &server.process_id);
                field("run_id", &server.run_id);
                field("tcp_port", &server.tcp_port);
                field("server_time_usec", &server.server_time_usec);
                field("uptime_in_seconds", &server.uptime_secs);
                field("uptime_in_days", &(server.uptime_secs / 86_400));
                field("hz", &server.hz);
                field("configured_hz", &server.hz);
                field("executable", &server.executable);
                field("config_file", &"");
            }
            "clients" => {
                field("# Clients\r\nconnected_clients", &server.connected_clients);
                field("blocked_clients", &0);
                field("tracking_clients", &0);
            }
            "memory" => {
                let peak = keyspace.used_memory_peak.max(keyspace.used_memory);
                field("# Memory\r\nused_memory", &keyspace.used_memory);
                field("used_memory_human", &bytes_to_human(keyspace.used_memory));
                field("used_memory_rss", &server.used_memory_rss);
                field("used_memory_rss_human", &bytes_to_human(server.used_memory_rss));
                field("used_memory_peak", &peak);
                field("used_memory_peak_human", &bytes_to_human(peak));
                field("used_memory_dataset", &keyspace.used_memory);
                field("maxmemory", &keyspace.maxmemory);
                field("maxmemory_human", &bytes_to_human(keyspace.maxmemory));
                field("maxmemory_policy", &server.policy.name());
                // Redis's ratio: resident memory over used memory.
                let ratio = match keyspace.used_memory {
                    0 => 0.0,
                    used => server.used_memory_rss as f64 / used as f64,
                };
                field("mem_fragmentation_ratio", &format!("{ratio:.2}"));
                field("weft_maxmemory_per_shard", &server.maxmemory_per_shard);
                field(
                    "weft_used_memory_fullest_shard",
                    &server.used_memory_fullest_shard,
                );
            }
            "persistence" => {
                field("# Persistence\r\nloading", &0);
                field("async_loading", &0);
                field("rdb_changes_since_last_save", &0);
                field("rdb_bgsave_in_progress", &0);
                field("rdb_last_save_time", &server.started_unix);
                field("rdb_last_bgsave_status", &"ok");
                field("aof_enabled", &0);
                field("aof_rewrite_in_progress", &0);
                field("aof_last_bgrewrite_status", &"ok");
            }
            "replication" => {
                field("# Replication\r\nrole", &"master");
                field("connected_slaves", &0);
                field("master_failover_state", &"no-failover");
                field("master_replid", &server.run_id);
                field("master_replid2", &"0".repeat(40));
                field("master_repl_offset", &0);
                field("second_repl_offset", &-1);
                field("repl_backlog_active", &0);
                field("repl_backlog_size", &0);
                field("repl_backlog_first_byte_offset", &0);
                field("repl_backlog_histlen", &0);
            }
            "cpu" => {
                let (user, system) = server.cpu_user_system;
                field("# CPU\r\nused_cpu_sys", &format!("{system:.6}"));
                field("used_cpu_user", &format!("{user:.6}"));
                field("used_cpu_sys_children", &"0.000000");
                field("used_cpu_user_children", &"0.000000");
            }
            "stats" => {
                field(
                    "# Stats\r\ntotal_connections_received",
                    &server.total_connections_received,
                );
                field("total_commands_processed", &server.total_commands_processed);
                field("instantaneous_ops_per_sec", &server.instantaneous_ops_per_sec);
                field("total_net_input_bytes", &server.total_net_input_bytes);
                field("total_net_output_bytes", &server.total_net_output_bytes);
                field("rejected_connections", &server.rejected_connections);
                field("expired_keys", &keyspace.expired_keys);
                field("evicted_keys", &keyspace.evicted_keys);
                field("keyspace_hits", &keyspace.keyspace_hits);
                field("keyspace_misses", &keyspace.keyspace_misses);
            }
            _ => {
                out.push_str("# Keyspace\r\n");
                if keyspace.keys > 0 {
                    out.push_str(&format!(
                        "db0:keys={},expires={},avg_ttl={}\r\n",
                        keyspace.keys, keyspace.expires, keyspace.avg_ttl
                    ));
                }
            }
        }
    }
    Reply::Verbatim(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sections: &[&str], ks: &KeyspaceStats) -> String {
        let sections: Vec<Vec<u8>> = sections.iter().map(|s| s.as_bytes().to_vec()).collect();
        match render(&sections, &ServerInfo::default(), ks) {
            Reply::Verbatim(b) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn layout_as_redis() {
        assert_eq!(text(&["keyspace"], &KeyspaceStats::default()), "# Keyspace\r\n");
        assert_eq!(text(&["nope"], &KeyspaceStats::default()), "");
        let ks = KeyspaceStats {
            keys: 3,
            expires: 1,
            avg_ttl: 5000,
            used_memory: 2048,
            ..Default::default()
        };
        assert_eq!(
            text(&["KEYSPACE"], &ks),
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5000\r\n"
        );
        let memory = text(&["memory"], &ks);
        assert!(memory.starts_with("# Memory\r\nused_memory:2048\r\nused_memory_human:2.00K\r\n"));
        assert!(memory.contains("maxmemory_policy:noeviction\r\n"));
        let both = text(&["keyspace", "server"], &ks);
        assert!(both.starts_with("# Server\r\nredis_version:7.0.15\r\n"));
        assert!(both.ends_with("\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5000\r\n"));
        let all = text(&[], &ks);
        let mut at = 0;
        for header in [
            "# Server",
            "# Clients",
            "# Memory",
            "# Persistence",
            "# Stats",
            "# Replication",
            "# CPU",
            "# Keyspace",
        ] {
            let found = all[at..].find(header).expect(header);
            at += found;
        }
        for field in [
            "\r\nblocked_clients:0\r\n",
            "\r\nrole:master\r\n",
            "\r\nloading:0\r\n",
            "\r\ntotal_commands_processed:0\r\n",
            "\r\nused_memory_peak:2048\r\n",
            "\r\nused_cpu_user:0.000000\r\n",
        ] {
            assert!(all.contains(field), "{field}");
        }
        assert_eq!(text(&["default"], &ks), all);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(bytes_to_human(0), "0B");
        assert_eq!(bytes_to_human(1023), "1023B");
        assert_eq!(bytes_to_human(1024), "1.00K");
        assert_eq!(bytes_to_human(1_616_424), "1.54M");
        assert_eq!(bytes_to_human(3 << 30), "3.00G");
    }
}
