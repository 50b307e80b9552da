//! Framing, free of I/O: decoders, encoders, the bounded input buffer and [`Framed`]. The
//! public face is `weft::codec` (in lib.rs), which adds `Answered` from the driver.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use crate::proto::close::CloseReason;
use crate::proto::protocol::Protocol;
use crate::proto::transport::Transport;

/// Bytes received and not decoded yet: what a [`Decoder`] reads frames from.
///
/// Either a buffer of its own or a view of bytes just received ([`InBuf::borrowed`]):
/// [`Framed`] decodes each read in place when nothing of an earlier read is pending, and keeps
/// only what is left of it.
#[derive(Debug, Default, Clone)]
pub struct InBuf<'a> {
    data: Cow<'a, [u8]>,
    /// Bytes at the front already taken as frames.
    start: usize,
}

impl InBuf<'static> {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes what is pending followed by `data`, the bytes of one read: `decode` takes
    /// frames from the front of the buffer it is given, and what it leaves is kept for the
    /// next read. With nothing pending the read is decoded where it lies and only its tail is
    /// copied; an emptied buffer keeps at most `retain` bytes of capacity.
    pub(crate) fn decode_read<R>(
        &mut self,
        data: &[u8],
        retain: usize,
        decode: impl FnOnce(&mut InBuf<'_>) -> R,
    ) -> R {
        if self.is_empty() {
            let mut view = InBuf::borrowed(data);
            let result = decode(&mut view);
            if !view.is_empty() {
                self.extend(view.as_slice());
            }
            result
        } else {
            self.extend(data);
            let result = decode(self);
            self.release_if_empty(retain);
            result
        }
    }
}

impl<'a> InBuf<'a> {
    /// A view of `bytes`, decoded in place: nothing is copied until it is extended.
    pub fn borrowed(bytes: &'a [u8]) -> Self {
        Self {
            data: Cow::Borrowed(bytes),
            start: 0,
        }
    }

    /// The bytes not decoded yet.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// How many bytes are not decoded yet.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// True when every byte has been decoded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the first `n` bytes as decoded (at most all of them).
    pub fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            match &mut self.data {
                Cow::Owned(v) => v.clear(),
                Cow::Borrowed(b) => *b = &[],
            }
            self.start = 0;
        }
    }

    /// Takes the first `n` bytes out (at most all of them).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len());
        let out = self.as_slice()[..n].to_vec();
        self.advance(n);
        out
    }

    /// Appends bytes that arrived; the decoded front is dropped first when that saves a
    /// reallocation. A view becomes a buffer of its own, holding what was not decoded yet.
    pub fn extend(&mut self, bytes: &[u8]) {
        match &mut self.data {
            Cow::Owned(v) => {
                if self.start > 0 && v.len() + bytes.len() > v.capacity() {
                    v.drain(..self.start);
                    self.start = 0;
                }
                v.extend_from_slice(bytes);
            }
            Cow::Borrowed(b) => {
                let rest = &b[self.start..];
                let mut v = Vec::with_capacity(rest.len() + bytes.len());
                v.extend_from_slice(rest);
                v.extend_from_slice(bytes);
                self.data = Cow::Owned(v);
                self.start = 0;
            }
        }
    }

    /// Bytes it can hold without reallocating (0 for a view).
    fn capacity(&self) -> usize {
        match &self.data {
            Cow::Owned(v) => v.capacity(),
            Cow::Borrowed(_) => 0,
        }
    }

    /// Releases the memory of a buffer that holds nothing, unless it is at most `retain`
    /// bytes.
    fn release_if_empty(&mut self, retain: usize) {
        if self.is_empty() && self.capacity() > retain {
            *self = InBuf::default();
        }
    }
}

/// Cuts a byte stream into frames.
pub trait Decoder {
    /// What one frame decodes to.
    type Frame;
    /// Why the stream cannot be decoded (it ends the connection by default).
    type Error: fmt::Display;

    /// Takes one whole frame from the front of `buf` (advancing past it), or answers
    /// `Ok(None)` until more bytes arrive. A decoder bounds what it waits for: a frame it
    /// would refuse is an error as soon as its size is known, before its bytes arrive.
    /// [`Framed`] calls it while `buf` holds bytes, never on an empty one.
    ///
    /// # Errors
    ///
    /// The bytes cannot be a frame.
    fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<Self::Frame>, Self::Error>;

