//! The policy hub end to end: a policy built with the SDK is published
//! with `portcullis policy publish` to a running `portcullis hub`,
//! attached in a gateway configuration by name and version, fetched by
//! the gateway and enforced on a request; then the hub goes away and a
//! fresh gateway still enforces it from its disk cache.
//!
//! Needs the built policy components, as `policies.rs` does.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{
    Gateway, Mock, Proc, TempDir, free_port, get_json, run_cli, run_cli_env, wait_ready,
};
use crate::policies::policy_dir;
use crate::{KEY, client};

const TOKEN: &str = "e2e-publisher-token-0123";

async fn start_hub(data: &TempDir) -> (Proc, String) {
    let port = free_port();
    std::fs::create_dir_all(data.0.join("no-builtins")).unwrap();
    let log = std::fs::File::create(data.0.join("hub.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "hub",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--publish-token",
        ])
        .arg(format!("e2e:{TOKEN}"))
        .arg("--data-dir")
        .arg(&data.0)
        // No built-ins: this test publishes its own.
        .arg("--builtin-dir")
        .arg(data.0.join("no-builtins"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start hub");
    let proc = Proc::new(child);
    let url = format!("http://127.0.0.1:{port}");
    if !wait_ready(&format!("{url}/healthz")).await {
        panic!(
            "the hub did not start:\n{}",
            std::fs::read_to_string(data.0.join("hub.log")).unwrap_or_default()
        );
    }
    (proc, url)
}

fn config(mock: &Mock, hub_url: &str, cache: &TempDir) -> String {
    pinned_config(mock, hub_url, cache, None)
}

/// `config`, its attachment pinning the module's SHA-256 when `pin` is set.
fn pinned_config(mock: &Mock, hub_url: &str, cache: &TempDir, pin: Option<&str>) -> String {
    let pin = pin
        .map(|p| format!(", sha256: \"{p}\""))
        .unwrap_or_default();
    format!(
        "policy_engine: {{ hub: {{ url: \"{hub_url}\", cache_dir: \"{}\", timeout_ms: 2000 }} }}\n\
         providers:\n  - {{ name: openai, type: openai, base_url: \"{}/v1\", api_key: sk-mock }}\n\
         proxies:\n  - {{ name: pii, routes: [{{ provider: openai }}], keys: [{{ name: tester, env: PC_KEY }}], \
         policies: [{{ name: pii-masking, version: \"0.1.0\"{pin} }}] }}\n",
        cache.0.display(),
        mock.url
    )
}

/// `gateway --validate` of `config` on a free port: exit code and stderr.
fn validate(config: &str, dir: &TempDir) -> (i32, String) {
    let path = dir.0.join("gateway.yaml");
    std::fs::write(
        &path,
        format!("listen: 127.0.0.1:{}\n{config}", free_port()),
    )
    .unwrap();
    let (code, _, err) = run_cli_env(
        &["gateway", "--validate", "--config", path.to_str().unwrap()],
        &[("PC_KEY", KEY)],
    );
    (code, err)
}

/// Sends an email address through the proxy; returns what the provider saw.
async fn provider_sees(gw: &Gateway, mock: &Mock) -> Value {
    let r = client()
        .post(format!("{}/pii/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "I am jane.doe@example.com"}]}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}\ngateway log:\n{}", gw.log()));
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let journal = mock.journal().await;
    journal
        .iter()
        .rev()
        .find_map(|e| {
            e["body"]["messages"][0]["content"]
                .as_str()
                .map(|s| Value::String(s.to_string()))
        })
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_published_policy_is_fetched_cached_and_enforced() {
    let built = policy_dir();
    let data = TempDir::new();
    let cache = TempDir::new();
    let (hub, hub_url) = start_hub(&data).await;

    // Publish with the CLI; a second publish of the same version is refused.
    let dir = built.0.join("pii-masking");
    let dir = dir.to_str().unwrap();
    let (code, out, err) = run_cli(&[
        "policy", "publish", dir, "--hub", &hub_url, "--token", TOKEN,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("published pii-masking@0.1.0 sha256:"),
        "{out}"
    );
    let digest: String = out
        .trim_start_matches("published pii-masking@0.1.0 sha256:")
        .chars()
        .take(64)
        .collect();
    let (code, _, err) = run_cli(&[
        "policy", "publish", dir, "--hub", &hub_url, "--token", TOKEN,
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("409") && err.contains("manifest.version"),
        "{err}"
    );
    let listed = get_json(&format!("{hub_url}/api/v1/policies")).await;
    assert_eq!(listed["items"][0]["name"], "pii-masking", "{listed}");

    // A gateway attaches it by name and version, fetches it and enforces it.
    let mock = Mock::start().await;
    let gw = Gateway::start_with_env(&config(&mock, &hub_url, &cache), &[("PC_KEY", KEY)]).await;
    assert_eq!(provider_sees(&gw, &mock).await, "I am [EMAIL_1]");
    let cached: Vec<_> = std::fs::read_dir(cache.0.join("modules"))
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(cached.len(), 1, "one module cached by digest");
    drop(gw);

    // A configuration file may pin the module: the published digest loads,
    // any other is refused naming the attachment's field.
    let (code, err) = validate(
        &pinned_config(&mock, &hub_url, &cache, Some(&digest)),
        &data,
    );
    assert_eq!(code, 0, "{err}");
    let other = "0".repeat(64);
    let (code, err) = validate(&pinned_config(&mock, &hub_url, &cache, Some(&other)), &data);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("proxies[0].policies[0].sha256") && err.contains(&digest),
        "{err}"
    );
    let (code, err) = validate(&pinned_config(&mock, &hub_url, &cache, Some("abc")), &data);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("proxies[0].policies[0].sha256"), "{err}");

    // The hub goes away: a new gateway starts from the cache and still masks.
    // The manifest of a published version is read from the cache first, so
    // the hub is not even asked. (Its old port could be reused by a
    // parallel test's server, so the gateway is pointed at a port nothing
    // listens on: the cache is keyed by name@version and digest, not by
    // hub URL.)
    drop(hub);
    let down = "http://127.0.0.1:1";
    let gw = Gateway::start_with_env(&config(&mock, down, &cache), &[("PC_KEY", KEY)]).await;
    assert_eq!(provider_sees(&gw, &mock).await, "I am [EMAIL_1]");
    assert!(!gw.log().contains("policy hub unreachable"), "{}", gw.log());

    // Without the cache and the hub, the configuration is refused, naming why.
    let empty = TempDir::new();
    let (code, err) = validate(&config(&mock, down, &empty), &empty);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unreachable") && err.contains("not cached"),
        "{err}"
    );
}
