//! Command-line flags shared by every command that serves a control-plane
//! API (admin, hub, `up`) or calls one (managed gateways, the admin and
//! policy clients, `up`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use portcullis_net::serve::DEFAULT_MAX_CONNECTIONS;
use portcullis_net::{ClientTls, ServeOptions};

/// How this command trusts the admin and hub URLs it is given.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// PEM file of CA certificates to trust for admin and hub URLs, in
    /// addition to the public (webpki) roots.
    #[arg(long, global = true, env = "PORTCULLIS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Accept plain http:// admin and hub URLs to other machines (tokens
    /// and provider secrets then cross the network unencrypted).
    /// Loopback http:// is always accepted.
    #[arg(long, global = true, env = "PORTCULLIS_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
}

impl TrustArgs {
    pub fn tls(&self) -> ClientTls {
        ClientTls {
            ca_file: self.ca_file.clone(),
            allow_insecure_http: self.allow_insecure_http,
        }
    }
}

/// How a control-plane API is served.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Serve HTTPS with this PEM certificate chain (leaf first).
    #[arg(long, env = "PORTCULLIS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "PORTCULLIS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connections served at once; more are closed as they arrive.
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a client has to send a whole request head (also the
    /// keep-alive idle timeout, and the TLS handshake's deadline).
    #[arg(long, env = "PORTCULLIS_HEADER_TIMEOUT", value_parser = seconds,
          default_value = "10")]
    pub header_timeout: Duration,
    /// Seconds a client has to send a whole request body (408 past it).
    #[arg(long, env = "PORTCULLIS_BODY_TIMEOUT", value_parser = seconds,
          default_value = "60")]
    pub body_timeout: Duration,
    /// Requests per second one client address may send (bursts of twice
    /// that); past it, 429 with retry-after. 0: no limit.
    #[arg(long, env = "PORTCULLIS_REQUESTS_PER_SECOND", default_value_t = 0)]
    pub requests_per_second: u32,
}

impl ServeArgs {
    /// Loads the certificate and key, if given.
    pub fn options(&self) -> anyhow::Result<ServeOptions> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(portcullis_net::server_tls(cert, key).context("--tls-cert/--tls-key")?)
            }
            _ => None,
        };
        Ok(ServeOptions {
            tls,
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            requests_per_second: std::num::NonZeroU32::new(self.requests_per_second),
        })
    }
}

/// A positive number of seconds, fractions allowed (`0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(s > 0.0) {
        return Err("must be more than 0 seconds".into());
    }
    Duration::try_from_secs_f64(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn defaults_are_the_libraries_and_bad_durations_are_refused() {
        let o = Cli::parse_from(["x"]).serve.options().unwrap();
        let d = ServeOptions::default();
        assert_eq!(
            (
                o.max_connections,
                o.header_timeout,
                o.body_timeout,
                o.tls.is_none()
            ),
            (d.max_connections, d.header_timeout, d.body_timeout, true)
        );
        let o = Cli::parse_from(["x", "--header-timeout", "0.5"]).serve;
        assert_eq!(o.header_timeout, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["x", "--body-timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--body-timeout", "soon"]).is_err());
        // A certificate needs its key.
        assert!(Cli::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err());
    }
}
