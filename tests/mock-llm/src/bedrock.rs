//! The Amazon Bedrock Converse dialect: `POST /model/{modelId}/converse` and
//! `POST /model/{modelId}/converse-stream`.
//!
//! The model id in the path is URL-encoded (`us.anthropic.claude-...-v1%3A0`,
//! or an ARN with `%2F`); the mock decodes it itself from the raw path, so
//! an id with an unencoded `/` still works. Requests must carry a SigV4
//! `Authorization: AWS4-HMAC-SHA256 Credential=...` header and `x-amz-date`;
//! the mock checks their presence, not the signature. Errors are `{"message"}`
//! with the exception name in `x-amzn-ErrorType`.
//!
//! `converse-stream` answers `application/vnd.amazon.eventstream`: binary
//! event-stream messages with the string headers `:event-type`,
//! `:content-type: application/json` and `:message-type: event`, in the order
//! `messageStart`, `contentBlockStart` (tool use only), `contentBlockDelta`
//! (one per word; tool input as string fragments), `contentBlockStop`,
//! `messageStop`, `metadata`. Like Bedrock, each payload carries a `p` field
//! of padding letters, which a client must ignore.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::exchange::{Exchange, Outcome, percent_decode};
use crate::reply::{Content, Conversation, Finish, LastTurn, Provider, Reply};

/// Padding Bedrock adds to every stream event (`p`) so that event sizes do
/// not reveal token lengths; the mock uses a fixed value.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEF";

/// `POST /model/{*rest}`: splits the raw path into the model id and the
/// operation and dispatches.
pub(crate) fn dispatch(ex: &mut Exchange) -> Outcome {
    let raw = ex
        .path()
        .strip_prefix("/model/")
        .unwrap_or_default()
        .to_owned();
    let Some((encoded_model, operation)) = raw.rsplit_once('/') else {
        return Outcome::Error(unknown_operation());
    };
    let model = percent_decode(encoded_model, false);
    ex.model = Some(model.clone());
    let stream = match operation {
        "converse" => false,
        "converse-stream" => true,
        _ => return Outcome::Error(unknown_operation()),
    };
    ex.stream = stream;
    if let Err(error) = check_signature(ex) {
        return Outcome::Error(error);
    }
    let Some(body) = ex.json_object() else {
        return Outcome::Error(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "Unexpected character in request body: expected a JSON object",
            )
            .kind("SerializationException"),
        );
    };
    converse(ex, &model, &body, stream)
}

fn unknown_operation() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Unknown operation: the mock supports /converse and /converse-stream",
    )
    .kind("UnknownOperationException")
}

/// Presence checks for a SigV4-signed request, with the exceptions AWS
/// answers when they fail.
pub(crate) fn check_signature(ex: &Exchange) -> Result<(), ApiError> {
    let Some(authorization) = ex.header("authorization") else {
        return Err(
            ApiError::new(StatusCode::FORBIDDEN, "Missing Authentication Token")
                .kind("MissingAuthenticationTokenException"),
        );
    };
    if !authorization.starts_with("AWS4-HMAC-SHA256 Credential=") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization=({authorization})"
            ),
        )
        .kind("IncompleteSignatureException"));
    }
    if ex.header("x-amz-date").is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
        .kind("IncompleteSignatureException"));
    }
    Ok(())
}

fn validation(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message).kind("ValidationException")
}

fn converse(ex: &Exchange, model: &str, body: &Map<String, Value>, stream: bool) -> Outcome {
    let request = Value::Object(body.clone());
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => {
            return Outcome::Error(validation(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
    };
    let conversation = read_conversation(&request, messages);
    let reply = conversation.reply(Provider::Bedrock, model);
    let tool_use_id = format!("tooluse_mock{:016}", ex.seq);
    let latency_ms = 0;
    if stream {
        let frames = stream_frames(&reply, &tool_use_id, latency_ms);
        Outcome::stream("application/vnd.amazon.eventstream", frames, &reply)
    } else {
        let content = match &reply.content {
            Content::Text(text) => json!([{"text": text}]),
            Content::ToolCall { name, .. } => json!([{"toolUse": {
                "toolUseId": tool_use_id,
                "name": name,
                "input": reply.arguments_json(),
            }}]),
        };
        let body = json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason(&reply.finish),
            "usage": usage(&reply),
            "metrics": {"latencyMs": latency_ms},
        });
        Outcome::json(body, &reply)
    }
}

