//! The Google Gemini API dialect (Generative Language API), under
//! `/v1beta/models/{model}:{action}` (and `/v1/...`):
//! `generateContent`, `streamGenerateContent`, `embedContent`,
//! `batchEmbedContents` and `countTokens`.
//!
//! The key comes in the `x-goog-api-key` header or the `key` query
//! parameter (403 `PERMISSION_DENIED` without one). Request fields are
//! accepted in both proto JSON spellings (`systemInstruction` and
//! `system_instruction`), as Google does. With `alt=sse` a stream is SSE
//! where each event is `data: <GenerateContentResponse>\r\n\r\n` (Google
//! uses CRLF line ends); without it the stream is one JSON array sent
//! element by element. Every streamed chunk carries `usageMetadata`: the
//! prompt count on intermediate chunks, the complete counts on the last,
//! which also carries `finishReason`. A function call arrives whole, with
//! `finishReason: "STOP"` (Gemini has no separate tool-use reason).

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::exchange::{Exchange, Outcome};
use crate::journal::JournalUsage;
use crate::reply::{
    Content, Conversation, DEFAULT_EMBEDDING_DIMS, Finish, LastTurn, MAX_EMBEDDING_DIMS, Provider,
    Reply, embed, words,
};

/// The API key, in the `x-goog-api-key` header or the `key` parameter.
pub(crate) fn check_key(ex: &Exchange) -> Result<(), ApiError> {
    if ex.header("x-goog-api-key").is_none() && ex.query_param("key").is_none_or(|k| k.is_empty()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        ));
    }
    Ok(())
}

/// `POST /v1beta/models/{model}:{action}`; `model_action` is the last path
/// segment, already percent-decoded. With `vertex`, Gemini on Vertex AI
/// (`/v1/projects/{p}/locations/{l}/publishers/google/models/...`): the
/// same bodies, with an OAuth2 bearer token instead of an API key.
pub(crate) fn dispatch(ex: &mut Exchange, model_action: &str, vertex: bool) -> Outcome {
    let Some((model, action)) = model_action.rsplit_once(':') else {
        return Outcome::Error(not_found(model_action));
    };
    let model = model.strip_prefix("models/").unwrap_or(model).to_owned();
    ex.model = Some(model.clone());
    if vertex && ex.bearer().is_none() {
        return Outcome::Error(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        ));
    }
    if !vertex && let Err(e) = check_key(ex) {
        return Outcome::Error(e);
    }
    let Some(body) = ex.json_object() else {
        return Outcome::Error(invalid(
            "Invalid JSON payload received. Expected a JSON object.",
        ));
    };
    match action {
        "generateContent" => generate(ex, &model, &body, false),
        "streamGenerateContent" => {
            ex.stream = true;
            generate(ex, &model, &body, true)
        }
        "embedContent" => embed_content(&body),
        "batchEmbedContents" => batch_embed_contents(&body),
        "countTokens" => count_tokens(&body),
        _ => Outcome::Error(not_found(model_action)),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn not_found(model_action: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "models/{model_action} is not found for API version v1beta, or is not supported for this method."
        ),
    )
}

/// A field under either of its proto JSON names.
fn field<'a>(object: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    object.get(camel).or_else(|| object.get(snake))
}

