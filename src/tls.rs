//! TLS settings: a listener's certificates (chosen by SNI, reloadable without a restart), its
//! ALPN protocols and handshake deadline, and a client connection's trust roots.
//!
//! TLS is a layer of the driver between the socket and the protocol: a protocol's
//! `data_received` sees plaintext and its [`Transport::write`](crate::Transport::write) takes
//! plaintext, exactly as on a plain connection. The sessions are rustls' (ring provider),
//! TLS 1.2 and 1.3.
//!
//! ```no_run
//! use weft::tls::TlsConfig;
//! use weft::{Engine, EngineConfig, ListenerConfig, protocols::Echo};
//!
//! let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?
//!     .with_sni("api.example.com", "api-cert.pem", "api-key.pem")?
//!     .with_alpn(&["h2", "http/1.1"]);
//! let listener = ListenerConfig::new("0.0.0.0:8443".parse()?).tls(tls.clone());
//! let engine = Engine::builder(EngineConfig::default())
//!     .listen(listener, |_shard| Echo::factory())
//!     .start()?;
//! // Later, after the files were replaced (a Service does this on SIGHUP):
//! tls.reload()?;
//! # engine.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Connections on a TLS listener
//!
//! - The handshake runs before the protocol exists: the factory's `build_protocol` and the
//!   protocol's `connection_made` come after it succeeded. A PROXY-protocol header, when the
//!   listener requires one, comes first (HAProxy's `send-proxy-v2` in TCP mode).
//! - It must finish within [`TlsConfig::handshake_timeout`] (10 s by default). Every
//!   handshake is counted by result in `StatsSnapshot::tls_handshakes` (Prometheus
//!   `weft_tls_handshakes_total{result}`, labels [`HANDSHAKE_LABELS`]: `ok` for a full
//!   handshake, `resumed` for one that resumed an earlier session) and timed in the
//!   `tls_handshake` latency metric; a failed one is closed without reaching any protocol.
//! - Flow control, the write-stall and idle timeouts, drain and handoff work as on plain
//!   connections; queued output counts the ciphertext not yet sent.
//! - An orderly close (`lose_connection`, the peer's EOF, the protocol's deadline, the idle
//!   timeout) sends a `close_notify` alert after the queued output, then the FIN; an abort,
//!   an error or a forced close (output cap, write stall, the end of a drain) sends none.
//! - Half-close: `lose_write_connection` sends `close_notify` then shuts the write side; the
//!   peer's `close_notify` (or a TCP FIN without one, which many clients send) is the read
//!   EOF, `read_connection_lost`. TLS 1.3 peers may go on reading after our `close_notify`;
//!   many TLS 1.2 stacks close at once.
//! - A TLS error after the handshake (a bad record, a fatal alert from the peer, such as one
//!   answering our refusal to renegotiate) closes the connection with an I/O error of kind
//!   `InvalidData`, counted in `StatsSnapshot::tls_errors`.
//! - Memory: an idle TLS connection holds its rustls session (keys, state) and a 4 KiB input
//!   buffer, about 15 KB in all against about 2 KB for a plain one (`tests/tls.rs` measures
//!   both): rustls' input buffer is shrunk back after every read that leaves no partial
//!   record, and the driver frees its ciphertext buffer once it is sent, so no buffer stays at
//!   the size of the largest record.
//!
//! # Client connections
//!
//! [`ClientTls`] (given to [`ConnectOptions::tls`](crate::ConnectOptions::tls)) checks the
//! server against the system's roots, a CA file, or, for tests, nothing. Its connections
//! resume the session of an earlier connection to the same server (a TLS 1.3 ticket, kept
//! in memory), as browsers and curl do; [`ClientTls::without_resumption`] makes every
//! connection a full handshake instead (`weft load --tls-no-resume`, to measure them).

mod x509;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use crate::proto::tls::{ClientTls, HANDSHAKE_LABELS, HandshakeResult};
/// The rustls crate weft is built with, for [`ClientTls::from_config`] and its types.
pub use rustls;

