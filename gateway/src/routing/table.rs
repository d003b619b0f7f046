//! A proxy's routing table: the routing part of the configuration,
//! validated and turned into lookups ready for each request.
//!
//! Everything that does not depend on the request is done here, once per
//! configuration load: model names and aliases go into hash maps, the
//! failover order is sorted, weights are collected, status lists become a
//! bit set, topic utterances are read from their files. Errors name the
//! field at fault, like the rest of the configuration.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::{
    ConfigError, FileConfig, GuardOnError, ProviderFile, ProviderKind, ProxyFile, RouteFile,
    RoutingStrategy, TopicFile,
};
use crate::health::{HealthPolicy, RouteHealth};
use crate::prompt_guard::PromptGuard;
use crate::routing::budget::RetryBudget;
use crate::routing::metrics::RoutingMetrics;
use crate::semantic::{Semantic, SemanticService, Topic};
use crate::upstream::Route;
use portcullis_types::proxy_rules;

/// Default similarity a prompt needs to match a routing topic.
pub const DEFAULT_ROUTE_THRESHOLD: f32 = 0.75;
/// Default similarity at which the prompt guard rejects.
pub const DEFAULT_GUARD_THRESHOLD: f32 = 0.8;

/// The fallback route and the model it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub route: usize,
    pub model: Option<String>,
}

/// A set of HTTP statuses, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSet([u64; 10]);

impl StatusSet {
    /// 429 and every 5xx.
    pub fn default_retryable() -> Self {
        let mut s = StatusSet([0; 10]);
        s.insert(429);
        for code in 500..600 {
            s.insert(code);
        }
        s
    }

    fn empty() -> Self {
        StatusSet([0; 10])
    }

    fn insert(&mut self, code: u16) {
        let c = usize::from(code);
        if c < 640 {
            self.0[c / 64] |= 1 << (c % 64);
        }
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        let c = usize::from(code);
        c < 640 && self.0[c / 64] & (1 << (c % 64)) != 0
    }
}

/// When to move on to the next route.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Most routes tried per request; `None`: every candidate once.
    pub max_attempts: Option<u32>,
    pub on_status: StatusSet,
    /// Longest `retry-after` honoured.
    pub max_retry_after: Duration,
}

/// A proxy's routing, ready for requests.
pub struct RoutingTable {
    pub strategy: RoutingStrategy,
    pub fallback: Option<Fallback>,
    /// Model aliases, resolved before routing.
    pub aliases: HashMap<String, String>,
    /// Model-based: exact model name to (route, model sent upstream).
    exact: HashMap<String, (usize, String)>,
    /// Model-based: `prefix/` (route or provider name) to routes.
    prefixes: HashMap<String, Vec<usize>>,
    /// Failover: route indexes by priority, then position.
    pub order: Vec<usize>,
    /// Weighted: each route's weight.
    pub weights: Vec<u32>,
    pub retry: RetryPolicy,
    pub health_policy: HealthPolicy,
    /// Per route, by index.
    pub health: Vec<RouteHealth>,
    pub budget: RetryBudget,
    /// The semantic service and topics (semantic routing, prompt guard).
    pub semantic: Option<Semantic>,
    pub guard: Option<PromptGuard>,
    metrics_attached: AtomicBool,
}

impl RoutingTable {
    /// The route and upstream model for a model under the model-based
    /// strategy: an exact name (a route's target model or one of its
    /// models), else `provider/model` or `route/model`.
    pub fn model_route(&self, routes: &[Route], model: &str) -> Option<(usize, String)> {
        lookup(&self.exact, &self.prefixes, routes, model)
    }

    /// Connects the route health gauges on first use.
    pub fn attach_metrics(&self, proxy: &str, routes: &[Route], metrics: &RoutingMetrics) {
        if self.metrics_attached.load(Ordering::Acquire)
            || self.metrics_attached.swap(true, Ordering::AcqRel)
        {
            return;
        }
        for (route, health) in routes.iter().zip(&self.health) {
            health.attach_gauge(
                metrics
                    .route_healthy
                    .with_label_values(&[proxy, &route.name]),
            );
        }
    }

    /// Model names that `GET /models` lists besides the routes' models.
    pub fn listed_aliases(&self) -> impl Iterator<Item = &String> {
        self.aliases.keys()
    }
}

