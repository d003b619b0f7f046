//! What the hub checks before a version is stored.
//!
//! A published version must load in every gateway that pins it, forever
//! (versions are immutable), so the hub refuses anything a gateway would
//! refuse later: a malformed manifest, a settings schema that does not
//! compile, defaults that do not validate against it, a digest that does
//! not match, and a module that is not a component of the
//! `portcullis:policy/policy-world@0.1.0` world or that imports a host
//! capability its manifest does not declare.
//!
//! The component check uses wasmtime's own type checking against the WIT
//! in `sdk/wit` (the same checks the gateway's linker makes): the world's
//! imports are defined in a [`Linker`] by host functions that trap,
//! `instantiate_pre` type-checks the component's imports against them,
//! and the generated `PolicyWorldPre` type-checks its exports.

use portcullis_types::policy::{
    Capability, CompleteReads, PolicyManifest, PolicyPhase, valid_policy_name,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::error::ApiError;

/// Host bindings of the policy world. Only the types and the linker glue
/// are used: every import is implemented by [`Refuse`], which traps, since
/// the hub never runs a policy.
mod world {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "policy-world",
        imports: { default: trappable },
    });
}

use world::portcullis::policy as host;

/// The WIT package's interfaces, as they appear in import names
/// (`portcullis:policy/<interface>@0.1.x`).
const PACKAGE_PREFIX: &str = "portcullis:policy/";
/// Semver-compatible versions of the world this hub accepts (0.1.x).
const WORLD_VERSION_PREFIX: &str = "0.1.";

/// A manifest that passed validation, normalised (display name filled in,
/// phases and capabilities sorted and de-duplicated).
#[derive(Debug, Clone)]
pub struct ValidManifest {
    pub manifest: PolicyManifest,
    pub semver: semver::Version,
}

/// Checks everything in a manifest that does not need the module.
pub fn manifest(mut m: PolicyManifest) -> Result<ValidManifest, ApiError> {
    if !valid_policy_name(&m.name) {
        return Err(ApiError::invalid(
            "invalid_manifest",
            "manifest.name",
            format!(
                "`{}` is not a policy name: 1 to 64 lowercase letters, digits and hyphens, not starting with a hyphen",
                m.name
            ),
        ));
    }
    let semver = semver::Version::parse(&m.version).map_err(|e| {
        ApiError::invalid(
            "invalid_manifest",
            "manifest.version",
            format!("`{}` is not a semantic version: {e}", m.version),
        )
    })?;
    // Build metadata is ignored by semver precedence, so `1.0.0+a` and
    // `1.0.0+b` would be two "different" immutable versions that sort equal.
    if !semver.build.is_empty() {
        return Err(ApiError::invalid(
            "invalid_manifest",
            "manifest.version",
            "build metadata (`+...`) is not allowed in a policy version",
        ));
    }
    if m.phases.is_empty() {
        return Err(ApiError::invalid(
            "invalid_manifest",
            "manifest.phases",
            "a policy runs in at least one phase (request, response, stream, complete)",
        ));
    }
    if m.complete_reads == CompleteReads::Usage
        && m.phases
            .iter()
            .any(|p| matches!(p, PolicyPhase::Response | PolicyPhase::Stream))
    {
        return Err(ApiError::invalid(
            "invalid_manifest",
            "manifest.complete_reads",
            "`usage` says the policy reads only the answer's usage, but its phases include response or stream, which read the whole answer",
        ));
    }
    m.phases.sort();
    m.phases.dedup();
    m.capabilities.sort();
    m.capabilities.dedup();
    if let Some(parts) = &mut m.request_reads {
        parts.sort();
        parts.dedup();
    }
    if m.display_name.trim().is_empty() {
        m.display_name = m.name.clone();
    }
    if let Some(sha) = &m.sha256
        && (sha.len() != 64
            || !sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(ApiError::invalid(
            "invalid_manifest",
            "manifest.sha256",
            "sha256 must be 64 lowercase hex digits",
        ));
    }
    settings(&m.settings_schema, &m.defaults)?;
    Ok(ValidManifest {
        manifest: m,
        semver,
    })
}

