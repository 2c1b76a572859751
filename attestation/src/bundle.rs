//! The attestation bundle: what `GET /attestation` returns, versioned JSON.
//!
//! ```json
//! {
//!   "version": 1,
//!   "claims": { "key_configs": "<base64 application/ohttp-keys>", "key_ids": ["<hex>"],
//!               "receipt_public_key": "<hex>", "model_manifest": {"path": "<sha256>"},
//!               "platform": "sim", "enclave_version": "0.1.0" },
//!   "cpu": { "type": "sim", ... },
//!   "gpus": [ { "type": "nvidia-gpu", ... } ],
//!   "produced_at": "2026-11-23T12:00:00Z"
//! }
//! ```
//!
//! Unknown fields are errors. The platform evidence is an enum tagged by `type`
//! (`snp`, `tdx`, `nvidia-gpu`, `sim`); the hardware variants carry their raw evidence
//! and are verified by their platform modules. TDX evidence is
//!
//! ```json
//! { "type": "tdx", "quote": "<base64>", "collateral": { "tcb_info.json": "<base64>", ... },
//!   "ccel": "<base64>" }
//! ```
//!
//! where `ccel`, optional (absent when the TD has no CCEL table), is the binary TD event
//! log (the ACPI CCEL table's log area without its trailing padding, at most
//! [`MAX_TDX_CCEL`] bytes). It needs no binding of its own: verifiers replay it to RTMR
//! 0..=3 and refuse it unless each equals the quoted (signed) register.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::bytes::{Base64Bytes, Sha256Digest};
use crate::channel::{KeyConfigList, KeyId};
use crate::claims::{ClaimsCore, GpuNonce, ModelManifest, Platform, ReportData};
use crate::receipt::ReceiptPublicKey;
use crate::sim::SimEvidence;

/// The bundle format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// The largest bundle accepted, in bytes.
pub const MAX_BUNDLE: usize = 4 << 20;
/// The largest TDX event log (CCEL) a bundle may carry, in bytes (real logs are tens of
/// KiB once their padding is cut).
pub const MAX_TDX_CCEL: usize = 1 << 20;

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Larger than [`MAX_BUNDLE`].
    #[error("bundle of {0} bytes exceeds the limit of {MAX_BUNDLE}")]
    TooLarge(usize),
    /// Not valid bundle JSON; names the line and column, never echoes content.
    #[error("bundle JSON invalid at line {line}, column {column}: {category}")]
    Json {
        /// Line.
        line: usize,
        /// Column.
        column: usize,
        /// serde_json's category (syntax, data, eof).
        category: &'static str,
    },
    /// A version this crate does not read.
    #[error("bundle version {0} is not supported (expected {VERSION})")]
    Version(u32),
    /// TDX evidence whose event log is larger than [`MAX_TDX_CCEL`].
    #[error("TDX event log (ccel) of {0} bytes exceeds the limit of {MAX_TDX_CCEL}")]
    TdxEventLogTooLarge(usize),
}

/// The attestation bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version, [`VERSION`].
    pub version: u32,
    /// What the enclave claims; bound into the evidence through the report data.
    pub claims: Claims,
    /// CPU evidence.
    pub cpu: Evidence,
    /// GPU evidence, one per GPU; empty without GPUs.
    #[serde(default)]
    pub gpus: Vec<Evidence>,
    /// When the evidence was produced.
    #[serde(with = "time::serde::rfc3339")]
    pub produced_at: OffsetDateTime,
}

/// The readable claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The key configurations, `application/ohttp-keys`.
    pub key_configs: Base64Bytes,
    /// Their [`KeyId`]s, in order (readable; verifiers recompute them).
    pub key_ids: Vec<KeyId>,
    /// The receipt-signing key.
    pub receipt_public_key: ReceiptPublicKey,
    /// The model files served.
    pub model_manifest: ModelManifest,
    /// The platform.
    pub platform: Platform,
    /// The enclave's version.
    pub enclave_version: String,
}

/// Platform evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Evidence {
    /// AMD SEV-SNP: the attestation report and the certificates that verify it.
    Snp(SnpEvidence),
    /// Intel TDX: the quote and its DCAP collateral.
    Tdx(TdxEvidence),
    /// An NVIDIA GPU in confidential-computing mode.
    NvidiaGpu(GpuEvidence),
    /// The simulated TEE (development only).
    Sim(SimEvidence),
}

impl Evidence {
    /// The evidence's type tag.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Snp(_) => "snp",
            Self::Tdx(_) => "tdx",
            Self::NvidiaGpu(_) => "nvidia-gpu",
            Self::Sim(_) => "sim",
        }
    }
}

/// Raw SEV-SNP evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpEvidence {
    /// The attestation report.
    pub report: Base64Bytes,
    /// DER certificates: VCEK or VLEK, and the ASK/ASVK and ARK when supplied.
    #[serde(default)]
    pub certificates: Vec<Base64Bytes>,
}

