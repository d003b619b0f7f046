//! The command line: config validation.

use crate::harness::{TempDir, run_cli, run_cli_env};

#[test]
fn validate_accepts_examples_and_names_the_bad_field() {
    let root = env!("CARGO_MANIFEST_DIR");
    for ex in [
        "examples/gateway.yaml",
        "examples/multi-provider.yaml",
        "examples/routing.yaml",
    ] {
        let env = [("OPENAI_API_KEY", "sk-x"), ("APP_KEY", "pk-x")];
        let (code, out, err) = run_cli_env(
            &["gateway", "--validate", "--config", &format!("{root}/{ex}")],
            &env,
        );
        assert_eq!(code, 0, "{ex}: {out}{err}");
        assert!(out.contains(": ok ("), "{out}");
    }
    let dir = TempDir::new();
    let bad = dir.0.join("bad.yaml");
    std::fs::write(
        &bad,
        "providers:\n  - name: p\n    type: openai\n    base_url: http://127.0.0.1:9/v1\nproxies:\n  - name: x\n    routes:\n      - provider: p\n        modle: gpt\n",
    )
    .unwrap();
    let (code, _out, err) = run_cli(&["gateway", "--validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("proxies[0].routes[0].modle"), "{err}");
    // A missing secret is named too.
    let (code, _out, err) = run_cli(&[
        "gateway",
        "--validate",
        "--config",
        &format!("{root}/examples/gateway.yaml"),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("providers[0].api_key_env: environment variable OPENAI_API_KEY is not set"),
        "{err}"
    );
}

#[test]
fn key_hash_is_sha256_hex() {
    let (code, out, _) = run_cli(&["key", "hash", "abc"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// `portcullis up --demo` prints a key and a curl line; the line works,
/// run from a directory that is not the source checkout (the built-in
/// policies are in the binary).
#[tokio::test]
async fn up_demo_prints_a_curl_line_that_works() {
    use std::process::{Command, Stdio};

    use crate::harness::free_port;

    let dir = TempDir::new();
    let (port, ops, mock) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "up",
            "--demo",
            "--port",
            &port.to_string(),
            "--ops-port",
            &ops.to_string(),
        ])
        .args(["--mock-port", &mock.to_string()])
        .args(["--admin-port", &free_port().to_string()])
        .args(["--hub-port", &free_port().to_string(), "--data-dir"])
        .arg(&dir.0)
        .current_dir(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = crate::harness::up_lines(child.stdout.take().unwrap());
    let lines = rx.await.unwrap();
    let curl_line = lines.last().cloned().unwrap_or_default();
    assert!(curl_line.trim_start().starts_with("curl "), "{lines:?}");
    assert!(crate::harness::wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} -s", curl_line.trim()))
        .output()
        .unwrap();
    // The demo proxy carries PII masking and a token rate limit, published
    // by the hub `up` started from the components built into the binary.
    let key = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("API key"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no API key line in {lines:?}"))
        .to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/demo carries pii-masking@")),
        "{lines:?}"
    );
    let r = crate::client()
        .post(format!("http://127.0.0.1:{port}/demo/chat/completions"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "Mail me at jane@example.com"}]}))
                .send()
        .await
        .unwrap();
    let journal: serde_json::Value = crate::client()
        .get(format!("http://127.0.0.1:{mock}/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // The provider saw a placeholder; the client gets the address back.
    let seen =
        journal.as_array().unwrap().last().unwrap()["body"]["messages"][0]["content"].clone();
    assert_eq!(seen, "Mail me at [EMAIL_1]");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "1000000");
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Mock reply from openai model gpt-5-mini: Mail me at jane@example.com"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Mock reply from openai model gpt-5-mini: Hello Portcullis"
    );
    // The written config is a valid gateway config.
    assert!(dir.0.join("demo-gateway.yaml").exists());
}
