#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SEV-SNP verification against every real sample in `shared/testdata/snp/`, with the
//! values PROVENANCE.md gives, and negatives: every byte of the signed report, of the
//! signature and of the certificates' signed parts, another chip's VCEK, another
//! product's ASK, times outside validity, a debug guest, CRLs.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use veil_attestation::checks::Checks;
use veil_attestation::snp::{
    self, AttestationReport, EndorsementKind, Product, SnpChain, SnpError, SnpPolicy,
};
use veil_attestation::x509::{Certificate, Crl};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata");

struct Sample {
    name: &'static str,
    product: Product,
    version: u32,
    vmpl: u32,
    policy: u64,
    measurement: &'static str,
    report_data: &'static str,
    chip_id: &'static str,
    /// (fmc, bootloader, tee, snp, microcode) of REPORTED_TCB.
    tcb: (Option<u8>, u8, u8, u8, u8),
}

/// Sample name → (certificate files, verification time from PROVENANCE.md).
fn files_and_time(name: &str) -> (&'static [&'static str], &'static str) {
    match name {
        "virtee-sev-milan-v2" => (&["vcek.der", "cert_chain.pem"], "2024-01-01T00:00:00Z"),
        "go-sev-guest-milan-v2" => (&["vcek.der"], "2022-09-24T01:00:00Z"),
        "trustee-milan-vcek-v2" => (&["vcek.der"], "2024-01-01T00:00:00Z"),
        "trustee-milan-vlek-v3" => (&["vlek.der"], "2025-06-01T00:00:00Z"),
        "trustee-genoa-v3-e2e" => (&["vcek.der"], "2025-06-01T00:00:00Z"),
        "dstack-milan-v3" => (&["vcek.pem", "ask.pem"], "2026-07-01T00:00:00Z"),
        "microsoft-milan-v3" => (&["vcek.pem", "ask.pem"], "2026-03-01T00:00:00Z"),
        "microsoft-genoa-v3" => (&["vcek.pem", "ask.pem"], "2026-03-01T00:00:00Z"),
        "microsoft-turin-v5" => (&["vcek.pem", "ask.pem"], "2026-03-01T00:00:00Z"),
        "oak-turin-v5" => (&["vcek.der"], "2025-09-11T12:00:00Z"),
        "oak-genoa-v5" => (&["vcek.der"], "2025-09-11T12:00:00Z"),
        "azure-genoa-v3-hcl" => (&["vcek.pem"], "2025-06-01T00:00:00Z"),
        "azure-milan-v2-hcl" => (&["vcek_chain.pem"], "2024-01-01T00:00:00Z"),
        other => panic!("no files for {other}"),
    }
}

