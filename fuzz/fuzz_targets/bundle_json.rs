//! Attestation bundle JSON: what parses round-trips.
//! The check and its invariants: `veil_fuzz::bundle_json` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::bundle_json(data);
});
