//! Response framing for raw TCP load: a response is a fixed number of bytes, the very bytes
//! of the request (an echo), or everything up to and including a delimiter. I/O-free; state
//! carries across reads, so a delimiter split between two reads still matches.

/// How a raw response ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Every response is exactly this many bytes (at least 1).
    Length(usize),
    /// A response ends with this byte string (not empty).
    Delimiter(Vec<u8>),
    /// Every response is these bytes (not empty), the request echoed: any other bytes are
    /// an error, compared as they arrive.
    Echo(Vec<u8>),
}

/// An echo that is not the request sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the echo differs from the request sent, from byte {at} of its {len} (the server answers \
     something else than an echo of each request)"
)]
pub struct EchoMismatch {
    /// The first byte that differs, counted from 0 in its response.
    pub at: usize,
    /// The request's length.
    pub len: usize,
}

/// Counts complete responses in a byte stream.
#[derive(Debug, Clone)]
pub struct Matcher {
    framing: Framing,
    /// Length: bytes of the current response seen. Delimiter: bytes of the delimiter
    /// matched so far.
    progress: usize,
    /// Delimiter: bytes of a response seen after the last complete one.
    pending: bool,
    /// The delimiter's failure function (Knuth–Morris–Pratt).
    fallback: Vec<usize>,
}

impl Matcher {
    /// A matcher for `framing`; a zero length or an empty delimiter is taken as 1 byte.
    pub fn new(framing: Framing) -> Self {
        let framing = match framing {
            Framing::Length(0) => Framing::Length(1),
            Framing::Delimiter(d) | Framing::Echo(d) if d.is_empty() => Framing::Length(1),
            f => f,
        };
        let fallback = match &framing {
            Framing::Delimiter(d) => failure_function(d),
            Framing::Length(_) | Framing::Echo(_) => Vec::new(),
        };
        Self {
            framing,
            progress: 0,
            pending: false,
            fallback,
        }
    }

    /// Forgets a partial response (for a new connection).
    pub fn reset(&mut self) {
        self.progress = 0;
        self.pending = false;
    }

    /// True when part of a response has been seen.
    pub fn in_response(&self) -> bool {
        self.progress > 0 || self.pending
    }

    /// Reads `data`; returns how many responses it completes.
    ///
    /// # Errors
    ///
    /// An echo that differs from the request.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, EchoMismatch> {
        Ok(match &self.framing {
            Framing::Length(n) => {
                let total = self.progress + data.len();
                self.progress = total % n;
                total / n
            }
            Framing::Echo(expected) => {
                let mut done = 0;
                let mut rest = data;
                while !rest.is_empty() {
                    let want = &expected[self.progress..];
                    let n = want.len().min(rest.len());
                    if rest[..n] != want[..n] {
                        let off = rest.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                        return Err(EchoMismatch {
                            at: self.progress + off,
                            len: expected.len(),
                        });
                    }
                    rest = &rest[n..];
                    self.progress += n;
                    if self.progress == expected.len() {
                        self.progress = 0;
                        done += 1;
                    }
                }
                done
            }
            Framing::Delimiter(d) => {
                let mut done = 0;
                let mut k = self.progress;
                let mut last_end = None;
                for (i, &b) in data.iter().enumerate() {
                    while k > 0 && d[k] != b {
                        k = self.fallback[k - 1];
                    }
                    if d[k] == b {
                        k += 1;
                    }
                    if k == d.len() {
                        done += 1;
                        last_end = Some(i);
                        // Responses do not overlap: the next one starts afresh.
                        k = 0;
                    }
                }
                self.progress = k;
                self.pending = match last_end {
                    Some(i) => i + 1 < data.len(),
                    None => self.pending || !data.is_empty(),
                };
                done
            }
        })
    }
}

/// `f[i]`: length of the longest proper prefix of `d[..=i]` that is also its suffix.
fn failure_function(d: &[u8]) -> Vec<usize> {
    let mut f = vec![0; d.len()];
    let mut k = 0;
    for i in 1..d.len() {
        while k > 0 && d[i] != d[k] {
            k = f[k - 1];
        }
        if d[i] == d[k] {
            k += 1;
        }
        f[i] = k;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_split(framing: Framing, input: &[u8], step: usize) -> usize {
        let mut m = Matcher::new(framing);
        input.chunks(step).map(|c| m.feed(c).unwrap()).sum()
    }

    #[test]
    fn fixed_length() {
        let mut m = Matcher::new(Framing::Length(4));
        assert_eq!(m.feed(b"abc").unwrap(), 0);
        assert!(m.in_response());
        assert_eq!(m.feed(b"defghij").unwrap(), 2);
        assert_eq!(m.feed(b"kl").unwrap(), 1);
        assert!(!m.in_response());
        m.feed(b"x").unwrap();
        m.reset();
        assert!(!m.in_response());
        assert_eq!(Matcher::new(Framing::Length(0)).feed(b"abc").unwrap(), 3);
    }

    #[test]
    fn delimiter_across_reads() {
        let input = b"+OK\r\n-ERR x\r\r\n+PONG\r\n";
        for step in 1..input.len() {
            assert_eq!(
                count_split(Framing::Delimiter(b"\r\n".to_vec()), input, step),
                3,
                "step {step}"
            );
        }
        let mut m = Matcher::new(Framing::Delimiter(b"\n".to_vec()));
        m.feed(b"+OK").unwrap();
        assert!(m.in_response());
        assert_eq!(m.feed(b"\n").unwrap(), 1);
        assert!(!m.in_response());
    }

    #[test]
    fn self_overlapping_delimiter() {
        // "aab" inside "aaab": a naive restart after the mismatch would miss it.
        for step in 1..6 {
            assert_eq!(
                count_split(Framing::Delimiter(b"aab".to_vec()), b"aaabxaab", step),
                2
            );
        }
        assert_eq!(failure_function(b"abab"), [0, 0, 1, 2]);
        assert_eq!(count_split(Framing::Delimiter(Vec::new()), b"xy", 1), 2);
    }

    #[test]
    fn an_echo_must_be_the_request() {
        for step in 1..8 {
            assert_eq!(count_split(Framing::Echo(b"abc".to_vec()), b"abcabcabc", step), 3);
        }
        let mut m = Matcher::new(Framing::Echo(b"abcd".to_vec()));
        assert_eq!(m.feed(b"abcdab"), Ok(1));
        assert_eq!(m.feed(b"cX"), Err(EchoMismatch { at: 3, len: 4 }));
        m.reset();
        assert_eq!(
            m.feed(b"XXXX"),
            Err(EchoMismatch { at: 0, len: 4 }),
            "right length, wrong bytes"
        );
        m.reset();
        let page = b"HTTP/1.1 400 Bad Request";
        assert!(m.feed(page).is_err());
    }
}
