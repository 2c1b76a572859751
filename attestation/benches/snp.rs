//! SEV-SNP verification of one report with its chain: cold (parse the certificates,
//! verify the chain and the report) and with the parsed, verified chain cached; beside
//! the `sev` crate (`crypto_nossl`) doing the same on the same samples.
//!
//! Run with `cargo bench -p veil-attestation --bench snp`; see `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sev::certs::snp::{Certificate as SevCert, Chain as SevChain, Verifiable, ca};
use sev::firmware::guest::AttestationReport as SevReport;
use sev::parser::ByteParser;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use veil_attestation::checks::Checks;
use veil_attestation::snp::{self, SnpChain, SnpPolicy};
use veil_attestation::x509::Certificate;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata");

/// (sample, VCEK file, product roots folder, time)
const SAMPLES: [(&str, &str, &str, &str); 3] = [
    (
        "microsoft-milan-v3",
        "vcek.pem",
        "milan",
        "2026-03-01T00:00:00Z",
    ),
    (
        "microsoft-genoa-v3",
        "vcek.pem",
        "genoa",
        "2026-03-01T00:00:00Z",
    ),
    (
        "microsoft-turin-v5",
        "vcek.pem",
        "turin",
        "2026-03-01T00:00:00Z",
    ),
];

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{rel}")).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("snp_verify");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, vcek_file, roots, when) in SAMPLES {
        let report = read(&format!("snp/{name}/report.bin"));
        let vcek_pem = read(&format!("snp/{name}/{vcek_file}"));
        let vcek_der = Certificate::all_from_pem_or_der(&vcek_pem).unwrap()[0]
            .der()
            .to_vec();
        let at = OffsetDateTime::parse(when, &Rfc3339).unwrap();
        let policy = SnpPolicy::default();
        let rd: [u8; 64] = report[0x50..0x90].try_into().unwrap();

        // Sanity: both verify.
        let mut checks = Checks::new();
        snp::verify(&report, &[&vcek_der], &policy, Some(&rd), at, &mut checks).unwrap();

        group.bench_function(format!("veil_cold/{name}"), |b| {
            b.iter(|| {
                let mut checks = Checks::new();
                snp::verify(
                    black_box(&report),
                    &[black_box(&vcek_der)],
                    &policy,
                    Some(&rd),
                    at,
                    &mut checks,
                )
                .unwrap()
            });
        });
        let chain = SnpChain::from_der(&[&vcek_der], None, &[], &mut Checks::new()).unwrap();
        group.bench_function(format!("veil_cached_chain/{name}"), |b| {
            b.iter(|| {
                let mut checks = Checks::new();
                snp::verify_with_chain(
                    black_box(&report),
                    &chain,
                    &policy,
                    Some(&rd),
                    at,
                    &mut checks,
                )
                .unwrap()
            });
        });

        // The peer: sev 8 with crypto_nossl. Cold: parse ARK, ASK (PEM), VCEK (DER),
        // the report, verify ARK→ASK→VCEK and the report signature. Its Chain does not
        // check validity times, TCB, chip id or a policy.
        let ark_pem = read(&format!("roots/amd/{roots}/ark.pem"));
        let ask_pem = read(&format!("roots/amd/{roots}/ask.pem"));
        let sev_chain = SevChain {
            ca: ca::Chain::from_pem(&ark_pem, &ask_pem).unwrap(),
            vek: SevCert::from_der(&vcek_der).unwrap(),
        };
        let sev_report = SevReport::from_bytes(&report).unwrap();
        (&sev_chain, &sev_report).verify().unwrap();
        group.bench_function(format!("sev_cold/{name}"), |b| {
            b.iter(|| {
                let chain = SevChain {
                    ca: ca::Chain::from_pem(black_box(&ark_pem), black_box(&ask_pem)).unwrap(),
                    vek: SevCert::from_der(black_box(&vcek_der)).unwrap(),
                };
                let report = SevReport::from_bytes(black_box(&report)).unwrap();
                (&chain, &report).verify().unwrap();
            });
        });
        let vek = sev_chain.vek.clone();
        group.bench_function(format!("sev_report_only/{name}"), |b| {
            b.iter(|| {
                let report = SevReport::from_bytes(black_box(&report)).unwrap();
                (&vek, &report).verify().unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
