//! The OpenAI Chat Completions dialect, spoken by three providers with
//! small differences:
//!
//! - **OpenAI** (`/v1/...`): `Authorization: Bearer`; a streamed usage chunk
//!   (`choices: []`) only when `stream_options.include_usage` is true, and
//!   then `"usage": null` on every other chunk.
//! - **Azure OpenAI** (`/openai/deployments/{deployment}/...?api-version=`):
//!   `api-key` header (or Entra ID bearer); the model is the deployment; a
//!   missing `api-version` answers 404 "Resource not found" as Azure does;
//!   responses carry `prompt_filter_results`/`content_filter_results`, and a
//!   stream starts with a chunk whose `choices` is empty.
//! - **Mistral** (`/mistral/v1/...`): bearer auth; a stream's last chunk
//!   always carries `usage`, with no `stream_options` needed; tool calls
//!   arrive whole in one chunk, not as argument fragments.
//!
//! Endpoints: chat completions (streamed or not), embeddings and, for OpenAI
//! and Mistral, the model list; for OpenAI also the legacy text
//! completions (`/v1/completions`, and Azure's
//! `/openai/deployments/{deployment}/completions`) and moderations
//! (`/v1/moderations`). The Responses API is in `responses`.

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::exchange::{Exchange, Outcome, sse_data, unix_now};
use crate::journal::JournalUsage;
use crate::reply::{
    Content, Conversation, DEFAULT_EMBEDDING_DIMS, Finish, LastTurn, MAX_EMBEDDING_DIMS, Provider,
    Reply, embed, words,
};

const SYSTEM_FINGERPRINT: &str = "fp_mock";

/// `POST .../chat/completions`. `deployment` is the Azure path segment.
pub(crate) fn chat(ex: &mut Exchange, deployment: Option<String>) -> Outcome {
    let provider = ex.provider;
    if let Err(error) = check_access(ex) {
        return Outcome::Error(error);
    }
    let Some(body) = ex.json_object() else {
        return Outcome::Error(invalid_json(provider));
    };
    ex.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let model = match model_of(provider, &body, deployment) {
        Ok(model) => model,
        Err(error) => return Outcome::Error(error),
    };
    ex.model = Some(model.clone());

    let messages = match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => {
            return Outcome::Error(
                bad_request(
                    provider,
                    "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                )
                .param("messages")
                .code("empty_array"),
            );
        }
        _ => {
            return Outcome::Error(
                bad_request(provider, "Missing required parameter: 'messages'.")
                    .param("messages")
                    .code("missing_required_parameter"),
            );
        }
    };

    let conversation = read_conversation(&body, messages);
    let reply = conversation.reply(provider, &model);
    let ids = Ids::new(provider, ex.seq);
    if ex.stream {
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let frames = stream_frames(provider, &ids, &model, &reply, include_usage);
        Outcome::stream("text/event-stream", frames, &reply)
    } else {
        Outcome::json(completion(provider, &ids, &model, &reply), &reply)
    }
}

/// `POST /v1/completions`, OpenAI's legacy text completions: the prompt
/// (its first text when it is a list) is answered like a chat's last user
/// message, as `text_completion` objects; streamed as `data:` chunks and
/// `[DONE]`, with a usage chunk (`choices: []`) only when
/// `stream_options.include_usage` is true.
/// `deployment` is the Azure path segment (Azure serves the legacy API for
/// its instruct deployments).
pub(crate) fn legacy_completion(ex: &mut Exchange, deployment: Option<String>) -> Outcome {
    let provider = ex.provider;
    if let Err(error) = check_access(ex) {
        return Outcome::Error(error);
    }
    let Some(body) = ex.json_object() else {
        return Outcome::Error(invalid_json(provider));
    };
    ex.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let model = match model_of(provider, &body, deployment) {
        Ok(model) => model,
        Err(error) => return Outcome::Error(error),
    };
    ex.model = Some(model.clone());
    let prompt = match body.get("prompt") {
        Some(Value::String(p)) => p.clone(),
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_string) => {
            items[0].as_str().unwrap_or_default().to_owned()
        }
        _ => {
            return Outcome::Error(
                bad_request(provider, "Missing required parameter: 'prompt'.")
                    .param("prompt")
                    .code("missing_required_parameter"),
            );
        }
    };
    let conversation = read_conversation(&body, &[json!({"role": "user", "content": prompt})]);
    let reply = conversation.reply(provider, &model);
    let Content::Text(text) = &reply.content else {
        return Outcome::Error(bad_request(provider, "Tools are not supported here."));
    };
    let id = format!("cmpl-mock{:016}", ex.seq);
    let created = unix_now();
    let finish = finish_reason(&reply.finish);
    let usage = json!({
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    });
    let object = |choices: Value, usage: Option<&Value>| {
        let mut o = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        });
        if let Some(u) = usage {
            o["usage"] = u.clone();
        }
        if provider == Provider::Azure {
            o["prompt_filter_results"] = prompt_filter_results();
        }
        o
    };
    let choice = |text: &str, finish: Option<&str>| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]);
    if !ex.stream {
        return Outcome::json(object(choice(text, Some(finish)), Some(&usage)), &reply);
    }
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let pieces = reply.stream_pieces();
    let last = pieces.len().saturating_sub(1);
    let mut frames: Vec<_> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| sse_data(&object(choice(piece, (i == last).then_some(finish)), None)))
        .collect();
    if include_usage {
        frames.push(sse_data(&object(json!([]), Some(&usage))));
    }
    frames.push(axum::body::Bytes::from_static(b"data: [DONE]\n\n"));
    Outcome::stream("text/event-stream", frames, &reply)
}

