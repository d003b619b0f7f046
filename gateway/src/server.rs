//! The Pingora service: one `ProxyHttp` implementation that serves every
//! proxy of the configuration.
//!
//! LLM traffic is not byte-for-byte proxying: the whole request body is
//! needed before a route can be picked (the model is in it), bodies are
//! translated both ways, and streams are re-encoded chunk by chunk while
//! tokens are counted. So the service does the whole exchange in
//! `request_filter`: it reads the body under its own size limit, calls the
//! provider over Pingora's pooled connector, and writes the response
//! itself, streaming each chunk to the client as soon as it is decoded.
//! Pingora still owns the listeners, TLS, HTTP/1.1 and HTTP/2 framing,
//! keep-alive and the upstream connection pool. (Pingora's own body replay
//! after `request_filter` goes through a retry buffer capped at 64 KiB,
//! too small for requests carrying images.)

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use portcullis_types::{ChatRequest, ModelEntry, ModelList, Usage};
use tracing::Instrument;

use crate::config::{InboundKind, KeySource, Resource, Route, hash_key};
use crate::error::{ErrorKind, GatewayError};
use crate::inbound::{self, StreamEncoder};
use crate::key_usage::KeyUsage;
use crate::metrics::{Metrics, status_class};
use crate::otlp::{Attr, Span, TraceIds, Tracer};
use crate::providers::{StreamEvent, UpstreamCall, parse_upstream_json};
use crate::routing::{RoutingEnv, RoutingMetrics};
use crate::runtime::{Proxy, Runtime};
use crate::upstream::{self, MAX_UPSTREAM_BODY};

/// The gateway service, shared by all requests.
pub struct Gateway {
    /// Shared with the managed-mode agent, which swaps it (`runtime_handle`).
    runtime: crate::live::Slot,
    connector: Connector,
    pub metrics: Arc<Metrics>,
    tracer: Tracer,
    /// Route health, failover and semantic routing metrics.
    routing_metrics: RoutingMetrics,
    /// Which keys authenticated requests, for managed heartbeats.
    key_usage: Arc<KeyUsage>,
    /// What `/readyz` answers; a swapped-in configuration marks it configured.
    pub readiness: Arc<crate::ops::Readiness>,
}

/// Per-request state, kept for the access log and metrics.
pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub proxy_id: Option<String>,
    pub key_name: Option<Arc<str>>,
    pub route: Option<String>,
    pub provider: &'static str,
    pub model: Option<String>,
    /// The request-model label: the model if the proxy serves it, else `other`.
    pub model_label: String,
    /// The model the provider says answered.
    pub response_model: Option<String>,
    /// `chat` or `embeddings` (the GenAI `gen_ai.operation.name`).
    pub operation: &'static str,
    pub stream: bool,
    pub status: u16,
    pub error: Option<ErrorKind>,
    pub usage: Option<Usage>,
    pub upstream_time: Option<Duration>,
    pub first_token: Option<Duration>,
    /// When the provider call started, relative to `started`.
    pub upstream_offset: Option<Duration>,
    /// Trace identity, when spans are exported.
    pub trace: Option<TraceIds>,
    /// Wall-clock start, for span timestamps.
    pub started_wall: SystemTime,
    /// `METHOD /path`, the SERVER span's name.
    pub span_name: String,
    inflight: bool,
}

/// What the client asked for, after the base path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Chat(InboundKind),
    /// Gemini puts the model and the streaming switch in the path.
    GeminiChat {
        model: String,
        stream: bool,
    },
    Embeddings,
    Models,
    Model(String),
}

impl Gateway {
    /// A gateway serving `runtime`.
    pub fn new(runtime: Runtime, metrics: Arc<Metrics>) -> Self {
        let dropped = metrics.spans_dropped.clone();
        let tracer = match &runtime.telemetry.otlp {
            Some(target) => Tracer::start(
                target.clone(),
                runtime.telemetry.service_name.clone(),
                dropped,
            ),
            None => Tracer::disabled(dropped),
        };
        let runtime = Arc::new(runtime);
        runtime.prepare_semantic(None);
        Gateway {
            runtime: crate::live::slot(runtime),
            connector: Connector::new(None),
            routing_metrics: RoutingMetrics::new(&metrics.registry),
            metrics,
            tracer,
            key_usage: Arc::default(),
            readiness: Arc::default(),
        }
    }

    /// The configuration in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// A handle that swaps this gateway's configuration from outside the
    /// service (the managed-mode agent), like `replace_runtime`.
    pub fn runtime_handle(&self) -> crate::live::RuntimeHandle {
        crate::live::RuntimeHandle::new(
            self.runtime.clone(),
            self.key_usage.clone(),
            self.readiness.clone(),
        )
    }

