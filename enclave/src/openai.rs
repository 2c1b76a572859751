//! The OpenAI-compatible inner API's wire types: errors, and strict parsing of chat and
//! embeddings requests.
//!
//! Parsing never echoes request content: errors name the parameter, never its value.

use serde_json::{Map, Value, json};

use crate::engine::{ChatMessage, Sampling};

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Human-readable; never contains request or response content.
    pub message: String,
    /// `invalid_request_error`, `server_error`, ….
    pub kind: &'static str,
    /// The offending parameter, when there is one.
    pub param: Option<String>,
    /// A stable machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>, code: &'static str) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            code: Some(code),
        }
    }

    /// Any status, type and code.
    pub fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: Some(code),
        }
    }

    /// The JSON body.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        let v = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        v.to_string().into_bytes()
    }
}

/// Token usage, as OpenAI reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

impl Usage {
    /// The `usage` object.
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// Parameters of a chat request that every engine honours, parsed and checked.
#[derive(Debug, Clone)]
pub struct ChatParams {
    /// The requested model.
    pub model: String,
    /// The messages.
    pub messages: Vec<ChatMessage>,
    /// `max_completion_tokens` or `max_tokens`, if given.
    pub max_tokens: Option<u32>,
    /// Sampling.
    pub sampling: Sampling,
    /// Stop sequences (at most 4).
    pub stop: Vec<String>,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Parameters only some engines support (tools, reasoning…), by name; the built-in
    /// engine refuses them, the upstream engine passes them through.
    pub extensions: Vec<String>,
}

/// Chat parameters accepted and honoured by every engine.
const CHAT_CORE: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "user",
    "store",
    "metadata",
    "response_format",
    "frequency_penalty",
    "presence_penalty",
    "logprobs",
    "parallel_tool_calls",
];

/// Parameters passed through to engines that support them.
const CHAT_EXTENSIONS: &[&str] = &[
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "reasoning_effort",
    "reasoning",
    "top_logprobs",
    "logit_bias",
    "modalities",
    "audio",
    "prediction",
    "service_tier",
    "web_search_options",
    "verbosity",
];

fn obj(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!(
                "the request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
            None,
            "invalid_json",
        )
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid(
            "the request body must be a JSON object",
            None,
            "invalid_json",
        )),
    }
}

fn wrong_type(param: &str, expected: &str) -> ApiError {
    ApiError::invalid(
        format!("'{param}' must be {expected}"),
        Some(param),
        "invalid_type",
    )
}

fn unsupported(param: &str) -> ApiError {
    ApiError::invalid(
        format!("unsupported parameter: '{param}' is not supported by this server"),
        Some(param),
        "unsupported_parameter",
    )
}

fn number(m: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let x = n.as_f64().ok_or_else(|| wrong_type(key, "a number"))?;
            if !(lo..=hi).contains(&x) {
                return Err(ApiError::invalid(
                    format!("'{key}' must be between {lo} and {hi}"),
                    Some(key),
                    "invalid_value",
                ));
            }
            Ok(Some(x))
        }
        Some(_) => Err(wrong_type(key, "a number")),
    }
}

fn uint(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong_type(key, "a non-negative integer")),
        Some(_) => Err(wrong_type(key, "a non-negative integer")),
    }
}

fn boolean(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong_type(key, "a boolean")),
    }
}

fn model(m: &Map<String, Value>) -> Result<String, ApiError> {
    match m.get("model") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::invalid(
            "you must provide a model parameter",
            Some("model"),
            "missing_required_parameter",
        )),
        Some(_) => Err(wrong_type("model", "a non-empty string")),
    }
}

fn content_text(v: &Value, i: usize) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str);
                match (kind, p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{param}[{j}]: only text content parts are supported"),
                            Some(&param),
                            "unsupported_content",
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(wrong_type(&param, "a string or an array of content parts")),
    }
}

