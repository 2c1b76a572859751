//! `veil`: attest, chat, embed, the local OpenAI-compatible proxy, and the demo.

mod config;
mod demo;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use veil_attestation::verify::Policy;
use veil_client::{Client, OuterMeta, Reply, json_request};

/// mimalloc, as in `veil-enclave`: glibc's malloc maps and unmaps each buffer of a
/// megabyte or more, so that sealing and opening a large body page-faulted its buffers
/// in every time (the copying 1 MiB round trip took twice as long; see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// veil's client: verify attestation, then talk to enclaves only through sealed requests.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Conn {
    /// The gateway's URL (else the one `veil config set gateway` stored).
    #[arg(long, env = "VEIL_GATEWAY")]
    gateway: Option<String>,
    /// The API key, `veil_...` (else the one `veil config set api-key` stored).
    #[arg(long, env = "VEIL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A policy file (TOML; the attestation policy: insecure_allow_sim,
    /// max_evidence_age_seconds, model_manifest_digests, launch_measurements). Unknown
    /// keys are errors. Else the one `veil config set policy` stored.
    #[arg(long, env = "VEIL_POLICY")]
    policy: Option<PathBuf>,
    /// Accept the SIMULATED TEE (development only: it protects nothing).
    #[arg(long)]
    insecure_allow_sim: bool,
    /// CA certificates (PEM) to trust for an https:// gateway, beside the system's roots:
    /// for a gateway with a certificate from a private CA. Certificates are always verified.
    #[arg(long, env = "VEIL_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
        let stored = config::Config::load()?;
        let gateway = self
            .gateway
            .clone()
            .or_else(|| stored.gateway.clone())
            .context(
                "no gateway: pass --gateway URL, set VEIL_GATEWAY, or run `veil config set gateway URL`",
            )?;
        let api_key = self.api_key.clone().or_else(|| stored.api_key.clone());
        let policy_file = self.policy.clone().or_else(|| stored.policy.clone());
        let mut policy = match &policy_file {
            Some(p) => Policy::load(p)?,
            None => Policy::default(),
        };
        if self.insecure_allow_sim {
            policy.insecure_allow_sim = true;
        }
        if policy.insecure_allow_sim {
            eprintln!(
                "veil: WARNING: the policy accepts the SIMULATED TEE: nothing protects your data there"
            );
        }
        let roots = match &self.ca_cert {
            Some(p) => {
                let pem = std::fs::read(p)
                    .with_context(|| format!("reading the CA certificates {}", p.display()))?;
                Some(
                    veil_client::tls_roots(Some(&pem))
                        .with_context(|| format!("the CA certificates {}", p.display()))?,
                )
            }
            None => None,
        };
        Ok(Client::with_roots(&gateway, api_key, policy, roots)?)
    }
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Set one value: `gateway URL`, `api-key KEY` (or `-` to read it from stdin, which
    /// keeps it out of shell history), `policy FILE`.
    Set {
        /// gateway, api-key or policy.
        #[arg(value_parser = ["gateway", "api-key", "policy"])]
        key: String,
        /// The value.
        value: String,
    },
    /// Remove one value.
    Unset {
        /// gateway, api-key or policy.
        #[arg(value_parser = ["gateway", "api-key", "policy"])]
        key: String,
    },
    /// Print the configuration (the API key abbreviated).
    Show,
    /// Print the configuration file's path.
    Path,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch the gateway's bundles, verify them, print a report.
    Attest {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a chat message (from the argument, or stdin when absent).
    Chat {
        #[command(flatten)]
        conn: Conn,
        /// The model.
        #[arg(long, default_value = "SmolLM2-135M-Instruct")]
        model: String,
        /// A system message.
        #[arg(long)]
        system: Option<String>,
        /// Attach a document as context (repeatable).
        #[arg(long = "file")]
        files: Vec<PathBuf>,
        /// Stream the answer as it is generated.
        #[arg(long)]
        stream: bool,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 256)]
        max_tokens: u64,
        /// The prompt.
        prompt: Option<String>,
    },
    /// Embed texts; prints one JSON array per line.
    Embed {
        #[command(flatten)]
        conn: Conn,
        /// The model.
        #[arg(long, default_value = "all-MiniLM-L6-v2")]
        model: String,
        /// The texts.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// List the models (asked of an enclave, sealed).
    Models {
        #[command(flatten)]
        conn: Conn,
    },
    /// Serve an OpenAI-compatible endpoint on loopback that seals every request.
    Proxy {
        #[command(flatten)]
        conn: Conn,
        /// Where to listen. Non-loopback addresses need --allow-non-loopback.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Listen on a non-loopback address (anyone who can reach it can use your key).
        #[arg(long)]
        allow_non_loopback: bool,
        /// How often to ask the gateway whether its bundles changed (re-verifying when
        /// they did), in seconds.
        #[arg(long, env = "VEIL_RECHECK_SECONDS", default_value_t = 10)]
        recheck_seconds: u64,
    },
    /// The gateway's health, the attestation of its backends, and the models offered.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Remember the gateway, API key and policy (in a file only you can read).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run everything locally with the simulated TEE: enclave, gateway, an API key, an
    /// attested and encrypted chat and embeddings, receipts, and what the gateway saw.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("veil: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Attest { conn, json } => {
            let client = conn.client()?;
            let result = client.attest().await;
            let reports = match &result {
                Ok(r) => r.clone(),
                Err(veil_client::ClientError::NoVerifiedBackend { reports, .. }) => reports.clone(),
                Err(e) => anyhow::bail!("{e}"),
            };
            if json {
                let list: Vec<Value> = reports
                    .iter()
                    .map(|r| json!({"index": r.index, "verified": r.verified, "platform": r.platform, "simulated": r.simulated,
                                    "key_ids": r.key_ids, "model_manifest_digest": r.model_manifest_digest,
                                    "enclave_version": r.enclave_version, "produced_at": r.produced_at, "error": r.error}))
                    .collect();
                println!("{}", json!({"verified": result.is_ok(), "backends": list}));
            } else {
                print!("{}", demo::format_reports(&reports));
                if let Err(e) = &result {
                    println!("{e}");
                }
            }
            if result.is_err() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Chat {
            conn,
            model,
            system,
            files,
            stream,
            max_tokens,
            prompt,
        } => {
            let client = conn.client()?;
            let prompt = match prompt {
                Some(p) => p,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(json!({"role": "system", "content": s}));
            }
            let mut user = String::new();
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                user.push_str(&format!("Document {name}:\n{text}\n\n"));
            }
            user.push_str(&prompt);
            messages.push(json!({"role": "user", "content": user}));
            let body = json!({"model": model, "messages": messages, "max_tokens": max_tokens, "stream": stream});
            let text = chat(&client, &body, true).await?;
            if !stream {
                println!("{text}");
            }
            Ok(())
        }
        Command::Embed { conn, model, texts } => {
            let client = conn.client()?;
            let body = json!({"model": model, "input": texts});
            let req = json_request("/v1/embeddings", body.to_string().into_bytes())?;
            let meta = OuterMeta {
                model: Some(model),
                ..OuterMeta::default()
            };
            match client.send(&req, &meta).await? {
                Reply::Whole(a) if a.status == 200 => {
                    let v: Value = serde_json::from_slice(&a.body)?;
                    for d in v["data"].as_array().into_iter().flatten() {
                        println!("{}", d["embedding"]);
                    }
                    Ok(())
                }
                Reply::Whole(a) => {
                    anyhow::bail!("{}: {}", a.status, String::from_utf8_lossy(&a.body))
                }
                Reply::Stream(_) => anyhow::bail!("unexpected stream"),
            }
        }
        Command::Models { conn } => {
            let client = conn.client()?;
            let req = veil_attestation::channel::Request::new("GET", "/v1/models", Vec::new());
            match client.send(&req, &OuterMeta::default()).await? {
                Reply::Whole(a) => {
                    let v: Value = serde_json::from_slice(&a.body)?;
                    for m in v["data"].as_array().into_iter().flatten() {
                        println!(
                            "{}\t{}",
                            m["id"].as_str().unwrap_or("?"),
                            m["veil_kind"].as_str().unwrap_or("")
                        );
                    }
                    Ok(())
                }
                Reply::Stream(_) => anyhow::bail!("unexpected stream"),
            }
        }
        Command::Proxy {
            conn,
            listen,
            allow_non_loopback,
            recheck_seconds,
        } => {
            anyhow::ensure!(
                listen.ip().is_loopback() || allow_non_loopback,
                "refusing to listen on {listen}: not loopback (anyone who can reach it could use your API key); pass --allow-non-loopback to insist"
            );
            let client = Arc::new(conn.client()?);
            let reports = client.attest().await?;
            eprintln!(
                "veil: {} of {} backend(s) verified",
                reports.iter().filter(|r| r.verified).count(),
                reports.len()
            );
            let listener = tokio::net::TcpListener::bind(listen).await?;
            eprintln!("veil: proxy listening on http://{}", listener.local_addr()?);
            // Re-verify whenever the gateway's bundle list changes (checked every
            // --recheck-seconds with a conditional GET), and in full every 5 minutes so
            // that evidence ageing past the policy's limit is noticed.
            let refresh = client.clone();
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(std::time::Duration::from_secs(recheck_seconds.max(1)));
                tick.tick().await;
                let mut last_full = std::time::Instant::now();
                loop {
                    tick.tick().await;
                    let full = last_full.elapsed() >= std::time::Duration::from_secs(300);
                    let result = if full {
                        last_full = std::time::Instant::now();
                        refresh.attest().await.map(|_| true)
                    } else {
                        refresh.refresh().await
                    };
                    match result {
                        Ok(true) => eprintln!("veil: the gateway's bundles were verified again"),
                        Ok(false) => {}
                        Err(e) => eprintln!(
                            "veil: re-attestation failed, refusing requests until it passes: {e}"
                        ),
                    }
                }
            });
            // Events are forwarded as they are opened: no Nagle delay behind them.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, veil_client::proxy::router(client))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(())
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Status { conn } => status(&conn).await,
        Command::Config { action } => configure(action),
    }
}

