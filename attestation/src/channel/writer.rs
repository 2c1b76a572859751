//! Writing a whole message's body straight into the buffer it will be sealed in.
//!
//! [`super::Target::seal_request`] and [`super::ResponseSealer::seal`] take a finished
//! [`super::Request`] / [`super::Response`] and copy its body into the buffer that is
//! then sealed in place. A [`RequestWriter`] ([`super::Target::request_writer`]) or a
//! [`ResponseWriter`] ([`super::ResponseSealer::writer`]) is that buffer, handed to the
//! application first: it is made knowing the message's head (method, path and header
//! fields, or status and header fields) and the body's expected size, so it reserves
//!
//! - *headroom*: the OHTTP prefix (request header and `enc`, or the response nonce) and
//!   the Binary HTTP head (framing, control data, header section, content length),
//! - room for the body, and
//! - *tailroom*: the trailer section, the padding to the message's bucket and the AEAD
//!   tag,
//!
//! in one allocation. The application writes the body into it (`extend_from_slice`,
//! or `std::io::Write`, for example `serde_json::to_writer`), and `seal` writes the
//! head into the headroom and the tail after the body, and seals in place. The
//! plaintext is never copied; the result is byte for byte the message the copying
//! path would seal.
//!
//! The headroom is exact for the size announced; a body whose length needs a longer
//! or shorter length varint than that size (a body under 64 bytes, 16 KiB, or 1 GiB
//! when announced on the other side of that bound) is moved once, within the buffer,
//! to fit. A body larger than announced grows the buffer (to at least twice its size,
//! wiping the old one); so may the padding at `seal`. Either is correct, only slower.
//!
//! A writer holds plaintext: it is wiped when dropped (or sealed), including whatever
//! a growth left behind, and its `Debug` shows lengths only.

use std::fmt;

use super::ChannelError;
use super::client::{PendingResponse, Target};
use super::message::{
    Headers, REQUEST_TAIL, Request, final_status, put_request_head, put_response_head,
    put_response_tail, request_head_len, response_head_len, response_tail_len,
};
use super::padding;
use super::plain::PlainBuf;
use super::server::ResponseSealer;

/// The most body a writer reserves room for up front, whatever the hint (more grows).
const MAX_RESERVE: usize = 64 << 20;

/// The buffer of a whole message being written: `prefix` bytes of OHTTP prefix, then
/// the headroom for the Binary HTTP head, then the body (`buf[body_start..]`).
struct InPlace {
    buf: PlainBuf,
    prefix: usize,
    body_start: usize,
    tag: usize,
}

impl InPlace {
    /// Room for an OHTTP prefix of `prefix` bytes, a head of `head` bytes, a body of
    /// `size_hint` bytes and a tail of `tail` bytes, padded, and a tag of `tag` bytes.
    fn new(prefix: usize, head: usize, size_hint: usize, tail: usize, tag: usize) -> Self {
        let size_hint = size_hint.min(MAX_RESERVE);
        let message = head.saturating_add(size_hint).saturating_add(tail);
        let capacity = prefix
            .saturating_add(padding::bucket(message))
            .saturating_add(tag);
        let body_start = prefix + head;
        let mut buf = PlainBuf::with_capacity(capacity.max(body_start));
        buf.resize(body_start, 0);
        Self {
            buf,
            prefix,
            body_start,
            tag,
        }
    }

    fn body(&self) -> &[u8] {
        self.buf.get(self.body_start..).unwrap_or_default()
    }

    fn body_len(&self) -> usize {
        self.buf.len() - self.body_start
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_secure(bytes);
    }

    /// Wipe the body written so far and start again.
    fn clear(&mut self) {
        if let Some(body) = self.buf.get_mut(self.body_start..) {
            zeroize::Zeroize::zeroize(body);
        }
        self.buf.truncate(self.body_start);
    }

