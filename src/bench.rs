//! `portcullis bench`: a load generator for chat completions.
//!
//! Closed loop (the default): keeps `concurrency` requests in flight for a
//! fixed time. Open loop (`rate`): sends a fixed number of requests per
//! second over `concurrency` connections, each connection on its own
//! schedule, so latency is measured at a throughput the servers sustain
//! rather than at saturation. Reports throughput and latency percentiles
//! (to the last byte; for streams also to the first byte).
//! `scripts/bench.sh` uses it to compare calling the mock LLM directly
//! with calling it through the gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

/// What to send and how hard.
pub struct BenchOptions {
    pub url: String,
    pub key: String,
    pub model: String,
    pub stream: bool,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub body_bytes: usize,
    /// Requests per second in total (open loop); 0 for a closed loop.
    pub rate: u32,
    /// Make every request's prompt different (a cache never hits).
    pub unique: bool,
}

struct Sample {
    total: Duration,
    first_byte: Duration,
}

/// Where `unique` puts each request's number in the prompt.
const MARK: &str = "#0000000000";

/// `body` with its mark replaced by `n` (same length, so the request
/// size does not change as `n` grows).
fn unique_body(body: &bytes::Bytes, n: u64) -> bytes::Bytes {
    let text = String::from_utf8_lossy(body);
    bytes::Bytes::from(text.replacen(MARK, &format!("#{n:010}"), 1))
}

/// Runs the load and prints one JSON line of results.
pub async fn run(o: BenchOptions) -> anyhow::Result<()> {
    // The gateway's data plane, over http or https (webpki roots).
    let client = portcullis_net::client_builder(None)?
        .pool_max_idle_per_host(o.concurrency)
        .build()?;
    // Pad the user message so the request is about `body_bytes` long.
    let filler = "lorem ipsum ".repeat(o.body_bytes / 12);
    let body = serde_json::to_vec(&serde_json::json!({
        "model": o.model,
        "stream": o.stream,
        "messages": [{"role": "user", "content": format!("Benchmark request {MARK}. {filler}")}]
    }))?;
    let body = bytes::Bytes::from(body);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let o = Arc::new(o);

    let run_phase = |len: Duration| {
        let client = client.clone();
        let body = body.clone();
        let counter = counter.clone();
        let o = o.clone();
        async move {
            let begin = Instant::now();
            let end = begin + len;
            // Open loop: each connection sends every `interval`, the
            // connections' schedules staggered evenly across it.
            let interval =
                (o.rate > 0).then(|| Duration::from_secs_f64(o.concurrency as f64 / o.rate as f64));
            let mut tasks = Vec::new();
            for worker in 0..o.concurrency {
                let client = client.clone();
                let body = body.clone();
                let counter = counter.clone();
                let o = o.clone();
                tasks.push(tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut errors = 0u64;
                    let mut next =
                        interval.map(|i| begin + i.mul_f64(worker as f64 / o.concurrency as f64));
                    loop {
                        if let (Some(at), Some(i)) = (next.as_mut(), interval) {
                            tokio::time::sleep_until((*at).into()).await;
                            // A connection that fell behind (its previous
                            // answer came late) sends now and keeps its pace.
                            *at = (*at + i).max(Instant::now());
                        }
                        if Instant::now() >= end {
                            break;
                        }
                        let body = if o.unique {
                            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            unique_body(&body, n)
                        } else {
                            body.clone()
                        };
                        let start = Instant::now();
                        let resp = client
                            .post(&o.url)
                            .bearer_auth(&o.key)
                            .header("api-key", &o.key)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await;
                        let Ok(resp) = resp else {
                            errors += 1;
                            continue;
                        };
                        if !resp.status().is_success() {
                            errors += 1;
                            let _ = resp.bytes().await;
                            continue;
                        }
                        let mut stream = resp.bytes_stream();
                        let mut first = None;
                        while let Some(chunk) = stream.next().await {
                            if chunk.is_err() {
                                errors += 1;
                                break;
                            }
                            first.get_or_insert_with(|| start.elapsed());
                        }
                        let total = start.elapsed();
                        samples.push(Sample {
                            total,
                            first_byte: first.unwrap_or(total),
                        });
                    }
                    (samples, errors)
                }));
            }
            let mut all = Vec::new();
            let mut errors = 0;
            for t in tasks {
                if let Ok((s, e)) = t.await {
                    all.extend(s);
                    errors += e;
                }
            }
            (all, errors)
        }
    };

    run_phase(o.warmup).await;
    let started = Instant::now();
    let (mut samples, errors) = run_phase(o.duration).await;
    let elapsed = started.elapsed();
    if samples.is_empty() {
        anyhow::bail!("no successful requests ({errors} errors)");
    }
    samples.sort_by_key(|s| s.total);
    let pct = |v: &[Duration], p: f64| {
        v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
    };
    let totals: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    let mut firsts: Vec<Duration> = samples.iter().map(|s| s.first_byte).collect();
    firsts.sort();
    println!(
        "{}",
        serde_json::json!({
            "url": o.url, "stream": o.stream, "concurrency": o.concurrency, "rate": o.rate,
            "requests": samples.len(), "errors": errors,
            "rps": (samples.len() as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "p50_ms": pct(&totals, 0.50), "p90_ms": pct(&totals, 0.90), "p99_ms": pct(&totals, 0.99),
            "ttfb_p50_ms": pct(&firsts, 0.50), "ttfb_p99_ms": pct(&firsts, 0.99),
        })
    );
    Ok(())
}
