//! NVIDIA H100 SPDM measurement transcripts (binary or hex) and RIMs: the parsers.
//! The check and its invariants: `veil_fuzz::nvidia_report` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::nvidia_report(data);
});
