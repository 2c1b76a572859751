//! What veil adds to a chat's latency: time to first token and total time of a streamed
//! chat through `veil proxy` → `veil-gateway` → `veil-enclave` (sealed, attested,
//! metered), against the same enclave's inner API in plaintext
//! (`--inner-plaintext-listen`), same run, same prompt, requests interleaved.
//!
//! `cargo bench -p veil-client --bench proxy` (builds the binaries it starts first:
//! `cargo build --release --workspace --bins`). `VEIL_BENCH_ITERS` (default 40) requests
//! per path; `VEIL_MODELS_DIR` as for the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use veil_client::procs::{Proc, create_key, sibling, sim_enclave, sim_gateway};

type Http = Client<HttpConnector, Full<Bytes>>;

/// One streamed chat: (time to the first content delta, time to the end of the stream).
async fn timed_chat(http: &Http, base: &str, body: &str) -> (Duration, Duration) {
    let req = hyper::Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer unused")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let start = Instant::now();
    let resp = http.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut first = None;
    let mut seen = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            seen.extend_from_slice(data);
            if first.is_none() && has_content(&seen) {
                first = Some(start.elapsed());
            }
        }
    }
    let total = start.elapsed();
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("[DONE]"), "stream did not finish: {text}");
    (first.expect("no content delta"), total)
}

/// Whether an SSE event with a non-empty `delta.content` has arrived.
fn has_content(seen: &[u8]) -> bool {
    String::from_utf8_lossy(seen).lines().any(|l| {
        l.strip_prefix("data: ")
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(|c| !c.is_empty())
            })
            .unwrap_or(false)
    })
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let iters: usize = std::env::var("VEIL_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let models = std::env::var_os("VEIL_MODELS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"),
        PathBuf::from,
    );
    let models = models.to_str().unwrap().to_owned();
    let dir = std::env::temp_dir().join(format!("veil-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join("ledger.db").display());

    let enclave = sim_enclave(&models, &["--inner-plaintext-listen", "127.0.0.1:0"]).unwrap();
    let plaintext = enclave.announced("PLAINTEXT on http://").unwrap();
    let key = create_key(&db, "bench").unwrap();
    let gateway = sim_gateway(enclave.url(), &db, &[]).unwrap();
    let proxy = Proc::start(
        &sibling("veil").unwrap(),
        &[
            "proxy",
            "--gateway",
            gateway.url(),
            "--api-key",
            &key,
            "--listen",
            "127.0.0.1:0",
            "--insecure-allow-sim",
        ],
    )
    .unwrap();

    let body = serde_json::json!({
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": "Write one sentence about the sea."}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": true,
    })
    .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = Client::builder(TokioExecutor::new()).build(connector);
    let (mut plain_ttft, mut plain_total, mut veil_ttft, mut veil_total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        // Warm-up: connections, attestation, caches.
        for _ in 0..3 {
            timed_chat(&http, &plaintext, &body).await;
            timed_chat(&http, proxy.url(), &body).await;
        }
        for _ in 0..iters {
            let (f, t) = timed_chat(&http, &plaintext, &body).await;
            plain_ttft.push(f);
            plain_total.push(t);
            let (f, t) = timed_chat(&http, proxy.url(), &body).await;
            veil_ttft.push(f);
            veil_total.push(t);
        }
    });
    let to_ms = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<f64>>();
    let (plain_ttft_ms, plain_total_ms, veil_ttft_ms, veil_total_ms) = (
        to_ms(&plain_ttft),
        to_ms(&plain_total),
        to_ms(&veil_ttft),
        to_ms(&veil_total),
    );
    println!(
        "streamed chat, SmolLM2-135M-Instruct, 8 tokens, {iters} requests per path, interleaved"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}",
        "path", "TTFT p50", "TTFT p99", "total p50", "total p99"
    );
    let rows = [
        (
            "enclave inner API, plaintext (peer)",
            &mut plain_ttft,
            &mut plain_total,
        ),
        (
            "veil proxy -> gateway -> enclave (sealed)",
            &mut veil_ttft,
            &mut veil_total,
        ),
    ];
    let mut p50 = Vec::new();
    for (name, ttft, total) in rows {
        let (a, b, c, d) = (
            pct(ttft, 0.5),
            pct(ttft, 0.99),
            pct(total, 0.5),
            pct(total, 0.99),
        );
        p50.push((a, c));
        println!(
            "{name:<44} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms",
            ms(a),
            ms(b),
            ms(c),
            ms(d)
        );
    }
    println!(
        "added by veil, difference of the p50s: TTFT {:+.2} ms, total {:+.2} ms",
        ms(p50[1].0) - ms(p50[0].0),
        ms(p50[1].1) - ms(p50[0].1)
    );
    // Each veil request ran right after its plaintext twin: the median of the paired
    // differences cancels slow drifts in machine load.
    let paired = |a: &[f64], b: &[f64]| {
        let mut d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    };
    println!(
        "added by veil, median of paired differences: TTFT {:+.2} ms, total {:+.2} ms",
        paired(&plain_ttft_ms, &veil_ttft_ms),
        paired(&plain_total_ms, &veil_total_ms)
    );
    drop(proxy);
    drop(gateway);
    drop(enclave);
    let _ = std::fs::remove_dir_all(&dir);
}
