//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`), rendered
//! with `minijinja` the way Hugging Face `transformers` (and llama-cpp-python) render it:
//! `trim_blocks` and `lstrip_blocks` on, loop controls, `raise_exception`, `tojson`,
//! `strftime_now`, Python string and dict methods (`.strip()`, `.startswith()`,
//! `.items()`, ...) from `minijinja-contrib`'s pycompat, and the context `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`.
//!
//! A model without a template gets ChatML ([`CHATML`]).

use minijinja::{Environment, ErrorKind, Value, context};
use zeroize::Zeroizing;

use super::{ChatMessage, EngineError};

/// The ChatML template, for models that ship none.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

fn raise_exception(_msg: String) -> Result<String, minijinja::Error> {
    // The message is the template's own text, but it may quote the conversation: it is
    // dropped, the caller reports a fixed description.
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        "the chat template raised an exception",
    ))
}

fn strftime_now(format: String) -> String {
    // Only the date parts templates use (Llama 3.x: "%d %b %Y").
    let now = time::OffsetDateTime::now_utc();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let long_month = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let m = usize::from(u8::from(now.month())).saturating_sub(1);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{:02}", now.day())),
            Some('m') => out.push_str(&format!("{:02}", u8::from(now.month()))),
            Some('Y') => out.push_str(&now.year().to_string()),
            Some('b') => out.push_str(month.get(m).copied().unwrap_or_default()),
            Some('B') => out.push_str(long_month.get(m).copied().unwrap_or_default()),
            Some('H') => out.push_str(&format!("{:02}", now.hour())),
            Some('M') => out.push_str(&format!("{:02}", now.minute())),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    /// Compiles `source`. `bos` and `eos` are the token texts templates may use.
    ///
    /// # Errors
    /// When the template does not parse.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| EngineError::Load(format!("the chat template does not parse: {e}")))?;
        Ok(Self {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// Renders a conversation. The error never carries conversation text.
    ///
    /// # Errors
    /// When the template refuses the conversation (`raise_exception`) or fails.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Zeroizing<String>, EngineError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|_| EngineError::Backend("the chat template is missing".into()))?;
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        template
            .render(context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
                tools => Value::from(()),
            })
            .map(Zeroizing::new)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidOperation => EngineError::InvalidRequest {
                    what: "the model's chat template refused the conversation",
                },
                _ => EngineError::InvalidRequest {
                    what: "the model's chat template could not render the conversation",
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_default_system_and_generation_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t.render(&[msg("user", "Hi")], true).unwrap();
        assert_eq!(
            out.as_str(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn system_and_multi_turn() {
        let t = ChatTemplate::new(SMOLLM2, "", "").unwrap();
        let out = t
            .render(
                &[
                    msg("system", "Be brief."),
                    msg("user", "A?"),
                    msg("assistant", "B."),
                    msg("user", "C?"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out.as_str(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\nB.<|im_end|>\n<|im_start|>user\nC?<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t.render(&[msg("user", "A?")], false).unwrap();
        assert!(out.ends_with("A?<|im_end|>\n"));
    }

    #[test]
    fn trim_blocks_pycompat_and_bos() {
        let src = "{{ bos_token }}{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content.strip() | upper }}]\n  {% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let out = t.render(&[msg("user", "  hi  ")], true).unwrap();
        assert_eq!(out.as_str(), "<s>[HI]\n");
    }

    #[test]
    fn raise_exception_is_an_invalid_request_without_text() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('bad role: ' + messages[0].content) }}{% endif %}ok";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let err = t.render(&[msg("system", "SECRET")], true).unwrap_err();
        assert!(matches!(err, EngineError::InvalidRequest { .. }));
        assert!(!err.to_string().contains("SECRET"));
        assert_eq!(t.render(&[msg("user", "x")], true).unwrap().as_str(), "ok");
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let out = t.render(&[msg("user", "x")], true).unwrap();
        assert_eq!(
            out.as_str(),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn strftime() {
        let s = strftime_now("%d %b %Y".into());
        assert_eq!(s.len(), 11);
    }
}
