//! SEV-SNP attestation reports: the parser, binary or hex.
//! The check and its invariants: `veil_fuzz::snp_report` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::snp_report(data);
});
