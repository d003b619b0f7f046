//! The policy engine: sandboxed WebAssembly policies run on every request.
//!
//! Policies are components of the `portcullis:policy/policy-world@0.1.0`
//! world (`sdk/wit/policy.wit`). A proxy attaches an ordered chain of them
//! in the gateway config (`proxies[].policies`); the chain is compiled and
//! validated when the configuration loads ([`ChainLoader`]) and run per
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
mod compiled;
pub mod engine;
pub mod fetch;
pub mod manifest;
pub mod render;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use chain::{CallerIds, Chain, ChainRun, RequestMeta, RequestOutcome, response_to_chunks};
pub use engine::{EmbeddingsSettings, EngineSettings, PolicyEngine};
use manifest::{Artifact, DirSource, PolicySource};
use portcullis_types::gateway_config::{FileConfig, PolicyEngineFile, ProxyFile};
use portcullis_types::policy::valid_sha256_hex;

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
            // Checked before any request: the endpoint gets the key.
            portcullis_net::check_control_url(
                &e.url,
                "policy_engine.embeddings.url",
                e.allow_insecure_http.unwrap_or(false),
                "policy_engine.embeddings.allow_insecure_http",
            )
            .map_err(|u| err("policy_engine.embeddings.url".into(), u.to_string()))?;
            Some(EmbeddingsSettings {
                url: e.url.clone(),
                model: e.model.clone(),
                api_key,
                ca_file: e.ca_file.as_ref().map(PathBuf::from),
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
        redis_url: match (&f.redis_url, &f.redis_url_env) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "policy_engine.redis_url_env".into(),
                    "set redis_url or redis_url_env, not both",
                ));
            }
            (Some(url), None) => Some(url.clone()),
            (None, Some(var)) => Some(env(var).ok_or_else(|| {
                err(
                    "policy_engine.redis_url_env".into(),
                    format!("environment variable {var} is not set"),
                )
            })?),
            (None, None) => None,
        },
        cache_max_bytes: f.cache_max_bytes.unwrap_or(d.cache_max_bytes),
        max_counters: f.max_counters.unwrap_or(d.max_counters).max(1),
        embeddings,
        compiled_dir: compiled_dir(f, env),
    })
}

/// `compiled_dir`, else the user's cache directory (XDG), else none. The
/// default is dropped with a warning when it cannot be used (a read-only
/// home in a container): it only saves compile time. A directory set in
/// the configuration is checked by the engine, and refused loudly.
fn compiled_dir(f: &PolicyEngineFile, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    match f.compiled_dir.as_deref() {
        Some("") => None,
        Some(d) => Some(PathBuf::from(d)),
        None => default_compiled_dir(env).filter(|d| match compiled::prepare(d) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "compiled policy modules are not kept between starts (set policy_engine.compiled_dir)");
                false
            }
        }),
    }
}

fn default_compiled_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    {
        env("XDG_CACHE_HOME")
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from)
            .or_else(|| {
                env("HOME")
                    .filter(|d| d.starts_with('/'))
                    .map(|h| PathBuf::from(h).join(".cache"))
            })
            .map(|c| c.join("portcullis/compiled"))
    }
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

/// Run after a configuration that compiled policy modules has loaded (set
/// once by the binary, which knows its allocator).
static AFTER_COMPILE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs after a configuration compiled policy modules (the
/// binary returns the compiler's scratch memory to the OS).
pub fn after_compile(hook: fn()) {
    let _ = AFTER_COMPILE.set(hook);
}

/// Loads the policy chains of one configuration. The engine, the policy
/// sources and each artifact (read and hashed) are made once however many
/// proxies attach them, and attachments are shared by module and settings
/// ([`Chain::shared`]): a thousand proxies with the same four policies
/// cost four of each.
pub struct ChainLoader<'a> {
    file: &'a FileConfig,
    env: &'a dyn Fn(&str) -> Option<String>,
    engine: Option<Arc<PolicyEngine>>,
    sources: Option<Arc<Vec<Box<dyn PolicySource>>>>,
    /// Artifacts found, by what the attachment asked for: (name, version,
    /// module path, pinned sha256).
    artifacts: HashMap<ArtifactQuery, Arc<Artifact>>,
    /// The engine's compile count when this loader first used it.
    compiles_before: u64,
}

