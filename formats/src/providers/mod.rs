//! Outbound provider adapters.
//!
//! Each provider module translates the canonical request into the
//! provider's wire format, and the provider's response and stream back
//! into canonical types. The gateway core never looks at a provider's
//! format itself: N providers need N adapters, whatever the inbound format.

pub mod anthropic;
pub mod bedrock;
pub mod forwarded;
pub mod gemini;
pub mod openai;
pub mod sigv4;

use bytes::Bytes;
use portcullis_types::{
    ChatChunk, ChatRequest, ChatResponse, CompletionsRequest, EmbeddingsRequest,
    EmbeddingsResponse, ModerationsRequest,
};

use crate::error::GatewayError;

pub use portcullis_types::gateway_config::ProviderKind;

/// AWS credentials for SigV4 signing (Bedrock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
}

/// A credential as it stands now: what the provider's refresher last
/// fetched (an OAuth2 access token, AWS keys from the default chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Sent as `authorization: Bearer ...` (Entra ID, Google OAuth2).
    Bearer(String),
    /// Signs with SigV4 (Bedrock).
    Aws(AwsCredentials),
}

/// Where an adapter reads a credential that changes while the gateway
/// runs. Implemented by the gateway's refreshed credential cells: reading
/// never waits for a refresh, and fails with a 503 naming the provider
/// when no unexpired credential is held.
pub trait CredentialSource: Send + Sync {
    fn current(&self) -> Result<std::sync::Arc<Secret>, GatewayError>;
}

/// A provider's refreshed credential, shared by its adapters.
#[derive(Clone)]
pub struct LiveCredential(pub std::sync::Arc<dyn CredentialSource>);

impl LiveCredential {
    /// The current bearer token.
    pub fn bearer(&self) -> Result<String, GatewayError> {
        match &*self.0.current()? {
            Secret::Bearer(t) => Ok(t.clone()),
            Secret::Aws(_) => Err(GatewayError::internal(
                "this provider's credential is AWS keys, not a bearer token",
            )),
        }
    }
}

impl std::fmt::Debug for LiveCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveCredential")
    }
}

/// The same cell, not an equal value: two adapters are configured alike
/// when they read the same credential.
impl PartialEq for LiveCredential {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A credential source for adapter tests: always this secret or error.
#[cfg(test)]
pub(crate) fn test_credential(v: Result<Secret, GatewayError>) -> LiveCredential {
    struct Fixed(Result<std::sync::Arc<Secret>, GatewayError>);
    impl CredentialSource for Fixed {
        fn current(&self) -> Result<std::sync::Arc<Secret>, GatewayError> {
            self.0.clone()
        }
    }
    LiveCredential(std::sync::Arc::new(Fixed(v.map(std::sync::Arc::new))))
}

/// Load-time settings of one configured provider, handed to its adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// The path prefix of the base URL, without a trailing slash (e.g. `/v1`
    /// for OpenAI, `` for Anthropic).
    pub base_path: String,
    /// `host[:port]` of the base URL: the Host header, and what SigV4 signs.
    pub host: String,
    /// Azure OpenAI `api-version` query parameter.
    pub api_version: Option<String>,
    /// Anthropic `anthropic-version` header.
    pub anthropic_version: Option<String>,
    /// Output token limit sent to providers that require one (Anthropic)
    /// when the client gave none.
    pub default_max_tokens: u32,
    /// Bedrock signing credentials read from the environment at load.
    pub aws: Option<AwsCredentials>,
    /// A credential refreshed in the background (`auth:` in the provider's
    /// config): a bearer token (Azure Entra ID, Vertex AI) or AWS keys
    /// (Bedrock); it takes the place of `aws` and of a static API key.
    pub live: Option<LiveCredential>,
    /// Gemini on Vertex AI: the project and location of its URLs.
    pub vertex: Option<VertexLocation>,
}

