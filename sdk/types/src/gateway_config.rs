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

/// Where a provider's requests go when neither it nor a route sets a
/// `base_url`: the provider's public API (Bedrock's regional endpoint).
pub fn effective_base_url(
    kind: ProviderKind,
    base_url: Option<&str>,
    region: Option<&str>,
) -> Option<String> {
    match (base_url, kind, region) {
        (Some(u), _, _) => Some(u.to_owned()),
        (None, ProviderKind::Bedrock, Some(r)) => {
            Some(format!("https://bedrock-runtime.{r}.amazonaws.com"))
        }
        (None, kind, _) => kind.default_base_url().map(str::to_owned),
    }
}

/// Where model discovery lists a provider's models: its base URL, except
/// for Bedrock, whose model list is on the control-plane host
/// (`bedrock.{region}.amazonaws.com`), not on the runtime host requests
/// go to. A Bedrock `base_url` on the runtime host is moved to its
/// control-plane twin; any other `base_url` (a private endpoint, a test
/// server) serves both.
pub fn model_list_base_url(
    kind: ProviderKind,
    base_url: Option<&str>,
    region: Option<&str>,
) -> Option<String> {
    match (kind, base_url, region) {
        (ProviderKind::Bedrock, None, Some(r)) => {
            Some(format!("https://bedrock.{r}.amazonaws.com"))
        }
        (ProviderKind::Bedrock, Some(u), _) => {
            let (scheme, rest) = u.split_once("://")?;
            let rest = match rest.strip_prefix("bedrock-runtime-fips.") {
                Some(host) => format!("bedrock-fips.{host}"),
                None => match rest.strip_prefix("bedrock-runtime.") {
                    Some(host) => format!("bedrock.{host}"),
                    None => rest.to_owned(),
                },
            };
            Some(format!("{scheme}://{rest}"))
        }
        _ => effective_base_url(kind, base_url, region),
    }
}

/// The origin of an `http://` or `https://` URL: scheme, lowercased host
/// (IPv6 without brackets) and port (defaulted). `None` for anything else.
/// Admin and gateway compare origins to decide where a provider's
/// credentials may be sent.
pub fn url_origin(url: &str) -> Option<(&'static str, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => ("http", 80),
        "https" => ("https", 443),
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials in a URL are refused: they would travel to the host.
    if authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// Whether `host:port` matches one entry of an egress allow-list: `host`
/// (any port), `host:port`, or `*.domain` (any subdomain of `domain`).
pub fn egress_allows(allow: &[String], host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    allow.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let (pattern, want_port) = match entry.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => (h.trim_matches(['[', ']']).to_owned(), Some(p)),
                Err(_) => (entry.clone(), None),
            },
            _ => (entry.trim_matches(['[', ']']).to_owned(), None),
        };
        let host_ok = match pattern.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => host == pattern,
        };
        host_ok && want_port.is_none_or(|p| p == port)
    })
}

/// The configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// The wasm policy engine (used when a proxy attaches policies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_engine: Option<PolicyEngineFile>,
    /// Hosts the gateway may send requests to (providers, the semantic
    /// service, the policy embeddings endpoint): `host`, `host:port` or
    /// `*.domain`. Empty: no restriction. `portcullis gateway
    /// --egress-allow` replaces it, so a managed gateway's operator keeps
    /// the last word over what admin sends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_allow: Vec<String>,
}

/// The HTTPS listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub listen: String,
    /// One or more certificates; with several, the client's SNI picks one.
    pub certificates: Vec<CertificateFile>,
}

/// A certificate chain and its key: the chain from a PEM file (`cert`) or
/// inline (`cert_pem`), the key from a PEM file (`key`) or an environment
/// variable holding the PEM (`key_env`; a managed gateway gets admin's
/// sealed keys that way, beside the configuration like provider keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
}

/// Request limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest accepted request body (default 10 MiB, room for images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Client connections held at once over the traffic listeners (default
    /// 10,000). Past it a new connection is answered `503` with
    /// `Connection: close` and closed. Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_client_connections: Option<usize>,
    /// Largest answer held back whole for response policies (default
    /// 16 MiB); a larger one fails with `502`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_held_response_bytes: Option<usize>,
}