/// The categories of OpenAI's omni moderation model.
const MODERATION_CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// `POST /v1/moderations`: one result per input text; a text with the word
/// "kill" is flagged for violence, anything else is clean (deterministic,
/// so tests can expect either).
pub(crate) fn moderation(ex: &mut Exchange) -> Outcome {
    let provider = ex.provider;
    if let Err(error) = check_access(ex) {
        return Outcome::Error(error);
    }
    let Some(body) = ex.json_object() else {
        return Outcome::Error(invalid_json(provider));
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("omni-moderation-latest")
        .to_owned();
    ex.model = Some(model.clone());
    let texts: Vec<String> = match body.get("input") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .or_else(|| i.get("text").and_then(Value::as_str).map(str::to_owned))
            })
            .collect(),
        _ => Vec::new(),
    };
    if texts.is_empty() {
        return Outcome::Error(
            bad_request(provider, "Missing required parameter: 'input'.").param("input"),
        );
    }
    let results: Vec<Value> = texts
        .iter()
        .map(|text| {
            let violent = text
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w.eq_ignore_ascii_case("kill"));
            let mut categories = Map::new();
            let mut scores = Map::new();
            let mut applied = Map::new();
            for &c in MODERATION_CATEGORIES {
                let hit = violent && c == "violence";
                categories.insert(c.into(), json!(hit));
                scores.insert(c.into(), json!(if hit { 0.91 } else { 0.0001 }));
                applied.insert(c.into(), json!(["text"]));
            }
            json!({
                "flagged": violent,
                "categories": categories,
                "category_scores": scores,
                "category_applied_input_types": applied,
            })
        })
        .collect();
    Outcome::Json {
        body: json!({"id": format!("modr-mock{:016}", ex.seq), "model": model, "results": results}),
        usage: None,
    }
}