    /// True while the decoder itself holds part of a frame (a body it collects as it
    /// arrives), when the buffer may be empty: the frame is still partly received. Default:
    /// false (a decoder that keeps nothing between calls).
    fn in_frame(&self) -> bool {
        false
    }

    /// The peer's EOF: no more bytes will come after those in `buf` (what is left of the
    /// stream, at most a partial frame, possibly empty). A frame that only the connection's
    /// end completes (an HTTP response whose body runs to the close) is taken here.
    /// [`Framed`] calls it once, before [`FrameHandler::read_connection_lost`], and delivers
    /// its frame or error as [`decode`](Self::decode)'s. Default: `Ok(None)`, the partial
    /// frame is dropped.
    ///
    /// # Errors
    ///
    /// The stream ends where a frame cannot (a decoder may say it was cut short).
    fn decode_eof(&mut self, buf: &mut InBuf<'_>) -> Result<Option<Self::Frame>, Self::Error> {
        let _ = buf;
        Ok(None)
    }
}

/// Turns frames into bytes: the writing half of a codec, given to
/// [`Transport::write_frame`].
pub trait Encoder<Item> {
    /// Why a frame cannot be encoded (for example a frame over a size limit); an encoder that
    /// cannot fail uses [`std::convert::Infallible`].
    type Error: fmt::Display;

    /// Appends `item`'s bytes to `dst`. `dst` may hold bytes queued before (it is the
    /// connection's output): an encoder only appends. On an error, whatever it appended is
    /// taken back by the caller.
    ///
    /// # Errors
    ///
    /// `item` cannot be encoded.
    fn encode(&mut self, item: Item, dst: &mut Vec<u8>) -> Result<(), Self::Error>;
}

