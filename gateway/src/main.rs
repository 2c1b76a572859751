//! `veil-gateway`: the untrusted gateway: API keys, limits, routing and metering without
//! plaintext.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use veil_attestation::verify::Policy;
use veil_gateway::auth::NewKey;
use veil_gateway::store::{Period, Store, aggregate};
use veil_gateway::{Settings, build_state, routes::valid_key_name, serve_with, serve_workers, tls};

const DEFAULT_DATABASE: &str = "veil-gateway.db";

/// The untrusted gateway: API keys, limits, routing and metering without plaintext.
#[derive(Debug, Parser)]
#[command(name = "veil-gateway", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the client API (/v1/ohttp, /v1/attestation, /.well-known/ohttp-gateway,
    /// /v1/models), the admin API (/admin), /healthz and /metrics.
    Serve(Box<ServeArgs>),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Usage recorded from verified receipts, aggregated by period, key and model.
    Usage {
        /// Database: a SQLite file (`sqlite:PATH` or a path) or `postgres://...`.
        #[arg(long, env = "VEIL_DATABASE", default_value = DEFAULT_DATABASE)]
        database: String,
        /// Aggregation period.
        #[arg(long, env = "VEIL_USAGE_PERIOD", value_enum, default_value = "day")]
        period: Period,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML file with any of: listen, backends, database, admin_token, policy (a table of
    /// the attestation policy), insecure_allow_sim, refresh_interval_seconds, max_body_bytes,
    /// max_streams_per_key, tls_cert, tls_key, ledger_outage, workers. Flags and environment variables override it.
    #[arg(long, env = "VEIL_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks one; the bound address is printed on stderr as
    /// `listening on http://ADDR`, or `https://ADDR` with TLS). [default: 127.0.0.1:8080]
    #[arg(long, env = "VEIL_GATEWAY_LISTEN")]
    listen: Option<String>,
    /// An enclave's base URL (repeat for several; comma-separated in the environment).
    #[arg(long = "backend", env = "VEIL_BACKENDS", value_delimiter = ',')]
    backends: Vec<String>,
    /// Database: a SQLite file (`sqlite:PATH` or a path; created on first run) or
    /// `postgres://...` (shared by replicas). [default: veil-gateway.db]
    #[arg(long, env = "VEIL_DATABASE")]
    database: Option<String>,
    /// Token guarding the admin API under /admin (`Authorization: Bearer TOKEN`); without
    /// one the admin API is off.
    #[arg(long, env = "VEIL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The backend verification policy: a TOML file with the attestation policy's fields
    /// (insecure_allow_sim, max_evidence_age_seconds, model_manifest_digests).
    #[arg(long, env = "VEIL_POLICY")]
    policy: Option<PathBuf>,
    /// Accept backends running the SIMULATED TEE. Development only: it protects nothing.
    #[arg(long, env = "VEIL_INSECURE_ALLOW_SIM")]
    insecure_allow_sim: bool,
    /// Seconds between re-verifications and health checks of every backend. [default: 30]
    #[arg(long, env = "VEIL_REFRESH_INTERVAL_SECONDS")]
    refresh_interval_seconds: Option<u64>,
    /// The largest encapsulated request accepted, in bytes. [default: 8388608]
    #[arg(long, env = "VEIL_MAX_BODY_BYTES")]
    max_body_bytes: Option<u64>,
    /// Concurrent requests per key for keys without their own limit. [default: 16]
    #[arg(long, env = "VEIL_MAX_STREAMS_PER_KEY")]
    max_streams_per_key: Option<u32>,
    /// Serve HTTPS (rustls; TLS 1.2 and 1.3; HTTP/1.1 and HTTP/2 by ALPN) with this PEM
    /// certificate chain, leaf first. Needs --tls-key. Without both, plain HTTP (for local
    /// use, or behind a TLS terminator).
    #[arg(long, env = "VEIL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "VEIL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// While the database cannot be reached: `refuse` requests with 503
    /// ledger_unavailable (nothing served unbilled), or `serve` keys seen valid in the
    /// last ten minutes and write their receipts when it is back. Receipts whose write
    /// fails are kept (up to 100,000) and written again either way. [default: refuse]
    #[arg(long, env = "VEIL_LEDGER_OUTAGE", value_enum)]
    ledger_outage: Option<veil_gateway::LedgerOutage>,
    /// Worker threads, each a single-threaded runtime serving the connections it accepts
    /// and forwarding their requests over its own connections to the enclaves (a request
    /// stays on one thread); 0: one work-stealing runtime shared by all connections.
    /// [default: the number of CPUs]
    #[arg(long, env = "VEIL_GATEWAY_WORKERS")]
    workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    #[serde(default)]
    backends: Vec<String>,
    database: Option<String>,
    admin_token: Option<String>,
    policy: Option<Policy>,
    #[serde(default)]
    insecure_allow_sim: bool,
    refresh_interval_seconds: Option<u64>,
    max_body_bytes: Option<u64>,
    max_streams_per_key: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ledger_outage: Option<veil_gateway::LedgerOutage>,
    workers: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; the key is printed once, alone on the last line.
    Create {
        /// Database: a SQLite file (`sqlite:PATH` or a path) or `postgres://...`.
        #[arg(long, env = "VEIL_DATABASE", default_value = DEFAULT_DATABASE)]
        database: String,
        /// A unique name (letters, digits, '.', '_', '-'), shown in logs and usage.
        #[arg(long)]
        name: String,
        /// Requests per minute (unlimited if absent).
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute (unlimited if absent); requests must then declare
        /// Veil-Max-Tokens.
        #[arg(long)]
        tpm: Option<u32>,
        /// Concurrent requests in flight (the gateway's default if absent).
        #[arg(long)]
        max_streams: Option<u32>,
    },
    /// List keys (names, limits, state; never the keys).
    List {
        /// Database: a SQLite file (`sqlite:PATH` or a path) or `postgres://...`.
        #[arg(long, env = "VEIL_DATABASE", default_value = DEFAULT_DATABASE)]
        database: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; a running gateway refuses it from its next request.
    Revoke {
        /// Database: a SQLite file (`sqlite:PATH` or a path) or `postgres://...`.
        #[arg(long, env = "VEIL_DATABASE", default_value = DEFAULT_DATABASE)]
        database: String,
        /// The key's name.
        #[arg(long)]
        name: String,
    },
    /// Change a key's limits (absent limits become unlimited / the default).
    Limits {
        /// Database: a SQLite file (`sqlite:PATH` or a path) or `postgres://...`.
        #[arg(long, env = "VEIL_DATABASE", default_value = DEFAULT_DATABASE)]
        database: String,
        /// The key's name.
        #[arg(long)]
        name: String,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u32>,
        /// Concurrent requests in flight.
        #[arg(long)]
        max_streams: Option<u32>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VEIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let multi_thread = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Serve(args) => {
            // The config file is read first: its worker count chooses the runtime. With
            // workers, `serve` runs on this thread's runtime and starts the others
            // itself; with none (0), on one work-stealing runtime.
            let file = file_config(&args)?;
            let workers = workers(&args, &file);
            let rt = if workers == 0 {
                multi_thread()?
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            };
            rt.block_on(serve_command(*args, file, workers))
        }
        Command::Keys { command } => multi_thread()?.block_on(keys_command(command)),
        Command::Usage {
            database,
            period,
            json,
        } => multi_thread()?.block_on(usage_command(&database, period, json)),
    }
}

/// The `--config` file of `serve`, or the defaults when none is given.
fn file_config(args: &ServeArgs) -> anyhow::Result<FileConfig> {
    Ok(match &args.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?,
        None => FileConfig::default(),
    })
}

/// Worker threads: the flag (or its environment variable), the file, or the CPU count.
fn workers(args: &ServeArgs, file: &FileConfig) -> usize {
    args.workers.or(file.workers).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// `usage`: the ledger's totals per period, key and model.
async fn usage_command(database: &str, period: Period, json: bool) -> anyhow::Result<()> {
    let store = Store::open(database).await?;
    let totals = aggregate(&store.usage_rows().await?, period);
    if json {
        println!("{}", serde_json::to_string_pretty(&totals)?);
    } else {
        println!(
            "{:<14} {:<24} {:<28} {:>9} {:>12} {:>12}",
            "period", "key", "model", "requests", "prompt", "completion"
        );
        for t in totals {
            println!(
                "{:<14} {:<24} {:<28} {:>9} {:>12} {:>12}",
                t.period, t.key_name, t.model, t.requests, t.prompt_tokens, t.completion_tokens
            );
        }
    }
    Ok(())
}

async fn serve_command(args: ServeArgs, file: FileConfig, workers: usize) -> anyhow::Result<()> {
    // TLS first: a broken certificate or key is refused before anything starts.
    let tls_cert = args.tls_cert.or(file.tls_cert);
    let tls_key = args.tls_key.or(file.tls_key);
    let tls = tls::server_config(tls_cert.as_deref(), tls_key.as_deref())?;
    let mut policy = match &args.policy {
        Some(p) => Policy::load(p)?,
        None => file.policy.clone().unwrap_or_default(),
    };
    if args.insecure_allow_sim || file.insecure_allow_sim {
        policy.insecure_allow_sim = true;
    }
    if policy.insecure_allow_sim {
        eprintln!(
            "veil-gateway: WARNING: accepting backends on the SIMULATED TEE (insecure_allow_sim): no hardware protection; development only"
        );
    }
    let backends = if args.backends.is_empty() {
        file.backends.clone()
    } else {
        args.backends.clone()
    };
    if backends.is_empty() {
        anyhow::bail!(
            "no backends: give --backend URL (or VEIL_BACKENDS, or backends in --config)"
        );
    }
    let settings = Settings {
        backends,
        policy,
        database: args
            .database
            .or(file.database)
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned()),
        admin_token: args.admin_token.or(file.admin_token),
        refresh_interval: Duration::from_secs(
            args.refresh_interval_seconds
                .or(file.refresh_interval_seconds)
                .unwrap_or(30)
                .max(1),
        ),
        max_body_bytes: args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(8 << 20),
        default_max_streams: args
            .max_streams_per_key
            .or(file.max_streams_per_key)
            .unwrap_or(16),
        ledger_outage: args
            .ledger_outage
            .or(file.ledger_outage)
            .unwrap_or_default(),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let state = build_state(&settings).await?;
    if workers == 0 {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        return serve_with(state, listener, settings.refresh_interval, tls).await;
    }
    let listener =
        std::net::TcpListener::bind(&listen).with_context(|| format!("binding {listen}"))?;
    serve_workers(state, listener, settings.refresh_interval, tls, workers).await
}

async fn keys_command(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            database,
            name,
            rpm,
            tpm,
            max_streams,
        } => {
            if !valid_key_name(&name) {
                anyhow::bail!("--name: 1 to 64 of letters, digits, '.', '_', '-'");
            }
            let store = Store::open(&database).await?;
            let key = NewKey::generate()?;
            store
                .create_key(&name, &key.hash(), rpm, tpm, max_streams)
                .await?;
            eprintln!("created key {name:?}; it is shown once, below, and stored only as a hash");
            println!("{}", key.secret());
        }
        KeysCommand::List { database, json } => {
            let keys = Store::open(&database).await?.list_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                let show = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
                println!(
                    "{:<24} {:>8} {:>10} {:>8} {:<8}",
                    "name", "rpm", "tpm", "streams", "state"
                );
                for k in keys {
                    println!(
                        "{:<24} {:>8} {:>10} {:>8} {:<8}",
                        k.name,
                        show(k.rpm),
                        show(k.tpm),
                        show(k.max_streams),
                        if k.revoked_at_ms.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
            }
        }
        KeysCommand::Revoke { database, name } => {
            if !Store::open(&database).await?.revoke_key(&name).await? {
                anyhow::bail!("no active key named {name:?}");
            }
            println!("revoked {name}");
        }
        KeysCommand::Limits {
            database,
            name,
            rpm,
            tpm,
            max_streams,
        } => {
            if !Store::open(&database)
                .await?
                .set_limits(&name, rpm, tpm, max_streams)
                .await?
            {
                anyhow::bail!("no key named {name:?}");
            }
            println!("updated {name}");
        }
    }
    Ok(())
}
