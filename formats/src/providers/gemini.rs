//! Google Gemini (Generative Language API, `v1beta`) adapter.
//!
//! Chat goes to `models/{model}:generateContent`, or
//! `models/{model}:streamGenerateContent?alt=sse` for streams (without
//! `alt=sse` Gemini streams one JSON array, not SSE). The key travels in
//! the `x-goog-api-key` header. Embeddings go to
//! `models/{model}:batchEmbedContents`.
//!
//! The Gemini wire types live here too, so the inbound Gemini format
//! (`crate::inbound::gemini`) parses and renders the same structs.
//!
//! Gemini quirks this module deals with:
//! - roles are `user` and `model`; system prompts go to `systemInstruction`,
//!   and tool results are `functionResponse` parts of a `user` turn that name
//!   the function (not a call id);
//! - a function call is never streamed in pieces: it arrives whole in one
//!   chunk, and there are no call ids, so the adapter makes them up;
//! - a stream has no terminator event: the chunk carrying `finishReason` is
//!   the last one, and every chunk repeats the cumulative `usageMetadata`;
//! - `candidatesTokenCount` leaves out the thinking tokens
//!   (`thoughtsTokenCount`), which are billed as output.

use std::collections::{HashMap, HashSet};

use portcullis_types::usage::{CompletionTokensDetails, PromptTokensDetails};
use portcullis_types::{self as types, ChatChunk, ChatRequest, ChatResponse, Role, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Provider, ProviderKind, ProviderSettings, StreamDecoder, StreamEvent, UpstreamCall,
    UpstreamRequest, parse_upstream_json, unix_now,
};
use crate::error::GatewayError;
use crate::sse::SseParser;

// ---------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------
//
// Gemini's REST surface is protobuf JSON: field names are lowerCamelCase, but
// the original snake_case names are accepted too (many curl examples send
// `system_instruction`), hence the aliases. Unknown fields are ignored when
// parsing, so new response fields never break the adapter.

/// A `GenerateContentRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    #[serde(default)]
    pub contents: Vec<Content>,
    #[serde(
        default,
        alias = "system_instruction",
        skip_serializing_if = "Option::is_none"
    )]
    pub system_instruction: Option<Content>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(
        default,
        alias = "tool_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub tool_config: Option<ToolConfig>,
    #[serde(
        default,
        alias = "generation_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub generation_config: Option<GenerationConfig>,
}

/// A turn of the conversation (`role` is `user` or `model`), or the system
/// instruction (no role).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// One part of a turn. Exactly one of the data fields is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(
        default,
        alias = "inline_data",
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_data: Option<Blob>,
    #[serde(default, alias = "file_data", skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    #[serde(
        default,
        alias = "function_call",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_call: Option<FunctionCall>,
    #[serde(
        default,
        alias = "function_response",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_response: Option<FunctionResponse>,
    /// Set on thought-summary parts (only sent when the request asked for
    /// `includeThoughts`); they are not part of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    #[serde(
        default,
        alias = "thought_signature",
        skip_serializing_if = "Option::is_none"
    )]
    pub thought_signature: Option<String>,
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Part {
            text: Some(text.into()),
            ..Default::default()
        }
    }

    /// Whether this is a thought summary rather than answer text.
    pub fn is_thought(&self) -> bool {
        self.thought == Some(true)
    }
}

/// Inline bytes (`inlineData`), base64 encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    #[serde(alias = "mime_type")]
    pub mime_type: String,
    pub data: String,
}

/// A file referenced by URI (`fileData`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(default, alias = "mime_type", skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(alias = "file_uri")]
    pub file_uri: String,
}

/// A call the model makes (`functionCall`). `args` is a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// The result of a call (`functionResponse`), matched to it by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub response: Value,
}

/// A tool. Only function declarations are translated; built-in tools
/// (`googleSearch`, `codeExecution`, ...) have no equivalent elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    #[serde(
        default,
        alias = "function_declarations",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_declarations: Option<Vec<FunctionDeclaration>>,
}

/// A function the model may call. `parameters` takes Gemini's OpenAPI
/// subset (`type: "OBJECT"`, no `additionalProperties`); the newer
/// `parametersJsonSchema` takes plain JSON Schema. They are exclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(
        default,
        alias = "parameters_json_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub parameters_json_schema: Option<Value>,
}

/// `toolConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(
        default,
        alias = "function_calling_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_calling_config: Option<FunctionCallingConfig>,
}

/// `functionCallingConfig`: `mode` is `AUTO`, `ANY`, `NONE` or `VALIDATED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(
        default,
        alias = "allowed_function_names",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_function_names: Option<Vec<String>>,
}

/// `generationConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(
        default,
        alias = "stop_sequences",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(
        default,
        alias = "response_mime_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_mime_type: Option<String>,
    /// OpenAPI-subset schema (upper-case `type` names).
    #[serde(
        default,
        alias = "response_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_schema: Option<Value>,
    /// Plain JSON Schema; exclusive with `responseSchema`.
    #[serde(
        default,
        alias = "response_json_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_json_schema: Option<Value>,
    #[serde(
        default,
        alias = "candidate_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub candidate_count: Option<u32>,
    #[serde(
        default,
        alias = "max_output_tokens",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, alias = "top_p", skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, alias = "top_k", skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(
        default,
        alias = "presence_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub presence_penalty: Option<f64>,
    #[serde(
        default,
        alias = "frequency_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub frequency_penalty: Option<f64>,
}

/// A `GenerateContentResponse`: the whole answer, or one stream chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

/// One candidate answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Omitted by Gemini for candidate 0 at times (protobuf JSON drops
    /// default values), so readers fall back to the position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// Why the prompt itself was blocked, if it was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
}

/// `usageMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_token_count: Option<u64>,
    /// Part of `promptTokenCount` served from the context cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u64>,
    /// Thinking tokens: billed as output, not in `candidatesTokenCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    /// Tokens of tool results fed back by built-in tools; only in the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_prompt_token_count: Option<u64>,
}

impl UsageMetadata {
    /// Canonical usage: completion tokens include the thinking tokens, which
    /// are also reported as `reasoning_tokens`; cached tokens are a part of
    /// the prompt tokens, as in OpenAI's shape.
    pub fn into_usage(&self) -> Usage {
        let prompt = self.prompt_token_count.unwrap_or(0);
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        let completion = self
            .candidates_token_count
            .unwrap_or(0)
            .saturating_add(thoughts);
        let mut usage = Usage::new(prompt, completion);
        if let Some(total) = self.total_token_count {
            usage.total_tokens = total;
        }
        if let Some(cached) = self.cached_content_token_count.filter(|c| *c > 0) {
            usage.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: Some(cached),
                audio_tokens: None,
            });
        }
        if thoughts > 0 {
            usage.completion_tokens_details = Some(CompletionTokensDetails {
                reasoning_tokens: Some(thoughts),
                audio_tokens: None,
            });
        }
        usage.capped()
    }

    /// The reverse of [`UsageMetadata::into_usage`].
    pub fn from_usage(usage: &Usage) -> Self {
        let thoughts = usage.reasoning_tokens();
        let cached = usage.cached_tokens();
        UsageMetadata {
            prompt_token_count: Some(usage.prompt_tokens),
            candidates_token_count: Some(usage.completion_tokens.saturating_sub(thoughts)),
            total_token_count: Some(usage.total_tokens),
            cached_content_token_count: (cached > 0).then_some(cached),
            thoughts_token_count: (thoughts > 0).then_some(thoughts),
            tool_use_prompt_token_count: None,
        }
    }
}

