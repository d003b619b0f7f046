//! A local stand-in for real LLM providers, for end-to-end tests,
//! benchmarks and `portcullis up --demo`.
//!
//! One HTTP server speaks each provider's wire format at its real paths:
//! OpenAI, Azure OpenAI, Mistral (under `/mistral`), Anthropic Messages,
//! Google Gemini and Amazon Bedrock Converse, streamed and not. Replies are
//! deterministic (the rules are in `docs/mock-llm.md` and the `reply`
//! module) so tests can assert exact text and token counts. Like WireMock, it keeps
//! a journal of the requests it received (`/_mock/requests`) and can be told
//! to misbehave (`/_mock/behaviour`): errors in the provider's shape,
//! latency, slow or cut streams.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8099").await?;
//! portcullis_mock_llm::serve(listener).await
//! # }
//! ```

mod anthropic;
mod bedrock;
mod behaviour;
mod errors;
mod exchange;
mod gemini;
mod identity;
mod journal;
mod models;
mod openai;
mod reply;
mod responses;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

pub use behaviour::Behaviour;
pub use identity::{AWS_KEY_PREFIX, IMDS_ROLE, TEST_SERVICE_ACCOUNT, TOKEN_PREFIX};
pub use journal::{JournalEntry, JournalUsage, MAX_ENTRIES as MAX_JOURNAL_ENTRIES};
pub use models::ModelLists;

use exchange::{Exchange, Shared};
use reply::Provider;

/// Largest request body accepted; generous so image-bearing requests fit.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The mock provider: shared state (journal, behaviours) behind a cheap
/// clonable handle. Every clone and every router built from it share the
/// same state.
#[derive(Debug, Clone, Default)]
pub struct MockLlm {
    shared: Arc<Shared>,
}

impl MockLlm {
    /// A mock with an empty journal and no behaviours.
    pub fn new() -> Self {
        Self::default()
    }

    /// All routes: the provider endpoints and the `/_mock` control
    /// endpoints, so tests can drive the mock without a socket.
    pub fn router(&self) -> Router {
        Router::new()
            // OpenAI
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/embeddings", post(openai_embeddings))
            .route("/v1/completions", post(openai_completions))
            .route("/v1/moderations", post(openai_moderations))
            // OpenAI's list, or Anthropic's (same path, told apart by the
            // `anthropic-version` header).
            .route("/v1/models", get(v1_models))
            .route("/v1/responses", post(openai_responses))
            // Azure OpenAI
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(azure_chat),
            )
            .route(
                "/openai/deployments/{deployment}/completions",
                post(azure_completions),
            )
            .route(
                "/openai/deployments/{deployment}/embeddings",
                post(azure_embeddings),
            )
            .route("/openai/v1/responses", post(azure_responses))
            // Mistral
            .route("/mistral/v1/chat/completions", post(mistral_chat))
            .route("/mistral/v1/embeddings", post(mistral_embeddings))
            .route("/mistral/v1/models", get(mistral_models))
            // Anthropic
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/messages/count_tokens", post(anthropic_count_tokens))
            // Gemini
            .route("/v1beta/models", get(gemini_models))
            .route("/v1beta/models/{model_action}", post(gemini))
            .route("/v1/models/{model_action}", post(gemini))
            // Gemini on Vertex AI
            .route(
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{model_action}",
                post(vertex),
            )
            // Bedrock: the model id may hold an unencoded '/', so take the rest.
            .route("/model/{*rest}", post(bedrock))
            // Bedrock's control plane (`bedrock.{region}`, beside the runtime).
            .route("/foundation-models", get(bedrock_models))
            // Identity: Entra ID, Google OAuth2, AWS STS and IMDSv2
            .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
            .route("/token", post(google_token))
            .route("/", post(sts))
            .route("/latest/api/token", axum::routing::put(imds_token))
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(imds_role),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/{role}",
                get(imds_credentials),
            )
            .route("/_mock/identity", get(list_identity).post(set_identity))
            // Control and observation
            .route("/_mock/health", get(health))
            .route("/_mock/requests", get(list_requests).delete(clear_requests))
            .route("/_mock/connections", get(connections))
            .route(
                "/_mock/models",
                get(list_models).put(put_models).delete(reset_models),
            )
            .route(
                "/_mock/behaviour",
                get(list_behaviours)
                    .post(add_behaviours)
                    .delete(reset_behaviours),
            )
            .fallback(unknown_route)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Arc::clone(&self.shared))
    }

    /// The journal, oldest request first (what `GET /_mock/requests` returns).
    pub fn requests(&self) -> Vec<JournalEntry> {
        self.shared.journal().entries()
    }

    /// Empties the journal (`DELETE /_mock/requests`).
    pub fn clear_requests(&self) {
        self.shared.journal().clear();
    }

    /// Queues a behaviour (`POST /_mock/behaviour`).
    pub fn push_behaviour(&self, behaviour: Behaviour) {
        self.shared.behaviours().extend(vec![behaviour]);
    }

    /// Sets model lists (`PUT /_mock/models`): the providers `lists`
    /// names get its lists, the others keep theirs.
    pub fn set_models(&self, lists: ModelLists) {
        self.shared.model_lists().merge(lists);
    }

    /// Removes all behaviours (`DELETE /_mock/behaviour`).
    pub fn reset_behaviours(&self) {
        self.shared.behaviours().clear();
    }

    /// Serves this mock on an already-bound listener until the future is
    /// dropped; use it to keep a handle on the journal while serving.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        // Streams are many small writes: without TCP_NODELAY, Nagle's
        // algorithm and the client's delayed ACK stall each ~40 ms, which
        // real providers do not do.
        use axum::serve::ListenerExt;
        let shared = Arc::clone(&self.shared);
        let listener = listener.tap_io(move |tcp| {
            shared.connection_accepted();
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router()).await?;
        Ok(())
    }
}

