//! A chat request through the exchange: the policies' request phase,
//! routing and its attempts, and the answer in the client's format (whole,
//! streamed, or a policy's own).

use bytes::Bytes;
use pingora::proxy::Session;
use portcullis_types::{ChatRequest, ChatResponse, Usage};
use tracing::Instrument;

use super::Gateway;
use super::attempt;
use super::context::RequestCtx;
use super::egress::{answer_headers, policy_headers};
use super::egress::{stream_header, write_json, write_piece};
use super::ingress::provider_key;
use super::stream::StreamRelay;
use crate::error::GatewayError;
use crate::inbound::ClientFormat;
use crate::policy::{ChainRun, RequestOutcome};
use crate::providers::{ProviderKind, UpstreamCall, parse_upstream_json};
use crate::runtime::{Proxy, Runtime};
use crate::upstream::Route;

impl Gateway {
    /// Routes a chat request (prompt guard, strategy, fallback) and tries
    /// its candidate routes in turn until one answers; see `routing`.
    /// `sent` is the body of a Responses API request, which routes whose
    /// provider speaks that API get as it came (see `forwardable`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn chat(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        format: &dyn ClientFormat,
        mut req: ChatRequest,
        sent: Option<Bytes>,
    ) -> Result<(), GatewayError> {
        ctx.request.stream = req.stream;
        // The proxy's policy chain sees the request before routing; it may
        // change it, reject it, or answer it (cache hit).
        let mut policies = None;
        if let Some(chain) = &proxy.policies {
            let mut run = chain.start(Some(self.metrics.clone())).await?;
            let meta = super::request_meta(session, ctx, proxy, format.kind());
            let outcome = run.on_request(&mut req, &meta);
            self.note_policy_signals(proxy, &run, outcome.as_ref().err());
            match outcome? {
                RequestOutcome::Continue => policies = Some(run),
                RequestOutcome::Respond { status, response } => {
                    respond_direct(session, ctx, format, &req, status, response, run).await;
                    return Ok(());
                }
            }
        }
        let sent = sent.filter(|_| forwardable(&policies));
        let mut walk = self
            .plan_routes(ctx, rt, proxy, &req.model, Some(&req))
            .await?;
        loop {
            let next = walk.next(ctx);
            let result = self
                .chat_once(
                    session,
                    ctx,
                    rt,
                    proxy,
                    (format, sent.as_ref()),
                    &req,
                    next.route,
                    &next.model,
                    &mut policies,
                )
                .instrument(next.span)
                .await;
            // A stream that failed before its first byte may move to
            // another route only if the chain can start over.
            let may_move = || !req.stream || policies.as_mut().is_none_or(|r| r.retry_stream());
            if let Some(done) = walk.after(ctx, result, may_move) {
                return done;
            }
        }
    }

    /// One attempt on one route. Returns `Err` only when nothing has been
    /// written to the client, so the caller may still try another route.
    /// `(format, sent)`: the client's format, and the body it sent when
    /// that may go to the provider as it came.
    #[allow(clippy::too_many_arguments)]
    async fn chat_once(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        (format, sent): (&dyn ClientFormat, Option<&Bytes>),
        req: &ChatRequest,
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
        if let Some(body) = sent
            && let Some(up_req) = route.provider.responses_request(body, &call)
        {
            let how = super::forwarded::Forwarded::responses(req, route.kind);
            return self
                .forward_once(session, ctx, rt, proxy, route, up_req?, how, policies)
                .await;
        }
        let mut up_req = route.provider.chat_request(req, &call)?;
        let answer = attempt::call(&self.connector, session, ctx, rt, route, &mut up_req).await?;
        let Some(answer) = answer else {
            return Ok(()); // the client left
        };
        let policy_headers = policy_headers(policies);
        let headers = answer_headers(route, &policy_headers);
        if req.stream {
            let mut header = stream_header(200, ctx, &headers);
            let _ = header.insert_header("transfer-encoding", "chunked");
            let decoder = route.provider.stream_decoder(&call);
            return StreamRelay::new(format, req, decoder, header, proxy.track_stream_tokens)
                .run(&self.connector, session, ctx, answer, policies)
                .await;
        }
        let Some(body) = answer.read_whole(&self.connector, session, ctx).await? else {
            return Ok(());
        };
        let whole = Whole {
            format,
            route,
            call: &call,
            body,
            headers: &headers,
        };
        whole.deliver(session, ctx, policies).await
    }

    /// What the request phase of a policy chain signals for the operator's
    /// dashboards: a cache policy's `x-cache` verdict, and rate-limit
    /// rejections.
    pub(super) fn note_policy_signals(
        &self,
        proxy: &Proxy,
        run: &ChainRun,
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
}

/// A provider's whole (non-streamed) answer, to be delivered in the
/// client's format.
struct Whole<'a> {
    format: &'a dyn ClientFormat,
    route: &'a Route,
    call: &'a UpstreamCall<'a>,
    body: Bytes,
    headers: &'a [(&'a str, &'a str)],
}

