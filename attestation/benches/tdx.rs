//! TDX quote verification (DCAP, offline): one quote with its collateral parsed once and
//! cached (the parsed `Collateral` reused), every signature, chain, CRL and TCB check
//! done per call; and parsing the collateral, for the cold case.
//!
//! Then, in the same run, a side-by-side table: veil and the peer `dcap-qvl` timed the same
//! way (each call timed on its own, p50/p99/mean over the same number of calls, after the
//! same warm-up) on the same quotes and collateral. The peer runs through its Python
//! package (a compiled build of the same Rust crate), driven by `dcap_qvl_peer.py` with
//! the interpreter of `target/dcap-qvl-venv` (created as `scripts/dcap-qvl-compare.sh`
//! does when missing; `VEIL_DCAP_QVL_PYTHON` names another; the peer is skipped, with
//! the reason printed, when it cannot be had). Not a Rust dev-dependency: the crate's
//! `std` feature turns on `serde_json/preserve_order`, which would change JSON map
//! ordering for every test build of this workspace.
//!
//! Run with `cargo bench -p veil-attestation --bench tdx`; see `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use veil_attestation::checks::Checks;
use veil_attestation::tdx::{self, Collateral, TdxPolicy};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/tdx");

/// (sample, collateral dir, time): the quotes that verify.
const SAMPLES: [(&str, &str, &str); 3] = [
    (
        "dcap-qvl-v4-uptodate",
        "dcap-qvl-v4-uptodate/collateral",
        "2025-07-19T10:00:34Z",
    ),
    (
        "go-tdx-guest-v5",
        "dcap-qvl-v5-outdated/collateral",
        "2026-03-01T00:00:00Z",
    ),
    (
        "dstack-v4-eventlog",
        "dcap-qvl-v5-outdated/collateral",
        "2026-03-01T00:00:00Z",
    ),
];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("tdx_verify");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let policy = TdxPolicy::default();
    for (name, dir, when) in SAMPLES {
        let quote = std::fs::read(format!("{TESTDATA}/{name}/quote.bin")).unwrap();
        let files =
            tdx::collateral::read_dir_files(std::path::Path::new(&format!("{TESTDATA}/{dir}")))
                .unwrap();
        let collateral = Collateral::from_files(&files).unwrap();
        let at = OffsetDateTime::parse(when, &Rfc3339).unwrap();
        // It verifies, or the figure means nothing.
        tdx::verify(&quote, &collateral, &policy, None, at, &mut Checks::new()).unwrap();
        group.bench_function(format!("{name}/veil-cached-collateral"), |b| {
            b.iter(|| {
                let mut checks = Checks::new();
                black_box(
                    tdx::verify(
                        black_box(&quote),
                        &collateral,
                        &policy,
                        None,
                        at,
                        &mut checks,
                    )
                    .unwrap(),
                )
            });
        });
        group.bench_function(format!("{name}/veil-parse-collateral"), |b| {
            b.iter(|| black_box(Collateral::from_files(black_box(&files)).unwrap()));
        });
    }
    group.finish();
}

/// The side-by-side table: rounds, alternating veil and dcap-qvl so that both see the
/// same load; calls timed per quote per round, and untimed warm-up calls per round.
const ROUNDS: usize = 5;
const CALLS: usize = 200;
const WARMUP: usize = 20;
const DCAP_QVL_VERSION: &str = "0.7.0";

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64) * p) as usize;
        samples[i.min(samples.len() - 1)]
    };
    let total: Duration = samples.iter().sum();
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: total / u32::try_from(samples.len()).unwrap(),
    }
}

fn time_calls(samples: &mut Vec<Duration>, mut f: impl FnMut()) {
    for _ in 0..WARMUP {
        f();
    }
    for _ in 0..CALLS {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
}

fn fmt(d: Duration) -> String {
    if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn python_ok(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            &format!(
                "import dcap_qvl, sys; sys.exit(0 if getattr(dcap_qvl, '__version__', '{DCAP_QVL_VERSION}') == '{DCAP_QVL_VERSION}' else 1)"
            ),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Python interpreter with dcap-qvl, or why there is none.
fn peer_python() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VEIL_DCAP_QVL_PYTHON") {
        let p = PathBuf::from(p);
        return if python_ok(&p) {
            Ok(p)
        } else {
            Err(format!(
                "VEIL_DCAP_QVL_PYTHON={} cannot import dcap_qvl {DCAP_QVL_VERSION}",
                p.display()
            ))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dcap-qvl-venv");
    let python = venv.join("bin/python");
    if python_ok(&python) {
        return Ok(python);
    }
    // Created as scripts/dcap-qvl-compare.sh does.
    println!(
        "creating {} with dcap-qvl=={DCAP_QVL_VERSION} (python3 -m pip)",
        venv.display()
    );
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "{what} failed: {}",
                err.lines().last().unwrap_or("no message")
            ))
        }
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            &format!("dcap-qvl=={DCAP_QVL_VERSION}"),
        ]),
        "pip install dcap-qvl",
    )?;
    if python_ok(&python) {
        Ok(python)
    } else {
        Err("dcap_qvl does not import after installing it".to_owned())
    }
}

