//! What a finished request leaves behind: its metrics, its access log
//! line, and its spans (a SERVER span for the request and a CLIENT span
//! for the provider call, named and attributed by the OpenTelemetry GenAI
//! conventions).

use super::context::RequestCtx;
use crate::error::ErrorKind;
use crate::metrics::{Metrics, status_class};
use crate::otlp::{Attr, Span, TraceIds, Tracer};

/// Builds the request's SERVER span and the provider call's CLIENT span
/// (named and attributed by the OpenTelemetry GenAI conventions).
pub(super) fn export_spans(tracer: &Tracer, ctx: &RequestCtx, ids: TraceIds) {
    let end = ctx.request.started_wall + ctx.request.started.elapsed();
    let error = ctx.tally.status >= 500 || ctx.tally.error.is_some();
    let mut server_attrs = vec![
        (
            "http.response.status_code",
            Attr::Int(i64::from(ctx.tally.status)),
        ),
        (
            "portcullis.request_id",
            Attr::Str(ctx.request.request_id.clone()),
        ),
        (
            "portcullis.proxy",
            Attr::Str(ctx.request.proxy_id.clone().unwrap_or_default()),
        ),
    ];
    if let Some(kind) = ctx.tally.error {
        server_attrs.push(("error.type", Attr::Str(kind.label().to_owned())));
    }
    if let Some(route) = &ctx.tally.route {
        server_attrs.push(("portcullis.route", Attr::Str(route.clone())));
    }
    tracer.export(Span {
        trace_id: ids.trace_id,
        span_id: ids.server_span,
        parent: ids.parent,
        name: ctx.request.span_name.clone(),
        kind: 2,
        start: ctx.request.started_wall,
        end,
        attributes: server_attrs,
        error,
    });
    let (Some(offset), Some(model)) = (ctx.tally.upstream_offset, ctx.tally.model.as_ref()) else {
        return;
    };
    let upstream_end =
        ctx.request.started_wall + offset + ctx.tally.upstream_time.unwrap_or_default();
    let mut attrs = vec![
        (
            "gen_ai.operation.name",
            Attr::Str(ctx.request.operation.to_owned()),
        ),
        (
            "gen_ai.provider.name",
            Attr::Str(ctx.tally.provider.to_owned()),
        ),
        ("gen_ai.request.model", Attr::Str(model.clone())),
        ("portcullis.stream", Attr::Bool(ctx.request.stream)),
    ];
    if let Some(rm) = &ctx.tally.response_model {
        attrs.push(("gen_ai.response.model", Attr::Str(rm.clone())));
    }
    if let Some(u) = &ctx.tally.usage {
        attrs.push((
            "gen_ai.usage.input_tokens",
            Attr::Int(u.prompt_tokens as i64),
        ));
        attrs.push((
            "gen_ai.usage.output_tokens",
            Attr::Int(u.completion_tokens as i64),
        ));
    }
    if let Some(cost) = ctx.cost() {
        attrs.push(("portcullis.cost", Attr::Float(cost)));
    }
    tracer.export(Span {
        trace_id: ids.trace_id,
        span_id: ids.client_span,
        parent: Some(ids.server_span),
        name: format!("{} {}", ctx.request.operation, model),
        kind: 3,
        start: ctx.request.started_wall + offset,
        end: upstream_end.min(end),
        attributes: attrs,
        error,
    });
}

/// A request's cost in the access log: the number, or `-` when the price
/// of its model is unknown.
struct Cost(Option<f64>);

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(c) => write!(f, "{c:.8}"),
            None => f.write_str("-"),
        }
    }
}