/// Gemini's error envelope, `{"error":{"code","message","status"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The body of a Gemini error (a `google.rpc.Status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

/// A `batchEmbedContents` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEmbedContentsRequest {
    pub requests: Vec<EmbedContentRequest>,
}

/// One text to embed. `model` must repeat the model of the URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentRequest {
    pub model: String,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u32>,
}

/// A `batchEmbedContents` response, embeddings in request order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEmbedContentsResponse {
    #[serde(default)]
    pub embeddings: Vec<ContentEmbedding>,
    /// Not sent by the Gemini API; Vertex AI's variant has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
}

/// One embedding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentEmbedding {
    #[serde(default)]
    pub values: Vec<f32>,
}

// ---------------------------------------------------------------------------
// Shared mappings
// ---------------------------------------------------------------------------

/// The thought signature Google documents for function calls that did not
/// come from a Gemini response (or whose signature was lost). Gemini 3
/// models reject a history whose function calls lack a signature, and the
/// OpenAI shape has no place to carry the real one through a client.
pub const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// Maps a Gemini `finishReason` to the canonical one. `STOP` becomes
/// `tool_calls` when the candidate called a function, as OpenAI reports it.
pub fn finish_reason_from_gemini(reason: &str, has_tool_calls: bool) -> types::FinishReason {
    use types::FinishReason as F;
    match reason {
        "MAX_TOKENS" => F::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => F::ContentFilter,
        // STOP, and the rest (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL,
        // UNEXPECTED_TOOL_CALL, ...): the model stopped for a reason that
        // has no canonical name.
        _ if has_tool_calls => F::ToolCalls,
        _ => F::Stop,
    }
}

/// Maps a canonical finish reason to Gemini's (tool calls end with `STOP`).
pub fn finish_reason_to_gemini(reason: types::FinishReason) -> &'static str {
    use types::FinishReason as F;
    match reason {
        F::Stop | F::ToolCalls | F::FunctionCall => "STOP",
        F::Length => "MAX_TOKENS",
        F::ContentFilter => "SAFETY",
    }
}

/// The HTTP status for a `google.rpc.Code` name.
pub fn http_status_for(status: &str) -> u16 {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "ABORTED" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

/// A generated response id, for responses without `responseId`.
fn generated_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// `args` of a function call as the JSON string OpenAI clients expect.
fn args_string(args: Option<&Value>) -> String {
    match args {
        Some(v) if !v.is_null() => v.to_string(),
        _ => "{}".to_owned(),
    }
}

/// One tool call found in a candidate's parts.
struct FoundCall {
    id: String,
    name: String,
    arguments: String,
}

/// Splits a candidate's parts into its answer text and its function calls.
/// Text parts are concatenated as they are (Gemini splits text at arbitrary
/// points, as a stream does); thought summaries are left out. Calls without
/// an `id` from Gemini get `call_<n>`, counted across the response.
fn split_parts(parts: &[Part], next_call: &mut u32) -> (String, Vec<FoundCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in parts.iter().filter(|p| !p.is_thought()) {
        if let Some(t) = &part.text {
            text.push_str(t);
        }
        if let Some(fc) = &part.function_call {
            let id = fc.id.clone().unwrap_or_else(|| {
                let id = format!("call_{next_call}");
                *next_call += 1;
                id
            });
            calls.push(FoundCall {
                id,
                name: fc.name.clone(),
                arguments: args_string(fc.args.as_ref()),
            });
        }
    }
    (text, calls)
}

/// A canonical error from a Gemini error body (HTTP answer or stream event).
fn gemini_error(status: u16, body: Option<&ErrorBody>) -> GatewayError {
    let Some(body) = body else {
        return GatewayError::upstream_status(status, format!("gemini returned {status}"));
    };
    let message = match &body.status {
        Some(s) => format!("gemini returned {status} ({s}): {}", body.message),
        None => format!("gemini returned {status}: {}", body.message),
    };
    let mut err = GatewayError::upstream_status(status, message);
    // A 429 carries a google.rpc.RetryInfo detail with `retryDelay: "37s"`
    // (a protobuf Duration, fractions allowed): pass it on as retry-after.
    let delay = body.details.iter().find_map(|d| {
        let kind = d.get("@type")?.as_str()?;
        if !kind.ends_with("google.rpc.RetryInfo") {
            return None;
        }
        let secs: f64 = d
            .get("retryDelay")?
            .as_str()?
            .strip_suffix('s')?
            .parse()
            .ok()?;
        Some(secs.max(0.0).ceil() as u64)
    });
    if let Some(secs) = delay {
        err = err.with_header("retry-after", secs.to_string());
    }
    err
}

// ---------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------

/// Appends a turn, merging it into the previous one when the role is the
/// same: Gemini wants all `functionResponse` parts answering one model turn
/// in a single `user` turn, and alternating roles in general.
fn push_content(contents: &mut Vec<Content>, role: &str, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last.role.as_deref() == Some(role)
    {
        last.parts.extend(parts);
        return;
    }
    contents.push(Content {
        role: Some(role.to_owned()),
        parts,
    });
}

/// The media type of an image URL, from its extension; `image/jpeg` when
/// the URL does not tell (Gemini requires a media type on `fileData`).
fn guess_image_mime(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => "image/jpeg",
    }
}

/// `(media type, base64)` of a base64 `data:` URL.
fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

fn user_parts(msg: &types::Message, i: usize) -> Result<Vec<Part>, GatewayError> {
    let Some(content) = &msg.content else {
        return Ok(Vec::new());
    };
    let mut parts = Vec::new();
    for (j, p) in content.parts().into_iter().enumerate() {
        match p {
            // Gemini rejects empty text parts.
            types::ContentPart::Text { text } | types::ContentPart::Refusal { refusal: text } => {
                if !text.is_empty() {
                    parts.push(Part::text(text));
                }
            }
            types::ContentPart::ImageUrl { image_url } => {
                if let Some((mime, data)) = image_url.as_data() {
                    parts.push(Part {
                        inline_data: Some(Blob {
                            mime_type: mime.to_owned(),
                            data: data.to_owned(),
                        }),
                        ..Default::default()
                    });
                } else if image_url.url.starts_with("https://")
                    || image_url.url.starts_with("http://")
                    || image_url.url.starts_with("gs://")
                {
                    parts.push(Part {
                        file_data: Some(FileData {
                            mime_type: Some(guess_image_mime(&image_url.url).to_owned()),
                            file_uri: image_url.url.clone(),
                        }),
                        ..Default::default()
                    });
                } else {
                    return Err(GatewayError::invalid_param(
                        format!("messages[{i}].content[{j}].image_url.url"),
                        "An image must be an http(s) URL or a base64 `data:` URL.",
                    ));
                }
            }
            types::ContentPart::InputAudio { input_audio } => {
                let data = input_audio.get("data").and_then(Value::as_str);
                let format = input_audio.get("format").and_then(Value::as_str);
                let (Some(data), Some(format)) = (data, format) else {
                    return Err(GatewayError::invalid_param(
                        format!("messages[{i}].content[{j}].input_audio"),
                        "input_audio needs `data` and `format`.",
                    ));
                };
                parts.push(Part {
                    inline_data: Some(Blob {
                        mime_type: format!("audio/{format}"),
                        data: data.to_owned(),
                    }),
                    ..Default::default()
                });
            }
            types::ContentPart::File { file } => {
                let data_url = file.get("file_data").and_then(Value::as_str);
                let Some((mime, data)) = data_url.and_then(split_data_url) else {
                    return Err(GatewayError::invalid_param(
                        format!("messages[{i}].content[{j}].file"),
                        "Only files sent inline as a base64 `data:` URL in `file_data` can be passed to Gemini.",
                    ));
                };
                parts.push(Part {
                    inline_data: Some(Blob {
                        mime_type: mime.to_owned(),
                        data: data.to_owned(),
                    }),
                    ..Default::default()
                });
            }
        }
    }
    Ok(parts)
}