/// Reads the system blocks, messages, tool config and inference config.
fn read_conversation(request: &Value, messages: &[Value]) -> Conversation {
    let mut conversation = Conversation::default();
    if let Some(system) = request.get("system") {
        conversation.add_input(&blocks_text(Some(system)));
    }
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
    conversation.first_tool = request
        .get("toolConfig")
        .and_then(|config| config.get("tools"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|tool| tool.get("toolSpec")?.get("name")?.as_str())
        .map(str::to_owned);
    if let Some(config) = request.get("inferenceConfig") {
        conversation.max_tokens = config.get("maxTokens").and_then(Value::as_u64);
        conversation.stop = config
            .get("stopSequences")
            .and_then(Value::as_array)
            .map(|stops| {
                stops
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
    }
    conversation
}

/// Text of the `{"text"}` blocks of a content array, joined by newlines.
fn blocks_text(content: Option<&Value>) -> String {
    content
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|block| block.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Texts of the `toolResult` blocks of a message: text blocks as they are,
/// JSON blocks as compact JSON, joined by newlines.
fn tool_results(content: Option<&Value>) -> Vec<String> {
    content
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|block| block.get("toolResult"))
        .map(|result| {
            result
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|part| match (part.get("text"), part.get("json")) {
                    (Some(Value::String(text)), _) => Some(text.clone()),
                    (_, Some(json)) => Some(json.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
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

fn usage(reply: &Reply) -> Value {
    json!({
        "inputTokens": reply.input_tokens,
        "outputTokens": reply.output_tokens,
        "totalTokens": reply.input_tokens + reply.output_tokens,
    })
}

/// One event-stream message with Bedrock's headers and a padded payload.
fn event(event_type: &str, mut payload: Value) -> Bytes {
    if let Value::Object(map) = &mut payload {
        map.insert("p".into(), json!(PADDING));
    }
    let headers = [
        (":event-type", event_type),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ];
    Bytes::from(encode_message(&headers, payload.to_string().as_bytes()))
}

/// One event-stream message with string headers, framed by the AWS SDK's
/// encoder (`aws-smithy-eventstream`): what Bedrock itself sends.
fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let mut message = Message::new(payload.to_vec());
    for (name, value) in headers {
        message = message.add_header(Header::new(
            name.to_string(),
            HeaderValue::String(value.to_string().into()),
        ));
    }
    let mut out = Vec::new();
    // Only string headers of bounded size: encoding cannot fail.
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut out);
    out
}

/// The event-stream messages of a streamed reply.
fn stream_frames(reply: &Reply, tool_use_id: &str, latency_ms: u64) -> Vec<Bytes> {
    let mut frames = vec![event("messageStart", json!({"role": "assistant"}))];
    if let Content::ToolCall { name, .. } = &reply.content {
        frames.push(event(
            "contentBlockStart",
            json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}}),
        ));
    }
    for piece in reply.stream_pieces() {
        let delta = match reply.content {
            Content::Text(_) => json!({"text": piece}),
            Content::ToolCall { .. } => json!({"toolUse": {"input": piece}}),
        };
        frames.push(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": delta}),
        ));
    }
    frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    frames.push(event(
        "messageStop",
        json!({"stopReason": stop_reason(&reply.finish)}),
    ));
    frames.push(event(
        "metadata",
        json!({"usage": usage(reply), "metrics": {"latencyMs": latency_ms}}),
    ));
    frames
}

#[cfg(test)]
mod tests {
    // Decoded by the gateway's own decoder: the mock's frames come from
    // the AWS SDK's encoder, so these tests also check the two agree.
    use portcullis_formats::eventstream::{EventMessage, EventStreamDecoder};
    use serde_json::{Value, json};

    use crate::testkit::*;

    const AUTH: (&str, &str) = (
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
    );
    const DATE: (&str, &str) = ("x-amz-date", "20250101T000000Z");
    const MODEL_PATH: &str = "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0";
    const MODEL: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

    fn body(text: &str) -> Value {
        json!({
            "system": [{"text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"text": text}]}],
        })
    }

    fn decode_all(bytes: &[u8]) -> (Vec<EventMessage>, usize) {
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(bytes);
        let mut messages = Vec::new();
        while let Some(message) = decoder.next_message().unwrap() {
            messages.push(message);
        }
        (messages, decoder.buffered_len())
    }

    fn payload(message: &EventMessage) -> Value {
        serde_json::from_slice(&message.payload).unwrap()
    }

    #[tokio::test]
    async fn converse_with_url_encoded_model_id() {
        let mock = Mock::start().await;
        let (status, headers, reply) = mock
            .post_json(
                &format!("{MODEL_PATH}/converse"),
                &[AUTH, DATE],
                body("hello world"),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            headers["x-amzn-requestid"],
            "00000000-0000-4000-8000-000000000001"
        );
        assert_eq!(
            reply,
            json!({
                "output": {"message": {"role": "assistant", "content": [{"text":
                    format!("Mock reply from bedrock model {MODEL}: hello world")}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 4, "outputTokens": 8, "totalTokens": 12},
                "metrics": {"latencyMs": 0},
            })
        );
        let journal = mock.journal().await;
        assert_eq!(journal[0]["model"], MODEL);
        assert_eq!(journal[0]["provider"], "bedrock");
    }

    #[tokio::test]
    async fn unsigned_requests_are_rejected_like_aws() {
        let mock = Mock::start().await;
        let path = format!("{MODEL_PATH}/converse");
        let (status, headers, reply) = mock.post_json(&path, &[DATE], body("x")).await;
        assert_eq!(status, 403);
        assert_eq!(
            headers["x-amzn-errortype"],
            "MissingAuthenticationTokenException"
        );
        assert_eq!(reply, json!({"message": "Missing Authentication Token"}));

        let (status, headers, _) = mock
            .post_json(&path, &[("authorization", "Bearer nope"), DATE], body("x"))
            .await;
        assert_eq!(status, 403);
        assert_eq!(headers["x-amzn-errortype"], "IncompleteSignatureException");

        let (status, headers, _) = mock.post_json(&path, &[AUTH], body("x")).await;
        assert_eq!(status, 403);
        assert_eq!(headers["x-amzn-errortype"], "IncompleteSignatureException");

        let (status, headers, _) = mock.post_raw(&path, &[AUTH, DATE], "{{").await;
        assert_eq!(status, 400);
        assert_eq!(headers["x-amzn-errortype"], "SerializationException");

        let (status, headers, _) = mock
            .post_json(&path, &[AUTH, DATE], json!({"messages": []}))
            .await;
        assert_eq!(status, 400);
        assert_eq!(headers["x-amzn-errortype"], "ValidationException");
    }

    #[tokio::test]
    async fn converse_stream_is_an_aws_event_stream() {
        let mock = Mock::start().await;
        let mut request = body("hello world");
        request["inferenceConfig"] = json!({"maxTokens": 5});
        let (received, cut) = mock
            .post_stream_raw(
                &format!("{MODEL_PATH}/converse-stream"),
                &[AUTH, DATE],
                request,
            )
            .await;
        assert!(!cut);
        let (messages, leftover) = decode_all(&received);
        assert_eq!(leftover, 0);
        let types: Vec<&str> = messages
            .iter()
            .map(|m| m.header(":event-type").unwrap())
            .collect();
        let mut expected = vec!["messageStart"];
        expected.extend(std::iter::repeat_n("contentBlockDelta", 5));
        expected.extend(["contentBlockStop", "messageStop", "metadata"]);
        assert_eq!(types, expected);
        for message in &messages {
            assert_eq!(message.header(":content-type"), Some("application/json"));
            assert_eq!(message.header(":message-type"), Some("event"));
            assert_eq!(payload(message)["p"], super::PADDING);
        }
        assert_eq!(payload(&messages[0])["role"], "assistant");
        let text: String = messages[1..6]
            .iter()
            .map(|m| payload(m)["delta"]["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, "Mock reply from bedrock model");
        assert_eq!(payload(&messages[1])["contentBlockIndex"], 0);
        assert_eq!(payload(&messages[7])["stopReason"], "max_tokens");
        assert_eq!(
            payload(&messages[8])["usage"],
            json!({"inputTokens": 4, "outputTokens": 5, "totalTokens": 9})
        );
        assert_eq!(payload(&messages[8])["metrics"], json!({"latencyMs": 0}));
    }

    fn tool_request() -> Value {
        let mut request = body("weather in Paris");
        request["toolConfig"] = json!({"tools": [
            {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}},
            {"toolSpec": {"name": "other", "inputSchema": {"json": {"type": "object"}}}},
        ]});
        request
    }

    #[tokio::test]
    async fn tool_use_streamed_and_not() {
        let mock = Mock::start().await;
        let (_, _, reply) = mock
            .post_json(
                &format!("{MODEL_PATH}/converse"),
                &[AUTH, DATE],
                tool_request(),
            )
            .await;
        assert_eq!(reply["stopReason"], "tool_use");
        assert_eq!(
            reply["output"]["message"]["content"],
            json!([{"toolUse": {"toolUseId": "tooluse_mock0000000000000001", "name": "get_weather",
                "input": {"input": "weather in Paris"}}}])
        );

        let (received, _) = mock
            .post_stream_raw(
                &format!("{MODEL_PATH}/converse-stream"),
                &[AUTH, DATE],
                tool_request(),
            )
            .await;
        let (messages, _) = decode_all(&received);
        assert_eq!(messages[1].header(":event-type"), Some("contentBlockStart"));
        assert_eq!(
            payload(&messages[1])["start"],
            json!({"toolUse": {"toolUseId": "tooluse_mock0000000000000002", "name": "get_weather"}})
        );
        let input: String = messages
            .iter()
            .filter(|m| m.header(":event-type") == Some("contentBlockDelta"))
            .map(|m| {
                payload(m)["delta"]["toolUse"]["input"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(input, "{\"input\":\"weather in Paris\"}");
        let stop = messages
            .iter()
            .find(|m| m.header(":event-type") == Some("messageStop"))
            .unwrap();
        assert_eq!(payload(stop)["stopReason"], "tool_use");

        let mut follow_up = tool_request();
        follow_up["messages"] = json!([
            {"role": "user", "content": [{"text": "weather in Paris"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t1",
                "content": [{"json": {"temp": 21}}], "status": "success"}}]},
        ]);
        let (_, _, reply) = mock
            .post_json(&format!("{MODEL_PATH}/converse"), &[AUTH, DATE], follow_up)
            .await;
        assert_eq!(
            reply["output"]["message"]["content"][0]["text"],
            "Tool said: {\"temp\":21}"
        );
        assert_eq!(reply["stopReason"], "end_turn");
    }

    #[tokio::test]
    async fn injected_throttling_cut_stream_and_journal() {
        let mock = Mock::start().await;
        mock.behaviour(json!({"status": 429, "times": 1})).await;
        let (status, headers, reply) = mock
            .post_json(&format!("{MODEL_PATH}/converse"), &[AUTH, DATE], body("x"))
            .await;
        assert_eq!(status, 429);
        assert_eq!(headers["x-amzn-errortype"], "ThrottlingException");
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(
            reply,
            json!({"message": "Too many requests, please wait before trying again."})
        );

        mock.behaviour(json!({"cut_after_chunks": 3, "path_contains": "converse-stream"}))
            .await;
        let (received, cut) = mock
            .post_stream_raw(
                &format!("{MODEL_PATH}/converse-stream"),
                &[AUTH, DATE],
                body("hello world"),
            )
            .await;
        assert!(cut);
        let (messages, leftover) = decode_all(&received);
        assert_eq!(messages.len(), 3);
        assert_eq!(leftover, 0);

        let journal = mock.journal().await;
        assert_eq!(journal.len(), 2);
        assert_eq!(journal[0]["status"], 429);
        assert_eq!(journal[1]["stream"], true);
        assert_eq!(journal[1]["path"], format!("{MODEL_PATH}/converse-stream"));
        assert!(
            journal[1]["headers"]["authorization"]
                .as_str()
                .unwrap()
                .starts_with("AWS4-HMAC-SHA256")
        );
    }
}
