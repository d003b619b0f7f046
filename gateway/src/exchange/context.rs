//! What the gateway knows about one request: the facts fixed once the
//! request has been read (who asked what, through which proxy), and the
//! tally the exchange accumulates (the route taken, the status, usage and
//! timings) for the access log, the metrics and the trace.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use portcullis_types::Usage;

use crate::error::ErrorKind;
use crate::otlp::TraceIds;

/// Per-request state, Pingora's `CTX`.
pub struct RequestCtx {
    pub request: RequestInfo,
    pub tally: Tally,
    /// Counted in the in-flight gauge (undone once, at `logging`).
    pub(super) inflight: bool,
}

/// Set while the request is read (ingress), fixed after.
pub struct RequestInfo {
    pub request_id: String,
    pub started: Instant,
    /// Wall-clock start, for span timestamps.
    pub started_wall: SystemTime,
    /// `METHOD /path`, the SERVER span's name.
    pub span_name: String,
    /// Trace identity, when spans are exported.
    pub trace: Option<TraceIds>,
    pub proxy_id: Option<String>,
    pub key_name: Option<Arc<str>>,
    /// The key's stable id (what limits and metrics count by).
    pub key_id: Option<Arc<str>>,
    /// The key's application and subscription (application keys).
    pub caller: crate::policy::CallerIds,
    /// `chat` or `embeddings` (the GenAI `gen_ai.operation.name`).
    pub operation: &'static str,
    pub stream: bool,
}

/// What the exchange accumulates: the attempt that answered, and what the
/// request is charged and reported as.
pub struct Tally {
    pub route: Option<String>,
    pub provider: &'static str,
    pub model: Option<String>,
    /// The request-model label: the model if the proxy serves it, else `other`.
    pub model_label: String,
    /// The model the provider says answered.
    pub response_model: Option<String>,
    pub status: u16,
    pub error: Option<ErrorKind>,
    pub usage: Option<Usage>,
    /// The price of the model the route called, when known (the cost is
    /// the final usage at it).
    pub price: Option<portcullis_types::pricing::Price>,
    pub upstream_time: Option<Duration>,
    pub first_token: Option<Duration>,
    /// When the provider call started, relative to `RequestInfo::started`.
    pub upstream_offset: Option<Duration>,
}

impl RequestCtx {
    /// What the request cost: its final usage at the price of the model
    /// the route called, when both are known.
    pub fn cost(&self) -> Option<f64> {
        let (price, usage) = (self.tally.price?, self.tally.usage.as_ref()?);
        Some(price.cost(usage))
    }

    pub fn new() -> Self {
        RequestCtx {
            request: RequestInfo {
                request_id: String::new(),
                started: Instant::now(),
                started_wall: SystemTime::UNIX_EPOCH,
                span_name: String::new(),
                trace: None,
                proxy_id: None,
                key_name: None,
                key_id: None,
                caller: Default::default(),
                operation: "chat",
                stream: false,
            },
            tally: Tally {
                route: None,
                provider: "none",
                model: None,
                model_label: String::new(),
                response_model: None,
                status: 0,
                error: None,
                usage: None,
                price: None,
                upstream_time: None,
                first_token: None,
                upstream_offset: None,
            },
            inflight: false,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    /// Marks a request whose client went away before its answer was
    /// delivered: status 499 (nginx's "client closed request") and the
    /// `client_cancelled` error type, a client event rather than a gateway
    /// failure. Its usage is still counted.
    pub fn client_left(&mut self) {
        self.status = 499;
        self.error = Some(ErrorKind::ClientCancelled);
    }

    /// A client that left while the provider had not answered.
    pub fn left_while_waiting(&mut self, upstream_started: Instant) {
        self.upstream_time = Some(upstream_started.elapsed());
        self.client_left();
    }

    /// Forgets what a failed attempt saw, so it does not leak into the next.
    pub fn next_attempt(&mut self) {
        self.first_token = None;
        self.response_model = None;
    }
}

/// Provider time across a request's attempts: every attempt's wait counts
/// as upstream time, so failovers are not reported as gateway overhead, and
/// the provider span starts with the first attempt.
#[derive(Default)]
pub(super) struct AttemptClock {
    first_offset: Option<Duration>,
    waited: Duration,
}

impl AttemptClock {
    pub(super) fn failed(&mut self, tally: &mut Tally) {
        self.first_offset = self.first_offset.or(tally.upstream_offset);
        self.waited += tally.upstream_time.take().unwrap_or_default();
    }

    pub(super) fn settle(&self, tally: &mut Tally) {
        if self.first_offset.is_none() {
            return;
        }
        tally.upstream_offset = self.first_offset;
        tally.upstream_time = Some(self.waited + tally.upstream_time.unwrap_or_default());
    }
}
