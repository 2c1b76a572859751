#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The TD event log (CCEL) in evidence: the real dstack quote's events, encoded as a
//! binary CCEL (`eventlog::build::from_dstack_report`), replay to that quote's RTMRs; a
//! log that does not fails naming the RTMR; a policy's pinned events and its
//! `require_event_log` are enforced; and a bundle carrying no log is the same JSON as
//! before the field existed.

mod common;

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use veil_attestation::bundle::{self, Bundle, BundleError, Evidence, TdxEvidence};
use veil_attestation::bytes::{Base64Bytes, Measurement, Sha256Digest};
use veil_attestation::channel::ServerKeys;
use veil_attestation::checks::{Checks, Outcome};
use veil_attestation::claims::{ModelManifest, Platform};
use veil_attestation::receipt::ReceiptSigner;
use veil_attestation::tdx::eventlog::{self, build};
use veil_attestation::tdx::{self, PinnedEvent, Quote, RtmrIndex, TdxError, TdxPolicy};
use veil_attestation::verify::{Policy, VerifyError, verify_bundle_with_checks};

const SAMPLE: &str = "tdx/dstack-v4-eventlog";

fn quote() -> Vec<u8> {
    std::fs::read(common::testdata(SAMPLE).join("quote.bin")).unwrap()
}

/// The sample's events as a binary CCEL.
fn ccel() -> Vec<u8> {
    let report = std::fs::read(common::testdata(SAMPLE).join("quote-report.json")).unwrap();
    build::from_dstack_report(&report).unwrap()
}

fn check(policy: &TdxPolicy, log: Option<&[u8]>) -> (Result<usize, TdxError>, Checks) {
    let quote = Quote::parse(&quote()).unwrap();
    let mut checks = Checks::new();
    let result = policy
        .check_event_log(&quote.report, log, &mut checks)
        .map(|records| records.map_or(0, |r| r.len()));
    (result, checks)
}

fn outcome(checks: &Checks, name: &str) -> Option<Outcome> {
    checks
        .as_slice()
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.outcome)
}

fn last_failure(checks: &Checks) -> (String, String) {
    let last = checks.as_slice().last().expect("a check");
    assert_eq!(last.outcome, Outcome::Fail, "{checks:?}");
    (last.name.clone(), last.detail.clone())
}

/// The sample's record `index` (0-based, after the `StartupLocality` record) and its
/// offset in the log.
fn record(log: &[u8], index: usize) -> eventlog::CcelRecord {
    eventlog::parse_ccel_records(log).unwrap()[index + 1].clone()
}

#[test]
fn the_matching_log_replays_to_every_quoted_rtmr() {
    let log = ccel();
    let (result, checks) = check(&TdxPolicy::default(), Some(&log));
    // 28 events and the StartupLocality record.
    assert_eq!(result.unwrap(), 29);
    for name in [
        "event-log.parse",
        "event-log.rtmr0",
        "event-log.rtmr1",
        "event-log.rtmr2",
        "event-log.rtmr3",
        "policy.event-log",
        "policy.events",
    ] {
        assert_eq!(
            outcome(&checks, name),
            Some(Outcome::Pass),
            "{name}: {checks:?}"
        );
    }
    let rtmr1 = checks
        .as_slice()
        .iter()
        .find(|c| c.name == "event-log.rtmr1")
        .unwrap();
    assert!(
        rtmr1.detail.starts_with("5 event(s) replay to the quoted "),
        "{rtmr1:?}"
    );
    // Without its padding (as the enclave carries it), the same.
    let end = eventlog::log_end(&log).unwrap();
    let (result, _) = check(&TdxPolicy::default(), Some(&log[..end]));
    assert_eq!(result.unwrap(), 29);
}

