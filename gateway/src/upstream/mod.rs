//! The client side of provider calls: routes and their endpoints
//! (`route`, `endpoint`: where a call goes, the peer it connects with,
//! HTTP/2 by ALPN with HTTP/1.1 fallback), and sending one request over
//! Pingora's pooled connector, reading its answer, handing the connection
//! back to the pool.

pub mod auth;
mod endpoint;
mod models;
mod route;

pub(crate) use endpoint::{CaSource, parse_base_url};
pub use endpoint::{PeerOptions, Upstream};
pub use models::{DiscoveredModels, ModelSet};
pub use route::{KeySource, Route, adapter_settings, build_route, provider_credentials};

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::error::GatewayError;
use crate::providers::UpstreamRequest;

/// An open exchange with a provider whose response header has arrived.
pub struct UpstreamExchange {
    pub session: HttpSession,
    pub status: u16,
    /// `retry-after` as the provider sent it.
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
}

/// Largest provider body the gateway will buffer (non-streamed answers and
/// error bodies).
pub const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

/// Sends the request and waits for the response header. A pooled
/// connection that the provider closed while idle fails on first use; that
/// case (and only that one) is retried once on a fresh connection.
pub async fn send(
    connector: &Connector,
    peer: &HttpPeer,
    host_header: &str,
    req: &UpstreamRequest,
) -> Result<UpstreamExchange, GatewayError> {
    // Built before any connection: a request that cannot be expressed
    // (a header value from the client that is not a valid header) is the
    // client's error, never a failure of the route.
    let header = request_header(host_header, req).map_err(|e| {
        GatewayError::invalid_request(format!("The request cannot be sent to the provider: {e}"))
    })?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut session, reused) = connector
            .get_http_session(peer)
            .await
            .map_err(|e| connect_error(peer, &e))?;
        // The connector applies the peer's timeouts to the connection
        // phase; reads and writes of the exchange get them here.
        session.set_read_timeout(peer.options.read_timeout);
        session.set_write_timeout(peer.options.write_timeout);
        match exchange(&mut session, header.clone(), req).await {
            Ok(()) => {
                let header = session.response_header().ok_or_else(|| {
                    GatewayError::upstream_protocol("provider sent no response header")
                })?;
                let status = header.status.as_u16();
                let get = |name: &str| {
                    header
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let retry_after = get("retry-after");
                let content_type = get("content-type");
                return Ok(UpstreamExchange {
                    session,
                    status,
                    retry_after,
                    content_type,
                });
            }
            Err(e) if reused && attempt == 1 && is_stale_connection(&e) => {
                tracing::debug!(error = %e, "reused upstream connection failed; retrying on a new one");
                continue;
            }
            Err(e) => return Err(exchange_error(peer, &e)),
        }
    }
}

fn request_header(host_header: &str, req: &UpstreamRequest) -> pingora::Result<RequestHeader> {
    let mut header = RequestHeader::build(
        req.method.clone(),
        req.path.as_bytes(),
        Some(req.headers.len() + 4),
    )?;
    header.insert_header("host", host_header)?;
    header.insert_header("content-length", req.body.len().to_string())?;
    // Bodies are translated, so they must arrive uncompressed.
    header.insert_header("accept-encoding", "identity")?;
    header.insert_header(
        "user-agent",
        concat!("portcullis/", env!("CARGO_PKG_VERSION")),
    )?;
    for (name, value) in &req.headers {
        header.insert_header(*name, value.as_str())?;
    }
    Ok(header)
}

async fn exchange(
    session: &mut HttpSession,
    header: RequestHeader,
    req: &UpstreamRequest,
) -> pingora::Result<()> {
    session.write_request_header(Box::new(header)).await?;
    session.write_request_body(req.body.clone(), true).await?;
    session.finish_request_body().await?;
    session.read_response_header().await?;
    Ok(())
}

/// Reads the rest of the body (bounded) and hands the connection back to
/// the pool.
pub async fn read_body(
    connector: &Connector,
    peer: &HttpPeer,
    mut ex: UpstreamExchange,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let mut buf = BytesMut::new();
    loop {
        match ex.session.read_response_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::upstream_protocol(format!(
                        "provider response is larger than {limit} bytes"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(exchange_error(peer, &e)),
        }
    }
    release(connector, peer, ex).await;
    Ok(buf.freeze())
}

/// Hands the connection back to the pool when its response was read to
/// the end (buffered or streamed): the next call to this provider skips
/// the TCP and TLS handshakes. A connection with unread response bytes is
/// dropped instead (closed).
pub async fn release(connector: &Connector, peer: &HttpPeer, mut ex: UpstreamExchange) {
    if ex.session.response_done() {
        connector
            .release_http_session(ex.session, peer, Some(Duration::from_secs(60)))
            .await;
    }
}

/// Whether a failure on a reused pooled connection means the provider had
/// closed it while idle (safe to resend: nothing was processed). Timeouts
/// are never resent: the provider may be working on the request.
fn is_stale_connection(e: &pingora::Error) -> bool {
    use pingora::{ErrorType, RetryType};
    !matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    ) && matches!(e.retry, RetryType::ReusedOnly | RetryType::Decided(true))
}

fn connect_error(peer: &HttpPeer, e: &pingora::Error) -> GatewayError {
    use pingora::ErrorType;
    match e.etype() {
        ErrorType::ConnectTimedout => GatewayError::upstream_timeout(format!(
            "timed out connecting to the provider at {peer}"
        )),
        _ => GatewayError::upstream_connect(format!(
            "could not connect to the provider at {}: {}",
            peer,
            e.etype().as_str()
        )),
    }
}

/// Maps a failure after connecting to the client-facing error.
pub fn exchange_error(peer: &HttpPeer, e: &pingora::Error) -> GatewayError {
    use pingora::ErrorType;
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            GatewayError::upstream_timeout(format!("the provider at {peer} did not answer in time"))
        }
        ErrorType::ConnectTimedout => GatewayError::upstream_timeout(format!(
            "timed out connecting to the provider at {peer}"
        )),
        _ => GatewayError::upstream_connect(format!(
            "the connection to the provider at {} failed: {}",
            peer,
            e.etype().as_str()
        )),
    }
}
