//! The AMD SEV-SNP launch digest (and the legacy SEV / SEV-ES launch digests), as
//! `sev-snp-measure` 0.0.13 computes them.
//!
//! SNP order of measurement:
//! 1. the firmware, as NORMAL pages, mapped to end at 4 GiB (the result is the "OVMF
//!    hash", which may be given instead as a seed);
//! 2. (SVSM mode) the SVSM image, ending at firmware GPA − variable-store size, then the
//!    SVSM's own metadata sections instead of the firmware's;
//! 3. every SEV metadata section, in table order (SEC_MEM → ZERO pages, UNMEASURED on
//!    GCE; SECRETS; CPUID, after all others on EC2; SVSM_CAA → ZERO; KERNEL_HASHES →
//!    the hashes page when a kernel is given, ZERO pages otherwise);
//! 4. one VMSA per vCPU, BSP first.

use super::gctx::{Gctx, PAGE_SIZE, PageType};
use super::ovmf::{Firmware, SevSection, SevSectionType};
use super::sev_hashes::SevHashes;
use super::vmsa::{self, VmmType, Vmsas};
use super::{MeasureError, sha384};

/// What the SNP launch needs from the firmware, parsed from it or given directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpLayout {
    /// The SEV metadata sections, in table order.
    pub sections: Vec<SevSection>,
    /// The AP reset EIP (SEV-ES reset block).
    pub sev_es_reset_eip: u32,
    /// The SEV hashes-table GPA, when the firmware has that entry.
    pub sev_hashes_table_gpa: Option<u32>,
}

impl SnpLayout {
    /// Parse the layout from a firmware image.
    ///
    /// # Errors
    /// When the footer table, the reset block or the SEV metadata is missing or bad.
    pub fn from_firmware(fw: &Firmware<'_>) -> Result<Self, MeasureError> {
        Ok(Self {
            sections: fw.sev_metadata()?,
            sev_es_reset_eip: fw.sev_es_reset_eip()?,
            sev_hashes_table_gpa: fw.sev_hashes_table_gpa()?,
        })
    }

    fn has_kernel_hashes(&self) -> bool {
        self.sections
            .iter()
            .any(|s| s.section_type == SevSectionType::SnpKernelHashes)
    }
}

/// The inputs of [`launch_digest`].
#[derive(Debug, Clone, Default)]
pub struct SnpInputs<'a> {
    /// The firmware image (needed for its layout even when `ovmf_hash` is given).
    pub ovmf: &'a [u8],
    /// A precomputed OVMF hash (GCTX after the firmware pages): used as the seed
    /// instead of measuring the firmware pages.
    pub ovmf_hash: Option<[u8; 48]>,
    /// The kernel (bzImage) of a measured direct boot.
    pub kernel: Option<&'a [u8]>,
    /// The initrd.
    pub initrd: Option<&'a [u8]>,
    /// The kernel command line.
    pub append: Option<&'a str>,
    /// The number of vCPUs.
    pub vcpus: u32,
    /// The vCPU signature (CPUID(1).EAX); required for QEMU.
    pub vcpu_sig: Option<u32>,
    /// SEV_FEATURES of the VMSAs (0x1 SNPActive; 0x21 with DebugSwap).
    pub guest_features: u64,
    /// Which VMM built the VMSAs.
    pub vmm: VmmType,
    /// SVSM mode: the COCONUT-SVSM image and the firmware's variable-store size.
    pub svsm: Option<SvsmInputs<'a>>,
}

/// SVSM mode inputs.
#[derive(Debug, Clone, Copy)]
pub struct SvsmInputs<'a> {
    /// The SVSM image.
    pub image: &'a [u8],
    /// The size of the OVMF variable store that sits between the SVSM and the firmware.
    pub ovmf_vars_size: u64,
}

/// Everything the SNP digest depends on, with the firmware already reduced to its
/// hash and layout (what dstack's verifier is given).
#[derive(Debug, Clone)]
pub struct SnpParts<'a> {
    /// The OVMF hash (GCTX after the firmware pages).
    pub ovmf_hash: [u8; 48],
    /// The firmware layout.
    pub layout: &'a SnpLayout,
    /// The direct-boot hashes, when a kernel is given.
    pub hashes: Option<SevHashes>,
    /// The number of vCPUs.
    pub vcpus: u32,
    /// The vCPU signature; required for QEMU.
    pub vcpu_sig: Option<u32>,
    /// SEV_FEATURES.
    pub guest_features: u64,
    /// The VMM.
    pub vmm: VmmType,
}

/// The GCTX digest after the firmware pages alone (`--mode snp:ovmf-hash`).
///
/// # Errors
/// When the image is not a whole number of pages or larger than 4 GiB.
pub fn ovmf_hash(ovmf: &[u8]) -> Result<[u8; 48], MeasureError> {
    let gpa = image_gpa("OVMF", ovmf.len() as u64, super::ovmf::FOUR_GIB)?;
    let mut gctx = Gctx::new();
    gctx.update_normal_pages(gpa, ovmf)?;
    Ok(gctx.ld())
}

