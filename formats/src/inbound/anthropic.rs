//! The Anthropic Messages format, inbound: lets the Anthropic SDKs (and
//! Claude Code-style tools) call the gateway at `{base}/messages`, whatever
//! provider is behind the proxy.
//!
//! Requests are parsed into the canonical (OpenAI-shaped) request; canonical
//! responses, stream chunks and errors are rendered back as Anthropic's
//! message, SSE events and error body.
//!
//! What does not survive the trip through the canonical format (dropped,
//! not rejected, so existing clients keep working):
//! - `cache_control` on blocks (prompt caching breakpoints), `citations`;
//! - `thinking` (the parameter) and `thinking` / `redacted_thinking` blocks
//!   in the conversation;
//! - `tool_result.is_error`;
//! - `top_k`, `service_tier`, `container`, `mcp_servers` and other
//!   Anthropic-only parameters.
//!
//! Server tools (`web_search_...`, `bash_...`), document URLs and block
//! types the gateway does not know are rejected with a 400 naming the field.

use bytes::BytesMut;
use portcullis_types::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FinishReason, FunctionCall,
    FunctionDef, FunctionName, ImageUrl, Message, NamedToolChoice, Role, Stop, StreamOptions, Tool,
    ToolCall, ToolChoice, Usage,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ChatPath, ClientFormat, StreamEncoder};
use crate::error::GatewayError;
use crate::providers::anthropic::{
    AnthropicUsage, Block, DocumentSource, ImageSource, MessagesResponse, TextOr, WireMessage,
    WireMetadata, WireRole, WireTool, WireToolChoice, stop_reason_of,
};
use crate::sse::write_event;

/// A Messages request as clients send it. Required fields are optional
/// here so that their absence is reported by name, as Anthropic does.
#[derive(Debug, Deserialize)]
struct InboundRequest {
    model: Option<String>,
    messages: Option<Vec<WireMessage>>,
    max_tokens: Option<u32>,
    system: Option<TextOr<Block>>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    tools: Option<Vec<WireTool>>,
    tool_choice: Option<WireToolChoice>,
    metadata: Option<WireMetadata>,
}

/// The Anthropic Messages format (`POST {base}/messages`).
pub struct Anthropic;

impl ClientFormat for Anthropic {
    fn kind(&self) -> portcullis_types::gateway_config::InboundKind {
        portcullis_types::gateway_config::InboundKind::Anthropic
    }

    fn chat_path(&self, rest: &str) -> Option<ChatPath> {
        (rest == "/messages").then(ChatPath::default)
    }

    fn parse(&self, body: &[u8], _path: &ChatPath) -> Result<ChatRequest, GatewayError> {
        parse_request(body)
    }

    fn render_response(&self, resp: &ChatResponse) -> Vec<u8> {
        render_response(resp)
    }

    fn render_error(&self, err: &GatewayError) -> Vec<u8> {
        render_error(err)
    }

    fn stream_encoder(&self, req: &ChatRequest) -> Box<dyn StreamEncoder> {
        Box::new(AnthropicStreamEncoder::new(&req.model))
    }
}

