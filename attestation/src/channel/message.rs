//! The HTTP messages carried inside the channel, and their padded Binary HTTP
//! (RFC 9292) encoding.
//!
//! These types hold plaintext. Their `Debug` prints method, path, status, header
//! *names* and body length only, and bodies are zeroized on drop, so plaintext cannot
//! reach a log by accident.
//!
//! The encoding is written and parsed here rather than through `bhttp::Message`, so
//! that a message is written once, straight into the buffer that is then sealed in
//! place (room for the OHTTP header before it and the AEAD tag after it planned from
//! the start), and parsed in place in the buffer it was opened in, its body handed
//! over as a [`Body`] view into that buffer rather than copied. The writer produces
//! exactly the bytes `bhttp::Message::write_bhttp` does, and the parser accepts exactly
//! what `bhttp::Message::read_bhttp` accepts, with the same result; the tests check
//! both against the `bhttp` crate.

use std::fmt;
use std::ops::Range;

use super::ChannelError;
use super::body::Body;
use super::io::{put_varint, put_vec, varint_len};
use super::padding;
use super::plain::PlainBuf;

/// Header fields: lowercase names, values without CR, LF or NUL.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No fields.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a field. The name is lowercased; a name that is not an HTTP token or a
    /// value with CR, LF or NUL (header injection) is refused.
    pub fn push(&mut self, name: &str, value: &str) -> Result<(), ChannelError> {
        validate_field(name.as_bytes(), value.as_bytes())?;
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
        Ok(())
    }

    /// Builder form of [`Headers::push`].
    pub fn with(mut self, name: &str, value: &str) -> Result<Self, ChannelError> {
        self.push(name, value)?;
        Ok(self)
    }

    /// The first value of `name` (case-insensitive).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Build from parsed fields (name and value ranges into `bytes`), merging repeated
    /// `cookie` fields with "; " as `bhttp` does.
    fn from_fields(bytes: &[u8], fields: &[Field]) -> Result<Self, ChannelError> {
        let mut out = Self::new();
        let mut cookie: Option<usize> = None;
        for (name, value) in fields {
            let (Some(name), Some(value)) = (bytes.get(name.clone()), bytes.get(value.clone()))
            else {
                return Err(malformed());
            };
            validate_field(name, value)?;
            let (Ok(n), Ok(v)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
                return Err(ChannelError::Malformed {
                    what: "header field not UTF-8",
                });
            };
            if name == b"cookie" {
                if let Some((_, merged)) = cookie.and_then(|i| out.0.get_mut(i)) {
                    merged.push_str("; ");
                    merged.push_str(v);
                    continue;
                }
                cookie = Some(out.0.len());
            }
            out.0.push((n.to_ascii_lowercase(), v.to_owned()));
        }
        Ok(out)
    }

    /// Length of the fields' encoding: each name and value with its length.
    fn encoded_len(&self) -> usize {
        self.0
            .iter()
            .map(|(n, v)| vec_len(n.len()) + vec_len(v.len()))
            .sum()
    }

    fn put(&self, out: &mut Vec<u8>) {
        for (n, v) in &self.0 {
            put_vec(out, n.as_bytes());
            put_vec(out, v.as_bytes());
        }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn validate_field(name: &[u8], value: &[u8]) -> Result<(), ChannelError> {
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(ChannelError::Malformed {
            what: "header field name",
        });
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(ChannelError::Malformed {
            what: "header field value",
        });
    }
    Ok(())
}

/// A request inside the channel.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, such as `POST`.
    pub method: String,
    /// Path and query, such as `/v1/chat/completions`.
    pub path: String,
    /// Header fields.
    pub headers: Headers,
    /// Body (wiped on drop).
    pub body: Body,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field(
                "body",
                &format_args!("<{} bytes redacted>", self.body.len()),
            )
            .finish()
    }
}

