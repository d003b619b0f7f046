//! `portcullis bench-policies`: the policy chain benchmark (no policy,
//! each built-in alone, and the four together) on the built policy
//! components, printed as the markdown table of docs/benchmarks.md. Run
//! it from a release build.

use std::path::{Path, PathBuf};

use portcullis_gateway::policy::bench::{Run, table, time_chain};
use portcullis_gateway::policy::manifest::{Artifact, Manifest};

/// Where the built-in policies' manifests live in the source tree, and
/// the name of each crate's wasm file.
const POLICIES: &[(&str, &str, &str)] = &[
    (
        "fixture",
        "tests/policy-fixtures",
        "portcullis_policy_fixtures",
    ),
    (
        "token-rate-limit",
        "policies/token-rate-limit",
        "portcullis_policy_token_rate_limit",
    ),
    (
        "pii-masking",
        "policies/pii-masking",
        "portcullis_policy_pii_masking",
    ),
    (
        "guardrails",
        "policies/guardrails",
        "portcullis_policy_guardrails",
    ),
    ("cache", "policies/cache", "portcullis_policy_cache"),
];

pub struct Options {
    /// The source tree (manifests).
    pub root: PathBuf,
    /// Where `cargo build-policies` put the components.
    pub wasm_dir: PathBuf,
    /// Fresh instances for every request (`reuse_instances: false`).
    pub fresh: bool,
    pub warmup: usize,
    pub iterations: usize,
    /// Requests held between their phases (see `bench::Run`).
    pub in_flight: usize,
    /// KiB of other memory written between phases (see `bench::Run`).
    pub evict_kb: usize,
}

fn artifact(root: &Path, wasm_dir: &Path, name: &str) -> anyhow::Result<Artifact> {
    let (_, src, file) = POLICIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| anyhow::anyhow!("unknown policy {name}"))?;
    let manifest_path = root.join(src).join("policy.json");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;
    let wasm_path = wasm_dir.join(format!("{file}.wasm"));
    let wasm = std::fs::read(&wasm_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e} (build the policies first: `cargo build-policies`)",
            wasm_path.display()
        )
    })?;
    Ok(Artifact::new(
        manifest,
        wasm,
        wasm_path.display().to_string(),
    ))
}

pub fn run(o: Options) -> anyhow::Result<()> {
    let load = |n: &str| artifact(&o.root, &o.wasm_dir, n);
    let fixture = load("fixture")?;
    let limit = load("token-rate-limit")?;
    let pii = load("pii-masking")?;
    let guard = load("guardrails")?;
    let cache = load("cache")?;
    let chains: [Vec<&Artifact>; 7] = [
        vec![],
        vec![&fixture],
        vec![&limit],
        vec![&pii],
        vec![&guard],
        vec![&cache],
        vec![&limit, &pii, &guard, &cache],
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for chain in &chains {
        rows.push(
            rt.block_on(time_chain(
                chain,
                Run {
                    reuse: !o.fresh,
                    warmup: o.warmup,
                    iterations: o.iterations,
                    in_flight: o.in_flight,
                    evict_bytes: o.evict_kb << 10,
                },
            ))
            .map_err(|e| anyhow::anyhow!(e))?,
        );
    }
    print!("{}", table(&rows));
    Ok(())
}
