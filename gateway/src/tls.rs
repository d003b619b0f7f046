//! TLS termination for clients: one listener, one or more certificates,
//! chosen by the client's SNI; HTTP/2 and HTTP/1.1 offered through ALPN.

use std::collections::HashMap;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::services::listening::Service;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

use crate::config::settings::{pem_certificates, pem_private_key};
use crate::config::{ConfigError, TlsFile, cfg_err};

/// Picks a certificate by SNI: an exact name first, then a wildcard, then
/// the first certificate for clients that send no SNI.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(|n| n.to_ascii_lowercase()) else {
            return Some(self.default.clone());
        };
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// Loads every certificate of the listener (from files, inline PEM, or a
/// key in an environment variable); errors name the field at fault. Built
/// with each configuration, so new certificates apply on a reload.
pub fn build_resolver(
    tls: &TlsFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SniResolver, ConfigError> {
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| cfg_err("tls", "no TLS crypto provider installed"))?;
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    if tls.certificates.is_empty() {
        return Err(cfg_err(
            "tls.certificates",
            "at least one certificate is required",
        ));
    }
    for (i, c) in tls.certificates.iter().enumerate() {
        let at = |f: &str| format!("tls.certificates[{i}].{f}");
        let cert_pem = match (&c.cert, &c.cert_pem) {
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|e| cfg_err(at("cert"), format!("cannot read {path}: {e}")))?,
            (None, Some(pem)) => pem.clone(),
            _ => {
                return Err(cfg_err(
                    at("cert"),
                    "set cert (a file) or cert_pem, one of them",
                ));
            }
        };
        let key_pem = match (&c.key, &c.key_env) {
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|e| cfg_err(at("key"), format!("cannot read {path}: {e}")))?,
            (None, Some(var)) => env(var).ok_or_else(|| {
                cfg_err(
                    at("key_env"),
                    format!("environment variable {var} is not set"),
                )
            })?,
            _ => {
                return Err(cfg_err(
                    at("key"),
                    "set key (a file) or key_env, one of them",
                ));
            }
        };
        let certs = pem_certificates(&cert_pem).map_err(|m| cfg_err(at("cert"), m))?;
        let key = pem_private_key(&key_pem).map_err(|m| cfg_err(at("key"), m))?;
        let names = dns_names(certs[0].as_ref()).map_err(|e| cfg_err(at("cert"), e.to_string()))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| cfg_err(at("key"), e.to_string()))?;
        let ck = CertifiedKey::new(certs, signing);
        // A key of another certificate would fail every handshake.
        ck.keys_match()
            .map_err(|e| cfg_err(at("key"), format!("does not match the certificate: {e}")))?;
        let ck = Arc::new(ck);
        for n in names {
            match n.strip_prefix("*.") {
                Some(parent) => wildcard
                    .entry(parent.to_owned())
                    .or_insert_with(|| ck.clone()),
                None => exact.entry(n).or_insert_with(|| ck.clone()),
            };
        }
        default.get_or_insert(ck);
    }
    Ok(SniResolver {
        exact,
        wildcard,
        default: default.expect("at least one certificate"),
    })
}

/// The DNS names of a certificate: its SANs, or its CN when it has none.
fn dns_names(der: &[u8]) -> anyhow::Result<Vec<String>> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| anyhow::anyhow!("not a certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// Resolves with the certificates of the configuration in force, so a
/// reload (a managed gateway's new settings) changes them for the next
/// handshake without reopening the listener.
/// `current` reads the configuration in force (the live slot; a closure so
/// this module needs not know the runtime, which builds resolvers).
struct LiveResolver<F>(F);

impl<F> std::fmt::Debug for LiveResolver<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveResolver")
    }
}

impl<F> ResolvesServerCert for LiveResolver<F>
where
    F: Fn() -> Option<Arc<SniResolver>> + Send + Sync,
{
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match (self.0)() {
            Some(r) => r.resolve(hello),
            None => {
                tracing::warn!(
                    "TLS handshake refused: the configuration in force has no certificate"
                );
                None
            }
        }
    }
}

/// Adds the HTTPS listener on `listen` to the traffic service.
pub fn add_tls_listener<A>(
    svc: &mut Service<A>,
    listen: &str,
    current: impl Fn() -> Option<Arc<SniResolver>> + Send + Sync + 'static,
) -> anyhow::Result<()>
where
    A: pingora::apps::ServerApp + Send + Sync + 'static,
{
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(Arc::new(LiveResolver(current)));
    settings.enable_h2();
    svc.add_tls_with_settings(listen, None, settings);
    Ok(())
}
