//! Model discovery and provider aliases, for every provider type, through
//! the gateway and the mock's model lists: the listed models merge the
//! configured ones, the aliases and what the provider lists; an alias
//! reaches the provider as its model; a refresh follows a changed list; a
//! failing list keeps the last good one and is counted; a reload keeps the
//! lists of unchanged providers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, Mock, TempDir, metrics_when, run_cli};
use crate::trust::chat;
use crate::{KEY, client};

/// One provider of each type discovering its models every `refresh_s`,
/// with aliases; Azure (which cannot discover) has an alias only.
fn config(mock: &Mock, refresh_s: u64) -> String {
    let m = &mock.url;
    let d = format!("discover_models: {{ refresh_s: {refresh_s} }}");
    format!(
        r#"
providers:
  - {{ name: openai, type: openai, base_url: "{m}/v1", api_key: sk-mock, models: [gpt-5-mini], {d}, aliases: {{ fast: gpt-4o-mini }} }}
  - {{ name: local, type: openai-compatible, base_url: "{m}/v1", api_key: local-key, {d} }}
  - {{ name: mistral, type: mistral, base_url: "{m}/mistral/v1", api_key: mis-mock, models: [mistral-tiny], {d}, aliases: {{ small: mistral-small-latest }} }}
  - {{ name: anthropic, type: anthropic, base_url: "{m}", api_key: ant-mock, models: [claude-sonnet-4-5], {d}, aliases: {{ smart: claude-b }} }}
  - {{ name: gemini, type: gemini, base_url: "{m}", api_key: gem-mock, {d}, aliases: {{ flash: gemini-x }} }}
  - {{ name: bedrock, type: bedrock, base_url: "{m}", region: us-east-1, {d}, aliases: {{ sonnet: "anthropic.claude-3-5-sonnet-20240620-v1:0" }} }}
  - {{ name: azure, type: azure-openai, base_url: "{m}", api_key: az-mock, models: [gpt-4o-deploy], aliases: {{ gpt: gpt-4o-deploy }} }}
proxies:
  - {{ name: openai, routes: [{{ provider: openai }}], keys: [{{ name: t, env: PC_KEY }}] }}
  - {{ name: local, routes: [{{ provider: local }}], keys: [{{ name: t, env: PC_KEY }}] }}
  - {{ name: mistral, routes: [{{ provider: mistral }}], keys: [{{ name: t, env: PC_KEY }}] }}
  - {{ name: anthropic, routes: [{{ provider: anthropic }}], keys: [{{ name: t, env: PC_KEY }}] }}
  - {{ name: gemini, routes: [{{ provider: gemini }}], keys: [{{ name: t, env: PC_KEY }}] }}
  - {{ name: bedrock, routes: [{{ provider: bedrock }}], keys: [{{ name: t, env: PC_KEY }}] }}
  - {{ name: azure, routes: [{{ provider: azure }}], keys: [{{ name: t, env: PC_KEY }}] }}
"#
    )
}

const ENV: [(&str, &str); 3] = [
    ("PC_KEY", KEY),
    ("AWS_ACCESS_KEY_ID", "AKIDE2ETEST"),
    ("AWS_SECRET_ACCESS_KEY", "e2e-secret"),
];

/// The lists the mock serves: Anthropic's and Gemini's span several pages
/// (`page_size` 2), Gemini's holds a model no chat call can use.
fn lists() -> Value {
    json!({
        "openai": ["gpt-5-mini", "gpt-4o-mini", "o4-mini"],
        "mistral": ["mistral-small-latest", "mistral-embed"],
        "anthropic": ["claude-a", "claude-b", "claude-c"],
        "gemini": ["gemini-x", "gemini-embedding-y", "imagen-z", "gemini-w"],
        "bedrock": ["anthropic.claude-3-5-sonnet-20240620-v1:0", "amazon.titan-embed-text-v2:0"],
        "page_size": 2,
    })
}

/// (proxy, the models `GET /models` lists once discovery ran, in order)
fn expected() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            "openai",
            vec!["gpt-5-mini", "fast", "gpt-4o-mini", "o4-mini"],
        ),
        ("local", vec!["gpt-5-mini", "gpt-4o-mini", "o4-mini"]),
        (
            "mistral",
            vec![
                "mistral-tiny",
                "small",
                "mistral-small-latest",
                "mistral-embed",
            ],
        ),
        (
            "anthropic",
            vec![
                "claude-sonnet-4-5",
                "smart",
                "claude-a",
                "claude-b",
                "claude-c",
            ],
        ),
        (
            "gemini",
            vec!["flash", "gemini-x", "gemini-embedding-y", "gemini-w"],
        ),
        (
            "bedrock",
            vec![
                "sonnet",
                "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "amazon.titan-embed-text-v2:0",
            ],
        ),
        ("azure", vec!["gpt-4o-deploy", "gpt"]),
    ]
}