const SAMPLES: &[Sample] = &[
    Sample {
        name: "virtee-sev-milan-v2",
        product: Product::Milan,
        version: 2,
        vmpl: 0,
        policy: 0x30000,
        measurement: "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f",
        report_data: "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd",
        chip_id: "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6",
        tcb: (None, 3, 0, 8, 115),
    },
    Sample {
        name: "go-sev-guest-milan-v2",
        product: Product::Milan,
        version: 2,
        vmpl: 0,
        policy: 0xb0000,
        measurement: "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01",
        report_data: "01020304050000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d",
        tcb: (None, 2, 0, 5, 68),
    },
    Sample {
        name: "trustee-milan-vcek-v2",
        product: Product::Milan,
        version: 2,
        vmpl: 0,
        policy: 0x3001f,
        measurement: "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c",
        report_data: "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e20000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e",
        tcb: (None, 3, 0, 8, 115),
    },
    Sample {
        name: "trustee-milan-vlek-v3",
        product: Product::Milan,
        version: 3,
        vmpl: 1,
        policy: 0x30000,
        measurement: "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0",
        report_data: "819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd54e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca",
        chip_id: "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        tcb: (None, 4, 0, 24, 217),
    },
    Sample {
        name: "trustee-genoa-v3-e2e",
        product: Product::Genoa,
        version: 3,
        vmpl: 0,
        policy: 0x30000,
        measurement: "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e",
        report_data: "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf929eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0",
        chip_id: "371c55d6d15cb50f16dc31d39a24e300caaabff4431e841111429b73ec45ad67ea6e687ffae7bf84b54a5d0e6d79b3ef6ff0bd8b4cff94c2163af5c5de8718e8",
        tcb: (None, 10, 0, 23, 25),
    },
    Sample {
        name: "dstack-milan-v3",
        product: Product::Milan,
        version: 3,
        vmpl: 0,
        policy: 0x30000,
        measurement: "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599847ff250dbffcd07e1ba639771d6f05d",
        report_data: "6174746573742d746573742d666978747572652d3230323600000000000000000000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "38d174589d2dff97a6d40cb9f9d90b9507c027491219083cef3ce73ed18f7289142d941ad61eabecd27d25f268c1095d665f6001358e98a4769c82734a6bb877",
        tcb: (None, 4, 0, 23, 213),
    },
    Sample {
        name: "microsoft-milan-v3",
        product: Product::Milan,
        version: 3,
        vmpl: 0,
        policy: 0x3001f,
        measurement: "5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f98189887920ab2fa0096903a0c23fca1",
        report_data: "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "4ffb5cb4fd594f3fee6528fc3fb10370bb38abe89dcd5ba2cf0ab6a11df2ca282add516bef45a890a8c9f9732bdca68f9f3f16c42e846030a800295dbeb19ba5",
        tcb: (None, 4, 0, 24, 219),
    },
    Sample {
        name: "microsoft-genoa-v3",
        product: Product::Genoa,
        version: 3,
        vmpl: 0,
        policy: 0x3001f,
        measurement: "5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f98189887920ab2fa0096903a0c23fca1",
        report_data: "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "b1e24a27bbc3a4d58090d8b89851dce3b8031544be249b9ac17132bb222b027622347ee4d0fe4f689efdfc47a68cefc686cbb448d01436506ee1e28010cab7c0",
        tcb: (None, 10, 0, 23, 84),
    },
    Sample {
        name: "microsoft-turin-v5",
        product: Product::Turin,
        version: 5,
        vmpl: 0,
        policy: 0x3001f,
        measurement: "6d6c354511d6f7c6d7504668903dc5bdc066a048b651840d8d03fb85299ebfa142fccf1d1b0baca496841bdf243619d4",
        report_data: "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "59790fb1c39f35c10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        tcb: (Some(1), 1, 1, 4, 81),
    },
    Sample {
        name: "oak-turin-v5",
        product: Product::Turin,
        version: 5,
        vmpl: 0,
        policy: 0x30000,
        measurement: "f924dd18f168df60fbea937f0b086284d51b1b376de872bac43694f61134d57967c318018de7335503023dbb50dee624",
        report_data: "e0fd0bdb6aa4030a6ddea9073e1fcec5be6c782a2c8075a0825dfb3d9a81b9240000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "3b42092f69c656d30000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        tcb: (Some(0), 1, 0, 2, 71),
    },
    Sample {
        name: "oak-genoa-v5",
        product: Product::Genoa,
        version: 5,
        vmpl: 0,
        policy: 0x30000,
        measurement: "c57729018b0a6fb90dc17bb138b0aa35e4401004283ff4a2c24d3739ff3750f52384370e77b7032862a08c440a9bc4dc",
        report_data: "8100555af0ad8e7525be6dffeed0af83e30bbacbf03b76e175e6894d1ed057ce0000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "d2421d976f95ce0ba849b7cc5c789122f1e59c77a037272c137ae4d188bb102adbc7c53d0302bff82a432c94a305dec7a7a270ceb19a10f04a83316c6486968d",
        tcb: (None, 10, 0, 25, 84),
    },
    Sample {
        name: "azure-genoa-v3-hcl",
        product: Product::Genoa,
        version: 3,
        vmpl: 0,
        policy: 0x3001f,
        measurement: "f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae",
        report_data: "b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f0000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "0506ffba875e939c2729d20c74eb72b4c5ba6bf7ea1faaa640141f12c6d64782fb487f68ce69dcd021e914cc0d9244327bc121f0242d6470903ad1d4aaea4ad1",
        tcb: (None, 10, 0, 23, 84),
    },
    Sample {
        name: "azure-milan-v2-hcl",
        product: Product::Milan,
        version: 2,
        vmpl: 0,
        policy: 0x3001f,
        measurement: "9ac48fcac8a2d88aeeff8d427ad4f2be0e3917c748a18bdf52cc317e7fe20308b459d5ef1a12e0c22944eb386d17c315",
        report_data: "b3fbad6514c83caeb0380882145e49f794229ef37c421b91fc47ff93556bafac0000000000000000000000000000000000000000000000000000000000000000",
        chip_id: "19752a447db501a32ade46428a46e92639bd3515dbb45e2e67bbcb0934ffcf1f3e3c004ccb4a99c9fa7e4ffb09da6b324ac58acedaf679f24ba7db5f838c6cca",
        tcb: (None, 3, 0, 8, 115),
    },
];

