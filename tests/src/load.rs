//! The load harness behind `veil-load`: real `veil-enclave` processes (simulated TEE),
//! a real `veil-gateway` (SQLite ledger) and a real `veil proxy`, with recording hops on
//! both sides of the gateway; N concurrent clients send streamed chat, chat and
//! embeddings through the proxy for a bounded time or number of requests.
//!
//! Every answer is checked: it opened (the proxy verified the sealed answer and its
//! receipt), it belongs to its request (the receipt's model and token counts equal the
//! answer's; an embeddings answer has one vector per input, and its probe vector equals
//! the reference for that probe), and its receipt is in the gateway's ledger exactly
//! once with the same counts. Each request carries a canary unique to it; none may appear
//! in any byte the gateway read or wrote, in any process's output, in the enclaves'
//! metrics, or in the ledger file.
//!
//! Faults on demand: an enclave killed mid-run, the gateway restarted mid-run, enclaves
//! rotating their keys while clients hold the old bundles.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use serde_json::{Value, json};
use veil_attestation::receipt::Receipt;
use veil_client::procs::{Proc, create_key, sibling, sim_enclave};

use crate::hop::{Hop, count_hits, patterns};

/// The chat model the default model directory serves.
pub const CHAT_MODEL: &str = "SmolLM2-135M-Instruct";
/// The embeddings model the default model directory serves.
pub const EMBED_MODEL: &str = "all-MiniLM-L6-v2";
const PROBES: [&str; 4] = [
    "The quarterly report is due on Friday.",
    "Lighthouses guide ships along rocky coasts.",
    "A recipe for bread needs flour, water, salt and yeast.",
    "The museum opens at nine in the morning.",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The model directory.
    pub models: PathBuf,
    /// Enclaves behind the gateway.
    pub enclaves: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Stop sending after this long.
    pub duration: Duration,
    /// Stop sending after this many requests (whichever comes first).
    pub max_requests: u64,
    /// Weights of streamed chat, chat and embeddings requests.
    pub mix: [u32; 3],
    /// `max_tokens` of chat requests.
    pub max_tokens: u32,
    /// Kill the first enclave this long after the start.
    pub kill_enclave_after: Option<Duration>,
    /// Restart the gateway (same database) this long after the start.
    pub restart_gateway_after: Option<Duration>,
    /// Enclaves replace their HPKE keys this often (whole seconds).
    pub rotate_keys_every: Option<Duration>,
}

/// Kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Streamed chat.
    Stream,
    /// Whole chat.
    Chat,
    /// Embeddings.
    Embed,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Stream => "chat-stream",
            Self::Chat => "chat",
            Self::Embed => "embeddings",
        }
    }
}

/// Latencies of one kind, milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    /// Request to end of answer.
    pub total: Vec<f64>,
    /// Request to first content event (streams).
    pub first: Vec<f64>,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests sent.
    pub sent: u64,
    /// Answers that passed every check.
    pub ok: u64,
    /// Answers that arrived but failed a check (wrong, unverifiable or mismatched).
    pub corrupted: u64,
    /// Refusals and failures by class (`http_503`, `transport`, …): clean errors.
    pub errors: BTreeMap<String, u64>,
    /// The first few problems, described.
    pub problems: Vec<String>,
    /// Latencies by kind.
    pub latencies: BTreeMap<&'static str, Latencies>,
    /// Wall time of the sending phase.
    pub elapsed: Duration,
    /// Receipts the clients hold that the ledger lacks or records differently.
    pub lost: u64,
    /// Ledger rows (status 200) no client holds a receipt for.
    pub billed_undelivered: u64,
    /// Ledger rows in all.
    pub ledger_rows: u64,
    /// Canary occurrences outside the enclaves: gateway traffic, logs, metrics, ledger.
    pub canary_hits: u64,
    /// Bytes the gateway read and wrote.
    pub gateway_bytes: u64,
    /// Events of the faults injected, with their time.
    pub faults: Vec<String>,
    /// Answers that passed every check and finished after the last fault.
    pub ok_after_faults: u64,
    /// Times the gateway found a backend not routable (its log's metadata lines).
    pub backend_check_failures: u64,
}

