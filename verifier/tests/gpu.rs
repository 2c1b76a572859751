#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `veil-verify gpu` on the real H100 sample: exit 0 when valid, 1 when not, 2 on a
//! usage error; the JSON output names the checks.

use std::process::Command;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/nvidia/nvtrust-h100-pcie-sample"
);
const NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

fn veil_verify(extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veil-verify"))
        .arg("gpu")
        .arg(format!("{SAMPLE}/attestation_report.hex"))
        .arg("--certs")
        .arg(format!("{SAMPLE}/cert_chain.pem"))
        .args(["--at", "2026-11-23T00:00:00Z"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn valid_with_the_nonce_when_missing_ocsp_is_allowed() {
    let (code, stdout) =
        veil_verify(&["--nonce", NONCE, "--insecure-allow-missing-ocsp", "--json"]);
    assert_eq!(code, 0, "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["facts"]["driver_version"], "550.90.07");
    assert_eq!(doc["facts"]["relayable"], true);
    let revocation = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "revocation")
        .unwrap();
    assert_eq!(revocation["outcome"], "warn");
}

#[test]
fn invalid_without_ocsp_or_with_a_wrong_nonce_or_rim() {
    let (code, stdout) = veil_verify(&["--nonce", NONCE]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  revocation"), "{stdout}");
    let zero = "00".repeat(32);
    let (code, stdout) = veil_verify(&["--nonce", &zero, "--insecure-allow-missing-ocsp"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  report.nonce"), "{stdout}");
    let rim = format!("{SAMPLE}/rim_driver_test_no_gpu.swidtag");
    let (code, stdout) = veil_verify(&["--rim", &rim, "--insecure-allow-missing-ocsp"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  rim.driver.version"), "{stdout}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _) = veil_verify(&["--nonce", "abc"]);
    assert_eq!(code, 2);
    let (code, _) = veil_verify(&["--rim", "/nonexistent.xml"]);
    assert_eq!(code, 2);
}
