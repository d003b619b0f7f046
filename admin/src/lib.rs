//! Portcullis admin: the control plane.
//!
//! A REST service (axum + sqlx) under `/api/v1` where admins and developers
//! manage providers, proxies (with immutable revisions), policy
//! attachments, API keys, gateways and deployments; and where managed
//! gateways fetch their configuration and report their health. SQLite by
//! default, Postgres by URL, with the same migrations and queries.
//!
//! `router(state)` is the whole HTTP surface, so tests drive it with
//! `tower::ServiceExt::oneshot` and no socket.

pub mod applications;
pub mod auth;
pub mod console;
pub mod crypto;
pub mod db;
pub mod deployments;
pub mod error;
pub mod gateway_settings;
pub mod gateways;
pub mod keys;
pub mod openapi;
pub mod ownership;
pub mod policies;
pub mod providers;
pub mod proxies;
pub mod slug;
pub mod spend;
pub mod try_it;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, patch, post, put};
use sqlx::AnyPool;
use tokio::sync::watch;

use crate::crypto::Sealer;
use crate::error::ApiError;
use crate::policies::Hub;

/// Shared state of the service.
#[derive(Clone)]
pub struct AppState {
    pub pool: AnyPool,
    pub sealer: Arc<Sealer>,
    pub hub: Hub,
    /// Ticks on every committed change, waking long-polling gateways.
    pub changes: Arc<watch::Sender<u64>>,
    /// A gateway is Active while its last heartbeat is at most this old.
    pub heartbeat_window: Duration,
    /// The embeddings endpoint managed gateways give policies (the
    /// `embeddings` capability, e.g. `semantic-guard`); none by default.
    pub policy_embeddings: Option<PolicyEmbeddings>,
    /// The web console's files, served at `/`; none: `/` is the API's 404.
    /// The binary embeds them (its build script builds `console/`).
    pub console: Option<console::ConsoleFiles>,
    /// Reaches gateways for `POST /proxies/{id}/try`, trusting what admin
    /// trusts for its other control-plane links.
    pub gateway_client: reqwest::Client,
}

/// Environment variable naming the provider (id) whose `/embeddings`
/// endpoint policies use on managed gateways.
pub const POLICY_EMBEDDINGS_PROVIDER_ENV: &str = "PORTCULLIS_POLICY_EMBEDDINGS_PROVIDER";
/// Environment variable naming the embedding model policies use.
pub const POLICY_EMBEDDINGS_MODEL_ENV: &str = "PORTCULLIS_POLICY_EMBEDDINGS_MODEL";

/// The policies' embeddings endpoint: a provider's OpenAI-style
/// `/embeddings` (openai, mistral or openai-compatible) with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEmbeddings {
    /// A provider id.
    pub provider: String,
    pub model: String,
}

impl PolicyEmbeddings {
    /// From the two settings (flags or environment): both or neither.
    pub fn from_parts(
        provider: Option<String>,
        model: Option<String>,
    ) -> anyhow::Result<Option<PolicyEmbeddings>> {
        let provider = provider.filter(|p| !p.trim().is_empty());
        let model = model.filter(|m| !m.trim().is_empty());
        match (provider, model) {
            (None, None) => Ok(None),
            (Some(provider), Some(model)) => Ok(Some(PolicyEmbeddings {
                provider: provider.trim().to_owned(),
                model: model.trim().to_owned(),
            })),
            (Some(_), None) => anyhow::bail!(
                "--policy-embeddings-provider ({POLICY_EMBEDDINGS_PROVIDER_ENV}) needs --policy-embeddings-model ({POLICY_EMBEDDINGS_MODEL_ENV})"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--policy-embeddings-model ({POLICY_EMBEDDINGS_MODEL_ENV}) needs --policy-embeddings-provider ({POLICY_EMBEDDINGS_PROVIDER_ENV})"
            ),
        }
    }
}

impl AppState {
    pub fn new(pool: AnyPool, sealer: Sealer, hub: Hub) -> AppState {
        AppState {
            pool,
            sealer: Arc::new(sealer),
            hub,
            changes: Arc::new(watch::channel(0).0),
            heartbeat_window: Duration::from_secs(15),
            policy_embeddings: None,
            console: None,
            gateway_client: try_it::client(&portcullis_net::ClientTls::default())
                .expect("a client without a CA file always builds"),
        }
    }