    /// Lay the message out for sealing in place: `head` just before the body (moving
    /// the body once when the headroom does not fit it exactly), `tail` and zero
    /// padding after it, room for the tag. Returns the buffer: the OHTTP prefix (to
    /// be overwritten), then the padded message.
    fn finish(mut self, head: &[u8], tail: &[u8]) -> PlainBuf {
        let body = self.body_len();
        let start = self.prefix + head.len();
        let padded = padding::bucket(head.len() + body + tail.len());
        let total = self.prefix + padded + self.tag;
        // Exactly the room needed, in one allocation (a growth moves and wipes).
        self.buf.reserve_total_secure(total);
        if start > self.body_start {
            // Headroom too small: move the body back.
            let shift = start - self.body_start;
            let old_len = self.buf.len();
            self.buf.resize(old_len + shift, 0);
            self.buf.copy_within(self.body_start..old_len, start);
        } else if start < self.body_start {
            // Headroom too large: move the body forward and wipe what it left behind.
            let old_len = self.buf.len();
            self.buf.copy_within(self.body_start..old_len, start);
            let new_len = start + body;
            if let Some(stale) = self.buf.get_mut(new_len..) {
                zeroize::Zeroize::zeroize(stale);
            }
            self.buf.truncate(new_len);
        }
        if let Some(room) = self.buf.get_mut(self.prefix..start) {
            room.copy_from_slice(head);
        }
        self.buf.extend_from_slice(tail);
        self.buf.resize(self.prefix + padded, 0);
        debug_assert!(self.buf.capacity() >= total);
        self.buf
    }
}

/// The head and tail of a message, encoded into wiped buffers.
fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> PlainBuf {
    let mut out = PlainBuf::with_capacity(64);
    f(&mut out);
    out
}

/// A whole request whose body is written straight into the buffer it will be sealed
/// in ([`Target::request_writer`]).
///
/// Made knowing the request's head (method, path, header fields) and the body's
/// expected size, it is one allocation with headroom for the OHTTP prefix (request
/// header and `enc`) and the Binary HTTP head (framing, control data, header section,
/// content length), room for the body, and tailroom for the (empty) trailer section,
/// the padding to the message's bucket and the AEAD tag. The body is written into it
/// ([`RequestWriter::extend_from_slice`], or [`std::io::Write`], for example
/// `serde_json::to_writer`); [`RequestWriter::seal`] writes the head into the headroom
/// and the tail after the body and seals in place: byte for byte the message
/// [`Target::seal_request`] would seal, without the copy of the body.
///
/// The headroom is exact for the announced size. A body whose length takes a longer
/// or shorter length varint (it crosses 64 B, 16 KiB or 1 GiB the other way from the
/// announced size) is moved once within the buffer to fit; a body larger than
/// announced grows the buffer (wiping the old one). Both are correct, only slower.
///
/// It holds plaintext: wiped when dropped or sealed (and whatever a growth left
/// behind); `Debug` shows lengths only.
///
/// ```
/// use std::io::Write;
/// use veil_attestation::channel::{AeadKind, Headers, Limits, ServerKeys, Target};
///
/// let keys = ServerKeys::generate()?;
/// let target = Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)?;
/// let headers = Headers::new().with("content-type", "application/json")?;
/// let mut w = target.request_writer("POST", "/v1/embeddings", headers, 64)?;
/// write!(w, "{{\"input\":\"{}\"}}", "hello").unwrap();
/// let (sealed, _pending) = w.seal()?;
/// let (request, _sealer) = keys.open_request(&target.key_id(), &sealed, &Limits::default())?;
/// assert_eq!(request.body, br#"{"input":"hello"}"#);
/// # Ok::<(), veil_attestation::channel::ChannelError>(())
/// ```
pub struct RequestWriter {
    client: ohttp::ClientRequest,
    method: String,
    path: String,
    headers: Headers,
    buf: InPlace,
}

