//! Amazon Bedrock, through the model-agnostic Converse API.
//!
//! `POST {base}/model/{modelId}/converse` answers JSON;
//! `POST {base}/model/{modelId}/converse-stream` answers the AWS binary
//! event stream (`application/vnd.amazon.eventstream`), not SSE. Requests
//! are signed with SigV4 for the service `bedrock` (see [`super::sigv4`]).
//!
//! Bedrock quirks this adapter deals with:
//! - The model id is one path segment, percent-encoded (`:` as `%3A`, and
//!   `/` of inference-profile ARNs as `%2F`); SigV4 then signs it encoded
//!   twice. Cross-region ids such as `us.anthropic...` pass through as is.
//! - Converse has no system role inside `messages`: system and developer
//!   messages go to the top-level `system` list. Tool results are user
//!   content blocks, and roles must alternate, so consecutive messages of
//!   the same role are merged into one.
//! - Images must be inline bytes; an http(s) image URL is a 400 here rather
//!   than a fetch by the gateway.
//! - Empty text blocks are rejected by Bedrock, so they are left out.
//! - `inputTokens` does not include prompt-cache reads and writes; the
//!   OpenAI `prompt_tokens` does, so they are added back.
//! - Stream events carry a `p` field of random padding (against length
//!   side channels); it is ignored like every unknown field.
//!
//! Parameters Converse has no place for (`seed`, penalties, `user`,
//! `response_format`, `logit_bias`, ...) are dropped; `n > 1` is refused.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::eventstream::{EventMessage, EventStreamDecoder};
use portcullis_types::usage::PromptTokensDetails;
use portcullis_types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta,
    FinishReason, FunctionCall, FunctionCallDelta, ImageUrl, Message, Role, ToolCall,
    ToolCallDelta, ToolChoice, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::sigv4::{self, SignRequest};
use super::{
    Provider, ProviderKind, ProviderSettings, Secret, StreamDecoder, StreamEvent, UpstreamCall,
    UpstreamRequest, parse_upstream_json, unix_now,
};
use crate::error::GatewayError;

/// The SigV4 signing name of Bedrock Runtime.
const SIGNING_SERVICE: &str = "bedrock";

/// `GET /foundation-models` of the Bedrock control plane:
/// `{"modelSummaries":[{"modelId":...,"outputModalities":["TEXT"],
/// "inferenceTypesSupported":["ON_DEMAND"],...}]}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FoundationModels {
    model_summaries: Vec<FoundationModel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FoundationModel {
    model_id: String,
    #[serde(default)]
    output_modalities: Vec<String>,
    #[serde(default)]
    inference_types_supported: Option<Vec<String>>,
}

/// Adapter for Amazon Bedrock's Converse and ConverseStream operations.
pub struct BedrockProvider {
    settings: ProviderSettings,
}

impl BedrockProvider {
    /// An adapter signing with `settings.aws` for the host `settings.host`.
    pub fn new(settings: ProviderSettings) -> Self {
        BedrockProvider { settings }
    }

    /// The control plane's `ListFoundationModels` at a given signing
    /// time. The adapter must be built for the control-plane host
    /// (`bedrock.{region}`), which signs under the same service name.
    fn models_request_at(&self, now: SystemTime) -> Result<UpstreamRequest, GatewayError> {
        let creds = self.credentials()?;
        let mut up = UpstreamRequest::get(format!("{}/foundation-models", self.settings.base_path));
        let signed = sigv4::sign(
            &creds,
            &SignRequest {
                service: SIGNING_SERVICE,
                method: "GET",
                host: &self.settings.host,
                path_and_query: &up.path,
                headers: &[],
                payload: &[],
            },
            now,
        )?;
        up.headers.extend(signed);
        Ok(up)
    }

    /// The keys to sign with: the AWS credential chain's refreshed keys,
    /// read (never awaited) per call; else the keys read from the
    /// environment at load.
    fn credentials(&self) -> Result<std::borrow::Cow<'_, super::AwsCredentials>, GatewayError> {
        if let Some(live) = &self.settings.live {
            return match &*live.0.current()? {
                Secret::Aws(c) => Ok(std::borrow::Cow::Owned(c.clone())),
                Secret::Bearer(_) => Err(GatewayError::internal(
                    "the bedrock provider's credential is a bearer token, not AWS keys",
                )),
            };
        }
        self.settings
            .aws
            .as_ref()
            .map(std::borrow::Cow::Borrowed)
            .ok_or_else(|| {
                GatewayError::internal(
                    "the bedrock provider has no AWS credentials (access key, secret and region) configured",
                )
            })
    }

    /// `chat_request` at a given signing time.
    fn chat_request_at(
        &self,
        req: &ChatRequest,
        call: &UpstreamCall<'_>,
        now: SystemTime,
    ) -> Result<UpstreamRequest, GatewayError> {
        let creds = self.credentials()?;
        let body = converse_body(req)?;
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| GatewayError::internal(format!("serialising request: {e}")))?;
        let operation = if call.stream {
            "converse-stream"
        } else {
            "converse"
        };
        let path = format!(
            "{}/model/{}/{operation}",
            self.settings.base_path,
            sigv4::uri_encode(call.model, true)
        );
        let mut up = UpstreamRequest::post_json(path, bytes);
        let signed = sigv4::sign(
            &creds,
            &SignRequest {
                service: SIGNING_SERVICE,
                method: "POST",
                host: &self.settings.host,
                path_and_query: &up.path,
                headers: &[("content-type", "application/json")],
                payload: &up.body,
            },
            now,
        )?;
        up.headers.push((
            "accept",
            if call.stream {
                "application/vnd.amazon.eventstream"
            } else {
                "application/json"
            }
            .to_owned(),
        ));
        up.headers.extend(signed);
        Ok(up)
    }
}