    /// Tells waiting gateways that something was committed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Every route of the API: (method, path, handler). The OpenAPI document
/// is tested against this list, so the two cannot drift apart.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("get", "/api/v1/openapi.json", get(openapi::serve)),
        ("get", "/api/v1/health", get(health)),
        ("get", "/api/v1/me", get(auth::me)),
        ("get", "/api/v1/tokens", get(auth::list_tokens)),
        ("post", "/api/v1/tokens", post(auth::create_token)),
        (
            "post",
            "/api/v1/tokens/{id}/revoke",
            post(auth::revoke_token),
        ),
        ("get", "/api/v1/audit", get(auth::list_audit)),
        ("get", "/api/v1/providers", get(providers::list)),
        ("post", "/api/v1/providers", post(providers::create)),
        ("get", "/api/v1/providers/{id}", get(providers::get)),
        ("patch", "/api/v1/providers/{id}", patch(providers::update)),
        (
            "delete",
            "/api/v1/providers/{id}",
            axum::routing::delete(providers::delete),
        ),
        ("get", "/api/v1/proxies", get(proxies::list)),
        ("post", "/api/v1/proxies", post(proxies::create)),
        ("get", "/api/v1/proxies/{id}", get(proxies::get)),
        ("patch", "/api/v1/proxies/{id}", patch(proxies::update)),
        (
            "delete",
            "/api/v1/proxies/{id}",
            axum::routing::delete(proxies::delete),
        ),
        (
            "put",
            "/api/v1/proxies/{id}/owner",
            put(ownership::set_owner),
        ),
        (
            "get",
            "/api/v1/proxies/{id}/revisions",
            get(proxies::revisions),
        ),
        (
            "get",
            "/api/v1/proxies/{id}/topics/{topic}/utterances",
            get(proxies::get_utterances),
        ),
        (
            "put",
            "/api/v1/proxies/{id}/topics/{topic}/utterances",
            put(proxies::put_utterances),
        ),
        ("get", "/api/v1/policies", get(policies::catalogue)),
        ("get", "/api/v1/policies/{name}", get(policies::policy)),
        (
            "get",
            "/api/v1/policies/{name}/versions/{version}",
            get(policies::version),
        ),
        ("get", "/api/v1/proxies/{id}/policies", get(policies::list)),
        (
            "post",
            "/api/v1/proxies/{id}/policies",
            post(policies::attach),
        ),
        (
            "patch",
            "/api/v1/proxies/{id}/policies/{attachment}",
            patch(policies::update),
        ),
        (
            "delete",
            "/api/v1/proxies/{id}/policies/{attachment}",
            axum::routing::delete(policies::detach),
        ),
        ("post", "/api/v1/proxies/{id}/try", post(try_it::try_proxy)),
        ("get", "/api/v1/proxies/{id}/keys", get(keys::list)),
        ("post", "/api/v1/proxies/{id}/keys", post(keys::create)),
        (
            "post",
            "/api/v1/proxies/{id}/keys/{key}/revoke",
            post(keys::revoke),
        ),
        (
            "get",
            "/api/v1/proxies/{id}/deployments",
            get(deployments::history),
        ),
        (
            "post",
            "/api/v1/proxies/{id}/deployments",
            post(deployments::deploy),
        ),
        (
            "post",
            "/api/v1/proxies/{id}/deployments/{deployment}/stop",
            post(deployments::stop),
        ),
        ("get", "/api/v1/gateways", get(gateways::list)),
        ("post", "/api/v1/gateways", post(gateways::register)),
        ("get", "/api/v1/gateways/{id}", get(gateways::get)),
        ("patch", "/api/v1/gateways/{id}", patch(gateways::update)),
        (
            "get",
            "/api/v1/gateways/{id}/settings",
            get(gateway_settings::get_gateway),
        ),
        (
            "patch",
            "/api/v1/gateways/{id}/settings",
            patch(gateway_settings::patch_gateway),
        ),
        (
            "get",
            "/api/v1/gateway-groups/{name}/settings",
            get(gateway_settings::get_group),
        ),
        (
            "patch",
            "/api/v1/gateway-groups/{name}/settings",
            patch(gateway_settings::patch_group),
        ),
        (
            "delete",
            "/api/v1/gateways/{id}",
            axum::routing::delete(gateways::delete),
        ),
        ("get", "/api/v1/spend", get(spend::query)),
        ("get", "/api/v1/applications", get(applications::list)),
        ("post", "/api/v1/applications", post(applications::create)),
        ("get", "/api/v1/applications/{id}", get(applications::get)),
        (
            "delete",
            "/api/v1/applications/{id}",
            axum::routing::delete(applications::delete),
        ),
        (
            "get",
            "/api/v1/applications/{id}/keys",
            get(applications::list_keys),
        ),
        (
            "post",
            "/api/v1/applications/{id}/keys",
            post(applications::create_key),
        ),
        (
            "post",
            "/api/v1/applications/{id}/keys/{key}/revoke",
            post(applications::revoke_key),
        ),
        (
            "get",
            "/api/v1/applications/{id}/subscriptions",
            get(applications::list_subscriptions),
        ),
        (
            "post",
            "/api/v1/applications/{id}/subscriptions",
            post(applications::subscribe),
        ),
        (
            "post",
            "/api/v1/subscriptions/{id}/{action}",
            post(applications::transition),
        ),
        (
            "get",
            "/api/v1/proxies/{id}/subscriptions",
            get(applications::list_proxy_subscriptions),
        ),
        (
            "get",
            "/api/v1/proxies/{id}/plans",
            get(applications::list_plans),
        ),
        (
            "post",
            "/api/v1/proxies/{id}/plans",
            post(applications::create_plan),
        ),
        (
            "patch",
            "/api/v1/proxies/{id}/plans/{plan}",
            patch(applications::update_plan),
        ),
        (
            "delete",
            "/api/v1/proxies/{id}/plans/{plan}",
            axum::routing::delete(applications::delete_plan),
        ),
        ("get", "/api/v1/gateway/config", get(gateways::config)),
        (
            "post",
            "/api/v1/gateway/heartbeat",
            post(gateways::heartbeat),
        ),
    ]
}

