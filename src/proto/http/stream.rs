//! A response whose body is written as it is made ([`Response::stream`]): a download, a
//! file, a body too large to hold, or of a length not known in advance.

use std::error::Error;
use std::future::Future;
use std::io::Write;

use super::response::{Delimit, Response};
use crate::proto::answer::{Answer, StreamClosed, StreamWriter, Streamed};

impl Response {
    /// This response with a body that `body` writes, piece by piece, through a
    /// [`BodyWriter`]: an [`Answer`] for [`Answered`](crate::codec::Answered), written in
    /// its turn ([`Answer::Stream`]).
    ///
    /// The head is this response's, as [`ResponseEncoder`](super::ResponseEncoder) writes
    /// it (status line, `Date`, the headers), with `Content-Length: n` when `length` is
    /// `Some(n)`, otherwise `Transfer-Encoding: chunked` (each write one chunk, and the last
    /// chunk after `body` returns); an HTTP/1.0 client (told by
    /// [`answering`](Self::answering)) reads no chunks, so its body ends with the connection
    /// (`Connection: close`). A body set with [`with_body`](Self::with_body) is not written.
    /// The connection is kept alive after the body as after any response (unless the
    /// response [`closes`](Self::closes)).
    ///
    /// A response [`for_head`](Self::for_head) is its head alone: `body` is not run. A body
    /// that returns an error, or writes more or less than `length`, closes the connection
    /// after what it wrote: the client sees a body cut short (one that ends with the
    /// connection looks whole, as in every HTTP/1.0 server).
    ///
    /// ```
    /// use weft::codec::Answer;
    /// use weft::http::{BodyWriter, Request, Response};
    ///
    /// // A million lines, in chunks, with the headers of any response.
    /// fn lines(req: &Request) -> Answer<Response> {
    ///     Response::ok()
    ///         .with_header("Content-Type", "text/plain")
    ///         .answering(req)
    ///         .stream(None, |mut body: BodyWriter| async move {
    ///             for i in 0..1_000_000 {
    ///                 body.write(format!("{i}\n").as_bytes()).await?;
    ///             }
    ///             Ok(())
    ///         })
    /// }
    /// # let _ = lines;
    /// ```
    pub fn stream<F, Fut>(self, length: Option<u64>, body: F) -> Answer<Response>
    where
        F: FnOnce(BodyWriter) -> Fut + 'static,
        Fut: Future<Output = Result<(), Box<dyn Error>>> + 'static,
    {
        let head = self.streamed(length);
        let close = head.closes();
        if head.is_for_head() {
            return if close {
                Answer::SendAndClose(head)
            } else {
                Answer::Send(head)
            };
        }
        let delimit = head.delimit;
        let streamed = Streamed::with_head(head, move |out: StreamWriter| async move {
            let end = out.handle();
            body(BodyWriter { out, delimit }).await?;
            finish(end, delimit).await
        });
        if close {
            Answer::StreamAndClose(streamed)
        } else {
            Answer::Stream(streamed)
        }
    }
}

/// Ends a streamed body: the last chunk, or the check that it was as long as it said.
async fn finish(mut out: StreamWriter, delimit: Delimit) -> Result<(), Box<dyn Error>> {
    match delimit {
        Delimit::Length(length) if out.written() < length => Err(StreamError::Short {
            length,
            written: out.written(),
        }
        .into()),
        Delimit::Chunked => Ok(out.write(b"0\r\n\r\n").await?),
        Delimit::Length(_) | Delimit::Close | Delimit::Whole => Ok(()),
    }
}

/// Writes the body of a [`Response::stream`]: framed as its head says (within its
/// `Content-Length`, or in chunks), each write waiting while the client's output is full, so
/// that a client that reads slowly holds at most the connection's high-water mark of it.
#[derive(Debug)]
pub struct BodyWriter {
    out: StreamWriter,
    delimit: Delimit,
}

impl BodyWriter {
    /// Writes `data`, the next part of the body (in chunked encoding, one chunk; nothing for
    /// empty `data`).
    ///
    /// # Errors
    ///
    /// [`StreamError::Closed`] once the connection is closing or gone: stop making the body;
    /// [`StreamError::TooLong`] when `data` would pass the `Content-Length` (nothing of it is
    /// written).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StreamError> {
        if data.is_empty() {
            return Ok(());
        }
        match self.delimit {
            Delimit::Length(length) if self.out.written() + data.len() as u64 > length => {
                return Err(StreamError::TooLong { length });
            }
            Delimit::Chunked => {
                let mut size = [0; 18];
                let mut line = &mut size[..];
                let _ = write!(line, "{:x}\r\n", data.len());
                let len = 18 - line.len();
                self.out.write(&size[..len]).await?;
                self.out.write(data).await?;
                self.out.write(b"\r\n").await?;
            }
            Delimit::Length(_) | Delimit::Close | Delimit::Whole => self.out.write(data).await?,
        }
        Ok(())
    }
}

/// Why a streamed body could not be written whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The connection is closing or gone: stop making the body.
    #[error(transparent)]
    Closed(#[from] StreamClosed),
    /// A write would pass the `Content-Length` the head announced.
    #[error("the body would be longer than its Content-Length of {length} bytes")]
    TooLong {
        /// The announced length.
        length: u64,
    },
    /// The body ended before its `Content-Length`.
    #[error("the body ended after {written} of its {length} bytes")]
    Short {
        /// The announced length.
        length: u64,
        /// The bytes written.
        written: u64,
    },
}
