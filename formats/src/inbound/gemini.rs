//! The Gemini format as an inbound API.
//!
//! A proxy can accept Google's `generateContent` shape at
//! `{base}/models/{model}:generateContent` and
//! `{base}/models/{model}:streamGenerateContent` (as MuleSoft's Flex Gateway
//! does), whatever provider is behind. Requests are parsed into the
//! canonical chat request; canonical responses, chunks and errors are
//! rendered back as Gemini's `GenerateContentResponse` and error envelope.
//! The Gemini wire types are shared with the outbound adapter
//! (`crate::providers::gemini`).
//!
//! What does not translate: built-in tools (`googleSearch`,
//! `codeExecution`, ...) are rejected with a 400; `safetySettings`,
//! `thinkingConfig`, `topK`, `cachedContent` and thought signatures have no
//! canonical field and are dropped.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bytes::{BufMut, BytesMut};
use portcullis_types::{
    self as types, ChatChunk, ChatRequest, ChatResponse, FinishReason, Role, StreamOptions, Usage,
};
use serde_json::{Map, Value, json};

use super::{ChatPath, ClientFormat, StreamEncoder};
use crate::error::GatewayError;
use crate::providers::gemini::{
    Candidate, Content, ErrorBody, ErrorEnvelope, FunctionCall, FunctionResponse,
    GenerateContentRequest, GenerateContentResponse, Part, UsageMetadata, finish_reason_to_gemini,
};

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// A function call seen in the conversation, waiting for its response.
struct PendingCall {
    id: String,
    name: String,
    answered: bool,
}

/// The tool call id a `functionResponse` answers: the call with the same
/// `id` if the client sent ids, else the oldest unanswered call of that
/// name (Gemini matches results to calls by name and order).
fn match_call(calls: &mut [PendingCall], fr: &FunctionResponse) -> Option<String> {
    let by_id = fr
        .id
        .as_deref()
        .and_then(|id| calls.iter_mut().find(|c| !c.answered && c.id == id));
    let call = match by_id {
        Some(c) => c,
        None => calls
            .iter_mut()
            .find(|c| !c.answered && c.name == fr.name)?,
    };
    call.answered = true;
    Some(call.id.clone())
}

