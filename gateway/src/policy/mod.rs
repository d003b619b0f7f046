//! The policy engine: sandboxed WebAssembly policies run on every request.
//!
//! Policies are components of the `portcullis:policy/policy-world@0.1.0`
//! world (`sdk/wit/policy.wit`). A proxy attaches an ordered chain of them
//! in the gateway config (`proxies[].policies`); the chain is compiled and
//! validated when the configuration loads ([`chain_for_proxy`]) and run per
//! request by the server through a [`ChainRun`]:
//!
//! 1. `on_request` before routing: continue (with response headers),
//!    modify, reject, or respond directly (cache hit);
//! 2. `on_response` on whole responses, `on_chunk`/`finish_stream` on
//!    streams (held back whole when a policy needs the whole text);
//! 3. `complete` after the answer, for accounting.
//!
//! See docs/policies.md for the author's side and the design decisions.

pub mod backend;
pub mod bench;
pub mod chain;
pub mod engine;
pub mod manifest;
pub mod render;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use chain::{Chain, ChainRun, RequestMeta, RequestOutcome, response_to_chunks};
pub use engine::{EmbeddingsSettings, EngineSettings, PolicyEngine};
use manifest::{Artifact, DirSource, PolicySource};
use portcullis_types::gateway_config::{FileConfig, PolicyEngineFile, ProxyFile};

use crate::config::ConfigError;

fn err(path: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path,
        message: message.into(),
    }
}

/// The engine settings a configuration asks for.
pub fn engine_settings(
    f: &PolicyEngineFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EngineSettings, ConfigError> {
    let d = EngineSettings::default();
    let embeddings = match &f.embeddings {
        Some(e) => {
            let api_key = match &e.api_key_env {
                Some(var) => Some(env(var).ok_or_else(|| {
                    err(
                        "policy_engine.embeddings.api_key_env".into(),
                        format!("environment variable {var} is not set"),
                    )
                })?),
                None => None,
            };
            Some(EmbeddingsSettings {
                url: e.url.clone(),
                model: e.model.clone(),
                api_key,
            })
        }
        None => None,
    };
    let memory_limit = f.memory_limit_mb.map(|m| m << 20).unwrap_or(d.memory_limit);
    if !(1 << 20..=4 << 30).contains(&memory_limit) {
        return Err(err(
            "policy_engine.memory_limit_mb".into(),
            "must be between 1 and 4096",
        ));
    }
    Ok(EngineSettings {
        timeout: f.timeout_ms.map(Duration::from_millis).unwrap_or(d.timeout),
        memory_limit,
        max_instances: f.max_instances.unwrap_or(d.max_instances).max(1),
        reuse_instances: f.reuse_instances.unwrap_or(d.reuse_instances),
        max_idle_instances: f.max_idle_instances.unwrap_or(d.max_idle_instances),
        redis_url: f.redis_url.clone(),
        cache_max_bytes: f.cache_max_bytes.unwrap_or(d.cache_max_bytes),
        embeddings,
    })
}

/// Engines alive in this process, by settings: a reload with the same
/// engine settings reuses the engine, its compiled modules and its
/// in-process counters and cache (limits survive a reload).
static ENGINES: Mutex<Vec<(String, Weak<PolicyEngine>)>> = Mutex::new(Vec::new());

fn shared_engine(settings: EngineSettings) -> Result<Arc<PolicyEngine>, String> {
    let key = format!("{settings:?}");
    let mut engines = match ENGINES.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    engines.retain(|(_, w)| w.strong_count() > 0);
    if let Some(e) = engines
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(e);
    }
    let e = PolicyEngine::new(settings)?;
    engines.push((key, Arc::downgrade(&e)));
    Ok(e)
}

/// Builds proxy `pi`'s chain, creating the configuration's engine on first
/// use. `None` when the proxy attaches no policy.
pub fn chain_for_proxy(
    engine: &mut Option<Arc<PolicyEngine>>,
    file: &FileConfig,
    pi: usize,
    pf: &ProxyFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Arc<Chain>>, ConfigError> {
    if pf.policies.is_empty() {
        return Ok(None);
    }
    let ef = file.policy_engine.clone().unwrap_or_default();
    let engine = match engine {
        Some(e) => e.clone(),
        None => {
            let e = shared_engine(engine_settings(&ef, env)?)
                .map_err(|m| err("policy_engine".into(), m))?;
            *engine = Some(e.clone());
            e
        }
    };
    let mut sources: Vec<Box<dyn PolicySource>> = ef
        .dirs
        .iter()
        .map(|d| Box::new(DirSource(PathBuf::from(d))) as Box<dyn PolicySource>)
        .collect();
    // Hook: the policy hub, after local directories (crate::policy_fetch).
    if let Some(hub) = &ef.hub {
        let source = crate::policy_fetch::HubSource::new(hub)
            .map_err(|m| err("policy_engine.hub".into(), m))?;
        sources.push(Box::new(source));
    }
    let mut attached = Vec::new();
    for (ai, a) in pf.policies.iter().enumerate() {
        let at = format!("proxies[{pi}].policies[{ai}]");
        let artifact = find_artifact(a, &sources).map_err(|m| err(at.clone(), m))?;
        if artifact.manifest.name != a.name {
            return Err(err(
                format!("{at}.name"),
                format!(
                    "the module at {} is the policy `{}`",
                    artifact.origin, artifact.manifest.name
                ),
            ));
        }
        let module = engine.load(&artifact).map_err(|m| err(at.clone(), m))?;
        let overrides = if a.settings.is_null() {
            serde_json::json!({})
        } else {
            a.settings.clone()
        };
        let settings = manifest::merge_settings(&artifact.manifest.defaults, &overrides);
        manifest::validate_settings(&artifact.manifest, &settings)
            .map_err(|(ptr, m)| err(format!("{at}.settings{ptr}"), m))?;
        let att = Chain::attach(&engine, module, &settings, a.on_error)
            .map_err(|(ptr, m)| err(format!("{at}.settings{ptr}"), m))?;
        attached.push(att);
    }
    Ok(Some(Arc::new(Chain::new(engine, attached))))
}

/// The artifact an attachment names: its `module` path, else the first
/// policy directory that has it. (The policy hub becomes one more source.)
fn find_artifact(
    a: &portcullis_types::gateway_config::PolicyAttachmentFile,
    sources: &[Box<dyn PolicySource>],
) -> Result<Artifact, String> {
    if let Some(path) = &a.module {
        let art = manifest::read_artifact(std::path::Path::new(path))?;
        if let Some(v) = &a.version {
            if *v != art.manifest.version {
                return Err(format!(
                    "{path} is version {}, not {v}",
                    art.manifest.version
                ));
            }
        }
        return Ok(art);
    }
    for s in sources {
        if let Some(art) = s.find(&a.name, a.version.as_deref())? {
            return Ok(art);
        }
    }
    Err(format!(
        "policy `{}`{} not found (set `module`, or add its directory to policy_engine.dirs)",
        a.name,
        a.version
            .as_deref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_reuse_settings_come_from_the_config() {
        let none = |_: &str| None;
        let d = engine_settings(&PolicyEngineFile::default(), &none).unwrap();
        assert!(d.reuse_instances);
        assert_eq!(d.max_idle_instances, 256);
        let f: PolicyEngineFile =
            serde_yaml::from_str("{ reuse_instances: false, max_idle_instances: 3 }").unwrap();
        let s = engine_settings(&f, &none).unwrap();
        assert!(!s.reuse_instances);
        assert_eq!(s.max_idle_instances, 3);
    }
}
