//! Provider credentials the gateway fetches and refreshes itself (a
//! provider's `auth:`): an Entra ID access token (Azure OpenAI), AWS keys
//! from the SDK's default credential chain (Bedrock), a Google OAuth2
//! token for a service account (Gemini on Vertex AI).
//!
//! Each provider's credential lives in a [`Cell`]. Requests only read the
//! cell (one atomic load, never a wait): the `provider-auth` background
//! service fetches the first credential as soon as the gateway starts and
//! refreshes it ahead of its expiry. A failed refresh is counted
//! (`portcullis_provider_auth_refresh_total{outcome="error"}`), logged at
//! WARN and retried with a growing back-off while the previous credential,
//! still valid, keeps serving; once nothing valid is held, requests get a
//! 503 naming the provider and the reason.
//!
//! Cells are shared: every route of a provider reads the same one, and a
//! reloaded configuration whose provider authenticates alike takes over
//! the running cell (the same fingerprint), so a reload neither refetches
//! nor leaves requests without a credential while the new one would be
//! fetched.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use portcullis_formats::providers::sigv4::uri_encode;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, ProviderAuthFile, ProviderFile, ProviderKind, cfg_err};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::providers::{AwsCredentials, CredentialSource, LiveCredential, Secret};

/// Entra ID's public authority.
const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The scope of Azure OpenAI (Azure AI services) tokens.
const ENTRA_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// The scope Vertex AI accepts.
const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long one fetch may take before it counts as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the refresher looks for cells that are due.
const TICK: Duration = Duration::from_millis(200);
/// A refresh starts this long before expiry at most; for short lifetimes,
/// at 80% of the lifetime.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// When a credential without expiry (long-term AWS keys) is read again.
const NO_EXPIRY_RECHECK: Duration = Duration::from_secs(3600);
/// The longest wait between retries of a failing fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A fetched credential and when it stops being valid.
struct Held {
    secret: Arc<Secret>,
    expires: Option<SystemTime>,
}

/// One provider's fetched credential.
pub struct Cell {
    provider: String,
    fingerprint: String,
    fetcher: Fetcher,
    held: ArcSwapOption<Held>,
    last_error: ArcSwapOption<String>,
    /// When the next fetch is due, in Unix milliseconds (0: now).
    due_ms: AtomicU64,
    failures: AtomicU32,
    /// A fetch is under way.
    busy: AtomicBool,
}

impl CredentialSource for Cell {
    fn current(&self) -> Result<Arc<Secret>, GatewayError> {
        let why = || {
            self.last_error
                .load_full()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "its first fetch has not finished yet".to_owned())
        };
        match self.held.load_full() {
            Some(h) if h.expires.is_none_or(|e| e > SystemTime::now()) => Ok(h.secret.clone()),
            Some(_) => Err(GatewayError::provider_auth(
                &self.provider,
                format!("its credential expired and was not refreshed ({})", why()),
            )),
            None => Err(GatewayError::provider_auth(&self.provider, why())),
        }
    }
}

/// Every cell alive, for the refresher and for reloads to find.
static CELLS: Mutex<Vec<Weak<Cell>>> = Mutex::new(Vec::new());

fn alive_cells() -> Vec<Arc<Cell>> {
    let mut cells = CELLS.lock().unwrap_or_else(|p| p.into_inner());
    cells.retain(|w| w.strong_count() > 0);
    cells.iter().filter_map(Weak::upgrade).collect()
}