/// Metrics and trace export.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// Add the API key's name as a label of the request and token
    /// counters (default false: cardinality grows with the number of keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_label: Option<bool>,
    /// Add the key's application (admin's id; `-` for keys of no
    /// application) as a label of `portcullis_cost_total` (default false:
    /// one series more per application that spends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_label: Option<bool>,
    /// OTLP collector base URL (e.g. `http://otel-collector:4318` for
    /// HTTP, `http://otel-collector:4317` for gRPC); over HTTP spans are
    /// posted to `{otlp_endpoint}/v1/traces`. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// How spans reach the collector: `http/protobuf` (default, the OTLP
    /// standard's), `http/json` or `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `service.name` of exported spans (default `portcullis-gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Share of traces exported, from 0 to 1 (default 1: every request).
    /// A caller's `traceparent` decides for its own trace (parent-based
    /// sampling, as OpenTelemetry SDKs do); the ratio applies to traces
    /// the gateway starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_ratio: Option<f64>,
}

/// The OTLP transport (the `OTEL_EXPORTER_OTLP_PROTOCOL` values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
    #[serde(rename = "grpc")]
    Grpc,
}

/// Upstream and client timeouts.
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
    /// Total time to read a client's request body (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_body_ms: Option<u64>,
    /// Total time from the first byte of a request to the end of its
    /// header (default 10 s); past it the client gets `408` and the
    /// connection is closed. Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_header_ms: Option<u64>,
    /// How long a client connection may wait for its next request,
    /// new or kept alive (default 60 s). Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_idle_ms: Option<u64>,
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
    /// Also list the models the provider itself serves, fetched from its
    /// model list endpoint and refreshed in the background: `true`, or
    /// `{refresh_s: N}` (default every 600 s). Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discover_models: Option<DiscoverModelsFile>,
    /// Client-facing model names and the provider model each one stands
    /// for (`fast: gpt-4o-mini`): a client sends the alias, the provider
    /// gets the model. Listed by `GET /models`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub aliases: std::collections::BTreeMap<String, String>,
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
    /// A credential the gateway fetches and refreshes itself instead of a
    /// static key: Entra ID (Azure OpenAI), the AWS credential chain
    /// (Bedrock), a Google service account (Gemini on Vertex AI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ProviderAuthFile>,
    /// Gemini on Vertex AI: the project and location its URLs name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex: Option<VertexFile>,
    /// PEM file with the CA that signed a self-hosted server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The same CA bundle inline (PEM text): how admin hands a managed
    /// gateway the provider CA bundles of its settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Model prices (per million tokens) over the shipped price table for
    /// this provider's type: a self-hosted server's, a negotiated rate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<crate::pricing::PriceEntry>,
}

/// `discover_models`: `true`/`false`, or its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DiscoverModelsFile {
    Enabled(bool),
    Settings(DiscoverModelsSettings),
}

/// Settings of model discovery.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverModelsSettings {
    /// Seconds between two fetches of the provider's model list (default
    /// 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_s: Option<u64>,
}

/// Default of `discover_models.refresh_s`: model lists change with
/// releases, not by the minute, and some providers rate-limit listing.
pub const DEFAULT_DISCOVERY_REFRESH_S: u64 = 600;

impl DiscoverModelsFile {
    /// Seconds between fetches, or `None` when discovery is off.
    pub fn refresh_s(&self) -> Option<u64> {
        match self {
            DiscoverModelsFile::Enabled(false) => None,
            DiscoverModelsFile::Enabled(true) => Some(DEFAULT_DISCOVERY_REFRESH_S),
            DiscoverModelsFile::Settings(s) => {
                Some(s.refresh_s.unwrap_or(DEFAULT_DISCOVERY_REFRESH_S))
            }
        }
    }
}

