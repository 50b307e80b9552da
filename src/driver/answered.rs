//! Requests answered by async work, in order: the plumbing every request/response protocol
//! on weft needs once an answer has to wait (for another shard, a timer, a backend).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::tasks::{JoinHandle, sleep, spawn_serving};
use crate::proto::answer::{Answer, StreamWriter, Streamed};
use crate::proto::close::CloseReason;
use crate::proto::codec::{Decoder, Encoder, FrameHandler};
use crate::proto::queue::Queue;
use crate::proto::transport::{IdleHold, Transport};

/// Requests a connection may have waiting by default before it stops reading.
const DEFAULT_MAX_QUEUED: usize = 64;

/// Makes the last answer to a request that did not arrive in time.
type TimeoutAnswer<R> = Rc<dyn Fn() -> Option<R>>;

/// Makes a last answer from a decode error.
type LastAnswer<Error, R> = Box<dyn FnOnce(Error) -> Option<R>>;

/// Sees the decoder after each read, and whether every request so far is answered.
type Interim<D> = Box<dyn FnMut(&D) -> Option<Vec<u8>>>;

/// A [`FrameHandler`] whose requests are answered by an async function, one after the
/// other in arrival order, in a task of the connection's own: give it to
/// [`Framed`](crate::codec::Framed) with the decoder of the requests.
///
/// Each decoded request waits in a queue; the task takes them in order, awaits
/// `answer(request)` (which may call other shards, sleep, or talk to a backend without
/// blocking the shard; [`with_transport`](Answered::with_transport) also gives it the
/// connection) and writes what it returns with the encoder. So pipelined requests
/// are answered in order, and nothing received is lost:
///
/// - above [`max_queued`](Self::max_queued) requests waiting (64 by default) the
///   connection stops reading, and reads again once half of them are answered;
/// - at the peer's EOF (a client that half-closes after its last request), at the engine's
///   drain (once a request that is partly received is whole: an upload is not cut off), and
///   after bytes that do not decode, reading stops, the requests received are answered,
///   and the connection closes after the last answer; after a decode error
///   [`on_decode_error`](Self::on_decode_error) may add a last answer (an HTTP 400, a RESP
///   protocol error);
/// - while the output is full ([`Transport::writable`]) no new request is answered: a client
///   that pipelines without reading its answers holds at most the high-water mark of them
///   (plus the answers in the making), instead of being reset at `max_output`;
/// - an encoder that refuses an answer closes the connection (the refusal is logged);
/// - an answer too large for one write (a file, a download) is [`Answer::Stream`]ed: its
///   body writes it piece by piece through a [`StreamWriter`] once every earlier answer is
///   written, waiting while the output is full, and the later answers wait for it to end. It
///   runs through the drain (the drain timeout bounds it), and at the peer's EOF as any
///   answer (unless [`cancel_at_eof`](Self::cancel_at_eof)); a body that fails closes the
///   connection after what it wrote;
/// - once the connection has ended (a reset, an abort, the drain timeout), the answers in
///   the making are dropped where they wait.
///
/// ```no_run
/// use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder};
/// use weft::{EngineConfig, Service, factory_fn, shard};
/// use std::time::Duration;
///
/// // Every line is answered, 5 ms later, with its length; pipelined lines in order.
/// Service::new(EngineConfig::default())
///     .listen("127.0.0.1:7300".parse::<std::net::SocketAddr>()?, |_| {
///         factory_fn(|_peer| {
///             let answer = |line: Vec<u8>| async move {
///                 shard::sleep(Duration::from_millis(5)).await;
///                 Answer::Send(line.len().to_string())
///             };
///             Some(Framed::new(LineDecoder::new(1024), Answered::new(LineEncoder::lf(), answer)))
///         })
///     })
///     .run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Answered<D: Decoder, R, E, A> {
    requests: Queue<D::Frame>,
    max_queued: usize,
    /// Requests answered at once (their answers still written in order).
    concurrency: usize,
    /// Moved into the connection's task when it opens.
    work: Option<(E, A)>,
    on_decode_error: Option<LastAnswer<D::Error, R>>,
    /// The last answer, after a decode error, for the task to write after the others.
    last: Rc<Cell<Option<R>>>,
    /// Part of a request is buffered (its head arrived, say, and its body is coming).
    partial: bool,
    /// The engine drains: take no new request once the one arriving is whole.
    draining: bool,
    /// Makes an interim answer from the decoder after a read.
    interim: Option<Interim<D>>,
    /// An interim answer that waits for the answers before it; dropped when the request it
    /// is for arrives whole first.
    interim_owed: Rc<RefCell<Option<Vec<u8>>>>,
    /// The interim answer for the request arriving now went out.
    interim_sent: bool,
    /// The task is answering a request (taken from the queue, its answer not written yet).
    busy: Rc<Cell<bool>>,
    /// How long a request may take to arrive whole, and the last answer when it does not.
    request_timeout: Option<(Duration, TimeoutAnswer<R>)>,
    /// The timer of the request arriving now.
    timer: Option<JoinHandle<()>>,
    /// At the peer's EOF, drop the answers in the making and close.
    cancel_at_eof: bool,
    /// How long an idle connection waits at the drain for a request on its way.
    drain_grace: Option<Duration>,
    /// `timer` is the drain grace of an idle connection.
    in_grace: bool,
    /// Marks the last answer before the connection closes.
    closing: Option<Box<dyn Fn(R) -> R>>,
    _answers: PhantomData<fn() -> R>,
}

