//! The gateway never sees plaintext. A real enclave (simulated TEE), a real gateway and a
//! real client (the `veil` binary, and the `veil-client` library in this process) talk
//! over loopback through recording TCP hops placed on both sides of the gateway, so every
//! byte the gateway reads or writes on the network is recorded; the gateway runs with its
//! most verbose logging and every line it prints is kept; its ledger file is read back.
//! Requests carry planted canaries in the prompt, in attached documents and (by asking the
//! model to repeat one) in the completion, and none may appear in any of it, in any case,
//! in hex or in base64.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use veil_attestation::verify::Policy;
use veil_client::{Client, Reply, json_request, meta_of};

const PROMPT_CANARY: &str = "QUOKKA-PROMPT-59317";
const STREAM_PROMPT_CANARY: &str = "NARWHAL-STREAMED-PROMPT-66120";
const DOC_CANARY: &str = "MARMOT-DOCUMENT-80224";
const DOC_NAME_CANARY: &str = "AXOLOTL-FILENAME-31558";
const EMBED_CANARY: &str = "TAPIR-EMBEDDING-47093";
const SYSTEM_CANARY: &str = "OCELOT-SYSTEM-12870";
/// The model repeats this one (checked in the decrypted completion).
const COMPLETION_CANARY: &str = "ZX81-PELICAN-4471";
const ADMIN_TOKEN: &str = "admin-token-for-the-canary-test";

fn veil(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(bin("veil"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "veil {args:?} failed: {stderr}");
    (stdout, stderr)
}

async fn chat_whole(client: &Client, body: &Value) -> (String, veil_attestation::receipt::Receipt) {
    let req = json_request("/v1/chat/completions", body.to_string().into_bytes()).unwrap();
    match client.send(&req, &meta_of(body)).await.unwrap() {
        Reply::Whole(a) => {
            assert_eq!(a.status, 200);
            let v: Value = serde_json::from_slice(&a.body).unwrap();
            (
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                a.receipt,
            )
        }
        Reply::Stream(_) => panic!("unexpected stream"),
    }
}

async fn chat_streamed(
    client: &Client,
    body: &Value,
) -> (String, veil_attestation::receipt::Receipt) {
    let req = json_request("/v1/chat/completions", body.to_string().into_bytes()).unwrap();
    match client.send(&req, &meta_of(body)).await.unwrap() {
        Reply::Stream(mut s) => {
            assert_eq!(s.status, 200);
            let mut text = String::new();
            while let Some(ev) = s.next_event().await.unwrap() {
                for line in String::from_utf8_lossy(&ev).lines() {
                    let Some(data) = line.strip_prefix("data: ") else {
                        continue;
                    };
                    if data == "[DONE]" {
                        continue;
                    }
                    let v: Value = serde_json::from_str(data).unwrap();
                    if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                        text.push_str(c);
                    }
                }
            }
            (text, s.finish().await.unwrap())
        }
        Reply::Whole(_) => panic!("expected a stream"),
    }
}