/// Where Vertex AI serves a project's Gemini models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexLocation {
    pub project: String,
    pub location: String,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            base_path: String::new(),
            host: "localhost".into(),
            api_version: None,
            anthropic_version: None,
            default_max_tokens: 4096,
            aws: None,
            live: None,
            vertex: None,
        }
    }
}

/// What one call needs besides the canonical request.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamCall<'a> {
    /// The model (or deployment / model id) the provider should see, after
    /// the route's target-model override.
    pub model: &'a str,
    /// The key for this call: the route's static key, or one taken from the
    /// client's request (dynamic key). Unused by Bedrock, which signs.
    pub api_key: Option<&'a str>,
    /// Whether the response is streamed.
    pub stream: bool,
    /// Whether the gateway counts this request's tokens. When a proxy turns
    /// stream token tracking off, adapters must not ask the provider for
    /// usage the client did not ask for (OpenAI's `include_usage`).
    pub track_usage: bool,
}

/// An HTTP request to send to the provider. The core adds `host`,
/// `content-length`, `accept-encoding: identity` and `user-agent`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    pub method: http::Method,
    /// Path and query, including the base URL's path prefix.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl UpstreamRequest {
    /// A JSON POST.
    pub fn post_json(path: String, body: Vec<u8>) -> Self {
        UpstreamRequest {
            method: http::Method::POST,
            path,
            headers: vec![("content-type", "application/json".to_owned())],
            body: Bytes::from(body),
        }
    }
}

impl UpstreamRequest {
    /// A GET without a body (model lists).
    pub fn get(path: String) -> Self {
        UpstreamRequest {
            method: http::Method::GET,
            path,
            headers: vec![("accept", "application/json".to_owned())],
            body: Bytes::new(),
        }
    }
}

/// One page of a provider's model list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPage {
    /// Model names as requests send them (Gemini's without `models/`).
    pub models: Vec<String>,
    /// The cursor of the next page, when there is one: what
    /// `models_request` takes to fetch it.
    pub next: Option<String>,
}

/// What a stream decoder yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A canonical chunk. Usage travels in `chunk.usage` (possibly on a
    /// chunk with no choices), cumulative or final; the core merges it with
    /// `Usage::merge_max`.
    Chunk(ChatChunk),
    /// The provider reported an error inside the stream.
    Error(GatewayError),
}

/// Turns a provider's streamed response body into canonical chunks.
pub trait StreamDecoder: Send {
    /// Feeds raw bytes as they arrive; appends decoded events to `out`.
    fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>);
    /// The upstream body ended; appends whatever was still buffered.
    fn finish(&mut self, out: &mut Vec<StreamEvent>);
    /// Whether the provider signalled a proper end of stream (`[DONE]`,
    /// `message_stop`, a finish reason, ...). A stream that ends without it
    /// was cut, and the client gets an error event.
    fn is_complete(&self) -> bool;
}

/// One provider adapter, built once at config load.
pub trait Provider: Send + Sync {
    /// Which kind of provider this is.
    fn kind(&self) -> ProviderKind;

    /// Builds the upstream chat request.
    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError>;

    /// Parses a successful (2xx) non-streamed chat response.
    fn chat_response(
        &self,
        body: &[u8],
        call: &UpstreamCall<'_>,
    ) -> Result<ChatResponse, GatewayError>;