/// `POST .../embeddings`.
pub(crate) fn embeddings(ex: &mut Exchange, deployment: Option<String>) -> Outcome {
    let provider = ex.provider;
    if let Err(error) = check_access(ex) {
        return Outcome::Error(error);
    }
    let Some(body) = ex.json_object() else {
        return Outcome::Error(invalid_json(provider));
    };
    let model = match model_of(provider, &body, deployment) {
        Ok(model) => model,
        Err(error) => return Outcome::Error(error),
    };
    ex.model = Some(model.clone());

    // Mistral's older clients send `inputs`.
    let input = body.get("input").or_else(|| {
        (provider == Provider::Mistral)
            .then(|| body.get("inputs"))
            .flatten()
    });
    let Some(texts) = input.and_then(embedding_inputs) else {
        return Outcome::Error(
            bad_request(
                provider,
                "'input' must be a non-empty string, array of strings, array of tokens or array of token arrays.",
            )
            .param("input"),
        );
    };
    let dims_field = if provider == Provider::Mistral {
        "output_dimension"
    } else {
        "dimensions"
    };
    let dims = match body.get(dims_field) {
        None | Some(Value::Null) => DEFAULT_EMBEDDING_DIMS,
        Some(value) => {
            match value.as_u64() {
                Some(n) if (1..=MAX_EMBEDDING_DIMS as u64).contains(&n) => n as usize,
                _ => {
                    return Outcome::Error(
                    bad_request(
                        provider,
                        format!("'{dims_field}' must be an integer between 1 and {MAX_EMBEDDING_DIMS}."),
                    )
                    .param(if provider == Provider::Mistral {
                        "output_dimension"
                    } else {
                        "dimensions"
                    }),
                );
                }
            }
        }
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Outcome::Error(
                bad_request(provider, "'encoding_format' must be 'float' or 'base64'.")
                    .param("encoding_format"),
            );
        }
    };

    let tokens: u64 = texts.iter().map(|t| words(t)).sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embed(text, dims);
            let embedding = if base64 {
                // OpenAI's base64 format: little-endian f32s.
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let usage = match provider {
        Provider::Mistral => {
            json!({"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0})
        }
        _ => json!({"prompt_tokens": tokens, "total_tokens": tokens}),
    };
    let mut response = Map::new();
    if provider == Provider::Mistral {
        response.insert("id".into(), json!(format!("{:032x}", ex.seq)));
    }
    response.insert("object".into(), json!("list"));
    response.insert("data".into(), json!(data));
    response.insert("model".into(), json!(model));
    response.insert("usage".into(), usage);
    Outcome::Json {
        body: Value::Object(response),
        usage: Some(JournalUsage {
            input_tokens: tokens,
            output_tokens: 0,
        }),
    }
}

/// Authentication (and Azure's `api-version`), checked before the body.
pub(crate) fn check_access(ex: &Exchange) -> Result<(), ApiError> {
    match ex.provider {
        Provider::Azure => {
            // Azure routes on api-version: without it the URL does not exist.
            if ex.query_param("api-version").is_none_or(|v| v.is_empty()) {
                return Err(ApiError::new(StatusCode::NOT_FOUND, "Resource not found"));
            }
            if ex.header("api-key").is_none() && ex.bearer().is_none() {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
                ));
            }
        }
        Provider::Mistral => {
            if ex.bearer().is_none() {
                return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
            }
        }
        _ => {
            if ex.bearer().is_none() {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys.",
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn bad_request(provider: Provider, message: impl Into<String>) -> ApiError {
    let error = ApiError::new(StatusCode::BAD_REQUEST, message);
    match provider {
        Provider::Mistral => error.kind("invalid_request_error"),
        _ => error,
    }
}

pub(crate) fn invalid_json(provider: Provider) -> ApiError {
    match provider {
        Provider::Mistral => bad_request(provider, "Invalid JSON body: expected a JSON object"),
        _ => bad_request(
            provider,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
        ),
    }
}

/// The model the response names: Azure's deployment, else the body's
/// `model` (required).
fn model_of(
    provider: Provider,
    body: &Map<String, Value>,
    deployment: Option<String>,
) -> Result<String, ApiError> {
    if let Some(deployment) = deployment {
        return Ok(deployment);
    }
    match body.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => Ok(model.to_owned()),
        _ => Err(bad_request(provider, "you must provide a model parameter").param("model")),
    }
}

/// Reads the messages, tools, limits and stop sequences of a request.
fn read_conversation(body: &Map<String, Value>, messages: &[Value]) -> Conversation {
    let mut conversation = Conversation::default();
    let mut texts = Vec::with_capacity(messages.len());
    for message in messages {
        let text = content_text(message.get("content"));
        conversation.add_input(&text);
        if role_of(message) == "user" {
            conversation.last_user_text = text.clone();
        }
        texts.push(text);
    }

    let last = messages.len() - 1;
    conversation.last = match role_of(&messages[last]) {
        "user" => LastTurn::User(texts[last].clone()),
        "tool" | "function" => {
            // Parallel tool calls come back as consecutive tool messages.
            let first = messages
                .iter()
                .rposition(|m| !matches!(role_of(m), "tool" | "function"))
                .map_or(0, |i| i + 1);
            LastTurn::ToolResults(texts[first..].join("\n"))
        }
        _ => LastTurn::Other,
    };

    let tools_off = body.get("tool_choice").and_then(Value::as_str) == Some("none");
    if !tools_off {
        conversation.first_tool = body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .and_then(|tool| tool.get("function"))
            .and_then(|function| function.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    conversation.max_tokens = body
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| body.get("max_tokens").and_then(Value::as_u64));
    conversation.stop = match body.get("stop") {
        Some(Value::String(stop)) => vec![stop.clone()],
        Some(Value::Array(stops)) => stops
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    conversation
}

fn role_of(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

/// Text of a message's `content`: a string, or the text parts of an array
/// joined by newlines (images and audio carry no text).
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The texts to embed: a string, strings, a token array or token arrays
/// (token ids count as one word each). `None` if empty or malformed.
fn embedding_inputs(input: &Value) -> Option<Vec<String>> {
    let tokens_text = |tokens: &[Value]| -> Option<String> {
        let ids: Option<Vec<String>> = tokens
            .iter()
            .map(|t| t.as_u64().map(|id| id.to_string()))
            .collect();
        ids.map(|ids| ids.join(" "))
    };
    let texts = match input {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_number) => vec![tokens_text(items)?],
        Value::Array(items) => items
            .iter()
            .map(|item| tokens_text(item.as_array()?))
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    (!texts.is_empty() && texts.iter().all(|t| !t.is_empty())).then_some(texts)
}

/// Response ids, derived from the request sequence number so they are
/// unique and predictable.
struct Ids {
    completion: String,
    tool_call: String,
    created: u64,
}

impl Ids {
    fn new(provider: Provider, seq: u64) -> Self {
        match provider {
            // Mistral ids are 32 hex digits; tool call ids 9 alphanumerics.
            Provider::Mistral => Self {
                completion: format!("{seq:032x}"),
                tool_call: format!("m{:08}", seq % 100_000_000),
                created: unix_now(),
            },
            _ => Self {
                completion: format!("chatcmpl-mock{seq:016}"),
                tool_call: format!("call_mock{seq:016}"),
                created: unix_now(),
            },
        }
    }
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
        Finish::ToolCall => "tool_calls",
    }
}

fn usage_json(provider: Provider, reply: &Reply) -> Value {
    let (prompt, completion) = (reply.input_tokens, reply.output_tokens);
    match provider {
        Provider::Mistral => json!({
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        }),
        _ => json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }),
    }
}

/// Azure's content-filter verdict: nothing filtered.
fn content_filter_results() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe})
}

