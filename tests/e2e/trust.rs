//! Trust boundaries end to end (docs/security.md): what a client can put in
//! a model name, what `/readyz` tells a load balancer, and where a
//! provider's credentials may go.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, Mock, Proc, TempDir, free_port, run_cli};
use crate::{KEY, client};

/// A gateway whose Gemini route passes any model name on (its provider
/// lists none), the case where the client's model string reaches the
/// provider's URL path.
fn open_model_config(mock: &Mock) -> String {
    let m = &mock.url;
    format!(
        r#"
providers:
  - {{ name: gemini, type: gemini, base_url: "{m}", api_key: gem-mock }}
proxies:
  - {{ name: gem, inbound: [openai, gemini], routes: [{{ provider: gemini }}], keys: [{{ name: t, env: PC_KEY }}] }}
"#
    )
}

/// A one-message chat on `proxy`: the status and the JSON answer.
pub(crate) async fn chat(gw: &Gateway, proxy: &str, model: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{}/{proxy}/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn hostile_model_names_are_client_errors_and_eject_no_route() {
    let mock = Mock::start().await;
    let gw = Gateway::start_with_env(&open_model_config(&mock), &[("PC_KEY", KEY)]).await;
    let hostile = [
        "../../v1beta/files",
        "gemini-2.5-flash/../../../x",
        "gemini 2.5",
        "x%2F..%2Ffiles",
        "x?key=other",
    ];
    // Well past the three failures that would eject a route for 30 s.
    for _ in 0..2 {
        for model in hostile {
            let (s, v) = chat(&gw, "gem", model).await;
            assert_eq!(s, 400, "{model}: {v}");
            assert_eq!(v["error"]["param"], "model", "{v}");
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        }
    }
    // Gemini's own path carries the model too.
    let r = client()
        .post(format!(
            "{}/gem/v1beta/models/..%2F..%2Fx:generateContent",
            gw.url
        ))
        .header("x-goog-api-key", KEY)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // No provider saw any of them, and the route still serves.
    assert!(mock.journal().await.is_empty());
    let (s, v) = chat(&gw, "gem", "gemini-2.5-flash").await;
    assert_eq!(s, 200, "{v}");
    let metrics = client()
        .get(format!("{}/metrics", gw.ops_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("portcullis_route_ejections_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // A legitimate name with characters outside a path segment's set is
    // encoded, not interpreted: the model arrives as one path segment.
    let (s, v) = chat(&gw, "gem", "team:model~1").await;
    assert_eq!(s, 200, "{v}");
    let journal = mock.journal().await;
    let path = journal.last().unwrap()["path"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(path, "/v1beta/models/team%3Amodel~1:generateContent");
}

async fn readyz(ops: u16) -> Option<(u16, Value)> {
    let r = client()
        .get(format!("http://127.0.0.1:{ops}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

/// Polls `/readyz` until it answers `status`.
async fn until_readyz(ops: u16, status: u16, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        if let Some((s, v)) = readyz(ops).await
            && s == status
        {
            return v;
        }
        assert!(
            started.elapsed() < within,
            "/readyz never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_managed_gateway_without_any_configuration_is_not_ready() {
    let dir = TempDir::new();
    let (port, ops, nobody) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["gateway", "--threads", "1", "--token", "gw-token"])
        .args(["--admin", &format!("http://127.0.0.1:{nobody}")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--ops-listen", &format!("127.0.0.1:{ops}")])
        .arg("--data-dir")
        .arg(dir.0.join("gateway"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _gw = Proc::new(child);
    // Alive (healthz), listening, but with nothing to serve: not ready.
    let started = Instant::now();
    while client()
        .get(format!("http://127.0.0.1:{ops}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the traffic listener's start, the reason is the configuration.
    let v = until_readyz(ops, 503, Duration::from_secs(5)).await;
    let started = Instant::now();
    let mut v = v;
    while v["reason"] != "no configuration loaded yet" {
        assert!(started.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        v = readyz(ops).await.unwrap().1;
    }
    assert_eq!(v["status"], "not ready");
}

#[tokio::test]
async fn sigterm_turns_readyz_503_while_requests_are_still_served() {
    let mock = Mock::start().await;
    let dir = TempDir::new();
    let (port, ops) = (free_port(), free_port());
    let path = dir.0.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:{port}\nops_listen: 127.0.0.1:{ops}\n{}",
            open_model_config(&mock)
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "gateway",
            "--threads",
            "1",
            "--drain-seconds",
            "3",
            "--config",
        ])
        .arg(&path)
        .env("PC_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_readyz(ops, 200, Duration::from_secs(30)).await;
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let v = until_readyz(ops, 503, Duration::from_secs(2)).await;
    assert_eq!(v["reason"], "shutting down", "{v}");
    // Draining: traffic is still answered.
    let r = client()
        .post(format!("http://127.0.0.1:{port}/gem/chat/completions"))
        .bearer_auth(KEY)
        .json(
            &json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Then it exits by itself.
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            panic!("the gateway did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_route_cannot_send_the_providers_key_to_another_host() {
    // The listener a hostile route would point at: it must never be asked.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let dir = TempDir::new();
    let path = dir.0.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "providers:\n  - {{ name: openai, type: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: sk-secret }}\nproxies:\n  - {{ name: x, routes: [{{ provider: openai, base_url: \"http://{}/v1\" }}] }}\n",
            trap.local_addr().unwrap()
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["gateway", "--validate", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("proxies[0].routes[0].base_url"), "{err}");
    assert!(err.contains("credentials"), "{err}");
    assert!(trap.accept().is_err(), "nothing may connect to the trap");
    // The operator's egress allow-list bounds even the provider's own host.
    let path2 = dir.0.join("egress.yaml");
    std::fs::write(
        &path2,
        "providers:\n  - { name: openai, type: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: k }\nproxies:\n  - { name: x, routes: [{ provider: openai }] }\n",
    )
    .unwrap();
    let p2 = path2.to_str().unwrap();
    let (code, _, err) = run_cli(&[
        "gateway",
        "--validate",
        "--egress-allow",
        "api.openai.com",
        "--config",
        p2,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("egress allow-list"), "{err}");
    let (code, out, err) = run_cli(&[
        "gateway",
        "--validate",
        "--egress-allow",
        "127.0.0.1:9",
        "--config",
        p2,
    ]);
    assert_eq!(code, 0, "{out}{err}");
}
