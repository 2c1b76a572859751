//! AMD SEV-SNP evidence: the attestation report, its VCEK/VLEK chain to the pinned
//! AMD roots, and a policy.
//!
//! Entry points:
//! - [`verify`]: report bytes + DER certificates (VCEK or VLEK, optionally ASK/ASVK
//!   and ARK) → [`SnpVerified`], at a given time, filling a [`Checks`] trail.
//! - [`SnpChain::from_der`] once, then [`verify_with_chain`] for each report: the
//!   chain's signatures are verified once; per report only the validity at `at`, the
//!   report signature, TCB/chip binding and the policy are checked.
//! - [`AttestationReport::from_bytes`]: the panic-free parser alone.
//!
//! The extended-report / configfs-tsm `auxblob` certificate table is read by
//! [`crate::tsm::snp_certificate_table`]. [`guest`] collects a report with that table
//! inside a guest through `/dev/sev-guest`, for kernels without configfs-tsm.
//!
//! The parser is veil's own (no `sev` crate dependency); the `sev` crate is the peer of
//! the benchmark only. Its guest API is not used either: see [`guest`] for why.

pub mod certs;
pub mod guest;
pub mod policy;
pub mod report;

use serde::Serialize;
use time::OffsetDateTime;

pub use certs::{EndorsementKind, PinnedRoots, Product, SnpChain, VekInfo, pinned};
pub use policy::{HostData, KeyDigest, MinTcb, SnpPolicy};
pub use report::{AttestationReport, ReportError, SigningKey, Tcb, TcbVersion};

use crate::checks::Checks;
use crate::x509::X509Error;

/// Why SEV-SNP evidence was refused. [`SnpError::check`] names the failed check as it
/// appears in the [`Checks`] trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnpError {
    /// The report does not parse.
    #[error("report: {0}")]
    Report(#[from] ReportError),
    /// A certificate or CRL check failed.
    #[error("{check}: {source}")]
    Certificate {
        /// The check's name (`chain.vcek`, `validity.ask`...).
        check: &'static str,
        /// The certificate error.
        source: X509Error,
    },
    /// The chain's shape is wrong (missing VCEK, products that disagree...).
    #[error("{check}: {detail}")]
    Chain {
        /// The check's name.
        check: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A VCEK/VLEK extension is missing or malformed.
    #[error("tcb.vcek-extensions: extension {oid}: {detail}")]
    Extension {
        /// The extension's OID.
        oid: &'static str,
        /// What is wrong.
        detail: &'static str,
    },
    /// A report field differs from what it must be.
    #[error("{check}: expected {expected}, found {found}")]
    Mismatch {
        /// The check's name (`report.signature-algorithm`, `chip-id`, `policy.debug`...).
        check: &'static str,
        /// What was expected.
        expected: String,
        /// What the report says.
        found: String,
    },
    /// The report signature does not verify with the VCEK/VLEK.
    #[error("report.signature: {0}")]
    Signature(String),
}

impl SnpError {
    /// The name of the failed check.
    #[must_use]
    pub fn check(&self) -> &'static str {
        match self {
            SnpError::Report(ReportError::Version(_)) => "report.version",
            SnpError::Report(_) => "report.parse",
            SnpError::Certificate { check, .. }
            | SnpError::Chain { check, .. }
            | SnpError::Mismatch { check, .. } => check,
            SnpError::Extension { .. } => "tcb.vcek-extensions",
            SnpError::Signature(_) => "report.signature",
        }
    }
}

/// Record `err` as the failed check and return it.
pub(crate) fn fail<T>(checks: &mut Checks, err: SnpError) -> Result<T, SnpError> {
    checks.fail(err.check(), err.to_string());
    Err(err)
}

fn mismatch<T>(
    checks: &mut Checks,
    check: &'static str,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Result<T, SnpError> {
    fail(
        checks,
        SnpError::Mismatch {
            check,
            expected: expected.into(),
            found: found.into(),
        },
    )
}

