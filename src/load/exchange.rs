//! One load connection's request/response bookkeeping, without I/O: which requests may go
//! out now (the window of in-flight requests and the pacing), and which of them each chunk
//! of response bytes completes.

use std::collections::VecDeque;
use std::time::Instant;

use super::matcher::{EchoMismatch, Matcher};
use super::recorder::Verdict;
use super::replies::{ReplyFault, ReplyReader};
use super::response::{Response, ResponseError, ResponseReader};
use super::schedule::{Backlog, Pacing, Sent};

/// How responses are recognised.
#[derive(Debug)]
pub enum Reader {
    /// HTTP/1.1 responses.
    Http(ResponseReader),
    /// Raw bytes framed by length or delimiter.
    Raw(Matcher),
    /// RESP2 (Redis) replies.
    Resp(ReplyReader),
}

/// Why a connection's response stream is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The bytes are not a valid response.
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// The bytes are not RESP replies, or they repeat the request.
    #[error(transparent)]
    Reply(#[from] ReplyFault),
    /// An echo that is not the request sent.
    #[error(transparent)]
    Echo(#[from] EchoMismatch),
    /// A response arrived with no request outstanding.
    #[error("a response arrived with no request outstanding")]
    Unsolicited,
}

/// The requests in flight on one connection and the responses they await.
#[derive(Debug)]
pub struct Exchange {
    window: usize,
    in_flight: VecDeque<Sent>,
    pacing: Pacing,
    reader: Reader,
    /// The server announced it will close: send nothing more on this connection.
    closing: bool,
}

impl Exchange {
    /// An exchange with at most `window` requests in flight (at least 1).
    pub fn new(window: usize, pacing: Pacing, reader: Reader) -> Self {
        let window = window.max(1);
        Self {
            window,
            in_flight: VecDeque::with_capacity(window),
            pacing,
            reader,
            closing: false,
        }
    }

    /// A new connection: requests in flight on the old one are gone, and so is any partial
    /// response. The schedule carries on.
    pub fn reset(&mut self) {
        self.in_flight.clear();
        self.closing = false;
        match &mut self.reader {
            Reader::Http(r) => r.reset(),
            Reader::Raw(m) => m.reset(),
            Reader::Resp(r) => r.reset(),
        }
    }

    /// Claims the requests that may go out at `now` (room in the window and, when paced,
    /// due) and marks them sent; returns how many to write.
    pub fn claim(&mut self, now: Instant) -> usize {
        if self.closing {
            return 0;
        }
        let room = self.window - self.in_flight.len();
        match &mut self.pacing {
            Pacing::Closed => {
                self.in_flight.extend(std::iter::repeat_n(Sent::now(now), room));
                room
            }
            Pacing::Open(schedule) => {
                let mut n = 0;
                while n < room && schedule.due() <= now {
                    let intended = schedule.take();
                    self.in_flight.push_back(Sent { intended, sent: now });
                    n += 1;
                }
                n
            }
        }
    }

    /// When the next paced request is due, if the window has room for it (`None` in a
    /// closed loop, when the window is full, or when the connection is closing).
    pub fn next_due(&self) -> Option<Instant> {
        match &self.pacing {
            Pacing::Open(s) if !self.closing && self.in_flight.len() < self.window => Some(s.due()),
            _ => None,
        }
    }

    /// True when no more requests fit in the window.
    pub fn window_full(&self) -> bool {
        self.in_flight.len() >= self.window
    }

    /// The oldest request still waiting for its response.
    pub fn oldest(&self) -> Option<&Sent> {
        self.in_flight.front()
    }

    /// True when a request or part of a response is outstanding.
    pub fn outstanding(&self) -> bool {
        !self.in_flight.is_empty()
            || match &self.reader {
                Reader::Http(r) => r.in_response(),
                Reader::Raw(m) => m.in_response(),
                Reader::Resp(r) => r.in_reply(),
            }
    }

    /// Sends nothing more on this connection (it closes once the answers are in).
    pub fn stop_sending(&mut self) {
        self.closing = true;
    }

    /// At the end of a run, the requests that have no answer: `each` is called with every
    /// written one, oldest first; those the schedule had due before `end` but never sent
    /// are returned together (they may be billions: a rate no connection could carry).
    /// Forgets them all.
    pub fn unanswered(&mut self, end: Instant, each: impl FnMut(Sent)) -> Option<Backlog> {
        self.abandon(each);
        match &mut self.pacing {
            Pacing::Open(schedule) => Some(schedule.take_until(end)),
            Pacing::Closed => None,
        }
    }

    /// Gives up the requests in flight (their connection is being dropped), oldest first.
    pub fn abandon(&mut self, each: impl FnMut(Sent)) {
        self.in_flight.drain(..).for_each(each);
    }

    /// True once the server has said it will close the connection, or
    /// [`stop_sending`](Self::stop_sending) was called.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Reads response bytes; calls `done(request, verdict)` for each completed response in
    /// order.
    ///
    /// # Errors
    ///
    /// The stream is not valid responses, or has more responses than requests.
    pub fn receive(
        &mut self,
        data: &[u8],
        mut done: impl FnMut(&Sent, Verdict),
    ) -> Result<(), ExchangeError> {
        let in_flight = &mut self.in_flight;
        match &mut self.reader {
            Reader::Http(reader) => {
                let mut unsolicited = false;
                let closing = &mut self.closing;
                reader.feed(data, |resp| match in_flight.pop_front() {
                    Some(sent) => {
                        *closing |= resp.close;
                        done(&sent, verdict(resp));
                    }
                    None => unsolicited = true,
                })?;
                if unsolicited {
                    return Err(ExchangeError::Unsolicited);
                }
            }
            Reader::Raw(matcher) => {
                for _ in 0..matcher.feed(data)? {
                    let sent = in_flight.pop_front().ok_or(ExchangeError::Unsolicited)?;
                    done(&sent, Verdict::Success);
                }
            }
            Reader::Resp(reader) => {
                let mut unsolicited = false;
                reader.feed(data, |error| match in_flight.pop_front() {
                    Some(sent) => done(&sent, error.map_or(Verdict::Success, Verdict::ErrorReply)),
                    None => unsolicited = true,
                })?;
                if unsolicited {
                    return Err(ExchangeError::Unsolicited);
                }
            }
        }
        Ok(())
    }

    /// The peer closed its side: completes a response that runs to the connection's end.
    pub fn finish(&mut self, mut done: impl FnMut(&Sent, Verdict)) {
        if let Reader::Http(reader) = &mut self.reader
            && let Some(resp) = reader.finish()
            && let Some(sent) = self.in_flight.pop_front()
        {
            done(&sent, verdict(resp));
        }
    }
}

/// What an HTTP response's status says.
fn verdict(resp: Response) -> Verdict {
    if resp.is_success() {
        Verdict::Success
    } else {
        Verdict::BadStatus(resp.status)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::matcher::Framing;
    use crate::load::schedule::Schedule;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn closed_loop_fills_and_refills_the_window() {
        let t0 = Instant::now();
        let mut x = Exchange::new(4, Pacing::Closed, Reader::Http(ResponseReader::new()));
        assert_eq!(x.claim(t0), 4);
        assert!(x.window_full());
        assert_eq!(x.claim(t0), 0);
        let mut seen = 0;
        x.receive(&OK.repeat(3), |s, verdict| {
            assert!(verdict == Verdict::Success && s.intended == t0);
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, 3);
        assert_eq!(x.claim(t0 + Duration::from_millis(1)), 3);
        assert!(x.outstanding());
        assert_eq!(x.next_due(), None);
    }

    #[test]
    fn open_loop_sends_when_due_and_catches_up() {
        let t0 = Instant::now();
        let pacing = Pacing::Open(Schedule::new(t0, 1000.0));
        let mut x = Exchange::new(2, pacing, Reader::Raw(Matcher::new(Framing::Length(2))));
        assert_eq!(x.claim(t0), 1);
        assert_eq!(x.next_due(), Some(t0 + Duration::from_millis(1)));
        // A stall: five slots pass, but only one more fits in the window.
        let late = t0 + Duration::from_millis(5);
        assert_eq!(x.claim(late), 1);
        assert_eq!(x.next_due(), None, "window full");
        let mut got = Vec::new();
        x.receive(b"abcd", |s, _| got.push(*s)).unwrap();
        assert_eq!(got[1].intended, t0 + Duration::from_millis(1));
        assert_eq!(got[1].sent, late);
        // The backlog goes out at once, with its intended times kept.
        assert_eq!(x.claim(late), 2);
        assert_eq!(x.oldest().unwrap().intended, t0 + Duration::from_millis(2));
    }

    #[test]
    fn close_stops_sending_and_reset_forgets() {
        let t0 = Instant::now();
        let mut x = Exchange::new(2, Pacing::Closed, Reader::Http(ResponseReader::new()));
        x.claim(t0);
        x.receive(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\nHTTP/1",
            |_, _| (),
        )
        .unwrap();
        assert!(x.closing());
        assert_eq!(x.claim(t0), 0);
        x.reset();
        assert!(!x.outstanding() && !x.closing());
        assert_eq!(x.claim(t0), 2);
    }

    #[test]
    fn errors_and_eof_framing() {
        let t0 = Instant::now();
        let mut x = Exchange::new(1, Pacing::Closed, Reader::Http(ResponseReader::new()));
        assert_eq!(x.receive(OK, |_, _| ()), Err(ExchangeError::Unsolicited));
        x.reset();
        assert!(matches!(
            x.receive(b"nonsense\r\n\r\n", |_, _| ()),
            Err(ExchangeError::Response(_))
        ));
        x.reset();
        x.claim(t0);
        x.receive(b"HTTP/1.1 503 Busy\r\n\r\npartial body", |_, _| {
            panic!("runs to EOF")
        })
        .unwrap();
        let mut got = None;
        x.finish(|_, verdict| got = Some(verdict));
        assert_eq!(got, Some(Verdict::BadStatus(503)));
        let mut raw = Exchange::new(1, Pacing::Closed, Reader::Raw(Matcher::new(Framing::Length(1))));
        assert_eq!(raw.receive(b"x", |_, _| ()), Err(ExchangeError::Unsolicited));
    }

    #[test]
    fn unanswered_requests_are_those_written_then_those_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let pacing = Pacing::Open(Schedule::new(t0, 1000.0));
        let mut x = Exchange::new(2, pacing, Reader::Raw(Matcher::new(Framing::Length(1))));
        assert_eq!(x.claim(t0 + ms(1)), 2);
        let mut got = Vec::new();
        let backlog = x.unanswered(t0 + ms(4), |sent| got.push((sent.intended, sent.sent)));
        let written = t0 + ms(1);
        assert_eq!(got, [(t0, written), (t0 + ms(1), written)]);
        let backlog = backlog.unwrap();
        assert_eq!(
            (backlog.first, backlog.count),
            (t0 + ms(2), 2),
            "due before the end, not at it"
        );
        assert!(!x.outstanding());
        let mut closed = Exchange::new(1, Pacing::Closed, Reader::Raw(Matcher::new(Framing::Length(1))));
        closed.claim(t0);
        let mut n = 0;
        let none = closed.unanswered(t0 + ms(9), |sent| n += usize::from(sent.sent == t0));
        assert_eq!((n, none), (1, None), "a closed loop has only what it wrote");
    }

    #[test]
    fn replies_answer_requests_in_order_and_errors_are_named() {
        let t0 = Instant::now();
        let mut x = Exchange::new(2, Pacing::Closed, Reader::Resp(ReplyReader::new()));
        assert_eq!(x.claim(t0), 2);
        let mut got = Vec::new();
        x.receive(b"+OK\r\n-OOM command not allowed\r\n$1\r\nv", |_, v| got.push(v))
            .unwrap();
        assert_eq!(got, [Verdict::Success, Verdict::ErrorReply("OOM".into())]);
        assert_eq!(x.claim(t0), 2);
        x.receive(b"\r\n", |_, v| got.push(v)).unwrap();
        assert_eq!((got.len(), x.window_full()), (3, false));
        assert!(matches!(
            x.receive(b"+a\r\n:1\r\n", |_, _| ()),
            Err(ExchangeError::Unsolicited)
        ));
        x.reset();
        assert!(matches!(x.receive(b"?", |_, _| ()), Err(ExchangeError::Reply(_))));
    }
}
