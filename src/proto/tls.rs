//! A connection's TLS session, free of I/O: the driver feeds it the ciphertext it reads and
//! sends the ciphertext it makes; the protocol above sees only plaintext. Also the values
//! that describe TLS to the rest of the crate: a client's settings ([`ClientTls`]) and how a
//! handshake ended ([`HandshakeResult`]).

use std::io::{self, BufRead};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::proto::outbuf::OutBuf;

/// Plaintext encrypted per step of a flush: a few records, so that the ciphertext waiting
/// for the socket stays small.
const ENCRYPT_STEP: usize = 64 * 1024;

/// How a TLS handshake ended: its label is the `result` of
/// `weft_tls_handshakes_total{result}` and an index into
/// [`StatsSnapshot::tls_handshakes`](crate::StatsSnapshot::tls_handshakes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeResult {
    /// A full handshake succeeded: the server's certificate and signature were sent and a new
    /// session's keys agreed.
    Ok,
    /// A handshake succeeded by resuming an earlier session (a TLS 1.3 ticket or a TLS 1.2
    /// session ID): no certificate and no signature, only a key exchange.
    Resumed,
    /// The peer did not finish within the handshake deadline (a client that stopped
    /// mid-handshake).
    Timeout,
    /// The peer closed the connection before the handshake ended (a truncated
    /// ClientHello).
    Eof,
    /// The socket failed.
    Io,
    /// The peer sent something that is not TLS, or malformed TLS (garbage bytes, plaintext
    /// HTTP sent to a TLS port).
    Invalid,
    /// The peer speaks TLS, but no version, cipher suite or ALPN protocol is common.
    Incompatible,
    /// A certificate was refused (the client's check of the server's).
    Certificate,
    /// The peer sent a fatal alert.
    Alert,
    /// Any other failure.
    Other,
    /// A client asked to renegotiate a TLS 1.2 session: refused (rustls answers
    /// `no_renegotiation`), and the connection closed.
    Renegotiation,
}

/// The label of every [`HandshakeResult`], in index order.
pub const HANDSHAKE_LABELS: [&str; 11] = [
    "ok",
    "resumed",
    "timeout",
    "eof",
    "io_error",
    "invalid",
    "incompatible",
    "certificate",
    "alert",
    "other",
    "renegotiation_refused",
];

impl HandshakeResult {
    /// The result's place in [`HANDSHAKE_LABELS`]. The match names every variant, so a new
    /// result does not compile until it has a label.
    pub fn index(self) -> usize {
        match self {
            Self::Ok => 0,
            Self::Resumed => 1,
            Self::Timeout => 2,
            Self::Eof => 3,
            Self::Io => 4,
            Self::Invalid => 5,
            Self::Incompatible => 6,
            Self::Certificate => 7,
            Self::Alert => 8,
            Self::Other => 9,
            Self::Renegotiation => 10,
        }
    }

    /// A short stable label (one of [`HANDSHAKE_LABELS`]).
    pub fn label(self) -> &'static str {
        HANDSHAKE_LABELS[self.index()]
    }

    /// Classifies a rustls error.
    pub(crate) fn from_tls(e: &rustls::Error) -> Self {
        use rustls::Error as E;
        match e {
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::PeerMisbehaved(_)
            | E::DecryptError => Self::Invalid,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => Self::Incompatible,
            E::InvalidCertificate(_) | E::NoCertificatesPresented => Self::Certificate,
            E::AlertReceived(_) => Self::Alert,
            _ => Self::Other,
        }
    }
}

/// A client connection's TLS: the rustls configuration (trust roots, ALPN) and the server
/// name to send and check. Made with [`ClientTls::new`] (in [`crate::tls`]) and given to
/// [`ConnectOptions::tls`](crate::ConnectOptions::tls).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Client TLS with a rustls configuration of the caller's own.
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            config,
            server_name: None,
        }
    }

    /// Sends and checks `name` instead of the destination's host (connecting to a numeric
    /// address for a named certificate, say).
    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Offers no earlier session to resume, so that every connection makes a full handshake
    /// (certificate, signature, key exchange): for measuring full handshakes. A client that
    /// reconnects to the same servers is better off resuming (the default), which spares
    /// both sides the certificate and the signature.
    #[must_use]
    pub fn without_resumption(mut self) -> Self {
        let mut config = Arc::unwrap_or_clone(self.config);
        config.resumption = rustls::client::Resumption::disabled();
        self.config = Arc::new(config);
        self
    }

    /// A client session for a connection to `host` (unless a server name was set).
    pub(crate) fn session(&self, host: &str) -> Result<TlsSession, rustls::Error> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| rustls::Error::General(format!("{name:?} is not a valid server name")))?;
        let conn = rustls::ClientConnection::new(self.config.clone(), name)?;
        Ok(TlsSession::new(conn.into()))
    }
}

