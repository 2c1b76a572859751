//! Chat with GGUF llama-family models: the tokenizer and chat template from the file's
//! metadata, a forward pass (the fast CPU one in [`super::cpu`], or candle's on any
//! device in [`super::candle_llama`]), sampling, stop sequences and streaming.

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use zeroize::Zeroizing;

use super::gguf::GgufFile;
use super::sampling::Sampler;
use super::template::{CHATML, ChatTemplate};
use super::text::{StopFilter, StopState, Utf8Stream};
use super::tokenizer::ChatTokenizer;
use super::{ChatMessage, ChatModel, ChatRequest, EngineError, FinishReason, Generation};

/// The hyperparameters of a llama-family model, from its GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Feed-forward inner size.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_kv_head: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Dimensions rotated by RoPE (the first ones of each head).
    pub rope_dim: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Context window used (the model's, or less when limited at load).
    pub context_length: usize,
    /// Vocabulary size (rows of the output matrix).
    pub vocab: usize,
}

impl LlamaParams {
    /// Reads the parameters of a `general.architecture = llama` file.
    ///
    /// # Errors
    /// When the architecture is not llama or a parameter is missing.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, EngineError> {
        let arch = gguf.string("general.architecture")?;
        if arch != "llama" {
            return Err(EngineError::Load(format!(
                "general.architecture {arch:?} is not supported (llama only)"
            )));
        }
        let n_embd = gguf.usize("llama.embedding_length")?;
        let n_head = gguf.usize("llama.attention.head_count")?;
        let n_kv_head = gguf
            .opt_u64("llama.attention.head_count_kv")
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 || n_embd % n_head != 0 {
            return Err(EngineError::Load(
                "inconsistent attention head counts".into(),
            ));
        }
        let head_dim = n_embd / n_head;
        let rope_dim = gguf
            .opt_u64("llama.rope.dimension_count")
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(head_dim);
        if rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            return Err(EngineError::Load("inconsistent rope dimension".into()));
        }
        let vocab = match gguf.tensor_info("token_embd.weight") {
            Some((_, dims)) => dims.get(1).copied().unwrap_or(0),
            None => {
                return Err(EngineError::Load(
                    "tensor token_embd.weight is missing".into(),
                ));
            }
        };
        Ok(Self {
            n_layer: gguf.usize("llama.block_count")?,
            n_embd,
            n_ff: gguf.usize("llama.feed_forward_length")?,
            n_head,
            n_kv_head,
            head_dim,
            rope_dim,
            rope_base: gguf.opt_f32("llama.rope.freq_base").unwrap_or(10_000.0),
            rms_eps: gguf
                .opt_f32("llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5),
            context_length: gguf.usize("llama.context_length")?,
            vocab,
        })
    }
}

/// A forward pass implementation, shared by all requests.
pub trait ChatBackend: Send + Sync {
    /// A new session with an empty KV cache.
    ///
    /// # Errors
    /// When the session cannot be set up.
    fn session(&self) -> Result<Box<dyn ChatSession + '_>, EngineError>;

    /// A short name (`cpu`, `candle-cpu`, `candle-cuda`).
    fn name(&self) -> &'static str;
}

/// One request's state in a backend: its KV cache and last logits.
pub trait ChatSession {
    /// Appends `tokens` to the context and computes the logits after the last of them.
    ///
    /// # Errors
    /// When the context window would overflow or the backend fails.
    fn feed(&mut self, tokens: &[u32]) -> Result<(), EngineError>;

    /// Picks the next token from the last logits.
    ///
    /// # Errors
    /// When nothing was fed yet or the backend fails.
    fn sample(&mut self, sampler: &mut Sampler) -> Result<u32, EngineError>;

    /// Tokens in the context so far.
    fn position(&self) -> usize;

    /// A copy of the last logits (tests and diagnostics).
    ///
    /// # Errors
    /// When nothing was fed yet.
    fn logits(&mut self) -> Result<Vec<f32>, EngineError>;
}

/// Which forward pass to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA when built with `cuda` and a GPU is present; else the fast CPU pass when it
    /// supports the file's tensor types; else candle on CPU.
    #[default]
    Auto,
    /// The fast CPU pass (fails for unsupported tensor types).
    Cpu,
    /// candle on CPU.
    CandleCpu,
    /// candle on CUDA device 0 (needs the `cuda` feature).
    CandleCuda,
}

/// How to load a chat model.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// The id clients name; when `None`, derived (see [`model_id_from_gguf_path`]).
    pub id: Option<String>,
    /// Limit the context window below the model's own.
    pub max_context: Option<usize>,
    /// CPU threads for the fast CPU pass (`None`: `RAYON_NUM_THREADS`, else all cores).
    pub threads: Option<usize>,
    /// The forward pass.
    pub backend: BackendChoice,
}

