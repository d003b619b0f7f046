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
//! gateway, which fetches the module from the hub; a module other than the
//! one pinned when it was attached is refused even when the hub (or a
//! network in the middle) serves it under a matching digest.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use std::path::Path;

use crate::harness::{Mock, Proc, TempDir, free_port, get_json, wait_ready, wait_ready_with};

pub(crate) const ADMIN_TOKEN: &str = "pat-e2e-admin-token";

/// A running admin service.
pub(crate) struct Admin {
    pub(crate) _proc: Proc,
    pub(crate) url: String,
    /// A client that trusts it (the test CA when it serves HTTPS).
    client: reqwest::Client,
    /// Its log, shown when a call that must succeed fails.
    log: std::path::PathBuf,
}

impl Admin {
    pub(crate) async fn start(dir: &TempDir) -> Admin {
        Self::start_with_hub(dir, None).await
    }

    pub(crate) async fn start_with_hub(dir: &TempDir, hub_url: Option<&str>) -> Admin {
        Self::spawn(dir, hub_url, None).await
    }

    /// With `certs` (a `tls::make_certs` directory), admin serves HTTPS
    /// as `localhost` and trusts the test CA for the hub.
    pub(crate) async fn spawn(dir: &TempDir, hub_url: Option<&str>, certs: Option<&Path>) -> Admin {
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
        cmd.args(serve_tls_args(certs));
        if let Some(c) = certs {
            cmd.arg("--ca-file").arg(c.join("ca.pem"));
        }
        let log = dir.0.join(format!("admin-{port}.log"));
        let child = cmd
            .env("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start admin");
        let (url, client) = match certs {
            Some(c) => (format!("https://localhost:{port}"), ca_client(c)),
            None => (format!("http://127.0.0.1:{port}"), crate::client()),
        };
        let a = Admin {
            _proc: Proc::new(child),
            url,
            client,
            log,
        };
        assert!(
            wait_ready_with(&a.client, &format!("{}/api/v1/health", a.url)).await,
            "admin did not start"
        );
        a
    }

