//! The client side without I/O: why a connect fails, where it goes, and the rules of a
//! connector's states (Twisted's `ConnectError`s and `Connector` states).
//!
//! The glommio half (sockets, timers, tasks, the `Connector` itself and the `ClientFactory`
//! that hears from it) is `driver::connector`; everything here is plain logic, unit-tested
//! without sockets.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::{Address, AddressError, split_host_port};
use crate::proto::eyeballs::DEFAULT_ATTEMPT_DELAY;
use crate::proto::reconnect::ReconnectPolicy;
use crate::proto::tls::{ClientTls, HandshakeResult};
use crate::proto::transport::Keepalive;

/// Why a connection attempt failed. Delivered once per attempt to
/// [`ClientFactory::client_connection_failed`](crate::ClientFactory::client_connection_failed).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer answered with a reset: nothing listens on that port (`ECONNREFUSED`).
    #[error("connection to {addr} refused: nothing listens there (start the server or check the port)")]
    Refused {
        /// The address that refused.
        addr: Address,
    },
    /// No connection within the connect timeout (or the kernel gave up, `ETIMEDOUT`).
    #[error(
        "no connection after {after:?}: the peer does not answer (check that the host is up and the \
         port not filtered, or raise the connect timeout)"
    )]
    TimedOut {
        /// How long the attempt ran.
        after: Duration,
    },
    /// There is no route to the address (`ENETUNREACH`, `EHOSTUNREACH`, `EADDRNOTAVAIL`).
    #[error("{addr} is unreachable: {source} (check the address, its scope and the routes)")]
    Unreachable {
        /// The address tried.
        addr: Address,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The client socket could not be created or bound to the bind address.
    #[error("cannot set up the client socket{}: {source}{}", bind_text(.addr), bind_hint(.addr, .source))]
    Bind {
        /// The bind address, if one was given.
        addr: Option<Address>,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The host name did not resolve to any usable address.
    #[error("cannot resolve {host:?}: {detail} (check the name, or give a numeric address)")]
    Resolution {
        /// The name looked up.
        host: String,
        /// What the resolver said.
        detail: String,
    },
    /// [`Connector::stop_connecting`](crate::Connector::stop_connecting) (or `disconnect`,
    /// `stop_trying`) ended the attempt.
    #[error("the connection attempt was cancelled")]
    Cancelled,
    /// The TLS handshake failed (or did not finish within the connect timeout).
    #[error("TLS handshake with {addr} failed ({}): {detail} (check the server name, the trusted roots and the ALPN protocols)", .result.label())]
    Tls {
        /// The address connected to.
        addr: Address,
        /// How the handshake ended.
        result: HandshakeResult,
        /// What went wrong.
        detail: String,
    },
    /// Any other error while connecting.
    #[error("connecting to {addr} failed: {source}")]
    Io {
        /// The address tried.
        addr: Address,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
}

fn bind_text(addr: &Option<Address>) -> String {
    addr.map(|a| format!(" bound to {a}")).unwrap_or_default()
}

/// What to do about a client socket that could not be set up: out of descriptors, or a bind
/// address that does not work.
fn bind_hint(addr: &Option<Address>, source: &io::Error) -> &'static str {
    match (source.raw_os_error(), addr) {
        (Some(libc::EMFILE | libc::ENFILE), _) => {
            " (out of descriptors: close some, open fewer connections, or raise the limit: ulimit -n)"
        }
        (_, Some(_)) => " (use a local address of this host and a free port, or no bind address)",
        (_, None) => "",
    }
}

impl ConnectError {
    /// Classifies an error from `connect(2)` or from the socket's pending error.
    pub(crate) fn from_io(addr: Address, err: io::Error, elapsed: Duration) -> Self {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => Self::Refused { addr },
            Some(libc::ETIMEDOUT) => Self::TimedOut { after: elapsed },
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL) => Self::Unreachable {
                addr,
                source: Arc::new(err),
            },
            _ => Self::Io {
                addr,
                source: Arc::new(err),
            },
        }
    }

    /// A short stable label for logs and counters: `refused`, `timed_out`, `unreachable`,
    /// `bind`, `resolution`, `cancelled`, `tls` or `io_error`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::TimedOut { .. } => "timed_out",
            Self::Unreachable { .. } => "unreachable",
            Self::Bind { .. } => "bind",
            Self::Resolution { .. } => "resolution",
            Self::Cancelled => "cancelled",
            Self::Tls { .. } => "tls",
            Self::Io { .. } => "io_error",
        }
    }

    /// The OS error number behind the failure, when there is one (Twisted's `osError`).
    pub fn os_error(&self) -> Option<i32> {
        match self {
            Self::Refused { .. } => Some(libc::ECONNREFUSED),
            Self::Unreachable { source, .. } | Self::Bind { source, .. } | Self::Io { source, .. } => {
                source.raw_os_error()
            }
            Self::TimedOut { .. } | Self::Resolution { .. } | Self::Cancelled | Self::Tls { .. } => None,
        }
    }

    /// False for a cancelled attempt, which a reconnect policy never retries.
    pub(crate) fn is_retryable(&self) -> bool {
        !matches!(self, Self::Cancelled)
    }
}

