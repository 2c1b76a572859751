//! Engines as the service sees them: the built-in engine (candle models behind
//! [`crate::engine`]'s traits) and the upstream engine (an OpenAI-compatible server in
//! the same CVM), behind one trait, [`Engine`].
//!
//! An engine turns a checked inner request into a [`Reply`]: a whole JSON body, or a
//! stream of server-sent events that ends with the usage.

use std::ops::ControlFlow;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use zeroize::Zeroizing;

use crate::engine::{ChatModel, ChatRequest, EmbeddingModel, EngineError, FinishReason};
use crate::openai::{ApiError, ChatParams, EmbedParams, EncodingFormat, Usage};

/// One event of a streamed reply.
#[derive(Debug)]
pub enum Event {
    /// One complete server-sent event (`data: …\n\n`).
    Data(Zeroizing<Vec<u8>>),
    /// The end: what the receipt records.
    End {
        /// Tokens used.
        usage: Usage,
        /// 200, or the status of a failure after the head was sent.
        status: u16,
    },
}

/// An engine's answer.
#[derive(Debug)]
pub enum Reply {
    /// A complete JSON body.
    Json {
        /// The body.
        body: Zeroizing<Vec<u8>>,
        /// Tokens used.
        usage: Usage,
    },
    /// A stream of events (`text/event-stream`), ending with [`Event::End`].
    Events(mpsc::Receiver<Event>),
}

/// A model an engine offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCard {
    /// The id clients name.
    pub id: String,
    /// `chat` or `embeddings`.
    pub kind: &'static str,
    /// Context window, when known.
    pub context_length: Option<u32>,
}

/// The interface between the service and an engine.
pub trait Engine: Send + Sync + 'static {
    /// `builtin` or `upstream`.
    fn name(&self) -> &'static str;
    /// The models offered.
    fn models(&self) -> Vec<ModelCard>;
    /// A chat completion. `body` is the original JSON (an upstream engine forwards it);
    /// `params` is what the service checked. `params.max_tokens` is already bounded by
    /// the outer declaration.
    fn chat(
        self: Arc<Self>,
        params: ChatParams,
        body: Zeroizing<Vec<u8>>,
    ) -> BoxFuture<'static, Result<Reply, ApiError>>;
    /// Embeddings.
    fn embed(
        self: Arc<Self>,
        params: EmbedParams,
        body: Zeroizing<Vec<u8>>,
    ) -> BoxFuture<'static, Result<Reply, ApiError>>;
}

/// Seconds since the epoch, for `created`.
fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh `chatcmpl-…` id.
#[must_use]
pub fn completion_id() -> String {
    format!("chatcmpl-{:032x}", rand::random::<u128>())
}

/// The `finish_reason` string.
#[must_use]
pub fn finish_reason_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Cancelled => "length",
    }
}

/// Formats a `chat.completion.chunk` event.
#[must_use]
pub fn chunk_event(
    id: &str,
    created: u64,
    model: &str,
    delta: &Value,
    finish: Option<&str>,
) -> Zeroizing<Vec<u8>> {
    let v = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    sse(&v)
}

/// `data: <json>\n\n`.
#[must_use]
pub fn sse(v: &Value) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    out.extend_from_slice(b"data: ");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
    out
}

/// The terminating `data: [DONE]` event.
#[must_use]
pub fn done_event() -> Zeroizing<Vec<u8>> {
    Zeroizing::new(b"data: [DONE]\n\n".to_vec())
}

fn engine_error(e: &EngineError) -> ApiError {
    match e {
        EngineError::ContextLengthExceeded { .. } => {
            ApiError::invalid(e.to_string(), Some("max_tokens"), "context_length_exceeded")
        }
        EngineError::InputTooLong { .. } => {
            ApiError::invalid(e.to_string(), Some("input"), "context_length_exceeded")
        }
        EngineError::InvalidRequest { .. } => {
            ApiError::invalid(e.to_string(), Some("messages"), "invalid_value")
        }
        EngineError::Load(_) | EngineError::Backend(_) => {
            ApiError::new(500, "server_error", "engine_failure", "the engine failed")
        }
    }
}

