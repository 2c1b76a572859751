#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! TDX quote verification against the real samples in `../shared/testdata/tdx/`
//! (see PROVENANCE.md there for where each comes from and the times used here).

use std::collections::BTreeMap;
use std::path::PathBuf;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use veil_attestation::bytes::Measurement;
use veil_attestation::checks::{Checks, Outcome};
use veil_attestation::tdx::tcb::{self, PckExtensions};
use veil_attestation::tdx::{self, Collateral, Quote, TcbStatus, TdxError, TdxPolicy};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/tdx"
    ))
    .join(rel)
}

fn quote(sample: &str) -> Vec<u8> {
    std::fs::read(testdata(sample).join("quote.bin")).unwrap()
}

fn files(dir: &str) -> BTreeMap<String, Vec<u8>> {
    tdx::collateral::read_dir_files(&testdata(dir)).unwrap()
}

fn collateral(dir: &str) -> Collateral {
    Collateral::from_files(&files(dir)).unwrap()
}

fn at(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339).unwrap()
}

fn hex48(s: &str) -> [u8; 48] {
    hex::decode(s).unwrap().try_into().unwrap()
}

const V4_AT: &str = "2025-07-19T10:00:34Z";
const V5_AT: &str = "2026-03-20T10:41:14Z";
const SPR_AT: &str = "2023-07-01T01:00:00Z";
const FMSPC90_AT: &str = "2026-03-01T00:00:00Z";

fn run(
    sample: &str,
    dir: &str,
    when: &str,
    policy: &TdxPolicy,
) -> (Result<tdx::TdxVerified, TdxError>, Checks) {
    let mut checks = Checks::new();
    let result = tdx::verify(
        &quote(sample),
        &collateral(dir),
        policy,
        None,
        at(when),
        &mut checks,
    );
    (result, checks)
}

fn failed_check(checks: &Checks) -> String {
    let failure = checks.first_failure().expect("a failed check");
    assert_eq!(
        checks.as_slice().last().map(|c| c.outcome),
        Some(Outcome::Fail),
        "the failure is the last check"
    );
    failure.name.clone()
}

