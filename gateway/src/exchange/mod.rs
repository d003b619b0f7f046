//! The exchange: one client request from its header to the access log.
//!
//! LLM traffic is not byte-for-byte proxying: the whole request body is
//! needed before a route can be picked (the model is in it), bodies are
//! translated both ways, and streams are re-encoded chunk by chunk while
//! tokens are counted. So the gateway does the whole exchange in Pingora's
//! `request_filter` (see `server`, the thin glue): it reads the body under
//! its own size limit, calls the provider over Pingora's pooled connector,
//! and writes the response itself, streaming each chunk to the client as
//! soon as it is decoded. Pingora still owns the listeners, TLS, HTTP/1.1
//! and HTTP/2 framing, keep-alive and the upstream connection pool.
//! (Pingora's own body replay after `request_filter` goes through a retry
//! buffer capped at 64 KiB, too small for requests carrying images.)
//!
//! The steps, one module each:
//!
//! - `ingress`: request id and trace, the proxy by base path, the endpoint,
//!   the caller's key, the body under the gateway's limits;
//! - the client's format (`inbound::ClientFormat`, in the formats crate):
//!   parse, render the answer, the stream and errors;
//! - `chat` and `embeddings`: the policies' request phase, then one
//!   attempt per route (`routes`, the walk through the planned routes)
//!   until one answers; `forwarded` does the same for the OpenAI endpoints
//!   passed to OpenAI-format providers as they came (legacy completions,
//!   moderations);
//! - `attempt`: one provider call, sent while the client is watched, and
//!   its reply classified;
//! - `stream`: a streamed answer relayed as a type (`StreamRelay`);
//! - `egress`: headers and writes to the client;
//! - `report`: metrics, the access log line, spans.
//!
//! `context` holds what the gateway knows about a request: the facts fixed
//! once it is read, and the tally the exchange accumulates.

mod attempt;
mod chat;
mod context;
mod egress;
mod embeddings;
mod forwarded;
mod ingress;
mod report;
mod routes;
mod stream;

use std::sync::Arc;

use pingora::connectors::http::Connector;
use pingora::proxy::Session;
use tracing::Instrument;

pub use context::{RequestCtx, RequestInfo, Tally};

use crate::config::{InboundKind, Resource};
use crate::error::GatewayError;
use crate::inbound::{self, ClientFormat, client_format};
use crate::key_usage::KeyUsage;
use crate::metrics::Metrics;
use crate::otlp::Tracer;
use crate::routing::RoutingMetrics;
use crate::runtime::{Proxy, Runtime};
use egress::write_json;
use ingress::{Endpoint, model_list, strip_proxy_prefix};

/// The gateway service, shared by all requests.
pub struct Gateway {
    /// Shared with the managed-mode agent, which swaps it (`runtime_handle`).
    runtime: crate::live::Slot,
    connector: Connector,
    pub metrics: Arc<Metrics>,
    tracer: Arc<Tracer>,
    /// Route health, failover and semantic routing metrics.
    routing_metrics: RoutingMetrics,
    /// Which keys authenticated requests, for managed heartbeats.
    key_usage: Arc<KeyUsage>,
    /// What requests spent, for managed heartbeats.
    spend: Arc<crate::spend::SpendLedger>,
    /// What `/readyz` answers; a swapped-in configuration marks it configured.
    pub readiness: Arc<crate::ops::Readiness>,
    /// Runtimes whose semantic indexes are to be computed.
    index: crate::live::IndexQueue,
    /// The gateway's background services, until the server takes them.
    background: std::sync::Mutex<Vec<Box<dyn pingora::services::ServiceWithDependents>>>,
}

impl Gateway {
    /// A gateway serving `runtime`.
    pub fn new(runtime: Runtime, metrics: Arc<Metrics>) -> Self {
        let dropped = metrics.spans_dropped.clone();
        let (index, indexer) = crate::live::indexer();
        let mut background = vec![crate::background::service("semantic-index", indexer)];
        // The exporter runs even while tracing is off: a reload may turn
        // it on (a managed gateway's settings).
        let (tracer, exporter) = Tracer::new(dropped);
        tracer.configure(&runtime.telemetry);
        background.push(crate::background::service("otlp-exporter", exporter));
        // Fetches and refreshes providers' credentials (`auth:`) for this
        // and every later configuration.
        background.push(crate::background::service(
            "provider-auth",
            crate::upstream::auth::refresher(metrics.clone()),
        ));
        let tracer = Arc::new(tracer);
        let runtime = Arc::new(runtime);
        if runtime.adopt_semantic(None) {
            let _ = index.send(runtime.clone());
        }
        let slot = crate::live::slot(runtime);
        // Runs whatever the configuration: a reload may turn discovery on.
        background.push(crate::background::service(
            "model-discovery",
            crate::live::discovery_refresher(slot.clone(), metrics.clone()),
        ));
        Gateway {
            runtime: slot,
            connector: Connector::new(None),
            routing_metrics: RoutingMetrics::new(&metrics.registry),
            metrics,
            tracer,
            key_usage: Arc::default(),
            spend: Arc::default(),
            readiness: Arc::default(),
            index,
            background: std::sync::Mutex::new(background),
        }
    }