    /// Swaps in a new configuration; requests in flight finish on the old one.
    pub fn replace_runtime(&self, runtime: Runtime) {
        self.runtime_handle().replace(runtime);
    }

    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        format: &mut InboundKind,
    ) -> Result<(), GatewayError> {
        let rt = self.runtime();
        let (path, query) = {
            let uri = &session.req_header().uri;
            (uri.path().to_owned(), uri.query().map(str::to_owned))
        };
        let Some((proxy, rest)) = find_proxy(&rt, &path) else {
            return Err(GatewayError::not_found(format!(
                "No proxy serves the path `{path}`."
            )));
        };
        let proxy = proxy.clone();
        ctx.proxy_id = Some(proxy.id.clone());
        let method = session.req_header().method.clone();
        let endpoint = match_endpoint(&proxy, &method, rest)?;
        if let Endpoint::Chat(k) = endpoint {
            *format = k;
        }
        if let Endpoint::GeminiChat { .. } = endpoint {
            *format = InboundKind::Gemini;
        }
        let key_name = authenticate(session, &proxy, query.as_deref(), &self.key_usage)?;
        ctx.key_name = Some(key_name);

        match endpoint {
            Endpoint::Models => {
                let list = model_list(&proxy);
                let body =
                    serde_json::to_vec(&list).map_err(|e| GatewayError::internal(e.to_string()))?;
                ctx.status = 200;
                write_json(session, ctx, 200, body, &[]).await;
                Ok(())
            }
            Endpoint::Model(id) => {
                let bare = strip_proxy_prefix(&proxy, &id);
                let list = model_list(&proxy);
                let entry = list
                    .data
                    .into_iter()
                    .find(|m| strip_proxy_prefix(&proxy, &m.id) == bare)
                    .ok_or_else(|| GatewayError::model_not_found(&id))?;
                let body = serde_json::to_vec(&entry)
                    .map_err(|e| GatewayError::internal(e.to_string()))?;
                ctx.status = 200;
                write_json(session, ctx, 200, body, &[]).await;
                Ok(())
            }
            Endpoint::Embeddings => {
                let body = read_body(session, &rt).await?;
                let req = inbound::openai::parse_embeddings(&body)?;
                inbound::check_model(&req.model)?;
                self.embeddings(session, ctx, &rt, &proxy, req).await
            }
            Endpoint::Chat(kind) => {
                let body = read_body(session, &rt).await?;
                let req = match kind {
                    InboundKind::Openai => inbound::openai::parse_chat(&body)?,
                    InboundKind::Anthropic => inbound::anthropic::parse_request(&body)?,
                    InboundKind::Gemini => unreachable_gemini(),
                };
                inbound::check_model(&req.model)?;
                self.chat(session, ctx, &rt, &proxy, kind, req).await
            }
            Endpoint::GeminiChat { model, stream } => {
                inbound::check_model(&model)?;
                let body = read_body(session, &rt).await?;
                let mut req = inbound::gemini::parse_request(&body, &model, stream)?;
                req.stream = stream;
                self.chat(session, ctx, &rt, &proxy, InboundKind::Gemini, req)
                    .await
            }
        }
    }

    /// Routes a chat request (prompt guard, strategy, fallback) and tries
    /// its candidate routes in turn until one answers; see `routing`.
    async fn chat(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        format: InboundKind,
        mut req: ChatRequest,
    ) -> Result<(), GatewayError> {
        ctx.stream = req.stream;
        // The proxy's policy chain sees the request before routing; it may
        // change it, reject it, or answer it (cache hit).
        let mut policies = None;
        if let Some(chain) = &proxy.policies {
            let mut run = chain.start(Some(self.metrics.clone())).await?;
            let meta = request_meta(session, ctx, proxy, format);
            let outcome = run.on_request(&mut req, &meta);
            self.note_policy_signals(proxy, &run, outcome.as_ref().err());
            match outcome? {
                crate::policy::RequestOutcome::Continue => policies = Some(run),
                crate::policy::RequestOutcome::Respond { status, response } => {
                    return self
                        .respond_direct(session, ctx, format, &req, status, response, run)
                        .await;
                }
            }
        }
        let env = RoutingEnv {
            connector: &self.connector,
            peers: &rt.peers,
            metrics: &self.routing_metrics,
        };
        let mut attempts = crate::routing::plan(
            &env,
            proxy.routed(),
            &req.model,
            Some(&req),
            &ctx.request_id,
        )
        .await?;
        let mut clock = AttemptClock::default();
        loop {
            let route = attempts.route();
            self.note_route(ctx, proxy, route, &req.model, attempts.model());
            let span = attempt_span(attempts.tried(), route, attempts.model());
            let result = self
                .chat_once(
                    session,
                    ctx,
                    rt,
                    proxy,
                    format,
                    &req,
                    route,
                    attempts.model(),
                    &mut policies,
                )
                .instrument(span.clone())
                .await;
            match result {
                Ok(()) => {
                    clock.settle(ctx);
                    attempts.finished(ctx.error);
                    return Ok(());
                }
                Err(e) => {
                    clock.failed(ctx);
                    // A stream that failed before its first byte may move
                    // to another route only if the chain can start over.
                    let may_move =
                        !req.stream || policies.as_mut().is_none_or(|r| r.retry_stream());
                    if let Err(e) = span.in_scope(|| attempts.failed(e, &ctx.request_id, may_move))
                    {
                        clock.settle(ctx);
                        return Err(e);
                    }
                }
            }
            // What a failed attempt saw must not leak into the next one.
            ctx.first_token = None;
            ctx.response_model = None;
        }
    }

    /// One attempt on one route. Returns `Err` only when nothing has been
    /// written to the client, so the caller may still try another route.
    #[allow(clippy::too_many_arguments)]
    async fn chat_once(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        format: InboundKind,
        req: &ChatRequest,
        route: &Route,
        upstream_model: &str,
        policies: &mut Option<crate::policy::ChainRun>,
    ) -> Result<(), GatewayError> {
        tracing::debug!("calling the provider");
        let api_key = provider_key(session, route)?;
        let call = UpstreamCall {
            model: upstream_model,
            api_key: api_key.as_deref(),
            stream: req.stream,
            track_usage: !req.stream || proxy.track_stream_tokens,
        };
        let mut up_req = route.provider.chat_request(req, &call)?;
        if let Some(ids) = &ctx.trace {
            up_req
                .headers
                .push(("traceparent", ids.upstream_traceparent()));
        }
        ctx.upstream_offset = Some(ctx.started.elapsed());
        let upstream_started = Instant::now();
        let peer = rt.peer(route).await?;
        let sent = unless_client_leaves(
            session,
            upstream::send(&self.connector, &peer, &route.upstream.host_header, &up_req),
        )
        .await;
        let Some(ex) = sent else {
            // The client gave up before the provider answered: dropping
            // the call closes its connection, so the provider stops
            // generating (and billing) for nobody.
            left_while_waiting(ctx, upstream_started);
            return Ok(());
        };
        let ex = ex?;
        // Headers the request-phase policies added (e.g. x-ratelimit-*).
        let policy_headers: Vec<(String, String)> = policies
            .as_ref()
            .map(|r| r.response_headers().to_vec())
            .unwrap_or_default();
        let mut route_headers = vec![("x-portcullis-route", route.name.as_str())];
        route_headers.extend(policy_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));

        if !(200..300).contains(&ex.status) {
            let status = ex.status;
            let retry_after = ex.retry_after.clone();
            let body = upstream::read_body(&self.connector, &peer, ex, 1024 * 1024).await?;
            ctx.upstream_time = Some(upstream_started.elapsed());
            let mut err = route.provider.error_response(status, &body);
            if let Some(ra) = retry_after {
                err = err.with_header("retry-after", ra);
            }
            return Err(err);
        }

        if !req.stream {
            let read = unless_client_leaves(
                session,
                upstream::read_body(&self.connector, &peer, ex, MAX_UPSTREAM_BODY),
            )
            .await;
            let Some(body) = read else {
                left_while_waiting(ctx, upstream_started);
                return Ok(());
            };
            let body = body?;
            ctx.upstream_time = Some(upstream_started.elapsed());
            // An OpenAI provider's answer to an OpenAI client is already
            // the canonical JSON.
            let provider_bytes = format == InboundKind::Openai && speaks_openai(route.kind);
            let answers_read = policies.as_ref().is_some_and(|r| r.reads_answers());
            if provider_bytes && !answers_read {
                // The provider already answered in the client's format and
                // no policy reads more than the usage: read only that and
                // forward the body as it came (faster, and keeps fields the
                // gateway does not model, such as Azure's content-filter
                // results).
                let summary: ResponseSummary = parse_upstream_json(route.kind, &body)?;
                ctx.usage = summary.usage;
                ctx.response_model = Some(summary.model);
                ctx.status = 200;
                if !write_json(session, ctx, 200, body, &route_headers).await {
                    client_left(ctx);
                }
                if let Some(run) = policies.as_mut() {
                    let model = ctx.response_model.as_deref().unwrap_or(upstream_model);
                    run.complete(ctx.status, None, false, ctx.usage.as_ref(), model);
                }
                return Ok(());
            }
            let mut resp = route.provider.chat_response(&body, &call)?;
            ctx.usage = resp.usage.clone();
            ctx.response_model = Some(resp.model.clone());
            // Policies read such an answer as it came, and unless one
            // changes the text it is forwarded as it came, not rendered
            // again (the profile of the four built-ins had each answer
            // rendered three times).
            let mut changed = false;
            let mut policy_headers = Vec::new();
            if let Some(run) = policies.as_mut() {
                if provider_bytes && let Ok(raw) = std::str::from_utf8(&body) {
                    run.know_answer_raw(raw.to_owned());
                }
                changed = run.on_response(&mut resp, false)?;
                policy_headers = run.response_headers().to_vec();
            }
            let mut route_headers = route_headers.clone();
            route_headers.extend(policy_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let out = match format {
                InboundKind::Openai if provider_bytes && !changed => body,
                InboundKind::Openai => {
                    let out = serde_json::to_vec(&resp)
                        .map_err(|e| GatewayError::internal(e.to_string()))?;
                    if let (Some(run), Ok(raw)) = (policies.as_mut(), std::str::from_utf8(&out)) {
                        run.know_answer_raw(raw.to_owned());
                    }
                    Bytes::from(out)
                }
                InboundKind::Anthropic => Bytes::from(inbound::anthropic::render_response(&resp)),
                InboundKind::Gemini => Bytes::from(inbound::gemini::render_response(&resp)),
            };
            ctx.status = 200;
            if !write_json(session, ctx, 200, out, &route_headers).await {
                // The answer was generated whole: it is charged whole.
                client_left(ctx);
            }
            if let Some(run) = policies.as_mut() {
                run.complete(
                    ctx.status,
                    Some(&resp),
                    false,
                    resp.usage.as_ref(),
                    &resp.model,
                );
            }
            return Ok(());
        }

        // Streaming: decode provider events, re-encode for the client, and
        // write each piece as soon as it is ready.
        let mut encoder: Box<dyn StreamEncoder> = match format {
            InboundKind::Openai => Box::new(inbound::openai::OpenAiStreamEncoder::new(
                req.wants_stream_usage(),
            )),
            InboundKind::Anthropic => {
                Box::new(inbound::anthropic::AnthropicStreamEncoder::new(&req.model))
            }
            InboundKind::Gemini => Box::new(inbound::gemini::GeminiStreamEncoder::new(&req.model)),
        };
        let mut decoder = route.provider.stream_decoder(&call);
        let mut header = response_header(200, ctx, &route_headers);
        let _ = header.insert_header("content-type", "text/event-stream");
        let _ = header.insert_header("cache-control", "no-cache");
        let _ = header.insert_header("transfer-encoding", "chunked");
        // The header goes out with the first piece of the answer, not
        // before: until then a failed stream is a plain HTTP error and
        // another route may still take the request.
        let mut header = Some(header);
        let track = proxy.track_stream_tokens;
        let mut usage: Option<Usage> = None;
        // What the provider generated so far, for the charge of a stream
        // the client leaves before the provider's usage arrives.
        let mut generated = crate::accounting::WordCount::default();
        let mut finish_reason = None;
        let mut events = Vec::new();
        let mut out = BytesMut::new();
        let mut ex = ex;
        let mut failed: Option<GatewayError> = None;
        loop {
            let read = ex.session.read_response_body().await;
            let ended = match read {
                Ok(Some(bytes)) => {
                    decoder.feed(&bytes, &mut events);
                    false
                }
                Ok(None) => {
                    decoder.finish(&mut events);
                    true
                }
                Err(e) => {
                    decoder.finish(&mut events);
                    failed = Some(upstream::exchange_error(&peer, &e));
                    true
                }
            };
            for ev in events.drain(..) {
                match ev {
                    StreamEvent::Chunk(mut chunk) => {
                        if let Some(u) = chunk.usage.take() {
                            usage.get_or_insert_with(Usage::default).merge_max(&u);
                        }
                        generated.feed_chunk(&chunk);
                        if let Some(fr) = chunk.choices.iter().find_map(|c| c.finish_reason) {
                            finish_reason = Some(fr);
                        }
                        if ctx.response_model.is_none() && !chunk.model.is_empty() {
                            ctx.response_model = Some(chunk.model.clone());
                        }
                        if !chunk.choices.is_empty() {
                            if ctx.first_token.is_none() {
                                ctx.first_token = Some(ctx.started.elapsed());
                            }
                            // Policies may rewrite the chunk's text, or
                            // hold the whole stream back (output guardrails).
                            let send = match policies.as_mut() {
                                None => true,
                                Some(run) => run.on_chunk(&mut chunk).unwrap_or_else(|e| {
                                    failed.get_or_insert(e);
                                    false
                                }),
                            };
                            if send {
                                encoder.chunk(&chunk, &mut out);
                            }
                        }
                    }
                    StreamEvent::Error(e) => {
                        if failed.is_none() {
                            failed = Some(e);
                        }
                    }
                }
            }
            if failed.is_some() {
                break;
            }
            if !out.is_empty() {
                let piece = out.split().freeze();
                let mut delivered = true;
                if let Some(h) = header.take() {
                    ctx.status = 200;
                    delivered = session
                        .write_response_header(Box::new(h), false)
                        .await
                        .is_ok();
                }
                delivered = delivered
                    && session
                        .write_response_body(Some(piece), false)
                        .await
                        .is_ok();
                if !delivered {
                    // The client went away: it is charged what the
                    // provider generated so far, and dropping the upstream
                    // session stops the provider.
                    let charged =
                        crate::accounting::charged_stream_usage(usage.as_ref(), req, &generated);
                    client_left(ctx);
                    if let Some(run) = policies.as_mut() {
                        let model = ctx.response_model.clone().unwrap_or_default();
                        run.complete(ctx.status, None, true, Some(&charged), &model);
                    }
                    ctx.usage = track.then_some(charged);
                    ctx.upstream_time = Some(upstream_started.elapsed());
                    return Ok(());
                }
            }
            if ended {
                break;
            }
        }
        ctx.upstream_time = Some(upstream_started.elapsed());
        if failed.is_none() {
            // Read to its end: the connection goes back to the pool, as a
            // buffered answer's does (streams used to open one each).
            upstream::release(&self.connector, &peer, ex).await;
        }
        if failed.is_none() && !decoder.is_complete() {
            failed = Some(GatewayError::upstream_protocol(
                "the provider closed the stream before it was complete",
            ));
        }
        if let (None, Some(run)) = (&failed, policies.as_mut()) {
            match run.finish_stream(usage.as_ref(), finish_reason) {
                Ok(extra) => {
                    for c in &extra {
                        encoder.chunk(c, &mut out);
                    }
                    if let Some(h) = header.as_mut() {
                        for (k, v) in run.response_headers() {
                            let _ = h.insert_header(k.clone(), v.as_str());
                        }
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if let (Some(e), Some(_)) = (&failed, &header) {
            return Err(e.clone()); // nothing reached the client
        }
        match &failed {
            Some(e) => {
                ctx.error = Some(e.kind);
                encoder.error(e, &mut out);
            }
            None => encoder.finish(usage.as_ref(), finish_reason, &mut out),
        }
        if let Some(run) = policies.as_mut() {
            let status = failed.as_ref().map(|e| e.status).unwrap_or(200);
            let model = ctx.response_model.clone().unwrap_or_default();
            run.complete(status, None, true, usage.as_ref(), &model);
        }
        // Untracked proxies show usage a client asked for, but do not count it.
        ctx.usage = if track { usage } else { None };
        // The whole answer was generated (and, held back, charged above):
        // a client that leaves now only changes how the request is counted.
        let mut delivered = true;
        if let Some(h) = header.take() {
            ctx.status = 200;
            delivered = session
                .write_response_header(Box::new(h), false)
                .await
                .is_ok();
        }
        delivered = delivered
            && session
                .write_response_body(Some(out.freeze()), true)
                .await
                .is_ok();
        if !delivered && failed.is_none() {
            client_left(ctx);
        }
        Ok(())
    }

    /// Answers with a policy's direct response (a cache hit): in the
    /// client's format, streamed when it asked for a stream. No provider
    /// is called and no provider tokens are counted.
    #[allow(clippy::too_many_arguments)]
    async fn respond_direct(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        format: InboundKind,
        req: &ChatRequest,
        status: u16,
        resp: portcullis_types::ChatResponse,
        mut run: crate::policy::ChainRun,
    ) -> Result<(), GatewayError> {
        ctx.response_model = Some(resp.model.clone());
        ctx.route = Some("policy".into());
        ctx.status = status;
        let headers = run.response_headers().to_vec();
        let extra: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if req.stream {
            let mut h = response_header(status, ctx, &extra);
            let _ = h.insert_header("content-type", "text/event-stream");
            let _ = h.insert_header("cache-control", "no-cache");
            let body = crate::policy::render::stream_body(format, req, &resp);
            if session
                .write_response_header(Box::new(h), false)
                .await
                .is_ok()
            {
                let _ = session
                    .write_response_body(Some(Bytes::from(body)), true)
                    .await;
            }
        } else {
            let body = crate::policy::render::json_body(format, &resp);
            write_json(session, ctx, status, body, &extra).await;
        }
        run.complete(
            status,
            Some(&resp),
            req.stream,
            resp.usage.as_ref(),
            &resp.model,
        );
        Ok(())
    }

    /// What the request phase of a policy chain signals for the operator's
    /// dashboards: a cache policy's `x-cache` verdict, and rate-limit
    /// rejections.
    fn note_policy_signals(
        &self,
        proxy: &Proxy,
        run: &crate::policy::ChainRun,
        rejected: Option<&GatewayError>,
    ) {
        if let Some((_, v)) = run
            .response_headers()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-cache"))
        {
            let result = if v.eq_ignore_ascii_case("hit") {
                "hit"
            } else {
                "miss"
            };
            self.metrics
                .cache_lookups
                .with_label_values(&[&proxy.id, result])
                .inc();
        }
        if rejected.is_some_and(|e| e.status == 429) {
            self.metrics
                .rate_limit_rejections
                .with_label_values(&[&proxy.id])
                .inc();
        }
    }

    /// Routes an embeddings request after the request phase of the
    /// proxy's policy chain (rate limits, input masking, guardrails; see
    /// `ChainRun::on_embeddings_request`) and tries its routes in turn.
    async fn embeddings(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        mut req: portcullis_types::EmbeddingsRequest,
    ) -> Result<(), GatewayError> {
        ctx.operation = "embeddings";
        let mut policies = None;
        if let Some(chain) = &proxy.policies {
            let mut run = chain.start(Some(self.metrics.clone())).await?;
            let meta = request_meta(session, ctx, proxy, InboundKind::Openai);
            let outcome = run.on_embeddings_request(&mut req, &meta);
            self.note_policy_signals(proxy, &run, outcome.as_ref().err());
            outcome?;
            policies = Some(run);
        }
        let env = RoutingEnv {
            connector: &self.connector,
            peers: &rt.peers,
            metrics: &self.routing_metrics,
        };
        let mut attempts =
            crate::routing::plan(&env, proxy.routed(), &req.model, None, &ctx.request_id).await?;
        let mut clock = AttemptClock::default();
        loop {
            let route = attempts.route();
            self.note_route(ctx, proxy, route, &req.model, attempts.model());
            let span = attempt_span(attempts.tried(), route, attempts.model());
            let result = self
                .embeddings_once(
                    session,
                    ctx,
                    rt,
                    &req,
                    route,
                    attempts.model(),
                    &mut policies,
                )
                .instrument(span.clone())
                .await;
            match result {
                Ok(()) => {
                    clock.settle(ctx);
                    attempts.finished(ctx.error);
                    return Ok(());
                }
                Err(e) => {
                    clock.failed(ctx);
                    if let Err(e) = span.in_scope(|| attempts.failed(e, &ctx.request_id, true)) {
                        clock.settle(ctx);
                        return Err(e);
                    }
                }
            }
        }
    }

    /// One embeddings attempt on one route; `Err` means nothing was sent
    /// to the client.
    #[allow(clippy::too_many_arguments)]
    async fn embeddings_once(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        req: &portcullis_types::EmbeddingsRequest,
        route: &Route,
        upstream_model: &str,
        policies: &mut Option<crate::policy::ChainRun>,
    ) -> Result<(), GatewayError> {
        tracing::debug!("calling the provider");
        let api_key = provider_key(session, route)?;
        let call = UpstreamCall {
            model: upstream_model,
            api_key: api_key.as_deref(),
            stream: false,
            track_usage: true,
        };
        let mut up_req = route.provider.embeddings_request(req, &call)?;
        if let Some(ids) = &ctx.trace {
            up_req
                .headers
                .push(("traceparent", ids.upstream_traceparent()));
        }
        ctx.upstream_offset = Some(ctx.started.elapsed());
        let started = Instant::now();
        let peer = rt.peer(route).await?;
        let ex =
            upstream::send(&self.connector, &peer, &route.upstream.host_header, &up_req).await?;
        let status = ex.status;
        let retry_after = ex.retry_after.clone();
        let body = upstream::read_body(&self.connector, &peer, ex, MAX_UPSTREAM_BODY).await?;
        ctx.upstream_time = Some(started.elapsed());
        if !(200..300).contains(&status) {
            let mut err = route.provider.error_response(status, &body);
            if let Some(ra) = retry_after {
                err = err.with_header("retry-after", ra);
            }
            return Err(err);
        }
        let resp = route.provider.embeddings_response(&body, &call)?;
        let input = crate::accounting::embeddings_input_tokens(resp.usage.prompt_tokens, req);
        let usage = Usage::new(input, 0);
        ctx.response_model = Some(resp.model.clone());
        let out = serde_json::to_vec(&resp).map_err(|e| GatewayError::internal(e.to_string()))?;
        // Headers the request-phase policies added (e.g. x-ratelimit-*).
        let policy_headers = policies
            .as_ref()
            .map(|r| r.response_headers().to_vec())
            .unwrap_or_default();
        let mut headers = vec![("x-portcullis-route", route.name.as_str())];
        headers.extend(policy_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // The response phase is chat-only; `on-complete` settles what the
        // request phase reserved with the input tokens, before the client
        // has the answer (so its next request sees the settled count).
        if let Some(run) = policies.as_mut() {
            run.complete(200, None, false, Some(&usage), &resp.model);
        }
        ctx.usage = Some(usage);
        ctx.status = 200;
        if !write_json(session, ctx, 200, out, &headers).await {
            client_left(ctx);
        }
        Ok(())
    }

    fn note_route(
        &self,
        ctx: &mut RequestCtx,
        proxy: &Proxy,
        route: &Route,
        requested: &str,
        upstream_model: &str,
    ) {
        ctx.route = Some(route.name.clone());
        ctx.provider = route.kind.label();
        let bare = strip_proxy_prefix(proxy, requested);
        ctx.model = Some(upstream_model.to_owned());
        // Only configured names become label values: a client sending
        // random model names must not create new series.
        ctx.model_label = if proxy.models.iter().any(|m| m == bare) {
            bare.to_owned()
        } else {
            crate::metrics::OTHER.to_owned()
        };
    }

    /// Builds the request's SERVER span and the provider call's CLIENT span
    /// (named and attributed by the OpenTelemetry GenAI conventions).
    fn export_spans(&self, ctx: &RequestCtx, ids: TraceIds) {
        let end = ctx.started_wall + ctx.started.elapsed();
        let error = ctx.status >= 500 || ctx.error.is_some();
        let mut server_attrs = vec![
            (
                "http.response.status_code",
                Attr::Int(i64::from(ctx.status)),
            ),
            ("portcullis.request_id", Attr::Str(ctx.request_id.clone())),
            (
                "portcullis.proxy",
                Attr::Str(ctx.proxy_id.clone().unwrap_or_default()),
            ),
        ];
        if let Some(kind) = ctx.error {
            server_attrs.push(("error.type", Attr::Str(kind.label().to_owned())));
        }
        if let Some(route) = &ctx.route {
            server_attrs.push(("portcullis.route", Attr::Str(route.clone())));
        }
        self.tracer.export(Span {
            trace_id: ids.trace_id,
            span_id: ids.server_span,
            parent: ids.parent,
            name: ctx.span_name.clone(),
            kind: 2,
            start: ctx.started_wall,
            end,
            attributes: server_attrs,
            error,
        });
        let (Some(offset), Some(model)) = (ctx.upstream_offset, ctx.model.as_ref()) else {
            return;
        };
        let upstream_end = ctx.started_wall + offset + ctx.upstream_time.unwrap_or_default();
        let mut attrs = vec![
            ("gen_ai.operation.name", Attr::Str(ctx.operation.to_owned())),
            ("gen_ai.provider.name", Attr::Str(ctx.provider.to_owned())),
            ("gen_ai.request.model", Attr::Str(model.clone())),
            ("portcullis.stream", Attr::Bool(ctx.stream)),
        ];
        if let Some(rm) = &ctx.response_model {
            attrs.push(("gen_ai.response.model", Attr::Str(rm.clone())));
        }
        if let Some(u) = &ctx.usage {
            attrs.push((
                "gen_ai.usage.input_tokens",
                Attr::Int(u.prompt_tokens as i64),
            ));
            attrs.push((
                "gen_ai.usage.output_tokens",
                Attr::Int(u.completion_tokens as i64),
            ));
        }
        self.tracer.export(Span {
            trace_id: ids.trace_id,
            span_id: ids.client_span,
            parent: Some(ids.server_span),
            name: format!("{} {}", ctx.operation, model),
            kind: 3,
            start: ctx.started_wall + offset,
            end: upstream_end.min(end),
            attributes: attrs,
            error,
        });
    }

    fn record(&self, ctx: &RequestCtx, protocol: &str) {
        let m = &self.metrics;
        let proxy = ctx.proxy_id.as_deref().unwrap_or("none");
        let model = if ctx.model_label.is_empty() {
            "none"
        } else {
            ctx.model_label.as_str()
        };
        // OpenAI-compatible servers often echo the requested model, so when
        // the request model is not a configured one the response model is
        // client-controlled too and collapses with it.
        let response_model = if model == crate::metrics::OTHER {
            crate::metrics::OTHER.to_owned()
        } else {
            m.response_model_label(ctx.response_model.as_deref().unwrap_or(""))
        };
        let error = ctx.error.map(ErrorKind::label).unwrap_or("none");
        let labels = crate::metrics::RequestLabels {
            proxy,
            route: ctx.route.as_deref().unwrap_or("none"),
            provider: ctx.provider,
            request_model: model,
            response_model: &response_model,
            key: ctx.key_name.as_deref().unwrap_or("none"),
        };
        let class = status_class(ctx.status);
        let total = ctx.started.elapsed();
        m.request_duration
            .with_label_values(&[proxy, ctx.provider, class])
            .observe(total.as_secs_f64());
        let upstream = ctx.upstream_time.unwrap_or_default();
        if ctx.upstream_time.is_some() {
            m.upstream_duration
                .with_label_values(&[proxy, ctx.provider])
                .observe(upstream.as_secs_f64());
        }
        m.gateway_overhead
            .with_label_values(&[proxy])
            .observe(total.saturating_sub(upstream).as_secs_f64());
        if let Some(t) = ctx.first_token {
            m.time_to_first_token
                .with_label_values(&[proxy, ctx.provider])
                .observe(t.as_secs_f64());
            let output = ctx.usage.as_ref().map(|u| u.completion_tokens).unwrap_or(0);
            if output > 1 {
                let per_token = total.saturating_sub(t).as_secs_f64() / (output - 1) as f64;
                m.time_per_output_token
                    .with_label_values(&[proxy, ctx.provider])
                    .observe(per_token);
            }
        }
        if let Some(u) = &ctx.usage {
            m.record_usage(&labels, ctx.operation, u);
        }
        let (input, output) = ctx
            .usage
            .as_ref()
            .map(|u| (u.prompt_tokens, u.completion_tokens))
            .unwrap_or((0, 0));
        tracing::info!(
            target: "portcullis::access",
            request_id = %ctx.request_id,
            protocol,
            proxy,
            key = ctx.key_name.as_deref().unwrap_or("-"),
            route = ctx.route.as_deref().unwrap_or("-"),
            provider = ctx.provider,
            model = ctx.model.as_deref().unwrap_or("-"),
            response_model = ctx.response_model.as_deref().unwrap_or("-"),
            stream = ctx.stream,
            status = ctx.status,
            error = error,
            input_tokens = input,
            output_tokens = output,
            duration_ms = total.as_secs_f64() * 1000.0,
            upstream_ms = upstream.as_secs_f64() * 1000.0,
            ttft_ms = ctx.first_token.map(|t| t.as_secs_f64() * 1000.0).unwrap_or(0.0),
            "request"
        );
        // Counted last: once a request shows in portcullis_requests_total,
        // everything else it records (durations, TTFT, tokens, the access
        // log line) is already there, so a scrape never sees half of it.
        m.record_request(&labels, class, error);
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: String::new(),
            started: Instant::now(),
            proxy_id: None,
            key_name: None,
            route: None,
            provider: "none",
            model: None,
            model_label: String::new(),
            response_model: None,
            operation: "chat",
            stream: false,
            status: 0,
            error: None,
            usage: None,
            upstream_time: None,
            first_token: None,
            upstream_offset: None,
            trace: None,
            started_wall: SystemTime::UNIX_EPOCH,
            span_name: String::new(),
            inflight: false,
        }
    }

    /// Runs when the request header has arrived. The gateway answers every
    /// request here (see the module doc), so it always returns `Ok(true)`:
    /// the response has been written and Pingora's proxy phases are skipped.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started = Instant::now();
        ctx.request_id = session
            .req_header()
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        self.metrics.inflight.inc();
        ctx.inflight = true;
        if self.tracer.enabled() {
            let header = session.req_header();
            ctx.trace = Some(TraceIds::from_traceparent(
                header
                    .headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok()),
            ));
            ctx.started_wall = SystemTime::now();
            ctx.span_name = format!("{} {}", header.method, header.uri.path());
        }
        let mut format = InboundKind::Openai;
        // Debug spans: events of a request nest under its id and route
        // when debug logs are on. Warnings carry the request id as a field
        // of their own: always-on (info) spans cost 5-9 µs of CPU per
        // request, 10-15% of a request without policies
        // (docs/benchmarks.md, Request spans).
        let span = tracing::debug_span!("request", request_id = %ctx.request_id);
        let handled = self
            .handle(session, ctx, &mut format)
            .instrument(span.clone())
            .await;
        if let Err(e) = handled {
            if e.status >= 500 {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "request failed");
            }
            ctx.status = e.status;
            ctx.error = Some(e.kind);
            let body = match format {
                InboundKind::Openai => e.to_openai_json(),
                InboundKind::Anthropic => inbound::anthropic::render_error(&e),
                InboundKind::Gemini => inbound::gemini::render_error(&e),
            };
            let extra: Vec<(&str, &str)> = e
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            write_json(session, ctx, e.status, body, &extra).await;
        }
        Ok(true)
    }

    /// Never reached: `request_filter` answers every request.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "the gateway answers in request_filter",
        )
    }

    /// Runs when the exchange ends, successfully or not: metrics and the
    /// access log line.
    async fn logging(
        &self,
        session: &mut Session,
        _e: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        if ctx.inflight {
            self.metrics.inflight.dec();
            ctx.inflight = false;
        }
        if ctx.status != 0 {
            // The client's HTTP version, for the access log.
            let protocol = match session.req_header().version {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            };
            self.record(ctx, protocol);
            if let Some(ids) = ctx.trace {
                self.export_spans(ctx, ids);
            }
        }
    }

    /// Errors Pingora itself raises (malformed HTTP, a failed write) are
    /// answered with the OpenAI envelope instead of Pingora's HTML page.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.esource() {
            pingora::ErrorSource::Downstream => match e.etype() {
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            _ => 500,
        };
        if code > 0 {
            let err = if code == 400 {
                GatewayError::invalid_request(format!("Malformed request: {}", e.etype().as_str()))
            } else {
                GatewayError::internal("internal gateway error")
            };
            ctx.status = code;
            write_json(session, ctx, code, err.to_openai_json(), &[]).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

fn unreachable_gemini() -> ChatRequest {
    // Gemini requests are matched as `Endpoint::GeminiChat`, which carries
    // the model from the path; `Endpoint::Chat(Gemini)` is never built.
    ChatRequest {
        model: String::new(),
        messages: Vec::new(),
        stream: false,
        stream_options: None,
        max_tokens: None,
        max_completion_tokens: None,
        temperature: None,
        top_p: None,
        n: None,
        stop: None,
        seed: None,
        presence_penalty: None,
        frequency_penalty: None,
        tools: None,
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: None,
        user: None,
        extra: Default::default(),
    }
}

/// Whether the provider answers in the OpenAI Chat Completions format (the
/// canonical one), so its responses reach OpenAI clients untranslated.
fn speaks_openai(kind: crate::providers::ProviderKind) -> bool {
    use crate::providers::ProviderKind as K;
    matches!(
        kind,
        K::Openai | K::AzureOpenai | K::Mistral | K::OpenaiCompatible
    )
}

/// What accounting reads from an OpenAI-format response forwarded as is.
#[derive(serde::Deserialize)]
struct ResponseSummary {
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<Usage>,
}

/// The proxy whose base path is the longest prefix of `path`, and the rest
/// of the path after it. Looks up each `/`-boundary prefix from the longest,
/// so the cost is the path's depth, not the number of proxies.
fn find_proxy<'a>(rt: &'a Runtime, path: &'a str) -> Option<(&'a Arc<Proxy>, &'a str)> {
    let mut end = path.len();
    loop {
        let prefix = &path[..end];
        let key = if prefix.is_empty() { "/" } else { prefix };
        if let Some(p) = rt.proxies.get(key) {
            return Some((p, &path[end..]));
        }
        if end == 0 {
            return None;
        }
        end = path[..end].rfind('/')?;
    }
}

