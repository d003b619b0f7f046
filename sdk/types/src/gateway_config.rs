//! The gateway's declarative configuration: what `portcullis gateway
//! --config FILE` reads, and what the admin service hands to managed
//! gateways. The gateway validates it into its runtime form.

use serde::{Deserialize, Serialize};

/// The kinds of provider the gateway speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    AzureOpenai,
    Anthropic,
    Gemini,
    Bedrock,
    Mistral,
    OpenaiCompatible,
}

impl ProviderKind {
    /// The label used in metrics, logs and configuration.
    pub fn label(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::AzureOpenai => "azure-openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Mistral => "mistral",
            ProviderKind::OpenaiCompatible => "openai-compatible",
        }
    }

    /// The public base URL used when a provider's config gives none.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Mistral => Some("https://api.mistral.ai/v1"),
            // Azure needs the resource name, Bedrock the region, and
            // OpenAI-compatible servers are wherever they run.
            ProviderKind::AzureOpenai | ProviderKind::Bedrock | ProviderKind::OpenaiCompatible => {
                None
            }
        }
    }
}

/// The configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Plain-HTTP listener for client traffic (default `0.0.0.0:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Operations listener: `/metrics`, `/healthz`, `/readyz` (default `127.0.0.1:8081`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_listen: Option<String>,
    /// HTTPS listener for client traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFile>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Metrics and trace export.
    #[serde(default)]
    pub telemetry: TelemetryFile,
    #[serde(default)]
    pub providers: Vec<ProviderFile>,
    #[serde(default)]
    pub proxies: Vec<ProxyFile>,
}

/// The HTTPS listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub listen: String,
    /// One or more certificates; with several, the client's SNI picks one.
    pub certificates: Vec<CertificateFile>,
}

/// A certificate chain and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    pub cert: String,
    pub key: String,
}

/// Request limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest accepted request body (default 10 MiB, room for images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
}

/// Metrics and trace export.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// Add the API key's name as a label of the request and token
    /// counters (default false: cardinality grows with the number of keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_label: Option<bool>,
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`);
    /// spans are posted to `{otlp_endpoint}/v1/traces`. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans (default `portcullis-gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// TCP + TLS connect (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    /// Longest silence while reading a provider's answer (default 120 s:
    /// models can think for a long time before the first token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ms: Option<u64>,
    /// Longest wait to read the client's request body (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_body_ms: Option<u64>,
}

/// A provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// Base URL; defaults to the provider's public API where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Environment variable holding the API key (preferred over `api_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The API key itself (for local servers; prefer `api_key_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Models this provider serves (listed by `GET /models`).
    #[serde(default)]
    pub models: Vec<String>,
    /// Azure OpenAI `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Anthropic `anthropic-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    /// Output token limit sent when a client gives none and the provider
    /// requires one (Anthropic). Default 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u32>,
    /// AWS region (Bedrock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Environment variables with the AWS credentials (Bedrock); default
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_session_token_env: Option<String>,
    /// PEM file with the CA that signed a self-hosted server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// A proxy: one base path with its keys and routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub name: String,
    /// Defaults to the slug of the name (lowercase, hyphen-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Base path; defaults to `/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Inbound formats accepted (default `[openai]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Vec<InboundKind>>,
    /// Resources enabled (default all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<Resource>>,
    /// Count tokens of streamed responses (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_stream_tokens: Option<bool>,
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub keys: Vec<KeyFile>,
}

/// An inbound format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundKind {
    Openai,
    Anthropic,
    Gemini,
}

/// A resource a proxy offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resource {
    #[serde(rename = "chat/completions")]
    ChatCompletions,
    #[serde(rename = "embeddings")]
    Embeddings,
    #[serde(rename = "models")]
    Models,
}

/// A route to a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Name of a provider in `providers`.
    pub provider: String,
    /// Target model: overrides the model in the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Overrides the provider's base URL for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Where this route's provider key comes from (default: the provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<KeySourceFile>,
}

/// A static key from the environment (`{env: VAR}`) or a dynamic one from
/// a request header (`{header: NAME}`); exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySourceFile {
    /// Read from this environment variable at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Taken from this request header on every request (dynamic key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// An API key accepted by a proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Shown in logs and metrics instead of the key.
    pub name: String,
    /// SHA-256 of the key, hex (what `portcullis key hash` prints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Environment variable holding the key (hashed at load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json() {
        // Admin serves this to managed gateways as JSON.
        let text = r#"{"providers":[{"name":"p","type":"azure-openai","base_url":"https://r.openai.azure.com","api_key":"k"}],
            "proxies":[{"name":"Chat API","inbound":["openai","anthropic"],"resources":["chat/completions"],
            "routes":[{"provider":"p","model":"gpt-4o","api_key":{"header":"x-key"}}],"keys":[{"name":"a","sha256":"00"}]}]}"#;
        let cfg: FileConfig = serde_json::from_str(text).unwrap();
        assert_eq!(cfg.providers[0].kind, ProviderKind::AzureOpenai);
        assert_eq!(
            cfg.proxies[0].resources,
            Some(vec![Resource::ChatCompletions])
        );
        let back: FileConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let v = serde_json::to_value(&cfg).unwrap();
        assert!(
            v["proxies"][0].get("context").is_none(),
            "unset options are left out"
        );
    }
}
