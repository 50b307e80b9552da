//! `weft load`: drive a TCP or HTTP service and report throughput, errors and honest latency.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use hdrhistogram::serialization::V2DeflateSerializer;
use weft::hdr::{hgrm, log};
use weft::load::aggregate::Interval;
use weft::load::matcher::Framing;
use weft::load::report::{self, IntervalRow};
use weft::load::runner::{Load, LoadConfig, LoadError, LoadOutcome, STARTUP};
use weft::load::start::{StartAt, UnixTime};
use weft::load::workload::{HttpRequest, Workload, parse_delimiter};
use weft::tls::{ClientTls, Roots};
use weft::{Address, Cores, RingFeatures};

use super::CliError;

/// What the target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LoadProto {
    /// Keep-alive HTTP/1.1 GETs; responses parsed (status, Content-Length, chunked).
    Http,
    /// `--size` bytes that come back unchanged.
    Echo,
    /// The bytes of `--request-file`, answered by `--response-size` bytes or up to
    /// `--response-delimiter`.
    Raw,
    /// Redis (RESP2): `--command`, answered by one reply; error replies counted.
    Redis,
}

impl LoadProto {
    fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Echo => "echo",
            Self::Raw => "raw",
            Self::Redis => "redis",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Target: 127.0.0.1:8080, [::1]:8080, host:port, http://host:port/path or
    /// https://host:port/path.
    #[arg(long)]
    target: String,
    /// What the target speaks.
    #[arg(long, value_enum, default_value = "http")]
    proto: LoadProto,
    /// Connections, spread over the cores.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Cores generating load: a count, taken from the last allowed cores so that a server on
    /// the first ones keeps them (1: the last core; 2: the last two), or a list ("1," for
    /// core 1 alone, "0,2-3").
    #[arg(long, default_value = "1")]
    cores: Cores,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "0s", value_parser = super::duration)]
    warmup: Duration,
    /// Open loop: this many requests per second in total, latency measured from each
    /// request's intended send time. Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// echo: message size (64, 4KiB; at least 1 byte) [default: 64].
    #[arg(long, value_parser = echo_size)]
    size: Option<usize>,
    /// Send this file's bytes as the request (http: a whole HTTP request; raw: required).
    #[arg(long)]
    request_file: Option<PathBuf>,
    /// raw: every response is this many bytes (64, 4KiB).
    #[arg(long, value_parser = super::size)]
    response_size: Option<usize>,
    /// raw: a response ends with this text (escapes: \r \n \t \0 \\ \xHH).
    #[arg(long)]
    response_delimiter: Option<String>,
    /// http: the request path (also taken from an http:// target).
    #[arg(long)]
    path: Option<String>,
    /// http: an extra request header, "Name: value" (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// http: the request method (POST, PUT, HEAD...) [default: GET].
    #[arg(long)]
    method: Option<String>,
    /// http: send this file's bytes as the request body (with its Content-Length).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// redis: the command every request sends, as redis-cli takes it ("SET key value",
    /// quotes allowed) [default: PING].
    #[arg(long)]
    command: Option<String>,
    /// Every `__rand_int__` in the request (a --command's key, a --path) becomes a random
    /// number below N, a fresh one per request, written as 12 digits: redis-benchmark's -r.
    #[arg(long, value_name = "N")]
    keyspace: Option<u64>,
    /// A request unanswered for this long is a timeout (its connection is reopened).
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    timeout: Duration,
    /// Write an HdrHistogram interval log (corrected untagged, Tag=uncorrected).
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// Write the corrected percentile distribution in HdrHistogram's .hgrm layout (ms).
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write the configuration, totals, errors and latencies (µs) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Connect and start at this wall-clock time: RFC 3339 (2026-12-02T09:00:00Z) or Unix
    /// seconds. Load processes on several machines given the same time run together and
    /// their --hdr-log files merge with `weft hist`. A time past by more than 1 s is an error.
    #[arg(long, value_name = "TIME")]
    start_at: Option<StartAt>,
    /// Speak TLS (implied by an https:// target), trusting the system's roots unless
    /// --tls-ca or --tls-insecure says otherwise.
    #[arg(long)]
    tls: bool,
    /// TLS: trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    tls_ca: Option<PathBuf>,
    /// TLS: check no certificate at all (self-signed test servers only).
    #[arg(long)]
    tls_insecure: bool,
    /// TLS: the server name to send (SNI) and check, instead of the target's host.
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// TLS: ALPN protocols to offer (e.g. http/1.1).
    #[arg(long, value_name = "PROTO[,PROTO...]", value_delimiter = ',')]
    alpn: Vec<String>,
    /// TLS: offer no earlier session to resume, so that every connection makes a full
    /// handshake (certificate, signature, key exchange). Without it a new connection resumes
    /// the session of an earlier one, as browsers, curl and wrk do.
    #[arg(long)]
    tls_no_resume: bool,
    /// Open a new connection for each request (each --pipeline batch) and close it once
    /// answered: with TLS, a handshake per request (resumed unless --tls-no-resume). HTTP
    /// requests then say `Connection: close` unless a --header names Connection.
    #[arg(long)]
    new_conn_per_request: bool,
    /// Exit with status 1 when the answered rate falls below this percentage of --rate
    /// (e.g. 90), for scripts and CI.
    #[arg(long, value_name = "PERCENT", requires = "rate")]
    fail_under: Option<f64>,
    /// Exit with status 1 when the run counts more errors than this (0: any error).
    #[arg(long, value_name = "N")]
    max_errors: Option<u64>,
    /// io_uring set-up features for the load cores' rings, where the kernel has them: all,
    /// none, or a list of coop-taskrun, single-issuer, defer-taskrun, registered-fd.
    #[arg(long, default_value_t = RingFeatures::default())]
    ring_features: RingFeatures,
}