/// Metrics and the access log line of a finished request.
pub(super) fn record(
    m: &Metrics,
    spend: &crate::spend::SpendLedger,
    ctx: &RequestCtx,
    protocol: &str,
) {
    let proxy = ctx.request.proxy_id.as_deref().unwrap_or("none");
    let model = if ctx.tally.model_label.is_empty() {
        "none"
    } else {
        ctx.tally.model_label.as_str()
    };
    // OpenAI-compatible servers often echo the requested model, so when
    // the request model is not a configured one the response model is
    // client-controlled too and collapses with it.
    let response_model = if model == crate::metrics::OTHER {
        crate::metrics::OTHER.to_owned()
    } else {
        m.response_model_label(ctx.tally.response_model.as_deref().unwrap_or(""))
    };
    let error = ctx.tally.error.map(ErrorKind::label).unwrap_or("none");
    let labels = crate::metrics::RequestLabels {
        proxy,
        route: ctx.tally.route.as_deref().unwrap_or("none"),
        provider: ctx.tally.provider,
        request_model: model,
        response_model: &response_model,
        key: ctx.request.key_id.as_deref().unwrap_or("none"),
    };
    let class = status_class(ctx.tally.status);
    let total = ctx.request.started.elapsed();
    m.request_duration
        .with_label_values(&[proxy, ctx.tally.provider, class])
        .observe(total.as_secs_f64());
    let upstream = ctx.tally.upstream_time.unwrap_or_default();
    if ctx.tally.upstream_time.is_some() {
        m.upstream_duration
            .with_label_values(&[proxy, ctx.tally.provider])
            .observe(upstream.as_secs_f64());
    }
    m.gateway_overhead
        .with_label_values(&[proxy])
        .observe(total.saturating_sub(upstream).as_secs_f64());
    if let Some(t) = ctx.tally.first_token {
        m.time_to_first_token
            .with_label_values(&[proxy, ctx.tally.provider])
            .observe(t.as_secs_f64());
        let output = ctx
            .tally
            .usage
            .as_ref()
            .map(|u| u.completion_tokens)
            .unwrap_or(0);
        if output > 1 {
            let per_token = total.saturating_sub(t).as_secs_f64() / (output - 1) as f64;
            m.time_per_output_token
                .with_label_values(&[proxy, ctx.tally.provider])
                .observe(per_token);
        }
    }
    if let Some(u) = &ctx.tally.usage {
        m.record_usage(&labels, ctx.request.operation, u);
    }
    let cost = ctx.cost();
    if let Some(c) = cost {
        let application = ctx.request.caller.application.as_deref();
        m.record_cost(proxy, ctx.tally.provider, model, application, c);
    }
    if let (Some(p), Some(key), Some(called)) = (
        ctx.request.proxy_id.as_deref(),
        ctx.request.key_id.as_ref(),
        ctx.tally.model.as_deref(),
    ) {
        let (input_tokens, output_tokens) = ctx
            .tally
            .usage
            .as_ref()
            .map(|u| (u.prompt_tokens, u.completion_tokens))
            .unwrap_or((0, 0));
        spend.record(crate::spend::Spent {
            proxy: p,
            key,
            model: called,
            input_tokens,
            output_tokens,
            cost,
        });
    }
    let (input, output) = ctx
        .tally
        .usage
        .as_ref()
        .map(|u| (u.prompt_tokens, u.completion_tokens))
        .unwrap_or((0, 0));
    tracing::info!(
        target: "portcullis::access",
        request_id = %ctx.request.request_id,
        protocol,
        proxy,
        key = ctx.request.key_name.as_deref().unwrap_or("-"),
        key_id = ctx.request.key_id.as_deref().unwrap_or("-"),
        route = ctx.tally.route.as_deref().unwrap_or("-"),
        provider = ctx.tally.provider,
        model = ctx.tally.model.as_deref().unwrap_or("-"),
        response_model = ctx.tally.response_model.as_deref().unwrap_or("-"),
        stream = ctx.request.stream,
        status = ctx.tally.status,
        error = error,
        input_tokens = input,
        output_tokens = output,
        cost = %Cost(cost),
        duration_ms = total.as_secs_f64() * 1000.0,
        upstream_ms = upstream.as_secs_f64() * 1000.0,
        ttft_ms = ctx.tally.first_token.map(|t| t.as_secs_f64() * 1000.0).unwrap_or(0.0),
        "request"
    );
    // Counted last: once a request shows in portcullis_requests_total,
    // everything else it records (durations, TTFT, tokens, the access
    // log line) is already there, so a scrape never sees half of it.
    m.record_request(&labels, class, error);
}