/// A tool result as `functionResponse.response`: Gemini wants an object, so
/// the result goes under `content`, parsed when it is JSON.
fn tool_response_value(text: String) -> Value {
    let content = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    json!({ "content": content })
}

/// Splits canonical messages into `systemInstruction` and `contents`.
fn convert_messages(
    messages: &[types::Message],
) -> Result<(Option<Content>, Vec<Content>), GatewayError> {
    let mut system: Vec<Part> = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    // Tool results name the function in Gemini, but only the call id in
    // OpenAI's shape: remember the names of the calls made so far. Later
    // calls with the same id (ids may repeat across turns) win.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                let text = m.text_content();
                if !text.is_empty() {
                    system.push(Part::text(text));
                }
            }
            Role::User => push_content(&mut contents, "user", user_parts(m, i)?),
            Role::Assistant => {
                let mut parts = Vec::new();
                let text = m.text_content();
                if !text.is_empty() {
                    parts.push(Part::text(text));
                }
                for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                    call_names.insert(&call.id, &call.function.name);
                    let raw = call.function.arguments.trim();
                    let args = if raw.is_empty() {
                        json!({})
                    } else {
                        match serde_json::from_str::<Value>(raw) {
                            Ok(v @ Value::Object(_)) => v,
                            _ => {
                                return Err(GatewayError::invalid_param(
                                    format!("messages[{i}].tool_calls[{j}].function.arguments"),
                                    "Tool call arguments must be a JSON object.",
                                ));
                            }
                        }
                    };
                    parts.push(Part {
                        function_call: Some(FunctionCall {
                            id: None,
                            name: call.function.name.clone(),
                            args: Some(args),
                        }),
                        // Gemini 3 validates a signature on the first call of
                        // each model turn; see SKIP_THOUGHT_SIGNATURE.
                        thought_signature: (j == 0).then(|| SKIP_THOUGHT_SIGNATURE.to_owned()),
                        ..Default::default()
                    });
                }
                push_content(&mut contents, "model", parts);
            }
            Role::Tool | Role::Function => {
                let by_id = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id).copied());
                let Some(name) = by_id.or(m.name.as_deref()) else {
                    let param = if m.role == Role::Tool {
                        format!("messages[{i}].tool_call_id")
                    } else {
                        format!("messages[{i}].name")
                    };
                    return Err(GatewayError::invalid_param(
                        param,
                        "This tool result answers no earlier assistant tool call, and Gemini needs the function's name.",
                    ));
                };
                let part = Part {
                    function_response: Some(FunctionResponse {
                        id: None,
                        name: name.to_owned(),
                        response: tool_response_value(m.text_content()),
                    }),
                    ..Default::default()
                };
                push_content(&mut contents, "user", vec![part]);
            }
        }
    }
    let system = (!system.is_empty()).then_some(Content {
        role: None,
        parts: system,
    });
    Ok((system, contents))
}

fn generation_config(req: &ChatRequest) -> Result<Option<GenerationConfig>, GatewayError> {
    let stop = req.stop_sequences();
    let mut cfg = GenerationConfig {
        stop_sequences: (!stop.is_empty()).then_some(stop),
        candidate_count: req.n,
        max_output_tokens: req.max_output_tokens(),
        temperature: req.temperature,
        top_p: req.top_p,
        // Not an OpenAI parameter, but OpenAI-SDK users of other providers
        // send it as an extra body field.
        top_k: req
            .extra
            .get("top_k")
            .and_then(Value::as_u64)
            .map(|k| k.min(u32::MAX as u64) as u32),
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        ..Default::default()
    };
    if let Some(format) = &req.response_format {
        match format.kind.as_str() {
            "text" => {}
            "json_object" => cfg.response_mime_type = Some("application/json".into()),
            "json_schema" => {
                cfg.response_mime_type = Some("application/json".into());
                // `responseJsonSchema` takes JSON Schema as OpenAI clients
                // write it; `responseSchema` only an OpenAPI subset that
                // rejects `additionalProperties`, `$ref` and friends.
                cfg.response_json_schema =
                    format.json_schema.as_ref().and_then(|s| s.schema.clone());
            }
            other => {
                return Err(GatewayError::invalid_param(
                    "response_format.type",
                    format!("Unsupported response_format type `{other}`."),
                ));
            }
        }
    }
    Ok((cfg != GenerationConfig::default()).then_some(cfg))
}

fn tool_config(choice: &types::ToolChoice) -> Result<ToolConfig, GatewayError> {
    let (mode, names) = match choice {
        types::ToolChoice::Mode(m) => match m.as_str() {
            "auto" => ("AUTO", None),
            "required" => ("ANY", None),
            "none" => ("NONE", None),
            other => {
                return Err(GatewayError::invalid_param(
                    "tool_choice",
                    format!("Unsupported tool_choice `{other}`."),
                ));
            }
        },
        types::ToolChoice::Named(n) => ("ANY", Some(vec![n.function.name.clone()])),
    };
    Ok(ToolConfig {
        function_calling_config: Some(FunctionCallingConfig {
            mode: Some(mode.to_owned()),
            allowed_function_names: names,
        }),
    })
}

/// Translates a canonical chat request into a Gemini request body.
pub fn to_gemini_request(req: &ChatRequest) -> Result<GenerateContentRequest, GatewayError> {
    let (system_instruction, contents) = convert_messages(&req.messages)?;
    if contents.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "Gemini needs at least one user or assistant message.",
        ));
    }
    let declarations: Vec<FunctionDeclaration> = req
        .tools
        .iter()
        .flatten()
        .filter(|t| t.kind == "function")
        .map(|t| FunctionDeclaration {
            name: t.function.name.clone(),
            description: t.function.description.clone(),
            parameters: None,
            // OpenAI tool parameters are JSON Schema; `parameters` would
            // reject the `additionalProperties: false` that strict-mode
            // clients always send.
            parameters_json_schema: t.function.parameters.clone(),
        })
        .collect();
    let tools = if declarations.is_empty() {
        Vec::new()
    } else {
        vec![Tool {
            function_declarations: Some(declarations),
        }]
    };
    let tool_config = match &req.tool_choice {
        Some(choice) => Some(tool_config(choice)?),
        None => None,
    };
    Ok(GenerateContentRequest {
        contents,
        system_instruction,
        tools,
        tool_config,
        generation_config: generation_config(req)?,
    })
}

// ---------------------------------------------------------------------------
// Response translation
// ---------------------------------------------------------------------------

