//! `portcullis hub` (run the policy hub) and `portcullis policy publish`
//! (send a built policy to a hub).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use portcullis_types::policy::{PolicyManifest, PolicyVersion, PublishRequest};

/// Options of `portcullis hub`.
#[derive(clap::Args, Debug)]
pub struct HubArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8091", env = "PORTCULLIS_HUB_LISTEN")]
    pub listen: String,
    /// Where state is kept (the SQLite file by default).
    #[arg(long, env = "PORTCULLIS_HUB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...` (default: SQLite at DATA_DIR/hub.db).
    #[arg(long, env = "PORTCULLIS_HUB_DATABASE_URL")]
    pub database_url: Option<String>,
    /// A token allowed to publish, as `PUBLISHER:TOKEN` (a bare token
    /// publishes as `admin`). Repeat, or separate with commas in the env.
    #[arg(
        long = "publish-token",
        env = "PORTCULLIS_HUB_TOKENS",
        value_delimiter = ','
    )]
    pub publish_tokens: Vec<String>,
    /// Largest module accepted, in bytes.
    #[arg(long, env = "PORTCULLIS_HUB_MAX_MODULE_BYTES", default_value_t = portcullis_hub::DEFAULT_MAX_MODULE_BYTES)]
    pub max_module_bytes: usize,
    /// Directory of built policies (`<name>/manifest.json` + `policy.wasm`)
    /// published at start when missing. Default: the built-in policies
    /// embedded in this binary.
    #[arg(long, env = "PORTCULLIS_HUB_BUILTIN_DIR")]
    pub builtin_dir: Option<PathBuf>,
    /// How the API is served (HTTPS, connection limit, deadlines).
    #[command(flatten)]
    pub serve: crate::net_args::ServeArgs,
}

/// The built-in policies to seed: `--builtin-dir`, else the binary's own.
pub fn builtins(
    builtin_dir: Option<&Path>,
) -> anyhow::Result<Vec<portcullis_hub::seed::BuiltPolicy>> {
    match builtin_dir {
        Some(dir) => portcullis_hub::seed::artifact_dir(dir)
            .map_err(|e| anyhow::anyhow!("--builtin-dir: {e}")),
        None => Ok(crate::builtin::policies()),
    }
}

/// Builds the hub's configuration from its command line.
pub fn hub_config(args: &HubArgs) -> anyhow::Result<portcullis_hub::HubConfig> {
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("creating {}", args.data_dir.display()))?;
            format!("sqlite://{}", args.data_dir.join("hub.db").display())
        }
    };
    let mut config = portcullis_hub::HubConfig::new(database_url);
    for spec in &args.publish_tokens {
        let token = portcullis_hub::PublisherToken::parse(spec)
            .map_err(|e| anyhow::anyhow!("--publish-token: {e}"))?;
        config.tokens.push(token);
    }
    config.max_module_bytes = args.max_module_bytes;
    config.builtins = builtins(args.builtin_dir.as_deref())?;
    Ok(config)
}

/// Runs the hub until Ctrl-C.
pub fn run_hub(args: HubArgs) -> anyhow::Result<()> {
    let config = hub_config(&args)?;
    let options = args.serve.options()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        if config.tokens.is_empty() {
            tracing::warn!("no --publish-token given: the hub is read-only");
        }
        let hub = portcullis_hub::Hub::open(config).await?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        eprintln!(
            "policy hub listening on {}://{}",
            options.scheme(),
            listener.local_addr()?
        );
        portcullis_hub::serve(listener, hub, options, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok(())
    })
}

/// Options of `portcullis policy publish`.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// A built policy: a directory with `manifest.json` and `policy.wasm`,
    /// or the `.wasm` file (its directory holds `manifest.json`).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The hub's base URL.
    #[arg(
        long,
        env = "PORTCULLIS_HUB_URL",
        default_value = "http://127.0.0.1:8091"
    )]
    pub hub: String,
    /// A publisher token of that hub.
    #[arg(long, env = "PORTCULLIS_HUB_TOKEN")]
    pub token: String,
    #[command(flatten)]
    pub trust: crate::net_args::TrustArgs,
}

/// Reads a built policy's manifest and module.
pub fn read_built_policy(path: &Path) -> anyhow::Result<(PolicyManifest, Vec<u8>)> {
    let (dir, wasm) = if path.is_dir() {
        (path.to_path_buf(), path.join("policy.wasm"))
    } else {
        (
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path.to_path_buf(),
        )
    };
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest: PolicyManifest =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .with_context(|| format!("{}", manifest_path.display()))?;
    let module = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    Ok((manifest, module))
}

/// Publishes a built policy; returns what the hub stored.
pub async fn publish(args: &PublishArgs) -> anyhow::Result<PolicyVersion> {
    let (manifest, module) = read_built_policy(&args.path)?;
    let body = PublishRequest {
        manifest,
        module: base64::engine::general_purpose::STANDARD.encode(module),
    };
    let tls = args.trust.tls();
    tls.check_url(&args.hub, "--hub")?;
    let url = format!("{}/api/v1/policies", args.hub.trim_end_matches('/'));
    let response = tls
        .client()?
        .post(&url)
        .bearer_auth(&args.token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        // The hub's problem names the field at fault; show it as is.
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let e = &problem["error"];
        match (e["message"].as_str(), e["field"].as_str()) {
            (Some(m), Some(f)) => bail!("{status}: {f}: {m}"),
            (Some(m), None) => bail!("{status}: {m}"),
            _ => bail!("{status}: {text}"),
        }
    }
    serde_json::from_str(&text).with_context(|| format!("unexpected answer from {url}: {text}"))
}

/// `portcullis policy publish`: prints `name@version digest`.
pub fn run_publish(args: PublishArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let v = runtime.block_on(publish(&args))?;
    println!(
        "published {}@{} {} ({} bytes)",
        v.manifest.name, v.manifest.version, v.digest, v.size
    );
    Ok(())
}

/// Starts a hub on its own threads (for `portcullis up`), with the
/// checkout's built-in policies; returns once it listens.
pub fn start_background(args: HubArgs) -> anyhow::Result<()> {
    let config = hub_config(&args)?;
    let options = args.serve.options()?;
    let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("policy-hub".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("hub runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let started = async {
                    let hub = portcullis_hub::Hub::open(config).await?;
                    let listener = tokio::net::TcpListener::bind(&args.listen)
                        .await
                        .with_context(|| format!("binding {}", args.listen))?;
                    anyhow::Ok((hub, listener))
                };
                match started.await {
                    Ok((hub, listener)) => {
                        let _ = tx.send(Ok(()));
                        if let Err(e) =
                            portcullis_hub::serve(listener, hub, options, std::future::pending())
                                .await
                        {
                            tracing::error!(error = %e, "policy hub stopped");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    rx.recv().context("policy hub thread ended")?
}
