//! Where evidence comes from: the platform (CPU TEE) and GPU providers.
//!
//! The service asks a [`CpuProvider`] for evidence over the report data that binds its
//! keys, and a [`GpuProvider`] for GPU evidence over the GPU nonce. Each platform is
//! its own provider, chosen by `--tee`; a platform that is absent or incomplete is an
//! error, never a silent fall back to `sim`.
//!
//! SEV-SNP evidence comes through configfs-tsm ([`veil_attestation::tsm`]) where the
//! kernel has it (Linux 6.7+), and otherwise through the `/dev/sev-guest` device's
//! extended report ([`veil_attestation::snp::guest`]): either way, the report with the
//! certificate table the host loaded (VCEK or VLEK, ASK, ARK), in the same evidence. TDX
//! evidence is a quote from the host's Quote Generation Service over vsock, over the
//! TDREPORT from `/dev/tdx_guest` ([`veil_attestation::tdx::guest`]), when the QGS
//! answers, and otherwise from configfs-tsm (about a second per quote: the kernel polls
//! for it); either way with the DCAP collateral the host supplies as files
//! (`--tdx-collateral DIR`). The enclave never reaches the network for either (vsock
//! reaches only the host). Each quote's duration and path are logged and exported
//! (`veil_enclave_cpu_evidence_seconds`, by `source`). The CCEL event log, where the
//! firmware provides one, is read and parsed once at start and carried in every TDX
//! evidence (`ccel`, without the log area's trailing padding), so verifiers replay it to
//! the quoted RTMRs and can pin single boot components; its replay is also compared
//! with each quote's RTMR 0..=2 here, as a logged diagnostic.
//!
//! NVIDIA GPUs come through NVML ([`crate::nvml`], loaded at run time):
//! [`NvidiaGpuProvider`] refuses GPUs that are not in confidential-computing mode or
//! are in devtools mode, collects each GPU's SPDM report over the GPU nonce with its
//! certificate chain, verifies them itself with [`veil_attestation::nvidia::verify`],
//! and only then sets the GPUs' CC ready state (once), so no GPU takes work before its
//! evidence checks out. That local check runs without a network (no OCSP, no RIMs): it
//! catches a broken or substituted GPU early but is no substitute for the client's
//! verification, which is what a client must rely on. `--gpu required` refuses to
//! start without such a GPU; `optional` uses one when NVML loads and reports CC on,
//! and otherwise goes on without GPU evidence, logging why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use veil_attestation::bundle::{Evidence, GpuEvidence, SnpEvidence, TdxEvidence};
use veil_attestation::bytes::Base64Bytes;
use veil_attestation::bytes::Measurement;
use veil_attestation::checks::Checks;
use veil_attestation::claims::{GpuNonce, Platform, ReportData};
use veil_attestation::nvidia::{self, GpuPolicy, References};
use veil_attestation::sim::SimPlatform;
use veil_attestation::snp::guest as sev_guest;
use veil_attestation::tdx;
use veil_attestation::tdx::guest::{self as tdx_guest, QgsConfig};
use veil_attestation::tsm::{self, SnpCertKind};

use crate::nvml::{Nvml, NvmlCallError, SystemNvml};

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
    GpuRequired(String),
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
    /// How the last evidence was collected, as a fixed label (TDX: `qgs-vsock` or
    /// `configfs-tsm`), for metrics; `None` where the provider does not say.
    fn last_source(&self) -> Option<&'static str> {
        None
    }
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
    /// The host's TDX Quote Generation Service on vsock: when `/dev/tdx_guest` exists,
    /// quotes come from it, with configfs-tsm as the fallback. `None`: configfs-tsm only.
    pub tdx_qgs: Option<QgsConfig>,
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
        TeeChoice::Snp => Ok(Box::new(SnpProvider::new(
            tsm_root,
            PathBuf::from(SEV_GUEST),
        )?)),
        TeeChoice::Tdx => {
            let dir = host
                .tdx_collateral
                .clone()
                .ok_or(PlatformError::Unavailable {
                    platform: "Intel TDX",
                    detail: "no --tdx-collateral DIR: the host must supply the DCAP collateral \
                         (TCB info, QE identity, CRLs), since the enclave never fetches it",
                })?;
            let sources = TdxSources {
                tsm_root,
                guest_device: PathBuf::from(TDX_GUEST),
                qgs: host.tdx_qgs,
                ccel: PathBuf::from(tdx::eventlog::CCEL_PATH),
            };
            Ok(Box::new(TdxProvider::new(sources, dir)?))
        }
        TeeChoice::Auto => Err(PlatformError::NoTee),
    }
}

/// Where [`SnpProvider`] collects SEV-SNP evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnpSource {
    /// A configfs-tsm report root (normally [`CONFIGFS_TSM`]).
    Tsm(PathBuf),
    /// An SEV-SNP guest device's extended report (normally [`SEV_GUEST`]).
    SevGuest(PathBuf),
}

