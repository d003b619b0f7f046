//! Egress: response headers and writes to the client, and watching the
//! client while the gateway waits on the provider.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::context::RequestCtx;
use crate::policy::ChainRun;
use crate::upstream::Route;

/// A response header with the request id and `extra` headers.
pub(super) fn response_header(
    status: u16,
    ctx: &RequestCtx,
    extra: &[(&str, &str)],
) -> ResponseHeader {
    let mut h = ResponseHeader::build(status, Some(6 + extra.len()))
        .unwrap_or_else(|_| ResponseHeader::build(500, None).expect("500 is a valid status"));
    let _ = h.insert_header("x-request-id", ctx.request.request_id.as_str());
    for (k, v) in extra {
        let _ = h.insert_header(k.to_string(), *v);
    }
    h
}

/// The headers the request-phase policies added (e.g. `x-ratelimit-*`),
/// owned: the response phase still needs the chain.
pub(super) fn policy_headers(policies: &Option<ChainRun>) -> Vec<(String, String)> {
    policies
        .as_ref()
        .map(|r| r.response_headers().to_vec())
        .unwrap_or_default()
}

/// The headers of a provider's answer: the route that answered, then the
/// policies' (`policy_headers`).
pub(super) fn answer_headers<'a>(
    route: &'a Route,
    policy_headers: &'a [(String, String)],
) -> Vec<(&'a str, &'a str)> {
    let mut headers = Vec::with_capacity(1 + policy_headers.len());
    headers.push(("x-portcullis-route", route.name.as_str()));
    headers.extend(policy_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    headers
}

/// The header of a streamed answer (server-sent events).
pub(super) fn stream_header(
    status: u16,
    ctx: &RequestCtx,
    extra: &[(&str, &str)],
) -> ResponseHeader {
    let mut h = response_header(status, ctx, extra);
    let _ = h.insert_header("content-type", "text/event-stream");
    let _ = h.insert_header("cache-control", "no-cache");
    h
}

/// Writes a whole JSON response; false when the client was gone.
pub(super) async fn write_json(
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

/// Writes `piece` of a stream, after `header` when it has not gone out
/// yet; false when the client was gone.
pub(super) async fn write_piece(
    session: &mut Session,
    header: Option<ResponseHeader>,
    piece: Bytes,
    end: bool,
) -> bool {
    if let Some(h) = header
        && session
            .write_response_header(Box::new(h), false)
            .await
            .is_err()
    {
        return false;
    }
    session.write_response_body(Some(piece), end).await.is_ok()
}

/// Waits on the provider (`wait`) while watching the client: `None` when
/// the client closed its connection first. Dropping `wait` then drops the
/// provider call. Used for the waits that can be long (time to the first
/// byte, a buffered answer); a stream notices a departed client at its
/// next write.
pub(super) async fn unless_client_leaves<T>(
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
