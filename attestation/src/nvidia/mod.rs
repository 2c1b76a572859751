//! NVIDIA H100 (Hopper) confidential-computing evidence, verified offline.
//!
//! The evidence is an SPDM 1.1 `GET_MEASUREMENTS` transcript ([`spdm::GpuReport`])
//! signed by the GPU's per-boot leaf key, with the device certificate chain
//! `GH100 A01 GSP FMC LF` ← `GH100 A01 GSP BROM` ← `NVIDIA GH100 Provisioner ICA 1` ←
//! `NVIDIA GH100 Identity` ← `NVIDIA Device Identity CA` (pinned, embedded).
//!
//! [`verify`] checks, in order, filling a [`Checks`] trail (first failure stops):
//! - `report.parse`: the transcript parses ([`spdm`]);
//! - `chain.shape`, `chain.signature`, `chain.ca`, `chain.root`, `chain.fwid`,
//!   `chain.leaf-key`: the chain leaf → … → the pinned root, and the leaf's FWID
//!   (last 48 bytes of extension 2.23.133.5.4.1);
//! - `chain.validity`: every certificate at the time `at`;
//! - `report.signature`: ECDSA P-384/SHA-384 over request ‖ response-without-signature
//!   with the leaf key;
//! - `report.fwid`: the opaque data's FWID equals the leaf's (a warning when the
//!   firmware puts none in the opaque data, as 535-series drivers do);
//! - `report.nonce`: the request nonce equals the expected one (a warning when none is
//!   given);
//! - `revocation`: every certificate below the root has a current OCSP response with
//!   status good, signed by its issuer or a responder the issuer authorised ([`ocsp`]).
//!   Revoked always fails; missing, unusable or `unknown` status fails unless
//!   [`GpuPolicy::allow_missing_ocsp`] (then a warning). No OCSP responses are
//!   published with the samples, so offline verification normally needs that flag;
//! - `report.opaque`, `policy.driver-version`, `policy.vbios-version`,
//!   `policy.measurements`: the policy;
//! - per RIM: `rim.<kind>.version`, `rim.<kind>.signature` (the enveloped XML-DSig
//!   and its KeyInfo chain to the pinned CoRIM root, valid at the verification time:
//!   [`xmldsig`]), `rim.<kind>.measurements` ([`rim`]), and `policy.rims` when the
//!   policy requires both RIMs.
//!
//! **Not done:** OCSP of the RIM signing chain (a RIM's signer is checked for validity
//! at the verification time, not for revocation).
//!
//! **Relay:** see [`RELAY_CAVEAT`].

pub mod ocsp;
pub mod opaque;
pub mod rim;
pub mod spdm;
pub mod xmldsig;

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use ocsp::{CertStatus, OcspError, OcspResponse};
pub use opaque::{OpaqueData, OpaqueField};
pub use rim::{Rim, RimComparison, RimError, RimKind, RimMismatch};
pub use spdm::{GpuReport, MeasurementBlock, Request, SpdmError};

use crate::checks::Checks;
use crate::x509::{Certificate, KeyKind, X509Error};

/// The leaf certificate's TCG DICE TcbInfo extension, whose last 48 bytes are the FWID.
pub const FWID_OID: &str = "2.23.133.5.4.1";

/// H100 evidence is not bound to the device it travels through: the SPDM transcript
/// proves a genuine GPU in CC mode produced it for the nonce, but a host can relay
/// another GPU's evidence (until TDISP/TEE-IO binds the device to the CVM). veil binds
/// the nonce to its keys, so relayed evidence must at least be fresh for this enclave.
pub const RELAY_CAVEAT: &str = "H100 GPU evidence is not bound to the PCIe device the CVM uses: a host can relay evidence from another genuine GPU (no device binding before TDISP)";

const DEVICE_ROOT_PEM: &[u8] = include_bytes!("../../roots/nvidia/NVIDIA_Device_Identity_CA.pem");
const RIM_ROOT_PEM: &[u8] = include_bytes!("../../roots/nvidia/NVIDIA_CoRIM_Signing_Root_CA.pem");

