//! The gateway's cost: added latency (p50, p99) and requests per second of sealed
//! requests sent through `veil-gateway` against the same requests sent straight to the
//! enclave, in the same run, by the same load generator.
//!
//! `cargo bench -p veil-gateway --bench gateway` (after `cargo build -p veil-enclave`,
//! or `--release`; `VEIL_BENCH_ENCLAVE` names another enclave binary,
//! `VEIL_BENCH_GATEWAY` another gateway binary, e.g. an older build to compare with). Starts a real
//! enclave (simulated TEE) and a real gateway (SQLite ledger, default logging) on
//! loopback. The request is the cheapest sealed one, `GET /v1/models` inside OHTTP, so
//! the enclave's own work is small and the difference is the gateway: authentication
//! (a key lookup in the database), limits, routing, streaming the bodies through,
//! verifying the Ed25519 receipt and writing the ledger row (these two, with the log
//! line, once the answer's last frame has been handed on: they cost CPU on these shared
//! cores but no longer hold the answer back).
//!
//! Requests are sealed before the clock starts; each is timed from the first byte sent
//! to the last byte of the answer received, over kept-alive HTTP/1.1 connections.
//! Latency: one request at a time, direct and gateway alternating (so drift hits both).
//! Throughput: a fixed batch over 8 connections, each path in turn.
//!
//! Environment: `VEIL_BENCH_REQUESTS` (latency samples per path, default 3000),
//! `VEIL_BENCH_BATCH` (throughput batch per path, default 4000), `VEIL_BENCH_JSON`
//! (write the figures there as JSON too).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use veil_attestation::bundle::Bundle;
use veil_attestation::channel::{Request, Target};
use veil_attestation::verify::{Policy, verify_bundle};

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut cmd: Command, what: &str) -> Proc {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut l = l2.lock().unwrap();
            if l.len() < 100 {
                l.push(line);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(addr) = lines.lock().unwrap().iter().find_map(|l| {
            l.split_once("listening on http://")
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|a| a.parse().ok())
        }) {
            return Proc { child, addr };
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{what} exited with {s}: {:?}", lines.lock().unwrap());
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn enclave_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VEIL_BENCH_ENCLAVE") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("veil-enclave");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "no veil-enclave binary: `cargo build -p veil-enclave` first, or set VEIL_BENCH_ENCLAVE"
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One path under test: where to POST and with which extra headers.
#[derive(Clone)]
struct Path {
    addr: SocketAddr,
    uri: String,
    api_key: Option<String>,
}

struct Sealed(Bytes);

fn seal_many(target: &Target, n: usize) -> Vec<Sealed> {
    (0..n)
        .map(|_| {
            let r = Request::new("GET", "/v1/models", Vec::new());
            let (bytes, _pending) = target.seal_request(&r).unwrap();
            Sealed(Bytes::from(bytes))
        })
        .collect()
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// Sends one sealed request and reads the whole answer; returns its duration.
async fn once(
    send: &mut SendRequest<Full<Bytes>>,
    path: &Path,
    key_id: &str,
    sealed: &Sealed,
) -> Duration {
    let mut b = hyper::Request::post(&path.uri)
        .header("host", path.addr.to_string())
        .header("content-type", "message/ohttp-req")
        .header("veil-key-id", key_id)
        .header("veil-stream", "false")
        .header("te", "trailers");
    if let Some(k) = &path.api_key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    let req = b.body(Full::new(sealed.0.clone())).unwrap();
    send.ready().await.unwrap();
    let t = Instant::now();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let d = t.elapsed();
    assert_eq!(
        status,
        200,
        "{}: {:?}",
        path.uri,
        String::from_utf8_lossy(&body)
    );
    assert!(!body.is_empty());
    d
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    rps: f64,
}

fn summarize(mut v: Vec<Duration>) -> Figures {
    v.sort_unstable();
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1000.0;
    Figures {
        p50_ms: pct(&v, 0.50),
        p99_ms: pct(&v, 0.99),
        mean_ms: mean,
        rps: 0.0,
    }
}

async fn throughput(path: &Path, key_id: &str, batch: Vec<Sealed>, conns: usize) -> f64 {
    let n = batch.len();
    let queue = Arc::new(Mutex::new(batch));
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(connect(path.addr).await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            let queue = queue.clone();
            let path = path.clone();
            let key_id = key_id.to_owned();
            tokio::spawn(async move {
                loop {
                    let Some(sealed) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    once(&mut s, &path, &key_id, &sealed).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn run() {
    let samples = env_usize("VEIL_BENCH_REQUESTS", 3000);
    let batch = env_usize("VEIL_BENCH_BATCH", 4000);
    let warmup = 300;
    let dir = std::env::temp_dir().join(format!("veil-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join("ledger.db").display());

    let mut enclave_cmd = Command::new(enclave_binary());
    enclave_cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tee",
            "sim",
            "--gpu",
            "off",
        ])
        .args(["--queue-capacity", "4096", "--log", "warn"])
        .arg("--models")
        .arg(
            std::env::var_os("VEIL_MODELS_DIR")
                .map_or_else(|| workspace().join("models"), PathBuf::from),
        );
    let enclave = spawn(enclave_cmd, "veil-enclave");

    let gw_bin = std::env::var_os("VEIL_BENCH_GATEWAY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_veil-gateway")),
        PathBuf::from,
    );
    let gw_bin = gw_bin.as_path();
    let out = Command::new(gw_bin)
        .args(["keys", "create", "--database", &db, "--name", "bench"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let mut gw_cmd = Command::new(gw_bin);
    gw_cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--insecure-allow-sim",
        "--database",
        &db,
        "--max-streams-per-key",
        "1024",
        "--backend",
        &format!("http://{}", enclave.addr),
    ]);
    let gateway = spawn(gw_cmd, "veil-gateway");

    // The enclave's key, verified, from its own bundle.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let resp = client
        .get(
            format!("http://{}/attestation", enclave.addr)
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    let identity = verify_bundle(
        &Bundle::parse(&raw).unwrap(),
        &Policy::insecure_allow_sim(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let target = Target::preferred(&identity).unwrap();
    let key_id = target.key_id().to_string();

    let direct = Path {
        addr: enclave.addr,
        uri: format!("http://{}/ohttp", enclave.addr),
        api_key: None,
    };
    let via = Path {
        addr: gateway.addr,
        uri: format!("http://{}/v1/ohttp", gateway.addr),
        api_key: Some(key),
    };

    // Latency, one at a time, alternating.
    eprintln!("sealing {} requests per path…", samples + warmup);
    let d_sealed = seal_many(&target, samples + warmup);
    let g_sealed = seal_many(&target, samples + warmup);
    let mut dc = connect(direct.addr).await;
    let mut gc = connect(via.addr).await;
    let (mut d_times, mut g_times) = (Vec::new(), Vec::new());
    for (i, (ds, gs)) in d_sealed.iter().zip(&g_sealed).enumerate() {
        let (d, g) = if i % 2 == 0 {
            let d = once(&mut dc, &direct, &key_id, ds).await;
            (d, once(&mut gc, &via, &key_id, gs).await)
        } else {
            let g = once(&mut gc, &via, &key_id, gs).await;
            (once(&mut dc, &direct, &key_id, ds).await, g)
        };
        if i >= warmup {
            d_times.push(d);
            g_times.push(g);
        }
    }
    let mut d = summarize(d_times);
    let mut g = summarize(g_times);

    // Throughput, a fixed batch per path over 8 connections.
    eprintln!("throughput: {batch} requests per path over 8 connections…");
    d.rps = throughput(&direct, &key_id, seal_many(&target, batch), 8).await;
    g.rps = throughput(&via, &key_id, seal_many(&target, batch), 8).await;

    let added_p50 = g.p50_ms - d.p50_ms;
    let added_p99 = g.p99_ms - d.p99_ms;
    println!(
        "gateway bench: sealed GET /v1/models, {samples} sequential samples per path, {batch}-request batches over 8 connections"
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "path", "p50 ms", "p99 ms", "mean ms", "req/s"
    );
    for (name, f) in [("direct", &d), ("gateway", &g)] {
        println!(
            "{:<10} {:>10.3} {:>10.3} {:>10.3} {:>10.0}",
            name, f.p50_ms, f.p99_ms, f.mean_ms, f.rps
        );
    }
    println!(
        "added by the gateway: p50 {added_p50:.3} ms (target < 0.3), p99 {added_p99:.3} ms (target < 1); throughput {:.0}% of direct",
        g.rps / d.rps * 100.0
    );
    if let Some(p) = std::env::var_os("VEIL_BENCH_JSON") {
        let v = serde_json::json!({
            "direct": d, "gateway": g,
            "added_p50_ms": added_p50, "added_p99_ms": added_p99,
            "samples": samples, "batch": batch,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
    drop(gateway);
    drop(enclave);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo test --benches` runs benches with `--bench`-less args; only run for real.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}
