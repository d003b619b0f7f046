//! Inbound formats: what clients speak to the gateway.
//!
//! A proxy accepts the OpenAI format, and optionally the Anthropic Messages
//! and Gemini formats. Each is parsed into the canonical request once, and
//! canonical responses, chunks and errors are rendered back in the client's
//! format, so every inbound format reaches every provider.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use bytes::BytesMut;
use portcullis_types::{ChatChunk, FinishReason, Usage};

use crate::error::GatewayError;

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
