//! `weft serve`: a reference protocol on every selected core until SIGINT or SIGTERM, or until
//! a successor takes over its listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use weft::kv::keyspace::EvictionPolicy;
use weft::protocols::{Discard, Echo, Http, Kv, KvConfig, Relay, Whoami};
use weft::proxy::{Cidr, ProxyConfig};
use weft::tls::TlsConfig;
use weft::{
    Address, ConfigError, Cores, Destination, EngineConfig, EngineError, FlowConfig, Keepalive, Layers,
    ListenerConfig, MIN_STATS_INTERVAL, RingFeatures, Service, ServiceError,
};

use super::CliError;

/// The reference protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Proto {
    /// Echo every byte back.
    Echo,
    /// Read and drop everything.
    Discard,
    /// HTTP/1.1 plaintext `Hello, World!`.
    Http,
    /// A TCP proxy to --upstream, with back-pressure both ways.
    Relay,
    /// A Redis-protocol (RESP2/RESP3) in-memory key-value store, keys sharded over the cores.
    Kv,
    /// Write the peer's address and a newline, then close.
    Whoami,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Discard => "discard",
            Self::Http => "http",
            Self::Relay => "relay",
            Self::Whoami => "whoami",
            Self::Kv => "kv",
        }
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("proxy_mode").args(["proxy_protocol", "proxy_listen"]).multiple(true)))]
pub(crate) struct ServeArgs {
    /// Protocol to serve.
    #[arg(long, value_enum, default_value = "echo")]
    proto: Proto,
    /// kv: memory limit of the store, divided evenly between the shards (each key counts its
    /// name, its value and 64 bytes); 0 for none.
    #[arg(long, default_value = "0", value_parser = super::size)]
    maxmemory: usize,
    /// kv: what writes do past --maxmemory: noeviction (refused with -OOM) or allkeys-lru
    /// (the least recently used of sampled keys is evicted).
    #[arg(long, default_value = "noeviction", value_parser = parse_policy)]
    maxmemory_policy: EvictionPolicy,
    /// kv: longest bulk string a request may carry, and longest value APPEND may make
    /// (redis's proto-max-bulk-len) [default: 512MiB].
    #[arg(long, value_name = "BYTES", value_parser = super::size)]
    kv_max_bulk: Option<usize>,
    /// kv: longest inline request, or count line, without its end [default: 64KiB].
    #[arg(long, value_name = "BYTES", value_parser = super::size)]
    kv_max_inline: Option<usize>,
    /// kv: most bytes one request may hold while it arrives, 32 more per argument (redis's
    /// client-query-buffer-limit); past it the connection is closed [default: 1GiB].
    #[arg(long, value_name = "BYTES", value_parser = super::size)]
    kv_max_request: Option<usize>,
    /// kv: most bytes the commands queued after MULTI may hold (counted as for
    /// --kv-max-request); past it the transaction is refused and EXEC aborts [default: 64MiB].
    #[arg(long, value_name = "BYTES", value_parser = super::size)]
    kv_max_transaction: Option<usize>,
    /// Address to listen on, e.g. 127.0.0.1:7000 or [::1]:7000 (repeatable). With --takeover,
    /// defaults to the addresses taken over.
    #[arg(long = "listen", required_unless_present_any = ["takeover", "proxy_listen", "tls_listen"], value_parser = parse_addr)]
    listen: Vec<SocketAddr>,
    /// Where `--proto relay` forwards each connection (host:port).
    #[arg(long, required_if_eq("proto", "relay"))]
    upstream: Option<Destination>,
    /// Cores to run shards on: all, a count (2) or a list (0,2-3).
    #[arg(long, default_value = "all")]
    cores: Cores,
    /// Listen backlog per shard.
    #[arg(long, default_value_t = 1024)]
    backlog: u32,
    /// Attach the reuseport program that moves the connections queued on a closing listener
    /// (a killed process's too) to the other listeners of its port; needs CAP_BPF or root,
    /// skipped without (then set net.ipv4.tcp_migrate_req=1).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    migrate_queued: bool,
    /// Share the listen ports with the weft processes that listen on them already (SO_REUSEPORT:
    /// the kernel spreads connections over all of them). Without it, a port in use is an
    /// error.
    #[arg(long)]
    share_port: bool,
    /// On SIGINT/SIGTERM, how long the health check fails while the service still accepts,
    /// before the listeners close (lets a balancer take the instance out first).
    #[arg(long, default_value = "0s", value_parser = super::duration)]
    drain_delay: Duration,
    /// On SIGINT/SIGTERM, how long open connections may finish before they are aborted.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    drain_timeout: Duration,
    /// Connections per shard above which new ones are accepted and closed at once.
    #[arg(long)]
    max_conns_per_core: Option<usize>,
    /// Close connections with nothing read or written for this long (default: never).
    #[arg(long, value_parser = super::duration)]
    idle_timeout: Option<Duration>,
    /// Close connections whose queued output makes no progress for this long.
    #[arg(long, default_value = "30s", value_parser = super::duration)]
    write_stall_timeout: Duration,
    /// Queued output above which reading pauses (back-pressure).
    #[arg(long, default_value = "64KiB", value_parser = super::size)]
    high_water: usize,
    /// Queued output at which reading resumes.
    #[arg(long, default_value = "16KiB", value_parser = super::size)]
    low_water: usize,
    /// Queued output above which the connection is closed [default: 4MiB; with --proto kv,
    /// the bulk limit plus 4MiB, so that the answer of any one value goes out whole].
    #[arg(long, value_name = "BYTES", value_parser = super::size)]
    max_output: Option<usize>,
    /// TCP keepalive: idle time before the first probe (turns keepalive on).
    #[arg(long, value_parser = super::duration)]
    keepalive_idle: Option<Duration>,
    /// TCP keepalive: time between probes.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    keepalive_interval: Duration,
    /// TCP keepalive: unanswered probes before the connection is dropped.
    #[arg(long, default_value_t = 3)]
    keepalive_count: u32,
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged.
    #[arg(long, value_parser = super::duration)]
    tcp_user_timeout: Option<Duration>,
    /// Busy-poll this long before a shard's reactor sleeps (trades idle CPU for latency).
    #[arg(long, value_parser = super::duration)]
    spin_before_park: Option<Duration>,
    /// io_uring set-up features for the shards' rings, where the kernel has them: all, none,
    /// or a list of coop-taskrun, single-issuer, defer-taskrun, registered-fd.
    #[arg(long, default_value_t = RingFeatures::default())]
    ring_features: RingFeatures,
    /// http: time a request head may take to arrive, from its first byte (then 408).
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    header_timeout: Duration,
    /// Require a PROXY protocol header (v1 or v2) on every --listen address (never
    /// auto-detected).
    #[arg(long, requires = "proxy_trusted")]
    proxy_protocol: bool,
    /// Also listen on ADDR, requiring a PROXY header there only (repeatable): a port for the
    /// balancer beside plain --listen ports.
    #[arg(long, value_name = "ADDR", requires = "proxy_trusted", value_parser = parse_addr)]
    proxy_listen: Vec<SocketAddr>,
    /// Peers allowed to send a PROXY header, e.g. 10.0.0.0/8,::1; others are closed unread.
    #[arg(long, value_name = "CIDR[,CIDR...]", requires = "proxy_mode", value_parser = parse_cidrs)]
    proxy_trusted: Option<Trusted>,
    /// Time from accept to a complete PROXY header.
    #[arg(long, default_value = "3s", value_parser = super::duration)]
    proxy_header_timeout: Duration,
    /// Largest PROXY v2 header accepted, TLVs included, in bytes.
    #[arg(long, default_value_t = weft::proxy::DEFAULT_MAX_HEADER)]
    proxy_max_header: usize,
    /// TLS: the certificate chain (PEM, leaf first). Every --listen port speaks TLS, unless
    /// --tls-listen names the TLS ports. SIGHUP reloads it.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS: another certificate, for clients whose SNI is NAME (repeatable; NAME may be
    /// *.example.com).
    #[arg(long, value_name = "NAME=CERT,KEY", requires = "tls_cert", value_parser = parse_sni)]
    tls_sni: Vec<Sni>,
    /// TLS: ALPN protocols offered, most preferred first (e.g. http/1.1); names of 1 to 255
    /// bytes, and with --proto http only http/1.1 and http/1.0 (it speaks no h2).
    #[arg(
        long,
        value_name = "PROTO[,PROTO...]",
        requires = "tls_cert",
        value_delimiter = ','
    )]
    alpn: Vec<String>,
    /// TLS: listen on ADDR with TLS, beside the plain --listen ports (repeatable).
    #[arg(long, value_name = "ADDR", requires = "tls_cert", value_parser = parse_addr)]
    tls_listen: Vec<SocketAddr>,
    /// TLS: time a client has to finish its handshake.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    tls_handshake_timeout: Duration,
    /// TLS: session tickets sent after each TLS 1.3 handshake (raise it for clients that open
    /// several connections at once and want each to resume).
    #[arg(long, default_value_t = weft::tls::DEFAULT_TLS13_TICKETS)]
    tls_tickets: usize,
    /// Answer HTTP health probes here: 200 while serving, 503 while draining.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    health: Option<SocketAddr>,
    /// Serve handoffs to a successor on this Unix socket (zero-downtime restart).
    #[arg(long, value_name = "PATH")]
    handoff_socket: Option<PathBuf>,
    /// Take over the listening sockets of the weft serving handoffs at PATH, then tell it to
    /// drain and exit.
    #[arg(long, value_name = "PATH")]
    takeover: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    metrics: Option<SocketAddr>,
    /// Print one line of stats to stdout every interval (e.g. 1s).
    #[arg(long, value_name = "DURATION", value_parser = stats_interval)]
    stats_interval: Option<Duration>,
    /// Write an HdrHistogram interval log of the latency metrics (one interval per second
    /// and metric, tagged with its name), readable by `weft hist FILE --tag NAME`. `{pid}` in
    /// FILE becomes the process id, so that a successor (--takeover) writes its own file.
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// Check the flags, the cores, the TLS files and the files the start creates (as the start
    /// does, changing none), print the settings a deployment must agree with (one `name value`
    /// line each: listen, tls-listen, proxy-listen and proxy-tls-listen (a port's role),
    /// health, metrics, handoff-socket, cores, drain-delay, drain-timeout), and exit without
    /// serving. For container and unit files.
    #[arg(long)]
    check: bool,
}