fn image_gpa(what: &'static str, len: u64, end: u64) -> Result<u64, MeasureError> {
    if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
        return Err(MeasureError::Image {
            what,
            detail: format!("{len} bytes is not a non-zero whole number of 4 KiB pages"),
        });
    }
    end.checked_sub(len).ok_or_else(|| MeasureError::Image {
        what,
        detail: format!("{len} bytes does not fit below {end:#x}"),
    })
}

fn vcpu_sig_for(vmm: VmmType, sig: Option<u32>) -> Result<u32, MeasureError> {
    match (vmm, sig) {
        (_, Some(sig)) => Ok(sig),
        (VmmType::Qemu, None) => Err(MeasureError::MissingVcpuSignature),
        // EC2 and GCE put a fixed value in RDX.
        (VmmType::Ec2 | VmmType::Gce, None) => Ok(0),
    }
}

/// The SNP launch digest (the attestation report's `MEASUREMENT`).
///
/// # Errors
/// A malformed firmware or SVSM image, a kernel with a firmware that cannot measure
/// it, zero vCPUs, or a missing vCPU signature under QEMU.
pub fn launch_digest(inputs: &SnpInputs<'_>) -> Result<[u8; 48], MeasureError> {
    let fw = Firmware::parse(inputs.ovmf)?;
    let hashes = inputs
        .kernel
        .map(|k| SevHashes::new(k, inputs.initrd, inputs.append));
    if let Some(svsm) = &inputs.svsm {
        return svsm_launch_digest(inputs, &fw, svsm);
    }
    let layout = SnpLayout::from_firmware(&fw)?;
    let seed = match inputs.ovmf_hash {
        Some(seed) => seed,
        None => ovmf_hash(inputs.ovmf)?,
    };
    launch_digest_from_parts(&SnpParts {
        ovmf_hash: seed,
        layout: &layout,
        hashes,
        vcpus: inputs.vcpus,
        vcpu_sig: inputs.vcpu_sig,
        guest_features: inputs.guest_features,
        vmm: inputs.vmm,
    })
}

/// The SNP launch digest from an OVMF hash and layout.
///
/// # Errors
/// As [`launch_digest`].
pub fn launch_digest_from_parts(parts: &SnpParts<'_>) -> Result<[u8; 48], MeasureError> {
    if parts.vcpus == 0 {
        return Err(MeasureError::NoVcpus);
    }
    let sig = vcpu_sig_for(parts.vmm, parts.vcpu_sig)?;
    if parts.hashes.is_some() && !parts.layout.has_kernel_hashes() {
        return Err(MeasureError::NoKernelHashesSection);
    }
    let hashes_page = match &parts.hashes {
        None => None,
        Some(h) => {
            let gpa = parts
                .layout
                .sev_hashes_table_gpa
                .ok_or(MeasureError::MissingEntry("SEV hash table"))?;
            Some(h.page((gpa as usize) & 0xFFF)?)
        }
    };
    let mut gctx = Gctx::from_seed(parts.ovmf_hash);
    update_metadata(
        &mut gctx,
        &parts.layout.sections,
        hashes_page.as_ref(),
        parts.vmm,
    )?;
    let vmsas = Vmsas::reset(
        parts.layout.sev_es_reset_eip,
        parts.guest_features,
        sig,
        parts.vmm,
    );
    for page in vmsas.pages(parts.vcpus) {
        gctx.update_vmsa_page(page);
    }
    Ok(gctx.ld())
}

/// Measure the metadata sections in table order.
///
/// # Errors
/// An unknown section type, or a hashes section that is not one page.
pub fn update_metadata(
    gctx: &mut Gctx,
    sections: &[SevSection],
    hashes_page: Option<&[u8; 4096]>,
    vmm: VmmType,
) -> Result<(), MeasureError> {
    for s in sections {
        let gpa = u64::from(s.gpa);
        let size = u64::from(s.size);
        match s.section_type {
            SevSectionType::SnpSecMem if vmm == VmmType::Gce => {
                gctx.update_empty_pages(PageType::Unmeasured, gpa, size);
            }
            SevSectionType::SnpSecMem | SevSectionType::SvsmCaa => {
                gctx.update_empty_pages(PageType::Zero, gpa, size);
            }
            SevSectionType::SnpSecrets => gctx.update(PageType::Secrets, gpa, &[0; 48]),
            SevSectionType::Cpuid => {
                if vmm != VmmType::Ec2 {
                    gctx.update(PageType::Cpuid, gpa, &[0; 48]);
                }
            }
            SevSectionType::SnpKernelHashes => match hashes_page {
                Some(page) => {
                    if size != PAGE_SIZE {
                        return Err(MeasureError::HashesTable(format!(
                            "the SNP_KERNEL_HASHES section is {size:#x} bytes, not one page"
                        )));
                    }
                    gctx.update(PageType::Normal, gpa, &sha384(page));
                }
                None => gctx.update_empty_pages(PageType::Zero, gpa, size),
            },
            SevSectionType::Other(t) => {
                return Err(MeasureError::SevMetadata(format!(
                    "unknown section type {t:#x}"
                )));
            }
        }
    }
    if vmm == VmmType::Ec2 {
        for s in sections
            .iter()
            .filter(|s| s.section_type == SevSectionType::Cpuid)
        {
            gctx.update(PageType::Cpuid, u64::from(s.gpa), &[0; 48]);
        }
    }
    Ok(())
}