/// The HTTP surface.
pub fn router(state: AppState) -> Router {
    let mut r: Router<AppState> = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(fallback)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
}

/// The console's files (when it has them), else the API's JSON 404.
async fn fallback(
    axum::extract::State(st): axum::extract::State<AppState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(files) = st.console
        && let Some(r) = console::serve(files, &method, &uri)
    {
        return r;
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /api/v1/openapi.json",
    )
    .into_response()
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub listen: SocketAddr,
    /// `sqlite://...` or `postgres://...`; default `sqlite://<data_dir>/admin.db`.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    /// The policy hub's base URL.
    pub hub_url: Option<String>,
    /// How admin trusts the hub (CA bundle, plain-http opt-in).
    pub client_tls: portcullis_net::ClientTls,
}

/// A started admin service's state, plus the bootstrap token if one was
/// generated on this start.
pub struct Opened {
    pub state: AppState,
    pub bootstrap_token: Option<String>,
}

/// Opens the database and key material.
pub async fn open(o: &AdminOptions) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(&o.data_dir)?;
    let url = match &o.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", o.data_dir.join("admin.db").display()),
    };
    let pool = db::connect(&url).await?;
    let sealer = Sealer::load(std::env::var(crypto::DATA_KEY_ENV).ok(), &o.data_dir)?;
    let hub: Hub = match &o.hub_url {
        Some(u) => {
            o.client_tls.check_url(u, "--hub-url")?;
            Arc::new(policies::HttpHub::new(u, &o.client_tls)?)
        }
        None => Arc::new(policies::NoHub),
    };
    let policy_embeddings = PolicyEmbeddings::from_parts(
        std::env::var(POLICY_EMBEDDINGS_PROVIDER_ENV).ok(),
        std::env::var(POLICY_EMBEDDINGS_MODEL_ENV).ok(),
    )?;
    let bootstrap_token = auth::bootstrap(&pool, std::env::var(auth::ADMIN_TOKEN_ENV).ok()).await?;
    let mut state = AppState::new(pool, sealer, hub);
    state.policy_embeddings = policy_embeddings;
    state.gateway_client = try_it::client(&o.client_tls)?;
    Ok(Opened {
        state,
        bootstrap_token,
    })
}

/// Serves `state` on `listener` (HTTPS, connection limit and deadlines
/// as `options` say) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    options: portcullis_net::ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    portcullis_net::serve::serve(listener, router(state), options, shutdown).await?;
    Ok(())
}