/// Default time a client has to complete the handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS 1.3 session tickets per handshake unless [`TlsConfig::tls13_tickets`] says otherwise.
/// Measured with wrk's full-handshake benchmark (bench/tls.sh, `Connection: close`): one
/// instead of two took weft's handshake rate from 0.90x to 0.98x nginx's (means of four
/// alternating runs), with 5% less server and 8% less client CPU per handshake.
pub const DEFAULT_TLS13_TICKETS: usize = 1;

/// The most TLS 1.3 session tickets a handshake may send ([`TlsConfig::tls13_tickets`]): 16.
/// rustls makes and sends every ticket during each full handshake, so any client sets off
/// their cost on every connection (100000 made one handshake take 1.8 s and the process grow
/// 16 MB); a client resumes one connection per ticket, and browsers open at most 6 at once to
/// a host (OpenSSL and nginx send 2, rustls 2 by default).
pub const MAX_TLS13_TICKETS: usize = 16;

/// What [`TlsConfig::validate`] checks, for settings not yet in a [`TlsConfig`] (a command
/// line checked before its certificate files are read): a handshake timeout above 0 and at
/// most [`MAX_TLS13_TICKETS`] tickets.
///
/// # Errors
///
/// The first setting refused, as a [`ConfigError`](crate::ConfigError) naming it
/// `tls.handshake_timeout` or `tls.tls13_tickets`.
pub fn check_settings(
    handshake_timeout: Duration,
    tls13_tickets: usize,
) -> Result<(), crate::proto::settings::ConfigError> {
    crate::proto::settings::require_positive(
        "tls.handshake_timeout",
        handshake_timeout,
        "would fail every handshake",
        "10s",
    )?;
    if tls13_tickets > MAX_TLS13_TICKETS {
        return Err(crate::proto::settings::ConfigError::new(
            "tls.tls13_tickets",
            tls13_tickets,
            format!(
                "would make every handshake send that many tickets (each a key derivation and a \
                 session entry): give at most {MAX_TLS13_TICKETS} (a client resumes one \
                 connection per ticket; 1 by default)"
            ),
        ));
    }
    Ok(())
}

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source} (check the path and its permissions)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file holds no PEM item of the kind expected.
    #[error("{path} holds no {what} in PEM form (expected a -----BEGIN {what}----- block)")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// A PEM block could not be decoded.
    #[error("{path}: malformed PEM: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },
    /// The key file holds no private key in a PEM form weft reads.
    #[error(
        "{path} holds no private key in PEM form (expected a -----BEGIN PRIVATE KEY----- (PKCS#8), \
         -----BEGIN RSA PRIVATE KEY----- (PKCS#1) or -----BEGIN EC PRIVATE KEY----- (SEC1) block; \
         convert other forms with openssl pkey -in KEY -out KEY.pem)"
    )]
    NoKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key is encrypted (PKCS#8 `ENCRYPTED PRIVATE KEY`, or a legacy `Proc-Type:
    /// 4,ENCRYPTED` block): weft asks for no passphrase.
    #[error(
        "{path}: the key is encrypted: weft needs an unencrypted key (openssl pkey -in KEY -out \
         PLAIN, then keep PLAIN readable by weft's user only)"
    )]
    EncryptedKey {
        /// The key file.
        path: PathBuf,
    },
    /// An RSA key shorter than rustls (ring) accepts.
    #[error(
        "{path}: an RSA key of {bits} bits: rustls needs at least 2048 (make a new key and \
         certificate: openssl req -x509 -newkey rsa:2048 ..., or use an ECDSA P-256 key)"
    )]
    WeakRsaKey {
        /// The key file.
        path: PathBuf,
        /// The key's modulus length.
        bits: usize,
    },
    /// The key is of a kind rustls cannot sign with, or does not match the certificate.
    #[error(
        "{path}: unusable key: {detail} (use an ECDSA P-256/P-384, Ed25519 or RSA key matching the certificate)"
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// A name given for SNI is not a valid DNS name.
    #[error("invalid SNI name {0:?}: expected a DNS name such as api.example.com or *.example.com")]
    Name(String),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(#[from] rustls::Error),
    /// The system's root certificates could not be loaded.
    #[error("no usable system root certificates ({0}); give a CA file instead")]
    NoRoots(String),
}

