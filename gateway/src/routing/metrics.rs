//! Routing metrics: route health, failovers, the retry budget, semantic
//! routing decisions and prompt-guard rejections.
//!
//! Registered in the gateway's registry next to the request metrics. Every
//! label value comes from the configuration (proxy ids, route and topic
//! names) or a fixed set (reasons, outcomes), so clients cannot grow the
//! number of series.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Buckets for calls to the semantic service (an embedding is typically
/// 10 to 300 ms).
const EMBED_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The routing metric families.
#[derive(Clone)]
pub struct RoutingMetrics {
    /// 1 while a route is in rotation, 0 while ejected or paused.
    pub route_healthy: IntGaugeVec,
    /// Routes taken out of rotation, by reason (`failures`, `rate_limited`).
    pub ejections: IntCounterVec,
    /// Requests moved from a failed route to the next candidate, by the
    /// failed route and reason (`connect`, `timeout`, `protocol`,
    /// `status_429`, `status_5xx`, `status_4xx`).
    pub failovers: IntCounterVec,
    /// Retries refused because the proxy's retry budget was spent.
    pub budget_exhausted: IntCounterVec,
    /// Semantic routing decisions, by chosen route and outcome (`matched`,
    /// `no_match`, `no_prompt`, `error`).
    pub semantic_decisions: IntCounterVec,
    /// Prompts the guard rejected, by denied topic.
    pub guard_rejections: IntCounterVec,
    /// Failed calls to the semantic service.
    pub semantic_errors: IntCounterVec,
    /// Time to embed a request's prompt (including first-use indexing).
    pub semantic_duration: HistogramVec,
}

impl RoutingMetrics {
    /// Creates the families and registers them in `registry`. A family
    /// already registered there (a second gateway on one registry) is
    /// logged and left out of the exposition rather than failing start-up.
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let m = RoutingMetrics {
            route_healthy: IntGaugeVec::new(
                Opts::new(
                    "portcullis_route_healthy",
                    "1 while a route is in rotation, 0 while passive health checking has ejected it or a retry-after paused it.",
                ),
                &["proxy", "route"],
            )
            .expect("valid metric"),
            ejections: counter(
                "portcullis_route_ejections_total",
                "Routes taken out of rotation, by reason (failures, rate_limited).",
                &["proxy", "route", "reason"],
            ),
            failovers: counter(
                "portcullis_route_failovers_total",
                "Requests moved from a failed route to the next candidate, by failed route and reason.",
                &["proxy", "route", "reason"],
            ),
            budget_exhausted: counter(
                "portcullis_retry_budget_exhausted_total",
                "Retries refused because the proxy's retry budget was spent.",
                &["proxy"],
            ),
            semantic_decisions: counter(
                "portcullis_semantic_routing_total",
                "Semantic routing decisions by chosen route and outcome (matched, no_match, no_prompt, error).",
                &["proxy", "route", "outcome"],
            ),
            guard_rejections: counter(
                "portcullis_prompt_guard_rejections_total",
                "Prompts rejected by the semantic prompt guard, by denied topic.",
                &["proxy", "topic"],
            ),
            semantic_errors: counter(
                "portcullis_semantic_service_errors_total",
                "Failed calls to the semantic (embeddings) service.",
                &["proxy"],
            ),
            semantic_duration: HistogramVec::new(
                HistogramOpts::new(
                    "portcullis_semantic_service_duration_seconds",
                    "Time to embed a request's prompt, first-use topic indexing included.",
                )
                .buckets(EMBED_BUCKETS.to_vec()),
                &["proxy"],
            )
            .expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.route_healthy.clone()),
            Box::new(m.ejections.clone()),
            Box::new(m.failovers.clone()),
            Box::new(m.budget_exhausted.clone()),
            Box::new(m.semantic_decisions.clone()),
            Box::new(m.guard_rejections.clone()),
            Box::new(m.semantic_errors.clone()),
            Box::new(m.semantic_duration.clone()),
        ];
        for c in collectors {
            if let Err(e) = registry.register(c) {
                tracing::warn!(error = %e, "routing metric not registered");
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exported() {
        let registry = Registry::new();
        let m = RoutingMetrics::new(&registry);
        m.route_healthy.with_label_values(&["p", "r"]).set(1);
        m.failovers
            .with_label_values(&["p", "r", "status_5xx"])
            .inc();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(
            names.contains(&"portcullis_route_healthy".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"portcullis_route_failovers_total".to_owned()),
            "{names:?}"
        );
        // A second set on the same registry does not panic.
        let _again = RoutingMetrics::new(&registry);
    }
}