/// Serves a fresh mock on an already-bound listener until the future is
/// dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    MockLlm::new().serve(listener).await
}

type SharedState = State<Arc<Shared>>;

/// Starts an exchange for `provider` and runs `handler` on it.
async fn run(
    shared: &Arc<Shared>,
    provider: Provider,
    request: (Method, Uri, HeaderMap, Bytes),
    handler: impl FnOnce(&mut Exchange) -> exchange::Outcome,
) -> Response {
    let (method, uri, headers, body) = request;
    // A credential of the identity endpoints' making must be one they
    // issued and still valid, as the provider would check it.
    let refused = credential_refusal(shared, provider, &headers);
    Exchange::begin(shared, provider, method, uri, headers, body)
        .run(|ex| match refused {
            Some(e) => exchange::Outcome::Error(e),
            None => handler(ex),
        })
        .await
}

/// The provider's answer to an issued credential that is unknown or has
/// expired; `None` when the request's credential passes (or is not one
/// the identity endpoints issue).
fn credential_refusal(
    shared: &Shared,
    provider: Provider,
    headers: &HeaderMap,
) -> Option<errors::ApiError> {
    let authorization = headers.get("authorization")?.to_str().ok()?.trim();
    let identity = shared.identity();
    if let Some(akid) = authorization
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .and_then(|c| c.split('/').next())
    {
        let session = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        return match identity.check_aws(akid, session) {
            Ok(()) => None,
            Err("expired") => Some(
                errors::ApiError::new(
                    StatusCode::FORBIDDEN,
                    "The security token included in the request is expired",
                )
                .kind("ExpiredTokenException"),
            ),
            Err(_) => Some(
                errors::ApiError::new(
                    StatusCode::FORBIDDEN,
                    "The security token included in the request is invalid.",
                )
                .kind("UnrecognizedClientException"),
            ),
        };
    }
    let token = authorization
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))?
        .1
        .trim();
    identity.check_bearer(token).err()?;
    Some(errors::ApiError::new(
        StatusCode::UNAUTHORIZED,
        match provider {
            Provider::Azure => {
                "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."
            }
            Provider::Gemini => {
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
            }
            _ => "Incorrect API key provided.",
        },
    ))
}

