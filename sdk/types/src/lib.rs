//! Wire types shared by every Portcullis service and the policy SDK.
//!
//! The gateway's canonical request, response, stream chunk and usage types
//! live here. They follow the OpenAI Chat Completions shape (the de-facto
//! lingua franca of LLM clients), with typed fields for everything the
//! gateway reads or translates and an `extra` map that carries any other
//! parameter through untouched, so a new OpenAI parameter never needs a
//! gateway release to pass.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod gateway_config;
pub mod managed;
pub mod models;
pub mod names;
pub mod policy;
pub mod pricing;
pub mod proxy_rules;
pub mod usage;

pub use chat::*;
pub use completions::*;
pub use embeddings::*;
pub use error::{ErrorBody, ErrorEnvelope};
pub use models::{ModelEntry, ModelList};
pub use usage::{CompletionTokensDetails, PromptTokensDetails, Usage};
