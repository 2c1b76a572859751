//! Sentence embeddings with BERT-family models ([`super::bert_encoder`], candle's BERT
//! arranged for throughput): safetensors weights,
//! the model's `tokenizer.json`, and the pooling and normalization its
//! sentence-transformers configuration asks for.
//!
//! What is read from the model folder:
//! - `config.json` (BERT hyperparameters), `model.safetensors`, `tokenizer.json`;
//! - `modules.json`: the pipeline; a `sentence_transformers.models.Pooling` module's
//!   folder holds its `config.json` (CLS, mean, max or mean-sqrt-len pooling) and a
//!   `sentence_transformers.models.Normalize` module means L2 normalization. Without
//!   `modules.json`: mean pooling, no normalization;
//! - `sentence_bert_config.json`: `max_seq_length` (else `max_position_embeddings`).
//!
//! Inputs longer than `max_seq_length` tokens (with `[CLS]` and `[SEP]`) are truncated
//! to it, as sentence-transformers does: the end of the text is dropped and `[SEP]` kept.
//! Inputs are sorted by length and run in batches of [`BATCH`], like
//! sentence-transformers' `encode`, but without padding: a batch's tokens are packed
//! and each input attends only to its own tokens ([`BertEncoder::forward_packed`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

use super::bert_encoder::BertEncoder;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::{EmbeddingModel, Embeddings, EngineError};

/// Inputs per forward pass.
pub const BATCH: usize = 32;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the (unpadded) tokens.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
    /// Elementwise maximum over the tokens.
    Max,
    /// Sum over the tokens divided by the square root of their count.
    MeanSqrtLen,
}

/// How to load an embeddings model.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingOptions {
    /// The id clients name; when `None`, derived from the folder (see [`BertEmbeddings::load`]).
    pub id: Option<String>,
    /// Run on CUDA device 0 when built with `cuda` and a GPU is present.
    pub cuda: bool,
}

/// A BERT-family sentence embeddings model.
pub struct BertEmbeddings {
    id: String,
    model: BertEncoder,
    tokenizer: Tokenizer,
    dim: usize,
    max_len: usize,
    pooling: Pooling,
    normalize: bool,
}

impl std::fmt::Debug for BertEmbeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbeddings")
            .field("id", &self.id)
            .field("dim", &self.dim)
            .field("max_len", &self.max_len)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .finish_non_exhaustive()
    }
}

fn load_err(what: impl std::fmt::Display) -> EngineError {
    EngineError::Load(what.to_string())
}

fn read_json(path: &Path) -> Result<serde_json::Value, EngineError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| load_err(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| load_err(format!("{} is not JSON: {e}", path.display())))
}

/// Whether `dir` looks like a BERT-family embeddings folder.
pub fn is_bert_dir(dir: &Path) -> bool {
    let files = ["config.json", "model.safetensors", "tokenizer.json"];
    if !files.iter().all(|f| dir.join(f).is_file()) {
        return false;
    }
    let Ok(config) = read_json(&dir.join("config.json")) else {
        return false;
    };
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let archs: Vec<&str> = config
        .get("architectures")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    model_type == "bert" || archs.iter().any(|a| a.starts_with("Bert"))
}

/// The files of a BERT folder the engine reads (relative to the folder), in load order.
pub fn bert_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(PathBuf::from)
        .collect();
    for extra in ["modules.json", "sentence_bert_config.json"] {
        if dir.join(extra).is_file() {
            files.push(PathBuf::from(extra));
        }
    }
    if let Some(pooling_dir) = pooling_dir(dir) {
        files.push(pooling_dir.join("config.json"));
    }
    files
}

/// The Pooling module's folder (relative), from `modules.json`.
fn pooling_dir(dir: &Path) -> Option<PathBuf> {
    let modules = read_json(&dir.join("modules.json")).ok()?;
    modules.as_array()?.iter().find_map(|m| {
        let ty = m.get("type")?.as_str()?;
        if ty.ends_with("models.Pooling") {
            let path = PathBuf::from(m.get("path")?.as_str()?);
            dir.join(&path)
                .join("config.json")
                .is_file()
                .then_some(path)
        } else {
            None
        }
    })
}

fn has_normalize(dir: &Path) -> bool {
    read_json(&dir.join("modules.json"))
        .ok()
        .and_then(|m| {
            m.as_array().map(|a| {
                a.iter().any(|m| {
                    m.get("type")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| t.ends_with("models.Normalize"))
                })
            })
        })
        .unwrap_or(false)
}

