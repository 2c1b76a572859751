//! The OVMF (and COCONUT-SVSM) GUIDed footer table, and what it points to: the SEV
//! metadata (`ASEV`) page ranges, the SEV-ES AP reset vector, the SEV hashes-table
//! GPA, the SVSM launch offset and the TDX `TDVF` metadata.
//!
//! The footer table ends 32 bytes before the end of the image: its last 18 bytes are a
//! `u16` total size and the table GUID. Entries are read backwards, each one
//! `data ‖ u16 size ‖ GUID` with `size` covering all three.

use super::{MeasureError, guid, read_u16, read_u32, read_u64};

/// `96b582de-1fb2-45f7-baea-a366c55a082d`: the footer table itself.
pub const FOOTER_TABLE_GUID: [u8; 16] = guid(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// `00f771de-1a7e-4fcb-890e-68c77e2fb44e`: SEV-ES reset block (u32 AP reset EIP).
pub const SEV_ES_RESET_BLOCK_GUID: [u8; 16] = guid(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// `7255371f-3a3b-4b04-927b-1da6efa8d454`: SEV hashes table (u32 GPA).
pub const SEV_HASH_TABLE_RV_GUID: [u8; 16] = guid(
    0x7255_371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
/// `dc886566-984a-4798-a75e-5585a7bf67cc`: SEV metadata (u32 offset from the end).
pub const SEV_METADATA_GUID: [u8; 16] = guid(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
/// `e47a6535-984a-4798-865e-4685a7bf8ec2`: TDX metadata (u32 offset from the end).
pub const TDX_METADATA_GUID: [u8; 16] = guid(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);
/// `a789a612-0597-4c4b-a49f-cbb1fe9d1ddd`: SVSM info (u32 launch offset).
pub const SVSM_INFO_GUID: [u8; 16] = guid(
    0xa789_a612,
    0x0597,
    0x4c4b,
    [0xa4, 0x9f, 0xcb, 0xb1, 0xfe, 0x9d, 0x1d, 0xdd],
);

/// 4 GiB: the firmware is mapped to end here.
pub const FOUR_GIB: u64 = 0x1_0000_0000;

const ENTRY_HEADER_LEN: usize = 18;

/// A SEV metadata section type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevSectionType {
    /// 1: pre-validated memory (measured as zero pages).
    SnpSecMem,
    /// 2: the secrets page.
    SnpSecrets,
    /// 3: the CPUID page.
    Cpuid,
    /// 4: the SVSM calling-area page(s).
    SvsmCaa,
    /// 0x10: the page holding the SEV hashes table.
    SnpKernelHashes,
    /// Any other value (measurement refuses it).
    Other(u32),
}

impl SevSectionType {
    /// From the table's `u32`.
    #[must_use]
    pub fn from_u32(value: u32) -> Self {
        match value {
            1 => Self::SnpSecMem,
            2 => Self::SnpSecrets,
            3 => Self::Cpuid,
            4 => Self::SvsmCaa,
            0x10 => Self::SnpKernelHashes,
            other => Self::Other(other),
        }
    }
}

/// One descriptor of the SEV metadata table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevSection {
    /// Guest-physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// What the range holds.
    pub section_type: SevSectionType,
}

/// A TDVF section type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdvfSectionType {
    /// 0: boot firmware volume (code).
    Bfv,
    /// 1: configuration firmware volume (variable store).
    Cfv,
    /// 2: the TD HOB.
    TdHob,
    /// 3: temporary memory.
    TempMem,
    /// Any other value.
    Other(u32),
}

/// `MR_EXTEND`: the section's contents are extended into MRTD.
pub const TDVF_ATTR_MR_EXTEND: u32 = 1;
/// `PAGE_AUG`: the pages are added after launch (not measured by `PAGE.ADD`).
pub const TDVF_ATTR_PAGE_AUG: u32 = 2;

/// One TDVF section descriptor (32 bytes in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset of the section's bytes in the firmware file.
    pub data_offset: u32,
    /// Number of bytes in the file.
    pub raw_size: u32,
    /// Guest-physical address.
    pub gpa: u64,
    /// Size in guest memory.
    pub mem_size: u64,
    /// What the section holds.
    pub section_type: TdvfSectionType,
    /// `MR_EXTEND` / `PAGE_AUG` bits.
    pub attributes: u32,
}

/// A firmware image with its footer table parsed.
#[derive(Debug, Clone)]
pub struct Firmware<'a> {
    data: &'a [u8],
    entries: Vec<([u8; 16], &'a [u8])>,
}

