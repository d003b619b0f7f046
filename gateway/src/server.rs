//! The Pingora service: the `ProxyHttp` implementation that hands every
//! request to the exchange (`exchange`, where the module doc explains why
//! the gateway answers in `request_filter`) and reports it when it ends.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::error::GatewayError;
pub use crate::exchange::{Gateway, RequestCtx};

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// Runs when the request header has arrived. The gateway answers every
    /// request here, so it always returns `Ok(true)`: the response has been
    /// written and Pingora's proxy phases are skipped.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.serve(session, ctx).await;
        Ok(true)
    }

    /// Never reached: `request_filter` answers every request.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "the gateway answers in request_filter",
        )
    }

    /// Runs when the exchange ends, successfully or not: metrics and the
    /// access log line.
    async fn logging(
        &self,
        session: &mut Session,
        _e: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        // The client's HTTP version, for the access log.
        let protocol = match session.req_header().version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        self.finish(ctx, protocol);
    }

    /// Errors Pingora itself raises (malformed HTTP, a failed write) are
    /// answered with the OpenAI envelope instead of Pingora's HTML page.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.esource() {
            pingora::ErrorSource::Downstream => match e.etype() {
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            _ => 500,
        };
        if code > 0 {
            let err = if code == 400 {
                GatewayError::invalid_request(format!("Malformed request: {}", e.etype().as_str()))
            } else {
                GatewayError::internal("internal gateway error")
            };
            self.fail(session, ctx, &err).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
