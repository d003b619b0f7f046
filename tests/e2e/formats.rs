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

/// `POST {proxy}/v1/responses` with the test key.
async fn post_responses(gateway: &str, proxy: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{gateway}/{proxy}/v1/responses"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The usage a Responses answer reports, against what the mock counted.
fn assert_responses_usage(usage: &Value, mock: &Value, what: &str) {
    let input = mock["usage"]["input_tokens"].as_u64().unwrap();
    let output = mock["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(usage["input_tokens"], input, "{what}: {usage}");
    assert_eq!(usage["output_tokens"], output, "{what}: {usage}");
    assert_eq!(usage["total_tokens"], input + output, "{what}");
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0, "{what}");
    assert_eq!(
        usage["output_tokens_details"]["reasoning_tokens"], 0,
        "{what}"
    );
}

#[tokio::test]
async fn responses_clients_reach_any_provider() {
    let (mock, gw) = setup("").await;
    for (proxy, provider, model) in [
        ("openai", "openai", "gpt-5-mini"),
        ("azure", "azure", "gpt-4o"),
        ("anthropic", "anthropic", "claude-sonnet-4-5"),
        ("gemini", "gemini", "gemini-2.5-flash"),
        (
            "bedrock",
            "bedrock",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
        ("mistral", "mistral", "mistral-small-latest"),
    ] {
        let body = json!({
            "model": model, "instructions": "Be brief.", "input": "Hi from Responses",
            "max_output_tokens": 200, "reasoning": {"effort": "low"}
        });
        let r = post_responses(&gw.url, proxy, &body).await;
        assert_eq!(r.status(), 200, "{proxy}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "response", "{proxy}: {v}");
        assert_eq!(v["status"], "completed", "{proxy}");
        assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{proxy}");
        let item = &v["output"][0];
        assert_eq!(item["type"], "message", "{proxy}: {v}");
        assert_eq!(item["content"][0]["type"], "output_text");
        let text = item["content"][0]["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("Mock reply from {provider} model "))
                && text.ends_with(": Hi from Responses"),
            "{proxy}: {text}"
        );
        let journal = mock.journal().await;
        let call = journal.last().unwrap();
        assert_responses_usage(&v["usage"], call, proxy);
        // The instructions reached the provider: OpenAI and Azure speak the
        // Responses API themselves and get the request as it was sent
        // (with the routed model); the others as their own chat request,
        // the instructions as its system prompt.
        let sent = call["body"].to_string();
        assert!(sent.contains("Be brief."), "{proxy}: {sent}");
        let path = call["path"].as_str().unwrap();
        match proxy {
            "openai" | "azure" => {
                let expected = if proxy == "openai" {
                    "/v1/responses"
                } else {
                    "/openai/v1/responses"
                };
                assert_eq!(path, expected, "{proxy}");
                let mut as_sent = body.clone();
                if proxy == "azure" {
                    as_sent["model"] = json!("gpt-4o-deploy");
                }
                assert_eq!(call["body"], as_sent, "{proxy}");
            }
            _ => assert!(!path.ends_with("/responses"), "{proxy}: {path}"),
        }

        // Streamed: OpenAI's typed events, the usage in response.completed.
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let r = post_responses(&gw.url, proxy, &sbody).await;
        assert_eq!(r.status(), 200, "{proxy}");
        let stream = r.text().await.unwrap();
        let events = sse_events(&stream);
        let mut out = String::new();
        let mut completed = None;
        for (i, (e, d)) in events.iter().enumerate() {
            let v: Value = serde_json::from_str(d).unwrap();
            assert_eq!(e.as_deref(), v["type"].as_str(), "{proxy}: {d}");
            assert_eq!(v["sequence_number"], i as u64, "{proxy}");
            match e.as_deref() {
                Some("response.output_text.delta") => out.push_str(v["delta"].as_str().unwrap()),
                Some("response.completed") => completed = Some(v["response"].clone()),
                _ => {}
            }
        }
        assert_eq!(events[0].0.as_deref(), Some("response.created"), "{proxy}");
        assert_eq!(out, text, "{proxy}: {stream}");
        let completed = completed.unwrap_or_else(|| panic!("{proxy}: {stream}"));
        assert_eq!(completed["output"][0]["content"][0]["text"], text);
        let journal = mock.journal().await;
        assert_responses_usage(&completed["usage"], journal.last().unwrap(), proxy);
    }
}

#[tokio::test]
async fn responses_tool_calls_and_errors() {
    let (mock, gw) = setup("").await;
    let tools = json!([{"type": "function", "name": "get_weather",
        "description": "Weather by city", "parameters": {"type": "object"}}]);
    for proxy in ["openai", "anthropic", "gemini"] {
        let model = match proxy {
            "openai" => "gpt-5-mini",
            "anthropic" => "claude-sonnet-4-5",
            _ => "gemini-2.5-flash",
        };
        let r = post_responses(
            &gw.url,
            proxy,
            &json!({"model": model, "input": "Weather in Rome", "tools": tools}),
        )
        .await;
        let v: Value = r.json().await.unwrap();
        let call = v["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("{proxy}: {v}"))
            .clone();
        assert_eq!(call["name"], "get_weather", "{proxy}");
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["input"], "Weather in Rome", "{proxy}");

        // The call and its output go back as input items and reach the
        // provider as its own tool call and result.
        let r = post_responses(
            &gw.url,
            proxy,
            &json!({"model": model, "tools": tools, "input": [
                {"role": "user", "content": "Weather in Rome"},
                call,
                {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
            ]}),
        )
        .await;
        assert_eq!(r.status(), 200, "{proxy}");
        let journal = mock.journal().await;
        let sent = journal.last().unwrap()["body"].to_string();
        // (Gemini has no call ids: it pairs results with calls by name.)
        let call_ref = match proxy {
            "gemini" => "get_weather",
            _ => call["call_id"].as_str().unwrap(),
        };
        assert!(
            sent.contains("sunny") && sent.contains(call_ref),
            "{proxy}: {sent}"
        );

        // Streamed: the call's arguments as function_call_arguments events.
        let r = post_responses(
            &gw.url,
            proxy,
            &json!({"model": model, "input": "Weather in Rome", "tools": tools, "stream": true}),
        )
        .await;
        let events = sse_events(&r.text().await.unwrap());
        let done = events
            .iter()
            .find(|(e, _)| e.as_deref() == Some("response.function_call_arguments.done"))
            .unwrap_or_else(|| panic!("{proxy}: {events:?}"));
        let done: Value = serde_json::from_str(&done.1).unwrap();
        let args: Value = serde_json::from_str(done["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["input"], "Weather in Rome", "{proxy}");
    }

    // Structured output and images reach the provider in its own terms.
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let image = "data:image/png;base64,iVBORw0KGgo=";
    for proxy in ["openai", "anthropic", "gemini"] {
        let model = match proxy {
            "openai" => "gpt-5-mini",
            "anthropic" => "claude-sonnet-4-5",
            _ => "gemini-2.5-flash",
        };
        let body = json!({"model": model,
            "text": {"format": {"type": "json_schema", "name": "place", "schema": schema}},
            "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "Where is this?"},
                {"type": "input_image", "image_url": image}]}]});
        let r = post_responses(&gw.url, proxy, &body).await;
        assert_eq!(r.status(), 200, "{proxy}");
        let journal = mock.journal().await;
        let sent = &journal.last().unwrap()["body"];
        let text = sent.to_string();
        assert!(text.contains("iVBORw0KGgo="), "{proxy}: {text}");
        match proxy {
            // As it was sent: OpenAI speaks the Responses API.
            "openai" => assert_eq!(*sent, body),
            "gemini" => {
                assert_eq!(
                    sent["generationConfig"]["responseMimeType"], "application/json",
                    "{text}"
                )
            }
            _ => {
                let system = sent["system"].as_str().unwrap_or_default();
                assert!(
                    system.contains("JSON Schema") && system.contains("\"city\""),
                    "{proxy}: the schema is in the system prompt: {text}"
                )
            }
        }
    }

    // Bad input is a 400 in OpenAI's envelope naming the parameter, and
    // the provider is not called.
    let before = mock.journal().await.len();
    for (body, param) in [
        (json!({"model": "gpt-5-mini"}), "input"),
        (json!({"model": "gpt-5-mini", "input": 3}), "input"),
        (
            json!({"model": "gpt-5-mini", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "gpt-5-mini", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
    ] {
        let r = post_responses(&gw.url, "openai", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    assert_eq!(mock.journal().await.len(), before);
}

/// `responses` is a resource of its own: a proxy offers it unless its
/// `resources` leave it out, and a key's scope may allow or refuse it.
#[tokio::test]
async fn the_responses_resource_follows_proxy_resources_and_key_scopes() {
    let mock = crate::harness::Mock::start().await;
    let mut config = crate::all_providers_config(&mock, "");
    config.push_str(concat!(
        "  - { name: chatonly, resources: [\"chat/completions\"], routes: [{ provider: openai }], keys: [{ name: tester, env: PC_KEY }] }\n",
        "  - { name: scoped, routes: [{ provider: openai }], keys: [",
        "{ name: chat-key, env: PC_CHAT_KEY, scope: { resources: [\"chat/completions\"] } }, ",
        "{ name: responses-key, env: PC_RESPONSES_KEY, scope: { resources: [responses] } }] }\n",
    ));
    let mut env = crate::ALL_PROVIDERS_ENV.to_vec();
    env.extend([
        ("PC_CHAT_KEY", "pk-chat-only"),
        ("PC_RESPONSES_KEY", "pk-responses-only"),
    ]);
    let gw = crate::harness::Gateway::start_with_env(&config, &env).await;
    let body = json!({"model": "gpt-5-mini", "input": "hi"});
    let chat = json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]});
    let call = async |path: &str, key: &str, body: &Value| {
        let r = client()
            .post(format!("{}{path}", gw.url))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    let (status, v) = call("/chatonly/responses", KEY, &body).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(call("/chatonly/chat/completions", KEY, &chat).await.0, 200);
    let (status, v) = call("/scoped/responses", "pk-chat-only", &body).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "resource_not_allowed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`responses`"),
        "{v}"
    );
    assert_eq!(
        call("/scoped/chat/completions", "pk-chat-only", &chat)
            .await
            .0,
        200
    );
    assert_eq!(
        call("/scoped/responses", "pk-responses-only", &body)
            .await
            .0,
        200
    );
    let (status, v) = call("/scoped/chat/completions", "pk-responses-only", &chat).await;
    assert_eq!(status, 403, "{v}");
}

/// `POST {base}/completions` (legacy text completions) and
/// `POST {base}/moderations` are forwarded as they came to OpenAI-format
/// routes, with the usage counted; other provider kinds refuse them
/// clearly, and key scopes restrict them as resources of their own.
#[tokio::test]
async fn legacy_completions_and_moderations_reach_openai_format_routes() {
    let mock = crate::harness::Mock::start().await;
    let mut config = crate::all_providers_config(&mock, "");
    config.push_str(concat!(
        "  - { name: scoped, routes: [{ provider: openai }], keys: [",
        "{ name: chat-key, env: PC_CHAT_KEY, scope: { resources: [\"chat/completions\"] } }, ",
        "{ name: completions-key, env: PC_COMPLETIONS_KEY, scope: { resources: [completions] } }] }\n",
    ));
    let mut env = crate::ALL_PROVIDERS_ENV.to_vec();
    env.extend([
        ("PC_CHAT_KEY", "pk-chat-only"),
        ("PC_COMPLETIONS_KEY", "pk-completions-only"),
    ]);
    let gw = crate::harness::Gateway::start_with_env(&config, &env).await;
    let post = async |path: &str, key: &str, body: &Value| {
        let r = client()
            .post(format!("{}{path}", gw.url))
            .bearer_auth(key)
            .header("x-upstream-key", "sk-local")
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let expected = "Mock reply from openai model gpt-5-mini: hello world";
    let plain =
        json!({"model": "gpt-5-mini", "prompt": "hello world", "suffix": "!", "echo": false});

    // Whole: the provider's answer as it came, the routed model, the
    // legacy parameters passed through.
    for proxy in ["openai", "local"] {
        let (status, text) = post(&format!("/{proxy}/v1/completions"), KEY, &plain).await;
        assert_eq!(status, 200, "{proxy}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["object"], "text_completion", "{v}");
        assert_eq!(v["choices"][0]["text"], expected);
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10})
        );
        let journal = mock.journal().await;
        let call = journal.last().unwrap();
        assert_eq!(call["path"], "/v1/completions");
        assert_eq!(
            (&call["body"]["suffix"], &call["body"]["echo"]),
            (&json!("!"), &json!(false))
        );
    }

    // Azure: the deployment in the path, its `api-key`.
    let (status, text) = post("/azure/completions", KEY, &plain).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], "gpt-4o-deploy", "{v}");
    assert_eq!(v["usage"]["total_tokens"], 10, "{v}");
    let journal = mock.journal().await;
    let call = journal.last().unwrap();
    assert_eq!(
        call["path"],
        "/openai/deployments/gpt-4o-deploy/completions"
    );

    // Streamed, with and without the usage chunk the client asks for: the
    // gateway always asks for it, and shows it only when asked.
    for include_usage in [true, false] {
        let mut body = plain.clone();
        body["stream"] = json!(true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let (status, text) = post("/openai/completions", KEY, &body).await;
        assert_eq!(status, 200, "{text}");
        let events = sse_events(&text);
        assert_eq!(events.last().unwrap().1, "[DONE]", "{text}");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        let joined: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(joined, expected);
        let usage: Vec<&Value> = chunks.iter().filter(|c| c["usage"].is_object()).collect();
        if include_usage {
            assert_eq!(usage.len(), 1, "{text}");
            assert_eq!(usage[0]["usage"]["total_tokens"], 10);
        } else {
            assert!(usage.is_empty(), "{text}");
        }
        let journal = mock.journal().await;
        assert_eq!(
            journal.last().unwrap()["body"]["stream_options"]["include_usage"],
            true
        );
    }

    // Provider kinds without the endpoint: a 400 naming why, no provider call.
    let before = mock.journal().await.len();
    for (proxy, model) in [
        ("anthropic", "claude-sonnet-4-5"),
        ("gemini", "gemini-2.5-flash"),
        ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("mistral", "mistral-small-latest"),
    ] {
        let body = json!({"model": model, "prompt": "hello world"});
        let (status, text) = post(&format!("/{proxy}/completions"), KEY, &body).await;
        assert_eq!(status, 400, "{proxy}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does not offer the legacy `/completions` API"),
            "{v}"
        );
    }

    // Moderations: the OpenAI-compatible server's answer as it came (the
    // `openai` provider lists its models, and no moderation model); Azure
    // and Mistral refuse.
    let moderation = json!({"input": ["I will kill the process", "hello"]});
    let (status, text) = post("/local/moderations", KEY, &moderation).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], "omni-moderation-latest");
    assert_eq!(
        (&v["results"][0]["flagged"], &v["results"][1]["flagged"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(v["results"][0]["categories"]["violence"], true);
    for (proxy, model) in [
        ("azure", "omni-moderation-latest"),
        ("mistral", "mistral-small-latest"),
        ("anthropic", "claude-sonnet-4-5"),
    ] {
        let mut body = moderation.clone();
        body["model"] = json!(model);
        let (status, text) = post(&format!("/{proxy}/moderations"), KEY, &body).await;
        assert_eq!(status, 400, "{proxy}: {text}");
        assert!(
            text.contains("does not offer OpenAI's `/moderations` API"),
            "{text}"
        );
    }
    assert_eq!(mock.journal().await.len(), before + 1);

    // Key scopes: each endpoint is a resource of its own.
    let (status, text) = post("/scoped/completions", "pk-chat-only", &plain).await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("resource_not_allowed") && text.contains("`completions`"),
        "{text}"
    );
    assert_eq!(
        post("/scoped/completions", "pk-completions-only", &plain)
            .await
            .0,
        200
    );
    let mut body = moderation.clone();
    body["model"] = json!("gpt-5-mini");
    let (status, text) = post("/scoped/moderations", "pk-completions-only", &body).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("`moderations`"), "{text}");

    // Tokens and spend: three completions through `openai` (whole and two
    // streams), each 2 in and 8 out, the stream without the usage chunk
    // counted too; gpt-5-mini's shipped price (0.25 in, 2.00 out per
    // million).
    let m = crate::harness::metrics_when(
        &gw.ops_url,
        &[
            "portcullis_tokens_total{",
            "proxy=\"openai\"",
            "type=\"output\"",
        ],
        24.0,
    )
    .await;
    let tokens = |kind: &str| {
        crate::harness::sum_of(
            &m,
            &[
                "portcullis_tokens_total{",
                "proxy=\"openai\"",
                &format!("type=\"{kind}\""),
            ],
        )
    };
    assert_eq!((tokens("input"), tokens("output")), (6.0, 24.0), "{m}");
    let cost = crate::harness::sum_of(&m, &["portcullis_cost_total{", "proxy=\"openai\""]);
    let want = (6.0 * 0.25 + 24.0 * 2.0) / 1e6;
    assert!((cost - want).abs() < 1e-12, "{cost} != {want}\n{m}");
}