/// Why GPU evidence was refused. [`GpuError::check`] names the failed check as it
/// appears in the [`Checks`] trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// The transcript does not parse.
    #[error("report.parse: {0}")]
    Report(#[from] SpdmError),
    /// A certificate check failed.
    #[error("{check}: {source}")]
    Certificate {
        /// The check's name.
        check: &'static str,
        /// The certificate error.
        source: X509Error,
    },
    /// The chain's shape or an extension is wrong.
    #[error("{check}: {detail}")]
    Chain {
        /// The check's name.
        check: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A value differs from what it must be.
    #[error("{check}: expected {expected}, found {found}")]
    Mismatch {
        /// The check's name.
        check: &'static str,
        /// What was expected.
        expected: String,
        /// What the evidence says.
        found: String,
    },
    /// The transcript's signature does not verify with the leaf key.
    #[error("report.signature: {0}")]
    Signature(String),
    /// Revocation could not be established.
    #[error("revocation: {0}")]
    Revocation(String),
    /// A RIM that does not parse.
    #[error("rim.parse: {0}")]
    RimParse(RimError),
    /// A RIM check failed (version, signature, or the report does not match it).
    #[error("{check}: RIM {rim_version} ({kind}; report {report_version}): {detail}")]
    Rim {
        /// The check's name (`rim.vbios.measurements`...).
        check: &'static str,
        /// The RIM's kind.
        kind: RimKind,
        /// The RIM's `colloquialVersion`.
        rim_version: String,
        /// The report's version of that firmware.
        report_version: String,
        /// What differs.
        detail: String,
        /// The RIM indices that mismatch (empty for a version check).
        indices: Vec<u32>,
    },
}

impl GpuError {
    /// The name of the failed check.
    #[must_use]
    pub fn check(&self) -> &'static str {
        match self {
            GpuError::Report(_) => "report.parse",
            GpuError::Certificate { check, .. }
            | GpuError::Chain { check, .. }
            | GpuError::Mismatch { check, .. }
            | GpuError::Rim { check, .. } => check,
            GpuError::RimParse(_) => "rim.parse",
            GpuError::Signature(_) => "report.signature",
            GpuError::Revocation(_) => "revocation",
        }
    }
}

fn fail<T>(checks: &mut Checks, err: GpuError) -> Result<T, GpuError> {
    checks.fail(err.check(), err.to_string());
    Err(err)
}

fn mismatch<T>(
    checks: &mut Checks,
    check: &'static str,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Result<T, GpuError> {
    fail(
        checks,
        GpuError::Mismatch {
            check,
            expected: expected.into(),
            found: found.into(),
        },
    )
}

fn parse_one(pem: &[u8]) -> Result<Certificate, X509Error> {
    Certificate::all_from_pem_or_der(pem)?
        .into_iter()
        .next()
        .ok_or(X509Error::Empty)
}

/// The pinned `NVIDIA Device Identity CA` (parsed once per process).
///
/// # Errors
/// Only if the embedded PEM does not parse (a build defect).
pub fn device_root() -> Result<&'static Certificate, GpuError> {
    static ROOT: OnceLock<Result<Certificate, X509Error>> = OnceLock::new();
    ROOT.get_or_init(|| parse_one(DEVICE_ROOT_PEM))
        .as_ref()
        .map_err(|e| GpuError::Certificate {
            check: "chain.root",
            source: e.clone(),
        })
}

/// The pinned `NVIDIA CoRIM signing Root CA`, root of the RIM signing chain.
///
/// # Errors
/// Only if the embedded PEM does not parse (a build defect).
pub fn rim_root() -> Result<&'static Certificate, GpuError> {
    static ROOT: OnceLock<Result<Certificate, X509Error>> = OnceLock::new();
    ROOT.get_or_init(|| parse_one(RIM_ROOT_PEM))
        .as_ref()
        .map_err(|e| GpuError::Certificate {
            check: "rim.root",
            source: e.clone(),
        })
}

/// The common name of a subject as x509-parser writes it.
fn cn(subject: &str) -> &str {
    subject
        .split(", ")
        .find_map(|rdn| rdn.strip_prefix("CN="))
        .unwrap_or(subject)
}

