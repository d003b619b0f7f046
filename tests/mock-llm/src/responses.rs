//! OpenAI's Responses API (`POST /v1/responses`), and Azure OpenAI's at
//! its v1 surface (`POST /openai/v1/responses`: no deployment in the path,
//! the deployment name is the body's `model`, no `api-version` needed;
//! `api-key` header or an Entra ID bearer).
//!
//! The request's `instructions` and `input` (a string, or items: messages
//! whose content is a string or `input_text`/`output_text` parts,
//! `function_call` and `function_call_output`) are read like a chat's
//! messages, and answered by the same reply rules; function tools are the
//! flat `{type: "function", name, parameters}` shape. The answer is a
//! `response` object whose `output` holds a `message` item (an
//! `output_text` part) or a `function_call` item; a stream is OpenAI's
//! typed events (`event:` line and a `data:` object carrying the same
//! `type` and a `sequence_number`), ending with `response.completed` (or
//! `response.incomplete` when cut at `max_output_tokens`) and no `[DONE]`.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::exchange::{Exchange, Outcome, sse_event, unix_now};
use crate::openai::{bad_request, content_text, invalid_json};
use crate::reply::{Content, Conversation, Finish, LastTurn, Provider, Reply};

/// `POST /v1/responses` (OpenAI) or `/openai/v1/responses` (Azure).
pub(crate) fn create(ex: &mut Exchange) -> Outcome {
    let provider = ex.provider;
    let authorised = match provider {
        Provider::Azure => ex.header("api-key").is_some() || ex.bearer().is_some(),
        _ => ex.bearer().is_some(),
    };
    if !authorised {
        return Outcome::Error(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        ));
    }
    let Some(body) = ex.json_object() else {
        return Outcome::Error(invalid_json(provider));
    };
    ex.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let Some(model) = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return Outcome::Error(
            bad_request(provider, "Missing required parameter: 'model'.")
                .param("model")
                .code("missing_required_parameter"),
        );
    };
    let model = model.to_owned();
    ex.model = Some(model.clone());
    let conversation = match read_input(&body) {
        Ok(c) => c,
        Err(message) => return Outcome::Error(bad_request(provider, message).param("input")),
    };
    let reply = conversation.reply(provider, &model);
    let answer = Answer {
        id: format!("resp_mock{:016}", ex.seq),
        item_id: format!("msg_mock{:016}", ex.seq),
        call_id: format!("call_mock{:016}", ex.seq),
        created_at: unix_now(),
        model,
        request: &body,
        reply: &reply,
    };
    if ex.stream {
        Outcome::stream("text/event-stream", answer.events(), &reply)
    } else {
        Outcome::json(answer.response(true), &reply)
    }
}

/// The conversation of a Responses request.
fn read_input(body: &Map<String, Value>) -> Result<Conversation, String> {
    let mut c = Conversation::default();
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        c.add_input(instructions);
    }
    let items = match body.get("input") {
        Some(Value::String(text)) => vec![json!({"role": "user", "content": text})],
        Some(Value::Array(items)) if !items.is_empty() => items.clone(),
        _ => return Err("Missing required parameter: 'input'.".into()),
    };
    // Consecutive function outputs at the end are the tool results the
    // model answers.
    let mut results: Vec<String> = Vec::new();
    for item in &items {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let text = content_text(item.get("content"));
                c.add_input(&text);
                results.clear();
                let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                c.last = if role == "user" {
                    c.last_user_text = text.clone();
                    LastTurn::User(text)
                } else {
                    LastTurn::Other
                };
            }
            "function_call_output" => {
                let output = item.get("output").and_then(Value::as_str).unwrap_or("");
                c.add_input(output);
                results.push(output.to_owned());
                c.last = LastTurn::ToolResults(results.join("\n"));
            }
            "function_call" => {
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                c.add_input(args);
                results.clear();
                c.last = LastTurn::Other;
            }
            other => return Err(format!("Invalid input item type: '{other}'.")),
        }
    }
    let tools_off = body.get("tool_choice").and_then(Value::as_str) == Some("none");
    if !tools_off {
        c.first_tool = body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    c.max_tokens = body.get("max_output_tokens").and_then(Value::as_u64);
    Ok(c)
}