impl Provider for BedrockProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Bedrock
    }

    fn models_request(
        &self,
        _api_key: Option<&str>,
        _cursor: Option<&str>,
    ) -> Result<UpstreamRequest, GatewayError> {
        self.models_request_at(SystemTime::now())
    }

    fn models_page(&self, body: &[u8]) -> Result<super::ModelPage, GatewayError> {
        let list: FoundationModels = parse_upstream_json(ProviderKind::Bedrock, body)?;
        let models = list
            .model_summaries
            .into_iter()
            .filter(|m| {
                // Models reachable only through an inference profile or
                // provisioned throughput fail when called by their id.
                let on_demand = m
                    .inference_types_supported
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|t| t == "ON_DEMAND"));
                let speaks = m
                    .output_modalities
                    .iter()
                    .any(|o| o == "TEXT" || o == "EMBEDDING");
                on_demand && speaks
            })
            .map(|m| m.model_id)
            .collect();
        // ListFoundationModels answers in one piece.
        Ok(super::ModelPage { models, next: None })
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        self.chat_request_at(req, call, SystemTime::now())
    }

    fn chat_response(
        &self,
        body: &[u8],
        call: &UpstreamCall<'_>,
    ) -> Result<ChatResponse, GatewayError> {
        let resp: ConverseResponse = parse_upstream_json(ProviderKind::Bedrock, body)?;
        Ok(resp.into_chat_response(call.model))
    }

    fn stream_decoder(&self, call: &UpstreamCall<'_>) -> Box<dyn StreamDecoder> {
        Box::new(BedrockStreamDecoder::new(
            new_completion_id(),
            call.model.to_owned(),
            unix_now(),
        ))
    }

    fn error_response(&self, status: u16, body: &[u8]) -> GatewayError {
        // Bedrock answers `{"message": "..."}`; the error's type travels in
        // the `x-amzn-ErrorType` header, which is not needed to pick a
        // status. Some front-end errors spell the field `Message`.
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let message = parsed.as_ref().and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
        });
        match message {
            Some(m) => {
                GatewayError::upstream_status(status, format!("bedrock returned {status}: {m}"))
            }
            None => GatewayError::upstream_status(status, format!("bedrock returned {status}")),
        }
    }
}

fn new_completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------
// Request

/// The Converse request body (the model id is in the path).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseBody {
    messages: Vec<BedrockMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<TextBlock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inference_config: Option<InferenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
}

#[derive(Debug, Serialize)]
struct BedrockMessage {
    role: &'static str,
    content: Vec<ContentBlock>,
}

#[derive(Debug, Serialize)]
struct TextBlock {
    text: String,
}

/// One content block: serialises as `{"text": ...}`, `{"image": {...}}`,
/// `{"toolUse": {...}}` or `{"toolResult": {...}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ContentBlock {
    Text(String),
    Image(ImageBlock),
    ToolUse(ToolUseBlock),
    ToolResult(ToolResultBlock),
}

#[derive(Debug, Serialize)]
struct ImageBlock {
    format: &'static str,
    source: ImageSource,
}

/// Blob members travel base64-encoded in Bedrock's JSON protocol, so the
/// data URL's base64 goes through as it is.
#[derive(Debug, Serialize)]
struct ImageSource {
    bytes: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseBlock {
    tool_use_id: String,
    name: String,
    input: Value,
}

/// A tool result. `status` is left out: OpenAI tool messages carry no
/// error flag, and only some Bedrock models accept the field at all.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResultBlock {
    tool_use_id: String,
    content: Vec<ToolResultContent>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolResultContent {
    Text(String),
    Json(Value),
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    tools: Vec<ToolEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<BedrockToolChoice>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolEntry {
    tool_spec: ToolSpec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: InputSchema,
}

#[derive(Debug, Serialize)]
struct InputSchema {
    json: Value,
}

/// `{"auto":{}}`, `{"any":{}}` or `{"tool":{"name":...}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum BedrockToolChoice {
    Auto(Empty),
    Any(Empty),
    Tool(NamedTool),
}

#[derive(Debug, Serialize)]
struct Empty {}

#[derive(Debug, Serialize)]
struct NamedTool {
    name: String,
}

/// Translates the canonical request into a Converse body.
fn converse_body(req: &ChatRequest) -> Result<ConverseBody, GatewayError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(GatewayError::invalid_param(
            "n",
            "Bedrock returns one choice per request; `n` must be 1.",
        ));
    }

    let mut system = Vec::new();
    let mut messages: Vec<BedrockMessage> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                let text = m.text_content();
                if !text.is_empty() {
                    system.push(TextBlock { text });
                }
            }
            Role::User => push_blocks(&mut messages, "user", content_blocks(m, i)?),
            Role::Assistant => {
                let mut blocks = content_blocks(m, i)?;
                blocks.extend(tool_use_blocks(m, i)?);
                push_blocks(&mut messages, "assistant", blocks);
            }
            // Tool results are user turns in Converse; consecutive results
            // (and a user message that follows them) share one user message.
            Role::Tool | Role::Function => {
                push_blocks(&mut messages, "user", vec![tool_result_block(m, i)?]);
            }
        }
    }

    let stop_sequences = req.stop_sequences();
    let inference_config = (req.max_output_tokens().is_some()
        || req.temperature.is_some()
        || req.top_p.is_some()
        || !stop_sequences.is_empty())
    .then(|| InferenceConfig {
        max_tokens: req.max_output_tokens(),
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences,
    });

    let uses_tools = messages.iter().any(|m| {
        m.content
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolUse(_) | ContentBlock::ToolResult(_)))
    });
    let tool_config = tool_config(req, uses_tools)?;

    Ok(ConverseBody {
        messages,
        system,
        inference_config,
        tool_config,
    })
}

/// Appends blocks as a message of `role`, merged into the previous message
/// when it has the same role (Converse wants alternating roles).
fn push_blocks(messages: &mut Vec<BedrockMessage>, role: &'static str, blocks: Vec<ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => messages.push(BedrockMessage {
            role,
            content: blocks,
        }),
    }
}

/// The text and image blocks of a user or assistant message.
fn content_blocks(m: &Message, i: usize) -> Result<Vec<ContentBlock>, GatewayError> {
    let mut blocks = Vec::new();
    match &m.content {
        None => {}
        Some(Content::Text(text)) => {
            if !text.is_empty() {
                blocks.push(ContentBlock::Text(text.clone()));
            }
        }
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                        if !text.is_empty() {
                            blocks.push(ContentBlock::Text(text.clone()));
                        }
                    }
                    ContentPart::ImageUrl { image_url } => {
                        blocks.push(ContentBlock::Image(image_block(image_url, i, j)?));
                    }
                    ContentPart::InputAudio { .. } | ContentPart::File { .. } => {
                        return Err(GatewayError::invalid_param(
                            format!("messages[{i}].content[{j}]"),
                            "Audio and file content parts are not supported for Bedrock models.",
                        ));
                    }
                }
            }
        }
    }
    Ok(blocks)
}