/// The ports the flags name, each with its layers: --listen ports are TLS when --tls-cert is
/// given without --tls-listen, and PROXY with --proxy-protocol; --tls-listen ports are TLS,
/// --proxy-listen ports PROXY.
fn ports(args: &ServeArgs) -> Vec<(SocketAddr, Layers)> {
    let listen = Layers {
        proxy: args.proxy_protocol,
        tls: args.tls_listen.is_empty() && args.tls_cert.is_some(),
    };
    let tls = Layers {
        proxy: false,
        tls: true,
    };
    let proxy = Layers {
        proxy: true,
        tls: false,
    };
    (args.listen.iter().map(|a| (*a, listen)))
        .chain(args.tls_listen.iter().map(|a| (*a, tls)))
        .chain(args.proxy_listen.iter().map(|a| (*a, proxy)))
        .collect()
}

/// The `--check` report line's name for a port with these layers.
fn port_setting(layers: Layers) -> &'static str {
    match (layers.proxy, layers.tls) {
        (false, false) => "listen",
        (false, true) => "tls-listen",
        (true, false) => "proxy-listen",
        (true, true) => "proxy-tls-listen",
    }
}

/// The `--check` report: what probes, ports, grace periods and CPU limits must match.
fn check_report(args: &ServeArgs) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (a, layers) in ports(args) {
        let _ = writeln!(out, "{} {}", port_setting(layers), Address::from(a));
    }
    for (name, addr) in [("health", args.health), ("metrics", args.metrics)] {
        if let Some(a) = addr {
            let _ = writeln!(out, "{name} {}", Address::from(a));
        }
    }
    if let Some(p) = &args.handoff_socket {
        let _ = writeln!(out, "handoff-socket {}", p.display());
    }
    let cores = match &args.cores {
        Cores::All => "all".to_owned(),
        Cores::Count(n) => n.to_string(),
        Cores::List(ids) => format!("{} (list)", ids.len()),
    };
    let _ = writeln!(out, "cores {cores}");
    let _ = writeln!(out, "drain-delay {}s", args.drain_delay.as_secs_f64());
    let _ = writeln!(out, "drain-timeout {}s", args.drain_timeout.as_secs_f64());
    out
}

