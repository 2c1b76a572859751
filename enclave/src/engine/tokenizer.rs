//! A chat model's tokenizer, built from the GGUF file's own metadata (`tokenizer.ggml.*`),
//! with no tokenizer download.
//!
//! Supported: `tokenizer.ggml.model = gpt2` (byte-level BPE from `tokenizer.ggml.tokens`
//! and `tokenizer.ggml.merges`) with the pre-tokenizers llama.cpp knows as `smollm` (and
//! the others that share its expression: `starcoder`, `refact`, `command-r`,
//! `codeshell`, `exaone`, `minerva`), `default`/`gpt-2`, `llama-bpe` (Llama 3) and
//! `qwen2`. The BPE itself is the `tokenizers` crate's (on `fancy-regex`); control and
//! user-defined tokens (`tokenizer.ggml.token_type` 3 and 4) are matched in text, as
//! llama.cpp does when it parses special tokens in a rendered chat prompt.
//!
//! Decoding does not go through `tokenizers`: each token id maps to its bytes (the
//! byte-level alphabet undone; control tokens decode to nothing, as llama.cpp renders
//! them without `special`), and [`super::text::Utf8Stream`] turns bytes into text
//! without ever splitting a character.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::EngineError;
use super::gguf::GgufFile;

const TYPE_NORMAL: i64 = 1;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// Token texts llama.cpp treats as end of generation besides the EOS id.
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
];

/// Fill-in-the-middle "repository" and "file separator" tokens, which llama.cpp also
/// treats as end of generation (the first text of each list found in the vocabulary).
const FIM_END_TEXTS: &[&[&str]] = &[
    &["<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
    &["<|file_sep|>"],
];

/// A chat model's tokenizer.
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    pieces: Vec<Vec<u8>>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    bos_text: String,
    eos_text: String,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("vocab", &self.pieces.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn load_err(what: impl std::fmt::Display) -> EngineError {
    EngineError::Load(what.to_string())
}

/// GPT-2's byte-to-character table, inverted: character → byte.
fn byte_decoder() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let c = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\u{FFFD}');
            n += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

/// The pre-tokenizer of a llama.cpp `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, EngineError> {
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, EngineError> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| load_err(format!("pre-tokenizer expression: {e}")))?;
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])))
    };
    match pre {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])))
        }
        "default" | "gpt-2" | "gpt2" => Ok(ByteLevel::new(false, true, true).into()),
        "llama-bpe" | "llama3" | "falcon3" | "pixtral" => split(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        "qwen2" | "deepseek-r1-qwen" => split(
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        _ => Err(load_err("unsupported tokenizer.ggml.pre in the GGUF file")),
    }
}

fn strings(values: &[Value], what: &str) -> Result<Vec<String>, EngineError> {
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(load_err(format!("{what} holds a non-string"))),
        })
        .collect()
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::I32(x) => Some(i64::from(*x)),
        Value::U32(x) => Some(i64::from(*x)),
        Value::I8(x) => Some(i64::from(*x)),
        Value::U8(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::U16(x) => Some(i64::from(*x)),
        Value::I64(x) => Some(*x),
        Value::U64(x) => i64::try_from(*x).ok(),
        _ => None,
    }
}

