//! Prometheus metrics of the data path.
//!
//! Names and labels are listed in docs/observability.md. Label values are
//! bounded: a request model that is not configured on the proxy is
//! recorded as `other`, response models are kept up to a fixed number of
//! distinct values, and the API key label is opt-in
//! (`telemetry.key_label`), as is the application label of the cost
//! (`telemetry.application_label`; applications are made in admin), so
//! clients cannot create label sets at will.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use portcullis_types::Usage;

/// The value recorded for a label whose real value is not allowed.
pub const OTHER: &str = "other";

/// Distinct (policy, name) custom metrics kept.
const MAX_POLICY_METRICS: usize = 256;

/// Distinct response-model values kept before collapsing to `other`.
const MAX_RESPONSE_MODELS: usize = 200;

/// The gateway's metrics, registered in their own registry.
pub struct Metrics {
    pub registry: Registry,
    key_label: bool,
    application_label: bool,
    pub requests: IntCounterVec,
    pub tokens: IntCounterVec,
    /// What requests cost, in the price table's currency (USD shipped).
    pub cost: prometheus::CounterVec,
    pub token_usage: HistogramVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub time_per_output_token: HistogramVec,
    pub gateway_overhead: HistogramVec,
    pub inflight: IntGauge,
    /// Client connections open (traffic listeners).
    pub client_connections: IntGauge,
    /// Client connections the gateway closed or refused, by reason.
    pub client_connections_closed: IntCounterVec,
    pub policy_executions: IntCounterVec,
    pub policy_duration: HistogramVec,
    /// Policy instances created for requests (none were warm), by policy.
    pub policy_instances_created: IntCounterVec,
    pub rate_limit_rejections: IntCounterVec,
    pub cache_lookups: IntCounterVec,
    pub spans_dropped: IntCounter,
    /// Model list fetches by provider and outcome (`ok`, `error`).
    pub model_discovery: IntCounterVec,
    /// Models in each provider's last good discovered list.
    pub discovered_models: prometheus::IntGaugeVec,
    /// Refreshes of providers' fetched credentials (`auth:`), by outcome.
    pub auth_refresh: IntCounterVec,
    /// When each provider's current fetched credential expires (Unix s).
    pub auth_expiry: prometheus::GaugeVec,
    /// Custom metrics of policies (the `metrics` capability).
    pub policy_custom: IntCounterVec,
    pub policy_custom_value: HistogramVec,
    policy_custom_names: Mutex<HashSet<String>>,
    response_models: Mutex<HashSet<String>>,
}

/// The labels of one finished request.
pub struct RequestLabels<'a> {
    pub proxy: &'a str,
    pub route: &'a str,
    pub provider: &'a str,
    pub request_model: &'a str,
    pub response_model: &'a str,
    pub key: &'a str,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];
// Per-token latencies are small: the OpenTelemetry GenAI conventions'
// advised buckets for time per output token.
const TOKEN_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
// Gateway overhead is sub-millisecond when healthy.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
// The OpenTelemetry GenAI conventions' advised token-count buckets.
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric")
}