pub(crate) fn run(args: LoadArgs) -> Result<(), CliError> {
    let target = parse_target(&args.target).map_err(CliError::Usage)?;
    let workload = workload(&args, &target)?;
    let mut config = LoadConfig::new(target.addr, workload);
    config.conns = args.conns;
    config.cores = args.cores.clone();
    config.duration = args.duration;
    config.warmup = args.warmup;
    config.rate = args.rate;
    config.pipeline = args.pipeline;
    config.timeout = args.timeout;
    config.new_conn_per_request = args.new_conn_per_request;
    config.keyspace = args.keyspace;
    config.reactor.ring = args.ring_features;
    config.tls = client_tls(&args, &target)?;
    config.start_at = args.start_at.map(|at| at.time());

    let stop = Arc::new(AtomicBool::new(false));
    // A first Ctrl-C stops the run and prints what was measured; a second one exits.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let installed = signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()));
        if let Err(e) = installed {
            return Err(CliError::Failure(format!("cannot install signal handlers: {e}")));
        }
    }
    let outputs = Outputs::create(&args)?;
    if let Some(at) = args.start_at
        && let Err(e) = wait_until(at, &stop)
    {
        outputs.discard();
        return Err(e);
    }
    let proto = match (&config.tls, config.new_conn_per_request) {
        (None, false) => args.proto.name().to_owned(),
        (None, true) => format!("{}, a connection per request", args.proto.name()),
        (Some(_), false) => format!("{} over TLS", args.proto.name()),
        (Some(_), true) => format!(
            "{} over TLS, a {}handshake per request",
            args.proto.name(),
            if args.tls_no_resume { "full " } else { "" }
        ),
    };
    let proto = proto.as_str();
    let load = match Load::start(&config, &stop) {
        Ok(load) => load,
        Err(e) => {
            outputs.discard();
            return Err(load_error(e));
        }
    };
    eprintln!(
        "weft load: {} ({proto}), {} connections on cores {:?}, {}{}",
        Address::from(target.addr),
        config.conns,
        load.cores(),
        config.duration.as_secs_f64(),
        if config.warmup.is_zero() {
            " s".to_owned()
        } else {
            format!(" s after {} s of warm-up", config.warmup.as_secs_f64())
        }
    );
    let outcome = drive(load, &config, proto, outputs)?;
    print!("{}", report::summary(&config, proto, &outcome));
    if outcome.total.sample.requests == 0 {
        // A script or CI job must not take a run of errors for a measurement.
        return Err(CliError::Failure(
            "no request was answered: see the errors above".into(),
        ));
    }
    thresholds(&args, &config, &outcome).map_err(CliError::Failure)
}

