//! The OpenAI Responses format, inbound: lets OpenAI clients call
//! `POST {base}/responses` (`client.responses.create`), whatever provider
//! is behind the proxy.
//!
//! It is a second format of the OpenAI API, not an inbound kind of its
//! own: a proxy that accepts `openai` serves it when its `resources` list
//! `responses`. Requests are parsed into the canonical (Chat Completions)
//! request, so routing, policies and every provider adapter see an
//! ordinary chat request; answers, streams and errors are rendered back as
//! a Responses object, its typed SSE events and OpenAI's error envelope.
//!
//! The mapping:
//! - `input` (a string, or items: messages with `input_text`,
//!   `input_image` and `input_file` parts, `function_call` and
//!   `function_call_output`) becomes the conversation, `instructions` a
//!   system message in front of it;
//! - function tools (Responses' flat `{type, name, parameters}` shape) and
//!   `tool_choice` become the canonical tools and tool choice;
//! - `text.format` becomes `response_format`, `reasoning.effort`
//!   `reasoning_effort` and `text.verbosity` `verbosity` (passed to the
//!   providers that have them), `max_output_tokens`
//!   `max_completion_tokens`.
//!
//! The gateway keeps no conversation state, so what needs it is refused
//! with a 400 naming the field: `previous_response_id`, `conversation`,
//! stored `prompt` templates, `background` mode and `item_reference`
//! items, as are built-in tools (web search, file search, ...) and file
//! ids. `reasoning` items a client sends back are dropped: no provider
//! behind the canonical request can take them. `store`, `metadata`,
//! `include`, `truncation` and `service_tier` are accepted and ignored.
//!
//! The response object does not echo the request's settings (the
//! renderer sees only the canonical answer): `instructions`,
//! `temperature` and `top_p` are null, `tools` empty.

use bytes::BytesMut;
use portcullis_types::gateway_config::{InboundKind, Resource};
use portcullis_types::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FinishReason, FunctionCall,
    FunctionDef, FunctionName, ImageUrl, JsonSchemaFormat, Message, NamedToolChoice,
    ResponseFormat, Role, StreamOptions, Tool, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{ChatPath, ClientFormat, StreamEncoder};
use crate::error::GatewayError;
use crate::sse::write_event;

/// The OpenAI Responses format (`POST {base}/responses`).
pub struct Responses;

impl ClientFormat for Responses {
    fn kind(&self) -> InboundKind {
        InboundKind::Openai
    }

    fn resource(&self) -> Resource {
        Resource::Responses
    }

    fn answers_canonical(&self) -> bool {
        false
    }

    fn chat_path(&self, rest: &str) -> Option<ChatPath> {
        (rest == "/responses").then(ChatPath::default)
    }

    fn parse(&self, body: &[u8], _path: &ChatPath) -> Result<ChatRequest, GatewayError> {
        parse_request(body)
    }

    fn render_response(&self, resp: &ChatResponse) -> Vec<u8> {
        render_response(resp)
    }

    fn render_error(&self, err: &GatewayError) -> Vec<u8> {
        err.to_openai_json()
    }

    fn stream_encoder(&self, req: &ChatRequest) -> Box<dyn StreamEncoder> {
        Box::new(ResponsesStreamEncoder::new(&req.model))
    }
}

/// A Responses request as clients send it. The polymorphic fields
/// (`input`, `tools`, `tool_choice`) are read as JSON values and typed
/// item by item, so that an error names the item that is wrong.
#[derive(Debug, Deserialize)]
struct InboundRequest {
    model: Option<String>,
    input: Option<Value>,
    instructions: Option<String>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    text: Option<TextConfig>,
    reasoning: Option<ReasoningConfig>,
    max_output_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stream: Option<bool>,
    user: Option<String>,
    safety_identifier: Option<String>,
    prompt_cache_key: Option<String>,
    // Fields that need state the gateway does not keep: refused.
    previous_response_id: Option<Value>,
    conversation: Option<Value>,
    prompt: Option<Value>,
    background: Option<bool>,
}

/// `text`: the output's format and verbosity.
#[derive(Debug, Deserialize)]
struct TextConfig {
    format: Option<TextFormat>,
    verbosity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TextFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        description: Option<String>,
        strict: Option<bool>,
    },
}

/// `reasoning`: only the effort has a canonical counterpart.
#[derive(Debug, Deserialize)]
struct ReasoningConfig {
    effort: Option<String>,
}

