//! Routing: which route serves a request, and what happens when it fails.
//!
//! A proxy has one or more routes (a provider, credentials, an optional
//! target model, a weight, a priority, topics). For each request the
//! gateway builds an ordered list of *candidates*, each a route and the
//! model that route will be sent, then tries them in turn:
//!
//! - `single`: the one route;
//! - `model-based`: the route serving the requested model (exact name,
//!   alias, or `provider/model`), then the fallback;
//! - `weighted`: the routes in a random order drawn by weight (weight 0 is
//!   a standby, tried after the others), then the fallback;
//! - `failover`: the routes by priority, then the fallback;
//! - `semantic`: the route whose topic the prompt is closest to, if above
//!   the threshold, then the fallback.
//!
//! Routes that passive health checking has ejected are left out unless
//! every candidate is ejected (then they are tried anyway: failing
//! without trying helps nobody); a route whose cool-down has run out is
//! put first for the one request that probes it. [`Attempts`] walks the
//! list: a failure moves on when the retry policy says so (connect errors,
//! timeouts, cut streams, and statuses in `retry.on_status`), the proxy's
//! retry budget allows it and `max_attempts` is not reached; a stream is
//! only retried while nothing has reached the client (the caller returns
//! an error only in that case). The prompt guard runs before all of this,
//! so a rejected prompt costs no provider call.

pub mod budget;
pub mod metrics;
pub mod pick;
pub mod table;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pingora::connectors::http::Connector;
use portcullis_types::{ChatRequest, Role};

use crate::config::{GuardOnError, RoutingStrategy};
use crate::error::{ErrorKind, ErrorSource, GatewayError};
use crate::health::{Admission, Transition, now_ms};
use crate::prompt_guard::{self, Verdict};
use crate::semantic::{Embedder, ServiceEmbedder, normalise};
use crate::upstream::{PeerOptions, Route};

pub use metrics::RoutingMetrics;
pub use table::{RetryPolicy, RoutingTable, build, rebase_files};

use budget::{RequestGuard, RetryGuard};

/// What routing needs from the gateway for one request.
pub struct RoutingEnv<'a> {
    pub connector: &'a Connector,
    pub peers: &'a PeerOptions,
    pub metrics: &'a RoutingMetrics,
}

/// What routing reads of a proxy: its id, routes and routing table
/// (`runtime::Proxy::routed`). A view, so that routing does not import the
/// runtime that holds its tables.
#[derive(Clone, Copy)]
pub struct Routed<'p> {
    pub id: &'p str,
    pub routes: &'p [Route],
    pub routing: &'p RoutingTable,
}

/// The requested model without the optional `<proxy-id>:` prefix, with
/// an alias resolved.
fn bare_model<'a>(proxy: Routed<'a>, requested: &'a str) -> &'a str {
    let bare = requested
        .strip_prefix(proxy.id)
        .and_then(|m| m.strip_prefix(':'))
        .unwrap_or(requested);
    proxy
        .routing
        .aliases
        .get(bare)
        .map(String::as_str)
        .unwrap_or(bare)
}

/// Runs the prompt guard and semantic routing (when configured), then
/// lists the candidates for this request. `chat` is the request for chat
/// completions (`None` for embeddings, which carry no prompt).
pub async fn plan<'p>(
    env: &RoutingEnv<'p>,
    proxy: Routed<'p>,
    requested: &str,
    chat: Option<&ChatRequest>,
    request_id: &str,
) -> Result<Attempts<'p>, GatewayError> {
    let table = proxy.routing;
    table.attach_metrics(proxy.id, proxy.routes, env.metrics);
    let topic_route = semantic_step(env, proxy, chat, request_id).await?;
    let model = bare_model(proxy, requested);
    let candidates = candidates(proxy, model, topic_route, now_ms(), &mut pick::random_u64);
    if candidates.is_empty() {
        return Err(if model.is_empty() {
            GatewayError::invalid_param("model", "You must provide a model parameter.")
        } else {
            GatewayError::model_not_found(requested)
        });
    }
    Ok(Attempts {
        proxy,
        metrics: env.metrics,
        candidates,
        pos: 0,
        _request: table.budget.request(),
        retrying: None,
    })
}

