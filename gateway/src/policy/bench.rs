//! The policy chain benchmark behind `portcullis bench-policies`: the cost
//! a proxy's chain adds to one request, without HTTP. Each iteration is
//! what the server does per non-streamed request: start a run (pool
//! slot), the request phase on a 1 KB chat request (instances taken warm
//! or created from the pre-instantiated components), the response phase
//! on a 100-word answer, and the complete phase. Every request is a new
//! one, so a cache policy misses and stores each answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_types::gateway_config::OnError;
use portcullis_types::{ChatRequest, ChatResponse, Usage};
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

/// A 100-word chat completion with usage.
fn response() -> ChatResponse {
    let words = "the provider answers with a sentence of ordinary words ".repeat(11);
    serde_json::from_value(json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-5-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": words.trim_end()}}],
        "usage": {"prompt_tokens": 250, "completion_tokens": 110, "total_tokens": 360}}))
    .expect("a valid chat response")
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

/// How a benchmark run drives the chain.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Keep instances warm between requests (the default); otherwise
    /// every request creates its own.
    pub reuse: bool,
    pub warmup: usize,
    pub iterations: usize,
    /// Requests between their request phase and their response phase
    /// (1: one at a time). Each holds its own instances, as concurrent
    /// requests do through HTTP.
    pub in_flight: usize,
    /// Bytes of other memory written before each half of a request
    /// (0: none), standing in for what the gateway, the kernel and other
    /// requests do to the CPU caches between two phases.
    pub evict_bytes: usize,
}

/// Times `run.iterations` requests (after `run.warmup` unmeasured ones)
/// through a chain of `artifacts`, in order. A request's time is its
/// request phase plus its response and complete phases (not the time it
/// waited in flight between them).
pub async fn time_chain(artifacts: &[&Artifact], run: Run) -> Result<ChainTiming, String> {
    let reuse = run.reuse;
    let engine = PolicyEngine::new(EngineSettings {
        reuse_instances: reuse,
        ..EngineSettings::default()
    })?;
    let mut attached = Vec::new();
    for a in artifacts {
        let module = engine.load(a)?;
        attached.push(Arc::new(
            Chain::attach(&engine, module, &settings(a), OnError::Closed)
                .map_err(|(pointer, msg)| format!("{}: {pointer}: {msg}", a.manifest.name))?,
        ));
    }
    let chain = Arc::new(Chain::new(
        engine.clone(),
        attached,
        crate::config::DEFAULT_MAX_HELD_RESPONSE_BYTES,
    ));
    let req = request();
    let resp = response();
    let headers = http::HeaderMap::new();
    let usage = Usage::new(250, 110);
    let meta = RequestMeta {
        request_id: "bench",
        proxy_id: "bench",
        key_id: "bench",
        caller: Default::default(),
        format: InboundKind::Openai,
        headers: &headers,
    };
    let mut times: Vec<Duration> = Vec::with_capacity(run.iterations);
    let mut other = vec![0u8; run.evict_bytes];
    // Writes one byte per cache line of `other`.
    let evict = |other: &mut Vec<u8>| {
        for b in other.iter_mut().step_by(64) {
            *b = b.wrapping_add(1);
        }
        std::hint::black_box(&*other);
    };
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0..run.warmup + run.iterations {
        let mut r = req.clone();
        // Every request differs, so a cache policy misses (and stores) as
        // under real traffic, instead of answering from its first entry.
        if let Some(m) = r.messages.first_mut() {
            m.content = Some(portcullis_types::Content::Text(format!(
                "You are a helpful assistant ({i})."
            )));
        }
        evict(&mut other);
        let started = Instant::now();
        let mut chain_run = chain.start(None).await.map_err(|e| e.message.clone())?;
        chain_run
            .on_request(&mut r, &meta)
            .map_err(|e| e.message.clone())?;
        in_flight.push_back((chain_run, started.elapsed(), i >= run.warmup));
        if in_flight.len() < run.in_flight.max(1) {
            continue;
        }
        let Some((mut chain_run, request_phase, measured)) = in_flight.pop_front() else {
            continue;
        };
        let mut a = resp.clone();
        evict(&mut other);
        let started = Instant::now();
        chain_run
            .on_response(&mut a, false)
            .map_err(|e| e.message.clone())?;
        chain_run.complete(200, Some(&a), false, Some(&usage), "gpt-5-mini", None);
        drop(chain_run);
        if measured {
            times.push(request_phase + started.elapsed());
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