/// A device chain whose signatures verified up to the pinned root (validity at a time
/// is checked per verification). Build it once per GPU boot and reuse it.
#[derive(Debug, Clone)]
pub struct GpuChain {
    /// Leaf first, the pinned root last.
    pub certs: Vec<Certificate>,
    /// The FWID of the leaf's extension 2.23.133.5.4.1.
    pub fwid: [u8; 48],
}

impl GpuChain {
    /// The leaf (the key that signs the transcript).
    #[must_use]
    pub fn leaf(&self) -> Option<&Certificate> {
        self.certs.first()
    }

    /// Build a chain from a PEM bundle (or one DER certificate), leaf first.
    ///
    /// # Errors
    /// As [`GpuChain::from_certificates`]; unparsable input fails `chain.parse`.
    pub fn from_pem_or_der(input: &[u8], checks: &mut Checks) -> Result<Self, GpuError> {
        match Certificate::all_from_pem_or_der(input) {
            Ok(certs) => Self::from_certificates(certs, checks),
            Err(source) => fail(
                checks,
                GpuError::Certificate {
                    check: "chain.parse",
                    source,
                },
            ),
        }
    }

    /// Build and verify the chain from certificates leaf first; the pinned root may
    /// end the list or be left out (it is always the pinned one).
    ///
    /// # Errors
    /// The first failed check, also recorded in `checks`.
    pub fn from_certificates(
        mut certs: Vec<Certificate>,
        checks: &mut Checks,
    ) -> Result<Self, GpuError> {
        let root = match device_root() {
            Ok(r) => r,
            Err(e) => return fail(checks, e),
        };
        if certs.last().is_some_and(|c| c.der() == root.der()) {
            certs.pop();
        }
        if certs.is_empty() {
            return fail(
                checks,
                GpuError::Chain {
                    check: "chain.shape",
                    detail: "the chain needs the device's signing certificate and its issuers, not only the root".to_owned(),
                },
            );
        }
        checks.pass(
            "chain.shape",
            format!("{} certificates below the pinned root", certs.len()),
        );
        for pair in certs.windows(2) {
            let [child, issuer] = pair else { continue };
            if let Err(source) = child.verify_issued_by(issuer) {
                return fail(
                    checks,
                    GpuError::Certificate {
                        check: "chain.signature",
                        source,
                    },
                );
            }
            if !issuer.is_ca() {
                return fail(
                    checks,
                    GpuError::Chain {
                        check: "chain.ca",
                        detail: format!(
                            "{} issues {} but is not a CA",
                            issuer.subject(),
                            child.subject()
                        ),
                    },
                );
            }
        }
        let Some(top) = certs.last() else {
            return fail(
                checks,
                GpuError::Chain {
                    check: "chain.shape",
                    detail: "empty chain".to_owned(),
                },
            );
        };
        if let Err(source) = top.verify_issued_by(root) {
            return fail(
                checks,
                GpuError::Certificate {
                    check: "chain.root",
                    source,
                },
            );
        }
        let names: Vec<&str> = certs.iter().map(|c| cn(c.subject())).collect();
        checks.pass("chain.signature", names.join(" ← "));
        checks.pass("chain.ca", "every issuer is a CA");
        checks.pass(
            "chain.root",
            format!("issued by the pinned {}", cn(root.subject())),
        );
        certs.push(root.clone());

        let Some(leaf) = certs.first() else {
            return fail(
                checks,
                GpuError::Chain {
                    check: "chain.shape",
                    detail: "empty chain".to_owned(),
                },
            );
        };
        let Some(ext) = leaf.extension(FWID_OID) else {
            return fail(
                checks,
                GpuError::Chain {
                    check: "chain.fwid",
                    detail: format!(
                        "FWID extension {FWID_OID} not found in the signing certificate {}",
                        leaf.subject()
                    ),
                },
            );
        };
        let fwid = ext
            .value
            .len()
            .checked_sub(50)
            .and_then(|at| ext.value.get(at..))
            .and_then(|tail| tail.split_first_chunk::<2>())
            .filter(|(tag, _)| **tag == [0x04, 0x30])
            .and_then(|(_, digest)| <[u8; 48]>::try_from(digest).ok());
        let Some(fwid) = fwid else {
            return fail(
                checks,
                GpuError::Chain {
                    check: "chain.fwid",
                    detail: format!("extension {FWID_OID} does not end in a 48-byte OCTET STRING"),
                },
            );
        };
        checks.pass("chain.fwid", hex::encode(fwid));
        if leaf.key_kind() != KeyKind::EcP384 {
            return mismatch(
                checks,
                "chain.leaf-key",
                "an ECDSA P-384 key",
                format!("{:?}", leaf.key_kind()),
            );
        }
        checks.pass("chain.leaf-key", "ECDSA P-384");
        Ok(Self { certs, fwid })
    }