/// One answer, rendered whole or as events.
struct Answer<'a> {
    id: String,
    item_id: String,
    call_id: String,
    created_at: u64,
    model: String,
    request: &'a Map<String, Value>,
    reply: &'a Reply,
}

impl Answer<'_> {
    /// The `response` object; `done` false gives the in-progress one the
    /// stream starts with (no output, no usage).
    fn response(&self, done: bool) -> Value {
        let echo = |k: &str, default: Value| self.request.get(k).cloned().unwrap_or(default);
        let cut = self.reply.finish == Finish::Length;
        let status = match (done, cut) {
            (false, _) => "in_progress",
            (true, true) => "incomplete",
            (true, false) => "completed",
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": if done && cut { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "instructions": echo("instructions", Value::Null),
            "max_output_tokens": echo("max_output_tokens", Value::Null),
            "model": self.model,
            "output": if done { vec![self.item(true)] } else { Vec::new() },
            "parallel_tool_calls": echo("parallel_tool_calls", json!(true)),
            "previous_response_id": null,
            "reasoning": echo("reasoning", json!({"effort": null, "summary": null})),
            "store": echo("store", json!(true)),
            "temperature": echo("temperature", json!(1.0)),
            "text": echo("text", json!({"format": {"type": "text"}})),
            "tool_choice": echo("tool_choice", json!("auto")),
            "tools": echo("tools", json!([])),
            "top_p": echo("top_p", json!(1.0)),
            "truncation": "disabled",
            "usage": if done { self.usage() } else { Value::Null },
            "user": null,
            "metadata": echo("metadata", json!({})),
        })
    }

    fn usage(&self) -> Value {
        let (input, output) = (self.reply.input_tokens, self.reply.output_tokens);
        json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output,
        })
    }

    /// The output item; `done` false gives it as the stream opens it.
    fn item(&self, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match &self.reply.content {
            Content::Text(text) => json!({
                "id": self.item_id,
                "type": "message",
                "status": status,
                "content": if done { vec![text_part(text)] } else { Vec::new() },
                "role": "assistant",
            }),
            Content::ToolCall { name, arguments } => json!({
                "id": format!("fc_{}", self.item_id),
                "type": "function_call",
                "status": status,
                "arguments": if done { arguments.as_str() } else { "" },
                "call_id": self.call_id,
                "name": name,
            }),
        }
    }

    /// The typed events of a stream, one frame each.
    fn events(&self) -> Vec<Bytes> {
        let mut events = Events::default();
        events.push(
            "response.created",
            json!({"response": self.response(false)}),
        );
        events.push(
            "response.in_progress",
            json!({"response": self.response(false)}),
        );
        events.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": self.item(false)}),
        );
        let item = self.item(false);
        let item_id = item["id"].clone();
        match &self.reply.content {
            Content::Text(text) => {
                let at = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
                let with = |extra: Value| merge(&at, extra);
                events.push(
                    "response.content_part.added",
                    with(json!({"part": text_part("")})),
                );
                for piece in self.reply.stream_pieces() {
                    events.push(
                        "response.output_text.delta",
                        with(json!({"delta": piece, "logprobs": []})),
                    );
                }
                events.push(
                    "response.output_text.done",
                    with(json!({"text": text, "logprobs": []})),
                );
                events.push(
                    "response.content_part.done",
                    with(json!({"part": text_part(text)})),
                );
            }
            Content::ToolCall { arguments, .. } => {
                let at = json!({"item_id": item_id, "output_index": 0});
                for piece in self.reply.stream_pieces() {
                    events.push(
                        "response.function_call_arguments.delta",
                        merge(&at, json!({"delta": piece})),
                    );
                }
                events.push(
                    "response.function_call_arguments.done",
                    merge(&at, json!({"arguments": arguments})),
                );
            }
        }
        events.push(
            "response.output_item.done",
            json!({"output_index": 0, "item": self.item(true)}),
        );
        let end = if self.reply.finish == Finish::Length {
            "response.incomplete"
        } else {
            "response.completed"
        };
        events.push(end, json!({"response": self.response(true)}));
        events.frames
    }
}

