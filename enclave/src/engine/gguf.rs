//! Reading a GGUF file: its metadata (through candle's parser) and the raw bytes of its
//! tensors.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};

use super::EngineError;

/// A GGUF file's header: metadata and tensor directory.
#[derive(Debug)]
pub struct GgufFile {
    content: Content,
}

fn load_err(what: impl std::fmt::Display) -> EngineError {
    EngineError::Load(what.to_string())
}

impl GgufFile {
    /// Parses the header of the GGUF file at `path`.
    ///
    /// # Errors
    /// When the file cannot be read or is not GGUF.
    pub fn open(path: &Path) -> Result<(Self, std::fs::File), EngineError> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| load_err(format!("opening {}: {e}", path.display())))?;
        let content = Content::read(&mut file).map_err(|e| {
            load_err(format!(
                "{} is not a readable GGUF file: {e}",
                path.display()
            ))
        })?;
        Ok((Self { content }, file))
    }

    /// The candle header.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// All metadata.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A required string.
    ///
    /// # Errors
    /// When missing or not a string.
    pub fn string(&self, key: &str) -> Result<&str, EngineError> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(load_err(format!("GGUF metadata {key} is not a string"))),
            None => Err(load_err(format!("GGUF metadata {key} is missing"))),
        }
    }

    /// An optional string.
    pub fn opt_string(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// An optional unsigned integer (any integer type).
    pub fn opt_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| match v {
            Value::U8(x) => Some(u64::from(*x)),
            Value::U16(x) => Some(u64::from(*x)),
            Value::U32(x) => Some(u64::from(*x)),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        })
    }

    /// A required unsigned integer, as `usize`.
    ///
    /// # Errors
    /// When missing or not an integer.
    pub fn usize(&self, key: &str) -> Result<usize, EngineError> {
        self.opt_u64(key)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| load_err(format!("GGUF metadata {key} is missing or not an integer")))
    }

    /// An optional float.
    pub fn opt_f32(&self, key: &str) -> Option<f32> {
        match self.get(key) {
            Some(Value::F32(x)) => Some(*x),
            #[allow(clippy::cast_possible_truncation)]
            Some(Value::F64(x)) => Some(*x as f32),
            _ => None,
        }
    }

    /// An optional bool.
    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        match self.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// An optional array.
    pub fn opt_array(&self, key: &str) -> Option<&[Value]> {
        match self.get(key) {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        }
    }

    /// A tensor's type and ggml dimensions (`ne0` first: the row length).
    pub fn tensor_info(&self, name: &str) -> Option<(GgmlDType, Vec<usize>)> {
        self.content.tensor_infos.get(name).map(|t| {
            let mut dims = t.shape.dims().to_vec();
            dims.reverse();
            (t.ggml_dtype, dims)
        })
    }

    /// Reads a tensor's raw bytes (its blocks, exactly as stored).
    ///
    /// # Errors
    /// When the tensor is missing or the file cannot be read.
    pub fn read_raw<R: Read + Seek>(
        &self,
        reader: &mut R,
        name: &str,
    ) -> Result<(GgmlDType, Vec<usize>, Vec<u8>), EngineError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| load_err(format!("tensor {name} is missing")))?;
        let elems = info.shape.elem_count();
        let block = info.ggml_dtype.block_size();
        if block == 0 || elems % block != 0 {
            return Err(load_err(format!("tensor {name} has a partial block")));
        }
        let size = elems / block * info.ggml_dtype.type_size();
        let mut data = vec![0u8; size];
        reader
            .seek(SeekFrom::Start(
                self.content.tensor_data_offset + info.offset,
            ))
            .and_then(|_| reader.read_exact(&mut data))
            .map_err(|e| load_err(format!("reading tensor {name}: {e}")))?;
        let mut dims = info.shape.dims().to_vec();
        dims.reverse();
        Ok((info.ggml_dtype, dims, data))
    }
}
