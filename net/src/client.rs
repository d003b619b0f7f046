//! Clients for control-plane links (CLI → admin, gateway → admin, admin
//! and gateways → hub, gateways → the policies' embeddings endpoint).
//!
//! Every such client is built by [`client_builder`]: rustls on the ring
//! provider (as Pingora's TLS), trusting the webpki roots plus the
//! operator's CA bundle, so a private CA works without touching the
//! system store. Before a configured URL is used, [`check_control_url`]
//! refuses plain `http://` to any host but this machine: those links carry
//! admin tokens, gateway tokens and decrypted provider secrets.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A certificate or key that cannot be used, or a client that cannot be
/// built; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA bundle {}: {message}", path.display())]
    CaBundle { path: PathBuf, message: String },
    #[error("certificate {}: {message}", path.display())]
    Certificate { path: PathBuf, message: String },
    #[error("private key {}: {message}", path.display())]
    PrivateKey { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How this process trusts control-plane servers: an optional CA bundle
/// added to the webpki roots, and whether plain `http://` to another
/// machine is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of extra trust anchors (one or more certificates).
    pub ca_file: Option<PathBuf>,
    /// Accept `http://` URLs to non-loopback hosts (an explicit opt-in).
    pub allow_insecure_http: bool,
}

impl ClientTls {
    /// A client builder trusting webpki roots plus `ca_file`.
    pub fn builder(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        client_builder(self.ca_file.as_deref())
    }

    /// A client with default settings (see [`ClientTls::builder`]).
    pub fn client(&self) -> Result<reqwest::Client, TlsError> {
        Ok(self.builder()?.build()?)
    }

    /// [`check_control_url`] with this process's opt-in, given on the
    /// command line as `--allow-insecure-http`.
    pub fn check_url(&self, url: &str, field: &str) -> Result<(), UrlError> {
        check_control_url(
            url,
            field,
            self.allow_insecure_http,
            "--allow-insecure-http",
        )
    }
}

/// The certificates of a PEM bundle, in file order. A bundle without any
/// certificate, or with a block that is not valid PEM, is refused rather
/// than silently trusting nothing more than the defaults.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::CaBundle {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not a PEM bundle: {e}")))?;
    if certs.is_empty() {
        return Err(err(
            "no certificate in it (expected `-----BEGIN CERTIFICATE-----` blocks)".into(),
        ));
    }
    Ok(certs)
}

/// The webpki roots plus the certificates of `ca_file`.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for (i, cert) in load_ca_bundle(path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|e| TlsError::CaBundle {
                path: path.to_owned(),
                message: format!("certificate {} cannot be a trust anchor: {e}", i + 1),
            })?;
        }
    }
    Ok(roots)
}

/// The ring crypto provider every TLS endpoint of the workspace uses.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration behind [`client_builder`].
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth();
    // reqwest is built for HTTP/1.1 only; it sets no ALPN on a
    // preconfigured backend, so say it here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A reqwest client builder over rustls (ring) trusting the webpki roots
/// plus the certificates of `ca_file`; callers add their timeouts.
pub fn client_builder(ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config(ca_file)?))
}

/// An error with its causes, `outer: inner: innermost`: reqwest's own
/// message ("error sending request") hides the reason (a certificate
/// from an unknown issuer, a refused connection) in its sources.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // Some layers repeat their source's message; say it once.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A control-plane URL that may not be used as configured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field} {url}: {message}")]
pub struct UrlError {
    /// The flag or configuration field that set the URL.
    pub field: String,
    pub url: String,
    pub message: String,
}

/// Checks a configured control-plane URL before anything connects to it:
/// it must be `https://`, or `http://` to a loopback host (127.0.0.0/8,
/// `::1`, `localhost`), or `http://` anywhere when `allow_insecure_http`
/// is set (the opt-in is named `opt_in` in the error). `field` names the
/// flag or configuration field, so the message says what to change.
pub fn check_control_url(
    url: &str,
    field: &str,
    allow_insecure_http: bool,
    opt_in: &str,
) -> Result<(), UrlError> {
    let fail = |message: String| UrlError {
        field: field.to_owned(),
        url: url.to_owned(),
        message,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}")))?;
    let scheme = parsed.scheme();
    if scheme != "https" && scheme != "http" {
        return Err(fail(format!(
            "the URL must start with https:// (not `{scheme}:`)"
        )));
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(fail("the URL names no host".into()));
    };
    if scheme == "https" || allow_insecure_http || is_loopback(host) {
        return Ok(());
    }
    Err(fail(format!(
        "plain http:// to another machine would carry tokens and secrets unencrypted; \
         use https:// (with --ca-file for a private CA), or set {opt_in} to accept it"
    )))
}