impl Request {
    /// A request with no header fields.
    #[must_use]
    pub fn new(method: &str, path: &str, body: Vec<u8>) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Headers::new(),
            body: Body::from(body),
        }
    }

    pub(crate) fn check_control(method: &str, path: &str) -> Result<(), ChannelError> {
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(ChannelError::Malformed { what: "method" });
        }
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ChannelError::Malformed { what: "path" });
        }
        Ok(())
    }

    /// The padded Binary HTTP encoding (known-length for whole messages, indeterminate-
    /// length for chunked ones, as draft-ietf-ohai-chunked-ohttp asks).
    pub(crate) fn to_padded_bhttp(&self, mode: bhttp::Mode) -> Result<PlainBuf, ChannelError> {
        self.encode_padded(mode, 0, 0)
    }

    /// The padded encoding, written into one allocation of exactly `prefix` + padded
    /// length + `suffix` bytes: `prefix` zero bytes first (room for the OHTTP header),
    /// and `suffix` bytes of spare capacity (room for the AEAD tag).
    pub(crate) fn encode_padded(
        &self,
        mode: bhttp::Mode,
        prefix: usize,
        suffix: usize,
    ) -> Result<PlainBuf, ChannelError> {
        Self::check_control(&self.method, &self.path)?;
        let body = self.body.len();
        if mode == bhttp::Mode::KnownLength {
            let head = request_head_len(&self.method, &self.path, &self.headers, body);
            let len = head + body + REQUEST_TAIL.len();
            let padded = padding::bucket(len);
            let mut out = PlainBuf::with_capacity(prefix + padded + suffix);
            out.resize(prefix, 0);
            put_request_head(&mut out, &self.method, &self.path, &self.headers, body);
            debug_assert_eq!(out.len(), prefix + head);
            out.extend_from_slice(&self.body);
            out.extend_from_slice(REQUEST_TAIL);
            debug_assert_eq!(out.len(), prefix + len);
            out.resize(prefix + padded, 0);
            return Ok(out);
        }
        // Indeterminate length: fields and 0; the content as one chunk, then 0 unless
        // it was empty; 0 for the (empty) trailer section.
        let fields = self.headers.encoded_len();
        let len = 1
            + control_len(&self.method, &self.path)
            + fields
            + 1
            + vec_len(body)
            + usize::from(body > 0)
            + 1;
        let padded = padding::bucket(len);
        let mut out = PlainBuf::with_capacity(prefix + padded + suffix);
        out.resize(prefix, 0);
        put_varint(&mut out, INDETERMINATE_REQUEST, 1);
        put_control(&mut out, &self.method, &self.path);
        self.headers.put(&mut out);
        out.push(0);
        put_vec(&mut out, &self.body);
        if body > 0 {
            out.push(0);
        }
        out.push(0);
        debug_assert_eq!(out.len(), prefix + len);
        out.resize(prefix + padded, 0);
        Ok(out)
    }

    /// Parse a padded Binary HTTP request, either framing.
    #[cfg(test)]
    pub(crate) fn from_padded_bhttp(bytes: &[u8]) -> Result<Self, ChannelError> {
        Self::from_plaintext(PlainBuf::copy_of(bytes), 0..bytes.len())
    }

    /// Parse the padded Binary HTTP request at `range` of `buf`, either framing. `buf`
    /// becomes the request's body, a [`Body`] view of the content in it (content in
    /// several chunks, which only indeterminate-length messages have, is compacted).
    pub(crate) fn from_plaintext(buf: PlainBuf, range: Range<usize>) -> Result<Self, ChannelError> {
        let (method, path, headers, content) = {
            let bytes = buf.get(range.clone()).ok_or_else(malformed)?;
            let m = decode_padded(bytes)?;
            let Control::Request { method, path } = m.control else {
                return Err(ChannelError::Malformed {
                    what: "expected a request",
                });
            };
            let (Some(Ok(method)), Some(Ok(path))) = (
                bytes.get(method).map(std::str::from_utf8),
                bytes.get(path).map(std::str::from_utf8),
            ) else {
                return Err(ChannelError::Malformed {
                    what: "method or path not UTF-8",
                });
            };
            Self::check_control(method, path)?;
            let headers = Headers::from_fields(bytes, &m.header)?;
            (
                method.to_owned(),
                path.to_owned(),
                headers,
                shift(&m.content, range.start),
            )
        };
        Ok(Self {
            method,
            path,
            headers,
            body: body_of(buf, &content),
        })
    }
}

/// A response inside the channel.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 200..=599.
    pub status: u16,
    /// Header fields.
    pub headers: Headers,
    /// Body (wiped on drop).
    pub body: Body,
    /// Trailer fields (a streamed response's receipt travels here).
    pub trailers: Headers,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field(
                "body",
                &format_args!("<{} bytes redacted>", self.body.len()),
            )
            .field("trailers", &self.trailers)
            .finish()
    }
}

