//! OpenAI's legacy text completions and moderations requests. The gateway
//! forwards both to OpenAI-format providers without translating them (the
//! legacy API's raw prompt continuation, `suffix`, `echo`, `logprobs` and
//! `best_of` have no chat equivalent), so only what it reads is typed: the
//! model it routes by, the texts policies see, and whether it streams.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::EmbeddingInput;

/// A `POST /completions` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionsRequest {
    pub model: String,
    /// One text, several, or token ids: the same shapes as an embeddings
    /// input.
    pub prompt: EmbeddingInput,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Everything else (`suffix`, `echo`, `logprobs`, `stream_options`,
    /// ...), passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CompletionsRequest {
    /// Whether the client asked for the usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.extra
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// A `POST /moderations` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationsRequest {
    /// Optional: OpenAI picks its latest moderation model without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A text, texts, or multimodal parts (`{"type":"text"}`,
    /// `{"type":"image_url"}`): kept as sent.
    pub input: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The model a moderations request without one is routed as (OpenAI's
/// default).
pub const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";

impl ModerationsRequest {
    /// The model to route by.
    pub fn routed_model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODERATION_MODEL)
    }

    /// The input's texts, in order (image parts have none).
    pub fn texts(&self) -> Vec<&str> {
        match &self.input {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| {
                    i.as_str().or_else(|| {
                        (i.get("type").and_then(Value::as_str) == Some("text"))
                            .then(|| i.get("text").and_then(Value::as_str))
                            .flatten()
                    })
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_keep_what_they_do_not_type() {
        let r: CompletionsRequest = serde_json::from_str(
            r#"{"model":"m","prompt":["a","b"],"suffix":"z","echo":true,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(r.prompt.texts(), Some(vec!["a", "b"]));
        assert!(r.stream && r.wants_stream_usage());
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["suffix"], "z");
        assert_eq!(back["echo"], true);
    }

    #[test]
    fn moderation_texts_skip_images() {
        let r: ModerationsRequest = serde_json::from_str(
            r#"{"input":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}"#,
        )
        .unwrap();
        assert_eq!(r.texts(), vec!["hi"]);
        assert_eq!(r.routed_model(), DEFAULT_MODERATION_MODEL);
    }
}