/// The prompt guard and semantic routing share one embedding call: the
/// guard needs every user message, routing the last one. Returns the
/// route a topic picked, if any.
async fn semantic_step(
    env: &RoutingEnv<'_>,
    proxy: Routed<'_>,
    chat: Option<&ChatRequest>,
    request_id: &str,
) -> Result<Option<usize>, GatewayError> {
    let table = &proxy.routing;
    let Some(sem) = &table.semantic else {
        return Ok(None);
    };
    let routing_on = table.strategy == RoutingStrategy::Semantic;
    let decision = |route: Option<usize>, outcome: &str| {
        if routing_on {
            let ri = route.or(table.fallback.as_ref().map(|f| f.route));
            let name = ri.map(|i| proxy.routes[i].name.as_str()).unwrap_or("none");
            env.metrics
                .semantic_decisions
                .with_label_values(&[proxy.id, name, outcome])
                .inc();
        }
    };
    let Some(req) = chat else {
        decision(None, "no_prompt");
        return Ok(None);
    };
    let guard = table.guard.as_ref();
    let guard_texts = if guard.is_some() {
        prompt_guard::user_texts(req)
    } else {
        Vec::new()
    };
    let route_text = if routing_on {
        last_user_text(req)
    } else {
        None
    };
    // Distinct texts, each embedded once.
    let mut texts: Vec<&str> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for t in guard_texts
        .iter()
        .map(|(_, t)| t.as_str())
        .chain(route_text.as_deref())
    {
        position.entry(t).or_insert_with(|| {
            texts.push(t);
            texts.len() - 1
        });
    }
    if texts.is_empty() {
        decision(None, "no_prompt");
        return Ok(None);
    }

    let embedder = ServiceEmbedder {
        service: &sem.service,
        connector: env.connector,
        peers: env.peers,
    };
    let started = Instant::now();
    let result = async {
        let indexes = sem.indexes(&embedder).await?;
        let vectors = embedder.embed(&texts).await?;
        Ok::<_, GatewayError>((indexes, vectors))
    }
    .await;
    env.metrics
        .semantic_duration
        .with_label_values(&[proxy.id])
        .observe(started.elapsed().as_secs_f64());
    let (indexes, vectors) = match result {
        Ok(r) => r,
        Err(e) => {
            env.metrics
                .semantic_errors
                .with_label_values(&[proxy.id])
                .inc();
            tracing::warn!(request_id, proxy = %proxy.id, error = %e, "semantic service failed");
            if guard.is_some_and(|g| g.on_error == GuardOnError::Reject) {
                return Err(prompt_guard::unavailable(&e));
            }
            decision(None, "error");
            return Ok(None);
        }
    };
    let vector_of = |t: &str| position.get(t).and_then(|i| vectors.get(*i));

    if let Some(g) = guard {
        let prompts: Vec<(usize, &[f32])> = guard_texts
            .iter()
            .filter_map(|(pos, t)| vector_of(t).map(|v| (*pos, v.as_slice())))
            .collect();
        if let Verdict::Deny {
            topic,
            score,
            message,
        } = g.check(&indexes.guard, &prompts)
        {
            env.metrics
                .guard_rejections
                .with_label_values(&[proxy.id, &topic])
                .inc();
            tracing::info!(request_id, proxy = %proxy.id, topic = %topic, score, "prompt guard rejected the prompt");
            return Err(prompt_guard::denied(&topic, message));
        }
    }

    let Some(text) = &route_text else {
        return Ok(None);
    };
    let found = vector_of(text)
        .and_then(|v| normalise(v))
        .and_then(|u| indexes.routes.best_match(&u));
    match found {
        Some(m) => {
            let topic = &sem.route_topics[m.topic];
            tracing::debug!(request_id, proxy = %proxy.id, topic = %topic.name, score = m.score, "semantic route");
            decision(Some(topic.target), "matched");
            Ok(Some(topic.target))
        }
        None => {
            decision(None, "no_match");
            Ok(None)
        }
    }
}

/// The text of the last user message, if it has any.
fn last_user_text(req: &ChatRequest) -> Option<String> {
    req.messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.text_content())
        .filter(|t| !t.trim().is_empty())
}

