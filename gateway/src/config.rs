//! The gateway configuration: the declarative file (`portcullis gateway
//! --config FILE`) and the validated runtime form built from it.
//!
//! The file is parsed into serde structs that reject unknown fields, then
//! turned into internal structs where everything a request needs is ready:
//! provider adapters built, upstream addresses resolved, keys hashed,
//! model lists computed. Nothing here is parsed again per request.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::providers::{self, AwsCredentials, Provider, ProviderSettings};

/// A configuration error, naming the field that is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where in the file, e.g. `proxies[0].routes[1].provider`.
    pub path: String,
    pub message: String,
}

fn cfg_err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

pub use portcullis_types::gateway_config::*;

// ------------------------------------------------------------ the runtime

/// Everything the data path needs, built once per configuration.
pub struct Runtime {
    /// Proxies by normalised context (base path).
    pub proxies: HashMap<String, Arc<Proxy>>,
    pub listen: String,
    pub ops_listen: String,
    pub tls: Option<TlsFile>,
    pub max_body_bytes: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub client_body_timeout: Duration,
    pub telemetry: Telemetry,
}

/// Validated telemetry settings.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    pub key_label: bool,
    /// Where spans go: the collector's `/v1/traces` URL, parsed.
    pub otlp: Option<OtlpTarget>,
    pub service_name: String,
}

/// An OTLP/HTTP collector endpoint.
#[derive(Debug, Clone)]
pub struct OtlpTarget {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Path of the traces endpoint, e.g. `/v1/traces`.
    pub path: String,
}

/// A validated proxy.
pub struct Proxy {
    pub id: String,
    pub name: String,
    pub context: String,
    pub inbound: HashSet<InboundKind>,
    pub resources: HashSet<Resource>,
    pub track_stream_tokens: bool,
    /// API keys by SHA-256.
    pub keys: HashMap<[u8; 32], crate::key_usage::KeyEntry>,
    pub routes: Vec<Route>,
    /// Model ids listed by `GET /models`, without the proxy prefix.
    pub models: Vec<String>,
    /// How requests pick a route, route health and the retry budget.
    pub routing: crate::routing::RoutingTable,
    /// The proxy's policy chain, if it attaches policies.
    pub policies: Option<Arc<crate::policy::Chain>>,
}

/// A validated route.
pub struct Route {
    /// `provider` or `provider/model`; shown in `x-portcullis-route`.
    pub name: String,
    pub provider_name: String,
    pub provider: Arc<dyn Provider>,
    pub kind: ProviderKind,
    pub upstream: Upstream,
    pub target_model: Option<String>,
    pub key: KeySource,
    /// Models the provider declares (empty: any model is passed on).
    pub models: Vec<String>,
}

/// Where a route's provider key comes from.
#[derive(Clone)]
pub enum KeySource {
    None,
    Static(String),
    Header(http::HeaderName),
}

impl Upstream {
    /// The address to connect to. Host names are resolved asynchronously on
    /// first use and the answer is reused for `DNS_TTL`, so no request
    /// blocks on DNS, a provider whose DNS is down at start-up does not
    /// stop the gateway from starting, and DNS changes are followed. If a
    /// refresh fails, the last good answer is kept.
    pub async fn addr(&self) -> Result<SocketAddr, GatewayError> {
        if let Some(a) = self.literal {
            return Ok(a);
        }
        let cached = self.resolved.read().ok().and_then(|g| *g);
        if let Some((a, at)) = cached {
            if at.elapsed() < DNS_TTL {
                return Ok(a);
            }
        }
        let looked_up = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .ok()
            .and_then(|mut it| it.next());
        match (looked_up, cached) {
            (Some(a), _) => {
                if let Ok(mut g) = self.resolved.write() {
                    *g = Some((a, Instant::now()));
                }
                Ok(a)
            }
            (None, Some((a, _))) => Ok(a),
            (None, None) => Err(GatewayError::upstream_connect(format!(
                "could not resolve the provider host {}",
                self.host
            ))),
        }
    }
}