impl fmt::Debug for RequestWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestWriter")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes redacted>", self.len()))
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Start a whole request (`message/ohttp-req`) whose body the caller writes
    /// straight into the buffer it will be sealed in: see [`RequestWriter`].
    /// `size_hint` is the body's expected length; the buffer is sized for it.
    pub fn request_writer(
        &self,
        method: &str,
        path: &str,
        headers: Headers,
        size_hint: usize,
    ) -> Result<RequestWriter, ChannelError> {
        Request::check_control(method, path)?;
        let client = self.ohttp_client()?;
        let head = request_head_len(method, path, &headers, size_hint);
        let buf = InPlace::new(
            client.encapsulation_prefix_len(),
            head,
            size_hint,
            REQUEST_TAIL.len(),
            client.tag_len(),
        );
        Ok(RequestWriter {
            client,
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
            buf,
        })
    }
}

impl RequestWriter {
    /// Append `bytes` to the body.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
    }

    /// The body written so far.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        self.buf.body()
    }

    /// Length of the body written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.body_len()
    }

    /// Whether no body has been written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wipe the body written so far, to write another.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Seal the request: byte for byte what [`Target::seal_request`] seals for the same
    /// request, without copying the body.
    pub fn seal(self) -> Result<(Vec<u8>, PendingResponse), ChannelError> {
        let body = self.buf.body_len();
        let head = encoded(|o| put_request_head(o, &self.method, &self.path, &self.headers, body));
        let mut buf = self.buf.finish(&head, REQUEST_TAIL);
        let inner = self
            .client
            .encapsulate_in_place(&mut buf)
            .map_err(|_| ChannelError::Crypto("request encapsulation"))?;
        Ok((buf.into_sealed(), PendingResponse { inner }))
    }
}

impl std::io::Write for RequestWriter {
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

/// The whole response to a request, its body written straight into the buffer it will
/// be sealed in ([`ResponseSealer::writer`]); the response's counterpart of
/// [`RequestWriter`] (headroom for the response nonce and the head: status, header
/// section, content length; tailroom for the trailer section, padding and tag).
/// [`ResponseWriter::seal`] seals byte for byte what [`ResponseSealer::seal`] would.
pub struct ResponseWriter {
    sealer: ohttp::ServerResponse,
    status: u16,
    headers: Headers,
    trailers: Headers,
    buf: InPlace,
}

impl fmt::Debug for ResponseWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseWriter")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes redacted>", self.len()))
            .field("trailers", &self.trailers)
            .finish_non_exhaustive()
    }
}

impl ResponseSealer {
    /// Start the response (`message/ohttp-res`), its body written by the caller
    /// straight into the buffer it will be sealed in: see [`ResponseWriter`].
    /// `size_hint` is the body's expected length; the buffer is sized for it.
    pub fn writer(
        self,
        status: u16,
        headers: Headers,
        size_hint: usize,
    ) -> Result<ResponseWriter, ChannelError> {
        let status = final_status(u64::from(status))?.code();
        let head = response_head_len(status, &headers, size_hint);
        let buf = InPlace::new(
            self.inner.encapsulation_prefix_len(),
            head,
            size_hint,
            response_tail_len(&Headers::new()),
            self.inner.tag_len(),
        );
        Ok(ResponseWriter {
            sealer: self.inner,
            status,
            headers,
            trailers: Headers::new(),
            buf,
        })
    }
}

impl ResponseWriter {
    /// Append `bytes` to the body.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
    }

    /// The body written so far.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        self.buf.body()
    }

    /// Length of the body written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.body_len()
    }

    /// Whether no body has been written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wipe the body written so far, to write another (an error, say).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Change the status (every final status has the same encoded length, so the
    /// headroom still fits).
    pub fn set_status(&mut self, status: u16) -> Result<(), ChannelError> {
        self.status = final_status(u64::from(status))?.code();
        Ok(())
    }

    /// The trailer fields, written after the body (no headroom needed).
    pub fn trailers_mut(&mut self) -> &mut Headers {
        &mut self.trailers
    }

    /// Seal the response: byte for byte what [`ResponseSealer::seal`] seals for the
    /// same response, without copying the body.
    pub fn seal(self) -> Result<Vec<u8>, ChannelError> {
        let body = self.buf.body_len();
        let head = encoded(|o| put_response_head(o, self.status, &self.headers, body));
        let tail = encoded(|o| put_response_tail(o, &self.trailers));
        let mut buf = self.buf.finish(&head, &tail);
        self.sealer
            .encapsulate_in_place(&mut buf)
            .map_err(|_| ChannelError::Crypto("response encapsulation"))?;
        Ok(buf.into_sealed())
    }
}