/// The crypto provider every session uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain and key of one certificate, and the leaf's subject and
/// validity (`None` if they cannot be read: the certificate is still served).
fn load_key(cert: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, Option<x509::CertDates>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        detail: pem_detail(&e),
    };
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::Empty {
            path: cert.to_owned(),
            what: "CERTIFICATE",
        });
    }
    let key_pem = read(key)?;
    if is_encrypted(&key_pem) {
        return Err(TlsError::EncryptedKey { path: key.to_owned() });
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: key.to_owned() },
        e => pem_err(key, e),
    })?;
    let rsa_bits = x509::rsa_key_bits(&der);
    let key_err = |e: rustls::Error| match rsa_bits {
        Some(bits) if bits < MIN_RSA_BITS => TlsError::WeakRsaKey {
            path: key.to_owned(),
            bits,
        },
        _ => TlsError::Key {
            path: key.to_owned(),
            detail: e.to_string(),
        },
    };
    let dates = chain.first().and_then(|leaf| x509::read(leaf));
    let certified = CertifiedKey::from_der(chain, der, &provider()).map_err(key_err)?;
    Ok((Arc::new(certified), dates))
}

/// The shortest RSA key rustls' ring provider accepts.
const MIN_RSA_BITS: usize = 2048;

/// Whether a PEM key file holds an encrypted key: PKCS#8 `ENCRYPTED PRIVATE KEY`, or
/// OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` header.
fn is_encrypted(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// One certificate as configured: its files, and what was last loaded from them.
#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// The certificates in use: the default one and those chosen by SNI name.
#[derive(Debug, Clone)]
struct Loaded {
    default: Arc<CertifiedKey>,
    /// Lower-case names (a leading `*.` for a wildcard), each with its certificate.
    by_name: Vec<(String, Arc<CertifiedKey>)>,
    /// What was loaded, for the log and the metrics: the default certificate first, then the
    /// SNI ones.
    described: Vec<Described>,
}

/// One loaded certificate: for whom (`default` or the SNI name), its file, its leaf's subject
/// and validity.
#[derive(Debug, Clone)]
pub(crate) struct Described {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    pub(crate) dates: Option<x509::CertDates>,
}

impl Described {
    /// `FILE (CN=..., valid until 2027-01-01T00:00:00Z)`.
    fn summary(&self) -> String {
        let file = self.file.display();
        let sni = if self.name == DEFAULT_NAME {
            String::new()
        } else {
            format!("SNI {}: ", self.name)
        };
        match &self.dates {
            Some(d) => format!(
                "{sni}{file} ({}, valid until {})",
                if d.subject.is_empty() {
                    "no subject"
                } else {
                    &d.subject
                },
                crate::proto::civil::rfc3339(d.not_after)
            ),
            None => format!("{sni}{file} (validity unreadable)"),
        }
    }

    /// Logs a warning if the certificate is expired or not yet valid at `now` (Unix seconds):
    /// clients that check it refuse it, but it is served anyway (as nginx does).
    fn warn_if_invalid(&self, now: i64) {
        let Some(d) = &self.dates else { return };
        if d.not_after < now {
            tracing::warn!(
                "TLS certificate {} expired at {}: clients that check it refuse it; renew it and \
                 send SIGHUP",
                self.summary(),
                crate::proto::civil::rfc3339(d.not_after)
            );
        } else if d.not_before > now {
            tracing::warn!(
                "TLS certificate {} is not valid before {}: clients that check it refuse it until \
                 then (is the clock right?)",
                self.summary(),
                crate::proto::civil::rfc3339(d.not_before)
            );
        }
    }
}

/// The `name` of the certificate served to clients that no SNI certificate matches.
const DEFAULT_NAME: &str = "default";

/// Now, in Unix seconds.
fn unix_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

impl Loaded {
    /// The certificate for `name`: an exact match, then a wildcard one level up, then the
    /// default.
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        let wildcard = name.split_once('.').map(|(_, parent)| format!("*.{parent}"));
        let find = |n: &str| self.by_name.iter().find(|(k, _)| k == n).map(|(_, c)| c.clone());
        find(&name)
            .or_else(|| wildcard.as_deref().and_then(find))
            .unwrap_or_else(|| self.default.clone())
    }
}