/// A `functionResponse.response` as tool message text. The outbound
/// adapter wraps results as `{"content": ...}`; that wrapper is taken off
/// again so a result survives the round trip.
fn response_text(response: &Value) -> String {
    match response {
        Value::Object(m) if m.len() == 1 && m.contains_key("content") => match &m["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `args` of a function call as a JSON string.
fn args_string(args: Option<&Value>) -> String {
    match args {
        Some(v) if !v.is_null() => v.to_string(),
        _ => "{}".to_owned(),
    }
}

/// Inline bytes as a canonical content part: images as `data:` URLs,
/// WAV/MP3 as `input_audio`, anything else (PDF, ...) as a `file`.
fn blob_part(mime: &str, data: &str) -> types::ContentPart {
    let mime = mime.to_ascii_lowercase();
    let data_url = format!("data:{mime};base64,{data}");
    let audio = match mime.as_str() {
        "audio/wav" | "audio/x-wav" | "audio/wave" => Some("wav"),
        "audio/mp3" | "audio/mpeg" => Some("mp3"),
        _ => None,
    };
    if mime.starts_with("image/") {
        types::ContentPart::ImageUrl {
            image_url: types::ImageUrl {
                url: data_url,
                detail: None,
            },
        }
    } else if let Some(format) = audio {
        types::ContentPart::InputAudio {
            input_audio: json!({ "data": data, "format": format }),
        }
    } else {
        let mut file = json!({ "file_data": data_url });
        if mime == "application/pdf" {
            // OpenAI wants a file name with inline file data.
            file["filename"] = json!("document.pdf");
        }
        types::ContentPart::File { file }
    }
}

/// Gemini's OpenAPI-subset schema (`responseSchema`, `parameters`) as JSON
/// Schema: type names are upper case there (`OBJECT`), lower case here.
/// Literal values (`enum`, `default`, `example`, `const`) are left alone.
fn openapi_to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => Value::String(t.to_ascii_lowercase()),
                        ("enum" | "default" | "example" | "const", v) => v.clone(),
                        (_, v) => openapi_to_json_schema(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(openapi_to_json_schema).collect()),
        other => other.clone(),
    }
}

fn message(role: Role, content: Option<types::Content>) -> types::Message {
    types::Message {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Map::new(),
    }
}

/// Translates the turns of a request into canonical messages.
fn convert_contents(contents: &[Content]) -> Result<Vec<types::Message>, GatewayError> {
    let mut messages = Vec::new();
    let mut calls: Vec<PendingCall> = Vec::new();
    let mut next_call = 0u32;
    for (ci, content) in contents.iter().enumerate() {
        let at = |pi: usize, field: &str| format!("contents[{ci}].parts[{pi}]{field}");
        // The role may be left out in single-turn requests; `function` is
        // what older API versions used for turns of function responses.
        match content.role.as_deref().unwrap_or("user") {
            "user" | "function" => {
                let mut tool_messages = Vec::new();
                let mut parts = Vec::new();
                for (pi, part) in content.parts.iter().enumerate() {
                    if part.is_thought() {
                        continue;
                    }
                    if let Some(fr) = &part.function_response {
                        let Some(id) = match_call(&mut calls, fr) else {
                            return Err(GatewayError::invalid_param(
                                at(pi, ".functionResponse.name"),
                                format!(
                                    "functionResponse `{}` answers no earlier functionCall of that name.",
                                    fr.name
                                ),
                            ));
                        };
                        let mut m = message(
                            Role::Tool,
                            Some(types::Content::Text(response_text(&fr.response))),
                        );
                        m.tool_call_id = Some(id);
                        tool_messages.push(m);
                    } else if let Some(text) = &part.text {
                        parts.push(types::ContentPart::Text { text: text.clone() });
                    } else if let Some(blob) = &part.inline_data {
                        parts.push(blob_part(&blob.mime_type, &blob.data));
                    } else if let Some(file) = &part.file_data {
                        let mime = file.mime_type.as_deref().unwrap_or("image/*");
                        if !mime.starts_with("image/") {
                            return Err(GatewayError::invalid_param(
                                at(pi, ".fileData.mimeType"),
                                "Only images can be passed by URI (fileData); send other files as inlineData.",
                            ));
                        }
                        parts.push(types::ContentPart::ImageUrl {
                            image_url: types::ImageUrl {
                                url: file.file_uri.clone(),
                                detail: None,
                            },
                        });
                    } else if part.function_call.is_some() {
                        return Err(GatewayError::invalid_param(
                            at(pi, ".functionCall"),
                            "A functionCall belongs in a `model` turn.",
                        ));
                    } else {
                        return Err(GatewayError::invalid_param(
                            at(pi, ""),
                            "Unsupported part: use text, inlineData, fileData or functionResponse.",
                        ));
                    }
                }
                // Tool results must directly follow the assistant turn that
                // made the calls, so they go before the turn's other parts.
                messages.extend(tool_messages);
                if !parts.is_empty() {
                    let content = match parts.as_slice() {
                        [types::ContentPart::Text { text }] => types::Content::Text(text.clone()),
                        _ => types::Content::Parts(parts),
                    };
                    messages.push(message(Role::User, Some(content)));
                }
            }
            "model" => {
                let mut text = String::new();
                let mut tool_calls = Vec::new();
                for (pi, part) in content.parts.iter().enumerate() {
                    if part.is_thought() {
                        continue;
                    }
                    if let Some(t) = &part.text {
                        text.push_str(t);
                    }
                    if let Some(fc) = &part.function_call {
                        let id = fc.id.clone().unwrap_or_else(|| {
                            let id = format!("call_{next_call}");
                            next_call += 1;
                            id
                        });
                        calls.push(PendingCall {
                            id: id.clone(),
                            name: fc.name.clone(),
                            answered: false,
                        });
                        tool_calls.push(types::ToolCall {
                            id,
                            kind: "function".into(),
                            function: types::FunctionCall {
                                name: fc.name.clone(),
                                arguments: args_string(fc.args.as_ref()),
                            },
                        });
                    }
                    if part.inline_data.is_some()
                        || part.file_data.is_some()
                        || part.function_response.is_some()
                    {
                        return Err(GatewayError::invalid_param(
                            at(pi, ""),
                            "A `model` turn can hold only text and functionCall parts.",
                        ));
                    }
                    // A part holding only a thoughtSignature is fine: it is
                    // dropped like the signature itself.
                }
                let content = if text.is_empty() && !tool_calls.is_empty() {
                    None
                } else {
                    Some(types::Content::Text(text))
                };
                let mut m = message(Role::Assistant, content);
                m.tool_calls = (!tool_calls.is_empty()).then_some(tool_calls);
                messages.push(m);
            }
            other => {
                return Err(GatewayError::invalid_param(
                    format!("contents[{ci}].role"),
                    format!("Unknown role `{other}`: Gemini roles are `user` and `model`."),
                ));
            }
        }
    }
    Ok(messages)
}

/// The Gemini generateContent format: the model and the streaming switch
/// are in the path, `{base}/models/{model}:generateContent` or
/// `:streamGenerateContent`.
pub struct Gemini;

impl ClientFormat for Gemini {
    fn kind(&self) -> portcullis_types::gateway_config::InboundKind {
        portcullis_types::gateway_config::InboundKind::Gemini
    }

    fn chat_path(&self, rest: &str) -> Option<ChatPath> {
        let (model, action) = rest.strip_prefix("/models/")?.rsplit_once(':')?;
        let stream = match action {
            "generateContent" => false,
            "streamGenerateContent" => true,
            _ => return None,
        };
        Some(ChatPath {
            model: Some(model.to_owned()),
            stream,
        })
    }

    fn parse(&self, body: &[u8], path: &ChatPath) -> Result<ChatRequest, GatewayError> {
        let model = path.model.as_deref().ok_or_else(|| {
            GatewayError::invalid_request(
                "A Gemini request names its model in the path: `/models/{model}:generateContent`.",
            )
        })?;
        parse_request(body, model, path.stream)
    }

    fn render_response(&self, resp: &ChatResponse) -> Vec<u8> {
        render_response(resp)
    }

    fn render_error(&self, err: &GatewayError) -> Vec<u8> {
        render_error(err)
    }

    fn stream_encoder(&self, req: &ChatRequest) -> Box<dyn StreamEncoder> {
        Box::new(GeminiStreamEncoder::new(&req.model))
    }
}

/// Parses a Gemini `GenerateContentRequest` into the canonical request for
/// `model` (taken from the URL). `stream` is true on
/// `:streamGenerateContent`; usage is then always requested, since Gemini
/// clients always get `usageMetadata`.
pub fn parse_request(body: &[u8], model: &str, stream: bool) -> Result<ChatRequest, GatewayError> {
    let req: GenerateContentRequest = crate::json::parse(body).map_err(|e| {
        if e.path == "." {
            GatewayError::invalid_request(format!("Invalid Gemini request: {}", e.inner))
        } else {
            GatewayError::invalid_param(
                e.path.clone(),
                format!("Invalid Gemini request at `{}`: {}", e.path, e.inner),
            )
        }
    })?;

    if req.contents.is_empty() {
        return Err(GatewayError::invalid_param(
            "contents",
            "contents must not be empty.",
        ));
    }
    let mut messages = Vec::new();
    if let Some(system) = &req.system_instruction {
        let text: Vec<&str> = system
            .parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .collect();
        let text = text.join("\n");
        if !text.is_empty() {
            messages.push(types::Message::text(Role::System, text));
        }
    }
    messages.extend(convert_contents(&req.contents)?);

    let mut tools = Vec::new();
    for (ti, tool) in req.tools.iter().enumerate() {
        let Some(decls) = &tool.function_declarations else {
            return Err(GatewayError::invalid_param(
                format!("tools[{ti}]"),
                "Only functionDeclarations tools are supported through this gateway.",
            ));
        };
        for d in decls {
            let parameters = d
                .parameters_json_schema
                .clone()
                .or_else(|| d.parameters.as_ref().map(openapi_to_json_schema));
            tools.push(types::Tool {
                kind: "function".into(),
                function: types::FunctionDef {
                    name: d.name.clone(),
                    description: d.description.clone(),
                    parameters,
                    strict: None,
                },
            });
        }
    }

    let mut tool_choice = None;
    if let Some(fcc) = req
        .tool_config
        .as_ref()
        .and_then(|t| t.function_calling_config.as_ref())
    {
        let allowed = fcc.allowed_function_names.clone().unwrap_or_default();
        let mode = fcc.mode.as_deref().map(str::to_ascii_uppercase);
        tool_choice = match mode.as_deref() {
            None | Some("MODE_UNSPECIFIED") => None,
            // VALIDATED (constrained text-or-call) has no OpenAI twin; auto
            // is the closest.
            Some("AUTO") | Some("VALIDATED") => Some(types::ToolChoice::Mode("auto".into())),
            Some("NONE") => Some(types::ToolChoice::Mode("none".into())),
            Some("ANY") if allowed.len() == 1 => {
                Some(types::ToolChoice::Named(types::NamedToolChoice {
                    kind: "function".into(),
                    function: types::FunctionName {
                        name: allowed[0].clone(),
                    },
                }))
            }
            Some("ANY") => {
                // OpenAI cannot restrict `required` to some functions:
                // offer only the allowed ones instead.
                if !allowed.is_empty() {
                    tools.retain(|t| allowed.contains(&t.function.name));
                }
                Some(types::ToolChoice::Mode("required".into()))
            }
            Some(other) => {
                return Err(GatewayError::invalid_param(
                    "toolConfig.functionCallingConfig.mode",
                    format!("Unknown function calling mode `{other}`."),
                ));
            }
        };
    }
    if tools.is_empty() {
        // OpenAI rejects a tool_choice without tools.
        tool_choice = None;
    }

    let g = req.generation_config.unwrap_or_default();
    let response_format = match g.response_mime_type.as_deref() {
        None | Some("text/plain") => None,
        Some("application/json") => {
            let schema = g
                .response_json_schema
                .clone()
                .or_else(|| g.response_schema.as_ref().map(openapi_to_json_schema));
            Some(match schema {
                Some(schema) => types::ResponseFormat {
                    kind: "json_schema".into(),
                    json_schema: Some(types::JsonSchemaFormat {
                        name: "response".into(),
                        description: None,
                        schema: Some(schema),
                        strict: None,
                    }),
                },
                None => types::ResponseFormat {
                    kind: "json_object".into(),
                    json_schema: None,
                },
            })
        }
        Some(other) => {
            return Err(GatewayError::invalid_param(
                "generationConfig.responseMimeType",
                format!(
                    "Unsupported responseMimeType `{other}`: use text/plain or application/json."
                ),
            ));
        }
    };
    let stop = g.stop_sequences.filter(|s| !s.is_empty());

    Ok(ChatRequest {
        model: model.strip_prefix("models/").unwrap_or(model).to_owned(),
        messages,
        stream,
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        // `max_tokens` is the field every OpenAI-compatible server knows.
        max_tokens: g.max_output_tokens,
        max_completion_tokens: None,
        temperature: g.temperature,
        top_p: g.top_p,
        n: g.candidate_count,
        stop: stop.map(types::Stop::Many),
        seed: g.seed,
        presence_penalty: g.presence_penalty,
        frequency_penalty: g.frequency_penalty,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls: None,
        response_format,
        user: None,
        extra: Map::new(),
    })
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// Tool call arguments as Gemini's `args` object. Arguments that are not a
/// JSON object (a model can produce broken JSON) are kept as a string
/// under `arguments` rather than lost.
fn args_value(arguments: &str) -> Value {
    let raw = arguments.trim();
    if raw.is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "arguments": arguments }),
    }
}

