//! Intel TDX: MRTD, the TD HOB, and the RTMRs of a direct kernel boot under TDVF (OVMF),
//! as QEMU and the TDX module build them (dstack-mr's model).
//!
//! - MRTD ([`mrtd`]): for each TDVF section in table order, each 4 KiB page gets a
//!   `MEM.PAGE.ADD` block (unless `PAGE_AUG`) and, when `MR_EXTEND`, sixteen
//!   `MR.EXTEND` blocks with 256 bytes of firmware each. QEMU 8.x adds every page of a
//!   section before extending them ([`PageAddOrder::TwoPass`]); QEMU 9+ does both per
//!   page ([`PageAddOrder::SinglePass`]).
//! - RTMR0 starts with the TD HOB QEMU builds ([`td_hob`]); the rest of RTMR0 needs
//!   QEMU's ACPI blobs and the firmware's boot option, so [`rtmr0`] takes those digests.
//! - RTMR1 ([`rtmr1`]): the Authenticode SHA-384 of the kernel as QEMU patched it
//!   ([`patch_kernel`], [`authenticode_sha384`]) and four fixed events.
//! - RTMR2 ([`rtmr2`]): the command line the kernel received (UTF-16LE + NUL) and the
//!   initrd.

use super::ovmf::{
    Firmware, TDVF_ATTR_MR_EXTEND, TDVF_ATTR_PAGE_AUG, TdvfSection, TdvfSectionType,
};
use super::{MeasureError, guid, read_u16, read_u32, sha384, sha384_parts};

const PAGE: u64 = 4096;

/// In which order QEMU adds and extends the TDVF pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAddOrder {
    /// QEMU 8.x: all pages of a section are added, then extended.
    TwoPass,
    /// QEMU 9 and later: each page is added and extended before the next.
    SinglePass,
}

impl PageAddOrder {
    /// The order a QEMU version uses (9.0 and later: single-pass).
    #[must_use]
    pub fn for_qemu_major(major: u32) -> Self {
        if major >= 9 {
            Self::SinglePass
        } else {
            Self::TwoPass
        }
    }
}

fn page_add_block(gpa: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..12].copy_from_slice(b"MEM.PAGE.ADD");
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

fn extend_block(gpa: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..9].copy_from_slice(b"MR.EXTEND");
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

/// MRTD of a firmware image, from its TDVF metadata.
///
/// # Errors
/// A missing or malformed TDVF table, or an extended section that lies outside the
/// file (a split `OVMF_CODE` image: TDX needs the unified `OVMF.fd`).
pub fn mrtd(fw: &Firmware<'_>, order: PageAddOrder) -> Result<[u8; 48], MeasureError> {
    mrtd_from_sections(fw.data(), &fw.tdvf_sections()?, order)
}

/// MRTD from the firmware bytes and its TDVF sections.
///
/// # Errors
/// As [`mrtd`].
pub fn mrtd_from_sections(
    data: &[u8],
    sections: &[TdvfSection],
    order: PageAddOrder,
) -> Result<[u8; 48], MeasureError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA384);
    for (i, s) in sections.iter().enumerate() {
        // GPAs are at most 52 bits: a section past that is malformed (and its page
        // arithmetic below could overflow).
        if s.gpa
            .checked_add(s.mem_size)
            .is_none_or(|end| end > 1 << 52)
        {
            return Err(MeasureError::Tdvf(format!(
                "section {i} (GPA {:#x}, size {:#x}) lies beyond the 52-bit physical address space",
                s.gpa, s.mem_size
            )));
        }
        if !s.mem_size.is_multiple_of(PAGE) || !s.gpa.is_multiple_of(PAGE) {
            return Err(MeasureError::Tdvf(format!(
                "section {i} is not page-aligned"
            )));
        }
        let pages = s.mem_size / PAGE;
        let add = s.attributes & TDVF_ATTR_PAGE_AUG == 0;
        let extend = s.attributes & TDVF_ATTR_MR_EXTEND != 0;
        let bytes = if extend {
            let start = s.data_offset as usize;
            let end = start
                .checked_add(usize::try_from(s.mem_size).unwrap_or(usize::MAX))
                .filter(|&end| end <= data.len() && u64::from(s.raw_size) >= s.mem_size)
                .ok_or_else(|| {
                    MeasureError::Tdvf(format!(
                        "section {i} (data offset {:#x}, size {:#x}) lies outside the {}-byte firmware file; TDX needs the unified OVMF.fd",
                        s.data_offset,
                        s.mem_size,
                        data.len()
                    ))
                })?;
            data.get(start..end).unwrap_or_default()
        } else {
            &[]
        };
        let extend_page = |ctx: &mut ring::digest::Context, p: u64| {
            let page_gpa = s.gpa + p * PAGE;
            let at = (p * PAGE) as usize;
            for c in 0..16u64 {
                let chunk_at = at + (c as usize) * 256;
                ctx.update(&extend_block(page_gpa + c * 256));
                ctx.update(bytes.get(chunk_at..chunk_at + 256).unwrap_or_default());
            }
        };
        match order {
            PageAddOrder::TwoPass => {
                if add {
                    for p in 0..pages {
                        ctx.update(&page_add_block(s.gpa + p * PAGE));
                    }
                }
                if extend {
                    for p in 0..pages {
                        extend_page(&mut ctx, p);
                    }
                }
            }
            PageAddOrder::SinglePass => {
                for p in 0..pages {
                    if add {
                        ctx.update(&page_add_block(s.gpa + p * PAGE));
                    }
                    if extend {
                        extend_page(&mut ctx, p);
                    }
                }
            }
        }
    }
    let mut out = [0u8; 48];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// The accepted-memory ranges of the TD HOB: the TD_HOB and TEMP_MEM sections, sorted.