async fn status(conn: &Conn) -> anyhow::Result<()> {
    let client = conn.client()?;
    let (code, health) = client
        .gateway_health()
        .await
        .context("the gateway does not answer")?;
    println!(
        "gateway: HTTP {code}, {} routable backend(s)",
        health["routable_backends"]
    );
    let result = client.attest().await;
    let reports = match &result {
        Ok(r) => r.clone(),
        Err(veil_client::ClientError::NoVerifiedBackend { reports, .. }) => reports.clone(),
        Err(e) => anyhow::bail!("{e}"),
    };
    print!("{}", demo::format_reports(&reports));
    if let Err(e) = result {
        anyhow::bail!("{e}");
    }
    let req = veil_attestation::channel::Request::new("GET", "/v1/models", Vec::new());
    if let Reply::Whole(a) = client.send(&req, &OuterMeta::default()).await? {
        let v: Value = serde_json::from_slice(&a.body)?;
        let ids: Vec<&str> = v["data"]
            .as_array()
            .map(|l| l.iter().filter_map(|m| m["id"].as_str()).collect())
            .unwrap_or_default();
        println!("models: {}", ids.join(", "));
    }
    Ok(())
}

fn configure(action: ConfigAction) -> anyhow::Result<()> {
    let mut c = config::Config::load()?;
    match action {
        ConfigAction::Set { key, value } => {
            match key.as_str() {
                "gateway" => c.gateway = Some(value),
                "api-key" => {
                    let mut value = value;
                    if value == "-" {
                        value.clear();
                        std::io::stdin().read_to_string(&mut value)?;
                        value = value.trim().to_owned();
                    }
                    anyhow::ensure!(value.starts_with("veil_"), "an API key starts with `veil_`");
                    c.api_key = Some(value);
                }
                _ => {
                    let p = std::fs::canonicalize(&value)
                        .with_context(|| format!("policy file {value}"))?;
                    Policy::load(&p)?;
                    c.policy = Some(p);
                }
            }
            let p = c.save()?;
            eprintln!("veil: saved {key} in {} (mode 0600)", p.display());
        }
        ConfigAction::Unset { key } => {
            match key.as_str() {
                "gateway" => c.gateway = None,
                "api-key" => c.api_key = None,
                _ => c.policy = None,
            }
            let p = c.save()?;
            eprintln!("veil: removed {key} from {}", p.display());
        }
        ConfigAction::Show => {
            println!("file     {}", config::path()?.display());
            println!("gateway  {}", c.gateway.as_deref().unwrap_or("(not set)"));
            println!(
                "api-key  {}",
                c.api_key.as_deref().map_or_else(
                    || "(not set)".to_owned(),
                    |k| format!("{}…", &k[..k.len().min(9)])
                )
            );
            println!(
                "policy   {}",
                c.policy
                    .as_ref()
                    .map_or_else(|| "(not set)".to_owned(), |p| p.display().to_string())
            );
        }
        ConfigAction::Path => println!("{}", config::path()?.display()),
    }
    Ok(())
}