    /// An admin replica: `--data-dir <dir>/<name>`, the database at
    /// `database_url` and the data key `data_key` shared with its peers.
    pub(crate) async fn start_replica(
        dir: &TempDir,
        name: &str,
        hub_url: &str,
        database_url: &str,
        data_key: &str,
    ) -> Admin {
        let port = free_port();
        let log = dir.0.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "admin",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.0.join(name))
            .args(["--hub-url", hub_url, "--database-url", database_url])
            .env("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PORTCULLIS_DATA_KEY", data_key)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start admin");
        let a = Admin {
            _proc: Proc::new(child),
            url: format!("http://127.0.0.1:{port}"),
            client: crate::client(),
            log,
        };
        assert!(
            wait_ready_with(&a.client, &format!("{}/api/v1/health", a.url)).await,
            "admin {name} did not start:\n{}",
            std::fs::read_to_string(&a.log).unwrap_or_default()
        );
        a
    }

    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
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

    pub(crate) async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        if !(200..300).contains(&s) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{method} {path}: {s} {v}\nadmin log:\n{log}");
        }
        v
    }

    /// Issues a key named `name` on `proxy`; answers the key.
    pub(crate) async fn key(&self, proxy: &str, name: &str) -> String {
        let v = self
            .ok(
                "POST",
                &format!("/api/v1/proxies/{proxy}/keys"),
                Some(json!({ "name": name })),
            )
            .await;
        v["key"].as_str().unwrap().to_owned()
    }

    /// Creates the proxy `guarded` with a guardrail from the hub that
    /// refuses "forbidden topic", issues a key, deploys it to `gw_id` and
    /// waits until `gw_url` serves it; answers (key, base URL).
    pub(crate) async fn deploy_guarded(&self, gw_id: &str, gw_url: &str) -> (String, String) {
        self.ok("POST", "/api/v1/proxies", Some(json!({"name": "Guarded"})))
            .await;
        self.ok(
            "POST",
            "/api/v1/proxies/guarded/policies",
            Some(json!({"name": "guardrails", "version": "0.1.0",
                "settings": {"request": {"deny_words": ["forbidden topic"]}}})),
        )
        .await;
        let key = self.key("guarded", "app").await;
        self.deploy("guarded", gw_id).await;
        let base = format!("{gw_url}/guarded");
        until_status(&base, &key, 200, Duration::from_secs(15)).await;
        (key, base)
    }

    /// Deploys `proxy`'s current revision to gateway `gw`.
    pub(crate) async fn deploy(&self, proxy: &str, gw: &str) -> Value {
        self.ok(
            "POST",
            &format!("/api/v1/proxies/{proxy}/deployments"),
            Some(json!({ "gateway": gw })),
        )
        .await
    }

    /// Waits for gateway `gw` to report that it could not load `proxy`;
    /// answers that deployment (with its `error`) and the gateway.
    pub(crate) async fn until_deployment_failed(
        &self,
        gw: &str,
        proxy: &str,
        within: Duration,
    ) -> (Value, Value) {
        let started = Instant::now();
        loop {
            let g = self
                .ok("GET", &format!("/api/v1/gateways/{gw}"), None)
                .await;
            let failed = g["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["proxy_id"] == proxy && d["status"] == "Failed")
                .cloned();
            if let Some(d) = failed {
                return (d, g);
            }
            assert!(
                started.elapsed() < within,
                "{proxy} never reported Failed: {g}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A managed gateway process.
pub(crate) struct Managed {
    pub(crate) _proc: Proc,
    pub(crate) url: String,
    pub(crate) port: u16,
    pub(crate) ops: u16,
}

impl Managed {
    pub(crate) async fn start(
        admin_url: &str,
        token: &str,
        dir: &TempDir,
        port: u16,
        ops: u16,
    ) -> Managed {
        Self::start_with(admin_url, token, dir, port, ops, &[]).await
    }

    /// [`Managed::start`] with extra flags (`--ca-file ...`).
    pub(crate) async fn start_with(
        admin_url: &str,
        token: &str,
        dir: &TempDir,
        port: u16,
        ops: u16,
        extra: &[String],
    ) -> Managed {
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
            .args(extra)
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

pub(crate) async fn chat(url: &str, key: &str) -> (u16, Value) {
    let r = crate::client()
        .post(format!("{url}/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "Hello admin"}]}))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Asserts that a chat request with `prompt` is refused by a guardrail.
async fn assert_guardrail_refuses(base: &str, key: &str, prompt: &str) {
    let r = crate::client()
        .post(format!("{base}/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "guardrail_violation", "{v}");
}

/// Polls until `chat` answers `status`; returns how long it took.
pub(crate) async fn until_status(url: &str, key: &str, status: u16, within: Duration) -> Duration {
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
pub(crate) async fn setup(dir: &TempDir) -> (Admin, Mock, Managed, String, String) {
    setup_with(Admin::start(dir).await, dir).await
}

/// `setup` around an admin already started.
pub(crate) async fn setup_with(
    admin: Admin,
    dir: &TempDir,
) -> (Admin, Mock, Managed, String, String) {
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
    let key = admin.key("chat-api", "app").await;
    let base = format!("{}/chat-api", gw.url);
    assert_eq!(chat(&base, &key).await.0, 404, "not deployed yet");

    let dep = admin.deploy("chat-api", &gw_id).await;
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
async fn an_expired_key_is_refused_by_the_gateway_itself_with_admin_down() {
    let dir = TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies",
            Some(json!({"name": "Short Lived"})),
        )
        .await;
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(4)).to_rfc3339();
    let key = admin
        .ok(
            "POST",
            "/api/v1/proxies/short-lived/keys",
            Some(json!({"name": "temp", "expires_at": expires})),
        )
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    admin
        .ok(
            "POST",
            "/api/v1/proxies/short-lived/deployments",
            Some(json!({"gateway": gw_id})),
        )
        .await;
    let base = format!("{}/short-lived", gw.url);
    until_status(&base, &key, 200, Duration::from_secs(5)).await;
    // Admin goes away before the key expires: no new configuration can
    // come, so only the gateway can refuse the key on time.
    drop(admin);
    until_status(&base, &key, 401, Duration::from_secs(10)).await;
    let (_, v) = chat(&base, &key).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
}

#[tokio::test]
async fn stopping_a_deployment_404s_and_bad_configs_are_reported() {
    let dir = TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Stop Me"})))
        .await;
    let key = admin.key("stop-me", "k").await;
    let dep = admin.deploy("stop-me", &gw_id).await;
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
    let gk = admin.key("good", "k").await;
    admin.deploy("good", &gw_id).await;
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
    admin.deploy("broken", &gw_id).await;
    let (d, g) = admin
        .until_deployment_failed(&gw_id, "broken", Duration::from_secs(5))
        .await;
    assert_eq!(d["error"]["field"], "routes[0].model", "{d}");
    // The rest of that configuration applied: nothing is left pending.
    assert_eq!(g["in_sync"], true, "{g}");
    assert_eq!(
        chat(&format!("{}/good", gw.url), &gk).await.0,
        200,
        "the other proxies keep being served"
    );
}

#[tokio::test]
async fn a_stream_runs_through_deployment_changes() {
    let dir = TempDir::new();
    let (admin, mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Streamer"})))
        .await;
    let key = admin.key("streamer", "k").await;
    admin.deploy("streamer", &gw_id).await;
    let base = format!("{}/streamer", gw.url);
    until_status(&base, &key, 200, Duration::from_secs(5)).await;

    mock.behave(json!({"chunk_delay_ms": 150, "times": 1}))
        .await;
    let resp = crate::client()
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
            admin.deploy("streamer", &gw_id).await;
            admin
                .ok("POST", "/api/v1/proxies", Some(json!({"name": "Newcomer"})))
                .await;
            admin.deploy("newcomer", &gw_id).await;
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
pub(crate) async fn start_hub(dir: &TempDir, builtins: &TempDir) -> (Proc, String) {
    spawn_hub(dir, builtins, None).await
}

/// [`start_hub`], serving HTTPS as `localhost` with `certs`.
pub(crate) async fn spawn_hub(
    dir: &TempDir,
    builtins: &TempDir,
    certs: Option<&Path>,
) -> (Proc, String) {
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
        .args(serve_tls_args(certs))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hub");
    let (url, client) = match certs {
        Some(c) => (format!("https://localhost:{port}"), ca_client(c)),
        None => (format!("http://127.0.0.1:{port}"), crate::client()),
    };
    let proc = Proc::new(child);
    assert!(
        wait_ready_with(&client, &format!("{url}/healthz")).await,
        "the hub did not start"
    );
    (proc, url)
}

/// The flags that serve HTTPS with the `localhost` certificate of `certs`.
fn serve_tls_args(certs: Option<&Path>) -> Vec<String> {
    let Some(c) = certs else {
        return Vec::new();
    };
    let path = |name: &str| c.join(name).display().to_string();
    vec![
        "--tls-cert".into(),
        path("localhost.pem"),
        "--tls-key".into(),
        path("localhost.key"),
    ]
}

/// A client trusting the test CA in `certs` (and nothing for plain http
/// to other machines: the tests' servers are all on loopback).
pub(crate) fn ca_client(certs: &Path) -> reqwest::Client {
    portcullis_net::client_builder(Some(&certs.join("ca.pem")))
        .expect("test CA")
        .build()
        .expect("client")
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

    let key = admin.key("guarded", "app").await;
    admin.deploy("guarded", &gw_id).await;
    let base = format!("{}/guarded", gw.url);
    until_status(&base, &key, 200, Duration::from_secs(10)).await;

    // The guardrail runs on the managed gateway: the request never reaches
    // the provider.
    let before = mock.journal().await.len();
    assert_guardrail_refuses(&base, &key, "Tell me about the Forbidden   Topic please").await;
    assert_eq!(
        mock.journal().await.len(),
        before,
        "the provider was not called"
    );
}

/// A network in the middle between admin, the gateway and the hub: it
/// passes every request on to the hub, and while `tamper` is set it
/// answers the manifest at `target` (a `/versions/` path) with the digest
/// and size of `swap` (another policy version the hub holds). The hub then
/// serves that other module under the digest the manifest names, so the
/// gateway's download matches "the hub's digest".
struct Middle {
    url: String,
    tamper: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Middle {
    pub(crate) async fn start(hub: &str, target: &str, swap: &str) -> Middle {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tamper = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (hub, target, swap, on) = (
            hub.to_owned(),
            target.to_owned(),
            swap.to_owned(),
            tamper.clone(),
        );
        let task = tokio::spawn(async move {
            let client = crate::client();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (client, hub, target, swap, on) = (
                    client.clone(),
                    hub.clone(),
                    target.clone(),
                    swap.clone(),
                    on.clone(),
                );
                tokio::spawn(async move {
                    // GET requests only: read the head.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let Ok(r) = client.get(format!("{hub}{path}")).send().await else {
                        return;
                    };
                    let status = r.status().as_u16();
                    let mut body = r.bytes().await.unwrap_or_default().to_vec();
                    if path == target && on.load(std::sync::atomic::Ordering::SeqCst) {
                        let other = get_json(&format!("{hub}{swap}")).await;
                        let mut v: Value = serde_json::from_slice(&body).unwrap();
                        for field in ["digest", "sha256", "size"] {
                            v[field] = other[field].clone();
                        }
                        body = v.to_string().into_bytes();
                    }
                    let _ = conn
                        .write_all(
                            format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        Middle {
            url,
            tamper,
            _task: task,
        }
    }

    fn tamper(&self, on: bool) {
        self.tamper.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_module_other_than_the_pinned_one_is_refused_even_with_a_matching_hub_digest() {
    let dir = TempDir::new();
    let built = crate::policies::policy_dir();
    let (_hub, hub_url) = start_hub(&dir, &built).await;
    let target = "/api/v1/policies/guardrails/versions/0.1.0";
    let middle = Middle::start(
        &hub_url,
        target,
        "/api/v1/policies/pii-masking/versions/0.1.0",
    )
    .await;
    let admin = Admin::start_with_hub(&dir, Some(&middle.url)).await;
    let (admin, mock, gw, _token, gw_id) = setup_with(admin, &dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Pinned"})))
        .await;

    // Attached while the hub answers truthfully: admin pins its digest.
    let published = get_json(&format!("{hub_url}{target}")).await;
    let pinned = published["sha256"].as_str().unwrap().to_owned();
    let att = admin
        .ok(
            "POST",
            "/api/v1/proxies/pinned/policies",
            Some(json!({"name": "guardrails", "version": "0.1.0",
                "settings": {"request": {"deny_words": ["forbidden topic"]}}})),
        )
        .await;
    assert_eq!(att["sha256"], pinned.as_str(), "{att}");

    // From now on the hub answers with another module, which it serves
    // under the digest it names: the managed gateway refuses to load it.
    middle.tamper(true);
    let key = admin.key("pinned", "app").await;
    admin.deploy("pinned", &gw_id).await;
    let error = admin
        .until_deployment_failed(&gw_id, "pinned", Duration::from_secs(30))
        .await
        .0["error"]
        .clone();
    assert_eq!(error["field"], "policies[0].sha256", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&pinned) && message.contains("refusing"),
        "{error}"
    );
    let base = format!("{}/pinned", gw.url);
    let (status, _) = chat(&base, &key).await;
    assert_eq!(
        status, 404,
        "the proxy is not served with an unpinned module"
    );
    assert!(
        mock.journal().await.is_empty(),
        "the provider was not called"
    );

    // The hub tells the truth again; the next configuration loads the
    // pinned module and the guardrail is enforced.
    middle.tamper(false);
    admin.key("pinned", "another").await;
    until_status(&base, &key, 200, Duration::from_secs(30)).await;
    assert_guardrail_refuses(&base, &key, "Tell me about the forbidden topic").await;
    let g = admin
        .ok("GET", &format!("/api/v1/gateways/{gw_id}"), None)
        .await;
    assert_eq!(g["in_sync"], true, "{g}");
}

/// The control plane over HTTPS with a private CA: the hub and admin serve
/// TLS; admin reaches the hub, the managed gateway reaches admin and
/// fetches a policy from the hub, and the CLI calls admin, all trusting
/// the CA through `--ca-file`. Without it the gateway refuses admin's
/// certificate and serves nothing; a plain-http admin URL to another
/// machine is refused before anything connects.
#[tokio::test]
async fn the_control_plane_speaks_tls_with_a_private_ca() {
    let dir = TempDir::new();
    let certs = TempDir::new();
    crate::tls::make_certs(&certs.0);
    let ca = certs.0.join("ca.pem").display().to_string();
    let built = crate::policies::policy_dir();
    let (_hub, hub_url) = spawn_hub(&dir, &built, Some(&certs.0)).await;
    assert!(hub_url.starts_with("https://localhost:"), "{hub_url}");
    let admin = Admin::spawn(&dir, Some(&hub_url), Some(&certs.0)).await;

    // The gateway trusts admin (and the hub admin names) through the CA.
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
    let gw_id = reg["id"].as_str().unwrap().to_owned();
    let gw = Managed::start_with(
        &admin.url,
        &token,
        &dir,
        port,
        ops,
        &["--ca-file".into(), ca.clone()],
    )
    .await;
    admin
        .ok("POST", "/api/v1/providers", Some(json!({"name": "mock", "type": "openai",
            "base_url": format!("{}/v1", mock.url), "models": ["gpt-5-mini"], "credentials": {"api_key": "sk-mock"}})))
        .await;
    // Admin checks the settings against the hub's schema, over TLS.
    let (key, base) = admin.deploy_guarded(&gw_id, &gw.url).await;
    // The guardrail the gateway fetched from the hub over TLS runs.
    assert_guardrail_refuses(&base, &key, "a forbidden topic").await;

    // The CLI over HTTPS: with the CA it lists the gateway; without it the
    // certificate is refused and the error says why.
    let cli = |extra: &[&str]| {
        let mut args = vec!["admin", "--url", admin.url.as_str(), "--token", ADMIN_TOKEN];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["gateways", "list"]);
        crate::harness::run_cli(&args)
    };
    let (code, out, err) = cli(&["--ca-file", ca.as_str()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&gw_id), "{out}");
    let (code, out, err) = cli(&[]);
    assert_ne!(code, 0, "{out}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A gateway without the CA does not accept admin's certificate: it
    // never gets a configuration, and its log says why.
    let (port2, ops2) = (free_port(), free_port());
    let log = dir.0.join("untrusting.log");
    let _untrusting = Proc::new(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "gateway",
                "--threads",
                "1",
                "--admin",
                &admin.url,
                "--token",
                &token,
            ])
            .args(["--listen", &format!("127.0.0.1:{port2}")])
            .args(["--ops-listen", &format!("127.0.0.1:{ops2}"), "--data-dir"])
            .arg(dir.0.join("untrusting"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start gateway"),
    );
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("cannot reach admin") || text.contains("admin unreachable") {
            assert!(text.to_lowercase().contains("certificate"), "{text}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no TLS failure logged: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = crate::client()
        .get(format!("http://127.0.0.1:{ops2}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "an unconfigured gateway is not ready");

    // Plain http to another machine is refused before connecting, naming
    // the flag and the opt-in.
    let (code, _, err) = crate::harness::run_cli(&[
        "gateway",
        "--admin",
        "http://192.0.2.10:8090",
        "--token",
        "gwt-x",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--admin http://192.0.2.10:8090"), "{err}");
    assert!(err.contains("--allow-insecure-http"), "{err}");
}

/// A proxy the gateway cannot load (an Azure route without a deployment
/// name, which admin accepts) is left out and reported: admin shows its
/// deployment Failed with the field and reason, and every other change of
/// the same configuration applies, a key revocation included.
#[tokio::test]
async fn a_proxy_the_gateway_cannot_load_is_isolated_and_reported() {
    let dir = TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Good"})))
        .await;
    let revoked = admin.key("good", "old").await;
    admin.deploy("good", &gw_id).await;
    let good = format!("{}/good", gw.url);
    until_status(&good, &revoked, 200, Duration::from_secs(10)).await;

    admin
        .ok(
            "POST",
            "/api/v1/providers",
            Some(json!({"name": "az", "type": "azure-openai",
            "base_url": "http://127.0.0.1:9/openai", "credentials": {"api_key": "x"}})),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies",
            Some(json!({"name": "Broken",
            "routes": [{"provider": "az"}]})),
        )
        .await;
    let broken_key = admin.key("broken", "app").await;
    admin.deploy("broken", &gw_id).await;
    // In the same configuration: the good proxy's key revoked, a new one.
    let keys = admin.ok("GET", "/api/v1/proxies/good/keys", None).await;
    let old_id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    admin
        .ok(
            "POST",
            &format!("/api/v1/proxies/good/keys/{old_id}/revoke"),
            None,
        )
        .await;
    let fresh = admin.key("good", "new").await;
    until_status(&good, &fresh, 200, Duration::from_secs(10)).await;
    assert_eq!(chat(&good, &revoked).await.0, 401, "the revocation applied");
    assert_eq!(
        chat(&format!("{}/broken", gw.url), &broken_key).await.0,
        404
    );

    // Admin shows the broken deployment Failed, with the field and reason.
    let started = Instant::now();
    let failed = loop {
        let deps = admin
            .ok("GET", "/api/v1/proxies/broken/deployments", None)
            .await;
        let d = deps["items"][0].clone();
        if d["status"] == "Failed" {
            break d;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never Failed: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed["error"]["field"], "routes[0].model", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deployment name"),
        "{failed}"
    );
    let g = admin
        .ok("GET", &format!("/api/v1/gateways/{gw_id}"), None)
        .await;
    let deps = g["deployments"].as_array().unwrap();
    let status = |p: &str| deps.iter().find(|d| d["proxy_id"] == p).unwrap()["status"].clone();
    assert_eq!(
        (status("good"), status("broken")),
        (json!("Active"), json!("Failed")),
        "{g}"
    );
    assert_eq!(g["proxies_served"], 1, "{g}");
    assert!(g["last_error"].is_null(), "{g}");
    let good_deps = admin
        .ok("GET", "/api/v1/proxies/good/deployments", None)
        .await;
    assert_eq!(good_deps["items"][0]["status"], "Active", "{good_deps}");
}

/// Admin refuses exactly what a gateway refuses, naming the same field:
/// each bad proxy goes to admin's REST API and, as the same JSON, into a
/// gateway file checked by the gateway's own configuration code.
#[tokio::test]
async fn admin_and_the_gateway_refuse_the_same_proxies() {
    let dir = TempDir::new();
    let admin = Admin::start(&dir).await;
    for p in ["alpha", "beta"] {
        admin
            .ok("POST", "/api/v1/providers", Some(json!({"name": p, "type": "openai",
                "base_url": "http://127.0.0.1:9/v1", "models": ["gpt-5-mini"], "credentials": {"api_key": "k"}})))
            .await;
    }
    let topic = json!({"name": "math", "utterances": ["solve this equation"]});
    let service = json!({"provider": "alpha", "model": "text-embedding-3-small"});
    let two = json!([{"provider": "alpha"}, {"provider": "beta"}]);
    // (case, proxy fields, the field both must name)
    let cases = [
        (
            "base path",
            json!({"context": "/a b", "routes": [{"provider": "alpha"}]}),
            "context",
        ),
        (
            "two routes, no strategy",
            json!({"routes": two}),
            "routing.strategy",
        ),
        (
            "single with two routes",
            json!({"routes": two, "routing": {"strategy": "single"}}),
            "routing.strategy",
        ),
        (
            "unknown fallback",
            json!({"routes": two, "routing": {"strategy": "failover", "fallback": {"route": "nope"}}}),
            "routing.fallback.route",
        ),
        (
            "threshold without semantic",
            json!({"routes": two, "routing": {"strategy": "failover", "threshold": 0.5}}),
            "routing.threshold",
        ),
        (
            "threshold out of range",
            json!({"routes": [{"provider": "alpha", "topics": [topic]}, {"provider": "beta"}],
            "routing": {"strategy": "semantic", "threshold": 1.5, "fallback": {"route": "beta"}}, "semantic_service": service}),
            "routing.threshold",
        ),
        (
            "topics without semantic",
            json!({"routes": [{"provider": "alpha", "topics": [topic]}, {"provider": "beta"}], "routing": {"strategy": "failover"}}),
            "routes[0].topics",
        ),
        (
            "semantic without topics",
            json!({"routes": two, "routing": {"strategy": "semantic", "fallback": {"route": "beta"}}, "semantic_service": service}),
            "routes",
        ),
        (
            "semantic without fallback",
            json!({"routes": [{"provider": "alpha", "topics": [topic]}, {"provider": "beta"}],
            "routing": {"strategy": "semantic"}, "semantic_service": service}),
            "routing.fallback",
        ),
        (
            "guard without topics",
            json!({"routes": [{"provider": "alpha"}], "prompt_guard": {"deny": []}, "semantic_service": service}),
            "prompt_guard.deny",
        ),
        (
            "guard without service",
            json!({"routes": [{"provider": "alpha"}], "prompt_guard": {"deny": [topic]}}),
            "semantic_service",
        ),
        (
            "service nobody uses",
            json!({"routes": [{"provider": "alpha"}], "semantic_service": service}),
            "semantic_service",
        ),
        (
            "denied topic threshold out of range",
            json!({"routes": [{"provider": "alpha"}], "prompt_guard": {"deny": [{"name": "x", "utterances": ["y"], "threshold": 2.0}]},
            "semantic_service": service}),
            "prompt_guard.deny[0].threshold",
        ),
    ];
    for (i, (case, fields, field)) in cases.iter().enumerate() {
        let mut proxy = fields.clone();
        proxy["name"] = json!(format!("case {i}"));
        let (status, v) = admin
            .call("POST", "/api/v1/proxies", Some(proxy.clone()))
            .await;
        assert_eq!(status, 422, "{case}: admin accepted it: {v}");
        assert_eq!(v["error"]["field"], *field, "{case}: admin: {v}");

        // The same proxy in a gateway file (JSON is YAML).
        let file = format!(
            "providers:\n  - {{ name: alpha, type: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: k, models: [gpt-5-mini] }}\n  - {{ name: beta, type: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: k, models: [gpt-5-mini] }}\nproxies:\n  - {proxy}\n"
        );
        let parsed = portcullis_gateway::config::parse_file(&file)
            .unwrap_or_else(|e| panic!("{case}: the gateway cannot read it: {e}"));
        let e = portcullis_gateway::runtime::build_runtime(&parsed, &|_| None)
            .err()
            .unwrap_or_else(|| panic!("{case}: the gateway accepted it"));
        assert_eq!(
            e.path,
            format!("proxies[0].{field}"),
            "{case}: gateway: {e}"
        );
    }
}

/// `portcullis admin ... list` prints an aligned table by default and
/// JSON with `--output json`; a refused request prints the message and
/// the field at fault, not a raw body.
#[tokio::test]
async fn the_admin_cli_prints_tables_json_and_readable_errors() {
    let dir = TempDir::new();
    let admin = Admin::start(&dir).await;
    let cli = |args: &[&str]| {
        let mut all = vec!["admin", "--url", admin.url.as_str(), "--token", ADMIN_TOKEN];
        all.extend_from_slice(args);
        crate::harness::run_cli(&all)
    };
    let (code, out, err) = cli(&[
        "providers",
        "create",
        "--json",
        r#"{"name":"openai","type":"openai","credentials":{"api_key":"sk-cli"}}"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // One object: a field per line.
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["name", "openai"]),
        "{out}"
    );

    let (code, out, err) = cli(&["providers", "list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(&header[..2], ["ID", "NAME"], "{out}");
    assert!(header.contains(&"TYPE"), "{out}");
    // Columns line up: every row's second column starts where NAME does.
    let at = lines[0].find("NAME").unwrap();
    assert_eq!(&lines[1][at..at + 6], "openai", "{out}");
    assert!(
        !out.contains("sk-cli"),
        "credentials are never printed: {out}"
    );

    let (code, out, _) = cli(&["providers", "list", "--output", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("JSON with --output json");
    let items = v.get("items").unwrap_or(&v);
    assert_eq!(items[0]["name"], "openai", "{v}");

    // A refusal: the message and the field, on stderr, exit code 1.
    let (code, out, err) = cli(&[
        "providers",
        "create",
        "--json",
        r#"{"name":"openai","type":"openai","credentials":{"api_key":"sk-2"}}"#,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("field: name"), "{err}");
    assert!(!err.contains("{\""), "no raw JSON body: {err}");
}
