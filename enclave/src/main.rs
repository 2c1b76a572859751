//! `veil-enclave`: The attested inference service that runs inside the confidential VM.

use clap::Parser;

/// The attested inference service that runs inside the confidential VM.
#[derive(Debug, Parser)]
#[command(name = "veil-enclave", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "veil-enclave {}: not yet implemented (issue 4); see README.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
