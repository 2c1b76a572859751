//! The NVIDIA Management Library (NVML) calls the GPU provider needs, behind a small
//! trait so the provider can be tested without a GPU.
//!
//! [`SystemNvml`] is the real one, over the `nvml-wrapper` crate, which loads
//! `libnvidia-ml.so` at run time: the enclave builds and runs on machines without a GPU
//! or driver, and only finds out when it is asked to use one. The calls it makes:
//!
//! | [`Nvml`] method | NVML function |
//! | --- | --- |
//! | [`SystemNvml::load`] | `nvmlInit_v2` |
//! | [`Nvml::device_count`] | `nvmlDeviceGetCount_v2` (and `nvmlDeviceGetHandleByIndex_v2` for each device the other methods name) |
//! | [`Nvml::cc_state`] | `nvmlSystemGetConfComputeSettings` (CC feature, devtools mode) |
//! | [`Nvml::attestation`] | `nvmlDeviceGetConfComputeGpuAttestationReport` (32-byte nonce in, SPDM transcript out) and `nvmlDeviceGetConfComputeGpuCertificate` (its attestation certificate chain, PEM) |
//! | [`Nvml::ready`] | `nvmlSystemGetConfComputeGpusReadyState` |
//! | [`Nvml::set_ready`] | `nvmlSystemSetConfComputeGpusReadyState` |
//!
//! veil keeps `unsafe` code out (the workspace forbids it; only veil-attestation's
//! guest-device ioctls are let through), so only `nvml-wrapper`'s safe methods are used.
//! Those copy NVML's fixed buffers by the lengths NVML reports and would panic on a
//! length past the buffer; each call is therefore run under
//! [`std::panic::catch_unwind`] and such a panic becomes an error, never a crash. The
//! lengths are checked again here against NVML's buffer sizes.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// NVML's buffer for the SPDM attestation report (`NVML_CC_GPU_ATTESTATION_REPORT_SIZE`).
pub const ATTESTATION_REPORT_MAX: usize = 8192;
/// NVML's buffer for the attestation certificate chain
/// (`NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE`).
pub const ATTESTATION_CERT_CHAIN_MAX: usize = 5120;

/// A failed NVML call: which one, and what NVML said. Carries no secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {detail}")]
pub struct NvmlCallError {
    /// The NVML function (or step) that failed.
    pub call: &'static str,
    /// NVML's error, or what was wrong with its answer.
    pub detail: String,
}

impl NvmlCallError {
    /// An error for `call`.
    pub fn new(call: &'static str, detail: impl std::fmt::Display) -> Self {
        Self {
            call,
            detail: detail.to_string(),
        }
    }
}

/// The system's confidential-computing settings (NVML reports them for all GPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcState {
    /// The CC feature is on (`ccFeature == NVML_CC_SYSTEM_FEATURE_ENABLED`).
    pub cc_enabled: bool,
    /// Developer tools mode is on (`devToolsMode == NVML_CC_SYSTEM_DEVTOOLS_MODE_ON`):
    /// the GPU can be debugged and profiled, so its CC gives no protection.
    pub devtools: bool,
}

/// One GPU's evidence as NVML returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuAttestation {
    /// The SPDM `GET_MEASUREMENTS` request and signed response.
    pub report: Vec<u8>,
    /// The device's attestation certificate chain, PEM, leaf first.
    pub cert_chain: Vec<u8>,
}

/// The NVML operations the GPU provider uses.
pub trait Nvml: Send + Sync {
    /// The number of GPUs NVML sees.
    ///
    /// # Errors
    /// When NVML fails.
    fn device_count(&self) -> Result<u32, NvmlCallError>;
    /// The confidential-computing settings.
    ///
    /// # Errors
    /// When NVML fails (a driver without CC support among other reasons).
    fn cc_state(&self) -> Result<CcState, NvmlCallError>;
    /// GPU `index`'s attestation report over `nonce`, and its certificate chain.
    ///
    /// # Errors
    /// When NVML fails or returns more than its buffers hold.
    fn attestation(&self, index: u32, nonce: &[u8; 32]) -> Result<GpuAttestation, NvmlCallError>;
    /// Whether the GPUs accept work (the CC "GPUs ready" state).
    ///
    /// # Errors
    /// When NVML fails.
    fn ready(&self) -> Result<bool, NvmlCallError>;
    /// Sets the CC "GPUs ready" state: until it is set, the GPUs refuse work.
    ///
    /// # Errors
    /// When NVML fails.
    fn set_ready(&self, ready: bool) -> Result<(), NvmlCallError>;
}

/// NVML as loaded from the system's `libnvidia-ml.so`.
pub struct SystemNvml {
    nvml: nvml_wrapper::Nvml,
}

impl std::fmt::Debug for SystemNvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemNvml").finish_non_exhaustive()
    }
}