fn generate(ex: &Exchange, model: &str, body: &Map<String, Value>, stream: bool) -> Outcome {
    let request = Value::Object(body.clone());
    let contents = match request.get("contents") {
        Some(Value::Array(contents)) if !contents.is_empty() => contents,
        _ => {
            return Outcome::Error(invalid(
                "* GenerateContentRequest.contents: contents is not specified\n",
            ));
        }
    };
    let conversation = read_conversation(&request, contents);
    let reply = conversation.reply(Provider::Gemini, model);
    let response_id = format!("mock{:016}", ex.seq);
    if !stream {
        let parts = parts_of(&reply);
        let body = response(
            &parts,
            Some(finish_reason(&reply.finish)),
            full_usage(&reply),
            model,
            &response_id,
        );
        return Outcome::json(body, &reply);
    }

    let chunks = stream_chunks(&reply, model, &response_id);
    if ex.query_param("alt").as_deref() == Some("sse") {
        let frames = chunks
            .iter()
            .map(|chunk| Bytes::from(format!("data: {chunk}\r\n\r\n")))
            .collect();
        Outcome::stream("text/event-stream", frames, &reply)
    } else {
        // Without alt=sse Google streams a single JSON array.
        let mut frames: Vec<Bytes> = chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let separator = if i == 0 { "[" } else { ",\r\n" };
                Bytes::from(format!("{separator}{chunk}"))
            })
            .collect();
        frames.push(Bytes::from_static(b"]"));
        Outcome::stream("application/json; charset=UTF-8", frames, &reply)
    }
}

/// Reads the system instruction, contents, tools and generation config.
fn read_conversation(request: &Value, contents: &[Value]) -> Conversation {
    let mut conversation = Conversation::default();
    if let Some(system) = field(request, "systemInstruction", "system_instruction") {
        conversation.add_input(&parts_text(system));
    }
    for content in contents {
        let text = parts_text(content);
        let results = function_responses(content);
        conversation.add_input(&text);
        for result in &results {
            conversation.add_input(result);
        }
        let is_model = content.get("role").and_then(Value::as_str) == Some("model");
        conversation.last = match (is_model, results.is_empty()) {
            (false, true) => {
                conversation.last_user_text = text.clone();
                LastTurn::User(text)
            }
            (false, false) => LastTurn::ToolResults(results.join("\n")),
            (true, _) => LastTurn::Other,
        };
    }

    let mode = field(request, "toolConfig", "tool_config")
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"))
        .and_then(|c| c.get("mode"))
        .and_then(Value::as_str);
    if mode != Some("NONE") {
        conversation.first_tool = request
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|tool| field(tool, "functionDeclarations", "function_declarations"))
            .filter_map(Value::as_array)
            .flatten()
            .find_map(|declaration| declaration.get("name").and_then(Value::as_str))
            .map(str::to_owned);
    }
    if let Some(config) = field(request, "generationConfig", "generation_config") {
        conversation.max_tokens =
            field(config, "maxOutputTokens", "max_output_tokens").and_then(Value::as_u64);
        conversation.stop = field(config, "stopSequences", "stop_sequences")
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

/// Text parts of a `Content`, joined by newlines.
fn parts_text(content: &Value) -> String {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The `functionResponse` parts of a `Content`, each as text: a `response`
/// object holding a single string (`{"result": "sunny"}`, the shape
/// Google's examples use) reads as that string, as a model would read it;
/// anything else as its compact JSON.
fn function_responses(content: &Value) -> Vec<String> {
    content
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|part| field(part, "functionResponse", "function_response"))
        .map(|response| {
            let value = response.get("response").cloned().unwrap_or(Value::Null);
            match value
                .as_object()
                .filter(|o| o.len() == 1)
                .and_then(|o| o.values().next())
            {
                Some(Value::String(text)) => text.clone(),
                _ => value.to_string(),
            }
        })
        .collect()
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Length => "MAX_TOKENS",
        Finish::Stop | Finish::StopSequence(_) | Finish::ToolCall => "STOP",
    }
}

fn parts_of(reply: &Reply) -> Value {
    match &reply.content {
        Content::Text(text) => json!([{"text": text}]),
        Content::ToolCall { name, .. } => {
            json!([{"functionCall": {"name": name, "args": reply.arguments_json()}}])
        }
    }
}

fn full_usage(reply: &Reply) -> Value {
    json!({
        "promptTokenCount": reply.input_tokens,
        "candidatesTokenCount": reply.output_tokens,
        "totalTokenCount": reply.input_tokens + reply.output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
    })
}

fn prompt_usage(reply: &Reply) -> Value {
    json!({
        "promptTokenCount": reply.input_tokens,
        "totalTokenCount": reply.input_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
    })
}