/// The cell of provider `prov` (`providers[i]`), validated from its
/// `auth:`; `None` when it has none. A cell of the same provider with the
/// same settings and secrets is reused.
pub fn live_credential(
    prov: &ProviderFile,
    prov_i: usize,
    env: &dyn Fn(&str) -> Option<String>,
    egress: &[String],
) -> Result<Option<LiveCredential>, ConfigError> {
    // Token endpoints are egress like the provider: an allow-list covers
    // them too (the AWS chain's own defaults are the SDK's to pick).
    let check_http_url = |url: &str, field: &str| check_http_url(url, field, egress);
    let Some(auth) = &prov.auth else {
        return Ok(None);
    };
    let pat = |field: &str| format!("providers[{prov_i}].auth.{field}");
    let wanted = match (auth, prov.kind) {
        (ProviderAuthFile::Entra { .. }, ProviderKind::AzureOpenai)
        | (ProviderAuthFile::Aws { .. }, ProviderKind::Bedrock)
        | (ProviderAuthFile::GoogleServiceAccount { .. }, ProviderKind::Gemini) => true,
        _ => false,
    };
    if !wanted {
        return Err(cfg_err(
            pat("type"),
            format!(
                "`{}` does not authenticate provider type `{}` (entra: azure-openai, aws: bedrock, google-service-account: gemini)",
                auth.label(),
                prov.kind.label()
            ),
        ));
    }
    if prov.api_key.is_some() || prov.api_key_env.is_some() {
        return Err(cfg_err(
            format!("providers[{prov_i}].auth"),
            "set auth or an API key (api_key, api_key_env), not both",
        ));
    }
    let (fetcher, secret_part) = match auth {
        ProviderAuthFile::Entra {
            tenant_id,
            client_id,
            client_secret_env,
            client_secret,
            authority_url,
            scope,
        } => {
            let secret = match (client_secret_env, client_secret) {
                (Some(var), None) => env(var).ok_or_else(|| {
                    cfg_err(
                        pat("client_secret_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?,
                (None, Some(s)) => s.clone(),
                _ => {
                    return Err(cfg_err(
                        pat("client_secret_env"),
                        "set exactly one of client_secret_env or client_secret",
                    ));
                }
            };
            for (field, v) in [("tenant_id", tenant_id), ("client_id", client_id)] {
                if v.trim().is_empty() {
                    return Err(cfg_err(pat(field), "must not be empty"));
                }
            }
            let authority = authority_url
                .as_deref()
                .unwrap_or(ENTRA_AUTHORITY)
                .trim_end_matches('/');
            check_http_url(authority, &pat("authority_url"))?;
            let http = portcullis_net::client_builder(None)
                .and_then(|b| Ok(b.timeout(FETCH_TIMEOUT).build()?))
                .map_err(|e| cfg_err(pat("authority_url"), e.to_string()))?;
            (
                Fetcher::Entra(Entra {
                    url: format!(
                        "{authority}/{}/oauth2/v2.0/token",
                        uri_encode(tenant_id, true)
                    ),
                    client_id: client_id.clone(),
                    client_secret: secret.clone(),
                    scope: scope.clone().unwrap_or_else(|| ENTRA_SCOPE.to_owned()),
                    http,
                }),
                secret,
            )
        }
        ProviderAuthFile::Aws {
            profile,
            role_arn,
            role_session_name,
            external_id,
            sts_endpoint,
            imds_endpoint,
        } => {
            let region = prov.region.clone().ok_or_else(|| {
                cfg_err(
                    format!("providers[{prov_i}].region"),
                    "required for bedrock",
                )
            })?;
            if let Some(u) = sts_endpoint {
                check_http_url(u, &pat("sts_endpoint"))?;
            }
            if let Some(u) = imds_endpoint {
                check_http_url(u, &pat("imds_endpoint"))?;
            }
            if role_arn.is_none() && (role_session_name.is_some() || external_id.is_some()) {
                return Err(cfg_err(
                    pat("role_arn"),
                    "role_session_name and external_id need a role_arn to assume",
                ));
            }
            (
                Fetcher::Aws(AwsChain {
                    region,
                    profile: profile.clone(),
                    role_arn: role_arn.clone(),
                    role_session_name: role_session_name.clone(),
                    external_id: external_id.clone(),
                    sts_endpoint: sts_endpoint.clone(),
                    imds_endpoint: imds_endpoint.clone(),
                    chain: tokio::sync::OnceCell::new(),
                }),
                String::new(),
            )
        }
        ProviderAuthFile::GoogleServiceAccount {
            credentials_file,
            credentials_env,
            credentials_json,
            token_uri,
        } => {
            let (field, text) = match (credentials_file, credentials_env, credentials_json) {
                (Some(f), None, None) => (
                    "credentials_file",
                    std::fs::read_to_string(f)
                        .map_err(|e| cfg_err(pat("credentials_file"), format!("{f}: {e}")))?,
                ),
                (None, Some(var), None) => (
                    "credentials_env",
                    env(var).ok_or_else(|| {
                        cfg_err(
                            pat("credentials_env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?,
                ),
                (None, None, Some(j)) => ("credentials_json", j.clone()),
                _ => {
                    return Err(cfg_err(
                        pat("credentials_file"),
                        "set exactly one of credentials_file, credentials_env or credentials_json",
                    ));
                }
            };
            let (key, uri) =
                google_key(&text, token_uri.as_deref()).map_err(|m| cfg_err(pat(field), m))?;
            let at = if token_uri.is_some() {
                "token_uri"
            } else {
                field
            };
            check_http_url(&uri, &pat(at))?;
            (
                Fetcher::Google(Google {
                    key: key.clone(),
                    token_uri: uri,
                }),
                key,
            )
        }
    };
    // The fingerprint covers what the credential is fetched with, secrets
    // included (hashed), so a reload with a new secret gets a new cell.
    let fingerprint = hex::encode(Sha256::digest(format!(
        "{}\0{:?}\0{:?}\0{secret_part}",
        prov.name, auth, prov.region
    )));
    Ok(Some(LiveCredential(cell(&prov.name, fingerprint, fetcher))))
}

/// A service account key's JSON, checked (a service account, a private
/// key the signer takes), with its `token_uri` replaced when configured.
fn google_key(text: &str, token_uri: Option<&str>) -> Result<(String, String), String> {
    let mut key: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a service account key (JSON): {e}"))?;
    if key["type"] != "service_account" {
        return Err("not a service account key (`type` is not `service_account`)".to_owned());
    }
    if let Some(u) = token_uri {
        key["token_uri"] = serde_json::Value::String(u.to_owned());
    }
    let uri = key["token_uri"].as_str().unwrap_or_default().to_owned();
    let key = key.to_string();
    gcp_auth::CustomServiceAccount::from_json(&key).map_err(|e| {
        format!(
            "unusable service account key: {}",
            portcullis_net::error_chain(&e)
        )
    })?;
    Ok((key, uri))
}

fn check_http_url(url: &str, field: &str, egress: &[String]) -> Result<(), ConfigError> {
    let Some((_, host, port)) = crate::config::url_origin(url) else {
        return Err(cfg_err(field, "must be an http:// or https:// URL"));
    };
    if !egress.is_empty() && !crate::config::egress_allows(egress, &host, port) {
        return Err(cfg_err(
            field,
            format!(
                "{host}:{port} is not in the gateway's egress allow-list ({})",
                egress.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The alive cell with `fingerprint`, or a new one.
fn cell(provider: &str, fingerprint: String, fetcher: Fetcher) -> Arc<Cell> {
    let mut cells = CELLS.lock().unwrap_or_else(|p| p.into_inner());
    cells.retain(|w| w.strong_count() > 0);
    if let Some(c) = cells
        .iter()
        .filter_map(Weak::upgrade)
        .find(|c| c.fingerprint == fingerprint)
    {
        return c;
    }
    let c = Arc::new(Cell {
        provider: provider.to_owned(),
        fingerprint,
        fetcher,
        held: ArcSwapOption::empty(),
        last_error: ArcSwapOption::empty(),
        due_ms: AtomicU64::new(0),
        failures: AtomicU32::new(0),
        busy: AtomicBool::new(false),
    });
    cells.push(Arc::downgrade(&c));
    c
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// When to refresh a credential fetched at `now` that expires at
/// `expires`: 5 minutes before expiry, or at 80% of a shorter lifetime.
fn refresh_at(now: SystemTime, expires: Option<SystemTime>) -> SystemTime {
    let Some(expires) = expires else {
        return now + NO_EXPIRY_RECHECK;
    };
    let life = expires.duration_since(now).unwrap_or_default();
    let ahead = REFRESH_AHEAD.min(life / 5);
    now + (life - ahead).max(Duration::from_millis(500))
}

/// The wait before retry `n` (from 1) of a failing fetch: 1 s, doubling,
/// at most `MAX_BACKOFF`.
fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

/// The `provider-auth` background service: fetches every cell's
/// credential when due, each fetch in its own task so a slow token
/// endpoint delays no other provider.
pub async fn refresher(metrics: Arc<Metrics>) {
    loop {
        let now = unix_ms(SystemTime::now());
        for c in alive_cells() {
            if c.due_ms.load(Ordering::Acquire) <= now && !c.busy.swap(true, Ordering::AcqRel) {
                tokio::spawn(refresh(c, metrics.clone()));
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn refresh(c: Arc<Cell>, metrics: Arc<Metrics>) {
    let got = match tokio::time::timeout(FETCH_TIMEOUT, c.fetcher.fetch()).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())),
    };
    let now = SystemTime::now();
    match got {
        Ok((secret, expires)) => {
            c.held.store(Some(Arc::new(Held {
                secret: Arc::new(secret),
                expires,
            })));
            c.last_error.store(None);
            c.failures.store(0, Ordering::Release);
            c.due_ms
                .store(unix_ms(refresh_at(now, expires)), Ordering::Release);
            metrics
                .auth_refresh
                .with_label_values(&[c.provider.as_str(), "ok"])
                .inc();
            if let Some(e) = expires {
                metrics
                    .auth_expiry
                    .with_label_values(&[c.provider.as_str()])
                    .set(unix_ms(e) as f64 / 1000.0);
            }
            tracing::info!(provider = %c.provider, expires_in_s = expires.and_then(|e| e.duration_since(now).ok()).map(|d| d.as_secs()), "provider credential refreshed");
        }
        Err(reason) => {
            let n = c.failures.fetch_add(1, Ordering::AcqRel) + 1;
            let retry = backoff(n);
            let still_valid = c
                .held
                .load()
                .as_ref()
                .is_some_and(|h| h.expires.is_none_or(|e| e > now));
            c.last_error.store(Some(Arc::new(reason.clone())));
            c.due_ms.store(unix_ms(now + retry), Ordering::Release);
            metrics
                .auth_refresh
                .with_label_values(&[c.provider.as_str(), "error"])
                .inc();
            tracing::warn!(
                provider = %c.provider,
                reason = %reason,
                attempt = n,
                retry_in_ms = retry.as_millis() as u64,
                still_valid,
                "provider credential refresh failed"
            );
        }
    }
    c.busy.store(false, Ordering::Release);
}

/// How a cell fetches its credential.
enum Fetcher {
    Entra(Entra),
    Aws(AwsChain),
    Google(Google),
}

impl Fetcher {
    async fn fetch(&self) -> Result<(Secret, Option<SystemTime>), String> {
        match self {
            Fetcher::Entra(e) => e.fetch().await,
            Fetcher::Aws(a) => a.fetch().await,
            Fetcher::Google(g) => g.fetch().await,
        }
    }
}

/// A Google service account's OAuth2 JWT-bearer exchange, by `gcp_auth`.
struct Google {
    /// The key's JSON (its `token_uri` possibly replaced).
    key: String,
    token_uri: String,
}

impl Google {
    async fn fetch(&self) -> Result<(Secret, Option<SystemTime>), String> {
        use gcp_auth::TokenProvider;
        // A fresh account each time: gcp_auth caches a token until 20 s
        // before it expires, and this refresh runs earlier on purpose.
        let account = gcp_auth::CustomServiceAccount::from_json(&self.key)
            .map_err(|e| portcullis_net::error_chain(&e))?;
        // gcp_auth logs the endpoint's answer itself (WARN, target
        // gcp_auth); its error says only that the exchange failed.
        let token = account.token(&[GOOGLE_SCOPE]).await.map_err(|e| {
            format!(
                "token exchange at {}: {}",
                self.token_uri,
                portcullis_net::error_chain(&e)
            )
        })?;
        Ok((
            Secret::Bearer(token.as_str().to_owned()),
            Some(SystemTime::from(token.expires_at())),
        ))
    }
}

/// Entra ID's OAuth2 client credentials grant: one form POST to the
/// tenant's token endpoint. Written on the gateway's own HTTP client
/// rather than with `azure_identity` (docs/providers.md says why).
struct Entra {
    url: String,
    client_id: String,
    client_secret: String,
    scope: String,
    http: reqwest::Client,
}

impl Entra {
    async fn fetch(&self) -> Result<(Secret, Option<SystemTime>), String> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("scope", self.scope.as_str()),
        ];
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", uri_encode(v, true)))
            .collect::<Vec<_>>()
            .join("&");
        token_exchange(&self.http, &self.url, body).await
    }
}

/// An OAuth2 token endpoint's answer (RFC 6749 section 5).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    /// Seconds; Entra and Google send a number, some servers a string.
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

/// POSTs a form to an OAuth2 token endpoint; the access token and its
/// expiry, or why there is none.
async fn token_exchange(
    http: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<(Secret, Option<SystemTime>), String> {
    let resp = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {}", portcullis_net::error_chain(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("POST {url}: {}", portcullis_net::error_chain(&e)))?;
    let answer: Option<TokenAnswer> = serde_json::from_str(&text).ok();
    if !status.is_success() {
        let detail = answer
            .and_then(|a| match (a.error, a.error_description) {
                (Some(e), Some(d)) => Some(format!("{e}: {d}")),
                (e, d) => e.or(d),
            })
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(format!("token endpoint {url} answered {status}: {detail}"));
    }
    let Some(TokenAnswer {
        access_token: Some(token),
        expires_in,
        ..
    }) = answer
    else {
        return Err(format!(
            "token endpoint {url} answered without an access_token"
        ));
    };
    let secs = match expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("token endpoint {url} answered without a valid expires_in"))?;
    Ok((
        Secret::Bearer(token),
        Some(SystemTime::now() + Duration::from_secs(secs)),
    ))
}

/// The AWS SDK's default credential chain (environment, shared profile
/// files, web identity, container and instance metadata), optionally
/// assuming a role with what it found. Built on the first fetch: the
/// SDK's providers are made on a tokio runtime.
struct AwsChain {
    region: String,
    profile: Option<String>,
    role_arn: Option<String>,
    role_session_name: Option<String>,
    external_id: Option<String>,
    sts_endpoint: Option<String>,
    imds_endpoint: Option<String>,
    chain: tokio::sync::OnceCell<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl AwsChain {
    async fn fetch(&self) -> Result<(Secret, Option<SystemTime>), String> {
        use aws_credential_types::provider::ProvideCredentials;
        let chain = self.chain.get_or_try_init(|| self.build()).await?;
        let c = chain
            .provide_credentials()
            .await
            .map_err(|e| portcullis_net::error_chain(&e))?;
        Ok((
            Secret::Aws(AwsCredentials {
                access_key_id: c.access_key_id().to_owned(),
                secret_access_key: c.secret_access_key().to_owned(),
                session_token: c.session_token().map(str::to_owned),
                region: self.region.clone(),
            }),
            c.expiry(),
        ))
    }

    async fn build(
        &self,
    ) -> Result<aws_credential_types::provider::SharedCredentialsProvider, String> {
        use aws_config::default_provider::credentials::DefaultCredentialsChain;
        use aws_config::provider_config::ProviderConfig;
        use aws_config::{BehaviorVersion, Region};
        use aws_credential_types::provider::SharedCredentialsProvider;
        use aws_smithy_http_client::tls;

        // The SDK's hyper client on rustls with ring, as the rest of the
        // gateway (its default client would bring aws-lc).
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let region = Region::new(self.region.clone());
        let conf = ProviderConfig::default()
            .with_http_client(http.clone())
            .with_region(Some(region.clone()));
        let mut chain = DefaultCredentialsChain::builder().region(region.clone());
        if let Some(p) = &self.profile {
            chain = chain.profile_name(p);
        }
        if let Some(url) = &self.imds_endpoint {
            let imds = aws_config::imds::Client::builder()
                .configure(&conf)
                .endpoint(url)
                .map_err(|e| format!("imds_endpoint {url}: {e}"))?
                .build();
            chain = chain.imds_client(imds);
        }
        let chain = chain.configure(conf).build().await;
        let Some(role_arn) = &self.role_arn else {
            return Ok(SharedCredentialsProvider::new(chain));
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(region)
            .credentials_provider(chain);
        if let Some(url) = &self.sts_endpoint {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        let mut assume = aws_config::sts::AssumeRoleProvider::builder(role_arn).configure(&sdk);
        if let Some(n) = &self.role_session_name {
            assume = assume.session_name(n);
        }
        if let Some(id) = &self.external_id {
            assume = assume.external_id(id);
        }
        Ok(SharedCredentialsProvider::new(assume.build().await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_five_minutes_ahead_or_at_80_percent() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = refresh_at(now, Some(now + Duration::from_secs(3600)));
        assert_eq!(hour.duration_since(now).unwrap(), Duration::from_secs(3300));
        let short = refresh_at(now, Some(now + Duration::from_secs(10)));
        assert_eq!(short.duration_since(now).unwrap(), Duration::from_secs(8));
        // An already expired answer is retried soon, not in the past.
        let past = refresh_at(now, Some(now - Duration::from_secs(10)));
        assert_eq!(
            past.duration_since(now).unwrap(),
            Duration::from_millis(500)
        );
        let none = refresh_at(now, None);
        assert_eq!(none.duration_since(now).unwrap(), NO_EXPIRY_RECHECK);
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    fn entra_provider(secret_env: &str) -> ProviderFile {
        let yaml = format!(
            "{{name: az, type: azure-openai, base_url: 'http://127.0.0.1:9', auth: {{type: entra, tenant_id: t1, client_id: c1, client_secret_env: {secret_env}, authority_url: 'http://127.0.0.1:9'}}}}"
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    #[test]
    fn one_cell_per_provider_and_secret() {
        let env = |v: &str| (v == "S1").then(|| "secret-1".to_owned());
        let env2 = |v: &str| (v == "S1").then(|| "secret-2".to_owned());
        let a = live_credential(&entra_provider("S1"), 0, &env, &[])
            .unwrap()
            .unwrap();
        let b = live_credential(&entra_provider("S1"), 0, &env, &[])
            .unwrap()
            .unwrap();
        assert_eq!(a, b, "the same settings share a cell (routes, reloads)");
        let c = live_credential(&entra_provider("S1"), 0, &env2, &[])
            .unwrap()
            .unwrap();
        assert_ne!(a, c, "a new secret is a new cell");
        let err = a.bearer().unwrap_err();
        assert_eq!(err.status, 503);
        assert!(err.message.contains("`az`"), "{}", err.message);
        assert!(err.message.contains("first fetch"), "{}", err.message);
    }

    #[test]
    fn auth_errors_name_the_field() {
        let env = |_: &str| None;
        let e = live_credential(&entra_provider("MISSING"), 3, &env, &[]).unwrap_err();
        assert_eq!(e.path, "providers[3].auth.client_secret_env");
        let set = |_: &str| Some("s".to_owned());
        let e = live_credential(&entra_provider("S"), 0, &set, &["api.example.com".into()])
            .unwrap_err();
        assert_eq!(e.path, "providers[0].auth.authority_url");
        assert!(e.message.contains("egress allow-list"), "{}", e.message);
        let wrong: ProviderFile = serde_yaml::from_str(
            "{name: o, type: openai, auth: {type: entra, tenant_id: t, client_id: c, client_secret: s}}",
        )
        .unwrap();
        let e = live_credential(&wrong, 0, &env, &[]).unwrap_err();
        assert_eq!(e.path, "providers[0].auth.type");
        let both: ProviderFile = serde_yaml::from_str(
            "{name: b, type: bedrock, region: us-east-1, api_key: k, auth: {type: aws}}",
        )
        .unwrap();
        assert_eq!(
            live_credential(&both, 1, &env, &[]).unwrap_err().path,
            "providers[1].auth"
        );
        let no_role: ProviderFile = serde_yaml::from_str(
            "{name: b, type: bedrock, region: us-east-1, auth: {type: aws, external_id: x}}",
        )
        .unwrap();
        assert_eq!(
            live_credential(&no_role, 0, &env, &[]).unwrap_err().path,
            "providers[0].auth.role_arn"
        );
    }

    #[test]
    fn expired_credential_is_a_clear_error() {
        let env = |_: &str| Some("s".to_owned());
        let live = live_credential(&entra_provider("X"), 0, &env, &[])
            .unwrap()
            .unwrap();
        let cell = alive_cells()
            .into_iter()
            .find(|c| {
                std::ptr::eq(
                    Arc::as_ptr(c) as *const (),
                    Arc::as_ptr(&live.0) as *const (),
                )
            })
            .unwrap();
        cell.held.store(Some(Arc::new(Held {
            secret: Arc::new(Secret::Bearer("tok".into())),
            expires: Some(SystemTime::now() + Duration::from_secs(60)),
        })));
        assert_eq!(live.bearer().unwrap(), "tok");
        cell.last_error
            .store(Some(Arc::new("token endpoint answered 500".into())));
        cell.held.store(Some(Arc::new(Held {
            secret: Arc::new(Secret::Bearer("tok".into())),
            expires: Some(SystemTime::now() - Duration::from_secs(1)),
        })));
        let err = live.bearer().unwrap_err();
        assert!(err.message.contains("expired"), "{}", err.message);
        assert!(err.message.contains("answered 500"), "{}", err.message);
    }
}