/// `--fail-under` and `--max-errors`: why the run falls short of them, if it does.
fn thresholds(args: &LoadArgs, config: &LoadConfig, outcome: &LoadOutcome) -> Result<(), String> {
    let t = &outcome.total;
    if let (Some(percent), Some(rate)) = (args.fail_under, config.rate)
        && t.rate() < rate * percent / 100.0
    {
        return Err(format!(
            "answered {:.0} req/s, {:.1}% of the {rate} req/s offered: under --fail-under {percent}",
            t.rate(),
            100.0 * t.rate() / rate
        ));
    }
    match args.max_errors {
        Some(max) if t.sample.errors.total() > max => Err(format!(
            "{} errors: more than --max-errors {max}",
            t.sample.errors.total()
        )),
        _ => Ok(()),
    }
}

/// Sleeps until the `--start-at` time, or until a signal sets `stop`.
fn wait_until(at: StartAt, stop: &AtomicBool) -> Result<(), CliError> {
    let delay = at
        .delay_from(SystemTime::now())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if !delay.is_zero() {
        eprintln!(
            "weft load: waiting {:.1} s to start at {}",
            delay.as_secs_f64(),
            UnixTime(at.time())
        );
    }
    // Short sleeps against the wall clock: a signal ends the wait, and a clock stepped by
    // NTP meanwhile is followed. The cores start and connect STARTUP before the time, so
    // that the run (and its log's StartTime) begins at it.
    while let Ok(left) = at.delay_from(SystemTime::now() + STARTUP) {
        if left.is_zero() || stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    if stop.load(Ordering::Relaxed) {
        return Err(CliError::Failure("interrupted before the start time".into()));
    }
    Ok(())
}

/// The client TLS of the run, if it speaks TLS.
fn client_tls(args: &LoadArgs, target: &Target) -> Result<Option<ClientTls>, CliError> {
    if !(args.tls || target.https) {
        if args.tls_no_resume {
            return Err(CliError::Usage(
                "--tls-no-resume needs TLS: add --tls or use an https:// target".into(),
            ));
        }
        return Ok(None);
    }
    let roots = match (&args.tls_ca, args.tls_insecure) {
        (_, true) => Roots::SkipVerification,
        (Some(ca), false) => Roots::CaFile(ca.clone()),
        (None, false) => Roots::System,
    };
    let alpn: Vec<&str> = args.alpn.iter().map(String::as_str).collect();
    let mut tls = ClientTls::new(roots, &alpn).map_err(|e| CliError::Usage(e.to_string()))?;
    if args.tls_no_resume {
        tls = tls.without_resumption();
    }
    let name = args.tls_server_name.clone().or_else(|| target.name.clone());
    Ok(Some(match name {
        Some(name) => tls.with_server_name(name),
        None => tls,
    }))
}

/// Where `--target` points.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    /// The path of an `http://` or `https://` target.
    path: Option<String>,
    /// What the HTTP `Host` header says: the name as given, or the numeric address.
    host: String,
    /// The host's name, when it is one (not a numeric address): the TLS server name.
    name: Option<String>,
    /// An `https://` target.
    https: bool,
}

