//! NVIDIA's opaque data in the SPDM `MEASUREMENTS` response: a sequence of
//! `type (u16 LE) | length (u16 LE) | value` fields. The type numbers are NVIDIA's
//! (as its local GPU verifier and the attestation SDK read them); the ones veil
//! interprets are the constants of [`field`]. Unknown types are kept, not refused.

use crate::nvidia::spdm::SpdmError;

/// Opaque field types.
pub mod field {
    /// Driver version, NUL-terminated ASCII (`550.90.07`).
    pub const DRIVER_VERSION: u16 = 3;
    /// GPU information (8 bytes).
    pub const GPU_INFO: u16 = 4;
    /// SKU.
    pub const SKU: u16 = 5;
    /// VBIOS version: 8 bytes, printed `b3.b2.b1.b0.b4` in hex (`96.00.9f.00.01`).
    pub const VBIOS_VERSION: u16 = 6;
    /// Manufacturer id.
    pub const MANUFACTURER_ID: u16 = 7;
    /// Tamper detection.
    pub const TAMPER_DETECTION: u16 = 8;
    /// SMC.
    pub const SMC: u16 = 9;
    /// VPR.
    pub const VPR: u16 = 10;
    /// NVDEC0 status (one byte, `U` = 0x55 or `0xAA`).
    pub const NVDEC0_STATUS: u16 = 11;
    /// Measurement counts (256 bytes).
    pub const MSRSCNT: u16 = 12;
    /// CPR information.
    pub const CPR_INFO: u16 = 13;
    /// Board id (u32 LE).
    pub const BOARD_ID: u16 = 14;
    /// Chip SKU, NUL-padded ASCII (`882`).
    pub const CHIP_SKU: u16 = 15;
    /// Chip SKU modifier, NUL-padded ASCII.
    pub const CHIP_SKU_MOD: u16 = 16;
    /// Project, NUL-padded ASCII (`1010`, `G520`).
    pub const PROJECT: u16 = 17;
    /// Project SKU, NUL-padded ASCII (`0200`).
    pub const PROJECT_SKU: u16 = 18;
    /// Project SKU modifier.
    pub const PROJECT_SKU_MOD: u16 = 19;
    /// FWID: the 48-byte digest the leaf certificate's TCB-info extension carries.
    pub const FWID: u16 = 20;
    /// Protected PCIe status.
    pub const PROTECTED_PCIE_STATUS: u16 = 21;
    /// NVSwitch PDIs (protected PCIe).
    pub const SWITCH_PDI: u16 = 22;
    /// Floorswept ports.
    pub const FLOORSWEPT_PORTS: u16 = 23;
    /// Position id.
    pub const POSITION_ID: u16 = 24;
    /// Lock switch status.
    pub const LOCK_SWITCH_STATUS: u16 = 25;
    /// GPU link connectivity.
    pub const GPU_LINK_CONN: u16 = 32;
    /// System enable status.
    pub const SYS_ENABLE_STATUS: u16 = 33;
    /// Opaque data version.
    pub const OPAQUE_DATA_VERSION: u16 = 34;
    /// Chip information.
    pub const CHIP_INFO: u16 = 35;
}

/// One opaque field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueField {
    /// The type number.
    pub kind: u16,
    /// The value.
    pub value: Vec<u8>,
}

/// The opaque data, field by field, in order; each type at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpaqueData {
    /// The fields.
    pub fields: Vec<OpaqueField>,
}

impl OpaqueData {
    /// Parse the TLVs; they must fill `data` exactly, and no type may repeat.
    ///
    /// # Errors
    /// [`SpdmError::Opaque`] naming the field.
    pub fn parse(data: &[u8]) -> Result<Self, SpdmError> {
        let mut fields: Vec<OpaqueField> = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let offset = data.len() - rest.len();
            let Some((&[t0, t1, l0, l1], tail)) = rest.split_first_chunk::<4>() else {
                return Err(SpdmError::Opaque(format!(
                    "{} bytes at offset {offset} are too few for a field header",
                    rest.len()
                )));
            };
            let kind = u16::from_le_bytes([t0, t1]);
            let len = usize::from(u16::from_le_bytes([l0, l1]));
            let (value, tail) = tail.split_at_checked(len).ok_or_else(|| {
                SpdmError::Opaque(format!(
                    "field type {kind} at offset {offset} claims {len} bytes, {} left",
                    tail.len()
                ))
            })?;
            if fields.iter().any(|f| f.kind == kind) {
                return Err(SpdmError::Opaque(format!(
                    "field type {kind} appears twice"
                )));
            }
            fields.push(OpaqueField {
                kind,
                value: value.to_vec(),
            });
            rest = tail;
        }
        Ok(Self { fields })
    }

    /// The value of field `kind`, if present.
    #[must_use]
    pub fn get(&self, kind: u16) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| f.value.as_slice())
    }

    /// A NUL-terminated or NUL-padded ASCII field, without its NULs; `None` when
    /// absent or not printable ASCII.
    #[must_use]
    pub fn text(&self, kind: u16) -> Option<String> {
        let v = self.get(kind)?;
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        let (text, pad) = v.split_at(end);
        (text.iter().all(u8::is_ascii_graphic) && pad.iter().all(|&b| b == 0))
            .then(|| String::from_utf8_lossy(text).into_owned())
    }

    /// The driver version (`550.90.07`).
    #[must_use]
    pub fn driver_version(&self) -> Option<String> {
        self.text(field::DRIVER_VERSION)
    }

    /// The VBIOS version, lowercase (`96.00.9f.00.01`).
    #[must_use]
    pub fn vbios_version(&self) -> Option<String> {
        match self.get(field::VBIOS_VERSION)? {
            [b0, b1, b2, b3, b4, _, _, _] => {
                Some(format!("{b3:02x}.{b2:02x}.{b1:02x}.{b0:02x}.{b4:02x}"))
            }
            _ => None,
        }
    }

    /// The project (`1010`).
    #[must_use]
    pub fn project(&self) -> Option<String> {
        self.text(field::PROJECT)
    }

    /// The project SKU (`0200`).
    #[must_use]
    pub fn project_sku(&self) -> Option<String> {
        self.text(field::PROJECT_SKU)
    }

    /// The chip SKU (`882`).
    #[must_use]
    pub fn chip_sku(&self) -> Option<String> {
        self.text(field::CHIP_SKU)
    }

    /// The board id, hex of its bytes as stored (`b1030000`).
    #[must_use]
    pub fn board_id(&self) -> Option<String> {
        self.get(field::BOARD_ID).map(hex::encode)
    }

    /// The FWID (48 bytes), when present (older firmware omits it).
    #[must_use]
    pub fn fwid(&self) -> Option<&[u8]> {
        self.get(field::FWID)
    }
}
