//! End-to-end tests: the real `portcullis` binary (gateway and mock LLM)
//! on loopback, driven over HTTP as a client would.

mod admin;
mod cli;
mod connections;
mod console;
mod cost;
mod discovery;
mod errors;
mod fleet;
mod formats;
mod harness;
mod hub;
mod observability;
mod policies;
mod provider_auth;
mod providers;
mod resilience;
mod routing;
mod sdk;
mod tls;
mod trust;

use harness::{Gateway, Mock};

/// The proxy key every test uses.
pub const KEY: &str = "pk-e2e-test-key";

/// One proxy per provider kind, all pointing at `mock`.
pub fn all_providers_config(mock: &Mock, extra: &str) -> String {
    let m = &mock.url;
    format!(
        r#"{extra}
providers:
  - {{ name: openai, type: openai, base_url: "{m}/v1", api_key: sk-mock, models: [gpt-5-mini, gpt-4o-mini] }}
  - {{ name: azure, type: azure-openai, base_url: "{m}", api_key: az-mock, api_version: "2024-10-21" }}
  - {{ name: anthropic, type: anthropic, base_url: "{m}", api_key: ant-mock, models: [claude-sonnet-4-5] }}
  - {{ name: gemini, type: gemini, base_url: "{m}", api_key: gem-mock, models: [gemini-2.5-flash] }}
  - {{ name: bedrock, type: bedrock, base_url: "{m}", region: us-east-1, models: ["anthropic.claude-3-5-sonnet-20240620-v1:0"] }}
  - {{ name: mistral, type: mistral, base_url: "{m}/mistral/v1", api_key: mis-mock, models: [mistral-small-latest] }}
  - {{ name: local, type: openai-compatible, base_url: "{m}/v1" }}
  - {{ name: nowhere, type: openai, base_url: "http://127.0.0.1:1/v1", api_key: x }}
proxies:
  - {{ name: openai, inbound: [openai, anthropic, gemini], routes: [{{ provider: openai }}], keys: [{{ name: tester, env: PC_KEY }}] }}
  - {{ name: azure, routes: [{{ provider: azure, model: gpt-4o-deploy }}], keys: [{{ name: tester, env: PC_KEY }}] }}
  - {{ name: anthropic, inbound: [openai, anthropic, gemini], routes: [{{ provider: anthropic }}], keys: [{{ name: tester, env: PC_KEY }}] }}
  - {{ name: gemini, inbound: [openai, anthropic, gemini], routes: [{{ provider: gemini }}], keys: [{{ name: tester, env: PC_KEY }}] }}
  - {{ name: bedrock, inbound: [openai, anthropic, gemini], routes: [{{ provider: bedrock }}], keys: [{{ name: tester, env: PC_KEY }}] }}
  - {{ name: mistral, routes: [{{ provider: mistral }}], keys: [{{ name: tester, env: PC_KEY }}] }}
  - {{ name: local, routes: [{{ provider: local, api_key: {{ header: x-upstream-key }} }}], keys: [{{ name: tester, env: PC_KEY }}] }}
  - {{ name: untracked, track_stream_tokens: false, routes: [{{ provider: openai }}], keys: [{{ name: tester, env: PC_KEY }}] }}
  - {{ name: nowhere, routes: [{{ provider: nowhere }}], keys: [{{ name: tester, env: PC_KEY }}] }}
"#
    )
}

/// The environment `all_providers_config` reads its secrets from.
pub const ALL_PROVIDERS_ENV: [(&str, &str); 3] = [
    ("PC_KEY", KEY),
    ("AWS_ACCESS_KEY_ID", "AKIDE2ETEST"),
    ("AWS_SECRET_ACCESS_KEY", "e2e-secret"),
];

/// A mock and a gateway serving `all_providers_config`.
pub async fn setup(extra: &str) -> (Mock, Gateway) {
    setup_with_env(extra, &[]).await
}

/// `setup` with extra environment variables for the gateway.
pub async fn setup_with_env(extra: &str, env: &[(&str, &str)]) -> (Mock, Gateway) {
    let mock = Mock::start().await;
    let mut all = ALL_PROVIDERS_ENV.to_vec();
    all.extend_from_slice(env);
    let gw = Gateway::start_with_env(&all_providers_config(&mock, extra), &all).await;
    (mock, gw)
}

/// An HTTP client.
pub fn client() -> reqwest::Client {
    client_builder().build().expect("HTTP client")
}

/// A client builder. The workspace's reqwest has no built-in crypto
/// provider (TLS runs on ring, as in the gateway): install ring as the
/// process default first.
pub fn client_builder() -> reqwest::ClientBuilder {
    portcullis_net::install_crypto();
    reqwest::Client::builder()
}
