//! Bundle verification against a policy, with the clock as a parameter.
//!
//! Steps, numbered as in [`verify_bundle`]:
//! 1. the bundle version;
//! 2. the key configurations parse, and the listed key ids equal the recomputed ones;
//! 3. the claimed platform matches the CPU evidence; GPU evidence is GPU evidence;
//! 4. `claims-core`, the GPU evidence digest and the report data are recomputed;
//! 5. the CPU evidence verifies and carries that report data (simulated evidence only
//!    when the policy says `insecure_allow_sim`; a TDX event log, when carried, replays
//!    to the quoted RTMRs);
//! 6. the GPU evidence verifies with the GPU nonce;
//! 7. the evidence is not older than the policy allows, nor from the future.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::bundle::{
    Bundle, Evidence, MAX_TDX_CCEL, SnpEvidence, TdxEvidence, gpu_evidence_digest,
};
use crate::bytes::{Measurement, Sha256Digest};
use crate::channel::{ChannelError, KeyConfigList};
use crate::checks::Checks;
use crate::claims::{ClaimsCore, Platform, ReportData};
use crate::nvidia::{GpuError, GpuPolicy, References};
use crate::receipt::ReceiptPublicKey;
use crate::sim::SimError;
use crate::snp::{SnpError, SnpPolicy};
use crate::tdx::{Collateral, TdxError, TdxPolicy};

/// Clock skew tolerated for evidence that claims to come from the future.
pub const MAX_SKEW_SECONDS: i64 = 300;

/// What a client, gateway or auditor accepts. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Accept the simulated TEE. Never by default: it proves nothing.
    pub insecure_allow_sim: bool,
    /// The oldest evidence accepted, in seconds.
    pub max_evidence_age_seconds: u64,
    /// Accepted model manifest digests; empty accepts any.
    pub model_manifest_digests: Vec<Sha256Digest>,
    /// Accepted launch measurements (96 hex digits each: SEV-SNP `MEASUREMENT`, TDX
    /// `MRTD`, or the simulated TEE's digest of its executable); empty accepts any.
    pub launch_measurements: Vec<Measurement>,
    /// What an SEV-SNP report must show (debug, migration, TCB, host data, ...).
    pub snp: SnpPolicy,
    /// What a TDX quote must show (TCB statuses, TD attributes, registers, ...).
    pub tdx: TdxPolicy,
    /// What NVIDIA GPU evidence must show (required or not, OCSP, driver and VBIOS
    /// versions, reference measurements).
    pub gpu: GpuPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            insecure_allow_sim: false,
            max_evidence_age_seconds: 24 * 3600,
            model_manifest_digests: Vec::new(),
            launch_measurements: Vec::new(),
            snp: SnpPolicy::default(),
            tdx: TdxPolicy::default(),
            gpu: GpuPolicy::default(),
        }
    }
}

/// Why a policy file was refused: it names the file, and for a syntax error, an unknown
/// key or a value of the wrong type or length, the line and column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("policy {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not a policy.
    #[error("policy {origin}: {message}")]
    Invalid {
        /// The file, or `<text>`.
        origin: String,
        /// 1-based line of the offending key or value, when known.
        line: Option<usize>,
        /// What was wrong, with the line and column.
        message: String,
    },
}

impl Policy {
    /// Parse a policy from TOML (the annotated example is `attestation/policy.example.toml`).
    /// Unknown keys, and hex values of the wrong length, are errors naming the line.
    ///
    /// # Errors
    /// [`PolicyError::Invalid`].
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, PolicyError> {
        toml::from_str::<Self>(text).map_err(|e| {
            let line = e.span().map(|span| {
                text.get(..span.start)
                    .map_or(0, |t| t.matches('\n').count())
                    + 1
            });
            let what = e.message().trim_end().to_owned();
            let message = match line {
                Some(line) => format!("line {line}: {what}"),
                None => what,
            };
            PolicyError::Invalid {
                origin: origin.to_owned(),
                line,
                message,
            }
        })
    }