impl Runtime {
    /// The Pingora peer for a route, with this configuration's timeouts.
    pub async fn peer(
        &self,
        route: &Route,
    ) -> Result<pingora::upstreams::peer::HttpPeer, GatewayError> {
        let u = &route.upstream;
        let addr = u.addr().await?;
        let mut peer = pingora::upstreams::peer::HttpPeer::new(addr, u.tls, u.sni.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.write_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if let Some(ca) = &u.ca {
            peer.options.ca = Some(ca.clone());
        }
        Ok(peer)
    }
}

/// How long a DNS answer for a provider is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

/// A provider endpoint.
#[derive(Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// The address when the host is an IP literal.
    literal: Option<SocketAddr>,
    /// The last DNS answer and when it was obtained, shared by all requests.
    resolved: Arc<RwLock<Option<(SocketAddr, Instant)>>>,
    pub tls: bool,
    /// Host name for SNI and certificate verification.
    pub sni: String,
    /// `host[:port]` for the Host header.
    pub host_header: String,
    /// A custom CA to verify the provider against, when configured.
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
}

/// SHA-256 of an API key, as stored.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The id a name gets: lowercase, runs of other characters become one hyphen.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    let mut hyphen = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if hyphen && !out.is_empty() {
                out.push('-');
            }
            hyphen = false;
            out.push(c.to_ascii_lowercase());
        } else {
            hyphen = true;
        }
    }
    out
}

/// A base path with a leading `/` and no trailing `/` (`/` stays `/`).
pub fn normalise_context(context: &str) -> String {
    let trimmed = context.trim().trim_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Parses a YAML file, naming the field at fault.
pub fn parse_file(text: &str) -> Result<FileConfig, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.into_inner().to_string();
        // serde_yaml puts the path in its message too; say it once.
        if let Some(rest) = message.strip_prefix(&format!("{path}: ")) {
            message = rest.to_owned();
        }
        cfg_err(if path == "." { "(file)".into() } else { path }, message)
    })
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Runtime, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| cfg_err(path.display().to_string(), format!("cannot read: {e}")))?;
    let mut file = parse_file(&text)?;
    crate::routing::rebase_files(&mut file, path);
    build_runtime(&file, &|name| std::env::var(name).ok())
}