/// Options of [`connect_tcp`](crate::connect_tcp); every field documents its default. Start
/// from [`ConnectOptions::default()`] and set what matters (the type is `#[non_exhaustive]`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// How long an attempt may take, resolution included, before it fails with
    /// [`ConnectError::TimedOut`]. Default: 30 s (Twisted's).
    pub timeout: Duration,
    /// Local address to bind the socket to before connecting (port 0: any free port).
    /// Host names then resolve to its family only. Default: none (the kernel picks).
    pub bind: Option<Address>,
    /// TCP_NODELAY on the connection. Default: on, as on the server side.
    pub nodelay: bool,
    /// TCP keepalive probes, as on the server side. Default: off.
    pub keepalive: Option<Keepalive>,
    /// Retry failed attempts and lost connections with exponential back-off. Default: none.
    pub reconnect: Option<ReconnectPolicy>,
    /// Happy eyeballs (RFC 8305) for a name with several addresses: the head start each
    /// connection attempt gets before the next address (IPv6 first, then alternating
    /// families) is tried beside it; a failed attempt starts the next at once, and the first
    /// to connect wins. Default: 250 ms, RFC 8305's value.
    pub attempt_delay: Duration,
    /// Speak TLS over the connection: the handshake runs after the connect and before the
    /// protocol is built; a failed one fails the attempt with [`ConnectError::Tls`]. Default:
    /// none (plain TCP).
    pub tls: Option<ClientTls>,
}

impl ConnectOptions {
    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`bind`](Self::bind).
    #[must_use]
    pub fn with_bind(mut self, bind: Option<Address>) -> Self {
        self.bind = bind;
        self
    }

    /// Sets [`nodelay`](Self::nodelay).
    #[must_use]
    pub fn with_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Sets [`keepalive`](Self::keepalive).
    #[must_use]
    pub fn with_keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`reconnect`](Self::reconnect).
    #[must_use]
    pub fn with_reconnect(mut self, reconnect: Option<ReconnectPolicy>) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets [`attempt_delay`](Self::attempt_delay).
    #[must_use]
    pub fn with_attempt_delay(mut self, delay: Duration) -> Self {
        self.attempt_delay = delay;
        self
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            bind: None,
            nodelay: true,
            keepalive: None,
            reconnect: None,
            attempt_delay: DEFAULT_ATTEMPT_DELAY,
            tls: None,
        }
    }
}

