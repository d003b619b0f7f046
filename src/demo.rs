//! `portcullis up`: everything on one machine (see `up.rs`), and the demo's
//! pieces: the mock LLM, one demo proxy per provider format (so every
//! translation path can be tried with curl or any SDK), and a standalone
//! gateway config equivalent to the demo.

use std::path::PathBuf;

/// Options of `portcullis up`.
pub struct UpOptions {
    pub demo: bool,
    pub port: u16,
    pub ops_port: u16,
    pub mock_port: u16,
    pub admin_port: u16,
    /// A policy hub to use instead of starting one.
    pub hub_url: Option<String>,
    /// Port of the hub `up` starts.
    pub hub_port: u16,
    pub data_dir: PathBuf,
    /// How admin and the hub `up` starts are served.
    pub serve: crate::net_args::ServeArgs,
    /// How `up`'s clients trust admin and the hub.
    pub trust: crate::net_args::TrustArgs,
}

/// A new random proxy key (122 random bits from two v4 UUIDs' worth).
pub fn generate_key() -> String {
    format!(
        "pc-{}{}",
        uuid::Uuid::new_v4().simple(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The demo configuration: the mock LLM behind one proxy per provider format.
pub fn demo_config(o: &UpOptions, key_hash: &str) -> String {
    let mock = format!("http://127.0.0.1:{}", o.mock_port);
    format!(
        r#"# Written by `portcullis up --demo`; a gateway config you can start from.
listen: 0.0.0.0:{port}
ops_listen: 127.0.0.1:{ops}
providers:
  - name: mock-openai
    type: openai
    base_url: {mock}/v1
    api_key: mock-key
    models: [gpt-5-mini, gpt-4o-mini]
  - name: mock-anthropic
    type: anthropic
    base_url: {mock}
    api_key: mock-key
    models: [claude-sonnet-4-5]
  - name: mock-gemini
    type: gemini
    base_url: {mock}
    api_key: mock-key
    models: [gemini-2.5-flash]
  - name: mock-bedrock
    type: bedrock
    base_url: {mock}
    region: us-east-1
    aws_access_key_id_env: PORTCULLIS_DEMO_AWS_KEY
    aws_secret_access_key_env: PORTCULLIS_DEMO_AWS_SECRET
    models: [anthropic.claude-3-5-sonnet-20240620-v1:0]
  - name: mock-mistral
    type: mistral
    base_url: {mock}/mistral/v1
    api_key: mock-key
    models: [mistral-small-latest]
proxies:
  - name: demo
    context: /demo
    inbound: [openai, anthropic, gemini]
    routes: [{{ provider: mock-openai }}]
    keys: [{{ name: demo, sha256: {key_hash} }}]
  - name: demo-anthropic
    inbound: [openai, anthropic, gemini]
    routes: [{{ provider: mock-anthropic }}]
    keys: [{{ name: demo, sha256: {key_hash} }}]
  - name: demo-gemini
    inbound: [openai, anthropic, gemini]
    routes: [{{ provider: mock-gemini }}]
    keys: [{{ name: demo, sha256: {key_hash} }}]
  - name: demo-bedrock
    inbound: [openai, anthropic, gemini]
    routes: [{{ provider: mock-bedrock }}]
    keys: [{{ name: demo, sha256: {key_hash} }}]
  - name: demo-mistral
    inbound: [openai, anthropic, gemini]
    routes: [{{ provider: mock-mistral }}]
    keys: [{{ name: demo, sha256: {key_hash} }}]
"#,
        port = o.port,
        ops = o.ops_port,
    )
}

/// Runs `portcullis up`.
pub fn up(o: UpOptions) -> anyhow::Result<()> {
    crate::up::run(o)
}

/// Starts the mock LLM on its own threads; returns once it listens.
pub fn start_mock(mock_port: u16) -> anyhow::Result<()> {
    // The mock LLM runs on its own threads beside the gateway.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mock-llm".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("mock LLM runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::bind(("127.0.0.1", mock_port)).await {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        if let Err(e) = portcullis_mock_llm::serve(l).await {
                            tracing::error!(error = %e, "mock LLM stopped");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!(
                            "cannot listen on 127.0.0.1:{mock_port}: {e}"
                        )));
                    }
                }
            });
        })?;
    rx.recv()??;
    Ok(())
}