/// Why a session cannot go on.
#[derive(Debug)]
pub(crate) enum TlsFault {
    /// rustls failed (a malformed or unexpected record, a fatal alert from the peer...).
    Tls(rustls::Error),
    /// The peer tried to renegotiate (refused).
    Renegotiation,
}

impl TlsFault {
    /// How a handshake that ends with this fault is counted.
    pub(crate) fn result(&self) -> HandshakeResult {
        match self {
            Self::Tls(e) => HandshakeResult::from_tls(e),
            Self::Renegotiation => HandshakeResult::Renegotiation,
        }
    }
}

impl std::fmt::Display for TlsFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls(e) => e.fmt(f),
            Self::Renegotiation => f.write_str("the peer asked to renegotiate (refused)"),
        }
    }
}

/// One connection's TLS state: the rustls session, and the ciphertext it made that the
/// socket has not taken yet.
pub(crate) struct TlsSession {
    conn: rustls::Connection,
    /// Ciphertext waiting for the socket.
    cipher: OutBuf,
    /// Our `close_notify` is queued.
    close_sent: bool,
    /// The peer's `close_notify` was read: the next read is the EOF.
    peer_closed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("cipher", &self.cipher.len())
            .finish_non_exhaustive()
    }
}

/// A source that never has anything to read yet.
struct Nothing;

impl io::Read for Nothing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Appends what rustls writes to the ciphertext queue.
struct Sink<'a>(&'a mut OutBuf);

impl io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsSession {
    fn new(conn: rustls::Connection) -> Self {
        let mut s = Self {
            conn,
            cipher: OutBuf::default(),
            close_sent: false,
            peer_closed: false,
        };
        // A client's ClientHello is ready at once.
        s.collect();
        s
    }

