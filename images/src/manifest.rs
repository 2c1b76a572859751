//! The image manifest: what an image build records about the image it made, and what a
//! verifier's policy pins (`veil-verify policy from-manifest`).
//!
//! ```json
//! {
//!   "version": 1,
//!   "image": "veil-0.1.0",
//!   "model_manifest_digest": "<64 hex: SHA-256 of the model manifest the enclave attests>",
//!   "snp": [ { "firmware": "OVMF.amdsev.fd", "vcpus": 4, "vcpu_type": "EPYC-v4",
//!              "launch_measurement": "<96 hex>" } ],
//!   "tdx": [ { "firmware": "OVMF.fd", "memory": "16G",
//!              "mr_td": "<96 hex>", "rtmr1": "<96 hex>", "rtmr2": "<96 hex>" } ]
//! }
//! ```
//!
//! One entry per launch configuration the host may use (firmware file, vCPU count and
//! type, memory size): each gives its own measurements. Unknown fields are errors. The
//! values are hex text here; the verifier checks their lengths when it reads them.

use serde::{Deserialize, Serialize};

/// The manifest format version this crate writes and reads.
pub const VERSION: u32 = 1;

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`VERSION`].
    pub version: u32,
    /// The image's name and version.
    pub image: String,
    /// SHA-256 of the model manifest the enclave attests (64 hex digits).
    pub model_manifest_digest: Option<String>,
    /// Expected SEV-SNP launch measurements.
    #[serde(default)]
    pub snp: Vec<SnpLaunch>,
    /// Expected TDX measurements.
    #[serde(default)]
    pub tdx: Vec<TdxLaunch>,
}

/// One SEV-SNP launch configuration and its launch digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpLaunch {
    /// The firmware file the host boots with.
    pub firmware: String,
    /// vCPUs.
    pub vcpus: u32,
    /// vCPU type (`EPYC-v4`, `EPYC-Milan`…).
    pub vcpu_type: String,
    /// The expected `MEASUREMENT` (96 hex digits).
    pub launch_measurement: String,
}

/// One TDX launch configuration and its measurements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxLaunch {
    /// The firmware file the host boots with.
    pub firmware: String,
    /// Memory size (`16G`).
    pub memory: String,
    /// The expected `MRTD` (96 hex digits).
    pub mr_td: String,
    /// The expected RTMR1 (kernel and its command line), when computed.
    pub rtmr1: Option<String>,
    /// The expected RTMR2 (command line and initrd), when computed.
    pub rtmr2: Option<String>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not manifest JSON (the message names the line and column).
    #[error("image manifest: {0}")]
    Json(String),
    /// Another format version.
    #[error("image manifest version {0} is not supported (expected {VERSION})")]
    Version(u32),
}

impl Manifest {
    /// Parse a manifest.
    ///
    /// # Errors
    /// [`ManifestError`].
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if manifest.version != VERSION {
            return Err(ManifestError::Version(manifest.version));
        }
        Ok(manifest)
    }
}