/// How the gateway obtains a provider's credential (`auth:`), refreshed in
/// the background before it expires.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ProviderAuthFile {
    /// Microsoft Entra ID, OAuth2 client credentials (Azure OpenAI).
    Entra {
        tenant_id: String,
        client_id: String,
        /// Environment variable holding the client secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret_env: Option<String>,
        /// The client secret itself (how admin hands it to a managed
        /// gateway; prefer `client_secret_env` in files).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<String>,
        /// Default `https://login.microsoftonline.com`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authority_url: Option<String>,
        /// Default `https://cognitiveservices.azure.com/.default`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    /// The AWS SDK's default credential chain (environment, shared
    /// profile, web identity, container and instance metadata), optionally
    /// assuming a role with what it found (Bedrock).
    Aws {
        /// A profile of the shared config files (default: `AWS_PROFILE`,
        /// else `default`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// A role to assume with the chain's credentials.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role_arn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role_session_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        external_id: Option<String>,
        /// STS endpoint of the role assumption (default: the region's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sts_endpoint: Option<String>,
        /// Instance metadata endpoint (default `http://169.254.169.254`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        imds_endpoint: Option<String>,
    },
    /// A Google service account key (JSON), exchanged for OAuth2 access
    /// tokens (Gemini on Vertex AI).
    GoogleServiceAccount {
        /// Path of the key file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials_file: Option<String>,
        /// Environment variable holding the key's JSON.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials_env: Option<String>,
        /// The key's JSON itself (how admin hands it to a managed gateway).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials_json: Option<String>,
        /// Overrides the key's `token_uri`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_uri: Option<String>,
    },
}

impl ProviderAuthFile {
    /// The `type` value, for messages.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderAuthFile::Entra { .. } => "entra",
            ProviderAuthFile::Aws { .. } => "aws",
            ProviderAuthFile::GoogleServiceAccount { .. } => "google-service-account",
        }
    }
}

/// Where Vertex AI serves Gemini for a project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VertexFile {
    pub project: String,
    /// A region such as `us-central1`, or `global`.
    pub location: String,
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
    /// Resources enabled (default all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<Resource>>,
    /// Count tokens of streamed responses (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_stream_tokens: Option<bool>,
    pub routes: Vec<RouteFile>,
    /// How requests are spread over `routes` (see docs/routing.md). Optional
    /// with one route; required with several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingFile>,
    /// The embeddings endpoint behind semantic routing and the prompt guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_service: Option<SemanticServiceFile>,
    /// Rejects prompts close to denied topics before any provider is called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_guard: Option<PromptGuardFile>,
    #[serde(default)]
    pub keys: Vec<KeyFile>,
    /// Policies run on every request, in this order (docs/policies.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyAttachmentFile>,
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
    /// OpenAI's Responses API (`POST /responses`), a chat endpoint of the
    /// `openai` inbound format.
    #[serde(rename = "responses")]
    Responses,
    /// OpenAI's legacy text completions (`POST /completions`), forwarded
    /// to OpenAI-format routes only (docs/gateway.md).
    #[serde(rename = "completions")]
    Completions,
    /// OpenAI's moderations (`POST /moderations`), forwarded to OpenAI and
    /// OpenAI-compatible routes only.
    #[serde(rename = "moderations")]
    Moderations,
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
    /// Route name, shown in `x-portcullis-route`, logs and metrics, and
    /// referenced by `routing.fallback.route` (default `provider` or
    /// `provider/model`). Unique within the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Models this route serves (default: the provider's `models`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Share of traffic under the weighted strategy (default 1; 0 = standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Order under the failover strategy: lower first (default: list order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Semantic strategy: the prompt topics this route takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicFile>,
}

/// How a proxy picks a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingStrategy {
    /// One route takes everything.
    Single,
    /// The request's model picks the route.
    ModelBased,
    /// Random by route weight.
    Weighted,
    /// An ordered list, tried in turn.
    Failover,
    /// The prompt's meaning picks the route (topics and utterances).
    Semantic,
}

/// Routing settings of a proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingFile {
    /// Default `single` with one route; required with several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RoutingStrategy>,
    /// Takes requests no route matches, and requests whose route failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackFile>,
    /// Model aliases: `alias: model`, resolved before routing.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub aliases: std::collections::BTreeMap<String, String>,
    /// Semantic strategy: the lowest similarity (0 to 1) at which a topic
    /// matches (default 0.75; a topic may set its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Moving on to the next route when one fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryFile>,
    /// Passive health: ejecting routes that keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthFile>,
}

