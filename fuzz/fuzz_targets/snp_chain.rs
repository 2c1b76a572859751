//! SEV-SNP certificate chains: VCEK/VLEK bytes (DER, PEM, or a certificate table) built
//! into a chain to the pinned AMD roots.
//! The check and its invariants: `veil_fuzz::snp_chain` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::snp_chain(data);
});