impl Metrics {
    /// Creates and registers every metric. `key_label` adds the API key
    /// name as a label of the token and request counters (cardinality grows
    /// with the number of keys, so it is off by default); `application_label`
    /// the key's application to the cost counter.
    pub fn new(key_label: bool, application_label: bool) -> Self {
        let registry = Registry::new();
        let mut req_labels = vec![
            "proxy",
            "route",
            "provider",
            "model",
            "status_class",
            "error_type",
        ];
        let mut tok_labels = vec![
            "proxy",
            "route",
            "provider",
            "request_model",
            "response_model",
            "type",
        ];
        if key_label {
            req_labels.push("key");
            tok_labels.push("key");
        }
        let mut cost_labels = vec!["proxy", "provider", "model"];
        if application_label {
            cost_labels.push("application");
        }
        let m = Metrics {
            key_label,
            application_label,
            requests: counter(
                "portcullis_requests_total",
                "Requests by proxy, route, provider, model, status class and error type.",
                &req_labels,
            ),
            tokens: counter(
                "portcullis_tokens_total",
                "Tokens by proxy, route, provider, request and response model, and type (input, output, cached_input, reasoning).",
                &tok_labels,
            ),
            cost: prometheus::CounterVec::new(
                Opts::new(
                    "portcullis_cost_total",
                    "What requests cost, from their usage and the price table (shipped prices are USD), by proxy, provider and request model (and application, when configured).",
                ),
                &cost_labels,
            )
            .expect("valid metric"),
            token_usage: histogram(
                "gen_ai_client_token_usage",
                "Tokens per request, following the OpenTelemetry GenAI semantic conventions.",
                TOKEN_BUCKETS,
                &[
                    "proxy",
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_response_model",
                    "gen_ai_token_type",
                ],
            ),
            request_duration: histogram(
                "portcullis_request_duration_seconds",
                "Time from the request's arrival to the last byte of the response.",
                LATENCY_BUCKETS,
                &["proxy", "provider", "status_class"],
            ),
            upstream_duration: histogram(
                "portcullis_upstream_duration_seconds",
                "Time from sending to the provider to its last byte.",
                LATENCY_BUCKETS,
                &["proxy", "provider"],
            ),
            time_to_first_token: histogram(
                "portcullis_time_to_first_token_seconds",
                "Time from the request's arrival to the first streamed content chunk.",
                LATENCY_BUCKETS,
                &["proxy", "provider"],
            ),
            time_per_output_token: histogram(
                "portcullis_time_per_output_token_seconds",
                "Streams: time after the first chunk divided by the remaining output tokens.",
                TOKEN_LATENCY_BUCKETS,
                &["proxy", "provider"],
            ),
            gateway_overhead: histogram(
                "portcullis_gateway_overhead_seconds",
                "Time spent in the gateway itself: total duration minus time waiting on the provider.",
                OVERHEAD_BUCKETS,
                &["proxy"],
            ),
            inflight: IntGauge::new("portcullis_inflight_requests", "Requests being processed.")
                .expect("valid metric"),
            client_connections: IntGauge::new(
                "portcullis_client_connections",
                "Client connections open on the traffic listeners.",
            )
            .expect("valid metric"),
            client_connections_closed: counter(
                "portcullis_client_connections_closed_total",
                "Client connections the gateway refused or closed, by reason (limit, idle, header_timeout, header_too_large).",
                &["reason"],
            ),
            policy_executions: counter(
                "portcullis_policy_executions_total",
                "Policy runs by policy, version, phase and outcome (continue, modified, rejected, responded, error, timeout, memory).",
                &["policy", "version", "phase", "outcome"],
            ),
            policy_instances_created: counter(
                "portcullis_policy_instances_created_total",
                "Policy instances created because no warm one was idle, by policy: steady growth under steady load means the warm pools are too small (policy_engine.max_idle_instances).",
                &["policy"],
            ),
            policy_duration: histogram(
                "portcullis_policy_duration_seconds",
                "Time a policy took per phase.",
                OVERHEAD_BUCKETS,
                &["policy", "version", "phase"],
            ),
            rate_limit_rejections: counter(
                "portcullis_rate_limit_rejections_total",
                "Requests rejected by a rate-limit policy (status 429).",
                &["proxy"],
            ),
            cache_lookups: counter(
                "portcullis_cache_lookups_total",
                "Response cache lookups by result (hit, miss).",
                &["proxy", "result"],
            ),
            spans_dropped: IntCounter::new(
                "portcullis_trace_spans_dropped_total",
                "Trace spans dropped because the exporter could not keep up or failed.",
            )
            .expect("valid metric"),
            auth_refresh: counter(
                "portcullis_provider_auth_refresh_total",
                "Fetches and refreshes of providers' credentials (OAuth2 tokens, AWS keys), by outcome (ok, error).",
                &["provider", "outcome"],
            ),
            auth_expiry: prometheus::GaugeVec::new(
                Opts::new(
                    "portcullis_provider_auth_expiry_timestamp_seconds",
                    "When the provider credential in use expires (Unix time, seconds).",
                ),
                &["provider"],
            )
            .expect("valid metric"),
            policy_custom: counter(
                "portcullis_policy_custom_total",
                "Counters that policies define, by policy and name.",
                &["policy", "name"],
            ),
            policy_custom_value: histogram(
                "portcullis_policy_custom_value",
                "Observations that policies record, by policy and name.",
                TOKEN_BUCKETS,
                &["policy", "name"],
            ),
            model_discovery: counter(
                "portcullis_model_discovery_total",
                "Fetches of providers' model lists (discover_models) by provider and outcome (ok, error); a failed fetch keeps the last good list.",
                &["provider", "outcome"],
            ),
            discovered_models: prometheus::IntGaugeVec::new(
                Opts::new(
                    "portcullis_discovered_models",
                    "Models in each provider's last good discovered list.",
                ),
                &["provider"],
            )
            .expect("valid metric"),
            policy_custom_names: Mutex::new(HashSet::new()),
            response_models: Mutex::new(HashSet::new()),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.tokens.clone()),
            Box::new(m.cost.clone()),
            Box::new(m.token_usage.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.upstream_duration.clone()),
            Box::new(m.time_to_first_token.clone()),
            Box::new(m.time_per_output_token.clone()),
            Box::new(m.gateway_overhead.clone()),
            Box::new(m.inflight.clone()),
            Box::new(m.client_connections.clone()),
            Box::new(m.client_connections_closed.clone()),
            Box::new(m.policy_executions.clone()),
            Box::new(m.policy_duration.clone()),
            Box::new(m.policy_instances_created.clone()),
            Box::new(m.rate_limit_rejections.clone()),
            Box::new(m.cache_lookups.clone()),
            Box::new(m.spans_dropped.clone()),
            Box::new(m.model_discovery.clone()),
            Box::new(m.discovered_models.clone()),
            Box::new(m.auth_refresh.clone()),
            Box::new(m.auth_expiry.clone()),
            Box::new(m.policy_custom.clone()),
            Box::new(m.policy_custom_value.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric registered once");
        }
        m
    }

