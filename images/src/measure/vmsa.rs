//! The initial VMSA (`struct sev_es_save_area`, AMD APM vol. 2 table B-4) that QEMU,
//! EC2 or GCE give each vCPU, and the vCPU signature table.

use std::str::FromStr;

use super::MeasureError;

/// The VMSA page size.
pub const VMSA_LEN: usize = 4096;
/// The BSP's reset EIP.
pub const BSP_EIP: u32 = 0xFFFF_FFF0;

/// Which VMM launched the guest (the VMSA register values differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmmType {
    /// QEMU/KVM.
    #[default]
    Qemu,
    /// AWS EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl FromStr for VmmType {
    type Err = MeasureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "qemu" => Ok(Self::Qemu),
            "ec2" => Ok(Self::Ec2),
            "gce" => Ok(Self::Gce),
            _ => Err(MeasureError::Invalid(format!(
                "unknown VMM {s:?} (expected qemu, ec2 or gce)"
            ))),
        }
    }
}

/// The CPUID Fn0000_0001_EAX signature of a family/model/stepping.
#[must_use]
pub fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xF {
        (0xF, (family - 0xF) & 0xFF)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xF) << 16)
        | (family_low << 8)
        | ((model & 0xF) << 4)
        | (stepping & 0xF)
}

/// QEMU CPU model names and their family/model/stepping (sev-snp-measure's table).
const VCPU_TYPES: &[(&str, u32, u32, u32)] = &[
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// The vCPU signature of a QEMU CPU model name (case-insensitive).
///
/// # Errors
/// [`MeasureError::UnknownVcpuType`] for a name not in the table.
pub fn vcpu_type_signature(name: &str) -> Result<u32, MeasureError> {
    VCPU_TYPES
        .iter()
        .find(|(n, ..)| n.eq_ignore_ascii_case(name))
        .map(|&(_, f, m, s)| cpu_sig(f, m, s))
        .ok_or_else(|| MeasureError::UnknownVcpuType(name.to_owned()))
}

fn put(page: &mut [u8; VMSA_LEN], at: usize, bytes: &[u8]) {
    page[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Write a `vmcb_seg` (u16 selector, u16 attrib, u32 limit, u64 base).
fn seg(page: &mut [u8; VMSA_LEN], at: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
    put(page, at, &selector.to_le_bytes());
    put(page, at + 2, &attrib.to_le_bytes());
    put(page, at + 4, &limit.to_le_bytes());
    put(page, at + 8, &base.to_le_bytes());
}

const ES: usize = 0x00;
const CS: usize = 0x10;
const SS: usize = 0x20;
const DS: usize = 0x30;
const FS: usize = 0x40;
const GS: usize = 0x50;
const GDTR: usize = 0x60;
const LDTR: usize = 0x70;
const IDTR: usize = 0x80;
const TR: usize = 0x90;
const EFER: usize = 0xD0;
const CR4: usize = 0x148;
const CR0: usize = 0x158;
const DR7: usize = 0x160;
const DR6: usize = 0x168;
const RFLAGS: usize = 0x170;
const RIP: usize = 0x178;
const G_PAT: usize = 0x268;
const RDX: usize = 0x310;
const SEV_FEATURES: usize = 0x3B0;
const XCR0: usize = 0x3E8;
const MXCSR: usize = 0x408;
const X87_FCW: usize = 0x410;

/// The real-mode reset VMSA of a vCPU starting at `eip`.
#[must_use]
pub fn save_area(eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> [u8; VMSA_LEN] {
    let (cs_attr, ss_attr, tr_attr, rdx, mxcsr, fcw, g_pat) = match vmm {
        VmmType::Qemu => (
            0x9B,
            0x93,
            0x8B,
            u64::from(vcpu_sig),
            0x1F80u32,
            0x37Fu16,
            0x0007_0406_0007_0406u64,
        ),
        VmmType::Ec2 => {
            let cs = if eip == BSP_EIP { 0x9A } else { 0x9B };
            (cs, 0x92, 0x83, 0x600, 0, 0, 0x0007_0406_0007_0406)
        }
        VmmType::Gce => (0x9B, 0x93, 0x8B, 0x600, 0, 0, 0x0007_0106),
    };
    let mut page = [0u8; VMSA_LEN];
    seg(&mut page, ES, 0, 0x93, 0xFFFF, 0);
    seg(
        &mut page,
        CS,
        0xF000,
        cs_attr,
        0xFFFF,
        u64::from(eip & 0xFFFF_0000),
    );
    seg(&mut page, SS, 0, ss_attr, 0xFFFF, 0);
    seg(&mut page, DS, 0, 0x93, 0xFFFF, 0);
    seg(&mut page, FS, 0, 0x93, 0xFFFF, 0);
    seg(&mut page, GS, 0, 0x93, 0xFFFF, 0);
    seg(&mut page, GDTR, 0, 0, 0xFFFF, 0);
    seg(&mut page, LDTR, 0, 0x82, 0xFFFF, 0);
    seg(&mut page, IDTR, 0, 0, 0xFFFF, 0);
    seg(&mut page, TR, 0, tr_attr, 0xFFFF, 0);
    put(&mut page, EFER, &0x1000u64.to_le_bytes());
    put(&mut page, CR4, &0x40u64.to_le_bytes());
    put(&mut page, CR0, &0x10u64.to_le_bytes());
    put(&mut page, DR7, &0x400u64.to_le_bytes());
    put(&mut page, DR6, &0xFFFF_0FF0u64.to_le_bytes());
    put(&mut page, RFLAGS, &2u64.to_le_bytes());
    put(&mut page, RIP, &u64::from(eip & 0xFFFF).to_le_bytes());
    put(&mut page, G_PAT, &g_pat.to_le_bytes());
    put(&mut page, RDX, &rdx.to_le_bytes());
    put(&mut page, SEV_FEATURES, &sev_features.to_le_bytes());
    put(&mut page, XCR0, &1u64.to_le_bytes());
    put(&mut page, MXCSR, &mxcsr.to_le_bytes());
    put(&mut page, X87_FCW, &fcw.to_le_bytes());
    page
}

/// The protected-mode VMSA every vCPU of an SVSM guest starts with (QEMU): flat
/// 32-bit code/data segments, CR0 PE|ET, RIP = the SVSM entry point, SEV_FEATURES 1.
#[must_use]
pub fn svsm_save_area(eip: u64, vcpu_sig: u32) -> [u8; VMSA_LEN] {
    let mut page = [0u8; VMSA_LEN];
    seg(&mut page, ES, 0x10, 0xC93, 0xFFFF_FFFF, 0);
    seg(&mut page, CS, 0x08, 0xC9B, 0xFFFF_FFFF, 0);
    seg(&mut page, SS, 0x10, 0xC93, 0xFFFF_FFFF, 0);
    seg(&mut page, DS, 0x10, 0xC93, 0xFFFF_FFFF, 0);
    seg(&mut page, FS, 0x10, 0xC93, 0xFFFF_FFFF, 0);
    seg(&mut page, GS, 0, 0x93, 0xFFFF, 0);
    seg(&mut page, GDTR, 0, 0, 0xFFFF, 0);
    seg(&mut page, LDTR, 0, 0x82, 0xFFFF, 0);
    seg(&mut page, IDTR, 0, 0, 0xFFFF, 0);
    seg(&mut page, TR, 0, 0x8B, 0xFFFF, 0);
    put(&mut page, EFER, &0x1000u64.to_le_bytes());
    put(&mut page, CR4, &0x40u64.to_le_bytes());
    put(&mut page, CR0, &0x11u64.to_le_bytes());
    put(&mut page, DR7, &0x400u64.to_le_bytes());
    put(&mut page, DR6, &0xFFFF_0FF0u64.to_le_bytes());
    put(&mut page, RFLAGS, &2u64.to_le_bytes());
    put(&mut page, RIP, &eip.to_le_bytes());
    put(&mut page, G_PAT, &0x0007_0406_0007_0406u64.to_le_bytes());
    put(&mut page, RDX, &u64::from(vcpu_sig).to_le_bytes());
    put(&mut page, SEV_FEATURES, &1u64.to_le_bytes());
    put(&mut page, XCR0, &1u64.to_le_bytes());
    put(&mut page, MXCSR, &0x1F80u32.to_le_bytes());
    page
}

/// The VMSA pages of a guest: the BSP's, then one per AP.
#[derive(Debug, Clone)]
pub struct Vmsas {
    /// The BSP's page.
    pub bsp: Box<[u8; VMSA_LEN]>,
    /// Every AP's page.
    pub ap: Box<[u8; VMSA_LEN]>,
}

impl Vmsas {
    /// Real-mode VMSAs: BSP at [`BSP_EIP`], APs at `ap_eip`.
    #[must_use]
    pub fn reset(ap_eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> Self {
        Self {
            bsp: Box::new(save_area(BSP_EIP, sev_features, vcpu_sig, vmm)),
            ap: Box::new(save_area(ap_eip, sev_features, vcpu_sig, vmm)),
        }
    }

    /// The pages for `vcpus` vCPUs, in measurement order.
    pub fn pages(&self, vcpus: u32) -> impl Iterator<Item = &[u8; VMSA_LEN]> {
        (0..vcpus).map(move |i| if i == 0 { &*self.bsp } else { &*self.ap })
    }
}
