//! Policy manifests, module lookup and settings validation.
//!
//! A policy artifact is a directory holding `policy.wasm` (the component)
//! and `manifest.json`:
//!
//! ```json
//! {"name": "pii-masking", "version": "0.1.0", "category": "guardrail",
//!  "description": "...", "phases": ["request", "response", "stream"],
//!  "capabilities": ["log"], "settings_schema": {...}, "defaults": {...},
//!  "sha256": "<hex of policy.wasm>"}
//! ```
//!
//! Attachments find artifacts through [`PolicySource`]s: an explicit
//! `module` path, then each policy directory (`<dir>/<name>/<version>/`
//! or `<dir>/<name>/`). The policy hub becomes one more source.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What a manifest says about a policy: the one definition shared with
/// the hub, admin and the CLI.
pub use portcullis_types::policy::PolicyManifest as Manifest;
use portcullis_types::policy::{Capability, valid_policy_name};

/// The WIT interface a capability grants.
pub fn capability_interface(c: Capability) -> String {
    format!("portcullis:policy/{}", c.as_str())
}

/// Checks the manifest's own fields (not the module): what serde's types
/// do not already guarantee.
pub fn check_manifest(m: &Manifest) -> Result<(), String> {
    if !valid_policy_name(&m.name) {
        return Err(format!(
            "name `{}` must be 1 to 64 lowercase letters, digits and hyphens",
            m.name
        ));
    }
    let parts: Vec<&str> = m.version.split(['.', '-', '+']).collect();
    if parts.len() < 3 || parts[..3].iter().any(|p| p.parse::<u64>().is_err()) {
        return Err(format!("version `{}` is not semver", m.version));
    }
    jsonschema::validator_for(&m.settings_schema)
        .map_err(|e| format!("settings_schema is not a valid JSON Schema: {e}"))?;
    Ok(())
}

/// A policy's bytes and manifest, wherever they came from.
pub struct Artifact {
    pub manifest: Manifest,
    pub wasm: Vec<u8>,
    /// SHA-256 of `wasm`, computed once: pins, the compiled-module cache
    /// and shared attachments all key on it.
    pub sha256: [u8; 32],
    /// Where it was found, for messages.
    pub origin: String,
}

impl Artifact {
    pub fn new(manifest: Manifest, wasm: Vec<u8>, origin: String) -> Artifact {
        let sha256 = Sha256::digest(&wasm).into();
        Artifact {
            manifest,
            wasm,
            sha256,
            origin,
        }
    }

