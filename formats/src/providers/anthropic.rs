//! Anthropic Messages API adapter (`POST {base}/v1/messages`).
//!
//! Translates the canonical (OpenAI-shaped) chat request into Anthropic's
//! Messages format, and Anthropic's message and SSE stream back into
//! canonical responses and chunks. The wire types defined here are shared
//! with the inbound Anthropic format (`crate::inbound::anthropic`), which
//! speaks the same JSON to clients.
//!
//! Anthropic quirks this module absorbs:
//! - `max_tokens` is required: the client's limit, else the provider's
//!   `default_max_tokens`.
//! - System prompts are a top-level `system` field, not a message.
//! - Roles must alternate user/assistant: consecutive messages of the same
//!   role are merged, and tool results travel as `tool_result` blocks in a
//!   user message.
//! - `temperature` ranges over 0..=1 (OpenAI: 0..=2); larger values are
//!   clamped to 1.
//! - There is no JSON mode: `response_format` becomes an instruction
//!   appended to the system prompt (with the schema, for `json_schema`).
//!   The model follows it reliably, but unlike OpenAI's strict mode the
//!   output is not guaranteed to validate.
//! - Overloaded is HTTP 529, a status no generic client knows; it is
//!   surfaced as 503, which retry logic treats the same way.
//!
//! OpenAI parameters with no Anthropic equivalent are dropped silently:
//! `seed`, `logit_bias`, `logprobs`, `top_logprobs`, `presence_penalty`,
//! `frequency_penalty`, `stream_options` (Anthropic always reports usage),
//! `service_tier`, `store`, `reasoning_effort`, `modalities`, `audio`,
//! `prediction`, `tools[].function.strict`, and any other key of
//! `ChatRequest::extra`. `n` greater than 1 is rejected with a 400, as
//! Anthropic returns one completion per request.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use portcullis_types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta,
    FinishReason, FunctionCall, FunctionCallDelta, ImageUrl, Message, PromptTokensDetails,
    ResponseFormat, Role, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Provider, ProviderKind, ProviderSettings, StreamDecoder, StreamEvent, UpstreamCall,
    UpstreamRequest, parse_upstream_json, unix_now, upstream_error_message,
};
use crate::error::GatewayError;
use crate::sse::{SseEvent, SseParser};

/// A page of `GET /v1/models`: `{"data":[{"type":"model","id":...}],
/// "has_more":true,"first_id":...,"last_id":...}`; the next page is asked
/// for with `after_id={last_id}`.
#[derive(Deserialize)]
struct ModelListPage {
    data: Vec<ListedModel>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

#[derive(Deserialize)]
struct ListedModel {
    id: String,
}

/// The `anthropic-version` header sent when the provider config sets none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

// ---------------------------------------------------------------------------
// Wire types (shared with the inbound Anthropic format)
// ---------------------------------------------------------------------------

/// A string or a list of blocks: Anthropic accepts both for message
/// `content`, `system` and `tool_result.content`.
///
/// Deserialized by hand (not `#[serde(untagged)]`) so that an error inside
/// a block keeps its path (`messages[0].content[1]`) for
/// `serde_path_to_error`, instead of "did not match any variant".
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TextOr<T> {
    Text(String),
    Blocks(Vec<T>),
}

impl<T: Serialize> Serialize for TextOr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TextOr::Text(t) => s.serialize_str(t),
            TextOr::Blocks(blocks) => {
                let mut seq = s.serialize_seq(Some(blocks.len()))?;
                for b in blocks {
                    seq.serialize_element(b)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = TextOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element()? {
                    blocks.push(b);
                }
                Ok(TextOr::Blocks(blocks))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `user` or `assistant`: the only roles of a Messages conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WireRole {
    User,
    Assistant,
}

/// One message of a Messages conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireMessage {
    pub role: WireRole,
    pub content: TextOr<Block>,
}

/// A content block, in requests and responses. Fields the gateway does not
/// translate (`cache_control`, `citations`) are ignored when read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    Document {
        source: DocumentSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<TextOr<Block>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Extended thinking output; the canonical format has no place for it.
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    /// Any block type this gateway does not know (server tools, search
    /// results, ...): skipped in responses, rejected in requests.
    #[serde(other)]
    Unsupported,
}

/// Where an image block's bytes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

/// Where a document block's bytes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum DocumentSource {
    Base64 { media_type: String, data: String },
    Text { media_type: String, data: String },
    Url { url: String },
}

/// A client tool definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireTool {
    /// Absent or `custom` for client tools; server tools (`bash_...`,
    /// `web_search_...`) carry their versioned type here.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: Value,
}

/// `tool_choice`. Anthropic puts the parallel-calls switch inside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WireToolChoice {
    Auto {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

/// Request `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// Anthropic's usage object. Every field may be absent or `null`
/// (`message_delta` often carries `output_tokens` only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AnthropicUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Canonical usage. Anthropic's `input_tokens` excludes cached tokens,
    /// OpenAI's `prompt_tokens` includes them: cache reads and cache writes
    /// are added back, and cache reads are reported as `cached_tokens`.
    pub fn into_usage(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(read)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let mut usage = Usage::new(prompt, self.output_tokens.unwrap_or(0));
        if self.cache_read_input_tokens.is_some() {
            usage.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: Some(read),
                audio_tokens: None,
            });
        }
        usage.capped()
    }
}