fn hob_ranges(sections: &[TdvfSection]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = sections
        .iter()
        .filter(|s| {
            matches!(
                s.section_type,
                TdvfSectionType::TdHob | TdvfSectionType::TempMem
            )
        })
        .map(|s| (s.gpa, s.mem_size))
        .collect();
    ranges.sort_unstable();
    ranges
}

fn hob_base(sections: &[TdvfSection]) -> Result<u64, MeasureError> {
    sections
        .iter()
        .find(|s| s.section_type == TdvfSectionType::TdHob)
        .map(|s| s.gpa)
        .ok_or_else(|| MeasureError::Tdvf("no TD_HOB section".into()))
}

const EFI_RESOURCE_SYSTEM_MEMORY: u32 = 0;
const EFI_RESOURCE_MEMORY_UNACCEPTED: u32 = 7;

fn resource_hob(out: &mut Vec<u8>, resource_type: u32, start: u64, len: u64) {
    out.extend_from_slice(&3u16.to_le_bytes());
    out.extend_from_slice(&0x30u16.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&resource_type.to_le_bytes());
    out.extend_from_slice(&7u32.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

/// The guest RAM below 4 GiB on QEMU q35 (2 GiB once RAM reaches 0xB0000000).
#[must_use]
pub fn below_4g_mem_size(memory_size: u64) -> u64 {
    if memory_size >= 0xB000_0000 {
        0x8000_0000
    } else {
        memory_size
    }
}

/// The TD HOB QEMU builds for `memory_size` bytes of RAM: a PHIT HOB, then resource
/// descriptors tiling RAM (TD_HOB/TEMP_MEM ranges as system memory, the rest
/// unaccepted; RAM above 2 GiB moves to 4 GiB once RAM reaches 0xB0000000).
///
/// # Errors
/// No TD_HOB section, or sections that overlap or lie past the end of RAM.
pub fn td_hob(sections: &[TdvfSection], memory_size: u64) -> Result<Vec<u8>, MeasureError> {
    let base = hob_base(sections)?;
    let low = below_4g_mem_size(memory_size);
    let mut hobs = Vec::new();
    let mut cursor = 0u64;
    for (start, len) in hob_ranges(sections) {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= low && start >= cursor)
            .ok_or_else(|| {
                MeasureError::Tdvf(format!(
                    "TD HOB: range {start:#x}+{len:#x} overlaps another or lies past RAM ({low:#x})"
                ))
            })?;
        if start > cursor {
            resource_hob(
                &mut hobs,
                EFI_RESOURCE_MEMORY_UNACCEPTED,
                cursor,
                start - cursor,
            );
        }
        resource_hob(&mut hobs, EFI_RESOURCE_SYSTEM_MEMORY, start, len);
        cursor = end;
    }
    if low > cursor {
        resource_hob(
            &mut hobs,
            EFI_RESOURCE_MEMORY_UNACCEPTED,
            cursor,
            low - cursor,
        );
    }
    if memory_size > low {
        resource_hob(
            &mut hobs,
            EFI_RESOURCE_MEMORY_UNACCEPTED,
            0x1_0000_0000,
            memory_size - low,
        );
    }
    let total = 56 + hobs.len() as u64;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&56u16.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&9u32.to_le_bytes());
    out.extend_from_slice(&[0; 4 + 32]);
    out.extend_from_slice(&(base + total + 8).to_le_bytes());
    out.extend_from_slice(&hobs);
    Ok(out)
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// dstack's compact "TD HOB witness" (v1): LEB128 page numbers: base page, TD HOB page
/// − base, range count, then per range (sorted) start − base and page count.
///
/// # Errors
/// No TD_HOB section.
pub fn td_hob_witness(sections: &[TdvfSection]) -> Result<Vec<u8>, MeasureError> {
    let hob = hob_base(sections)? / PAGE;
    let ranges = hob_ranges(sections);
    let base = ranges.first().map_or(hob, |r| r.0 / PAGE);
    let mut out = Vec::new();
    leb128(&mut out, base);
    leb128(&mut out, hob.saturating_sub(base));
    leb128(&mut out, ranges.len() as u64);
    for (start, len) in ranges {
        leb128(&mut out, start / PAGE - base);
        leb128(&mut out, len / PAGE);
    }
    Ok(out)
}

/// SHA-384 of the CFV (variable store) bytes as they sit in the firmware file (RTMR0's
/// EV_EFI_PLATFORM_FIRMWARE_BLOB2).
///
/// # Errors
/// No CFV section, or one that lies outside the file.
pub fn cfv_sha384(fw: &Firmware<'_>) -> Result<[u8; 48], MeasureError> {
    let s = fw
        .tdvf_sections()?
        .into_iter()
        .find(|s| s.section_type == TdvfSectionType::Cfv)
        .ok_or_else(|| MeasureError::Tdvf("no CFV section".into()))?;
    let start = s.data_offset as usize;
    let bytes = fw
        .data()
        .get(start..start.saturating_add(s.raw_size as usize))
        .ok_or_else(|| MeasureError::Tdvf("the CFV section lies outside the file".into()))?;
    Ok(sha384(bytes))
}

/// `EFI_GLOBAL_VARIABLE` (8BE4DF61-93CA-11D2-AA0D-00E098032B8C).
pub const EFI_GLOBAL_VARIABLE: [u8; 16] = guid(
    0x8BE4_DF61,
    0x93CA,
    0x11D2,
    [0xAA, 0x0D, 0x00, 0xE0, 0x98, 0x03, 0x2B, 0x8C],
);
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` (D719B2CB-3D3A-4596-A3BC-DAD00E67656F).
pub const EFI_IMAGE_SECURITY_DATABASE: [u8; 16] = guid(
    0xD719_B2CB,
    0x3D3A,
    0x4596,
    [0xA3, 0xBC, 0xDA, 0xD0, 0x0E, 0x67, 0x65, 0x6F],
);

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The digest of an empty EV_EFI_VARIABLE_DRIVER_CONFIG variable: SHA-384(vendor GUID
/// ‖ u64 name length in characters ‖ u64 data length 0 ‖ UTF-16LE name).
#[must_use]
pub fn efi_variable_digest(vendor: &[u8; 16], name: &str) -> [u8; 48] {
    let chars = name.encode_utf16().count() as u64;
    sha384_parts(&[
        vendor,
        &chars.to_le_bytes(),
        &0u64.to_le_bytes(),
        &utf16le(name),
    ])
}

/// The separator event's digest: SHA-384 of four zero bytes.
#[must_use]
pub fn separator_digest() -> [u8; 48] {
    sha384(&[0; 4])
}

/// An EV_EFI_ACTION digest: SHA-384 of the ASCII text.
#[must_use]
pub fn efi_action_digest(text: &str) -> [u8; 48] {
    sha384(text.as_bytes())
}

/// dstack's runtime event digest (RTMR3): SHA-384(u32le(type) ‖ ":" ‖ name ‖ ":" ‖
/// payload).
#[must_use]
pub fn dstack_runtime_event_digest(event_type: u32, name: &str, payload: &[u8]) -> [u8; 48] {
    sha384_parts(&[
        &event_type.to_le_bytes(),
        b":",
        name.as_bytes(),
        b":",
        payload,
    ])
}

/// Replay digests into a register that starts as 48 zero bytes.
pub fn replay<'a>(digests: impl IntoIterator<Item = &'a [u8; 48]>) -> [u8; 48] {
    digests
        .into_iter()
        .fold([0u8; 48], |acc, d| sha384_parts(&[&acc, d]))
}

/// RTMR0 under TDVF: TD HOB, CFV, the five Secure Boot variables (absent), separator,
/// the three ACPI blobs (table-loader, RSDP, tables), BootOrder (0000) and Boot0000.
#[must_use]
pub fn rtmr0(
    td_hob_sha384: &[u8; 48],
    cfv_sha384: &[u8; 48],
    acpi_sha384: &[[u8; 48]; 3],
    boot0000_sha384: &[u8; 48],
) -> [u8; 48] {
    let vars = [
        efi_variable_digest(&EFI_GLOBAL_VARIABLE, "SecureBoot"),
        efi_variable_digest(&EFI_GLOBAL_VARIABLE, "PK"),
        efi_variable_digest(&EFI_GLOBAL_VARIABLE, "KEK"),
        efi_variable_digest(&EFI_IMAGE_SECURITY_DATABASE, "db"),
        efi_variable_digest(&EFI_IMAGE_SECURITY_DATABASE, "dbx"),
    ];
    let sep = separator_digest();
    let boot_order = sha384(&[0, 0]);
    let mut all: Vec<&[u8; 48]> = vec![td_hob_sha384, cfv_sha384];
    all.extend(vars.iter());
    all.push(&sep);
    all.extend(acpi_sha384.iter());
    all.push(&boot_order);
    all.push(boot0000_sha384);
    replay(all)
}

/// The EV_EFI_ACTION texts of RTMR1.
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";
/// See [`CALLING_EFI_APPLICATION`].
pub const EXIT_BOOT_SERVICES_INVOCATION: &str = "Exit Boot Services Invocation";
/// See [`CALLING_EFI_APPLICATION`].
pub const EXIT_BOOT_SERVICES_SUCCESS: &str = "Exit Boot Services Returned with Success";

/// RTMR1 of a direct boot: the patched kernel's Authenticode digest, "Calling EFI
/// Application from Boot Option", a separator, and the two ExitBootServices actions.
#[must_use]
pub fn rtmr1(kernel_authenticode: &[u8; 48]) -> [u8; 48] {
    let events = [
        *kernel_authenticode,
        efi_action_digest(CALLING_EFI_APPLICATION),
        separator_digest(),
        efi_action_digest(EXIT_BOOT_SERVICES_INVOCATION),
        efi_action_digest(EXIT_BOOT_SERVICES_SUCCESS),
    ];
    replay(events.iter())
}

/// The command line the kernel receives from OVMF: `-append` text, plus
/// `" initrd=initrd"` when an initrd is given.
#[must_use]
pub fn measured_cmdline(append: Option<&str>, has_initrd: bool) -> String {
    let mut s = append.unwrap_or_default().to_owned();
    if has_initrd {
        s.push_str(" initrd=initrd");
    }
    s
}

/// SHA-384 of a command line as the EFI stub measures it: UTF-16LE plus a NUL.
#[must_use]
pub fn cmdline_sha384(cmdline: &str) -> [u8; 48] {
    let mut bytes = utf16le(cmdline);
    bytes.extend_from_slice(&[0, 0]);
    sha384(&bytes)
}

/// RTMR2: the command line digest, then the initrd digest (when there is an initrd).
#[must_use]
pub fn rtmr2(cmdline_sha384: &[u8; 48], initrd_sha384: Option<&[u8; 48]>) -> [u8; 48] {
    replay(std::iter::once(cmdline_sha384).chain(initrd_sha384))
}

/// The ACPI data QEMU reserves below the top of low RAM when placing the initrd.
pub const ACPI_DATA_SIZE: u64 = 0x28000;

/// The kernel as QEMU patches its bzImage setup header for a direct boot
/// (`x86_load_linux`): type_of_loader 0xB0, CAN_USE_HEAP, heap_end_ptr, cmd_line_ptr,
/// and the initrd's address and size.
///
/// # Errors
/// Not a bzImage (no `HdrS`), a protocol before 2.00, or an initrd too large.
pub fn patch_kernel(
    kernel: &[u8],
    initrd_size: Option<u64>,
    memory_size: u64,
) -> Result<Vec<u8>, MeasureError> {
    let bad = |what: String| MeasureError::Kernel(what);
    if read_u32(kernel, 0x202) != Some(0x5372_6448) {
        return Err(bad("no bzImage setup header (HdrS at 0x202)".into()));
    }
    let protocol = read_u16(kernel, 0x206).ok_or_else(|| bad("truncated header".into()))?;
    if protocol < 0x200 {
        return Err(bad(format!(
            "boot protocol {protocol:#x} is older than 2.00"
        )));
    }
    let loadflags = *kernel
        .get(0x211)
        .ok_or_else(|| bad("truncated header".into()))?;
    if loadflags & 1 == 0 {
        return Err(bad("not a bzImage (LOADED_HIGH is clear)".into()));
    }
    let (real_addr, cmdline_addr) = (0x1_0000u32, 0x2_0000u32);
    let mut initrd_max: u64 = if protocol >= 0x20C {
        let xloadflags = read_u16(kernel, 0x236).ok_or_else(|| bad("truncated header".into()))?;
        if xloadflags & 0x2 != 0 {
            0xFFFF_FFFF
        } else {
            0x37FF_FFFF
        }
    } else if protocol >= 0x203 {
        u64::from(read_u32(kernel, 0x22C).ok_or_else(|| bad("truncated header".into()))?)
    } else {
        0x37FF_FFFF
    };
    let low = below_4g_mem_size(memory_size);
    let cap = low.saturating_sub(ACPI_DATA_SIZE);
    if initrd_max >= cap {
        initrd_max = cap.saturating_sub(1);
    }
    let mut out = kernel.to_vec();
    let mut put = |at: usize, bytes: &[u8]| -> Result<(), MeasureError> {
        out.get_mut(at..at + bytes.len())
            .ok_or_else(|| bad("truncated header".into()))?
            .copy_from_slice(bytes);
        Ok(())
    };
    if protocol >= 0x202 {
        put(0x228, &cmdline_addr.to_le_bytes())?;
    }
    put(0x210, &[0xB0])?;
    if protocol >= 0x201 {
        put(0x211, &[loadflags | 0x80])?;
        put(
            0x224,
            &((cmdline_addr - real_addr - 0x200) as u16).to_le_bytes(),
        )?;
    }
    if let Some(size) = initrd_size {
        if size >= initrd_max {
            return Err(bad(format!(
                "the initrd ({size} bytes) does not fit below {initrd_max:#x}"
            )));
        }
        let addr = (initrd_max - size) & !0xFFF;
        put(0x218, &(addr as u32).to_le_bytes())?;
        put(0x21C, &(size as u32).to_le_bytes())?;
    }
    Ok(out)
}

/// The PE Authenticode SHA-384 of an image, as TCG measured boot computes it: the
/// headers without the checksum and the security directory entry, the sections sorted
/// by file offset, then any trailing data except the certificate table (zero-padded to
/// a multiple of 8 bytes, as dstack-mr does).
///
/// # Errors
/// Not a PE image, or headers/sections that lie outside the file.
pub fn authenticode_sha384(pe: &[u8]) -> Result<[u8; 48], MeasureError> {
    let bad = |what: &str| MeasureError::Kernel(format!("PE: {what}"));
    let lfanew = read_u32(pe, 0x3C).ok_or_else(|| bad("truncated DOS header"))? as usize;
    if pe.get(lfanew..lfanew.saturating_add(4)) != Some(b"PE\0\0".as_slice()) {
        return Err(bad("no PE signature"));
    }
    let coff = lfanew + 4;
    let sections = usize::from(read_u16(pe, coff + 2).ok_or_else(|| bad("truncated"))?);
    let opt_size = usize::from(read_u16(pe, coff + 16).ok_or_else(|| bad("truncated"))?);
    let opt = coff + 20;
    let magic = read_u16(pe, opt).ok_or_else(|| bad("truncated"))?;
    let (rva_count_at, dirs_at) = match magic {
        0x20B => (opt + 108, opt + 112),
        0x10B => (opt + 92, opt + 96),
        other => return Err(bad(&format!("optional header magic {other:#x}"))),
    };
    let checksum_at = opt + 64;
    let size_of_headers = read_u32(pe, opt + 60).ok_or_else(|| bad("truncated"))? as usize;
    let rva_count = read_u32(pe, rva_count_at).ok_or_else(|| bad("truncated"))?;
    let secdir_at = dirs_at + 4 * 8;
    let cert_size = if rva_count > 4 {
        read_u32(pe, secdir_at + 4).ok_or_else(|| bad("truncated"))? as usize
    } else {
        0
    };
    let hdr = |a: usize, b: usize| {
        pe.get(a..b)
            .ok_or_else(|| bad("headers lie outside the file"))
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA384);
    ctx.update(hdr(0, checksum_at)?);
    if rva_count > 4 {
        ctx.update(hdr(checksum_at + 4, secdir_at)?);
        ctx.update(hdr(secdir_at + 8, size_of_headers)?);
    } else {
        ctx.update(hdr(checksum_at + 4, size_of_headers)?);
    }
    let table = opt + opt_size;
    let mut raw: Vec<(usize, usize)> = Vec::with_capacity(sections);
    for i in 0..sections {
        let at = table + i * 40;
        let size = read_u32(pe, at + 16).ok_or_else(|| bad("truncated section table"))? as usize;
        let ptr = read_u32(pe, at + 20).ok_or_else(|| bad("truncated section table"))? as usize;
        if size != 0 {
            raw.push((ptr, size));
        }
    }
    raw.sort_unstable();
    let mut hashed = size_of_headers;
    for (ptr, size) in raw {
        ctx.update(
            pe.get(ptr..ptr.saturating_add(size))
                .ok_or_else(|| bad("a section lies outside the file"))?,
        );
        hashed += size;
    }
    if pe.len() > hashed + cert_size {
        let extra = pe.get(hashed..pe.len() - cert_size).unwrap_or_default();
        ctx.update(extra);
        let rem = extra.len() % 8;
        if rem != 0 {
            ctx.update(&[0u8; 8][..8 - rem]);
        }
    }
    let mut out = [0u8; 48];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// The inputs of [`measure`].
#[derive(Debug, Clone)]
pub struct TdxInputs<'a> {
    /// The unified firmware image (`OVMF.fd`, passed as `-bios`).
    pub ovmf: &'a [u8],
    /// The kernel (bzImage/PE) of a direct boot.
    pub kernel: Option<&'a [u8]>,
    /// The initrd.
    pub initrd: Option<&'a [u8]>,
    /// The `-append` text.
    pub append: Option<&'a str>,
    /// Guest RAM in bytes.
    pub memory_size: u64,
    /// QEMU's page-add order.
    pub order: PageAddOrder,
}

/// What [`measure`] can compute without QEMU's ACPI blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxMeasurements {
    /// MRTD.
    pub mrtd: [u8; 48],
    /// SHA-384 of the TD HOB (RTMR0's first event).
    pub td_hob_sha384: [u8; 48],
    /// SHA-384 of the CFV (RTMR0's second event).
    pub cfv_sha384: [u8; 48],
    /// The patched kernel's Authenticode digest, when a kernel is given.
    pub kernel_authenticode: Option<[u8; 48]>,
    /// RTMR1, when a kernel is given.
    pub rtmr1: Option<[u8; 48]>,
    /// The command line as measured.
    pub measured_cmdline: Option<String>,
    /// RTMR2, when a kernel is given.
    pub rtmr2: Option<[u8; 48]>,
}

/// MRTD, the TD HOB and CFV digests and, for a direct boot, RTMR1 and RTMR2.
///
/// # Errors
/// A firmware without valid TDVF metadata, or a kernel that cannot be patched/hashed.
pub fn measure(inputs: &TdxInputs<'_>) -> Result<TdxMeasurements, MeasureError> {
    let fw = Firmware::parse(inputs.ovmf)?;
    let sections = fw.tdvf_sections()?;
    let mrtd = mrtd_from_sections(inputs.ovmf, &sections, inputs.order)?;
    let td_hob_sha384 = sha384(&td_hob(&sections, inputs.memory_size)?);
    let cfv = cfv_sha384(&fw)?;
    let (mut auth, mut r1, mut cmd, mut r2) = (None, None, None, None);
    if let Some(kernel) = inputs.kernel {
        let patched = patch_kernel(
            kernel,
            inputs.initrd.map(|i| i.len() as u64),
            inputs.memory_size,
        )?;
        let a = authenticode_sha384(&patched)?;
        let c = measured_cmdline(inputs.append, inputs.initrd.is_some());
        let initrd = inputs.initrd.map(sha384);
        r1 = Some(rtmr1(&a));
        r2 = Some(rtmr2(&cmdline_sha384(&c), initrd.as_ref()));
        auth = Some(a);
        cmd = Some(c);
    }
    Ok(TdxMeasurements {
        mrtd,
        td_hob_sha384,
        cfv_sha384: cfv,
        kernel_authenticode: auth,
        rtmr1: r1,
        measured_cmdline: cmd,
        rtmr2: r2,
    })
}
