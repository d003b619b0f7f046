//! Every provider through the OpenAI format: plain, streamed, tool calls
//! both ways, and usage equal to what the provider reported.

use serde_json::{Value, json};

use crate::harness::sse_events;
use crate::{KEY, client, setup};

/// (proxy, mock provider label, model the client sends, model the provider sees)
const CASES: &[(&str, &str, &str, &str)] = &[
    ("openai", "openai", "gpt-5-mini", "gpt-5-mini"),
    ("azure", "azure", "gpt-4o", "gpt-4o-deploy"),
    (
        "anthropic",
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
    ),
    ("gemini", "gemini", "gemini-2.5-flash", "gemini-2.5-flash"),
    (
        "bedrock",
        "bedrock",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
    ),
    (
        "mistral",
        "mistral",
        "mistral-small-latest",
        "mistral-small-latest",
    ),
];

fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello there gateway"}
        ]
    })
}

fn usage_of(entry: &Value) -> (u64, u64) {
    (
        entry["usage"]["input_tokens"]
            .as_u64()
            .expect("journal usage"),
        entry["usage"]["output_tokens"]
            .as_u64()
            .expect("journal usage"),
    )
}

#[tokio::test]
async fn every_provider_answers_plain_and_streamed_with_exact_usage() {
    let (mock, gw) = setup("").await;
    for (proxy, provider, model, upstream_model) in CASES {
        let expected =
            format!("Mock reply from {provider} model {upstream_model}: Hello there gateway");

        // Non-streamed.
        let r = client()
            .post(format!("{}/{proxy}/chat/completions", gw.url))
            .bearer_auth(KEY)
            .json(&chat_body(model, false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{proxy}: {}", r.text().await.unwrap());
        assert!(r.headers().get("x-request-id").is_some());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion", "{proxy}");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant", "{proxy}");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            expected.as_str(),
            "{proxy}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{proxy}");
        let journal = mock.journal().await;
        let last = journal.last().unwrap();
        assert_eq!(last["provider"], *provider, "{proxy}");
        assert_eq!(last["model"], *upstream_model, "{proxy}");
        let (input, output) = usage_of(last);
        assert_eq!(v["usage"]["prompt_tokens"], input, "{proxy}");
        assert_eq!(v["usage"]["completion_tokens"], output, "{proxy}");
        assert_eq!(v["usage"]["total_tokens"], input + output, "{proxy}");

        // Streamed: the same text, then a usage chunk, then [DONE].
        let r = client()
            .post(format!("{}/{proxy}/chat/completions", gw.url))
            .bearer_auth(KEY)
            .json(&chat_body(model, true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{proxy}");
        assert_eq!(r.headers()["content-type"], "text/event-stream", "{proxy}");
        let body = r.text().await.unwrap();
        let events = sse_events(&body);
        assert_eq!(events.last().unwrap().1, "[DONE]", "{proxy}: {body}");
        let mut text = String::new();
        let mut usage = None;
        let mut finish = None;
        for (_, data) in &events[..events.len() - 1] {
            let c: Value = serde_json::from_str(data).unwrap();
            assert_eq!(c["object"], "chat.completion.chunk");
            if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
                usage = Some(u.clone());
            }
            if let Some(choice) = c["choices"].get(0) {
                if let Some(t) = choice["delta"]["content"].as_str() {
                    text.push_str(t);
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    finish = Some(f.to_owned());
                }
            }
        }
        assert_eq!(text, expected, "{proxy}");
        assert_eq!(finish.as_deref(), Some("stop"), "{proxy}");
        let journal = mock.journal().await;
        let last = journal.last().unwrap();
        assert_eq!(last["stream"], true, "{proxy}");
        let (input, output) = usage_of(last);
        let usage = usage.unwrap_or_else(|| panic!("{proxy}: no usage chunk in {body}"));
        assert_eq!(usage["prompt_tokens"], input, "{proxy}");
        assert_eq!(usage["completion_tokens"], output, "{proxy}");
    }
}

#[tokio::test]
async fn usage_chunk_is_hidden_unless_asked_but_still_counted() {
    let (mock, gw) = setup("").await;
    for proxy in ["openai", "anthropic"] {
        let model = if proxy == "openai" {
            "gpt-5-mini"
        } else {
            "claude-sonnet-4-5"
        };
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "count me"}]});
        let text = client()
            .post(format!("{}/{proxy}/chat/completions", gw.url))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for (_, data) in sse_events(&text) {
            if data != "[DONE]" {
                let c: Value = serde_json::from_str(&data).unwrap();
                assert!(
                    c.get("usage").is_none() || c["usage"].is_null(),
                    "{proxy}: usage shown: {data}"
                );
            }
        }
        // The provider was still asked for usage (OpenAI style needs asking).
        let journal = mock.journal().await;
        if proxy == "openai" {
            assert_eq!(
                journal.last().unwrap()["body"]["stream_options"]["include_usage"],
                true
            );
        }
    }
    // ... and the tokens were counted in the metrics.
    let metrics = gw.metrics_after(2.0).await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("portcullis_tokens_total{")
                && l.contains("proxy=\"anthropic\"")
                && l.contains("type=\"output\"")
        })
        .unwrap_or_else(|| panic!("no anthropic output tokens in\n{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 0.0, "{line}");
}

fn tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}
        }
    }])
}

