//! TLS termination for clients: one listener, one or more certificates,
//! chosen by the client's SNI; HTTP/2 and HTTP/1.1 offered through ALPN.

use std::collections::HashMap;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::services::listening::Service;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

use crate::config::TlsFile;

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

/// Loads every certificate of the listener; errors name the file.
pub fn build_resolver(tls: &TlsFile) -> anyhow::Result<SniResolver> {
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| anyhow::anyhow!("no TLS crypto provider installed"))?;
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    if tls.certificates.is_empty() {
        anyhow::bail!("tls.certificates: at least one certificate is required");
    }
    for (i, c) in tls.certificates.iter().enumerate() {
        let (certs, key) = pingora::tls::load_certs_and_key_files(&c.cert, &c.key)
            .map_err(|e| anyhow::anyhow!("tls.certificates[{i}]: {e}"))?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "tls.certificates[{i}]: no certificate in {} or no key in {}",
                    c.cert,
                    c.key
                )
            })?;
        let names = dns_names(certs[0].as_ref())
            .map_err(|e| anyhow::anyhow!("tls.certificates[{i}].cert: {e}"))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| anyhow::anyhow!("tls.certificates[{i}].key: {e}"))?;
        let ck = Arc::new(CertifiedKey::new(certs, signing));
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

/// Adds the HTTPS listener to the traffic service.
pub fn add_tls_listener<A>(svc: &mut Service<A>, tls: &TlsFile) -> anyhow::Result<()>
where
    A: pingora::apps::ServerApp + Send + Sync + 'static,
{
    let resolver = build_resolver(tls)?;
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(Arc::new(resolver));
    settings.enable_h2();
    svc.add_tls_with_settings(&tls.listen, None, settings);
    Ok(())
}