/// Parses a target: a numeric address, `host:port` (resolved here, on the main thread),
/// `http://host[:port]/path` or `https://host[:port]/path`.
fn parse_target(s: &str) -> Result<Target, String> {
    let (scheme, default_port) = if s.starts_with("https://") {
        ("https://", 443)
    } else {
        ("http://", 80)
    };
    let (hostport, path) = match s.strip_prefix(scheme) {
        Some(rest) => match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
            None => (rest, None),
        },
        None => (s, None),
    };
    let https = scheme == "https://" && s.starts_with(scheme);
    let hostport = if s.starts_with(scheme) && !hostport.contains(':') {
        format!("{hostport}:{default_port}")
    } else {
        hostport.to_owned()
    };
    if let Ok(a) = hostport.parse::<Address>() {
        return Ok(Target {
            addr: a.socket_addr(),
            path,
            host: a.to_string(),
            name: None,
            https,
        });
    }
    let bad = |why: String| format!("invalid target {s:?}: {why}");
    let mut addrs = hostport
        .to_socket_addrs()
        .map_err(|e| bad(format!("{e} (expected e.g. 127.0.0.1:8080 or host:port)")))?;
    let addr = addrs.next().ok_or_else(|| bad("no address found".into()))?;
    let name = hostport.rsplit_once(':').map(|(h, _)| h.to_owned());
    Ok(Target {
        addr,
        path,
        host: hostport,
        name,
        https,
    })
}

fn workload(args: &LoadArgs, target: &Target) -> Result<Workload, CliError> {
    let usage = |e: weft::load::workload::WorkloadError| CliError::Usage(e.to_string());
    let request = match &args.request_file {
        Some(p) => {
            Some(std::fs::read(p).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?)
        }
        None => None,
    };
    if args.proto != LoadProto::Raw && (args.response_size.is_some() || args.response_delimiter.is_some()) {
        return Err(CliError::Usage(
            "--response-size and --response-delimiter are for --proto raw".into(),
        ));
    }
    if (args.method.is_some() || args.body_file.is_some()) && args.proto != LoadProto::Http {
        return Err(CliError::Usage(
            "--method and --body-file are for --proto http".into(),
        ));
    }
    if args.size.is_some() && args.proto != LoadProto::Echo {
        return Err(CliError::Usage("--size is for --proto echo".into()));
    }
    if args.command.is_some() && args.proto != LoadProto::Redis {
        return Err(CliError::Usage("--command is for --proto redis".into()));
    }
    match args.proto {
        LoadProto::Redis if request.is_some() => Err(CliError::Usage(
            "--proto redis sends --command, not --request-file (raw RESP bytes go with --proto raw)".into(),
        )),
        LoadProto::Redis => Workload::redis(args.command.as_deref().unwrap_or("PING")).map_err(usage),
        LoadProto::Http => match request {
            Some(_) if args.method.is_some() || args.body_file.is_some() => Err(CliError::Usage(
                "--request-file is the whole request: --method and --body-file go without it".into(),
            )),
            Some(r) => Workload::http_request(r).map_err(usage),
            None => {
                let body = match &args.body_file {
                    Some(p) => std::fs::read(p)
                        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?,
                    None => Vec::new(),
                };
                Workload::http(&HttpRequest {
                    method: args.method.as_deref().unwrap_or("GET"),
                    host: &target.host,
                    path: args.path.as_deref().or(target.path.as_deref()).unwrap_or("/"),
                    headers: &args.headers,
                    body: &body,
                    close: args.new_conn_per_request,
                })
                .map_err(usage)
            }
        },
        LoadProto::Echo => Ok(match request {
            Some(r) if !r.is_empty() => Workload::raw(r.clone(), Framing::Echo(r)).map_err(usage)?,
            _ => Workload::echo(args.size.unwrap_or(64)),
        }),
        LoadProto::Raw => {
            let Some(request) = request else {
                return Err(CliError::Usage("--proto raw needs --request-file".into()));
            };
            let framing = match (args.response_size, &args.response_delimiter) {
                (Some(n), None) if n > 0 => Framing::Length(n),
                (None, Some(d)) => Framing::Delimiter(parse_delimiter(d).map_err(usage)?),
                (Some(_), Some(_)) => {
                    return Err(CliError::Usage(
                        "--response-size and --response-delimiter exclude each other: give one".into(),
                    ));
                }
                _ => {
                    return Err(CliError::Usage(
                        "--proto raw needs one of --response-size N (N > 0) or --response-delimiter TEXT"
                            .into(),
                    ));
                }
            };
            Workload::raw(request, framing).map_err(usage)
        }
    }
}