/// Translates a Gemini response into a canonical chat completion.
pub fn from_gemini_response(resp: &GenerateContentResponse, model: &str) -> ChatResponse {
    let mut next_call = 0;
    let mut choices: Vec<types::Choice> = resp
        .candidates
        .iter()
        .enumerate()
        .map(|(pos, cand)| {
            let parts = cand
                .content
                .as_ref()
                .map(|c| c.parts.as_slice())
                .unwrap_or(&[]);
            let (text, calls) = split_parts(parts, &mut next_call);
            let finish = cand
                .finish_reason
                .as_deref()
                .map(|r| finish_reason_from_gemini(r, !calls.is_empty()));
            let tool_calls: Vec<types::ToolCall> = calls
                .into_iter()
                .map(|c| types::ToolCall {
                    id: c.id,
                    kind: "function".into(),
                    function: types::FunctionCall {
                        name: c.name,
                        arguments: c.arguments,
                    },
                })
                .collect();
            let content = if text.is_empty() && !tool_calls.is_empty() {
                None
            } else {
                Some(types::Content::Text(text))
            };
            types::Choice {
                index: cand.index.unwrap_or(pos as u32),
                message: types::Message {
                    role: Role::Assistant,
                    content,
                    name: None,
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                    tool_call_id: None,
                    extra: Map::new(),
                },
                finish_reason: finish,
                logprobs: None,
            }
        })
        .collect();
    if choices.is_empty() {
        // A blocked prompt comes back with no candidates and
        // `promptFeedback.blockReason`; OpenAI clients expect a choice.
        let blocked = resp
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some());
        choices.push(types::Choice {
            index: 0,
            message: types::Message::text(Role::Assistant, ""),
            finish_reason: Some(if blocked {
                types::FinishReason::ContentFilter
            } else {
                types::FinishReason::Stop
            }),
            logprobs: None,
        });
    }
    ChatResponse {
        id: resp.response_id.clone().unwrap_or_else(generated_id),
        object: "chat.completion".into(),
        created: unix_now(),
        model: resp
            .model_version
            .clone()
            .unwrap_or_else(|| model.to_owned()),
        choices,
        usage: resp.usage_metadata.as_ref().map(UsageMetadata::into_usage),
        system_fingerprint: None,
        extra: Map::new(),
    }
}

// ---------------------------------------------------------------------------
// Stream decoding
// ---------------------------------------------------------------------------

/// Decodes `streamGenerateContent?alt=sse`: every `data:` event is a whole
/// `GenerateContentResponse` holding the next piece of each candidate.
pub struct GeminiStreamDecoder {
    parser: SseParser,
    model: String,
    id: String,
    id_from_upstream: bool,
    created: u64,
    /// Candidates that already got their first chunk (with the role).
    started: HashSet<u32>,
    /// Tool calls per candidate so far: the next `ToolCallDelta::index`.
    tool_counts: HashMap<u32, u32>,
    next_call: u32,
    complete: bool,
}

impl GeminiStreamDecoder {
    /// A decoder for one stream; `model` is used until Gemini names its
    /// `modelVersion`.
    pub fn new(model: &str) -> Self {
        GeminiStreamDecoder {
            parser: SseParser::default(),
            model: model.to_owned(),
            id: generated_id(),
            id_from_upstream: false,
            created: unix_now(),
            started: HashSet::new(),
            tool_counts: HashMap::new(),
            next_call: 0,
            complete: false,
        }
    }

    fn event(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let data = data.trim();
        if data.is_empty() {
            return;
        }
        let value: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                out.push(StreamEvent::Error(GatewayError::upstream_protocol(
                    format!("gemini sent a stream event that is not JSON: {e}"),
                )));
                return;
            }
        };
        if let Some(err) = value.get("error") {
            let body: ErrorBody = serde_json::from_value(err.clone()).unwrap_or_default();
            let status = body
                .code
                .or_else(|| body.status.as_deref().map(http_status_for))
                .unwrap_or(500);
            out.push(StreamEvent::Error(gemini_error(status, Some(&body))));
            return;
        }
        let resp: GenerateContentResponse = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                out.push(StreamEvent::Error(GatewayError::upstream_protocol(
                    format!("gemini sent a stream event the gateway could not read: {e}"),
                )));
                return;
            }
        };
        if let Some(chunk) = self.chunk(&resp) {
            out.push(StreamEvent::Chunk(chunk));
        }
    }

    fn chunk(&mut self, resp: &GenerateContentResponse) -> Option<ChatChunk> {
        if !self.id_from_upstream
            && let Some(id) = &resp.response_id
        {
            self.id = id.clone();
            self.id_from_upstream = true;
        }
        if let Some(version) = &resp.model_version {
            self.model = version.clone();
        }
        let mut chunk = ChatChunk::new(self.id.clone(), self.model.clone(), self.created);
        for (pos, cand) in resp.candidates.iter().enumerate() {
            let index = cand.index.unwrap_or(pos as u32);
            let parts = cand
                .content
                .as_ref()
                .map(|c| c.parts.as_slice())
                .unwrap_or(&[]);
            let (text, calls) = split_parts(parts, &mut self.next_call);
            let mut delta = types::Delta::default();
            if self.started.insert(index) {
                delta.role = Some(Role::Assistant);
            }
            if !text.is_empty() {
                delta.content = Some(text);
            }
            if !calls.is_empty() {
                let count = self.tool_counts.entry(index).or_insert(0);
                let deltas = calls
                    .into_iter()
                    .map(|c| {
                        let d = types::ToolCallDelta {
                            index: *count,
                            id: Some(c.id),
                            kind: Some("function".into()),
                            function: Some(types::FunctionCallDelta {
                                name: Some(c.name),
                                arguments: Some(c.arguments),
                            }),
                        };
                        *count += 1;
                        d
                    })
                    .collect();
                delta.tool_calls = Some(deltas);
            }
            let finish_reason = cand.finish_reason.as_deref().map(|r| {
                self.complete = true;
                let has_calls = self.tool_counts.get(&index).is_some_and(|n| *n > 0);
                finish_reason_from_gemini(r, has_calls)
            });
            if delta == types::Delta::default() && finish_reason.is_none() {
                continue;
            }
            chunk.choices.push(types::ChunkChoice {
                index,
                delta,
                finish_reason,
                logprobs: None,
            });
        }
        if resp.candidates.is_empty()
            && resp
                .prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
        {
            // The prompt was blocked: the stream is one event without
            // candidates.
            self.complete = true;
            let mut delta = types::Delta::default();
            if self.started.insert(0) {
                delta.role = Some(Role::Assistant);
            }
            delta.content = Some(String::new());
            chunk.choices.push(types::ChunkChoice {
                index: 0,
                delta,
                finish_reason: Some(types::FinishReason::ContentFilter),
                logprobs: None,
            });
        }
        chunk.usage = resp.usage_metadata.as_ref().map(UsageMetadata::into_usage);
        (!chunk.choices.is_empty() || chunk.usage.is_some()).then_some(chunk)
    }
}

impl StreamDecoder for GeminiStreamDecoder {
    fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        let mut events = Vec::new();
        let limit = self.parser.feed(data, &mut events);
        for ev in events {
            self.event(&ev.data, out);
        }
        if let Err(e) = limit {
            out.push(StreamEvent::Error(e.into()));
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let mut events = Vec::new();
        let limit = self.parser.finish(&mut events);
        for ev in events {
            self.event(&ev.data, out);
        }
        if let Err(e) = limit {
            out.push(StreamEvent::Error(e.into()));
        }
    }