impl SnpSource {
    /// configfs-tsm when `tsm_root` exists, else the guest device when `sev_guest`
    /// exists.
    ///
    /// # Errors
    /// [`PlatformError::Unavailable`] when neither exists.
    pub fn select(tsm_root: &Path, sev_guest: &Path) -> Result<Self, PlatformError> {
        if tsm::available(tsm_root) {
            return Ok(Self::Tsm(tsm_root.to_path_buf()));
        }
        if sev_guest::available(sev_guest) {
            return Ok(Self::SevGuest(sev_guest.to_path_buf()));
        }
        Err(PlatformError::Unavailable {
            platform: "AMD SEV-SNP",
            detail: "neither configfs-tsm (/sys/kernel/config/tsm/report, Linux 6.7+) nor \
                     /dev/sev-guest (the sev-guest driver) is present",
        })
    }
}

/// AMD SEV-SNP through configfs-tsm, or else `/dev/sev-guest`'s extended report: the
/// report at VMPL 0 and the host's certificate table, ordered VCEK or VLEK first, then
/// ASK and ARK.
#[derive(Debug)]
pub struct SnpProvider {
    source: SnpSource,
}

impl SnpProvider {
    /// A provider using the configfs-tsm report root `tsm_root` when it exists, else the
    /// SEV-SNP guest device `sev_guest` (see [`SnpSource::select`]).
    ///
    /// # Errors
    /// When neither exists.
    pub fn new(tsm_root: PathBuf, sev_guest: PathBuf) -> Result<Self, PlatformError> {
        let source = SnpSource::select(&tsm_root, &sev_guest)?;
        Ok(Self { source })
    }

    /// Where this provider collects evidence.
    #[must_use]
    pub fn source(&self) -> &SnpSource {
        &self.source
    }
}

/// The advice when the host supplied no certificates.
const SNP_NO_CERTIFICATES: &str = "load the VCEK or VLEK with the host's SNP tooling, so the \
                                   evidence verifies offline";

impl CpuProvider for SnpProvider {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError> {
        let failed = |detail: String| PlatformError::Failed {
            platform: "snp",
            detail,
        };
        let (report, entries) = match &self.source {
            SnpSource::Tsm(root) => {
                let report = tsm::report(root, report_data.as_bytes(), Some(0))
                    .map_err(|e| failed(e.to_string()))?;
                if report.provider != "sev_guest" {
                    return Err(failed(format!(
                        "configfs-tsm provider is {:?}, not sev_guest",
                        report.provider
                    )));
                }
                let table = report.auxblob.ok_or_else(|| {
                    failed(format!(
                        "the host supplied no certificate table (auxblob is empty): \
                         {SNP_NO_CERTIFICATES}"
                    ))
                })?;
                let entries =
                    tsm::snp_certificate_table(&table).map_err(|e| failed(e.to_string()))?;
                (report.outblob, entries)
            }
            SnpSource::SevGuest(device) => {
                let ext = sev_guest::extended_report(device, report_data.as_bytes(), 0)
                    .map_err(|e| failed(e.to_string()))?;
                if ext.certificates.is_empty() {
                    return Err(failed(format!(
                        "the host supplied no certificates with the extended report from {}: \
                         {SNP_NO_CERTIFICATES}",
                        device.display()
                    )));
                }
                (ext.report, ext.certificates)
            }
        };
        let certificates = ordered_snp_certificates(&entries).map_err(failed)?;
        Ok(Evidence::Snp(SnpEvidence {
            report: Base64Bytes(report),
            certificates,
        }))
    }
}

/// The certificates of an SNP certificate table in bundle order: the endorsement key
/// (VCEK or VLEK), then the ASK (or ASVK) and ARK when present; other entries dropped.
#[cfg(test)]
fn snp_certificates(table: &[u8]) -> Result<Vec<Base64Bytes>, String> {
    let entries = tsm::snp_certificate_table(table).map_err(|e| e.to_string())?;
    ordered_snp_certificates(&entries)
}

/// Certificate-table entries (from configfs-tsm's `auxblob` or an extended report) in
/// bundle order: the endorsement key (VCEK or VLEK), then the ASK (or ASVK) and ARK when
/// present; other entries dropped.
fn ordered_snp_certificates(
    entries: &[(SnpCertKind, Vec<u8>)],
) -> Result<Vec<Base64Bytes>, String> {
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

/// Where [`TdxProvider`] collects TDX evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxSources {
    /// The configfs-tsm report root (normally [`CONFIGFS_TSM`]), used when it exists.
    pub tsm_root: PathBuf,
    /// The TDX guest device (normally [`TDX_GUEST`]): the TDREPORT the QGS quotes.
    pub guest_device: PathBuf,
    /// The host's Quote Generation Service; `None` leaves the guest device unused.
    pub qgs: Option<QgsConfig>,
    /// The CCEL event log (normally [`tdx::eventlog::CCEL_PATH`]), read once at start.
    pub ccel: PathBuf,
}

/// How long the QGS is set aside after it failed, while configfs-tsm stands in.
const QGS_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);
/// The `path` logged for a quote from the QGS.
const QGS_PATH: &str = "qgs-vsock";
/// The `path` logged for a quote from configfs-tsm.
const TSM_PATH: &str = "configfs-tsm";

