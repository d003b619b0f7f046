//! An embeddings request through the exchange: the policies' request
//! phase (rate limits, input masking, guardrails; see
//! `ChainRun::on_embeddings_request`), then routing and its attempts.

use pingora::proxy::Session;
use portcullis_types::{EmbeddingsRequest, Usage};
use tracing::Instrument;

use super::Gateway;
use super::attempt;
use super::context::RequestCtx;
use super::egress::write_json;
use super::egress::{answer_headers, policy_headers};
use super::ingress::provider_key;
use crate::error::GatewayError;
use crate::policy::ChainRun;
use crate::providers::UpstreamCall;
use crate::runtime::{Proxy, Runtime};
use crate::upstream::Route;

impl Gateway {
    pub(super) async fn embeddings(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        proxy: &Proxy,
        mut req: EmbeddingsRequest,
    ) -> Result<(), GatewayError> {
        ctx.request.operation = "embeddings";
        let mut policies = self
            .request_phase(session, ctx, proxy, |run, meta| {
                run.on_embeddings_request(&mut req, meta)
            })
            .await?;
        let mut walk = self.plan_routes(ctx, rt, proxy, &req.model, None).await?;
        loop {
            let next = walk.next(ctx);
            let result = self
                .embeddings_once(
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

    /// One embeddings attempt on one route; `Err` means nothing was sent
    /// to the client.
    #[allow(clippy::too_many_arguments)]
    async fn embeddings_once(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        req: &EmbeddingsRequest,
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
        let mut up_req = route.provider.embeddings_request(req, &call)?;
        let body =
            attempt::call_whole(&self.connector, session, ctx, rt, route, &mut up_req).await?;
        let Some(body) = body else {
            return Ok(()); // the client left
        };
        let resp = route.provider.embeddings_response(&body, &call)?;
        let input = crate::accounting::embeddings_input_tokens(resp.usage.prompt_tokens, req);
        let usage = Usage::new(input, 0);
        ctx.tally.response_model = Some(resp.model.clone());
        let out = serde_json::to_vec(&resp).map_err(|e| GatewayError::internal(e.to_string()))?;
        let policy_headers = policy_headers(policies);
        let headers = answer_headers(route, &policy_headers);
        // The response phase is chat-only; `on-complete` settles what the
        // request phase reserved with the input tokens, before the client
        // has the answer (so its next request sees the settled count).
        if let Some(run) = policies.as_mut() {
            run.complete(200, None, false, Some(&usage), &resp.model, ctx.tally.price);
        }
        ctx.tally.usage = Some(usage);
        ctx.tally.status = 200;
        if !write_json(session, ctx, 200, out, &headers).await {
            ctx.tally.client_left();
        }
        Ok(())
    }
}