/// An `output_text` content part.
fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
}

/// `base` with `extra`'s fields added.
fn merge(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Some(o), Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    out
}

/// Stream frames, numbered in order.
#[derive(Default)]
struct Events {
    frames: Vec<Bytes>,
}

impl Events {
    fn push(&mut self, kind: &str, fields: Value) {
        let mut event = json!({"type": kind});
        if let (Some(o), Value::Object(f)) = (event.as_object_mut(), fields) {
            o.extend(f);
            o.insert("sequence_number".into(), json!(self.frames.len()));
        }
        self.frames.push(sse_event(kind, &event));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::testkit::*;

    async fn post(path: &str, auth: (&str, &str), body: Value) -> (u16, String) {
        let mock = Mock::start().await;
        let (status, _, text) = mock.post_text(path, &[auth], body).await;
        (status, text)
    }

    const BEARER: (&str, &str) = ("authorization", "Bearer sk-test");

    #[tokio::test]
    async fn a_response_carries_the_reply_its_usage_and_the_request_settings() {
        let (status, body) = post(
            "/v1/responses",
            BEARER,
            json!({"model": "gpt-4.1", "instructions": "Be brief", "input": "hello there", "temperature": 0.2}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["object"].as_str(), v["status"].as_str()),
            (Some("response"), Some("completed"))
        );
        assert_eq!(v["instructions"], "Be brief");
        assert_eq!(v["temperature"], 0.2);
        let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text, "Mock reply from openai model gpt-4.1: hello there");
        // "Be brief" + "hello there": 4 words in; the reply's words out.
        assert_eq!(v["usage"]["input_tokens"], 4);
        assert_eq!(v["usage"]["output_tokens"], 8);
        assert_eq!(v["usage"]["total_tokens"], 12);
    }

    #[tokio::test]
    async fn a_stream_is_typed_events_numbered_in_order_ending_with_the_usage() {
        let (status, body) = post(
            "/openai/v1/responses",
            ("api-key", "k"),
            json!({"model": "my-deployment", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}], "stream": true}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let events: Vec<Value> = body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (head, data) = e.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(head.strip_prefix("event: "), v["type"].as_str());
                v
            })
            .collect();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], i);
        }
        assert_eq!(events[0]["type"], "response.created");
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Mock reply from azure model my-deployment: hi");
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"]["usage"]["input_tokens"], 1);
        assert!(!body.contains("[DONE]"));
    }

    #[tokio::test]
    async fn a_function_tool_is_called_and_its_output_answered() {
        let tools =
            json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
        let (_, body) = post(
            "/v1/responses",
            BEARER,
            json!({"model": "m", "input": "find it", "tools": tools}),
        )
        .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let call = &v["output"][0];
        assert_eq!(
            (call["type"].as_str(), call["name"].as_str()),
            (Some("function_call"), Some("lookup"))
        );
        let (_, body) = post(
            "/v1/responses",
            BEARER,
            json!({"model": "m", "tools": tools, "input": [
                {"role": "user", "content": "find it"},
                {"type": "function_call", "call_id": call["call_id"], "name": "lookup", "arguments": call["arguments"]},
                {"type": "function_call_output", "call_id": call["call_id"], "output": "42"},
            ]}),
        )
        .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["output"][0]["content"][0]["text"], "Tool said: 42");
    }

    #[tokio::test]
    async fn missing_credentials_or_input_are_refused_in_openais_shape() {
        let (status, _) = post(
            "/v1/responses",
            ("x-other", "1"),
            json!({"model": "m", "input": "x"}),
        )
        .await;
        assert_eq!(status, 401);
        let (status, body) = post("/v1/responses", BEARER, json!({"model": "m"})).await;
        assert_eq!(status, 400);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["param"], "input");
    }
}