/// A legacy completions stream the provider cuts ends with an OpenAI error
/// event and no `[DONE]` once text reached the client; cut before its
/// first chunk, another route may take it (failover) as for chat.
#[tokio::test]
async fn a_cut_completions_stream_ends_with_an_error_event_or_fails_over() {
    let mock = crate::harness::Mock::start().await;
    let mut config = crate::all_providers_config(&mock, "");
    config.push_str(concat!(
        "  - { name: failover, routing: { strategy: failover }, keys: [{ name: tester, env: PC_KEY }], routes: [",
        "{ name: first, provider: openai, priority: 1 }, { name: second, provider: openai, priority: 2 }] }\n",
    ));
    let gw = crate::harness::Gateway::start_with_env(&config, &crate::ALL_PROVIDERS_ENV).await;
    let body = json!({"model": "gpt-5-mini", "prompt": "a long answer please", "stream": true});
    let post = async |proxy: &str| {
        let r = client()
            .post(format!("{}/{proxy}/completions", gw.url))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let route = r
            .headers()
            .get("x-portcullis-route")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), route, r.text().await.unwrap())
    };
    mock.behave(json!({"cut_after_chunks": 2, "times": 1}))
        .await;
    let (status, _, text) = post("openai").await;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    let texts = events
        .iter()
        .filter(|(_, d)| d.contains("text_completion"))
        .count();
    assert_eq!(texts, 2, "{text}");
    let (_, last) = events.last().unwrap();
    assert_ne!(last, "[DONE]", "{text}");
    let v: Value = serde_json::from_str(last).unwrap();
    assert!(v["error"]["message"].is_string(), "{text}");

    mock.behave(json!({"cut_after_chunks": 0, "times": 1}))
        .await;
    let (status, route, text) = post("failover").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(route.as_deref(), Some("second"));
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}
