//! `veil-verify measure`: compute the launch measurements a confidential VM must
//! report, from its boot inputs (firmware, kernel, initrd, command line, vCPUs...), so
//! an auditor can compare them with a report's `MEASUREMENT` (SEV-SNP) or a quote's
//! MRTD/RTMRs (TDX).
//!
//! Exit codes: 0 computed, 2 usage or I/O error (or inputs that cannot be measured).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use veil_images::measure::snp::{self, SnpInputs, SvsmInputs};
use veil_images::measure::tdx::{self, PageAddOrder, TdxInputs};
use veil_images::measure::vmsa::{self, VmmType};

use crate::output;

/// Which platform's measurement.
#[derive(Debug, clap::Subcommand)]
pub enum Platform {
    /// The AMD SEV-SNP launch digest (the report's MEASUREMENT), printed as hex on the
    /// last line.
    Snp(SnpArgs),
    /// Intel TDX: MRTD, and RTMR1/RTMR2 of a direct kernel boot.
    Tdx(TdxArgs),
}

/// `measure snp` arguments.
#[derive(Debug, clap::Args)]
pub struct SnpArgs {
    /// The firmware image (OVMF.fd; an AmdSevX64 build for measured direct boot).
    #[arg(long)]
    pub ovmf: PathBuf,
    /// A precomputed OVMF hash (96 hex digits) used instead of measuring the firmware
    /// pages; --ovmf is still read for its metadata.
    #[arg(long)]
    pub ovmf_hash: Option<String>,
    /// The kernel (bzImage) of a measured direct boot.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The initrd.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (`-append`).
    #[arg(long, allow_hyphen_values = true)]
    pub append: Option<String>,
    /// The number of vCPUs.
    #[arg(long)]
    pub vcpus: u32,
    /// The QEMU CPU model (EPYC-v4, EPYC-Milan, EPYC-Genoa...).
    #[arg(long)]
    pub vcpu_type: Option<String>,
    /// The vCPU signature (CPUID(1).EAX, hex), instead of --vcpu-type.
    #[arg(long)]
    pub vcpu_sig: Option<String>,
    /// SEV_FEATURES of the VMSAs (hex): 0x1 SNPActive (the default); 0x21 adds
    /// DebugSwap (host Linux 6.6 to 6.7).
    #[arg(long, default_value = "0x1")]
    pub guest_features: String,
    /// The VMM: qemu, ec2 or gce.
    #[arg(long, default_value = "qemu")]
    pub vmm: String,
    /// SVSM mode: the COCONUT-SVSM image (needs --vars-size).
    #[arg(long, requires = "vars_size")]
    pub svsm: Option<PathBuf>,
    /// SVSM mode: the size of the OVMF variable store, in bytes.
    #[arg(long)]
    pub vars_size: Option<u64>,
}

/// `measure tdx` arguments.
#[derive(Debug, clap::Args)]
pub struct TdxArgs {
    /// The unified firmware image (OVMF.fd passed as -bios), with TDVF metadata.
    #[arg(long)]
    pub ovmf: PathBuf,
    /// The kernel (bzImage/PE) of a direct boot: enables RTMR1 and RTMR2.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The initrd.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (`-append`).
    #[arg(long, requires = "kernel", allow_hyphen_values = true)]
    pub append: Option<String>,
    /// Guest RAM: bytes, or with a K/M/G/T suffix (QEMU's -m).
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// The QEMU version (MAJOR[.MINOR...]): 8.x adds TDVF pages in two passes, 9 and
    /// later in one.
    #[arg(long, default_value = "9", conflicts_with = "two_pass")]
    pub qemu_version: String,
    /// Force the two-pass (QEMU 8.x) page-add order.
    #[arg(long)]
    pub two_pass: bool,
}

/// Run the command.
pub fn run(platform: &Platform) -> ExitCode {
    let result = match platform {
        Platform::Snp(a) => run_snp(a),
        Platform::Tdx(a) => run_tdx(a),
    };
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => output::usage_error(e),
    }
}

fn parse_hex_u64(what: &str, text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(t, 16).map_err(|e| format!("{what} {text:?} is not hex: {e}"))
}

fn read_opt(path: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    path.map(output::read).transpose()
}