impl Report {
    /// Requests per second over the sending phase.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as text.
    #[must_use]
    pub fn text(&self) -> String {
        let mut s = format!(
            "sent {} in {:.1} s: {} ok ({:.1}/s), {} corrupted, {} clean errors {:?}\n",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.rate(),
            self.corrupted,
            self.errors.values().sum::<u64>(),
            self.errors
        );
        for (kind, l) in &self.latencies {
            s.push_str(&format!(
                "  {kind:<12} n={:<6} total p50 {:>8.1} ms  p90 {:>8.1} ms  p99 {:>8.1} ms",
                l.total.len(),
                pct(&l.total, 50.0),
                pct(&l.total, 90.0),
                pct(&l.total, 99.0)
            ));
            if !l.first.is_empty() {
                s.push_str(&format!(
                    "  first event p50 {:.1} ms p99 {:.1} ms",
                    pct(&l.first, 50.0),
                    pct(&l.first, 99.0)
                ));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "ledger: {} rows; {} client receipts missing or different; {} billed but not delivered\n",
            self.ledger_rows, self.lost, self.billed_undelivered
        ));
        s.push_str(&format!(
            "gateway: {} failed backend checks\n",
            self.backend_check_failures
        ));
        s.push_str(&format!(
            "canaries: {} occurrences in {} bytes of gateway traffic, the logs, the metrics and the ledger\n",
            self.canary_hits, self.gateway_bytes
        ));
        for f in &self.faults {
            s.push_str(&format!("fault: {f}\n"));
        }
        if !self.faults.is_empty() {
            s.push_str(&format!(
                "answers that passed every check after the last fault: {}\n",
                self.ok_after_faults
            ));
        }
        for p in &self.problems {
            s.push_str(&format!("problem: {p}\n"));
        }
        s
    }

    /// The report as JSON.
    #[must_use]
    pub fn json(&self) -> Value {
        let lat: serde_json::Map<String, Value> = self
            .latencies
            .iter()
            .map(|(k, l)| {
                (
                    (*k).to_owned(),
                    json!({"n": l.total.len(), "p50_ms": pct(&l.total, 50.0),
                           "p90_ms": pct(&l.total, 90.0), "p99_ms": pct(&l.total, 99.0),
                           "first_p50_ms": pct(&l.first, 50.0), "first_p99_ms": pct(&l.first, 99.0)}),
                )
            })
            .collect();
        json!({"sent": self.sent, "ok": self.ok, "corrupted": self.corrupted,
               "errors": self.errors, "elapsed_s": self.elapsed.as_secs_f64(),
               "requests_per_s": self.rate(), "latency": lat, "lost": self.lost,
               "billed_undelivered": self.billed_undelivered, "ledger_rows": self.ledger_rows,
               "canary_hits": self.canary_hits, "gateway_bytes": self.gateway_bytes,
               "faults": self.faults, "ok_after_faults": self.ok_after_faults,
               "backend_check_failures": self.backend_check_failures,
               "problems": self.problems})
    }
}

/// The `p`th percentile (nearest rank) of `v`; 0 when empty.
#[must_use]
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// What one client saw of one request.
enum Outcome {
    Ok {
        kind: Kind,
        finished: Instant,
        total_ms: f64,
        first_ms: Option<f64>,
        receipt: Receipt,
    },
    Error(String),
    Corrupted(String),
}

struct Shared {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    proxy: String,
    prefix: String,
    next: AtomicU64,
    max_requests: u64,
    deadline: Instant,
    mix: [u32; 3],
    max_tokens: u32,
    references: Vec<Vec<f64>>,
    /// The receipts of the reference requests (they are billed too).
    reference_receipts: Vec<Receipt>,
}