    /// The gateway's own background services (semantic indexing, OTLP
    /// export), for the server to run; taken once.
    pub fn background_services(&self) -> Vec<Box<dyn pingora::services::ServiceWithDependents>> {
        self.background
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }

    /// The configuration in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The slot the configuration in force is read from (the TLS
    /// listener's certificates).
    pub fn runtime_slot(&self) -> crate::live::Slot {
        self.runtime.clone()
    }

    /// A handle that swaps this gateway's configuration from outside the
    /// service (the managed-mode agent), like `replace_runtime`.
    pub fn runtime_handle(&self) -> crate::live::RuntimeHandle {
        crate::live::RuntimeHandle::new(
            self.runtime.clone(),
            self.key_usage.clone(),
            self.readiness.clone(),
            self.index.clone(),
            self.tracer.clone(),
            self.spend.clone(),
        )
    }

    /// Swaps in a new configuration; requests in flight finish on the old one.
    pub fn replace_runtime(&self, runtime: Runtime) {
        self.runtime_handle().replace(runtime);
    }

    /// Serves one request whole: the answer, or an error in the client's
    /// format, has been written (or the client is gone) when it returns.
    pub async fn serve(&self, session: &mut Session, ctx: &mut RequestCtx) {
        ctx.request.started = std::time::Instant::now();
        ingress::identify(session, ctx, &self.tracer);
        self.metrics.inflight.inc();
        ctx.inflight = true;
        // Errors before the format is known are OpenAI's.
        let mut format = client_format(InboundKind::Openai);
        // Debug spans: events of a request nest under its id and route
        // when debug logs are on. Warnings carry the request id as a field
        // of their own: always-on (info) spans cost 5-9 µs of CPU per
        // request, 10-15% of a request without policies
        // (docs/benchmarks.md, Request spans).
        let span = tracing::debug_span!("request", request_id = %ctx.request.request_id);
        let handled = self
            .handle(session, ctx, &mut format)
            .instrument(span)
            .await;
        if let Err(e) = handled {
            if e.status >= 500 {
                tracing::warn!(request_id = %ctx.request.request_id, error = %e, "request failed");
            }
            ctx.tally.status = e.status;
            ctx.tally.error = Some(e.kind);
            let body = format.render_error(&e);
            let extra: Vec<(&str, &str)> = e
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            write_json(session, ctx, e.status, body, &extra).await;
        }
    }

    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        format: &mut &'static dyn ClientFormat,
    ) -> Result<(), GatewayError> {
        let rt = self.runtime();
        let (path, query) = {
            let uri = &session.req_header().uri;
            (uri.path().to_owned(), uri.query().map(str::to_owned))
        };
        let Some((proxy, rest)) = ingress::find_proxy(&rt, &path) else {
            return Err(GatewayError::not_found(format!(
                "No proxy serves the path `{path}`."
            )));
        };
        let proxy = proxy.clone();
        ctx.request.proxy_id = Some(proxy.id.clone());
        let method = session.req_header().method.clone();
        let endpoint = ingress::match_endpoint(&proxy, &method, rest)?;
        if let Endpoint::Chat { format: f, .. } = &endpoint {
            *format = *f;
        }
        let caller = ingress::authenticate(session, &proxy, query.as_deref(), &self.key_usage)?;
        ctx.request.key_name = Some(caller.name);
        ctx.request.key_id = Some(caller.id);
        ctx.request.caller = caller.ids;
        let scope = caller.scope;
        if let Some(s) = &scope {
            ingress::check_endpoint_scope(s, &endpoint)?;
        }

        match endpoint {
            Endpoint::Models => {
                let mut list = model_list(&proxy);
                // A key lists what it may call.
                list.data.retain(|m| {
                    ingress::check_model_scope(scope.as_deref(), strip_proxy_prefix(&proxy, &m.id))
                        .is_ok()
                });
                let body =
                    serde_json::to_vec(&list).map_err(|e| GatewayError::internal(e.to_string()))?;
                ctx.tally.status = 200;
                write_json(session, ctx, 200, body, &[]).await;
                Ok(())
            }
            Endpoint::Model(id) => {
                let bare = strip_proxy_prefix(&proxy, &id);
                ingress::check_model_scope(scope.as_deref(), bare)?;
                let list = model_list(&proxy);
                let entry = list
                    .data
                    .into_iter()
                    .find(|m| strip_proxy_prefix(&proxy, &m.id) == bare)
                    .ok_or_else(|| GatewayError::model_not_found(&id))?;
                let body = serde_json::to_vec(&entry)
                    .map_err(|e| GatewayError::internal(e.to_string()))?;
                ctx.tally.status = 200;
                write_json(session, ctx, 200, body, &[]).await;
                Ok(())
            }
            Endpoint::Embeddings => {
                let body = ingress::read_body(session, &rt).await?;
                let req = inbound::openai::parse_embeddings(&body)?;
                inbound::check_model(&req.model)?;
                ingress::check_model_scope(
                    scope.as_deref(),
                    strip_proxy_prefix(&proxy, &req.model),
                )?;
                self.embeddings(session, ctx, &rt, &proxy, req).await
            }
            Endpoint::Completions => {
                let body = ingress::read_body(session, &rt).await?;
                let req = inbound::openai::parse_completions(&body)?;
                inbound::check_model(&req.model)?;
                ingress::check_model_scope(
                    scope.as_deref(),
                    strip_proxy_prefix(&proxy, &req.model),
                )?;
                self.completions(session, ctx, &rt, &proxy, req).await
            }
            Endpoint::Moderations => {
                let body = ingress::read_body(session, &rt).await?;
                let req = inbound::openai::parse_moderations(&body)?;
                inbound::check_model(req.routed_model())?;
                ingress::check_model_scope(
                    scope.as_deref(),
                    strip_proxy_prefix(&proxy, req.routed_model()),
                )?;
                self.moderations(session, ctx, &rt, &proxy, req).await
            }
            Endpoint::Chat { format, path } => {
                // A model named in the path is checked before the body is read.
                if let Some(model) = &path.model {
                    inbound::check_model(model)?;
                }
                let body = ingress::read_body(session, &rt).await?;
                let req = format.parse(&body, &path)?;
                inbound::check_model(&req.model)?;
                ingress::check_model_scope(
                    scope.as_deref(),
                    strip_proxy_prefix(&proxy, &req.model),
                )?;
                // A Responses request may reach a provider that speaks the
                // Responses API as it came (`chat::forwardable`).
                let sent = (format.resource() == Resource::Responses).then_some(body);
                self.chat(session, ctx, &rt, &proxy, format, req, sent)
                    .await
            }
        }
    }

    /// The request is over (answered, failed, or its client gone): metrics,
    /// the access log line, spans.
    pub fn finish(&self, ctx: &mut RequestCtx, protocol: &str) {
        if ctx.inflight {
            self.metrics.inflight.dec();
            ctx.inflight = false;
        }
        if ctx.tally.status != 0 {
            report::record(&self.metrics, &self.spend, ctx, protocol);
            if let Some(ids) = ctx.request.trace.filter(|t| t.sampled) {
                report::export_spans(&self.tracer, ctx, ids);
            }
        }
    }

    /// Answers an error Pingora itself raised (malformed HTTP) with the
    /// OpenAI envelope instead of Pingora's HTML page.
    pub async fn fail(&self, session: &mut Session, ctx: &mut RequestCtx, err: &GatewayError) {
        ctx.tally.status = err.status;
        write_json(session, ctx, err.status, err.to_openai_json(), &[]).await;
    }
}

