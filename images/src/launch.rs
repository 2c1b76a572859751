//! Expected launch measurements of a built image, from its artifacts (kernel, initrd,
//! command line) and the firmware the host names: the manifest's `snp` and `tdx`
//! entries. The computation is [`crate::measure`]'s, exactly what
//! `veil-verify measure snp|tdx` runs.

use crate::manifest::{SnpLaunch, TdxLaunch};
use crate::measure::MeasureError;
use crate::measure::snp::{self, SnpInputs};
use crate::measure::tdx::{self, PageAddOrder, TdxInputs};
use crate::measure::vmsa::{self, VmmType};

/// The boot artifacts a measurement covers.
#[derive(Debug, Clone, Copy)]
pub struct Boot<'a> {
    /// The kernel.
    pub kernel: &'a [u8],
    /// The initrd.
    pub initrd: &'a [u8],
    /// The command line.
    pub cmdline: &'a str,
}

fn hex(bytes: &[u8]) -> String {
    crate::build::fsutil::hex(bytes)
}

/// The SEV-SNP entry for a QEMU launch with kernel hashes (`kernel-hashes=on`), default
/// guest features (SNPActive), `vcpus` vCPUs of `vcpu_type`.
///
/// # Errors
/// A firmware without `SNP_KERNEL_HASHES` (not an AmdSev build), an unknown vCPU type,
/// zero vCPUs.
pub fn snp_entry(
    boot: &Boot<'_>,
    firmware_name: &str,
    firmware: &[u8],
    vcpus: u32,
    vcpu_type: &str,
) -> Result<SnpLaunch, MeasureError> {
    let digest = snp::launch_digest(&SnpInputs {
        ovmf: firmware,
        ovmf_hash: None,
        kernel: Some(boot.kernel),
        initrd: Some(boot.initrd),
        append: Some(boot.cmdline),
        vcpus,
        vcpu_sig: Some(vmsa::vcpu_type_signature(vcpu_type)?),
        guest_features: 0x1,
        vmm: VmmType::Qemu,
        svsm: None,
    })?;
    Ok(SnpLaunch {
        firmware: firmware_name.to_owned(),
        firmware_sha256: Some(hex(&crate::measure::sha256(firmware))),
        vcpus,
        vcpu_type: vcpu_type.to_owned(),
        launch_measurement: hex(&digest),
    })
}

/// The TDX entry for a QEMU (9 or later) direct boot with `memory` (QEMU `-m` text) of
/// RAM.
///
/// # Errors
/// A firmware without TDVF metadata, a kernel that cannot be hashed, a bad size.
pub fn tdx_entry(
    boot: &Boot<'_>,
    firmware_name: &str,
    firmware: &[u8],
    memory: &str,
) -> Result<TdxLaunch, MeasureError> {
    let m = tdx::measure(&TdxInputs {
        ovmf: firmware,
        kernel: Some(boot.kernel),
        initrd: Some(boot.initrd),
        append: Some(boot.cmdline),
        memory_size: parse_memory(memory)?,
        order: PageAddOrder::for_qemu_major(9),
    })?;
    Ok(TdxLaunch {
        firmware: firmware_name.to_owned(),
        firmware_sha256: Some(hex(&crate::measure::sha256(firmware))),
        memory: memory.to_owned(),
        mr_td: hex(&m.mrtd),
        rtmr1: m.rtmr1.map(|r| hex(&r)),
        rtmr2: m.rtmr2.map(|r| hex(&r)),
    })
}

/// QEMU `-m` syntax: bytes, or a number with a K/M/G/T suffix (binary units).
///
/// # Errors
/// Anything else, or zero.
pub fn parse_memory(text: &str) -> Result<u64, MeasureError> {
    let t = text.trim();
    let bad =
        || MeasureError::Invalid(format!("memory {text:?} is not a size (bytes, or K/M/G/T)"));
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'B' => 0,
                _ => return Err(bad()),
            };
            (t.get(..i).unwrap_or_default(), shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(bad)
}