fn messages(m: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(list) = m.get("messages") else {
        return Err(ApiError::invalid(
            "you must provide a messages parameter",
            Some("messages"),
            "missing_required_parameter",
        ));
    };
    let Value::Array(list) = list else {
        return Err(wrong_type("messages", "an array"));
    };
    if list.is_empty() {
        return Err(ApiError::invalid(
            "'messages' must contain at least one message",
            Some("messages"),
            "empty_array",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, msg) in list.iter().enumerate() {
        let param = format!("messages[{i}]");
        let Value::Object(msg) = msg else {
            return Err(wrong_type(&param, "an object"));
        };
        let role = match msg.get("role").and_then(Value::as_str) {
            Some(r @ ("system" | "user" | "assistant" | "tool")) => r.to_owned(),
            Some("developer") => "system".to_owned(),
            _ => {
                return Err(ApiError::invalid(
                    format!("{param}.role must be one of system, developer, user, assistant, tool"),
                    Some(&format!("{param}.role")),
                    "invalid_value",
                ));
            }
        };
        let content = content_text(msg.get("content").unwrap_or(&Value::Null), i)?;
        out.push(ChatMessage { role, content });
    }
    Ok(out)
}

fn stop(m: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let list = match m.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for v in a {
                match v {
                    Value::String(s) => out.push(s.clone()),
                    _ => return Err(wrong_type("stop", "a string or an array of strings")),
                }
            }
            out
        }
        Some(_) => return Err(wrong_type("stop", "a string or an array of strings")),
    };
    if list.len() > 4 || list.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "'stop' takes up to 4 non-empty sequences",
            Some("stop"),
            "invalid_value",
        ));
    }
    Ok(list)
}

/// Parses and checks a chat completion request body.
///
/// # Errors
/// An OpenAI-shaped 400 naming the parameter.
pub fn parse_chat(body: &[u8]) -> Result<ChatParams, ApiError> {
    let m = obj(body)?;
    let mut extensions = Vec::new();
    for key in m.keys() {
        if CHAT_EXTENSIONS.contains(&key.as_str()) {
            extensions.push(key.clone());
        } else if !CHAT_CORE.contains(&key.as_str()) {
            return Err(unsupported(key));
        }
    }
    let model = model(&m)?;
    let messages = messages(&m)?;
    let max = |k| uint(&m, k).map(|v| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX)));
    let max_tokens = match (max("max_completion_tokens")?, max("max_tokens")?) {
        (Some(a), _) => Some(a),
        (None, b) => b,
    };
    if max_tokens == Some(0) {
        return Err(ApiError::invalid(
            "max_tokens must be at least 1",
            Some("max_tokens"),
            "invalid_value",
        ));
    }
    let temperature = number(&m, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = number(&m, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    if top_p == 0.0 {
        return Err(ApiError::invalid(
            "'top_p' must be greater than 0",
            Some("top_p"),
            "invalid_value",
        ));
    }
    let seed = match m.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| n.as_i64().map(i64::cast_unsigned))
                .ok_or_else(|| wrong_type("seed", "an integer"))?,
        ),
        Some(_) => return Err(wrong_type("seed", "an integer")),
    };
    let n = uint(&m, "n")?.unwrap_or(1);
    if n != 1 {
        return Err(ApiError::invalid(
            "only n = 1 is supported",
            Some("n"),
            "unsupported_value",
        ));
    }
    for k in ["frequency_penalty", "presence_penalty"] {
        if number(&m, k, -2.0, 2.0)?.is_some_and(|x| x != 0.0) {
            return Err(ApiError::invalid(
                format!("'{k}' other than 0 is not supported"),
                Some(k),
                "unsupported_value",
            ));
        }
    }
    if boolean(&m, "logprobs")? == Some(true) {
        return Err(ApiError::invalid(
            "logprobs are not supported",
            Some("logprobs"),
            "unsupported_value",
        ));
    }
    if let Some(rf) = m.get("response_format")
        && rf.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(ApiError::invalid(
            "only response_format {\"type\": \"text\"} is supported",
            Some("response_format"),
            "unsupported_value",
        ));
    }
    let stream = boolean(&m, "stream")?.unwrap_or(false);
    let include_usage = match m.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => {
            if !stream {
                return Err(ApiError::invalid(
                    "stream_options is only allowed when stream is true",
                    Some("stream_options"),
                    "invalid_value",
                ));
            }
            boolean(o, "include_usage")
                .map_err(|_| wrong_type("stream_options.include_usage", "a boolean"))?
                .unwrap_or(false)
        }
        Some(_) => return Err(wrong_type("stream_options", "an object")),
    };
    Ok(ChatParams {
        model,
        messages,
        max_tokens,
        sampling: Sampling {
            temperature,
            top_p,
            seed: seed.unwrap_or_else(rand::random),
        },
        stop: stop(&m)?,
        stream,
        include_usage,
        extensions,
    })
}

/// How embeddings are encoded in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON arrays of floats.
    Float,
    /// Base64 of little-endian f32.
    Base64,
}

/// A parsed embeddings request.
#[derive(Debug, Clone)]
pub struct EmbedParams {
    /// The requested model.
    pub model: String,
    /// The inputs.
    pub inputs: Vec<String>,
    /// The encoding.
    pub encoding: EncodingFormat,
    /// `dimensions`, if given.
    pub dimensions: Option<u64>,
}

impl Drop for EmbedParams {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.inputs.zeroize();
    }
}

/// Most inputs in one embeddings request.
pub const MAX_EMBED_INPUTS: usize = 2048;