/// Parses an Anthropic Messages request body into the canonical request.
///
/// A field that does not fit is a 400 naming its path
/// (`messages[0].content[1]`); a missing `model`, `messages` or
/// `max_tokens` is a 400 naming that field.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let raw: InboundRequest = crate::json::parse(body).map_err(|e| {
        if e.path == "." && e.is_syntax() {
            GatewayError::invalid_request(format!(
                "The request body is not valid JSON: {}",
                e.inner
            ))
        } else if e.path == "." {
            GatewayError::invalid_request(format!(
                "The request body is not a valid Messages request: {}",
                e.inner
            ))
        } else {
            GatewayError::invalid_param(e.path.clone(), format!("{}: {}", e.path, e.inner))
        }
    })?;

    let required =
        |field: &str| GatewayError::invalid_param(field, format!("{field}: Field required"));
    let model = raw.model.ok_or_else(|| required("model"))?;
    let wire_messages = raw.messages.ok_or_else(|| required("messages"))?;
    let max_tokens = raw.max_tokens.ok_or_else(|| required("max_tokens"))?;
    if wire_messages.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "messages: at least one message is required",
        ));
    }

    let mut messages = Vec::new();
    if let Some(system) = raw.system {
        let text = match system {
            TextOr::Text(t) => t,
            TextOr::Blocks(blocks) => {
                let mut texts = Vec::new();
                for (i, b) in blocks.into_iter().enumerate() {
                    match b {
                        Block::Text { text } => texts.push(text),
                        _ => {
                            return Err(GatewayError::invalid_param(
                                format!("system[{i}]"),
                                "The system prompt accepts text blocks only.",
                            ));
                        }
                    }
                }
                // Claude Code sends several blocks (to place cache
                // breakpoints); they read as paragraphs of one prompt.
                texts.join("\n\n")
            }
        };
        if !text.is_empty() {
            messages.push(Message::text(Role::System, text));
        }
    }
    for (i, m) in wire_messages.into_iter().enumerate() {
        convert_message(i, m, &mut messages)?;
    }

    let tools = match raw.tools {
        None => None,
        Some(tools) => Some(
            tools
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    if let Some(kind) = t.kind.as_deref()
                        && kind != "custom"
                    {
                        return Err(GatewayError::invalid_param(
                            format!("tools[{i}].type"),
                            format!("tools[{i}].type: server tool `{kind}` is not supported by this gateway"),
                        ));
                    }
                    Ok(Tool {
                        kind: "function".to_owned(),
                        function: FunctionDef {
                            name: t.name,
                            description: t.description,
                            parameters: Some(t.input_schema),
                            strict: None,
                        },
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };

    let (tool_choice, parallel_tool_calls) = match raw.tool_choice {
        None => (None, None),
        Some(choice) => {
            let disable = match &choice {
                WireToolChoice::Auto {
                    disable_parallel_tool_use,
                }
                | WireToolChoice::Any {
                    disable_parallel_tool_use,
                }
                | WireToolChoice::Tool {
                    disable_parallel_tool_use,
                    ..
                } => *disable_parallel_tool_use,
                WireToolChoice::None => None,
            };
            let choice = match choice {
                WireToolChoice::Auto { .. } => ToolChoice::Mode("auto".into()),
                WireToolChoice::Any { .. } => ToolChoice::Mode("required".into()),
                WireToolChoice::None => ToolChoice::Mode("none".into()),
                WireToolChoice::Tool { name, .. } => ToolChoice::Named(NamedToolChoice {
                    kind: "function".into(),
                    function: FunctionName { name },
                }),
            };
            (Some(choice), (disable == Some(true)).then_some(false))
        }
    };

    let stream = raw.stream.unwrap_or(false);
    Ok(ChatRequest {
        model,
        messages,
        stream,
        // Anthropic streams always end with usage; ask OpenAI-style
        // upstreams for it so message_delta can carry it.
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        max_tokens: Some(max_tokens),
        max_completion_tokens: None,
        temperature: raw.temperature,
        top_p: raw.top_p,
        n: None,
        stop: raw.stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many),
        seed: None,
        presence_penalty: None,
        frequency_penalty: None,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format: None,
        user: raw.metadata.and_then(|m| m.user_id),
        extra: Map::new(),
    })
}

/// Appends the canonical messages of one Anthropic message.
fn convert_message(i: usize, m: WireMessage, out: &mut Vec<Message>) -> Result<(), GatewayError> {
    let blocks = match m.content {
        TextOr::Text(t) => {
            let role = match m.role {
                WireRole::User => Role::User,
                WireRole::Assistant => Role::Assistant,
            };
            out.push(Message::text(role, t));
            return Ok(());
        }
        TextOr::Blocks(b) => b,
    };
    let path = |j: usize| format!("messages[{i}].content[{j}]");
    match m.role {
        WireRole::User => {
            // Tool results become `tool` messages. They go first: OpenAI
            // wants them right after the assistant's tool calls, and
            // Anthropic requires them first in the user turn anyway.
            let mut parts = Vec::new();
            for (j, b) in blocks.into_iter().enumerate() {
                match b {
                    Block::ToolResult {
                        tool_use_id,
                        content,
                        ..
                    } => {
                        out.push(Message {
                            role: Role::Tool,
                            content: Some(tool_result_content(content, &path(j))?),
                            name: None,
                            tool_calls: None,
                            tool_call_id: Some(tool_use_id),
                            extra: Map::new(),
                        });
                    }
                    other => {
                        if let Some(p) = block_to_part(other, &path(j))? {
                            parts.push(p);
                        }
                    }
                }
            }
            if !parts.is_empty() {
                out.push(user_message(parts));
            }
        }
        WireRole::Assistant => {
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            for (j, b) in blocks.into_iter().enumerate() {
                match b {
                    Block::Text { text: t } => text.push_str(&t),
                    Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                        id,
                        kind: "function".into(),
                        function: FunctionCall {
                            name,
                            arguments: input.to_string(),
                        },
                    }),
                    // The model's own reasoning, echoed back: no canonical
                    // place for it.
                    Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
                    _ => {
                        return Err(GatewayError::invalid_param(
                            path(j),
                            format!(
                                "{}: assistant messages accept text and tool_use blocks only",
                                path(j)
                            ),
                        ));
                    }
                }
            }
            let content = if text.is_empty() && !tool_calls.is_empty() {
                None
            } else {
                Some(Content::Text(text))
            };
            out.push(Message {
                role: Role::Assistant,
                content,
                name: None,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                tool_call_id: None,
                extra: Map::new(),
            });
        }
    }
    Ok(())
}