fn prompt_filter_results() -> Value {
    let mut results = content_filter_results();
    results["jailbreak"] = json!({"filtered": false, "detected": false});
    json!([{"prompt_index": 0, "content_filter_results": results}])
}

/// The non-streamed `chat.completion` object.
fn completion(provider: Provider, ids: &Ids, model: &str, reply: &Reply) -> Value {
    let message = match (&reply.content, provider) {
        (Content::Text(text), Provider::Mistral) => {
            json!({"role": "assistant", "content": text, "tool_calls": null})
        }
        (Content::Text(text), _) => {
            json!({"role": "assistant", "content": text, "refusal": null, "annotations": []})
        }
        (Content::ToolCall { name, arguments }, Provider::Mistral) => json!({
            "role": "assistant",
            "content": "",
            "tool_calls": [{
                "id": ids.tool_call,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
                "index": 0,
            }],
        }),
        (Content::ToolCall { name, arguments }, _) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": ids.tool_call,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }],
            "refusal": null,
            "annotations": [],
        }),
    };
    let finish = finish_reason(&reply.finish);
    let usage = usage_json(provider, reply);
    match provider {
        Provider::Mistral => json!({
            "id": ids.completion,
            "object": "chat.completion",
            "created": ids.created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }),
        Provider::Azure => {
            let filter = match reply.content {
                Content::Text(_) => content_filter_results(),
                Content::ToolCall { .. } => json!({}),
            };
            json!({
                "choices": [{
                    "content_filter_results": filter,
                    "finish_reason": finish,
                    "index": 0,
                    "logprobs": null,
                    "message": message,
                }],
                "created": ids.created,
                "id": ids.completion,
                "model": model,
                "object": "chat.completion",
                "prompt_filter_results": prompt_filter_results(),
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "usage": usage,
            })
        }
        _ => json!({
            "id": ids.completion,
            "object": "chat.completion",
            "created": ids.created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish,
            }],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }),
    }
}

/// Builds `chat.completion.chunk` objects for one provider.
struct ChunkWriter<'a> {
    provider: Provider,
    ids: &'a Ids,
    model: &'a str,
    /// OpenAI and Azure put `"usage": null` on every chunk when usage was
    /// requested.
    usage_null: bool,
}

impl ChunkWriter<'_> {
    fn chunk(&self, delta: Value, finish: Option<&str>, usage: Option<Value>) -> Value {
        let mut choice = Map::new();
        if self.provider == Provider::Azure {
            let filter = match delta.get("content") {
                Some(Value::String(s)) if !s.is_empty() => content_filter_results(),
                _ => json!({}),
            };
            choice.insert("content_filter_results".into(), filter);
        }
        choice.insert("index".into(), json!(0));
        choice.insert("delta".into(), delta);
        if self.provider != Provider::Mistral {
            choice.insert("logprobs".into(), Value::Null);
        }
        choice.insert("finish_reason".into(), json!(finish));
        self.envelope(vec![Value::Object(choice)], usage)
    }

    fn envelope(&self, choices: Vec<Value>, usage: Option<Value>) -> Value {
        let mut chunk = Map::new();
        chunk.insert("id".into(), json!(self.ids.completion));
        chunk.insert("object".into(), json!("chat.completion.chunk"));
        chunk.insert("created".into(), json!(self.ids.created));
        chunk.insert("model".into(), json!(self.model));
        if self.provider == Provider::OpenAi {
            chunk.insert("service_tier".into(), json!("default"));
        }
        if self.provider != Provider::Mistral {
            chunk.insert("system_fingerprint".into(), json!(SYSTEM_FINGERPRINT));
        }
        chunk.insert("choices".into(), json!(choices));
        match usage {
            Some(usage) => {
                chunk.insert("usage".into(), usage);
            }
            None if self.usage_null => {
                chunk.insert("usage".into(), Value::Null);
            }
            None => {}
        }
        Value::Object(chunk)
    }
}

