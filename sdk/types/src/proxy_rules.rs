//! The checks of a proxy that need nothing but the proxy itself: route
//! names, the routing strategy and its fallback, semantic topics and
//! thresholds, the prompt guard and the semantic service it needs. Admin
//! and the gateway both run them (admin on the gateway form of its proxy),
//! so admin refuses exactly what a gateway would refuse, naming the same
//! field. Checks that need more (providers, files, the network) stay with
//! each.

use std::collections::{HashMap, HashSet};

use crate::gateway_config::{ProxyFile, RouteFile, RoutingStrategy, TopicFile};

/// A refused proxy: the field at fault, relative to the proxy
/// (`routing.strategy`), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn err<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError {
        field: field.into(),
        message: message.into(),
    })
}

/// The name a route is known by (fallbacks, logs, metrics): its `name`,
/// else `provider/model`, else the provider.
pub fn route_name(rf: &RouteFile) -> String {
    match (&rf.name, &rf.model) {
        (Some(n), _) => n.clone(),
        (None, Some(m)) => format!("{}/{m}", rf.provider),
        (None, None) => rf.provider.clone(),
    }
}

/// The strategy a proxy routes by (`single` when it has one route and
/// says none).
pub fn strategy(pf: &ProxyFile) -> RoutingStrategy {
    pf.routing
        .as_ref()
        .and_then(|r| r.strategy)
        .unwrap_or(RoutingStrategy::Single)
}

/// Checks `pf` (see the module's comment). Topics may take their
/// utterances from a file (`utterances_file`): reading it is the
/// gateway's, so here a file counts as utterances.
pub fn check(pf: &ProxyFile) -> Result<(), FieldError> {
    let routes = &pf.routes;
    let mut names: HashMap<String, usize> = HashMap::new();
    for (ri, rf) in routes.iter().enumerate() {
        let name = route_name(rf);
        if name.is_empty() {
            return err(format!("routes[{ri}].name"), "must not be empty");
        }
        if let Some(first) = names.insert(name.clone(), ri) {
            let hint = if rf.name.is_none() {
                "; give one of them a `name`"
            } else {
                ""
            };
            return err(
                format!("routes[{ri}].name"),
                format!("route name `{name}` is already used by routes[{first}]{hint}"),
            );
        }
    }
    let routing = pf.routing.clone().unwrap_or_default();
    let n = routes.len();
    let strategy = match routing.strategy {
        Some(RoutingStrategy::Single) if n != 1 => {
            return err(
                "routing.strategy",
                format!("`single` takes exactly one route, this proxy has {n}"),
            );
        }
        Some(s) => s,
        None if n > 1 => {
            return err(
                "routing.strategy",
                "required when a proxy has several routes: single, model-based, weighted, failover or semantic",
            );
        }
        None => RoutingStrategy::Single,
    };
    if let Some(f) = &routing.fallback
        && !names.contains_key(&f.route)
    {
        let mut known: Vec<(&String, &usize)> = names.iter().collect();
        known.sort_by_key(|(_, i)| **i);
        let known: Vec<&str> = known.into_iter().map(|(n, _)| n.as_str()).collect();
        return err(
            "routing.fallback.route",
            format!(
                "no route named `{}` (routes: {})",
                f.route,
                known.join(", ")
            ),
        );
    }
    let semantic = strategy == RoutingStrategy::Semantic;
    if let Some(t) = routing.threshold {
        threshold("routing.threshold", t)?;
        if !semantic {
            return err(
                "routing.threshold",
                "only the semantic strategy uses a threshold",
            );
        }
    }
    let mut topic_names = HashSet::new();
    let mut route_topics = 0;
    for (ri, rf) in routes.iter().enumerate() {
        if !rf.topics.is_empty() && !semantic {
            return err(
                format!("routes[{ri}].topics"),
                "only the semantic strategy uses topics",
            );
        }
        for (ti, tf) in rf.topics.iter().enumerate() {
            topic(&format!("routes[{ri}].topics[{ti}]"), tf, &mut topic_names)?;
        }
        route_topics += rf.topics.len();
    }
    if semantic {
        if route_topics == 0 {
            return err(
                "routes",
                "semantic routing needs at least one route with topics",
            );
        }
        if routing.fallback.is_none() {
            return err(
                "routing.fallback",
                "semantic routing needs a fallback route for prompts that match no topic",
            );
        }
    }
    if let Some(g) = &pf.prompt_guard {
        if let Some(t) = g.threshold {
            threshold("prompt_guard.threshold", t)?;
        }
        if g.deny.is_empty() {
            return err("prompt_guard.deny", "list at least one denied topic");
        }
        for (ti, tf) in g.deny.iter().enumerate() {
            topic(&format!("prompt_guard.deny[{ti}]"), tf, &mut topic_names)?;
        }
    }
    let user = if semantic {
        Some("the semantic strategy")
    } else if pf.prompt_guard.is_some() {
        Some("the prompt guard")
    } else {
        None
    };
    match (&pf.semantic_service, user) {
        (None, Some(who)) => err("semantic_service", format!("required by {who}")),
        (Some(_), None) => err(
            "semantic_service",
            "set, but neither the semantic strategy nor a prompt guard uses it",
        ),
        (Some(s), Some(_)) if s.model.trim().is_empty() => {
            err("semantic_service.model", "must not be empty")
        }
        (Some(s), Some(_)) if s.timeout_ms == Some(0) => {
            err("semantic_service.timeout_ms", "must be above 0")
        }
        _ => Ok(()),
    }
}

