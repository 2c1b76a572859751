//! Where evidence comes from: the platform (CPU TEE) and GPU providers.
//!
//! The service asks a [`CpuProvider`] for evidence over the report data that binds its
//! keys, and a [`GpuProvider`] for GPU evidence over the GPU nonce. Each platform is
//! its own provider, chosen by `--tee`; a platform that is absent or incomplete is an
//! error, never a silent fall back to `sim`.
//!
//! SEV-SNP and TDX evidence come through configfs-tsm ([`veil_attestation::tsm`]): the
//! SNP report with the certificate table the host loaded (VCEK or VLEK, ASK, ARK), and
//! the TDX quote with the DCAP collateral the host supplies as files
//! (`--tdx-collateral DIR`). The enclave never reaches the network for either. The
//! NVIDIA GPU provider is not in this build: `--gpu required` fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use veil_attestation::bundle::{Evidence, SnpEvidence, TdxEvidence};
use veil_attestation::bytes::Base64Bytes;
use veil_attestation::bytes::Measurement;
use veil_attestation::claims::{GpuNonce, Platform, ReportData};
use veil_attestation::sim::SimPlatform;
use veil_attestation::tdx;
use veil_attestation::tsm::{self, SnpCertKind};

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

/// Where the host supplies TDX collateral (`--tdx-collateral`).
#[derive(Debug, Clone, Default)]
pub struct HostInputs {
    /// A directory whose files are the DCAP collateral (TCB info, QE identity, CRLs and
    /// their chains), copied into the bundle by file name.
    pub tdx_collateral: Option<PathBuf>,
}

/// The CPU provider for a choice (`auto` resolved first).
///
/// # Errors
/// When the platform is not present, or its inputs are missing.
pub fn cpu_provider(
    choice: TeeChoice,
    host: &HostInputs,
) -> Result<Box<dyn CpuProvider>, PlatformError> {
    let choice = match choice {
        TeeChoice::Auto => detect(Path::new("/"))?,
        other => other,
    };
    let tsm_root = PathBuf::from(CONFIGFS_TSM);
    match choice {
        TeeChoice::Sim => Ok(Box::new(SimProvider::new()?)),
        TeeChoice::Snp => Ok(Box::new(SnpProvider::new(tsm_root)?)),
        TeeChoice::Tdx => {
            let dir = host
                .tdx_collateral
                .clone()
                .ok_or(PlatformError::Unavailable {
                    platform: "Intel TDX",
                    detail: "no --tdx-collateral DIR: the host must supply the DCAP collateral \
                         (TCB info, QE identity, CRLs), since the enclave never fetches it",
                })?;
            Ok(Box::new(TdxProvider::new(tsm_root, dir)?))
        }
        TeeChoice::Auto => Err(PlatformError::NoTee),
    }
}

fn tsm_unavailable(platform: &'static str, root: &Path) -> Result<(), PlatformError> {
    if tsm::available(root) {
        return Ok(());
    }
    Err(PlatformError::Unavailable {
        platform,
        detail: "configfs-tsm (/sys/kernel/config/tsm/report, Linux 6.7+) is not present; \
                 veil collects evidence only through it",
    })
}

/// AMD SEV-SNP through configfs-tsm: the report at VMPL 0 and the host's certificate
/// table, ordered VCEK or VLEK first, then ASK and ARK.
#[derive(Debug)]
pub struct SnpProvider {
    root: PathBuf,
}

impl SnpProvider {
    /// A provider using the configfs-tsm report root `root`.
    ///
    /// # Errors
    /// When `root` does not exist.
    pub fn new(root: PathBuf) -> Result<Self, PlatformError> {
        tsm_unavailable("AMD SEV-SNP", &root)?;
        Ok(Self { root })
    }
}

impl CpuProvider for SnpProvider {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError> {
        let failed = |detail: String| PlatformError::Failed {
            platform: "snp",
            detail,
        };
        let report = tsm::report(&self.root, report_data.as_bytes(), Some(0))
            .map_err(|e| failed(e.to_string()))?;
        if report.provider != "sev_guest" {
            return Err(failed(format!(
                "configfs-tsm provider is {:?}, not sev_guest",
                report.provider
            )));
        }
        let table = report.auxblob.ok_or_else(|| {
            failed(
                "the host supplied no certificate table (auxblob is empty): load the VCEK \
                 or VLEK with the host's SNP tooling, so the evidence verifies offline"
                    .to_owned(),
            )
        })?;
        let certificates = snp_certificates(&table).map_err(failed)?;
        Ok(Evidence::Snp(SnpEvidence {
            report: Base64Bytes(report.outblob),
            certificates,
        }))
    }
}

/// The certificates of an SNP certificate table in bundle order: the endorsement key
/// (VCEK or VLEK), then the ASK (or ASVK) and ARK when present; other entries dropped.
fn snp_certificates(table: &[u8]) -> Result<Vec<Base64Bytes>, String> {
    let entries = tsm::snp_certificate_table(table).map_err(|e| e.to_string())?;
    let find = |kind: SnpCertKind| {
        entries
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, der)| Base64Bytes(der.clone()))
    };
    let endorsement = find(SnpCertKind::Vcek)
        .or_else(|| find(SnpCertKind::Vlek))
        .ok_or("the host's certificate table has neither a VCEK nor a VLEK")?;
    let mut certs = vec![endorsement];
    certs.extend(find(SnpCertKind::Ask));
    certs.extend(find(SnpCertKind::Ark));
    Ok(certs)
}