    /// Check every certificate's validity at `at`.
    ///
    /// # Errors
    /// `chain.validity` naming the certificate.
    pub fn check_valid_at(&self, at: OffsetDateTime, checks: &mut Checks) -> Result<(), GpuError> {
        for c in &self.certs {
            if let Err(source) = c.check_valid_at(at) {
                return fail(
                    checks,
                    GpuError::Certificate {
                        check: "chain.validity",
                        source,
                    },
                );
            }
        }
        let when = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| at.to_string());
        checks.pass(
            "chain.validity",
            format!("every certificate valid at {when}"),
        );
        Ok(())
    }
}

/// One reference measurement of the policy: SPDM block `index` must equal `value`
/// (several entries with one index are alternatives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceMeasurement {
    /// The SPDM measurement block index (1-based).
    pub index: u8,
    /// The expected value, hex.
    pub value: String,
}

/// What a verifier accepts from an H100. Unknown keys are errors; the default pins
/// nothing but refuses evidence without OCSP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuPolicy {
    /// Refuse a bundle that carries no GPU evidence (an enclave that may run on the
    /// CPU only is not accepted). Not by default.
    pub required: bool,
    /// Accept evidence whose device chain lacks a current, good OCSP status (no
    /// response, an unusable one, or status unknown), with a warning. Not by default;
    /// a revoked status always fails.
    pub allow_missing_ocsp: bool,
    /// Accepted driver versions (`550.90.07`); empty accepts any.
    pub driver_versions: Vec<String>,
    /// Accepted VBIOS versions (`96.00.9f.00.01`, case-insensitive); empty accepts any.
    pub vbios_versions: Vec<String>,
    /// Reference measurements by SPDM block index; empty checks none.
    pub measurements: Vec<ReferenceMeasurement>,
    /// Require a driver RIM and a VBIOS RIM, both matching.
    pub require_rims: bool,
}

/// What a RIM comparison found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimResult {
    /// Driver or VBIOS.
    pub kind: RimKind,
    /// The RIM's `colloquialVersion`.
    pub version: String,
    /// Whether the RIM's XML-DSig verified to the pinned CoRIM root (always `true` in a
    /// successful result: a RIM whose signature fails fails verification).
    pub signature_verified: bool,
    /// Active RIM indices that matched.
    pub matched: Vec<u32>,
}

/// What verified GPU evidence says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuVerified {
    /// The request nonce, hex.
    pub nonce: String,
    /// Driver version.
    pub driver_version: String,
    /// VBIOS version, lowercase.
    pub vbios_version: String,
    /// Project (`1010`).
    pub project: Option<String>,
    /// Project SKU (`0200`).
    pub project_sku: Option<String>,
    /// Chip SKU (`882`).
    pub chip_sku: Option<String>,
    /// The FWID of the leaf certificate, hex.
    pub fwid: String,
    /// Whether the opaque data carried the FWID too (and it matched).
    pub opaque_fwid: bool,
    /// The number of measurement blocks.
    pub measurement_count: usize,
    /// The leaf certificate's subject.
    pub leaf_subject: String,
    /// The RIMs compared.
    pub rims: Vec<RimResult>,
    /// Always `true` on H100: see [`RELAY_CAVEAT`].
    pub relayable: bool,
}

/// Everything besides the transcript and the chain that verification uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct References<'a> {
    /// The nonce the transcript must carry (veil's `gpu_nonce`); `None` warns.
    pub expected_nonce: Option<&'a [u8; 32]>,
    /// RIMs (driver and/or VBIOS) to compare with.
    pub rims: &'a [Rim],
    /// DER OCSP responses for the device chain.
    pub ocsp: &'a [Vec<u8>],
}

