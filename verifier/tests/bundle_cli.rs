//! `veil-verify bundle` as an auditor runs it: the built binary on bundles of the
//! simulated TEE (made with the library, as an enclave makes them), from a file and over
//! a real socket, under policies that allow sim or not; every altered claim, key,
//! evidence byte or model digest fails on the check that covers it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

mod common;
use common::Dir;

use serde_json::Value;
use time::OffsetDateTime;
use veil_attestation::bundle::{Bundle, Evidence};
use veil_attestation::bytes::{Measurement, Sha256Digest};
use veil_attestation::channel::ServerKeys;
use veil_attestation::claims::{ModelManifest, Platform};
use veil_attestation::receipt::ReceiptSigner;
use veil_attestation::sim::SimPlatform;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn veil_verify(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_veil-verify"))
        .args(args)
        .env_remove("VEIL_POLICY")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn sim_bundle(manifest_file: &[u8]) -> Value {
    sim_bundle_measuring(manifest_file, Measurement([0; 48]))
}

/// A bundle whose simulated platform reports `measurement` as its launch measurement.
fn sim_bundle_measuring(manifest_file: &[u8], measurement: Measurement) -> Value {
    let keys = ServerKeys::generate().unwrap();
    let receipts = ReceiptSigner::generate().unwrap();
    let sim = SimPlatform::with_measurement(measurement).unwrap();
    let mut manifest = ModelManifest::default();
    manifest
        .files
        .insert("chat/model.gguf".into(), Sha256Digest::of(manifest_file));
    let bundle = Bundle::assemble(
        keys.configs(),
        receipts.public_key(),
        manifest,
        Platform::Sim,
        "0.1.0",
        |_| Ok::<_, std::convert::Infallible>(vec![]),
        |rd| Ok(Evidence::Sim(sim.evidence(rd))),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    serde_json::from_str(&bundle.to_json().unwrap()).unwrap()
}

fn failed_check(run: &Run) -> String {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line in:\n{}", run.stdout));
    line.split_whitespace().nth(1).unwrap().to_owned()
}

fn flip_hex(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[at] = if chars[at] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

#[test]
fn a_sim_bundle_verifies_only_under_a_policy_that_allows_sim() {
    let dir = Dir::new("sim");
    let bundle = sim_bundle(b"weights");
    let file = dir.write("bundle.json", bundle.to_string().as_bytes());
    let allow = dir.write("allow-sim.toml", b"insecure_allow_sim = true\n");

    let refused = veil_verify(&["bundle", &file]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert_eq!(failed_check(&refused), "policy.simulated-tee");
    assert!(refused.stdout.contains("bundle: INVALID (contraindicated)"));
    assert!(refused.stdout.contains("=> INVALID: policy.simulated-tee"));

    let allowed = veil_verify(&["bundle", &file, "--policy", &allow]);
    assert_eq!(allowed.code, 0, "{}{}", allowed.stdout, allowed.stderr);
    for line in [
        "WARN  policy.simulated-tee",
        "pass  sim.signature",
        "pass  claims.report-data",
        "WARN  policy.launch-measurement",
        "WARN  policy.model-manifest",
        "pass  evidence.age",
        "bundle: VALID, with warnings",
    ] {
        assert!(
            allowed.stdout.contains(line),
            "{line} in:\n{}",
            allowed.stdout
        );
    }

    // The EAR-style result: stable keys, the tiers, the digest of what was judged.
    let json = veil_verify(&["bundle", &file, "--policy", &allow, "--json"]);
    assert_eq!(json.code, 0);
    let ear: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(ear["eat_profile"], "tag:github.com,2023:veraison/ear");
    assert_eq!(ear["veil.status"], "warning");
    let cpu = &ear["submods"]["cpu"];
    assert_eq!(cpu["ear.status"], "warning");
    assert_eq!(cpu["ear.trustworthiness-vector"]["hardware"], 32);
    assert_eq!(cpu["ear.trustworthiness-vector"]["instance-identity"], 2);
    assert_eq!(cpu["ear.trustworthiness-vector"]["executables"], 32);
    assert_eq!(cpu["veil.claims"]["platform"], "sim");
    let digest = format!(
        "sha256:{}",
        Sha256Digest::of(&std::fs::read(&file).unwrap())
    );
    assert_eq!(cpu["veil.evidence-digest"], digest);
    let policy_digest = format!(
        "sha256:{}",
        Sha256Digest::of(b"insecure_allow_sim = true\n")
    );
    assert_eq!(ear["veil.policy-digest"], policy_digest);
    assert!(cpu["veil.checks"].as_array().unwrap().len() >= 8);

    let json = veil_verify(&["bundle", &file, "--json"]);
    assert_eq!(json.code, 1);
    let ear: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(ear["veil.status"], "contraindicated");
    assert_eq!(
        ear["submods"]["cpu"]["ear.trustworthiness-vector"]["hardware"],
        96
    );
}

#[test]
fn every_altered_claim_key_evidence_byte_or_model_fails_on_its_check() {
    let dir = Dir::new("mutations");
    let bundle = sim_bundle(b"weights");
    let other = sim_bundle(b"other weights");
    let allow = dir.write("allow-sim.toml", b"insecure_allow_sim = true\n");
    let judge = |name: &str, b: &Value| {
        let file = dir.write(&format!("{name}.json"), b.to_string().as_bytes());
        let run = veil_verify(&["bundle", &file, "--policy", &allow]);
        assert_eq!(run.code, 1, "{name} must fail:\n{}", run.stdout);
        failed_check(&run)
    };

    let mut b = bundle.clone();
    b["claims"]["enclave_version"] = "0.1.1".into();
    assert_eq!(judge("version", &b), "sim.signature");

    let mut b = bundle.clone();
    b["claims"]["receipt_public_key"] = other["claims"]["receipt_public_key"].clone();
    assert_eq!(judge("receipt-key", &b), "sim.signature");

    let mut b = bundle.clone();
    b["claims"]["key_configs"] = other["claims"]["key_configs"].clone();
    assert_eq!(judge("hpke-keys", &b), "claims.key-ids");
    b["claims"]["key_ids"] = other["claims"]["key_ids"].clone();
    assert_eq!(judge("hpke-keys-and-ids", &b), "sim.signature");

    let mut b = bundle.clone();
    b["claims"]["model_manifest"] = other["claims"]["model_manifest"].clone();
    assert_eq!(judge("model", &b), "sim.signature");

    let mut b = bundle.clone();
    b["claims"]["platform"] = "snp".into();
    assert_eq!(judge("platform", &b), "claims.platform");

    for field in ["signature", "report_data", "measurement", "public_key"] {
        let mut b = bundle.clone();
        let text = b["cpu"][field].as_str().unwrap().to_owned();
        b["cpu"][field] = flip_hex(&text, 7).into();
        assert_eq!(judge(field, &b), "sim.signature", "cpu.{field}");
    }

    // The production time is bound into the report data (v2): moving it breaks the
    // binding before its age is looked at...
    let mut b = bundle.clone();
    b["produced_at"] = "2020-01-01T00:00:00Z".into();
    assert_eq!(judge("moved", &b), "sim.signature");
    // ...and a genuinely old bundle fails on its age.
    let file = dir.write("aged.json", bundle.to_string().as_bytes());
    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let run = veil_verify(&["bundle", &file, "--policy", &allow, "--at", &later]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(failed_check(&run), "evidence.age");

    let mut b = bundle.clone();
    b["claims"]["surprise"] = true.into();
    assert_eq!(judge("unknown-field", &b), "bundle.parse");

    // A policy pinning another model or another launch measurement.
    let file = dir.write("bundle.json", bundle.to_string().as_bytes());
    let pin_model = dir.write(
        "pin-model.toml",
        format!(
            "insecure_allow_sim = true\nmodel_manifest_digests = [\"{}\"]\n",
            "ab".repeat(32)
        )
        .as_bytes(),
    );
    let run = veil_verify(&["bundle", &file, "--policy", &pin_model]);
    assert_eq!(run.code, 1);
    assert_eq!(failed_check(&run), "policy.model-manifest");
    let pin_measurement = dir.write(
        "pin-measurement.toml",
        format!(
            "insecure_allow_sim = true\nlaunch_measurements = [\"{}\"]\n",
            "cd".repeat(48)
        )
        .as_bytes(),
    );
    let run = veil_verify(&["bundle", &file, "--policy", &pin_measurement]);
    assert_eq!(run.code, 1);
    assert_eq!(failed_check(&run), "policy.launch-measurement");
}

#[test]
fn policy_mistakes_are_usage_errors_naming_the_line() {
    let dir = Dir::new("policy");
    let file = dir.write("bundle.json", sim_bundle(b"w").to_string().as_bytes());
    let typo = dir.write("typo.toml", b"# comment\ninsecure_allow_simm = true\n");
    let run = veil_verify(&["bundle", &file, "--policy", &typo]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
    assert!(run.stderr.contains("insecure_allow_simm"), "{}", run.stderr);
    let short = dir.write("short.toml", b"[tdx]\nrtmr0 = [\"00\"]\n");
    let run = veil_verify(&["bundle", &file, "--policy", &short]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
    let run = veil_verify(&["bundle", "/nonexistent/bundle.json"]);
    assert_eq!(run.code, 2);
}

/// Serves `routes` (path → body; others 404) over HTTP/1.1 on loopback, one
/// connection at a time, for `connections` connections.
fn serve(routes: Vec<(&'static str, String)>, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (status, body) = routes
                .iter()
                .find(|(p, _)| *p == path)
                .map_or(("404 Not Found", String::new()), |(_, b)| {
                    ("200 OK", b.clone())
                });
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    url
}

#[test]
fn bundles_are_fetched_from_an_enclave_or_a_gateway() {
    let dir = Dir::new("fetch");
    let allow = dir.write("allow-sim.toml", b"insecure_allow_sim = true\n");
    let one = sim_bundle(b"a");
    let two = sim_bundle(b"b");

    // An enclave: /v1/attestation is 404, /attestation answers.
    let enclave = serve(vec![("/attestation", one.to_string())], 2);
    let run = veil_verify(&["bundle", &enclave, "--policy", &allow]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("bundle: VALID"));

    // A gateway: every backend judged, one submodule each; one bad backend fails all.
    let mut bad = two.clone();
    bad["claims"]["enclave_version"] = "9".into();
    let list = serde_json::json!({ "backends": [one, bad] }).to_string();
    let gateway = serve(vec![("/v1/attestation", list)], 1);
    let run = veil_verify(&["bundle", &gateway, "--policy", &allow, "--json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let ear: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(ear["submods"]["backend0/cpu"]["ear.status"], "warning");
    assert_eq!(
        ear["submods"]["backend1/cpu"]["ear.status"],
        "contraindicated"
    );
    assert_eq!(ear["veil.status"], "contraindicated");

    // Nothing listening: a usage/I-O error, not a verdict.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let run = veil_verify(&["bundle", &closed]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
}

#[test]
fn a_policy_from_an_image_manifest_pins_its_measurements_and_models() {
    let dir = Dir::new("manifest");
    // The launch digest sev-snp-measure expects for one of its cases, as an image build
    // would record it.
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/testdata/measure/snp-launch-digest-cases.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let digest = cases["sev_snp_measure_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "test_snp_with_multiple_vcpus_default")
        .unwrap()["expected_launch_digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let measurement: Measurement = digest.parse().unwrap();
    let bundle = sim_bundle_measuring(b"weights", measurement);
    let model_digest = bundle["claims"]["model_manifest"].clone();
    let model_digest = serde_json::from_value::<ModelManifest>(model_digest)
        .unwrap()
        .digest();
    let manifest = serde_json::json!({
        "version": 1,
        "image": "veil-test",
        "model_manifest_digest": model_digest.to_string(),
        "snp": [{"firmware": "OVMF.fd", "vcpus": 2, "vcpu_type": "EPYC-v4",
                 "launch_measurement": digest}],
    });
    let manifest_file = dir.write("manifest.json", manifest.to_string().as_bytes());
    let run = veil_verify(&["policy", "from-manifest", &manifest_file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("# veil attestation policy for image \"veil-test\"")
    );
    assert!(run.stdout.contains(&digest));
    let policy = veil_attestation::verify::Policy::from_toml(&run.stdout, "generated").unwrap();
    assert_eq!(policy.launch_measurements, vec![measurement]);
    assert_eq!(policy.model_manifest_digests, vec![model_digest]);
    assert!(!policy.insecure_allow_sim);

    // That policy (allowing sim, for this test) passes the matching bundle with both
    // pins checked, and fails one from another image or with other models.
    let policy_file = dir.write(
        "policy.toml",
        run.stdout
            .replace("insecure_allow_sim = false", "insecure_allow_sim = true")
            .as_bytes(),
    );
    let file = dir.write("bundle.json", bundle.to_string().as_bytes());
    let ok = veil_verify(&["bundle", &file, "--policy", &policy_file]);
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert!(ok.stdout.contains("pass  policy.launch-measurement"));
    assert!(ok.stdout.contains("pass  policy.model-manifest"));
    let other = sim_bundle_measuring(b"weights", Measurement([7; 48]));
    let file = dir.write("other.json", other.to_string().as_bytes());
    let run2 = veil_verify(&["bundle", &file, "--policy", &policy_file]);
    assert_eq!(failed_check(&run2), "policy.launch-measurement");
    let other = sim_bundle_measuring(b"other weights", measurement);
    let file = dir.write("models.json", other.to_string().as_bytes());
    let run2 = veil_verify(&["bundle", &file, "--policy", &policy_file]);
    assert_eq!(failed_check(&run2), "policy.model-manifest");

    // A manifest value of the wrong length, or an unknown field, is refused.
    let mut bad = manifest.clone();
    bad["snp"][0]["launch_measurement"] = "abcd".into();
    let bad_file = dir.write("bad.json", bad.to_string().as_bytes());
    let run = veil_verify(&["policy", "from-manifest", &bad_file]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("snp[0].launch_measurement"),
        "{}",
        run.stderr
    );
    let mut bad = manifest;
    bad["extra"] = 1.into();
    let bad_file = dir.write("bad2.json", bad.to_string().as_bytes());
    assert_eq!(veil_verify(&["policy", "from-manifest", &bad_file]).code, 2);
}