/// A Messages API response (`type: "message"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MessagesResponse {
    pub id: String,
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    #[serde(default = "assistant_role")]
    pub role: WireRole,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<Block>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: AnthropicUsage,
}

fn message_type() -> String {
    "message".to_owned()
}

fn assistant_role() -> WireRole {
    WireRole::Assistant
}

/// The Messages request body this adapter sends.
#[derive(Debug, Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata>,
}

// ---------------------------------------------------------------------------
// Mappings shared with the inbound format
// ---------------------------------------------------------------------------

/// Canonical finish reason of an Anthropic `stop_reason`.
pub(crate) fn finish_reason_of(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn (a server tool paused a long
        // turn; the client continues it) and anything newer.
        _ => FinishReason::Stop,
    }
}

/// Anthropic `stop_reason` of a canonical finish reason.
pub(crate) fn stop_reason_of(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls | FinishReason::FunctionCall => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// The HTTP status an Anthropic error `type` stands for (used for errors
/// inside a stream, which arrive after a 200). `overloaded_error` is 529 at
/// Anthropic; it is reported as 503.
fn status_of_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 503,
        _ => 500,
    }
}

// ---------------------------------------------------------------------------
// The adapter
// ---------------------------------------------------------------------------

/// The Anthropic Messages API provider.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    settings: ProviderSettings,
}

impl AnthropicProvider {
    /// An adapter for one configured Anthropic provider.
    pub fn new(settings: ProviderSettings) -> Self {
        AnthropicProvider { settings }
    }

    /// The `anthropic-version` header every request carries.
    fn version(&self) -> String {
        self.settings
            .anthropic_version
            .clone()
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_owned())
    }

    fn build_body<'a>(
        &self,
        req: &ChatRequest,
        call: &UpstreamCall<'a>,
    ) -> Result<MessagesRequest<'a>, GatewayError> {
        if req.n.is_some_and(|n| n > 1) {
            return Err(GatewayError::invalid_param(
                "n",
                "Anthropic models return one completion per request: `n` must be 1.",
            ));
        }
        let (mut system, messages) = convert_messages(&req.messages)?;
        if let Some(rf) = &req.response_format
            && let Some(instruction) = json_instruction(rf)?
        {
            system = Some(match system {
                Some(s) => format!("{s}\n\n{instruction}"),
                None => instruction,
            });
        }

        let tools =
            req.tools
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, t)| {
                    if t.kind != "function" {
                        return Err(GatewayError::invalid_param(
                            format!("tools[{i}].type"),
                            format!(
                                "Tool type `{}` is not supported by Anthropic models.",
                                t.kind
                            ),
                        ));
                    }
                    Ok(WireTool {
                        kind: None,
                        name: t.function.name.clone(),
                        description: t.function.description.clone(),
                        // Anthropic requires a schema; OpenAI allows none for a
                        // function without parameters.
                        input_schema: t.function.parameters.clone().unwrap_or_else(
                            || serde_json::json!({"type": "object", "properties": {}}),
                        ),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;

        // Anthropic rejects `tool_choice` without tools, so it is only sent
        // alongside them.
        let disable_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
        let tool_choice = if tools.is_empty() {
            None
        } else {
            match &req.tool_choice {
                None if disable_parallel.is_some() => Some(WireToolChoice::Auto {
                    disable_parallel_tool_use: disable_parallel,
                }),
                None => None,
                Some(ToolChoice::Mode(m)) => Some(match m.as_str() {
                    "auto" => WireToolChoice::Auto {
                        disable_parallel_tool_use: disable_parallel,
                    },
                    "required" => WireToolChoice::Any {
                        disable_parallel_tool_use: disable_parallel,
                    },
                    "none" => WireToolChoice::None,
                    other => {
                        return Err(GatewayError::invalid_param(
                            "tool_choice",
                            format!(
                                "Unknown tool_choice `{other}`: expected none, auto, required or a named function."
                            ),
                        ));
                    }
                }),
                Some(ToolChoice::Named(n)) => Some(WireToolChoice::Tool {
                    name: n.function.name.clone(),
                    disable_parallel_tool_use: disable_parallel,
                }),
            }
        };

        Ok(MessagesRequest {
            model: call.model,
            max_tokens: req
                .max_output_tokens()
                .unwrap_or(self.settings.default_max_tokens),
            system,
            messages,
            temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
            top_p: req.top_p,
            stop_sequences: req.stop_sequences(),
            stream: call.stream,
            tools,
            tool_choice,
            metadata: req.user.as_ref().map(|u| WireMetadata {
                user_id: Some(u.clone()),
            }),
        })
    }
}

impl Provider for AnthropicProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn models_request(
        &self,
        api_key: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<UpstreamRequest, GatewayError> {
        // 1000 is the largest page the API gives: one request for any
        // account today, pages followed all the same.
        let mut path = format!("{}/v1/models?limit=1000", self.settings.base_path);
        if let Some(after) = cursor {
            path.push_str("&after_id=");
            path.push_str(&super::sigv4::uri_encode(after, true));
        }
        let mut up = UpstreamRequest::get(path);
        if let Some(key) = api_key {
            up.headers.push(("x-api-key", key.to_owned()));
        }
        up.headers.push(("anthropic-version", self.version()));
        Ok(up)
    }

    fn models_page(&self, body: &[u8]) -> Result<super::ModelPage, GatewayError> {
        let page: ModelListPage = parse_upstream_json(ProviderKind::Anthropic, body)?;
        let next = if page.has_more {
            // `has_more` without `last_id` would ask for page one again.
            Some(page.last_id.ok_or_else(|| {
                GatewayError::upstream_protocol(
                    "anthropic's model list has more pages but no `last_id`",
                )
            })?)
        } else {
            None
        };
        Ok(super::ModelPage {
            models: page.data.into_iter().map(|m| m.id).collect(),
            next,
        })
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body = self.build_body(req, call)?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| GatewayError::internal(format!("serializing Anthropic request: {e}")))?;
        let mut up =
            UpstreamRequest::post_json(format!("{}/v1/messages", self.settings.base_path), body);
        if let Some(key) = call.api_key {
            up.headers.push(("x-api-key", key.to_owned()));
        }
        up.headers.push(("anthropic-version", self.version()));
        Ok(up)
    }

    fn chat_response(
        &self,
        body: &[u8],
        _call: &UpstreamCall<'_>,
    ) -> Result<ChatResponse, GatewayError> {
        let msg: MessagesResponse = parse_upstream_json(ProviderKind::Anthropic, body)?;
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in msg.content {
            match block {
                // Anthropic splits text into several blocks around citations:
                // they concatenate without a separator.
                Block::Text { text: t } => text.push_str(&t),
                Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                    id,
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name,
                        arguments: input.to_string(),
                    },
                }),
                // Thinking and server-tool blocks have no canonical form.
                _ => {}
            }
        }
        let content = if text.is_empty() && !tool_calls.is_empty() {
            None
        } else {
            Some(Content::Text(text))
        };
        Ok(ChatResponse {
            id: msg.id,
            object: "chat.completion".to_owned(),
            created: unix_now(),
            model: msg.model,
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: Role::Assistant,
                    content,
                    name: None,
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                    tool_call_id: None,
                    extra: Map::new(),
                },
                finish_reason: msg.stop_reason.as_deref().map(finish_reason_of),
                logprobs: None,
            }],
            usage: Some(msg.usage.into_usage()),
            system_fingerprint: None,
            extra: Map::new(),
        })
    }

    fn stream_decoder(&self, call: &UpstreamCall<'_>) -> Box<dyn StreamDecoder> {
        Box::new(MessagesStreamDecoder::new(call.model))
    }

    fn error_response(&self, status: u16, body: &[u8]) -> GatewayError {
        // Anthropic's body is {"type":"error","error":{"type","message"}}:
        // the shared reader finds `error.message`.
        let message = upstream_error_message(ProviderKind::Anthropic, status, body);
        // 529 (overloaded) is Anthropic's own status; 503 means the same to
        // every client and retry policy.
        let status = if status == 529 { 503 } else { status };
        GatewayError::upstream_status(status, message)
    }
}

