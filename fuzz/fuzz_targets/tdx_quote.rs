//! TDX quotes (v4/v5): parsing untrusted quote bytes.
//! The check and its invariants: `veil_fuzz::tdx_quote` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::tdx_quote(data);
});
