//! Provider credentials the gateway fetches and refreshes itself (`auth:`):
//! Entra ID client credentials (Azure OpenAI), the AWS credential chain
//! (Bedrock: web identity, IMDSv2, a profile that assumes a role, an
//! explicit role), a Google service account (Gemini on Vertex AI). The
//! mock LLM is the token endpoint, STS and IMDS; it issues short-lived
//! credentials and refuses any it did not issue or that have expired, so
//! a request that succeeds after a refresh used the refreshed credential.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, Mock, TempDir, get_json, scrape, sum_of};
use crate::{KEY, client};

/// Sets the mock's identity endpoints: lifetime of what they issue, and
/// whether they fail.
async fn identity(mock: &Mock, settings: Value) {
    let r = client()
        .post(format!("{}/_mock/identity", mock.url))
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
}

/// The ids (tokens, access key ids) the mock issued by `by`, oldest first.
async fn issued(mock: &Mock, by: &str) -> Vec<String> {
    let v = get_json(&format!("{}/_mock/identity", mock.url)).await;
    v["issued"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["by"] == by)
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (up to 20 s: a retry after failures backs off for seconds)
/// until `provider`'s refreshes with `outcome` number at least `n`.
async fn refreshes(gw: &Gateway, provider: &str, outcome: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = refresh_count(gw, provider, outcome).await;
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{provider}: {seen} refreshes `{outcome}`, not {n}; gateway log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn refresh_count(gw: &Gateway, provider: &str, outcome: &str) -> f64 {
    let text = scrape(&gw.ops_url).await;
    sum_of(
        &text,
        &[
            "portcullis_provider_auth_refresh_total{",
            &format!("provider=\"{provider}\""),
            &format!("outcome=\"{outcome}\""),
        ],
    )
}

/// One chat request to `proxy`: (status, body).
async fn chat(gw: &Gateway, proxy: &str, model: &str, stream: bool) -> (u16, String) {
    let r = client()
        .post(format!("{}/{proxy}/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "Hello there gateway"}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// What the last provider request the mock received was authorised with:
/// the bearer token, or the SigV4 access key id.
async fn last_credential(mock: &Mock) -> String {
    let journal = mock.journal().await;
    let auth = journal.last().expect("a provider request")["headers"]["authorization"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match auth.strip_prefix("AWS4-HMAC-SHA256 Credential=") {
        Some(rest) => rest.split('/').next().unwrap().to_owned(),
        None => auth.strip_prefix("Bearer ").unwrap_or(&auth).to_owned(),
    }
}

/// An environment for the gateway in which the AWS chain finds nothing
/// of this machine's (no shared files, no instance metadata), plus `extra`.
fn aws_env(dir: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PC_KEY".into(), KEY.into()),
        ("AWS_CONFIG_FILE".into(), format!("{dir}/no-config")),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            format!("{dir}/no-credentials"),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ];
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

async fn start(config: &str, env: &[(String, String)]) -> Gateway {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_with_env(config, &env).await
}

/// A mock whose identity endpoints are set up with `settings`, and a
/// gateway whose Azure provider authenticates with Entra ID against it.
async fn entra_setup(settings: Value) -> (Mock, Gateway) {
    let (mock, gw, _) = entra_setup_with_config(settings).await;
    (mock, gw)
}

/// `entra_setup`, with the configuration the gateway was started with.
async fn entra_setup_with_config(settings: Value) -> (Mock, Gateway, String) {
    let mock = Mock::start().await;
    identity(&mock, settings).await;
    let config = format!(
        r#"
providers:
  - name: azure
    type: azure-openai
    base_url: "{m}"
    api_version: "2024-10-21"
    auth: {{ type: entra, tenant_id: contoso-tenant, client_id: gw-client, client_secret_env: AZ_SECRET, authority_url: "{m}" }}
proxies:
  - {{ name: azure, routes: [{{ provider: azure, model: gpt-4o-deploy }}], keys: [{{ name: tester, env: PC_KEY }}] }}
"#,
        m = mock.url
    );
    let env = [
        ("PC_KEY".to_owned(), KEY.to_owned()),
        ("AZ_SECRET".to_owned(), "s3cret".to_owned()),
    ];
    let gw = start(&config, &env).await;
    (mock, gw, config)
}

#[tokio::test]
async fn entra_token_is_fetched_used_and_refreshed_before_expiry() {
    let (mock, gw) = entra_setup(json!({"lifetime_s": 4})).await;
    refreshes(&gw, "azure", "ok", 1.0).await;

    let (status, body) = chat(&gw, "azure", "gpt-4o", false).await;
    assert_eq!(status, 200, "{body}");
    let first = issued(&mock, "entra").await;
    assert_eq!(first.len(), 1);
    assert_eq!(last_credential(&mock).await, first[0]);

    // Refreshed at 80% of the lifetime, before the first token expired
    // (by the mock's clock: when it issued the second, the first was
    // still valid).
    refreshes(&gw, "azure", "ok", 2.0).await;
    let times = get_json(&format!("{}/_mock/identity", mock.url)).await;
    let (one, two) = (&times["issued"][0], &times["issued"][1]);
    assert!(
        two["issued_at_ms"].as_u64().unwrap() < one["expires_at_ms"].as_u64().unwrap(),
        "refreshed only after the first token expired: {times}"
    );
    let (status, body) = chat(&gw, "azure", "gpt-4o", true).await;
    assert_eq!(status, 200, "{body}");
    let now = issued(&mock, "entra").await;
    assert!(now.len() >= 2);
    assert_eq!(last_credential(&mock).await, *now.last().unwrap());
    assert_ne!(now[0], *now.last().unwrap());

    let text = scrape(&gw.ops_url).await;
    assert!(
        sum_of(
            &text,
            &[
                "portcullis_provider_auth_expiry_timestamp_seconds{",
                "provider=\"azure\""
            ]
        ) > 1e9,
        "{text}"
    );
    assert_eq!(refresh_count(&gw, "azure", "error").await, 0.0);
}

#[tokio::test]
async fn a_reload_keeps_the_provider_credential() {
    let (mock, gw, config) = entra_setup_with_config(json!({"lifetime_s": 60})).await;
    refreshes(&gw, "azure", "ok", 1.0).await;
    // The same provider settings: the token in hand serves at once, and
    // nothing is fetched again.
    gw.reload(&config.replace("name: tester", "name: tester-2"))
        .await;
    let (status, body) = chat(&gw, "azure", "gpt-4o", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(issued(&mock, "entra").await.len(), 1);
    assert_eq!(refresh_count(&gw, "azure", "ok").await, 1.0);
    // A new client id is a new credential, fetched for the new settings.
    gw.reload(&config.replace("client_id: gw-client", "client_id: gw-client-2"))
        .await;
    refreshes(&gw, "azure", "ok", 2.0).await;
    let (status, body) = chat(&gw, "azure", "gpt-4o", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(issued(&mock, "entra").await.len(), 2);
    assert_eq!(
        last_credential(&mock).await,
        issued(&mock, "entra").await[1]
    );
}

#[tokio::test]
async fn failed_entra_refresh_is_reported_and_the_valid_token_keeps_serving() {
    let (mock, gw) = entra_setup(json!({"lifetime_s": 5})).await;
    refreshes(&gw, "azure", "ok", 1.0).await;
    let fetched = Instant::now();
    identity(&mock, json!({"fail": true})).await;

    // The refresh at 4 s fails; the token is good until 5 s.
    refreshes(&gw, "azure", "error", 1.0).await;
    if fetched.elapsed() < Duration::from_millis(4500) {
        let (status, body) = chat(&gw, "azure", "gpt-4o", false).await;
        assert_eq!(status, 200, "the old token still serves: {body}");
    }
    let log = gw.log();
    assert!(
        log.contains("provider credential refresh failed")
            && log.contains("azure")
            && log.contains("AADSTS90033"),
        "{log}"
    );

    // Once it has expired, requests get a clear error naming the provider
    // and why, not the provider's 401.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(fetched.elapsed())).await;
    let (status, body) = chat(&gw, "azure", "gpt-4o", false).await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("`azure`"), "{message}");
    assert!(message.contains("expired"), "{message}");
    assert!(message.contains("temporarily_unavailable"), "{message}");
    assert_eq!(v["error"]["code"], "provider_auth_unavailable");

    // The endpoint recovers: the retries (back-off from 1 s) fetch anew.
    identity(&mock, json!({"fail": false, "lifetime_s": 60})).await;
    refreshes(&gw, "azure", "ok", 2.0).await;
    let (status, body) = chat(&gw, "azure", "gpt-4o", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_credential(&mock).await,
        *issued(&mock, "entra").await.last().unwrap()
    );
}

#[tokio::test]
async fn entra_first_fetch_failing_gives_a_clear_error() {
    let (mock, gw) = entra_setup(json!({"fail": true})).await;
    refreshes(&gw, "azure", "error", 1.0).await;
    let (status, body) = chat(&gw, "azure", "gpt-4o", false).await;
    assert_eq!(status, 503, "{body}");
    let message = serde_json::from_str::<Value>(&body).unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("`azure`") && message.contains("AADSTS90033"),
        "{message}"
    );
    assert!(
        mock.journal().await.is_empty(),
        "nothing was sent to the provider without a credential"
    );
}

fn bedrock_config(mock: &Mock, auth: &str) -> String {
    format!(
        r#"
providers:
  - name: bedrock
    type: bedrock
    base_url: "{m}"
    region: us-east-1
    auth: {auth}
proxies:
  - {{ name: bedrock, routes: [{{ provider: bedrock }}], keys: [{{ name: tester, env: PC_KEY }}] }}
"#,
        m = mock.url
    )
}

const BEDROCK_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// Bedrock answers with keys the chain got from `by`, then with the keys
/// of a refresh (the mock issues them for 3 s).
async fn bedrock_serves_and_refreshes(mock: &Mock, gw: &Gateway, by: &str) {
    refreshes(gw, "bedrock", "ok", 1.0).await;
    let (status, body) = chat(gw, "bedrock", BEDROCK_MODEL, false).await;
    assert_eq!(status, 200, "{body}");
    let first = issued(mock, by).await;
    assert!(!first.is_empty(), "nothing issued by {by}");
    assert_eq!(last_credential(mock).await, *first.last().unwrap());

    refreshes(gw, "bedrock", "ok", 2.0).await;
    let (status, body) = chat(gw, "bedrock", BEDROCK_MODEL, true).await;
    assert_eq!(status, 200, "{body}");
    let now = issued(mock, by).await;
    assert!(now.len() > first.len(), "{by} issued no new keys");
    assert_eq!(last_credential(mock).await, *now.last().unwrap());
}

#[tokio::test]
async fn bedrock_web_identity_through_sts() {
    let mock = Mock::start().await;
    identity(&mock, json!({"lifetime_s": 3})).await;
    let dir = TempDir::new();
    let token_file = dir.0.join("web-identity-token");
    std::fs::write(&token_file, "eyJ.mock-oidc.token").unwrap();
    let d = dir.0.to_str().unwrap();
    let env = aws_env(
        d,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/bedrock-caller",
            ),
            ("AWS_ROLE_SESSION_NAME", "portcullis"),
            ("AWS_ENDPOINT_URL_STS", &mock.url),
        ],
    );
    let gw = start(&bedrock_config(&mock, "{ type: aws }"), &env).await;
    bedrock_serves_and_refreshes(&mock, &gw, "sts").await;
}

#[tokio::test]
async fn bedrock_instance_metadata_imdsv2() {
    let mock = Mock::start().await;
    identity(&mock, json!({"lifetime_s": 3})).await;
    let dir = TempDir::new();
    let env = aws_env(
        dir.0.to_str().unwrap(),
        &[("AWS_EC2_METADATA_DISABLED", "false")],
    );
    let auth = format!("{{ type: aws, imds_endpoint: \"{}\" }}", mock.url);
    let gw = start(&bedrock_config(&mock, &auth), &env).await;
    bedrock_serves_and_refreshes(&mock, &gw, "imds").await;
}

#[tokio::test]
async fn bedrock_profile_that_assumes_a_role() {
    let mock = Mock::start().await;
    identity(&mock, json!({"lifetime_s": 3})).await;
    let dir = TempDir::new();
    let config = dir.0.join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile gateway]\nrole_arn = arn:aws:iam::123456789012:role/bedrock-caller\nsource_profile = base\nregion = us-east-1\nendpoint_url = {}\n\n[profile base]\naws_access_key_id = AKIDBASEPROFILE\naws_secret_access_key = base-secret\n",
            mock.url
        ),
    )
    .unwrap();
    let env = aws_env(
        dir.0.to_str().unwrap(),
        &[("AWS_CONFIG_FILE", config.to_str().unwrap())],
    );
    let gw = start(
        &bedrock_config(&mock, "{ type: aws, profile: gateway }"),
        &env,
    )
    .await;
    bedrock_serves_and_refreshes(&mock, &gw, "sts").await;
}

#[tokio::test]
async fn bedrock_explicit_role_and_a_failed_refresh() {
    let mock = Mock::start().await;
    identity(&mock, json!({"lifetime_s": 3})).await;
    let dir = TempDir::new();
    let env = aws_env(
        dir.0.to_str().unwrap(),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDBASEENV"),
            ("AWS_SECRET_ACCESS_KEY", "base-secret"),
        ],
    );
    let auth = format!(
        "{{ type: aws, role_arn: \"arn:aws:iam::123456789012:role/bedrock-caller\", role_session_name: portcullis, external_id: ext-1, sts_endpoint: \"{}\" }}",
        mock.url
    );
    let gw = start(&bedrock_config(&mock, &auth), &env).await;
    bedrock_serves_and_refreshes(&mock, &gw, "sts").await;

    identity(&mock, json!({"fail": true})).await;
    refreshes(&gw, "bedrock", "error", 1.0).await;
    assert!(gw.log().contains("provider credential refresh failed"));
}

