//! Rendering a policy's direct response (a cache hit, a canned answer) as
//! the client expects it: in its inbound format, and as a stream of
//! server-sent events when it asked for `stream: true`.

use bytes::BytesMut;
use portcullis_types::{ChatChunk, ChatRequest, ChatResponse};

use crate::config::InboundKind;
use crate::inbound::{self, StreamEncoder};

/// The whole stream body for `resp`, as the client's format streams it.
pub fn stream_body(format: InboundKind, req: &ChatRequest, resp: &ChatResponse) -> Vec<u8> {
    let mut encoder: Box<dyn StreamEncoder> = match format {
        InboundKind::Openai => Box::new(inbound::openai::OpenAiStreamEncoder::new(
            req.wants_stream_usage(),
        )),
        InboundKind::Anthropic => {
            Box::new(inbound::anthropic::AnthropicStreamEncoder::new(&req.model))
        }
        InboundKind::Gemini => Box::new(inbound::gemini::GeminiStreamEncoder::new(&req.model)),
    };
    let template = ChatChunk::new(resp.id.clone(), resp.model.clone(), resp.created);
    let mut out = BytesMut::new();
    let mut finish = None;
    for c in super::response_to_chunks(resp, &template) {
        if let Some(fr) = c.choices.iter().find_map(|c| c.finish_reason) {
            finish = Some(fr);
        }
        encoder.chunk(&c, &mut out);
    }
    encoder.finish(resp.usage.as_ref(), finish, &mut out);
    out.to_vec()
}

/// The non-streamed body for `resp` in the client's format.
pub fn json_body(format: InboundKind, resp: &ChatResponse) -> Vec<u8> {
    match format {
        InboundKind::Openai => serde_json::to_vec(resp).unwrap_or_default(),
        InboundKind::Anthropic => inbound::anthropic::render_response(resp),
        InboundKind::Gemini => inbound::gemini::render_response(resp),
    }
}
