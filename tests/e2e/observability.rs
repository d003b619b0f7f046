//! Metrics, logs and traces as an operator sees them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Gateway, sse_events};
use crate::{KEY, client, setup, setup_with_env};

/// Sums the samples of `name` whose labels include all of `want`.
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    series(text, name)
        .into_iter()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Every sample of `name` as (labels, value).
fn series(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let Some((l, v)) = r.split_once("} ") else {
                    continue;
                };
                (l, v)
            }
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once("=\"") {
                map.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
        }
        out.push((map, value.trim().parse().unwrap_or(f64::NAN)));
    }
    out
}

fn journal_usage(journal: &[Value], provider: &str) -> (f64, f64) {
    journal
        .iter()
        .filter(|e| e["provider"] == provider && e["status"] == 200)
        .fold((0.0, 0.0), |(i, o), e| {
            (
                i + e["usage"]["input_tokens"].as_f64().unwrap(),
                o + e["usage"]["output_tokens"].as_f64().unwrap(),
            )
        })
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    // The usual proxies, plus one whose guardrail policy rejects a word.
    let policies = crate::policies::policy_dir();
    let mock = crate::harness::Mock::start().await;
    let engine = format!("policy_engine: {{ dirs: [\"{}\"] }}", policies.0.display());
    let config = crate::all_providers_config(&mock, &engine)
        + "  - { name: guarded, routes: [{ provider: openai }], keys: [{ name: tester, env: PC_KEY }], \
           policies: [{ name: guardrails, settings: { request: { deny_words: [\"project falcon\"] } } }] }\n";
    let gw = Gateway::start_with_env(&config, &crate::ALL_PROVIDERS_ENV).await;
    let chat = |proxy: &str, model: &str, stream: bool, key: &str| {
        client()
            .post(format!("{}/{proxy}/chat/completions", gw.url))
            .bearer_auth(key)
            .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "count these four words"}]}))
            .send()
    };
    for stream in [false, true] {
        let r = chat("openai", "gpt-5-mini", stream, KEY).await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let r = chat("anthropic", "claude-sonnet-4-5", true, KEY)
        .await
        .unwrap();
    assert_eq!(
        sse_events(&r.text().await.unwrap()).last().unwrap().1,
        "[DONE]"
    );
    assert_eq!(
        chat("openai", "gpt-5-mini", false, "wrong-key")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        chat("openai", "no-such-model", false, KEY)
            .await
            .unwrap()
            .status(),
        404
    );

    // One request the guardrail passes, one it rejects before any provider call.
    let r = chat("guarded", "gpt-5-mini", false, KEY).await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let r = client()
        .post(format!("{}/guarded/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "status of project falcon?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "guardrail_violation", "{body}");

    let journal = mock.journal().await;
    let m = gw.metrics_after(7.0).await;
    let ok = [
        ("proxy", "openai"),
        ("route", "openai"),
        ("provider", "openai"),
        ("model", "gpt-5-mini"),
        ("status_class", "2xx"),
        ("error_type", "none"),
    ];
    assert_eq!(metric(&m, "portcullis_requests_total", &ok), 2.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "portcullis_requests_total",
            &[
                ("proxy", "anthropic"),
                ("provider", "anthropic"),
                ("model", "claude-sonnet-4-5"),
                ("status_class", "2xx")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_requests_total",
            &[
                ("proxy", "openai"),
                ("status_class", "4xx"),
                ("error_type", "authentication")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_requests_total",
            &[
                ("proxy", "openai"),
                ("status_class", "4xx"),
                ("error_type", "not_found")
            ]
        ),
        1.0
    );

    // The guarded proxy: one answered, one rejected by its policy before
    // any provider call, each counted once; the policy's two runs by outcome.
    assert_eq!(
        metric(
            &m,
            "portcullis_requests_total",
            &[
                ("proxy", "guarded"),
                ("status_class", "2xx"),
                ("error_type", "none")
            ]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_requests_total",
            &[
                ("proxy", "guarded"),
                ("status_class", "4xx"),
                ("error_type", "policy")
            ]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "portcullis_requests_total", &[("proxy", "guarded")]),
        2.0
    );
    for (outcome, n) in [("continue", 1.0), ("rejected", 1.0)] {
        assert_eq!(
            metric(
                &m,
                "portcullis_policy_executions_total",
                &[
                    ("policy", "guardrails"),
                    ("phase", "request"),
                    ("outcome", outcome)
                ]
            ),
            n,
            "{outcome}: {m}"
        );
    }
    assert_eq!(
        metric(
            &m,
            "portcullis_policy_duration_seconds_count",
            &[("policy", "guardrails"), ("phase", "request")]
        ),
        2.0
    );
    // The rejected request never reached the provider: the mock saw three
    // OpenAI chats (two on `openai`, one on `guarded`).
    assert_eq!(
        journal
            .iter()
            .filter(|e| e["provider"] == "openai" && e["status"] == 200)
            .count(),
        3
    );

    // Token counters equal what the providers reported, streams included.
    for provider in ["openai", "anthropic"] {
        let (input, output) = journal_usage(&journal, provider);
        assert!(input > 0.0 && output > 0.0);
        assert_eq!(
            metric(
                &m,
                "portcullis_tokens_total",
                &[("provider", provider), ("type", "input")]
            ),
            input,
            "{provider}"
        );
        assert_eq!(
            metric(
                &m,
                "portcullis_tokens_total",
                &[("provider", provider), ("type", "output")]
            ),
            output,
            "{provider}"
        );
        assert_eq!(
            metric(
                &m,
                "gen_ai_client_token_usage_sum",
                &[
                    ("gen_ai_provider_name", provider),
                    ("gen_ai_token_type", "output")
                ]
            ),
            output,
            "{provider}"
        );
    }
    assert_eq!(
        metric(
            &m,
            "gen_ai_client_token_usage_count",
            &[
                ("proxy", "openai"),
                ("gen_ai_provider_name", "openai"),
                ("gen_ai_request_model", "gpt-5-mini"),
                ("gen_ai_response_model", "gpt-5-mini"),
                ("gen_ai_operation_name", "chat"),
                ("gen_ai_token_type", "input")
            ]
        ),
        2.0
    );
    // Latency histograms saw every answered request.
    assert_eq!(
        metric(
            &m,
            "portcullis_request_duration_seconds_count",
            &[("proxy", "openai"), ("status_class", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_time_to_first_token_seconds_count",
            &[("proxy", "openai")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_time_to_first_token_seconds_count",
            &[("proxy", "anthropic")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_gateway_overhead_seconds_count",
            &[("proxy", "openai")]
        ),
        4.0
    );
    assert_eq!(metric(&m, "portcullis_inflight_requests", &[]), 0.0);

    // The exposition passes promtool (Debian's `prometheus` package, installed by .ci/run).
    match std::process::Command::new("promtool")
        .arg("--version")
        .output()
    {
        Ok(_) => {
            let mut child = std::process::Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && said.trim().is_empty(),
                "promtool check metrics:\n{said}"
            );
        }
        Err(_) => assert!(
            std::env::var_os("CI").is_none(),
            "promtool must be installed in CI"
        ),
    }
}

#[tokio::test]
async fn bogus_model_names_do_not_create_label_sets() {
    let (_mock, gw) = setup("").await;
    // The `local` proxy passes any model to its OpenAI-compatible server.
    let mut tasks = Vec::new();
    for worker in 0..20 {
        let url = format!("{}/local/chat/completions", gw.url);
        tasks.push(tokio::spawn(async move {
            let c = client();
            for i in 0..50 {
                let r = c
                    .post(&url)
                    .bearer_auth(KEY)
                    .header("x-upstream-key", "k")
                    .json(&json!({"model": format!("bogus-{worker}-{i}"), "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = gw.metrics_after(1000.0).await;
    let requests: Vec<_> = series(&m, "portcullis_requests_total")
        .into_iter()
        .filter(|(l, _)| l["proxy"] == "local")
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].0["model"], "other");
    assert_eq!(requests[0].1, 1000.0);
    let tokens: Vec<_> = series(&m, "portcullis_tokens_total")
        .into_iter()
        .filter(|(l, _)| l["proxy"] == "local")
        .collect();
    assert_eq!(
        tokens.len(),
        2,
        "one input and one output series: {tokens:?}"
    );
    assert!(
        tokens
            .iter()
            .all(|(l, _)| l["request_model"] == "other" && l["response_model"] == "other")
    );
    assert!(!m.contains("bogus-"));
}

/// With debug logs on, a request's events nest under its `request` span
/// (its id) and the `attempt` span of the route they belong to.
#[tokio::test]
async fn debug_logs_nest_a_requests_events_under_request_and_attempt_spans() {
    let (_mock, gw) = setup_with_env(
        "",
        &[
            ("PORTCULLIS_LOG_FORMAT", "json"),
            ("RUST_LOG", "info,portcullis_gateway=debug"),
        ],
    )
    .await;
    let r = client()
        .post(format!("{}/openai/chat/completions", gw.url))
        .bearer_auth(KEY)
        .header("x-request-id", "req-span-7")
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = log_line(&gw, "calling the provider").await;
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["spans"][0]["name"], "request", "{v}");
    assert_eq!(v["spans"][0]["request_id"], "req-span-7", "{v}");
    assert_eq!(v["spans"][1]["name"], "attempt", "{v}");
    assert_eq!(v["spans"][1]["n"], 1, "{v}");
    assert_eq!(v["spans"][1]["route"], "openai", "{v}");
    assert_eq!(v["spans"][1]["model"], "gpt-5-mini", "{v}");
}

#[tokio::test]
async fn json_log_line_carries_the_request_id() {
    let (mock, gw) = setup_with_env("", &[("PORTCULLIS_LOG_FORMAT", "json")]).await;
    let r = client()
        .post(format!("{}/openai/chat/completions", gw.url))
        .bearer_auth(KEY)
        .header("x-request-id", "req-e2e-42")
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "log me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-e2e-42");
    assert_eq!(r.status(), 200);
    let generated = client()
        .get(format!("{}/openai/models", gw.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let generated_id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated_id.len(), 32, "a generated id: {generated_id}");
    let journal = mock.journal().await;
    let usage = &journal.last().unwrap()["usage"];
    let line = log_line(&gw, "req-e2e-42").await;
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["request_id"], "req-e2e-42");
    assert_eq!(v["proxy"], "openai");
    assert_eq!(v["key"], "tester");
    assert_eq!(v["provider"], "openai");
    assert_eq!(v["route"], "openai");
    assert_eq!(v["model"], "gpt-5-mini");
    assert_eq!(v["status"], 200);
    assert_eq!(v["input_tokens"], usage["input_tokens"]);
    assert_eq!(v["output_tokens"], usage["output_tokens"]);
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
    let line: Value = serde_json::from_str(&log_line(&gw, &generated_id).await).unwrap();
    assert_eq!(line["status"], 200);
}

/// The log line containing `needle`; the access log is written just after
/// the response, so it is waited for.
async fn log_line(gw: &Gateway, needle: &str) -> String {
    for _ in 0..100 {
        if let Some(l) = gw.log().lines().find(|l| l.contains(needle)) {
            return l.to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no log line with {needle}:\n{}", gw.log())
}

/// A minimal OTLP/HTTP collector: stores every posted body as JSON (a
/// protobuf body is decoded with the OTLP protocol's own message types and
/// shown in the OTLP/JSON mapping, so one set of assertions reads both).
pub(crate) async fn collector() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: headers, then content-length bytes.
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let raw = &buf[head_end..head_end + len];
                    let body: Value = if head.contains("content-type: application/x-protobuf") {
                        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                        let request = <ExportTraceServiceRequest as prost::Message>::decode(raw)
                            .expect("an OTLP/protobuf export request");
                        serde_json::to_value(&request).unwrap()
                    } else {
                        serde_json::from_slice(raw).unwrap_or(Value::Null)
                    };
                    assert!(head.starts_with("post /v1/traces "), "{head}");
                    store.lock().unwrap().push(body);
                    buf.drain(..head_end + len);
                    let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}").await;
                }
            });
        }
    });
    (port, got)
}

/// A minimal OTLP/gRPC collector (the protocol's own service definition):
/// stores every export request in the OTLP/JSON mapping.
async fn grpc_collector() -> (u16, Arc<Mutex<Vec<Value>>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    struct Collector(Arc<Mutex<Vec<Value>>>);
    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let body = serde_json::to_value(request.into_inner()).unwrap();
            self.0.lock().unwrap().push(body);
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }
    let port = crate::harness::free_port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Collector(got.clone())))
        .serve(([127, 0, 0, 1], port).into());
    tokio::spawn(server);
    (port, got)
}

