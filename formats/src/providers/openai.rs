//! OpenAI and the providers that speak its format: Azure OpenAI, Mistral
//! and any OpenAI-compatible server (vLLM, Ollama, LM Studio, ...).
//!
//! The canonical types are the OpenAI shape, so the request is serialised
//! from borrowed fields (no copy of the messages) with a few per-provider
//! differences:
//! - Azure puts the deployment in the URL, takes an `api-version` query
//!   parameter, and authenticates with an `api-key` header.
//! - Mistral rejects `stream_options` (its streams always end with usage),
//!   calls the seed `random_seed`, and has no `max_completion_tokens`.
//! - OpenAI-style streams only report usage when asked, so the gateway
//!   always asks (`stream_options.include_usage`) and decides later whether
//!   the client sees it.

use bytes::Bytes;
use portcullis_types::{
    ChatChunk, ChatRequest, ChatResponse, CompletionsRequest, EmbeddingsRequest,
    EmbeddingsResponse, ErrorEnvelope, Message, ModerationsRequest, ResponseFormat, Stop,
    StreamOptions, Tool, ToolChoice,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    Provider, ProviderKind, ProviderSettings, StreamDecoder, StreamEvent, UpstreamCall,
    UpstreamRequest, parse_upstream_json,
};
use crate::error::GatewayError;
use crate::sse::{SseEvent, SseParser};

/// Adapter for OpenAI-format providers.
pub struct OpenAiProvider {
    kind: ProviderKind,
    settings: ProviderSettings,
}

impl OpenAiProvider {
    /// An adapter for one of the OpenAI-format kinds.
    pub fn new(kind: ProviderKind, settings: ProviderSettings) -> Self {
        OpenAiProvider { kind, settings }
    }

    fn path(&self, resource: &str, model: &str) -> String {
        match self.kind {
            ProviderKind::AzureOpenai => format!(
                "{}/openai/deployments/{}/{resource}?api-version={}",
                self.settings.base_path,
                // One path segment, whatever the client sent.
                super::sigv4::uri_encode(model, true),
                self.settings
                    .api_version
                    .as_deref()
                    .unwrap_or(AZURE_DEFAULT_API_VERSION)
            ),
            _ => format!("{}/{resource}", self.settings.base_path),
        }
    }

    /// The call's key (Azure's `api-key` header, else a bearer token), or
    /// else the provider's refreshed token (Entra ID), which Azure takes
    /// as a bearer token.
    fn auth_headers(
        &self,
        call: &UpstreamCall<'_>,
        headers: &mut Vec<(&'static str, String)>,
    ) -> Result<(), GatewayError> {
        if let Some(key) = call.api_key {
            match self.kind {
                ProviderKind::AzureOpenai => headers.push(("api-key", key.to_owned())),
                _ => headers.push(("authorization", format!("Bearer {key}"))),
            }
        } else if let Some(live) = &self.settings.live {
            headers.push(("authorization", format!("Bearer {}", live.bearer()?)));
        }
        Ok(())
    }
}

/// The Azure OpenAI API version used when the provider config sets none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// The request body, borrowing from the canonical request.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    random_seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// `GET /models` of OpenAI and the servers that copy it:
/// `{"object":"list","data":[{"id":"gpt-4o",...}]}`. Unpaginated.
#[derive(serde::Deserialize)]
struct ModelList {
    data: Vec<ModelId>,
}

#[derive(serde::Deserialize)]
struct ModelId {
    id: String,
}

impl Provider for OpenAiProvider {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn models_request(
        &self,
        api_key: Option<&str>,
        _cursor: Option<&str>,
    ) -> Result<UpstreamRequest, GatewayError> {
        if self.kind == ProviderKind::AzureOpenai {
            // Refused at load (config::models::AZURE_DISCOVERY); kept an
            // error here so no caller lists base models as deployments.
            return Err(GatewayError::internal(
                "azure-openai deployments cannot be listed with an api key",
            ));
        }
        let mut up = UpstreamRequest::get(format!("{}/models", self.settings.base_path));
        let call = UpstreamCall {
            model: "",
            api_key,
            stream: false,
            track_usage: false,
        };
        self.auth_headers(&call, &mut up.headers)?;
        Ok(up)
    }