/// Raw TDX evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxEvidence {
    /// The quote.
    pub quote: Base64Bytes,
    /// DCAP collateral (TCB info, QE identity, CRLs, their chains), by name.
    #[serde(default)]
    pub collateral: std::collections::BTreeMap<String, Base64Bytes>,
    /// The binary TD event log (CCEL), without its trailing padding, at most
    /// [`MAX_TDX_CCEL`] bytes; absent when the TD has none (and then absent from the
    /// JSON, so bundles without it are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccel: Option<Base64Bytes>,
}

/// Raw NVIDIA GPU evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuEvidence {
    /// The SPDM attestation report.
    pub report: Base64Bytes,
    /// The device certificate chain, PEM.
    pub certificate_chain: Base64Bytes,
    /// DER OCSP responses for the device chain, where the host could obtain them (they
    /// are signed by NVIDIA, so they need no binding; verifiers refuse GPU evidence
    /// without them unless their policy allows it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ocsp: Vec<Base64Bytes>,
    /// NVIDIA RIMs (SWID XML) for the driver and VBIOS the report names, where the host
    /// has them; each must carry a valid NVIDIA XML signature to be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rims: Vec<Base64Bytes>,
}

/// The canonical bytes of a bundle's GPU evidence, whose SHA-256 enters the report
/// data: for each GPU in order, its report then its certificate chain, each with a
/// 4-byte big-endian length. No GPU gives the empty string.
#[must_use]
pub fn gpu_evidence_bytes(gpus: &[Evidence]) -> Vec<u8> {
    let mut fields: Vec<&[u8]> = Vec::new();
    for g in gpus {
        if let Evidence::NvidiaGpu(e) = g {
            fields.push(&e.report.0);
            fields.push(&e.certificate_chain.0);
        }
    }
    crate::claims::encode_core(&fields)
}

/// SHA-256 of [`gpu_evidence_bytes`].
#[must_use]
pub fn gpu_evidence_digest(gpus: &[Evidence]) -> Sha256Digest {
    Sha256Digest::of(&gpu_evidence_bytes(gpus))
}

impl Bundle {
    /// Parse untrusted JSON: bounded size, strict fields, known version, a TDX event log
    /// within [`MAX_TDX_CCEL`].
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE {
            return Err(BundleError::TooLarge(bytes.len()));
        }
        let bundle: Self = serde_json::from_slice(bytes).map_err(|e| BundleError::Json {
            line: e.line(),
            column: e.column(),
            category: match e.classify() {
                serde_json::error::Category::Io => "io",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "unexpected or missing field or value",
                serde_json::error::Category::Eof => "unexpected end",
            },
        })?;
        if bundle.version != VERSION {
            return Err(BundleError::Version(bundle.version));
        }
        if let Evidence::Tdx(TdxEvidence {
            ccel: Some(ccel), ..
        }) = &bundle.cpu
            && ccel.0.len() > MAX_TDX_CCEL
        {
            return Err(BundleError::TdxEventLogTooLarge(ccel.0.len()));
        }
        Ok(bundle)
    }

    /// Assemble a bundle as an enclave does: the claims from its key configurations,
    /// receipt key, models, platform and version; GPU evidence requested with the GPU
    /// nonce those claims give; CPU evidence over the report data that binds the claims
    /// and the GPU evidence.
    ///
    /// # Errors
    /// Whatever `gpu` or `cpu` (evidence collection) returns.
    #[allow(clippy::too_many_arguments)]
    pub fn assemble<E>(
        key_configs: &KeyConfigList,
        receipt_public_key: ReceiptPublicKey,
        model_manifest: ModelManifest,
        platform: Platform,
        enclave_version: &str,
        gpu: impl FnOnce(&GpuNonce) -> Result<Vec<Evidence>, E>,
        cpu: impl FnOnce(&ReportData) -> Result<Evidence, E>,
        produced_at: OffsetDateTime,
    ) -> Result<Self, E> {
        let digest = model_manifest.digest();
        let core = ClaimsCore {
            key_configs,
            receipt_public_key: &receipt_public_key,
            model_manifest_digest: &digest,
            platform,
            enclave_version,
        };
        // Whole seconds: the report data binds them, and the JSON carries them exactly.
        let produced_at = produced_at.replace_nanosecond(0).unwrap_or(produced_at);
        let gpus = gpu(&core.gpu_nonce())?;
        let cpu = cpu(&core.report_data(&gpu_evidence_digest(&gpus), produced_at))?;
        Ok(Self {
            version: VERSION,
            claims: Claims {
                key_configs: Base64Bytes(key_configs.as_bytes().to_vec()),
                key_ids: key_configs.configs().iter().map(|c| c.id()).collect(),
                receipt_public_key,
                model_manifest,
                platform,
                enclave_version: enclave_version.to_owned(),
            },
            cpu,
            gpus,
            produced_at,
        })
    }

    /// Serialize as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}
