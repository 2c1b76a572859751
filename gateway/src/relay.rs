//! Bodies streamed through the gateway frame by frame, never buffered: the request body on
//! its way up (hashed as it passes, for the receipt's request digest, and size-limited),
//! and the response body on its way down (trailers included, where the streamed receipt
//! arrives).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use veil_attestation::bytes::Sha256Digest;

/// What the request body saw, shared with the handler.
#[derive(Default)]
pub struct Seen {
    /// The hash of every byte forwarded, once the body ended: see [`Seen::digest`].
    hashed: Option<Hashed>,
    /// Bytes forwarded.
    pub bytes: u64,
    /// The body went over the limit.
    pub too_large: bool,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("ended", &self.hashed.is_some())
            .field("bytes", &self.bytes)
            .field("too_large", &self.too_large)
            .finish()
    }
}

/// The request's hash: finished, or still to finish over the frames held back.
enum Hashed {
    Pending(Box<ring::digest::Context>, Vec<Bytes>),
    Done(Sha256Digest),
}

impl Seen {
    /// SHA-256 of every byte forwarded, once the body ended (`None` before, or when it
    /// went over the limit). Up to [`HASH_LATER_BYTES`] of it are hashed here, on first
    /// call, rather than as they passed: that work is off the request's path.
    pub fn digest(&mut self) -> Option<Sha256Digest> {
        let digest = match self.hashed.take()? {
            Hashed::Done(d) => d,
            Hashed::Pending(h, held) => {
                let mut h = *h;
                for b in &held {
                    h.update(b);
                }
                Sha256Digest::from_slice(h.finish().as_ref()).ok()?
            }
        };
        self.hashed = Some(Hashed::Done(digest));
        Some(digest)
    }
}

/// How many bytes of a request body are kept (shared, not copied) to be hashed once the
/// response has ended instead of as they pass; past that, the body is hashed as it passes.
pub const HASH_LATER_BYTES: usize = 64 << 10;

/// The client's request body, forwarded upstream.
pub struct RequestBody {
    inner: axum::body::Body,
    hasher: Option<ring::digest::Context>,
    /// Frames not hashed yet (at most [`HASH_LATER_BYTES`] in all).
    held: Vec<Bytes>,
    held_bytes: usize,
    max: u64,
    seen: Arc<Mutex<Seen>>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestBody")
    }
}

/// The request body was larger than allowed.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than allowed")]
pub struct TooLarge;

impl RequestBody {
    /// Wraps `inner`, refusing more than `max` bytes.
    #[must_use]
    pub fn new(inner: axum::body::Body, max: u64) -> (Self, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        (
            Self {
                inner,
                hasher: Some(ring::digest::Context::new(&ring::digest::SHA256)),
                held: Vec::new(),
                held_bytes: 0,
                max,
                seen: Arc::clone(&seen),
            },
            seen,
        )
    }

    /// Hashes `data` now, or keeps it for later while little is held.
    fn hash(&mut self, data: &Bytes) {
        let Some(h) = self.hasher.as_mut() else {
            return;
        };
        if self.held_bytes + data.len() <= HASH_LATER_BYTES {
            self.held_bytes += data.len();
            self.held.push(data.clone());
            return;
        }
        for b in self.held.drain(..) {
            h.update(&b);
        }
        self.held_bytes = 0;
        h.update(data);
    }

    fn finish(&mut self) {
        if let Some(h) = self.hasher.take()
            && let Ok(mut s) = self.seen.lock()
        {
            s.hashed = Some(Hashed::Pending(Box::new(h), std::mem::take(&mut self.held)));
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = {
                        let Ok(mut s) = this.seen.lock() else {
                            return Poll::Ready(Some(Err(Box::new(TooLarge))));
                        };
                        s.bytes = s.bytes.saturating_add(data.len() as u64);
                        if s.bytes > this.max {
                            s.too_large = true;
                        }
                        s.bytes
                    };
                    if total > this.max {
                        this.hasher = None;
                        this.held = Vec::new();
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    this.hash(data);
                    if this.inner.is_end_stream() {
                        this.finish();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.hasher.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once the response's trailers arrive, and when the response ends or is dropped.
pub trait ResponseWatcher: Send + Sized + 'static {
    /// The trailers, as they pass.
    fn trailers(&mut self, trailers: &http::HeaderMap);
    /// The body ended (`complete`) or was dropped early (client gone); `bytes` forwarded.
    /// Called once, as the last frame is handed on (before the connection writes it):
    /// work that need not delay the response belongs in a task spawned from here.
    fn finished(self, complete: bool, bytes: u64);
}

/// The backend's response body, forwarded to the client frame by frame.
pub struct ResponseBody<W: ResponseWatcher> {
    inner: hyper::body::Incoming,
    watcher: Option<W>,
    bytes: u64,
}

impl<W: ResponseWatcher> std::fmt::Debug for ResponseBody<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseBody")
    }
}

impl<W: ResponseWatcher> ResponseBody<W> {
    /// Wraps `inner`.
    pub fn new(inner: hyper::body::Incoming, watcher: W) -> Self {
        Self {
            inner,
            watcher: Some(watcher),
            bytes: 0,
        }
    }
}

impl<W: ResponseWatcher> Drop for ResponseBody<W> {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.finished(false, self.bytes);
        }
    }
}

impl<W: ResponseWatcher + Unpin> Body for ResponseBody<W> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes = this.bytes.saturating_add(d.len() as u64);
                } else if let Some(t) = frame.trailers_ref()
                    && let Some(mut w) = this.watcher.take()
                {
                    // Trailers end the body: the server may drop it without polling again,
                    // so the response is complete here.
                    w.trailers(t);
                    w.finished(true, this.bytes);
                }
                if this.inner.is_end_stream()
                    && let Some(w) = this.watcher.take()
                {
                    w.finished(true, this.bytes);
                }
            }
            Poll::Ready(None) => {
                if let Some(w) = this.watcher.take() {
                    w.finished(true, this.bytes);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
