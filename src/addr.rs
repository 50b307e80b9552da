//! TCP endpoint addresses as weft prints and parses them.
//!
//! `std::net::SocketAddr` prints an IPv6 scope as a number (`[fe80::1%1]:7000`). Operators
//! think in interface names, so [`Address`] prints `[fe80::1%lo]:7000`, and parses both forms
//! numerically, with no DNS lookup (Twisted's `_resolveIPv6` with `AI_NUMERICHOST`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::str::FromStr;

use crate::sys::ifname;

/// Why a string is not a numeric TCP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason} (expected 127.0.0.1:7000, [::1]:7000 or [fe80::1%lo]:7000)")]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

impl AddressError {
    fn new(input: &str, reason: &'static str) -> Self {
        Self {
            input: input.to_owned(),
            reason,
        }
    }
}

/// A TCP endpoint: an IPv4 or IPv6 address and a port, with the IPv6 flow info and scope id.
///
/// # Examples
///
/// ```
/// use weft::Address;
/// let a: Address = "[::1]:7000".parse().unwrap();
/// assert_eq!(a.to_string(), "[::1]:7000");
/// let b: Address = "127.0.0.1:80".parse().unwrap();
/// assert_eq!(b.port(), 80);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address(SocketAddr);

impl Address {
    /// Wraps a socket address.
    pub fn new(addr: SocketAddr) -> Self {
        Self(addr)
    }

    /// The underlying socket address (scope id included).
    pub fn socket_addr(&self) -> SocketAddr {
        self.0
    }

    /// The IP address, without port or scope.
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }

    /// The port number.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// The IPv6 flow info, or 0 for IPv4.
    pub fn flowinfo(&self) -> u32 {
        match self.0 {
            SocketAddr::V6(v6) => v6.flowinfo(),
            SocketAddr::V4(_) => 0,
        }
    }

    /// The IPv6 scope id (interface index), or 0 for IPv4 and unscoped addresses.
    pub fn scope_id(&self) -> u32 {
        match self.0 {
            SocketAddr::V6(v6) => v6.scope_id(),
            SocketAddr::V4(_) => 0,
        }
    }

    /// Parses a host and port given apart, numerically: `fe80::1%lo` and `7000`.
    ///
    /// # Errors
    ///
    /// A host that is not a numeric IPv4 or IPv6 literal, an unknown scope interface, or a
    /// port that is not a number.
    pub fn from_host_port(host: &str, port: &str) -> Result<Self, AddressError> {
        let full = format!("{host}:{port}");
        let port: u16 = port
            .parse()
            .map_err(|_| AddressError::new(&full, "the port is not a number from 0 to 65535"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
            return Ok(Self(SocketAddr::from((v4, port))));
        }
        let (ip, scope) = parse_scoped_ipv6(host).map_err(|reason| AddressError::new(&full, reason))?;
        Ok(Self(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))))
    }
}

/// Parses `fe80::1`, `fe80::1%lo` or `fe80::1%2` into the address and its scope id.
fn parse_scoped_ipv6(host: &str) -> Result<(Ipv6Addr, u32), &'static str> {
    let (ip, scope) = match host.split_once('%') {
        Some((ip, scope)) => (ip, Some(scope)),
        None => (host, None),
    };
    let ip: Ipv6Addr = ip
        .parse()
        .map_err(|_| "the host is not a numeric IPv4 or IPv6 address (no DNS here)")?;
    let scope = match scope {
        None => 0,
        Some("") => return Err("empty scope after '%'"),
        Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().map_err(|_| "scope id out of range")?,
        Some(name) => ifname::index(name).ok_or("no network interface with that scope name")?,
    };
    Ok((ip, scope))
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = split_host_port(s).map_err(|reason| AddressError::new(s, reason))?;
        Self::from_host_port(host, port)
    }
}

/// Splits `host:port` or `[host]:port` into host (without brackets) and port, checking
/// neither.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        return rest
            .split_once("]:")
            .ok_or("an IPv6 address needs the form [ip]:port");
    }
    let (host, port) = s.rsplit_once(':').ok_or("missing ':port'")?;
    if host.contains(':') {
        return Err("an IPv6 address needs brackets: [ip]:port");
    }
    Ok((host, port))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(v4) => write!(f, "{v4}"),
            SocketAddr::V6(v6) if v6.scope_id() == 0 => write!(f, "[{}]:{}", v6.ip(), v6.port()),
            SocketAddr::V6(v6) => match ifname::name(v6.scope_id()) {
                Some(name) => write!(f, "[{}%{}]:{}", v6.ip(), name, v6.port()),
                None => write!(f, "[{}%{}]:{}", v6.ip(), v6.scope_id(), v6.port()),
            },
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Self(addr)
    }
}

impl From<Address> for SocketAddr {
    fn from(addr: Address) -> Self {
        addr.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trip() {
        let a: Address = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:7000");
        assert_eq!(a.scope_id(), 0);
    }

    #[test]
    fn v6_scope_by_name_and_number() {
        let lo = ifname::index("lo").expect("loopback interface");
        let a: Address = "[fe80::1%lo]:7000".parse().unwrap();
        assert_eq!(a.scope_id(), lo);
        assert_eq!(a.to_string(), "[fe80::1%lo]:7000");
        let b: Address = format!("[fe80::1%{lo}]:7000").parse().unwrap();
        assert_eq!(a, b);
        let c = Address::from_host_port("fe80::1%lo", "7000").unwrap();
        assert_eq!(a, c);
    }

    #[test]
    fn unscoped_v6_and_unknown_scope_number() {
        let a: Address = "[::1]:1".parse().unwrap();
        assert_eq!(a.to_string(), "[::1]:1");
        let b = Address::new(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::LOCALHOST,
            9,
            0,
            999_999,
        )));
        assert_eq!(b.to_string(), "[::1%999999]:9");
    }

    #[test]
    fn rejects_names_and_bad_ports() {
        for bad in [
            "localhost:80",
            "127.0.0.1",
            "127.0.0.1:http",
            "127.0.0.1:70000",
            "::1:80",
            "[::1]80",
            "[fe80::1%nosuchif0]:80",
            "[fe80::1%]:80",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad} should not parse");
        }
        let e = "localhost:80".parse::<Address>().unwrap_err().to_string();
        assert!(e.contains("localhost:80"), "{e}");
    }
}
