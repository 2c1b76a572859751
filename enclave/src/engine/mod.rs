//! Inference engines behind one interface.
//!
//! The service (`crate::service`) talks to engines only through [`ChatModel`] and
//! [`EmbeddingModel`]. Both are synchronous: the service runs them on blocking threads
//! and streams text out through a callback that can stop the generation (a client that
//! goes away cancels its generation).
//!
//! Everything that crosses this interface may be plaintext. Implementations must keep
//! it out of logs, errors and panics: an [`EngineError`] carries numbers and fixed
//! words, never prompt or completion text.

pub mod bert;
pub mod bert_encoder;
pub mod candle_llama;
pub mod cpu;
pub mod gguf;
pub mod llama;
pub mod load;
pub mod sampling;
pub mod template;
pub mod text;
pub mod tokenizer;

pub use load::{LoadOptions, LoadedModels, ModelFile, load_dir, load_dir_with};

use std::ops::ControlFlow;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// One chat message, after the service parsed and checked the OpenAI request.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text content (parts already joined).
    pub content: String,
}

impl std::fmt::Debug for ChatMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatMessage")
            .field("role", &self.role)
            .field(
                "content",
                &format_args!("<{} bytes redacted>", self.content.len()),
            )
            .finish()
    }
}

/// Sampling parameters. `temperature == 0.0` is greedy decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature, 0 to 2.
    pub temperature: f64,
    /// Nucleus sampling mass, in (0, 1].
    pub top_p: f64,
    /// Seed of the sampler's random generator.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A chat generation request.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChatRequest {
    /// The conversation, rendered with the model's own chat template.
    pub messages: Vec<ChatMessage>,
    /// The most completion tokens to generate.
    pub max_tokens: u32,
    /// Stop sequences: generation ends before the first occurrence of any of them,
    /// which is not part of the output.
    pub stop: Vec<String>,
    /// Sampling parameters.
    #[zeroize(skip)]
    pub sampling: Sampling,
}

impl std::fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRequest")
            .field("messages", &self.messages.len())
            .field("max_tokens", &self.max_tokens)
            .field("stop", &self.stop.len())
            .field("sampling", &self.sampling)
            .finish()
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced its end-of-sequence token, or a stop sequence matched.
    Stop,
    /// `max_tokens` was reached, or the context window is full.
    Length,
    /// The text callback asked to stop (the client went away).
    Cancelled,
}

/// What a finished generation reports, besides the text it streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// Tokens of the rendered prompt.
    pub prompt_tokens: u32,
    /// Tokens generated (including any that a stop sequence cut from the text).
    pub completion_tokens: u32,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// Embeddings of a batch of inputs, in input order.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Embeddings {
    /// One vector per input, normalized as the model's configuration says.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens over all inputs.
    pub prompt_tokens: u32,
}

impl std::fmt::Debug for Embeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embeddings")
            .field("vectors", &self.vectors.len())
            .field("prompt_tokens", &self.prompt_tokens)
            .finish()
    }
}

/// An engine failure. Never carries plaintext: only numbers and fixed words.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The prompt plus `max_tokens` does not fit the model's context window.
    #[error(
        "this model's maximum context length is {context_length} tokens; the prompt has {prompt_tokens} and max_tokens asks for {max_tokens}"
    )]
    ContextLengthExceeded {
        /// The model's context window.
        context_length: u32,
        /// Tokens of the rendered prompt.
        prompt_tokens: u32,
        /// The requested completion tokens.
        max_tokens: u32,
    },
    /// An embeddings input is longer than the model accepts.
    #[error("input {index} has {tokens} tokens; this model accepts at most {max_tokens}")]
    InputTooLong {
        /// The input's index in the batch.
        index: usize,
        /// Its length in tokens.
        tokens: usize,
        /// The model's limit.
        max_tokens: usize,
    },
    /// The request cannot be rendered (the chat template refused it, an unknown role).
    /// `what` is a fixed description chosen by the engine, never request text.
    #[error("invalid request: {what}")]
    InvalidRequest {
        /// A fixed description.
        what: &'static str,
    },
    /// A model file is missing, corrupt or unsupported (at load time).
    #[error("model load failed: {0}")]
    Load(String),
    /// The backend failed while running. The string never contains request text.
    #[error("engine failure: {0}")]
    Backend(String),
}

/// A chat (text generation) model.
pub trait ChatModel: Send + Sync {
    /// The model id clients name (e.g. `SmolLM2-135M-Instruct`).
    fn id(&self) -> &str;

    /// The context window in tokens.
    fn context_length(&self) -> u32;

    /// Renders the chat template and counts the prompt's tokens (to check
    /// `max_tokens` against the context before queueing).
    fn count_prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, EngineError>;

    /// Generates a completion. `on_text` receives the text as it is produced, in pieces
    /// that never split a UTF-8 character and never contain (part of) a matched stop
    /// sequence; returning `ControlFlow::Break` cancels the generation.
    fn generate(
        &self,
        request: &ChatRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, EngineError>;
}

/// An embeddings model.
pub trait EmbeddingModel: Send + Sync {
    /// The model id clients name (e.g. `all-MiniLM-L6-v2`).
    fn id(&self) -> &str;

    /// The length of each vector.
    fn dimensions(&self) -> usize;

    /// Embeds a batch of inputs.
    fn embed(&self, inputs: &[String]) -> Result<Embeddings, EngineError>;
}