fn parse_policy(s: &str) -> Result<EvictionPolicy, String> {
    EvictionPolicy::from_name(s)
        .ok_or_else(|| format!("invalid policy {s:?}: expected noeviction or allkeys-lru"))
}

fn stats_interval(s: &str) -> Result<Duration, String> {
    let d = super::duration(s)?;
    if d < MIN_STATS_INTERVAL {
        return Err(format!("invalid stats interval {s:?}: at least 10ms"));
    }
    Ok(d)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<Address>()
        .map(|a| a.socket_addr())
        .map_err(|e| e.to_string())
}

/// The value of `--proxy-trusted`: one list (a plain `Vec` would read as repeated values).
#[derive(Debug, Clone)]
struct Trusted(Vec<Cidr>);

fn parse_cidrs(s: &str) -> Result<Trusted, String> {
    match Cidr::parse_list(s) {
        Ok(list) if list.is_empty() => Err("an empty trusted list would close every connection".into()),
        Ok(list) => Ok(Trusted(list)),
        Err(e) => Err(e.to_string()),
    }
}

/// The value of `--tls-sni`.
#[derive(Debug, Clone)]
struct Sni {
    name: String,
    cert: PathBuf,
    key: PathBuf,
}

fn parse_sni(s: &str) -> Result<Sni, String> {
    let bad = || format!("invalid --tls-sni {s:?}: expected NAME=CERT,KEY");
    let (name, files) = s.split_once('=').ok_or_else(bad)?;
    let (cert, key) = files.split_once(',').ok_or_else(bad)?;
    if name.is_empty() || cert.is_empty() || key.is_empty() {
        return Err(bad());
    }
    Ok(Sni {
        name: name.to_owned(),
        cert: cert.into(),
        key: key.into(),
    })
}