/// Intel TDX: the quote from the host's Quote Generation Service over vsock (over the
/// TDREPORT of `/dev/tdx_guest`) when it answers, else from configfs-tsm; with the
/// host-supplied collateral.
///
/// A QGS failure with configfs-tsm present falls back to configfs-tsm and sets the QGS
/// aside for 15 minutes (so a host without one costs one connect timeout, not one per
/// refresh); with the QGS alone, its failure is the error and the next refresh retries.
#[derive(Debug)]
pub struct TdxProvider {
    /// The configfs-tsm report root, when it exists.
    tsm_root: Option<PathBuf>,
    /// The guest device and the QGS, when enabled and the device exists.
    qgs: Option<(PathBuf, QgsConfig)>,
    /// When the QGS last failed with configfs-tsm to stand in.
    qgs_failed_at: Mutex<Option<Instant>>,
    /// The path of the last quote ([`QGS_PATH`] or [`TSM_PATH`]).
    last_path: Mutex<Option<&'static str>>,
    collateral: BTreeMap<String, Base64Bytes>,
    /// The CCEL event log, when present and parsed: its bytes for the evidence (`None`
    /// when over the bundle's limit) and its replayable events, a diagnostic against
    /// each quote's RTMRs.
    ccel: Option<Ccel>,
}

/// The CCEL event log as read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ccel {
    /// The log without its trailing padding, for the evidence; `None` when larger than
    /// [`veil_attestation::bundle::MAX_TDX_CCEL`].
    bytes: Option<Vec<u8>>,
    /// Its replayable events.
    events: Vec<tdx::eventlog::Event>,
}

impl TdxProvider {
    /// A provider over `sources`, with the collateral files in `collateral_dir` and the
    /// CCEL event log when present (both read once, at start: the log does not change
    /// after boot).
    ///
    /// # Errors
    /// When neither configfs-tsm nor the guest device with a QGS is available, or the
    /// collateral cannot be read.
    pub fn new(sources: TdxSources, collateral_dir: PathBuf) -> Result<Self, PlatformError> {
        let tsm_root = tsm::available(&sources.tsm_root).then_some(sources.tsm_root);
        let qgs = sources
            .qgs
            .filter(|_| tdx_guest::available(&sources.guest_device))
            .map(|config| (sources.guest_device, config));
        if tsm_root.is_none() && qgs.is_none() {
            return Err(PlatformError::Unavailable {
                platform: "Intel TDX",
                detail: "neither configfs-tsm (/sys/kernel/config/tsm/report, Linux 6.7+) nor \
                         /dev/tdx_guest with the host's Quote Generation Service is available",
            });
        }
        let failed = |detail: String| PlatformError::Failed {
            platform: "tdx",
            detail,
        };
        let collateral = read_collateral(&collateral_dir).map_err(failed)?;
        tracing::info!(
            configfs_tsm = tsm_root.is_some(),
            qgs = %qgs.as_ref().map_or_else(
                || "off".to_owned(),
                |(device, c)| format!("vsock {}:{} with {}", c.cid, c.port, device.display())
            ),
            "TDX quote sources (the QGS is preferred)"
        );
        Ok(Self {
            tsm_root,
            qgs,
            qgs_failed_at: Mutex::new(None),
            last_path: Mutex::new(None),
            collateral,
            ccel: read_ccel(&sources.ccel),
        })
    }

    /// Logs whether the CCEL's replay gives the quote's RTMR 0..=3, as verifiers require
    /// of a log the evidence carries (a TD whose RTMR3 is extended at run time, beyond
    /// the CCEL, fails there). A diagnostic only: verifiers judge the evidence.
    fn check_ccel(&self, quote: &[u8]) {
        let Some(Ccel { events, bytes }) = &self.ccel else {
            return;
        };
        let (Ok(replayed), Ok(quote)) = (tdx::eventlog::replay(events), tdx::Quote::parse(quote))
        else {
            return;
        };
        let differ: Vec<usize> = replayed
            .iter()
            .zip(&quote.report.rtmr)
            .enumerate()
            .filter(|(_, (r, q))| r != q)
            .map(|(i, _)| i)
            .collect();
        if differ.is_empty() {
            tracing::debug!("the CCEL event log replays to the quote's RTMR0-3");
        } else if bytes.is_some() {
            tracing::error!(rtmrs = ?differ, "the CCEL event log does not replay to these RTMRs of the quote; verifiers will refuse this evidence");
        } else {
            tracing::warn!(rtmrs = ?differ, "the CCEL event log (not carried) does not replay to these RTMRs of the quote");
        }
    }
}

/// The CCEL event log, when the file exists and parses: its bytes up to the end of its
/// last record (the firmware's log area is mostly `0xFF` padding), and its replayable
/// events. A log that does not parse is logged and left out (carrying it would make
/// every verifier refuse the evidence); one over the bundle's limit is logged and kept
/// for the diagnostic only.
fn read_ccel(path: &Path) -> Option<Ccel> {
    use std::io::Read as _;
    let limit = u64::try_from(tdx::eventlog::MAX_CCEL).unwrap_or(u64::MAX) + 1;
    let mut bytes = Vec::new();
    if let Err(e) = std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes)) {
        tracing::debug!(path = %path.display(), error = %e, "no CCEL event log");
        return None;
    }
    let parsed = tdx::eventlog::log_end(&bytes)
        .and_then(|end| Ok((end, tdx::eventlog::parse_ccel(&bytes)?)));
    match parsed {
        Ok((end, events)) => {
            bytes.truncate(end);
            let fits = bytes.len() <= veil_attestation::bundle::MAX_TDX_CCEL;
            if fits {
                tracing::info!(path = %path.display(), events = events.len(), bytes = bytes.len(), "CCEL event log parsed; carried in the evidence");
            } else {
                tracing::warn!(path = %path.display(), bytes = bytes.len(), limit = veil_attestation::bundle::MAX_TDX_CCEL, "CCEL event log exceeds the bundle's limit; left out of the evidence");
            }
            Some(Ccel {
                bytes: fits.then_some(bytes),
                events,
            })
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "CCEL event log does not parse; left out of the evidence");
            None
        }
    }
}

