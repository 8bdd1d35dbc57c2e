//! The request deadline of [`serve()`](super::serve): a request's headers and body must have
//! arrived within `request_timeout` of its first byte.
//! It must not answer the request: the route that reads the body turns [`RequestDeadline`] into
//! `408 request_timeout`.
//!
//! [`ClockedIo`] notes when the first byte of each request arrives on a connection;
//! [`DeadlineBody`] ends the request's body with [`RequestDeadline`] once the deadline passes,
//! however the bytes trickle in.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error a request body ends with when its deadline passes. Handlers that read bodies with
/// this module's helpers answer `408 request_timeout`; the connection is then closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestDeadline;

impl fmt::Display for RequestDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request was not complete by its deadline")
    }
}

impl Error for RequestDeadline {}

impl RequestDeadline {
    /// Whether `err` or any error in its source chain is a [`RequestDeadline`].
    pub(crate) fn caused(err: &(dyn Error + 'static)) -> bool {
        let mut next = Some(err);
        while let Some(err) = next {
            if err.is::<Self>() {
                return true;
            }
            next = err.source();
        }
        false
    }
}

#[derive(Debug)]
struct ClockState {
    /// Between requests: the next byte read starts a request.
    between: bool,
    /// When the request not yet handed to the service started.
    started: Option<Instant>,
    /// Whether the current request's body hit its deadline.
    expired: bool,
}

/// One connection's request clock, shared by its [`ClockedIo`] and its service.
#[derive(Debug)]
pub(super) struct RequestClock(Mutex<ClockState>);

impl RequestClock {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(ClockState {
            between: true,
            started: None,
            expired: false,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        crate::lock_unpoisoned(&self.0)
    }

    fn saw_bytes(&self) {
        let mut state = self.state();
        if state.between {
            state.between = false;
            state.started = Some(Instant::now());
        }
    }

    /// The service got a request: when it started (now, for a request whose bytes arrived
    /// while the previous one was being answered).
    pub(super) fn begin(&self) -> Instant {
        let mut state = self.state();
        state.between = false;
        state.expired = false;
        state.started.take().unwrap_or_else(Instant::now)
    }

    /// The service answered; returns whether the request's body hit its deadline.
    pub(super) fn end(&self) -> bool {
        let mut state = self.state();
        state.between = true;
        std::mem::take(&mut state.expired)
    }

    fn expire(&self) {
        self.state().expired = true;
    }
}

/// A connection's stream, noting the arrival of each request's first byte in its clock.
#[derive(Debug)]
pub(super) struct ClockedIo<S> {
    inner: S,
    clock: Arc<RequestClock>,
}

impl<S> ClockedIo<S> {
    pub(super) fn new(inner: S, clock: Arc<RequestClock>) -> Self {
        Self { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClockedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.saw_bytes();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClockedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that ends with [`RequestDeadline`] once `deadline` passes. The timer is set
/// only when the body is first polled, so a request without a body costs nothing.
pub(super) struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    clock: Arc<RequestClock>,
    done: bool,
}

impl DeadlineBody {
    pub(super) fn new(inner: Incoming, deadline: Instant, clock: Arc<RequestClock>) -> Self {
        Self {
            inner,
            deadline: tokio::time::Instant::from_std(deadline),
            timer: None,
            clock,
            done: false,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.done = true;
            this.clock.expire();
            return Poll::Ready(Some(Err(Box::new(RequestDeadline))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_starts_at_a_requests_first_byte_and_reports_an_expired_body_once() {
        let clock = RequestClock::new();
        let before = Instant::now();
        clock.saw_bytes();
        let started = clock.begin();
        assert!(started >= before);
        // Bytes of the same request (its body) do not restart it.
        clock.saw_bytes();
        clock.expire();
        assert!(clock.end(), "the body expired");
        // The next request starts at its own first byte, and has not expired.
        clock.saw_bytes();
        let next = clock.begin();
        assert!(next >= started);
        assert!(!clock.end());
    }

    #[test]
    fn a_deadline_is_found_in_an_error_chain() {
        let boxed: Box<dyn Error + Send + Sync> = Box::new(RequestDeadline);
        let wrapped = axum::Error::new(boxed);
        assert!(RequestDeadline::caused(&wrapped));
        let other = io::Error::other("reset");
        assert!(!RequestDeadline::caused(&other));
    }
}