/// A `GenerateContentResponse` with one candidate.
fn response(
    parts: &Value,
    finish: Option<&str>,
    usage: Value,
    model: &str,
    response_id: &str,
) -> Value {
    let mut candidate = Map::new();
    candidate.insert("content".into(), json!({"parts": parts, "role": "model"}));
    if let Some(finish) = finish {
        candidate.insert("finishReason".into(), json!(finish));
    }
    candidate.insert("index".into(), json!(0));
    json!({
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    })
}

/// The streamed `GenerateContentResponse`s: one per word, the last with the
/// finish reason and complete usage.
fn stream_chunks(reply: &Reply, model: &str, response_id: &str) -> Vec<Value> {
    let finish = finish_reason(&reply.finish);
    if let Content::ToolCall { .. } = reply.content {
        return vec![response(
            &parts_of(reply),
            Some(finish),
            full_usage(reply),
            model,
            response_id,
        )];
    }
    let mut pieces = reply.stream_pieces();
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let parts = json!([{"text": piece}]);
            if i == last {
                response(&parts, Some(finish), full_usage(reply), model, response_id)
            } else {
                response(&parts, None, prompt_usage(reply), model, response_id)
            }
        })
        .collect()
}

/// The `outputDimensionality` of an embed request, or the default.
fn dimensions(request: &Value) -> Result<usize, ApiError> {
    match field(request, "outputDimensionality", "output_dimensionality") {
        None | Some(Value::Null) => Ok(DEFAULT_EMBEDDING_DIMS),
        Some(value) => match value.as_u64() {
            Some(n) if (1..=MAX_EMBEDDING_DIMS as u64).contains(&n) => Ok(n as usize),
            _ => Err(invalid(format!(
                "* EmbedContentRequest.output_dimensionality: must be between 1 and {MAX_EMBEDDING_DIMS}\n"
            ))),
        },
    }
}

/// Embeds one `EmbedContentRequest`, returning the vector and its words.
fn embed_one(request: &Value) -> Result<(Vec<f32>, u64), ApiError> {
    let Some(content) = request.get("content") else {
        return Err(invalid(
            "* EmbedContentRequest.content: content is not specified\n",
        ));
    };
    let text = parts_text(content);
    Ok((embed(&text, dimensions(request)?), words(&text)))
}

fn embed_content(body: &Map<String, Value>) -> Outcome {
    match embed_one(&Value::Object(body.clone())) {
        Ok((vector, tokens)) => Outcome::Json {
            body: json!({"embedding": {"values": vector}}),
            usage: Some(JournalUsage {
                input_tokens: tokens,
                output_tokens: 0,
            }),
        },
        Err(error) => Outcome::Error(error),
    }
}

fn batch_embed_contents(body: &Map<String, Value>) -> Outcome {
    let Some(requests) = body.get("requests").and_then(Value::as_array) else {
        return Outcome::Error(invalid(
            "* BatchEmbedContentsRequest.requests: requests is not specified\n",
        ));
    };
    let mut embeddings = Vec::with_capacity(requests.len());
    let mut tokens = 0;
    for request in requests {
        match embed_one(request) {
            Ok((vector, words)) => {
                embeddings.push(json!({"values": vector}));
                tokens += words;
            }
            Err(error) => return Outcome::Error(error),
        }
    }
    Outcome::Json {
        body: json!({"embeddings": embeddings}),
        usage: Some(JournalUsage {
            input_tokens: tokens,
            output_tokens: 0,
        }),
    }
}

