//! Portcullis gateway: the data plane.
//!
//! A Pingora service that authenticates clients by proxy key, parses the
//! inbound format into canonical types, routes to a provider adapter,
//! translates the answer back (streams too) and counts tokens.

// Wire formats live in their own crate (no Pingora, no wasmtime); they
// are re-exported so the gateway's modules name them as before.
pub use portcullis_config as config;
pub use portcullis_formats::{error, inbound, json, providers, sse};

pub mod accounting;
pub mod background;
pub mod discovery;
pub mod exchange;
pub mod health;
pub mod key_usage;
pub mod listener;
pub mod live;
pub mod managed;
pub mod metrics;
pub mod ops;
pub mod otlp;
pub mod policy;
pub mod prompt_guard;
pub mod reload;
pub mod routing;
pub mod run;
pub mod runtime;
pub mod semantic;
pub mod server;
pub mod spend;
pub mod tls;
pub mod upstream;