fn load_error(e: LoadError) -> CliError {
    if e.is_usage() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Failure(e.to_string())
    }
}

/// The output files, opened before the run so that a bad path fails at once.
struct Outputs {
    hdr_log: Option<(PathBuf, BufWriter<File>)>,
    hgrm: Option<(PathBuf, File)>,
    json: Option<(PathBuf, File)>,
}

impl Outputs {
    /// Creates the output files now, so that a path that cannot be written fails before the
    /// run rather than after it.
    fn create(args: &LoadArgs) -> Result<Self, CliError> {
        let named = [
            ("--hdr-log", &args.hdr_log),
            ("--hgrm", &args.hgrm),
            ("--json", &args.json),
        ];
        for (i, (flag, path)) in named.iter().enumerate() {
            let Some(path) = path else { continue };
            if let Some((other, _)) = named[i + 1..].iter().find(|(_, p)| p.as_ref() == Some(path)) {
                return Err(CliError::Usage(format!(
                    "{flag} and {other} name the same file {}: give each its own",
                    path.display()
                )));
            }
        }
        fn open(p: &Option<PathBuf>) -> Result<Option<(PathBuf, File)>, CliError> {
            p.as_ref()
                .map(|p| {
                    File::create(p)
                        .map(|f| (p.clone(), f))
                        .map_err(|e| CliError::Failure(format!("cannot create {}: {e}", p.display())))
                })
                .transpose()
        }
        Ok(Self {
            hdr_log: open(&args.hdr_log)?.map(|(p, f)| (p, BufWriter::new(f))),
            hgrm: open(&args.hgrm)?,
            json: open(&args.json)?,
        })
    }

    /// Removes the files, still empty, of a run that did not start.
    fn discard(self) {
        let paths = [
            self.hdr_log.map(|(p, _)| p),
            self.hgrm.map(|(p, _)| p),
            self.json.map(|(p, _)| p),
        ];
        for p in paths.into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// clap value parser for `--size`: a byte size of at least 1 (an echo of nothing would
/// never be answered).
fn echo_size(s: &str) -> Result<usize, String> {
    match super::size(s)? {
        0 => Err("an echo needs at least 1 byte".into()),
        n => Ok(n),
    }
}

fn write_failed(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Failure(format!("cannot write {}: {e}", path.display()))
}

/// Waits for the run, printing progress and streaming the interval log; then writes the
/// .hgrm and JSON files.
fn drive(load: Load, config: &LoadConfig, proto: &str, outputs: Outputs) -> Result<LoadOutcome, CliError> {
    let Outputs { hdr_log, hgrm, json } = outputs;
    let (log_path, mut log_file) = match hdr_log {
        Some((p, f)) => (Some(p), Some(f)),
        None => (None, None),
    };
    let mut serializer = V2DeflateSerializer::new();
    let comment = format!(
        "weft load {} ({proto}), {} connections; untagged: latency from intended send time, \
         Tag={}: from actual send time; values in ns",
        Address::from(config.target),
        config.conns,
        log::UNCORRECTED_TAG
    );
    let measured_from = load.measured_from();
    let mut log = match (&log_path, log_file.as_mut()) {
        (Some(p), Some(f)) => {
            Some(log::begin(f, &mut serializer, measured_from, &comment).map_err(|e| write_failed(p, e))?)
        }
        _ => None,
    };
    let mut log_error = None;
    let mut rows = Vec::new();
    let mut progress = Progress::new(config.duration);
    let outcome = load
        .wait(|interval, total| {
            progress.update(interval, total);
            rows.push(IntervalRow::of(interval));
            if let Some(log) = log.as_mut()
                && log_error.is_none()
            {
                log_error = write_interval(log, interval).err();
            }
        })
        .map_err(load_error)?;
    progress.finish();
    drop(log);
    if let (Some(p), Some(f)) = (&log_path, log_file.as_mut()) {
        if let Some(e) = log_error {
            return Err(write_failed(p, e));
        }
        f.flush().map_err(|e| write_failed(p, e))?;
    }
    if let Some((p, mut f)) = hgrm {
        hgrm::write(&outcome.total.sample.corrected, hgrm::NS_PER_MS, &mut f)
            .map_err(|e| write_failed(&p, e))?;
    }
    if let Some((p, f)) = json {
        let doc = report::json(config, proto, &outcome, &rows);
        serde_json::to_writer_pretty(BufWriter::new(f), &doc).map_err(|e| write_failed(&p, e))?;
    }
    Ok(outcome)
}

fn write_interval<W: Write>(log: &mut log::Writer<'_, W>, interval: &Interval) -> Result<(), log::LogError> {
    let (start, length) = (interval.start, interval.length());
    log::write_interval(log, &interval.sample.corrected, start, length, None)?;
    log::write_interval(
        log,
        &interval.sample.uncorrected,
        start,
        length,
        Some(log::UNCORRECTED_TAG),
    )
}

/// The live display on stderr: a progress bar redrawn in place on a terminal, otherwise
/// one line per interval.
struct Progress {
    tty: bool,
    duration: Duration,
}

impl Progress {
    fn new(duration: Duration) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            duration,
        }
    }