/// Where a canary was found, with a little context, for the failure message.
fn find_leaks(place: &str, bytes: &[u8], leaks: &mut Vec<String>) {
    for c in [
        PROMPT_CANARY,
        STREAM_PROMPT_CANARY,
        DOC_CANARY,
        DOC_NAME_CANARY,
        EMBED_CANARY,
        SYSTEM_CANARY,
        COMPLETION_CANARY,
    ] {
        if contains_canary(bytes, c) {
            leaks.push(format!("{c} in {place}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_canary_reaches_anything_the_gateway_sees() {
    // The search itself finds what it should (plain, any case, hex, base64).
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("xy{DOC_CANARY}z"));
        assert!(contains_canary(b64.as_bytes(), DOC_CANARY));
        let hexed = hex::encode(format!("..{PROMPT_CANARY}.."));
        assert!(contains_canary(hexed.as_bytes(), PROMPT_CANARY));
        assert!(contains_canary(
            format!("a {} b", PROMPT_CANARY.to_lowercase()).as_bytes(),
            PROMPT_CANARY
        ));
        assert!(!contains_canary(b"nothing to see here", PROMPT_CANARY));
    }

    let dir = TempDir::new("canary");
    let db_path = dir.path("ledger.db");
    let db = format!("sqlite:{}", db_path.display());
    let enclave = enclave(&[]);
    let to_enclave = Recorder::start(enclave.addr).await;
    let key = create_key(&db, "canary-key", &[]);
    let mut gw = gateway(&[
        "--backend",
        &to_enclave.url(),
        "--database",
        &db,
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    let to_gateway = Recorder::start(gw.addr).await;
    let gw_url = to_gateway.url();

    // 1. The `veil` binary, as a separate process: a prompt and an attached document
    //    (whose name is a canary too), whole and streamed, with a system message.
    let doc = dir.path(format!("{DOC_NAME_CANARY}.txt").as_str());
    std::fs::write(
        &doc,
        format!("Internal memo. The project code word is {DOC_CANARY}. Do not share it.\n"),
    )
    .unwrap();
    let doc_arg = doc.display().to_string();
    let gw2 = gw_url.clone();
    let key2 = key.clone();
    let (out1, err1) = tokio::task::spawn_blocking(move || {
        veil(&[
            "chat",
            "--gateway",
            &gw2,
            "--api-key",
            &key2,
            "--insecure-allow-sim",
            "--max-tokens",
            "8",
            "--system",
            &format!("You are terse. Secret: {SYSTEM_CANARY}"),
            "--file",
            &doc_arg,
            &format!("What is the code word? Also remember {PROMPT_CANARY}."),
        ])
    })
    .await
    .unwrap();
    assert!(!out1.trim().is_empty(), "no answer: {err1}");
    let gw2 = gw_url.clone();
    let key2 = key.clone();
    let (out2, err2) = tokio::task::spawn_blocking(move || {
        veil(&[
            "chat",
            "--gateway",
            &gw2,
            "--api-key",
            &key2,
            "--insecure-allow-sim",
            "--stream",
            "--max-tokens",
            "8",
            &format!("Say something about {STREAM_PROMPT_CANARY}."),
        ])
    })
    .await
    .unwrap();
    assert!(!out2.trim().is_empty(), "no streamed answer: {err2}");
    assert!(err2.contains("receipt verified"), "{err2}");
    let gw2 = gw_url.clone();
    let key2 = key.clone();
    let (out3, _) = tokio::task::spawn_blocking(move || {
        veil(&[
            "embed",
            "--gateway",
            &gw2,
            "--api-key",
            &key2,
            "--insecure-allow-sim",
            &format!("Embed {EMBED_CANARY} please"),
        ])
    })
    .await
    .unwrap();
    assert!(out3.trim_start().starts_with('['), "{out3}");

    // 2. The library, in this process: the model is asked to repeat a canary, greedily,
    //    whole and streamed; the decrypted completions must carry it.
    let client = Client::new(&gw_url, Some(key.clone()), Policy::insecure_allow_sim()).unwrap();
    let body = json!({
        "model": CHAT_MODEL,
        "temperature": 0,
        "max_tokens": 24,
        "messages": [{"role": "user", "content": format!("Repeat exactly: {COMPLETION_CANARY}")}],
    });
    let (text, receipt) = chat_whole(&client, &body).await;
    assert!(
        text.contains(COMPLETION_CANARY),
        "the model did not repeat the canary: {text:?}"
    );
    assert!(receipt.completion_tokens > 0);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (text, receipt) = chat_streamed(&client, &streamed).await;
    assert!(
        text.contains(COMPLETION_CANARY),
        "the model did not repeat the canary (streamed): {text:?}"
    );
    assert!(receipt.completion_tokens > 0);

    // 3. The gateway's other surfaces, through the same recorded hop.
    for path in ["/v1/models", "/v1/attestation", "/healthz", "/metrics"] {
        let w = get(&format!("{gw_url}{path}")).await;
        assert_eq!(w.status, 200, "{path}: {w:?}");
    }
    let usage = request(
        "GET",
        &format!("{gw_url}/admin/usage?period=hour"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(usage.status, 200);

    // Every request was billed (so the gateway did its work on these very requests).
    let requests = 5;
    eventually(
        Duration::from_secs(20),
        "the ledger to hold every receipt",
        || {
            let db = db.clone();
            async move { ledger(&db).await.len() == requests }
        },
    )
    .await;
    let u = usage.json();
    assert!(u["usage"][0]["requests"].as_u64().unwrap() >= 1, "{u}");

    // Let the last log lines out, then stop the gateway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // What was recorded is the real traffic (positive controls).
    let front = to_gateway.recorded();
    let back = to_enclave.recorded();
    let all = |rec: &[(&str, Vec<u8>)]| -> Vec<u8> {
        rec.iter().flat_map(|(_, b)| b.iter().copied()).collect()
    };
    let (front_all, back_all) = (all(&front), all(&back));
    let has = |h: &[u8], n: &str| h.windows(n.len()).any(|w| w == n.as_bytes());
    assert!(
        has(&front_all, &format!("Bearer {key}")),
        "the front hop carried the API key"
    );
    assert!(has(&front_all, "POST /v1/ohttp"));
    assert!(has(&front_all, "message/ohttp-chunked-req"));
    assert!(has(&back_all, "POST /ohttp"));
    assert!(has(&back_all, "veil-receipt"));
    assert!(has(&back_all, "GET /attestation"));
    assert!(front_all.len() > 5 * 1024 && back_all.len() > 5 * 1024);
    let log = gw.log_text();
    assert!(
        log.lines()
            .filter(|l| l.contains("veil_gateway::proxy") && l.contains("key=canary-key"))
            .count()
            >= requests,
        "the gateway logged each request: {log}"
    );
    assert!(log.contains("TRACE"), "the gateway ran with trace logging");
    // Every request ran to its end, streamed ones included (trailers end a body).
    let done: Vec<_> = log
        .lines()
        .filter(|l| l.contains("veil_gateway::proxy: request "))
        .collect();
    assert_eq!(done.len(), requests, "{log}");
    assert!(
        done.iter()
            .all(|l| l.contains("complete=true") && l.contains("status=200")),
        "{done:#?}"
    );

    // And no canary is in any of it.
    let mut leaks = Vec::new();
    for (i, (dir, bytes)) in front.iter().enumerate() {
        find_leaks(
            &format!("client↔gateway stream {i} ({dir})"),
            bytes,
            &mut leaks,
        );
    }
    for (i, (dir, bytes)) in back.iter().enumerate() {
        find_leaks(
            &format!("gateway↔enclave stream {i} ({dir})"),
            bytes,
            &mut leaks,
        );
    }
    find_leaks("the gateway's log", log.as_bytes(), &mut leaks);
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", db_path.display());
        if let Ok(bytes) = std::fs::read(&p) {
            find_leaks(&format!("the ledger file {p}"), &bytes, &mut leaks);
        }
    }
    let keys_list = gateway_cli(&["keys", "list", "--database", &db, "--json"]);
    find_leaks("keys list", keys_list.as_bytes(), &mut leaks);
    let usage_cli = gateway_cli(&["usage", "--database", &db, "--json"]);
    find_leaks("usage", usage_cli.as_bytes(), &mut leaks);
    assert!(
        leaks.is_empty(),
        "plaintext reached the gateway: {leaks:#?}"
    );

    // The key itself is stored only as a hash.
    let db_bytes = std::fs::read(&db_path).unwrap();
    let mut wal = std::fs::read(format!("{}-wal", db_path.display())).unwrap_or_default();
    wal.extend_from_slice(&db_bytes);
    assert!(!has(&wal, &key), "the API key is stored in clear");
    assert!(!has(log.as_bytes(), &key), "the API key is logged");
}
