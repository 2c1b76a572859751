//! `veil-verify tdx-quote`: verify an Intel TDX quote (v4/v5) with its DCAP collateral,
//! offline, against the pinned Intel SGX Root CA.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use veil_attestation::checks::Checks;
use veil_attestation::tdx::eventlog::CcelRecord;
use veil_attestation::tdx::{self, Collateral, Quote, TdxPolicy};

use crate::output;

/// Arguments.
#[derive(Debug, clap::Args)]
#[command(after_long_help = COLLATERAL_HELP)]
pub struct Args {
    /// The quote: binary, or hex text.
    pub quote: PathBuf,
    /// The collateral directory (layout below); `collateral/` beside the quote when absent.
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// The verification time (RFC 3339); now when absent.
    #[arg(long)]
    pub at: Option<String>,
    /// The expected REPORTDATA (128 hex digits); not checked when absent.
    #[arg(long)]
    pub report_data: Option<String>,
    /// A policy (TOML, as for `veil-verify bundle`), whose `[tdx]` section applies; the
    /// default policy when absent.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The TD event log: the binary CCEL (as a TD reads it from
    /// /sys/firmware/acpi/tables/data/CCEL), replayed to RTMR 0..=3, each of which must
    /// equal the quoted one (one line per RTMR), and searched for the policy's pinned
    /// `[[tdx.events]]`.
    #[arg(long, value_name = "FILE")]
    pub event_log: Option<PathBuf>,
    /// Print one JSON document instead of one line per check.
    #[arg(long)]
    pub json: bool,
}

