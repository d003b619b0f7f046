//! Ingress: from a request's header and body to what the exchange works
//! on: the request id and trace, the proxy (by base path), the endpoint,
//! the caller's key, and the body read under the gateway's limits.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use portcullis_types::{ModelEntry, ModelList};

use super::context::RequestCtx;
use crate::config::{Resource, hash_key};
use crate::error::GatewayError;
use crate::inbound::{ChatPath, ClientFormat, client_format};
use crate::key_usage::KeyUsage;
use crate::otlp::Tracer;
use crate::runtime::{Proxy, Runtime};
use crate::upstream::{KeySource, Route};

/// What the client asked for, after the proxy's base path.
pub(super) enum Endpoint {
    /// A chat request in one of the proxy's client formats.
    Chat {
        format: &'static dyn ClientFormat,
        path: ChatPath,
    },
    Embeddings,
    /// OpenAI's legacy text completions, forwarded to OpenAI-format routes.
    Completions,
    /// OpenAI's moderations, forwarded to OpenAI-format routes.
    Moderations,
    Models,
    Model(String),
}

/// The request id (the client's `x-request-id` when it sent a usable one)
/// and, when spans are exported, the trace the request belongs to.
pub(super) fn identify(session: &Session, ctx: &mut RequestCtx, tracer: &Tracer) {
    let header = session.req_header();
    ctx.request.request_id = header
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    if tracer.enabled() {
        ctx.request.trace = Some(
            tracer.trace(
                header
                    .headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok()),
            ),
        );
        ctx.request.started_wall = SystemTime::now();
        ctx.request.span_name = format!("{} {}", header.method, header.uri.path());
    }
}

/// The proxy whose base path is the longest prefix of `path`, and the rest
/// of the path after it. Looks up each `/`-boundary prefix from the longest,
/// so the cost is the path's depth, not the number of proxies.
pub(super) fn find_proxy<'a>(rt: &'a Runtime, path: &'a str) -> Option<(&'a Arc<Proxy>, &'a str)> {
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

pub(super) fn match_endpoint(
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
    // Each client format the proxy accepts knows its own chat path.
    for kind in &proxy.inbound {
        let format = client_format(*kind);
        if let Some(path) = format.chat_path(rest) {
            return post(Endpoint::Chat { format, path }, format.resource());
        }
    }
    let openai = proxy.inbound.contains(&crate::config::InboundKind::Openai);
    // OpenAI's Responses API is the OpenAI format's second chat endpoint:
    // it comes with the `openai` inbound format (docs/gateway.md).
    let responses: &'static dyn ClientFormat = &crate::inbound::responses::Responses;
    if openai && let Some(path) = responses.chat_path(rest) {
        return post(
            Endpoint::Chat {
                format: responses,
                path,
            },
            responses.resource(),
        );
    }
    match rest {
        "/embeddings" if openai => post(Endpoint::Embeddings, Resource::Embeddings),
        "/completions" if openai => post(Endpoint::Completions, Resource::Completions),
        "/moderations" if openai => post(Endpoint::Moderations, Resource::Moderations),
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
            if let Some(id) = rest.strip_prefix("/models/")
                && method == http::Method::GET
                && proxy.resources.contains(&Resource::Models)
            {
                return Ok(Endpoint::Model(id.to_owned()));
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
pub(super) fn authenticate(
    session: &Session,
    proxy: &Proxy,
    query: Option<&str>,
    usage: &KeyUsage,
) -> Result<Caller, GatewayError> {
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
    Ok(Caller {
        name: entry.name.clone(),
        id: entry.id.clone(),
        scope: entry.scope.clone(),
        ids: entry.caller.clone(),
    })
}

/// Who sent a request: its key's name and id, and the key's scope.
pub(super) struct Caller {
    pub name: Arc<str>,
    pub id: Arc<str>,
    pub scope: Option<Arc<crate::config::KeyScopeFile>>,
    /// Its application and subscription, for policies.
    pub ids: crate::policy::CallerIds,
}

/// Refuses what the key's scope does not allow of `endpoint`: its
/// resource, and for chat its client format (the model is checked once
/// the body is read, [`check_model_scope`]).
pub(super) fn check_endpoint_scope(
    scope: &crate::config::KeyScopeFile,
    endpoint: &Endpoint,
) -> Result<(), GatewayError> {
    let resource = match endpoint {
        Endpoint::Models | Endpoint::Model(_) => Resource::Models,
        Endpoint::Embeddings => Resource::Embeddings,
        Endpoint::Completions => Resource::Completions,
        Endpoint::Moderations => Resource::Moderations,
        Endpoint::Chat { format, .. } => format.resource(),
    };
    if !scope.resources.is_empty() && !scope.resources.contains(&resource) {
        let name = serde_json::to_value(resource)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(GatewayError::forbidden(
            "resource_not_allowed",
            "resource",
            format!("This API key may not use `{name}`."),
        ));
    }
    if let Endpoint::Chat { format, .. } = endpoint
        && !scope.inbound.is_empty()
        && !scope.inbound.contains(&format.kind())
    {
        let name = serde_json::to_value(format.kind())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(GatewayError::forbidden(
            "format_not_allowed",
            "format",
            format!("This API key may not use the {name} API format."),
        ));
    }
    Ok(())
}

/// Refuses a model (as the client named it, without the proxy prefix)
/// outside the key's scope.
pub(super) fn check_model_scope(
    scope: Option<&crate::config::KeyScopeFile>,
    model: &str,
) -> Result<(), GatewayError> {
    match scope {
        Some(s) if !s.allows_model(model) => Err(GatewayError::forbidden(
            "model_not_allowed",
            "model",
            format!(
                "This API key may not use model `{model}`; it may use {}.",
                s.models
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// Reads the whole request body under the configured size limit and
/// total deadline (a client dripping its body is cut off).
pub(super) async fn read_body(session: &mut Session, rt: &Runtime) -> Result<Bytes, GatewayError> {
    let limit = rt.max_body_bytes;
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::payload_too_large(limit));
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

/// The provider key for this call: static, or taken from the client's request.
pub(super) fn provider_key(
    session: &Session,
    route: &Route,
) -> Result<Option<String>, GatewayError> {
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

/// A model name without the `{proxy}:` prefix `/models` lists it with.
pub(super) fn strip_proxy_prefix<'a>(proxy: &Proxy, model: &'a str) -> &'a str {
    model
        .strip_prefix(proxy.id.as_str())
        .and_then(|m| m.strip_prefix(':'))
        .unwrap_or(model)
}

/// The proxy's models as `GET /models` lists them.
pub(super) fn model_list(proxy: &Proxy) -> ModelList {
    ModelList {
        object: "list".into(),
        data: proxy
            .listed_models()
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