/// A quote source for [`collect_quote`].
type QuoteFn<'a> = &'a dyn Fn() -> Result<Vec<u8>, String>;

/// A quote from `qgs` when given and not set aside, else from `tsm`, with the path it
/// came by. A QGS failure with `tsm` to stand in sets the QGS aside (`failed_at`) for
/// [`QGS_RETRY_AFTER`]; without `tsm` it is the error.
fn collect_quote(
    qgs: Option<QuoteFn<'_>>,
    tsm: Option<QuoteFn<'_>>,
    failed_at: &Mutex<Option<Instant>>,
) -> Result<(Vec<u8>, &'static str), String> {
    if let Some(qgs) = qgs {
        let mut last = failed_at.lock().unwrap_or_else(PoisonError::into_inner);
        let set_aside = tsm.is_some() && last.is_some_and(|t| t.elapsed() < QGS_RETRY_AFTER);
        if !set_aside {
            match qgs() {
                Ok(quote) => {
                    *last = None;
                    return Ok((quote, QGS_PATH));
                }
                Err(e) if tsm.is_none() => return Err(format!("quote through the QGS: {e}")),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        retry_after_s = QGS_RETRY_AFTER.as_secs(),
                        "TDX quote through the QGS failed; using configfs-tsm"
                    );
                    *last = Some(Instant::now());
                }
            }
        }
    }
    let tsm = tsm.ok_or("no TDX quote source")?;
    tsm().map(|quote| (quote, TSM_PATH))
}