/// Runs the harness.
///
/// # Errors
/// When the processes cannot be started or the ledger cannot be read; problems of the
/// requests themselves are in the report.
pub async fn run(cfg: &Config) -> anyhow::Result<Report> {
    let dir = TempDir::new()?;
    let db = dir.0.join("ledger.db");
    let db_s = db.to_str().context("path")?.to_owned();
    let models = cfg.models.to_str().context("models path")?.to_owned();
    // A tag unique to this run: every canary starts with it.
    let tag: String = (0..8)
        .map(|_| char::from(b'A' + rand::rng().random_range(0..26u8)))
        .collect();
    let prefix = format!("VEILCANARY{tag}");
    let pats = Arc::new(patterns(prefix.as_bytes()));

    let mut enclaves = Vec::new();
    let mut enclave_hops = Vec::new();
    let rotate = cfg
        .rotate_keys_every
        .map_or_else(|| "0".to_owned(), |d| d.as_secs().max(1).to_string());
    for _ in 0..cfg.enclaves.max(1) {
        let e = sim_enclave(
            &models,
            &[
                "--queue-capacity",
                "256",
                "--log",
                "veil_enclave=debug,info",
                "--rotate-keys-seconds",
                &rotate,
            ],
        )?;
        let hop = Hop::start(e.addr(), pats.clone()).await?;
        enclaves.push(Some(e));
        enclave_hops.push(hop);
    }
    let api_key = create_key(&db_s, "load")?;
    let gateway_args = |hops: &[Hop]| {
        let mut a = vec![
            "serve".to_owned(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--database".to_owned(),
            db_s.clone(),
            "--insecure-allow-sim".to_owned(),
        ];
        for h in hops {
            a.push("--backend".to_owned());
            a.push(h.url());
        }
        a
    };
    let gw_bin = sibling("veil-gateway")?;
    let args = gateway_args(&enclave_hops);
    let mut gateway = Proc::start(
        &gw_bin,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let gateway_hop = Hop::start(gateway.addr(), pats.clone()).await?;
    let gw_url = gateway_hop.url();
    let proxy = Proc::start(
        &sibling("veil")?,
        &[
            "proxy",
            "--gateway",
            &gw_url,
            "--api-key",
            &api_key,
            "--listen",
            "127.0.0.1:0",
            "--insecure-allow-sim",
        ],
    )?;

    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let http = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(cfg.clients.max(1))
        .build(http);
    let mut shared = Shared {
        http,
        proxy: proxy.url().to_owned(),
        prefix,
        next: AtomicU64::new(0),
        max_requests: cfg.max_requests,
        deadline: Instant::now(),
        mix: cfg.mix,
        max_tokens: cfg.max_tokens,
        references: Vec::new(),
        reference_receipts: Vec::new(),
    };
    // Reference vectors for the probes, one request each, before the load.
    for probe in PROBES {
        let (status, headers, body) = post(
            &shared,
            "/v1/embeddings",
            &json!({"model": EMBED_MODEL, "input": [probe]}),
        )
        .await?;
        anyhow::ensure!(status == 200, "reference embedding: {status} {body}");
        shared.reference_receipts.push(
            headers
                .get("veil-receipt")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_receipt)
                .context("the reference embedding has no receipt")?,
        );
        let v: Value = serde_json::from_str(&body)?;
        shared
            .references
            .push(vector(&v["data"][0]["embedding"]).context("reference vector")?);
    }

    let started = Instant::now();
    shared.deadline = started + cfg.duration;
    let shared = Arc::new(shared);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..cfg.clients.max(1) {
        let shared = shared.clone();
        let outcomes = outcomes.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(n) = claim(&shared) {
                let o = one(&shared, n).await;
                outcomes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(o);
            }
        }));
    }

    // Faults, while the clients run.
    let mut faults = Vec::new();
    let mut pending: Vec<(Duration, &str)> = Vec::new();
    if let Some(t) = cfg.kill_enclave_after {
        pending.push((t, "kill-enclave"));
    }
    if let Some(t) = cfg.restart_gateway_after {
        pending.push((t, "restart-gateway"));
    }
    pending.sort();
    let mut old_logs = Vec::new();
    let mut last_fault = None;
    for (at, what) in pending {
        tokio::time::sleep_until((started + at).into()).await;
        if tasks.iter().all(tokio::task::JoinHandle::is_finished) {
            break;
        }
        let sent = shared.next.load(Ordering::Relaxed);
        last_fault = Some(Instant::now());
        match what {
            "kill-enclave" => {
                if let Some(e) = enclaves.first_mut().and_then(Option::take) {
                    old_logs.push(e.log_text());
                    drop(e);
                }
                faults.push(format!(
                    "{:.1} s: killed enclave 0 (after {sent} requests were sent)",
                    started.elapsed().as_secs_f64()
                ));
            }
            _ => {
                old_logs.push(gateway.log_text());
                drop(gateway);
                let args = gateway_args(&enclave_hops);
                gateway = Proc::start(
                    &gw_bin,
                    &args.iter().map(String::as_str).collect::<Vec<_>>(),
                )?;
                gateway_hop.retarget(gateway.addr());
                faults.push(format!(
                    "{:.1} s: restarted the gateway (after {sent} requests were sent)",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed();

    let mut report = Report {
        sent: shared.next.load(Ordering::Relaxed).min(cfg.max_requests),
        elapsed,
        faults,
        ..Report::default()
    };
    let mut receipts: HashMap<String, Receipt> = shared
        .reference_receipts
        .iter()
        .map(|r| (r.request_digest.to_string(), r.clone()))
        .collect();
    let outcomes = std::mem::take(
        &mut *outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for o in outcomes {
        match o {
            Outcome::Ok {
                kind,
                finished,
                total_ms,
                first_ms,
                receipt,
            } => {
                if last_fault.is_some_and(|t| finished > t) {
                    report.ok_after_faults += 1;
                }
                let l = report.latencies.entry(kind.name()).or_default();
                l.total.push(total_ms);
                l.first.extend(first_ms);
                let digest = receipt.request_digest.to_string();
                if receipts.insert(digest.clone(), receipt).is_some() {
                    report.corrupted += 1;
                    note(
                        &mut report.problems,
                        format!("two answers carry the receipt of request {digest}"),
                    );
                } else {
                    report.ok += 1;
                }
            }
            Outcome::Error(class) => *report.errors.entry(class).or_default() += 1,
            Outcome::Corrupted(why) => {
                report.corrupted += 1;
                note(&mut report.problems, why);
            }
        }
    }

    // The ledger: every receipt a client holds, once, with the same counts. Streams are
    // recorded when their trailers pass, so allow the gateway a moment.
    let mut rows = ledger(&db)?;
    for _ in 0..50 {
        if receipts.keys().all(|d| rows.contains_key(d)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rows = ledger(&db)?;
    }
    report.ledger_rows = rows.len() as u64;
    for (digest, r) in &receipts {
        match rows.get(digest) {
            Some(&(p, c, s))
                if p == r.prompt_tokens && c == r.completion_tokens && s == u64::from(r.status) => {
            }
            other => {
                report.lost += 1;
                note(
                    &mut report.problems,
                    format!("receipt {digest}: ledger has {other:?}"),
                );
            }
        }
    }
    report.billed_undelivered = rows
        .iter()
        .filter(|(d, (_, _, s))| *s == 200 && !receipts.contains_key(*d))
        .count() as u64;

    // Canaries: the gateway's traffic (counted by the hops), every process's output, the
    // enclaves' metrics, the ledger file.
    let mut hits = gateway_hop.seen.hits.load(Ordering::Relaxed);
    let mut bytes = gateway_hop.seen.bytes.load(Ordering::Relaxed);
    for h in &enclave_hops {
        hits += h.seen.hits.load(Ordering::Relaxed);
        bytes += h.seen.bytes.load(Ordering::Relaxed);
    }
    let mut texts = old_logs;
    texts.push(gateway.log_text());
    report.backend_check_failures = texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.contains("backend not routable"))
        .count() as u64;
    for e in enclaves.iter().flatten() {
        texts.push(e.log_text());
        if let Ok((_, _, m)) = get(&shared.http, &format!("{}/metrics", e.url())).await {
            texts.push(m);
        }
    }
    for t in &texts {
        hits += count_hits(&pats, t.as_bytes());
    }
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(b) = std::fs::read(format!("{db_s}{suffix}")) {
            hits += count_hits(&pats, &b);
        }
    }
    report.canary_hits = hits;
    report.gateway_bytes = bytes;
    drop(proxy);
    Ok(report)
}

fn note(problems: &mut Vec<String>, p: String) {
    if problems.len() < 20 {
        problems.push(p);
    }
}

fn claim(s: &Shared) -> Option<u64> {
    if Instant::now() >= s.deadline {
        return None;
    }
    let n = s.next.fetch_add(1, Ordering::Relaxed);
    (n < s.max_requests).then_some(n)
}

fn kind_of(s: &Shared, n: u64) -> Kind {
    let total: u64 = s.mix.iter().map(|&w| u64::from(w)).sum::<u64>().max(1);
    // A fixed interleaving, so short runs still get every kind.
    let mut r = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % total;
    for (k, w) in [Kind::Stream, Kind::Chat, Kind::Embed]
        .into_iter()
        .zip(s.mix)
    {
        if r < u64::from(w) {
            return k;
        }
        r -= u64::from(w);
    }
    Kind::Embed
}

fn vector(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(Value::as_f64).collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

async fn post(
    s: &Shared,
    path: &str,
    body: &Value,
) -> anyhow::Result<(u16, hyper::HeaderMap, String)> {
    let req = hyper::Request::post(format!("{}{path}", s.proxy))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = s.http.request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8(body.to_vec())?))
}

async fn get(
    http: &HttpClient<HttpConnector, Full<Bytes>>,
    url: &str,
) -> anyhow::Result<(u16, hyper::HeaderMap, String)> {
    let req = hyper::Request::get(url).body(Full::new(Bytes::new()))?;
    let resp = http.request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

fn parse_receipt(hex_text: &str) -> Option<Receipt> {
    let t = hex_text.trim();
    let bytes: Option<Vec<u8>> = (0..t.len())
        .step_by(2)
        .map(|i| t.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    Receipt::parse(&bytes?).ok()
}

/// One request of kind `kind_of(n)`, carrying its own canary, and its checks.
async fn one(s: &Shared, n: u64) -> Outcome {
    let kind = kind_of(s, n);
    let canary = format!("{}-{n}", s.prefix);
    let probe = (n % PROBES.len() as u64) as usize;
    let body = match kind {
        Kind::Embed => json!({"model": EMBED_MODEL,
            "input": [PROBES[probe], format!("Confidential memo {canary}: the merger closes on {n}.")]}),
        Kind::Chat | Kind::Stream => json!({"model": CHAT_MODEL, "max_tokens": s.max_tokens,
            "temperature": 0, "stream": kind == Kind::Stream,
            "messages": [{"role": "system", "content": format!("Internal code {canary}.")},
                         {"role": "user", "content": format!("Repeat the code {canary} and summarize memo {n}.")}]}),
    };
    let path = if kind == Kind::Embed {
        "/v1/embeddings"
    } else {
        "/v1/chat/completions"
    };
    let t0 = Instant::now();
    if kind == Kind::Stream {
        return stream(s, &body, t0).await;
    }
    let (status, headers, text) = match post(s, path, &body).await {
        Ok(x) => x,
        Err(_) => return Outcome::Error("transport".into()),
    };
    let total_ms = t0.elapsed().as_secs_f64() * 1e3;
    if status != 200 {
        return classify(status, &text);
    }
    let Some(receipt) = headers
        .get("veil-receipt")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_receipt)
    else {
        return Outcome::Corrupted(format!("request {n} ({}): no valid receipt", kind.name()));
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Outcome::Corrupted(format!("request {n}: the answer is not JSON"));
    };
    let usage = &v["usage"];
    let model = if kind == Kind::Embed {
        EMBED_MODEL
    } else {
        CHAT_MODEL
    };
    let mut wrong = Vec::new();
    if receipt.status != 200 || receipt.model != model {
        wrong.push(format!("receipt says {} {}", receipt.status, receipt.model));
    }
    if usage["prompt_tokens"].as_u64() != Some(receipt.prompt_tokens) {
        wrong.push("prompt tokens differ from the receipt's".into());
    }
    match kind {
        Kind::Embed => {
            let data = v["data"].as_array().map_or(&[][..], Vec::as_slice);
            if data.len() != 2 {
                wrong.push(format!("{} vectors for 2 inputs", data.len()));
            } else {
                let first = vector(&data[0]["embedding"]).unwrap_or_default();
                let c = cosine(&first, &s.references[probe]);
                if c < 0.9999 {
                    wrong.push(format!(
                        "probe {probe}'s vector differs from its reference (cosine {c:.6})"
                    ));
                }
                if data[1]["index"] != 1 {
                    wrong.push("vectors out of order".into());
                }
            }
        }
        _ => {
            if usage["completion_tokens"].as_u64() != Some(receipt.completion_tokens) {
                wrong.push("completion tokens differ from the receipt's".into());
            }
            if receipt.completion_tokens > u64::from(s.max_tokens) {
                wrong.push("more completion tokens than asked".into());
            }
            if v["choices"][0]["message"]["content"].as_str().is_none() {
                wrong.push("no message content".into());
            }
        }
    }
    if wrong.is_empty() {
        Outcome::Ok {
            kind,
            finished: Instant::now(),
            total_ms,
            first_ms: None,
            receipt,
        }
    } else {
        Outcome::Corrupted(format!(
            "request {n} ({}): {}",
            kind.name(),
            wrong.join("; ")
        ))
    }
}

fn classify(status: u16, text: &str) -> Outcome {
    let v = serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    if v["error"]["message"].is_string() {
        let code = v["error"]["code"].as_str().unwrap_or("-");
        Outcome::Error(format!("http_{status}_{code}"))
    } else {
        Outcome::Corrupted(format!(
            "HTTP {status} with a body that is not an OpenAI error"
        ))
    }
}

async fn stream(s: &Shared, body: &Value, t0: Instant) -> Outcome {
    let req = match hyper::Request::post(format!("{}/v1/chat/completions", s.proxy))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
    {
        Ok(r) => r,
        Err(e) => return Outcome::Corrupted(e.to_string()),
    };
    let Ok(resp) = s.http.request(req).await else {
        return Outcome::Error("transport".into());
    };
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    let mut first_ms = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Outcome::Error("transport".into());
        };
        if let Ok(d) = frame.into_data() {
            if first_ms.is_none() && d.windows(9).any(|w| w == b"\"content\"") {
                first_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
            }
            text.extend_from_slice(&d);
        }
    }
    let total_ms = t0.elapsed().as_secs_f64() * 1e3;
    let text = String::from_utf8_lossy(&text).into_owned();
    if status != 200 {
        return classify(status, &text);
    }
    let mut content = String::new();
    let mut receipt = None;
    let mut done = false;
    for line in text.lines() {
        if let Some(r) = line.strip_prefix(": veil-receipt ") {
            receipt = parse_receipt(r);
        } else if let Some(d) = line.strip_prefix("data: ") {
            if d == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(d) else {
                return Outcome::Corrupted("a stream event is not JSON".into());
            };
            if v.get("error").is_some() {
                // A clean failure reported in-stream (an enclave gone mid-stream).
                return Outcome::Error(format!(
                    "stream_{}",
                    v["error"]["code"].as_str().unwrap_or("error")
                ));
            }
            content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    let Some(receipt) = receipt else {
        return if done {
            Outcome::Corrupted("a finished stream without a receipt".into())
        } else {
            Outcome::Error("stream_truncated".into())
        };
    };
    if !done
        || receipt.status != 200
        || receipt.model != CHAT_MODEL
        || receipt.completion_tokens > u64::from(s.max_tokens)
    {
        return Outcome::Corrupted(format!(
            "stream: done {done}, receipt {} {} {} tokens",
            receipt.status, receipt.model, receipt.completion_tokens
        ));
    }
    if content.is_empty() && receipt.completion_tokens > 1 {
        return Outcome::Corrupted("a stream with tokens but no content".into());
    }
    Outcome::Ok {
        kind: Kind::Stream,
        finished: Instant::now(),
        total_ms,
        first_ms,
        receipt,
    }
}

/// `request_digest → (prompt, completion, status)` of every ledger row.
fn ledger(db: &Path) -> anyhow::Result<HashMap<String, (u64, u64, u64)>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT request_digest, prompt_tokens, completion_tokens, status FROM usage_receipts",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            (
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ),
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (d, (p, c, s)) = row?;
        let u = |x: i64| u64::try_from(x).unwrap_or(u64::MAX);
        out.insert(d, (u(p), u(c), u(s)));
    }
    Ok(out)
}

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn new() -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!(
            "veil-load-{}-{}",
            std::process::id(),
            rand::rng().random::<u64>()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
