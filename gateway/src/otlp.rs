//! OpenTelemetry trace export over OTLP: HTTP with protobuf (the
//! default) or JSON, or gRPC.
//!
//! Each request yields a SERVER span for the gateway and, when a provider
//! was called, a CLIENT child span named and attributed by the GenAI
//! semantic conventions (`chat gpt-5-mini`, `gen_ai.*`). An incoming W3C
//! `traceparent` is continued, and the provider call carries one too.
//!
//! The gateway builds its spans itself, after the request, with the ids it
//! already sent to the provider in `traceparent` and the times it measured,
//! so it does not run the OpenTelemetry SDK's tracer; it hands finished
//! spans to the exporter of `opentelemetry-otlp` (the wire encodings and
//! the gRPC and HTTP transports). Spans go through a bounded channel (the
//! request path never waits on the collector; when the channel is full the
//! span is dropped and counted) to a background service that exports them
//! in batches (`background::service`, `BG otlp-exporter`). Over HTTP the
//! exporter posts with the gateway's own HTTP client (reqwest, rustls);
//! gRPC runs on tonic.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prometheus::IntCounter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};

use crate::config::{OtlpProtocol, OtlpTarget, Telemetry};

/// Largest number of spans posted at once.
const BATCH: usize = 512;
/// Spans waiting for export before new ones are dropped.
const QUEUE: usize = 8192;
/// How often a partial batch is flushed.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Longest one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Whether the trace is recorded: the caller's flag when it sent a
    /// `traceparent`, else the gateway's sampling ratio.
    pub sampled: bool,
}

/// Random, non-zero ids (W3C Trace Context forbids all-zero ones). Every
/// bit random: the sampling decision reads the trace id's last 8 bytes.
fn random_bytes<const N: usize>() -> [u8; N]
where
    rand::distr::StandardUniform: rand::distr::Distribution<[u8; N]>,
{
    loop {
        let out: [u8; N] = rand::random();
        if out.iter().any(|b| *b != 0) {
            return out;
        }
    }
}

impl TraceIds {
    /// Continues the caller's trace if `traceparent` is valid (and follows
    /// its sampled flag), else starts one, sampled when the trace id falls
    /// under `threshold` (see [`sampling_threshold`]).
    pub fn from_traceparent(header: Option<&str>, threshold: u64) -> TraceIds {
        let parsed = header.and_then(|h| {
            let mut parts = h.trim().split('-');
            let (version, trace, span, flags) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
                return None;
            }
            let mut t = [0u8; 16];
            let mut s = [0u8; 8];
            let mut f = [0u8; 1];
            hex::decode_to_slice(trace, &mut t).ok()?;
            hex::decode_to_slice(span, &mut s).ok()?;
            hex::decode_to_slice(flags, &mut f).ok()?;
            // All-zero ids are invalid per W3C Trace Context.
            (t != [0; 16] && s != [0; 8]).then_some((t, s, f[0] & 1 == 1))
        });
        let (trace_id, parent, sampled) = match parsed {
            Some((t, s, sampled)) => (t, Some(s), sampled),
            None => {
                let t = random_bytes::<16>();
                (t, None, ratio_says(&t, threshold))
            }
        };
        TraceIds {
            trace_id,
            parent,
            server_span: random_bytes(),
            client_span: random_bytes(),
            sampled,
        }
    }

    /// The `traceparent` for the provider call, with the sampling decision.
    pub fn upstream_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex::encode(self.trace_id),
            hex::encode(self.client_span),
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// The sampling threshold of a ratio: a trace is sampled when the last 8
/// bytes of its id, as a number, fall below it (OpenTelemetry's
/// TraceIdRatioBased does the same, so every service of a trace that uses
/// the ratio decides alike).
pub fn sampling_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

