//! What every `veil-verify` command prints, and its exit code.

use std::process::ExitCode;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use veil_attestation::checks::{Checks, Outcome};
use veil_attestation::verify::Policy;

/// Exit code 1: the evidence did not verify.
#[must_use]
pub fn invalid() -> ExitCode {
    ExitCode::from(1)
}

/// Exit code 2: usage or I/O error; nothing was judged.
#[must_use]
pub fn usage() -> ExitCode {
    ExitCode::from(2)
}

/// Print `message` as a usage or I/O error and return exit code 2.
pub fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("veil-verify: error: {message}");
    usage()
}

/// Read a file, naming it in the error.
///
/// # Errors
/// The I/O error, with the path.
pub fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `--at`: an RFC 3339 time, or now.
///
/// # Errors
/// When the text is not RFC 3339.
pub fn at(arg: Option<&str>) -> Result<OffsetDateTime, String> {
    match arg {
        None => Ok(OffsetDateTime::now_utc()),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|e| format!("--at {text:?} is not an RFC 3339 time: {e}")),
    }
}

/// A time as RFC 3339 (or Unix seconds, for a time RFC 3339 cannot write).
#[must_use]
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// `--report-data`: 128 hex digits, or nothing to check.
///
/// # Errors
/// When the text is not 64 bytes of hex.
pub fn report_data(arg: Option<&str>) -> Result<Option<[u8; 64]>, String> {
    let Some(text) = arg else { return Ok(None) };
    hex::decode(text.trim())
        .ok()
        .and_then(|v| <[u8; 64]>::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| "--report-data must be 64 bytes (128 hex digits)".to_owned())
}

/// `--policy`: a TOML policy (the type the client, the gateway and `veil-verify bundle`
/// read), or the default policy.
///
/// # Errors
/// When the file cannot be read or is not a policy (the message names the line).
pub fn policy(path: Option<&std::path::Path>) -> Result<Policy, String> {
    match path {
        None => Ok(Policy::default()),
        Some(path) => Policy::load(path).map_err(|e| e.to_string()),
    }
}

/// Print one line per check: `pass`, `WARN` or `FAIL`, its name, and its detail.
pub fn print_checks(checks: &Checks) {
    for check in checks.as_slice() {
        let tag = match check.outcome {
            Outcome::Pass => "pass",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        };
        println!("{tag}  {:<28} {}", check.name, check.detail);
    }
}

/// Print what the evidence says, one `key value` line per field of a JSON object (a list
/// of objects, such as an event log, as its length and then one line per item).
pub fn print_facts(facts: &serde_json::Value) {
    if let serde_json::Value::Object(map) = facts {
        for (key, value) in map {
            match value {
                serde_json::Value::String(s) => println!("      {key:<28} {s}"),
                serde_json::Value::Array(items)
                    if !items.is_empty() && items.iter().all(serde_json::Value::is_object) =>
                {
                    println!("      {key:<28} {} item(s)", items.len());
                    for item in items {
                        println!("        {item}");
                    }
                }
                other => println!("      {key:<28} {other}"),
            }
        }
    }
}

/// A TD event log's records as JSON, one object each: `mr_index` (CCEL: 0 MRTD, 1..=4
/// RTMR 0..=3), `rtmr` (null for records that extend none), `event_type` (hex),
/// `digest` (SHA-384, hex, or null), `data_size`, and with `with_data` the event data
/// (hex).
#[must_use]
pub fn event_log(
    records: &[veil_attestation::tdx::eventlog::CcelRecord],
    with_data: bool,
) -> serde_json::Value {
    records
        .iter()
        .map(|r| {
            let mut item = serde_json::json!({
                "mr_index": r.mr_index,
                "rtmr": r.rtmr(),
                "event_type": format!("{:#010x}", r.event_type),
                "digest": r.sha384.map(hex::encode),
                "data_size": r.data.len(),
            });
            if with_data && let Some(map) = item.as_object_mut() {
                map.insert("data".into(), serde_json::json!(hex::encode(&r.data)));
            }
            item
        })
        .collect()
}

/// Print the checks (one line each, or one JSON document with `facts`, what the
/// evidence says, beside them) and return 0 when none failed, 1 otherwise.
pub fn finish(kind: &str, checks: &Checks, facts: serde_json::Value, json: bool) -> ExitCode {
    let valid = checks.all_passed() && !checks.as_slice().is_empty();
    if json {
        let doc = serde_json::json!({
            "kind": kind,
            "valid": valid,
            "checks": checks,
            "facts": facts,
        });
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => println!("{text}"),
            Err(e) => return usage_error(format!("serializing the result: {e}")),
        }
    } else {
        print_checks(checks);
        print_facts(&facts);
        println!("{kind}: {}", if valid { "VALID" } else { "INVALID" });
    }
    if valid { ExitCode::SUCCESS } else { invalid() }
}
