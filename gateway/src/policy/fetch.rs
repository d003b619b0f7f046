//! Fetching attached policies from a policy hub, with a disk cache.
//!
//! [`HubSource`] is one more [`PolicySource`] for the engine's lookup
//! (`policy_engine.hub` in the configuration, searched after
//! `policy_engine.dirs`). For `name@version` it reads the version's
//! manifest from the disk cache first (a published version never changes)
//! and asks the hub only when it is not there, or when the cached one
//! names another module than the attachment pins (`sha256`). The module
//! comes from the cache when its digest is there (modules are
//! content-addressed, so a cached module never goes stale) and is
//! downloaded otherwise, verifying the SHA-256 either way. A manifest is
//! cached only when its module matches the attachment's pin, so a hub (or
//! a network in the middle) that once served another module does not
//! poison the cache. When the hub is unreachable (connection refused,
//! timeout, or a 5xx) the cached manifest and module are used, so a
//! gateway restarts and reloads while the hub is down; only a policy it
//! never fetched fails.
//!
//! The pin itself is checked by the engine's lookup (`policy::mod`) for
//! every source alike, before a module is compiled.
//!
//! The engine's lookup is synchronous (configuration load); the fetch runs
//! on a short-lived runtime in a scoped thread, so it works both from
//! `main` and from inside the gateway's async runtime (reloads).

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_types::gateway_config::PolicyHubFile;
use portcullis_types::policy::{PolicyVersion, valid_policy_name};
use sha2::{Digest, Sha256};

use crate::policy::manifest::{Artifact, PolicySource};

/// Default cache directory, relative to the working directory.
pub const DEFAULT_CACHE_DIR: &str = "./data/policy-cache";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A policy hub as a source of policy artifacts.
pub struct HubSource {
    url: String,
    cache: PathBuf,
    client: reqwest::Client,
}

/// Why the hub did not answer usefully.
enum HubFailure {
    /// Down, slow or failing: fall back to the cache.
    Unreachable(String),
    /// It answered, and the answer is wrong: do not paper over it.
    Bad(String),
}

