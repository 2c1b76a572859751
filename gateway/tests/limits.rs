//! Rate limits fire exactly, and the ledger adds up. A key allowed 50 requests a minute
//! gets a burst of 200 concurrent sealed requests (over 200 connections opened before the
//! burst, so that all 200 reach the gateway at once): exactly 50 are admitted and the
//! other 150 answered 429 in OpenAI's error shape with `Retry-After`; every admitted one
//! comes back whole and opens; and the ledger's totals equal the sum of the receipts the
//! clients got. Run against a gateway on a SQLite ledger and one on a real PostgreSQL
//! server (`VEIL_TEST_POSTGRES_URL`, see scripts/setup-postgres.sh), in front of one
//! enclave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

const BURST: usize = 200;
const RPM: usize = 50;

struct Outcome {
    admitted: Vec<(Sealed, Opened)>,
    refused: Vec<Opened>,
    window: Duration,
}

/// Sends `BURST` sealed embeddings requests at once, each on its own connection.
async fn burst(gateway: std::net::SocketAddr, sealer: &Sealer, key: &str) -> Outcome {
    let base = format!("http://{gateway}");
    let mut sealed: Vec<Sealed> = (0..BURST)
        .map(|_| sealer.embeddings("the same short text, two hundred times"))
        .collect();
    let mut senders = Vec::new();
    for _ in 0..BURST {
        let stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (send, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        senders.push(send);
    }
    let requests: Vec<_> = sealed
        .iter()
        .map(|s| s.http_request(&base, "/v1/ohttp", Some(key)))
        .collect();
    let start = Instant::now();
    let futures = senders.into_iter().zip(requests).map(|(mut send, req)| {
        tokio::spawn(async move {
            let resp = send.send_request(req).await.unwrap();
            let at = start.elapsed();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec();
            (status, headers, body, at)
        })
    });
    let results = futures::future::join_all(futures).await;
    let mut out = Outcome {
        admitted: Vec::new(),
        refused: Vec::new(),
        window: Duration::ZERO,
    };
    for (mut s, r) in sealed.drain(..).zip(results) {
        let (status, headers, body, at) = r.unwrap();
        let opened = open(&mut s, status, headers, body);
        if status == 429 {
            out.window = out.window.max(at);
            out.refused.push(opened);
        } else {
            out.admitted.push((s, opened));
        }
    }
    out
}

async fn exact_limits_and_ledger(database: &str, enclave: &Proc) {
    let key = create_key(database, "burst", &["--rpm", "50", "--max-streams", "1000"]);
    let gw = gateway(&["--backend", &enclave.url(), "--database", database]);
    let sealer = Sealer::from_gateway(&gw.url()).await;
    let out = burst(gw.addr, &sealer, &key).await;

    assert_eq!(
        (out.admitted.len(), out.refused.len()),
        (RPM, BURST - RPM),
        "exactly {RPM} admitted (the refusals took {:?}); admitted statuses: {:?}",
        out.window,
        out.admitted
            .iter()
            .map(|(_, o)| o.outer_status)
            .collect::<Vec<_>>()
    );

    // Every refusal: 429, OpenAI's shape, Retry-After in whole seconds.
    for r in &out.refused {
        let w = Whole {
            status: r.outer_status,
            headers: r.outer_headers.clone(),
            body: r.outer_body.clone(),
        };
        assert_eq!(assert_openai_error(&w), "rate_limit_requests");
        assert_eq!(w.json()["error"]["type"], "rate_limit_error");
        let retry: u64 = w.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }

    // Every admitted request: opened, a whole embedding, the same for the same text, and a
    // receipt that verifies and names this very request.
    let mut receipts = Vec::new();
    let mut first: Option<Vec<f64>> = None;
    for (s, o) in &out.admitted {
        assert_eq!(o.outer_status, 200);
        let (status, body) = o.inner.as_ref().unwrap();
        assert_eq!(*status, 200);
        let v: Value = serde_json::from_slice(body).unwrap();
        let emb: Vec<f64> = v["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(emb.len(), 384);
        match &first {
            None => first = Some(emb),
            Some(f) => assert!(
                f.iter().zip(&emb).all(|(a, b)| (a - b).abs() < 1e-5),
                "an admitted answer differs"
            ),
        }
        let inner = o.inner_receipt.as_deref().unwrap();
        let outer = o.outer_headers["veil-receipt"].to_str().unwrap();
        assert_eq!(inner, outer);
        let r = sealer.verify_receipt(inner).unwrap();
        assert_eq!(r.request_digest, s.digest);
        assert!(r.prompt_tokens > 0);
        receipts.push(r);
    }

    // The ledger: exactly these receipts, and its totals are their sums.
    eventually(
        Duration::from_secs(30),
        "the ledger to hold every receipt",
        || async { ledger(database).await.len() >= RPM },
    )
    .await;
    let rows = ledger(database).await;
    assert_eq!(rows.len(), RPM);
    let billed: BTreeSet<String> = rows.iter().map(|r| r.request_digest.clone()).collect();
    let sent: BTreeSet<String> = receipts
        .iter()
        .map(|r| r.request_digest.to_string())
        .collect();
    assert_eq!(billed, sent);
    assert!(
        rows.iter()
            .all(|r| r.key_name == "burst" && r.model == EMBED_MODEL)
    );
    let prompt: u64 = receipts.iter().map(|r| r.prompt_tokens).sum();
    let completion: u64 = receipts.iter().map(|r| r.completion_tokens).sum();
    let usage: Value = serde_json::from_str(&gateway_cli(&[
        "usage",
        "--database",
        database,
        "--json",
        "--period",
        "month",
    ]))
    .unwrap();
    let totals = usage.as_array().unwrap();
    assert_eq!(totals.len(), 1, "{usage}");
    assert_eq!(totals[0]["requests"], RPM as u64);
    assert_eq!(totals[0]["prompt_tokens"], prompt);
    assert_eq!(totals[0]["completion_tokens"], completion);

    // Every answered request metered (the gateway's own signal), then the counters.
    eventually(Duration::from_secs(10), "every request settled", || async {
        let m = get(&format!("{}/metrics", gw.url())).await;
        String::from_utf8(m.body)
            .unwrap()
            .lines()
            .any(|l| l == "veil_gateway_unsettled 0")
    })
    .await;
    let m = get(&format!("{}/metrics", gw.url())).await;
    let text = String::from_utf8(m.body).unwrap();
    assert_eq!(
        metric(&text, "veil_gateway_rate_limited_total", &["key=\"burst\""]),
        (BURST - RPM) as f64
    );
    assert_eq!(
        metric(&text, "veil_gateway_receipts_recorded_total", &[]),
        RPM as f64
    );
    assert_eq!(metric(&text, "veil_gateway_backend_faults_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_on_fifty_a_minute_sqlite_and_postgres() {
    // Room in the enclave for every admitted request at once (it would 503 otherwise).
    let enclave = enclave(&["--queue-capacity", "1024"]);
    let dir = TempDir::new("limits");
    let sqlite = format!("sqlite:{}", dir.path("ledger.db").display());
    exact_limits_and_ledger(&sqlite, &enclave).await;
    let pg = fresh_postgres_database("limits").await;
    exact_limits_and_ledger(&pg, &enclave).await;
}
