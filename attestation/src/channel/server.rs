//! The enclave's side: open sealed requests, seal responses (whole or streamed).

use futures::executor::block_on;
use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use zeroize::Zeroizing;

use super::io::{BoxWrite, Capped, Sink, put_varint, put_vec, varint_len};
use super::keys::{KeyId, ServerKeys};
use super::message::{Headers, Request, Response, final_status};
use super::plain::PlainBuf;
use super::{ChannelError, padding};

/// Limits on what the enclave will open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encapsulated request accepted, in bytes (whole or chunked).
    pub max_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request: 16 << 20,
        }
    }
}

impl ServerKeys {
    /// Open a whole-message request (`message/ohttp-req`) sent to the key configuration
    /// `key_id` (from the `Veil-Key-Id` header).
    ///
    /// The encapsulated bytes are copied once, opened in place, and parsed there; that
    /// buffer becomes the request's body (a [`super::Body`] view of the content in it).
    pub fn open_request(
        &self,
        key_id: &KeyId,
        encapsulated: &[u8],
        limits: &Limits,
    ) -> Result<(Request, ResponseSealer), ChannelError> {
        let (buf, range, sealer) = self.decapsulate_in_place(key_id, encapsulated, limits)?;
        let request = Request::from_plaintext(buf, range)?;
        Ok((request, sealer))
    }

    /// [`ServerKeys::open_request`] on an encapsulated request the caller owns (as read
    /// from the network): it is opened in place in that buffer, which becomes the
    /// request's body (a view), so the request is never copied. The buffer is wiped on
    /// failure.
    pub fn open_request_owned(
        &self,
        key_id: &KeyId,
        encapsulated: Vec<u8>,
        limits: &Limits,
    ) -> Result<(Request, ResponseSealer), ChannelError> {
        let mut buf = PlainBuf::from(encapsulated);
        check_size(buf.len(), limits)?;
        let server = self.server(key_id)?;
        let (range, response) = server
            .decapsulate_in_place(&mut buf)
            .map_err(|e| ChannelError::from_open(&e))?;
        let request = Request::from_plaintext(buf, range)?;
        Ok((request, ResponseSealer { inner: response }))
    }

    /// Decapsulate a whole-message request to its Binary HTTP bytes (with any padding),
    /// without parsing them. [`ServerKeys::open_request`] is this plus the parse.
    pub fn decapsulate(
        &self,
        key_id: &KeyId,
        encapsulated: &[u8],
        limits: &Limits,
    ) -> Result<(Zeroizing<Vec<u8>>, ResponseSealer), ChannelError> {
        let (buf, range, sealer) = self.decapsulate_in_place(key_id, encapsulated, limits)?;
        Ok((Zeroizing::new(buf.into_range(range)), sealer))
    }

    fn decapsulate_in_place(
        &self,
        key_id: &KeyId,
        encapsulated: &[u8],
        limits: &Limits,
    ) -> Result<(PlainBuf, std::ops::Range<usize>, ResponseSealer), ChannelError> {
        check_size(encapsulated.len(), limits)?;
        let server = self.server(key_id)?;
        let mut buf = PlainBuf::copy_of(encapsulated);
        let (range, response) = server
            .decapsulate_in_place(&mut buf)
            .map_err(|e| ChannelError::from_open(&e))?;
        Ok((buf, range, ResponseSealer { inner: response }))
    }

    /// Open a chunked request (`message/ohttp-chunked-req`) held in memory.
    pub fn open_chunked_request(
        &self,
        key_id: &KeyId,
        encapsulated: &[u8],
        limits: &Limits,
    ) -> Result<(Request, ChunkedResponseSealer), ChannelError> {
        check_size(encapsulated.len(), limits)?;
        block_on(self.read_chunked_request(key_id, encapsulated, limits))
    }

