//! The HTTP messages carried inside the channel, and their padded Binary HTTP
//! (RFC 9292) encoding.
//!
//! These types hold plaintext. Their `Debug` prints method, path, status, header
//! *names* and body length only, and bodies are zeroized on drop, so plaintext cannot
//! reach a log by accident.

use std::fmt;
use std::io::Cursor;

use zeroize::Zeroize;

use super::ChannelError;
use super::padding;

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

    fn from_bhttp(fields: &bhttp::FieldSection) -> Result<Self, ChannelError> {
        let mut out = Self::new();
        for f in fields.iter() {
            validate_field(f.name(), f.value())?;
            let (Ok(n), Ok(v)) = (
                std::str::from_utf8(f.name()),
                std::str::from_utf8(f.value()),
            ) else {
                return Err(ChannelError::Malformed {
                    what: "header field not UTF-8",
                });
            };
            out.0.push((n.to_ascii_lowercase(), v.to_owned()));
        }
        Ok(out)
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
    /// Body.
    pub body: Vec<u8>,
}

impl Drop for Request {
    fn drop(&mut self) {
        self.body.zeroize();
    }
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
            body,
        }
    }

    /// The padded Binary HTTP encoding (known-length for whole messages, indeterminate-
    /// length for chunked ones, as draft-ietf-ohai-chunked-ohttp asks).
    pub(crate) fn to_padded_bhttp(&self, mode: bhttp::Mode) -> Result<Vec<u8>, ChannelError> {
        if !self.method.bytes().all(is_tchar) || self.method.is_empty() {
            return Err(ChannelError::Malformed { what: "method" });
        }
        if !self.path.starts_with('/') || self.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ChannelError::Malformed { what: "path" });
        }
        let mut m = bhttp::Message::request(
            self.method.as_bytes().to_vec(),
            b"https".to_vec(),
            Vec::new(),
            self.path.as_bytes().to_vec(),
        );
        for (n, v) in self.headers.iter() {
            m.put_header(n, v);
        }
        m.write_content(&self.body);
        encode_padded(&m, mode)
    }

    /// Parse a padded Binary HTTP request, either framing.
    pub(crate) fn from_padded_bhttp(bytes: &[u8]) -> Result<Self, ChannelError> {
        let m = decode_padded(bytes)?;
        let c = m.control();
        let (Some(method), Some(path)) = (c.method(), c.path()) else {
            return Err(ChannelError::Malformed {
                what: "expected a request",
            });
        };
        let (Ok(method), Ok(path)) = (std::str::from_utf8(method), std::str::from_utf8(path))
        else {
            return Err(ChannelError::Malformed {
                what: "method or path not UTF-8",
            });
        };
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(ChannelError::Malformed { what: "method" });
        }
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ChannelError::Malformed { what: "path" });
        }
        Ok(Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Headers::from_bhttp(m.header())?,
            body: m.content().to_vec(),
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
    /// Body.
    pub body: Vec<u8>,
    /// Trailer fields (a streamed response's receipt travels here).
    pub trailers: Headers,
}

impl Drop for Response {
    fn drop(&mut self) {
        self.body.zeroize();
    }
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
            body,
            trailers: Headers::new(),
        }
    }

    pub(crate) fn to_padded_bhttp(&self) -> Result<Vec<u8>, ChannelError> {
        let status = final_status(u64::from(self.status))?;
        let mut m = bhttp::Message::response(status);
        for (n, v) in self.headers.iter() {
            m.put_header(n, v);
        }
        for (n, v) in self.trailers.iter() {
            m.put_trailer(n, v);
        }
        m.write_content(&self.body);
        encode_padded(&m, bhttp::Mode::KnownLength)
    }

    pub(crate) fn from_padded_bhttp(bytes: &[u8]) -> Result<Self, ChannelError> {
        let m = decode_padded(bytes)?;
        let Some(status) = m.control().status() else {
            return Err(ChannelError::Malformed {
                what: "expected a response",
            });
        };
        let status = final_status(u64::from(status.code()))?;
        Ok(Self {
            status: status.code(),
            headers: Headers::from_bhttp(m.header())?,
            body: m.content().to_vec(),
            trailers: Headers::from_bhttp(m.trailer())?,
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

fn encode_padded(m: &bhttp::Message, mode: bhttp::Mode) -> Result<Vec<u8>, ChannelError> {
    let mut out = Vec::new();
    m.write_bhttp(mode, &mut out)
        .map_err(|_| ChannelError::Malformed {
            what: "message could not be encoded",
        })?;
    let padded = padding::bucket(out.len());
    out.resize(padded, 0);
    Ok(out)
}

fn decode_padded(bytes: &[u8]) -> Result<bhttp::Message, ChannelError> {
    let mut cursor = Cursor::new(bytes);
    let m = bhttp::Message::read_bhttp(&mut cursor).map_err(|_| ChannelError::Malformed {
        what: "Binary HTTP message",
    })?;
    let end = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    // RFC 9292 §3.8: anything after the message must be zero padding.
    if bytes
        .get(end..)
        .is_none_or(|rest| rest.iter().any(|&b| b != 0))
    {
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
}
