//! What the gateway must refuse to trust. Between the gateway and a real enclave sits an
//! HTTP hop written here that can, on demand, alter, forge, strip or replay the enclave's
//! receipts, or tamper with its evidence bundle:
//!
//! - a receipt that does not verify under the backend's attested receipt key (altered
//!   counts, a forged signature, none at all, or one replayed from another request) is
//!   not billed and counts as a backend fault, whole or streamed;
//! - a backend whose evidence stops verifying (tampered bundle, enclave stopped, or
//!   replaced by one with another key) leaves the routing table within an interval, and
//!   one the policy refuses is never routed to;
//! - a revoked key is refused at once, whether revoked with the CLI or the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, Response};
use common::*;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use veil_attestation::receipt::{ReceiptSigner, SignedReceipt};
use veil_attestation::verify::Policy;

const ADMIN: &str = "faults-admin-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Pass = 0,
    /// Counts changed, the enclave's signature kept.
    Alter = 1,
    /// Counts changed and signed with a key of our own.
    Forge = 2,
    /// No receipt at all.
    Strip = 3,
    /// A valid receipt of an earlier request.
    Replay = 4,
    /// The bundle's receipt key replaced with ours.
    TamperBundle = 5,
}

#[derive(Clone)]
struct Mitm {
    mode: Arc<AtomicU8>,
    target: SocketAddr,
    last_good: Arc<Mutex<Option<String>>>,
    forger: Arc<ReceiptSigner>,
    client: HyperClient<HttpConnector, Body>,
}

impl Mitm {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Alter,
            2 => Mode::Forge,
            3 => Mode::Strip,
            4 => Mode::Replay,
            5 => Mode::TamperBundle,
            _ => Mode::Pass,
        }
    }
    fn set(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }

    fn rewrite(&self, compact: &str) -> Option<String> {
        let mode = self.mode();
        let mut signed = SignedReceipt::parse_compact(compact).unwrap();
        match mode {
            Mode::Pass | Mode::TamperBundle => {
                *self.last_good.lock().unwrap() = Some(compact.to_owned());
                Some(compact.to_owned())
            }
            Mode::Alter => {
                signed.receipt.prompt_tokens += 1000;
                signed.receipt.completion_tokens += 1000;
                Some(signed.to_compact().unwrap())
            }
            Mode::Forge => {
                signed.receipt.prompt_tokens += 1000;
                Some(
                    self.forger
                        .sign(signed.receipt)
                        .unwrap()
                        .to_compact()
                        .unwrap(),
                )
            }
            Mode::Strip => None,
            Mode::Replay => self.last_good.lock().unwrap().clone(),
        }
    }
}

async fn mitm(State(m): State<Mitm>, req: Request<Body>) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    parts.uri = format!("http://{}{path}", m.target).parse().unwrap();
    parts.headers.remove("host");
    let resp = match m.client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(_) => {
            return Response::builder().status(502).body(Body::empty()).unwrap();
        }
    };
    let (mut parts, incoming) = resp.into_parts();
    parts.headers.remove("transfer-encoding");
    if path == "/attestation" && m.mode() == Mode::TamperBundle {
        let bytes = incoming.collect().await.unwrap().to_bytes();
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["claims"]["receipt_public_key"] =
            Value::String(hex::encode(m.forger.public_key().as_bytes()));
        parts.headers.remove("content-length");
        return Response::from_parts(parts, Body::from(serde_json::to_vec(&v).unwrap()));
    }
    if path != "/ohttp" {
        return Response::from_parts(parts, Body::new(incoming));
    }
    if let Some(r) = parts.headers.remove("veil-receipt")
        && let Some(new) = m.rewrite(r.to_str().unwrap())
    {
        parts
            .headers
            .insert("veil-receipt", HeaderValue::from_str(&new).unwrap());
    }
    let m2 = m.clone();
    let body = incoming.map_frame(move |f| match f.into_trailers() {
        Ok(mut t) => {
            if let Some(r) = t.remove("veil-receipt")
                && let Some(new) = m2.rewrite(r.to_str().unwrap())
            {
                t.insert("veil-receipt", HeaderValue::from_str(&new).unwrap());
            }
            hyper::body::Frame::trailers(t)
        }
        Err(f) => f,
    });
    Response::from_parts(parts, Body::new(body))
}

async fn start_mitm(target: SocketAddr) -> (Mitm, SocketAddr) {
    let m = Mitm {
        mode: Arc::default(),
        target,
        last_good: Arc::default(),
        forger: Arc::new(ReceiptSigner::generate().unwrap()),
        client: HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new()),
    };
    let app = axum::Router::new().fallback(mitm).with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (m, addr)
}