/// What a verified report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpVerified {
    /// The product line.
    pub product: Product,
    /// VCEK or VLEK.
    pub signed_by: EndorsementKind,
    /// Report structure version.
    pub version: u32,
    /// `VMPL`.
    pub vmpl: u32,
    /// `GUEST_POLICY`.
    pub policy: u64,
    /// `MEASUREMENT`, hex.
    pub measurement: String,
    /// `REPORT_DATA`, hex.
    pub report_data: String,
    /// `HOST_DATA`, hex.
    pub host_data: String,
    /// `CHIP_ID`, hex.
    pub chip_id: String,
    /// `REPORTED_TCB`, decoded for the product.
    pub reported_tcb: Tcb,
    /// `CURRENT_TCB`, decoded for the product.
    pub current_tcb: Tcb,
    /// Firmware `CURRENT_*` version.
    pub firmware: String,
    /// The raw `MEASUREMENT`.
    #[serde(skip)]
    pub measurement_bytes: [u8; 48],
    /// The raw `REPORT_DATA`.
    #[serde(skip)]
    pub report_data_bytes: [u8; 64],
}

/// Verify an SEV-SNP report with its certificates (DER: the VCEK or VLEK, optionally
/// the ASK/ASVK and the ARK; the ARK is always the pinned one), a policy, the expected
/// `REPORT_DATA` (veil's key binding; `None` records a warning and checks nothing), at
/// time `at`. Every check is recorded in `checks`; the first failure stops.
///
/// # Errors
/// The first failed check.
pub fn verify(
    report: &[u8],
    certs_der: &[&[u8]],
    policy: &SnpPolicy,
    expected_report_data: Option<&[u8; 64]>,
    at: OffsetDateTime,
    checks: &mut Checks,
) -> Result<SnpVerified, SnpError> {
    let parsed = parse_report(report, checks)?;
    let chain = SnpChain::from_der(certs_der, policy.product, &[], checks)?;
    verify_parsed(&parsed, &chain, policy, expected_report_data, at, checks)
}

/// Verify a report with a chain built (and verified) earlier by
/// [`SnpChain::from_der`]; as [`verify`] otherwise.
///
/// # Errors
/// The first failed check.
pub fn verify_with_chain(
    report: &[u8],
    chain: &SnpChain,
    policy: &SnpPolicy,
    expected_report_data: Option<&[u8; 64]>,
    at: OffsetDateTime,
    checks: &mut Checks,
) -> Result<SnpVerified, SnpError> {
    let parsed = parse_report(report, checks)?;
    verify_parsed(&parsed, chain, policy, expected_report_data, at, checks)
}

/// Parse the report, recording `report.version`.
///
/// # Errors
/// [`SnpError::Report`].
pub fn parse_report(report: &[u8], checks: &mut Checks) -> Result<AttestationReport, SnpError> {
    match AttestationReport::from_bytes(report) {
        Ok(r) => {
            checks.pass(
                "report.version",
                format!("version {} (2, 3, 5 supported)", r.version),
            );
            Ok(r)
        }
        Err(e) => fail(checks, SnpError::Report(e)),
    }
}

fn tcb_text(t: &Tcb) -> String {
    let fmc = t.fmc.map(|f| format!("fmc {f}, ")).unwrap_or_default();
    format!(
        "{fmc}bl {}, tee {}, snp {}, ucode {}",
        t.bootloader, t.tee, t.snp, t.microcode
    )
}

