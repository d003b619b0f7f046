//! The Anthropic Messages dialect: `POST /v1/messages` (streamed or not) and
//! `POST /v1/messages/count_tokens`.
//!
//! Anthropic's rules that the mock enforces: `x-api-key` (401
//! `authentication_error` without it) and `anthropic-version` (400) headers;
//! `model`, `messages` and `max_tokens` are required; `system` is a
//! top-level field, not a message. Streams are SSE with `event:` lines:
//! `message_start` (usage with the input tokens and `output_tokens: 1`),
//! `content_block_start`, `ping`, `content_block_delta` (`text_delta`, or
//! `input_json_delta` fragments for a tool call), `content_block_stop`,
//! `message_delta` (stop reason and final `output_tokens`), `message_stop`.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::exchange::{Exchange, Outcome, sse_event};
use crate::journal::JournalUsage;
use crate::reply::{Content, Conversation, Finish, LastTurn, Provider, Reply};

/// `POST /v1/messages`.
pub(crate) fn messages(ex: &mut Exchange) -> Outcome {
    let body = match read_request(ex) {
        Ok(body) => body,
        Err(error) => return Outcome::Error(error),
    };
    ex.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let model = match body.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => model.to_owned(),
        _ => return Outcome::Error(invalid("model: Field required")),
    };
    ex.model = Some(model.clone());
    let messages = match messages_of(&body) {
        Ok(messages) => messages,
        Err(error) => return Outcome::Error(error),
    };
    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => return Outcome::Error(invalid("max_tokens: Field required")),
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                return Outcome::Error(invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ));
            }
        },
    };

    let mut conversation = read_conversation(&body, messages);
    conversation.max_tokens = Some(max_tokens);
    let reply = conversation.reply(Provider::Anthropic, &model);
    let message_id = format!("msg_mock{:016}", ex.seq);
    let tool_id = format!("toolu_mock{:016}", ex.seq);
    if ex.stream {
        let frames = stream_frames(&message_id, &tool_id, &model, &reply);
        Outcome::stream("text/event-stream", frames, &reply)
    } else {
        let content = match &reply.content {
            Content::Text(text) => json!([{"type": "text", "text": text}]),
            Content::ToolCall { name, .. } => json!([{
                "type": "tool_use",
                "id": tool_id,
                "name": name,
                "input": reply.arguments_json(),
            }]),
        };
        let body = json!({
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(&reply.finish),
            "stop_sequence": stop_sequence(&reply.finish),
            "usage": {
                "input_tokens": reply.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": reply.output_tokens,
            },
        });
        Outcome::json(body, &reply)
    }
}

/// `POST /v1/messages/count_tokens`: the input tokens a message request
/// would report.
pub(crate) fn count_tokens(ex: &mut Exchange) -> Outcome {
    let body = match read_request(ex) {
        Ok(body) => body,
        Err(error) => return Outcome::Error(error),
    };
    ex.model = body.get("model").and_then(Value::as_str).map(str::to_owned);
    let messages = match messages_of(&body) {
        Ok(messages) => messages,
        Err(error) => return Outcome::Error(error),
    };
    let tokens = read_conversation(&body, messages).input_tokens();
    Outcome::Json {
        body: json!({"input_tokens": tokens}),
        usage: Some(JournalUsage {
            input_tokens: tokens,
            output_tokens: 0,
        }),
    }
}

/// Checks the headers every Anthropic request needs.
pub(crate) fn check_headers(ex: &Exchange) -> Result<(), ApiError> {
    if ex.header("x-api-key").is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "x-api-key header is required",
        ));
    }
    if ex.header("anthropic-version").is_none() {
        return Err(invalid("anthropic-version: header is required"));
    }
    Ok(())
}