    /// A server session with `config`.
    pub(crate) fn server(config: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self::new(rustls::ServerConnection::new(config)?.into()))
    }

    /// True until the handshake is complete.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True once the peer's `close_notify` was read.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// How a finished handshake succeeded: [`HandshakeResult::Resumed`] when it resumed an
    /// earlier session, otherwise [`HandshakeResult::Ok`].
    pub(crate) fn success(&self) -> HandshakeResult {
        match self.conn.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => HandshakeResult::Resumed,
            _ => HandshakeResult::Ok,
        }
    }

    /// The ALPN protocol agreed on, if any.
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Takes `input`, ciphertext from the socket, and hands every plaintext byte it holds to
    /// `deliver`, in order. On an error, the alert rustls queued for the peer is in the
    /// ciphertext queue.
    pub(crate) fn receive(
        &mut self,
        mut input: &[u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<(), TlsFault> {
        while !input.is_empty() && !self.peer_closed {
            let taken = match self.conn.read_tls(&mut input) {
                Ok(n) => n,
                // The plaintext queue is full: it is drained below, after every read.
                Err(e) => return Err(TlsFault::Tls(rustls::Error::General(e.to_string()))),
            };
            let established = !self.conn.is_handshaking();
            let before = self.cipher.len();
            let state = self.conn.process_new_packets();
            self.collect();
            let state = state.map_err(TlsFault::Tls)?;
            // After a TLS 1.2 handshake, the only thing rustls answers by itself is its
            // `no_renegotiation` warning to a client's new ClientHello.
            if established
                && self.cipher.len() > before
                && self.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2)
            {
                return Err(TlsFault::Renegotiation);
            }
            self.drain(deliver);
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
            if taken == 0 {
                break;
            }
        }
        self.shrink();
        Ok(())
    }

    /// Lets rustls shrink its input buffer to one read's size (4 KiB) when it holds no
    /// partial record, so that an idle connection does not keep the buffer of its largest
    /// record: a read that finds nothing ("would block") makes it resize first.
    fn shrink(&mut self) {
        let _ = self.conn.read_tls(&mut Nothing);
    }

    /// Hands the plaintext rustls holds to `deliver`.
    fn drain(&mut self, deliver: &mut dyn FnMut(&[u8])) {
        let mut reader = self.conn.reader();
        loop {
            let n = match reader.fill_buf() {
                Ok([]) | Err(_) => return,
                Ok(chunk) => {
                    deliver(chunk);
                    chunk.len()
                }
            };
            reader.consume(n);
        }
    }

    /// Encrypts a prefix of `plain` (up to a few records); returns how many bytes it took.
    pub(crate) fn send(&mut self, plain: &[u8]) -> usize {
        let step = &plain[..plain.len().min(ENCRYPT_STEP)];
        let n = io::Write::write(&mut self.conn.writer(), step).unwrap_or(0);
        self.collect();
        n
    }

    /// True once our `close_notify` is queued.
    pub(crate) fn closed(&self) -> bool {
        self.close_sent
    }

    /// Queues our `close_notify`; true the first time.
    pub(crate) fn close(&mut self) -> bool {
        if self.close_sent {
            return false;
        }
        self.close_sent = true;
        self.conn.send_close_notify();
        self.collect();
        true
    }

    /// The ciphertext waiting for the socket.
    pub(crate) fn cipher(&mut self) -> &mut OutBuf {
        &mut self.cipher
    }

    /// Moves what rustls has to send into the ciphertext queue.
    fn collect(&mut self) {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut Sink(&mut self.cipher)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server configuration with a self-signed certificate for `localhost`, and a client
    /// that trusts it.
    fn configs(alpn_server: &[&str], alpn_client: &[&str]) -> (Arc<rustls::ServerConfig>, ClientTls) {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = key.cert.der().clone();
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], der)
            .unwrap();
        server.alpn_protocols = alpn_server.iter().map(|p| p.as_bytes().to_vec()).collect();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = alpn_client.iter().map(|p| p.as_bytes().to_vec()).collect();
        (Arc::new(server), ClientTls::from_config(Arc::new(client)))
    }

    /// A server and a client session over an in-memory pipe (see [`configs`]).
    fn pair(alpn_server: &[&str], alpn_client: &[&str]) -> (TlsSession, TlsSession) {
        let (server, client) = configs(alpn_server, alpn_client);
        let s = TlsSession::server(server).unwrap();
        (s, client.session("localhost").unwrap())
    }

    /// Runs a handshake between a new server session on `server` and a new client session of
    /// `client`, then passes the server's session ticket; returns how the server saw it.
    fn handshake(server: &Arc<rustls::ServerConfig>, client: &ClientTls) -> HandshakeResult {
        let mut s = TlsSession::server(server.clone()).unwrap();
        let mut c = client.session("localhost").unwrap();
        while s.is_handshaking() || c.is_handshaking() {
            pass(&mut c, &mut s).unwrap();
            pass(&mut s, &mut c).unwrap();
        }
        pass(&mut s, &mut c).unwrap();
        s.success()
    }

    /// Moves `from`'s ciphertext into `to`; returns the plaintext `to` got.
    fn pass(from: &mut TlsSession, to: &mut TlsSession) -> Result<Vec<u8>, TlsFault> {
        let bytes = from.cipher().chunk().to_vec();
        from.cipher().consume(bytes.len());
        let mut got = Vec::new();
        to.receive(&bytes, &mut |p| got.extend_from_slice(p))?;
        Ok(got)
    }

    #[test]
    fn handshake_data_and_close_notify() {
        let (mut s, mut c) = pair(&["h2", "http/1.1"], &["http/1.1"]);
        while s.is_handshaking() || c.is_handshaking() {
            pass(&mut c, &mut s).unwrap();
            pass(&mut s, &mut c).unwrap();
        }
        assert_eq!(s.alpn(), Some(&b"http/1.1"[..]));
        let big = vec![7u8; 200_000];
        let mut taken = 0;
        while taken < big.len() {
            taken += c.send(&big[taken..]);
        }
        assert_eq!(pass(&mut c, &mut s).unwrap(), big);
        assert_eq!(s.cipher().len(), 0, "nothing to answer");
        assert!(c.close());
        assert!(!c.close(), "once");
        pass(&mut c, &mut s).unwrap();
        assert!(s.peer_closed());
    }

    #[test]
    fn garbage_and_plain_http_are_invalid() {
        for input in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0xff; 64][..]] {
            let (mut s, _) = pair(&[], &[]);
            let e = s.receive(input, &mut |_| {}).unwrap_err();
            assert_eq!(e.result(), HandshakeResult::Invalid, "{e}");
            assert!(!s.cipher().is_empty(), "an alert is queued");
        }
    }

    #[test]
    fn no_common_alpn_is_incompatible() {
        let (mut s, mut c) = pair(&["h2"], &["http/1.1"]);
        let e = pass(&mut c, &mut s).unwrap_err();
        assert_eq!(e.result(), HandshakeResult::Incompatible, "{e}");
    }

    #[test]
    fn a_second_handshake_resumes_unless_the_client_opts_out() {
        let (server, client) = configs(&[], &[]);
        assert_eq!(handshake(&server, &client), HandshakeResult::Ok);
        assert_eq!(handshake(&server, &client), HandshakeResult::Resumed);
        let full = client.without_resumption();
        for _ in 0..2 {
            assert_eq!(handshake(&server, &full), HandshakeResult::Ok);
        }
    }

    #[test]
    fn labels_follow_indices() {
        for r in [
            HandshakeResult::Ok,
            HandshakeResult::Resumed,
            HandshakeResult::Timeout,
            HandshakeResult::Other,
        ] {
            assert_eq!(HANDSHAKE_LABELS[r.index()], r.label());
        }
    }
}
