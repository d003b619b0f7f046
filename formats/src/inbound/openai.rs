//! The OpenAI inbound format: chat completions and embeddings as OpenAI
//! clients send them.

use bytes::BytesMut;
use portcullis_types::gateway_config::InboundKind;
use portcullis_types::{
    ChatChunk, ChatRequest, ChatResponse, CompletionsRequest, EmbeddingsRequest, FinishReason,
    ModerationsRequest, Usage,
};

use super::{ChatPath, ClientFormat, StreamEncoder};
use crate::error::GatewayError;
use crate::sse;

/// Parses a JSON body, naming the field that is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    crate::json::parse(body).map_err(|e| {
        let syntax = e.is_syntax();
        let (path, inner) = (e.path, e.inner);
        if syntax {
            GatewayError::invalid_request(format!(
                "We could not parse the JSON body of your request: {inner}"
            ))
        } else if path == "." {
            GatewayError::invalid_request(format!("Invalid request body: {inner}"))
        } else {
            GatewayError::invalid_param(
                path.clone(),
                format!("Invalid value for '{path}': {inner}"),
            )
        }
    })
}

/// The OpenAI Chat Completions format, the canonical one: requests and
/// answers are the canonical types' own JSON.
pub struct OpenAi;

impl ClientFormat for OpenAi {
    fn kind(&self) -> InboundKind {
        InboundKind::Openai
    }

    fn answers_canonical(&self) -> bool {
        true
    }

    fn chat_path(&self, rest: &str) -> Option<ChatPath> {
        (rest == "/chat/completions").then(ChatPath::default)
    }

    fn parse(&self, body: &[u8], _path: &ChatPath) -> Result<ChatRequest, GatewayError> {
        parse_chat(body)
    }

    fn render_response(&self, resp: &ChatResponse) -> Vec<u8> {
        // Serialising a typed value with string keys cannot fail.
        serde_json::to_vec(resp).unwrap_or_default()
    }

    fn render_error(&self, err: &GatewayError) -> Vec<u8> {
        err.to_openai_json()
    }

    fn stream_encoder(&self, req: &ChatRequest) -> Box<dyn StreamEncoder> {
        Box::new(OpenAiStreamEncoder::new(req.wants_stream_usage()))
    }
}

/// Parses and checks a chat completion request.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let req: ChatRequest = parse_json(body)?;
    if req.messages.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "'messages' must contain at least one message.",
        ));
    }
    if req.n == Some(0) {
        return Err(GatewayError::invalid_param("n", "'n' must be at least 1."));
    }
    Ok(req)
}

/// Parses and checks an embeddings request.
pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, GatewayError> {
    parse_json(body)
}

/// Parses a legacy text completions request (forwarded, not translated).
pub fn parse_completions(body: &[u8]) -> Result<CompletionsRequest, GatewayError> {
    parse_json(body)
}

/// Parses a moderations request (forwarded, not translated).
pub fn parse_moderations(body: &[u8]) -> Result<ModerationsRequest, GatewayError> {
    parse_json(body)
}

/// Streams canonical chunks as OpenAI SSE.
pub struct OpenAiStreamEncoder {
    show_usage: bool,
    last: Option<(String, String, u64)>,
}

impl OpenAiStreamEncoder {
    /// `show_usage`: whether the client asked for the usage chunk.
    pub fn new(show_usage: bool) -> Self {
        OpenAiStreamEncoder {
            show_usage,
            last: None,
        }
    }
}

impl StreamEncoder for OpenAiStreamEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if self.last.is_none() {
            self.last = Some((chunk.id.clone(), chunk.model.clone(), chunk.created));
        }
        if let Ok(json) = serde_json::to_vec(chunk) {
            sse::write_data(out, &json);
        }
    }

    fn finish(&mut self, usage: Option<&Usage>, _finish: Option<FinishReason>, out: &mut BytesMut) {
        if self.show_usage {
            if let Some(usage) = usage {
                let (id, model, created) = self.last.clone().unwrap_or_default();
                let mut c = ChatChunk::new(id, model, created);
                c.usage = Some(usage.clone());
                if let Ok(json) = serde_json::to_vec(&c) {
                    sse::write_data(out, &json);
                }
            }
        }
        sse::write_data(out, b"[DONE]");
    }

    fn error(&mut self, err: &GatewayError, out: &mut BytesMut) {
        // OpenAI reports errors inside a stream as a data event carrying the
        // error envelope; the stream then ends without [DONE].
        sse::write_data(out, &err.to_openai_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    #[test]
    fn bad_field_is_named() {
        let e = parse_chat(br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = parse_chat(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse_chat(b"{not json").unwrap_err();
        assert!(e.message.contains("parse the JSON"));
        let e = parse_chat(br#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert!(e.message.contains("model"), "{}", e.message);
    }

    #[test]
    fn usage_chunk_only_when_asked() {
        let chunk: ChatChunk = serde_json::from_str(r#"{"id":"c","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#).unwrap();
        for show in [false, true] {
            let mut enc = OpenAiStreamEncoder::new(show);
            let mut out = BytesMut::new();
            enc.chunk(&chunk, &mut out);
            enc.finish(Some(&Usage::new(3, 1)), Some(FinishReason::Stop), &mut out);
            let mut events = Vec::new();
            SseParser::default().feed(&out, &mut events).unwrap();
            assert_eq!(events.last().unwrap().data, "[DONE]");
            assert_eq!(events.len(), if show { 3 } else { 2 });
            if show {
                let u: ChatChunk = serde_json::from_str(&events[1].data).unwrap();
                assert_eq!(u.usage.unwrap().total_tokens, 4);
                assert!(u.choices.is_empty());
                assert_eq!(u.id, "c");
            }
        }
    }
}
