//! `veil-verify measure`: the built binary reproduces a sev-snp-measure case and a
//! TDX reference case from `shared/testdata/measure/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/measure")
}

fn cases(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(testdata().join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veil-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn snp_case_last_line_is_the_launch_digest() {
    let doc = cases("snp-launch-digest-cases.json");
    let case = doc["sev_snp_measure_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "test_snp_with_multiple_vcpus_default")
        .unwrap();
    let empty = std::env::temp_dir().join(format!("veil-measure-cli-empty-{}", std::process::id()));
    std::fs::write(&empty, b"").unwrap();
    let ovmf = testdata().join(case["ovmf"].as_str().unwrap());
    let vcpus = case["vcpus"].to_string();
    let (code, stdout, stderr) = run(&[
        "measure",
        "snp",
        "--ovmf",
        ovmf.to_str().unwrap(),
        "--kernel",
        empty.to_str().unwrap(),
        "--initrd",
        empty.to_str().unwrap(),
        "--append",
        case["append"].as_str().unwrap(),
        "--vcpus",
        &vcpus,
        "--vcpu-type",
        case["vcpu_type"].as_str().unwrap(),
        "--guest-features",
        case["guest_features"].as_str().unwrap(),
        "--vmm",
        "qemu",
    ]);
    let _ = std::fs::remove_file(&empty);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(
        stdout.lines().last().unwrap(),
        case["expected_launch_digest"].as_str().unwrap(),
        "{}: last line of {stdout}",
        case["name"]
    );
}

#[test]
fn snp_error_case_exits_2_with_the_message() {
    let doc = cases("snp-launch-digest-cases.json");
    let case = &doc["sev_snp_measure_error_cases"][0];
    let ovmf = testdata().join(case["ovmf"].as_str().unwrap());
    let (code, _, stderr) = run(&[
        "measure",
        "snp",
        "--ovmf",
        ovmf.to_str().unwrap(),
        "--kernel",
        "/dev/null",
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC-v4",
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(case["expected_error"].as_str().unwrap()),
        "{stderr}"
    );
    let (code, _, _) = run(&[
        "measure",
        "snp",
        "--ovmf",
        "/nonexistent/ovmf.fd",
        "--vcpus",
        "1",
    ]);
    assert_eq!(code, 2);
}

#[test]
fn tdx_reference_case() {
    let doc = cases("tdx-measurement-cases.json");
    let case = &doc["reference_tool_generated_cases"][0];
    let inputs = &case["inputs"];
    let path = |k: &str| {
        testdata()
            .join(inputs[k]["path"].as_str().unwrap())
            .to_str()
            .unwrap()
            .to_owned()
    };
    let pm = case["per_memory"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["memory_hex"] == "0x80000000" && p["page_add_order"] == "two-pass")
        .unwrap();
    let (code, stdout, stderr) = run(&[
        "measure",
        "tdx",
        "--ovmf",
        &path("firmware"),
        "--kernel",
        &path("kernel"),
        "--initrd",
        &path("initrd"),
        "--append",
        inputs["metadata_cmdline"].as_str().unwrap(),
        "--memory",
        "2G",
        "--qemu-version",
        pm["qemu_version"].as_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stderr: {stderr}");
    for key in ["mrtd", "rtmr1", "rtmr2"] {
        let want = format!("{key}: {}", pm[key].as_str().unwrap());
        assert!(
            stdout.lines().any(|l| l == want),
            "missing {want:?} in {stdout}"
        );
    }
}
