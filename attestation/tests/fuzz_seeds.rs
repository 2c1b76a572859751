#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`) through the fuzz targets'
//! own checks, so plain `cargo test` runs the corpus without cargo-fuzz or nightly.
//! The checks are `fuzz/src/lib.rs`, included here by path rather than copied.

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::path::PathBuf;

/// Feed every seed of `target` to `check`. Each must pass its invariants (a broken one
/// panics), and at least one must be accepted, or the seeds exercise nothing.
fn replay(target: &str, check: fn(&[u8]) -> bool) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    let mut accepted = 0usize;
    for path in &paths {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if check(&data) {
            accepted += 1;
        }
    }
    assert!(
        accepted > 0,
        "none of the {} seeds in {} was accepted",
        paths.len(),
        dir.display()
    );
}

#[test]
fn ohttp_request_seeds() {
    replay("ohttp_request", fuzz_checks::ohttp_request);
}

#[test]
fn ohttp_chunked_request_seeds() {
    replay("ohttp_chunked_request", fuzz_checks::ohttp_chunked_request);
}

#[test]
fn bundle_json_seeds() {
    replay("bundle_json", fuzz_checks::bundle_json);
}

#[test]
fn receipt_seeds() {
    replay("receipt", fuzz_checks::receipt);
}

/// The `ohttp_request` seed `name` opens with `keys` to a `method` request for `path`.
fn request_seed_opens(
    name: &str,
    (keys, id): &(
        veil_attestation::channel::ServerKeys,
        veil_attestation::channel::KeyId,
    ),
    method: &str,
    path: &str,
) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds/ohttp_request")
        .join(name);
    let data = std::fs::read(&file).unwrap();
    let (request, _) = keys
        .open_request(id, &data, &veil_attestation::channel::Limits::default())
        .unwrap();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        (method, path)
    );
}

/// The RFC 9458 Appendix A request opens: the gateway key and its seed agree.
#[test]
fn rfc9458_request_seed_opens() {
    request_seed_opens(
        "rfc9458-appendix-a-request",
        fuzz_checks::rfc9458_keys(),
        "GET",
        "/",
    );
}

/// The X-Wing seed opens to the fuzz targets' X-Wing key, so the fuzzer starts from an
/// X-Wing request that decapsulates. (It was made with `Target::seal_request` to that
/// key's configuration, AES-128-GCM: `POST /v1/chat/completions`, a small JSON body.)
#[test]
fn xwing_request_seed_opens() {
    request_seed_opens(
        "veil-post-xwing-aes128gcm",
        fuzz_checks::xwing_keys(),
        "POST",
        "/v1/chat/completions",
    );
}

#[test]
fn snp_report_seeds() {
    replay("snp_report", fuzz_checks::snp_report);
}

#[test]
fn snp_chain_seeds() {
    replay("snp_chain", fuzz_checks::snp_chain);
}

#[test]
fn tdx_quote_seeds() {
    replay("tdx_quote", fuzz_checks::tdx_quote);
}

#[test]
fn nvidia_report_seeds() {
    replay("nvidia_report", fuzz_checks::nvidia_report);
}

#[test]
fn tdx_ccel_seeds() {
    replay("tdx_ccel", fuzz_checks::tdx_ccel);
}

#[test]
fn snp_ext_report_seeds() {
    replay("snp_ext_report", fuzz_checks::snp_ext_report);
}

#[test]
fn tdx_qgs_response_seeds() {
    replay("tdx_qgs_response", fuzz_checks::tdx_qgs_response);
}