/// Parse the transcript (binary or hex), recording `report.parse`.
///
/// # Errors
/// [`GpuError::Report`].
pub fn parse_report(report: &[u8], checks: &mut Checks) -> Result<GpuReport, GpuError> {
    match GpuReport::from_bytes_or_hex(report) {
        Ok(r) => {
            checks.pass(
                "report.parse",
                format!(
                    "SPDM 1.1 GET_MEASUREMENTS, {} blocks, {} opaque fields",
                    r.blocks.len(),
                    r.opaque.fields.len()
                ),
            );
            Ok(r)
        }
        Err(e) => fail(checks, GpuError::Report(e)),
    }
}

/// Verify a transcript (binary or hex) with its certificate chain (PEM or DER, leaf
/// first) at time `at`. Every check is recorded in `checks`; the first failure stops.
///
/// # Errors
/// The first failed check.
pub fn verify(
    report: &[u8],
    certs: &[u8],
    refs: &References<'_>,
    policy: &GpuPolicy,
    at: OffsetDateTime,
    checks: &mut Checks,
) -> Result<GpuVerified, GpuError> {
    let parsed = parse_report(report, checks)?;
    let chain = GpuChain::from_pem_or_der(certs, checks)?;
    verify_parsed(&parsed, &chain, refs, policy, at, checks)
}

/// Verify a parsed transcript with a chain built by [`GpuChain::from_certificates`].
///
/// # Errors
/// The first failed check.
pub fn verify_parsed(
    report: &GpuReport,
    chain: &GpuChain,
    refs: &References<'_>,
    policy: &GpuPolicy,
    at: OffsetDateTime,
    checks: &mut Checks,
) -> Result<GpuVerified, GpuError> {
    chain.check_valid_at(at, checks)?;
    let Some(leaf) = chain.leaf() else {
        return fail(
            checks,
            GpuError::Chain {
                check: "chain.shape",
                detail: "empty chain".to_owned(),
            },
        );
    };
    if let Err(e) = leaf.verify_with_key(
        &ring::signature::ECDSA_P384_SHA384_FIXED,
        report.signed_bytes(),
        &report.signature,
        "the SPDM measurements",
    ) {
        return fail(checks, GpuError::Signature(e.to_string()));
    }
    checks.pass(
        "report.signature",
        format!("signed by {}", cn(leaf.subject())),
    );

    let opaque_fwid = match report.opaque.fwid() {
        Some(f) => {
            let same: bool = subtle::ConstantTimeEq::ct_eq(f, &chain.fwid[..]).into();
            if !same {
                return mismatch(
                    checks,
                    "report.fwid",
                    format!("the leaf certificate's FWID {}", hex::encode(chain.fwid)),
                    hex::encode(f),
                );
            }
            checks.pass("report.fwid", "opaque FWID equals the leaf certificate's");
            true
        }
        None => {
            checks.warn(
                "report.fwid",
                "no FWID in the opaque data (older firmware); the leaf certificate's FWID is reported",
            );
            false
        }
    };

    match refs.expected_nonce {
        Some(expected) => {
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(&expected[..], &report.request.nonce[..]).into();
            if !same {
                return mismatch(
                    checks,
                    "report.nonce",
                    hex::encode(expected),
                    hex::encode(report.request.nonce),
                );
            }
            checks.pass("report.nonce", "the request nonce equals the expected one");
        }
        None => checks.warn("report.nonce", "no expected nonce given; not checked"),
    }

    check_revocation(refs.ocsp, &chain.certs, policy, at, checks)?;

    let (Some(driver), Some(vbios)) = (
        report.opaque.driver_version(),
        report.opaque.vbios_version(),
    ) else {
        return mismatch(
            checks,
            "report.opaque",
            "a driver version and a VBIOS version in the opaque data",
            format!(
                "driver {:?}, VBIOS {:?}",
                report.opaque.driver_version(),
                report.opaque.vbios_version()
            ),
        );
    };
    checks.pass("report.opaque", format!("driver {driver}, VBIOS {vbios}"));
    if !policy.driver_versions.is_empty() && !policy.driver_versions.contains(&driver) {
        return mismatch(
            checks,
            "policy.driver-version",
            format!("one of {:?}", policy.driver_versions),
            driver,
        );
    }
    checks.pass("policy.driver-version", driver.clone());
    if !policy.vbios_versions.is_empty()
        && !policy
            .vbios_versions
            .iter()
            .any(|v| v.eq_ignore_ascii_case(&vbios))
    {
        return mismatch(
            checks,
            "policy.vbios-version",
            format!("one of {:?}", policy.vbios_versions),
            vbios,
        );
    }
    checks.pass("policy.vbios-version", vbios.clone());
    check_measurements(report, &policy.measurements, checks)?;

    let mut rims = Vec::new();
    for r in refs.rims {
        rims.push(check_rim(report, r, &driver, &vbios, at, checks)?);
    }
    if policy.require_rims {
        let have = |k: RimKind| rims.iter().any(|r: &RimResult| r.kind == k);
        if !have(RimKind::Driver) || !have(RimKind::Vbios) {
            return mismatch(
                checks,
                "policy.rims",
                "a matching driver RIM and a matching VBIOS RIM",
                format!(
                    "driver RIM {}, VBIOS RIM {}",
                    if have(RimKind::Driver) {
                        "present"
                    } else {
                        "missing"
                    },
                    if have(RimKind::Vbios) {
                        "present"
                    } else {
                        "missing"
                    }
                ),
            );
        }
        checks.pass("policy.rims", "driver and VBIOS RIMs matched");
    }

    Ok(GpuVerified {
        nonce: hex::encode(report.request.nonce),
        driver_version: driver,
        vbios_version: vbios,
        project: report.opaque.project(),
        project_sku: report.opaque.project_sku(),
        chip_sku: report.opaque.chip_sku(),
        fwid: hex::encode(chain.fwid),
        opaque_fwid,
        measurement_count: report.blocks.len(),
        leaf_subject: leaf.subject().to_owned(),
        rims,
        relayable: true,
    })
}