async fn openai_chat(State(s): SharedState, m: Method, u: Uri, h: HeaderMap, b: Bytes) -> Response {
    run(&s, Provider::OpenAi, (m, u, h, b), |ex| {
        openai::chat(ex, None)
    })
    .await
}

async fn openai_embeddings(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::OpenAi, (m, u, h, b), |ex| {
        openai::embeddings(ex, None)
    })
    .await
}

async fn openai_completions(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::OpenAi, (m, u, h, b), |ex| {
        openai::legacy_completion(ex, None)
    })
    .await
}

async fn azure_completions(
    State(s): SharedState,
    Path(deployment): Path<String>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::Azure, (m, u, h, b), |ex| {
        openai::legacy_completion(ex, Some(deployment))
    })
    .await
}

async fn openai_moderations(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::OpenAi, (m, u, h, b), openai::moderation).await
}

async fn openai_responses(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::OpenAi, (m, u, h, b), responses::create).await
}

async fn azure_responses(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::Azure, (m, u, h, b), responses::create).await
}

async fn v1_models(State(s): SharedState, m: Method, u: Uri, h: HeaderMap) -> Response {
    if h.contains_key("anthropic-version") {
        run(
            &s,
            Provider::Anthropic,
            (m, u, h, Bytes::new()),
            models::anthropic,
        )
        .await
    } else {
        run(
            &s,
            Provider::OpenAi,
            (m, u, h, Bytes::new()),
            models::openai,
        )
        .await
    }
}

async fn gemini_models(State(s): SharedState, m: Method, u: Uri, h: HeaderMap) -> Response {
    run(
        &s,
        Provider::Gemini,
        (m, u, h, Bytes::new()),
        models::gemini,
    )
    .await
}

async fn bedrock_models(State(s): SharedState, m: Method, u: Uri, h: HeaderMap) -> Response {
    run(
        &s,
        Provider::Bedrock,
        (m, u, h, Bytes::new()),
        models::bedrock,
    )
    .await
}

async fn azure_chat(
    State(s): SharedState,
    Path(deployment): Path<String>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::Azure, (m, u, h, b), |ex| {
        openai::chat(ex, Some(deployment))
    })
    .await
}

async fn azure_embeddings(
    State(s): SharedState,
    Path(deployment): Path<String>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::Azure, (m, u, h, b), |ex| {
        openai::embeddings(ex, Some(deployment))
    })
    .await
}

async fn mistral_chat(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::Mistral, (m, u, h, b), |ex| {
        openai::chat(ex, None)
    })
    .await
}

async fn mistral_embeddings(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::Mistral, (m, u, h, b), |ex| {
        openai::embeddings(ex, None)
    })
    .await
}

async fn mistral_models(State(s): SharedState, m: Method, u: Uri, h: HeaderMap) -> Response {
    run(
        &s,
        Provider::Mistral,
        (m, u, h, Bytes::new()),
        models::openai,
    )
    .await
}

async fn anthropic_messages(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::Anthropic, (m, u, h, b), anthropic::messages).await
}

async fn anthropic_count_tokens(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(
        &s,
        Provider::Anthropic,
        (m, u, h, b),
        anthropic::count_tokens,
    )
    .await
}

async fn gemini(
    State(s): SharedState,
    Path(model_action): Path<String>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    run(&s, Provider::Gemini, (m, u, h, b), |ex| {
        gemini::dispatch(ex, &model_action, false)
    })
    .await
}

/// Gemini on Vertex AI: the project and location only route.
async fn vertex(
    state: SharedState,
    Path((_project, _location, model_action)): Path<(String, String, String)>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    let State(s) = state;
    run(&s, Provider::Gemini, (m, u, h, b), |ex| {
        gemini::dispatch(ex, &model_action, true)
    })
    .await
}

async fn entra_token(State(s): SharedState, Path(tenant): Path<String>, b: Bytes) -> Response {
    s.identity().entra_token(&tenant, &b)
}

async fn google_token(State(s): SharedState, b: Bytes) -> Response {
    s.identity().google_token(&b)
}

async fn sts(State(s): SharedState, h: HeaderMap, b: Bytes) -> Response {
    let authorization = h.get("authorization").and_then(|v| v.to_str().ok());
    s.identity().sts(authorization, &b)
}

