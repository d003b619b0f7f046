//! Inbound formats: what clients speak to the gateway.
//!
//! A proxy accepts the OpenAI format, and optionally the Anthropic Messages
//! and Gemini formats. Each is parsed into the canonical request once, and
//! canonical responses, chunks and errors are rendered back in the client's
//! format, so every inbound format reaches every provider.

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod responses;

use bytes::BytesMut;
use portcullis_types::gateway_config::{InboundKind, Resource};
use portcullis_types::{ChatChunk, ChatRequest, ChatResponse, FinishReason, Usage};

use crate::error::GatewayError;

/// Longest model name accepted from a client.
pub const MAX_MODEL_BYTES: usize = 256;

/// Checks a model name from a client before anything routes on it. Model
/// names reach provider URLs (Azure deployments, Gemini and Bedrock paths),
/// where adapters encode them as one path segment; refusing what no real
/// model is called (whitespace, control characters, URL syntax, `.`/`..`
/// segments) here makes such a request a 400 for the client instead of a
/// failed upstream call that would count against the route's health.
pub fn check_model(model: &str) -> Result<(), GatewayError> {
    if model.len() > MAX_MODEL_BYTES {
        return Err(GatewayError::invalid_param(
            "model",
            format!("The model name is longer than {MAX_MODEL_BYTES} bytes."),
        ));
    }
    if let Some(c) = model
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '%' | '?' | '#' | '\\'))
    {
        return Err(GatewayError::invalid_param(
            "model",
            format!("The model name contains {c:?}, which no model name may contain."),
        ));
    }
    if model.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(GatewayError::invalid_param(
            "model",
            "The model name may not contain `.` or `..` path segments.",
        ));
    }
    Ok(())
}

/// What a chat endpoint's path says about the request. Gemini puts the
/// model and the streaming switch in the path
/// (`/models/{model}:streamGenerateContent`); the other formats carry both
/// in the body and leave this empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatPath {
    pub model: Option<String>,
    pub stream: bool,
}

/// One client format, everything the exchange needs of it: which path is
/// its chat endpoint, the request parsed into the canonical type, and the
/// answer, stream and errors rendered back. The gateway picks the format
/// once (`client_format`) and never matches on the kind again.
pub trait ClientFormat: Sync {
    fn kind(&self) -> InboundKind;
    /// The resource its chat endpoint is, as proxies' `resources` and key
    /// scopes name it.
    fn resource(&self) -> Resource {
        Resource::ChatCompletions
    }
    /// Whether its answers are the canonical (Chat Completions) JSON, so
    /// an OpenAI-format provider's answer can be forwarded as it came.
    fn answers_canonical(&self) -> bool {
        false
    }
    /// The request's path facts when `rest` (the path after the proxy's
    /// base path and API version) is this format's chat endpoint.
    fn chat_path(&self, rest: &str) -> Option<ChatPath>;
    /// The body as a canonical request; `path` comes from `chat_path`.
    fn parse(&self, body: &[u8], path: &ChatPath) -> Result<ChatRequest, GatewayError>;
    /// A whole (non-streamed) answer in this format.
    fn render_response(&self, resp: &ChatResponse) -> Vec<u8>;
    /// An error in this format's envelope.
    fn render_error(&self, err: &GatewayError) -> Vec<u8>;
    /// The encoder for a streamed answer to `req`.
    fn stream_encoder(&self, req: &ChatRequest) -> Box<dyn StreamEncoder>;
}

/// The format a client of the given kind speaks at its chat endpoint.
/// OpenAI clients have a second one, the Responses API
/// ([`responses::Responses`]), which the gateway offers beside it.
pub fn client_format(kind: InboundKind) -> &'static dyn ClientFormat {
    match kind {
        InboundKind::Openai => &openai::OpenAi,
        InboundKind::Anthropic => &anthropic::Anthropic,
        InboundKind::Gemini => &gemini::Gemini,
    }
}

/// Renders canonical chunks as the client's stream format.
pub trait StreamEncoder: Send {
    /// Appends the bytes for one chunk. Chunks reach the encoder without
    /// usage: the core collects usage and hands the total to `finish`.
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut);
    /// Appends the end of a stream that completed: `usage` is the request's
    /// total (if tracked), `finish_reason` the last one seen.
    fn finish(
        &mut self,
        usage: Option<&Usage>,
        finish_reason: Option<FinishReason>,
        out: &mut BytesMut,
    );
    /// Appends an error event for a failure after the stream started.
    fn error(&mut self, err: &GatewayError, out: &mut BytesMut);
}

