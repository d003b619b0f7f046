//! The policy chain benchmark behind `portcullis bench-policies`: the cost
//! a proxy's chain adds to one request, without HTTP. Each iteration is
//! what the server does per request: start a run (store, pool slot), the
//! request phase on a 1 KB chat request (instances created lazily from
//! the pre-instantiated components) and the complete phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_types::gateway_config::OnError;
use portcullis_types::{ChatRequest, Usage};
use serde_json::json;

use super::manifest::{Artifact, merge_settings};
use super::{Chain, EngineSettings, PolicyEngine, RequestMeta};
use crate::config::InboundKind;

/// Latency percentiles of one chain, in microseconds.
pub struct ChainTiming {
    pub policies: Vec<String>,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// A 1 KB chat request: a system prompt and a user message.
fn request() -> ChatRequest {
    let words = "the quick brown fox jumps over the lazy dog ".repeat(21);
    serde_json::from_value(json!({
        "model": "gpt-5-mini", "max_tokens": 200,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": words}]}))
    .expect("a valid chat request")
}

/// Settings for a benchmark attachment: the defaults, except a token limit
/// the benchmark never reaches, so every request does the whole
/// reservation path.
fn settings(a: &Artifact) -> serde_json::Value {
    let overrides = if a.manifest.name == "token-rate-limit" {
        json!({"limits": [{"metric": "total_tokens", "limit": 1_000_000_000_000i64, "window": "minute"}]})
    } else {
        json!({})
    };
    merge_settings(&a.manifest.defaults, &overrides)
}

/// Times `iterations` requests (after `warmup` unmeasured ones) through a
/// chain of `artifacts`, in order; `reuse` keeps instances warm between
/// requests (the default), otherwise every request creates its own.
pub async fn time_chain(
    artifacts: &[&Artifact],
    reuse: bool,
    warmup: usize,
    iterations: usize,
) -> Result<ChainTiming, String> {
    let engine = PolicyEngine::new(EngineSettings {
        reuse_instances: reuse,
        ..EngineSettings::default()
    })?;
    let mut attached = Vec::new();
    for a in artifacts {
        let module = engine.load(a)?;
        attached.push(
            Chain::attach(&engine, module, &settings(a), OnError::Closed)
                .map_err(|(pointer, msg)| format!("{}: {pointer}: {msg}", a.manifest.name))?,
        );
    }
    let chain = Arc::new(Chain::new(engine.clone(), attached));
    let req = request();
    let headers = http::HeaderMap::new();
    let usage = Usage::new(250, 40);
    let meta = RequestMeta {
        request_id: "bench",
        proxy_id: "bench",
        key_id: "bench",
        format: InboundKind::Openai,
        headers: &headers,
    };
    let mut times: Vec<Duration> = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let mut r = req.clone();
        let started = Instant::now();
        let mut run = chain.start(None).await.map_err(|e| e.message.clone())?;
        run.on_request(&mut r, &meta)
            .map_err(|e| e.message.clone())?;
        run.complete(200, None, false, Some(&usage), "gpt-5-mini");
        drop(run);
        if i >= warmup {
            times.push(started.elapsed());
        }
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    Ok(ChainTiming {
        policies: artifacts.iter().map(|a| a.manifest.name.clone()).collect(),
        p50: p(0.5),
        p90: p(0.9),
        p99: p(0.99),
    })
}

/// The markdown table docs/benchmarks.md shows.
pub fn table(rows: &[ChainTiming]) -> String {
    let mut out = String::from(
        "| policies | chain | p50 µs | p90 µs | p99 µs | p50 µs per policy |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let (label, per) = if r.policies.is_empty() {
            ("(empty chain)".to_owned(), String::new())
        } else {
            (
                r.policies.join(", "),
                format!("{:.1}", r.p50 / r.policies.len() as f64),
            )
        };
        out.push_str(&format!(
            "| {} | {label} | {:.1} | {:.1} | {:.1} | {per} |\n",
            r.policies.len(),
            r.p50,
            r.p90,
            r.p99
        ));
    }
    out
}
