//! The runtime form of a configuration: everything a request needs,
//! built once from a validated file (provider adapters and peers, keys
//! hashed, routing tables, policy chains, semantic indexes) and swapped in
//! whole (`live`).
//!
//! Above `config` (the file, its checks and the plain types both sides
//! use): the configuration knows nothing of the runtime built from it
//! (docs/architecture.md, layering).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora::connectors::http::Connector;

use crate::config::*;
use crate::error::GatewayError;
use crate::semantic::ServiceEmbedder;
use crate::upstream::{PeerOptions, Route, build_route};
use portcullis_types::names::{CONTEXT_RULE, valid_context};

/// Everything the data path needs, built once per configuration.
pub struct Runtime {
    /// Proxies by normalised context (base path).
    pub proxies: HashMap<String, Arc<Proxy>>,
    pub listen: String,
    pub ops_listen: String,
    pub tls: Option<TlsFile>,
    /// The certificates of `tls`, loaded and checked, by SNI.
    pub tls_resolver: Option<Arc<crate::tls::SniResolver>>,
    pub max_body_bytes: usize,
    /// How provider peers are reached (timeouts).
    pub peers: PeerOptions,
    /// Total time to read a request body.
    pub client_body_timeout: Duration,
    /// Client connection limits (applied by the listener at start).
    pub connections: ConnLimits,
    pub telemetry: Telemetry,
    /// The model sources of the providers routes use that discover their
    /// models; the gateway's refresher fetches them.
    pub model_sources: Vec<Arc<crate::discovery::ModelSource>>,
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

impl Proxy {
    /// The models `GET /models` lists (without the proxy prefix): the
    /// configured ones and aliases, then those the providers discovered,
    /// each once.
    pub fn listed_models(&self) -> Vec<String> {
        let discovered: Vec<_> = self
            .routes
            .iter()
            .filter_map(|r| r.discovered.as_ref().and_then(|d| d.models()))
            .collect();
        if discovered.is_empty() {
            return self.models.clone();
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out: Vec<String> = Vec::new();
        for m in self
            .models
            .iter()
            .chain(discovered.iter().flat_map(|d| d.list.iter()))
        {
            if seen.insert(m) {
                out.push(m.clone());
            }
        }
        out
    }

    /// Whether `model` is one the proxy lists (configured, an alias, or
    /// discovered): such names become metric label values.
    pub fn lists_model(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
            || self
                .routes
                .iter()
                .any(|r| r.discovered.as_ref().is_some_and(|d| d.contains(model)))
    }

    /// What routing reads of this proxy.
    pub fn routed(&self) -> crate::routing::Routed<'_> {
        crate::routing::Routed {
            id: &self.id,
            routes: &self.routes,
            routing: &self.routing,
        }
    }
}

impl Runtime {
    /// The Pingora peer for a route, with this configuration's timeouts.
    pub async fn peer(
        &self,
        route: &Route,
    ) -> Result<pingora::upstreams::peer::HttpPeer, GatewayError> {
        self.peers.peer(route).await
    }

    /// Carries route health over from the configuration `new` replaces: a
    /// route keeps its state when its proxy (same base path and id) has a
    /// route of the same name to the same endpoint and model.
    pub fn carry_health_from(&self, old: &Runtime) {
        let new = self;
        for (context, proxy) in &new.proxies {
            let Some(prev) = old.proxies.get(context).filter(|p| p.id == proxy.id) else {
                continue;
            };
            for (i, route) in proxy.routes.iter().enumerate() {
                let same = prev.routes.iter().position(|r| {
                    r.name == route.name
                        && r.provider_name == route.provider_name
                        && r.upstream.host_header == route.upstream.host_header
                        && r.upstream.port == route.upstream.port
                        && r.target_model == route.target_model
                });
                if let (Some(j), Some(h)) = (same, proxy.routing.health.get(i))
                    && let Some(old_h) = prev.routing.health.get(j)
                {
                    h.carry_from(old_h);
                }
            }
        }
    }