/// The ordered candidates (route index, model sent) for a request for
/// `model` (bare, aliases resolved). `topic_route` is semantic routing's
/// pick; `rng` draws the weighted order.
pub fn candidates(
    proxy: Routed<'_>,
    model: &str,
    topic_route: Option<usize>,
    now: u64,
    rng: &mut dyn FnMut() -> u64,
) -> Vec<(usize, String)> {
    let table = &proxy.routing;
    let routes = &proxy.routes;
    let with_model = |ri: usize| table::model_for(&routes[ri], model).map(|m| (ri, m));
    let pool: Vec<(usize, String)> = match table.strategy {
        RoutingStrategy::Single => with_model(0).into_iter().collect(),
        RoutingStrategy::ModelBased => table.model_route(routes, model).into_iter().collect(),
        RoutingStrategy::Weighted => (0..routes.len()).filter_map(with_model).collect(),
        RoutingStrategy::Failover => table.order.iter().copied().filter_map(with_model).collect(),
        RoutingStrategy::Semantic => topic_route.and_then(with_model).into_iter().collect(),
    };

    let mut probes = Vec::new();
    let mut available = Vec::new();
    let mut ejected = Vec::new();
    for c in pool {
        match table.health[c.0].admit(now) {
            Admission::Probe => probes.push(c),
            Admission::Available => available.push(c),
            Admission::Unavailable => ejected.push(c),
        }
    }
    if probes.is_empty() && available.is_empty() {
        // Every candidate is out: try them anyway rather than fail unasked.
        available = ejected;
    }
    if table.strategy == RoutingStrategy::Weighted {
        let items: Vec<(usize, u32)> = available
            .iter()
            .enumerate()
            .map(|(i, (ri, _))| (i, table.weights[*ri]))
            .collect();
        let order = pick::weighted_order(&items, &mut *rng);
        let mut slots: Vec<Option<(usize, String)>> = available.into_iter().map(Some).collect();
        available = order.into_iter().filter_map(|i| slots[i].take()).collect();
    }
    let mut out = probes;
    out.extend(available);

    if let Some(f) = &table.fallback {
        let route = &routes[f.route];
        let m = f
            .model
            .clone()
            .or_else(|| route.target_model.clone())
            .or_else(|| (!model.is_empty()).then(|| model.to_owned()));
        if let Some(m) = m {
            let seen = out.iter().any(|(ri, om)| *ri == f.route && *om == m);
            if !seen {
                let admitted = table.health[f.route].admit(now);
                if admitted == Admission::Probe {
                    out.insert(0, (f.route, m));
                } else if admitted == Admission::Available || out.is_empty() {
                    out.push((f.route, m));
                }
            }
        }
    }
    if let Some(max) = table.retry.max_attempts {
        out.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    }
    out
}

/// Why an attempt failed, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Timeout,
    /// An unreadable answer, or a stream cut before anything reached the
    /// client.
    Protocol,
    /// The provider answered this error status.
    Status(u16),
}

impl Failure {
    /// `None` for errors that are not about the route (the client's
    /// request, a policy, the gateway itself).
    fn of(e: &GatewayError) -> Option<Failure> {
        if e.source != ErrorSource::Upstream {
            return None;
        }
        Some(match e.kind {
            ErrorKind::UpstreamConnect => Failure::Connect,
            ErrorKind::UpstreamTimeout => Failure::Timeout,
            ErrorKind::UpstreamProtocol => Failure::Protocol,
            _ => Failure::Status(provider_status(e)),
        })
    }

    /// Whether this counts against the route's health (a 4xx other than
    /// 429 means the provider is up and the request was at fault).
    fn is_route_failure(self) -> bool {
        !matches!(self, Failure::Status(s) if s < 500 && s != 429)
    }

    fn retryable(self, policy: &RetryPolicy) -> bool {
        match self {
            Failure::Status(s) => policy.on_status.contains(s),
            _ => true,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Protocol => "protocol",
            Failure::Status(429) => "status_429",
            Failure::Status(s) if s >= 500 => "status_5xx",
            Failure::Status(_) => "status_4xx",
        }
    }
}

/// The status the provider answered: error codes are `upstream_<status>`
/// (the client may see another status, e.g. 502 for a provider's 401).
fn provider_status(e: &GatewayError) -> u16 {
    e.code
        .as_deref()
        .and_then(|c| c.strip_prefix("upstream_"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(e.status)
}

/// `retry-after` as a wait: seconds (what providers send), or an HTTP
/// date (RFC 9110 allows both; a date in the past means no wait).
fn retry_after(e: &GatewayError) -> Option<Duration> {
    let (_, v) = e
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))?;
    parse_retry_after(v, std::time::SystemTime::now())
}

fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86_400)),
    )
}

