//! Unit tests of route selection, validation and the attempt walk.

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;

use super::*;
use crate::config::{ConfigError, RouteFile, parse_file};
use crate::health::HealthPolicy;
use crate::routing::pick::SplitMix64;
use crate::runtime::{Proxy, build_runtime};

fn env(name: &str) -> Option<String> {
    (name == "KEY").then(|| "sk".to_owned())
}

const PROVIDERS: &str = r#"
providers:
  - { name: openai, type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: [gpt-4o, gpt-4o-mini] }
  - { name: anthropic, type: anthropic, base_url: "http://127.0.0.1:9", api_key: k, models: [claude-sonnet-4-5] }
  - { name: local, type: openai-compatible, base_url: "http://127.0.0.1:9/v1" }
  - { name: embedder, type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k }
"#;

/// The first proxy of a configuration made of `PROVIDERS` and `proxy`
/// (YAML for one proxy, without the leading dash).
fn proxy(proxy: &str) -> Arc<Proxy> {
    let rt = runtime(proxy).unwrap_or_else(|e| panic!("{e}"));
    rt.proxies.values().next().unwrap().clone()
}

fn runtime(proxy: &str) -> Result<crate::runtime::Runtime, ConfigError> {
    let indented = proxy.replace('\n', "\n    ");
    let text = format!("{PROVIDERS}proxies:\n  - name: p\n    {indented}\n");
    build_runtime(&parse_file(&text)?, &env)
}

fn err(proxy: &str) -> ConfigError {
    match runtime(proxy) {
        Ok(_) => panic!("accepted: {proxy}"),
        Err(e) => e,
    }
}

/// A route for tests that need one without a proxy.
pub(crate) fn dummy_route(name: &str) -> Route {
    let rf = RouteFile {
        provider: "local".into(),
        model: None,
        base_url: None,
        api_key: None,
        name: Some(name.into()),
        models: None,
        weight: None,
        priority: None,
        topics: Vec::new(),
    };
    let file = parse_file(&format!("{PROVIDERS}proxies: []")).unwrap();
    crate::upstream::build_route(
        &rf,
        &file.providers[2],
        2,
        &|f| f.to_owned(),
        &env,
        &[],
        None,
    )
    .unwrap()
}

fn names(p: &Proxy, c: &[(usize, String)]) -> Vec<String> {
    c.iter()
        .map(|(ri, m)| format!("{}:{m}", p.routes[*ri].name))
        .collect()
}

fn pick(p: &Proxy, model: &str) -> Vec<String> {
    let mut g = SplitMix64(1);
    names(
        p,
        &candidates(
            p.routed(),
            bare_model(p.routed(), model),
            None,
            1,
            &mut || g.next_u64(),
        ),
    )
}

#[test]
fn one_route_is_single_and_keeps_the_old_behaviour() {
    let p = proxy("routes: [{ provider: openai }]");
    assert_eq!(p.routing.strategy, RoutingStrategy::Single);
    assert_eq!(pick(&p, "gpt-4o"), ["openai:gpt-4o"]);
    assert_eq!(pick(&p, "p:gpt-4o"), ["openai:gpt-4o"]);
    assert!(pick(&p, "gpt-3").is_empty());
    assert!(pick(&p, "").is_empty());
    let t = proxy("routes: [{ provider: openai, model: gpt-4o-mini }]");
    assert_eq!(pick(&t, "anything"), ["openai/gpt-4o-mini:gpt-4o-mini"]);
}

