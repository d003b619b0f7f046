//! `portcullis up`: the policy hub, the admin service and a managed
//! gateway in one process, SQLite under the data directory. The hub
//! publishes the built-in policies it finds (`cargo build-policies`). The gateway is registered as
//! `local` and takes its configuration from admin like any other. With
//! `--demo`, the mock LLM starts too and a provider, proxy and key per
//! provider format are created and deployed over admin's REST API, so the
//! printed curl line goes through the whole control plane.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::demo::{UpOptions, demo_config, start_mock};

/// What the admin thread hands back once it listens.
struct AdminReady {
    bootstrap_token: Option<String>,
    gateway_token: String,
    /// A token for `up` itself (demo setup), rotated every start.
    up_token: String,
}

/// Runs `portcullis up [--demo]`.
pub fn run(o: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&o.data_dir)?;
    let serve = o.serve.options()?;
    let trust = o.trust.tls();
    // With TLS, `up`'s own clients (the gateway, the demo set-up) reach
    // admin and the hub by the name `localhost`, which the certificate
    // must carry.
    let (scheme, host) = match serve.tls {
        Some(_) => ("https", "localhost"),
        None => ("http", "127.0.0.1"),
    };
    let admin_url = format!("{scheme}://{host}:{}", o.admin_port);
    // The hub first: admin validates policy settings against it, and the
    // gateway fetches attached policies from it.
    let hub_url = match &o.hub_url {
        Some(url) => {
            trust.check_url(url, "--hub-url")?;
            url.clone()
        }
        None => {
            let args = crate::hub_cli::HubArgs {
                listen: format!("0.0.0.0:{}", o.hub_port),
                data_dir: o.data_dir.join("hub"),
                database_url: None,
                publish_tokens: Vec::new(),
                max_module_bytes: portcullis_hub::DEFAULT_MAX_MODULE_BYTES,
                builtin_dir: None,
                serve: o.serve.clone(),
            };
            crate::hub_cli::start_background(args)?;
            format!("{scheme}://{host}:{}", o.hub_port)
        }
    };
    let gateway_url = format!("http://127.0.0.1:{}", o.port);

    // Admin on its own threads beside the gateway.
    let (tx, rx) = std::sync::mpsc::channel();
    let admin_opts = portcullis_admin::AdminOptions {
        listen: format!("0.0.0.0:{}", o.admin_port).parse()?,
        database_url: None,
        data_dir: o.data_dir.join("admin"),
        hub_url: Some(hub_url.clone()),
        client_tls: trust.clone(),
    };
    let admin_serve = serve.clone();
    let gw_url = gateway_url.clone();
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("admin runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let started = async {
                    let mut opened = portcullis_admin::open(&admin_opts).await?;
                    opened.state.console = Some(crate::console::CONSOLE_FILES);
                    let pool = opened.state.pool.clone();
                    let gateway_token =
                        portcullis_admin::gateways::ensure_gateway(&pool, "local", &gw_url).await?;
                    let up_token = portcullis_admin::auth::issue_token(
                        &pool,
                        "portcullis up",
                        portcullis_admin::auth::Role::Admin,
                    )
                    .await?;
                    let listener = tokio::net::TcpListener::bind(admin_opts.listen)
                        .await
                        .with_context(|| format!("cannot listen on {}", admin_opts.listen))?;
                    anyhow::Ok((opened, listener, gateway_token, up_token))
                };
                match started.await {
                    Ok((opened, listener, gateway_token, up_token)) => {
                        let _ = tx.send(Ok(AdminReady {
                            bootstrap_token: opened.bootstrap_token.clone(),
                            gateway_token,
                            up_token,
                        }));
                        if let Err(e) = portcullis_admin::serve(
                            listener,
                            opened.state,
                            admin_serve,
                            std::future::pending(),
                        )
                        .await
                        {
                            tracing::error!(error = %e, "admin stopped");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    let ready = rx.recv().context("admin thread ended")??;

    let mut demo_lines = Vec::new();
    if o.demo {
        start_mock(o.mock_port)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (keys, policy_note) = rt.block_on(demo_setup(
            trust.client()?,
            &admin_url,
            &hub_url,
            &ready.up_token,
            o.mock_port,
        ))?;
        let demo_key = keys[0].1.clone();
        // A standalone config equivalent to the demo, to start GitOps from.
        let hash: String = portcullis_gateway::config::hash_key(&demo_key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(o.data_dir.join("demo-gateway.yaml"), demo_config(&o, &hash))?;
        for (proxy, key) in &keys[1..] {
            demo_lines.push(format!("  key for /{proxy:<15} {key}"));
        }
        demo_lines.push(String::new());
        demo_lines.push("Try it:".into());
        demo_lines.push(format!(
            "  curl {gateway_url}/demo/chat/completions -H 'Authorization: Bearer {demo_key}' -H 'content-type: application/json' -d '{{\"model\":\"gpt-5-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello Portcullis\"}}]}}'"
        ));
        demo_lines.insert(
            0,
            format!("  API key   {demo_key}   (for /demo; shown once)"),
        );
        demo_lines.insert(1, "  proxies   /demo (OpenAI), /demo-anthropic, /demo-gemini, /demo-bedrock, /demo-mistral".into());
        demo_lines.insert(2, format!("  mock LLM  http://127.0.0.1:{}", o.mock_port));
        demo_lines.insert(3, policy_note);
    }

    println!("Portcullis is up{}.", if o.demo { " (demo)" } else { "" });
    println!(
        "  gateway   {gateway_url}   (metrics: http://127.0.0.1:{}/metrics)",
        o.ops_port
    );
    println!("  console   {admin_url}/   (sign in with the admin token)");
    println!("  admin     {admin_url}/api/v1   (OpenAPI: {admin_url}/api/v1/openapi.json)");
    println!("  hub       {hub_url}/api/v1/policies");
    match &ready.bootstrap_token {
        Some(t) => println!("  admin token  {t}   (shown once)"),
        None => {
            println!("  admin token  printed on the first start (or set PORTCULLIS_ADMIN_TOKEN)")
        }
    }
    for l in demo_lines {
        println!("{l}");
    }
    println!();

    portcullis_gateway::managed::run(portcullis_gateway::managed::ManagedOptions {
        admin_url,
        token: ready.gateway_token,
        data_dir: o.data_dir.join("gateway"),
        listen: format!("0.0.0.0:{}", o.port),
        ops_listen: format!("127.0.0.1:{}", o.ops_port),
        tls_listen: None,
        run: portcullis_gateway::run::RunOptions::default(),
        poll_wait: 25,
        heartbeat_every: Duration::from_secs(5),
        egress_allow: Vec::new(),
        tls: trust,
    })
}

/// Creates (if missing) the demo providers and proxies, deploys them to
/// `local` and issues a key per proxy; returns (proxy id, key), `/demo` first.
async fn demo_setup(
    c: reqwest::Client,
    admin: &str,
    hub: &str,
    token: &str,
    mock_port: u16,
) -> anyhow::Result<(Vec<(String, String)>, String)> {
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut req = c
            .request(method, format!("{admin}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await?;
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, v))
        }
    };
    let mock = format!("http://127.0.0.1:{mock_port}");
    let providers = [
        (
            "mock-openai",
            json!({"type": "openai", "base_url": format!("{mock}/v1"), "models": ["gpt-5-mini", "gpt-4o-mini"], "credentials": {"api_key": "mock-key"}}),
        ),
        (
            "mock-anthropic",
            json!({"type": "anthropic", "base_url": mock, "models": ["claude-sonnet-4-5"], "credentials": {"api_key": "mock-key"}}),
        ),
        (
            "mock-gemini",
            json!({"type": "gemini", "base_url": mock, "models": ["gemini-2.5-flash"], "credentials": {"api_key": "mock-key"}}),
        ),
        // The mock checks the SigV4 header's shape, not these values.
        (
            "mock-bedrock",
            json!({"type": "bedrock", "base_url": mock, "region": "us-east-1", "models": ["anthropic.claude-3-5-sonnet-20240620-v1:0"],
            "credentials": {"aws_access_key_id": "AKIDPORTCULLISDEMO", "aws_secret_access_key": "portcullis-demo-secret"}}),
        ),
        (
            "mock-mistral",
            json!({"type": "mistral", "base_url": format!("{mock}/mistral/v1"), "models": ["mistral-small-latest"], "credentials": {"api_key": "mock-key"}}),
        ),
    ];
    let proxies = [
        ("demo", "mock-openai"),
        ("demo-anthropic", "mock-anthropic"),
        ("demo-gemini", "mock-gemini"),
        ("demo-bedrock", "mock-bedrock"),
        ("demo-mistral", "mock-mistral"),
    ];
    for (name, mut body) in providers {
        body["name"] = json!(name);
        // The mock port may differ from the last start: create or update.
        let (s, _) = call(
            reqwest::Method::GET,
            format!("/api/v1/providers/{name}"),
            None,
        )
        .await?;
        let (s, v) = if s == 404 {
            call(
                reqwest::Method::POST,
                "/api/v1/providers".into(),
                Some(body),
            )
            .await?
        } else {
            call(
                reqwest::Method::PATCH,
                format!("/api/v1/providers/{name}"),
                Some(body),
            )
            .await?
        };
        anyhow::ensure!(s.is_success(), "demo provider {name}: {s} {v}");
    }
    let mut keys = Vec::new();
    let mut policy_note =
        "  policies  (the /demo proxy already existed; see GET /api/v1/proxies/demo/policies)"
            .to_owned();
    for (name, provider) in proxies {
        let (s, _) = call(
            reqwest::Method::GET,
            format!("/api/v1/proxies/{name}"),
            None,
        )
        .await?;
        if s == 404 {
            let body = json!({"name": name, "provider": provider, "context": format!("/{name}"), "inbound": ["openai", "anthropic", "gemini"],
                "description": "created by portcullis up --demo"});
            let (s, v) = call(reqwest::Method::POST, "/api/v1/proxies".into(), Some(body)).await?;
            anyhow::ensure!(s.is_success(), "demo proxy {name}: {s} {v}");
            if name == "demo" {
                policy_note = attach_demo_policies(&c, hub, &call).await?;
            }
        }
        let (s, v) = call(
            reqwest::Method::POST,
            format!("/api/v1/proxies/{name}/deployments"),
            Some(json!({"gateway": "local"})),
        )
        .await?;
        anyhow::ensure!(s.is_success(), "deploying {name}: {s} {v}");
        let (s, v) = call(
            reqwest::Method::POST,
            format!("/api/v1/proxies/{name}/keys"),
            Some(json!({"name": "demo"})),
        )
        .await?;
        anyhow::ensure!(s.is_success(), "demo key for {name}: {s} {v}");
        keys.push((
            name.to_owned(),
            v["key"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    Ok((keys, policy_note))
}

/// Attaches PII masking (emails redacted before the provider sees them,
/// restored in the answer) and a generous per-key token rate limit (so its
/// `x-ratelimit-*` headers show on every response) to `/demo`, when the hub
/// has them; returns the line `up` prints about it.
async fn attach_demo_policies<F, Fut>(
    c: &reqwest::Client,
    hub: &str,
    call: &F,
) -> anyhow::Result<String>
where
    F: Fn(reqwest::Method, String, Option<Value>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(reqwest::StatusCode, Value)>>,
{
    let demo_policies = [
        ("pii-masking", json!({})),
        (
            "token-rate-limit",
            json!({"limits": [{"metric": "total_tokens", "limit": 1_000_000, "window": "minute"}], "key": "api_key"}),
        ),
    ];
    let mut attached = Vec::new();
    for (i, (name, settings)) in demo_policies.into_iter().enumerate() {
        let found: Value = match c.get(format!("{hub}/api/v1/policies/{name}")).send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let Some(version) = found["latest_version"].as_str() else {
            return Ok(format!(
                "  policies  none attached: the hub has no `{name}` (build the built-in policies with `cargo build-policies`, then restart with a fresh --data-dir)"
            ));
        };
        let (s, v) = call(
            reqwest::Method::POST,
            "/api/v1/proxies/demo/policies".into(),
            Some(json!({"name": name, "version": version, "settings": settings, "order": i})),
        )
        .await?;
        anyhow::ensure!(s.is_success(), "attaching {name} to /demo: {s} {v}");
        attached.push(format!("{name}@{version}"));
    }
    Ok(format!("  policies  /demo carries {}", attached.join(", ")))
}