    /// The module's SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Finds policy artifacts by name and version.
pub trait PolicySource: Send + Sync {
    /// The artifact, `Ok(None)` when this source does not have it.
    /// `sha256` is the module digest the attachment pins, if any: a source
    /// may use it to choose among copies; the caller verifies it.
    fn find(
        &self,
        name: &str,
        version: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<Option<Artifact>, String>;
}

/// A local directory of artifacts: `<dir>/<name>/<version>/` or `<dir>/<name>/`.
pub struct DirSource(pub PathBuf);

impl PolicySource for DirSource {
    fn find(
        &self,
        name: &str,
        version: Option<&str>,
        _sha256: Option<&str>,
    ) -> Result<Option<Artifact>, String> {
        let base = self.0.join(name);
        if !base.is_dir() {
            return Ok(None);
        }
        if let Some(v) = version {
            let dir = base.join(v);
            if dir.is_dir() {
                return read_artifact(&dir).map(Some);
            }
        }
        if base.join("manifest.json").is_file() {
            let a = read_artifact(&base)?;
            if version.is_none_or(|v| v == a.manifest.version) {
                return Ok(Some(a));
            }
            return Ok(None);
        }
        if version.is_some() {
            return Ok(None);
        }
        // No version asked: the highest one present.
        let mut best: Option<(Vec<u64>, PathBuf)> = None;
        for entry in std::fs::read_dir(&base).map_err(|e| format!("{}: {e}", base.display()))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let key: Vec<u64> = name
                .split(['.', '-'])
                .take(3)
                .map(|p| p.parse().unwrap_or(0))
                .collect();
            if entry.path().join("manifest.json").is_file()
                && best.as_ref().is_none_or(|(k, _)| key > *k)
            {
                best = Some((key, entry.path()));
            }
        }
        best.map(|(_, p)| read_artifact(&p)).transpose()
    }
}

/// Reads an artifact from a directory, or from a `.wasm` file whose
/// directory holds `manifest.json`.
pub fn read_artifact(path: &Path) -> Result<Artifact, String> {
    let (dir, wasm_path) = if path.is_dir() {
        (path.to_path_buf(), path.join("policy.wasm"))
    } else {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (dir, path.to_path_buf())
    };
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    check_manifest(&manifest).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let wasm = std::fs::read(&wasm_path)
        .map_err(|e| format!("cannot read {}: {e}", wasm_path.display()))?;
    let artifact = Artifact::new(manifest, wasm, wasm_path.display().to_string());
    if let Some(want) = &artifact.manifest.sha256 {
        let got = artifact.sha256_hex();
        if !want.eq_ignore_ascii_case(&got) {
            return Err(format!(
                "{}: sha256 {got} does not match the manifest's {want}",
                wasm_path.display()
            ));
        }
    }
    Ok(artifact)
}

/// Merges attachment settings over defaults: objects key by key, anything
/// else replaced (the same rule as the SDK's test harness).
pub fn merge_settings(
    defaults: &serde_json::Value,
    overrides: &serde_json::Value,
) -> serde_json::Value {
    use serde_json::Value;
    match (defaults, overrides) {
        (Value::Object(d), Value::Object(o)) => {
            let mut out = d.clone();
            for (k, v) in o {
                let merged = match d.get(k) {
                    Some(dv) => merge_settings(dv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

/// Validates settings against the manifest's schema. The error names the
/// JSON pointer of the first offending value.
pub fn validate_settings(
    manifest: &Manifest,
    settings: &serde_json::Value,
) -> Result<(), (String, String)> {
    let validator = jsonschema::validator_for(&manifest.settings_schema)
        .map_err(|e| (String::new(), format!("invalid settings schema: {e}")))?;
    if let Some(err) = validator.iter_errors(settings).next() {
        let pointer = err.instance_path().to_string();
        return Err((pointer, err.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_value(serde_json::json!({
            "name": "demo", "version": "1.2.3", "category": "traffic",
            "phases": ["request"], "capabilities": ["counters"],
            "settings_schema": {"type": "object", "properties": {
                "limits": {"type": "array", "items": {"type": "object", "properties": {
                    "window": {"enum": ["second", "minute"]}}}}}},
            "defaults": {"limits": [], "key": "api_key"}
        }))
        .unwrap()
    }

    #[test]
    fn bad_setting_names_its_pointer() {
        let m = manifest();
        check_manifest(&m).unwrap();
        let s = merge_settings(
            &m.defaults,
            &serde_json::json!({"limits": [{"window": "second"}, {"window": "fortnight"}]}),
        );
        let (pointer, msg) = validate_settings(&m, &s).unwrap_err();
        assert_eq!(pointer, "/limits/1/window");
        assert!(msg.contains("fortnight"), "{msg}");
        assert_eq!(s["key"], "api_key", "defaults are kept");
    }

    #[test]
    fn manifest_checks() {
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["capabilities"] = serde_json::json!(["filesystem"]);
        let e = serde_json::from_value::<Manifest>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("filesystem"), "{e}");
        let mut m = manifest();
        m.version = "1.2".into();
        assert!(check_manifest(&m).is_err());
        let mut m = manifest();
        m.name = "Demo".into();
        assert!(check_manifest(&m).is_err());
        // The fields the hub and `policy build` write are accepted.
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["docs"] = "# Demo".into();
        v["display_name"] = "Demo".into();
        assert!(serde_json::from_value::<Manifest>(v).is_ok());
    }
}