fn match_endpoint(
    proxy: &Proxy,
    method: &http::Method,
    rest: &str,
) -> Result<Endpoint, GatewayError> {
    let rest = rest.trim_end_matches('/');
    // SDKs differ in whether the base URL includes the API version: accept
    // both `{base}/chat/completions` and `{base}/v1/chat/completions`.
    let rest = rest
        .strip_prefix("/v1beta")
        .or_else(|| rest.strip_prefix("/v1"))
        .unwrap_or(rest);
    let post = |e: Endpoint, resource: Resource| -> Result<Endpoint, GatewayError> {
        if !proxy.resources.contains(&resource) {
            return Err(GatewayError::not_found(format!(
                "This proxy does not offer `{rest}`."
            )));
        }
        if method != http::Method::POST {
            return Err(GatewayError::method_not_allowed(format!(
                "Use POST for `{rest}`."
            )));
        }
        Ok(e)
    };
    let enabled = |k: InboundKind| proxy.inbound.contains(&k);
    match rest {
        "/chat/completions" if enabled(InboundKind::Openai) => post(
            Endpoint::Chat(InboundKind::Openai),
            Resource::ChatCompletions,
        ),
        "/messages" if enabled(InboundKind::Anthropic) => post(
            Endpoint::Chat(InboundKind::Anthropic),
            Resource::ChatCompletions,
        ),
        "/embeddings" if enabled(InboundKind::Openai) => {
            post(Endpoint::Embeddings, Resource::Embeddings)
        }
        "/models" => {
            if !proxy.resources.contains(&Resource::Models) {
                return Err(GatewayError::not_found(
                    "This proxy does not offer `/models`.",
                ));
            }
            if method != http::Method::GET {
                return Err(GatewayError::method_not_allowed("Use GET for `/models`."));
            }
            Ok(Endpoint::Models)
        }
        _ => {
            if let Some(tail) = rest.strip_prefix("/models/") {
                if let Some((model, action)) = tail.rsplit_once(':') {
                    if enabled(InboundKind::Gemini)
                        && (action == "generateContent" || action == "streamGenerateContent")
                    {
                        return post(
                            Endpoint::GeminiChat {
                                model: model.to_owned(),
                                stream: action == "streamGenerateContent",
                            },
                            Resource::ChatCompletions,
                        );
                    }
                }
                if method == http::Method::GET && proxy.resources.contains(&Resource::Models) {
                    return Ok(Endpoint::Model(tail.to_owned()));
                }
            }
            Err(GatewayError::not_found(format!(
                "Unknown resource `{rest}` on proxy `{}`.",
                proxy.id
            )))
        }
    }
}