async fn imds_token(State(s): SharedState, h: HeaderMap) -> Response {
    let ttl = h
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok());
    s.identity().imds_token(ttl)
}

fn imds_session(h: &HeaderMap) -> Option<&str> {
    h.get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
}

async fn imds_role(State(s): SharedState, h: HeaderMap) -> Response {
    s.identity().imds_credentials(imds_session(&h), "")
}

async fn imds_credentials(
    State(s): SharedState,
    Path(role): Path<String>,
    h: HeaderMap,
) -> Response {
    s.identity().imds_credentials(imds_session(&h), &role)
}

async fn list_identity(State(s): SharedState) -> Response {
    axum::Json(json!({"issued": s.identity().issued()})).into_response()
}

async fn set_identity(State(s): SharedState, b: Bytes) -> Response {
    match serde_json::from_slice::<identity::IdentitySettings>(&b) {
        Ok(settings) => {
            s.identity().configure(settings);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn bedrock(State(s): SharedState, m: Method, u: Uri, h: HeaderMap, b: Bytes) -> Response {
    run(&s, Provider::Bedrock, (m, u, h, b), bedrock::dispatch).await
}

async fn unknown_route(
    State(s): SharedState,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    s.unknown_route(&m, &u, &h, &b)
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn connections(State(s): SharedState) -> Response {
    axum::Json(json!({"accepted": s.connections_accepted()})).into_response()
}

async fn list_requests(State(s): SharedState) -> Response {
    axum::Json(s.journal().entries()).into_response()
}

async fn clear_requests(State(s): SharedState) -> StatusCode {
    s.journal().clear();
    StatusCode::NO_CONTENT
}

async fn list_behaviours(State(s): SharedState) -> Response {
    axum::Json(s.behaviours().list()).into_response()
}

/// Queues one behaviour or an array of them; answers the whole queue.
async fn add_behaviours(State(s): SharedState, body: Bytes) -> Response {
    match behaviour::parse_request(&body) {
        Ok(behaviours) => {
            let mut queue = s.behaviours();
            queue.extend(behaviours);
            axum::Json(queue.list()).into_response()
        }
        Err(message) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": message})),
        )
            .into_response(),
    }
}

async fn list_models(State(s): SharedState) -> Response {
    let view = models::view(&s.model_lists());
    axum::Json(view).into_response()
}

/// Sets the lists the body names; answers them all.
async fn put_models(State(s): SharedState, body: Bytes) -> Response {
    match models::parse_update(&body) {
        Ok(update) => {
            let mut lists = s.model_lists();
            lists.merge(update);
            axum::Json(models::view(&lists)).into_response()
        }
        Err(message) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": message})),
        )
            .into_response(),
    }
}

async fn reset_models(State(s): SharedState) -> StatusCode {
    *s.model_lists() = ModelLists::default();
    StatusCode::NO_CONTENT
}

async fn reset_behaviours(State(s): SharedState) -> StatusCode {
    s.behaviours().clear();
    StatusCode::NO_CONTENT
}

/// Helpers for the inline tests: a mock on a loopback port and a client.
#[cfg(test)]
pub(crate) mod testkit {
    use std::time::Duration;

    use reqwest::header::HeaderMap;
    use serde_json::Value;

    use super::MockLlm;

    pub(crate) const BEARER: (&str, &str) = ("authorization", "Bearer sk-test");

    /// A mock served on 127.0.0.1 with a free port.
    pub(crate) struct Mock {
        pub base: String,
        pub client: reqwest::Client,
        pub handle: MockLlm,
    }

    impl Mock {
        pub(crate) async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let handle = MockLlm::new();
            let served = handle.clone();
            tokio::spawn(async move { served.serve(listener).await });
            // The workspace's reqwest has no built-in TLS provider.
            portcullis_net::install_crypto();
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            Self {
                base,
                client,
                handle,
            }
        }

        fn request(
            &self,
            method: reqwest::Method,
            path: &str,
            headers: &[(&str, &str)],
        ) -> reqwest::RequestBuilder {
            let mut request = self.client.request(method, format!("{}{path}", self.base));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request
        }

        /// POSTs JSON; answers status, headers and the JSON body (null if
        /// the body is not JSON).
        pub(crate) async fn post_json(
            &self,
            path: &str,
            headers: &[(&str, &str)],
            body: Value,
        ) -> (u16, HeaderMap, Value) {
            let (status, headers, text) = self.post_text(path, headers, body).await;
            (
                status,
                headers,
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )
        }

        /// POSTs JSON; answers status, headers and the body text.
        pub(crate) async fn post_text(
            &self,
            path: &str,
            headers: &[(&str, &str)],
            body: Value,
        ) -> (u16, HeaderMap, String) {
            let response = self
                .request(reqwest::Method::POST, path, headers)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (status, headers, response.text().await.unwrap())
        }

        /// POSTs a raw body (for malformed JSON).
        pub(crate) async fn post_raw(
            &self,
            path: &str,
            headers: &[(&str, &str)],
            body: &str,
        ) -> (u16, HeaderMap, Value) {
            let response = self
                .request(reqwest::Method::POST, path, headers)
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap();
            (
                status,
                headers,
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )
        }

        /// POSTs JSON and reads the body chunk by chunk; answers the bytes
        /// received and whether the transfer ended in an error (a cut).
        pub(crate) async fn post_stream_raw(
            &self,
            path: &str,
            headers: &[(&str, &str)],
            body: Value,
        ) -> (Vec<u8>, bool) {
            let mut response = self
                .request(reqwest::Method::POST, path, headers)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let mut received = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                    Ok(None) => return (received, false),
                    Err(_) => return (received, true),
                }
            }
        }

        pub(crate) async fn get(
            &self,
            path: &str,
            headers: &[(&str, &str)],
        ) -> (u16, HeaderMap, Value) {
            let response = self
                .request(reqwest::Method::GET, path, headers)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap();
            (
                status,
                headers,
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )
        }

        /// Sets model lists through the control endpoint.
        pub(crate) async fn put_models(&self, lists: Value) {
            let response = self
                .request(reqwest::Method::PUT, "/_mock/models", &[])
                .body(lists.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }

        /// Queues a behaviour through the control endpoint.
        pub(crate) async fn behaviour(&self, behaviour: Value) {
            let response = self
                .request(reqwest::Method::POST, "/_mock/behaviour", &[])
                .body(behaviour.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status().as_u16(),
                200,
                "{}",
                response.text().await.unwrap()
            );
        }

        pub(crate) async fn reset_behaviours(&self) {
            let response = self
                .request(reqwest::Method::DELETE, "/_mock/behaviour", &[])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 204);
        }

        /// The journal through the control endpoint.
        pub(crate) async fn journal(&self) -> Vec<Value> {
            let (status, _, body) = self.get("/_mock/requests", &[]).await;
            assert_eq!(status, 200);
            serde_json::from_value(body).unwrap()
        }
    }

    /// The `data:` payloads of an SSE stream with LF line ends.
    pub(crate) fn sse_data_events(text: &str) -> Vec<String> {
        text.split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                event
                    .lines()
                    .find_map(|line| line.strip_prefix("data: "))
                    .unwrap_or_else(|| panic!("event without data: {event:?}"))
                    .to_owned()
            })
            .collect()
    }

    /// `(event name, data JSON)` of a named-event SSE stream (Anthropic).
    pub(crate) fn sse_named_events(text: &str) -> Vec<(String, Value)> {
        text.split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                let name = event
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap();
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                (name.to_owned(), serde_json::from_str(data).unwrap())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use crate::testkit::*;

    #[tokio::test]
    async fn health_and_unknown_routes() {
        let mock = Mock::start().await;
        let (status, _, body) = mock.get("/_mock/health", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"status": "ok"}));

        let (status, _, body) = mock.post_json("/v2/nothing", &[BEARER], json!({})).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["message"], "Invalid URL (POST /v2/nothing)");
        let journal = mock.journal().await;
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0]["provider"], "unknown");
        assert_eq!(journal[0]["status"], 404);
    }

    #[tokio::test]
    async fn journal_records_requests_and_can_be_cleared() {
        let mock = Mock::start().await;
        let request =
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi there"}]});
        mock.post_json("/v1/chat/completions?trace=1", &[BEARER], request.clone())
            .await;
        let journal = mock.journal().await;
        assert_eq!(journal.len(), 1);
        let entry = &journal[0];
        assert_eq!(entry["seq"], 1);
        assert_eq!(entry["method"], "POST");
        assert_eq!(entry["path"], "/v1/chat/completions");
        assert_eq!(entry["query"], "trace=1");
        assert_eq!(entry["headers"]["authorization"], "Bearer sk-test");
        assert_eq!(entry["body"], request);
        assert_eq!(entry["provider"], "openai");
        assert_eq!(entry["model"], "gpt-4o");
        assert_eq!(entry["stream"], false);
        assert_eq!(
            entry["usage"],
            json!({"input_tokens": 2, "output_tokens": 8})
        );
        assert_eq!(entry["status"], 200);
        assert_eq!(mock.handle.requests().len(), 1);

        mock.post_raw("/v1/chat/completions", &[BEARER], "not json")
            .await;
        let journal = mock.journal().await;
        assert_eq!(journal[1]["body"], "not json");
        assert_eq!(journal[1]["status"], 400);

        let response = mock
            .client
            .delete(format!("{}/_mock/requests", mock.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204);
        assert!(mock.journal().await.is_empty());

        // Sequence numbers keep counting after a clear, so ids stay unique.
        let (_, _, body) = mock
            .post_json("/v1/chat/completions", &[BEARER], request)
            .await;
        assert_eq!(body["id"], "chatcmpl-mock0000000000000003");
    }

    #[tokio::test]
    async fn behaviour_endpoint_lists_validates_and_resets() {
        let mock = Mock::start().await;
        mock.behaviour(json!([{"status": 500, "times": 2}, {"delay_ms": 1}]))
            .await;
        let (status, _, body) = mock.get("/_mock/behaviour", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!([{"status": 500, "times": 2}, {"delay_ms": 1}]));

        let response = mock
            .client
            .post(format!("{}/_mock/behaviour", mock.base))
            .body(r#"{"status": 42}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);

        mock.reset_behaviours().await;
        let (_, _, body) = mock.get("/_mock/behaviour", &[]).await;
        assert_eq!(body, json!([]));
    }

    #[tokio::test]
    async fn custom_error_body_is_sent_verbatim() {
        let mock = Mock::start().await;
        mock.behaviour(json!({"status": 400, "body": {"error": {"message": "custom", "code": "context_length_exceeded"}}}))
            .await;
        let request = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        let (status, headers, body) = mock
            .post_json("/v1/chat/completions", &[BEARER], request)
            .await;
        assert_eq!(status, 400);
        assert!(headers.get("retry-after").is_none());
        assert_eq!(
            body,
            json!({"error": {"message": "custom", "code": "context_length_exceeded"}})
        );
    }

    #[tokio::test]
    async fn delays_apply_before_the_head_and_between_chunks() {
        let mock = Mock::start().await;
        mock.behaviour(json!({"delay_ms": 150, "times": 1})).await;
        let request = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        let started = Instant::now();
        let (status, _, _) = mock
            .post_json("/v1/chat/completions", &[BEARER], request.clone())
            .await;
        assert_eq!(status, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));

        // 9 frames (role, 7 words, finish, [DONE] = 10) with 20 ms between them.
        mock.behaviour(json!({"chunk_delay_ms": 20, "times": 1}))
            .await;
        let mut streamed = request;
        streamed["stream"] = json!(true);
        let started = Instant::now();
        let (received, cut) = mock
            .post_stream_raw("/v1/chat/completions", &[BEARER], streamed)
            .await;
        assert!(!cut);
        assert!(started.elapsed() >= Duration::from_millis(9 * 20));
        assert!(
            String::from_utf8(received)
                .unwrap()
                .ends_with("data: [DONE]\n\n")
        );
    }
}