impl std::io::Write for ResponseWriter {
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

#[cfg(test)]
mod tests {
    use super::super::Response;
    use super::*;

    fn headers() -> Headers {
        Headers::new()
            .with("content-type", "application/json")
            .unwrap()
            .with("authorization", "Bearer x")
            .unwrap()
    }

    /// The plaintext a writer lays out, next to what the copying path encodes.
    fn request_layout(hint: usize, body: &[u8]) -> (PlainBuf, PlainBuf) {
        let h = headers();
        let head = request_head_len("POST", "/v1/chat/completions", &h, hint);
        let mut w = InPlace::new(39, head, hint, REQUEST_TAIL.len(), 16);
        w.extend(body);
        let encoded_head = encoded(|o| {
            put_request_head(o, "POST", "/v1/chat/completions", &h, body.len());
        });
        let ours = w.finish(&encoded_head, REQUEST_TAIL);
        let mut r = Request::new("POST", "/v1/chat/completions", body.to_vec());
        r.headers = h;
        let theirs = r.encode_padded(bhttp::Mode::KnownLength, 39, 16).unwrap();
        (ours, theirs)
    }

    #[test]
    fn request_layout_is_the_copying_encoding() {
        // Exact hints, and hints on the other side of a varint bound (the fallback,
        // both ways), empty and 4 MiB bodies.
        for (hint, len) in [
            (0, 0),
            (10, 10),
            (3000, 3000),
            (10, 100),
            (100, 10),
            (0, 20_000),
            (20_000, 0),
            (1 << 20, 1 << 20),
            (4 << 20, 4 << 20),
            (100, 4 << 20),
        ] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (ours, theirs) = request_layout(hint, &body);
            assert_eq!(ours.len(), theirs.len(), "hint {hint} len {len}");
            assert!(ours[39..] == theirs[39..], "hint {hint} len {len}");
            assert!(ours.capacity() >= ours.len() + 16, "room for the tag");
        }
    }

    #[test]
    fn exact_hint_allocates_once_and_the_tag_fits() {
        let (ours, _) = request_layout(1 << 20, &vec![1; 1 << 20]);
        assert_eq!(ours.capacity(), ours.len() + 16);
    }

    #[test]
    fn response_layout_is_the_copying_encoding() {
        for (hint, len) in [(0, 0), (5, 5), (5, 70), (70, 5), (1 << 20, 1 << 20)] {
            let body: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            let trailers = Headers::new().with("veil-receipt", "r").unwrap();
            let h = headers();
            let head = response_head_len(201, &h, hint);
            let mut w = InPlace::new(16, head, hint, 1, 16);
            w.extend(&body);
            let ours = w.finish(
                &encoded(|o| put_response_head(o, 201, &h, len)),
                &encoded(|o| put_response_tail(o, &trailers)),
            );
            let mut r = Response::new(201, body.clone());
            r.headers = h;
            r.trailers = trailers;
            let theirs = r.encode_padded(16, 16).unwrap();
            assert!(ours[16..] == theirs[16..], "hint {hint} len {len}");
        }
    }

    #[test]
    fn absurd_hints_reserve_a_bounded_buffer() {
        let mut w = InPlace::new(4, 3, usize::MAX, 1, 16);
        assert!(w.buf.capacity() <= MAX_RESERVE * 2);
        w.extend(b"ok");
        assert_eq!(w.body(), b"ok");
    }

    #[test]
    fn clear_restarts_the_body() {
        let mut w = InPlace::new(4, 3, 10, 1, 16);
        w.extend(b"secret");
        w.clear();
        assert_eq!(w.body_len(), 0);
        assert_eq!(w.buf.len(), 7);
        w.extend(b"ok");
        assert_eq!(w.body(), b"ok");
    }
}