/// A function tool in Responses' flat shape.
#[derive(Debug, Deserialize)]
struct FunctionTool {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct MessageItem {
    role: String,
    content: Value,
}

#[derive(Debug, Deserialize)]
struct FunctionCallItem {
    call_id: String,
    name: String,
    arguments: String,
}

#[derive(Debug, Deserialize)]
struct FunctionCallOutputItem {
    call_id: String,
    output: Value,
}

#[derive(Debug, Deserialize)]
struct TextPart {
    text: String,
}

#[derive(Debug, Deserialize)]
struct RefusalPart {
    refusal: String,
}

#[derive(Debug, Deserialize)]
struct ImagePart {
    image_url: Option<String>,
    file_id: Option<String>,
    detail: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FilePart {
    file_data: Option<String>,
    filename: Option<String>,
}

/// Types `v` (found at `at` in the request), naming the failing field.
fn typed<T: DeserializeOwned>(v: &Value, at: &str) -> Result<T, GatewayError> {
    T::deserialize(v).map_err(|first| {
        // Only a value that failed is parsed again, with path tracking, to
        // say where inside it.
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        match crate::json::parse::<T>(&bytes) {
            Err(e) if e.path != "." => {
                let path = format!("{at}.{}", e.path);
                GatewayError::invalid_param(
                    path.clone(),
                    format!("Invalid value for '{path}': {}", e.inner),
                )
            }
            _ => GatewayError::invalid_param(at, format!("Invalid value for '{at}': {first}")),
        }
    })
}

/// The `type` of an item or part, `None` when it has none.
fn type_of<'a>(v: &'a Value, at: &str) -> Result<Option<&'a str>, GatewayError> {
    match v.get("type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(GatewayError::invalid_param(
            format!("{at}.type"),
            format!("Invalid value for '{at}.type': expected a string."),
        )),
    }
}

fn unsupported(param: String, what: &str) -> GatewayError {
    GatewayError::invalid_param(
        param.clone(),
        format!("'{param}': {what} is not supported by this gateway."),
    )
}

/// Parses and checks a Responses request into the canonical request.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let raw: InboundRequest = super::openai::parse_json(body)?;
    let required = |field: &str| {
        GatewayError::invalid_param(field, format!("Missing required parameter: '{field}'."))
    };
    // The gateway keeps no responses or conversations: what refers to them
    // cannot be served, and guessing would answer a different question.
    let stateful = |field: &str| {
        GatewayError::invalid_param(
            field,
            format!(
                "'{field}' is not supported by this gateway, which keeps no conversation state; send the whole conversation in 'input'."
            ),
        )
    };
    if raw
        .previous_response_id
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(stateful("previous_response_id"));
    }
    if raw.conversation.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(stateful("conversation"));
    }
    if raw.prompt.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(stateful("prompt"));
    }
    if raw.background == Some(true) {
        return Err(stateful("background"));
    }
    let model = raw.model.ok_or_else(|| required("model"))?;
    let input = raw.input.ok_or_else(|| required("input"))?;

    let mut messages = Vec::new();
    if let Some(instructions) = raw.instructions.filter(|i| !i.is_empty()) {
        messages.push(Message::text(Role::System, instructions));
    }
    match input {
        Value::String(text) => messages.push(Message::text(Role::User, text)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                convert_item(item, &format!("input[{i}]"), &mut messages)?;
            }
        }
        _ => {
            return Err(GatewayError::invalid_param(
                "input",
                "Invalid value for 'input': expected a string or an array of input items.",
            ));
        }
    }
    if messages.iter().all(|m| m.role == Role::System) {
        return Err(GatewayError::invalid_param(
            "input",
            "'input' must contain at least one item.",
        ));
    }

    let tools = match raw.tools {
        None => None,
        Some(tools) => Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, t)| convert_tool(t, &format!("tools[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .filter(|t: &Vec<Tool>| !t.is_empty()),
    };
    let tool_choice = raw.tool_choice.map(convert_tool_choice).transpose()?;

    let response_format = match raw.text.as_ref().and_then(|t| t.format.as_ref()) {
        None | Some(TextFormat::Text) => None,
        Some(TextFormat::JsonObject) => Some(ResponseFormat {
            kind: "json_object".into(),
            json_schema: None,
        }),
        Some(TextFormat::JsonSchema {
            name,
            schema,
            description,
            strict,
        }) => Some(ResponseFormat {
            kind: "json_schema".into(),
            json_schema: Some(JsonSchemaFormat {
                name: name.clone(),
                description: description.clone(),
                schema: Some(schema.clone()),
                strict: *strict,
            }),
        }),
    };

    // Chat Completions parameters without a field of their own in the
    // canonical request: carried as extra body fields, which the
    // OpenAI-format adapters send on and the others leave out.
    let mut extra = Map::new();
    if let Some(effort) = raw.reasoning.and_then(|r| r.effort) {
        extra.insert("reasoning_effort".into(), Value::String(effort));
    }
    if let Some(verbosity) = raw.text.and_then(|t| t.verbosity) {
        extra.insert("verbosity".into(), Value::String(verbosity));
    }
    if let Some(id) = raw.safety_identifier {
        extra.insert("safety_identifier".into(), Value::String(id));
    }
    if let Some(key) = raw.prompt_cache_key {
        extra.insert("prompt_cache_key".into(), Value::String(key));
    }

    let stream = raw.stream.unwrap_or(false);
    Ok(ChatRequest {
        model,
        messages,
        stream,
        // A Responses stream always ends with usage (response.completed):
        // ask OpenAI-style upstreams for it.
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        max_tokens: None,
        max_completion_tokens: raw.max_output_tokens,
        temperature: raw.temperature,
        top_p: raw.top_p,
        n: None,
        stop: None,
        seed: None,
        presence_penalty: None,
        frequency_penalty: None,
        tools,
        tool_choice,
        parallel_tool_calls: raw.parallel_tool_calls,
        response_format,
        user: raw.user,
        extra,
    })
}

