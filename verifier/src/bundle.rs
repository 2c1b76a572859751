//! `veil-verify bundle`: verify a whole attestation bundle offline (CPU evidence, GPU
//! evidence, the key binding recomputed from the claims, model digests, evidence age)
//! against a TOML policy, from a file or fetched from a gateway or enclave.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};
use veil_attestation::bundle::{Bundle, Evidence, TdxEvidence};
use veil_attestation::bytes::Sha256Digest;
use veil_attestation::checks::Checks;
use veil_attestation::verify::{Policy, verify_bundle_with_checks};

use crate::ear::{self, Submodule};
use crate::output;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle: a JSON file (`-` for standard input), or the URL of a gateway
    /// (`GET /v1/attestation`, every backend's bundle is verified) or of an enclave
    /// (`GET /attestation`). A URL with a path is fetched as given.
    pub bundle: String,
    /// The policy (TOML; see attestation/policy.example.toml). The default policy
    /// refuses the simulated TEE.
    #[arg(long, env = "VEIL_POLICY")]
    pub policy: Option<PathBuf>,
    /// The verification time (RFC 3339); now when absent.
    #[arg(long)]
    pub at: Option<String>,
    /// Print an attestation result (EAR-style JSON, documented in veil-verify's
    /// `ear` module and the README) instead of one line per check.
    #[arg(long)]
    pub json: bool,
}

/// Run the command.
pub fn run(args: &Args) -> ExitCode {
    let at = match output::at(args.at.as_deref()) {
        Ok(at) => at,
        Err(e) => return output::usage_error(e),
    };
    let (policy, policy_digest) = match &args.policy {
        None => (Policy::default(), "default".to_owned()),
        Some(path) => {
            let loaded = output::read(path).and_then(|bytes| {
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| format!("policy {}: not UTF-8", path.display()))?;
                Policy::from_toml(text, &path.display().to_string())
                    .map(|p| (p, format!("sha256:{}", Sha256Digest::of(&bytes))))
                    .map_err(|e| e.to_string())
            });
            match loaded {
                Ok(p) => p,
                Err(e) => return output::usage_error(e),
            }
        }
    };
    let bytes = match fetch(&args.bundle) {
        Ok(b) => b,
        Err(e) => return output::usage_error(e),
    };
    // A gateway answers {"backends": [bundle, ...]}; a file or an enclave, one bundle.
    let items: Vec<Vec<u8>> = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) if map.contains_key("backends") => match map.get("backends") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|b| serde_json::to_vec(b).unwrap_or_default())
                .collect(),
            _ => vec![bytes],
        },
        _ => vec![bytes],
    };

    let trails: Vec<(Checks, Value, String)> =
        items.iter().map(|item| judge(item, &policy, at)).collect();
    let several = trails.len() > 1;
    let mut submods = Vec::new();
    for (index, (checks, claims, digest)) in trails.iter().enumerate() {
        let prefix = if several {
            format!("backend{index}/")
        } else {
            String::new()
        };
        let (cpu, gpus) = ear::split(checks);
        submods.push(Submodule {
            name: format!("{prefix}cpu"),
            checks: cpu,
            claims: claims.clone(),
            evidence_digest: digest.clone(),
        });
        for (name, list) in gpus {
            submods.push(Submodule {
                name: format!("{prefix}{name}"),
                checks: list,
                claims: Value::Null,
                evidence_digest: digest.clone(),
            });
        }
    }
    let valid = !trails.is_empty()
        && trails
            .iter()
            .all(|(c, _, _)| c.all_passed() && !c.as_slice().is_empty());
    let doc = ear::document(at.unix_timestamp(), &policy_digest, &submods);
    if args.json {
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => println!("{text}"),
            Err(e) => return output::usage_error(format!("serializing the result: {e}")),
        }
    } else {
        print_text(&trails, &doc, &policy_digest);
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        output::invalid()
    }
}