impl Gateway {
    /// Starts the proxy's policy chain, if it has one, and runs `phase` (a
    /// request phase of a request that is not a chat: embeddings, legacy
    /// completions, moderations) on it, noting what it signals.
    async fn request_phase(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        proxy: &Proxy,
        phase: impl FnOnce(
            &mut crate::policy::ChainRun,
            &crate::policy::RequestMeta<'_>,
        ) -> Result<(), GatewayError>,
    ) -> Result<Option<crate::policy::ChainRun>, GatewayError> {
        let Some(chain) = &proxy.policies else {
            return Ok(None);
        };
        let mut run = chain.start(Some(self.metrics.clone())).await?;
        let meta = request_meta(session, ctx, proxy, InboundKind::Openai);
        let outcome = phase(&mut run, &meta);
        self.note_policy_signals(proxy, &run, outcome.as_ref().err());
        outcome?;
        Ok(Some(run))
    }
}

/// Who the request is, for the policies' view of it.
fn request_meta<'a>(
    session: &'a Session,
    ctx: &'a RequestCtx,
    proxy: &'a Proxy,
    format: InboundKind,
) -> crate::policy::RequestMeta<'a> {
    crate::policy::RequestMeta {
        request_id: &ctx.request.request_id,
        proxy_id: &proxy.id,
        key_id: ctx.request.key_id.as_deref().unwrap_or(""),
        caller: ctx.request.caller.clone(),
        format,
        headers: &session.req_header().headers,
    }
}
