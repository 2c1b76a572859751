//! The SEV-SNP `ATTESTATION_REPORT` (AMD SEV-SNP firmware ABI, structure versions 2, 3
//! and 5; 1184 bytes), parsed into typed fields. Parsing never panics: every field is
//! read from a fixed offset of an input whose length was checked first.

use serde::Serialize;

use super::Product;

/// The size of an attestation report.
pub const REPORT_LEN: usize = 1184;
/// The signed part of a report: bytes `[0, SIGNED_LEN)`.
pub const SIGNED_LEN: usize = 0x2A0;
/// The report structure versions this parser knows.
pub const SUPPORTED_VERSIONS: [u32; 3] = [2, 3, 5];
/// `SIGNATURE_ALGO` for ECDSA P-384 with SHA-384, the only one defined.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Why report bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Not 1184 bytes.
    #[error("an attestation report is {REPORT_LEN} bytes, found {0}")]
    Length(usize),
    /// A structure version this parser does not know.
    #[error("report version {0} is not supported (expected one of 2, 3, 5)")]
    Version(u32),
    /// Text that is not hex.
    #[error("report: neither {REPORT_LEN} binary bytes nor hex: {0}")]
    Hex(String),
}

/// Which key signed the report (`KEY_INFO.SIGNING_KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// The chip's Versioned Chip Endorsement Key.
    Vcek,
    /// A Versioned Loaded Endorsement Key (cloud provider).
    Vlek,
    /// No key: the report is unsigned.
    None,
    /// A value the ABI reserves.
    Reserved(u8),
}

/// A `TCB_VERSION`, decoded for one product's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Tcb {
    /// `FMC` SPL (Turin and later; `None` before).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

/// A raw `TCB_VERSION` (little-endian u64 in the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TcbVersion(pub u64);

