//! Intel TDX quote verification (DCAP, offline, collateral passed in).
//!
//! [`verify`] parses a v4/v5 quote ([`quote::Quote`]), checks the quote signature with
//! the attestation key, the QE report's signature with the PCK key and its binding of
//! the attestation key, the PCK chain to the pinned Intel SGX Root CA with the PCK and
//! Root CA CRLs, the TCB Info and QE Identity (signatures by the TCB Signing chain to the
//! same root, validity windows), selects the TCB level ([`tcb`]), converges the platform,
//! TDX module and QE statuses, and applies a [`TdxPolicy`]. Every step is recorded in a
//! [`Checks`] trail under a stable name.
//!
//! TCB level selection: the first level whose 16 SGX components and PCESVN the PCK
//! certificate's meet (component-wise) and whose 16 TDX components TEE_TCB_SVN meets;
//! then, for TCB Info with `tdxModuleIdentities` and a non-zero module major version
//! (TEE_TCB_SVN\[1\]), the identity `TDX_<major>`'s first level with
//! `isvsvn <= TEE_TCB_SVN[0]`. No matching level is [`TdxError::NoMatchingTcbLevel`].
//!
//! The TD event log, where evidence carries one (the binary CCEL), is checked apart from
//! the quote by [`TdxPolicy::check_event_log`]: replayed ([`eventlog`]) to RTMR 0..=3, each
//! of which must equal the quoted one, and searched for the events the policy pins.
//!
//! Beside verification: [`eventlog`] parses the binary CCEL event log and replays it to
//! RTMRs; [`guest`] collects a quote inside a TD from `/dev/tdx_guest` and the host's
//! Quote Generation Service ([`qgs`], over vsock), the fast alternative to configfs-tsm.

pub mod collateral;
pub mod eventlog;
pub mod guest;
pub mod policy;
pub mod qgs;
pub mod quote;
pub mod tcb;

use ring::signature::ECDSA_P256_SHA256_FIXED;
use time::OffsetDateTime;

pub use collateral::Collateral;
pub use policy::{PinnedEvent, RtmrIndex, TdxPolicy, Xfam};
pub use quote::{Quote, TdReport};
pub use tcb::TcbStatus;

use crate::checks::Checks;
use crate::x509::{Certificate, X509Error};

/// The pinned Intel SGX Root CA (DER).
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("../../roots/intel/Intel_SGX_Root_CA.der");

