//! Model discovery: a provider with `discover_models` lists the models it
//! serves from its own model list endpoint (the adapter builds and reads
//! the request: `Provider::models_request`, `models_page`), refreshed in
//! the background and merged with the configured ones.
//!
//! Each provider with discovery on gets one [`ModelSource`] per runtime,
//! shared by the routes that inherit the provider's model list. Requests
//! read its current list from a lock-free cell; one background service of
//! the gateway (`refresher`) fetches the lists that are due, reading the
//! runtime in force each round, so a reload adds no task and a source
//! that no runtime holds is simply no longer fetched. A reload hands a
//! source's list to its successor when the provider did not change
//! (`Runtime::adopt_models`), so requests never see it vanish.
//!
//! A failed fetch keeps the last good list (configured models are always
//! served), is logged at WARN and counted in
//! `portcullis_model_discovery_total{outcome="error"}`, and is retried
//! sooner than the refresh interval.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use pingora::connectors::http::Connector;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, ProviderFile, cfg_err, egress_allows, model_list_base_url};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::providers::{self, AwsCredentials, Provider};
use crate::upstream::{self, PeerOptions, Upstream};

/// Most pages followed in one fetch: a provider that keeps answering
/// `has_more` (or repeats its cursor) must not hold the refresher forever.
const MAX_PAGES: usize = 100;
/// Longest one fetch (every page) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait before a failed fetch is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// How often the refresher looks for due sources: a reloaded runtime's
/// new provider is fetched within this long.
const TICK: Duration = Duration::from_millis(250);
/// Largest model list body read.
const MAX_LIST_BODY: usize = 16 * 1024 * 1024;

/// The models a provider listed, in its order and as a set.
#[derive(Debug, Default)]
pub struct ModelSet {
    pub list: Vec<String>,
    set: HashSet<String>,
}

impl ModelSet {
    fn new(models: Vec<String>) -> Self {
        let mut set = HashSet::with_capacity(models.len());
        let list = models
            .into_iter()
            .filter(|m| !m.is_empty() && set.insert(m.clone()))
            .collect();
        ModelSet { list, set }
    }

    pub fn contains(&self, model: &str) -> bool {
        self.set.contains(model)
    }
}

/// One provider's discovered models and how to fetch them.
pub struct ModelSource {
    /// The provider's name (metric label, logs).
    pub provider: String,
    /// Digest of everything the list depends on (the provider's settings
    /// and credentials): a reload keeps the list of a source whose
    /// identity did not change.
    identity: [u8; 32],
    adapter: Arc<dyn Provider>,
    upstream: Upstream,
    key: Option<String>,
    refresh: Duration,
    /// The last good list; `None` until a fetch succeeded.
    models: ArcSwapOption<ModelSet>,
    /// When the next fetch is due; `None`: now.
    due: Mutex<Option<Instant>>,
}

impl ModelSource {
    /// The last good list, if any fetch succeeded yet.
    pub fn models(&self) -> Option<Arc<ModelSet>> {
        self.models.load_full()
    }

    /// Whether the provider listed `model` at its last good fetch.
    pub fn contains(&self, model: &str) -> bool {
        (*self.models.load())
            .as_ref()
            .is_some_and(|s| s.contains(model))
    }

    /// Makes `models` the current list.
    pub(crate) fn store(&self, models: Vec<String>) -> usize {
        let set = ModelSet::new(models);
        let n = set.list.len();
        self.models.store(Some(Arc::new(set)));
        n
    }

    fn is_due(&self, now: Instant) -> bool {
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

    /// Takes over the list and schedule of `old`, the same provider in
    /// the runtime a reload replaces.
    fn adopt(&self, old: &ModelSource) {
        self.models.store(old.models.load_full());
        let due = old.due.lock().ok().and_then(|d| *d);
        if let Ok(mut d) = self.due.lock() {
            *d = due;
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
    async fn refresh(&self, connector: &Connector, peers: &PeerOptions, metrics: &Metrics) {
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
                let n = self.store(models);
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
                    kept = (*self.models.load()).as_ref().map_or(0, |s| s.list.len()),
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
    let settings = crate::upstream::adapter_settings(prov, base_path, &upstream, aws);
    Ok(Some(Arc::new(ModelSource {
        provider: prov.name.clone(),
        identity: digest.finalize().into(),
        adapter: providers::build(prov.kind, settings),
        upstream,
        key,
        refresh: Duration::from_secs(refresh_s),
        models: ArcSwapOption::empty(),
        due: Mutex::new(None),
    })))
}

/// The distinct sources of a runtime's routes, one per identity.
pub fn sources(rt: &crate::runtime::Runtime) -> Vec<Arc<ModelSource>> {
    let mut seen = HashSet::new();
    rt.proxies
        .values()
        .flat_map(|p| p.routes.iter())
        .filter_map(|r| r.discovered.clone())
        .filter(|s| seen.insert(Arc::as_ptr(s)))
        .collect()
}

/// Gives the sources of `new` the lists of the same providers in `old`.
pub fn adopt(new: &crate::runtime::Runtime, old: &crate::runtime::Runtime) {
    let before: HashMap<[u8; 32], Arc<ModelSource>> =
        sources(old).into_iter().map(|s| (s.identity, s)).collect();
    for s in sources(new) {
        if let Some(prev) = before.get(&s.identity)
            && !Arc::ptr_eq(prev, &s)
        {
            s.adopt(prev);
        }
    }
}

/// The background refresher: fetches the due model lists of the runtime
/// in force, for as long as the gateway runs.
pub fn refresher(
    slot: crate::live::Slot,
    metrics: Arc<Metrics>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        let connector = Connector::new(None);
        loop {
            let (due, peers) = {
                let rt = slot.load();
                let now = Instant::now();
                let mut by_identity: HashMap<[u8; 32], Vec<Arc<ModelSource>>> = HashMap::new();
                for s in sources(&rt).into_iter().filter(|s| s.is_due(now)) {
                    by_identity.entry(s.identity).or_default().push(s);
                }
                (by_identity, rt.peers)
            };
            // One fetch per provider, all providers at once: a slow one
            // does not hold back the others.
            let fetches = due.into_values().map(|group| {
                let (connector, metrics, peers) = (&connector, &metrics, &peers);
                async move {
                    if let Some((first, rest)) = group.split_first() {
                        first.refresh(connector, peers, metrics).await;
                        for other in rest {
                            other.adopt(first);
                        }
                    }
                }
            });
            futures_util::future::join_all(fetches).await;
            tokio::time::sleep(TICK).await;
        }
    }
}

#[cfg(test)]
mod tests {
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
        let rt = build_runtime(&parse_file(FILE).unwrap(), &env("k1")).unwrap();
        let sources = super::sources(&rt);
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
        sources[0].store(vec![
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
    fn a_reload_keeps_the_list_of_an_unchanged_provider_only() {
        let file = parse_file(FILE).unwrap();
        let old = build_runtime(&file, &env("k1")).unwrap();
        super::sources(&old)[0].store(vec!["o4-mini".into()]);
        let same = build_runtime(&file, &env("k1")).unwrap();
        same.adopt_models(&old);
        assert_eq!(
            same.proxies["/open"].listed_models(),
            ["gpt-5-mini", "fast", "o4-mini"]
        );
        // Another key may see other models: fetched anew.
        let rekeyed = build_runtime(&file, &env("k2")).unwrap();
        rekeyed.adopt_models(&old);
        assert_eq!(
            rekeyed.proxies["/open"].listed_models(),
            ["gpt-5-mini", "fast"]
        );
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
