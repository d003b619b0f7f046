//! OpenTelemetry trace export over OTLP/HTTP with the JSON encoding.
//!
//! Each request yields a SERVER span for the gateway and, when a provider
//! was called, a CLIENT child span named and attributed by the GenAI
//! semantic conventions (`chat gpt-5-mini`, `gen_ai.*`). An incoming W3C
//! `traceparent` is continued, and the provider call carries one too.
//!
//! Spans are handed to a background thread through a bounded channel (the
//! request path never waits on the collector; when the channel is full the
//! span is dropped and counted) and posted in batches to
//! `{otlp_endpoint}/v1/traces`. A hand-rolled exporter keeps the gateway
//! free of a second HTTP and gRPC stack: it reuses Pingora's client.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::upstreams::peer::HttpPeer;
use prometheus::IntCounter;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::OtlpTarget;
use crate::providers::UpstreamRequest;

/// Largest number of spans posted at once.
const BATCH: usize = 512;
/// Spans waiting for export before new ones are dropped.
const QUEUE: usize = 8192;
/// How often a partial batch is flushed.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// W3C trace identity of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    /// The caller's span, from `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The gateway's SERVER span.
    pub server_span: [u8; 8],
    /// The provider call's CLIENT span.
    pub client_span: [u8; 8],
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let r = uuid::Uuid::new_v4();
        let b = r.as_bytes();
        let n = (N - filled).min(b.len());
        out[filled..filled + n].copy_from_slice(&b[..n]);
        filled += n;
    }
    out
}

impl TraceIds {
    /// Continues the caller's trace if `traceparent` is valid, else starts one.
    pub fn from_traceparent(header: Option<&str>) -> TraceIds {
        let parsed = header.and_then(|h| {
            let mut parts = h.trim().split('-');
            let (version, trace, span, _flags) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            if version != "00" || trace.len() != 32 || span.len() != 16 {
                return None;
            }
            let mut t = [0u8; 16];
            let mut s = [0u8; 8];
            hex::decode_to_slice(trace, &mut t).ok()?;
            hex::decode_to_slice(span, &mut s).ok()?;
            // All-zero ids are invalid per W3C Trace Context.
            (t != [0; 16] && s != [0; 8]).then_some((t, s))
        });
        let (trace_id, parent) = match parsed {
            Some((t, s)) => (t, Some(s)),
            None => (random_bytes::<16>(), None),
        };
        TraceIds {
            trace_id,
            parent,
            server_span: random_bytes(),
            client_span: random_bytes(),
        }
    }

    /// The `traceparent` for the provider call (sampled).
    pub fn upstream_traceparent(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex::encode(self.trace_id),
            hex::encode(self.client_span)
        )
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    /// 2 = SERVER, 3 = CLIENT (OTLP `SpanKind`).
    pub kind: u8,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Attr)>,
    pub error: bool,
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

impl Span {
    fn to_json(&self) -> Value {
        let attributes: Vec<Value> = self
            .attributes
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Attr::Str(s) => json!({"stringValue": s}),
                    // OTLP/JSON encodes 64-bit integers as strings.
                    Attr::Int(i) => json!({"intValue": i.to_string()}),
                    Attr::Bool(b) => json!({"boolValue": b}),
                };
                json!({"key": k, "value": value})
            })
            .collect();
        let mut span = json!({
            "traceId": hex::encode(self.trace_id),
            "spanId": hex::encode(self.span_id),
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": nanos(self.start),
            "endTimeUnixNano": nanos(self.end),
            "attributes": attributes,
            "status": {"code": if self.error { 2 } else { 1 }},
        });
        if let Some(p) = self.parent {
            span["parentSpanId"] = json!(hex::encode(p));
        }
        span
    }
}

