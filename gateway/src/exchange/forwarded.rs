//! The OpenAI endpoints forwarded to OpenAI-format providers as they came
//! (legacy text completions, moderations): the policies' request phase on
//! a chat view of their texts (rate limits, masking, guardrails), routing
//! and its attempts, the answer relayed untranslated with its usage
//! counted. Other provider kinds refuse them with a 400 naming why
//! (`Provider::completions_request`); docs/gateway.md, "Decisions".
//!
//! A Responses API request goes the chat way (`chat`), and one attempt of
//! it is forwarded here as it came (`forward_once`) when the route's
//! provider speaks that API itself and nothing the policies do needs the
//! translation (see `chat::forwardable`).

use bytes::BytesMut;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use portcullis_types::{ChatRequest, CompletionsRequest, ModerationsRequest, Usage};
use tracing::Instrument;

use super::Gateway;
use super::attempt::{self, OpenAnswer};
use super::context::RequestCtx;
use super::egress::{answer_headers, policy_headers, stream_header, write_json, write_piece};
use super::ingress::provider_key;
use crate::accounting::{WordCount, charged_usage, estimate_tokens_as_words, prompt_estimate};
use crate::error::GatewayError;
use crate::policy::ChainRun;
use crate::providers::forwarded::{
    CompletionsStream, ForwardedStream, ResponsesStream, completions_answer, responses_answer,
};
use crate::providers::{ProviderKind, UpstreamCall, UpstreamRequest};
use crate::runtime::{Proxy, Runtime};
use crate::upstream::{self, Route};

impl Gateway {
    pub(super) async fn completions(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        mut req: CompletionsRequest,
    ) -> Result<(), GatewayError> {
        ctx.request.operation = "text_completion";
        let mut policies = self
            .request_phase(session, ctx, proxy, |run, meta| {
                run.on_completions_request(&mut req, meta)
            })
            .await?;
        let mut walk = self.plan_routes(ctx, rt, proxy, &req.model, None).await?;
        loop {
            let next = walk.next(ctx);
            let result = self
                .completions_once(
                    session,
                    ctx,
                    rt,
                    proxy,
                    &req,
                    next.route,
                    &next.model,
                    &mut policies,
                )
                .instrument(next.span)
                .await;
            // A stream that failed before its first byte may move on: the
            // policies have seen no answer yet.
            if let Some(done) = walk.after(ctx, result, || true) {
                return done;
            }
        }
    }

    /// One completions attempt on one route; `Err` means nothing was sent
    /// to the client.
    #[allow(clippy::too_many_arguments)]
    async fn completions_once(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        req: &CompletionsRequest,
        route: &Route,
        upstream_model: &str,
        policies: &mut Option<ChainRun>,
    ) -> Result<(), GatewayError> {
        let api_key = provider_key(session, route)?;
        let call = UpstreamCall {
            model: upstream_model,
            api_key: api_key.as_deref(),
            stream: req.stream,
            track_usage: !req.stream || proxy.track_stream_tokens,
        };
        let up_req = route.provider.completions_request(req, &call)?;
        let how = Forwarded {
            prompt: Prompt::Completions(req),
            stream: req
                .stream
                .then(|| CompletionsStream::new(route.provider.kind(), req.wants_stream_usage())),
            whole: completions_answer,
        };
        self.forward_once(session, ctx, rt, proxy, route, up_req, how, policies)
            .await
    }

    pub(super) async fn moderations(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        mut req: ModerationsRequest,
    ) -> Result<(), GatewayError> {
        ctx.request.operation = "moderation";
        let mut policies = self
            .request_phase(session, ctx, proxy, |run, meta| {
                run.on_moderations_request(&mut req, meta)
            })
            .await?;
        let model = req.routed_model().to_owned();
        let mut walk = self.plan_routes(ctx, rt, proxy, &model, None).await?;
        loop {
            let next = walk.next(ctx);
            let result = self
                .moderations_once(
                    session,
                    ctx,
                    rt,
                    &req,
                    next.route,
                    &next.model,
                    &mut policies,
                )
                .instrument(next.span)
                .await;
            if let Some(done) = walk.after(ctx, result, || true) {
                return done;
            }
        }
    }