fn svsm_launch_digest(
    inputs: &SnpInputs<'_>,
    fw: &Firmware<'_>,
    svsm: &SvsmInputs<'_>,
) -> Result<[u8; 48], MeasureError> {
    if inputs.vcpus == 0 {
        return Err(MeasureError::NoVcpus);
    }
    if inputs.vmm != VmmType::Qemu {
        return Err(MeasureError::Invalid(
            "SVSM mode is only defined for QEMU".into(),
        ));
    }
    if inputs.kernel.is_some() {
        return Err(MeasureError::Invalid(
            "SVSM mode does not measure a kernel (no kernel hashes)".into(),
        ));
    }
    let sig = vcpu_sig_for(inputs.vmm, inputs.vcpu_sig)?;
    let mut gctx = match inputs.ovmf_hash {
        Some(seed) => Gctx::from_seed(seed),
        None => Gctx::from_seed(ovmf_hash(inputs.ovmf)?),
    };
    let svsm_end =
        fw.gpa()
            .checked_sub(svsm.ovmf_vars_size)
            .ok_or_else(|| MeasureError::Image {
                what: "SVSM",
                detail: "the variable-store size is larger than the firmware's GPA".into(),
            })?;
    let svsm_gpa = image_gpa("SVSM", svsm.image.len() as u64, svsm_end)?;
    gctx.update_normal_pages(svsm_gpa, svsm.image)?;
    let svsm_fw = Firmware::parse(svsm.image)?;
    update_metadata(&mut gctx, &svsm_fw.sev_metadata()?, None, inputs.vmm)?;
    let offset = svsm_fw
        .svsm_launch_offset()?
        .ok_or(MeasureError::MissingEntry("SVSM info"))?;
    let page = vmsa::svsm_save_area(svsm_gpa + u64::from(offset), sig);
    for _ in 0..inputs.vcpus {
        gctx.update_vmsa_page(&page);
    }
    Ok(gctx.ld())
}

/// The legacy SEV launch digest (SHA-256 of the firmware, then the hashes table when a
/// kernel is given).
///
/// # Errors
/// A malformed firmware, or a kernel with a firmware lacking a hashes table.
pub fn sev_launch_digest(
    ovmf: &[u8],
    kernel: Option<&[u8]>,
    initrd: Option<&[u8]>,
    append: Option<&str>,
) -> Result<[u8; 32], MeasureError> {
    let ctx = sev_common(ovmf, kernel, initrd, append)?.0;
    Ok(finish256(ctx))
}

/// The SEV-ES launch digest: as SEV, then every vCPU's VMSA.
///
/// # Errors
/// As [`sev_launch_digest`], plus a missing reset block, zero vCPUs or a missing vCPU
/// signature under QEMU.
pub fn sev_es_launch_digest(
    ovmf: &[u8],
    kernel: Option<&[u8]>,
    initrd: Option<&[u8]>,
    append: Option<&str>,
    vcpus: u32,
    vcpu_sig: Option<u32>,
    vmm: VmmType,
) -> Result<[u8; 32], MeasureError> {
    if vcpus == 0 {
        return Err(MeasureError::NoVcpus);
    }
    let (mut ctx, fw) = sev_common(ovmf, kernel, initrd, append)?;
    let sig = vcpu_sig_for(vmm, vcpu_sig)?;
    let vmsas = Vmsas::reset(fw.sev_es_reset_eip()?, 0, sig, vmm);
    for page in vmsas.pages(vcpus) {
        ctx.update(page);
    }
    Ok(finish256(ctx))
}

fn sev_common<'a>(
    ovmf: &'a [u8],
    kernel: Option<&[u8]>,
    initrd: Option<&[u8]>,
    append: Option<&str>,
) -> Result<(ring::digest::Context, Firmware<'a>), MeasureError> {
    let fw = Firmware::parse(ovmf)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(ovmf);
    if let Some(kernel) = kernel {
        if !matches!(fw.sev_hashes_table_gpa()?, Some(gpa) if gpa != 0) {
            return Err(MeasureError::KernelHashesUnsupported);
        }
        ctx.update(&SevHashes::new(kernel, initrd, append).table());
    }
    Ok((ctx, fw))
}

fn finish256(ctx: ring::digest::Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
