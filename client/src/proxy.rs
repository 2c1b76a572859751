//! `veil proxy`: a local OpenAI-compatible endpoint that seals every request to a
//! verified enclave, so unchanged OpenAI SDKs and frameworks become private by changing
//! only their base URL.
//!
//! Routes: `POST /v1/chat/completions` (streaming included), `POST /v1/embeddings`,
//! `GET /v1/models`, and `GET /veil/attestation` (the current verification result).
//!
//! Each answer's receipt, once the proxy has verified it, is handed to the local client:
//! as the `Veil-Receipt` response header of a whole answer, and as the server-sent-event
//! comment `: veil-receipt HEX` just before a stream's closing `data: [DONE]` (OpenAI
//! SDKs skip comments). Its value is the lowercase hex of the receipt's canonical bytes
//! (`veil_attestation::receipt::Receipt::parse`), so an application can keep what the
//! enclave says it served and billed.
//!
//! A stream's `data: [DONE]` is passed on only once its receipt has verified; otherwise
//! the stream ends with an OpenAI-shaped error event (`receipt_invalid`) instead, as a
//! stream whose sealed chunks fail to open does (`channel_failure`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::{Value, json};
use veil_attestation::channel::Request;

use crate::{Client, ClientError, OuterMeta, Reply, json_request, meta_of};

/// An OpenAI-shaped error object.
fn error_json(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// A stream's closing error event: the channel failed (`code`), after the status line
/// and maybe some events had gone out.
fn error_event(code: &str, e: &ClientError) -> Vec<u8> {
    let v = error_json("veil_channel_error", code, &e.to_string());
    format!("data: {v}\n\n").into_bytes()
}

fn openai_error(status: u16, kind: &str, code: &str, message: &str) -> Response {
    let body = error_json(kind, code, message);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn client_error(e: &ClientError) -> Response {
    match e {
        ClientError::Outer {
            status,
            body,
            retry_after,
            ..
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                body.clone(),
            )
                .into_response();
            if let Some(v) = retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        ClientError::NoVerifiedBackend { .. } | ClientError::Attestation(_) => openai_error(
            502,
            "veil_attestation_error",
            "attestation_failed",
            &e.to_string(),
        ),
        ClientError::Transport(_) => openai_error(
            502,
            "api_connection_error",
            "gateway_unreachable",
            &e.to_string(),
        ),
        ClientError::Channel(_) | ClientError::Receipt(_) => {
            openai_error(502, "veil_channel_error", "channel_failure", &e.to_string())
        }
    }
}

/// The proxy's router over a client.
pub fn router(client: Arc<Client>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/veil/attestation", get(attestation))
        .fallback(|| async {
            openai_error(404, "invalid_request_error", "unknown_url", "unknown path")
        })
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .with_state(client)
}

async fn forward(client: &Client, request: &Request, meta: &OuterMeta) -> Response {
    match client.send(request, meta).await {
        Ok(Reply::Whole(a)) => {
            let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                a.body.to_vec(),
            )
                .into_response();
            if let Some(v) = receipt_text(&a.receipt).and_then(|t| HeaderValue::from_str(&t).ok()) {
                r.headers_mut().insert(RECEIPT_HEADER, v);
            }
            r
        }
        Ok(Reply::Stream(s)) => {
            // The response body pulls each event from upstream when the local client's
            // connection is ready for it (no task or queue between them: one hand-off
            // fewer per event, and upstream is read only as fast as the client reads).
            // Dropping the body (the client went away) drops the stream, which cancels
            // upstream. `data: [DONE]` is held back until the receipt has verified, so a
            // client sees the end of a stream only with a valid receipt, and an error
            // event in its place otherwise.
            let stream = futures::stream::unfold(Some((s, None)), |state| async move {
                let (mut s, mut done): (_, Option<Vec<u8>>) = state?;
                let frame = |text: Vec<u8>| Ok::<_, Infallible>(Frame::data(Bytes::from(text)));
                loop {
                    match s.next_event().await {
                        Ok(Some(ev)) if is_done_event(&ev) => done = Some(ev.to_vec()),
                        Ok(Some(ev)) => {
                            let mut out = done.take().unwrap_or_default();
                            out.extend_from_slice(&ev);
                            return Some((frame(out), Some((s, None))));
                        }
                        Ok(None) => {
                            return match s.finish().await {
                                Ok(receipt) => {
                                    let mut out = receipt_text(&receipt)
                                        .map(|t| format!(": veil-receipt {t}\n\n").into_bytes())
                                        .unwrap_or_default();
                                    out.extend(done.unwrap_or_default());
                                    (!out.is_empty()).then(|| (frame(out), None))
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "streamed answer's receipt did not verify");
                                    Some((frame(error_event("receipt_invalid", &e)), None))
                                }
                            };
                        }
                        Err(e) => return Some((frame(error_event("channel_failure", &e)), None)),
                    }
                }
            });
            let mut r = Response::new(Body::new(StreamBody::new(stream)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => client_error(&e),
    }
}

/// Whether an event is the stream's end, `data: [DONE]`.
fn is_done_event(ev: &[u8]) -> bool {
    ev.trim_ascii() == b"data: [DONE]"
}

/// The response header carrying a whole answer's verified receipt.
pub const RECEIPT_HEADER: &str = "veil-receipt";

fn receipt_text(r: &veil_attestation::receipt::Receipt) -> Option<String> {
    r.to_bytes().ok().map(hex::encode)
}

fn parse_body(body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            Box::new(openai_error(
                400,
                "invalid_request_error",
                "invalid_json",
                "the request body must be a JSON object",
            ))
        })
}

async fn chat(State(client): State<Arc<Client>>, _headers: HeaderMap, body: Bytes) -> Response {
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let meta = meta_of(&v);
    drop(v);
    let request = match json_request("/v1/chat/completions", body.to_vec()) {
        Ok(r) => r,
        Err(e) => return client_error(&e),
    };
    forward(&client, &request, &meta).await
}

async fn embeddings(State(client): State<Arc<Client>>, body: Bytes) -> Response {
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let meta = OuterMeta {
        model: v["model"].as_str().map(str::to_owned),
        max_tokens: None,
        stream: false,
    };
    drop(v);
    let request = match json_request("/v1/embeddings", body.to_vec()) {
        Ok(r) => r,
        Err(e) => return client_error(&e),
    };
    forward(&client, &request, &meta).await
}

async fn models(State(client): State<Arc<Client>>) -> Response {
    // Asked of an enclave, sealed, like everything else.
    forward(
        &client,
        &Request::new("GET", "/v1/models", Vec::new()),
        &OuterMeta::default(),
    )
    .await
}

async fn attestation(State(client): State<Arc<Client>>) -> Response {
    match client.reports().await {
        Ok(reports) => {
            let list: Vec<Value> = reports
                .iter()
                .map(|r| {
                    json!({"index": r.index, "verified": r.verified, "platform": r.platform,
                           "simulated": r.simulated, "key_ids": r.key_ids,
                           "model_manifest_digest": r.model_manifest_digest,
                           "enclave_version": r.enclave_version, "produced_at": r.produced_at,
                           "error": r.error})
                })
                .collect();
            let v = json!({"verified": reports.iter().any(|r| r.verified), "policy": client.policy(), "backends": list});
            ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
        }
        Err(e) => client_error(&e),
    }
}
