//! Routing across several providers: model-based with fallback, weighted,
//! failover with retry-after, streams, passive health, semantic routing
//! and the semantic prompt guard. Each route is its own mock LLM, so its
//! journal counts exactly the calls that route received.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Gateway, Mock, TempDir, sse_events};
use crate::{KEY, client};

const KEYS: &str = "keys: [{ name: tester, env: PC_KEY }]";

async fn gateway(config: &str) -> Gateway {
    Gateway::start_with_env(config, &[("PC_KEY", KEY)]).await
}

/// Status, `x-portcullis-route` and JSON body of a chat request.
async fn chat(gw: &Gateway, proxy: &str, model: &str, text: &str) -> (u16, String, Value) {
    let r = client()
        .post(format!("{}/{proxy}/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "request to the gateway failed: {e}\ngateway log:\n{}",
                gw.log()
            )
        });
    let status = r.status().as_u16();
    let route = route_of(&r);
    (status, route, r.json().await.unwrap_or(Value::Null))
}

fn route_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-portcullis-route")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn reply(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no reply in {body}"))
}

/// Provider calls a mock received for `path_part`.
async fn calls(mock: &Mock, path_part: &str) -> usize {
    mock.journal()
        .await
        .iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.contains(path_part)))
        .count()
}

async fn chats(mock: &Mock) -> usize {
    calls(mock, "/chat/completions").await
}

async fn reset(mock: &Mock) {
    let r = client()
        .delete(format!("{}/_mock/behaviour", mock.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// The value of the sample of `name` with exactly these labels (0 if absent).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| l.split_once("} "))
        .filter(|(ls, _)| {
            let have: Vec<&str> = ls.split("\",").map(|p| p.trim_end_matches('"')).collect();
            have.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| have.contains(&format!("{k}=\"{v}").as_str()))
        })
        .map(|(_, v)| v.trim().parse().unwrap_or(f64::NAN))
        .sum()
}

#[tokio::test]
async fn model_based_routing_with_and_without_fallback() {
    let (m1, m2) = (Mock::start().await, Mock::start().await);
    let gw = gateway(&format!(
        r#"
providers:
  - {{ name: openai, type: openai, base_url: "{}/v1", api_key: sk, models: [gpt-4o, gpt-4o-mini] }}
  - {{ name: anthropic, type: anthropic, base_url: "{}", api_key: ant, models: [claude-sonnet-4-5] }}
proxies:
  - name: mb
    routes: [{{ provider: openai }}, {{ provider: anthropic }}]
    routing:
      strategy: model-based
      aliases: {{ smart: claude-sonnet-4-5 }}
      fallback: {{ route: openai, model: gpt-4o-mini }}
    {KEYS}
  - name: strict
    routes: [{{ provider: openai }}, {{ provider: anthropic }}]
    routing: {{ strategy: model-based }}
    {KEYS}
"#,
        m1.url, m2.url
    ))
    .await;

    // The model picks the route: exact names, an alias, a provider prefix.
    for (model, route, text) in [
        (
            "gpt-4o",
            "openai",
            "Mock reply from openai model gpt-4o: hi",
        ),
        (
            "mb:gpt-4o-mini",
            "openai",
            "Mock reply from openai model gpt-4o-mini: hi",
        ),
        (
            "claude-sonnet-4-5",
            "anthropic",
            "Mock reply from anthropic model claude-sonnet-4-5: hi",
        ),
        (
            "smart",
            "anthropic",
            "Mock reply from anthropic model claude-sonnet-4-5: hi",
        ),
        (
            "anthropic/claude-sonnet-4-5",
            "anthropic",
            "Mock reply from anthropic model claude-sonnet-4-5: hi",
        ),
        // No route serves it: the fallback with its target model.
        (
            "llama-3",
            "openai",
            "Mock reply from openai model gpt-4o-mini: hi",
        ),
    ] {
        let (status, r, body) = chat(&gw, "mb", model, "hi").await;
        assert_eq!(
            (status, r.as_str(), reply(&body)),
            (200, route, text),
            "{model}"
        );
    }
    assert_eq!((chats(&m1).await, calls(&m2, "/v1/messages").await), (3, 3));

    // The matched route fails: the fallback takes the request.
    m2.behave(json!({"status": 500, "times": 1})).await;
    let (status, r, body) = chat(&gw, "mb", "claude-sonnet-4-5", "hi").await;
    assert_eq!((status, r.as_str()), (200, "openai"));
    assert_eq!(reply(&body), "Mock reply from openai model gpt-4o-mini: hi");
    assert_eq!(calls(&m2, "/v1/messages").await, 4);

    // Without a fallback: an unknown model is a 404 naming it, and a
    // failing route's error is the answer, naming the route.
    let (status, r, body) = chat(&gw, "strict", "llama-3", "hi").await;
    assert_eq!((status, r.as_str()), (404, ""));
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`llama-3`"),
        "{body}"
    );
    m2.behave(json!({"status": 503, "times": 1})).await;
    let (status, r, body) = chat(&gw, "strict", "claude-sonnet-4-5", "hi").await;
    assert_eq!((status, r.as_str()), (503, "anthropic"));
    assert_eq!(body["error"]["code"], "upstream_503");
    assert_eq!(chats(&m1).await, 4, "no fallback was tried");

    // Aliases are listed as models.
    let models: Value = client()
        .get(format!("{}/mb/models", gw.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "mb:gpt-4o",
            "mb:gpt-4o-mini",
            "mb:claude-sonnet-4-5",
            "mb:smart"
        ]
    );
}