fn t(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339).unwrap()
}

fn read(rel: &str) -> Vec<u8> {
    let path = format!("{TESTDATA}/{rel}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn report(s: &Sample) -> Vec<u8> {
    read(&format!("snp/{}/report.bin", s.name))
}

fn certs_der(s: &Sample) -> Vec<Vec<u8>> {
    let (files, _) = files_and_time(s.name);
    files
        .iter()
        .flat_map(|f| {
            Certificate::all_from_pem_or_der(&read(&format!("snp/{}/{f}", s.name))).unwrap()
        })
        .map(|c| c.der().to_vec())
        .collect()
}

fn at(s: &Sample) -> OffsetDateTime {
    t(files_and_time(s.name).1)
}

/// The policy each sample needs beyond the default: go-sev-guest's guest allows
/// debugging (policy 0xb0000), the VLEK sample runs at VMPL 1.
fn policy_for(s: &Sample) -> SnpPolicy {
    SnpPolicy {
        allow_debug: s.policy & (1 << 19) != 0,
        vmpls: vec![s.vmpl],
        ..SnpPolicy::default()
    }
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

fn report_data(s: &Sample) -> [u8; 64] {
    hex::decode(s.report_data).unwrap().try_into().unwrap()
}

fn verify(
    s: &Sample,
    report: &[u8],
    certs: &[Vec<u8>],
    policy: &SnpPolicy,
    when: OffsetDateTime,
) -> (Result<snp::SnpVerified, SnpError>, Checks) {
    let mut checks = Checks::new();
    let r = snp::verify(
        report,
        &refs(certs),
        policy,
        Some(&report_data(s)),
        when,
        &mut checks,
    );
    (r, checks)
}

/// A failure is recorded as the trail's last, failed check, named as the error says.
fn assert_fails(
    r: &Result<snp::SnpVerified, SnpError>,
    checks: &Checks,
    what: &str,
) -> &'static str {
    let err = match r {
        Ok(_) => panic!("{what}: verified"),
        Err(e) => e,
    };
    let failed = checks
        .first_failure()
        .unwrap_or_else(|| panic!("{what}: no failed check"));
    assert_eq!(failed.name, err.check(), "{what}: {err}");
    assert!(!checks.all_passed());
    err.check()
}

#[test]
fn every_sample_verifies_with_its_provenance_values() {
    assert_eq!(SAMPLES.len(), 13);
    for s in SAMPLES {
        let (r, checks) = verify(s, &report(s), &certs_der(s), &policy_for(s), at(s));
        let v = r.unwrap_or_else(|e| panic!("{}: {e}\n{checks:#?}", s.name));
        assert!(checks.all_passed(), "{}", s.name);
        assert_eq!(v.product, s.product, "{}", s.name);
        assert_eq!(v.version, s.version, "{}", s.name);
        assert_eq!(v.vmpl, s.vmpl, "{}", s.name);
        assert_eq!(v.policy, s.policy, "{}", s.name);
        assert_eq!(v.measurement, s.measurement, "{}", s.name);
        assert_eq!(v.report_data, s.report_data, "{}", s.name);
        assert_eq!(v.chip_id, s.chip_id, "{}", s.name);
        let tcb = v.reported_tcb;
        assert_eq!(
            (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
            s.tcb,
            "{}",
            s.name
        );
        let kind = if s.name.contains("vlek") {
            EndorsementKind::Vlek
        } else {
            EndorsementKind::Vcek
        };
        assert_eq!(v.signed_by, kind, "{}", s.name);
        let names: Vec<&str> = checks.as_slice().iter().map(|c| c.name.as_str()).collect();
        for needed in [
            "report.version",
            "report.signature",
            "chip-id",
            "tcb.vcek-matches-report",
            "validity.ark",
            "policy.debug",
            "report-data",
        ] {
            assert!(
                names.contains(&needed),
                "{}: no {needed} in {names:?}",
                s.name
            );
        }
        // The parser alone agrees.
        let parsed = AttestationReport::from_bytes(&report(s)).unwrap();
        assert_eq!(hex::encode(parsed.measurement), s.measurement);
    }
}

#[test]
fn default_policy_refuses_the_debug_guest() {
    let s = SAMPLES
        .iter()
        .find(|s| s.name == "go-sev-guest-milan-v2")
        .unwrap();
    let (r, checks) = verify(s, &report(s), &certs_der(s), &SnpPolicy::default(), at(s));
    assert_eq!(assert_fails(&r, &checks, "debug"), "policy.debug");
    // And every other sample passes the default policy (VMPL 0 ones).
    for s in SAMPLES
        .iter()
        .filter(|s| s.policy & (1 << 19) == 0 && s.vmpl == 0)
    {
        let (r, checks) = verify(s, &report(s), &certs_der(s), &SnpPolicy::default(), at(s));
        assert!(r.is_ok(), "{}: {checks:#?}", s.name);
    }
    // The VLEK sample at VMPL 1 fails the default VMPL 0.
    let s = SAMPLES.iter().find(|s| s.vmpl == 1).unwrap();
    let (r, checks) = verify(s, &report(s), &certs_der(s), &SnpPolicy::default(), at(s));
    assert_eq!(assert_fails(&r, &checks, "vmpl"), "policy.vmpl");
}

#[test]
fn flipping_any_report_byte_fails_with_a_named_check() {
    for s in SAMPLES {
        let certs = certs_der(s);
        let mut checks = Checks::new();
        let chain = SnpChain::from_der(&refs(&certs), None, &[], &mut checks).unwrap();
        let policy = policy_for(s);
        let good = report(s);
        let rd = report_data(s);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let mut checks = Checks::new();
            let r = snp::verify_with_chain(&bad, &chain, &policy, Some(&rd), at(s), &mut checks);
            let check = assert_fails(&r, &checks, &format!("{} byte {i:#x}", s.name));
            let expected: &[&str] = match i {
                0..4 => &["report.version", "report.signature"],
                0x34..0x38 => &["report.signature-algorithm"],
                0x48..0x4C => &["report.signing-key", "report.signature"],
                _ => &["report.signature"],
            };
            assert!(expected.contains(&check), "{} byte {i:#x}: {check}", s.name);
        }
    }
}

/// (start, end) of the tbsCertificate inside a certificate's DER.
fn tbs_range(der: &[u8]) -> (usize, usize) {
    fn header(b: &[u8], at: usize) -> (usize, usize) {
        let l = b[at + 1];
        if l < 0x80 {
            (2, l as usize)
        } else {
            let n = (l & 0x7f) as usize;
            let mut len = 0usize;
            for k in 0..n {
                len = (len << 8) | b[at + 2 + k] as usize;
            }
            (2 + n, len)
        }
    }
    let (outer, _) = header(der, 0);
    let (h, len) = header(der, outer);
    (outer, outer + h + len)
}

#[test]
fn flipping_any_byte_of_a_certificates_signed_part_fails() {
    for s in SAMPLES {
        let certs = certs_der(s);
        let policy = policy_for(s);
        for (n, der) in certs.iter().enumerate() {
            let (start, end) = tbs_range(der);
            for i in start..end {
                let mut bad = certs.clone();
                bad[n][i] ^= 0x01;
                let (r, checks) = verify(s, &report(s), &bad, &policy, at(s));
                let check = assert_fails(&r, &checks, &format!("{} cert {n} byte {i}", s.name));
                assert!(
                    check.starts_with("chain.") || check == "tcb.vcek-extensions",
                    "{} cert {n} byte {i}: {check}",
                    s.name
                );
            }
        }
    }
}

#[test]
fn flipping_a_certificate_signature_fails() {
    for s in SAMPLES {
        let certs = certs_der(s);
        for (n, der) in certs.iter().enumerate() {
            let mut bad = certs.clone();
            let last = der.len() - 10;
            bad[n][last] ^= 0x01;
            let (r, checks) = verify(s, &report(s), &bad, &policy_for(s), at(s));
            let check = assert_fails(&r, &checks, s.name);
            assert!(check.starts_with("chain."), "{}: {check}", s.name);
        }
    }
}

#[test]
fn a_vcek_of_another_chip_fails() {
    let a = SAMPLES
        .iter()
        .find(|s| s.name == "microsoft-milan-v3")
        .unwrap();
    let b = SAMPLES
        .iter()
        .find(|s| s.name == "dstack-milan-v3")
        .unwrap();
    let (r, checks) = verify(a, &report(a), &certs_der(b), &policy_for(a), at(b));
    assert_eq!(assert_fails(&r, &checks, "other chip"), "report.signature");
    let a = SAMPLES.iter().find(|s| s.name == "oak-turin-v5").unwrap();
    let b = SAMPLES
        .iter()
        .find(|s| s.name == "microsoft-turin-v5")
        .unwrap();
    let (r, checks) = verify(a, &report(a), &certs_der(b), &policy_for(a), at(b));
    assert_eq!(
        assert_fails(&r, &checks, "other turin chip"),
        "report.signature"
    );
}

#[test]
fn an_ask_of_another_product_fails() {
    let s = SAMPLES
        .iter()
        .find(|s| s.name == "microsoft-milan-v3")
        .unwrap();
    let vcek = Certificate::all_from_pem_or_der(&read("snp/microsoft-milan-v3/vcek.pem")).unwrap();
    for other in ["genoa", "turin"] {
        let ask =
            Certificate::all_from_pem_or_der(&read(&format!("roots/amd/{other}/ask.pem"))).unwrap();
        let certs = vec![vcek[0].der().to_vec(), ask[0].der().to_vec()];
        let (r, checks) = verify(s, &report(s), &certs, &policy_for(s), at(s));
        assert_eq!(assert_fails(&r, &checks, other), "chain.product");
        // Told the product is Milan, the Genoa/Turin ASK still fails.
        let policy = SnpPolicy {
            product: Some(Product::Milan),
            ..policy_for(s)
        };
        let (r, checks) = verify(s, &report(s), &certs, &policy, at(s));
        assert_eq!(assert_fails(&r, &checks, other), "chain.product");
    }
    // An ASK of another product whose name was not read (only the ASK's signature
    // decides): the Genoa ASK offered as the VCEK's issuer, product forced to Genoa.
    let policy = SnpPolicy {
        product: Some(Product::Genoa),
        ..policy_for(s)
    };
    let certs = vec![vcek[0].der().to_vec()];
    let (r, checks) = verify(s, &report(s), &certs, &policy, at(s));
    assert_eq!(assert_fails(&r, &checks, "forced genoa"), "chain.product");
    // The ASVK in place of the ASK (upstream trustee negative).
    let asvk = Certificate::all_from_pem_or_der(&read("roots/amd/milan/asvk.pem")).unwrap();
    let mut checks = Checks::new();
    let r = SnpChain::from_certificates(
        vec![vcek[0].clone(), asvk[0].clone()],
        None,
        &[],
        &mut checks,
    );
    // The ASVK is not used for a VCEK: the pinned ASK is, so the chain holds.
    assert!(r.is_ok());
}

#[test]
fn times_outside_validity_fail() {
    for s in SAMPLES {
        let certs = certs_der(s);
        let vek = Certificate::from_der(&certs[0]).unwrap();
        let before = vek.not_before() - time::Duration::seconds(1);
        let after = vek.not_after() + time::Duration::seconds(1);
        for when in [before, after] {
            let (r, checks) = verify(s, &report(s), &certs, &policy_for(s), when);
            let check = assert_fails(&r, &checks, s.name);
            assert!(
                check == "validity.vcek" || check == "validity.vlek",
                "{}: {check}",
                s.name
            );
        }
        let (r, checks) = verify(
            s,
            &report(s),
            &certs,
            &policy_for(s),
            t("2050-01-01T00:00:00Z"),
        );
        assert!(assert_fails(&r, &checks, s.name).starts_with("validity."));
    }
    // The VLEK expired on 2025-12-10.
    let s = SAMPLES
        .iter()
        .find(|s| s.name == "trustee-milan-vlek-v3")
        .unwrap();
    let (r, checks) = verify(
        s,
        &report(s),
        &certs_der(s),
        &policy_for(s),
        t("2025-12-11T00:00:00Z"),
    );
    assert_eq!(assert_fails(&r, &checks, "vlek expired"), "validity.vlek");
}

#[test]
fn wrong_report_data_and_policy_values_fail() {
    let s = SAMPLES
        .iter()
        .find(|s| s.name == "dstack-milan-v3")
        .unwrap();
    let mut rd = report_data(s);
    rd[63] ^= 1;
    let mut checks = Checks::new();
    let r = snp::verify(
        &report(s),
        &refs(&certs_der(s)),
        &policy_for(s),
        Some(&rd),
        at(s),
        &mut checks,
    );
    assert_eq!(assert_fails(&r, &checks, "report data"), "report-data");

    let cases: Vec<(SnpPolicy, &str)> = vec![
        (
            SnpPolicy {
                launch_measurements: vec!["00".repeat(48).parse().unwrap()],
                ..policy_for(s)
            },
            "policy.measurement",
        ),
        (
            SnpPolicy {
                host_data: vec!["00".repeat(32).parse().unwrap()],
                ..policy_for(s)
            },
            "policy.host-data",
        ),
        (
            SnpPolicy {
                require_id_block: true,
                ..policy_for(s)
            },
            "policy.id-key",
        ),
        (
            SnpPolicy {
                author_key_digests: vec!["00".repeat(48).parse().unwrap()],
                ..policy_for(s)
            },
            "policy.author-key",
        ),
        (
            SnpPolicy {
                allow_smt: false,
                ..policy_for(s)
            },
            "policy.smt",
        ),
        (
            SnpPolicy {
                min_tcb: snp::MinTcb {
                    snp: 24,
                    ..Default::default()
                },
                ..policy_for(s)
            },
            "policy.min-tcb",
        ),
        (
            SnpPolicy {
                vmpls: vec![1, 2],
                ..policy_for(s)
            },
            "policy.vmpl",
        ),
        (
            SnpPolicy {
                product: Some(Product::Genoa),
                ..policy_for(s)
            },
            "chain.product",
        ),
    ];
    for (policy, name) in cases {
        let (r, checks) = verify(s, &report(s), &certs_der(s), &policy, at(s));
        assert_eq!(assert_fails(&r, &checks, name), name);
    }
    // The values that are right pass.
    let good = SnpPolicy {
        launch_measurements: vec![s.measurement.parse().unwrap()],
        host_data: vec![
            "783f0057820acb99249af56cc3b07b4e8d80f65183167cba9cf437bb680f742f"
                .parse()
                .unwrap(),
        ],
        min_tcb: snp::MinTcb {
            bootloader: 4,
            tee: 0,
            snp: 23,
            microcode: 213,
            fmc: 0,
        },
        ..policy_for(s)
    };
    assert!(verify(s, &report(s), &certs_der(s), &good, at(s)).0.is_ok());
    // Turin's FMC minimum.
    let s = SAMPLES
        .iter()
        .find(|s| s.name == "microsoft-turin-v5")
        .unwrap();
    let p = SnpPolicy {
        min_tcb: snp::MinTcb {
            fmc: 2,
            ..Default::default()
        },
        ..policy_for(s)
    };
    let (r, checks) = verify(s, &report(s), &certs_der(s), &p, at(s));
    assert_eq!(assert_fails(&r, &checks, "fmc"), "policy.min-tcb");
}

#[test]
fn policy_json_is_strict_and_defaults_secure() {
    let p: SnpPolicy = serde_json::from_str("{}").unwrap();
    assert_eq!(p, SnpPolicy::default());
    assert!(!p.allow_debug && !p.allow_migration_agent);
    assert_eq!(p.vmpls, vec![0]);
    assert!(serde_json::from_str::<SnpPolicy>(r#"{"allow_debugg": true}"#).is_err());
    let p: SnpPolicy =
        serde_json::from_str(r#"{"min_tcb": {"snp": 8}, "product": "turin"}"#).unwrap();
    assert_eq!((p.min_tcb.snp, p.product), (8, Some(Product::Turin)));
}

#[test]
fn the_chain_only_turin_vcek_verifies() {
    let dir = "snp/virtee-sev-turin-vcek-chain-only";
    let mut certs = Certificate::all_from_pem_or_der(&read(&format!("{dir}/vcek.der"))).unwrap();
    certs
        .extend(Certificate::all_from_pem_or_der(&read(&format!("{dir}/cert_chain.pem"))).unwrap());
    let mut checks = Checks::new();
    let chain = SnpChain::from_certificates(certs, None, &[], &mut checks).unwrap();
    assert_eq!(
        (chain.product, chain.kind),
        (Product::Turin, EndorsementKind::Vcek)
    );
    assert_eq!(
        chain.info.hw_id.as_deref(),
        Some(&hex::decode("1e550a8ee5cf9f4d").unwrap()[..])
    );
    let tcb = chain.info.tcb;
    assert_eq!(
        (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        (Some(0), 0, 0, 0, 9)
    );
    assert_eq!(chain.info.product_name.as_deref(), Some("Turin"));
    chain
        .check_valid_at(t("2025-01-01T00:00:00Z"), &mut checks)
        .unwrap();
    assert!(
        chain
            .check_valid_at(t("2024-11-06T00:00:00Z"), &mut Checks::new())
            .is_err()
    );
    assert!(checks.all_passed());
}

#[test]
fn crls_are_checked_when_given() {
    let s = SAMPLES
        .iter()
        .find(|s| s.name == "microsoft-milan-v3")
        .unwrap();
    let milan = Crl::from_pem_or_der(&read("roots/amd/crl/milan_ark_crl.pem")).unwrap();
    let genoa = Crl::from_pem_or_der(&read("roots/amd/crl/genoa_ark_crl.pem")).unwrap();
    let certs = certs_der(s);
    let mut checks = Checks::new();
    let chain = SnpChain::from_der(
        &refs(&certs),
        None,
        std::slice::from_ref(&milan),
        &mut checks,
    )
    .unwrap();
    let rd = report_data(s);
    snp::verify_with_chain(
        &report(s),
        &chain,
        &policy_for(s),
        Some(&rd),
        at(s),
        &mut checks,
    )
    .unwrap();
    assert!(checks.as_slice().iter().any(|c| c.name == "crl.current"));
    // After the CRL's nextUpdate (2026-05-12) it is stale.
    let mut checks = Checks::new();
    let r = snp::verify_with_chain(
        &report(s),
        &chain,
        &policy_for(s),
        Some(&rd),
        t("2026-06-01T00:00:00Z"),
        &mut checks,
    );
    assert_eq!(assert_fails(&r, &checks, "stale crl"), "crl.current");
    // The Genoa ARK's CRL does not come from the Milan ARK.
    let mut checks = Checks::new();
    let r = SnpChain::from_der(&refs(&certs), None, &[genoa], &mut checks);
    assert_eq!(r.unwrap_err().check(), "crl.ark");
}

#[test]
fn the_alternative_vcek_issuance_verifies_too() {
    let s = SAMPLES
        .iter()
        .find(|s| s.name == "microsoft-milan-v3")
        .unwrap();
    let alt = Certificate::all_from_pem_or_der(&read("snp/microsoft-milan-v3/vcek_alt_issue.pem"))
        .unwrap();
    let (r, checks) = verify(
        s,
        &report(s),
        &[alt[0].der().to_vec()],
        &policy_for(s),
        at(s),
    );
    assert!(r.is_ok(), "{checks:#?}");
}

#[test]
fn hex_reports_parse_and_garbage_does_not_panic() {
    let hex_text = read("snp/virtee-sev-milan-v2/report.hex");
    let bin = read("snp/virtee-sev-milan-v2/report.bin");
    let a = AttestationReport::from_bytes_or_hex(&hex_text).unwrap();
    assert_eq!(a.as_bytes()[..], bin[..]);
    for len in [0, 1, 1183, 1185, 4096] {
        assert!(AttestationReport::from_bytes(&vec![0xff; len]).is_err());
    }
    let mut v4 = bin.clone();
    v4[0] = 4;
    assert_eq!(
        snp::verify(
            &v4,
            &[],
            &SnpPolicy::default(),
            None,
            t("2024-01-01T00:00:00Z"),
            &mut Checks::new()
        )
        .unwrap_err()
        .check(),
        "report.version"
    );
}

#[test]
fn real_certificates_come_out_of_a_certificate_table_and_build_a_chain() {
    // The table as the host's SNP tooling writes it (GUIDs in RFC 4122 byte order).
    let vcek = read("snp/go-sev-guest-milan-v2/vcek.der");
    let ask = Certificate::all_from_pem_or_der(&read("roots/amd/milan/ask.pem")).unwrap()[0]
        .der()
        .to_vec();
    let guid = |text: &str| hex::decode(text.replace('-', "")).unwrap();
    let entries = [
        (guid("63da758d-e664-4564-adc5-f4b93be8accd"), &vcek),
        (guid("4ab7b379-bbac-4fe4-a02f-05aef327c782"), &ask),
    ];
    let mut blob = Vec::new();
    let mut offset = 3 * 24;
    for (g, data) in &entries {
        blob.extend_from_slice(g);
        blob.extend_from_slice(&u32::try_from(offset).unwrap().to_le_bytes());
        blob.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        offset += data.len();
    }
    blob.extend_from_slice(&[0u8; 24]);
    for (_, data) in &entries {
        blob.extend_from_slice(data);
    }
    let table = veil_attestation::tsm::snp_certificate_table(&blob).unwrap();
    let kinds: Vec<_> = table.iter().map(|(k, _)| *k).collect();
    use veil_attestation::tsm::SnpCertKind;
    assert_eq!(kinds, [SnpCertKind::Vcek, SnpCertKind::Ask]);
    let ders: Vec<&[u8]> = table.iter().map(|(_, d)| d.as_slice()).collect();
    let chain = SnpChain::from_der(&ders, None, &[], &mut Checks::new()).unwrap();
    assert_eq!(chain.product, snp::Product::Milan);
    for cut in 0..blob.len() {
        let _ = veil_attestation::tsm::snp_certificate_table(&blob[..cut]);
    }
}