/// The certificate store every handshake of a listener asks (rustls'
/// [`ResolvesServerCert`]); a reload swaps what it holds.
#[derive(Debug)]
struct CertStore {
    files: RwLock<(CertFiles, Vec<(String, CertFiles)>)>,
    loaded: RwLock<Arc<Loaded>>,
}

impl CertStore {
    fn load(default: &CertFiles, sni: &[(String, CertFiles)]) -> Result<Loaded, TlsError> {
        let (default_key, dates) = load_key(&default.cert, &default.key)?;
        let mut described = vec![Described {
            name: DEFAULT_NAME.to_owned(),
            file: default.cert.clone(),
            dates,
        }];
        let mut by_name = Vec::with_capacity(sni.len());
        for (name, f) in sni {
            let (key, dates) = load_key(&f.cert, &f.key)?;
            by_name.push((name.clone(), key));
            described.push(Described {
                name: name.clone(),
                file: f.cert.clone(),
                dates,
            });
        }
        Ok(Loaded {
            default: default_key,
            by_name,
            described,
        })
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().pick(hello.server_name()))
    }
}

/// A TLS listener's settings: certificates (a default one and more chosen by SNI), ALPN
/// protocols, the handshake deadline. Cheap to clone; clones share the certificates, so a
/// [`reload`](Self::reload) through any clone changes what every listener built from it
/// presents to new handshakes.
#[derive(Clone)]
pub struct TlsConfig {
    store: Arc<CertStore>,
    alpn: Vec<Vec<u8>>,
    /// How long a client has, from the accept (after any PROXY header), to finish the
    /// handshake. Default: [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s).
    pub handshake_timeout: Duration,
    /// TLS 1.3 session tickets sent after each handshake. Each costs the server a session
    /// entry and both sides a key derivation, and the client a cache insert; a client that
    /// reconnects one connection at a time needs one (it gets a fresh ticket every time it
    /// resumes). Raise it for clients that open several connections at once and want each
    /// to resume. At most [`MAX_TLS13_TICKETS`] ([`validate`](Self::validate)). Default:
    /// [`DEFAULT_TLS13_TICKETS`] (1; OpenSSL, and so nginx, send one after a resumed
    /// handshake; rustls's own default is 2).
    pub tls13_tickets: usize,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = self.store.files.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TlsConfig")
            .field("cert", &files.0.cert)
            .field("sni", &files.1.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("alpn", &self.alpn)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("tls13_tickets", &self.tls13_tickets)
            .finish()
    }
}