/// Verify one bundle's bytes: its trail, what it claims, and the digest of the bytes.
fn judge(bytes: &[u8], policy: &Policy, at: time::OffsetDateTime) -> (Checks, Value, String) {
    let digest = format!("sha256:{}", Sha256Digest::of(bytes));
    let mut checks = Checks::new();
    let bundle = match Bundle::parse(bytes) {
        Ok(b) => {
            checks.pass("bundle.parse", format!("{} bytes of JSON", bytes.len()));
            b
        }
        Err(e) => {
            checks.fail("bundle.parse", e.to_string());
            return (checks, Value::Null, digest);
        }
    };
    let mut claims = json!({
        "platform": bundle.claims.platform.name(),
        "enclave_version": bundle.claims.enclave_version,
        "key_ids": bundle.claims.key_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "receipt_public_key": bundle.claims.receipt_public_key.to_string(),
        "model_manifest_digest": bundle.claims.model_manifest.digest().to_string(),
        "cpu_evidence": bundle.cpu.kind(),
        "gpu_evidence": bundle.gpus.len(),
        "produced_at": output::rfc3339(bundle.produced_at),
    });
    // The TDX event log's records, as the evidence gives them (the trail says whether it
    // replays to the quote).
    if let Evidence::Tdx(TdxEvidence {
        ccel: Some(ccel), ..
    }) = &bundle.cpu
        && let Some(map) = claims.as_object_mut()
    {
        let value = match veil_attestation::tdx::eventlog::parse_ccel_records(&ccel.0) {
            Ok(records) => output::event_log(&records, false),
            Err(e) => json!({ "error": e.to_string() }),
        };
        map.insert("tdx_event_log".into(), value);
    }
    // The trail records the failure itself; the error adds nothing here.
    let _ = verify_bundle_with_checks(&bundle, policy, at, &mut checks);
    (checks, claims, digest)
}

fn print_text(trails: &[(Checks, Value, String)], doc: &Value, policy_digest: &str) {
    println!("policy: {policy_digest}");
    for (index, (checks, claims, digest)) in trails.iter().enumerate() {
        if trails.len() > 1 {
            println!("\nbackend {index}");
        }
        println!("bundle: {digest}");
        output::print_facts(claims);
        output::print_checks(checks);
        if let Some(failed) = checks.first_failure() {
            println!("=> INVALID: {}: {}", failed.name, failed.detail);
        }
    }
    let status = doc["veil.status"].as_str().unwrap_or("contraindicated");
    let verdict = match status {
        "affirming" => "VALID",
        "warning" => "VALID, with warnings (WARN lines above)",
        _ => "INVALID",
    };
    println!("bundle: {verdict} ({status})");
}

/// The bundle's bytes: a file, standard input, or a URL.
fn fetch(source: &str) -> Result<Vec<u8>, String> {
    if source == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|e| format!("standard input: {e}"))?;
        return Ok(bytes);
    }
    if !(source.starts_with("http://") || source.starts_with("https://")) {
        return output::read(std::path::Path::new(source));
    }
    let (base, path) = split_url(source);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the HTTP client: {e}"))?;
    runtime.block_on(async {
        let client =
            veil_client::Client::new(base, None, Policy::default()).map_err(|e| e.to_string())?;
        let paths: Vec<&str> = match path {
            Some(p) => vec![p],
            // A gateway first, then an enclave.
            None => vec!["/v1/attestation", "/attestation"],
        };
        let mut last = String::new();
        for p in paths {
            let (status, body) = client.get(p).await.map_err(|e| format!("{base}{p}: {e}"))?;
            if status == 200 {
                return Ok(body);
            }
            last = format!("{base}{p}: HTTP {status}");
        }
        Err(last)
    })
}

/// `https://host:port/some/path` → (`https://host:port`, Some(`/some/path`)).
fn split_url(url: &str) -> (&str, Option<&str>) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) if url[after_scheme + i..].len() > 1 => {
            (&url[..after_scheme + i], Some(&url[after_scheme + i..]))
        }
        Some(i) => (&url[..after_scheme + i], None),
        None => (url, None),
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_base_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080", None)
        );
        assert_eq!(split_url("http://h:1/"), ("http://h:1", None));
        assert_eq!(
            split_url("https://h/v1/attestation"),
            ("https://h", Some("/v1/attestation"))
        );
    }
}