    fn update(&mut self, interval: &Interval, total: &Interval) {
        let line = report::live_line(interval, total);
        if self.tty {
            const WIDTH: usize = 20;
            let done = (interval.end.as_secs_f64() / self.duration.as_secs_f64()).clamp(0.0, 1.0);
            let filled = (done * WIDTH as f64).round() as usize;
            eprint!(
                "\r\x1b[2K[{}{}] {line}",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled)
            );
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.addr.port(), t.path, t.host.as_str()),
            (8080, None, "127.0.0.1:8080")
        );
        let t = parse_target("http://[::1]:81/x/y?z").unwrap();
        assert_eq!((t.addr.port(), t.path.as_deref()), (81, Some("/x/y?z")));
        assert_eq!(t.host, "[::1]:81");
        assert_eq!(parse_target("http://127.0.0.1").unwrap().addr.port(), 80);
        let t = parse_target("https://localhost/p").unwrap();
        assert_eq!(
            (t.addr.port(), t.https, t.name.as_deref()),
            (443, true, Some("localhost"))
        );
        assert!(!parse_target("127.0.0.1:1").unwrap().https);
        let t = parse_target("localhost:7000").unwrap();
        assert_eq!((t.addr.port(), t.host.as_str()), (7000, "localhost:7000"));
        for bad in ["", "127.0.0.1", "nonsense", "1.2.3.4:99999"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thresholds_fail_a_run_that_falls_short() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let args = |extra: &[&str]| {
            let mut all = vec!["weft", "--target", "127.0.0.1:1", "--rate", "1000"];
            all.extend_from_slice(extra);
            Cli::parse_from(all).load
        };
        let mut config = LoadConfig::new("127.0.0.1:1".parse().unwrap(), Workload::echo(8));
        config.rate = Some(1000.0);
        let mut total = Interval {
            end: Duration::from_secs(1),
            ..Interval::default()
        };
        total.sample.requests = 850;
        total.sample.errors.add(weft::load::recorder::ErrorKind::Reset);
        let outcome = LoadOutcome {
            total,
            cores: vec![0],
            measured_from: SystemTime::UNIX_EPOCH,
            interrupted: false,
        };
        let short = thresholds(&args(&["--fail-under", "90"]), &config, &outcome).unwrap_err();
        assert!(short.contains("85.0% of the 1000 req/s offered"), "{short}");
        assert!(thresholds(&args(&["--fail-under", "80"]), &config, &outcome).is_ok());
        let errors = thresholds(&args(&["--max-errors", "0"]), &config, &outcome).unwrap_err();
        assert_eq!(errors, "1 errors: more than --max-errors 0");
        assert!(thresholds(&args(&["--max-errors", "1"]), &config, &outcome).is_ok());
    }
}