impl TlsConfig {
    /// Serves the certificate chain in `cert` (PEM, leaf first) with the private key in `key`
    /// (PEM: PKCS#8, SEC1 or PKCS#1, unencrypted; RSA keys of 2048 bits or more), to every
    /// client that names no SNI-configured host.
    ///
    /// # Errors
    ///
    /// [`TlsError`] naming the file that cannot be read, holds no PEM item, or holds a key
    /// that rustls cannot use or that does not match the certificate.
    pub fn from_pem_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let default = CertFiles {
            cert: cert.into(),
            key: key.into(),
        };
        let loaded = CertStore::load(&default, &[])?;
        Ok(Self {
            store: Arc::new(CertStore {
                files: RwLock::new((default, Vec::new())),
                loaded: RwLock::new(Arc::new(loaded)),
            }),
            alpn: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls13_tickets: DEFAULT_TLS13_TICKETS,
        })
    }

    /// Serves the chain in `cert` with the key in `key` to clients whose SNI is `name` (a DNS
    /// name, case-insensitive; `*.example.com` matches one label below `example.com`).
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](Self::from_pem_files), or [`TlsError::Name`] for a bad name.
    pub fn with_sni(
        self,
        name: &str,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let lower = name.to_ascii_lowercase();
        let plain = lower.strip_prefix("*.").unwrap_or(&lower);
        if !matches!(ServerName::try_from(plain), Ok(ServerName::DnsName(_))) {
            return Err(TlsError::Name(name.to_owned()));
        }
        let files = CertFiles {
            cert: cert.into(),
            key: key.into(),
        };
        let (certified, dates) = load_key(&files.cert, &files.key)?;
        let file = files.cert.clone();
        {
            let mut all = self.store.files.write().unwrap_or_else(PoisonError::into_inner);
            all.1.retain(|(n, _)| *n != lower);
            all.1.push((lower.clone(), files));
            let mut loaded = self.store.loaded.write().unwrap_or_else(PoisonError::into_inner);
            let mut next = Loaded::clone(&loaded);
            next.by_name.retain(|(n, _)| *n != lower);
            next.described.retain(|d| d.name != lower);
            next.described.push(Described {
                name: lower.clone(),
                file,
                dates,
            });
            next.by_name.push((lower, certified));
            *loaded = Arc::new(next);
        }
        Ok(self)
    }

    /// Offers these ALPN protocols (`h2`, `http/1.1`, ...), most preferred first. A client
    /// that offers ALPN but none of these fails its handshake (`no_application_protocol`);
    /// one that offers none is served anyway. Default: none.
    #[must_use]
    pub fn with_alpn(mut self, protocols: &[&str]) -> Self {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Refuses a handshake timeout of 0 (every handshake would fail) and more than
    /// [`MAX_TLS13_TICKETS`] tickets. [`EngineBuilder::start`](crate::EngineBuilder::start)
    /// calls it for each TLS listener.
    ///
    /// # Errors
    ///
    /// The first such setting, as a [`ConfigError`](crate::ConfigError) that says what to
    /// give instead.
    pub fn validate(&self) -> Result<(), crate::proto::settings::ConfigError> {
        check_settings(self.handshake_timeout, self.tls13_tickets)
    }

    /// Sets [`tls13_tickets`](Self::tls13_tickets).
    #[must_use]
    pub fn with_tls13_tickets(mut self, tickets: usize) -> Self {
        self.tls13_tickets = tickets;
        self
    }

    /// Reads every certificate and key file again and, if all of them load, makes new
    /// handshakes use them; connections already open keep their session. If any file fails,
    /// nothing changes and the error says which.
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](Self::from_pem_files); the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = self
            .store
            .files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let loaded = CertStore::load(&files.0, &files.1)?;
        *self.store.loaded.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(())
    }

    /// The rustls configuration of a listener: TLS 1.2 and 1.3, no client certificates, the
    /// certificates from this store.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.store.clone());
        config.alpn_protocols = self.alpn.clone();
        config.send_tls13_tickets = self.tls13_tickets;
        Ok(Arc::new(config))
    }
}

/// The TLS settings of a service's listeners, each set of certificates once (listeners built
/// from clones of one [`TlsConfig`] share theirs): logged at start, reloaded together on
/// SIGHUP with one log line each, and exported as metrics.
#[derive(Debug, Default)]
pub(crate) struct TlsSet {
    configs: Vec<TlsConfig>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl TlsSet {
    /// Adds a listener's settings, unless they share their certificates with one added before.
    pub(crate) fn add(&mut self, tls: &TlsConfig) {
        if !self.configs.iter().any(|t| Arc::ptr_eq(&t.store, &tls.store)) {
            self.configs.push(tls.clone());
        }
    }

    /// Logs every certificate in use (subject, expiry), and warns about any expired or not yet
    /// valid one.
    pub(crate) fn log_loaded(&self) {
        let now = unix_now();
        for d in self
            .configs
            .iter()
            .flat_map(|t| t.store.current().described.clone())
        {
            tracing::info!("TLS certificate {}", d.summary());
            d.warn_if_invalid(now);
        }
    }

    /// Reloads every set of certificates (SIGHUP): one log line each, with what is in use now,
    /// and a warning for an expired or not yet valid certificate.
    pub(crate) fn reload(&self) {
        if self.configs.is_empty() {
            tracing::info!("SIGHUP: no TLS listener, nothing to reload");
        }
        let now = unix_now();
        for t in &self.configs {
            match t.reload() {
                Ok(()) => {
                    self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                    let loaded = t.store.current();
                    let what: Vec<String> = loaded.described.iter().map(Described::summary).collect();
                    tracing::info!(
                        "SIGHUP: TLS certificates reloaded; new handshakes use {}",
                        what.join(", ")
                    );
                    for d in &loaded.described {
                        d.warn_if_invalid(now);
                    }
                }
                Err(e) => {
                    self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "SIGHUP: TLS certificates not reloaded, the previous ones stay in use: {e}"
                    );
                }
            }
        }
    }