/// The OTLP/JSON request body for a batch of spans.
pub fn export_body(service_name: &str, spans: &[Span]) -> Vec<u8> {
    let body = json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service_name}}]},
            "scopeSpans": [{
                "scope": {"name": "portcullis-gateway", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(),
            }]
        }]
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Hands spans to the exporter; a no-op when tracing is off.
pub struct Tracer {
    tx: Option<mpsc::Sender<Span>>,
    dropped: IntCounter,
}

impl Tracer {
    /// A tracer that exports nothing.
    pub fn disabled(dropped: IntCounter) -> Tracer {
        Tracer { tx: None, dropped }
    }

    /// A tracer for `target`, and its exporter: a task for the gateway's
    /// background services (`background::service`). Spans wait in a
    /// bounded queue until it runs; past that they are dropped and counted.
    pub fn new(
        target: OtlpTarget,
        service_name: String,
        dropped: IntCounter,
    ) -> (
        Tracer,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let exporter = export_loop(target, service_name, rx, dropped.clone());
        (
            Tracer {
                tx: Some(tx),
                dropped,
            },
            exporter,
        )
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a span without waiting; drops (and counts) it when full.
    pub fn export(&self, span: Span) {
        if let Some(tx) = &self.tx
            && tx.try_send(span).is_err()
        {
            self.dropped.inc();
        }
    }
}

async fn export_loop(
    target: OtlpTarget,
    service_name: String,
    mut rx: mpsc::Receiver<Span>,
    dropped: IntCounter,
) {
    let connector = Connector::new(None);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = rx.recv().await;
        let Some(first) = first else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        if let Err(e) = post(&connector, &target, &service_name, &batch).await {
            dropped.inc_by(batch.len() as u64);
            tracing::warn!(error = %e, spans = batch.len(), "OTLP export failed");
        }
        batch.clear();
    }
}

async fn post(
    connector: &Connector,
    target: &OtlpTarget,
    service_name: &str,
    spans: &[Span],
) -> Result<(), String> {
    let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("collector host resolves to no address")?;
    let mut peer = HttpPeer::new(addr, target.tls, target.host.clone());
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.read_timeout = Some(Duration::from_secs(5));
    peer.options.write_timeout = Some(Duration::from_secs(5));
    let req = UpstreamRequest {
        method: http::Method::POST,
        path: target.path.clone(),
        headers: vec![("content-type", "application/json".to_owned())],
        body: Bytes::from(export_body(service_name, spans)),
    };
    let host = format!("{}:{}", target.host, target.port);
    let ex = crate::upstream::send(connector, &peer, &host, &req)
        .await
        .map_err(|e| e.message)?;
    let status = ex.status;
    crate::upstream::read_body(connector, &peer, ex, 1024 * 1024)
        .await
        .map_err(|e| e.message)?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("collector answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_started() {
        let t = TraceIds::from_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(hex::encode(t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent.map(hex::encode).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(t.server_span, t.client_span);
        let up = t.upstream_traceparent();
        assert!(
            up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{up}"
        );
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let t = TraceIds::from_traceparent(bad);
            assert!(t.parent.is_none());
            assert_ne!(t.trace_id, [0; 16]);
        }
    }

    #[test]
    fn export_body_follows_otlp_json() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            name: "chat gpt-5-mini".into(),
            kind: 3,
            start: t,
            end: t + Duration::from_millis(5),
            attributes: vec![
                ("gen_ai.usage.input_tokens", Attr::Int(12)),
                ("gen_ai.operation.name", Attr::Str("chat".into())),
            ],
            error: false,
        };
        let v: Value = serde_json::from_slice(&export_body("gw", &[span])).unwrap();
        let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(
            v["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "gw"
        );
        assert_eq!(s["traceId"], "01010101010101010101010101010101");
        assert_eq!(s["parentSpanId"], "0303030303030303");
        assert_eq!(s["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(s["endTimeUnixNano"], "1700000000128456789");
        assert_eq!(s["attributes"][0]["value"]["intValue"], "12");
        assert_eq!(s["kind"], 3);
    }
}