#[test]
fn a_flipped_digest_byte_fails_naming_its_rtmr() {
    let log = ccel();
    // Each sample RTMR gets its own record flipped: the first event of each IMR.
    for (rtmr, index) in [(0usize, 0usize), (1, 11), (2, 16), (3, 20)] {
        let rec = record(&log, index);
        assert_eq!(rec.rtmr(), Some(rtmr), "record {index}");
        let mut bad = log.clone();
        // MR index, event type, digest count, algorithm id, then the digest.
        bad[rec.offset + 14 + 47] ^= 0x01;
        let (result, checks) = check(&TdxPolicy::default(), Some(&bad));
        let err = result.unwrap_err();
        assert!(
            matches!(err, TdxError::EventLogReplay { rtmr: r, ref others, .. } if r == rtmr && others.is_empty()),
            "{err}"
        );
        let (name, detail) = last_failure(&checks);
        assert_eq!(name, format!("event-log.rtmr{rtmr}"));
        assert!(
            detail.contains(&format!("replayed RTMR{rtmr} ")),
            "{detail}"
        );
        // The RTMRs before it passed; nothing after it was judged.
        for before in 0..rtmr {
            assert_eq!(
                outcome(&checks, &format!("event-log.rtmr{before}")),
                Some(Outcome::Pass)
            );
        }
        assert_eq!(outcome(&checks, "policy.events"), None);
    }
    // A dropped event, too; and a log that does not parse fails on its parse.
    let rec = record(&log, 27);
    let next = log.len() - 1024;
    let mut dropped = log[..rec.offset].to_vec();
    dropped.extend(&log[next..]);
    let (result, _) = check(&TdxPolicy::default(), Some(&dropped));
    assert!(
        matches!(result, Err(TdxError::EventLogReplay { rtmr: 3, .. })),
        "{result:?}"
    );
    let (result, checks) = check(&TdxPolicy::default(), Some(&log[..rec.offset + 3]));
    assert!(matches!(result, Err(TdxError::EventLog(_))), "{result:?}");
    assert_eq!(last_failure(&checks).0, "event-log.parse");
}

fn pin(rtmr: u8, digest: [u8; 48], event_type: Option<u32>) -> PinnedEvent {
    PinnedEvent {
        rtmr: RtmrIndex::try_from(rtmr).unwrap(),
        digest: Measurement(digest),
        event_type,
    }
}

#[test]
fn pinned_events_must_be_in_the_log() {
    let log = ccel();
    // The sample's RTMR1 EV_EFI_BOOT_SERVICES_APPLICATION (the boot loader).
    let loader = record(&log, 11);
    assert_eq!(loader.event_type, 0x8000_0003);
    let digest = loader.sha384.unwrap();
    let present = TdxPolicy {
        events: vec![pin(1, digest, Some(0x8000_0003)), pin(1, digest, None)],
        ..TdxPolicy::default()
    };
    let (result, checks) = check(&present, Some(&log));
    assert_eq!(result.unwrap(), 29);
    assert_eq!(outcome(&checks, "policy.events"), Some(Outcome::Pass));

    // The same digest on another RTMR, with another type, or another digest: absent.
    let mut other = digest;
    other[0] ^= 0xFF;
    for (missing, named) in [
        (pin(2, digest, None), "RTMR2"),
        (pin(1, digest, Some(0x8000_0001)), "of type 0x80000001"),
        (pin(1, other, None), &hex::encode(other)[..]),
    ] {
        let policy = TdxPolicy {
            events: vec![pin(1, digest, None), missing.clone()],
            ..TdxPolicy::default()
        };
        let (result, checks) = check(&policy, Some(&log));
        let err = result.unwrap_err();
        assert_eq!(
            err,
            TdxError::EventMissing {
                rtmr: missing.rtmr.get(),
                digest: missing.digest.to_string(),
                event_type: missing.event_type,
            }
        );
        let (name, detail) = last_failure(&checks);
        assert_eq!(name, "policy.events");
        assert!(detail.contains(named), "{detail}");
        // The log itself replayed fine.
        assert_eq!(outcome(&checks, "event-log.rtmr3"), Some(Outcome::Pass));
    }

    // Pinned events need the log.
    let (result, checks) = check(&present, None);
    assert_eq!(
        result.unwrap_err(),
        TdxError::EventLogRequired { pinned: 2 }
    );
    assert_eq!(last_failure(&checks).0, "policy.event-log");
}