/// Finds the caller's key in the proxy's key set and notes its use in
/// `usage`. Accepts the headers the OpenAI, Azure, Anthropic and Gemini
/// SDKs send.
fn authenticate(
    session: &Session,
    proxy: &Proxy,
    query: Option<&str>,
    usage: &KeyUsage,
) -> Result<Arc<str>, GatewayError> {
    let headers = &session.req_header().headers;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let key = header("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or_else(|| header("api-key"))
        .or_else(|| header("x-api-key"))
        .or_else(|| header("x-goog-api-key"))
        .map(str::to_owned)
        .or_else(|| {
            query.and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("key=").map(str::to_owned))
            })
        });
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Err(GatewayError::unauthorized(
            "You didn't provide an API key. Send it in the Authorization header as `Bearer <key>`, or in `api-key` or `x-api-key`.",
        ));
    };
    let hash = hash_key(&key);
    let Some(entry) = proxy.keys.get(&hash) else {
        return Err(GatewayError::unauthorized("Incorrect API key provided."));
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    if entry.expired(now_ms) {
        return Err(GatewayError::unauthorized(
            "This API key has expired. Ask the proxy's owner for a new one.",
        ));
    }
    usage.record(&hash, entry);
    Ok(entry.name.clone())
}

fn strip_proxy_prefix<'a>(proxy: &Proxy, model: &'a str) -> &'a str {
    model
        .strip_prefix(proxy.id.as_str())
        .and_then(|m| m.strip_prefix(':'))
        .unwrap_or(model)
}