/// The fallback route and the model it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackFile {
    /// Name of one of the proxy's routes.
    pub route: String,
    /// Model sent to the fallback route (default: the route's target model,
    /// else the requested model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Retries across routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Most routes tried per request, the first included (default: every
    /// candidate once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Provider statuses that move on to the next route (default 429 and
    /// every 5xx). Connect errors and timeouts always do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_status: Option<Vec<u16>>,
    /// Longest `retry-after` honoured: a route that answered 429 with it
    /// gets no traffic for that long, capped here (default 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_after_ms: Option<u64>,
    /// Retries in flight may be at most this percent of the proxy's
    /// requests in flight (default 20) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<u32>,
    /// ... but this many are always allowed (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
}

/// Passive health checking of routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// Consecutive failures that eject a route (default 3; 0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// How long an ejected route gets no traffic before one request probes
    /// it (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u64>,
}

/// An OpenAI-compatible embeddings endpoint, reached through a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticServiceFile {
    /// Name of a provider in `providers` (openai, azure-openai, mistral,
    /// gemini or openai-compatible).
    pub provider: String,
    /// Embedding model (Azure: the deployment).
    pub model: String,
    /// Asks for vectors of this size, where the model supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Longest wait for the embeddings (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A prompt topic: example utterances, inline or from a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicFile {
    /// Unique within the proxy; shown in logs, metrics and guard errors.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub utterances: Vec<String>,
    /// A plain-text file, one utterance per line (blank lines and lines
    /// starting with `#` are skipped); relative to the configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utterances_file: Option<String>,
    /// This topic's similarity threshold (default: the enclosing one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
}

/// The semantic prompt guard: a deny list of topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptGuardFile {
    /// Lowest similarity (0 to 1) at which a prompt counts as on a denied
    /// topic (default 0.8; a topic may set its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    pub deny: Vec<TopicFile>,
    /// When the semantic service fails: `reject` (default, fail closed) or
    /// `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<GuardOnError>,
}

/// What the prompt guard does when it cannot embed the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardOnError {
    Reject,
    Allow,
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
    /// Shown in logs instead of the key.
    pub name: String,
    /// A stable id (admin's key id): what rate limits, caches and the
    /// `key` metric label count by. Default: `key-` and the first 16 hex
    /// digits of the key's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// SHA-256 of the key, hex (what `portcullis key hash` prints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Environment variable holding the key (hashed at load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// When the key stops working (RFC 3339, e.g. `2027-01-31T00:00:00Z`).
    /// The gateway enforces it itself, so an expired key is refused even
    /// while admin is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// What the key may do on its proxy (default: everything the proxy
    /// offers): a request outside it gets a 403 naming what was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<KeyScopeFile>,
    /// The application the key belongs to (admin's id), for policies
    /// that count per application (`caller` capability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// The subscription the key is used under on this proxy (admin's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// The plan of that subscription (admin's id): attachments limited to
    /// `plans` run for the key when they name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// A key's scope. Each list, when not empty, is all the key may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyScopeFile {
    /// Model names as the client sends them; `*` matches any run of
    /// characters (`gpt-4o*`, `*-mini`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<InboundKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
}

impl KeyScopeFile {
    /// Why the scope is unusable, as (field, message), or `None`.
    pub fn problem(&self) -> Option<(String, &'static str)> {
        self.models.iter().enumerate().find_map(|(i, m)| {
            (m.is_empty() || m.len() > 256 || m.chars().any(|c| c.is_whitespace() || c.is_control()))
                .then(|| {
                    (
                        format!("models[{i}]"),
                        "must be a model name or pattern (`*` matches any run of characters), without spaces",
                    )
                })
        })
    }

    /// Whether `model` (as the client sent it) is within the scope.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| glob(p, model))
    }
}

