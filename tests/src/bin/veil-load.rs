//! `veil-load`: drives proxy → gateway → several enclaves (all real processes on
//! loopback, simulated TEE) with concurrent clients and checks every answer, the ledger
//! and the canaries. See `veil_tests::load`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use veil_tests::load::{Config, run};

/// Load harness: N concurrent clients (streamed chat, chat, embeddings) through
/// `veil proxy` → `veil-gateway` → several `veil-enclave --tee sim`, for a bounded time.
///
/// Reports requests/s, latency percentiles and errors by class; checks that every answer
/// opened and matches its request, that its receipt is in the ledger exactly once, and
/// that none of the per-request canaries appears in the gateway's traffic, any process's
/// output, the enclaves' metrics or the ledger. Exit status 1 when any answer is
/// corrupted or lost, or any canary is found. Uses the binaries beside this one (build
/// them with `cargo build --release --workspace --bins` for figures).
#[derive(Debug, Parser)]
#[command(name = "veil-load", version, about, long_about = None)]
struct Cli {
    /// The model directory (see `veil-enclave models fetch`).
    #[arg(long, env = "VEIL_MODELS_DIR", default_value = "models")]
    models: PathBuf,
    /// Enclaves behind the gateway.
    #[arg(long, default_value_t = 2)]
    enclaves: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds to send for.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Stop after this many requests (whichever comes first).
    #[arg(long, default_value_t = u64::MAX)]
    requests: u64,
    /// Weights of streamed chat, chat and embeddings, as `S,C,E`.
    #[arg(long, default_value = "1,1,2", value_parser = parse_mix)]
    mix: [u32; 3],
    /// `max_tokens` of chat requests.
    #[arg(long, default_value_t = 8)]
    max_tokens: u32,
    /// Kill the first enclave this many seconds after the start.
    #[arg(long)]
    kill_enclave_after: Option<f64>,
    /// Restart the gateway (same ledger) this many seconds after the start.
    #[arg(long)]
    restart_gateway_after: Option<f64>,
    /// Enclaves replace their HPKE keys every this many seconds.
    #[arg(long)]
    rotate_keys_every: Option<u64>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_mix(s: &str) -> Result<[u32; 3], String> {
    let v: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    <[u32; 3]>::try_from(v).map_err(|_| "give three weights: stream,chat,embeddings".to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = Config {
        models: cli.models,
        enclaves: cli.enclaves,
        clients: cli.clients,
        duration: Duration::from_secs(cli.seconds),
        max_requests: cli.requests,
        mix: cli.mix,
        max_tokens: cli.max_tokens,
        kill_enclave_after: cli.kill_enclave_after.map(Duration::from_secs_f64),
        restart_gateway_after: cli.restart_gateway_after.map(Duration::from_secs_f64),
        rotate_keys_every: cli.rotate_keys_every.map(Duration::from_secs),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("veil-load: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(&cfg)) {
        Ok(report) => {
            print!("{}", report.text());
            if let Some(path) = cli.json
                && let Err(e) = std::fs::write(&path, report.json().to_string())
            {
                eprintln!("veil-load: writing {}: {e}", path.display());
                return ExitCode::from(2);
            }
            if report.corrupted == 0 && report.lost == 0 && report.canary_hits == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("veil-load: {e:#}");
            ExitCode::from(2)
        }
    }
}