/// Checks the headers and parses the body as a JSON object.
fn read_request(ex: &Exchange) -> Result<Map<String, Value>, ApiError> {
    check_headers(ex)?;
    ex.json_object().ok_or_else(|| {
        invalid("There was an issue with your request body: it must be a JSON object.")
    })
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message).kind("invalid_request_error")
}

fn messages_of(body: &Map<String, Value>) -> Result<&[Value], ApiError> {
    match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => Ok(messages),
        Some(Value::Array(_)) => Err(invalid("messages: at least one message is required")),
        _ => Err(invalid("messages: Field required")),
    }
}

/// Reads the system prompt, messages, tools and stop sequences.
fn read_conversation(body: &Map<String, Value>, messages: &[Value]) -> Conversation {
    let mut conversation = Conversation::default();
    conversation.add_input(&blocks_text(body.get("system")));

    for message in messages {
        let content = message.get("content");
        let text = blocks_text(content);
        let results = tool_results(content);
        conversation.add_input(&text);
        for result in &results {
            conversation.add_input(result);
        }
        let is_user = message.get("role").and_then(Value::as_str) == Some("user");
        conversation.last = match (is_user, results.is_empty()) {
            (true, true) => {
                conversation.last_user_text = text.clone();
                LastTurn::User(text)
            }
            (true, false) => LastTurn::ToolResults(results.join("\n")),
            (false, _) => LastTurn::Other,
        };
    }

    let tools_off = body
        .get("tool_choice")
        .and_then(|choice| choice.get("type"))
        .and_then(Value::as_str)
        == Some("none");
    if !tools_off {
        conversation.first_tool = body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .and_then(|tool| tool.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    conversation.stop = body
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|stops| {
            stops
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    conversation
}

/// Text of a string or of the `text` blocks of a block array, joined by
/// newlines.
fn blocks_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Texts of the `tool_result` blocks of a message; a result's content is a
/// string or text blocks.
fn tool_results(content: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(blocks)) = content else {
        return Vec::new();
    };
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| blocks_text(b.get("content")))
        .collect()
}

fn stop_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::StopSequence(_) => "stop_sequence",
        Finish::ToolCall => "tool_use",
    }
}

fn stop_sequence(finish: &Finish) -> Value {
    match finish {
        Finish::StopSequence(sequence) => json!(sequence),
        _ => Value::Null,
    }
}

