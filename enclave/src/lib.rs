//! `veil-enclave`: the attested inference service that runs inside the confidential VM.
//!
//! It is the only component of veil that ever sees plaintext.

pub mod engine;
pub mod models;
