//! TDX CCEL event logs (TCG crypto-agile, binary): parsing untrusted log bytes.
//! The check and its invariants: `veil_fuzz::tdx_ccel` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::tdx_ccel(data);
});