#[test]
fn dcap_qvl_v4_is_up_to_date() {
    let (result, checks) = run(
        "dcap-qvl-v4-uptodate",
        "dcap-qvl-v4-uptodate/collateral",
        V4_AT,
        &TdxPolicy::default(),
    );
    let v = result.unwrap_or_else(|e| panic!("{e}: {checks:#?}"));
    assert_eq!(v.version, 4);
    assert_eq!(v.report.body_type, 2);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert_eq!(v.platform_status, TcbStatus::UpToDate);
    assert_eq!(v.module_status, Some(TcbStatus::UpToDate));
    assert_eq!(v.qe_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    assert_eq!(v.tcb_date, "2024-03-13T00:00:00Z");
    assert_eq!(hex::encode(v.fmspc), "b0c06f000000");
    assert_eq!(
        v.report.mr_td,
        hex48(
            "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
        )
    );
    assert_eq!(
        v.report.rtmr[0],
        hex48(
            "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0"
        )
    );
    assert_eq!(
        v.report.rtmr[1],
        hex48(
            "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378"
        )
    );
    assert_eq!(
        v.report.rtmr[2],
        hex48(
            "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132"
        )
    );
    assert_eq!(v.report.rtmr[3], [0u8; 48]);
    assert_eq!(
        hex::encode(v.report.report_data),
        "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
    );
    assert_eq!(
        hex::encode(v.report.tee_tcb_svn),
        "06010300000000000000000000000000"
    );
    assert!(checks.all_passed());
    let names: Vec<&str> = checks.as_slice().iter().map(|c| c.name.as_str()).collect();
    for expected in [
        "quote.version",
        "pck.chain",
        "crl.root-ca",
        "pck.crl",
        "qe-report.signature",
        "qe-report.binding",
        "quote.signature",
        "tcb-info.signature",
        "tcb-info.validity",
        "qe-identity.signature",
        "qe-identity",
        "tcb.status",
        "policy.debug",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn dcap_qvl_v4_report_data_binding() {
    let q = quote("dcap-qvl-v4-uptodate");
    let c = collateral("dcap-qvl-v4-uptodate/collateral");
    let parsed = Quote::parse(&q).unwrap();
    let good = parsed.report.report_data;
    let mut checks = Checks::new();
    tdx::verify(
        &q,
        &c,
        &TdxPolicy::default(),
        Some(&good),
        at(V4_AT),
        &mut checks,
    )
    .unwrap();
    assert!(
        checks
            .as_slice()
            .iter()
            .any(|c| c.name == "policy.report-data" && c.outcome == Outcome::Pass)
    );
    let mut bad = good;
    bad[63] ^= 1;
    let mut checks = Checks::new();
    let err = tdx::verify(
        &q,
        &c,
        &TdxPolicy::default(),
        Some(&bad),
        at(V4_AT),
        &mut checks,
    )
    .unwrap_err();
    assert!(matches!(err, TdxError::Policy(_)));
    assert_eq!(failed_check(&checks), "policy.report-data");
}

#[test]
fn dcap_qvl_v5_has_no_matching_tcb_level() {
    let (result, checks) = run(
        "dcap-qvl-v5-outdated",
        "dcap-qvl-v5-outdated/collateral",
        V5_AT,
        &TdxPolicy::default(),
    );
    assert_eq!(result.unwrap_err(), TdxError::NoMatchingTcbLevel);
    assert_eq!(failed_check(&checks), "tcb.platform");
    // Every signature and the QE identity passed before the TCB level selection.
    for name in [
        "quote.signature",
        "qe-report.signature",
        "pck.crl",
        "tcb-info.signature",
        "qe-identity",
    ] {
        assert!(
            checks
                .as_slice()
                .iter()
                .any(|c| c.name == name && c.outcome == Outcome::Pass),
            "{name}"
        );
    }
    let parsed = Quote::parse(&quote("dcap-qvl-v5-outdated")).unwrap();
    assert_eq!(parsed.header.version, 5);
    assert_eq!(parsed.report.body_type, 3);
    assert_eq!(parsed.trailing_zeros, 0);
    assert_eq!(
        parsed.report.mr_td,
        hex48(
            "273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd"
        )
    );
    assert_eq!(parsed.report.rtmr, [[0u8; 48]; 4]);
    assert_eq!(
        hex::encode(parsed.report.report_data),
        "d2142b643598eb5fae2bc8529dd79a558b29f868ccbb6531cb28dab9dce477280000000000000000000000000000000000000000000000000000000000000000"
    );
    assert_eq!(parsed.report.mr_service_td, Some([0u8; 48]));
}

#[test]
fn go_tdx_guest_spr_has_no_matching_tcb_level() {
    let (result, checks) = run(
        "go-tdx-guest-v4-spr",
        "go-tdx-guest-v4-spr/collateral",
        SPR_AT,
        &TdxPolicy::default(),
    );
    assert_eq!(result.unwrap_err(), TdxError::NoMatchingTcbLevel);
    assert_eq!(failed_check(&checks), "tcb.platform");
    // PROVENANCE calls its 39 trailing bytes zero padding; they are the text
    // "\nextra bytes(only for testing purpose)\n" that go-tdx-guest appends.
    assert!(
        checks
            .as_slice()
            .iter()
            .any(|c| c.name == "quote.trailing-data" && c.outcome == Outcome::Warn)
    );
    let parsed = Quote::parse(&quote("go-tdx-guest-v4-spr")).unwrap();
    assert_eq!(parsed.trailing_zeros, 39);
    assert!(parsed.trailing_nonzero);
    assert_eq!(
        parsed.report.mr_td,
        hex48(
            "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
        )
    );
    assert_eq!(
        parsed.report.rtmr[0],
        hex48(
            "2927da70461cd63266f43230cc1849c03ef25ebe490062a801d8fcc80af42976823adf08f833c1e50b51779c6593f32a"
        )
    );
    assert_eq!(
        hex::encode(parsed.report.report_data),
        "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"
    );
    // At 2053 the PCK leaf has expired.
    let (result, checks) = run(
        "go-tdx-guest-v4-spr",
        "go-tdx-guest-v4-spr/collateral",
        "2053-07-01T00:00:00Z",
        &TdxPolicy::default(),
    );
    assert!(result.is_err());
    assert_eq!(failed_check(&checks), "pck.chain");
}

#[test]
fn go_tdx_guest_v5_is_up_to_date_with_fmspc_collateral() {
    let (result, checks) = run(
        "go-tdx-guest-v5",
        "dcap-qvl-v5-outdated/collateral",
        FMSPC90_AT,
        &TdxPolicy::default(),
    );
    let v = result.unwrap_or_else(|e| panic!("{e}: {checks:#?}"));
    assert_eq!(v.version, 5);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert_eq!(v.tcb_date, "2024-11-13T00:00:00Z");
    assert!(v.advisory_ids.is_empty());
    assert_eq!(
        hex::encode(v.report.report_data),
        "945eaacf5abc1f719d8666a942fda03d1edcb4490277396093dc5a5289ab9f1e094aed63060cd4a4933a4dd537ed1255c9c79ecb3ed82cd1b486233e31c25c3a"
    );
    assert_eq!(
        hex::encode(v.report.tee_tcb_svn),
        "0b010400000000000000000000000000"
    );
}

/// go-tdx-guest's own v5 TCB Info (a PCS response, signed with the TCB Signing key whose
/// certificate was re-issued in 2025 with the same key) with the rest of the FMSPC
/// 90C06F000000 collateral: the signature verifies over the raw `tcbInfo` bytes.
#[test]
fn go_tdx_guest_v5_own_tcb_info_response() {
    let mut f = files("dcap-qvl-v5-outdated/collateral");
    f.remove("tcb_info.json");
    f.remove("tcb_info.sig.hex");
    let resp = std::fs::read(testdata(
        "go-tdx-guest-v5/collateral/tcb_info_response.json",
    ))
    .unwrap();
    f.insert("tcb_info_response.json".to_owned(), resp);
    let c = Collateral::from_files(&f).unwrap();
    let mut checks = Checks::new();
    let v = tdx::verify(
        &quote("go-tdx-guest-v5"),
        &c,
        &TdxPolicy::default(),
        None,
        at(FMSPC90_AT),
        &mut checks,
    )
    .unwrap_or_else(|e| panic!("{e}: {checks:#?}"));
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
}

#[test]
fn dstack_v4_is_up_to_date_with_fmspc_collateral() {
    let (result, checks) = run(
        "dstack-v4-eventlog",
        "dcap-qvl-v5-outdated/collateral",
        FMSPC90_AT,
        &TdxPolicy::default(),
    );
    let v = result.unwrap_or_else(|e| panic!("{e}: {checks:#?}"));
    assert_eq!(v.version, 4);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    assert_eq!(
        v.report.mr_td,
        hex48(
            "b24d3b24e9e3c16012376b52362ca09856c4adecb709d5fac33addf1c47e193da075b125b6c364115771390a5461e217"
        )
    );
    assert_eq!(
        v.report.rtmr,
        [
            hex48(
                "2e3843265f8ecdd4e2282694747f6f2f111605c33f2a8882f5734ee6f3a6ce63d8f34aeef06093dcda76fa5f9d33d8d6"
            ),
            hex48(
                "a1b79d76021970f57c45c4a7c395f780bab37011a4df27fe44e8559bd1abb4d6e52f12f866d1d08405448eb797a5970f"
            ),
            hex48(
                "1e31b59d605df7ee8160cf7966be9bafa6d0e1905de7e09695a24cd9748e71a603a51fae1297619fa0c30517addbcd07"
            ),
            hex48(
                "0f787c3877f3e95095d5a4d13dd0fe0233803b30120d8469866719dc28f519ce021fe1e53459121e7a5a4443147185a8"
            ),
        ]
    );
    let mut rd = [0u8; 64];
    rd[0] = 0x12;
    rd[1] = 0x34;
    assert_eq!(v.report.report_data, rd);
}

// ---- negatives ----

/// Flip one byte of the quote at `pos` and return the failed check's name.
fn mutated_quote_failure(q: &[u8], c: &Collateral, pos: usize) -> String {
    let mut m = q.to_vec();
    m[pos] ^= 0x01;
    let mut checks = Checks::new();
    let result = tdx::verify(&m, c, &TdxPolicy::default(), None, at(V4_AT), &mut checks);
    assert!(result.is_err(), "mutation at {pos} was accepted");
    failed_check(&checks)
}

#[test]
fn single_byte_mutations_of_the_quote_fail_named() {
    let q = quote("dcap-qvl-v4-uptodate");
    let c = collateral("dcap-qvl-v4-uptodate/collateral");
    let parsed = Quote::parse(&q).unwrap();
    // Header: version/key type/tee type fail parsing; the rest fails the signature.
    for pos in 0..8 {
        assert_eq!(
            mutated_quote_failure(&q, &c, pos),
            "quote.version",
            "header {pos}"
        );
    }
    for pos in 8..48 {
        assert_eq!(
            mutated_quote_failure(&q, &c, pos),
            "quote.signature",
            "header {pos}"
        );
    }
    // Body: every byte.
    for pos in 48..48 + 584 {
        assert_eq!(
            mutated_quote_failure(&q, &c, pos),
            "quote.signature",
            "body {pos}"
        );
    }
    let sig_start = 48 + 584 + 4;
    // Quote signature.
    for pos in sig_start..sig_start + 64 {
        assert_eq!(
            mutated_quote_failure(&q, &c, pos),
            "quote.signature",
            "signature {pos}"
        );
    }
    // Attestation key: the QE report no longer binds it.
    for pos in (sig_start + 64..sig_start + 128).step_by(3) {
        assert_eq!(
            mutated_quote_failure(&q, &c, pos),
            "qe-report.binding",
            "att key {pos}"
        );
    }
    // QE report (after the 6-byte certification data header) and its signature.
    let qe_start = sig_start + 128 + 6;
    for pos in (qe_start..qe_start + 384 + 64).step_by(2) {
        assert_eq!(
            mutated_quote_failure(&q, &c, pos),
            "qe-report.signature",
            "QE report {pos}"
        );
    }
    // QE authentication data.
    let auth_start = qe_start + 384 + 64 + 2;
    for pos in auth_start..auth_start + parsed.qe_auth_data.len() {
        assert_eq!(
            mutated_quote_failure(&q, &c, pos),
            "qe-report.binding",
            "auth data {pos}"
        );
    }
    // PCK chain PEM: base64 characters (not the one just before '=' padding).
    let pem_start = auth_start + parsed.qe_auth_data.len() + 6;
    let mut tested = 0;
    for pos in (pem_start..pem_start + parsed.pck_chain_pem.len()).step_by(7) {
        let b = q[pos];
        let next = q.get(pos + 1).copied().unwrap_or(0);
        if !(b.is_ascii_alphanumeric())
            || next == b'='
            || next == b'\n' && q.get(pos + 2) == Some(&b'-')
        {
            continue;
        }
        // Inside the BEGIN/END lines, letters are part of the armour.
        let line_start = q[..pos]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
        if q[line_start] == b'-' {
            continue;
        }
        let mut m = q.clone();
        m[pos] = if b == b'A' { b'B' } else { b'A' };
        let mut checks = Checks::new();
        let result = tdx::verify(&m, &c, &TdxPolicy::default(), None, at(V4_AT), &mut checks);
        assert!(result.is_err(), "PEM mutation at {pos} accepted");
        let name = failed_check(&checks);
        assert!(
            name == "pck.chain" || name == "qe-report.signature" || name == "pck.crl",
            "PEM mutation at {pos}: {name}"
        );
        tested += 1;
    }
    assert!(tested > 300, "{tested}");
    // Bytes after the signature data are unsigned: ignored, with a warning when not zero.
    let mut m = q.clone();
    *m.last_mut().unwrap() = 1;
    let mut checks = Checks::new();
    tdx::verify(&m, &c, &TdxPolicy::default(), None, at(V4_AT), &mut checks).unwrap();
    assert!(
        checks
            .as_slice()
            .iter()
            .any(|c| c.name == "quote.trailing-data" && c.outcome == Outcome::Warn)
    );
}

#[test]
fn v5_body_mutations_fail_the_signature() {
    let q = quote("dcap-qvl-v5-outdated");
    let c = collateral("dcap-qvl-v5-outdated/collateral");
    for pos in (54..54 + 648).step_by(5) {
        let mut m = q.clone();
        m[pos] ^= 0x80;
        let mut checks = Checks::new();
        assert!(tdx::verify(&m, &c, &TdxPolicy::default(), None, at(V5_AT), &mut checks).is_err());
        assert_eq!(failed_check(&checks), "quote.signature", "{pos}");
    }
}

/// Mutate signed collateral JSON bytes; each mutation is refused, either when parsing
/// the collateral or by the named signature check.
fn collateral_json_mutations(file: &str, check: &str) {
    let q = quote("dcap-qvl-v4-uptodate");
    let base = files("dcap-qvl-v4-uptodate/collateral");
    let body = base[file].clone();
    let mut by_signature = 0;
    for (pos, &b) in body.iter().enumerate() {
        let replacement = match b {
            b'0'..=b'8' => b + 1,
            b'9' => b'0',
            b'a'..=b'y' | b'A'..=b'Y' => b + 1,
            _ => continue,
        };
        let mut f = base.clone();
        f.get_mut(file).unwrap()[pos] = replacement;
        let Ok(c) = Collateral::from_files(&f) else {
            continue;
        };
        let mut checks = Checks::new();
        let result = tdx::verify(&q, &c, &TdxPolicy::default(), None, at(V4_AT), &mut checks);
        assert!(result.is_err(), "{file} mutation at {pos} accepted");
        assert_eq!(failed_check(&checks), check, "{file} at {pos}");
        by_signature += 1;
    }
    assert!(by_signature > 100, "{by_signature}");
}

#[test]
fn tcb_info_mutations_fail_the_signature() {
    collateral_json_mutations("tcb_info.json", "tcb-info.signature");
}

#[test]
fn qe_identity_mutations_fail_the_signature() {
    collateral_json_mutations("qe_identity.json", "qe-identity.signature");
}

#[test]
fn collateral_signature_and_crl_mutations_fail_named() {
    let q = quote("dcap-qvl-v4-uptodate");
    let base = files("dcap-qvl-v4-uptodate/collateral");
    let cases: [(&str, &str); 2] = [
        ("tcb_info.sig.hex", "tcb-info.signature"),
        ("qe_identity.sig.hex", "qe-identity.signature"),
    ];
    for (file, check) in cases {
        for pos in (0..128).step_by(3) {
            let mut f = base.clone();
            let b = f[file][pos];
            f.get_mut(file).unwrap()[pos] = if b == b'0' { b'1' } else { b'0' };
            let c = Collateral::from_files(&f).unwrap();
            let mut checks = Checks::new();
            assert!(
                tdx::verify(&q, &c, &TdxPolicy::default(), None, at(V4_AT), &mut checks).is_err()
            );
            assert_eq!(failed_check(&checks), check, "{file} {pos}");
        }
    }
    // CRLs: flip bytes in the signature (the DER's last bytes) and in the TBS.
    for (file, check) in [
        ("pck_crl.der", "pck.crl"),
        ("root_ca_crl.der", "crl.root-ca"),
    ] {
        let len = base[file].len();
        for pos in [len - 1, len - 10, len - 30, 40, 60, len / 2] {
            let mut f = base.clone();
            f.get_mut(file).unwrap()[pos] ^= 0x01;
            let Ok(c) = Collateral::from_files(&f) else {
                continue;
            };
            let mut checks = Checks::new();
            assert!(
                tdx::verify(&q, &c, &TdxPolicy::default(), None, at(V4_AT), &mut checks).is_err(),
                "{file} {pos}"
            );
            assert_eq!(failed_check(&checks), check, "{file} {pos}");
        }
    }
    // TCB Signing certificate: its chain to the root fails.
    let mut f = base.clone();
    let chain = Collateral::from_files(&base).unwrap().tcb_info.chain[0]
        .der()
        .to_vec();
    let mut der = chain.clone();
    let n = der.len();
    der[n - 5] ^= 0x01;
    let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    use base64::Engine as _;
    pem.extend(
        base64::engine::general_purpose::STANDARD
            .encode(&der)
            .as_bytes(),
    );
    pem.extend(b"\n-----END CERTIFICATE-----\n");
    f.insert("tcb_info_issuer_chain.pem".to_owned(), pem);
    let c = Collateral::from_files(&f).unwrap();
    let mut checks = Checks::new();
    assert!(tdx::verify(&q, &c, &TdxPolicy::default(), None, at(V4_AT), &mut checks).is_err());
    assert_eq!(failed_check(&checks), "tcb-info.signature");
}

#[test]
fn expired_or_early_collateral_fails() {
    let cases = [
        // After the PCK CRL's nextUpdate (the tightest bound).
        ("2025-07-19T10:00:36Z", "pck.crl"),
        // Before the TCB Info's issueDate, the CRLs being current.
        ("2025-06-19T10:10:00Z", "tcb-info.validity"),
        // Between the TCB Info's and the QE Identity's issueDate.
        ("2025-06-19T10:20:00Z", "qe-identity.validity"),
    ];
    for (when, check) in cases {
        let (result, checks) = run(
            "dcap-qvl-v4-uptodate",
            "dcap-qvl-v4-uptodate/collateral",
            when,
            &TdxPolicy::default(),
        );
        assert!(result.is_err(), "{when}");
        assert_eq!(failed_check(&checks), check, "{when}");
    }
    // The TCB Info's own window, directly: a current CRL set cannot reach past it here,
    // so check the typed error of the later window.
    let (result, _) = run(
        "dcap-qvl-v4-uptodate",
        "dcap-qvl-v4-uptodate/collateral",
        "2025-08-01T00:00:00Z",
        &TdxPolicy::default(),
    );
    assert!(result.is_err());
}

#[test]
fn wrong_fmspc_collateral_fails() {
    let (result, checks) = run(
        "dcap-qvl-v4-uptodate",
        "dcap-qvl-v5-outdated/collateral",
        V5_AT,
        &TdxPolicy::default(),
    );
    assert!(matches!(result.unwrap_err(), TdxError::TcbInfoMismatch(_)));
    assert_eq!(failed_check(&checks), "tcb-info.fmspc");
}

/// A platform at the second (OutOfDate) level of the real, signed FMSPC 90C06F000000
/// TCB Info (its SGX components are exactly that level's): the level is OutOfDate with
/// its advisories, and the default policy (and one demanding UpToDate) refuses it.
#[test]
fn out_of_date_level_is_refused_by_policy() {
    let c = collateral("dcap-qvl-v5-outdated/collateral");
    let pck = PckExtensions {
        cpu_svn: [2, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
        pce_svn: 13,
        pce_id: [0, 0],
        fmspc: [0x90, 0xc0, 0x6f, 0, 0, 0],
    };
    let tee_tcb_svn = [0x0b, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let level = tcb::match_platform(&c.tcb_info.body, &pck, &tee_tcb_svn).unwrap();
    assert_eq!(level.status, TcbStatus::OutOfDate);
    assert_eq!(
        level.advisory_ids,
        [
            "INTEL-SA-01036",
            "INTEL-SA-01079",
            "INTEL-SA-01099",
            "INTEL-SA-01103",
            "INTEL-SA-01111"
        ]
    );
    let up_to_date_only = TdxPolicy {
        accepted_tcb_statuses: vec![TcbStatus::UpToDate],
        ..TdxPolicy::default()
    };
    for policy in [TdxPolicy::default(), up_to_date_only] {
        let mut checks = Checks::new();
        assert_eq!(
            policy.check_tcb(level.status, &level.advisory_ids, &mut checks),
            Err(TdxError::TcbStatusRejected(TcbStatus::OutOfDate))
        );
        assert_eq!(failed_check(&checks), "tcb.status");
    }
    // Accepting OutOfDate still refuses a named advisory.
    let lenient = TdxPolicy {
        accepted_tcb_statuses: vec![TcbStatus::OutOfDate],
        rejected_advisory_ids: vec!["INTEL-SA-01103".to_owned()],
        ..TdxPolicy::default()
    };
    let mut checks = Checks::new();
    assert_eq!(
        lenient.check_tcb(level.status, &level.advisory_ids, &mut checks),
        Err(TdxError::AdvisoryRejected("INTEL-SA-01103".to_owned()))
    );
    assert_eq!(failed_check(&checks), "policy.advisories");
}

#[test]
fn policy_on_real_quote() {
    // A policy that accepts only OutOfDate refuses the UpToDate sample.
    let only_ood = TdxPolicy {
        accepted_tcb_statuses: vec![TcbStatus::OutOfDate],
        ..TdxPolicy::default()
    };
    let (result, checks) = run(
        "dcap-qvl-v4-uptodate",
        "dcap-qvl-v4-uptodate/collateral",
        V4_AT,
        &only_ood,
    );
    assert_eq!(
        result.unwrap_err(),
        TdxError::TcbStatusRejected(TcbStatus::UpToDate)
    );
    assert_eq!(failed_check(&checks), "tcb.status");
    // Measurements: an allow-list without the quote's MRTD / RTMR fails, naming it.
    let mrtd = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
    let pinned = TdxPolicy {
        mr_td: vec![mrtd.to_uppercase().parse().unwrap()],
        xfam: vec!["e702060000000000".parse().unwrap()],
        ..TdxPolicy::default()
    };
    let (result, _) = run(
        "dcap-qvl-v4-uptodate",
        "dcap-qvl-v4-uptodate/collateral",
        V4_AT,
        &pinned,
    );
    assert!(result.is_ok());
    for (policy, check) in [
        (
            TdxPolicy {
                mr_td: vec![Measurement([0x00; 48])],
                ..TdxPolicy::default()
            },
            "policy.mrtd",
        ),
        (
            TdxPolicy {
                rtmr1: vec![Measurement([0x00; 48])],
                ..TdxPolicy::default()
            },
            "policy.rtmr1",
        ),
        (
            TdxPolicy {
                xfam: vec!["0300000000000000".parse().unwrap()],
                ..TdxPolicy::default()
            },
            "policy.xfam",
        ),
        (
            TdxPolicy {
                mr_owner: vec![Measurement([0x11; 48])],
                ..TdxPolicy::default()
            },
            "policy.mrowner",
        ),
    ] {
        let (result, checks) = run(
            "dcap-qvl-v4-uptodate",
            "dcap-qvl-v4-uptodate/collateral",
            V4_AT,
            &policy,
        );
        assert!(matches!(result.unwrap_err(), TdxError::Policy(_)));
        assert_eq!(failed_check(&checks), check);
    }
    // Policy JSON: unknown fields refused; missing fields take the secure default.
    assert!(serde_json::from_str::<TdxPolicy>(r#"{"allow_debugg": true}"#).is_err());
    let p: TdxPolicy = serde_json::from_str(r#"{"accepted_tcb_statuses": ["UpToDate"]}"#).unwrap();
    assert!(!p.allow_debug && p.require_sept_ve_disable);
    assert_eq!(
        TdxPolicy::default().accepted_tcb_statuses,
        [TcbStatus::UpToDate, TcbStatus::SWHardeningNeeded]
    );
}

#[test]
fn debug_td_is_refused() {
    // The go-tdx-guest SPR quote's attributes lack SEPT_VE_DISABLE; a synthetic report
    // with DEBUG set is refused by the default policy.
    let mut report = Quote::parse(&quote("dcap-qvl-v4-uptodate")).unwrap().report;
    report.td_attributes[0] |= 1;
    let mut checks = Checks::new();
    assert!(
        TdxPolicy::default()
            .check_td(&report, None, &mut checks)
            .is_err()
    );
    assert_eq!(failed_check(&checks), "policy.debug");
    let allow = TdxPolicy {
        allow_debug: true,
        ..TdxPolicy::default()
    };
    let mut checks = Checks::new();
    assert!(allow.check_td(&report, None, &mut checks).is_ok());
}

#[test]
fn parsing_never_panics_on_truncations() {
    for sample in [
        "dcap-qvl-v4-uptodate",
        "dcap-qvl-v5-outdated",
        "go-tdx-guest-v4-spr",
        "go-tdx-guest-v5",
        "dstack-v4-eventlog",
    ] {
        let q = quote(sample);
        let full = Quote::parse(&q).unwrap();
        let exact = &q[..q.len() - full.trailing_zeros];
        assert_eq!(
            Quote::parse(exact).unwrap(),
            Quote {
                trailing_zeros: 0,
                trailing_nonzero: false,
                ..full.clone()
            }
        );
        for len in 0..q.len() - full.trailing_zeros {
            assert!(
                Quote::parse(&q[..len]).is_err(),
                "{sample} truncated to {len}"
            );
        }
        let pem = std::fs::read(testdata(sample).join("pck_chain_from_quote.pem")).unwrap();
        assert_eq!(
            full.pck_chain_pem.trim_ascii_end(),
            pem.trim_ascii_end(),
            "{sample}"
        );
    }
}

#[test]
fn collateral_needs_its_files() {
    let base = files("dcap-qvl-v4-uptodate/collateral");
    for name in [
        "tcb_info.json",
        "tcb_info.sig.hex",
        "tcb_info_issuer_chain.pem",
        "qe_identity.json",
        "pck_crl.der",
        "root_ca_crl.der",
    ] {
        let mut f = base.clone();
        f.remove(name);
        let err = Collateral::from_files(&f).unwrap_err();
        assert!(matches!(err, TdxError::Collateral(_)), "{name}: {err}");
    }
}

/// dstack's event log (28 events, RTMR index per event) replays to the quote's RTMR0-3.
#[test]
fn dstack_event_log_replays_to_the_rtmrs() {
    use veil_attestation::tdx::eventlog::{self, Event};
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata("dstack-v4-eventlog/quote-report.json")).unwrap(),
    )
    .unwrap();
    let log: serde_json::Value = serde_json::from_str(doc["event_log"].as_str().unwrap()).unwrap();
    let events: Vec<Event> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Event {
            rtmr: usize::try_from(e["imr"].as_u64().unwrap()).unwrap(),
            digest: hex48(e["digest"].as_str().unwrap()),
        })
        .collect();
    assert_eq!(events.len(), 28);
    let quote = Quote::parse(&quote("dstack-v4-eventlog")).unwrap();
    eventlog::check(&events, &quote.report.rtmr).unwrap();
    // Dropping or altering an event breaks the replay, naming the RTMR.
    let mut altered = events.clone();
    altered[27].digest[0] ^= 1;
    let err = eventlog::check(&altered, &quote.report.rtmr).unwrap_err();
    assert!(err.to_string().contains("RTMR3"), "{err}");
    let err = eventlog::check(&events[1..], &quote.report.rtmr).unwrap_err();
    assert!(err.to_string().contains("RTMR0"), "{err}");
}

/// Random multi-byte corruptions (a fixed xorshift sequence) of a quote before its PEM
/// chain (header, body, signature, key, QE report, auth data and every length field),
/// some also truncated: parsing and verification return, never panic, and nothing
/// corrupted verifies. (The PEM text has harmless unsigned bytes, such as the armour of
/// the root's copy, which is dropped in favour of the pinned root.)
#[test]
fn random_corruptions_never_panic_or_verify() {
    let c = collateral("dcap-qvl-v4-uptodate/collateral");
    let q = quote("dcap-qvl-v4-uptodate");
    let parsed = Quote::parse(&q).unwrap();
    let sig_end = 48 + 584 + 4 + 128 + 6 + 384 + 64 + 2 + parsed.qe_auth_data.len() + 6;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..400 {
        let mut m = q.clone();
        let flips = 1 + (next() % 4) as usize;
        for _ in 0..flips {
            let pos = (next() % sig_end as u64) as usize;
            let bit = 1u8 << (next() % 8);
            m[pos] ^= bit;
        }
        if m == q {
            continue;
        }
        if next() % 4 == 0 {
            m.truncate((next() % m.len() as u64) as usize);
        }
        let _ = Quote::parse(&m);
        let mut checks = Checks::new();
        let result = tdx::verify(&m, &c, &TdxPolicy::default(), None, at(V4_AT), &mut checks);
        assert!(result.is_err(), "a corrupted quote verified");
        assert!(checks.first_failure().is_some());
    }
}