/// Why a string is not a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// A numeric IPv4 or IPv6 literal (with its scope) that is not valid.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Not of the form `host:port`, a bad host name, or a bad port.
    #[error(
        "invalid destination {input:?}: {reason} (expected host:port, 127.0.0.1:7000, [::1]:7000 or \
         [fe80::1%lo]:7000)"
    )]
    Invalid {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Where a connector connects: a host as given (a name, or a numeric address) and a port.
///
/// A numeric host (`127.0.0.1`, `::1`, `fe80::1%lo`) is parsed here, with no lookup, into an
/// [`Address`] with its scope id (Twisted's `_resolveIPv6` with `AI_NUMERICHOST`); a name is
/// resolved, off the executor thread, at each attempt. Ports are numeric only (no service
/// names).
///
/// # Examples
///
/// ```
/// use weft::Destination;
///
/// let d: Destination = "[::1]:7000".parse()?;
/// assert_eq!(d.address().map(|a| a.port()), Some(7000));
/// let n: Destination = "example.com:80".parse()?;
/// assert_eq!((n.host(), n.port(), n.address()), ("example.com", 80, None));
/// assert!("[fe80::1%lo]:http".parse::<Destination>().is_err());
/// # Ok::<(), weft::DestinationError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    host: String,
    port: u16,
    numeric: Option<Address>,
}

impl Destination {
    /// A destination from a host (a name, or a numeric address, brackets optional) and a port.
    ///
    /// # Errors
    ///
    /// Port 0, an empty or malformed host name, or a host that looks numeric (it has a `:` or
    /// a `%`, or is four dotted numbers) but is not a valid address.
    pub fn new(host: &str, port: u16) -> Result<Self, DestinationError> {
        Self::parse_parts(host, &port.to_string(), &format!("{host}:{port}"))
    }

    fn parse_parts(host: &str, port: &str, input: &str) -> Result<Self, DestinationError> {
        let invalid = |reason| DestinationError::Invalid {
            input: input.to_owned(),
            reason,
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let looks_numeric = bare.contains([':', '%'])
            || (bare.split('.').count() == 4 && bare.parse::<std::net::Ipv4Addr>().is_ok());
        let numeric = if looks_numeric {
            // Bracketed, so that an error quotes an IPv6 host as it was written.
            let literal = if bare.contains(':') {
                format!("[{bare}]")
            } else {
                bare.to_owned()
            };
            Some(Address::from_host_port(&literal, port)?)
        } else {
            if !is_host_name(bare) {
                return Err(invalid(
                    "the host is neither a numeric address nor a valid host name",
                ));
            }
            None
        };
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(invalid("port 0 cannot be connected to"));
        }
        Ok(Self {
            host: bare.to_owned(),
            port,
            numeric,
        })
    }

    /// The host as given (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address, when the host is numeric (no lookup needed); `None` for a host name.
    pub fn address(&self) -> Option<Address> {
        self.numeric
    }
}

/// Letters, digits, `-`, `_` and dots, in labels of 1 to 63 characters, 253 at most in all,
/// the last label not all digits (so `1.2.3.4.5` or `127.1` is no name).
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    !host.is_empty()
        && host.len() <= 253
        && !last_numeric
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for Destination {
    type Err = DestinationError;

    /// Parses `host:port`, `[ipv6]:port` or `[ipv6%scope]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = split_host_port(s).map_err(|reason| DestinationError::Invalid {
            input: s.to_owned(),
            reason,
        })?;
        Self::parse_parts(host, port, s)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.numeric {
            Some(addr) => addr.fmt(f),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl From<Address> for Destination {
    fn from(addr: Address) -> Self {
        let host = match addr.socket_addr() {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => v6.ip().to_string(),
        };
        Self {
            host,
            port: addr.port(),
            numeric: Some(addr),
        }
    }
}

impl From<SocketAddr> for Destination {
    fn from(addr: SocketAddr) -> Self {
        Address::from(addr).into()
    }
}

/// Where a [`Connector`](crate::Connector) stands (Twisted's connector states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorState {
    /// Not connected, not connecting (possibly waiting to retry).
    Disconnected,
    /// An attempt is in progress.
    Connecting,
    /// A connection is open.
    Connected,
}

impl fmt::Display for ConnectorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
        })
    }
}

/// A [`Connector`](crate::Connector) method called in a state that does not allow it (Twisted's
/// `RuntimeError` from `connect` and `NotConnectingError` from `stopConnecting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {op} while the connector is {state}: {}", hint(op, *.state))]
pub struct ConnectorStateError {
    op: &'static str,
    state: ConnectorState,
}

impl ConnectorStateError {
    /// The state the connector was in.
    pub fn state(&self) -> ConnectorState {
        self.state
    }
}

