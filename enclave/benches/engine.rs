//! The built-in engine against its peers, measured in the same run on the same machine.
//!
//! veil: SmolLM2-135M-Instruct (Q4_1 GGUF) on the CPU pass with 1 and 2 threads: prefill
//! of a fixed 128-token prompt in one `feed`, then 128 single-token decode steps feeding
//! back the argmax (EOS is not a stop); all-MiniLM-L6-v2 embeddings of 32 short chunks one
//! at a time (batch 1) and in one call (batch 32). Peers: llama.cpp (llama-cpp-python) and
//! sentence-transformers through `tests/reference/peer_bench.py`, which also supplies the
//! workload (`--inputs`) so both sides measure exactly the same thing, with the same
//! statistic (one warm-up, then the median of up to 5 runs within a time budget).
//!
//! ```sh
//! VEIL_MODELS_DIR=models cargo bench -p veil-enclave --bench engine
//! ```
//!
//! `VEIL_PEER_PYTHON` is the Python with the peers installed (default
//! `<workspace>/.venv-ref/bin/python`, made by `tests/reference/setup.sh`);
//! `VEIL_BENCH_NO_PEERS=1` measures veil only. `VEIL_BENCH_JSON=path` also writes every
//! figure as JSON. `VEIL_BENCH_ONLY=chat1|chat2|chat|embeddings` measures only that part of
//! veil (for profiling; implies no peers). `VEIL_BENCH_ROUNDS=N` (default 3): veil and
//! the peers alternate N times, and each figure is the median over the rounds, each ratio
//! the median of the rounds' ratios (the range is printed beside it): on a shared guest
//! the host's drift between two back-to-back runs is as large as the gaps measured.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]
#![allow(clippy::print_stderr, clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The allocator the `veil-enclave` binary runs with (its `main.rs`), so that the bench
/// measures the engine as the enclave runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::{Value, json};
use veil_enclave::engine::EmbeddingModel;
use veil_enclave::engine::bert::{BertEmbeddings, EmbeddingOptions};
use veil_enclave::engine::llama::{BackendChoice, ChatOptions, LlamaChat};
use veil_enclave::engine::sampling::argmax;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn models_dir() -> PathBuf {
    std::env::var_os("VEIL_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models"))
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/peer_bench.py")
}

fn python() -> PathBuf {
    std::env::var_os("VEIL_PEER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv-ref/bin/python"))
}

fn run_python(args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(peer_script())
        .args(args)
        .arg("--model-dir")
        .arg(models_dir())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python().display()));
    assert!(out.status.success(), "peer_bench.py {args:?} failed");
    serde_json::from_slice(&out.stdout).expect("peer_bench.py JSON")
}

/// The workload, as peer_bench.py defines it.
struct Inputs {
    prompt_text: String,
    prompt_tokens: usize,
    decode_tokens: usize,
    chunks: Vec<String>,
    runs: usize,
    min_runs: usize,
    soft_budget_s: f64,
    hard_budget_s: f64,
}