/// The TLS settings from the command line, if --tls-cert was given.
fn tls_config(args: &ServeArgs) -> Result<Option<TlsConfig>, ServiceError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let mut tls = TlsConfig::from_pem_files(cert, key).map_err(tls_error)?;
    for sni in &args.tls_sni {
        tls = tls.with_sni(&sni.name, &sni.cert, &sni.key).map_err(tls_error)?;
    }
    let alpn: Vec<&str> = args.alpn.iter().map(String::as_str).collect();
    Ok(Some(
        tls.with_alpn(&alpn)
            .with_handshake_timeout(args.tls_handshake_timeout)
            .with_tls13_tickets(args.tls_tickets),
    ))
}

fn tls_error(e: weft::tls::TlsError) -> ServiceError {
    ServiceError::Engine(EngineError::Tls(e))
}

/// The flag that sets each library setting a [`ConfigError`] may name.
const FLAGS: &[(&str, &str)] = &[
    ("accept.max_conns_per_shard", "--max-conns-per-core"),
    ("drain_timeout", "--drain-timeout"),
    ("reactor.spin_before_park", "--spin-before-park"),
    ("connection.flow.max_output", "--max-output"),
    ("kv.limits.max_bulk", "--kv-max-bulk"),
    ("kv.limits.max_inline", "--kv-max-inline"),
    ("kv.limits.max_request", "--kv-max-request"),
    ("kv.max_transaction", "--kv-max-transaction"),
    ("connection.idle_timeout", "--idle-timeout"),
    ("connection.write_stall_timeout", "--write-stall-timeout"),
    ("connection.keepalive.idle", "--keepalive-idle"),
    ("connection.keepalive.interval", "--keepalive-interval"),
    ("connection.keepalive.count", "--keepalive-count"),
    ("connection.user_timeout", "--tcp-user-timeout"),
    ("proxy.header_timeout", "--proxy-header-timeout"),
    ("proxy.max_header", "--proxy-max-header"),
    ("tls.handshake_timeout", "--tls-handshake-timeout"),
    ("tls.tls13_tickets", "--tls-tickets"),
];