/// Appends the canonical messages of one input item.
fn convert_item(item: &Value, at: &str, out: &mut Vec<Message>) -> Result<(), GatewayError> {
    match type_of(item, at)? {
        // Messages may leave out their type (`{"role", "content"}`).
        None | Some("message") => {
            let m: MessageItem = typed(item, at)?;
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                "developer" => Role::Developer,
                other => {
                    return Err(GatewayError::invalid_param(
                        format!("{at}.role"),
                        format!(
                            "Invalid value for '{at}.role': `{other}`; expected user, assistant, system or developer."
                        ),
                    ));
                }
            };
            let content = convert_content(&m.content, &format!("{at}.content"))?;
            out.push(Message {
                role,
                content: Some(content),
                name: None,
                tool_calls: None,
                tool_call_id: None,
                extra: Map::new(),
            });
        }
        Some("function_call") => {
            let c: FunctionCallItem = typed(item, at)?;
            let call = ToolCall {
                id: c.call_id,
                kind: "function".into(),
                function: FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                },
            };
            // Chat Completions hangs tool calls on an assistant message:
            // calls that follow one (its text, or calls made together)
            // join it.
            match out.last_mut() {
                Some(last) if last.role == Role::Assistant => {
                    last.tool_calls.get_or_insert_with(Vec::new).push(call);
                }
                _ => out.push(Message {
                    role: Role::Assistant,
                    content: None,
                    name: None,
                    tool_calls: Some(vec![call]),
                    tool_call_id: None,
                    extra: Map::new(),
                }),
            }
        }
        Some("function_call_output") => {
            let o: FunctionCallOutputItem = typed(item, at)?;
            let content = convert_content(&o.output, &format!("{at}.output"))?;
            out.push(Message {
                role: Role::Tool,
                content: Some(content),
                name: None,
                tool_calls: None,
                tool_call_id: Some(o.call_id),
                extra: Map::new(),
            });
        }
        // Reasoning a model did earlier cannot be replayed through the
        // canonical request; clients send it back as part of a previous
        // output, so it is dropped rather than refused.
        Some("reasoning") => {}
        Some("item_reference") => {
            return Err(unsupported(
                format!("{at}.type"),
                "`item_reference` (the gateway keeps no stored items)",
            ));
        }
        Some(other) => {
            return Err(unsupported(
                format!("{at}.type"),
                &format!("the input item type `{other}`"),
            ));
        }
    }
    Ok(())
}

/// Message or tool-output content: a string, or a list of parts.
fn convert_content(content: &Value, at: &str) -> Result<Content, GatewayError> {
    match content {
        Value::String(s) => Ok(Content::Text(s.clone())),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| convert_part(p, &format!("{at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Content::Parts),
        _ => Err(GatewayError::invalid_param(
            at,
            format!("Invalid value for '{at}': expected a string or an array of content parts."),
        )),
    }
}

fn convert_part(part: &Value, at: &str) -> Result<ContentPart, GatewayError> {
    match type_of(part, at)? {
        // Assistant messages sent back carry the output's own parts.
        Some("input_text" | "output_text") => Ok(ContentPart::Text {
            text: typed::<TextPart>(part, at)?.text,
        }),
        Some("refusal") => Ok(ContentPart::Refusal {
            refusal: typed::<RefusalPart>(part, at)?.refusal,
        }),
        Some("input_image") => {
            let image: ImagePart = typed(part, at)?;
            if image.file_id.is_some() {
                return Err(unsupported(
                    format!("{at}.file_id"),
                    "An image by file id (send it as `image_url`, an https or data: URL)",
                ));
            }
            let url = image.image_url.ok_or_else(|| {
                GatewayError::invalid_param(
                    format!("{at}.image_url"),
                    format!("Missing required parameter: '{at}.image_url'."),
                )
            })?;
            Ok(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url,
                    detail: image.detail.filter(|d| d != "auto"),
                },
            })
        }
        Some("input_file") => {
            let file: FilePart = typed(part, at)?;
            // Only inline files survive the trip: file ids and URLs would
            // need OpenAI's file store or a fetch by the gateway.
            let data = file.file_data.ok_or_else(|| {
                unsupported(
                    format!("{at}.file_data"),
                    "A file without inline `file_data` (by `file_id` or `file_url`)",
                )
            })?;
            let mut f = Map::new();
            f.insert("file_data".into(), Value::String(data));
            if let Some(name) = file.filename {
                f.insert("filename".into(), Value::String(name));
            }
            Ok(ContentPart::File {
                file: Value::Object(f),
            })
        }
        Some(other) => Err(unsupported(
            format!("{at}.type"),
            &format!("the content part type `{other}`"),
        )),
        None => Err(GatewayError::invalid_param(
            format!("{at}.type"),
            format!("Missing required parameter: '{at}.type'."),
        )),
    }
}

