//! Policy manifests and the policy hub's wire types.
//!
//! A policy travels as a WebAssembly component plus a [`PolicyManifest`]
//! (`manifest.json` next to `policy.wasm` in a built policy's directory).
//! The hub stores both and serves a [`PolicyVersion`]: the manifest with
//! the module's digest filled in, plus what the hub knows about the upload.
//! The gateway, the admin service, the hub and the CLI all read these one
//! definitions, so a field added here reaches every service at once.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a policy is for; the hub filters listings by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyCategory {
    Guardrail,
    Traffic,
    Transform,
    Observability,
}

impl PolicyCategory {
    pub const ALL: [PolicyCategory; 4] = [
        PolicyCategory::Guardrail,
        PolicyCategory::Traffic,
        PolicyCategory::Transform,
        PolicyCategory::Observability,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyCategory::Guardrail => "guardrail",
            PolicyCategory::Traffic => "traffic",
            PolicyCategory::Transform => "transform",
            PolicyCategory::Observability => "observability",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for PolicyCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point in a request's life where a policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyPhase {
    Request,
    Response,
    Stream,
    /// After the response was delivered (`on-complete`: accounting).
    Complete,
}

/// What a policy's `complete` phase reads of the answer (manifest
/// `complete_reads`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompleteReads {
    /// The whole answer: its text per choice and its raw JSON (a cache
    /// storing it). The default.
    #[default]
    Whole,
    /// Its status, model and usage only (accounting). When no policy of a
    /// proxy reads more, the gateway forwards answers without parsing
    /// them (docs/policies.md, What a policy reads).
    Usage,
}

impl CompleteReads {
    pub fn is_whole(&self) -> bool {
        *self == CompleteReads::Whole
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            CompleteReads::Whole => "whole",
            CompleteReads::Usage => "usage",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [CompleteReads::Whole, CompleteReads::Usage]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// A part of the request that a policy's request phase reads, besides
/// the fields always given (ids, format, model, stream, max tokens):
/// manifest `request_reads`. The gateway leaves the others empty for that
/// policy, so it does not copy them into its instance on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestPart {
    /// `messages`: the text parts of each message.
    Messages,
    /// `headers`: the client's request headers.
    Headers,
    /// `raw`: the whole request as canonical JSON.
    Raw,
}

impl RequestPart {
    pub const ALL: [RequestPart; 3] = [
        RequestPart::Messages,
        RequestPart::Headers,
        RequestPart::Raw,
    ];
}

/// A host capability a policy may import (`sdk/wit/policy.wit`). `compute`
/// is always granted and is not declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Counters,
    Cache,
    Clock,
    Log,
    Metrics,
    Embeddings,
    /// What the request cost (`on-complete`).
    Metering,
    /// Who sent the request beyond its key: application, subscription.
    Caller,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Counters,
        Capability::Cache,
        Capability::Clock,
        Capability::Log,
        Capability::Metrics,
        Capability::Embeddings,
        Capability::Metering,
        Capability::Caller,
    ];

    /// The WIT interface name, as in `portcullis:policy/<name>@0.1.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Counters => "counters",
            Capability::Cache => "cache",
            Capability::Clock => "clock",
            Capability::Log => "log",
            Capability::Metrics => "metrics",
            Capability::Embeddings => "embeddings",
            Capability::Metering => "metering",
            Capability::Caller => "caller",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What travels with a policy's module: `manifest.json` as written by
/// `portcullis policy build`, and the body of a publish request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyManifest {
    /// Lowercase letters, digits and hyphens; unique in a hub.
    pub name: String,
    /// Semantic version; a published version never changes.
    pub version: String,
    pub category: PolicyCategory,
    /// Human-readable name (default: the name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    /// Where the policy runs.
    pub phases: Vec<PolicyPhase>,
    /// Host capabilities the module imports; the hub and the gateway refuse
    /// a module importing one that is not declared here.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// JSON Schema of the settings an attachment gives (default `{}`: any).
    #[serde(default = "empty_object")]
    pub settings_schema: serde_json::Value,
    /// Settings used where an attachment gives none; valid against the
    /// schema. (`defaults`, as `portcullis policy build` writes it.)
    #[serde(default = "empty_object")]
    pub defaults: serde_json::Value,
    /// What the `complete` phase reads of the answer (default `whole`).
    #[serde(default, skip_serializing_if = "CompleteReads::is_whole")]
    pub complete_reads: CompleteReads,
    /// What the request phase reads of the request beyond the fields
    /// always given (default, when absent: all of them). A policy that
    /// reads a part it did not declare sees it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_reads: Option<Vec<RequestPart>>,
    /// Markdown shown by the hub and the admin UI.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub docs: String,
    /// Lowercase hex SHA-256 of the module. Optional when publishing (the
    /// hub computes it and rejects a mismatch); always set by the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// One published version as the hub serves it
