//! Private RAG with the `veil-client` library: the documents are embedded through veil
//! (sealed to an attested enclave), retrieved here by cosine similarity, and the question
//! is answered through veil with the retrieved context. Nothing leaves this process
//! unencrypted; the gateway sees sizes and metadata only.
//!
//! ```sh
//! VEIL_GATEWAY=http://127.0.0.1:9000 VEIL_API_KEY=veil_... \
//!     cargo run --release -p veil-client --example rag -- "What is the door code?"
//! ```
//!
//! `VEIL_INSECURE_ALLOW_SIM=1` accepts the simulated TEE (development only).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::Context as _;
use serde_json::{Value, json};
use veil_attestation::verify::Policy;
use veil_client::{Client, Reply, json_request};

const DOCUMENTS: &[&str] = &[
    "The Lisbon office door code is 4417; it changes every quarter.",
    "Payroll runs on the 25th of each month, or the previous working day.",
    "The VPN requires a hardware key registered with the IT desk.",
    "Expense claims above 500 euros need a director's approval.",
];

/// Sends one JSON request sealed, returns the opened JSON answer.
async fn call(client: &Client, path: &str, body: &Value) -> anyhow::Result<Value> {
    let meta = veil_client::meta_of(body);
    let request = json_request(path, body.to_string().into_bytes())?;
    match client.send(&request, &meta).await? {
        Reply::Whole(answer) => {
            let v: Value = serde_json::from_slice(&answer.body)?;
            anyhow::ensure!(
                answer.status == 200,
                "{path}: {} {}",
                answer.status,
                v["error"]["message"]
            );
            Ok(v)
        }
        Reply::Stream(_) => anyhow::bail!("{path}: unexpected stream"),
    }
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

fn vectors(v: &Value) -> anyhow::Result<Vec<Vec<f64>>> {
    v["data"]
        .as_array()
        .context("no embeddings")?
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .context("embedding is not a list")
                .map(|e| e.iter().filter_map(Value::as_f64).collect())
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let question = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "What is the door code of the Lisbon office?".into());
    let gateway = std::env::var("VEIL_GATEWAY").context("set VEIL_GATEWAY")?;
    let api_key = std::env::var("VEIL_API_KEY").ok();
    let policy = if std::env::var("VEIL_INSECURE_ALLOW_SIM").as_deref() == Ok("1") {
        eprintln!("WARNING: accepting the SIMULATED TEE; it protects nothing");
        Policy::insecure_allow_sim()
    } else {
        Policy::default()
    };
    let client = Client::new(&gateway, api_key, policy)?;
    client.attest().await?;

    let model = "all-MiniLM-L6-v2";
    let docs = vectors(
        &call(
            &client,
            "/v1/embeddings",
            &json!({"model": model, "input": DOCUMENTS}),
        )
        .await?,
    )?;
    let q = vectors(
        &call(
            &client,
            "/v1/embeddings",
            &json!({"model": model, "input": [question]}),
        )
        .await?,
    )?;
    let q = q.first().context("no query embedding")?;
    let (best, score) = docs
        .iter()
        .map(|d| cosine(q, d))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .context("no documents")?;
    let context = DOCUMENTS[best];
    eprintln!("retrieved (cosine {score:.3}): {context}");

    let answer = call(
        &client,
        "/v1/chat/completions",
        &json!({
            "model": "SmolLM2-135M-Instruct",
            "temperature": 0,
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": format!("Answer using only this context:\n{context}")},
                {"role": "user", "content": question},
            ],
        }),
    )
    .await?;
    println!(
        "{}",
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
    );
    Ok(())
}