#[tokio::test]
async fn every_provider_does_tool_calls_both_ways() {
    let (mock, gw) = setup("").await;
    for (proxy, _provider, model, _up) in CASES {
        // 1. The model calls the tool.
        let r = client()
            .post(format!("{}/{proxy}/chat/completions", gw.url))
            .bearer_auth(KEY)
            .json(&json!({"model": model, "tools": tools(), "messages": [{"role": "user", "content": "Weather in Paris"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{proxy}");
        let v: Value = r.json().await.unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{proxy}: {v}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function", "{proxy}");
        assert_eq!(call["function"]["name"], "get_weather", "{proxy}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"input": "Weather in Paris"}), "{proxy}");
        let call_id = call["id"].as_str().unwrap().to_owned();
        assert!(!call_id.is_empty());

        // 2. The client returns the result; the provider sees it in its own format.
        let r = client()
            .post(format!("{}/{proxy}/chat/completions", gw.url))
            .bearer_auth(KEY)
            .json(&json!({"model": model, "tools": tools(), "messages": [
                {"role": "user", "content": "Weather in Paris"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21C"}
            ]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{proxy}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"], "Tool said: Sunny, 21C",
            "{proxy}: {v}"
        );
        let journal = mock.journal().await;
        assert!(
            journal.last().unwrap()["body"]
                .to_string()
                .contains("Sunny, 21C"),
            "{proxy}"
        );

        // 3. Streamed tool call, reassembled from deltas.
        let text = client()
            .post(format!("{}/{proxy}/chat/completions", gw.url))
            .bearer_auth(KEY)
            .json(&json!({"model": model, "stream": true, "tools": tools(), "messages": [{"role": "user", "content": "Weather in Oslo"}]}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut name = String::new();
        let mut args = String::new();
        let mut finish = None;
        for (_, data) in sse_events(&text) {
            if data == "[DONE]" {
                continue;
            }
            let c: Value = serde_json::from_str(&data).unwrap();
            if let Some(choice) = c["choices"].get(0) {
                if let Some(tc) = choice["delta"]["tool_calls"].get(0) {
                    name.push_str(tc["function"]["name"].as_str().unwrap_or(""));
                    args.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    finish = Some(f.to_owned());
                }
            }
        }
        assert_eq!(name, "get_weather", "{proxy}: {text}");
        let args: Value =
            serde_json::from_str(&args).unwrap_or_else(|e| panic!("{proxy}: {e}: {args}"));
        assert_eq!(args, json!({"input": "Weather in Oslo"}), "{proxy}");
        assert_eq!(finish.as_deref(), Some("tool_calls"), "{proxy}");
    }
}

#[tokio::test]
async fn embeddings_and_models() {
    let (mock, gw) = setup("").await;
    let r = client()
        .post(format!("{}/openai/embeddings", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "openai:gpt-5-mini", "input": ["one two", "three"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert!(v["data"][0]["embedding"].as_array().unwrap().len() > 1);
    assert_eq!(
        mock.journal().await.last().unwrap()["path"],
        "/v1/embeddings"
    );
    assert_eq!(v["usage"]["prompt_tokens"], 3);

    let v: Value = client()
        .get(format!("{}/openai/models", gw.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"object": "list", "data": [
            {"id": "openai:gpt-5-mini", "object": "model", "created": 0, "owned_by": "openai"},
            {"id": "openai:gpt-4o-mini", "object": "model", "created": 0, "owned_by": "openai"}
        ]})
    );
    let r = client()
        .get(format!("{}/openai/models/openai:gpt-4o-mini", gw.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Both the prefixed and the bare model name are accepted.
    for model in ["openai:gpt-5-mini", "gpt-5-mini"] {
        let r = client()
            .post(format!("{}/openai/chat/completions", gw.url))
            .bearer_auth(KEY)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        assert_eq!(mock.journal().await.last().unwrap()["model"], "gpt-5-mini");
    }
}

#[tokio::test]
async fn dynamic_key_is_taken_from_the_request_and_params_pass_through() {
    let (mock, gw) = setup("").await;
    let r = client()
        .post(format!("{}/local/chat/completions", gw.url))
        .bearer_auth(KEY)
        .header("x-upstream-key", "sk-from-client")
        .json(&json!({
            "model": "llama3", "seed": 42, "n": 1, "stop": ["END"], "logit_bias": {"50256": -100},
            "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let journal = mock.journal().await;
    let last = journal.last().unwrap();
    assert_eq!(last["headers"]["authorization"], "Bearer sk-from-client");
    assert_eq!(last["body"]["seed"], 42);
    assert_eq!(last["body"]["stop"], json!(["END"]));
    assert_eq!(last["body"]["logit_bias"]["50256"], -100);
    assert_eq!(last["body"]["response_format"]["type"], "json_object");
    assert_eq!(
        last["body"]["messages"][0]["content"][1]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
    // Without the header the dynamic-key proxy refuses clearly.
    let r = client()
        .post(format!("{}/local/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-upstream-key")
    );
}

#[tokio::test]
async fn stream_token_tracking_can_be_turned_off_per_proxy() {
    let (mock, gw) = setup("").await;
    let body = json!({"model": "gpt-5-mini", "stream": true, "messages": [{"role": "user", "content": "do not count me"}]});
    let text = client()
        .post(format!("{}/untracked/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sse_events(&text).last().unwrap().1, "[DONE]");
    let journal = mock.journal().await;
    assert!(
        journal.last().unwrap()["body"]
            .get("stream_options")
            .is_none(),
        "usage was asked for"
    );
    // A client that asks for usage still gets it: it is the client's request.
    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let text = client()
        .post(format!("{}/untracked/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&asked)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"usage\""), "{text}");
    let metrics = gw.metrics_after(2.0).await;
    assert!(
        metrics.contains("portcullis_requests_total{") && metrics.contains("proxy=\"untracked\""),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(|l| l.starts_with("portcullis_tokens_total{") && l.contains("proxy=\"untracked\"")),
        "tokens counted for an untracked proxy:\n{metrics}"
    );
}

/// Provider connections are pooled for streamed answers as for buffered
/// ones: once each provider has been called, more calls, streamed or not,
/// open no new connection to it.
#[tokio::test]
async fn streamed_and_buffered_calls_reuse_provider_connections() {
    let (mock, gw) = setup("").await;
    let call = |proxy: &'static str, model: &'static str, stream: bool| {
        let url = format!("{}/{proxy}/chat/completions", gw.url);
        async move {
            let r = client()
                .post(url)
                .bearer_auth(KEY)
                .json(&chat_body(model, stream))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{proxy}");
            let text = r.text().await.unwrap();
            if stream {
                assert_eq!(sse_events(&text).last().unwrap().1, "[DONE]", "{proxy}");
            }
        }
    };
    for (proxy, _, model, _) in CASES {
        call(proxy, model, true).await;
    }
    let before = mock.connections().await;
    for _ in 0..3 {
        for (proxy, _, model, _) in CASES {
            call(proxy, model, true).await;
            call(proxy, model, false).await;
        }
    }
    // Only the second look at the count itself connected.
    assert_eq!(mock.connections().await, before + 1);
}
