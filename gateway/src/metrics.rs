//! Prometheus metrics of the data path.
//!
//! Label values are bounded: a model name that is not configured on the
//! proxy is recorded as `other`, so clients cannot create label sets at
//! will.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use portcullis_types::Usage;

/// The gateway's metrics, registered in their own registry.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub tokens: IntCounterVec,
    pub token_usage: HistogramVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub inflight: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
// The OpenTelemetry GenAI semantic conventions' advised token buckets.
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests by proxy, provider, model, status class and error type.",
            ),
            &["proxy", "provider", "model", "status_class", "error_type"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new("portcullis_tokens_total", "Tokens by proxy, provider, model and type (input, output, cached_input, reasoning)."),
            &["proxy", "provider", "model", "type"],
        )
        .expect("valid metric");
        let token_usage = HistogramVec::new(
            HistogramOpts::new(
                "gen_ai_client_token_usage",
                "Tokens per request (OpenTelemetry GenAI conventions).",
            )
            .buckets(TOKEN_BUCKETS.to_vec()),
            &[
                "proxy",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "gen_ai_token_type",
            ],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from request to the last byte of the response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["proxy", "provider"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_upstream_duration_seconds",
                "Time spent waiting on the provider.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["proxy", "provider"],
        )
        .expect("valid metric");
        let time_to_first_token = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_time_to_first_token_seconds",
                "Time from request to the first streamed chunk.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["proxy", "provider"],
        )
        .expect("valid metric");
        let inflight = IntGauge::new("portcullis_inflight_requests", "Requests being processed.")
            .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tokens.clone()),
            Box::new(token_usage.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(time_to_first_token.clone()),
            Box::new(inflight.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            tokens,
            token_usage,
            request_duration,
            upstream_duration,
            time_to_first_token,
            inflight,
        }
    }

    /// Records the tokens of one request.
    pub fn record_usage(&self, proxy: &str, provider: &str, model: &str, usage: &Usage) {
        let types = [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
            ("cached_input", usage.cached_tokens()),
            ("reasoning", usage.reasoning_tokens()),
        ];
        for (kind, n) in types {
            if n > 0 || kind == "input" || kind == "output" {
                self.tokens
                    .with_label_values(&[proxy, provider, model, kind])
                    .inc_by(n);
            }
        }
        self.token_usage
            .with_label_values(&[proxy, provider, model, "input"])
            .observe(usage.prompt_tokens as f64);
        self.token_usage
            .with_label_values(&[proxy, provider, model, "output"])
            .observe(usage.completion_tokens as f64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A status code's class label: `2xx`, `4xx`, ...
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