/// A GGUF llama-family chat model.
pub struct LlamaChat {
    id: String,
    params: LlamaParams,
    tokenizer: ChatTokenizer,
    template: ChatTemplate,
    backend: Box<dyn ChatBackend>,
}

impl std::fmt::Debug for LlamaChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaChat")
            .field("id", &self.id)
            .field("params", &self.params)
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

/// A model id from a GGUF file name: the name without `.gguf` and without a trailing
/// quantization tag (`.Q4_1`, `-Q4_K_M`, `.f16`, ...). For example
/// `SmolLM2-135M-Instruct.Q4_1.gguf` → `SmolLM2-135M-Instruct`.
pub fn model_id_from_gguf_path(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".gguf")
        .or_else(|| name.strip_suffix(".GGUF"))
        .unwrap_or(&name);
    let is_quant_tag = |t: &str| {
        let u = t.to_ascii_uppercase();
        let quant = (u.starts_with('Q') || u.starts_with("IQ"))
            && u.chars().any(|c| c.is_ascii_digit())
            && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        quant || matches!(u.as_str(), "F16" | "F32" | "BF16" | "FP16" | "FP32")
    };
    for sep in ['.', '-'] {
        if let Some((head, tail)) = stem.rsplit_once(sep)
            && !head.is_empty()
            && is_quant_tag(tail)
        {
            return head.to_string();
        }
    }
    stem.to_string()
}

impl LlamaChat {
    /// Loads a GGUF llama-family chat model.
    ///
    /// # Errors
    /// When the file is unreadable, not llama-family, or uses an unsupported tokenizer.
    pub fn load(path: &Path, options: &ChatOptions) -> Result<Self, EngineError> {
        let (gguf, mut file) = GgufFile::open(path)?;
        let mut params = LlamaParams::from_gguf(&gguf)?;
        if let Some(limit) = options.max_context {
            params.context_length = params.context_length.min(limit.max(1));
        }
        let tokenizer = ChatTokenizer::from_gguf(&gguf)?;
        let source = gguf.opt_string("tokenizer.chat_template").unwrap_or(CHATML);
        let template = ChatTemplate::new(source, tokenizer.bos_text(), tokenizer.eos_text())?;
        if tokenizer.vocab_size() != params.vocab {
            return Err(EngineError::Load(
                "the tokenizer and the embedding matrix disagree on the vocabulary size".into(),
            ));
        }
        let backend = select_backend(&gguf, &mut file, &params, options)?;
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| model_id_from_gguf_path(path));
        Ok(Self {
            id,
            params,
            tokenizer,
            template,
            backend,
        })
    }

    /// The model's hyperparameters.
    pub fn params(&self) -> &LlamaParams {
        &self.params
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// The forward pass in use (`cpu`, `candle-cpu`, `candle-cuda`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// A new session (empty KV cache), for callers that drive tokens themselves.
    ///
    /// # Errors
    /// When the backend cannot set one up.
    pub fn session(&self) -> Result<Box<dyn ChatSession + '_>, EngineError> {
        self.backend.session()
    }

    /// Renders the conversation with the chat template, ready for the assistant's turn.
    ///
    /// # Errors
    /// When the template refuses the conversation.
    pub fn render_prompt(
        &self,
        messages: &[ChatMessage],
    ) -> Result<Zeroizing<String>, EngineError> {
        self.template.render(messages, true)
    }

    /// The prompt's token ids.
    ///
    /// # Errors
    /// When the template refuses the conversation.
    pub fn prompt_tokens(
        &self,
        messages: &[ChatMessage],
    ) -> Result<Zeroizing<Vec<u32>>, EngineError> {
        let text = self.render_prompt(messages)?;
        Ok(Zeroizing::new(self.tokenizer.encode(&text)?))
    }

    fn context_error(&self, prompt: usize, max_tokens: u32) -> EngineError {
        EngineError::ContextLengthExceeded {
            context_length: self.context_length(),
            prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
            max_tokens,
        }
    }

    /// Generates from prompt token ids (the body of [`ChatModel::generate`]).
    ///
    /// # Errors
    /// As [`ChatModel::generate`].
    pub fn generate_from_tokens(
        &self,
        prompt: &[u32],
        request: &ChatRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, EngineError> {
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        if prompt.is_empty() {
            return Err(EngineError::InvalidRequest {
                what: "the prompt is empty",
            });
        }
        let max_tokens = request.max_tokens;
        if prompt.len() + max_tokens as usize > self.params.context_length {
            return Err(self.context_error(prompt.len(), max_tokens));
        }
        let mut completion_tokens = 0u32;
        let done = |completion_tokens, finish_reason| Generation {
            prompt_tokens,
            completion_tokens,
            finish_reason,
        };
        if max_tokens == 0 {
            return Ok(done(0, FinishReason::Length));
        }
        let mut session = self.backend.session()?;
        session.feed(prompt)?;
        let mut sampler = Sampler::new(&request.sampling);
        let mut utf8 = Utf8Stream::default();
        let mut stops = StopFilter::new(&request.stop);
        let mut decoded = Zeroizing::new(String::new());
        let mut out = Zeroizing::new(String::new());
        let mut emit = |out: &mut String| -> ControlFlow<()> {
            if out.is_empty() {
                return ControlFlow::Continue(());
            }
            let flow = on_text(out);
            zeroize::Zeroize::zeroize(out);
            flow
        };
        loop {
            let token = session.sample(&mut sampler)?;
            completion_tokens += 1;
            let end_of_generation = self.tokenizer.is_end_of_generation(token);
            decoded.clear();
            if !end_of_generation {
                utf8.push(self.tokenizer.piece(token), &mut decoded);
            }
            if stops.push(&decoded, &mut out) == StopState::Matched {
                let _ = emit(&mut out);
                return Ok(done(completion_tokens, FinishReason::Stop));
            }
            let length = completion_tokens >= max_tokens;
            if end_of_generation || length {
                // An incomplete character left at the end is dropped; held text that
                // could have become a stop sequence is released.
                stops.finish(&mut out);
            }
            if emit(&mut out).is_break() {
                return Ok(done(completion_tokens, FinishReason::Cancelled));
            }
            if end_of_generation {
                return Ok(done(completion_tokens, FinishReason::Stop));
            }
            if length {
                return Ok(done(completion_tokens, FinishReason::Length));
            }
            session.feed(&[token])?;
        }
    }
}