/// Verify a parsed report with a verified chain.
///
/// # Errors
/// The first failed check.
pub fn verify_parsed(
    report: &AttestationReport,
    chain: &SnpChain,
    policy: &SnpPolicy,
    expected_report_data: Option<&[u8; 64]>,
    at: OffsetDateTime,
    checks: &mut Checks,
) -> Result<SnpVerified, SnpError> {
    if let Some(p) = policy.product
        && p != chain.product
    {
        return mismatch(checks, "chain.product", p.name(), chain.product.name());
    }
    chain.check_valid_at(at, checks)?;

    // The report's own fields that decide how it is verified.
    if report.signature_algo != report::SIG_ALGO_ECDSA_P384_SHA384 {
        return mismatch(
            checks,
            "report.signature-algorithm",
            "1 (ECDSA P-384 with SHA-384)",
            report.signature_algo.to_string(),
        );
    }
    checks.pass("report.signature-algorithm", "ECDSA P-384 with SHA-384");
    let expected_key = match chain.kind {
        EndorsementKind::Vcek => SigningKey::Vcek,
        EndorsementKind::Vlek => SigningKey::Vlek,
    };
    if report.signing_key != expected_key {
        return mismatch(
            checks,
            "report.signing-key",
            chain.kind.name(),
            format!("{:?}", report.signing_key),
        );
    }
    checks.pass("report.signing-key", chain.kind.name());

    // The signature.
    let Some(sig) = report.signature_p384_fixed() else {
        return fail(
            checks,
            SnpError::Signature(
                "r or s does not fit in 48 bytes, or reserved signature bytes are not zero"
                    .to_owned(),
            ),
        );
    };
    if let Err(e) = chain.vek.verify_with_key(
        &ring::signature::ECDSA_P384_SHA384_FIXED,
        report.signed_bytes(),
        &sig,
        "the attestation report",
    ) {
        return fail(checks, SnpError::Signature(e.to_string()));
    }
    checks.pass(
        "report.signature",
        format!("signed by the {}", chain.kind.name()),
    );

    // CPUID (v3+) agrees with the product.
    if let Some(cpuid) = report.cpuid {
        match cpuid.product() {
            Some(p) if p == chain.product => checks.pass(
                "report.cpuid",
                format!(
                    "family {:#x} model {:#x} stepping {} is {p}",
                    cpuid.family, cpuid.model, cpuid.stepping
                ),
            ),
            other => {
                return mismatch(
                    checks,
                    "report.cpuid",
                    chain.product.name(),
                    format!(
                        "family {:#x} model {:#x} ({})",
                        cpuid.family,
                        cpuid.model,
                        other.map_or("unknown", Product::name)
                    ),
                );
            }
        }
    }

    // TCB and chip binding.
    let reported = report.reported_tcb.decode(chain.product);
    let cert_tcb = chain.info.tcb;
    let fmc_ok = match chain.product {
        Product::Turin => cert_tcb.fmc.is_some() && cert_tcb.fmc == reported.fmc,
        Product::Milan | Product::Genoa => true,
    };
    if !fmc_ok
        || cert_tcb.bootloader != reported.bootloader
        || cert_tcb.tee != reported.tee
        || cert_tcb.snp != reported.snp
        || cert_tcb.microcode != reported.microcode
    {
        return mismatch(
            checks,
            "tcb.vcek-matches-report",
            format!("{} TCB {}", chain.kind.name(), tcb_text(&cert_tcb)),
            format!("REPORTED_TCB {}", tcb_text(&reported)),
        );
    }
    checks.pass("tcb.vcek-matches-report", tcb_text(&reported));

    match (chain.kind, &chain.info.hw_id) {
        (EndorsementKind::Vcek, Some(hw)) => {
            let ok = (hw.len() == 64 || (hw.len() == 8 && chain.product == Product::Turin))
                && report.chip_id.get(..hw.len()) == Some(hw.as_slice())
                && !report.mask_chip_key;
            if !ok {
                return mismatch(
                    checks,
                    "chip-id",
                    format!("VCEK hwID {}", hex::encode(hw)),
                    format!("CHIP_ID {}", hex::encode(report.chip_id)),
                );
            }
            checks.pass(
                "chip-id",
                format!("VCEK hwID = CHIP_ID {}", hex::encode(hw)),
            );
        }
        (EndorsementKind::Vcek, None) => {
            return mismatch(checks, "chip-id", "a VCEK with a hwID", "no hwID extension");
        }
        (EndorsementKind::Vlek, _) => {
            checks.pass("chip-id", "not applicable: a VLEK is not bound to one chip");
        }
    }

    check_policy(
        report,
        reported,
        chain.product,
        policy,
        expected_report_data,
        checks,
    )?;

    let current = report.current_tcb.decode(chain.product);
    Ok(SnpVerified {
        product: chain.product,
        signed_by: chain.kind,
        version: report.version,
        vmpl: report.vmpl,
        policy: report.policy.0,
        measurement: hex::encode(report.measurement),
        report_data: hex::encode(report.report_data),
        host_data: hex::encode(report.host_data),
        chip_id: hex::encode(report.chip_id),
        reported_tcb: reported,
        current_tcb: current,
        firmware: report.current_version.to_string(),
        measurement_bytes: report.measurement,
        report_data_bytes: report.report_data,
    })
}

fn one_of<T: std::fmt::Display>(list: &[T]) -> String {
    let items: Vec<String> = list.iter().map(ToString::to_string).collect();
    format!("one of [{}]", items.join(", "))
}

