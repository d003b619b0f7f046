//! Model discovery: a provider with `discover_models` lists the models it
//! serves from its own model list endpoint (the adapter builds and reads
//! the request: `Provider::models_request`, `models_page`), refreshed in
//! the background and merged with the configured ones.
//!
//! Each provider with discovery on has one [`ModelSource`], shared by
//! every runtime built with the same provider settings and credentials
//! (a registry keyed by their digest): a reload, or a managed deployment
//! that keeps some proxies as they were, finds the source, its list and
//! its schedule as they were, with nothing to copy and nothing fetched
//! again. Routes that take the provider's model list read the list from a
//! lock-free cell (`upstream::DiscoveredModels`); one background service of
//! the gateway (`live::discovery_refresher`) fetches the lists of the
//! runtime in force that are due, so a reload adds no task, and a source
//! no runtime holds any more is dropped and never fetched again.
//!
//! A failed fetch keeps the last good list (configured models are always
//! served), is logged at WARN and counted in
//! `portcullis_model_discovery_total{outcome="error"}`, and is retried
//! sooner than the refresh interval.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use pingora::connectors::http::Connector;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, ProviderFile, cfg_err, egress_allows, model_list_base_url};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::providers::{self, AwsCredentials, LiveCredential, Provider};
use crate::upstream::{self, DiscoveredModels, PeerOptions, Upstream};

/// Most pages followed in one fetch: a provider that keeps answering
/// `has_more` (or repeats its cursor) must not hold the refresher forever.
const MAX_PAGES: usize = 100;
/// Longest one fetch (every page) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait before a failed fetch is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// How often the refresher looks for due sources: a reloaded runtime's
/// new provider is fetched within this long.
pub const TICK: Duration = Duration::from_millis(250);
/// Largest model list body read.
const MAX_LIST_BODY: usize = 16 * 1024 * 1024;

/// One provider's discovered models and how to fetch them.
pub struct ModelSource {
    /// The provider's name (metric label, logs).
    pub provider: String,
    adapter: Arc<dyn Provider>,
    upstream: Upstream,
    key: Option<String>,
    refresh: Duration,
    /// The last good list, which routes read.
    pub models: Arc<DiscoveredModels>,
    /// When the next fetch is due; `None`: now.
    due: Mutex<Option<Instant>>,
}

impl ModelSource {
    /// Whether the list is to be fetched at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.due
            .lock()
            .map(|d| d.is_none_or(|at| at <= now))
            .unwrap_or(true)
    }

    fn set_due(&self, at: Instant) {
        if let Ok(mut d) = self.due.lock() {
            *d = Some(at);
        }
    }

    /// Fetches every page of the provider's list.
    async fn fetch(
        &self,
        connector: &Connector,
        peers: &PeerOptions,
    ) -> Result<Vec<String>, GatewayError> {
        let peer = peers.peer_for(&self.upstream).await?;
        let mut models = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let req = self
                .adapter
                .models_request(self.key.as_deref(), cursor.as_deref())?;
            let ex = upstream::send(connector, &peer, &self.upstream.host_header, &req).await?;
            let status = ex.status;
            let body = upstream::read_body(connector, &peer, ex, MAX_LIST_BODY).await?;
            if !(200..300).contains(&status) {
                return Err(self.adapter.error_response(status, &body));
            }
            let page = self.adapter.models_page(&body)?;
            models.extend(page.models);
            match page.next {
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                Some(_) => {
                    return Err(GatewayError::upstream_protocol(
                        "the provider answered the same page cursor twice",
                    ));
                }
                None => return Ok(models),
            }
        }
        Err(GatewayError::upstream_protocol(format!(
            "the model list has more than {MAX_PAGES} pages"
        )))
    }

    /// One fetch, its outcome stored, logged and counted.
    pub async fn refresh(&self, connector: &Connector, peers: &PeerOptions, metrics: &Metrics) {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch(connector, peers)).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::upstream_protocol(format!(
                "no complete model list within {} s",
                FETCH_TIMEOUT.as_secs()
            ))),
        };
        let now = Instant::now();
        match result {
            Ok(models) => {
                let n = self.models.store(models);
                tracing::debug!(provider = %self.provider, models = n, "model list fetched");
                metrics
                    .discovered_models
                    .with_label_values(&[&self.provider])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
                self.set_due(now + self.refresh);
                metrics
                    .model_discovery
                    .with_label_values(&[&self.provider, "ok"])
                    .inc();
            }
            Err(e) => {
                tracing::warn!(
                    provider = %self.provider,
                    reason = %e.message,
                    kept = self.models.len(),
                    "model discovery failed; keeping the last good list"
                );
                self.set_due(now + self.refresh.min(RETRY_AFTER_FAILURE));
                metrics
                    .model_discovery
                    .with_label_values(&[&self.provider, "error"])
                    .inc();
            }
        }
    }
}