fn convert_tool(tool: &Value, at: &str) -> Result<Tool, GatewayError> {
    match type_of(tool, at)? {
        Some("function") => {
            let f: FunctionTool = typed(tool, at)?;
            Ok(Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: f.name,
                    description: f.description,
                    parameters: f.parameters,
                    strict: f.strict,
                },
            })
        }
        Some(other) => Err(unsupported(
            format!("{at}.type"),
            &format!("The built-in tool `{other}`"),
        )),
        None => Err(GatewayError::invalid_param(
            format!("{at}.type"),
            format!("Missing required parameter: '{at}.type'."),
        )),
    }
}

fn convert_tool_choice(choice: Value) -> Result<ToolChoice, GatewayError> {
    let invalid = || {
        GatewayError::invalid_param(
            "tool_choice",
            "Invalid value for 'tool_choice': expected `none`, `auto`, `required` or {\"type\": \"function\", \"name\": ...}.",
        )
    };
    match &choice {
        Value::String(mode) if matches!(mode.as_str(), "none" | "auto" | "required") => {
            Ok(ToolChoice::Mode(mode.clone()))
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(invalid)?;
            Ok(ToolChoice::Named(NamedToolChoice {
                kind: "function".into(),
                function: FunctionName {
                    name: name.to_owned(),
                },
            }))
        }
        _ => Err(invalid()),
    }
}

/// A Responses id from the upstream's: kept when it already is one.
fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_owned()
    } else if id.is_empty() {
        new_id("resp")
    } else {
        format!("resp_{id}")
    }
}

/// A fresh item id: the canonical answer has no ids for its parts.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Responses usage from canonical usage: the same counts under other names
/// (`input_tokens` includes the cached ones, as `prompt_tokens` does).
fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens()},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens()},
        "total_tokens": usage.total_tokens,
    })
}

