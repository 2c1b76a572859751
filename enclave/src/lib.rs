//! `veil-enclave`: the attested inference service that runs inside the confidential VM.
//!
//! It is the only component of veil that ever sees plaintext.

pub mod backend;
pub mod engine;
pub mod inner;
pub mod metrics;
pub mod models;
pub mod nvml;
pub mod openai;
pub mod platform;
pub mod replay;
pub mod serve;
pub mod service;
pub mod upstream;