/// The model source of provider `prov_i`, when its discovery is on.
/// `key` and `aws` are the provider's own credentials (never a route's).
pub fn build_source(
    prov: &ProviderFile,
    prov_i: usize,
    key: Option<String>,
    aws: Option<AwsCredentials>,
    live: Option<LiveCredential>,
    egress: &[String],
) -> Result<Option<Arc<ModelSource>>, ConfigError> {
    let at = format!("providers[{prov_i}].discover_models");
    let Some(refresh_s) = prov.discover_models.as_ref().and_then(|d| d.refresh_s()) else {
        return Ok(None);
    };
    let url = model_list_base_url(prov.kind, prov.base_url.as_deref(), prov.region.as_deref())
        .ok_or_else(|| {
            cfg_err(
                format!("providers[{prov_i}].base_url"),
                "required to discover models",
            )
        })?;
    let ca = match (&prov.ca_file, &prov.ca_pem) {
        (Some(f), _) => Some(upstream::CaSource::File(f)),
        (None, Some(p)) => Some(upstream::CaSource::Pem(p)),
        (None, None) => None,
    };
    let (upstream, base_path) =
        upstream::parse_base_url(&url, ca).map_err(|m| cfg_err(&at, format!("{url}: {m}")))?;
    if !egress.is_empty() && !egress_allows(egress, &upstream.host, upstream.port) {
        return Err(cfg_err(
            at,
            format!(
                "the model list at {}:{} is not in the gateway's egress allow-list ({})",
                upstream.host,
                upstream.port,
                egress.join(", ")
            ),
        ));
    }
    let mut digest = Sha256::new();
    digest.update(serde_json::to_vec(prov).unwrap_or_default());
    for part in [
        key.as_deref(),
        aws.as_ref().map(|a| a.access_key_id.as_str()),
        aws.as_ref().map(|a| a.secret_access_key.as_str()),
        aws.as_ref().and_then(|a| a.session_token.as_deref()),
    ] {
        digest.update([0]);
        digest.update(part.unwrap_or_default());
    }
    // A Bedrock provider on the AWS credential chain signs its list
    // requests with the chain's refreshed keys (`live`), like its routes.
    let settings = crate::upstream::adapter_settings(prov, base_path, &upstream, aws, live, None);
    let identity: [u8; 32] = digest.finalize().into();
    let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    registry.retain(|_, s| s.strong_count() > 0);
    if let Some(same) = registry.get(&identity).and_then(Weak::upgrade) {
        return Ok(Some(same));
    }
    // Keyed by a digest of everything the list depends on (settings and
    // credentials): a runtime built with the same provider shares it.
    let source = Arc::new(ModelSource {
        provider: prov.name.clone(),
        adapter: providers::build(prov.kind, settings),
        upstream,
        key,
        refresh: Duration::from_secs(refresh_s),
        models: Arc::default(),
        due: Mutex::new(None),
    });
    registry.insert(identity, Arc::downgrade(&source));
    Ok(Some(source))
}

