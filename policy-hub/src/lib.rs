//! The Portcullis policy hub: publish, discover and serve policies.
//!
//! A policy version is a WebAssembly component of the policy world plus
//! its manifest (category, phases, capabilities, settings JSON Schema,
//! defaults, docs). Versions are immutable; a yanked version disappears
//! from listings but is still served to gateways that pin it. Module bytes
//! are content-addressed by SHA-256, so gateways cache them forever.
//!
//! [`Hub::open`] connects to the database (SQLite or Postgres), applies
//! the migrations and publishes the built-in policies; [`router`] is the
//! REST API (`/api/v1`, described by `/api/v1/openapi.json`), driven
//! without a socket in tests; [`serve`] runs it on a listener.

pub mod api;
pub mod db;
pub mod error;
mod openapi;
pub mod seed;
pub mod validate;

use sha2::{Digest as _, Sha256};
use std::sync::Arc;

pub use api::router;
pub use db::Store;

/// Default largest module accepted by `publish` (the built-in policies are
/// a few hundred KiB; 10 MiB leaves room for policies bundling data).
pub const DEFAULT_MAX_MODULE_BYTES: usize = 10 * 1024 * 1024;
/// The publisher that may add versions to any policy and yank any version.
pub const ADMIN_PUBLISHER: &str = "admin";
/// The publisher recorded for policies seeded from the built-in directory.
pub const BUILTIN_PUBLISHER: &str = "builtin";

/// A token that may publish, and the publisher name it publishes as.
#[derive(Clone)]
pub struct PublisherToken {
    pub publisher: String,
    /// SHA-256 of the token: the hub keeps no token in clear after start.
    sha256: [u8; 32],
}

impl PublisherToken {
    pub fn new(publisher: impl Into<String>, token: &str) -> Self {
        PublisherToken {
            publisher: publisher.into(),
            sha256: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Parses `PUBLISHER:TOKEN`, or a bare `TOKEN` which publishes as `admin`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (publisher, token) = match spec.split_once(':') {
            Some((p, t)) => (p, t),
            None => (ADMIN_PUBLISHER, spec),
        };
        if token.len() < 16 {
            return Err("a publisher token is at least 16 characters".into());
        }
        if !portcullis_types::policy::valid_policy_name(publisher) {
            return Err(format!(
                "publisher name `{publisher}`: lowercase letters, digits and hyphens"
            ));
        }
        Ok(PublisherToken::new(publisher, token))
    }
}

impl std::fmt::Debug for PublisherToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherToken")
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

/// How to run a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://...`.
    pub database_url: String,
    /// Tokens allowed to publish and yank; none means read-only.
    pub tokens: Vec<PublisherToken>,
    pub max_module_bytes: usize,
    /// Built policies published at start when missing (see [`seed`]).
    pub builtins: Vec<seed::BuiltPolicy>,
}

impl HubConfig {
    pub fn new(database_url: impl Into<String>) -> Self {
        HubConfig {
            database_url: database_url.into(),
            tokens: Vec::new(),
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            builtins: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Store(#[from] db::StoreError),
    #[error("{0}")]
    Wasm(String),
    #[error("built-in policies: {0}")]
    Seed(String),
}

/// Shared state of the hub's handlers.
pub struct Hub {
    pub store: Store,
    pub checker: validate::ComponentChecker,
    pub tokens: Vec<PublisherToken>,
    pub max_module_bytes: usize,
}

impl Hub {
    /// Connects, migrates and seeds the built-in policies.
    pub async fn open(config: HubConfig) -> Result<Arc<Hub>, HubError> {
        let store = Store::connect(&config.database_url).await?;
        let checker = validate::ComponentChecker::new().map_err(HubError::Wasm)?;
        let hub = Arc::new(Hub {
            store,
            checker,
            tokens: config.tokens,
            max_module_bytes: config.max_module_bytes,
        });
        if !config.builtins.is_empty() {
            let report = seed::seed(&hub, &config.builtins)
                .await
                .map_err(HubError::Seed)?;
            tracing::info!(published = ?report.published, present = report.present, failed = report.failed.len(), "built-in policies");
        }
        Ok(hub)
    }

    /// The publisher a bearer token belongs to.
    pub fn publisher_for(&self, token: &str) -> Option<&str> {
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Comparing digests rather than tokens: a timing difference reveals
        // nothing usable about the token itself.
        self.tokens
            .iter()
            .find(|t| t.sha256 == h)
            .map(|t| t.publisher.as_str())
    }
}

/// Serves the hub on `listener` (HTTPS, connection limit and deadlines as
/// `options` say) until `shutdown` completes, then lets requests in
/// flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    options: portcullis_net::ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    portcullis_net::serve::serve(listener, router(hub), options, shutdown).await
}