    /// Every certificate in use: for whom (`default` or its SNI name), its file, its subject
    /// and validity where readable.
    pub(crate) fn certificates(&self) -> Vec<Described> {
        self.configs
            .iter()
            .flat_map(|t| t.store.current().described.clone())
            .collect()
    }

    /// Reloads that succeeded and that failed.
    pub(crate) fn reloads(&self) -> [u64; 2] {
        [
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        ]
    }
}

/// Whom a client connection trusts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Roots {
    /// The system's root certificates (`/etc/ssl/certs`, `SSL_CERT_FILE`).
    System,
    /// The CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Anyone: no certificate check at all. For tests against self-signed servers only; it
    /// gives no protection against an attacker in the path.
    SkipVerification,
}

impl ClientTls {
    /// Client TLS (1.2 and 1.3) trusting `roots` and offering `alpn` (most preferred first).
    /// The server name sent (SNI) and checked is the destination's host unless
    /// [`with_server_name`](Self::with_server_name) sets another.
    ///
    /// # Errors
    ///
    /// [`TlsError`] when the CA file cannot be read or holds no certificate, or the system has
    /// no usable roots.
    pub fn new(roots: Roots, alpn: &[&str]) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let mut store = rustls::RootCertStore::empty();
        let mut config = match roots {
            Roots::SkipVerification => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth(),
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or("none found".to_owned(), |e| e.to_string());
                    return Err(TlsError::NoRoots(why));
                }
                builder.with_root_certificates(store).with_no_client_auth()
            }
            Roots::CaFile(path) => {
                let pem = std::fs::read(&path).map_err(|source| TlsError::Read {
                    path: path.clone(),
                    source,
                })?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError::Pem {
                        path: path.clone(),
                        detail: pem_detail(&e),
                    })?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::Empty {
                        path,
                        what: "CERTIFICATE",
                    });
                }
                builder.with_root_certificates(store).with_no_client_auth()
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(Self::from_config(Arc::new(config)))
    }
}

