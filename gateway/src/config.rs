//! The gateway configuration: the declarative file (`portcullis gateway
//! --config FILE`), its checks, and the plain types the runtime built
//! from it (`runtime`) is made of.
//!
//! The file is parsed into serde structs that reject unknown fields, then
//! turned into internal structs where everything a request needs is ready:
//! provider adapters built, upstream addresses resolved, keys hashed,
//! model lists computed. Nothing here is parsed again per request.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::providers::{self, AwsCredentials, Provider, ProviderSettings};

/// A configuration error, naming the field that is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where in the file, e.g. `proxies[0].routes[1].provider`.
    pub path: String,
    pub message: String,
}

pub(crate) fn cfg_err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

pub use portcullis_types::gateway_config::*;

/// Validated telemetry settings.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    pub key_label: bool,
    /// Where spans go: the collector's `/v1/traces` URL, parsed.
    pub otlp: Option<OtlpTarget>,
    pub service_name: String,
}

/// An OTLP/HTTP collector endpoint.
#[derive(Debug, Clone)]
pub struct OtlpTarget {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Path of the traces endpoint, e.g. `/v1/traces`.
    pub path: String,
}

/// A validated route.
pub struct Route {
    /// `provider` or `provider/model`; shown in `x-portcullis-route`.
    pub name: String,
    pub provider_name: String,
    pub provider: Arc<dyn Provider>,
    pub kind: ProviderKind,
    pub upstream: Upstream,
    pub target_model: Option<String>,
    pub key: KeySource,
    /// Models the provider declares (empty: any model is passed on).
    pub models: Vec<String>,
}