/// The instruction that stands in for OpenAI's JSON modes.
fn json_instruction(rf: &ResponseFormat) -> Result<Option<String>, GatewayError> {
    const BASE: &str = "Respond with a single valid JSON object and nothing else: no prose, no Markdown code fences.";
    match rf.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(BASE.to_owned())),
        "json_schema" => {
            let Some(schema) = rf.json_schema.as_ref().and_then(|s| s.schema.as_ref()) else {
                return Ok(Some(BASE.to_owned()));
            };
            Ok(Some(format!(
                "{BASE} The object must conform to this JSON Schema:\n{schema}"
            )))
        }
        other => Err(GatewayError::invalid_param(
            "response_format.type",
            format!(
                "Unknown response_format type `{other}`: expected text, json_object or json_schema."
            ),
        )),
    }
}

/// Splits canonical messages into Anthropic's `system` and an alternating
/// user/assistant conversation.
fn convert_messages(
    messages: &[Message],
) -> Result<(Option<String>, Vec<WireMessage>), GatewayError> {
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<WireMessage> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            // Anthropic has one system prompt; system messages anywhere in
            // the conversation are gathered into it, in order.
            Role::System | Role::Developer => {
                let t = m.text_content();
                if !t.is_empty() {
                    system.push(t);
                }
            }
            Role::User => {
                let mut blocks = Vec::new();
                for (j, part) in content_parts(m).into_iter().enumerate() {
                    if let Some(b) = part_to_block(part, &format!("messages[{i}].content[{j}]"))? {
                        blocks.push(b);
                    }
                }
                push_blocks(&mut out, WireRole::User, blocks);
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                for (j, part) in content_parts(m).into_iter().enumerate() {
                    if let Some(b) = part_to_block(part, &format!("messages[{i}].content[{j}]"))? {
                        blocks.push(b);
                    }
                }
                for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
                    blocks.push(Block::ToolUse {
                        id: tc.id.clone(),
                        name: tc.function.name.clone(),
                        input: tool_input(
                            &tc.function.arguments,
                            &format!("messages[{i}].tool_calls[{j}].function.arguments"),
                        )?,
                    });
                }
                push_blocks(&mut out, WireRole::Assistant, blocks);
            }
            Role::Tool => {
                let Some(id) = m.tool_call_id.clone() else {
                    return Err(GatewayError::invalid_param(
                        format!("messages[{i}].tool_call_id"),
                        "A tool message needs the `tool_call_id` it answers.",
                    ));
                };
                let content = match &m.content {
                    None => None,
                    Some(Content::Text(t)) if t.is_empty() => None,
                    Some(Content::Text(t)) => Some(TextOr::Text(t.clone())),
                    Some(Content::Parts(parts)) => {
                        let mut blocks = Vec::new();
                        for (j, part) in parts.iter().enumerate() {
                            if let Some(b) =
                                part_to_block(part.clone(), &format!("messages[{i}].content[{j}]"))?
                            {
                                blocks.push(b);
                            }
                        }
                        (!blocks.is_empty()).then_some(TextOr::Blocks(blocks))
                    }
                };
                // Tool results are user content at Anthropic; consecutive
                // tool messages merge into one user turn, and a following
                // user message joins it after the results, which is the
                // order Anthropic requires.
                push_blocks(
                    &mut out,
                    WireRole::User,
                    vec![Block::ToolResult {
                        tool_use_id: id,
                        content,
                        is_error: None,
                    }],
                );
            }
            Role::Function => {
                return Err(GatewayError::invalid_param(
                    format!("messages[{i}].role"),
                    "The legacy `function` role is not supported for Anthropic models; use `tool` messages.",
                ));
            }
        }
    }

    // A final assistant message is a prefill, and Anthropic rejects one
    // ending in whitespace.
    if let Some(last) = out.last_mut()
        && last.role == WireRole::Assistant
        && let TextOr::Blocks(blocks) = &mut last.content
    {
        if let Some(Block::Text { text }) = blocks.last_mut() {
            let trimmed = text.trim_end().len();
            text.truncate(trimmed);
            if text.is_empty() {
                blocks.pop();
            }
        }
        if blocks.is_empty() {
            out.pop();
        }
    }

    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, out))
}