/// A TDX quote through configfs-tsm.
fn tsm_quote(root: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
    let report = tsm::report(root, report_data, None).map_err(|e| e.to_string())?;
    if report.provider != "tdx_guest" {
        return Err(format!(
            "configfs-tsm provider is {:?}, not tdx_guest",
            report.provider
        ));
    }
    Ok(report.outblob)
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
        let rd = report_data.as_bytes();
        let qgs = self.qgs.as_ref().map(|(device, config)| {
            move || tdx_guest::quote(device, rd, config).map_err(|e| e.to_string())
        });
        let tsm = self
            .tsm_root
            .as_ref()
            .map(|root| move || tsm_quote(root, rd));
        let started = Instant::now();
        let (quote, path) = collect_quote(
            qgs.as_ref().map(|f| f as QuoteFn<'_>),
            tsm.as_ref().map(|f| f as QuoteFn<'_>),
            &self.qgs_failed_at,
        )
        .map_err(|detail| PlatformError::Failed {
            platform: "tdx",
            detail,
        })?;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(path, ms, bytes = quote.len(), "TDX quote collected");
        *self
            .last_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(path);
        self.check_ccel(&quote);
        Ok(Evidence::Tdx(TdxEvidence {
            quote: Base64Bytes(quote),
            collateral: self.collateral.clone(),
            ccel: self
                .ccel
                .as_ref()
                .and_then(|c| c.bytes.clone())
                .map(Base64Bytes),
        }))
    }

    fn last_source(&self) -> Option<&'static str> {
        *self
            .last_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The platform name in NVIDIA GPU errors.
const NVIDIA_GPU: &str = "NVIDIA GPU";

/// NVIDIA GPUs in confidential-computing mode, through NVML.
///
/// Each [`GpuProvider::evidence`] call collects every GPU's report over the nonce and
/// its certificate chain, and verifies them locally (expected nonce, pinned root,
/// signatures, validity; OCSP allowed to be missing, since the enclave has no
/// network). The first time all GPUs verify, it sets the GPUs' CC ready state, which
/// lets them take work; a GPU whose evidence fails leaves them not ready.
pub struct NvidiaGpuProvider<N: Nvml> {
    nvml: N,
    count: u32,
    /// Whether the ready state has been set (it is set once).
    ready_set: Mutex<bool>,
}

impl<N: Nvml> std::fmt::Debug for NvidiaGpuProvider<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvidiaGpuProvider")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

fn gpu_failed(detail: String) -> PlatformError {
    PlatformError::Failed {
        platform: NVIDIA_GPU,
        detail,
    }
}

/// "GPU 0 is" or "GPUs 0-3 are": NVML reports CC settings for all GPUs at once.
fn gpus_are(count: u32) -> String {
    match count {
        0 | 1 => "GPU 0 is".to_owned(),
        n => format!("GPUs 0-{} are", n - 1),
    }
}

impl<N: Nvml> NvidiaGpuProvider<N> {
    /// A provider over `nvml`, refusing when NVML sees no GPU, when confidential
    /// computing is off, or when devtools mode is on.
    ///
    /// # Errors
    /// [`PlatformError::Failed`] saying which, or which NVML call failed.
    pub fn new(nvml: N) -> Result<Self, PlatformError> {
        let count = nvml
            .device_count()
            .map_err(|e| gpu_failed(format!("counting GPUs: {e}")))?;
        if count == 0 {
            return Err(gpu_failed("NVML sees no GPU; refusing".to_owned()));
        }
        let state = nvml.cc_state().map_err(|e| {
            gpu_failed(format!(
                "reading the confidential-computing state: {e}; refusing"
            ))
        })?;
        if !state.cc_enabled {
            return Err(gpu_failed(format!(
                "{} not in confidential-computing mode (CC state: off); refusing",
                gpus_are(count)
            )));
        }
        if state.devtools {
            return Err(gpu_failed(format!(
                "{} in confidential-computing devtools mode (debuggable, so no protection); \
                 refusing",
                gpus_are(count)
            )));
        }
        match nvml.ready() {
            Ok(ready) => tracing::info!(
                gpus = count,
                already_ready = ready,
                "NVIDIA GPUs in confidential-computing mode"
            ),
            Err(e) => {
                tracing::info!(gpus = count, ready_state = %e, "NVIDIA GPUs in confidential-computing mode")
            }
        }
        Ok(Self {
            nvml,
            count,
            ready_set: Mutex::new(false),
        })
    }

    /// The number of GPUs.
    #[must_use]
    pub fn gpu_count(&self) -> u32 {
        self.count
    }

    /// Sets the GPUs' ready state unless it has been set.
    fn mark_ready(&self) -> Result<(), PlatformError> {
        let mut set = self
            .ready_set
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !*set {
            self.nvml
                .set_ready(true)
                .map_err(|e| gpu_failed(format!("evidence verified, but {e}")))?;
            *set = true;
            tracing::info!(
                gpus = self.count,
                "GPU evidence verified locally; GPUs marked ready. The local check (no OCSP, \
                 no RIMs) is no substitute for the client's verification"
            );
        }
        Ok(())
    }
}

impl<N: Nvml> GpuProvider for NvidiaGpuProvider<N> {
    fn evidence(&self, nonce: &GpuNonce) -> Result<Vec<Evidence>, PlatformError> {
        let policy = GpuPolicy {
            allow_missing_ocsp: true,
            ..GpuPolicy::default()
        };
        let refs = References {
            expected_nonce: Some(nonce.as_bytes()),
            rims: &[],
            ocsp: &[],
        };
        let at = OffsetDateTime::now_utc();
        let mut out = Vec::new();
        for index in 0..self.count {
            let got = self
                .nvml
                .attestation(index, nonce.as_bytes())
                .map_err(|e| gpu_failed(format!("GPU {index}: {e}")))?;
            let mut checks = Checks::new();
            let verified = nvidia::verify(
                &got.report,
                &got.cert_chain,
                &refs,
                &policy,
                at,
                &mut checks,
            )
            .map_err(|e| {
                gpu_failed(format!(
                    "GPU {index}: the enclave's own check of its evidence failed at {e}; \
                     GPUs not marked ready"
                ))
            })?;
            tracing::debug!(
                gpu = index,
                driver = %verified.driver_version,
                vbios = %verified.vbios_version,
                "GPU evidence verified locally"
            );
            out.push(Evidence::NvidiaGpu(GpuEvidence {
                report: Base64Bytes(got.report),
                certificate_chain: Base64Bytes(got.cert_chain),
                // No OCSP responses or RIMs: the enclave has no network to fetch them.
                ocsp: Vec::new(),
                rims: Vec::new(),
            }));
        }
        self.mark_ready()?;
        Ok(out)
    }
}

/// The GPU provider for a mode.
///
/// # Errors
/// `required` fails when NVML cannot be loaded or [`NvidiaGpuProvider::new`] refuses:
/// the enclave then refuses to start.
pub fn gpu_provider(mode: GpuMode) -> Result<Box<dyn GpuProvider>, PlatformError> {
    match mode {
        GpuMode::Off => Ok(Box::new(NoGpu)),
        GpuMode::Optional => Ok(optional_gpu(SystemNvml::load())),
        GpuMode::Required => {
            let nvml = SystemNvml::load().map_err(|e| {
                PlatformError::GpuRequired(format!(
                    "NVML (libnvidia-ml.so) cannot be loaded: {e}; refusing"
                ))
            })?;
            let provider = NvidiaGpuProvider::new(nvml)
                .map_err(|e| PlatformError::GpuRequired(e.to_string()))?;
            Ok(Box::new(provider))
        }
    }
}

/// `--gpu optional`: the NVIDIA provider when NVML loaded and accepts the GPUs, else
/// [`NoGpu`], logging why.
fn optional_gpu<N: Nvml + 'static>(loaded: Result<N, NvmlCallError>) -> Box<dyn GpuProvider> {
    let nvml = match loaded {
        Ok(nvml) => nvml,
        Err(e) => {
            tracing::info!(reason = %e, "--gpu optional: NVML not available; serving without GPU evidence");
            return Box::new(NoGpu);
        }
    };
    match NvidiaGpuProvider::new(nvml) {
        Ok(provider) => Box::new(provider),
        Err(e) => {
            tracing::warn!(reason = %e, "--gpu optional: not using the GPUs; serving without GPU evidence");
            Box::new(NoGpu)
        }
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
        // This machine has neither configfs-tsm nor /dev/sev-guest (tests run outside a CVM).
        if !Path::new(CONFIGFS_TSM).exists() && !Path::new(SEV_GUEST).exists() {
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

    #[test]
    fn snp_prefers_configfs_tsm_then_the_guest_device() {
        let dir = std::env::temp_dir().join(format!("veil-snp-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (tsm_root, device) = (dir.join("tsm/report"), dir.join("sev-guest"));
        let err = SnpProvider::new(tsm_root.clone(), device.clone()).unwrap_err();
        assert!(
            matches!(err, PlatformError::Unavailable { .. })
                && err.to_string().contains("/dev/sev-guest"),
            "{err}"
        );
        std::fs::write(&device, b"").unwrap();
        let provider = SnpProvider::new(tsm_root.clone(), device.clone()).unwrap();
        assert_eq!(provider.source(), &SnpSource::SevGuest(device.clone()));
        std::fs::create_dir_all(&tsm_root).unwrap();
        assert_eq!(
            SnpSource::select(&tsm_root, &device).unwrap(),
            SnpSource::Tsm(tsm_root.clone())
        );
        std::fs::remove_file(&device).unwrap();
        assert_eq!(
            SnpSource::select(&tsm_root, &device).unwrap(),
            SnpSource::Tsm(tsm_root.clone())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_guest_device_path_reports_its_failure_as_snp_evidence_errors() {
        // The device vanished after selection, and a file that is not the device.
        let dir = std::env::temp_dir().join(format!("veil-snp-device-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let device = dir.join("sev-guest");
        let provider = SnpProvider {
            source: SnpSource::SevGuest(device.clone()),
        };
        let data = ReportData([0; 64]);
        let err = provider.evidence(&data).unwrap_err().to_string();
        assert!(
            err.starts_with("snp evidence:") && err.contains("no such device"),
            "{err}"
        );
        std::fs::write(&device, b"").unwrap();
        let err = provider.evidence(&data).unwrap_err().to_string();
        assert!(err.contains("SNP_GET_EXT_REPORT"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    mod nvidia_gpu {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use super::super::*;
        use crate::nvml::{CcState, GpuAttestation};

        const SAMPLE_NONCE: &str =
            "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

        fn sample_dir() -> PathBuf {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/testdata/nvidia/nvtrust-h100-pcie-sample")
        }

        /// The (GPU index, nonce) pairs the fake was asked for.
        type Asked = Arc<Mutex<Vec<(u32, [u8; 32])>>>;

        /// NVML answering with the real nvtrust H100 sample, whatever the nonce.
        #[derive(Debug, Clone)]
        struct FakeNvml {
            count: u32,
            cc: CcState,
            report: Vec<u8>,
            chain: Vec<u8>,
            asked: Asked,
            set_ready: Arc<AtomicUsize>,
        }

        impl FakeNvml {
            fn sample() -> Self {
                let hex_text =
                    std::fs::read_to_string(sample_dir().join("attestation_report.hex")).unwrap();
                Self {
                    count: 1,
                    cc: CcState {
                        cc_enabled: true,
                        devtools: false,
                    },
                    report: hex::decode(hex_text.trim()).unwrap(),
                    chain: std::fs::read(sample_dir().join("cert_chain.pem")).unwrap(),
                    asked: Arc::default(),
                    set_ready: Arc::default(),
                }
            }
            fn ready_calls(&self) -> usize {
                self.set_ready.load(Ordering::SeqCst)
            }
        }

        impl Nvml for FakeNvml {
            fn device_count(&self) -> Result<u32, NvmlCallError> {
                Ok(self.count)
            }
            fn cc_state(&self) -> Result<CcState, NvmlCallError> {
                Ok(self.cc)
            }
            fn attestation(
                &self,
                index: u32,
                nonce: &[u8; 32],
            ) -> Result<GpuAttestation, NvmlCallError> {
                self.asked.lock().unwrap().push((index, *nonce));
                Ok(GpuAttestation {
                    report: self.report.clone(),
                    cert_chain: self.chain.clone(),
                })
            }
            fn ready(&self) -> Result<bool, NvmlCallError> {
                Ok(self.ready_calls() > 0)
            }
            fn set_ready(&self, ready: bool) -> Result<(), NvmlCallError> {
                assert!(ready);
                self.set_ready.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }

        fn nonce(text: &str) -> GpuNonce {
            GpuNonce::from_slice(&hex::decode(text).unwrap()).unwrap()
        }

        #[test]
        fn the_samples_own_nonce_gives_its_evidence_and_sets_ready_once() {
            let fake = FakeNvml::sample();
            let provider = NvidiaGpuProvider::new(fake.clone()).unwrap();
            assert_eq!(provider.gpu_count(), 1);
            assert_eq!(fake.ready_calls(), 0, "not ready before evidence verifies");
            let n = nonce(SAMPLE_NONCE);
            let evidence = provider.evidence(&n).unwrap();
            assert_eq!(evidence.len(), 1);
            let Evidence::NvidiaGpu(gpu) = &evidence[0] else {
                panic!("not GPU evidence: {}", evidence[0].kind());
            };
            assert_eq!(gpu.report.0, fake.report);
            assert_eq!(gpu.certificate_chain.0, fake.chain);
            assert!(gpu.ocsp.is_empty() && gpu.rims.is_empty());
            assert_eq!(fake.ready_calls(), 1);
            // A refresh collects again and does not set the ready state again.
            assert_eq!(provider.evidence(&n).unwrap(), evidence);
            assert_eq!(fake.ready_calls(), 1);
            assert_eq!(*fake.asked.lock().unwrap(), vec![(0, n.0), (0, n.0)]);
        }

        #[test]
        fn another_nonce_fails_the_nonce_check_and_leaves_gpus_not_ready() {
            let fake = FakeNvml::sample();
            let provider = NvidiaGpuProvider::new(fake.clone()).unwrap();
            let other = nonce(&"ab".repeat(32));
            let err = provider.evidence(&other).unwrap_err().to_string();
            assert!(err.contains("report.nonce"), "{err}");
            assert!(err.contains(&"ab".repeat(32)), "{err}");
            assert!(err.contains("not marked ready"), "{err}");
            assert_eq!(fake.ready_calls(), 0);
        }

        #[test]
        fn cc_off_devtools_and_no_gpu_are_refused_at_construction() {
            let mut off = FakeNvml::sample();
            off.cc.cc_enabled = false;
            let err = NvidiaGpuProvider::new(off.clone()).unwrap_err().to_string();
            assert!(
                err.contains(
                    "GPU 0 is not in confidential-computing mode (CC state: off); refusing"
                ),
                "{err}"
            );
            off.count = 2;
            let err = NvidiaGpuProvider::new(off).unwrap_err().to_string();
            assert!(err.contains("GPUs 0-1 are not in"), "{err}");

            let mut devtools = FakeNvml::sample();
            devtools.cc.devtools = true;
            let err = NvidiaGpuProvider::new(devtools).unwrap_err().to_string();
            assert!(err.contains("devtools mode"), "{err}");

            let mut none = FakeNvml::sample();
            none.count = 0;
            let err = NvidiaGpuProvider::new(none.clone())
                .unwrap_err()
                .to_string();
            assert!(err.contains("no GPU"), "{err}");
            assert_eq!(none.ready_calls(), 0);
        }

        #[test]
        fn a_corrupted_report_is_refused_and_gpus_stay_not_ready() {
            let mut fake = FakeNvml::sample();
            // Flip a bit in the signed measurements (past the request and header).
            let at = fake.report.len() / 2;
            fake.report[at] ^= 0x01;
            let provider = NvidiaGpuProvider::new(fake.clone()).unwrap();
            let err = provider
                .evidence(&nonce(SAMPLE_NONCE))
                .unwrap_err()
                .to_string();
            assert!(err.contains("GPU 0"), "{err}");
            assert!(err.contains("report.signature"), "{err}");
            assert!(err.contains("not marked ready"), "{err}");
            assert_eq!(fake.ready_calls(), 0);

            let mut truncated = FakeNvml::sample();
            truncated.report.truncate(100);
            let provider = NvidiaGpuProvider::new(truncated.clone()).unwrap();
            let err = provider
                .evidence(&nonce(SAMPLE_NONCE))
                .unwrap_err()
                .to_string();
            assert!(err.contains("report.parse"), "{err}");
            assert_eq!(truncated.ready_calls(), 0);
        }

        #[test]
        fn every_gpu_must_verify_before_any_is_marked_ready() {
            let mut fake = FakeNvml::sample();
            fake.count = 2;
            let provider = NvidiaGpuProvider::new(fake.clone()).unwrap();
            let evidence = provider.evidence(&nonce(SAMPLE_NONCE)).unwrap();
            assert_eq!(evidence.len(), 2);
            assert_eq!(fake.ready_calls(), 1);
        }

        #[test]
        fn optional_falls_back_to_no_gpu_with_a_reason() {
            let n = nonce(SAMPLE_NONCE);
            let missing: Result<FakeNvml, _> = Err(NvmlCallError::new(
                "nvmlInit_v2",
                "libnvidia-ml.so: not found",
            ));
            assert!(optional_gpu(missing).evidence(&n).unwrap().is_empty());
            let mut off = FakeNvml::sample();
            off.cc.cc_enabled = false;
            assert!(
                optional_gpu(Ok(off.clone()))
                    .evidence(&n)
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(off.ready_calls(), 0);
            let on = FakeNvml::sample();
            assert_eq!(optional_gpu(Ok(on.clone())).evidence(&n).unwrap().len(), 1);
            assert_eq!(on.ready_calls(), 1);
            // This machine has no NVIDIA driver (CI): optional serves without GPUs.
            if SystemNvml::load().is_err() {
                assert!(
                    gpu_provider(GpuMode::Optional)
                        .unwrap()
                        .evidence(&n)
                        .unwrap()
                        .is_empty()
                );
                let err = gpu_provider(GpuMode::Required).err().unwrap().to_string();
                assert!(err.contains("--gpu required: NVML"), "{err}");
            }
        }
    }

    fn hex_guid(text: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&hex::decode(text).unwrap());
        out
    }

    #[test]
    fn tdx_prefers_the_qgs_and_falls_back_to_configfs_tsm() {
        use std::cell::Cell;
        let failed_at = Mutex::new(None);
        let qgs_calls = Cell::new(0);
        let good_qgs = || {
            qgs_calls.set(qgs_calls.get() + 1);
            Ok(b"qgs".to_vec())
        };
        let bad_qgs = || {
            qgs_calls.set(qgs_calls.get() + 1);
            Err("connecting to the QGS at vsock 2:4050: connection reset".to_owned())
        };
        let tsm = || Ok(b"tsm".to_vec());
        let collect = |qgs: Option<QuoteFn<'_>>, tsm: Option<QuoteFn<'_>>| {
            collect_quote(qgs, tsm, &failed_at)
        };
        // Both: the QGS.
        assert_eq!(
            collect(Some(&good_qgs), Some(&tsm)).unwrap(),
            (b"qgs".to_vec(), QGS_PATH)
        );
        // The QGS fails: configfs-tsm, and the QGS is set aside.
        assert_eq!(
            collect(Some(&bad_qgs), Some(&tsm)).unwrap(),
            (b"tsm".to_vec(), TSM_PATH)
        );
        assert_eq!(qgs_calls.get(), 2);
        assert_eq!(collect(Some(&good_qgs), Some(&tsm)).unwrap().1, TSM_PATH);
        assert_eq!(qgs_calls.get(), 2, "set aside, not asked");
        // After the retry interval it is asked again.
        if let Some(long_ago) = Instant::now().checked_sub(QGS_RETRY_AFTER + Duration::from_secs(1))
        {
            *failed_at.lock().unwrap() = Some(long_ago);
            assert_eq!(collect(Some(&good_qgs), Some(&tsm)).unwrap().1, QGS_PATH);
            assert!(failed_at.lock().unwrap().is_none());
        }
        // The QGS alone: its failure is the error, and every call retries it.
        *failed_at.lock().unwrap() = Some(Instant::now());
        let before = qgs_calls.get();
        let err = collect(Some(&bad_qgs), None).unwrap_err();
        assert!(err.contains("quote through the QGS: connecting"), "{err}");
        assert_eq!(qgs_calls.get(), before + 1);
        // configfs-tsm alone.
        assert_eq!(collect(None, Some(&tsm)).unwrap().1, TSM_PATH);
        assert_eq!(collect(None, None).unwrap_err(), "no TDX quote source");
    }

    #[test]
    fn tdx_sources_need_configfs_tsm_or_the_device_with_a_qgs() {
        let dir = std::env::temp_dir().join(format!("veil-tdx-sources-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let collateral = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/tdx/dcap-qvl-v4-uptodate/collateral");
        let mut sources = TdxSources {
            tsm_root: dir.join("tsm/report"),
            guest_device: dir.join("tdx_guest"),
            qgs: Some(QgsConfig::default()),
            ccel: dir.join("CCEL"),
        };
        let err = TdxProvider::new(sources.clone(), collateral.clone()).unwrap_err();
        assert!(err.to_string().contains("/dev/tdx_guest"), "{err}");
        // The device without a QGS is not a source.
        std::fs::write(&sources.guest_device, b"").unwrap();
        sources.qgs = None;
        assert!(TdxProvider::new(sources.clone(), collateral.clone()).is_err());
        // The device with a QGS is; a file that is not the device fails at the ioctl,
        // as evidence, with no configfs-tsm to fall back to.
        sources.qgs = Some(QgsConfig::default());
        let provider = TdxProvider::new(sources.clone(), collateral.clone()).unwrap();
        assert!(provider.ccel.is_none(), "no CCEL file");
        #[cfg(target_os = "linux")]
        {
            let err = provider.evidence(&ReportData([7; 64])).unwrap_err();
            assert!(err.to_string().contains("TDX_CMD_GET_REPORT0"), "{err}");
        }
        // A CCEL that parses is kept, without its padding; one that does not is left
        // out.
        use tdx::eventlog::build;
        let mut log = build::spec_id(false);
        log.extend(build::event(1, 4, &[9; 48], None, b"sep"));
        let mut area = log.clone();
        area.extend([0xFF; 4096]);
        std::fs::write(&sources.ccel, &area).unwrap();
        let read = read_ccel(&sources.ccel).unwrap();
        assert_eq!(read.events.len(), 1);
        assert_eq!(read.bytes.as_ref(), Some(&log));
        let provider = TdxProvider::new(sources.clone(), collateral.clone()).unwrap();
        assert_eq!(provider.ccel, Some(read));
        std::fs::write(&sources.ccel, &log[..log.len() - 1]).unwrap();
        assert!(read_ccel(&sources.ccel).is_none());
        // The real dstack sample's events: all of them carried.
        let report = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/testdata/tdx/dstack-v4-eventlog/quote-report.json"),
        )
        .unwrap();
        let dstack = build::from_dstack_report(&report).unwrap();
        std::fs::write(&sources.ccel, &dstack).unwrap();
        let read = read_ccel(&sources.ccel).unwrap();
        assert_eq!(read.events.len(), 28);
        assert_eq!(read.bytes.unwrap(), dstack[..dstack.len() - 1024]);
        // A log over the bundle's limit is parsed for the diagnostic, not carried.
        let mut big = build::spec_id(false);
        let data = vec![0u8; veil_attestation::bundle::MAX_TDX_CCEL];
        big.extend(build::event(1, 4, &[9; 48], None, &data));
        std::fs::write(&sources.ccel, &big).unwrap();
        let read = read_ccel(&sources.ccel).unwrap();
        assert_eq!((read.events.len(), read.bytes), (1, None));
        std::fs::remove_dir_all(&dir).unwrap();
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
