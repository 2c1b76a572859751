//! The upstream engine: forwards decrypted inner requests to an OpenAI-compatible server
//! (vLLM, SGLang, or another veil-enclave's plaintext inner API) inside the same CVM,
//! over loopback only. Streaming is relayed event by event; usage comes from the
//! upstream's usage fields (the enclave asks for them with
//! `stream_options.include_usage` and drops that chunk if the client did not ask).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::backend::{Engine, Event, ModelCard, Reply};
use crate::openai::{ApiError, ChatParams, EmbedParams, Usage};

/// Largest upstream response body read whole.
const MAX_BODY: usize = 64 << 20;
/// Largest single server-sent event relayed.
const MAX_EVENT: usize = 1 << 20;

/// An OpenAI-compatible server on loopback.
pub struct Upstream {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    models: Vec<ModelCard>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

fn upstream_failed() -> ApiError {
    ApiError::new(
        502,
        "server_error",
        "upstream_failure",
        "the upstream engine failed",
    )
}

impl Upstream {
    /// Connects to `url` (`http://127.0.0.1:PORT` or `http://[::1]:PORT`, `localhost`)
    /// and lists its models.
    ///
    /// # Errors
    /// When the URL is not plain HTTP on loopback (plaintext must not leave the CVM), or
    /// the upstream does not answer `GET /v1/models`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let uri: hyper::Uri = base.parse()?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--upstream must be an http:// URL on loopback"
        );
        let host = uri.host().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        anyhow::ensure!(
            loopback,
            "--upstream must be on loopback: decrypted requests never leave the confidential VM"
        );
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let mut up = Self {
            base,
            client,
            models: Vec::new(),
        };
        let (status, body) = up
            .get("/v1/models")
            .await
            .map_err(|e| anyhow::anyhow!("upstream /v1/models: {}", e.message))?;
        anyhow::ensure!(status == 200, "upstream /v1/models answered {status}");
        let v: Value = serde_json::from_slice(&body)?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for m in data {
            if let Some(id) = m.get("id").and_then(Value::as_str) {
                let kind = match m.get("veil_kind").and_then(Value::as_str) {
                    Some("embeddings") => "embeddings",
                    _ => "chat",
                };
                let context_length = m
                    .get("max_model_len")
                    .or_else(|| m.get("context_length"))
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok());
                up.models.push(ModelCard {
                    id: id.to_owned(),
                    kind,
                    context_length,
                });
            }
        }
        anyhow::ensure!(!up.models.is_empty(), "the upstream offers no models");
        Ok(up)
    }

    async fn get(&self, path: &str) -> Result<(u16, Zeroizing<Vec<u8>>), ApiError> {
        let req = hyper::Request::get(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .map_err(|_| upstream_failed())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|_| upstream_failed())?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| upstream_failed())?
            .to_bytes();
        Ok((status, Zeroizing::new(body.to_vec())))
    }

    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| upstream_failed())?;
        self.client
            .request(req)
            .await
            .map_err(|_| upstream_failed())
    }

    fn check_model(&self, id: &str, kind: &str) -> Result<(), ApiError> {
        if self.models.iter().any(|m| m.id == id && m.kind == kind) {
            Ok(())
        } else {
            Err(crate::backend::model_not_found(id))
        }
    }
}

/// The upstream's error, relayed sealed (it may describe the request).
fn relay_error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error").cloned().unwrap_or(Value::Null);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the upstream engine refused the request")
        .to_owned();
    let status = if (400..600).contains(&status) {
        status
    } else {
        502
    };
    ApiError {
        status,
        message,
        kind: if status < 500 {
            "invalid_request_error"
        } else {
            "server_error"
        },
        param: e.get("param").and_then(Value::as_str).map(str::to_owned),
        code: Some("upstream_error"),
    }
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

