//! The gateway configuration: the declarative file (`portcullis gateway
//! --config FILE`), parsed with errors that name the field at fault, its
//! checks, and the plain validated values (telemetry, connection limits)
//! a runtime is built from.
//!
//! The schema itself (`gateway_config`), ids and contexts (`names`) and
//! the rules a proxy must follow (`proxy_rules`) live in
//! `portcullis-types`, the serde-only crate the managed-gateway protocol
//! and the policy SDK also build on; they are re-exported here, so admin
//! and the gateway validate with the same code. This crate does no I/O and
//! knows nothing of the runtime: the gateway builds its runtime above it
//! (`runtime`: providers, endpoints and their DNS, policy chains, Redis).

use std::time::Duration;

use sha2::{Digest, Sha256};

/// A configuration error, naming the field that is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where in the file, e.g. `proxies[0].routes[1].provider`.
    pub path: String,
    pub message: String,
}

pub fn cfg_err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

pub use portcullis_types::gateway_config::*;

pub mod models;
pub mod pricing;
pub mod settings;
pub use portcullis_types::{names, proxy_rules};

/// Validated telemetry settings.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    pub key_label: bool,
    pub application_label: bool,
    /// Where spans go: the collector's `/v1/traces` URL, parsed.
    pub otlp: Option<OtlpTarget>,
    pub service_name: String,
    /// Share of the traces the gateway starts that are exported (0 to 1).
    pub sampling_ratio: f64,
}

/// An OTLP collector endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    /// Where spans are sent: `{base}/v1/traces` over HTTP, the base URL
    /// over gRPC.
    pub url: String,
    pub protocol: OtlpProtocol,
}

/// Default of `limits.max_held_response_bytes`: far above any model's
/// output (a 128k-token answer is about half a megabyte of text).
pub const DEFAULT_MAX_HELD_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Limits and timeouts that must be positive to mean anything: zero
/// connections or a zero deadline would refuse every client.
pub fn check_positive(file: &FileConfig) -> Result<(), ConfigError> {
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

pub fn build_telemetry(t: &TelemetryFile) -> Result<Telemetry, ConfigError> {
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
            if uri.host().is_none() {
                return Err(cfg_err("telemetry.otlp_endpoint", "has no host"));
            }
            let protocol = t.otlp_protocol.unwrap_or_default();
            let default_port = match (protocol, tls) {
                (_, true) => 443,
                (OtlpProtocol::Grpc, false) => 4317,
                _ => 4318,
            };
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let base = if uri.port_u16().is_some() {
                format!("{}://{authority}", uri.scheme_str().unwrap_or("http"))
            } else {
                format!(
                    "{}://{authority}:{default_port}",
                    uri.scheme_str().unwrap_or("http")
                )
            };
            let path = uri.path().trim_end_matches('/');
            let url = match protocol {
                OtlpProtocol::Grpc => format!("{base}{path}"),
                _ => format!("{base}{path}/v1/traces"),
            };
            Some(OtlpTarget { url, protocol })
        }
    };
    let sampling_ratio = t.sampling_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampling_ratio) {
        return Err(cfg_err(
            "telemetry.sampling_ratio",
            "must be between 0 and 1",
        ));
    }
    Ok(Telemetry {
        sampling_ratio,
        key_label: t.key_label.unwrap_or(false),
        application_label: t.application_label.unwrap_or(false),
        otlp,
        service_name: t
            .service_name
            .clone()
            .unwrap_or_else(|| "portcullis-gateway".into()),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: &str, protocol: Option<OtlpProtocol>) -> OtlpTarget {
        let t = TelemetryFile {
            otlp_endpoint: Some(endpoint.into()),
            otlp_protocol: protocol,
            ..Default::default()
        };
        build_telemetry(&t).unwrap().otlp.unwrap()
    }

    #[test]
    fn otlp_endpoints_get_the_protocols_default_port_and_path() {
        let http = target("http://collector", None);
        assert_eq!(http.url, "http://collector:4318/v1/traces");
        assert_eq!(http.protocol, OtlpProtocol::HttpProtobuf);
        let json = target(
            "https://otel.example.com/otlp/",
            Some(OtlpProtocol::HttpJson),
        );
        assert_eq!(json.url, "https://otel.example.com:443/otlp/v1/traces");
        let grpc = target("http://collector", Some(OtlpProtocol::Grpc));
        assert_eq!(grpc.url, "http://collector:4317");
        assert_eq!(target("http://c:9999", None).url, "http://c:9999/v1/traces");
        let bad = TelemetryFile {
            otlp_endpoint: Some("collector:4318".into()),
            ..Default::default()
        };
        assert_eq!(
            build_telemetry(&bad).unwrap_err().path,
            "telemetry.otlp_endpoint"
        );
        let proto: TelemetryFile = serde_yaml::from_str("otlp_protocol: grpc").unwrap();
        assert_eq!(proto.otlp_protocol, Some(OtlpProtocol::Grpc));
        assert!(serde_yaml::from_str::<TelemetryFile>("otlp_protocol: udp").is_err());
    }
}
