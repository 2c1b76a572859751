//! The simulated TEE: for development on machines without SEV-SNP or TDX.
//!
//! Its "evidence" is signed by an Ed25519 key made at process start, so it proves
//! nothing about the machine: anyone can make it. It is marked as simulated in every
//! representation (the `sim` platform, `"simulated": true` and a warning in its JSON,
//! its `Display`), and [`crate::verify::Policy::default`] rejects it.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::bytes::Measurement;
use crate::claims::ReportData;
use crate::receipt::{ReceiptPublicKey, Signature};

/// The warning carried inside simulated evidence.
pub const WARNING: &str = "SIMULATED TEE: development only, no hardware protection";
/// Signature domain label.
pub const SIM_LABEL: &[u8] = b"veil/sim-evidence/v1";

/// Simulated evidence, as it appears in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimEvidence {
    /// Always `true`; evidence that says otherwise is refused.
    pub simulated: bool,
    /// Always [`WARNING`].
    pub warning: String,
    /// What the simulated platform says it launched: the SHA-384 of the enclave's
    /// executable (a stand-in for SEV-SNP's `MEASUREMENT` or TDX's `MRTD`, so that
    /// policies pinning measurements can be exercised without hardware).
    pub measurement: Measurement,
    /// The report data (the key binding).
    pub report_data: ReportData,
    /// The process's simulated-platform key.
    pub public_key: ReceiptPublicKey,
    /// Ed25519 over `"veil/sim-evidence/v1"` ‖ measurement ‖ report data ‖ public key.
    pub signature: Signature,
}

impl std::fmt::Display for SimEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{WARNING} (key {})", self.public_key)
    }
}

/// Why simulated evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The `simulated` flag or warning was missing or altered.
    #[error("simulated evidence not marked as simulated")]
    NotMarked,
    /// The signature does not verify.
    #[error("simulated evidence signature does not verify")]
    BadSignature,
    /// The report data differs from the value recomputed from the claims.
    #[error("report data mismatch: expected {expected}, found {found}")]
    ReportDataMismatch {
        /// Recomputed from the claims.
        expected: Box<ReportData>,
        /// In the evidence.
        found: Box<ReportData>,
    },
    /// Key generation failed.
    #[error("simulated platform key: {0}")]
    Key(&'static str),
}

fn message(
    measurement: &Measurement,
    report_data: &ReportData,
    public_key: &ReceiptPublicKey,
) -> Vec<u8> {
    let mut m = SIM_LABEL.to_vec();
    m.extend_from_slice(measurement.as_bytes());
    m.extend_from_slice(report_data.as_bytes());
    m.extend_from_slice(public_key.as_bytes());
    m
}

/// The simulated platform of one process.
pub struct SimPlatform {
    key: Ed25519KeyPair,
    measurement: Measurement,
}

impl std::fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimPlatform(SIMULATED, key <redacted>)")
    }
}

impl SimPlatform {
    /// Make the process's key; the measurement is all zeros (see [`Self::with_measurement`]).
    pub fn new() -> Result<Self, SimError> {
        Self::with_measurement(Measurement([0; 48]))
    }

    /// Make the process's key, reporting `measurement` as what was launched.
    pub fn with_measurement(measurement: Measurement) -> Result<Self, SimError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SimError::Key("generate"))?;
        let mut bytes = pkcs8.as_ref().to_vec();
        let key = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| SimError::Key("load"));
        bytes.zeroize();
        Ok(Self {
            key: key?,
            measurement,
        })
    }

    fn public_key(&self) -> ReceiptPublicKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.key.public_key().as_ref());
        ReceiptPublicKey(pk)
    }

    /// Simulated evidence over `report_data`.
    #[must_use]
    pub fn evidence(&self, report_data: &ReportData) -> SimEvidence {
        let public_key = self.public_key();
        let sig = self
            .key
            .sign(&message(&self.measurement, report_data, &public_key));
        let mut s = [0u8; 64];
        s.copy_from_slice(sig.as_ref());
        SimEvidence {
            simulated: true,
            warning: WARNING.to_owned(),
            measurement: self.measurement,
            report_data: *report_data,
            public_key,
            signature: Signature(s),
        }
    }
}

impl SimEvidence {
    /// Check the marking, the signature and that the report data equals `expected`.
    /// Whether simulated evidence is acceptable at all is the policy's call.
    pub fn verify(&self, expected: &ReportData) -> Result<(), SimError> {
        if !self.simulated || self.warning != WARNING {
            return Err(SimError::NotMarked);
        }
        UnparsedPublicKey::new(&ED25519, self.public_key.as_bytes())
            .verify(
                &message(&self.measurement, &self.report_data, &self.public_key),
                self.signature.as_bytes(),
            )
            .map_err(|_| SimError::BadSignature)?;
        if !self.report_data.ct_eq(expected) {
            return Err(SimError::ReportDataMismatch {
                expected: Box::new(*expected),
                found: Box::new(self.report_data),
            });
        }
        Ok(())
    }
}