#[test]
fn model_based_matches_names_aliases_and_prefixes_then_falls_back() {
    let p = proxy(
        r#"routes:
  - { provider: openai }
  - { provider: anthropic }
  - { provider: local, name: llama, models: [llama-3.1-8b] }
routing:
  strategy: model-based
  aliases: { smart: claude-sonnet-4-5, fast: "openai/gpt-4o-mini" }
  fallback: { route: openai, model: gpt-4o-mini }"#,
    );
    // Exact names, from the provider's list and the route's own.
    assert_eq!(pick(&p, "gpt-4o"), ["openai:gpt-4o", "openai:gpt-4o-mini"]);
    assert_eq!(
        pick(&p, "claude-sonnet-4-5"),
        ["anthropic:claude-sonnet-4-5", "openai:gpt-4o-mini"]
    );
    assert_eq!(
        pick(&p, "llama-3.1-8b"),
        ["llama:llama-3.1-8b", "openai:gpt-4o-mini"]
    );
    // The proxy prefix is stripped, aliases resolve.
    assert_eq!(
        pick(&p, "p:smart"),
        ["anthropic:claude-sonnet-4-5", "openai:gpt-4o-mini"]
    );
    // `provider/model` and `route/model`; the fallback is not repeated.
    assert_eq!(pick(&p, "fast"), ["openai:gpt-4o-mini"]);
    assert_eq!(
        pick(&p, "llama/llama-3.1-8b"),
        ["llama:llama-3.1-8b", "openai:gpt-4o-mini"]
    );
    // A prefix does not widen a route's model list.
    assert_eq!(pick(&p, "anthropic/claude-opus"), ["openai:gpt-4o-mini"]);
    // Unknown models go to the fallback.
    assert_eq!(pick(&p, "mistral-large"), ["openai:gpt-4o-mini"]);
    // The aliases are listed by GET /models.
    assert!(
        p.models.contains(&"smart".to_owned()) && p.models.contains(&"llama-3.1-8b".to_owned())
    );

    let strict = proxy(
        r#"routes: [{ provider: openai }, { provider: anthropic }]
routing: { strategy: model-based }"#,
    );
    assert!(pick(&strict, "mistral-large").is_empty());
    assert_eq!(pick(&strict, "openai/gpt-4o"), ["openai:gpt-4o"]);
}

#[test]
fn failover_follows_priority_and_skips_ejected_routes() {
    let p = proxy(
        r#"routes:
  - { provider: local, name: a, model: m-a, priority: 2 }
  - { provider: local, name: b, model: m-b, priority: 1 }
  - { provider: local, name: c, model: m-c }
routing: { strategy: failover, health: { failures: 1, cooldown_ms: 1000 } }"#,
    );
    assert_eq!(pick(&p, "x"), ["b:m-b", "a:m-a", "c:m-c"]);
    // Eject b at t=10: it is left out until its cool-down ends at 1010.
    let policy = p.routing.health_policy;
    assert_eq!(
        policy,
        HealthPolicy {
            failures: 1,
            cooldown: Duration::from_millis(1000)
        }
    );
    p.routing.health[1].record_failure(10, &policy);
    let mut rng = || 0u64;
    let at = |t: u64, rng: &mut dyn FnMut() -> u64| {
        names(&p, &candidates(p.routed(), "x", None, t, rng))
    };
    assert_eq!(at(500, &mut rng), ["a:m-a", "c:m-c"]);
    // The one request after the cool-down probes it first; others skip it.
    assert_eq!(at(1010, &mut rng), ["b:m-b", "a:m-a", "c:m-c"]);
    assert_eq!(at(1011, &mut rng), ["a:m-a", "c:m-c"]);
    // With every route out, all are tried anyway, in order.
    for i in 0..3 {
        p.routing.health[i].record_failure(2000, &policy);
    }
    assert_eq!(at(2100, &mut rng), ["b:m-b", "a:m-a", "c:m-c"]);
}

#[test]
fn weighted_order_follows_weights_and_skips_ejected_routes() {
    let p = proxy(
        r#"routes:
  - { provider: local, name: heavy, model: m, weight: 3 }
  - { provider: local, name: light, model: m, weight: 1 }
  - { provider: local, name: standby, model: m, weight: 0 }
routing: { strategy: weighted }"#,
    );
    let mut g = SplitMix64(99);
    let mut first = std::collections::HashMap::new();
    for _ in 0..4000 {
        let c = candidates(p.routed(), "x", None, 1, &mut || g.next_u64());
        assert_eq!(c.len(), 3);
        assert_eq!(p.routes[c[2].0].name, "standby");
        *first.entry(p.routes[c[0].0].name.clone()).or_insert(0) += 1;
    }
    // 3000 expected for heavy (sd 27); standby never first.
    let heavy = first["heavy"];
    assert!((2850..3150).contains(&heavy), "{first:?}");
    assert_eq!(first.get("standby"), None);
    // An ejected route gets no picks.
    let policy = HealthPolicy {
        failures: 1,
        cooldown: Duration::from_secs(60),
    };
    p.routing.health[0].record_failure(1, &policy);
    for _ in 0..100 {
        let c = candidates(p.routed(), "x", None, 2, &mut || g.next_u64());
        assert_eq!(names(&p, &c), ["light:m", "standby:m"]);
    }
}

