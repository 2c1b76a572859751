//! claims-core against its committed vector; bundles of the simulated TEE through
//! verification, and every way a substituted key or stale evidence must fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use time::OffsetDateTime;
use veil_attestation::bundle::{self, Bundle, Evidence, GpuEvidence};
use veil_attestation::bytes::{Base64Bytes, Sha256Digest};
use veil_attestation::channel::{
    AeadKind, KeyConfigList, Limits, Request, Response, ServerKeys, Target,
};
use veil_attestation::checks::{Checks, Outcome};
use veil_attestation::claims::{ClaimsCore, ModelManifest, Platform};
use veil_attestation::receipt::{ReceiptPublicKey, ReceiptSigner};
use veil_attestation::sim::SimPlatform;
use veil_attestation::verify::{Policy, VerifyError, verify_bundle, verify_bundle_with_checks};

fn vector() -> serde_json::Value {
    common::read_json(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/claims-core-v1.json"),
    )
}

#[test]
fn claims_core_matches_the_committed_vector() {
    let v = vector();
    let inp = &v["inputs"];
    let exp = &v["expected"];
    let list = KeyConfigList::parse(&common::hex_field(inp, &["key_configs_hex"])).unwrap();
    let pk: ReceiptPublicKey = inp["receipt_public_key"].as_str().unwrap().parse().unwrap();
    let manifest: ModelManifest = serde_json::from_value(inp["model_manifest"].clone()).unwrap();
    let digest = manifest.digest();
    assert_eq!(
        digest.to_string(),
        exp["model_manifest_digest"].as_str().unwrap()
    );
    let core = ClaimsCore {
        key_configs: &list,
        receipt_public_key: &pk,
        model_manifest_digest: &digest,
        platform: Platform::Sim,
        enclave_version: inp["enclave_version"].as_str().unwrap(),
    };
    assert_eq!(
        hex::encode(core.to_bytes()),
        exp["claims_core"].as_str().unwrap()
    );
    assert_eq!(
        core.gpu_nonce().to_string(),
        exp["gpu_nonce"].as_str().unwrap()
    );

    let gpu = vec![Evidence::NvidiaGpu(GpuEvidence {
        report: Base64Bytes(common::hex_field(inp, &["gpu_one_report_hex"])),
        certificate_chain: Base64Bytes(common::hex_field(inp, &["gpu_one_certificate_chain_hex"])),
        ocsp: vec![],
        rims: vec![],
    })];
    for (case, gpus) in exp["cases"].as_array().unwrap().iter().zip([vec![], gpu]) {
        assert_eq!(
            hex::encode(bundle::gpu_evidence_bytes(&gpus)),
            case["gpu_evidence_bytes"].as_str().unwrap()
        );
        let gd = bundle::gpu_evidence_digest(&gpus);
        assert_eq!(
            gd.to_string(),
            case["gpu_evidence_digest"].as_str().unwrap()
        );
        let produced_at = time::OffsetDateTime::parse(
            inp["produced_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(
            core.report_data(&gd, produced_at).to_string(),
            case["report_data"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}

struct Enclave {
    keys: ServerKeys,
    receipts: ReceiptSigner,
    sim: SimPlatform,
    manifest: ModelManifest,
}

impl Enclave {
    fn new() -> Self {
        let mut manifest = ModelManifest::default();
        manifest
            .files
            .insert("chat/model.gguf".into(), Sha256Digest::of(b"weights"));
        Self {
            keys: ServerKeys::generate().unwrap(),
            receipts: ReceiptSigner::generate().unwrap(),
            sim: SimPlatform::new().unwrap(),
            manifest,
        }
    }

    fn bundle(&self, at: OffsetDateTime) -> Bundle {
        Bundle::assemble(
            self.keys.configs(),
            self.receipts.public_key(),
            self.manifest.clone(),
            Platform::Sim,
            "0.1.0",
            |_| Ok::<_, std::convert::Infallible>(vec![]),
            |rd| Ok(Evidence::Sim(self.sim.evidence(rd))),
            at,
        )
        .unwrap()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap()
}

#[test]
fn default_policy_rejects_the_simulated_tee() {
    let e = Enclave::new();
    let b = e.bundle(now());
    assert!(matches!(
        verify_bundle(&b, &Policy::default(), now()),
        Err(VerifyError::SimulatedNotAllowed)
    ));
    let json = serde_json::to_string(&b).unwrap();
    assert!(json.contains("\"simulated\":true") && json.contains("SIMULATED TEE"));
    assert!(json.contains("\"type\":\"sim\""));
    assert!(Platform::Sim.to_string().contains("SIMULATED"));
}

#[test]
fn a_verified_sim_bundle_gives_a_target_that_round_trips() {
    let e = Enclave::new();
    let b = Bundle::parse(e.bundle(now()).to_json().unwrap().as_bytes()).unwrap();
    let id = verify_bundle(&b, &Policy::insecure_allow_sim(), now()).unwrap();
    assert!(id.is_simulated());
    assert_eq!(id.receipt_public_key(), &e.receipts.public_key());
    let target = Target::preferred(&id).unwrap();
    assert_eq!(
        target.key_id(),
        e.keys.configs().configs()[1].id(),
        "X-Wing preferred"
    );
    let target = Target::new(
        &id,
        &e.keys.configs().configs()[0].id(),
        AeadKind::ChaCha20Poly1305,
    )
    .unwrap();
    let (sealed, pending) = target
        .seal_request(&Request::new("GET", "/v1/models", vec![]))
        .unwrap();
    let (_, sealer) = e
        .keys
        .open_request(&target.key_id(), &sealed, &Limits::default())
        .unwrap();
    let reply = sealer.seal(&Response::new(200, b"ok".to_vec())).unwrap();
    assert_eq!(pending.open(&reply).unwrap().body, b"ok");
}

#[test]
fn any_substituted_key_fails() {
    let e = Enclave::new();
    let other = Enclave::new();
    let policy = Policy::insecure_allow_sim();

    // Another enclave's HPKE keys.
    let mut b = e.bundle(now());
    let list = other.keys.configs();
    b.claims.key_configs = Base64Bytes(list.as_bytes().to_vec());
    b.claims.key_ids = list.configs().iter().map(|c| c.id()).collect();
    assert!(matches!(
        verify_bundle(&b, &policy, now()),
        Err(VerifyError::Sim(_))
    ));

    // Listed ids that do not match the configurations.
    let mut b = e.bundle(now());
    b.claims.key_ids.reverse();
    assert!(matches!(
        verify_bundle(&b, &policy, now()),
        Err(VerifyError::KeyIdMismatch)
    ));

    // Another receipt key.
    let mut b = e.bundle(now());
    b.claims.receipt_public_key = other.receipts.public_key();
    assert!(matches!(
        verify_bundle(&b, &policy, now()),
        Err(VerifyError::Sim(_))
    ));

    // Other model files.
    let mut b = e.bundle(now());
    b.claims
        .model_manifest
        .files
        .insert("chat/extra.bin".into(), Sha256Digest::of(b"x"));
    assert!(verify_bundle(&b, &policy, now()).is_err());

    // Another version string, or GPU evidence slipped in.
    let mut b = e.bundle(now());
    b.claims.enclave_version = "0.1.1".into();
    assert!(verify_bundle(&b, &policy, now()).is_err());

    // Evidence re-signed by another simulated platform over the same report data is
    // still simulated evidence; but evidence claiming not to be simulated is refused.
    let mut b = e.bundle(now());
    if let Evidence::Sim(s) = &mut b.cpu {
        s.simulated = false;
    }
    assert!(matches!(
        verify_bundle(&b, &policy, now()),
        Err(VerifyError::Sim(_))
    ));
}

#[test]
fn age_platform_and_model_policy() {
    let e = Enclave::new();
    let policy = Policy::insecure_allow_sim();
    let old = now() - time::Duration::days(2);
    assert!(matches!(
        verify_bundle(&e.bundle(old), &policy, now()),
        Err(VerifyError::TooOld { .. })
    ));
    let future = now() + time::Duration::hours(1);
    assert!(matches!(
        verify_bundle(&e.bundle(future), &policy, now()),
        Err(VerifyError::FromTheFuture(_))
    ));

    let mut b = e.bundle(now());
    b.claims.platform = Platform::Snp;
    assert!(matches!(
        verify_bundle(&b, &policy, now()),
        Err(VerifyError::PlatformMismatch { .. })
    ));

    let strict = Policy {
        model_manifest_digests: vec![Sha256Digest::of(b"something else")],
        ..Policy::insecure_allow_sim()
    };
    assert!(matches!(
        verify_bundle(&e.bundle(now()), &strict, now()),
        Err(VerifyError::ModelNotAllowed(_))
    ));
    let exact = Policy {
        model_manifest_digests: vec![e.manifest.digest()],
        ..Policy::insecure_allow_sim()
    };
    verify_bundle(&e.bundle(now()), &exact, now()).unwrap();
}

#[test]
fn snp_evidence_is_verified_up_to_the_key_binding() {
    // A real report and VCEK (virtee/sev's Milan sample): the report's signature, its
    // chain to the pinned ARK and the default policy all pass; its REPORT_DATA binds
    // someone else's keys, not this bundle's claims, so the bundle fails exactly there.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/snp/virtee-sev-milan-v2");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let at = OffsetDateTime::parse(
        "2025-01-01T00:00:00Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let e = Enclave::new();
    let mut b = e.bundle(at);
    b.claims.platform = Platform::Snp;
    b.cpu = Evidence::Snp(bundle::SnpEvidence {
        report: Base64Bytes(read("report.bin")),
        certificates: vec![Base64Bytes(read("vcek.der"))],
    });
    let mut checks = Checks::new();
    let err = verify_bundle_with_checks(&b, &Policy::default(), at, &mut checks).unwrap_err();
    assert!(matches!(err, VerifyError::Snp(_)), "{err}");
    let failure = checks.first_failure().unwrap();
    assert_eq!(failure.name, "report-data", "{checks:?}");
    for passed in [
        "claims.report-data",
        "report.signature",
        "chain.vcek",
        "chip-id",
        "policy.debug",
    ] {
        assert!(
            checks
                .as_slice()
                .iter()
                .any(|c| c.name == passed && c.outcome == Outcome::Pass),
            "{passed} did not pass: {checks:?}"
        );
    }
    // Zeros are not a report.
    b.cpu = Evidence::Snp(bundle::SnpEvidence {
        report: Base64Bytes(vec![0; 1184]),
        certificates: vec![],
    });
    assert!(matches!(
        verify_bundle(&b, &Policy::default(), at),
        Err(VerifyError::Snp(_))
    ));
}

#[test]
fn bundle_json_is_strict() {
    let e = Enclave::new();
    let json = e.bundle(now()).to_json().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["claims"]["extra"] = serde_json::json!(1);
    assert!(
        Bundle::parse(v.to_string().as_bytes()).is_err(),
        "unknown field in claims"
    );
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["cpu"]["extra"] = serde_json::json!(1);
    assert!(
        Bundle::parse(v.to_string().as_bytes()).is_err(),
        "unknown field in evidence"
    );
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["version"] = serde_json::json!(2);
    assert!(matches!(
        Bundle::parse(v.to_string().as_bytes()),
        Err(bundle::BundleError::Version(2))
    ));
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["cpu"]["type"] = serde_json::json!("sgx");
    assert!(Bundle::parse(v.to_string().as_bytes()).is_err());
    for n in (0..json.len()).step_by(7) {
        assert!(Bundle::parse(&json.as_bytes()[..n]).is_err());
    }
    let err = Bundle::parse(b"{\"version\": \"CANARY-secret\"}").unwrap_err();
    assert!(
        !err.to_string().contains("CANARY"),
        "errors never echo content: {err}"
    );
}

/// A bundle carrying real H100 evidence: the bundle binds it (report data over its
/// digest) and verification checks it with the bundle's own GPU nonce. The sample was
/// requested with another nonce, so it verifies up to `gpu0.report.nonce` and fails
/// there, after its signature and chain passed.
#[test]
fn gpu_evidence_in_a_bundle_is_verified_with_the_bundles_gpu_nonce() {
    let e = Enclave::new();
    let dir = common::testdata("nvidia/nvtrust-h100-pcie-sample");
    let report = hex::decode(
        std::fs::read_to_string(dir.join("attestation_report.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let chain = std::fs::read(dir.join("cert_chain.pem")).unwrap();
    let gpu = Evidence::NvidiaGpu(GpuEvidence {
        report: Base64Bytes(report),
        certificate_chain: Base64Bytes(chain),
        ocsp: vec![],
        rims: vec![],
    });
    let b = Bundle::assemble(
        e.keys.configs(),
        e.receipts.public_key(),
        e.manifest.clone(),
        Platform::Sim,
        "0.1.0",
        |_| Ok::<_, std::convert::Infallible>(vec![gpu.clone()]),
        |rd| Ok(Evidence::Sim(e.sim.evidence(rd))),
        now(),
    )
    .unwrap();
    let mut policy = Policy::insecure_allow_sim();
    policy.gpu.allow_missing_ocsp = true;
    let mut checks = Checks::new();
    let err = verify_bundle_with_checks(&b, &policy, now(), &mut checks).unwrap_err();
    assert!(matches!(err, VerifyError::Gpu { index: 0, .. }), "{err}");
    let outcome = |name: &str| {
        checks
            .as_slice()
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.outcome)
    };
    assert_eq!(outcome("sim.signature"), Some(Outcome::Pass));
    assert_eq!(outcome("gpu0.report.signature"), Some(Outcome::Pass));
    assert_eq!(outcome("gpu0.chain.root"), Some(Outcome::Pass));
    assert_eq!(outcome("gpu0.report.nonce"), Some(Outcome::Fail));
    assert_eq!(checks.first_failure().unwrap().name, "gpu0.report.nonce");

    // Under the default GPU policy (no OCSP allowance) it is refused as well.
    let strict = Policy::insecure_allow_sim();
    assert!(matches!(
        verify_bundle(&b, &strict, now()),
        Err(VerifyError::Gpu { index: 0, .. })
    ));

    // A RIM carried in the bundle that does not parse is refused, named.
    let mut with_rim = b.clone();
    if let Some(Evidence::NvidiaGpu(g)) = with_rim.gpus.first_mut() {
        g.rims.push(Base64Bytes(b"<not-a-rim/>".to_vec()));
    }
    let mut checks = Checks::new();
    // (RIMs and OCSP responses are signed by NVIDIA and not part of the binding.)
    let err = verify_bundle_with_checks(&with_rim, &policy, now(), &mut checks).unwrap_err();
    assert!(matches!(err, VerifyError::Gpu { index: 0, .. }), "{err}");
    assert_eq!(checks.first_failure().unwrap().name, "gpu0.rim.parse");

    // Swapping the GPU evidence after the fact breaks the CPU binding first.
    let mut swapped = b.clone();
    swapped.gpus.clear();
    assert!(matches!(
        verify_bundle(&swapped, &policy, now()),
        Err(VerifyError::Sim(_))
    ));

    // A policy that requires a GPU refuses a bundle without one.
    policy.gpu.required = true;
    let mut checks = Checks::new();
    assert!(matches!(
        verify_bundle_with_checks(&e.bundle(now()), &policy, now(), &mut checks),
        Err(VerifyError::GpuRequired)
    ));
    assert_eq!(checks.first_failure().unwrap().name, "policy.gpu-required");
}