/// A user message from parts: plain text when it is one text part (the
/// form every upstream accepts), parts otherwise.
fn user_message(mut parts: Vec<ContentPart>) -> Message {
    if parts.len() == 1
        && let ContentPart::Text { text } = &mut parts[0]
    {
        return Message::text(Role::User, std::mem::take(text));
    }
    Message {
        role: Role::User,
        content: Some(Content::Parts(parts)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Map::new(),
    }
}

/// `tool_result.content` as a tool message's content: text stays text
/// (OpenAI-style upstreams accept text only in tool messages); images are
/// kept as parts.
fn tool_result_content(
    content: Option<TextOr<Block>>,
    path: &str,
) -> Result<Content, GatewayError> {
    match content {
        None => Ok(Content::Text(String::new())),
        Some(TextOr::Text(t)) => Ok(Content::Text(t)),
        Some(TextOr::Blocks(blocks)) => {
            let mut parts = Vec::new();
            for (k, b) in blocks.into_iter().enumerate() {
                if let Some(p) = block_to_part(b, &format!("{path}.content[{k}]"))? {
                    parts.push(p);
                }
            }
            if parts.iter().all(|p| matches!(p, ContentPart::Text { .. })) {
                Ok(Content::Text(Content::Parts(parts).text()))
            } else {
                Ok(Content::Parts(parts))
            }
        }
    }
}

/// A user-side block as a canonical content part.
fn block_to_part(b: Block, path: &str) -> Result<Option<ContentPart>, GatewayError> {
    let unsupported = |what: &str| {
        GatewayError::invalid_param(
            path,
            format!("{path}: {what} is not supported by this gateway"),
        )
    };
    match b {
        Block::Text { text } => Ok(Some(ContentPart::Text { text })),
        Block::Image { source } => Ok(Some(ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: match source {
                    ImageSource::Base64 { media_type, data } => {
                        format!("data:{media_type};base64,{data}")
                    }
                    ImageSource::Url { url } => url,
                },
                detail: None,
            },
        })),
        Block::Document { source } => match source {
            DocumentSource::Base64 { media_type, data } => Ok(Some(ContentPart::File {
                file: json!({
                    "filename": "document.pdf",
                    "file_data": format!("data:{media_type};base64,{data}"),
                }),
            })),
            DocumentSource::Text { data, .. } => Ok(Some(ContentPart::Text { text: data })),
            DocumentSource::Url { .. } => Err(unsupported("a document URL")),
        },
        Block::Thinking { .. } | Block::RedactedThinking { .. } => Ok(None),
        Block::ToolUse { .. } => Err(unsupported("a tool_use block in a user message")),
        Block::ToolResult { .. } => Err(unsupported("a nested tool_result block")),
        Block::Unsupported => Err(unsupported("this content block type")),
    }
}

/// An Anthropic message id: canonical ids are kept, prefixed with `msg_`
/// when they are not Anthropic's already (clients do not parse it, but
/// some log or match on the prefix).
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

/// Tool-call arguments as a `tool_use.input` object. Arguments that are not
/// a JSON object (a model's malformed output) become `{}`: Anthropic
/// clients require an object.
fn tool_use_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// Anthropic usage from canonical usage. Anthropic's `input_tokens`
/// excludes cache reads, which are reported on their own; cache writes are
/// not known to the canonical format and stay in `input_tokens`.
fn anthropic_usage(usage: Option<&Usage>) -> AnthropicUsage {
    let u = usage.cloned().unwrap_or_default();
    let cached = u.cached_tokens();
    AnthropicUsage {
        input_tokens: Some(u.prompt_tokens.saturating_sub(cached)),
        output_tokens: Some(u.completion_tokens),
        cache_creation_input_tokens: Some(0),
        cache_read_input_tokens: Some(cached),
    }
}

