//! [`Body`]: the body of a [`super::Request`] or [`super::Response`], held in a buffer
//! that is wiped when dropped, and, for an opened message, a view into the very buffer
//! it was decrypted in.
//!
//! Opening a whole message decrypts it in place; the body is then a range of that
//! buffer, between the Binary HTTP head and the trailer section, padding and tag.
//! Moving it to the front of the buffer (as a `Vec<u8>` body would need) costs a
//! `memmove` of the whole body; a `Body` keeps the range instead, and compacts only
//! when the caller asks for a `Vec` ([`Body::into_vec`]).

use std::fmt;
use std::ops::{Deref, DerefMut, Range};

use super::plain::PlainBuf;

/// The body of a message inside the channel: plaintext bytes, wiped when dropped.
///
/// Dereferences to `[u8]`. An opened body is a view into the buffer the message was
/// opened in (which it owns, and wipes whole on drop: head, body, trailers, padding);
/// a body made from a `Vec<u8>` owns that vector. `Debug` prints the length only.
#[derive(Default)]
pub struct Body {
    buf: PlainBuf,
    /// The body's bytes in `buf`; `range.end <= buf.len()`.
    range: Range<usize>,
}

impl Body {
    /// An empty body.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The body `buf[range]`, keeping (and eventually wiping) the rest of `buf`.
    /// `range` must lie within `buf`; an out-of-bounds range gives an empty body.
    pub(crate) fn view(buf: PlainBuf, range: Range<usize>) -> Self {
        let range = if range.start <= range.end && range.end <= buf.len() {
            range
        } else {
            0..0
        };
        Self { buf, range }
    }

    /// The body as a vector: moved to the front of the buffer it is in (a `memmove`
    /// when it is a view that does not start there; no allocation), the rest of the
    /// buffer wiped. The vector is no longer wiped on drop: wipe it yourself (for
    /// example with `zeroize::Zeroizing`) if it matters.
    #[must_use]
    pub fn into_vec(mut self) -> Vec<u8> {
        let range = self.range.clone();
        std::mem::take(&mut self.buf).into_range(range)
    }

    /// Append `bytes`. A view first drops (and wipes) whatever follows it in its
    /// buffer; a buffer too small moves to a larger one and the old one is wiped.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.truncate_buf();
        self.buf.extend_secure(bytes);
        self.range.end = self.buf.len();
    }

    /// Drop (wiping) the bytes after the body, so that it ends its buffer.
    fn truncate_buf(&mut self) {
        if self.buf.len() > self.range.end {
            if let Some(rest) = self.buf.get_mut(self.range.end..) {
                zeroize::Zeroize::zeroize(rest);
            }
            self.buf.truncate(self.range.end);
        }
    }

    /// The size of the allocation that holds the body (at least its length).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Where the body starts in the buffer it was opened in (0 for an owned body).
    #[cfg(test)]
    pub(crate) fn offset(&self) -> usize {
        self.range.start
    }
}

impl Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.get(self.range.clone()).unwrap_or_default()
    }
}

impl DerefMut for Body {
    fn deref_mut(&mut self) -> &mut [u8] {
        let range = self.range.clone();
        self.buf.get_mut(range).unwrap_or_default()
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Body {
    /// Take over `v` (which will be wiped).
    fn from(v: Vec<u8>) -> Self {
        let range = 0..v.len();
        Self {
            buf: PlainBuf::from(v),
            range,
        }
    }
}

impl From<&[u8]> for Body {
    /// A copy of `bytes`, in an allocation of exactly their size.
    fn from(bytes: &[u8]) -> Self {
        Self {
            buf: PlainBuf::copy_of(bytes),
            range: 0..bytes.len(),
        }
    }
}

impl Clone for Body {
    /// A copy of the body's bytes alone (not of the rest of the buffer).
    fn clone(&self) -> Self {
        Self::from(&self[..])
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.len())
    }
}

impl std::io::Write for Body {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Eq for Body {}

impl PartialEq<[u8]> for Body {
    fn eq(&self, other: &[u8]) -> bool {
        self[..] == *other
    }
}

impl PartialEq<&[u8]> for Body {
    fn eq(&self, other: &&[u8]) -> bool {
        self[..] == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Body {
    fn eq(&self, other: &[u8; N]) -> bool {
        self[..] == other[..]
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Body {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<Vec<u8>> for Body {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<Body> for Vec<u8> {
    fn eq(&self, other: &Body) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<Body> for [u8] {
    fn eq(&self, other: &Body) -> bool {
        *self == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_its_range_and_compacts_on_request() {
        let buf = PlainBuf::copy_of(b"headBODYtail");
        let b = Body::view(buf, 4..8);
        assert_eq!(b, b"BODY");
        assert_eq!(&b[..], b"BODY");
        assert_eq!(b.offset(), 4);
        assert_eq!(b.clone(), b"BODY");
        assert_eq!(b.clone().offset(), 0, "a clone copies the body alone");
        assert_eq!(format!("{b:?}"), "<4 bytes redacted>");
        assert_eq!(b.into_vec(), b"BODY");
        // Out of bounds: empty, no panic.
        assert!(Body::view(PlainBuf::copy_of(b"ab"), 1..9).is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = Body::view(PlainBuf::copy_of(b"ab"), 2..1);
        assert!(reversed.is_empty());
    }

    #[test]
    fn extending_a_view_drops_what_follows_it() {
        let mut b = Body::view(PlainBuf::copy_of(b"..ab..."), 2..4);
        b.extend_from_slice(b"cd");
        assert_eq!(b, b"abcd");
        std::io::Write::write_all(&mut b, &[b'e'; 5000]).unwrap();
        assert_eq!(b.len(), 5004);
        assert_eq!(b.offset(), 2);
        let v = b.into_vec();
        assert_eq!(&v[..4], b"abcd");
        assert_eq!(v.len(), 5004);
    }

    #[test]
    fn owned_bodies_and_comparisons() {
        let b = Body::from(b"xyz".to_vec());
        assert_eq!(b.offset(), 0);
        assert_eq!(b, b"xyz".to_vec());
        assert_eq!(b"xyz".to_vec(), b);
        assert_eq!(b, &b"xyz"[..]);
        assert_eq!(Body::new(), b"");
        assert_eq!(Body::new().into_vec(), b"");
        let mut m = Body::from(&b"abc"[..]);
        m[0] = b'A';
        assert_eq!(m, b"Abc");
    }
}