/// Checks that `schema` is a JSON Schema that compiles and that `defaults`
/// validate against it; errors name the offending JSON pointer.
pub fn settings(schema: &Value, defaults: &Value) -> Result<(), ApiError> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::invalid(
            "invalid_schema",
            "manifest.settings_schema",
            "a JSON Schema is an object or a boolean",
        ));
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        return Err(ApiError::invalid(
            "invalid_schema",
            pointer_field("manifest.settings_schema", &e.instance_path().to_string()),
            format!("not a valid JSON Schema: {e}"),
        ));
    }
    // The meta-schema does not catch everything that fails to compile (a
    // `pattern` that is not a regex, a `$ref` that does not resolve).
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        ApiError::invalid(
            "invalid_schema",
            pointer_field("manifest.settings_schema", &e.schema_path().to_string()),
            format!("the settings schema does not compile: {e}"),
        )
    })?;
    if let Some(e) = validator.iter_errors(defaults).next() {
        return Err(ApiError::invalid(
            "invalid_defaults",
            pointer_field("manifest.defaults", &e.instance_path().to_string()),
            format!("default settings do not match the settings schema: {e}"),
        ));
    }
    Ok(())
}

/// `manifest.defaults` + `/limits/0` → `manifest.defaults/limits/0`.
fn pointer_field(base: &str, pointer: &str) -> String {
    format!("{base}{pointer}")
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Implements every import of the policy world by trapping. It is never
/// called: the linker only needs the definitions to type-check a
/// component's imports.
pub struct Refuse;

fn refuse<T>() -> wasmtime::Result<T> {
    Err(wasmtime::format_err!(
        "the policy hub does not run policies"
    ))
}

impl host::types::Host for Refuse {}

impl host::compute::Host for Refuse {
    fn regex_compile(&mut self, _: String, _: bool) -> wasmtime::Result<Result<u32, String>> {
        refuse()
    }
    fn regex_is_match(&mut self, _: u32, _: String) -> wasmtime::Result<bool> {
        refuse()
    }
    fn regex_find_all(&mut self, _: u32, _: String) -> wasmtime::Result<Vec<host::types::Span>> {
        refuse()
    }
    fn schema_compile(&mut self, _: String) -> wasmtime::Result<Result<u32, String>> {
        refuse()
    }
    fn schema_validate(&mut self, _: u32, _: String) -> wasmtime::Result<Result<(), Vec<String>>> {
        refuse()
    }
    fn sha256(&mut self, _: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        refuse()
    }
}

impl host::counters::Host for Refuse {
    fn add(&mut self, _: String, _: i64, _: u64) -> wasmtime::Result<host::counters::CounterState> {
        refuse()
    }
    fn try_add(
        &mut self,
        _: String,
        _: i64,
        _: i64,
        _: u64,
    ) -> wasmtime::Result<host::counters::CounterState> {
        refuse()
    }
    fn get(&mut self, _: String) -> wasmtime::Result<host::counters::CounterState> {
        refuse()
    }
}

impl host::cache::Host for Refuse {
    fn get(&mut self, _: String) -> wasmtime::Result<Option<Vec<u8>>> {
        refuse()
    }
    fn set(&mut self, _: String, _: Vec<u8>, _: u64) -> wasmtime::Result<()> {
        refuse()
    }
}

impl host::clock::Host for Refuse {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        refuse()
    }
}

impl host::log::Host for Refuse {
    fn log(&mut self, _: host::types::Level, _: String) -> wasmtime::Result<()> {
        refuse()
    }
}

impl host::metrics::Host for Refuse {
    fn counter_add(&mut self, _: String, _: u64) -> wasmtime::Result<()> {
        refuse()
    }
    fn observe(&mut self, _: String, _: f64) -> wasmtime::Result<()> {
        refuse()
    }
}

impl host::embeddings::Host for Refuse {
    fn embed(&mut self, _: String) -> wasmtime::Result<Result<Vec<f32>, String>> {
        refuse()
    }
}

impl host::caller::Host for Refuse {
    fn application_id(&mut self) -> wasmtime::Result<Option<String>> {
        refuse()
    }
    fn subscription_id(&mut self) -> wasmtime::Result<Option<String>> {
        refuse()
    }
}

impl host::metering::Host for Refuse {
    fn cost(&mut self) -> wasmtime::Result<Option<f64>> {
        refuse()
    }
}

/// Checks modules against the policy world. Built once per hub: the
/// engine and the linker of trapping imports are reused by every publish.
pub struct ComponentChecker {
    engine: Engine,
    linker: Linker<Refuse>,
}

/// Why a module was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    /// Not a component, or not one of the policy world.
    #[error("{0}")]
    NotPolicyComponent(String),
    /// Imports host capabilities the manifest does not declare.
    #[error(
        "the module imports capabilities its manifest does not declare: {}; add them to `capabilities`",
        .0.join(", ")
    )]
    UndeclaredCapabilities(Vec<String>),
}