/// An image block from a base64 `data:` URL.
fn image_block(image: &ImageUrl, i: usize, j: usize) -> Result<ImageBlock, GatewayError> {
    let param = || format!("messages[{i}].content[{j}].image_url.url");
    let Some((media_type, data)) = image.as_data() else {
        let message = if image.url.starts_with("http://") || image.url.starts_with("https://") {
            "Bedrock's Converse API takes image bytes, not links: send the image as a base64 `data:` URL."
        } else {
            "Image URLs must be base64 `data:` URLs for Bedrock models."
        };
        return Err(GatewayError::invalid_param(param(), message));
    };
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(GatewayError::invalid_param(
                param(),
                format!(
                    "Image type `{other}` is not supported by Bedrock; use png, jpeg, gif or webp."
                ),
            ));
        }
    };
    Ok(ImageBlock {
        format,
        source: ImageSource {
            bytes: data.to_owned(),
        },
    })
}

/// The tool calls of an assistant message as `toolUse` blocks.
fn tool_use_blocks(m: &Message, i: usize) -> Result<Vec<ContentBlock>, GatewayError> {
    let Some(calls) = &m.tool_calls else {
        return Ok(Vec::new());
    };
    calls
        .iter()
        .enumerate()
        .map(|(k, call)| {
            let args = call.function.arguments.trim();
            // Converse wants the input as a JSON document, OpenAI sends it
            // as a string; an empty string means no arguments.
            let input = if args.is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_str(args).map_err(|e| {
                    GatewayError::invalid_param(
                        format!("messages[{i}].tool_calls[{k}].function.arguments"),
                        format!("Tool call arguments must be valid JSON: {e}"),
                    )
                })?
            };
            Ok(ContentBlock::ToolUse(ToolUseBlock {
                tool_use_id: call.id.clone(),
                name: call.function.name.clone(),
                input,
            }))
        })
        .collect()
}

/// A tool (or legacy function) message as a `toolResult` block. A result
/// that is a JSON object goes as a `json` block, anything else as text.
fn tool_result_block(m: &Message, i: usize) -> Result<ContentBlock, GatewayError> {
    let id = match (m.role, &m.tool_call_id, &m.name) {
        (_, Some(id), _) => id.clone(),
        (Role::Function, None, Some(name)) => name.clone(),
        _ => {
            return Err(GatewayError::invalid_param(
                format!("messages[{i}].tool_call_id"),
                "Tool messages need the `tool_call_id` of the call they answer.",
            ));
        }
    };
    let text = m.text_content();
    let content = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => vec![ToolResultContent::Json(v)],
        _ if text.is_empty() => Vec::new(),
        _ => vec![ToolResultContent::Text(text)],
    };
    Ok(ContentBlock::ToolResult(ToolResultBlock {
        tool_use_id: id,
        content,
    }))
}

/// `toolConfig` from the tools and the tool choice.
///
/// Converse has no "none" choice. With `tool_choice: "none"` the tools are
/// left out, unless the conversation already holds tool calls or results:
/// Bedrock refuses those without a `toolConfig`, so the tools are sent
/// without a choice (the model may then still call one).
fn tool_config(req: &ChatRequest, uses_tools: bool) -> Result<Option<ToolConfig>, GatewayError> {
    let tools = match req.tools.as_deref() {
        Some(tools) if !tools.is_empty() => tools,
        _ => return Ok(None),
    };
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => Some(BedrockToolChoice::Auto(Empty {})),
            "required" => Some(BedrockToolChoice::Any(Empty {})),
            "none" if !uses_tools => return Ok(None),
            "none" => None,
            other => {
                return Err(GatewayError::invalid_param(
                    "tool_choice",
                    format!("Unknown tool_choice `{other}`; use none, auto or required."),
                ));
            }
        },
        Some(ToolChoice::Named(named)) => Some(BedrockToolChoice::Tool(NamedTool {
            name: named.function.name.clone(),
        })),
    };
    let tools =
        tools
            .iter()
            .map(|t| ToolEntry {
                tool_spec: ToolSpec {
                    name: t.function.name.clone(),
                    description: t.function.description.clone(),
                    // Bedrock requires a schema; a function without parameters
                    // takes an empty object.
                    input_schema: InputSchema {
                        json: t.function.parameters.clone().unwrap_or_else(
                            || serde_json::json!({"type": "object", "properties": {}}),
                        ),
                    },
                },
            })
            .collect();
    Ok(Some(ToolConfig { tools, tool_choice }))
}

// ---------------------------------------------------------------------------
// Response

/// The Converse response (fields the gateway does not use are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: ConverseOutput,
    stop_reason: String,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Debug, Deserialize)]
struct ConverseOutput {
    #[serde(default)]
    message: Option<OutputMessage>,
}

#[derive(Debug, Deserialize)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<OutputBlock>,
}

/// A content block of the answer; kinds other than text and tool use
/// (reasoning, images, citations) are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutputBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<OutputToolUse>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutputToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

/// Bedrock's token usage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_write_input_tokens: Option<u64>,
}

impl TokenUsage {
    /// Canonical usage. Bedrock's `inputTokens` leaves out cache reads and
    /// writes; OpenAI's `prompt_tokens` counts them (reads also appear as
    /// `cached_tokens`).
    fn into_usage(self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .saturating_add(cached)
            .saturating_add(self.cache_write_input_tokens.unwrap_or(0));
        let mut usage = Usage::new(prompt, self.output_tokens);
        usage.total_tokens = usage.total_tokens.max(self.total_tokens);
        if cached > 0 {
            usage.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: Some(cached),
                audio_tokens: None,
            });
        }
        usage.capped()
    }
}

/// Maps Bedrock's `stopReason`. Malformed-output stops and unknown future
/// values count as a plain stop.
fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