fn model_list(proxy: &Proxy) -> ModelList {
    ModelList {
        object: "list".into(),
        data: proxy
            .models
            .iter()
            .map(|m| ModelEntry {
                id: format!("{}:{m}", proxy.id),
                object: "model".into(),
                created: 0,
                owned_by: proxy.id.clone(),
            })
            .collect(),
    }
}

/// The provider key for this call: static, or taken from the client's request.
fn provider_key(session: &Session, route: &Route) -> Result<Option<String>, GatewayError> {
    match &route.key {
        KeySource::None => Ok(None),
        KeySource::Static(k) => Ok(Some(k.clone())),
        KeySource::Header(name) => {
            let v = session
                .req_header()
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned())
                .filter(|v| !v.is_empty());
            v.map(Some).ok_or_else(|| {
                GatewayError::unauthorized(format!(
                    "This proxy takes the provider API key from the `{name}` header, which is missing."
                ))
            })
        }
    }
}

/// Provider time across a request's attempts: every attempt's wait counts
/// as upstream time, so failovers are not reported as gateway overhead, and
/// the provider span starts with the first attempt.
#[derive(Default)]
struct AttemptClock {
    first_offset: Option<Duration>,
    waited: Duration,
}

impl AttemptClock {
    fn failed(&mut self, ctx: &mut RequestCtx) {
        self.first_offset = self.first_offset.or(ctx.upstream_offset);
        self.waited += ctx.upstream_time.take().unwrap_or_default();
    }