    /// Read and parse a TOML policy file.
    ///
    /// # Errors
    /// [`PolicyError`], naming the file.
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The default policy, but accepting the simulated TEE. Development only.
    #[must_use]
    pub fn insecure_allow_sim() -> Self {
        Self {
            insecure_allow_sim: true,
            ..Self::default()
        }
    }
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Step 1.
    #[error("bundle version {0} is not supported")]
    Version(u32),
    /// Step 2.
    #[error("key configurations: {0}")]
    KeyConfigs(#[from] ChannelError),
    /// Step 2.
    #[error("listed key ids differ from those recomputed from the key configurations")]
    KeyIdMismatch,
    /// Step 3.
    #[error("claimed platform {claimed} but the CPU evidence is {found}")]
    PlatformMismatch {
        /// From the claims.
        claimed: &'static str,
        /// The evidence's type.
        found: &'static str,
    },
    /// Step 3.
    #[error("{0} evidence where GPU evidence was expected")]
    NotGpuEvidence(&'static str),
    /// Step 5: the policy forbids the simulated TEE.
    #[error("the bundle comes from the SIMULATED TEE, which the policy does not allow")]
    SimulatedNotAllowed,
    /// Step 5.
    #[error("simulated evidence: {0}")]
    Sim(#[from] SimError),
    /// Step 5: the SEV-SNP report, its certificates or the SNP policy.
    #[error("SEV-SNP evidence: {0}")]
    Snp(#[from] SnpError),
    /// Step 5: the TDX quote, its collateral or the TDX policy.
    #[error("TDX evidence: {0}")]
    Tdx(#[from] TdxError),
    /// Step 6: GPU evidence `index` (0-based) did not verify.
    #[error("GPU {index} evidence: {source}")]
    Gpu {
        /// Which GPU, in the bundle's order.
        index: usize,
        /// Why.
        source: Box<GpuError>,
    },
    /// Step 6: the policy requires GPU evidence and the bundle has none.
    #[error("the policy requires GPU evidence and the bundle carries none")]
    GpuRequired,
    /// Steps 5 and 6: verification of this platform is not available in this build.
    #[error("verification of {0} evidence is not implemented yet; refusing (fail closed)")]
    UnsupportedPlatform(&'static str),
    /// Step 7.
    #[error(
        "evidence produced at {produced_at} is {age_seconds} s old; the policy allows {max_seconds} s"
    )]
    TooOld {
        /// When.
        produced_at: String,
        /// Its age.
        age_seconds: i64,
        /// The limit.
        max_seconds: u64,
    },
    /// Step 7.
    #[error("evidence claims to be produced at {0}, in the future")]
    FromTheFuture(String),
    /// The policy's model list.
    #[error("model manifest digest {0} is not allowed by the policy")]
    ModelNotAllowed(Sha256Digest),
    /// A measured value differs from every value the policy accepts.
    #[error("{field}: expected {}, found {found}", one_of(.expected))]
    PolicyMismatch {
        /// The field, as the policy names it (`launch_measurement`, ...).
        field: &'static str,
        /// What the policy accepts.
        expected: Vec<String>,
        /// What the evidence says.
        found: String,
    },
}

fn one_of(expected: &[String]) -> String {
    match expected {
        [one] => one.clone(),
        many => format!("one of [{}]", many.join(", ")),
    }
}

/// Checks `found` against the policy's list for `field` (empty accepts any).
fn pinned(
    field: &'static str,
    accepted: &[Measurement],
    found: &Measurement,
) -> Result<(), VerifyError> {
    if accepted.is_empty() || accepted.iter().any(|m| m.ct_eq(found)) {
        return Ok(());
    }
    Err(VerifyError::PolicyMismatch {
        field,
        expected: accepted.iter().map(ToString::to_string).collect(),
        found: found.to_string(),
    })
}

/// A value that passed verification. Only this module constructs it.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What a verified bundle establishes about an enclave.
#[derive(Debug, Clone)]
pub struct EnclaveIdentity {
    key_configs: KeyConfigList,
    receipt_public_key: ReceiptPublicKey,
    model_manifest_digest: Sha256Digest,
    platform: Platform,
    enclave_version: String,
    produced_at: OffsetDateTime,
}

impl EnclaveIdentity {
    /// The attested key configurations.
    #[must_use]
    pub fn key_configs(&self) -> &KeyConfigList {
        &self.key_configs
    }
    /// The attested receipt key.
    #[must_use]
    pub fn receipt_public_key(&self) -> &ReceiptPublicKey {
        &self.receipt_public_key
    }
    /// The attested model manifest digest.
    #[must_use]
    pub fn model_manifest_digest(&self) -> &Sha256Digest {
        &self.model_manifest_digest
    }
    /// The platform.
    #[must_use]
    pub fn platform(&self) -> Platform {
        self.platform
    }
    /// Whether this is the simulated TEE (tools print a warning when it is).
    #[must_use]
    pub fn is_simulated(&self) -> bool {
        self.platform == Platform::Sim
    }
    /// The enclave version.
    #[must_use]
    pub fn enclave_version(&self) -> &str {
        &self.enclave_version
    }
    /// When the evidence was produced.
    #[must_use]
    pub fn produced_at(&self) -> OffsetDateTime {
        self.produced_at
    }
}

/// Verify `bundle` against `policy` at time `now`.
///
/// # Errors
/// The first check that failed.
pub fn verify_bundle(
    bundle: &Bundle,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Verified<EnclaveIdentity>, VerifyError> {
    verify_bundle_with_checks(bundle, policy, now, &mut Checks::new())
}

/// As [`verify_bundle`], recording every check performed in `checks` (the platform
/// verifiers' own checks included), so an auditor sees what passed before a failure.
///
/// # Errors
/// The first check that failed (also the last entry of `checks`).
pub fn verify_bundle_with_checks(
    bundle: &Bundle,
    policy: &Policy,
    now: OffsetDateTime,
    checks: &mut Checks,
) -> Result<Verified<EnclaveIdentity>, VerifyError> {
    let result = steps(bundle, policy, now, checks);
    if let Err(e) = &result {
        // Platform verifiers record their own failure; record the others here.
        if checks.all_passed() {
            checks.fail(e.check(), e.to_string());
        }
    }
    result
}

fn steps(
    bundle: &Bundle,
    policy: &Policy,
    now: OffsetDateTime,
    checks: &mut Checks,
) -> Result<Verified<EnclaveIdentity>, VerifyError> {
    // 1. Version.
    if bundle.version != crate::bundle::VERSION {
        return Err(VerifyError::Version(bundle.version));
    }
    checks.pass("bundle.version", format!("version {}", bundle.version));
    // 2. Key configurations and their ids.
    let claims = &bundle.claims;
    let key_configs = KeyConfigList::parse(&claims.key_configs.0)?;
    let ids: Vec<_> = key_configs.configs().iter().map(|c| c.id()).collect();
    if ids.len() != claims.key_ids.len()
        || !ids.iter().zip(&claims.key_ids).all(|(a, b)| a.ct_eq(b))
    {
        return Err(VerifyError::KeyIdMismatch);
    }
    checks.pass(
        "claims.key-ids",
        format!("{} key configuration(s), ids recomputed", ids.len()),
    );
    // 3. Platform and evidence kinds.
    let found = bundle.cpu.kind();
    if found != claims.platform.name() {
        return Err(VerifyError::PlatformMismatch {
            claimed: claims.platform.name(),
            found,
        });
    }
    if let Some(g) = bundle
        .gpus
        .iter()
        .find(|g| !matches!(g, Evidence::NvidiaGpu(_)))
    {
        return Err(VerifyError::NotGpuEvidence(g.kind()));
    }
    checks.pass(
        "claims.platform",
        format!("{found}, {} GPU evidence item(s)", bundle.gpus.len()),
    );
    // 4. Recompute the binding.
    let model_manifest_digest = claims.model_manifest.digest();
    let core = ClaimsCore {
        key_configs: &key_configs,
        receipt_public_key: &claims.receipt_public_key,
        model_manifest_digest: &model_manifest_digest,
        platform: claims.platform,
        enclave_version: &claims.enclave_version,
    };
    let report_data = core.report_data(&gpu_evidence_digest(&bundle.gpus), bundle.produced_at);
    checks.pass(
        "claims.report-data",
        format!("recomputed from the claims: {report_data}"),
    );
    // 5. CPU evidence.
    let measurement = match &bundle.cpu {
        Evidence::Sim(sim) => {
            if !policy.insecure_allow_sim {
                return Err(VerifyError::SimulatedNotAllowed);
            }
            checks.warn(
                "policy.simulated-tee",
                "SIMULATED TEE: no hardware protection; the policy allows it",
            );
            sim.verify(&report_data)?;
            checks.pass("sim.signature", "signed over the recomputed report data");
            sim.measurement
        }
        Evidence::Snp(snp) => verify_snp(snp, &report_data, policy, now, checks)?,
        Evidence::Tdx(tdx) => verify_tdx(tdx, &report_data, policy, now, checks)?,
        other => return Err(VerifyError::UnsupportedPlatform(other.kind())),
    };
    pinned(
        "launch_measurement",
        &policy.launch_measurements,
        &measurement,
    )?;
    if policy.launch_measurements.is_empty() {
        checks.warn(
            "policy.launch-measurement",
            format!("{measurement}: not checked, the policy pins no launch measurement"),
        );
    } else {
        checks.pass(
            "policy.launch-measurement",
            format!("{measurement} is allowed"),
        );
    }
    // 6. GPU evidence, each requested with the GPU nonce of these claims.
    if bundle.gpus.is_empty() {
        if policy.gpu.required {
            return Err(VerifyError::GpuRequired);
        }
        checks.pass(
            "policy.gpu-required",
            "no GPU evidence; the policy does not require it",
        );
    }
    let nonce = core.gpu_nonce();
    for (index, g) in bundle.gpus.iter().enumerate() {
        let Evidence::NvidiaGpu(gpu) = g else {
            return Err(VerifyError::NotGpuEvidence(g.kind()));
        };
        let ocsp: Vec<Vec<u8>> = gpu.ocsp.iter().map(|o| o.0.clone()).collect();
        let mut trail = Checks::new();
        let mut rims = Vec::new();
        for (i, bytes) in gpu.rims.iter().enumerate() {
            match crate::nvidia::Rim::parse(&bytes.0) {
                Ok(rim) => rims.push(rim),
                Err(e) => {
                    let source = GpuError::RimParse(e);
                    trail.fail("rim.parse", format!("RIM {i} in the bundle: {source}"));
                    checks.append_prefixed(&format!("gpu{index}"), trail);
                    return Err(VerifyError::Gpu {
                        index,
                        source: Box::new(source),
                    });
                }
            }
        }
        let refs = References {
            expected_nonce: Some(nonce.as_bytes()),
            rims: &rims,
            ocsp: &ocsp,
        };
        let result = crate::nvidia::verify(
            &gpu.report.0,
            &gpu.certificate_chain.0,
            &refs,
            &policy.gpu,
            now,
            &mut trail,
        );
        if result.is_ok() {
            trail.warn("relay", crate::nvidia::RELAY_CAVEAT);
        }
        checks.append_prefixed(&format!("gpu{index}"), trail);
        result.map_err(|source| VerifyError::Gpu {
            index,
            source: Box::new(source),
        })?;
    }
    // 7. Age.
    let age = (now - bundle.produced_at).whole_seconds();
    if age < -MAX_SKEW_SECONDS {
        return Err(VerifyError::FromTheFuture(fmt_time(bundle.produced_at)));
    }
    if age > i64::try_from(policy.max_evidence_age_seconds).unwrap_or(i64::MAX) {
        return Err(VerifyError::TooOld {
            produced_at: fmt_time(bundle.produced_at),
            age_seconds: age,
            max_seconds: policy.max_evidence_age_seconds,
        });
    }
    checks.pass(
        "evidence.age",
        format!(
            "produced {} ({age} s ago; at most {} s allowed)",
            fmt_time(bundle.produced_at),
            policy.max_evidence_age_seconds
        ),
    );
    if !policy.model_manifest_digests.is_empty()
        && !policy
            .model_manifest_digests
            .iter()
            .any(|d| d.ct_eq(&model_manifest_digest))
    {
        return Err(VerifyError::ModelNotAllowed(model_manifest_digest));
    }
    if policy.model_manifest_digests.is_empty() {
        checks.warn(
            "policy.model-manifest",
            format!("{model_manifest_digest}: not checked, the policy pins no model manifest"),
        );
    } else {
        checks.pass(
            "policy.model-manifest",
            format!("{model_manifest_digest} is allowed"),
        );
    }
    Ok(Verified(EnclaveIdentity {
        key_configs,
        receipt_public_key: claims.receipt_public_key,
        model_manifest_digest,
        platform: claims.platform,
        enclave_version: claims.enclave_version.clone(),
        produced_at: bundle.produced_at,
    }))
}

/// Step 5 for SEV-SNP: the report, its chain to the pinned ARK, the SNP policy, and the
/// report data equal to the recomputed binding. Returns `MEASUREMENT`.
fn verify_snp(
    evidence: &SnpEvidence,
    report_data: &ReportData,
    policy: &Policy,
    now: OffsetDateTime,
    checks: &mut Checks,
) -> Result<Measurement, VerifyError> {
    let certs: Vec<&[u8]> = evidence
        .certificates
        .iter()
        .map(|c| c.0.as_slice())
        .collect();
    let verified = crate::snp::verify(
        &evidence.report.0,
        &certs,
        &policy.snp,
        Some(report_data.as_bytes()),
        now,
        checks,
    )?;
    Ok(Measurement(verified.measurement_bytes))
}

/// Step 5 for TDX: the quote, its collateral to the pinned Intel root, the TDX policy,
/// `REPORTDATA` equal to the recomputed binding, and the event log (CCEL), when carried
/// or required, replayed to the quoted RTMRs with the policy's pinned events found in it.
/// Returns `MRTD`.
fn verify_tdx(
    evidence: &TdxEvidence,
    report_data: &ReportData,
    policy: &Policy,
    now: OffsetDateTime,
    checks: &mut Checks,
) -> Result<Measurement, VerifyError> {
    let files = evidence
        .collateral
        .iter()
        .map(|(name, bytes)| (name.clone(), bytes.0.clone()))
        .collect();
    let ccel = evidence.ccel.as_ref().map(|c| c.0.as_slice());
    if let Some(size) = ccel.map(<[u8]>::len).filter(|&n| n > MAX_TDX_CCEL) {
        let err = TdxError::EventLogTooLarge {
            size,
            limit: MAX_TDX_CCEL,
        };
        checks.fail("event-log.parse", err.to_string());
        return Err(err.into());
    }
    let collateral = Collateral::from_files(&files)?;
    let verified = crate::tdx::verify(
        &evidence.quote.0,
        &collateral,
        &policy.tdx,
        Some(report_data.as_bytes()),
        now,
        checks,
    )?;
    policy.tdx.check_event_log(&verified.report, ccel, checks)?;
    Ok(Measurement(verified.report.mr_td))
}

impl VerifyError {
    /// The name of the check that failed, as recorded in a [`Checks`] trail.
    #[must_use]
    pub fn check(&self) -> &'static str {
        match self {
            Self::Version(_) => "bundle.version",
            Self::KeyConfigs(_) | Self::KeyIdMismatch => "claims.key-ids",
            Self::PlatformMismatch { .. } | Self::NotGpuEvidence(_) => "claims.platform",
            Self::SimulatedNotAllowed => "policy.simulated-tee",
            Self::Sim(_) => "sim.signature",
            Self::Snp(_) => "snp",
            Self::Tdx(_) => "tdx",
            Self::Gpu { .. } => "gpu",
            Self::GpuRequired => "policy.gpu-required",
            Self::UnsupportedPlatform(_) => "evidence.platform",
            Self::TooOld { .. } | Self::FromTheFuture(_) => "evidence.age",
            Self::ModelNotAllowed(_) => "policy.model-manifest",
            Self::PolicyMismatch { .. } => "policy.launch-measurement",
        }
    }
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