#[cfg(test)]
mod retry_after_tests {
    use super::parse_retry_after;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn seconds_and_http_dates() {
        // Sun, 22 Nov 2026 08:00:00 GMT
        let now = UNIX_EPOCH + Duration::from_secs(1_795_334_400);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 08:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 07:59:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past: retry now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

/// A request's walk through its candidates.
pub struct Attempts<'p> {
    proxy: Routed<'p>,
    metrics: &'p RoutingMetrics,
    candidates: Vec<(usize, String)>,
    pos: usize,
    _request: RequestGuard<'p>,
    /// Held once the request starts retrying, until it ends.
    retrying: Option<RetryGuard<'p>>,
}

impl<'p> Attempts<'p> {
    /// The route of the current attempt.
    pub fn route(&self) -> &'p Route {
        &self.proxy.routes[self.candidates[self.pos].0]
    }

    /// The model the current attempt sends.
    pub fn model(&self) -> &str {
        &self.candidates[self.pos].1
    }

    /// Routes tried so far, the current one included.
    pub fn tried(&self) -> usize {
        self.pos + 1
    }

    /// The current attempt failed before anything reached the client.
    /// `Ok(())` moves to the next candidate; `Err` is the error to answer.
    /// `may_move` false keeps the request on this route whatever the
    /// failure (the route's health still learns of it).
    pub fn failed(
        &mut self,
        e: GatewayError,
        request_id: &str,
        may_move: bool,
    ) -> Result<(), GatewayError> {
        let table = &self.proxy.routing;
        let ri = self.candidates[self.pos].0;
        let route = &self.proxy.routes[ri];
        let Some(failure) = Failure::of(&e) else {
            return Err(e);
        };
        let health = &table.health[ri];
        let now = now_ms();
        let (transition, why) = if !failure.is_route_failure() {
            (health.record_success(), "")
        } else if let (Failure::Status(429), Some(wait)) = (failure, retry_after(&e)) {
            // Honour retry-after: the route gets nothing until then
            // (bounded), and other routes take the traffic meanwhile.
            let wait = wait.min(table.retry.max_retry_after);
            (health.pause(now, wait), "rate_limited")
        } else {
            (health.record_failure(now, &table.health_policy), "failures")
        };
        self.note(route, transition, why);
        let e = e.with_header("x-portcullis-route", route.name.clone());

        if !may_move || !failure.retryable(&table.retry) || self.pos + 1 >= self.candidates.len() {
            return Err(e);
        }
        if self.retrying.is_none() {
            match table.budget.try_retry() {
                Some(g) => self.retrying = Some(g),
                None => {
                    self.metrics
                        .budget_exhausted
                        .with_label_values(&[self.proxy.id])
                        .inc();
                    tracing::warn!(request_id, proxy = %self.proxy.id, route = %route.name, "retry budget spent; not failing over");
                    return Err(e);
                }
            }
        }
        self.metrics
            .failovers
            .with_label_values(&[self.proxy.id, &route.name, failure.reason()])
            .inc();
        self.pos += 1;
        tracing::warn!(
            request_id,
            proxy = %self.proxy.id,
            from = %route.name,
            to = %self.route().name,
            reason = failure.reason(),
            error = %e.message,
            "failing over"
        );
        Ok(())
    }

    /// The current attempt answered the client. `error` is what went wrong
    /// after the answer started (a stream cut midway), if anything.
    pub fn finished(&mut self, error: Option<ErrorKind>) {
        let table = &self.proxy.routing;
        let ri = self.candidates[self.pos].0;
        let health = &table.health[ri];
        let failed = matches!(
            error,
            Some(
                ErrorKind::UpstreamConnect
                    | ErrorKind::UpstreamTimeout
                    | ErrorKind::UpstreamProtocol
                    | ErrorKind::UpstreamStatus
                    | ErrorKind::RateLimited
            )
        );
        let t = if failed {
            health.record_failure(now_ms(), &table.health_policy)
        } else {
            health.record_success()
        };
        self.note(&self.proxy.routes[ri], t, "failures");
    }

    fn note(&self, route: &Route, t: Transition, why: &str) {
        match t {
            Transition::None => {}
            Transition::Ejected => {
                self.metrics
                    .ejections
                    .with_label_values(&[self.proxy.id, &route.name, why])
                    .inc();
                tracing::warn!(proxy = %self.proxy.id, route = %route.name, reason = why, "route ejected");
            }
            Transition::Recovered => {
                tracing::info!(proxy = %self.proxy.id, route = %route.name, "route back in rotation");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
