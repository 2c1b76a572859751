//! Expected launch measurements of a confidential VM, computed from its boot inputs.
//!
//! - AMD SEV-SNP: the launch digest (the report's `MEASUREMENT`), as AMD's PSP builds
//!   it from the pages QEMU (or EC2/GCE) hands to `SNP_LAUNCH_UPDATE`:
//!   [`snp::launch_digest`]. Also the legacy SEV and SEV-ES digests
//!   ([`snp::sev_launch_digest`], [`snp::sev_es_launch_digest`]).
//! - Intel TDX: MRTD from the TDVF metadata of the firmware ([`tdx::mrtd`]), and the
//!   RTMR1/RTMR2 values of a direct kernel boot ([`tdx::rtmr1`], [`tdx::rtmr2`]); plus
//!   the TD HOB QEMU builds (RTMR0's first event) and an event-log replay.
//!
//! Everything the firmware contributes (page ranges, reset vector, hashes-table
//! address, TDVF sections) is parsed from the firmware file itself
//! ([`ovmf::Firmware`]); nothing is hard-coded per firmware build. Parsing never
//! panics: every read is bounds-checked and a malformed input is a [`MeasureError`].

pub mod gctx;
pub mod ovmf;
pub mod sev_hashes;
pub mod snp;
pub mod tdx;
pub mod vmsa;

/// Why a measurement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// The firmware's GUIDed footer table is missing or malformed.
    #[error("OVMF footer table: {0}")]
    FooterTable(String),
    /// A footer-table entry the computation needs is absent.
    #[error("OVMF footer table: missing the {0} entry")]
    MissingEntry(&'static str),
    /// The SEV metadata (`ASEV`) table is malformed.
    #[error("OVMF SEV metadata: {0}")]
    SevMetadata(String),
    /// The TDVF metadata (`TDVF`) table is missing or malformed.
    #[error("TDVF metadata: {0}")]
    Tdvf(String),
    /// The firmware (or SVSM) image cannot be mapped as the VMM maps it.
    #[error("{what}: {detail}")]
    Image {
        /// Which image.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// SNP: a kernel was given, but the firmware has no `SNP_KERNEL_HASHES` section.
    #[error("Kernel specified but OVMF metadata doesn't include SNP_KERNEL_HASHES section")]
    NoKernelHashesSection,
    /// SEV/SEV-ES: a kernel was given, but the firmware has no (non-zero) hashes table.
    #[error("Kernel specified but OVMF doesn't support kernel/initrd/cmdline measurement")]
    KernelHashesUnsupported,
    /// The `SNP_KERNEL_HASHES` section or the hashes-table offset cannot hold the table.
    #[error("SEV hashes table: {0}")]
    HashesTable(String),
    /// A vCPU type that is not in the signature table.
    #[error(
        "unknown vCPU type {0:?} (known: EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome[-v1..v3], EPYC-Milan[-v1,v2], EPYC-Genoa[-v1], EPYC-Turin)"
    )]
    UnknownVcpuType(String),
    /// QEMU puts the vCPU signature in the VMSA, so it must be given.
    #[error("the vCPU signature (a vCPU type or an explicit signature) is required for QEMU")]
    MissingVcpuSignature,
    /// Zero vCPUs.
    #[error("the number of vCPUs must be at least 1")]
    NoVcpus,
    /// An invalid argument (a seed of the wrong length, an unknown VMM name...).
    #[error("{0}")]
    Invalid(String),
    /// The kernel is not a bzImage/PE image this code can patch and hash.
    #[error("kernel: {0}")]
    Kernel(String),
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// SHA-384 of `data`.
pub(crate) fn sha384(data: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, data).as_ref());
    out
}

/// SHA-384 of the concatenation of `parts`.
pub(crate) fn sha384_parts(parts: &[&[u8]]) -> [u8; 48] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA384);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 48];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A GUID in the little-endian ("bytes_le", EFI) byte layout, from its text fields.
pub(crate) const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// Little-endian integer reads that fail instead of panicking.
pub(crate) fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}
