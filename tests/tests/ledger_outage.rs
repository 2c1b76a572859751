//! The gateway's database becomes unreachable (PostgreSQL behind a TCP hop the test cuts):
//! by default requests are refused (503 ledger_unavailable) rather than served unbilled;
//! with `--ledger-outage serve` keys seen valid keep being served. Either way a receipt
//! whose ledger write fails (here: a stream that ends during the outage) is kept and
//! written once the database is back, exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use veil_attestation::receipt::Receipt;
use veil_attestation::verify::Policy;
use veil_client::procs::{Proc, create_key, sim_enclave, sim_gateway};
use veil_client::{Client, ClientError, Reply, json_request, meta_of};
use veil_tests::hop::Hop;

fn models() -> String {
    std::env::var("VEIL_MODELS_DIR").unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .to_string_lossy()
            .into_owned()
    })
}

fn postgres_url() -> String {
    std::env::var("VEIL_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "VEIL_TEST_POSTGRES_URL is not set: this test needs a real PostgreSQL server. \
             Run `eval \"$(scripts/setup-postgres.sh)\"` first (scripts/test.sh does)."
        )
    })
}

/// `postgres://user:pass@HOST:PORT/db` → (HOST:PORT, the URL with `addr` in its place).
fn through(url: &str, addr: SocketAddr) -> (SocketAddr, String) {
    let after_at = url.rsplit_once('@').map_or(url, |(_, r)| r);
    let hostport = after_at.split('/').next().unwrap();
    let target: SocketAddr = hostport
        .parse()
        .unwrap_or_else(|e| panic!("{hostport}: {e} (the test wants IP:PORT)"));
    (target, url.replacen(hostport, &addr.to_string(), 1))
}

async fn embed(client: &Client) -> Result<Receipt, ClientError> {
    let body = json!({"model": "all-MiniLM-L6-v2", "input": "quarterly numbers"});
    let req = json_request("/v1/embeddings", body.to_string().into_bytes()).unwrap();
    match client.send(&req, &meta_of(&body)).await? {
        Reply::Whole(a) => {
            assert_eq!(a.status, 200);
            Ok(a.receipt)
        }
        Reply::Stream(_) => panic!("a stream for embeddings"),
    }
}

async fn ledger_row(url: &str, digest: &str) -> Option<(i64, i64)> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.query_opt(
        "SELECT prompt_tokens, completion_tokens FROM usage_receipts WHERE request_digest = $1",
        &[&digest],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

async fn wait_for_row(url: &str, r: &Receipt) {
    let digest = r.request_digest.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((p, c)) = ledger_row(url, &digest).await {
            assert_eq!(
                (p, c),
                (
                    i64::try_from(r.prompt_tokens).unwrap(),
                    i64::try_from(r.completion_tokens).unwrap()
                )
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "receipt {digest} never reached the ledger"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn gateway(backend: &str, database: &str, mode: &str) -> Proc {
    sim_gateway(backend, database, &["--ledger-outage", mode]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_refuses_or_serves_and_records_later() {
    let base = postgres_url();
    let placeholder: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (pg, _) = through(&base, placeholder);
    let hop = Hop::start(pg, Arc::new(Vec::new())).await.unwrap();
    let (_, url) = through(&base, hop.addr);
    let enclave = sim_enclave(&models(), &[]).unwrap();
    let key = create_key(&url, &format!("outage-{}", std::process::id())).unwrap();

    for mode in ["refuse", "serve"] {
        let gw = gateway(enclave.url(), &url, mode);
        let client =
            Client::new(gw.url(), Some(key.clone()), Policy::insecure_allow_sim()).unwrap();
        let before = embed(&client).await.unwrap();
        wait_for_row(&base, &before).await;

        // A stream that starts while the database is there and ends while it is not: its
        // receipt cannot be written at once.
        let body = json!({"model": "SmolLM2-135M-Instruct", "max_tokens": 12, "stream": true,
                          "messages": [{"role": "user", "content": "Count to twenty."}]});
        let req = json_request("/v1/chat/completions", body.to_string().into_bytes()).unwrap();
        let Reply::Stream(mut s) = client.send(&req, &meta_of(&body)).await.unwrap() else {
            panic!("no stream");
        };
        assert!(s.next_event().await.unwrap().is_some());
        hop.cut();
        while s.next_event().await.unwrap().is_some() {}
        let streamed = s.finish().await.unwrap();

        let during = embed(&client).await;
        match mode {
            "refuse" => match during {
                Err(ClientError::Outer { status, body, .. }) => {
                    assert_eq!(status, 503);
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(v["error"]["code"], "ledger_unavailable", "{v}");
                }
                other => panic!("served while the ledger is down: {other:?}"),
            },
            _ => {
                let served = during.expect("a key seen valid is served during the outage");
                hop.restore();
                wait_for_row(&base, &served).await;
            }
        }
        hop.restore();
        // The kept receipt is written once the database is back.
        wait_for_row(&base, &streamed).await;
        let after = embed(&client).await.unwrap();
        wait_for_row(&base, &after).await;
        let log = gw.log_text();
        assert!(log.contains("ledger backlog written"), "{log}");
    }
}
