//! `veil-enclave serve` end to end, as real processes over real sockets: attestation,
//! sealed chat (whole and streamed) and embeddings with the real models, receipts, bad
//! inner and outer requests, admission, the upstream engine against a second enclave,
//! and canaries that must never leave the envelope.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;

use common::{Proc, get, models_dir, post, post_streaming};
use serde_json::{Value, json};
use time::OffsetDateTime;
use veil_attestation::bundle::Bundle;
use veil_attestation::bytes::Sha256Digest;
use veil_attestation::channel::{Request, Target};
use veil_attestation::receipt::SignedReceipt;
use veil_attestation::verify::{EnclaveIdentity, Policy, Verified, verify_bundle};

const CHAT_MODEL: &str = "SmolLM2-135M-Instruct";
const EMBED_MODEL: &str = "all-MiniLM-L6-v2";

async fn identity(p: &Proc) -> Verified<EnclaveIdentity> {
    let r = get(&p.url("/attestation")).await;
    assert_eq!(r.status, 200);
    let bundle = Bundle::parse(&r.body).unwrap();
    assert!(
        verify_bundle(&bundle, &Policy::default(), OffsetDateTime::now_utc()).is_err(),
        "the default policy must refuse the simulated TEE"
    );
    verify_bundle(
        &bundle,
        &Policy::insecure_allow_sim(),
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

fn json_request(path: &str, body: &Value) -> Request {
    let mut r = Request::new("POST", path, body.to_string().into_bytes());
    r.headers.push("content-type", "application/json").unwrap();
    r
}

/// A sealed whole-message exchange: returns (outer status, outer receipt header,
/// inner status, inner body, inner receipt trailer, the sealed request).
async fn exchange(
    p: &Proc,
    target: &Target,
    request: &Request,
    outer: &[(&str, &str)],
) -> (u16, Option<String>, u16, Value, Option<String>, Vec<u8>) {
    let (sealed, pending) = target.seal_request(request).unwrap();
    let key_id = target.key_id().to_string();
    let mut headers = vec![
        ("content-type", "message/ohttp-req"),
        ("veil-key-id", key_id.as_str()),
    ];
    headers.extend_from_slice(outer);
    let r = post(&p.url("/ohttp"), &headers, sealed.clone()).await;
    let outer_receipt = r
        .headers
        .get("veil-receipt")
        .map(|v| v.to_str().unwrap().to_owned());
    if r.status != 200 {
        return (r.status, outer_receipt, 0, Value::Null, None, sealed);
    }
    assert_eq!(r.headers["content-type"], "message/ohttp-res");
    let resp = pending.open(&r.body).unwrap();
    let inner_receipt = resp.trailers.get("veil-receipt").map(str::to_owned);
    let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (
        r.status,
        outer_receipt,
        resp.status,
        body,
        inner_receipt,
        sealed,
    )
}

fn check_receipt(
    id: &Verified<EnclaveIdentity>,
    outer: Option<&str>,
    inner: Option<&str>,
    sealed: &[u8],
    status: u16,
) -> veil_attestation::receipt::Receipt {
    let outer = outer.expect("outer receipt");
    if let Some(inner) = inner {
        assert_eq!(outer, inner, "inner and outer receipts differ");
    }
    let signed = SignedReceipt::parse_compact(outer).unwrap();
    let r = signed.verify(id.receipt_public_key()).unwrap().clone();
    assert_eq!(r.request_digest, Sha256Digest::of(sealed));
    assert_eq!(r.status, status);
    assert!(r.finished_at_ms >= r.started_at_ms);
    r
}

fn assert_openai_error(body: &Value) {
    let e = &body["error"];
    assert!(e.is_object(), "not an OpenAI error: {body}");
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "error lacks {k}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_chat_streaming_embeddings_and_errors_end_to_end() {
    let canary = "CANARY-e1c4-prompt";
    let p = Proc::start(&[
        "--models",
        models_dir().to_str().unwrap(),
        "--log",
        "trace",
        "--max-inner-body-bytes",
        "65536",
    ]);
    let id = identity(&p).await;
    let target = Target::preferred(&id).unwrap();
    let mut unsealed = Vec::<u8>::new(); // every byte that left the enclave unsealed

    // --- whole chat ---
    let req = json_request(
        "/v1/chat/completions",
        &json!({"model": CHAT_MODEL, "max_tokens": 24, "temperature": 0,
                "messages": [{"role": "system", "content": format!("Secret word: {canary}.")},
                             {"role": "user", "content": "What is the capital of France?"}]}),
    );
    let (status, outer, inner_status, body, inner, sealed) = exchange(
        &p,
        &target,
        &req,
        &[("veil-model", CHAT_MODEL), ("veil-max-tokens", "24")],
    )
    .await;
    assert_eq!((status, inner_status), (200, 200), "{body}");
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!text.is_empty());
    assert_eq!(body["object"], "chat.completion");
    let r = check_receipt(&id, outer.as_deref(), inner.as_deref(), &sealed, 200);
    assert_eq!(r.model, CHAT_MODEL);
    assert_eq!(r.key_id, target.key_id());
    assert_eq!(
        r.prompt_tokens,
        body["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        r.completion_tokens,
        body["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert!(r.completion_tokens > 0 && r.completion_tokens <= 24);
    let completion_canary = text.clone();

    // --- streaming chat: the first sealed chunk arrives before generation ends ---
    let metrics_before = get(&p.url("/metrics")).await;
    let receipts_before = metric(&metrics_before.body, "veil_enclave_receipts_total");
    let req = json_request(
        "/v1/chat/completions",
        &json!({"model": CHAT_MODEL, "max_tokens": 200, "temperature": 0, "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": format!("Write a long story about {canary}.")}]}),
    );
    let (sealed, pending) = target.seal_chunked_request(&req).unwrap();
    let key_id = target.key_id().to_string();
    let mut s = post_streaming(
        &p.url("/ohttp"),
        &[
            ("content-type", "message/ohttp-chunked-req"),
            ("veil-key-id", &key_id),
            ("veil-model", CHAT_MODEL),
            ("veil-max-tokens", "200"),
            ("veil-stream", "true"),
        ],
        sealed.clone(),
    )
    .await;
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["content-type"], "message/ohttp-chunked-res");
    let reader = std::mem::replace(&mut s.reader, {
        let empty: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> =
            Box::pin(futures::stream::empty());
        futures::TryStreamExt::into_async_read(empty)
    });
    let mut stream = pending.stream(reader).unwrap();
    let (st, head) = stream.head().await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    let first = stream.next_content().await.unwrap().expect("a first event");
    // Order of events: the first token event is open in our hands while the enclave
    // still has the generation in flight and has signed no receipt for it.
    let during = get(&p.url("/metrics")).await;
    assert_eq!(
        metric(&during.body, "veil_enclave_receipts_total"),
        receipts_before
    );
    assert!(metric(&during.body, "veil_enclave_in_flight") >= 1.0);
    let mut events = vec![first];
    while let Some(e) = stream.next_content().await.unwrap() {
        events.push(e);
    }
    let inner_trailers = stream.trailers().unwrap();
    let outer_trailers = s.trailers.await.unwrap().expect("outer HTTP trailers");
    let mut streamed = String::new();
    let mut usage = Value::Null;
    let mut done = false;
    for e in &events {
        for line in std::str::from_utf8(e).unwrap().lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                streamed.push_str(c);
            }
            if v["usage"].is_object() {
                usage = v["usage"].clone();
            }
        }
    }
    assert!(done, "no [DONE]");
    assert!(!streamed.is_empty());
    let r = check_receipt(
        &id,
        outer_trailers
            .get("veil-receipt")
            .map(|v| v.to_str().unwrap()),
        inner_trailers.get("veil-receipt"),
        &sealed,
        200,
    );
    assert_eq!(
        r.completion_tokens,
        usage["completion_tokens"].as_u64().unwrap()
    );
    unsealed.extend(format!("{:?}", s.headers).as_bytes());

    // --- embeddings ---
    let req = json_request(
        "/v1/embeddings",
        &json!({"model": EMBED_MODEL, "input": ["The cat sat on the mat.", format!("{canary} in a sentence")]}),
    );
    let (status, outer, inner_status, body, inner, sealed) =
        exchange(&p, &target, &req, &[("veil-model", EMBED_MODEL)]).await;
    assert_eq!((status, inner_status), (200, 200), "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for d in data {
        let v: Vec<f64> = d["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    let r = check_receipt(&id, outer.as_deref(), inner.as_deref(), &sealed, 200);
    assert_eq!(r.model, EMBED_MODEL);
    assert_eq!(r.completion_tokens, 0);
    assert!(r.prompt_tokens > 0);

    // --- bad inner requests: sealed OpenAI errors, receipts with their status ---
    let msgs = json!([{"role": "user", "content": canary}]);
    let cases: Vec<(Request, Vec<(&str, &str)>, u16)> = vec![
        (
            {
                let mut r = Request::new(
                    "POST",
                    "/v1/chat/completions",
                    format!("{{\"model\": \"{canary}").into_bytes(),
                );
                r.headers.push("content-type", "application/json").unwrap();
                r
            },
            vec![],
            400,
        ),
        (
            json_request(
                "/v1/chat/completions",
                &json!({"model": "no-such-model", "messages": msgs}),
            ),
            vec![],
            404,
        ),
        (
            json_request(
                "/v1/chat/completions",
                &json!({"model": CHAT_MODEL, "messages": []}),
            ),
            vec![],
            400,
        ),
        (
            json_request(
                "/v1/chat/completions",
                &json!({"model": CHAT_MODEL, "messages": msgs, "max_tokens": 100_000}),
            ),
            vec![],
            400,
        ),
        (
            json_request(
                "/v1/chat/completions",
                &json!({"model": CHAT_MODEL, "messages": msgs, "max_tokens": 50}),
            ),
            vec![("veil-model", CHAT_MODEL), ("veil-max-tokens", "10")],
            400,
        ),
        (
            json_request(
                "/v1/chat/completions",
                &json!({"model": CHAT_MODEL, "messages": msgs}),
            ),
            vec![("veil-model", EMBED_MODEL)],
            400,
        ),
        (
            json_request(
                "/v1/chat/completions",
                &json!({"model": CHAT_MODEL, "messages": msgs, "stream": true}),
            ),
            vec![],
            400,
        ),
        (
            {
                let mut r = Request::new(
                    "POST",
                    "/v1/chat/completions",
                    json!({"model": CHAT_MODEL, "messages": msgs})
                        .to_string()
                        .into_bytes(),
                );
                r.headers.push("content-type", "text/plain").unwrap();
                r
            },
            vec![],
            415,
        ),
        (
            json_request(
                "/v1/chat/completions",
                &json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": canary.repeat(5000)}]}),
            ),
            vec![],
            413,
        ),
        (
            Request::new("GET", "/v1/nothing-here", Vec::new()),
            vec![],
            404,
        ),
        (
            {
                let mut r = Request::new("POST", "/v1/embeddings", b"\xff\xfe{not utf8".to_vec());
                r.headers.push("content-type", "application/json").unwrap();
                r
            },
            vec![],
            400,
        ),
    ];
    for (req, outer_meta, want) in cases {
        let (status, outer, inner_status, body, inner, sealed) =
            exchange(&p, &target, &req, &outer_meta).await;
        assert_eq!(status, 200, "outer status for a bad inner request");
        assert_eq!(inner_status, want, "{} {}: {body}", req.method, req.path);
        assert_openai_error(&body);
        let r = check_receipt(&id, outer.as_deref(), inner.as_deref(), &sealed, want);
        assert_eq!(r.completion_tokens, 0);
    }

    // --- bad outer requests: plain errors that reveal nothing ---
    let (good, _) = target
        .seal_chunked_request(&json_request(
            "/v1/chat/completions",
            &json!({"model": CHAT_MODEL, "messages": msgs, "stream": true}),
        ))
        .unwrap();
    let other_key = "00112233445566778899aabbccddeeff";
    let outer_cases: Vec<(Vec<(&str, &str)>, Vec<u8>, u16)> = vec![
        (
            vec![
                ("content-type", "message/ohttp-req"),
                ("veil-key-id", &key_id),
            ],
            b"garbage bytes".to_vec(),
            400,
        ),
        (
            vec![
                ("content-type", "message/ohttp-req"),
                ("veil-key-id", other_key),
            ],
            good.clone(),
            422,
        ),
        (
            vec![
                ("content-type", "message/ohttp-req"),
                ("veil-key-id", "not-hex"),
            ],
            good.clone(),
            400,
        ),
        (
            vec![
                ("content-type", "message/ohttp-chunked-req"),
                ("veil-key-id", &key_id),
            ],
            good[..good.len() - 5].to_vec(),
            400,
        ),
        (
            vec![
                ("content-type", "application/json"),
                ("veil-key-id", &key_id),
            ],
            good.clone(),
            415,
        ),
        (
            vec![
                ("content-type", "message/ohttp-req"),
                ("veil-max-tokens", "lots"),
            ],
            good.clone(),
            400,
        ),
    ];
    for (headers, body, want) in outer_cases {
        let r = post(&p.url("/ohttp"), &headers, body).await;
        assert_eq!(r.status, want, "{headers:?}");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_openai_error(&v);
        unsealed.extend(&r.body);
        unsealed.extend(format!("{:?}", r.headers).as_bytes());
    }
    // Still alive and healthy.
    let h = get(&p.url("/healthz")).await;
    assert_eq!(h.status, 200);
    unsealed.extend(&h.body);
    let keys = get(&p.url("/.well-known/ohttp-gateway")).await;
    assert_eq!(keys.headers["content-type"], "application/ohttp-keys");
    assert_eq!(keys.body, id.key_configs().as_bytes());

    // --- canaries: nowhere outside the envelope ---
    let m = get(&p.url("/metrics")).await;
    unsealed.extend(&m.body);
    let a = get(&p.url("/attestation")).await;
    unsealed.extend(&a.body);
    let unsealed = String::from_utf8_lossy(&unsealed).into_owned();
    let logs = p.log_text();
    assert!(!logs.is_empty());
    for needle in [
        canary,
        completion_canary.trim(),
        streamed.trim(),
        "capital of France",
    ] {
        if needle.len() < 8 {
            continue;
        }
        assert!(
            !logs.contains(needle),
            "plaintext in the enclave's logs: {needle}"
        );
        assert!(
            !unsealed.contains(needle),
            "plaintext in an unsealed response: {needle}"
        );
    }
}

fn metric(body: &[u8], name: &str) -> f64 {
    let text = std::str::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_before_decrypting() {
    let p = Proc::start(&[
        "--models",
        models_dir().to_str().unwrap(),
        "--queue-capacity",
        "1",
    ]);
    let id = identity(&p).await;
    let target = Target::preferred(&id).unwrap();
    let key_id = target.key_id().to_string();
    // Hold the one place with a long streamed generation that we do not read.
    let (sealed, _pending) = target
        .seal_chunked_request(&json_request(
            "/v1/chat/completions",
            &json!({"model": CHAT_MODEL, "max_tokens": 400, "stream": true,
                    "messages": [{"role": "user", "content": "Tell me a long story."}]}),
        ))
        .unwrap();
    let held = post_streaming(
        &p.url("/ohttp"),
        &[
            ("content-type", "message/ohttp-chunked-req"),
            ("veil-key-id", &key_id),
            ("veil-model", CHAT_MODEL),
        ],
        sealed,
    )
    .await;
    assert_eq!(held.status, 200);
    // Garbage would fail to open; a 503 proves admission came before any decryption.
    let r = post(
        &p.url("/ohttp"),
        &[
            ("content-type", "message/ohttp-req"),
            ("veil-key-id", &key_id),
            ("veil-model", CHAT_MODEL),
        ],
        b"not even ohttp".to_vec(),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    assert_openai_error(&serde_json::from_slice(&r.body).unwrap());
    drop(held); // the client goes away: its generation is cancelled, the place freed
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = get(&p.url("/metrics")).await;
        if metric(&m.body, "veil_enclave_in_flight") == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled generation kept its place"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_engine_against_a_second_enclave() {
    let models = models_dir();
    let backend = Proc::start(&[
        "--models",
        models.to_str().unwrap(),
        "--inner-plaintext-listen",
        "127.0.0.1:0",
    ]);
    let inner = backend.inner_addr.expect("plaintext address");
    let upstream = format!("http://{inner}");
    let front = Proc::start(&["--upstream", &upstream]);
    let id = identity(&front).await;
    let target = Target::preferred(&id).unwrap();

    let req = json_request(
        "/v1/chat/completions",
        &json!({"model": CHAT_MODEL, "max_tokens": 12, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}]}),
    );
    let (status, outer, inner_status, body, inner_r, sealed) = exchange(
        &front,
        &target,
        &req,
        &[("veil-model", CHAT_MODEL), ("veil-max-tokens", "12")],
    )
    .await;
    assert_eq!((status, inner_status), (200, 200), "{body}");
    let r = check_receipt(&id, outer.as_deref(), inner_r.as_deref(), &sealed, 200);
    assert_eq!(
        r.completion_tokens,
        body["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert!(r.completion_tokens > 0);

    // Streaming through the upstream, without include_usage: usage still reaches the receipt.
    let req = json_request(
        "/v1/chat/completions",
        &json!({"model": CHAT_MODEL, "max_tokens": 12, "temperature": 0, "stream": true,
                "messages": [{"role": "user", "content": "Say hello."}]}),
    );
    let (sealed, pending) = target.seal_chunked_request(&req).unwrap();
    let key_id = target.key_id().to_string();
    let r = post(
        &front.url("/ohttp"),
        &[
            ("content-type", "message/ohttp-chunked-req"),
            ("veil-key-id", &key_id),
            ("veil-stream", "true"),
        ],
        sealed.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    let resp = pending.open_all(r.body).unwrap();
    let text = String::from_utf8(resp.body.to_vec()).unwrap();
    assert!(text.contains("chat.completion.chunk"));
    assert!(text.contains("data: [DONE]"));
    assert!(
        !text.contains("\"usage\":{"),
        "usage chunk relayed though not asked for"
    );
    let signed = SignedReceipt::parse_compact(resp.trailers.get("veil-receipt").unwrap()).unwrap();
    let rc = signed.verify(id.receipt_public_key()).unwrap();
    assert!(rc.completion_tokens > 0 && rc.completion_tokens <= 12);

    // Embeddings through the upstream.
    let req = json_request(
        "/v1/embeddings",
        &json!({"model": EMBED_MODEL, "input": "hello"}),
    );
    let (status, _, inner_status, body, _, _) = exchange(&front, &target, &req, &[]).await;
    assert_eq!((status, inner_status), (200, 200), "{body}");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);
}

#[test]
fn refuses_unsafe_configurations() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_veil-enclave"))
            .args(args)
            .output()
            .unwrap()
    };
    // No TEE here: `auto` fails instead of falling back to the simulated one.
    let o = run(&["serve", "--tee", "auto", "--models", "/nonexistent"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("TEE") || err.contains("SEV") || err.contains("TDX"),
        "{err}"
    );
    // Plaintext inner API off loopback without sim.
    let o = run(&[
        "serve",
        "--tee",
        "snp",
        "--inner-plaintext-listen",
        "0.0.0.0:9999",
        "--upstream",
        "http://127.0.0.1:1",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("plaintext"));
    // GPU required but none.
    let o = run(&[
        "serve",
        "--tee",
        "sim",
        "--gpu",
        "required",
        "--upstream",
        "http://127.0.0.1:1",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--gpu required"));
    // An upstream off loopback.
    let o = run(&[
        "serve",
        "--tee",
        "sim",
        "--gpu",
        "off",
        "--upstream",
        "http://192.0.2.1:8000",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("loopback"));
}

/// Replay protection: the same encapsulated request is answered once; sealed again (a
/// fresh KEM share) it is answered again; bytes that do not open cannot block a genuine
/// request; an inner `date` outside the window is refused, sealed; a full register
/// refuses rather than admitting unguarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_stale_requests_are_refused() {
    let p = Proc::start(&[
        "--models",
        models_dir().to_str().unwrap(),
        "--replay-window-seconds",
        "60",
        "--replay-capacity",
        "7",
    ]);
    let id = identity(&p).await;
    let target = Target::preferred(&id).unwrap();
    let key_id = target.key_id().to_string();
    let embed = json_request(
        "/v1/embeddings",
        &json!({"model": EMBED_MODEL, "input": "replay me"}),
    );
    let outer = [
        ("content-type", "message/ohttp-req"),
        ("veil-key-id", key_id.as_str()),
        ("veil-model", EMBED_MODEL),
    ];

    // A forgery that reuses a genuine request's KEM share but not its ciphertext does not
    // open, and does not poison the register: the genuine request still succeeds.
    let (sealed, pending) = target.seal_request(&embed).unwrap();
    let mut forged = sealed.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let r = post(&p.url("/ohttp"), &outer, forged).await;
    assert_eq!(r.status, 400);
    let r = post(&p.url("/ohttp"), &outer, sealed.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(pending.open(&r.body).unwrap().status, 200);

    // The same bytes again: refused, plainly, naming only the reason, with no receipt
    // (the first answer's receipt already covers this request digest).
    let r = post(&p.url("/ohttp"), &outer, sealed.clone()).await;
    assert_eq!(r.status, 400);
    assert!(r.headers.get("veil-receipt").is_none());
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_openai_error(&body);
    assert_eq!(body["error"]["code"], "replayed_request");
    // Also as a chunked request, and also without Veil-Key-Id (a plain OHTTP client).
    let (chunked, _p) = target.seal_chunked_request(&embed).unwrap();
    let chunked_outer = [
        ("content-type", "message/ohttp-chunked-req"),
        ("veil-key-id", key_id.as_str()),
        ("veil-model", EMBED_MODEL),
    ];
    let r = post(&p.url("/ohttp"), &chunked_outer, chunked.clone()).await;
    assert_eq!(r.status, 200);
    let r = post(&p.url("/ohttp"), &chunked_outer[..1], chunked).await;
    assert_eq!(r.status, 400);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "replayed_request");

    // Sealed again, the same request is a new request.
    let (_, _, inner, _, _, _) = exchange(&p, &target, &embed, &outer[2..]).await;
    assert_eq!(inner, 200);

    // An inner date outside the window: a sealed 400 with a receipt.
    for date in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        &httpdate::fmt_http_date(
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        ),
        "yesterday",
    ] {
        let mut stale = embed.clone();
        stale.headers.push("date", date).unwrap();
        let (status, receipt, inner, body, inner_receipt, sealed) =
            exchange(&p, &target, &stale, &outer[2..]).await;
        assert_eq!((status, inner), (200, 400), "{date}: {body}");
        assert_openai_error(&body);
        assert_eq!(body["error"]["code"], "stale_request");
        check_receipt(
            &id,
            receipt.as_deref(),
            inner_receipt.as_deref(),
            &sealed,
            400,
        );
    }
    // A current date passes.
    let mut fresh = embed.clone();
    fresh
        .headers
        .push(
            "date",
            &httpdate::fmt_http_date(std::time::SystemTime::now()),
        )
        .unwrap();
    let (_, _, inner, _, _, _) = exchange(&p, &target, &fresh, &outer[2..]).await;
    assert_eq!(inner, 200);

    // The register holds 7, all inside the window now (the first request, the chunked
    // one, the resealed one, the three stale ones, which opened, and the fresh one):
    // the next request is refused with 503.
    let (sealed, _) = target.seal_request(&embed).unwrap();
    let r = post(&p.url("/ohttp"), &outer, sealed).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "replay_register_full");
    let m = get(&p.url("/metrics")).await;
    let m = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(m.contains("replayed_request"), "{m}");
}