const COLLATERAL_HELP: &str = "\
Collateral directory layout (DCAP collateral, as Intel PCS/PCCS serve it):
  tcb_info.json + tcb_info.sig.hex    the exact signed bytes of the \"tcbInfo\" value, and its
                                      ECDSA P-256 signature as hex r||s
  or tcb_info_response.json           the PCS response {\"tcbInfo\":{...},\"signature\":\"hex\"}
  tcb_info_issuer_chain.pem           TCB Signing certificate (+ Intel SGX Root CA)
  qe_identity.json + qe_identity.sig.hex, or qe_identity_response.json
                                      the same for \"enclaveIdentity\" (TD_QE)
  qe_identity_issuer_chain.pem        optional; defaults to tcb_info_issuer_chain.pem
  pck_crl.der                         PCK CRL (DER or PEM)
  root_ca_crl.der                     Intel SGX Root CA CRL (DER or PEM)
  pck_crl_issuer_chain.pem            optional, ignored (the CRL is checked against the
                                      quote's own PCK CA certificate)
The PCK chain comes from the quote (certification data type 6 wrapping type 5); the root
is always the pinned Intel SGX Root CA.
With --event-log, the log is judged once the quote verifies: event-log.rtmr0..3 pass only
where its replay equals the quoted RTMR; the policy's require_event_log and [[tdx.events]]
apply (policy.event-log, policy.events); --json lists its records under facts.event_log.
Exit status: 0 valid, 1 invalid, 2 usage or I/O error.";

fn quote_bytes(raw: Vec<u8>) -> Vec<u8> {
    let text = raw.trim_ascii();
    if !text.is_empty()
        && text.len().is_multiple_of(2)
        && text.iter().all(u8::is_ascii_hexdigit)
        && let Ok(decoded) = hex::decode(text)
    {
        return decoded;
    }
    raw
}

fn facts(
    quote: Option<&Quote>,
    verified: Option<&tdx::TdxVerified>,
    event_log: Option<&[CcelRecord]>,
    error: Option<String>,
) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    if let Some(v) = verified {
        map.insert("tcb_status".into(), json!(v.tcb_status.as_str()));
        map.insert("advisory_ids".into(), json!(v.advisory_ids));
        map.insert("platform_status".into(), json!(v.platform_status.as_str()));
        map.insert(
            "tdx_module_status".into(),
            json!(v.module_status.map(|s| s.as_str())),
        );
        map.insert("qe_status".into(), json!(v.qe_status.as_str()));
        map.insert("tcb_date".into(), json!(v.tcb_date));
        map.insert("fmspc".into(), json!(hex::encode(v.fmspc)));
        map.insert(
            "tcb_evaluation_data_number".into(),
            json!(v.tcb_evaluation_data_number),
        );
    }
    if let Some(e) = error {
        map.insert("error".into(), json!(e));
    }
    if let Some(q) = quote {
        let r = &q.report;
        map.insert("quote_version".into(), json!(q.header.version));
        map.insert(
            "td_report".into(),
            json!(if r.body_type == 3 { "1.5" } else { "1.0" }),
        );
        map.insert("mr_td".into(), json!(hex::encode(r.mr_td)));
        for (i, rtmr) in r.rtmr.iter().enumerate() {
            map.insert(format!("rtmr{i}"), json!(hex::encode(rtmr)));
        }
        map.insert("report_data".into(), json!(hex::encode(r.report_data)));
        map.insert("mr_config_id".into(), json!(hex::encode(r.mr_config_id)));
        map.insert("mr_owner".into(), json!(hex::encode(r.mr_owner)));
        map.insert(
            "mr_owner_config".into(),
            json!(hex::encode(r.mr_owner_config)),
        );
        map.insert("mr_seam".into(), json!(hex::encode(r.mr_seam)));
        map.insert("tee_tcb_svn".into(), json!(hex::encode(r.tee_tcb_svn)));
        map.insert("td_attributes".into(), json!(hex::encode(r.td_attributes)));
        map.insert("xfam".into(), json!(hex::encode(r.xfam)));
    }
    if let Some(records) = event_log {
        map.insert("event_log".into(), output::event_log(records, true));
    }
    serde_json::Value::Object(map)
}

fn collateral_dir(args: &Args) -> PathBuf {
    args.collateral.clone().unwrap_or_else(|| {
        args.quote
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("collateral")
    })
}

/// Run the command.
pub fn run(args: &Args) -> ExitCode {
    let at = match output::at(args.at.as_deref()) {
        Ok(at) => at,
        Err(e) => return output::usage_error(e),
    };
    let quote = match output::read(&args.quote) {
        Ok(q) => quote_bytes(q),
        Err(e) => return output::usage_error(e),
    };
    let expected = match output::report_data(args.report_data.as_deref()) {
        Ok(rd) => rd,
        Err(e) => return output::usage_error(e),
    };
    let policy: TdxPolicy = match output::policy(args.policy.as_deref()) {
        Ok(p) => p.tdx,
        Err(e) => return output::usage_error(e),
    };
    let event_log = match args.event_log.as_deref().map(output::read).transpose() {
        Ok(log) => log,
        Err(e) => return output::usage_error(e),
    };
    let dir = collateral_dir(args);
    let files = match tdx::collateral::read_dir_files(&dir) {
        Ok(f) if f.is_empty() => {
            return output::usage_error(format!(
                "{}: no collateral files (see --help for the layout)",
                dir.display()
            ));
        }
        Ok(f) => f,
        Err(e) => return output::usage_error(e),
    };
    let parsed = Quote::parse(&quote).ok();
    let mut checks = Checks::new();
    let collateral = match Collateral::from_files(&files) {
        Ok(c) => {
            checks.pass("collateral", format!("{} parsed", dir.display()));
            c
        }
        Err(e) => {
            checks.fail("collateral", format!("{}: {e}", dir.display()));
            let facts = facts(parsed.as_ref(), None, None, Some(e.to_string()));
            return output::finish("tdx-quote", &checks, facts, args.json);
        }
    };
    let result = tdx::verify(
        &quote,
        &collateral,
        &policy,
        expected.as_ref(),
        at,
        &mut checks,
    );
    let facts = match &result {
        // The event log is judged against the verified quote's RTMRs only; its records
        // are shown when it parses, whether or not it replays.
        Ok(v) => {
            let log = event_log.as_deref();
            match policy.check_event_log(&v.report, log, &mut checks) {
                Ok(records) => facts(parsed.as_ref(), Some(v), records.as_deref(), None),
                Err(e) => {
                    let records = log.and_then(|l| tdx::eventlog::parse_ccel_records(l).ok());
                    facts(
                        parsed.as_ref(),
                        Some(v),
                        records.as_deref(),
                        Some(e.to_string()),
                    )
                }
            }
        }
        Err(e) => facts(parsed.as_ref(), None, None, Some(e.to_string())),
    };
    output::finish("tdx-quote", &checks, facts, args.json)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const TDX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/tdx");

    fn args(sample: &str, collateral: Option<&str>, at: &str) -> Args {
        Args {
            quote: PathBuf::from(format!("{TDX}/{sample}/quote.bin")),
            collateral: collateral.map(|c| PathBuf::from(format!("{TDX}/{c}"))),
            at: Some(at.to_owned()),
            report_data: None,
            policy: None,
            event_log: None,
            json: true,
        }
    }

    #[test]
    fn exit_codes() {
        // Valid: collateral/ beside the quote by default.
        assert_eq!(
            run(&args("dcap-qvl-v4-uptodate", None, "2025-07-19T10:00:34Z")),
            ExitCode::SUCCESS
        );
        // Invalid: no matching TCB level.
        assert_eq!(
            run(&args("dcap-qvl-v5-outdated", None, "2026-03-20T10:41:14Z")),
            output::invalid()
        );
        // Invalid: expired collateral.
        assert_eq!(
            run(&args("dcap-qvl-v4-uptodate", None, "2026-01-01T00:00:00Z")),
            output::invalid()
        );
        // Valid with the FMSPC's collateral from another sample.
        assert_eq!(
            run(&args(
                "dstack-v4-eventlog",
                Some("dcap-qvl-v5-outdated/collateral"),
                "2026-03-01T00:00:00Z"
            )),
            ExitCode::SUCCESS
        );
        // Usage: no collateral directory, a bad time, a missing quote, bad report data.
        assert_eq!(
            run(&args("dstack-v4-eventlog", None, "2026-03-01T00:00:00Z")),
            output::usage()
        );
        assert_eq!(
            run(&args("dcap-qvl-v4-uptodate", None, "yesterday")),
            output::usage()
        );
        assert_eq!(
            run(&args(
                "nonexistent",
                Some("dcap-qvl-v4-uptodate/collateral"),
                "2025-07-19T10:00:34Z"
            )),
            output::usage()
        );
        let mut bad_rd = args("dcap-qvl-v4-uptodate", None, "2025-07-19T10:00:34Z");
        bad_rd.report_data = Some("12".to_owned());
        assert_eq!(run(&bad_rd), output::usage());
        // The expected REPORTDATA, given, is checked.
        let mut rd = args("dcap-qvl-v4-uptodate", None, "2025-07-19T10:00:34Z");
        rd.report_data = Some("9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20".to_owned());
        assert_eq!(run(&rd), ExitCode::SUCCESS);
        rd.report_data = Some("00".repeat(64));
        assert_eq!(run(&rd), output::invalid());
    }
}
