#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! NVIDIA H100 evidence against every real sample in `shared/testdata/nvidia/`, with
//! the values PROVENANCE.md gives; RIM comparisons as documented there; negatives:
//! trustee's broken chains, every byte of the signed transcript, of the signature and
//! of each certificate, a wrong nonce, missing OCSP, trailing bytes, truncations.

use time::OffsetDateTime;
use time::macros::datetime;
use veil_attestation::checks::{Checks, Outcome};
use veil_attestation::nvidia::{
    self, GpuChain, GpuError, GpuPolicy, GpuReport, GpuVerified, ReferenceMeasurement, References,
    Rim, RimKind, SpdmError,
};
use veil_attestation::x509::Certificate;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata");

/// Today (PROVENANCE.md): the device certificates never expire.
const TODAY: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

fn read(rel: &str) -> Vec<u8> {
    let p = format!("{TESTDATA}/nvidia/{rel}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn rim(rel: &str) -> Rim {
    Rim::parse(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn nonce(hex_text: &str) -> [u8; 32] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

fn lenient() -> GpuPolicy {
    GpuPolicy {
        allow_missing_ocsp: true,
        ..GpuPolicy::default()
    }
}

struct Sample {
    dir: &'static str,
    report: &'static str,
    nonce: &'static str,
    driver: &'static str,
    vbios: &'static str,
    project: &'static str,
    project_sku: &'static str,
    chip_sku: &'static str,
    fwid: &'static str,
    opaque_fwid: bool,
    trailing_zeros: usize,
    leaf_serial: &'static str,
}

const PPCIE_NONCE: &str = "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e";
const PPCIE_FWID: &str = "956ecf09ee4191f115224d1cb09e76b897b77591c3ea7c2a22e1c50546aeba7961cd67edbb4a274e294fe1402036211d";

const fn ppcie(dir: &'static str, leaf_serial: &'static str) -> Sample {
    Sample {
        dir,
        report: "attestation_report.bin",
        nonce: PPCIE_NONCE,
        driver: "590.12",
        vbios: "96.00.a5.00.01",
        project: "G520",
        project_sku: "0200",
        chip_sku: "885",
        fwid: PPCIE_FWID,
        opaque_fwid: true,
        trailing_zeros: 0,
        leaf_serial,
    }
}

const SAMPLES: &[Sample] = &[
    Sample {
        dir: "nvtrust-h100-pcie-sample",
        report: "attestation_report.hex",
        nonce: "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        driver: "550.90.07",
        vbios: "96.00.9f.00.01",
        project: "1010",
        project_sku: "0200",
        chip_sku: "882",
        fwid: "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d",
        opaque_fwid: true,
        trailing_zeros: 0,
        leaf_serial: "53C22BA15E5D68088282DA074ED9FB37AA585771",
    },
    Sample {
        dir: "trustee-coco-ci-h100",
        report: "attestation_report.hex",
        nonce: "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec",
        driver: "580.95.05",
        vbios: "96.00.74.00.1a",
        project: "1010",
        project_sku: "0200",
        chip_sku: "882",
        fwid: "f1ae7d0093a3f5689cced58045c9744f94eb2aa4ddca88135197fb41a7be45576c2881cf920e2cbcc090b1cb921f7b2d",
        opaque_fwid: true,
        trailing_zeros: 1,
        leaf_serial: "7BC23E44C689A774F1C5EC86E2C7B2544FFA8989",
    },
    Sample {
        dir: "attestation-sdk-h100-535-vbios-match",
        report: "attestation_report.hex",
        nonce: "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66",
        driver: "535.86.09",
        vbios: "96.00.5e.00.01",
        project: "1010",
        project_sku: "0200",
        chip_sku: "882",
        fwid: "faa77bfbd8678d4817df3ce941a3cb6dba3ae120dba3b2faae7cf0f19057c566d50d7b86afbf6aa91ab76821e8724f76",
        opaque_fwid: false,
        trailing_zeros: 0,
        leaf_serial: "455472BB690155ACCC29161A19C7FE6144A8ED92",
    },
    ppcie(
        "nvtrust-ppcie-hgx-8gpu/gpu0",
        "72CA27239F0E96F6535F73AF84EB1542471A17B2",
    ),
    ppcie(
        "nvtrust-ppcie-hgx-8gpu/gpu1",
        "7FB26EF11FE545C10F53E18C4190561417D54895",
    ),
    ppcie(
        "nvtrust-ppcie-hgx-8gpu/gpu2",
        "5B9679112F554E011950739A972691EAD523D43F",
    ),
    ppcie(
        "nvtrust-ppcie-hgx-8gpu/gpu3",
        "51118F994359C9E79172DF61A0B4A826990CA354",
    ),
    ppcie(
        "nvtrust-ppcie-hgx-8gpu/gpu4",
        "58B103C17596E4610463277055702A9189624FDB",
    ),
    ppcie(
        "nvtrust-ppcie-hgx-8gpu/gpu5",
        "46AA4DC060D450E75665F3EB15CFEF130C8ADD25",
    ),
    ppcie(
        "nvtrust-ppcie-hgx-8gpu/gpu6",
        "6C6C2C29E2DCEDFC49F1FD8A0FDA472127AE902F",
    ),
    ppcie(
        "nvtrust-ppcie-hgx-8gpu/gpu7",
        "510312EA44CA0D9F2AFF812645126964523C466B",
    ),
];

fn sample(dir: &str) -> &'static Sample {
    SAMPLES.iter().find(|s| s.dir == dir).unwrap()
}

fn run(
    s: &Sample,
    rims: &[Rim],
    policy: &GpuPolicy,
    at: OffsetDateTime,
) -> (Result<GpuVerified, GpuError>, Checks) {
    let report = read(&format!("{}/{}", s.dir, s.report));
    let certs = read(&format!("{}/cert_chain.pem", s.dir));
    let n = nonce(s.nonce);
    let refs = References {
        expected_nonce: Some(&n),
        rims,
        ocsp: &[],
    };
    let mut checks = Checks::new();
    let result = nvidia::verify(&report, &certs, &refs, policy, at, &mut checks);
    (result, checks)
}

fn outcome(checks: &Checks, name: &str) -> Option<Outcome> {
    checks
        .as_slice()
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.outcome)
}

/// The failure is the trail's last entry and named as the error says.
fn assert_failed(result: &Result<GpuVerified, GpuError>, checks: &Checks, check: &str) {
    let err = result.as_ref().expect_err("verification must fail");
    assert_eq!(err.check(), check, "{err}");
    let last = checks.as_slice().last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.outcome),
        (check, Outcome::Fail),
        "{}",
        last.detail
    );
    assert_eq!(checks.first_failure(), Some(last));
}