/// Why a TDX quote was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TdxError {
    /// The quote (or a part of it) ends early.
    #[error("quote truncated in {0}")]
    Truncated(&'static str),
    /// Not a v4 or v5 quote.
    #[error("unsupported quote version {0} (4 and 5 are)")]
    UnsupportedVersion(u16),
    /// Not ECDSA P-256.
    #[error("unsupported attestation key type {0} (2, ECDSA P-256, is)")]
    UnsupportedKeyType(u16),
    /// Not a TDX quote.
    #[error("TEE type {0:#x} is not TDX (0x81)")]
    NotTdx(u32),
    /// A v5 body type other than TD 1.0 / 1.5.
    #[error("unsupported v5 body type {0} (2 = TD 1.0, 3 = TD 1.5)")]
    UnsupportedBodyType(u16),
    /// A v5 body whose size does not match its type.
    #[error("body type {body_type} has size {size}, expected {expected}")]
    BodySize {
        /// Type.
        body_type: u16,
        /// Size given.
        size: usize,
        /// Size of that type.
        expected: usize,
    },
    /// Certification data other than type 6 wrapping type 5.
    #[error("unsupported certification data type {0} (6 wrapping 5 is)")]
    UnsupportedCertData(u16),
    /// The PCK certificate's SGX extensions.
    #[error("PCK certificate SGX extensions: {0}")]
    PckExtensions(String),
    /// Malformed or missing collateral.
    #[error("collateral: {0}")]
    Collateral(String),
    /// A certificate or CRL problem.
    #[error("{what}: {source}")]
    X509 {
        /// Which chain or CRL.
        what: &'static str,
        /// The error.
        source: X509Error,
    },
    /// A signature that does not verify.
    #[error("{0} does not verify")]
    BadSignature(&'static str),
    /// The QE report does not bind the attestation key.
    #[error("QE report data is not SHA-256(attestation key ‖ QE authentication data) ‖ zeros")]
    QeBinding,
    /// Collateral outside its validity window.
    #[error("{what} is not valid at {at} (issueDate {issue_date}, nextUpdate {next_update})")]
    NotCurrent {
        /// Which.
        what: &'static str,
        /// issueDate.
        issue_date: OffsetDateTime,
        /// nextUpdate.
        next_update: OffsetDateTime,
        /// Verification time.
        at: OffsetDateTime,
    },
    /// TCB Info for another platform (FMSPC, PCE id, id/version).
    #[error("TCB Info does not apply: {0}")]
    TcbInfoMismatch(String),
    /// The QE does not match the QE Identity.
    #[error("QE identity: {0}")]
    QeIdentity(String),
    /// No TCB level matches the platform (the TCB is not supported by this TCB Info).
    #[error("no matching TCB level: the platform's TCB is not in the TCB Info")]
    NoMatchingTcbLevel,
    /// The TDX module identity rule failed.
    #[error("TDX module: {0}")]
    TdxModule(String),
    /// A status the policy does not accept.
    #[error("TCB status {0} is not accepted by the policy")]
    TcbStatusRejected(TcbStatus),
    /// An advisory the policy refuses.
    #[error("advisory {0} is refused by the policy")]
    AdvisoryRejected(String),
    /// Another policy check failed.
    #[error("{0}")]
    Policy(String),
    /// The TD event log (CCEL) does not parse.
    #[error("event log: {0}")]
    EventLog(eventlog::CcelError),
    /// The TD event log is larger than the bundle allows.
    #[error("event log of {size} bytes exceeds the limit of {limit}")]
    EventLogTooLarge {
        /// Its size.
        size: usize,
        /// The limit ([`crate::bundle::MAX_TDX_CCEL`]).
        limit: usize,
    },
    /// The TD event log does not replay to the quoted RTMRs: an attack, or a broken host.
    #[error(
        "event log: replayed RTMR{rtmr} {replayed} is not the quoted {quoted}{}",
        also_differ(.others)
    )]
    EventLogReplay {
        /// The first RTMR (0..=3) that differs.
        rtmr: usize,
        /// Its replayed value, hex.
        replayed: String,
        /// Its quoted value, hex.
        quoted: String,
        /// The other RTMRs that differ.
        others: Vec<usize>,
    },
    /// The policy requires the TD event log (or pins events) and the evidence has none.
    #[error(
        "policy.event-log: the policy requires the TD event log (CCEL){} and the evidence carries none",
        pinned_note(*.pinned)
    )]
    EventLogRequired {
        /// How many events the policy pins.
        pinned: usize,
    },
    /// An event the policy pins is not in the (replayed) event log.
    #[error(
        "policy.events: no event{} extends RTMR{rtmr} with digest {digest} in the event log",
        event_type.map(|t| format!(" of type {t:#010x}")).unwrap_or_default()
    )]
    EventMissing {
        /// The pinned RTMR (0..=3).
        rtmr: usize,
        /// The pinned SHA-384 digest, hex.
        digest: String,
        /// The pinned event type, when the policy gives one.
        event_type: Option<u32>,
    },
}

fn also_differ(others: &[usize]) -> String {
    others
        .iter()
        .map(|i| format!(" (RTMR{i} differs too)"))
        .collect()
}

fn pinned_note(pinned: usize) -> String {
    if pinned == 0 {
        String::new()
    } else {
        format!(" to find its {pinned} pinned event(s)")
    }
}

/// What a verified quote says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxVerified {
    /// Quote version (4 or 5).
    pub version: u16,
    /// The TD report body (MRTD, RTMRs, REPORTDATA, …).
    pub report: TdReport,
    /// The converged TCB status (platform, TDX module, QE).
    pub tcb_status: TcbStatus,
    /// The platform TCB level's status alone.
    pub platform_status: TcbStatus,
    /// The TDX module's status, where the TCB Info has module identities.
    pub module_status: Option<TcbStatus>,
    /// The QE's status.
    pub qe_status: TcbStatus,
    /// Advisory ids of the matched levels (platform, module, QE), deduplicated, sorted.
    pub advisory_ids: Vec<String>,
    /// The matched platform level's `tcbDate`.
    pub tcb_date: String,
    /// FMSPC from the PCK certificate.
    pub fmspc: [u8; 6],
    /// TCB Info `tcbEvaluationDataNumber`.
    pub tcb_evaluation_data_number: u32,
}

fn x509(what: &'static str) -> impl Fn(X509Error) -> TdxError {
    move |source| TdxError::X509 { what, source }
}

