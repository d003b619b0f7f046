//! Portcullis gateway: the data plane.
//!
//! A Pingora service that authenticates clients by proxy key, parses the
//! inbound format into canonical types, routes to a provider adapter,
//! translates the answer back (streams too) and counts tokens.

pub mod config;
pub mod error;
pub mod inbound;
pub mod metrics;
pub mod ops;
pub mod otlp;
pub mod providers;
pub mod run;
pub mod server;

pub mod sse;
pub mod tls;
pub mod upstream;
