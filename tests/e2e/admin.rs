//! The control plane end to end: the admin service and a managed gateway
//! as real processes. A provider and a proxy are created over REST, a key
//! issued, the proxy deployed to the gateway and called, and the key's use
//! reported back to admin; then the key is revoked, the deployment stopped,
//! admin taken down and the gateway restarted from its last good
//! configuration; and a stream runs through a configuration change
//! untouched.
//!
//! A guardrail from the policy hub is attached over REST (a bad setting
//! refused with its JSON pointer), deployed, and enforced by the managed
//! gateway, which fetches the module from the hub.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Mock, Proc, TempDir, free_port, wait_ready};

const ADMIN_TOKEN: &str = "pat-e2e-admin-token";

/// A running admin service.
struct Admin {
    _proc: Proc,
    url: String,
}

impl Admin {
    async fn start(dir: &TempDir) -> Admin {
        Self::start_with_hub(dir, None).await
    }

    async fn start_with_hub(dir: &TempDir, hub_url: Option<&str>) -> Admin {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args([
            "admin",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.0.join("admin"));
        if let Some(url) = hub_url {
            cmd.args(["--hub-url", url]);
        }
        let child = cmd
            .env("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start admin");
        let a = Admin {
            _proc: Proc::new(child),
            url: format!("http://127.0.0.1:{port}"),
        };
        assert!(
            wait_ready(&format!("{}/api/v1/health", a.url)).await,
            "admin did not start"
        );
        a
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let c = reqwest::Client::new();
        let mut req = c
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }
}

/// A managed gateway process.
struct Managed {
    _proc: Proc,
    url: String,
    port: u16,
    ops: u16,
}

impl Managed {
    async fn start(admin_url: &str, token: &str, dir: &TempDir, port: u16, ops: u16) -> Managed {
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "gateway",
                "--threads",
                "1",
                "--admin",
                admin_url,
                "--token",
                token,
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ops-listen",
                &format!("127.0.0.1:{ops}"),
                "--data-dir",
            ])
            .arg(dir.0.join("gateway"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join(format!("gateway-{port}.log"))).unwrap())
            .spawn()
            .expect("start managed gateway");
        let g = Managed {
            _proc: Proc::new(child),
            url: format!("http://127.0.0.1:{port}"),
            port,
            ops,
        };
        assert!(
            wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await,
            "the managed gateway did not start"
        );
        g
    }
}

