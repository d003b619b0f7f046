//! `portcullis policy new | build | test`: the policy author's workflow.
//!
//! `new NAME` scaffolds a crate (Cargo.toml, policy.json manifest, a
//! working policy with a unit test); `build` compiles it to a
//! wasm32-wasip2 component and writes the artifact the gateway and the
//! hub read (`target/policy/<name>/policy.wasm` + `manifest.json` with
//! the module's sha256); `test` runs the policy's unit tests natively,
//! against the SDK's in-process test host.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// `portcullis policy new`.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The policy's name: lowercase letters, digits and hyphens.
    pub name: String,
    /// Where to create it (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Path of the portcullis-policy-sdk crate (default: this checkout's).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// `portcullis policy build` / `test`.
#[derive(clap::Args, Debug)]
pub struct DirArgs {
    /// The policy crate (default: the current directory).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn new(a: NewArgs) -> anyhow::Result<()> {
    if !valid_name(&a.name) {
        bail!(
            "`{}`: a policy name is lowercase letters, digits and hyphens, starting with a letter",
            a.name
        );
    }
    let dir = a.dir.unwrap_or_else(|| PathBuf::from(&a.name));
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = match a.sdk {
        Some(p) => p,
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk/policy"),
    };
    let sdk = std::fs::canonicalize(&sdk)
        .with_context(|| format!("the SDK is not at {}", sdk.display()))?;
    std::fs::create_dir_all(dir.join("src"))?;
    let crate_name = a.name.replace('-', "_");
    let type_name: String = a
        .name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
portcullis-policy-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A policy is its own workspace (and so its own target directory).
[workspace]

[profile.release]
opt-level = "s"
strip = true
"#,
            name = a.name,
            sdk = sdk.display()
        ),
    )?;
    std::fs::write(
        dir.join("policy.json"),
        format!(
            r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "category": "guardrail",
  "description": "Rejects requests whose last message mentions a blocked word.",
  "phases": ["request"],
  "capabilities": ["log"],
  "settings_schema": {{
    "type": "object",
    "additionalProperties": false,
    "properties": {{ "blocked_word": {{ "type": "string", "minLength": 1 }} }}
  }},
  "defaults": {{ "blocked_word": "forbidden" }}
}}
"#,
            name = a.name
        ),
    )?;
    std::fs::write(
        dir.join("src/lib.rs"),
        format!(
            r#"//! {name}: a Portcullis policy.

use portcullis_policy_sdk::host;
use portcullis_policy_sdk::{{
    ConfigError, Level, Policy, PolicyInfo, Rejection, Request, RequestVerdict, export_policy,
    serde_json, settings,
}};
use serde::Deserialize;

#[derive(Deserialize)]
struct Settings {{
    blocked_word: String,
}}

#[derive(Clone)]
pub struct {ty} {{
    blocked_word: String,
}}

impl Policy for {ty} {{
    fn init(value: serde_json::Value) -> Result<Self, ConfigError> {{
        let s: Settings = settings(value)?;
        Ok({ty} {{ blocked_word: s.blocked_word.to_lowercase() }})
    }}

    fn info(&self) -> PolicyInfo {{
        PolicyInfo::request_only()
    }}

    fn on_request(&mut self, req: &Request) -> RequestVerdict {{
        let last = req.messages.last().map(|m| m.text().to_lowercase()).unwrap_or_default();
        if last.contains(&self.blocked_word) {{
            host::log(Level::Info, "blocked a request");
            return RequestVerdict::Reject(
                Rejection::new(400, "invalid_request_error", "This word is not allowed here.")
                    .with_code("blocked_word"),
            );
        }}
        RequestVerdict::Continue(Vec::new())
    }}
}}

export_policy!({ty});

#[cfg(test)]
mod tests {{
    use super::*;
    use portcullis_policy_sdk::serde_json::json;
    use portcullis_policy_sdk::testing::Harness;

    #[test]
    fn blocks_the_word() {{
        let mut h = Harness::<{ty}>::with_defaults(include_str!("../policy.json"), json!({{}})).unwrap();
        assert!(matches!(h.request(&Request::user("m", "something Forbidden")), RequestVerdict::Reject(_)));
        assert!(matches!(h.request(&Request::user("m", "hello")), RequestVerdict::Continue(_)));
    }}
}}
"#,
            name = a.name,
            ty = type_name
        ),
    )?;
    let _ = crate_name;
    println!("Created the policy `{}` in {}.", a.name, dir.display());
    println!(
        "Next: cd {} && portcullis policy test && portcullis policy build",
        dir.display()
    );
    Ok(())
}

fn manifest(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let path = dir.join("policy.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn cargo(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// The target directory cargo uses for `dir`.
fn target_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .context("cannot run cargo metadata")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

pub fn build(a: DirArgs) -> anyhow::Result<()> {
    let mut m = manifest(&a.dir)?;
    let name = m["name"]
        .as_str()
        .context("policy.json has no name")?
        .to_owned();
    let version = m["version"]
        .as_str()
        .context("policy.json has no version")?
        .to_owned();
    cargo(&a.dir, &["build", "--release", "--target", "wasm32-wasip2"])?;
    let cargo_toml = std::fs::read_to_string(a.dir.join("Cargo.toml"))?;
    let package = cargo_toml
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("name = \"")
                .and_then(|r| r.strip_suffix('"'))
        })
        .context("Cargo.toml has no package name")?
        .replace('-', "_");
    let target = target_dir(&a.dir)?;
    let wasm_path = target
        .join("wasm32-wasip2/release")
        .join(format!("{package}.wasm"));
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("cannot read {}", wasm_path.display()))?;
    m["sha256"] = serde_json::Value::String(hex::encode(Sha256::digest(&wasm)));
    let out = a.dir.join("target/policy").join(&name).join(&version);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("policy.wasm"), &wasm)?;
    std::fs::write(out.join("manifest.json"), serde_json::to_vec_pretty(&m)?)?;
    println!(
        "Built {name} {version}: {} ({} bytes)",
        out.display(),
        wasm.len()
    );
    println!(
        "Attach it: policy_engine: {{ dirs: [\"{}\"] }} and proxies[].policies: [{{ name: {name} }}]",
        a.dir.join("target/policy").display()
    );
    Ok(())
}

pub fn test(a: DirArgs) -> anyhow::Result<()> {
    manifest(&a.dir)?;
    cargo(&a.dir, &["test"])
}