/// A protocol that receives whole frames: [`Framed`] makes it a [`Protocol`]. The callbacks
/// other than [`frame_received`](Self::frame_received) default to [`Protocol`]'s.
pub trait FrameHandler: 'static {
    /// The decoder that cuts this protocol's frames.
    type Decoder: Decoder;

    /// The connection is open.
    fn connection_made(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// A whole frame arrived.
    fn frame_received(&mut self, frame: <Self::Decoder as Decoder>::Frame, transport: &Transport);

    /// A read was decoded: its whole frames were delivered, and `buffered` bytes of a partial
    /// frame are kept for the next (none after a decode error or a close). `decoder` tells
    /// what else it is in the middle of. The place to arm a deadline for the frame still to
    /// come, or to clear it.
    ///
    /// While the output is full ([`Transport::is_output_full`]) with no producer registered,
    /// `buffered` also counts the whole frames [`Framed`] holds back until it drains (it is
    /// called again then): the wait is then the server's, not the peer's, so a deadline on
    /// the peer's slowness is best not armed while the output is full (the built-in handlers
    /// arm none then).
    fn read_decoded(&mut self, decoder: &Self::Decoder, buffered: usize, transport: &Transport) {
        let _ = (decoder, buffered, transport);
    }

    /// The bytes could not be decoded. The default closes the connection after flushing
    /// what was written; a protocol may write an error answer first. That close is orderly:
    /// `connection_lost` follows once the peer closes too, or after the linger
    /// ([`ConnectionConfig::linger`](crate::ConnectionConfig::linger), 2 s). A client whose
    /// server sends garbage usually wants [`Transport::abort_connection`] here instead, so
    /// that whoever waits on the connection hears at once.
    fn decode_failed(&mut self, error: <Self::Decoder as Decoder>::Error, transport: &Transport) {
        let _ = error;
        transport.lose_connection();
    }

    /// The peer's EOF: as [`Protocol::read_connection_lost`]. It comes after the decoder's
    /// [`decode_eof`](Decoder::decode_eof) and what it delivered (a frame the close
    /// completes, or a [`decode_failed`](Self::decode_failed)); a partial frame left is
    /// dropped.
    fn read_connection_lost(&mut self, transport: &Transport) {
        transport.lose_connection();
    }

    /// As [`Protocol::write_connection_lost`].
    fn write_connection_lost(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// As [`Protocol::output_drained`]; the frames held back while the output was full
    /// have been delivered just before.
    fn output_drained(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// As [`Protocol::drain_requested`]: reading, and so decoding, goes on unless the handler
    /// pauses it, and the default leaves the connection open until the drain timeout.
    fn drain_requested(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// As [`Protocol::deadline_expired`].
    fn deadline_expired(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// As [`Protocol::connection_lost`].
    fn connection_lost(&mut self, reason: &CloseReason) {
        let _ = reason;
    }
}

/// A [`FrameHandler`] with its decoder and buffer: a [`Protocol`].
///
/// Each read is decoded in place; only the bytes of a partial frame are copied and kept until
/// the next read, and an idle connection holds no buffer (unless it [retains](Self::retaining)
/// one). After a decode error, or once the handler closed the connection, nothing more is
/// decoded.
///
/// While the connection's output is full ([`Transport::is_output_full`], with no producer
/// registered) no frame is delivered: a client that pipelines requests without reading the
/// answers has the rest of its read kept undecoded (reading is stopped meanwhile), and the
/// frames are delivered once the output drains. So the answers queued stay near the
/// high-water mark instead of reaching `max_output`, where the connection would be reset.
#[derive(Debug)]
pub struct Framed<H: FrameHandler> {
    decoder: H::Decoder,
    handler: H,
    buf: InBuf<'static>,
    /// Capacity the emptied buffer may keep.
    retain: usize,
    stopped: bool,
}

impl<H: FrameHandler> Framed<H> {
    /// Frames `handler`'s input with `decoder`.
    pub fn new(decoder: H::Decoder, handler: H) -> Self {
        Self {
            decoder,
            handler,
            buf: InBuf::new(),
            retain: 0,
            stopped: false,
        }
    }

    /// Keeps up to `bytes` of buffer when it empties, instead of releasing it: a protocol
    /// whose frames often straddle reads spares an allocation per frame, at the cost of that
    /// much memory on each connection that ever held a partial frame. Default: 0.
    pub fn retaining(mut self, bytes: usize) -> Self {
        self.retain = bytes;
        self
    }

    /// The frame handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The frame handler, to change.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Bytes kept undecoded now: a partial frame, and while the output is full the whole
    /// frames held back with it.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Decodes what is kept followed by `data`, delivers the frames, keeps the rest, and
    /// tells the handler.
    fn decode(&mut self, data: &[u8], transport: &Transport) {
        let mut pending = std::mem::take(&mut self.buf);
        pending.decode_read(data, self.retain, |buf| self.deliver(buf, transport, true));
        if !self.stopped {
            self.buf = pending;
        }
        self.handler
            .read_decoded(&self.decoder, self.buf.len(), transport);
    }

    /// Decodes and delivers every whole frame in `buf`, until a decode error or a close, and,
    /// when `hold` is set, output that the peer does not read.
    fn deliver(&mut self, buf: &mut InBuf<'_>, transport: &Transport, hold: bool) {
        // A decoder needs bytes to make a frame of: an empty buffer is not offered.
        while !buf.is_empty() {
            if hold && transport.flow_stopped() {
                return;
            }
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    self.handler.frame_received(frame, transport);
                    if !transport.is_connected() {
                        self.stop();
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.stop();
                    self.handler.decode_failed(e, transport);
                    return;
                }
            }
        }
    }

    /// Decodes nothing more, and drops what is buffered.
    fn stop(&mut self) {
        self.stopped = true;
        self.buf = InBuf::new();
    }
}

impl<H: FrameHandler> Protocol for Framed<H> {
    fn connection_made(&mut self, transport: &Transport) {
        self.handler.connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8], transport: &Transport) {
        if !self.stopped {
            self.decode(data, transport);
        }
    }

    fn read_connection_lost(&mut self, transport: &Transport) {
        if !self.stopped {
            let mut buf = std::mem::take(&mut self.buf);
            // Frames held back while the output was full come before the end.
            self.deliver(&mut buf, transport, false);
            match self.decoder.decode_eof(&mut buf) {
                Ok(Some(frame)) => self.handler.frame_received(frame, transport),
                Ok(None) => {}
                Err(e) => self.handler.decode_failed(e, transport),
            }
            // Nothing more comes to decode.
            self.stop();
        }
        self.handler.read_connection_lost(transport);
    }

    fn write_connection_lost(&mut self, transport: &Transport) {
        self.handler.write_connection_lost(transport);
    }

    fn output_drained(&mut self, transport: &Transport) {
        if !self.stopped && !self.buf.is_empty() {
            self.decode(&[], transport);
        }
        self.handler.output_drained(transport);
    }

    fn drain_requested(&mut self, transport: &Transport) {
        self.handler.drain_requested(transport);
        if !transport.is_connected() {
            self.stop();
        }
    }

    fn deadline_expired(&mut self, transport: &Transport) {
        self.handler.deadline_expired(transport);
        if !transport.is_connected() {
            self.stop();
        }
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.handler.connection_lost(reason);
    }
}

/// Lines ended by `\n` (a `\r` before it is dropped too), without their ending: Twisted's
/// `LineReceiver`. A line longer than the limit is an error as soon as the limit is passed,
/// so at most the limit is ever buffered.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_len: usize,
    /// Bytes already searched for the end of the current line.
    searched: usize,
    /// Only `\r\n` ends a line (a bare `\n` is part of it).
    crlf_only: bool,
}

/// A line passed [`LineDecoder`]'s limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {max_len} bytes")]
pub struct LineTooLong {
    /// The limit.
    pub max_len: usize,
}

impl LineDecoder {
    /// Lines of at most `max_len` bytes (without their ending), ended by `\n` or `\r\n`.
    /// Twisted's default is 16384.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            searched: 0,
            crlf_only: false,
        }
    }

    /// Lines ended by `\r\n` only, as Twisted's `LineReceiver` (whose delimiter is
    /// `\r\n`): a bare `\n` stays in the line.
    pub fn crlf(max_len: usize) -> Self {
        Self {
            crlf_only: true,
            ..Self::new(max_len)
        }
    }
}