impl Response {
    /// A response with no header fields.
    #[must_use]
    pub fn new(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Headers::new(),
            body: Body::from(body),
            trailers: Headers::new(),
        }
    }

    /// The padded Binary HTTP encoding (known-length).
    #[cfg(test)]
    pub(crate) fn to_padded_bhttp(&self) -> Result<PlainBuf, ChannelError> {
        self.encode_padded(0, 0)
    }

    /// The padded known-length encoding in one allocation, with `prefix` zero bytes
    /// before it and `suffix` bytes of spare capacity after it (see
    /// [`Request::encode_padded`]).
    pub(crate) fn encode_padded(
        &self,
        prefix: usize,
        suffix: usize,
    ) -> Result<PlainBuf, ChannelError> {
        let status = final_status(u64::from(self.status))?.code();
        let body = self.body.len();
        let head = response_head_len(status, &self.headers, body);
        let tail = response_tail_len(&self.trailers);
        let len = head + body + tail;
        let padded = padding::bucket(len);
        let mut out = PlainBuf::with_capacity(prefix + padded + suffix);
        out.resize(prefix, 0);
        put_response_head(&mut out, status, &self.headers, body);
        out.extend_from_slice(&self.body);
        put_response_tail(&mut out, &self.trailers);
        debug_assert_eq!(out.len(), prefix + len);
        out.resize(prefix + padded, 0);
        Ok(out)
    }

    #[cfg(test)]
    pub(crate) fn from_padded_bhttp(bytes: &[u8]) -> Result<Self, ChannelError> {
        Self::from_plaintext(PlainBuf::copy_of(bytes), 0..bytes.len())
    }

    /// Parse the padded Binary HTTP response at `range` of `buf` (see
    /// [`Request::from_plaintext`]).
    pub(crate) fn from_plaintext(buf: PlainBuf, range: Range<usize>) -> Result<Self, ChannelError> {
        let (status, headers, trailers, content) = {
            let bytes = buf.get(range.clone()).ok_or_else(malformed)?;
            let m = decode_padded(bytes)?;
            let Control::Response(status) = m.control else {
                return Err(ChannelError::Malformed {
                    what: "expected a response",
                });
            };
            let status = final_status(u64::from(status))?;
            (
                status.code(),
                Headers::from_fields(bytes, &m.header)?,
                Headers::from_fields(bytes, &m.trailer)?,
                shift(&m.content, range.start),
            )
        };
        Ok(Self {
            status,
            headers,
            body: body_of(buf, &content),
            trailers,
        })
    }
}

/// A final (non-1xx) status code.
pub(crate) fn final_status(code: u64) -> Result<bhttp::StatusCode, ChannelError> {
    let code = u16::try_from(code).map_err(|_| ChannelError::Malformed { what: "status" })?;
    if !(200..=599).contains(&code) {
        return Err(ChannelError::Malformed { what: "status" });
    }
    bhttp::StatusCode::try_from(code).map_err(|_| ChannelError::Malformed { what: "status" })
}

/// Framing indicators (RFC 9292 §3.3).
const KNOWN_REQUEST: u64 = 0;
const KNOWN_RESPONSE: u64 = 1;
const INDETERMINATE_REQUEST: u64 = 2;
const INDETERMINATE_RESPONSE: u64 = 3;
/// The scheme of every request veil sends (the authority is empty).
const SCHEME: &[u8] = b"https";

/// Length of a byte string of `n` bytes with its length prefix.
fn vec_len(n: usize) -> usize {
    varint_len(n as u64) + n
}

/// Length of a request's control data: method, scheme, (empty) authority, path.
fn control_len(method: &str, path: &str) -> usize {
    vec_len(method.len()) + vec_len(SCHEME.len()) + vec_len(0) + vec_len(path.len())
}

fn put_control(out: &mut Vec<u8>, method: &str, path: &str) {
    put_vec(out, method.as_bytes());
    put_vec(out, SCHEME);
    put_vec(out, b"");
    put_vec(out, path.as_bytes());
}

/// What a known-length request has before its content bytes: framing, control data,
/// the header section, and the content's length.
pub(crate) fn request_head_len(method: &str, path: &str, headers: &Headers, body: usize) -> usize {
    1 + control_len(method, path) + vec_len(headers.encoded_len()) + varint_len(body as u64)
}

/// Write what [`request_head_len`] measures.
pub(crate) fn put_request_head(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    headers: &Headers,
    body: usize,
) {
    put_varint(out, KNOWN_REQUEST, 1);
    put_control(out, method, path);
    put_varint(out, headers.encoded_len() as u64, 1);
    headers.put(out);
    put_varint(out, body as u64, 1);
}