impl TcbVersion {
    /// Decode for `product`: Milan and Genoa put BL, TEE, 4 reserved, SNP, UCODE;
    /// Turin puts FMC, BL, TEE, SNP, 3 reserved, UCODE.
    #[must_use]
    pub fn decode(self, product: Product) -> Tcb {
        let b = self.0.to_le_bytes();
        match product {
            Product::Turin => Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
            Product::Milan | Product::Genoa => Tcb {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
        }
    }
}

/// `GUEST_POLICY` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Bit 16: SMT allowed.
    #[must_use]
    pub fn smt_allowed(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Bit 18: association with a migration agent allowed.
    #[must_use]
    pub fn migrate_ma(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Bit 19: debugging allowed (the hypervisor can read guest memory).
    #[must_use]
    pub fn debug(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// Bit 20: single socket only.
    #[must_use]
    pub fn single_socket(self) -> bool {
        self.0 & (1 << 20) != 0
    }
    /// Minimum ABI major.
    #[must_use]
    pub fn abi_major(self) -> u8 {
        ((self.0 >> 8) & 0xff) as u8
    }
    /// Minimum ABI minor.
    #[must_use]
    pub fn abi_minor(self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

/// `PLATFORM_INFO` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    /// Bit 0: SMT is enabled on the platform.
    #[must_use]
    pub fn smt_enabled(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: TSME is enabled.
    #[must_use]
    pub fn tsme_enabled(self) -> bool {
        self.0 & 2 != 0
    }
}

/// A firmware version (`major.minor.build`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FirmwareVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build.
    pub build: u8,
}

impl std::fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// The CPUID family, model and stepping (report versions 3 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cpuid {
    /// Family (`0x19` Milan/Genoa, `0x1A` Turin).
    pub family: u8,
    /// Model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

impl Cpuid {
    /// The product line this CPUID denotes, when known.
    #[must_use]
    pub fn product(self) -> Option<Product> {
        match (self.family, self.model) {
            (0x19, 0x00..=0x0f) => Some(Product::Milan),
            (0x19, 0x10..=0x1f | 0xa0..=0xaf) => Some(Product::Genoa),
            (0x1a, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

/// A parsed attestation report. It keeps its bytes, so the signature can be checked
/// over exactly what was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationReport {
    bytes: Box<[u8; REPORT_LEN]>,
    /// `VERSION`.
    pub version: u32,
    /// `GUEST_SVN`.
    pub guest_svn: u32,
    /// `POLICY`.
    pub policy: GuestPolicy,
    /// `FAMILY_ID`.
    pub family_id: [u8; 16],
    /// `IMAGE_ID`.
    pub image_id: [u8; 16],
    /// `VMPL` the report was requested from.
    pub vmpl: u32,
    /// `SIGNATURE_ALGO`.
    pub signature_algo: u32,
    /// `CURRENT_TCB`.
    pub current_tcb: TcbVersion,
    /// `PLATFORM_INFO`.
    pub platform_info: PlatformInfo,
    /// `KEY_INFO.AUTHOR_KEY_EN`.
    pub author_key_en: bool,
    /// `KEY_INFO.MASK_CHIP_KEY`.
    pub mask_chip_key: bool,
    /// `KEY_INFO.SIGNING_KEY`.
    pub signing_key: SigningKey,
    /// `REPORT_DATA`: the guest's 64 bytes (veil's key binding).
    pub report_data: [u8; 64],
    /// `MEASUREMENT`: the launch digest.
    pub measurement: [u8; 48],
    /// `HOST_DATA`.
    pub host_data: [u8; 32],
    /// `ID_KEY_DIGEST` (SHA-384 of the ID block's signing key; zero without one).
    pub id_key_digest: [u8; 48],
    /// `AUTHOR_KEY_DIGEST`.
    pub author_key_digest: [u8; 48],
    /// `REPORT_ID`.
    pub report_id: [u8; 32],
    /// `REPORT_ID_MA`.
    pub report_id_ma: [u8; 32],
    /// `REPORTED_TCB`: the TCB the VCEK was derived from.
    pub reported_tcb: TcbVersion,
    /// CPUID family/model/stepping (version 3 and later).
    pub cpuid: Option<Cpuid>,
    /// `CHIP_ID` (zero when masked or under a VLEK).
    pub chip_id: [u8; 64],
    /// `COMMITTED_TCB`.
    pub committed_tcb: TcbVersion,
    /// `CURRENT_{MAJOR,MINOR,BUILD}`.
    pub current_version: FirmwareVersion,
    /// `COMMITTED_{MAJOR,MINOR,BUILD}`.
    pub committed_version: FirmwareVersion,
    /// `LAUNCH_TCB`.
    pub launch_tcb: TcbVersion,
    /// `LAUNCH_MIT_VECTOR` (version 5).
    pub launch_mit_vector: Option<u64>,
    /// `CURRENT_MIT_VECTOR` (version 5).
    pub current_mit_vector: Option<u64>,
}

fn arr<const N: usize>(b: &[u8; REPORT_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn u32_at(b: &[u8; REPORT_LEN], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

fn u64_at(b: &[u8; REPORT_LEN], at: usize) -> u64 {
    u64::from_le_bytes(arr(b, at))
}

fn byte(b: &[u8; REPORT_LEN], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

impl AttestationReport {
    /// Parse exactly [`REPORT_LEN`] bytes of a supported version.
    ///
    /// # Errors
    /// [`ReportError::Length`] or [`ReportError::Version`].
    pub fn from_bytes(input: &[u8]) -> Result<Self, ReportError> {
        let bytes: Box<[u8; REPORT_LEN]> = <[u8; REPORT_LEN]>::try_from(input)
            .map(Box::new)
            .map_err(|_| ReportError::Length(input.len()))?;
        let b = &*bytes;
        let version = u32_at(b, 0x00);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ReportError::Version(version));
        }
        let key_info = u32_at(b, 0x48);
        let signing_key = match (key_info >> 2) & 0x7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => SigningKey::Reserved(other as u8),
        };
        let fw = |at: usize| FirmwareVersion {
            build: byte(b, at),
            minor: byte(b, at + 1),
            major: byte(b, at + 2),
        };
        let v5 = version >= 5;
        Ok(Self {
            version,
            guest_svn: u32_at(b, 0x04),
            policy: GuestPolicy(u64_at(b, 0x08)),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(b, 0x30),
            signature_algo: u32_at(b, 0x34),
            current_tcb: TcbVersion(u64_at(b, 0x38)),
            platform_info: PlatformInfo(u64_at(b, 0x40)),
            author_key_en: key_info & 1 != 0,
            mask_chip_key: key_info & 2 != 0,
            signing_key,
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: TcbVersion(u64_at(b, 0x180)),
            cpuid: (version >= 3).then(|| Cpuid {
                family: byte(b, 0x188),
                model: byte(b, 0x189),
                stepping: byte(b, 0x18A),
            }),
            chip_id: arr(b, 0x1A0),
            committed_tcb: TcbVersion(u64_at(b, 0x1E0)),
            current_version: fw(0x1E8),
            committed_version: fw(0x1EC),
            launch_tcb: TcbVersion(u64_at(b, 0x1F0)),
            launch_mit_vector: v5.then(|| u64_at(b, 0x1F8)),
            current_mit_vector: v5.then(|| u64_at(b, 0x200)),
            bytes,
        })
    }

    /// Parse binary report bytes, or the same as hex text (whitespace ignored).
    ///
    /// # Errors
    /// As [`Self::from_bytes`], or [`ReportError::Hex`].
    pub fn from_bytes_or_hex(input: &[u8]) -> Result<Self, ReportError> {
        if input.len() == REPORT_LEN {
            return Self::from_bytes(input);
        }
        let text: Vec<u8> = input
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if text.len() == 2 * REPORT_LEN {
            let raw = hex::decode(&text).map_err(|e| ReportError::Hex(e.to_string()))?;
            return Self::from_bytes(&raw);
        }
        Err(ReportError::Length(input.len()))
    }

    /// The report's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; REPORT_LEN] {
        &self.bytes
    }

    /// The signed bytes, `[0, 0x2A0)`.
    #[must_use]
    pub fn signed_bytes(&self) -> &[u8] {
        self.bytes.get(..SIGNED_LEN).unwrap_or(&[])
    }

    /// The signature as ring's fixed-width P-384 form: 48-byte big-endian `r ‖ s`,
    /// from the 72-byte little-endian fields at `0x2A0` and `0x2E8`. `None` when a
    /// component has non-zero bytes above 48 (it cannot be a P-384 scalar), or when the
    /// reserved rest of the signature field is not zero.
    #[must_use]
    pub fn signature_p384_fixed(&self) -> Option<[u8; 96]> {
        if self.bytes.get(0x2A0 + 144..)?.iter().any(|&x| x != 0) {
            return None;
        }
        let mut out = [0u8; 96];
        for (i, at) in [0x2A0usize, 0x2E8].into_iter().enumerate() {
            let field = self.bytes.get(at..at + 72)?;
            let (low, high) = field.split_at(48);
            if high.iter().any(|&x| x != 0) {
                return None;
            }
            let dst = out.get_mut(i * 48..(i + 1) * 48)?;
            for (d, s) in dst.iter_mut().zip(low.iter().rev()) {
                *d = *s;
            }
        }
        Some(out)
    }

    /// The product line named by the CPUID fields (version 3 and later).
    #[must_use]
    pub fn cpuid_product(&self) -> Option<Product> {
        self.cpuid.and_then(Cpuid::product)
    }
}