impl Decoder for LineDecoder {
    type Frame = Vec<u8>;
    type Error = LineTooLong;

    fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<Vec<u8>>, LineTooLong> {
        let bytes = buf.as_slice();
        let ends_line = |(i, &b): (usize, &u8)| {
            let at = self.searched + i;
            b == b'\n' && (!self.crlf_only || (at > 0 && bytes[at - 1] == b'\r'))
        };
        let Some(end) = bytes[self.searched..].iter().enumerate().position(ends_line) else {
            self.searched = bytes.len();
            if bytes.len() > self.max_len + 1 {
                return Err(LineTooLong {
                    max_len: self.max_len,
                });
            }
            return Ok(None);
        };
        let end = self.searched + end;
        self.searched = 0;
        let len = if end > 0 && bytes[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        if len > self.max_len {
            return Err(LineTooLong {
                max_len: self.max_len,
            });
        }
        let line = bytes[..len].to_vec();
        buf.advance(end + 1);
        Ok(Some(line))
    }
}

/// Lines, or raw bytes when the protocol switches to them: Twisted's `LineReceiver` with its
/// `setRawMode` / `setLineMode`. The protocol keeps a [`RawSwitch`] (from
/// [`switch`](Self::switch)) and flips it from inside `frame_received`; the switch takes effect
/// at once, for the rest of the same read. Raw bytes come as they arrive (never buffered
/// beyond one read), so a body of any announced length costs no memory of its own.
///
/// ```
/// use weft::codec::{Chunk, FrameHandler, Framed, LineOrRaw, RawSwitch};
/// use weft::Transport;
///
/// /// `PUT <length>` then that many raw bytes, answered with how many arrived.
/// struct Upload { switch: RawSwitch, received: usize }
///
/// impl FrameHandler for Upload {
///     type Decoder = LineOrRaw;
///     fn frame_received(&mut self, chunk: Chunk, t: &Transport) {
///         match chunk {
///             Chunk::Line(line) => match line.strip_prefix(b"PUT ") {
///                 Some(n) => match std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()) {
///                     Some(n) => { self.received = 0; self.switch.raw_for(n) }
///                     None => t.write(b"ERR length\r\n"),
///                 },
///                 None => t.write(b"ERR expected PUT <length>\r\n"),
///             },
///             Chunk::Raw(bytes) => {
///                 self.received += bytes.len();
///                 if !self.switch.is_raw() {
///                     t.write(format!("OK {}\r\n", self.received).as_bytes());
///                 }
///             }
///         }
///     }
/// }
///
/// let decoder = LineOrRaw::new(1024);
/// let upload = Upload { switch: decoder.switch(), received: 0 };
/// let protocol = Framed::new(decoder, upload);
/// # let _ = protocol;
/// ```
#[derive(Debug, Clone)]
#[doc(alias = "setRawMode")]
#[doc(alias = "LineReceiver")]
pub struct LineOrRaw {
    lines: LineDecoder,
    switch: RawSwitch,
}

/// What [`LineOrRaw`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// A whole line, without its ending.
    Line(Vec<u8>),
    /// Raw bytes, as they arrived.
    Raw(Vec<u8>),
}