/// A refused setting as a usage error naming its flag.
fn flagged(e: ConfigError) -> CliError {
    let flag = FLAGS.iter().find(|(field, _)| *field == e.setting);
    let e = match flag {
        Some((_, flag)) => e.with_name(*flag),
        None => e,
    };
    CliError::Usage(e.to_string())
}

/// The kv server's settings the flags make (the defaults for those not given).
fn kv_config(args: &ServeArgs) -> KvConfig {
    let mut kv = KvConfig {
        maxmemory: args.maxmemory,
        policy: args.maxmemory_policy,
        ..KvConfig::default()
    };
    let limits = &mut kv.limits;
    limits.max_bulk = args.kv_max_bulk.unwrap_or(limits.max_bulk);
    limits.max_inline = args.kv_max_inline.unwrap_or(limits.max_inline);
    limits.max_request = args.kv_max_request.unwrap_or(limits.max_request);
    kv.max_transaction = args.kv_max_transaction.unwrap_or(kv.max_transaction);
    kv
}

/// `--max-output`, or its default: room for the longest value's answer with `--proto kv`
/// ([`KvConfig::max_output`]), the engine's default otherwise.
fn max_output(args: &ServeArgs) -> usize {
    args.max_output.unwrap_or_else(|| match args.proto {
        Proto::Kv => kv_config(args).max_output(),
        _ => FlowConfig::default().max_output,
    })
}

/// The engine settings the flags make (everything but the listeners).
fn engine_config(args: &ServeArgs) -> EngineConfig {
    let mut config = EngineConfig::default();
    config.cores = args.cores.clone();
    config.drain_timeout = args.drain_timeout;
    config.accept.backlog = args.backlog;
    config.accept.migrate_queued = args.migrate_queued;
    config.accept.max_conns_per_shard = args.max_conns_per_core;
    config.reactor.spin_before_park = args.spin_before_park;
    config.reactor.ring = args.ring_features;
    // Metrics run only when the exporter, the stats line or the latency log reads them.
    config.metrics.enabled = false;
    let c = &mut config.connection;
    c.idle_timeout = args.idle_timeout;
    // 0s turns the write-stall timeout off.
    c.write_stall_timeout = Some(args.write_stall_timeout).filter(|d| !d.is_zero());
    c.flow = FlowConfig::new(args.high_water, args.low_water, max_output(args));
    c.keepalive = args
        .keepalive_idle
        .map(|idle| Keepalive::new(idle, args.keepalive_interval, args.keepalive_count));
    c.user_timeout = args.tcp_user_timeout;
    config
}

/// The PROXY protocol settings the flags make, if --proxy-trusted was given.
fn proxy_config(args: &ServeArgs) -> Option<ProxyConfig> {
    args.proxy_trusted.as_ref().map(|Trusted(trusted)| {
        let mut p = ProxyConfig::trusting(trusted.clone());
        p.header_timeout = args.proxy_header_timeout;
        p.max_header = args.proxy_max_header;
        p
    })
}