/// The `revocation` check: every certificate of `certs` (leaf first, each issued by the
/// next) except the last needs a current, signed OCSP status among `ocsp` (DER). Good
/// passes; revoked fails always; unknown or missing fails unless
/// [`GpuPolicy::allow_missing_ocsp`] (then a warning).
///
/// # Errors
/// [`GpuError::Revocation`].
pub fn check_revocation(
    ocsp: &[Vec<u8>],
    certs: &[Certificate],
    policy: &GpuPolicy,
    at: OffsetDateTime,
    checks: &mut Checks,
) -> Result<(), GpuError> {
    let mut parsed = Vec::with_capacity(ocsp.len());
    for (i, der) in ocsp.iter().enumerate() {
        match OcspResponse::from_der(der) {
            Ok(r) => parsed.push(r),
            Err(e) => {
                return fail(
                    checks,
                    GpuError::Revocation(format!("OCSP response {i}: {e}")),
                );
            }
        }
    }
    let mut good = Vec::new();
    let mut missing = Vec::new();
    // Every certificate below the root needs a current, signed status.
    for pair in certs.windows(2) {
        let [cert, issuer] = pair else { continue };
        let mut status = None;
        let mut problem = None;
        for r in &parsed {
            match r.status_of(cert, issuer, at) {
                Ok(s) => {
                    status = Some(s);
                    break;
                }
                Err(OcspError::NotCovered(_)) => {}
                Err(e) => problem = Some(e.to_string()),
            }
        }
        let name = cn(cert.subject());
        match status {
            Some(CertStatus::Good) => good.push(name),
            Some(CertStatus::Revoked(when)) => {
                return fail(
                    checks,
                    GpuError::Revocation(format!(
                        "{} is revoked (since {when}) according to OCSP",
                        cert.subject()
                    )),
                );
            }
            Some(CertStatus::Unknown) => missing.push(format!("{name}: OCSP status unknown")),
            None => missing.push(problem.unwrap_or_else(|| format!("{name}: no OCSP response"))),
        }
    }
    if missing.is_empty() {
        checks.pass("revocation", format!("OCSP: good for {}", good.join(", ")));
        return Ok(());
    }
    let problem = missing.join("; ");
    if policy.allow_missing_ocsp {
        checks.warn(
            "revocation",
            format!("{problem}; revocation not established (allowed by policy)"),
        );
        Ok(())
    } else {
        fail(checks, GpuError::Revocation(problem))
    }
}