#[test]
fn semantic_candidates_are_the_topic_route_then_the_fallback() {
    let p = proxy(
        r#"routes:
  - { provider: local, name: code, model: coder, topics: [{ name: coding, utterances: [write code] }] }
  - { provider: local, name: general, model: chat }
routing: { strategy: semantic, fallback: { route: general } }
semantic_service: { provider: embedder, model: emb }"#,
    );
    let mut rng = || 0u64;
    assert_eq!(
        names(&p, &candidates(p.routed(), "x", Some(0), 1, &mut rng)),
        ["code:coder", "general:chat"]
    );
    assert_eq!(
        names(&p, &candidates(p.routed(), "x", None, 1, &mut rng)),
        ["general:chat"]
    );
    let sem = p.routing.semantic.as_ref().unwrap();
    assert_eq!(sem.route_topics[0].name, "coding");
    assert_eq!(
        sem.route_topics[0].threshold,
        table::DEFAULT_ROUTE_THRESHOLD
    );
    assert_eq!(sem.service.timeout, Duration::from_secs(2));
}

#[tokio::test]
async fn a_new_configuration_keeps_indexes_of_unchanged_topics() {
    let semantic = |utterance: &str, model: &str| {
        proxy(&format!(
            "routes:\n  - {{ provider: local, name: code, topics: [{{ name: coding, utterances: [{utterance}] }}] }}\n  - {{ provider: local, name: general }}\nrouting: {{ strategy: semantic, fallback: {{ route: general }} }}\nsemantic_service: {{ provider: embedder, model: {model} }}"
        ))
    };
    let embedder = crate::semantic::tests::BagOfWords::new(16);
    let old = semantic("write code", "emb");
    let old_sem = old.routing.semantic.as_ref().unwrap();
    old_sem.indexes(&embedder).await.unwrap();
    let calls = || embedder.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(calls(), 1);

    // Same service and topics: the indexes are taken over, nothing embedded.
    let same = semantic("write code", "emb");
    let sem = same.routing.semantic.as_ref().unwrap();
    sem.adopt(old_sem);
    sem.indexes(&embedder).await.unwrap();
    assert_eq!(calls(), 1);
    // Another utterance or another model: embedded afresh.
    for changed in [
        semantic("fix my code", "emb"),
        semantic("write code", "emb-2"),
    ] {
        let sem = changed.routing.semantic.as_ref().unwrap();
        sem.adopt(old_sem);
        let before = calls();
        sem.indexes(&embedder).await.unwrap();
        assert_eq!(calls(), before + 1);
    }
}

#[test]
fn a_new_configuration_keeps_the_health_of_unchanged_routes() {
    let config = |b_model: &str| {
        runtime(&format!(
            "routes:\n  - {{ provider: local, name: a, model: m }}\n  - {{ provider: local, name: b, model: {b_model} }}\nrouting: {{ strategy: failover, health: {{ failures: 1, cooldown_ms: 60000 }} }}"
        ))
        .unwrap()
    };
    let first = |rt: &crate::runtime::Runtime| rt.proxies.values().next().unwrap().clone();
    let old = config("m");
    let p = first(&old);
    let policy = p.routing.health_policy.clone();
    for h in &p.routing.health {
        h.record_failure(now_ms(), &policy);
        assert!(!h.is_healthy());
    }
    // Route a unchanged, route b now sends another model.
    let new = config("other");
    new.carry_health_from(&old);
    let q = first(&new);
    assert!(!q.routing.health[0].is_healthy(), "a stays ejected");
    assert!(q.routing.health[1].is_healthy(), "b is a new route");
}

#[test]
fn max_attempts_caps_the_candidates() {
    let p = proxy(
        r#"routes:
  - { provider: local, name: a, model: m }
  - { provider: local, name: b, model: m }
  - { provider: local, name: c, model: m }
routing: { strategy: failover, retry: { max_attempts: 2 } }"#,
    );
    assert_eq!(pick(&p, "x"), ["a:m", "b:m"]);
}

