//! Address ranges in CIDR notation, for the list of trusted balancers.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a string is not a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason} (expected e.g. 10.0.0.0/8, 127.0.0.1 or ::1/128)")]
pub struct CidrError {
    input: String,
    reason: &'static str,
}

/// An IPv4 or IPv6 range: an address and a prefix length. A bare address is the range of
/// that address alone. Host bits below the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
///
/// ```
/// use weft::proxy::Cidr;
/// let lan: Cidr = "192.168.0.0/16".parse().unwrap();
/// assert!(lan.contains("192.168.7.9".parse().unwrap()));
/// assert!(!lan.contains("10.0.0.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses a comma-separated list (`10.0.0.0/8,::1`); empty items are skipped.
    ///
    /// # Errors
    ///
    /// The first item that is not a CIDR range.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, CidrError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect()
    }

    /// True if `ip` lies in the range. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
    /// matched as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(net.to_bits().into(), ip.to_bits().into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked(net.to_bits(), ip.to_bits(), 128, self.prefix),
            _ => false,
        }
    }
}

/// True if `a` and `b`, both `width` bits wide, agree on their first `prefix` bits.
fn masked(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    let shift = u32::from(width - prefix.min(width));
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| CidrError {
            input: s.to_owned(),
            reason,
        };
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| bad("not a numeric IPv4 or IPv6 address"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => {
                let canonical = p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'));
                match p.parse::<u8>() {
                    Ok(p) if canonical && p <= width => p,
                    _ => return Err(bad("the prefix length is not a number within the address width")),
                }
            }
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let all4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all4.contains(ip("203.0.113.9")));
        assert!(all4.contains(ip("::ffff:203.0.113.9")));
        assert!(!all4.contains(ip("2001:db8::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("::1")));
        assert_eq!(v6.to_string(), "2001:db8::/32");
    }

    #[test]
    fn lists_and_errors() {
        let l = Cidr::parse_list(" 127.0.0.0/8, ::1 ,").unwrap();
        assert_eq!(l.len(), 2);
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "1.2.3.4/a",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let e = Cidr::parse_list("127.0.0.1,nope").unwrap_err().to_string();
        assert!(e.contains("\"nope\""), "{e}");
    }
}
