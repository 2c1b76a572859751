//! `veil-verify snp-report`: verify an AMD SEV-SNP attestation report with its VCEK or
//! VLEK (and optionally the ASK/ASVK and ARK; the ARK is always the pinned one), offline.

use std::path::PathBuf;
use std::process::ExitCode;

use veil_attestation::checks::Checks;
use veil_attestation::snp::{self, Product, SnpChain, SnpPolicy};
use veil_attestation::x509::{Certificate, Crl};

use crate::output;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The attestation report (1184 bytes binary, or hex).
    pub report: PathBuf,
    /// The VCEK or VLEK (PEM or DER; a PEM may also hold the ASK and ARK).
    #[arg(long)]
    pub vcek: PathBuf,
    /// The ASK (or ASVK for a VLEK), PEM or DER; the pinned one when absent.
    #[arg(long)]
    pub ask: Option<PathBuf>,
    /// The ARK, PEM or DER; must be the pinned ARK of the product.
    #[arg(long)]
    pub ark: Option<PathBuf>,
    /// An ARK CRL (PEM or DER); repeatable.
    #[arg(long)]
    pub crl: Vec<PathBuf>,
    /// The product line; taken from the certificates when absent.
    #[arg(long)]
    pub product: Option<Product>,
    /// The verification time (RFC 3339); now when absent.
    #[arg(long)]
    pub at: Option<String>,
    /// The expected REPORT_DATA (128 hex digits); not checked when absent.
    #[arg(long)]
    pub report_data: Option<String>,
    /// A policy (TOML, as for `veil-verify bundle`), whose `[snp]` section applies; the
    /// default policy when absent.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print one JSON document instead of one line per check.
    #[arg(long)]
    pub json: bool,
}

fn certs_from(path: &std::path::Path) -> Result<Vec<Certificate>, String> {
    let bytes = output::read(path)?;
    Certificate::all_from_pem_or_der(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Run the command.
pub fn run(args: &Args) -> ExitCode {
    let at = match output::at(args.at.as_deref()) {
        Ok(at) => at,
        Err(e) => return output::usage_error(e),
    };
    let report = match output::read(&args.report) {
        Ok(r) => r,
        Err(e) => return output::usage_error(e),
    };
    let mut certs = Vec::new();
    for path in [Some(&args.vcek), args.ask.as_ref(), args.ark.as_ref()]
        .into_iter()
        .flatten()
    {
        match certs_from(path) {
            Ok(c) => certs.extend(c),
            Err(e) => return output::usage_error(e),
        }
    }
    let mut crls = Vec::new();
    for path in &args.crl {
        match output::read(path)
            .and_then(|b| Crl::from_pem_or_der(&b).map_err(|e| format!("{}: {e}", path.display())))
        {
            Ok(c) => crls.push(c),
            Err(e) => return output::usage_error(e),
        }
    }
    let mut policy: SnpPolicy = match output::policy(args.policy.as_deref()) {
        Ok(p) => p.snp,
        Err(e) => return output::usage_error(e),
    };
    if args.product.is_some() {
        policy.product = args.product;
    }
    let expected = match output::report_data(args.report_data.as_deref()) {
        Ok(rd) => rd,
        Err(e) => return output::usage_error(e),
    };

    let mut checks = Checks::new();
    let parsed = match snp::AttestationReport::from_bytes_or_hex(&report) {
        Ok(r) => {
            checks.pass(
                "report.version",
                format!("version {} (2, 3, 5 supported)", r.version),
            );
            r
        }
        Err(e) => {
            checks.fail(snp::SnpError::Report(e.clone()).check(), e.to_string());
            return output::finish("snp-report", &checks, serde_json::Value::Null, args.json);
        }
    };
    let result =
        SnpChain::from_certificates(certs, policy.product, &crls, &mut checks).and_then(|chain| {
            snp::verify_parsed(&parsed, &chain, &policy, expected.as_ref(), at, &mut checks)
        });
    let facts = match &result {
        Ok(v) => serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::json!({
            "version": parsed.version,
            "measurement": hex::encode(parsed.measurement),
            "report_data": hex::encode(parsed.report_data),
            "chip_id": hex::encode(parsed.chip_id),
        }),
    };
    output::finish("snp-report", &checks, facts, args.json)
}