/// A host that is this machine: `localhost`, 127.0.0.0/8, `::1` (also
/// as an IPv4-mapped address). Names are not resolved: a name other than
/// `localhost` may point anywhere.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, allow: bool) -> Result<(), UrlError> {
        check_control_url(url, "--admin", allow, "--allow-insecure-http")
    }

    #[test]
    fn plain_http_is_refused_off_this_machine_unless_opted_in() {
        for ok in [
            "https://admin.example.com:8090",
            "https://10.0.0.5",
            "http://127.0.0.1:8090",
            "http://127.8.9.10",
            "http://[::1]:8090/",
            "http://[::ffff:127.0.0.1]:8090",
            "http://localhost:8090",
            "http://LOCALHOST.:8090",
        ] {
            assert_eq!(check(ok, false), Ok(()), "{ok}");
        }
        for refused in [
            "http://admin.invalid:8090",
            "http://10.0.0.5:8090",
            "http://[2001:db8::1]:8090",
            "http://localhost.example.com",
            "http://0.0.0.0:8090",
        ] {
            let e = check(refused, false).unwrap_err();
            assert_eq!(e.field, "--admin");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("--admin {refused}: plain http://")),
                "{text}"
            );
            assert!(text.contains("--allow-insecure-http"), "{text}");
            assert_eq!(check(refused, true), Ok(()), "{refused} with the opt-in");
        }
    }

    #[test]
    fn malformed_urls_and_other_schemes_are_refused() {
        let e = check("admin:8090", true).unwrap_err();
        assert!(e.message.contains("must start with https://"), "{e}");
        assert!(check("ftp://admin.example.com", true).is_err());
        assert!(
            check("not a url", true)
                .unwrap_err()
                .message
                .starts_with("not a URL")
        );
        assert!(check("file:///etc/passwd", true).is_err());
    }

    /// A self-signed CA made once per test run with `openssl` (the e2e
    /// tests make their certificates the same way).
    fn openssl_ca(dir: &Path, name: &str) -> PathBuf {
        let out = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.pem")))
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join(format!("{name}.pem"))
    }

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pc-net-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_bundle_of_several_certificates_adds_them_all_to_the_webpki_roots() {
        let dir = temp_dir();
        let a = std::fs::read_to_string(openssl_ca(&dir, "ca-one")).unwrap();
        let b = std::fs::read_to_string(openssl_ca(&dir, "ca-two")).unwrap();
        let bundle = dir.join("bundle.pem");
        // Comments between blocks are common in bundles and allowed.
        std::fs::write(&bundle, format!("# first\n{a}\n# second\n{b}")).unwrap();
        assert_eq!(load_ca_bundle(&bundle).unwrap().len(), 2);
        let webpki = root_store(None).unwrap().len();
        assert!(webpki > 100, "webpki roots: {webpki}");
        assert_eq!(root_store(Some(&bundle)).unwrap().len(), webpki + 2);
        client_builder(Some(&bundle)).unwrap().build().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unusable_bundles_are_refused_naming_the_file() {
        let dir = temp_dir();
        let missing = dir.join("missing.pem");
        let e = load_ca_bundle(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("CA bundle {}:", missing.display())),
            "{e}"
        );

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = load_ca_bundle(&empty).unwrap_err().to_string();
        assert!(e.contains("no certificate in it"), "{e}");

        // A key is not a certificate: it is skipped, and nothing is left.
        let ca = openssl_ca(&dir, "ca-key-only");
        let key = ca.with_extension("key");
        assert!(
            load_ca_bundle(&key)
                .unwrap_err()
                .to_string()
                .contains("no certificate")
        );

        // A certificate block whose contents are not a certificate.
        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = root_store(Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("certificate 1 cannot be a trust anchor"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