/// Runs an NVML wrapper call, turning its error, or a panic inside it (a length past
/// NVML's buffer), into an [`NvmlCallError`] for `call`.
fn guarded<T>(
    call: &'static str,
    f: impl FnOnce() -> Result<T, nvml_wrapper::error::NvmlError>,
) -> Result<T, NvmlCallError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(NvmlCallError::new(call, e)),
        Err(_) => Err(NvmlCallError::new(
            call,
            "NVML returned a length past its own buffer; refusing its answer",
        )),
    }
}

/// `bytes` when its length is within `max`, else an error for `call`.
fn bounded(
    call: &'static str,
    what: &str,
    bytes: Vec<u8>,
    max: usize,
) -> Result<Vec<u8>, NvmlCallError> {
    if bytes.is_empty() {
        return Err(NvmlCallError::new(
            call,
            format!("NVML returned an empty {what}"),
        ));
    }
    if bytes.len() > max {
        return Err(NvmlCallError::new(
            call,
            format!(
                "NVML returned a {} byte {what}, more than its {max} byte buffer",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

impl SystemNvml {
    /// Loads `libnvidia-ml.so` and initialises NVML (`nvmlInit_v2`).
    ///
    /// # Errors
    /// When the library is absent, the driver is not loaded, or NVML fails to start.
    pub fn load() -> Result<Self, NvmlCallError> {
        guarded("nvmlInit_v2", nvml_wrapper::Nvml::init).map(|nvml| Self { nvml })
    }

    /// A handle to a GPU: NVML reports the CC settings and ready state system-wide, but
    /// `nvml-wrapper` asks for them through a device.
    fn device(&self, index: u32) -> Result<nvml_wrapper::Device<'_>, NvmlCallError> {
        guarded("nvmlDeviceGetHandleByIndex_v2", || {
            self.nvml.device_by_index(index)
        })
    }
}

impl Nvml for SystemNvml {
    fn device_count(&self) -> Result<u32, NvmlCallError> {
        guarded("nvmlDeviceGetCount_v2", || self.nvml.device_count())
    }

    fn cc_state(&self) -> Result<CcState, NvmlCallError> {
        const CALL: &str = "nvmlSystemGetConfComputeSettings";
        let device = self.device(0)?;
        let cc_enabled = guarded(CALL, || device.is_cc_enabled())?;
        let devtools = guarded(CALL, || device.is_cc_dev_mode_enabled())?;
        Ok(CcState {
            cc_enabled,
            devtools,
        })
    }

    fn attestation(&self, index: u32, nonce: &[u8; 32]) -> Result<GpuAttestation, NvmlCallError> {
        const REPORT: &str = "nvmlDeviceGetConfComputeGpuAttestationReport";
        const CERT: &str = "nvmlDeviceGetConfComputeGpuCertificate";
        let device = self.device(index)?;
        let report = guarded(REPORT, || {
            device.confidential_compute_gpu_attestation_report(*nonce)
        })?;
        let report = bounded(
            REPORT,
            "attestation report",
            report.attestation_report,
            ATTESTATION_REPORT_MAX,
        )?;
        let cert = guarded(CERT, || device.confidential_compute_gpu_certificate())?;
        let mut chain = bounded(
            CERT,
            "attestation certificate chain",
            cert.attestation_cert_chain,
            ATTESTATION_CERT_CHAIN_MAX,
        )?;
        // The chain is PEM text; drop any NUL padding NVML counted in its length.
        while chain.last() == Some(&0) {
            chain.pop();
        }
        Ok(GpuAttestation {
            report,
            cert_chain: chain,
        })
    }

    fn ready(&self) -> Result<bool, NvmlCallError> {
        let device = self.device(0)?;
        guarded("nvmlSystemGetConfComputeGpusReadyState", || {
            device.get_confidential_compute_state()
        })
    }

    fn set_ready(&self, ready: bool) -> Result<(), NvmlCallError> {
        let device = self.device(0)?;
        guarded("nvmlSystemSetConfComputeGpusReadyState", || {
            device.set_confidential_compute_state(ready)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_past_nvml_buffers_are_refused_not_panicked_on() {
        let err = bounded(
            "x",
            "report",
            vec![1; ATTESTATION_REPORT_MAX + 1],
            ATTESTATION_REPORT_MAX,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("more than its 8192 byte buffer"),
            "{err}"
        );
        assert!(bounded("x", "report", Vec::new(), 8).is_err());
        assert_eq!(bounded("x", "report", vec![7; 8], 8).unwrap(), vec![7; 8]);
        // What nvml-wrapper does with a length past the buffer: a slice index panic.
        let err = guarded::<()>("nvmlFake", || panic!("range end index out of range")).unwrap_err();
        assert_eq!(err.call, "nvmlFake");
    }

    #[test]
    fn loading_fails_cleanly_where_there_is_no_driver() {
        // CI machines have no NVIDIA driver; where one is present this only checks
        // that loading does not panic.
        if let Err(e) = SystemNvml::load() {
            assert_eq!(e.call, "nvmlInit_v2");
        }
    }
}