/// A message's content as parts; none when it has no content.
fn content_parts(m: &Message) -> Vec<ContentPart> {
    m.content.as_ref().map(Content::parts).unwrap_or_default()
}

/// Appends blocks as a turn of `role`, merging into the previous turn when
/// it has the same role (Anthropic requires strict alternation). Empty
/// turns are dropped: Anthropic rejects messages without content.
fn push_blocks(out: &mut Vec<WireMessage>, role: WireRole, blocks: Vec<Block>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.role == role
        && let TextOr::Blocks(existing) = &mut last.content
    {
        existing.extend(blocks);
        return;
    }
    out.push(WireMessage {
        role,
        content: TextOr::Blocks(blocks),
    });
}

/// One canonical content part as an Anthropic block (`None` for parts that
/// carry nothing, such as empty text, which Anthropic rejects).
fn part_to_block(part: ContentPart, path: &str) -> Result<Option<Block>, GatewayError> {
    match part {
        ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
            Ok((!text.is_empty()).then_some(Block::Text { text }))
        }
        ContentPart::ImageUrl { image_url } => Ok(Some(image_block(&image_url, path)?)),
        ContentPart::File { file } => {
            // OpenAI file parts carry a data URL in `file_data`; a PDF maps
            // onto a document block. `file_id` refers to OpenAI's file store.
            let data_url = file
                .get("file_data")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let parsed = ImageUrl {
                url: data_url.to_owned(),
                detail: None,
            };
            match parsed.as_data() {
                Some((media_type, data)) if media_type == "application/pdf" => {
                    Ok(Some(Block::Document {
                        source: DocumentSource::Base64 {
                            media_type: media_type.to_owned(),
                            data: data.to_owned(),
                        },
                    }))
                }
                _ => Err(GatewayError::invalid_param(
                    path,
                    "Anthropic models accept file parts only as a base64 PDF in `file_data`.",
                )),
            }
        }
        ContentPart::InputAudio { .. } => Err(GatewayError::invalid_param(
            path,
            "Anthropic models do not accept audio input.",
        )),
    }
}

/// An image part as an Anthropic image block.
fn image_block(image: &ImageUrl, path: &str) -> Result<Block, GatewayError> {
    if let Some((media_type, data)) = image.as_data() {
        return Ok(Block::Image {
            source: ImageSource::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            },
        });
    }
    if image.url.starts_with("https://") || image.url.starts_with("http://") {
        return Ok(Block::Image {
            source: ImageSource::Url {
                url: image.url.clone(),
            },
        });
    }
    Err(GatewayError::invalid_param(
        format!("{path}.image_url.url"),
        "An image must be an http(s) URL or a base64 `data:` URL.",
    ))
}