    /// Gemini sends no terminator: the stream is complete once a candidate
    /// reported a `finishReason` (or the prompt was blocked).
    fn is_complete(&self) -> bool {
        self.complete
    }
}

// ---------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------

/// The Gemini adapter.
pub struct GeminiProvider {
    settings: ProviderSettings,
}

impl GeminiProvider {
    /// An adapter for one configured Gemini provider.
    pub fn new(settings: ProviderSettings) -> Self {
        GeminiProvider { settings }
    }

    /// `{base}/v1beta/models/{model}:{method}`; a model given as
    /// `models/x` (Gemini's resource name) is accepted too.
    /// The Gemini API's model URL, or Vertex AI's (a publisher model of
    /// the configured project and location) when the provider has one.
    fn model_path(&self, model: &str, method: &str) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        // One path segment, whatever the client sent.
        let model = super::sigv4::uri_encode(model, true);
        match &self.settings.vertex {
            Some(v) => format!(
                "{}/v1/projects/{}/locations/{}/publishers/google/models/{model}:{method}",
                self.settings.base_path,
                super::sigv4::uri_encode(&v.project, true),
                super::sigv4::uri_encode(&v.location, true),
            ),
            None => format!("{}/v1beta/models/{model}:{method}", self.settings.base_path),
        }
    }

    /// A JSON POST with the call's API key (`x-goog-api-key`), or else the
    /// provider's refreshed OAuth2 token (Vertex AI takes only those).
    fn post(
        &self,
        path: String,
        body: &impl Serialize,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        // Serialising these plain structs cannot fail.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let mut req = UpstreamRequest::post_json(path, bytes);
        if let Some(key) = call.api_key {
            req.headers.push(("x-goog-api-key", key.to_owned()));
        } else if let Some(live) = &self.settings.live {
            req.headers
                .push(("authorization", format!("Bearer {}", live.bearer()?)));
        }
        Ok(req)
    }
}

/// Rough token count for texts Gemini reports no usage for (embeddings):
/// whitespace-separated words. It undercounts (a token is ~0.75 words in
/// English) but is stable, cheap and never zero for real input.
pub fn estimate_tokens_as_words<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    texts
        .into_iter()
        .map(|t| t.split_whitespace().count() as u64)
        .sum()
}

/// A page of `GET /v1beta/models`: `{"models":[{"name":"models/gemini-…",
/// "supportedGenerationMethods":[...]}],"nextPageToken":"…"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelListPage {
    #[serde(default)]
    models: Vec<ListedModel>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedModel {
    name: String,
    #[serde(default)]
    supported_generation_methods: Vec<String>,
}

/// The methods of the models the gateway can call: chat (streamed or
/// not) and embeddings. The list also holds models for other APIs
/// (image generation, live audio) that would fail behind the gateway.
const CALLABLE_METHODS: [&str; 3] = ["generateContent", "embedContent", "batchEmbedContents"];