impl ChatTokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    ///
    /// # Errors
    /// When the tokenizer kind is unsupported or the metadata is inconsistent.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, EngineError> {
        let model = gguf.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(load_err(format!(
                "tokenizer.ggml.model {model:?} is not supported (only gpt2 byte-level BPE)"
            )));
        }
        let pre = gguf.opt_string("tokenizer.ggml.pre").unwrap_or("default");
        let tokens = strings(
            gguf.opt_array("tokenizer.ggml.tokens")
                .ok_or_else(|| load_err("tokenizer.ggml.tokens is missing"))?,
            "tokenizer.ggml.tokens",
        )?;
        let merges = strings(
            gguf.opt_array("tokenizer.ggml.merges")
                .ok_or_else(|| load_err("tokenizer.ggml.merges is missing"))?,
            "tokenizer.ggml.merges",
        )?;
        let types: Vec<i64> = match gguf.opt_array("tokenizer.ggml.token_type") {
            Some(a) => a.iter().map(|v| int(v).unwrap_or(TYPE_NORMAL)).collect(),
            None => vec![TYPE_NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(load_err("tokenizer.ggml.token_type has the wrong length"));
        }
        let n = u32::try_from(tokens.len()).map_err(|_| load_err("vocabulary too large"))?;
        let id = |key: &str| {
            gguf.opt_u64(key)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| v < n)
        };
        let bos_id = id("tokenizer.ggml.bos_token_id");
        let eos_id = id("tokenizer.ggml.eos_token_id");
        let add_bos = gguf
            .opt_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(false);

        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (i, t) in (0u32..).zip(tokens.iter()) {
            vocab.entry(t.clone()).or_insert(i);
        }
        let mut merge_pairs = Vec::with_capacity(merges.len());
        for m in &merges {
            let pos = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i)
                .ok_or_else(|| load_err("a tokenizer.ggml.merges entry has no space"))?;
            let (a, b) = m.split_at(pos);
            merge_pairs.push((a.to_string(), b.get(1..).unwrap_or_default().to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merge_pairs)
            .build()
            .map_err(|e| load_err(format!("building the BPE model: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == TYPE_CONTROL || **t == TYPE_USER_DEFINED)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        tokenizer.add_special_tokens(&specials);

        let decoder = byte_decoder();
        let pieces = tokens
            .iter()
            .zip(&types)
            .map(|(text, ty)| match *ty {
                TYPE_NORMAL => text
                    .chars()
                    .flat_map(|c| match decoder.get(&c) {
                        Some(b) => vec![*b],
                        None => c.to_string().into_bytes(),
                    })
                    .collect(),
                TYPE_USER_DEFINED => text.clone().into_bytes(),
                _ => Vec::new(),
            })
            .collect();

        let mut eog: Vec<u32> = Vec::new();
        eog.extend(eos_id);
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            eog.extend(id(key));
        }
        for (i, t) in (0u32..).zip(&tokens) {
            if END_OF_TURN_TEXTS.contains(&t.as_str()) && !eog.contains(&i) {
                eog.push(i);
            }
        }
        for texts in FIM_END_TEXTS {
            let found = texts
                .iter()
                .find_map(|t| tokens.iter().position(|x| x == t))
                .and_then(|i| u32::try_from(i).ok());
            if let Some(i) = found
                && !eog.contains(&i)
            {
                eog.push(i);
            }
        }
        eog.sort_unstable();
        let text_of = |id: Option<u32>| {
            id.and_then(|i| tokens.get(i as usize).cloned())
                .unwrap_or_default()
        };
        Ok(Self {
            tokenizer,
            pieces,
            bos_id,
            eos_id,
            eog,
            add_bos,
            bos_text: text_of(bos_id),
            eos_text: text_of(eos_id),
        })
    }

    /// Tokenizes a rendered prompt: special tokens written in the text are parsed, and BOS
    /// is prepended when the model asks for it and the text does not start with it.
    ///
    /// # Errors
    /// When the tokenizer fails (never with the text in the error).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|_| EngineError::Backend("tokenization failed".into()))?;
        let ids = enc.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if self.add_bos
            && let Some(bos) = self.bos_id
            && ids.first() != Some(&bos)
        {
            out.push(bos);
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// The bytes a token stands for in generated text (empty for control tokens).
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Decodes ids to text (invalid UTF-8 replaced), as the concatenation of pieces.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.piece(i).to_vec()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether `id` ends generation (EOS, or an end-of-turn token).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// BOS token text (for chat templates), empty when none.
    pub fn bos_text(&self) -> &str {
        &self.bos_text
    }

    /// EOS token text (for chat templates), empty when none.
    pub fn eos_text(&self) -> &str {
        &self.eos_text
    }

    /// The end-of-generation ids.
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.eog
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_decoder_is_a_bijection() {
        let d = byte_decoder();
        assert_eq!(d.len(), 256);
        let mut bytes: Vec<u8> = d.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        assert_eq!(d[&'Ġ'], b' ');
        assert_eq!(d[&'Ċ'], b'\n');
        assert_eq!(d[&'a'], b'a');
    }

    #[test]
    fn known_pre_tokenizers_build() {
        for p in ["smollm", "default", "llama-bpe", "qwen2"] {
            pre_tokenizer(p).unwrap();
        }
        assert!(pre_tokenizer("something-else").is_err());
    }
}