    /// Open a chunked request read from `src` as it arrives. The whole request is read
    /// (up to `limits.max_request` bytes) before it is parsed: veil's requests are
    /// complete documents, and only responses stream.
    pub async fn read_chunked_request<R: AsyncRead + Unpin>(
        &self,
        key_id: &KeyId,
        src: R,
        limits: &Limits,
    ) -> Result<(Request, ChunkedResponseSealer), ChannelError> {
        let server = self.server(key_id)?.clone();
        let mut stream = server.decapsulate_stream(Capped::new(src, limits.max_request));
        // Read into buffers that are wiped, and that grow without leaving copies.
        let mut plaintext = PlainBuf::default();
        let mut scratch = PlainBuf::from(vec![0u8; padding::MAX_CHUNK]);
        loop {
            let n = stream.read(&mut scratch[..]).await.map_err(
                |e| match ChannelError::from_stream(&e) {
                    ChannelError::TooLarge { what, .. } => ChannelError::TooLarge {
                        what,
                        limit: limits.max_request,
                    },
                    other => other,
                },
            )?;
            if n == 0 {
                break;
            }
            plaintext.extend_secure(scratch.get(..n).unwrap_or_default());
        }
        let len = plaintext.len();
        let request = Request::from_plaintext(plaintext, 0..len)?;
        let sink = Sink::default();
        let writer = stream
            .response(sink.clone())
            .map_err(|_| ChannelError::Crypto("chunked response setup"))?;
        Ok((
            request,
            ChunkedResponseSealer {
                writer: Box::pin(writer),
                sink,
                state: State::Head,
            },
        ))
    }
}

fn check_size(len: usize, limits: &Limits) -> Result<(), ChannelError> {
    if len > limits.max_request {
        return Err(ChannelError::TooLarge {
            what: "encapsulated request",
            limit: limits.max_request,
        });
    }
    Ok(())
}

/// Seals the one response to a whole-message request.
pub struct ResponseSealer {
    pub(super) inner: ohttp::ServerResponse,
}

impl std::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseSealer(<redacted>)")
    }
}

