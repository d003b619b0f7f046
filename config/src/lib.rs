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
pub use portcullis_types::{names, proxy_rules};

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