fn function_call_part(id: Option<String>, name: String, arguments: &str) -> Part {
    Part {
        function_call: Some(FunctionCall {
            id,
            name,
            args: Some(args_value(arguments)),
        }),
        ..Default::default()
    }
}

fn model_content(parts: Vec<Part>) -> Content {
    Content {
        role: Some("model".into()),
        parts,
    }
}

fn candidate_from_choice(choice: &types::Choice) -> Candidate {
    let mut parts = Vec::new();
    let text = choice.message.text_content();
    if !text.is_empty() {
        parts.push(Part::text(text));
    }
    for call in choice.message.tool_calls.iter().flatten() {
        parts.push(function_call_part(
            Some(call.id.clone()),
            call.function.name.clone(),
            &call.function.arguments,
        ));
    }
    let finish = choice.finish_reason.unwrap_or(FinishReason::Stop);
    // Gemini leaves `content` out of a candidate stopped by a safety
    // filter; otherwise clients read `parts[0]`, so it is never empty.
    if parts.is_empty() && finish != FinishReason::ContentFilter {
        parts.push(Part::text(""));
    }
    Candidate {
        content: (!parts.is_empty()).then(|| model_content(parts)),
        finish_reason: Some(finish_reason_to_gemini(finish).to_owned()),
        index: Some(choice.index),
    }
}

