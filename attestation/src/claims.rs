//! `claims-core` and the two values that bind it into hardware evidence.
//!
//! # Layout (version 1)
//!
//! `claims-core` is the concatenation of five fields, in this order, each written as a
//! 4-byte big-endian length followed by that many bytes:
//!
//! | # | field | bytes |
//! |---|-------|-------|
//! | 1 | key configurations | the `application/ohttp-keys` list (RFC 9540), as served |
//! | 2 | receipt public key | the 32-byte Ed25519 public key |
//! | 3 | model manifest digest | 32 bytes, [`ModelManifest::digest`] |
//! | 4 | platform name | ASCII: `snp`, `tdx` or `sim` |
//! | 5 | enclave version | UTF-8, e.g. `0.1.0` |
//!
//! From it:
//!
//! - GPU nonce (32 bytes) = SHA-256(`"veil/gpu-nonce/v1"` ‖ claims-core)
//! - CPU report data (64 bytes, SNP `REPORT_DATA` / TDX `REPORTDATA`) =
//!   SHA-512(`"veil/report-data/v2"` ‖ claims-core ‖ SHA-256(GPU evidence) ‖
//!   produced-at), where produced-at is the bundle's `produced_at` as 8 bytes, the
//!   big-endian signed count of whole seconds since the Unix epoch
//!
//! Binding the production time (v2; v1 had no time) makes a bundle's age part of what
//! the hardware signed: a host cannot serve old evidence under a fresh `produced_at` to
//! pass a verifier's maximum evidence age.
//!
//! where "GPU evidence" is [`crate::bundle::gpu_evidence_bytes`] of the bundle's GPU
//! evidence (the empty string when there is no GPU). The model manifest digest is
//! SHA-256 over the manifest's files sorted by path, each written as a 4-byte
//! big-endian path length, the UTF-8 path, and the file's 32-byte SHA-256.
//!
//! The committed vector `attestation/testdata/claims-core-v1.json` was computed
//! independently (Python `hashlib`) and is checked by this crate's tests.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bytes::{Sha256Digest, hex_newtype};
use crate::channel::KeyConfigList;
use crate::receipt::ReceiptPublicKey;

hex_newtype!(
    /// The 64 bytes of report data bound into CPU evidence.
    ReportData,
    64,
    "report data"
);

hex_newtype!(
    /// The 32-byte nonce with which GPU evidence is requested.
    GpuNonce,
    32,
    "GPU nonce"
);

/// Domain label of the GPU nonce.
pub const GPU_NONCE_LABEL: &[u8] = b"veil/gpu-nonce/v1";
/// Domain label of the CPU report data.
pub const REPORT_DATA_LABEL: &[u8] = b"veil/report-data/v2";

/// The TEE platform an enclave runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Platform {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// The simulated TEE: development only, no hardware protection at all.
    Sim,
}

impl Platform {
    /// The name written into `claims-core`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Snp => "snp",
            Self::Tdx => "tdx",
            Self::Sim => "sim",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sim => f.write_str("sim (SIMULATED: no hardware protection)"),
            other => f.write_str(other.name()),
        }
    }
}

/// The model files an enclave serves: path (relative, `/`-separated) → SHA-256.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelManifest {
    /// The files, sorted by path.
    pub files: BTreeMap<String, Sha256Digest>,
}

impl ModelManifest {
    /// SHA-256 over the sorted list of files and their digests (see the module docs).
    #[must_use]
    pub fn digest(&self) -> Sha256Digest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for (path, digest) in &self.files {
            ctx.update(&len32(path.len()));
            ctx.update(path.as_bytes());
            ctx.update(digest.as_bytes());
        }
        Sha256Digest::from_slice(ctx.finish().as_ref()).unwrap_or(Sha256Digest([0; 32]))
    }
}

fn len32(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// The inputs of `claims-core`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimsCore<'a> {
    /// The key configuration list.
    pub key_configs: &'a KeyConfigList,
    /// The receipt-signing public key.
    pub receipt_public_key: &'a ReceiptPublicKey,
    /// The model manifest digest.
    pub model_manifest_digest: &'a Sha256Digest,
    /// The platform.
    pub platform: Platform,
    /// The enclave's version.
    pub enclave_version: &'a str,
}

impl ClaimsCore<'_> {
    /// The canonical encoding.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_core(&[
            self.key_configs.as_bytes(),
            self.receipt_public_key.as_bytes(),
            self.model_manifest_digest.as_bytes(),
            self.platform.name().as_bytes(),
            self.enclave_version.as_bytes(),
        ])
    }

    /// The GPU nonce.
    #[must_use]
    pub fn gpu_nonce(&self) -> GpuNonce {
        gpu_nonce(&self.to_bytes())
    }

    /// The CPU report data, given the digest of the GPU evidence and the bundle's
    /// production time (whole seconds count; sub-seconds are ignored).
    #[must_use]
    pub fn report_data(
        &self,
        gpu_evidence_digest: &Sha256Digest,
        produced_at: time::OffsetDateTime,
    ) -> ReportData {
        report_data(&self.to_bytes(), gpu_evidence_digest, produced_at)
    }
}

/// Length-prefix and concatenate `fields` (4-byte big-endian lengths).
#[must_use]
pub fn encode_core(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(&len32(f.len()));
        out.extend_from_slice(f);
    }
    out
}

/// SHA-256(`"veil/gpu-nonce/v1"` ‖ claims-core).
#[must_use]
pub fn gpu_nonce(claims_core: &[u8]) -> GpuNonce {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(GPU_NONCE_LABEL);
    ctx.update(claims_core);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    GpuNonce(out)
}

/// SHA-512(`"veil/report-data/v2"` ‖ claims-core ‖ SHA-256(GPU evidence) ‖
/// produced-at as big-endian `i64` Unix seconds).
#[must_use]
pub fn report_data(
    claims_core: &[u8],
    gpu_evidence_digest: &Sha256Digest,
    produced_at: time::OffsetDateTime,
) -> ReportData {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    ctx.update(REPORT_DATA_LABEL);
    ctx.update(claims_core);
    ctx.update(gpu_evidence_digest.as_bytes());
    ctx.update(&produced_at.unix_timestamp().to_be_bytes());
    let mut out = [0u8; 64];
    out.copy_from_slice(ctx.finish().as_ref());
    ReportData(out)
}