/// `status` and `incomplete_details` for how the answer ended.
fn status_of(finish: Option<FinishReason>) -> (&'static str, Value) {
    match finish {
        Some(FinishReason::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(FinishReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The Responses object around `output`. The request's settings are not
/// known here (see the module docs) and are reported as unset.
fn response_object(
    id: &str,
    created_at: u64,
    model: &str,
    status: &str,
    incomplete_details: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": null,
        "incomplete_details": incomplete_details,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage.map(usage_json),
        "user": null,
        "metadata": {},
    })
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn refusal_part(refusal: &str) -> Value {
    json!({"type": "refusal", "refusal": refusal})
}

fn function_call_item(id: &str, status: &str, call_id: &str, name: &str, args: &str) -> Value {
    json!({"type": "function_call", "id": id, "status": status, "call_id": call_id, "name": name, "arguments": args})
}

/// Renders a canonical response as a Responses object: the first choice's
/// text as a message item, each tool call as a function_call item.
pub fn render_response(resp: &ChatResponse) -> Vec<u8> {
    let choice = resp.choices.first();
    let mut output = Vec::new();
    if let Some(c) = choice {
        let mut content = Vec::new();
        match &c.message.content {
            Some(Content::Text(t)) if !t.is_empty() => content.push(text_part(t)),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    match p {
                        ContentPart::Text { text } => content.push(text_part(text)),
                        ContentPart::Refusal { refusal } => content.push(refusal_part(refusal)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        // Chat Completions reports a refusal beside the content.
        if let Some(Value::String(r)) = c.message.extra.get("refusal") {
            content.push(refusal_part(r));
        }
        if !content.is_empty() {
            output.push(message_item(&new_id("msg"), "completed", content));
        }
        for tc in c.message.tool_calls.iter().flatten() {
            output.push(function_call_item(
                &new_id("fc"),
                "completed",
                &tc.id,
                &tc.function.name,
                &tc.function.arguments,
            ));
        }
    }
    let (status, incomplete) = status_of(choice.and_then(|c| c.finish_reason));
    let body = response_object(
        &response_id(&resp.id),
        resp.created,
        &resp.model,
        status,
        incomplete,
        output,
        resp.usage.as_ref(),
    );
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The output item open in the stream.
#[derive(Debug)]
enum OpenItem {
    /// An assistant message; `part` is the content part being written.
    Message {
        id: String,
        parts: Vec<Value>,
        part: Option<OpenPart>,
    },
    /// A function call, for the canonical tool call with this index.
    Call {
        index: u32,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Debug)]
struct OpenPart {
    refusal: bool,
    text: String,
}

/// Renders canonical chunks as Responses' typed stream: `response.created`
/// and `response.in_progress`, then per output item `output_item.added`,
/// its content parts (`content_part.added`, `output_text.delta` ...,
/// `output_text.done`, `content_part.done`) or function-call argument
/// deltas, `output_item.done`; and `response.completed` (or
/// `response.incomplete`) with the whole output and the usage. Every event
/// carries `type` and a `sequence_number`, and its name as `event:`.
#[derive(Debug)]
pub struct ResponsesStreamEncoder {
    model: String,
    id: String,
    created_at: u64,
    started: bool,
    sequence: u64,
    /// Items already closed, for the final response object.
    output: Vec<Value>,
    open: Option<OpenItem>,
    last_finish: Option<FinishReason>,
}

impl ResponsesStreamEncoder {
    /// An encoder announcing `model` (the model the client asked for) until
    /// the upstream names its own.
    pub fn new(model: &str) -> Self {
        ResponsesStreamEncoder {
            model: model.to_owned(),
            id: String::new(),
            created_at: 0,
            started: false,
            sequence: 0,
            output: Vec::new(),
            open: None,
            last_finish: None,
        }
    }

    fn emit(&mut self, out: &mut BytesMut, event: &str, mut data: Value) {
        data["type"] = json!(event);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        let bytes = serde_json::to_vec(&data).unwrap_or_default();
        write_event(out, event, &bytes);
    }

    fn snapshot(&self, status: &str, incomplete: Value, usage: Option<&Usage>) -> Value {
        response_object(
            &self.id,
            self.created_at,
            &self.model,
            status,
            incomplete,
            self.output.clone(),
            usage,
        )
    }

    fn start(&mut self, chunk: Option<&ChatChunk>, out: &mut BytesMut) {
        self.started = true;
        self.id = response_id(chunk.map(|c| c.id.as_str()).unwrap_or(""));
        self.created_at = chunk.map(|c| c.created).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        if let Some(m) = chunk.map(|c| c.model.as_str()).filter(|m| !m.is_empty()) {
            self.model = m.to_owned();
        }
        let response = self.snapshot("in_progress", Value::Null, None);
        self.emit(out, "response.created", json!({"response": response}));
        let response = self.snapshot("in_progress", Value::Null, None);
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    /// The output index of the open item (items are numbered in order).
    fn index(&self) -> usize {
        self.output.len()
    }

    fn close_part(&mut self, out: &mut BytesMut) {
        let output_index = self.index();
        let Some(OpenItem::Message { id, parts, part }) = &mut self.open else {
            return;
        };
        let Some(p) = part.take() else {
            return;
        };
        let (id, content_index) = (id.clone(), parts.len());
        let (done, part_json) = if p.refusal {
            ("response.refusal.done", refusal_part(&p.text))
        } else {
            ("response.output_text.done", text_part(&p.text))
        };
        parts.push(part_json.clone());
        let mut data =
            json!({"item_id": id, "output_index": output_index, "content_index": content_index});
        if p.refusal {
            data["refusal"] = json!(p.text);
        } else {
            data["text"] = json!(p.text);
            data["logprobs"] = json!([]);
        }
        self.emit(out, done, data);
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": id, "output_index": output_index, "content_index": content_index, "part": part_json}),
        );
    }

    fn close_item(&mut self, out: &mut BytesMut) {
        self.close_part(out);
        let output_index = self.index();
        let item = match self.open.take() {
            None => return,
            Some(OpenItem::Message { id, parts, .. }) => message_item(&id, "completed", parts),
            Some(OpenItem::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            }) => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": output_index, "name": name, "arguments": arguments}),
                );
                function_call_item(&id, "completed", &call_id, &name, &arguments)
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
    }

    fn text(&mut self, text: &str, refusal: bool, out: &mut BytesMut) {
        if text.is_empty() {
            return;
        }
        if !matches!(self.open, Some(OpenItem::Message { .. })) {
            self.close_item(out);
            let id = new_id("msg");
            let item = message_item(&id, "in_progress", Vec::new());
            let output_index = self.index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.open = Some(OpenItem::Message {
                id,
                parts: Vec::new(),
                part: None,
            });
        }
        let same_kind = matches!(&self.open, Some(OpenItem::Message { part: Some(p), .. }) if p.refusal == refusal);
        if !same_kind {
            self.close_part(out);
            let output_index = self.index();
            if let Some(OpenItem::Message { id, parts, part }) = &mut self.open {
                *part = Some(OpenPart {
                    refusal,
                    text: String::new(),
                });
                let data = json!({
                    "item_id": id.clone(),
                    "output_index": output_index,
                    "content_index": parts.len(),
                    "part": if refusal { refusal_part("") } else { text_part("") },
                });
                self.emit(out, "response.content_part.added", data);
            }
        }
        let output_index = self.index();
        if let Some(OpenItem::Message {
            id,
            parts,
            part: Some(p),
        }) = &mut self.open
        {
            p.text.push_str(text);
            let mut data = json!({"item_id": id.clone(), "output_index": output_index, "content_index": parts.len(), "delta": text});
            let event = if refusal {
                "response.refusal.delta"
            } else {
                data["logprobs"] = json!([]);
                "response.output_text.delta"
            };
            self.emit(out, event, data);
        }
    }

    fn tool(&mut self, tc: &ToolCallDelta, out: &mut BytesMut) {
        let function = tc.function.clone().unwrap_or_default();
        // OpenAI-style streams send one tool call after the other: a new
        // index starts a new function_call item.
        if !matches!(&self.open, Some(OpenItem::Call { index, .. }) if *index == tc.index) {
            self.close_item(out);
            let id = new_id("fc");
            let call_id = tc.id.clone().unwrap_or_else(|| new_id("call"));
            let name = function.name.clone().unwrap_or_default();
            let item = function_call_item(&id, "in_progress", &call_id, &name, "");
            let output_index = self.index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.open = Some(OpenItem::Call {
                index: tc.index,
                id,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        let output_index = self.index();
        if let (Some(args), Some(OpenItem::Call { id, arguments, .. })) =
            (function.arguments.filter(|a| !a.is_empty()), &mut self.open)
        {
            arguments.push_str(&args);
            let data = json!({"item_id": id.clone(), "output_index": output_index, "delta": args});
            self.emit(out, "response.function_call_arguments.delta", data);
        }
    }
}

impl StreamEncoder for ResponsesStreamEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if !self.started {
            self.start(Some(chunk), out);
        }
        // A response has one output: the first choice's.
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(t) = &choice.delta.content {
                self.text(t, false, out);
            }
            if let Some(r) = &choice.delta.refusal {
                self.text(r, true, out);
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
            self.start(None, out);
        }
        self.close_item(out);
        let (status, incomplete) = status_of(finish_reason.or(self.last_finish));
        let response = self.snapshot(status, incomplete, usage);
        let event = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, event, json!({"response": response}));
    }

    fn error(&mut self, err: &GatewayError, out: &mut BytesMut) {
        let body = err.body();
        self.emit(
            out,
            "error",
            json!({"code": body.code.as_deref().unwrap_or(body.kind.as_str()), "message": body.message, "param": body.param}),
        );
        // A started response ends as failed, as OpenAI's do.
        if self.started {
            let mut response = self.snapshot("failed", Value::Null, None);
            response["error"] = json!({"code": "server_error", "message": err.message});
            self.emit(out, "response.failed", json!({"response": response}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::test_chunks::{chunk, text, tool};
    use crate::sse::SseParser;
    use portcullis_types::{Choice, CompletionTokensDetails, Delta, PromptTokensDetails};

    fn parse(v: Value) -> Result<ChatRequest, GatewayError> {
        parse_request(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn parses_a_string_input_with_instructions_and_settings() {
        let req = parse(json!({
            "model": "gpt-5", "input": "Hi", "instructions": "Be brief.",
            "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stream": true,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "answer", "strict": true,
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
                "verbosity": "low"},
            "store": true, "metadata": {"k": "v"}, "include": [], "truncation": "auto",
            "user": "u1"
        }))
        .unwrap();
        assert_eq!(req.model, "gpt-5");
        assert_eq!(req.messages.len(), 2);
        assert_eq!(req.messages[0], Message::text(Role::System, "Be brief."));
        assert_eq!(req.messages[1], Message::text(Role::User, "Hi"));
        assert_eq!(req.max_completion_tokens, Some(50));
        assert_eq!((req.temperature, req.top_p), (Some(0.2), Some(0.9)));
        assert!(req.stream && req.wants_stream_usage());
        assert_eq!(req.extra["reasoning_effort"], "low");
        assert_eq!(req.extra["verbosity"], "low");
        let rf = req.response_format.unwrap();
        assert_eq!(rf.kind, "json_schema");
        let schema = rf.json_schema.unwrap();
        assert_eq!(
            (schema.name.as_str(), schema.strict),
            ("answer", Some(true))
        );
        assert_eq!(schema.schema.unwrap()["properties"]["a"]["type"], "string");
        assert_eq!(req.user.as_deref(), Some("u1"));
    }

    #[test]
    fn parses_items_images_tool_calls_and_their_outputs() {
        let req = parse(json!({
            "model": "m",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "What is here, and the weather?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
                {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]}
            ],
            "tools": [{"type": "function", "name": "weather", "description": "Weather",
                       "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"},
            "parallel_tool_calls": false
        }))
        .unwrap();
        let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::Developer,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool
            ]
        );
        let parts = req.messages[1].content.as_ref().unwrap().parts();
        assert_eq!(parts.len(), 3);
        assert!(
            matches!(&parts[1], ContentPart::ImageUrl { image_url } if image_url.detail.as_deref() == Some("high"))
        );
        assert!(matches!(&parts[2], ContentPart::File { file } if file["filename"] == "a.pdf"));
        // The calls join the assistant message they follow.
        let assistant = &req.messages[2];
        assert_eq!(assistant.text_content(), "Checking.");
        let calls = assistant.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].function.name.as_str()),
            ("call_1", "weather")
        );
        assert_eq!(calls[0].function.arguments, "{\"city\":\"Rome\"}");
        assert_eq!(req.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(req.messages[3].text_content(), "sunny");
        assert_eq!(req.messages[4].text_content(), "noon");
        let tools = req.tools.unwrap();
        assert_eq!(tools[0].function.name, "weather");
        assert_eq!(tools[0].function.strict, Some(true));
        assert_eq!(
            req.tool_choice,
            Some(ToolChoice::Named(NamedToolChoice {
                kind: "function".into(),
                function: FunctionName {
                    name: "weather".into()
                }
            }))
        );
        assert_eq!(req.parallel_tool_calls, Some(false));
        // A call with no assistant message before it gets one of its own.
        let req = parse(json!({"model": "m", "input": [
            {"role": "user", "content": "x"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "1"}
        ]}))
        .unwrap();
        assert_eq!(req.messages[1].role, Role::Assistant);
        assert!(req.messages[1].content.is_none());
    }

    #[test]
    fn errors_name_the_parameter() {
        let cases = [
            (json!({"input": "x"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": 5}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": 5, "input": "x"}), "model"),
            (
                json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"model": "m", "input": [{"role": "user"}]}),
                "input[0]",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]}),
                "input[0].content[0].text",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
                "input[0].content[0].file_id",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
                "input[0]",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "m", "input": [{"type": "web_search_call"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
                "tools[0]",
            ),
            (
                json!({"model": "m", "input": "x", "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
                "text.format.type",
            ),
            (
                json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": "x", "conversation": "conv_1"}),
                "conversation",
            ),
            (
                json!({"model": "m", "input": "x", "background": true}),
                "background",
            ),
        ];
        for (body, param) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
            let v: Value = serde_json::from_slice(&Responses.render_error(&e)).unwrap();
            assert_eq!(v["error"]["param"], param);
            assert_eq!(v["error"]["type"], "invalid_request_error");
        }
        let e = parse_request(b"{nope").unwrap_err();
        assert!(e.message.contains("parse the JSON"), "{}", e.message);
    }

    fn usage() -> Usage {
        let mut u = Usage::new(20, 9);
        u.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(12),
            ..Default::default()
        });
        u.completion_tokens_details = Some(CompletionTokensDetails {
            reasoning_tokens: Some(4),
            ..Default::default()
        });
        u
    }

    fn response(message: Message, finish: FinishReason) -> ChatResponse {
        ChatResponse {
            id: "chatcmpl-1".into(),
            object: "chat.completion".into(),
            created: 1700000000,
            model: "gpt-5".into(),
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason: Some(finish),
                logprobs: None,
            }],
            usage: Some(usage()),
            system_fingerprint: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn renders_text_tool_calls_and_usage() {
        let mut message = Message::text(Role::Assistant, "Let me check.");
        message.tool_calls = Some(vec![ToolCall {
            id: "call_9".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "weather".into(),
                arguments: "{\"city\":\"Rome\"}".into(),
            },
        }]);
        let v: Value = serde_json::from_slice(&render_response(&response(
            message,
            FinishReason::ToolCalls,
        )))
        .unwrap();
        assert_eq!(v["id"], "resp_chatcmpl-1");
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["created_at"], 1700000000);
        assert_eq!(v["model"], "gpt-5");
        assert_eq!(v["output"][0]["type"], "message");
        assert_eq!(v["output"][0]["role"], "assistant");
        assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
        assert_eq!(v["output"][0]["content"][0]["text"], "Let me check.");
        assert_eq!(v["output"][1]["type"], "function_call");
        assert_eq!(v["output"][1]["call_id"], "call_9");
        assert_eq!(v["output"][1]["name"], "weather");
        assert_eq!(v["output"][1]["arguments"], "{\"city\":\"Rome\"}");
        assert!(v["output"][1]["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 12},
                   "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4},
                   "total_tokens": 29})
        );
        // A cut answer is incomplete, and says why.
        let v: Value = serde_json::from_slice(&render_response(&response(
            Message::text(Role::Assistant, "Lon"),
            FinishReason::Length,
        )))
        .unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        let mut evs = Vec::new();
        SseParser::default().feed(bytes, &mut evs).unwrap();
        evs.into_iter()
            .map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                let name = e.event.unwrap();
                // The event name and the data's type agree.
                assert_eq!(v["type"], name.as_str());
                (name, v)
            })
            .collect()
    }

    #[test]
    fn encoder_emits_typed_events_for_text_and_tool_calls() {
        let mut enc = Responses.stream_encoder(
            &parse(json!({"model": "gpt-5", "input": "x", "stream": true})).unwrap(),
        );
        let mut out = BytesMut::new();
        enc.chunk(&text("Hel"), &mut out);
        enc.chunk(&text("lo"), &mut out);
        enc.chunk(&tool(0, Some("call_a"), Some("weather"), "{\"ci"), &mut out);
        enc.chunk(&tool(0, None, None, "ty\":1}"), &mut out);
        enc.chunk(&tool(1, Some("call_b"), Some("time"), "{}"), &mut out);
        enc.chunk(
            &chunk(Delta::default(), Some(FinishReason::ToolCalls)),
            &mut out,
        );
        enc.finish(Some(&usage()), None, &mut out);
        let evs = events(&out);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (_, v)) in evs.iter().enumerate() {
            assert_eq!(v["sequence_number"], i as u64);
        }
        assert_eq!(evs[0].1["response"]["id"], "resp_chatcmpl-1");
        assert_eq!(evs[0].1["response"]["status"], "in_progress");
        assert_eq!(evs[4].1["delta"], "Hel");
        assert_eq!(evs[4].1["output_index"], 0);
        assert_eq!(evs[6].1["text"], "Hello");
        assert_eq!(evs[9].1["item"]["call_id"], "call_a");
        assert_eq!(evs[9].1["output_index"], 1);
        assert_eq!(evs[12].1["arguments"], "{\"city\":1}");
        assert_eq!(evs[14].1["output_index"], 2);
        let done = &evs[18].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["arguments"], "{\"city\":1}");
        assert_eq!(done["output"][2]["name"], "time");
        assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 12);
        assert_eq!(
            done["usage"]["output_tokens_details"]["reasoning_tokens"],
            4
        );
        assert_eq!(done["usage"]["total_tokens"], 29);
        // Item ids match between added, deltas and done.
        assert_eq!(evs[2].1["item"]["id"], evs[4].1["item_id"]);
        assert_eq!(evs[2].1["item"]["id"], done["output"][0]["id"]);
    }

    #[test]
    fn encoder_reports_cut_answers_refusals_and_errors() {
        let mut enc = ResponsesStreamEncoder::new("m");
        let mut out = BytesMut::new();
        enc.chunk(
            &chunk(
                Delta {
                    refusal: Some("No.".into()),
                    ..Default::default()
                },
                Some(FinishReason::Length),
            ),
            &mut out,
        );
        enc.finish(None, None, &mut out);
        let evs = events(&out);
        assert!(
            evs.iter()
                .any(|(n, v)| n == "response.refusal.delta" && v["delta"] == "No.")
        );
        let (name, last) = evs.last().unwrap();
        assert_eq!(name, "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(
            last["response"]["output"][0]["content"][0]["refusal"],
            "No."
        );

        // Nothing streamed: still a well-formed, empty response.
        let mut enc = ResponsesStreamEncoder::new("m");
        let mut out = BytesMut::new();
        enc.finish(Some(&Usage::new(3, 0)), Some(FinishReason::Stop), &mut out);
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );

        let mut enc = ResponsesStreamEncoder::new("m");
        let mut out = BytesMut::new();
        enc.chunk(&text("a"), &mut out);
        enc.error(&GatewayError::upstream_timeout("slow"), &mut out);
        let evs = events(&out);
        let n = evs.len();
        assert_eq!(evs[n - 2].0, "error");
        assert_eq!(evs[n - 2].1["message"], "slow");
        assert_eq!(evs[n - 1].0, "response.failed");
        assert_eq!(evs[n - 1].1["response"]["status"], "failed");
    }
}
