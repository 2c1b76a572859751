//! The SEV hashes table QEMU builds for a measured direct boot (`kernel-hashes=on`):
//! SHA-256 of the kernel command line (plus a NUL), the initrd and the kernel.

use super::{MeasureError, guid, sha256};

/// `9438d606-4f22-4cc9-b479-a793d411fd21`: the table header.
pub const TABLE_HEADER_GUID: [u8; 16] = guid(
    0x9438_d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
/// `97d02dd8-bd20-4c94-aa78-e7714d36ab2a`: the cmdline entry.
pub const CMDLINE_GUID: [u8; 16] = guid(
    0x97d0_2dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);
/// `44baf731-3a2f-4bd7-9af1-41e29169781d`: the initrd entry.
pub const INITRD_GUID: [u8; 16] = guid(
    0x44ba_f731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
/// `4de79437-abd2-427f-b835-d5b172d2045b`: the kernel entry.
pub const KERNEL_GUID: [u8; 16] = guid(
    0x4de7_9437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);

/// The table's length field (header and three entries).
pub const TABLE_LEN: usize = 168;
/// The table as placed in memory, zero-padded to a multiple of 16.
pub const PADDED_TABLE_LEN: usize = 176;

/// The three SHA-256 digests of a direct boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevHashes {
    /// SHA-256 of the bzImage.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of nothing when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line's UTF-8 bytes plus one NUL.
    pub cmdline: [u8; 32],
}

impl SevHashes {
    /// Hash the boot inputs. No initrd hashes as the empty string; no cmdline as "".
    #[must_use]
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, append: Option<&str>) -> Self {
        Self {
            kernel: sha256(kernel),
            initrd: sha256(initrd.unwrap_or_default()),
            cmdline: cmdline_sha256(append.unwrap_or_default()),
        }
    }

    /// The 176-byte padded table.
    #[must_use]
    pub fn table(&self) -> [u8; PADDED_TABLE_LEN] {
        let mut out = [0u8; PADDED_TABLE_LEN];
        out[..16].copy_from_slice(&TABLE_HEADER_GUID);
        out[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
        let entries = [
            (CMDLINE_GUID, self.cmdline),
            (INITRD_GUID, self.initrd),
            (KERNEL_GUID, self.kernel),
        ];
        for (i, (g, hash)) in entries.iter().enumerate() {
            let at = 18 + i * 50;
            out[at..at + 16].copy_from_slice(g);
            out[at + 16..at + 18].copy_from_slice(&50u16.to_le_bytes());
            out[at + 18..at + 50].copy_from_slice(hash);
        }
        out
    }

    /// A zero 4 KiB page with the padded table at `offset`.
    ///
    /// # Errors
    /// When the table does not fit in the page at `offset`.
    pub fn page(&self, offset: usize) -> Result<[u8; 4096], MeasureError> {
        let mut page = [0u8; 4096];
        let slot = offset
            .checked_add(PADDED_TABLE_LEN)
            .and_then(|end| page.get_mut(offset..end))
            .ok_or_else(|| {
                MeasureError::HashesTable(format!(
                    "the table does not fit in its page at offset {offset:#x}"
                ))
            })?;
        slot.copy_from_slice(&self.table());
        Ok(page)
    }
}

/// SHA-256 of a command line as the table records it (UTF-8 plus one NUL).
#[must_use]
pub fn cmdline_sha256(append: &str) -> [u8; 32] {
    let mut bytes = append.as_bytes().to_vec();
    bytes.push(0);
    sha256(&bytes)
}