/// Flag combinations that cannot work, refused before anything starts (and by `--check`).
fn validate(args: &ServeArgs) -> Result<(), CliError> {
    let usage = |m: String| Err(CliError::Usage(m));
    if let Err(e) = FlowConfig::try_new(args.high_water, args.low_water, max_output(args)) {
        return usage(format!("--high-water, --low-water, --max-output: {e}"));
    }
    if args.proto != Proto::Kv {
        let kv_flags = [
            ("--maxmemory", args.maxmemory > 0),
            ("--kv-max-bulk", args.kv_max_bulk.is_some()),
            ("--kv-max-inline", args.kv_max_inline.is_some()),
            ("--kv-max-request", args.kv_max_request.is_some()),
            ("--kv-max-transaction", args.kv_max_transaction.is_some()),
        ];
        if let Some((flag, _)) = kv_flags.iter().find(|(_, given)| *given) {
            return usage(format!("{flag} applies to --proto kv only"));
        }
    }
    kv_config(args).validate().map_err(flagged)?;
    // One address, one use: the ports that serve and the health and metrics listeners.
    let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
    let named = (args.listen.iter().map(|a| (*a, "--listen")))
        .chain(args.proxy_listen.iter().map(|a| (*a, "--proxy-listen")))
        .chain(args.tls_listen.iter().map(|a| (*a, "--tls-listen")))
        .chain(args.health.map(|a| (a, "--health")))
        .chain(args.metrics.map(|a| (a, "--metrics")));
    for (addr, flag) in named.filter(|(a, _)| a.port() != 0) {
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
            return usage(format!(
                "{} is given twice ({first} and {flag})",
                Address::from(addr)
            ));
        }
        seen.push((addr, flag));
    }
    if let Err(e) = check_alpn(args.proto, &args.alpn) {
        return usage(e);
    }
    // Values that would serve nothing, that the kernel would refuse on every connection, or
    // absurd bounds: the library's own checks, named by their flags.
    engine_config(args).validate().map_err(flagged)?;
    if let Some(p) = proxy_config(args) {
        p.validate().map_err(flagged)?;
    }
    weft::tls::check_settings(args.tls_handshake_timeout, args.tls_tickets).map_err(flagged)?;
    weft::config::require_drain("--drain-delay", args.drain_delay).map_err(flagged)?;
    weft::config::require_positive(
        "--header-timeout",
        args.header_timeout,
        "would answer every HTTP request 408",
        "10s",
    )
    .map_err(flagged)?;
    if let Some(path) = &args.hdr_log {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(CliError::Failure(format!(
                "--hdr-log {}: its directory does not exist",
                path.display()
            )));
        }
    }
    Ok(())
}

/// `--check`: the files the start would create, tried by the library as the start tries them
/// ([`Service::check_files`]).
fn check_files(args: &ServeArgs) -> Result<(), CliError> {
    let mut service = Service::new(EngineConfig::default());
    if let Some(path) = &args.handoff_socket {
        service = service.handoff_socket(path);
    }
    if let Some(path) = &args.hdr_log {
        service = service.hdr_log(path);
    }
    service.check_files().map_err(|e| match e {
        ServiceError::HdrLog { path, source } => CliError::Failure(format!(
            "--hdr-log {}: cannot create it: {source}",
            path.display()
        )),
        e => CliError::from(e),
    })
}

/// Longest ALPN protocol name (RFC 7301: a one-byte length).
const MAX_ALPN_NAME: usize = 255;

/// Refuses `--alpn` names that would make handshakes fail or that `proto` cannot speak: an
/// empty name (`--alpn ''`, `h2,,http/1.1`), one over 255 bytes, and for `--proto http`
/// anything but HTTP/1.x (curl picks `h2` when offered, then gets no answer it reads).
fn check_alpn(proto: Proto, names: &[String]) -> Result<(), String> {
    for name in names {
        if name.is_empty() {
            return Err(
                "--alpn: an empty protocol name (from '' or ',,') would fail every handshake that \
                 offers ALPN; list names such as http/1.1, or leave --alpn out"
                    .into(),
            );
        }
        if name.len() > MAX_ALPN_NAME {
            let start: String = name.chars().take(16).collect();
            return Err(format!(
                "--alpn: {start:?}... is {} bytes; an ALPN name is 1 to {MAX_ALPN_NAME} bytes",
                name.len()
            ));
        }
        if proto == Proto::Http && !Http::ALPN.contains(&name.as_str()) {
            return Err(format!(
                "--alpn {name}: --proto http speaks only {}; a client that picks {name} would get \
                 no answer it understands (offer http/1.1)",
                Http::ALPN.join(" and ")
            ));
        }
    }
    Ok(())
}

/// Serves the chosen protocol through the library's [`Service`] until a signal and its drain.
pub(crate) fn run(args: ServeArgs) -> Result<(), CliError> {
    validate(&args)?;
    if args.check {
        // What the start would refuse first: cores this process may not run on, TLS files
        // that do not load or do not match.
        args.cores
            .resolve(&Cores::allowed())
            .map_err(|e| CliError::Failure(e.to_string()))?;
        tls_config(&args)?;
        check_files(&args)?;
        print!("{}", check_report(&args));
        return Ok(());
    }
    let handoffs = args.handoff_socket.clone();
    serve(args).map_err(|e| match (e, handoffs) {
        (ServiceError::Engine(e @ EngineError::AddressInUse(_)), Some(path)) if is_socket(&path) => {
            CliError::Failure(format!(
                "{e}; a weft serves handoffs at {0}: to replace it without losing a connection, \
                 add --takeover {0}",
                path.display()
            ))
        }
        (e, _) => CliError::from(e),
    })
}