impl<'a> Firmware<'a> {
    /// Parse the footer table of `data`.
    ///
    /// # Errors
    /// [`MeasureError::FooterTable`] when the image has no valid footer table.
    pub fn parse(data: &'a [u8]) -> Result<Self, MeasureError> {
        let bad = |what: &str| MeasureError::FooterTable(what.to_owned());
        let footer_at = data
            .len()
            .checked_sub(32 + ENTRY_HEADER_LEN)
            .ok_or_else(|| bad("the image is too small to hold a footer table"))?;
        let footer_guid = data
            .get(footer_at + 2..footer_at + ENTRY_HEADER_LEN)
            .ok_or_else(|| bad("truncated"))?;
        if footer_guid != FOOTER_TABLE_GUID {
            return Err(bad(
                "the footer table GUID 96b582de-… is not 32 bytes before the end",
            ));
        }
        let total = usize::from(read_u16(data, footer_at).ok_or_else(|| bad("truncated"))?);
        let table_len = total
            .checked_sub(ENTRY_HEADER_LEN)
            .ok_or_else(|| bad("the table size is smaller than its header"))?;
        let start = footer_at
            .checked_sub(table_len)
            .ok_or_else(|| bad("the table size runs past the start of the image"))?;
        let mut table = data.get(start..footer_at).ok_or_else(|| bad("truncated"))?;
        let mut entries = Vec::new();
        while table.len() >= ENTRY_HEADER_LEN {
            let header_at = table.len() - ENTRY_HEADER_LEN;
            let size =
                usize::from(read_u16(table, header_at).ok_or_else(|| bad("truncated entry"))?);
            let entry_guid: [u8; 16] = table
                .get(header_at + 2..)
                .and_then(|g| g.try_into().ok())
                .ok_or_else(|| bad("truncated entry"))?;
            if size < ENTRY_HEADER_LEN {
                return Err(bad("an entry's size is smaller than its header"));
            }
            let entry_start = table
                .len()
                .checked_sub(size)
                .ok_or_else(|| bad("an entry's size runs past the start of the table"))?;
            let entry_data = table
                .get(entry_start..header_at)
                .ok_or_else(|| bad("truncated"))?;
            entries.push((entry_guid, entry_data));
            table = table.get(..entry_start).ok_or_else(|| bad("truncated"))?;
        }
        Ok(Self { data, entries })
    }

    /// The image bytes.
    #[must_use]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The GPA at which the image is mapped so that it ends at 4 GiB.
    #[must_use]
    pub fn gpa(&self) -> u64 {
        FOUR_GIB.saturating_sub(self.data.len() as u64)
    }

    /// The footer-table GUIDs (bytes_le), in the order they were read (from the end).
    #[must_use]
    pub fn entry_guids(&self) -> Vec<[u8; 16]> {
        self.entries.iter().map(|(g, _)| *g).collect()
    }