impl ConverseResponse {
    fn into_chat_response(self, model: &str) -> ChatResponse {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in self.output.message.map(|m| m.content).unwrap_or_default() {
            if let Some(t) = block.text {
                text.push_str(&t);
            }
            if let Some(tool) = block.tool_use {
                tool_calls.push(ToolCall {
                    id: tool.tool_use_id,
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: tool.name,
                        arguments: tool.input.to_string(),
                    },
                });
            }
        }
        // Like OpenAI: a message that only calls tools has null content.
        let content = if text.is_empty() && !tool_calls.is_empty() {
            None
        } else {
            Some(Content::Text(text))
        };
        let message = Message {
            role: Role::Assistant,
            content,
            name: None,
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            tool_call_id: None,
            extra: Map::new(),
        };
        ChatResponse {
            id: new_completion_id(),
            object: "chat.completion".to_owned(),
            created: unix_now(),
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason: Some(finish_reason(&self.stop_reason)),
                logprobs: None,
            }],
            usage: self.usage.map(TokenUsage::into_usage),
            system_fingerprint: None,
            extra: Map::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Stream

/// `contentBlockStart` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentBlockStartEvent {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    start: Option<ContentBlockStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentBlockStart {
    #[serde(default)]
    tool_use: Option<ToolUseStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

/// `contentBlockDelta` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentBlockDeltaEvent {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    delta: Option<ContentBlockDelta>,
}

/// A delta: text, a fragment of a tool call's JSON input, or something the
/// gateway does not translate (reasoning, citations).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentBlockDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseDelta>,
}

#[derive(Debug, Deserialize)]
struct ToolUseDelta {
    #[serde(default)]
    input: String,
}

/// `messageStop` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStopEvent {
    stop_reason: String,
}

/// `metadata` payload.
#[derive(Debug, Deserialize)]
struct MetadataEvent {
    #[serde(default)]
    usage: Option<TokenUsage>,
}

/// The payload of an exception message.
#[derive(Debug, Default, Deserialize)]
struct ExceptionPayload {
    #[serde(default, alias = "Message")]
    message: Option<String>,
}

/// Decodes a ConverseStream body: event-stream frames, each an event
/// (`:message-type: event`, named by `:event-type`, JSON payload) or an
/// exception (`:message-type: exception`, named by `:exception-type`).
///
/// A stream is complete once `messageStop` has arrived: the answer is
/// whole then. Bedrock follows it with `metadata` (usage and latency),
/// whose usage is passed on when it comes; a stream cut between the two
/// still counts as complete, only without provider usage.
struct BedrockStreamDecoder {
    frames: EventStreamDecoder,
    id: String,
    model: String,
    created: u64,
    /// Content block index of each tool-use block -> its OpenAI tool call
    /// index (tool calls are numbered among themselves, from 0).
    tool_index: HashMap<u64, u32>,
    stopped: bool,
    /// Set after a corrupt frame or an exception; later bytes are ignored.
    failed: bool,
}

impl BedrockStreamDecoder {
    fn new(id: String, model: String, created: u64) -> Self {
        BedrockStreamDecoder {
            frames: EventStreamDecoder::default(),
            id,
            model,
            created,
            tool_index: HashMap::new(),
            stopped: false,
            failed: false,
        }
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        let mut chunk = ChatChunk::new(self.id.clone(), self.model.clone(), self.created);
        chunk.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason,
            logprobs: None,
        });
        chunk
    }

    /// The tool call index of a content block, allocated on first sight.
    fn tool_call_index(&mut self, block: u64) -> u32 {
        let next = self.tool_index.len() as u32;
        *self.tool_index.entry(block).or_insert(next)
    }

    fn handle(&mut self, msg: &EventMessage) -> Result<Option<StreamEvent>, GatewayError> {
        let message_type = msg.header(":message-type").unwrap_or("event");
        if message_type == "exception" || msg.header(":exception-type").is_some() {
            let name = msg.header(":exception-type").unwrap_or("exception");
            let payload: ExceptionPayload =
                serde_json::from_slice(&msg.payload).unwrap_or_default();
            return Ok(Some(StreamEvent::Error(stream_exception(
                name,
                payload.message.as_deref().unwrap_or(""),
            ))));
        }
        if message_type == "error" {
            // The generic event-stream error form: code and message in headers.
            let code = msg.header(":error-code").unwrap_or("error");
            let message = msg.header(":error-message").unwrap_or("");
            return Ok(Some(StreamEvent::Error(stream_exception(code, message))));
        }
        if message_type != "event" {
            return Ok(None);
        }

        let payload = &msg.payload;
        let event = match msg.header(":event-type").unwrap_or("") {
            "messageStart" => {
                // The role is always assistant.
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Default::default()
                };
                Some(self.chunk(delta, None))
            }
            "contentBlockStart" => {
                let ev: ContentBlockStartEvent =
                    parse_upstream_json(ProviderKind::Bedrock, payload)?;
                match ev.start.and_then(|s| s.tool_use) {
                    Some(tool) => {
                        let index = self.tool_call_index(ev.content_block_index);
                        let call = ToolCallDelta {
                            index,
                            id: Some(tool.tool_use_id),
                            kind: Some("function".to_owned()),
                            function: Some(FunctionCallDelta {
                                name: Some(tool.name),
                                arguments: Some(String::new()),
                            }),
                        };
                        Some(self.tool_chunk(call))
                    }
                    None => None,
                }
            }
            "contentBlockDelta" => {
                let ev: ContentBlockDeltaEvent =
                    parse_upstream_json(ProviderKind::Bedrock, payload)?;
                match ev.delta {
                    Some(ContentBlockDelta {
                        text: Some(text), ..
                    }) => {
                        let delta = Delta {
                            content: Some(text),
                            ..Default::default()
                        };
                        Some(self.chunk(delta, None))
                    }
                    Some(ContentBlockDelta {
                        tool_use: Some(tool),
                        ..
                    }) => {
                        let index = self.tool_call_index(ev.content_block_index);
                        let call = ToolCallDelta {
                            index,
                            id: None,
                            kind: None,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(tool.input),
                            }),
                        };
                        Some(self.tool_chunk(call))
                    }
                    _ => None,
                }
            }
            "messageStop" => {
                let ev: MessageStopEvent = parse_upstream_json(ProviderKind::Bedrock, payload)?;
                self.stopped = true;
                Some(self.chunk(Delta::default(), Some(finish_reason(&ev.stop_reason))))
            }
            "metadata" => {
                let ev: MetadataEvent = parse_upstream_json(ProviderKind::Bedrock, payload)?;
                ev.usage.map(|u| {
                    let mut chunk =
                        ChatChunk::new(self.id.clone(), self.model.clone(), self.created);
                    chunk.usage = Some(u.into_usage());
                    chunk
                })
            }
            // contentBlockStop carries nothing to translate; unknown events
            // are skipped for forward compatibility.
            _ => None,
        };
        Ok(event.map(StreamEvent::Chunk))
    }

    fn tool_chunk(&self, call: ToolCallDelta) -> ChatChunk {
        let delta = Delta {
            tool_calls: Some(vec![call]),
            ..Default::default()
        };
        self.chunk(delta, None)
    }
}