/// Tool-call arguments (a JSON string) as the object Anthropic's
/// `tool_use.input` requires.
fn tool_input(arguments: &str, path: &str) -> Result<Value, GatewayError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(GatewayError::invalid_param(
            path,
            "Tool call arguments must be a JSON object.",
        )),
        Err(e) => Err(GatewayError::invalid_param(
            path,
            format!("Tool call arguments are not valid JSON: {e}"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

/// The `data:` of one Anthropic stream event. The `type` inside the data
/// repeats the SSE `event:` name, so the data alone is enough.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamPayload {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Block,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: StreamError,
    },
    /// Anthropic may add event types at any time (versioning policy): they
    /// are ignored.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// thinking_delta, signature_delta, citations_delta, ...
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// Decodes Anthropic's SSE stream into canonical chunks.
struct MessagesStreamDecoder {
    parser: SseParser,
    id: String,
    model: String,
    created: u64,
    /// Anthropic content-block index → OpenAI tool-call index (tool calls
    /// are numbered among tool calls only).
    tool_index: HashMap<u32, u32>,
    complete: bool,
}

impl MessagesStreamDecoder {
    fn new(model: &str) -> Self {
        MessagesStreamDecoder {
            parser: SseParser::default(),
            id: String::new(),
            model: model.to_owned(),
            created: unix_now(),
            tool_index: HashMap::new(),
            complete: false,
        }
    }

    fn chunk(
        &self,
        delta: Delta,
        finish_reason: Option<FinishReason>,
        usage: Option<Usage>,
    ) -> ChatChunk {
        let mut c = ChatChunk::new(self.id.clone(), self.model.clone(), self.created);
        c.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason,
            logprobs: None,
        });
        c.usage = usage;
        c
    }

    fn text_chunk(&self, text: String) -> ChatChunk {
        self.chunk(
            Delta {
                content: Some(text),
                ..Default::default()
            },
            None,
            None,
        )
    }

    fn tool_chunk(&self, delta: ToolCallDelta) -> ChatChunk {
        self.chunk(
            Delta {
                tool_calls: Some(vec![delta]),
                ..Default::default()
            },
            None,
            None,
        )
    }

    fn handle(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) {
        let payload: StreamPayload = match serde_json::from_str(&ev.data) {
            Ok(p) => p,
            Err(e) => {
                out.push(StreamEvent::Error(GatewayError::upstream_protocol(
                    format!(
                        "anthropic sent a stream event the gateway could not read ({}): {e}",
                        ev.event.as_deref().unwrap_or("no event name")
                    ),
                )));
                return;
            }
        };
        match payload {
            StreamPayload::MessageStart { message } => {
                if !message.id.is_empty() {
                    self.id = message.id;
                }
                if !message.model.is_empty() {
                    self.model = message.model;
                }
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Default::default()
                };
                let usage = message.usage.map(AnthropicUsage::into_usage);
                out.push(StreamEvent::Chunk(self.chunk(delta, None, usage)));
            }
            StreamPayload::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text } if !text.is_empty() => {
                    out.push(StreamEvent::Chunk(self.text_chunk(text)));
                }
                Block::ToolUse { id, name, .. } => {
                    // `input` is always `{}` here; the arguments follow as
                    // input_json_delta fragments.
                    let tool = self.tool_index.len() as u32;
                    self.tool_index.insert(index, tool);
                    out.push(StreamEvent::Chunk(self.tool_chunk(ToolCallDelta {
                        index: tool,
                        id: Some(id),
                        kind: Some("function".to_owned()),
                        function: Some(FunctionCallDelta {
                            name: Some(name),
                            arguments: Some(String::new()),
                        }),
                    })));
                }
                _ => {}
            },
            StreamPayload::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    out.push(StreamEvent::Chunk(self.text_chunk(text)));
                }
                // The first fragment is usually empty: nothing to forward.
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    if let Some(&tool) = self.tool_index.get(&index) {
                        out.push(StreamEvent::Chunk(self.tool_chunk(ToolCallDelta {
                            index: tool,
                            id: None,
                            kind: None,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(partial_json),
                            }),
                        })));
                    }
                }
                _ => {}
            },
            StreamPayload::MessageDelta { delta, usage } => {
                let finish = delta.stop_reason.as_deref().map(finish_reason_of);
                let usage = usage.map(AnthropicUsage::into_usage);
                if finish.is_some() || usage.is_some() {
                    out.push(StreamEvent::Chunk(self.chunk(
                        Delta::default(),
                        finish,
                        usage,
                    )));
                }
            }
            StreamPayload::MessageStop {} => self.complete = true,
            StreamPayload::Error { error } => {
                out.push(StreamEvent::Error(GatewayError::upstream_status(
                    status_of_error_type(&error.kind),
                    format!("anthropic stream error ({}): {}", error.kind, error.message),
                )));
            }
            StreamPayload::ContentBlockStop {}
            | StreamPayload::Ping {}
            | StreamPayload::Unknown => {}
        }
    }
}

impl StreamDecoder for MessagesStreamDecoder {
    fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        let mut events = Vec::new();
        let limit = self.parser.feed(data, &mut events);
        for ev in events {
            self.handle(ev, out);
        }
        if let Err(e) = limit {
            out.push(StreamEvent::Error(e.into()));
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let mut events = Vec::new();
        let limit = self.parser.finish(&mut events);
        for ev in events {
            self.handle(ev, out);
        }
        if let Err(e) = limit {
            out.push(StreamEvent::Error(e.into()));
        }
    }

    fn is_complete(&self) -> bool {
        self.complete
    }
}

#[cfg(test)]
mod model_list_tests {
    use super::*;