/// The built-in engine: local models on candle.
pub struct Builtin {
    chat: Option<Arc<dyn ChatModel>>,
    embeddings: Option<Arc<dyn EmbeddingModel>>,
    /// Generations that run at once (the rest wait in the admission queue).
    running: Arc<Semaphore>,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin")
            .field("chat", &self.chat.as_ref().map(|m| m.id().to_owned()))
            .field(
                "embeddings",
                &self.embeddings.as_ref().map(|m| m.id().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

impl Builtin {
    /// An engine over these models; `concurrency` generations run at once.
    #[must_use]
    pub fn new(
        chat: Option<Arc<dyn ChatModel>>,
        embeddings: Option<Arc<dyn EmbeddingModel>>,
        concurrency: usize,
    ) -> Self {
        Self {
            chat,
            embeddings,
            running: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    fn chat_model(&self, id: &str) -> Result<Arc<dyn ChatModel>, ApiError> {
        self.chat
            .as_ref()
            .filter(|m| m.id() == id)
            .cloned()
            .ok_or_else(|| model_not_found(id))
    }
}

/// The 404 for an unknown model. The id is client-chosen but it is also an outer
/// header the gateway routes on, so naming it reveals nothing new; still, only ids of
/// a safe shape are echoed.
#[must_use]
pub fn model_not_found(id: &str) -> ApiError {
    let shown = if id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
    {
        id
    } else {
        "(requested)"
    };
    ApiError {
        status: 404,
        message: format!("the model '{shown}' does not exist on this enclave"),
        kind: "invalid_request_error",
        param: Some("model".into()),
        code: Some("model_not_found"),
    }
}

impl Engine for Builtin {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn models(&self) -> Vec<ModelCard> {
        let mut out = Vec::new();
        if let Some(m) = &self.chat {
            out.push(ModelCard {
                id: m.id().to_owned(),
                kind: "chat",
                context_length: Some(m.context_length()),
            });
        }
        if let Some(m) = &self.embeddings {
            out.push(ModelCard {
                id: m.id().to_owned(),
                kind: "embeddings",
                context_length: None,
            });
        }
        out
    }

    fn chat(
        self: Arc<Self>,
        params: ChatParams,
        _body: Zeroizing<Vec<u8>>,
    ) -> BoxFuture<'static, Result<Reply, ApiError>> {
        Box::pin(async move {
            if let Some(p) = params.extensions.first() {
                return Err(ApiError::invalid(
                    format!("'{p}' is not supported by the built-in engine"),
                    Some(p),
                    "unsupported_parameter",
                ));
            }
            let model = self.chat_model(&params.model)?;
            let context = model.context_length();
            let counted = {
                let model = model.clone();
                let messages = params.messages.clone();
                tokio::task::spawn_blocking(move || model.count_prompt_tokens(&messages))
                    .await
                    .map_err(|_| {
                        ApiError::new(500, "server_error", "engine_failure", "the engine failed")
                    })?
            };
            let prompt_tokens = counted.map_err(|e| engine_error(&e))?;
            let room = context.saturating_sub(prompt_tokens);
            let max_tokens = match params.max_tokens {
                Some(m) if m > room => {
                    return Err(engine_error(&EngineError::ContextLengthExceeded {
                        context_length: context,
                        prompt_tokens,
                        max_tokens: m,
                    }));
                }
                Some(m) => m,
                None if room == 0 => {
                    return Err(engine_error(&EngineError::ContextLengthExceeded {
                        context_length: context,
                        prompt_tokens,
                        max_tokens: 1,
                    }));
                }
                None => room,
            };
            let request = ChatRequest {
                messages: params.messages.clone(),
                max_tokens,
                stop: params.stop.clone(),
                sampling: params.sampling,
            };
            let permit = self.running.clone().acquire_owned().await.map_err(|_| {
                ApiError::new(
                    503,
                    "server_error",
                    "shutting_down",
                    "the enclave is shutting down",
                )
            })?;
            let id = completion_id();
            let created = now_s();
            let model_id = params.model.clone();
            if params.stream {
                let (tx, rx) = mpsc::channel::<Event>(64);
                let include_usage = params.include_usage;
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let mut first = true;
                    let mut on_text = |piece: &str| {
                        let delta = if first {
                            first = false;
                            json!({"role": "assistant", "content": piece})
                        } else {
                            json!({"content": piece})
                        };
                        let ev = chunk_event(&id, created, &model_id, &delta, None);
                        match tx.blocking_send(Event::Data(ev)) {
                            Ok(()) => ControlFlow::Continue(()),
                            Err(_) => ControlFlow::Break(()),
                        }
                    };
                    let result = model.generate(&request, &mut on_text);
                    match result {
                        Ok(g) => {
                            if g.finish_reason == FinishReason::Cancelled {
                                return;
                            }
                            let usage = Usage {
                                prompt_tokens: u64::from(g.prompt_tokens),
                                completion_tokens: u64::from(g.completion_tokens),
                            };
                            if first {
                                let delta = json!({"role": "assistant", "content": ""});
                                let _ = tx.blocking_send(Event::Data(chunk_event(
                                    &id, created, &model_id, &delta, None,
                                )));
                            }
                            let fin = chunk_event(
                                &id,
                                created,
                                &model_id,
                                &json!({}),
                                Some(finish_reason_str(g.finish_reason)),
                            );
                            let _ = tx.blocking_send(Event::Data(fin));
                            if include_usage {
                                let v = json!({
                                    "id": id, "object": "chat.completion.chunk", "created": created,
                                    "model": model_id, "choices": [], "usage": usage.to_json(),
                                });
                                let _ = tx.blocking_send(Event::Data(sse(&v)));
                            }
                            let _ = tx.blocking_send(Event::Data(done_event()));
                            let _ = tx.blocking_send(Event::End { usage, status: 200 });
                        }
                        Err(e) => {
                            let err = engine_error(&e);
                            let v: Value =
                                serde_json::from_slice(&err.to_json()).unwrap_or(Value::Null);
                            let _ = tx.blocking_send(Event::Data(sse(&v)));
                            let _ = tx.blocking_send(Event::End {
                                usage: Usage {
                                    prompt_tokens: u64::from(prompt_tokens),
                                    completion_tokens: 0,
                                },
                                status: err.status,
                            });
                        }
                    }
                });
                Ok(Reply::Events(rx))
            } else {
                let out = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let mut text = Zeroizing::new(String::new());
                    let g = model.generate(&request, &mut |piece| {
                        text.push_str(piece);
                        ControlFlow::Continue(())
                    });
                    g.map(|g| (g, text))
                })
                .await
                .map_err(|_| {
                    ApiError::new(500, "server_error", "engine_failure", "the engine failed")
                })?;
                let (g, text) = out.map_err(|e| engine_error(&e))?;
                let usage = Usage {
                    prompt_tokens: u64::from(g.prompt_tokens),
                    completion_tokens: u64::from(g.completion_tokens),
                };
                let v = json!({
                    "id": id, "object": "chat.completion", "created": created, "model": model_id,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": &*text, "refusal": null},
                        "logprobs": null,
                        "finish_reason": finish_reason_str(g.finish_reason),
                    }],
                    "usage": usage.to_json(),
                });
                Ok(Reply::Json {
                    body: Zeroizing::new(v.to_string().into_bytes()),
                    usage,
                })
            }
        })
    }

    fn embed(
        self: Arc<Self>,
        params: EmbedParams,
        _body: Zeroizing<Vec<u8>>,
    ) -> BoxFuture<'static, Result<Reply, ApiError>> {
        Box::pin(async move {
            let model = self
                .embeddings
                .as_ref()
                .filter(|m| m.id() == params.model)
                .cloned()
                .ok_or_else(|| model_not_found(&params.model))?;
            if let Some(d) = params.dimensions
                && usize::try_from(d).ok() != Some(model.dimensions())
            {
                return Err(ApiError::invalid(
                    format!("this model only produces {} dimensions", model.dimensions()),
                    Some("dimensions"),
                    "unsupported_value",
                ));
            }
            let permit = self.running.clone().acquire_owned().await.map_err(|_| {
                ApiError::new(
                    503,
                    "server_error",
                    "shutting_down",
                    "the enclave is shutting down",
                )
            })?;
            let encoding = params.encoding;
            let model_id = params.model.clone();
            let out = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                model.embed(&params.inputs)
            })
            .await
            .map_err(|_| ApiError::new(500, "server_error", "engine_failure", "the engine failed"))?
            .map_err(|e| engine_error(&e))?;
            let data: Vec<Value> = out
                .vectors
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let embedding = match encoding {
                        EncodingFormat::Float => json!(v),
                        EncodingFormat::Base64 => {
                            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                            Value::String(base64_encode(&bytes))
                        }
                    };
                    json!({"object": "embedding", "index": i, "embedding": embedding})
                })
                .collect();
            let usage = Usage {
                prompt_tokens: u64::from(out.prompt_tokens),
                completion_tokens: 0,
            };
            let v = json!({
                "object": "list", "data": data, "model": model_id,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
            });
            Ok(Reply::Json {
                body: Zeroizing::new(v.to_string().into_bytes()),
                usage,
            })
        })
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
