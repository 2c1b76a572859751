//! SEV-SNP extended reports from /dev/sev-guest: the firmware response and the host's
//! certificate buffer.
//! The check and its invariants: `veil_fuzz::snp_ext_report` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = veil_fuzz::snp_ext_report(data);
});
