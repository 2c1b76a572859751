//! Chunked OHTTP requests (draft-ietf-ohai-chunked-ohttp) to the RFC 9458 Appendix A
//! gateway key.
//! The check and its invariants: `veil_fuzz::ohttp_chunked_request` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::ohttp_chunked_request(data);
});