impl HubSource {
    pub fn new(file: &PolicyHubFile) -> Result<Self, String> {
        let timeout = file
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_TIMEOUT);
        // Checked before any request: a module from the hub runs in the
        // gateway, so the link must be authenticated.
        portcullis_net::check_control_url(
            &file.url,
            "policy_engine.hub.url",
            file.allow_insecure_http.unwrap_or(false),
            "policy_engine.hub.allow_insecure_http",
        )
        .map_err(|e| e.to_string())?;
        let client = portcullis_net::client_builder(file.ca_file.as_deref().map(Path::new))
            .and_then(|b| {
                Ok(b.timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(3)))
                    .build()?)
            })
            .map_err(|e| format!("policy hub client: {e}"))?;
        Ok(HubSource {
            url: file.url.trim_end_matches('/').to_string(),
            cache: PathBuf::from(file.cache_dir.as_deref().unwrap_or(DEFAULT_CACHE_DIR)),
            client,
        })
    }

    fn manifest_path(&self, name: &str, version: &str) -> PathBuf {
        self.cache
            .join("manifests")
            .join(format!("{name}@{version}.json"))
    }

    fn module_path(&self, hex: &str) -> PathBuf {
        self.cache
            .join("modules")
            .join(format!("sha256-{hex}.wasm"))
    }

    async fn get(&self, path: &str) -> Result<Option<reqwest::Response>, HubFailure> {
        let url = format!("{}{path}", self.url);
        let r = self.client.get(&url).send().await.map_err(|e| {
            HubFailure::Unreachable(format!("GET {url}: {}", portcullis_net::error_chain(&e)))
        })?;
        let status = r.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_server_error() {
            return Err(HubFailure::Unreachable(format!("GET {url}: {status}")));
        }
        if !status.is_success() {
            return Err(HubFailure::Bad(format!("GET {url}: {status}")));
        }
        Ok(Some(r))
    }

    /// The hub's latest version of `name`; `None` if it has no such policy.
    async fn latest(&self, name: &str) -> Result<Option<String>, HubFailure> {
        let Some(r) = self.get(&format!("/api/v1/policies/{name}")).await? else {
            return Ok(None);
        };
        let v: serde_json::Value = r
            .json()
            .await
            .map_err(|e| HubFailure::Unreachable(format!("policy {name}: {e}")))?;
        Ok(v["latest_version"].as_str().map(str::to_string))
    }

    async fn fetch(
        &self,
        name: &str,
        version: &str,
        pin: Option<&str>,
    ) -> Result<Option<(PolicyVersion, Vec<u8>)>, HubFailure> {
        let Some(r) = self
            .get(&format!("/api/v1/policies/{name}/versions/{version}"))
            .await?
        else {
            return Ok(None);
        };
        let text = r
            .text()
            .await
            .map_err(|e| HubFailure::Unreachable(format!("manifest of {name}@{version}: {e}")))?;
        let pv: PolicyVersion = serde_json::from_str(&text)
            .map_err(|e| HubFailure::Bad(format!("manifest of {name}@{version}: {e}")))?;
        if pv.manifest.name != name || pv.manifest.version != version {
            return Err(HubFailure::Bad(format!(
                "asked for {name}@{version}, the hub answered {}@{}",
                pv.manifest.name, pv.manifest.version
            )));
        }
        let hex = pv.module_sha256().map_err(HubFailure::Bad)?.to_string();
        if pv.yanked {
            tracing::warn!(policy = %name, %version, "using a yanked policy version");
        }
        let module = match self.cached_module(&hex) {
            Some(bytes) => bytes,
            None => {
                let Some(r) = self.get(&format!("/api/v1/modules/sha256:{hex}")).await? else {
                    return Err(HubFailure::Bad(format!(
                        "the hub has no module sha256:{hex}"
                    )));
                };
                let bytes = r.bytes().await.map_err(|e| {
                    HubFailure::Unreachable(format!("module of {name}@{version}: {e}"))
                })?;
                let got = hex::encode(Sha256::digest(&bytes));
                if got != hex {
                    return Err(HubFailure::Bad(format!(
                        "module of {name}@{version}: digest sha256:{got} does not match the manifest's sha256:{hex}"
                    )));
                }
                write_atomic(&self.module_path(&hex), &bytes).map_err(HubFailure::Bad)?;
                bytes.to_vec()
            }
        };
        if pin.is_none_or(|p| p.eq_ignore_ascii_case(&hex)) {
            write_atomic(&self.manifest_path(name, version), text.as_bytes())
                .map_err(HubFailure::Bad)?;
        }
        Ok(Some((pv, module)))
    }

    /// A cached module whose bytes still hash to its name.
    fn cached_module(&self, hex: &str) -> Option<Vec<u8>> {
        let path = self.module_path(hex);
        let bytes = std::fs::read(&path).ok()?;
        if hex::encode(Sha256::digest(&bytes)) == hex {
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(), "cached policy module is corrupt; fetching it again");
        let _ = std::fs::remove_file(&path);
        None
    }

    fn load_cached(&self, name: &str, version: &str) -> Result<(PolicyVersion, Vec<u8>), String> {
        let path = self.manifest_path(name, version);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let pv: PolicyVersion =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let hex = pv.module_sha256()?;
        let module = self
            .cached_module(hex)
            .ok_or_else(|| format!("module sha256:{hex} is not in {}", self.cache.display()))?;
        Ok((pv, module))
    }

    /// The highest cached version of `name`, for an unpinned attachment
    /// while the hub is down.
    fn cached_latest(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}@");
        std::fs::read_dir(self.cache.join("manifests"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|f| Some(f.strip_prefix(&prefix)?.strip_suffix(".json")?.to_string()))
            .max_by_key(|v| {
                v.split(['.', '-'])
                    .take(3)
                    .map(|p| p.parse::<u64>().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
    }

    async fn find_async(
        &self,
        name: &str,
        version: Option<&str>,
        pin: Option<&str>,
    ) -> Result<Option<Artifact>, String> {
        let version = match version {
            Some(v) => v.to_string(),
            None => match self.latest(name).await {
                Ok(Some(v)) => v,
                Ok(None) => return Ok(None),
                Err(HubFailure::Bad(e)) => return Err(e),
                Err(HubFailure::Unreachable(e)) => match self.cached_latest(name) {
                    Some(v) => {
                        tracing::warn!(policy = %name, version = %v, error = %e, "policy hub unreachable; using the highest cached version");
                        v
                    }
                    None => {
                        return Err(format!(
                            "policy hub unreachable ({e}) and no version of `{name}` is cached"
                        ));
                    }
                },
            },
        };
        if !safe_version(&version) {
            return Err(format!("version `{version}` is not a semantic version"));
        }
        // The cache first: a published version never changes.
        if let Ok((pv, wasm)) = self.load_cached(name, &version)
            && pin.is_none_or(|p| pv.module_sha256().is_ok_and(|h| h.eq_ignore_ascii_case(p)))
        {
            tracing::debug!(policy = %name, %version, "policy manifest and module from the disk cache");
            let origin = format!("{} {name}@{version} ({})", self.cache.display(), pv.digest);
            return Ok(Some(Artifact::new(pv.manifest, wasm, origin)));
        }
        let (pv, wasm) = match self.fetch(name, &version, pin).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(HubFailure::Bad(e)) => return Err(e),
            Err(HubFailure::Unreachable(e)) => {
                let cached = self.load_cached(name, &version).map_err(|c| {
                    format!("policy hub unreachable ({e}) and {name}@{version} is not cached ({c})")
                })?;
                tracing::warn!(policy = %name, %version, error = %e, "policy hub unreachable; using the cached module");
                cached
            }
        };
        let origin = format!("{} {name}@{version} ({})", self.url, pv.digest);
        Ok(Some(Artifact::new(pv.manifest, wasm, origin)))
    }
}

impl PolicySource for HubSource {
    fn find(
        &self,
        name: &str,
        version: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<Option<Artifact>, String> {
        // Names become cache file names and URL segments.
        if !valid_policy_name(name) {
            return Ok(None);
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("policy hub fetch runtime: {e}"))?;
                rt.block_on(self.find_async(name, version, sha256))
            })
            .join()
            .unwrap_or_else(|_| Err("policy hub fetch panicked".into()))
        })
    }
}