#[test]
fn every_sample_verifies_with_its_provenance_values() {
    for s in SAMPLES {
        let (result, checks) = run(s, &[], &lenient(), TODAY);
        let v = result.unwrap_or_else(|e| panic!("{}: {e}", s.dir));
        assert_eq!(v.nonce, s.nonce, "{}", s.dir);
        assert_eq!(v.driver_version, s.driver, "{}", s.dir);
        assert_eq!(v.vbios_version, s.vbios, "{}", s.dir);
        assert_eq!(v.project.as_deref(), Some(s.project), "{}", s.dir);
        assert_eq!(v.project_sku.as_deref(), Some(s.project_sku), "{}", s.dir);
        assert_eq!(v.chip_sku.as_deref(), Some(s.chip_sku), "{}", s.dir);
        assert_eq!(v.fwid, s.fwid, "{}", s.dir);
        assert_eq!(v.opaque_fwid, s.opaque_fwid, "{}", s.dir);
        assert_eq!(v.measurement_count, 64, "{}", s.dir);
        assert!(v.relayable);
        assert!(
            v.leaf_subject.contains("CN=GH100 A01 GSP FMC LF")
                && v.leaf_subject.contains(s.leaf_serial),
            "{}: {}",
            s.dir,
            v.leaf_subject
        );
        for name in [
            "report.parse",
            "chain.shape",
            "chain.signature",
            "chain.ca",
            "chain.root",
            "chain.fwid",
            "chain.leaf-key",
            "chain.validity",
            "report.signature",
            "report.nonce",
            "report.opaque",
        ] {
            assert_eq!(
                outcome(&checks, name),
                Some(Outcome::Pass),
                "{}: {name}",
                s.dir
            );
        }
        let fwid = if s.opaque_fwid {
            Outcome::Pass
        } else {
            Outcome::Warn
        };
        assert_eq!(outcome(&checks, "report.fwid"), Some(fwid), "{}", s.dir);
        assert_eq!(outcome(&checks, "revocation"), Some(Outcome::Warn));
        assert!(checks.all_passed());

        let parsed =
            GpuReport::from_bytes_or_hex(&read(&format!("{}/{}", s.dir, s.report))).unwrap();
        assert_eq!(parsed.trailing_zeros, s.trailing_zeros, "{}", s.dir);
        assert_eq!(parsed.request.param2, 0xff);
        assert_eq!(
            parsed.blocks.iter().map(|b| b.index).collect::<Vec<_>>(),
            (1..=64).collect::<Vec<u8>>()
        );
        assert!(parsed.blocks.iter().all(|b| b.value.len() == 48));
        assert_eq!(
            parsed.as_bytes().len() - parsed.signed_bytes().len() - s.trailing_zeros,
            96
        );
    }
}

#[test]
fn transcript_lengths_match_provenance() {
    for (dir, len) in [
        ("nvtrust-h100-pcie-sample", 4117),
        ("trustee-coco-ci-h100", 4130),
        ("attestation-sdk-h100-535-vbios-match", 4052),
        ("nvtrust-ppcie-hgx-8gpu/gpu0", 4274),
    ] {
        let s = sample(dir);
        let r = GpuReport::from_bytes_or_hex(&read(&format!("{dir}/{}", s.report))).unwrap();
        assert_eq!(r.as_bytes().len(), len, "{dir}");
    }
    // The nvtrust sample's expected claims (trustee's copy) agree with the parser.
    let claims: serde_json::Value =
        serde_json::from_slice(&read("nvtrust-h100-pcie-sample/expected_claims.json")).unwrap();
    let r = GpuReport::from_bytes_or_hex(&read("nvtrust-h100-pcie-sample/attestation_report.hex"))
        .unwrap();
    let config = &claims["config"];
    assert_eq!(r.opaque.board_id().as_deref(), config["board_id"].as_str());
    assert_eq!(
        r.opaque.vbios_version().as_deref(),
        config["vbios_version"].as_str()
    );
    assert_eq!(
        r.opaque.driver_version().as_deref(),
        config["driver_version"].as_str()
    );
    for (index, value) in claims["measurements"].as_object().unwrap() {
        let block = r.block(index.parse().unwrap()).unwrap();
        assert_eq!(
            Some(hex::encode(&block.value).as_str()),
            value.as_str(),
            "block {index}"
        );
    }
}

