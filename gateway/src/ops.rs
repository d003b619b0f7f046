//! The operations listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! Kept off the traffic port so that metrics are not reachable by API
//! clients and a flood of traffic cannot starve health checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;

/// Serves the operations endpoints.
pub struct OpsApp {
    pub metrics: Arc<Metrics>,
    /// Set once a configuration is loaded and the gateway can serve.
    pub ready: Arc<AtomicBool>,
}

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let (status, content_type, body) = match path.as_str() {
            "/metrics" => (200, "text/plain; version=0.0.4", self.metrics.render()),
            "/healthz" => (200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                (200, "application/json", br#"{"status":"ready"}"#.to_vec())
            }
            "/readyz" => (
                503,
                "application/json",
                br#"{"status":"not ready"}"#.to_vec(),
            ),
            _ => (
                404,
                "application/json",
                br#"{"error":"not found"}"#.to_vec(),
            ),
        };
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}