impl Engine for Upstream {
    fn name(&self) -> &'static str {
        "upstream"
    }

    fn models(&self) -> Vec<ModelCard> {
        self.models.clone()
    }

    fn chat(
        self: Arc<Self>,
        params: ChatParams,
        body: Zeroizing<Vec<u8>>,
    ) -> BoxFuture<'static, Result<Reply, ApiError>> {
        Box::pin(async move {
            self.check_model(&params.model, "chat")?;
            let mut v: Value = serde_json::from_slice(&body).map_err(|_| upstream_failed())?;
            let Some(obj) = v.as_object_mut() else {
                return Err(upstream_failed());
            };
            // The service may have lowered max_tokens to the outer declaration.
            if let Some(m) = params.max_tokens {
                obj.remove("max_completion_tokens");
                obj.insert("max_tokens".into(), Value::from(m));
            }
            if params.stream {
                obj.insert(
                    "stream_options".into(),
                    serde_json::json!({"include_usage": true}),
                );
            }
            let forwarded = Zeroizing::new(v.to_string().into_bytes());
            drop(v);
            let resp = self
                .post("/v1/chat/completions", forwarded.to_vec())
                .await?;
            let status = resp.status().as_u16();
            if !params.stream || status != 200 {
                let bytes = Limited::new(resp.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|_| upstream_failed())?
                    .to_bytes();
                let bytes = Zeroizing::new(bytes.to_vec());
                if status != 200 {
                    return Err(relay_error(status, &bytes));
                }
                let v: Value = serde_json::from_slice(&bytes).map_err(|_| upstream_failed())?;
                let usage = usage_of(&v).unwrap_or_default();
                return Ok(Reply::Json { body: bytes, usage });
            }
            let (tx, rx) = mpsc::channel::<Event>(64);
            let include_usage = params.include_usage;
            tokio::spawn(async move {
                let mut body = resp.into_body();
                let mut buf = Zeroizing::new(Vec::<u8>::new());
                let mut usage = Usage::default();
                let mut done = false;
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    let Some(data) = frame.data_ref() else {
                        continue;
                    };
                    buf.extend_from_slice(data);
                    while let Some(end) = find_event_end(&buf) {
                        let event: Zeroizing<Vec<u8>> = Zeroizing::new(buf.drain(..end).collect());
                        let payload = event_data(&event);
                        if payload.as_deref() == Some(b"[DONE]".as_slice()) {
                            done = true;
                        } else if let Some(p) = &payload
                            && let Ok(v) = serde_json::from_slice::<Value>(p)
                            && let Some(u) = usage_of(&v)
                        {
                            usage = u;
                            let only_usage = v
                                .get("choices")
                                .and_then(Value::as_array)
                                .is_some_and(Vec::is_empty);
                            if only_usage && !include_usage {
                                continue;
                            }
                        }
                        let mut out = Zeroizing::new(event.to_vec());
                        normalize_event_end(&mut out);
                        if tx.send(Event::Data(out)).await.is_err() {
                            return; // the client went away; dropping `body` cancels upstream
                        }
                    }
                    if buf.len() > MAX_EVENT {
                        break;
                    }
                }
                let status = if done { 200 } else { 502 };
                let _ = tx.send(Event::End { usage, status }).await;
            });
            Ok(Reply::Events(rx))
        })
    }

    fn embed(
        self: Arc<Self>,
        params: EmbedParams,
        body: Zeroizing<Vec<u8>>,
    ) -> BoxFuture<'static, Result<Reply, ApiError>> {
        Box::pin(async move {
            self.check_model(&params.model, "embeddings")?;
            let resp = self.post("/v1/embeddings", body.to_vec()).await?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|_| upstream_failed())?
                .to_bytes();
            let bytes = Zeroizing::new(bytes.to_vec());
            if status != 200 {
                return Err(relay_error(status, &bytes));
            }
            let v: Value = serde_json::from_slice(&bytes).map_err(|_| upstream_failed())?;
            let usage = usage_of(&v).unwrap_or_default();
            Ok(Reply::Json {
                body: bytes,
                usage: Usage {
                    completion_tokens: 0,
                    ..usage
                },
            })
        })
    }
}

/// The end (exclusive) of the first complete SSE event in `buf`: after a blank line
/// (`\n\n` or `\r\n\r\n`).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The concatenated `data:` lines of an event.
fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            let o = out.get_or_insert_with(Vec::new);
            if !o.is_empty() {
                o.push(b'\n');
            }
            o.extend_from_slice(rest);
        }
    }
    out
}

/// Makes an event end with `\n\n` (what the sealed channel's event framing expects).
fn normalize_event_end(event: &mut Zeroizing<Vec<u8>>) {
    let trimmed = event
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |i| i + 1);
    event.truncate(trimmed);
    event.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_framing() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(find_event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(find_event_end(b"data: a\n"), None);
        assert_eq!(
            event_data(b"event: x\ndata: {\"a\":1}\n\n").unwrap(),
            b"{\"a\":1}"
        );
        assert_eq!(event_data(b": comment\n\n"), None);
        let mut e = Zeroizing::new(b"data: x\r\n\r\n".to_vec());
        normalize_event_end(&mut e);
        assert_eq!(&e[..], b"data: x\n\n");
    }

    #[tokio::test]
    async fn upstream_must_be_loopback_http() {
        for url in [
            "https://127.0.0.1:1",
            "http://10.0.0.1:8000",
            "http://example.invalid:80",
        ] {
            let e = Upstream::connect(url).await.unwrap_err().to_string();
            assert!(e.contains("loopback"), "{url}: {e}");
        }
    }
}