/// Verify `chain` (leaf first; a copy of the root at its end is dropped) up to `root`,
/// valid at `at`; returns the certificates without the root.
fn verify_chain(
    chain: &[Certificate],
    root: &Certificate,
    at: OffsetDateTime,
    what: &'static str,
) -> Result<Vec<Certificate>, TdxError> {
    let certs: Vec<Certificate> = chain
        .iter()
        .filter(|c| c.der() != root.der())
        .cloned()
        .collect();
    if certs.is_empty() {
        return Err(TdxError::Collateral(format!(
            "{what}: no certificate below the root"
        )));
    }
    for (i, cert) in certs.iter().enumerate() {
        if i > 0 && !cert.is_ca() {
            return Err(TdxError::Collateral(format!(
                "{what}: {} issues a certificate but is not a CA",
                cert.subject()
            )));
        }
        let issuer = certs.get(i + 1).unwrap_or(root);
        cert.verify_issued_by(issuer).map_err(x509(what))?;
        cert.check_valid_at(at).map_err(x509(what))?;
    }
    root.check_valid_at(at).map_err(x509(what))?;
    Ok(certs)
}

fn check_window(
    what: &'static str,
    issue_date: OffsetDateTime,
    next_update: OffsetDateTime,
    at: OffsetDateTime,
) -> Result<(), TdxError> {
    if at < issue_date || at > next_update {
        return Err(TdxError::NotCurrent {
            what,
            issue_date,
            next_update,
            at,
        });
    }
    Ok(())
}

fn masked_eq(found: &[u8], expected: &[u8], mask: &[u8]) -> bool {
    found.len() == expected.len()
        && found.len() == mask.len()
        && found
            .iter()
            .zip(expected)
            .zip(mask)
            .all(|((f, e), m)| f & m == e & m)
}

