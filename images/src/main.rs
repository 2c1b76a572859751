//! `veil-image`: Builds the sealed, measured confidential-VM image.

use clap::Parser;

/// Builds the sealed, measured confidential-VM image.
#[derive(Debug, Parser)]
#[command(name = "veil-image", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "veil-image {}: not yet implemented (issue 11); see README.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