    #[test]
    fn lists_models_page_by_page() {
        let p = AnthropicProvider::new(ProviderSettings::default());
        let up = p.models_request(Some("sk-ant"), None).unwrap();
        assert_eq!(up.method, http::Method::GET);
        assert_eq!(up.path, "/v1/models?limit=1000");
        assert!(up.headers.contains(&("x-api-key", "sk-ant".into())));
        assert!(
            up.headers
                .contains(&("anthropic-version", "2023-06-01".into()))
        );
        let page = p
            .models_page(br#"{"data":[{"type":"model","id":"claude-a","display_name":"A","created_at":"2025-02-19T00:00:00Z"},{"type":"model","id":"claude-b"}],"has_more":true,"first_id":"claude-a","last_id":"claude-b"}"#)
            .unwrap();
        assert_eq!(page.models, vec!["claude-a", "claude-b"]);
        assert_eq!(page.next.as_deref(), Some("claude-b"));
        let up = p.models_request(Some("sk-ant"), Some("claude b")).unwrap();
        assert_eq!(up.path, "/v1/models?limit=1000&after_id=claude%20b");
        let last = p
            .models_page(br#"{"data":[{"type":"model","id":"claude-c"}],"has_more":false,"first_id":"claude-c","last_id":"claude-c"}"#)
            .unwrap();
        assert_eq!(last.next, None);
        assert!(p.models_page(br#"{"data":[],"has_more":true}"#).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> AnthropicProvider {
        AnthropicProvider::new(ProviderSettings {
            base_path: "/anthropic".into(),
            default_max_tokens: 1024,
            ..Default::default()
        })
    }

    fn call(stream: bool) -> UpstreamCall<'static> {
        UpstreamCall {
            model: "claude-sonnet-4-5",
            api_key: Some("sk-ant-test"),
            stream,
            track_usage: true,
        }
    }

    fn request(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    fn body_of(req: &ChatRequest, stream: bool) -> Value {
        let up = provider().chat_request(req, &call(stream)).unwrap();
        serde_json::from_slice(&up.body).unwrap()
    }

    #[test]
    fn request_path_headers_and_defaults() {
        let req =
            request(json!({"model": "alias", "messages": [{"role": "user", "content": "Hello"}]}));
        let up = provider().chat_request(&req, &call(false)).unwrap();
        assert_eq!(up.method, http::Method::POST);
        assert_eq!(up.path, "/anthropic/v1/messages");
        assert_eq!(
            up.headers,
            vec![
                ("content-type", "application/json".to_owned()),
                ("x-api-key", "sk-ant-test".to_owned()),
                ("anthropic-version", "2023-06-01".to_owned()),
            ]
        );
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
            })
        );
    }

    #[test]
    fn configured_version_and_no_key() {
        let p = AnthropicProvider::new(ProviderSettings {
            anthropic_version: Some("2024-01-01".into()),
            ..Default::default()
        });
        let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        let c = UpstreamCall {
            model: "m",
            api_key: None,
            stream: true,
            track_usage: true,
        };
        let up = p.chat_request(&req, &c).unwrap();
        assert_eq!(up.path, "/v1/messages");
        assert!(up.headers.iter().all(|(k, _)| *k != "x-api-key"));
        assert!(
            up.headers
                .contains(&("anthropic-version", "2024-01-01".to_owned()))
        );
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 4096);
    }