#[test]
fn validation_names_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "routes: [{ provider: openai }, { provider: anthropic }]",
            "proxies[0].routing.strategy",
            "required when a proxy has several routes",
        ),
        (
            "routes: [{ provider: openai }, { provider: anthropic }]\nrouting: { strategy: single }",
            "proxies[0].routing.strategy",
            "exactly one route",
        ),
        (
            "routes: [{ provider: openai }, { provider: openai }]\nrouting: { strategy: failover }",
            "proxies[0].routes[1].name",
            "give one of them a `name`",
        ),
        (
            "routes: [{ provider: openai }, { provider: anthropic }]\nrouting: { strategy: failover, fallback: { route: nope } }",
            "proxies[0].routing.fallback.route",
            "no route named `nope` (routes: openai, anthropic)",
        ),
        (
            "routes: [{ provider: openai }, { provider: openai, name: b }]\nrouting: { strategy: model-based }",
            "proxies[0].routes[1].provider",
            "model `gpt-4o` is also served by route `openai`",
        ),
        (
            "routes: [{ provider: openai, model: x }, { provider: anthropic, model: x }]\nrouting: { strategy: model-based }",
            "proxies[0].routes[1].model",
            "also served",
        ),
        (
            "routes: [{ provider: openai }]\nrouting: { strategy: model-based, aliases: { smart: gpt-9 } }",
            "proxies[0].routing.aliases.smart",
            "no route serves `gpt-9`",
        ),
        (
            "routes: [{ provider: openai, weight: 0 }, { provider: anthropic, weight: 0 }]\nrouting: { strategy: weighted }",
            "proxies[0].routes",
            "weight above 0",
        ),
        (
            "routes: [{ provider: openai }, { provider: anthropic }]\nrouting: { strategy: failover, retry: { on_status: [500, 200] } }",
            "proxies[0].routing.retry.on_status[1]",
            "200 is not an error status",
        ),
        (
            "routes: [{ provider: openai }]\nrouting: { retry: { max_attempts: 0 } }",
            "proxies[0].routing.retry.max_attempts",
            "at least 1",
        ),
        (
            "routes: [{ provider: openai, topics: [{ name: t, utterances: [x] }] }]",
            "proxies[0].routes[0].topics",
            "only the semantic strategy",
        ),
        (
            "routes: [{ provider: openai, topics: [{ name: t, utterances: [x] }] }, { provider: anthropic }]\nrouting: { strategy: semantic, fallback: { route: anthropic } }",
            "proxies[0].semantic_service",
            "required by the semantic strategy",
        ),
        (
            "routes: [{ provider: openai, topics: [{ name: t, utterances: [x] }] }, { provider: anthropic }]\nrouting: { strategy: semantic }\nsemantic_service: { provider: embedder, model: e }",
            "proxies[0].routing.fallback",
            "needs a fallback route",
        ),
        (
            "routes: [{ provider: openai, topics: [{ name: t, utterances: [x] }] }, { provider: anthropic }]\nrouting: { strategy: semantic, threshold: 1.5, fallback: { route: anthropic } }\nsemantic_service: { provider: embedder, model: e }",
            "proxies[0].routing.threshold",
            "between 0 and 1",
        ),
        (
            "routes: [{ provider: openai, topics: [{ name: t, utterances: [] }] }, { provider: anthropic }]\nrouting: { strategy: semantic, fallback: { route: anthropic } }\nsemantic_service: { provider: embedder, model: e }",
            "proxies[0].routes[0].topics[0].utterances",
            "has no utterances",
        ),
        (
            "routes: [{ provider: openai }]\nprompt_guard: { deny: [{ name: t, utterances: [x] }] }\nsemantic_service: { provider: anthropic, model: e }",
            "proxies[0].semantic_service.provider",
            "offers no embeddings",
        ),
        (
            "routes: [{ provider: openai }]\nprompt_guard: { deny: [{ name: t, utterances: [x] }, { name: t, utterances: [y] }] }\nsemantic_service: { provider: embedder, model: e }",
            "proxies[0].prompt_guard.deny[1].name",
            "defined twice",
        ),
        (
            "routes: [{ provider: openai }]\nprompt_guard: { deny: [{ name: t, utterances_file: /nonexistent/u.txt }] }\nsemantic_service: { provider: embedder, model: e }",
            "proxies[0].prompt_guard.deny[0].utterances_file",
            "cannot read /nonexistent/u.txt",
        ),
        (
            "routes: [{ provider: openai }]\nsemantic_service: { provider: embedder, model: e }",
            "proxies[0].semantic_service",
            "neither the semantic strategy nor a prompt guard uses it",
        ),
    ];
    for (yaml, path, message) in cases {
        let e = err(yaml);
        assert_eq!(e.path, *path, "{yaml}\n{e}");
        assert!(e.message.contains(message), "{yaml}\n{e}");
    }
    // Unknown fields in the new sections are named by the parser.
    let e = err("routes: [{ provider: openai }]\nrouting: { strategy: single, retries: {} }");
    assert_eq!(e.path, "proxies[0].routing.retries");
}

