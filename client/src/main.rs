//! `veil`: veil's client: attest, chat, and a local OpenAI-compatible proxy.

use clap::Parser;

/// veil's client: attest, chat, and a local OpenAI-compatible proxy.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "veil {}: not yet implemented (issue 6); see README.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
