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

/// Whether the gateway should be sent traffic: its traffic port accepts,
/// it has a configuration (a managed gateway that has heard from neither
/// admin nor its disk copy serves only 404s), and it is not shutting down
/// (load balancers must stop sending before the listeners close).
#[derive(Debug, Default)]
pub struct Readiness {
    listening: AtomicBool,
    configured: AtomicBool,
    stopping: AtomicBool,
    closing: AtomicBool,
}

impl Readiness {
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }
    pub fn set_configured(&self) {
        self.configured.store(true, Ordering::Release);
    }
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The process is going away (SIGTERM, or SIGQUIT handing its sockets
    /// to a new process): every HTTP/1 response from now on closes its
    /// connection, so clients open their next one (to whoever listens
    /// then) instead of sending into a connection about to be closed.
    pub fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Acquire) {
            Err("shutting down")
        } else if !self.configured.load(Ordering::Acquire) {
            Err("no configuration loaded yet")
        } else if !self.listening.load(Ordering::Acquire) {
            Err("traffic listener not accepting yet")
        } else {
            Ok(())
        }
    }
}

/// Serves the operations endpoints.
pub struct OpsApp {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let (status, content_type, body) = match path.as_str() {
            "/metrics" => (200, "text/plain; version=0.0.4", self.metrics.render()),
            "/healthz" => (200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => match self.readiness.check() {
                Ok(()) => (200, "application/json", br#"{"status":"ready"}"#.to_vec()),
                Err(why) => (
                    503,
                    "application/json",
                    serde_json::json!({"status": "not ready", "reason": why})
                        .to_string()
                        .into_bytes(),
                ),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_listening_configured_and_not_stopping() {
        let r = Readiness::default();
        r.set_listening();
        assert_eq!(r.check(), Err("no configuration loaded yet"));
        r.set_configured();
        assert_eq!(r.check(), Ok(()));
        r.set_stopping();
        assert_eq!(r.check(), Err("shutting down"));
    }
}