fn check_policy(
    report: &AttestationReport,
    reported: Tcb,
    product: Product,
    policy: &SnpPolicy,
    expected_report_data: Option<&[u8; 64]>,
    checks: &mut Checks,
) -> Result<(), SnpError> {
    let gp = report.policy;
    if gp.debug() && !policy.allow_debug {
        return mismatch(
            checks,
            "policy.debug",
            "debug disallowed",
            "the guest policy allows debugging",
        );
    }
    checks.pass(
        "policy.debug",
        if gp.debug() {
            "debug allowed by the guest and the policy"
        } else {
            "debug disallowed"
        },
    );
    if gp.migrate_ma() && !policy.allow_migration_agent {
        return mismatch(
            checks,
            "policy.migration-agent",
            "no migration agent",
            "the guest policy allows a migration agent",
        );
    }
    checks.pass(
        "policy.migration-agent",
        if gp.migrate_ma() {
            "allowed by the guest and the policy"
        } else {
            "disallowed"
        },
    );
    let smt = gp.smt_allowed() && report.platform_info.smt_enabled();
    if smt && !policy.allow_smt {
        return mismatch(
            checks,
            "policy.smt",
            "SMT off",
            "SMT allowed by the guest policy and enabled on the platform",
        );
    }
    checks.pass(
        "policy.smt",
        if smt { "SMT on (allowed)" } else { "SMT off" },
    );

    let min = policy.min_tcb;
    let mut low = Vec::new();
    for (name, have, want) in [
        ("bootloader", reported.bootloader, min.bootloader),
        ("tee", reported.tee, min.tee),
        ("snp", reported.snp, min.snp),
        ("microcode", reported.microcode, min.microcode),
    ] {
        if have < want {
            low.push(format!("{name} {have} < {want}"));
        }
    }
    if product == Product::Turin && reported.fmc.unwrap_or(0) < min.fmc {
        low.push(format!("fmc {} < {}", reported.fmc.unwrap_or(0), min.fmc));
    }
    if !low.is_empty() {
        return mismatch(
            checks,
            "policy.min-tcb",
            format!("at least {min:?}"),
            low.join(", "),
        );
    }
    checks.pass(
        "policy.min-tcb",
        format!("REPORTED_TCB {} meets the minimum", tcb_text(&reported)),
    );

    let m = crate::bytes::Measurement(report.measurement);
    if !policy.launch_measurements.is_empty() {
        if !policy.launch_measurements.iter().any(|x| x.ct_eq(&m)) {
            return mismatch(
                checks,
                "policy.measurement",
                one_of(&policy.launch_measurements),
                m.to_string(),
            );
        }
        checks.pass("policy.measurement", m.to_string());
    } else {
        checks.pass("policy.measurement", format!("{m} (any accepted)"));
    }
    let h = HostData(report.host_data);
    if !policy.host_data.is_empty() && !policy.host_data.iter().any(|x| x.ct_eq(&h)) {
        return mismatch(
            checks,
            "policy.host-data",
            one_of(&policy.host_data),
            h.to_string(),
        );
    }
    checks.pass("policy.host-data", h.to_string());

    let id = KeyDigest(report.id_key_digest);
    let has_id = report.id_key_digest != [0u8; 48];
    if (policy.require_id_block || !policy.id_key_digests.is_empty()) && !has_id {
        return mismatch(
            checks,
            "policy.id-key",
            "an ID block",
            "no ID block (zero ID_KEY_DIGEST)",
        );
    }
    if !policy.id_key_digests.is_empty() && !policy.id_key_digests.iter().any(|x| x.ct_eq(&id)) {
        return mismatch(
            checks,
            "policy.id-key",
            one_of(&policy.id_key_digests),
            id.to_string(),
        );
    }
    checks.pass(
        "policy.id-key",
        if has_id {
            id.to_string()
        } else {
            "no ID block".to_owned()
        },
    );
    if !policy.author_key_digests.is_empty() {
        let author = KeyDigest(report.author_key_digest);
        if !report.author_key_en || !policy.author_key_digests.iter().any(|x| x.ct_eq(&author)) {
            return mismatch(
                checks,
                "policy.author-key",
                one_of(&policy.author_key_digests),
                if report.author_key_en {
                    author.to_string()
                } else {
                    "no author key".to_owned()
                },
            );
        }
        checks.pass("policy.author-key", author.to_string());
    }

    if !policy.vmpls.contains(&report.vmpl) {
        return mismatch(
            checks,
            "policy.vmpl",
            one_of(&policy.vmpls),
            report.vmpl.to_string(),
        );
    }
    checks.pass("policy.vmpl", format!("VMPL {}", report.vmpl));

    match expected_report_data {
        Some(expected) => {
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(&expected[..], &report.report_data[..]).into();
            if !same {
                return mismatch(
                    checks,
                    "report-data",
                    hex::encode(expected),
                    hex::encode(report.report_data),
                );
            }
            checks.pass("report-data", "REPORT_DATA equals the expected binding");
        }
        None => checks.warn("report-data", "no expected REPORT_DATA given; not checked"),
    }
    Ok(())
}
