//! A provider endpoint: where a route's calls go (host, port, TLS, SNI,
//! a custom CA), its address resolved lazily and cached, and the Pingora
//! peer each call connects with.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::route::Route;
use crate::error::GatewayError;

/// A provider endpoint.
#[derive(Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// The address when the host is an IP literal.
    pub(crate) literal: Option<SocketAddr>,
    /// The last DNS answer and when it was obtained, shared by all requests.
    resolved: Arc<RwLock<Option<(SocketAddr, Instant)>>>,
    pub tls: bool,
    /// Host name for SNI and certificate verification.
    pub sni: String,
    /// `host[:port]` for the Host header.
    pub host_header: String,
    /// A custom CA to verify the provider against, when configured.
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
}

/// How provider peers are reached: the timeouts of `timeouts`.
#[derive(Debug, Clone, Copy)]
pub struct PeerOptions {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl PeerOptions {
    /// The Pingora peer for a route.
    pub async fn peer(
        &self,
        route: &Route,
    ) -> Result<pingora::upstreams::peer::HttpPeer, GatewayError> {
        self.peer_for(&route.upstream).await
    }

    /// The Pingora peer for an endpoint (a route's, or a provider's model
    /// list).
    pub async fn peer_for(
        &self,
        u: &Upstream,
    ) -> Result<pingora::upstreams::peer::HttpPeer, GatewayError> {
        let addr = u.addr().await?;
        let mut peer = pingora::upstreams::peer::HttpPeer::new(addr, u.tls, u.sni.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.write_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if u.tls {
            // HTTP/2 where the provider offers it (ALPN), else HTTP/1.1:
            // one connection carries every concurrent call.
            peer.options.alpn = pingora::protocols::ALPN::H2H1;
        }
        if let Some(ca) = &u.ca {
            peer.options.ca = Some(ca.clone());
        }
        Ok(peer)
    }
}

impl Upstream {
    /// The address to connect to. Host names are resolved asynchronously on
    /// first use and the answer is reused for `DNS_TTL`, so no request
    /// blocks on DNS, a provider whose DNS is down at start-up does not
    /// stop the gateway from starting, and DNS changes are followed. If a
    /// refresh fails, the last good answer is kept.
    pub async fn addr(&self) -> Result<SocketAddr, GatewayError> {
        if let Some(a) = self.literal {
            return Ok(a);
        }
        let cached = self.resolved.read().ok().and_then(|g| *g);
        if let Some((a, at)) = cached
            && at.elapsed() < DNS_TTL
        {
            return Ok(a);
        }
        let looked_up = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .ok()
            .and_then(|mut it| it.next());
        match (looked_up, cached) {
            (Some(a), _) => {
                if let Ok(mut g) = self.resolved.write() {
                    *g = Some((a, Instant::now()));
                }
                Ok(a)
            }
            (None, Some((a, _))) => Ok(a),
            (None, None) => Err(GatewayError::upstream_connect(format!(
                "could not resolve the provider host {}",
                self.host
            ))),
        }
    }
}

/// How long a DNS answer for a provider is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

/// Splits a base URL into a resolved upstream and its path prefix.
/// Where a provider's extra CA certificates come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CaSource<'a> {
    /// A PEM file (`ca_file`).
    File(&'a str),
    /// PEM text (`ca_pem`, from admin's gateway settings).
    Pem(&'a str),
}

pub(crate) fn parse_base_url(
    url: &str,
    ca: Option<CaSource<'_>>,
) -> Result<(Upstream, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with http:// or https://".into()),
    };
    let host = uri.host().ok_or("has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare_host = host.trim_matches(['[', ']']).to_owned();
    let literal = bare_host
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port));
    let host_header = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let ca = match ca {
        Some(CaSource::Pem(pem)) => {
            let certs = crate::config::settings::pem_certificates(pem)
                .map_err(|e| format!("ca_pem: {e}"))?;
            let certs: Vec<_> = certs
                .into_iter()
                .map(|der| {
                    pingora::utils::tls::WrappedX509::new(
                        der.to_vec(),
                        pingora::utils::tls::parse_x509,
                    )
                })
                .collect();
            Some(Arc::from(certs.into_boxed_slice()))
        }
        Some(CaSource::File(path)) => {
            let der = pingora::tls::load_pem_file_ca(&path.to_owned())
                .map_err(|e| format!("cannot load ca_file {path}: {e}"))?;
            if der.is_empty() {
                return Err(format!("ca_file {path} holds no certificate"));
            }
            let cert = pingora::utils::tls::WrappedX509::new(der, pingora::utils::tls::parse_x509);
            Some(Arc::from(vec![cert].into_boxed_slice()))
        }
        None => None,
    };
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((
        Upstream {
            host: bare_host,
            port,
            literal,
            resolved: Arc::new(RwLock::new(None)),
            tls,
            sni: host,
            host_header,
            ca,
        },
        base_path,
    ))
}