/// What a known-length request has after its content bytes: the empty trailer section.
pub(crate) const REQUEST_TAIL: &[u8] = &[0];

/// What a known-length response has before its content bytes: framing, status, the
/// header section, and the content's length. `status` is a final status.
pub(crate) fn response_head_len(status: u16, headers: &Headers, body: usize) -> usize {
    1 + varint_len(u64::from(status)) + vec_len(headers.encoded_len()) + varint_len(body as u64)
}

/// Write what [`response_head_len`] measures.
pub(crate) fn put_response_head(out: &mut Vec<u8>, status: u16, headers: &Headers, body: usize) {
    put_varint(out, KNOWN_RESPONSE, 1);
    put_varint(out, u64::from(status), 1);
    put_varint(out, headers.encoded_len() as u64, 1);
    headers.put(out);
    put_varint(out, body as u64, 1);
}

/// What a known-length response has after its content bytes: the trailer section.
pub(crate) fn response_tail_len(trailers: &Headers) -> usize {
    vec_len(trailers.encoded_len())
}

/// Write what [`response_tail_len`] measures.
pub(crate) fn put_response_tail(out: &mut Vec<u8>, trailers: &Headers) {
    put_varint(out, trailers.encoded_len() as u64, 1);
    trailers.put(out);
}

/// The body of a message parsed in `buf`: a view of its one content range, or, for
/// content in several chunks, the chunks compacted to the front of `buf`.
fn body_of(buf: PlainBuf, content: &[Range<usize>]) -> Body {
    match content {
        [one] => Body::view(buf, one.clone()),
        _ => Body::from(buf.into_compacted(content)),
    }
}

fn malformed() -> ChannelError {
    ChannelError::Malformed {
        what: "Binary HTTP message",
    }
}

fn shift(ranges: &[Range<usize>], by: usize) -> Vec<Range<usize>> {
    ranges.iter().map(|r| r.start + by..r.end + by).collect()
}

/// A field line: name and value, as ranges of the parsed bytes.
type Field = (Range<usize>, Range<usize>);

/// The control data that veil uses.
#[derive(Debug)]
enum Control {
    /// Method and path (scheme and authority are read and ignored).
    Request {
        method: Range<usize>,
        path: Range<usize>,
    },
    /// A status code, 100..=599.
    Response(u16),
}

/// A parsed Binary HTTP message: everything as ranges of the parsed bytes.
#[derive(Debug)]
struct Parsed {
    control: Control,
    header: Vec<Field>,
    /// The content: one range, or the chunks of an indeterminate-length message.
    content: Vec<Range<usize>>,
    trailer: Vec<Field>,
    /// Where the message ends (padding follows).
    end: usize,
}

/// The structural errors of a Binary HTTP message; which one does not matter.
#[derive(Debug)]
struct Invalid;