impl Provider for GeminiProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn models_request(
        &self,
        api_key: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<UpstreamRequest, GatewayError> {
        // 1000 is the largest page the API serves.
        let mut path = format!("{}/v1beta/models?pageSize=1000", self.settings.base_path);
        if let Some(token) = cursor {
            path.push_str("&pageToken=");
            path.push_str(&super::sigv4::uri_encode(token, true));
        }
        let mut up = UpstreamRequest::get(path);
        if let Some(key) = api_key {
            up.headers.push(("x-goog-api-key", key.to_owned()));
        }
        Ok(up)
    }

    fn models_page(&self, body: &[u8]) -> Result<super::ModelPage, GatewayError> {
        let page: ModelListPage = parse_upstream_json(ProviderKind::Gemini, body)?;
        let models = page
            .models
            .into_iter()
            .filter(|m| {
                m.supported_generation_methods
                    .iter()
                    .any(|g| CALLABLE_METHODS.contains(&g.as_str()))
            })
            .map(|m| match m.name.strip_prefix("models/") {
                Some(bare) => bare.to_owned(),
                None => m.name,
            })
            .collect();
        Ok(super::ModelPage {
            models,
            next: page.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body = to_gemini_request(req)?;
        let method = if call.stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        self.post(self.model_path(call.model, method), &body, call)
    }

    fn chat_response(
        &self,
        body: &[u8],
        call: &UpstreamCall<'_>,
    ) -> Result<ChatResponse, GatewayError> {
        let resp: GenerateContentResponse = parse_upstream_json(ProviderKind::Gemini, body)?;
        Ok(from_gemini_response(&resp, call.model))
    }

    fn stream_decoder(&self, call: &UpstreamCall<'_>) -> Box<dyn StreamDecoder> {
        Box::new(GeminiStreamDecoder::new(call.model))
    }

    fn embeddings_request(
        &self,
        req: &types::EmbeddingsRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let Some(texts) = req.input.texts() else {
            return Err(GatewayError::invalid_param(
                "input",
                "Gemini embeds text only; token-array input is not supported.",
            ));
        };
        if self.settings.vertex.is_some() {
            // Vertex AI embeds through its own `:predict` shape, which
            // this adapter does not speak.
            return Err(GatewayError::invalid_param(
                "model",
                "Embeddings are not offered for Gemini on Vertex AI through this gateway; use a Gemini API provider.",
            ));
        }
        let model = call.model.strip_prefix("models/").unwrap_or(call.model);
        let body = BatchEmbedContentsRequest {
            requests: texts
                .into_iter()
                .map(|t| EmbedContentRequest {
                    model: format!("models/{model}"),
                    content: Content {
                        role: None,
                        parts: vec![Part::text(t)],
                    },
                    output_dimensionality: req.dimensions,
                })
                .collect(),
        };
        self.post(self.model_path(model, "batchEmbedContents"), &body, call)
    }

    /// Gemini's embeddings answer has no usage. The adapter cannot see the
    /// request texts here, so `usage` is zero unless the body carries
    /// `usageMetadata` (Vertex AI's variant does); the core fills it in
    /// with [`estimate_tokens_as_words`] when it is zero.
    fn embeddings_response(
        &self,
        body: &[u8],
        call: &UpstreamCall<'_>,
    ) -> Result<types::EmbeddingsResponse, GatewayError> {
        let resp: BatchEmbedContentsResponse = parse_upstream_json(ProviderKind::Gemini, body)?;
        let prompt = resp
            .usage_metadata
            .as_ref()
            .and_then(|u| u.prompt_token_count)
            .unwrap_or(0);
        Ok(types::EmbeddingsResponse {
            object: "list".into(),
            data: resp
                .embeddings
                .into_iter()
                .enumerate()
                .map(|(i, e)| types::Embedding {
                    object: "embedding".into(),
                    index: i as u32,
                    embedding: types::EmbeddingVector::Float(e.values),
                })
                .collect(),
            model: call
                .model
                .strip_prefix("models/")
                .unwrap_or(call.model)
                .to_owned(),
            usage: types::EmbeddingsUsage {
                prompt_tokens: prompt,
                total_tokens: prompt,
            },
        })
    }

    fn error_response(&self, status: u16, body: &[u8]) -> GatewayError {
        let parsed: Option<ErrorEnvelope> = serde_json::from_slice(body).ok();
        gemini_error(status, parsed.as_ref().map(|e| &e.error))
    }
}

#[cfg(test)]
mod model_list_tests {
    use super::*;

    #[test]
    fn lists_callable_models_page_by_page() {
        let p = GeminiProvider::new(ProviderSettings::default());
        let up = p.models_request(Some("AIza"), None).unwrap();
        assert_eq!(up.method, http::Method::GET);
        assert_eq!(up.path, "/v1beta/models?pageSize=1000");
        assert!(up.headers.contains(&("x-goog-api-key", "AIza".into())));
        let page = p
            .models_page(br#"{"models":[
                {"name":"models/gemini-2.5-flash","version":"001","supportedGenerationMethods":["generateContent","countTokens"]},
                {"name":"models/gemini-embedding-001","supportedGenerationMethods":["embedContent"]},
                {"name":"models/imagen-4","supportedGenerationMethods":["predict"]}],
                "nextPageToken":"Cg+x/y="}"#)
            .unwrap();
        assert_eq!(
            page.models,
            vec!["gemini-2.5-flash", "gemini-embedding-001"]
        );
        assert_eq!(page.next.as_deref(), Some("Cg+x/y="));
        let up = p.models_request(Some("AIza"), Some("Cg+x/y=")).unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models?pageSize=1000&pageToken=Cg%2Bx%2Fy%3D"
        );
        let last = p
            .models_page(br#"{"models":[],"nextPageToken":""}"#)
            .unwrap();
        assert_eq!(last, super::super::ModelPage::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> GeminiProvider {
        GeminiProvider::new(ProviderSettings {
            base_path: String::new(),
            host: "generativelanguage.googleapis.com".into(),
            ..Default::default()
        })
    }

    fn call(stream: bool) -> UpstreamCall<'static> {
        UpstreamCall {
            model: "gemini-2.5-flash",
            api_key: Some("AIza-test"),
            stream,
            track_usage: true,
        }
    }

    fn body_json(req: &UpstreamRequest) -> Value {
        serde_json::from_slice(&req.body).unwrap()
    }

    fn chat(raw: Value) -> ChatRequest {
        serde_json::from_value(raw).unwrap()
    }

    #[test]
    fn request_translation_covers_roles_tools_images_and_config() {
        let req = chat(json!({
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": "Answer in English."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in these, and the weather in Boston?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?x=1"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/photo"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Boston, MA\"}"}},
                    {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "10:42"},
                {"role": "tool", "tool_call_id": "call_0", "content": "{\"temperature\":22,\"unit\":\"celsius\"}"},
                {"role": "user", "content": "Thanks"}
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_completion_tokens": 256,
            "stop": ["END"],
            "n": 2,
            "seed": 42,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "additionalProperties": false}}},
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
            }}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
        }));
        let up = provider().chat_request(&req, &call(false)).unwrap();
        assert_eq!(up.method, http::Method::POST);
        assert_eq!(up.path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(
            up.headers,
            vec![
                ("content-type", "application/json".to_owned()),
                ("x-goog-api-key", "AIza-test".to_owned())
            ]
        );
        let expected = json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in these, and the weather in Boston?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}}
                ]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"location": "Boston, MA"}},
                     "thoughtSignature": "skip_thought_signature_validator"},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                // Both tool results and the next user message merge into one
                // user turn; names come from the calls' ids, and "10:42" is
                // not JSON, so it stays a string.
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_time", "response": {"content": "10:42"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"content": {"temperature": 22, "unit": "celsius"}}}},
                    {"text": "Thanks"}
                ]}
            ]
        });
        let mut expected = expected;
        expected["systemInstruction"] =
            json!({"parts": [{"text": "You are terse."}, {"text": "Answer in English."}]});
        expected["tools"] = json!([{"functionDeclarations": [{
            "name": "get_weather",
            "description": "Current weather",
            "parametersJsonSchema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
        }]}]);
        expected["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}});
        expected["generationConfig"] = json!({
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "additionalProperties": false},
            "candidateCount": 2,
            "maxOutputTokens": 256,
            "temperature": 0.2,
            "topP": 0.9,
            "seed": 42,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25
        });
        assert_eq!(body_json(&up), expected);
    }

    #[test]
    fn vertex_uses_its_model_url_and_the_oauth_token() {
        let p = GeminiProvider::new(ProviderSettings {
            base_path: String::new(),
            host: "us-central1-aiplatform.googleapis.com".into(),
            live: Some(super::super::test_credential(Ok(
                super::super::Secret::Bearer("ya29.token".into()),
            ))),
            vertex: Some(super::super::VertexLocation {
                project: "my-project".into(),
                location: "us-central1".into(),
            }),
            ..Default::default()
        });
        let no_key = UpstreamCall {
            api_key: None,
            ..call(true)
        };
        let req = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let up = p.chat_request(&req, &no_key).unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert!(
            up.headers
                .contains(&("authorization", "Bearer ya29.token".into()))
        );
        assert!(!up.headers.iter().any(|(n, _)| *n == "x-goog-api-key"));
        let up = p
            .chat_request(
                &req,
                &UpstreamCall {
                    stream: false,
                    ..no_key
                },
            )
            .unwrap();
        assert!(
            up.path
                .ends_with("/models/gemini-2.5-flash:generateContent")
        );
        let emb: types::EmbeddingsRequest =
            serde_json::from_value(json!({"model": "text-embedding-004", "input": "x"})).unwrap();
        assert_eq!(
            p.embeddings_request(&emb, &no_key)
                .unwrap_err()
                .param
                .as_deref(),
            Some("model")
        );
    }

    #[test]
    fn stream_request_uses_sse_endpoint_and_modes_map() {
        let mut req = chat(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"},
            "tool_choice": "none",
            "max_tokens": 10,
            "top_k": 40
        }));
        let up = provider().chat_request(&req, &call(true)).unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let body = body_json(&up);
        assert_eq!(
            body["toolConfig"]["functionCallingConfig"],
            json!({"mode": "NONE"})
        );
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json", "maxOutputTokens": 10, "topK": 40})
        );
        assert!(body.get("systemInstruction").is_none());
        req.tool_choice = Some(types::ToolChoice::Mode("required".into()));
        let body = body_json(&provider().chat_request(&req, &call(false)).unwrap());
        assert_eq!(
            body["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY"})
        );
        req.tool_choice = Some(types::ToolChoice::Mode("auto".into()));
        req.response_format = None;
        req.max_tokens = None;
        req.extra.clear();
        let body = body_json(&provider().chat_request(&req, &call(false)).unwrap());
        assert_eq!(
            body["toolConfig"]["functionCallingConfig"],
            json!({"mode": "AUTO"})
        );
        assert!(body.get("generationConfig").is_none());
    }

    #[test]
    fn base_path_and_resource_style_model_names() {
        let p = GeminiProvider::new(ProviderSettings {
            base_path: "/gemini".into(),
            ..Default::default()
        });
        let req = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let c = UpstreamCall {
            model: "models/gemini-2.0-flash",
            api_key: None,
            stream: false,
            track_usage: true,
        };
        let up = p.chat_request(&req, &c).unwrap();
        assert_eq!(
            up.path,
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            up.headers,
            vec![("content-type", "application/json".to_owned())]
        );
    }

    #[test]
    fn tool_result_without_a_known_call_names_the_field() {
        let req = chat(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_9", "content": "x"}
            ]
        }));
        let err = provider().chat_request(&req, &call(false)).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some("messages[1].tool_call_id"));

        let req = chat(json!({
            "model": "m",
            "messages": [{"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
            ]}]
        }));
        let err = provider().chat_request(&req, &call(false)).unwrap_err();
        assert_eq!(
            err.param.as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );

        let req = chat(json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}));
        let err = provider().chat_request(&req, &call(false)).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
    }

    // The text response of Google's generateContent reference, with the
    // usage a thinking model reports.
    const TEXT_RESPONSE: &str = r#"{
      "candidates": [
        {
          "content": {
            "parts": [{"text": "AI learns patterns "}, {"text": "from data."}],
            "role": "model"
          },
          "finishReason": "STOP",
          "avgLogprobs": -0.3
        }
      ],
      "usageMetadata": {
        "promptTokenCount": 8,
        "candidatesTokenCount": 12,
        "totalTokenCount": 45,
        "cachedContentTokenCount": 4,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
        "thoughtsTokenCount": 25
      },
      "modelVersion": "gemini-2.5-flash",
      "responseId": "qpc2afWVFJK4vr0Pq6WiyAU"
    }"#;

    #[test]
    fn text_response_and_usage() {
        let resp = provider()
            .chat_response(TEXT_RESPONSE.as_bytes(), &call(false))
            .unwrap();
        assert_eq!(resp.id, "qpc2afWVFJK4vr0Pq6WiyAU");
        assert_eq!(resp.model, "gemini-2.5-flash");
        assert_eq!(resp.object, "chat.completion");
        assert_eq!(resp.choices.len(), 1);
        let c = &resp.choices[0];
        assert_eq!(c.index, 0);
        assert_eq!(c.message.role, Role::Assistant);
        assert_eq!(
            c.message.content,
            Some(types::Content::Text("AI learns patterns from data.".into()))
        );
        assert_eq!(c.finish_reason, Some(types::FinishReason::Stop));
        let u = resp.usage.unwrap();
        assert_eq!(u.prompt_tokens, 8);
        assert_eq!(u.completion_tokens, 37);
        assert_eq!(u.total_tokens, 45);
        assert_eq!(u.cached_tokens(), 4);
        assert_eq!(u.reasoning_tokens(), 25);
    }

    // Google's function-calling example answer, two parallel calls.
    const CALL_RESPONSE: &str = r#"{
      "candidates": [{
        "content": {"role": "model", "parts": [
          {"text": "Checking."},
          {"functionCall": {"name": "get_weather", "args": {"location": "Boston, MA"}}, "thoughtSignature": "CikB"},
          {"functionCall": {"name": "get_time", "args": {"tz": "America/New_York"}}}
        ]},
        "finishReason": "STOP",
        "index": 0
      }],
      "usageMetadata": {"promptTokenCount": 83, "candidatesTokenCount": 14, "totalTokenCount": 97}
    }"#;

    #[test]
    fn function_call_response() {
        let resp = provider()
            .chat_response(CALL_RESPONSE.as_bytes(), &call(false))
            .unwrap();
        assert!(resp.id.starts_with("chatcmpl-"));
        assert_eq!(resp.model, "gemini-2.5-flash");
        let c = &resp.choices[0];
        assert_eq!(c.finish_reason, Some(types::FinishReason::ToolCalls));
        assert_eq!(c.message.text_content(), "Checking.");
        let calls = c.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_0");
        assert_eq!(calls[0].kind, "function");
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, r#"{"location":"Boston, MA"}"#);
        assert_eq!(calls[1].id, "call_1");
        assert_eq!(calls[1].function.arguments, r#"{"tz":"America/New_York"}"#);
        assert_eq!(resp.usage, Some(Usage::new(83, 14)));
    }

    #[test]
    fn only_calls_means_null_content() {
        let body = r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f"}}]},"finishReason":"STOP"}]}"#;
        let resp = provider()
            .chat_response(body.as_bytes(), &call(false))
            .unwrap();
        let m = &resp.choices[0].message;
        assert_eq!(m.content, None);
        assert_eq!(m.tool_calls.as_ref().unwrap()[0].function.arguments, "{}");
    }

    #[test]
    fn blocked_prompt_is_a_content_filter_choice() {
        let body = r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7},"modelVersion":"gemini-2.5-flash"}"#;
        let resp = provider()
            .chat_response(body.as_bytes(), &call(false))
            .unwrap();
        assert_eq!(resp.choices.len(), 1);
        assert_eq!(
            resp.choices[0].finish_reason,
            Some(types::FinishReason::ContentFilter)
        );
        assert_eq!(
            resp.choices[0].message.content,
            Some(types::Content::Text(String::new()))
        );
        assert_eq!(resp.usage, Some(Usage::new(7, 0)));
    }

    #[test]
    fn finish_reasons_map() {
        use types::FinishReason as F;
        let cases = [
            ("STOP", false, F::Stop),
            ("STOP", true, F::ToolCalls),
            ("MAX_TOKENS", false, F::Length),
            ("MAX_TOKENS", true, F::Length),
            ("SAFETY", false, F::ContentFilter),
            ("RECITATION", false, F::ContentFilter),
            ("BLOCKLIST", false, F::ContentFilter),
            ("PROHIBITED_CONTENT", false, F::ContentFilter),
            ("SPII", false, F::ContentFilter),
            ("OTHER", false, F::Stop),
        ];
        for (raw, calls, want) in cases {
            assert_eq!(finish_reason_from_gemini(raw, calls), want, "{raw}");
        }
        assert_eq!(finish_reason_to_gemini(F::Length), "MAX_TOKENS");
        assert_eq!(finish_reason_to_gemini(F::ToolCalls), "STOP");
        assert_eq!(finish_reason_to_gemini(F::ContentFilter), "SAFETY");
    }

    #[test]
    fn unreadable_response_is_a_protocol_error() {
        let err = provider()
            .chat_response(br#"{"candidates":{"x":1}}"#, &call(false))
            .unwrap_err();
        assert_eq!(err.status, 502);
        assert!(err.message.contains("`candidates`"), "{}", err.message);
    }

    // Gemini's alt=sse framing: `data: {...}` events separated by CRLF CRLF,
    // usageMetadata on every event, finishReason on the last, no terminator.
    const TEXT_STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 1,\"totalTokenCount\": 5},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"IZI2acSKMoWl0\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" sky is blue, caf\u{e9}.\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 7,\"totalTokenCount\": 11},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"IZI2acSKMoWl0\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 7,\"totalTokenCount\": 20,\"thoughtsTokenCount\": 9},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"IZI2acSKMoWl0\"}\r\n\r\n";

    fn decode_in_pieces(input: &[u8], piece: usize) -> (Vec<StreamEvent>, bool) {
        let mut d = GeminiStreamDecoder::new("gemini-2.5-flash");
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        // `created` is the decoder's clock: normalise it for comparison.
        for ev in &mut out {
            if let StreamEvent::Chunk(c) = ev {
                c.created = 0;
            }
        }
        (out, d.is_complete())
    }

    fn chunks(events: &[StreamEvent]) -> Vec<&ChatChunk> {
        events
            .iter()
            .map(|e| match e {
                StreamEvent::Chunk(c) => c,
                StreamEvent::Error(e) => panic!("unexpected error {e}"),
            })
            .collect()
    }

    #[test]
    fn stream_decodes_text_usage_and_finish() {
        let (events, complete) = decode_in_pieces(TEXT_STREAM.as_bytes(), TEXT_STREAM.len());
        assert!(complete);
        let cs = chunks(&events);
        assert_eq!(cs.len(), 3);
        for c in &cs {
            assert_eq!(c.id, "IZI2acSKMoWl0");
            assert_eq!(c.model, "gemini-2.5-flash");
            assert_eq!(c.object, "chat.completion.chunk");
        }
        assert_eq!(cs[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(cs[0].choices[0].delta.content.as_deref(), Some("The"));
        assert_eq!(cs[1].choices[0].delta.role, None);
        assert_eq!(
            cs[1].choices[0].delta.content.as_deref(),
            Some(" sky is blue, caf\u{e9}.")
        );
        assert_eq!(cs[1].choices[0].finish_reason, None);
        assert_eq!(cs[2].choices[0].delta, types::Delta::default());
        assert_eq!(
            cs[2].choices[0].finish_reason,
            Some(types::FinishReason::Stop)
        );
        assert_eq!(cs[0].usage, Some(Usage::new(4, 1)));
        let last = cs[2].usage.as_ref().unwrap();
        assert_eq!(last.completion_tokens, 16);
        assert_eq!(last.total_tokens, 20);
        assert_eq!(last.reasoning_tokens(), 9);
    }

    #[test]
    fn stream_split_anywhere_decodes_the_same() {
        let input = TEXT_STREAM.as_bytes();
        let (whole, _) = decode_in_pieces(input, input.len());
        for n in [1, 2, 3, 5, 7, 16, 64, 200] {
            let (pieces, complete) = decode_in_pieces(input, n);
            assert_eq!(pieces, whole, "piece size {n}");
            assert!(complete);
        }
    }

    #[test]
    fn stream_is_complete_only_after_finish_reason() {
        let input = TEXT_STREAM.as_bytes();
        let cut = TEXT_STREAM.rfind("data:").unwrap();
        let mut d = GeminiStreamDecoder::new("m");
        let mut out = Vec::new();
        d.feed(&input[..cut], &mut out);
        d.finish(&mut out);
        assert_eq!(out.len(), 2);
        assert!(
            !d.is_complete(),
            "a stream cut before finishReason is not complete"
        );
        let mut out = Vec::new();
        d.feed(&input[cut..], &mut out);
        assert!(d.is_complete());
    }

    #[test]
    fn stream_function_call_arrives_whole() {
        let sse = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"getWeather\",\"args\": {\"location\": \"Tokyo\"}},\"thoughtSignature\": \"CikBcsja\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0,\"finishMessage\": \"Model generated function call(s).\"}],\"usageMetadata\": {\"promptTokenCount\": 83,\"candidatesTokenCount\": 14,\"totalTokenCount\": 201,\"thoughtsTokenCount\": 104},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"qpc2afWVFJK4\"}\r\n\r\n";
        let (events, complete) = decode_in_pieces(sse.as_bytes(), 9);
        assert!(complete);
        let cs = chunks(&events);
        assert_eq!(cs.len(), 1);
        let choice = &cs[0].choices[0];
        assert_eq!(choice.finish_reason, Some(types::FinishReason::ToolCalls));
        assert_eq!(choice.delta.role, Some(Role::Assistant));
        assert_eq!(choice.delta.content, None);
        assert_eq!(
            choice.delta.tool_calls,
            Some(vec![types::ToolCallDelta {
                index: 0,
                id: Some("call_0".into()),
                kind: Some("function".into()),
                function: Some(types::FunctionCallDelta {
                    name: Some("getWeather".into()),
                    arguments: Some(r#"{"location":"Tokyo"}"#.into()),
                }),
            }])
        );
        let u = cs[0].usage.as_ref().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (83, 118, 201)
        );
    }

    #[test]
    fn stream_error_event_and_blocked_prompt() {
        let sse = "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\r\n\r\n";
        let (events, complete) = decode_in_pieces(sse.as_bytes(), 4);
        assert!(!complete);
        let [StreamEvent::Error(e)] = events.as_slice() else {
            panic!("one error expected: {events:?}")
        };
        assert_eq!(e.status, 503);
        assert!(e.retryable);
        assert_eq!(
            e.message,
            "gemini returned 503 (UNAVAILABLE): The model is overloaded."
        );

        let sse = "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"},\"usageMetadata\": {\"promptTokenCount\": 5,\"totalTokenCount\": 5}}\r\n\r\n";
        let (events, complete) = decode_in_pieces(sse.as_bytes(), 4);
        assert!(complete);
        let cs = chunks(&events);
        assert_eq!(
            cs[0].choices[0].finish_reason,
            Some(types::FinishReason::ContentFilter)
        );
        assert_eq!(cs[0].usage, Some(Usage::new(5, 0)));
    }

    #[test]
    fn embeddings_both_ways() {
        let req: types::EmbeddingsRequest = serde_json::from_value(json!({
            "model": "gemini-embedding-001",
            "input": ["What is the meaning of life?", "How does the brain work?"],
            "dimensions": 768
        }))
        .unwrap();
        let c = UpstreamCall {
            model: "gemini-embedding-001",
            api_key: Some("k"),
            stream: false,
            track_usage: true,
        };
        let up = provider().embeddings_request(&req, &c).unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        );
        assert!(up.headers.contains(&("x-goog-api-key", "k".to_owned())));
        assert_eq!(
            body_json(&up),
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "What is the meaning of life?"}]}, "outputDimensionality": 768},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "How does the brain work?"}]}, "outputDimensionality": 768}
            ]})
        );
        let body =
            br#"{"embeddings": [{"values": [0.25, -0.5, 1.0]}, {"values": [0.125, 0.0, -1.0]}]}"#;
        let resp = provider().embeddings_response(body, &c).unwrap();
        assert_eq!(resp.object, "list");
        assert_eq!(resp.model, "gemini-embedding-001");
        assert_eq!(resp.data.len(), 2);
        assert_eq!(resp.data[1].index, 1);
        assert_eq!(
            resp.data[0].embedding,
            types::EmbeddingVector::Float(vec![0.25, -0.5, 1.0])
        );
        assert_eq!(resp.usage, types::EmbeddingsUsage::default());
        assert_eq!(estimate_tokens_as_words(req.input.texts().unwrap()), 11);

        let tokens: types::EmbeddingsRequest =
            serde_json::from_value(json!({"model": "m", "input": [1, 2, 3]})).unwrap();
        let err = provider().embeddings_request(&tokens, &c).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some("input"));
    }

    #[test]
    fn error_response_keeps_status_message_and_retry_delay() {
        let body = br#"{"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.5s"}]}}"#;
        let err = provider().error_response(429, body);
        assert_eq!(err.status, 429);
        assert!(err.retryable);
        assert_eq!(
            err.message,
            "gemini returned 429 (RESOURCE_EXHAUSTED): You exceeded your current quota."
        );
        assert_eq!(
            err.headers,
            vec![("retry-after".to_owned(), "37".to_owned())]
        );

        let body = br#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}"#;
        let err = provider().error_response(400, body);
        assert_eq!(err.status, 400);
        assert!(!err.retryable);
        assert!(err.headers.is_empty());

        let err = provider().error_response(502, b"<html>bad gateway</html>");
        assert_eq!(err.message, "gemini returned 502");
    }
}
