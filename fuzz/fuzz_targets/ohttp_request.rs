//! Whole OHTTP requests (RFC 9458) to the RFC's Appendix A gateway key, and the same
//! bytes as a key configuration and as an `application/ohttp-keys` list.
//! The check and its invariants: `veil_fuzz::ohttp_request` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::ohttp_request(data);
});
