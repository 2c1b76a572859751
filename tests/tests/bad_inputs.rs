//! Issue 12's bad-input catalogue: every malformed, hostile or stale input a client, a
//! network peer or an operator can present, each with its expected outcome, tried against
//! ONE real `veil-enclave` (simulated TEE) + `veil-gateway` stack, over raw TCP where the
//! bytes themselves are the attack.
//!
//! Categories: OHTTP envelopes, chunked OHTTP framing, Binary HTTP inside a valid envelope,
//! key ids, oversize bodies and headers, the inner request (JSON, UTF-8, content type,
//! path, method, outer metadata), header injection and request smuggling, attestation
//! bundles (client-side verification), API keys, SQL-shaped key names, HTTP/2 (rapid reset,
//! CONTINUATION flood, header list and stream limits, PING and SETTINGS floods), slowloris.
//!
//! Each case is recorded as (category, name, expected, actual); a summary line per
//! category ("N cases tried, M as expected") is printed for RELIABILITY.md, and the test
//! fails listing every case whose outcome differs from what a security product must do.
//! After all cases both processes must still answer `/healthz`; no log may hold
//! "panicked" or an injected marker; and the plaintext canary planted in every sealed
//! request, and the API keys, appear in no log, no unsealed answer and none of the
//! gateway's upstream bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    clippy::type_complexity
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::{AsyncReadExt as _, AsyncWriteExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use veil_attestation::bundle::Bundle;
use veil_attestation::channel::{KemKind, KeyConfig};
use veil_attestation::verify::{Policy, verify_bundle};
use veil_client::procs::{Proc, create_key, sibling, sim_enclave, sim_gateway};

const CHAT_MODEL: &str = "SmolLM2-135M-Instruct";
const EMBED_MODEL: &str = "all-MiniLM-L6-v2";
/// Limits the stack runs with, small so that oversize cases stay cheap.
const ENCLAVE_MAX_REQUEST: usize = 1 << 20;
const ENCLAVE_MAX_INNER_BODY: usize = 64 << 10;
const GATEWAY_MAX_BODY: usize = 256 << 10;
/// How long a connection that sends its headers one byte a second may live: hyper's own
/// default header-read timeout (30 s), plus slack.
const SLOWLORIS_BOUND: Duration = Duration::from_secs(40);
/// Markers that must never reach the upstream request or any log line.
const INJECTED: [&str; 3] = ["x-smuggled-hdr", "smuggled-path", "injected-marker"];
/// Plaintext planted in every sealed request: it must never appear outside the envelope
/// (logs, unsealed answers, the gateway's upstream bytes).
const CANARY: &str = "canary-bad-inputs-5e1f";
/// Every byte answered to this test on any connection, for the canary search.
static ANSWERED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

// ------------------------------------------------------------------ the record

#[derive(Debug, Clone)]
struct Case {
    category: &'static str,
    name: String,
    expected: String,
    actual: String,
    ok: bool,
}

#[derive(Default)]
struct Catalogue {
    cases: Vec<Case>,
}

impl Catalogue {
    fn record(
        &mut self,
        category: &'static str,
        name: impl Into<String>,
        expected: impl Into<String>,
        actual: impl Into<String>,
        ok: bool,
    ) {
        let c = Case {
            category,
            name: name.into(),
            expected: expected.into(),
            actual: actual.into(),
            ok,
        };
        println!(
            "bad-input {} {} / {}: expected {}; actual {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.category,
            c.name,
            c.expected,
            c.actual
        );
        self.cases.push(c);
    }

    fn expect(&mut self, category: &'static str, name: impl Into<String>, e: &Expect, o: &Outcome) {
        self.record(category, name, e.to_string(), o.to_string(), e.matches(o));
    }
}

/// What a case must produce.
#[derive(Debug, Clone)]
enum Expect {
    /// An outer (unsealed) error in OpenAI's shape with this status and code.
    Plain(u16, &'static str),
    /// The envelope opened: outer 200, and the sealed inner response has this status
    /// and (for errors) this OpenAI code; "" for a success.
    Sealed(u16, &'static str),
    /// Refused by the HTTP parser before any handler: one of these statuses (no body
    /// required), or the connection closed without an answer.
    Rejected(&'static [u16]),
    /// Any of these.
    OneOf(Vec<Expect>),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(s, c) => write!(f, "plain {s} {c}"),
            Self::Sealed(s, "") => write!(f, "sealed {s}"),
            Self::Sealed(s, c) => write!(f, "sealed {s} {c}"),
            Self::Rejected(s) => write!(f, "rejected {s:?} or closed"),
            Self::OneOf(list) => {
                let all: Vec<String> = list.iter().map(ToString::to_string).collect();
                write!(f, "{}", all.join(" | "))
            }
        }
    }
}

impl Expect {
    fn matches(&self, o: &Outcome) -> bool {
        match (self, o) {
            (Self::Plain(s, c), Outcome::Plain { status, code }) => s == status && c == code,
            (Self::Sealed(s, c), Outcome::Sealed { status, code }) => s == status && c == code,
            (Self::Rejected(list), Outcome::Bare { status, .. }) => list.contains(status),
            (Self::Rejected(list), Outcome::Plain { status, .. }) => list.contains(status),
            (Self::Rejected(_), Outcome::Closed) => true,
            (Self::OneOf(list), o) => list.iter().any(|e| e.matches(o)),
            _ => false,
        }
    }
}

/// What a case produced.
#[derive(Debug, Clone)]
enum Outcome {
    Plain { status: u16, code: String },
    Sealed { status: u16, code: String },
    Bare { status: u16, what: String },
    Closed,
    Silent,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain { status, code } => write!(f, "plain {status} {code}"),
            Self::Sealed { status, code } if code.is_empty() => write!(f, "sealed {status}"),
            Self::Sealed { status, code } => write!(f, "sealed {status} {code}"),
            Self::Bare { status, what } => write!(f, "{status} ({what})"),
            Self::Closed => f.write_str("connection closed without an answer"),
            Self::Silent => f.write_str("no answer and still open"),
        }
    }
}

// ------------------------------------------------------------------ raw HTTP/1.1

#[derive(Debug, Default, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Complete responses read on the connection.
    responses: usize,
    /// The peer closed the connection (EOF or reset) before the read deadline.
    closed: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 request with `Host`, `Content-Length` and `Connection: close`, plus
/// `headers` written verbatim (raw bytes: nothing is validated).
fn http_request(method: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: veil.test\r\nconnection: close\r\n")
        .into_bytes();
    for (n, v) in headers {
        r.extend_from_slice(n.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    r.extend_from_slice(body);
    r
}

/// Writes `request` and reads until the peer closes or `wait` passes; keeps the write
/// side open meanwhile (hyper closes half-closed connections).
async fn raw_exchange(addr: SocketAddr, request: Vec<u8>, wait: Duration) -> Resp {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        let _ = wr.flush().await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(wr);
    });
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let deadline = Instant::now() + wait;
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    };
    writer.abort();
    ANSWERED.lock().unwrap().extend_from_slice(&raw);
    let mut out = Resp {
        closed,
        ..Resp::default()
    };
    let mut rest: &[u8] = &raw;
    while let Some((r, used)) = parse_response(rest) {
        if out.responses == 0 {
            out.status = r.status;
            out.headers = r.headers;
            out.body = r.body;
        }
        out.responses += 1;
        rest = &rest[used..];
        if used == 0 {
            break;
        }
    }
    out
}

/// One response from the front of `raw` (1xx skipped) and the bytes it used.
fn parse_response(raw: &[u8]) -> Option<(Resp, usize)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut pos = end + 4;
    if (100..200).contains(&status) {
        let (r, used) = parse_response(&raw[pos..])?;
        return Some((r, pos + used));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = raw[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size_text = std::str::from_utf8(&raw[pos..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                // Trailers, then an empty line.
                let t_end = raw[pos..].windows(2).position(|w| w == b"\r\n")?;
                if t_end == 0 {
                    pos += 2;
                } else {
                    let all = raw[pos..].windows(4).position(|w| w == b"\r\n\r\n")?;
                    pos += all + 4;
                }
                break body;
            }
            body.extend_from_slice(raw.get(pos..pos + size)?);
            pos += size + 2;
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let b = raw.get(pos..pos + len)?.to_vec();
        pos += len;
        b
    } else if status == 204 || status == 304 {
        Vec::new()
    } else {
        let b = raw[pos..].to_vec();
        pos = raw.len();
        b
    };
    Some((
        Resp {
            status,
            headers,
            body,
            responses: 1,
            closed: false,
        },
        pos,
    ))
}

/// The `code` of an OpenAI-shaped error body (exactly `{"error": {message, type, param,
/// code}}`, served as application/json), or `None` when the body is not one.
fn openai_code(r: &Resp) -> Option<String> {
    if r.header("content-type") != Some("application/json") {
        return None;
    }
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    openai_code_of(&v)
}

fn openai_code_of(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    let e = obj.get("error")?.as_object()?;
    if obj.len() != 1 || e.len() != 4 {
        return None;
    }
    e.get("message")?.as_str().filter(|m| !m.is_empty())?;
    e.get("type")?.as_str()?;
    let p = e.get("param")?;
    if !(p.is_null() || p.is_string()) {
        return None;
    }
    e.get("code")?.as_str().map(str::to_owned)
}

// ------------------------------------------------------------------ sealing raw bytes

/// A shared in-memory sink for `ohttp`'s streaming encapsulator.
#[derive(Clone, Default)]
struct SharedSink(Arc<Mutex<Vec<u8>>>);

impl SharedSink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl futures::io::AsyncWrite for SharedSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Opens the response to one sealed request: the Binary HTTP bytes inside.
enum Opener {
    Whole(ohttp::ClientResponse),
    Chunked(Box<dyn FnOnce(Vec<u8>) -> Result<Vec<u8>, String>>),
    None,
}

impl Opener {
    fn open(self, body: Vec<u8>) -> Result<Vec<u8>, String> {
        match self {
            Self::Whole(r) => r.decapsulate(&body).map_err(|e| format!("{e:?}")),
            Self::Chunked(f) => f(body),
            Self::None => Err("nothing to open with".into()),
        }
    }
}

/// Seals `plaintext` (any bytes, not necessarily Binary HTTP) as a whole OHTTP request to
/// `config` (its first AEAD).
fn seal_whole(config: &KeyConfig, plaintext: &[u8]) -> (Vec<u8>, Opener) {
    let c = ohttp::ClientRequest::from_encoded_config(config.as_bytes()).unwrap();
    let (enc, resp) = c.encapsulate(plaintext).unwrap();
    (enc, Opener::Whole(resp))
}

/// Seals `pieces` as a chunked OHTTP request, one chunk per piece (pieces up to 16 KiB).
fn seal_chunked(config: &KeyConfig, pieces: &[Vec<u8>]) -> (Vec<u8>, Opener) {
    let sink = SharedSink::default();
    let c = ohttp::ClientRequest::from_encoded_config(config.as_bytes()).unwrap();
    let mut w = c.encapsulate_stream(sink.clone()).unwrap();
    futures::executor::block_on(async {
        for p in pieces {
            w.write_all(p).await.unwrap();
        }
        w.close().await.unwrap();
    });
    let sealed = sink.take();
    let open = move |body: Vec<u8>| -> Result<Vec<u8>, String> {
        let mut r = w
            .response(futures::io::Cursor::new(body))
            .map_err(|e| format!("{e:?}"))?;
        let mut out = Vec::new();
        futures::executor::block_on(r.read_to_end(&mut out)).map_err(|e| e.to_string())?;
        Ok(out)
    };
    (sealed, Opener::Chunked(Box::new(open)))
}

/// Splits a chunked OHTTP request into its header and chunks (each with its length
/// prefix); the last element is the final chunk (`0` prefix and the rest).
fn split_chunks(sealed: &[u8], header_len: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (head, mut rest) = sealed.split_at(header_len);
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let (len, n) = read_varint(rest).unwrap();
        if len == 0 {
            chunks.push(rest.to_vec());
            break;
        }
        let total = n + usize::try_from(len).unwrap();
        chunks.push(rest[..total].to_vec());
        rest = &rest[total..];
    }
    (head.to_vec(), chunks)
}

fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let n = 1usize << (first >> 6);
    let mut v = u64::from(first & 0x3f);
    for x in b.get(1..n)? {
        v = (v << 8) | u64::from(*x);
    }
    Some((v, n))
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(u8::try_from(v).unwrap());
    } else if v < 1 << 14 {
        out.extend_from_slice(&(u16::try_from(v).unwrap() | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&(u32::try_from(v).unwrap() | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

fn put_vec(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

// ------------------------------------------------------------------ Binary HTTP by hand

fn control(out: &mut Vec<u8>, method: &str, path: &str) {
    put_vec(out, method.as_bytes());
    put_vec(out, b"https");
    put_vec(out, b"");
    put_vec(out, path.as_bytes());
}

/// A known-length Binary HTTP request (RFC 9292 §3), zero-padded to 1 KiB.
fn bhttp_known(method: &str, path: &str, fields: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    control(&mut out, method, path);
    let mut f = Vec::new();
    for (n, v) in fields {
        put_vec(&mut f, n.as_bytes());
        put_vec(&mut f, v);
    }
    put_vec(&mut out, &f);
    put_vec(&mut out, body);
    put_varint(&mut out, 0); // empty trailer section
    if out.len() < 1024 {
        out.resize(1024, 0);
    }
    out
}

/// An indeterminate-length Binary HTTP request, as chunked OHTTP carries.
fn bhttp_indeterminate(method: &str, path: &str, fields: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = vec![2u8];
    control(&mut out, method, path);
    for (n, v) in fields {
        put_vec(&mut out, n.as_bytes());
        put_vec(&mut out, v);
    }
    out.push(0);
    if !body.is_empty() {
        put_vec(&mut out, body);
    }
    out.push(0);
    out.push(0);
    out
}

fn json_fields() -> Vec<(&'static str, &'static [u8])> {
    vec![("content-type", b"application/json")]
}

fn embed_body() -> Vec<u8> {
    json!({"model": EMBED_MODEL, "input": format!("a bad-input control sentence {CANARY}")})
        .to_string()
        .into_bytes()
}

fn embed_known() -> Vec<u8> {
    bhttp_known("POST", "/v1/embeddings", &json_fields(), &embed_body())
}

fn embed_indeterminate() -> Vec<u8> {
    bhttp_indeterminate("POST", "/v1/embeddings", &json_fields(), &embed_body())
}

/// Parses the inner Binary HTTP response: (status, OpenAI code or "").
fn inner_outcome(bhttp_bytes: &[u8]) -> Outcome {
    let mut cur = std::io::Cursor::new(bhttp_bytes);
    let Ok(m) = bhttp::Message::read_bhttp(&mut cur) else {
        return Outcome::Bare {
            status: 200,
            what: "inner response not Binary HTTP".into(),
        };
    };
    let status = m.control().status().map_or(0, |s| s.code());
    let code = if status == 200 {
        String::new()
    } else {
        serde_json::from_slice::<Value>(m.content())
            .ok()
            .and_then(|v| openai_code_of(&v))
            .unwrap_or_else(|| "<not an OpenAI error>".into())
    };
    Outcome::Sealed { status, code }
}

// ------------------------------------------------------------------ the stack

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    Enclave,
    Gateway,
}

impl Hop {
    fn label(self) -> &'static str {
        match self {
            Self::Enclave => "enclave /ohttp",
            Self::Gateway => "gateway /v1/ohttp",
        }
    }
}

struct Stack {
    enclave: Proc,
    gateway: Proc,
    key: String,
    x25519: KeyConfig,
    xwing: KeyConfig,
    upstream: Recorder,
    database: PathBuf,
}

impl Stack {
    fn addr(&self, hop: Hop) -> SocketAddr {
        match hop {
            Hop::Enclave => self.enclave.addr(),
            Hop::Gateway => self.gateway.addr(),
        }
    }
    fn path(hop: Hop) -> &'static str {
        match hop {
            Hop::Enclave => "/ohttp",
            Hop::Gateway => "/v1/ohttp",
        }
    }

    /// POSTs `body` to the hop's OHTTP endpoint with `content-type: ct`, `veil-key-id`
    /// when given, `authorization` at the gateway, and `extra` headers.
    async fn post(
        &self,
        hop: Hop,
        ct: Option<&str>,
        key_id: Option<&str>,
        extra: &[(&str, &[u8])],
        body: &[u8],
    ) -> Resp {
        let auth = format!("Bearer {}", self.key);
        let mut h: Vec<(&str, &[u8])> = Vec::new();
        if let Some(ct) = ct {
            h.push(("content-type", ct.as_bytes()));
        }
        if let Some(k) = key_id {
            h.push(("veil-key-id", k.as_bytes()));
        }
        if hop == Hop::Gateway {
            h.push(("authorization", auth.as_bytes()));
        }
        h.extend_from_slice(extra);
        let req = http_request("POST", Self::path(hop), &h, body);
        raw_exchange(self.addr(hop), req, Duration::from_secs(20)).await
    }

    /// Sends and classifies: opens a 200 answer with `opener`.
    async fn send(
        &self,
        hop: Hop,
        ct: Option<&str>,
        key_id: Option<&str>,
        extra: &[(&str, &[u8])],
        body: &[u8],
        opener: Opener,
    ) -> Outcome {
        let r = self.post(hop, ct, key_id, extra, body).await;
        classify(&r, opener)
    }
}

fn classify(r: &Resp, opener: Opener) -> Outcome {
    if r.responses == 0 {
        return if r.closed {
            Outcome::Closed
        } else {
            Outcome::Silent
        };
    }
    if r.status == 200
        && matches!(
            r.header("content-type"),
            Some("message/ohttp-res" | "message/ohttp-chunked-res")
        )
    {
        return match opener.open(r.body.clone()) {
            Ok(b) => inner_outcome(&b),
            Err(e) => Outcome::Bare {
                status: 200,
                what: format!("sealed answer did not open: {e}"),
            },
        };
    }
    match openai_code(r) {
        Some(code) => Outcome::Plain {
            status: r.status,
            code,
        },
        None => Outcome::Bare {
            status: r.status,
            what: format!(
                "not an OpenAI error: content-type {:?}, {} body bytes",
                r.header("content-type"),
                r.body.len()
            ),
        },
    }
}

/// A TCP forwarder between the gateway and the enclave that records every upstream byte.
struct Recorder {
    addr: SocketAddr,
    up: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up: Arc<Mutex<Vec<u8>>> = Arc::default();
        let rec = up.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (mut ir, mut iw) = inbound.into_split();
                let (mut or, mut ow) = outbound.into_split();
                let rec = rec.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = ir.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        if ow.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = ow.shutdown().await;
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut or, &mut iw).await;
                    let _ = iw.shutdown().await;
                });
            }
        });
        Self { addr, up }
    }
    fn upstream_text(&self) -> String {
        String::from_utf8_lossy(&self.up.lock().unwrap()).to_ascii_lowercase()
    }
}

fn models_dir() -> String {
    std::env::var("VEIL_MODELS_DIR").unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .to_string_lossy()
            .into_owned()
    })
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    raw_exchange(
        addr,
        http_request("GET", path, &[], b""),
        Duration::from_secs(10),
    )
    .await
}

fn gateway_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(sibling("veil-gateway").unwrap())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn ledger_rows(db: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row("SELECT COUNT(*) FROM usage_receipts", [], |r| r.get(0))
        .unwrap()
}