fn run_snp(a: &SnpArgs) -> Result<Vec<String>, String> {
    let ovmf = output::read(&a.ovmf)?;
    let kernel = read_opt(a.kernel.as_deref())?;
    let initrd = read_opt(a.initrd.as_deref())?;
    let svsm = read_opt(a.svsm.as_deref())?;
    let ovmf_hash = a
        .ovmf_hash
        .as_deref()
        .map(|h| {
            hex::decode(h.trim())
                .ok()
                .and_then(|v| <[u8; 48]>::try_from(v).ok())
                .ok_or_else(|| "--ovmf-hash must be 48 bytes (96 hex digits)".to_owned())
        })
        .transpose()?;
    let vcpu_sig = match (&a.vcpu_sig, &a.vcpu_type) {
        (Some(sig), _) => Some(
            u32::try_from(parse_hex_u64("--vcpu-sig", sig)?)
                .map_err(|_| "--vcpu-sig is larger than 32 bits".to_owned())?,
        ),
        (None, Some(t)) => Some(vmsa::vcpu_type_signature(t).map_err(|e| e.to_string())?),
        (None, None) => None,
    };
    let vmm: VmmType = a
        .vmm
        .parse()
        .map_err(|e: veil_images::measure::MeasureError| e.to_string())?;
    let inputs = SnpInputs {
        ovmf: &ovmf,
        ovmf_hash,
        kernel: kernel.as_deref(),
        initrd: initrd.as_deref(),
        append: a.append.as_deref(),
        vcpus: a.vcpus,
        vcpu_sig,
        guest_features: parse_hex_u64("--guest-features", &a.guest_features)?,
        vmm,
        svsm: svsm.as_deref().map(|image| SvsmInputs {
            image,
            ovmf_vars_size: a.vars_size.unwrap_or_default(),
        }),
    };
    let digest = snp::launch_digest(&inputs).map_err(|e| e.to_string())?;
    Ok(vec![
        "SEV-SNP launch digest (SHA-384; the attestation report's MEASUREMENT):".to_owned(),
        hex::encode(digest),
    ])
}

/// QEMU `-m` syntax: bytes, or a number with a K/M/G/T suffix (binary units).
fn parse_memory(text: &str) -> Result<u64, String> {
    veil_images::launch::parse_memory(text)
        .map_err(|_| format!("--memory {text:?} is not a size (bytes, or with a K/M/G/T suffix)"))
}

fn run_tdx(a: &TdxArgs) -> Result<Vec<String>, String> {
    let ovmf = output::read(&a.ovmf)?;
    let kernel = read_opt(a.kernel.as_deref())?;
    let initrd = read_opt(a.initrd.as_deref())?;
    let memory_size = parse_memory(&a.memory)?;
    let order = if a.two_pass {
        PageAddOrder::TwoPass
    } else {
        let major: u32 = a
            .qemu_version
            .split('.')
            .next()
            .and_then(|m| m.trim().parse().ok())
            .ok_or_else(|| format!("--qemu-version {:?} is not MAJOR[.MINOR]", a.qemu_version))?;
        PageAddOrder::for_qemu_major(major)
    };
    let m = tdx::measure(&TdxInputs {
        ovmf: &ovmf,
        kernel: kernel.as_deref(),
        initrd: initrd.as_deref(),
        append: a.append.as_deref(),
        memory_size,
        order,
    })
    .map_err(|e| e.to_string())?;
    let order_name = match order {
        PageAddOrder::TwoPass => "two-pass, QEMU 8.x",
        PageAddOrder::SinglePass => "single-pass, QEMU 9+",
    };
    let mut lines = vec![
        format!("# TDX measurements (memory {memory_size:#x} bytes, page-add order {order_name})"),
        "# rtmr0 is not computed: it needs QEMU's ACPI tables and the firmware's boot option; rtmr3 is runtime only".to_owned(),
        format!("td_hob_sha384: {}", hex::encode(m.td_hob_sha384)),
        format!("cfv_sha384: {}", hex::encode(m.cfv_sha384)),
    ];
    match (m.kernel_authenticode, m.rtmr1, m.rtmr2, m.measured_cmdline) {
        (Some(auth), Some(r1), Some(r2), Some(cmdline)) => {
            lines.push(format!("measured_cmdline: {cmdline:?}"));
            lines.push(format!("kernel_authenticode: {}", hex::encode(auth)));
            lines.push(format!("rtmr1: {}", hex::encode(r1)));
            lines.push(format!("rtmr2: {}", hex::encode(r2)));
        }
        _ => lines.push("# rtmr1, rtmr2: not computed (no --kernel)".to_owned()),
    }
    lines.push(format!("mrtd: {}", hex::encode(m.mrtd)));
    Ok(lines)
}