/// Switches a [`LineOrRaw`] decoder between lines and raw bytes; clones switch the same
/// decoder.
#[derive(Debug, Clone, Default)]
pub struct RawSwitch(Rc<Cell<Mode>>);

/// What a [`LineOrRaw`] decoder reads now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Lines,
    /// Raw bytes until switched back.
    Raw,
    /// This many raw bytes, then lines again.
    RawFor(u64),
}

impl RawSwitch {
    /// Raw bytes from now on, until [`lines`](Self::lines) (Twisted's `setRawMode`).
    pub fn raw(&self) {
        self.0.set(Mode::Raw);
    }

    /// The next `n` bytes raw, then lines again by itself (a body whose length a line
    /// announced). Zero means lines still.
    pub fn raw_for(&self, n: u64) {
        self.0.set(if n == 0 { Mode::Lines } else { Mode::RawFor(n) });
    }

    /// Lines from now on (Twisted's `setLineMode`).
    pub fn lines(&self) {
        self.0.set(Mode::Lines);
    }

    /// True while raw bytes are delivered.
    pub fn is_raw(&self) -> bool {
        self.0.get() != Mode::Lines
    }
}

impl LineOrRaw {
    /// Lines of at most `max_len` bytes (as [`LineDecoder::new`]), until switched.
    pub fn new(max_len: usize) -> Self {
        Self::from_lines(LineDecoder::new(max_len))
    }

    /// Lines cut by `lines` (a [`LineDecoder::crlf`], say), until switched.
    pub fn from_lines(lines: LineDecoder) -> Self {
        Self {
            lines,
            switch: RawSwitch::default(),
        }
    }

    /// The switch the protocol flips.
    pub fn switch(&self) -> RawSwitch {
        self.switch.clone()
    }
}

impl Decoder for LineOrRaw {
    type Frame = Chunk;
    type Error = LineTooLong;

    fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<Chunk>, LineTooLong> {
        let take = match self.switch.0.get() {
            Mode::Lines => return Ok(self.lines.decode(buf)?.map(Chunk::Line)),
            Mode::Raw => buf.len(),
            Mode::RawFor(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let rest = left - n as u64;
                self.switch.0.set(if rest == 0 {
                    Mode::Lines
                } else {
                    Mode::RawFor(rest)
                });
                n
            }
        };
        // What the line decoder had searched is gone with these bytes.
        self.lines.searched = 0;
        Ok(Some(Chunk::Raw(buf.take(take))))
    }
}

/// Lines with an ending appended: [`LineDecoder`]'s frames written back, as Twisted's
/// `LineReceiver.sendLine` (whose delimiter is `\r\n`). The line is written as it is: one
/// that holds the ending itself reads as more than one line at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineEncoder {
    ending: &'static [u8],
}

impl LineEncoder {
    /// Lines ended by `\r\n`, as Twisted's `LineReceiver` and most Internet protocols.
    pub fn crlf() -> Self {
        Self { ending: b"\r\n" }
    }

