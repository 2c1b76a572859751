//! Usage receipts: canonical bytes, compact form, JSON form.
//! The check and its invariants: `veil_fuzz::receipt` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::receipt(data);
});
