//! Where evidence comes from: the platform (CPU TEE) and GPU providers.
//!
//! The service asks a [`CpuProvider`] for evidence over the report data that binds its
//! keys, and a [`GpuProvider`] for GPU evidence over the GPU nonce. Each platform lands
//! as its own provider (SEV-SNP, TDX, NVIDIA: issues 7–9) without touching the service.
//! Until one exists, choosing it is an error: never a silent fall back to `sim`.

use std::path::Path;

use veil_attestation::bundle::Evidence;
use veil_attestation::bytes::Measurement;
use veil_attestation::claims::{GpuNonce, Platform, ReportData};
use veil_attestation::sim::SimPlatform;

/// Which TEE to use (`--tee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TeeChoice {
    /// Detect: configfs-tsm, then `/dev/sev-guest`, then `/dev/tdx_guest`; none is an error.
    Auto,
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// The simulated TEE: development only, no protection; verifiers reject it by default.
    Sim,
}

/// What to do about GPUs (`--gpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuMode {
    /// Refuse to start unless an NVIDIA GPU in CC mode is present and its evidence verifies.
    Required,
    /// Use a GPU in CC mode if there is one.
    Optional,
    /// Do not use GPUs.
    Off,
}

/// A failure to gather evidence. Carries no secrets.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// `--tee auto` found no TEE interface.
    #[error(
        "no TEE found: none of /sys/kernel/config/tsm/report, /dev/sev-guest, /dev/tdx_guest exists; \
         to develop without a TEE, choose the simulated one explicitly with --tee sim"
    )]
    NoTee,
    /// The platform is present but veil's provider for it has not landed yet.
    #[error("{platform} evidence collection is not available in this build ({detail})")]
    Unavailable {
        /// The platform.
        platform: &'static str,
        /// Why.
        detail: &'static str,
    },
    /// `--gpu required` and no usable GPU.
    #[error("--gpu required: {0}")]
    GpuRequired(&'static str),
    /// The provider failed.
    #[error("{platform} evidence: {detail}")]
    Failed {
        /// The platform.
        platform: &'static str,
        /// What failed.
        detail: String,
    },
}

/// A source of CPU TEE evidence.
pub trait CpuProvider: Send + Sync {
    /// The platform named in the claims.
    fn platform(&self) -> Platform;
    /// Evidence whose report data is `report_data`.
    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError>;
}

/// A source of GPU evidence.
pub trait GpuProvider: Send + Sync {
    /// One evidence per GPU, each requested with `nonce`; empty when there is no GPU.
    fn evidence(&self, nonce: &GpuNonce) -> Result<Vec<Evidence>, PlatformError>;
}

/// The simulated TEE: evidence signed by a key made at process start.
#[derive(Debug)]
pub struct SimProvider(SimPlatform);

impl SimProvider {
    /// A simulated platform with a fresh key, reporting as its launch measurement the
    /// SHA-384 of this process's executable (what a policy can pin, as it would pin
    /// SEV-SNP's `MEASUREMENT` or TDX's `MRTD`).
    ///
    /// # Errors
    /// When the executable cannot be read or key generation fails.
    pub fn new() -> Result<Self, PlatformError> {
        let failed = |detail: String| PlatformError::Failed {
            platform: "sim",
            detail,
        };
        let exe = std::fs::read("/proc/self/exe")
            .map_err(|e| failed(format!("reading /proc/self/exe to measure it: {e}")))?;
        SimPlatform::with_measurement(Measurement::sha384_of(&exe))
            .map(Self)
            .map_err(|e| failed(e.to_string()))
    }
}

impl CpuProvider for SimProvider {
    fn platform(&self) -> Platform {
        Platform::Sim
    }
    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError> {
        Ok(Evidence::Sim(self.0.evidence(report_data)))
    }
}

/// No GPUs (`--gpu off`, or `optional` with none present).
#[derive(Debug, Clone, Copy)]
pub struct NoGpu;