/// Sends a chat request; prints streamed text as it arrives when `echo`. Returns the text.
pub(crate) async fn chat(client: &Client, body: &Value, echo: bool) -> anyhow::Result<String> {
    let meta = veil_client::meta_of(body);
    let req = json_request("/v1/chat/completions", body.to_string().into_bytes())?;
    match client.send(&req, &meta).await? {
        Reply::Whole(a) => {
            let v: Value = serde_json::from_slice(&a.body)?;
            anyhow::ensure!(a.status == 200, "{}: {}", a.status, v["error"]["message"]);
            Ok(v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned())
        }
        Reply::Stream(mut s) => {
            let mut text = String::new();
            while let Some(ev) = s.next_event().await? {
                for line in String::from_utf8_lossy(&ev).lines() {
                    let Some(data) = line.strip_prefix("data: ") else {
                        continue;
                    };
                    if data == "[DONE]" {
                        continue;
                    }
                    let v: Value = serde_json::from_str(data)?;
                    if let Some(e) = v.get("error") {
                        anyhow::bail!("{}", e["message"]);
                    }
                    if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                        text.push_str(c);
                        if echo {
                            print!("{c}");
                            let _ = std::io::stdout().flush();
                        }
                    }
                }
            }
            if echo {
                println!();
            }
            let r = s.finish().await?;
            if echo {
                eprintln!(
                    "veil: receipt verified: {} prompt + {} completion tokens, status {}",
                    r.prompt_tokens, r.completion_tokens, r.status
                );
            }
            Ok(text)
        }
    }
}