/// The error of an in-stream exception. AWS documents HTTP statuses for
/// these; `modelStreamErrorException` is a 424 there, which means nothing
/// to an OpenAI client, so it becomes a (retryable) 502.
fn stream_exception(name: &str, message: &str) -> GatewayError {
    let text = if message.is_empty() {
        format!("bedrock stream failed with {name}")
    } else {
        format!("bedrock stream failed with {name}: {message}")
    };
    let status = match name {
        "throttlingException" => 429,
        "validationException" => 400,
        "accessDeniedException" => 403,
        "resourceNotFoundException" => 404,
        "internalServerException" => 500,
        "serviceUnavailableException" => 503,
        "modelTimeoutException" => return GatewayError::upstream_timeout(text),
        _ => 502,
    };
    GatewayError::upstream_status(status, text)
}

impl StreamDecoder for BedrockStreamDecoder {
    fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        self.frames.feed(data);
        loop {
            match self.frames.next_message() {
                Ok(Some(msg)) => match self.handle(&msg) {
                    Ok(Some(event)) => {
                        let is_error = matches!(event, StreamEvent::Error(_));
                        out.push(event);
                        if is_error {
                            // An exception ends the stream.
                            self.failed = true;
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.failed = true;
                        out.push(StreamEvent::Error(e));
                        return;
                    }
                },
                Ok(None) => return,
                Err(e) => {
                    // A bad CRC or length: frame boundaries are lost for good.
                    self.failed = true;
                    out.push(StreamEvent::Error(GatewayError::upstream_protocol(
                        format!("bedrock sent a corrupt event-stream frame: {e}"),
                    )));
                    return;
                }
            }
        }
    }

    fn finish(&mut self, _out: &mut Vec<StreamEvent>) {
        // Frames are handled as soon as they are whole: nothing is held
        // back. Leftover bytes are a cut frame, which `is_complete` reports
        // when it came before `messageStop`.
    }

    fn is_complete(&self) -> bool {
        self.stopped && !self.failed
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use crate::eventstream::encode_message;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::error::ErrorKind;
    use crate::providers::AwsCredentials;

    const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

    fn settings() -> ProviderSettings {
        ProviderSettings {
            base_path: String::new(),
            host: "bedrock-runtime.us-east-1.amazonaws.com".into(),
            aws: Some(AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
                region: "us-east-1".into(),
            }),
            ..Default::default()
        }
    }

