//! A request's walk through its planned routes: the next route to try,
//! noted in the request's tally and given its span, then what its attempt
//! gave: the answer, the next route, or the error to answer with. Chat and
//! embeddings walk the same way; only their attempts differ.

use tracing::Span;

use super::Gateway;
use super::attempt;
use super::context::{AttemptClock, RequestCtx};
use super::ingress::strip_proxy_prefix;
use crate::error::GatewayError;
use crate::routing::{Attempts, RoutingEnv};
use crate::runtime::{Proxy, Runtime};
use crate::upstream::Route;
use portcullis_types::ChatRequest;

pub(super) struct RouteWalk<'p> {
    attempts: Attempts<'p>,
    clock: AttemptClock,
    proxy: &'p Proxy,
    /// The model the client asked for.
    requested: &'p str,
    /// The span of the attempt under way.
    span: Span,
}

/// One route to try: the route, the model it is asked for, and the span
/// the attempt runs in.
pub(super) struct Try<'p> {
    pub route: &'p Route,
    pub model: String,
    pub span: Span,
}

impl Gateway {
    /// Plans the routes for a request to `proxy` (prompt guard, semantic
    /// routing, strategy and fallback; see `routing::plan`). `chat` is the
    /// chat request, `None` for embeddings.
    pub(super) async fn plan_routes<'p>(
        &'p self,
        ctx: &RequestCtx,
        rt: &'p Runtime,
        proxy: &'p Proxy,
        requested: &'p str,
        chat: Option<&ChatRequest>,
    ) -> Result<RouteWalk<'p>, GatewayError> {
        let env = RoutingEnv {
            connector: &self.connector,
            peers: &rt.peers,
            metrics: &self.routing_metrics,
        };
        let attempts = crate::routing::plan(
            &env,
            proxy.routed(),
            requested,
            chat,
            &ctx.request.request_id,
        )
        .await?;
        Ok(RouteWalk {
            attempts,
            clock: AttemptClock::default(),
            proxy,
            requested,
            span: Span::none(),
        })
    }
}

impl<'p> RouteWalk<'p> {
    /// The route to try now, noted in the tally: the route's name, its
    /// provider and the model labels the request reports.
    pub(super) fn next(&mut self, ctx: &mut RequestCtx) -> Try<'p> {
        let route = self.attempts.route();
        let model = self.attempts.model().to_owned();
        let tally = &mut ctx.tally;
        tally.route = Some(route.name.clone());
        tally.provider = route.kind.label();
        tally.model = Some(model.clone());
        tally.price = route.price_for(&model);
        // Only configured names become label values: a client sending
        // random model names must not create new series.
        let bare = strip_proxy_prefix(self.proxy, self.requested);
        tally.model_label = if self.proxy.lists_model(bare) {
            bare.to_owned()
        } else {
            crate::metrics::OTHER.to_owned()
        };
        self.span = attempt::span(self.attempts.tried(), route, &model);
        Try {
            route,
            model,
            span: self.span.clone(),
        }
    }

    /// What the attempt gave. `None`: try the next route. `Some`: the
    /// request is done, answered (`Ok`) or with the error to answer.
    /// `may_move` is asked only on failure: whether another route may
    /// still take the request (a stream whose policies cannot start over
    /// may not).
    pub(super) fn after(
        &mut self,
        ctx: &mut RequestCtx,
        result: Result<(), GatewayError>,
        may_move: impl FnOnce() -> bool,
    ) -> Option<Result<(), GatewayError>> {
        match result {
            Ok(()) => {
                self.clock.settle(&mut ctx.tally);
                self.attempts.finished(ctx.tally.error);
                Some(Ok(()))
            }
            Err(e) => {
                self.clock.failed(&mut ctx.tally);
                let may_move = may_move();
                let request_id = &ctx.request.request_id;
                let attempts = &mut self.attempts;
                if let Err(e) = self
                    .span
                    .in_scope(|| attempts.failed(e, request_id, may_move))
                {
                    self.clock.settle(&mut ctx.tally);
                    return Some(Err(e));
                }
                // What a failed attempt saw must not leak into the next one.
                ctx.tally.next_attempt();
                None
            }
        }
    }
}
