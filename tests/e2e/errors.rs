//! Every failure a client can meet is an OpenAI error envelope with the
//! right status.

use serde_json::{Value, json};

use crate::harness::sse_events;
use crate::{KEY, client, setup};

async fn envelope(r: reqwest::Response) -> Value {
    let v: Value = r.json().await.expect("JSON error body");
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    v
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn client_errors_are_openai_envelopes() {
    let (_mock, gw) = setup("limits: { max_body_bytes: 4096 }").await;
    let url = format!("{}/openai/chat/completions", gw.url);

    // Unknown proxy.
    let r = client()
        .post(format!("{}/nope/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    envelope(r).await;
    // Unknown resource on a known proxy.
    let r = client()
        .post(format!("{}/openai/audio/speech", gw.url))
        .bearer_auth(KEY)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    envelope(r).await;
    // Wrong method.
    let r = client().get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 405);
    envelope(r).await;
    // No key, wrong key.
    let r = client()
        .post(&url)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(envelope(r).await["error"]["type"], "authentication_error");
    let r = client()
        .post(&url)
        .bearer_auth("pk-wrong")
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(envelope(r).await["error"]["code"], "invalid_api_key");
    // The key is also accepted in api-key and x-api-key.
    for h in ["api-key", "x-api-key"] {
        let r = client()
            .post(&url)
            .header(h, KEY)
            .json(&hello("gpt-5-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{h}");
    }
    // Malformed JSON, and a bad field named by its path.
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(envelope(r).await["error"]["type"], "invalid_request_error");
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "wizard", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(envelope(r).await["error"]["param"], "messages[0].role");
    // Body over the limit.
    let big =
        json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "x".repeat(8000)}]});
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(envelope(r).await["error"]["code"], "request_too_large");
    // A model the proxy does not serve.
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&hello("gpt-1-imaginary"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v = envelope(r).await;
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
}

#[tokio::test]
async fn provider_errors_are_passed_on_with_their_status() {
    let (mock, gw) = setup("timeouts: { read_ms: 700 }").await;
    let url = format!("{}/openai/chat/completions", gw.url);

    mock.behave(json!({"status": 500, "times": 1})).await;
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let v = envelope(r).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai returned 500"),
        "{v}"
    );

    mock.behave(json!({"status": 429, "retry_after": 7, "times": 1}))
        .await;
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    envelope(r).await;

    // Same for a provider with another error shape.
    mock.behave(json!({"status": 503, "times": 1})).await;
    let r = client()
        .post(format!("{}/anthropic/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&hello("claude-sonnet-4-5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    envelope(r).await;

    // A provider slower than the read timeout.
    mock.behave(json!({"delay_ms": 3000, "times": 1})).await;
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(envelope(r).await["error"]["code"], "upstream_timeout");

    // A provider that cannot be reached.
    let r = client()
        .post(format!("{}/nowhere/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(envelope(r).await["error"]["code"], "upstream_unavailable");

    // After all that, the gateway still serves.
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_stream_cut_by_the_provider_ends_with_an_error_event() {
    let (mock, gw) = setup("").await;
    for (proxy, model) in [
        ("openai", "gpt-5-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ] {
        mock.behave(json!({"cut_after_chunks": 2, "times": 1}))
            .await;
        let r = client()
            .post(format!("{}/{proxy}/chat/completions", gw.url))
            .bearer_auth(KEY)
            .json(&json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "a long answer please"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{proxy}");
        let body = r.text().await.unwrap();
        let events = sse_events(&body);
        let (_, last) = events.last().unwrap();
        assert_ne!(last, "[DONE]", "{proxy}: {body}");
        let v: Value = serde_json::from_str(last).unwrap();
        assert!(v["error"]["message"].is_string(), "{proxy}: {body}");
    }
    // A provider error before the first byte is a plain HTTP error.
    mock.behave(json!({"status": 500, "times": 1})).await;
    let r = client()
        .post(format!("{}/openai/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    envelope(r).await;
}

/// A client that gives up while the provider has not answered yet ends the
/// request there: the gateway stops waiting, drops the provider call, and
/// counts a client cancellation (499), long before the provider would
/// have answered. Chat (streamed and not) and embeddings.
#[tokio::test]
async fn a_client_that_leaves_before_the_answer_stops_the_provider_call() {
    let (mock, gw) = setup("").await;
    let url = format!("{}/openai/chat/completions", gw.url);
    // A whole chat answer, a stream's first token, an embeddings answer.
    let cases = [
        ("/chat/completions", false),
        ("/chat/completions", true),
        ("/embeddings", false),
    ];
    for (n, (endpoint, stream)) in cases.into_iter().enumerate() {
        mock.behave(json!({"path_contains": endpoint, "delay_ms": 20000, "times": 1}))
            .await;
        let started = std::time::Instant::now();
        let mut body = hello("gpt-5-mini");
        body["stream"] = json!(stream);
        if endpoint == "/embeddings" {
            body = json!({"model": "gpt-5-mini", "input": "hello"});
        }
        let r = client()
            .post(format!("{}/openai{endpoint}", gw.url))
            .bearer_auth(KEY)
            .json(&body)
            .timeout(std::time::Duration::from_millis(300))
            .send()
            .await;
        assert!(r.is_err(), "the client gave up");
        let gave_up_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let cancelled = loop {
            let count = gw
                .metric_sum(&[
                    "portcullis_requests_total{",
                    "error_type=\"client_cancelled\"",
                ])
                .await;
            if count >= (n + 1) as f64 || started.elapsed().as_secs() >= 15 {
                break count;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(
            cancelled,
            (n + 1) as f64,
            "the request ended as a client cancellation before the provider answered ({endpoint}, stream: {stream})"
        );
        assert!(
            started.elapsed().as_secs() < 15,
            "ended while the provider still waited"
        );
        // The provider saw the call cancelled (its connection closed)
        // within 100 ms of the client leaving, not when it would have
        // answered 20 s later.
        // (Polled: the gateway may log the request a moment before it
        // drops the provider connection.)
        let mut entry = None;
        for _ in 0..40 {
            entry = mock.journal().await.into_iter().rev().find(|e| {
                e["stream"] == json!(stream)
                    && e["path"].as_str().is_some_and(|p| p.ends_with(endpoint))
            });
            if entry.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let entry = entry.expect("the provider call is journaled as cancelled");
        assert_eq!(entry["status"], 499, "cancelled, not answered: {entry}");
        let at = entry["cancelled_at_ms"]
            .as_u64()
            .expect("a cancellation time");
        assert!(
            at <= gave_up_ms + 100,
            "the provider call was cancelled {} ms after the client left ({endpoint}, stream: {stream})",
            at.saturating_sub(gave_up_ms)
        );
    }
    // The provider was not left holding the call: the next request is
    // answered at once on a new or pooled connection.
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&hello("gpt-5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
