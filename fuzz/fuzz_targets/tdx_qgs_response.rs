//! Quote Generation Service replies (TDX quotes over vsock).
//! The check and its invariants: `veil_fuzz::tdx_qgs_response` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::tdx_qgs_response(data);
});