    fn models_page(&self, body: &[u8]) -> Result<super::ModelPage, GatewayError> {
        let list: ModelList = parse_upstream_json(self.kind, body)?;
        Ok(super::ModelPage {
            models: list.data.into_iter().map(|m| m.id).collect(),
            next: None,
        })
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mistral = self.kind == ProviderKind::Mistral;
        let stream_options = if call.stream && !mistral && call.track_usage {
            // Ask for usage: token accounting needs it even when the client
            // did not ask to see it.
            let mut o = req.stream_options.clone().unwrap_or_default();
            o.include_usage = Some(true);
            Some(o)
        } else if call.stream && !mistral {
            req.stream_options.clone()
        } else {
            None
        };
        let body = Body {
            model: call.model,
            messages: &req.messages,
            stream: call.stream,
            stream_options,
            max_tokens: if mistral {
                req.max_output_tokens()
            } else {
                req.max_tokens
            },
            max_completion_tokens: if mistral {
                None
            } else {
                req.max_completion_tokens
            },
            temperature: req.temperature,
            top_p: req.top_p,
            n: req.n,
            stop: req.stop.as_ref(),
            seed: if mistral { None } else { req.seed },
            random_seed: if mistral { req.seed } else { None },
            presence_penalty: req.presence_penalty,
            frequency_penalty: req.frequency_penalty,
            tools: req.tools.as_deref(),
            tool_choice: req.tool_choice.as_ref(),
            parallel_tool_calls: req.parallel_tool_calls,
            response_format: req.response_format.as_ref(),
            user: if mistral { None } else { req.user.as_deref() },
            extra: &req.extra,
        };
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| GatewayError::internal(format!("serialising request: {e}")))?;
        let mut up = UpstreamRequest::post_json(self.path("chat/completions", call.model), bytes);
        if call.stream {
            up.headers.push(("accept", "text/event-stream".to_owned()));
        }
        self.auth_headers(call, &mut up.headers)?;
        Ok(up)
    }

    fn chat_response(
        &self,
        body: &[u8],
        _call: &UpstreamCall<'_>,
    ) -> Result<ChatResponse, GatewayError> {
        parse_upstream_json(self.kind, body)
    }

    fn stream_decoder(&self, _call: &UpstreamCall<'_>) -> Box<dyn StreamDecoder> {
        Box::new(OpenAiStreamDecoder {
            kind: self.kind,
            sse: SseParser::default(),
            events: Vec::new(),
            done: false,
            finished: false,
        })
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingsRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        #[derive(Serialize)]
        struct EmbBody<'a> {
            model: &'a str,
            #[serde(flatten)]
            rest: &'a EmbeddingsRequest,
        }
        // `rest` carries its own `model`; serialise through a map so the
        // routed model wins without cloning the input.
        let mut v = serde_json::to_value(EmbBody {
            model: call.model,
            rest: req,
        })
        .map_err(|e| GatewayError::internal(format!("serialising request: {e}")))?;
        v["model"] = Value::String(call.model.to_owned());
        let bytes = serde_json::to_vec(&v)
            .map_err(|e| GatewayError::internal(format!("serialising request: {e}")))?;
        let mut up = UpstreamRequest::post_json(self.path("embeddings", call.model), bytes);
        self.auth_headers(call, &mut up.headers)?;
        Ok(up)
    }

    fn embeddings_response(
        &self,
        body: &[u8],
        _call: &UpstreamCall<'_>,
    ) -> Result<EmbeddingsResponse, GatewayError> {
        parse_upstream_json(self.kind, body)
    }

    /// OpenAI's `/responses`, and Azure's at its v1 surface
    /// (`/openai/v1/responses`, the deployment in the body's `model`, no
    /// `api-version`). Mistral and OpenAI-compatible servers are not
    /// assumed to have it: their requests are translated.
    fn responses_request(
        &self,
        body: &Bytes,
        call: &UpstreamCall<'_>,
    ) -> Option<Result<UpstreamRequest, GatewayError>> {
        let path = match self.kind {
            ProviderKind::Openai => format!("{}/responses", self.settings.base_path),
            ProviderKind::AzureOpenai => format!("{}/openai/v1/responses", self.settings.base_path),
            _ => return None,
        };
        Some(routed_body(body, call.model).and_then(|body| {
            let mut up = UpstreamRequest::post_json(path, Vec::new());
            up.body = body;
            self.auth_headers(call, &mut up.headers)?;
            Ok(up)
        }))
    }

    fn completions_request(
        &self,
        req: &CompletionsRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        // Mistral's only completions endpoint is fill-in-the-middle
        // (`/fim/completions`), another API.
        if self.kind == ProviderKind::Mistral {
            return Err(GatewayError::invalid_param(
                "model",
                "This model is served by a Mistral route, which does not offer the legacy `/completions` API; use `/chat/completions`.",
            ));
        }
        let mut v = to_json(req)?;
        v["model"] = Value::String(call.model.to_owned());
        // As for chat: the gateway always asks a stream for its usage and
        // shows the usage chunk only to a client that asked for it.
        if call.stream && call.track_usage {
            let opts = v.as_object_mut().map(|o| {
                o.entry("stream_options")
                    .or_insert_with(|| Value::Object(Map::new()))
            });
            if let Some(Value::Object(o)) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        let bytes = serde_json::to_vec(&v)
            .map_err(|e| GatewayError::internal(format!("serialising request: {e}")))?;
        let mut up = UpstreamRequest::post_json(self.path("completions", call.model), bytes);
        self.auth_headers(call, &mut up.headers)?;
        Ok(up)
    }

    fn moderations_request(
        &self,
        req: &ModerationsRequest,
        call: &UpstreamCall<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        // Azure OpenAI has no moderations endpoint (its content filter runs
        // on every call); Mistral's `/moderations` takes and answers other
        // shapes (its own categories), so it is not passed off as OpenAI's.
        if !matches!(
            self.kind,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible
        ) {
            return Err(GatewayError::invalid_param(
                "model",
                format!(
                    "This model is served by a {} route, which does not offer OpenAI's `/moderations` API.",
                    self.kind.label()
                ),
            ));
        }
        let mut v = to_json(req)?;
        v["model"] = Value::String(call.model.to_owned());
        let bytes = serde_json::to_vec(&v)
            .map_err(|e| GatewayError::internal(format!("serialising request: {e}")))?;
        let mut up = UpstreamRequest::post_json(self.path("moderations", call.model), bytes);
        self.auth_headers(call, &mut up.headers)?;
        Ok(up)
    }
}

