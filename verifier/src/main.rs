//! `veil-verify`: The auditor's tool: verify attestation bundles and evidence offline.

use clap::Parser;

/// The auditor's tool: verify attestation bundles and evidence offline.
#[derive(Debug, Parser)]
#[command(name = "veil-verify", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "veil-verify {}: not yet implemented (issue 10); see README.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
