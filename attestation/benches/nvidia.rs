//! NVIDIA H100 evidence verification: the nvtrust H100 PCIe sample parsed (hex) and
//! verified cold (parse the chain, verify it to the pinned root, verify the transcript),
//! with the chain cached, and the parser alone.
//!
//! Run with `cargo bench -p veil-attestation --bench nvidia`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use time::macros::datetime;
use veil_attestation::checks::Checks;
use veil_attestation::nvidia::{self, GpuChain, GpuPolicy, GpuReport, References};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata");

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{rel}")).unwrap()
}

fn bench(c: &mut Criterion) {
    let report = read("nvidia/nvtrust-h100-pcie-sample/attestation_report.hex");
    let certs = read("nvidia/nvtrust-h100-pcie-sample/cert_chain.pem");
    let nonce: [u8; 32] =
        hex::decode("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
            .unwrap()
            .try_into()
            .unwrap();
    let policy = GpuPolicy {
        allow_missing_ocsp: true,
        ..GpuPolicy::default()
    };
    let refs = References {
        expected_nonce: Some(&nonce),
        ..References::default()
    };
    let at = datetime!(2026-11-23 0:00 UTC);
    let binary = GpuReport::from_bytes_or_hex(&report)
        .unwrap()
        .as_bytes()
        .to_vec();

    let mut group = c.benchmark_group("nvidia_verify");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("h100-pcie/cold (hex + PEM chain)", |b| {
        b.iter(|| {
            let mut checks = Checks::new();
            nvidia::verify(
                black_box(&report),
                black_box(&certs),
                &refs,
                &policy,
                at,
                &mut checks,
            )
            .unwrap()
        });
    });
    let mut checks = Checks::new();
    let chain = GpuChain::from_pem_or_der(&certs, &mut checks).unwrap();
    group.bench_function("h100-pcie/cached chain (binary)", |b| {
        b.iter(|| {
            let mut checks = Checks::new();
            let parsed = GpuReport::from_bytes(black_box(&binary)).unwrap();
            nvidia::verify_parsed(&parsed, &chain, &refs, &policy, at, &mut checks).unwrap()
        });
    });
    group.bench_function("h100-pcie/parse only (binary)", |b| {
        b.iter(|| GpuReport::from_bytes(black_box(&binary)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
