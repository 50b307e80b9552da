//! `INFO`: the server, clients, memory, stats and keyspace sections, in redis's text layout
//! (`# Section` headers, `field:value` lines ended by CRLF, sections apart by an empty line).

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
}

/// The sections in the order redis prints them; `default` and `all` give them all.
const SECTIONS: [&str; 5] = ["server", "clients", "memory", "stats", "keyspace"];

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
            }
            "memory" => {
                field("# Memory\r\nused_memory", &keyspace.used_memory);
                field("used_memory_human", &bytes_to_human(keyspace.used_memory));
                field("used_memory_dataset", &keyspace.used_memory);
                field("maxmemory", &keyspace.maxmemory);
                field("maxmemory_human", &bytes_to_human(keyspace.maxmemory));
                field("maxmemory_policy", &server.policy.name());
            }
            "stats" => {
                field(
                    "# Stats\r\ntotal_connections_received",
                    &server.total_connections_received,
                );
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
        for header in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"] {
            assert!(all.contains(header), "{header}");
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