/// `pattern` matches all of `text`, `*` standing for any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A policy attached to a proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyAttachmentFile {
    /// The policy's name (its manifest's `name`).
    pub name: String,
    /// Exact version; default: the highest one found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A policy artifact directory (`policy.wasm` + `manifest.json`) or its
    /// `.wasm` file; default: looked up in `policy_engine.dirs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// SHA-256 (hex) the module must have. The gateway checks the bytes it
    /// found (hub download, disk cache, policy directory or `module`)
    /// before compiling them and refuses any other module. Admin sets it
    /// from the hub's manifest when the policy is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Settings, merged over the manifest's defaults and validated
    /// against its JSON Schema.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub settings: serde_json::Value,
    /// What a failing policy (trap, timeout, memory) does to its request.
    #[serde(default)]
    pub on_error: OnError,
    /// Runs only for requests whose key is used under one of these plans
    /// (admin's plan ids, `keys[].plan`); empty: for every request. Admin
    /// attaches a plan's quotas and budget this way, so one proxy's plans
    /// can set different limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<String>,
}

/// What a failing policy does to its request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The request fails with a 500 `policy_failed` (the default: a
    /// guardrail that cannot run must not let traffic through).
    #[default]
    Closed,
    /// The policy is skipped for that request.
    Open,
}

/// Policy engine settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEngineFile {
    /// Directories of policy artifacts (`<dir>/<name>/<version>/` or
    /// `<dir>/<name>/`), searched in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
    /// Longest a single policy call may run (default 100 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Memory limit of one policy instance (default 32 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<usize>,
    /// Policy instances alive at once (default 1000); requests wait beyond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Keep policy instances warm between requests (default true). Each
    /// request still starts from the state `init` left (the SDK restores
    /// it); false gives every request a brand-new instance, which isolates
    /// even a policy's stray globals, at several times the cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_instances: Option<bool>,
    /// Warm instances kept idle across all proxies (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle_instances: Option<u32>,
    /// Keep counters and cache in Redis (`redis://host:6379/0`), so limits
    /// hold across gateway replicas. Default: in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Environment variable holding the Redis URL instead (it may carry a
    /// password); a managed gateway gets admin's sealed URL that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url_env: Option<String>,
    /// Memory bound of the in-process cache store (default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_bytes: Option<usize>,
    /// Counters kept in process at most (default 100,000); past it the
    /// least recently used counter is forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_counters: Option<usize>,
    /// Endpoint of the `embeddings` capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<PolicyEmbeddingsFile>,
    /// A policy hub to fetch attached policies from (after `dirs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<PolicyHubFile>,
    /// Where compiled modules are kept, so a restart maps them instead of
    /// compiling again (default `$XDG_CACHE_HOME/portcullis/compiled`,
    /// else `$HOME/.cache/portcullis/compiled`; `""` turns it off). Must
    /// be writable by the gateway's user only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_dir: Option<String>,
}

/// Where a gateway fetches policies: a hub, and the disk cache that keeps
/// the gateway serving when the hub is down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyHubFile {
    /// The hub's base URL, e.g. `http://hub:8091`.
    pub url: String,
    /// Modules by digest and manifests by `name@version` (default
    /// `./data/policy-cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// Longest wait for the hub per request (default 10000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// PEM file of extra CA certificates trusted for this endpoint, added
    /// to the webpki roots (for a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Accept a plain `http://` URL to a host other than this machine
    /// (default false: such a URL is refused at load). Loopback `http://`
    /// is always accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_http: Option<bool>,
}

