//! `veil-verify`: the auditor's tool: verify attestation evidence offline.
//!
//! Exit codes, for every command: 0 the evidence is valid, 1 it is not, 2 usage or I/O
//! error (nothing was judged).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bundle;
mod ear;
mod fetch;
mod gpu;
mod measure;
mod output;
mod policy;
mod snp;
mod tdx;

/// The auditor's tool: verify attestation evidence offline.
///
/// Exit codes: 0 valid, 1 invalid, 2 usage or I/O error.
#[derive(Debug, Parser)]
#[command(name = "veil-verify", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify a whole attestation bundle (from a file, a gateway or an enclave) against
    /// a TOML policy: CPU and GPU evidence, key binding, models, age.
    Bundle(bundle::Args),
    /// Compute the expected launch measurement (SEV-SNP launch digest, TDX MRTD/RTMRs)
    /// from a VM's firmware, kernel, initrd, command line and vCPUs.
    #[command(subcommand)]
    Measure(measure::Platform),
    /// Policies: write one from an image manifest.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Verify an AMD SEV-SNP attestation report with its VCEK or VLEK, offline.
    SnpReport(snp::Args),
    /// Verify an Intel TDX quote with its DCAP collateral, offline.
    TdxQuote(tdx::Args),
    /// Verify NVIDIA H100 GPU evidence (SPDM measurements) with its device chain, offline.
    Gpu(gpu::Args),
    /// Fetch collateral a host did not supply (SEV-SNP VCEK from AMD's KDS, TDX DCAP
    /// collateral from Intel's PCS), verified and cached; host-side, never on a request
    /// path.
    #[command(subcommand)]
    Fetch(fetch::Command),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                output::usage()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Bundle(args) => bundle::run(&args),
        Command::Measure(platform) => measure::run(&platform),
        Command::Policy(command) => policy::run(&command),
        Command::SnpReport(args) => snp::run(&args),
        Command::TdxQuote(args) => tdx::run(&args),
        Command::Gpu(args) => gpu::run(&args),
        Command::Fetch(command) => fetch::run(&command),
    }
}