#[tokio::test]
async fn traces_are_exported_over_otlp_with_genai_attributes() {
    // The default (http/protobuf), http/json and gRPC.
    for protocol in ["", ", otlp_protocol: http/json", ", otlp_protocol: grpc"] {
        traces_are_exported(protocol).await;
    }
}

async fn traces_are_exported(protocol: &str) {
    let (port, got) = if protocol.contains("grpc") {
        grpc_collector().await
    } else {
        collector().await
    };
    let (mock, gw) = setup(&format!(
        "telemetry: {{ otlp_endpoint: \"http://127.0.0.1:{port}\", service_name: e2e-gw{protocol} }}"
    ))
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client()
        .post(format!("{}/openai/chat/completions", gw.url))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(
            &json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "trace me"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let journal = mock.journal().await;
    let last = journal.last().unwrap();
    // The provider call continues the trace.
    let upstream_tp = last["headers"]["traceparent"]
        .as_str()
        .expect("traceparent sent upstream");
    assert!(
        upstream_tp.starts_with(&format!("00-{trace}-")),
        "{upstream_tp}"
    );

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        if spans.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(spans.len(), 2, "{protocol}: {spans:?}");
    let resource = got.lock().unwrap()[0]["resourceSpans"][0]["resource"]["attributes"].clone();
    let service = resource
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "service.name")
        .map(|a| a["value"]["stringValue"].clone());
    assert_eq!(service, Some(json!("e2e-gw")), "{resource}");
    let server = spans.iter().find(|s| s["kind"] == 2).unwrap();
    let client_span = spans.iter().find(|s| s["kind"] == 3).unwrap();
    assert_eq!(server["traceId"], trace);
    assert_eq!(server["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(server["name"], "POST /openai/chat/completions");
    assert_eq!(client_span["traceId"], trace);
    assert_eq!(client_span["parentSpanId"], server["spanId"]);
    assert_eq!(client_span["name"], "chat gpt-5-mini");
    // The upstream traceparent names the client span.
    assert!(upstream_tp.contains(client_span["spanId"].as_str().unwrap()));
    let attr = |s: &Value, k: &str| {
        s["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == k)
            .map(|a| a["value"].clone())
    };
    assert_eq!(
        attr(client_span, "gen_ai.operation.name").unwrap()["stringValue"],
        "chat"
    );
    assert_eq!(
        attr(client_span, "gen_ai.provider.name").unwrap()["stringValue"],
        "openai"
    );
    assert_eq!(
        attr(client_span, "gen_ai.request.model").unwrap()["stringValue"],
        "gpt-5-mini"
    );
    assert_eq!(
        attr(client_span, "gen_ai.usage.input_tokens").unwrap()["intValue"],
        last["usage"]["input_tokens"].to_string()
    );
    assert_eq!(
        attr(client_span, "gen_ai.usage.output_tokens").unwrap()["intValue"],
        last["usage"]["output_tokens"].to_string()
    );
    assert_eq!(
        attr(server, "http.response.status_code").unwrap()["intValue"],
        "200"
    );
    let start: u128 = client_span["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u128 = client_span["endTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let s_start: u128 = server["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        s_start <= start && start <= end,
        "client span inside the server span"
    );
}

/// The shipped alert rules and dashboard stay valid and only use metrics
/// the gateway exports.
#[tokio::test]
async fn alert_rules_and_dashboard_use_real_metrics() {
    let root = env!("CARGO_MANIFEST_DIR");
    let rules = format!("{root}/docs/prometheus/alerts.yml");
    match std::process::Command::new("promtool")
        .args(["check", "rules", &rules])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => assert!(
            std::env::var_os("CI").is_none(),
            "promtool must be installed in CI"
        ),
    }
    let (_mock, gw) = setup("").await;
    let r = client()
        .post(format!("{}/openai/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "stream": true, "messages": [{"role": "user", "content": "a b c"}]}))
        .send()
        .await
        .unwrap();
    r.text().await.unwrap();
    let exported = gw.metrics_after(1.0).await;
    // Labelled families appear with their first series; these only once a
    // policy runs (see docs/observability.md).
    let policy_families = [
        "portcullis_policy_executions_total",
        "portcullis_policy_duration_seconds",
        "portcullis_rate_limit_rejections_total",
        "portcullis_cache_lookups_total",
    ];
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/docs/grafana/portcullis-gateway.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    exprs.push(std::fs::read_to_string(&rules).unwrap());
    for text in exprs {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("portcullis_") {
                let family = word
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                assert!(
                    exported.contains(&format!("# TYPE {family} "))
                        || policy_families.contains(&family),
                    "{word} is not exported"
                );
            }
        }
    }
}