/// One round of dcap-qvl on the same quotes: (status, samples) per quote, in SAMPLES
/// order.
fn peer_round(python: &Path) -> Result<Vec<(String, Vec<Duration>)>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/dcap_qvl_peer.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg(CALLS.to_string())
        .arg(WARMUP.to_string());
    for (name, dir, when) in SAMPLES {
        let at = OffsetDateTime::parse(when, &Rfc3339).unwrap();
        cmd.arg(format!("{TESTDATA}/{name}/quote.bin"))
            .arg(format!("{TESTDATA}/{dir}"))
            .arg(at.unix_timestamp().to_string());
    }
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "dcap_qvl_peer.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("peer output {line:?}: {e}"))?;
        let samples = v["samples_ns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(serde_json::Value::as_u64)
                    .map(Duration::from_nanos)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        rows.push((v["status"].as_str().unwrap_or("?").to_owned(), samples));
    }
    if rows.len() != SAMPLES.len() {
        return Err(format!(
            "{} peer results for {} quotes",
            rows.len(),
            SAMPLES.len()
        ));
    }
    Ok(rows)
}

/// veil and dcap-qvl, timed the same way in this run, in one table.
fn side_by_side() {
    let load_before = loadavg();
    let policy = TdxPolicy::default();
    let mut inputs = Vec::new();
    for (name, dir, when) in SAMPLES {
        let quote = std::fs::read(format!("{TESTDATA}/{name}/quote.bin")).unwrap();
        let files =
            tdx::collateral::read_dir_files(Path::new(&format!("{TESTDATA}/{dir}"))).unwrap();
        let collateral = Collateral::from_files(&files).unwrap();
        let at = OffsetDateTime::parse(when, &Rfc3339).unwrap();
        let status = tdx::verify(&quote, &collateral, &policy, None, at, &mut Checks::new())
            .unwrap()
            .tcb_status;
        inputs.push((name, quote, files, collateral, at, status));
    }
    let python = peer_python();
    let mut cached = vec![Vec::new(); SAMPLES.len()];
    let mut cold = vec![Vec::new(); SAMPLES.len()];
    let mut theirs: Result<Vec<(String, Vec<Duration>)>, String> = python
        .as_ref()
        .map(|_| vec![(String::new(), Vec::new()); SAMPLES.len()])
        .map_err(Clone::clone);
    for _ in 0..ROUNDS {
        for (i, (_, quote, files, collateral, at, _)) in inputs.iter().enumerate() {
            time_calls(&mut cached[i], || {
                black_box(
                    tdx::verify(
                        black_box(quote),
                        collateral,
                        &policy,
                        None,
                        *at,
                        &mut Checks::new(),
                    )
                    .unwrap(),
                );
            });
            time_calls(&mut cold[i], || {
                let c = Collateral::from_files(black_box(files)).unwrap();
                black_box(
                    tdx::verify(black_box(quote), &c, &policy, None, *at, &mut Checks::new())
                        .unwrap(),
                );
            });
        }
        if let (Ok(python), Ok(acc)) = (&python, &mut theirs) {
            match peer_round(python) {
                Ok(rows) => {
                    for (slot, (status, samples)) in acc.iter_mut().zip(rows) {
                        slot.0 = status;
                        slot.1.extend(samples);
                    }
                }
                Err(e) => theirs = Err(e),
            }
        }
    }
    let load_after = loadavg();

    println!();
    println!(
        "TDX verification, same run: {ROUNDS} rounds alternating veil and dcap-qvl, {CALLS} calls per quote per round ({} in all), each timed, after {WARMUP} warm-up calls per round",
        ROUNDS * CALLS
    );
    println!("load average before {load_before}, after {load_after}");
    println!(
        "| quote | veil status | veil, cached collateral p50 / p99 / mean | veil, parse collateral + verify p50 / p99 / mean | dcap-qvl {DCAP_QVL_VERSION} (Python) status | dcap-qvl p50 / p99 / mean |"
    );
    println!("| --- | --- | ---: | ---: | --- | ---: |");
    let three = |s: Stats| format!("{} / {} / {}", fmt(s.p50), fmt(s.p99), fmt(s.mean));
    for (i, (name, _, _, _, _, status)) in inputs.iter().enumerate() {
        let (peer_status, peer_stats) = match &theirs {
            Ok(rows) => (rows[i].0.clone(), three(stats(rows[i].1.clone()))),
            Err(_) => ("skipped".to_owned(), "skipped".to_owned()),
        };
        println!(
            "| {name} | {status} | {} | {} | {peer_status} | {peer_stats} |",
            three(stats(cached[i].clone())),
            three(stats(cold[i].clone())),
        );
    }
    if let Err(reason) = &theirs {
        println!("dcap-qvl peer skipped: {reason}");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` does not (one quick pass of
    // the criterion benches only).
    if std::env::args().any(|a| a == "--bench") {
        side_by_side();
    }
}