#[tokio::test]
async fn vertex_gemini_with_a_service_account() {
    let mock = Mock::start().await;
    identity(&mock, json!({"lifetime_s": 3})).await;
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mock-llm/testdata/test-service-account.json"
    );
    let config = format!(
        r#"
providers:
  - name: vertex
    type: gemini
    base_url: "{m}"
    vertex: {{ project: portcullis-test, location: us-central1 }}
    auth: {{ type: google-service-account, credentials_file: "{key}", token_uri: "{m}/token" }}
proxies:
  - {{ name: vertex, routes: [{{ provider: vertex }}], keys: [{{ name: tester, env: PC_KEY }}] }}
"#,
        m = mock.url
    );
    let gw = start(&config, &[("PC_KEY".to_owned(), KEY.to_owned())]).await;
    refreshes(&gw, "vertex", "ok", 1.0).await;
    let (status, body) = chat(&gw, "vertex", "gemini-2.5-flash", false).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Mock reply from gemini model gemini-2.5-flash"),
        "{body}"
    );
    let journal = mock.journal().await;
    let last = journal.last().unwrap();
    assert_eq!(
        last["path"],
        "/v1/projects/portcullis-test/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert!(last["headers"].get("x-goog-api-key").is_none());
    let first = issued(&mock, "google").await;
    assert_eq!(last_credential(&mock).await, *first.last().unwrap());

    refreshes(&gw, "vertex", "ok", 2.0).await;
    let (status, body) = chat(&gw, "vertex", "gemini-2.5-flash", true).await;
    assert_eq!(status, 200, "{body}");
    let journal = mock.journal().await;
    assert!(
        journal.last().unwrap()["path"]
            .as_str()
            .unwrap()
            .ends_with(":streamGenerateContent"),
        "{journal:?}"
    );
    let now = issued(&mock, "google").await;
    assert!(now.len() > first.len());
    assert_eq!(last_credential(&mock).await, *now.last().unwrap());
}