impl Drop for ChainLoader<'_> {
    fn drop(&mut self) {
        let compiled = self
            .engine
            .as_ref()
            .is_some_and(|e| e.compiles() > self.compiles_before);
        if compiled && let Some(hook) = AFTER_COMPILE.get() {
            hook();
        }
    }
}

type ArtifactQuery = (String, Option<String>, Option<String>, Option<String>);

impl<'a> ChainLoader<'a> {
    pub fn new(file: &'a FileConfig, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        ChainLoader {
            file,
            env,
            engine: None,
            sources: None,
            artifacts: HashMap::new(),
            compiles_before: 0,
        }
    }

    /// The configuration's engine, created on first use.
    fn engine(&mut self) -> Result<Arc<PolicyEngine>, ConfigError> {
        if let Some(e) = &self.engine {
            return Ok(e.clone());
        }
        let ef = self.file.policy_engine.clone().unwrap_or_default();
        let e = shared_engine(engine_settings(&ef, self.env)?)
            .map_err(|m| err("policy_engine".into(), m))?;
        self.compiles_before = e.compiles();
        self.engine = Some(e.clone());
        Ok(e)
    }

    /// Local directories first, then the policy hub.
    fn sources(&mut self) -> Result<Arc<Vec<Box<dyn PolicySource>>>, ConfigError> {
        if let Some(s) = &self.sources {
            return Ok(s.clone());
        }
        let ef = self.file.policy_engine.clone().unwrap_or_default();
        let mut sources: Vec<Box<dyn PolicySource>> = ef
            .dirs
            .iter()
            .map(|d| Box::new(DirSource(PathBuf::from(d))) as Box<dyn PolicySource>)
            .collect();
        if let Some(hub) = &ef.hub {
            let source =
                fetch::HubSource::new(hub).map_err(|m| err("policy_engine.hub".into(), m))?;
            sources.push(Box::new(source));
        }
        let sources = Arc::new(sources);
        self.sources = Some(sources.clone());
        Ok(sources)
    }

    fn artifact(
        &mut self,
        a: &portcullis_types::gateway_config::PolicyAttachmentFile,
    ) -> Result<Arc<Artifact>, String> {
        let query = (
            a.name.clone(),
            a.version.clone(),
            a.module.clone(),
            a.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
        );
        if let Some(found) = self.artifacts.get(&query) {
            return Ok(found.clone());
        }
        let sources = self.sources().map_err(|e| e.message)?;
        let found = Arc::new(find_artifact(a, &sources)?);
        self.artifacts.insert(query, found.clone());
        Ok(found)
    }

    /// Builds proxy `pi`'s chain; `None` when it attaches no policy.
    pub fn chain_for_proxy(
        &mut self,
        pi: usize,
        pf: &ProxyFile,
    ) -> Result<Option<Arc<Chain>>, ConfigError> {
        if pf.policies.is_empty() {
            return Ok(None);
        }
        let engine = self.engine()?;
        let mut attached = Vec::new();
        for (ai, a) in pf.policies.iter().enumerate() {
            let at = format!("proxies[{pi}].policies[{ai}]");
            if let Some(pin) = &a.sha256
                && !valid_sha256_hex(pin)
            {
                return Err(err(
                    format!("{at}.sha256"),
                    "must be the module's SHA-256 as 64 hexadecimal digits",
                ));
            }
            let artifact = self.artifact(a).map_err(|m| err(at.clone(), m))?;
            // The pin is checked before anything compiles the bytes: whoever
            // served them (hub, network, cache or a local directory), a module
            // the attachment did not pin never runs.
            if let Some(pin) = &a.sha256 {
                let got = artifact.sha256_hex();
                if !pin.eq_ignore_ascii_case(&got) {
                    return Err(err(
                        format!("{at}.sha256"),
                        format!(
                            "the module found for `{}` ({}) has sha256 {got}, but the attachment pins {pin}; refusing to load it",
                            a.name, artifact.origin
                        ),
                    ));
                }
            }
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
            let att = Chain::shared(
                &engine,
                module,
                artifact.sha256,
                &settings,
                a.on_error,
                || manifest::validate_settings(&artifact.manifest, &settings),
            )
            .map_err(|(ptr, m)| err(format!("{at}.settings{ptr}"), m))?;
            attached.push(att);
        }
        let max_held = self
            .file
            .limits
            .max_held_response_bytes
            .unwrap_or(crate::config::DEFAULT_MAX_HELD_RESPONSE_BYTES);
        let plans = pf
            .policies
            .iter()
            .map(|a| a.plans.iter().map(|p| Arc::from(p.as_str())).collect())
            .collect();
        Ok(Some(Arc::new(
            Chain::new(engine, attached, max_held).with_plans(plans),
        )))
    }
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
        if let Some(art) = s.find(&a.name, a.version.as_deref(), a.sha256.as_deref())? {
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
    use sha2::{Digest, Sha256};

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

    #[test]
    fn compiled_modules_go_to_the_users_cache_unless_told_otherwise() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let file = |yaml: &str| serde_yaml::from_str::<PolicyEngineFile>(yaml).unwrap();
        // The default as resolved (not created: `/xdg` is not writable).
        let dir = |f: &PolicyEngineFile, e: &dyn Fn(&str) -> Option<String>| match f.compiled_dir {
            None => default_compiled_dir(e),
            Some(_) => engine_settings(f, e).unwrap().compiled_dir,
        };
        let both = env(&[("XDG_CACHE_HOME", "/xdg"), ("HOME", "/home/u")]);
        let home = env(&[("HOME", "/home/u")]);
        let relative = env(&[("XDG_CACHE_HOME", "xdg"), ("HOME", "/home/u")]);
        let none = env(&[]);
        let d = PolicyEngineFile::default();
        assert_eq!(dir(&d, &both), Some("/xdg/portcullis/compiled".into()));
        assert_eq!(
            dir(&d, &home),
            Some("/home/u/.cache/portcullis/compiled".into())
        );
        assert_eq!(
            dir(&d, &relative),
            Some("/home/u/.cache/portcullis/compiled".into())
        );
        assert_eq!(dir(&d, &none), None);
        assert_eq!(
            dir(&file("{ compiled_dir: /var/c }"), &both),
            Some("/var/c".into())
        );
        assert_eq!(dir(&file("{ compiled_dir: '' }"), &both), None);
        // An unusable default is dropped, not an error.
        let unusable = env(&[("HOME", "/proc/self")]);
        let s = engine_settings(&d, &unusable).unwrap();
        assert_eq!(s.compiled_dir, None);
    }

    /// Loads proxy 0's chain of a configuration attaching the artifact in
    /// `dir` with `pin`.
    fn load_pinned(dir: &std::path::Path, pin: &str) -> Result<(), ConfigError> {
        let file = crate::config::parse_file(&format!(
            "providers: [{{ name: p, type: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: k }}]\n\
             proxies: [{{ name: x, routes: [{{ provider: p }}], policies: [{{ name: demo, module: \"{}\", sha256: \"{pin}\" }}] }}]\n",
            dir.display()
        ))?;
        let env = |_: &str| None;
        ChainLoader::new(&file, &env)
            .chain_for_proxy(0, &file.proxies[0])
            .map(|_| ())
    }

    #[test]
    fn a_module_other_than_the_pinned_one_is_refused_before_it_compiles() {
        let dir = std::env::temp_dir().join(format!("portcullis-pin-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let wasm = b"not even a component".to_vec();
        std::fs::write(dir.join("policy.wasm"), &wasm).unwrap();
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::json!({"name": "demo", "version": "1.0.0", "category": "guardrail",
                "phases": ["request"], "settings_schema": {"type": "object"}, "defaults": {}})
            .to_string(),
        )
        .unwrap();
        let digest = hex::encode(Sha256::digest(&wasm));

        let e = load_pinned(&dir, &"0".repeat(64)).unwrap_err();
        assert_eq!(e.path, "proxies[0].policies[0].sha256");
        assert!(
            e.message.contains(&digest) && e.message.contains("refusing"),
            "{}",
            e.message
        );
        let e = load_pinned(&dir, "abc").unwrap_err();
        assert_eq!(e.path, "proxies[0].policies[0].sha256");
        assert!(e.message.contains("64 hexadecimal"), "{}", e.message);
        // The right digest (in either case) passes the pin; these bytes then
        // fail to compile, which is another error at the attachment.
        let e = load_pinned(&dir, &digest.to_uppercase()).unwrap_err();
        assert_eq!(e.path, "proxies[0].policies[0]", "{}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
