//! Finding and loading the models in a directory.
//!
//! [`load_dir`] looks (up to four levels deep, skipping hidden entries) for
//! - one `*.gguf` file: a llama-family chat model ([`LlamaChat`]);
//! - one folder with `config.json`, `model.safetensors` and `tokenizer.json` of a
//!   BERT-family model: an embeddings model ([`BertEmbeddings`]).
//!
//! More than one of a kind is an error (point the enclave at a folder with one of each).
//! Model ids: a file whose SHA-256 is that of a default model gets the default's id
//! (`SmolLM2-135M-Instruct`, `all-MiniLM-L6-v2`); otherwise the id is derived from the
//! names ([`super::llama::model_id_from_gguf_path`], [`super::bert::default_id`]), unless
//! given in [`LoadOptions`]. Every file read is listed with its digest, for the model
//! manifest the enclave attests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bert::{BertEmbeddings, EmbeddingOptions, bert_files, is_bert_dir};
use super::llama::{ChatOptions, LlamaChat};
use super::{ChatModel, EmbeddingModel, EngineError};
use crate::models;

/// The default chat model's id.
pub const DEFAULT_CHAT_ID: &str = "SmolLM2-135M-Instruct";
/// The default embeddings model's id.
pub const DEFAULT_EMBEDDINGS_ID: &str = "all-MiniLM-L6-v2";

/// A file a model was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// Path relative to the models directory, `/`-separated.
    pub path: String,
    /// Lowercase hex SHA-256 of the contents.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// How to load the models of a directory.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The chat model.
    pub chat: ChatOptions,
    /// The embeddings model.
    pub embeddings: EmbeddingOptions,
}

/// The models found in a directory.
pub struct LoadedModels {
    /// The chat model, if the directory has one.
    pub chat: Option<Arc<dyn ChatModel>>,
    /// The embeddings model, if the directory has one.
    pub embeddings: Option<Arc<dyn EmbeddingModel>>,
    /// Every file read, with its digest, sorted by path.
    pub files: Vec<ModelFile>,
}

impl std::fmt::Debug for LoadedModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModels")
            .field("chat", &self.chat.as_ref().map(|m| m.id().to_string()))
            .field(
                "embeddings",
                &self.embeddings.as_ref().map(|m| m.id().to_string()),
            )
            .field("files", &self.files)
            .finish()
    }
}

/// Loads the chat and embeddings models found in `dir` with default options.
///
/// # Errors
/// When `dir` has no model, more than one of a kind, or a model fails to load.
pub fn load_dir(dir: &Path) -> Result<LoadedModels, EngineError> {
    load_dir_with(dir, &LoadOptions::default())
}

fn walk(
    dir: &Path,
    depth: usize,
    ggufs: &mut Vec<PathBuf>,
    berts: &mut Vec<PathBuf>,
) -> Result<(), EngineError> {
    if is_bert_dir(dir) {
        berts.push(dir.to_path_buf());
    }
    if depth == 0 {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| EngineError::Load(format!("listing {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, depth - 1, ggufs, berts)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            ggufs.push(path);
        }
    }
    Ok(())
}

fn relative(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn digest(dir: &Path, path: &Path) -> Result<ModelFile, EngineError> {
    let sha256 = models::sha256_file(path).map_err(|e| EngineError::Load(format!("{e:#}")))?;
    let bytes = std::fs::metadata(path)
        .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?
        .len();
    Ok(ModelFile {
        path: relative(dir, path),
        sha256,
        bytes,
    })
}

fn pinned(path_suffix: &str) -> Option<&'static str> {
    models::DEFAULT_FILES
        .iter()
        .find(|f| f.path.ends_with(path_suffix))
        .map(|f| f.sha256)
}

/// Loads the models found in `dir` (see the module documentation).
///
/// # Errors
/// When `dir` has no model, more than one of a kind, or a model fails to load.
pub fn load_dir_with(dir: &Path, options: &LoadOptions) -> Result<LoadedModels, EngineError> {
    if !dir.is_dir() {
        return Err(EngineError::Load(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let (mut ggufs, mut berts) = (Vec::new(), Vec::new());
    walk(dir, 4, &mut ggufs, &mut berts)?;
    if ggufs.len() > 1 {
        return Err(EngineError::Load(format!(
            "{} holds {} GGUF files; keep one chat model per directory",
            dir.display(),
            ggufs.len()
        )));
    }
    if berts.len() > 1 {
        return Err(EngineError::Load(format!(
            "{} holds {} embeddings models; keep one per directory",
            dir.display(),
            berts.len()
        )));
    }
    if ggufs.is_empty() && berts.is_empty() {
        return Err(EngineError::Load(format!(
            "no model in {} (fetch the defaults with `veil-enclave models fetch --dir {}`)",
            dir.display(),
            dir.display()
        )));
    }
    let mut files = Vec::new();
    let mut chat: Option<Arc<dyn ChatModel>> = None;
    if let Some(path) = ggufs.first() {
        let file = digest(dir, path)?;
        let mut opts = options.chat.clone();
        if opts.id.is_none() && pinned(".gguf") == Some(file.sha256.as_str()) {
            opts.id = Some(DEFAULT_CHAT_ID.to_string());
        }
        files.push(file);
        chat = Some(Arc::new(LlamaChat::load(path, &opts)?));
    }
    let mut embeddings: Option<Arc<dyn EmbeddingModel>> = None;
    if let Some(bdir) = berts.first() {
        let mut opts = options.embeddings.clone();
        for f in bert_files(bdir) {
            let file = digest(dir, &bdir.join(&f))?;
            if opts.id.is_none()
                && f == Path::new("model.safetensors")
                && pinned("/model.safetensors") == Some(file.sha256.as_str())
            {
                opts.id = Some(DEFAULT_EMBEDDINGS_ID.to_string());
            }
            files.push(file);
        }
        embeddings = Some(Arc::new(BertEmbeddings::load(bdir, &opts)?));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(LoadedModels {
        chat,
        embeddings,
        files,
    })
}
