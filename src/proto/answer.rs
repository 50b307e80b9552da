//! What becomes of a request answered by [`Answered`](crate::codec::Answered): an [`Answer`],
//! written whole by the encoder or, for one too large for one write, [`Streamed`] piece by
//! piece through a [`StreamWriter`] when its turn comes.

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use crate::proto::transport::Transport;

/// The most bytes [`StreamWriter::write`] queues at once: it waits for the output to drain
/// between pieces, so a stream holds at most the high-water mark and one piece.
const PIECE: usize = 64 * 1024;

/// What becomes of one request, as its answer function says.
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer<R> {
    /// Write this answer and go on with the next request.
    Send(R),
    /// Write this answer, then close the connection once it is flushed; requests received
    /// after this one are dropped unanswered (an HTTP/1.0 response, a QUIT).
    SendAndClose(R),
    /// Write this answer piece by piece, when its turn comes (every earlier answer is
    /// written), then go on with the next request: for an answer too large to make whole
    /// (a file, a download), which one write above `FlowConfig::max_output` would reset.
    /// The answers after it wait until it ends. See [`Streamed`].
    Stream(Streamed<R>),
    /// [`Stream`](Self::Stream), then close the connection once it is flushed (a body that
    /// ends with the connection, as an HTTP/1.0 one of unknown length).
    StreamAndClose(Streamed<R>),
    /// Close the connection without an answer (after flushing the earlier ones).
    Close,
    /// No answer to this frame: it is part of a request (a raw chunk of an upload, say), or
    /// a request that is answered later, by another frame's answer. Not for writing an answer
    /// through the transport by hand: that would overtake the answers still in the making
    /// before it; stream it with [`Stream`](Self::Stream) instead.
    Nothing,
}

/// The body of a [`Streamed`] answer: started with its writer when its turn comes.
type Body = Box<dyn FnOnce(StreamWriter) -> Pin<Box<dyn Future<Output = StreamResult>>>>;

/// How a streamed answer ended: `Err` cuts it short and closes the connection.
type StreamResult = Result<(), Box<dyn Error>>;

/// An answer written piece by piece, in its turn: [`Answer::Stream`].
///
/// `body` is an async function of a [`StreamWriter`]. [`Answered`](crate::codec::Answered)
/// runs it once every earlier answer is written (after writing `head`, if there is one, with
/// its encoder), and writes no later answer until it returns; meanwhile, with
/// [`concurrency`](crate::codec::Answered::concurrency) above 1, the later answers are still
/// made. The writer waits while the peer's output is full, so a slow reader holds at most
/// the high-water mark of the stream in memory.
///
/// It ends as `body` returns: `Ok` goes on with the next request; an `Err` (a file that
/// could not be read, the writer's [`StreamClosed`]) is logged and closes the connection
/// after what was written, so that the peer sees an answer cut short, not the next one. When
/// the connection ends first (a reset, an abort at the drain timeout), `body` is dropped
/// where it waits.
///
/// ```
/// use weft::codec::{Answer, Streamed, StreamWriter};
///
/// // A million numbered lines: far more than one write may hold.
/// fn lines() -> Answer<String> {
///     Answer::Stream(Streamed::new(|mut out: StreamWriter| async move {
///         for i in 0..1_000_000 {
///             out.write(format!("{i}\n").as_bytes()).await?;
///         }
///         Ok(())
///     }))
/// }
/// # let _ = lines();
/// ```
pub struct Streamed<R> {
    head: Option<R>,
    body: Body,
}

impl<R> Streamed<R> {
    /// An answer written by `body`, with no head of its own.
    pub fn new<F, Fut>(body: F) -> Self
    where
        F: FnOnce(StreamWriter) -> Fut + 'static,
        Fut: Future<Output = StreamResult> + 'static,
    {
        Self {
            head: None,
            body: Box::new(move |out| Box::pin(body(out))),
        }
    }

    /// An answer that starts with `head`, written by the encoder as an answer of its own
    /// (an HTTP response head, say), then goes on with what `body` writes. An encoder that
    /// refuses `head` closes the connection, and `body` is not run.
    pub fn with_head<F, Fut>(head: R, body: F) -> Self
    where
        F: FnOnce(StreamWriter) -> Fut + 'static,
        Fut: Future<Output = StreamResult> + 'static,
    {
        Self {
            head: Some(head),
            ..Self::new(body)
        }
    }

    /// The head to encode, and the body to run with a writer.
    pub(crate) fn into_parts(self) -> (Option<R>, Body) {
        (self.head, self.body)
    }
}

impl<R: fmt::Debug> fmt::Debug for Streamed<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streamed")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// Writes a [`Streamed`] answer to its connection, in its turn: each
/// [`write`](Self::write) waits while the output is full, so a peer that reads slowly
/// slows the stream down instead of growing the connection's memory.
#[derive(Debug)]
pub struct StreamWriter {
    turn: Rc<Turn>,
}

/// A stream's turn on its connection, shared by its writer and the task that runs it.
#[derive(Debug)]
struct Turn {
    transport: Transport,
    /// The stream's body has not returned yet.
    open: Cell<bool>,
    /// Bytes written so far.
    written: Cell<u64>,
}

impl StreamWriter {
    /// A writer to `transport`, for one stream's turn.
    pub(crate) fn new(transport: &Transport) -> Self {
        Self {
            turn: Rc::new(Turn {
                transport: transport.clone(),
                open: Cell::new(true),
                written: Cell::new(0),
            }),
        }
    }

    /// Another handle on this turn: the task's, to end it, or a wrapper's, that writes after
    /// the body it wraps returned.
    pub(crate) fn handle(&self) -> Self {
        Self {
            turn: self.turn.clone(),
        }
    }

    /// Ends the turn: later writes, through any handle, are refused.
    pub(crate) fn end(&self) {
        self.turn.open.set(false);
    }

    /// Queues `data` for the peer, in pieces of at most 64 KiB, each once the output takes
    /// more ([`Transport::writable`]): `data` of any size is written while at most the
    /// high-water mark plus one piece is queued (so keep `FlowConfig::max_output` above that,
    /// as the defaults are: 64 KiB + 64 KiB against 4 MiB).
    ///
    /// # Errors
    ///
    /// [`StreamClosed`] once the connection is closing or gone, or the stream's body has
    /// returned (a writer kept past it): stop making the answer.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StreamClosed> {
        self.check()?;
        for piece in data.chunks(PIECE) {
            self.turn.transport.writable().await;
            self.check()?;
            self.turn.transport.write(piece);
            self.turn
                .written
                .set(self.turn.written.get() + piece.len() as u64);
        }
        Ok(())
    }

    /// Bytes written so far in this turn.
    pub(crate) fn written(&self) -> u64 {
        self.turn.written.get()
    }

    fn check(&self) -> Result<(), StreamClosed> {
        if self.turn.open.get() && self.turn.transport.is_connected() {
            Ok(())
        } else {
            Err(StreamClosed)
        }
    }
}

/// A [`StreamWriter`] refused a write: the connection is closing or gone, or the stream's
/// turn is over. Nothing more of the answer can reach the peer: stop making it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection of a streamed answer is closing or gone, or its turn is over")]
pub struct StreamClosed;
