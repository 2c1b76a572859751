//! TDX quote verification (DCAP, offline): one quote with its collateral parsed once and
//! cached (the parsed `Collateral` reused), every signature, chain, CRL and TCB check
//! done per call; and parsing the collateral, for the cold case.
//!
//! The peer (`dcap-qvl`) is timed from `scripts/dcap-qvl-compare.sh --bench` through its
//! Python package (a compiled build of the same Rust crate) rather than as a Rust
//! dev-dependency: the crate's `std` feature turns on `serde_json/preserve_order`, which
//! would change JSON map ordering for every test build of this workspace.
//!
//! Run with `cargo bench -p veil-attestation --bench tdx`; see `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
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

criterion_group!(benches, bench);
criterion_main!(benches);