/// (`GET /api/v1/policies/{name}/versions/{version}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The manifest; `sha256` is always set.
    #[serde(flatten)]
    pub manifest: PolicyManifest,
    /// `sha256:<hex>`: the module's address in the hub (`/api/v1/modules/{digest}`).
    pub digest: String,
    /// Module size in bytes.
    pub size: u64,
    /// Who published it (the publisher token's name).
    pub publisher: String,
    /// RFC 3339, UTC.
    pub published_at: String,
    /// Hidden from listings; still served to whoever pins it.
    pub yanked: bool,
}

/// Body of `POST /api/v1/policies`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub manifest: PolicyManifest,
    /// The component, standard base64.
    pub module: String,
}

/// A policy named by a configuration: `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRef {
    pub name: String,
    pub version: String,
}

impl PolicyRef {
    /// Parses `name@version`; both parts must be non-empty.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, version) = s.split_once('@')?;
        if name.is_empty() || version.is_empty() || version.contains('@') {
            return None;
        }
        Some(PolicyRef {
            name: name.to_string(),
            version: version.to_string(),
        })
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Whether `name` is a valid policy name: 1 to 64 of `[a-z0-9-]`, starting
/// with a letter or digit (it appears in URLs, file names and metric labels).
pub fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` is a SHA-256 digest in hex (64 digits, either case): how
/// a policy attachment pins the module it runs.
pub fn valid_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl PolicyVersion {
    /// The module's SHA-256 (hex) from `digest` (`sha256:<hex>`), which
    /// must agree with the manifest's `sha256` when that is set.
    pub fn module_sha256(&self) -> Result<&str, String> {
        let hex = self
            .digest
            .strip_prefix("sha256:")
            .filter(|h| valid_sha256_hex(h))
            .ok_or_else(|| format!("bad module digest `{}` from the hub", self.digest))?;
        if self
            .manifest
            .sha256
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case(hex))
        {
            return Err(format!(
                "the hub's digest {} and sha256 disagree",
                self.digest
            ));
        }
        Ok(hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json() -> serde_json::Value {
        serde_json::json!({
            "name": "pii-masking",
            "version": "1.2.0",
            "category": "guardrail",
            "phases": ["request", "response"],
            "capabilities": ["log"],
            "settings_schema": {"type": "object"},
            "sha256": "ab"
        })
    }

    #[test]
    fn manifest_rejects_unknown_fields_and_defaults_settings() {
        let m: PolicyManifest = serde_json::from_value(manifest_json()).unwrap();
        assert_eq!(m.defaults, serde_json::json!({}));
        assert_eq!(m.category, PolicyCategory::Guardrail);
        let mut bad = manifest_json();
        bad["categroy"] = "x".into();
        assert!(serde_json::from_value::<PolicyManifest>(bad).is_err());
    }

    #[test]
    fn policy_version_is_the_flat_manifest_plus_hub_fields() {
        let v = PolicyVersion {
            manifest: serde_json::from_value(manifest_json()).unwrap(),
            digest: "sha256:ab".into(),
            size: 3,
            publisher: "builtin".into(),
            published_at: "2025-01-01T00:00:00Z".into(),
            yanked: false,
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json["settings_schema"],
            serde_json::json!({"type": "object"})
        );
        assert_eq!(json["digest"], "sha256:ab");
        let back: PolicyVersion = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn policy_refs_and_names() {
        let r = PolicyRef::parse("cache@1.0.0").unwrap();
        assert_eq!((r.name.as_str(), r.version.as_str()), ("cache", "1.0.0"));
        assert_eq!(r.to_string(), "cache@1.0.0");
        assert!(PolicyRef::parse("cache").is_none());
        assert!(PolicyRef::parse("@1").is_none());
        assert!(PolicyRef::parse("a@1@2").is_none());
        assert!(valid_policy_name("token-rate-limit"));
        assert!(!valid_policy_name("Token"));
        assert!(!valid_policy_name("-x"));
        assert!(!valid_policy_name("a/b"));
    }
}