impl BertEmbeddings {
    /// Loads the model in `dir`. Its id, unless given: the folder's name, or its parent's
    /// when the folder is called `model` (as in the packages that ship weights).
    ///
    /// # Errors
    /// When a file is missing or malformed.
    pub fn load(dir: &Path, options: &EmbeddingOptions) -> Result<Self, EngineError> {
        let device = if options.cuda && candle_core::utils::cuda_is_available() {
            Device::new_cuda(0).map_err(|e| load_err(format!("no CUDA device: {e}")))?
        } else {
            Device::Cpu
        };
        let config_json = read_json(&dir.join("config.json"))?;
        let config: Config = serde_json::from_value(config_json.clone())
            .map_err(|e| load_err(format!("config.json is not a BERT configuration: {e}")))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load_err(format!("reading model.safetensors: {e}")))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| load_err(format!("model.safetensors: {e}")))?;
        let model =
            BertEncoder::load(&vb, &config).map_err(|e| load_err(format!("loading BERT: {e}")))?;

        let max_positions = config_json
            .get("max_position_embeddings")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(512);
        let max_len = read_json(&dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|c| c.get("max_seq_length").and_then(serde_json::Value::as_u64))
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(max_positions)
            .min(max_positions)
            .max(2);

        let (pooling, normalize) = match pooling_dir(dir) {
            Some(p) => {
                let c = read_json(&dir.join(p).join("config.json"))?;
                let on = |k: &str| {
                    c.get(k)
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(false)
                };
                let pooling = if on("pooling_mode_cls_token") {
                    Pooling::Cls
                } else if on("pooling_mode_max_tokens") {
                    Pooling::Max
                } else if on("pooling_mode_mean_sqrt_len_tokens") {
                    Pooling::MeanSqrtLen
                } else {
                    Pooling::Mean
                };
                (pooling, has_normalize(dir))
            }
            None => (Pooling::Mean, has_normalize(dir)),
        };

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| load_err(format!("tokenizer truncation: {e}")))?;

        let id = options.id.clone().unwrap_or_else(|| default_id(dir));
        Ok(Self {
            id,
            model,
            tokenizer,
            dim: config.hidden_size,
            max_len,
            pooling,
            normalize,
        })
    }

    /// The most tokens of an input (longer inputs are truncated).
    pub fn max_tokens(&self) -> usize {
        self.max_len
    }

    /// The pooling and whether vectors are L2-normalized.
    pub fn pooling(&self) -> (Pooling, bool) {
        (self.pooling, self.normalize)
    }

    /// Token ids of one input, as embedded (with `[CLS]`/`[SEP]`, truncated).
    ///
    /// # Errors
    /// When the tokenizer fails.
    pub fn tokenize(&self, input: &str) -> Result<Vec<u32>, EngineError> {
        let enc = self
            .tokenizer
            .encode_fast(input, true)
            .map_err(|_| EngineError::Backend("tokenization failed".into()))?;
        Ok(enc.get_ids().to_vec())
    }

    fn embed_batch(&self, batch: &[&Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let seqs: Vec<&[u32]> = batch.iter().map(|v| v.as_slice()).collect();
        let mut hidden = self
            .model
            .forward_packed(&seqs)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let d = self.dim;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for seq in &seqs {
            let rows = hidden
                .get(start * d..(start + seq.len()) * d)
                .unwrap_or_default();
            start += seq.len();
            out.push(self.pool(rows));
        }
        zeroize::Zeroize::zeroize(&mut hidden);
        Ok(out)
    }

    /// One input's vector from its token rows (`len × dim`), pooled and normalized as
    /// the model's configuration says.
    fn pool(&self, rows: &[f32]) -> Vec<f32> {
        let d = self.dim;
        let n = rows.len() / d.max(1);
        let mut v = vec![0f32; d];
        match self.pooling {
            Pooling::Cls => {
                if let Some(cls) = rows.get(..d) {
                    v.copy_from_slice(cls);
                }
            }
            Pooling::Max => {
                v.fill(f32::NEG_INFINITY);
                for row in rows.chunks_exact(d) {
                    for (m, &x) in v.iter_mut().zip(row) {
                        *m = m.max(x);
                    }
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                for row in rows.chunks_exact(d) {
                    for (s, &x) in v.iter_mut().zip(row) {
                        *s += x;
                    }
                }
                #[allow(clippy::cast_precision_loss)]
                let count = (n as f32).max(1e-9);
                let div = if self.pooling == Pooling::MeanSqrtLen {
                    count.sqrt()
                } else {
                    count
                };
                for s in &mut v {
                    *s /= div;
                }
            }
        }
        if self.normalize {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            for x in &mut v {
                *x /= norm;
            }
        }
        v
    }
}

/// The id of an embeddings folder: its name, or its parent's when it is called `model`.
pub fn default_id(dir: &Path) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match name(dir) {
        Some(n) if n != "model" => n,
        _ => dir
            .parent()
            .and_then(name)
            .unwrap_or_else(|| "embeddings".into()),
    }
}

impl EmbeddingModel for BertEmbeddings {
    fn id(&self) -> &str {
        &self.id
    }

    fn dimensions(&self) -> usize {
        self.dim
    }

    fn embed(&self, inputs: &[String]) -> Result<Embeddings, EngineError> {
        let mut tokens = Vec::with_capacity(inputs.len());
        for input in inputs {
            tokens.push(zeroize::Zeroizing::new(self.tokenize(input)?));
        }
        let prompt_tokens = tokens.iter().map(|t| t.len()).sum::<usize>();
        // Longest first, as sentence-transformers orders its batches.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens.get(i).map_or(0, |t| t.len())));
        let mut vectors = vec![Vec::new(); inputs.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&Vec<u32>> = chunk
                .iter()
                .filter_map(|&i| tokens.get(i).map(|t| &**t))
                .collect();
            let out = self
                .embed_batch(&batch)
                .map_err(|e| EngineError::Backend(format!("candle: {e}")))?;
            for (&i, v) in chunk.iter().zip(out) {
                if let Some(slot) = vectors.get_mut(i) {
                    *slot = v;
                }
            }
        }
        Ok(Embeddings {
            vectors,
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
        })
    }
}