    /// Whether a policy's custom metric name may be recorded: names are
    /// `[a-z0-9_]{1,64}` and at most `MAX_POLICY_METRICS` distinct
    /// (policy, name) pairs exist, so policies cannot explode cardinality.
    fn policy_metric_allowed(&self, policy: &str, name: &str) -> bool {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return false;
        }
        let Ok(mut seen) = self.policy_custom_names.lock() else {
            return false;
        };
        let key = format!("{policy}/{name}");
        seen.contains(&key) || (seen.len() < MAX_POLICY_METRICS && seen.insert(key))
    }

    /// Adds to a policy's custom counter.
    pub fn policy_custom_add(&self, policy: &str, name: &str, value: u64) {
        if self.policy_metric_allowed(policy, name) {
            self.policy_custom
                .with_label_values(&[policy, name])
                .inc_by(value);
        }
    }

    /// Records an observation of a policy's custom histogram.
    pub fn policy_custom_observe(&self, policy: &str, name: &str, value: f64) {
        if self.policy_metric_allowed(policy, name) && value.is_finite() {
            self.policy_custom_value
                .with_label_values(&[policy, name])
                .observe(value);
        }
    }

    /// The response model as a label value: kept as reported while fewer
    /// than `MAX_RESPONSE_MODELS` distinct values have been seen.
    pub fn response_model_label(&self, model: &str) -> String {
        if model.is_empty() {
            return "none".into();
        }
        let Ok(mut seen) = self.response_models.lock() else {
            return OTHER.into();
        };
        if seen.contains(model) || (seen.len() < MAX_RESPONSE_MODELS && model.len() <= 128) {
            seen.insert(model.to_owned());
            model.to_owned()
        } else {
            OTHER.into()
        }
    }

    /// Records one finished request.
    pub fn record_request(&self, l: &RequestLabels<'_>, status_class: &str, error_type: &str) {
        let mut values = vec![
            l.proxy,
            l.route,
            l.provider,
            l.request_model,
            status_class,
            error_type,
        ];
        if self.key_label {
            values.push(l.key);
        }
        self.requests.with_label_values(&values).inc();
    }

    /// Records what one request cost; `application` is its key's (none for
    /// a proxy's own key).
    pub fn record_cost(
        &self,
        proxy: &str,
        provider: &str,
        model: &str,
        application: Option<&str>,
        cost: f64,
    ) {
        let series = if self.application_label {
            self.cost
                .with_label_values(&[proxy, provider, model, application.unwrap_or("-")])
        } else {
            self.cost.with_label_values(&[proxy, provider, model])
        };
        series.inc_by(cost);
    }

    /// Records the tokens of one request.
    pub fn record_usage(&self, l: &RequestLabels<'_>, operation: &str, usage: &Usage) {
        let types = [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
            ("cached_input", usage.cached_tokens()),
            ("reasoning", usage.reasoning_tokens()),
        ];
        for (kind, n) in types {
            // Input and output always appear, so a rate over them is never
            // absent; the breakdowns appear once a provider reports them.
            if n > 0 || kind == "input" || kind == "output" {
                let mut values = vec![
                    l.proxy,
                    l.route,
                    l.provider,
                    l.request_model,
                    l.response_model,
                    kind,
                ];
                if self.key_label {
                    values.push(l.key);
                }
                self.tokens.with_label_values(&values).inc_by(n);
            }
        }
        for (kind, n) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
        ] {
            self.token_usage
                .with_label_values(&[
                    l.proxy,
                    operation,
                    l.provider,
                    l.request_model,
                    l.response_model,
                    kind,
                ])
                .observe(n as f64);
        }
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
        Self::new(false, false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_models_are_bounded() {
        let m = Metrics::default();
        for i in 0..MAX_RESPONSE_MODELS {
            assert_eq!(m.response_model_label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(m.response_model_label("one-too-many"), OTHER);
        assert_eq!(m.response_model_label("m7"), "m7");
    }

    #[test]
    fn key_label_is_opt_in() {
        let l = RequestLabels {
            proxy: "p",
            route: "r",
            provider: "openai",
            request_model: "m",
            response_model: "m",
            key: "app",
        };
        let without = Metrics::new(false, false);
        without.record_request(&l, "2xx", "none");
        let text = String::from_utf8(without.render()).unwrap();
        assert!(text.contains("portcullis_requests_total{error_type=\"none\",model=\"m\",provider=\"openai\",proxy=\"p\",route=\"r\",status_class=\"2xx\"} 1"), "{text}");
        let with = Metrics::new(true, false);
        with.record_usage(&l, "chat", &Usage::new(3, 4));
        let text = String::from_utf8(with.render()).unwrap();
        assert!(text.contains("key=\"app\""), "{text}");
        assert!(text.contains("type=\"output\"} 4"), "{text}");
    }

    #[test]
    fn the_application_label_of_the_cost_is_opt_in() {
        let without = Metrics::new(false, false);
        without.record_cost("p", "openai", "m", Some("app_1"), 0.5);
        let text = String::from_utf8(without.render()).unwrap();
        assert!(
            text.contains("portcullis_cost_total{model=\"m\",provider=\"openai\",proxy=\"p\"} 0.5"),
            "{text}"
        );
        let with = Metrics::new(false, true);
        with.record_cost("p", "openai", "m", Some("app_1"), 0.5);
        with.record_cost("p", "openai", "m", None, 0.25);
        let text = String::from_utf8(with.render()).unwrap();
        assert!(text.contains("portcullis_cost_total{application=\"app_1\",model=\"m\",provider=\"openai\",proxy=\"p\"} 0.5"), "{text}");
        assert!(text.contains("application=\"-\""), "{text}");
    }
}