impl ComponentChecker {
    pub fn new() -> Result<Self, String> {
        let mut config = Config::new();
        // Publishing is rare and the compiled code is thrown away: compile
        // fast rather than well.
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        let engine = Engine::new(&config).map_err(|e| format!("wasmtime engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        world::PolicyWorld::add_to_linker::<Refuse, HasSelf<Refuse>>(&mut linker, |r| r)
            .map_err(|e| format!("policy world linker: {e:#}"))?;
        Ok(ComponentChecker { engine, linker })
    }

    /// Checks that `bytes` is a component of the policy world whose
    /// capability imports are all in `declared`. CPU-bound (it compiles
    /// the component): call it off the async runtime.
    pub fn check(&self, bytes: &[u8], declared: &[Capability]) -> Result<(), ModuleError> {
        let not_policy = |what: &str, e: wasmtime::Error| {
            ModuleError::NotPolicyComponent(format!("{what}: {e:#}"))
        };
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| not_policy("not a valid WebAssembly component", e))?;

        let declared: BTreeSet<&str> = declared.iter().map(|c| c.as_str()).collect();
        let mut undeclared = Vec::new();
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            match classify_import(name) {
                Import::Wasi | Import::AlwaysGranted => {}
                Import::Capability(cap) if declared.contains(cap) => {}
                Import::Capability(cap) => undeclared.push(cap.to_string()),
                Import::Foreign => {
                    return Err(ModuleError::NotPolicyComponent(format!(
                        "the module imports `{name}`, which is not part of the portcullis:policy@0.1 world or WASI"
                    )));
                }
            }
        }
        if !undeclared.is_empty() {
            return Err(ModuleError::UndeclaredCapabilities(undeclared));
        }

        // WASI imports (the Rust standard library's, for wasm32-wasip2) are
        // provided by the gateway without ambient authority; here they only
        // need a definition. The world's own imports are already defined
        // and are type-checked for real.
        let mut linker = self.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| not_policy("imports do not match the policy world", e))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| not_policy("imports do not match the policy world", e))?;
        world::PolicyWorldPre::new(pre)
            .map_err(|e| not_policy("exports do not match the policy world", e))?;
        Ok(())
    }
}

enum Import<'a> {
    Wasi,
    /// `types` (no functions) and `compute` (no authority).
    AlwaysGranted,
    Capability(&'a str),
    Foreign,
}

fn classify_import(name: &str) -> Import<'_> {
    if name.starts_with("wasi:") {
        return Import::Wasi;
    }
    let Some(rest) = name.strip_prefix(PACKAGE_PREFIX) else {
        return Import::Foreign;
    };
    let Some((interface, version)) = rest.split_once('@') else {
        return Import::Foreign;
    };
    if !version.starts_with(WORLD_VERSION_PREFIX) {
        return Import::Foreign;
    }
    match interface {
        "types" | "compute" => Import::AlwaysGranted,
        other if Capability::parse(other).is_some() => Import::Capability(other),
        _ => Import::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_errors_name_the_pointer() {
        let schema = json!({"type": "object", "properties": {"limit": {"type": "integer"}}});
        assert!(settings(&schema, &json!({"limit": 3})).is_ok());
        let err = settings(&schema, &json!({"limit": "x"})).unwrap_err();
        match err {
            ApiError::Invalid { code, field, .. } => {
                assert_eq!(code, "invalid_defaults");
                assert_eq!(field.as_deref(), Some("manifest.defaults/limit"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = settings(&json!({"type": "nonsense"}), &json!({})).unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::Invalid {
                    code: "invalid_schema",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = settings(&json!([1]), &json!({})).unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::Invalid {
                    code: "invalid_schema",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn imports_are_classified_by_interface_and_version() {
        assert!(matches!(
            classify_import("wasi:cli/environment@0.2.6"),
            Import::Wasi
        ));
        assert!(matches!(
            classify_import("portcullis:policy/compute@0.1.0"),
            Import::AlwaysGranted
        ));
        assert!(matches!(
            classify_import("portcullis:policy/counters@0.1.2"),
            Import::Capability("counters")
        ));
        assert!(matches!(
            classify_import("portcullis:policy/counters@0.2.0"),
            Import::Foreign
        ));
        assert!(matches!(
            classify_import("portcullis:policy/files@0.1.0"),
            Import::Foreign
        ));
        assert!(matches!(
            classify_import("acme:evil/net@1.0.0"),
            Import::Foreign
        ));
    }
}