fn threshold(field: &str, t: f32) -> Result<(), FieldError> {
    if (0.0..=1.0).contains(&t) {
        Ok(())
    } else {
        err(field, "must be between 0 and 1")
    }
}

/// One topic at `path`; route topics and denied topics share one set of
/// names per proxy.
fn topic(path: &str, tf: &TopicFile, names: &mut HashSet<String>) -> Result<(), FieldError> {
    if tf.name.is_empty() {
        return err(format!("{path}.name"), "must not be empty");
    }
    if !names.insert(tf.name.clone()) {
        return err(
            format!("{path}.name"),
            format!("topic `{}` is defined twice in this proxy", tf.name),
        );
    }
    if let Some(t) = tf.threshold {
        threshold(&format!("{path}.threshold"), t)?;
    }
    if tf.utterances_file.is_none() && tf.utterances.iter().all(|u| u.trim().is_empty()) {
        return err(
            format!("{path}.utterances"),
            format!("topic `{}` has no utterances", tf.name),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(v: serde_json::Value) -> ProxyFile {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_topic_may_take_its_utterances_from_a_file() {
        let guarded = |topic: serde_json::Value| {
            proxy(
                serde_json::json!({"name": "p", "routes": [{"provider": "a"}],
                "prompt_guard": {"deny": [topic]},
                "semantic_service": {"provider": "a", "model": "m"}}),
            )
        };
        assert_eq!(
            check(&guarded(
                serde_json::json!({"name": "t", "utterances_file": "t.txt"})
            )),
            Ok(())
        );
        let e = check(&guarded(
            serde_json::json!({"name": "t", "utterances": [" "]}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "prompt_guard.deny[0].utterances");
    }

    #[test]
    fn routes_are_named_by_name_model_or_provider() {
        let p = proxy(
            serde_json::json!({"name": "p", "routing": {"strategy": "failover"},
            "routes": [{"provider": "a"}, {"provider": "a", "model": "m"}, {"provider": "a"}]}),
        );
        let e = check(&p).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (
                "routes[2].name",
                "route name `a` is already used by routes[0]; give one of them a `name`"
            )
        );
        assert_eq!(route_name(&p.routes[1]), "a/m");
    }
}
