//! What a verifier accepts from an SEV-SNP report. Unknown keys are errors; the
//! default refuses debug guests and migration agents, accepts only VMPL 0, and pins
//! nothing else (empty lists accept any value).

use serde::{Deserialize, Serialize};

use super::certs::Product;
use crate::bytes::{Measurement, hex_newtype};

hex_newtype!(
    /// The 32-byte `HOST_DATA` of an SEV-SNP report.
    HostData,
    32,
    "32-byte host data"
);

hex_newtype!(
    /// A SHA-384 digest (`ID_KEY_DIGEST`, `AUTHOR_KEY_DIGEST`).
    KeyDigest,
    48,
    "SHA-384 key digest"
);

/// The lowest accepted SPL of each TCB component (compared with `REPORTED_TCB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinTcb {
    /// Boot loader.
    pub bootloader: u8,
    /// PSP OS (TEE).
    pub tee: u8,
    /// SNP firmware.
    pub snp: u8,
    /// Microcode.
    pub microcode: u8,
    /// FMC (Turin only; ignored on earlier products).
    pub fmc: u8,
}

/// An SEV-SNP policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpPolicy {
    /// Accept a guest whose policy allows debugging (the host can read its memory).
    /// Never by default.
    pub allow_debug: bool,
    /// Accept a guest whose policy allows a migration agent. Not by default.
    pub allow_migration_agent: bool,
    /// Accept a guest whose policy allows SMT, on a host with SMT enabled. Default
    /// `true` (every production host samples show has SMT on); set `false` to require
    /// SMT off in the guest policy or on the platform.
    pub allow_smt: bool,
    /// The lowest accepted `REPORTED_TCB`.
    pub min_tcb: MinTcb,
    /// Accepted `MEASUREMENT`s; empty accepts any.
    pub launch_measurements: Vec<Measurement>,
    /// Accepted `HOST_DATA`; empty accepts any.
    pub host_data: Vec<HostData>,
    /// Require an ID block (a non-zero `ID_KEY_DIGEST`).
    pub require_id_block: bool,
    /// Accepted `ID_KEY_DIGEST`s; empty accepts any (non-empty implies an ID block).
    pub id_key_digests: Vec<KeyDigest>,
    /// Accepted `AUTHOR_KEY_DIGEST`s; empty accepts any (non-empty requires
    /// `AUTHOR_KEY_EN`).
    pub author_key_digests: Vec<KeyDigest>,
    /// Accepted VMPLs the report was requested from. Default: VMPL 0 only.
    pub vmpls: Vec<u32>,
    /// The product line; `None` takes it from the certificates.
    pub product: Option<Product>,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        Self {
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
            min_tcb: MinTcb::default(),
            launch_measurements: Vec::new(),
            host_data: Vec::new(),
            require_id_block: false,
            id_key_digests: Vec::new(),
            author_key_digests: Vec::new(),
            vmpls: vec![0],
            product: None,
        }
    }
}