/// A reader over `bytes[pos..end]`; ranges it returns index `bytes`.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            end: bytes.len(),
        }
    }

    /// A QUIC varint; `None` at the end of the input, an error if cut short.
    fn varint(&mut self) -> Result<Option<u64>, Invalid> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let first = *self.bytes.get(self.pos).ok_or(Invalid)?;
        let n = 1usize << (first >> 6);
        let stop = self.pos.checked_add(n).ok_or(Invalid)?;
        if stop > self.end {
            return Err(Invalid);
        }
        let rest = self.bytes.get(self.pos + 1..stop).ok_or(Invalid)?;
        let v = rest
            .iter()
            .fold(u64::from(first & 0x3f), |v, &b| (v << 8) | u64::from(b));
        self.pos = stop;
        Ok(Some(v))
    }

    /// A length-prefixed byte string; `None` at the end of the input.
    fn vec(&mut self) -> Result<Option<Range<usize>>, Invalid> {
        let Some(len) = self.varint()? else {
            return Ok(None);
        };
        let avail = self.end - self.pos;
        if (avail as u64) < len {
            return Err(Invalid);
        }
        let start = self.pos;
        self.pos += usize::try_from(len).map_err(|_| Invalid)?;
        Ok(Some(start..self.pos))
    }

    fn control(&mut self, request: bool) -> Result<Control, Invalid> {
        if request {
            let method = self.vec()?.ok_or(Invalid)?;
            let _scheme = self.vec()?.ok_or(Invalid)?;
            let _authority = self.vec()?.ok_or(Invalid)?;
            let path = self.vec()?.ok_or(Invalid)?;
            Ok(Control::Request { method, path })
        } else {
            let status = self.varint()?.ok_or(Invalid)?;
            match u16::try_from(status) {
                Ok(s @ 100..=599) => Ok(Control::Response(s)),
                _ => Err(Invalid),
            }
        }
    }

    /// A field section: length-prefixed (known-length) or ended by an empty name.
    fn section(&mut self, known: bool) -> Result<Vec<Field>, Invalid> {
        if !known {
            return self.fields(true);
        }
        match self.vec()? {
            Some(r) => Reader {
                bytes: self.bytes,
                pos: r.start,
                end: r.end,
            }
            .fields(false),
            None => Ok(Vec::new()),
        }
    }

    fn fields(&mut self, terminated: bool) -> Result<Vec<Field>, Invalid> {
        let mut out = Vec::new();
        loop {
            match self.vec()? {
                Some(name) if name.is_empty() => {
                    return if terminated { Ok(out) } else { Err(Invalid) };
                }
                Some(name) => {
                    let value = self.vec()?.ok_or(Invalid)?;
                    out.push((name, value));
                }
                None => return if terminated { Err(Invalid) } else { Ok(out) },
            }
        }
    }

    /// A whole message, as `bhttp::Message::read_bhttp` reads it.
    fn message(mut self) -> Result<Parsed, Invalid> {
        let framing = self.varint()?.ok_or(Invalid)?;
        let known = match framing {
            KNOWN_REQUEST | KNOWN_RESPONSE => true,
            INDETERMINATE_REQUEST | INDETERMINATE_RESPONSE => false,
            _ => return Err(Invalid),
        };
        let request = framing == KNOWN_REQUEST || framing == INDETERMINATE_REQUEST;
        let mut control = self.control(request)?;
        // Informational (1xx) responses: read and dropped.
        while let Control::Response(100..=199) = control {
            self.section(known)?;
            control = self.control(request)?;
        }
        let header = self.section(known)?;
        let empty = self.pos..self.pos;
        let first = self.vec()?.unwrap_or(empty);
        let mut content = vec![first.clone()];
        if !known && !first.is_empty() {
            loop {
                let empty = self.pos..self.pos;
                let chunk = self.vec()?.unwrap_or(empty);
                if chunk.is_empty() {
                    break;
                }
                content.push(chunk);
            }
        }
        let trailer = self.section(known)?;
        Ok(Parsed {
            control,
            header,
            content,
            trailer,
            end: self.pos,
        })
    }
}

