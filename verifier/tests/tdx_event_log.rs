#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `veil-verify tdx-quote --event-log` and `veil-verify bundle` on the real dstack quote
//! with its events as a binary CCEL: one line per RTMR, exit 0 when the log replays to
//! the quote, 1 when it does not or the policy's pinned events or `require_event_log`
//! are not met, 2 when the file cannot be read.

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::Dir;

use veil_attestation::tdx::eventlog;

const TDX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/tdx");
const AT: &str = "2026-03-01T00:00:00Z";

/// The dstack sample's events as a binary CCEL.
fn ccel() -> Vec<u8> {
    let report = std::fs::read(format!("{TDX}/dstack-v4-eventlog/quote-report.json")).unwrap();
    eventlog::build::from_dstack_report(&report).unwrap()
}

/// `veil-verify tdx-quote` on the dstack quote with its FMSPC's collateral.
fn tdx_quote(extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veil-verify"))
        .arg("tdx-quote")
        .arg(format!("{TDX}/dstack-v4-eventlog/quote.bin"))
        .arg("--collateral")
        .arg(format!("{TDX}/dcap-qvl-v5-outdated/collateral"))
        .args(["--at", AT])
        .args(extra)
        .env_remove("VEIL_POLICY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn rtmr_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.contains(" event-log.rtmr"))
        .collect()
}

#[test]
fn a_matching_log_prints_one_passing_line_per_rtmr() {
    let dir = Dir::new("ccel-ok");
    let log = dir.write("CCEL", &ccel());
    let (code, stdout) = tdx_quote(&["--event-log", &log]);
    assert_eq!(code, 0, "{stdout}");
    let lines = rtmr_lines(&stdout);
    assert_eq!(lines.len(), 4, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("pass  event-log.rtmr{i} ")),
            "{line}"
        );
        assert!(line.contains("event(s) replay to the quoted"), "{line}");
    }
    assert!(
        stdout.contains("event_log                    29 item(s)"),
        "{stdout}"
    );
    assert!(stdout.ends_with("tdx-quote: VALID\n"), "{stdout}");

    // JSON: the records under facts.event_log.
    let (code, stdout) = tdx_quote(&["--event-log", &log, "--json"]);
    assert_eq!(code, 0, "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["valid"], true);
    let events = doc["facts"]["event_log"].as_array().unwrap();
    assert_eq!(events.len(), 29);
    assert_eq!(events[0]["event_type"], "0x00000003", "StartupLocality");
    assert_eq!(events[0]["rtmr"], serde_json::Value::Null);
    assert_eq!(events[12]["rtmr"], 1);
    assert_eq!(events[12]["event_type"], "0x80000003");
    assert_eq!(events[12]["digest"].as_str().unwrap().len(), 96);

    // Without --event-log, no event-log line (and the default policy needs none).
    let (code, stdout) = tdx_quote(&[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(rtmr_lines(&stdout).is_empty(), "{stdout}");
}

#[test]
fn a_log_that_does_not_replay_fails_naming_the_rtmr() {
    let dir = Dir::new("ccel-bad");
    let good = ccel();
    let records = eventlog::parse_ccel_records(&good).unwrap();
    // The first RTMR2 record: flip the last byte of its SHA-384 digest.
    let rec = records.iter().find(|r| r.rtmr() == Some(2)).unwrap();
    let mut bad = good.clone();
    bad[rec.offset + 14 + 47] ^= 1;
    let log = dir.write("CCEL", &bad);
    let (code, stdout) = tdx_quote(&["--event-log", &log]);
    assert_eq!(code, 1, "{stdout}");
    let lines = rtmr_lines(&stdout);
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("pass  event-log.rtmr0"), "{stdout}");
    assert!(lines[1].starts_with("pass  event-log.rtmr1"), "{stdout}");
    assert!(
        lines[2].starts_with("FAIL  event-log.rtmr2 ")
            && lines[2].contains("replayed RTMR2 ")
            && lines[2].contains("is not the quoted"),
        "{stdout}"
    );
    assert!(stdout.ends_with("tdx-quote: INVALID\n"), "{stdout}");
    // The records are still shown.
    let (_, stdout) = tdx_quote(&["--event-log", &log, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["facts"]["event_log"].as_array().unwrap().len(), 29);
    assert!(
        doc["facts"]["error"]
            .as_str()
            .unwrap()
            .contains("replayed RTMR2"),
        "{stdout}"
    );

    // Bytes that are not a CCEL: invalid, on the parse.
    let junk = dir.write("junk", b"not an event log");
    let (code, stdout) = tdx_quote(&["--event-log", &junk]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  event-log.parse"), "{stdout}");
    // A file that cannot be read: a usage error.
    let (code, _) = tdx_quote(&["--event-log", "/nonexistent/CCEL"]);
    assert_eq!(code, 2);
}

#[test]
fn the_policy_pins_events_and_can_require_the_log() {
    let dir = Dir::new("ccel-policy");
    let good = ccel();
    let log = dir.write("CCEL", &good);
    let records = eventlog::parse_ccel_records(&good).unwrap();
    let loader = records
        .iter()
        .find(|r| r.event_type == 0x8000_0003)
        .unwrap();
    let digest = hex::encode(loader.sha384.unwrap());
    let present = dir.write(
        "present.toml",
        format!("[[tdx.events]]\nrtmr = 1\ndigest = \"{digest}\"\nevent_type = 0x80000003\n")
            .as_bytes(),
    );
    let (code, stdout) = tdx_quote(&["--event-log", &log, "--policy", &present]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("pass  policy.events"), "{stdout}");

    // The same digest pinned on RTMR0 is not in the log.
    let absent = dir.write(
        "absent.toml",
        format!("[[tdx.events]]\nrtmr = 0\ndigest = \"{digest}\"\n").as_bytes(),
    );
    let (code, stdout) = tdx_quote(&["--event-log", &log, "--policy", &absent]);
    assert_eq!(code, 1, "{stdout}");
    let fail = stdout.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        fail.starts_with("FAIL  policy.events") && fail.contains("RTMR0") && fail.contains(&digest),
        "{fail}"
    );
    // Pinned events, or require_event_log, with no log: invalid.
    let (code, stdout) = tdx_quote(&["--policy", &present]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  policy.event-log"), "{stdout}");
    let required = dir.write("required.toml", b"[tdx]\nrequire_event_log = true\n");
    let (code, stdout) = tdx_quote(&["--policy", &required]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  policy.event-log"), "{stdout}");
    let (code, stdout) = tdx_quote(&["--policy", &required, "--event-log", &log]);
    assert_eq!(code, 0, "{stdout}");
}

/// `veil-verify bundle` shows a TDX bundle's event log among its claims. (The real quote
/// binds someone else's keys, so the bundle fails on its REPORTDATA, before the log is
/// judged.)
#[test]
fn a_bundle_lists_its_tdx_event_log_in_its_claims() {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    use veil_attestation::bundle::{Bundle, Evidence, TdxEvidence};
    use veil_attestation::bytes::{Base64Bytes, Sha256Digest};
    use veil_attestation::channel::ServerKeys;
    use veil_attestation::claims::{ModelManifest, Platform};
    use veil_attestation::receipt::ReceiptSigner;

    let collateral = veil_attestation::tdx::collateral::read_dir_files(&PathBuf::from(format!(
        "{TDX}/dcap-qvl-v5-outdated/collateral"
    )))
    .unwrap()
    .into_iter()
    .map(|(name, bytes)| (name, Base64Bytes(bytes)))
    .collect();
    let quote = std::fs::read(format!("{TDX}/dstack-v4-eventlog/quote.bin")).unwrap();
    let keys = ServerKeys::generate().unwrap();
    let mut manifest = ModelManifest::default();
    manifest
        .files
        .insert("chat/model.gguf".into(), Sha256Digest::of(b"weights"));
    let bundle = Bundle::assemble(
        keys.configs(),
        ReceiptSigner::generate().unwrap().public_key(),
        manifest,
        Platform::Tdx,
        "0.1.0",
        |_| Ok::<_, std::convert::Infallible>(vec![]),
        |_| {
            Ok(Evidence::Tdx(TdxEvidence {
                quote: Base64Bytes(quote),
                collateral,
                ccel: Some(Base64Bytes(ccel())),
            }))
        },
        OffsetDateTime::parse(AT, &Rfc3339).unwrap(),
    )
    .unwrap();
    let dir = Dir::new("ccel-bundle");
    let file = dir.write("bundle.json", bundle.to_json().unwrap().as_bytes());
    let out = Command::new(env!("CARGO_BIN_EXE_veil-verify"))
        .args(["bundle", &file, "--json", "--at", AT])
        .env_remove("VEIL_POLICY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let cpu = &doc["submods"]["cpu"];
    let events = cpu["veil.claims"]["tdx_event_log"].as_array().unwrap();
    assert_eq!(events.len(), 29);
    assert_eq!(events[12]["rtmr"], 1);
    assert!(events[12].get("data").is_none(), "no event data in claims");
    let failed: Vec<&serde_json::Value> = cpu["veil.checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .collect();
    assert_eq!(failed[0]["name"], "policy.report-data", "{stdout}");
}