    /// Takes over the topic indexes of `old` for proxies whose topics did
    /// not change; true when some index is still to be computed
    /// (`index_semantic`, which the gateway runs in the background before
    /// requests need it).
    pub fn adopt_semantic(&self, old: Option<&Runtime>) -> bool {
        let mut pending = false;
        for (context, proxy) in &self.proxies {
            let Some(sem) = &proxy.routing.semantic else {
                continue;
            };
            if let Some(prev) = old
                .and_then(|o| o.proxies.get(context))
                .and_then(|p| p.routing.semantic.as_ref())
            {
                sem.adopt(prev);
            }
            pending |= !sem.is_indexed();
        }
        pending
    }

    /// Computes the topic indexes not computed yet, so that requests find
    /// them ready instead of the first one waiting for every utterance to
    /// be embedded. The gateway serves meanwhile; a request that arrives
    /// first waits for the same computation. A failure is logged and left
    /// to the request path, which retries after `INDEX_RETRY_AFTER`.
    pub async fn index_semantic(&self, connector: &Connector) {
        for proxy in self.proxies.values() {
            let Some(sem) = &proxy.routing.semantic else {
                continue;
            };
            if sem.is_indexed() {
                continue;
            }
            let embedder = ServiceEmbedder {
                service: &sem.service,
                connector,
                peers: &self.peers,
            };
            if let Err(e) = sem.indexes(&embedder).await {
                tracing::warn!(proxy = %proxy.id, error = %e.message, "could not index the semantic topics at load; requests will retry");
            }
        }
    }
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Runtime, ConfigError> {
    load_file_with_egress(path, None)
}

/// Like `load_file`; `egress_allow`, when given (the `--egress-allow`
/// flag), replaces the file's `egress_allow`.
pub fn load_file_with_egress(
    path: &Path,
    egress_allow: Option<&[String]>,
) -> Result<Runtime, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| cfg_err(path.display().to_string(), format!("cannot read: {e}")))?;
    let mut file = parse_file(&text)?;
    crate::routing::rebase_files(&mut file, path);
    if let Some(allow) = egress_allow {
        file.egress_allow = allow.to_vec();
    }
    build_runtime(&file, &|name| std::env::var(name).ok())
}

/// A proxy left out of a configuration built with
/// [`build_runtime_isolating`].
#[derive(Debug, Clone)]
pub struct ProxyFailure {
    /// Its index in the file's `proxies`.
    pub index: usize,
    /// Its id (the configured one, or the slug of its name).
    pub id: String,
    pub error: ConfigError,
}