/// Where a route's provider key comes from.
#[derive(Clone)]
pub enum KeySource {
    None,
    Static(String),
    Header(http::HeaderName),
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
        if let Some((a, at)) = cached {
            if at.elapsed() < DNS_TTL {
                return Ok(a);
            }
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
pub(crate) const DNS_TTL: Duration = Duration::from_secs(30);

/// Default of `limits.max_held_response_bytes`: far above any model's
/// output (a 128k-token answer is about half a megabyte of text).
pub const DEFAULT_MAX_HELD_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Limits and timeouts that must be positive to mean anything: zero
/// connections or a zero deadline would refuse every client.
pub(crate) fn check_positive(file: &FileConfig) -> Result<(), ConfigError> {
    let limits = [
        (
            "limits.max_body_bytes",
            file.limits.max_body_bytes.map(|v| v as u64),
        ),
        (
            "limits.max_client_connections",
            file.limits.max_client_connections.map(|v| v as u64),
        ),
        (
            "limits.max_held_response_bytes",
            file.limits.max_held_response_bytes.map(|v| v as u64),
        ),
        ("timeouts.connect_ms", file.timeouts.connect_ms),
        ("timeouts.read_ms", file.timeouts.read_ms),
        ("timeouts.client_body_ms", file.timeouts.client_body_ms),
        ("timeouts.client_header_ms", file.timeouts.client_header_ms),
        ("timeouts.client_idle_ms", file.timeouts.client_idle_ms),
    ];
    for (path, value) in limits {
        if value == Some(0) {
            return Err(cfg_err(path, "must be greater than 0"));
        }
    }
    Ok(())
}

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
        let u = &route.upstream;
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

pub(crate) fn build_route(
    rf: &RouteFile,
    prov: &ProviderFile,
    prov_i: usize,
    rat: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
    egress: &[String],
) -> Result<Route, ConfigError> {
    let pat = |field: &str| format!("providers[{prov_i}].{field}");
    let region = prov.region.clone();
    let provider_url = effective_base_url(prov.kind, prov.base_url.as_deref(), region.as_deref());
    let base_url = match (&rf.base_url, &provider_url) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => {
            return Err(cfg_err(
                pat("base_url"),
                format!("required for provider type `{}`", prov.kind.label()),
            ));
        }
    };
    let base_at = if rf.base_url.is_some() {
        rat("base_url")
    } else {
        pat("base_url")
    };
    let (upstream, base_path) =
        parse_base_url(&base_url, prov.ca_file.as_deref()).map_err(|m| cfg_err(&base_at, m))?;
    if !egress.is_empty() && !egress_allows(egress, &upstream.host, upstream.port) {
        return Err(cfg_err(
            base_at,
            format!(
                "{}:{} is not in the gateway's egress allow-list ({})",
                upstream.host,
                upstream.port,
                egress.join(", ")
            ),
        ));
    }
    // The provider's own credentials go to the provider's own host only: a
    // route that points elsewhere must bring its own key (or none).
    if let Some(route_url) = &rf.base_url
        && rf.api_key.is_none()
        && (prov.api_key.is_some()
            || prov.api_key_env.is_some()
            || prov.kind == ProviderKind::Bedrock)
    {
        let here = url_origin(route_url);
        let home = provider_url.as_deref().and_then(url_origin);
        if here.is_none() || here != home {
            return Err(cfg_err(
                rat("base_url"),
                format!(
                    "sends provider `{}`'s credentials to another host than the provider's own ({}); give this route its own `api_key`, or declare a provider for that host",
                    prov.name,
                    provider_url.as_deref().unwrap_or("none")
                ),
            ));
        }
    }

    let provider_key = match (&prov.api_key_env, &prov.api_key) {
        (Some(var), _) => Some(env(var).ok_or_else(|| {
            cfg_err(
                pat("api_key_env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, Some(k)) => Some(k.clone()),
        (None, None) => None,
    };
    let key = match &rf.api_key {
        Some(KeySourceFile {
            env: Some(var),
            header: None,
        }) => KeySource::Static(env(var).ok_or_else(|| {
            cfg_err(
                rat("api_key.env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        Some(KeySourceFile {
            env: None,
            header: Some(h),
        }) => KeySource::Header(
            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| cfg_err(rat("api_key.header"), "not a valid header name"))?,
        ),
        Some(_) => return Err(cfg_err(rat("api_key"), "set exactly one of env or header")),
        None => provider_key
            .map(KeySource::Static)
            .unwrap_or(KeySource::None),
    };
    let aws = if prov.kind == ProviderKind::Bedrock {
        let region = region.ok_or_else(|| cfg_err(pat("region"), "required for bedrock"))?;
        let var = |field: &str,
                   given: &Option<String>,
                   default: &str|
         -> Result<Option<String>, ConfigError> {
            let name = given.clone().unwrap_or_else(|| default.to_owned());
            match env(&name) {
                Some(v) => Ok(Some(v)),
                None if field == "aws_session_token_env" => Ok(None),
                None => Err(cfg_err(
                    pat(field),
                    format!("environment variable {name} is not set"),
                )),
            }
        };
        Some(AwsCredentials {
            access_key_id: var(
                "aws_access_key_id_env",
                &prov.aws_access_key_id_env,
                "AWS_ACCESS_KEY_ID",
            )?
            .unwrap_or_default(),
            secret_access_key: var(
                "aws_secret_access_key_env",
                &prov.aws_secret_access_key_env,
                "AWS_SECRET_ACCESS_KEY",
            )?
            .unwrap_or_default(),
            session_token: var(
                "aws_session_token_env",
                &prov.aws_session_token_env,
                "AWS_SESSION_TOKEN",
            )?,
            region,
        })
    } else {
        None
    };
    if prov.kind == ProviderKind::AzureOpenai && rf.model.is_none() && prov.models.is_empty() {
        return Err(cfg_err(
            rat("model"),
            "azure-openai routes need a target model (the deployment name) or provider models",
        ));
    }
    let settings = ProviderSettings {
        base_path,
        host: upstream.host_header.clone(),
        api_version: prov.api_version.clone(),
        anthropic_version: prov.anthropic_version.clone(),
        default_max_tokens: prov.default_max_tokens.unwrap_or(4096),
        aws,
    };
    Ok(Route {
        name: match (&rf.name, &rf.model) {
            (Some(n), _) => n.clone(),
            (None, Some(m)) => format!("{}/{m}", prov.name),
            (None, None) => prov.name.clone(),
        },
        provider_name: prov.name.clone(),
        provider: providers::build(prov.kind, settings),
        kind: prov.kind,
        upstream,
        target_model: rf.model.clone(),
        key,
        models: rf.models.clone().unwrap_or_else(|| prov.models.clone()),
    })
}

/// SHA-256 of an API key, as stored.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub use portcullis_types::names::{normalise_context, slugify};

/// Parses a YAML file, naming the field at fault.
pub fn parse_file(text: &str) -> Result<FileConfig, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.into_inner().to_string();
        // serde_yaml puts the path in its message too; say it once.
        if let Some(rest) = message.strip_prefix(&format!("{path}: ")) {
            message = rest.to_owned();
        }
        cfg_err(if path == "." { "(file)".into() } else { path }, message)
    })
}

pub(crate) fn build_telemetry(t: &TelemetryFile) -> Result<Telemetry, ConfigError> {
    let otlp = match &t.otlp_endpoint {
        None => None,
        Some(url) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| cfg_err("telemetry.otlp_endpoint", format!("not a URL: {e}")))?;
            let tls = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => {
                    return Err(cfg_err(
                        "telemetry.otlp_endpoint",
                        "must start with http:// or https://",
                    ));
                }
            };
            let host = uri
                .host()
                .ok_or_else(|| cfg_err("telemetry.otlp_endpoint", "has no host"))?
                .trim_matches(['[', ']'])
                .to_owned();
            Some(OtlpTarget {
                port: uri.port_u16().unwrap_or(if tls { 443 } else { 4318 }),
                host,
                tls,
                path: format!("{}/v1/traces", uri.path().trim_end_matches('/')),
            })
        }
    };
    Ok(Telemetry {
        key_label: t.key_label.unwrap_or(false),
        otlp,
        service_name: t
            .service_name
            .clone()
            .unwrap_or_else(|| "portcullis-gateway".into()),
    })
}

/// Splits a base URL into a resolved upstream and its path prefix.
pub(crate) fn parse_base_url(
    url: &str,
    ca_file: Option<&str>,
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
    let ca = match ca_file {
        Some(path) => {
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

/// The client connection limits (from `limits` and `timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections held at once, over every traffic listener.
    pub max_connections: usize,
    /// Longest wait for the first byte of a request (new or reused
    /// connection).
    pub idle: Duration,
    /// From the first byte of a request to the end of its header.
    pub header: Duration,
    /// Reading the whole body; also bounds draining an unread body.
    pub body: Duration,
}