    /// The data of the footer-table entry with `guid`, if present.
    #[must_use]
    pub fn entry(&self, guid: &[u8; 16]) -> Option<&'a [u8]> {
        self.entries
            .iter()
            .find(|(g, _)| g == guid)
            .map(|(_, d)| *d)
    }

    fn entry_u32(&self, guid: &[u8; 16], name: &'static str) -> Result<Option<u32>, MeasureError> {
        match self.entry(guid) {
            None => Ok(None),
            Some(data) => read_u32(data, 0).map(Some).ok_or_else(|| {
                MeasureError::FooterTable(format!("the {name} entry is shorter than 4 bytes"))
            }),
        }
    }

    /// The SEV-ES AP reset EIP (SEV-ES reset block).
    ///
    /// # Errors
    /// When the entry is absent or short.
    pub fn sev_es_reset_eip(&self) -> Result<u32, MeasureError> {
        self.entry_u32(&SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")?
            .ok_or(MeasureError::MissingEntry("SEV-ES reset block"))
    }

    /// The SEV hashes-table GPA, if the entry is present (it may be 0: unsupported).
    ///
    /// # Errors
    /// When the entry is short.
    pub fn sev_hashes_table_gpa(&self) -> Result<Option<u32>, MeasureError> {
        self.entry_u32(&SEV_HASH_TABLE_RV_GUID, "SEV hash table")
    }

    /// The SVSM launch offset (SVSM info block), if present.
    ///
    /// # Errors
    /// When the entry is short.
    pub fn svsm_launch_offset(&self) -> Result<Option<u32>, MeasureError> {
        self.entry_u32(&SVSM_INFO_GUID, "SVSM info")
    }

    /// Where a table that an entry locates by "u32 offset from the end" starts.
    fn locate_from_end(
        &self,
        guid: &[u8; 16],
        name: &'static str,
    ) -> Result<Option<usize>, MeasureError> {
        let Some(offset) = self.entry_u32(guid, name)? else {
            return Ok(None);
        };
        let offset = usize::try_from(offset)
            .map_err(|_| MeasureError::FooterTable(format!("{name}: offset too large")))?;
        self.data
            .len()
            .checked_sub(offset)
            .map(Some)
            .ok_or_else(|| {
                MeasureError::FooterTable(format!(
                    "{name}: offset {offset:#x} from the end is before the start of the image"
                ))
            })
    }

    /// The SEV metadata descriptors, in table order (empty when the image has no SEV
    /// metadata entry).
    ///
    /// The header's `size` field is not trusted to bound the descriptors (dstack's
    /// synthetic image leaves it 0); `count` descriptors are read, each bounds-checked
    /// against the image.
    ///
    /// # Errors
    /// When the `ASEV` header is missing or malformed or a descriptor lies past the end.
    pub fn sev_metadata(&self) -> Result<Vec<SevSection>, MeasureError> {
        let Some(start) = self.locate_from_end(&SEV_METADATA_GUID, "SEV metadata")? else {
            return Ok(Vec::new());
        };
        let bad = |what: String| MeasureError::SevMetadata(what);
        if self.data.get(start..start + 4) != Some(b"ASEV".as_slice()) {
            return Err(bad(format!("no ASEV signature at offset {start:#x}")));
        }
        let version = read_u32(self.data, start + 8).ok_or_else(|| bad("truncated".into()))?;
        if version != 1 {
            return Err(bad(format!("version {version} (expected 1)")));
        }
        let count = read_u32(self.data, start + 12).ok_or_else(|| bad("truncated".into()))?;
        let mut out = Vec::new();
        for i in 0..count as usize {
            let at = start + 16 + i * 12;
            let (Some(gpa), Some(size), Some(ty)) = (
                read_u32(self.data, at),
                read_u32(self.data, at + 4),
                read_u32(self.data, at + 8),
            ) else {
                return Err(bad(format!(
                    "descriptor {i} of {count} lies past the end of the image"
                )));
            };
            out.push(SevSection {
                gpa,
                size,
                section_type: SevSectionType::from_u32(ty),
            });
        }
        Ok(out)
    }

    /// The TDVF section descriptors, in table order.
    ///
    /// # Errors
    /// When the image has no TDX metadata entry, or the `TDVF` descriptor is malformed.
    pub fn tdvf_sections(&self) -> Result<Vec<TdvfSection>, MeasureError> {
        let start = self
            .locate_from_end(&TDX_METADATA_GUID, "TDX metadata")?
            .ok_or(MeasureError::MissingEntry("TDX metadata"))?;
        let bad = |what: String| MeasureError::Tdvf(what);
        if self.data.get(start..start + 4) != Some(b"TDVF".as_slice()) {
            return Err(bad(format!("no TDVF signature at offset {start:#x}")));
        }
        let version = read_u32(self.data, start + 8).ok_or_else(|| bad("truncated".into()))?;
        if version != 1 {
            return Err(bad(format!("version {version} (expected 1)")));
        }
        let count = read_u32(self.data, start + 12).ok_or_else(|| bad("truncated".into()))?;
        let mut out = Vec::new();
        for i in 0..count as usize {
            let at = start + 16 + i * 32;
            let (
                Some(data_offset),
                Some(raw_size),
                Some(gpa),
                Some(mem_size),
                Some(ty),
                Some(attributes),
            ) = (
                read_u32(self.data, at),
                read_u32(self.data, at + 4),
                read_u64(self.data, at + 8),
                read_u64(self.data, at + 16),
                read_u32(self.data, at + 24),
                read_u32(self.data, at + 28),
            )
            else {
                return Err(bad(format!(
                    "section {i} of {count} lies past the end of the image"
                )));
            };
            let section_type = match ty {
                0 => TdvfSectionType::Bfv,
                1 => TdvfSectionType::Cfv,
                2 => TdvfSectionType::TdHob,
                3 => TdvfSectionType::TempMem,
                other => TdvfSectionType::Other(other),
            };
            out.push(TdvfSection {
                data_offset,
                raw_size,
                gpa,
                mem_size,
                section_type,
                attributes,
            });
        }
        Ok(out)
    }
}