    fn settle(&self, ctx: &mut RequestCtx) {
        if self.first_offset.is_none() {
            return;
        }
        ctx.upstream_offset = self.first_offset;
        ctx.upstream_time = Some(self.waited + ctx.upstream_time.unwrap_or_default());
    }
}

/// Reads the whole request body under the configured size limit and
/// total deadline (a client dripping its body is cut off).
async fn read_body(session: &mut Session, rt: &Runtime) -> Result<Bytes, GatewayError> {
    let limit = rt.max_body_bytes;
    if let Some(len) = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(GatewayError::payload_too_large(limit));
        }
    }
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + rt.client_body_timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, session.read_request_body())
            .await
            .map_err(|_| GatewayError::invalid_request("Timed out reading the request body."))?
            .map_err(|e| {
                GatewayError::invalid_request(format!(
                    "Could not read the request body: {}",
                    e.etype().as_str()
                ))
            })?;
        match next {
            Some(chunk) => {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::payload_too_large(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    Ok(buf.freeze())
}

fn response_header(status: u16, ctx: &RequestCtx, extra: &[(&str, &str)]) -> ResponseHeader {
    let mut h = ResponseHeader::build(status, Some(6 + extra.len()))
        .unwrap_or_else(|_| ResponseHeader::build(500, None).expect("500 is a valid status"));
    let _ = h.insert_header("x-request-id", ctx.request_id.as_str());
    for (k, v) in extra {
        let _ = h.insert_header(k.to_string(), *v);
    }
    h
}

/// Who the request is, for the policies' view of it.
fn request_meta<'a>(
    session: &'a Session,
    ctx: &'a RequestCtx,
    proxy: &'a Proxy,
    format: InboundKind,
) -> crate::policy::RequestMeta<'a> {
    crate::policy::RequestMeta {
        request_id: &ctx.request_id,
        proxy_id: &proxy.id,
        key_id: ctx.key_name.as_deref().unwrap_or(""),
        format,
        headers: &session.req_header().headers,
    }
}

