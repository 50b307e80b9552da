//! The few fields of an X.509 certificate that weft reports about its own certificates (the
//! subject and the validity period), read from the DER without a certificate library: rustls
//! does not parse the server's certificate, and webpki keeps these fields private. I/O-free;
//! anything unexpected gives `None`, never a panic.

use rustls::pki_types::PrivateKeyDer;

use crate::proto::civil::days_from_civil;

/// What weft logs and exports about a loaded certificate: its subject and validity period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertDates {
    /// The subject's common attributes, `CN=localhost, O=Example`; empty if it has none.
    pub(crate) subject: String,
    /// notBefore, in Unix seconds.
    pub(crate) not_before: i64,
    /// notAfter, in Unix seconds.
    pub(crate) not_after: i64,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT`: the version of a TBSCertificate.
const VERSION: u8 = 0xa0;

/// Short names of the subject attributes shown (OIDs 2.5.4.x, by their last arc).
const ATTRIBUTES: [(u8, &str); 6] = [(3, "CN"), (10, "O"), (11, "OU"), (6, "C"), (8, "ST"), (7, "L")];

/// The subject and validity of the certificate `der`.
pub(crate) fn read(der: &[u8]) -> Option<CertDates> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (validity, rest) = expect(rest, SEQUENCE)?;
    let (not_before, after) = time(validity)?;
    let (not_after, _) = time(after)?;
    let (subject, _) = expect(rest, SEQUENCE)?;
    Some(CertDates {
        subject: name(subject)?,
        not_before,
        not_after,
    })
}

/// One DER element: its tag, its contents, and the input after it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// One DER element of tag `want`: its contents and the input after it.
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = tlv(input)?;
    (tag == want).then_some((contents, rest))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) in
/// Unix seconds, and the input after it.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (tag, text, rest) = tlv(input)?;
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, text) = match (tag, text.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = digits(text.get(..2)?)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        (GENERALIZED_TIME, 14) => (digits(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| digits(text.get(i..i + 2)?);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((secs, rest))
}

fn digits(s: &str) -> Option<i64> {
    if s.bytes().all(|c| c.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// A Name's attributes of the kinds in [`ATTRIBUTES`], in order: `CN=a, O=b`.
fn name(mut rdns: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (mut set, rest) = expect(rdns, SET)?;
        rdns = rest;
        while !set.is_empty() {
            let (pair, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(pair, OID)?;
            let (_, value, _) = tlv(value)?;
            let short = match oid {
                [0x55, 0x04, arc] => ATTRIBUTES.iter().find(|(a, _)| a == arc).map(|(_, n)| *n),
                _ => None,
            };
            if let Some(short) = short {
                parts.push(format!("{short}={}", String::from_utf8_lossy(value)));
            }
        }
    }
    Some(parts.join(", "))
}

/// `INTEGER`.
const INTEGER: u8 = 0x02;
/// `OCTET STRING`.
const OCTET_STRING: u8 = 0x04;
/// rsaEncryption, 1.2.840.113549.1.1.1, as the contents of its OID.
const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The modulus length in bits of an RSA private key (PKCS#1, or PKCS#8 wrapping one); `None`
/// for other keys or what cannot be read.
pub(crate) fn rsa_key_bits(key: &PrivateKeyDer<'_>) -> Option<usize> {
    match key {
        PrivateKeyDer::Pkcs1(k) => pkcs1_bits(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => {
            // PrivateKeyInfo: version, AlgorithmIdentifier, OCTET STRING (the PKCS#1 key).
            let (info, _) = expect(k.secret_pkcs8_der(), SEQUENCE)?;
            let (_, rest) = expect(info, INTEGER)?;
            let (algorithm, rest) = expect(rest, SEQUENCE)?;
            let (oid, _) = expect(algorithm, OID)?;
            if oid != RSA_ENCRYPTION {
                return None;
            }
            let (inner, _) = expect(rest, OCTET_STRING)?;
            pkcs1_bits(inner)
        }
        _ => None,
    }
}

/// RSAPrivateKey: version, modulus, ...: the modulus's length in bits.
fn pkcs1_bits(der: &[u8]) -> Option<usize> {
    let (key, _) = expect(der, SEQUENCE)?;
    let (_, rest) = expect(key, INTEGER)?;
    let (modulus, _) = expect(rest, INTEGER)?;
    let start = modulus.iter().position(|b| *b != 0)?;
    let top = modulus.get(start)?;
    Some((modulus.len() - start - 1) * 8 + (8 - top.leading_zeros() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element of `tag` around `contents` (lengths up to 65535).
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    #[test]
    fn rsa_key_length_from_pkcs1_and_pkcs8() {
        // A 1024-bit modulus (a sign byte, then 128 bytes, the first 0x80), then what follows.
        let mut modulus = vec![0x00, 0x80];
        modulus.extend([0x11; 127]);
        let pkcs1 = der(
            SEQUENCE,
            &[
                der(INTEGER, &[0]),
                der(INTEGER, &modulus),
                der(INTEGER, &[1, 0, 1]),
            ]
            .concat(),
        );
        let key = PrivateKeyDer::Pkcs1(pkcs1.clone().into());
        assert_eq!(rsa_key_bits(&key), Some(1024));
        let algorithm = der(SEQUENCE, &[der(OID, &RSA_ENCRYPTION), vec![0x05, 0x00]].concat());
        let pkcs8 = der(
            SEQUENCE,
            &[der(INTEGER, &[0]), algorithm, der(OCTET_STRING, &pkcs1)].concat(),
        );
        assert_eq!(rsa_key_bits(&PrivateKeyDer::Pkcs8(pkcs8.into())), Some(1024));
        let ec = rcgen::KeyPair::generate().unwrap();
        let ec = PrivateKeyDer::Pkcs8(ec.serialize_der().into());
        assert_eq!(rsa_key_bits(&ec), None, "not RSA");
    }

    #[test]
    fn reads_subject_and_validity_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        // UTCTime for years before 2050, GeneralizedTime from 2050 on.
        params.not_before = rcgen::date_time_ymd(2024, 2, 29);
        params.not_after = rcgen::date_time_ymd(2051, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let dates = read(cert.der()).unwrap();
        assert_eq!(dates.subject, "CN=localhost, O=Example");
        assert_eq!(
            crate::proto::civil::rfc3339(dates.not_before),
            "2024-02-29T00:00:00Z"
        );
        assert_eq!(
            crate::proto::civil::rfc3339(dates.not_after),
            "2051-01-01T00:00:00Z"
        );
    }

    #[test]
    fn garbage_and_truncation_give_none() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        for cut in 0..der.len() {
            assert!(read(&der[..cut]).is_none(), "cut at {cut}");
        }
        assert!(read(b"").is_none());
        assert!(read(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(read(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(read(b"\x30\x03\x30\x01\x00").is_none());
        // A non-ASCII time is refused, not sliced mid-character.
        assert!(time(b"\x17\x0d\xc3\xa90101000000Z").is_none());
    }
}