// ------------------------------------------------------------------ the test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_catalogue() {
    let started = Instant::now();
    let tmp = std::env::temp_dir().join(format!(
        "veil-bad-inputs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    let database = tmp.join("gateway.db");
    let db = database.to_str().unwrap().to_owned();
    let models = models_dir();

    let max_request = ENCLAVE_MAX_REQUEST.to_string();
    let max_inner = ENCLAVE_MAX_INNER_BODY.to_string();
    let enclave = sim_enclave(
        &models,
        &[
            "--max-request-bytes",
            &max_request,
            "--max-inner-body-bytes",
            &max_inner,
        ],
    )
    .unwrap();
    // Enclave B: only its bundle is used (for mixed-bundle cases).
    let enclave_b = sim_enclave(&models, &[]).unwrap();
    let key = create_key(&db, "good-key").unwrap();
    let revoked = create_key(&db, "revoked-key").unwrap();
    let out = gateway_cli(&["keys", "revoke", "--database", &db, "--name", "revoked-key"]);
    assert!(out.status.success(), "{out:?}");
    let upstream = Recorder::start(enclave.addr()).await;
    let gw_max = GATEWAY_MAX_BODY.to_string();
    let gateway = sim_gateway(
        &format!("http://{}", upstream.addr),
        &db,
        &[
            "--max-body-bytes",
            &gw_max,
            "--admin-token",
            "bad-inputs-admin",
        ],
    )
    .unwrap();
    // Wait until the gateway has verified its backend.
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(gateway.addr(), "/healthz").await.status != 200 {
        assert!(Instant::now() < deadline, "gateway never became healthy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bundle_a = get(enclave.addr(), "/attestation").await.body;
    let bundle_b = get(enclave_b.addr(), "/attestation").await.body;
    let identity = verify_bundle(
        &Bundle::parse(&bundle_a).unwrap(),
        &Policy::insecure_allow_sim(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let configs = identity.key_configs().configs();
    let x25519 = configs
        .iter()
        .find(|c| c.kem() == KemKind::X25519)
        .unwrap()
        .clone();
    let xwing = configs
        .iter()
        .find(|c| c.kem() == KemKind::XWing)
        .unwrap()
        .clone();
    let s = Stack {
        enclave,
        gateway,
        key,
        x25519,
        xwing,
        upstream,
        database,
    };

    // Slowloris runs beside every other case.
    let slow_meta = format!(
        "authorization: Bearer {}\r\nveil-key-id: {}\r\n",
        s.key,
        s.x25519.id()
    );
    let slow = tokio::spawn(slowloris(s.enclave.addr(), s.gateway.addr(), slow_meta));

    let mut cat = Catalogue::default();
    ohttp_cases(&s, &mut cat).await;
    chunked_cases(&s, &mut cat).await;
    bhttp_cases(&s, &mut cat).await;
    key_id_cases(&s, &mut cat).await;
    oversize_cases(&s, &mut cat).await;
    inner_cases(&s, &mut cat).await;
    injection_cases(&s, &mut cat).await;
    bundle_cases(&bundle_a, &bundle_b, &mut cat);
    api_key_cases(&s, &revoked, &mut cat).await;
    key_name_cases(&s, &db, &mut cat).await;
    http2_cases(&s, &mut cat).await;

    // Slowloris: every slow connection closed within the bound, and normal requests
    // answered while they were open.
    for (name, expected, actual, ok) in slow.await.unwrap() {
        cat.record("slowloris", name, expected, actual, ok);
    }
    admission_cases(&s, &mut cat).await;

    // Nothing panicked, nothing leaked, everything still answers.
    for (hop, addr) in [
        (Hop::Enclave, s.enclave.addr()),
        (Hop::Gateway, s.gateway.addr()),
    ] {
        let h = get(addr, "/healthz").await;
        cat.record(
            "aftermath",
            format!("{} still answers /healthz", hop.label()),
            "200",
            h.status.to_string(),
            h.status == 200,
        );
    }
    for (label, p) in [
        ("enclave", &s.enclave),
        ("enclave B", &enclave_b),
        ("gateway", &s.gateway),
    ] {
        let log = p.log_text().to_ascii_lowercase();
        let panicked = log.contains("panicked");
        cat.record(
            "aftermath",
            format!("{label} log has no panic"),
            "no \"panicked\"",
            if panicked { "panicked" } else { "none" },
            !panicked,
        );
        let leaked: Vec<_> = INJECTED.iter().filter(|m| log.contains(*m)).collect();
        cat.record(
            "aftermath",
            format!("{label} log holds no injected marker"),
            "none",
            format!("{leaked:?}"),
            leaked.is_empty(),
        );
    }
    // Neither the planted plaintext nor an API key anywhere outside.
    let answered = String::from_utf8_lossy(&ANSWERED.lock().unwrap()).to_ascii_lowercase();
    let logs = [&s.enclave, &enclave_b, &s.gateway]
        .iter()
        .map(|p| p.log_text().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("\n");
    let upstream = s.upstream.upstream_text();
    for (what, secret) in [
        ("the planted plaintext canary", CANARY.to_owned()),
        ("the API key", s.key.to_ascii_lowercase()),
        ("the revoked API key", revoked.to_ascii_lowercase()),
    ] {
        let places: Vec<&str> = [
            ("logs", &logs),
            ("unsealed answers", &answered),
            ("gateway upstream bytes", &upstream),
        ]
        .into_iter()
        .filter(|(_, text)| text.contains(&secret))
        .map(|(place, _)| place)
        .collect();
        cat.record(
            "aftermath",
            format!("{what} appears nowhere outside"),
            "nowhere",
            format!("{places:?}"),
            places.is_empty(),
        );
    }
    let up = s.upstream.upstream_text();
    let leaked: Vec<_> = INJECTED.iter().filter(|m| up.contains(*m)).collect();
    cat.record(
        "aftermath",
        "no injected header or smuggled request reached the enclave from the gateway",
        "none",
        format!("{leaked:?}"),
        leaked.is_empty(),
    );

    // The summary RELIABILITY.md quotes.
    let mut by_cat: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for c in &cat.cases {
        if !order.contains(&c.category) {
            order.push(c.category);
        }
        let e = by_cat.entry(c.category).or_default();
        e.0 += 1;
        e.1 += usize::from(c.ok);
    }
    println!("\nbad-input catalogue summary");
    for c in &order {
        let (n, ok) = by_cat[c];
        println!("bad-inputs {c}: {n} cases tried, {ok} as expected");
    }
    let total = cat.cases.len();
    let ok = cat.cases.iter().filter(|c| c.ok).count();
    println!(
        "bad-inputs total: {total} cases tried, {ok} as expected ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&tmp);
    let failed: Vec<String> = cat
        .cases
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            format!(
                "{} / {}: expected {}; actual {}",
                c.category, c.name, c.expected, c.actual
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {total} bad inputs did not get the expected outcome:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ------------------------------------------------------------------ OHTTP envelopes

/// A request that does not open: a plain 400 naming only the failure's kind (the
/// enclave deliberately says no more, so either kind is right here).
fn open_or_truncated() -> Expect {
    Expect::OneOf(vec![
        Expect::Plain(400, "open_failed"),
        Expect::Plain(400, "truncated"),
    ])
}

/// The code for a malformed outer metadata header: the gateway names the header, the
/// enclave answers `invalid_outer_header` for all of them.
fn outer_code(hop: Hop, gateway_code: &'static str) -> Expect {
    match hop {
        Hop::Gateway => Expect::Plain(400, gateway_code),
        Hop::Enclave => Expect::Plain(400, "invalid_outer_header"),
    }
}

async fn ohttp_cases(s: &Stack, cat: &mut Catalogue) {
    let kid = s.x25519.id().to_string();
    let req = "message/ohttp-req";
    let chunked = "message/ohttp-chunked-req";
    for hop in [Hop::Enclave, Hop::Gateway] {
        // Control: a good request is answered.
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let out = s.send(hop, Some(req), Some(&kid), &[], &b, o).await;
        cat.expect(
            "ohttp",
            format!("{}: control, valid X25519 request", hop.label()),
            &Expect::Sealed(200, ""),
            &out,
        );
        let xwing_kid = s.xwing.id().to_string();
        let (b, o) = seal_whole(&s.xwing, &embed_known());
        let out = s.send(hop, Some(req), Some(&xwing_kid), &[], &b, o).await;
        cat.expect(
            "ohttp",
            format!("{}: control, valid X-Wing request", hop.label()),
            &Expect::Sealed(200, ""),
            &out,
        );

        let (good, _) = seal_whole(&s.x25519, &embed_known());
        let mut table: Vec<(&str, Option<&str>, Vec<u8>, Expect)> = vec![
            (
                "empty body",
                Some(req),
                Vec::new(),
                Expect::Plain(400, "open_failed"),
            ),
            (
                "garbage",
                Some(req),
                b"this is not oblivious http at all".to_vec(),
                Expect::Plain(400, "open_failed"),
            ),
            (
                "truncated header (5 bytes)",
                Some(req),
                good[..5].to_vec(),
                Expect::Plain(400, "open_failed"),
            ),
            (
                "truncated enc (header + 10 bytes)",
                Some(req),
                good[..17].to_vec(),
                Expect::Plain(400, "open_failed"),
            ),
            (
                "header and enc only, no ciphertext",
                Some(req),
                good[..39].to_vec(),
                Expect::Plain(400, "open_failed"),
            ),
        ];
        let mut m = good.clone();
        m[0] = 9;
        table.push((
            "unknown key id byte",
            Some(req),
            m,
            Expect::Plain(400, "open_failed"),
        ));
        let mut m = good.clone();
        m[1..3].copy_from_slice(&0x0010u16.to_be_bytes());
        table.push((
            "unsupported KEM id (P-256)",
            Some(req),
            m,
            Expect::Plain(400, "unsupported_suite"),
        ));
        let mut m = good.clone();
        m[1..3].copy_from_slice(&0xfffeu16.to_be_bytes());
        table.push((
            "unknown KEM id 0xfffe",
            Some(req),
            m,
            Expect::Plain(400, "unsupported_suite"),
        ));
        let mut m = good.clone();
        m[3..5].copy_from_slice(&0x0003u16.to_be_bytes());
        table.push((
            "unsupported KDF id (HKDF-SHA512)",
            Some(req),
            m,
            Expect::Plain(400, "unsupported_suite"),
        ));
        let mut m = good.clone();
        m[5..7].copy_from_slice(&0x0002u16.to_be_bytes());
        table.push((
            "AEAD not offered (AES-256-GCM)",
            Some(req),
            m,
            Expect::Plain(400, "unsupported_suite"),
        ));
        let mut m = good.clone();
        m[5..7].copy_from_slice(&0xffffu16.to_be_bytes());
        table.push((
            "export-only AEAD 0xffff",
            Some(req),
            m,
            Expect::Plain(400, "unsupported_suite"),
        ));
        let mut m = good.clone();
        m[20] ^= 0x01;
        table.push((
            "bit flipped in enc",
            Some(req),
            m,
            Expect::Plain(400, "open_failed"),
        ));
        let mut m = good.clone();
        let mid = m.len() / 2;
        m[mid] ^= 0x80;
        table.push((
            "bit flipped in ciphertext",
            Some(req),
            m,
            Expect::Plain(400, "open_failed"),
        ));
        let mut m = good.clone();
        let last = m.len() - 1;
        m[last] ^= 0x01;
        table.push((
            "bit flipped in tag",
            Some(req),
            m,
            Expect::Plain(400, "open_failed"),
        ));
        let mut m = good.clone();
        m.extend_from_slice(b"trailing garbage");
        table.push((
            "trailing garbage",
            Some(req),
            m,
            Expect::Plain(400, "open_failed"),
        ));
        table.push((
            "wrong content type application/json",
            Some("application/json"),
            good.clone(),
            Expect::Plain(415, "unsupported_media_type"),
        ));
        table.push((
            "content type message/bhttp",
            Some("message/bhttp"),
            good.clone(),
            Expect::Plain(415, "unsupported_media_type"),
        ));
        table.push((
            "no content type",
            None,
            good.clone(),
            Expect::Plain(415, "unsupported_media_type"),
        ));
        table.push((
            "whole request sent as chunked",
            Some(chunked),
            good.clone(),
            // The bytes are read as chunk lengths: any opaque failure is right.
            Expect::OneOf(vec![
                Expect::Plain(400, "open_failed"),
                Expect::Plain(400, "truncated"),
                Expect::Plain(400, "request_too_large"),
            ]),
        ));
        let (c, _) = seal_chunked(&s.x25519, &[embed_indeterminate()]);
        table.push((
            "chunked request sent as whole",
            Some(req),
            c,
            Expect::Plain(400, "open_failed"),
        ));
        for (name, ct, body, e) in table {
            let out = s.send(hop, ct, Some(&kid), &[], &body, Opener::None).await;
            cat.expect("ohttp", format!("{}: {name}", hop.label()), &e, &out);
        }
    }
}

// ------------------------------------------------------------------ chunked framing

async fn chunked_cases(s: &Stack, cat: &mut Catalogue) {
    let kid = s.x25519.id().to_string();
    let ct = "message/ohttp-chunked-req";
    let header_len = 7 + 32; // key id, KEM, KDF, AEAD, X25519 enc
    let plain = embed_indeterminate();
    let third = plain.len() / 3;
    let pieces = vec![
        plain[..third].to_vec(),
        plain[third..2 * third].to_vec(),
        plain[2 * third..].to_vec(),
    ];
    for hop in [Hop::Enclave, Hop::Gateway] {
        let (b, o) = seal_chunked(&s.x25519, &pieces);
        let out = s.send(hop, Some(ct), Some(&kid), &[], &b, o).await;
        cat.expect(
            "chunked",
            format!("{}: control, three chunks and a final one", hop.label()),
            &Expect::Sealed(200, ""),
            &out,
        );

        let fresh = || {
            let (b, _) = seal_chunked(&s.x25519, &pieces);
            split_chunks(&b, header_len)
        };
        let join = |h: &[u8], cs: &[Vec<u8>]| {
            let mut out = h.to_vec();
            for c in cs {
                out.extend_from_slice(c);
            }
            out
        };
        let mut table: Vec<(&str, Vec<u8>, Expect)> = Vec::new();
        let (h, cs) = fresh();
        assert_eq!(cs.len(), 4, "three chunks and a final one");
        table.push((
            "truncated stream: no final chunk",
            join(&h, &cs[..3]),
            Expect::Plain(400, "truncated"),
        ));
        let (h, cs) = fresh();
        let mut cut = join(&h, &cs[..2]);
        cut.extend_from_slice(&cs[2][..cs[2].len() / 2]);
        table.push((
            "truncated stream: cut inside a chunk",
            cut,
            Expect::Plain(400, "truncated"),
        ));
        let (h, cs) = fresh();
        table.push(("header only", h.clone(), Expect::Plain(400, "truncated")));
        let _ = cs;
        let (h, cs) = fresh();
        table.push((
            "reordered chunks (2 before 1)",
            join(
                &h,
                &[cs[1].clone(), cs[0].clone(), cs[2].clone(), cs[3].clone()],
            ),
            Expect::Plain(400, "open_failed"),
        ));
        let (h, cs) = fresh();
        table.push((
            "duplicated chunk",
            join(
                &h,
                &[
                    cs[0].clone(),
                    cs[0].clone(),
                    cs[1].clone(),
                    cs[2].clone(),
                    cs[3].clone(),
                ],
            ),
            Expect::Plain(400, "open_failed"),
        ));
        let (h, cs) = fresh();
        table.push((
            "chunk dropped from the middle",
            join(&h, &[cs[0].clone(), cs[2].clone(), cs[3].clone()]),
            Expect::Plain(400, "open_failed"),
        ));
        let (h, cs) = fresh();
        let mut fin = cs[3].clone();
        fin.truncate(1); // the 0 marker without the sealed final chunk
        table.push((
            "final chunk empty (no AEAD tag)",
            join(&h, &[cs[0].clone(), cs[1].clone(), cs[2].clone(), fin]),
            open_or_truncated(),
        ));
        let (h, cs) = fresh();
        let mut early = vec![0u8]; // a zero length where a non-final chunk belongs
        early.extend_from_slice(&cs[1]);
        table.push((
            "zero-length chunk in the middle",
            join(&h, &[cs[0].clone(), early, cs[2].clone(), cs[3].clone()]),
            Expect::Plain(400, "open_failed"),
        ));
        let (h, cs) = fresh();
        let mut tiny = Vec::new();
        put_varint(&mut tiny, 1);
        tiny.push(0xaa);
        table.push((
            "non-final chunk shorter than the AEAD tag",
            join(
                &h,
                &[
                    cs[0].clone(),
                    tiny,
                    cs[1].clone(),
                    cs[2].clone(),
                    cs[3].clone(),
                ],
            ),
            open_or_truncated(),
        ));
        let (h, _) = fresh();
        let mut huge = Vec::new();
        put_varint(&mut huge, (1 << 62) - 1);
        huge.extend_from_slice(&[0x55; 64]);
        table.push((
            "chunk length varint 2^62-1",
            join(&h, &[huge]),
            Expect::Plain(400, "request_too_large"),
        ));
        let (h, _) = fresh();
        let mut big = Vec::new();
        put_varint(&mut big, 1 << 20);
        big.extend_from_slice(&[0x55; 64]);
        table.push((
            "chunk length 1 MiB (above the 16 KiB chunk limit)",
            join(&h, &[big]),
            Expect::Plain(400, "request_too_large"),
        ));
        let (h, cs) = fresh();
        let mut trunc_varint = join(&h, &cs[..1]);
        trunc_varint.push(0xc0); // first byte of an 8-byte varint, then EOF
        table.push((
            "stream ends inside a length varint",
            trunc_varint,
            Expect::Plain(400, "truncated"),
        ));
        let (h, cs) = fresh();
        let mut fin = cs[3].clone();
        fin.extend_from_slice(b"extra bytes after the final chunk");
        table.push((
            "bytes after the final chunk",
            join(&h, &[cs[0].clone(), cs[1].clone(), cs[2].clone(), fin]),
            Expect::Plain(400, "open_failed"),
        ));
        // Chunks of two different requests spliced together.
        let (h1, c1) = fresh();
        let (_, c2) = fresh();
        table.push((
            "chunks spliced from another request",
            join(
                &h1,
                &[c1[0].clone(), c2[1].clone(), c1[2].clone(), c1[3].clone()],
            ),
            Expect::Plain(400, "open_failed"),
        ));
        for (name, body, e) in table {
            let out = s
                .send(hop, Some(ct), Some(&kid), &[], &body, Opener::None)
                .await;
            cat.expect("chunked", format!("{}: {name}", hop.label()), &e, &out);
        }
    }
}

// ------------------------------------------------------------------ Binary HTTP inside

async fn bhttp_cases(s: &Stack, cat: &mut Catalogue) {
    let kid = s.x25519.id().to_string();
    let good = embed_known();
    // Offsets in the known-length encoding: framing(1) method(1+4) scheme(1+5)
    // authority(1) path(1+14) = 28, then the field section length.
    let fields_at = 1 + 5 + 6 + 1 + 15;
    let mut table: Vec<(&str, Vec<u8>)> = vec![
        ("empty plaintext", Vec::new()),
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: not-binary-http\r\n\r\n".to_vec(),
        ),
        ("truncated inside the control data", good[..10].to_vec()),
        (
            "truncated inside the field section",
            good[..fields_at + 8].to_vec(),
        ),
    ];
    let mut m = good.clone();
    m[0] = 1; // known-length response framing in a request
    table.push(("response framing indicator", m));
    let mut m = good.clone();
    m[0] = 7;
    table.push(("unknown framing indicator 7", m));
    let mut m = good.clone();
    m[fields_at] = 0x3f; // field section claims 63 bytes: runs into the content
    table.push(("known-length: field section length too long", m));
    let mut m = good.clone();
    m[fields_at] = 0x05; // field section claims 5 bytes: cuts a field in two
    table.push(("known-length: field section length too short", m));
    let mut m = bhttp_known("POST", "/v1/embeddings", &json_fields(), &embed_body());
    let content_at = fields_at + 1 + 1 + 12 + 1 + 16;
    m[content_at] = 0x40; // two-byte varint: content length 0x40xx
    m[content_at + 1] = 0x05;
    table.push(("known-length: content length wrong", m));
    let mut m = Vec::new();
    m.push(0u8);
    control(&mut m, "POST", "/v1/embeddings");
    put_varint(&mut m, (1 << 62) - 1);
    m.extend_from_slice(&[b'a'; 100]);
    table.push(("absurd field section length 2^62-1", m));
    let mut m = Vec::new();
    m.push(0u8);
    control(&mut m, "POST", "/v1/embeddings");
    let mut f = Vec::new();
    put_varint(&mut f, 1 << 40);
    f.extend_from_slice(b"name");
    put_vec(&mut m, &f);
    put_vec(&mut m, b"{}");
    m.push(0);
    table.push(("absurd field name length 2^40", m));
    let mut m = vec![0u8];
    put_varint(&mut m, 1 << 30);
    m.extend_from_slice(b"POST");
    table.push(("absurd method length 2^30", m));
    let mut m = embed_indeterminate();
    m.truncate(m.len() - 2); // no content terminator, no trailer terminator
    table.push((
        "indeterminate-length without terminators (whole envelope)",
        m,
    ));
    let mut m = good.clone();
    let last = m.len() - 1;
    m[last] = 1;
    table.push(("non-zero byte in the padding", m));
    table.push((
        "header name with a space",
        bhttp_known(
            "POST",
            "/v1/embeddings",
            &[("content type", b"application/json")],
            &embed_body(),
        ),
    ));
    table.push((
        "header value with CR LF (injection inside the envelope)",
        bhttp_known(
            "POST",
            "/v1/embeddings",
            &[("content-type", b"application/json\r\nx-smuggled-hdr: 1")],
            &embed_body(),
        ),
    ));
    table.push((
        "header value with NUL",
        bhttp_known(
            "POST",
            "/v1/embeddings",
            &[("content-type", b"application/json\0")],
            &embed_body(),
        ),
    ));
    table.push((
        "header value not UTF-8",
        bhttp_known(
            "POST",
            "/v1/embeddings",
            &[("content-type", b"application/\xff\xfejson")],
            &embed_body(),
        ),
    ));
    table.push((
        "method with a space",
        bhttp_known("PO ST", "/v1/embeddings", &json_fields(), &embed_body()),
    ));
    table.push((
        "path without a leading slash",
        bhttp_known("POST", "v1/embeddings", &json_fields(), &embed_body()),
    ));
    table.push((
        "path with a space",
        bhttp_known("POST", "/v1/embed dings", &json_fields(), &embed_body()),
    ));
    table.push((
        "path not UTF-8",
        bhttp_known("POST", "/v1/\u{fffd}", &json_fields(), &embed_body())
            .into_iter()
            .map(|b| if b == 0xef { 0xff } else { b })
            .collect(),
    ));
    for hop in [Hop::Enclave, Hop::Gateway] {
        for (name, plain) in &table {
            let (b, o) = seal_whole(&s.x25519, plain);
            let out = s
                .send(hop, Some("message/ohttp-req"), Some(&kid), &[], &b, o)
                .await;
            cat.expect(
                "bhttp",
                format!("{}: {name}", hop.label()),
                &Expect::Plain(400, "malformed_inner_message"),
                &out,
            );
        }
        // Chunked envelope: indeterminate-length message that never ends.
        let mut m = embed_indeterminate();
        m.truncate(m.len() - 2);
        let (b, o) = seal_chunked(&s.x25519, &[m]);
        let out = s
            .send(
                hop,
                Some("message/ohttp-chunked-req"),
                Some(&kid),
                &[],
                &b,
                o,
            )
            .await;
        cat.expect(
            "bhttp",
            format!(
                "{}: indeterminate-length without terminators (chunked envelope)",
                hop.label()
            ),
            &Expect::Plain(400, "malformed_inner_message"),
            &out,
        );
        let (b, o) = seal_chunked(&s.x25519, &[b"\x02garbage".to_vec()]);
        let out = s
            .send(
                hop,
                Some("message/ohttp-chunked-req"),
                Some(&kid),
                &[],
                &b,
                o,
            )
            .await;
        cat.expect(
            "bhttp",
            format!("{}: garbage (chunked envelope)", hop.label()),
            &Expect::Plain(400, "malformed_inner_message"),
            &out,
        );
    }
}

// ------------------------------------------------------------------ key ids

async fn key_id_cases(s: &Stack, cat: &mut Catalogue) {
    let req = "message/ohttp-req";
    let kid = s.x25519.id().to_string();
    for hop in [Hop::Enclave, Hop::Gateway] {
        for (name, id) in [
            ("not hex", "not-a-key-id".to_owned()),
            ("uppercase hex", kid.to_ascii_uppercase()),
            ("31 hex digits", kid[..31].to_owned()),
            ("33 hex digits", format!("{kid}0")),
            ("empty", String::new()),
            ("with a trailing comma list", format!("{kid}, {kid}")),
            ("SQL-shaped", "' OR '1'='1".to_owned()),
        ] {
            let (b, o) = seal_whole(&s.x25519, &embed_known());
            let out = s.send(hop, Some(req), Some(&id), &[], &b, o).await;
            // Upper-case hex names the same key: refusing it (the documented format is
            // lowercase) or serving it are both safe.
            let e = if name == "uppercase hex" {
                Expect::OneOf(vec![
                    Expect::Plain(400, "invalid_key_id"),
                    Expect::Sealed(200, ""),
                ])
            } else {
                Expect::Plain(400, "invalid_key_id")
            };
            cat.expect(
                "key-id",
                format!("{}: malformed Veil-Key-Id, {name}", hop.label()),
                &e,
                &out,
            );
        }
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let out = s
            .send(
                hop,
                Some(req),
                Some("00112233445566778899aabbccddeeff"),
                &[],
                &b,
                o,
            )
            .await;
        cat.expect(
            "key-id",
            format!("{}: well-formed but unknown id", hop.label()),
            &Expect::Plain(422, "unknown_key_id"),
            &out,
        );
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let xwing = s.xwing.id().to_string();
        let out = s.send(hop, Some(req), Some(&xwing), &[], &b, o).await;
        cat.expect(
            "key-id",
            format!("{}: X-Wing id, bytes sealed to X25519", hop.label()),
            &Expect::Plain(400, "open_failed"),
            &out,
        );
        let (b, o) = seal_whole(&s.xwing, &embed_known());
        let out = s.send(hop, Some(req), Some(&kid), &[], &b, o).await;
        cat.expect(
            "key-id",
            format!("{}: X25519 id, bytes sealed to X-Wing", hop.label()),
            &Expect::Plain(400, "open_failed"),
            &out,
        );
        // No Veil-Key-Id: the enclave serves plain OHTTP clients by the message's own key
        // id byte; the gateway requires the header to route.
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let out = s.send(hop, Some(req), None, &[], &b, o).await;
        let e = match hop {
            Hop::Enclave => Expect::Sealed(200, ""),
            Hop::Gateway => Expect::Plain(400, "missing_key_id"),
        };
        cat.expect(
            "key-id",
            format!("{}: no Veil-Key-Id, valid message", hop.label()),
            &e,
            &out,
        );
        let (mut b, o) = seal_whole(&s.x25519, &embed_known());
        b[0] = 0x42;
        let out = s.send(hop, Some(req), None, &[], &b, o).await;
        let e = match hop {
            Hop::Enclave => Expect::Plain(422, "unknown_key_id"),
            Hop::Gateway => Expect::Plain(400, "missing_key_id"),
        };
        cat.expect(
            "key-id",
            format!("{}: no Veil-Key-Id, unknown key id byte", hop.label()),
            &e,
            &out,
        );
    }
}

// ------------------------------------------------------------------ oversize

async fn oversize_cases(s: &Stack, cat: &mut Catalogue) {
    let kid = s.x25519.id().to_string();
    let req = "message/ohttp-req";
    // Encapsulated bodies above each hop's limit, with Content-Length and chunked.
    for (hop, limit) in [
        (Hop::Enclave, ENCLAVE_MAX_REQUEST),
        (Hop::Gateway, GATEWAY_MAX_BODY),
    ] {
        let body = vec![0x5au8; limit + 1];
        let out = s
            .send(hop, Some(req), Some(&kid), &[], &body, Opener::None)
            .await;
        cat.expect(
            "oversize",
            format!(
                "{}: encapsulated body of limit+1 bytes (Content-Length)",
                hop.label()
            ),
            &Expect::Plain(413, "request_too_large"),
            &out,
        );
        // The same without Content-Length, as a chunked transfer.
        let auth = format!("Bearer {}", s.key);
        let mut r = format!(
            "POST {} HTTP/1.1\r\nhost: veil.test\r\nconnection: close\r\ncontent-type: {req}\r\nveil-key-id: {kid}\r\n",
            Stack::path(hop)
        );
        if hop == Hop::Gateway {
            r.push_str(&format!("authorization: {auth}\r\n"));
        }
        r.push_str("transfer-encoding: chunked\r\n\r\n");
        let mut r = r.into_bytes();
        let piece = vec![0x5au8; 64 << 10];
        for _ in 0..=(limit / piece.len()) + 1 {
            r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            r.extend_from_slice(&piece);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        let resp = raw_exchange(s.addr(hop), r, Duration::from_secs(20)).await;
        let out = classify(&resp, Opener::None);
        cat.expect(
            "oversize",
            format!(
                "{}: encapsulated body above the limit (chunked transfer)",
                hop.label()
            ),
            &Expect::Plain(413, "request_too_large"),
            &out,
        );
        // Content-Length that lies high: announced above the limit, tiny body.
        let big = (limit + 1).to_string();
        let mut r = format!(
            "POST {} HTTP/1.1\r\nhost: veil.test\r\nconnection: close\r\ncontent-type: {req}\r\nveil-key-id: {kid}\r\ncontent-length: {big}\r\n",
            Stack::path(hop)
        );
        if hop == Hop::Gateway {
            r.push_str(&format!("authorization: {auth}\r\n"));
        }
        r.push_str("\r\n0123456789");
        let resp = raw_exchange(s.addr(hop), r.into_bytes(), Duration::from_secs(20)).await;
        let out = classify(&resp, Opener::None);
        cat.expect(
            "oversize",
            format!(
                "{}: Content-Length above the limit, short body",
                hop.label()
            ),
            &Expect::Plain(413, "request_too_large"),
            &out,
        );

        // Inner body above the enclave's inner limit (sealed 413).
        let input = "x".repeat(ENCLAVE_MAX_INNER_BODY + 16);
        let body = json!({"model": EMBED_MODEL, "input": input}).to_string();
        let plain = bhttp_known("POST", "/v1/embeddings", &json_fields(), body.as_bytes());
        let (b, o) = seal_whole(&s.x25519, &plain);
        let out = s.send(hop, Some(req), Some(&kid), &[], &b, o).await;
        cat.expect(
            "oversize",
            format!("{}: inner body above the inner limit", hop.label()),
            &Expect::Sealed(413, "request_too_large"),
            &out,
        );

        // Huge header line and many headers: refused by the HTTP layer, no crash.
        let huge = vec![b'a'; 1 << 20];
        let r = http_request("POST", Stack::path(hop), &[("x-huge", &huge)], b"");
        let resp = raw_exchange(s.addr(hop), r, Duration::from_secs(20)).await;
        let out = classify(&resp, Opener::None);
        cat.expect(
            "oversize",
            format!("{}: one 1 MiB header line", hop.label()),
            &Expect::Rejected(&[431, 400]),
            &out,
        );
        let names: Vec<String> = (0..200).map(|i| format!("x-many-{i}")).collect();
        let hs: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"v"[..])).collect();
        let r = http_request("POST", Stack::path(hop), &hs, b"");
        let resp = raw_exchange(s.addr(hop), r, Duration::from_secs(20)).await;
        let out = classify(&resp, Opener::None);
        cat.expect(
            "oversize",
            format!("{}: 200 header fields", hop.label()),
            &Expect::Rejected(&[431, 400]),
            &out,
        );
        let long_model = vec![b'm'; 64 << 10];
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let out = s
            .send(
                hop,
                Some(req),
                Some(&kid),
                &[("veil-model", &long_model)],
                &b,
                o,
            )
            .await;
        // A 64 KiB model id is not a model id: refused before any work.
        let e = match hop {
            Hop::Gateway => Expect::Plain(400, "invalid_model"),
            // The enclave may refuse it outright or find the mismatch inside; either way
            // nothing runs.
            Hop::Enclave => Expect::OneOf(vec![
                Expect::Plain(400, "invalid_outer_header"),
                Expect::Sealed(400, "outer_metadata_mismatch"),
            ]),
        };
        cat.expect(
            "oversize",
            format!("{}: 64 KiB Veil-Model", hop.label()),
            &e,
            &out,
        );
    }
}

// ------------------------------------------------------------------ the inner request

fn bad_number() -> Expect {
    Expect::OneOf(vec![
        Expect::Sealed(400, "invalid_value"),
        Expect::Sealed(400, "invalid_type"),
    ])
}

async fn inner_cases(s: &Stack, cat: &mut Catalogue) {
    let kid = s.x25519.id().to_string();
    let req = "message/ohttp-req";
    let chat = |v: Value| v.to_string().into_bytes();
    let msgs = json!([{"role": "user", "content": format!("Say hi. {CANARY}")}]);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    type Row = (&'static str, Vec<u8>, Vec<(&'static str, Vec<u8>)>, Expect);
    let jf = |b: &[u8]| bhttp_known("POST", "/v1/embeddings", &json_fields(), b);
    let table: Vec<Row> = vec![
        ("invalid JSON", jf(b"{\"model\": \"all-MiniLM-L6-v2\", \"input\": "), vec![], Expect::Sealed(400, "invalid_json")),
        ("JSON that is not an object (array)", jf(b"[1, 2, 3]"), vec![], Expect::Sealed(400, "invalid_json")),
        ("JSON that is not an object (string)", jf(b"\"hello\""), vec![], Expect::Sealed(400, "invalid_json")),
        ("JSON null", jf(b"null"), vec![], Expect::Sealed(400, "invalid_json")),
        ("empty body", jf(b""), vec![], Expect::Sealed(400, "invalid_json")),
        ("invalid UTF-8 body", jf(b"{\"model\": \"all-MiniLM-L6-v2\", \"input\": \"\xff\xfe\"}"), vec![], Expect::Sealed(400, "invalid_json")),
        ("UTF-16 body with BOM", jf(b"\xff\xfe{\x00}\x00"), vec![], Expect::Sealed(400, "invalid_json")),
        ("JSON nested 10,000 deep", jf(deep.as_bytes()), vec![], Expect::Sealed(400, "invalid_json")),
                // The model checked against Veil-Model must be the model used: refuse duplicates,
        // or check the same (last) value that is used.
        ("duplicate \"model\" keys, the first matching Veil-Model", jf(format!("{{\"model\": \"{EMBED_MODEL}\", \"model\": \"{CHAT_MODEL}\", \"input\": \"x\"}}").as_bytes()), vec![("veil-model", EMBED_MODEL.as_bytes().to_vec())], Expect::OneOf(vec![Expect::Sealed(400, "invalid_json"), Expect::Sealed(400, "outer_metadata_mismatch")])),
        ("wrong inner content type text/plain", bhttp_known("POST", "/v1/embeddings", &[("content-type", b"text/plain")], &embed_body()), vec![], Expect::Sealed(415, "unsupported_media_type")),
        ("no inner content type", bhttp_known("POST", "/v1/embeddings", &[], &embed_body()), vec![], Expect::Sealed(415, "unsupported_media_type")),
        ("unknown path", bhttp_known("POST", "/v1/nothing-here", &json_fields(), &embed_body()), vec![], Expect::Sealed(404, "unknown_url")),
        ("path traversal", bhttp_known("POST", "/v1/../../etc/passwd", &json_fields(), &embed_body()), vec![], Expect::Sealed(404, "unknown_url")),
        ("wrong method GET on embeddings", bhttp_known("GET", "/v1/embeddings", &[], b""), vec![], Expect::Sealed(405, "method_not_allowed")),
        ("wrong method DELETE on chat", bhttp_known("DELETE", "/v1/chat/completions", &[], b""), vec![], Expect::Sealed(405, "method_not_allowed")),
        ("unknown model", jf(json!({"model": "no-such-model", "input": "x"}).to_string().as_bytes()), vec![], Expect::Sealed(404, "model_not_found")),
        ("model differs from Veil-Model", bhttp_known("POST", "/v1/chat/completions", &json_fields(), &chat(json!({"model": CHAT_MODEL, "max_tokens": 1, "messages": msgs}))), vec![("veil-model", EMBED_MODEL.as_bytes().to_vec())], Expect::Sealed(400, "outer_metadata_mismatch")),
        ("max_tokens above Veil-Max-Tokens", bhttp_known("POST", "/v1/chat/completions", &json_fields(), &chat(json!({"model": CHAT_MODEL, "max_tokens": 50, "messages": msgs}))), vec![("veil-model", CHAT_MODEL.as_bytes().to_vec()), ("veil-max-tokens", b"1".to_vec())], Expect::Sealed(400, "outer_metadata_mismatch")),
        ("max_completion_tokens above Veil-Max-Tokens", bhttp_known("POST", "/v1/chat/completions", &json_fields(), &chat(json!({"model": CHAT_MODEL, "max_completion_tokens": 50, "messages": msgs}))), vec![("veil-max-tokens", b"2".to_vec())], Expect::Sealed(400, "outer_metadata_mismatch")),
        ("stream differs from Veil-Stream", bhttp_known("POST", "/v1/chat/completions", &json_fields(), &chat(json!({"model": CHAT_MODEL, "max_tokens": 1, "messages": msgs}))), vec![("veil-stream", b"true".to_vec())], Expect::Sealed(400, "outer_metadata_mismatch")),
        ("stream in a whole (not chunked) request", bhttp_known("POST", "/v1/chat/completions", &json_fields(), &chat(json!({"model": CHAT_MODEL, "max_tokens": 1, "stream": true, "messages": msgs}))), vec![], Expect::Sealed(400, "stream_requires_chunked")),
        ("max_tokens negative", bhttp_known("POST", "/v1/chat/completions", &json_fields(), &chat(json!({"model": CHAT_MODEL, "max_tokens": -1, "messages": msgs}))), vec![], bad_number()),
        ("max_tokens 2^64", bhttp_known("POST", "/v1/chat/completions", &json_fields(), b"{\"model\": \"SmolLM2-135M-Instruct\", \"max_tokens\": 18446744073709551616, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}"), vec![], bad_number()),
        ("stale inner date", bhttp_known("POST", "/v1/embeddings", &[("content-type", b"application/json"), ("date", b"Sun, 06 Nov 1994 08:49:37 GMT")], &embed_body()), vec![], Expect::Sealed(400, "stale_request")),
        ("control: chat with max_tokens 1", bhttp_known("POST", "/v1/chat/completions", &json_fields(), &chat(json!({"model": CHAT_MODEL, "max_tokens": 1, "messages": msgs}))), vec![("veil-model", CHAT_MODEL.as_bytes().to_vec()), ("veil-max-tokens", b"1".to_vec())], Expect::Sealed(200, "")),
    ];
    for hop in [Hop::Enclave, Hop::Gateway] {
        for (name, plain, outer, e) in &table {
            let (b, o) = seal_whole(&s.x25519, plain);
            let extra: Vec<(&str, &[u8])> = outer.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let out = s.send(hop, Some(req), Some(&kid), &extra, &b, o).await;
            cat.expect("inner", format!("{}: {name}", hop.label()), e, &out);
        }
    }
}

// ------------------------------------------------------------------ header injection

async fn injection_cases(s: &Stack, cat: &mut Catalogue) {
    let kid = s.x25519.id().to_string();
    let req = "message/ohttp-req";
    for hop in [Hop::Enclave, Hop::Gateway] {
        // Control characters inside header values, sent raw.
        let raw_values: Vec<(&str, &str, Vec<u8>)> = vec![
            (
                "bare CR in Veil-Model",
                "veil-model",
                b"all-MiniLM-L6-v2\rx-smuggled-hdr: 1".to_vec(),
            ),
            (
                "NUL in Veil-Model",
                "veil-model",
                b"all-MiniLM\0-L6-v2".to_vec(),
            ),
            (
                "bare CR in Veil-Key-Id",
                "veil-key-id",
                format!("{kid}\rx-smuggled-hdr: 1").into_bytes(),
            ),
            (
                "NUL in Veil-Key-Id",
                "veil-key-id",
                format!("{}\0{}", &kid[..16], &kid[16..]).into_bytes(),
            ),
            (
                "bare CR in Authorization",
                "authorization",
                format!("Bearer {}\rx-smuggled-hdr: 1", s.key).into_bytes(),
            ),
            (
                "NUL in Authorization",
                "authorization",
                format!("Bearer {}\0", s.key).into_bytes(),
            ),
            (
                "obs-fold continuation line",
                "veil-model",
                b"all-MiniLM-L6-v2\r\n x-smuggled-hdr: 1".to_vec(),
            ),
            (
                "DEL in Veil-Max-Tokens",
                "veil-max-tokens",
                b"1\x7f".to_vec(),
            ),
        ];
        for (name, header, value) in raw_values {
            let (b, _) = seal_whole(&s.x25519, &embed_known());
            let auth = format!("Bearer {}", s.key);
            let mut h: Vec<(&str, &[u8])> = vec![("content-type", req.as_bytes())];
            if header != "veil-key-id" {
                h.push(("veil-key-id", kid.as_bytes()));
            }
            if hop == Hop::Gateway && header != "authorization" {
                h.push(("authorization", auth.as_bytes()));
            }
            h.push((header, &value));
            let r = http_request("POST", Stack::path(hop), &h, &b);
            let resp = raw_exchange(s.addr(hop), r, Duration::from_secs(20)).await;
            let out = classify(&resp, Opener::None);
            let e = if name.starts_with("DEL") {
                Expect::OneOf(vec![
                    outer_code(hop, "invalid_max_tokens"),
                    Expect::Rejected(&[400]),
                ])
            } else {
                Expect::Rejected(&[400])
            };
            cat.expect("injection", format!("{}: {name}", hop.label()), &e, &out);
        }
        // A bare LF ends a header line (RFC 9112 §2.2 allows it): the "injected" header
        // is then a header of its own, which must not travel upstream.
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let out = s
            .send(
                hop,
                Some(req),
                Some(&kid),
                &[(
                    "veil-model",
                    b"all-MiniLM-L6-v2\nx-smuggled-hdr: injected-marker",
                )],
                &b,
                o,
            )
            .await;
        cat.expect(
            "injection",
            format!(
                "{}: bare LF in Veil-Model splits a header (not forwarded)",
                hop.label()
            ),
            &Expect::Sealed(200, ""),
            &out,
        );
        // Bytes above 0x7f: not a valid value for these headers, must not pass as absent.
        for (name, header, value, e) in [
            (
                "non-ASCII byte in Veil-Max-Tokens",
                "veil-max-tokens",
                &b"1\xff"[..],
                outer_code(hop, "invalid_max_tokens"),
            ),
            (
                "non-ASCII byte in Veil-Model",
                "veil-model",
                &b"all-MiniLM-L6-v2\xc3\xa9"[..],
                outer_code(hop, "invalid_model"),
            ),
            (
                "non-ASCII byte in Veil-Stream",
                "veil-stream",
                &b"tru\xc3\xa9"[..],
                outer_code(hop, "invalid_stream"),
            ),
        ] {
            let (b, o) = seal_whole(&s.x25519, &embed_known());
            let out = s
                .send(hop, Some(req), Some(&kid), &[(header, value)], &b, o)
                .await;
            cat.expect("injection", format!("{}: {name}", hop.label()), &e, &out);
        }
        // Duplicate single-valued headers with different values are ambiguous.
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let out = s
            .send(
                hop,
                Some(req),
                Some("00112233445566778899aabbccddeeff"),
                &[("veil-key-id", kid.as_bytes())],
                &b,
                o,
            )
            .await;
        cat.expect(
            "injection",
            format!("{}: two different Veil-Key-Id headers", hop.label()),
            &Expect::Plain(400, "invalid_key_id"),
            &out,
        );
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let out = s
            .send(
                hop,
                Some(req),
                Some(&kid),
                &[("veil-max-tokens", b"1"), ("veil-max-tokens", b"100000")],
                &b,
                o,
            )
            .await;
        cat.expect(
            "injection",
            format!("{}: two different Veil-Max-Tokens headers", hop.label()),
            &outer_code(hop, "invalid_max_tokens"),
            &out,
        );
        // Veil-Max-Tokens values.
        for (name, v) in [
            ("-1", &b"-1"[..]),
            ("2^32", &b"4294967296"[..]),
            ("20 digits", &b"99999999999999999999"[..]),
            ("1e3", &b"1e3"[..]),
            ("+5", &b"+5"[..]),
            ("empty", &b""[..]),
        ] {
            let (b, o) = seal_whole(&s.x25519, &embed_known());
            let out = s
                .send(hop, Some(req), Some(&kid), &[("veil-max-tokens", v)], &b, o)
                .await;
            cat.expect(
                "injection",
                format!("{}: Veil-Max-Tokens: {name}", hop.label()),
                &outer_code(hop, "invalid_max_tokens"),
                &out,
            );
        }
        let (b, o) = seal_whole(&s.x25519, &embed_known());
        let out = s
            .send(
                hop,
                Some(req),
                Some(&kid),
                &[("veil-stream", b"yes")],
                &b,
                o,
            )
            .await;
        cat.expect(
            "injection",
            format!("{}: Veil-Stream: yes", hop.label()),
            &outer_code(hop, "invalid_stream"),
            &out,
        );

        // Request smuggling: Transfer-Encoding and Content-Length together, the body
        // hiding a second request. Exactly one answer (a refusal), and the hidden request
        // never runs.
        let (b, _) = seal_whole(&s.x25519, &embed_known());
        let auth = format!("Bearer {}", s.key);
        let mut head = format!(
            "POST {} HTTP/1.1\r\nhost: veil.test\r\ncontent-type: {req}\r\nveil-key-id: {kid}\r\n",
            Stack::path(hop)
        );
        if hop == Hop::Gateway {
            head.push_str(&format!("authorization: {auth}\r\n"));
        }
        let hidden = "GET /smuggled-path HTTP/1.1\r\nhost: veil.test\r\n\r\n";
        let chunked_body = || {
            let (b, _) = seal_whole(&s.x25519, &embed_known());
            let mut c = format!("{:x}\r\n", b.len()).into_bytes();
            c.extend_from_slice(&b);
            c.extend_from_slice(b"\r\n0\r\n\r\n");
            c
        };
        for (name, body) in [
            ("CL.TE: Content-Length covers a hidden request", {
                let mut body = chunked_body();
                body.extend_from_slice(hidden.as_bytes());
                let cl = body.len();
                (cl, body)
            }),
            ("TE.CL: Content-Length shorter than the chunked body", {
                let mut body = chunked_body();
                body.extend_from_slice(hidden.as_bytes());
                (4, body)
            }),
        ] {
            let (cl, body) = body;
            let mut r = head.clone().into_bytes();
            r.extend_from_slice(
                format!("content-length: {cl}\r\ntransfer-encoding: chunked\r\n\r\n").as_bytes(),
            );
            r.extend_from_slice(&body);
            let resp = raw_exchange(s.addr(hop), r, Duration::from_secs(4)).await;
            // RFC 9112 §6.1: refuse, or follow Transfer-Encoding alone and close the
            // connection after answering; never answer the hidden request.
            let smuggled = resp.responses > 1;
            let ok = resp.responses <= 1 && (resp.status == 400 || resp.closed);
            cat.record(
                "injection",
                format!("{}: {name}", hop.label()),
                "one answer (400, or any status then the connection closed); the hidden request not answered",
                format!(
                    "{} response(s), first status {}, connection {}{}",
                    resp.responses,
                    resp.status,
                    if resp.closed { "closed" } else { "left open" },
                    if smuggled { ", hidden request answered" } else { "" }
                ),
                ok,
            );
        }
        let mut r = head.clone().into_bytes();
        r.extend_from_slice(
            format!("content-length: {}\r\ncontent-length: 3\r\n\r\n", b.len()).as_bytes(),
        );
        r.extend_from_slice(&b);
        let resp = raw_exchange(s.addr(hop), r, Duration::from_secs(4)).await;
        let out = classify(&resp, Opener::None);
        cat.expect(
            "injection",
            format!("{}: two different Content-Length headers", hop.label()),
            &Expect::Rejected(&[400]),
            &out,
        );
        let mut r = head.clone().into_bytes();
        r.extend_from_slice(b"transfer-encoding: gzip\r\n\r\n");
        r.extend_from_slice(&b);
        let resp = raw_exchange(s.addr(hop), r, Duration::from_secs(4)).await;
        let out = classify(&resp, Opener::None);
        cat.expect(
            "injection",
            format!("{}: Transfer-Encoding without chunked", hop.label()),
            &Expect::Rejected(&[400, 501]),
            &out,
        );
    }
}

// ------------------------------------------------------------------ bundles

fn bundle_cases(a: &[u8], b: &[u8], cat: &mut Catalogue) {
    let now = time::OffsetDateTime::now_utc();
    let sim = Policy::insecure_allow_sim();
    let va: Value = serde_json::from_slice(a).unwrap();
    let vb: Value = serde_json::from_slice(b).unwrap();
    let check = |bytes: &[u8], policy: &Policy, at: time::OffsetDateTime| -> Result<(), String> {
        let bundle = Bundle::parse(bytes).map_err(|e| format!("parse: {e}"))?;
        verify_bundle(&bundle, policy, at)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", e.check()))
    };
    let mut record = |name: &str, bytes: Vec<u8>, policy: &Policy, at, want: &str| {
        let r = check(&bytes, policy, at);
        let (actual, ok) = match &r {
            Ok(()) => ("accepted".to_owned(), want == "accepted"),
            Err(e) => (
                format!("refused, {e}"),
                want.split('|').any(|w| e.starts_with(w)),
            ),
        };
        let expected = if want == "accepted" {
            want.to_owned()
        } else {
            format!("refused, {}", want.replace('|', " or "))
        };
        cat.record("bundle", name, expected, actual, ok);
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = va.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    record(
        "control: A's bundle verifies (sim allowed)",
        a.to_vec(),
        &sim,
        now,
        "accepted",
    );
    record(
        "A's bundle under the default policy (sim refused)",
        a.to_vec(),
        &Policy::default(),
        now,
        "policy.simulated-tee",
    );
    record(
        "A's bundle with B's key configurations and ids swapped in",
        with(&|v| {
            v["claims"]["key_configs"] = vb["claims"]["key_configs"].clone();
            v["claims"]["key_ids"] = vb["claims"]["key_ids"].clone();
        }),
        &sim,
        now,
        "sim.signature",
    );
    record(
        "A's bundle with B's key configurations, A's ids",
        with(&|v| v["claims"]["key_configs"] = vb["claims"]["key_configs"].clone()),
        &sim,
        now,
        "claims.key-ids",
    );
    record(
        "A's bundle with B's receipt key",
        with(&|v| v["claims"]["receipt_public_key"] = vb["claims"]["receipt_public_key"].clone()),
        &sim,
        now,
        "sim.signature",
    );
    record(
        "A's claims with B's CPU evidence (mixed bundle)",
        with(&|v| v["cpu"] = vb["cpu"].clone()),
        &sim,
        now,
        "sim.signature",
    );
    record(
        "A's bundle with a different enclave version",
        with(&|v| v["claims"]["enclave_version"] = json!("9.9.9")),
        &sim,
        now,
        "sim.signature",
    );
    record(
        "A's bundle claiming the SEV-SNP platform",
        with(&|v| v["claims"]["platform"] = json!("snp")),
        &sim,
        now,
        "claims.platform",
    );
    record(
        "stale: verified 25 hours after it was produced",
        a.to_vec(),
        &sim,
        now + time::Duration::hours(25),
        "evidence.age",
    );
    record(
        "from the future: verified an hour before it was produced",
        a.to_vec(),
        &sim,
        now - time::Duration::hours(1),
        "evidence.age",
    );
    // produced_at is bound into the report data (v2), so moving it fails the evidence
    // binding before its age is looked at.
    record(
        "produced_at moved back to 2020",
        with(&|v| v["produced_at"] = json!("2020-01-01T00:00:00Z")),
        &sim,
        now,
        "sim.signature",
    );
    // A stale bundle made to look fresh: produced_at must be bound to the evidence.
    let fresh_stamp = (now + time::Duration::hours(25))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    record(
        "stale bundle with produced_at rewritten to look fresh",
        with(&|v| v["produced_at"] = json!(fresh_stamp.clone())),
        &sim,
        now + time::Duration::hours(25),
        "sim.signature",
    );
    let kc = va["claims"]["key_configs"].as_str().unwrap().to_owned();
    {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&kc)
            .unwrap();
        let cut = base64::engine::general_purpose::STANDARD.encode(&raw[..raw.len() - 7]);
        record(
            "key configurations cut short (valid base64)",
            with(&|v| v["claims"]["key_configs"] = json!(cut.clone())),
            &sim,
            now,
            "claims.key-ids",
        );
    }
    record(
        "key configurations garbage (not base64)",
        with(&|v| v["claims"]["key_configs"] = json!("!!! not base64 !!!")),
        &sim,
        now,
        "parse",
    );
    record(
        "CPU evidence field garbage",
        with(&|v| {
            if let Some(o) = v["cpu"].as_object_mut() {
                for (k, val) in o.iter_mut() {
                    if k != "type" && val.is_string() {
                        *val = json!("AAAA");
                    }
                }
            }
        }),
        &sim,
        now,
        "parse|sim.signature",
    );
    record(
        "unknown field added",
        with(&|v| v["extra"] = json!(1)),
        &sim,
        now,
        "parse",
    );
    record(
        "version 2",
        with(&|v| v["version"] = json!(2)),
        &sim,
        now,
        "parse",
    );
    record(
        "claims removed",
        with(&|v| {
            v.as_object_mut().unwrap().remove("claims");
        }),
        &sim,
        now,
        "parse",
    );
    for (name, bytes) in [
        ("JSON that is not a bundle: {}", b"{}".to_vec()),
        ("JSON that is not a bundle: []", b"[]".to_vec()),
        ("JSON that is not a bundle: null", b"null".to_vec()),
        (
            "JSON that is not a bundle: a string",
            b"\"bundle\"".to_vec(),
        ),
        ("truncated JSON", a[..a.len() / 2].to_vec()),
        ("empty input", Vec::new()),
        ("not UTF-8", b"\xff\xfe\xfd".to_vec()),
        (
            "5 MiB of whitespace (above the size limit)",
            vec![b' '; 5 << 20],
        ),
    ] {
        record(name, bytes, &sim, now, "parse");
    }
}

// ------------------------------------------------------------------ API keys

async fn api_key_cases(s: &Stack, revoked: &str, cat: &mut Catalogue) {
    let kid = s.x25519.id().to_string();
    let before = ledger_rows(&s.database);
    let wrong = format!("veil_{}", "ab".repeat(32));
    let short = format!("veil_{}", "a".repeat(63));
    let nonhex = format!("veil_{}", "z".repeat(64));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing Authorization", None),
        ("empty Authorization", Some(String::new())),
        ("scheme only", Some("Bearer".into())),
        (
            "Basic credentials",
            Some("Basic dXNlcjpwYXNzd29yZA==".into()),
        ),
        (
            "key without prefix",
            Some(format!("Bearer {}", "ab".repeat(32))),
        ),
        ("63 hex digits", Some(format!("Bearer {short}"))),
        ("non-hex key", Some(format!("Bearer {nonhex}"))),
        (
            "key followed by more",
            Some(format!("Bearer {} extra", s.key)),
        ),
        (
            "two keys, comma-separated",
            Some(format!("Bearer {}, {}", s.key, s.key)),
        ),
        ("well-formed but wrong key", Some(format!("Bearer {wrong}"))),
        ("revoked key", Some(format!("Bearer {revoked}"))),
        ("SQL-shaped key", Some("Bearer veil_' OR '1'='1' --".into())),
        (
            "upper-cased key",
            Some(format!("Bearer {}", s.key.to_ascii_uppercase())),
        ),
    ];
    for (name, auth) in cases {
        let (b, _) = seal_whole(&s.x25519, &embed_known());
        let mut h: Vec<(&str, &[u8])> = vec![
            ("content-type", b"message/ohttp-req"),
            ("veil-key-id", kid.as_bytes()),
        ];
        if let Some(a) = &auth {
            h.push(("authorization", a.as_bytes()));
        }
        let r = http_request("POST", "/v1/ohttp", &h, &b);
        let resp = raw_exchange(s.gateway.addr(), r, Duration::from_secs(20)).await;
        let out = classify(&resp, Opener::None);
        cat.expect(
            "api-key",
            format!("gateway: {name}"),
            &Expect::Plain(401, "invalid_api_key"),
            &out,
        );
    }
    // Admin API: wrong token, and SQL-shaped names through it.
    for (name, auth, path, body, e) in [
        (
            "admin: no token",
            None,
            "/admin/keys",
            json!({"name": "x"}),
            Expect::Plain(401, "invalid_admin_token"),
        ),
        (
            "admin: wrong token",
            Some("Bearer nope"),
            "/admin/keys",
            json!({"name": "x"}),
            Expect::Plain(401, "invalid_admin_token"),
        ),
        (
            "admin: SQL-shaped name refused",
            Some("Bearer bad-inputs-admin"),
            "/admin/keys",
            json!({"name": "x'); DROP TABLE api_keys;--"}),
            Expect::Plain(400, "invalid_name"),
        ),
        (
            "admin: quoted name refused",
            Some("Bearer bad-inputs-admin"),
            "/admin/keys",
            json!({"name": "a\"b"}),
            Expect::Plain(400, "invalid_name"),
        ),
        (
            "admin: unknown field",
            Some("Bearer bad-inputs-admin"),
            "/admin/keys",
            json!({"name": "ok", "admin": true}),
            Expect::Plain(400, "invalid_body"),
        ),
        (
            "admin: revoke a SQL-shaped name",
            Some("Bearer bad-inputs-admin"),
            "/admin/keys/x'%20OR%20'1'='1/revoke",
            json!({}),
            Expect::Plain(404, "key_not_found"),
        ),
    ] {
        let b = body.to_string();
        let mut h: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
        if let Some(a) = auth {
            h.push(("authorization", a.as_bytes()));
        }
        let r = http_request("POST", path, &h, b.as_bytes());
        let resp = raw_exchange(s.gateway.addr(), r, Duration::from_secs(20)).await;
        let out = classify(&resp, Opener::None);
        cat.expect("api-key", format!("gateway: {name}"), &e, &out);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = ledger_rows(&s.database);
    cat.record(
        "api-key",
        "ledger unchanged by refused requests",
        format!("{before} rows"),
        format!("{after} rows"),
        before == after,
    );
}

// ------------------------------------------------------------------ key names

async fn key_name_cases(s: &Stack, db: &str, cat: &mut Catalogue) {
    let refused_names = [
        "x'); DROP TABLE api_keys;--",
        "Robert'); DROP TABLE usage_receipts;--",
        "x' OR '1'='1",
        "a\"b",
        "semi;colon",
        "back\\slash",
        "名前",
        "emoji-😀",
        "",
        " ",
        "tab\tname",
        "new\nline",
        "%00nul",
        "$(touch /tmp/veil-pwned)",
    ];
    let long = "a".repeat(65);
    for name in refused_names.iter().copied().chain([long.as_str()]) {
        let out = gateway_cli(&["keys", "create", "--database", db, "--name", name]);
        let err = String::from_utf8_lossy(&out.stderr);
        let ok = !out.status.success() && err.contains("--name") && out.stdout.is_empty();
        cat.record(
            "key-name",
            format!("keys create --name {name:?}"),
            "refused with a clear error, nothing printed",
            format!(
                "exit {:?}, stderr {:?}",
                out.status.code(),
                err.lines().last().unwrap_or("")
            ),
            ok,
        );
    }
    // Accepted names are stored and listed verbatim.
    let accepted = "Ok.name_1-2";
    let made = create_key(db, accepted);
    cat.record(
        "key-name",
        format!("keys create --name {accepted:?}"),
        "created",
        format!("{:?}", made.as_ref().map(|_| "created")),
        made.is_ok(),
    );
    // Revoke and limits with SQL-shaped names touch nothing.
    for args in [
        vec!["keys", "revoke", "--database", db, "--name", "x' OR '1'='1"],
        vec!["keys", "revoke", "--database", db, "--name", "good-key' --"],
        vec![
            "keys",
            "limits",
            "--database",
            db,
            "--name",
            "x' OR 1=1 --",
            "--rpm",
            "1",
        ],
    ] {
        let out = gateway_cli(&args);
        cat.record(
            "key-name",
            format!("{} {}", args[1], args[5]),
            "refused: no such key",
            format!(
                "exit {:?}, stderr {:?}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
            !out.status.success(),
        );
    }
    let out = gateway_cli(&["keys", "list", "--database", db, "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let names: Vec<String> = listed
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut want = vec!["Ok.name_1-2", "good-key", "revoked-key"];
    want.sort_unstable();
    let mut got = names.clone();
    got.sort_unstable();
    cat.record(
        "key-name",
        "keys list shows exactly the keys created, verbatim",
        format!("{want:?}"),
        format!("{got:?}"),
        got == want,
    );
    let active = listed
        .as_array()
        .and_then(|a| a.iter().find(|k| k["name"] == "good-key"))
        .is_some_and(|k| k["revoked_at_ms"].is_null());
    cat.record(
        "key-name",
        "good-key still active after SQL-shaped revokes",
        "active",
        if active { "active" } else { "not active" },
        active,
    );
    let tables: Vec<String> = {
        let c = rusqlite::Connection::open_with_flags(
            &s.database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut st = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        st.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let intact =
        tables.iter().any(|t| t == "api_keys") && tables.iter().any(|t| t == "usage_receipts");
    cat.record(
        "key-name",
        "database tables intact",
        "api_keys and usage_receipts present",
        format!("{tables:?}"),
        intact,
    );
    // The good key still works.
    let kid = s.x25519.id().to_string();
    let (b, o) = seal_whole(&s.x25519, &embed_known());
    let out = s
        .send(
            Hop::Gateway,
            Some("message/ohttp-req"),
            Some(&kid),
            &[],
            &b,
            o,
        )
        .await;
    cat.expect(
        "key-name",
        "good-key still answers a sealed request",
        &Expect::Sealed(200, ""),
        &out,
    );
}

// ------------------------------------------------------------------ HTTP/2

/// The client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_DATA: u8 = 0x0;
const H2_HEADERS: u8 = 0x1;
const H2_RST_STREAM: u8 = 0x3;
const H2_SETTINGS: u8 = 0x4;
const H2_PING: u8 = 0x6;
const H2_GOAWAY: u8 = 0x7;
const H2_CONTINUATION: u8 = 0x9;
const H2_END_STREAM: u8 = 0x1;
const H2_END_HEADERS: u8 = 0x4;
/// RST_STREAM / GOAWAY error codes (RFC 9113 §7).
const H2_CANCEL: u32 = 0x8;
const H2_REFUSED_STREAM: u32 = 0x7;

/// One frame (RFC 9113 §4.1) appended to `out`.
fn h2_frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | u8::try_from(v).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    let mut v = v - max;
    while v >= 128 {
        out.push(u8::try_from(v % 128).unwrap() | 0x80);
        v /= 128;
    }
    out.push(u8::try_from(v).unwrap());
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// The header block of a request to `path` with `extra` fields.
fn h2_block(method: &str, path: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    hpack_literal(&mut b, ":method", method.as_bytes());
    hpack_literal(&mut b, ":scheme", b"http");
    hpack_literal(&mut b, ":path", path.as_bytes());
    hpack_literal(&mut b, ":authority", b"veil.test");
    for (n, v) in extra {
        hpack_literal(&mut b, n, v);
    }
    b
}

/// The preface and an empty SETTINGS frame.
fn h2_start() -> Vec<u8> {
    let mut out = H2_PREFACE.to_vec();
    h2_frame(&mut out, H2_SETTINGS, 0, 0, &[]);
    out
}

/// What the server sent on one HTTP/2 connection.
#[derive(Debug, Default)]
struct H2Seen {
    /// (type, flags, stream, payload) of every complete frame.
    frames: Vec<(u8, u8, u32, Vec<u8>)>,
    /// The server closed (or reset) the connection before the deadline.
    closed: bool,
    /// Bytes of `send` the server took before the connection failed.
    sent: usize,
}

impl H2Seen {
    fn goaway(&self) -> Option<u32> {
        self.frames
            .iter()
            .find(|f| f.0 == H2_GOAWAY)
            .and_then(|f| f.3.get(4..8))
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
    }
    fn resets(&self, code: u32) -> usize {
        self.frames
            .iter()
            .filter(|f| f.0 == H2_RST_STREAM && f.3.get(..4) == Some(&code.to_be_bytes()[..]))
            .count()
    }
    /// The `:status` of the response on `stream`, where the server sent it as an indexed
    /// field of HPACK's static table (RFC 7541 Appendix A: 8 to 14).
    fn status(&self, stream: u32) -> Option<u16> {
        let f = self
            .frames
            .iter()
            .find(|f| f.0 == H2_HEADERS && f.2 == stream)?;
        // Skip the pad length and priority fields when flagged.
        let mut p = &f.3[..];
        if f.1 & 0x8 != 0 {
            p = p.get(1..)?;
        }
        if f.1 & 0x20 != 0 {
            p = p.get(5..)?;
        }
        match p.first()? {
            0x88 => Some(200),
            0x89 => Some(204),
            0x8a => Some(206),
            0x8b => Some(304),
            0x8c => Some(400),
            0x8d => Some(404),
            0x8e => Some(500),
            _ => Some(0), // some other status, sent as a literal
        }
    }
    fn ended(&self) -> bool {
        self.closed || self.goaway().is_some()
    }
    fn summary(&self) -> String {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.frames {
            let k = match f.0 {
                H2_DATA => "DATA",
                H2_HEADERS => "HEADERS",
                H2_RST_STREAM => "RST_STREAM",
                H2_SETTINGS => "SETTINGS",
                H2_PING => "PING",
                H2_GOAWAY => "GOAWAY",
                _ => "other",
            };
            *kinds.entry(k).or_default() += 1;
        }
        format!(
            "frames {kinds:?}, GOAWAY code {:?}, {}, {} bytes taken",
            self.goaway(),
            if self.closed { "closed" } else { "open" },
            self.sent
        )
    }
}

/// Writes `send` to a new connection to `addr` (in 16 KiB writes, beside the reads) and
/// reads frames until `done` says so, the server closes, or `wait` passes.
async fn h2_exchange(
    addr: SocketAddr,
    send: Vec<u8>,
    wait: Duration,
    done: impl Fn(&H2Seen) -> bool,
) -> H2Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        for chunk in send.chunks(16 << 10) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
        let _ = wr.flush().await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(wr);
    });
    let mut seen = H2Seen::default();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => {
                seen.closed = true;
                break;
            }
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
        while raw.len() >= 9 {
            let len = usize::try_from(u32::from_be_bytes([0, raw[0], raw[1], raw[2]])).unwrap();
            if raw.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff;
            seen.frames
                .push((raw[3], raw[4], stream, raw[9..9 + len].to_vec()));
            raw.drain(..9 + len);
        }
        if done(&seen) {
            break;
        }
    }
    writer.abort();
    seen.sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    seen
}

/// HTTP/2 (cleartext, prior knowledge) attacks on both hops. Each must end in a refusal
/// of the stream or the connection, with the process still serving: the servers run
/// hyper's HTTP/2 with the limits set in `serve.rs` / `tls.rs`.
async fn http2_cases(s: &Stack, cat: &mut Catalogue) {
    const WAIT: Duration = Duration::from_secs(15);
    let auth = format!("Bearer {}", s.key);
    let key_id = s.x25519.id().to_string();
    for hop in [Hop::Enclave, Hop::Gateway] {
        let addr = s.addr(hop);
        let path = Stack::path(hop);
        let mut fields: Vec<(&str, &[u8])> = vec![
            ("content-type", b"message/ohttp-req"),
            ("veil-key-id", key_id.as_bytes()),
        ];
        if hop == Hop::Gateway {
            fields.push(("authorization", auth.as_bytes()));
        }
        let post = h2_block("POST", path, &fields);
        let name = |what: &str| format!("{}: {what}", hop.label());

        // Served at all: a GET /healthz over h2c.
        let mut send = h2_start();
        h2_frame(
            &mut send,
            H2_HEADERS,
            H2_END_STREAM | H2_END_HEADERS,
            1,
            &h2_block("GET", "/healthz", &[]),
        );
        let seen = h2_exchange(addr, send, WAIT, |s| s.status(1).is_some()).await;
        cat.record(
            "HTTP/2",
            name("GET /healthz over h2c (prior knowledge)"),
            ":status 200",
            seen.status(1)
                .map_or_else(|| seen.summary(), |c| format!(":status {c}")),
            seen.status(1) == Some(200),
        );

        // Rapid reset (CVE-2023-44487): 1000 streams opened and cancelled at once.
        let mut send = h2_start();
        for i in 0..1000u32 {
            let id = 1 + 2 * i;
            h2_frame(&mut send, H2_HEADERS, H2_END_HEADERS, id, &post);
            h2_frame(&mut send, H2_RST_STREAM, 0, id, &H2_CANCEL.to_be_bytes());
        }
        let seen = h2_exchange(addr, send, WAIT, H2Seen::ended).await;
        cat.record(
            "HTTP/2",
            name("rapid reset: 1000 streams opened and cancelled in one burst"),
            "GOAWAY or connection closed",
            seen.summary(),
            seen.ended(),
        );

        // CONTINUATION flood: one header block that never ends, 4 MiB of it.
        let mut send = h2_start();
        h2_frame(&mut send, H2_HEADERS, 0, 1, &post);
        let mut filler = Vec::new();
        while filler.len() < (16 << 10) - 64 {
            hpack_literal(&mut filler, "x-flood", &[b'a'; 100]);
        }
        for _ in 0..256 {
            h2_frame(&mut send, H2_CONTINUATION, 0, 1, &filler);
        }
        // END_HEADERS is never sent, so a GOAWAY (or a close) is the server cutting the
        // block off, not answering it.
        let seen = h2_exchange(addr, send, WAIT, H2Seen::ended).await;
        cat.record(
            "HTTP/2",
            name("CONTINUATION flood: a header block of 4 MiB without END_HEADERS"),
            "GOAWAY or connection closed",
            seen.summary(),
            seen.ended(),
        );

        // A header list over the limit, ending properly: refused (431, a reset or GOAWAY).
        let mut send = h2_start();
        let big = vec![b'b'; 64 << 10];
        let mut block = post.clone();
        hpack_literal(&mut block, "x-big", &big);
        let mut parts = block.chunks(16 << 10).peekable();
        let mut first = true;
        while let Some(p) = parts.next() {
            let last = parts.peek().is_none();
            let ty = if first { H2_HEADERS } else { H2_CONTINUATION };
            let flags =
                if last { H2_END_HEADERS } else { 0 } | if first { H2_END_STREAM } else { 0 };
            h2_frame(&mut send, ty, flags, 1, p);
            first = false;
        }
        let seen = h2_exchange(addr, send, WAIT, |s| {
            s.ended() || s.status(1).is_some() || s.frames.iter().any(|f| f.0 == H2_RST_STREAM)
        })
        .await;
        let refused = seen.ended()
            || seen.status(1).is_some_and(|c| c != 200)
            || seen.frames.iter().any(|f| f.0 == H2_RST_STREAM && f.2 == 1);
        cat.record(
            "HTTP/2",
            name("a 64 KiB header list"),
            "refused: a non-200 status, RST_STREAM or GOAWAY",
            seen.summary(),
            refused,
        );

        // More concurrent streams than the limit: the ones past it refused.
        let mut send = h2_start();
        for i in 0..150u32 {
            h2_frame(&mut send, H2_HEADERS, H2_END_HEADERS, 1 + 2 * i, &post);
        }
        let seen = h2_exchange(addr, send, WAIT, |s| {
            s.ended() || s.resets(H2_REFUSED_STREAM) > 0
        })
        .await;
        cat.record(
            "HTTP/2",
            name("150 streams held open without bodies (limit 100)"),
            "the streams past the limit refused (REFUSED_STREAM) or GOAWAY",
            seen.summary(),
            seen.resets(H2_REFUSED_STREAM) > 0 || seen.goaway().is_some(),
        );

        // PING and SETTINGS floods, the answers never read: the connection may live or
        // end, but the server must keep serving others.
        for (what, ty, payload) in [
            ("PING", H2_PING, vec![0u8; 8]),
            ("SETTINGS", H2_SETTINGS, Vec::new()),
        ] {
            let mut send = h2_start();
            for _ in 0..20_000 {
                h2_frame(&mut send, ty, 0, 0, &payload);
            }
            let _ = h2_exchange(addr, send, Duration::from_secs(3), |_| false).await;
            let h = tokio::time::timeout(Duration::from_secs(10), get(addr, "/healthz")).await;
            let status = h.map_or(0, |r| r.status);
            cat.record(
                "HTTP/2",
                name(&format!("{what} flood: 20000 frames, the answers unread")),
                "the hop still answers /healthz (200)",
                status.to_string(),
                status == 200,
            );
        }
    }
}

// ------------------------------------------------------------------ slowloris

/// Slow bodies must not hold the enclave's admission places: with a model's whole queue
/// (16 places) taken by connections that announce a body and never send it, a genuine
/// request for that model is still answered.
async fn admission_cases(s: &Stack, cat: &mut Catalogue) {
    let kid = s.x25519.id().to_string();
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut tcp = TcpStream::connect(s.enclave.addr()).await.unwrap();
        let head = format!(
            "POST /ohttp HTTP/1.1\r\nhost: veil.test\r\ncontent-type: message/ohttp-req\r\nveil-key-id: {kid}\r\nveil-model: {EMBED_MODEL}\r\ncontent-length: 4096\r\n\r\nx"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (b, o) = seal_whole(&s.x25519, &embed_known());
    let out = s
        .send(
            Hop::Enclave,
            Some("message/ohttp-req"),
            Some(&kid),
            &[("veil-model", EMBED_MODEL.as_bytes())],
            &b,
            o,
        )
        .await;
    cat.expect(
        "slowloris",
        "enclave: genuine request while 16 connections withhold their bodies (same model)",
        &Expect::Sealed(200, ""),
        &out,
    );
    drop(held);
}

/// Opens slow connections to both servers: some send request headers one byte a second,
/// one sends nothing at all, one sends complete headers and then its body one byte a
/// second. Meanwhile a normal request must succeed; every slow connection must be closed
/// by the server within [`SLOWLORIS_BOUND`].
async fn slowloris(
    enclave: SocketAddr,
    gateway: SocketAddr,
    auth: String,
) -> Vec<(String, String, String, bool)> {
    #[derive(Clone, Copy)]
    enum Kind {
        Headers,
        Idle,
        Body,
    }
    let mut tasks = Vec::new();
    for (label, addr, path) in [
        ("enclave", enclave, "/ohttp"),
        ("gateway", gateway, "/v1/ohttp"),
    ] {
        for (i, kind) in [
            Kind::Headers,
            Kind::Headers,
            Kind::Headers,
            Kind::Idle,
            Kind::Body,
        ]
        .into_iter()
        .enumerate()
        {
            let name = match kind {
                Kind::Headers => format!("{label}: headers at one byte a second (connection {i})"),
                Kind::Idle => format!("{label}: connection that sends nothing"),
                Kind::Body => format!("{label}: body at one byte a second after complete headers"),
            };
            // The body-drip connection carries valid outer metadata (and at the gateway a
            // valid key), so that it reaches the point where the body is read.
            let meta = if matches!(kind, Kind::Body) {
                auth.clone()
            } else {
                String::new()
            };
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST {path} HTTP/1.1\r\nhost: veil.test\r\ncontent-type: message/ohttp-req\r\n{meta}x-padding: {}\r\n",
                    "p".repeat(200)
                );
                let full = format!("{head}content-length: 100000\r\n\r\n");
                let mut sent = 0usize;
                let mut buf = [0u8; 1024];
                let closed_at = loop {
                    if started.elapsed() > SLOWLORIS_BOUND + Duration::from_secs(5) {
                        break None;
                    }
                    match kind {
                        Kind::Idle => {}
                        Kind::Headers => {
                            let b = head.as_bytes()[sent % head.len()];
                            if tcp.write_all(&[b]).await.is_err() {
                                break Some(started.elapsed());
                            }
                            sent += 1;
                        }
                        Kind::Body => {
                            let r = if sent == 0 {
                                tcp.write_all(full.as_bytes()).await
                            } else {
                                tcp.write_all(b"x").await
                            };
                            if r.is_err() {
                                break Some(started.elapsed());
                            }
                            sent += 1;
                        }
                    }
                    let read = tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await;
                    if let Ok(Ok(0) | Err(_)) = read {
                        break Some(started.elapsed());
                    }
                };
                let bound = SLOWLORIS_BOUND;
                (
                    name,
                    format!("closed by the server within {} s", bound.as_secs()),
                    closed_at.map_or_else(
                        || format!("still open after {} s", started.elapsed().as_secs()),
                        |t| format!("closed after {} s", t.as_secs()),
                    ),
                    closed_at.is_some_and(|t| t <= bound),
                )
            }));
        }
    }
    // While they drip: normal requests are answered promptly.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut results = Vec::new();
    for (label, addr) in [("enclave", enclave), ("gateway", gateway)] {
        let t = Instant::now();
        let r = get(addr, "/healthz").await;
        let fast = t.elapsed() < Duration::from_secs(5);
        results.push((
            format!("{label}: /healthz answered while slow connections are open"),
            "200 within 5 s".to_owned(),
            format!("{} in {} ms", r.status, t.elapsed().as_millis()),
            r.status == 200 && fast,
        ));
    }
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}