    fn call(stream: bool) -> UpstreamCall<'static> {
        UpstreamCall {
            model: MODEL,
            api_key: None,
            stream,
            track_usage: true,
        }
    }

    fn request(json: Value) -> ChatRequest {
        serde_json::from_value(json).unwrap()
    }

    fn body_of(up: &UpstreamRequest) -> Value {
        serde_json::from_slice(&up.body).unwrap()
    }

    fn header<'a>(up: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
        up.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn request_translates_roles_tools_and_images() {
        let req = request(serde_json::json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use metric units."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "tooluse_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "tooluse_2", "type": "function",
                     "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "tooluse_1", "content": "{\"temp\":21}"},
                {"role": "tool", "tool_call_id": "tooluse_2", "content": "12:00"},
                {"role": "user", "content": "Thanks"}
            ],
            "max_tokens": 256,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "seed": 7,
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time"}}
            ],
            "tool_choice": "required"
        }));
        let up = BedrockProvider::new(settings())
            .chat_request(&req, &call(false))
            .unwrap();
        assert_eq!(up.method, http::Method::POST);
        assert_eq!(
            up.path,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(header(&up, "content-type"), Some("application/json"));
        assert_eq!(header(&up, "accept"), Some("application/json"));
        assert_eq!(
            body_of(&up),
            serde_json::json!({
                "messages": [
                    {"role": "user", "content": [
                        {"text": "Weather here?"},
                        {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}}
                    ]},
                    {"role": "assistant", "content": [
                        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
                        {"toolUse": {"toolUseId": "tooluse_2", "name": "get_time", "input": {}}}
                    ]},
                    {"role": "user", "content": [
                        {"toolResult": {"toolUseId": "tooluse_1", "content": [{"json": {"temp": 21}}]}},
                        {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "12:00"}]}},
                        {"text": "Thanks"}
                    ]}
                ],
                "system": [{"text": "Be brief."}, {"text": "Use metric units."}],
                "inferenceConfig": {"maxTokens": 256, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
                "toolConfig": {
                    "tools": [
                        {"toolSpec": {"name": "get_weather", "description": "Weather by city",
                          "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}},
                        {"toolSpec": {"name": "get_time",
                          "inputSchema": {"json": {"type": "object", "properties": {}}}}}
                    ],
                    "toolChoice": {"any": {}}
                }
            })
        );
    }

    #[test]
    fn minimal_request_and_stream_path() {
        let req = request(serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": ""}]
        }));
        let mut settings = settings();
        settings.base_path = "/bedrock".into();
        let up = BedrockProvider::new(settings)
            .chat_request(
                &req,
                &UpstreamCall {
                    model: "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
                    api_key: None,
                    stream: true,
                    track_usage: true,
                },
            )
            .unwrap();
        assert_eq!(
            up.path,
            "/bedrock/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream"
        );
        assert_eq!(
            header(&up, "accept"),
            Some("application/vnd.amazon.eventstream")
        );
        assert_eq!(
            body_of(&up),
            serde_json::json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]})
        );
    }

    #[test]
    fn tool_choice_forms() {
        let with_choice = |choice: Value| {
            let req = request(serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": choice
            }));
            converse_body(&req).map(|b| serde_json::to_value(b).unwrap()["toolConfig"].clone())
        };
        assert_eq!(
            with_choice(serde_json::json!("auto")).unwrap()["toolChoice"],
            serde_json::json!({"auto": {}})
        );
        assert_eq!(
            with_choice(serde_json::json!({"type": "function", "function": {"name": "f"}}))
                .unwrap()["toolChoice"],
            serde_json::json!({"tool": {"name": "f"}})
        );
        assert_eq!(with_choice(serde_json::json!("none")).unwrap(), Value::Null);
        let err = with_choice(serde_json::json!("sometimes")).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn http_image_urls_and_bad_requests_are_400() {
        let provider = BedrockProvider::new(settings());
        let cases = [
            (
                serde_json::json!([{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]),
                "messages[0].content[0].image_url.url",
            ),
            (
                serde_json::json!([{"role": "user", "content": [{"type": "text", "text": "x"},
                    {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}]),
                "messages[0].content[1].image_url.url",
            ),
            (
                serde_json::json!([{"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"id": "t", "type": "function",
                      "function": {"name": "f", "arguments": "{not json"}}]}]),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                serde_json::json!([{"role": "tool", "content": "r"}]),
                "messages[0].tool_call_id",
            ),
        ];
        for (messages, param) in cases {
            let req = request(serde_json::json!({"model": "m", "messages": messages}));
            let err = provider.chat_request(&req, &call(false)).unwrap_err();
            assert_eq!(err.status, 400, "{param}");
            assert_eq!(err.param.as_deref(), Some(param));
        }
        let req = request(serde_json::json!({"model": "m", "n": 2,
            "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(
            provider
                .chat_request(&req, &call(false))
                .unwrap_err()
                .param
                .as_deref(),
            Some("n")
        );
    }

    #[test]
    fn refreshed_keys_sign_in_place_of_the_static_ones() {
        let mut settings = settings();
        settings.live = Some(super::super::test_credential(Ok(Secret::Aws(
            AwsCredentials {
                access_key_id: "ASIAREFRESHED".into(),
                secret_access_key: "s".into(),
                session_token: Some("SESSION2".into()),
                region: "us-west-2".into(),
            },
        ))));
        let req = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        );
        let up = BedrockProvider::new(settings.clone())
            .chat_request(&req, &call(false))
            .unwrap();
        let auth = header(&up, "authorization").unwrap();
        assert!(
            auth.contains("Credential=ASIAREFRESHED/") && auth.contains("/us-west-2/bedrock/"),
            "{auth}"
        );
        assert_eq!(header(&up, "x-amz-security-token"), Some("SESSION2"));
        settings.live = Some(super::super::test_credential(Err(
            GatewayError::provider_auth("bedrock", "no credentials in the chain"),
        )));
        let err = BedrockProvider::new(settings)
            .chat_request(&req, &call(false))
            .unwrap_err();
        assert_eq!(err.status, 503);
        assert_eq!(err.code.as_deref(), Some("provider_auth_unavailable"));
    }

    #[test]
    fn missing_credentials_is_an_internal_error() {
        let mut settings = settings();
        settings.aws = None;
        let req = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        );
        let err = BedrockProvider::new(settings)
            .chat_request(&req, &call(false))
            .unwrap_err();
        assert_eq!(err.status, 500);
        assert!(
            err.message.contains("no AWS credentials"),
            "{}",
            err.message
        );
    }

    #[test]
    fn signed_request_has_scope_and_signed_headers() {
        let mut settings = settings();
        if let Some(aws) = settings.aws.as_mut() {
            aws.session_token = Some("SESSION".into());
            aws.region = "eu-west-3".into();
        }
        let req = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}),
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let up = BedrockProvider::new(settings)
            .chat_request_at(&req, &call(true), now)
            .unwrap();
        assert_eq!(header(&up, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(header(&up, "x-amz-security-token"), Some("SESSION"));
        assert_eq!(
            header(&up, "x-amz-content-sha256"),
            Some(hex::encode(Sha256::digest(&up.body)).as_str())
        );
        let auth = header(&up, "authorization").unwrap();
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-3/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature=";
        assert!(auth.starts_with(prefix), "{auth}");
        let signature = &auth[prefix.len()..];
        assert_eq!(signature.len(), 64);
        assert!(
            signature
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        // The signature the gateway's own SigV4 implementation computed for
        // this request (double-encoded path, session token signed), which
        // aws-sigv4 reproduces.
        assert_eq!(
            signature,
            "9a401f1df37cf3b7737e34e3fef6f611f1bb17347fe5da1969191ae5672e6d57"
        );
    }

    #[test]
    fn response_with_text() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello! "},{"text":"How can I help?"}]}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":8,"totalTokens":20},"metrics":{"latencyMs":402}}"#;
        let resp = BedrockProvider::new(settings())
            .chat_response(body, &call(false))
            .unwrap();
        assert!(resp.id.starts_with("chatcmpl-"));
        assert_eq!(resp.id.len(), "chatcmpl-".len() + 32);
        assert_eq!(resp.model, MODEL);
        assert_eq!(resp.object, "chat.completion");
        assert!(resp.created > 1_700_000_000);
        assert_eq!(resp.choices.len(), 1);
        let choice = &resp.choices[0];
        assert_eq!(choice.message.role, Role::Assistant);
        assert_eq!(
            choice.message.content,
            Some(Content::Text("Hello! How can I help?".into()))
        );
        assert_eq!(choice.message.tool_calls, None);
        assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
        assert_eq!(resp.usage, Some(Usage::new(12, 8)));
    }

    #[test]
    fn response_with_tool_use_and_cache() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"toolUse":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","name":"get_weather","input":{"city":"Paris"}}}]}},"stopReason":"tool_use","usage":{"inputTokens":20,"outputTokens":30,"totalTokens":150,"cacheReadInputTokens":60,"cacheWriteInputTokens":40}}"#;
        let resp = BedrockProvider::new(settings())
            .chat_response(body, &call(false))
            .unwrap();
        let choice = &resp.choices[0];
        assert_eq!(choice.message.content, None);
        assert_eq!(
            choice.message.tool_calls,
            Some(vec![ToolCall {
                id: "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                },
            }])
        );
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        let usage = resp.usage.unwrap();
        assert_eq!(usage.prompt_tokens, 120);
        assert_eq!(usage.completion_tokens, 30);
        assert_eq!(usage.total_tokens, 150);
        assert_eq!(usage.cached_tokens(), 60);
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(finish_reason("end_turn"), FinishReason::Stop);
        assert_eq!(finish_reason("stop_sequence"), FinishReason::Stop);
        assert_eq!(finish_reason("max_tokens"), FinishReason::Length);
        assert_eq!(finish_reason("tool_use"), FinishReason::ToolCalls);
        assert_eq!(
            finish_reason("guardrail_intervened"),
            FinishReason::ContentFilter
        );
        assert_eq!(
            finish_reason("content_filtered"),
            FinishReason::ContentFilter
        );
    }

    #[test]
    fn unreadable_response_is_a_protocol_error() {
        let err = BedrockProvider::new(settings())
            .chat_response(br#"{"output":{}}"#, &call(false))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::UpstreamProtocol);
    }

    #[test]
    fn error_body_message_is_kept() {
        let provider = BedrockProvider::new(settings());
        let err = provider.error_response(
            400,
            br#"{"message":"The provided model identifier is invalid."}"#,
        );
        assert_eq!(err.status, 400);
        assert_eq!(
            err.message,
            "bedrock returned 400: The provided model identifier is invalid."
        );
        let err = provider.error_response(429, br#"{"Message":"Too many requests"}"#);
        assert_eq!(err.status, 429);
        assert_eq!(err.message, "bedrock returned 429: Too many requests");
        assert_eq!(
            provider.error_response(503, b"").message,
            "bedrock returned 503"
        );
    }

    // --- streams -----------------------------------------------------------

    fn event(event_type: &str, payload: &str) -> Vec<u8> {
        encode_message(
            &[
                (":event-type", event_type),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    fn exception(exception_type: &str, message: &str) -> Vec<u8> {
        encode_message(
            &[
                (":exception-type", exception_type),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            serde_json::json!({ "message": message })
                .to_string()
                .as_bytes(),
        )
    }

    /// A ConverseStream answer with text, one tool call and usage, shaped
    /// like the documented events (padding `p` included).
    fn converse_stream() -> Vec<u8> {
        [
            event("messageStart", r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ","role":"assistant"}"#),
            event("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Let me check"},"p":"abcdefghijkl"}"#),
            event("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":" the weather."},"p":"abcd"}"#),
            event("contentBlockStop", r#"{"contentBlockIndex":0,"p":"abcdefg"}"#),
            event("contentBlockStart", r#"{"contentBlockIndex":1,"p":"ab","start":{"toolUse":{"name":"get_weather","toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"}}}"#),
            event("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}},"p":"abcdef"}"#),
            event("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}},"p":"abc"}"#),
            event("contentBlockStop", r#"{"contentBlockIndex":1,"p":"abcdefghijk"}"#),
            event("messageStop", r#"{"p":"abcdefghijklmnopqrstu","stopReason":"tool_use"}"#),
            event("metadata", r#"{"metrics":{"latencyMs":1234},"p":"abc","usage":{"inputTokens":350,"outputTokens":42,"totalTokens":392}}"#),
        ]
        .concat()
    }

    fn decoder() -> BedrockStreamDecoder {
        BedrockStreamDecoder::new("chatcmpl-test".into(), MODEL.into(), 1_700_000_000)
    }

    /// Feeds `bytes` in pieces of `step` bytes.
    fn decode(bytes: &[u8], step: usize) -> (Vec<StreamEvent>, bool) {
        let mut d = decoder();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            d.feed(piece, &mut out);
        }
        d.finish(&mut out);
        (out, d.is_complete())
    }

    /// What a client would assemble: text, (id, name, arguments) per tool
    /// call, finish reason, usage.
    struct Assembled {
        text: String,
        tools: Vec<(String, String, String)>,
        finish: Option<FinishReason>,
        usage: Option<Usage>,
        role: Option<Role>,
    }

    fn assemble(events: &[StreamEvent]) -> Assembled {
        let mut a = Assembled {
            text: String::new(),
            tools: Vec::new(),
            finish: None,
            usage: None,
            role: None,
        };
        for ev in events {
            let StreamEvent::Chunk(chunk) = ev else {
                panic!("unexpected {ev:?}")
            };
            assert_eq!(chunk.id, "chatcmpl-test");
            assert_eq!(chunk.model, MODEL);
            if let Some(u) = &chunk.usage {
                a.usage = Some(u.clone());
            }
            for choice in &chunk.choices {
                if let Some(r) = choice.delta.role {
                    a.role = Some(r);
                }
                if let Some(t) = &choice.delta.content {
                    a.text.push_str(t);
                }
                for call in choice.delta.tool_calls.iter().flatten() {
                    let i = call.index as usize;
                    if i == a.tools.len() {
                        a.tools.push(Default::default());
                    }
                    if let Some(id) = &call.id {
                        a.tools[i].0.push_str(id);
                    }
                    if let Some(f) = &call.function {
                        a.tools[i].1.push_str(f.name.as_deref().unwrap_or(""));
                        a.tools[i].2.push_str(f.arguments.as_deref().unwrap_or(""));
                    }
                }
                if choice.finish_reason.is_some() {
                    a.finish = choice.finish_reason;
                }
            }
        }
        a
    }

    #[test]
    fn stream_whole() {
        let (events, complete) = decode(&converse_stream(), usize::MAX);
        assert!(complete);
        // messageStart, 2 text deltas, tool start, 2 tool deltas,
        // messageStop, metadata; the contentBlockStops yield nothing.
        assert_eq!(events.len(), 8);
        let a = assemble(&events);
        assert_eq!(a.role, Some(Role::Assistant));
        assert_eq!(a.text, "Let me check the weather.");
        assert_eq!(
            a.tools,
            vec![(
                "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".to_owned(),
                "get_weather".to_owned(),
                r#"{"city":"Paris"}"#.to_owned()
            )]
        );
        assert_eq!(a.finish, Some(FinishReason::ToolCalls));
        assert_eq!(
            a.usage,
            Some(Usage {
                prompt_tokens: 350,
                completion_tokens: 42,
                total_tokens: 392,
                ..Default::default()
            })
        );
        // The tool call's first delta carries id, type and name; it is
        // tool call 0 although it is content block 1.
        let StreamEvent::Chunk(start) = &events[3] else {
            panic!()
        };
        assert_eq!(
            start.choices[0].delta.tool_calls,
            Some(vec![ToolCallDelta {
                index: 0,
                id: Some("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".into()),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta {
                    name: Some("get_weather".into()),
                    arguments: Some(String::new()),
                }),
            }])
        );
        // The usage chunk has no choices.
        let StreamEvent::Chunk(last) = &events[7] else {
            panic!()
        };
        assert!(last.choices.is_empty());
    }

    #[test]
    fn stream_in_pieces_matches_whole() {
        let bytes = converse_stream();
        let (whole, _) = decode(&bytes, usize::MAX);
        for step in 1..=bytes.len().min(200) {
            let (pieces, complete) = decode(&bytes, step);
            assert!(complete, "step {step}");
            assert_eq!(pieces, whole, "step {step}");
        }
    }

    #[test]
    fn stream_complete_after_message_stop_without_metadata() {
        let bytes = [
            event("messageStart", r#"{"role":"assistant"}"#),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
            ),
        ]
        .concat();
        let (_, complete) = decode(&bytes, 7);
        assert!(!complete, "no messageStop yet");
        let bytes = [
            bytes,
            event("messageStop", r#"{"stopReason":"max_tokens"}"#),
        ]
        .concat();
        let (events, complete) = decode(&bytes, 7);
        assert!(complete);
        let a = assemble(&events);
        assert_eq!(a.text, "Hi");
        assert_eq!(a.finish, Some(FinishReason::Length));
        assert_eq!(a.usage, None);
    }

    #[test]
    fn stream_exception_becomes_error() {
        let bytes = [
            event("messageStart", r#"{"role":"assistant"}"#),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Par"}}"#,
            ),
            exception(
                "throttlingException",
                "Too many requests, please wait before trying again.",
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"is"}}"#,
            ),
        ]
        .concat();
        let (events, complete) = decode(&bytes, 5);
        assert!(!complete);
        assert_eq!(events.len(), 3, "nothing after the exception");
        let StreamEvent::Error(err) = &events[2] else {
            panic!("error expected, got {:?}", events[2])
        };
        assert_eq!(err.status, 429);
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.retryable);
        assert_eq!(
            err.message,
            "bedrock stream failed with throttlingException: Too many requests, please wait before trying again."
        );
    }

    #[test]
    fn stream_exception_statuses() {
        for (name, status) in [
            ("validationException", 400),
            ("internalServerException", 500),
            ("modelStreamErrorException", 502),
            ("serviceUnavailableException", 503),
            ("somethingNewException", 502),
        ] {
            let (events, complete) = decode(&exception(name, "boom"), usize::MAX);
            assert!(!complete);
            let [StreamEvent::Error(err)] = events.as_slice() else {
                panic!("{name}: {events:?}")
            };
            assert_eq!(err.status, status, "{name}");
            assert!(err.message.ends_with(": boom"), "{name}");
        }
    }

    #[test]
    fn corrupt_frame_is_a_protocol_error() {
        let good = event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"ok"}}"#,
        );
        let mut bad = event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"xx"}}"#,
        );
        let at = bad.len() - 8; // inside the payload
        bad[at] ^= 0x20;
        let bytes = [
            good.clone(),
            bad,
            good,
            event("messageStop", r#"{"stopReason":"end_turn"}"#),
        ]
        .concat();
        for step in [1, 3, usize::MAX] {
            let (events, complete) = decode(&bytes, step);
            assert!(!complete, "step {step}");
            assert_eq!(
                events.len(),
                2,
                "step {step}: decoding stops at the bad frame"
            );
            assert_eq!(assemble(&events[..1]).text, "ok");
            let StreamEvent::Error(err) = &events[1] else {
                panic!("error expected")
            };
            assert_eq!(err.kind, ErrorKind::UpstreamProtocol);
            assert_eq!(err.status, 502);
            assert!(err.message.contains("CRC"), "{}", err.message);
        }
    }

    #[test]
    fn unreadable_event_payload_is_a_protocol_error() {
        let (events, complete) = decode(&event("messageStop", r#"{"stop":1}"#), usize::MAX);
        assert!(!complete);
        let [StreamEvent::Error(err)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(err.kind, ErrorKind::UpstreamProtocol);
    }

    #[test]
    fn lists_on_demand_text_models_from_the_control_plane() {
        let p = BedrockProvider::new(ProviderSettings {
            host: "bedrock.us-east-1.amazonaws.com".into(),
            ..settings()
        });
        let up = p
            .models_request_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .unwrap();
        assert_eq!(up.method, http::Method::GET);
        assert_eq!(up.path, "/foundation-models");
        let auth = header(&up, "authorization").unwrap();
        assert!(
            auth.contains("/20231114/us-east-1/bedrock/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date"),
            "{auth}"
        );
        // The hash of the empty body.
        assert_eq!(
            header(&up, "x-amz-content-sha256"),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let page = p
            .models_page(br#"{"modelSummaries":[
                {"modelArn":"arn:a","modelId":"amazon.titan-embed-text-v2:0","outputModalities":["EMBEDDING"],"inferenceTypesSupported":["ON_DEMAND"]},
                {"modelId":"anthropic.claude-3-5-sonnet-20240620-v1:0","outputModalities":["TEXT"],"inferenceTypesSupported":["ON_DEMAND","PROVISIONED"]},
                {"modelId":"anthropic.claude-sonnet-4-v1:0","outputModalities":["TEXT"],"inferenceTypesSupported":["INFERENCE_PROFILE"]},
                {"modelId":"stability.sd3","outputModalities":["IMAGE"],"inferenceTypesSupported":["ON_DEMAND"]}]}"#)
            .unwrap();
        assert_eq!(
            page.models,
            vec![
                "amazon.titan-embed-text-v2:0",
                "anthropic.claude-3-5-sonnet-20240620-v1:0"
            ]
        );
        assert_eq!(page.next, None);
        assert!(p.models_page(br#"{"models":[]}"#).is_err());
    }
}