async fn chat(url: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "Hello admin"}]}))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Polls until `chat` answers `status`; returns how long it took.
async fn until_status(url: &str, key: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (s, v) = chat(url, key).await;
        if s == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{url}: still {s} {v} after {within:?}, wanted {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Admin, mock, a registered gateway and its process.
async fn setup(dir: &TempDir) -> (Admin, Mock, Managed, String, String) {
    setup_with(Admin::start(dir).await, dir).await
}

/// `setup` around an admin already started.
async fn setup_with(admin: Admin, dir: &TempDir) -> (Admin, Mock, Managed, String, String) {
    let mock = Mock::start().await;
    let (port, ops) = (free_port(), free_port());
    let reg = admin
        .ok(
            "POST",
            "/api/v1/gateways",
            Some(json!({"name": "edge", "url": format!("http://127.0.0.1:{port}")})),
        )
        .await;
    let token = reg["token"].as_str().unwrap().to_owned();
    let gw = Managed::start(&admin.url, &token, dir, port, ops).await;
    admin
        .ok("POST", "/api/v1/providers", Some(json!({"name": "mock", "type": "openai",
            "base_url": format!("{}/v1", mock.url), "models": ["gpt-5-mini"], "credentials": {"api_key": "sk-mock"}})))
        .await;
    (
        admin,
        mock,
        gw,
        token,
        reg["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn rest_to_managed_gateway_keys_deploy_stop_and_restart_from_disk() {
    let dir = TempDir::new();
    let (admin, mock, gw, token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Chat API"})))
        .await;
    let key = admin
        .ok(
            "POST",
            "/api/v1/proxies/chat-api/keys",
            Some(json!({"name": "app"})),
        )
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    let base = format!("{}/chat-api", gw.url);
    assert_eq!(chat(&base, &key).await.0, 404, "not deployed yet");

    let dep = admin
        .ok(
            "POST",
            "/api/v1/proxies/chat-api/deployments",
            Some(json!({"gateway": gw_id})),
        )
        .await;
    assert_eq!(dep["invoke_url"], format!("{base}/chat/completions"));
    let took = until_status(&base, &key, 200, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(2),
        "deployment live after {took:?}"
    );
    let (_, v) = chat(&base, &key).await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Mock reply from openai model gpt-5-mini: Hello admin"
    );
    // The provider key came from admin's sealed credentials.
    let journal = mock.journal().await;
    let last = journal.last().unwrap();
    assert!(last.to_string().contains("sk-mock"), "{last}");

    // Admin sees the gateway Active, in sync, serving one proxy.
    let started = Instant::now();
    loop {
        let g = admin
            .ok("GET", &format!("/api/v1/gateways/{gw_id}"), None)
            .await;
        if g["status"] == "Active" && g["in_sync"] == true && g["proxies_served"] == 1 {
            assert_eq!(
                g["deployments"][0]["invoke_url"],
                format!("{base}/chat/completions")
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{g}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The gateway reports the key's use with its next heartbeat (every
    // 5 s): the key list shows when it was last used.
    let started = Instant::now();
    loop {
        let keys = admin.ok("GET", "/api/v1/proxies/chat-api/keys", None).await;
        let k = &keys["items"][0];
        if let Some(at) = k["last_used_at"].as_str() {
            let created = k["created_at"].as_str().unwrap();
            assert!(at.ends_with('Z') && at >= created, "{k}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "last_used_at still unset: {keys}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A wrong key is refused; a revoked key stops working within seconds.
    assert_eq!(chat(&base, "pc-wrong").await.0, 401);
    let second = admin
        .ok(
            "POST",
            "/api/v1/proxies/chat-api/keys",
            Some(json!({"name": "second"})),
        )
        .await;
    let second_key = second["key"].as_str().unwrap().to_owned();
    until_status(&base, &second_key, 200, Duration::from_secs(5)).await;
    let keys = admin.ok("GET", "/api/v1/proxies/chat-api/keys", None).await;
    let first_id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    admin
        .ok(
            "POST",
            &format!("/api/v1/proxies/chat-api/keys/{first_id}/revoke"),
            None,
        )
        .await;
    let took = until_status(&base, &key, 401, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "revocation took {took:?}");
    assert_eq!(
        chat(&base, &second_key).await.0,
        200,
        "other keys keep working"
    );

    // Restart with admin down: served from the last good configuration.
    let (port, ops) = (gw.port, gw.ops);
    drop(gw);
    drop(admin);
    let gw = Managed::start("http://127.0.0.1:1", &token, &dir, port, ops).await;
    let base2 = format!("{}/chat-api", gw.url);
    until_status(&base2, &second_key, 200, Duration::from_secs(5)).await;
    assert_eq!(
        chat(&base2, &key).await.0,
        401,
        "the revoked key stays revoked"
    );
}

#[tokio::test]
async fn stopping_a_deployment_404s_and_bad_configs_are_reported() {
    let dir = TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Stop Me"})))
        .await;
    let key = admin
        .ok(
            "POST",
            "/api/v1/proxies/stop-me/keys",
            Some(json!({"name": "k"})),
        )
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    let dep = admin
        .ok(
            "POST",
            "/api/v1/proxies/stop-me/deployments",
            Some(json!({"gateway": gw_id})),
        )
        .await;
    let base = format!("{}/stop-me", gw.url);
    until_status(&base, &key, 200, Duration::from_secs(5)).await;

    admin
        .ok(
            "POST",
            &format!(
                "/api/v1/proxies/stop-me/deployments/{}/stop",
                dep["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let took = until_status(&base, &key, 404, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "stop took {took:?}");

    // A revision the gateway cannot load (azure-openai without a target
    // model) is reported back, and the gateway keeps serving the rest.
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Good"})))
        .await;
    let gk = admin
        .ok(
            "POST",
            "/api/v1/proxies/good/keys",
            Some(json!({"name": "k"})),
        )
        .await;
    let gk = gk["key"].as_str().unwrap().to_owned();
    admin
        .ok(
            "POST",
            "/api/v1/proxies/good/deployments",
            Some(json!({"gateway": gw_id})),
        )
        .await;
    until_status(
        &format!("{}/good", gw.url),
        &gk,
        200,
        Duration::from_secs(5),
    )
    .await;
    admin
        .ok("POST", "/api/v1/providers", Some(json!({"name": "azure", "type": "azure-openai", "base_url": "http://127.0.0.1:9", "credentials": {"api_key": "k"}})))
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies",
            Some(json!({"name": "Broken", "provider": "azure"})),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies/broken/deployments",
            Some(json!({"gateway": gw_id})),
        )
        .await;
    let started = Instant::now();
    loop {
        let g = admin
            .ok("GET", &format!("/api/v1/gateways/{gw_id}"), None)
            .await;
        if g["last_error"].is_object() {
            assert!(
                g["last_error"]["field"]
                    .as_str()
                    .unwrap()
                    .contains("routes[0].model"),
                "{g}"
            );
            assert_eq!(g["in_sync"], false);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no load failure reported: {g}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        chat(&format!("{}/good", gw.url), &gk).await.0,
        200,
        "the previous config stays"
    );
}

#[tokio::test]
async fn a_stream_runs_through_deployment_changes() {
    let dir = TempDir::new();
    let (admin, mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Streamer"})))
        .await;
    let key = admin
        .ok(
            "POST",
            "/api/v1/proxies/streamer/keys",
            Some(json!({"name": "k"})),
        )
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    admin
        .ok(
            "POST",
            "/api/v1/proxies/streamer/deployments",
            Some(json!({"gateway": gw_id})),
        )
        .await;
    let base = format!("{}/streamer", gw.url);
    until_status(&base, &key, 200, Duration::from_secs(5)).await;

    mock.behave(json!({"chunk_delay_ms": 150, "times": 1}))
        .await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-5-mini", "stream": true,
            "messages": [{"role": "user", "content": "one two three four five six seven eight"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut body = Vec::new();
    let mut gaps = Vec::new();
    let mut last = Instant::now();
    let mut changed = false;
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
        gaps.push(last.elapsed());
        last = Instant::now();
        if !changed && body.len() > 100 {
            changed = true;
            // Mid-stream: change this proxy (new revision, redeployed) and
            // deploy another one on the same gateway.
            admin
                .ok(
                    "PATCH",
                    "/api/v1/proxies/streamer",
                    Some(json!({"description": "changed mid-stream"})),
                )
                .await;
            admin
                .ok(
                    "POST",
                    "/api/v1/proxies/streamer/deployments",
                    Some(json!({"gateway": gw_id})),
                )
                .await;
            admin
                .ok("POST", "/api/v1/proxies", Some(json!({"name": "Newcomer"})))
                .await;
            admin
                .ok(
                    "POST",
                    "/api/v1/proxies/newcomer/deployments",
                    Some(json!({"gateway": gw_id})),
                )
                .await;
        }
    }
    assert!(changed, "the stream ended before the change");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream completed: {text}"
    );
    let content: String = crate::harness::sse_events(&text)
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        content.contains("one two three four five six seven eight"),
        "{content}"
    );
    let worst = gaps.iter().max().unwrap();
    assert!(
        *worst < Duration::from_millis(1000),
        "a chunk stalled for {worst:?}"
    );
    // The change took effect meanwhile.
    let nk = admin
        .ok(
            "POST",
            "/api/v1/proxies/newcomer/keys",
            Some(json!({"name": "k"})),
        )
        .await;
    until_status(
        &format!("{}/newcomer", gw.url),
        nk["key"].as_str().unwrap(),
        200,
        Duration::from_secs(5),
    )
    .await;
}

/// A policy hub holding the built policies as its built-ins.
async fn start_hub(dir: &TempDir, builtins: &TempDir) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "hub",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.0.join("hub"))
        .arg("--builtin-dir")
        .arg(&builtins.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hub");
    let url = format!("http://127.0.0.1:{port}");
    let proc = Proc::new(child);
    assert!(
        wait_ready(&format!("{url}/healthz")).await,
        "the hub did not start"
    );
    (proc, url)
}

#[tokio::test]
async fn a_guardrail_attached_from_the_hub_is_enforced_on_the_managed_gateway() {
    let dir = TempDir::new();
    let built = crate::policies::policy_dir();
    let (_hub, hub_url) = start_hub(&dir, &built).await;
    let admin = Admin::start_with_hub(&dir, Some(&hub_url)).await;
    let (admin, mock, gw, _token, gw_id) = setup_with(admin, &dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Guarded"})))
        .await;

    // What can be attached comes from the hub.
    let catalogue = admin.ok("GET", "/api/v1/policies", None).await;
    assert!(
        catalogue.to_string().contains("\"guardrails\""),
        "{catalogue}"
    );
    // Settings are checked against the hub's schema for that version.
    let (status, problem) = admin
        .call(
            "POST",
            "/api/v1/proxies/guarded/policies",
            Some(json!({"name": "guardrails", "version": "0.1.0",
                "settings": {"request": {"deny_words": ["ok", ""]}}})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem
            .to_string()
            .contains("settings/request/deny_words/1"),
        "{problem}"
    );
    admin
        .ok(
            "POST",
            "/api/v1/proxies/guarded/policies",
            Some(json!({"name": "guardrails", "version": "0.1.0",
                "settings": {"request": {"deny_words": ["forbidden topic"]}}})),
        )
        .await;
    let listed = admin
        .ok("GET", "/api/v1/proxies/guarded/policies", None)
        .await;
    assert!(listed.to_string().contains("forbidden topic"), "{listed}");

    let key = admin
        .ok(
            "POST",
            "/api/v1/proxies/guarded/keys",
            Some(json!({"name": "app"})),
        )
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    admin
        .ok(
            "POST",
            "/api/v1/proxies/guarded/deployments",
            Some(json!({"gateway": gw_id})),
        )
        .await;
    let base = format!("{}/guarded", gw.url);
    until_status(&base, &key, 200, Duration::from_secs(10)).await;

    // The guardrail runs on the managed gateway: the request never reaches
    // the provider.
    let before = mock.journal().await.len();
    let r = reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-5-mini", "messages": [
            {"role": "user", "content": "Tell me about the Forbidden   Topic please"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "guardrail_violation", "{v}");
    assert_eq!(
        mock.journal().await.len(),
        before,
        "the provider was not called"
    );
}
