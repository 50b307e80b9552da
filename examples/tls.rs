//! TLS on both sides: an echo listener with a certificate (made here by a throwaway test CA,
//! as a deployment would load its own PEM files), and weft's client connecting to it with
//! `ConnectOptions::tls`, checking the certificate against that CA and agreeing on ALPN. The
//! echo protocol and the client's protocol are the plain ones: they see plaintext only.
//!
//! ```sh
//! cargo run --release --example tls
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use weft::protocols::Echo;
use weft::tls::{ClientTls, Roots, TlsConfig};
use weft::{
    Address, ClientFactory, CloseReason, ConnectError, ConnectOptions, Connector, Cores, Engine,
    EngineConfig, Factory, ListenerConfig, Protocol, Transport, connect_tcp,
};

/// Writes a test CA and a `localhost` certificate signed by it into `dir`; returns the paths
/// of the CA, the certificate and its key.
fn make_certificates(dir: &std::path::Path) -> Result<(String, String, String), Box<dyn std::error::Error>> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "example CA");
    let ca = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &ca, &ca_key)?;
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), ca.pem())?;
    std::fs::write(path("cert.pem"), leaf.pem())?;
    std::fs::write(path("key.pem"), key.serialize_pem())?;
    Ok((path("ca.pem"), path("cert.pem"), path("key.pem")))
}

/// Sends a line, keeps the echo, closes (with close_notify) once the line is back.
struct Hello {
    out: Rc<RefCell<String>>,
}

impl Protocol for Hello {
    fn connection_made(&mut self, t: &Transport) {
        let alpn = t
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        self.out.borrow_mut().push_str(&format!("ALPN {alpn:?}; "));
        t.write(b"hello over TLS\n");
    }

    fn data_received(&mut self, data: &[u8], t: &Transport) {
        self.out.borrow_mut().push_str(&String::from_utf8_lossy(data));
        if data.ends_with(b"\n") {
            t.lose_connection();
        }
    }
}

/// Builds `Hello`s; prints how the connection went.
struct Client {
    out: Rc<RefCell<String>>,
}

impl Factory for Client {
    type Protocol = Hello;
    fn build_protocol(&mut self, _peer: &Address) -> Option<Hello> {
        Some(Hello {
            out: self.out.clone(),
        })
    }
}

impl ClientFactory for Client {
    fn client_connection_failed(&mut self, _c: &Connector, reason: &ConnectError) {
        println!("connect failed: {reason}");
    }
    fn client_connection_lost(&mut self, _c: &Connector, reason: &CloseReason) {
        println!("{} ({reason})", self.out.borrow().trim_end());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let dir = std::env::temp_dir().join(format!("weft-tls-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (ca, cert, key) = make_certificates(&dir)?;

    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    let tls = TlsConfig::from_pem_files(&cert, &key)?.with_alpn(&["http/1.1"]);
    let listener = ListenerConfig::new("127.0.0.1:0".parse()?).tls(tls);
    let server = Engine::builder(config.clone())
        .listen(listener, |_shard| Echo::factory())
        .start()?;
    let addr = server.local_addrs()[0];

    let client_tls = ClientTls::new(Roots::CaFile(ca.into()), &["http/1.1"])?.with_server_name("localhost");
    let client = Engine::builder(config)
        .on_each_shard(move |_shard| {
            let options = ConnectOptions::default()
                .with_timeout(Duration::from_secs(5))
                .with_tls(Some(client_tls.clone()));
            async move {
                let connector = connect_tcp(addr, Client { out: Rc::default() }, options);
                let _ = connector.connected().await;
                let _ = connector.closed().await;
            }
        })
        .start()?;
    client.join()?;
    server.shutdown();
    let report = server.join()?;
    println!(
        "server: {} full TLS handshake(s), {} resumed, {} connection(s) served",
        report.total().tls_handshakes_for("ok"),
        report.total().tls_handshakes_for("resumed"),
        report.total().accepted
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