fn lookup(
    exact: &HashMap<String, (usize, String)>,
    prefixes: &HashMap<String, Vec<usize>>,
    routes: &[Route],
    model: &str,
) -> Option<(usize, String)> {
    if let Some((ri, up)) = exact.get(model) {
        return Some((*ri, up.clone()));
    }
    // A model a provider discovered: the first route (in file order)
    // whose provider lists it. Configured names above win over it.
    if let Some(ri) = routes
        .iter()
        .position(|r| r.discovered.as_ref().is_some_and(|d| d.contains(model)))
    {
        return Some((ri, model.to_owned()));
    }
    let (prefix, rest) = model.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    let list = prefixes.get(prefix)?;
    // A route whose target is exactly the model asked for, else a route
    // without a target that serves it.
    if let Some(ri) = list
        .iter()
        .find(|ri| routes[**ri].target_model.as_deref() == Some(rest))
    {
        return Some((*ri, rest.to_owned()));
    }
    list.iter().find_map(|ri| {
        let r = &routes[*ri];
        if r.target_model.is_some() {
            return None;
        }
        match r.aliases.get(rest) {
            Some(real) => Some((*ri, real.clone())),
            None => r.serves(rest).then(|| (*ri, rest.to_owned())),
        }
    })
}

/// The model sent to `route` for a request for `model` (after aliases),
/// or `None` when the route cannot serve it: its target model if it has
/// one, else the model itself if the route's model list allows it.
pub fn model_for(route: &Route, model: &str) -> Option<String> {
    if let Some(t) = &route.target_model {
        return Some(t.clone());
    }
    if model.is_empty() {
        return None;
    }
    if let Some(real) = route.aliases.get(model) {
        return Some(real.clone());
    }
    route.serves(model).then(|| model.to_owned())
}

fn cfg_err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// Makes `utterances_file` paths relative to the configuration file's
/// folder, so a configuration and its topic files move together.
pub fn rebase_files(file: &mut FileConfig, config_path: &Path) {
    let Some(dir) = config_path.parent() else {
        return;
    };
    let rebase = |t: &mut TopicFile| {
        if let Some(f) = &mut t.utterances_file
            && Path::new(f.as_str()).is_relative()
        {
            *f = dir.join(&*f).to_string_lossy().into_owned();
        }
    };
    for p in &mut file.proxies {
        for r in &mut p.routes {
            r.topics.iter_mut().for_each(rebase);
        }
        if let Some(g) = &mut p.prompt_guard {
            g.deny.iter_mut().for_each(rebase);
        }
    }
}

