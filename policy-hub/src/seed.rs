//! Publishing the built-in policies at start.
//!
//! A built policy is a manifest and a component: embedded in the binary
//! (the built-in policies, see the `portcullis` crate's build script), or a
//! directory holding `manifest.json` and `policy.wasm` (what `portcullis
//! policy build` writes). At every start the hub walks a list of them and
//! publishes each version it does not have yet, as
//! publisher `builtin`, through the same validation as the publish
//! endpoint. Versions already present are left alone (versions are
//! immutable), so seeding is idempotent and an upgraded binary adds its
//! new built-in versions without touching the old ones.

use base64::Engine as _;
use portcullis_types::policy::{PolicyManifest, PublishRequest};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{BUILTIN_PUBLISHER, Hub};

/// One built policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuiltPolicy {
    /// Built into the binary.
    Embedded {
        manifest: &'static str,
        module: &'static [u8],
    },
    /// On disk.
    Files { manifest: PathBuf, module: PathBuf },
}

impl BuiltPolicy {
    /// Where it comes from, for messages.
    fn origin(&self) -> String {
        match self {
            BuiltPolicy::Embedded { .. } => "built into the binary".into(),
            BuiltPolicy::Files { module, .. } => module.display().to_string(),
        }
    }

    fn manifest(&self) -> Result<std::borrow::Cow<'static, str>, String> {
        match self {
            BuiltPolicy::Embedded { manifest, .. } => Ok((*manifest).into()),
            BuiltPolicy::Files { manifest, .. } => std::fs::read_to_string(manifest)
                .map(Into::into)
                .map_err(|e| format!("{}: {e}", manifest.display())),
        }
    }

    fn module(&self) -> Result<std::borrow::Cow<'static, [u8]>, String> {
        match self {
            BuiltPolicy::Embedded { module, .. } => Ok((*module).into()),
            BuiltPolicy::Files { module, .. } => std::fs::read(module)
                .map(Into::into)
                .map_err(|e| format!("{}: {e}", module.display())),
        }
    }
}

/// What a seeding run did.
#[derive(Debug, Default)]
pub struct SeedReport {
    /// `name@version` of each version published now.
    pub published: Vec<String>,
    /// Versions that were already in the hub.
    pub present: usize,
    /// Built policies that could not be published, with why.
    pub failed: Vec<String>,
}

/// The built policies of an artifact directory: every
/// `<dir>/<policy>/{manifest.json,policy.wasm}` (what the gateway's
/// `policy_engine.dirs` read too).
pub fn artifact_dir(dir: &Path) -> Result<Vec<BuiltPolicy>, String> {
    let mut found: Vec<BuiltPolicy> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").is_file() && p.join("policy.wasm").is_file())
        .map(|p| BuiltPolicy::Files {
            manifest: p.join("manifest.json"),
            module: p.join("policy.wasm"),
        })
        .collect();
    found.sort_by_key(BuiltPolicy::origin);
    Ok(found)
}

/// Publishes every `<dir>/<policy>/{manifest.json,policy.wasm}` the hub lacks.
pub async fn seed_dir(hub: &Arc<Hub>, dir: &Path) -> Result<SeedReport, String> {
    seed(hub, &artifact_dir(dir)?).await
}

/// Publishes each built policy whose version the hub lacks. A built-in
/// that cannot be published (unreadable, invalid) is logged as an error
/// and reported, and the others are still published: one broken build
/// must not keep the hub from serving. Only a database failure is fatal.
pub async fn seed(hub: &Arc<Hub>, policies: &[BuiltPolicy]) -> Result<SeedReport, String> {
    let mut report = SeedReport::default();
    for built in policies {
        match seed_one(hub, built).await {
            Ok(Seeded::Published(id)) => report.published.push(id),
            Ok(Seeded::Present) => report.present += 1,
            Err(SeedError::Fatal(e)) => return Err(e),
            Err(SeedError::Skipped(e)) => {
                tracing::error!(error = %e, "built-in policy not published");
                report.failed.push(e);
            }
        }
    }
    Ok(report)
}

enum Seeded {
    Published(String),
    Present,
}

enum SeedError {
    Fatal(String),
    Skipped(String),
}

async fn seed_one(hub: &Arc<Hub>, built: &BuiltPolicy) -> Result<Seeded, SeedError> {
    let skipped = SeedError::Skipped;
    {
        let text = built.manifest().map_err(skipped)?;
        let manifest: PolicyManifest = serde_json::from_str(&text)
            .map_err(|e| skipped(format!("{} (manifest): {e}", built.origin())))?;
        let existing = hub
            .store
            .version(&manifest.name, &manifest.version)
            .await
            .map_err(|e| SeedError::Fatal(e.to_string()))?;
        if existing.is_some() {
            return Ok(Seeded::Present);
        }
        let module = built.module().map_err(skipped)?;
        let id = format!("{}@{}", manifest.name, manifest.version);
        let request = PublishRequest {
            manifest,
            module: base64::engine::general_purpose::STANDARD.encode(&module),
        };
        match crate::api::publish_version(hub, request, BUILTIN_PUBLISHER).await {
            Ok(_) => Ok(Seeded::Published(id)),
            Err(crate::error::ApiError::Internal(e)) => Err(SeedError::Fatal(format!("{id}: {e}"))),
            Err(e) => Err(skipped(format!("{id} ({}): {e}", built.origin()))),
        }
    }
}
