//! Portcullis wire formats, apart from the data plane that uses them.
//!
//! - `inbound`: the formats clients speak (OpenAI Chat Completions,
//!   Anthropic Messages, Gemini generateContent), parsed into the
//!   canonical types of `portcullis_types` and rendered back, streams too.
//! - `providers`: one adapter per provider API, from the canonical request
//!   to the provider's wire format and its answers and streams back.
//! - `sse`, `json`: the codecs both sides share; `error`: the gateway's
//!   error type and its OpenAI-shaped envelope.
//!
//! Nothing here does I/O or knows Pingora or wasmtime (docs/architecture.md,
//! layering): the gateway feeds bytes in and writes what comes out.

pub mod error;
pub mod eventstream;
pub mod inbound;
pub mod json;
pub mod providers;
pub mod sse;