/// Whether a Unix socket exists at `path` (a weft serving handoffs there, or one that died).
fn is_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Serves, once the flags are valid.
fn serve(args: ServeArgs) -> Result<(), ServiceError> {
    let tls = tls_config(&args)?;
    let mut ports = ports(&args);
    let config = engine_config(&args);
    let mut service = Service::new(config).drain_delay(args.drain_delay);
    if let Some(path) = &args.takeover {
        service = service.takeover(path)?;
    }
    let proxy = proxy_config(&args);
    if args.proto == Proto::Kv {
        service = service.shard_state(Kv::shard_state(kv_config(&args)));
    }
    if args.listen.is_empty() {
        // Taking over without --listen: every inherited port not named by another flag keeps
        // the role it had (the service refuses to start if its TLS or PROXY settings are
        // missing here, rather than serve it otherwise).
        for (addr, layers) in service.inherited() {
            if !ports.iter().any(|(a, _)| *a == addr) {
                ports.push((addr, layers));
            }
        }
    }
    let mut listeners = Vec::new();
    for (addr, layers) in ports {
        let mut l = ListenerConfig::new(addr).share_port(args.share_port);
        if let (Some(p), true) = (&proxy, layers.proxy) {
            l = l.proxy(p.clone());
        }
        if let (Some(t), true) = (&tls, layers.tls) {
            l = l.tls(t.clone());
        }
        listeners.push(l);
    }
    let name = args.proto.name();
    let header_timeout = args.header_timeout;
    for l in listeners {
        service = match (args.proto, args.upstream.clone()) {
            (Proto::Echo, _) => service.listen(l, |_| Echo::factory()),
            (Proto::Discard, _) => service.listen(l, |_| Discard::factory()),
            (Proto::Http, _) => service.listen(l, move |_| Http::factory_with(header_timeout)),
            (Proto::Whoami, _) => service.listen(l, |_| Whoami::factory()),
            (Proto::Kv, _) => service.listen(l, |_| Kv::factory()),
            // clap requires --upstream with --proto relay.
            (Proto::Relay, Some(up)) => service.listen(l, move |_| Relay::factory(up.clone())),
            (Proto::Relay, None) => service,
        };
    }
    if let Some(addr) = args.health {
        service = service.health_check(addr);
    }
    if let Some(path) = args.handoff_socket {
        service = service.handoff_socket(path);
    }
    if let Some(addr) = args.metrics {
        service = service.prometheus(addr);
    }
    if let Some(every) = args.stats_interval {
        service = service.stats_interval(every);
    }
    if let Some(path) = args.hdr_log {
        service = service.hdr_log(path);
    }
    service.name(name).run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn alpn_names_the_protocol_cannot_speak_are_refused() {
        assert!(check_alpn(Proto::Http, &names(&["http/1.1", "http/1.0"])).is_ok());
        assert!(check_alpn(Proto::Echo, &names(&["h2", "my-proto"])).is_ok());
        assert!(check_alpn(Proto::Http, &[]).is_ok());
        let h2 = check_alpn(Proto::Http, &names(&["h2", "http/1.1"])).unwrap_err();
        assert!(
            h2.contains("--alpn h2: --proto http speaks only http/1.1"),
            "{h2}"
        );
        for bad in [vec![""], vec!["http/1.1", "", "h2"]] {
            let e = check_alpn(Proto::Echo, &names(&bad)).unwrap_err();
            assert!(e.contains("an empty protocol name"), "{e}");
        }
        let long = "x".repeat(256);
        let e = check_alpn(Proto::Echo, &[long]).unwrap_err();
        assert!(e.contains("is 256 bytes"), "{e}");
        assert!(check_alpn(Proto::Echo, &["x".repeat(255)]).is_ok());
    }
}