fn hint(op: &str, state: ConnectorState) -> &'static str {
    match (op, state) {
        ("connect", ConnectorState::Connecting) => {
            "wait for the attempt to end, or call stop_connecting first"
        }
        ("connect", _) => "call disconnect first",
        _ => "only an attempt in progress can be stopped",
    }
}

/// What a connector does once an attempt has ended and its factory was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterEnd {
    /// Nothing: the factory connected again, or a retry is already pending.
    Idle,
    /// Schedule a retry.
    Retry,
    /// Stop trying: the factory is stopped.
    GiveUp,
}

/// The connector's state machine: which calls are allowed when, which attempt is current,
/// whether a retry is pending, and when the factory starts and stops.
///
/// Attempts are numbered; an outcome reported for an attempt that is no longer current (it
/// was cancelled, and maybe another one started) changes nothing, which is what makes each
/// attempt end exactly once.
#[derive(Debug)]
pub(crate) struct Machine {
    state: ConnectorState,
    /// The number of the latest attempt.
    attempt: u64,
    /// Whether a reconnect policy may retry (cleared by `stop_trying`).
    trying: bool,
    /// The pending retry, by number.
    retry: Option<u64>,
    retries_scheduled: u64,
    factory_started: bool,
}

impl Machine {
    pub(crate) fn new() -> Self {
        Self {
            state: ConnectorState::Disconnected,
            attempt: 0,
            trying: true,
            retry: None,
            retries_scheduled: 0,
            factory_started: false,
        }
    }

    pub(crate) fn state(&self) -> ConnectorState {
        self.state
    }

    /// Starts a new attempt (cancelling a pending retry); returns its number.
    pub(crate) fn connect(&mut self) -> Result<u64, ConnectorStateError> {
        if self.state != ConnectorState::Disconnected {
            return Err(ConnectorStateError {
                op: "connect",
                state: self.state,
            });
        }
        self.state = ConnectorState::Connecting;
        self.attempt += 1;
        self.retry = None;
        Ok(self.attempt)
    }

    /// An explicit `connect` from the program re-arms the reconnect policy.
    pub(crate) fn resume_trying(&mut self) {
        self.trying = true;
    }

    /// Cancels the attempt in progress.
    pub(crate) fn stop_connecting(&mut self) -> Result<u64, ConnectorStateError> {
        if self.state != ConnectorState::Connecting {
            return Err(ConnectorStateError {
                op: "stop connecting",
                state: self.state,
            });
        }
        self.state = ConnectorState::Disconnected;
        Ok(self.attempt)
    }

    /// True when nothing is under way: not connected, not connecting, no retry pending.
    pub(crate) fn is_idle(&self) -> bool {
        self.state == ConnectorState::Disconnected && self.retry.is_none()
    }

    /// True while `attempt` is the one connecting (not cancelled, not superseded).
    pub(crate) fn is_connecting(&self, attempt: u64) -> bool {
        self.state == ConnectorState::Connecting && self.attempt == attempt
    }

    /// The attempt made its connection; false if it was cancelled meanwhile.
    pub(crate) fn connected(&mut self, attempt: u64) -> bool {
        if !self.is_connecting(attempt) {
            return false;
        }
        self.state = ConnectorState::Connected;
        true
    }

    /// The attempt failed or its connection was lost.
    pub(crate) fn ended(&mut self, attempt: u64) {
        if self.attempt == attempt {
            self.state = ConnectorState::Disconnected;
        }
    }

    /// No more retries; cancels a pending one.
    pub(crate) fn stop_trying(&mut self) {
        self.trying = false;
        self.retry = None;
    }

    /// What to do after an ended attempt was reported; `retryable` says whether the policy
    /// would retry this ending.
    pub(crate) fn after_end(&self, retryable: bool) -> AfterEnd {
        if self.state != ConnectorState::Disconnected || self.retry.is_some() {
            AfterEnd::Idle
        } else if retryable && self.trying {
            AfterEnd::Retry
        } else {
            AfterEnd::GiveUp
        }
    }

