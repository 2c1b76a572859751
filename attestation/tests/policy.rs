//! The TOML policy that the client, the gateway and `veil-verify` share: the annotated
//! example parses, unknown keys and values of the wrong length are refused with the
//! line named, and what a policy pins is what verification enforces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use veil_attestation::verify::{Policy, PolicyError};

const EXAMPLE: &str = include_str!("../policy.example.toml");

fn refused(text: &str) -> (Option<usize>, String) {
    match Policy::from_toml(text, "test.toml") {
        Err(PolicyError::Invalid { line, message, .. }) => (line, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_annotated_example_is_the_default_policy() {
    let example = Policy::from_toml(EXAMPLE, "policy.example.toml").unwrap();
    assert_eq!(example, Policy::default());
    assert!(
        !example.insecure_allow_sim,
        "sim is never allowed by default"
    );
}

#[test]
fn a_typo_in_a_key_is_refused_naming_its_line() {
    let text = "max_evidence_age_seconds = 60\n\n[snp]\nallow_debgu = false\n";
    let (line, message) = refused(text);
    assert_eq!(line, Some(4), "{message}");
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("allow_debgu"), "{message}");
    // Top level too, and in the TDX section.
    let (line, _) = refused("insecure_allow_simm = true\n");
    assert_eq!(line, Some(1));
    let (line, message) = refused("[tdx]\n\nmrtd = []\n");
    assert_eq!(line, Some(3), "{message}");
}

#[test]
fn a_measurement_of_the_wrong_length_is_refused_naming_its_line() {
    let short = "ab".repeat(47);
    let text = format!("# pinned\nlaunch_measurements = [\n  \"{short}\",\n]\n");
    let (line, message) = refused(&text);
    // The line of the key whose list holds the bad value.
    assert_eq!(line, Some(2), "{message}");
    assert!(
        message.contains("48"),
        "names the expected length: {message}"
    );
    assert!(message.contains("found 47"), "and what it found: {message}");

    for (section, key) in [
        ("tdx", "mr_td"),
        ("tdx", "rtmr3"),
        ("tdx", "mr_config_id"),
        ("snp", "launch_measurements"),
        ("snp", "id_key_digests"),
    ] {
        let text = format!("[{section}]\n{key} = [\"{}\"]\n", "00".repeat(32));
        let (line, message) = refused(&text);
        assert_eq!(line, Some(2), "{section}.{key}: {message}");
    }
    let (line, message) = refused("[tdx]\nxfam = [\"e7020600\"]\n");
    assert_eq!(line, Some(2), "{message}");
    assert!(message.contains('8'), "{message}");
    let (line, message) = refused("model_manifest_digests = [\"zz\"]\n");
    assert_eq!(line, Some(1), "{message}");
}

#[test]
fn pinned_values_round_trip_in_any_case() {
    let mrtd = "91EB2B44D141D4ECE09F0C75C2C53D247A3C68EDD7FAFE8A3520C942A604A407DE03AE6DC5F87F27428B2538873118B7";
    let text = format!(
        "max_evidence_age_seconds = 600\n[tdx]\nmr_td = [\"{mrtd}\"]\nxfam = [\"e702060000000000\"]\naccepted_tcb_statuses = [\"UpToDate\"]\n[snp.min_tcb]\nsnp = 22\n"
    );
    let policy = Policy::from_toml(&text, "t").unwrap();
    assert_eq!(policy.max_evidence_age_seconds, 600);
    assert_eq!(policy.tdx.mr_td[0].to_string(), mrtd.to_lowercase());
    assert_eq!(policy.tdx.xfam[0].as_bytes(), &[0xe7, 2, 6, 0, 0, 0, 0, 0]);
    assert_eq!(policy.snp.min_tcb.snp, 22);
    assert_eq!(
        policy.snp.min_tcb.tee, 0,
        "other components keep their default"
    );
    // A wrong type names its line as well.
    let (line, _) = refused("max_evidence_age_seconds = \"a day\"\n");
    assert_eq!(line, Some(1));
}

#[test]
fn a_missing_file_names_the_file() {
    let e = Policy::load(std::path::Path::new("/nonexistent/veil-policy.toml")).unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/veil-policy.toml"));
}
