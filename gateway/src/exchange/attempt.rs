//! One attempt: a provider call on one route, sent while the client is
//! watched, and its reply classified: a provider error (which another
//! route may still take), an answer to read (whole or as a stream), or a
//! client that left first.

use std::time::Instant;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

use super::context::RequestCtx;
use super::egress::unless_client_leaves;
use crate::error::GatewayError;
use crate::providers::UpstreamRequest;
use crate::runtime::Runtime;
use crate::upstream::Route;
use crate::upstream::{self, MAX_UPSTREAM_BODY, UpstreamExchange};

/// Largest provider error body read (its message is passed on).
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// A provider's 2xx answer whose header has arrived; its body is still
/// to be read, whole or as a stream.
pub(super) struct OpenAnswer {
    pub peer: HttpPeer,
    pub ex: UpstreamExchange,
    /// When the provider call started.
    pub started: Instant,
}

/// Sends `up_req` on `route` (in the request's trace) and waits for the answer's header. `Err` is a
/// failed attempt (no answer, or a provider error status, with its
/// `retry-after`): nothing has been written to the client. `None`: the
/// client closed its connection before the provider answered; the call
/// was dropped (its connection closed, so the provider stops generating)
/// and the request marked as cancelled.
pub(super) async fn call(
    connector: &Connector,
    session: &mut Session,
    ctx: &mut RequestCtx,
    rt: &Runtime,
    route: &Route,
    up_req: &mut UpstreamRequest,
) -> Result<Option<OpenAnswer>, GatewayError> {
    tracing::debug!("calling the provider");
    if let Some(ids) = &ctx.request.trace {
        up_req
            .headers
            .push(("traceparent", ids.upstream_traceparent()));
    }
    ctx.tally.upstream_offset = Some(ctx.request.started.elapsed());
    let started = Instant::now();
    let peer = rt.peer(route).await?;
    let sent = unless_client_leaves(
        session,
        upstream::send(connector, &peer, &route.upstream.host_header, up_req),
    )
    .await;
    let Some(ex) = sent else {
        ctx.tally.left_while_waiting(started);
        return Ok(None);
    };
    let ex = ex?;
    if !(200..300).contains(&ex.status) {
        let status = ex.status;
        let retry_after = ex.retry_after.clone();
        let body = upstream::read_body(connector, &peer, ex, MAX_ERROR_BODY).await?;
        ctx.tally.upstream_time = Some(started.elapsed());
        let mut err = route.provider.error_response(status, &body);
        if let Some(ra) = retry_after {
            err = err.with_header("retry-after", ra);
        }
        return Err(err);
    }
    Ok(Some(OpenAnswer { peer, ex, started }))
}

/// `call`, then the whole answer read: the attempt of a request whose
/// answer is never streamed (embeddings, moderations). `None`: the client
/// left.
pub(super) async fn call_whole(
    connector: &Connector,
    session: &mut Session,
    ctx: &mut RequestCtx,
    rt: &Runtime,
    route: &Route,
    up_req: &mut UpstreamRequest,
) -> Result<Option<Bytes>, GatewayError> {
    match call(connector, session, ctx, rt, route, up_req).await? {
        Some(answer) => answer.read_whole(connector, session, ctx).await,
        None => Ok(None),
    }
}

impl OpenAnswer {
    /// Reads the whole answer while the client is watched; `None` when
    /// the client left first (the request is then marked as cancelled).
    pub(super) async fn read_whole(
        self,
        connector: &Connector,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Bytes>, GatewayError> {
        let OpenAnswer { peer, ex, started } = self;
        let read = unless_client_leaves(
            session,
            upstream::read_body(connector, &peer, ex, MAX_UPSTREAM_BODY),
        )
        .await;
        let Some(body) = read else {
            ctx.tally.left_while_waiting(started);
            return Ok(None);
        };
        let body = body?;
        ctx.tally.upstream_time = Some(started.elapsed());
        Ok(Some(body))
    }
}

/// The (debug) span of one attempt on one route (`n` from 1): events of
/// the provider call, the policies' answer phases and the failover
/// decision name the route they belong to.
pub(super) fn span(n: usize, route: &Route, model: &str) -> tracing::Span {
    tracing::debug_span!("attempt", n, route = %route.name, provider = %route.provider_name, model = %model)
}