    /// Lines ended by `\n` alone.
    pub fn lf() -> Self {
        Self { ending: b"\n" }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for LineEncoder {
    type Error = std::convert::Infallible;

    fn encode(&mut self, line: T, dst: &mut Vec<u8>) -> Result<(), Self::Error> {
        dst.extend_from_slice(line.as_ref());
        dst.extend_from_slice(self.ending);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    fn lines(input: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Option<LineTooLong>) {
        let mut d = LineDecoder::new(max);
        let mut buf = InBuf::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend(chunk);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(l)) => out.push(l),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    /// Chunks in, lines out.
    type LineCase = (&'static [&'static [u8]], &'static [&'static [u8]]);

    #[test]
    fn lines_across_chunk_boundaries() {
        let cases: &[LineCase] = &[
            (&[b"a\nb\n"], &[b"a", b"b"]),
            (&[b"ab", b"c\r", b"\nd"], &[b"abc"]),
            (&[b"\n\r\n"], &[b"", b""]),
            (&[b"x\ry\n"], &[b"x\ry"]),
            (&[b"no end"], &[]),
        ];
        for (input, want) in cases {
            let (got, err) = lines(input, 16);
            assert_eq!(err, None, "{input:?}");
            assert_eq!(
                got,
                want.iter().map(|l| l.to_vec()).collect::<Vec<_>>(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_long_line_fails_as_soon_as_it_passes_the_limit() {
        let (got, err) = lines(&[b"1234\n", b"12345"], 4);
        assert_eq!(got, vec![b"1234".to_vec()]);
        assert_eq!(err, None, "five bytes may still end with a CR");
        let (_, err) = lines(&[b"123456"], 4);
        assert_eq!(err, Some(LineTooLong { max_len: 4 }));
        let (_, err) = lines(&[b"12345\n"], 4);
        assert_eq!(err, Some(LineTooLong { max_len: 4 }));
        let (got, err) = lines(&[b"1234\r\n"], 4);
        assert_eq!((got, err), (vec![b"1234".to_vec()], None));
    }

    #[test]
    fn crlf_lines_keep_a_bare_lf() {
        let mut d = LineDecoder::crlf(16);
        let mut buf = InBuf::borrowed(b"a\nb\r\nc\r");
        assert_eq!(d.decode(&mut buf), Ok(Some(b"a\nb".to_vec())));
        assert_eq!(d.decode(&mut buf), Ok(None));
        let mut buf = InBuf::new();
        buf.extend(b"c\r");
        buf.extend(b"\n");
        assert_eq!(
            d.decode(&mut buf),
            Ok(Some(b"c".to_vec())),
            "a CRLF split over reads"
        );
    }

    /// Feeds `reads` to a `LineOrRaw` whose handler switches to raw for `n` bytes after a
    /// line `RAW n`, and to raw for good after `RAW`; returns the chunks.
    fn switched(reads: &[&[u8]]) -> Vec<Chunk> {
        let mut d = LineOrRaw::new(16);
        let switch = d.switch();
        let mut pending = InBuf::new();
        let mut out = Vec::new();
        for read in reads {
            pending.decode_read(read, 0, |buf| {
                while !buf.is_empty() {
                    let Some(chunk) = d.decode(buf).unwrap() else {
                        break;
                    };
                    if let Chunk::Line(l) = &chunk {
                        match l.strip_prefix(b"RAW") {
                            Some(b"") => switch.raw(),
                            Some(n) => switch.raw_for(String::from_utf8_lossy(n).trim().parse().unwrap()),
                            None => {}
                        }
                    }
                    out.push(chunk);
                }
            });
        }
        out
    }

    #[test]
    fn line_or_raw_switches_within_a_read_and_across_reads() {
        let line = |l: &[u8]| Chunk::Line(l.to_vec());
        let raw = |r: &[u8]| Chunk::Raw(r.to_vec());
        assert_eq!(
            switched(&[b"a\nRAW 5\nhel", b"lo\nb\n"]),
            [
                line(b"a"),
                line(b"RAW 5"),
                raw(b"hel"),
                raw(b"lo"),
                line(b""),
                line(b"b")
            ],
            "5 raw bytes, then lines again (the LF after them is an empty line)"
        );
        assert_eq!(
            switched(&[b"x", b"RAW 2\n12y\n"]),
            [line(b"xRAW 2"), line(b"12y")],
            "a line that does not start with RAW"
        );
        assert_eq!(
            switched(&[b"RAW 3\nabc", b"d\nRAW\n", b"any\n", b"thing"]),
            [
                line(b"RAW 3"),
                raw(b"abc"),
                line(b"d"),
                line(b"RAW"),
                raw(b"any\n"),
                raw(b"thing")
            ],
            "raw for good: each read as it came"
        );
    }

    #[test]
    fn lines_encode_with_their_ending_and_decode_back() {
        let mut out = b"queued;".to_vec();
        let Ok(()) = LineEncoder::crlf().encode("one", &mut out);
        let Ok(()) = LineEncoder::lf().encode(b"two".to_vec(), &mut out);
        assert_eq!(out, b"queued;one\r\ntwo\n");
        let (got, err) = lines(&[&out], 16);
        assert_eq!((got, err), (vec![b"queued;one".to_vec(), b"two".to_vec()], None));
    }

    #[test]
    fn in_buf_advances_takes_and_compacts() {
        let mut b = InBuf::new();
        b.extend(b"hello world");
        assert_eq!(b.take(6), b"hello ");
        assert_eq!(b.as_slice(), b"world");
        b.advance(100);
        assert!(b.is_empty());
        b.extend(b"again");
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn a_borrowed_in_buf_copies_only_its_tail_when_extended() {
        let bytes = b"head tail";
        let mut b = InBuf::borrowed(bytes);
        b.advance(5);
        assert_eq!(b.as_slice(), b"tail");
        assert!(matches!(b.data, Cow::Borrowed(_)), "nothing copied yet");
        b.extend(b"!");
        assert_eq!(b.as_slice(), b"tail!");
        assert!(matches!(&b.data, Cow::Owned(v) if v.len() == 5));
        let mut b = InBuf::borrowed(bytes);
        assert_eq!(b.take(100), bytes);
        assert!(b.is_empty());
    }

    /// Records frames and failures.
    struct Rec(Rc<RefCell<Vec<String>>>);

    impl FrameHandler for Rec {
        type Decoder = LineDecoder;
        fn frame_received(&mut self, line: Vec<u8>, _t: &Transport) {
            self.0
                .borrow_mut()
                .push(String::from_utf8_lossy(&line).into_owned());
        }
        fn decode_failed(&mut self, e: LineTooLong, t: &Transport) {
            self.0.borrow_mut().push(format!("error: {e}"));
            t.lose_connection();
        }
        fn read_decoded(&mut self, _d: &LineDecoder, buffered: usize, _t: &Transport) {
            self.0.borrow_mut().push(format!("read: {buffered} left"));
        }
    }

    #[test]
    fn framed_delivers_whole_frames_and_stops_after_an_error() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut p = Framed::new(LineDecoder::new(8), Rec(log.clone()));
        let t = Transport::detached();
        p.data_received(b"one\ntw", &t);
        assert_eq!(p.buffered(), 2);
        p.data_received(b"o\n", &t);
        assert_eq!(p.buffered(), 0);
        p.data_received(b"far too long a line\nthree\n", &t);
        p.data_received(b"four\n", &t);
        assert_eq!(
            *log.borrow(),
            vec![
                "one",
                "read: 2 left",
                "two",
                "read: 0 left",
                "error: line longer than 8 bytes",
                "read: 0 left"
            ]
        );
        assert!(
            !t.is_connected(),
            "the default answer to a decode error is a close"
        );
    }

    /// True when the framed protocol holds no buffer at all.
    fn unallocated<H: FrameHandler>(p: &Framed<H>) -> bool {
        matches!(&p.buf.data, Cow::Owned(v) if v.capacity() == 0)
    }

    #[test]
    fn framed_decodes_a_read_in_place_and_keeps_only_its_tail() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut p = Framed::new(LineDecoder::new(64), Rec(log.clone()));
        let t = Transport::detached();
        // Whole frames only: decoded from the read itself, nothing copied or allocated.
        p.data_received(b"a\nbb\n", &t);
        assert!(unallocated(&p));
        // A partial frame at the end: only its bytes are kept.
        p.data_received(b"ccc\ndd", &t);
        assert_eq!(p.buf.as_slice(), b"dd");
        // The next read completes it from the buffer, which is released once empty.
        p.data_received(b"d\n", &t);
        assert!(unallocated(&p));
        p.data_received(b"e\n", &t);
        let lines: Vec<String> = log
            .borrow()
            .iter()
            .filter(|l| !l.starts_with("read:"))
            .cloned()
            .collect();
        assert_eq!(lines, ["a", "bb", "ccc", "ddd", "e"]);
    }

    #[test]
    fn framed_gives_the_same_frames_for_every_split() {
        let input = b"one\r\ntwo\n\nthree, a longer line\r\nfour\npartial";
        let whole = {
            let log = Rc::new(RefCell::new(Vec::new()));
            let mut p = Framed::new(LineDecoder::new(64), Rec(log.clone()));
            p.data_received(input, &Transport::detached());
            assert_eq!(p.buffered(), b"partial".len());
            log.take()
        };
        let whole: Vec<&String> = whole.iter().filter(|l| !l.starts_with("read:")).collect();
        assert_eq!(whole, ["one", "two", "", "three, a longer line", "four"]);
        for at in 0..=input.len() {
            for second in 0..=input.len() - at {
                let log = Rc::new(RefCell::new(Vec::new()));
                let mut p = Framed::new(LineDecoder::new(64), Rec(log.clone()));
                let t = Transport::detached();
                let (a, rest) = input.split_at(at);
                let (b, c) = rest.split_at(second);
                for chunk in [a, b, c] {
                    p.data_received(chunk, &t);
                }
                let got = log.take();
                let got: Vec<&String> = got.iter().filter(|l| !l.starts_with("read:")).collect();
                assert_eq!(got, whole, "split at {at} and {}", at + second);
                assert_eq!(p.buf.as_slice(), b"partial");
            }
        }
    }

    /// Lines, and at the EOF what is left as one more (an error when it is `bad`).
    struct LinesThenRest(LineDecoder);

    impl Decoder for LinesThenRest {
        type Frame = Vec<u8>;
        type Error = LineTooLong;
        fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<Vec<u8>>, LineTooLong> {
            self.0.decode(buf)
        }
        fn decode_eof(&mut self, buf: &mut InBuf<'_>) -> Result<Option<Vec<u8>>, LineTooLong> {
            match buf.take(usize::MAX) {
                rest if rest == b"bad" => Err(LineTooLong { max_len: 0 }),
                rest if rest.is_empty() => Ok(None),
                rest => Ok(Some(rest)),
            }
        }
    }

    /// Records frames, failures and the EOF.
    struct EofRec<D>(Rc<RefCell<Vec<String>>>, std::marker::PhantomData<D>);

    impl<D: Decoder<Frame = Vec<u8>> + 'static> FrameHandler for EofRec<D> {
        type Decoder = D;
        fn frame_received(&mut self, frame: Vec<u8>, _t: &Transport) {
            self.0
                .borrow_mut()
                .push(String::from_utf8_lossy(&frame).into_owned());
        }
        fn decode_failed(&mut self, e: D::Error, _t: &Transport) {
            self.0.borrow_mut().push(format!("error: {e}"));
        }
        fn read_connection_lost(&mut self, _t: &Transport) {
            self.0.borrow_mut().push("eof".into());
        }
    }

    #[test]
    fn framed_offers_the_eof_to_the_decoder_before_the_handler() {
        let run = |input: &[u8], lines: bool| {
            let log = Rc::new(RefCell::new(Vec::new()));
            let t = Transport::detached();
            if lines {
                let mut p = Framed::new(
                    LineDecoder::new(64),
                    EofRec(log.clone(), std::marker::PhantomData),
                );
                p.data_received(input, &t);
                p.read_connection_lost(&t);
                assert!(unallocated(&p));
            } else {
                let rest = LinesThenRest(LineDecoder::new(64));
                let mut p = Framed::new(rest, EofRec(log.clone(), std::marker::PhantomData));
                p.data_received(input, &t);
                p.read_connection_lost(&t);
                assert!(unallocated(&p));
            }
            log.take()
        };
        assert_eq!(run(b"a\nrest", false), ["a", "rest", "eof"]);
        assert_eq!(run(b"a\n", false), ["a", "eof"]);
        assert_eq!(
            run(b"a\nbad", false),
            ["a", "error: line longer than 0 bytes", "eof"]
        );
        // The default drops a partial frame.
        assert_eq!(run(b"a\nrest", true), ["a", "eof"]);
    }

    /// Closes the connection on the frame `QUIT`.
    struct Quits(Rc<RefCell<Vec<Vec<u8>>>>);

    impl FrameHandler for Quits {
        type Decoder = LineDecoder;
        fn frame_received(&mut self, line: Vec<u8>, t: &Transport) {
            if line == b"QUIT" {
                t.lose_connection();
            }
            self.0.borrow_mut().push(line);
        }
    }

    #[test]
    fn framed_decodes_nothing_after_the_handler_closes() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut p = Framed::new(LineDecoder::new(64), Quits(log.clone()));
        let t = Transport::detached();
        p.data_received(b"a\nQUIT\nb\nc", &t);
        p.data_received(b"\n", &t);
        assert_eq!(*log.borrow(), [b"a".to_vec(), b"QUIT".to_vec()]);
        assert!(unallocated(&p), "what followed the close is dropped");
    }

    #[test]
    fn framed_may_retain_its_emptied_buffer() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut p = Framed::new(LineDecoder::new(64), Rec(log.clone())).retaining(64);
        let t = Transport::detached();
        p.data_received(b"ab", &t);
        p.data_received(b"c\n", &t);
        assert_eq!(p.buffered(), 0);
        let kept = p.buf.capacity();
        assert!(kept > 0, "an emptied buffer within the bound is kept");
        p.data_received(b"de", &t);
        p.data_received(b"f\n", &t);
        assert_eq!(
            p.buf.capacity(),
            kept,
            "and reused: no allocation per split frame"
        );
        p.data_received(&[b'x'; 63], &t);
        p.data_received(b"\n", &t);
        assert!(unallocated(&p), "a buffer over the bound is released");
    }
}