/// Writes a whole JSON response; false when the client was gone.
async fn write_json(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    body: impl Into<Bytes>,
    extra: &[(&str, &str)],
) -> bool {
    let body: Bytes = body.into();
    let mut h = response_header(status, ctx, extra);
    let _ = h.insert_header("content-type", "application/json");
    let _ = h.insert_header("content-length", body.len().to_string());
    session
        .write_response_header(Box::new(h), false)
        .await
        .is_ok()
        && session.write_response_body(Some(body), true).await.is_ok()
}

/// Waits on the provider (`wait`) while watching the client: `None` when
/// the client closed its connection first. Dropping `wait` then drops the
/// provider call. Used for the waits that can be long (time to the first
/// byte, a buffered answer); a stream notices a departed client at its
/// next write.
async fn unless_client_leaves<T>(
    session: &mut Session,
    wait: impl std::future::Future<Output = T>,
) -> Option<T> {
    let client_gone = async {
        // The request body was read whole before: the only thing left to
        // read is the end of the connection (an error once it is closed).
        match session.downstream_session.read_body_or_idle(true).await {
            Err(_) => {}
            Ok(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        biased;
        out = wait => Some(out),
        () = client_gone => None,
    }
}

/// A client that left while the provider had not answered.
fn left_while_waiting(ctx: &mut RequestCtx, upstream_started: Instant) {
    ctx.upstream_time = Some(upstream_started.elapsed());
    client_left(ctx);
}

/// Marks a request whose client went away before its answer was
/// delivered: status 499 (nginx's "client closed request") and the
/// `client_cancelled` error type, a client event rather than a gateway
/// failure. Its usage is still counted.
fn client_left(ctx: &mut RequestCtx) {
    ctx.status = 499;
    ctx.error = Some(ErrorKind::ClientCancelled);
}

/// The (debug) span of one attempt on one route (`n` from 1): events of
/// the provider call, the policies' answer phases and the failover
/// decision name the route they belong to.
fn attempt_span(n: usize, route: &Route, model: &str) -> tracing::Span {
    tracing::debug_span!("attempt", n, route = %route.name, provider = %route.provider_name, model = %model)
}