#[tokio::test]
async fn weighted_routing_follows_weights_and_skips_ejected_routes() {
    let (m1, m2) = (Mock::start().await, Mock::start().await);
    let gw = gateway(&format!(
        r#"
providers:
  - {{ name: east, type: openai, base_url: "{}/v1", api_key: sk }}
  - {{ name: west, type: openai, base_url: "{}/v1", api_key: sk }}
proxies:
  - name: w
    routes:
      - {{ provider: east, weight: 3 }}
      - {{ provider: west, weight: 1 }}
    routing: {{ strategy: weighted, health: {{ failures: 1, cooldown_ms: 600000 }} }}
    {KEYS}
"#,
        m1.url, m2.url
    ))
    .await;
    let n = 400;
    let mut east = 0;
    for _ in 0..n {
        let (status, route, _) = chat(&gw, "w", "gpt-4o", "hi").await;
        assert_eq!(status, 200);
        match route.as_str() {
            "east" => east += 1,
            "west" => {}
            other => panic!("route {other}"),
        }
    }
    // 300 expected; the binomial standard deviation is 8.7, so 60 is
    // nearly seven of them.
    assert!((240..=360).contains(&east), "east served {east} of {n}");
    assert_eq!((chats(&m1).await, chats(&m2).await), (east, n - east));

    // West starts failing: its first failure ejects it (and that request
    // fails over to east); then it gets nothing.
    m2.behave(json!({"status": 500})).await;
    let before = chats(&m2).await;
    let mut attempts = 0;
    while chats(&m2).await == before {
        let (status, route, _) = chat(&gw, "w", "gpt-4o", "hi").await;
        assert_eq!((status, route.as_str()), (200, "east"));
        attempts += 1;
        assert!(attempts < 200, "west was never picked");
    }
    for _ in 0..60 {
        let (status, route, _) = chat(&gw, "w", "gpt-4o", "hi").await;
        assert_eq!((status, route.as_str()), (200, "east"));
    }
    assert_eq!(chats(&m2).await, before + 1);
    let text = gw.metrics_after((n + attempts + 60) as f64).await;
    assert_eq!(
        sample(
            &text,
            "portcullis_route_healthy",
            &[("proxy", "w"), ("route", "west")]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "portcullis_route_healthy",
            &[("proxy", "w"), ("route", "east")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "portcullis_route_failovers_total",
            &[("proxy", "w"), ("route", "west"), ("reason", "status_5xx")]
        ),
        1.0
    );
}

#[tokio::test]
async fn failover_moves_past_500_and_429_and_honours_retry_after() {
    let (m1, m2, m3) = (
        Mock::start().await,
        Mock::start().await,
        Mock::start().await,
    );
    let gw = gateway(&format!(
        r#"
providers:
  - {{ name: a, type: openai, base_url: "{}/v1", api_key: sk }}
  - {{ name: b, type: openai, base_url: "{}/v1", api_key: sk }}
  - {{ name: c, type: openai, base_url: "{}/v1", api_key: sk }}
proxies:
  - name: fo
    routes: [{{ provider: a }}, {{ provider: b }}, {{ provider: c }}]
    routing:
      strategy: failover
      health: {{ failures: 100 }}
      retry: {{ max_retry_after_ms: 2000 }}
    {KEYS}
"#,
        m1.url, m2.url, m3.url
    ))
    .await;
    m1.behave(json!({"status": 500})).await;
    // b asks for 30 s; the proxy honours at most 2 s.
    m2.behave(json!({"status": 429, "retry_after": 30})).await;

    let (status, route, body) = chat(&gw, "fo", "gpt-4o", "hi").await;
    assert_eq!((status, route.as_str()), (200, "c"));
    assert_eq!(reply(&body), "Mock reply from openai model gpt-4o: hi");
    assert_eq!(
        (chats(&m1).await, chats(&m2).await, chats(&m3).await),
        (1, 1, 1)
    );

    // Within b's retry-after, b is not called: a (still failing) then c.
    let (status, route, _) = chat(&gw, "fo", "gpt-4o", "hi").await;
    assert_eq!((status, route.as_str()), (200, "c"));
    assert_eq!(
        (chats(&m1).await, chats(&m2).await, chats(&m3).await),
        (2, 1, 2)
    );

    // After the bound (not the 30 s asked), the next request probes b
    // first, and b now serves.
    reset(&m2).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, route, _) = chat(&gw, "fo", "gpt-4o", "hi").await;
    assert_eq!((status, route.as_str()), (200, "b"));
    assert_eq!(
        (chats(&m1).await, chats(&m2).await, chats(&m3).await),
        (2, 2, 2)
    );
    // Back in rotation: the priority order applies again.
    let (status, route, _) = chat(&gw, "fo", "gpt-4o", "hi").await;
    assert_eq!((status, route.as_str()), (200, "b"));
    assert_eq!(
        (chats(&m1).await, chats(&m2).await, chats(&m3).await),
        (3, 3, 2)
    );

    let text = gw.metrics_after(4.0).await;
    let f = |route, reason| {
        sample(
            &text,
            "portcullis_route_failovers_total",
            &[("proxy", "fo"), ("route", route), ("reason", reason)],
        )
    };
    assert_eq!((f("a", "status_5xx"), f("b", "status_429")), (3.0, 1.0));
    assert_eq!(
        sample(
            &text,
            "portcullis_route_ejections_total",
            &[("proxy", "fo"), ("route", "b"), ("reason", "rate_limited")]
        ),
        1.0
    );
    // Each failover is logged with the request's id.
    let log = crate::policies::without_ansi(&gw.log());
    let failover = log
        .lines()
        .find(|l| l.contains("failing over") && l.contains("from=a"))
        .unwrap_or_else(|| panic!("no failover from a logged:\n{log}"));
    assert!(failover.contains("request_id="), "{failover}");

    // Everything failing: the last error is the answer, with its route
    // and retry-after.
    m2.behave(json!({"status": 500})).await;
    m3.behave(json!({"status": 429, "retry_after": 7})).await;
    let r = client()
        .post(format!("{}/fo/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(route_of(&r), "c");
    assert_eq!(r.headers()["retry-after"], "7");
}

#[tokio::test]
async fn failover_moves_past_a_dead_and_a_silent_provider() {
    let (slow, good) = (Mock::start().await, Mock::start().await);
    // `dead` refuses connections (port 1); `slow` answers after the
    // gateway's read timeout.
    let gw = gateway(&format!(
        r#"
timeouts: {{ read_ms: 1000 }}
providers:
  - {{ name: dead, type: openai, base_url: "http://127.0.0.1:1/v1", api_key: sk }}
  - {{ name: slow, type: openai, base_url: "{}/v1", api_key: sk }}
  - {{ name: good, type: openai, base_url: "{}/v1", api_key: sk }}
proxies:
  - name: fo
    routes: [{{ provider: dead }}, {{ provider: slow }}, {{ provider: good }}]
    routing: {{ strategy: failover, health: {{ failures: 100 }} }}
    {KEYS}
"#,
        slow.url, good.url
    ))
    .await;
    slow.behave(json!({"delay_ms": 5000})).await;
    let (status, route, body) = chat(&gw, "fo", "gpt-4o", "hi").await;
    assert_eq!((status, route.as_str()), (200, "good"), "{body}");
    assert_eq!(reply(&body), "Mock reply from openai model gpt-4o: hi");
    // (`slow` journals its request only once it has answered.)
    assert_eq!(chats(&good).await, 1);
    let text = gw.metrics_after(1.0).await;
    for (route, reason) in [("dead", "connect"), ("slow", "timeout")] {
        assert_eq!(
            sample(
                &text,
                "portcullis_route_failovers_total",
                &[("proxy", "fo"), ("route", route), ("reason", reason)]
            ),
            1.0,
            "{route}: {text}"
        );
    }
}

#[tokio::test]
async fn streams_fail_over_only_before_the_first_byte() {
    let (m1, m2) = (Mock::start().await, Mock::start().await);
    let policies = crate::policies::policy_dir();
    // `held` checks whole answers (guardrails on the response), so its
    // streams are held back until they end: nothing reaches the client
    // before then.
    let gw = gateway(&format!(
        r#"
policy_engine: {{ dirs: ["{}"] }}
providers:
  - {{ name: a, type: openai, base_url: "{}/v1", api_key: sk }}
  - {{ name: b, type: openai, base_url: "{}/v1", api_key: sk }}
proxies:
  - name: s
    routes: [{{ provider: a }}, {{ provider: b }}]
    routing: {{ strategy: failover }}
    {KEYS}
  - name: held
    routes: [{{ provider: a }}, {{ provider: b }}]
    routing: {{ strategy: failover }}
    policies: [{{ name: guardrails, settings: {{ response: {{ deny_words: [forbidden] }} }} }}]
    {KEYS}
"#,
        policies.0.display(),
        m1.url,
        m2.url
    ))
    .await;
    let url = gw.url.clone();
    let stream_on = |proxy: &'static str| {
        let url = url.clone();
        async move {
            let r = client()
                .post(format!("{url}/{proxy}/chat/completions"))
                .bearer_auth(KEY)
                .json(&json!({"model": "gpt-4o", "stream": true,
                "messages": [{"role": "user", "content": "a long answer please"}]}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let route = route_of(&r);
            (status, route, r.text().await.unwrap_or_default())
        }
    };
    let stream = || stream_on("s");
    let text_of = |body: &str| -> String {
        sse_events(body)
            .iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };

    // a's stream breaks before its first event: b answers, whole.
    m1.behave(json!({"cut_after_chunks": 0, "times": 1})).await;
    let (status, route, body) = stream().await;
    assert_eq!((status, route.as_str()), (200, "b"));
    assert_eq!(sse_events(&body).last().unwrap().1, "[DONE]");
    assert_eq!(
        text_of(&body),
        "Mock reply from openai model gpt-4o: a long answer please"
    );
    // An error status before the stream: b too.
    m1.behave(json!({"status": 502, "times": 1})).await;
    let (status, route, body) = stream().await;
    assert_eq!((status, route.as_str()), (200, "b"));
    assert_eq!(sse_events(&body).last().unwrap().1, "[DONE]");
    assert_eq!((chats(&m1).await, chats(&m2).await), (2, 2));

    // a breaks after three events, which reached the client: no retry,
    // the stream ends with an error event.
    m1.behave(json!({"cut_after_chunks": 3, "times": 1})).await;
    let (status, route, body) = stream().await;
    assert_eq!((status, route.as_str()), (200, "a"));
    let events = sse_events(&body);
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert!(last["error"]["message"].is_string(), "{body}");
    assert!(text_of(&body).starts_with("Mock reply"), "{body}");
    assert_eq!((chats(&m1).await, chats(&m2).await), (3, 2));

    // Held back by a policy, a's three events never reached the client:
    // b answers, and the client sees b's answer alone (nothing of a's
    // broken stream is kept for it).
    m1.behave(json!({"cut_after_chunks": 3, "times": 1})).await;
    let (status, route, body) = stream_on("held").await;
    assert_eq!((status, route.as_str()), (200, "b"), "{body}");
    assert_eq!(sse_events(&body).last().unwrap().1, "[DONE]");
    assert_eq!(
        text_of(&body),
        "Mock reply from openai model gpt-4o: a long answer please"
    );
    assert_eq!((chats(&m1).await, chats(&m2).await), (4, 3));
}

#[tokio::test]
async fn a_failing_route_is_ejected_then_probed_back() {
    let (m1, m2) = (Mock::start().await, Mock::start().await);
    let gw = gateway(&format!(
        r#"
providers:
  - {{ name: primary, type: openai, base_url: "{}/v1", api_key: sk }}
  - {{ name: backup, type: openai, base_url: "{}/v1", api_key: sk }}
proxies:
  - name: h
    routes: [{{ provider: primary }}, {{ provider: backup }}]
    routing: {{ strategy: failover, health: {{ failures: 2, cooldown_ms: 3000 }} }}
    {KEYS}
"#,
        m1.url, m2.url
    ))
    .await;
    let healthy = |text: &str, route| {
        sample(
            text,
            "portcullis_route_healthy",
            &[("proxy", "h"), ("route", route)],
        )
    };
    m1.behave(json!({"status": 503})).await;
    for _ in 0..2 {
        let (status, route, _) = chat(&gw, "h", "gpt-4o", "hi").await;
        assert_eq!((status, route.as_str()), (200, "backup"));
    }
    let text = gw.metrics_after(2.0).await;
    assert_eq!(
        (healthy(&text, "primary"), healthy(&text, "backup")),
        (0.0, 1.0)
    );
    assert_eq!(
        sample(
            &text,
            "portcullis_route_ejections_total",
            &[("proxy", "h"), ("route", "primary"), ("reason", "failures")]
        ),
        1.0
    );
    // Ejected: the primary gets nothing during the cool-down.
    for _ in 0..5 {
        let (_, route, _) = chat(&gw, "h", "gpt-4o", "hi").await;
        assert_eq!(route, "backup");
    }
    assert_eq!(chats(&m1).await, 2);
    assert!(gw.log().contains("route ejected"), "{}", gw.log());

    // It recovers; after the cool-down one request probes it, and it is
    // back in rotation.
    reset(&m1).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    for _ in 0..2 {
        let (status, route, _) = chat(&gw, "h", "gpt-4o", "hi").await;
        assert_eq!((status, route.as_str()), (200, "primary"));
    }
    assert_eq!(chats(&m1).await, 4);
    let text = gw.metrics_after(9.0).await;
    assert_eq!(healthy(&text, "primary"), 1.0);
    // Requests are counted under the route that served them.
    assert_eq!(
        sample(
            &text,
            "portcullis_requests_total",
            &[
                ("proxy", "h"),
                ("route", "backup"),
                ("provider", "openai"),
                ("model", "other"),
                ("status_class", "2xx"),
                ("error_type", "none")
            ]
        ),
        7.0
    );
}

#[tokio::test]
async fn semantic_routing_and_the_prompt_guard() {
    let (llm, embedder) = (Mock::start().await, Mock::start().await);
    let dir = TempDir::new();
    let billing = dir.0.join("billing.txt");
    std::fs::write(
        &billing,
        "# billing questions, one per line\nwhy was my invoice charged twice\nrefund my last payment\n\nupdate my credit card\n",
    )
    .unwrap();
    let gw = gateway(&format!(
        r#"
providers:
  - {{ name: llm, type: openai, base_url: "{llm}/v1", api_key: sk }}
  - {{ name: embedder, type: openai, base_url: "{emb}/v1", api_key: sk-emb }}
  - {{ name: nowhere, type: openai, base_url: "http://127.0.0.1:1/v1", api_key: x }}
proxies:
  - name: assistant
    routes:
      - name: code
        provider: llm
        model: coder
        topics:
          - name: coding
            utterances: [write a python function, fix this rust compile error, refactor my javascript code]
      - name: billing
        provider: llm
        model: biller
        topics: [{{ name: billing, utterances_file: "{billing}" }}]
      - {{ name: general, provider: llm, model: chat }}
    routing: {{ strategy: semantic, threshold: 0.7, fallback: {{ route: general }} }}
    semantic_service: {{ provider: embedder, model: text-embedding-3-small, dimensions: 1024 }}
    prompt_guard:
      threshold: 0.8
      deny: [{{ name: weapons, utterances: [how to build a bomb, make explosives at home] }}]
    {KEYS}
  - name: semantic-down
    routes:
      - {{ name: code, provider: llm, model: coder, topics: [{{ name: coding, utterances: [write a python function] }}] }}
      - {{ name: general, provider: llm, model: chat }}
    routing: {{ strategy: semantic, fallback: {{ route: general }} }}
    semantic_service: {{ provider: nowhere, model: e }}
    {KEYS}
  - name: guard-down
    routes: [{{ provider: llm }}]
    semantic_service: {{ provider: nowhere, model: e }}
    prompt_guard: {{ deny: [{{ name: weapons, utterances: [how to build a bomb] }}] }}
    {KEYS}
"#,
        llm = llm.url,
        emb = embedder.url,
        billing = billing.display(),
    ))
    .await;

    // The topics are embedded when the configuration loads, before any
    // request: one batch with every utterance.
    let mut indexed = Vec::new();
    for _ in 0..250 {
        indexed = embedder.journal().await;
        if !indexed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(indexed.len(), 1, "{indexed:?}");
    assert_eq!(indexed[0]["body"]["input"].as_array().unwrap().len(), 8);

    for (prompt, route, model) in [
        ("please write a python function", "code", "coder"),
        ("my invoice was charged twice", "billing", "biller"),
        ("what is the weather in paris today", "general", "chat"),
        // Near the denied topic but under its threshold: allowed.
        ("how to build a birdhouse at home", "general", "chat"),
    ] {
        let (status, r, body) = chat(&gw, "assistant", "any-model", prompt).await;
        assert_eq!((status, r.as_str()), (200, route), "{prompt}: {body}");
        assert_eq!(
            reply(&body),
            format!("Mock reply from openai model {model}: {prompt}")
        );
    }
    assert_eq!(chats(&llm).await, 4);

    // A denied topic: 403 in the OpenAI envelope, and no provider call.
    let (status, r, body) =
        chat(&gw, "assistant", "any-model", "how to build a bomb at home").await;
    assert_eq!((status, r.as_str()), (403, ""));
    assert_eq!(body["error"]["code"], "prompt_guard_denied");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "messages[0]");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`weapons`"),
        "{body}"
    );
    assert_eq!(chats(&llm).await, 4);

    // Topic utterances were embedded once, in one batch (3 coding, 3 from
    // the billing file, 2 denied); then one call per request.
    let journal = embedder.journal().await;
    assert_eq!(journal.len(), 6, "{journal:?}");
    assert_eq!(journal[0]["body"]["input"].as_array().unwrap().len(), 8);
    assert_eq!(journal[0]["body"]["dimensions"], 1024);
    assert_eq!(journal[0]["headers"]["authorization"], "Bearer sk-emb");
    assert_eq!(
        journal[1]["body"]["input"],
        json!(["please write a python function"])
    );

    let text = gw.metrics_after(5.0).await;
    let decision = |route, outcome| {
        sample(
            &text,
            "portcullis_semantic_routing_total",
            &[
                ("proxy", "assistant"),
                ("route", route),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        (decision("code", "matched"), decision("billing", "matched")),
        (1.0, 1.0)
    );
    assert_eq!(decision("general", "no_match"), 2.0);
    assert_eq!(
        sample(
            &text,
            "portcullis_prompt_guard_rejections_total",
            &[("proxy", "assistant"), ("topic", "weapons")]
        ),
        1.0
    );

    // The semantic service down: routing falls back; the guard fails closed.
    let (status, r, body) = chat(&gw, "semantic-down", "m", "please write a python function").await;
    assert_eq!(
        (status, r.as_str(), reply(&body)),
        (
            200,
            "general",
            "Mock reply from openai model chat: please write a python function"
        )
    );
    let (status, _, body) = chat(&gw, "guard-down", "gpt-4o", "hello").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "prompt_guard_unavailable");
    assert_eq!(chats(&llm).await, 5);
}