/// The sources alive, by identity: what a new runtime's providers are
/// looked up in.
static REGISTRY: LazyLock<Mutex<HashMap<[u8; 32], Weak<ModelSource>>>> =
    LazyLock::new(Mutex::default);

/// Starts a fetch of each list of `sources` that is due, each a task of
/// its own: a slow provider holds back neither the others nor a source a
/// reload just added. A source is not due again while its fetch runs
/// (its fetch is bounded by `FETCH_TIMEOUT`, and sets the next time).
pub fn refresh_due(
    sources: &[Arc<ModelSource>],
    connector: &Arc<Connector>,
    peers: PeerOptions,
    metrics: &Arc<Metrics>,
) {
    let now = Instant::now();
    for s in sources.iter().filter(|s| s.is_due(now)) {
        s.set_due(now + FETCH_TIMEOUT + FETCH_TIMEOUT);
        let (s, connector, metrics) = (s.clone(), connector.clone(), metrics.clone());
        tokio::spawn(async move { s.refresh(&connector, &peers, &metrics).await });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::parse_file;
    use crate::runtime::build_runtime;

    const FILE: &str = r#"
egress_allow: ["127.0.0.1:8099"]
providers:
  - name: oa
    type: openai
    base_url: http://127.0.0.1:8099/v1
    api_key_env: OA_KEY
    models: [gpt-5-mini]
    discover_models: { refresh_s: 30 }
    aliases: { fast: gpt-4o-mini }
proxies:
  - name: open
    routes: [{ provider: oa }]
  - name: narrowed
    routes: [{ provider: oa, models: [gpt-5-mini] }]
  - name: pinned
    routes: [{ provider: oa, model: gpt-5-mini }]
  - name: by-model
    routes: [{ provider: oa, name: a }, { provider: oa, name: b, models: [other] }]
    routing: { strategy: model-based, aliases: { best: o3 } }
"#;

    fn env(key: &'static str) -> impl Fn(&str) -> Option<String> {
        move |v| (v == "OA_KEY").then(|| key.to_owned())
    }

    #[test]
    fn discovered_models_widen_the_routes_that_take_the_providers_list() {
        // Keys of their own: runtimes with the same provider share a source.
        let rt = build_runtime(&parse_file(FILE).unwrap(), &env("k-widen")).unwrap();
        let sources = &rt.model_sources;
        assert_eq!(sources.len(), 1, "one source for the provider");
        let open = &rt.proxies["/open"];
        let route = &open.routes[0];
        // Before the first fetch: the configured list and the alias.
        assert_eq!(open.listed_models(), ["gpt-5-mini", "fast"]);
        assert_eq!(crate::routing::table::model_for(route, "o4-mini"), None);
        assert_eq!(
            crate::routing::table::model_for(route, "fast").as_deref(),
            Some("gpt-4o-mini")
        );
        sources[0].models.store(vec![
            "gpt-5-mini".into(),
            "o4-mini".into(),
            "o4-mini".into(),
            "".into(),
        ]);
        assert_eq!(open.listed_models(), ["gpt-5-mini", "fast", "o4-mini"]);
        assert_eq!(
            crate::routing::table::model_for(route, "o4-mini").as_deref(),
            Some("o4-mini")
        );
        assert!(open.lists_model("o4-mini") && !open.lists_model("gpt-9"));
        // A route with its own models or target keeps exactly those.
        let narrowed = &rt.proxies["/narrowed"];
        assert_eq!(narrowed.listed_models(), ["gpt-5-mini"]);
        assert_eq!(
            crate::routing::table::model_for(&narrowed.routes[0], "o4-mini"),
            None
        );
        assert_eq!(
            crate::routing::table::model_for(&narrowed.routes[0], "fast"),
            None
        );
        assert_eq!(rt.proxies["/pinned"].listed_models(), ["gpt-5-mini"]);
        // Model-based: configured names and aliases by the table, then the
        // first route whose provider lists the model.
        let mb = &rt.proxies["/by-model"];
        assert_eq!(
            mb.routing.model_route(&mb.routes, "fast"),
            Some((0, "gpt-4o-mini".into()))
        );
        assert_eq!(
            mb.routing.model_route(&mb.routes, "o4-mini"),
            Some((0, "o4-mini".into()))
        );
        assert_eq!(
            mb.routing.model_route(&mb.routes, "oa/fast"),
            Some((0, "gpt-4o-mini".into()))
        );
        assert_eq!(mb.routing.model_route(&mb.routes, "gpt-9"), None);
    }

    #[test]
    fn runtimes_share_the_source_of_an_unchanged_provider_while_one_holds_it() {
        let file = parse_file(FILE).unwrap();
        let listed = |rt: &crate::runtime::Runtime| rt.proxies["/open"].listed_models();
        let old = build_runtime(&file, &env("k-reload")).unwrap();
        old.model_sources[0].models.store(vec!["o4-mini".into()]);
        // A reload of the same provider: the same source, list and schedule.
        let same = build_runtime(&file, &env("k-reload")).unwrap();
        assert!(Arc::ptr_eq(&old.model_sources[0], &same.model_sources[0]));
        assert_eq!(listed(&same), ["gpt-5-mini", "fast", "o4-mini"]);
        // Another key may see other models: a source of its own.
        let rekeyed = build_runtime(&file, &env("k-reload-2")).unwrap();
        assert_eq!(listed(&rekeyed), ["gpt-5-mini", "fast"]);
        // Once no runtime holds a source it is gone, never fetched again.
        let weak = Arc::downgrade(&old.model_sources[0]);
        drop((old, same));
        assert!(weak.upgrade().is_none());
        let later = build_runtime(&file, &env("k-reload")).unwrap();
        assert_eq!(listed(&later), ["gpt-5-mini", "fast"]);
    }

    #[test]
    fn only_providers_whose_routes_take_their_list_are_fetched() {
        let pinned_only = FILE
            .replace("  - name: open\n    routes: [{ provider: oa }]\n", "")
            .replace(
                "    routes: [{ provider: oa, name: a }, { provider: oa, name: b, models: [other] }]\n    routing: { strategy: model-based, aliases: { best: o3 } }\n",
                "    routes: [{ provider: oa, name: b, models: [other] }]\n",
            );
        let rt = build_runtime(&parse_file(&pinned_only).unwrap(), &env("k-pinned")).unwrap();
        assert_eq!(rt.proxies.len(), 3);
        assert!(rt.model_sources.is_empty());
    }

    #[test]
    fn bad_discovery_settings_name_the_field() {
        let err = |text: &str| {
            build_runtime(&parse_file(text).unwrap(), &env("k1"))
                .err()
                .map(|e| e.path)
        };
        // Bedrock lists its models on the control-plane host, which the
        // egress allow-list must let through too.
        let bedrock = r#"
egress_allow: ["bedrock-runtime.us-east-1.amazonaws.com"]
providers:
  - { name: b, type: bedrock, region: us-east-1, aws_access_key_id_env: OA_KEY, aws_secret_access_key_env: OA_KEY, aws_session_token_env: OA_KEY, discover_models: true }
proxies:
  - { name: p, routes: [{ provider: b }] }
"#;
        assert_eq!(
            err(bedrock).as_deref(),
            Some("providers[0].discover_models")
        );
        let allowed = bedrock.replace("bedrock-runtime.", "*.");
        assert_eq!(err(&allowed), None);
        let azure = r#"
providers:
  - { name: a, type: azure-openai, base_url: "https://r.openai.azure.com", api_key: k, models: [d], discover_models: true }
proxies:
  - { name: p, routes: [{ provider: a }] }
"#;
        assert_eq!(err(azure).as_deref(), Some("providers[0].discover_models"));
        let alias = FILE.replace(
            "discover_models: { refresh_s: 30 }",
            "discover_models: false",
        );
        assert_eq!(err(&alias).as_deref(), Some("providers[0].aliases.fast"));
    }
}