fn check_measurements(
    report: &GpuReport,
    reference: &[ReferenceMeasurement],
    checks: &mut Checks,
) -> Result<(), GpuError> {
    if reference.is_empty() {
        checks.pass("policy.measurements", "none pinned");
        return Ok(());
    }
    let mut indices: Vec<u8> = reference.iter().map(|r| r.index).collect();
    indices.sort_unstable();
    indices.dedup();
    for index in &indices {
        let accepted: Vec<&str> = reference
            .iter()
            .filter(|r| r.index == *index)
            .map(|r| r.value.as_str())
            .collect();
        let found = report.block(*index).map(|b| hex::encode(&b.value));
        let ok = found
            .as_deref()
            .is_some_and(|f| accepted.iter().any(|a| a.eq_ignore_ascii_case(f)));
        if !ok {
            return mismatch(
                checks,
                "policy.measurements",
                format!("block {index}: one of {accepted:?}"),
                found.unwrap_or_else(|| "no such block".to_owned()),
            );
        }
    }
    checks.pass(
        "policy.measurements",
        format!("{} pinned blocks match", indices.len()),
    );
    Ok(())
}

fn rim_check(kind: RimKind, what: &str) -> &'static str {
    match (kind, what) {
        (RimKind::Driver, "version") => "rim.driver.version",
        (RimKind::Driver, "signature") => "rim.driver.signature",
        (RimKind::Driver, _) => "rim.driver.measurements",
        (RimKind::Vbios, "version") => "rim.vbios.version",
        (RimKind::Vbios, "signature") => "rim.vbios.signature",
        (RimKind::Vbios, _) => "rim.vbios.measurements",
    }
}

fn check_rim(
    report: &GpuReport,
    r: &Rim,
    driver: &str,
    vbios: &str,
    at: OffsetDateTime,
    checks: &mut Checks,
) -> Result<RimResult, GpuError> {
    let report_version = match r.kind {
        RimKind::Driver => driver,
        RimKind::Vbios => vbios,
    };
    let err = |what: &str, detail: String, indices: Vec<u32>| GpuError::Rim {
        check: rim_check(r.kind, what),
        kind: r.kind,
        rim_version: r.version.clone(),
        report_version: report_version.to_owned(),
        detail,
        indices,
    };
    if !r.version.eq_ignore_ascii_case(report_version) {
        return fail(
            checks,
            err("version", "the versions differ".to_owned(), Vec::new()),
        );
    }
    checks.pass(
        rim_check(r.kind, "version"),
        format!("{} RIM {} = report", r.kind, r.version),
    );
    let root = match rim_root() {
        Ok(root) => root,
        Err(e) => return fail(checks, e),
    };
    match xmldsig::verify_enveloped(&r.xml, root, at) {
        Ok(signer) => checks.pass(
            rim_check(r.kind, "signature"),
            format!(
                "XML-DSig ECDSA-SHA384, the whole RIM: {}",
                signer.chain.join(" ← ")
            ),
        ),
        Err(e) => {
            return fail(checks, err("signature", e.to_string(), Vec::new()));
        }
    }
    let cmp = r.compare(report);
    if let Some(first) = cmp.mismatched.first() {
        let detail = format!(
            "{} of {} active measurements differ (RIM indices {:?}); first: {first}",
            cmp.mismatched.len(),
            cmp.mismatched.len() + cmp.matched.len(),
            cmp.mismatched_indices()
        );
        return fail(
            checks,
            err("measurements", detail, cmp.mismatched_indices()),
        );
    }
    checks.pass(
        rim_check(r.kind, "measurements"),
        format!("{} active measurements match", cmp.matched.len()),
    );
    Ok(RimResult {
        kind: r.kind,
        version: r.version.clone(),
        signature_verified: true,
        matched: cmp.matched,
    })
}