/// Renders a canonical chat completion as a Gemini `GenerateContentResponse`.
pub fn render_response(resp: &ChatResponse) -> Vec<u8> {
    let out = GenerateContentResponse {
        candidates: resp.choices.iter().map(candidate_from_choice).collect(),
        prompt_feedback: None,
        usage_metadata: resp.usage.as_ref().map(UsageMetadata::from_usage),
        model_version: Some(resp.model.clone()),
        response_id: Some(resp.id.clone()),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// The `google.rpc.Code` name Gemini reports with an HTTP status.
pub fn status_name(status: u16) -> &'static str {
    match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        400..=499 => "INVALID_ARGUMENT",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Renders an error as Gemini's envelope,
/// `{"error":{"code":<status>,"message","status":"INVALID_ARGUMENT"|...}}`.
pub fn render_error(err: &GatewayError) -> Vec<u8> {
    let env = ErrorEnvelope {
        error: ErrorBody {
            code: Some(err.status),
            message: err.message.clone(),
            status: Some(status_name(err.status).to_owned()),
            details: Vec::new(),
        },
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// A tool call being assembled from OpenAI-style fragments.
#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Renders canonical chunks as `streamGenerateContent?alt=sse` events.
///
/// Each event is `data: <GenerateContentResponse>` ended by `\r\n\r\n`, the
/// framing Google's servers use. Text deltas pass through as they come;
/// tool call fragments are held until the call is whole, because Gemini
/// clients expect one complete `functionCall` part per call. The last event
/// carries `finishReason` and `usageMetadata`.
pub struct GeminiStreamEncoder {
    model: String,
    response_id: Option<String>,
    /// Calls in progress by (choice index, tool call index).
    pending: BTreeMap<(u32, u32), PartialCall>,
    /// Calls already sent; late fragments of them are ignored.
    sent: HashSet<(u32, u32)>,
    finish: BTreeMap<u32, FinishReason>,
    seen: BTreeSet<u32>,
}

impl GeminiStreamEncoder {
    /// An encoder for one stream; `model` is reported as `modelVersion`
    /// until a chunk names the model.
    pub fn new(model: &str) -> Self {
        GeminiStreamEncoder {
            model: model.to_owned(),
            response_id: None,
            pending: BTreeMap::new(),
            sent: HashSet::new(),
            finish: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Moves the pending calls of `choice` that `pick` selects to `parts`.
    fn flush(&mut self, choice: u32, pick: impl Fn(u32) -> bool, parts: &mut Vec<Part>) {
        let keys: Vec<(u32, u32)> = self
            .pending
            .keys()
            .filter(|(c, t)| *c == choice && pick(*t))
            .copied()
            .collect();
        for key in keys {
            let Some(call) = self.pending.remove(&key) else {
                continue;
            };
            self.sent.insert(key);
            // A call whose name never came cannot be rendered.
            if !call.name.is_empty() {
                parts.push(function_call_part(call.id, call.name, &call.arguments));
            }
        }
    }

    fn write(&self, candidates: Vec<Candidate>, usage: Option<&Usage>, out: &mut BytesMut) {
        let resp = GenerateContentResponse {
            candidates,
            prompt_feedback: None,
            usage_metadata: usage.map(UsageMetadata::from_usage),
            model_version: Some(self.model.clone()),
            response_id: self.response_id.clone(),
        };
        write_event(out, &serde_json::to_vec(&resp).unwrap_or_default());
    }
}

/// Appends `data: <json>\r\n\r\n`. Google's servers end alt=sse events with
/// CRLF pairs (not the `\n\n` of `crate::sse::write_data`); clients that
/// split on `\r\n\r\n` would otherwise see one endless event.
fn write_event(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 10);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\r\n\r\n");
}

/// Whether accumulated arguments form a whole JSON object (cheap test
/// first: a complete object ends with `}`).
fn is_whole_object(arguments: &str) -> bool {
    arguments.trim_end().ends_with('}')
        && matches!(
            serde_json::from_str::<Value>(arguments),
            Ok(Value::Object(_))
        )
}

impl StreamEncoder for GeminiStreamEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if self.response_id.is_none() && !chunk.id.is_empty() {
            self.response_id = Some(chunk.id.clone());
        }
        if !chunk.model.is_empty() {
            self.model = chunk.model.clone();
        }
        let mut candidates = Vec::new();
        for choice in &chunk.choices {
            let index = choice.index;
            self.seen.insert(index);
            let mut parts = Vec::new();
            if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
                parts.push(Part::text(text));
            }
            for delta in choice.delta.tool_calls.iter().flatten() {
                let key = (index, delta.index);
                if self.sent.contains(&key) {
                    continue;
                }
                if !self.pending.contains_key(&key) {
                    // A new call starts: the earlier ones are complete.
                    self.flush(index, |t| t != delta.index, &mut parts);
                }
                let call = self.pending.entry(key).or_default();
                if let Some(id) = &delta.id {
                    call.id = Some(id.clone());
                }
                if let Some(f) = &delta.function {
                    if let Some(name) = f.name.as_deref().filter(|n| !n.is_empty())
                        && call.name.is_empty()
                    {
                        call.name = name.to_owned();
                    }
                    if let Some(args) = &f.arguments {
                        call.arguments.push_str(args);
                    }
                }
                if !call.name.is_empty() && is_whole_object(&call.arguments) {
                    self.flush(index, |t| t == delta.index, &mut parts);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.flush(index, |_| true, &mut parts);
                self.finish.insert(index, reason);
            }
            if !parts.is_empty() {
                candidates.push(Candidate {
                    content: Some(model_content(parts)),
                    finish_reason: None,
                    index: Some(index),
                });
            }
        }
        // Role-only and finish-only chunks have nothing to show yet.
        if !candidates.is_empty() {
            self.write(candidates, None, out);
        }
    }

    fn finish(
        &mut self,
        usage: Option<&Usage>,
        finish_reason: Option<FinishReason>,
        out: &mut BytesMut,
    ) {
        let mut indexes = self.seen.clone();
        indexes.extend(self.pending.keys().map(|(c, _)| *c));
        if indexes.is_empty() {
            indexes.insert(0);
        }
        let mut candidates = Vec::new();
        for index in indexes {
            let mut parts = Vec::new();
            self.flush(index, |_| true, &mut parts);
            if parts.is_empty() {
                // Gemini's last event also carries a (often empty) text part.
                parts.push(Part::text(""));
            }
            let reason = self
                .finish
                .get(&index)
                .copied()
                .or(finish_reason)
                .unwrap_or(FinishReason::Stop);
            candidates.push(Candidate {
                content: Some(model_content(parts)),
                finish_reason: Some(finish_reason_to_gemini(reason).to_owned()),
                index: Some(index),
            });
        }
        self.write(candidates, usage, out);
    }

    fn error(&mut self, err: &GatewayError, out: &mut BytesMut) {
        write_event(out, &render_error(err));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::gemini::GeminiProvider;
    use crate::providers::{Provider, ProviderSettings, UpstreamCall};
    use crate::sse::SseParser;
    use portcullis_types::usage::{CompletionTokensDetails, PromptTokensDetails};

    fn parse(v: Value) -> Result<ChatRequest, GatewayError> {
        parse_request(v.to_string().as_bytes(), "gemini-2.5-flash", false)
    }

    // After Google's function-calling guide: a system instruction, a call,
    // its response, a follow-up with an image, tools and config.
    fn conversation() -> Value {
        json!({
            "system_instruction": {"parts": [{"text": "You are a helpful assistant."}, {"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "What's the weather in Boston and Paris?"}]},
                {"role": "model", "parts": [
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_current_weather", "args": {"location": "Boston, MA"}}, "thoughtSignature": "CikB"},
                    {"functionCall": {"name": "get_current_weather", "args": {"location": "Paris"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_current_weather", "response": {"content": {"temperature": 22, "unit": "celsius"}}}},
                    {"functionResponse": {"name": "get_current_weather", "response": {"temperature": 18}}},
                    {"text": "And this picture?"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}
                ]}
            ],
            "tools": [{"functionDeclarations": [{
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": {"type": "OBJECT", "properties": {
                    "location": {"type": "STRING", "description": "The city"},
                    "unit": {"type": "STRING", "enum": ["CELSIUS", "FAHRENHEIT"]}
                }, "required": ["location"]}
            }]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_current_weather"]}},
            "generationConfig": {
                "temperature": 0.4, "topP": 0.95, "topK": 40, "maxOutputTokens": 512,
                "stopSequences": ["STOP!"], "candidateCount": 1, "seed": 7,
                "presencePenalty": 0.1, "frequencyPenalty": 0.2,
                "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"answer": {"type": "STRING"}}}
            },
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
        })
    }

    #[test]
    fn parse_request_translates_everything() {
        let req = parse(conversation()).unwrap();
        let expected: ChatRequest = serde_json::from_value(json!({
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant.\nBe brief."},
                {"role": "user", "content": "What's the weather in Boston and Paris?"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Boston, MA\"}"}},
                    {"id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_0", "content": "{\"temperature\":22,\"unit\":\"celsius\"}"},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\":18}"},
                {"role": "user", "content": [
                    {"type": "text", "text": "And this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
                ]}
            ],
            "max_tokens": 512,
            "temperature": 0.4,
            "top_p": 0.95,
            "n": 1,
            "stop": ["STOP!"],
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "tools": [{"type": "function", "function": {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": {"type": "object", "properties": {
                    "location": {"type": "string", "description": "The city"},
                    "unit": {"type": "string", "enum": ["CELSIUS", "FAHRENHEIT"]}
                }, "required": ["location"]}
            }}],
            "tool_choice": {"type": "function", "function": {"name": "get_current_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object", "properties": {"answer": {"type": "string"}}}}}
        }))
        .unwrap();
        assert_eq!(req, expected);
        assert!(!req.stream);
        assert_eq!(req.stream_options, None);
    }

    #[test]
    fn streaming_requests_always_ask_for_usage() {
        let body = json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string();
        let req = parse_request(body.as_bytes(), "models/gemini-2.0-flash", true).unwrap();
        assert!(req.stream);
        assert!(req.wants_stream_usage());
        assert_eq!(req.model, "gemini-2.0-flash");
        assert_eq!(req.messages, vec![types::Message::text(Role::User, "hi")]);
    }

    #[test]
    fn tool_modes_and_json_mode() {
        let base = |mode: Value| {
            json!({
                "contents": [{"role": "user", "parts": [{"text": "x"}]}],
                "tools": [{"functionDeclarations": [
                    {"name": "a", "parametersJsonSchema": {"type": "object", "additionalProperties": false}},
                    {"name": "b"}, {"name": "c"}
                ]}],
                "toolConfig": {"functionCallingConfig": mode},
                "generationConfig": {"responseMimeType": "application/json"}
            })
        };
        let req = parse(base(json!({"mode": "AUTO"}))).unwrap();
        assert_eq!(
            req.tool_choice,
            Some(types::ToolChoice::Mode("auto".into()))
        );
        assert_eq!(
            req.tools.as_ref().unwrap()[0].function.parameters,
            Some(json!({"type": "object", "additionalProperties": false}))
        );
        assert_eq!(req.tools.as_ref().unwrap()[1].function.parameters, None);
        assert_eq!(
            req.response_format,
            Some(types::ResponseFormat {
                kind: "json_object".into(),
                json_schema: None
            })
        );
        let req = parse(base(json!({"mode": "NONE"}))).unwrap();
        assert_eq!(
            req.tool_choice,
            Some(types::ToolChoice::Mode("none".into()))
        );
        let req = parse(base(json!({"mode": "ANY"}))).unwrap();
        assert_eq!(
            req.tool_choice,
            Some(types::ToolChoice::Mode("required".into()))
        );
        assert_eq!(req.tools.as_ref().unwrap().len(), 3);
        let req = parse(base(
            json!({"mode": "ANY", "allowedFunctionNames": ["a", "c"]}),
        ))
        .unwrap();
        assert_eq!(
            req.tool_choice,
            Some(types::ToolChoice::Mode("required".into()))
        );
        let names: Vec<&str> = req
            .tools
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.function.name.as_str())
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn parse_errors_name_the_field() {
        let cases = [
            (
                json!({"contents": [{"role": "user", "parts": [{"text": 5}]}]}),
                "contents[0].parts[0].text",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": "hot"}}),
                "generationConfig.temperature",
            ),
            (
                json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png"}}]}]}),
                "contents[0].parts[0].inlineData",
            ),
            (json!({"contents": []}), "contents"),
            (
                json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
                "contents[0].role",
            ),
            (
                json!({"contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
                ]}),
                "contents[1].parts[0].functionResponse.name",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}),
                "tools[0]",
            ),
            (
                json!({"contents": [{"parts": [{"executableCode": {"code": "1"}}]}]}),
                "contents[0].parts[0]",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "text/x.enum"}}),
                "generationConfig.responseMimeType",
            ),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
        }
        let err = parse_request(b"{\"contents\": [", "m", false).unwrap_err();
        assert_eq!(err.status, 400);
        let err = parse_request(
            b"{\"contents\":[{\"parts\":[{\"text\":\"x\"}]}]} trailing",
            "m",
            false,
        )
        .unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn other_media_parts() {
        let req = parse(json!({"contents": [{"parts": [
            {"inlineData": {"mimeType": "audio/mpeg", "data": "SUQz"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png"}}
        ]}]}))
        .unwrap();
        let Some(types::Content::Parts(parts)) = &req.messages[0].content else {
            panic!("parts expected")
        };
        assert_eq!(
            parts,
            &vec![
                types::ContentPart::InputAudio {
                    input_audio: json!({"data": "SUQz", "format": "mp3"})
                },
                types::ContentPart::File {
                    file: json!({"file_data": "data:application/pdf;base64,JVBE", "filename": "document.pdf"})
                },
                types::ContentPart::ImageUrl {
                    image_url: types::ImageUrl {
                        url: "https://example.com/a.png".into(),
                        detail: None
                    }
                },
            ]
        );
    }

    fn response() -> ChatResponse {
        serde_json::from_value(json!({
            "id": "chatcmpl-123",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-5-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Sure.", "tool_calls": [
                    {"id": "call_abc", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Boston, MA\"}"}}
                ]}, "finish_reason": "tool_calls"},
                {"index": 1, "message": {"role": "assistant", "content": "Cut sho"}, "finish_reason": "length"},
                {"index": 2, "message": {"role": "assistant", "content": null}, "finish_reason": "content_filter"}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50,
                      "prompt_tokens_details": {"cached_tokens": 5},
                      "completion_tokens_details": {"reasoning_tokens": 12}}
        }))
        .unwrap()
    }

    #[test]
    fn render_response_as_gemini() {
        let v: Value = serde_json::from_slice(&render_response(&response())).unwrap();
        assert_eq!(
            v,
            json!({
                "candidates": [
                    {"content": {"role": "model", "parts": [
                        {"text": "Sure."},
                        {"functionCall": {"id": "call_abc", "name": "get_current_weather", "args": {"location": "Boston, MA"}}}
                    ]}, "finishReason": "STOP", "index": 0},
                    {"content": {"role": "model", "parts": [{"text": "Cut sho"}]}, "finishReason": "MAX_TOKENS", "index": 1},
                    {"finishReason": "SAFETY", "index": 2}
                ],
                "usageMetadata": {
                    "promptTokenCount": 20, "candidatesTokenCount": 18, "totalTokenCount": 50,
                    "cachedContentTokenCount": 5, "thoughtsTokenCount": 12
                },
                "modelVersion": "gpt-5-mini",
                "responseId": "chatcmpl-123"
            })
        );
        // And the outbound adapter reads it back to the same usage.
        let back: GenerateContentResponse = serde_json::from_value(v).unwrap();
        let u = back.usage_metadata.unwrap().into_usage();
        assert_eq!(u, response().usage.unwrap());
    }

    #[test]
    fn render_error_statuses() {
        let cases = [
            (
                GatewayError::invalid_param("x", "bad"),
                400,
                "INVALID_ARGUMENT",
            ),
            (GatewayError::unauthorized("no key"), 401, "UNAUTHENTICATED"),
            (GatewayError::model_not_found("m"), 404, "NOT_FOUND"),
            (
                GatewayError::upstream_status(429, "slow down"),
                429,
                "RESOURCE_EXHAUSTED",
            ),
            (GatewayError::payload_too_large(10), 413, "INVALID_ARGUMENT"),
            (GatewayError::internal("boom"), 500, "INTERNAL"),
            (
                GatewayError::upstream_connect("refused"),
                502,
                "UNAVAILABLE",
            ),
            (
                GatewayError::upstream_status(503, "busy"),
                503,
                "UNAVAILABLE",
            ),
            (
                GatewayError::upstream_timeout("slow"),
                504,
                "DEADLINE_EXCEEDED",
            ),
        ];
        for (err, code, status) in cases {
            let v: Value = serde_json::from_slice(&render_error(&err)).unwrap();
            assert_eq!(
                v,
                json!({"error": {"code": code, "message": err.message, "status": status}})
            );
        }
        assert_eq!(status_name(403), "PERMISSION_DENIED");
    }

    fn chunk(choices: Value) -> ChatChunk {
        serde_json::from_value(json!({
            "id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-5-mini", "choices": choices
        }))
        .unwrap()
    }

    /// Splits encoder output into its events, checking the framing.
    fn events(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        for frame in text.split_terminator("\r\n\r\n") {
            assert!(frame.starts_with("data: "), "{frame:?}");
            assert!(!frame.contains('\n'), "one line per event: {frame:?}");
        }
        let mut parser = SseParser::default();
        let mut evs = Vec::new();
        parser.feed(out, &mut evs).unwrap();
        parser.finish(&mut evs).unwrap();
        evs.iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    #[test]
    fn encoder_streams_text_and_whole_function_calls() {
        let mut enc = GeminiStreamEncoder::new("gemini-2.5-flash");
        let mut out = BytesMut::new();
        enc.chunk(
            &chunk(json!([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}])),
            &mut out,
        );
        assert!(out.is_empty(), "a role-only chunk shows nothing");
        enc.chunk(
            &chunk(json!([{"index": 0, "delta": {"content": "Checking"}}])),
            &mut out,
        );
        enc.chunk(
            &chunk(json!([{"index": 0, "delta": {"content": " now."}}])),
            &mut out,
        );
        // Two calls in OpenAI-style fragments.
        enc.chunk(&chunk(json!([{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_A", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        ]}}])), &mut out);
        enc.chunk(
            &chunk(json!([{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "{\"location\":"}}
            ]}}])),
            &mut out,
        );
        let before = out.len();
        enc.chunk(
            &chunk(json!([{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": " \"Bos"}}
            ]}}])),
            &mut out,
        );
        assert_eq!(out.len(), before, "an incomplete call is held back");
        enc.chunk(
            &chunk(json!([{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "ton\"}"}}
            ]}}])),
            &mut out,
        );
        enc.chunk(&chunk(json!([{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_B", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":"}}
        ]}}])), &mut out);
        enc.chunk(
            &chunk(json!([{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "function": {"arguments": "\"EST\""}}
            ]}}])),
            &mut out,
        );
        // The closing brace never comes: the finish reason completes it.
        enc.chunk(
            &chunk(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])),
            &mut out,
        );
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 9,
            total_tokens: 19,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(3),
                audio_tokens: None,
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: Some(4),
                audio_tokens: None,
            }),
        };
        enc.finish(Some(&usage), Some(FinishReason::ToolCalls), &mut out);

        let evs = events(&out);
        let common = |mut v: Value| {
            v["modelVersion"] = json!("gpt-5-mini");
            v["responseId"] = json!("chatcmpl-9");
            v
        };
        assert_eq!(
            evs,
            vec![
                common(
                    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking"}]}, "index": 0}]})
                ),
                common(
                    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " now."}]}, "index": 0}]})
                ),
                common(
                    json!({"candidates": [{"content": {"role": "model", "parts": [
                    {"functionCall": {"id": "call_A", "name": "get_weather", "args": {"location": "Boston"}}}
                ]}, "index": 0}]})
                ),
                common(
                    json!({"candidates": [{"content": {"role": "model", "parts": [
                    {"functionCall": {"id": "call_B", "name": "get_time", "args": {"arguments": "{\"tz\":\"EST\""}}}
                ]}, "index": 0}]})
                ),
                common(json!({
                    "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 19,
                                      "cachedContentTokenCount": 3, "thoughtsTokenCount": 4}
                })),
            ]
        );
        // Read back by the outbound decoder, the stream gives the same text,
        // calls and usage.
        let mut dec = crate::providers::gemini::GeminiStreamDecoder::new("m");
        let mut decoded = Vec::new();
        crate::providers::StreamDecoder::feed(&mut dec, &out, &mut decoded);
        assert!(crate::providers::StreamDecoder::is_complete(&dec));
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut last_usage = None;
        let mut last_finish = None;
        for ev in decoded {
            let crate::providers::StreamEvent::Chunk(c) = ev else {
                panic!("error event")
            };
            for ch in &c.choices {
                text.push_str(ch.delta.content.as_deref().unwrap_or(""));
                for t in ch.delta.tool_calls.iter().flatten() {
                    calls.push((
                        t.id.clone().unwrap(),
                        t.function.clone().unwrap().name.unwrap(),
                    ));
                }
                last_finish = ch.finish_reason.or(last_finish);
            }
            last_usage = c.usage.or(last_usage);
        }
        assert_eq!(text, "Checking now.");
        assert_eq!(
            calls,
            vec![
                ("call_A".into(), "get_weather".into()),
                ("call_B".into(), "get_time".into())
            ]
        );
        assert_eq!(last_finish, Some(FinishReason::ToolCalls));
        assert_eq!(last_usage, Some(usage));
    }

    #[test]
    fn encoder_finish_without_content_and_errors() {
        let mut enc = GeminiStreamEncoder::new("gemini-2.5-flash");
        let mut out = BytesMut::new();
        enc.finish(None, Some(FinishReason::Length), &mut out);
        assert_eq!(
            events(&out),
            vec![json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "MAX_TOKENS", "index": 0}],
                "modelVersion": "gemini-2.5-flash"
            })]
        );
        let mut out = BytesMut::new();
        enc.error(&GatewayError::upstream_status(429, "slow down"), &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"error\":{\"code\":429,\"message\":\"slow down\",\"status\":\"RESOURCE_EXHAUSTED\"}}\r\n\r\n"
        );
    }

    #[test]
    fn inbound_to_outbound_round_trip() {
        let original = json!({
            "systemInstruction": {"parts": [{"text": "You are a helpful assistant."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "What's the weather in Boston?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_current_weather", "args": {"location": "Boston, MA"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_current_weather", "response": {"content": {"temperature": 22, "unit": "celsius"}}}}]},
                {"role": "model", "parts": [{"text": "It is 22°C."}]},
                {"role": "user", "parts": [{"text": "Describe this."}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}
            ],
            "tools": [{"functionDeclarations": [{
                "name": "get_current_weather",
                "description": "Get the current weather",
                "parametersJsonSchema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
            }]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "generationConfig": {"temperature": 0.5, "topP": 0.8, "maxOutputTokens": 100, "stopSequences": ["\n\n"], "seed": 3}
        });
        let canonical =
            parse_request(original.to_string().as_bytes(), "gemini-2.5-flash", true).unwrap();
        let provider = GeminiProvider::new(ProviderSettings::default());
        let call = UpstreamCall {
            model: &canonical.model,
            api_key: Some("k"),
            stream: canonical.stream,
            track_usage: true,
        };
        let up = provider.chat_request(&canonical, &call).unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        // Identical but for the thought signature the adapter adds to the
        // replayed call (the client's own signature has no canonical home).
        let mut expected = original.clone();
        expected["contents"][1]["parts"][0]["thoughtSignature"] =
            json!("skip_thought_signature_validator");
        assert_eq!(sent, expected);
    }
}
