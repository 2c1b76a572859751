//! In-memory adapters between `ohttp`'s async streaming state machines and veil's
//! sans-I/O sealing API, and the Binary HTTP varint.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

/// A boxed async byte source.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// A boxed async byte sink.
pub(crate) type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// An always-ready sink whose bytes can be taken out between writes.
#[derive(Clone, Default)]
pub(crate) struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    pub(crate) fn take(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock() {
            Ok(mut g) => {
                g.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            Err(_) => Poll::Ready(Err(io::Error::other("sink poisoned"))),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A source shared between a parser that owns its reader and the code that reads what
/// the parser leaves (the padding after a Binary HTTP message).
#[derive(Clone)]
pub(crate) struct SharedRead(Arc<Mutex<BoxRead>>);

impl SharedRead {
    pub(crate) fn new(inner: BoxRead) -> Self {
        Self(Arc::new(Mutex::new(inner)))
    }
}

impl AsyncRead for SharedRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock() {
            Ok(mut g) => g.as_mut().poll_read(cx, buf),
            Err(_) => Poll::Ready(Err(io::Error::other("source poisoned"))),
        }
    }
}

/// A reader that fails with [`io::ErrorKind::FileTooLarge`] once more than `limit` bytes
/// have been read, so an oversize stream is refused as such rather than as truncated.
pub(crate) struct Capped<R> {
    inner: R,
    left: usize,
}

impl<R> Capped<R> {
    pub(crate) fn new(inner: R, limit: usize) -> Self {
        Self { inner, left: limit }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Capped<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.left == 0 {
            // One byte more tells a stream that ends here from one that goes on.
            let mut probe = [0u8; 1];
            return match Pin::new(&mut self.inner).poll_read(cx, &mut probe) {
                Poll::Ready(Ok(0)) => Poll::Ready(Ok(0)),
                Poll::Ready(Ok(_)) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    "stream exceeds its size limit",
                ))),
                other => other,
            };
        }
        let max = buf.len().min(self.left);
        let res = Pin::new(&mut self.inner).poll_read(cx, buf.get_mut(..max).unwrap_or_default());
        if let Poll::Ready(Ok(n)) = res {
            self.left = self.left.saturating_sub(n);
        }
        res
    }
}

/// Append `v` as a QUIC variable-length integer (RFC 9000 §16), as Binary HTTP uses.
/// `min_len` forces a longer encoding (1, 2, 4 or 8), which RFC 9000 permits.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: u64, min_len: usize) {
    if v < (1 << 6) && min_len <= 1 {
        out.push(v as u8);
    } else if v < (1 << 14) && min_len <= 2 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < (1 << 30) && min_len <= 4 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&((v & ((1 << 62) - 1)) | (3 << 62)).to_be_bytes());
    }
}

/// The length of the shortest encoding of `v` as a QUIC variable-length integer.
pub(crate) fn varint_len(v: u64) -> usize {
    if v < (1 << 6) {
        1
    } else if v < (1 << 14) {
        2
    } else if v < (1 << 30) {
        4
    } else {
        8
    }
}

/// Append a length-prefixed byte string.
pub(crate) fn put_vec(out: &mut Vec<u8>, v: &[u8]) {
    put_varint(out, v.len() as u64, 1);
    out.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for (v, want) in [
            (0u64, &[0u8][..]),
            (63, &[0x3f]),
            (64, &[0x40, 0x40]),
            (16383, &[0x7f, 0xff]),
            (16384, &[0x80, 0, 0x40, 0]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v, 1);
            assert_eq!(out, want);
        }
        let mut out = Vec::new();
        put_varint(&mut out, 5, 2);
        assert_eq!(out, [0x40, 5]);
        for v in [0u64, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, 1 << 40] {
            let mut out = Vec::new();
            put_varint(&mut out, v, 1);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