fn decode_padded(bytes: &[u8]) -> Result<Parsed, ChannelError> {
    let m = Reader::new(bytes)
        .message()
        .map_err(|Invalid| malformed())?;
    // RFC 9292 §3.8: anything after the message must be zero padding. (OR-ed together
    // in blocks, which vectorizes; up to 12 % of a large message is padding.)
    if bytes.get(m.end..).is_none_or(|rest| {
        !rest
            .chunks(64)
            .all(|c| c.iter().fold(0, |a, &b| a | b) == 0)
    }) {
        return Err(ChannelError::Malformed {
            what: "non-zero bytes after the message",
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_both_framings() {
        let mut r = Request::new("POST", "/v1/chat/completions", b"{\"a\":1}".to_vec());
        r.headers.push("Content-Type", "application/json").unwrap();
        for mode in [bhttp::Mode::KnownLength, bhttp::Mode::IndeterminateLength] {
            let b = r.to_padded_bhttp(mode).unwrap();
            assert_eq!(b.len(), 1024);
            let back = Request::from_padded_bhttp(&b).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.headers.get("content-type"), Some("application/json"));
        }
    }

    #[test]
    fn header_injection_refused() {
        let mut h = Headers::new();
        assert!(h.push("x", "a\r\nevil: 1").is_err());
        assert!(h.push("bad name", "v").is_err());
        assert!(h.push("", "v").is_err());
    }

    #[test]
    fn debug_redacts_bodies_and_values() {
        let mut r = Request::new("POST", "/v1/embeddings", b"CANARY-secret".to_vec());
        r.headers.push("authorization", "CANARY-token").unwrap();
        let s = format!("{r:?}");
        assert!(!s.contains("CANARY"), "{s}");
        let resp = Response::new(200, b"CANARY-reply".to_vec());
        assert!(!format!("{resp:?}").contains("CANARY"));
    }

    #[test]
    fn nonzero_padding_rejected() {
        let r = Response::new(200, b"ok".to_vec());
        let mut b = r.to_padded_bhttp().unwrap();
        *b.last_mut().unwrap() = 1;
        assert!(Response::from_padded_bhttp(&b).is_err());
    }

    #[test]
    fn encoding_is_written_in_one_allocation_with_room_around_it() {
        let r = Request::new("POST", "/v1/chat/completions", vec![7; 70_000]);
        let b = r.encode_padded(bhttp::Mode::KnownLength, 39, 16).unwrap();
        assert_eq!(b.len(), 39 + padding::bucket(70_000 + 30));
        assert_eq!(b.capacity(), b.len() + 16);
        assert!(b[..39].iter().all(|&x| x == 0));
        let resp = Response::new(200, vec![7; 5000]);
        let b = resp.encode_padded(16, 16).unwrap();
        assert_eq!(b.capacity(), b.len() + 16);
        assert_eq!(b.len(), 16 + 8192);
    }

    #[test]
    fn body_is_a_view_into_the_opened_buffer() {
        let r = Request::new("POST", "/x", vec![9; 3000]);
        let b = r.encode_padded(bhttp::Mode::KnownLength, 5, 0).unwrap();
        let len = b.len();
        let back = Request::from_plaintext(b, 5..len).unwrap();
        assert_eq!(back.body, vec![9; 3000]);
        assert!(
            back.body.capacity() >= len,
            "the opened buffer became the body"
        );
        let head = 5 + request_head_len("POST", "/x", &Headers::new(), 3000);
        assert_eq!(back.body.offset(), head, "not moved to the front");
        let resp = Response::new(200, vec![8; 70_000]);
        let b = resp.encode_padded(16, 0).unwrap();
        let len = b.len();
        let back = Response::from_plaintext(b, 16..len).unwrap();
        assert_eq!(back.body, vec![8; 70_000]);
        assert_eq!(
            back.body.offset(),
            16 + response_head_len(200, &Headers::new(), 70_000)
        );
        assert_eq!(back.body.clone().into_vec(), vec![8; 70_000]);
        assert_eq!(back.body.clone().into_vec().len(), 70_000);
        // Empty bodies, both framings.
        for mode in [bhttp::Mode::KnownLength, bhttp::Mode::IndeterminateLength] {
            let r = Request::new("GET", "/", Vec::new());
            let b = r.to_padded_bhttp(mode).unwrap();
            let back = Request::from_padded_bhttp(&b).unwrap();
            assert!(back.body.is_empty());
            assert_eq!(back, r);
        }
    }

    /// The previous implementation, through the `bhttp` crate: the oracle the
    /// hand-written encoder and parser must agree with.
    mod oracle {
        use super::super::*;
        use std::io::Cursor;

        fn headers(fields: &bhttp::FieldSection) -> Result<Headers, ()> {
            let mut out = Headers::new();
            for f in fields.iter() {
                validate_field(f.name(), f.value()).map_err(|_| ())?;
                let (Ok(n), Ok(v)) = (
                    std::str::from_utf8(f.name()),
                    std::str::from_utf8(f.value()),
                ) else {
                    return Err(());
                };
                out.0.push((n.to_ascii_lowercase(), v.to_owned()));
            }
            Ok(out)
        }

        fn encode(m: &bhttp::Message, mode: bhttp::Mode) -> Vec<u8> {
            let mut out = Vec::new();
            m.write_bhttp(mode, &mut out).unwrap();
            let padded = padding::bucket(out.len());
            out.resize(padded, 0);
            out
        }

        pub fn encode_request(r: &Request, mode: bhttp::Mode) -> Vec<u8> {
            let mut m = bhttp::Message::request(
                r.method.as_bytes().to_vec(),
                b"https".to_vec(),
                Vec::new(),
                r.path.as_bytes().to_vec(),
            );
            for (n, v) in r.headers.iter() {
                m.put_header(n, v);
            }
            m.write_content(&r.body);
            encode(&m, mode)
        }

        pub fn encode_response(r: &Response) -> Vec<u8> {
            let mut m = bhttp::Message::response(final_status(u64::from(r.status)).unwrap());
            for (n, v) in r.headers.iter() {
                m.put_header(n, v);
            }
            for (n, v) in r.trailers.iter() {
                m.put_trailer(n, v);
            }
            m.write_content(&r.body);
            encode(&m, bhttp::Mode::KnownLength)
        }

        fn decode(bytes: &[u8]) -> Result<bhttp::Message, ()> {
            let mut cursor = Cursor::new(bytes);
            let m = bhttp::Message::read_bhttp(&mut cursor).map_err(|_| ())?;
            let end = usize::try_from(cursor.position()).unwrap();
            if bytes.get(end..).is_none_or(|r| r.iter().any(|&b| b != 0)) {
                return Err(());
            }
            Ok(m)
        }

        pub fn decode_request(bytes: &[u8]) -> Result<Request, ()> {
            let m = decode(bytes)?;
            let c = m.control();
            let (Some(method), Some(path)) = (c.method(), c.path()) else {
                return Err(());
            };
            let (Ok(method), Ok(path)) = (std::str::from_utf8(method), std::str::from_utf8(path))
            else {
                return Err(());
            };
            Request::check_control(method, path).map_err(|_| ())?;
            Ok(Request {
                method: method.to_owned(),
                path: path.to_owned(),
                headers: headers(m.header())?,
                body: m.content().to_vec().into(),
            })
        }

        pub fn decode_response(bytes: &[u8]) -> Result<Response, ()> {
            let m = decode(bytes)?;
            let status = m.control().status().ok_or(())?;
            let status = final_status(u64::from(status.code())).map_err(|_| ())?;
            Ok(Response {
                status: status.code(),
                headers: headers(m.header())?,
                body: m.content().to_vec().into(),
                trailers: headers(m.trailer())?,
            })
        }
    }

    mod differential {
        use super::super::*;
        use super::oracle;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("cookie".to_owned()),
                Just("content-type".to_owned()),
                "[a-z0-9!#$%&'*+.^_`|~-]{1,12}",
            ]
        }

        fn headers() -> impl Strategy<Value = Headers> {
            proptest::collection::vec((name(), "[ -~\u{80}-\u{10ff}]{0,40}"), 0..6).prop_map(
                |fields| {
                    let mut h = Headers::new();
                    for (n, v) in fields {
                        h.push(&n, &v).unwrap();
                    }
                    h
                },
            )
        }

        fn request() -> impl Strategy<Value = Request> {
            (
                "[A-Z]{1,8}",
                "/[!-~]{0,40}",
                headers(),
                proptest::collection::vec(any::<u8>(), 0..3000),
            )
                .prop_map(|(method, path, headers, body)| Request {
                    method,
                    path,
                    headers,
                    body: body.into(),
                })
        }

        fn response() -> impl Strategy<Value = Response> {
            (
                200u16..=599,
                headers(),
                proptest::collection::vec(any::<u8>(), 0..3000),
                headers(),
            )
                .prop_map(|(status, headers, body, trailers)| Response {
                    status,
                    headers,
                    body: body.into(),
                    trailers,
                })
        }

        /// Bytes shaped like Binary HTTP: a framing indicator, then a run of varints
        /// and length-prefixed strings (often field names such as `cookie`), then
        /// padding.
        fn bhttp_like() -> impl Strategy<Value = Vec<u8>> {
            let item = prop_oneof![
                (0u64..700).prop_map(|v| {
                    let mut o = Vec::new();
                    put_varint(&mut o, v, 1);
                    o
                }),
                (
                    0u64..(1 << 20),
                    prop_oneof![Just(1usize), Just(2), Just(4), Just(8)]
                )
                    .prop_map(|(v, n)| {
                        let mut o = Vec::new();
                        put_varint(&mut o, v, n);
                        o
                    }),
                proptest::collection::vec(any::<u8>(), 0..20).prop_map(|v| {
                    let mut o = Vec::new();
                    put_vec(&mut o, &v);
                    o
                }),
                prop_oneof![
                    Just(&b"cookie"[..]),
                    Just(&b"Cookie"[..]),
                    Just(&b"POST"[..]),
                    Just(&b"/a"[..]),
                    Just(&b""[..]),
                ]
                .prop_map(|v| {
                    let mut o = Vec::new();
                    put_vec(&mut o, v);
                    o
                }),
            ];
            (
                0u8..6,
                proptest::collection::vec(item, 0..24),
                0usize..8,
                any::<u8>(),
            )
                .prop_map(|(framing, items, pad, last)| {
                    let mut o = vec![framing];
                    for i in items {
                        o.extend(i);
                    }
                    o.resize(o.len() + pad, 0);
                    if last % 7 == 0 {
                        o.push(last);
                    }
                    o
                })
        }

        /// Repeated `cookie` fields come back merged (as `bhttp` does), so only
        /// messages with at most one round-trip exactly.
        fn cookies(h: &Headers) -> usize {
            h.iter().filter(|(n, _)| *n == "cookie").count()
        }

        fn same_request(bytes: &[u8]) -> Result<(), TestCaseError> {
            let ours = Request::from_padded_bhttp(bytes);
            let theirs = oracle::decode_request(bytes);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(())) => {}
                _ => prop_assert!(false, "ours {:?} oracle {:?}", ours, theirs),
            }
            Ok(())
        }

        fn same_response(bytes: &[u8]) -> Result<(), TestCaseError> {
            let ours = Response::from_padded_bhttp(bytes);
            let theirs = oracle::decode_response(bytes);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(())) => {}
                _ => prop_assert!(false, "ours {:?} oracle {:?}", ours, theirs),
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            #[test]
            fn requests_encode_as_bhttp_does_and_round_trip(r in request()) {
                for mode in [bhttp::Mode::KnownLength, bhttp::Mode::IndeterminateLength] {
                    let ours = r.to_padded_bhttp(mode).unwrap();
                    prop_assert_eq!(&ours[..], &oracle::encode_request(&r, mode)[..]);
                    same_request(&ours)?;
                    if cookies(&r.headers) < 2 {
                        prop_assert_eq!(&Request::from_padded_bhttp(&ours).unwrap(), &r);
                    }
                }
            }

            #[test]
            fn responses_encode_as_bhttp_does_and_round_trip(r in response()) {
                let ours = r.to_padded_bhttp().unwrap();
                prop_assert_eq!(&ours[..], &oracle::encode_response(&r)[..]);
                same_response(&ours)?;
                if cookies(&r.headers) < 2 && cookies(&r.trailers) < 2 {
                    prop_assert_eq!(&Response::from_padded_bhttp(&ours).unwrap(), &r);
                }
            }

            #[test]
            fn parser_agrees_with_bhttp_on_mutated_messages(
                r in request(),
                resp in response(),
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                cut in any::<usize>(),
            ) {
                for mode in [bhttp::Mode::KnownLength, bhttp::Mode::IndeterminateLength] {
                    let mut b = r.to_padded_bhttp(mode).unwrap().to_vec();
                    let mut c = resp.to_padded_bhttp().unwrap().to_vec();
                    // Mutations land mostly in the head, where the structure is.
                    for &(i, x) in &flips {
                        let i = i % b.len().min(64);
                        b[i] ^= x;
                        let j = i % c.len().min(64);
                        c[j] ^= x;
                    }
                    same_request(&b)?;
                    same_response(&b)?;
                    same_request(&c)?;
                    same_response(&c)?;
                    same_request(&b[..cut % (b.len() + 1)])?;
                    same_response(&c[..cut % (c.len() + 1)])?;
                }
            }

            #[test]
            fn parser_agrees_with_bhttp_on_bhttp_like_bytes(b in bhttp_like()) {
                same_request(&b)?;
                same_response(&b)?;
            }

            #[test]
            fn parser_agrees_with_bhttp_on_arbitrary_bytes(
                b in proptest::collection::vec(any::<u8>(), 0..200),
            ) {
                same_request(&b)?;
                same_response(&b)?;
            }
        }

        /// Informational responses, cookie merging and chunked content, written out.
        #[test]
        fn parser_agrees_on_hand_made_messages() {
            let mut informational = vec![1u8];
            put_varint(&mut informational, 103, 1);
            let mut f = Vec::new();
            put_vec(&mut f, b"link");
            put_vec(&mut f, b"</a>");
            put_vec(&mut informational, &f);
            put_varint(&mut informational, 200, 1);
            let mut f = Vec::new();
            for v in [&b"a=1"[..], b"b=2"] {
                put_vec(&mut f, b"cookie");
                put_vec(&mut f, v);
            }
            put_vec(&mut informational, &f);
            put_vec(&mut informational, b"body");
            informational.push(0);
            let r = Response::from_padded_bhttp(&informational).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.headers.get("cookie"), Some("a=1; b=2"));
            same_response(&informational).unwrap();

            // Indeterminate-length request, content in three chunks.
            let mut chunked = vec![2u8];
            for v in [&b"GET"[..], b"https", b"", b"/"] {
                put_vec(&mut chunked, v);
            }
            chunked.push(0);
            for c in [&b"ab"[..], b"cd", b"e"] {
                put_vec(&mut chunked, c);
            }
            chunked.push(0);
            chunked.push(0);
            chunked.extend([0; 10]);
            let r = Request::from_padded_bhttp(&chunked).unwrap();
            assert_eq!(r.body, b"abcde");
            same_request(&chunked).unwrap();
        }
    }
}
