//! `veil-gateway`: The untrusted gateway: API keys, limits, routing and metering without plaintext.

use clap::Parser;

/// The untrusted gateway: API keys, limits, routing and metering without plaintext.
#[derive(Debug, Parser)]
#[command(name = "veil-gateway", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "veil-gateway {}: not yet implemented (issue 5); see README.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