impl Whole<'_> {
    async fn deliver(
        self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        policies: &mut Option<ChainRun>,
    ) -> Result<(), GatewayError> {
        let Whole {
            format,
            route,
            call,
            body,
            headers,
        } = self;
        let openai_client = format.answers_canonical();
        // An OpenAI provider's answer to an OpenAI client is already the
        // canonical JSON.
        let provider_bytes = openai_client && speaks_openai(route.kind);
        let answers_read = policies.as_ref().is_some_and(|r| r.reads_answers());
        if provider_bytes && !answers_read {
            // The provider already answered in the client's format and no
            // policy reads more than the usage: read only that and forward
            // the body as it came (faster, and keeps fields the gateway
            // does not model, such as Azure's content-filter results).
            let summary: ResponseSummary = parse_upstream_json(route.kind, &body)?;
            ctx.tally.usage = summary.usage;
            ctx.tally.response_model = Some(summary.model);
            ctx.tally.status = 200;
            if !write_json(session, ctx, 200, body, headers).await {
                ctx.tally.client_left();
            }
            if let Some(run) = policies.as_mut() {
                let model = ctx.tally.response_model.as_deref().unwrap_or(call.model);
                run.complete(
                    ctx.tally.status,
                    None,
                    false,
                    ctx.tally.usage.as_ref(),
                    model,
                    ctx.tally.price,
                );
            }
            return Ok(());
        }
        let mut resp = route.provider.chat_response(&body, call)?;
        ctx.tally.usage = resp.usage.clone();
        ctx.tally.response_model = Some(resp.model.clone());
        // Policies read such an answer as it came, and unless one changes
        // the text it is forwarded as it came, not rendered again (the
        // profile of the four built-ins had each answer rendered three
        // times).
        let mut changed = false;
        let mut policy_headers = Vec::new();
        if let Some(run) = policies.as_mut() {
            if provider_bytes && let Ok(raw) = std::str::from_utf8(&body) {
                run.know_answer_raw(raw.to_owned());
            }
            changed = run.on_response(&mut resp, false)?;
            policy_headers = run.response_headers().to_vec();
        }
        let mut headers = headers.to_vec();
        headers.extend(policy_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let out = if provider_bytes && !changed {
            body
        } else {
            let out = format.render_response(&resp);
            // The canonical JSON is what policies read as the raw answer.
            if openai_client
                && let (Some(run), Ok(raw)) = (policies.as_mut(), std::str::from_utf8(&out))
            {
                run.know_answer_raw(raw.to_owned());
            }
            Bytes::from(out)
        };
        ctx.tally.status = 200;
        if !write_json(session, ctx, 200, out, &headers).await {
            // The answer was generated whole: it is charged whole.
            ctx.tally.client_left();
        }
        if let Some(run) = policies.as_mut() {
            run.complete(
                ctx.tally.status,
                Some(&resp),
                false,
                resp.usage.as_ref(),
                &resp.model,
                ctx.tally.price,
            );
        }
        Ok(())
    }
}

/// Answers with a policy's direct response (a cache hit): in the client's
/// format, streamed when it asked for a stream. No provider is called and
/// no provider tokens are counted.
async fn respond_direct(
    session: &mut Session,
    ctx: &mut RequestCtx,
    format: &dyn ClientFormat,
    req: &ChatRequest,
    status: u16,
    resp: ChatResponse,
    mut run: ChainRun,
) {
    ctx.tally.response_model = Some(resp.model.clone());
    ctx.tally.route = Some("policy".into());
    ctx.tally.status = status;
    let headers = run.response_headers().to_vec();
    let extra: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if req.stream {
        let header = stream_header(status, ctx, &extra);
        let body = crate::policy::render::stream_body(format, req, &resp);
        write_piece(session, Some(header), Bytes::from(body), true).await;
    } else {
        let body = format.render_response(&resp);
        write_json(session, ctx, status, body, &extra).await;
    }
    run.complete(
        status,
        Some(&resp),
        req.stream,
        resp.usage.as_ref(),
        &resp.model,
        ctx.tally.price,
    );
}

/// Whether a Responses API request may go to a provider that speaks that
/// API as the client sent it: when no policy changed it (a masked text
/// must not reach the provider unmasked) and none reads more of the answer
/// than its usage (the forwarded answer is never parsed into the canonical
/// one those policies read). Otherwise it is translated like any chat
/// request, which every provider takes.
fn forwardable(policies: &Option<ChainRun>) -> bool {
    policies
        .as_ref()
        .is_none_or(|run| !run.request_edited() && !run.reads_answers())
}

/// Whether the provider answers in the OpenAI Chat Completions format (the
/// canonical one), so its responses reach OpenAI clients untranslated.
fn speaks_openai(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::Openai
            | ProviderKind::AzureOpenai
            | ProviderKind::Mistral
            | ProviderKind::OpenaiCompatible
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
