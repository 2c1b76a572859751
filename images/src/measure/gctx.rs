//! The SEV-SNP launch digest chain (GCTX): each page given to `SNP_LAUNCH_UPDATE`
//! replaces the digest with SHA-384 of a 0x70-byte `PAGE_INFO` record (SNP ABI spec
//! §8.17.2): current digest ‖ contents digest ‖ u16 0x70 ‖ u8 page type ‖ u8 is_imi 0
//! ‖ three VMPL permission bytes and a reserved byte, all 0 ‖ u64 GPA.

use super::{MeasureError, sha384};

/// The page size.
pub const PAGE_SIZE: u64 = 4096;
/// Where VMSA pages are recorded: −1 page-aligned, bits above 51 cleared.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// A `PAGE_INFO` page type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// Measured contents.
    Normal = 1,
    /// A VMSA page.
    Vmsa = 2,
    /// A zero page.
    Zero = 3,
    /// An unmeasured page.
    Unmeasured = 4,
    /// The secrets page.
    Secrets = 5,
    /// The CPUID page.
    Cpuid = 6,
}

/// The running launch digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gctx {
    ld: [u8; 48],
}

impl Default for Gctx {
    fn default() -> Self {
        Self::new()
    }
}

impl Gctx {
    /// The initial (all-zero) digest.
    #[must_use]
    pub fn new() -> Self {
        Self { ld: [0; 48] }
    }

    /// Start from a digest computed earlier (an "OVMF hash").
    #[must_use]
    pub fn from_seed(seed: [u8; 48]) -> Self {
        Self { ld: seed }
    }

    /// The current launch digest.
    #[must_use]
    pub fn ld(&self) -> [u8; 48] {
        self.ld
    }

    /// One `PAGE_INFO` step.
    pub fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type as u8;
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = sha384(&info);
    }

    /// Measure `data` as NORMAL pages starting at `gpa`.
    ///
    /// # Errors
    /// When `data` is not a whole number of pages.
    pub fn update_normal_pages(&mut self, gpa: u64, data: &[u8]) -> Result<(), MeasureError> {
        if !(data.len() as u64).is_multiple_of(PAGE_SIZE) {
            return Err(MeasureError::Image {
                what: "measured range",
                detail: format!("{} bytes is not a whole number of 4 KiB pages", data.len()),
            });
        }
        for (i, page) in data.chunks(PAGE_SIZE as usize).enumerate() {
            self.update(PageType::Normal, gpa + i as u64 * PAGE_SIZE, &sha384(page));
        }
        Ok(())
    }

    /// Record `size` bytes from `gpa` as pages of `page_type` with a zero contents
    /// digest (ZERO, UNMEASURED, SECRETS, CPUID).
    pub fn update_empty_pages(&mut self, page_type: PageType, gpa: u64, size: u64) {
        let mut offset = 0;
        while offset < size {
            self.update(page_type, gpa + offset, &[0; 48]);
            offset += PAGE_SIZE;
        }
    }

    /// Measure one VMSA page.
    pub fn update_vmsa_page(&mut self, page: &[u8]) {
        self.update(PageType::Vmsa, VMSA_GPA, &sha384(page));
    }
}
