//! `veil-verify policy from-manifest`: write the policy that pins what an image manifest
//! records (launch measurements, TDX registers, the model manifest digest).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use veil_attestation::bytes::{Measurement, Sha256Digest};
use veil_attestation::verify::Policy;
use veil_images::manifest::Manifest;

use crate::output;

/// Policy commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write (to standard output, or --out) a TOML policy pinning the launch
    /// measurements, TDX MRTD/RTMR1/RTMR2 and model manifest digest of an image manifest;
    /// every other setting keeps its (strict) default.
    FromManifest {
        /// The image manifest (JSON, as `veil-image build` writes it).
        manifest: PathBuf,
        /// Write the policy to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Run the command.
pub fn run(command: &Command) -> ExitCode {
    match command {
        Command::FromManifest { manifest, out } => match from_manifest(manifest) {
            Ok(text) => match out {
                None => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Some(path) => match std::fs::write(path, text) {
                    Ok(()) => {
                        eprintln!("veil-verify: wrote {}", path.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => output::usage_error(format!("{}: {e}", path.display())),
                },
            },
            Err(e) => output::usage_error(e),
        },
    }
}

fn hex<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.trim()
        .parse()
        .map_err(|e| format!("image manifest {field}: {e}"))
}

/// The policy text for the manifest at `path`.
///
/// # Errors
/// When the manifest cannot be read, or holds a value of the wrong length.
pub fn from_manifest(path: &Path) -> Result<String, String> {
    let bytes = output::read(path)?;
    let manifest = Manifest::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut policy = Policy::default();
    if let Some(d) = &manifest.model_manifest_digest {
        policy
            .model_manifest_digests
            .push(hex::<Sha256Digest>("model_manifest_digest", d)?);
    }
    for (i, snp) in manifest.snp.iter().enumerate() {
        let m: Measurement = hex(
            &format!("snp[{i}].launch_measurement"),
            &snp.launch_measurement,
        )?;
        policy.launch_measurements.push(m);
    }
    for (i, tdx) in manifest.tdx.iter().enumerate() {
        let m: Measurement = hex(&format!("tdx[{i}].mr_td"), &tdx.mr_td)?;
        policy.launch_measurements.push(m);
        policy.tdx.mr_td.push(m);
        if let Some(r) = &tdx.rtmr1 {
            policy.tdx.rtmr1.push(hex(&format!("tdx[{i}].rtmr1"), r)?);
        }
        if let Some(r) = &tdx.rtmr2 {
            policy.tdx.rtmr2.push(hex(&format!("tdx[{i}].rtmr2"), r)?);
        }
    }
    if policy.launch_measurements.is_empty() {
        return Err(format!(
            "{}: the manifest records no SEV-SNP or TDX launch measurement; a policy from it would pin nothing",
            path.display()
        ));
    }
    let body = toml::to_string_pretty(&policy).map_err(|e| format!("writing the policy: {e}"))?;
    // The measurements cover the command line, which pins the root filesystem: say which.
    let image_lines = match &manifest.build {
        None => String::new(),
        Some(b) => {
            let root: Sha256Digest = hex("build.verity.root_hash", &b.verity.root_hash)?;
            format!(
                "# The image's root filesystem: dm-verity root hash {root} (on its measured command line).\n"
            )
        }
    };
    Ok(format!(
        "# veil attestation policy for image {:?}, written by `veil-verify policy from-manifest`\n\
         # from {}\n\
         # (sha256 {}).\n\
         {image_lines}\
         # It pins the image's launch measurements{} and model manifest; everything else\n\
         # is the strict default (see attestation/policy.example.toml).\n\n{body}",
        manifest.image,
        path.display(),
        Sha256Digest::of(&bytes),
        if manifest.tdx.is_empty() {
            ""
        } else {
            ", TDX MRTD/RTMR1/RTMR2"
        },
    ))
}