    /// A decoder for a successful (2xx) streamed chat response.
    fn stream_decoder(&self, call: &UpstreamCall<'_>) -> Box<dyn StreamDecoder>;

    /// Builds the upstream embeddings request.
    fn embeddings_request(
        &self,
        _req: &EmbeddingsRequest,
        _call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        Err(GatewayError::invalid_request(format!(
            "Provider type `{}` does not offer embeddings through this gateway.",
            self.kind().label()
        )))
    }

    /// Parses a successful embeddings response.
    fn embeddings_response(
        &self,
        _body: &[u8],
        _call: &UpstreamCall<'_>,
    ) -> Result<EmbeddingsResponse, GatewayError> {
        Err(GatewayError::internal(
            "embeddings are not supported by this provider",
        ))
    }

    /// Builds the upstream legacy text completions request (forwarded as
    /// sent, with the routed model; see `forwarded`). Only OpenAI-format
    /// providers have the endpoint.
    fn completions_request(
        &self,
        _req: &CompletionsRequest,
        _call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        Err(GatewayError::invalid_param(
            "model",
            format!(
                "This model is served by a {} route, which does not offer the legacy `/completions` API; use `/chat/completions`.",
                self.kind().label()
            ),
        ))
    }

    /// Builds the upstream moderations request (forwarded as sent, with the
    /// routed model). Only OpenAI and OpenAI-compatible providers have it.
    fn moderations_request(
        &self,
        _req: &ModerationsRequest,
        _call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        Err(GatewayError::invalid_param(
            "model",
            format!(
                "This model is served by a {} route, which does not offer OpenAI's `/moderations` API.",
                self.kind().label()
            ),
        ))
    }

    /// Builds the upstream request for a Responses API request the client
    /// sent (`body`, forwarded as it came with the routed model), when this
    /// provider serves that API itself; `None` when it does not, and the
    /// gateway translates the request to a chat request instead.
    fn responses_request(
        &self,
        _body: &Bytes,
        _call: &UpstreamCall<'_>,
    ) -> Option<Result<UpstreamRequest, GatewayError>> {
        None
    }

    /// Builds the request for one page of the provider's own model list
    /// (model discovery); `cursor` is the previous page's `next`.
    fn models_request(
        &self,
        _api_key: Option<&str>,
        _cursor: Option<&str>,
    ) -> Result<UpstreamRequest, GatewayError> {
        Err(GatewayError::internal(format!(
            "provider type `{}` has no model list to discover",
            self.kind().label()
        )))
    }

    /// Parses a successful (2xx) page of the model list.
    fn models_page(&self, _body: &[u8]) -> Result<ModelPage, GatewayError> {
        Err(GatewayError::internal(format!(
            "provider type `{}` has no model list to discover",
            self.kind().label()
        )))
    }

    /// Turns a non-2xx answer into an error, keeping the provider's message.
    fn error_response(&self, status: u16, body: &[u8]) -> GatewayError {
        GatewayError::upstream_status(status, upstream_error_message(self.kind(), status, body))
    }
}

/// The human-readable message of a provider's error body, whatever its
/// shape: `{"error":{"message"}}` (OpenAI, Anthropic, Gemini), `{"message"}`
/// (Bedrock), `{"error":"..."}` (several OpenAI-compatible servers).
pub fn upstream_error_message(kind: ProviderKind, status: u16, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let msg = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    match msg {
        Some(m) => format!("{} returned {status}: {m}", kind.label()),
        None => format!("{} returned {status}", kind.label()),
    }
}

/// Parses a provider JSON body, naming the field that did not fit.
pub fn parse_upstream_json<T: serde::de::DeserializeOwned>(
    kind: ProviderKind,
    body: &[u8],
) -> Result<T, GatewayError> {
    crate::json::parse(body).map_err(|e| {
        GatewayError::upstream_protocol(format!(
            "{} sent a response the gateway could not read at `{}`: {}",
            kind.label(),
            e.path,
            e.inner
        ))
    })
}

/// Builds the adapter for a configured provider.
pub fn build(kind: ProviderKind, settings: ProviderSettings) -> std::sync::Arc<dyn Provider> {
    use std::sync::Arc;
    match kind {
        ProviderKind::Openai
        | ProviderKind::AzureOpenai
        | ProviderKind::Mistral
        | ProviderKind::OpenaiCompatible => Arc::new(openai::OpenAiProvider::new(kind, settings)),
        ProviderKind::Bedrock => Arc::new(bedrock::BedrockProvider::new(settings)),
        ProviderKind::Anthropic => Arc::new(anthropic::AnthropicProvider::new(settings)),
        ProviderKind::Gemini => Arc::new(gemini::GeminiProvider::new(settings)),
    }
}

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