impl<D: Decoder, R, E, A> fmt::Debug for Answered<D, R, E, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answered")
            .field("queued", &self.requests.len())
            .field("max_queued", &self.max_queued)
            .finish_non_exhaustive()
    }
}

/// Makes the answer to each request, for [`Answered`]: the closure given to
/// [`Answered::new`] (of the request) or to [`Answered::with_transport`] (of the request and
/// its connection), wrapped in [`ByRequest`] or [`WithTransport`].
pub trait MakeAnswer<Req> {
    /// The answer in the making.
    type Future: Future;

    /// Starts making the answer to `request`, which came on `transport`.
    fn make(&mut self, request: Req, transport: &Transport) -> Self::Future;
}

/// Answers made from the request alone ([`Answered::new`]).
#[derive(Debug, Clone)]
pub struct ByRequest<F>(F);

impl<Req, F: FnMut(Req) -> Fut, Fut: Future> MakeAnswer<Req> for ByRequest<F> {
    type Future = Fut;

    fn make(&mut self, request: Req, _transport: &Transport) -> Fut {
        (self.0)(request)
    }
}

/// Answers made from the request and its connection ([`Answered::with_transport`]).
#[derive(Debug, Clone)]
pub struct WithTransport<F>(F);

impl<Req, F: FnMut(Req, &Transport) -> Fut, Fut: Future> MakeAnswer<Req> for WithTransport<F> {
    type Future = Fut;

    fn make(&mut self, request: Req, transport: &Transport) -> Fut {
        (self.0)(request, transport)
    }
}

impl<D: Decoder, R, E, F> Answered<D, R, E, ByRequest<F>> {
    /// Requests answered by `answer`, whose answers `encoder` writes.
    pub fn new<Fut>(encoder: E, answer: F) -> Self
    where
        F: FnMut(D::Frame) -> Fut,
        Fut: Future<Output = Answer<R>>,
    {
        Self::made_by(encoder, ByRequest(answer))
    }
}

impl<D: Decoder, R, E, F> Answered<D, R, E, WithTransport<F>> {
    /// Requests answered by `answer`, which also gets the connection they came on: to write
    /// to it besides the answers (a subscription's messages, between answers), or to keep it
    /// in the shard's state for others to write to. A task that keeps it writes to a peer
    /// that may read slowly, so it awaits [`Transport::writable`] between writes. The
    /// answers `answer` returns are written with `encoder`, in order, as with [`new`](Answered::new);
    /// what the future writes through the transport itself is not in that order (with a
    /// [`concurrency`](Self::concurrency) above 1 it overtakes the answers still in the making
    /// before it): an answer written piece by piece is an [`Answer::Stream`].
    pub fn with_transport<Fut>(encoder: E, answer: F) -> Self
    where
        F: FnMut(D::Frame, &Transport) -> Fut,
        Fut: Future<Output = Answer<R>>,
    {
        Self::made_by(encoder, WithTransport(answer))
    }
}