/// A certificate verifier that accepts every certificate: [`Roots::SkipVerification`].
/// Signatures are still checked, so the handshake itself is sound; only the identity is not.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a PEM decoding error means, in words: the decoder's own text shows the markers as
/// byte arrays.
fn pem_detail(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a {} block has no END line (the file is cut short?)",
            String::from_utf8_lossy(end_marker).trim()
        ),
        Error::IllegalSectionStart { line } => {
            format!("a malformed BEGIN line: {}", String::from_utf8_lossy(line).trim())
        }
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_pem_file_is_named_in_words() {
        use rustls::pki_types::pem::Error;
        let cut = pem_detail(&Error::MissingSectionEnd {
            end_marker: b"CERTIFICATE".to_vec(),
        });
        assert_eq!(
            cut,
            "a CERTIFICATE block has no END line (the file is cut short?)"
        );
        let start = pem_detail(&Error::IllegalSectionStart {
            line: b"-----BEGIN X".to_vec(),
        });
        assert_eq!(start, "a malformed BEGIN line: -----BEGIN X");
    }

    /// A scratch folder with self-signed certificates for `names`, one file pair each.
    struct Files(PathBuf);

    impl Files {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("weft-tls-unit-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
            let key =
                rcgen::generate_simple_self_signed(vec![name.trim_start_matches("*.").to_owned()]).unwrap();
            let (c, k) = (
                self.0.join(format!("{name}.pem")),
                self.0.join(format!("{name}.key")),
            );
            std::fs::write(&c, key.cert.pem()).unwrap();
            std::fs::write(&k, key.key_pair.serialize_pem()).unwrap();
            (c, k)
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn same(a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>) -> bool {
        a.cert == b.cert
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let f = Files::new("sni");
        let (c, k) = f.pair("default");
        let (ac, ak) = f.pair("api.example.com");
        let (wc, wk) = f.pair("*.example.com");
        let tls = TlsConfig::from_pem_files(c, k)
            .unwrap()
            .with_sni("API.example.com", ac, ak)
            .unwrap()
            .with_sni("*.example.com", wc, wk)
            .unwrap();
        let loaded = tls.store.current();
        let named = |n: &str| loaded.by_name.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert!(same(
            &loaded.pick(Some("api.EXAMPLE.com")),
            &named("api.example.com")
        ));
        assert!(same(
            &loaded.pick(Some("www.example.com")),
            &named("*.example.com")
        ));
        assert!(
            same(&loaded.pick(Some("a.b.example.com")), &loaded.default),
            "one label only"
        );
        assert!(same(&loaded.pick(None), &loaded.default));
        assert!(matches!(
            TlsConfig::from_pem_files(f.0.join("default.pem"), f.0.join("default.key"))
                .unwrap()
                .with_sni("not a name", f.0.join("default.pem"), f.0.join("default.key")),
            Err(TlsError::Name(_))
        ));
    }

    #[test]
    fn encrypted_and_missing_keys_say_what_to_do() {
        let f = Files::new("keys");
        let (c, _) = f.pair("one");
        let write = |name: &str, text: &str| {
            let p = f.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let pkcs8 = write(
            "enc8.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBAA==\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let legacy = write(
            "legacy.key",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        );
        for key in [pkcs8, legacy] {
            let e = TlsConfig::from_pem_files(&c, &key).unwrap_err();
            assert!(matches!(e, TlsError::EncryptedKey { .. }), "{e}");
            assert!(
                e.to_string().contains(
                    "the key is encrypted: weft needs an unencrypted key (openssl pkey -in KEY -out PLAIN"
                ),
                "{e}"
            );
        }
        let none = write("none.key", "no key here\n");
        let e = TlsConfig::from_pem_files(&c, &none).unwrap_err().to_string();
        for form in [
            "PKCS#8",
            "PKCS#1",
            "SEC1",
            "BEGIN RSA PRIVATE KEY",
            "BEGIN EC PRIVATE KEY",
        ] {
            assert!(e.contains(form), "{e}");
        }
    }

    #[test]
    fn bad_files_say_which_and_a_failed_reload_keeps_the_old_certificate() {
        let f = Files::new("bad");
        let (c, k) = f.pair("one");
        let (_, other_key) = f.pair("two");
        assert!(matches!(
            TlsConfig::from_pem_files(f.0.join("missing.pem"), &k),
            Err(TlsError::Read { .. })
        ));
        std::fs::write(f.0.join("empty.pem"), "nothing here\n").unwrap();
        assert!(matches!(
            TlsConfig::from_pem_files(f.0.join("empty.pem"), &k),
            Err(TlsError::Empty { .. })
        ));
        assert!(matches!(
            TlsConfig::from_pem_files(&c, &other_key),
            Err(TlsError::Key { .. })
        ));

        let tls = TlsConfig::from_pem_files(&c, &k).unwrap();
        let before = tls.store.current().default.clone();
        std::fs::write(&c, "garbage").unwrap();
        let err = tls.reload().unwrap_err();
        assert!(err.to_string().contains("one.pem"), "{err}");
        assert!(
            same(&tls.store.current().default, &before),
            "the old certificate stays"
        );
        let (c2, k2) = f.pair("three");
        std::fs::rename(c2, &c).unwrap();
        std::fs::rename(k2, &k).unwrap();
        tls.clone().reload().unwrap();
        assert!(
            !same(&tls.store.current().default, &before),
            "a clone's reload changes them all"
        );
    }
}