/// Parses and checks an embeddings request body.
///
/// # Errors
/// An OpenAI-shaped 400 naming the parameter.
pub fn parse_embeddings(body: &[u8]) -> Result<EmbedParams, ApiError> {
    let m = obj(body)?;
    for key in m.keys() {
        if !["model", "input", "encoding_format", "dimensions", "user"].contains(&key.as_str()) {
            return Err(unsupported(key));
        }
    }
    let model = model(&m)?;
    let inputs = match m.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut out = Vec::with_capacity(a.len());
            for v in a {
                match v {
                    Value::String(s) => out.push(s.clone()),
                    _ => {
                        return Err(ApiError::invalid(
                            "'input' must be a string or an array of strings (token arrays are not supported)",
                            Some("input"),
                            "invalid_type",
                        ));
                    }
                }
            }
            out
        }
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "you must provide an input parameter",
                Some("input"),
                "missing_required_parameter",
            ));
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "'input' must not be empty",
                Some("input"),
                "empty_array",
            ));
        }
        Some(_) => return Err(wrong_type("input", "a string or an array of strings")),
    };
    if inputs.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::invalid(
            format!("'input' takes at most {MAX_EMBED_INPUTS} items"),
            Some("input"),
            "invalid_value",
        ));
    }
    if inputs.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "'input' items must not be empty",
            Some("input"),
            "invalid_value",
        ));
    }
    let encoding = match m.get("encoding_format") {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(s)) if s == "float" => EncodingFormat::Float,
        Some(Value::String(s)) if s == "base64" => EncodingFormat::Base64,
        Some(_) => {
            return Err(ApiError::invalid(
                "'encoding_format' must be 'float' or 'base64'",
                Some("encoding_format"),
                "invalid_value",
            ));
        }
    };
    Ok(EmbedParams {
        model,
        inputs,
        encoding,
        dimensions: uint(&m, "dimensions")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_parses_the_sdk_shapes() {
        let p = parse_chat(br#"{"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"user","content":"hi"}],"max_completion_tokens":7,"max_tokens":9,"stream":true,"stream_options":{"include_usage":true},"stop":"x","seed":-1,"temperature":0}"#).unwrap();
        assert_eq!(p.model, "m");
        assert_eq!(p.messages[0].role, "system");
        assert_eq!(p.messages[0].content, "ab");
        assert_eq!(p.max_tokens, Some(7));
        assert!(p.stream && p.include_usage);
        assert_eq!(p.stop, vec!["x".to_owned()]);
        assert_eq!(p.sampling.seed, u64::MAX);
        assert!(p.extensions.is_empty());
    }

    #[test]
    fn chat_errors_name_the_parameter_and_never_echo_content() {
        let secret = "CANARY-7f3a";
        for (body, param) in [
            (
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"{secret}"}}],"bogus":1}}"#
                ),
                Some("bogus"),
            ),
            (
                format!(r#"{{"model":"m","messages":[{{"role":"{secret}","content":"x"}}]}}"#),
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"m","messages":[]}"#.to_owned(),
                Some("messages"),
            ),
            (
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"{secret}"}}],"n":2}}"#
                ),
                Some("n"),
            ),
            (
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"{secret}"}}],"temperature":3}}"#
                ),
                Some("temperature"),
            ),
            (
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{secret}"#),
                None,
            ),
            (
                format!(r#"{{"messages":[{{"role":"user","content":"{secret}"}}]}}"#),
                Some("model"),
            ),
        ] {
            let e = parse_chat(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.param.as_deref(), param, "{body}");
            let json = String::from_utf8(e.to_json()).unwrap();
            assert!(!json.contains(secret), "{json}");
            let v: Value = serde_json::from_str(&json).unwrap();
            for k in ["message", "type", "param", "code"] {
                assert!(v["error"].get(k).is_some(), "{k} missing in {json}");
            }
        }
    }

    #[test]
    fn extensions_are_recognized() {
        let p =
            parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[]}"#)
                .unwrap();
        assert_eq!(p.extensions, vec!["tools".to_owned()]);
    }

    #[test]
    fn embeddings_parse() {
        let p = parse_embeddings(br#"{"model":"e","input":["a","b"],"encoding_format":"base64"}"#)
            .unwrap();
        assert_eq!(p.inputs.len(), 2);
        assert_eq!(p.encoding, EncodingFormat::Base64);
        assert_eq!(
            parse_embeddings(br#"{"model":"e","input":[1,2]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("input")
        );
        assert_eq!(
            parse_embeddings(br#"{"model":"e","input":[]}"#)
                .unwrap_err()
                .code,
            Some("empty_array")
        );
    }
}