impl<D: Decoder, R, E, A> Answered<D, R, E, A> {
    /// Requests answered by `make`, whose answers `encoder` writes.
    fn made_by(encoder: E, make: A) -> Self {
        Self {
            requests: Queue::new(),
            max_queued: DEFAULT_MAX_QUEUED,
            concurrency: 1,
            work: Some((encoder, make)),
            on_decode_error: None,
            last: Rc::new(Cell::new(None)),
            partial: false,
            draining: false,
            interim: None,
            interim_owed: Rc::new(RefCell::new(None)),
            interim_sent: false,
            busy: Rc::new(Cell::new(false)),
            request_timeout: None,
            timer: None,
            cancel_at_eof: false,
            drain_grace: None,
            in_grace: false,
            closing: None,
            _answers: PhantomData,
        }
    }

    /// Requests that may wait before the connection stops reading (at least 1; default
    /// 64): what a client that pipelines faster than its requests are answered may queue.
    #[must_use]
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n.max(1);
        self
    }

    /// Up to `n` requests (at least 1; default 1) answered at once: the next request's
    /// `answer` starts while earlier ones still wait (on a backend, say), and the answers are
    /// still written in the order the requests came. For a gateway whose clients pipeline
    /// requests to a slow upstream. An answer that closes the connection drops the answers
    /// to the requests after it, even those already worked on.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// After bytes that do not decode, `last` may make a final answer from the error,
    /// written after the answers to the requests before it; then the connection closes.
    #[must_use]
    pub fn on_decode_error(mut self, last: impl FnOnce(D::Error) -> Option<R> + 'static) -> Self {
        self.on_decode_error = Some(Box::new(last));
        self
    }

    /// After each read, `interim` may make an interim answer from the decoder's state (the
    /// request arriving now): HTTP's `100 Continue`, with
    /// `|d: &RequestDecoder| d.expects_continue().then(|| CONTINUE.to_vec())`
    /// ([`RequestDecoder::expects_continue`](crate::http::RequestDecoder::expects_continue)).
    /// It is written once per request, as soon as every request received before it is
    /// answered (at once, or right after the last of their answers), and dropped if the
    /// request arrives whole first.
    #[must_use]
    pub fn interim(mut self, interim: impl FnMut(&D) -> Option<Vec<u8>> + 'static) -> Self {
        self.interim = Some(Box::new(interim));
        self
    }

    /// A request must arrive whole within `after` of its first bytes: otherwise reading
    /// stops, the requests before it are answered, then `last` (an HTTP 408, say) if it makes
    /// an answer, and the connection closes. Protects against clients that trickle a request
    /// (slowloris); an idle connection between requests is the engine's idle timeout's.
    #[must_use]
    pub fn request_timeout(mut self, after: Duration, last: impl Fn() -> Option<R> + 'static) -> Self {
        self.request_timeout = Some((after, Rc::new(last)));
        self
    }

    /// At the peer's EOF, the answers in the making and the requests not answered yet are
    /// dropped, and the connection closes once the answers written are flushed: a client that
    /// hangs up cancels what it asked for (a long poll, a call upstream) instead of holding
    /// its socket, in CLOSE-WAIT, until every answer is made. A stream in progress is cut
    /// short.
    ///
    /// Off by default: weft answers what was received before the EOF, for a client that
    /// half-closes after its last request (`shutdown(SHUT_WR)`) and then reads its answers,
    /// and TCP does not tell it from one that closed. hyper chooses the other way by default
    /// (`http1_half_close(false)`: a read EOF closes the connection, dropping the response
    /// in the making); this option is that behaviour.
    #[must_use]
    pub fn cancel_at_eof(mut self) -> Self {
        self.cancel_at_eof = true;
        self
    }

    /// At the drain, a connection with no request in progress waits `grace` for one its
    /// client may be sending already (a keep-alive client writes its next request while the
    /// server decides to close): a request that arrives within it is answered (the answer
    /// function sees [`is_draining`](crate::shard::is_draining), and an HTTP one says
    /// `Connection: close`), then the connection closes; one that began arriving gets the
    /// request timeout. Without it (the default) an idle connection closes at once, and a
    /// request its client sent meanwhile is lost, the race of every server's restart. Each
    /// connection idle at a drain then holds it up to `grace`.
    #[must_use]
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = Some(grace);
        self
    }

    /// Marks the last answer: once no request will come (the drain, the peer's EOF) and
    /// this answer is the last to write, it goes through `mark` and the connection closes
    /// after it. HTTP's is [`Response::close`](crate::http::Response::close)
    /// (`Connection: close`: the client sends nothing more on this connection). An answer
    /// function that closed every answer itself while draining, with `concurrency(n)`, would
    /// drop the answers made beside the first it closed, their work done; with this it
    /// answers as usual and the last answer says it is the last.
    #[must_use]
    pub fn last_answer(mut self, mark: impl Fn(R) -> R + 'static) -> Self {
        self.closing = Some(Box::new(mark));
        self
    }

    /// Stops reading and takes no more requests: those queued are answered, then the task
    /// closes the connection.
    fn finish(&self, t: &Transport) {
        take_no_more(&self.requests, t);
    }

    /// Starts the request timer when part of a request is buffered, and stops it when none is
    /// or the output is full (what is kept then includes whole requests held back, and the
    /// wait is the server's).
    fn time_request(&mut self, t: &Transport)
    where
        D::Frame: 'static,
        R: 'static,
    {
        if self.in_grace && self.partial {
            // A request began arriving within the drain grace: its own timer counts now.
            self.in_grace = false;
            if let Some(timer) = self.timer.take() {
                timer.abort();
            }
        }
        match (&self.request_timeout, self.partial && !t.is_output_full()) {
            (Some((after, last)), true) if self.timer.is_none() => {
                let (after, last) = (*after, last.clone());
                let (requests, answer, conn) = (self.requests.clone(), self.last.clone(), t.clone());
                self.timer = Some(spawn_serving(t, async move {
                    sleep(after).await;
                    tracing::debug!(peer = %conn.peer_addr(), "a request did not arrive whole within {after:?}");
                    answer.set(last());
                    take_no_more(&requests, &conn);
                }));
            }
            (_, false) => {
                if let Some(timer) = self.timer.take() {
                    timer.abort();
                }
            }
            _ => {}
        }
    }
}