fn to_json(req: &impl Serialize) -> Result<Value, GatewayError> {
    serde_json::to_value(req)
        .map_err(|e| GatewayError::internal(format!("serialising request: {e}")))
}

/// Decodes an OpenAI-style SSE stream of `chat.completion.chunk` objects.
struct OpenAiStreamDecoder {
    kind: ProviderKind,
    sse: SseParser,
    events: Vec<SseEvent>,
    /// `data: [DONE]` seen.
    done: bool,
    /// A finish_reason seen (Mistral and some compatible servers omit
    /// `[DONE]`, but always send a finish reason).
    finished: bool,
}

impl OpenAiStreamDecoder {
    fn decode(&mut self, out: &mut Vec<StreamEvent>) {
        for ev in self.events.drain(..) {
            let data = ev.data.trim();
            if data == "[DONE]" {
                self.done = true;
                continue;
            }
            if data.is_empty() {
                continue;
            }
            match serde_json::from_str::<ChatChunk>(data) {
                Ok(chunk) => {
                    if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                        self.finished = true;
                    }
                    out.push(StreamEvent::Chunk(chunk));
                }
                Err(parse_err) => {
                    // Errors mid-stream come as `data: {"error": {...}}`.
                    let err = match serde_json::from_str::<ErrorEnvelope>(data) {
                        Ok(env) => GatewayError::upstream_status(
                            500,
                            format!("{} stream error: {}", self.kind.label(), env.error.message),
                        ),
                        Err(_) => GatewayError::upstream_protocol(format!(
                            "{} sent an unreadable stream chunk: {parse_err}",
                            self.kind.label()
                        )),
                    };
                    out.push(StreamEvent::Error(err));
                }
            }
        }
    }
}

impl StreamDecoder for OpenAiStreamDecoder {
    fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        let limit = self.sse.feed(data, &mut self.events);
        self.decode(out);
        if let Err(e) = limit {
            out.push(StreamEvent::Error(e.into()));
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let limit = self.sse.finish(&mut self.events);
        self.decode(out);
        if let Err(e) = limit {
            out.push(StreamEvent::Error(e.into()));
        }
    }

    fn is_complete(&self) -> bool {
        self.done || (self.finished && self.kind == ProviderKind::Mistral)
    }
}