/// Semver characters only: the version becomes part of a file name.
fn safe_version(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
}

/// Writes through a temporary file and a rename, so a crash never leaves
/// a truncated module or manifest under its final name.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A hub stand-in serving one version; counts module downloads.
    struct FakeHub {
        url: String,
        module_gets: Arc<AtomicUsize>,
        manifest_gets: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    }

    fn fake_hub(module: Vec<u8>, served_module: Vec<u8>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hex = hex::encode(Sha256::digest(&module));
        let version = serde_json::json!({
            "name": "deny", "version": "1.0.0", "category": "guardrail",
            "phases": ["request"], "capabilities": ["log"],
            "settings_schema": {"type": "object"}, "defaults": {"word": "x"},
            "sha256": hex, "digest": format!("sha256:{hex}"), "size": module.len(),
            "publisher": "acme", "published_at": "2025-01-01T00:00:00Z", "yanked": false
        })
        .to_string();
        let module_gets = Arc::new(AtomicUsize::new(0));
        let manifest_gets = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (gets, stopped) = (module_gets.clone(), stop.clone());
        let manifests = manifest_gets.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                if stopped.load(Ordering::SeqCst) {
                    // "Down": close without an answer.
                    continue;
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let (status, body): (&str, Vec<u8>) =
                    if path == "/api/v1/policies/deny/versions/1.0.0" {
                        manifests.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", version.clone().into_bytes())
                    } else if path == format!("/api/v1/modules/sha256:{hex}") {
                        gets.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", served_module.clone())
                    } else {
                        ("404 Not Found", b"{}".to_vec())
                    };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
            }
        });
        FakeHub {
            url,
            module_gets,
            manifest_gets,
            stop,
        }
    }

    fn cache_dir(tag: &str) -> String {
        let d = std::env::temp_dir().join(format!(
            "portcullis-policy-cache-{tag}-{}",
            uuid::Uuid::new_v4()
        ));
        d.display().to_string()
    }

    fn source(url: &str, cache: &str) -> HubSource {
        HubSource::new(&PolicyHubFile {
            url: url.into(),
            cache_dir: Some(cache.into()),
            timeout_ms: Some(2000),
            ca_file: None,
            allow_insecure_http: None,
        })
        .unwrap()
    }

    #[test]
    fn fetches_verifies_caches_and_serves_from_cache_when_the_hub_is_down() {
        let module = b"\0asm pretend component".to_vec();
        let hub = fake_hub(module.clone(), module.clone());
        let cache = cache_dir("ok");
        let src = source(&hub.url, &cache);

        let a = src
            .find("deny", Some("1.0.0"), None)
            .unwrap()
            .expect("found");
        assert_eq!(a.wasm, module);
        assert_eq!(a.manifest.name, "deny");
        assert_eq!(a.manifest.defaults, serde_json::json!({"word": "x"}));
        assert_eq!(
            a.manifest.capabilities,
            [portcullis_types::policy::Capability::Log]
        );
        assert_eq!(
            a.manifest.phases,
            [portcullis_types::policy::PolicyPhase::Request]
        );
        assert_eq!(hub.module_gets.load(Ordering::SeqCst), 1);

        // Cached by digest: the second lookup downloads nothing.
        src.find("deny", Some("1.0.0"), None)
            .unwrap()
            .expect("found");
        assert_eq!(hub.module_gets.load(Ordering::SeqCst), 1);

        // Hub down: served from the cache, including an unpinned lookup.
        hub.stop.store(true, Ordering::SeqCst);
        let a = src
            .find("deny", Some("1.0.0"), None)
            .unwrap()
            .expect("from cache");
        assert_eq!(a.wasm, module);
        let a = src
            .find("deny", None, None)
            .unwrap()
            .expect("highest cached");
        assert_eq!(a.manifest.version, "1.0.0");
        // Never fetched: a clear error naming the hub failure.
        let e = source(&hub.url, &cache_dir("empty"))
            .find("deny", Some("1.0.0"), None)
            .err()
            .unwrap();
        assert!(e.contains("unreachable") && e.contains("not cached"), "{e}");
        let _ = std::fs::remove_dir_all(&cache);
    }

    #[test]
    fn a_module_that_does_not_match_its_digest_is_refused_and_not_cached() {
        let module = b"the real module".to_vec();
        let hub = fake_hub(module, b"tampered bytes".to_vec());
        let cache = cache_dir("bad");
        let e = source(&hub.url, &cache)
            .find("deny", Some("1.0.0"), None)
            .err()
            .unwrap();
        assert!(e.contains("does not match"), "{e}");
        assert!(
            !Path::new(&cache).join("modules").exists()
                || std::fs::read_dir(Path::new(&cache).join("modules"))
                    .unwrap()
                    .next()
                    .is_none()
        );
        // Unknown policies are not this source's: the engine tries others.
        assert!(
            source(&hub.url, &cache)
                .find("other", Some("1.0.0"), None)
                .unwrap()
                .is_none()
        );
        assert!(
            source(&hub.url, &cache)
                .find("../etc", Some("1.0.0"), None)
                .unwrap()
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&cache);
    }

    #[test]
    fn manifests_come_from_the_cache_first_and_only_pinned_ones_are_cached() {
        let module = b"the published module".to_vec();
        let hub = fake_hub(module.clone(), module.clone());
        let cache = cache_dir("pin");
        let src = source(&hub.url, &cache);
        let manifest = Path::new(&cache).join("manifests").join("deny@1.0.0.json");
        let good = hex::encode(Sha256::digest(&module));
        let other = hex::encode(Sha256::digest(b"another module"));

        // The hub's module is not the pinned one: the source hands it over
        // (the engine refuses it) but does not cache the manifest.
        let a = src
            .find("deny", Some("1.0.0"), Some(&other))
            .unwrap()
            .expect("found");
        assert_eq!(a.wasm, module);
        assert!(
            !manifest.exists(),
            "a manifest not matching the pin is not cached"
        );

        // Pinned to the hub's module: cached; the module was already cached
        // by digest.
        src.find("deny", Some("1.0.0"), Some(&good))
            .unwrap()
            .expect("found");
        assert!(manifest.exists());
        assert_eq!(hub.module_gets.load(Ordering::SeqCst), 1);
        assert_eq!(hub.manifest_gets.load(Ordering::SeqCst), 2);

        // From now on the hub is not asked, pinned or not.
        for pin in [Some(good.as_str()), None] {
            let a = src
                .find("deny", Some("1.0.0"), pin)
                .unwrap()
                .expect("cached");
            assert_eq!(a.wasm, module);
        }
        assert_eq!(hub.manifest_gets.load(Ordering::SeqCst), 2);
        // A pin the cached manifest does not match asks the hub again.
        src.find("deny", Some("1.0.0"), Some(&other))
            .unwrap()
            .expect("found");
        assert_eq!(hub.manifest_gets.load(Ordering::SeqCst), 3);
        let _ = std::fs::remove_dir_all(&cache);
    }
}