/// The SSE events of a streamed message.
fn stream_frames(message_id: &str, tool_id: &str, model: &str, reply: &Reply) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let start = json!({
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": reply.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    });
    frames.push(sse_event("message_start", &start));

    let block = match &reply.content {
        Content::Text(_) => json!({"type": "text", "text": ""}),
        Content::ToolCall { name, .. } => {
            json!({"type": "tool_use", "id": tool_id, "name": name, "input": {}})
        }
    };
    frames.push(sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    ));
    frames.push(sse_event("ping", &json!({"type": "ping"})));
    for piece in reply.stream_pieces() {
        let delta = match &reply.content {
            Content::Text(_) => json!({"type": "text_delta", "text": piece}),
            Content::ToolCall { .. } => json!({"type": "input_json_delta", "partial_json": piece}),
        };
        frames.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    frames.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    frames.push(sse_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(&reply.finish),
                "stop_sequence": stop_sequence(&reply.finish),
            },
            "usage": {"output_tokens": reply.output_tokens},
        }),
    ));
    frames.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    frames
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::testkit::*;

    const KEY: (&str, &str) = ("x-api-key", "sk-ant-test");
    const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

    fn body(text: &str) -> Value {
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": text}],
        })
    }

    #[tokio::test]
    async fn non_stream_message() {
        let mock = Mock::start().await;
        let (status, headers, reply) = mock
            .post_json("/v1/messages", &[KEY, VERSION], body("hello world"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["request-id"], "req_mock0000000000000001");
        assert_eq!(
            reply,
            json!({
                "id": "msg_mock0000000000000001",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text",
                    "text": "Mock reply from anthropic model claude-sonnet-4-5: hello world"}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 4, "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0, "output_tokens": 8},
            })
        );
    }

    #[tokio::test]
    async fn required_headers_and_fields() {
        let mock = Mock::start().await;
        let (status, _, reply) = mock.post_json("/v1/messages", &[VERSION], body("x")).await;
        assert_eq!(status, 401);
        assert_eq!(reply["type"], "error");
        assert_eq!(
            reply["error"],
            json!({"type": "authentication_error", "message": "x-api-key header is required"})
        );

        let (status, _, reply) = mock.post_json("/v1/messages", &[KEY], body("x")).await;
        assert_eq!(status, 400);
        assert_eq!(
            reply["error"]["message"],
            "anthropic-version: header is required"
        );

        let mut no_max = body("x");
        no_max.as_object_mut().unwrap().remove("max_tokens");
        let (status, _, reply) = mock
            .post_json("/v1/messages", &[KEY, VERSION], no_max)
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            reply["error"],
            json!({"type": "invalid_request_error", "message": "max_tokens: Field required"})
        );

        let (status, _, reply) = mock.post_raw("/v1/messages", &[KEY, VERSION], "[1,").await;
        assert_eq!(status, 400);
        assert_eq!(reply["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn stream_sends_the_event_sequence() {
        let mock = Mock::start().await;
        let mut request = body("hello world");
        request["stream"] = json!(true);
        let (status, headers, text) = mock
            .post_text("/v1/messages", &[KEY, VERSION], request)
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/event-stream");
        let events = sse_named_events(&text);
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        let mut expected = vec!["message_start", "content_block_start", "ping"];
        expected.extend(std::iter::repeat_n("content_block_delta", 8));
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, expected);
        for (name, data) in &events {
            assert_eq!(data["type"], name.as_str());
        }
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 4);
        assert_eq!(events[0].1["message"]["usage"]["output_tokens"], 1);
        assert_eq!(
            events[1].1["content_block"],
            json!({"type": "text", "text": ""})
        );
        let text: String = events
            .iter()
            .filter_map(|(_, d)| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(
            text,
            "Mock reply from anthropic model claude-sonnet-4-5: hello world"
        );
        assert_eq!(
            events[3].1["delta"],
            json!({"type": "text_delta", "text": "Mock "})
        );
        let delta = &events[12].1;
        assert_eq!(
            delta["delta"],
            json!({"stop_reason": "end_turn", "stop_sequence": null})
        );
        assert_eq!(delta["usage"], json!({"output_tokens": 8}));
    }

    #[tokio::test]
    async fn max_tokens_and_stop_sequences() {
        let mock = Mock::start().await;
        let mut request = body("hello world");
        request["max_tokens"] = json!(2);
        let (_, _, reply) = mock
            .post_json("/v1/messages", &[KEY, VERSION], request)
            .await;
        assert_eq!(reply["content"][0]["text"], "Mock reply");
        assert_eq!(reply["stop_reason"], "max_tokens");
        assert_eq!(reply["usage"]["output_tokens"], 2);

        let mut request = body("hello world");
        request["stop_sequences"] = json!(["world"]);
        let (_, _, reply) = mock
            .post_json("/v1/messages", &[KEY, VERSION], request)
            .await;
        assert_eq!(
            reply["content"][0]["text"],
            "Mock reply from anthropic model claude-sonnet-4-5: hello "
        );
        assert_eq!(reply["stop_reason"], "stop_sequence");
        assert_eq!(reply["stop_sequence"], "world");
    }

    fn tool_request(stream: bool) -> Value {
        let mut request = body("weather in Paris");
        request["stream"] = json!(stream);
        request["tools"] = json!([
            {"name": "get_weather", "input_schema": {"type": "object"}},
            {"name": "other", "input_schema": {"type": "object"}},
        ]);
        request
    }

    #[tokio::test]
    async fn tool_use_and_tool_result() {
        let mock = Mock::start().await;
        let (_, _, reply) = mock
            .post_json("/v1/messages", &[KEY, VERSION], tool_request(false))
            .await;
        assert_eq!(reply["stop_reason"], "tool_use");
        assert_eq!(
            reply["content"],
            json!([{"type": "tool_use", "id": "toolu_mock0000000000000001",
                    "name": "get_weather", "input": {"input": "weather in Paris"}}])
        );
        assert_eq!(reply["usage"]["output_tokens"], 3);

        let mut follow_up = tool_request(false);
        follow_up["messages"] = json!([
            {"role": "user", "content": "weather in Paris"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                "name": "get_weather", "input": {"input": "weather in Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "sunny, 21C"}]}]},
        ]);
        let (_, _, reply) = mock
            .post_json("/v1/messages", &[KEY, VERSION], follow_up)
            .await;
        assert_eq!(reply["content"][0]["text"], "Tool said: sunny, 21C");
        assert_eq!(reply["stop_reason"], "end_turn");
        // system 2 + user 3 + tool result 2
        assert_eq!(reply["usage"]["input_tokens"], 7);
    }

    #[tokio::test]
    async fn streamed_tool_use_sends_input_json_deltas() {
        let mock = Mock::start().await;
        let (_, _, text) = mock
            .post_text("/v1/messages", &[KEY, VERSION], tool_request(true))
            .await;
        let events = sse_named_events(&text);
        assert_eq!(
            events[1].1["content_block"],
            json!({"type": "tool_use", "id": "toolu_mock0000000000000001",
                   "name": "get_weather", "input": {}})
        );
        let json: String = events
            .iter()
            .filter(|(name, _)| name == "content_block_delta")
            .map(|(_, d)| {
                assert_eq!(d["delta"]["type"], "input_json_delta");
                d["delta"]["partial_json"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(json, "{\"input\":\"weather in Paris\"}");
        let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
        assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    }

    #[tokio::test]
    async fn injected_overload_cut_stream_and_journal() {
        let mock = Mock::start().await;
        mock.behaviour(json!({"status": 529, "times": 1, "path_contains": "/v1/messages"}))
            .await;
        let (status, _, reply) = mock
            .post_json("/v1/messages", &[KEY, VERSION], body("x"))
            .await;
        assert_eq!(status, 529);
        assert_eq!(
            reply["error"],
            json!({"type": "overloaded_error", "message": "Overloaded"})
        );

        mock.behaviour(json!({"cut_after_chunks": 4})).await;
        let mut request = body("hello world");
        request["stream"] = json!(true);
        let (received, cut) = mock
            .post_stream_raw("/v1/messages", &[KEY, VERSION], request)
            .await;
        assert!(cut);
        let events = sse_named_events(&String::from_utf8(received).unwrap());
        assert_eq!(events.len(), 4);
        assert!(events.iter().all(|(name, _)| name != "message_stop"));

        let journal = mock.journal().await;
        assert_eq!(journal.len(), 2);
        assert_eq!(journal[0]["status"], 529);
        assert_eq!(journal[0]["provider"], "anthropic");
        assert_eq!(journal[0]["model"], "claude-sonnet-4-5");
        assert_eq!(journal[1]["stream"], true);
        assert_eq!(
            journal[1]["usage"],
            json!({"input_tokens": 4, "output_tokens": 8})
        );
        assert_eq!(journal[1]["headers"]["x-api-key"], "sk-ant-test");
        assert_eq!(journal[1]["body"]["system"], "Be brief.");
    }

    #[tokio::test]
    async fn count_tokens_reports_input_tokens() {
        let mock = Mock::start().await;
        let (status, _, reply) = mock
            .post_json(
                "/v1/messages/count_tokens",
                &[KEY, VERSION],
                body("one two three"),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(reply, json!({"input_tokens": 5}));
    }
}