#[test]
fn require_event_log_refuses_evidence_without_one() {
    let required = TdxPolicy {
        require_event_log: true,
        ..TdxPolicy::default()
    };
    let (result, checks) = check(&required, None);
    let err = result.unwrap_err();
    assert_eq!(err, TdxError::EventLogRequired { pinned: 0 });
    assert!(
        err.to_string().contains("requires the TD event log"),
        "{err}"
    );
    assert_eq!(last_failure(&checks).0, "policy.event-log");
    // With the log it passes; without the requirement, no log is no check at all.
    let (result, checks) = check(&required, Some(&ccel()));
    assert_eq!(result.unwrap(), 29);
    assert_eq!(outcome(&checks, "policy.event-log"), Some(Outcome::Pass));
    let (result, checks) = check(&TdxPolicy::default(), None);
    assert_eq!(result.unwrap(), 0);
    assert!(checks.as_slice().is_empty(), "{checks:?}");
}

#[test]
fn the_policy_reads_pinned_events_from_toml() {
    let digest = "ab".repeat(48);
    let text = format!(
        "[tdx]\nrequire_event_log = true\n\n[[tdx.events]]\nrtmr = 1\ndigest = \"{digest}\"\nevent_type = 0x80000003\n\n[[tdx.events]]\nrtmr = 2\ndigest = \"{}\"\n",
        digest.to_uppercase()
    );
    let policy = Policy::from_toml(&text, "t").unwrap();
    assert!(policy.tdx.require_event_log);
    assert_eq!(
        policy.tdx.events,
        vec![
            pin(1, [0xab; 48], Some(0x8000_0003)),
            pin(2, [0xab; 48], None)
        ]
    );
    // It writes back to the same policy.
    let written = toml::to_string_pretty(&policy).unwrap();
    assert_eq!(Policy::from_toml(&written, "w").unwrap(), policy);
    // An RTMR out of range, a short digest or an unknown key names its line.
    for (bad, line) in [
        (
            &format!("[[tdx.events]]\nrtmr = 4\ndigest = \"{digest}\"\n")[..],
            2,
        ),
        (
            &format!(
                "[[tdx.events]]\nrtmr = 0\ndigest = \"{}\"\n",
                "00".repeat(32)
            )[..],
            3,
        ),
        (
            &format!("[[tdx.events]]\nrtmr = 0\ndigest = \"{digest}\"\ntype = 4\n")[..],
            4,
        ),
    ] {
        match Policy::from_toml(bad, "t") {
            Err(veil_attestation::verify::PolicyError::Invalid {
                line: l, message, ..
            }) => {
                assert_eq!(l, Some(line), "{bad}: {message}");
                if line == 2 {
                    assert!(message.contains("RTMR index 4 is not 0..=3"), "{message}");
                }
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// A TDX bundle around the real quote, its FMSPC's collateral, and `ccel`.
fn tdx_bundle(ccel: Option<Vec<u8>>) -> Bundle {
    let collateral: BTreeMap<String, Base64Bytes> =
        tdx::collateral::read_dir_files(&common::testdata("tdx/dcap-qvl-v5-outdated/collateral"))
            .unwrap()
            .into_iter()
            .map(|(name, bytes)| (name, Base64Bytes(bytes)))
            .collect();
    let keys = ServerKeys::generate().unwrap();
    let receipts = ReceiptSigner::generate().unwrap();
    let mut manifest = ModelManifest::default();
    manifest
        .files
        .insert("chat/model.gguf".into(), Sha256Digest::of(b"weights"));
    Bundle::assemble(
        keys.configs(),
        receipts.public_key(),
        manifest,
        Platform::Tdx,
        "0.1.0",
        |_| Ok::<_, std::convert::Infallible>(vec![]),
        |_| {
            Ok(Evidence::Tdx(TdxEvidence {
                quote: Base64Bytes(quote()),
                collateral: collateral.clone(),
                ccel: ccel.clone().map(Base64Bytes),
            }))
        },
        at(),
    )
    .unwrap()
}

fn at() -> OffsetDateTime {
    OffsetDateTime::parse("2026-03-01T00:00:00Z", &Rfc3339).unwrap()
}

#[test]
fn a_bundle_without_the_log_is_the_json_it_always_was() {
    let b = tdx_bundle(None);
    let json = b.to_json().unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&String> = v["cpu"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["collateral", "quote", "type"], "no ccel key");
    assert!(!json.contains("ccel"));
    // It parses to the same bundle and writes the same bytes.
    let parsed = Bundle::parse(json.as_bytes()).unwrap();
    assert_eq!(parsed, b);
    assert_eq!(parsed.to_json().unwrap(), json);
    // An explicit null is absent too; unknown keys are still refused.
    let mut with_null = v.clone();
    with_null["cpu"]["ccel"] = serde_json::Value::Null;
    assert_eq!(Bundle::parse(with_null.to_string().as_bytes()).unwrap(), b);
    let mut unknown = v.clone();
    unknown["cpu"]["event_log"] = serde_json::json!("");
    assert!(Bundle::parse(unknown.to_string().as_bytes()).is_err());

    // With the log: base64 in the JSON, and the same bytes back.
    let log = ccel();
    let b = tdx_bundle(Some(log.clone()));
    let json = b.to_json().unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    use base64::Engine as _;
    assert_eq!(
        v["cpu"]["ccel"].as_str().unwrap(),
        base64::engine::general_purpose::STANDARD.encode(&log)
    );
    let parsed = Bundle::parse(json.as_bytes()).unwrap();
    assert_eq!(parsed, b);
    let Evidence::Tdx(e) = &parsed.cpu else {
        panic!("not TDX")
    };
    assert_eq!(e.ccel.as_ref().unwrap().0, log);
}

#[test]
fn an_oversize_log_is_refused_at_parse_and_at_verification() {
    let big = vec![0xFF; bundle::MAX_TDX_CCEL + 1];
    let b = tdx_bundle(Some(big));
    let json = b.to_json().unwrap();
    assert!(
        json.len() < bundle::MAX_BUNDLE,
        "the bundle limit is not what refuses it"
    );
    assert!(matches!(
        Bundle::parse(json.as_bytes()),
        Err(BundleError::TdxEventLogTooLarge(n)) if n == bundle::MAX_TDX_CCEL + 1
    ));
    let mut checks = Checks::new();
    let err = verify_bundle_with_checks(&b, &Policy::default(), at(), &mut checks).unwrap_err();
    assert!(
        matches!(err, VerifyError::Tdx(TdxError::EventLogTooLarge { size, limit })
            if size == bundle::MAX_TDX_CCEL + 1 && limit == bundle::MAX_TDX_CCEL),
        "{err}"
    );
    assert_eq!(checks.first_failure().unwrap().name, "event-log.parse");
    // At the limit it parses.
    let b = tdx_bundle(Some(vec![0xFF; bundle::MAX_TDX_CCEL]));
    Bundle::parse(b.to_json().unwrap().as_bytes()).unwrap();
}

/// In a bundle, the real quote verifies up to its REPORTDATA (it binds someone else's
/// keys): the event log is judged only after the quote, so a verifier never replays a
/// log against unverified registers.
#[test]
fn in_a_bundle_the_log_is_judged_after_the_quote() {
    let b = tdx_bundle(Some(ccel()));
    let mut checks = Checks::new();
    let err = verify_bundle_with_checks(&b, &Policy::default(), at(), &mut checks).unwrap_err();
    assert!(matches!(err, VerifyError::Tdx(_)), "{err}");
    assert_eq!(
        checks.first_failure().unwrap().name,
        "policy.report-data",
        "{checks:?}"
    );
    assert_eq!(outcome(&checks, "quote.signature"), Some(Outcome::Pass));
    assert_eq!(outcome(&checks, "event-log.parse"), None);
}
