//! Rendering a policy's direct response (a cache hit, a canned answer) as
//! the client expects it: in its inbound format, and as a stream of
//! server-sent events when it asked for `stream: true`.

use bytes::BytesMut;
use portcullis_types::{ChatChunk, ChatRequest, ChatResponse};

use crate::inbound::ClientFormat;

/// The whole stream body for `resp`, as the client's format streams it.
pub fn stream_body(format: &dyn ClientFormat, req: &ChatRequest, resp: &ChatResponse) -> Vec<u8> {
    let mut encoder = format.stream_encoder(req);
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
