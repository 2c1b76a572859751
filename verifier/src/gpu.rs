//! `veil-verify gpu`: verify NVIDIA H100 confidential-computing evidence (an SPDM
//! `GET_MEASUREMENTS` transcript) with its device certificate chain to the pinned
//! `NVIDIA Device Identity CA`, optionally against RIMs, offline.
//!
//! Each RIM's enveloped XML-DSig is verified to the pinned CoRIM signing root (at
//! `--at`: the samples' RIM signers have expired) before its values are used. The
//! device chain's revocation needs `--ocsp` responses; without them `revocation` fails
//! unless `--insecure-allow-missing-ocsp`.

use std::path::PathBuf;
use std::process::ExitCode;

use veil_attestation::checks::Checks;
use veil_attestation::nvidia::{self, GpuChain, GpuPolicy, References, Rim};

use crate::output;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SPDM transcript (GET_MEASUREMENTS request || MEASUREMENTS response), binary
    /// or hex.
    pub report: PathBuf,
    /// The device certificate chain, PEM (leaf first; the root may be left out).
    #[arg(long)]
    pub certs: PathBuf,
    /// The expected nonce (64 hex digits); not checked when absent.
    #[arg(long)]
    pub nonce: Option<String>,
    /// A driver or VBIOS RIM (SWID tag XML) to compare the measurements with;
    /// repeatable. Its XML signature must verify to the pinned NVIDIA CoRIM root.
    #[arg(long)]
    pub rim: Vec<PathBuf>,
    /// A DER OCSP response for a certificate of the device chain; repeatable.
    #[arg(long)]
    pub ocsp: Vec<PathBuf>,
    /// Accept evidence without a current, good OCSP status for every device
    /// certificate (a warning instead of a failure; revoked still fails).
    #[arg(long)]
    pub insecure_allow_missing_ocsp: bool,
    /// A policy (TOML, as for `veil-verify bundle`), whose `[gpu]` section applies; the
    /// default policy when absent.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The verification time (RFC 3339); now when absent.
    #[arg(long)]
    pub at: Option<String>,
    /// Print one JSON document instead of one line per check.
    #[arg(long)]
    pub json: bool,
}

fn nonce(arg: Option<&str>) -> Result<Option<[u8; 32]>, String> {
    let Some(text) = arg else { return Ok(None) };
    hex::decode(text.trim())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| "--nonce must be 32 bytes (64 hex digits)".to_owned())
}

/// Run the command.
pub fn run(args: &Args) -> ExitCode {
    let at = match output::at(args.at.as_deref()) {
        Ok(at) => at,
        Err(e) => return output::usage_error(e),
    };
    let expected_nonce = match nonce(args.nonce.as_deref()) {
        Ok(n) => n,
        Err(e) => return output::usage_error(e),
    };
    let (report, certs) = match (output::read(&args.report), output::read(&args.certs)) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(e), _) | (_, Err(e)) => return output::usage_error(e),
    };
    let mut rims = Vec::new();
    for path in &args.rim {
        match output::read(path)
            .and_then(|b| Rim::parse(&b).map_err(|e| format!("{}: {e}", path.display())))
        {
            Ok(r) => rims.push(r),
            Err(e) => return output::usage_error(e),
        }
    }
    let mut ocsp = Vec::new();
    for path in &args.ocsp {
        match output::read(path) {
            Ok(b) => ocsp.push(b),
            Err(e) => return output::usage_error(e),
        }
    }
    let mut policy: GpuPolicy = match output::policy(args.policy.as_deref()) {
        Ok(p) => p.gpu,
        Err(e) => return output::usage_error(e),
    };
    if args.insecure_allow_missing_ocsp {
        policy.allow_missing_ocsp = true;
    }

    let mut checks = Checks::new();
    let parsed = match nvidia::parse_report(&report, &mut checks) {
        Ok(r) => r,
        Err(_) => return output::finish("gpu", &checks, serde_json::Value::Null, args.json),
    };
    let refs = References {
        expected_nonce: expected_nonce.as_ref(),
        rims: &rims,
        ocsp: &ocsp,
    };
    let result = GpuChain::from_pem_or_der(&certs, &mut checks)
        .and_then(|chain| nvidia::verify_parsed(&parsed, &chain, &refs, &policy, at, &mut checks));
    let facts = match &result {
        Ok(v) => {
            let mut value = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
            if let serde_json::Value::Object(map) = &mut value {
                map.insert("caveat".to_owned(), nvidia::RELAY_CAVEAT.into());
            }
            value
        }
        Err(_) => serde_json::json!({
            "nonce": hex::encode(parsed.request.nonce),
            "driver_version": parsed.opaque.driver_version(),
            "vbios_version": parsed.opaque.vbios_version(),
            "measurement_count": parsed.blocks.len(),
        }),
    };
    output::finish("gpu", &checks, facts, args.json)
}