fn select_backend(
    gguf: &GgufFile,
    file: &mut std::fs::File,
    params: &LlamaParams,
    options: &ChatOptions,
) -> Result<Box<dyn ChatBackend>, EngineError> {
    let candle =
        |file: &mut std::fs::File, device: Device| -> Result<Box<dyn ChatBackend>, EngineError> {
            Ok(Box::new(super::candle_llama::CandleLlama::load(
                gguf, file, params, &device,
            )?))
        };
    match options.backend {
        BackendChoice::Cpu => Ok(Box::new(super::cpu::CpuLlama::load(
            gguf,
            file,
            params,
            options.threads,
        )?)),
        BackendChoice::CandleCpu => candle(file, Device::Cpu),
        BackendChoice::CandleCuda => {
            let dev = Device::new_cuda(0)
                .map_err(|e| EngineError::Load(format!("no CUDA device: {e}")))?;
            candle(file, dev)
        }
        BackendChoice::Auto => {
            if candle_core::utils::cuda_is_available()
                && let Ok(dev) = Device::new_cuda(0)
            {
                return candle(file, dev);
            }
            if super::cpu::CpuLlama::supports(gguf) {
                Ok(Box::new(super::cpu::CpuLlama::load(
                    gguf,
                    file,
                    params,
                    options.threads,
                )?))
            } else {
                candle(file, Device::Cpu)
            }
        }
    }
}

impl ChatModel for LlamaChat {
    fn id(&self) -> &str {
        &self.id
    }

    fn context_length(&self) -> u32 {
        u32::try_from(self.params.context_length).unwrap_or(u32::MAX)
    }

    fn count_prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, EngineError> {
        let ids = self.prompt_tokens(messages)?;
        Ok(u32::try_from(ids.len()).unwrap_or(u32::MAX))
    }

    fn generate(
        &self,
        request: &ChatRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, EngineError> {
        let prompt = self.prompt_tokens(&request.messages)?;
        self.generate_from_tokens(&prompt, request, on_text)
    }
}

/// Tensor types of the GGUF file, for diagnostics.
pub fn tensor_types(gguf: &GgufFile) -> Vec<GgmlDType> {
    let mut v: Vec<GgmlDType> = Vec::new();
    for t in gguf.content().tensor_infos.values() {
        if !v.contains(&t.ggml_dtype) {
            v.push(t.ggml_dtype);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_file_names() {
        let id = |s: &str| model_id_from_gguf_path(Path::new(s));
        assert_eq!(
            id("a/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(
            id("Llama-3.2-1B-Instruct-Q4_K_M.gguf"),
            "Llama-3.2-1B-Instruct"
        );
        assert_eq!(id("tinyllama.f16.gguf"), "tinyllama");
        assert_eq!(id("model.gguf"), "model");
        assert_eq!(id("Qwen-7B.gguf"), "Qwen-7B");
    }
}