impl Inputs {
    fn load() -> Self {
        let v = run_python(&["--inputs"]);
        let n = |k: &str| usize::try_from(v[k].as_u64().unwrap()).unwrap();
        Self {
            prompt_text: v["prompt_text"].as_str().unwrap().to_string(),
            prompt_tokens: n("prompt_tokens"),
            decode_tokens: n("decode_tokens"),
            chunks: v["rag_chunks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect(),
            runs: n("runs_max"),
            min_runs: n("min_runs"),
            soft_budget_s: v["soft_budget_s"].as_f64().unwrap(),
            hard_budget_s: v["hard_budget_s"].as_f64().unwrap(),
        }
    }

    /// One warm-up, then up to `runs` measured runs of `f` (each returns its rates),
    /// stopping early as peer_bench.py does; the median of each rate.
    fn measure<const K: usize>(&self, mut f: impl FnMut() -> [f64; K]) -> [f64; K] {
        let start = Instant::now();
        let mut rates: Vec<[f64; K]> = Vec::new();
        for run in 0..=self.runs {
            let elapsed = start.elapsed().as_secs_f64();
            let measured = run.saturating_sub(1);
            if (measured >= self.min_runs && elapsed > self.soft_budget_s)
                || (measured >= 1 && elapsed > self.hard_budget_s)
            {
                break;
            }
            let r = f();
            if run > 0 {
                rates.push(r);
            }
        }
        std::array::from_fn(|k| median(rates.iter().map(|r| r[k]).collect()))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

fn bench_chat(inputs: &Inputs, gguf: &Path, threads: usize) -> (f64, f64) {
    let model = LlamaChat::load(
        gguf,
        &ChatOptions {
            backend: BackendChoice::Cpu,
            threads: Some(threads),
            ..ChatOptions::default()
        },
    )
    .expect("load the chat model");
    let ids = model.tokenizer().encode(&inputs.prompt_text).unwrap();
    assert!(ids.len() >= inputs.prompt_tokens, "prompt too short");
    let prompt = &ids[..inputs.prompt_tokens];
    let [prefill, decode] = inputs.measure(|| {
        let mut s = model.session().unwrap();
        let t0 = Instant::now();
        s.feed(prompt).unwrap();
        let t1 = Instant::now();
        for _ in 0..inputs.decode_tokens {
            let next = argmax(&s.logits().unwrap());
            s.feed(&[next]).unwrap();
        }
        let t2 = Instant::now();
        [
            inputs.prompt_tokens as f64 / (t1 - t0).as_secs_f64(),
            inputs.decode_tokens as f64 / (t2 - t1).as_secs_f64(),
        ]
    });
    (prefill, decode)
}

fn bench_embeddings(inputs: &Inputs, dir: &Path) -> (f64, f64) {
    let model = BertEmbeddings::load(dir, &EmbeddingOptions::default()).expect("load the embedder");
    let n = inputs.chunks.len() as f64;
    let [one] = inputs.measure(|| {
        let t0 = Instant::now();
        for c in &inputs.chunks {
            model.embed(std::slice::from_ref(c)).unwrap();
        }
        [n / t0.elapsed().as_secs_f64()]
    });
    let [all] = inputs.measure(|| {
        let t0 = Instant::now();
        model.embed(&inputs.chunks).unwrap();
        [n / t0.elapsed().as_secs_f64()]
    });
    (one, all)
}

fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One round: veil's figures, then the peers' (`Value::Null` when not measured).
struct Round {
    /// `(threads, prefill tok/s, decode tok/s)`.
    chat: Vec<(u64, f64, f64)>,
    emb: (f64, f64),
    peers: Value,
}

fn measure_round(inputs: &Inputs, gguf: &Path, emb_dir: &Path, only: Option<&str>) -> Round {
    let wants = |part: &str| only.is_none_or(|o| part.starts_with(o));
    let mut chat = Vec::new();
    for threads in [1u64, 2] {
        if !wants(&format!("chat{threads}")) {
            continue;
        }
        let (p, d) = bench_chat(inputs, gguf, threads as usize);
        eprintln!("veil threads={threads}: prefill {p:.1} tok/s, decode {d:.1} tok/s");
        chat.push((threads, p, d));
    }
    let emb = if wants("embeddings") {
        bench_embeddings(inputs, emb_dir)
    } else {
        (f64::NAN, f64::NAN)
    };
    eprintln!(
        "veil embeddings: batch 1 {:.1}/s, batch 32 {:.1}/s",
        emb.0, emb.1
    );
    let peers =
        if only.is_some() || std::env::var_os("VEIL_BENCH_NO_PEERS").is_some_and(|v| v == "1") {
            Value::Null
        } else {
            run_python(&["--json", "--threads", "2"])
        };
    Round { chat, emb, peers }
}

impl Round {
    /// Every figure of the round: name, veil's value, the peer's (if measured).
    fn figures(&self) -> Vec<(String, f64, Option<f64>)> {
        let peer_chat = |threads: u64, key: &str| {
            self.peers["llama_cpp"]["results"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["n_threads"] == threads))
                .and_then(|r| r[key].as_f64())
        };
        let peer_emb = |batch: u64| {
            self.peers["sentence_transformers"]["results"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["batch_size"] == batch))
                .and_then(|r| r["embeddings_per_s"].as_f64())
        };
        let mut out = Vec::new();
        for &(t, p, d) in &self.chat {
            out.push((
                format!("prefill tok/s, {t} thread(s)"),
                p,
                peer_chat(t, "prefill_tokens_per_s"),
            ));
            out.push((
                format!("decode tok/s, {t} thread(s)"),
                d,
                peer_chat(t, "decode_tokens_per_s"),
            ));
        }
        out.push(("embeddings/s, batch 1".into(), self.emb.0, peer_emb(1)));
        out.push(("embeddings/s, batch 32".into(), self.emb.1, peer_emb(32)));
        out
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let started = Instant::now();
    let load_start = load_avg();
    let inputs = Inputs::load();
    let gguf = models_dir().join(veil_enclave::models::DEFAULT_CHAT_PATH);
    let emb_dir = models_dir().join(veil_enclave::models::DEFAULT_EMBEDDINGS_DIR);
    let only = std::env::var("VEIL_BENCH_ONLY").ok();
    // veil and its peers alternate, round after round, so that the host's drift (this
    // is a shared guest) falls on both sides; the ratio reported is the median of the
    // rounds' ratios.
    let rounds: usize = std::env::var("VEIL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut all = Vec::with_capacity(rounds);
    for r in 0..rounds {
        eprintln!("round {} of {rounds}", r + 1);
        all.push(measure_round(&inputs, &gguf, &emb_dir, only.as_deref()));
    }

    println!(
        "engine bench: prompt {} tokens, decode {} tokens, {} chunks; median of up to {} runs per round, {rounds} round(s), veil and peers alternating",
        inputs.prompt_tokens,
        inputs.decode_tokens,
        inputs.chunks.len(),
        inputs.runs
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8} {:>15}",
        "figure", "veil", "peer", "ratio", "ratio range"
    );
    let names: Vec<String> = all[0].figures().into_iter().map(|f| f.0).collect();
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let figs: Vec<(f64, Option<f64>)> = all
            .iter()
            .filter_map(|r| r.figures().get(i).map(|f| (f.1, f.2)))
            .collect();
        let ours = median(figs.iter().map(|f| f.0).collect());
        let peers: Vec<f64> = figs.iter().filter_map(|f| f.1).collect();
        let ratios: Vec<f64> = figs.iter().filter_map(|&(o, p)| p.map(|p| o / p)).collect();
        if ratios.is_empty() {
            println!("{name:<28} {ours:>10.1} {:>10} {:>8} {:>15}", "-", "-", "-");
        } else {
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let peer = median(peers.clone());
            let ratio = median(ratios.clone());
            println!(
                "{name:<28} {ours:>10.1} {peer:>10.1} {ratio:>7.2}x {:>15}",
                format!("{lo:.2}-{hi:.2}x")
            );
        }
        rows.push(json!({
            "figure": name,
            "veil": figs.iter().map(|f| f.0).collect::<Vec<_>>(),
            "peer": peers,
            "ratio": ratios,
            "median_ratio": if ratios.is_empty() { Value::Null } else { json!(median(ratios.clone())) },
        }));
    }
    let peers = &all[0].peers;
    let load_end = load_avg();
    println!(
        "peers: llama.cpp (llama-cpp-python {}) and sentence-transformers {} (torch {}, 2 threads)",
        peers["llama_cpp"]["version"].as_str().unwrap_or("-"),
        peers["sentence_transformers"]["versions"]["sentence_transformers"]
            .as_str()
            .unwrap_or("-"),
        peers["sentence_transformers"]["versions"]["torch"]
            .as_str()
            .unwrap_or("-"),
    );
    println!(
        "load average (1 min): {load_start:.2} at start, {load_end:.2} at end; wall {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = std::env::var_os("VEIL_BENCH_JSON") {
        let out = json!({
            "rows": rows,
            "rounds": all.iter().map(|r| json!({
                "veil_chat": r.chat.iter().map(|&(t, p, d)| json!({"n_threads": t, "prefill_tokens_per_s": p, "decode_tokens_per_s": d})).collect::<Vec<_>>(),
                "veil_embeddings": {"batch_1_per_s": r.emb.0, "batch_32_per_s": r.emb.1},
                "peers": r.peers,
            })).collect::<Vec<_>>(),
            "load_avg_1m": [load_start, load_end],
        });
        std::fs::write(path, serde_json::to_vec_pretty(&out).unwrap()).unwrap();
    }
}