/// Verify a TDX quote with its collateral and a policy at time `at`, filling `checks`.
///
/// # Errors
/// The first failure, also recorded (named) as the last entry of `checks`.
pub fn verify(
    quote_bytes: &[u8],
    collateral: &Collateral,
    policy: &TdxPolicy,
    expected_report_data: Option<&[u8; 64]>,
    at: OffsetDateTime,
    checks: &mut Checks,
) -> Result<TdxVerified, TdxError> {
    let root = checks.record(
        "root.pinned",
        "Intel SGX Root CA (pinned)",
        Certificate::from_der(INTEL_SGX_ROOT_CA_DER).map_err(x509("pinned Intel SGX Root CA")),
    )?;

    // The quote.
    let quote = Quote::parse(quote_bytes);
    let quote = match quote {
        Ok(q) => {
            checks.pass(
                "quote.version",
                format!(
                    "v{}, TD report {} body, ECDSA P-256, {} bytes after the signature data",
                    q.header.version,
                    if q.report.body_type == 3 {
                        "1.5"
                    } else {
                        "1.0"
                    },
                    q.trailing_zeros
                ),
            );
            if q.trailing_nonzero {
                checks.warn(
                    "quote.trailing-data",
                    format!(
                        "{} unsigned bytes after the signature data are not zero padding (ignored)",
                        q.trailing_zeros
                    ),
                );
            }
            q
        }
        Err(e) => {
            checks.fail("quote.version", e.to_string());
            return Err(e);
        }
    };

    // The PCK chain, to the pinned root, and its CRLs.
    let pck_certs = checks.record(
        "pck.chain",
        format!("PCK certificate ← PCK CA ← Intel SGX Root CA, valid at {at}"),
        Certificate::all_from_pem_or_der(&quote.pck_chain_pem)
            .map_err(x509("PCK chain"))
            .and_then(|chain| verify_chain(&chain, &root, at, "PCK chain")),
    )?;
    let (Some(pck), Some(pck_ca)) = (pck_certs.first(), pck_certs.last()) else {
        let err = TdxError::Collateral("PCK chain: empty".to_owned());
        checks.fail("pck.chain", err.to_string());
        return Err(err);
    };
    checks.record(
        "crl.root-ca",
        format!(
            "Root CA CRL signed by the root, current, {} not revoked",
            pck_ca.subject()
        ),
        (|| {
            let crl = &collateral.root_ca_crl;
            crl.verify_issued_by(&root)?;
            crl.check_current_at(at)?;
            for cert in pck_certs.iter().skip(1) {
                crl.check_not_revoked(cert)?;
            }
            for cert in collateral
                .tcb_info
                .chain
                .iter()
                .chain(&collateral.qe_identity.chain)
            {
                if cert.der() != root.der() && cert.issuer() == root.subject() {
                    crl.check_not_revoked(cert)?;
                }
            }
            Ok(())
        })()
        .map_err(x509("Root CA CRL")),
    )?;
    checks.record(
        "pck.crl",
        "PCK CRL signed by the PCK CA, current, PCK certificate not revoked",
        (|| {
            let crl = &collateral.pck_crl;
            let issuer = pck_certs.get(1).unwrap_or(pck_ca);
            crl.verify_issued_by(issuer)?;
            crl.check_current_at(at)?;
            crl.check_not_revoked(pck)
        })()
        .map_err(x509("PCK CRL")),
    )?;

    // The QE report and the quote.
    checks.record(
        "qe-report.signature",
        "QE report signed by the PCK key",
        pck.verify_with_key(
            &ECDSA_P256_SHA256_FIXED,
            &quote.qe_report.raw,
            &quote.qe_report_signature,
            "QE report",
        )
        .map_err(|_| TdxError::BadSignature("QE report signature (PCK key)")),
    )?;
    let binding = {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&quote.attestation_key);
        ctx.update(&quote.qe_auth_data);
        let digest = ctx.finish();
        let (head, tail) = quote.qe_report.report_data.split_at(32);
        if head == digest.as_ref() && tail.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(TdxError::QeBinding)
        }
    };
    checks.record(
        "qe-report.binding",
        "QE report data = SHA-256(attestation key ‖ QE auth data) ‖ zeros",
        binding,
    )?;
    let mut att_key = [0x04u8; 65];
    if let Some(dst) = att_key.get_mut(1..) {
        dst.copy_from_slice(&quote.attestation_key);
    }
    checks.record(
        "quote.signature",
        "header and TD report signed by the attestation key",
        ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &att_key)
            .verify(&quote.signed, &quote.signature)
            .map_err(|_| TdxError::BadSignature("quote signature (attestation key)")),
    )?;

    // The PCK certificate's platform identity.
    let ext = checks.record(
        "pck.extensions",
        "SGX extensions: FMSPC, PCEID, TCB",
        pck.extension(tcb::SGX_EXTENSIONS_OID)
            .ok_or_else(|| TdxError::PckExtensions("missing".to_owned()))
            .and_then(|e| tcb::PckExtensions::parse(&e.value)),
    )?;

    // TCB Info.
    let tcb_info = &collateral.tcb_info;
    checks.record(
        "tcb-info.signature",
        "TCB Info signed by the TCB Signing key ← Intel SGX Root CA",
        verify_chain(&tcb_info.chain, &root, at, "TCB Info issuer chain").and_then(|c| {
            c.first()
                .ok_or(TdxError::BadSignature("TCB Info signature"))?
                .verify_with_key(
                    &ECDSA_P256_SHA256_FIXED,
                    &tcb_info.signed,
                    &tcb_info.signature,
                    "TCB Info",
                )
                .map_err(|_| TdxError::BadSignature("TCB Info signature"))
        }),
    )?;
    checks.record(
        "tcb-info.validity",
        format!(
            "{} … {}",
            tcb_info.body.issue_date, tcb_info.body.next_update
        ),
        check_window("TCB Info", tcb_info.issue_date, tcb_info.next_update, at),
    )?;
    let info = &tcb_info.body;
    let applies = (|| {
        if info.id != "TDX" || info.version < 3 {
            return Err(TdxError::TcbInfoMismatch(format!(
                "id {} version {}, not TDX v3",
                info.id, info.version
            )));
        }
        let fmspc = tcb::hex_exact::<6>(&info.fmspc, "tcbInfo fmspc")?;
        if fmspc != ext.fmspc {
            return Err(TdxError::TcbInfoMismatch(format!(
                "FMSPC {} is not the PCK certificate's {}",
                info.fmspc,
                hex::encode(ext.fmspc)
            )));
        }
        let pce_id = tcb::hex_exact::<2>(&info.pce_id, "tcbInfo pceId")?;
        if pce_id != ext.pce_id {
            return Err(TdxError::TcbInfoMismatch(format!(
                "PCE id {} is not the PCK certificate's {}",
                info.pce_id,
                hex::encode(ext.pce_id)
            )));
        }
        Ok(())
    })();
    checks.record(
        "tcb-info.fmspc",
        format!(
            "TDX TCB Info for FMSPC {} (eval #{})",
            hex::encode(ext.fmspc),
            info.tcb_evaluation_data_number
        ),
        applies,
    )?;

    // QE Identity.
    let qe_identity = &collateral.qe_identity;
    checks.record(
        "qe-identity.signature",
        "QE Identity signed by the TCB Signing key ← Intel SGX Root CA",
        verify_chain(&qe_identity.chain, &root, at, "QE Identity issuer chain").and_then(|c| {
            c.first()
                .ok_or(TdxError::BadSignature("QE Identity signature"))?
                .verify_with_key(
                    &ECDSA_P256_SHA256_FIXED,
                    &qe_identity.signed,
                    &qe_identity.signature,
                    "QE Identity",
                )
                .map_err(|_| TdxError::BadSignature("QE Identity signature"))
        }),
    )?;
    checks.record(
        "qe-identity.validity",
        format!(
            "{} … {}",
            qe_identity.body.issue_date, qe_identity.body.next_update
        ),
        check_window(
            "QE Identity",
            qe_identity.issue_date,
            qe_identity.next_update,
            at,
        ),
    )?;
    let qe = &qe_identity.body;
    let qe_level = (|| {
        if qe.id != "TD_QE" {
            return Err(TdxError::QeIdentity(format!("id {} is not TD_QE", qe.id)));
        }
        let report = &quote.qe_report;
        let signer = tcb::hex_exact::<32>(&qe.mrsigner, "enclaveIdentity mrsigner")?;
        if signer != report.mr_signer {
            return Err(TdxError::QeIdentity(format!(
                "MRSIGNER {} is not {}",
                hex::encode(report.mr_signer),
                qe.mrsigner
            )));
        }
        if qe.isvprodid != report.isv_prod_id {
            return Err(TdxError::QeIdentity(format!(
                "ISVPRODID {} is not {}",
                report.isv_prod_id, qe.isvprodid
            )));
        }
        let misc = tcb::hex_exact::<4>(&qe.miscselect, "miscselect")?;
        let misc_mask = tcb::hex_exact::<4>(&qe.miscselect_mask, "miscselectMask")?;
        if !masked_eq(&report.misc_select.to_be_bytes(), &misc, &misc_mask) {
            return Err(TdxError::QeIdentity(format!(
                "MISCSELECT {:08x} does not match",
                report.misc_select
            )));
        }
        let attrs = tcb::hex_exact::<16>(&qe.attributes, "attributes")?;
        let attrs_mask = tcb::hex_exact::<16>(&qe.attributes_mask, "attributesMask")?;
        if !masked_eq(&report.attributes, &attrs, &attrs_mask) {
            return Err(TdxError::QeIdentity(format!(
                "attributes {} do not match",
                hex::encode(report.attributes)
            )));
        }
        qe.tcb_levels
            .iter()
            .find(|l| l.tcb.isvsvn <= report.isv_svn)
            .cloned()
            .ok_or_else(|| {
                TdxError::QeIdentity(format!("no TCB level for QE ISVSVN {}", report.isv_svn))
            })
    })();
    let qe_level = checks.record(
        "qe-identity",
        format!(
            "TD_QE MRSIGNER, ISVPRODID, MISCSELECT, attributes match; ISVSVN {}",
            quote.qe_report.isv_svn
        ),
        qe_level,
    )?;

    // TCB level.
    let report = &quote.report;
    let platform = checks.record(
        "tcb.platform",
        format!(
            "PCK TCB {} PCESVN {}, TEE_TCB_SVN {}",
            hex::encode(ext.cpu_svn),
            ext.pce_svn,
            hex::encode(report.tee_tcb_svn)
        ),
        tcb::match_platform(info, &ext, &report.tee_tcb_svn),
    )?;
    let module = checks.record(
        "tcb.tdx-module",
        "TDX module identity (MRSIGNERSEAM, SEAM attributes, module SVN)",
        tcb::match_module(
            info,
            &report.tee_tcb_svn,
            &report.mr_signer_seam,
            &report.seam_attributes,
        ),
    )?;
    let mut status = platform.status;
    let mut advisories = platform.advisory_ids.clone();
    let module_status = module.as_ref().map(|(_, l)| l.tcb_status);
    if let Some((_, level)) = &module {
        status = status.converge(level.tcb_status);
        advisories.extend(level.advisory_ids.iter().cloned());
    }
    status = status.converge(qe_level.tcb_status);
    advisories.extend(qe_level.advisory_ids.iter().cloned());
    advisories.sort();
    advisories.dedup();

    policy.check_tcb(status, &advisories, checks)?;
    policy.check_td(report, expected_report_data, checks)?;

    Ok(TdxVerified {
        version: quote.header.version,
        report: quote.report.clone(),
        tcb_status: status,
        platform_status: platform.status,
        module_status,
        qe_status: qe_level.tcb_status,
        advisory_ids: advisories,
        tcb_date: platform.tcb_date,
        fmspc: ext.fmspc,
        tcb_evaluation_data_number: info.tcb_evaluation_data_number,
    })
}