fn ratio_says(trace_id: &[u8; 16], threshold: u64) -> bool {
    if threshold == u64::MAX {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    u64::from_be_bytes(low) < threshold
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Float(f64),
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

impl Span {
    /// The span as the OpenTelemetry SDK's exporters take it.
    fn to_span_data(&self, scope: &InstrumentationScope) -> SpanData {
        let attributes = self
            .attributes
            .iter()
            .map(|(k, v)| match v {
                Attr::Str(s) => KeyValue::new(*k, s.clone()),
                Attr::Int(i) => KeyValue::new(*k, *i),
                Attr::Float(f) => KeyValue::new(*k, *f),
                Attr::Bool(b) => KeyValue::new(*k, *b),
            })
            .collect();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(self.trace_id),
                SpanId::from_bytes(self.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: self.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            // The SERVER span's parent is the caller's; the CLIENT span's is
            // the gateway's own SERVER span.
            parent_span_is_remote: self.parent.is_some() && self.kind == 2,
            span_kind: match self.kind {
                2 => SpanKind::Server,
                3 => SpanKind::Client,
                _ => SpanKind::Internal,
            },
            name: self.name.clone().into(),
            start_time: self.start,
            end_time: self.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if self.error {
                Status::error("")
            } else {
                Status::Ok
            },
            instrumentation_scope: scope.clone(),
        }
    }
}

/// Where spans go, and the `service.name` they carry; `None`: tracing off.
type Target = Option<(OtlpTarget, String)>;

/// Hands spans to the exporter. Configured with each configuration
/// (`configure`), so a reload can turn export on or off, change the
/// collector or the sampling ratio without a restart.
pub struct Tracer {
    tx: mpsc::Sender<Span>,
    target: watch::Sender<Target>,
    enabled: AtomicBool,
    /// `sampling_threshold` of the ratio in force.
    threshold: AtomicU64,
    dropped: IntCounter,
}

impl Tracer {
    /// A tracer exporting nothing until configured, and its exporter: a
    /// task for the gateway's background services (`background::service`).
    /// Spans wait in a bounded queue until it runs; past that they are
    /// dropped and counted.
    pub fn new(
        dropped: IntCounter,
    ) -> (
        Tracer,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (target, targets) = watch::channel(None);
        let exporter = export_loop(targets, rx, dropped.clone());
        (
            Tracer {
                tx,
                target,
                enabled: AtomicBool::new(false),
                threshold: AtomicU64::new(u64::MAX),
                dropped,
            },
            exporter,
        )
    }

    /// Follows the telemetry settings of a configuration.
    pub fn configure(&self, t: &Telemetry) {
        let target: Target = t.otlp.clone().map(|o| (o, t.service_name.clone()));
        self.enabled.store(target.is_some(), Ordering::Relaxed);
        self.threshold
            .store(sampling_threshold(t.sampling_ratio), Ordering::Relaxed);
        self.target.send_if_modified(|current| {
            if *current == target {
                return false;
            }
            *current = target;
            true
        });
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The trace of a request: the caller's `traceparent` continued, or a
    /// new one sampled by the ratio in force.
    pub fn trace(&self, traceparent: Option<&str>) -> TraceIds {
        TraceIds::from_traceparent(traceparent, self.threshold.load(Ordering::Relaxed))
    }

    /// Queues a span without waiting; drops (and counts) it when full.
    pub fn export(&self, span: Span) {
        if self.enabled() && self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

/// The exporter for the target in force, rebuilt when it changes.
fn exporter_for(target: &Target) -> Option<opentelemetry_otlp::SpanExporter> {
    let (target, service_name) = target.as_ref()?;
    match exporter(target) {
        Ok(mut e) => {
            e.set_resource(
                &Resource::builder()
                    .with_service_name(service_name.clone())
                    .build(),
            );
            Some(e)
        }
        Err(e) => {
            tracing::error!(error = %e, url = %target.url, "cannot start the OTLP exporter; spans are dropped");
            None
        }
    }
}

async fn export_loop(
    mut targets: watch::Receiver<Target>,
    mut rx: mpsc::Receiver<Span>,
    dropped: IntCounter,
) {
    let mut exporter = exporter_for(&targets.borrow_and_update());
    let scope = InstrumentationScope::builder("portcullis-gateway")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = rx.recv().await;
        let Some(first) = first else { return };
        if targets.has_changed().unwrap_or(false) {
            exporter = exporter_for(&targets.borrow_and_update());
        }
        batch.push(first.to_span_data(&scope));
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span.to_span_data(&scope)),
                Ok(None) | Err(_) => break,
            }
        }
        let spans = batch.len();
        let Some(e) = exporter.as_mut() else {
            batch.clear();
            dropped.inc_by(spans as u64);
            continue;
        };
        if let Err(e) = e.export(std::mem::take(&mut batch)).await {
            dropped.inc_by(spans as u64);
            tracing::warn!(error = %e, spans, "OTLP export failed");
        }
    }
}

/// The exporter for `target`'s protocol.
fn exporter(target: &OtlpTarget) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match target.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&target.url)
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        http => {
            let client = portcullis_net::client_builder(None)
                .map_err(|e| e.to_string())?
                .timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| e.to_string())?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(HttpClient(client))
                .with_protocol(if http == OtlpProtocol::HttpJson {
                    Protocol::HttpJson
                } else {
                    Protocol::HttpBinary
                })
                .with_endpoint(&target.url)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        }
    };
    built.map_err(|e| e.to_string())
}

/// The gateway's HTTP client (reqwest with rustls) for the OTLP/HTTP
/// exporter, instead of a second reqwest version it would bring.
#[derive(Debug)]
struct HttpClient(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        let mut out = http::Response::builder().status(status).body(body)?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_started() {
        let t = TraceIds::from_traceparent(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            0,
        );
        assert!(t.sampled, "the caller's flag decides, not the ratio");
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
            let t = TraceIds::from_traceparent(bad, u64::MAX);
            assert!(t.parent.is_none() && t.sampled);
            assert_ne!(t.trace_id, [0; 16]);
        }
    }

    #[test]
    fn the_ratio_samples_new_traces_and_the_callers_flag_wins() {
        let unsampled = TraceIds::from_traceparent(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            u64::MAX,
        );
        assert!(!unsampled.sampled);
        assert!(unsampled.upstream_traceparent().ends_with("-00"));
        assert!(!TraceIds::from_traceparent(None, sampling_threshold(0.0)).sampled);
        let quarter = sampling_threshold(0.25);
        let n = (0..4000)
            .filter(|_| TraceIds::from_traceparent(None, quarter).sampled)
            .count();
        assert!((800..1200).contains(&n), "{n} of 4000 sampled at 0.25");
    }

    #[test]
    fn spans_keep_their_ids_times_kind_and_attributes() {
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
        let scope = InstrumentationScope::builder("portcullis-gateway").build();
        let d = span.to_span_data(&scope);
        assert_eq!(
            d.span_context.trace_id().to_string(),
            "01010101010101010101010101010101"
        );
        assert_eq!(d.span_context.span_id().to_string(), "0202020202020202");
        assert_eq!(d.parent_span_id.to_string(), "0303030303030303");
        assert!(!d.parent_span_is_remote, "a CLIENT span's parent is ours");
        assert_eq!(d.span_kind, SpanKind::Client);
        assert_eq!(
            (d.start_time, d.end_time),
            (t, t + Duration::from_millis(5))
        );
        assert_eq!(
            d.attributes[0],
            KeyValue::new("gen_ai.usage.input_tokens", 12)
        );
        assert_eq!(d.status, Status::Ok);
    }
}