impl GpuProvider for NoGpu {
    fn evidence(&self, _nonce: &GpuNonce) -> Result<Vec<Evidence>, PlatformError> {
        Ok(Vec::new())
    }
}

/// The TEE interfaces `auto` looks for, in order.
pub const CONFIGFS_TSM: &str = "/sys/kernel/config/tsm/report";
/// SEV-SNP guest device.
pub const SEV_GUEST: &str = "/dev/sev-guest";
/// TDX guest device.
pub const TDX_GUEST: &str = "/dev/tdx_guest";

/// Resolves `--tee auto` by looking under `root` (normally `/`) for the TEE interfaces.
///
/// # Errors
/// [`PlatformError::NoTee`] when none exists.
pub fn detect(root: &Path) -> Result<TeeChoice, PlatformError> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    if at(CONFIGFS_TSM).exists() {
        // configfs-tsm serves both; the device nodes tell which CPU this is.
        if at(TDX_GUEST).exists() {
            return Ok(TeeChoice::Tdx);
        }
        return Ok(TeeChoice::Snp);
    }
    if at(SEV_GUEST).exists() {
        return Ok(TeeChoice::Snp);
    }
    if at(TDX_GUEST).exists() {
        return Ok(TeeChoice::Tdx);
    }
    Err(PlatformError::NoTee)
}

/// The CPU provider for a choice (`auto` resolved first).
///
/// # Errors
/// When the platform is not present, or its provider is not in this build.
pub fn cpu_provider(choice: TeeChoice) -> Result<Box<dyn CpuProvider>, PlatformError> {
    let choice = match choice {
        TeeChoice::Auto => detect(Path::new("/"))?,
        other => other,
    };
    match choice {
        TeeChoice::Sim => Ok(Box::new(SimProvider::new()?)),
        TeeChoice::Snp => Err(PlatformError::Unavailable {
            platform: "AMD SEV-SNP",
            detail: "the SNP provider arrives with issue 7",
        }),
        TeeChoice::Tdx => Err(PlatformError::Unavailable {
            platform: "Intel TDX",
            detail: "the TDX provider arrives with issue 8",
        }),
        TeeChoice::Auto => Err(PlatformError::NoTee),
    }
}

/// The GPU provider for a mode.
///
/// # Errors
/// `required` fails until the NVIDIA provider lands (issue 9): it can never be met here.
pub fn gpu_provider(mode: GpuMode) -> Result<Box<dyn GpuProvider>, PlatformError> {
    match mode {
        GpuMode::Off | GpuMode::Optional => Ok(Box::new(NoGpu)),
        GpuMode::Required => Err(PlatformError::GpuRequired(
            "no NVIDIA confidential-computing GPU provider in this build (issue 9)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_detects_in_order_and_never_falls_back_to_sim() {
        let dir = std::env::temp_dir().join(format!("veil-detect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        assert!(matches!(detect(&dir), Err(PlatformError::NoTee)));
        std::fs::write(dir.join("dev/tdx_guest"), b"").unwrap();
        assert_eq!(detect(&dir).unwrap(), TeeChoice::Tdx);
        std::fs::write(dir.join("dev/sev-guest"), b"").unwrap();
        assert_eq!(detect(&dir).unwrap(), TeeChoice::Snp);
        std::fs::create_dir_all(dir.join("sys/kernel/config/tsm/report")).unwrap();
        std::fs::remove_file(dir.join("dev/sev-guest")).unwrap();
        assert_eq!(detect(&dir).unwrap(), TeeChoice::Tdx);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hardware_choices_fail_closed_until_their_providers_land() {
        assert!(cpu_provider(TeeChoice::Snp).is_err());
        assert!(cpu_provider(TeeChoice::Tdx).is_err());
        assert!(gpu_provider(GpuMode::Required).is_err());
        assert_eq!(
            cpu_provider(TeeChoice::Sim).unwrap().platform(),
            Platform::Sim
        );
    }
}