impl<D, R, E, A> FrameHandler for Answered<D, R, E, A>
where
    D: Decoder + 'static,
    D::Frame: 'static,
    R: 'static,
    E: Encoder<R> + 'static,
    A: MakeAnswer<D::Frame> + 'static,
    A::Future: Future<Output = Answer<R>> + 'static,
{
    type Decoder = D;

    fn connection_made(&mut self, transport: &Transport) {
        let Some((mut encoder, mut make)) = self.work.take() else {
            return;
        };
        let (requests, last, max_queued) = (self.requests.clone(), self.last.clone(), self.max_queued);
        let (t, busy, owed) = (transport.clone(), self.busy.clone(), self.interim_owed.clone());
        let (concurrency, cancel_at_eof, closing) =
            (self.concurrency, self.cancel_at_eof, self.closing.take());
        spawn_serving(transport, async move {
            let mut work = InOrder::new(concurrency, busy, t.clone());
            let mut answer = |r| make.make(r, &t);
            loop {
                // A peer that does not read its answers gets no more until it does.
                t.writable().await;
                let Some(outcome) = work.next(&requests, &mut answer, &t).await else {
                    break;
                };
                if cancel_at_eof && !t.is_connected() {
                    // The peer hung up (or the connection is closing): the answer goes nowhere.
                    break;
                }
                let (close, written) = match outcome {
                    Answer::Send(r) => match closing.as_ref().filter(|_| is_last(&requests, &work, &last)) {
                        Some(mark) => (true, send(&t, &mut encoder, mark(r))),
                        None => (false, send(&t, &mut encoder, r)),
                    },
                    Answer::SendAndClose(r) => (true, send(&t, &mut encoder, r)),
                    Answer::Stream(s) => (
                        false,
                        work.stream(s, &mut encoder, &requests, &mut answer, &t).await,
                    ),
                    Answer::StreamAndClose(s) => (
                        true,
                        work.stream(s, &mut encoder, &requests, &mut answer, &t).await,
                    ),
                    Answer::Close => (true, true),
                    Answer::Nothing => (false, true),
                };
                if requests.is_empty()
                    && !work.is_busy()
                    && let Some(interim) = owed.borrow_mut().take()
                {
                    t.write(&interim);
                }
                if close || !written {
                    take_no_more(&requests, &t);
                    break;
                }
                // At or below half (several are taken at once with a concurrency above 1).
                // Not once the queue is closed; but a drain that waits for a request partly
                // received reads on until it is whole.
                if requests.len() <= max_queued / 2
                    && t.is_reading_paused()
                    && !requests.is_closed()
                    && t.is_connected()
                {
                    t.resume_reading();
                }
            }
            if let Some(r) = last.take()
                && let Err(e) = t.write_frame(&mut encoder, r)
            {
                tracing::warn!(peer = %t.peer_addr(), "the last answer could not be encoded ({e})");
            }
            t.lose_connection();
        })
        .detach();
    }

    fn frame_received(&mut self, request: D::Frame, t: &Transport) {
        // The request the interim answer was for is whole: it is answered instead.
        self.interim_owed.borrow_mut().take();
        self.interim_sent = false;
        if self.requests.push(request).is_ok() && self.requests.len() >= self.max_queued {
            t.pause_reading();
        }
        // The request partly received when the drain came is whole: the last one taken.
        if self.draining {
            self.finish(t);
        }
    }

    fn decode_failed(&mut self, error: D::Error, t: &Transport) {
        if let Some(f) = self.on_decode_error.take() {
            self.last.set(f(error));
        }
        self.finish(t);
    }

    fn read_decoded(&mut self, decoder: &D, buffered: usize, t: &Transport) {
        self.partial = buffered > 0 || decoder.in_frame();
        self.time_request(t);
        if self.draining && !self.partial {
            self.finish(t);
        }
        if let Some(f) = &mut self.interim
            && !self.interim_sent
            && let Some(interim) = f(decoder)
        {
            self.interim_sent = true;
            if self.requests.is_empty() && !self.busy.get() {
                t.write(&interim);
            } else {
                *self.interim_owed.borrow_mut() = Some(interim);
            }
        }
    }

    fn read_connection_lost(&mut self, t: &Transport) {
        if self.cancel_at_eof {
            t.lose_connection();
        }
        self.finish(t);
    }

    fn drain_requested(&mut self, t: &Transport) {
        self.draining = true;
        if self.partial {
            return;
        }
        match self.drain_grace {
            Some(grace) if self.requests.is_empty() && !self.busy.get() => {
                if let Some(timer) = self.timer.take() {
                    timer.abort();
                }
                let (requests, conn) = (self.requests.clone(), t.clone());
                self.in_grace = true;
                self.timer = Some(spawn_serving(t, async move {
                    sleep(grace).await;
                    take_no_more(&requests, &conn);
                }));
            }
            _ => self.finish(t),
        }
    }

    fn connection_lost(&mut self, _reason: &CloseReason) {
        self.requests.close();
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

/// The answers being worked on, oldest first: up to a limit of them run at once, and they
/// come out in the order their requests came.
struct InOrder<Fut: Future> {
    limit: usize,
    work: VecDeque<Work<Fut>>,
    /// The queue is closed and empty: no request will come.
    ended: bool,
    /// Shared with the protocol: answers are being made, or one is being written.
    busy: Rc<Cell<bool>>,
    /// The connection, whose idle timeout waits while answers are being made.
    transport: Transport,
    /// Held while busy.
    hold: Option<IdleHold>,
}

/// One request's answer: still being made, or made and waiting for those before it.
enum Work<Fut: Future> {
    Running(Pin<Box<Fut>>),
    Done(Fut::Output),
}

impl<Fut: Future> InOrder<Fut> {
    fn new(limit: usize, busy: Rc<Cell<bool>>, transport: Transport) -> Self {
        Self {
            limit,
            work: VecDeque::with_capacity(limit),
            ended: false,
            busy,
            transport,
            hold: None,
        }
    }

    /// Says whether answers are being made (or one written); the connection's idle timeout
    /// waits meanwhile.
    fn set_busy(&mut self, busy: bool) {
        self.busy.set(busy);
        if busy != self.hold.is_some() {
            self.hold = busy.then(|| self.transport.hold_idle());
        }
    }

    /// Answers are being made or wait to be written.
    fn is_busy(&self) -> bool {
        !self.work.is_empty()
    }

    /// The oldest request's answer, once made (the caller writes it before it awaits
    /// again, so it counts as busy until then); meanwhile the next requests' answers are
    /// started, up to the limit. `None` once the queue ended and every answer came out, or
    /// once the connection ended while answers were in the making (they are dropped: their
    /// writes would go nowhere). One at a time, the answer is awaited in place (no allocation
    /// per request).
    async fn next<Req>(
        &mut self,
        requests: &Queue<Req>,
        answer: &mut impl FnMut(Req) -> Fut,
        t: &Transport,
    ) -> Option<Fut::Output> {
        if self.limit == 1 {
            self.set_busy(false);
            let request = requests.pop().await?;
            self.set_busy(true);
            return until_closed(t, answer(request)).await;
        }
        let mut closed = pin!(t.closed());
        poll_fn(|cx| {
            let next = self.poll_next(cx, requests, answer);
            self.set_busy(self.is_busy() || matches!(next, Poll::Ready(Some(_))));
            // Only while answers are made: an idle connection waits on its queue alone.
            if next.is_pending() && self.is_busy() && closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            next
        })
        .await
    }

    /// Writes `streamed`, the oldest answer, in its turn: its head with `encoder`, then its
    /// body, while the answers after it are still made (up to the limit, the stream counting
    /// as one). False when it did not go through whole: the head was refused, the body
    /// failed, or the connection ended first (the body is dropped where it waits).
    async fn stream<Req, R, E: Encoder<R>>(
        &mut self,
        streamed: Streamed<R>,
        encoder: &mut E,
        requests: &Queue<Req>,
        answer: &mut impl FnMut(Req) -> Fut,
        t: &Transport,
    ) -> bool {
        let (head, body) = streamed.into_parts();
        if let Some(head) = head
            && !send(t, encoder, head)
        {
            return false;
        }
        let out = StreamWriter::new(t);
        let turn = out.handle();
        let mut body = body(out);
        let others = self.limit - 1;
        self.set_busy(true);
        let ended = until_closed(
            t,
            poll_fn(|cx| {
                let ended = body.as_mut().poll(cx);
                if ended.is_pending() {
                    self.advance(cx, requests, answer, others);
                }
                ended
            }),
        )
        .await;
        turn.end();
        match ended {
            Some(Ok(())) => true,
            // The connection's end, not the answer's failure.
            Some(Err(_)) if !t.is_connected() => false,
            Some(Err(e)) => {
                tracing::warn!(peer = %t.peer_addr(), "a streamed answer failed ({e}): the connection is closed after what was written");
                false
            }
            None => false,
        }
    }

    fn poll_next<Req>(
        &mut self,
        cx: &mut Context<'_>,
        requests: &Queue<Req>,
        answer: &mut impl FnMut(Req) -> Fut,
    ) -> Poll<Option<Fut::Output>> {
        self.advance(cx, requests, answer, self.limit);
        if matches!(self.work.front(), Some(Work::Done(_)))
            && let Some(Work::Done(out)) = self.work.pop_front()
        {
            return Poll::Ready(Some(out));
        }
        if self.ended && self.work.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Starts the answers to the requests waiting, up to `limit` in the making, and works on
    /// those in the making.
    fn advance<Req>(
        &mut self,
        cx: &mut Context<'_>,
        requests: &Queue<Req>,
        answer: &mut impl FnMut(Req) -> Fut,
        limit: usize,
    ) {
        while !self.ended && self.work.len() < limit {
            match requests.poll_pop(cx) {
                Poll::Ready(Some(request)) => self.work.push_back(Work::Running(Box::pin(answer(request)))),
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => break,
            }
        }
        for w in &mut self.work {
            if let Work::Running(f) = w
                && let Poll::Ready(out) = f.as_mut().poll(cx)
            {
                *w = Work::Done(out);
            }
        }
    }
}

/// `work`'s output, or `None` when the connection ends first (`work` is dropped where it
/// waits).
async fn until_closed<F: Future>(t: &Transport, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    let mut closed = pin!(t.closed());
    poll_fn(|cx| match work.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => closed.as_mut().poll(cx).map(|_| None),
    })
    .await
}

/// Writes `answer` with `encoder`; false (logged) when the encoder refused it.
fn send<R, E: Encoder<R>>(t: &Transport, encoder: &mut E, answer: R) -> bool {
    match t.write_frame(encoder, answer) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(peer = %t.peer_addr(), "an answer could not be encoded ({e}): the connection is closed");
            false
        }
    }
}

/// True when the answer just made is the last the connection will write: no request will
/// come, none waits, no other answer is in the making, and no last answer (a decode error's)
/// follows.
fn is_last<Req, Fut: Future, R>(requests: &Queue<Req>, work: &InOrder<Fut>, last: &Cell<Option<R>>) -> bool {
    if !(requests.is_closed() && requests.is_empty() && !work.is_busy()) {
        return false;
    }
    let after = last.take();
    let none = after.is_none();
    last.set(after);
    none
}

/// Stops reading and takes no more requests: those queued are still answered.
fn take_no_more<T>(requests: &Queue<T>, t: &Transport) {
    t.pause_reading();
    requests.close();
}