fn count_tokens(body: &Map<String, Value>) -> Outcome {
    // The request is either `contents` or a whole `generateContentRequest`.
    let request = field(
        &Value::Object(body.clone()),
        "generateContentRequest",
        "generate_content_request",
    )
    .cloned()
    .unwrap_or_else(|| Value::Object(body.clone()));
    let contents = request
        .get("contents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tokens = read_conversation(&request, &contents).input_tokens();
    Outcome::Json {
        body: json!({
            "totalTokens": tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
        }),
        usage: Some(JournalUsage {
            input_tokens: tokens,
            output_tokens: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::testkit::*;

    const KEY: (&str, &str) = ("x-goog-api-key", "AIza-test");
    const GENERATE: &str = "/v1beta/models/gemini-2.0-flash:generateContent";
    const STREAM: &str = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";

    fn body(text: &str) -> Value {
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": text}]}],
        })
    }

    /// The JSON chunks of a Gemini SSE stream, checking the CRLF framing.
    fn crlf_events(text: &str) -> Vec<Value> {
        assert!(
            text.ends_with("\r\n\r\n"),
            "events end with CRLF CRLF: {text:?}"
        );
        text.split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn generate_content() {
        let mock = Mock::start().await;
        let (status, _, reply) = mock.post_json(GENERATE, &[KEY], body("hello world")).await;
        assert_eq!(status, 200);
        assert_eq!(
            reply,
            json!({
                "candidates": [{
                    "content": {"parts": [{"text":
                        "Mock reply from gemini model gemini-2.0-flash: hello world"}],
                        "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                }],
                "usageMetadata": {
                    "promptTokenCount": 4, "candidatesTokenCount": 8, "totalTokenCount": 12,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}],
                },
                "modelVersion": "gemini-2.0-flash",
                "responseId": "mock0000000000000001",
            })
        );
    }

    #[tokio::test]
    async fn key_in_query_snake_case_fields_and_max_tokens() {
        let mock = Mock::start().await;
        let request = json!({
            "system_instruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"parts": [{"text": "hello world"}]}],
            "generation_config": {"max_output_tokens": 3},
        });
        let (status, _, reply) = mock
            .post_json(&format!("{GENERATE}?key=AIza-test"), &[], request)
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            reply["candidates"][0]["content"]["parts"][0]["text"],
            "Mock reply from"
        );
        assert_eq!(reply["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(reply["usageMetadata"]["candidatesTokenCount"], 3);
    }

    #[tokio::test]
    async fn missing_key_and_bad_bodies() {
        let mock = Mock::start().await;
        let (status, _, reply) = mock.post_json(GENERATE, &[], body("x")).await;
        assert_eq!(status, 403);
        assert_eq!(reply["error"]["code"], 403);
        assert_eq!(reply["error"]["status"], "PERMISSION_DENIED");

        let (status, _, reply) = mock.post_raw(GENERATE, &[KEY], "nope").await;
        assert_eq!(status, 400);
        assert_eq!(reply["error"]["status"], "INVALID_ARGUMENT");

        let (status, _, reply) = mock
            .post_json(GENERATE, &[KEY], json!({"contents": []}))
            .await;
        assert_eq!(status, 400);
        assert_eq!(reply["error"]["code"], 400);

        let (status, _, reply) = mock
            .post_json("/v1beta/models/gemini-2.0-flash:fly", &[KEY], body("x"))
            .await;
        assert_eq!(status, 404);
        assert_eq!(reply["error"]["status"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn sse_stream_uses_crlf_and_reports_usage_on_every_chunk() {
        let mock = Mock::start().await;
        let (status, headers, text) = mock.post_text(STREAM, &[KEY], body("hello world")).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/event-stream");
        let chunks = crlf_events(&text);
        assert_eq!(chunks.len(), 8);
        let text: String = chunks
            .iter()
            .map(|c| {
                c["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            text,
            "Mock reply from gemini model gemini-2.0-flash: hello world"
        );
        for chunk in &chunks[..7] {
            assert!(chunk["candidates"][0].get("finishReason").is_none());
            assert_eq!(chunk["usageMetadata"]["promptTokenCount"], 4);
            assert_eq!(chunk["usageMetadata"]["totalTokenCount"], 4);
            assert_eq!(chunk["candidates"][0]["content"]["role"], "model");
        }
        let last = &chunks[7];
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 8);
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 12);
        assert_eq!(last["responseId"], "mock0000000000000001");
    }

    #[tokio::test]
    async fn stream_without_alt_sse_is_a_json_array() {
        let mock = Mock::start().await;
        let (_, headers, text) = mock
            .post_text(
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                &[KEY],
                body("hi"),
            )
            .await;
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let chunks: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(chunks.len(), 7);
        assert_eq!(chunks[6]["candidates"][0]["finishReason"], "STOP");
    }

    fn tool_body() -> Value {
        let mut request = body("weather in Paris");
        request["tools"] = json!([
            {"googleSearch": {}},
            {"functionDeclarations": [{"name": "get_weather"}, {"name": "other"}]},
        ]);
        request
    }

    #[tokio::test]
    async fn function_call_and_function_response() {
        let mock = Mock::start().await;
        let (_, _, reply) = mock.post_json(GENERATE, &[KEY], tool_body()).await;
        assert_eq!(
            reply["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"name": "get_weather", "args": {"input": "weather in Paris"}}}])
        );
        assert_eq!(reply["candidates"][0]["finishReason"], "STOP");
        assert_eq!(reply["usageMetadata"]["candidatesTokenCount"], 3);

        let (_, _, text) = mock.post_text(STREAM, &[KEY], tool_body()).await;
        let chunks = crlf_events(&text);
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
            "get_weather"
        );

        let mut follow_up = tool_body();
        follow_up["contents"] = json!([
            {"role": "user", "parts": [{"text": "weather in Paris"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                "response": {"result": "sunny"}}}]},
        ]);
        let (_, _, reply) = mock.post_json(GENERATE, &[KEY], follow_up).await;
        assert_eq!(
            reply["candidates"][0]["content"]["parts"][0]["text"],
            "Tool said: sunny"
        );
    }

    #[tokio::test]
    async fn injected_error_cut_stream_and_journal() {
        let mock = Mock::start().await;
        mock.behaviour(json!({"status": 429, "times": 1, "path_contains": ":generateContent"}))
            .await;
        let (status, headers, reply) = mock.post_json(GENERATE, &[KEY], body("x")).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(
            reply,
            json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                   "status": "RESOURCE_EXHAUSTED"}})
        );

        mock.behaviour(json!({"cut_after_chunks": 2})).await;
        let (received, cut) = mock
            .post_stream_raw(STREAM, &[KEY], body("hello world"))
            .await;
        assert!(cut);
        let text = String::from_utf8(received).unwrap();
        assert_eq!(crlf_events(&text).len(), 2);

        let journal = mock.journal().await;
        assert_eq!(journal[0]["status"], 429);
        assert_eq!(journal[0]["model"], "gemini-2.0-flash");
        assert_eq!(journal[1]["provider"], "gemini");
        assert_eq!(journal[1]["stream"], true);
        assert_eq!(journal[1]["query"], "alt=sse");
        assert_eq!(
            journal[1]["usage"],
            json!({"input_tokens": 4, "output_tokens": 8})
        );
    }

    #[tokio::test]
    async fn embeddings_and_count_tokens() {
        let mock = Mock::start().await;
        let (status, _, reply) = mock
            .post_json(
                "/v1beta/models/text-embedding-004:embedContent",
                &[KEY],
                json!({"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 8}),
            )
            .await;
        assert_eq!(status, 200);
        let values: Vec<f32> =
            serde_json::from_value(reply["embedding"]["values"].clone()).unwrap();
        assert_eq!(values, crate::reply::embed("hello world", 8));

        let (_, _, reply) = mock
            .post_json(
                "/v1beta/models/text-embedding-004:batchEmbedContents",
                &[KEY],
                json!({"requests": [
                    {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
                    {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}},
                ]}),
            )
            .await;
        assert_eq!(reply["embeddings"].as_array().unwrap().len(), 2);
        assert_eq!(
            reply["embeddings"][1]["values"].as_array().unwrap().len(),
            16
        );

        let (_, _, reply) = mock
            .post_json(
                "/v1beta/models/gemini-2.0-flash:countTokens",
                &[KEY],
                json!({"contents": [{"parts": [{"text": "one two three"}]}]}),
            )
            .await;
        assert_eq!(reply["totalTokens"], 3);
    }
}