/// Renders a canonical response as an Anthropic message.
pub fn render_response(resp: &ChatResponse) -> Vec<u8> {
    let choice = resp.choices.first();
    let mut content = Vec::new();
    if let Some(c) = choice {
        let text = match &c.message.content {
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                        Some(text.as_str())
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
            None => String::new(),
        };
        if !text.is_empty() {
            content.push(Block::Text { text });
        }
        for tc in c.message.tool_calls.iter().flatten() {
            content.push(Block::ToolUse {
                id: tc.id.clone(),
                name: tc.function.name.clone(),
                input: tool_use_input(&tc.function.arguments),
            });
        }
    }
    let finish = choice
        .and_then(|c| c.finish_reason)
        .unwrap_or(FinishReason::Stop);
    let msg = MessagesResponse {
        id: message_id(&resp.id),
        kind: "message".into(),
        role: WireRole::Assistant,
        model: resp.model.clone(),
        content,
        stop_reason: Some(stop_reason_of(finish).to_owned()),
        stop_sequence: None,
        usage: anthropic_usage(resp.usage.as_ref()),
    };
    serde_json::to_vec(&msg).unwrap_or_default()
}

/// The Anthropic error `type` of an HTTP status (Anthropic uses
/// `invalid_request_error` for 4xx statuses it does not list).
fn error_type_of_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn error_value(err: &GatewayError) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type_of_status(err.status), "message": err.message},
    })
}

/// Renders an error as Anthropic's error body:
/// `{"type":"error","error":{"type","message"}}`.
pub fn render_error(err: &GatewayError) -> Vec<u8> {
    serde_json::to_vec(&error_value(err)).unwrap_or_default()
}

/// The content block currently open in the Anthropic stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    /// A tool_use block for the canonical tool call with this index.
    Tool(u32),
}

/// Renders canonical chunks as Anthropic's stream: `message_start`, a
/// `ping`, `content_block_start` / `_delta` / `_stop` per text run and per
/// tool call, then `message_delta` with the stop reason and usage, and
/// `message_stop`.
#[derive(Debug)]
pub struct AnthropicStreamEncoder {
    model: String,
    started: bool,
    /// Index of the next content block.
    next_index: u32,
    open: Option<OpenBlock>,
    saw_tool: bool,
    last_finish: Option<FinishReason>,
}

impl AnthropicStreamEncoder {
    /// An encoder announcing `model` (the model the client asked for).
    pub fn new(model: &str) -> Self {
        AnthropicStreamEncoder {
            model: model.to_owned(),
            started: false,
            next_index: 0,
            open: None,
            saw_tool: false,
            last_finish: None,
        }
    }

    fn emit(out: &mut BytesMut, event: &str, data: &Value) {
        let bytes = serde_json::to_vec(data).unwrap_or_default();
        write_event(out, event, &bytes);
    }

    fn start(&mut self, id: &str, out: &mut BytesMut) {
        self.started = true;
        // OpenAI-style upstreams report usage only at the end: the real
        // counts go in message_delta.
        Self::emit(
            out,
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": message_id(id),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            }),
        );
        Self::emit(out, "ping", &json!({"type": "ping"}));
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            Self::emit(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.next_index - 1}),
            );
        }
    }

    fn open(&mut self, block: OpenBlock, content_block: Value, out: &mut BytesMut) {
        self.close(out);
        Self::emit(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.next_index, "content_block": content_block}),
        );
        self.next_index += 1;
        self.open = Some(block);
    }

    fn text(&mut self, text: &str, out: &mut BytesMut) {
        if text.is_empty() {
            return;
        }
        if self.open != Some(OpenBlock::Text) {
            self.open(OpenBlock::Text, json!({"type": "text", "text": ""}), out);
        }
        Self::emit(
            out,
            "content_block_delta",
            &json!({
                "type": "content_block_delta",
                "index": self.next_index - 1,
                "delta": {"type": "text_delta", "text": text},
            }),
        );
    }

    fn tool(&mut self, tc: &portcullis_types::ToolCallDelta, out: &mut BytesMut) {
        let function = tc.function.clone().unwrap_or_default();
        // OpenAI-style streams send one tool call after the other: a new
        // index starts a new tool_use block.
        if self.open != Some(OpenBlock::Tool(tc.index)) {
            self.saw_tool = true;
            let id = tc
                .id
                .clone()
                .unwrap_or_else(|| format!("toolu_{}", uuid::Uuid::new_v4().simple()));
            self.open(
                OpenBlock::Tool(tc.index),
                json!({"type": "tool_use", "id": id, "name": function.name.unwrap_or_default(), "input": {}}),
                out,
            );
        }
        if let Some(args) = function.arguments.filter(|a| !a.is_empty()) {
            Self::emit(
                out,
                "content_block_delta",
                &json!({
                    "type": "content_block_delta",
                    "index": self.next_index - 1,
                    "delta": {"type": "input_json_delta", "partial_json": args},
                }),
            );
        }
    }
}

