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

#[cfg(test)]
mod tests {
    use super::*;

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