#[test]
fn vbios_rim_matches_all_twelve() {
    let s = sample("attestation-sdk-h100-535-vbios-match");
    let r =
        rim("attestation-sdk-h100-535-vbios-match/rim_vbios_1010_0200_882_96005E0001_PROD.swidtag");
    assert_eq!(r.kind, RimKind::Vbios);
    assert_eq!(r.version, "96.00.5E.00.01");
    assert!(r.has_signature);
    assert_eq!(
        r.active_indices(),
        vec![0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    );
    let (result, checks) = run(
        s,
        std::slice::from_ref(&r),
        &lenient(),
        datetime!(2024-06-22 0:00 UTC),
    );
    let v = result.unwrap();
    let [only] = v.rims.as_slice() else {
        panic!("one RIM result");
    };
    assert_eq!(only.matched.len(), 12);
    assert!(only.signature_verified);
    assert_eq!(outcome(&checks, "rim.vbios.version"), Some(Outcome::Pass));
    assert_eq!(outcome(&checks, "rim.vbios.signature"), Some(Outcome::Pass));
    assert_eq!(
        outcome(&checks, "rim.vbios.measurements"),
        Some(Outcome::Pass)
    );

    // Requiring both RIMs fails: there is no driver RIM.
    let policy = GpuPolicy {
        require_rims: true,
        ..lenient()
    };
    let (result, checks) = run(
        s,
        std::slice::from_ref(&r),
        &policy,
        datetime!(2024-06-22 0:00 UTC),
    );
    assert_failed(&result, &checks, "policy.rims");

    // Today the RIM's signing chain has expired (its L4 signer in 2025, the L3 CA on
    // 2026-11-11): the RIM is refused before its values are used.
    let (result, checks) = run(s, &[r], &lenient(), TODAY);
    assert_failed(&result, &checks, "rim.vbios.signature");
}

/// Verification with one RIM at `at`, a time its signing chain was valid.
fn rim_failure_at(dir: &str, rim_file: &str, at: OffsetDateTime) -> (GpuError, Checks) {
    let (result, checks) = run(sample(dir), &[rim(rim_file)], &lenient(), at);
    let err = result.clone().unwrap_err();
    (err, checks)
}

#[test]
fn mismatching_rims_name_the_indices() {
    let (err, checks) = rim_failure_at(
        "trustee-coco-ci-h100",
        "trustee-coco-ci-h100/rim_vbios_1010_0200_882_960074001A_PROD.swidtag",
        datetime!(2024-09-05 0:00 UTC),
    );
    assert_eq!(err.check(), "rim.vbios.measurements");
    let GpuError::Rim {
        indices,
        rim_version,
        report_version,
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(indices, &[9]);
    assert_eq!(
        (rim_version.as_str(), report_version.as_str()),
        ("96.00.74.00.1A", "96.00.74.00.1a")
    );
    let text = err.to_string();
    assert!(text.contains("index 9 (SPDM block 10)"), "{text}");
    assert!(text.contains("7f3e9382785513c1932dfcc9e87f6ef6bf5fefe88144c6ea48539e65f937013dd7349144e5f439dcea401dac26e5c098"), "{text}");
    assert!(
        text.contains("96.00.74.00.1A") && text.contains("96.00.74.00.1a"),
        "{text}"
    );
    assert_eq!(
        checks.first_failure().unwrap().name,
        "rim.vbios.measurements"
    );

    let (err, _) = rim_failure_at(
        "attestation-sdk-h100-535-vbios-match",
        "attestation-sdk-h100-535-vbios-match/negative/rim_vbios_1010_0200_882_96005E0001_measurement_mismatch.xml",
        datetime!(2024-12-12 0:00 UTC),
    );
    assert!(
        matches!(&err, GpuError::Rim { indices, .. } if indices == &[9]),
        "{err}"
    );

    // The upstream-edited driver RIM: its values differ at 15 indices, but it is
    // refused first, because its signature no longer covers them.
    let rel = "attestation-sdk-h100-535-vbios-match/negative/rim_driver_GH100_535.86.09_measurement_mismatch.xml";
    let s = sample("attestation-sdk-h100-535-vbios-match");
    let report = GpuReport::from_bytes_or_hex(&read(&format!("{}/{}", s.dir, s.report))).unwrap();
    assert_eq!(
        rim(rel).compare(&report).mismatched_indices(),
        vec![7, 21, 22, 25, 26, 27, 29, 30, 31, 32, 34, 37, 39, 40, 41]
    );
    let (err, _) = rim_failure_at(
        "attestation-sdk-h100-535-vbios-match",
        rel,
        datetime!(2026-05-24 0:00 UTC),
    );
    assert_eq!(err.check(), "rim.driver.signature");
    assert!(err.to_string().contains("digest"), "{err}");
}

#[test]
fn test_no_gpu_rims_do_not_match_the_nvtrust_sample() {
    let s = sample("nvtrust-h100-pcie-sample");
    let report = GpuReport::from_bytes_or_hex(&read(&format!("{}/{}", s.dir, s.report))).unwrap();
    let driver = rim("nvtrust-h100-pcie-sample/rim_driver_test_no_gpu.swidtag");
    let vbios =
        rim("nvtrust-h100-pcie-sample/rim_vbios_1010_0200_882_96005E0001_test_no_gpu.swidtag");
    assert_eq!(
        (driver.kind, driver.version.as_str()),
        (RimKind::Driver, "545.00")
    );
    assert_eq!(
        (vbios.kind, vbios.version.as_str()),
        (RimKind::Vbios, "96.00.5E.00.01")
    );
    assert_eq!(
        driver.active_indices(),
        [vec![7], (21..=40).collect()].concat()
    );
    assert_eq!(
        driver.compare(&report).mismatched_indices(),
        vec![7, 21, 22, 25, 26, 27, 29, 30, 31, 32, 34, 36, 37, 39, 40]
    );
    assert_eq!(
        vbios.compare(&report).mismatched_indices(),
        vec![1, 2, 3, 9, 11]
    );

    // Through the verifier, the version check fails first, naming both versions.
    let (result, checks) = run(s, &[driver], &lenient(), TODAY);
    assert_failed(&result, &checks, "rim.driver.version");
    let text = result.unwrap_err().to_string();
    assert!(
        text.contains("545.00") && text.contains("550.90.07"),
        "{text}"
    );
    let (result, checks) = run(s, &[vbios], &lenient(), TODAY);
    assert_failed(&result, &checks, "rim.vbios.version");
}

#[test]
fn standalone_driver_rim_parses() {
    let r = rim("rims-standalone/NV_GPU_DRIVER_GH100_550.144.03.xml");
    assert_eq!(r.kind, RimKind::Driver);
    assert_eq!(r.version, "550.144.03");
    assert_eq!(r.product, "GH100");
    assert!(r.has_signature);
    assert_eq!(r.measurements.len(), 64);
    assert_eq!(r.active_indices(), [vec![7], (21..=40).collect()].concat());
}

#[test]
fn rim_garbage_is_an_error() {
    for input in [
        &b""[..],
        b"<a/>",
        b"<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
        b"\xff\xfe",
    ] {
        assert!(Rim::parse(input).is_err());
    }
    // A resource whose hash is not 48 bytes.
    let good = read("rims-standalone/NV_GPU_DRIVER_GH100_550.144.03.xml");
    let text = String::from_utf8(good).unwrap();
    let bad = text.replacen("Hash0=\"", "Hash0=\"00", 1);
    assert!(matches!(
        Rim::parse(bad.as_bytes()),
        Err(nvidia::RimError::Measurement { .. })
    ));
}

#[test]
fn trustee_negative_chains_fail_with_the_check_named() {
    let s = sample("nvtrust-h100-pcie-sample");
    let report = read(&format!("{}/{}", s.dir, s.report));
    for (file, check) in [
        ("negative/cert_chain_root_only.pem", "chain.shape"),
        (
            "negative/cert_chain_missing_intermediate.pem",
            "chain.signature",
        ),
        ("negative/cert_chain_missing_leaf.pem", "chain.fwid"),
    ] {
        let certs = read(&format!("{}/{file}", s.dir));
        let mut checks = Checks::new();
        let result = nvidia::verify(
            &report,
            &certs,
            &References::default(),
            &lenient(),
            TODAY,
            &mut checks,
        );
        assert_failed(&result, &checks, check);
    }
    // A chain of another GPU does not verify this transcript.
    let other = read("trustee-coco-ci-h100/cert_chain.pem");
    let mut checks = Checks::new();
    let result = nvidia::verify(
        &report,
        &other,
        &References::default(),
        &lenient(),
        TODAY,
        &mut checks,
    );
    assert_failed(&result, &checks, "report.signature");
    // An AMD chain does not reach the NVIDIA root.
    let amd = std::fs::read(format!("{TESTDATA}/roots/amd/milan/cert_chain_vcek.pem")).unwrap();
    let mut checks = Checks::new();
    let result = nvidia::verify(
        &report,
        &amd,
        &References::default(),
        &lenient(),
        TODAY,
        &mut checks,
    );
    assert_failed(&result, &checks, "chain.root");
}

#[test]
fn leaving_the_root_out_of_the_chain_is_fine() {
    let s = sample("nvtrust-h100-pcie-sample");
    let certs =
        Certificate::all_from_pem_or_der(&read(&format!("{}/cert_chain.pem", s.dir))).unwrap();
    let mut checks = Checks::new();
    let chain = GpuChain::from_certificates(certs[..4].to_vec(), &mut checks).unwrap();
    assert_eq!(chain.certs.len(), 5);
    assert_eq!(
        chain.certs.last().unwrap().der(),
        nvidia::device_root().unwrap().der()
    );
    assert!(nvidia::rim_root().unwrap().is_self_signed());
}

fn chain_of(s: &Sample) -> GpuChain {
    let mut checks = Checks::new();
    GpuChain::from_pem_or_der(&read(&format!("{}/cert_chain.pem", s.dir)), &mut checks).unwrap()
}

#[test]
fn every_byte_of_the_signed_transcript_and_signature_matters() {
    let s = sample("nvtrust-h100-pcie-sample");
    let chain = chain_of(s);
    let good = GpuReport::from_bytes_or_hex(&read(&format!("{}/{}", s.dir, s.report)))
        .unwrap()
        .as_bytes()
        .to_vec();
    let n = nonce(s.nonce);
    let refs = References {
        expected_nonce: Some(&n),
        ..References::default()
    };
    let mut by_check = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let mut checks = Checks::new();
        let result = nvidia::parse_report(&bad, &mut checks)
            .and_then(|r| nvidia::verify_parsed(&r, &chain, &refs, &lenient(), TODAY, &mut checks));
        let err = result.expect_err(&format!("flipping byte {i} must fail"));
        let check = err.check();
        assert!(
            check == "report.parse" || check == "report.signature",
            "byte {i}: {err}"
        );
        assert_eq!(checks.first_failure().unwrap().name, check);
        if i >= good.len() - 96 {
            assert_eq!(check, "report.signature", "signature byte {i}");
        }
        *by_check.entry(check).or_default() += 1;
    }
    assert!(by_check["report.signature"] > 3000, "{by_check:?}");
}

#[test]
fn every_byte_of_each_certificate_matters() {
    let s = sample("trustee-coco-ci-h100");
    let report = GpuReport::from_bytes_or_hex(&read(&format!("{}/{}", s.dir, s.report))).unwrap();
    let certs =
        Certificate::all_from_pem_or_der(&read(&format!("{}/cert_chain.pem", s.dir))).unwrap();
    assert_eq!(certs.len(), 5);
    let refs = References::default();
    for (k, cert) in certs.iter().enumerate() {
        let der = cert.der();
        for i in 0..der.len() {
            let mut bad = der.to_vec();
            bad[i] ^= 0x01;
            let mut checks = Checks::new();
            let check = match Certificate::from_der(&bad) {
                Err(_) => "chain.parse",
                Ok(c) => {
                    let mut chain = certs.clone();
                    chain[k] = c;
                    let result =
                        GpuChain::from_certificates(chain, &mut checks).and_then(|chain| {
                            nvidia::verify_parsed(
                                &report,
                                &chain,
                                &refs,
                                &lenient(),
                                TODAY,
                                &mut checks,
                            )
                        });
                    let err = result.expect_err(&format!("certificate {k} byte {i} must fail"));
                    assert_eq!(checks.first_failure().unwrap().name, err.check());
                    err.check()
                }
            };
            assert!(
                ["chain.parse", "chain.signature", "chain.ca", "chain.root"].contains(&check),
                "certificate {k} byte {i}: {check}"
            );
        }
    }
}

#[test]
fn wrong_nonce_fails() {
    let s = sample("nvtrust-h100-pcie-sample");
    let report = read(&format!("{}/{}", s.dir, s.report));
    let certs = read(&format!("{}/cert_chain.pem", s.dir));
    let zero = [0u8; 32];
    let refs = References {
        expected_nonce: Some(&zero),
        ..References::default()
    };
    let mut checks = Checks::new();
    let result = nvidia::verify(&report, &certs, &refs, &lenient(), TODAY, &mut checks);
    assert_failed(&result, &checks, "report.nonce");
    // No expected nonce: a warning, not a pass.
    let mut checks = Checks::new();
    nvidia::verify(
        &report,
        &certs,
        &References::default(),
        &lenient(),
        TODAY,
        &mut checks,
    )
    .unwrap();
    assert_eq!(outcome(&checks, "report.nonce"), Some(Outcome::Warn));
}

#[test]
fn missing_ocsp_fails_by_default_and_warns_when_allowed() {
    let s = sample("nvtrust-h100-pcie-sample");
    let (result, checks) = run(s, &[], &GpuPolicy::default(), TODAY);
    assert_failed(&result, &checks, "revocation");
    let (result, checks) = run(s, &[], &lenient(), TODAY);
    result.unwrap();
    assert_eq!(outcome(&checks, "revocation"), Some(Outcome::Warn));
    // A malformed OCSP response fails, even when missing ones are allowed.
    let report = read(&format!("{}/{}", s.dir, s.report));
    let certs = read(&format!("{}/cert_chain.pem", s.dir));
    let ocsp = vec![vec![0x30, 0x00]];
    let refs = References {
        ocsp: &ocsp,
        ..References::default()
    };
    let mut checks = Checks::new();
    let result = nvidia::verify(
        &report,
        &certs,
        &refs,
        &GpuPolicy::default(),
        TODAY,
        &mut checks,
    );
    assert_failed(&result, &checks, "revocation");
}

#[test]
fn validity_is_checked_at_the_given_time() {
    let s = sample("nvtrust-h100-pcie-sample");
    let (result, checks) = run(s, &[], &lenient(), datetime!(2020-01-01 0:00 UTC));
    assert_failed(&result, &checks, "chain.validity");
}

#[test]
fn policy_versions_and_measurements() {
    let s = sample("nvtrust-h100-pcie-sample");
    let ok = GpuPolicy {
        driver_versions: vec!["550.90.07".into()],
        vbios_versions: vec!["96.00.9F.00.01".into()],
        measurements: vec![ReferenceMeasurement {
            index: 10,
            value: "059b32e712a153f490dbfb7976a9e275d789e28bd4803c357def2b6123327c430526bfaecc200f496d4e149fc5eade03".into(),
        }],
        ..lenient()
    };
    let (result, _) = run(s, &[], &ok, TODAY);
    result.unwrap();
    let (result, checks) = run(
        s,
        &[],
        &GpuPolicy {
            driver_versions: vec!["535.86.09".into()],
            ..ok.clone()
        },
        TODAY,
    );
    assert_failed(&result, &checks, "policy.driver-version");
    let (result, checks) = run(
        s,
        &[],
        &GpuPolicy {
            vbios_versions: vec!["96.00.5e.00.01".into()],
            ..ok.clone()
        },
        TODAY,
    );
    assert_failed(&result, &checks, "policy.vbios-version");
    let (result, checks) = run(
        s,
        &[],
        &GpuPolicy {
            measurements: vec![ReferenceMeasurement {
                index: 10,
                value: "00".repeat(48),
            }],
            ..ok.clone()
        },
        TODAY,
    );
    assert_failed(&result, &checks, "policy.measurements");
    assert!(result.unwrap_err().to_string().contains("block 10"));

    let parsed: GpuPolicy = serde_json::from_str(
        r#"{"allow_missing_ocsp": true, "driver_versions": ["550.90.07"],
            "measurements": [{"index": 10, "value": "00"}]}"#,
    )
    .unwrap();
    assert!(parsed.allow_missing_ocsp && !parsed.require_rims);
    assert!(serde_json::from_str::<GpuPolicy>(r#"{"allow_ocsp": true}"#).is_err());
    assert!(!GpuPolicy::default().allow_missing_ocsp);
}

#[test]
fn trailing_bytes_and_truncations() {
    let s = sample("trustee-coco-ci-h100");
    let good = GpuReport::from_bytes_or_hex(&read(&format!("{}/{}", s.dir, s.report)))
        .unwrap()
        .as_bytes()
        .to_vec();
    let exact = &good[..good.len() - 1];
    assert_eq!(GpuReport::from_bytes(exact).unwrap().trailing_zeros, 0);
    let mut two = good.clone();
    two.push(0);
    assert!(matches!(
        GpuReport::from_bytes(&two),
        Err(SpdmError::Trailing { count: 2, zeros: 2 })
    ));
    let mut nonzero = exact.to_vec();
    nonzero.push(1);
    assert!(matches!(
        GpuReport::from_bytes(&nonzero),
        Err(SpdmError::Trailing { count: 1, zeros: 0 })
    ));
    for len in 0..exact.len() {
        assert!(
            GpuReport::from_bytes(&exact[..len]).is_err(),
            "prefix {len}"
        );
    }
    assert!(matches!(
        GpuReport::from_bytes_or_hex(b"11e0zz"),
        Err(SpdmError::Header { .. })
    ));
    assert!(matches!(
        GpuReport::from_bytes_or_hex(b"11e"),
        Err(SpdmError::Hex(_))
    ));
}

// OCSP fixtures made with OpenSSL 3.0 (`openssl ocsp -index ... -ndays 7`, CertID with
// SHA-256, ECDSA P-384 keys, signed with ecdsa-with-SHA256) at 2026-11-23T17:55:35Z: a
// test CA, a leaf it issued (serial 0x1234), responses good / revoked (2025-06-01) /
// unknown signed by the CA, and good signed by a delegated responder (EKU OCSPSigning)
// that the CA issued. NVIDIA publishes no OCSP responses with its samples.
const OCSP_CA: &str = "308201c030820145a003020102020101300a06082a8648ce3d04030330173115301306035504030c0c54657374204f4353502043413020170d3236313132333137353533315a180f32313236313033303137353533315a30173115301306035504030c0c54657374204f4353502043413076301006072a8648ce3d020106052b8104002203620004417a1782495eb7c102d07bcfc881484b59c7725177817ab45657057d7ed54ceeb2c860b9982da45d14af23c67ded918a04e738f562ac12733b7becc098601276e9e0c04389f035b3c8989ac68770bcfd498240be7eb4a95d268c8d7af994e9e2a3633061301d0603551d0e041604142d582a8317258e4a18d2f598ee7874ce99acc1dc301f0603551d230418301680142d582a8317258e4a18d2f598ee7874ce99acc1dc300f0603551d130101ff040530030101ff300e0603551d0f0101ff040403020106300a06082a8648ce3d04030303690030660231008eff225d3de22c4c15ac5794fa311cdf21985bb96c42665c642f76fb6271afb2d833ca456db6785fd7459bce3d370388023100879ce239e7901fa9bf3d0e2c8a52274c2afc9c0b136690bc875ffa7ff576983ed1974470213d31f51da79f9696770a4a";
const OCSP_LEAF: &str = "308201b930820140a00302010202021234300a06082a8648ce3d04030330173115301306035504030c0c54657374204f4353502043413020170d3236313132333137353533315a180f32313236313033303137353533315a30143112301006035504030c0954657374204c6561663076301006072a8648ce3d020106052b8104002203620004e75471cb7ab050a12e9dddcf13eb27b4b1a4de5bc9475255e0bd4abc728b886ba02f0c724f900ede978d5f9c3998adb1a0e6956dafcca963d58fdcb66bbe35b700eebc54649c2701481af76425d7ed7512cdc0bbd45d25857e8bbb2a0ecc16baa360305e300c0603551d130101ff04023000300e0603551d0f0101ff040403020780301d0603551d0e04160414162fc703ad83eea96f05b0e4421306e2a92628e8301f0603551d230418301680142d582a8317258e4a18d2f598ee7874ce99acc1dc300a06082a8648ce3d040303036700306402306c7561f724b2e0c641a29cfa55586071d540624376490cebc49a7a35a747cb226ef528634d6a1e6ae7543747d116494302304d88e737774a6b561fe4e58b7846acdcff1f86a2f489ec241efe32c15cb2b58aa829d5d54076a004392bee1212a12714";
const OCSP_GOOD: &str = "308203140a0100a082030d3082030906092b0601050507300101048202fa308202f63081b0a11930173115301306035504030c0c54657374204f435350204341180f32303236313132333137353533355a308181307f3057300d0609608648016503040201050004209b10f8c228f10fbf71cf11d89b4db3ce5aecb4fd600ba18ba1ee37b101ce221e04205133d00112413c32c2491ce8050fbf5b3f340d0784fbb7f5be94342c982341a4020212348000180f32303236313132333137353533355aa011180f32303236313133303137353533355a300a06082a8648ce3d0403020369003066023100ce2993a62dc35fb6651c5993f55b68ce60bca5e6140868a7c8874b801bcbb0b9a9fd4f0ddd057c9fdbbb7a4678dba720023100fbbb305c0da5fccb49e31c6bf502a96d5494407064c01e0e7d05a517501c753b9910187b07ee14268971247d70edf7e4a08201c8308201c4308201c030820145a003020102020101300a06082a8648ce3d04030330173115301306035504030c0c54657374204f4353502043413020170d3236313132333137353533315a180f32313236313033303137353533315a30173115301306035504030c0c54657374204f4353502043413076301006072a8648ce3d020106052b8104002203620004417a1782495eb7c102d07bcfc881484b59c7725177817ab45657057d7ed54ceeb2c860b9982da45d14af23c67ded918a04e738f562ac12733b7becc098601276e9e0c04389f035b3c8989ac68770bcfd498240be7eb4a95d268c8d7af994e9e2a3633061301d0603551d0e041604142d582a8317258e4a18d2f598ee7874ce99acc1dc301f0603551d230418301680142d582a8317258e4a18d2f598ee7874ce99acc1dc300f0603551d130101ff040530030101ff300e0603551d0f0101ff040403020106300a06082a8648ce3d04030303690030660231008eff225d3de22c4c15ac5794fa311cdf21985bb96c42665c642f76fb6271afb2d833ca456db6785fd7459bce3d370388023100879ce239e7901fa9bf3d0e2c8a52274c2afc9c0b136690bc875ffa7ff576983ed1974470213d31f51da79f9696770a4a";
const OCSP_REVOKED: &str = "308203260a0100a082031f3082031b06092b06010505073001010482030c308203083081c2a11930173115301306035504030c0c54657374204f435350204341180f32303236313132333137353533355a3081933081903057300d0609608648016503040201050004209b10f8c228f10fbf71cf11d89b4db3ce5aecb4fd600ba18ba1ee37b101ce221e04205133d00112413c32c2491ce8050fbf5b3f340d0784fbb7f5be94342c982341a402021234a111180f32303235303630313030303030305a180f32303236313132333137353533355aa011180f32303236313133303137353533355a300a06082a8648ce3d0403020369003066023100abe3654bac31d20ca164293a43e916c7596de142ce2a4c15882cc91fcc6f34d41b33c853aeb93f0d4fa9036e58f628c5023100b2a85518be335d9741ae0fe4090f5457d22924ba58560a9f69ab76744957fbeca3718ea21e607f2283a3ac2b60db61cba08201c8308201c4308201c030820145a003020102020101300a06082a8648ce3d04030330173115301306035504030c0c54657374204f4353502043413020170d3236313132333137353533315a180f32313236313033303137353533315a30173115301306035504030c0c54657374204f4353502043413076301006072a8648ce3d020106052b8104002203620004417a1782495eb7c102d07bcfc881484b59c7725177817ab45657057d7ed54ceeb2c860b9982da45d14af23c67ded918a04e738f562ac12733b7becc098601276e9e0c04389f035b3c8989ac68770bcfd498240be7eb4a95d268c8d7af994e9e2a3633061301d0603551d0e041604142d582a8317258e4a18d2f598ee7874ce99acc1dc301f0603551d230418301680142d582a8317258e4a18d2f598ee7874ce99acc1dc300f0603551d130101ff040530030101ff300e0603551d0f0101ff040403020106300a06082a8648ce3d04030303690030660231008eff225d3de22c4c15ac5794fa311cdf21985bb96c42665c642f76fb6271afb2d833ca456db6785fd7459bce3d370388023100879ce239e7901fa9bf3d0e2c8a52274c2afc9c0b136690bc875ffa7ff576983ed1974470213d31f51da79f9696770a4a";
const OCSP_UNKNOWN: &str = "308203130a0100a082030c3082030806092b0601050507300101048202f9308202f53081b0a11930173115301306035504030c0c54657374204f435350204341180f32303236313132333137353533355a308181307f3057300d0609608648016503040201050004209b10f8c228f10fbf71cf11d89b4db3ce5aecb4fd600ba18ba1ee37b101ce221e04205133d00112413c32c2491ce8050fbf5b3f340d0784fbb7f5be94342c982341a4020212348200180f32303236313132333137353533355aa011180f32303236313133303137353533355a300a06082a8648ce3d0403020368003065023079dcd039c0a86fb8ad689f08ddd9b8dafa046fd34b653821386319fcdfd044cfd950353fbc45dc5dd581a9c245f31b3b02310082f62ee95c29b4d802ced0e0e75efd671064cff13be6fe1c8b953535376fd61a258cc7a7a18c710875ee227c40d21c92a08201c8308201c4308201c030820145a003020102020101300a06082a8648ce3d04030330173115301306035504030c0c54657374204f4353502043413020170d3236313132333137353533315a180f32313236313033303137353533315a30173115301306035504030c0c54657374204f4353502043413076301006072a8648ce3d020106052b8104002203620004417a1782495eb7c102d07bcfc881484b59c7725177817ab45657057d7ed54ceeb2c860b9982da45d14af23c67ded918a04e738f562ac12733b7becc098601276e9e0c04389f035b3c8989ac68770bcfd498240be7eb4a95d268c8d7af994e9e2a3633061301d0603551d0e041604142d582a8317258e4a18d2f598ee7874ce99acc1dc301f0603551d230418301680142d582a8317258e4a18d2f598ee7874ce99acc1dc300f0603551d130101ff040530030101ff300e0603551d0f0101ff040403020106300a06082a8648ce3d04030303690030660231008eff225d3de22c4c15ac5794fa311cdf21985bb96c42665c642f76fb6271afb2d833ca456db6785fd7459bce3d370388023100879ce239e7901fa9bf3d0e2c8a52274c2afc9c0b136690bc875ffa7ff576983ed1974470213d31f51da79f9696770a4a";
const OCSP_DELEGATED: &str = "308203330a0100a082032c3082032806092b060105050730010104820319308203153081b7a120301e311c301a06035504030c1354657374204f43535020526573706f6e646572180f32303236313132333137353533355a308181307f3057300d0609608648016503040201050004209b10f8c228f10fbf71cf11d89b4db3ce5aecb4fd600ba18ba1ee37b101ce221e04205133d00112413c32c2491ce8050fbf5b3f340d0784fbb7f5be94342c982341a4020212348000180f32303236313132333137353533355aa011180f32303236313133303137353533355a300a06082a8648ce3d040302036700306402306db26085a57df140a29c2e3cfb5db9ae42db5dbd9c757aa26052dea38d37eb66b9adfa05e7d4058261ac82e33395b015023014a370cb709d78b4ea328f34b8f59bd684206c55f61457ae57346214a4b50e59256f4cde4b8f7edf836d749918f2f8a0a08201e2308201de308201da3082015fa00302010202020099300a06082a8648ce3d04030330173115301306035504030c0c54657374204f4353502043413020170d3236313132333137353533315a180f32313236313033303137353533315a301e311c301a06035504030c1354657374204f43535020526573706f6e6465723076301006072a8648ce3d020106052b81040022036200045df3e33cc8b945cb108485640a2a06d167fcfeac321bad5f06c4bed330dfdecd1fcc9532193429b15b853570adf822b321c840809dc30dd253840ac0d838df7a6521fef4842abc56eb39f17a3b5ea2199bc8bd257370e2095b8a6e8feb30145da3753073300c0603551d130101ff04023000300e0603551d0f0101ff04040302078030130603551d25040c300a06082b06010505070309301d0603551d0e04160414b8b262b5d1e33f011ddc9a4a4ee876cffe032038301f0603551d230418301680142d582a8317258e4a18d2f598ee7874ce99acc1dc300a06082a8648ce3d0403030369003066023100e89f13d38edb678182c2d5b06f9f97558fe60601228521430d6fce7180b200a5fb78bd575e10a91fa39f88b90ba53a3d023100e174ed7d70bad0b45118ffad03b37ffe09b25baba1dc718cbd8cb478bd293cc558f0bcebb6f14b43af6d72bb75c9e70a";

#[test]
fn ocsp_responses_are_parsed_verified_and_dated() {
    use nvidia::{CertStatus, OcspError, OcspResponse};
    let ca = Certificate::from_der(&hex::decode(OCSP_CA).unwrap()).unwrap();
    let leaf = Certificate::from_der(&hex::decode(OCSP_LEAF).unwrap()).unwrap();
    let at = datetime!(2026-11-24 0:00 UTC);
    let status = |hex_text: &str, at| {
        OcspResponse::from_der(&hex::decode(hex_text).unwrap())
            .unwrap()
            .status_of(&leaf, &ca, at)
    };
    assert_eq!(status(OCSP_GOOD, at), Ok(CertStatus::Good));
    assert_eq!(status(OCSP_DELEGATED, at), Ok(CertStatus::Good));
    assert_eq!(
        status(OCSP_REVOKED, at),
        Ok(CertStatus::Revoked(datetime!(2025-06-01 0:00 UTC)))
    );
    assert_eq!(status(OCSP_UNKNOWN, at), Ok(CertStatus::Unknown));
    // Before thisUpdate and after nextUpdate.
    for when in [
        datetime!(2026-11-23 17:00 UTC),
        datetime!(2026-12-01 0:00 UTC),
    ] {
        assert!(matches!(
            status(OCSP_GOOD, when),
            Err(OcspError::NotCurrent { .. })
        ));
    }
    // About the leaf, not about the CA.
    let resp = OcspResponse::from_der(&hex::decode(OCSP_GOOD).unwrap()).unwrap();
    assert!(matches!(
        resp.status_of(&ca, &ca, at),
        Err(OcspError::NotCovered(_))
    ));
    // The delegated responder is not the CA: with another issuer nothing verifies.
    let delegated = OcspResponse::from_der(&hex::decode(OCSP_DELEGATED).unwrap()).unwrap();
    assert_eq!(delegated.certs.len(), 1);
    // Every byte of the good response up to its signature's end matters: it fails to
    // parse, stops covering the leaf, stops verifying, or changes the dates. (OpenSSL
    // appends the CA's certificate, `certs [0]`, which is not signed and not used when
    // the issuer signs itself.)
    let good = hex::decode(OCSP_GOOD).unwrap();
    let certs_at = good
        .windows(ca.der().len())
        .position(|w| w == ca.der())
        .unwrap()
        - 8;
    for i in 0..certs_at {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        if let Ok(r) = OcspResponse::from_der(&bad) {
            assert!(
                r.status_of(&leaf, &ca, at) != Ok(CertStatus::Good),
                "flipping byte {i} keeps a good status"
            );
        }
    }
    for garbage in [&b""[..], b"\x30", b"\x30\x03\x0a\x01\x01", &[0x30; 40]] {
        assert!(OcspResponse::from_der(garbage).is_err());
    }
}

/// Every signed RIM in the samples, at a time its signing chain was valid (PROVENANCE):
/// the enveloped XML-DSig verifies to the pinned CoRIM root, except the upstream-edited
/// driver RIM, whose digest does not match.
#[test]
fn rim_xml_signatures_verify_as_provenance_says() {
    use veil_attestation::nvidia::xmldsig::{XmlDsigError, verify_enveloped};
    let root = nvidia::rim_root().unwrap();
    let text = |rel: &str| String::from_utf8(read(rel)).unwrap();
    for (rel, at) in [
        (
            "nvtrust-h100-pcie-sample/rim_driver_test_no_gpu.swidtag",
            datetime!(2024-06-26 0:00 UTC),
        ),
        (
            "nvtrust-h100-pcie-sample/rim_vbios_1010_0200_882_96005E0001_test_no_gpu.swidtag",
            datetime!(2024-06-22 0:00 UTC),
        ),
        (
            "trustee-coco-ci-h100/rim_vbios_1010_0200_882_960074001A_PROD.swidtag",
            datetime!(2024-09-05 0:00 UTC),
        ),
        (
            "attestation-sdk-h100-535-vbios-match/rim_vbios_1010_0200_882_96005E0001_PROD.swidtag",
            datetime!(2024-06-22 0:00 UTC),
        ),
        (
            "attestation-sdk-h100-535-vbios-match/negative/rim_vbios_1010_0200_882_96005E0001_measurement_mismatch.xml",
            datetime!(2024-12-12 0:00 UTC),
        ),
        ("rims-standalone/NV_GPU_DRIVER_GH100_550.144.03.xml", TODAY),
    ] {
        let signer =
            verify_enveloped(&text(rel), root, at).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(signer.chain.len(), 4, "{rel}: {:?}", signer.chain);
        assert!(
            signer.chain[0].contains("RIM L4 Signer"),
            "{rel}: {:?}",
            signer.chain
        );
        assert!(signer.chain[3].contains("CoRIM signing Root CA"), "{rel}");
    }
    let edited = text(
        "attestation-sdk-h100-535-vbios-match/negative/rim_driver_GH100_535.86.09_measurement_mismatch.xml",
    );
    assert_eq!(
        verify_enveloped(&edited, root, datetime!(2026-05-24 0:00 UTC)),
        Err(XmlDsigError::Digest)
    );

    // One changed reference value, a changed signature, another time.
    let good = text("rims-standalone/NV_GPU_DRIVER_GH100_550.144.03.xml");
    let at = datetime!(2025-06-01 0:00 UTC);
    verify_enveloped(&good, root, at).unwrap();
    let hash = good.find("Hash0=\"").unwrap() + 7;
    let mut altered = good.clone();
    let c = if &good[hash..=hash] == "0" { "1" } else { "0" };
    altered.replace_range(hash..=hash, c);
    assert_eq!(
        verify_enveloped(&altered, root, at),
        Err(XmlDsigError::Digest)
    );
    let sig = good.find("SignatureValue>").unwrap() + 15;
    let mut altered = good.clone();
    let c = if &good[sig..=sig] == "A" { "B" } else { "A" };
    altered.replace_range(sig..=sig, c);
    assert!(matches!(
        verify_enveloped(&altered, root, at),
        Err(XmlDsigError::Signature(_) | XmlDsigError::Encoding(_))
    ));
    assert!(matches!(
        verify_enveloped(&good, root, datetime!(2030-01-01 0:00 UTC)),
        Err(XmlDsigError::Chain(_))
    ));
    assert!(matches!(
        verify_enveloped(&good, nvidia::device_root().unwrap(), at),
        Err(XmlDsigError::Chain(_))
    ));
}

/// The `revocation` check over a chain (the OCSP fixtures' leaf and CA): good passes,
/// unknown and missing fail by default and warn when the policy allows it, revoked
/// fails even then.
#[test]
fn ocsp_unknown_fails_by_default_and_revoked_always() {
    let ca = Certificate::from_der(&hex::decode(OCSP_CA).unwrap()).unwrap();
    let leaf = Certificate::from_der(&hex::decode(OCSP_LEAF).unwrap()).unwrap();
    let chain = [leaf, ca];
    let at = datetime!(2026-11-24 0:00 UTC);
    let strict = GpuPolicy::default();
    let allowing = lenient();
    let run = |response: Option<&str>, policy: &GpuPolicy| {
        let ocsp: Vec<Vec<u8>> = response
            .map(|h| hex::decode(h).unwrap())
            .into_iter()
            .collect();
        let mut checks = Checks::new();
        let result = nvidia::check_revocation(&ocsp, &chain, policy, at, &mut checks);
        let outcome = outcome(&checks, "revocation");
        (result, outcome, checks)
    };
    for (response, policy, expected) in [
        (Some(OCSP_GOOD), &strict, Outcome::Pass),
        (Some(OCSP_DELEGATED), &strict, Outcome::Pass),
        (Some(OCSP_UNKNOWN), &strict, Outcome::Fail),
        (Some(OCSP_UNKNOWN), &allowing, Outcome::Warn),
        (None, &strict, Outcome::Fail),
        (None, &allowing, Outcome::Warn),
        (Some(OCSP_REVOKED), &strict, Outcome::Fail),
        (Some(OCSP_REVOKED), &allowing, Outcome::Fail),
    ] {
        let (result, got, checks) = run(response, policy);
        assert_eq!(got, Some(expected), "{:?}", checks.as_slice());
        assert_eq!(result.is_ok(), expected != Outcome::Fail);
    }
    let (result, _, _) = run(Some(OCSP_UNKNOWN), &strict);
    assert!(result.unwrap_err().to_string().contains("unknown"));
    let (result, _, _) = run(Some(OCSP_REVOKED), &allowing);
    assert!(result.unwrap_err().to_string().contains("revoked"));
}