    /// Records a pending retry; returns its number.
    pub(crate) fn schedule_retry(&mut self) -> u64 {
        self.retries_scheduled += 1;
        self.retry = Some(self.retries_scheduled);
        self.retries_scheduled
    }

    /// True while retry `id` is pending.
    pub(crate) fn retry_pending(&self, id: u64) -> bool {
        self.retry == Some(id)
    }

    /// The retry's time has come: starts its attempt, if it is still pending.
    pub(crate) fn retry_now(&mut self, id: u64) -> Option<u64> {
        if !self.retry_pending(id) {
            return None;
        }
        self.connect().ok()
    }

    /// True the first time an attempt starts after the factory was stopped (or never
    /// started): the factory's `start` runs now.
    pub(crate) fn start_factory(&mut self) -> bool {
        !std::mem::replace(&mut self.factory_started, true)
    }

    /// True when the connector has stopped trying (idle, no retry pending) and the factory
    /// was started: its `stop` runs now.
    pub(crate) fn stop_factory(&mut self) -> bool {
        if self.state != ConnectorState::Disconnected || self.retry.is_some() || !self.factory_started {
            return false;
        }
        self.factory_started = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_numeric_and_names() {
        let d: Destination = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(d.address(), Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(d.to_string(), "127.0.0.1:7000");
        let v6: Destination = "[::1]:80".parse().unwrap();
        assert_eq!((v6.host(), v6.port()), ("::1", 80));
        assert_eq!(v6.to_string(), "[::1]:80");
        let name: Destination = "db-1.example.com:5432".parse().unwrap();
        assert_eq!(
            (name.host(), name.port(), name.address()),
            ("db-1.example.com", 5432, None)
        );
        assert_eq!(name.to_string(), "db-1.example.com:5432");
        assert_eq!(Destination::new("[::1]", 9).unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(Destination::new("localhost", 9).unwrap().address(), None);
    }

    #[test]
    fn a_socket_that_cannot_be_set_up_says_what_to_do() {
        let emfile = ConnectError::Bind {
            addr: None,
            source: Arc::new(io::Error::from_raw_os_error(libc::EMFILE)),
        };
        assert!(emfile.to_string().contains("ulimit -n"), "{emfile}");
        let bound = ConnectError::Bind {
            addr: Some("127.0.0.1:9".parse::<SocketAddr>().unwrap().into()),
            source: Arc::new(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)),
        };
        assert!(
            bound.to_string().contains("a local address of this host"),
            "{bound}"
        );
    }

    #[test]
    fn scoped_link_local_is_numeric() {
        let d: Destination = "[fe80::1%lo]:7000".parse().unwrap();
        let a = d.address().expect("numeric");
        assert!(a.scope_id() > 0);
        assert_eq!(a.flowinfo(), 0);
        assert_eq!(d.to_string(), "[fe80::1%lo]:7000");
        assert_eq!(Destination::new("fe80::1%lo", 7000).unwrap(), d);
    }

    #[test]
    fn destinations_reject_bad_input() {
        for bad in [
            "localhost",
            "localhost:",
            "localhost:http",
            "localhost:0",
            "localhost:70000",
            ":80",
            "bad host:80",
            "a..b:80",
            "::1:80",
            "[::1]80",
            "[fe80::1%lo]:http",
            "[fe80::1%nosuchif0]:80",
            "[fe80::zz]:80",
            "fe80::1%lo:80",
            "1.2.3.4.5:80",
            "127.1:80",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad} should not parse");
        }
        let e = "[fe80::1%lo]:http".parse::<Destination>().unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = "x y:1".parse::<Destination>().unwrap_err();
        assert!(e.to_string().contains("host name"), "{e}");
    }

    #[test]
    fn destination_from_address() {
        let a: Address = "[::1]:5".parse().unwrap();
        let d = Destination::from(a);
        assert_eq!((d.host(), d.port(), d.address()), ("::1", 5, Some(a)));
    }

    #[test]
    fn classifies_connect_errors() {
        let addr: Address = "127.0.0.1:1".parse().unwrap();
        let t = Duration::from_millis(5);
        let e = |errno| ConnectError::from_io(addr, io::Error::from_raw_os_error(errno), t);
        assert_eq!(e(libc::ECONNREFUSED).label(), "refused");
        assert_eq!(e(libc::ECONNREFUSED).os_error(), Some(libc::ECONNREFUSED));
        assert_eq!(e(libc::ETIMEDOUT).label(), "timed_out");
        assert_eq!(e(libc::ENETUNREACH).label(), "unreachable");
        assert_eq!(e(libc::EHOSTUNREACH).os_error(), Some(libc::EHOSTUNREACH));
        assert_eq!(e(libc::EACCES).label(), "io_error");
        assert!(!ConnectError::Cancelled.is_retryable());
        assert!(e(libc::ECONNREFUSED).is_retryable());
        let msg = e(libc::ECONNREFUSED).to_string();
        assert!(msg.contains("127.0.0.1:1") && msg.contains("refused"), "{msg}");
        let bind = ConnectError::Bind {
            addr: Some(addr),
            source: Arc::new(io::Error::from_raw_os_error(libc::EADDRINUSE)),
        };
        assert!(bind.to_string().contains("bound to 127.0.0.1:1"), "{bind}");
    }

    #[test]
    fn connect_and_stop_follow_the_states() {
        let mut m = Machine::new();
        assert_eq!(m.state(), ConnectorState::Disconnected);
        let e = m.stop_connecting().unwrap_err();
        assert_eq!(e.state(), ConnectorState::Disconnected);
        assert!(
            e.to_string()
                .contains("stop connecting while the connector is disconnected")
        );
        let a1 = m.connect().unwrap();
        assert!(m.is_connecting(a1));
        assert!(m.connect().unwrap_err().to_string().contains("stop_connecting"));
        assert!(m.connected(a1));
        assert_eq!(m.state(), ConnectorState::Connected);
        assert!(m.connect().unwrap_err().to_string().contains("disconnect"));
        assert!(m.stop_connecting().is_err());
        m.ended(a1);
        assert_eq!(m.state(), ConnectorState::Disconnected);
    }

    #[test]
    fn a_cancelled_attempt_cannot_connect_or_end_a_newer_one() {
        let mut m = Machine::new();
        let a1 = m.connect().unwrap();
        assert_eq!(m.stop_connecting().unwrap(), a1);
        assert!(!m.is_connecting(a1));
        let a2 = m.connect().unwrap();
        assert_ne!(a1, a2);
        // The cancelled attempt's late outcomes change nothing.
        assert!(!m.connected(a1));
        m.ended(a1);
        assert!(m.is_connecting(a2));
        assert!(m.connected(a2));
    }

    #[test]
    fn retries_and_factory_start_stop() {
        let mut m = Machine::new();
        assert!(m.start_factory());
        let a = m.connect().unwrap();
        assert!(!m.start_factory(), "started once");
        m.ended(a);
        assert_eq!(m.after_end(false), AfterEnd::GiveUp);
        assert_eq!(m.after_end(true), AfterEnd::Retry);
        let r = m.schedule_retry();
        assert!(m.retry_pending(r));
        assert_eq!(m.after_end(true), AfterEnd::Idle, "one retry at a time");
        assert!(!m.stop_factory(), "a retry is pending");
        let a2 = m.retry_now(r).unwrap();
        assert!(m.retry_now(r).is_none(), "a retry fires once");
        assert!(m.is_connecting(a2));
        assert_eq!(m.after_end(true), AfterEnd::Idle, "connecting again");
        m.ended(a2);
        let r2 = m.schedule_retry();
        m.stop_trying();
        assert!(!m.retry_pending(r2));
        assert_eq!(m.after_end(true), AfterEnd::GiveUp);
        assert!(m.stop_factory());
        assert!(!m.stop_factory(), "stopped once");
        m.resume_trying();
        assert_eq!(m.after_end(true), AfterEnd::Retry);
    }

    #[test]
    fn connect_cancels_a_pending_retry() {
        let mut m = Machine::new();
        let r = m.schedule_retry();
        let a = m.connect().unwrap();
        assert!(!m.retry_pending(r));
        assert!(m.retry_now(r).is_none());
        assert!(m.is_connecting(a));
    }
}