/// Validates a parsed file into the runtime form. `env` reads environment
/// variables (a parameter so tests need not touch the process environment).
pub fn build_runtime(
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Runtime, ConfigError> {
    build(file, env, false).map(|(rt, _)| rt)
}

/// [`build_runtime`], except that a proxy that cannot be built is left out
/// and reported instead of failing the whole configuration (managed
/// gateways: one bad deployment must not block every other change, key
/// revocations included). Errors outside proxies still fail it.
pub fn build_runtime_isolating(
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Runtime, Vec<ProxyFailure>), ConfigError> {
    build(file, env, true)
}

fn build(
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
    isolate: bool,
) -> Result<(Runtime, Vec<ProxyFailure>), ConfigError> {
    check_positive(file)?;
    let mut providers_by_name: HashMap<&str, (usize, &ProviderFile)> = HashMap::new();
    for (i, p) in file.providers.iter().enumerate() {
        if providers_by_name.insert(p.name.as_str(), (i, p)).is_some() {
            return Err(cfg_err(
                format!("providers[{i}].name"),
                format!("duplicate provider `{}`", p.name),
            ));
        }
        crate::config::pricing::check_prices(&p.prices, &format!("providers[{i}].prices"))?;
        if p.api_key_env.is_some() && p.api_key.is_some() {
            return Err(cfg_err(
                format!("providers[{i}]"),
                "set api_key_env or api_key, not both",
            ));
        }
        crate::config::models::check_provider_models(
            p.kind,
            &p.models,
            p.discover_models.as_ref(),
            &p.aliases,
            &format!("providers[{i}]"),
        )?;
    }
    // One model source per provider that discovers its models, shared by
    // its routes (and fetched once, whatever the number of routes).
    let mut sources = HashMap::new();
    for (i, p) in file.providers.iter().enumerate() {
        if p.discover_models
            .as_ref()
            .and_then(|d| d.refresh_s())
            .is_none()
        {
            continue;
        }
        if p.vertex.is_some() {
            // Vertex AI lists publisher models under another API than
            // the Gemini API's `models`: not supported yet.
            return Err(cfg_err(
                format!("providers[{i}].discover_models"),
                "model discovery does not cover Gemini on Vertex AI yet: list its models in `models`",
            ));
        }
        let (key, aws, live) =
            crate::upstream::provider_credentials(p, i, env, &file.egress_allow)?;
        if let Some(s) = crate::discovery::build_source(p, i, key, aws, live, &file.egress_allow)? {
            sources.insert(p.name.as_str(), s);
        }
    }

    if let Some(e) = file
        .policy_engine
        .as_ref()
        .and_then(|p| p.embeddings.as_ref())
        && !file.egress_allow.is_empty()
    {
        let allowed = url_origin(&e.url)
            .is_some_and(|(_, host, port)| egress_allows(&file.egress_allow, &host, port));
        if !allowed {
            return Err(cfg_err(
                "policy_engine.embeddings.url",
                format!(
                    "not in the gateway's egress allow-list ({})",
                    file.egress_allow.join(", ")
                ),
            ));
        }
    }

    let mut proxies = HashMap::new();
    // The engine, sources and artifacts, made once for every proxy.
    let mut chains = crate::policy::ChainLoader::new(file, env);
    let mut failures = Vec::new();
    let mut ids = HashSet::new();
    for (pi, pf) in file.proxies.iter().enumerate() {
        // One proxy, all or nothing: inserted only once every part built.
        let built = (|| -> Result<(), ConfigError> {
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
            if !valid_context(&context) {
                return Err(cfg_err(at("context"), CONTEXT_RULE));
            }
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
                let Some((prov_i, prov)) = providers_by_name.get(rf.provider.as_str()).copied()
                else {
                    return Err(cfg_err(
                        rat("provider"),
                        format!("no provider named `{}`", rf.provider),
                    ));
                };
                routes.push(build_route(
                    rf,
                    prov,
                    prov_i,
                    &rat,
                    env,
                    &file.egress_allow,
                    sources.get(prov.name.as_str()).map(|s| &s.models),
                )?);
            }
            let routing =
                crate::routing::build(pi, pf, &routes, &file.providers, env, &file.egress_allow)?;
            let mut keys = HashMap::new();
            for (ki, kf) in pf.keys.iter().enumerate() {
                let kat = format!("proxies[{pi}].keys[{ki}]");
                let hash = match (&kf.sha256, &kf.env) {
                    (Some(hex_hash), None) => {
                        let bytes = hex::decode(hex_hash.trim())
                            .ok()
                            .filter(|b| b.len() == 32)
                            .ok_or_else(|| {
                                cfg_err(format!("{kat}.sha256"), "must be 64 hex digits")
                            })?;
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
                let expires_ms = match &kf.expires_at {
                    Some(t) => Some(
                        chrono::DateTime::parse_from_rfc3339(t.trim())
                            .map_err(|e| {
                                cfg_err(
                                    format!("{kat}.expires_at"),
                                    format!(
                                        "not an RFC 3339 time such as 2027-01-31T00:00:00Z: {e}"
                                    ),
                                )
                            })?
                            .timestamp_millis(),
                    ),
                    None => None,
                };
                // Admin sends its key ids; a file's key without one is
                // known by a digest of its hash (stable, and distinct for
                // two keys that share a name).
                let id = match &kf.id {
                    Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
                    Some(_) => return Err(cfg_err(format!("{kat}.id"), "must not be empty")),
                    None => format!("key-{}", hex::encode(&hash[..8])),
                };
                if let Some((field, message)) = kf.scope.as_ref().and_then(|s| s.problem()) {
                    return Err(cfg_err(format!("{kat}.scope.{field}"), message));
                }
                let mut entry = crate::key_usage::KeyEntry::new(
                    Arc::from(kf.name.as_str()),
                    Arc::from(id),
                    expires_ms,
                );
                entry.scope = kf
                    .scope
                    .clone()
                    .filter(|s| *s != KeyScopeFile::default())
                    .map(Arc::new);
                entry.caller = crate::policy::CallerIds {
                    application: kf.application.as_deref().map(Arc::from),
                    subscription: kf.subscription.as_deref().map(Arc::from),
                    plan: kf.plan.as_deref().map(Arc::from),
                };
                keys.insert(hash, entry);
            }
            let mut models = Vec::new();
            for r in &routes {
                match &r.target_model {
                    Some(m) => models.push(m.clone()),
                    None => models.extend(r.models.iter().chain(r.aliases.keys()).cloned()),
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
                        Resource::Responses,
                        Resource::Completions,
                        Resource::Moderations,
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
                    policies: chains.chain_for_proxy(pi, pf)?,
                }),
            );
            Ok(())
        })();
        if let Err(error) = built {
            if !isolate {
                return Err(error);
            }
            let id = pf.id.clone().unwrap_or_else(|| slugify(&pf.name));
            failures.push(ProxyFailure {
                index: pi,
                id,
                error,
            });
        }
    }

    // Only the providers some route takes its model list from are fetched.
    let model_sources = sources
        .into_values()
        .filter(|s| {
            proxies.values().any(|p: &Arc<Proxy>| {
                p.routes.iter().any(|r| {
                    r.discovered
                        .as_ref()
                        .is_some_and(|d| Arc::ptr_eq(d, &s.models))
                })
            })
        })
        .collect();
    let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
    let runtime = Runtime {
        proxies,
        listen: file.listen.clone().unwrap_or_else(|| "0.0.0.0:8080".into()),
        ops_listen: file
            .ops_listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8081".into()),
        tls: file.tls.clone(),
        tls_resolver: match &file.tls {
            Some(t) => Some(Arc::new(crate::tls::build_resolver(t, env)?)),
            None => None,
        },
        max_body_bytes: file.limits.max_body_bytes.unwrap_or(10 * 1024 * 1024),
        peers: PeerOptions {
            connect_timeout: ms(file.timeouts.connect_ms, 5_000),
            read_timeout: ms(file.timeouts.read_ms, 120_000),
        },
        client_body_timeout: ms(file.timeouts.client_body_ms, 60_000),
        connections: ConnLimits {
            max_connections: file.limits.max_client_connections.unwrap_or(10_000),
            idle: ms(file.timeouts.client_idle_ms, 60_000),
            header: ms(file.timeouts.client_header_ms, 10_000),
            body: ms(file.timeouts.client_body_ms, 60_000),
        },
        telemetry: build_telemetry(&file.telemetry)?,
        model_sources,
    };
    Ok((runtime, failures))
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
        assert!(
            matches!(&p.routes[0].key, crate::upstream::KeySource::Static(k) if k == "sk-mock")
        );
        assert_eq!(rt.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(rt.connections.max_connections, 10_000);
        assert_eq!(rt.connections.idle, Duration::from_secs(60));
        assert_eq!(rt.connections.header, Duration::from_secs(10));
        assert_eq!(rt.connections.body, Duration::from_secs(60));
    }

    #[test]
    fn connection_limits_are_read_and_zero_is_refused() {
        let with = |extra: &str| parse_file(&format!("{extra}\n{GOOD}")).unwrap();
        let f = with(
            "limits: {max_client_connections: 2500}\ntimeouts: {client_idle_ms: 1500, client_header_ms: 700}",
        );
        let rt = build_runtime(&f, &env).unwrap();
        assert_eq!(rt.connections.max_connections, 2500);
        assert_eq!(rt.connections.idle, Duration::from_millis(1500));
        assert_eq!(rt.connections.header, Duration::from_millis(700));
        let e = build_runtime(&with("timeouts: {client_header_ms: 0}"), &env)
            .err()
            .unwrap();
        assert_eq!(e.path, "timeouts.client_header_ms");
        let e = build_runtime(&with("limits: {max_client_connections: 0}"), &env)
            .err()
            .unwrap();
        assert_eq!(e.path, "limits.max_client_connections");
    }

    #[test]
    fn provider_credentials_go_to_the_providers_host_only() {
        let route = |extra: &str| {
            GOOD.replace(
                "      - provider: mock\n",
                &format!("      - provider: mock\n{extra}"),
            )
        };
        // Another host with the provider's key: refused, naming the field.
        let f = parse_file(&route("        base_url: http://169.254.169.254/latest\n")).unwrap();
        let e = build_runtime(&f, &env).err().unwrap();
        assert_eq!(e.path, "proxies[0].routes[0].base_url");
        assert!(e.message.contains("credentials"), "{e}");
        // Another port of the same host is another server: refused too.
        let f = parse_file(&route("        base_url: http://127.0.0.1:8098/v1\n")).unwrap();
        assert!(build_runtime(&f, &env).is_err());
        // The same origin under another path is the provider's own server.
        let f = parse_file(&route("        base_url: http://127.0.0.1:8099/v2\n")).unwrap();
        assert!(build_runtime(&f, &env).is_ok());
        // A route that brings its own key may go anywhere.
        let f = parse_file(&route(
            "        base_url: http://10.1.2.3:8000/v1\n        api_key: { header: x-upstream-key }\n",
        ))
        .unwrap();
        assert!(build_runtime(&f, &env).is_ok());
    }

    #[test]
    fn egress_allow_list_bounds_every_upstream() {
        let f = parse_file(&format!("egress_allow: [api.openai.com]\n{GOOD}")).unwrap();
        let e = build_runtime(&f, &env).err().unwrap();
        assert_eq!(e.path, "providers[0].base_url");
        assert!(e.message.contains("egress allow-list"), "{e}");
        let f = parse_file(&format!("egress_allow: [\"127.0.0.1:8099\"]\n{GOOD}")).unwrap();
        assert!(build_runtime(&f, &env).is_ok());
        let f = parse_file(&format!(
            "egress_allow: [\"127.0.0.1:8099\"]\npolicy_engine: {{ embeddings: {{ url: \"http://10.0.0.5/v1/embeddings\", model: m }} }}\n{GOOD}"
        ))
        .unwrap();
        let e = build_runtime(&f, &env).err().unwrap();
        assert_eq!(e.path, "policy_engine.embeddings.url");
    }

    #[test]
    fn key_expiry_is_parsed_and_enforced_by_the_entry() {
        let with = |t: &str| {
            GOOD.replace(
                "        env: DEMO_KEY\n",
                &format!("        env: DEMO_KEY\n        expires_at: \"{t}\"\n"),
            )
        };
        let rt = build_runtime(&parse_file(&with("2030-01-01T00:00:00Z")).unwrap(), &env).unwrap();
        let entry = &rt.proxies["/llm-test"].keys[&hash_key("pk-demo")];
        assert_eq!(entry.expires_ms, Some(1_893_456_000_000));
        assert!(!entry.expired(1_893_455_999_999));
        assert!(entry.expired(1_893_456_000_000));
        let e = build_runtime(&parse_file(&with("next tuesday")).unwrap(), &env)
            .err()
            .unwrap();
        assert_eq!(e.path, "proxies[0].keys[0].expires_at");
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
    fn base_paths_follow_the_rule_admin_applies() {
        let with = |context: &str| {
            GOOD.replace(
                "  - name: LLM Test\n",
                &format!("  - name: LLM Test\n    context: \"{context}\"\n"),
            )
        };
        let rt = build_runtime(&parse_file(&with("team/llm/")).unwrap(), &env).unwrap();
        assert!(rt.proxies.contains_key("/team/llm"));
        for bad in ["/a b", "/a//b", "/é"] {
            let e = build_runtime(&parse_file(&with(bad)).unwrap(), &env)
                .err()
                .unwrap();
            assert_eq!(
                (e.path.as_str(), e.message.as_str()),
                ("proxies[0].context", CONTEXT_RULE),
                "{bad}"
            );
        }
    }
}
