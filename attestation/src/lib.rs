//! veil's shared library.
//!
//! - [`channel`]: the attested channel, Oblivious HTTP (RFC 9458) over Binary HTTP
//!   (RFC 9292), whole and chunked, padded.
//! - [`checks`]: the trail of checks a verifier performed, for auditors.
//! - [`claims`]: `claims-core` and the GPU-nonce and report-data derivations that bind
//!   the enclave's keys into hardware evidence.
//! - [`nvidia`]: NVIDIA H100 confidential-computing evidence (SPDM measurements, the
//!   device chain to the pinned NVIDIA root, RIMs, OCSP), offline.
//! - [`receipt`]: signed usage receipts.
//! - [`bundle`]: the attestation bundle's JSON types.
//! - [`sim`]: the simulated TEE (development only; rejected by default policies).
//! - [`snp`]: AMD SEV-SNP reports: parse, verify against the pinned AMD roots, policy;
//!   collect one in a guest through `/dev/sev-guest` ([`snp::guest`]).
//! - [`tdx`]: Intel TDX quote verification (DCAP, offline, collateral passed in), the
//!   CCEL event log (parse, replay to RTMRs), and quote collection in a guest through
//!   `/dev/tdx_guest` and the host's Quote Generation Service.
//! - [`tsm`]: collecting CPU evidence in a guest through configfs-tsm.
//! - [`verify`]: bundle verification against a [`verify::Policy`], time passed in.
//! - [`x509`]: certificates and CRLs for the evidence verifiers.
//!
//! What it deliberately does not do (yet): verify the XML signatures of NVIDIA RIMs, so
//! RIMs count as reference values only when the verifier itself supplies them.

pub mod bundle;
pub mod bytes;
pub mod channel;
pub mod checks;
pub mod claims;
pub mod nvidia;
pub mod receipt;
pub mod sim;
pub mod snp;
pub mod tdx;
pub mod tsm;
pub mod verify;
pub mod x509;