/// The SSE frames of a streamed reply, ending with `data: [DONE]`.
fn stream_frames(
    provider: Provider,
    ids: &Ids,
    model: &str,
    reply: &Reply,
    include_usage: bool,
) -> Vec<axum::body::Bytes> {
    let mistral = provider == Provider::Mistral;
    let writer = ChunkWriter {
        provider,
        ids,
        model,
        usage_null: include_usage && !mistral,
    };
    let finish = finish_reason(&reply.finish);
    let usage = usage_json(provider, reply);
    let mut chunks = Vec::new();

    if provider == Provider::Azure {
        // Azure reports the prompt's content-filter verdict first, in a chunk
        // with no choices and empty identity fields.
        chunks.push(json!({
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": prompt_filter_results(),
        }));
    }

    match (&reply.content, mistral) {
        (Content::Text(_), _) => {
            let role = if mistral {
                json!({"role": "assistant", "content": ""})
            } else {
                json!({"role": "assistant", "content": "", "refusal": null})
            };
            chunks.push(writer.chunk(role, None, None));
            for piece in reply.stream_pieces() {
                chunks.push(writer.chunk(json!({"content": piece}), None, None));
            }
            if mistral {
                chunks.push(writer.chunk(
                    json!({"content": ""}),
                    Some(finish),
                    Some(usage.clone()),
                ));
            } else {
                chunks.push(writer.chunk(json!({}), Some(finish), None));
            }
        }
        (Content::ToolCall { name, arguments }, true) => {
            chunks.push(writer.chunk(json!({"role": "assistant", "content": ""}), None, None));
            let delta = json!({"tool_calls": [{
                "id": ids.tool_call,
                "function": {"name": name, "arguments": arguments},
                "index": 0,
            }]});
            chunks.push(writer.chunk(delta, Some(finish), Some(usage.clone())));
        }
        (Content::ToolCall { name, .. }, false) => {
            let first = json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": 0,
                    "id": ids.tool_call,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }],
                "refusal": null,
            });
            chunks.push(writer.chunk(first, None, None));
            for piece in reply.stream_pieces() {
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                chunks.push(writer.chunk(delta, None, None));
            }
            chunks.push(writer.chunk(json!({}), Some(finish), None));
        }
    }
    if include_usage && !mistral {
        chunks.push(writer.envelope(Vec::new(), Some(usage)));
    }

    let mut frames: Vec<_> = chunks.iter().map(sse_data).collect();
    frames.push(axum::body::Bytes::from_static(b"data: [DONE]\n\n"));
    frames
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testkit::*;

    fn chat_body(text: &str) -> serde_json::Value {
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": text},
            ],
        })
    }

    #[tokio::test]
    async fn openai_non_stream_completion() {
        let mock = Mock::start().await;
        let (status, headers, body) = mock
            .post_json("/v1/chat/completions", &[BEARER], chat_body("hello world"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-request-id"], "req-mock-0000000000000001");
        assert_eq!(body["id"], "chatcmpl-mock0000000000000001");
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(
            body["choices"],
            json!([{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Mock reply from openai model gpt-4o-mini: hello world",
                    "refusal": null,
                    "annotations": [],
                },
                "logprobs": null,
                "finish_reason": "stop",
            }])
        );
        assert_eq!(
            body["usage"],
            json!({
                "prompt_tokens": 4,
                "completion_tokens": 8,
                "total_tokens": 12,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
                },
            })
        );
    }

    #[tokio::test]
    async fn openai_requires_a_bearer_key_and_valid_json() {
        let mock = Mock::start().await;
        let (status, _, body) = mock
            .post_json("/v1/chat/completions", &[], chat_body("hi"))
            .await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("You didn't provide an API key")
        );

        let (status, _, body) = mock
            .post_raw("/v1/chat/completions", &[BEARER], "{not json")
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], serde_json::Value::Null);

        let (status, _, body) = mock
            .post_json("/v1/chat/completions", &[BEARER], json!({"model": "m"}))
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "missing_required_parameter");
        assert_eq!(body["error"]["param"], "messages");
    }

    #[tokio::test]
    async fn openai_stream_without_usage_option_has_no_usage_chunk() {
        let mock = Mock::start().await;
        let mut body = chat_body("hello world");
        body["stream"] = json!(true);
        let (status, headers, text) = mock
            .post_text("/v1/chat/completions", &[BEARER], body)
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/event-stream");
        let events = sse_data_events(&text);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        // role chunk + 8 words + finish chunk
        assert_eq!(chunks.len(), 10);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "", "refusal": null})
        );
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(
            content,
            "Mock reply from openai model gpt-4o-mini: hello world"
        );
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Mock ");
        assert_eq!(chunks[9]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[9]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[9]["object"], "chat.completion.chunk");
    }

    #[tokio::test]
    async fn openai_stream_with_include_usage_ends_with_a_usage_chunk() {
        let mock = Mock::start().await;
        let mut body = chat_body("hello world");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        body["max_tokens"] = json!(3);
        let (_, _, text) = mock
            .post_text("/v1/chat/completions", &[BEARER], body)
            .await;
        let events = sse_data_events(&text);
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        // role + 3 words + finish + usage
        assert_eq!(chunks.len(), 6);
        assert!(
            chunks[..5]
                .iter()
                .all(|c| c["usage"].is_null() && c.get("usage").is_some())
        );
        assert_eq!(chunks[3]["choices"][0]["delta"]["content"], "from");
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks[5]["choices"], json!([]));
        assert_eq!(chunks[5]["usage"]["prompt_tokens"], 4);
        assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
        assert_eq!(chunks[5]["usage"]["total_tokens"], 7);
    }

    #[tokio::test]
    async fn openai_legacy_completions_whole_and_streamed() {
        let mock = Mock::start().await;
        let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hello world"});
        let (status, _, whole) = mock
            .post_json("/v1/completions", &[BEARER], body.clone())
            .await;
        assert_eq!(status, 200);
        assert_eq!(whole["object"], "text_completion");
        assert_eq!(whole["id"], "cmpl-mock0000000000000001");
        let text = "Mock reply from openai model gpt-3.5-turbo-instruct: hello world";
        assert_eq!(
            whole["choices"],
            json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}])
        );
        assert_eq!(
            whole["usage"],
            json!({"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10})
        );
        let mut streamed = body;
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let (_, _, sse) = mock.post_text("/v1/completions", &[BEARER], streamed).await;
        let events = sse_data_events(&sse);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let joined: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(joined, text);
        let usage = chunks.last().unwrap();
        assert_eq!(
            (&usage["choices"], &usage["usage"]["total_tokens"]),
            (&json!([]), &json!(10))
        );
        let (status, _, azure) = mock
            .post_json(
                "/openai/deployments/instruct/completions?api-version=2024-10-21",
                &[("api-key", "k")],
                json!({"prompt": "hello world"}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            (&azure["model"], &azure["object"]),
            (&json!("instruct"), &json!("text_completion"))
        );
    }

    #[tokio::test]
    async fn openai_moderations_flag_violence_only() {
        let mock = Mock::start().await;
        let (status, _, body) = mock
            .post_json(
                "/v1/moderations",
                &[BEARER],
                json!({"input": ["I will kill it", "hello"]}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["model"], "omni-moderation-latest");
        assert_eq!(body["results"][0]["flagged"], true);
        assert_eq!(body["results"][0]["categories"]["violence"], true);
        assert_eq!(body["results"][1]["flagged"], false);
    }

    fn tool_body(stream: bool) -> serde_json::Value {
        json!({
            "model": "gpt-4o",
            "stream": stream,
            "messages": [{"role": "user", "content": "weather in Paris"}],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
            ],
        })
    }

    #[tokio::test]
    async fn openai_tool_call_and_tool_result() {
        let mock = Mock::start().await;
        let (_, _, body) = mock
            .post_json("/v1/chat/completions", &[BEARER], tool_body(false))
            .await;
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            serde_json::Value::Null
        );
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"],
            json!([{
                "id": "call_mock0000000000000001",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"input\":\"weather in Paris\"}"},
            }])
        );
        assert_eq!(body["usage"]["completion_tokens"], 3);

        let follow_up = json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "weather in Paris"},
                {"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
            ],
            "tools": tool_body(false)["tools"].clone(),
        });
        let (_, _, body) = mock
            .post_json("/v1/chat/completions", &[BEARER], follow_up)
            .await;
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "Tool said: sunny, 21C"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"]["prompt_tokens"], 5);
    }

    #[tokio::test]
    async fn openai_streamed_tool_call_sends_argument_fragments() {
        let mock = Mock::start().await;
        let (_, _, text) = mock
            .post_text("/v1/chat/completions", &[BEARER], tool_body(true))
            .await;
        let events = sse_data_events(&text);
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "id": "call_mock0000000000000001", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}])
        );
        let arguments: String = chunks[1..chunks.len() - 1]
            .iter()
            .map(|c| {
                assert_eq!(c["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(arguments, "{\"input\":\"weather in Paris\"}");
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[tokio::test]
    async fn openai_injected_429_and_cut_stream() {
        let mock = Mock::start().await;
        mock.behaviour(json!({"status": 429, "times": 1, "retry_after": 7}))
            .await;
        let (status, headers, body) = mock
            .post_json("/v1/chat/completions", &[BEARER], chat_body("hi"))
            .await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "requests");
        // `times` ran out: the next request succeeds.
        let (status, _, _) = mock
            .post_json("/v1/chat/completions", &[BEARER], chat_body("hi"))
            .await;
        assert_eq!(status, 200);

        mock.behaviour(json!({"cut_after_chunks": 3})).await;
        let mut body = chat_body("one two three four");
        body["stream"] = json!(true);
        let (received, cut) = mock
            .post_stream_raw("/v1/chat/completions", &[BEARER], body)
            .await;
        assert!(cut, "the stream must end with a transport error");
        let text = String::from_utf8(received).unwrap();
        let events = sse_data_events(&text);
        assert_eq!(events.len(), 3);
        assert!(!text.contains("[DONE]"));

        let journal = mock.journal().await;
        let statuses: Vec<_> = journal.iter().map(|e| e["status"].clone()).collect();
        assert_eq!(statuses, [json!(429), json!(200), json!(200)]);
        assert_eq!(journal[0]["usage"], serde_json::Value::Null);
        assert_eq!(journal[2]["stream"], true);
    }

    #[tokio::test]
    async fn openai_embeddings_and_models() {
        let mock = Mock::start().await;
        let (status, _, body) = mock
            .post_json(
                "/v1/embeddings",
                &[BEARER],
                json!({"model": "text-embedding-3-small", "input": ["hello world", "bye"], "dimensions": 8}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["object"], "list");
        assert_eq!(body["model"], "text-embedding-3-small");
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[1]["index"], 1);
        assert_eq!(data[0]["object"], "embedding");
        let vector: Vec<f32> = serde_json::from_value(data[0]["embedding"].clone()).unwrap();
        assert_eq!(vector, crate::reply::embed("hello world", 8));

        let (_, _, body) = mock
            .post_json(
                "/v1/embeddings",
                &[BEARER],
                json!({"model": "m", "input": "hello world", "encoding_format": "base64"}),
            )
            .await;
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 16 * 4);

        let (status, _, body) = mock
            .post_json(
                "/v1/embeddings",
                &[BEARER],
                json!({"model": "m", "input": ""}),
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["param"], "input");

        let (status, _, body) = mock.get("/v1/models", &[BEARER]).await;
        assert_eq!(status, 200);
        assert!(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == "gpt-4o-mini")
        );
    }

    const AZURE_KEY: (&str, &str) = ("api-key", "azure-key");

    #[tokio::test]
    async fn azure_uses_the_deployment_and_its_own_access_errors() {
        let mock = Mock::start().await;
        let path = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21";
        let (status, _, body) = mock.post_json(path, &[AZURE_KEY], chat_body("hello")).await;
        assert_eq!(status, 200);
        assert_eq!(body["model"], "my-gpt4o");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "Mock reply from azure model my-gpt4o: hello"
        );
        assert_eq!(
            body["choices"][0]["content_filter_results"]["hate"]["severity"],
            "safe"
        );
        assert_eq!(body["prompt_filter_results"][0]["prompt_index"], 0);

        let (status, _, body) = mock.post_json(path, &[], chat_body("hello")).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "401");

        let (status, _, body) = mock
            .post_json(
                "/openai/deployments/my-gpt4o/chat/completions",
                &[AZURE_KEY],
                chat_body("hello"),
            )
            .await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            json!({"error": {"code": "404", "message": "Resource not found"}})
        );

        let journal = mock.journal().await;
        assert_eq!(journal[0]["provider"], "azure");
        assert_eq!(journal[0]["model"], "my-gpt4o");
        assert_eq!(journal[0]["query"], "api-version=2024-10-21");
        assert_eq!(journal[0]["headers"]["api-key"], "azure-key");
    }

    #[tokio::test]
    async fn azure_stream_starts_with_prompt_filter_results_and_can_be_cut() {
        let mock = Mock::start().await;
        let path = "/openai/deployments/dep/chat/completions?api-version=2024-10-21";
        let mut body = chat_body("hello");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let (_, _, text) = mock.post_text(path, &[AZURE_KEY], body.clone()).await;
        let events = sse_data_events(&text);
        let first: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(first["choices"], json!([]));
        assert_eq!(first["id"], "");
        assert!(first["prompt_filter_results"].is_array());
        let usage_chunk: serde_json::Value =
            serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(usage_chunk["usage"]["completion_tokens"], 7);
        assert_eq!(usage_chunk["model"], "dep");

        mock.behaviour(json!({"cut_after_chunks": 1, "path_contains": "/openai/"}))
            .await;
        let (received, cut) = mock.post_stream_raw(path, &[AZURE_KEY], body).await;
        assert!(cut);
        assert_eq!(
            sse_data_events(&String::from_utf8(received).unwrap()).len(),
            1
        );

        let (_, _, body) = mock
            .post_json(
                "/openai/deployments/emb/embeddings?api-version=2024-10-21",
                &[AZURE_KEY],
                json!({"input": "a b c"}),
            )
            .await;
        assert_eq!(body["model"], "emb");
        assert_eq!(body["usage"]["prompt_tokens"], 3);
    }

    #[tokio::test]
    async fn azure_injected_error_uses_azure_shape() {
        let mock = Mock::start().await;
        mock.behaviour(json!({"status": 429})).await;
        let path = "/openai/deployments/dep/chat/completions?api-version=2024-10-21";
        let (status, headers, body) = mock.post_json(path, &[AZURE_KEY], chat_body("x")).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(body["error"]["code"], "429");
    }

    const MISTRAL_PATH: &str = "/mistral/v1/chat/completions";

    #[tokio::test]
    async fn mistral_non_stream_and_auth() {
        let mock = Mock::start().await;
        let mut body = chat_body("bonjour");
        body["model"] = json!("mistral-small-latest");
        let (status, _, reply) = mock.post_json(MISTRAL_PATH, &[BEARER], body.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(reply["id"], "00000000000000000000000000000001");
        assert_eq!(
            reply["choices"],
            json!([{"index": 0, "message": {"role": "assistant",
                "content": "Mock reply from mistral model mistral-small-latest: bonjour",
                "tool_calls": null}, "finish_reason": "stop"}])
        );
        assert_eq!(
            reply["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 10, "completion_tokens": 7})
        );

        let (status, _, reply) = mock.post_json(MISTRAL_PATH, &[], body).await;
        assert_eq!(status, 401);
        assert_eq!(reply["message"], "Unauthorized");
    }

    #[tokio::test]
    async fn mistral_stream_always_ends_with_usage() {
        let mock = Mock::start().await;
        let mut body = chat_body("bonjour");
        body["model"] = json!("mistral-small-latest");
        body["stream"] = json!(true);
        let (_, _, text) = mock.post_text(MISTRAL_PATH, &[BEARER], body).await;
        let events = sse_data_events(&text);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(chunks.len(), 9);
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 10, "completion_tokens": 7})
        );
        assert!(chunks[..8].iter().all(|c| c.get("usage").is_none()));
        assert!(
            chunks
                .iter()
                .all(|c| c["choices"][0].get("logprobs").is_none())
        );
    }

    #[tokio::test]
    async fn mistral_tool_call_arrives_whole() {
        let mock = Mock::start().await;
        let mut body = tool_body(true);
        body["model"] = json!("mistral-large-latest");
        let (_, _, text) = mock.post_text(MISTRAL_PATH, &[BEARER], body).await;
        let events = sse_data_events(&text);
        assert_eq!(events.len(), 3);
        let call: serde_json::Value = serde_json::from_str(&events[1]).unwrap();
        assert_eq!(
            call["choices"][0]["delta"]["tool_calls"],
            json!([{"id": "m00000001", "function": {"name": "get_weather",
                "arguments": "{\"input\":\"weather in Paris\"}"}, "index": 0}])
        );
        assert_eq!(call["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(call["usage"]["completion_tokens"], 3);
    }

    #[tokio::test]
    async fn mistral_error_and_embeddings() {
        let mock = Mock::start().await;
        mock.behaviour(json!({"status": 500, "path_contains": "/mistral/"}))
            .await;
        let (status, _, body) = mock
            .post_json(MISTRAL_PATH, &[BEARER], chat_body("x"))
            .await;
        assert_eq!(status, 500);
        assert_eq!(body["object"], "error");
        assert_eq!(body["type"], "internal_server_error");
        mock.reset_behaviours().await;

        let (status, _, body) = mock
            .post_json(
                "/mistral/v1/embeddings",
                &[BEARER],
                json!({"model": "mistral-embed", "input": ["one two"]}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 2, "total_tokens": 2, "completion_tokens": 0})
        );
        assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 16);
    }
}