/// The models `GET {proxy}/models` lists, without the proxy prefix; the
/// status when it is not 200 (a proxy a reload has not added yet).
async fn try_listed(gw: &Gateway, proxy: &str) -> Result<Vec<String>, u16> {
    let r = client()
        .get(format!("{}/{proxy}/models", gw.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let v: Value = r.json().await.unwrap();
    Ok(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id = m["id"].as_str().unwrap();
            id.strip_prefix(&format!("{proxy}:"))
                .unwrap_or_else(|| panic!("{id} without the proxy prefix"))
                .to_owned()
        })
        .collect())
}

/// The models `GET {proxy}/models` lists, which must answer 200.
async fn listed(gw: &Gateway, proxy: &str) -> Vec<String> {
    try_listed(gw, proxy)
        .await
        .unwrap_or_else(|status| panic!("{proxy}: GET /models answered {status}"))
}

/// Polls `GET {proxy}/models` until it lists `want`; panics after 15 s.
async fn wait_listed(gw: &Gateway, proxy: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = try_listed(gw, proxy).await;
        if got.as_deref().is_ok_and(|g| g == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{proxy}: listed {got:?}, expected {want:?}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The list requests the mock received, as `provider path?query`.
async fn list_calls(mock: &Mock) -> Vec<String> {
    mock.journal()
        .await
        .iter()
        .filter(|e| e["method"] == "GET")
        .map(|e| {
            format!(
                "{} {}?{}",
                e["provider"].as_str().unwrap_or(""),
                e["path"].as_str().unwrap_or(""),
                e["query"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn start(refresh_s: u64) -> (Mock, Gateway) {
    let mock = Mock::start().await;
    mock.set_models(lists()).await;
    let gw = Gateway::start_with_env(&config(&mock, refresh_s), &ENV).await;
    (mock, gw)
}

#[tokio::test]
async fn every_provider_lists_configured_aliased_and_discovered_models() {
    let (mock, gw) = start(600).await;
    for (proxy, want) in expected() {
        wait_listed(&gw, proxy, &want).await;
    }
    // Each provider's own list request: Anthropic and Gemini page by page.
    let calls = list_calls(&mock).await;
    for call in [
        "anthropic /v1/models?limit=1000",
        "anthropic /v1/models?limit=1000&after_id=claude-b",
        "gemini /v1beta/models?pageSize=1000",
        "gemini /v1beta/models?pageSize=1000&pageToken=Cg%2B2%2F%3D",
        "bedrock /foundation-models?",
        "openai /v1/models?",
        "mistral /mistral/v1/models?",
    ] {
        assert!(calls.iter().any(|c| c == call), "{call} not in {calls:?}");
    }
    let journal = mock.journal().await;
    let auth = |provider: &str| {
        journal
            .iter()
            .find(|e| e["provider"] == provider && e["method"] == "GET")
            .map(|e| e["headers"].clone())
            .unwrap()
    };
    assert_eq!(auth("anthropic")["x-api-key"], "ant-mock");
    assert_eq!(auth("gemini")["x-goog-api-key"], "gem-mock");
    assert_eq!(auth("mistral")["authorization"], "Bearer mis-mock");
    assert!(
        auth("bedrock")["authorization"]
            .as_str()
            .unwrap()
            .contains("/us-east-1/bedrock/aws4_request")
    );
    let text = metrics_when(
        &gw.ops_url,
        &["portcullis_model_discovery_total{", "outcome=\"ok\""],
        6.0,
    )
    .await;
    assert!(
        text.contains("portcullis_discovered_models{provider=\"gemini\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn aliases_and_discovered_models_reach_the_provider_as_its_own_model() {
    let (mock, gw) = start(600).await;
    for (proxy, want) in expected() {
        wait_listed(&gw, proxy, &want).await;
    }
    // (proxy, model sent, model the provider sees)
    let cases = [
        ("openai", "fast", "gpt-4o-mini"),
        ("openai", "o4-mini", "o4-mini"),
        ("mistral", "small", "mistral-small-latest"),
        ("anthropic", "smart", "claude-b"),
        ("anthropic", "claude-c", "claude-c"),
        ("gemini", "flash", "gemini-x"),
        (
            "bedrock",
            "sonnet",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
        ("azure", "gpt", "gpt-4o-deploy"),
    ];
    for (proxy, model, upstream) in cases {
        let (status, body) = chat(&gw, proxy, model).await;
        assert_eq!(status, 200, "{proxy} {model}: {body}");
        let journal = mock.journal().await;
        let last = journal
            .iter()
            .rev()
            .find(|e| e["method"] == "POST")
            .unwrap();
        assert_eq!(last["model"], upstream, "{proxy} {model}");
        // The answer names the model that served it.
        assert_eq!(body["model"], upstream, "{proxy} {model}: {body}");
    }
    // A model neither configured nor discovered is still refused where
    // the provider declares models.
    let (status, body) = chat(&gw, "openai", "gpt-unknown").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_refresh_follows_the_list_and_a_failing_list_keeps_the_last_good_one() {
    let (mock, gw) = start(1).await;
    for (proxy, want) in expected() {
        wait_listed(&gw, proxy, &want).await;
    }
    mock.set_models(json!({
        "openai": ["gpt-new"],
        "mistral": ["mistral-new"],
        "anthropic": ["claude-new", "claude-b"],
        "gemini": ["gemini-new", "gemini-x"],
        "bedrock": ["meta.llama-new"],
    }))
    .await;
    wait_listed(&gw, "openai", &["gpt-5-mini", "fast", "gpt-new"]).await;
    wait_listed(&gw, "local", &["gpt-new"]).await;
    wait_listed(&gw, "mistral", &["mistral-tiny", "small", "mistral-new"]).await;
    wait_listed(
        &gw,
        "anthropic",
        &["claude-sonnet-4-5", "smart", "claude-new", "claude-b"],
    )
    .await;
    wait_listed(&gw, "gemini", &["flash", "gemini-new", "gemini-x"]).await;
    wait_listed(&gw, "bedrock", &["sonnet", "meta.llama-new"]).await;

    // Every list fails from now on; calls still work.
    mock.behave(json!({"status": 503, "method": "GET"})).await;
    for provider in [
        "openai",
        "local",
        "mistral",
        "anthropic",
        "gemini",
        "bedrock",
    ] {
        metrics_when(
            &gw.ops_url,
            &[
                "portcullis_model_discovery_total{",
                &format!("provider=\"{provider}\""),
                "outcome=\"error\"",
            ],
            1.0,
        )
        .await;
    }
    assert_eq!(
        listed(&gw, "gemini").await,
        ["flash", "gemini-new", "gemini-x"]
    );
    assert_eq!(listed(&gw, "bedrock").await, ["sonnet", "meta.llama-new"]);
    assert_eq!(
        listed(&gw, "anthropic").await,
        ["claude-sonnet-4-5", "smart", "claude-new", "claude-b"]
    );
    let (status, body) = chat(&gw, "openai", "gpt-new").await;
    assert_eq!(status, 200, "{body}");
    let log = gw.log();
    assert!(
        log.contains("model discovery failed") && log.contains("gemini returned 503"),
        "{log}"
    );
}

#[tokio::test]
async fn a_reload_keeps_the_lists_of_unchanged_providers_and_refetches_changed_ones() {
    let (mock, gw) = start(600).await;
    for (proxy, want) in expected() {
        wait_listed(&gw, proxy, &want).await;
    }
    let before = list_calls(&mock).await.len();
    // The same providers and one more proxy: nothing to fetch again, and
    // no list goes missing meanwhile.
    let base = config(&mock, 600);
    gw.reload(&format!(
        "{base}  - {{ name: extra, routes: [{{ provider: gemini }}], keys: [{{ name: t, env: PC_KEY }}] }}\n"
    ))
    .await;
    wait_listed(
        &gw,
        "extra",
        &["flash", "gemini-x", "gemini-embedding-y", "gemini-w"],
    )
    .await;
    for (proxy, want) in expected() {
        assert_eq!(listed(&gw, proxy).await, want, "{proxy} after the reload");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(list_calls(&mock).await.len(), before, "a reload refetched");

    // A changed provider (another key) fetches its list again at once.
    mock.set_models(json!({"anthropic": ["claude-z"]})).await;
    gw.reload(&base.replace("api_key: ant-mock", "api_key: ant-other"))
        .await;
    wait_listed(
        &gw,
        "anthropic",
        &["claude-sonnet-4-5", "smart", "claude-z"],
    )
    .await;
    let journal = mock.journal().await;
    let last = journal
        .iter()
        .rev()
        .find(|e| e["provider"] == "anthropic" && e["method"] == "GET")
        .unwrap();
    assert_eq!(last["headers"]["x-api-key"], "ant-other");
}

/// Azure cannot discover (its api key lists no deployments): the file is
/// refused naming the field; its aliases are accepted, and a bad alias is
/// named too.
#[test]
fn azure_discovery_and_bad_aliases_are_refused_naming_the_field() {
    let dir = TempDir::new();
    let check = |provider: &str| {
        let path = dir.0.join("gateway.yaml");
        std::fs::write(
            &path,
            format!(
                "providers:\n  - {provider}\nproxies:\n  - {{ name: p, routes: [{{ provider: a }}] }}\n"
            ),
        )
        .unwrap();
        let (code, _out, err) =
            run_cli(&["gateway", "--validate", "--config", path.to_str().unwrap()]);
        (code, err)
    };
    let azure = "{ name: a, type: azure-openai, base_url: \"https://r.openai.azure.com\", api_key: k, models: [dep] }";
    let (code, err) = check(azure);
    assert_eq!(code, 0, "{err}");
    let (code, err) =
        check(&azure.replace("models: [dep]", "models: [dep], discover_models: true"));
    assert_eq!(code, 2);
    assert!(
        err.contains("providers[0].discover_models") && err.contains("deployments"),
        "{err}"
    );
    let (code, err) =
        check(&azure.replace("models: [dep]", "models: [dep], aliases: { gpt: other }"));
    assert_eq!(code, 2);
    assert!(err.contains("providers[0].aliases.gpt"), "{err}");
    let (code, err) =
        check(&azure.replace("models: [dep]", "models: [dep], aliases: { gpt: dep }"));
    assert_eq!(code, 0, "{err}");
}