/// A client's request body with `model` set to the routed one: the bytes
/// as they came when the model is already that one (no copy), else the
/// body re-serialised with the model replaced.
fn routed_body(body: &Bytes, model: &str) -> Result<Bytes, GatewayError> {
    #[derive(serde::Deserialize)]
    struct ModelOnly<'a> {
        #[serde(borrow, default)]
        model: Option<std::borrow::Cow<'a, str>>,
    }
    let seen: ModelOnly<'_> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("The request body is not valid JSON: {e}"))
    })?;
    if seen.model.as_deref() == Some(model) {
        return Ok(body.clone());
    }
    let mut v: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("The request body is not a JSON object: {e}"))
    })?;
    v.insert("model".into(), Value::String(model.to_owned()));
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| GatewayError::internal(format!("serialising request: {e}")))
}

#[cfg(test)]
mod model_list_tests {
    use super::*;

    fn provider(kind: ProviderKind) -> OpenAiProvider {
        OpenAiProvider::new(
            kind,
            ProviderSettings {
                base_path: "/v1".into(),
                ..ProviderSettings::default()
            },
        )
    }

    #[test]
    fn lists_models_with_the_bearer_key() {
        let p = provider(ProviderKind::OpenaiCompatible);
        let up = p.models_request(Some("sk-1"), None).unwrap();
        assert_eq!(up.method, http::Method::GET);
        assert_eq!(up.path, "/v1/models");
        assert!(
            up.headers
                .contains(&("authorization", "Bearer sk-1".into()))
        );
        let page = p
            .models_page(br#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1,"owned_by":"openai"},{"id":"o3"}]}"#)
            .unwrap();
        assert_eq!(page.models, vec!["gpt-4o", "o3"]);
        assert_eq!(page.next, None);
        // A body without `data` names what is missing.
        let e = p.models_page(br#"{"object":"list"}"#).unwrap_err();
        assert!(e.message.contains("data"), "{}", e.message);
    }

    #[test]
    fn azure_lists_nothing() {
        assert!(
            provider(ProviderKind::AzureOpenai)
                .models_request(Some("k"), None)
                .is_err()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_types::FinishReason;

    fn req(json: &str) -> ChatRequest {
        serde_json::from_str(json).unwrap()
    }

    fn call(stream: bool) -> UpstreamCall<'static> {
        UpstreamCall {
            model: "gpt-5-mini",
            api_key: Some("sk-test"),
            stream,
            track_usage: true,
        }
    }

    fn settings(base_path: &str) -> ProviderSettings {
        ProviderSettings {
            base_path: base_path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn responses_requests_go_as_they_came_to_openai_and_azure_only() {
        let body = Bytes::from_static(br#"{"model":"gpt-5-mini","input":"hi","store":false}"#);
        let openai = OpenAiProvider::new(ProviderKind::Openai, settings("/v1"));
        let up = openai
            .responses_request(&body, &call(false))
            .unwrap()
            .unwrap();
        assert_eq!(up.path, "/v1/responses");
        // The routed model is the one sent: the very same bytes.
        assert_eq!(up.body.as_ptr(), body.as_ptr());
        assert!(
            up.headers
                .contains(&("authorization", "Bearer sk-test".to_owned()))
        );
        let azure = OpenAiProvider::new(ProviderKind::AzureOpenai, settings(""));
        let aliased = Bytes::from_static(br#"{"model":"proxy:alias","input":"hi","store":false}"#);
        let up = azure
            .responses_request(&aliased, &call(true))
            .unwrap()
            .unwrap();
        assert_eq!(up.path, "/openai/v1/responses");
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"model": "gpt-5-mini", "input": "hi", "store": false})
        );
        assert!(up.headers.contains(&("api-key", "sk-test".to_owned())));
        for kind in [ProviderKind::Mistral, ProviderKind::OpenaiCompatible] {
            let p = OpenAiProvider::new(kind, settings("/v1"));
            assert!(
                p.responses_request(&body, &call(false)).is_none(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn openai_request_overrides_model_and_asks_for_usage() {
        let p = OpenAiProvider::new(ProviderKind::Openai, settings("/v1"));
        let r = req(
            r#"{"model":"llmtest:gpt","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":3,"logprobs":true}"#,
        );
        let up = p.chat_request(&r, &call(true)).unwrap();
        assert_eq!(up.path, "/v1/chat/completions");
        assert!(
            up.headers
                .contains(&("authorization", "Bearer sk-test".into()))
        );
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], "gpt-5-mini");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["seed"], 3);
        assert_eq!(body["logprobs"], true);
        assert_eq!(body["messages"][0]["content"], "hi");
    }

    #[test]
    fn untracked_streams_only_carry_the_clients_own_stream_options() {
        let p = OpenAiProvider::new(ProviderKind::Openai, settings("/v1"));
        let untracked = UpstreamCall {
            track_usage: false,
            ..call(true)
        };
        let r = req(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
        let body: Value =
            serde_json::from_slice(&p.chat_request(&r, &untracked).unwrap().body).unwrap();
        assert!(body.get("stream_options").is_none());
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        let body: Value =
            serde_json::from_slice(&p.chat_request(&r, &untracked).unwrap().body).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn azure_sends_the_entra_token_as_bearer_or_its_absence_as_503() {
        let mut s = settings("");
        s.live = Some(super::super::test_credential(Ok(
            super::super::Secret::Bearer("entra-token".into()),
        )));
        let p = OpenAiProvider::new(ProviderKind::AzureOpenai, s.clone());
        let r = req(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#);
        let no_key = UpstreamCall {
            api_key: None,
            ..call(false)
        };
        let up = p.chat_request(&r, &no_key).unwrap();
        assert!(
            up.headers
                .contains(&("authorization", "Bearer entra-token".into()))
        );
        assert!(!up.headers.iter().any(|(n, _)| *n == "api-key"));
        // Azure's Responses API (forwarded as sent) carries it too.
        let up = p
            .responses_request(
                &Bytes::from_static(br#"{"model":"x","input":"hi"}"#),
                &no_key,
            )
            .unwrap()
            .unwrap();
        assert!(
            up.headers
                .contains(&("authorization", "Bearer entra-token".into()))
        );
        // A route's own key still wins.
        let up = p.chat_request(&r, &call(false)).unwrap();
        assert!(up.headers.contains(&("api-key", "sk-test".into())));
        assert!(!up.headers.iter().any(|(n, _)| *n == "authorization"));

        s.live = Some(super::super::test_credential(Err(
            GatewayError::provider_auth("azure", "token endpoint answered 503"),
        )));
        let p = OpenAiProvider::new(ProviderKind::AzureOpenai, s);
        let err = p.chat_request(&r, &no_key).unwrap_err();
        assert_eq!(err.status, 503);
        assert!(err.retryable);
        assert!(err.message.contains("`azure`"), "{}", err.message);
    }

    #[test]
    fn azure_uses_deployment_url_and_api_key_header() {
        let mut s = settings("");
        s.api_version = Some("2024-06-01".into());
        let p = OpenAiProvider::new(ProviderKind::AzureOpenai, s);
        let up = p
            .chat_request(
                &req(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#),
                &call(false),
            )
            .unwrap();
        assert_eq!(
            up.path,
            "/openai/deployments/gpt-5-mini/chat/completions?api-version=2024-06-01"
        );
        assert!(up.headers.contains(&("api-key", "sk-test".into())));
        // Whatever the deployment is called, it stays one path segment.
        let mut c = call(false);
        c.model = "../../v1/files?x=1 y";
        let up = p
            .chat_request(
                &req(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#),
                &c,
            )
            .unwrap();
        assert_eq!(
            up.path,
            "/openai/deployments/..%2F..%2Fv1%2Ffiles%3Fx%3D1%20y/chat/completions?api-version=2024-06-01"
        );
    }

    #[test]
    fn mistral_gets_its_own_parameter_names() {
        let p = OpenAiProvider::new(ProviderKind::Mistral, settings("/v1"));
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":9,"max_completion_tokens":50,"user":"u1"}"#,
        );
        let body: Value =
            serde_json::from_slice(&p.chat_request(&r, &call(true)).unwrap().body).unwrap();
        assert_eq!(body["random_seed"], 9);
        assert_eq!(body["max_tokens"], 50);
        assert!(body.get("seed").is_none());
        assert!(body.get("stream_options").is_none());
        assert!(body.get("user").is_none());
        assert!(body.get("max_completion_tokens").is_none());
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n"
    );

    fn decode_in_pieces(piece: usize) -> (Vec<StreamEvent>, bool) {
        let p = OpenAiProvider::new(ProviderKind::Openai, settings("/v1"));
        let mut d = p.stream_decoder(&call(true));
        let mut out = Vec::new();
        for c in STREAM.as_bytes().chunks(piece) {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        (out, d.is_complete())
    }

    #[test]
    fn stream_decodes_the_same_in_any_piece_size() {
        let (whole, complete) = decode_in_pieces(STREAM.len());
        assert!(complete);
        assert_eq!(whole.len(), 5);
        let StreamEvent::Chunk(last) = &whole[4] else {
            panic!()
        };
        assert_eq!(last.usage.as_ref().unwrap().total_tokens, 13);
        let StreamEvent::Chunk(fin) = &whole[3] else {
            panic!()
        };
        assert_eq!(fin.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        for n in [1, 2, 7, 64] {
            assert_eq!(decode_in_pieces(n).0, whole);
        }
    }

    /// A decoder fed the first two chunks of `STREAM`, and what it decoded.
    fn after_two_chunks() -> (Box<dyn crate::providers::StreamDecoder>, Vec<StreamEvent>) {
        let p = OpenAiProvider::new(ProviderKind::Openai, settings("/v1"));
        let mut d = p.stream_decoder(&call(true));
        let mut out = Vec::new();
        let cut = STREAM.match_indices("data: ").nth(2).unwrap().0;
        d.feed(&STREAM.as_bytes()[..cut], &mut out);
        (d, out)
    }

    #[test]
    fn a_line_past_the_sse_limit_ends_the_stream_with_a_provider_error() {
        let (mut d, mut out) = after_two_chunks();
        d.feed(b"data: ", &mut out);
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..(crate::sse::MAX_LINE_BYTES / piece.len() + 1) {
            d.feed(&piece, &mut out);
        }
        d.finish(&mut out);
        let errors: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Error(e) => Some(e),
                StreamEvent::Chunk(_) => None,
            })
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(out.len(), 3, "the chunks before it are kept");
        let e = errors[0];
        assert_eq!(
            (e.status, e.kind),
            (502, crate::error::ErrorKind::UpstreamProtocol)
        );
        assert!(e.message.contains("longer than"), "{e}");
        assert!(!d.is_complete());
    }

    #[test]
    fn cut_stream_is_not_complete_and_errors_are_events() {
        let (mut d, mut out) = after_two_chunks();
        d.feed(b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n", &mut out);
        d.finish(&mut out);
        assert!(!d.is_complete());
        assert!(
            matches!(out.last(), Some(StreamEvent::Error(e)) if e.message.contains("overloaded"))
        );
    }

    #[test]
    fn completions_are_forwarded_with_the_routed_model_and_asked_for_usage() {
        let req: CompletionsRequest = serde_json::from_str(
            r#"{"model":"client","prompt":"Say","suffix":"!","echo":true,"stream":true}"#,
        )
        .unwrap();
        let p = OpenAiProvider::new(ProviderKind::OpenaiCompatible, settings("/v1"));
        let up = p.completions_request(&req, &call(true)).unwrap();
        assert_eq!(up.path, "/v1/completions");
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], call(true).model);
        assert_eq!(
            (&body["suffix"], &body["echo"]),
            (&Value::from("!"), &Value::from(true))
        );
        assert_eq!(body["stream_options"]["include_usage"], true);
        let azure = OpenAiProvider::new(ProviderKind::AzureOpenai, settings(""));
        assert!(
            azure
                .completions_request(&req, &call(false))
                .unwrap()
                .path
                .starts_with("/openai/deployments/")
        );
        let mistral = OpenAiProvider::new(ProviderKind::Mistral, settings("/v1"));
        assert_eq!(
            mistral
                .completions_request(&req, &call(true))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn moderations_go_only_to_openai_and_compatible_servers() {
        let req: ModerationsRequest = serde_json::from_str(r#"{"input":["a","b"]}"#).unwrap();
        let p = OpenAiProvider::new(ProviderKind::Openai, settings("/v1"));
        let up = p.moderations_request(&req, &call(false)).unwrap();
        assert_eq!(up.path, "/v1/moderations");
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["input"], serde_json::json!(["a", "b"]));
        for kind in [ProviderKind::AzureOpenai, ProviderKind::Mistral] {
            let e = OpenAiProvider::new(kind, settings(""))
                .moderations_request(&req, &call(false))
                .unwrap_err();
            assert!(e.message.contains("moderations"), "{}", e.message);
        }
    }

    #[test]
    fn embeddings_request_routes_model() {
        let p = OpenAiProvider::new(ProviderKind::Openai, settings("/v1"));
        let r: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"llmtest:emb","input":["a","b"],"dimensions":8}"#)
                .unwrap();
        let up = p
            .embeddings_request(
                &r,
                &UpstreamCall {
                    model: "text-embedding-3-small",
                    api_key: Some("k"),
                    stream: false,
                    track_usage: true,
                },
            )
            .unwrap();
        assert_eq!(up.path, "/v1/embeddings");
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], "text-embedding-3-small");
        assert_eq!(body["input"][1], "b");
        assert_eq!(body["dimensions"], 8);
    }
}