    /// One moderations attempt on one route. Moderations generate and
    /// report no tokens: the request is counted, not charged.
    #[allow(clippy::too_many_arguments)]
    async fn moderations_once(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        req: &ModerationsRequest,
        route: &Route,
        upstream_model: &str,
        policies: &mut Option<ChainRun>,
    ) -> Result<(), GatewayError> {
        let api_key = provider_key(session, route)?;
        let call = UpstreamCall {
            model: upstream_model,
            api_key: api_key.as_deref(),
            stream: false,
            track_usage: true,
        };
        let mut up_req = route.provider.moderations_request(req, &call)?;
        let body =
            attempt::call_whole(&self.connector, session, ctx, rt, route, &mut up_req).await?;
        let Some(body) = body else {
            return Ok(()); // the client left
        };
        #[derive(serde::Deserialize)]
        struct ModelOnly {
            #[serde(default)]
            model: String,
        }
        // Read to be sure the provider answered JSON, and for its model.
        let seen: ModelOnly = crate::providers::parse_upstream_json(route.provider.kind(), &body)?;
        ctx.tally.response_model = Some(seen.model.clone());
        let policy_headers = policy_headers(policies);
        let headers = answer_headers(route, &policy_headers);
        if let Some(run) = policies.as_mut() {
            run.complete(200, None, false, None, &seen.model, ctx.tally.price);
        }
        ctx.tally.status = 200;
        if !write_json(session, ctx, 200, body, &headers).await {
            ctx.tally.client_left();
        }
        Ok(())
    }
}

/// How a forwarded attempt's answer is read.
pub(super) struct Forwarded<'a, S> {
    /// The request, for what a client that leaves mid-stream is charged.
    prompt: Prompt<'a>,
    /// The relay of a streamed answer; `None` when the client asked for a
    /// whole one.
    stream: Option<S>,
    /// The model and usage of a whole answer.
    whole: fn(ProviderKind, &[u8]) -> Result<(String, Usage), GatewayError>,
}

impl<'a> Forwarded<'a, ResponsesStream> {
    /// A Responses API request sent as it came to a provider that speaks
    /// that API (`Provider::responses_request`; see `chat::forwardable`).
    pub(super) fn responses(req: &'a ChatRequest, kind: ProviderKind) -> Self {
        Forwarded {
            prompt: Prompt::Chat(req),
            stream: req.stream.then(|| ResponsesStream::new(kind)),
            whole: responses_answer,
        }
    }
}

impl Gateway {
    /// One attempt whose request went to the provider as the client sent
    /// it (`up_req`): the answer relayed untranslated, whole or streamed,
    /// its model and usage read for accounting and the policies'
    /// `complete`, which settles them before the client's next request.
    /// `Err` means nothing was sent to the client.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward_once<S: ForwardedStream>(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        route: &Route,
        mut up_req: UpstreamRequest,
        how: Forwarded<'_, S>,
        policies: &mut Option<ChainRun>,
    ) -> Result<(), GatewayError> {
        let answer = attempt::call(&self.connector, session, ctx, rt, route, &mut up_req).await?;
        let Some(answer) = answer else {
            return Ok(()); // the client left
        };
        let policy_headers = policy_headers(policies);
        let headers = answer_headers(route, &policy_headers);
        if let Some(stream) = how.stream {
            let mut header = stream_header(200, ctx, &headers);
            let _ = header.insert_header("transfer-encoding", "chunked");
            let relay = ForwardedRelay {
                prompt: how.prompt,
                stream,
                header: Some(header),
                track: proxy.track_stream_tokens,
                generated: WordCount::default(),
            };
            return relay
                .run(&self.connector, session, ctx, answer, policies)
                .await;
        }
        let Some(body) = answer.read_whole(&self.connector, session, ctx).await? else {
            return Ok(());
        };
        let (model, usage) = (how.whole)(route.provider.kind(), &body)?;
        ctx.tally.response_model = Some(model.clone());
        if let Some(run) = policies.as_mut() {
            run.complete(200, None, false, Some(&usage), &model, ctx.tally.price);
        }
        ctx.tally.usage = Some(usage);
        ctx.tally.status = 200;
        if !write_json(session, ctx, 200, body, &headers).await {
            ctx.tally.client_left();
        }
        Ok(())
    }
}

/// A forwarded stream on its way to the client: the provider's events
/// relayed as they came (`ForwardedStream`), the header with the first
/// piece, usage counted; the same states as the chat `StreamRelay`.
struct ForwardedRelay<'a, S> {
    prompt: Prompt<'a>,
    stream: S,
    /// The response header, until it goes out with the first piece.
    header: Option<ResponseHeader>,
    track: bool,
    /// What the provider generated so far, for the charge of a stream the
    /// client leaves before the provider's usage arrives.
    generated: WordCount,
}

