//! The Anthropic Messages and Gemini inbound formats, against providers of
//! other formats: every inbound format reaches every provider.

use serde_json::{Value, json};

use crate::harness::sse_events;
use crate::{KEY, client, setup};

#[tokio::test]
async fn anthropic_clients_reach_any_provider() {
    let (mock, gw) = setup("").await;
    for (proxy, provider, model) in [
        ("openai", "openai", "gpt-5-mini"),
        ("gemini", "gemini", "gemini-2.5-flash"),
        ("anthropic", "anthropic", "claude-sonnet-4-5"),
    ] {
        let body = json!({
            "model": model, "max_tokens": 256, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi from Claude SDK"}]
        });
        let r = client()
            .post(format!("{}/{proxy}/v1/messages", gw.url))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{proxy}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "message", "{proxy}: {v}");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["content"][0]["type"], "text");
        assert_eq!(
            v["content"][0]["text"],
            format!("Mock reply from {provider} model {model}: Hi from Claude SDK")
        );
        assert_eq!(v["stop_reason"], "end_turn");
        let journal = mock.journal().await;
        let last = journal.last().unwrap();
        assert_eq!(
            v["usage"]["output_tokens"], last["usage"]["output_tokens"],
            "{proxy}"
        );

        // Streamed, as the Anthropic SDK reads it.
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let text = client()
            .post(format!("{}/{proxy}/v1/messages", gw.url))
            .header("x-api-key", KEY)
            .json(&sbody)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let events = sse_events(&text);
        let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{proxy}: {text}");
        assert_eq!(names.last(), Some(&"message_stop"), "{proxy}");
        assert!(names.contains(&"content_block_delta") && names.contains(&"message_delta"));
        let mut out = String::new();
        let mut output_tokens = None;
        for (e, d) in &events {
            let v: Value = serde_json::from_str(d).unwrap();
            if e.as_deref() == Some("content_block_delta") {
                out.push_str(v["delta"]["text"].as_str().unwrap_or(""));
            }
            if e.as_deref() == Some("message_delta") {
                output_tokens = v["usage"]["output_tokens"].as_u64();
                assert_eq!(v["delta"]["stop_reason"], "end_turn");
            }
        }
        assert_eq!(
            out,
            format!("Mock reply from {provider} model {model}: Hi from Claude SDK")
        );
        let journal = mock.journal().await;
        assert_eq!(
            output_tokens,
            journal.last().unwrap()["usage"]["output_tokens"].as_u64(),
            "{proxy}"
        );
    }
    // Errors come in Anthropic's shape on this format.
    let r = client()
        .post(format!("{}/openai/v1/messages", gw.url))
        .header("x-api-key", "wrong")
        .json(&json!({"model": "gpt-5-mini", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn gemini_clients_reach_any_provider() {
    let (mock, gw) = setup("").await;
    for (proxy, provider, model) in [
        ("openai", "openai", "gpt-5-mini"),
        (
            "bedrock",
            "bedrock",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
        ("gemini", "gemini", "gemini-2.5-flash"),
    ] {
        let body =
            json!({"contents": [{"role": "user", "parts": [{"text": "Hi from Gemini SDK"}]}]});
        let r = client()
            .post(format!(
                "{}/{proxy}/v1beta/models/{model}:generateContent",
                gw.url
            ))
            .header("x-goog-api-key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{proxy}");
        let v: Value = r.json().await.unwrap();
        let expected = format!("Mock reply from {provider} model {model}: Hi from Gemini SDK");
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            expected.as_str(),
            "{proxy}: {v}"
        );
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        let journal = mock.journal().await;
        let last = journal.last().unwrap();
        assert_eq!(
            v["usageMetadata"]["candidatesTokenCount"], last["usage"]["output_tokens"],
            "{proxy}"
        );

        let text = client()
            .post(format!(
                "{}/{proxy}/models/{model}:streamGenerateContent?alt=sse",
                gw.url
            ))
            .header("x-goog-api-key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut out = String::new();
        let mut total = None;
        for (_, d) in sse_events(&text) {
            let v: Value = serde_json::from_str(&d).unwrap();
            if let Some(t) = v["candidates"][0]["content"]["parts"][0]["text"].as_str() {
                out.push_str(t);
            }
            if let Some(n) = v["usageMetadata"]["totalTokenCount"].as_u64() {
                total = Some(n);
            }
        }
        assert_eq!(out, expected, "{proxy}: {text}");
        let journal = mock.journal().await;
        let u = &journal.last().unwrap()["usage"];
        assert_eq!(
            total,
            Some(u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()),
            "{proxy}"
        );
    }
    // The key may also come as ?key=, as Gemini clients send it.
    let r = client()
        .post(format!(
            "{}/openai/models/gpt-5-mini:generateContent?key={KEY}",
            gw.url
        ))
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Errors come in Gemini's shape on this format.
    let r = client()
        .post(format!(
            "{}/openai/models/gpt-5-mini:generateContent",
            gw.url
        ))
        .header("x-goog-api-key", KEY)
        .json(&json!({"contents": "not a list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
}