async fn metrics(gw: &Proc) -> String {
    String::from_utf8(get(&format!("{}/metrics", gw.url())).await.body).unwrap()
}

/// Waits until the gateway says every answered request is metered (its receipt verified and
/// billed, or counted as a backend fault; the ledger written): `veil_gateway_unsettled 0`.
async fn settled(gw: &Proc) {
    eventually(
        Duration::from_secs(10),
        "every request settled",
        || async move {
            metrics(gw)
                .await
                .lines()
                .any(|l| l == "veil_gateway_unsettled 0")
        },
    )
    .await;
}

async fn billed(db: &str, digest: &veil_attestation::bytes::Sha256Digest) -> bool {
    let d = digest.to_string();
    ledger(db).await.iter().any(|r| r.request_digest == d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn altered_forged_stripped_or_replayed_receipts_are_not_billed() {
    let enclave = enclave(&[]);
    let (m, mitm_addr) = start_mitm(enclave.addr).await;
    let dir = TempDir::new("receipts");
    let db = format!("sqlite:{}", dir.path("ledger.db").display());
    let key = create_key(&db, "victim", &[]);
    let gw = gateway(&[
        "--backend",
        &format!("http://{mitm_addr}"),
        "--database",
        &db,
    ]);
    let sealer = Sealer::from_gateway(&gw.url()).await;
    let client = http();
    let backend_label = format!("backend=\"http://{mitm_addr}\"");

    // The control: an honest receipt is billed, once.
    let mut s = sealer.embeddings("an honest request");
    let o = send_sealed(&client, &gw.url(), "/v1/ohttp", Some(&key), &mut s).await;
    assert_eq!(o.outer_status, 200);
    let honest = sealer
        .verify_receipt(o.inner_receipt.as_deref().unwrap())
        .unwrap();
    eventually(Duration::from_secs(10), "the honest receipt billed", || {
        billed(&db, &s.digest)
    })
    .await;

    for (mode, reason) in [
        (Mode::Alter, "receipt_signature"),
        (Mode::Forge, "receipt_signature"),
        (Mode::Strip, "missing_receipt"),
        (Mode::Replay, "receipt_request_digest"),
    ] {
        m.set(mode);
        let before = metric(
            &metrics(&gw).await,
            "veil_gateway_backend_faults_total",
            &[&backend_label, &format!("reason=\"{reason}\"")],
        );
        let mut s = sealer.embeddings(&format!("a request under {mode:?}"));
        let o = send_sealed(&client, &gw.url(), "/v1/ohttp", Some(&key), &mut s).await;
        assert_eq!(o.outer_status, 200, "{mode:?}");
        // The enclave's own receipt, inside the envelope, is intact: the client can tell.
        let inner = sealer
            .verify_receipt(o.inner_receipt.as_deref().unwrap())
            .unwrap();
        assert_eq!(inner.request_digest, s.digest);
        // The receipt is checked once the answer has gone out.
        settled(&gw).await;
        let after = metric(
            &metrics(&gw).await,
            "veil_gateway_backend_faults_total",
            &[&backend_label, &format!("reason=\"{reason}\"")],
        );
        assert_eq!(after, before + 1.0, "{mode:?} counted as a backend fault");
        // Give a (wrong) ledger write time to land, then check it did not.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!billed(&db, &s.digest).await, "{mode:?} was billed");
    }

    // Streamed: the receipt travels in a trailer; an altered one is not billed either.
    m.set(Mode::Alter);
    let mut st = sealer.chat_stream("Say hi.", 4);
    let o = st.send(&gw.url(), "/v1/ohttp", Some(&key)).await;
    assert_eq!(o.outer_status, 200);
    assert!(o.outer_receipt.is_some(), "the trailer was passed on");
    assert_ne!(o.outer_receipt, o.inner_receipt);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !billed(&db, &st.digest).await,
        "an altered trailer receipt was billed"
    );
    // And the honest streamed one is.
    m.set(Mode::Pass);
    let mut st = sealer.chat_stream("Say hi.", 4);
    let o = st.send(&gw.url(), "/v1/ohttp", Some(&key)).await;
    assert_eq!(o.outer_receipt, o.inner_receipt);
    let r = sealer
        .verify_receipt(o.inner_receipt.as_deref().unwrap())
        .unwrap();
    assert_eq!(r.request_digest, st.digest);
    eventually(
        Duration::from_secs(10),
        "the streamed receipt billed",
        || billed(&db, &st.digest),
    )
    .await;

    // Exactly the two honest receipts are in the ledger, with the enclave's counts.
    let rows = ledger(&db).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let first = rows
        .iter()
        .find(|r| r.request_digest == honest.request_digest.to_string())
        .unwrap();
    assert_eq!(first.prompt_tokens as u64, honest.prompt_tokens);
    settled(&gw).await;
    let text = metrics(&gw).await;
    assert_eq!(metric(&text, "veil_gateway_backend_faults_total", &[]), 5.0);
    assert_eq!(
        metric(&text, "veil_gateway_receipts_recorded_total", &[]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_whose_evidence_stops_verifying_leaves_the_routing_table() {
    let mut enclave = enclave(&[]);
    let enclave_addr = enclave.addr;
    let (m, mitm_addr) = start_mitm(enclave_addr).await;
    let dir = TempDir::new("routing");
    let db = format!("sqlite:{}", dir.path("ledger.db").display());
    let key = create_key(&db, "router", &[]);
    let gw = gateway(&[
        "--backend",
        &format!("http://{mitm_addr}"),
        "--database",
        &db,
        "--refresh-interval-seconds",
        "1",
    ]);
    let url = gw.url();
    let routable = |url: String| async move {
        let v = get(&format!("{url}/v1/attestation")).await.json();
        v["backends"].as_array().unwrap().len()
    };
    assert_eq!(routable(url.clone()).await, 1);
    let sealer = Sealer::from_gateway(&url).await;
    let client = http();
    let mut s = sealer.embeddings("before");
    let o = send_sealed(&client, &url, "/v1/ohttp", Some(&key), &mut s).await;
    assert_eq!(o.outer_status, 200);

    // 1. The bundle is tampered with (its receipt key swapped for an attacker's): the
    //    binding no longer verifies, and the backend drops out within an interval.
    m.set(Mode::TamperBundle);
    eventually(
        Duration::from_secs(5),
        "the tampered backend to leave",
        || {
            let url = url.clone();
            async move { routable(url).await == 0 }
        },
    )
    .await;
    let w = get(&format!("{url}/healthz")).await;
    assert_eq!(w.status, 503);
    let w = get(&format!("{url}/.well-known/ohttp-gateway")).await;
    assert_eq!(
        (w.status, assert_openai_error(&w).as_str()),
        (503, "no_verified_backend")
    );
    let mut s = sealer.embeddings("while tampered");
    let o = send_sealed(&client, &url, "/v1/ohttp", Some(&key), &mut s).await;
    let w = Whole {
        status: o.outer_status,
        headers: o.outer_headers,
        body: o.outer_body,
    };
    assert_eq!(
        (w.status, assert_openai_error(&w).as_str()),
        (503, "no_verified_backend")
    );
    assert!(w.headers.contains_key("retry-after"));
    let text = metrics(&gw).await;
    assert_eq!(metric(&text, "veil_gateway_routable_backends", &[]), 0.0);
    assert!(metric(&text, "veil_gateway_backend_check_failures_total", &[]) >= 1.0);

    // Evidence verifies again: it comes back.
    m.set(Mode::Pass);
    eventually(Duration::from_secs(5), "the backend to return", || {
        let url = url.clone();
        async move { routable(url).await == 1 }
    })
    .await;

    // 2. The enclave stops: it leaves.
    enclave.stop();
    eventually(
        Duration::from_secs(5),
        "the stopped backend to leave",
        || {
            let url = url.clone();
            async move { routable(url).await == 0 }
        },
    )
    .await;

    // 3. Another enclave (new keys) on the same address: routable again, under its own
    //    key; the old key id is refused (OpenAI-shaped), and a client attests again.
    let _enclave2 = enclave_on(&enclave_addr.to_string(), &[]);
    eventually(
        Duration::from_secs(10),
        "the new enclave to be routable",
        || {
            let url = url.clone();
            async move { routable(url).await == 1 }
        },
    )
    .await;
    let mut s = sealer.embeddings("to the old key");
    let o = send_sealed(&client, &url, "/v1/ohttp", Some(&key), &mut s).await;
    let w = Whole {
        status: o.outer_status,
        headers: o.outer_headers,
        body: o.outer_body,
    };
    assert_eq!(
        (w.status, assert_openai_error(&w).as_str()),
        (422, "unknown_key_id")
    );
    let fresh = Sealer::from_gateway(&url).await;
    assert_ne!(fresh.target.key_id(), sealer.target.key_id());
    let c =
        veil_client::Client::new(&url, Some(key.clone()), Policy::insecure_allow_sim()).unwrap();
    let req = veil_client::json_request(
        "/v1/embeddings",
        br#"{"model":"all-MiniLM-L6-v2","input":"after"}"#.to_vec(),
    )
    .unwrap();
    let meta = veil_client::OuterMeta {
        model: Some(EMBED_MODEL.into()),
        ..Default::default()
    };
    match c.send(&req, &meta).await.unwrap() {
        veil_client::Reply::Whole(a) => assert_eq!(a.status, 200),
        veil_client::Reply::Stream(_) => panic!("unexpected stream"),
    }

    // 4. A gateway whose policy the backend fails (the default policy refuses the
    //    simulated TEE) never routes to it.
    let strict = Proc::spawn(
        {
            let mut c = std::process::Command::new(bin("veil-gateway"));
            c.args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                &format!("http://{mitm_addr}"),
                "--database",
                &db,
            ]);
            c
        },
        "veil-gateway (strict)",
    );
    assert_eq!(routable(strict.url()).await, 0);
    let mut s = fresh.embeddings("to a gateway that refuses the simulated TEE");
    let o = send_sealed(&client, &strict.url(), "/v1/ohttp", Some(&key), &mut s).await;
    assert_eq!(o.outer_status, 503);
    assert!(
        strict.log_text().contains("not routable"),
        "{}",
        strict.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_is_refused_at_once() {
    let enclave = enclave(&[]);
    let dir = TempDir::new("revoke");
    let db = format!("sqlite:{}", dir.path("ledger.db").display());
    let by_cli = create_key(&db, "by-cli", &[]);
    let gw = gateway(&[
        "--backend",
        &enclave.url(),
        "--database",
        &db,
        "--admin-token",
        ADMIN,
    ]);
    let url = gw.url();
    let sealer = Sealer::from_gateway(&url).await;
    let client = http();

    // An admin-created key too.
    let w = request(
        "POST",
        &format!("{url}/admin/keys"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        br#"{"name":"by-admin"}"#.to_vec(),
    )
    .await;
    assert_eq!(w.status, 201, "{w:?}");
    let by_admin = w.json()["key"].as_str().unwrap().to_owned();

    for k in [&by_cli, &by_admin] {
        let mut s = sealer.embeddings("while the key is good");
        let o = send_sealed(&client, &url, "/v1/ohttp", Some(k), &mut s).await;
        assert_eq!(o.outer_status, 200);
    }

    // Revoked with the CLI (another process, the same database): the very next request
    // is refused.
    let out = gateway_cli(&["keys", "revoke", "--database", &db, "--name", "by-cli"]);
    assert!(out.contains("revoked"));
    let mut s = sealer.embeddings("after revocation");
    let o = send_sealed(&client, &url, "/v1/ohttp", Some(&by_cli), &mut s).await;
    let w = Whole {
        status: o.outer_status,
        headers: o.outer_headers,
        body: o.outer_body,
    };
    assert_eq!(
        (w.status, assert_openai_error(&w).as_str()),
        (401, "invalid_api_key")
    );

    // Revoked with the admin API (a wrong admin token is refused first).
    let w = request(
        "POST",
        &format!("{url}/admin/keys/by-admin/revoke"),
        &[("authorization", "Bearer not-the-admin-token")],
        Vec::new(),
    )
    .await;
    assert_eq!(
        (w.status, assert_openai_error(&w).as_str()),
        (401, "invalid_admin_token")
    );
    let w = request(
        "POST",
        &format!("{url}/admin/keys/by-admin/revoke"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(w.status, 200, "{w:?}");
    let mut s = sealer.embeddings("after revocation");
    let o = send_sealed(&client, &url, "/v1/ohttp", Some(&by_admin), &mut s).await;
    assert_eq!(o.outer_status, 401);

    // Both show as revoked; no key at all and a malformed one are refused the same way.
    let keys: Value =
        serde_json::from_str(&gateway_cli(&["keys", "list", "--database", &db, "--json"])).unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked_at_ms"].is_i64())
    );
    for k in [None, Some("veil_nothex"), Some("sk-openai-style")] {
        let mut s = sealer.embeddings("no key");
        let o = send_sealed(&client, &url, "/v1/ohttp", k, &mut s).await;
        assert_eq!(o.outer_status, 401, "{k:?}");
    }
    // Only the two good requests were billed.
    eventually(Duration::from_secs(10), "two receipts", || async {
        ledger(&db).await.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ledger(&db).await.len(), 2);
}