/// Validates a parsed file into the runtime form. `env` reads environment
/// variables (a parameter so tests need not touch the process environment).
pub fn build_runtime(
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Runtime, ConfigError> {
    let mut providers_by_name: HashMap<&str, (usize, &ProviderFile)> = HashMap::new();
    for (i, p) in file.providers.iter().enumerate() {
        if providers_by_name.insert(p.name.as_str(), (i, p)).is_some() {
            return Err(cfg_err(
                format!("providers[{i}].name"),
                format!("duplicate provider `{}`", p.name),
            ));
        }
        if p.api_key_env.is_some() && p.api_key.is_some() {
            return Err(cfg_err(
                format!("providers[{i}]"),
                "set api_key_env or api_key, not both",
            ));
        }
    }

    let mut proxies = HashMap::new();
    // Created when the first proxy attaches a policy, shared by all.
    let mut policy_engine = None;
    let mut ids = HashSet::new();
    for (pi, pf) in file.proxies.iter().enumerate() {
        let at = |field: &str| format!("proxies[{pi}].{field}");
        let id = match &pf.id {
            Some(id) => {
                if slugify(id) != *id {
                    return Err(cfg_err(
                        at("id"),
                        "must be lowercase letters, digits and single hyphens",
                    ));
                }
                id.clone()
            }
            None => slugify(&pf.name),
        };
        if id.is_empty() {
            return Err(cfg_err(at("name"), "must contain a letter or digit"));
        }
        if !ids.insert(id.clone()) {
            return Err(cfg_err(at("id"), format!("duplicate proxy id `{id}`")));
        }
        let context = normalise_context(pf.context.as_deref().unwrap_or(&id));
        if proxies.contains_key(&context) {
            return Err(cfg_err(
                at("context"),
                format!("another proxy already uses base path `{context}`"),
            ));
        }
        if pf.routes.is_empty() {
            return Err(cfg_err(at("routes"), "a proxy needs at least one route"));
        }
        let mut routes = Vec::new();
        for (ri, rf) in pf.routes.iter().enumerate() {
            let rat = |field: &str| format!("proxies[{pi}].routes[{ri}].{field}");
            let Some((prov_i, prov)) = providers_by_name.get(rf.provider.as_str()).copied() else {
                return Err(cfg_err(
                    rat("provider"),
                    format!("no provider named `{}`", rf.provider),
                ));
            };
            routes.push(build_route(rf, prov, prov_i, &rat, env)?);
        }
        let routing = crate::routing::build(pi, pf, &routes, &file.providers, env)?;
        let mut keys = HashMap::new();
        for (ki, kf) in pf.keys.iter().enumerate() {
            let kat = format!("proxies[{pi}].keys[{ki}]");
            let hash = match (&kf.sha256, &kf.env) {
                (Some(hex_hash), None) => {
                    let bytes = hex::decode(hex_hash.trim())
                        .ok()
                        .filter(|b| b.len() == 32)
                        .ok_or_else(|| cfg_err(format!("{kat}.sha256"), "must be 64 hex digits"))?;
                    let mut h = [0u8; 32];
                    h.copy_from_slice(&bytes);
                    h
                }
                (None, Some(var)) => {
                    let key = env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                        cfg_err(
                            format!("{kat}.env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?;
                    hash_key(&key)
                }
                _ => return Err(cfg_err(kat, "set exactly one of sha256 or env")),
            };
            keys.insert(
                hash,
                crate::key_usage::KeyEntry::new(Arc::from(kf.name.as_str())),
            );
        }
        let mut models = Vec::new();
        for r in &routes {
            match &r.target_model {
                Some(m) => models.push(m.clone()),
                None => models.extend(r.models.iter().cloned()),
            }
        }
        let mut seen = HashSet::new();
        models.extend(routing.listed_aliases().cloned());
        models.retain(|m| seen.insert(m.clone()));
        let inbound = pf
            .inbound
            .clone()
            .unwrap_or_else(|| vec![InboundKind::Openai])
            .into_iter()
            .collect();
        let resources = pf
            .resources
            .clone()
            .unwrap_or_else(|| {
                vec![
                    Resource::ChatCompletions,
                    Resource::Embeddings,
                    Resource::Models,
                ]
            })
            .into_iter()
            .collect();
        proxies.insert(
            context.clone(),
            Arc::new(Proxy {
                id,
                name: pf.name.clone(),
                context,
                inbound,
                resources,
                track_stream_tokens: pf.track_stream_tokens.unwrap_or(true),
                keys,
                routes,
                models,
                routing,
                policies: crate::policy::chain_for_proxy(&mut policy_engine, file, pi, pf, env)?,
            }),
        );
    }

    let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
    Ok(Runtime {
        proxies,
        listen: file.listen.clone().unwrap_or_else(|| "0.0.0.0:8080".into()),
        ops_listen: file
            .ops_listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8081".into()),
        tls: file.tls.clone(),
        max_body_bytes: file.limits.max_body_bytes.unwrap_or(10 * 1024 * 1024),
        connect_timeout: ms(file.timeouts.connect_ms, 5_000),
        read_timeout: ms(file.timeouts.read_ms, 120_000),
        client_body_timeout: ms(file.timeouts.client_body_ms, 30_000),
        telemetry: build_telemetry(&file.telemetry)?,
    })
}

pub(crate) fn build_route(
    rf: &RouteFile,
    prov: &ProviderFile,
    prov_i: usize,
    rat: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Route, ConfigError> {
    let pat = |field: &str| format!("providers[{prov_i}].{field}");
    let region = prov.region.clone();
    let base_url = match (&rf.base_url, &prov.base_url) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => match (prov.kind, &region) {
            (ProviderKind::Bedrock, Some(r)) => {
                format!("https://bedrock-runtime.{r}.amazonaws.com")
            }
            (kind, _) => kind.default_base_url().map(str::to_owned).ok_or_else(|| {
                cfg_err(
                    pat("base_url"),
                    format!("required for provider type `{}`", kind.label()),
                )
            })?,
        },
    };
    let base_at = if rf.base_url.is_some() {
        rat("base_url")
    } else {
        pat("base_url")
    };
    let (upstream, base_path) =
        parse_base_url(&base_url, prov.ca_file.as_deref()).map_err(|m| cfg_err(base_at, m))?;

    let provider_key = match (&prov.api_key_env, &prov.api_key) {
        (Some(var), _) => Some(env(var).ok_or_else(|| {
            cfg_err(
                pat("api_key_env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, Some(k)) => Some(k.clone()),
        (None, None) => None,
    };
    let key = match &rf.api_key {
        Some(KeySourceFile {
            env: Some(var),
            header: None,
        }) => KeySource::Static(env(var).ok_or_else(|| {
            cfg_err(
                rat("api_key.env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        Some(KeySourceFile {
            env: None,
            header: Some(h),
        }) => KeySource::Header(
            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| cfg_err(rat("api_key.header"), "not a valid header name"))?,
        ),
        Some(_) => return Err(cfg_err(rat("api_key"), "set exactly one of env or header")),
        None => provider_key
            .map(KeySource::Static)
            .unwrap_or(KeySource::None),
    };
    let aws = if prov.kind == ProviderKind::Bedrock {
        let region = region.ok_or_else(|| cfg_err(pat("region"), "required for bedrock"))?;
        let var = |field: &str,
                   given: &Option<String>,
                   default: &str|
         -> Result<Option<String>, ConfigError> {
            let name = given.clone().unwrap_or_else(|| default.to_owned());
            match env(&name) {
                Some(v) => Ok(Some(v)),
                None if field == "aws_session_token_env" => Ok(None),
                None => Err(cfg_err(
                    pat(field),
                    format!("environment variable {name} is not set"),
                )),
            }
        };
        Some(AwsCredentials {
            access_key_id: var(
                "aws_access_key_id_env",
                &prov.aws_access_key_id_env,
                "AWS_ACCESS_KEY_ID",
            )?
            .unwrap_or_default(),
            secret_access_key: var(
                "aws_secret_access_key_env",
                &prov.aws_secret_access_key_env,
                "AWS_SECRET_ACCESS_KEY",
            )?
            .unwrap_or_default(),
            session_token: var(
                "aws_session_token_env",
                &prov.aws_session_token_env,
                "AWS_SESSION_TOKEN",
            )?,
            region,
        })
    } else {
        None
    };
    if prov.kind == ProviderKind::AzureOpenai && rf.model.is_none() && prov.models.is_empty() {
        return Err(cfg_err(
            rat("model"),
            "azure-openai routes need a target model (the deployment name) or provider models",
        ));
    }
    let settings = ProviderSettings {
        base_path,
        host: upstream.host_header.clone(),
        api_version: prov.api_version.clone(),
        anthropic_version: prov.anthropic_version.clone(),
        default_max_tokens: prov.default_max_tokens.unwrap_or(4096),
        aws,
    };
    Ok(Route {
        name: match (&rf.name, &rf.model) {
            (Some(n), _) => n.clone(),
            (None, Some(m)) => format!("{}/{m}", prov.name),
            (None, None) => prov.name.clone(),
        },
        provider_name: prov.name.clone(),
        provider: providers::build(prov.kind, settings),
        kind: prov.kind,
        upstream,
        target_model: rf.model.clone(),
        key,
        models: rf.models.clone().unwrap_or_else(|| prov.models.clone()),
    })
}

fn build_telemetry(t: &TelemetryFile) -> Result<Telemetry, ConfigError> {
    let otlp = match &t.otlp_endpoint {
        None => None,
        Some(url) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| cfg_err("telemetry.otlp_endpoint", format!("not a URL: {e}")))?;
            let tls = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => {
                    return Err(cfg_err(
                        "telemetry.otlp_endpoint",
                        "must start with http:// or https://",
                    ));
                }
            };
            let host = uri
                .host()
                .ok_or_else(|| cfg_err("telemetry.otlp_endpoint", "has no host"))?
                .trim_matches(['[', ']'])
                .to_owned();
            Some(OtlpTarget {
                port: uri.port_u16().unwrap_or(if tls { 443 } else { 4318 }),
                host,
                tls,
                path: format!("{}/v1/traces", uri.path().trim_end_matches('/')),
            })
        }
    };
    Ok(Telemetry {
        key_label: t.key_label.unwrap_or(false),
        otlp,
        service_name: t
            .service_name
            .clone()
            .unwrap_or_else(|| "portcullis-gateway".into()),
    })
}

/// Splits a base URL into a resolved upstream and its path prefix.
fn parse_base_url(url: &str, ca_file: Option<&str>) -> Result<(Upstream, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with http:// or https://".into()),
    };
    let host = uri.host().ok_or("has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare_host = host.trim_matches(['[', ']']).to_owned();
    let literal = bare_host
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port));
    let host_header = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let ca = match ca_file {
        Some(path) => {
            let der = pingora::tls::load_pem_file_ca(&path.to_owned())
                .map_err(|e| format!("cannot load ca_file {path}: {e}"))?;
            if der.is_empty() {
                return Err(format!("ca_file {path} holds no certificate"));
            }
            let cert = pingora::utils::tls::WrappedX509::new(der, pingora::utils::tls::parse_x509);
            Some(Arc::from(vec![cert].into_boxed_slice()))
        }
        None => None,
    };
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((
        Upstream {
            host: bare_host,
            port,
            literal,
            resolved: Arc::new(RwLock::new(None)),
            tls,
            sni: host,
            host_header,
            ca,
        },
        base_path,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
providers:
  - name: mock
    type: openai
    base_url: http://127.0.0.1:8099/v1
    api_key_env: MOCK_KEY
    models: [gpt-5-mini, gpt-4o]
proxies:
  - name: LLM Test
    routes:
      - provider: mock
    keys:
      - name: demo
        env: DEMO_KEY
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "MOCK_KEY" => Some("sk-mock".into()),
            "DEMO_KEY" => Some("pk-demo".into()),
            _ => None,
        }
    }

    #[test]
    fn builds_proxy_with_defaults() {
        let rt = build_runtime(&parse_file(GOOD).unwrap(), &env).unwrap();
        let p = &rt.proxies["/llm-test"];
        assert_eq!(p.id, "llm-test");
        assert_eq!(p.models, vec!["gpt-5-mini", "gpt-4o"]);
        assert!(p.keys.contains_key(&hash_key("pk-demo")));
        assert!(p.track_stream_tokens);
        assert_eq!(
            p.routes[0].upstream.literal,
            Some("127.0.0.1:8099".parse().unwrap())
        );
        assert!(matches!(&p.routes[0].key, KeySource::Static(k) if k == "sk-mock"));
        assert_eq!(rt.max_body_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn unknown_field_is_named() {
        let bad = GOOD.replace("    models: [gpt-5-mini, gpt-4o]", "    modles: [x]");
        let e = parse_file(&bad).unwrap_err();
        assert_eq!(e.path, "providers[0].modles");
        assert!(e.message.contains("modles"), "{e}");
    }

    #[test]
    fn bad_provider_type_and_reference_are_named() {
        let e = parse_file(&GOOD.replace("type: openai", "type: opneai")).unwrap_err();
        assert_eq!(e.path, "providers[0].type");
        let f = parse_file(&GOOD.replace("- provider: mock", "- provider: nope")).unwrap();
        let e = build_runtime(&f, &env).err().unwrap();
        assert_eq!(e.path, "proxies[0].routes[0].provider");
        let e = build_runtime(&parse_file(GOOD).unwrap(), &|_| None)
            .err()
            .unwrap();
        assert_eq!(e.path, "providers[0].api_key_env");
    }

    #[test]
    fn slugs_and_contexts() {
        assert_eq!(slugify("Chat API  (prod)"), "chat-api-prod");
        assert_eq!(normalise_context("llmtest/"), "/llmtest");
        assert_eq!(normalise_context(""), "/");
        assert_eq!(normalise_context("/a/b/"), "/a/b");
    }
}