/// An OpenAI-compatible embeddings endpoint for policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEmbeddingsFile {
    /// Full URL of the `/embeddings` endpoint.
    pub url: String,
    pub model: String,
    /// Environment variable holding the bearer key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// PEM file of extra CA certificates trusted for this endpoint, added
    /// to the webpki roots (for a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Accept a plain `http://` URL to a host other than this machine
    /// (default false: such a URL is refused at load). Loopback `http://`
    /// is always accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_http: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("gpt-4o*", "gpt-4o-mini"));
        assert!(glob("gpt-4o*", "gpt-4o"));
        assert!(!glob("gpt-4o*", "gpt-4"));
        assert!(glob("*-mini", "gpt-5-mini"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
        assert!(glob("*", "anything"));
        assert!(!glob("ab*ab", "ab"));
    }

    #[test]
    fn bedrock_lists_models_on_its_control_plane_host() {
        let at = |u: Option<&str>| model_list_base_url(ProviderKind::Bedrock, u, Some("eu-west-1"));
        assert_eq!(
            at(None).as_deref(),
            Some("https://bedrock.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            at(Some("https://bedrock-runtime.eu-west-1.amazonaws.com")).as_deref(),
            Some("https://bedrock.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            at(Some("https://bedrock-runtime-fips.us-east-1.amazonaws.com")).as_deref(),
            Some("https://bedrock-fips.us-east-1.amazonaws.com")
        );
        assert_eq!(
            at(Some("http://127.0.0.1:9")).as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(
            model_list_base_url(ProviderKind::Anthropic, None, None).as_deref(),
            Some("https://api.anthropic.com")
        );
    }

    #[test]
    fn url_origins() {
        assert_eq!(
            url_origin("https://API.openai.com/v1"),
            Some(("https", "api.openai.com".into(), 443))
        );
        assert_eq!(
            url_origin("http://127.0.0.1:8099"),
            Some(("http", "127.0.0.1".into(), 8099))
        );
        assert_eq!(
            url_origin("http://[::1]:9/x"),
            Some(("http", "::1".into(), 9))
        );
        assert_eq!(url_origin("http://user:pw@evil.example/"), None);
        assert_eq!(url_origin("ftp://x"), None);
        assert_eq!(url_origin("http://:80"), None);
        assert_eq!(url_origin("http://h:notaport"), None);
    }

    #[test]
    fn egress_allow_list_entries() {
        let allow: Vec<String> = [
            "api.openai.com",
            "*.openai.azure.com",
            "127.0.0.1:8099",
            "[::1]:9",
        ]
        .map(String::from)
        .to_vec();
        assert!(egress_allows(&allow, "api.openai.com", 443));
        assert!(egress_allows(&allow, "API.OpenAI.com", 8443));
        assert!(egress_allows(&allow, "res.openai.azure.com", 443));
        assert!(!egress_allows(&allow, "openai.azure.com", 443));
        assert!(!egress_allows(
            &allow,
            "evilopenai.azure.com.attacker.net",
            443
        ));
        assert!(egress_allows(&allow, "127.0.0.1", 8099));
        assert!(!egress_allows(&allow, "127.0.0.1", 8098));
        assert!(egress_allows(&allow, "::1", 9));
        assert!(!egress_allows(&allow, "169.254.169.254", 80));
        assert!(!egress_allows(&[], "anything", 1));
    }

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

    #[test]
    fn routing_sections_round_trip_and_reject_unknown_fields() {
        let text = r#"{"providers":[],"proxies":[{"name":"a",
            "routes":[{"provider":"p","name":"code","weight":3,"priority":1,"models":["m"],
                       "topics":[{"name":"coding","utterances":["write code"],"threshold":0.7}]},
                      {"provider":"q"}],
            "routing":{"strategy":"model-based","fallback":{"route":"q","model":"small"},
                       "aliases":{"smart":"m"},"retry":{"on_status":[429,503],"max_attempts":2},
                       "health":{"failures":5,"cooldown_ms":1000}},
            "semantic_service":{"provider":"e","model":"emb","dimensions":256},
            "prompt_guard":{"deny":[{"name":"x","utterances_file":"x.txt"}],"on_error":"allow"}}]}"#;
        let cfg: FileConfig = serde_json::from_str(text).unwrap();
        let p = &cfg.proxies[0];
        let routing = p.routing.as_ref().unwrap();
        assert_eq!(routing.strategy, Some(RoutingStrategy::ModelBased));
        assert_eq!(
            routing.retry.as_ref().unwrap().on_status,
            Some(vec![429, 503])
        );
        assert_eq!(p.routes[0].topics[0].threshold, Some(0.7));
        assert_eq!(
            p.prompt_guard.as_ref().unwrap().on_error,
            Some(GuardOnError::Allow)
        );
        let back: FileConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        // A route without the new fields serialises without them.
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            v["proxies"][0]["routes"][1],
            serde_json::json!({"provider": "q"})
        );
        let bad = text.replace("\"cooldown_ms\"", "\"cooldown\"");
        let e = serde_json::from_str::<FileConfig>(&bad).unwrap_err();
        assert!(e.to_string().contains("cooldown"), "{e}");
    }
}