/// Intel TDX through configfs-tsm: the quote, with the host-supplied collateral.
#[derive(Debug)]
pub struct TdxProvider {
    root: PathBuf,
    collateral: BTreeMap<String, Base64Bytes>,
}

impl TdxProvider {
    /// A provider using the configfs-tsm report root `root` and the collateral files in
    /// `collateral_dir` (read once, at start).
    ///
    /// # Errors
    /// When `root` does not exist or the collateral cannot be read.
    pub fn new(root: PathBuf, collateral_dir: PathBuf) -> Result<Self, PlatformError> {
        tsm_unavailable("Intel TDX", &root)?;
        let failed = |detail: String| PlatformError::Failed {
            platform: "tdx",
            detail,
        };
        let collateral = read_collateral(&collateral_dir).map_err(failed)?;
        Ok(Self { root, collateral })
    }
}

/// The known collateral files in `dir` (the layout `veil-verify tdx-quote --help`
/// gives), checked to parse at start so a host's mistake fails before serving.
fn read_collateral(dir: &Path) -> Result<BTreeMap<String, Base64Bytes>, String> {
    let files = tdx::collateral::read_dir_files(dir).map_err(|e| e.to_string())?;
    if files.is_empty() {
        return Err(format!(
            "--tdx-collateral {}: no collateral files (tcb_info.json, ...)",
            dir.display()
        ));
    }
    tdx::Collateral::from_files(&files)
        .map_err(|e| format!("--tdx-collateral {}: {e}", dir.display()))?;
    Ok(files
        .into_iter()
        .map(|(name, bytes)| (name, Base64Bytes(bytes)))
        .collect())
}

impl CpuProvider for TdxProvider {
    fn platform(&self) -> Platform {
        Platform::Tdx
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError> {
        let failed = |detail: String| PlatformError::Failed {
            platform: "tdx",
            detail,
        };
        let report = tsm::report(&self.root, report_data.as_bytes(), None)
            .map_err(|e| failed(e.to_string()))?;
        if report.provider != "tdx_guest" {
            return Err(failed(format!(
                "configfs-tsm provider is {:?}, not tdx_guest",
                report.provider
            )));
        }
        Ok(Evidence::Tdx(TdxEvidence {
            quote: Base64Bytes(report.outblob),
            collateral: self.collateral.clone(),
        }))
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
    fn hardware_choices_fail_closed_without_their_interfaces() {
        let host = HostInputs::default();
        // This machine has no configfs-tsm (tests run outside a CVM).
        if !Path::new(CONFIGFS_TSM).exists() {
            assert!(cpu_provider(TeeChoice::Snp, &host).is_err());
        }
        let err = cpu_provider(TeeChoice::Tdx, &host).err().unwrap();
        assert!(err.to_string().contains("--tdx-collateral"), "{err}");
        assert!(gpu_provider(GpuMode::Required).is_err());
        assert_eq!(
            cpu_provider(TeeChoice::Sim, &host).unwrap().platform(),
            Platform::Sim
        );
    }

    #[test]
    fn snp_certificates_are_ordered_endorsement_first() {
        fn entry(guid: [u8; 16], offset: u32, len: u32) -> Vec<u8> {
            let mut e = guid.to_vec();
            e.extend_from_slice(&offset.to_le_bytes());
            e.extend_from_slice(&len.to_le_bytes());
            e
        }
        let ark = hex_guid("c0b406a4a803495297433fb6014cd0ae");
        let vlek = hex_guid("a8074bc2a25a483eaae639c045a0b8a1");
        let mut table = entry(ark, 72, 3);
        table.extend(entry(vlek, 75, 4));
        table.extend([0u8; 24]);
        table.extend(b"ARKVLEK");
        let certs = snp_certificates(&table).unwrap();
        assert_eq!(
            certs,
            vec![Base64Bytes(b"VLEK".to_vec()), Base64Bytes(b"ARK".to_vec())]
        );
        let only_ark = [entry(ark, 48, 3), vec![0; 24], b"ARK".to_vec()].concat();
        assert!(
            snp_certificates(&only_ark)
                .unwrap_err()
                .contains("neither a VCEK nor a VLEK")
        );
    }

    fn hex_guid(text: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&hex::decode(text).unwrap());
        out
    }

    #[test]
    fn tdx_collateral_is_read_by_file_name_and_must_parse() {
        let dir = std::env::temp_dir().join(format!("veil-collateral-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            read_collateral(&dir)
                .unwrap_err()
                .contains("no collateral files")
        );
        std::fs::write(dir.join("tcb_info.json"), b"{}").unwrap();
        assert!(
            read_collateral(&dir).is_err(),
            "incomplete collateral is refused"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let real = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/tdx/dcap-qvl-v4-uptodate/collateral");
        let files = read_collateral(&real).unwrap();
        assert!(files.contains_key("tcb_info.json") && files.contains_key("pck_crl.der"));
    }
}