#[test]
fn utterance_files_are_read_relative_to_the_config() {
    let dir = std::env::temp_dir().join(format!("portcullis-routing-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("topics")).unwrap();
    std::fs::write(
        dir.join("topics/billing.txt"),
        "# billing questions\nwhy was I charged twice\n\n  refund my last invoice  \nwhy was I charged twice\n",
    )
    .unwrap();
    let config = format!(
        "{PROVIDERS}proxies:\n  - name: p\n    routes:\n      - {{ provider: openai, topics: [{{ name: billing, utterances: [cancel my plan], utterances_file: topics/billing.txt }}] }}\n      - {{ provider: anthropic }}\n    routing: {{ strategy: semantic, fallback: {{ route: anthropic }} }}\n    semantic_service: {{ provider: embedder, model: e }}\n"
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, config).unwrap();
    let rt = crate::runtime::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let p = rt.proxies.values().next().unwrap();
    let sem = p.routing.semantic.as_ref().unwrap();
    // Inline first, then the file's lines: trimmed, comments, blanks and
    // repeats dropped.
    assert_eq!(
        sem.route_topics[0].utterances,
        [
            "cancel my plan",
            "why was I charged twice",
            "refund my last invoice"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn attempts<'p>(p: &'p Proxy, metrics: &'p RoutingMetrics, model: &str) -> Attempts<'p> {
    p.routing.attach_metrics(&p.id, &p.routes, metrics);
    let candidates = candidates(p.routed(), model, None, now_ms(), &mut || 0);
    Attempts {
        proxy: p.routed(),
        metrics,
        candidates,
        pos: 0,
        _request: p.routing.budget.request(),
        retrying: None,
    }
}

const THREE: &str = r#"routes:
  - { provider: local, name: a, model: m }
  - { provider: local, name: b, model: m }
  - { provider: local, name: c, model: m }
routing: { strategy: failover, health: { failures: 2, cooldown_ms: 60000 }, retry: { max_retry_after_ms: 5000 } }"#;

#[test]
fn failures_move_on_only_when_the_policy_says_so() {
    let p = proxy(THREE);
    let m = RoutingMetrics::new(&Registry::new());
    let mut a = attempts(&p, &m, "x");
    assert_eq!(a.route().name, "a");
    a.failed(GatewayError::upstream_status(500, "boom"), "r", true)
        .unwrap();
    assert_eq!(a.route().name, "b");
    a.failed(GatewayError::upstream_timeout("slow"), "r", true)
        .unwrap();
    assert_eq!((a.route().name.as_str(), a.tried()), ("c", 3));
    // The last candidate's error is the answer, naming the route.
    let e = a
        .failed(GatewayError::upstream_connect("down"), "r", true)
        .unwrap_err();
    assert!(
        e.headers
            .contains(&("x-portcullis-route".into(), "c".into()))
    );
    assert_eq!(
        m.failovers
            .with_label_values(&["p", "a", "status_5xx"])
            .get(),
        1
    );
    assert_eq!(
        m.failovers.with_label_values(&["p", "b", "timeout"]).get(),
        1
    );
    drop(a);

    // A client error is not retried, and does not hurt the route.
    let mut a = attempts(&p, &m, "x");
    let e = a
        .failed(GatewayError::upstream_status(400, "bad"), "r", true)
        .unwrap_err();
    assert_eq!(e.status, 400);
    let e = attempts(&p, &m, "x")
        .failed(GatewayError::invalid_request("no"), "r", true)
        .unwrap_err();
    assert!(e.headers.is_empty());
    // A provider 401 (shown as 502) is not in the default list either.
    let e = attempts(&p, &m, "x")
        .failed(GatewayError::upstream_status(401, "key"), "r", true)
        .unwrap_err();
    assert_eq!(e.status, 502);
    assert!(p.routing.health[0].is_healthy());
}

#[test]
fn consecutive_failures_eject_and_retry_after_pauses() {
    let p = proxy(THREE);
    let m = RoutingMetrics::new(&Registry::new());
    for _ in 0..2 {
        let mut a = attempts(&p, &m, "x");
        a.failed(GatewayError::upstream_status(503, "x"), "r", true)
            .unwrap();
        a.finished(None);
    }
    assert!(!p.routing.health[0].is_healthy());
    assert_eq!(
        m.ejections.with_label_values(&["p", "a", "failures"]).get(),
        1
    );
    assert_eq!(m.route_healthy.with_label_values(&["p", "a"]).get(), 0);
    assert_eq!(m.route_healthy.with_label_values(&["p", "b"]).get(), 1);
    // b answers 429 with retry-after 30 s: paused for the 5 s bound.
    let mut a = attempts(&p, &m, "x");
    assert_eq!(a.route().name, "b");
    let before = now_ms();
    a.failed(
        GatewayError::upstream_status(429, "slow down").with_header("retry-after", "30"),
        "r",
        true,
    )
    .unwrap();
    assert_eq!(a.route().name, "c");
    assert_eq!(
        m.ejections
            .with_label_values(&["p", "b", "rate_limited"])
            .get(),
        1
    );
    let h = &p.routing.health[1];
    assert_eq!(
        h.admit(before + 4_000),
        crate::health::Admission::Unavailable
    );
    assert_eq!(h.admit(now_ms() + 5_000), crate::health::Admission::Probe);
}

#[test]
fn the_budget_stops_retries_from_multiplying_load() {
    let p = proxy(&THREE.replace(
        "max_retry_after_ms: 5000",
        "max_retry_after_ms: 5000, budget_percent: 0, min_retry_concurrency: 1",
    ));
    let m = RoutingMetrics::new(&Registry::new());
    let mut first = attempts(&p, &m, "x");
    let mut second = attempts(&p, &m, "x");
    first
        .failed(GatewayError::upstream_status(500, "x"), "r", true)
        .unwrap();
    // The one retry slot is taken; the second request answers its error.
    let e = second
        .failed(GatewayError::upstream_status(500, "x"), "r", true)
        .unwrap_err();
    assert_eq!(e.status, 500);
    assert_eq!(m.budget_exhausted.with_label_values(&["p"]).get(), 1);
    // The first keeps its slot for further retries.
    first
        .failed(GatewayError::upstream_status(500, "x"), "r", true)
        .unwrap();
    assert_eq!(first.route().name, "c");
    drop(first);
    let mut third = attempts(&p, &m, "x");
    third
        .failed(GatewayError::upstream_status(502, "x"), "r", true)
        .unwrap();
}

#[test]
fn retry_status_list_is_configurable() {
    let p = proxy(&THREE.replace("max_retry_after_ms: 5000", "on_status: [503]"));
    let m = RoutingMetrics::new(&Registry::new());
    assert!(
        attempts(&p, &m, "x")
            .failed(GatewayError::upstream_status(500, "x"), "r", true)
            .is_err()
    );
    assert!(
        attempts(&p, &m, "x")
            .failed(GatewayError::upstream_status(503, "x"), "r", true)
            .is_ok()
    );
    // Connect errors always move on.
    assert!(
        attempts(&p, &m, "x")
            .failed(GatewayError::upstream_connect("x"), "r", true)
            .is_ok()
    );
}

#[test]
fn a_stream_cut_after_output_counts_against_the_route() {
    let p = proxy(&THREE.replace("failures: 2", "failures: 1"));
    let m = RoutingMetrics::new(&Registry::new());
    let mut a = attempts(&p, &m, "x");
    a.finished(Some(ErrorKind::UpstreamProtocol));
    assert!(!p.routing.health[0].is_healthy());
    let mut b = attempts(&p, &m, "x");
    assert_eq!(b.route().name, "b");
    // A client that went away is not the route's fault.
    b.finished(Some(ErrorKind::Internal));
    assert!(p.routing.health[1].is_healthy());
}

#[test]
fn retry_after_parsing() {
    let e = |v: &str| GatewayError::upstream_status(429, "x").with_header("retry-after", v);
    assert_eq!(retry_after(&e("7")), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(&e(" 1.5 ")), Some(Duration::from_millis(1500)));
    // An HTTP date in the past: retry without waiting.
    assert_eq!(
        retry_after(&e("Wed, 21 Oct 2015 07:28:00 GMT")),
        Some(Duration::ZERO)
    );
    assert_eq!(retry_after(&e("-3")), None);
    assert_eq!(retry_after(&GatewayError::upstream_status(429, "x")), None);
    assert_eq!(
        provider_status(&GatewayError::upstream_status(401, "x")),
        401
    );
    assert_eq!(provider_status(&GatewayError::upstream_timeout("x")), 504);
}