impl StreamEncoder for AnthropicStreamEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if !self.started {
            self.start(&chunk.id, out);
        }
        // Anthropic has a single choice.
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(t) = &choice.delta.content {
                self.text(t, out);
            }
            if let Some(r) = &choice.delta.refusal {
                self.text(r, out);
            }
            for tc in choice.delta.tool_calls.iter().flatten() {
                self.tool(tc, out);
            }
            if choice.finish_reason.is_some() {
                self.last_finish = choice.finish_reason;
            }
        }
    }

    fn finish(
        &mut self,
        usage: Option<&Usage>,
        finish_reason: Option<FinishReason>,
        out: &mut BytesMut,
    ) {
        if !self.started {
            self.start(&uuid::Uuid::new_v4().simple().to_string(), out);
        }
        self.close(out);
        let finish = finish_reason
            .or(self.last_finish)
            .unwrap_or(if self.saw_tool {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            });
        let u = anthropic_usage(usage);
        let mut usage_json = json!({
            "input_tokens": u.input_tokens.unwrap_or(0),
            "output_tokens": u.output_tokens.unwrap_or(0),
        });
        if let Some(read) = u.cache_read_input_tokens.filter(|r| *r > 0) {
            usage_json["cache_read_input_tokens"] = json!(read);
        }
        Self::emit(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason_of(finish), "stop_sequence": null},
                "usage": usage_json,
            }),
        );
        Self::emit(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn error(&mut self, err: &GatewayError, out: &mut BytesMut) {
        Self::emit(out, "error", &error_value(err));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::test_chunks::{chunk, text, tool};
    use crate::providers::anthropic::AnthropicProvider;
    use crate::providers::{Provider, ProviderSettings, UpstreamCall};
    use crate::sse::{SseEvent, SseParser};
    use portcullis_types::{Choice, Delta, PromptTokensDetails};

    fn parse(v: Value) -> Result<ChatRequest, GatewayError> {
        parse_request(&serde_json::to_vec(&v).unwrap())
    }

    /// A tool conversation shaped like the examples of Anthropic's tool-use
    /// guide, with the system prompt as blocks (as Claude Code sends it).
    fn tool_conversation() -> Value {
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [
                {"type": "text", "text": "You are a weather assistant."},
                {"type": "text", "text": "Answer in one sentence.", "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [{
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
            }],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "What's the weather like in San Francisco?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "I'll check."},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                    {"type": "text", "text": "Is that warm?"}
                ]}
            ],
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.2,
            "metadata": {"user_id": "u-42"},
            "stream": true
        })
    }

    #[test]
    fn parses_a_tool_conversation() {
        let req = parse(tool_conversation()).unwrap();
        let expected: ChatRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "You are a weather assistant.\n\nAnswer in one sentence."},
                {"role": "user", "content": "What's the weather like in San Francisco?"},
                {"role": "assistant", "content": "I'll check.", "tool_calls": [
                    {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                {"role": "user", "content": "Is that warm?"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 1024,
            "temperature": 0.2,
            "stop": ["\n\nHuman:"],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
            }}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "user": "u-42"
        }))
        .unwrap();
        assert_eq!(req, expected);
        assert!(req.wants_stream_usage());
    }

    #[test]
    fn parses_images_documents_and_tool_choices() {
        let req = parse(json!({
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "image", "source": {"type": "url", "url": "https://upload.example/ant.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
                {"type": "text", "text": "Describe these."}
            ]}],
            "tool_choice": {"type": "any"},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&req.messages[0]).unwrap(),
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "https://upload.example/ant.jpg"}},
                {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
                {"type": "text", "text": "Describe these."}
            ]})
        );
        assert_eq!(req.tool_choice, Some(ToolChoice::Mode("required".into())));
        assert_eq!(req.parallel_tool_calls, None);
        assert!(!req.stream);
        assert_eq!(req.stream_options, None);

        let choice = |c: Value| {
            let mut v = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
            v["tool_choice"] = c;
            parse(v).unwrap().tool_choice
        };
        assert_eq!(
            choice(json!({"type": "none"})),
            Some(ToolChoice::Mode("none".into()))
        );
        assert_eq!(
            choice(json!({"type": "tool", "name": "f"})),
            Some(ToolChoice::Named(NamedToolChoice {
                kind: "function".into(),
                function: FunctionName { name: "f".into() }
            }))
        );
    }

    #[test]
    fn tool_result_blocks_and_thinking() {
        let req = parse(json!({
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Let me call both.", "signature": "EqQBCgIYAhIM"},
                    {"type": "tool_use", "id": "toolu_1", "name": "a", "input": {}},
                    {"type": "tool_use", "id": "toolu_2", "name": "b", "input": {"k": [1, 2]}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true, "content": [
                        {"type": "text", "text": "chart"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
                    ]}
                ]}
            ]
        }))
        .unwrap();
        assert_eq!(req.messages.len(), 4);
        assert_eq!(req.messages[1].content, None);
        assert_eq!(
            req.messages[1].tool_calls.as_ref().unwrap()[1]
                .function
                .arguments,
            r#"{"k":[1,2]}"#
        );
        assert_eq!(req.messages[2].role, Role::Tool);
        assert_eq!(
            req.messages[2].content,
            Some(Content::Text("one\ntwo".into()))
        );
        assert_eq!(req.messages[3].tool_call_id.as_deref(), Some("toolu_2"));
        assert_eq!(
            serde_json::to_value(&req.messages[3].content).unwrap(),
            json!([{"type": "text", "text": "chart"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}])
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        let err = |v: Value| {
            let e = parse(v).unwrap_err();
            assert_eq!(e.status, 400);
            (e.param.unwrap_or_default(), e.message)
        };
        let msgs = json!([{"role": "user", "content": "x"}]);
        assert_eq!(
            err(json!({"model": "m", "messages": msgs})),
            ("max_tokens".into(), "max_tokens: Field required".into())
        );
        assert_eq!(err(json!({"model": "m", "max_tokens": 5})).0, "messages");
        assert_eq!(err(json!({"max_tokens": 5, "messages": msgs})).0, "model");
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 5, "messages": []})),
            (
                "messages".into(),
                "messages: at least one message is required".into()
            )
        );
        assert_eq!(
            err(json!({"model": "m", "max_tokens": "many", "messages": msgs})).0,
            "max_tokens"
        );
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})).0,
            "messages[0].role"
        );
        let (param, message) = err(
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "ok"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}
            ]}]}),
        );
        assert_eq!(param, "messages[0].content[1]");
        assert!(message.contains("missing field `data`"), "{message}");
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "web_search_tool_result"}]}]})).0,
            "messages[0].content[0]"
        );
        assert_eq!(
            err(
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]})
            )
            .0,
            "messages[0].content"
        );
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 5, "messages": msgs, "tools": [{"type": "web_search_20250305", "name": "web_search", "input_schema": {}}]})).0,
            "tools[0].type"
        );
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 5, "messages": msgs, "tools": [{"name": "f"}]}))
                .0,
            "tools[0]"
        );
        let e = parse_request(b"{\"model\": \"m\",").unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse_request(b"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]} trailing").unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn round_trip_to_the_anthropic_provider() {
        let original = tool_conversation();
        let req = parse(original.clone()).unwrap();
        let p = AnthropicProvider::new(ProviderSettings::default());
        let call = UpstreamCall {
            model: "claude-sonnet-4-5",
            api_key: Some("k"),
            stream: true,
            track_usage: true,
        };
        let up = p.chat_request(&req, &call).unwrap();
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": "You are a weather assistant.\n\nAnswer in one sentence.",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "What's the weather like in San Francisco?"}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "I'll check."},
                        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                        {"type": "text", "text": "Is that warm?"}
                    ]}
                ],
                "temperature": 0.2,
                "stop_sequences": ["\n\nHuman:"],
                "stream": true,
                "tools": original["tools"],
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "u-42"}
            })
        );
    }

    fn response(
        content: Option<&str>,
        tool_calls: Option<Vec<ToolCall>>,
        finish: FinishReason,
    ) -> ChatResponse {
        let mut usage = Usage::new(120, 30);
        usage.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(100),
            audio_tokens: None,
        });
        ChatResponse {
            id: "chatcmpl-9xYz".into(),
            object: "chat.completion".into(),
            created: 1_700_000_000,
            model: "gpt-5-mini".into(),
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: Role::Assistant,
                    content: content.map(|c| Content::Text(c.into())),
                    name: None,
                    tool_calls,
                    tool_call_id: None,
                    extra: Map::new(),
                },
                finish_reason: Some(finish),
                logprobs: None,
            }],
            usage: Some(usage),
            system_fingerprint: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn renders_a_tool_use_response() {
        let resp = response(
            Some("Let me look."),
            Some(vec![ToolCall {
                id: "call_abc".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "get_weather".into(),
                    arguments: r#"{"location":"Paris"}"#.into(),
                },
            }]),
            FinishReason::ToolCalls,
        );
        let v: Value = serde_json::from_slice(&render_response(&resp)).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "msg_chatcmpl-9xYz",
                "type": "message",
                "role": "assistant",
                "model": "gpt-5-mini",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {"location": "Paris"}}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {"input_tokens": 20, "output_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100}
            })
        );
    }

    #[test]
    fn renders_stop_reasons_and_keeps_msg_ids() {
        let render =
            |resp: &ChatResponse| serde_json::from_slice::<Value>(&render_response(resp)).unwrap();
        let mut r = response(Some("Hi"), None, FinishReason::Length);
        r.id = "msg_01XFDUDYJgAACzvnptvVoYEL".into();
        let v = render(&r);
        assert_eq!(v["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
        assert_eq!(v["stop_reason"], "max_tokens");
        assert_eq!(v["content"], json!([{"type": "text", "text": "Hi"}]));
        assert_eq!(
            render(&response(Some("x"), None, FinishReason::Stop))["stop_reason"],
            "end_turn"
        );
        assert_eq!(
            render(&response(Some("x"), None, FinishReason::ContentFilter))["stop_reason"],
            "refusal"
        );
        // Malformed tool arguments still give clients an object.
        let r = response(
            None,
            Some(vec![ToolCall {
                id: "call_1".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "f".into(),
                    arguments: "{\"a\":".into(),
                },
            }]),
            FinishReason::ToolCalls,
        );
        assert_eq!(
            render(&r)["content"],
            json!([{"type": "tool_use", "id": "call_1", "name": "f", "input": {}}])
        );
    }

    #[test]
    fn renders_errors_with_anthropic_types() {
        let v = |e: GatewayError| serde_json::from_slice::<Value>(&render_error(&e)).unwrap();
        assert_eq!(
            v(GatewayError::invalid_param(
                "max_tokens",
                "max_tokens: Field required"
            )),
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
        );
        let ty = |e: GatewayError| v(e)["error"]["type"].as_str().unwrap().to_owned();
        assert_eq!(
            ty(GatewayError::unauthorized("no key")),
            "authentication_error"
        );
        assert_eq!(ty(GatewayError::upstream_status(403, "x")), "api_error"); // provider auth is a 502
        assert_eq!(ty(GatewayError::not_found("x")), "not_found_error");
        assert_eq!(ty(GatewayError::payload_too_large(10)), "request_too_large");
        assert_eq!(
            ty(GatewayError::upstream_status(429, "slow down")),
            "rate_limit_error"
        );
        assert_eq!(
            ty(GatewayError::upstream_status(503, "busy")),
            "overloaded_error"
        );
        assert_eq!(ty(GatewayError::internal("bug")), "api_error");
        assert_eq!(
            ty(GatewayError::method_not_allowed("x")),
            "invalid_request_error"
        );
        let mut forbidden = GatewayError::unauthorized("x");
        forbidden.status = 403;
        assert_eq!(ty(forbidden), "permission_error");
    }

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        let mut p = SseParser::default();
        let mut out: Vec<SseEvent> = Vec::new();
        p.feed(bytes, &mut out).unwrap();
        assert!(bytes.ends_with(b"\n\n"));
        out.into_iter()
            .map(|e| (e.event.unwrap(), serde_json::from_str(&e.data).unwrap()))
            .collect()
    }

    #[test]
    fn encoder_emits_anthropic_events() {
        let mut enc = AnthropicStreamEncoder::new("claude-sonnet-4-5");
        let mut out = BytesMut::new();
        enc.chunk(
            &chunk(
                Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Default::default()
                },
                None,
            ),
            &mut out,
        );
        enc.chunk(&text("Hello"), &mut out);
        enc.chunk(&text(" there."), &mut out);
        enc.chunk(&tool(0, Some("call_1"), Some("get_weather"), ""), &mut out);
        enc.chunk(&tool(0, None, None, "{\"city\":"), &mut out);
        enc.chunk(&tool(0, None, None, "\"Paris\"}"), &mut out);
        enc.chunk(&tool(1, Some("call_2"), Some("get_time"), "{}"), &mut out);
        enc.chunk(
            &chunk(Delta::default(), Some(FinishReason::ToolCalls)),
            &mut out,
        );
        let mut usage = Usage::new(50, 12);
        usage.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(40),
            audio_tokens: None,
        });
        enc.finish(Some(&usage), Some(FinishReason::ToolCalls), &mut out);

        let ev = events(&out);
        let expected = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there."}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 2}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 10, "output_tokens": 12, "cache_read_input_tokens": 40}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        assert_eq!(ev.len(), expected.len(), "{ev:#?}");
        for (i, ((name, data), (want_name, want_data))) in ev.iter().zip(expected).enumerate() {
            assert_eq!(name, want_name, "event {i}");
            assert_eq!(data, &want_data, "event {i}");
        }
    }

    #[test]
    fn encoder_without_chunks_or_usage_still_forms_a_message() {
        let mut enc = AnthropicStreamEncoder::new("m");
        let mut out = BytesMut::new();
        enc.finish(None, None, &mut out);
        let ev = events(&out);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["message_start", "ping", "message_delta", "message_stop"]
        );
        assert!(
            ev[0].1["message"]["id"]
                .as_str()
                .unwrap()
                .starts_with("msg_")
        );
        assert_eq!(
            ev[2].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"input_tokens": 0, "output_tokens": 0}})
        );
    }

    #[test]
    fn encoder_error_event() {
        let mut enc = AnthropicStreamEncoder::new("m");
        let mut out = BytesMut::new();
        enc.chunk(&text("partial"), &mut out);
        out.clear();
        enc.error(
            &GatewayError::upstream_status(
                503,
                "anthropic stream error (overloaded_error): Overloaded",
            ),
            &mut out,
        );
        assert_eq!(
            events(&out),
            vec![(
                "error".to_owned(),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "anthropic stream error (overloaded_error): Overloaded"}})
            )]
        );
    }

    #[test]
    fn anthropic_stream_through_the_gateway_and_back() {
        // Anthropic upstream → canonical chunks → Anthropic client stream.
        let upstream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi!\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let p = AnthropicProvider::new(ProviderSettings::default());
        let call = UpstreamCall {
            model: "claude-sonnet-4-5",
            api_key: None,
            stream: true,
            track_usage: true,
        };
        let mut dec = p.stream_decoder(&call);
        let mut evs = Vec::new();
        dec.feed(upstream.as_bytes(), &mut evs);
        dec.finish(&mut evs);
        assert!(dec.is_complete());
        let mut enc = AnthropicStreamEncoder::new("claude-sonnet-4-5");
        let mut out = BytesMut::new();
        let mut usage = Usage::default();
        let mut finish = None;
        for ev in evs {
            let crate::providers::StreamEvent::Chunk(mut c) = ev else {
                panic!("chunk expected")
            };
            if let Some(u) = c.usage.take() {
                usage.merge_max(&u);
            }
            finish = c.choices.first().and_then(|ch| ch.finish_reason).or(finish);
            enc.chunk(&c, &mut out);
        }
        enc.finish(Some(&usage), finish, &mut out);
        let ev = events(&out);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(ev[0].1["message"]["id"], "msg_01");
        assert_eq!(ev[3].1["delta"]["text"], "Hi!");
        assert_eq!(ev[5].1["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            ev[5].1["usage"],
            json!({"input_tokens": 25, "output_tokens": 15})
        );
    }
}
