//! Control-plane transport shared by admin, the policy hub, managed
//! gateways and the CLI:
//!
//! - [`client`]: the one way to build an HTTP client for a control-plane
//!   link (rustls on ring, webpki roots plus an operator CA bundle), and
//!   the check that refuses a plain-`http://` URL to another machine
//!   unless the operator opted in.
//! - [`serve`]: serving an axum router with optional HTTPS, a connection
//!   limit, and deadlines for request heads and bodies.
//!
//! The data plane (the gateway's traffic listener and its connections to
//! providers) is Pingora's and is configured in the gateway.

pub mod client;
pub mod serve;

pub use client::{
    ClientTls, TlsError, UrlError, check_control_url, client_builder, error_chain, load_ca_bundle,
};
pub use serve::{ServeOptions, server_tls};

/// Installs ring as the process's default rustls provider, for clients
/// built without [`client_builder`] (tests' plain reqwest clients): the
/// workspace's reqwest has no provider of its own (`rustls-no-provider`)
/// and panics without one. Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