/// The request a forwarded stream answers, for the prompt a client that
/// leaves before the provider's usage is charged.
pub(super) enum Prompt<'a> {
    Completions(&'a CompletionsRequest),
    Chat(&'a ChatRequest),
}

impl Prompt<'_> {
    fn words(&self) -> u64 {
        match self {
            Prompt::Completions(req) => {
                estimate_tokens_as_words(req.prompt.texts().unwrap_or_default())
            }
            Prompt::Chat(req) => prompt_estimate(req),
        }
    }
}

impl<S: ForwardedStream> ForwardedRelay<'_, S> {
    /// Relays the stream to its end. `Err` only when nothing reached the
    /// client, so the caller may still try another route.
    async fn run(
        mut self,
        connector: &pingora::connectors::http::Connector,
        session: &mut Session,
        ctx: &mut RequestCtx,
        open: OpenAnswer,
        policies: &mut Option<ChainRun>,
    ) -> Result<(), GatewayError> {
        let OpenAnswer {
            peer,
            mut ex,
            started,
        } = open;
        let mut out = BytesMut::new();
        let failed = loop {
            let read = ex.session.read_response_body().await;
            let (ended, step) = match read {
                Ok(Some(bytes)) => (false, self.stream.feed(&bytes, &mut out)),
                Ok(None) => (true, self.stream.finish(&mut out)),
                Err(e) => (true, Err(upstream::exchange_error(&peer, &e))),
            };
            for text in self.stream.take_texts() {
                self.generated.feed(&text);
            }
            if ctx.tally.response_model.is_none() {
                ctx.tally.response_model = self.stream.model().map(str::to_owned);
            }
            if ctx.tally.first_token.is_none() && self.stream.chunks() > 0 {
                ctx.tally.first_token = Some(ctx.request.started.elapsed());
            }
            if let Err(e) = step {
                break Some(e);
            }
            if ended {
                break None;
            }
            if !out.is_empty() && !self.write(session, ctx, &mut out, false).await {
                // The client went away: dropping the provider session
                // stops the provider; it is charged what was generated.
                let charged = self.charged();
                ctx.tally.client_left();
                self.settle(ctx, policies, ctx.tally.status, Some(&charged));
                ctx.tally.usage = self.track.then_some(charged);
                ctx.tally.upstream_time = Some(started.elapsed());
                return Ok(());
            }
        };
        ctx.tally.upstream_time = Some(started.elapsed());
        let failed = failed.or_else(|| {
            (!self.stream.is_complete()).then(|| {
                GatewayError::upstream_protocol(
                    "the provider closed the stream before it was complete",
                )
            })
        });
        match failed {
            None => upstream::release(connector, &peer, ex).await,
            // Nothing reached the client: another route may take it.
            Some(e) if self.header.is_some() => return Err(e),
            Some(e) => {
                ctx.tally.error = Some(e.kind);
                self.stream.error(&e, &mut out);
                self.settle(ctx, policies, e.status, self.stream.usage());
                ctx.tally.usage = self.track.then(|| self.stream.usage().cloned()).flatten();
                self.write(session, ctx, &mut out, true).await;
                return Ok(());
            }
        }
        let usage = self.stream.usage().cloned();
        self.settle(ctx, policies, 200, usage.as_ref());
        ctx.tally.usage = if self.track { usage } else { None };
        if !self.write(session, ctx, &mut out, true).await {
            ctx.tally.client_left();
        }
        Ok(())
    }

    /// Writes what is relayed, after the header if it has not gone out;
    /// false when the client was gone.
    async fn write(
        &mut self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        out: &mut BytesMut,
        end: bool,
    ) -> bool {
        let header = self.header.take();
        if header.is_some() {
            ctx.tally.status = 200;
        }
        write_piece(session, header, out.split().freeze(), end).await
    }

    /// What a client that left mid-stream is charged.
    fn charged(&self) -> Usage {
        charged_usage(self.stream.usage(), || self.prompt.words(), &self.generated)
    }

    /// The policies' `on-complete` (rate limits settle their reservation).
    fn settle(
        &self,
        ctx: &RequestCtx,
        policies: &mut Option<ChainRun>,
        status: u16,
        usage: Option<&Usage>,
    ) {
        if let Some(run) = policies.as_mut() {
            let model = ctx.tally.response_model.clone().unwrap_or_default();
            run.complete(status, None, true, usage, &model, ctx.tally.price);
        }
    }
}