    #[test]
    fn system_alternation_tools_and_images() {
        let req = request(json!({
            "model": "alias",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "user", "content": [
                    {"type": "text", "text": "And this picture:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_01B", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C, cloudy"},
                {"role": "tool", "tool_call_id": "toolu_01B", "content": [{"type": "text", "text": "14:05"}]},
                {"role": "user", "content": "Thanks. Summarise."}
            ],
            "max_completion_tokens": 300,
            "temperature": 1.6,
            "top_p": 0.9,
            "stop": "END",
            "seed": 42,
            "logit_bias": {"1": 5},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                      {"type": "function", "function": {"name": "get_time"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "user": "user-7"
        }));
        let body = body_of(&req, false);
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 300,
                "system": "You are terse.\n\nUse tools.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather in Paris?"},
                        {"type": "text", "text": "And this picture:"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C, cloudy"},
                        {"type": "tool_result", "tool_use_id": "toolu_01B", "content": [{"type": "text", "text": "14:05"}]},
                        {"type": "text", "text": "Thanks. Summarise."}
                    ]}
                ],
                "temperature": 1.0,
                "top_p": 0.9,
                "stop_sequences": ["END"],
                "tools": [
                    {"name": "get_weather", "description": "Current weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
                ],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "user-7"}
            })
        );
    }

    #[test]
    fn tool_choice_forms() {
        let base = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        });
        let with = |choice: Value| {
            let mut v = base.clone();
            v["tool_choice"] = choice;
            body_of(&request(v), false)["tool_choice"].clone()
        };
        assert_eq!(with(json!("auto")), json!({"type": "auto"}));
        assert_eq!(with(json!("none")), json!({"type": "none"}));
        assert_eq!(with(json!("required")), json!({"type": "any"}));
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}})),
            json!({"type": "tool", "name": "f"})
        );
        // parallel_tool_calls=false alone still needs a tool_choice to ride on.
        let mut v = base.clone();
        v["parallel_tool_calls"] = json!(false);
        assert_eq!(
            body_of(&request(v), false)["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        // Without tools no tool_choice is sent (Anthropic would reject it).
        let req = request(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}),
        );
        assert!(body_of(&req, false).get("tool_choice").is_none());
    }

    #[test]
    fn json_modes_become_system_instructions() {
        let req = request(json!({
            "model": "m",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}
        }));
        assert_eq!(
            body_of(&req, false)["system"],
            "Be brief.\n\nRespond with a single valid JSON object and nothing else: no prose, no Markdown code fences. \
             The object must conform to this JSON Schema:\n{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}"
        );
        let req = request(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}
        }));
        assert_eq!(
            body_of(&req, false)["system"],
            "Respond with a single valid JSON object and nothing else: no prose, no Markdown code fences."
        );
    }

    #[test]
    fn prefill_loses_trailing_whitespace() {
        let req = request(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2, "}]
        }));
        assert_eq!(
            body_of(&req, false)["messages"][1],
            json!({"role": "assistant", "content": [{"type": "text", "text": "1, 2,"}]})
        );
    }

    #[test]
    fn unsupported_inputs_are_400_naming_the_field() {
        let p = provider();
        let bad = |v: Value| p.chat_request(&request(v), &call(false)).unwrap_err();
        let e = bad(json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!((e.status, e.param.as_deref()), (400, Some("n")));
        let e = bad(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].tool_call_id"));
        let e = bad(
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
        );
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
        let e = bad(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
        );
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].content[1].image_url.url")
        );
        // n=1 is fine.
        assert!(
            p.chat_request(
                &request(
                    json!({"model": "m", "n": 1, "messages": [{"role": "user", "content": "x"}]})
                ),
                &call(false)
            )
            .is_ok()
        );
    }

    /// Shaped like the tool-use example of Anthropic's Messages API reference.
    const TOOL_USE_MESSAGE: &str = r#"{
      "id": "msg_01Aq9w938a90dw8q",
      "type": "message",
      "role": "assistant",
      "model": "claude-sonnet-4-5-20250929",
      "content": [
        {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
      ],
      "stop_reason": "tool_use",
      "stop_sequence": null,
      "usage": {"input_tokens": 384, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 1000, "output_tokens": 78, "service_tier": "standard"}
    }"#;

    #[test]
    fn response_with_tool_use() {
        let r = provider()
            .chat_response(TOOL_USE_MESSAGE.as_bytes(), &call(false))
            .unwrap();
        assert_eq!(r.id, "msg_01Aq9w938a90dw8q");
        assert_eq!(r.model, "claude-sonnet-4-5-20250929");
        assert_eq!(r.object, "chat.completion");
        assert!(r.created > 1_700_000_000);
        let c = &r.choices[0];
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            c.message.content,
            Some(Content::Text(
                "I'll check the current weather in San Francisco for you.".into()
            ))
        );
        assert_eq!(
            c.message.tool_calls,
            Some(vec![ToolCall {
                id: "toolu_01A09q90qw90lq917835lq9".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "get_weather".into(),
                    arguments: r#"{"location":"San Francisco, CA","unit":"celsius"}"#.into(),
                },
            }])
        );
        let u = r.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1404, 78, 1482)
        );
        assert_eq!(u.cached_tokens(), 1000);
    }

    #[test]
    fn response_stop_reasons_and_text_joining() {
        let p = provider();
        let with = |stop: &str| {
            let body = format!(
                r#"{{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{{"type":"thinking","thinking":"hm","signature":"s"}},{{"type":"text","text":"a"}},{{"type":"text","text":"b","citations":[]}}],"stop_reason":{stop},"stop_sequence":null,"usage":{{"input_tokens":3,"output_tokens":2}}}}"#
            );
            p.chat_response(body.as_bytes(), &call(false)).unwrap()
        };
        let r = with(r#""end_turn""#);
        assert_eq!(
            r.choices[0].message.content,
            Some(Content::Text("ab".into()))
        );
        assert_eq!(r.choices[0].message.tool_calls, None);
        assert_eq!(r.usage, Some(Usage::new(3, 2)));
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(
            with(r#""stop_sequence""#).choices[0].finish_reason,
            Some(FinishReason::Stop)
        );
        assert_eq!(
            with(r#""max_tokens""#).choices[0].finish_reason,
            Some(FinishReason::Length)
        );
        assert_eq!(
            with(r#""refusal""#).choices[0].finish_reason,
            Some(FinishReason::ContentFilter)
        );
        assert_eq!(with("null").choices[0].finish_reason, None);
    }

    #[test]
    fn unreadable_response_is_a_protocol_error() {
        let e = provider()
            .chat_response(br#"{"id":"x","content":"nope"}"#, &call(false))
            .unwrap_err();
        assert_eq!(e.status, 502);
        assert!(e.message.contains("at `content`"), "{}", e.message);
    }

    #[test]
    fn error_bodies_keep_the_message() {
        let p = provider();
        let e = p.error_response(
            400,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"},"request_id":"req_1"}"#,
        );
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            "anthropic returned 400: max_tokens: Field required"
        );
        let e = p.error_response(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.status, 503);
        assert!(e.retryable);
        assert_eq!(e.message, "anthropic returned 529: Overloaded");
    }

    /// A recorded-looking stream, following the event sequence of
    /// Anthropic's streaming reference: text, then a tool_use block whose
    /// input arrives in input_json_delta fragments, pings in between.
    const TOOL_STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":100,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\
\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\
\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\
\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let's check\"}}\n\
\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" the weather for San Francisco, CA:\"}}\n\
\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\
\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\
\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\
\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\
\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisc\"}}\n\
\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\
\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"o, CA\\\", \\\"unit\\\": \\\"fahrenheit\\\"}\"}}\n\
\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\
\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\
\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\
\n";

    /// What a stream adds up to.
    #[derive(Debug, Default, PartialEq)]
    struct Folded {
        id: String,
        model: String,
        role_chunks: usize,
        text: String,
        /// (index, id, name, arguments)
        tools: Vec<(u32, String, String, String)>,
        finish: Option<FinishReason>,
        usage: Usage,
        errors: Vec<GatewayError>,
    }

    fn fold(events: Vec<StreamEvent>) -> Folded {
        let mut f = Folded::default();
        for ev in events {
            let c = match ev {
                StreamEvent::Chunk(c) => c,
                StreamEvent::Error(e) => {
                    f.errors.push(e);
                    continue;
                }
            };
            f.id = c.id.clone();
            f.model = c.model.clone();
            if let Some(u) = &c.usage {
                f.usage.merge_max(u);
            }
            for ch in &c.choices {
                if ch.delta.role == Some(Role::Assistant) {
                    f.role_chunks += 1;
                }
                if let Some(t) = &ch.delta.content {
                    f.text.push_str(t);
                }
                for tc in ch.delta.tool_calls.iter().flatten() {
                    let fun = tc.function.clone().unwrap_or_default();
                    match f.tools.iter_mut().find(|t| t.0 == tc.index) {
                        Some(t) => t.3.push_str(fun.arguments.as_deref().unwrap_or("")),
                        None => f.tools.push((
                            tc.index,
                            tc.id.clone().unwrap_or_default(),
                            fun.name.unwrap_or_default(),
                            fun.arguments.unwrap_or_default(),
                        )),
                    }
                }
                if ch.finish_reason.is_some() {
                    f.finish = ch.finish_reason;
                }
            }
        }
        f
    }

    fn decode(input: &[u8], piece: usize) -> (Folded, bool, usize) {
        let mut d = provider().stream_decoder(&call(true));
        let mut out = Vec::new();
        for p in input.chunks(piece) {
            d.feed(p, &mut out);
        }
        d.finish(&mut out);
        let n = out.len();
        (fold(out), d.is_complete(), n)
    }

    #[test]
    fn stream_decodes_text_tool_call_and_usage() {
        let (f, complete, _) = decode(TOOL_STREAM.as_bytes(), TOOL_STREAM.len());
        assert!(complete);
        let mut usage = Usage::new(572, 89);
        usage.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(100),
            audio_tokens: None,
        });
        assert_eq!(
            f,
            Folded {
                id: "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
                model: "claude-sonnet-4-5-20250929".into(),
                role_chunks: 1,
                text: "Okay, let's check the weather for San Francisco, CA:".into(),
                tools: vec![(
                    0,
                    "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                    "get_weather".into(),
                    r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#.into()
                )],
                finish: Some(FinishReason::ToolCalls),
                usage,
                errors: vec![],
            }
        );
    }

    #[test]
    fn stream_first_chunk_has_role_and_usage() {
        let mut d = provider().stream_decoder(&call(true));
        let mut out = Vec::new();
        let first = TOOL_STREAM.split("\n\n").next().unwrap();
        d.feed(format!("{first}\n\n").as_bytes(), &mut out);
        assert_eq!(out.len(), 1);
        let StreamEvent::Chunk(c) = &out[0] else {
            panic!("chunk expected")
        };
        assert_eq!(c.id, "msg_014p7gG3wDgGV9EUtLvnow3U");
        assert_eq!(c.object, "chat.completion.chunk");
        assert_eq!(c.choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(c.choices[0].delta.content.as_deref(), Some(""));
        assert_eq!(
            c.usage
                .as_ref()
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((572, 2))
        );
        assert!(!d.is_complete());
    }

    #[test]
    fn stream_in_small_pieces_matches_whole() {
        let input = TOOL_STREAM.as_bytes();
        let (whole, _, whole_events) = decode(input, input.len());
        for n in [1, 2, 3, 5, 7, 13, 64, 255] {
            let (f, complete, events) = decode(input, n);
            assert_eq!(f, whole, "piece size {n}");
            assert_eq!(events, whole_events, "piece size {n}");
            assert!(complete, "piece size {n}");
        }
    }

    #[test]
    fn cut_stream_is_not_complete() {
        let cut = TOOL_STREAM.find("event: message_delta").unwrap();
        let (f, complete, _) = decode(&TOOL_STREAM.as_bytes()[..cut], 10);
        assert!(!complete);
        assert_eq!(f.finish, None);
        assert_eq!(f.tools.len(), 1);
        // Cut after message_delta but before message_stop: still not complete.
        let cut = TOOL_STREAM.find("event: message_stop").unwrap();
        let (f, complete, _) = decode(&TOOL_STREAM.as_bytes()[..cut], 10);
        assert!(!complete);
        assert_eq!(f.finish, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn second_tool_block_gets_next_index() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"f\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"g\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":1}\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"input_tokens\":5,\"output_tokens\":30}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let (f, complete, _) = decode(input.as_bytes(), 9);
        assert!(complete);
        assert_eq!(
            f.tools,
            vec![
                (0, "toolu_a".into(), "f".into(), "{}".into()),
                (1, "toolu_b".into(), "g".into(), r#"{"x":1}"#.into())
            ]
        );
        assert_eq!(f.usage, Usage::new(5, 30));
    }

    #[test]
    fn stream_error_event_becomes_an_upstream_error() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\",\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let (f, complete, _) = decode(input.as_bytes(), 4);
        assert!(!complete);
        assert_eq!(f.errors.len(), 1);
        let e = &f.errors[0];
        assert_eq!(e.status, 503);
        assert!(e.retryable);
        assert_eq!(
            e.message,
            "anthropic stream error (overloaded_error): Overloaded"
        );

        let (f, _, _) = decode(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad\"}}\n\n",
            100,
        );
        assert_eq!(f.errors[0].status, 400);
    }

    #[test]
    fn unreadable_stream_data_is_a_protocol_error() {
        let (f, _, _) = decode(b"event: content_block_delta\ndata: {not json\n\n", 100);
        assert_eq!(f.errors.len(), 1);
        assert_eq!(f.errors[0].status, 502);
        // Unknown event types are ignored, per Anthropic's versioning policy.
        let (f, _, n) = decode(
            b"event: shiny_new\ndata: {\"type\":\"shiny_new\",\"x\":1}\n\n",
            100,
        );
        assert!(f.errors.is_empty());
        assert_eq!(n, 0);
    }
}