/// Canonical stream chunks for the stream encoders' tests.
#[cfg(test)]
pub(crate) mod test_chunks {
    use portcullis_types::{
        ChatChunk, ChunkChoice, Delta, FinishReason, FunctionCallDelta, ToolCallDelta,
    };

    /// A chunk of choice 0.
    pub fn chunk(delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
        let mut c = ChatChunk::new("chatcmpl-1", "gpt-5-mini", 1);
        c.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
            logprobs: None,
        });
        c
    }

    /// A text delta.
    pub fn text(t: &str) -> ChatChunk {
        chunk(
            Delta {
                content: Some(t.into()),
                ..Default::default()
            },
            None,
        )
    }

    /// A tool-call delta (`id` and `name` open a call).
    pub fn tool(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ChatChunk {
        chunk(
            Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index,
                    id: id.map(Into::into),
                    kind: id.map(|_| "function".into()),
                    function: Some(FunctionCallDelta {
                        name: name.map(Into::into),
                        arguments: Some(args.into()),
                    }),
                }]),
                ..Default::default()
            },
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_claims_only_its_own_chat_path() {
        let kinds = [
            InboundKind::Openai,
            InboundKind::Anthropic,
            InboundKind::Gemini,
        ];
        let paths = [
            ("/chat/completions", Some(InboundKind::Openai), None, false),
            ("/messages", Some(InboundKind::Anthropic), None, false),
            (
                "/models/gemini-2.5-flash:generateContent",
                Some(InboundKind::Gemini),
                Some("gemini-2.5-flash"),
                false,
            ),
            (
                "/models/a:b:streamGenerateContent",
                Some(InboundKind::Gemini),
                Some("a:b"),
                true,
            ),
            ("/models/gemini-2.5-flash", None, None, false),
            ("/models/x:countTokens", None, None, false),
            ("/embeddings", None, None, false),
            ("/chat/completions/x", None, None, false),
        ];
        for kind in kinds {
            let format = client_format(kind);
            assert_eq!(format.kind(), kind);
            for (rest, owner, model, stream) in paths {
                let got = format.chat_path(rest);
                if owner == Some(kind) {
                    let path = got.unwrap_or_else(|| panic!("{kind:?} {rest}"));
                    assert_eq!(path.model.as_deref(), model, "{rest}");
                    assert_eq!(path.stream, stream, "{rest}");
                } else {
                    assert_eq!(got, None, "{kind:?} {rest}");
                }
            }
        }
    }

    #[test]
    fn the_responses_format_is_openai_at_its_own_resource() {
        let r = &responses::Responses;
        assert_eq!(r.chat_path("/responses"), Some(ChatPath::default()));
        for other in ["/chat/completions", "/responses/resp_1", "/messages"] {
            assert_eq!(r.chat_path(other), None, "{other}");
        }
        assert_eq!(
            (r.kind(), r.resource()),
            (InboundKind::Openai, Resource::Responses)
        );
        // Its answers are not Chat Completions JSON: an OpenAI provider's
        // answer is never forwarded to it as it came.
        assert!(!r.answers_canonical() && client_format(InboundKind::Openai).answers_canonical());
    }

    #[test]
    fn a_gemini_request_without_its_path_is_refused_not_guessed() {
        let body = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
        let gemini = client_format(InboundKind::Gemini);
        let e = gemini.parse(body, &ChatPath::default()).unwrap_err();
        assert_eq!(e.status, 400);
        let path = gemini.chat_path("/models/m:streamGenerateContent").unwrap();
        let req = gemini.parse(body, &path).unwrap();
        assert_eq!((req.model.as_str(), req.stream), ("m", true));
    }

    #[test]
    fn model_names_that_could_reach_other_endpoints_are_refused() {
        for good in [
            "gpt-4o",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "models/gemini-2.5-flash",
            "meta-llama/Llama-3.3-70B-Instruct",
            "my..model",
        ] {
            assert!(check_model(good).is_ok(), "{good}");
        }
        for bad in [
            "../../v1/files",
            "gpt-4o/../../x",
            "..",
            "gpt 4o",
            "gpt\t4o",
            "a\u{0}b",
            "x%2F..",
            "x?y=1",
            "x#y",
            "a\\..\\b",
        ] {
            let e = check_model(bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            assert_eq!(e.body().param.as_deref(), Some("model"), "{bad}");
        }
        assert!(check_model(&"m".repeat(MAX_MODEL_BYTES)).is_ok());
        assert!(check_model(&"m".repeat(MAX_MODEL_BYTES + 1)).is_err());
    }
}
