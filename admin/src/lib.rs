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

pub mod auth;
pub mod crypto;
pub mod db;
pub mod deployments;
pub mod error;
pub mod gateways;
pub mod keys;
pub mod openapi;
pub mod policies;
pub mod providers;
pub mod proxies;
pub mod slug;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, patch, post};
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
}

impl AppState {
    pub fn new(pool: AnyPool, sealer: Sealer, hub: Hub) -> AppState {
        AppState {
            pool,
            sealer: Arc::new(sealer),
            hub,
            changes: Arc::new(watch::channel(0).0),
            heartbeat_window: Duration::from_secs(15),
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
            "get",
            "/api/v1/proxies/{id}/revisions",
            get(proxies::revisions),
        ),
        ("get", "/api/v1/policies", get(policies::catalogue)),
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
        (
            "delete",
            "/api/v1/gateways/{id}",
            axum::routing::delete(gateways::delete),
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
    r.fallback(|| async {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see /api/v1/openapi.json",
        )
    })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method",
        )
    })
    .with_state(state)
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
        Some(u) => Arc::new(policies::HttpHub::new(u)),
        None => Arc::new(policies::NoHub),
    };
    let bootstrap_token = auth::bootstrap(&pool, std::env::var(auth::ADMIN_TOKEN_ENV).ok()).await?;
    Ok(Opened {
        state: AppState::new(pool, sealer, hub),
        bootstrap_token,
    })
}

/// Serves `state` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> anyhow::Result<()> {
    axum::serve(listener, router(state)).await?;
    Ok(())
}