/// Builds and validates proxy `pi`'s routing over its built `routes`.
pub fn build(
    pi: usize,
    pf: &ProxyFile,
    routes: &[Route],
    providers: &[ProviderFile],
    env: &dyn Fn(&str) -> Option<String>,
    egress: &[String],
) -> Result<RoutingTable, ConfigError> {
    let at = |field: &str| format!("proxies[{pi}].{field}");
    let rat = |ri: usize, field: &str| format!("proxies[{pi}].routes[{ri}].{field}");
    // The rules admin applies too (portcullis_types::proxy_rules): route
    // names, strategy and fallback, topics and thresholds, the prompt
    // guard and its semantic service. What follows builds on a proxy that
    // passed them, and checks only what needs more (providers, files).
    proxy_rules::check(pf).map_err(|e| cfg_err(at(&e.field), e.message))?;
    let routing = pf.routing.clone().unwrap_or_default();

    // Route names are how the fallback, logs and metrics refer to routes.
    let names: HashMap<&str, usize> = routes
        .iter()
        .enumerate()
        .map(|(ri, r)| (r.name.as_str(), ri))
        .collect();
    let strategy = proxy_rules::strategy(pf);
    let fallback = routing.fallback.as_ref().and_then(|f| {
        names.get(f.route.as_str()).map(|ri| Fallback {
            route: *ri,
            model: f.model.clone(),
        })
    });

    let mut aliases = HashMap::new();
    for (alias, target) in &routing.aliases {
        if alias.is_empty() || target.is_empty() {
            return Err(cfg_err(
                at("routing.aliases"),
                "aliases and their models must not be empty",
            ));
        }
        if routing.aliases.contains_key(target) {
            return Err(cfg_err(
                at(&format!("routing.aliases.{alias}")),
                format!("`{target}` is itself an alias; aliases resolve once"),
            ));
        }
        aliases.insert(alias.clone(), target.clone());
    }

    // Model-based lookups.
    let mut exact: HashMap<String, (usize, String)> = HashMap::new();
    let mut prefixes: HashMap<String, Vec<usize>> = HashMap::new();
    if strategy == RoutingStrategy::ModelBased {
        for (ri, (r, rf)) in routes.iter().zip(&pf.routes).enumerate() {
            let keys: Vec<(String, String, String)> = match &r.target_model {
                Some(t) => vec![(t.clone(), t.clone(), rat(ri, "model"))],
                None => r
                    .models
                    .iter()
                    .enumerate()
                    .map(|(mi, m)| {
                        let path = if rf.models.is_some() {
                            rat(ri, &format!("models[{mi}]"))
                        } else {
                            rat(ri, "provider")
                        };
                        (m.clone(), m.clone(), path)
                    })
                    // The provider's aliases go to this route too, as
                    // the model they stand for.
                    .chain(
                        r.aliases
                            .iter()
                            .map(|(a, real)| (a.clone(), real.clone(), rat(ri, "provider"))),
                    )
                    .collect(),
            };
            for (key, upstream, path) in keys {
                if let Some((other, _)) = exact.get(&key) {
                    return Err(cfg_err(
                        path,
                        format!(
                            "model `{key}` is also served by route `{}`; under model-based routing each model needs one route (set `models` on the routes to split them)",
                            routes[*other].name
                        ),
                    ));
                }
                exact.insert(key, (ri, upstream));
            }
            let mut own = vec![r.provider_name.clone()];
            if let Some(n) = &rf.name {
                own.push(n.clone());
            }
            for p in own {
                let list = prefixes.entry(p).or_default();
                if !list.contains(&ri) {
                    list.push(ri);
                }
            }
        }
    }

    if strategy == RoutingStrategy::ModelBased {
        // A discovered model is known only once fetched: a target may be
        // one when a route discovers.
        let discovering = routes.iter().any(|r| r.discovered.is_some());
        for (alias, target) in &aliases {
            if !discovering && lookup(&exact, &prefixes, routes, target).is_none() {
                return Err(cfg_err(
                    at(&format!("routing.aliases.{alias}")),
                    format!("no route serves `{target}`"),
                ));
            }
        }
    }

    let weights: Vec<u32> = pf.routes.iter().map(|r| r.weight.unwrap_or(1)).collect();
    if strategy == RoutingStrategy::Weighted && weights.iter().all(|w| *w == 0) {
        return Err(cfg_err(
            at("routes"),
            "weighted routing needs a route with weight above 0",
        ));
    }
    let mut order: Vec<usize> = (0..routes.len()).collect();
    order.sort_by_key(|ri| (pf.routes[*ri].priority.unwrap_or(u32::MAX), *ri));

    let retry_file = routing.retry.clone().unwrap_or_default();
    let on_status = match &retry_file.on_status {
        None => StatusSet::default_retryable(),
        Some(list) => {
            let mut s = StatusSet::empty();
            for (i, code) in list.iter().enumerate() {
                if !(400..=599).contains(code) {
                    return Err(cfg_err(
                        at(&format!("routing.retry.on_status[{i}]")),
                        format!("{code} is not an error status (400 to 599)"),
                    ));
                }
                s.insert(*code);
            }
            s
        }
    };
    if retry_file.max_attempts == Some(0) {
        return Err(cfg_err(
            at("routing.retry.max_attempts"),
            "must be at least 1",
        ));
    }
    if retry_file.budget_percent.is_some_and(|p| p > 1000) {
        return Err(cfg_err(
            at("routing.retry.budget_percent"),
            "must be at most 1000",
        ));
    }
    let retry = RetryPolicy {
        max_attempts: retry_file.max_attempts,
        on_status,
        max_retry_after: Duration::from_millis(retry_file.max_retry_after_ms.unwrap_or(60_000)),
    };
    let health_file = routing.health.clone().unwrap_or_default();
    let health_policy = HealthPolicy {
        failures: health_file.failures.unwrap_or(3),
        cooldown: Duration::from_millis(health_file.cooldown_ms.unwrap_or(30_000).max(1)),
    };

    // Semantic routing topics.
    let route_threshold = routing.threshold.unwrap_or(DEFAULT_ROUTE_THRESHOLD);
    let mut route_topics = Vec::new();
    for (ri, rf) in pf.routes.iter().enumerate() {
        for (ti, tf) in rf.topics.iter().enumerate() {
            let path = rat(ri, &format!("topics[{ti}]"));
            route_topics.push(topic(tf, ri, &path, route_threshold)?);
        }
    }

    // The prompt guard.
    let mut guard_topics = Vec::new();
    let guard = match &pf.prompt_guard {
        None => None,
        Some(g) => {
            let gt = g.threshold.unwrap_or(DEFAULT_GUARD_THRESHOLD);
            for (ti, tf) in g.deny.iter().enumerate() {
                let path = at(&format!("prompt_guard.deny[{ti}]"));
                guard_topics.push(topic(tf, ti, &path, gt)?);
            }
            Some(PromptGuard {
                topics: guard_topics.iter().map(|t| t.name.clone()).collect(),
                on_error: g.on_error.unwrap_or(GuardOnError::Reject),
            })
        }
    };

    let needs_service = if strategy == RoutingStrategy::Semantic {
        Some("the semantic strategy")
    } else if guard.is_some() {
        Some("the prompt guard")
    } else {
        None
    };
    let semantic = match (&pf.semantic_service, needs_service) {
        // Refused above (proxy_rules) when one is set without the other.
        (None, _) | (Some(_), None) => None,
        (Some(s), Some(_)) => {
            let sat = |field: &str| at(&format!("semantic_service.{field}"));
            let Some((prov_i, prov)) = providers
                .iter()
                .enumerate()
                .find(|(_, p)| p.name == s.provider)
            else {
                return Err(cfg_err(
                    sat("provider"),
                    format!("no provider named `{}`", s.provider),
                ));
            };
            if matches!(prov.kind, ProviderKind::Anthropic | ProviderKind::Bedrock) {
                return Err(cfg_err(
                    sat("provider"),
                    format!(
                        "provider type `{}` offers no embeddings; use openai, azure-openai, mistral, gemini or openai-compatible",
                        prov.kind.label()
                    ),
                ));
            }
            let rf = RouteFile {
                provider: s.provider.clone(),
                model: Some(s.model.clone()),
                base_url: None,
                api_key: None,
                name: None,
                models: None,
                weight: None,
                priority: None,
                topics: Vec::new(),
            };
            let route = crate::upstream::build_route(&rf, prov, prov_i, &sat, env, egress, None)?;
            Some(Semantic::new(
                SemanticService {
                    route,
                    model: s.model.clone(),
                    dimensions: s.dimensions,
                    timeout: Duration::from_millis(s.timeout_ms.unwrap_or(2_000)),
                },
                route_topics,
                guard_topics,
            ))
        }
    };

    Ok(RoutingTable {
        strategy,
        fallback,
        aliases,
        exact,
        prefixes,
        order,
        weights,
        retry,
        health_policy,
        health: routes.iter().map(|_| RouteHealth::default()).collect(),
        budget: RetryBudget::new(
            retry_file.budget_percent.unwrap_or(20),
            retry_file.min_retry_concurrency.unwrap_or(3),
        ),
        semantic,
        guard,
        metrics_attached: AtomicBool::new(false),
    })
}

/// One topic from the file (already checked by `proxy_rules`): inline
/// utterances plus those of its file, which must hold some.
fn topic(
    tf: &TopicFile,
    target: usize,
    path: &str,
    default_threshold: f32,
) -> Result<Topic, ConfigError> {
    let threshold = tf.threshold.unwrap_or(default_threshold);
    let mut utterances: Vec<String> = tf
        .utterances
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if let Some(file) = &tf.utterances_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            cfg_err(
                format!("{path}.utterances_file"),
                format!("cannot read {file}: {e}"),
            )
        })?;
        utterances.extend(parse_utterances(&text));
    }
    if utterances.is_empty() {
        return Err(cfg_err(
            format!("{path}.utterances"),
            format!("topic `{}` has no utterances", tf.name),
        ));
    }
    let mut seen = HashSet::new();
    utterances.retain(|u| seen.insert(u.clone()));
    Ok(Topic {
        name: tf.name.clone(),
        target,
        threshold,
        utterances,
    })
}

/// Utterances of a plain-text file: one per line, trimmed; blank lines and
/// `#` comments skipped.
pub fn parse_utterances(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
}
