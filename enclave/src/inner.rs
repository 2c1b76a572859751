//! The inner, OpenAI-compatible API, reached only after decapsulation (or on the
//! development-only plaintext listener): routing, the outer/inner metadata check, and
//! the hand-off to the engine.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::backend::{Engine, Event, Reply};
use crate::openai::{self, ApiError, Usage};

/// What the outer request declared (headers the gateway routes and meters on).
#[derive(Debug, Clone, Default)]
pub struct OuterMeta {
    /// `Veil-Model`.
    pub model: Option<String>,
    /// `Veil-Max-Tokens`.
    pub max_tokens: Option<u32>,
    /// `Veil-Stream`.
    pub stream: Option<bool>,
    /// Whether the response can stream (a chunked request, or the plaintext listener).
    pub can_stream: bool,
}

/// The inner answer.
#[derive(Debug)]
pub enum InnerReply {
    /// A complete response.
    Whole {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: Zeroizing<Vec<u8>>,
        /// Tokens used.
        usage: Usage,
        /// The model for the receipt.
        model: String,
    },
    /// A stream of server-sent events.
    Stream {
        /// The model for the receipt.
        model: String,
        /// The events, ending with [`Event::End`].
        events: mpsc::Receiver<Event>,
    },
}

/// The model name a receipt records when there is none (`-`).
pub const NO_MODEL: &str = "-";

/// Which inner route a request took, for metrics (a fixed set, never content).
#[must_use]
pub fn route_label(method: &str, path: &str) -> &'static str {
    match (method, path_only(path)) {
        ("POST", "/v1/chat/completions") => "chat",
        ("POST", "/v1/embeddings") => "embeddings",
        ("GET", "/v1/models") => "models",
        _ => "other",
    }
}

fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// An error answer (OpenAI-shaped JSON), recorded under `model`.
#[must_use]
pub fn error(e: &ApiError, model: &str) -> InnerReply {
    InnerReply::Whole {
        status: e.status,
        body: Zeroizing::new(e.to_json()),
        usage: Usage::default(),
        model: model.to_owned(),
    }
}

/// `m` if it can be written into a receipt, else [`NO_MODEL`].
#[must_use]
pub fn receipt_model(m: &str) -> String {
    if !m.is_empty()
        && m.len() <= 128
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
    {
        m.to_owned()
    } else {
        NO_MODEL.to_owned()
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"))
}

/// Handles one inner request.
pub async fn handle(
    engine: Arc<dyn Engine>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Zeroizing<Vec<u8>>,
    meta: &OuterMeta,
) -> InnerReply {
    let declared = meta
        .model
        .as_deref()
        .map_or_else(|| NO_MODEL.to_owned(), receipt_model);
    let route = path_only(path);
    match (method, route) {
        ("GET", "/v1/models") => {
            let data: Vec<_> = engine
                .models()
                .into_iter()
                .map(|m| {
                    json!({"id": m.id, "object": "model", "created": 0, "owned_by": "veil",
                           "veil_kind": m.kind, "context_length": m.context_length})
                })
                .collect();
            InnerReply::Whole {
                status: 200,
                body: Zeroizing::new(
                    json!({"object": "list", "data": data})
                        .to_string()
                        .into_bytes(),
                ),
                usage: Usage::default(),
                model: NO_MODEL.to_owned(),
            }
        }
        ("POST", "/v1/chat/completions" | "/v1/embeddings") if !is_json(content_type) => error(
            &ApiError::new(
                415,
                "invalid_request_error",
                "unsupported_media_type",
                "the content type must be application/json",
            ),
            &declared,
        ),
        ("POST", "/v1/chat/completions") => {
            let mut params = match openai::parse_chat(&body) {
                Ok(p) => p,
                Err(e) => return error(&e, &declared),
            };
            let model = receipt_model(&params.model);
            if let Err(e) = check_outer(meta, &params.model, params.stream) {
                return error(&e, &model);
            }
            if let Some(bound) = meta.max_tokens {
                match params.max_tokens {
                    Some(m) if m > bound => {
                        return error(
                            &ApiError::invalid(
                                format!(
                                    "max_tokens ({m}) exceeds the bound declared outside the envelope ({bound})"
                                ),
                                Some("max_tokens"),
                                "outer_metadata_mismatch",
                            ),
                            &model,
                        );
                    }
                    Some(_) => {}
                    None => params.max_tokens = Some(bound),
                }
            }
            if params.stream && !meta.can_stream {
                return error(
                    &ApiError::invalid(
                        "stream requires a chunked request (message/ohttp-chunked-req)",
                        Some("stream"),
                        "stream_requires_chunked",
                    ),
                    &model,
                );
            }
            match engine.chat(params, body).await {
                Ok(Reply::Json { body, usage }) => InnerReply::Whole {
                    status: 200,
                    body,
                    usage,
                    model,
                },
                Ok(Reply::Events(events)) => InnerReply::Stream { model, events },
                Err(e) => error(&e, &model),
            }
        }
        ("POST", "/v1/embeddings") => {
            let params = match openai::parse_embeddings(&body) {
                Ok(p) => p,
                Err(e) => return error(&e, &declared),
            };
            let model = receipt_model(&params.model);
            if let Err(e) = check_outer(meta, &params.model, false) {
                return error(&e, &model);
            }
            match engine.embed(params, body).await {
                Ok(Reply::Json { body, usage }) => InnerReply::Whole {
                    status: 200,
                    body,
                    usage,
                    model,
                },
                Ok(Reply::Events(_)) => error(
                    &ApiError::new(500, "server_error", "engine_failure", "the engine failed"),
                    &model,
                ),
                Err(e) => error(&e, &model),
            }
        }
        (_, "/v1/models" | "/v1/chat/completions" | "/v1/embeddings") => error(
            &ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                "method not allowed",
            ),
            &declared,
        ),
        _ => error(
            &ApiError::new(
                404,
                "invalid_request_error",
                "unknown_url",
                "unknown inner path",
            ),
            &declared,
        ),
    }
}

/// The inner values must agree with what the outer request declared.
fn check_outer(meta: &OuterMeta, model: &str, stream: bool) -> Result<(), ApiError> {
    if meta.model.as_deref().is_some_and(|outer| outer != model) {
        return Err(ApiError::invalid(
            "the model differs from the one declared outside the envelope (Veil-Model)",
            Some("model"),
            "outer_metadata_mismatch",
        ));
    }
    if meta.stream.is_some_and(|outer| outer != stream) {
        return Err(ApiError::invalid(
            "stream differs from the value declared outside the envelope (Veil-Stream)",
            Some("stream"),
            "outer_metadata_mismatch",
        ));
    }
    Ok(())
}