impl ResponseSealer {
    /// Seal `response`, padded to its bucket, as `message/ohttp-res`.
    ///
    /// Written once, into a buffer with room for the response nonce and the AEAD tag,
    /// and sealed there in place (see [`super::Target::seal_request`]).
    pub fn seal(self, response: &Response) -> Result<Vec<u8>, ChannelError> {
        let mut buf =
            response.encode_padded(self.inner.encapsulation_prefix_len(), self.inner.tag_len())?;
        self.inner
            .encapsulate_in_place(&mut buf)
            .map_err(|_| ChannelError::Crypto("response encapsulation"))?;
        Ok(buf.into_sealed())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body,
    Done,
}

/// Seals a streamed response (`message/ohttp-chunked-res`): an indeterminate-length
/// Binary HTTP response whose head, each server-sent event, and end each travel in
/// their own padded chunk (see [`padding`]).
///
/// Each method returns the bytes to send now; concatenated in order, they are the
/// encapsulated response.
pub struct ChunkedResponseSealer {
    writer: BoxWrite,
    sink: Sink,
    state: State,
}

impl std::fmt::Debug for ChunkedResponseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedResponseSealer")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The name of the header field that pads a streamed response's head.
pub const PADDING_FIELD: &str = "veil-padding";

/// Framing indicator of an indeterminate-length response (RFC 9292 §3.3).
const INDETERMINATE_RESPONSE: u64 = 3;

fn put_head(out: &mut Vec<u8>, status: u16, headers: &Headers) -> Result<(), ChannelError> {
    let status = final_status(u64::from(status))?;
    put_varint(out, INDETERMINATE_RESPONSE, 1);
    put_varint(out, u64::from(status.code()), 1);
    for (n, v) in headers.iter() {
        put_vec(out, n.as_bytes());
        put_vec(out, v.as_bytes());
    }
    Ok(())
}

/// Length of a byte string of `n` bytes with its length prefix.
fn field_len(n: usize) -> usize {
    varint_len(n as u64) + n
}

fn put_fields_end(out: &mut Vec<u8>, fields: &Headers) {
    for (n, v) in fields.iter() {
        put_vec(out, n.as_bytes());
        put_vec(out, v.as_bytes());
    }
    out.push(0);
}

impl ChunkedResponseSealer {
    fn write(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, ChannelError> {
        block_on(self.writer.write_all(plaintext)).map_err(|e| ChannelError::from_stream(&e))?;
        Ok(self.sink.take())
    }

    fn close(&mut self) -> Result<Vec<u8>, ChannelError> {
        block_on(self.writer.close()).map_err(|e| ChannelError::from_stream(&e))?;
        self.state = State::Done;
        Ok(self.sink.take())
    }

    /// Seal the response head (status and header fields) as the first chunk, padded with
    /// a `veil-padding` field. The returned bytes start with the response nonce.
    pub fn seal_head(&mut self, status: u16, headers: &Headers) -> Result<Vec<u8>, ChannelError> {
        if self.state != State::Head {
            return Err(ChannelError::Misuse("head sealed twice"));
        }
        let mut chunk = PlainBuf::with_capacity(padding::MAX_CHUNK);
        put_head(&mut chunk, status, headers)?;
        // The padding field: name (1 + 12 bytes), a 2-byte value length, the value, and
        // the 1-byte end of the field section.
        let fixed = chunk.len().saturating_add(1 + PADDING_FIELD.len() + 2 + 1);
        let target = padding::chunk_bucket(fixed);
        let value_len = target.saturating_sub(fixed);
        if value_len >= 1 << 14 {
            return Err(ChannelError::TooLarge {
                what: "response head",
                limit: padding::MAX_CHUNK,
            });
        }
        put_vec(&mut chunk, PADDING_FIELD.as_bytes());
        put_varint(&mut chunk, value_len as u64, 2);
        let new_len = chunk.len().saturating_add(value_len);
        chunk.resize(new_len, b'0');
        chunk.push(0);
        self.state = State::Body;
        self.write(&chunk)
    }

    /// Seal one complete server-sent event (it must end with `\n`) as its own chunk,
    /// padded with an SSE comment line to its bucket.
    pub fn seal_event(&mut self, event: &[u8]) -> Result<Vec<u8>, ChannelError> {
        if self.state != State::Body {
            return Err(ChannelError::Misuse(
                "event before the head or after the end",
            ));
        }
        if event.last() != Some(&b'\n') {
            return Err(ChannelError::Misuse("an event must end with a newline"));
        }
        // 4 bytes of content length at most for chunks under 1 GiB, then ":" ... "\n".
        let target = padding::chunk_bucket(event.len().saturating_add(6));
        let len_len = if target.saturating_sub(2) < (1 << 14) {
            2
        } else {
            4
        };
        let content_len = target.saturating_sub(len_len);
        let pad = content_len.saturating_sub(event.len());
        let mut chunk = PlainBuf::with_capacity(target);
        put_varint(&mut chunk, content_len as u64, len_len);
        chunk.extend_from_slice(event);
        chunk.push(b':');
        let new_len = chunk.len().saturating_add(pad.saturating_sub(2));
        chunk.resize(new_len, b' ');
        chunk.push(b'\n');
        debug_assert_eq!(chunk.len(), target);
        self.write(&chunk)
    }

    /// End the stream: the end of the content, the trailer fields (veil's inner receipt
    /// travels here), zero padding, and the authenticated final chunk.
    pub fn finish(mut self, trailers: &Headers) -> Result<Vec<u8>, ChannelError> {
        if self.state != State::Body {
            return Err(ChannelError::Misuse("finish before the head"));
        }
        let fields: usize = trailers
            .iter()
            .map(|(n, v)| field_len(n.len()) + field_len(v.len()))
            .sum();
        let mut chunk = PlainBuf::with_capacity(padding::chunk_bucket(fields + 2));
        chunk.push(0); // content terminator
        put_fields_end(&mut chunk, trailers);
        let padded = padding::chunk_bucket(chunk.len());
        chunk.resize(padded, 0);
        let mut out = self.write(&chunk)?;
        out.extend(self.close()?);
        Ok(out)
    }

    /// Answer with a complete response instead of a stream (an error, or a
    /// non-streaming body): head, body, trailers and zero padding in one padded run of
    /// chunks, then the final chunk.
    pub fn seal_whole(mut self, response: &Response) -> Result<Vec<u8>, ChannelError> {
        if self.state != State::Head {
            return Err(ChannelError::Misuse("whole response after the head"));
        }
        let fields = |h: &Headers| -> usize {
            h.iter()
                .map(|(n, v)| field_len(n.len()) + field_len(v.len()))
                .sum()
        };
        // Head (framing, status, fields, end), content, terminator, trailers, end.
        let len = 1
            + 8
            + fields(&response.headers)
            + 1
            + field_len(response.body.len())
            + 1
            + fields(&response.trailers)
            + 1;
        let mut plain = PlainBuf::with_capacity(padding::chunk_bucket(len));
        put_head(&mut plain, response.status, &response.headers)?;
        plain.push(0); // end of header fields
        if !response.body.is_empty() {
            put_vec(&mut plain, &response.body);
        }
        plain.push(0); // content terminator
        put_fields_end(&mut plain, &response.trailers);
        let padded = padding::chunk_bucket(plain.len());
        plain.resize(padded, 0);
        let mut out = self.write(&plain)?;
        out.extend(self.close()?);
        Ok(out)
    }
}
